/*
 * The users of the "auth" section: an htpasswd file (user:hash lines) with
 * bcrypt or SHA-crypt hashes, checked through crypt(3) of libxcrypt.
 *
 * A bcrypt check takes 50 to 100 ms of CPU on purpose, far too long for
 * the event loop: checks run on one worker thread that reports through a
 * pipe, and the caller's completion is looked up by its id on the loop
 * (the client may have left meanwhile).  A password that checked out is
 * remembered for a minute, as an HMAC of user and password under a key
 * made at start-up, so a client asking for a token per repository does
 * not pay for bcrypt each time; the password itself is never kept.
 */
#include "config.h"

#include <sys/queue.h>
#include <crypt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include "regcache.h"

#define USERS_FILE_MAX		(4 * 1024 * 1024)
#define USERS_CACHE_TTL_MS	60000
#define USERS_CACHE_MAX		1024
#define USERS_QUEUE_MAX		64	/* checks waiting or running */
#define USERS_MAC_LEN		32
#define CRYPT_CHARS		"./0123456789" \
				"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

/* A password that checked out recently. */
struct users_hit {
	TAILQ_ENTRY(users_hit)	 entry;
	unsigned char		 mac[USERS_MAC_LEN];
	uint64_t		 expires;	/* mono_ms() */
};

/* One check for the worker. */
struct users_job {
	struct worker_job	 job;		/* first: see worker.c */
	uint64_t		 id;
	void			(*done)(uint64_t, int);
	char			*hash;		/* a copy, a stand-in or NULL */
	char			*password;	/* wiped by the worker */
	unsigned char		 mac[USERS_MAC_LEN];
	int			 known;
	int			 ok;
	uint64_t		 gen;		/* users_gen when queued */
};

static TAILQ_HEAD(users_hits_head, users_hit) users_hits =
	TAILQ_HEAD_INITIALIZER(users_hits);
static size_t			 users_nhits;
static uint64_t			 users_gen;	/* bumped by a reload */
static unsigned char		 users_mac_key[32];
static int			 users_mac_keyed;
static int			 users_pending;	/* queued, running or done */

/* A user name as htpasswd and Basic auth allow it: printable, no ':'. */
int
users_name_valid(const char *s)
{
	size_t	 i;

	for (i = 0; s[i] != '\0'; i++)
		if ((unsigned char)s[i] <= 0x20 || (unsigned char)s[i] >= 0x7f ||
		    s[i] == ':')
			return 0;
	return i > 0 && i <= USERS_NAME_MAX;
}

/* Are the n bytes at p all of the crypt(3) alphabet? */
static int
users_crypt_chars(const char *p, size_t n)
{
	return strspn(p, CRYPT_CHARS) >= n;
}

/*
 * Is hash a bcrypt or SHA-crypt string crypt(3) can check?  Otherwise the
 * reason goes to why.  Only the shape is checked here: running crypt on
 * each user at start-up would cost a bcrypt per user.
 */
static int
users_hash_valid(const char *h, const char **why)
{
	const char	*p, *salt;
	size_t		 n = strlen(h), want;

	if (strncmp(h, "$2y$", 4) == 0 || strncmp(h, "$2b$", 4) == 0 ||
	    strncmp(h, "$2a$", 4) == 0) {
		if (n != 60 || h[4] < '0' || h[4] > '3' || h[5] < '0' ||
		    h[5] > '9' || (h[4] - '0') * 10 + (h[5] - '0') < 4 ||
		    (h[4] - '0') * 10 + (h[5] - '0') > 31 || h[6] != '$' ||
		    !users_crypt_chars(h + 7, 53)) {
			*why = "malformed bcrypt hash";
			return 0;
		}
		return 1;
	}
	if (strncmp(h, "$5$", 3) == 0 || strncmp(h, "$6$", 3) == 0) {
		want = h[1] == '5' ? 43 : 86;
		p = h + 3;
		if (strncmp(p, "rounds=", 7) == 0) {
			p += 7;
			if (*p < '1' || *p > '9')
				goto badsha;
			while (*p >= '0' && *p <= '9')
				p++;
			if (*p++ != '$')
				goto badsha;
		}
		salt = p;
		while (*p != '\0' && *p != '$')
			p++;
		if (p == salt || p - salt > 16 || *p != '$' ||
		    strlen(p + 1) != want || !users_crypt_chars(p + 1, want))
			goto badsha;
		return 1;
 badsha:
		*why = "malformed SHA-crypt hash";
		return 0;
	}
	if (strncmp(h, "$apr1$", 6) == 0 || strncmp(h, "$1$", 3) == 0)
		*why = "MD5 hashes are not accepted: make the entry again "
		    "with htpasswd -B (bcrypt)";
	else if (strncmp(h, "{SHA}", 5) == 0)
		*why = "SHA-1 hashes are not accepted: make the entry again "
		    "with htpasswd -B (bcrypt)";
	else
		*why = "not a bcrypt ($2y$, $2b$) or SHA-crypt ($5$, $6$) "
		    "hash (plain text and DES crypt are not accepted): make "
		    "the entry with htpasswd -B";
	return 0;
}

