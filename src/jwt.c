/*
 * JSON Web Tokens (RFC 7519) signed with HMAC-SHA256, the tokens regcache
 * issues to its own clients, and the file that keeps their key.
 *
 * Only HS256 is produced and only HS256 is accepted: the algorithm named
 * in a token's header is checked, never obeyed ("none" and the rest are
 * refused).  Base64url is decoded strictly, without padding and with the
 * unused low bits zero, so one token has exactly one spelling and a
 * changed character is always a changed token.
 *
 * The key is 32 random bytes in DATA/token.key, mode 0600, made at the
 * first start and read at every later one, so tokens outlive a restart.
 */
#include "config.h"

#include <sys/stat.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include "regcache.h"

#define JWT_MAX_LEN		8192
#define JWT_SIG_LEN		32	/* HMAC-SHA256 */

static const char b64url_chars[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/* base64url without padding (RFC 7515, appendix C). */
static char *
b64url_encode(const unsigned char *in, size_t len)
{
	char	*out = xcalloc(1, (len + 2) / 3 * 4 + 1), *w = out;
	size_t	 i;
	uint32_t v;

	for (i = 0; i + 2 < len; i += 3) {
		v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
		*w++ = b64url_chars[v >> 18];
		*w++ = b64url_chars[(v >> 12) & 63];
		*w++ = b64url_chars[(v >> 6) & 63];
		*w++ = b64url_chars[v & 63];
	}
	if (len - i == 1) {
		v = (uint32_t)in[i] << 16;
		*w++ = b64url_chars[v >> 18];
		*w++ = b64url_chars[(v >> 12) & 63];
	} else if (len - i == 2) {
		v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;
		*w++ = b64url_chars[v >> 18];
		*w++ = b64url_chars[(v >> 12) & 63];
		*w++ = b64url_chars[(v >> 6) & 63];
	}
	*w = '\0';
	return out;
}

static int
b64url_val(int c)
{
	const char	*p;

	if (c == '\0' || (p = strchr(b64url_chars, c)) == NULL)
		return -1;
	return (int)(p - b64url_chars);
}

/*
 * Decodes len characters of base64url, strictly: no padding, nothing
 * outside the alphabet, and zero bits where the last character has more
 * than the data needs.  Returns a NUL-terminated buffer, or NULL.
 */
static unsigned char *
b64url_decode(const char *in, size_t len, size_t *outlen)
{
	unsigned char	*out, *w;
	uint32_t	 v = 0;
	size_t		 i;
	int		 d, bits = 0;

	if (len % 4 == 1)
		return NULL;
	out = w = xcalloc(1, len / 4 * 3 + 3);
	for (i = 0; i < len; i++) {
		if ((d = b64url_val((unsigned char)in[i])) == -1)
			goto fail;
		v = v << 6 | (uint32_t)d;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			*w++ = (unsigned char)(v >> bits);
			v &= (1u << bits) - 1;
		}
	}
	if (v != 0)
		goto fail;
	*outlen = (size_t)(w - out);
	return out;
 fail:
	free(out);
	return NULL;
}

/* HMAC-SHA256 of data under key. */
static void
jwt_mac(const unsigned char *key, size_t keylen, const char *data,
    size_t len, unsigned char out[JWT_SIG_LEN])
{
	unsigned int	 n = JWT_SIG_LEN;

	if (HMAC(EVP_sha256(), key, (int)keylen, (const unsigned char *)data,
	    len, out, &n) == NULL || n != JWT_SIG_LEN)
		fatalx("%s: HMAC failed", __func__);
}

/* Signs claims: "header.payload.signature", each part base64url. */
char *
jwt_sign(const unsigned char *key, size_t keylen, json_t *claims)
{
	static const char	 header[] = "{\"alg\":\"HS256\",\"typ\":\"JWT\"}";
	unsigned char		 sig[JWT_SIG_LEN];
	char			*h, *p, *s, *payload, *input, *token;

	if ((payload = json_dumps(claims, JSON_COMPACT)) == NULL)
		fatalx("%s: json", __func__);
	h = b64url_encode((const unsigned char *)header, strlen(header));
	p = b64url_encode((const unsigned char *)payload, strlen(payload));
	xasprintf(&input, "%s.%s", h, p);
	jwt_mac(key, keylen, input, strlen(input), sig);
	s = b64url_encode(sig, sizeof(sig));
	xasprintf(&token, "%s.%s", input, s);
	OPENSSL_cleanse(sig, sizeof(sig));
	free(h);
	free(p);
	free(s);
	free(input);
	free(payload);
	return token;
}

