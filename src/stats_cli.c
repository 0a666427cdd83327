/*
 * `regcache stats [--json] [URL]`: a readable summary of a running
 * instance, from its admin listener's /stats.  A command for a terminal,
 * so the HTTP client is a small blocking one: HTTP/1.0 (never chunked),
 * one request, read to the end, with a timeout on every step.
 */
#include "config.h"

#include <sys/socket.h>
#include <sys/time.h>
#include <errno.h>
#include <getopt.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "regcache.h"

#define STATS_CLI_DEFAULT_URL	"http://" DEFAULT_ADMIN_LISTEN
#define STATS_CLI_TIMEOUT_S	10
#define STATS_CLI_MAX_BYTES	(16 * 1024 * 1024)

static void
stats_cli_usage(FILE *f)
{
	fprintf(f,
"usage: regcache stats [--json] [URL]\n"
"\n"
"  Print a summary of a running regcache: uptime, requests, hit ratio,\n"
"  bytes served from the cache and from upstreams, fills, and per\n"
"  upstream its requests, errors, 429s, rate limit and failed\n"
"  credential renewals.  URL is the admin listener (admin.listen),\n"
"  default " STATS_CLI_DEFAULT_URL "; /stats is added to it.\n"
"  Exit 0, or 1 when the instance cannot be asked.\n"
"\n"
"  --json         print the /stats document as it came\n"
"  -h             this help\n");
}

/* Connect to host:port, trying each address, with timeouts set. */
static int
stats_cli_connect(const char *host, const char *port, char *err, size_t len)
{
	struct addrinfo	 hints, *res, *ai;
	struct timeval	 tv = { STATS_CLI_TIMEOUT_S, 0 };
	int		 fd = -1, rc, saved = 0;

	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	if ((rc = getaddrinfo(host, port, &hints, &res)) != 0) {
		snprintf(err, len, "%s: %s", host, gai_strerror(rc));
		return -1;
	}
	for (ai = res; ai != NULL; ai = ai->ai_next) {
		if ((fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC,
		    ai->ai_protocol)) == -1) {
			saved = errno;
			continue;
		}
		/* On Linux the send timeout bounds connect() too. */
		setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
		setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
		if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0)
			break;
		saved = errno;
		close(fd);
		fd = -1;
	}
	freeaddrinfo(res);
	if (fd == -1)
		snprintf(err, len, "connect to %s port %s: %s", host, port,
		    strerror(saved));
	return fd;
}

/*
 * GET path from host:port; the body of a 200 goes to *body (NUL ended).
 * -1 with the reason in err otherwise.
 */
static int
stats_cli_get(const char *host, const char *port, const char *path,
    char **body, char *err, size_t len)
{
	char		*req = NULL, *buf = NULL, *p;
	size_t		 n = 0, cap = 0;
	ssize_t		 r;
	uint64_t	 deadline = mono_ms() + STATS_CLI_TIMEOUT_S * 1000;
	int		 fd, status;

	*body = NULL;
	if ((fd = stats_cli_connect(host, port, err, len)) == -1)
		return -1;
	xasprintf(&req, "GET %s HTTP/1.0\r\nHost: %s%s%s:%s\r\n"
	    "Accept: application/json\r\nUser-Agent: regcache/%s\r\n\r\n",
	    path, strchr(host, ':') != NULL ? "[" : "", host,
	    strchr(host, ':') != NULL ? "]" : "", port, PACKAGE_VERSION);
	if (fd_write_all(fd, req, strlen(req)) == -1) {
		snprintf(err, len, "send: %s", strerror(errno));
		goto fail;
	}
	for (;;) {
		if (cap - n < 65536) {
			cap = cap == 0 ? 65536 : cap * 2;
			if (cap > STATS_CLI_MAX_BYTES + 1) {
				snprintf(err, len, "answer larger than %d "
				    "bytes", STATS_CLI_MAX_BYTES);
				goto fail;
			}
			if ((p = realloc(buf, cap)) == NULL)
				fatalx("%s: out of memory", __func__);
			buf = p;
		}
		/* Each read is bounded by SO_RCVTIMEO, the whole by this: a
		 * peer dripping bytes does not hold us. */
		if (mono_ms() > deadline) {
			snprintf(err, len, "read: no whole answer within %d s",
			    STATS_CLI_TIMEOUT_S);
			goto fail;
		}
		r = read(fd, buf + n, cap - n - 1);
		if (r == -1 && errno == EINTR)
			continue;
		if (r == -1) {
			snprintf(err, len, "read: %s", errno == EAGAIN ?
			    "timed out" : strerror(errno));
			goto fail;
		}
		if (r == 0)
			break;
		n += (size_t)r;
	}
	buf[n] = '\0';
	if (sscanf(buf, "HTTP/%*d.%*d %d", &status) != 1 ||
	    (p = strstr(buf, "\r\n\r\n")) == NULL) {
		snprintf(err, len, "not an HTTP answer");
		goto fail;
	}
	if (status != 200) {
		snprintf(err, len, "%s answered HTTP %d", path, status);
		goto fail;
	}
	*body = xstrdup(p + 4);
	free(buf);
	free(req);
	close(fd);
	return 0;
 fail:
	free(buf);
	free(req);
	close(fd);
	return -1;
}