/*
 * Parses htpasswd text: "user:hash" lines; blank lines and lines starting
 * with '#' are skipped.  Any other line that is not a supported entry is
 * an error naming its line and user, never its hash: a plain-text entry
 * would otherwise put a password in a message.
 */
int
users_parse(const char *text, size_t len, struct user_entry **out,
    size_t *nout, char *err, size_t errlen)
{
	struct user_entry	*us = NULL;
	const char		*p = text, *end = text + len, *eol, *why;
	char			*line = NULL, *colon;
	size_t			 n = 0, ll;
	int			 lineno = 0;

	*out = NULL;
	*nout = 0;
	if (memchr(text, '\0', len) != NULL) {
		snprintf(err, errlen, "contains a NUL byte");
		return -1;
	}
	for (; p < end; p = eol + 1) {
		lineno++;
		if ((eol = memchr(p, '\n', (size_t)(end - p))) == NULL)
			eol = end;
		ll = (size_t)(eol - p);
		if (ll > 0 && p[ll - 1] == '\r')
			ll--;
		if (ll == 0 || p[0] == '#')
			continue;
		line = xstrndup(p, ll);
		if ((colon = strchr(line, ':')) == NULL) {
			snprintf(err, errlen, "line %d: expected user:hash",
			    lineno);
			goto fail;
		}
		*colon = '\0';
		if (!users_name_valid(line)) {
			snprintf(err, errlen, "line %d: the user name must be "
			    "1 to %d printable characters without spaces",
			    lineno, USERS_NAME_MAX);
			goto fail;
		}
		if (users_find(us, n, line) != NULL) {
			snprintf(err, errlen, "line %d: user \"%s\" is listed "
			    "twice", lineno, line);
			goto fail;
		}
		if (!users_hash_valid(colon + 1, &why)) {
			snprintf(err, errlen, "line %d: user \"%s\": %s",
			    lineno, line, why);
			goto fail;
		}
		us = reallocarray(us, n + 1, sizeof(*us));
		if (us == NULL)
			fatal("reallocarray");
		us[n].name = xstrdup(line);
		us[n].hash = xstrdup(colon + 1);
		n++;
		OPENSSL_cleanse(line, ll);
		free(line);
		line = NULL;
		if (eol == end)
			break;
	}
	*out = us;
	*nout = n;
	return 0;

 fail:
	if (line != NULL) {
		OPENSSL_cleanse(line, ll);
		free(line);
	}
	users_free(us, n);
	return -1;
}

/* Reads and parses an htpasswd file; the message names no hash. */
int
users_load(const char *path, struct user_entry **out, size_t *nout,
    char *err, size_t errlen)
{
	char		*buf, msg[256];
	size_t		 len;
	int		 rc = 0;

	if (file_read(path, USERS_FILE_MAX, FILE_READ_REGULAR, NULL, &buf,
	    &len, err, errlen) == -1)
		return -1;
	if (users_parse(buf, len, out, nout, msg, sizeof(msg)) == -1) {
		snprintf(err, errlen, "%s", msg);
		rc = -1;
	}
	OPENSSL_cleanse(buf, len);
	free(buf);
	return rc;
}

