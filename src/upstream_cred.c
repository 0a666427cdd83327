/*
 * An upstream's own credentials: where they come from and keeping them
 * usable.  Static ones (inline, a variable, a file, a docker config.json)
 * are read when the configuration is checked; ECR ones are fetched and
 * refreshed in the background (aws_creds.c does the AWS side), well
 * before they expire.  Requests that need credentials that are not there
 * yet wait on the upstream's list and are woken when a fetch ends.
 * No secret ever reaches a log line.
 */
#include "config.h"

#include <sys/stat.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <jansson.h>
#include <openssl/crypto.h>

#include "regcache.h"

/* Secrets larger than this are not secrets but mistakes. */
#define SECRET_FILE_MAX		(64 * 1024)
/* ECR tokens live 12 h; refresh this long before they end by default. */
#define ECR_REFRESH_BEFORE_MS	(60 * 60 * 1000)
/* Retry a failed refresh after 1 s, doubling up to this. */
#define CRED_RETRY_MAX_MS	(60 * 1000)
#define CRED_TIMER_MAX_MS	(24 * 60 * 60 * 1000)
/* A refusal re-fetches at most this often (a wrong account would loop). */
#define CRED_FRESH_MS		1000

struct cred {
	struct upstream		*up;
	char			*user;
	char			*pass;
	uint64_t		 gen;		/* bumped at every change */
	int64_t			 expires_ms;	/* wall clock; 0: never */
	uint64_t		 reauth_ms;	/* monotonic, last refusal fetch */
	struct ecr_fetch	*fetch;		/* in flight */
	struct aws_state	*aws;
	struct event		*timer;		/* next refresh */
	int			 retry_ms;
	uint64_t		 retry_until;	/* monotonic: backing off */
	TAILQ_HEAD(, cred_waiter) waiters;
};

static void	cred_fetch(struct cred *);

/* Warns when a file holding secrets can be read by other users. */
static void
secret_mode_warn(const char *what, const char *path, mode_t mode)
{
	if (mode & S_IROTH)
		log_warnx("%s %s is readable by other users (mode %04o); "
		    "chmod o-r it", what, path, (unsigned)(mode & 07777));
}

/* The same for a file already open (the configuration file). */
void
secret_file_check_mode(const char *what, const char *path, int fd)
{
	struct stat	 st;

	if (fstat(fd, &st) == 0)
		secret_mode_warn(what, path, st.st_mode);
}

/*
 * Reads a small file that holds a secret; the trailing newline is not
 * part of it.  *out is malloc'd.
 */
int
secret_file_read(const char *what, const char *path, int check_mode,
    char **out, size_t *outlen, char *err, size_t errlen)
{
	struct stat	 st;
	char		*buf, msg[256];
	size_t		 len;
	int		 rc;

	/* Zero, so that a file that could not be opened warns of nothing. */
	memset(&st, 0, sizeof(st));
	rc = file_read(path, SECRET_FILE_MAX, 0, &st, &buf, &len, msg,
	    sizeof(msg));
	if (check_mode)
		secret_mode_warn(what, path, st.st_mode);
	if (rc == -1) {
		snprintf(err, errlen, "%s \"%s\": %s", what, path, msg);
		return -1;
	}
	while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == '\r'))
		buf[--len] = '\0';
	*out = buf;
	if (outlen != NULL)
		*outlen = len;
	return 0;
}

/* The host of a docker config.json "auths" key, without scheme or path. */
static void
docker_key_host(const char *key, char *host, size_t len)
{
	const char	*p = strstr(key, "://");

	p = p != NULL ? p + 3 : key;
	snprintf(host, len, "%.*s", (int)strcspn(p, "/"), p);
}

static int
docker_is_hub(const char *host)
{
	return strcasecmp(host, "docker.io") == 0 ||
	    strcasecmp(host, "index.docker.io") == 0 ||
	    strcasecmp(host, "registry-1.docker.io") == 0;
}

