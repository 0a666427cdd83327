/*
 * Pass-through auth: an upstream configured with "passthrough" sees each
 * client's own credentials, never regcache's.  Its challenges reach the
 * client with the realm pointing at regcache (/auth/passthrough/NAME),
 * token requests there are relayed to the upstream's realm with the
 * client's credentials, and the client's token goes upstream with its
 * requests.  Cached content is served to a client only after the upstream
 * said yes to that client for that repository: one HEAD with its
 * credentials, remembered no longer than the token lives.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "regcache.h"

#define PT_RELAY_MAGIC		0x7074726cu
#define PT_BODY_MAX		(64 * 1024)
/* Remember a yes this long when the token does not tell its lifetime. */
#define PT_DEFAULT_LIFE		60
/* And never longer than this. */
#define PT_MAX_LIFE		3600
#define PT_BUCKETS		1024
#define PT_MAX_ENTRIES		65536

/* One remembered fact, keyed by a hash: a yes, or a token's end. */
struct pt_entry {
	struct pt_entry		*next;
	unsigned char		 key[32];
	time_t			 until;
};

struct pt_table {
	struct pt_entry		*b[PT_BUCKETS];
	size_t			 n;
};

/* (upstream, repository, credentials) the upstream said yes to. */
static struct pt_table	pt_yes;
/* Tokens relayed through us, and when they end. */
static struct pt_table	pt_tokens;

/* A token request relayed to an upstream's realm. */
struct pt_relay {
	uint32_t		 magic;
	struct evhttp_request	*req;
	struct client		*client;
	struct upstream		*up;
	struct httpx		*x;
	struct evbuffer		*body;
	int			 status;
	int			 too_big;
	char			*ctype;
	char			*peer;
	char			*path;		/* for the access log */
	enum evhttp_cmd_type	 method;
	uint64_t		 bytes;
	struct reqinfo		 info;
};

static void
pt_hash(unsigned char out[32], const char *a, const char *b, const char *c)
{
	EVP_MD_CTX	*md = EVP_MD_CTX_new();

	if (md == NULL || EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1 ||
	    EVP_DigestUpdate(md, a, strlen(a) + 1) != 1 ||
	    EVP_DigestUpdate(md, b, strlen(b) + 1) != 1 ||
	    EVP_DigestUpdate(md, c, strlen(c) + 1) != 1 ||
	    EVP_DigestFinal_ex(md, out, NULL) != 1)
		fatalx("%s: sha256", __func__);
	EVP_MD_CTX_free(md);
}

/* When the entry for key ends, or 0 when there is none (or it ended). */
static time_t
pt_lookup(struct pt_table *t, const unsigned char key[32], time_t now)
{
	struct pt_entry	*e;
	unsigned	 i = (key[0] | key[1] << 8) % PT_BUCKETS;

	for (e = t->b[i]; e != NULL; e = e->next)
		if (CRYPTO_memcmp(e->key, key, 32) == 0)
			return e->until > now ? e->until : 0;
	return 0;
}

/* Drops what has ended; all of it when the table is still too full. */
static void
pt_prune(struct pt_table *t, time_t now, int all)
{
	struct pt_entry	**pp, *e;
	unsigned	 i;

	for (i = 0; i < PT_BUCKETS; i++)
		for (pp = &t->b[i]; (e = *pp) != NULL; ) {
			if (all || e->until <= now) {
				*pp = e->next;
				free(e);
				t->n--;
			} else
				pp = &e->next;
		}
}

static void
pt_store(struct pt_table *t, const unsigned char key[32], time_t until)
{
	struct pt_entry	*e;
	unsigned	 i = (key[0] | key[1] << 8) % PT_BUCKETS;
	time_t		 now = time(NULL);

	for (e = t->b[i]; e != NULL; e = e->next)
		if (CRYPTO_memcmp(e->key, key, 32) == 0) {
			e->until = until;
			return;
		}
	if (t->n >= PT_MAX_ENTRIES) {
		pt_prune(t, now, 0);
		if (t->n >= PT_MAX_ENTRIES)
			pt_prune(t, now, 1);
	}
	e = xcalloc(1, sizeof(*e));
	memcpy(e->key, key, 32);
	e->until = until;
	e->next = t->b[i];
	t->b[i] = e;
	t->n++;
}

void
pt_shutdown(void)
{
	pt_prune(&pt_yes, 0, 1);
	pt_prune(&pt_tokens, 0, 1);
}

