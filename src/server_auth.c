/*
 * Local clients log in to regcache (the "auth" section).  This file is
 * regcache's own token service and what the pull API checks with it:
 *
 *	GET  /auth/token?service=regcache&scope=repository:NAME:pull...
 *	     with Basic credentials, or none for an anonymous token
 *	     (docker, skopeo, podman);
 *	POST /auth/token, an OAuth2 password grant in a form (containerd).
 *
 * The answer is an HS256 token (jwt.c) naming the user and the
 * repositories it may pull, by the names the client uses.  On /v2/ a
 * request without a valid token gets a 401 whose challenge points the
 * client at the token service; one whose token does not name the
 * repository gets a 401 with insufficient_scope; and once the request is
 * routed, the access rules (access.c) decide on the upstream-side name,
 * with a 403 when they say no.
 *
 * Passwords are checked on the users worker (users.c).  A token request
 * waiting for that check is a struct tokreq, found again by its id when
 * the answer comes back; if its client left meanwhile, it is gone and the
 * answer is dropped.  Passwords and tokens never reach a log line, and
 * the copies regcache makes are wiped.
 */
#include "config.h"

#include <sys/socket.h>
#include <sys/stat.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <event2/bufferevent_ssl.h>
#include <event2/http.h>
#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "regcache.h"

#define AUTH_SCOPES_MAX		32	/* repositories in one token */
#define AUTH_HOST_MAX		255
#define AUTH_HOST_CHARS		"abcdefghijklmnopqrstuvwxyz" \
				"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_:[]"
#define AUTH_FORM_TYPE		"application/x-www-form-urlencoded"
#define AUTH_BASIC_CHALLENGE	"Basic realm=\"" AUTH_SERVICE "\""

/* A token request, from its arrival to its answer. */
struct tokreq {
	uint32_t		 magic;
	uint64_t		 id;
	TAILQ_ENTRY(tokreq)	 entry;		/* while its password is checked */
	int			 queued;
	struct evhttp_request	*req;		/* NULL once answered or gone */
	struct client		*client;
	char			*user;		/* NULL: anonymous */
	json_t			*access;	/* what the token will grant */
	enum evhttp_cmd_type	 method;
	char			 peer[64];
	int			 status;
	uint64_t		 bytes;
	struct reqinfo		 info;		/* for the access log */
};

static TAILQ_HEAD(, tokreq)	 tokreqs = TAILQ_HEAD_INITIALIZER(tokreqs);
static uint64_t			 tokreq_next_id = 1;
static unsigned char		 sa_key[JWT_KEY_LEN];
static int			 sa_have_key;

static void	tokreq_client_gone(struct client *, void *);

/*
 * Start-up and reloads: the token key (made on first start), and warnings
 * about what looks wrong but need not stop the daemon.  The key lives in
 * the data directory, which a reload cannot change: once loaded it stays,
 * and a key that cannot be loaded never replaces the one in use.
 */
int
server_auth_init(struct config *cf)
{
	const struct access_cfg	*ac = cf->access;
	struct stat		 st;
	unsigned char		 key[sizeof(sa_key)];
	char			*path, err[512];
	size_t			 i, k;

	if (ac == NULL)
		return 0;
	if (!sa_have_key) {
		xasprintf(&path, "%s/token.key", cf->data_dir);
		if (jwt_key_load(path, key, sizeof(key), err,
		    sizeof(err)) == -1) {
			log_warnx("auth: token key: %s", err);
			OPENSSL_cleanse(key, sizeof(key));
			free(path);
			return -1;
		}
		free(path);
		memcpy(sa_key, key, sizeof(sa_key));
		OPENSSL_cleanse(key, sizeof(key));
		sa_have_key = 1;
	}
	if (stat(ac->htpasswd, &st) == 0 && (st.st_mode & S_IROTH))
		log_warnx("auth: %s is readable by others: chmod o-r it",
		    ac->htpasswd);
	for (i = 0; i < ac->nrules; i++)
		for (k = 0; k < ac->rules[i].nusers; k++)
			if (strcmp(ac->rules[i].users[k], "*") != 0 &&
			    users_find(ac->users, ac->nusers,
			    ac->rules[i].users[k]) == NULL)
				log_warnx("auth: rules[%zu] names user \"%s\", "
				    "who is not in %s", i,
				    ac->rules[i].users[k], ac->htpasswd);
	for (i = 0; i < ac->ngroups; i++)
		for (k = 0; k < ac->groups[i].nusers; k++)
			if (users_find(ac->users, ac->nusers,
			    ac->groups[i].users[k]) == NULL)
				log_warnx("auth: group \"%s\" lists user "
				    "\"%s\", who is not in %s",
				    ac->groups[i].name, ac->groups[i].users[k],
				    ac->htpasswd);
	log_info("auth: %zu user%s, %zu rule%s, tokens valid for %llds%s",
	    ac->nusers, ac->nusers == 1 ? "" : "s", ac->nrules,
	    ac->nrules == 1 ? "" : "s", (long long)ac->token_ttl_s,
	    access_anonymous_allowed(ac) ? ", anonymous pulls allowed" : "");
	return 0;
}

