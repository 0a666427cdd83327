/*
 * regcache warm: fill a running regcache's cache with whole images by
 * pulling them through its client port, as any client would, and
 * throwing the bytes away.  For each image: its manifest by tag or
 * digest, with every manifest type in Accept (the tag is then cached for
 * every client); for an index, the manifest of each platform, or of
 * those asked for; then every config and layer blob.  A blob gets a HEAD
 * first and a GET only when the HEAD did not say X-Cache: HIT, so warming
 * what is already cached moves no blob bytes.
 *
 * Images go one after another, with up to WARM_PARALLEL requests of one
 * image in flight.  The requests use the upstream client of
 * upstream_http.c (keep-alive, TLS, timeouts from the default
 * configuration), on an event loop of their own.
 */
#include "config.h"

#include <sys/queue.h>
#include <getopt.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <event2/dns.h>
#include <jansson.h>

#include "regcache.h"

#define WARM_DEFAULT_URL	"http://127.0.0.1:5000"
#define WARM_PARALLEL		4	/* requests in flight per image */
#define WARM_MANIFEST_MAX	(4 * 1024 * 1024)	/* as distribution */
#define WARM_ERROR_MAX		(64 * 1024)	/* an error answer's body */
#define WARM_DEPTH_MAX		1	/* an index's manifests, no deeper */
#define WARM_PROGRESS_MS	250
#define WARM_PLATFORM_PART	64

/* Every manifest type a pull can use: the tag map of the full class. */
#define WARM_ACCEPT \
	"application/vnd.oci.image.index.v1+json, " \
	"application/vnd.docker.distribution.manifest.list.v2+json, " \
	"application/vnd.oci.image.manifest.v1+json, " \
	"application/vnd.docker.distribution.manifest.v2+json"

#define WARM_OPT_URL		256
#define WARM_OPT_PLATFORM	257
#define WARM_OPT_CA_FILE	258

struct warm_platform {
	char	os[WARM_PLATFORM_PART];
	char	arch[WARM_PLATFORM_PART];
	char	variant[WARM_PLATFORM_PART];	/* "": any */
};

enum wjob_kind {
	WJ_MANIFEST,
	WJ_HEAD,		/* a blob: is it cached? */
	WJ_GET			/* a blob: fetch it */
};

struct wimage;

/* One request of an image: a manifest, or a blob's HEAD or GET. */
struct wjob {
	TAILQ_ENTRY(wjob)	 entry;
	struct wimage		*img;
	enum wjob_kind		 kind;
	char			 ref[V2_DIGEST_MAX + 1];	/* tag or digest */
	int64_t			 size;		/* the descriptor's, or -1 */
	int			 depth;		/* manifests: 0 for the top */
	struct httpx		*x;
	int			 status;
	char			 xcache[16];
	struct evbuffer		*body;		/* manifests, error answers */
	uint64_t		 got;		/* body bytes */
	int			 too_big;
};
TAILQ_HEAD(wjob_list, wjob);

/* One IMAGE argument and what warming it did. */
struct wimage {
	const char		*arg;		/* as written */
	char			 repo[V2_NAME_MAX + 1];
	char			 ref[V2_DIGEST_MAX + 1];
	char			*ns;		/* escaped ns= value, or NULL */
	struct wjob_list	 queue;
	int			 inflight;
	char			**seen;		/* digests queued already */
	size_t			 nseen;
	unsigned		 manifests;
	unsigned		 blobs;
	unsigned		 blobs_done;
	unsigned		 blobs_cached;
	unsigned		 failures;
	uint64_t		 bytes;
	uint64_t		 t0;
	char			*error;		/* the first failure */
};

static struct {
	struct url		 base;
	SSL_CTX			*ctx;
	struct warm_platform	*plats;
	size_t			 nplats;
	int			 tty;
	struct wimage		*imgs;
	size_t			 nimgs;
	size_t			 cur;
	int			 failed;
	uint64_t		 last_draw;
} w;

static void	warm_pump(struct wimage *);
static void	warm_image_start(size_t);

static void	warm_x_headers(struct httpx *, int, struct evkeyvalq *,
		    void *);
static void	warm_x_body(struct httpx *, struct evbuffer *, void *);
static void	warm_x_done(struct httpx *, enum up_error, const char *,
		    void *);

