/*
 * Upstream requests: one logical request to a configured upstream, which
 * may take several HTTP exchanges (upstream_http.c) to answer: a bearer
 * token from the upstream's realm, a retry with it, redirects to other
 * hosts (where Authorization is never sent).  The caller sees only the
 * final response.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <openssl/crypto.h>

#include "regcache.h"

/* A token answer larger than this is not a token answer. */
#define TOKEN_BODY_MAX		(64 * 1024)

struct upreq {
	uint32_t		 magic;
	uint64_t		 id;
	struct upstream		*up;
	enum evhttp_cmd_type	 method;
	char			*path;		/* on the upstream, with query */
	char			*scope;		/* token scope, "" for none */
	struct evkeyvalq	 hdrs;		/* the caller's request headers */
	const struct upreq_cb	*cb;
	void			*arg;

	struct url		 target;	/* where the next exchange goes */
	int			 on_origin;	/* target is the upstream */
	int			 redirects;
	int			 auth_retried;
	int			 reauthed;	/* fresh credentials asked once */
	char			*client_auth;	/* pass-through: the client's */
	char			*sent_token;	/* bearer sent, to forget on 401 */
	uint64_t		 sent_gen;	/* our credentials sent, or 0 */
	struct cred_waiter	 cwait;		/* waiting for credentials */

	struct httpx		*x;		/* the exchange in flight */
	struct token_flight	*tfl;		/* the token request we wait on */
	TAILQ_ENTRY(upreq)	 tentry;

	int			 busy;
	int			 cancelled;
	int			 paused;
	int			 answered;	/* the last exchange got a head */
};

/*
 * One token request answers every upstream request that needs the same
 * token (realm, service, scope) at the same time: a burst of cold pulls
 * asks the token service once, not once per request.
 */
struct token_flight {
	TAILQ_ENTRY(token_flight) entry;
	struct upstream		*up;
	char			*key;
	struct httpx		*tx;
	struct evbuffer		*body;
	int			 failed;
	TAILQ_HEAD(, upreq)	 waiters;
};
static TAILQ_HEAD(, token_flight) token_flights =
    TAILQ_HEAD_INITIALIZER(token_flights);

static void	token_flight_free(struct token_flight *);

static struct upstream	**upstreams;
static size_t		 nupstreams;
static uint64_t		 upreq_next_id = 1;

static void	upreq_exchange(struct upreq *);
static void	upreq_on_headers(struct httpx *, int, struct evkeyvalq *,
		    void *);
static void	upreq_on_body(struct httpx *, struct evbuffer *, void *);
static void	upreq_on_done(struct httpx *, enum up_error, const char *,
		    void *);

static const struct httpx_cb upreq_httpx_cb = {
	upreq_on_headers, upreq_on_body, upreq_on_done
};

const char *
up_error_str(enum up_error e)
{
	switch (e) {
	case UP_OK:		return "ok";
	case UP_ERR_DNS:	return "dns";
	case UP_ERR_CONNECT:	return "connect";
	case UP_ERR_TLS:	return "tls";
	case UP_ERR_TIMEOUT:	return "timeout";
	case UP_ERR_RESET:	return "reset";
	case UP_ERR_PROTOCOL:	return "protocol";
	case UP_ERR_REDIRECTS:	return "redirects";
	case UP_ERR_AUTH:	return "auth";
	case UP_ERR_CANCELLED:	return "cancelled";
	case UP_ERR_INTERNAL:	return "internal";
	}
	return "unknown";
}

/*
 * A run-time upstream lives as long as something uses it: the current set
 * holds one reference, and so does every exchange routed to it, every
 * upreq and every token request.  A reload installs a new set; the old
 * upstreams finish what they were doing and go when the last user does,
 * taking their configuration with them.
 */
