/*
 * Unit tests of src/util.c: URL parsing and resolution, base64, query
 * strings, RFC 3339 times, mkdir_p and file_read.  Directories and files
 * are made under a fresh mkdtemp directory, removed afterwards.
 */
#include "config.h"

#include <sys/stat.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "regcache.h"
#include "tap.h"

/* The library refers to these; main.c defines them in the daemon. */
struct event_base	*ev_base;
struct evdns_base	*dns_base;
struct config		*conf;

/* 2020-01-01T00:00:00Z */
#define T2020	((time_t)1577836800)

/* Parses s, which must succeed, and checks every part. */
static void
check_url(const char *s, int tls, const char *host, const char *port,
    const char *path)
{
	struct url	u;
	int		good;

	if (url_parse(s, &u) != 0) {
		ok(0, "url_parse \"%s\"", s);
		return;
	}
	good = u.tls == tls && strcmp(u.host, host) == 0 &&
	    strcmp(u.port, port) == 0 && strcmp(u.path, path) == 0;
	ok(good, "url_parse \"%s\" -> %s %s %s %s", s, tls ? "tls" : "plain",
	    host, port, path);
	if (!good)
		diag("got %d host \"%s\" port \"%s\" path \"%s\"", u.tls,
		    u.host, u.port, u.path);
	url_clear(&u);
	ok(u.host == NULL && u.port == NULL && u.path == NULL,
	    "url_clear empties it");
}

static void
check_url_bad(const char *s, const char *why)
{
	struct url	u;
	int		rc;

	memset(&u, 0xa5, sizeof(u));
	rc = url_parse(s, &u);
	ok(rc == -1 && u.host == NULL && u.port == NULL && u.path == NULL,
	    "url_parse refuses \"%s\" (%s)", s, why);
	if (rc == 0)
		url_clear(&u);
}

static void
test_url_parse(void)
{
	check_url("http://h", 0, "h", "80", "/");
	check_url("https://h", 1, "h", "443", "/");
	check_url("http://h/", 0, "h", "80", "/");
	check_url("https://registry-1.docker.io/v2/", 1,
	    "registry-1.docker.io", "443", "/v2/");
	check_url("http://h:5000", 0, "h", "5000", "/");
	check_url("https://h:8443/v2/x", 1, "h", "8443", "/v2/x");
	check_url("http://h:443/", 0, "h", "443", "/");
	check_url("https://h:80/", 1, "h", "80", "/");
	check_url("https://h/v2/a/blobs/x?sig=abc&exp=1", 1, "h", "443",
	    "/v2/a/blobs/x?sig=abc&exp=1");
	check_url("https://h/token?service=s&scope=repository%3Aa%3Apull", 1,
	    "h", "443", "/token?service=s&scope=repository%3Aa%3Apull");
	check_url("http://h?x=1", 0, "h", "80", "/?x=1");
	check_url("http://h/x#frag", 0, "h", "80", "/x");
	check_url("HTTPS://h/", 1, "h", "443", "/");
	check_url("http://127.0.0.1:5001/v2/", 0, "127.0.0.1", "5001",
	    "/v2/");
	check_url("http://[::1]:5000", 0, "::1", "5000", "/");
	check_url("http://[::1]:5000/v2/", 0, "::1", "5000", "/v2/");
	check_url("https://[2001:db8::1]/x", 1, "2001:db8::1", "443", "/x");

	check_url_bad("ftp://h/x", "ftp");
	check_url_bad("file:///etc/passwd", "file");
	check_url_bad("http://user:pw@h/", "userinfo with a password");
	check_url_bad("https://user@h/", "userinfo");
	check_url_bad("http:///x", "empty host");
	check_url_bad("http://", "no host");
	check_url_bad("/v2/", "no scheme");
	check_url_bad("h:5000", "no authority");
	check_url_bad("//h/x", "scheme-relative");
	check_url_bad("", "empty");
	check_url_bad("http://h:0/", "port 0");
	check_url_bad("http://h:65536/", "port too big");
	check_url_bad("http://h:x/", "port not a number");
	check_url_bad("http://h x/", "space in host");
}

