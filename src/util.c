/*
 * Small helpers shared by every file: allocation that cannot fail, URLs,
 * base64, query strings, times, header lists and small files.
 */
#include "config.h"

#include <sys/stat.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <event2/http.h>
#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "regcache.h"

/* Allocation failure is not something a daemon can recover from. */
void *
xcalloc(size_t n, size_t size)
{
	void	*p;

	if ((p = calloc(n, size)) == NULL)
		fatal("calloc");
	return p;
}

char *
xstrdup(const char *s)
{
	char	*p;

	if ((p = strdup(s)) == NULL)
		fatal("strdup");
	return p;
}

char *
xstrndup(const char *s, size_t n)
{
	char	*p;

	if ((p = strndup(s, n)) == NULL)
		fatal("strndup");
	return p;
}

int
xasprintf(char **out, const char *fmt, ...)
{
	va_list	 ap;
	int	 n;

	va_start(ap, fmt);
	n = vasprintf(out, fmt, ap);
	va_end(ap);
	if (n < 0)
		fatal("vasprintf");
	return n;
}

/* strlcpy: copies what fits, returns strlen(src) so callers see truncation. */
size_t
strlcpy_rc(char *dst, const char *src, size_t size)
{
	size_t	len = strlen(src);

	if (size > 0) {
		size_t n = len < size - 1 ? len : size - 1;
		memcpy(dst, src, n);
		dst[n] = '\0';
	}
	return len;
}

/* Parse an absolute http(s) URL; the parts are owned by *u. */
int
url_parse(const char *s, struct url *u)
{
	struct evhttp_uri	*uri;
	const char		*scheme, *host, *path, *query;
	int			 port;

	memset(u, 0, sizeof(*u));
	if ((uri = evhttp_uri_parse_with_flags(s, 0)) == NULL)
		return -1;
	scheme = evhttp_uri_get_scheme(uri);
	host = evhttp_uri_get_host(uri);
	if (scheme == NULL || host == NULL || *host == '\0' ||
	    evhttp_uri_get_userinfo(uri) != NULL)
		goto fail;
	if (strcasecmp(scheme, "https") == 0)
		u->tls = 1;
	else if (strcasecmp(scheme, "http") != 0)
		goto fail;
	if (host[0] == '[') {
		size_t len = strlen(host);
		if (len < 3 || host[len - 1] != ']')
			goto fail;
		u->host = xstrndup(host + 1, len - 2);
	} else
		u->host = xstrdup(host);
	port = evhttp_uri_get_port(uri);
	if (port == -1)
		port = u->tls ? 443 : 80;
	if (port <= 0 || port > 65535)
		goto fail;
	xasprintf(&u->port, "%d", port);
	path = evhttp_uri_get_path(uri);
	query = evhttp_uri_get_query(uri);
	if (path == NULL || *path == '\0')
		path = "/";
	if (query != NULL)
		xasprintf(&u->path, "%s%s?%s", *path == '/' ? "" : "/", path,
		    query);
	else
		xasprintf(&u->path, "%s%s", *path == '/' ? "" : "/", path);
	evhttp_uri_free(uri);
	return 0;
 fail:
	evhttp_uri_free(uri);
	url_clear(u);
	return -1;
}

void
url_clear(struct url *u)
{
	free(u->host);
	free(u->port);
	free(u->path);
	memset(u, 0, sizeof(*u));
}

/* The Host header value for u: host[:port], port omitted when default. */
static void
url_origin(const struct url *u, char *buf, size_t len)
{
	int	 dflt = strcmp(u->port, u->tls ? "443" : "80") == 0;
	int	 v6 = strchr(u->host, ':') != NULL;

	snprintf(buf, len, "%s://%s%s%s%s%s", u->tls ? "https" : "http",
	    v6 ? "[" : "", u->host, v6 ? "]" : "", dflt ? "" : ":",
	    dflt ? "" : u->port);
}

/* Resolve a Location header against the URL it came from (RFC 3986 5.2,
 * without dot-segment removal: registries send absolute paths or URLs). */
char *
url_resolve(const struct url *base, const char *loc)
{
	char	 origin[512], *out, *slash, *dir;

	if (strncasecmp(loc, "http://", 7) == 0 ||
	    strncasecmp(loc, "https://", 8) == 0)
		return xstrdup(loc);
	if (loc[0] == '/' && loc[1] == '/') {
		xasprintf(&out, "%s:%s", base->tls ? "https" : "http", loc);
		return out;
	}
	url_origin(base, origin, sizeof(origin));
	if (loc[0] == '/') {
		xasprintf(&out, "%s%s", origin, loc);
		return out;
	}
	dir = xstrdup(base->path);
	if ((slash = strchr(dir, '?')) != NULL)
		*slash = '\0';
	if ((slash = strrchr(dir, '/')) != NULL)
		slash[1] = '\0';
	xasprintf(&out, "%s%s%s", origin, dir, loc);
	free(dir);
	return out;
}

