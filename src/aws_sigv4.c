/*
 * AWS Signature Version 4 (HMAC-SHA256) for requests to AWS APIs, such as
 * ECR's GetAuthorizationToken.  It builds the canonical request, the
 * string to sign and the Authorization header value exactly as the AWS
 * "Signature Version 4 test suite" defines them (tests/data/aws4), for
 * non-S3 services: the path is normalized and each segment is encoded
 * as sent, so a '%' already in the path is encoded again.  No network,
 * no global state.
 */
#include "config.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "regcache.h"

#define SIGV4_ALGORITHM		"AWS4-HMAC-SHA256"
#define SIGV4_TERMINATOR	"aws4_request"
#define SIGV4_HASH_LEN		32

/* One header line as signed: lower-case name, canonical value. */
struct sigv4_hdr {
	char		*sh_name;
	char		*sh_value;
	size_t		 sh_order;
};

/* One query parameter, both halves already encoded. */
struct sigv4_param {
	char		*sp_key;
	char		*sp_value;
};

/* Returns a malloc'd NUL-terminated copy of what buf holds, or NULL. */
static char *
sigv4_buf_string(struct evbuffer *buf)
{
	size_t	 len = evbuffer_get_length(buf);
	char	*s;

	if ((s = malloc(len + 1)) == NULL)
		return NULL;
	if (len > 0 && evbuffer_copyout(buf, s, len) != (ev_ssize_t)len) {
		free(s);
		return NULL;
	}
	s[len] = '\0';
	return s;
}

/* Writes the lower-case hex of len bytes into out (2 * len + 1 bytes). */
static void
sigv4_hex(const unsigned char *p, size_t len, char *out)
{
	static const char	 digits[] = "0123456789abcdef";
	size_t			 i;

	for (i = 0; i < len; i++) {
		out[2 * i] = digits[p[i] >> 4];
		out[2 * i + 1] = digits[p[i] & 0xf];
	}
	out[2 * len] = '\0';
}

/* SHA-256 of len bytes at p, as 64 hex digits in out (65 bytes). */
static int
sigv4_sha256_hex(const void *p, size_t len, char *out)
{
	unsigned char	 md[EVP_MAX_MD_SIZE];
	unsigned int	 mdlen = 0;

	if (EVP_Digest(p == NULL ? "" : p, len, md, &mdlen, EVP_sha256(),
	    NULL) != 1 || mdlen != SIGV4_HASH_LEN)
		return -1;
	sigv4_hex(md, mdlen, out);
	return 0;
}

/* HMAC-SHA256 of data under key into out (32 bytes). */
static int
sigv4_hmac(const void *key, size_t keylen, const char *data, size_t len,
    unsigned char *out)
{
	unsigned int	 outlen = 0;

	if (HMAC(EVP_sha256(), key, (int)keylen, (const unsigned char *)data,
	    len, out, &outlen) == NULL || outlen != SIGV4_HASH_LEN)
		return -1;
	return 0;
}

/* True for the RFC 3986 unreserved characters, never percent-encoded. */
static int
sigv4_unreserved(unsigned char c)
{
	return ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
	    (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.' ||
	    c == '~');
}

/* Appends len bytes of s to buf, percent-encoding all but unreserved. */
static int
sigv4_encode(struct evbuffer *buf, const char *s, size_t len)
{
	size_t		 i;
	unsigned char	 c;

	for (i = 0; i < len; i++) {
		c = (unsigned char)s[i];
		if (sigv4_unreserved(c)) {
			if (evbuffer_add(buf, &s[i], 1) != 0)
				return -1;
		} else if (evbuffer_add_printf(buf, "%%%02X", c) < 0)
			return -1;
	}
	return 0;
}

/* Returns a malloc'd percent-encoded copy of len bytes of s, or NULL. */
static char *
sigv4_encode_string(const char *s, size_t len)
{
	struct evbuffer	*buf;
	char		*out = NULL;

	if ((buf = evbuffer_new()) == NULL)
		return NULL;
	if (sigv4_encode(buf, s, len) == 0)
		out = sigv4_buf_string(buf);
	evbuffer_free(buf);
	return out;
}


