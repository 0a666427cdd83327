/*
 * ECR registry credentials: AWS keys from the usual chain (environment,
 * shared credentials file, web identity through STS, EC2 IMDSv2), then
 * ECR's GetAuthorizationToken signed with them (aws_sigv4.c).  Every
 * network step is an httpx exchange on the loop; one ecr_fetch walks
 * them and calls back once.  Temporary AWS keys are kept in an aws_state
 * until shortly before they expire.  Secrets are never logged.
 */
#include "config.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/crypto.h>

#include "regcache.h"

#define AWS_BODY_MAX		(64 * 1024)
#define AWS_FETCH_MAGIC		0x61777366u
#define ECR_TARGET		"AmazonEC2ContainerRegistry_V20150921." \
				"GetAuthorizationToken"
#define ECR_DEFAULT_LIFE_MS	(12LL * 3600 * 1000)
#define IMDS_TOKEN_TTL		"21600"

/* A set of AWS keys; expires 0 for long-lived ones. */
struct aws_keys {
	char		*akid;
	char		*secret;
	char		*token;		/* NULL without a session */
	time_t		 expires;
	time_t		 obtained;
	const char	*source;
};

/* What one upstream keeps between fetches: temporary keys. */
struct aws_state {
	struct aws_keys	 keys;
};

enum fetch_step {
	STEP_IMDS_TOKEN,
	STEP_IMDS_ROLE,
	STEP_IMDS_KEYS,
	STEP_STS,
	STEP_ECR
};

struct ecr_fetch {
	uint32_t		 magic;
	struct upstream		*up;
	struct aws_state	*st;
	void			(*cb)(const struct ecr_token *, const char *,
				    void *);
	void			*arg;
	enum fetch_step		 step;
	struct httpx		*x;
	struct evbuffer		*body;
	int			 status;
	int			 too_big;
	char			*imds_token;
	char			*role;
	struct event		*later;		/* a failure found at once */
	char			 error[256];
};

static void	fetch_ecr(struct ecr_fetch *);
static void	fetch_done(struct ecr_fetch *, const struct ecr_token *,
		    const char *);

static void
keys_clear(struct aws_keys *k)
{
	free(k->akid);
	secret_free(&k->secret);
	secret_free(&k->token);
	memset(k, 0, sizeof(*k));
}

struct aws_state *
aws_state_new(void)
{
	return xcalloc(1, sizeof(struct aws_state));
}

void
aws_state_free(struct aws_state *st)
{
	if (st == NULL)
		return;
	keys_clear(&st->keys);
	free(st);
}

/* An endpoint must be an absolute http(s) URL. */
int
aws_endpoint_check(const char *what, const char *s, char *err, size_t errlen)
{
	struct url	 u;

	if (url_parse(s, &u) == -1) {
		snprintf(err, errlen, "ecr: %s is not an http or https URL",
		    what);
		return -1;
	}
	url_clear(&u);
	return 0;
}

static const char *
env(const char *name)
{
	const char	*v = getenv(name);

	return v != NULL && *v != '\0' ? v : NULL;
}

/* Temporary keys still good for a while (a margin before they end). */
static int
keys_fresh(const struct aws_keys *k, time_t now)
{
	time_t	 margin;

	if (k->akid == NULL || k->expires == 0)
		return 0;
	margin = (k->expires - k->obtained) / 2;
	if (margin > 300)
		margin = 300;
	return now < k->expires - margin;
}

/* The environment's keys, read anew each time (they may change). */
static int
keys_from_env(struct aws_keys *k)
{
	const char	*id = env("AWS_ACCESS_KEY_ID");
	const char	*secret = env("AWS_SECRET_ACCESS_KEY");
	const char	*tok = env("AWS_SESSION_TOKEN");

	if (id == NULL || secret == NULL)
		return 0;
	k->akid = xstrdup(id);
	k->secret = xstrdup(secret);
	k->token = tok != NULL ? xstrdup(tok) : NULL;
	k->source = "environment";
	return 1;
}

/* Trims blanks at both ends in place. */
static char *
trim(char *s)
{
	char	*e;

	while (*s == ' ' || *s == '\t')
		s++;
	e = s + strlen(s);
	while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r'))
		*--e = '\0';
	return s;
}

/*
 * The profile's keys in the shared credentials file (an INI file:
 * [profile] then aws_access_key_id, aws_secret_access_key and maybe
 * aws_session_token).  0 when the file or the profile is not there.
 */