/* Resolves loc against base, which must parse, and checks the result. */
static void
check_resolve(const char *base, const char *loc, const char *want)
{
	struct url	 u;
	char		*got;

	if (url_parse(base, &u) != 0) {
		ok(0, "url_resolve: base \"%s\" parses", base);
		return;
	}
	got = url_resolve(&u, loc);
	is_str(got, want, "url_resolve \"%s\" against \"%s\"", loc, base);
	free(got);
	url_clear(&u);
}

static void
test_url_resolve(void)
{
	const char	*b = "https://reg.example:8443/v2/a/blobs/sha256:x?y=1";

	check_resolve(b, "https://cdn.example/blob?sig=1",
	    "https://cdn.example/blob?sig=1");
	check_resolve(b, "http://cdn.example/blob", "http://cdn.example/blob");
	check_resolve(b, "HTTPS://cdn.example/x", "HTTPS://cdn.example/x");
	check_resolve(b, "//cdn.example/x?s=1", "https://cdn.example/x?s=1");
	check_resolve("http://h/a", "//cdn.example/x", "http://cdn.example/x");
	check_resolve(b, "/x/y?z=1", "https://reg.example:8443/x/y?z=1");
	check_resolve(b, "/", "https://reg.example:8443/");
	check_resolve(b, "rel", "https://reg.example:8443/v2/a/blobs/rel");
	check_resolve(b, "rel?q=/a", "https://reg.example:8443/v2/a/blobs/"
	    "rel?q=/a");
	check_resolve("https://h/a/b?x=/c/d", "e", "https://h/a/e");
	check_resolve("https://h", "e", "https://h/e");
	check_resolve("https://h/", "/x", "https://h/x");
	check_resolve("https://h:443/", "/x", "https://h/x");
	check_resolve("http://h:80/", "/x", "http://h/x");
	check_resolve("http://h:443/", "/x", "http://h:443/x");
	check_resolve("https://h:80/", "/x", "https://h:80/x");
	check_resolve("http://[::1]:5000/v2/", "/x", "http://[::1]:5000/x");
	check_resolve("http://[::1]/v2/", "y", "http://[::1]/v2/y");
}

static void
check_b64(const char *in, size_t len, const char *want)
{
	char	*got = base64_encode(in, len);

	is_str(got, want, "base64 of %zu bytes -> \"%s\"", len, want);
	free(got);
}

static void
test_base64(void)
{
	/* RFC 4648, section 10. */
	check_b64("", 0, "");
	check_b64("f", 1, "Zg==");
	check_b64("fo", 2, "Zm8=");
	check_b64("foo", 3, "Zm9v");
	check_b64("foob", 4, "Zm9vYg==");
	check_b64("fooba", 5, "Zm9vYmE=");
	check_b64("foobar", 6, "Zm9vYmFy");
	check_b64("user:pass", 9, "dXNlcjpwYXNz");
	check_b64("\xff\xfe\xfd", 3, "//79");
	check_b64("\0\0", 2, "AAA=");
	check_b64("Aladdin:open sesame", 19, "QWxhZGRpbjpvcGVuIHNlc2FtZQ==");
}

/* Looks key up in uri with a buffer of outlen; want NULL means -1. */
static void
check_query(const char *uri, const char *key, size_t outlen,
    const char *want)
{
	char	out[512];
	int	rc;

	memset(out, 'Z', sizeof(out));
	rc = uri_query_get(uri, key, out, outlen);
	if (want == NULL)
		ok(rc == -1, "uri_query_get \"%s\" %s -> -1", uri, key);
	else {
		ok(rc == 0 && strcmp(out, want) == 0,
		    "uri_query_get \"%s\" %s -> \"%s\"", uri, key, want);
		if (rc != 0)
			diag("got rc %d", rc);
		else if (strcmp(out, want) != 0)
			diag("got \"%s\"", out);
	}
	ok(out[outlen] == 'Z', "uri_query_get \"%s\" %s: no write past %zu",
	    uri, key, outlen);
}

