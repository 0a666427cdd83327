/*
 * The v2 pull API towards local clients.  Each request becomes an
 * exchange: it is checked against the spec grammar, routed to an upstream,
 * and the upstream's answer is streamed back with back-pressure: when the
 * client's output buffer passes STREAM_HIGH_WATER the upstream is paused
 * until evhttp reports the buffer written out.
 */
#include "config.h"

#include <sys/socket.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/http.h>
#include <event2/http_struct.h>
#include <jansson.h>

#include "regcache.h"

/* Response headers worth passing on from an upstream, nothing else. */
static const char *const v2_pass_headers[] = {
	"Content-Type",
	"Content-Length",
	"Content-Range",
	"Accept-Ranges",
	"Docker-Content-Digest",
	"ETag",
	"Retry-After",
	"RateLimit-Limit",
	"RateLimit-Remaining",
	"RateLimit-Reset",
	"Docker-RateLimit-Source",
	"OCI-Subject",
	"OCI-Filters-Applied",
	NULL
};

static uint64_t	exchange_next_id = 1;


static void	v2_up_headers(struct upreq *, int, struct evkeyvalq *, void *);
static void	v2_up_body(struct upreq *, struct evbuffer *, void *);
static void	v2_up_done(struct upreq *, enum up_error, const char *,
		    void *);

static void	exchange_client_gone(struct client *, void *);
static size_t	v2_error_reply(struct evhttp_request *, int, const char *,
		    const char *, const char *, const char *, const char *);

static const struct upreq_cb v2_upreq_cb = {
	v2_up_headers, v2_up_body, v2_up_done
};

const char *
v2_method_name(enum evhttp_cmd_type m)
{
	switch (m) {
	case EVHTTP_REQ_GET:	return "GET";
	case EVHTTP_REQ_HEAD:	return "HEAD";
	case EVHTTP_REQ_POST:	return "POST";
	case EVHTTP_REQ_PUT:	return "PUT";
	case EVHTTP_REQ_DELETE:	return "DELETE";
	case EVHTTP_REQ_PATCH:	return "PATCH";
	case EVHTTP_REQ_OPTIONS: return "OPTIONS";
	default:		return "OTHER";
	}
}

void
v2_common_headers(struct evhttp_request *req)
{
	struct evkeyvalq	*out = evhttp_request_get_output_headers(req);

	evhttp_remove_header(out, "Docker-Distribution-API-Version");
	evhttp_add_header(out, "Docker-Distribution-API-Version",
	    "registry/2.0");
	/* Shutting down: evhttp closes the connection after this answer. */
	if (server_draining() && evhttp_find_header(out, "Connection") == NULL)
		evhttp_add_header(out, "Connection", "close");
}

/*
 * Answer with an OCI error body: {"errors":[{"code","message"}]}.  HEAD
 * gets the headers only, as the spec wants.  Returns the body bytes.
 */
size_t
v2_send_error(struct evhttp_request *req, int status, const char *code,
    const char *message)
{
	return v2_error_reply(req, status, code, message, NULL, NULL, NULL);
}

/* The same with one more header, such as WWW-Authenticate or Allow. */
size_t
v2_send_error_header(struct evhttp_request *req, int status,
    const char *code, const char *message, const char *hname,
    const char *hvalue)
{
	return v2_error_reply(req, status, code, message, NULL, hname, hvalue);
}

/* The same, with the X-Cache verdict and one more header when given.
 * Returns the body bytes sent, for the access log. */
