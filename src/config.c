/*
 * Configuration: the embedded defaults, the JSON file on top of them, the
 * overrides from the command line and the environment on top of that, and
 * the checks that tie the pieces together.
 *
 * jansson tells where a syntax error is, but not where a member it parsed
 * came from.  So every semantic error carries a key path (["upstreams", 1,
 * "url"]) and a small scanner walks the original text to find the line and
 * column of that member, so that each message reads like a compiler's:
 * "regcache.json:7:14: upstreams[1].url: scheme must be http or https".
 *
 * config_load() checks everything that can be checked from the text alone;
 * whether the files it names (TLS certificate and key, CA bundle) can be
 * read is left to config_validate(), which also runs after the overrides.
 */
#include "config.h"

#include <sys/types.h>
#include <sys/stat.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <jansson.h>

#include "regcache.h"

#define CONFIG_FILE_MAX		(1024 * 1024)	/* bytes of JSON we read */
#define KPATH_MAX		8		/* deepest key path */
#define UPSTREAM_NAME_MAX	64
#define UPSTREAM_NAME_CHARS	"abcdefghijklmnopqrstuvwxyz" \
				"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-"
#define HOST_NAME_MAX_LEN	253
#define TIMEOUT_MAX_S		(INT_MAX / 1000)
#define MAX_HEADER_BYTES_MIN	1024
#define MAX_HEADER_BYTES_MAX	(1024 * 1024)
#define MAX_REDIRECTS_MAX	20
#define CACHE_MAX_BYTES_MIN	(1024LL * 1024)	/* less cannot hold a layer */
#define CACHE_MAX_IDLE_MAX_S	(100LL * 365 * 86400)	/* a century */
#define QUANTITY_FRAC_MAX	6		/* digits after the point */
#define LISTEN_ANY_HOST		"0.0.0.0"	/* what ":port" listens on */
#define ACCESS_TOKEN_TTL_MAX_S	86400		/* a day */

#define DOCKER_HUB_HOST		"registry-1.docker.io"
#define DOCKER_HUB_ALIAS	"docker.io"
#define DOCKER_HUB_INDEX	"index.docker.io"

/* One step of a key path: an object member, or an array element. */
struct kseg {
	const char	*key;		/* NULL for an array index */
	size_t		 index;
};

/* What the parser of one file carries around. */
struct pctx {
	const char	*file;		/* for messages */
	const char	*text;		/* the file, for positions */
	size_t		 len;
	struct kseg	 path[KPATH_MAX];
	size_t		 depth;
	char		*err;
	size_t		 errlen;
};

/* A walker over JSON text that counts lines and columns like jansson. */
struct scan {
	const char	*p;
	const char	*end;
	int		 line;
	int		 col;
};

/* A "host[:port]" split into its parts. */
struct hostport {
	char		*host;		/* lower case, without brackets */
	char		*port;		/* NULL when absent */
	int		 v6;
};

#define HP_NEED_PORT	0x01	/* the port is required */
#define HP_ANY_HOST	0x02	/* an empty host means every address */

#define MEMBER_REQUIRED	0x01	/* an absent member is an error */
#define MEMBER_NULL_OK	0x02	/* a null member counts as absent */

/* How a number of the configuration is written and stored. */
enum num_kind {
	NUM_INT,	/* a JSON integer, into an int */
	NUM_MS,		/* seconds (maybe fractional), into an int of ms */
	NUM_BYTES,	/* bytes, or a string like "20GiB", into a uint64_t */
	NUM_SECONDS	/* seconds, or a string like "7d", into an int64_t */
};

/*
 * A number in "timeouts", "limits", "cache" or an upstream: where it goes
 * and what it may be.  min and max are in the unit the file uses (seconds
 * for NUM_MS and NUM_SECONDS); NUM_MS takes anything from 0.001 seconds
 * up, so min does not apply to it.  When zero is set, 0 is allowed as well
 * whatever min says, and zero tells what it means.
 */
struct num_opt {
	const char	*name;
	size_t		 off;		/* member of the struct parsed into */
	enum num_kind	 kind;
	long long	 min;
	long long	 max;
	const char	*zero;
};

/* A unit a size or a duration may be written with, and what it is worth. */
struct unit {
	const char	*name;
	uint64_t	 mult;
};

static const struct num_opt timeout_opts[] = {
	{ "connect", offsetof(struct config, connect_timeout_ms), NUM_MS,
	    0, TIMEOUT_MAX_S, NULL },
	{ "first_byte", offsetof(struct config, first_byte_timeout_ms), NUM_MS,
	    0, TIMEOUT_MAX_S, NULL },
	{ "idle", offsetof(struct config, idle_timeout_ms), NUM_MS,
	    0, TIMEOUT_MAX_S, NULL },
	{ "client", offsetof(struct config, client_timeout_ms), NUM_MS,
	    0, TIMEOUT_MAX_S, NULL },
	{ "drain", offsetof(struct config, drain_timeout_ms), NUM_MS,
	    0, TIMEOUT_MAX_S, "exit at once" },
	{ NULL, 0, NUM_INT, 0, 0, NULL }
};

static const struct num_opt limit_opts[] = {
	{ "max_connections", offsetof(struct config, max_connections), NUM_INT,
	    1, INT_MAX, NULL },
	{ "max_header_bytes", offsetof(struct config, max_header_bytes),
	    NUM_INT, MAX_HEADER_BYTES_MIN, MAX_HEADER_BYTES_MAX, NULL },
	{ "max_redirects", offsetof(struct config, max_redirects), NUM_INT,
	    0, MAX_REDIRECTS_MAX, NULL },
	{ NULL, 0, NUM_INT, 0, 0, NULL }
};

static const struct num_opt cache_opts[] = {
	{ "max_bytes", offsetof(struct config, cache_max_bytes), NUM_BYTES,
	    CACHE_MAX_BYTES_MIN, INT64_MAX, "no budget" },
	{ "high_water", offsetof(struct config, cache_high_water), NUM_INT,
	    1, 100, NULL },
	{ "low_water", offsetof(struct config, cache_low_water), NUM_INT,
	    1, 100, NULL },
	{ "max_idle", offsetof(struct config, cache_max_idle_s), NUM_SECONDS,
	    1, CACHE_MAX_IDLE_MAX_S, "no idle limit" },
	{ NULL, 0, NUM_INT, 0, 0, NULL }
};

/* The numbers of one upstream, members of struct upstream_cfg. */
static const struct num_opt upstream_opts[] = {
	{ "tag_ttl", offsetof(struct upstream_cfg, tag_ttl_ms), NUM_MS,
	    0, TIMEOUT_MAX_S, "always revalidate" },
	{ "negative_ttl", offsetof(struct upstream_cfg, negative_ttl_ms),
	    NUM_MS, 0, TIMEOUT_MAX_S, "no negative caching" },
	{ NULL, 0, NUM_INT, 0, 0, NULL }
};

static const struct num_opt ecr_opts[] = {
	{ "refresh_before", offsetof(struct ecr_cfg, refresh_before_ms),
	    NUM_MS, 0, 86400, NULL },
	{ NULL, 0, NUM_INT, 0, 0, NULL }
};

/*
 * Sizes: a letter alone is binary, as in nginx and docker ("G" is 2^30);
 * "GiB" is binary and "GB" decimal, as the SI and IEC prefixes say.
 */
static const struct unit size_units[] = {
	{ "", 1 }, { "B", 1 },
	{ "K", 1ULL << 10 }, { "KiB", 1ULL << 10 }, { "KB", 1000ULL },
	{ "M", 1ULL << 20 }, { "MiB", 1ULL << 20 }, { "MB", 1000000ULL },
	{ "G", 1ULL << 30 }, { "GiB", 1ULL << 30 }, { "GB", 1000000000ULL },
	{ "T", 1ULL << 40 }, { "TiB", 1ULL << 40 },
	{ "TB", 1000000000000ULL },
	{ NULL, 0 }
};
#define SIZE_UNITS_HELP	"B, K, KB, KiB, M, MB, MiB, G, GB, GiB, T, TB or TiB"

static const struct unit duration_units[] = {
	{ "", 1 }, { "s", 1 }, { "m", 60 }, { "h", 3600 }, { "d", 86400 },
	{ NULL, 0 }
};
#define DURATION_UNITS_HELP	"s, m, h or d"

static const char *const root_keys[] = {
	"listen", "data_dir", "default_upstream", "upstreams", "timeouts",
	"limits", "log", "cache", "auth", "admin", NULL
};
static const char *const listen_keys[] = { "address", "tls", NULL };
static const char *const tls_keys[] = { "certificate", "key", NULL };
static const char *const upstream_keys[] = {
	"name", "url", "aliases", "prefix", "library_prefix", "auth",
	"ca_file", "tls_verify", "tag_ttl", "negative_ttl", NULL
};
static const char *const auth_keys[] = {
	"username", "username_env", "password", "password_env",
	"password_file", "docker_config", "ecr", "passthrough", NULL
};
static const char *const ecr_keys[] = {
	"region", "endpoint", "registry_id", "sts_endpoint", "imds_endpoint",
	"profile", "refresh_before", NULL
};
static const char *const log_keys[] = { "level", "access", NULL };
static const char *const log_access_keys[] = { "format", "file", NULL };
static const char *const admin_keys[] = { "listen", NULL };