static const struct httpx_cb warm_x_cb = {
	warm_x_headers, warm_x_body, warm_x_done
};

static void
warm_usage(FILE *f)
{
	fprintf(f,
"usage: regcache warm [--url URL] [--platform OS/ARCH[/VARIANT]]...\n"
"                     [--ca-file FILE] IMAGE...\n"
"\n"
"  Pull each IMAGE through a running regcache so that it is cached: the\n"
"  manifest, the manifest of every platform of an index (or of those\n"
"  given with --platform), and every config and layer blob.  Blobs the\n"
"  cache already holds are not fetched again.\n"
"\n"
"  IMAGE is a reference such as docker.io/library/alpine:3.20 or\n"
"  ghcr.io/org/app@sha256:<hex>, asked for with ?ns=<registry> as\n"
"  containerd does, or a name as clients use it under regcache, without\n"
"  a registry host (alpine:3.20 goes to the default upstream, which reads\n"
"  it as library/alpine when that is Docker Hub).  The tag defaults to\n"
"  latest.  Exit 0: every image is cached; 1: an image failed; 2: usage.\n"
"\n"
"  --url URL        regcache's client port (default " WARM_DEFAULT_URL ")\n"
"  --platform P     os/arch or os/arch/variant, e.g. linux/arm64/v8;\n"
"                   repeatable\n"
"  --ca-file FILE   CA certificates to check an https URL with\n"
"  -h               this help\n");
}

/* A registry host, as the first component of a reference has it. */
static int
warm_is_host(const char *s, size_t len)
{
	return memchr(s, '.', len) != NULL || memchr(s, ':', len) != NULL ||
	    (len == 9 && strncmp(s, "localhost", 9) == 0);
}

/*
 * Split an IMAGE argument into the repository to ask regcache for, the
 * tag or digest, and the ns= registry, the way docker and containerd
 * read references.  Docker Hub's names get library/ as containerd sends
 * them.  Returns 0, or -1 with the reason.
 */
static int
warm_ref_parse(const char *arg, struct wimage *img, char *err, size_t errlen)
{
	const char	*at, *colon, *slash, *name, *host = NULL;
	size_t		 hlen = 0;
	char		*n, *h = NULL;
	int		 rc = -1;

	n = xstrdup(arg);
	if ((at = strchr(n, '@')) != NULL) {
		n[at - n] = '\0';
		snprintf(img->ref, sizeof(img->ref), "%s", at + 1);
		if (!v2_digest_valid(img->ref)) {
			snprintf(err, errlen, "invalid digest");
			goto done;
		}
	} else {
		colon = strrchr(n, ':');
		slash = strrchr(n, '/');
		if (colon != NULL && (slash == NULL || colon > slash)) {
			n[colon - n] = '\0';
			if (strlen(colon + 1) >= sizeof(img->ref) ||
			    !v2_tag_valid(colon + 1)) {
				snprintf(err, errlen, "invalid tag");
				goto done;
			}
			snprintf(img->ref, sizeof(img->ref), "%s", colon + 1);
		} else
			snprintf(img->ref, sizeof(img->ref), "latest");
	}
	name = n;
	if ((slash = strchr(n, '/')) != NULL &&
	    warm_is_host(n, (size_t)(slash - n))) {
		host = n;
		hlen = (size_t)(slash - n);
		name = slash + 1;
	}
	if (host != NULL)
		h = xstrndup(host, hlen);
	if (h != NULL && (strcmp(h, "docker.io") == 0 ||
	    strcmp(h, "index.docker.io") == 0 ||
	    strcmp(h, "registry-1.docker.io") == 0)) {
		free(h);
		h = xstrdup("docker.io");
		if (strchr(name, '/') == NULL)
			snprintf(img->repo, sizeof(img->repo), "library/%s",
			    name);
		else
			snprintf(img->repo, sizeof(img->repo), "%s", name);
	} else
		snprintf(img->repo, sizeof(img->repo), "%s", name);
	if (strlen(name) + 8 >= sizeof(img->repo) ||
	    !v2_name_valid(img->repo)) {
		snprintf(err, errlen, "invalid repository name");
		free(h);
		goto done;
	}
	if (h != NULL) {
		img->ns = uri_escape(h);
		free(h);
	}
	rc = 0;
 done:
	free(n);
	return rc;
}