/* A byte count the way people read them: "512 B", "1.5 MiB". */
static const char *
human_bytes(uint64_t v, char *buf, size_t len)
{
	static const char *const units[] = { "KiB", "MiB", "GiB", "TiB",
	    "PiB" };
	double		 d = (double)v;
	size_t		 i;

	if (v < 1024) {
		snprintf(buf, len, "%llu B", (unsigned long long)v);
		return buf;
	}
	for (i = 0, d /= 1024; d >= 1024 && i < 4; i++)
		d /= 1024;
	snprintf(buf, len, "%.1f %s", d, units[i]);
	return buf;
}

static const char *
human_duration(double s, char *buf, size_t len)
{
	unsigned long long	t = (unsigned long long)s;

	if (t >= 86400)
		snprintf(buf, len, "%llud %lluh %02llum", t / 86400,
		    t % 86400 / 3600, t % 3600 / 60);
	else if (t >= 3600)
		snprintf(buf, len, "%lluh %02llum %02llus", t / 3600,
		    t % 3600 / 60, t % 60);
	else if (t >= 60)
		snprintf(buf, len, "%llum %02llus", t / 60, t % 60);
	else
		snprintf(buf, len, "%.1fs", s);
	return buf;
}

/* An integer member of o, 0 when absent (an older or newer daemon). */
static uint64_t
num(json_t *o, const char *key)
{
	json_t	*v = json_object_get(o, key);

	return json_is_integer(v) && json_integer_value(v) > 0 ?
	    (uint64_t)json_integer_value(v) : 0;
}

/* "87.5%", or "-" with nothing to divide. */
static const char *
percent(uint64_t part, uint64_t whole, char *buf, size_t len)
{
	if (whole == 0)
		snprintf(buf, len, "-");
	else
		snprintf(buf, len, "%.1f%%", 100.0 * (double)part /
		    (double)whole);
	return buf;
}

static void
print_requests(json_t *req)
{
	json_t		*by = json_object_get(req, "by_route"), *r, *st, *v;
	const char	*route, *code;
	uint64_t	 cls[6] = { 0 };
	int		 c, first = 1;

	json_object_foreach(by, route, r) {
		st = json_object_get(r, "status");
		json_object_foreach(st, code, v) {
			c = atoi(code) / 100;
			cls[c >= 1 && c <= 5 ? c : 0] +=
			    (uint64_t)json_integer_value(v);
		}
	}
	printf("requests       %llu: %llu 2xx, %llu 3xx, %llu 4xx, %llu 5xx\n",
	    (unsigned long long)num(req, "total"), (unsigned long long)cls[2],
	    (unsigned long long)cls[3], (unsigned long long)cls[4],
	    (unsigned long long)cls[5]);
	json_object_foreach(by, route, r) {
		if (num(r, "total") == 0)
			continue;
		printf("%s%s %llu", first ? "               " : ", ", route,
		    (unsigned long long)num(r, "total"));
		first = 0;
	}
	if (!first)
		printf("\n");
}