static size_t
v2_error_reply(struct evhttp_request *req, int status, const char *code,
    const char *message, const char *xcache, const char *hname,
    const char *hvalue)
{
	struct evkeyvalq	*out = evhttp_request_get_output_headers(req);
	struct evbuffer		*body;
	json_t			*j;
	char			*s, len[32];
	size_t			 n = 0;

	j = json_pack("{s:[{s:s,s:s,s:n}]}", "errors", "code", code,
	    "message", message, "detail");
	s = j != NULL ? json_dumps(j, JSON_COMPACT) : NULL;
	json_decref(j);
	if (s == NULL)
		fatalx("%s: json", __func__);
	/* Nothing an upstream said may go with our error. */
	evhttp_clear_headers(out);
	v2_common_headers(req);
	evhttp_add_header(out, "Content-Type", "application/json");
	snprintf(len, sizeof(len), "%zu", strlen(s));
	evhttp_add_header(out, "Content-Length", len);
	if (status == 405 && (hname == NULL || strcasecmp(hname, "Allow") != 0))
		evhttp_add_header(out, "Allow", "GET, HEAD");
	if (hname != NULL && hvalue != NULL)
		evhttp_add_header(out, hname, hvalue);
	if (xcache != NULL)
		evhttp_add_header(out, "X-Cache", xcache);
	body = evbuffer_new();
	if (evhttp_request_get_command(req) != EVHTTP_REQ_HEAD) {
		n = strlen(s);
		evbuffer_add(body, s, n);
	}
	evhttp_send_reply(req, status, NULL, body);
	evbuffer_free(body);
	free(s);
	return n;
}

void
v2_peer(struct evhttp_request *req, char *buf, size_t len)
{
	struct evhttp_connection *evcon = evhttp_request_get_connection(req);
	const char		*addr = NULL;
	uint16_t		 port = 0;

	if (evcon != NULL)
		evhttp_connection_get_peer(evcon, (char **)(uintptr_t)&addr,
		    &port);
	snprintf(buf, len, "%s", addr != NULL ? addr : "-");
}

/* Longest Referer or User-Agent kept for the access log. */
#define V2_AGENT_MAX		512

/* Keep what the access log wants of a request as it arrives. */
void
v2_reqinfo_init(struct reqinfo *ri, struct evhttp_request *req)
{
	struct evkeyvalq	*in = evhttp_request_get_input_headers(req);
	const char		*v;

	memset(ri, 0, sizeof(*ri));
	ri->t0_us = stats_now_us();
	snprintf(ri->proto, sizeof(ri->proto), "HTTP/%d.%d",
	    (int)req->major, (int)req->minor);
	if ((v = evhttp_find_header(in, "Referer")) != NULL)
		ri->referer = xstrndup(v, V2_AGENT_MAX);
	if ((v = evhttp_find_header(in, "User-Agent")) != NULL)
		ri->agent = xstrndup(v, V2_AGENT_MAX);
}

void
v2_reqinfo_clear(struct reqinfo *ri)
{
	free(ri->referer);
	free(ri->agent);
	ri->referer = NULL;
	ri->agent = NULL;
}

/* The head of the reply goes out now (the first time counts). */
void
v2_reqinfo_head(struct reqinfo *ri)
{
	if (ri->head_us == 0)
		ri->head_us = stats_now_us();
}

/* Milliseconds from arrival to the reply head, or -1 when none went. */
int64_t
v2_reqinfo_ttfb(const struct reqinfo *ri)
{
	return ri->head_us != 0 ? (int64_t)((ri->head_us - ri->t0_us) /
	    1000) : -1;
}

/* Milliseconds since the request arrived. */
int64_t
v2_reqinfo_ms(const struct reqinfo *ri)
{
	return (int64_t)((stats_now_us() - ri->t0_us) / 1000);
}

/*
 * Answer a request that has no exchange with an OCI error, and log it
 * under uri (NULL: the request's own).
 */
