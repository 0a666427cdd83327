/*
 * Logging in the relayd shape: warn appends strerror(errno), warnx does
 * not, debug only at the debug level, fatal exits.  Everything goes to
 * stderr with a timestamp; access lines are printed at info level.
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "regcache.h"

static enum log_level	log_level = LOG_LEVEL_INFO;
static int		log_timestamps = 1;

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
log_access(const char *fmt, ...)
{
	va_list	 ap;

	va_start(ap, fmt);
	log_vline(LOG_LEVEL_INFO, "access:", NULL, fmt, ap);
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
