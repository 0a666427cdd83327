/*
 * Unit tests of src/jwt.c: HS256 tokens signed and checked, every way a
 * token can be wrong refused (tampered, expired, not yet valid, another
 * key, another algorithm, another issuer or audience), and the key file
 * made once, 0600, and read again.  Files go under $TMPDIR.
 */
#include "config.h"

#include <sys/stat.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/evp.h>

#include "regcache.h"
#include "tap.h"

/* The library refers to these; main.c defines them in the daemon. */
struct event_base	*ev_base;
struct evdns_base	*dns_base;
struct config		*conf;

#define NOW	((time_t)1700000000)

static const unsigned char key[JWT_KEY_LEN] = "0123456789abcdef0123456789abcde";

static json_t *
claims_at(time_t iat, long ttl)
{
	return json_pack("{s:s,s:s,s:s,s:I,s:I,s:I,s:[{s:s,s:s,s:[s]}]}",
	    "iss", "regcache", "sub", "alice", "aud", "regcache",
	    "iat", (json_int_t)iat, "nbf", (json_int_t)iat,
	    "exp", (json_int_t)(iat + ttl), "access", "type", "repository",
	    "name", "team/app", "actions", "pull");
}

/* Does token verify at now?  The claims are dropped. */
static int
verifies(const char *token, time_t now)
{
	json_t	*c;
	int	 rc;

	rc = jwt_verify(key, sizeof(key), token, now, "regcache", "regcache",
	    &c);
	json_decref(c);
	return rc == 0;
}

/* base64url of a string, as a test builds a forged part. */
static char *
b64url(const char *s)
{
	char	*out = xcalloc(1, strlen(s) * 2 + 8), *p;

	EVP_EncodeBlock((unsigned char *)out, (const unsigned char *)s,
	    (int)strlen(s));
	for (p = out; *p != '\0'; p++) {
		if (*p == '+')
			*p = '-';
		else if (*p == '/')
			*p = '_';
		else if (*p == '=')
			*p = '\0';
	}
	return out;
}