void
v2_quick_error(struct evhttp_request *req, const char *uri_log, int status,
    const char *code, const char *message)
{
	const struct evhttp_uri	*u = evhttp_request_get_evhttp_uri(req);
	struct access_entry	 e;
	struct reqinfo		 ri;
	enum stats_route	 route;
	char			 peer[64], *uri;

	/* Copies: evhttp may let go of the request once it is answered. */
	route = stats_route_of_path(u != NULL ? evhttp_uri_get_path(u) : NULL);
	v2_peer(req, peer, sizeof(peer));
	v2_reqinfo_init(&ri, req);
	uri = xstrdup(uri_log != NULL ? uri_log : evhttp_request_get_uri(req));
	memset(&e, 0, sizeof(e));
	e.peer = peer;
	e.method = v2_method_name(evhttp_request_get_command(req));
	e.uri = uri;
	e.protocol = ri.proto;
	e.status = status;
	e.ttfb_ms = 0;
	e.referer = ri.referer;
	e.user_agent = ri.agent;
	e.bytes = v2_error_reply(req, status, code, message, NULL, NULL,
	    NULL);
	log_access_entry(&e);
	stats_request(route, status, ri.t0_us, 0);
	free(uri);
	v2_reqinfo_clear(&ri);
}

/* The one place an exchange is freed, with its access-log line. */
void
exchange_close(struct exchange *ex, const char *why)
{
	struct access_entry	 e;

	CHECK_MAGIC(ex, EXCHANGE_MAGIC);
	memset(&e, 0, sizeof(e));
	e.peer = ex->peer;
	e.user = ex->user;
	e.method = v2_method_name(ex->method);
	e.uri = ex->uri;
	e.protocol = ex->info.proto;
	e.status = ex->status;
	e.bytes = ex->bytes;
	e.duration_ms = v2_reqinfo_ms(&ex->info);
	e.ttfb_ms = v2_reqinfo_ttfb(&ex->info);
	e.upstream = ex->rt.upstream != NULL ? ex->rt.upstream->cfg->name :
	    NULL;
	e.cache = ex->xcache;
	e.referer = ex->info.referer;
	e.user_agent = ex->info.agent;
	e.why = why;
	log_access_entry(&e);
	stats_request(stats_route_of_kind(ex->p.kind), ex->status,
	    ex->info.t0_us, ex->info.head_us);
	if (ex->ur != NULL)
		upreq_cancel(ex->ur);
	blob_src_free(ex);
	manifest_op_free(ex);
	if (ex->rt.upstream != NULL)
		upstream_unref(ex->rt.upstream);
	if (ex->client != NULL && ex->client->gone_arg == ex) {
		ex->client->gone_cb = NULL;
		ex->client->gone_arg = NULL;
	}
	v2_reqinfo_clear(&ex->info);
	free(ex->uri);
	free(ex->upath);
	secret_free(&ex->up_auth);
	free(ex->user);
	free(ex->challenge);
	ex->magic = 0;
	free(ex);
}

/* The client went away (evhttp is closing its connection). */
static void
exchange_client_gone(struct client *c, void *arg)
{
	struct exchange	*ex = arg;

	CHECK_MAGIC(ex, EXCHANGE_MAGIC);
	/* A request evhttp detached from the connection is ours to free;
	 * one still attached goes with the connection. */
	if (ex->req != NULL && evhttp_request_get_connection(ex->req) == NULL)
		evhttp_request_free(ex->req);
	ex->req = NULL;
	ex->client = NULL;
	c->gone_cb = NULL;
	c->gone_arg = NULL;
	exchange_close(ex, "client gone");
}

/* The whole reply is in evhttp's hands: the client no longer matters. */
void
exchange_replied(struct exchange *ex)
{
	v2_reqinfo_head(&ex->info);
	ex->req = NULL;
	if (ex->client != NULL) {
		ex->client->gone_cb = NULL;
		ex->client->gone_arg = NULL;
		ex->client = NULL;
	}
}

/* Everything is written: hand the end of the reply to evhttp. */
static void
v2_complete(struct exchange *ex)
{
	struct evhttp_request	*req = ex->req;

	/* Unhook first: ending the reply may close the connection, and
	 * the close callback must not find this exchange any more. */
	exchange_replied(ex);
	evhttp_send_reply_end(req);
	exchange_close(ex, NULL);
}

