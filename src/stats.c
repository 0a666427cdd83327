/*
 * What the daemon counts, and the two ways the admin listener shows it:
 * /stats, nested JSON for people and scripts, and /metrics, the
 * Prometheus text format (version 0.0.4) for scrapers.
 *
 * Counting costs a few additions on the event loop: plain counters in
 * `struct stats`, per route a status table and two histograms, and per
 * upstream a record found by name.  The records are keyed by name, not by
 * index, so that a configuration reload that adds or removes upstreams
 * keeps every series where it was; an upstream that goes away keeps its
 * record, as counters must not go backwards.
 */
#include "config.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "regcache.h"

/* HTTP statuses are counted in a table; anything else goes to slot 0. */
#define STATS_STATUS_MAX	600

struct stats		stats;

/* Bucket bounds of both histograms, in microseconds: 5 ms to a minute. */
static const uint64_t	hist_bounds_us[STATS_HIST_BOUNDS] = {
	5000, 10000, 25000, 50000, 100000, 250000, 500000,
	1000000, 2500000, 5000000, 10000000, 30000000, 60000000
};

static const char *const route_names[STATS_ROUTE_COUNT] = {
	"root", "manifest", "blob", "tags", "referrers", "token", "relay",
	"other"
};

struct route_stats {
	uint64_t		status[STATS_STATUS_MAX];
	struct stats_hist	duration;
	struct stats_hist	ttfb;
};

struct upstream_stats {
	TAILQ_ENTRY(upstream_stats) entry;
	char			*name;
	uint64_t		 status[STATS_STATUS_MAX];
	uint64_t		 errors[UP_ERR_INTERNAL + 1];
	uint64_t		 unanswered;	/* errors before any head */
	uint64_t		 n429;
	int64_t			 rl_limit;	/* -1 until seen */
	int64_t			 rl_remaining;
	uint64_t		 rl_seen_us;
	uint64_t		 cred_refreshes;
	uint64_t		 cred_refresh_failures;
	uint64_t		 token_fetches;	/* bearer tokens from its realm */
	uint64_t		 token_failures;
};

static struct route_stats	routes[STATS_ROUTE_COUNT];
static TAILQ_HEAD(, upstream_stats) upstats =
    TAILQ_HEAD_INITIALIZER(upstats);
static uint64_t			started_us;
static time_t			started_wall;

/* The errors worth a series: every cause but "ok" and "cancelled". */
static const enum up_error	error_causes[] = {
	UP_ERR_DNS, UP_ERR_CONNECT, UP_ERR_TLS, UP_ERR_TIMEOUT, UP_ERR_RESET,
	UP_ERR_PROTOCOL, UP_ERR_REDIRECTS, UP_ERR_AUTH, UP_ERR_INTERNAL
};
#define NCAUSES	(sizeof(error_causes) / sizeof(error_causes[0]))