/* At exit, after the listeners (and so every token request) are gone. */
void
server_auth_shutdown(void)
{
	users_shutdown();
	OPENSSL_cleanse(sa_key, sizeof(sa_key));
	sa_have_key = 0;
}

/* Overwrites every value of a header list, then frees it. */
static void
sa_params_wipe(struct evkeyvalq *h)
{
	struct evkeyval	*kv;

	TAILQ_FOREACH(kv, h, next)
		OPENSSL_cleanse(kv->value, strlen(kv->value));
	evhttp_clear_headers(h);
}
/* Wipes evhttp's copy of the client's Authorization once it was read. */
static void
sa_wipe_authorization(struct evhttp_request *req)
{
	headers_wipe_value(evhttp_request_get_input_headers(req),
	    "Authorization");
}

/* Wipes a string and frees it. */
static void
sa_free_secret(char *s)
{
	if (s == NULL)
		return;
	OPENSSL_cleanse(s, strlen(s));
	free(s);
}

/*
 * The request came over TLS?  Listeners with TLS give evhttp OpenSSL
 * bufferevents (server.c), which is all this needs to know.
 */
static int
sa_is_tls(struct evhttp_request *req)
{
	struct evhttp_connection *evcon = evhttp_request_get_connection(req);

	return evcon != NULL && bufferevent_openssl_get_ssl(
	    evhttp_connection_get_bufferevent(evcon)) != NULL;
}

/*
 * The first element of a header that may list several ("a, b"), if it is
 * a plain host[:port] that can go inside a quoted challenge.
 */
static int
sa_header_host(struct evhttp_request *req, const char *name, char *out,
    size_t outlen)
{
	const char	*v;
	size_t		 n;

	v = evhttp_find_header(evhttp_request_get_input_headers(req), name);
	if (v == NULL)
		return -1;
	v += strspn(v, " \t");
	n = strcspn(v, ",");
	while (n > 0 && (v[n - 1] == ' ' || v[n - 1] == '\t'))
		n--;
	if (n == 0 || n > AUTH_HOST_MAX || n >= outlen ||
	    strspn(v, AUTH_HOST_CHARS) < n)
		return -1;
	memcpy(out, v, n);
	out[n] = '\0';
	return 0;
}

/* The address the client reached us at, from the socket: host:port. */
static void
sa_local_addr(struct evhttp_request *req, char *out, size_t outlen)
{
	struct evhttp_connection	*evcon;
	struct sockaddr_storage		 ss;
	socklen_t			 len = sizeof(ss);
	char				 a[INET6_ADDRSTRLEN];
	evutil_socket_t			 fd = -1;

	snprintf(out, outlen, "localhost");
	if ((evcon = evhttp_request_get_connection(req)) != NULL)
		fd = bufferevent_getfd(evhttp_connection_get_bufferevent(evcon));
	if (fd == -1 || getsockname(fd, (struct sockaddr *)&ss, &len) == -1)
		return;
	if (ss.ss_family == AF_INET) {
		struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
		if (inet_ntop(AF_INET, &sin->sin_addr, a, sizeof(a)) != NULL)
			snprintf(out, outlen, "%s:%u", a,
			    (unsigned)ntohs(sin->sin_port));
	} else if (ss.ss_family == AF_INET6) {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
		if (inet_ntop(AF_INET6, &sin6->sin6_addr, a, sizeof(a)) != NULL)
			snprintf(out, outlen, "[%s]:%u", a,
			    (unsigned)ntohs(sin6->sin6_port));
	}
}