static int
keys_from_file(struct aws_keys *k, const char *profile_cfg)
{
	const char	*path = env("AWS_SHARED_CREDENTIALS_FILE");
	const char	*home = env("HOME");
	const char	*profile = profile_cfg;
	char		 buf[1024], err[256], *text, *line, *next, *eq, *key;
	char		*id = NULL, *secret = NULL, *tok = NULL;
	size_t		 textlen;
	int		 in = 0;

	if (profile == NULL && (profile = env("AWS_PROFILE")) == NULL)
		profile = "default";
	if (path == NULL) {
		if (home == NULL)
			return 0;
		snprintf(buf, sizeof(buf), "%s/.aws/credentials", home);
		path = buf;
	}
	if (access(path, F_OK) == -1)
		return 0;
	if (secret_file_read("AWS shared credentials file", path, 1, &text,
	    &textlen, err, sizeof(err)) == -1) {
		log_warnx("%s", err);
		return 0;
	}
	for (line = text; line != NULL; line = next) {
		if ((next = strchr(line, '\n')) != NULL)
			*next++ = '\0';
		line = trim(line);
		if (*line == '[') {
			line[strcspn(line, "]")] = '\0';
			in = strcmp(trim(line + 1), profile) == 0;
			continue;
		}
		if (!in || *line == '#' || *line == ';' ||
		    (eq = strchr(line, '=')) == NULL)
			continue;
		*eq = '\0';
		key = trim(line);
		if (strcasecmp(key, "aws_access_key_id") == 0) {
			free(id);
			id = xstrdup(trim(eq + 1));
		} else if (strcasecmp(key, "aws_secret_access_key") == 0) {
			secret_free(&secret);
			secret = xstrdup(trim(eq + 1));
		} else if (strcasecmp(key, "aws_session_token") == 0) {
			secret_free(&tok);
			tok = xstrdup(trim(eq + 1));
		}
	}
	/* The parse cut it with NULs: wipe all of it, not up to the first. */
	secret_buf_free(text, textlen);
	if (id == NULL || secret == NULL || *id == '\0' || *secret == '\0') {
		free(id);
		secret_free(&secret);
		secret_free(&tok);
		return 0;
	}
	k->akid = id;
	k->secret = secret;
	k->token = tok;
	k->source = "shared credentials file";
	return 1;
}

/*
 * Walks the parts of an AWS reply.  A failure is not logged here: its
 * text goes to the fetch's error (no secret is ever in an error reply).
 */
static void
fetch_free(struct ecr_fetch *f)
{
	if (f->x != NULL)
		httpx_cancel(f->x);
	if (f->later != NULL)
		event_free(f->later);
	if (f->body != NULL) {
		evbuffer_wipe(f->body);
		evbuffer_free(f->body);
	}
	secret_free(&f->imds_token);
	free(f->role);
	f->magic = 0;
	free(f);
}

static void
fetch_done(struct ecr_fetch *f, const struct ecr_token *t, const char *err)
{
	f->cb(t, err, f->arg);
	fetch_free(f);
}

static void
fetch_later_cb(evutil_socket_t fd, short ev, void *arg)
{
	struct ecr_fetch	*f = arg;

	fetch_done(f, NULL, f->error);
}

/* Fails the fetch from the loop, never from inside ecr_fetch_start. */
static void __attribute__((format(printf, 2, 3)))
fetch_fail_later(struct ecr_fetch *f, const char *fmt, ...)
{
	va_list	 ap;

	va_start(ap, fmt);
	vsnprintf(f->error, sizeof(f->error), fmt, ap);
	va_end(ap);
	if (f->later == NULL &&
	    (f->later = evtimer_new(ev_base, fetch_later_cb, f)) == NULL)
		fatalx("%s: evtimer_new", __func__);
	event_active(f->later, EV_TIMEOUT, 1);
}

static void
fetch_on_headers(struct httpx *x, int status, struct evkeyvalq *h, void *arg)
{
	struct ecr_fetch	*f = arg;

	f->status = status;
}

static void
fetch_on_body(struct httpx *x, struct evbuffer *data, void *arg)
{
	struct ecr_fetch	*f = arg;

	if (evbuffer_get_length(f->body) + evbuffer_get_length(data) >
	    AWS_BODY_MAX) {
		f->too_big = 1;
		return;
	}
	evbuffer_add_buffer(f->body, data);
}

