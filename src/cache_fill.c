/*
 * Fills: one upstream fetch per digest, however many clients want it.
 *
 * A fill GETs the blob once, writes it to a tmp file while hashing it, and
 * tells its readers (exchanges in server_blob.c) as bytes land; each
 * reader streams from the file at its own pace, so a slow client never
 * slows the fill or the others, and memory does not grow with the blob or
 * the number of readers.  The last byte is held back from readers until
 * size and digest are verified: a client never receives a complete-looking
 * wrong body.  On a match the file is published (cache_store.c); on a
 * mismatch, a short body or an upstream error the tmp file goes and the
 * readers are told to abort.
 *
 * A fill whose readers all left goes on to the end, to warm the cache: the
 * bytes are already on their way, and the next pull will want them.
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "regcache.h"

#define FILL_MAGIC		0x66696c6cu
#define FILL_ERR_BODY_MAX	(64 * 1024)

TAILQ_HEAD(fill_list, fill);
static struct fill_list	fills = TAILQ_HEAD_INITIALIZER(fills);
static uint64_t		fill_next_id = 1;
uint64_t		fill_bytes_inflight;

static void	fill_on_headers(struct upreq *, int, struct evkeyvalq *,
		    void *);
static void	fill_on_body(struct upreq *, struct evbuffer *, void *);
static void	fill_on_done(struct upreq *, enum up_error, const char *,
		    void *);

static void	fill_published(uint64_t, int);

static const struct upreq_cb fill_upreq_cb = {
	fill_on_headers, fill_on_body, fill_on_done
};

/* A running fill of digest, or NULL. */
struct fill *
fill_find(const char *digest)
{
	struct fill	*f;

	TAILQ_FOREACH(f, &fills, entry)
		if ((f->state == FILL_RUNNING || f->state == FILL_PUBLISHING) &&
		    strcmp(f->digest, digest) == 0)
			return f;
	return NULL;
}

/* Free a fill that is over and has no reader left. */
static void
fill_maybe_free(struct fill *f)
{
	if (f->state == FILL_RUNNING || f->state == FILL_PUBLISHING ||
	    !TAILQ_EMPTY(&f->readers) || f->busy > 0)
		return;
	TAILQ_REMOVE(&fills, f, entry);
	if (f->fd != -1)
		close(f->fd);
	if (f->tmp != NULL) {
		unlink(f->tmp);
		free(f->tmp);
	}
	EVP_MD_CTX_free(f->md);
	evhttp_clear_headers(&f->err_headers);
	if (f->err_body != NULL)
		evbuffer_free(f->err_body);
	free(f->upstream_name);
	free(f->repo);
	f->magic = 0;
	free(f);
}

/* Tell every reader; a reader may leave from its callback. */
static void
fill_notify(struct fill *f, enum fill_event ev)
{
	struct fill_reader	*r, *next;

	f->busy++;
	for (r = TAILQ_FIRST(&f->readers); r != NULL; r = next) {
		next = TAILQ_NEXT(r, entry);
		r->cb(r, ev);
	}
	f->busy--;
	fill_maybe_free(f);
}

/* The fill is over, badly: drop the tmp file, abort the readers. */
static void
fill_fail(struct fill *f, const char *why)
{
	log_warnx("fill %s from %s/%s failed: %s", f->digest,
	    f->upstream_name, f->repo, why);
	stats.fills_failed++;
	fill_bytes_inflight -= f->reserved;
	f->reserved = 0;
	f->state = FILL_FAILED;
	if (f->ur != NULL) {
		upreq_cancel(f->ur);
		f->ur = NULL;
	}
	if (f->tmp != NULL) {
		unlink(f->tmp);
		free(f->tmp);
		f->tmp = NULL;
	}
	fill_notify(f, FILL_EV_FAILED);
}

/*
 * Start fetching digest of repository name from up into the cache (with
 * auth, a pass-through client's Authorization, or NULL).
 * Returns NULL when no tmp file can be made (disk full, say): the caller
 * then streams straight from the upstream.
 */
