/*
 * Unit tests of src/log.c's access log: the combined and JSON renderings
 * (escaping, missing fields), the format names, writing to a file and
 * reopening it after it was moved, and stderr's level rule.
 */
#include "config.h"

#include <sys/stat.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "regcache.h"
#include "tap.h"

/* The library refers to these; main.c defines them in the daemon. */
struct event_base	*ev_base;
struct evdns_base	*dns_base;
struct config		*conf;

static char	 tmpdir[512];

/* 2026-11-29T19:05:29.012Z */
static const struct timespec	 t_fixed = { 1795979129, 12000000 };

static void
entry_full(struct access_entry *e)
{
	memset(e, 0, sizeof(*e));
	e->peer = "127.0.0.1";
	e->user = "alice";
	e->method = "GET";
	e->uri = "/v2/library/alpine/manifests/3.20?ns=docker.io";
	e->protocol = "HTTP/1.1";
	e->status = 200;
	e->bytes = 1234;
	e->duration_ms = 12;
	e->ttfb_ms = 3;
	e->upstream = "hub";
	e->cache = "HIT";
	e->referer = NULL;
	e->user_agent = "skopeo/1.9";
}

static void
test_combined(void)
{
	struct access_entry	 e;
	char			*s;

	entry_full(&e);
	s = log_access_render(&e, ACCESS_FORMAT_COMBINED, &t_fixed);
	is_str(s, "127.0.0.1 - alice [29/Nov/2026:19:05:29 +0000] "
	    "\"GET /v2/library/alpine/manifests/3.20?ns=docker.io HTTP/1.1\" "
	    "200 1234 \"-\" \"skopeo/1.9\" rt=0.012 ttfb=0.003 up=hub "
	    "cache=HIT\n", "combined: every field");
	free(s);

	memset(&e, 0, sizeof(e));
	e.peer = "::1";
	e.method = "HEAD";
	e.uri = "/v2/";
	e.status = 401;
	e.duration_ms = 61234;
	e.ttfb_ms = -1;
	e.why = "client gone";
	s = log_access_render(&e, ACCESS_FORMAT_COMBINED, &t_fixed);
	is_str(s, "::1 - - [29/Nov/2026:19:05:29 +0000] \"HEAD /v2/ -\" 401 0 "
	    "\"-\" \"-\" rt=61.234 ttfb=- up=- cache=- why=\"client gone\"\n",
	    "combined: missing fields are -, why at the end");
	free(s);

	entry_full(&e);
	e.user = "bad user\"";
	e.uri = "/v2/x\x01y\"z\\";
	e.user_agent = "a \"quoted\"\tagent\xff";
	e.referer = "http://r/";
	s = log_access_render(&e, ACCESS_FORMAT_COMBINED, &t_fixed);
	is_str(s, "127.0.0.1 - bad%20user%22 [29/Nov/2026:19:05:29 +0000] "
	    "\"GET /v2/x%01y%22z%5C HTTP/1.1\" 200 1234 \"http://r/\" "
	    "\"a %22quoted%22%09agent%FF\" rt=0.012 ttfb=0.003 up=hub "
	    "cache=HIT\n",
	    "combined: quotes, backslashes, control bytes and spaces escaped");
	free(s);
}

static void
test_json(void)
{
	struct access_entry	 e;
	json_t			*j;
	char			*s;

	entry_full(&e);
	e.user_agent = "a \"b\"\n";
	s = log_access_render(&e, ACCESS_FORMAT_JSON, &t_fixed);
	ok(s != NULL && strchr(s, '\n') == s + strlen(s) - 1,
	    "json: one line, ending with its newline");
	j = json_loads(s, 0, NULL);
	ok(j != NULL, "json: parses");
	is_str(json_string_value(json_object_get(j, "time")),
	    "2026-11-29T19:05:29.012Z", "json: time in RFC 3339, UTC, ms");
	is_str(json_string_value(json_object_get(j, "peer")), "127.0.0.1",
	    "json: peer");
	is_str(json_string_value(json_object_get(j, "user")), "alice",
	    "json: user");
	is_str(json_string_value(json_object_get(j, "uri")),
	    "/v2/library/alpine/manifests/3.20?ns=docker.io", "json: uri");
	ok(json_integer_value(json_object_get(j, "status")) == 200 &&
	    json_integer_value(json_object_get(j, "bytes")) == 1234 &&
	    json_integer_value(json_object_get(j, "duration_ms")) == 12 &&
	    json_integer_value(json_object_get(j, "ttfb_ms")) == 3,
	    "json: numbers are numbers");
	is_str(json_string_value(json_object_get(j, "upstream")), "hub",
	    "json: upstream");
	is_str(json_string_value(json_object_get(j, "cache")), "HIT",
	    "json: cache");
	is_str(json_string_value(json_object_get(j, "user_agent")),
	    "a %22b%22%0A", "json: strings escaped as in the combined format");
	ok(json_is_null(json_object_get(j, "referer")) &&
	    json_is_null(json_object_get(j, "why")),
	    "json: absent strings are null");
	ok(json_object_size(j) == 15, "json: 15 keys");
	json_decref(j);
	free(s);

	memset(&e, 0, sizeof(e));
	e.ttfb_ms = -1;
	s = log_access_render(&e, ACCESS_FORMAT_JSON, &t_fixed);
	j = json_loads(s, 0, NULL);
	ok(j != NULL && json_is_null(json_object_get(j, "ttfb_ms")) &&
	    json_is_null(json_object_get(j, "user")) &&
	    json_is_null(json_object_get(j, "upstream")),
	    "json: unknown ttfb and missing fields are null");
	json_decref(j);
	free(s);
}

