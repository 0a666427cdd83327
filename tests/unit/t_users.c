/*
 * Unit tests of src/users.c: htpasswd parsing (what is accepted, what is
 * refused and that no message shows a hash), crypt(3) checks of bcrypt
 * and SHA-crypt hashes made by htpasswd -B and openssl passwd (in
 * tests/data/auth/htpasswd), and the worker: a check answers on the
 * event loop, a good password is then remembered and a wrong one is not.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "regcache.h"
#include "tap.h"

/* The library refers to these; main.c defines them in the daemon. */
struct event_base	*ev_base;
struct evdns_base	*dns_base;
struct config		*conf;

#define BCRYPT_ALICE	"$2y$05$CEVNaO2wz.1V79NTztQ73eBaU1g9qLIiDazLybhalRLsRoPG2R2.C"

/* Parses text that must fail; returns the message (static buffer). */
static const char *
parse_error(const char *text)
{
	static char		 err[512];
	struct user_entry	*us;
	size_t			 n;

	err[0] = '\0';
	if (users_parse(text, strlen(text), &us, &n, err, sizeof(err)) == 0) {
		users_free(us, n);
		return "(parsed)";
	}
	return err;
}

static void
test_parse(void)
{
	struct user_entry	*us;
	size_t			 n;
	char			 err[512] = "";
	const char		*m;
	const char		*good =
	    "# users\n"
	    "\n"
	    "alice:" BCRYPT_ALICE "\r\n"
	    "bob:$6$rounds=5000$saltsalt$YuIDZADHn7bIJMslOoBODqGsIALpks.VCON5"
	    "OOT9UgG3a9pA2eDviBdVYa7uW/i6fW.fdhEL0AHS4iPILzVQJ1\n"
	    "carol:$5$T52S6siZXgx0pmgy$dCXCRgXVNq70yD3NFZyI9GF3PNuIeYRNwk7MAUCp6d3";

	ok(users_parse(good, strlen(good), &us, &n, err, sizeof(err)) == 0 &&
	    n == 3, "three entries, comments, CRLF and no final newline (%s)",
	    err);
	if (n == 3) {
		ok(users_hash_check(us[1].hash, "bob-test-password"),
		    "an explicit rounds= SHA-crypt hash checks out");
		is_str(us[0].name, "alice", "first user");
		is_str(us[0].hash, BCRYPT_ALICE, "CR stripped from the hash");
		is_str(us[2].name, "carol", "last user without a newline");
		ok(users_find(us, n, "bob") == &us[1], "find bob");
		ok(users_find(us, n, "bo") == NULL, "no prefix match");
	}
	users_free(us, n);

	ok(users_parse("", 0, &us, &n, err, sizeof(err)) == 0 && n == 0,
	    "an empty file has no users");
	users_free(us, n);

	m = parse_error("eve:$apr1$KHE00tVI$GpfEm9vG3ZopmLx/tYd4M1\n");
	ok(strstr(m, "line 1") != NULL && strstr(m, "\"eve\"") != NULL &&
	    strstr(m, "MD5") != NULL && strstr(m, "htpasswd -B") != NULL &&
	    strstr(m, "KHE00") == NULL, "apr1 refused, the hash not shown (%s)",
	    m);
	m = parse_error("# x\neve:plaintextsecret\n");
	ok(strstr(m, "line 2") != NULL && strstr(m, "plain text") != NULL &&
	    strstr(m, "plaintextsecret") == NULL,
	    "plain text refused without showing it (%s)", m);
	m = parse_error("eve:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=\n");
	ok(strstr(m, "SHA-1") != NULL, "{SHA} refused (%s)", m);
	m = parse_error("eve:$1$abc$def\n");
	ok(strstr(m, "MD5") != NULL, "$1$ refused (%s)", m);
	m = parse_error("eve:$2y$05$tooshort\n");
	ok(strstr(m, "malformed bcrypt") != NULL, "short bcrypt refused (%s)",
	    m);
	m = parse_error("eve:$2y$99$CEVNaO2wz.1V79NTztQ73eBaU1g9qLIiDazLybhal"
	    "RLsRoPG2R2.C\n");
	ok(strstr(m, "malformed bcrypt") != NULL, "bcrypt cost 99 refused");
	m = parse_error("eve:$6$salt$short\n");
	ok(strstr(m, "malformed SHA-crypt") != NULL, "short $6$ refused (%s)",
	    m);
	m = parse_error("alice:" BCRYPT_ALICE "\nalice:" BCRYPT_ALICE "\n");
	ok(strstr(m, "line 2") != NULL && strstr(m, "twice") != NULL,
	    "a user listed twice is refused (%s)", m);
	m = parse_error("no colon here\n");
	ok(strstr(m, "user:hash") != NULL, "a line without ':' (%s)", m);
	m = parse_error(":" BCRYPT_ALICE "\n");
	ok(strstr(m, "user name") != NULL, "an empty user name (%s)", m);
	m = parse_error("al ice:" BCRYPT_ALICE "\n");
	ok(strstr(m, "user name") != NULL, "a space in a user name (%s)", m);

	ok(users_name_valid("alice") && users_name_valid("a.b@c-d"),
	    "valid names");
	ok(!users_name_valid("") && !users_name_valid("a:b") &&
	    !users_name_valid("a b") && !users_name_valid("a\tb") &&
	    !users_name_valid("\xc3\xa9"), "invalid names");
}