/* One part of a platform: lower-case letters, digits, '.', '_', '-'. */
static int
warm_platform_part(const char *s, size_t len, char *out)
{
	if (len == 0 || len >= WARM_PLATFORM_PART ||
	    strspn(s, "abcdefghijklmnopqrstuvwxyz0123456789._-") < len)
		return -1;
	memcpy(out, s, len);
	out[len] = '\0';
	return 0;
}

/* Parse "os/arch" or "os/arch/variant". */
static int
warm_platform_parse(const char *s, struct warm_platform *p)
{
	const char	*a, *v;

	memset(p, 0, sizeof(*p));
	if ((a = strchr(s, '/')) == NULL ||
	    warm_platform_part(s, (size_t)(a - s), p->os) == -1)
		return -1;
	a++;
	if ((v = strchr(a, '/')) == NULL)
		return warm_platform_part(a, strlen(a), p->arch);
	if (warm_platform_part(a, (size_t)(v - a), p->arch) == -1)
		return -1;
	v++;
	return warm_platform_part(v, strlen(v), p->variant);
}

/*
 * Is an index entry's platform one of those asked for?  Every entry is
 * when none were.  A variant asked for must match, except that arm64
 * without one is v8, as containerd reads it.
 */
static int
warm_platform_wanted(json_t *platform)
{
	const char	*os, *arch, *variant;
	size_t		 i;

	if (w.nplats == 0)
		return 1;
	os = json_string_value(json_object_get(platform, "os"));
	arch = json_string_value(json_object_get(platform, "architecture"));
	variant = json_string_value(json_object_get(platform, "variant"));
	if (os == NULL || arch == NULL)
		return 0;
	for (i = 0; i < w.nplats; i++) {
		if (strcmp(os, w.plats[i].os) != 0 ||
		    strcmp(arch, w.plats[i].arch) != 0)
			continue;
		if (w.plats[i].variant[0] == '\0')
			return 1;
		if (variant != NULL && strcmp(variant, w.plats[i].variant) == 0)
			return 1;
		if (variant == NULL && strcmp(arch, "arm64") == 0 &&
		    strcmp(w.plats[i].variant, "v8") == 0)
			return 1;
	}
	return 0;
}

/* Note a failure of img; the first one is the one reported. */
static void __attribute__((format(printf, 2, 3)))
warm_fail(struct wimage *img, const char *fmt, ...)
{
	va_list	 ap;
	char	*msg;

	img->failures++;
	if (img->error != NULL)
		return;
	va_start(ap, fmt);
	if (vasprintf(&msg, fmt, ap) == -1)
		fatalx("%s: out of memory", __func__);
	va_end(ap);
	img->error = msg;
}

static const char *
warm_job_what(const struct wjob *j)
{
	return j->kind == WJ_MANIFEST ? "manifest" : "blob";
}

/*
 * A request regcache refused: the status, and the code and message of
 * its OCI error body when there is one.  Its text is escaped: it goes to
 * a terminal.
 */
static void
warm_http_error(struct wjob *j)
{
	json_t		*root, *e;
	const char	*code = NULL, *msg = NULL;
	char		*m = NULL;

	root = json_loadb((const char *)evbuffer_pullup(j->body, -1),
	    evbuffer_get_length(j->body), 0, NULL);
	e = json_array_get(json_object_get(root, "errors"), 0);
	code = json_string_value(json_object_get(e, "code"));
	msg = json_string_value(json_object_get(e, "message"));
	if (msg != NULL)
		m = log_escape(msg);
	if (code != NULL && *code != '\0' &&
	    strspn(code, "ABCDEFGHIJKLMNOPQRSTUVWXYZ_") == strlen(code))
		warm_fail(j->img, "%s %s: %d %s%s%s", warm_job_what(j), j->ref,
		    j->status, code, m != NULL ? ": " : "",
		    m != NULL ? m : "");
	else
		warm_fail(j->img, "%s %s: HTTP status %d", warm_job_what(j),
		    j->ref, j->status);
	free(m);
	json_decref(root);
}