/*
 * Where clients find the token service, as they see us: the scheme of
 * the listener or X-Forwarded-Proto, and X-Forwarded-Host, Host or the
 * socket's own address, whichever is the first to be usable.
 */
void
server_auth_origin(struct evhttp_request *req, char *out, size_t outlen)
{
	const char	*scheme = sa_is_tls(req) ? "https" : "http";
	char		 host[AUTH_HOST_MAX + 1], proto[8];

	if (sa_header_host(req, "X-Forwarded-Proto", proto,
	    sizeof(proto)) == 0) {
		if (strcasecmp(proto, "https") == 0)
			scheme = "https";
		else if (strcasecmp(proto, "http") == 0)
			scheme = "http";
	}
	if (sa_header_host(req, "X-Forwarded-Host", host, sizeof(host)) == -1 &&
	    sa_header_host(req, "Host", host, sizeof(host)) == -1)
		sa_local_addr(req, host, sizeof(host));
	snprintf(out, outlen, "%s://%s", scheme, host);
}

/*
 * The token service.
 */

/* The one place a token request is freed, with its access-log line. */
static void
tokreq_close(struct tokreq *t, const char *why)
{
	struct access_entry	 e;

	CHECK_MAGIC(t, TOKREQ_MAGIC);
	/* The path only: the query is the client's business. */
	memset(&e, 0, sizeof(e));
	e.peer = t->peer;
	e.user = t->user;
	e.method = v2_method_name(t->method);
	e.uri = AUTH_TOKEN_PATH;
	e.protocol = t->info.proto;
	e.status = t->status;
	e.bytes = t->bytes;
	e.duration_ms = v2_reqinfo_ms(&t->info);
	e.ttfb_ms = v2_reqinfo_ttfb(&t->info);
	e.referer = t->info.referer;
	e.user_agent = t->info.agent;
	e.why = why;
	log_access_entry(&e);
	v2_reqinfo_clear(&t->info);
	stats_request(STATS_ROUTE_TOKEN, t->status, t->info.t0_us,
	    t->info.head_us);
	if (t->queued)
		TAILQ_REMOVE(&tokreqs, t, entry);
	if (t->client != NULL && t->client->gone_arg == t) {
		t->client->gone_cb = NULL;
		t->client->gone_arg = NULL;
	}
	free(t->user);
	json_decref(t->access);
	t->magic = 0;
	free(t);
}

/* The client went away while its password was being checked. */
static void
tokreq_client_gone(struct client *c, void *arg)
{
	struct tokreq	*t = arg;

	CHECK_MAGIC(t, TOKREQ_MAGIC);
	/* As exchange_client_gone(): a detached request is ours to free. */
	if (t->req != NULL && evhttp_request_get_connection(t->req) == NULL)
		evhttp_request_free(t->req);
	t->req = NULL;
	t->client = NULL;
	c->gone_cb = NULL;
	c->gone_arg = NULL;
	tokreq_close(t, "client gone");
}

/* Takes the request away from the client hook before evhttp replies. */
static struct evhttp_request *
tokreq_take(struct tokreq *t)
{
	struct evhttp_request	*req = t->req;

	t->req = NULL;
	v2_reqinfo_head(&t->info);
	if (t->client != NULL && t->client->gone_arg == t) {
		t->client->gone_cb = NULL;
		t->client->gone_arg = NULL;
	}
	t->client = NULL;
	return req;
}

/* Answers with an OCI error (and one extra header) and ends the request. */
static void
tokreq_fail(struct tokreq *t, int status, const char *code, const char *msg,
    const char *hname, const char *hvalue)
{
	struct evhttp_request	*req = tokreq_take(t);

	t->status = status;
	t->bytes = v2_send_error_header(req, status, code, msg, hname, hvalue);
	tokreq_close(t, NULL);
}

/* Wrong credentials, or none where some are needed. */
static void
tokreq_unauthorized(struct tokreq *t)
{
	tokreq_fail(t, 401, "UNAUTHORIZED", "authentication required",
	    "WWW-Authenticate", AUTH_BASIC_CHALLENGE);
}

/*
 * Signs and sends the token: {"token", "access_token", "expires_in",
 * "issued_at"}.
 */