struct fill *
fill_start(struct upstream *up, const char *name, const char *digest,
    const char *auth)
{
	struct fill	*f;
	char		*path, *scope;
	int		 fd;

	if ((fd = cache_tmp_create(digest, &path)) == -1) {
		log_warn("fill %s: cannot create a tmp file", digest);
		stats.fill_disk_errors++;
		return NULL;
	}
	f = xcalloc(1, sizeof(*f));
	f->magic = FILL_MAGIC;
	f->id = fill_next_id++;
	snprintf(f->digest, sizeof(f->digest), "%s", digest);
	f->upstream_name = xstrdup(up->cfg->name);
	f->repo = xstrdup(name);
	f->fd = fd;
	f->tmp = path;
	f->size = -1;
	f->state = FILL_RUNNING;
	TAILQ_INIT(&f->readers);
	TAILQ_INIT(&f->err_headers);
	if ((f->md = EVP_MD_CTX_new()) == NULL ||
	    EVP_DigestInit_ex(f->md, strncmp(digest, "sha512:", 7) == 0 ?
	    EVP_sha512() : EVP_sha256(), NULL) != 1)
		fatalx("%s: EVP digest init", __func__);
	TAILQ_INSERT_TAIL(&fills, f, entry);
	stats.fills_started++;

	xasprintf(&path, "/v2/%s/blobs/%s", name, digest);
	xasprintf(&scope, "repository:%s:pull", name);
	f->ur = upreq_new(up, EVHTTP_REQ_GET, path, scope, &fill_upreq_cb, f);
	upreq_set_auth(f->ur, auth);
	free(path);
	free(scope);
	log_debug("%s: fill %llu: %s from %s/%s", __func__,
	    (unsigned long long)f->id, digest, up->cfg->name, name);
	upreq_start(f->ur);
	return f;
}

void
fill_join(struct fill *f, struct fill_reader *r)
{
	CHECK_MAGIC(f, FILL_MAGIC);
	r->fill = f;
	TAILQ_INSERT_TAIL(&f->readers, r, entry);
}

void
fill_leave(struct fill_reader *r)
{
	struct fill	*f = r->fill;

	if (f == NULL)
		return;
	CHECK_MAGIC(f, FILL_MAGIC);
	TAILQ_REMOVE(&f->readers, r, entry);
	r->fill = NULL;
	fill_maybe_free(f);
}

/*
 * How many bytes readers may have: all of them once verified, otherwise
 * all but the last, so that a bad blob never reaches a client whole.
 */
uint64_t
fill_available(const struct fill *f)
{
	if (f->state == FILL_DONE || f->state == FILL_PUBLISHING)
		return f->written;
	return f->written > 0 ? f->written - 1 : 0;
}

static void
fill_on_headers(struct upreq *ur, int status, struct evkeyvalq *h, void *arg)
{
	struct fill	*f = arg;
	const char	*cl;
	char		*end;
	long long	 n;

	CHECK_MAGIC(f, FILL_MAGIC);
	f->status = status;
	if (status != 200) {
		/* Readers pass the upstream's answer on: 404, 401, 429... */
		headers_copy(&f->err_headers, h, "Content-Type");
		headers_copy(&f->err_headers, h, "Retry-After");
		headers_copy(&f->err_headers, h, "RateLimit-Limit");
		headers_copy(&f->err_headers, h, "RateLimit-Remaining");
		f->err_body = evbuffer_new();
		return;
	}
	if ((cl = evhttp_find_header(h, "Content-Length")) != NULL) {
		n = strtoll(cl, &end, 10);
		if (*cl != '\0' && *end == '\0' && n >= 0)
			f->size = n;
	}
	if (f->size >= 0 && (uint64_t)f->size > cache_blob_limit()) {
		/* Streamed to its readers, verified, but not kept. */
		log_info("fill %s: %lld bytes is more than the cache budget "
		    "takes: not caching it", f->digest, (long long)f->size);
		f->no_store = 1;
	} else if (f->size >= 0) {
		f->reserved = (uint64_t)f->size;
		fill_bytes_inflight += f->reserved;
		cache_make_room((uint64_t)f->size);
	}
	f->have_head = 1;
	fill_notify(f, FILL_EV_HEAD);
}

static void
fill_on_body(struct upreq *ur, struct evbuffer *data, void *arg)
{
	struct fill		*f = arg;
	struct evbuffer_iovec	 v[8];
	size_t			 len = evbuffer_get_length(data);
	int			 i, n;
	ssize_t			 w;

	CHECK_MAGIC(f, FILL_MAGIC);
	if (f->status != 200) {
		if (evbuffer_get_length(f->err_body) + len <=
		    FILL_ERR_BODY_MAX)
			evbuffer_add_buffer(f->err_body, data);
		return;
	}
	if (f->size >= 0 && f->written + len > (uint64_t)f->size) {
		fill_fail(f, "the upstream sent more bytes than it announced");
		return;
	}
	while (evbuffer_get_length(data) > 0) {
		n = evbuffer_peek(data, -1, NULL, v, 8);
		for (i = 0; i < n && i < 8; i++) {
			for (size_t off = 0; off < v[i].iov_len; ) {
				w = pwrite(f->fd, (char *)v[i].iov_base + off,
				    v[i].iov_len - off,
				    (off_t)(f->written + off));
				if (w == -1 && errno == EINTR)
					continue;
				if (w <= 0) {
					log_warn("fill %s: write %s",
					    f->digest, f->tmp);
					stats.fill_disk_errors++;
					f->disk_error = 1;
					fill_fail(f, "cannot write to the "
					    "cache");
					return;
				}
				off += (size_t)w;
			}
			/* Hashed once written: the hash always covers exactly
			 * the bytes on disk (a reader may go on from there). */
			EVP_DigestUpdate(f->md, v[i].iov_base, v[i].iov_len);
			f->written += v[i].iov_len;
			evbuffer_drain(data, v[i].iov_len);
		}
	}
	stats.fill_bytes += len;
	fill_notify(f, FILL_EV_DATA);
}