/*
 * Decodes the %XX escapes of len bytes of s into out (len + 1 bytes)
 * and returns the decoded length; a malformed escape stays as it is.
 */
static size_t
sigv4_decode(const char *s, size_t len, char *out)
{
	size_t	 i, n = 0;
	int	 hi, lo;

	for (i = 0; i < len; i++) {
		if (s[i] == '%' && i + 2 < len &&
		    (hi = hexval((unsigned char)s[i + 1])) >= 0 &&
		    (lo = hexval((unsigned char)s[i + 2])) >= 0) {
			out[n++] = (char)(hi << 4 | lo);
			i += 2;
		} else
			out[n++] = s[i];
	}
	out[n] = '\0';
	return n;
}

/*
 * Appends the canonical URI of the path part of target (up to '?'): dot
 * segments removed, empty segments dropped, each segment encoded.
 */
static int
sigv4_canonical_uri(struct evbuffer *buf, const char *target)
{
	const char	**segs = NULL, *p, *end, *seg;
	size_t		 *lens = NULL, nsegs = 0, n, i;
	int		  trailing = 0, rc = -1;

	end = target + strcspn(target, "?");
	n = 1;
	for (p = target; p < end; p++)
		if (*p == '/')
			n++;
	segs = calloc(n, sizeof(*segs));
	lens = calloc(n, sizeof(*lens));
	if (segs == NULL || lens == NULL)
		goto fail;

	for (p = target; p < end; p = seg + n) {
		while (p < end && *p == '/')
			p++;
		seg = p;
		for (n = 0; seg + n < end && seg[n] != '/'; n++)
			;
		if (seg + n == end && n == 0)
			break;
		/* A final ".", ".." or "x/" leaves a directory. */
		trailing = seg + n < end ||
		    (n == 1 && seg[0] == '.') ||
		    (n == 2 && seg[0] == '.' && seg[1] == '.');
		if (n == 1 && seg[0] == '.')
			continue;
		if (n == 2 && seg[0] == '.' && seg[1] == '.') {
			if (nsegs > 0)
				nsegs--;
			continue;
		}
		segs[nsegs] = seg;
		lens[nsegs++] = n;
	}

	for (i = 0; i < nsegs; i++)
		if (evbuffer_add(buf, "/", 1) != 0 ||
		    sigv4_encode(buf, segs[i], lens[i]) != 0)
			goto fail;
	if ((nsegs == 0 || trailing) && evbuffer_add(buf, "/", 1) != 0)
		goto fail;
	rc = 0;
fail:
	free(segs);
	free(lens);
	return rc;
}

/* qsort order of query parameters: by encoded key, then encoded value. */
static int
sigv4_param_cmp(const void *a, const void *b)
{
	const struct sigv4_param	*pa = a, *pb = b;
	int				 c;

	if ((c = strcmp(pa->sp_key, pb->sp_key)) != 0)
		return c;
	return strcmp(pa->sp_value, pb->sp_value);
}

/*
 * Appends the canonical query string of target (after '?'): each key and
 * value decoded then encoded again, sorted, joined with '&'.
 */