/* Record a digest of img; 1 when it was there already. */
static int
warm_seen(struct wimage *img, const char *digest)
{
	char	**n;
	size_t	  i;

	for (i = 0; i < img->nseen; i++)
		if (strcmp(img->seen[i], digest) == 0)
			return 1;
	n = xcalloc(img->nseen + 1, sizeof(*n));
	if (img->nseen > 0)
		memcpy(n, img->seen, img->nseen * sizeof(*n));
	n[img->nseen++] = xstrdup(digest);
	free(img->seen);
	img->seen = n;
	return 0;
}

/* Queue a request of img, at the front when it continues one. */
static void
warm_queue(struct wimage *img, enum wjob_kind kind, const char *ref,
    int64_t size, int depth, int front)
{
	struct wjob	*j;

	j = xcalloc(1, sizeof(*j));
	j->img = img;
	j->kind = kind;
	snprintf(j->ref, sizeof(j->ref), "%s", ref);
	j->size = size;
	j->depth = depth;
	if ((j->body = evbuffer_new()) == NULL)
		fatalx("%s: evbuffer_new", __func__);
	if (front)
		TAILQ_INSERT_HEAD(&img->queue, j, entry);
	else
		TAILQ_INSERT_TAIL(&img->queue, j, entry);
}

static void
warm_job_free(struct wjob *j)
{
	if (j->x != NULL)
		httpx_cancel(j->x);
	evbuffer_free(j->body);
	free(j);
}

/* A descriptor's digest and size; -1 when it has no valid digest. */
static int
warm_descriptor(json_t *d, const char **digest, int64_t *size)
{
	json_t	*s = json_object_get(d, "size");

	*digest = json_string_value(json_object_get(d, "digest"));
	*size = json_is_integer(s) && json_integer_value(s) >= 0 ?
	    (int64_t)json_integer_value(s) : -1;
	if (*digest == NULL || strlen(*digest) > V2_DIGEST_MAX ||
	    !v2_digest_valid(*digest))
		return -1;
	return 0;
}

/* An index: queue the manifest of every platform wanted. */
static void
warm_index(struct wjob *j, json_t *list)
{
	struct wimage	*img = j->img;
	const char	*digest;
	json_t		*m;
	size_t		 i;
	int64_t		 size;
	int		 wanted = 0;

	if (j->depth >= WARM_DEPTH_MAX) {
		warm_fail(img, "manifest %s: an index inside an index",
		    j->ref);
		return;
	}
	json_array_foreach(list, i, m) {
		if (warm_descriptor(m, &digest, &size) == -1) {
			warm_fail(img, "manifest %s: entry %zu has no valid "
			    "digest", j->ref, i);
			return;
		}
		if (!warm_platform_wanted(json_object_get(m, "platform")))
			continue;
		wanted++;
		if (!warm_seen(img, digest))
			warm_queue(img, WJ_MANIFEST, digest, size,
			    j->depth + 1, 0);
	}
	if (wanted == 0)
		warm_fail(img, "manifest %s: no platform asked for is in the "
		    "index", j->ref);
}

/* An image manifest: queue its config and its layers. */
static void
warm_image_manifest(struct wjob *j, json_t *root)
{
	struct wimage	*img = j->img;
	json_t		*layers = json_object_get(root, "layers"), *l;
	json_t		*cfg = json_object_get(root, "config");
	const char	*digest;
	int64_t		 size;
	size_t		 i;

	if (cfg != NULL && warm_descriptor(cfg, &digest, &size) == -1) {
		warm_fail(img, "manifest %s: the config has no valid digest",
		    j->ref);
		return;
	}
	if (cfg != NULL && !warm_seen(img, digest)) {
		img->blobs++;
		warm_queue(img, WJ_HEAD, digest, size, 0, 0);
	}
	json_array_foreach(layers, i, l) {
		if (warm_descriptor(l, &digest, &size) == -1) {
			warm_fail(img, "manifest %s: layer %zu has no valid "
			    "digest", j->ref, i);
			return;
		}
		/* Foreign layers live elsewhere; the registry has none. */
		if (json_array_size(json_object_get(l, "urls")) > 0)
			continue;
		if (!warm_seen(img, digest)) {
			img->blobs++;
			warm_queue(img, WJ_HEAD, digest, size, 0, 0);
		}
	}
}