static struct upstream *
upstream_new(struct config *c, struct upstream_cfg *cfg, char *err,
    size_t errlen)
{
	struct upstream	*up;

	up = xcalloc(1, sizeof(*up));
	up->cfg = cfg;
	up->owner = c;
	up->refs = 1;
	c->refs++;
	TAILQ_INIT(&up->tokens);
	/* Every upstream gets one: realms and redirects may be https even
	 * when the upstream itself is not. */
	up->ssl_ctx = tls_client_ctx(cfg->ca_file, 0, cfg->tls_verify, err,
	    errlen);
	if (up->ssl_ctx != NULL)
		up->ssl_ctx_other = tls_client_ctx(cfg->ca_file, 1, 1, err,
		    errlen);
	if (up->ssl_ctx == NULL || up->ssl_ctx_other == NULL) {
		upstream_unref(up);
		return NULL;
	}
	cred_start(up);
	return up;
}

static void
upstream_free(struct upstream *up)
{
	cred_stop(up);
	free(up->pt_realm);
	auth_tokens_free(up);
	SSL_CTX_free(up->ssl_ctx);
	SSL_CTX_free(up->ssl_ctx_other);
	config_unref(up->owner);
	free(up);
}

void
upstream_ref(struct upstream *up)
{
	up->refs++;
}

void
upstream_unref(struct upstream *up)
{
	if (--up->refs == 0)
		upstream_free(up);
}

/*
 * The run-time upstreams of configuration c (TLS contexts, credentials),
 * not yet in use: upstream_install() puts them in place.
 */
struct upstream **
upstream_build(struct config *c, char *err, size_t errlen)
{
	struct upstream	**set;
	char		  msg[512];
	size_t		  i, k;

	set = xcalloc(c->nupstreams + 1, sizeof(*set));
	for (i = 0; i < c->nupstreams; i++) {
		if ((set[i] = upstream_new(c, &c->upstreams[i], msg,
		    sizeof(msg))) == NULL) {
			snprintf(err, errlen, "upstream %s: %s",
			    c->upstreams[i].name, msg);
			for (k = 0; k < i; k++)
				upstream_unref(set[k]);
			free(set);
			return NULL;
		}
	}
	return set;
}

/* Lets go of a set: one built for a reload that did not happen, or
 * the one a reload replaced. */
void
upstream_install_abort(struct upstream **set, size_t n)
{
	size_t	i;

	for (i = 0; i < n; i++)
		upstream_unref(set[i]);
	free(set);
}

/* Make set (of c) the upstreams new requests are routed to. */
void
upstream_install(struct upstream **set, size_t n)
{
	size_t	i, k;

	/* What an upstream learned and the same upstream (name and URL)
	 * will need again: a pass-through upstream's token realm, which
	 * clients that got a challenge before the reload still ask for. */
	for (i = 0; i < n; i++)
		for (k = 0; k < nupstreams; k++)
			if (upstreams[k]->pt_realm != NULL &&
			    set[i]->pt_realm == NULL &&
			    strcmp(upstreams[k]->cfg->name, set[i]->cfg->name) ==
			    0 && strcmp(upstreams[k]->cfg->url,
			    set[i]->cfg->url) == 0)
				set[i]->pt_realm = xstrdup(upstreams[k]->pt_realm);
	upstream_install_abort(upstreams, nupstreams);
	upstreams = set;
	nupstreams = n;
}

int
upstream_init(struct config *c)
{
	struct upstream	**set;
	char		  err[600];

	if ((set = upstream_build(c, err, sizeof(err))) == NULL) {
		log_warnx("%s", err);
		return -1;
	}
	upstream_install(set, c->nupstreams);
	return 0;
}

void
upstream_shutdown(void)
{
	struct token_flight	*fl;

	while ((fl = TAILQ_FIRST(&token_flights)) != NULL) {
		TAILQ_REMOVE(&token_flights, fl, entry);
		token_flight_free(fl);
	}
	httpx_pool_flush();
	upstream_install(NULL, 0);
}

struct upstream *
upstream_get(size_t i)
{
	return i < nupstreams ? upstreams[i] : NULL;
}

/* The current set, for route_resolve(). */
struct upstream *const *
upstream_all(void)
{
	return upstreams;
}

size_t
upstream_count(void)
{
	return nupstreams;
}