static void
test_format_names(void)
{
	enum access_format	f = ACCESS_FORMAT_JSON;

	ok(log_access_format_parse("combined", &f) == 0 &&
	    f == ACCESS_FORMAT_COMBINED, "format: combined");
	ok(log_access_format_parse("json", &f) == 0 && f == ACCESS_FORMAT_JSON,
	    "format: json");
	ok(log_access_format_parse("JSON", &f) == -1 &&
	    log_access_format_parse("common", &f) == -1,
	    "format: anything else is refused");
}

/* Reads a whole small file into buf; returns its length or -1. */
static ssize_t
slurp(const char *path, char *buf, size_t len)
{
	ssize_t	 n;
	int	 fd;

	if ((fd = open(path, O_RDONLY)) == -1)
		return -1;
	n = read(fd, buf, len - 1);
	close(fd);
	if (n >= 0)
		buf[n] = '\0';
	return n;
}

static int
count_lines(const char *s)
{
	int	n = 0;

	for (; *s != '\0'; s++)
		n += *s == '\n';
	return n;
}

/* The start of the last line of s, which ends with a newline. */
static const char *
last_line(const char *s)
{
	size_t	n = strlen(s);

	if (n > 0)
		n--;
	while (n > 0 && s[n - 1] != '\n')
		n--;
	return s + n;
}

static void
test_file_and_reopen(void)
{
	struct access_entry	 e;
	struct stat		 st;
	char			 path[600], moved[700], buf[8192], err[512];

	snprintf(path, sizeof(path), "%s/t_log.%ld.access", tmpdir,
	    (long)getpid());
	snprintf(moved, sizeof(moved), "%s.1", path);
	unlink(path);
	unlink(moved);
	entry_full(&e);

	ok(log_access_open("/nonexistent-dir/x/access.log",
	    ACCESS_FORMAT_COMBINED, err, sizeof(err)) == -1 &&
	    strstr(err, "/nonexistent-dir/x/access.log") != NULL,
	    "open: an unusable path is refused with its name (%s)", err);
	err[0] = '\0';
	ok(log_access_open(path, ACCESS_FORMAT_COMBINED, err,
	    sizeof(err)) == 0, "open: a new file%s", err);
	ok(stat(path, &st) == 0 && (st.st_mode & 0007) == 0,
	    "open: others cannot read it");
	log_access_entry(&e);
	log_access_entry(&e);
	ok(slurp(path, buf, sizeof(buf)) > 0 && count_lines(buf) == 2 &&
	    strncmp(buf, "127.0.0.1 - alice [", 19) == 0,
	    "file: two combined lines");

	ok(rename(path, moved) == 0, "the file is moved away");
	log_access_entry(&e);
	ok(slurp(moved, buf, sizeof(buf)) > 0 && count_lines(buf) == 3,
	    "before the reopen, lines still go to the moved file");
	log_access_reopen();
	log_access_entry(&e);
	ok(slurp(path, buf, sizeof(buf)) > 0 && count_lines(buf) == 1,
	    "after the reopen, a new file with the new line");
	ok(slurp(moved, buf, sizeof(buf)) > 0 && count_lines(buf) == 3,
	    "… and the old file keeps its three");

	ok(log_access_open(path, ACCESS_FORMAT_JSON, err, sizeof(err)) == 0,
	    "open again, as JSON");
	log_access_entry(&e);
	ok(slurp(path, buf, sizeof(buf)) > 0 && count_lines(buf) == 2 &&
	    strstr(buf, "\n{\"time\":") != NULL, "file: appended, not truncated");
	ok(log_access_open("/nonexistent-dir/x/access.log",
	    ACCESS_FORMAT_COMBINED, err, sizeof(err)) == -1,
	    "a failed open ...");
	log_access_entry(&e);
	ok(slurp(path, buf, sizeof(buf)) > 0 && count_lines(buf) == 3 &&
	    strncmp(last_line(buf), "{\"time\":", 8) == 0,
	    "... changes nothing: the same file, the same format");
	log_access_close();
	unlink(path);
	unlink(moved);
}

/* Without a file, lines go to stderr, and only at info level and up. */
static void
test_stderr_level(void)
{
	struct access_entry	 e;
	char			 path[600], buf[8192], err[512];
	int			 fd, saved;

	snprintf(path, sizeof(path), "%s/t_log.%ld.stderr", tmpdir,
	    (long)getpid());
	if ((fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600)) == -1 ||
	    (saved = dup(STDERR_FILENO)) == -1) {
		perror(path);
		exit(1);
	}
	fflush(stderr);
	dup2(fd, STDERR_FILENO);
	close(fd);
	entry_full(&e);
	ok(log_access_open(NULL, ACCESS_FORMAT_COMBINED, err,
	    sizeof(err)) == 0, "open: stderr");
	log_init(LOG_LEVEL_WARN, 0);
	log_access_entry(&e);
	log_init(LOG_LEVEL_INFO, 0);
	log_access_entry(&e);
	fflush(stderr);
	dup2(saved, STDERR_FILENO);
	close(saved);
	ok(slurp(path, buf, sizeof(buf)) > 0 && count_lines(buf) == 1 &&
	    strncmp(buf, "127.0.0.1 - alice [", 19) == 0,
	    "stderr: one line, written at info level, none at warn");
	unlink(path);
}

int
main(void)
{
	const char	*t = getenv("TMPDIR");

	snprintf(tmpdir, sizeof(tmpdir), "%s",
	    t != NULL && *t != '\0' ? t : "/tmp");
	test_combined();
	test_json();
	test_format_names();
	test_file_and_reopen();
	test_stderr_level();
	return tap_done();
}
