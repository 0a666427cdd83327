/*
 * A small HTTP/1.1 client for upstream registries, on bufferevents (plain
 * or OpenSSL) with evdns, and a keep-alive pool of idle connections.
 *
 * evhttp's client side is not used: it has no way to stop reading a
 * response body while a slow client drains (we need back-pressure so that
 * memory stays bounded whatever the blob size), and it reconnects an
 * OpenSSL bufferevent in a way that does not work (libevent issue 975).
 * Here one httpx is one request/response; a connection returns to the pool
 * only after a complete response on a keep-alive connection.
 */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/bufferevent_ssl.h>
#include <event2/dns.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "regcache.h"

#define HTTPX_MAGIC		0x68747078u
#define HTTPX_READ_HIGH		(256 * 1024)
#define HTTPX_MAX_LINE		8192

enum hx_state {
	HX_CONNECTING,
	HX_WAITING,		/* request written, no status line yet */
	HX_HEADERS,
	HX_BODY,
	HX_DONE
};

enum hx_body {
	HB_NONE,
	HB_LENGTH,
	HB_CHUNKED,
	HB_EOF
};

enum hx_chunk {
	HC_SIZE,
	HC_DATA,
	HC_DATA_END,
	HC_TRAILER
};

struct upconn {
	uint32_t		 magic;
	TAILQ_ENTRY(upconn)	 entry;
	char			*key;
	struct bufferevent	*bev;
	struct httpx		*x;		/* NULL while idle */
	int			 requests;	/* served on this connection */
	int			 pooled;	/* on the idle list */
};

struct httpx {
	uint32_t		 magic;
	struct upconn		*conn;
	const struct httpx_cb	*cb;
	void			*arg;
	struct url		 url;
	SSL_CTX			*ctx;
	enum evhttp_cmd_type	 method;
	struct evbuffer		*request;	/* serialized, kept for a retry */
	struct evbuffer		*body;
	struct event		*kick;		/* deferred work */
	struct event		*timer;		/* connect deadline */
	enum hx_state		 state;
	enum hx_body		 bmode;
	enum hx_chunk		 cstate;
	uint64_t		 remaining;
	int			 status;
	struct evkeyvalq	 headers;
	size_t			 hdrbytes;
	int			 keepalive;
	int			 paused;
	int			 busy;		/* inside a user callback */
	int			 cancelled;
	int			 retried;	/* stale pooled connection */
	int			 got_bytes;
	int			 eof;		/* upstream closed */
	enum up_error		 pending_err;	/* delivered by kick */
	char			 pending_cause[256];
};

TAILQ_HEAD(upconn_list, upconn);
static struct upconn_list	pool = TAILQ_HEAD_INITIALIZER(pool);

static void	httpx_conn_readcb(struct bufferevent *, void *);
static void	httpx_conn_eventcb(struct bufferevent *, short, void *);
static void	httpx_process(struct httpx *);
static void	httpx_fail(struct httpx *, enum up_error, const char *);
static int	httpx_connect(struct httpx *);

static void
tv_ms(struct timeval *tv, int ms)
{
	tv->tv_sec = ms / 1000;
	tv->tv_usec = (ms % 1000) * 1000;
}

static char *
pool_key(const struct url *u, SSL_CTX *ctx)
{
	char	*k;

	xasprintf(&k, "%s|%s|%s|%p", u->tls ? "https" : "http", u->host,
	    u->port, (void *)ctx);
	return k;
}

/* The one place a connection is freed. */
static void
upconn_close(struct upconn *c, const char *why)
{
	CHECK_MAGIC(c, UPCONN_MAGIC);
	log_debug("%s: %s: %s", __func__, c->key, why);
	if (c->pooled)
		TAILQ_REMOVE(&pool, c, entry);
	if (c->bev != NULL) {
		SSL *ssl = bufferevent_openssl_get_ssl(c->bev);
		if (ssl != NULL) {
			/* Tell the peer we are done (evhttp does not). */
			SSL_set_shutdown(ssl, SSL_RECEIVED_SHUTDOWN);
			SSL_shutdown(ssl);
		}
		bufferevent_free(c->bev);
	}
	free(c->key);
	c->magic = 0;
	free(c);
}