static void	fetch_on_done(struct httpx *, enum up_error, const char *,
		    void *);

static const struct httpx_cb fetch_httpx_cb = {
	fetch_on_headers, fetch_on_body, fetch_on_done
};

/* One HTTP exchange of the walk, to base + path. */
static int
fetch_send(struct ecr_fetch *f, enum fetch_step step, const char *base,
    const char *path, enum evhttp_cmd_type method, struct evkeyvalq *h,
    const void *body, size_t bodylen)
{
	struct url	 u;
	char		*full;

	xasprintf(&full, "%.*s%s", (int)(strlen(base) - (base[0] != '\0' &&
	    base[strlen(base) - 1] == '/' && path[0] == '/')), base, path);
	if (url_parse(full, &u) == -1) {
		free(full);
		return -1;
	}
	free(full);
	f->step = step;
	f->status = 0;
	f->too_big = 0;
	evbuffer_wipe(f->body);
	evbuffer_drain(f->body, evbuffer_get_length(f->body));
	f->x = httpx_start(&u, f->up->ssl_ctx_other, method, h, body, bodylen,
	    &fetch_httpx_cb, f);
	url_clear(&u);
	return 0;
}

/* The text between <tag> and </tag> in an XML reply, malloc'd. */
static char *
xml_text(const char *xml, const char *tag)
{
	char		 open[64], close[64];
	const char	*a, *b;

	snprintf(open, sizeof(open), "<%s>", tag);
	snprintf(close, sizeof(close), "</%s>", tag);
	if ((a = strstr(xml, open)) == NULL)
		return NULL;
	a += strlen(open);
	if ((b = strstr(a, close)) == NULL)
		return NULL;
	return xstrndup(a, (size_t)(b - a));
}

/* AssumeRoleWithWebIdentity with the token file read anew. */
static void
fetch_sts(struct ecr_fetch *f, const char *token_file, const char *role)
{
	struct evkeyvalq	 h;
	char			 err[256], name[64];
	char			*tok, *etok, *erole, *ename, *form;
	const char		*session = env("AWS_ROLE_SESSION_NAME");
	int			 rc;

	if (secret_file_read("web identity token file", token_file, 0, &tok,
	    NULL, err, sizeof(err)) == -1) {
		fetch_fail_later(f, "%s", err);
		return;
	}
	if (session == NULL) {
		snprintf(name, sizeof(name), "regcache-%ld", (long)getpid());
		session = name;
	}
	etok = uri_escape(tok);
	erole = uri_escape(role);
	ename = uri_escape(session);
	xasprintf(&form, "Action=AssumeRoleWithWebIdentity&Version=2011-06-15"
	    "&RoleArn=%s&RoleSessionName=%s&WebIdentityToken=%s", erole,
	    ename, etok);
	TAILQ_INIT(&h);
	evhttp_add_header(&h, "Content-Type",
	    "application/x-www-form-urlencoded");
	evhttp_add_header(&h, "Accept", "application/xml");
	rc = fetch_send(f, STEP_STS, f->up->cfg->ecr.sts_endpoint, "/",
	    EVHTTP_REQ_POST, &h, form, strlen(form));
	evhttp_clear_headers(&h);
	OPENSSL_cleanse(tok, strlen(tok));
	OPENSSL_cleanse(etok, strlen(etok));
	OPENSSL_cleanse(form, strlen(form));
	free(tok);
	free(etok);
	free(erole);
	free(ename);
	free(form);
	if (rc == -1)
		fetch_fail_later(f, "bad STS endpoint");
}

static void
fetch_imds(struct ecr_fetch *f, enum fetch_step step)
{
	struct evkeyvalq	 h;
	char			*path = NULL;
	int			 rc;

	TAILQ_INIT(&h);
	if (step == STEP_IMDS_TOKEN)
		evhttp_add_header(&h, "X-aws-ec2-metadata-token-ttl-seconds",
		    IMDS_TOKEN_TTL);
	else
		evhttp_add_header(&h, "X-aws-ec2-metadata-token",
		    f->imds_token);
	if (step == STEP_IMDS_KEYS)
		xasprintf(&path, "/latest/meta-data/iam/security-credentials/"
		    "%s", f->role);
	rc = fetch_send(f, step, f->up->cfg->ecr.imds_endpoint,
	    step == STEP_IMDS_TOKEN ? "/latest/api/token" :
	    step == STEP_IMDS_ROLE ?
	    "/latest/meta-data/iam/security-credentials/" : path,
	    step == STEP_IMDS_TOKEN ? EVHTTP_REQ_PUT : EVHTTP_REQ_GET, &h,
	    NULL, 0);
	headers_wipe(&h);
	free(path);
	if (rc == -1)
		fetch_fail_later(f, "bad IMDS endpoint");
}