/* A monotonic clock in microseconds, for durations. */
uint64_t
stats_now_us(void)
{
	struct timespec	ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

/* The record of upstream name, made on first use. */
static struct upstream_stats *
upstats_get(const char *name)
{
	struct upstream_stats	*u;

	TAILQ_FOREACH(u, &upstats, entry)
		if (strcmp(u->name, name) == 0)
			return u;
	u = xcalloc(1, sizeof(*u));
	u->name = xstrdup(name);
	u->rl_limit = u->rl_remaining = -1;
	TAILQ_INSERT_TAIL(&upstats, u, entry);
	return u;
}

/* Start counting: the clock of the uptime, a record per upstream. */
void
stats_init(const struct config *c)
{
	started_us = stats_now_us();
	started_wall = time(NULL);
	stats_upstreams_add(c);
}

/*
 * Make sure every upstream of c has a record, so that its series show
 * (at zero) before its first request; records of upstreams c lacks stay.
 */
void
stats_upstreams_add(const struct config *c)
{
	size_t	i;

	for (i = 0; i < c->nupstreams; i++)
		upstats_get(c->upstreams[i].name);
}

/* Free the records and start every count from zero again. */
void
stats_shutdown(void)
{
	struct upstream_stats	*u;

	while ((u = TAILQ_FIRST(&upstats)) != NULL) {
		TAILQ_REMOVE(&upstats, u, entry);
		free(u->name);
		free(u);
	}
	memset(&stats, 0, sizeof(stats));
	memset(routes, 0, sizeof(routes));
}

const char *
stats_route_name(enum stats_route r)
{
	return (unsigned)r < STATS_ROUTE_COUNT ? route_names[r] : "other";
}

enum stats_route
stats_route_of_kind(enum v2_kind k)
{
	switch (k) {
	case V2_ROOT:		return STATS_ROUTE_ROOT;
	case V2_MANIFEST:	return STATS_ROUTE_MANIFEST;
	case V2_BLOB:		return STATS_ROUTE_BLOB;
	case V2_TAGS:		return STATS_ROUTE_TAGS;
	case V2_REFERRERS:	return STATS_ROUTE_REFERRERS;
	default:		return STATS_ROUTE_OTHER;
	}
}

/* The route of a request answered before it was parsed (a 405, say). */
enum stats_route
stats_route_of_path(const char *path)
{
	struct v2_path	 p;
	const char	*code, *msg;

	if (path == NULL)
		return STATS_ROUTE_OTHER;
	if (strcmp(path, AUTH_TOKEN_PATH) == 0)
		return STATS_ROUTE_TOKEN;
	if (strncmp(path, PT_RELAY_PATH, strlen(PT_RELAY_PATH)) == 0)
		return STATS_ROUTE_RELAY;
	v2_path_parse(path, &p, &code, &msg);
	return stats_route_of_kind(p.kind);
}

void
stats_hist_add(struct stats_hist *h, uint64_t us)
{
	size_t	i;

	for (i = 0; i < STATS_HIST_BOUNDS && us > hist_bounds_us[i]; i++)
		;
	h->buckets[i]++;
	h->count++;
	h->sum_us += us;
}

/*
 * One client request is over: its route, the status it got, when it
 * started and when the head of its reply went out (0: with the end, as
 * for any reply handed over whole).  A request whose client left before
 * any answer counts as 499, as nginx logs it.
 */
void
stats_request(enum stats_route r, int status, uint64_t t0_us,
    uint64_t first_us)
{
	struct route_stats	*rs;
	uint64_t		 now = stats_now_us();

	if ((unsigned)r >= STATS_ROUTE_COUNT)
		r = STATS_ROUTE_OTHER;
	rs = &routes[r];
	if (status == 0)
		status = 499;
	rs->status[status > 0 && status < STATS_STATUS_MAX ? status : 0]++;
	if (t0_us == 0 || t0_us > now)
		t0_us = now;
	if (first_us == 0 || first_us > now || first_us < t0_us)
		first_us = now;
	stats_hist_add(&rs->duration, now - t0_us);
	stats_hist_add(&rs->ttfb, first_us - t0_us);
}

/*
 * The number a rate-limit header starts with: Docker Hub sends
 * "100;w=21600" (a quota policy after the semicolon).  -1 when there is
 * no number.
 */
int64_t
stats_ratelimit_parse(const char *v)
{
	long long	 n;
	char		*end;

	if (v == NULL)
		return -1;
	while (*v == ' ' || *v == '\t')
		v++;
	if (!isdigit((unsigned char)*v))
		return -1;
	n = strtoll(v, &end, 10);
	while (*end == ' ' || *end == '\t')
		end++;
	if (*end != '\0' && *end != ';' && *end != ',')
		return -1;
	return n;
}

/*
 * Any answer of upstream name, final or not (a 401 before a token, a
 * redirect): count its status, and keep the rate limit it announces.
 */
void
stats_upstream_response(const char *name, int status,
    const struct evkeyvalq *h)
{
	struct upstream_stats	*u = upstats_get(name);
	int64_t			 limit, remaining;

	u->status[status > 0 && status < STATS_STATUS_MAX ? status : 0]++;
	if (status == 429)
		u->n429++;
	limit = stats_ratelimit_parse(evhttp_find_header(h,
	    "RateLimit-Limit"));
	remaining = stats_ratelimit_parse(evhttp_find_header(h,
	    "RateLimit-Remaining"));
	if (limit >= 0 || remaining >= 0) {
		if (limit >= 0)
			u->rl_limit = limit;
		if (remaining >= 0)
			u->rl_remaining = remaining;
		u->rl_seen_us = stats_now_us();
	}
}

/*
 * A request to upstream name failed: before its last exchange had an
 * answer, or (answered) part way through the body.
 */
void
stats_upstream_error(const char *name, enum up_error err, int answered)
{
	struct upstream_stats	*u;

	if (err == UP_OK || err == UP_ERR_CANCELLED ||
	    (unsigned)err > UP_ERR_INTERNAL)
		return;
	u = upstats_get(name);
	u->errors[err]++;
	if (!answered)
		u->unanswered++;
}

/* regcache's own credentials for upstream name renewed, or not. */
void
stats_cred_refresh(const char *name, int ok)
{
	struct upstream_stats	*u = upstats_get(name);

	if (ok)
		u->cred_refreshes++;
	else
		u->cred_refresh_failures++;
}

/* A bearer token fetched from upstream name's token service, or not. */
void
stats_token_fetch(const char *name, int ok)
{
	struct upstream_stats	*u = upstats_get(name);

	if (ok)
		u->token_fetches++;
	else
		u->token_failures++;
}

/*
 * A label value as the text format wants it: backslash, double quote and
 * line feed escaped.  The caller frees it.
 */
char *
stats_label_escape(const char *s)
{
	char	*out, *w;

	w = out = xcalloc(1, strlen(s) * 2 + 1);
	for (; *s != '\0'; s++) {
		switch (*s) {
		case '\\':
			*w++ = '\\';
			*w++ = '\\';
			break;
		case '"':
			*w++ = '\\';
			*w++ = '"';
			break;
		case '\n':
			*w++ = '\\';
			*w++ = 'n';
			break;
		default:
			*w++ = *s;
		}
	}
	*w = '\0';
	return out;
}

/* Microseconds as seconds, exactly ("1.000250"). */
static void
render_seconds(struct evbuffer *b, uint64_t us)
{
	evbuffer_add_printf(b, "%llu.%06llu",
	    (unsigned long long)(us / 1000000),
	    (unsigned long long)(us % 1000000));
}

/* A bucket bound as the le label shows it: "0.005", "1", "2.5". */
static void
bound_label(uint64_t us, char *buf, size_t len)
{
	snprintf(buf, len, "%g", (double)us / 1e6);
}

static void
render_head(struct evbuffer *b, const char *name, const char *type,
    const char *help)
{
	evbuffer_add_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help,
	    name, type);
}