static void
tokreq_issue(struct tokreq *t)
{
	struct evhttp_request	*req = tokreq_take(t);
	struct evkeyvalq	*out = evhttp_request_get_output_headers(req);
	struct evbuffer		*b;
	unsigned char		 rnd[16];
	json_t			*claims, *reply;
	time_t			 now = time(NULL);
	struct tm		 tm;
	char			*token, *body, issued[32], jti[33], len[32];
	size_t			 i;
	json_int_t		 ttl = (json_int_t)conf->access->token_ttl_s;

	if (RAND_bytes(rnd, sizeof(rnd)) != 1)
		fatalx("%s: RAND_bytes failed", __func__);
	for (i = 0; i < sizeof(rnd); i++)
		snprintf(jti + 2 * i, 3, "%02x", rnd[i]);
	claims = json_pack("{s:s,s:s,s:s,s:I,s:I,s:I,s:s,s:O}",
	    "iss", AUTH_SERVICE, "sub", t->user != NULL ? t->user : "",
	    "aud", AUTH_SERVICE, "iat", (json_int_t)now, "nbf",
	    (json_int_t)now, "exp", (json_int_t)now + ttl, "jti", jti,
	    "access", t->access);
	if (claims == NULL)
		fatalx("%s: json", __func__);
	token = jwt_sign(sa_key, sizeof(sa_key), claims);
	json_decref(claims);
	gmtime_r(&now, &tm);
	strftime(issued, sizeof(issued), "%Y-%m-%dT%H:%M:%SZ", &tm);
	reply = json_pack("{s:s,s:s,s:I,s:s}", "token", token,
	    "access_token", token, "expires_in", ttl, "issued_at", issued);
	if (reply == NULL || (body = json_dumps(reply, JSON_COMPACT)) == NULL)
		fatalx("%s: json", __func__);
	json_string_wipe(reply, "token");
	json_string_wipe(reply, "access_token");
	json_decref(reply);
	sa_free_secret(token);

	evhttp_clear_headers(out);
	v2_common_headers(req);
	evhttp_add_header(out, "Content-Type", "application/json");
	evhttp_add_header(out, "Cache-Control", "no-store");
	snprintf(len, sizeof(len), "%zu", strlen(body));
	evhttp_add_header(out, "Content-Length", len);
	b = evbuffer_new();
	evbuffer_add(b, body, strlen(body));
	t->status = 200;
	t->bytes = strlen(body);
	evhttp_send_reply(req, 200, "OK", b);
	evbuffer_free(b);
	sa_free_secret(body);
	tokreq_close(t, NULL);
}

/* The users worker is done with a password: answer, if anyone waits. */
static void
server_auth_checked(uint64_t id, int ok)
{
	struct tokreq	*t;
	char		*user;

	TAILQ_FOREACH(t, &tokreqs, entry)
		if (t->id == id)
			break;
	if (t == NULL) {
		log_debug("%s: token request %llu: gone", __func__,
		    (unsigned long long)id);
		return;
	}
	CHECK_MAGIC(t, TOKREQ_MAGIC);
	/* A reload may have turned the users off meanwhile. */
	if (ok && conf->access != NULL) {
		tokreq_issue(t);
		return;
	}
	user = log_escape(t->user);
	log_info("auth: %s: login as \"%s\" failed", t->peer, user);
	free(user);
	tokreq_unauthorized(t);
}

/*
 * Adds the pull part of one scope, "repository:NAME:ACTIONS", to what
 * the token grants.  Other resource types and scopes without pull are
 * left out (pull is all regcache ever grants).  0, or -1 for a scope
 * that is malformed or one too many.
 */
static int
sa_scope_add(json_t *access, const char *scope, size_t len)
{
	const char	*colon, *last, *a;
	char		 name[V2_NAME_MAX + 1];
	size_t		 i, n;
	int		 pull = 0;

	if ((colon = memchr(scope, ':', len)) == NULL)
		return -1;
	for (last = scope + len - 1; last > colon && *last != ':'; last--)
		;
	if (last == colon)
		return -1;
	if ((size_t)(colon - scope) != strlen("repository") ||
	    strncmp(scope, "repository", (size_t)(colon - scope)) != 0)
		return 0;
	n = (size_t)(last - colon - 1);
	if (n == 0 || n > V2_NAME_MAX)
		return -1;
	memcpy(name, colon + 1, n);
	name[n] = '\0';
	if (!v2_name_valid(name))
		return -1;
	for (a = last + 1; a < scope + len; a += n + 1) {
		n = strcspn(a, ",");
		if (a + n > scope + len)
			n = (size_t)(scope + len - a);
		if ((n == 4 && strncmp(a, "pull", 4) == 0) ||
		    (n == 1 && *a == '*'))
			pull = 1;
	}
	if (!pull)
		return 0;
	for (i = 0; i < json_array_size(access); i++)
		if (strcmp(json_string_value(json_object_get(
		    json_array_get(access, i), "name")), name) == 0)
			return 0;
	if (json_array_size(access) >= AUTH_SCOPES_MAX)
		return -1;
	json_array_append_new(access, json_pack("{s:s,s:s,s:[s]}", "type",
	    "repository", "name", name, "actions", "pull"));
	return 0;
}

