/*
 * The client-facing side: listeners (plain or TLS), one evhttp per
 * listener, and a record per client connection so that an exchange learns
 * when its client goes away and so the number of connections is bounded.
 */
#include "config.h"

#include <sys/resource.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/bufferevent_ssl.h>
#include <event2/listener.h>
#include <openssl/ssl.h>

#include "regcache.h"

#define CLIENT_BUCKETS		1024

struct listener {
	struct listen_cfg		*cfg;
	struct evhttp			*http;
	struct evhttp_bound_socket	*sock;
	SSL_CTX				*ssl_ctx;
};

static struct listener	*listeners;
static size_t		 nlisteners;
static LIST_HEAD(, client) client_hash[CLIENT_BUCKETS];
static int		 nclients;
static int		 accept_paused;
static int		 stopping;	/* listeners are being freed */
static int		 draining;	/* no new connections, none kept */
static struct event	*accept_retry;	/* after running out of fds */
static uint64_t		 client_next_id = 1;

static size_t
client_bucket(const struct evhttp_connection *evcon)
{
	uintptr_t	p = (uintptr_t)evcon;

	return (size_t)((p >> 4) ^ (p >> 14)) % CLIENT_BUCKETS;
}

/* Stop or restart accepting when the connection limit is reached. */
static void
server_accept_adjust(void)
{
	size_t	i;
	int	pause = draining || nclients >= conf->max_connections ||
		    (accept_retry != NULL && evtimer_pending(accept_retry, NULL));

	if (stopping || pause == accept_paused)
		return;
	accept_paused = pause;
	for (i = 0; i < nlisteners; i++) {
		struct evconnlistener *l =
		    evhttp_bound_socket_get_listener(listeners[i].sock);
		if (pause)
			evconnlistener_disable(l);
		else
			evconnlistener_enable(l);
	}
	if (draining)
		log_info("draining: not accepting connections");
	else if (pause)
		log_warnx("%d connections: not accepting more for now",
		    nclients);
	else
		log_info("accepting connections again");
}

/* evhttp is closing the connection: the one place a client is freed. */
static void
server_client_closecb(struct evhttp_connection *evcon, void *arg)
{
	struct client	*c = arg;

	CHECK_MAGIC(c, CLIENT_MAGIC);
	log_debug("%s: client %llu closed", __func__,
	    (unsigned long long)c->id);
	if (c->gone_cb != NULL)
		c->gone_cb(c, c->gone_arg);
	LIST_REMOVE(c, entry);
	c->magic = 0;
	free(c);
	nclients--;
	server_accept_adjust();
}

/* The record of the connection a request came on, made on first sight. */
struct client *
server_client_get(struct evhttp_request *req)
{
	struct evhttp_connection	*evcon;
	struct client			*c;
	size_t				 b;

	if ((evcon = evhttp_request_get_connection(req)) == NULL)
		return NULL;
	b = client_bucket(evcon);
	LIST_FOREACH(c, &client_hash[b], entry)
		if (c->evcon == evcon)
			return c;
	c = xcalloc(1, sizeof(*c));
	c->magic = CLIENT_MAGIC;
	c->id = client_next_id++;
	c->evcon = evcon;
	LIST_INSERT_HEAD(&client_hash[b], c, entry);
	evhttp_connection_set_closecb(evcon, server_client_closecb, c);
	nclients++;
	stats.connections_total++;
	server_accept_adjust();
	return c;
}

static void
server_accept_retry(evutil_socket_t fd, short what, void *arg)
{
	server_accept_adjust();
}

/*
 * accept() failed.  Out of file descriptors, the listener would otherwise
 * be woken at once for the same pending connection, forever: stop
 * accepting for a second instead.
 */
static void
server_accept_error(struct evconnlistener *l, void *arg)
{
	struct timeval	tv = { 1, 0 };
	int		err = EVUTIL_SOCKET_ERROR();

	if (err != EMFILE && err != ENFILE && err != ENOBUFS &&
	    err != ENOMEM) {
		log_warnx("accept: %s", evutil_socket_error_to_string(err));
		return;
	}
	if (!evtimer_pending(accept_retry, NULL))
		log_warnx("accept: %s; pausing for a second (%d clients)",
		    evutil_socket_error_to_string(err), nclients);
	evtimer_add(accept_retry, &tv);
	server_accept_adjust();
}