/* Decodes one base64url part holding a JSON object. */
static json_t *
jwt_part_json(const char *part, size_t len)
{
	unsigned char	*raw;
	json_t		*j;
	size_t		 n;

	if ((raw = b64url_decode(part, len, &n)) == NULL)
		return NULL;
	j = json_loadb((const char *)raw, n, JSON_REJECT_DUPLICATES, NULL);
	free(raw);
	if (j != NULL && !json_is_object(j)) {
		json_decref(j);
		j = NULL;
	}
	return j;
}

/* Is claim a NumericDate (an integer, or a real jansson read as one)? */
static int
jwt_time(json_t *claims, const char *name, int required, long long *out)
{
	json_t	*v = json_object_get(claims, name);

	if (v == NULL)
		return required ? -1 : 0;
	if (json_is_integer(v))
		*out = json_integer_value(v);
	else if (json_is_real(v))
		*out = (long long)json_real_value(v);
	else
		return -1;
	return 1;
}

/*
 * Checks a token: HS256 signature under key (compared in constant time),
 * exp (required) and nbf (if there) against now with JWT_SKEW_S of slack,
 * iss equal to iss and aud equal to or listing aud.  0 with the claims
 * in *claims (the caller's), or -1.
 */
int
jwt_verify(const unsigned char *key, size_t keylen, const char *token,
    time_t now, const char *iss, const char *aud, json_t **claims)
{
	unsigned char	 mac[JWT_SIG_LEN], *sig = NULL;
	const char	*dot1, *dot2, *s;
	json_t		*hdr = NULL, *c = NULL, *v;
	long long	 t;
	size_t		 len = strlen(token), n = 0, i;
	int		 rc = -1, found;

	*claims = NULL;
	if (len > JWT_MAX_LEN || (dot1 = strchr(token, '.')) == NULL ||
	    (dot2 = strchr(dot1 + 1, '.')) == NULL ||
	    strchr(dot2 + 1, '.') != NULL || dot1 == token ||
	    dot2 == dot1 + 1 || dot2[1] == '\0')
		return -1;

	if ((hdr = jwt_part_json(token, (size_t)(dot1 - token))) == NULL ||
	    (v = json_object_get(hdr, "alg")) == NULL || !json_is_string(v) ||
	    strcmp(json_string_value(v), "HS256") != 0)
		goto done;
	if ((sig = b64url_decode(dot2 + 1, strlen(dot2 + 1), &n)) == NULL ||
	    n != JWT_SIG_LEN)
		goto done;
	jwt_mac(key, keylen, token, (size_t)(dot2 - token), mac);
	if (CRYPTO_memcmp(mac, sig, JWT_SIG_LEN) != 0)
		goto done;

	/* Signed by us: the claims can be read now. */
	if ((c = jwt_part_json(dot1 + 1, (size_t)(dot2 - dot1 - 1))) == NULL)
		goto done;
	if (jwt_time(c, "exp", 1, &t) != 1 || (long long)now >= t + JWT_SKEW_S)
		goto done;
	if ((found = jwt_time(c, "nbf", 0, &t)) == -1 ||
	    (found == 1 && (long long)now + JWT_SKEW_S < t))
		goto done;
	if ((v = json_object_get(c, "iss")) == NULL || !json_is_string(v) ||
	    strcmp(json_string_value(v), iss) != 0)
		goto done;
	v = json_object_get(c, "aud");
	if (json_is_string(v))
		found = strcmp(json_string_value(v), aud) == 0;
	else if (json_is_array(v)) {
		found = 0;
		for (i = 0; i < json_array_size(v); i++)
			if ((s = json_string_value(json_array_get(v, i))) !=
			    NULL && strcmp(s, aud) == 0)
				found = 1;
	} else
		found = 0;
	if (!found)
		goto done;
	*claims = c;
	c = NULL;
	rc = 0;
 done:
	OPENSSL_cleanse(mac, sizeof(mac));
	if (sig != NULL) {
		OPENSSL_cleanse(sig, n);
		free(sig);
	}
	json_decref(hdr);
	json_decref(c);
	return rc;
}