/* Writes a message into a caller's buffer, which may be absent. */
static void __attribute__((format(printf, 3, 4)))
seterr(char *err, size_t errlen, const char *fmt, ...)
{
	va_list	 ap;

	if (err == NULL || errlen == 0)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

/*
 * The text scanner.  It only ever runs over text jansson has accepted, so
 * it can be simple; it still stops at the end of the buffer, whatever it
 * finds, and reports failure rather than guess.
 */

/* Steps over one byte; columns count characters, not bytes, as jansson's. */
static void
scan_step(struct scan *s)
{
	if (s->p >= s->end)
		return;
	if (*s->p++ == '\n') {
		s->line++;
		s->col = 1;
		return;
	}
	if (s->p < s->end && ((unsigned char)*s->p & 0xc0) == 0x80)
		return;		/* inside a UTF-8 sequence */
	s->col++;
}

/* Skips the white space JSON allows between tokens. */
static void
scan_ws(struct scan *s)
{
	while (s->p < s->end && (*s->p == ' ' || *s->p == '\t' ||
	    *s->p == '\r' || *s->p == '\n'))
		scan_step(s);
}

/* Returns where the string token at s->p ends (its closing quote). */
static const char *
scan_string_end(const struct scan *s)
{
	const char	*q = s->p + 1;

	while (q < s->end && *q != '"') {
		if (*q == '\\')
			q++;
		q++;
	}
	return q < s->end ? q : s->end;
}

/* Reads four hex digits of a \u escape; -1 when they are not there. */
static long
scan_hex4(const char *p, const char *end)
{
	long	 v = 0;
	int	 i;

	if (end - p < 4)
		return -1;
	for (i = 0; i < 4; i++) {
		v <<= 4;
		if (p[i] >= '0' && p[i] <= '9')
			v |= p[i] - '0';
		else if (p[i] >= 'a' && p[i] <= 'f')
			v |= p[i] - 'a' + 10;
		else if (p[i] >= 'A' && p[i] <= 'F')
			v |= p[i] - 'A' + 10;
		else
			return -1;
	}
	return v;
}

/* Appends one code point as UTF-8. */
static char *
utf8_put(char *o, long cp)
{
	if (cp < 0x80)
		*o++ = (char)cp;
	else if (cp < 0x800) {
		*o++ = (char)(0xc0 | (cp >> 6));
		*o++ = (char)(0x80 | (cp & 0x3f));
	} else if (cp < 0x10000) {
		*o++ = (char)(0xe0 | (cp >> 12));
		*o++ = (char)(0x80 | ((cp >> 6) & 0x3f));
		*o++ = (char)(0x80 | (cp & 0x3f));
	} else {
		*o++ = (char)(0xf0 | (cp >> 18));
		*o++ = (char)(0x80 | ((cp >> 12) & 0x3f));
		*o++ = (char)(0x80 | ((cp >> 6) & 0x3f));
		*o++ = (char)(0x80 | (cp & 0x3f));
	}
	return o;
}

/*
 * Decodes the string token at s->p, steps over it and tells whether it
 * equals key: member names may be written with escapes, jansson's are not.
 */
static int
scan_key_is(struct scan *s, const char *key)
{
	const char	*q = scan_string_end(s), *r;
	char		*buf, *o;
	long		 cp, lo;
	int		 match;

	buf = o = xcalloc(1, (size_t)(q - s->p) + 1);
	for (r = s->p + 1; r < q; ) {
		if (*r != '\\') {
			*o++ = *r++;
			continue;
		}
		if (++r >= q)
			break;
		switch (*r) {
		case 'b':
			*o++ = '\b';
			break;
		case 'f':
			*o++ = '\f';
			break;
		case 'n':
			*o++ = '\n';
			break;
		case 'r':
			*o++ = '\r';
			break;
		case 't':
			*o++ = '\t';
			break;
		case 'u':
			if ((cp = scan_hex4(r + 1, q)) == -1)
				goto done;
			r += 4;
			if (cp >= 0xd800 && cp <= 0xdbff && q - r > 6 &&
			    r[1] == '\\' && r[2] == 'u' &&
			    (lo = scan_hex4(r + 3, q)) >= 0xdc00 &&
			    lo <= 0xdfff) {
				cp = 0x10000 + ((cp - 0xd800) << 10) +
				    (lo - 0xdc00);
				r += 6;
			}
			o = utf8_put(o, cp);
			break;
		default:
			*o++ = *r;
			break;
		}
		r++;
	}
 done:
	*o = '\0';
	match = strcmp(buf, key) == 0;
	free(buf);
	while (s->p < q)
		scan_step(s);
	scan_step(s);		/* the closing quote */
	return match;
}

/* Steps over one whole value: a string, a container or a scalar. */
static void
scan_skip_value(struct scan *s)
{
	const char	*q;
	int		 depth = 0;

	if (s->p >= s->end)
		return;
	if (*s->p == '{' || *s->p == '[') {
		do {
			if (*s->p == '"') {
				q = scan_string_end(s);
				while (s->p < q)
					scan_step(s);
			} else if (*s->p == '{' || *s->p == '[')
				depth++;
			else if (*s->p == '}' || *s->p == ']')
				depth--;
			scan_step(s);
		} while (s->p < s->end && depth > 0);
		return;
	}
	if (*s->p == '"') {
		q = scan_string_end(s);
		while (s->p < q)
			scan_step(s);
		scan_step(s);
		return;
	}
	while (s->p < s->end && *s->p != ',' && *s->p != '}' &&
	    *s->p != ']' && *s->p != ' ' && *s->p != '\t' &&
	    *s->p != '\r' && *s->p != '\n')
		scan_step(s);
}

/*
 * Finds where the value at a key path sits in the text: the member's name
 * for an object member, the element itself for an array index, the first
 * token for the empty path.  Returns 0, or -1 when the path is not there.
 */
static int
scan_locate(const char *text, size_t len, const struct kseg *path, size_t n,
    int *line, int *col)
{
	struct scan	 s;
	size_t		 i, k;
	int		 kl, kc, match;

	s.p = text;
	s.end = text + len;
	s.line = 1;
	s.col = 1;
	scan_ws(&s);
	for (i = 0; i < n; i++) {
		if (path[i].key != NULL) {
			if (s.p >= s.end || *s.p != '{')
				return -1;
			scan_step(&s);
			for (;;) {
				scan_ws(&s);
				if (s.p >= s.end || *s.p != '"')
					return -1;
				kl = s.line;
				kc = s.col;
				match = scan_key_is(&s, path[i].key);
				scan_ws(&s);
				if (s.p >= s.end || *s.p != ':')
					return -1;
				scan_step(&s);
				scan_ws(&s);
				if (match) {
					if (i + 1 == n) {
						*line = kl;
						*col = kc;
						return 0;
					}
					break;
				}
				scan_skip_value(&s);
				scan_ws(&s);
				if (s.p >= s.end || *s.p != ',')
					return -1;
				scan_step(&s);
			}
		} else {
			if (s.p >= s.end || *s.p != '[')
				return -1;
			scan_step(&s);
			for (k = 0; ; k++) {
				scan_ws(&s);
				if (s.p >= s.end || *s.p == ']')
					return -1;
				if (k == path[i].index)
					break;
				scan_skip_value(&s);
				scan_ws(&s);
				if (s.p >= s.end || *s.p != ',')
					return -1;
				scan_step(&s);
			}
		}
	}
	*line = s.line;
	*col = s.col;
	return 0;
}

/*
 * Key paths and parse errors.
 */

/* Descends into an object member. */
static void
kpath_key(struct pctx *c, const char *key)
{
	if (c->depth >= KPATH_MAX)
		fatalx("%s: key path too deep", __func__);
	c->path[c->depth].key = key;
	c->path[c->depth].index = 0;
	c->depth++;
}

/* Descends into an array element. */
static void
kpath_index(struct pctx *c, size_t index)
{
	if (c->depth >= KPATH_MAX)
		fatalx("%s: key path too deep", __func__);
	c->path[c->depth].key = NULL;
	c->path[c->depth].index = index;
	c->depth++;
}

/* Climbs back up one step. */
static void
kpath_pop(struct pctx *c)
{
	if (c->depth == 0)
		fatalx("%s: key path empty", __func__);
	c->depth--;
}

/* Spells the current path as "upstreams[1].auth.username". */
static void
kpath_format(const struct pctx *c, char *buf, size_t len)
{
	size_t		 i, n = 0;
	const char	*k;
	int		 w;

	buf[0] = '\0';
	for (i = 0; i < c->depth && n < len; i++) {
		if (c->path[i].key == NULL) {
			w = snprintf(buf + n, len - n, "[%zu]",
			    c->path[i].index);
			if (w < 0)
				return;
			n += (size_t)w;
			continue;
		}
		if (i > 0 && n + 1 < len)
			buf[n++] = '.';
		/* Unknown keys are the user's text: keep control bytes out. */
		for (k = c->path[i].key; *k != '\0' && n + 1 < len; k++)
			buf[n++] = ((unsigned char)*k < 0x20 || *k == 0x7f) ?
			    '?' : *k;
		buf[n] = '\0';
	}
}

/* Formats an error at the current key path, with the file's line:col. */
static int __attribute__((format(printf, 2, 3)))
cerr(struct pctx *c, const char *fmt, ...)
{
	va_list	 ap;
	char	 msg[512], kp[256];
	int	 line, col;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	kpath_format(c, kp, sizeof(kp));
	if (scan_locate(c->text, c->len, c->path, c->depth, &line, &col) == 0)
		seterr(c->err, c->errlen, "%s:%d:%d: %s%s%s", c->file, line,
		    col, kp, kp[0] != '\0' ? ": " : "", msg);
	else
		seterr(c->err, c->errlen, "%s: %s%s%s", c->file, kp,
		    kp[0] != '\0' ? ": " : "", msg);
	return -1;
}

/* Names a JSON type for "expected X, got Y". */
static const char *
jtype(const json_t *v)
{
	switch (json_typeof(v)) {
	case JSON_OBJECT:
		return "an object";
	case JSON_ARRAY:
		return "an array";
	case JSON_STRING:
		return "a string";
	case JSON_INTEGER:
		return "an integer";
	case JSON_REAL:
		return "a real number";
	case JSON_TRUE:
	case JSON_FALSE:
		return "a boolean";
	case JSON_NULL:
		return "null";
	}
	return "something else";
}

/* Refuses any member of an object that is not in a list. */
static int
check_keys(struct pctx *c, json_t *o, const char *const *allowed)
{
	const char	*key;
	json_t		*v;
	size_t		 i;

	json_object_foreach(o, key, v) {
		for (i = 0; allowed[i] != NULL; i++)
			if (strcmp(key, allowed[i]) == 0)
				break;
		if (allowed[i] == NULL) {
			kpath_key(c, key);
			return cerr(c, "unknown key");
		}
	}
	return 0;
}

/* Requires an object at the current path, with only allowed members. */
static int
want_object(struct pctx *c, json_t *v, const char *const *allowed)
{
	if (!json_is_object(v))
		return cerr(c, "expected an object, got %s", jtype(v));
	return allowed != NULL ? check_keys(c, v, allowed) : 0;
}

/* Requires an array at the current path, a non-empty one when what is set. */
static int
want_array(struct pctx *c, const json_t *v, const char *what, size_t *n)
{
	*n = json_array_size(v);	/* 0 when it is not an array */
	if (!json_is_array(v))
		return cerr(c, "expected an array, got %s", jtype(v));
	if (*n == 0 && what != NULL)
		return cerr(c, "at least one %s is required", what);
	return 0;
}

/* Requires a non-empty string at the current path. */
static int
want_string(struct pctx *c, const json_t *v, const char **out)
{
	if (!json_is_string(v))
		return cerr(c, "expected a string, got %s", jtype(v));
	if (json_string_length(v) == 0)
		return cerr(c, "must not be empty");
	*out = json_string_value(v);
	return 0;
}

/* Like want_string(), but replaces *out with a copy. */
static int
want_string_dup(struct pctx *c, const json_t *v, char **out)
{
	const char	*s;

	if (want_string(c, v, &s) == -1)
		return -1;
	free(*out);
	*out = xstrdup(s);
	return 0;
}

/* Requires a boolean at the current path. */
static int
want_bool(struct pctx *c, const json_t *v, int *out)
{
	if (!json_is_boolean(v))
		return cerr(c, "expected a boolean, got %s", jtype(v));
	*out = json_is_true(v);
	return 0;
}

/*
 * Looks member key of o up.  *v is NULL when it is absent (an error with
 * MEMBER_REQUIRED), or when it is null and MEMBER_NULL_OK says null means
 * absent.
 */
static int
member_get(struct pctx *c, json_t *o, const char *key, int flags, json_t **v)
{
	if ((*v = json_object_get(o, key)) == NULL) {
		if (flags & MEMBER_REQUIRED)
			return cerr(c, "missing key \"%s\"", key);
		return 0;
	}
	if (json_is_null(*v) && (flags & MEMBER_NULL_OK))
		*v = NULL;
	return 0;
}

/* Copies string member key of o, when there, into *out (see member_get). */
static int
member_string(struct pctx *c, json_t *o, const char *key, int flags,
    char **out)
{
	json_t	*v;

	if (member_get(c, o, key, flags, &v) == -1)
		return -1;
	if (v == NULL)
		return 0;
	kpath_key(c, key);
	if (want_string_dup(c, v, out) == -1)
		return -1;
	kpath_pop(c);
	return 0;
}

/* Reads boolean member key of o, when there, into *out. */
static int
member_bool(struct pctx *c, json_t *o, const char *key, int *out)
{
	json_t	*v;

	if ((v = json_object_get(o, key)) == NULL)
		return 0;
	kpath_key(c, key);
	if (want_bool(c, v, out) == -1)
		return -1;
	kpath_pop(c);
	return 0;
}

/*
 * Numbers: plain integers, seconds kept as milliseconds, and sizes and
 * durations that may be written with a unit.
 */

/*
 * Reads a size or a duration written as a string: a decimal number with
 * at most QUANTITY_FRAC_MAX digits after the point, optional spaces, and
 * one of units, in any case ("20GiB", "1.5 t", "7d").  A fraction of the
 * base unit (one, a byte or a second) is rounded up, so that only "0"
 * gives 0.  Returns 0, or -1 with the reason in msg.
 */
static int
quantity_parse(const char *s, const struct unit *units, const char *help,
    const char *one, uint64_t *out, char *msg, size_t msglen)
{
	const struct unit	*u;
	const char		*p = s;
	uint64_t		 whole = 0, frac = 0, scale = 1;
	size_t			 nfrac = 0;

	if (*p < '0' || *p > '9') {
		seterr(msg, msglen, "\"%s\" is not a number followed by a "
		    "unit (%s)", s, help);
		return -1;
	}
	for (; *p >= '0' && *p <= '9'; p++) {
		if (whole > (UINT64_MAX - 9) / 10)
			goto toolarge;
		whole = whole * 10 + (uint64_t)(*p - '0');
	}
	if (*p == '.') {
		if (p[1] < '0' || p[1] > '9') {
			seterr(msg, msglen, "\"%s\": expected a digit after "
			    "the point", s);
			return -1;
		}
		for (p++; *p >= '0' && *p <= '9'; p++) {
			if (nfrac++ == QUANTITY_FRAC_MAX) {
				seterr(msg, msglen, "\"%s\": at most %d digits "
				    "after the point", s, QUANTITY_FRAC_MAX);
				return -1;
			}
			frac = frac * 10 + (uint64_t)(*p - '0');
			scale *= 10;
		}
	}
	while (*p == ' ')
		p++;
	for (u = units; u->name != NULL; u++)
		if (strcasecmp(u->name, p) == 0)
			break;
	if (u->name == NULL) {
		seterr(msg, msglen, "\"%s\": unknown unit \"%s\" (use %s)", s,
		    p, help);
		return -1;
	}
	/* Past INT64_MAX is too large for anyone; it also keeps this exact. */
	if (whole > (uint64_t)INT64_MAX / u->mult)
		goto toolarge;
	*out = whole * u->mult + (frac * u->mult + scale - 1) / scale;
	if (*out > (uint64_t)INT64_MAX)
		goto toolarge;
	return 0;

 toolarge:
	seterr(msg, msglen, "\"%s\" is too large a number of %ss", s, one);
	return -1;
}

/* Reads an integer from opt->min to opt->max. */
static int
num_read_int(struct pctx *c, const json_t *v, const struct num_opt *opt,
    long long *n)
{
	if (!json_is_integer(v))
		return cerr(c, "expected an integer, got %s", jtype(v));
	*n = json_integer_value(v);
	if (*n < opt->min || *n > opt->max)
		return cerr(c, "must be an integer from %lld to %lld",
		    opt->min, opt->max);
	return 0;
}

/* Reads seconds, maybe fractional, as milliseconds (0 when opt->zero). */
static int
num_read_ms(struct pctx *c, const json_t *v, const struct num_opt *opt,
    long long *n)
{
	double	 d;

	if (!json_is_number(v))
		return cerr(c, "expected a number of seconds, got %s",
		    jtype(v));
	d = json_number_value(v);
	if (opt->zero != NULL && d < 0)
		return cerr(c, "must not be negative (0 means %s)", opt->zero);
	if (opt->zero == NULL && d <= 0)
		return cerr(c, "must be a positive number of seconds");
	if (d > (double)opt->max)
		return cerr(c, "must be at most %lld seconds", opt->max);
	*n = (long long)(d * 1000.0 + 0.5);
	if (*n < 1 && d > 0) {
		if (opt->zero != NULL)
			return cerr(c, "must be 0 or at least 0.001 seconds");
		return cerr(c, "must be at least 0.001 seconds");
	}
	return 0;
}

/*
 * Reads a size in bytes (an integer, or a string with a unit) or a
 * duration in seconds (an integer, a real, or a string with a unit).
 */
static int
num_read_quantity(struct pctx *c, const json_t *v, const struct num_opt *opt,
    long long *n)
{
	const int	 bytes = opt->kind == NUM_BYTES;
	const char	*one = bytes ? "byte" : "second", *s;
	char		 msg[256];
	uint64_t	 q;
	double		 d;

	if (json_is_string(v)) {
		s = json_string_value(v);
		if (s[0] == '-')
			*n = -1;
		else if (quantity_parse(s, bytes ? size_units : duration_units,
		    bytes ? SIZE_UNITS_HELP : DURATION_UNITS_HELP, one, &q, msg,
		    sizeof(msg)) == -1)
			return cerr(c, "%s", msg);
		else
			*n = (long long)q;
	} else if (json_is_integer(v))
		*n = json_integer_value(v);
	else if (json_is_real(v) && !bytes) {
		d = json_real_value(v);
		if (d < 0)
			*n = -1;
		else if (d > (double)opt->max)
			return cerr(c, "must be at most %lld seconds",
			    opt->max);
		else {
			*n = (long long)d;
			if ((double)*n < d)
				(*n)++;	/* as quantity_parse() rounds */
		}
	} else if (bytes)
		return cerr(c, "expected an integer number of bytes or a "
		    "string such as \"20GiB\", got %s", jtype(v));
	else
		return cerr(c, "expected a number of seconds or a string such "
		    "as \"7d\", got %s", jtype(v));

	if (*n == 0 && opt->zero != NULL)
		return 0;
	if (*n < 0 && opt->zero != NULL)
		return cerr(c, "must not be negative (0 means %s)", opt->zero);
	if (*n < opt->min && opt->zero != NULL)
		return cerr(c, "must be 0 (%s) or at least %lld %ss",
		    opt->zero, opt->min, one);
	if (*n < opt->min)
		return cerr(c, "must be at least %lld %ss", opt->min, one);
	if (*n > opt->max)
		return cerr(c, "must be at most %lld %ss", opt->max, one);
	return 0;
}

/*
 * Reads the number at the current path as opt says, and stores it in the
 * struct at base (a struct config or a struct upstream_cfg).
 */
static int
num_parse(struct pctx *c, const json_t *v, const struct num_opt *opt,
    void *base)
{
	void		*dst = (char *)base + opt->off;
	long long	 n = 0;
	int		 rc = -1;

	switch (opt->kind) {
	case NUM_INT:
		rc = num_read_int(c, v, opt, &n);
		break;
	case NUM_MS:
		rc = num_read_ms(c, v, opt, &n);
		break;
	case NUM_BYTES:
	case NUM_SECONDS:
		rc = num_read_quantity(c, v, opt, &n);
		break;
	}
	if (rc == -1)
		return -1;
	switch (opt->kind) {
	case NUM_INT:
	case NUM_MS:
		*(int *)dst = (int)n;
		break;
	case NUM_BYTES:
		*(uint64_t *)dst = (uint64_t)n;
		break;
	case NUM_SECONDS:
		*(int64_t *)dst = (int64_t)n;
		break;
	}
	return 0;
}

/* Reads the members of o that opts names, when there, into base. */
static int
member_numbers(struct pctx *c, json_t *o, const struct num_opt *opts,
    void *base)
{
	const struct num_opt	*opt;
	json_t			*v;

	for (opt = opts; opt->name != NULL; opt++) {
		if ((v = json_object_get(o, opt->name)) == NULL)
			continue;
		kpath_key(c, opt->name);
		if (num_parse(c, v, opt, base) == -1)
			return -1;
		kpath_pop(c);
	}
	return 0;
}

/* Parses a section made only of numbers against its table. */
static int
parse_numbers(struct pctx *c, json_t *o, const struct num_opt *opts,
    void *base)
{
	const struct num_opt	*opt;
	const char		*key;
	json_t			*v;

	if (want_object(c, o, NULL) == -1)
		return -1;
	json_object_foreach(o, key, v) {
		for (opt = opts; opt->name != NULL; opt++)
			if (strcmp(opt->name, key) == 0)
				break;
		kpath_key(c, key);
		if (opt->name == NULL)
			return cerr(c, "unknown key");
		if (num_parse(c, v, opt, base) == -1)
			return -1;
		kpath_pop(c);
	}
	return 0;
}

/*
 * Syntax of the small things: ports, host names, addresses, prefixes.
 */

/* Parses a decimal port 1..65535 into a freshly allocated canonical form. */
static int
port_parse(const char *s, size_t n, char **out)
{
	long	 v = 0;
	size_t	 i;

	if (n == 0 || n > 5)
		return -1;
	for (i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -1;
		v = v * 10 + (s[i] - '0');
	}
	if (v < 1 || v > 65535)
		return -1;
	xasprintf(out, "%ld", v);
	return 0;
}

/* Is this a plausible DNS name or IPv4 literal? */
static int
hostname_valid(const char *s, size_t n)
{
	size_t	 i;

	if (n == 0 || n > HOST_NAME_MAX_LEN)
		return 0;
	for (i = 0; i < n; i++) {
		if (!((s[i] >= 'a' && s[i] <= 'z') ||
		    (s[i] >= 'A' && s[i] <= 'Z') ||
		    (s[i] >= '0' && s[i] <= '9') ||
		    s[i] == '.' || s[i] == '-' || s[i] == '_'))
			return 0;
	}
	return 1;
}

/* Frees the parts of a split host:port. */
static void
hostport_clear(struct hostport *hp)
{
	free(hp->host);
	free(hp->port);
	memset(hp, 0, sizeof(*hp));
}

/*
 * Splits "host", "host:port", "[v6]" or "[v6]:port" (and ":port" with
 * HP_ANY_HOST); the host comes back lower-cased.  Messages go to err.
 */
static int
hostport_parse(const char *s, int flags, struct hostport *hp, char *err,
    size_t errlen)
{
	char		 v6buf[INET6_ADDRSTRLEN];
	struct in6_addr	 in6;
	const char	*host, *port = NULL, *close, *colon;
	size_t		 hostlen, i;

	memset(hp, 0, sizeof(*hp));
	if (s[0] == '[') {
		if ((close = strchr(s, ']')) == NULL) {
			seterr(err, errlen, "missing ']' after IPv6 address");
			return -1;
		}
		host = s + 1;
		hostlen = (size_t)(close - host);
		if (hostlen == 0 || hostlen >= sizeof(v6buf)) {
			seterr(err, errlen, "invalid IPv6 address");
			return -1;
		}
		memcpy(v6buf, host, hostlen);
		v6buf[hostlen] = '\0';
		if (inet_pton(AF_INET6, v6buf, &in6) != 1) {
			seterr(err, errlen, "invalid IPv6 address");
			return -1;
		}
		if (close[1] == ':')
			port = close + 2;
		else if (close[1] != '\0') {
			seterr(err, errlen, "unexpected characters after ']'");
			return -1;
		}
		hp->v6 = 1;
	} else {
		host = s;
		if ((colon = strchr(s, ':')) != NULL) {
			if (strchr(colon + 1, ':') != NULL) {
				seterr(err, errlen, "an IPv6 address must be "
				    "written in brackets, as [::1]:5000");
				return -1;
			}
			hostlen = (size_t)(colon - s);
			port = colon + 1;
		} else
			hostlen = strlen(s);
		if (hostlen == 0 && !(flags & HP_ANY_HOST)) {
			seterr(err, errlen, "missing host name");
			return -1;
		}
		if (hostlen > 0 && !hostname_valid(host, hostlen)) {
			seterr(err, errlen, "invalid host name");
			return -1;
		}
	}
	if (port == NULL && (flags & HP_NEED_PORT)) {
		seterr(err, errlen, "missing port (write host:port)");
		return -1;
	}
	if (port != NULL && port_parse(port, strlen(port), &hp->port) == -1) {
		seterr(err, errlen, "port must be a number from 1 to 65535");
		return -1;
	}
	if (hostlen == 0)
		hp->host = xstrdup(LISTEN_ANY_HOST);
	else {
		hp->host = xstrndup(host, hostlen);
		for (i = 0; i < hostlen; i++)
			if (hp->host[i] >= 'A' && hp->host[i] <= 'Z')
				hp->host[i] = (char)(hp->host[i] - 'A' + 'a');
	}
	return 0;
}

/* Joins a split host:port back together, brackets and all. */
static char *
hostport_join(const struct hostport *hp)
{
	char	*s;

	xasprintf(&s, "%s%s%s%s%s", hp->v6 ? "[" : "", hp->host,
	    hp->v6 ? "]" : "", hp->port != NULL ? ":" : "",
	    hp->port != NULL ? hp->port : "");
	return s;
}

/* Is one prefix the other, or inside it at a '/'? */
static int
prefix_overlaps(const char *a, const char *b)
{
	size_t	 la = strlen(a), lb = strlen(b);

	if (la > lb)
		return prefix_overlaps(b, a);
	return strncmp(a, b, la) == 0 && (b[la] == '\0' || b[la] == '/');
}

/* Is an upstream name made of [A-Za-z0-9._-], 1 to 64 of them? */
static int
upstream_name_valid(const char *s)
{
	size_t	 n = strlen(s);

	return n >= 1 && n <= UPSTREAM_NAME_MAX &&
	    strspn(s, UPSTREAM_NAME_CHARS) == n;
}

/*
 * Freeing.
 */

/* Frees what one listener owns. */
static void
listen_clear(struct listen_cfg *l)
{
	free(l->address);
	free(l->host);
	free(l->port);
	free(l->cert_file);
	free(l->key_file);
	memset(l, 0, sizeof(*l));
}

/* Frees an array of listeners, filled or not. */
static void
listens_free(struct listen_cfg *ls, size_t n)
{
	size_t	 i;

	for (i = 0; i < n && ls != NULL; i++)
		listen_clear(&ls[i]);
	free(ls);
}

/* Frees what one upstream owns; the password is wiped first. */
static void
upstream_clear(struct upstream_cfg *u)
{
	size_t	 i;

	free(u->name);
	free(u->url);
	free(u->host);
	free(u->port);
	free(u->hostport);
	free(u->base_path);
	for (i = 0; i < u->naliases; i++)
		free(u->aliases[i]);
	free(u->aliases);
	free(u->prefix);
	free(u->username);
	if (u->password != NULL) {
		explicit_bzero(u->password, strlen(u->password));
		free(u->password);
	}
	free(u->username_env);
	free(u->password_env);
	free(u->password_file);
	free(u->docker_config);
	free(u->ecr.region);
	free(u->ecr.endpoint);
	free(u->ecr.registry_id);
	free(u->ecr.sts_endpoint);
	free(u->ecr.imds_endpoint);
	free(u->ecr.profile);
	free(u->ca_file);
	memset(u, 0, sizeof(*u));
}

/* Frees an array of upstreams, filled or not. */
static void
upstreams_free(struct upstream_cfg *us, size_t n)
{
	size_t	 i;

	for (i = 0; i < n && us != NULL; i++)
		upstream_clear(&us[i]);
	free(us);
}

/* Frees a list of strings. */
static void
strings_free(char **v, size_t n)
{
	size_t	 i;

	for (i = 0; i < n && v != NULL; i++)
		free(v[i]);
	free(v);
}

/* Frees the "auth" section, users and all. */
static void
access_free(struct access_cfg *ac)
{
	size_t	 i;

	if (ac == NULL)
		return;
	free(ac->htpasswd);
	for (i = 0; i < ac->ngroups; i++) {
		free(ac->groups[i].name);
		strings_free(ac->groups[i].users, ac->groups[i].nusers);
	}
	free(ac->groups);
	for (i = 0; i < ac->nrules; i++) {
		strings_free(ac->rules[i].users, ac->rules[i].nusers);
		strings_free(ac->rules[i].groups, ac->rules[i].ngroups);
		strings_free(ac->rules[i].upstreams, ac->rules[i].nupstreams);
		strings_free(ac->rules[i].repos, ac->rules[i].nrepos);
	}
	free(ac->rules);
	users_free(ac->users, ac->nusers);
	free(ac);
}

/* Drops a reference; the last one frees (see upstream.c). */
void
config_unref(struct config *cf)
{
	if (cf != NULL && --cf->refs <= 0)
		config_free(cf);
}

/* Frees a configuration, including one a parser gave up on half way. */
void
config_free(struct config *cf)
{
	if (cf == NULL)
		return;
	free(cf->path);
	listens_free(cf->listens, cf->nlistens);
	listens_free(cf->admin, cf->admin != NULL ? 1 : 0);
	upstreams_free(cf->upstreams, cf->nupstreams);
	free(cf->data_dir);
	free(cf->access_file);
	access_free(cf->access);
	free(cf);
}

/*
 * Building blocks shared by the defaults, the file and the overrides.
 */

/* Fills a plain listener from "host:port", "[v6]:port" or ":port". */
static int
listen_set(struct listen_cfg *l, const char *addr, char *err, size_t errlen)
{
	struct hostport	 hp;

	if (hostport_parse(addr, HP_NEED_PORT | HP_ANY_HOST, &hp, err,
	    errlen) == -1)
		return -1;
	l->address = xstrdup(addr);
	l->host = hp.host;
	l->port = hp.port;
	return 0;
}

/* Adds an alias (already normalised) to an upstream. */
static void
upstream_add_alias(struct upstream_cfg *u, const char *alias)
{
	char	**a;

	a = xcalloc(u->naliases + 1, sizeof(*a));
	if (u->naliases > 0)
		memcpy(a, u->aliases, u->naliases * sizeof(*a));
	a[u->naliases++] = xstrdup(alias);
	free(u->aliases);
	u->aliases = a;
}

/* Does an upstream answer to this (normalised) alias? */
static int
upstream_has_alias(const struct upstream_cfg *u, const char *alias)
{
	size_t	 i;

	for (i = 0; i < u->naliases; i++)
		if (strcmp(u->aliases[i], alias) == 0)
			return 1;
	return 0;
}

/* Docker Hub's short names need "library/": is this upstream Docker Hub? */
static int
upstream_is_docker_hub(const struct upstream_cfg *u)
{
	return strcmp(u->host, DOCKER_HUB_HOST) == 0 ||
	    upstream_has_alias(u, DOCKER_HUB_ALIAS);
}

/* Sets what an upstream has unless its configuration says otherwise. */
static void
upstream_set_defaults(struct upstream_cfg *u)
{
	u->tls_verify = 1;
	u->tag_ttl_ms = DEFAULT_TAG_TTL_MS;
	u->negative_ttl_ms = DEFAULT_NEGATIVE_TTL_MS;
}

/*
 * Parses an upstream URL into cfg's tls, host, port, hostport and
 * base_path.  Only http and https, no user info, query or fragment.  The
 * URL itself is never copied into a message: it may hold a password.
 */
int
config_parse_url(const char *url, struct upstream_cfg *cfg, char *err,
    size_t errlen)
{
	struct hostport	 hp;
	const char	*p, *path;
	char		*authority;
	size_t		 n, i;
	int		 tls;

	memset(&hp, 0, sizeof(hp));
	if (strncasecmp(url, "https://", 8) == 0) {
		tls = 1;
		p = url + 8;
	} else if (strncasecmp(url, "http://", 7) == 0) {
		tls = 0;
		p = url + 7;
	} else {
		seterr(err, errlen, "scheme must be http or https");
		return -1;
	}
	n = strcspn(p, "/?#");
	if (memchr(p, '@', n) != NULL) {
		seterr(err, errlen, "user information is not allowed in the "
		    "URL (use \"auth\")");
		return -1;
	}
	if (n == 0) {
		seterr(err, errlen, "missing host name");
		return -1;
	}
	path = p + n;
	if (strpbrk(path, "?#") != NULL) {
		seterr(err, errlen, "a query or fragment is not allowed in "
		    "the URL");
		return -1;
	}
	for (i = 0; path[i] != '\0'; i++) {
		if ((unsigned char)path[i] <= 0x20 || path[i] == 0x7f) {
			seterr(err, errlen, "the URL path must not contain "
			    "spaces or control characters");
			return -1;
		}
	}
	authority = xstrndup(p, n);
	if (hostport_parse(authority, 0, &hp, err, errlen) == -1) {
		free(authority);
		return -1;
	}
	free(authority);

	/* Everything checked: replace what cfg had. */
	n = strlen(path);
	while (n > 0 && path[n - 1] == '/')
		n--;
	free(cfg->hostport);
	cfg->hostport = hostport_join(&hp);
	free(cfg->base_path);
	cfg->base_path = xstrndup(path, n);
	free(cfg->host);
	cfg->host = hp.host;
	free(cfg->port);
	cfg->port = hp.port != NULL ? hp.port : xstrdup(tls ? "443" : "80");
	cfg->tls = tls;
	return 0;
}

/*
 * Fills an upstream from nothing but a URL (the -u flag and its variable):
 * named after its host, answering to its host, Docker Hub's names added
 * when it is Docker Hub.
 */
static int
upstream_from_url(struct upstream_cfg *u, const char *url, char *err,
    size_t errlen)
{
	size_t	 i;

	memset(u, 0, sizeof(*u));
	if (config_parse_url(url, u, err, errlen) == -1)
		goto fail;
	u->url = xstrdup(url);
	/* An IPv6 host has ':' in it, which a name may not. */
	u->name = xstrndup(u->host, UPSTREAM_NAME_MAX);
	for (i = 0; u->name[i] != '\0'; i++)
		if (strchr(UPSTREAM_NAME_CHARS, u->name[i]) == NULL)
			u->name[i] = '-';
	upstream_add_alias(u, u->hostport);
	if (strcmp(u->host, DOCKER_HUB_HOST) == 0) {
		if (!upstream_has_alias(u, DOCKER_HUB_ALIAS))
			upstream_add_alias(u, DOCKER_HUB_ALIAS);
		if (!upstream_has_alias(u, DOCKER_HUB_INDEX))
			upstream_add_alias(u, DOCKER_HUB_INDEX);
	}
	u->library_prefix = upstream_is_docker_hub(u);
	upstream_set_defaults(u);
	return 0;

 fail:
	upstream_clear(u);
	return -1;
}

/* The configuration used when there is no file: Docker Hub on loopback. */
struct config *
config_default(void)
{
	struct config		*cf;
	struct upstream_cfg	*u;

	cf = xcalloc(1, sizeof(*cf));
	cf->refs = 1;
	cf->listens = xcalloc(1, sizeof(*cf->listens));
	cf->nlistens = 1;
	if (listen_set(&cf->listens[0], DEFAULT_LISTEN, NULL, 0) == -1)
		fatalx("%s: bad DEFAULT_LISTEN", __func__);
	cf->data_dir = xstrdup(DEFAULT_DATA_DIR);

	cf->upstreams = xcalloc(1, sizeof(*cf->upstreams));
	cf->nupstreams = 1;
	u = &cf->upstreams[0];
	if (config_parse_url(DEFAULT_UPSTREAM_URL, u, NULL, 0) == -1)
		fatalx("%s: bad DEFAULT_UPSTREAM_URL", __func__);
	u->name = xstrdup(DEFAULT_UPSTREAM_NAME);
	u->url = xstrdup(DEFAULT_UPSTREAM_URL);
	upstream_add_alias(u, DOCKER_HUB_ALIAS);
	upstream_add_alias(u, DOCKER_HUB_INDEX);
	u->library_prefix = 1;
	upstream_set_defaults(u);
	cf->default_upstream = 0;

	cf->connect_timeout_ms = DEFAULT_CONNECT_TIMEOUT_MS;
	cf->first_byte_timeout_ms = DEFAULT_FIRST_BYTE_TIMEOUT_MS;
	cf->idle_timeout_ms = DEFAULT_IDLE_TIMEOUT_MS;
	cf->client_timeout_ms = DEFAULT_CLIENT_TIMEOUT_MS;
	cf->drain_timeout_ms = DEFAULT_DRAIN_TIMEOUT_MS;
	cf->max_connections = DEFAULT_MAX_CONNECTIONS;
	cf->max_header_bytes = DEFAULT_MAX_HEADER_BYTES;
	cf->max_redirects = DEFAULT_MAX_REDIRECTS;
	cf->log_level = LOG_LEVEL_INFO;
	cf->access_format = ACCESS_FORMAT_COMBINED;
	cf->access_file = NULL;
	cf->cache_max_bytes = 0;
	cf->cache_high_water = DEFAULT_CACHE_HIGH_WATER;
	cf->cache_low_water = DEFAULT_CACHE_LOW_WATER;
	cf->cache_max_idle_s = 0;
	cf->admin = xcalloc(1, sizeof(*cf->admin));
	if (listen_set(cf->admin, DEFAULT_ADMIN_LISTEN, NULL, 0) == -1)
		fatalx("%s: bad DEFAULT_ADMIN_LISTEN", __func__);
	return cf;
}

/*
 * The file, section by section.  On error each parser returns -1 with the
 * key path still pointing at the culprit; nothing pops after a failure.
 */

/* Parses "tls": {"certificate", "key"}, both or neither, into a listener. */
static int
parse_listen_tls(struct pctx *c, json_t *v, struct listen_cfg *l)
{
	if (json_is_null(v))
		return 0;
	if (want_object(c, v, tls_keys) == -1)
		return -1;
	if ((json_object_get(v, "certificate") == NULL) !=
	    (json_object_get(v, "key") == NULL))
		return cerr(c, "\"certificate\" and \"key\" go together: "
		    "give both or neither");
	if (member_string(c, v, "certificate", 0, &l->cert_file) == -1 ||
	    member_string(c, v, "key", 0, &l->key_file) == -1)
		return -1;
	return 0;
}

/* Fills a listener from the address string at the current path. */
static int
parse_listen_address(struct pctx *c, json_t *v, struct listen_cfg *l)
{
	char		 msg[256];
	const char	*s;

	if (want_string(c, v, &s) == -1)
		return -1;
	if (listen_set(l, s, msg, sizeof(msg)) == -1)
		return cerr(c, "listen address \"%s\": %s", s, msg);
	return 0;
}

/* Parses one element of "listen": a string, or {address, tls}. */
static int
parse_listen(struct pctx *c, json_t *v, struct listen_cfg *l)
{
	json_t	*addr, *tls;

	if (json_is_string(v))
		return parse_listen_address(c, v, l);
	if (!json_is_object(v))
		return cerr(c, "expected a string or an object, got %s",
		    jtype(v));
	if (check_keys(c, v, listen_keys) == -1 ||
	    member_get(c, v, "address", MEMBER_REQUIRED, &addr) == -1)
		return -1;
	kpath_key(c, "address");
	if (parse_listen_address(c, addr, l) == -1)
		return -1;
	kpath_pop(c);
	if ((tls = json_object_get(v, "tls")) != NULL) {
		kpath_key(c, "tls");
		if (parse_listen_tls(c, tls, l) == -1)
			return -1;
		kpath_pop(c);
	}
	return 0;
}

/* Parses "listen": a non-empty array of distinct addresses. */
static int
parse_listens(struct pctx *c, json_t *v, struct config *cf)
{
	struct listen_cfg	*ls = NULL;
	size_t			 i, j, n;

	if (want_array(c, v, "address", &n) == -1)
		return -1;
	ls = xcalloc(n, sizeof(*ls));
	for (i = 0; i < n; i++) {
		kpath_index(c, i);
		if (parse_listen(c, json_array_get(v, i), &ls[i]) == -1)
			goto fail;
		for (j = 0; j < i; j++) {
			if (strcmp(ls[i].host, ls[j].host) == 0 &&
			    strcmp(ls[i].port, ls[j].port) == 0) {
				cerr(c, "address \"%s\" is already listed "
				    "as listen[%zu]", ls[i].address, j);
				goto fail;
			}
		}
		kpath_pop(c);
	}
	listens_free(cf->listens, cf->nlistens);
	cf->listens = ls;
	cf->nlistens = n;
	return 0;

 fail:
	listens_free(ls, n);
	return -1;
}

/* Parses "aliases": host names, lower-cased, no repeats. */
static int
parse_aliases(struct pctx *c, json_t *v, struct upstream_cfg *u)
{
	struct hostport	 hp;
	char		 msg[256], *alias;
	const char	*s;
	size_t		 i, n;

	if (want_array(c, v, NULL, &n) == -1)
		return -1;
	for (i = 0; i < n; i++) {
		kpath_index(c, i);
		if (want_string(c, json_array_get(v, i), &s) == -1)
			return -1;
		if (hostport_parse(s, 0, &hp, msg, sizeof(msg)) == -1)
			return cerr(c, "alias \"%s\": %s", s, msg);
		alias = hostport_join(&hp);
		hostport_clear(&hp);
		if (upstream_has_alias(u, alias)) {
			cerr(c, "alias \"%s\" is listed twice", alias);
			free(alias);
			return -1;
		}
		upstream_add_alias(u, alias);
		free(alias);
		kpath_pop(c);
	}
	return 0;
}

/*
 * Parses "auth": null for anonymous; {"ecr": {...}}; {"passthrough": true};
 * or a username (inline or username_env) with one password source
 * (password, password_env, password_file); or {"docker_config": path}.
 * Files and variables are read later, by config_validate().
 */
static int
parse_auth(struct pctx *c, json_t *v, struct upstream_cfg *u)
{
	json_t	*e, *pt;
	int	 nuser, npass, npt = 0;

	if (json_is_null(v))
		return 0;
	if (!json_is_object(v))
		return cerr(c, "expected an object or null, got %s", jtype(v));
	if (check_keys(c, v, auth_keys) == -1)
		return -1;
	/* member_string() never shows the value: passwords stay put. */
	if (member_string(c, v, "username", 0, &u->username) == -1 ||
	    member_string(c, v, "username_env", 0, &u->username_env) == -1 ||
	    member_string(c, v, "password", 0, &u->password) == -1 ||
	    member_string(c, v, "password_env", 0, &u->password_env) == -1 ||
	    member_string(c, v, "password_file", 0, &u->password_file) == -1 ||
	    member_string(c, v, "docker_config", 0, &u->docker_config) == -1 ||
	    member_get(c, v, "passthrough", 0, &pt) == -1)
		return -1;
	if (pt != NULL) {
		kpath_key(c, "passthrough");
		if (want_bool(c, pt, &npt) == -1)
			return -1;
		kpath_pop(c);
	}
	nuser = (u->username != NULL) + (u->username_env != NULL);
	npass = (u->password != NULL) + (u->password_env != NULL) +
	    (u->password_file != NULL);
	e = json_object_get(v, "ecr");
	if ((e != NULL) + npt + (u->docker_config != NULL) +
	    (nuser + npass > 0) > 1)
		return cerr(c, "give one kind of credentials: a username and "
		    "password, docker_config, ecr or passthrough");
	if (e != NULL) {
		kpath_key(c, "ecr");
		if (want_object(c, e, ecr_keys) == -1 ||
		    member_string(c, e, "region", 0, &u->ecr.region) == -1 ||
		    member_string(c, e, "endpoint", 0, &u->ecr.endpoint) == -1 ||
		    member_string(c, e, "registry_id", 0,
		    &u->ecr.registry_id) == -1 ||
		    member_string(c, e, "sts_endpoint", 0,
		    &u->ecr.sts_endpoint) == -1 ||
		    member_string(c, e, "imds_endpoint", 0,
		    &u->ecr.imds_endpoint) == -1 ||
		    member_string(c, e, "profile", 0, &u->ecr.profile) == -1 ||
		    member_numbers(c, e, ecr_opts, &u->ecr) == -1)
			return -1;
		kpath_pop(c);
		u->cred_kind = CRED_ECR;
		return 0;
	}
	if (npt) {
		u->cred_kind = CRED_PASSTHROUGH;
		return 0;
	}
	if (u->docker_config != NULL) {
		u->cred_kind = CRED_STATIC;
		return 0;
	}
	if (nuser + npass == 0)
		return 0;
	if (nuser != 1)
		return cerr(c, "give the username as one of username or "
		    "username_env");
	if (npass != 1)
		return cerr(c, "give the password as one of password, "
		    "password_env or password_file");
	u->cred_kind = CRED_STATIC;
	return 0;
}

/* Parses one element of "upstreams" into u. */
static int
parse_upstream(struct pctx *c, json_t *o, struct upstream_cfg *u)
{
	char		 msg[256];
	const char	*s;
	json_t		*v;

	if (want_object(c, o, upstream_keys) == -1)
		return -1;
	upstream_set_defaults(u);

	if (member_string(c, o, "name", MEMBER_REQUIRED, &u->name) == -1)
		return -1;
	if (!upstream_name_valid(u->name)) {
		kpath_key(c, "name");
		return cerr(c, "name \"%s\" must be 1 to %d of "
		    "A-Z a-z 0-9 . _ -", u->name, UPSTREAM_NAME_MAX);
	}

	if (member_string(c, o, "url", MEMBER_REQUIRED, &u->url) == -1)
		return -1;
	if (config_parse_url(u->url, u, msg, sizeof(msg)) == -1) {
		kpath_key(c, "url");
		return cerr(c, "%s", msg);
	}

	if ((v = json_object_get(o, "aliases")) != NULL) {
		kpath_key(c, "aliases");
		if (parse_aliases(c, v, u) == -1)
			return -1;
		kpath_pop(c);
	}

	if ((v = json_object_get(o, "prefix")) != NULL && !json_is_null(v)) {
		kpath_key(c, "prefix");
		if (!json_is_string(v))
			return cerr(c, "expected a string or null, got %s",
			    jtype(v));
		s = json_string_value(v);
		if (!v2_name_valid(s))
			return cerr(c, "prefix \"%s\" is not a repository "
			    "name: lower-case components ([a-z0-9] joined by "
			    ". _ __ or -) separated by '/'", s);
		u->prefix = xstrdup(s);
		kpath_pop(c);
	}

	if ((v = json_object_get(o, "auth")) != NULL) {
		kpath_key(c, "auth");
		if (parse_auth(c, v, u) == -1)
			return -1;
		kpath_pop(c);
	}

	/* library_prefix last: its default depends on the URL and aliases. */
	u->library_prefix = upstream_is_docker_hub(u);
	if (member_string(c, o, "ca_file", MEMBER_NULL_OK, &u->ca_file) == -1 ||
	    member_bool(c, o, "tls_verify", &u->tls_verify) == -1 ||
	    member_bool(c, o, "library_prefix", &u->library_prefix) == -1 ||
	    member_numbers(c, o, upstream_opts, u) == -1)
		return -1;
	return 0;
}

/* Points the path at the member of upstreams[i] that holds a host name. */
static void
kpath_route_name(struct pctx *c, size_t i, const struct upstream_cfg *u,
    const char *name)
{
	size_t	 k;

	kpath_index(c, i);
	for (k = 0; k < u->naliases; k++) {
		if (strcmp(u->aliases[k], name) == 0) {
			kpath_key(c, "aliases");
			kpath_index(c, k);
			return;
		}
	}
	kpath_key(c, "url");
}

/*
 * Checks upstreams[i] against the ones before it: names, prefixes and the
 * host names it answers to (its URL's host:port and its aliases) must not
 * collide, or a request could not tell where to go.
 */
static int
check_upstream_clash(struct pctx *c, struct upstream_cfg *us, size_t i)
{
	struct upstream_cfg	*u = &us[i], *o;
	const char		*name;
	size_t			 j, k;

	for (j = 0; j < i; j++) {
		o = &us[j];
		if (strcmp(u->name, o->name) == 0) {
			kpath_index(c, i);
			kpath_key(c, "name");
			return cerr(c, "upstream name \"%s\" is already used "
			    "by upstreams[%zu]", u->name, j);
		}
		if (u->prefix != NULL && o->prefix != NULL &&
		    prefix_overlaps(u->prefix, o->prefix)) {
			kpath_index(c, i);
			kpath_key(c, "prefix");
			if (strcmp(u->prefix, o->prefix) == 0)
				return cerr(c, "prefix \"%s\" is already used "
				    "by upstream \"%s\"", u->prefix, o->name);
			return cerr(c, "prefix \"%s\" overlaps prefix \"%s\" "
			    "of upstream \"%s\"", u->prefix, o->prefix,
			    o->name);
		}
		for (k = 0; k <= u->naliases; k++) {
			name = k < u->naliases ? u->aliases[k] : u->hostport;
			if (strcmp(name, o->hostport) == 0 ||
			    upstream_has_alias(o, name)) {
				kpath_route_name(c, i, u, name);
				return cerr(c, "host \"%s\" already routes to "
				    "upstream \"%s\"", name, o->name);
			}
		}
	}
	return 0;
}

/* Parses "upstreams": a non-empty array whose members do not collide. */
static int
parse_upstreams(struct pctx *c, json_t *v, struct config *cf)
{
	struct upstream_cfg	*us;
	size_t			 i, n;

	if (want_array(c, v, "upstream", &n) == -1)
		return -1;
	us = xcalloc(n, sizeof(*us));
	for (i = 0; i < n; i++) {
		kpath_index(c, i);
		if (parse_upstream(c, json_array_get(v, i), &us[i]) == -1)
			goto fail;
		kpath_pop(c);
		if (check_upstream_clash(c, us, i) == -1)
			goto fail;
	}
	upstreams_free(cf->upstreams, cf->nupstreams);
	cf->upstreams = us;
	cf->nupstreams = n;
	return 0;

 fail:
	upstreams_free(us, n);
	return -1;
}

/* Parses "default_upstream": a name, or null for none. */
static int
parse_default_upstream(struct pctx *c, json_t *v, struct config *cf)
{
	const char	*s;
	size_t		 i;

	if (json_is_null(v)) {
		cf->default_upstream = -1;
		return 0;
	}
	if (!json_is_string(v))
		return cerr(c, "expected a string or null, got %s", jtype(v));
	s = json_string_value(v);
	for (i = 0; i < cf->nupstreams; i++) {
		if (strcmp(cf->upstreams[i].name, s) == 0) {
			cf->default_upstream = (int)i;
			return 0;
		}
	}
	return cerr(c, "no upstream is named \"%s\"", s);
}

/* Parses "timeouts": seconds, kept as milliseconds. */
static int
parse_timeouts(struct pctx *c, json_t *o, struct config *cf)
{
	return parse_numbers(c, o, timeout_opts, cf);
}

/* Parses "limits": integers. */
static int
parse_limits(struct pctx *c, json_t *o, struct config *cf)
{
	return parse_numbers(c, o, limit_opts, cf);
}

/*
 * Parses "cache": the budget, its water marks and the idle limit.  The low
 * mark must sit below the high one; the message points at the one the
 * file sets (low_water when it sets both).
 */
static int
parse_cache(struct pctx *c, json_t *o, struct config *cf)
{
	if (parse_numbers(c, o, cache_opts, cf) == -1)
		return -1;
	if (cf->cache_low_water < cf->cache_high_water)
		return 0;
	if (json_object_get(o, "low_water") != NULL) {
		kpath_key(c, "low_water");
		return cerr(c, "%d must be below high_water (%d)",
		    cf->cache_low_water, cf->cache_high_water);
	}
	kpath_key(c, "high_water");
	return cerr(c, "%d must be above low_water (%d, its default)",
	    cf->cache_high_water, cf->cache_low_water);
}

/* Parses "data_dir": a non-empty string. */
static int
parse_data_dir(struct pctx *c, json_t *v, struct config *cf)
{
	return want_string_dup(c, v, &cf->data_dir);
}

/*
 * Parses "access": {"format", "file"}.  A file that is null or absent
 * means stderr; so does "access": null, with the default format.
 */
static int
parse_log_access(struct pctx *c, json_t *o, struct config *cf)
{
	const char	*s;
	json_t		*v;

	if (json_is_null(o))
		return 0;
	if (want_object(c, o, log_access_keys) == -1)
		return -1;
	if ((v = json_object_get(o, "format")) != NULL) {
		kpath_key(c, "format");
		if (want_string(c, v, &s) == -1)
			return -1;
		if (log_access_format_parse(s, &cf->access_format) == -1)
			return cerr(c, "format \"%s\" must be combined or json",
			    s);
		kpath_pop(c);
	}
	return member_string(c, o, "file", MEMBER_NULL_OK, &cf->access_file);
}

/* Parses "log": {"level", "access"}. */
static int
parse_log(struct pctx *c, json_t *o, struct config *cf)
{
	const char	*s;
	json_t		*v;

	if (want_object(c, o, log_keys) == -1)
		return -1;
	if ((v = json_object_get(o, "level")) != NULL) {
		kpath_key(c, "level");
		if (want_string(c, v, &s) == -1)
			return -1;
		if (log_level_parse(s, &cf->log_level) == -1)
			return cerr(c, "level \"%s\" must be one of error, "
			    "warn, info, debug", s);
		kpath_pop(c);
	}
	if ((v = json_object_get(o, "access")) != NULL) {
		kpath_key(c, "access");
		if (parse_log_access(c, v, cf) == -1)
			return -1;
		kpath_pop(c);
	}
	return 0;
}

/*
 * Parses "admin": {"listen": ADDRESS} for the admin listener (plain HTTP,
 * an address as in "listen"), or null for none.
 */
static int
parse_admin(struct pctx *c, json_t *o, struct config *cf)
{
	struct listen_cfg	*l;
	json_t			*v;

	listens_free(cf->admin, cf->admin != NULL ? 1 : 0);
	cf->admin = NULL;
	if (json_is_null(o))
		return 0;
	if (!json_is_object(o))
		return cerr(c, "expected an object or null, got %s", jtype(o));
	if (check_keys(c, o, admin_keys) == -1 ||
	    member_get(c, o, "listen", MEMBER_REQUIRED, &v) == -1)
		return -1;
	l = xcalloc(1, sizeof(*l));
	kpath_key(c, "listen");
	if (parse_listen_address(c, v, l) == -1) {
		listens_free(l, 1);
		return -1;
	}
	kpath_pop(c);
	cf->admin = l;
	return 0;
}

/*
 * The "auth" section: local clients log in (struct access_cfg).  Its
 * rules name upstreams, so it is parsed after "upstreams".
 */
static const char *const access_keys[] = {
	"htpasswd", "token_ttl", "groups", "rules", NULL
};
static const char *const access_rule_keys[] = {
	"users", "groups", "anonymous", "upstreams", "repositories", "allow",
	NULL
};

static const struct num_opt access_opts[] = {
	{ "token_ttl", offsetof(struct access_cfg, token_ttl_s), NUM_SECONDS,
	    1, ACCESS_TOKEN_TTL_MAX_S, NULL },
	{ NULL, 0, NUM_INT, 0, 0, NULL }
};

/*
 * Parses a non-empty array of distinct non-empty strings, each passing
 * valid (when given, with what it must be in the message), into a new
 * list.
 */
static int
parse_string_list(struct pctx *c, json_t *v, int (*valid)(const char *),
    const char *must, char ***out, size_t *nout)
{
	const char	*s;
	size_t		 i, k, n;

	if (want_array(c, v, "element", &n) == -1)
		return -1;
	*out = xcalloc(n, sizeof(**out));
	for (i = 0; i < n; i++) {
		kpath_index(c, i);
		if (want_string(c, json_array_get(v, i), &s) == -1)
			return -1;
		if (valid != NULL && !valid(s))
			return cerr(c, "\"%s\" must be %s", s, must);
		for (k = 0; k < i; k++)
			if (strcmp((*out)[k], s) == 0)
				return cerr(c, "\"%s\" is listed twice", s);
		(*out)[i] = xstrdup(s);
		*nout = i + 1;
		kpath_pop(c);
	}
	return 0;
}

/* A user as a rule names it: an htpasswd name, or "*" for every one. */
static int
access_rule_user_valid(const char *s)
{
	return strcmp(s, "*") == 0 || users_name_valid(s);
}

#define USER_NAME_MUST	"a user name: printable characters without spaces " \
			"or ':'"
#define PATTERN_MUST	"a repository pattern: lower-case name " \
			"components separated by '/', with '*' (within a " \
			"component) or '**' (across components)"

/* Parses "groups": {"name": ["user", ...], ...}. */
static int
parse_access_groups(struct pctx *c, json_t *o, struct access_cfg *ac)
{
	struct access_group	*g;
	const char		*key;
	json_t			*v;
	size_t			 i = 0;

	if (want_object(c, o, NULL) == -1)
		return -1;
	if (json_object_size(o) == 0)
		return 0;
	ac->groups = xcalloc(json_object_size(o), sizeof(*ac->groups));
	json_object_foreach(o, key, v) {
		kpath_key(c, key);
		if (!upstream_name_valid(key))
			return cerr(c, "a group name must be 1 to %d of "
			    "A-Z a-z 0-9 . _ -", UPSTREAM_NAME_MAX);
		g = &ac->groups[i++];
		ac->ngroups = i;
		g->name = xstrdup(key);
		if (parse_string_list(c, v, users_name_valid, USER_NAME_MUST,
		    &g->users, &g->nusers) == -1)
			return -1;
		kpath_pop(c);
	}
	return 0;
}

/* Is name one of the upstreams configured so far? */
static int
access_upstream_known(const struct config *cf, const char *name)
{
	size_t	 i;

	for (i = 0; i < cf->nupstreams; i++)
		if (strcmp(cf->upstreams[i].name, name) == 0)
			return 1;
	return 0;
}

/* Parses one element of "rules". */
static int
parse_access_rule(struct pctx *c, json_t *o, struct access_cfg *ac,
    const struct config *cf, struct access_rule *r)
{
	json_t	*v;
	size_t	 i, k;

	if (want_object(c, o, access_rule_keys) == -1 ||
	    member_get(c, o, "allow", MEMBER_REQUIRED, &v) == -1 ||
	    member_bool(c, o, "allow", &r->allow) == -1 ||
	    member_bool(c, o, "anonymous", &r->anonymous) == -1)
		return -1;
	if ((v = json_object_get(o, "users")) != NULL) {
		kpath_key(c, "users");
		if (parse_string_list(c, v, access_rule_user_valid,
		    USER_NAME_MUST " (or \"*\")", &r->users,
		    &r->nusers) == -1)
			return -1;
		kpath_pop(c);
	}
	if ((v = json_object_get(o, "groups")) != NULL) {
		kpath_key(c, "groups");
		if (parse_string_list(c, v, NULL, NULL, &r->groups,
		    &r->ngroups) == -1)
			return -1;
		for (i = 0; i < r->ngroups; i++) {
			for (k = 0; k < ac->ngroups; k++)
				if (strcmp(ac->groups[k].name, r->groups[i]) ==
				    0)
					break;
			if (k == ac->ngroups) {
				kpath_index(c, i);
				return cerr(c, "no group is named \"%s\"",
				    r->groups[i]);
			}
		}
		kpath_pop(c);
	}
	if (r->nusers == 0 && r->ngroups == 0 && !r->anonymous)
		return cerr(c, "a rule must name \"users\", \"groups\" or "
		    "\"anonymous\": true");
	if ((v = json_object_get(o, "upstreams")) != NULL) {
		kpath_key(c, "upstreams");
		if (parse_string_list(c, v, NULL, NULL, &r->upstreams,
		    &r->nupstreams) == -1)
			return -1;
		for (i = 0; i < r->nupstreams; i++) {
			if (!access_upstream_known(cf, r->upstreams[i])) {
				kpath_index(c, i);
				return cerr(c, "no upstream is named \"%s\"",
				    r->upstreams[i]);
			}
		}
		kpath_pop(c);
	}
	if ((v = json_object_get(o, "repositories")) != NULL) {
		kpath_key(c, "repositories");
		if (parse_string_list(c, v, access_pattern_valid, PATTERN_MUST,
		    &r->repos, &r->nrepos) == -1)
			return -1;
		kpath_pop(c);
	}
	return 0;
}

/*
 * Parses "auth": null for open pulls, or {"htpasswd", "token_ttl",
 * "groups", "rules"}.  The htpasswd file itself is read by
 * config_validate().
 */
static int
parse_access(struct pctx *c, json_t *o, struct config *cf)
{
	struct access_cfg	*ac;
	json_t			*v;
	size_t			 i, n;

	access_free(cf->access);
	cf->access = NULL;
	if (json_is_null(o))
		return 0;
	if (!json_is_object(o))
		return cerr(c, "expected an object or null, got %s", jtype(o));
	if (check_keys(c, o, access_keys) == -1)
		return -1;
	ac = xcalloc(1, sizeof(*ac));
	ac->token_ttl_s = DEFAULT_TOKEN_TTL_S;
	cf->access = ac;
	if (member_get(c, o, "htpasswd", MEMBER_REQUIRED, &v) == -1 ||
	    member_get(c, o, "rules", MEMBER_REQUIRED, &v) == -1 ||
	    member_string(c, o, "htpasswd", 0, &ac->htpasswd) == -1 ||
	    member_numbers(c, o, access_opts, ac) == -1)
		return -1;
	if ((v = json_object_get(o, "groups")) != NULL) {
		kpath_key(c, "groups");
		if (parse_access_groups(c, v, ac) == -1)
			return -1;
		kpath_pop(c);
	}
	v = json_object_get(o, "rules");
	kpath_key(c, "rules");
	if (want_array(c, v, "rule", &n) == -1)
		return -1;
	ac->rules = xcalloc(n, sizeof(*ac->rules));
	for (i = 0; i < n; i++) {
		ac->nrules = i + 1;
		kpath_index(c, i);
		if (parse_access_rule(c, json_array_get(v, i), ac, cf,
		    &ac->rules[i]) == -1)
			return -1;
		kpath_pop(c);
	}
	kpath_pop(c);
	return 0;
}

/*
 * The top-level sections in the order they are parsed, whatever the order
 * in the file: "default_upstream" names one of the "upstreams".
 */
static const struct {
	const char	*key;
	int		(*parse)(struct pctx *, json_t *, struct config *);
} root_sections[] = {
	{ "listen", parse_listens },
	{ "data_dir", parse_data_dir },
	{ "upstreams", parse_upstreams },
	{ "default_upstream", parse_default_upstream },
	{ "timeouts", parse_timeouts },
	{ "limits", parse_limits },
	{ "log", parse_log },
	{ "cache", parse_cache },
	{ "auth", parse_access },
	{ "admin", parse_admin },
	{ NULL, NULL }
};

/* Parses the top-level object over the defaults already in cf. */
static int
parse_root(struct pctx *c, json_t *root, struct config *cf)
{
	json_t	*v;
	size_t	 i;

	if (!json_is_object(root))
		return cerr(c, "the top level must be an object, not %s",
		    jtype(root));
	if (check_keys(c, root, root_keys) == -1)
		return -1;
	for (i = 0; root_sections[i].key != NULL; i++) {
		if ((v = json_object_get(root, root_sections[i].key)) == NULL)
			continue;
		kpath_key(c, root_sections[i].key);
		if (root_sections[i].parse(c, v, cf) == -1)
			return -1;
		kpath_pop(c);
	}
	return 0;
}

/*
 * Opens a file for reading and makes sure it is a regular one.  Returns
 * the descriptor, or -1 with the reason (without the name) in msg.
 */
static int
file_open_regular(const char *path, struct stat *st, char *msg,
    size_t msglen)
{
	int	 fd;

	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) == -1) {
		seterr(msg, msglen, "%s", strerror(errno));
		return -1;
	}
	if (fstat(fd, st) == -1) {
		seterr(msg, msglen, "%s", strerror(errno));
		close(fd);
		return -1;
	}
	if (!S_ISREG(st->st_mode)) {
		seterr(msg, msglen, "not a regular file");
		close(fd);
		return -1;
	}
	return fd;
}