/* Anything on an idle connection (EOF, data, timeout) ends it. */
static void
pool_readcb(struct bufferevent *bev, void *arg)
{
	upconn_close(arg, "data on idle connection");
}

static void
pool_eventcb(struct bufferevent *bev, short what, void *arg)
{
	upconn_close(arg, what & BEV_EVENT_TIMEOUT ? "idle timeout" :
	    "closed while idle");
}

/* Put a connection whose response completed back in the pool. */
static void
pool_put(struct upconn *c)
{
	struct upconn	*o;
	struct timeval	 tv;
	int		 n = 0;

	TAILQ_FOREACH(o, &pool, entry)
		if (strcmp(o->key, c->key) == 0)
			n++;
	c->x = NULL;
	if (n >= DEFAULT_POOL_MAX_IDLE) {
		upconn_close(c, "pool full");
		return;
	}
	TAILQ_INSERT_HEAD(&pool, c, entry);
	c->pooled = 1;
	tv_ms(&tv, DEFAULT_POOL_IDLE_MS);
	bufferevent_setcb(c->bev, pool_readcb, NULL, pool_eventcb, c);
	bufferevent_set_timeouts(c->bev, &tv, NULL);
	bufferevent_enable(c->bev, EV_READ);
}

/* An idle connection for key, or NULL. */
static struct upconn *
pool_get(const char *key)
{
	struct upconn	*c;

	TAILQ_FOREACH(c, &pool, entry) {
		if (strcmp(c->key, key) == 0) {
			TAILQ_REMOVE(&pool, c, entry);
			c->pooled = 0;
			return c;
		}
	}
	return NULL;
}

/* Close every idle connection (at shutdown). */
void
httpx_pool_flush(void)
{
	struct upconn	*c;

	while ((c = TAILQ_FIRST(&pool)) != NULL)
		upconn_close(c, "shutdown");
}

static void
httpx_free(struct httpx *x)
{
	CHECK_MAGIC(x, HTTPX_MAGIC);
	if (x->conn != NULL) {
		x->conn->x = NULL;
		upconn_close(x->conn, "request abandoned");
		x->conn = NULL;
	}
	url_clear(&x->url);
	/* It holds the Authorization header we sent. */
	evbuffer_wipe(x->request);
	evbuffer_free(x->request);
	evbuffer_free(x->body);
	event_free(x->kick);
	event_free(x->timer);
	evhttp_clear_headers(&x->headers);
	x->magic = 0;
	free(x);
}

/*
 * User callbacks run through these: the user may cancel the request from
 * inside, which we notice on return.  Return -1 when x is gone.
 */
static int
httpx_call_headers(struct httpx *x)
{
	x->busy++;
	x->cb->on_headers(x, x->status, &x->headers, x->arg);
	x->busy--;
	if (x->cancelled) {
		httpx_free(x);
		return -1;
	}
	return 0;
}

static int
httpx_call_body(struct httpx *x)
{
	x->busy++;
	x->cb->on_body(x, x->body, x->arg);
	x->busy--;
	evbuffer_drain(x->body, evbuffer_get_length(x->body));
	if (x->cancelled) {
		httpx_free(x);
		return -1;
	}
	return 0;
}

/* Finish: the connection goes back to the pool or away, then on_done. */
static void
httpx_finish(struct httpx *x, enum up_error err, const char *cause)
{
	struct upconn	*c = x->conn;

	x->state = HX_DONE;
	if (c != NULL) {
		x->conn = NULL;
		/* Answered before our request was all sent (a refused
		 * POST, say): what is left of it must not go out ahead of
		 * the next request, so the connection is not reused. */
		if (err == UP_OK && x->keepalive && !x->eof &&
		    evbuffer_get_length(bufferevent_get_input(c->bev)) == 0 &&
		    evbuffer_get_length(bufferevent_get_output(c->bev)) == 0)
			pool_put(c);
		else {
			c->x = NULL;
			upconn_close(c, err == UP_OK ? "not keep-alive" :
			    up_error_str(err));
		}
	}
	x->busy++;
	x->cb->on_done(x, err, cause, x->arg);
	x->busy--;
	httpx_free(x);
}