static int
sigv4_canonical_query(struct evbuffer *buf, const char *target)
{
	struct sigv4_param	*params = NULL;
	const char		*q, *p, *eq;
	char			*tmp = NULL;
	size_t			 n = 1, np = 0, len, klen, i;
	int			 rc = -1;

	if ((q = strchr(target, '?')) == NULL)
		return 0;
	q++;
	for (p = q; *p != '\0'; p++)
		if (*p == '&')
			n++;
	if ((params = calloc(n, sizeof(*params))) == NULL ||
	    (tmp = malloc(strlen(q) + 1)) == NULL)
		goto fail;

	for (p = q; *p != '\0'; p += len + (p[len] == '&')) {
		len = strcspn(p, "&");
		if (len == 0)
			continue;
		eq = memchr(p, '=', len);
		klen = eq != NULL ? (size_t)(eq - p) : len;
		i = sigv4_decode(p, klen, tmp);
		if ((params[np].sp_key = sigv4_encode_string(tmp, i)) == NULL)
			goto fail;
		if (eq != NULL)
			i = sigv4_decode(eq + 1, len - klen - 1, tmp);
		else
			i = 0;
		if ((params[np++].sp_value = sigv4_encode_string(tmp, i)) ==
		    NULL)
			goto fail;
	}
	qsort(params, np, sizeof(*params), sigv4_param_cmp);
	for (i = 0; i < np; i++)
		if (evbuffer_add_printf(buf, "%s%s=%s", i > 0 ? "&" : "",
		    params[i].sp_key, params[i].sp_value) < 0)
			goto fail;
	rc = 0;
fail:
	for (i = 0; params != NULL && i < n; i++) {
		free(params[i].sp_key);
		free(params[i].sp_value);
	}
	free(params);
	free(tmp);
	return rc;
}

/*
 * Returns the canonical form of a header value: each line (obsolete line
 * folding) trimmed with inner runs of white space collapsed to one space,
 * the lines joined with ','.
 */
static char *
sigv4_header_value(const char *v)
{
	char	*out, *o;
	int	 space = 0, line = 0, any = 0;

	if ((out = malloc(strlen(v) + 1)) == NULL)
		return NULL;
	o = out;
	for (; *v != '\0'; v++) {
		if (*v == '\r' || *v == '\n') {
			space = 0;
			line = any;
		} else if (*v == ' ' || *v == '\t') {
			space = any;
		} else {
			if (line)
				*o++ = ',';
			else if (space)
				*o++ = ' ';
			*o++ = *v;
			space = line = 0;
			any = 1;
		}
	}
	*o = '\0';
	return out;
}

/* qsort order of headers: by lower-case name, then as they came. */
static int
sigv4_hdr_cmp(const void *a, const void *b)
{
	const struct sigv4_hdr	*ha = a, *hb = b;
	int			 c;

	if ((c = strcmp(ha->sh_name, hb->sh_name)) != 0)
		return c;
	return ha->sh_order < hb->sh_order ? -1 : ha->sh_order > hb->sh_order;
}

/* Adds one header to the array hdrs (room checked by the caller). */
static int
sigv4_hdr_add(struct sigv4_hdr *hdrs, size_t *n, const char *name,
    const char *value)
{
	struct sigv4_hdr	*h = &hdrs[*n];
	char			*c;

	if ((h->sh_name = strdup(name)) == NULL ||
	    (h->sh_value = sigv4_header_value(value)) == NULL)
		return -1;
	for (c = h->sh_name; *c != '\0'; c++)
		*c = (char)tolower((unsigned char)*c);
	h->sh_order = (*n)++;
	return 0;
}

/* True if headers has one named name (case-insensitive). */
static int
sigv4_has_header(const struct evkeyvalq *headers, const char *name)
{
	const struct evkeyval	*kv;

	if (headers == NULL)
		return 0;
	TAILQ_FOREACH(kv, headers, next)
		if (strcasecmp(kv->key, name) == 0)
			return 1;
	return 0;
}

/*
 * Appends the canonical headers block (each "name:value\n") to buf and
 * the signed headers list to signed_buf.  Authorization is never signed;
 * X-Amz-Date and X-Amz-Security-Token are signed even when the caller
 * has not set them yet, with amz_date and token.
 */