uint64_t
upreq_id(const struct upreq *ur)
{
	return ur->id;
}

/* Did the answer come from the upstream itself (not a redirect target)? */
int
upreq_on_origin(const struct upreq *ur)
{
	return ur->on_origin;
}

/* Is u the upstream's own scheme, host and port? */
static int
upreq_is_origin(const struct upstream *up, const struct url *u)
{
	return u->tls == up->cfg->tls && strcasecmp(u->host,
	    up->cfg->host) == 0 && strcmp(u->port, up->cfg->port) == 0;
}

/* The TLS context for a connection to u on behalf of up. */
static SSL_CTX *
upreq_ctx(const struct upstream *up, const struct url *u)
{
	return upreq_is_origin(up, u) ? up->ssl_ctx : up->ssl_ctx_other;
}

/* Point target at the upstream itself, path included. */
static void
upreq_target_origin(struct upreq *ur)
{
	struct upstream_cfg	*cfg = ur->up->cfg;

	url_clear(&ur->target);
	ur->target.tls = cfg->tls;
	ur->target.host = xstrdup(cfg->host);
	ur->target.port = xstrdup(cfg->port);
	xasprintf(&ur->target.path, "%s%s", cfg->base_path, ur->path);
	ur->on_origin = 1;
}

/*
 * A request to upstream up for path (which starts with /v2/), asking
 * tokens for scope (NULL for none).  Nothing happens before upreq_start.
 */
struct upreq *
upreq_new(struct upstream *up, enum evhttp_cmd_type method, const char *path,
    const char *scope, const struct upreq_cb *cb, void *arg)
{
	struct upreq	*ur;

	ur = xcalloc(1, sizeof(*ur));
	ur->magic = UPREQ_MAGIC;
	ur->id = upreq_next_id++;
	ur->up = up;
	upstream_ref(up);
	ur->method = method;
	ur->path = xstrdup(path);
	ur->scope = xstrdup(scope != NULL ? scope : "");
	ur->cb = cb;
	ur->arg = arg;
	TAILQ_INIT(&ur->hdrs);
	upreq_target_origin(ur);
	return ur;
}

void
upreq_add_header(struct upreq *ur, const char *name, const char *value)
{
	evhttp_add_header(&ur->hdrs, name, value);
}

/*
 * Sends the client's own Authorization value to the upstream (pass-through
 * mode) instead of regcache's; like regcache's, never to another host.
 */
void
upreq_set_auth(struct upreq *ur, const char *value)
{
	secret_free(&ur->client_auth);
	if (value != NULL)
		ur->client_auth = xstrdup(value);
}

void
upreq_start(struct upreq *ur)
{
	CHECK_MAGIC(ur, UPREQ_MAGIC);
	upreq_exchange(ur);
}

static void
upreq_free(struct upreq *ur)
{
	if (ur->x != NULL)
		httpx_cancel(ur->x);
	if (ur->tfl != NULL)
		TAILQ_REMOVE(&ur->tfl->waiters, ur, tentry);
	cred_unwait(ur->up, &ur->cwait);
	upstream_unref(ur->up);
	evhttp_clear_headers(&ur->hdrs);
	url_clear(&ur->target);
	secret_free(&ur->sent_token);
	secret_free(&ur->client_auth);
	free(ur->path);
	free(ur->scope);
	ur->magic = 0;
	free(ur);
}

/* The caller is gone: no callback runs after this. */
void
upreq_cancel(struct upreq *ur)
{
	CHECK_MAGIC(ur, UPREQ_MAGIC);
	if (ur->busy) {
		ur->cancelled = 1;
		return;
	}
	upreq_free(ur);
}

void
upreq_pause(struct upreq *ur)
{
	CHECK_MAGIC(ur, UPREQ_MAGIC);
	ur->paused = 1;
	if (ur->x != NULL)
		httpx_pause(ur->x);
}

void
upreq_resume(struct upreq *ur)
{
	CHECK_MAGIC(ur, UPREQ_MAGIC);
	ur->paused = 0;
	if (ur->x != NULL)
		httpx_resume(ur->x);
}

