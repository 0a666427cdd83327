/*
 * Logging in the relayd shape: warn appends strerror(errno), warnx does
 * not, debug only at the debug level, fatal exits.  Everything goes to
 * stderr with a timestamp.
 *
 * The access log is separate: one line per client request, in the Apache
 * combined format or as JSON, to its own file or, without one, to stderr
 * (there at info level and above only, as before).  SIGUSR1 reopens the
 * file after logrotate moved it.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "regcache.h"

static enum log_level	log_level = LOG_LEVEL_INFO;
static int		log_timestamps = 1;

/* The access log: a file of ours, or stderr when la_path is NULL. */
static int			la_fd = STDERR_FILENO;
static char			*la_path;
static enum access_format	la_format = ACCESS_FORMAT_COMBINED;
static int			la_failing;	/* a write failed: said so */

static const char *const la_format_names[] = { "combined", "json" };

static const char *const log_names[] = { "error", "warn", "info", "debug" };

/* Set the level and whether lines carry a timestamp. */
void
log_init(enum log_level level, int timestamps)
{
	log_level = level;
	log_timestamps = timestamps;
}

void
log_setlevel(enum log_level level)
{
	log_level = level;
}

enum log_level
log_getlevel(void)
{
	return log_level;
}

/* Map a level name from a config file or the environment. */
int
log_level_parse(const char *s, enum log_level *out)
{
	size_t	i;

	for (i = 0; i < sizeof(log_names) / sizeof(log_names[0]); i++) {
		if (strcasecmp(s, log_names[i]) == 0) {
			*out = (enum log_level)i;
			return 0;
		}
	}
	return -1;
}

/* Write one line; the one place that formats a log line. */
static void
log_vline(enum log_level level, const char *tag, const char *err,
    const char *fmt, va_list ap)
{
	char		 msg[2048], ts[64];
	struct timespec	 now;
	struct tm	 tm;

	if (level > log_level)
		return;
	vsnprintf(msg, sizeof(msg), fmt, ap);
	ts[0] = '\0';
	if (log_timestamps) {
		clock_gettime(CLOCK_REALTIME, &now);
		gmtime_r(&now.tv_sec, &tm);
		snprintf(ts, sizeof(ts), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ ",
		    tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
		    tm.tm_min, tm.tm_sec, now.tv_nsec / 1000000);
	}
	if (err != NULL)
		fprintf(stderr, "%s%s %s: %s\n", ts, tag, msg, err);
	else
		fprintf(stderr, "%s%s %s\n", ts, tag, msg);
}

void
log_warn(const char *fmt, ...)
{
	va_list	 ap;
	int	 saved = errno;

	va_start(ap, fmt);
	log_vline(LOG_LEVEL_WARN, "warn:", strerror(saved), fmt, ap);
	va_end(ap);
	errno = saved;
}

void
log_warnx(const char *fmt, ...)
{
	va_list	 ap;

	va_start(ap, fmt);
	log_vline(LOG_LEVEL_WARN, "warn:", NULL, fmt, ap);
	va_end(ap);
}

void
log_info(const char *fmt, ...)
{
	va_list	 ap;

	va_start(ap, fmt);
	log_vline(LOG_LEVEL_INFO, "info:", NULL, fmt, ap);
	va_end(ap);
}

void
log_debug(const char *fmt, ...)
{
	va_list	 ap;

	va_start(ap, fmt);
	log_vline(LOG_LEVEL_DEBUG, "debug:", NULL, fmt, ap);
	va_end(ap);
}

void
fatal(const char *fmt, ...)
{
	va_list	 ap;
	int	 saved = errno;

	va_start(ap, fmt);
	log_vline(LOG_LEVEL_ERROR, "fatal:", strerror(saved), fmt, ap);
	va_end(ap);
	exit(1);
}

void
fatalx(const char *fmt, ...)
{
	va_list	 ap;

	va_start(ap, fmt);
	log_vline(LOG_LEVEL_ERROR, "fatal:", NULL, fmt, ap);
	va_end(ap);
	exit(1);
}

/*
 * The access log.
 */