/*
 * evhttp's write callback for our chunks: resume a paused upstream, or end
 * the reply once the upstream is done.  On OpenSSL bufferevents this
 * callback is deferred and may run while bytes are queued again; it acts
 * only on an empty buffer.  The reply is ended from here (or when no chunk
 * awaits this callback) because ending it while a stale deferred callback
 * is pending would let evhttp finish early and drop the last bytes.
 */
static void
v2_written(struct evhttp_connection *evcon, void *arg)
{
	struct client		*c = arg;
	struct exchange		*ex;
	struct bufferevent	*bev = evhttp_connection_get_bufferevent(evcon);

	CHECK_MAGIC(c, CLIENT_MAGIC);
	if (c->gone_cb != exchange_client_gone)
		return;
	ex = c->gone_arg;
	CHECK_MAGIC(ex, EXCHANGE_MAGIC);
	if (evbuffer_get_length(bufferevent_get_output(bev)) != 0)
		return;
	ex->unwritten = 0;
	if (ex->finishing)
		v2_complete(ex);
	else if (ex->src != NULL)
		blob_pump(ex);
	else if (ex->paused && ex->ur != NULL) {
		ex->paused = 0;
		upreq_resume(ex->ur);
	}
}

/* The client's output buffer (for back-pressure decisions). */
struct evbuffer *
v2_output(struct exchange *ex)
{
	return bufferevent_get_output(evhttp_connection_get_bufferevent(
	    evhttp_request_get_connection(ex->req)));
}

/* Send the reply head: status and whatever output headers are set. */
void
v2_reply_start(struct exchange *ex, int status)
{
	ex->status = status;
	ex->started = 1;
	v2_reqinfo_head(&ex->info);
	if (ex->xcache != NULL)
		evhttp_add_header(evhttp_request_get_output_headers(ex->req),
		    "X-Cache", ex->xcache);
	evhttp_send_reply_start(ex->req, status, NULL);
}

/* Queue body bytes; v2_written runs once they are written. */
void
v2_send_chunk(struct exchange *ex, struct evbuffer *buf)
{
	ex->bytes += evbuffer_get_length(buf);
	ex->unwritten = 1;
	evhttp_send_reply_chunk_with_cb(ex->req, buf, v2_written, ex->client);
}

/* The body is all queued: end the reply now or from v2_written. */
void
v2_reply_finish(struct exchange *ex)
{
	if (!ex->unwritten)
		v2_complete(ex);
	else
		ex->finishing = 1;
}

/*
 * The body broke off after the head went out.  Close the connection
 * without finishing the reply so the client sees a short body, never a
 * complete-looking wrong one.
 */
void
v2_abort(struct exchange *ex, const char *why)
{
	struct evhttp_connection *evcon = ex->req != NULL ?
	    evhttp_request_get_connection(ex->req) : NULL;

	exchange_close(ex, why);	/* clears the gone hook first */
	if (evcon != NULL)
		evhttp_connection_free(evcon);
}

/* Answer with an OCI error and end the exchange (nothing sent yet). */
void
v2_fail(struct exchange *ex, int status, const char *code, const char *msg,
    const char *why)
{
	struct evhttp_request	*req = ex->req;

	ex->status = status;
	exchange_replied(ex);
	ex->bytes = v2_error_reply(req, status, code, msg, ex->xcache,
	    status == 401 && ex->challenge != NULL ? "WWW-Authenticate" : NULL,
	    ex->challenge);
	exchange_close(ex, why);
}

/*
 * Rewrite an upstream Link rel="next" (tags/list and referrers paging) so
 * the client comes back to us, under the name it used and with its ns=.
 */
static void
v2_rewrite_link(struct exchange *ex, const char *link,
    struct evkeyvalq *out)
{
	const char	*lt, *gt, *q;
	char		*v, *ns = NULL, path[V2_NAME_MAX + V2_DIGEST_MAX + 32];