/* TLS listeners: each accepted socket gets an OpenSSL bufferevent. */
static struct bufferevent *
server_tls_bevcb(struct event_base *base, void *arg)
{
	struct listener		*l = arg;
	SSL			*ssl;
	struct bufferevent	*bev;

	if ((ssl = SSL_new(l->ssl_ctx)) == NULL)
		return NULL;
	bev = bufferevent_openssl_socket_new(base, -1, ssl,
	    BUFFEREVENT_SSL_ACCEPTING, BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
	if (bev == NULL)
		SSL_free(ssl);
	else
		bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
	return bev;
}

/*
 * Each client takes a descriptor and its upstream connection another:
 * raise the soft limit as far as the hard one allows, and say so when
 * max_connections cannot be honoured.
 */
static void
server_raise_nofile(struct config *c)
{
	struct rlimit	rl;
	rlim_t		want = (rlim_t)c->max_connections * 2 + 64;

	if (getrlimit(RLIMIT_NOFILE, &rl) == -1)
		return;
	if (rl.rlim_cur < want) {
		rl.rlim_cur = rl.rlim_max == RLIM_INFINITY || rl.rlim_max > want ?
		    want : rl.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &rl) == -1)
			log_warn("setrlimit(RLIMIT_NOFILE)");
		getrlimit(RLIMIT_NOFILE, &rl);
	}
	if (rl.rlim_cur < want)
		log_warnx("open file limit %llu is low for max_connections "
		    "%d: accept pauses when it runs out",
		    (unsigned long long)rl.rlim_cur, c->max_connections);
}

/* Create the evhttp of one listener and bind it. */
/* The settings of c that evhttp applies to new connections. */
static void
server_apply_limits(struct listener *l, const struct config *c)
{
	struct timeval	 tv;

	evhttp_set_max_headers_size(l->http, c->max_header_bytes);
	tv.tv_sec = c->client_timeout_ms / 1000;
	tv.tv_usec = (c->client_timeout_ms % 1000) * 1000;
	evhttp_set_timeout_tv(l->http, &tv);
}

static int
server_listen(struct listener *l)
{
	char		 err[512];

	if ((l->http = evhttp_new(ev_base)) == NULL)
		return -1;
	evhttp_set_gencb(l->http, v2_handle, l);
	evhttp_set_allowed_methods(l->http, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD |
	    EVHTTP_REQ_POST | EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE |
	    EVHTTP_REQ_PATCH | EVHTTP_REQ_OPTIONS);
	/* Pull requests have no body; push is refused before one is read. */
	evhttp_set_max_body_size(l->http, 64 * 1024);
	/* Content-Type is ours to set, from the upstream or the error. */
	evhttp_set_default_content_type(l->http, NULL);
	server_apply_limits(l, conf);
	if (l->cfg->cert_file != NULL) {
		l->ssl_ctx = tls_server_ctx(l->cfg->cert_file,
		    l->cfg->key_file, err, sizeof(err));
		if (l->ssl_ctx == NULL) {
			log_warnx("listen %s: %s", l->cfg->address, err);
			return -1;
		}
		evhttp_set_bevcb(l->http, server_tls_bevcb, l);
	}
	l->sock = evhttp_bind_socket_with_handle(l->http, l->cfg->host,
	    (uint16_t)atoi(l->cfg->port));
	if (l->sock == NULL) {
		log_warn("listen %s", l->cfg->address);
		return -1;
	}
	evconnlistener_set_error_cb(evhttp_bound_socket_get_listener(l->sock),
	    server_accept_error);
	log_info("listening on %s (%s)", l->cfg->address,
	    l->ssl_ctx != NULL ? "https" : "http");
	return 0;
}

int
server_start(struct config *c)
{
	size_t	i;

	for (i = 0; i < CLIENT_BUCKETS; i++)
		LIST_INIT(&client_hash[i]);
	stopping = 0;
	if ((accept_retry = evtimer_new(ev_base, server_accept_retry,
	    NULL)) == NULL)
		return -1;
	server_raise_nofile(c);
	listeners = xcalloc(c->nlistens, sizeof(*listeners));
	nlisteners = c->nlistens;
	for (i = 0; i < c->nlistens; i++) {
		listeners[i].cfg = &c->listens[i];
		if (server_listen(&listeners[i]) == -1)
			return -1;
	}
	return 0;
}

/*
 * Can c replace the running configuration's listeners?  Their addresses
 * and whether they speak TLS stay (a restart changes those); certificates
 * and keys are loaded anew here, into ctxs, for server_reload_commit().
 */
