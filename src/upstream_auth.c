/*
 * Upstream authentication: WWW-Authenticate challenges, token-service
 * answers, and the per-upstream cache of bearer tokens keyed by scope.
 * Tokens and passwords never reach a log line.
 */
#include "config.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>
#include <openssl/crypto.h>

#include "regcache.h"

#define TOKEN_MAX_LIFETIME	86400

struct token {
	TAILQ_ENTRY(token)	 entry;
	char			*scope;
	char			*value;
	time_t			 expires;
};

/* One auth-param value: a token or a quoted string with \-escapes. */
static const char *
auth_param_value(const char *p, char **out)
{
	char	*buf, *w;

	if (*p == '"') {
		buf = w = xcalloc(1, strlen(p) + 1);
		for (p++; *p != '"'; p++) {
			if (*p == '\0') {
				free(buf);
				return NULL;
			}
			if (*p == '\\' && p[1] != '\0')
				p++;
			*w++ = *p;
		}
		*out = buf;
		return p + 1;
	}
	w = (char *)(uintptr_t)p;
	while (*p != '\0' && *p != ',' && *p != ' ' && *p != '\t')
		p++;
	*out = xstrndup(w, (size_t)(p - w));
	return p;
}

/*
 * Parse one challenge: `Bearer realm="...",service="...",scope="..."` or
 * `Basic realm="..."`.  Unknown parameters are skipped.  0 or -1.
 */
int
auth_parse_challenge(const char *hdr, struct auth_challenge *ch)
{
	const char	*p = hdr, *k;
	char		*v, **slot;
	size_t		 klen;

	memset(ch, 0, sizeof(*ch));
	while (*p == ' ' || *p == '\t')
		p++;
	for (k = p; isalnum((unsigned char)*p) || *p == '-'; p++)
		;
	if (p == k || (size_t)(p - k) >= sizeof(ch->scheme))
		return -1;
	memcpy(ch->scheme, k, (size_t)(p - k));
	if (*p != '\0' && *p != ' ' && *p != '\t')
		goto fail;
	for (;;) {
		while (*p == ' ' || *p == '\t' || *p == ',')
			p++;
		if (*p == '\0')
			return 0;
		for (k = p; *p != '\0' && *p != '=' && *p != ' ' &&
		    *p != '\t' && *p != ','; p++)
			;
		if ((klen = (size_t)(p - k)) == 0)
			goto fail;
		while (*p == ' ' || *p == '\t')
			p++;
		if (*p != '=')
			goto fail;
		for (p++; *p == ' ' || *p == '\t'; p++)
			;
		if ((p = auth_param_value(p, &v)) == NULL)
			goto fail;
		slot = NULL;
		if (klen == 5 && strncasecmp(k, "realm", 5) == 0)
			slot = &ch->realm;
		else if (klen == 7 && strncasecmp(k, "service", 7) == 0)
			slot = &ch->service;
		else if (klen == 5 && strncasecmp(k, "scope", 5) == 0)
			slot = &ch->scope;
		else if (klen == 5 && strncasecmp(k, "error", 5) == 0)
			slot = &ch->error;
		if (slot != NULL) {
			free(*slot);
			*slot = v;
		} else
			free(v);
	}
 fail:
	auth_challenge_clear(ch);
	return -1;
}

void
auth_challenge_clear(struct auth_challenge *ch)
{
	free(ch->realm);
	free(ch->service);
	free(ch->scope);
	free(ch->error);
	memset(ch, 0, sizeof(*ch));
}

/*
 * Parse a token service's JSON answer: `token` or `access_token`,
 * `expires_in` (default 60 s), `issued_at` (RFC 3339, optional).
 */
int
auth_parse_token_response(const char *buf, size_t len,
    struct token_response *tr, char *err, size_t errlen)
{
	json_t		*root, *v;
	json_error_t	 jerr;
	const char	*tok = NULL;