static void
httpx_fail(struct httpx *x, enum up_error err, const char *cause)
{
	httpx_finish(x, err, cause);
}

/* Deliver an error from a later loop iteration (never from httpx_start). */
static void
httpx_fail_later(struct httpx *x, enum up_error err, const char *cause)
{
	x->pending_err = err;
	snprintf(x->pending_cause, sizeof(x->pending_cause), "%s", cause);
	event_active(x->kick, EV_TIMEOUT, 1);
}

static void
httpx_kick_cb(evutil_socket_t fd, short what, void *arg)
{
	struct httpx	*x = arg;

	CHECK_MAGIC(x, HTTPX_MAGIC);
	if (x->pending_err != UP_OK) {
		httpx_fail(x, x->pending_err, x->pending_cause);
		return;
	}
	httpx_process(x);
}

static void
httpx_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct httpx	*x = arg;

	CHECK_MAGIC(x, HTTPX_MAGIC);
	if (x->state == HX_CONNECTING)
		httpx_fail(x, UP_ERR_TIMEOUT, "connect timed out");
}

/* Write the request on a connected connection and wait for the answer. */
static void
httpx_send(struct httpx *x)
{
	struct upconn	*c = x->conn;
	struct timeval	 rd, wr;

	evtimer_del(x->timer);
	x->state = HX_WAITING;
	c->requests++;
	tv_ms(&rd, conf->first_byte_timeout_ms);
	tv_ms(&wr, conf->idle_timeout_ms);
	bufferevent_set_timeouts(c->bev, &rd, &wr);
	bufferevent_setcb(c->bev, httpx_conn_readcb, NULL, httpx_conn_eventcb,
	    c);
	/* Room for a whole response head, or reading would stall on one. */
	bufferevent_setwatermark(c->bev, EV_READ, 0,
	    HTTPX_READ_HIGH > (size_t)conf->max_header_bytes * 2 ?
	    HTTPX_READ_HIGH : (size_t)conf->max_header_bytes * 2);
	evbuffer_add_buffer_reference(bufferevent_get_output(c->bev),
	    x->request);
	bufferevent_enable(c->bev, EV_READ | EV_WRITE);
}