/* Frees users; the hashes are wiped first. */
void
users_free(struct user_entry *us, size_t n)
{
	size_t	 i;

	for (i = 0; i < n && us != NULL; i++) {
		free(us[i].name);
		OPENSSL_cleanse(us[i].hash, strlen(us[i].hash));
		free(us[i].hash);
	}
	free(us);
}

const struct user_entry *
users_find(const struct user_entry *us, size_t n, const char *name)
{
	size_t	 i;

	for (i = 0; i < n; i++)
		if (strcmp(us[i].name, name) == 0)
			return &us[i];
	return NULL;
}

/*
 * Does password match a crypt(3) hash?  Slow on purpose (bcrypt): the
 * daemon calls it only on the worker thread.  1 yes, 0 no.
 */
int
users_hash_check(const char *hash, const char *password)
{
	struct crypt_data	*cd;
	const char		*got;
	size_t			 n = strlen(hash);
	int			 ok;

	if (strlen(password) > USERS_PASSWORD_MAX)
		return 0;
	cd = xcalloc(1, sizeof(*cd));
	got = crypt_r(password, hash, cd);
	ok = got != NULL && got[0] != '*' && strlen(got) == n &&
	    CRYPTO_memcmp(got, hash, n) == 0;
	OPENSSL_cleanse(cd, sizeof(*cd));
	free(cd);
	return ok;
}

/* The cache key of (user, password): an HMAC under a start-up key. */
static void
users_mac(const char *user, const char *password,
    unsigned char mac[USERS_MAC_LEN])
{
	unsigned int	 len = USERS_MAC_LEN;
	size_t		 ul = strlen(user), pl = strlen(password);
	unsigned char	*buf;

	if (!users_mac_keyed) {
		if (RAND_bytes(users_mac_key, sizeof(users_mac_key)) != 1)
			fatalx("%s: RAND_bytes failed", __func__);
		users_mac_keyed = 1;
	}
	/* The NUL between them keeps ("ab", "c") apart from ("a", "bc"). */
	buf = xcalloc(1, ul + 1 + pl);
	memcpy(buf, user, ul);
	memcpy(buf + ul + 1, password, pl);
	if (HMAC(EVP_sha256(), users_mac_key, sizeof(users_mac_key), buf,
	    ul + 1 + pl, mac, &len) == NULL)
		fatalx("%s: HMAC failed", __func__);
	OPENSSL_cleanse(buf, ul + 1 + pl);
	free(buf);
}

/* Drops cached passwords past their time, and the oldest beyond the cap. */
static void
users_cache_expire(void)
{
	struct users_hit	*h;
	uint64_t		 now = mono_ms();

	/* Entries go in at the head with one lifetime: the tail is oldest. */
	while ((h = TAILQ_LAST(&users_hits, users_hits_head)) != NULL &&
	    (h->expires <= now || users_nhits > USERS_CACHE_MAX)) {
		TAILQ_REMOVE(&users_hits, h, entry);
		OPENSSL_cleanse(h, sizeof(*h));
		free(h);
		users_nhits--;
	}
}

static int
users_cache_lookup(const unsigned char mac[USERS_MAC_LEN])
{
	struct users_hit	*h;

	users_cache_expire();
	TAILQ_FOREACH(h, &users_hits, entry)
		if (CRYPTO_memcmp(h->mac, mac, USERS_MAC_LEN) == 0)
			return 1;
	return 0;
}

static void
users_cache_add(const unsigned char mac[USERS_MAC_LEN])
{
	struct users_hit	*h;

	if (users_cache_lookup(mac))
		return;
	h = xcalloc(1, sizeof(*h));
	memcpy(h->mac, mac, USERS_MAC_LEN);
	h->expires = mono_ms() + USERS_CACHE_TTL_MS;
	TAILQ_INSERT_HEAD(&users_hits, h, entry);
	users_nhits++;
	users_cache_expire();
}

