/*
 * Unit tests of src/upstream_auth.c: WWW-Authenticate challenges, token
 * service answers, token lifetimes and the per-upstream token cache.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "regcache.h"
#include "tap.h"

/* The library refers to these; main.c defines them in the daemon. */
struct event_base	*ev_base;
struct evdns_base	*dns_base;
struct config		*conf;

/* 2020-01-01T00:00:00Z */
#define T2020	((time_t)1577836800)

/* Parses hdr, which must succeed; fields NULL means "must be absent". */
static void
check_challenge(const char *hdr, const char *scheme, const char *realm,
    const char *service, const char *scope, const char *error)
{
	struct auth_challenge	ch;
	char			label[80];

	snprintf(label, sizeof(label), "challenge '%.50s%s'", hdr,
	    strlen(hdr) > 50 ? "..." : "");
	if (auth_parse_challenge(hdr, &ch) != 0) {
		ok(0, "%s: parsed", label);
		return;
	}
	ok(1, "%s: parsed", label);
	is_str(ch.scheme, scheme, "%s: scheme", label);
	is_str(ch.realm, realm, "%s: realm", label);
	is_str(ch.service, service, "%s: service", label);
	is_str(ch.scope, scope, "%s: scope", label);
	is_str(ch.error, error, "%s: error", label);
	auth_challenge_clear(&ch);
	ok(ch.realm == NULL && ch.scope == NULL && ch.scheme[0] == '\0',
	    "%s: clear empties it", label);
}

static void
check_challenge_bad(const char *hdr, const char *why)
{
	struct auth_challenge	ch;
	int			rc;

	memset(&ch, 0xa5, sizeof(ch));
	rc = auth_parse_challenge(hdr, &ch);
	ok(rc == -1 && ch.realm == NULL && ch.service == NULL &&
	    ch.scope == NULL && ch.error == NULL,
	    "challenge refused (%s), nothing left allocated", why);
	if (rc == 0)
		auth_challenge_clear(&ch);
}

static void
test_challenge(void)
{
	check_challenge("Bearer realm=\"https://auth.docker.io/token\","
	    "service=\"registry.docker.io\","
	    "scope=\"repository:library/alpine:pull\"",
	    "Bearer", "https://auth.docker.io/token", "registry.docker.io",
	    "repository:library/alpine:pull", NULL);
	check_challenge("Bearer realm=\"https://r/token\",service=\"s\","
	    "scope=\"repository:localhost:5000/foo:pull\"",
	    "Bearer", "https://r/token", "s",
	    "repository:localhost:5000/foo:pull", NULL);
	check_challenge("Bearer realm=\"https://r/token\","
	    "scope=\"repository:a/b:pull,push\"",
	    "Bearer", "https://r/token", NULL, "repository:a/b:pull,push",
	    NULL);
	check_challenge("Bearer realm=\"a\\\"b,c=d\",service=\"x\\\\y\"",
	    "Bearer", "a\"b,c=d", "x\\y", NULL, NULL);
	check_challenge("Basic realm=\"Registry Realm\"", "Basic",
	    "Registry Realm", NULL, NULL, NULL);
	check_challenge("basic realm=\"x\"", "basic", "x", NULL, NULL, NULL);
	check_challenge("Bearer realm=\"https://r/t\",charset=\"UTF-8\","
	    "foo=bar,service=\"s\"", "Bearer", "https://r/t", "s", NULL,
	    NULL);
	check_challenge("Bearer realm=\"https://r/t\",service=\"s\","
	    "scope=\"repository:a:pull\",error=\"invalid_token\"",
	    "Bearer", "https://r/t", "s", "repository:a:pull",
	    "invalid_token");
	check_challenge("Bearer error=\"insufficient_scope\"", "Bearer",
	    NULL, NULL, NULL, "insufficient_scope");
	check_challenge("Bearer realm=https://r/t,service=s", "Bearer",
	    "https://r/t", "s", NULL, NULL);
	check_challenge("Bearer REALM=\"x\",Service=\"y\"", "Bearer", "x",
	    "y", NULL, NULL);
	check_challenge("Bearer realm=\"\"", "Bearer", "", NULL, NULL, NULL);
	check_challenge("Bearer", "Bearer", NULL, NULL, NULL, NULL);
	check_challenge("Bearer realm=\"a\",realm=\"b\"", "Bearer", "b",
	    NULL, NULL, NULL);

	/* Whitespace around the scheme, the commas and the '='. */
	check_challenge("  Bearer  realm=\"r\" , service=\"s\"  ,scope=\"c\"  ",
	    "Bearer", "r", "s", "c", NULL);
	check_challenge("Bearer realm = \"r\", service = s", "Bearer", "r",
	    "s", NULL, NULL);
	check_challenge("\tBearer\trealm=\"r\",\tservice=\"s\"", "Bearer",
	    "r", "s", NULL, NULL);
	check_challenge("Bearer realm\t=\t\"r\"", "Bearer", "r", NULL, NULL,
	    NULL);
	check_challenge("Bearer realm=\"r\",,,service=\"s\",", "Bearer", "r",
	    "s", NULL, NULL);

	check_challenge_bad("", "empty");
	check_challenge_bad("   ", "blank");
	check_challenge_bad("Bearer realm=\"https://r/t", "unterminated quote");
	check_challenge_bad("Bearer realm=\"r\",service=\"s",
	    "unterminated quote after a good param");
	check_challenge_bad("Bearer realm=\"a\\\"", "escaped closing quote");
	check_challenge_bad("Bearer realm", "param without '='");
	check_challenge_bad("Bearer realm=\"r\",service",
	    "second param without '='");
	check_challenge_bad("Bearer realm=\"r\" service \"s\"",
	    "param with a space for '='");
	check_challenge_bad("Bearer,realm=\"r\"", "comma after the scheme");
	check_challenge_bad("=realm", "no scheme");
	check_challenge_bad("Averyveryverylongscheme realm=\"r\"",
	    "scheme too long");
}

