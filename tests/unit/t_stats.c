/*
 * Unit tests of src/stats.c: the Prometheus text rendering (label
 * escaping, cumulative histogram buckets, HELP and TYPE before every
 * family, the metric names the dashboards use), rate-limit headers, the
 * routes of paths, and that /stats JSON and /metrics tell the same.
 */
#include "config.h"

#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "regcache.h"
#include "tap.h"

/* The library refers to these; main.c defines them in the daemon. */
struct event_base	*ev_base;
struct evdns_base	*dns_base;
struct config		*conf;

/* The names contrib/grafana's dashboard is built on. */
static const char *const dashboard_metrics[] = {
	"regcache_requests_total", "regcache_request_duration_seconds",
	"regcache_time_to_first_byte_seconds", "regcache_cache_hits_total",
	"regcache_cache_misses_total", "regcache_cache_stale_served_total",
	"regcache_cache_revalidations_total", "regcache_cache_coalesced_total",
	"regcache_bytes_served_total", "regcache_fills_in_flight",
	"regcache_fill_readers_joined_total",
	"regcache_upstream_requests_total", "regcache_upstream_errors_total",
	"regcache_upstream_ratelimit_limit",
	"regcache_upstream_ratelimit_remaining", "regcache_upstream_429_total",
	"regcache_credential_refreshes_total",
	"regcache_credential_refresh_failures_total",
	"regcache_cache_evictions_total", "regcache_cache_bytes",
	"regcache_cache_entries", "regcache_cache_budget_bytes",
	"regcache_connections_open", "regcache_connections_total",
	"regcache_uptime_seconds", "regcache_build_info", NULL
};

/* The rendering as one string; the caller frees it. */
static char *
render(void)
{
	struct evbuffer	*b = evbuffer_new();
	size_t		 n;
	char		*s;

	stats_render_metrics(b);
	n = evbuffer_get_length(b);
	s = xcalloc(1, n + 1);
	evbuffer_remove(b, s, n);
	evbuffer_free(b);
	return s;
}

/* The value of the sample line that starts with prefix ("name{...} "). */
static int
sample(const char *text, const char *prefix, double *v)
{
	const char	*p = text;
	size_t		 n = strlen(prefix);

	while ((p = strstr(p, prefix)) != NULL) {
		if ((p == text || p[-1] == '\n') && p[n] == ' ') {
			*v = strtod(p + n + 1, NULL);
			return 0;
		}
		p += n;
	}
	return -1;
}

static int
sample_is(const char *text, const char *prefix, double want)
{
	double	v;

	if (sample(text, prefix, &v) == -1) {
		diag("no sample %s", prefix);
		return 0;
	}
	if (v < want - 1e-9 || v > want + 1e-9) {
		diag("%s is %.9g, want %.9g", prefix, v, want);
		return 0;
	}
	return 1;
}

static void
test_escape(void)
{
	char	*s;

	s = stats_label_escape("plain.name-1");
	is_str(s, "plain.name-1", "a plain label value stays as it is");
	free(s);
	s = stats_label_escape("a\"b\\c\nd");
	is_str(s, "a\\\"b\\\\c\\nd", "quote, backslash and newline escaped");
	free(s);
	s = stats_label_escape("");
	is_str(s, "", "the empty value");
	free(s);
}

static void
test_ratelimit(void)
{
	ok(stats_ratelimit_parse("100;w=21600") == 100,
	    "Docker Hub's \"100;w=21600\" is 100");
	ok(stats_ratelimit_parse(" 76;w=21600") == 76, "leading space");
	ok(stats_ratelimit_parse("0") == 0, "a bare 0");
	ok(stats_ratelimit_parse("5, 10;w=1") == 5, "a list: the first");
	ok(stats_ratelimit_parse("abc") == -1, "no number");
	ok(stats_ratelimit_parse("12x") == -1, "a number with junk");
	ok(stats_ratelimit_parse("-3") == -1, "negative");
	ok(stats_ratelimit_parse(NULL) == -1, "absent");
}