/* Reads a whole (small, regular) file into memory. */
static int
read_file(const char *path, char **out, size_t *outlen, char *err,
    size_t errlen)
{
	char	 msg[256];

	if (file_read(path, CONFIG_FILE_MAX, FILE_READ_REGULAR, NULL, out,
	    outlen, msg, sizeof(msg)) == -1) {
		seterr(err, errlen, "%s: %s", path, msg);
		return -1;
	}
	return 0;
}

/*
 * Loads a file over the defaults.  NULL with err set on any error; each
 * message names the file, line and column, and the key path.
 */
struct config *
config_load(const char *path, char *err, size_t errlen)
{
	struct pctx	 c;
	struct config	*cf = NULL;
	json_error_t	 jerr;
	json_t		*root = NULL;
	char		*text = NULL, *near;
	size_t		 len;

	if (read_file(path, &text, &len, err, errlen) == -1)
		return NULL;
	if ((root = json_loadb(text, len, JSON_REJECT_DUPLICATES,
	    &jerr)) == NULL) {
		/*
		 * jansson quotes the token it choked on, which may be a
		 * password: keep the quote only when it is punctuation or
		 * the member name of a duplicate.
		 */
		if ((near = strstr(jerr.text, " near '")) != NULL &&
		    strncmp(jerr.text, "duplicate object key", 20) != 0 &&
		    !(near[7] != '\0' && strchr("{}[],:", near[7]) != NULL &&
		    near[8] == '\'' && near[9] == '\0'))
			*near = '\0';
		if (jerr.line > 0)
			seterr(err, errlen, "%s:%d:%d: %s", path, jerr.line,
			    jerr.column, jerr.text);
		else
			seterr(err, errlen, "%s: %s", path, jerr.text);
		goto fail;
	}
	cf = config_default();
	cf->path = xstrdup(path);
	memset(&c, 0, sizeof(c));
	c.file = path;
	c.text = text;
	c.len = len;
	c.err = err;
	c.errlen = errlen;
	if (parse_root(&c, root, cf) == -1)
		goto fail;
	json_decref(root);
	free(text);
	return cf;

 fail:
	config_free(cf);
	json_decref(root);
	free(text);
	return NULL;
}