	if ((ex->p.kind != V2_TAGS && ex->p.kind != V2_REFERRERS) ||
	    strstr(link, "rel=\"next\"") == NULL ||
	    (lt = strchr(link, '<')) == NULL ||
	    (gt = strchr(lt, '>')) == NULL)
		return;
	if (ex->p.kind == V2_TAGS)
		snprintf(path, sizeof(path), "/v2/%s/tags/list", ex->p.name);
	else
		snprintf(path, sizeof(path), "/v2/%s/referrers/%s",
		    ex->p.name, ex->p.ref);
	q = memchr(lt, '?', (size_t)(gt - lt));
	if (ex->ns[0] != '\0')
		ns = uri_escape(ex->ns);
	xasprintf(&v, "<%s%s%.*s%s%s>; rel=\"next\"", path,
	    q != NULL ? "" : (ns != NULL ? "?" : ""),
	    q != NULL ? (int)(gt - q) : 0, q != NULL ? q : "",
	    ns != NULL ? (q != NULL ? "&ns=" : "ns=") : "",
	    ns != NULL ? ns : "");
	evhttp_add_header(out, "Link", v);
	free(v);
	free(ns);
}

/*
 * The upstream's final answer: keep its status and the headers that
 * matter.  The reply itself starts with the first body bytes, or as a
 * whole when there is no body, so an upstream that fails before sending
 * any body still gets the client a clean 502.
 */
static void
v2_up_headers(struct upreq *ur, int status, struct evkeyvalq *h, void *arg)
{
	struct exchange		*ex = arg;
	struct evkeyvalq	*out;
	struct evkeyval		*kv;
	char			*ch;
	size_t			 i;

	CHECK_MAGIC(ex, EXCHANGE_MAGIC);
	if (ex->req == NULL)
		return;
	out = evhttp_request_get_output_headers(ex->req);
	v2_common_headers(ex->req);
	for (i = 0; v2_pass_headers[i] != NULL; i++)
		headers_copy(out, h, v2_pass_headers[i]);
	TAILQ_FOREACH(kv, h, next)
		if (strcasecmp(kv->key, "Link") == 0)
			v2_rewrite_link(ex, kv->value, out);
	if (ex->ns[0] != '\0')
		evhttp_add_header(out, "OCI-Namespace", ex->ns);
	if (status == 401 &&
	    ex->rt.upstream->cfg->cred_kind == CRED_PASSTHROUGH) {
		/* The client's own credentials: it may answer the upstream's
		 * challenge, through regcache's relay. */
		ch = upreq_on_origin(ur) ? pt_challenge(ex, h) : NULL;
		if (ch != NULL)
			evhttp_add_header(out, "WWW-Authenticate", ch);
		free(ch);
	} else if (status == 401)
		log_warnx("upstream %s: refused our credentials for %s",
		    ex->rt.upstream->cfg->name, ex->rt.name);
	/* evhttp answers an HTTP/1.0 keep-alive client with a length of 0
	 * when it has none: make such a reply close-delimited instead. */
	if (evhttp_find_header(out, "Content-Length") == NULL &&
	    ex->req->major == 1 && ex->req->minor == 0) {
		evhttp_remove_header(evhttp_request_get_input_headers(ex->req),
		    "Connection");
	}
	ex->status = status;
}

static void
v2_up_body(struct upreq *ur, struct evbuffer *data, void *arg)
{
	struct exchange		*ex = arg;

	CHECK_MAGIC(ex, EXCHANGE_MAGIC);
	if (ex->req == NULL || ex->method == EVHTTP_REQ_HEAD ||
	    evbuffer_get_length(data) == 0)
		return;
	if (!ex->started)
		v2_reply_start(ex, ex->status);
	/* Content only: an upstream's error body saves nobody anything. */
	if (ex->status >= 200 && ex->status < 300)
		stats.bytes_from_upstream += evbuffer_get_length(data);
	v2_send_chunk(ex, data);
	if (!ex->paused && evbuffer_get_length(v2_output(ex)) >
	    STREAM_HIGH_WATER) {
		ex->paused = 1;
		upreq_pause(ur);
	}
}