/* A manifest arrived: an index or an image manifest, or a refusal. */
static void
warm_manifest_done(struct wjob *j)
{
	json_t		*root, *list;

	if (j->status != 200) {
		warm_http_error(j);
		return;
	}
	if (j->too_big) {
		warm_fail(j->img, "manifest %s: larger than %d bytes", j->ref,
		    WARM_MANIFEST_MAX);
		return;
	}
	root = json_loadb((const char *)evbuffer_pullup(j->body, -1),
	    evbuffer_get_length(j->body), 0, NULL);
	if (!json_is_object(root)) {
		warm_fail(j->img, "manifest %s: not a JSON object", j->ref);
		json_decref(root);
		return;
	}
	j->img->manifests++;
	if (json_is_array(list = json_object_get(root, "manifests")))
		warm_index(j, list);
	else if (json_is_object(json_object_get(root, "config")) ||
	    json_is_array(json_object_get(root, "layers")))
		warm_image_manifest(j, root);
	else if (json_object_get(root, "fsLayers") != NULL)
		warm_fail(j->img, "manifest %s: schema 1 manifests are not "
		    "supported", j->ref);
	else
		warm_fail(j->img, "manifest %s: neither an index nor an image "
		    "manifest", j->ref);
	json_decref(root);
}

/* 1234567 -> "1.2 MiB". */
static void
warm_human(char *buf, size_t len, uint64_t n)
{
	static const char *const unit[] = { "KiB", "MiB", "GiB", "TiB" };
	double		 v = (double)n;
	int		 i = -1;

	if (n < 1024) {
		snprintf(buf, len, "%llu B", (unsigned long long)n);
		return;
	}
	while (v >= 1024 && i < 3) {
		v /= 1024;
		i++;
	}
	snprintf(buf, len, "%.1f %s", v, unit[i]);
}

/* The progress line of a terminal, at most every WARM_PROGRESS_MS. */
static void
warm_draw(struct wimage *img)
{
	char	 b[32];

	if (!w.tty || mono_ms() - w.last_draw < WARM_PROGRESS_MS)
		return;
	w.last_draw = mono_ms();
	warm_human(b, sizeof(b), img->bytes);
	printf("\r\033[K%s: %u/%u blobs, %s", img->arg, img->blobs_done,
	    img->blobs, b);
	fflush(stdout);
}

/* Nothing left to do for img: say how it went, go on to the next. */
static void
warm_image_end(struct wimage *img)
{
	char		 b[32];
	uint64_t	 ms = mono_ms() - img->t0;

	if (w.tty) {
		printf("\r\033[K");
		fflush(stdout);
	}
	if (img->error != NULL) {
		w.failed = 1;
		fprintf(stderr, "regcache warm: %s: %s", img->arg, img->error);
		if (img->failures > 1)
			fprintf(stderr, " (and %u more failure%s)",
			    img->failures - 1, img->failures == 2 ? "" : "s");
		fprintf(stderr, "\n");
	} else {
		warm_human(b, sizeof(b), img->bytes);
		printf("%s: %u manifest%s, %u blob%s (%u fetched, %u already "
		    "cached), %s in %llu.%01llu s\n", img->arg,
		    img->manifests, img->manifests == 1 ? "" : "s",
		    img->blobs, img->blobs == 1 ? "" : "s",
		    img->blobs_done - img->blobs_cached, img->blobs_cached, b,
		    (unsigned long long)(ms / 1000),
		    (unsigned long long)(ms % 1000 / 100));
		fflush(stdout);
	}
	warm_image_start(w.cur + 1);
}