static void
test_query(void)
{
	char	long_uri[600];

	check_query("/v2/a/manifests/l?ns=docker.io", "ns", 64, "docker.io");
	check_query("/v2/a/manifests/l?x=1&ns=ghcr.io&y=2", "ns", 64,
	    "ghcr.io");
	check_query("/v2/a/manifests/l?x=1&ns=ghcr.io", "ns", 64, "ghcr.io");
	check_query("ns=docker.io&x=1", "ns", 64, "docker.io");
	check_query("?ns=docker.io", "ns", 64, "docker.io");
	check_query("/v2/a/manifests/l?ns=a&ns=b", "ns", 64, "a");
	check_query("/v2/a/manifests/l?ns=", "ns", 64, "");
	check_query("/v2/a/manifests/l?ns", "ns", 64, "");
	check_query("/v2/a/manifests/l?ns&x=1", "ns", 64, "");
	check_query("/v2/a/manifests/l?ns=a=b", "ns", 64, "a=b");

	/* Absent, and keys that merely start or end alike. */
	check_query("/v2/a/manifests/l", "ns", 64, NULL);
	check_query("/v2/a/manifests/l?", "ns", 64, NULL);
	check_query("/v2/a/manifests/l?x=1&y=2", "ns", 64, NULL);
	check_query("/v2/a/manifests/l?nsx=docker.io", "ns", 64, NULL);
	check_query("/v2/a/manifests/l?nsx=a&ns=b", "ns", 64, "b");
	check_query("/v2/a/manifests/l?ns=a&nsx=b", "nsx", 64, "b");
	check_query("/v2/a/manifests/l?xns=a", "ns", 64, NULL);
	check_query("/v2/a/manifests/l?n=a", "ns", 64, NULL);
	check_query("/v2/ns=a/manifests/l", "ns", 64, NULL);
	check_query("/v2/a/manifests/l?x=ns=a", "ns", 64, NULL);
	check_query("/v2/a/manifests/l?NS=a", "ns", 64, NULL);

	/* Decoding. */
	check_query("?ns=registry%2Dx%3A5000", "ns", 64, "registry-x:5000");
	check_query("?ns=a%2fb%2Fc", "ns", 64, "a/b/c");
	check_query("?ns=a+b", "ns", 64, "a b");
	check_query("?ns=a%2Bb", "ns", 64, "a+b");
	check_query("?ns=%26&x=1", "ns", 64, "&");
	check_query("?ns=%zz", "ns", 64, NULL);
	check_query("?ns=%4", "ns", 64, NULL);
	check_query("?ns=%", "ns", 64, NULL);
	check_query("?ns=%4&x=1", "ns", 64, NULL);
	check_query("?ns=a%00b", "ns", 64, NULL);
	check_query("?ns=%00", "ns", 64, NULL);

	/* Lengths: outlen counts the NUL. */
	check_query("?ns=abc", "ns", 4, "abc");
	check_query("?ns=abcd", "ns", 4, NULL);
	check_query("?ns=%61%62%63", "ns", 4, "abc");
	check_query("?ns=%61%62%63%64", "ns", 4, NULL);
	memset(long_uri, 0, sizeof(long_uri));
	memcpy(long_uri, "?ns=", 4);
	memset(long_uri + 4, 'a', 500);
	check_query(long_uri, "ns", 256, NULL);
}

/* Parses s from a heap copy of its exact size, so overreads show. */
static int
parse_time(const char *s, time_t *t)
{
	char	*copy = strdup(s);
	int	 rc;

	if (copy == NULL)
		abort();
	rc = time_parse_rfc3339(copy, t);
	free(copy);
	return rc;
}

static void
check_time(const char *s, time_t want)
{
	time_t	t = -1;
	int	rc = parse_time(s, &t);

	ok(rc == 0 && t == want, "time \"%s\" -> %lld", s, (long long)want);
	if (rc != 0 || t != want)
		diag("got rc %d time %lld", rc, (long long)t);
}

static void
check_time_bad(const char *s)
{
	time_t	t = 12345;
	int	rc = parse_time(s, &t);

	ok(rc == -1 && t == 12345, "time \"%s\" refused", s);
	if (rc != -1)
		diag("got rc %d time %lld", rc, (long long)t);
}

