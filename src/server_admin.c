/*
 * The admin listener: plain HTTP on its own address (admin.listen,
 * 127.0.0.1:5001 by default), away from the clients' ports, so that
 * probes and scrapers reach it without a client's credentials and
 * clients never reach it by mistake.
 *
 *   /stats     the counters as nested JSON (stats.c)
 *   /metrics   the same in the Prometheus text format 0.0.4
 *   /healthz   200 while the event loop runs: the process is alive
 *   /readyz    200 when the index is open, the data directory takes a new
 *              file and every client listener is up; 503 with what is
 *              wrong otherwise
 *
 * GET and HEAD only; anything else is a JSON error.  Nothing here writes
 * the access log: probes every few seconds would drown the clients' lines.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/http.h>
#include <jansson.h>

#include "regcache.h"

#define ADMIN_TIMEOUT_S		10
#define ADMIN_MAX_HEADERS	8192
#define ADMIN_MAX_BODY		1024
#define ADMIN_JSON		"application/json"
#define ADMIN_PROM		"text/plain; version=0.0.4; charset=utf-8"
#define ADMIN_RENDER_ERROR	"{\"error\": \"cannot render\"}\n"

static struct evhttp	*admin_http;
static int		 admin_was_ready = 1;	/* log changes only */

/* Send len bytes of body with their type; the request is over. */
static void
admin_reply(struct evhttp_request *req, int status, const char *type,
    const char *body, size_t len)
{
	struct evkeyvalq	*out = evhttp_request_get_output_headers(req);
	struct evbuffer		*b;

	if ((b = evbuffer_new()) == NULL)
		fatalx("%s: evbuffer_new", __func__);
	evhttp_add_header(out, "Content-Type", type);
	evhttp_add_header(out, "Cache-Control", "no-store");
	if (status == 405)
		evhttp_add_header(out, "Allow", "GET, HEAD");
	evbuffer_add(b, body, len);
	/* evhttp sets Content-Length and leaves the body out for HEAD. */
	evhttp_send_reply(req, status, NULL, b);
	evbuffer_free(b);
}

/* Send a JSON document (taking the reference) pretty-printed. */
static void
admin_reply_json(struct evhttp_request *req, int status, json_t *j)
{
	char	*s;

	/* Twelve digits: microseconds of sums and uptimes, and bounds
	 * like 0.005 without a binary tail. */
	s = j != NULL ? json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER |
	    JSON_REAL_PRECISION(12)) : NULL;
	json_decref(j);
	if (s == NULL) {
		admin_reply(req, 500, ADMIN_JSON, ADMIN_RENDER_ERROR,
		    strlen(ADMIN_RENDER_ERROR));
		return;
	}
	/* A file ends with a newline; curl output then reads well too. */
	if (strlen(s) > 0) {
		char *nl;

		xasprintf(&nl, "%s\n", s);
		free(s);
		s = nl;
	}
	admin_reply(req, status, ADMIN_JSON, s, strlen(s));
	free(s);
}

static void
admin_stats(struct evhttp_request *req)
{
	admin_reply_json(req, 200, stats_json());
}

static void
admin_metrics(struct evhttp_request *req)
{
	struct evbuffer	*b;

	if ((b = evbuffer_new()) == NULL)
		fatalx("%s: evbuffer_new", __func__);
	stats_render_metrics(b);
	evhttp_add_header(evhttp_request_get_output_headers(req),
	    "Content-Type", ADMIN_PROM);
	evhttp_add_header(evhttp_request_get_output_headers(req),
	    "Cache-Control", "no-store");
	evhttp_send_reply(req, 200, NULL, b);
	evbuffer_free(b);
}

static void
admin_healthz(struct evhttp_request *req)
{
	admin_reply_json(req, 200, json_pack("{s:s}", "status", "ok"));
}

/*
 * Can the data directory take a new file?  A fill starts with one in
 * tmp/; a disk that turned read-only or a directory that went away shows
 * here first.  0, or -1 with the reason in why.
 */
static int
admin_probe_data_dir(char *why, size_t len)
{
	const char	*dir = cache_store_dir();
	char		 path[4096];
	int		 fd;

	if (dir == NULL) {
		snprintf(why, len, "no data directory is open");
		return -1;
	}
	snprintf(path, sizeof(path), "%s/tmp/.readyz.%ld", dir, (long)getpid());
	if ((fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC,
	    0600)) == -1) {
		snprintf(why, len, "cannot create a file in %s/tmp: %s", dir,
		    strerror(errno));
		return -1;
	}
	close(fd);
	unlink(path);
	return 0;
}