/* Compare the hash of what was written with the digest it must have. */
static int
fill_digest_matches(struct fill *f)
{
	unsigned char	 md[EVP_MAX_MD_SIZE];
	unsigned int	 mdlen, i;
	char		 hex[2 * EVP_MAX_MD_SIZE + 1];
	const char	*want = strchr(f->digest, ':') + 1;

	if (EVP_DigestFinal_ex(f->md, md, &mdlen) != 1)
		return 0;
	for (i = 0; i < mdlen; i++)
		snprintf(hex + 2 * i, 3, "%02x", md[i]);
	return strcmp(hex, want) == 0;
}

static void
fill_on_done(struct upreq *ur, enum up_error err, const char *cause,
    void *arg)
{
	struct fill	*f = arg;
	char		 why[300];

	CHECK_MAGIC(f, FILL_MAGIC);
	f->ur = NULL;
	if (err != UP_OK) {
		f->up_error = err;
		snprintf(why, sizeof(why), "upstream: %s", cause);
		fill_fail(f, why);
		return;
	}
	if (f->status != 200) {
		/* Nothing to cache; readers answer with the upstream's. */
		fill_bytes_inflight -= f->reserved;
		f->reserved = 0;
		f->state = FILL_UPSTREAM_ERROR;
		unlink(f->tmp);
		free(f->tmp);
		f->tmp = NULL;
		fill_notify(f, FILL_EV_UPSTREAM_ERROR);
		return;
	}
	if (f->size >= 0 && f->written != (uint64_t)f->size) {
		fill_fail(f, "the body is shorter than announced");
		return;
	}
	if (!fill_digest_matches(f)) {
		stats.digest_mismatches++;
		fill_fail(f, "the bytes do not match the digest");
		return;
	}
	f->size = (int64_t)f->written;
	if (f->no_store || f->written > cache_blob_limit()) {
		unlink(f->tmp);
		free(f->tmp);
		f->tmp = NULL;
		fill_bytes_inflight -= f->reserved;
		f->reserved = 0;
		f->state = FILL_DONE;
		fill_notify(f, FILL_EV_DONE);
		return;
	}
	/* Verified: readers may have every byte now, while the file is
	 * made durable and indexed in the background. */
	f->state = FILL_PUBLISHING;
	fill_notify(f, FILL_EV_DATA);
	cache_publish_async(f->fd, f->tmp, f->digest, f->written,
	    f->upstream_name, f->repo, f->id, fill_published);
}

/* The publish of fill id is over (ok or not): the fill is done. */
static void
fill_published(uint64_t id, int ok)
{
	struct fill	*f;

	TAILQ_FOREACH(f, &fills, entry)
		if (f->id == id)
			break;
	if (f == NULL)
		return;
	CHECK_MAGIC(f, FILL_MAGIC);
	if (!ok) {
		/* The readers still got the verified bytes. */
		log_warnx("fill %s: verified but not stored", f->digest);
		stats.fill_disk_errors++;
	}
	free(f->tmp);		/* renamed, or removed by the publish */
	f->tmp = NULL;
	fill_bytes_inflight -= f->reserved;
	f->reserved = 0;
	f->state = FILL_DONE;
	stats.fills_done++;
	log_debug("%s: fill %llu: %s %s, %llu bytes", __func__,
	    (unsigned long long)f->id, f->digest, ok ? "stored" : "not stored",
	    (unsigned long long)f->written);
	if (ok)
		cache_after_store();
	fill_notify(f, FILL_EV_DONE);
}

/* Fills fetching or publishing now, for the stats. */
size_t
fill_count(void)
{
	struct fill	*f;
	size_t		 n = 0;

	TAILQ_FOREACH(f, &fills, entry)
		if (f->state == FILL_RUNNING || f->state == FILL_PUBLISHING)
			n++;
	return n;
}

/* At shutdown: stop every fill (their readers are gone already). */
void
fill_shutdown(void)
{
	struct fill	*f, *next;

	cache_publish_drain();	/* verified fills end up stored */
	for (f = TAILQ_FIRST(&fills); f != NULL; f = next) {
		next = TAILQ_NEXT(f, entry);
		if (f->state == FILL_RUNNING)
			fill_fail(f, "shutting down");
		else
			fill_maybe_free(f);
	}
}