/* Does an "auths" key name this upstream (its host or an alias)? */
static int
docker_key_matches(const struct upstream_cfg *u, const char *key)
{
	char	 host[256];
	size_t	 i;

	docker_key_host(key, host, sizeof(host));
	if (strcasecmp(host, u->hostport) == 0)
		return 1;
	for (i = 0; i < u->naliases; i++)
		if (strcasecmp(host, u->aliases[i]) == 0)
			return 1;
	/* Docker keeps Hub credentials under https://index.docker.io/v1/. */
	if (docker_is_hub(host)) {
		if (docker_is_hub(u->host))
			return 1;
		for (i = 0; i < u->naliases; i++)
			if (docker_is_hub(u->aliases[i]))
				return 1;
	}
	return 0;
}

/* Takes this upstream's username and password out of a docker config. */
static int
docker_config_read(struct upstream_cfg *u, char *err, size_t errlen)
{
	json_t		*root, *auths, *e, *a, *user, *pass;
	json_error_t	 je;
	const char	*key;
	char		*text, *dec, *colon;
	size_t		 len, declen;
	int		 rc = -1;

	if (secret_file_read("docker_config", u->docker_config, 1, &text, &len,
	    err, errlen) == -1)
		return -1;
	root = json_loadb(text, len, 0, &je);
	OPENSSL_cleanse(text, len);
	free(text);
	if (root == NULL) {
		/* je.text may quote the file: say only where. */
		snprintf(err, errlen, "docker_config \"%s\": not JSON (line "
		    "%d)", u->docker_config, je.line);
		return -1;
	}
	if ((auths = json_object_get(root, "auths")) == NULL ||
	    !json_is_object(auths))
		auths = NULL;
	e = NULL;
	if (auths != NULL)
		json_object_foreach(auths, key, a)
			if (json_is_object(a) && docker_key_matches(u, key)) {
				e = a;
				break;
			}
	if (e == NULL) {
		snprintf(err, errlen, "docker_config \"%s\": no \"auths\" "
		    "entry for %s%s", u->docker_config, u->hostport,
		    json_object_get(root, "credHelpers") != NULL ||
		    json_object_get(root, "credsStore") != NULL ?
		    " (credential helpers are not supported)" : "");
		goto out;
	}
	user = json_object_get(e, "username");
	pass = json_object_get(e, "password");
	if ((a = json_object_get(e, "auth")) != NULL && json_is_string(a) &&
	    json_string_length(a) > 0) {
		dec = base64_decode(json_string_value(a), &declen);
		if (dec == NULL || (colon = memchr(dec, ':', declen)) == NULL ||
		    colon == dec) {
			snprintf(err, errlen, "docker_config \"%s\": the "
			    "\"auth\" of %s is not base64 of user:password",
			    u->docker_config, u->hostport);
			if (dec != NULL) {
				OPENSSL_cleanse(dec, declen);
				free(dec);
			}
			goto out;
		}
		*colon = '\0';
		u->username = xstrdup(dec);
		u->password = xstrdup(colon + 1);
		OPENSSL_cleanse(dec, declen);
		free(dec);
	} else if (json_is_string(user) && json_is_string(pass)) {
		u->username = xstrdup(json_string_value(user));
		u->password = xstrdup(json_string_value(pass));
	} else {
		snprintf(err, errlen, "docker_config \"%s\": the entry for %s "
		    "has no auth or username and password%s", u->docker_config,
		    u->hostport, json_object_get(e, "identitytoken") != NULL ?
		    " (identity tokens are not supported)" : "");
		goto out;
	}
	rc = 0;
 out:
	/* jansson keeps its own copies of the strings: wipe them too. */
	if (auths != NULL)
		json_object_foreach(auths, key, a) {
			if ((e = json_object_get(a, "auth")) != NULL &&
			    json_is_string(e))
				OPENSSL_cleanse((void *)(uintptr_t)
				    json_string_value(e), json_string_length(e));
			if ((e = json_object_get(a, "password")) != NULL &&
			    json_is_string(e))
				OPENSSL_cleanse((void *)(uintptr_t)
				    json_string_value(e), json_string_length(e));
		}
	json_decref(root);
	return rc;
}