/*
 * The series of one histogram: cumulative buckets up to +Inf, then sum
 * and count.  labels is "" or `route="blob"` (already escaped).
 */
void
stats_hist_render(struct evbuffer *b, const char *name, const char *labels,
    const struct stats_hist *h)
{
	uint64_t	cum = 0;
	size_t		i;
	char		le[32];
	const char	*sep = labels[0] != '\0' ? "," : "";

	for (i = 0; i < STATS_HIST_BOUNDS; i++) {
		cum += h->buckets[i];
		bound_label(hist_bounds_us[i], le, sizeof(le));
		evbuffer_add_printf(b, "%s_bucket{%s%sle=\"%s\"} %llu\n", name,
		    labels, sep, le, (unsigned long long)cum);
	}
	cum += h->buckets[STATS_HIST_BOUNDS];
	evbuffer_add_printf(b, "%s_bucket{%s%sle=\"+Inf\"} %llu\n", name,
	    labels, sep, (unsigned long long)cum);
	evbuffer_add_printf(b, "%s_sum%s%s%s ", name, labels[0] ? "{" : "",
	    labels, labels[0] ? "}" : "");
	render_seconds(b, h->sum_us);
	evbuffer_add_printf(b, "\n%s_count%s%s%s %llu\n", name,
	    labels[0] ? "{" : "", labels, labels[0] ? "}" : "",
	    (unsigned long long)h->count);
}