/* The "exp" of a JWT bearer token, or 0 (tokens need not be JWTs). */
static time_t
pt_jwt_exp(const char *tok)
{
	const char	*a, *b;
	char		*seg, *json;
	size_t		 n, len, i;
	json_t		*j;
	time_t		 exp = 0;

	if ((a = strchr(tok, '.')) == NULL || (b = strchr(a + 1, '.')) ==
	    NULL)
		return 0;
	n = (size_t)(b - a - 1);
	seg = xstrndup(a + 1, n);
	for (i = 0; i < n; i++)
		if (seg[i] == '-')
			seg[i] = '+';
		else if (seg[i] == '_')
			seg[i] = '/';
	json = base64_decode(seg, &len);
	free(seg);
	if (json == NULL)
		return 0;
	if ((j = json_loadb(json, len, 0, NULL)) != NULL &&
	    json_is_integer(json_object_get(j, "exp")))
		exp = (time_t)json_integer_value(json_object_get(j, "exp"));
	json_decref(j);
	free(json);
	return exp;
}

/* Until when a yes for these credentials may be remembered. */
static time_t
pt_life(const char *auth, time_t now)
{
	unsigned char	 key[32];
	time_t		 until = 0;

	if (auth != NULL && strncasecmp(auth, "Bearer ", 7) == 0) {
		pt_hash(key, "token", auth + 7, "");
		if ((until = pt_lookup(&pt_tokens, key, now)) == 0)
			until = pt_jwt_exp(auth + 7);
	}
	if (until == 0)
		until = now + PT_DEFAULT_LIFE;
	if (until > now + PT_MAX_LIFE)
		until = now + PT_MAX_LIFE;
	return until;
}

/*
 * The challenge to send a client for an upstream's: Bearer ones get our
 * realm (the upstream's is kept for the relay), Basic ones our name.
 * NULL when the upstream sent none we understand.
 */
char *
pt_challenge(struct exchange *ex, struct evkeyvalq *upstream_headers)
{
	struct evkeyval		*kv;
	struct auth_challenge	 ch;
	struct upstream		*up = ex->rt.upstream;
	struct url		 u;
	char			 base[512], *out = NULL;

	TAILQ_FOREACH(kv, upstream_headers, next) {
		if (strcasecmp(kv->key, "WWW-Authenticate") != 0 ||
		    auth_parse_challenge(kv->value, &ch) == -1)
			continue;
		if (strcasecmp(ch.scheme, "Basic") == 0) {
			xasprintf(&out, "Basic realm=\"regcache\"");
		} else if (strcasecmp(ch.scheme, "Bearer") == 0 &&
		    ch.realm != NULL && url_parse(ch.realm, &u) == 0) {
			url_clear(&u);
			free(up->pt_realm);
			up->pt_realm = xstrdup(ch.realm);
			server_auth_origin(ex->req, base, sizeof(base));
			xasprintf(&out, "Bearer realm=\"%s/auth/passthrough/"
			    "%s\"%s%s%s%s%s%s%s%s%s", base, up->cfg->name,
			    ch.service ? ",service=\"" : "",
			    ch.service ? ch.service : "", ch.service ? "\"" : "",
			    ch.scope ? ",scope=\"" : "", ch.scope ? ch.scope : "",
			    ch.scope ? "\"" : "", ch.error ? ",error=\"" : "",
			    ch.error ? ch.error : "", ch.error ? "\"" : "");
		}
		auth_challenge_clear(&ch);
		if (out != NULL)
			break;
	}
	return out;
}

/*
 * A pass-through upstream's request: 1 when the upstream already said
 * yes to these credentials for this repository (go on), 0 when a HEAD
 * asks it now (v2_dispatch or an error follows).
 */
static void	pt_head_headers(struct upreq *, int, struct evkeyvalq *,
		    void *);
static void	pt_head_body(struct upreq *, struct evbuffer *, void *);
static void	pt_head_done(struct upreq *, enum up_error, const char *,
		    void *);
static const struct upreq_cb pt_head_cb = {
	pt_head_headers, pt_head_body, pt_head_done
};