static void
test_routes(void)
{
	is_str(stats_route_name(stats_route_of_path("/v2/")), "root", "/v2/");
	is_str(stats_route_name(stats_route_of_path("/v2/a/b/manifests/1")),
	    "manifest", "a manifest path");
	is_str(stats_route_name(stats_route_of_path("/v2/a/blobs/sha256:"
	    "00000000000000000000000000000000"
	    "00000000000000000000000000000000")), "blob", "a blob path");
	is_str(stats_route_name(stats_route_of_path("/v2/a/blobs/uploads/")),
	    "other", "an upload path");
	is_str(stats_route_name(stats_route_of_path("/v2/a/tags/list")),
	    "tags", "tags/list");
	is_str(stats_route_name(stats_route_of_path(AUTH_TOKEN_PATH)), "token",
	    "the token service");
	is_str(stats_route_name(stats_route_of_path(PT_RELAY_PATH "up")),
	    "relay", "the pass-through relay");
	is_str(stats_route_name(stats_route_of_path("/metrics")), "other",
	    "anything else");
	is_str(stats_route_name(stats_route_of_path(NULL)), "other",
	    "no path at all");
}

/* Buckets at and around the bounds, rendered cumulatively. */
static void
test_histogram(void)
{
	static const char *const les[] = { "0.005", "0.01", "0.025", "0.05",
	    "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "30", "60", "+Inf" };
	struct stats_hist	 h;
	struct evbuffer		*b = evbuffer_new();
	char			*text, prefix[128];
	double			 v, prev = -1;
	size_t			 i, n;
	int			 mono = 1;

	memset(&h, 0, sizeof(h));
	stats_hist_add(&h, 1000);	/* 1 ms */
	stats_hist_add(&h, 5000);	/* exactly on 0.005: le is inclusive */
	stats_hist_add(&h, 5001);
	stats_hist_add(&h, 2500000);	/* exactly 2.5 s */
	stats_hist_add(&h, 70000000);	/* past the last bound */
	stats_hist_render(b, "t_seconds", "route=\"blob\"", &h);
	n = evbuffer_get_length(b);
	text = xcalloc(1, n + 1);
	evbuffer_remove(b, text, n);
	evbuffer_free(b);

	ok(sample_is(text, "t_seconds_bucket{route=\"blob\",le=\"0.005\"}", 2),
	    "le=0.005 counts 1 ms and exactly 5 ms");
	ok(sample_is(text, "t_seconds_bucket{route=\"blob\",le=\"0.01\"}", 3),
	    "le=0.01 counts the three below it");
	ok(sample_is(text, "t_seconds_bucket{route=\"blob\",le=\"2.5\"}", 4),
	    "le=2.5 takes exactly 2.5 s");
	ok(sample_is(text, "t_seconds_bucket{route=\"blob\",le=\"60\"}", 4),
	    "le=60 leaves out 70 s");
	ok(sample_is(text, "t_seconds_bucket{route=\"blob\",le=\"+Inf\"}", 5),
	    "+Inf counts everything");
	ok(sample_is(text, "t_seconds_count{route=\"blob\"}", 5),
	    "_count equals +Inf");
	ok(sample_is(text, "t_seconds_sum{route=\"blob\"}", 72.511001),
	    "_sum in seconds, to the microsecond");
	for (i = 0; i < sizeof(les) / sizeof(les[0]); i++) {
		snprintf(prefix, sizeof(prefix),
		    "t_seconds_bucket{route=\"blob\",le=\"%s\"}", les[i]);
		if (sample(text, prefix, &v) == -1 || v < prev) {
			mono = 0;
			diag("bucket %s missing or below the one before",
			    les[i]);
		}
		prev = v;
	}
	ok(mono, "every bucket is there, in order, and cumulative");
	ok(strstr(text, "t_seconds_bucket{route=\"blob\",le=\"0.005\"}") <
	    strstr(text, "t_seconds_bucket{route=\"blob\",le=\"0.01\"}"),
	    "buckets in increasing order of le");
	free(text);

	b = evbuffer_new();
	stats_hist_render(b, "u_seconds", "", &h);
	n = evbuffer_get_length(b);
	text = xcalloc(1, n + 1);
	evbuffer_remove(b, text, n);
	evbuffer_free(b);
	ok(sample_is(text, "u_seconds_bucket{le=\"0.005\"}", 2) &&
	    sample_is(text, "u_seconds_sum", 72.511001) &&
	    sample_is(text, "u_seconds_count", 5),
	    "without labels: no stray comma or braces");
	free(text);
}

/*
 * Every line is a comment or a sample; every sample's family had HELP
 * and TYPE first; no family is described twice.
 */
static int
well_formed(const char *text)
{
	regex_t		 sample_re, comment_re;
	char		*copy = xstrdup(text), *line, *save, *fam, *described;
	char		 name[256];
	size_t		 len;
	int		 good = 1;

	described = xcalloc(1, strlen(text) + 2);
	described[0] = '\n';
	if (regcomp(&sample_re, "^[a-zA-Z_:][a-zA-Z0-9_:]*"
	    "(\\{([a-zA-Z_][a-zA-Z0-9_]*=\"([^\"\\\\]|\\\\.)*\",?)*\\})? "
	    "-?[0-9][0-9.e+-]*$", REG_EXTENDED | REG_NOSUB) != 0 ||
	    regcomp(&comment_re, "^# (HELP|TYPE) [a-zA-Z_:][a-zA-Z0-9_:]* .+$",
	    REG_EXTENDED | REG_NOSUB) != 0)
		return 0;
	for (line = strtok_r(copy, "\n", &save); line != NULL;
	    line = strtok_r(NULL, "\n", &save)) {
		if (line[0] == '#') {
			if (regexec(&comment_re, line, 0, NULL, 0) != 0) {
				diag("bad comment: %s", line);
				good = 0;
			}
			if (strncmp(line, "# TYPE ", 7) == 0) {
				len = strcspn(line + 7, " ");
				snprintf(name, sizeof(name), "\n%.*s\n",
				    (int)len, line + 7);
				if (strstr(described, name) != NULL) {
					diag("TYPE twice: %s", line);
					good = 0;
				}
				strcat(described, name + 1);
			}
			continue;
		}
		if (regexec(&sample_re, line, 0, NULL, 0) != 0) {
			diag("bad sample: %s", line);
			good = 0;
			continue;
		}
		/* Its family: the name less a histogram suffix. */
		len = strcspn(line, "{ ");
		fam = xstrndup(line, len);
		snprintf(name, sizeof(name), "\n%s\n", fam);
		if (strstr(described, name) == NULL) {
			char *suf;

			if ((suf = strrchr(fam, '_')) != NULL &&
			    (strcmp(suf, "_bucket") == 0 ||
			    strcmp(suf, "_sum") == 0 ||
			    strcmp(suf, "_count") == 0))
				*suf = '\0';
			snprintf(name, sizeof(name), "\n%s\n", fam);
			if (strstr(described, name) == NULL) {
				diag("sample before its TYPE: %s", line);
				good = 0;
			}
		}
		free(fam);
	}
	regfree(&sample_re);
	regfree(&comment_re);
	free(described);
	free(copy);
	return good;
}

/* The checker itself catches what it is for. */
static void
test_checker(void)
{
	ok(well_formed("# HELP a_total x\n# TYPE a_total counter\n"
	    "a_total{k=\"v\\\"\"} 1\n"), "checker: a good family passes");
	ok(!well_formed("a_total 1\n"), "checker: a sample without TYPE fails");
	ok(!well_formed("# HELP a x\n# TYPE a gauge\na{k=\"v} 1\n"),
	    "checker: an unterminated label fails");
	ok(!well_formed("# HELP a x\n# TYPE a gauge\n# TYPE a gauge\na 1\n"),
	    "checker: a family described twice fails");
}

static void
test_render(void)
{
	struct evkeyvalq	 h;
	char			*text, want[256];
	json_t			*j;
	size_t			 i;
	int			 all = 1;
	uint64_t		 now = stats_now_us();

	conf = config_default();
	conf->cache_max_bytes = 1234567;
	stats_init(conf);
	TAILQ_INIT(&h);
	evhttp_add_header(&h, "RateLimit-Limit", "100;w=21600");
	evhttp_add_header(&h, "RateLimit-Remaining", "0;w=21600");
	stats_upstream_response("we\"ird\\up\nx", 429, &h);
	evhttp_clear_headers(&h);
	stats_upstream_response("docker.io", 200, &h);
	stats_upstream_response("docker.io", 200, &h);
	stats_upstream_error("docker.io", UP_ERR_TIMEOUT, 0);
	stats_upstream_error("docker.io", UP_ERR_RESET, 1);
	stats_upstream_error("docker.io", UP_ERR_CANCELLED, 0);
	stats_cred_refresh("docker.io", 0);
	stats_request(STATS_ROUTE_BLOB, 200, now - 20000, now - 13000);
	stats_request(STATS_ROUTE_MANIFEST, 0, now, 0);
	stats.hits = 7;
	stats.misses = 3;
	stats.bytes_from_cache = 1000;
	stats.bytes_from_upstream = 500;

	text = render();
	ok(well_formed(text), "every line is a well-formed comment or sample");
	for (i = 0; dashboard_metrics[i] != NULL; i++) {
		snprintf(want, sizeof(want), "# TYPE %s ",
		    dashboard_metrics[i]);
		if (strstr(text, want) == NULL) {
			diag("missing %s", dashboard_metrics[i]);
			all = 0;
		}
	}
	ok(all, "every metric the dashboard uses is described");
	ok(strstr(text, "# TYPE regcache_request_duration_seconds histogram\n")
	    != NULL, "request durations are a histogram");
	ok(sample_is(text, "regcache_upstream_429_total"
	    "{upstream=\"we\\\"ird\\\\up\\nx\"}", 1),
	    "an upstream name is escaped in its label");
	ok(sample_is(text, "regcache_upstream_ratelimit_limit"
	    "{upstream=\"we\\\"ird\\\\up\\nx\"}", 100) &&
	    sample_is(text, "regcache_upstream_ratelimit_remaining"
	    "{upstream=\"we\\\"ird\\\\up\\nx\"}", 0),
	    "the rate limit's leading numbers are kept");
	ok(strstr(text, "regcache_upstream_ratelimit_limit{upstream="
	    "\"docker.io\"}") == NULL,
	    "no rate-limit gauge for an upstream that sent none");
	ok(sample_is(text, "regcache_upstream_requests_total"
	    "{upstream=\"docker.io\",status=\"200\"}", 2),
	    "upstream answers by status");
	ok(sample_is(text, "regcache_upstream_errors_total"
	    "{upstream=\"docker.io\",cause=\"timeout\"}", 1) &&
	    sample_is(text, "regcache_upstream_errors_total"
	    "{upstream=\"docker.io\",cause=\"reset\"}", 1) &&
	    sample_is(text, "regcache_upstream_errors_total"
	    "{upstream=\"docker.io\",cause=\"connect\"}", 0),
	    "errors by cause, zeros included");
	ok(strstr(text, "cause=\"cancelled\"") == NULL,
	    "a cancelled request is no upstream error");
	ok(sample_is(text, "regcache_credential_refresh_failures_total"
	    "{upstream=\"docker.io\"}", 1), "credential failures by upstream");
	ok(sample_is(text, "regcache_requests_total"
	    "{route=\"blob\",status=\"200\"}", 1) &&
	    sample_is(text, "regcache_requests_total"
	    "{route=\"manifest\",status=\"499\"}", 1),
	    "client requests by route and status; none sent is 499");
	ok(sample_is(text, "regcache_request_duration_seconds_bucket"
	    "{route=\"blob\",le=\"0.01\"}", 0) &&
	    sample_is(text, "regcache_request_duration_seconds_bucket"
	    "{route=\"blob\",le=\"0.025\"}", 1) &&
	    sample_is(text, "regcache_time_to_first_byte_seconds_bucket"
	    "{route=\"blob\",le=\"0.005\"}", 0) &&
	    sample_is(text, "regcache_time_to_first_byte_seconds_bucket"
	    "{route=\"blob\",le=\"0.01\"}", 1),
	    "a 20 ms request with its head at 7 ms lands in its buckets");
	ok(sample_is(text, "regcache_bytes_served_total{source=\"cache\"}",
	    1000) && sample_is(text,
	    "regcache_bytes_served_total{source=\"upstream\"}", 500),
	    "bytes served by source");
	ok(sample_is(text, "regcache_cache_budget_bytes", 1234567),
	    "the budget comes from the configuration");
	snprintf(want, sizeof(want), "regcache_build_info{version=\"%s\"} 1\n",
	    PACKAGE_VERSION);
	ok(strstr(text, want) != NULL, "build_info carries the version");

	j = stats_json();
	ok(j != NULL, "the JSON document renders");
	ok(json_integer_value(json_object_get(json_object_get(j, "cache"),
	    "hits")) == 7 && sample_is(text, "regcache_cache_hits_total", 7),
	    "JSON and metrics agree on the hits");
	ok(json_integer_value(json_object_get(json_object_get(json_object_get(
	    json_object_get(j, "upstreams"), "docker.io"), "errors"),
	    "timeout")) == 1, "JSON: upstream errors by cause");
	ok(json_integer_value(json_object_get(json_object_get(json_object_get(
	    j, "upstreams"), "docker.io"), "requests")) == 3 &&
	    json_integer_value(json_object_get(json_object_get(json_object_get(
	    j, "upstreams"), "docker.io"), "errors_total")) == 2,
	    "JSON: requests are the answers and the failures without one; a "
	    "body cut short is an answer and an error");
	ok(json_integer_value(json_object_get(json_object_get(json_object_get(
	    json_object_get(json_object_get(j, "requests"), "by_route"),
	    "blob"), "duration"), "count")) == 1,
	    "JSON: the blob route's histogram count");
	ok(json_integer_value(json_object_get(json_object_get(json_object_get(
	    json_object_get(j, "upstreams"), "we\"ird\\up\nx"), "ratelimit"),
	    "remaining")) == 0, "JSON: the rate limit left");
	json_decref(j);
	free(text);

	/* A reload adding an upstream keeps the others' counts. */
	stats_upstream_response("ghcr.io", 404, &h);
	stats_upstreams_add(conf);
	text = render();
	ok(sample_is(text, "regcache_upstream_requests_total"
	    "{upstream=\"docker.io\",status=\"200\"}", 2) &&
	    sample_is(text, "regcache_upstream_requests_total"
	    "{upstream=\"ghcr.io\",status=\"404\"}", 1),
	    "records are kept by name whatever the order they come in");
	free(text);

	stats_shutdown();
	text = render();
	ok(sample_is(text, "regcache_cache_hits_total", 0) &&
	    strstr(text, "upstream=\"docker.io\"") == NULL,
	    "stats_shutdown starts from zero");
	free(text);
	config_free(conf);
	conf = NULL;
}

int
main(void)
{
	log_init(LOG_LEVEL_ERROR, 0);
	test_escape();
	test_ratelimit();
	test_routes();
	test_histogram();
	test_checker();
	test_render();
	return tap_done();
}