/* One unlabelled sample with its HELP and TYPE. */
static void
render_one(struct evbuffer *b, const char *name, const char *type,
    const char *help, uint64_t v)
{
	render_head(b, name, type, help);
	evbuffer_add_printf(b, "%s %llu\n", name, (unsigned long long)v);
}

static void
render_requests(struct evbuffer *b)
{
	size_t	r, s;
	char	labels[64];

	render_head(b, "regcache_requests_total", "counter",
	    "Client requests answered, by route and HTTP status (499: the "
	    "client left before an answer).");
	for (r = 0; r < STATS_ROUTE_COUNT; r++)
		for (s = 0; s < STATS_STATUS_MAX; s++)
			if (routes[r].status[s] != 0)
				evbuffer_add_printf(b, "regcache_requests_total"
				    "{route=\"%s\",status=\"%zu\"} %llu\n",
				    route_names[r], s,
				    (unsigned long long)routes[r].status[s]);
	render_head(b, "regcache_request_duration_seconds", "histogram",
	    "Time from a client request to the last byte of its reply, by "
	    "route.");
	for (r = 0; r < STATS_ROUTE_COUNT; r++) {
		snprintf(labels, sizeof(labels), "route=\"%s\"",
		    route_names[r]);
		stats_hist_render(b, "regcache_request_duration_seconds",
		    labels, &routes[r].duration);
	}
	render_head(b, "regcache_time_to_first_byte_seconds", "histogram",
	    "Time from a client request to the head of its reply, by route.");
	for (r = 0; r < STATS_ROUTE_COUNT; r++) {
		snprintf(labels, sizeof(labels), "route=\"%s\"",
		    route_names[r]);
		stats_hist_render(b, "regcache_time_to_first_byte_seconds",
		    labels, &routes[r].ttfb);
	}
}

/* A per-upstream counter: one sample per upstream. */
static void
render_per_upstream(struct evbuffer *b, const char *name, const char *help,
    size_t off)
{
	struct upstream_stats	*u;
	char			*l;

	render_head(b, name, "counter", help);
	TAILQ_FOREACH(u, &upstats, entry) {
		l = stats_label_escape(u->name);
		evbuffer_add_printf(b, "%s{upstream=\"%s\"} %llu\n", name, l,
		    (unsigned long long)*(const uint64_t *)(const void *)
		    ((const char *)u + off));
		free(l);
	}
}