int
pt_check(struct exchange *ex)
{
	struct evkeyvalq	*in = evhttp_request_get_input_headers(ex->req);
	struct evkeyval		*kv;
	const char		*auth = evhttp_find_header(in, "Authorization");
	unsigned char		 key[32];

	if (auth != NULL) {
		ex->up_auth = xstrdup(auth);
		headers_wipe_value(in, "Authorization");
	}
	/* Never from the cache, and registries refuse HEAD on them: they go
	 * upstream as they are, with the client's credentials. */
	if (ex->p.kind == V2_TAGS || ex->p.kind == V2_REFERRERS)
		return 1;
	if (ex->p.kind != V2_ROOT) {
		pt_hash(key, ex->rt.upstream->cfg->name, ex->rt.name,
		    ex->up_auth != NULL ? ex->up_auth : "");
		if (pt_lookup(&pt_yes, key, time(NULL)) != 0)
			return 1;
	}
	ex->ur = upreq_new(ex->rt.upstream, EVHTTP_REQ_HEAD,
	    ex->p.kind == V2_ROOT ? "/v2/" : ex->upath, NULL, &pt_head_cb, ex);
	upreq_set_auth(ex->ur, ex->up_auth);
	TAILQ_FOREACH(kv, in, next)
		if (strcasecmp(kv->key, "Accept") == 0)
			upreq_add_header(ex->ur, "Accept", kv->value);
	upreq_start(ex->ur);
	return 0;
}

static void
pt_head_headers(struct upreq *ur, int status, struct evkeyvalq *h, void *arg)
{
	struct exchange	*ex = arg;

	CHECK_MAGIC(ex, EXCHANGE_MAGIC);
	ex->status = status;
	free(ex->challenge);
	/* A challenge from a redirect target is not the upstream's. */
	ex->challenge = status == 401 && upreq_on_origin(ur) ?
	    pt_challenge(ex, h) : NULL;
}

static void
pt_head_body(struct upreq *ur, struct evbuffer *b, void *arg)
{
}

static void
pt_head_done(struct upreq *ur, enum up_error err, const char *cause,
    void *arg)
{
	struct exchange	*ex = arg;
	unsigned char	 key[32];
	time_t		 now = time(NULL);
	int		 status = ex->status;

	CHECK_MAGIC(ex, EXCHANGE_MAGIC);
	ex->ur = NULL;
	ex->status = 0;
	if (ex->req == NULL) {
		exchange_close(ex, "client gone");
		return;
	}
	if (err != UP_OK) {
		v2_fail(ex, err == UP_ERR_TIMEOUT ? 504 : 502, "UNAVAILABLE",
		    "the upstream cannot confirm access", cause);
		return;
	}
	if (status >= 200 && status < 300) {
		if (ex->p.kind == V2_ROOT) {
			v2_root_reply(ex);
			return;
		}
		pt_hash(key, ex->rt.upstream->cfg->name, ex->rt.name,
		    ex->up_auth != NULL ? ex->up_auth : "");
		pt_store(&pt_yes, key, pt_life(ex->up_auth, now));
		/* A HEAD of the digest's own path also says it is in there. */
		if (ex->p.kind == V2_BLOB || (ex->p.kind == V2_MANIFEST &&
		    ex->p.ref_is_digest))
			ex->xrepo_status = status;
		v2_dispatch(ex);
		return;
	}
	switch (status) {
	case 401:
		if (ex->challenge == NULL) {
			v2_fail(ex, 502, "UNAVAILABLE", "the upstream refused "
			    "without a challenge regcache can pass on", NULL);
			break;
		}
		v2_fail(ex, 401, "UNAUTHORIZED", "authentication required",
		    NULL);
		break;
	case 403:
		v2_fail(ex, 403, "DENIED", "requested access to the resource "
		    "is denied", NULL);
		break;
	case 404:
		v2_fail(ex, 404, ex->p.kind == V2_BLOB ? "BLOB_UNKNOWN" :
		    ex->p.kind == V2_MANIFEST ? "MANIFEST_UNKNOWN" :
		    "NAME_UNKNOWN", "not known upstream", NULL);
		break;
	case 429:
		v2_fail(ex, 429, "TOOMANYREQUESTS", "the upstream is rate "
		    "limiting", NULL);
		break;
	default:
		v2_fail(ex, 502, "UNAVAILABLE", "the upstream answered an "
		    "access check with an error", NULL);
		break;
	}
}

/*
 * The relay: /auth/passthrough/NAME, GET or the OAuth POST form, to the
 * upstream's realm with the client's Authorization and query or form.
 */
static void
pt_relay_free(struct pt_relay *r)
{
	stats_request(STATS_ROUTE_RELAY, r->status, r->info.t0_us,
	    r->info.head_us);
	if (r->x != NULL)
		httpx_cancel(r->x);
	if (r->client != NULL && r->client->gone_arg == r) {
		r->client->gone_cb = NULL;
		r->client->gone_arg = NULL;
	}
	evbuffer_wipe(r->body);
	evbuffer_free(r->body);
	upstream_unref(r->up);
	free(r->ctype);
	free(r->peer);
	free(r->path);
	v2_reqinfo_clear(&r->info);
	r->magic = 0;
	free(r);
}