static int
sigv4_canonical_headers(struct evbuffer *buf, struct evbuffer *signed_buf,
    const struct evkeyvalq *headers, const char *amz_date, const char *token)
{
	const struct evkeyval	*kv;
	struct sigv4_hdr	*hdrs = NULL;
	size_t			 n = 2, nh = 0, i;
	int			 rc = -1;

	if (headers != NULL)
		TAILQ_FOREACH(kv, headers, next)
			n++;
	if ((hdrs = calloc(n, sizeof(*hdrs))) == NULL)
		goto fail;
	if (headers != NULL) {
		TAILQ_FOREACH(kv, headers, next) {
			if (strcasecmp(kv->key, "Authorization") == 0)
				continue;
			if (sigv4_hdr_add(hdrs, &nh, kv->key, kv->value) != 0)
				goto fail;
		}
	}
	if (!sigv4_has_header(headers, "X-Amz-Date") &&
	    sigv4_hdr_add(hdrs, &nh, "x-amz-date", amz_date) != 0)
		goto fail;
	if (token != NULL &&
	    !sigv4_has_header(headers, "X-Amz-Security-Token") &&
	    sigv4_hdr_add(hdrs, &nh, "x-amz-security-token", token) != 0)
		goto fail;
	qsort(hdrs, nh, sizeof(*hdrs), sigv4_hdr_cmp);

	for (i = 0; i < nh; i++) {
		if (i > 0 && strcmp(hdrs[i].sh_name, hdrs[i - 1].sh_name) == 0) {
			if (evbuffer_add_printf(buf, ",%s",
			    hdrs[i].sh_value) < 0)
				goto fail;
			continue;
		}
		if (evbuffer_add_printf(buf, "%s%s:%s", i > 0 ? "\n" : "",
		    hdrs[i].sh_name, hdrs[i].sh_value) < 0 ||
		    evbuffer_add_printf(signed_buf, "%s%s", i > 0 ? ";" : "",
		    hdrs[i].sh_name) < 0)
			goto fail;
	}
	if (nh > 0 && evbuffer_add(buf, "\n", 1) != 0)
		goto fail;
	rc = 0;
fail:
	for (i = 0; hdrs != NULL && i < n; i++) {
		free(hdrs[i].sh_name);
		free(hdrs[i].sh_value);
	}
	free(hdrs);
	return rc;
}

/*
 * Writes when as the X-Amz-Date value (YYYYMMDD'T'HHMMSS'Z') into buf,
 * which holds at least SIGV4_DATE_LEN bytes.
 */
int
sigv4_amz_date(time_t when, char *buf, size_t len)
{
	struct tm	 tm;

	if (gmtime_r(&when, &tm) == NULL ||
	    strftime(buf, len, "%Y%m%dT%H%M%SZ", &tm) != SIGV4_DATE_LEN - 1)
		return -1;
	return 0;
}

/*
 * Signs req for service in region at time when with creds.  On success
 * it returns 0 and sets the three outputs to malloc'd strings the caller
 * frees: the canonical request, the string to sign and the value of the
 * Authorization header.  The caller sends X-Amz-Date (sigv4_amz_date)
 * and, with a session token, X-Amz-Security-Token: both are signed even
 * when req->headers does not hold them yet (an X-Amz-Date the caller
 * did set must be the same time as when).  Any output may be NULL
 * when not wanted.  Returns -1 on bad arguments or memory shortage.
 */