static void
render_upstreams(struct evbuffer *b)
{
	struct upstream_stats	*u;
	size_t			 s, i;
	char			*l;

	render_head(b, "regcache_upstream_requests_total", "counter",
	    "Answers from upstreams, by upstream and HTTP status; token "
	    "challenges and redirects count too.");
	TAILQ_FOREACH(u, &upstats, entry) {
		l = stats_label_escape(u->name);
		for (s = 0; s < STATS_STATUS_MAX; s++)
			if (u->status[s] != 0)
				evbuffer_add_printf(b,
				    "regcache_upstream_requests_total"
				    "{upstream=\"%s\",status=\"%zu\"} %llu\n",
				    l, s, (unsigned long long)u->status[s]);
		free(l);
	}
	render_head(b, "regcache_upstream_errors_total", "counter",
	    "Upstream requests that failed, before an answer or during its "
	    "body, by upstream and cause.");
	TAILQ_FOREACH(u, &upstats, entry) {
		l = stats_label_escape(u->name);
		for (i = 0; i < NCAUSES; i++)
			evbuffer_add_printf(b, "regcache_upstream_errors_total"
			    "{upstream=\"%s\",cause=\"%s\"} %llu\n", l,
			    up_error_str(error_causes[i]),
			    (unsigned long long)u->errors[error_causes[i]]);
		free(l);
	}
	render_per_upstream(b, "regcache_upstream_429_total",
	    "429 Too Many Requests answers, by upstream.",
	    offsetof(struct upstream_stats, n429));
	render_head(b, "regcache_upstream_ratelimit_limit", "gauge",
	    "The last RateLimit-Limit an upstream sent (upstreams that sent "
	    "one).");
	TAILQ_FOREACH(u, &upstats, entry) {
		if (u->rl_limit < 0)
			continue;
		l = stats_label_escape(u->name);
		evbuffer_add_printf(b, "regcache_upstream_ratelimit_limit"
		    "{upstream=\"%s\"} %lld\n", l, (long long)u->rl_limit);
		free(l);
	}
	render_head(b, "regcache_upstream_ratelimit_remaining", "gauge",
	    "The last RateLimit-Remaining an upstream sent (upstreams that "
	    "sent one).");
	TAILQ_FOREACH(u, &upstats, entry) {
		if (u->rl_remaining < 0)
			continue;
		l = stats_label_escape(u->name);
		evbuffer_add_printf(b, "regcache_upstream_ratelimit_remaining"
		    "{upstream=\"%s\"} %lld\n", l, (long long)u->rl_remaining);
		free(l);
	}
	render_per_upstream(b, "regcache_credential_refreshes_total",
	    "Renewals of regcache's own upstream credentials (ECR), by "
	    "upstream.", offsetof(struct upstream_stats, cred_refreshes));
	render_per_upstream(b, "regcache_credential_refresh_failures_total",
	    "Failed renewals of regcache's own upstream credentials, by "
	    "upstream.",
	    offsetof(struct upstream_stats, cred_refresh_failures));
	render_per_upstream(b, "regcache_upstream_token_fetches_total",
	    "Bearer tokens fetched from an upstream's token service (one "
	    "request serves every waiter), by upstream.",
	    offsetof(struct upstream_stats, token_fetches));
	render_per_upstream(b, "regcache_upstream_token_failures_total",
	    "Token requests an upstream's token service refused or failed, "
	    "by upstream.", offsetof(struct upstream_stats, token_failures));
}

/* The whole of /metrics. */
void
stats_render_metrics(struct evbuffer *b)
{
	char	*v = stats_label_escape(PACKAGE_VERSION);

	render_head(b, "regcache_build_info", "gauge",
	    "Always 1; the version is in the label.");
	evbuffer_add_printf(b, "regcache_build_info{version=\"%s\"} 1\n", v);
	free(v);
	render_head(b, "regcache_uptime_seconds", "gauge",
	    "Seconds since the daemon started.");
	evbuffer_add_printf(b, "regcache_uptime_seconds ");
	render_seconds(b, stats_now_us() - started_us);
	evbuffer_add_printf(b, "\n");
	render_one(b, "regcache_connections_open", "gauge",
	    "Client connections open now.",
	    (uint64_t)server_client_count());
	render_one(b, "regcache_connections_total", "counter",
	    "Client connections that sent a request.",
	    stats.connections_total);

	render_requests(b);

	render_one(b, "regcache_cache_hits_total", "counter",
	    "Requests answered from the cache.", stats.hits);
	render_one(b, "regcache_cache_misses_total", "counter",
	    "Requests that had to fetch from an upstream.", stats.misses);
	render_one(b, "regcache_cache_stale_served_total", "counter",
	    "Tags served from the cache because the upstream could not "
	    "confirm them.", stats.stale_served);
	render_one(b, "regcache_cache_revalidations_total", "counter",
	    "Tags confirmed by the upstream after their TTL.",
	    stats.revalidations);
	render_one(b, "regcache_cache_coalesced_total", "counter",
	    "Requests that shared an upstream fetch already under way.",
	    stats.coalesced);
	render_one(b, "regcache_cache_negative_hits_total", "counter",
	    "Tags answered 404 from a remembered upstream 404.",
	    stats.negative_hits);
	render_head(b, "regcache_bytes_served_total", "counter",
	    "Content bytes sent to clients: from the cache (or a fetch "
	    "another client started), or fetched from an upstream for them.");
	evbuffer_add_printf(b, "regcache_bytes_served_total{source=\"cache\"} "
	    "%llu\n", (unsigned long long)stats.bytes_from_cache);
	evbuffer_add_printf(b, "regcache_bytes_served_total"
	    "{source=\"upstream\"} %llu\n",
	    (unsigned long long)stats.bytes_from_upstream);

	render_one(b, "regcache_fills_in_flight", "gauge",
	    "Blob fetches into the cache under way.", (uint64_t)fill_count());
	render_one(b, "regcache_fill_readers_joined_total", "counter",
	    "Clients that joined a blob fetch under way.",
	    stats.fill_readers_joined);
	render_one(b, "regcache_fills_started_total", "counter",
	    "Blob fetches into the cache started.", stats.fills_started);
	render_one(b, "regcache_fills_failed_total", "counter",
	    "Blob fetches into the cache that failed.", stats.fills_failed);
	render_one(b, "regcache_fill_bytes_total", "counter",
	    "Bytes written into the cache by blob fetches.",
	    stats.fill_bytes);
	render_one(b, "regcache_fill_disk_errors_total", "counter",
	    "Blob fetches the disk could not take.", stats.fill_disk_errors);
	render_one(b, "regcache_digest_mismatches_total", "counter",
	    "Upstream content that did not match its digest.",
	    stats.digest_mismatches);

	render_upstreams(b);

	render_one(b, "regcache_cache_evictions_total", "counter",
	    "Blobs evicted from the cache.", stats.evictions);
	render_one(b, "regcache_cache_evicted_bytes_total", "counter",
	    "Bytes evicted from the cache.", stats.evicted_bytes);
	render_one(b, "regcache_cache_bytes", "gauge",
	    "Bytes of blobs and manifests in the cache.", idx_total_bytes());
	render_one(b, "regcache_cache_entries", "gauge",
	    "Blobs and manifests in the cache.", idx_blob_count());
	render_one(b, "regcache_cache_budget_bytes", "gauge",
	    "cache.max_bytes; 0: no budget.",
	    conf != NULL ? conf->cache_max_bytes : 0);
}