/* Start what may run of img's queue; end img when nothing is left. */
static void
warm_pump(struct wimage *img)
{
	struct evkeyvalq	 h;
	struct wjob		*j;
	struct url		 u;
	char			*path;

	while (img->inflight < WARM_PARALLEL &&
	    (j = TAILQ_FIRST(&img->queue)) != NULL) {
		TAILQ_REMOVE(&img->queue, j, entry);
		xasprintf(&path, "/v2/%s/%s/%s%s%s", img->repo,
		    j->kind == WJ_MANIFEST ? "manifests" : "blobs", j->ref,
		    img->ns != NULL ? "?ns=" : "",
		    img->ns != NULL ? img->ns : "");
		u = w.base;
		u.path = path;
		TAILQ_INIT(&h);
		if (j->kind == WJ_MANIFEST)
			evhttp_add_header(&h, "Accept", WARM_ACCEPT);
		j->x = httpx_start(&u, w.ctx, j->kind == WJ_HEAD ?
		    EVHTTP_REQ_HEAD : EVHTTP_REQ_GET, &h, NULL, 0, &warm_x_cb,
		    j);
		evhttp_clear_headers(&h);
		free(path);
		if (j->x == NULL)
			fatalx("%s: httpx_start failed", __func__);
		img->inflight++;
	}
	if (img->inflight == 0 && TAILQ_EMPTY(&img->queue))
		warm_image_end(img);
	else
		warm_draw(img);
}

/* Begin image i, or stop the loop after the last one. */
static void
warm_image_start(size_t i)
{
	struct wimage	*img;

	w.cur = i;
	if (i >= w.nimgs) {
		event_base_loopexit(ev_base, NULL);
		return;
	}
	img = &w.imgs[i];
	img->t0 = mono_ms();
	w.last_draw = 0;
	warm_queue(img, WJ_MANIFEST, img->ref, -1, 0, 0);
	warm_pump(img);
}

static void
warm_x_headers(struct httpx *x, int status, struct evkeyvalq *h, void *arg)
{
	struct wjob	*j = arg;
	const char	*v;

	j->status = status;
	if ((v = evhttp_find_header(h, "X-Cache")) != NULL)
		snprintf(j->xcache, sizeof(j->xcache), "%s", v);
}

/* Body bytes: kept for manifests and refusals, counted and let go of
 * for blobs. */
static void
warm_x_body(struct httpx *x, struct evbuffer *data, void *arg)
{
	struct wjob	*j = arg;
	size_t		 n = evbuffer_get_length(data), max;

	j->got += n;
	j->img->bytes += n;
	if (j->kind == WJ_MANIFEST || j->status != 200) {
		max = j->status == 200 ? WARM_MANIFEST_MAX : WARM_ERROR_MAX;
		if (evbuffer_get_length(j->body) + n > max)
			j->too_big = 1;
		else
			evbuffer_add_buffer(j->body, data);
	}
	warm_draw(j->img);
}

static void
warm_x_done(struct httpx *x, enum up_error err, const char *cause,
    void *arg)
{
	struct wjob	*j = arg;
	struct wimage	*img = j->img;

	j->x = NULL;
	img->inflight--;
	if (err != UP_OK)
		warm_fail(img, "%s %s: %s", warm_job_what(j), j->ref, cause);
	else if (j->kind == WJ_MANIFEST)
		warm_manifest_done(j);
	else if (j->kind == WJ_HEAD) {
		if (j->status == 200 && strcasecmp(j->xcache, "HIT") == 0) {
			img->blobs_done++;
			img->blobs_cached++;
		} else
			warm_queue(img, WJ_GET, j->ref, j->size, 0, 1);
	} else if (j->status != 200)
		warm_http_error(j);
	else if (j->size >= 0 && j->got != (uint64_t)j->size)
		warm_fail(img, "blob %s: %llu bytes, the manifest says %lld",
		    j->ref, (unsigned long long)j->got, (long long)j->size);
	else
		img->blobs_done++;
	warm_job_free(j);
	warm_pump(img);
}

/* The base URL: http or https, a host and port, no path. */
static int
warm_base_url(const char *s, const char *ca_file)
{
	char	 err[512];

	if (url_parse(s, &w.base) == -1 || strcmp(w.base.path, "/") != 0) {
		fprintf(stderr, "regcache warm: --url %s: expected "
		    "http[s]://HOST[:PORT] with no path\n", s);
		return -1;
	}
	if (!w.base.tls) {
		if (ca_file != NULL)
			fprintf(stderr, "regcache warm: --ca-file is for "
			    "https URLs only; ignored\n");
		return 0;
	}
	if ((w.ctx = tls_client_ctx(ca_file, ca_file == NULL, 1, err,
	    sizeof(err))) == NULL) {
		fprintf(stderr, "regcache warm: TLS: %s\n", err);
		return -1;
	}
	return 0;
}