static void
pt_relay_gone(struct client *c, void *arg)
{
	struct pt_relay	*r = arg;

	CHECK_MAGIC(r, PT_RELAY_MAGIC);
	if (r->req != NULL && evhttp_request_get_connection(r->req) == NULL)
		evhttp_request_free(r->req);
	r->req = NULL;
	r->client = NULL;
	c->gone_cb = NULL;
	c->gone_arg = NULL;
}

static void
pt_relay_headers(struct httpx *x, int status, struct evkeyvalq *h, void *arg)
{
	struct pt_relay	*r = arg;
	const char	*ct = evhttp_find_header(h, "Content-Type");

	r->status = status;
	if (ct != NULL)
		r->ctype = xstrdup(ct);
}

static void
pt_relay_body(struct httpx *x, struct evbuffer *data, void *arg)
{
	struct pt_relay	*r = arg;

	if (evbuffer_get_length(r->body) + evbuffer_get_length(data) >
	    PT_BODY_MAX) {
		r->too_big = 1;
		return;
	}
	evbuffer_add_buffer(r->body, data);
}

/* The relay's access-log line: the path only, never the query. */
static void
pt_relay_log(struct pt_relay *r, const char *why)
{
	struct access_entry	 e;

	memset(&e, 0, sizeof(e));
	e.peer = r->peer;
	e.method = v2_method_name(r->method);
	e.uri = r->path;
	e.protocol = r->info.proto;
	e.status = r->status;
	e.bytes = r->bytes;
	e.duration_ms = v2_reqinfo_ms(&r->info);
	e.ttfb_ms = v2_reqinfo_ttfb(&r->info);
	e.upstream = r->up->cfg->name;
	e.referer = r->info.referer;
	e.user_agent = r->info.agent;
	e.why = why;
	log_access_entry(&e);
}

static void
pt_relay_done(struct httpx *x, enum up_error err, const char *cause,
    void *arg)
{
	struct pt_relay		*r = arg;
	struct token_response	 tr;
	struct evkeyvalq	*out;
	unsigned char		 key[32];
	char			 e[128], len[32], *body;
	size_t			 blen;
	time_t			 now = time(NULL);

	CHECK_MAGIC(r, PT_RELAY_MAGIC);
	r->x = NULL;
	if (r->req == NULL) {
		pt_relay_log(r, "client gone");
		r->status = 0;		/* nobody got it (for the stats) */
		pt_relay_free(r);
		return;
	}
	if (err != UP_OK || r->too_big) {
		log_warnx("upstream %s: token relay: %s", r->up->cfg->name,
		    err != UP_OK ? cause : "answer too large");
		r->status = 502;
		v2_reqinfo_head(&r->info);
		r->bytes = v2_send_error(r->req, 502, "UNAVAILABLE",
		    "the upstream's token service failed");
		pt_relay_log(r, err != UP_OK ? up_error_str(err) :
		    "answer too large");
		pt_relay_free(r);
		return;
	}
	/* Learn how long the token lives, to remember yeses no longer. */
	memset(&tr, 0, sizeof(tr));
	body = evbuffer_take_secret(r->body, &blen);
	if (r->status == 200 && auth_parse_token_response(body, blen, &tr, e,
	    sizeof(e)) == 0) {
		pt_hash(key, "token", tr.token, "");
		pt_store(&pt_tokens, key, auth_token_expiry(&tr, now));
	}
	auth_token_response_clear(&tr);
	evbuffer_add(r->body, body, blen);
	secret_buf_free(body, blen);
	out = evhttp_request_get_output_headers(r->req);
	v2_common_headers(r->req);
	evhttp_add_header(out, "Content-Type", r->ctype != NULL ? r->ctype :
	    "application/json");
	evhttp_add_header(out, "Cache-Control", "no-store");
	if (r->status == 401)
		evhttp_add_header(out, "WWW-Authenticate",
		    "Basic realm=\"regcache\"");
	snprintf(len, sizeof(len), "%zu", evbuffer_get_length(r->body));
	evhttp_add_header(out, "Content-Length", len);
	r->bytes = evbuffer_get_length(r->body);
	v2_reqinfo_head(&r->info);
	evhttp_send_reply(r->req, r->status, NULL, r->body);
	pt_relay_log(r, NULL);
	pt_relay_free(r);
}

static const struct httpx_cb pt_relay_cb = {
	pt_relay_headers, pt_relay_body, pt_relay_done
};