/* Tell the caller it is over, then free; the single exit of an upreq. */
static void
upreq_finish(struct upreq *ur, enum up_error err, const char *cause)
{
	stats_upstream_error(ur->up->cfg->name, err, ur->answered);
	ur->busy++;
	ur->cb->on_done(ur, err, cause, ur->arg);
	ur->busy--;
	upreq_free(ur);
}

/* "Basic base64(user:pass)", for an Authorization header; wipe it. */
static char *
basic_header(const char *user, const char *pass)
{
	char	*cred, *b64, *auth;

	xasprintf(&cred, "%s:%s", user, pass);
	b64 = base64_encode(cred, strlen(cred));
	xasprintf(&auth, "Basic %s", b64);
	OPENSSL_cleanse(cred, strlen(cred));
	OPENSSL_cleanse(b64, strlen(b64));
	free(cred);
	free(b64);
	return auth;
}

/* The credentials a request waited for are there, or will not come. */
static void
upreq_cred_ready(struct cred_waiter *w, int ok)
{
	struct upreq	*ur = w->arg;

	CHECK_MAGIC(ur, UPREQ_MAGIC);
	if (!ok) {
		upreq_finish(ur, UP_ERR_AUTH, "no usable upstream credentials");
		return;
	}
	upreq_exchange(ur);
}

static void
upreq_cred_wait(struct upreq *ur)
{
	ur->cwait.cb = upreq_cred_ready;
	ur->cwait.arg = ur;
	cred_wait(ur->up, &ur->cwait);
}

/* Start the next exchange towards ur->target with the right headers. */
static void
upreq_exchange(struct upreq *ur)
{
	struct evkeyvalq	 h;
	const char		*tok, *user, *pass;
	char			*auth = NULL;
	uint64_t		 gen;

	secret_free(&ur->sent_token);
	ur->sent_gen = 0;
	ur->answered = 0;
	/* Credentials go only to the upstream itself, never to a host a
	 * redirect named (S3 and CDNs reject or must not see them).  A
	 * pass-through upstream sees the client's, or none. */
	if (ur->on_origin && ur->up->cfg->cred_kind == CRED_PASSTHROUGH) {
		if (ur->client_auth != NULL)
			auth = xstrdup(ur->client_auth);
	} else if (ur->on_origin) {
		tok = auth_token_lookup(ur->up, ur->scope, time(NULL));
		if (tok != NULL) {
			xasprintf(&auth, "Bearer %s", tok);
			ur->sent_token = xstrdup(tok);
		} else if (ur->up->basic_known) {
			switch (cred_get(ur->up, &user, &pass, &gen)) {
			case 0:
				upreq_cred_wait(ur);
				return;
			case 1:
				auth = basic_header(user, pass);
				ur->sent_gen = gen;
				break;
			}
		}
	}
	TAILQ_INIT(&h);
	headers_copy(&h, &ur->hdrs, NULL);
	if (auth != NULL) {
		evhttp_add_header(&h, "Authorization", auth);
		OPENSSL_cleanse(auth, strlen(auth));
		free(auth);
	}
	/* No query in the log: presigned redirect URLs carry credentials. */
	log_debug("%s: upreq %llu: %s %s://%s:%s%.*s%s", __func__,
	    (unsigned long long)ur->id,
	    ur->method == EVHTTP_REQ_HEAD ? "HEAD" : "GET",
	    ur->target.tls ? "https" : "http", ur->target.host,
	    ur->target.port, (int)strcspn(ur->target.path, "?"),
	    ur->target.path, strchr(ur->target.path, '?') ? "?..." : "");
	ur->x = httpx_start(&ur->target, upreq_ctx(ur->up, &ur->target),
	    ur->method, &h, NULL, 0, &upreq_httpx_cb, ur);
	headers_wipe(&h);
	if (ur->paused)
		httpx_pause(ur->x);
}