/* Parses json, which must succeed, and checks what came out. */
static void
check_token(const char *json, const char *token, long expires_in,
    time_t issued_at)
{
	struct token_response	tr;
	char			err[256] = "";
	int			rc;

	rc = auth_parse_token_response(json, strlen(json), &tr, err,
	    sizeof(err));
	ok(rc == 0 && tr.token != NULL && strcmp(tr.token, token) == 0 &&
	    tr.expires_in == expires_in && tr.issued_at == issued_at,
	    "token response %s", json);
	if (rc != 0)
		diag("error: %s", err);
	else if (tr.expires_in != expires_in || tr.issued_at != issued_at)
		diag("got token %s expires_in %ld issued_at %lld", tr.token,
		    tr.expires_in, (long long)tr.issued_at);
	if (rc == 0) {
		auth_token_response_clear(&tr);
		ok(tr.token == NULL && tr.expires_in == 0,
		    "token response clear empties it");
	}
}

static void
check_token_bad_len(const char *json, size_t len, const char *why)
{
	struct token_response	tr;
	char			err[256] = "";
	int			rc;

	rc = auth_parse_token_response(json, len, &tr, err, sizeof(err));
	ok(rc == -1 && tr.token == NULL && err[0] != '\0',
	    "token response refused: %s (%s)", why, err);
	if (rc == 0)
		auth_token_response_clear(&tr);
}

static void
check_token_bad(const char *json, const char *why)
{
	check_token_bad_len(json, strlen(json), why);
}