/*
 * The JSON form of a histogram: count, sum, and the cumulative buckets as
 * {"0.005": n, ..., "+Inf": n}, labelled as in /metrics.
 */
static json_t *
hist_json(const struct stats_hist *h)
{
	json_t		*le = json_object();
	uint64_t	 cum = 0;
	size_t		 i;
	char		 k[32];

	for (i = 0; i < STATS_HIST_BOUNDS; i++) {
		cum += h->buckets[i];
		bound_label(hist_bounds_us[i], k, sizeof(k));
		json_object_set_new(le, k, json_integer((json_int_t)cum));
	}
	json_object_set_new(le, "+Inf", json_integer((json_int_t)h->count));
	return json_pack("{s:I,s:f,s:o}", "count", (json_int_t)h->count,
	    "sum_seconds", (double)h->sum_us / 1e6, "le", le);
}

/* {"200": n, ...} of a status table, and the sum of it. */
static json_t *
status_json(const uint64_t *status, uint64_t *total)
{
	json_t	*o = json_object();
	size_t	 s;
	char	 k[16];

	*total = 0;
	for (s = 0; s < STATS_STATUS_MAX; s++) {
		if (status[s] == 0)
			continue;
		snprintf(k, sizeof(k), "%zu", s);
		json_object_set_new(o, k, json_integer((json_int_t)status[s]));
		*total += status[s];
	}
	return o;
}

static json_t *
requests_json(void)
{
	json_t		*by = json_object(), *st;
	uint64_t	 n, all = 0;
	size_t		 r;

	for (r = 0; r < STATS_ROUTE_COUNT; r++) {
		st = status_json(routes[r].status, &n);
		all += n;
		json_object_set_new(by, route_names[r], json_pack(
		    "{s:I,s:o,s:o,s:o}", "total", (json_int_t)n, "status", st,
		    "duration", hist_json(&routes[r].duration),
		    "time_to_first_byte", hist_json(&routes[r].ttfb)));
	}
	return json_pack("{s:I,s:o}", "total", (json_int_t)all, "by_route",
	    by);
}