/*
 * Starts getting ECR credentials for up.  cb runs once, later, from the
 * loop: with the token, or NULL and why.
 */
struct ecr_fetch *
ecr_fetch_start(struct upstream *up, struct aws_state *st,
    void (*cb)(const struct ecr_token *, const char *, void *), void *arg)
{
	struct ecr_fetch	*f;
	struct aws_keys		 k;
	const char		*wif, *role, *off;

	f = xcalloc(1, sizeof(*f));
	f->magic = AWS_FETCH_MAGIC;
	f->up = up;
	f->st = st;
	f->cb = cb;
	f->arg = arg;
	if ((f->body = evbuffer_new()) == NULL)
		fatalx("%s: evbuffer_new", __func__);

	if (keys_fresh(&st->keys, time(NULL))) {
		fetch_ecr(f);
		return f;
	}
	keys_clear(&st->keys);
	memset(&k, 0, sizeof(k));
	if (keys_from_env(&k) ||
	    keys_from_file(&k, up->cfg->ecr.profile)) {
		st->keys = k;
		fetch_ecr(f);
		return f;
	}
	wif = env("AWS_WEB_IDENTITY_TOKEN_FILE");
	role = env("AWS_ROLE_ARN");
	if (wif != NULL && role != NULL) {
		fetch_sts(f, wif, role);
		return f;
	}
	off = env("AWS_EC2_METADATA_DISABLED");
	if (off != NULL && strcasecmp(off, "true") == 0) {
		fetch_fail_later(f, "no AWS credentials: none in the "
		    "environment, the shared credentials file or web identity, "
		    "and IMDS is disabled");
		return f;
	}
	fetch_imds(f, STEP_IMDS_TOKEN);
	return f;
}

void
ecr_fetch_cancel(struct ecr_fetch *f)
{
	CHECK_MAGIC(f, AWS_FETCH_MAGIC);
	fetch_free(f);
}

/* GetAuthorizationToken, signed with the keys in st. */
static void
fetch_ecr(struct ecr_fetch *f)
{
	struct ecr_cfg		*e = &f->up->cfg->ecr;
	struct aws_keys		*k = &f->st->keys;
	struct sigv4_request	 req;
	struct sigv4_creds	 sc;
	struct evkeyvalq	 sign, h;
	struct url		 u;
	char			 date[SIGV4_DATE_LEN], *host, *authz = NULL;
	char			*body;
	time_t			 now = time(NULL);

	if (e->registry_id != NULL)
		xasprintf(&body, "{\"registryIds\":[\"%s\"]}", e->registry_id);
	else
		body = xstrdup("{}");
	if (url_parse(e->endpoint, &u) == -1) {
		free(body);
		fetch_fail_later(f, "bad ECR endpoint");
		return;
	}
	host = url_host_header(&u);
	if (sigv4_amz_date(now, date, sizeof(date)) == -1)
		fatalx("%s: clock", __func__);
	TAILQ_INIT(&sign);
	TAILQ_INIT(&h);
	evhttp_add_header(&sign, "Host", host);
	evhttp_add_header(&h, "Content-Type", "application/x-amz-json-1.1");
	evhttp_add_header(&h, "X-Amz-Target", ECR_TARGET);
	evhttp_add_header(&h, "X-Amz-Date", date);
	headers_copy(&sign, &h, NULL);
	memset(&req, 0, sizeof(req));
	req.method = "POST";
	req.path = u.path;
	req.headers = &sign;
	req.body = body;
	req.body_len = strlen(body);
	sc.access_key = k->akid;
	sc.secret_key = k->secret;
	sc.session_token = k->token;
	if (sigv4_sign(&req, &sc, e->region, "ecr", now, NULL, NULL,
	    &authz) == -1) {
		fetch_fail_later(f, "cannot sign the ECR request");
		goto out;
	}
	evhttp_add_header(&h, "Authorization", authz);
	if (k->token != NULL)
		evhttp_add_header(&h, "X-Amz-Security-Token", k->token);
	log_debug("upstream %s: GetAuthorizationToken with keys from the %s",
	    f->up->cfg->name, k->source);
	f->step = STEP_ECR;
	f->status = 0;
	evbuffer_wipe(f->body);
	evbuffer_drain(f->body, evbuffer_get_length(f->body));
	f->x = httpx_start(&u, f->up->ssl_ctx_other, EVHTTP_REQ_POST, &h,
	    body, strlen(body), &fetch_httpx_cb, f);
 out:
	/* The header values held a signature and maybe a session token. */
	headers_wipe(&sign);
	headers_wipe(&h);
	if (authz != NULL)
		OPENSSL_cleanse(authz, strlen(authz));
	free(authz);
	free(host);
	free(body);
	url_clear(&u);
}