static void
warm_cleanup(void)
{
	struct wjob	*j;
	size_t		 i, k;

	for (i = 0; i < w.nimgs; i++) {
		while ((j = TAILQ_FIRST(&w.imgs[i].queue)) != NULL) {
			TAILQ_REMOVE(&w.imgs[i].queue, j, entry);
			warm_job_free(j);
		}
		for (k = 0; k < w.imgs[i].nseen; k++)
			free(w.imgs[i].seen[k]);
		free(w.imgs[i].seen);
		free(w.imgs[i].ns);
		free(w.imgs[i].error);
	}
	free(w.imgs);
	free(w.plats);
	url_clear(&w.base);
	if (w.ctx != NULL)
		SSL_CTX_free(w.ctx);
	memset(&w, 0, sizeof(w));
}

/* `regcache warm`: parse the arguments, run the loop, say how it went. */
int
warm_main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "url", required_argument, NULL, WARM_OPT_URL },
		{ "platform", required_argument, NULL, WARM_OPT_PLATFORM },
		{ "ca-file", required_argument, NULL, WARM_OPT_CA_FILE },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 }
	};
	struct warm_platform	*p;
	const char		*url = WARM_DEFAULT_URL, *ca_file = NULL;
	char			 err[256];
	size_t			 i;
	int			 ch, rc = 2;

	memset(&w, 0, sizeof(w));
	while ((ch = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		switch (ch) {
		case WARM_OPT_URL:
			url = optarg;
			break;
		case WARM_OPT_PLATFORM:
			p = xcalloc(w.nplats + 1, sizeof(*p));
			if (w.nplats > 0)
				memcpy(p, w.plats, w.nplats * sizeof(*p));
			free(w.plats);
			w.plats = p;
			if (warm_platform_parse(optarg, &w.plats[w.nplats]) ==
			    -1) {
				fprintf(stderr, "regcache warm: --platform "
				    "%s: expected OS/ARCH or OS/ARCH/VARIANT\n",
				    optarg);
				goto done;
			}
			w.nplats++;
			break;
		case WARM_OPT_CA_FILE:
			ca_file = optarg;
			break;
		case 'h':
			warm_usage(stdout);
			rc = 0;
			goto done;
		default:
			warm_usage(stderr);
			goto done;
		}
	}
	if (optind == argc) {
		warm_usage(stderr);
		goto done;
	}
	w.nimgs = (size_t)(argc - optind);
	w.imgs = xcalloc(w.nimgs, sizeof(*w.imgs));
	for (i = 0; i < w.nimgs; i++) {
		w.imgs[i].arg = argv[optind + (int)i];
		TAILQ_INIT(&w.imgs[i].queue);
		if (warm_ref_parse(w.imgs[i].arg, &w.imgs[i], err,
		    sizeof(err)) == -1) {
			fprintf(stderr, "regcache warm: %s: %s\n",
			    w.imgs[i].arg, err);
			goto done;
		}
	}
	if (warm_base_url(url, ca_file) == -1)
		goto done;

	/* httpx takes its timeouts and limits from a configuration. */
	conf = config_default();
	log_init(LOG_LEVEL_WARN, 0);
	signal(SIGPIPE, SIG_IGN);
	w.tty = isatty(STDOUT_FILENO);
	if ((ev_base = event_base_new()) == NULL)
		fatalx("event_base_new failed");
	if ((dns_base = evdns_base_new(ev_base,
	    EVDNS_BASE_INITIALIZE_NAMESERVERS)) == NULL &&
	    (dns_base = evdns_base_new(ev_base, 0)) == NULL)
		fatalx("evdns_base_new failed");
	evdns_base_load_hosts(dns_base, NULL);

	warm_image_start(0);
	event_base_dispatch(ev_base);

	httpx_pool_flush();
	evdns_base_free(dns_base, 0);
	event_base_free(ev_base);
	dns_base = NULL;
	ev_base = NULL;
	config_free(conf);
	conf = NULL;
	rc = w.failed ? 1 : 0;
 done:
	warm_cleanup();
	return rc;
}