static void
token_flight_free(struct token_flight *fl)
{
	if (fl->tx != NULL)
		httpx_cancel(fl->tx);
	evbuffer_wipe(fl->body);
	evbuffer_free(fl->body);
	upstream_unref(fl->up);
	free(fl->key);
	free(fl);
}

/* Token service answer collected: store the token and retry. */
static void
upreq_token_body(struct httpx *x, struct evbuffer *data, void *arg)
{
	struct token_flight	*fl = arg;

	if (evbuffer_get_length(fl->body) + evbuffer_get_length(data) >
	    TOKEN_BODY_MAX) {
		fl->failed = 1;
		return;
	}
	evbuffer_add_buffer(fl->body, data);
}

static void
upreq_token_headers(struct httpx *x, int status, struct evkeyvalq *h,
    void *arg)
{
	struct token_flight	*fl = arg;

	if (status != 200) {
		log_warnx("upstream %s: token service answered %d",
		    fl->up->cfg->name, status);
		fl->failed = 1;
	}
}

static void
upreq_token_done(struct httpx *x, enum up_error err, const char *cause,
    void *arg)
{
	struct token_flight	*fl = arg;
	struct token_response	 tr;
	struct upreq		*w;
	enum up_error		 werr = UP_OK;
	const char		*wcause = NULL;
	char			 e[256], *body;
	size_t			 blen;
	time_t			 expiry = 0;

	fl->tx = NULL;
	TAILQ_REMOVE(&token_flights, fl, entry);
	memset(&tr, 0, sizeof(tr));
	/* A copy to parse, wiped after: a pullup would leave copies. */
	body = evbuffer_take_secret(fl->body, &blen);
	if (err != UP_OK) {
		log_warnx("upstream %s: token service: %s", fl->up->cfg->name,
		    cause);
		werr = err == UP_ERR_TIMEOUT ? err : UP_ERR_AUTH;
		wcause = cause;
	} else if (fl->failed || auth_parse_token_response(body, blen, &tr, e,
	    sizeof(e)) == -1) {
		if (!fl->failed)
			log_warnx("upstream %s: %s", fl->up->cfg->name, e);
		werr = UP_ERR_AUTH;
		wcause = "token service refused";
	} else {
		expiry = auth_token_expiry(&tr, time(NULL));
		log_debug("%s: token for %s, %ld s, %s", __func__, fl->key,
		    tr.expires_in, TAILQ_EMPTY(&fl->waiters) ? "no waiter" :
		    "waking the waiters");
	}
	secret_buf_free(body, blen);
	stats_token_fetch(fl->up->cfg->name, werr == UP_OK);
	/* A waiter may cancel others from its callbacks: they leave the
	 * list themselves, so always take the first. */
	while ((w = TAILQ_FIRST(&fl->waiters)) != NULL) {
		TAILQ_REMOVE(&fl->waiters, w, tentry);
		w->tfl = NULL;
		if (werr != UP_OK) {
			upreq_finish(w, werr, wcause);
			continue;
		}
		auth_token_store(w->up, w->scope, tr.token, expiry);
		upreq_exchange(w);
	}
	auth_token_response_clear(&tr);
	token_flight_free(fl);
}

static const struct httpx_cb upreq_token_cb = {
	upreq_token_headers, upreq_token_body, upreq_token_done
};