/* Finds the pass-through upstream named in /auth/passthrough/NAME. */
static struct upstream *
pt_upstream(const char *name)
{
	size_t		 i;
	struct upstream	*up;

	for (i = 0; i < upstream_count(); i++) {
		up = upstream_get(i);
		if (strcmp(up->cfg->name, name) == 0 &&
		    up->cfg->cred_kind == CRED_PASSTHROUGH)
			return up;
	}
	return NULL;
}

/* Is req a relay's already (evhttp calls its callback again on errors)? */
int
pt_relay_busy(struct client *c, struct evhttp_request *req)
{
	return c->gone_cb == pt_relay_gone &&
	    ((struct pt_relay *)c->gone_arg)->req == req;
}

void
pt_relay(struct evhttp_request *req, const char *name, const char *query)
{
	struct evkeyvalq	*in = evhttp_request_get_input_headers(req);
	struct evkeyvalq	 h;
	enum evhttp_cmd_type	 m = evhttp_request_get_command(req);
	struct evbuffer		*form = evhttp_request_get_input_buffer(req);
	struct upstream		*up;
	struct pt_relay		*r;
	struct client		*c;
	struct url		 u;
	const char		*v;
	char			*full, *path, peer[64], *fbody = NULL;
	size_t			 flen = 0;

	/* Errors are logged under the path: the query is the client's. */
	xasprintf(&path, "%s%s", PT_RELAY_PATH, name);
	if ((up = pt_upstream(name)) == NULL) {
		v2_quick_error(req, path, 404, "NAME_UNKNOWN", "no "
		    "pass-through upstream of that name");
		free(path);
		return;
	}
	if (m != EVHTTP_REQ_GET && m != EVHTTP_REQ_POST) {
		v2_quick_error(req, path, 405, "UNSUPPORTED", "GET or POST");
		free(path);
		return;
	}
	if (up->pt_realm == NULL) {
		/* Only a challenge of the upstream names its realm. */
		v2_quick_error(req, path, 503, "UNAVAILABLE", "the upstream's "
		    "token service is not known yet: ask for the content "
		    "first");
		free(path);
		return;
	}
	if (evbuffer_get_length(form) > PT_BODY_MAX) {
		v2_quick_error(req, path, 413, "SIZE_INVALID",
		    "form too large");
		free(path);
		return;
	}
	xasprintf(&full, "%s%s%s", up->pt_realm, query == NULL ? "" :
	    strchr(up->pt_realm, '?') != NULL ? "&" : "?",
	    query == NULL ? "" : query);
	if (url_parse(full, &u) == -1) {
		free(full);
		v2_quick_error(req, path, 400, "UNSUPPORTED",
		    "bad token request");
		free(path);
		return;
	}
	free(full);
	if (up->cfg->tls && !u.tls) {
		/* The client's password would cross the network in clear. */
		url_clear(&u);
		v2_quick_error(req, path, 502, "UNAVAILABLE", "the upstream's "
		    "token service is plain http: not relaying credentials");
		free(path);
		return;
	}
	if ((c = server_client_get(req)) == NULL) {
		url_clear(&u);
		free(path);
		evhttp_send_error(req, 500, NULL);
		return;
	}
	r = xcalloc(1, sizeof(*r));
	r->magic = PT_RELAY_MAGIC;
	r->req = req;
	r->client = c;
	r->up = up;
	upstream_ref(up);
	r->method = m;
	r->path = path;
	v2_reqinfo_init(&r->info, req);
	v2_peer(req, peer, sizeof(peer));
	r->peer = xstrdup(peer);
	if ((r->body = evbuffer_new()) == NULL)
		fatalx("%s: evbuffer_new", __func__);
	c->gone_cb = pt_relay_gone;
	c->gone_arg = r;
	TAILQ_INIT(&h);
	if ((v = evhttp_find_header(in, "Authorization")) != NULL)
		evhttp_add_header(&h, "Authorization", v);
	if ((v = evhttp_find_header(in, "Content-Type")) != NULL &&
	    m == EVHTTP_REQ_POST)
		evhttp_add_header(&h, "Content-Type", v);
	evhttp_add_header(&h, "Accept", "application/json");
	/* The form may hold a password: copied out, evhttp's wiped. */
	if (m == EVHTTP_REQ_POST)
		fbody = evbuffer_take_secret(form, &flen);
	r->x = httpx_start(&u, up->ssl_ctx_other, m, &h, fbody, flen,
	    &pt_relay_cb, r);
	secret_buf_free(fbody, flen);
	headers_wipe(&h);
	headers_wipe_value(in, "Authorization");
	url_clear(&u);
}