static void
print_upstreams(json_t *ups)
{
	json_t		*u, *rl, *rem, *lim, *errs, *v;
	const char	*name, *cause;
	size_t		 w = 8;
	char		 limit[64];
	int		 any;

	json_object_foreach(ups, name, u)
		if (strlen(name) > w)
			w = strlen(name);
	printf("\n%-*s  %9s  %7s  %5s  %-16s  %s\n", (int)w, "upstream",
	    "requests", "errors", "429s", "rate limit left", "credential "
	    "failures");
	json_object_foreach(ups, name, u) {
		rl = json_object_get(u, "ratelimit");
		rem = json_object_get(rl, "remaining");
		lim = json_object_get(rl, "limit");
		if (json_is_integer(rem) && json_is_integer(lim))
			snprintf(limit, sizeof(limit), "%lld of %lld",
			    (long long)json_integer_value(rem),
			    (long long)json_integer_value(lim));
		else if (json_is_integer(rem))
			snprintf(limit, sizeof(limit), "%lld",
			    (long long)json_integer_value(rem));
		else
			snprintf(limit, sizeof(limit), "-");
		printf("%-*s  %9llu  %7llu  %5llu  %-16s  %llu\n", (int)w, name,
		    (unsigned long long)num(u, "requests"),
		    (unsigned long long)num(u, "errors_total"),
		    (unsigned long long)num(u, "429"), limit,
		    (unsigned long long)num(u, "credential_refresh_failures"));
	}
	json_object_foreach(ups, name, u) {
		if (num(u, "errors_total") == 0)
			continue;
		errs = json_object_get(u, "errors");
		printf("  errors of %s:", name);
		any = 0;
		json_object_foreach(errs, cause, v) {
			if (json_integer_value(v) <= 0)
				continue;
			printf("%s %s %lld", any ? "," : "", cause,
			    (long long)json_integer_value(v));
			any = 1;
		}
		printf("\n");
	}
}

/* The summary of a /stats document. */
static int
stats_cli_print(const char *url, json_t *j)
{
	json_t		*cache = json_object_get(j, "cache");
	json_t		*bytes = json_object_get(j, "bytes_served");
	json_t		*fills = json_object_get(j, "fills");
	json_t		*conn = json_object_get(j, "connections");
	json_t		*v;
	uint64_t	 hits, misses, from_cache, from_up, budget;
	char		 a[32], b[32], c[32], d[32];

	if (!json_is_object(cache) || !json_is_object(bytes) ||
	    !json_is_object(fills)) {
		fprintf(stderr, "regcache: %s: not a regcache /stats "
		    "document\n", url);
		return 1;
	}
	v = json_object_get(j, "uptime_seconds");
	printf("regcache %s at %s, up %s (since %s)\n\n",
	    json_string_value(json_object_get(j, "version")) != NULL ?
	    json_string_value(json_object_get(j, "version")) : "?", url,
	    human_duration(json_is_number(v) ? json_number_value(v) : 0, a,
	    sizeof(a)), json_string_value(json_object_get(j, "started")) !=
	    NULL ? json_string_value(json_object_get(j, "started")) : "?");
	printf("connections    %llu open, %llu total\n",
	    (unsigned long long)num(conn, "open"),
	    (unsigned long long)num(conn, "total"));
	print_requests(json_object_get(j, "requests"));

	hits = num(cache, "hits");
	misses = num(cache, "misses");
	printf("cache          hit ratio %s (%llu hits, %llu misses), "
	    "%llu stale, %llu coalesced,\n"
	    "               %llu revalidations, %llu evictions\n",
	    percent(hits, hits + misses, a, sizeof(a)),
	    (unsigned long long)hits, (unsigned long long)misses,
	    (unsigned long long)num(cache, "stale_served"),
	    (unsigned long long)num(cache, "coalesced"),
	    (unsigned long long)num(cache, "revalidations"),
	    (unsigned long long)num(cache, "evictions"));
	budget = num(cache, "budget_bytes");
	if (budget > 0)
		printf("               %s in %llu entries, budget %s (%s)\n",
		    human_bytes(num(cache, "bytes"), a, sizeof(a)),
		    (unsigned long long)num(cache, "entries"),
		    human_bytes(budget, b, sizeof(b)),
		    percent(num(cache, "bytes"), budget, c, sizeof(c)));
	else
		printf("               %s in %llu entries, no budget\n",
		    human_bytes(num(cache, "bytes"), a, sizeof(a)),
		    (unsigned long long)num(cache, "entries"));

	from_cache = num(bytes, "cache");
	from_up = num(bytes, "upstream");
	printf("bytes served   %s from the cache (saved), %s from upstreams; "
	    "%s of %s\n",
	    human_bytes(from_cache, a, sizeof(a)),
	    human_bytes(from_up, b, sizeof(b)),
	    percent(from_cache, from_cache + from_up, c, sizeof(c)),
	    human_bytes(from_cache + from_up, d, sizeof(d)));
	printf("fills          %llu in flight, %llu readers joined, %llu "
	    "started, %llu failed\n",
	    (unsigned long long)num(fills, "in_flight"),
	    (unsigned long long)num(fills, "readers_joined"),
	    (unsigned long long)num(fills, "started"),
	    (unsigned long long)num(fills, "failed"));
	print_upstreams(json_object_get(j, "upstreams"));
	return 0;
}