static void
v2_up_done(struct upreq *ur, enum up_error err, const char *cause, void *arg)
{
	struct exchange			*ex = arg;
	struct evhttp_request		*req;
	char				 msg[512];

	CHECK_MAGIC(ex, EXCHANGE_MAGIC);
	ex->ur = NULL;
	if (ex->req == NULL) {
		exchange_close(ex, NULL);
		return;
	}
	if (err == UP_OK) {
		req = ex->req;
		if (!ex->started) {
			/* No body: the whole reply in one go. */
			if (ex->xcache != NULL)
				evhttp_add_header(
				    evhttp_request_get_output_headers(req),
				    "X-Cache", ex->xcache);
			exchange_replied(ex);
			evhttp_send_reply(req, ex->status, NULL, NULL);
			exchange_close(ex, NULL);
		} else
			v2_reply_finish(ex);
		return;
	}
	log_warnx("upstream %s: %s %s: %s", ex->rt.upstream->cfg->name,
	    v2_method_name(ex->method), ex->rt.name, cause);
	if (!ex->started) {
		snprintf(msg, sizeof(msg), "upstream %s: %s",
		    ex->rt.upstream->cfg->name, cause);
		v2_fail(ex, err == UP_ERR_TIMEOUT ? 504 : 502, "UNAVAILABLE",
		    msg, up_error_str(err));
		return;
	}
	v2_abort(ex, up_error_str(err));
}

/* ns= as containerd sends it: a host name with an optional port. */
static int
v2_ns_valid(const char *ns)
{
	size_t	len = strlen(ns);

	return len > 0 && len < EXCHANGE_NS_MAX &&
	    strspn(ns, "abcdefghijklmnopqrstuvwxyz"
	    "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-:[]") == len;
}

/* Build the upstream path (with its query) for a parsed request. */
static int
v2_upstream_path(struct exchange *ex, const char *query, char **out,
    const char **code, const char **msg)
{
	char		 n[32], last[V2_TAG_MAX + 1], at[256];
	char		*e;
	const char	*kind;
	long		 nv;

	switch (ex->p.kind) {
	case V2_MANIFEST:
		kind = "manifests";
		break;
	case V2_BLOB:
		kind = "blobs";
		break;
	case V2_REFERRERS:
		kind = "referrers";
		break;
	case V2_TAGS:
		xasprintf(out, "/v2/%s/tags/list", ex->rt.name);
		if (query == NULL)
			return 0;
		if (uri_query_get(query, "n", n, sizeof(n)) == 0) {
			nv = strtol(n, &e, 10);
			if (*n == '\0' || *e != '\0' || nv < 0) {
				*code = "PAGINATION_NUMBER_INVALID";
				*msg = "invalid number of results requested";
				free(*out);
				*out = NULL;
				return 400;
			}
			e = *out;
			xasprintf(out, "%s?n=%ld", e, nv);
			free(e);
		}
		if (uri_query_get(query, "last", last, sizeof(last)) == 0) {
			if (!v2_tag_valid(last)) {
				*code = "TAG_INVALID";
				*msg = "invalid last tag";
				free(*out);
				*out = NULL;
				return 400;
			}
			e = *out;
			xasprintf(out, "%s%slast=%s", e,
			    strchr(e, '?') ? "&" : "?", last);
			free(e);
		}
		return 0;
	default:
		return 404;
	}
	xasprintf(out, "/v2/%s/%s/%s", ex->rt.name, kind, ex->p.ref);
	if (ex->p.kind == V2_REFERRERS && query != NULL &&
	    uri_query_get(query, "artifactType", at, sizeof(at)) == 0) {
		e = *out;
		char *esc = uri_escape(at);
		xasprintf(out, "%s?artifactType=%s", e, esc);
		free(esc);
		free(e);
	}
	return 0;
}