/* Adds every scope of a space-separated list. */
static int
sa_scopes_add(json_t *access, const char *list)
{
	size_t	 n;

	for (;;) {
		list += strspn(list, " ");
		if (*list == '\0')
			return 0;
		n = strcspn(list, " ");
		if (sa_scope_add(access, list, n) == -1)
			return -1;
		list += n;
	}
}

/*
 * The parameters of a token request: the query of a GET, the form body
 * of a POST.  The body is wiped from evhttp's buffer once read: it may
 * hold a password.
 */
static int
sa_params(struct evhttp_request *req, struct evkeyvalq *params,
    const char **why)
{
	const struct evhttp_uri	*uri = evhttp_request_get_evhttp_uri(req);
	struct evbuffer		*in;
	const char		*ct, *q;
	char			*body;
	size_t			 len;
	int			 rc;

	if (evhttp_request_get_command(req) == EVHTTP_REQ_GET) {
		q = uri != NULL ? evhttp_uri_get_query(uri) : NULL;
		if (q == NULL || *q == '\0')
			return 0;
		if (evhttp_parse_query_str(q, params) == -1) {
			*why = "malformed query";
			return -1;
		}
		return 0;
	}
	ct = evhttp_find_header(evhttp_request_get_input_headers(req),
	    "Content-Type");
	if (ct == NULL || strncasecmp(ct, AUTH_FORM_TYPE,
	    strlen(AUTH_FORM_TYPE)) != 0 || (ct[strlen(AUTH_FORM_TYPE)] !=
	    '\0' && ct[strlen(AUTH_FORM_TYPE)] != ';')) {
		*why = "the body must be " AUTH_FORM_TYPE;
		return -1;
	}
	in = evhttp_request_get_input_buffer(req);
	len = evbuffer_get_length(in);
	body = xcalloc(1, len + 1);
	if (len > 0)
		evbuffer_copyout(in, body, len);
	if (len > 0)
		OPENSSL_cleanse(evbuffer_pullup(in, -1), len);
	rc = memchr(body, '\0', len) != NULL ? -1 :
	    evhttp_parse_query_str(body, params);
	OPENSSL_cleanse(body, len);
	free(body);
	if (rc == -1)
		*why = "malformed form";
	return rc;
}

/*
 * The credentials of a token request: the form's username and password
 * for the OAuth2 password grant, or Basic.  0 with both set, 1 for none,
 * -1 for something that is not usable (answered with a 401).
 */
static int
sa_credentials(struct evhttp_request *req, struct evkeyvalq *params,
    char **user, char **pass)
{
	const char	*h, *u, *p;
	unsigned char	*raw;
	char		*colon;
	size_t		 len, n;
	int		 dec;

	*user = *pass = NULL;
	if (evhttp_request_get_command(req) == EVHTTP_REQ_POST) {
		u = evhttp_find_header(params, "username");
		p = evhttp_find_header(params, "password");
		if (u == NULL && p == NULL)
			return 1;
		if (u == NULL || p == NULL)
			return -1;
		*user = xstrdup(u);
		*pass = xstrdup(p);
		return 0;
	}
	h = evhttp_find_header(evhttp_request_get_input_headers(req),
	    "Authorization");
	if (h == NULL)
		return 1;
	if (strncasecmp(h, "Basic ", 6) != 0)
		return -1;
	h += 6;
	h += strspn(h, " ");
	len = strlen(h);
	if (len == 0 || len % 4 != 0 || len > 4 * (USERS_NAME_MAX +
	    USERS_PASSWORD_MAX + 3) / 3 + 4)
		return -1;
	raw = xcalloc(1, len / 4 * 3 + 1);
	dec = EVP_DecodeBlock(raw, (const unsigned char *)h, (int)len);
	if (dec < 0) {
		free(raw);
		return -1;
	}
	/* EVP_DecodeBlock counts the padding as zero bytes. */
	n = (size_t)dec;
	if (h[len - 1] == '=')
		n--;
	if (h[len - 2] == '=')
		n--;
	raw[n] = '\0';
	if (memchr(raw, '\0', n) != NULL ||
	    (colon = strchr((char *)raw, ':')) == NULL) {
		OPENSSL_cleanse(raw, n);
		free(raw);
		return -1;
	}
	*colon = '\0';
	*user = xstrdup((char *)raw);
	*pass = xstrdup(colon + 1);
	OPENSSL_cleanse(raw, n);
	free(raw);
	return 0;
}