/* Frees a job, wiping what it knew. */
static void
users_job_free(struct worker_job *wj)
{
	struct users_job	*j = (struct users_job *)wj;

	if (j->password != NULL) {
		OPENSSL_cleanse(j->password, strlen(j->password));
		free(j->password);
	}
	if (j->hash != NULL) {
		OPENSSL_cleanse(j->hash, strlen(j->hash));
		free(j->hash);
	}
	OPENSSL_cleanse(j->mac, sizeof(j->mac));
	free(j);
}

/* On the worker thread: the check itself. */
static void
users_check(struct worker_job *wj)
{
	struct users_job	*j = (struct users_job *)wj;

	/* An unknown user costs as much as a known one, so the time of an
	 * answer does not tell which names exist. */
	j->ok = j->hash != NULL && users_hash_check(j->hash, j->password) &&
	    j->known;
	OPENSSL_cleanse(j->password, strlen(j->password));
}

/* Back on the loop: remember a good password and tell the caller. */
static void
users_complete(struct worker_job *wj)
{
	struct users_job	*j = (struct users_job *)wj;

	users_pending--;
	/* Checked against a hash a reload may have replaced or removed:
	 * refused (the client asks again, against the new users). */
	if (j->gen != users_gen)
		j->ok = 0;
	if (j->ok)
		users_cache_add(j->mac);
	j->done(j->id, j->ok);
	users_job_free(wj);
}

/*
 * Never check on the loop when no thread can be had: one bcrypt would
 * stall every client.  Token requests with a password fail instead.  At
 * shutdown the checks not answered yet are dropped: their requests are
 * gone.
 */
static struct worker users_worker = {
	WORKER_INIT(users_worker),
	.w_subsystem = "auth",
	.w_name = "password",
	.w_drain = 0,
	.w_run = users_check,
	.w_complete = users_complete,
	.w_discard = users_job_free,
};

/*
 * Check user's password.  USERS_GOOD when it checked out within the last
 * minute (no callback); USERS_QUEUED when done(id, ok) will run on the
 * loop later; USERS_BUSY when too many checks wait or there is no worker.
 */
int
users_verify(const struct access_cfg *ac, const char *user,
    const char *password, uint64_t id, void (*done)(uint64_t, int))
{
	const struct user_entry	*u;
	struct users_job	*j;
	unsigned char		 mac[USERS_MAC_LEN];

	users_mac(user, password, mac);
	if (users_cache_lookup(mac)) {
		OPENSSL_cleanse(mac, sizeof(mac));
		return USERS_GOOD;
	}
	if (users_pending >= USERS_QUEUE_MAX ||
	    worker_start(&users_worker) == -1) {
		OPENSSL_cleanse(mac, sizeof(mac));
		return USERS_BUSY;
	}
	u = users_find(ac->users, ac->nusers, user);
	j = xcalloc(1, sizeof(*j));
	j->id = id;
	j->done = done;
	j->gen = users_gen;
	j->known = u != NULL;
	/* An unknown name is checked against somebody's hash anyway. */
	if (u != NULL)
		j->hash = xstrdup(u->hash);
	else if (ac->nusers > 0)
		j->hash = xstrdup(ac->users[0].hash);
	j->password = xstrdup(password);
	memcpy(j->mac, mac, sizeof(mac));
	OPENSSL_cleanse(mac, sizeof(mac));
	users_pending++;
	worker_queue(&users_worker, &j->job);
	return USERS_QUEUED;
}

/*
 * The users or their passwords may have changed (a reload): forget the
 * passwords that checked out, and do not remember those checked before.
 */
void
users_cache_flush(void)
{
	struct users_hit	*h;

	users_gen++;
	while ((h = TAILQ_FIRST(&users_hits)) != NULL) {
		TAILQ_REMOVE(&users_hits, h, entry);
		OPENSSL_cleanse(h, sizeof(*h));
		free(h);
	}
	users_nhits = 0;
}

/* Stop the worker (waiting for the check it runs) and forget everything. */
void
users_shutdown(void)
{
	worker_stop(&users_worker);
	users_pending = 0;
	users_cache_flush();
	OPENSSL_cleanse(users_mac_key, sizeof(users_mac_key));
	users_mac_keyed = 0;
}