static void
test_token_response(void)
{
	check_token("{\"token\":\"abc\"}", "abc", 60, 0);
	check_token("{\"access_token\":\"xyz\"}", "xyz", 60, 0);
	check_token("{\"token\":\"abc\",\"access_token\":\"xyz\"}", "abc",
	    60, 0);
	check_token("{\"access_token\":\"xyz\",\"token\":\"abc\"}", "abc",
	    60, 0);
	check_token("{\"token\":\"\",\"access_token\":\"xyz\"}", "xyz", 60, 0);
	check_token("{\"token\":\"abc\",\"expires_in\":300}", "abc", 300, 0);
	check_token("{\"token\":\"abc\",\"expires_in\":1}", "abc", 1, 0);
	check_token("{\"token\":\"abc\",\"expires_in\":300,"
	    "\"issued_at\":\"2020-01-01T00:00:00Z\"}", "abc", 300, T2020);
	check_token("{\"token\":\"abc\","
	    "\"issued_at\":\"2020-01-01T00:00:00.123456789Z\"}", "abc", 60,
	    T2020);
	check_token("{\"token\":\"abc\","
	    "\"issued_at\":\"2020-01-01T02:00:00+02:00\"}", "abc", 60, T2020);
	check_token("{\"token\":\"abc\","
	    "\"issued_at\":\"2019-12-31T22:30:00-01:30\"}", "abc", 60, T2020);
	check_token("{\"token\":\"abc\","
	    "\"issued_at\":\"2020-01-01T02:00:00.5+02:00\"}", "abc", 60,
	    T2020);
	check_token("{\"token\":\"abc\",\"scope\":\"x\",\"extra\":[1,2]}",
	    "abc", 60, 0);
	check_token(" {\"token\" : \"abc\"}\n", "abc", 60, 0);

	check_token_bad("{}", "no token");
	check_token_bad("{\"token\":\"\"}", "empty token");
	check_token_bad("{\"token\":42}", "token not a string");
	check_token_bad("{\"token\":null,\"access_token\":null}",
	    "null tokens");
	check_token_bad("{\"token\":\"a\",\"expires_in\":-5}",
	    "negative expires_in");
	check_token_bad("{\"token\":\"a\",\"expires_in\":0}",
	    "zero expires_in");
	check_token_bad("{\"token\":\"a\",\"expires_in\":\"300\"}",
	    "string expires_in");
	check_token_bad("{\"token\":\"a\",\"expires_in\":1.5}",
	    "real expires_in");
	check_token_bad("{\"token\":\"a\",\"issued_at\":\"yesterday\"}",
	    "bad issued_at");
	check_token_bad("{\"token\":\"a\",\"issued_at\":\"2020-01-01\"}",
	    "issued_at without a time");
	check_token_bad("{\"token\":\"a\","
	    "\"issued_at\":\"2020-01-01T00:00:00\"}",
	    "issued_at without a zone");
	check_token_bad("{\"token\":\"a\","
	    "\"issued_at\":\"2020-01-01T00:00:00Zjunk\"}",
	    "issued_at with junk");
	check_token_bad("not json", "not JSON");
	check_token_bad("", "empty body");
	check_token_bad("{\"token\":\"abc\"", "truncated JSON");
	check_token_bad("[{\"token\":\"abc\"}]", "an array");
	check_token_bad("\"abc\"", "a string");
	check_token_bad("{\"token\":\"a\","
	    "\"issued_at\":\"2020-01-01T00:00:00+2:00\"}",
	    "issued_at with a one-digit zone hour");
	check_token_bad("{\"token\":\"a\","
	    "\"issued_at\":\"2020-01-01T00:00:00+02:0\"}",
	    "issued_at with a one-digit zone minute");
	check_token_bad_len("{\"token\":\"abc\"}", 8,
	    "length cuts the JSON short");
}

static void
test_expiry(void)
{
	struct token_response	tr;
	time_t			now = T2020;

	memset(&tr, 0, sizeof(tr));
	tr.expires_in = 300;
	ok(auth_token_expiry(&tr, now) == now + 300 - 30,
	    "expiry: no issued_at, from now, 30 s margin");
	tr.issued_at = now - 100;
	ok(auth_token_expiry(&tr, now) == now - 100 + 300 - 30,
	    "expiry: sane issued_at counts");
	tr.issued_at = now;
	ok(auth_token_expiry(&tr, now) == now + 300 - 30,
	    "expiry: issued_at now");
	tr.issued_at = now + 3600;
	ok(auth_token_expiry(&tr, now) == now + 300 - 30,
	    "expiry: issued_at in the future ignored");
	tr.issued_at = now - 300;
	ok(auth_token_expiry(&tr, now) == now + 300 - 30,
	    "expiry: issued_at a lifetime ago ignored");
	tr.issued_at = now - 86400;
	ok(auth_token_expiry(&tr, now) == now + 300 - 30,
	    "expiry: issued_at a day ago ignored");
	tr.issued_at = now - 299;
	ok(auth_token_expiry(&tr, now) == now - 299 + 300 - 30,
	    "expiry: issued_at just inside the lifetime counts");

	tr.issued_at = 0;
	tr.expires_in = 60;
	ok(auth_token_expiry(&tr, now) == now + 60 - 15,
	    "expiry: margin a quarter of a short lifetime");
	tr.expires_in = 120;
	ok(auth_token_expiry(&tr, now) == now + 120 - 30,
	    "expiry: margin 30 s at 120 s");
	tr.expires_in = 3600;
	ok(auth_token_expiry(&tr, now) == now + 3600 - 30,
	    "expiry: margin capped at 30 s");
	tr.expires_in = 3;
	ok(auth_token_expiry(&tr, now) == now + 3,
	    "expiry: no margin under 4 s");
	tr.expires_in = 1;
	ok(auth_token_expiry(&tr, now) > now,
	    "expiry: a 1 s token is still good now");
}