/*
 * GET or POST /auth/token.  Parses the request, then answers at once
 * (anonymous, a recently checked password, or an error) or once the
 * users worker has checked the password.
 */
void
server_auth_token(struct evhttp_request *req, struct client *c)
{
	struct evkeyvalq	 params;
	struct evkeyval		*kv;
	struct tokreq		*t;
	const char		*v, *why = NULL;
	char			*user = NULL, *pass = NULL;
	int			 rc;

	if (c->gone_cb == tokreq_client_gone &&
	    ((struct tokreq *)c->gone_arg)->req == req)
		return;		/* evhttp calling again after an error */
	t = xcalloc(1, sizeof(*t));
	t->magic = TOKREQ_MAGIC;
	t->id = tokreq_next_id++;
	t->req = req;
	t->method = evhttp_request_get_command(req);
	v2_peer(req, t->peer, sizeof(t->peer));
	v2_reqinfo_init(&t->info, req);
	TAILQ_INIT(&params);

	if (t->method != EVHTTP_REQ_GET && t->method != EVHTTP_REQ_POST) {
		sa_wipe_authorization(req);
		tokreq_fail(t, 405, "UNSUPPORTED", "use GET or POST", "Allow",
		    "GET, POST");
		goto done;
	}
	if (sa_params(req, &params, &why) == -1) {
		sa_wipe_authorization(req);
		tokreq_fail(t, 400, "UNSUPPORTED", why, NULL, NULL);
		goto done;
	}
	/* The credentials first, so evhttp's copy is wiped at once. */
	rc = sa_credentials(req, &params, &user, &pass);
	sa_wipe_authorization(req);
	if (!sa_have_key) {
		tokreq_fail(t, 503, "UNAVAILABLE", "no token key", NULL, NULL);
		goto done;
	}
	if ((v = evhttp_find_header(&params, "service")) != NULL &&
	    strcmp(v, AUTH_SERVICE) != 0) {
		tokreq_fail(t, 400, "UNSUPPORTED", "unknown service: this "
		    "token service is \"" AUTH_SERVICE "\"", NULL, NULL);
		goto done;
	}
	if (t->method == EVHTTP_REQ_POST &&
	    ((v = evhttp_find_header(&params, "grant_type")) == NULL ||
	    strcmp(v, "password") != 0)) {
		/* No refresh tokens are issued; containerd then uses GET. */
		tokreq_fail(t, 400, "UNSUPPORTED", "unsupported grant_type: "
		    "only password is supported", NULL, NULL);
		goto done;
	}
	t->access = json_array();
	TAILQ_FOREACH(kv, &params, next) {
		if (strcmp(kv->key, "scope") != 0)
			continue;
		if (sa_scopes_add(t->access, kv->value) == -1) {
			tokreq_fail(t, 400, "NAME_INVALID", "invalid scope, or "
			    "too many scopes", NULL, NULL);
			goto done;
		}
	}

	if (rc == 1) {
		if (!access_anonymous_allowed(conf->access))
			tokreq_unauthorized(t);
		else
			tokreq_issue(t);
		goto done;
	}
	if (rc == -1 || !users_name_valid(user) ||
	    strlen(pass) > USERS_PASSWORD_MAX) {
		tokreq_unauthorized(t);
		goto done;
	}
	t->user = xstrdup(user);
	switch (users_verify(conf->access, user, pass, t->id,
	    server_auth_checked)) {
	case USERS_GOOD:
		tokreq_issue(t);
		break;
	case USERS_QUEUED:
		log_debug("%s: token request %llu: checking a password",
		    __func__, (unsigned long long)t->id);
		t->client = c;
		c->gone_cb = tokreq_client_gone;
		c->gone_arg = t;
		t->queued = 1;
		TAILQ_INSERT_TAIL(&tokreqs, t, entry);
		break;
	default:
		tokreq_fail(t, 429, "TOOMANYREQUESTS", "too many logins at "
		    "once; try again", "Retry-After", "1");
		break;
	}
 done:
	free(user);
	sa_free_secret(pass);
	sa_params_wipe(&params);
}