/*
 * Reads the key at path, which must be exactly keylen bytes in a regular
 * file.  1 read, 0 there is no such file, -1 error (in err).
 */
static int
jwt_key_read(const char *path, unsigned char *key, size_t keylen, char *err,
    size_t errlen)
{
	struct stat	 st;
	ssize_t		 r;
	size_t		 got = 0;
	int		 fd;

	if ((fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC)) == -1) {
		if (errno == ENOENT)
			return 0;
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return -1;
	}
	if (fstat(fd, &st) == -1 || !S_ISREG(st.st_mode) ||
	    st.st_size != (off_t)keylen) {
		snprintf(err, errlen, "%s: not a regular file of %zu bytes "
		    "(remove it to make a new key; tokens issued so far then "
		    "stop working)", path, keylen);
		close(fd);
		return -1;
	}
	if (st.st_mode & S_IROTH)
		log_warnx("auth: %s is readable by others: chmod 600 it",
		    path);
	while (got < keylen) {
		r = read(fd, key + got, keylen - got);
		if (r == -1 && errno == EINTR)
			continue;
		if (r <= 0) {
			snprintf(err, errlen, "%s: %s", path, r == 0 ?
			    "short read" : strerror(errno));
			OPENSSL_cleanse(key, keylen);
			close(fd);
			return -1;
		}
		got += (size_t)r;
	}
	close(fd);
	return 1;
}

/* Makes a new entry in the directory of path durable (best effort). */
static void
jwt_sync_dir(const char *path)
{
	char	*dir = xstrdup(path), *slash;
	int	 fd;

	if ((slash = strrchr(dir, '/')) != NULL)
		*slash = '\0';
	else {
		free(dir);
		dir = xstrdup(".");
	}
	if ((fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) != -1) {
		if (fsync(fd) == -1)
			log_warn("auth: fsync %s", dir);
		close(fd);
	}
	free(dir);
}

/*
 * Loads the signing key from path, making it on first use: random bytes
 * go to a new file (O_EXCL, mode 0600) that is synced and then linked to
 * path.  link(2) never replaces a file, so when two processes race, one
 * key wins whole and both use it.  0, or -1 with the reason in err.
 */
int
jwt_key_load(const char *path, unsigned char *key, size_t keylen, char *err,
    size_t errlen)
{
	char	*tmp = NULL;
	int	 fd = -1, tries, rc;

	for (tries = 0; tries < 3; tries++) {
		if ((rc = jwt_key_read(path, key, keylen, err, errlen)) != 0)
			return rc == 1 ? 0 : -1;
		if (RAND_bytes(key, (int)keylen) != 1) {
			snprintf(err, errlen, "no random bytes for a key");
			return -1;
		}
		free(tmp);
		xasprintf(&tmp, "%s.%ld.tmp", path, (long)getpid());
		(void)unlink(tmp);	/* left by a crash of this pid */
		if ((fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW |
		    O_CLOEXEC, 0600)) == -1 ||
		    fd_write_all(fd, key, keylen) == -1 || fsync(fd) == -1) {
			snprintf(err, errlen, "%s: %s", tmp, strerror(errno));
			goto fail;
		}
		close(fd);
		fd = -1;
		if (link(tmp, path) == 0) {
			(void)unlink(tmp);
			free(tmp);
			jwt_sync_dir(path);
			log_info("auth: made a new token key in %s", path);
			return 0;
		}
		if (errno != EEXIST) {
			snprintf(err, errlen, "%s: %s", path, strerror(errno));
			goto fail;
		}
		/* Somebody else's key got there first: use theirs. */
		(void)unlink(tmp);
		OPENSSL_cleanse(key, keylen);
	}
	snprintf(err, errlen, "%s: could not be read or made", path);
	free(tmp);
	return -1;
 fail:
	OPENSSL_cleanse(key, keylen);
	if (fd != -1)
		close(fd);
	(void)unlink(tmp);
	free(tmp);
	return -1;
}