/* "__type" and "message" of an AWS JSON error, for the log. */
static void
aws_json_error(const char *text, size_t len, int status, char *out,
    size_t outlen)
{
	json_t		*j = json_loadb(text, len, 0, NULL);
	const char	*type = NULL, *msg = NULL;

	if (j != NULL) {
		type = json_string_value(json_object_get(j, "__type"));
		if ((msg = json_string_value(json_object_get(j,
		    "message"))) == NULL)
			msg = json_string_value(json_object_get(j, "Message"));
	}
	snprintf(out, outlen, "ECR answered %d%s%s%s%s", status,
	    type ? " " : "", type ? type : "", msg ? ": " : "",
	    msg ? msg : "");
	json_decref(j);
}

/* Parses GetAuthorizationToken's answer into t. */
static int
ecr_parse(const char *text, size_t len, struct ecr_token *t, char *err,
    size_t errlen)
{
	json_t		*j, *d, *tok, *exp;
	char		*dec, *colon;
	size_t		 declen;
	int		 rc = -1;

	if ((j = json_loadb(text, len, 0, NULL)) == NULL) {
		snprintf(err, errlen, "ECR answer is not JSON");
		return -1;
	}
	d = json_array_get(json_object_get(j, "authorizationData"), 0);
	tok = json_object_get(d, "authorizationToken");
	exp = json_object_get(d, "expiresAt");
	if (!json_is_string(tok) || (dec = base64_decode(
	    json_string_value(tok), &declen)) == NULL) {
		snprintf(err, errlen, "ECR answer has no authorizationToken");
		goto out;
	}
	if ((colon = memchr(dec, ':', declen)) == NULL || colon == dec ||
	    colon[1] == '\0') {
		snprintf(err, errlen, "ECR authorizationToken is not "
		    "user:password");
		OPENSSL_cleanse(dec, declen);
		free(dec);
		goto out;
	}
	*colon = '\0';
	t->user = xstrdup(dec);
	t->pass = xstrdup(colon + 1);
	OPENSSL_cleanse(dec, declen);
	free(dec);
	if (json_is_number(exp))
		t->expires_ms = (int64_t)(json_number_value(exp) * 1000.0);
	else
		t->expires_ms = (int64_t)time(NULL) * 1000 +
		    ECR_DEFAULT_LIFE_MS;
	rc = 0;
 out:
	if (json_is_string(tok))
		OPENSSL_cleanse((void *)(uintptr_t)json_string_value(tok),
		    json_string_length(tok));
	json_decref(j);
	return rc;
}

/* Temporary keys from STS's XML or IMDS's JSON into st. */
static int
keys_take(struct ecr_fetch *f, char *id, char *secret, char *tok,
    const char *expiration, const char *source)
{
	struct aws_keys	*k = &f->st->keys;
	time_t		 exp;

	if (id == NULL || secret == NULL || tok == NULL || expiration ==
	    NULL || time_parse_rfc3339(expiration, &exp) == -1) {
		free(id);
		secret_free(&secret);
		secret_free(&tok);
		return -1;
	}
	keys_clear(k);
	k->akid = id;
	k->secret = secret;
	k->token = tok;
	k->expires = exp;
	k->obtained = time(NULL);
	k->source = source;
	log_info("upstream %s: AWS keys from %s, valid %lld s",
	    f->up->cfg->name, source, (long long)(exp - k->obtained));
	return 0;
}