/*
 * Applies the command line and environment over a loaded configuration.
 * Everything is checked before anything changes, so on error the
 * configuration is as it was.
 */
int
config_apply_overrides(struct config *cf, const struct config_overrides *ov,
    char *err, size_t errlen)
{
	struct listen_cfg	 l, a;
	struct upstream_cfg	 u;
	enum log_level		 level = cf->log_level;
	char			 msg[256];
	int			 admin_off = 0;

	memset(&l, 0, sizeof(l));
	memset(&a, 0, sizeof(a));
	memset(&u, 0, sizeof(u));
	if (ov->listen != NULL &&
	    listen_set(&l, ov->listen, msg, sizeof(msg)) == -1) {
		seterr(err, errlen, "listen address \"%s\": %s", ov->listen,
		    msg);
		goto fail;
	}
	if (ov->admin != NULL && strcmp(ov->admin, "none") == 0)
		admin_off = 1;
	else if (ov->admin != NULL &&
	    listen_set(&a, ov->admin, msg, sizeof(msg)) == -1) {
		seterr(err, errlen, "admin address \"%s\": %s", ov->admin,
		    msg);
		goto fail;
	}
	if (ov->data_dir != NULL && ov->data_dir[0] == '\0') {
		seterr(err, errlen, "data directory: must not be empty");
		goto fail;
	}
	if (ov->upstream_url != NULL &&
	    upstream_from_url(&u, ov->upstream_url, msg, sizeof(msg)) == -1) {
		/* Not the URL itself: it may carry a password. */
		seterr(err, errlen, "upstream URL: %s", msg);
		goto fail;
	}
	if (ov->log_level != NULL &&
	    log_level_parse(ov->log_level, &level) == -1) {
		seterr(err, errlen, "log level \"%s\": must be one of error, "
		    "warn, info, debug", ov->log_level);
		goto fail;
	}

	if (ov->listen != NULL) {
		listens_free(cf->listens, cf->nlistens);
		cf->listens = xcalloc(1, sizeof(*cf->listens));
		cf->listens[0] = l;
		cf->nlistens = 1;
	}
	if (ov->admin != NULL) {
		listens_free(cf->admin, cf->admin != NULL ? 1 : 0);
		cf->admin = NULL;
		if (!admin_off) {
			cf->admin = xcalloc(1, sizeof(*cf->admin));
			*cf->admin = a;
		}
	}
	if (ov->data_dir != NULL) {
		free(cf->data_dir);
		cf->data_dir = xstrdup(ov->data_dir);
	}
	if (ov->upstream_url != NULL) {
		upstreams_free(cf->upstreams, cf->nupstreams);
		cf->upstreams = xcalloc(1, sizeof(*cf->upstreams));
		cf->upstreams[0] = u;
		cf->nupstreams = 1;
		cf->default_upstream = 0;
	}
	cf->log_level = level;
	return 0;

 fail:
	listen_clear(&l);
	listen_clear(&a);
	upstream_clear(&u);
	return -1;
}