/*
 * Stream the request through to its upstream: the client's Accept lines,
 * Range and If-None-Match go along, the answer comes back as it arrives.
 */
void
v2_passthrough(struct exchange *ex)
{
	struct evkeyvalq	*in = evhttp_request_get_input_headers(ex->req);
	struct evkeyval		*kv;
	const char		*pass[] = { "Accept", "Range", "If-None-Match",
				    NULL };
	char			*scope;
	int			 i;

	xasprintf(&scope, "repository:%s:pull", ex->rt.name);
	ex->ur = upreq_new(ex->rt.upstream, ex->method, ex->upath, scope,
	    &v2_upreq_cb, ex);
	free(scope);
	upreq_set_auth(ex->ur, ex->up_auth);
	for (i = 0; pass[i] != NULL; i++)
		TAILQ_FOREACH(kv, in, next)
			if (strcasecmp(kv->key, pass[i]) == 0)
				upreq_add_header(ex->ur, pass[i], kv->value);
	upreq_start(ex->ur);
}

/* Serve a request from the cache or the upstream, access settled. */
void
v2_dispatch(struct exchange *ex)
{
	if (ex->p.kind == V2_BLOB && blob_handle(ex) == 0)
		return;
	if (ex->p.kind == V2_MANIFEST && manifest_handle(ex) == 0)
		return;
	v2_passthrough(ex);
}

/* "/v2/": the API is here, to those who may use it. */
void
v2_root_reply(struct exchange *ex)
{
	struct evhttp_request	*req = ex->req;
	struct evkeyvalq	*out = evhttp_request_get_output_headers(req);
	struct evbuffer		*b;

	if ((b = evbuffer_new()) == NULL)
		fatalx("%s: evbuffer_new", __func__);
	v2_common_headers(req);
	evhttp_add_header(out, "Content-Type", "application/json");
	evhttp_add_header(out, "Content-Length", "2");
	if (ex->method == EVHTTP_REQ_GET)
		evbuffer_add(b, "{}", 2);
	ex->status = 200;
	ex->bytes = ex->method == EVHTTP_REQ_GET ? 2 : 0;
	/* Unhooked from the client before evhttp may close it. */
	exchange_replied(ex);
	evhttp_send_reply(req, 200, "OK", b);
	evbuffer_free(b);
	exchange_close(ex, NULL);
}

/*
 * The version check clients start with, where they learn how to log in:
 * regcache's own challenge when it has users, else the default
 * upstream's (rewritten) when that one is pass-through.
 */
static void
v2_root(struct exchange *ex, struct client *c)
{
	const char	*code, *msg;
	int		 status, def = conf->default_upstream;

	if (conf->access != NULL) {
		if ((status = server_auth_authenticate(ex, &code, &msg)) != 0)
			v2_fail(ex, status, code, msg, NULL);
		else
			v2_root_reply(ex);
		return;
	}
	if (def >= 0 && upstream_get((size_t)def)->cfg->cred_kind ==
	    CRED_PASSTHROUGH) {
		ex->rt.upstream = upstream_get((size_t)def);
		ex->rt.upstream_index = def;
		upstream_ref(ex->rt.upstream);
		ex->client = c;
		c->gone_cb = exchange_client_gone;
		c->gone_arg = ex;
		if (pt_check(ex) == 0)
			return;
	}
	v2_root_reply(ex);
}