/*
 * Checks on the pull API.
 */

/* Sets the Bearer challenge of a 401 for this exchange. */
static void
sa_challenge(struct exchange *ex, const char *error)
{
	char	 origin[AUTH_HOST_MAX + 16], scope[V2_NAME_MAX + 32];

	server_auth_origin(ex->req, origin, sizeof(origin));
	scope[0] = '\0';
	if (ex->p.kind != V2_ROOT)
		snprintf(scope, sizeof(scope), ",scope=\"repository:%s:pull\"",
		    ex->p.name);
	free(ex->challenge);
	xasprintf(&ex->challenge, "Bearer realm=\"%s%s\",service=\"%s\"%s%s%s%s",
	    origin, AUTH_TOKEN_PATH, AUTH_SERVICE, scope,
	    error != NULL ? ",error=\"" : "", error != NULL ? error : "",
	    error != NULL ? "\"" : "");
}

/* Does a token's access claim grant pull of name? */
static int
sa_token_grants(json_t *claims, const char *name)
{
	json_t		*access = json_object_get(claims, "access"), *e, *a;
	const char	*s;
	size_t		 i, k;

	for (i = 0; i < json_array_size(access); i++) {
		e = json_array_get(access, i);
		if ((s = json_string_value(json_object_get(e, "type"))) ==
		    NULL || strcmp(s, "repository") != 0 ||
		    (s = json_string_value(json_object_get(e, "name"))) ==
		    NULL || strcmp(s, name) != 0)
			continue;
		a = json_object_get(e, "actions");
		for (k = 0; k < json_array_size(a); k++)
			if ((s = json_string_value(json_array_get(a, k))) !=
			    NULL && strcmp(s, "pull") == 0)
				return 1;
	}
	return 0;
}

/*
 * Is the request's bearer token valid, and does it name the repository
 * (by the client's name)?  0 with ex->user set, or 401 with the challenge
 * in ex->challenge.  Runs before routing: it needs only the path.
 */
int
server_auth_authenticate(struct exchange *ex, const char **code,
    const char **msg)
{
	const char	*h, *sub;
	json_t		*claims = NULL;
	int		 rc = 401;

	*code = "UNAUTHORIZED";
	h = evhttp_find_header(evhttp_request_get_input_headers(ex->req),
	    "Authorization");
	if (h == NULL || strncasecmp(h, "Bearer ", 7) != 0) {
		*msg = "authentication required";
		sa_challenge(ex, NULL);
		goto done;
	}
	h += 7;
	h += strspn(h, " ");
	if (!sa_have_key || jwt_verify(sa_key, sizeof(sa_key), h, time(NULL),
	    AUTH_SERVICE, AUTH_SERVICE, &claims) == -1 ||
	    (sub = json_string_value(json_object_get(claims, "sub"))) ==
	    NULL) {
		*msg = "invalid or expired token";
		sa_challenge(ex, "invalid_token");
		goto done;
	}
	if (ex->p.kind != V2_ROOT && !sa_token_grants(claims, ex->p.name)) {
		*msg = "the token does not grant pull of this repository";
		sa_challenge(ex, "insufficient_scope");
		goto done;
	}
	free(ex->user);
	ex->user = sub[0] != '\0' ? xstrdup(sub) : NULL;
	rc = 0;
 done:
	json_decref(claims);
	sa_wipe_authorization(ex->req);
	return rc;
}

/*
 * May the token's user pull the routed repository from the routed
 * upstream?  0, or 403 DENIED.
 */
int
server_auth_authorize(struct exchange *ex, const char **code,
    const char **msg)
{
	if (access_check(conf->access, ex->user, ex->rt.upstream->cfg->name,
	    ex->rt.name))
		return 0;
	log_debug("%s: exchange %llu: no rule lets %s pull %s from %s",
	    __func__, (unsigned long long)ex->id,
	    ex->user != NULL ? ex->user : "anonymous", ex->rt.name,
	    ex->rt.upstream->cfg->name);
	*code = "DENIED";
	*msg = "requested access to the resource is denied";
	return 403;
}