/*
 * Checks that a file the configuration names (what, of the listener or
 * upstream owner) can be read; the message is "file: listen \":1\":
 * certificate \"x.pem\": No such file or directory".
 */
static int
file_check(const char *file, const char *owner_kind, const char *owner,
    const char *what, const char *path, char *err, size_t errlen)
{
	struct stat	 st;
	char		 msg[256];
	int		 fd;

	if (path == NULL)
		return 0;
	if ((fd = file_open_regular(path, &st, msg, sizeof(msg))) == -1) {
		seterr(err, errlen, "%s: %s \"%s\": %s \"%s\": %s", file,
		    owner_kind, owner, what, path, msg);
		return -1;
	}
	close(fd);
	return 0;
}

/*
 * The "auth" section on the final configuration: its rules name only
 * upstreams that are still there after the overrides, and its htpasswd
 * file holds only entries regcache can check.  The users are loaded here,
 * once, into the configuration.
 */
static int
access_validate(struct config *cf, const char *file, char *err,
    size_t errlen)
{
	struct access_cfg	*ac = cf->access;
	char			 msg[512];
	size_t			 i, k;

	for (i = 0; i < ac->nrules; i++) {
		for (k = 0; k < ac->rules[i].nupstreams; k++) {
			if (!access_upstream_known(cf,
			    ac->rules[i].upstreams[k])) {
				seterr(err, errlen, "%s: auth.rules[%zu]: no "
				    "upstream is named \"%s\" (any more)",
				    file, i, ac->rules[i].upstreams[k]);
				return -1;
			}
		}
	}
	users_free(ac->users, ac->nusers);
	ac->users = NULL;
	ac->nusers = 0;
	if (users_load(ac->htpasswd, &ac->users, &ac->nusers, msg,
	    sizeof(msg)) == -1) {
		seterr(err, errlen, "%s: auth.htpasswd \"%s\": %s", file,
		    ac->htpasswd, msg);
		return -1;
	}
	return 0;
}