/* The evhttp callback for every request on every listener. */
void
v2_handle(struct evhttp_request *req, void *arg)
{
	const struct evhttp_uri	*uri = evhttp_request_get_evhttp_uri(req);
	enum evhttp_cmd_type	 m = evhttp_request_get_command(req);
	struct exchange		*ex;
	struct client		*c;
	const char		*path, *query, *code, *msg;
	char			 ns[EXCHANGE_NS_MAX];
	int			 status, has_ns = 0, pt;

	if ((c = server_client_get(req)) == NULL) {
		evhttp_send_error(req, 500, NULL);
		return;
	}
	if (c->gone_cb == exchange_client_gone &&
	    ((struct exchange *)c->gone_arg)->req == req)
		return;		/* evhttp calling again after an error */
	if (uri == NULL || (path = evhttp_uri_get_path(uri)) == NULL) {
		v2_quick_error(req, NULL, 400, "NAME_INVALID", "malformed URI");
		return;
	}
	query = evhttp_uri_get_query(uri);
	if (conf->access != NULL && strcmp(path, AUTH_TOKEN_PATH) == 0) {
		server_auth_token(req, c);
		return;
	}
	if (pt_relay_busy(c, req))
		return;		/* evhttp calling again after an error */
	if (strncmp(path, PT_RELAY_PATH, strlen(PT_RELAY_PATH)) == 0) {
		pt_relay(req, path + strlen(PT_RELAY_PATH), query);
		return;
	}
	if (m != EVHTTP_REQ_GET && m != EVHTTP_REQ_HEAD) {
		v2_quick_error(req, NULL, 405, "UNSUPPORTED",
		    "this registry is a read-only pull-through cache");
		return;
	}
	ex = xcalloc(1, sizeof(*ex));
	ex->magic = EXCHANGE_MAGIC;
	ex->id = exchange_next_id++;
	ex->method = m;
	ex->req = req;
	ex->uri = xstrdup(evhttp_request_get_uri(req));
	v2_peer(req, ex->peer, sizeof(ex->peer));
	v2_reqinfo_init(&ex->info, req);

	if ((status = v2_path_parse(path, &ex->p, &code, &msg)) != 0)
		goto fail;
	if (ex->p.kind == V2_ROOT) {
		v2_root(ex, c);
		return;
	}
	if (query != NULL && uri_query_get(query, "ns", ns, sizeof(ns)) == 0) {
		if (!v2_ns_valid(ns)) {
			status = 400;
			code = "NAME_INVALID";
			msg = "invalid ns parameter";
			goto fail;
		}
		has_ns = 1;
	}
	if ((status = route_resolve(upstream_all(), upstream_count(),
	    conf->default_upstream, has_ns ? ns : NULL, ex->p.name, &ex->rt,
	    &code, &msg)) != 0) {
		/* Who is not logged in learns nothing, not even that. */
		if (conf->access != NULL && server_auth_authenticate(ex, &code,
		    &msg) != 0)
			status = 401;
		goto fail;
	}
	/* Ours until exchange_close(), whatever a reload does. */
	upstream_ref(ex->rt.upstream);
	if (has_ns) {
		snprintf(ex->ns, sizeof(ex->ns), "%s", ns);
		ex->rt.ns = ex->ns;
	}
	/* A pass-through upstream decides itself, with the client's own
	 * credentials; regcache's users and rules are for the others. */
	pt = ex->rt.upstream->cfg->cred_kind == CRED_PASSTHROUGH;
	if (conf->access != NULL && !pt &&
	    ((status = server_auth_authenticate(ex, &code, &msg)) != 0 ||
	    (status = server_auth_authorize(ex, &code, &msg)) != 0))
		goto fail;
	if ((status = v2_upstream_path(ex, query, &ex->upath, &code,
	    &msg)) != 0)
		goto fail;
	ex->client = c;
	c->gone_cb = exchange_client_gone;
	c->gone_arg = ex;
	if (pt && pt_check(ex) == 0)
		return;
	v2_dispatch(ex);
	return;

 fail:
	if (has_ns && status == 404)
		log_info("refused unknown ns \"%s\"", ns);
	v2_fail(ex, status, code, msg, NULL);
}