/* The region of an ECR registry host: 1234.dkr.ecr.REGION.amazonaws.com. */
static char *
ecr_host_region(const char *host)
{
	const char	*p = strstr(host, ".dkr.ecr.");
	size_t		 n;

	if (p == NULL)
		return NULL;
	p += strlen(".dkr.ecr.");
	n = strcspn(p, ".");
	if (n == 0 || strncmp(p + n, ".amazonaws.com", 14) != 0)
		return NULL;
	return xstrndup(p, n);
}

/* Fills the ECR settings the configuration left out. */
static int
ecr_resolve(struct upstream_cfg *u, char *err, size_t errlen)
{
	struct ecr_cfg	*e = &u->ecr;
	const char	*env, *cn;

	if (e->region == NULL && (e->region = ecr_host_region(u->host)) ==
	    NULL) {
		if ((env = getenv("AWS_REGION")) == NULL || *env == '\0')
			env = getenv("AWS_DEFAULT_REGION");
		if (env == NULL || *env == '\0') {
			snprintf(err, errlen, "ecr: the host does not tell the "
			    "region: set auth.ecr.region or AWS_REGION");
			return -1;
		}
		e->region = xstrdup(env);
	}
	if (strspn(e->region, "abcdefghijklmnopqrstuvwxyz0123456789-") !=
	    strlen(e->region)) {
		snprintf(err, errlen, "ecr: bad region \"%s\"", e->region);
		return -1;
	}
	cn = strncmp(e->region, "cn-", 3) == 0 ? ".cn" : "";
	if (e->endpoint == NULL) {
		if ((env = getenv("AWS_ENDPOINT_URL_ECR")) != NULL &&
		    *env != '\0')
			e->endpoint = xstrdup(env);
		else
			xasprintf(&e->endpoint, "https://api.ecr.%s."
			    "amazonaws.com%s/", e->region, cn);
	}
	if (e->sts_endpoint == NULL) {
		if ((env = getenv("AWS_ENDPOINT_URL_STS")) != NULL &&
		    *env != '\0')
			e->sts_endpoint = xstrdup(env);
		else
			xasprintf(&e->sts_endpoint, "https://sts.%s."
			    "amazonaws.com%s/", e->region, cn);
	}
	if (e->imds_endpoint == NULL) {
		if ((env = getenv("AWS_EC2_METADATA_SERVICE_ENDPOINT")) !=
		    NULL && *env != '\0')
			e->imds_endpoint = xstrdup(env);
		else
			e->imds_endpoint = xstrdup("http://169.254.169.254");
	}
	if (e->refresh_before_ms == 0)
		e->refresh_before_ms = ECR_REFRESH_BEFORE_MS;
	if (aws_endpoint_check("endpoint", e->endpoint, err, errlen) == -1 ||
	    aws_endpoint_check("sts_endpoint", e->sts_endpoint, err,
	    errlen) == -1 ||
	    aws_endpoint_check("imds_endpoint", e->imds_endpoint, err,
	    errlen) == -1)
		return -1;
	return 0;
}

/*
 * Reads the credentials the configuration points at (variables, files)
 * and completes the ECR settings; part of config_validate().
 */
int
cred_resolve(struct upstream_cfg *u, char *err, size_t errlen)
{
	const char	*v;

	switch (u->cred_kind) {
	case CRED_NONE:
	case CRED_PASSTHROUGH:
		return 0;
	case CRED_ECR:
		return ecr_resolve(u, err, errlen);
	case CRED_STATIC:
		break;
	}
	if (u->docker_config != NULL) {
		free(u->username);
		u->username = NULL;
		secret_free(&u->password);
		return docker_config_read(u, err, errlen);
	}
	if (u->username_env != NULL) {
		if ((v = getenv(u->username_env)) == NULL || *v == '\0') {
			snprintf(err, errlen, "auth.username_env: %s is not "
			    "set", u->username_env);
			return -1;
		}
		free(u->username);
		u->username = xstrdup(v);
	}
	if (u->password_env != NULL) {
		if ((v = getenv(u->password_env)) == NULL) {
			snprintf(err, errlen, "auth.password_env: %s is not "
			    "set", u->password_env);
			return -1;
		}
		secret_free(&u->password);
		u->password = xstrdup(v);
	}
	if (u->password_file != NULL) {
		secret_free(&u->password);
		if (secret_file_read("auth.password_file", u->password_file,
		    1, &u->password, NULL, err, errlen) == -1)
			return -1;
	}
	return 0;
}