char *
base64_encode(const void *data, size_t len)
{
	char	*out = xcalloc(1, 4 * ((len + 2) / 3) + 1);

	EVP_EncodeBlock((unsigned char *)out, data, (int)len);
	return out;
}

/*
 * Decodes standard base64 (padding optional) into a malloc'd buffer with a
 * NUL after the bytes; NULL when it is not base64.
 */
char *
base64_decode(const char *in, size_t *outlen)
{
	size_t	 len = strlen(in), pad = 0;
	char	*buf, *out;
	int	 n;

	while (len > 0 && in[len - 1] == '=') {
		len--;
		pad++;
	}
	if (pad > 2 || len % 4 == 1 || strspn(in, "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
	    "abcdefghijklmnopqrstuvwxyz0123456789+/") != len)
		return NULL;
	/* EVP_DecodeBlock wants whole quads: pad again, then drop what the
	 * padding made. */
	pad = (4 - len % 4) % 4;
	buf = xcalloc(1, len + pad + 1);
	memcpy(buf, in, len);
	memset(buf + len, '=', pad);
	out = xcalloc(1, (len + pad) / 4 * 3 + 1);
	n = EVP_DecodeBlock((unsigned char *)out, (unsigned char *)buf,
	    (int)(len + pad));
	OPENSSL_cleanse(buf, len + pad);
	free(buf);
	if (n < 0 || (size_t)n < pad) {
		free(out);
		return NULL;
	}
	*outlen = (size_t)n - pad;
	out[*outlen] = '\0';
	return out;
}

/* Wipes and frees a secret string, and forgets it. */
void
secret_free(char **s)
{
	if (*s != NULL) {
		OPENSSL_cleanse(*s, strlen(*s));
		free(*s);
		*s = NULL;
	}
}

/* The Host header value for u: host[:port], the port only if not 80/443. */
char *
url_host_header(const struct url *u)
{
	int	 v6 = strchr(u->host, ':') != NULL;
	int	 dflt = strcmp(u->port, u->tls ? "443" : "80") == 0;
	char	*s;

	xasprintf(&s, "%s%s%s%s%s", v6 ? "[" : "", u->host, v6 ? "]" : "",
	    dflt ? "" : ":", dflt ? "" : u->port);
	return s;
}

/* Clears headers that may hold credentials, wiping their values. */
void
headers_wipe(struct evkeyvalq *h)
{
	struct evkeyval	*kv;

	TAILQ_FOREACH(kv, h, next)
		OPENSSL_cleanse(kv->value, strlen(kv->value));
	evhttp_clear_headers(h);
}

/*
 * Overwrites what an evbuffer holds (secrets), every chain of it, in
 * place: call it before draining or freeing the buffer.
 */
void
evbuffer_wipe(struct evbuffer *b)
{
	struct evbuffer_iovec	*v;
	int			 i, n;

	if ((n = evbuffer_peek(b, -1, NULL, NULL, 0)) <= 0)
		return;
	v = xcalloc((size_t)n, sizeof(*v));
	n = evbuffer_peek(b, -1, NULL, v, n);
	for (i = 0; i < n; i++)
		OPENSSL_cleanse(v[i].iov_base, v[i].iov_len);
	free(v);
}

/*
 * A NUL-terminated copy of what b holds, for parsing a reply that may
 * hold secrets: the buffer is wiped and emptied (a pullup would leave
 * unwiped copies behind).  Free the copy with secret_buf_free().
 */
char *
evbuffer_take_secret(struct evbuffer *b, size_t *len)
{
	char	*s;

	*len = evbuffer_get_length(b);
	s = xcalloc(1, *len + 1);
	if (evbuffer_copyout(b, s, *len) != (ev_ssize_t)*len)
		fatalx("%s: evbuffer_copyout", __func__);
	evbuffer_wipe(b);
	evbuffer_drain(b, *len);
	return s;
}

void
secret_buf_free(char *s, size_t len)
{
	if (s != NULL) {
		OPENSSL_cleanse(s, len);
		free(s);
	}
}

/* Wipes the value of every header called name (a copy was taken). */
void
headers_wipe_value(struct evkeyvalq *h, const char *name)
{
	struct evkeyval	*kv;

	TAILQ_FOREACH(kv, h, next)
		if (strcasecmp(kv->key, name) == 0)
			OPENSSL_cleanse(kv->value, strlen(kv->value));
}