/* Ready for clients: each check says "ok" or what is wrong. */
static void
admin_readyz(struct evhttp_request *req)
{
	json_t	*checks = json_object();
	char	 why[512];
	int	 ready = 1;

	if (idx_is_open())
		json_object_set_new(checks, "index", json_string("ok"));
	else {
		json_object_set_new(checks, "index",
		    json_string("the index is not open"));
		ready = 0;
	}
	if (admin_probe_data_dir(why, sizeof(why)) == 0)
		json_object_set_new(checks, "data_dir", json_string("ok"));
	else {
		json_object_set_new(checks, "data_dir", json_string(why));
		ready = 0;
	}
	if (server_listening())
		json_object_set_new(checks, "listeners", json_string("ok"));
	else {
		json_object_set_new(checks, "listeners",
		    json_string("not every listener is up"));
		ready = 0;
	}
	if (ready != admin_was_ready) {
		if (ready)
			log_info("ready again");
		else
			log_warnx("not ready: index %s, data directory %s, "
			    "listeners %s",
			    json_string_value(json_object_get(checks, "index")),
			    json_string_value(json_object_get(checks,
			    "data_dir")),
			    json_string_value(json_object_get(checks,
			    "listeners")));
		admin_was_ready = ready;
	}
	admin_reply_json(req, ready ? 200 : 503, json_pack("{s:s,s:o}",
	    "status", ready ? "ok" : "not ready", "checks", checks));
}

static const struct {
	const char	*path;
	void		(*fn)(struct evhttp_request *);
} admin_routes[] = {
	{ "/stats", admin_stats },
	{ "/metrics", admin_metrics },
	{ "/healthz", admin_healthz },
	{ "/readyz", admin_readyz },
	{ NULL, NULL }
};

/* The evhttp callback of the admin listener. */
static void
admin_handle(struct evhttp_request *req, void *arg)
{
	const struct evhttp_uri	*uri = evhttp_request_get_evhttp_uri(req);
	enum evhttp_cmd_type	 m = evhttp_request_get_command(req);
	const char		*path;
	char			 peer[64];
	size_t			 i;

	path = uri != NULL ? evhttp_uri_get_path(uri) : NULL;
	v2_peer(req, peer, sizeof(peer));
	log_debug("%s: %s %s %s", __func__, peer, v2_method_name(m),
	    path != NULL ? path : "(bad URI)");
	for (i = 0; path != NULL && admin_routes[i].path != NULL; i++) {
		if (strcmp(path, admin_routes[i].path) != 0)
			continue;
		if (m != EVHTTP_REQ_GET && m != EVHTTP_REQ_HEAD) {
			admin_reply_json(req, 405, json_pack("{s:s}", "error",
			    "method not allowed: use GET"));
			return;
		}
		admin_routes[i].fn(req);
		return;
	}
	admin_reply_json(req, 404, json_pack("{s:s,s:[s,s,s,s]}", "error",
	    "not found", "endpoints", "/healthz", "/readyz", "/stats",
	    "/metrics"));
}

/* Bind the admin listener, if the configuration has one. */
int
admin_start(const struct config *c)
{
	struct evhttp_bound_socket	*sock;

	if (c->admin == NULL)
		return 0;
	if ((admin_http = evhttp_new(ev_base)) == NULL)
		return -1;
	evhttp_set_gencb(admin_http, admin_handle, NULL);
	/* Every method reaches admin_handle, which answers in JSON. */
	evhttp_set_allowed_methods(admin_http, EVHTTP_REQ_GET |
	    EVHTTP_REQ_HEAD | EVHTTP_REQ_POST | EVHTTP_REQ_PUT |
	    EVHTTP_REQ_DELETE | EVHTTP_REQ_PATCH | EVHTTP_REQ_OPTIONS);
	evhttp_set_max_headers_size(admin_http, ADMIN_MAX_HEADERS);
	evhttp_set_max_body_size(admin_http, ADMIN_MAX_BODY);
	evhttp_set_default_content_type(admin_http, NULL);
	evhttp_set_timeout(admin_http, ADMIN_TIMEOUT_S);
	sock = evhttp_bind_socket_with_handle(admin_http, c->admin->host,
	    (uint16_t)atoi(c->admin->port));
	if (sock == NULL) {
		log_warn("admin listen %s", c->admin->address);
		evhttp_free(admin_http);
		admin_http = NULL;
		return -1;
	}
	log_info("admin endpoints on http://%s/ (/stats, /metrics, "
	    "/healthz, /readyz)", c->admin->address);
	return 0;
}

void
admin_stop(void)
{
	if (admin_http != NULL)
		evhttp_free(admin_http);
	admin_http = NULL;
}