/* Map "combined" or "json" from the configuration. */
int
log_access_format_parse(const char *s, enum access_format *out)
{
	size_t	i;

	for (i = 0; i < sizeof(la_format_names) / sizeof(la_format_names[0]);
	    i++) {
		if (strcmp(s, la_format_names[i]) == 0) {
			*out = (enum access_format)i;
			return 0;
		}
	}
	return -1;
}

/* Open path for appending, as logrotate expects a log file to be. */
static int
la_open_file(const char *path, char *err, size_t errlen)
{
	int	 fd;

	fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOCTTY,
	    0640);
	if (fd == -1)
		snprintf(err, errlen, "access log %s: %s", path,
		    strerror(errno));
	return fd;
}

/*
 * Send access lines to path (NULL: stderr) in format.  The new file is
 * opened before the old one is let go, so a configuration whose file
 * cannot be opened changes nothing (-1 and the reason in err).
 */
int
log_access_open(const char *path, enum access_format format, char *err,
    size_t errlen)
{
	int	 fd = STDERR_FILENO;

	if (path != NULL && (fd = la_open_file(path, err, errlen)) == -1)
		return -1;
	if (la_fd != STDERR_FILENO)
		close(la_fd);
	free(la_path);
	la_fd = fd;
	la_path = path != NULL ? xstrdup(path) : NULL;
	la_format = format;
	la_failing = 0;
	return 0;
}

/*
 * SIGUSR1, on the event loop: open the file by its name again, so lines
 * go to the new file once the old one was moved away.  If that fails the
 * lines keep going where they went.
 */
void
log_access_reopen(void)
{
	char	 err[512];
	int	 fd;

	if (la_path == NULL) {
		log_debug("%s: the access log is stderr: nothing to reopen",
		    __func__);
		return;
	}
	if ((fd = la_open_file(la_path, err, sizeof(err))) == -1) {
		log_warnx("%s; still writing to the old file", err);
		return;
	}
	close(la_fd);
	la_fd = fd;
	la_failing = 0;
	log_info("access log %s reopened", la_path);
}

/* At exit. */
void
log_access_close(void)
{
	if (la_fd != STDERR_FILENO)
		close(la_fd);
	la_fd = STDERR_FILENO;
	free(la_path);
	la_path = NULL;
}

/*
 * A field from the client for a combined line: escaped as log_escape()
 * does, and "-" when there is none.  Spaces are escaped too where the
 * field is not between quotes.
 */
static char *
la_field(const char *s, int quoted)
{
	char	*e, *out, *w;
	size_t	 n = 0;
	const char *p;

	if (s == NULL || *s == '\0')
		return xstrdup("-");
	e = log_escape(s);
	if (quoted)
		return e;
	for (p = e; *p != '\0'; p++)
		n += *p == ' ' ? 3 : 1;
	out = w = xcalloc(1, n + 1);
	for (p = e; *p != '\0'; p++) {
		if (*p == ' ') {
			memcpy(w, "%20", 3);
			w += 3;
		} else
			*w++ = *p;
	}
	free(e);
	return out;
}

/* Seconds with milliseconds, as nginx's $request_time. */
static void
la_seconds(char *buf, size_t len, int64_t ms)
{
	if (ms < 0)
		snprintf(buf, len, "-");
	else
		snprintf(buf, len, "%lld.%03lld", (long long)(ms / 1000),
		    (long long)(ms % 1000));
}

/*
 * The combined format, as Apache's and nginx's, with what a cache adds
 * as key=value pairs at the end, where log parsers ignore them:
 *   PEER - USER [29/Nov/2026:19:05:29 +0000] "GET /v2/... HTTP/1.1" 200
 *   1234 "REFERER" "USER-AGENT" rt=0.012 ttfb=0.003 up=NAME cache=HIT
 *   [why="..."]
 * Times are in UTC.
 */