int
sigv4_sign(const struct sigv4_request *req, const struct sigv4_creds *creds,
    const char *region, const char *service, time_t when,
    char **canonical_request, char **string_to_sign, char **authorization)
{
	struct evbuffer	*creq = NULL, *signed_hdrs = NULL, *sts = NULL;
	char		 amz_date[SIGV4_DATE_LEN], day[9], *secret = NULL;
	char		 payload[2 * SIGV4_HASH_LEN + 1];
	char		 creq_hash[2 * SIGV4_HASH_LEN + 1];
	char		 sig[2 * SIGV4_HASH_LEN + 1];
	char		*creq_s = NULL, *sts_s = NULL, *authz_s = NULL;
	char		*sh_s = NULL;
	unsigned char	 k[SIGV4_HASH_LEN], k2[SIGV4_HASH_LEN];
	int		 rc = -1;

	if (canonical_request != NULL)
		*canonical_request = NULL;
	if (string_to_sign != NULL)
		*string_to_sign = NULL;
	if (authorization != NULL)
		*authorization = NULL;
	if (req == NULL || req->method == NULL || req->path == NULL ||
	    creds == NULL || creds->access_key == NULL ||
	    creds->secret_key == NULL || region == NULL || service == NULL ||
	    (req->body == NULL && req->body_len > 0))
		return -1;
	if (sigv4_amz_date(when, amz_date, sizeof(amz_date)) != 0)
		return -1;
	memcpy(day, amz_date, 8);
	day[8] = '\0';

	if ((creq = evbuffer_new()) == NULL ||
	    (signed_hdrs = evbuffer_new()) == NULL ||
	    (sts = evbuffer_new()) == NULL)
		goto fail;

	/* Task 1: the canonical request. */
	if (sigv4_sha256_hex(req->body, req->body_len, payload) != 0)
		goto fail;
	if (evbuffer_add_printf(creq, "%s\n", req->method) < 0 ||
	    sigv4_canonical_uri(creq, req->path) != 0 ||
	    evbuffer_add(creq, "\n", 1) != 0 ||
	    sigv4_canonical_query(creq, req->path) != 0 ||
	    evbuffer_add(creq, "\n", 1) != 0 ||
	    sigv4_canonical_headers(creq, signed_hdrs, req->headers, amz_date,
	    creds->session_token) != 0 ||
	    (sh_s = sigv4_buf_string(signed_hdrs)) == NULL ||
	    evbuffer_add_printf(creq, "\n%s\n%s", sh_s, payload) < 0 ||
	    (creq_s = sigv4_buf_string(creq)) == NULL)
		goto fail;

	/* Task 2: the string to sign. */
	if (sigv4_sha256_hex(creq_s, strlen(creq_s), creq_hash) != 0 ||
	    evbuffer_add_printf(sts, "%s\n%s\n%s/%s/%s/%s\n%s",
	    SIGV4_ALGORITHM, amz_date, day, region, service, SIGV4_TERMINATOR,
	    creq_hash) < 0 ||
	    (sts_s = sigv4_buf_string(sts)) == NULL)
		goto fail;

	/* Task 3: the signing key, then the signature. */
	xasprintf(&secret, "AWS4%s", creds->secret_key);
	if (sigv4_hmac(secret, strlen(secret), day, strlen(day), k) != 0 ||
	    sigv4_hmac(k, sizeof(k), region, strlen(region), k2) != 0 ||
	    sigv4_hmac(k2, sizeof(k2), service, strlen(service), k) != 0 ||
	    sigv4_hmac(k, sizeof(k), SIGV4_TERMINATOR,
	    strlen(SIGV4_TERMINATOR), k2) != 0 ||
	    sigv4_hmac(k2, sizeof(k2), sts_s, strlen(sts_s), k) != 0)
		goto fail;
	sigv4_hex(k, sizeof(k), sig);

	xasprintf(&authz_s, "%s Credential=%s/%s/%s/%s/%s, "
	    "SignedHeaders=%s, Signature=%s", SIGV4_ALGORITHM,
	    creds->access_key, day, region, service, SIGV4_TERMINATOR, sh_s,
	    sig);

	if (canonical_request != NULL) {
		*canonical_request = creq_s;
		creq_s = NULL;
	}
	if (string_to_sign != NULL) {
		*string_to_sign = sts_s;
		sts_s = NULL;
	}
	if (authorization != NULL) {
		*authorization = authz_s;
		authz_s = NULL;
	}
	rc = 0;
fail:
	if (secret != NULL) {
		OPENSSL_cleanse(secret, strlen(secret));
		free(secret);
	}
	OPENSSL_cleanse(k, sizeof(k));
	OPENSSL_cleanse(k2, sizeof(k2));
	free(creq_s);
	free(sts_s);
	free(authz_s);
	free(sh_s);
	if (creq != NULL)
		evbuffer_free(creq);
	if (signed_hdrs != NULL)
		evbuffer_free(signed_hdrs);
	if (sts != NULL)
		evbuffer_free(sts);
	return rc;
}