static void
test_cache(void)
{
	struct upstream	 up;
	const char	*v;
	time_t		 now = time(NULL);

	memset(&up, 0, sizeof(up));
	TAILQ_INIT(&up.tokens);

	ok(auth_token_lookup(&up, "repository:a:pull", now) == NULL,
	    "cache: empty");
	auth_token_store(&up, "repository:a:pull", "tok-a", now + 100);
	auth_token_store(&up, "repository:b:pull", "tok-b", now + 200);
	is_str(auth_token_lookup(&up, "repository:a:pull", now), "tok-a",
	    "cache: lookup a");
	is_str(auth_token_lookup(&up, "repository:b:pull", now), "tok-b",
	    "cache: lookup b");
	ok(auth_token_lookup(&up, "repository:c:pull", now) == NULL,
	    "cache: other scope absent");
	ok(auth_token_lookup(&up, "repository:a:pull,push", now) == NULL,
	    "cache: scopes match exactly");
	is_str(auth_token_lookup(&up, "repository:a:pull", now + 99), "tok-a",
	    "cache: good one second before expiry");

	/* Expiry: a lookup at or after it drops the token. */
	ok(auth_token_lookup(&up, "repository:a:pull", now + 100) == NULL,
	    "cache: expired at its expiry time");
	ok(auth_token_lookup(&up, "repository:a:pull", now) == NULL,
	    "cache: an expired token is gone for good");
	is_str(auth_token_lookup(&up, "repository:b:pull", now), "tok-b",
	    "cache: other scope unaffected by the expiry");

	/* A store replaces the token of the same scope. */
	auth_token_store(&up, "repository:b:pull", "tok-b2", now + 300);
	is_str(auth_token_lookup(&up, "repository:b:pull", now), "tok-b2",
	    "cache: store replaces");
	is_str(auth_token_lookup(&up, "repository:b:pull", now + 250),
	    "tok-b2", "cache: with the new expiry");

	/* Forget only when the value is still the one refused. */
	auth_token_forget(&up, "repository:b:pull", "tok-b");
	is_str(auth_token_lookup(&up, "repository:b:pull", now), "tok-b2",
	    "cache: forget of an older value keeps the newer one");
	auth_token_forget(&up, "repository:x:pull", "tok-b2");
	is_str(auth_token_lookup(&up, "repository:b:pull", now), "tok-b2",
	    "cache: forget of another scope keeps it");
	auth_token_forget(&up, "repository:b:pull", "tok-b2");
	ok(auth_token_lookup(&up, "repository:b:pull", now) == NULL,
	    "cache: forget of the same value removes it");
	auth_token_forget(&up, "repository:b:pull", "tok-b2");
	ok(TAILQ_EMPTY(&up.tokens), "cache: forget of nothing is harmless");

	/* A store drops tokens of other scopes that have expired. */
	auth_token_store(&up, "repository:old:pull", "tok-old", now - 1);
	auth_token_store(&up, "repository:live:pull", "tok-live", now + 100);
	ok(auth_token_lookup(&up, "repository:old:pull", 0) == NULL,
	    "cache: store pruned an expired token of another scope");
	is_str(auth_token_lookup(&up, "repository:live:pull", now),
	    "tok-live", "cache: live token kept");

	/* The lookup returns the cached copy, not the caller's string. */
	{
		char	value[] = "tok-copy";

		auth_token_store(&up, "repository:copy:pull", value,
		    now + 100);
		value[0] = 'X';
		v = auth_token_lookup(&up, "repository:copy:pull", now);
		is_str(v, "tok-copy", "cache: stores a copy of the value");
	}

	auth_tokens_free(&up);
	ok(TAILQ_EMPTY(&up.tokens), "cache: free empties the list");
	auth_tokens_free(&up);
	ok(TAILQ_EMPTY(&up.tokens), "cache: free twice is harmless");
}

/* A token service that claims a lifetime of centuries is held to a day. */
static void
test_lifetime_clamp(void)
{
	struct token_response	 tr;
	const char		*j = "{\"token\":\"t\","
				    "\"expires_in\":9223372036854775807}";
	char			 err[256];

	ok(auth_parse_token_response(j, strlen(j), &tr, err, sizeof(err)) == 0,
	    "huge expires_in parses");
	ok(tr.expires_in == 86400, "huge expires_in is held to a day (%ld)",
	    tr.expires_in);
	ok(auth_token_expiry(&tr, 1000) > 1000, "and the expiry does not wrap");
	auth_token_response_clear(&tr);
	j = "ghp_secretsecret";
	ok(auth_parse_token_response(j, strlen(j), &tr, err, sizeof(err)) == -1 &&
	    strstr(err, "ghp") == NULL, "a non-JSON answer is not quoted (%s)",
	    err);
}

int
main(void)
{
	test_challenge();
	test_token_response();
	test_expiry();
	test_cache();
	test_lifetime_clamp();
	return tap_done();
}