static json_t *
upstreams_json(void)
{
	struct upstream_stats	*u;
	json_t			*o = json_object(), *errs, *st, *rl;
	uint64_t		 n, e, nerr;
	size_t			 i;

	TAILQ_FOREACH(u, &upstats, entry) {
		st = status_json(u->status, &n);
		errs = json_object();
		nerr = 0;
		for (i = 0; i < NCAUSES; i++) {
			e = u->errors[error_causes[i]];
			nerr += e;
			json_object_set_new(errs, up_error_str(error_causes[i]),
			    json_integer((json_int_t)e));
		}
		if (u->rl_seen_us != 0)
			rl = json_pack("{s:o,s:o,s:f}",
			    "limit", u->rl_limit >= 0 ?
			    json_integer(u->rl_limit) : json_null(),
			    "remaining", u->rl_remaining >= 0 ?
			    json_integer(u->rl_remaining) : json_null(),
			    "seen_seconds_ago", (double)(stats_now_us() -
			    u->rl_seen_us) / 1e6);
		else
			rl = json_null();
		/* Requests: the answers and the exchanges that got none. */
		json_object_set_new(o, u->name, json_pack(
		    "{s:I,s:o,s:I,s:o,s:I,s:o,s:I,s:I,s:I,s:I}",
		    "requests", (json_int_t)(n + u->unanswered),
		    "status", st,
		    "errors_total", (json_int_t)nerr,
		    "errors", errs,
		    "429", (json_int_t)u->n429,
		    "ratelimit", rl,
		    "credential_refreshes", (json_int_t)u->cred_refreshes,
		    "credential_refresh_failures",
		    (json_int_t)u->cred_refresh_failures,
		    "token_fetches", (json_int_t)u->token_fetches,
		    "token_failures", (json_int_t)u->token_failures));
	}
	return o;
}

/* The whole of /stats. */
json_t *
stats_json(void)
{
	char		 ts[32];
	struct tm	 tm;

	gmtime_r(&started_wall, &tm);
	strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%SZ", &tm);
	return json_pack("{s:s,s:s,s:f,s:{s:i,s:I},s:o,s:{s:I,s:I,s:I,s:I,"
	    "s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I},s:{s:I,s:I},s:{s:I,s:I,s:I,s:I,"
	    "s:I,s:I,s:I},s:o}",
	    "version", PACKAGE_VERSION,
	    "started", ts,
	    "uptime_seconds", (double)(stats_now_us() - started_us) / 1e6,
	    "connections",
		"open", server_client_count(),
		"total", (json_int_t)stats.connections_total,
	    "requests", requests_json(),
	    "cache",
		"hits", (json_int_t)stats.hits,
		"misses", (json_int_t)stats.misses,
		"stale_served", (json_int_t)stats.stale_served,
		"revalidations", (json_int_t)stats.revalidations,
		"coalesced", (json_int_t)stats.coalesced,
		"negative_hits", (json_int_t)stats.negative_hits,
		"digest_mismatches", (json_int_t)stats.digest_mismatches,
		"evictions", (json_int_t)stats.evictions,
		"evicted_bytes", (json_int_t)stats.evicted_bytes,
		"bytes", (json_int_t)idx_total_bytes(),
		"entries", (json_int_t)idx_blob_count(),
		"budget_bytes", (json_int_t)(conf != NULL ?
		    conf->cache_max_bytes : 0),
	    "bytes_served",
		"cache", (json_int_t)stats.bytes_from_cache,
		"upstream", (json_int_t)stats.bytes_from_upstream,
	    "fills",
		"in_flight", (json_int_t)fill_count(),
		"readers_joined", (json_int_t)stats.fill_readers_joined,
		"started", (json_int_t)stats.fills_started,
		"done", (json_int_t)stats.fills_done,
		"failed", (json_int_t)stats.fills_failed,
		"bytes", (json_int_t)stats.fill_bytes,
		"disk_errors", (json_int_t)stats.fill_disk_errors,
	    "upstreams", upstreams_json());
}