static void
test_sign_verify(void)
{
	json_t		*c = claims_at(NOW, 300), *got = NULL;
	char		*t = jwt_sign(key, sizeof(key), c), *u, *dot, *h, *p;
	char		*forged;
	unsigned char	 other[JWT_KEY_LEN];
	size_t		 i, n = strlen(t);
	int		 bad;

	ok(strchr(t, '=') == NULL && strchr(t, '+') == NULL &&
	    strchr(t, '/') == NULL, "base64url without padding");
	ok(jwt_verify(key, sizeof(key), t, NOW + 10, "regcache", "regcache",
	    &got) == 0, "a fresh token verifies");
	is_str(json_string_value(json_object_get(got, "sub")), "alice",
	    "the claims come back");
	is_str(json_string_value(json_object_get(json_array_get(
	    json_object_get(got, "access"), 0), "name")), "team/app",
	    "access names the repository");
	json_decref(got);
	ok(verifies(t, NOW + 300 + JWT_SKEW_S - 1),
	    "just before exp plus the skew: still good");
	ok(!verifies(t, NOW + 300 + JWT_SKEW_S), "expired: refused");
	ok(!verifies(t, NOW - JWT_SKEW_S - 1), "before nbf: refused");
	ok(verifies(t, NOW - JWT_SKEW_S + 1), "nbf within the skew: good");

	/* Every single-character change anywhere is refused. */
	bad = 0;
	u = xstrdup(t);
	for (i = 0; i < n; i++) {
		char c0 = u[i];
		u[i] = c0 == 'A' ? 'B' : (c0 == '.' ? 'x' : 'A');
		if (verifies(u, NOW))
			bad++;
		u[i] = c0;
	}
	ok(bad == 0, "each of %zu one-character changes is refused (%d "
	    "accepted)", n, bad);
	/* The last character of the signature carries two spare bits:
	 * another spelling of the same bytes is not the same token. */
	u[n - 1] = u[n - 1] == 'A' ? 'B' : (char)(u[n - 1] ^ 1);
	ok(!verifies(u, NOW), "changed spare bits of the signature refused");
	free(u);

	ok(!verifies("", NOW), "empty refused");
	ok(!verifies("a.b", NOW), "two parts refused");
	ok(!verifies("a.b.c.d", NOW), "four parts refused");
	xasprintf(&u, "%s.", t);
	ok(!verifies(u, NOW), "an extra dot refused");
	free(u);

	memset(other, 7, sizeof(other));
	ok(jwt_verify(other, sizeof(other), t, NOW, "regcache", "regcache",
	    &got) == -1 && got == NULL, "another key refuses it");
	ok(jwt_verify(key, sizeof(key), t, NOW, "someone", "regcache",
	    &got) == -1, "another issuer refused");
	ok(jwt_verify(key, sizeof(key), t, NOW, "regcache", "registry",
	    &got) == -1, "another audience refused");

	/* alg none with the payload kept and the signature dropped. */
	dot = strchr(t, '.');
	p = xstrndup(dot + 1, (size_t)(strchr(dot + 1, '.') - dot - 1));
	h = b64url("{\"alg\":\"none\",\"typ\":\"JWT\"}");
	xasprintf(&forged, "%s.%s.", h, p);
	ok(!verifies(forged, NOW), "alg none refused");
	free(forged);
	free(h);
	/* A payload of ours under an HS512 header. */
	h = b64url("{\"alg\":\"HS512\",\"typ\":\"JWT\"}");
	xasprintf(&forged, "%s%s", h, dot);
	ok(!verifies(forged, NOW), "another alg refused");
	free(forged);
	free(h);
	free(p);
	free(t);
	json_decref(c);

	/* An audience given as a list, and exp missing. */
	c = json_pack("{s:s,s:[s,s],s:I}", "iss", "regcache", "aud", "x",
	    "regcache", "exp", (json_int_t)NOW + 60);
	t = jwt_sign(key, sizeof(key), c);
	ok(verifies(t, NOW), "aud as a list that holds regcache");
	free(t);
	json_object_del(c, "exp");
	t = jwt_sign(key, sizeof(key), c);
	ok(!verifies(t, NOW), "no exp: refused");
	free(t);
	json_decref(c);
}

static void
test_key_file(void)
{
	const char	*tmp = getenv("TMPDIR");
	unsigned char	 k1[JWT_KEY_LEN], k2[JWT_KEY_LEN], zero[JWT_KEY_LEN];
	char		 dir[512], path[600], err[512] = "";
	struct stat	 st;
	FILE		*f;

	snprintf(dir, sizeof(dir), "%s/t_jwt.XXXXXX",
	    tmp != NULL && *tmp != '\0' ? tmp : "/tmp");
	if (mkdtemp(dir) == NULL) {
		perror(dir);
		exit(1);
	}
	snprintf(path, sizeof(path), "%s/token.key", dir);
	memset(zero, 0, sizeof(zero));

	ok(jwt_key_load(path, k1, sizeof(k1), err, sizeof(err)) == 0,
	    "first start makes a key (%s)", err);
	ok(stat(path, &st) == 0 && (st.st_mode & 0777) == 0600 &&
	    st.st_size == JWT_KEY_LEN, "the key file is 0600, %d bytes",
	    JWT_KEY_LEN);
	ok(memcmp(k1, zero, sizeof(k1)) != 0, "the key is not zeros");
	ok(jwt_key_load(path, k2, sizeof(k2), err, sizeof(err)) == 0 &&
	    memcmp(k1, k2, sizeof(k1)) == 0, "a restart reads the same key");

	if ((f = fopen(path, "w")) != NULL) {
		fputs("short", f);
		fclose(f);
	}
	ok(jwt_key_load(path, k2, sizeof(k2), err, sizeof(err)) == -1 &&
	    strstr(err, "32 bytes") != NULL, "a key of the wrong size is "
	    "refused (%s)", err);
	unlink(path);
	ok(rmdir(dir) == 0, "no temporary file left behind");
}

int
main(void)
{
	test_sign_verify();
	test_key_file();
	return tap_done();
}