static void
test_time(void)
{
	check_time("2020-01-01T00:00:00Z", T2020);
	check_time("2020-01-01T00:00:00z", T2020);
	check_time("1970-01-01T00:00:00Z", 0);
	check_time("2020-01-01T00:00:00.5Z", T2020);
	check_time("2020-01-01T00:00:00.123456789Z", T2020);
	check_time("2020-01-01T02:00:00+02:00", T2020);
	check_time("2019-12-31T22:30:00-01:30", T2020);
	check_time("2020-01-01T00:00:00+00:00", T2020);
	check_time("2020-01-01T00:00:00-00:00", T2020);
	check_time("2020-01-01T05:30:00.25+05:30", T2020);
	check_time("2020-02-29T12:34:56Z", T2020 + 59 * 86400 +
	    12 * 3600 + 34 * 60 + 56);
	check_time("2038-01-19T03:14:08Z", (time_t)2147483648LL);

	check_time_bad("");
	check_time_bad("yesterday");
	check_time_bad("2020-01-01");
	check_time_bad("2020-01-01T00:00:00");
	check_time_bad("2020-01-01 00:00:00Z");
	check_time_bad("2020-01-01T00:00Z");
	check_time_bad("2020-13-01T00:00:00Z");
	check_time_bad("2020-01-32T00:00:00Z");
	check_time_bad("2020-01-01T25:00:00Z");
	check_time_bad("2020-01-01T00:00:00Zjunk");
	check_time_bad("2020-01-01T00:00:00ZZ");
	check_time_bad("2020-01-01T00:00:00+0200");
	check_time_bad("2020-01-01T00:00:00+02");
	check_time_bad("2020-01-01T00:00:00+02:00junk");
	check_time_bad("2020-01-01T00:00:00 Z");
	check_time_bad("2020-01-01T00:00:00+2:00");
	check_time_bad("2020-01-01T00:00:00+02:0");
	check_time_bad("2020-01-01T00:00:00+-1:00");
}

static int
rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	return remove(path);
}

static int
is_dir(const char *path)
{
	struct stat	st;

	return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

static void
test_mkdir_p(void)
{
	char		 tmpl[512], path[1024], cwd[1024];
	const char	*tmp = getenv("TMPDIR");
	int		 fd;

	if (tmp == NULL || *tmp == '\0')
		tmp = "/tmp";
	snprintf(tmpl, sizeof(tmpl), "%s/t_util.XXXXXX", tmp);
	if (mkdtemp(tmpl) == NULL || getcwd(cwd, sizeof(cwd)) == NULL) {
		perror(tmpl);
		exit(1);
	}

	snprintf(path, sizeof(path), "%s/a/b/c", tmpl);
	ok(mkdir_p(path, 0755) == 0 && is_dir(path), "mkdir_p: nested");
	ok(mkdir_p(path, 0755) == 0 && is_dir(path),
	    "mkdir_p: again, it exists");
	snprintf(path, sizeof(path), "%s/a/b", tmpl);
	ok(mkdir_p(path, 0755) == 0, "mkdir_p: a parent that exists");
	snprintf(path, sizeof(path), "%s/d/e/", tmpl);
	ok(mkdir_p(path, 0755) == 0 && is_dir(path),
	    "mkdir_p: trailing slash");
	snprintf(path, sizeof(path), "%s/f//g", tmpl);
	ok(mkdir_p(path, 0755) == 0 && is_dir(path), "mkdir_p: double slash");
	ok(mkdir_p(tmpl, 0755) == 0, "mkdir_p: the temporary directory");

	snprintf(path, sizeof(path), "%s/file", tmpl);
	if ((fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0644)) == -1) {
		perror(path);
		exit(1);
	}
	close(fd);
	snprintf(path, sizeof(path), "%s/file/x", tmpl);
	ok(mkdir_p(path, 0755) == -1 && errno == ENOTDIR,
	    "mkdir_p: under a regular file fails");
	snprintf(path, sizeof(path), "%s/file", tmpl);
	ok(mkdir_p(path, 0755) == -1, "mkdir_p: a regular file fails");

	if (chdir(tmpl) == -1) {
		perror(tmpl);
		exit(1);
	}
	ok(mkdir_p("r/s", 0755) == 0 && is_dir("r/s"), "mkdir_p: relative");
	ok(mkdir_p("", 0755) == -1, "mkdir_p: empty path fails");
	if (chdir(cwd) == -1) {
		perror(cwd);
		exit(1);
	}

	if (nftw(tmpl, rm_entry, 16, FTW_DEPTH | FTW_PHYS) == -1)
		diag("could not remove %s", tmpl);
}