/* Ask the challenge's realm for a token (Docker token spec). */
static int
upreq_fetch_token(struct upreq *ur, const struct auth_challenge *ch)
{
	struct upstream_cfg	*cfg = ur->up->cfg;
	struct evkeyvalq	 h;
	struct url		 u;
	char			*full, *svc = NULL, *scope = NULL;
	char			*auth, *key;
	const char		*user, *pass;
	struct token_flight	*fl;
	int			 have;
	const char		*want = ch->scope != NULL ? ch->scope :
				    ur->scope;

	if (ch->realm == NULL)
		return -1;
	if ((have = cred_get(ur->up, &user, &pass, NULL)) == 0) {
		/* Ask again, challenge and all, once they are in. */
		ur->auth_retried = 0;
		upreq_cred_wait(ur);
		return 0;
	}
	if (ch->service != NULL)
		svc = uri_escape(ch->service);
	if (*want != '\0')
		scope = uri_escape(want);
	xasprintf(&full, "%s%s%s%s%s%s", ch->realm,
	    strchr(ch->realm, '?') ? "&" : "?",
	    svc ? "service=" : "", svc ? svc : "",
	    scope ? (svc ? "&scope=" : "scope=") : "", scope ? scope : "");
	free(svc);
	free(scope);
	/* The token request is the same for everyone: join one in flight. */
	TAILQ_FOREACH(fl, &token_flights, entry) {
		if (fl->up == ur->up && strcmp(fl->key, full) == 0) {
			free(full);
			ur->tfl = fl;
			TAILQ_INSERT_TAIL(&fl->waiters, ur, tentry);
			return 0;
		}
	}
	if (url_parse(full, &u) == -1) {
		log_warnx("upstream %s: bad realm in challenge", cfg->name);
		free(full);
		return -1;
	}
	key = full;
	TAILQ_INIT(&h);
	if (have == 1 && cfg->tls && !u.tls)
		log_warnx("upstream %s: token realm is plain http: not "
		    "sending credentials", cfg->name);
	else if (have == 1) {
		auth = basic_header(user, pass);
		evhttp_add_header(&h, "Authorization", auth);
		OPENSSL_cleanse(auth, strlen(auth));
		free(auth);
	}
	evhttp_add_header(&h, "Accept", "application/json");
	fl = xcalloc(1, sizeof(*fl));
	fl->up = ur->up;
	upstream_ref(fl->up);
	fl->key = key;
	TAILQ_INIT(&fl->waiters);
	if ((fl->body = evbuffer_new()) == NULL)
		fatalx("%s: evbuffer_new", __func__);
	TAILQ_INSERT_TAIL(&token_flights, fl, entry);
	fl->tx = httpx_start(&u, upreq_ctx(ur->up, &u), EVHTTP_REQ_GET, &h,
	    NULL, 0, &upreq_token_cb, fl);
	headers_wipe(&h);
	url_clear(&u);
	ur->tfl = fl;
	TAILQ_INSERT_TAIL(&fl->waiters, ur, tentry);
	return 0;
}

/*
 * A 401 from the upstream: answer its challenge once (a token, or Basic
 * with the configured credentials).  Returns 1 when a retry is under way.
 */
static int
upreq_handle_401(struct upreq *ur, struct evkeyvalq *h)
{
	struct evkeyval		*kv;
	struct auth_challenge	 ch, bearer, basic;
	int			 have_bearer = 0, have_basic = 0, rc = 0;

	/* A pass-through client answers its challenges itself. */
	if (ur->auth_retried || !ur->on_origin ||
	    ur->up->cfg->cred_kind == CRED_PASSTHROUGH)
		return 0;
	memset(&bearer, 0, sizeof(bearer));
	memset(&basic, 0, sizeof(basic));
	TAILQ_FOREACH(kv, h, next) {
		if (strcasecmp(kv->key, "WWW-Authenticate") != 0 ||
		    auth_parse_challenge(kv->value, &ch) == -1)
			continue;
		if (strcasecmp(ch.scheme, "Bearer") == 0 && !have_bearer) {
			bearer = ch;
			have_bearer = 1;
		} else if (strcasecmp(ch.scheme, "Basic") == 0 &&
		    !have_basic) {
			basic = ch;
			have_basic = 1;
		} else
			auth_challenge_clear(&ch);
	}
	ur->auth_retried = 1;
	if (ur->sent_token != NULL)
		auth_token_forget(ur->up, ur->scope, ur->sent_token);
	if (have_bearer) {
		if (upreq_fetch_token(ur, &bearer) == 0)
			rc = 1;
	} else if (have_basic && cred_has(ur->up) && !ur->up->basic_known) {
		ur->up->basic_known = 1;
		rc = 1;
	}
	auth_challenge_clear(&bearer);
	auth_challenge_clear(&basic);
	return rc;
}