int
stats_cli_main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 }
	};
	struct url	 u;
	json_t		*j;
	json_error_t	 jerr;
	const char	*arg = STATS_CLI_DEFAULT_URL;
	char		*full = NULL, *path, *body, err[512];
	size_t		 plen;
	int		 ch, raw = 0, rc;

	while ((ch = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		switch (ch) {
		case 'j':
			raw = 1;
			break;
		case 'h':
			stats_cli_usage(stdout);
			return 0;
		default:
			stats_cli_usage(stderr);
			return 2;
		}
	}
	if (argc - optind > 1) {
		stats_cli_usage(stderr);
		return 2;
	}
	if (optind < argc)
		arg = argv[optind];
	/* "127.0.0.1:5001" means http://127.0.0.1:5001. */
	if (strstr(arg, "://") == NULL)
		xasprintf(&full, "http://%s", arg);
	else
		full = xstrdup(arg);
	if (url_parse(full, &u) == -1) {
		fprintf(stderr, "regcache: %s: not an http URL\n", arg);
		free(full);
		return 2;
	}
	if (u.tls) {
		fprintf(stderr, "regcache: %s: the admin listener speaks plain "
		    "HTTP\n", arg);
		url_clear(&u);
		free(full);
		return 2;
	}
	/* The admin root, or /stats itself; a query is dropped. */
	u.path[strcspn(u.path, "?")] = '\0';
	plen = strlen(u.path);
	while (plen > 0 && u.path[plen - 1] == '/')
		u.path[--plen] = '\0';
	if (plen >= 6 && strcmp(u.path + plen - 6, "/stats") == 0)
		path = xstrdup(u.path);
	else
		xasprintf(&path, "%s/stats", u.path);
	rc = stats_cli_get(u.host, u.port, path, &body, err, sizeof(err));
	if (rc == -1) {
		fprintf(stderr, "regcache: %s: %s\n", full, err);
		rc = 1;
	} else if (raw) {
		fputs(body, stdout);
		rc = 0;
	} else if ((j = json_loads(body, 0, &jerr)) == NULL) {
		fprintf(stderr, "regcache: %s: not JSON: %s\n", full,
		    jerr.text);
		rc = 1;
	} else {
		rc = stats_cli_print(full, j);
		json_decref(j);
	}
	free(body);
	free(path);
	url_clear(&u);
	free(full);
	return rc;
}