/* Writes len bytes of c to path, a new file. */
static void
write_file(const char *path, int c, size_t len)
{
	char	*buf = xcalloc(1, len + 1);
	int	 fd;

	memset(buf, c, len);
	if ((fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600)) == -1 ||
	    fd_write_all(fd, buf, len) == -1) {
		perror(path);
		exit(1);
	}
	close(fd);
	free(buf);
}

static void
test_file_read(void)
{
	struct stat	 st;
	char		 tmpl[512], path[1024], err[256], *out;
	const char	*tmp = getenv("TMPDIR");
	size_t		 len, i;
	int		 p[2], good;

	if (tmp == NULL || *tmp == '\0')
		tmp = "/tmp";
	snprintf(tmpl, sizeof(tmpl), "%s/t_util.XXXXXX", tmp);
	if (mkdtemp(tmpl) == NULL) {
		perror(tmpl);
		exit(1);
	}

	snprintf(path, sizeof(path), "%s/small", tmpl);
	write_file(path, 'a', 100);
	memset(&st, 0, sizeof(st));
	out = NULL;
	ok(file_read(path, 100, FILE_READ_REGULAR, &st, &out, &len, err,
	    sizeof(err)) == 0 && len == 100 && out[100] == '\0' &&
	    strspn(out, "a") == 100 && st.st_size == 100,
	    "file_read: a file of exactly max bytes, NUL-terminated");
	free(out);
	ok(file_read(path, 99, FILE_READ_REGULAR, NULL, &out, &len, err,
	    sizeof(err)) == -1, "file_read: one byte over max fails");
	is_str(err, "larger than 99 bytes", "file_read: and says so");

	snprintf(path, sizeof(path), "%s/empty", tmpl);
	write_file(path, 'a', 0);
	out = NULL;
	ok(file_read(path, 10, FILE_READ_REGULAR, NULL, &out, &len, err,
	    sizeof(err)) == 0 && len == 0 && out != NULL && out[0] == '\0',
	    "file_read: an empty file");
	free(out);

	snprintf(path, sizeof(path), "%s/missing", tmpl);
	ok(file_read(path, 10, 0, NULL, &out, &len, err, sizeof(err)) == -1,
	    "file_read: a missing file fails");
	is_str(err, strerror(ENOENT), "file_read: with the reason");

	ok(file_read(tmpl, 10, FILE_READ_REGULAR, NULL, &out, &len, err,
	    sizeof(err)) == -1, "file_read: a directory is refused");
	is_str(err, "not a regular file", "file_read: as not regular");

	/* A pipe has no size: it is read to its end, past the first
	 * buffer, and still capped. */
	for (i = 0; i < 2; i++) {
		if (pipe(p) == -1) {
			perror("pipe");
			exit(1);
		}
		out = xcalloc(1, 10000);
		memset(out, 'b', 10000);
		if (fd_write_all(p[1], out, 10000) == -1) {
			perror("write");
			exit(1);
		}
		free(out);
		close(p[1]);
		snprintf(path, sizeof(path), "/dev/fd/%d", p[0]);
		out = NULL;
		if (i == 0) {
			good = file_read(path, 20000, 0, NULL, &out, &len,
			    err, sizeof(err)) == 0 && len == 10000 &&
			    strspn(out, "b") == 10000 && out[len] == '\0';
			ok(good, "file_read: a pipe, read to its end");
			free(out);
		} else {
			ok(file_read(path, 5000, 0, NULL, &out, &len, err,
			    sizeof(err)) == -1 && strcmp(err,
			    "larger than 5000 bytes") == 0,
			    "file_read: a pipe over max fails");
		}
		close(p[0]);
	}

	if (nftw(tmpl, rm_entry, 16, FTW_DEPTH | FTW_PHYS) == -1)
		diag("could not remove %s", tmpl);
}

int
main(void)
{
	test_url_parse();
	test_url_resolve();
	test_base64();
	test_query();
	test_time();
	test_mkdir_p();
	test_file_read();
	return tap_done();
}