/* Does regcache send credentials of its own to this upstream? */
int
cred_has(const struct upstream *up)
{
	return up->cfg->cred_kind == CRED_STATIC ||
	    up->cfg->cred_kind == CRED_ECR;
}

static int64_t
wall_ms(void)
{
	struct timespec	 ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int
cred_valid(const struct cred *cr)
{
	return cr->user != NULL && (cr->expires_ms == 0 ||
	    wall_ms() < cr->expires_ms);
}

static void
cred_wake(struct cred *cr, int ok)
{
	struct cred_waiter	*w;
	size_t			 n = 0;

	/* As many as wait now: one that waits again (it goes to the tail)
	 * waits for the next fetch, not for this one once more.  Waiters
	 * may drop others meanwhile: always take the first. */
	TAILQ_FOREACH(w, &cr->waiters, entry)
		n++;
	while (n-- > 0 && (w = TAILQ_FIRST(&cr->waiters)) != NULL) {
		TAILQ_REMOVE(&cr->waiters, w, entry);
		w->queued = 0;
		w->cb(w, ok);
	}
}

static void
cred_schedule(struct cred *cr, int ms)
{
	struct timeval	 tv;

	tv.tv_sec = ms / 1000;
	tv.tv_usec = (ms % 1000) * 1000;
	evtimer_add(cr->timer, &tv);
}

/* An ECR answer: new credentials, or a failure to count and retry. */
static void
cred_fetched(const struct ecr_token *t, const char *error, void *arg)
{
	struct cred	*cr = arg;
	int64_t		 now = wall_ms(), life, margin;

	cr->fetch = NULL;
	if (t != NULL && t->expires_ms <= now + 1000) {
		error = "ECR answered a password that has already expired";
		t = NULL;
	}
	if (t == NULL) {
		stats_cred_refresh(cr->up->cfg->name, 0);
		log_warnx("upstream %s: ECR credentials: %s%s",
		    cr->up->cfg->name, error, cred_valid(cr) ?
		    "; the current ones stay in use until they expire" : "");
		cred_schedule(cr, cr->retry_ms);
		cr->retry_until = mono_ms() + (uint64_t)cr->retry_ms;
		cr->retry_ms = cr->retry_ms * 2 > CRED_RETRY_MAX_MS ?
		    CRED_RETRY_MAX_MS : cr->retry_ms * 2;
		/* Whoever waits wanted new ones: there are none. */
		cred_wake(cr, 0);
		return;
	}
	stats_cred_refresh(cr->up->cfg->name, 1);
	free(cr->user);
	secret_free(&cr->pass);
	cr->user = xstrdup(t->user);
	cr->pass = xstrdup(t->pass);
	cr->expires_ms = t->expires_ms;
	cr->gen++;
	cr->retry_ms = 1000;
	life = cr->expires_ms - now;
	margin = cr->up->cfg->ecr.refresh_before_ms;
	if (margin > life / 2)
		margin = life / 2;
	log_info("upstream %s: ECR credentials renewed, valid %lld s, next "
	    "renewal in %lld s", cr->up->cfg->name, (long long)(life / 1000),
	    (long long)((life - margin) / 1000));
	evtimer_del(cr->timer);
	cr->retry_until = 0;
	/* A timer a day away at most: a longer life is renewed early. */
	life -= margin;
	cred_schedule(cr, life < 1000 ? 1000 : life > CRED_TIMER_MAX_MS ?
	    CRED_TIMER_MAX_MS : (int)life);
	cred_wake(cr, 1);
}

static void
cred_fetch(struct cred *cr)
{
	if (cr->fetch != NULL)
		return;
	evtimer_del(cr->timer);
	cr->fetch = ecr_fetch_start(cr->up, cr->aws, cred_fetched, cr);
}

static void
cred_timer_cb(evutil_socket_t fd, short ev, void *arg)
{
	cred_fetch(arg);
}

/* Sets up an upstream's credentials; ECR ones start their first fetch. */
void
cred_start(struct upstream *up)
{
	struct cred	*cr;

	cr = xcalloc(1, sizeof(*cr));
	cr->up = up;
	cr->retry_ms = 1000;
	TAILQ_INIT(&cr->waiters);
	up->cred = cr;
	if (up->cfg->cred_kind == CRED_STATIC) {
		cr->user = xstrdup(up->cfg->username);
		cr->pass = xstrdup(up->cfg->password != NULL ?
		    up->cfg->password : "");
		cr->gen = 1;
		return;
	}
	if (up->cfg->cred_kind != CRED_ECR)
		return;
	if ((cr->timer = evtimer_new(ev_base, cred_timer_cb, cr)) == NULL)
		fatalx("%s: evtimer_new", __func__);
	cr->aws = aws_state_new();
	cred_fetch(cr);
}

void
cred_stop(struct upstream *up)
{
	struct cred	*cr = up->cred;

	if (cr == NULL)
		return;
	cred_wake(cr, 0);
	if (cr->fetch != NULL)
		ecr_fetch_cancel(cr->fetch);
	if (cr->timer != NULL)
		event_free(cr->timer);
	aws_state_free(cr->aws);
	free(cr->user);
	secret_free(&cr->pass);
	free(cr);
	up->cred = NULL;
}

/*
 * The credentials to send now: 1 and *user, *pass (valid until the next
 * return to the loop) and *gen; 0 when there are none yet but a fetch
 * runs (cred_wait); -1 when the upstream has none of regcache's own.
 */
int
cred_get(struct upstream *up, const char **user, const char **pass,
    uint64_t *gen)
{
	struct cred	*cr = up->cred;

	if (cr == NULL || !cred_has(up))
		return -1;
	if (cred_valid(cr)) {
		*user = cr->user;
		*pass = cr->pass;
		if (gen != NULL)
			*gen = cr->gen;
		return 1;
	}
	/* After a failure, requests wait for the retry the timer makes:
	 * traffic must not turn a failing AWS into a hammered one. */
	if (cr->retry_until == 0 || mono_ms() >= cr->retry_until)
		cred_fetch(cr);
	return 0;
}

/* Calls w->cb once the fetch under way ends (ok tells how). */
void
cred_wait(struct upstream *up, struct cred_waiter *w)
{
	if (w->queued)
		return;
	TAILQ_INSERT_TAIL(&up->cred->waiters, w, entry);
	w->queued = 1;
}

void
cred_unwait(struct upstream *up, struct cred_waiter *w)
{
	if (!w->queued)
		return;
	TAILQ_REMOVE(&up->cred->waiters, w, entry);
	w->queued = 0;
}

/*
 * The upstream refused the credentials of generation gen.  Returns 1 when
 * newer ones are there (retry now), 0 when a refresh runs (cred_wait),
 * -1 when nothing can change (static ones, or a refusal fetch just
 * ran: an account without access must not make every request ask ECR).
 */
int
cred_reauth(struct upstream *up, uint64_t gen)
{
	struct cred	*cr = up->cred;

	if (cr == NULL || up->cfg->cred_kind != CRED_ECR)
		return -1;
	if (gen != cr->gen && cred_valid(cr))
		return 1;
	if (cr->fetch == NULL && cr->reauth_ms != 0 &&
	    mono_ms() - cr->reauth_ms < CRED_FRESH_MS)
		return -1;
	if (cr->fetch == NULL)
		cr->reauth_ms = mono_ms();
	log_info("upstream %s: credentials refused, fetching new ones",
	    up->cfg->name);
	cred_fetch(cr);
	return 0;
}