/* Start a new connection for x (DNS through evdns, then TCP, then TLS). */
static int
httpx_connect(struct httpx *x)
{
	struct upconn	*c;
	SSL		*ssl = NULL;
	struct timeval	 tv;
	int		 port = atoi(x->url.port);

	c = xcalloc(1, sizeof(*c));
	c->magic = UPCONN_MAGIC;
	c->key = pool_key(&x->url, x->ctx);
	c->x = x;
	x->conn = c;
	x->state = HX_CONNECTING;
	if (x->url.tls) {
		if ((ssl = SSL_new(x->ctx)) == NULL)
			return -1;
		/* SNI only for names; SSL_set1_host checks IPs too. */
		if (strchr(x->url.host, ':') == NULL &&
		    strspn(x->url.host, "0123456789.") != strlen(x->url.host))
			SSL_set_tlsext_host_name(ssl, x->url.host);
		if (SSL_set1_host(ssl, x->url.host) != 1) {
			SSL_free(ssl);
			return -1;
		}
		c->bev = bufferevent_openssl_socket_new(ev_base, -1, ssl,
		    BUFFEREVENT_SSL_CONNECTING,
		    BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
		/* A TLS stream cut without close_notify is an error, not an
		 * end of body: dirty shutdowns stay disallowed. */
	} else
		c->bev = bufferevent_socket_new(ev_base, -1,
		    BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
	if (c->bev == NULL) {
		if (ssl != NULL)
			SSL_free(ssl);
		return -1;
	}
	bufferevent_setcb(c->bev, httpx_conn_readcb, NULL, httpx_conn_eventcb,
	    c);
	tv_ms(&tv, conf->connect_timeout_ms);
	evtimer_add(x->timer, &tv);
	if (bufferevent_socket_connect_hostname(c->bev, dns_base, AF_UNSPEC,
	    x->url.host, port) == -1)
		return -1;
	return 0;
}

/*
 * Start one request.  headers are the request headers besides Host and
 * Content-Length; body (POST, PUT) is copied, the request is kept whole
 * for a retry on a fresh connection.  Callbacks never run before this
 * returns.  Returns NULL only when memory
 * or the event base fails.
 */
struct httpx *
httpx_start(const struct url *url, SSL_CTX *ctx, enum evhttp_cmd_type method,
    struct evkeyvalq *headers, const void *body, size_t bodylen,
    const struct httpx_cb *cb, void *arg)
{
	struct httpx	*x;
	struct evkeyval	*kv;
	struct upconn	*c;
	const char	*m = method == EVHTTP_REQ_HEAD ? "HEAD" :
			    method == EVHTTP_REQ_POST ? "POST" :
			    method == EVHTTP_REQ_PUT ? "PUT" : "GET";
	char		*key, *host;

	x = xcalloc(1, sizeof(*x));
	x->magic = HTTPX_MAGIC;
	x->cb = cb;
	x->arg = arg;
	x->ctx = ctx;
	x->method = method;
	x->url.tls = url->tls;
	x->url.host = xstrdup(url->host);
	x->url.port = xstrdup(url->port);
	x->url.path = xstrdup(url->path);
	TAILQ_INIT(&x->headers);
	x->request = evbuffer_new();
	x->body = evbuffer_new();
	x->kick = event_new(ev_base, -1, 0, httpx_kick_cb, x);
	x->timer = evtimer_new(ev_base, httpx_timer_cb, x);
	if (x->request == NULL || x->body == NULL || x->kick == NULL ||
	    x->timer == NULL)
		fatalx("%s: out of memory", __func__);

	host = url_host_header(url);
	evbuffer_add_printf(x->request, "%s %s HTTP/1.1\r\nHost: %s\r\n"
	    "User-Agent: %s/%s\r\n", m, url->path, host, REGCACHE_NAME,
	    PACKAGE_VERSION);
	free(host);
	if (headers != NULL)
		TAILQ_FOREACH(kv, headers, next)
			evbuffer_add_printf(x->request, "%s: %s\r\n", kv->key,
			    kv->value);
	if (body != NULL || method == EVHTTP_REQ_POST ||
	    method == EVHTTP_REQ_PUT)
		evbuffer_add_printf(x->request, "Content-Length: %zu\r\n",
		    bodylen);
	evbuffer_add(x->request, "\r\n", 2);
	if (bodylen > 0)
		evbuffer_add(x->request, body, bodylen);

	key = pool_key(url, ctx);
	c = pool_get(key);
	free(key);
	if (c != NULL) {
		c->x = x;
		x->conn = c;
		httpx_send(x);
	} else if (httpx_connect(x) == -1)
		httpx_fail_later(x, UP_ERR_CONNECT, "cannot create connection");
	return x;
}

/* Stop reading the response until httpx_resume (back-pressure). */
void
httpx_pause(struct httpx *x)
{
	CHECK_MAGIC(x, HTTPX_MAGIC);
	x->paused = 1;
	if (x->conn != NULL && x->state >= HX_HEADERS)
		bufferevent_disable(x->conn->bev, EV_READ);
}

void
httpx_resume(struct httpx *x)
{
	CHECK_MAGIC(x, HTTPX_MAGIC);
	if (!x->paused)
		return;
	x->paused = 0;
	if (x->conn != NULL)
		bufferevent_enable(x->conn->bev, EV_READ);
	/* Bytes may already sit in the input buffer: handle them soon. */
	event_active(x->kick, EV_TIMEOUT, 1);
}

/* The caller is gone: no callback will run, everything is released. */
void
httpx_cancel(struct httpx *x)
{
	CHECK_MAGIC(x, HTTPX_MAGIC);
	if (x->busy) {
		x->cancelled = 1;
		return;
	}
	httpx_free(x);
}

/* Parse the status line: "HTTP/1.x NNN[ reason]"; -1 otherwise. */
static int
httpx_status_line(struct httpx *x, const char *line)
{
	if (strncmp(line, "HTTP/1.", 7) != 0 ||
	    (line[7] != '0' && line[7] != '1') || line[8] != ' ' ||
	    line[9] < '1' || line[9] > '5' ||
	    line[10] < '0' || line[10] > '9' ||
	    line[11] < '0' || line[11] > '9' ||
	    (line[12] != '\0' && line[12] != ' '))
		return -1;
	x->status = (line[9] - '0') * 100 + (line[10] - '0') * 10 +
	    (line[11] - '0');
	x->keepalive = line[7] == '1';
	return 0;
}

/* Decide how the body is framed, from the status and the headers. */
static int
httpx_body_mode(struct httpx *x)
{
	const char	*te, *cl, *cn;
	struct evkeyval	*kv;
	char		*end, cl_copy[32];
	unsigned long long n;

	cn = evhttp_find_header(&x->headers, "Connection");
	if (cn != NULL && strcasestr(cn, "close") != NULL)
		x->keepalive = 0;
	if (cn != NULL && strcasestr(cn, "keep-alive") != NULL)
		x->keepalive = 1;
	if (x->method == EVHTTP_REQ_HEAD || x->status == 204 ||
	    x->status == 304 || x->status < 200) {
		x->bmode = HB_NONE;
		return 0;
	}
	te = evhttp_find_header(&x->headers, "Transfer-Encoding");
	cl = evhttp_find_header(&x->headers, "Content-Length");
	if (te != NULL) {
		if (strcasecmp(te, "chunked") != 0)
			return -1;
		x->bmode = HB_CHUNKED;
		x->cstate = HC_SIZE;
		/* A proxy must not pass both on (RFC 9112 6.3). */
		evhttp_remove_header(&x->headers, "Content-Length");
		return 0;
	}
	if (cl != NULL && strlen(cl) >= sizeof(cl_copy))
		return -1;
	if (cl != NULL)
		snprintf(cl_copy, sizeof(cl_copy), "%s", cl);
	if (cl != NULL) {
		/* Several lengths that differ would let an upstream frame the
		 * body one way for us and another for the client (RFC 9112
		 * 6.3): refuse them, and pass exactly one on. */
		TAILQ_FOREACH(kv, &x->headers, next)
			if (strcasecmp(kv->key, "Content-Length") == 0 &&
			    strcmp(kv->value, cl) != 0)
				return -1;
		while (evhttp_remove_header(&x->headers, "Content-Length") == 0)
			;
		evhttp_add_header(&x->headers, "Content-Length", cl_copy);
		cl = evhttp_find_header(&x->headers, "Content-Length");
		if (*cl < '0' || *cl > '9')
			return -1;
		errno = 0;
		n = strtoull(cl, &end, 10);
		if (errno != 0 || *end != '\0')
			return -1;
		x->bmode = n == 0 ? HB_NONE : HB_LENGTH;
		x->remaining = n;
		return 0;
	}
	x->bmode = HB_EOF;
	x->keepalive = 0;
	return 0;
}

/* Read header lines; returns 1 when complete, 0 for more, -1 on error. */
static int
httpx_read_headers(struct httpx *x, struct evbuffer *in)
{
	char	*line, *colon, *v;
	size_t	 len;

	while ((line = evbuffer_readln(in, &len, EVBUFFER_EOL_CRLF)) != NULL) {
		x->hdrbytes += len + 2;
		if (x->hdrbytes > (size_t)conf->max_header_bytes) {
			free(line);
			return -1;
		}
		if (x->state == HX_WAITING) {
			if (httpx_status_line(x, line) == -1) {
				free(line);
				return -1;
			}
			free(line);
			x->state = HX_HEADERS;
			continue;
		}
		if (len == 0) {
			free(line);
			if (x->status >= 100 && x->status < 200) {
				/* Interim response: the real one follows. */
				evhttp_clear_headers(&x->headers);
				x->state = HX_WAITING;
				continue;
			}
			return 1;
		}
		/* No folding, no empty name, no space before the colon. */
		if (*line == ' ' || *line == '\t' ||
		    (colon = strchr(line, ':')) == NULL || colon == line ||
		    colon[-1] == ' ' || colon[-1] == '\t') {
			free(line);
			return -1;
		}
		*colon = '\0';
		for (v = colon + 1; *v == ' ' || *v == '\t'; v++)
			;
		for (len = strlen(v); len > 0 &&
		    (v[len - 1] == ' ' || v[len - 1] == '\t'); len--)
			v[len - 1] = '\0';
		evhttp_add_header(&x->headers, line, v);
		free(line);
	}
	if (evbuffer_get_length(in) > (size_t)conf->max_header_bytes)
		return -1;
	return 0;
}

/* Move body bytes from the socket to the user, honouring pause. */
static int
httpx_read_body(struct httpx *x, struct evbuffer *in)
{
	char		*line, *end;
	size_t		 len, n;

	while (!x->paused && x->state == HX_BODY) {
		switch (x->bmode) {
		case HB_NONE:
			return 1;
		case HB_EOF:
			if ((len = evbuffer_get_length(in)) == 0)
				return 0;
			evbuffer_remove_buffer(in, x->body, len);
			if (httpx_call_body(x) == -1)
				return -2;
			break;
		case HB_LENGTH:
			if ((len = evbuffer_get_length(in)) == 0)
				return 0;
			n = len < x->remaining ? len : (size_t)x->remaining;
			evbuffer_remove_buffer(in, x->body, n);
			x->remaining -= n;
			if (httpx_call_body(x) == -1)
				return -2;
			if (x->remaining == 0)
				return 1;
			break;
		case HB_CHUNKED:
			switch (x->cstate) {
			case HC_SIZE:
				line = evbuffer_readln(in, &len,
				    EVBUFFER_EOL_CRLF);
				if (line == NULL)
					return evbuffer_get_length(in) >
					    HTTPX_MAX_LINE ? -1 : 0;
				errno = 0;
				x->remaining = strtoull(line, &end, 16);
				if (!isxdigit((unsigned char)line[0]) ||
				    (line[0] == '0' && (line[1] == 'x' ||
				    line[1] == 'X')) || errno != 0 ||
				    (*end != '\0' && *end != ';' &&
				    *end != ' ' && *end != '\t')) {
					free(line);
					return -1;
				}
				free(line);
				x->cstate = x->remaining == 0 ? HC_TRAILER :
				    HC_DATA;
				break;
			case HC_DATA:
				if ((len = evbuffer_get_length(in)) == 0)
					return 0;
				n = len < x->remaining ? len :
				    (size_t)x->remaining;
				evbuffer_remove_buffer(in, x->body, n);
				x->remaining -= n;
				if (x->remaining == 0)
					x->cstate = HC_DATA_END;
				if (httpx_call_body(x) == -1)
					return -2;
				break;
			case HC_DATA_END:
				if ((line = evbuffer_readln(in, &len,
				    EVBUFFER_EOL_CRLF)) == NULL)
					return evbuffer_get_length(in) > 2 ?
					    -1 : 0;
				free(line);
				if (len != 0)
					return -1;
				x->cstate = HC_SIZE;
				break;
			case HC_TRAILER:
				if ((line = evbuffer_readln(in, &len,
				    EVBUFFER_EOL_CRLF)) == NULL)
					return evbuffer_get_length(in) >
					    HTTPX_MAX_LINE ? -1 : 0;
				free(line);
				if (len == 0)
					return 1;
				break;
			}
			break;
		}
	}
	return 0;
}

/* Everything that happens when bytes arrive or a pause ends. */
static void
httpx_process(struct httpx *x)
{
	struct evbuffer	*in;
	struct timeval	 tv;
	int		 rc;

	if (x->conn == NULL || x->state == HX_CONNECTING ||
	    x->state == HX_DONE)
		return;
	in = bufferevent_get_input(x->conn->bev);
	if (evbuffer_get_length(in) > 0)
		x->got_bytes = 1;
	if (x->state == HX_WAITING || x->state == HX_HEADERS) {
		if ((rc = httpx_read_headers(x, in)) == -1) {
			httpx_fail(x, UP_ERR_PROTOCOL, "malformed response head");
			return;
		}
		if (rc == 0) {
			if (x->eof)
				httpx_fail(x, UP_ERR_RESET, "connection closed "
				    "before the end of the response head");
			return;
		}
		if (httpx_body_mode(x) == -1) {
			httpx_fail(x, UP_ERR_PROTOCOL, "unsupported framing");
			return;
		}
		x->state = HX_BODY;
		tv_ms(&tv, conf->idle_timeout_ms);
		bufferevent_set_timeouts(x->conn->bev, &tv, &tv);
		if (httpx_call_headers(x) == -1)
			return;
		if (x->paused)
			bufferevent_disable(x->conn->bev, EV_READ);
	}
	rc = httpx_read_body(x, in);
	if (rc == -2)
		return;		/* cancelled from a callback */
	if (rc == -1)
		httpx_fail(x, UP_ERR_PROTOCOL, "malformed chunked body");
	else if (rc == 1)
		httpx_finish(x, UP_OK, NULL);
	else if (x->eof && evbuffer_get_length(in) == 0) {
		if (x->bmode == HB_EOF)
			httpx_finish(x, UP_OK, NULL);
		else
			httpx_fail(x, UP_ERR_RESET,
			    "connection closed in the middle of the body");
	}
}

static void
httpx_conn_readcb(struct bufferevent *bev, void *arg)
{
	struct upconn	*c = arg;

	CHECK_MAGIC(c, UPCONN_MAGIC);
	if (c->x != NULL)
		httpx_process(c->x);
}

/* Why a connection failed, in a few words for the log and the client. */
static void
httpx_conn_error(struct upconn *c, short what, char *buf, size_t len,
    enum up_error *err)
{
	unsigned long	 e;
	int		 dnserr;

	if (what & BEV_EVENT_TIMEOUT) {
		*err = UP_ERR_TIMEOUT;
		snprintf(buf, len, "timed out %s", c->x->state ==
		    HX_WAITING ? "waiting for the response" :
		    "reading the response");
		return;
	}
	if ((dnserr = bufferevent_socket_get_dns_error(c->bev)) != 0) {
		*err = UP_ERR_DNS;
		snprintf(buf, len, "cannot resolve host: %s",
		    evutil_gai_strerror(dnserr));
		return;
	}
	if ((e = bufferevent_get_openssl_error(c->bev)) != 0) {
		char	s[200];

		*err = UP_ERR_TLS;
		ERR_error_string_n(e, s, sizeof(s));
		while (bufferevent_get_openssl_error(c->bev) != 0)
			;
		snprintf(buf, len, "TLS failure: %s", s);
		return;
	}
	if (c->x->state == HX_CONNECTING) {
		*err = UP_ERR_CONNECT;
		snprintf(buf, len, "connect failed: %s", errno ?
		    strerror(errno) : "connection refused");
		return;
	}
	*err = UP_ERR_RESET;
	snprintf(buf, len, "connection %s %s", what & BEV_EVENT_EOF ?
	    "closed" : "reset", c->x->state == HX_BODY ?
	    "in the middle of the body" : "before the response");
}

static void
httpx_conn_eventcb(struct bufferevent *bev, short what, void *arg)
{
	struct upconn	*c = arg;
	struct httpx	*x = c->x;
	enum up_error	 err;
	char		 cause[256];

	CHECK_MAGIC(c, UPCONN_MAGIC);
	CHECK_MAGIC(x, HTTPX_MAGIC);
	if (what & BEV_EVENT_CONNECTED) {
		httpx_send(x);
		return;
	}
	if ((what & BEV_EVENT_EOF) && (x->state == HX_BODY ||
	    (x->state != HX_CONNECTING &&
	    evbuffer_get_length(bufferevent_get_input(bev)) > 0))) {
		/* Bytes may still wait in the input buffer: httpx_process
		 * delivers them, then finishes or fails. */
		x->eof = 1;
		httpx_process(x);
		return;
	}
	if (x->state == HX_WAITING && !x->got_bytes && !x->retried &&
	    c->requests > 1 && !(what & BEV_EVENT_TIMEOUT)) {
		/* A pooled connection the upstream had already closed. */
		x->retried = 1;
		x->conn = NULL;
		c->x = NULL;
		upconn_close(c, "stale keep-alive connection");
		if (httpx_connect(x) == -1)
			httpx_fail_later(x, UP_ERR_CONNECT,
			    "cannot create connection");
		return;
	}
	httpx_conn_error(c, what, cause, sizeof(cause), &err);
	httpx_fail(x, err, cause);
}