/*
 * The upstream refused regcache's own credentials (401, or 403 as ECR
 * says when a password expired): get fresh ones, once per request.
 * Returns 1 when a retry is under way.
 */
static int
upreq_reauth(struct upreq *ur)
{
	if (ur->sent_gen == 0 || ur->reauthed || !ur->on_origin)
		return 0;
	ur->reauthed = 1;
	switch (cred_reauth(ur->up, ur->sent_gen)) {
	case 1:
		return 1;
	case 0:
		upreq_cred_wait(ur);
		return 1;
	}
	return 0;
}

/* A 3xx with Location: follow it ourselves, without credentials. */
static int
upreq_handle_redirect(struct upreq *ur, int status, struct evkeyvalq *h)
{
	const char	*loc = evhttp_find_header(h, "Location");
	struct url	 u;
	char		*abs;

	if (loc == NULL)
		return 0;
	if (ur->redirects >= conf->max_redirects)
		return -1;
	abs = url_resolve(&ur->target, loc);
	if (url_parse(abs, &u) == -1) {
		free(abs);
		return -1;
	}
	free(abs);
	if (ur->target.tls && !u.tls) {
		/* A blob fetched over TLS is not re-fetched in the clear. */
		log_warnx("upstream %s: refusing a redirect from https to "
		    "http (host %s)", ur->up->cfg->name, u.host);
		url_clear(&u);
		return -1;
	}
	ur->redirects++;
	ur->on_origin = upreq_is_origin(ur->up, &u);
	url_clear(&ur->target);
	ur->target = u;
	if (status == 303 && ur->method != EVHTTP_REQ_HEAD)
		ur->method = EVHTTP_REQ_GET;
	log_debug("%s: upreq %llu: %d to %s host %s", __func__,
	    (unsigned long long)ur->id, status,
	    ur->on_origin ? "the same" : "another", u.host);
	return 1;
}

static void
upreq_on_headers(struct httpx *x, int status, struct evkeyvalq *h, void *arg)
{
	struct upreq	*ur = arg;
	int		 rc;

	CHECK_MAGIC(ur, UPREQ_MAGIC);
	stats_upstream_response(ur->up->cfg->name, status, h);
	ur->answered = 1;
	if ((status == 401 && (upreq_reauth(ur) ||
	    upreq_handle_401(ur, h))) || (status == 403 && upreq_reauth(ur))) {
		/* Drop this answer; the retry starts when the token or the
		 * credentials are in (or now). */
		httpx_cancel(x);
		ur->x = NULL;
		if (ur->tfl == NULL && !ur->cwait.queued)
			upreq_exchange(ur);
		return;
	}
	if (status == 301 || status == 302 || status == 303 ||
	    status == 307 || status == 308) {
		if ((rc = upreq_handle_redirect(ur, status, h)) == 1) {
			httpx_cancel(x);
			ur->x = NULL;
			upreq_exchange(ur);
			return;
		}
		if (rc == -1) {
			httpx_cancel(x);
			ur->x = NULL;
			upreq_finish(ur, UP_ERR_REDIRECTS,
			    "too many or bad redirects");
			return;
		}
	}
	ur->busy++;
	ur->cb->on_headers(ur, status, h, ur->arg);
	ur->busy--;
	if (ur->cancelled)
		upreq_free(ur);	/* cancels x: it checks its own busy flag */
}

static void
upreq_on_body(struct httpx *x, struct evbuffer *data, void *arg)
{
	struct upreq	*ur = arg;

	CHECK_MAGIC(ur, UPREQ_MAGIC);
	if (ur->cancelled)
		return;
	ur->busy++;
	ur->cb->on_body(ur, data, ur->arg);
	ur->busy--;
	if (ur->cancelled)
		upreq_free(ur);
}

static void
upreq_on_done(struct httpx *x, enum up_error err, const char *cause,
    void *arg)
{
	struct upreq	*ur = arg;

	CHECK_MAGIC(ur, UPREQ_MAGIC);
	ur->x = NULL;
	if (ur->cancelled)
		return;
	upreq_finish(ur, err, cause);
}