static char *
la_combined(const struct access_entry *e, const struct timespec *now)
{
	static const char *const mon[] = { "Jan", "Feb", "Mar", "Apr", "May",
	    "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec" };
	struct tm	 tm;
	char		 rt[32], ttfb[32], *peer, *user, *uri, *ref, *ua;
	char		*up, *why = NULL, *line;

	gmtime_r(&now->tv_sec, &tm);
	la_seconds(rt, sizeof(rt), (int64_t)e->duration_ms);
	la_seconds(ttfb, sizeof(ttfb), e->ttfb_ms);
	peer = la_field(e->peer, 0);
	user = la_field(e->user, 0);
	uri = la_field(e->uri, 0);
	ref = la_field(e->referer, 1);
	ua = la_field(e->user_agent, 1);
	up = la_field(e->upstream, 0);
	if (e->why != NULL)
		why = log_escape(e->why);
	xasprintf(&line, "%s - %s [%02d/%s/%04d:%02d:%02d:%02d +0000] "
	    "\"%s %s %s\" %d %llu \"%s\" \"%s\" rt=%s ttfb=%s up=%s "
	    "cache=%s%s%s%s\n", peer, user, tm.tm_mday, mon[tm.tm_mon],
	    tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec,
	    e->method != NULL ? e->method : "-", uri,
	    e->protocol != NULL ? e->protocol : "-", e->status,
	    (unsigned long long)e->bytes, ref, ua, rt, ttfb, up,
	    e->cache != NULL ? e->cache : "-",
	    why != NULL ? " why=\"" : "", why != NULL ? why : "",
	    why != NULL ? "\"" : "");
	free(peer);
	free(user);
	free(uri);
	free(ref);
	free(ua);
	free(up);
	free(why);
	return line;
}

/* Set a string member, escaped as in the combined format; null if none. */
static void
la_json_str(json_t *o, const char *key, const char *s)
{
	char	*e;

	if (s == NULL) {
		json_object_set_new(o, key, json_null());
		return;
	}
	e = log_escape(s);
	json_object_set_new(o, key, json_string(e));
	free(e);
}

/*
 * One JSON object per line, every key always there (null when unknown),
 * strings escaped as in the combined format so each line is plain ASCII.
 */
static char *
la_json(const struct access_entry *e, const struct timespec *now)
{
	struct tm	 tm;
	char		 ts[64], *s, *line;
	json_t		*o;

	gmtime_r(&now->tv_sec, &tm);
	snprintf(ts, sizeof(ts), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ",
	    tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
	    tm.tm_min, tm.tm_sec, now->tv_nsec / 1000000);
	if ((o = json_object()) == NULL)
		fatalx("%s: json", __func__);
	json_object_set_new(o, "time", json_string(ts));
	la_json_str(o, "peer", e->peer);
	la_json_str(o, "user", e->user);
	la_json_str(o, "method", e->method);
	la_json_str(o, "uri", e->uri);
	la_json_str(o, "protocol", e->protocol);
	json_object_set_new(o, "status", json_integer(e->status));
	json_object_set_new(o, "bytes", json_integer((json_int_t)e->bytes));
	json_object_set_new(o, "duration_ms",
	    json_integer((json_int_t)e->duration_ms));
	json_object_set_new(o, "ttfb_ms", e->ttfb_ms >= 0 ?
	    json_integer((json_int_t)e->ttfb_ms) : json_null());
	la_json_str(o, "upstream", e->upstream);
	la_json_str(o, "cache", e->cache);
	la_json_str(o, "referer", e->referer);
	la_json_str(o, "user_agent", e->user_agent);
	la_json_str(o, "why", e->why);
	s = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
	json_decref(o);
	if (s == NULL)
		fatalx("%s: json_dumps", __func__);
	xasprintf(&line, "%s\n", s);
	free(s);
	return line;
}

/* The line for e at time now, with its newline. */
char *
log_access_render(const struct access_entry *e, enum access_format format,
    const struct timespec *now)
{
	if (format == ACCESS_FORMAT_JSON)
		return la_json(e, now);
	return la_combined(e, now);
}

/*
 * Write one access line, in one write(2) so that lines never mix with
 * each other or with the log on stderr.  A failing file is reported
 * once, not once per request.
 */
void
log_access_entry(const struct access_entry *e)
{
	struct timespec	 now;
	char		*line;

	if (la_path == NULL && log_level < LOG_LEVEL_INFO)
		return;
	clock_gettime(CLOCK_REALTIME, &now);
	line = log_access_render(e, la_format, &now);
	if (fd_write_all(la_fd, line, strlen(line)) == -1) {
		if (!la_failing)
			log_warn("access log %s", la_path != NULL ? la_path :
			    "(stderr)");
		la_failing = 1;
	} else
		la_failing = 0;
	free(line);
}