	memset(tr, 0, sizeof(*tr));
	if ((root = json_loadb(buf, len, 0, &jerr)) == NULL) {
		/* jerr.text may quote the token itself: only the place. */
		snprintf(err, errlen, "token response is not JSON (line %d, "
		    "column %d)", jerr.line, jerr.column);
		return -1;
	}
	if (!json_is_object(root)) {
		snprintf(err, errlen, "token response is not an object");
		goto fail;
	}
	if ((v = json_object_get(root, "token")) != NULL &&
	    json_is_string(v) && json_string_length(v) > 0)
		tok = json_string_value(v);
	else if ((v = json_object_get(root, "access_token")) != NULL &&
	    json_is_string(v) && json_string_length(v) > 0)
		tok = json_string_value(v);
	if (tok == NULL) {
		snprintf(err, errlen, "token response has no token");
		goto fail;
	}
	tr->expires_in = 60;
	if ((v = json_object_get(root, "expires_in")) != NULL) {
		if (!json_is_integer(v) || json_integer_value(v) <= 0) {
			snprintf(err, errlen, "token response has a bad "
			    "expires_in");
			goto fail;
		}
		/* A day at most: a token service's typo must not overflow
		 * the expiry or pin a token for years. */
		tr->expires_in = json_integer_value(v) > TOKEN_MAX_LIFETIME ?
		    TOKEN_MAX_LIFETIME : (long)json_integer_value(v);
	}
	if ((v = json_object_get(root, "issued_at")) != NULL &&
	    json_is_string(v) &&
	    time_parse_rfc3339(json_string_value(v), &tr->issued_at) == -1) {
		snprintf(err, errlen, "token response has a bad issued_at");
		goto fail;
	}
	tr->token = xstrdup(tok);
	json_decref(root);
	return 0;
 fail:
	json_decref(root);
	return -1;
}

void
auth_token_response_clear(struct token_response *tr)
{
	if (tr->token != NULL)
		OPENSSL_cleanse(tr->token, strlen(tr->token));
	free(tr->token);
	memset(tr, 0, sizeof(*tr));
}

/*
 * When to stop using a token: counted from issued_at when it is sane
 * (token services' clocks drift), else from now, less a margin so a token
 * is not sent in its last seconds.
 */
time_t
auth_token_expiry(const struct token_response *tr, time_t now)
{
	time_t	base = now;
	long	margin = tr->expires_in / 4;

	if (tr->issued_at != 0 && tr->issued_at <= now &&
	    tr->issued_at > now - tr->expires_in)
		base = tr->issued_at;
	if (margin > 30)
		margin = 30;
	return base + tr->expires_in - margin;
}

static struct token *
auth_token_find(struct upstream *up, const char *scope)
{
	struct token	*t;

	TAILQ_FOREACH(t, &up->tokens, entry)
		if (strcmp(t->scope, scope) == 0)
			return t;
	return NULL;
}

static void
auth_token_free(struct upstream *up, struct token *t)
{
	TAILQ_REMOVE(&up->tokens, t, entry);
	OPENSSL_cleanse(t->value, strlen(t->value));
	free(t->value);
	free(t->scope);
	free(t);
}

/* A cached token for scope that is still good at now, or NULL. */
const char *
auth_token_lookup(struct upstream *up, const char *scope, time_t now)
{
	struct token	*t;

	if ((t = auth_token_find(up, scope)) == NULL)
		return NULL;
	if (t->expires <= now) {
		auth_token_free(up, t);
		return NULL;
	}
	return t->value;
}

void
auth_token_store(struct upstream *up, const char *scope, const char *value,
    time_t expires)
{
	struct token	*t, *next;
	time_t		 now = time(NULL);

	/* Expired tokens of other scopes go too, so the list stays short. */
	for (t = TAILQ_FIRST(&up->tokens); t != NULL; t = next) {
		next = TAILQ_NEXT(t, entry);
		if (t->expires <= now || strcmp(t->scope, scope) == 0)
			auth_token_free(up, t);
	}
	t = xcalloc(1, sizeof(*t));
	t->scope = xstrdup(scope);
	t->value = xstrdup(value);
	t->expires = expires;
	TAILQ_INSERT_HEAD(&up->tokens, t, entry);
}

/* The upstream refused value: drop it unless a newer one replaced it. */
void
auth_token_forget(struct upstream *up, const char *scope, const char *value)
{
	struct token	*t;

	if ((t = auth_token_find(up, scope)) != NULL &&
	    strcmp(t->value, value) == 0)
		auth_token_free(up, t);
}

void
auth_tokens_free(struct upstream *up)
{
	struct token	*t;

	while ((t = TAILQ_FIRST(&up->tokens)) != NULL)
		auth_token_free(up, t);
}