static void
fetch_on_done(struct httpx *x, enum up_error uerr, const char *cause,
    void *arg)
{
	struct ecr_fetch	*f = arg;
	struct ecr_token	 t;
	json_t			*j;
	char			*text, *exp, *code, *msg, err[256];
	size_t			 len;
	const char		*what;
	enum { NEXT_FAIL, NEXT_ECR, NEXT_WAIT, NEXT_DONE } next = NEXT_FAIL;

	CHECK_MAGIC(f, AWS_FETCH_MAGIC);
	f->x = NULL;
	what = f->step == STEP_ECR ? "ECR" : f->step == STEP_STS ? "STS" :
	    "IMDS";
	if (uerr != UP_OK) {
		snprintf(err, sizeof(err), "%s: %s", what, cause);
		fetch_done(f, NULL, err);
		return;
	}
	if (f->too_big) {
		snprintf(err, sizeof(err), "%s: answer too large", what);
		fetch_done(f, NULL, err);
		return;
	}
	/* Answers hold keys and tokens: parse a copy, wiped afterwards. */
	text = evbuffer_take_secret(f->body, &len);
	memset(&t, 0, sizeof(t));

	switch (f->step) {
	case STEP_ECR:
		if (f->status != 200)
			aws_json_error(text, len, f->status, err, sizeof(err));
		else if (ecr_parse(text, len, &t, err, sizeof(err)) == 0) {
			next = NEXT_DONE;
			break;
		}
		/* Refused, whatever the status (AWS says 400 for some):
		 * ask the chain for keys again next time. */
		keys_clear(&f->st->keys);
		break;
	case STEP_STS:
		if (f->status != 200) {
			code = xml_text(text, "Code");
			msg = xml_text(text, "Message");
			snprintf(err, sizeof(err), "STS answered %d%s%s%s%s",
			    f->status, code ? " " : "", code ? code : "",
			    msg ? ": " : "", msg ? msg : "");
			free(code);
			free(msg);
			break;
		}
		exp = xml_text(text, "Expiration");
		if (keys_take(f, xml_text(text, "AccessKeyId"),
		    xml_text(text, "SecretAccessKey"),
		    xml_text(text, "SessionToken"), exp, "web identity") == 0)
			next = NEXT_ECR;
		else
			snprintf(err, sizeof(err), "STS answer lacks "
			    "credentials");
		free(exp);
		break;
	case STEP_IMDS_TOKEN:
	case STEP_IMDS_ROLE:
		if (f->status != 200 || len == 0) {
			snprintf(err, sizeof(err), "IMDS answered %d for the "
			    "%s", f->status, f->step == STEP_IMDS_TOKEN ?
			    "session token" : "role");
			break;
		}
		if (f->step == STEP_IMDS_TOKEN) {
			f->imds_token = xstrndup(text, strcspn(text, "\r\n"));
			next = NEXT_WAIT;
			fetch_imds(f, STEP_IMDS_ROLE);
			break;
		}
		f->role = xstrndup(text, strcspn(text, "\r\n"));
		if (*f->role == '\0' || strchr(f->role, '/') ||
		    strstr(f->role, "..")) {
			snprintf(err, sizeof(err), "IMDS: no usable role");
			break;
		}
		next = NEXT_WAIT;
		fetch_imds(f, STEP_IMDS_KEYS);
		break;
	case STEP_IMDS_KEYS:
		if (f->status != 200 || (j = json_loadb(text, len, 0,
		    NULL)) == NULL) {
			snprintf(err, sizeof(err), "IMDS answered %d for the "
			    "role's keys", f->status);
			break;
		}
#define JSTR(k) (json_is_string(json_object_get(j, k)) ? \
    xstrdup(json_string_value(json_object_get(j, k))) : NULL)
		exp = JSTR("Expiration");
		if (keys_take(f, JSTR("AccessKeyId"), JSTR("SecretAccessKey"),
		    JSTR("Token"), exp, "IMDS") == 0)
			next = NEXT_ECR;
		else
			snprintf(err, sizeof(err), "IMDS answer lacks "
			    "credentials");
#undef JSTR
		free(exp);
		json_string_wipe(j, "SecretAccessKey");
		json_string_wipe(j, "Token");
		json_decref(j);
		break;
	}
	secret_buf_free(text, len);
	switch (next) {
	case NEXT_FAIL:
		fetch_done(f, NULL, err);
		break;
	case NEXT_DONE:
		fetch_done(f, &t, NULL);
		free(t.user);
		secret_free(&t.pass);
		break;
	case NEXT_ECR:
		fetch_ecr(f);
		break;
	case NEXT_WAIT:
		break;
	}
}