/* Wipes jansson's copy of the string member key of o, if there is one. */
void
json_string_wipe(json_t *o, const char *key)
{
	const char	*s = json_string_value(json_object_get(o, key));

	if (s != NULL)
		OPENSSL_cleanse((char *)(uintptr_t)s, strlen(s));
}

/* Value of one hex digit, or -1. */
int
hexval(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/*
 * Find key in a query string ("a=1&b=2", with or without a leading path and
 * '?') and copy its percent-decoded value.  0 found, -1 absent or too long
 * or badly encoded.
 */
int
uri_query_get(const char *uri, const char *key, char *out, size_t outlen)
{
	const char	*q, *p, *end;
	size_t		 klen = strlen(key), n;

	if (outlen == 0)
		return -1;
	if ((q = strchr(uri, '?')) != NULL)
		q++;
	else
		q = uri;
	for (p = q; p != NULL && *p != '\0'; p = *end ? end + 1 : NULL) {
		if ((end = strchr(p, '&')) == NULL)
			end = p + strlen(p);
		if ((size_t)(end - p) < klen || strncmp(p, key, klen) != 0 ||
		    (p[klen] != '=' && p + klen != end))
			continue;
		p += klen;
		if (*p == '=')
			p++;
		for (n = 0; p < end; p++) {
			int c = (unsigned char)*p;
			if (c == '+')
				c = ' ';
			else if (c == '%') {
				int hi, lo;
				if (end - p < 3 || (hi = hexval(p[1])) < 0 ||
				    (lo = hexval(p[2])) < 0)
					return -1;
				c = hi << 4 | lo;
				p += 2;
			}
			if (c == '\0' || n + 1 >= outlen)
				return -1;
			out[n++] = (char)c;
		}
		out[n] = '\0';
		return 0;
	}
	return -1;
}

/* Percent-encode everything but RFC 3986 unreserved characters. */
char *
uri_escape(const char *s)
{
	char	*out;

	if ((out = evhttp_uriencode(s, -1, 0)) == NULL)
		fatal("evhttp_uriencode");
	return out;
}

/* Parse "2006-01-02T15:04:05[.frac](Z|+hh:mm)", as token services send. */
int
time_parse_rfc3339(const char *s, time_t *out)
{
	struct tm	 tm;
	const char	*p;
	int		 off = 0, sign, hh, mm;

	memset(&tm, 0, sizeof(tm));
	if ((p = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm)) == NULL)
		return -1;
	if (*p == '.')
		for (p++; isdigit((unsigned char)*p); p++)
			;
	if (*p == 'Z' || *p == 'z')
		p++;
	else if (*p == '+' || *p == '-') {
		sign = *p == '-' ? -1 : 1;
		if (!isdigit((unsigned char)p[1]) ||
		    !isdigit((unsigned char)p[2]) || p[3] != ':' ||
		    !isdigit((unsigned char)p[4]) ||
		    !isdigit((unsigned char)p[5]))
			return -1;
		hh = (p[1] - '0') * 10 + (p[2] - '0');
		mm = (p[4] - '0') * 10 + (p[5] - '0');
		if (hh > 23 || mm > 59)
			return -1;
		off = sign * (hh * 3600 + mm * 60);
		p += 6;
	} else
		return -1;
	if (*p != '\0')
		return -1;
	*out = timegm(&tm) - off;
	return 0;
}