/*
 * The checks that need the file system or the whole picture, run on the
 * final configuration (after the overrides): the files named can be read,
 * there is something to listen on and to forward to, the default exists.
 */
int
config_validate(struct config *cf, char *err, size_t errlen)
{
	struct listen_cfg	*l;
	struct upstream_cfg	*u;
	const char		*file = cf->path != NULL ? cf->path :
				    "configuration";
	char			 msg[512];
	size_t			 i;
	int			 inline_secret = 0, fd;

	if (cf->nlistens == 0) {
		seterr(err, errlen, "%s: no listen address", file);
		return -1;
	}
	if (cf->nupstreams == 0) {
		seterr(err, errlen, "%s: no upstream", file);
		return -1;
	}
	if (cf->default_upstream < -1 ||
	    cf->default_upstream >= (int)cf->nupstreams) {
		seterr(err, errlen, "%s: default upstream %d does not exist",
		    file, cf->default_upstream);
		return -1;
	}
	if (cf->data_dir == NULL || cf->data_dir[0] == '\0') {
		seterr(err, errlen, "%s: no data directory", file);
		return -1;
	}
	for (i = 0; i < cf->nlistens; i++) {
		l = &cf->listens[i];
		if ((l->cert_file == NULL) != (l->key_file == NULL)) {
			seterr(err, errlen, "%s: listen \"%s\": a TLS "
			    "certificate needs a key and a key a certificate",
			    file, l->address);
			return -1;
		}
		if (file_check(file, "listen", l->address, "certificate",
		    l->cert_file, err, errlen) == -1 ||
		    file_check(file, "listen", l->address, "key", l->key_file,
		    err, errlen) == -1)
			return -1;
		if (cf->admin != NULL &&
		    strcmp(cf->admin->host, l->host) == 0 &&
		    strcmp(cf->admin->port, l->port) == 0) {
			seterr(err, errlen, "%s: admin.listen \"%s\" is also a "
			    "listen address: the admin endpoints need their "
			    "own", file, cf->admin->address);
			return -1;
		}
	}
	for (i = 0; i < cf->nupstreams; i++) {
		u = &cf->upstreams[i];
		if (file_check(file, "upstream", u->name, "ca_file",
		    u->ca_file, err, errlen) == -1)
			return -1;
		/* Inline, the password is in this file: guard it too. */
		if (u->cred_kind == CRED_STATIC && u->password != NULL &&
		    u->password_env == NULL && u->password_file == NULL &&
		    u->docker_config == NULL)
			inline_secret = 1;
		if (cred_resolve(u, msg, sizeof(msg)) == -1) {
			seterr(err, errlen, "%s: upstream \"%s\": %s", file,
			    u->name, msg);
			return -1;
		}
	}
	if (inline_secret && cf->path != NULL &&
	    (fd = open(cf->path, O_RDONLY | O_CLOEXEC)) != -1) {
		secret_file_check_mode("configuration file", cf->path, fd);
		close(fd);
	}
	if (cf->connect_timeout_ms <= 0 || cf->first_byte_timeout_ms <= 0 ||
	    cf->idle_timeout_ms <= 0 || cf->client_timeout_ms <= 0) {
		seterr(err, errlen, "%s: timeouts must be positive", file);
		return -1;
	}
	for (i = 0; i < cf->nupstreams; i++) {
		u = &cf->upstreams[i];
		if (u->tag_ttl_ms < 0 || u->negative_ttl_ms < 0) {
			seterr(err, errlen, "%s: upstream \"%s\": TTLs must not "
			    "be negative", file, u->name);
			return -1;
		}
	}
	if (cf->cache_low_water < 1 || cf->cache_high_water > 100 ||
	    cf->cache_low_water >= cf->cache_high_water) {
		seterr(err, errlen, "%s: cache water marks must satisfy "
		    "1 <= low_water < high_water <= 100", file);
		return -1;
	}
	if (cf->cache_max_bytes != 0 &&
	    cf->cache_max_bytes < (uint64_t)CACHE_MAX_BYTES_MIN) {
		seterr(err, errlen, "%s: cache.max_bytes must be 0 or at "
		    "least %lld bytes", file, CACHE_MAX_BYTES_MIN);
		return -1;
	}
	if (cf->cache_max_idle_s < 0) {
		seterr(err, errlen, "%s: cache.max_idle must not be negative",
		    file);
		return -1;
	}
	if (cf->access != NULL && access_validate(cf, file, err, errlen) == -1)
		return -1;
	return 0;
}