/* The fixtures: alice ($2y$), bob ($6$), carol ($5$), dave ($2b$). */
static void
test_crypt(struct user_entry *us, size_t n)
{
	static const char *const users[][2] = {
		{ "alice", "alice-test-password" },
		{ "bob", "bob-test-password" },
		{ "carol", "carol-test-password" },
		{ "dave", "dave-test-password" }
	};
	const struct user_entry	*u;
	size_t			 i;
	char			 longpw[USERS_PASSWORD_MAX + 2];

	for (i = 0; i < sizeof(users) / sizeof(users[0]); i++) {
		if ((u = users_find(us, n, users[i][0])) == NULL) {
			ok(0, "fixture has %s", users[i][0]);
			continue;
		}
		ok(users_hash_check(u->hash, users[i][1]),
		    "%s (%.4s): the right password matches", u->name, u->hash);
		ok(!users_hash_check(u->hash, "wrong-password"),
		    "%s: a wrong password does not", u->name);
		ok(!users_hash_check(u->hash, ""),
		    "%s: an empty password does not", u->name);
	}
	memset(longpw, 'x', sizeof(longpw) - 1);
	longpw[sizeof(longpw) - 1] = '\0';
	ok(!users_hash_check(us[0].hash, longpw),
	    "a password over %d bytes is refused outright", USERS_PASSWORD_MAX);
}

static int	 cb_calls, cb_ok;
static uint64_t	 cb_id;

static void
checked(uint64_t id, int good)
{
	cb_calls++;
	cb_id = id;
	cb_ok = good;
	event_base_loopbreak(ev_base);
}

/* Runs the loop until the callback ran (or 10 s passed). */
static void
run_until_checked(void)
{
	struct timeval	 tv = { 10, 0 };

	cb_calls = 0;
	event_base_loopexit(ev_base, &tv);
	event_base_dispatch(ev_base);
}

static void
test_worker(struct user_entry *us, size_t n)
{
	struct access_cfg	 ac;
	int			 rc;

	memset(&ac, 0, sizeof(ac));
	ac.users = us;
	ac.nusers = n;
	if ((ev_base = event_base_new()) == NULL) {
		ok(0, "event base");
		return;
	}

	rc = users_verify(&ac, "alice", "alice-test-password", 7, checked);
	ok(rc == USERS_QUEUED && cb_calls == 0,
	    "a first check is queued, nothing answered yet");
	run_until_checked();
	ok(cb_calls == 1 && cb_id == 7 && cb_ok,
	    "the worker answers on the loop: id 7, good");
	ok(users_verify(&ac, "alice", "alice-test-password", 8, checked) ==
	    USERS_GOOD, "the same password again: good from the cache");

	rc = users_verify(&ac, "alice", "wrong-password", 9, checked);
	run_until_checked();
	ok(rc == USERS_QUEUED && cb_calls == 1 && cb_id == 9 && !cb_ok,
	    "a wrong password is checked and refused");
	ok(users_verify(&ac, "alice", "wrong-password", 10, checked) ==
	    USERS_QUEUED, "a wrong password is not remembered");
	run_until_checked();

	ok(users_verify(&ac, "bob", "alice-test-password", 11, checked) ==
	    USERS_QUEUED, "alice's password for bob is not a cache hit");
	run_until_checked();
	ok(cb_calls == 1 && !cb_ok, "and is refused");

	rc = users_verify(&ac, "nobody", "alice-test-password", 12, checked);
	run_until_checked();
	ok(rc == USERS_QUEUED && cb_calls == 1 && !cb_ok,
	    "an unknown user is refused, through the worker like anyone");

	users_shutdown();
	ok(users_verify(&ac, "alice", "alice-test-password", 13, checked) ==
	    USERS_QUEUED, "after shutdown the cache is empty");
	run_until_checked();
	ok(cb_calls == 1 && cb_ok, "and the worker starts again");
	users_shutdown();
	event_base_free(ev_base);
	ev_base = NULL;
}

int
main(void)
{
	const char		*top = getenv("TOP_SRCDIR");
	struct user_entry	*us = NULL;
	size_t			 n = 0;
	char			*path, err[512] = "";

	test_parse();
	if (top == NULL || *top == '\0')
		top = ".";
	xasprintf(&path, "%s/tests/data/auth/htpasswd", top);
	ok(users_load(path, &us, &n, err, sizeof(err)) == 0 && n == 4,
	    "load %s: 4 users (%s)", path, err);
	free(path);
	if (n == 4) {
		test_crypt(us, n);
		test_worker(us, n);
	}
	users_free(us, n);
	us = NULL;
	n = 0;
	ok(users_load("/nonexistent/htpasswd", &us, &n, err,
	    sizeof(err)) == -1 && strstr(err, "No such file") != NULL &&
	    us == NULL, "a missing file: %s", err);
	return tap_done();
}