/* Milliseconds on a clock that does not jump. */
uint64_t
mono_ms(void)
{
	struct timespec	ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* mkdir -p; fails when the path exists but is not a directory. */
int
mkdir_p(const char *path, mode_t mode)
{
	struct stat	 st;
	char		*p, *s;
	int		 rc = 0;

	if (*path == '\0') {
		errno = ENOENT;
		return -1;
	}
	s = xstrdup(path);

	for (p = s + 1; rc == 0; p++) {
		if (*p != '/' && *p != '\0')
			continue;
		char c = *p;
		*p = '\0';
		if (mkdir(s, mode) == -1 && errno != EEXIST)
			rc = -1;
		*p = c;
		if (c == '\0')
			break;
	}
	free(s);
	if (rc == 0 && stat(path, &st) == 0 && !S_ISDIR(st.st_mode)) {
		errno = ENOTDIR;
		rc = -1;
	}
	return rc;
}

/* Append every src header called name (NULL: all) to dst; how many. */
int
headers_copy(struct evkeyvalq *dst, const struct evkeyvalq *src,
    const char *name)
{
	struct evkeyval	*kv;
	int		 n = 0;

	TAILQ_FOREACH(kv, src, next) {
		if (name == NULL || strcasecmp(kv->key, name) == 0) {
			evhttp_add_header(dst, kv->key, kv->value);
			n++;
		}
	}
	return n;
}

void
headers_clear(struct evkeyvalq *h)
{
	evhttp_clear_headers(h);
}

/*
 * A copy of s fit for a log line: control bytes, quotes, backslashes and
 * non-ASCII bytes become %XX, so a client cannot forge or garble lines.
 */
char *
log_escape(const char *s)
{
	static const char	 hex[] = "0123456789ABCDEF";
	size_t			 n = 0;
	const unsigned char	*p;
	char			*out, *w;

	for (p = (const unsigned char *)s; *p != '\0'; p++)
		n += (*p < 0x20 || *p >= 0x7f || *p == '"' || *p == '\\') ?
		    3 : 1;
	out = w = xcalloc(1, n + 1);
	for (p = (const unsigned char *)s; *p != '\0'; p++) {
		if (*p < 0x20 || *p >= 0x7f || *p == '"' || *p == '\\') {
			*w++ = '%';
			*w++ = hex[*p >> 4];
			*w++ = hex[*p & 0xf];
		} else
			*w++ = (char)*p;
	}
	return out;
}

/*
 * Append len bytes of fd from offset off to out, with pread: no file
 * position is shared between readers.  -1 on error or a short file.
 */
int
fd_read_into(int fd, uint64_t off, size_t len, struct evbuffer *out)
{
	struct evbuffer_iovec	v;
	ssize_t			n;
	size_t			done = 0;

	if (len == 0)
		return 0;
	if (evbuffer_reserve_space(out, (ev_ssize_t)len, &v, 1) != 1)
		return -1;
	while (done < len) {
		n = pread(fd, (char *)v.iov_base + done, len - done,
		    (off_t)(off + done));
		if (n == -1 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;	/* the reservation is simply dropped */
		done += (size_t)n;
	}
	v.iov_len = len;
	return evbuffer_commit_space(out, &v, 1);
}

/* write(2) until all of buf is written; -1 on error. */
int
fd_write_all(int fd, const void *buf, size_t len)
{
	const char	*p = buf;
	ssize_t		 n;

	while (len > 0) {
		if ((n = write(fd, p, len)) == -1) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/*
 * Read a whole small file (a configuration, an htpasswd or a secret file)
 * into *out: malloc'd, NUL-terminated, *outlen bytes before the NUL.  More
 * than max bytes is an error; with FILE_READ_REGULAR so is anything but a
 * regular file.  A regular file's size is checked before reading; other
 * files (a pipe, /proc) are read to their end.  *st, when st is not NULL,
 * gets the file's status as soon as it is open, also when reading then
 * fails.  On error the reason, without the path, goes to err and what was
 * read is wiped: the file may hold a secret.
 */
int
file_read(const char *path, size_t max, int flags, struct stat *st,
    char **out, size_t *outlen, char *err, size_t errlen)
{
	struct stat	 sb;
	char		*buf = NULL, *nbuf;
	size_t		 len = 0, cap, ncap;
	ssize_t		 r;
	int		 fd;

	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) == -1 ||
	    fstat(fd, &sb) == -1) {
		snprintf(err, errlen, "%s", strerror(errno));
		if (fd != -1)
			close(fd);
		return -1;
	}
	if (st != NULL)
		*st = sb;
	if ((flags & FILE_READ_REGULAR) && !S_ISREG(sb.st_mode)) {
		snprintf(err, errlen, "not a regular file");
		goto fail;
	}
	if (S_ISREG(sb.st_mode) && (uint64_t)sb.st_size > max) {
		snprintf(err, errlen, "larger than %zu bytes", max);
		goto fail;
	}
	/* One byte beyond the expected size, so the end is seen without
	 * growing the buffer. */
	if (S_ISREG(sb.st_mode))
		cap = (size_t)sb.st_size + 1;
	else
		cap = max < 4096 ? max + 1 : 4096;
	buf = xcalloc(1, cap + 1);
	for (;;) {
		if (len == cap) {
			if (len > max) {
				snprintf(err, errlen, "larger than %zu bytes",
				    max);
				goto fail;
			}
			ncap = cap < 2048 ? 4096 : cap * 2;
			if (ncap > max + 1)
				ncap = max + 1;
			nbuf = xcalloc(1, ncap + 1);
			memcpy(nbuf, buf, len);
			OPENSSL_cleanse(buf, cap);
			free(buf);
			buf = nbuf;
			cap = ncap;
		}
		r = read(fd, buf + len, cap - len);
		if (r == -1 && errno == EINTR)
			continue;
		if (r == -1) {
			snprintf(err, errlen, "%s", strerror(errno));
			goto fail;
		}
		if (r == 0)
			break;
		len += (size_t)r;
	}
	close(fd);
	*out = buf;
	*outlen = len;
	return 0;

 fail:
	if (buf != NULL) {
		OPENSSL_cleanse(buf, cap);
		free(buf);
	}
	close(fd);
	return -1;
}