int
server_reload_prepare(const struct config *c, SSL_CTX ***ctxs, char *err,
    size_t errlen)
{
	char	 msg[512];
	size_t	 i;

	*ctxs = NULL;
	if (c->nlistens != nlisteners) {
		snprintf(err, errlen, "the listen addresses changed: that "
		    "needs a restart");
		return -1;
	}
	for (i = 0; i < nlisteners; i++)
		if (strcmp(c->listens[i].address,
		    listeners[i].cfg->address) != 0 ||
		    (c->listens[i].cert_file != NULL) !=
		    (listeners[i].ssl_ctx != NULL)) {
			snprintf(err, errlen, "listen \"%s\" changed: that "
			    "needs a restart", listeners[i].cfg->address);
			return -1;
		}
	*ctxs = xcalloc(nlisteners + 1, sizeof(**ctxs));
	for (i = 0; i < nlisteners; i++) {
		if (c->listens[i].cert_file == NULL)
			continue;
		(*ctxs)[i] = tls_server_ctx(c->listens[i].cert_file,
		    c->listens[i].key_file, msg, sizeof(msg));
		if ((*ctxs)[i] == NULL) {
			snprintf(err, errlen, "listen %s: %s",
			    c->listens[i].address, msg);
			server_reload_abort(*ctxs);
			*ctxs = NULL;
			return -1;
		}
	}
	return 0;
}

void
server_reload_abort(SSL_CTX **ctxs)
{
	size_t	i;

	if (ctxs == NULL)
		return;
	for (i = 0; i < nlisteners; i++)
		SSL_CTX_free(ctxs[i]);
	free(ctxs);
}

/*
 * c is the configuration now.  New TLS connections get the new
 * certificate; those open keep theirs (each SSL holds its context).
 */
void
server_reload_commit(struct config *c, SSL_CTX **ctxs)
{
	size_t	i;

	for (i = 0; i < nlisteners; i++) {
		listeners[i].cfg = &c->listens[i];
		if (ctxs[i] != NULL) {
			SSL_CTX_free(listeners[i].ssl_ctx);
			listeners[i].ssl_ctx = ctxs[i];
		}
		server_apply_limits(&listeners[i], c);
	}
	free(ctxs);
	server_raise_nofile(c);
	server_accept_adjust();
}

/*
 * Shutting down gently: no new connections, idle ones closed now, busy
 * ones closed after their answer (v2_common_headers says so).  Call it
 * again to close those that became idle; the caller waits for
 * server_client_count() to reach 0.
 */
void
server_drain(void)
{
	struct client		*c, *next;
	struct bufferevent	*bev;
	size_t			 i;

	if (!draining) {
		draining = 1;
		server_accept_adjust();
	}
	for (i = 0; i < CLIENT_BUCKETS; i++)
		for (c = LIST_FIRST(&client_hash[i]); c != NULL; c = next) {
			next = LIST_NEXT(c, entry);
			if (c->gone_cb != NULL)
				continue;	/* a request in flight */
			bev = evhttp_connection_get_bufferevent(c->evcon);
			if (bev != NULL && (evbuffer_get_length(
			    bufferevent_get_output(bev)) > 0 ||
			    evbuffer_get_length(bufferevent_get_input(bev)) > 0))
				continue;	/* an answer leaving, a request
						 * arriving: Connection: close
						 * ends it once answered */
			/* The close callback frees c. */
			evhttp_connection_free(c->evcon);
		}
}

int
server_draining(void)
{
	return draining;
}

/* Free every listener; evhttp_free closes their connections too. */
void
server_stop(void)
{
	size_t	i;

	/* evhttp_free frees the bound sockets before the connections, whose
	 * close callbacks must then leave the listeners alone. */
	stopping = 1;
	for (i = 0; i < nlisteners; i++) {
		if (listeners[i].http != NULL)
			evhttp_free(listeners[i].http);
		if (listeners[i].ssl_ctx != NULL)
			SSL_CTX_free(listeners[i].ssl_ctx);
	}
	free(listeners);
	listeners = NULL;
	nlisteners = 0;
	if (accept_retry != NULL)
		event_free(accept_retry);
	accept_retry = NULL;
}

int
server_client_count(void)
{
	return nclients;
}

/* Every listener is bound and taking connections (for /readyz). */
int
server_listening(void)
{
	size_t	i;

	/* Draining is not ready: load balancers should look elsewhere. */
	if (stopping || draining || nlisteners == 0)
		return 0;
	for (i = 0; i < nlisteners; i++)
		if (listeners[i].sock == NULL)
			return 0;
	return 1;
}
