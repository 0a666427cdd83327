/*
 * Blobs for clients: from the cache when the file is there (sendfile on
 * plain HTTP, bounded pread pieces on TLS), else from a fill that one
 * upstream fetch feeds for every client that wants the digest at once.
 * HEAD of an uncached blob goes to the upstream as is.  Through a
 * credentialed upstream, a blob cached or being fetched for another
 * repository waits for server_xrepo.c to confirm it in this one.
 */
#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <event2/bufferevent_ssl.h>

#include "regcache.h"

/* Body queued towards one client before we wait for it: small for bytes
 * read into memory, larger for sendfile pieces, which cost no memory. */
#define BLOB_CHUNK		(256 * 1024)
#define BLOB_SEG_HIGH		(8 * 1024 * 1024)
#define BLOB_SENDFILE_MAX	(1024 * 1024)

struct blobsrc {
	int				 fd;	/* ours; -1 when seg owns it */
	struct evbuffer_file_segment	*seg;	/* plain sockets */
	uint64_t			 pos;	/* next byte to queue */
	uint64_t			 end;	/* one past the last to send */
	int				 open_end; /* size not known yet */
	int				 from_fill;
	int				 resuming; /* from the upstream */
	int				 resume_bad;
	int				 resume_started;
	uint64_t			 resume_from; /* first byte from upstream */
	EVP_MD_CTX			*md;	/* hash of [0, resume_from) on */
	struct evbuffer			*tail;	/* the held-back last byte */
	struct fill_reader		 reader;
};

static void	blob_fill_event(struct fill_reader *, enum fill_event);
static void	blob_resume_start(struct exchange *);
static void	blob_resume_finish(struct exchange *);

/* Feed every byte of buf to md (buf unchanged). */
static void
blob_hash_buffer(EVP_MD_CTX *md, struct evbuffer *buf)
{
	struct evbuffer_iovec	*v;
	int			 n, i;

	if ((n = evbuffer_peek(buf, -1, NULL, NULL, 0)) <= 0)
		return;
	v = xcalloc((size_t)n, sizeof(*v));
	n = evbuffer_peek(buf, -1, NULL, v, n);
	for (i = 0; i < n; i++)
		EVP_DigestUpdate(md, v[i].iov_base, v[i].iov_len);
	free(v);
}

/* Is the client on TLS?  Then bytes must pass through memory. */
static int
blob_client_tls(struct exchange *ex)
{
	struct bufferevent *bev = evhttp_connection_get_bufferevent(
	    evhttp_request_get_connection(ex->req));

	return bufferevent_openssl_get_ssl(bev) != NULL;
}

void
blob_src_free(struct exchange *ex)
{
	struct blobsrc	*src = ex->src;

	if (src == NULL)
		return;
	fill_leave(&src->reader);
	EVP_MD_CTX_free(src->md);
	if (src->tail != NULL)
		evbuffer_free(src->tail);
	if (src->seg != NULL)
		evbuffer_file_segment_free(src->seg);
	else if (src->fd != -1)
		close(src->fd);
	free(src);
	ex->src = NULL;
}

/*
 * Parse a single byte range against a size: 0 no usable Range (send it
 * all), 1 a satisfiable range in [*start, *end), -1 unsatisfiable.
 * Several ranges are answered with the whole blob, as RFC 9110 allows.
 */
static int
blob_range(struct exchange *ex, uint64_t size, uint64_t *start,
    uint64_t *end)
{
	const char		*r = evhttp_find_header(
				    evhttp_request_get_input_headers(ex->req),
				    "Range");
	unsigned long long	 a, b;
	char			*e;

	if (r == NULL || strncasecmp(r, "bytes=", 6) != 0 ||
	    strchr(r, ',') != NULL)
		return 0;
	r += 6;
	if (*r == '-') {			/* the last N bytes */
		b = strtoull(r + 1, &e, 10);
		if (e == r + 1 || *e != '\0')
			return 0;
		if (b == 0 || size == 0)
			return -1;
		*start = b >= size ? 0 : size - b;
		*end = size;
		return 1;
	}
	if (*r < '0' || *r > '9')
		return 0;
	a = strtoull(r, &e, 10);
	if (*e != '-')
		return 0;
	if (e[1] == '\0')
		b = size > 0 ? size - 1 : 0;
	else {
		const char *bs = e + 1;
		b = strtoull(bs, &e, 10);
		if (*e != '\0' || b < a)
			return 0;
		if (b >= size)
			b = size - 1;
	}
	if (a >= size)
		return -1;
	*start = a;
	*end = b + 1;
	return 1;
}

/* The headers every blob answer carries. */
static void
blob_headers(struct exchange *ex, const char *length)
{
	struct evkeyvalq	*out = evhttp_request_get_output_headers(ex->req);
	char			 etag[V2_DIGEST_MAX + 3];

	v2_common_headers(ex->req);
	evhttp_add_header(out, "Content-Type", "application/octet-stream");
	if (length != NULL)
		evhttp_add_header(out, "Content-Length", length);
	evhttp_add_header(out, "Docker-Content-Digest", ex->p.ref);
	snprintf(etag, sizeof(etag), "\"%s\"", ex->p.ref);
	evhttp_add_header(out, "ETag", etag);
	evhttp_add_header(out, "Accept-Ranges", "bytes");
	/* Content-addressed: it never changes. */
	evhttp_add_header(out, "Cache-Control", "max-age=31536000");
}

/* If-None-Match naming this digest (or *): the client has it already. */
static int
blob_not_modified(struct exchange *ex)
{
	const char	*inm = evhttp_find_header(
			    evhttp_request_get_input_headers(ex->req),
			    "If-None-Match");
	char		 etag[V2_DIGEST_MAX + 3];

	if (inm == NULL)
		return 0;
	snprintf(etag, sizeof(etag), "\"%s\"", ex->p.ref);
	return strcmp(inm, "*") == 0 || strstr(inm, etag) != NULL;
}

/* Answer with headers only (HEAD, 304, 416) and end the exchange. */
static void
blob_reply_empty(struct exchange *ex, int status)
{
	struct evhttp_request	*req = ex->req;

	ex->status = status;
	if (ex->xcache != NULL)
		evhttp_add_header(evhttp_request_get_output_headers(req),
		    "X-Cache", ex->xcache);
	exchange_replied(ex);
	evhttp_send_reply(req, status, NULL, NULL);
	exchange_close(ex, NULL);
}

/*
 * Send the head for a blob of size bytes (size < 0: not known yet) and set
 * up the source range; HEAD, 304 and 416 end here.  Returns 1 when a body
 * is to follow.
 */
static int
blob_begin(struct exchange *ex, struct blobsrc *src, int64_t size)
{
	uint64_t	start = 0, end = 0;
	char		len[32], cr[96];
	int		rc = 0;

	if (blob_not_modified(ex)) {	/* before Range (RFC 9110 13.2.2) */
		blob_headers(ex, NULL);
		blob_reply_empty(ex, 304);
		return 0;
	}
	if (size >= 0)
		rc = blob_range(ex, (uint64_t)size, &start, &end);
	if (rc == -1) {
		snprintf(cr, sizeof(cr), "bytes */%" PRId64, size);
		blob_headers(ex, "0");
		evhttp_add_header(evhttp_request_get_output_headers(ex->req),
		    "Content-Range", cr);
		blob_reply_empty(ex, 416);
		return 0;
	}
	if (rc == 0) {
		start = 0;
		end = size >= 0 ? (uint64_t)size : UINT64_MAX;
	}
	if (size >= 0) {
		snprintf(len, sizeof(len), "%" PRIu64, end - start);
		blob_headers(ex, len);
	} else
		blob_headers(ex, NULL);		/* chunked */
	if (rc == 1) {
		snprintf(cr, sizeof(cr), "bytes %" PRIu64 "-%" PRIu64 "/%"
		    PRId64, start, end - 1, size);
		evhttp_add_header(evhttp_request_get_output_headers(ex->req),
		    "Content-Range", cr);
	}
	if (ex->method == EVHTTP_REQ_HEAD) {
		blob_reply_empty(ex, rc == 1 ? 206 : 200);
		return 0;
	}
	src->pos = start;
	src->end = end;
	src->open_end = size < 0;
	/* sendfile needs a known size and a plain socket. */
	if (size > 0 && !blob_client_tls(ex)) {
		src->seg = evbuffer_file_segment_new(src->fd, 0, size,
		    EVBUF_FS_CLOSE_ON_FREE);
		if (src->seg != NULL) {
			src->fd = -1;
			/* libevent writes at most 16 KB per call by default:
			 * let one sendfile move a megabyte, as nginx does. */
			bufferevent_set_max_single_write(
			    evhttp_connection_get_bufferevent(
			    evhttp_request_get_connection(ex->req)), BLOB_SENDFILE_MAX);
		}
	}
	v2_reply_start(ex, rc == 1 ? 206 : 200);
	return 1;
}

/*
 * Queue more of the blob while the client keeps up; v2_written calls
 * again when the queue is written.  Bytes of a fill are queued only as
 * far as the fill allows (its last byte waits for verification).
 */
void
blob_pump(struct exchange *ex)
{
	struct blobsrc	*src = ex->src;
	struct fill	*f = src->reader.fill;
	struct evbuffer	*buf;
	uint64_t	 avail, n, high;

	if (src->resuming && src->resume_started) {
		/* Bytes come from an upstream request now: let it read. */
		if (ex->paused && ex->ur != NULL) {
			ex->paused = 0;
			upreq_resume(ex->ur);
		}
		return;
	}
	high = src->seg != NULL ? BLOB_SEG_HIGH : STREAM_HIGH_WATER;
	for (;;) {
		if (evbuffer_get_length(v2_output(ex)) >= high)
			return;
		avail = src->end;
		if (src->resuming && src->resume_from < avail)
			avail = src->resume_from;
		if (f != NULL && fill_available(f) < avail)
			avail = fill_available(f);
		/* Until the fill is verified, the last byte of what this
		 * client asked for waits too: a range that ends early must
		 * not arrive whole if the blob turns out wrong. */
		if (f != NULL && f->state == FILL_RUNNING &&
		    avail == src->end && avail > 0)
			avail--;
		if (src->pos >= avail)
			break;
		n = avail - src->pos < BLOB_CHUNK ? avail - src->pos :
		    BLOB_CHUNK;
		if ((buf = evbuffer_new()) == NULL)
			fatalx("%s: evbuffer_new", __func__);
		if (src->seg != NULL) {
			/* So the piece stays a sendfile piece. */
			evbuffer_set_flags(buf, EVBUFFER_FLAG_DRAINS_TO_FD);
			if (evbuffer_add_file_segment(buf, src->seg,
			    (ev_off_t)src->pos, (ev_off_t)n) == -1)
				goto fail;
		} else if (fd_read_into(src->fd, src->pos, (size_t)n,
		    buf) == -1)
			goto fail;
		/* A reader of a fill it did not start costs no upstream
		 * bytes either. */
		if (!src->from_fill || (ex->xcache != NULL &&
		    strcmp(ex->xcache, "COALESCED") == 0))
			stats.bytes_from_cache += n;
		else
			stats.bytes_from_upstream += n;
		src->pos += n;
		v2_send_chunk(ex, buf);
		evbuffer_free(buf);
	}
	if (src->resuming) {
		/* What the cache kept is sent: the rest from the upstream. */
		blob_resume_start(ex);
		return;
	}
	/* A fill's reader ends only once the fill is verified. */
	if (src->pos >= src->end && (f == NULL || f->state == FILL_DONE ||
	    f->state == FILL_PUBLISHING)) {
		fill_leave(&src->reader);
		v2_reply_finish(ex);	/* may free ex */
	}
	return;
 fail:
	evbuffer_free(buf);
	log_warn("blob %s: cannot read the cached file", ex->p.ref);
	v2_abort(ex, "cache read error");
}

/* The fill's upstream said no (404, 401, 429...): pass its answer on. */
static void
blob_fill_refused(struct exchange *ex, struct fill *f)
{
	struct evhttp_request	*req = ex->req;
	struct evkeyvalq	*out = evhttp_request_get_output_headers(req);
	struct evbuffer		*body = evbuffer_new();

	v2_common_headers(req);
	headers_copy(out, &f->err_headers, "Content-Type");
	headers_copy(out, &f->err_headers, "Retry-After");
	headers_copy(out, &f->err_headers, "RateLimit-Limit");
	headers_copy(out, &f->err_headers, "RateLimit-Remaining");
	if (f->err_body != NULL)
		evbuffer_add(body, evbuffer_pullup(f->err_body, -1),
		    evbuffer_get_length(f->err_body));
	ex->status = f->status;
	ex->bytes = evbuffer_get_length(body);
	exchange_replied(ex);
	evhttp_send_reply(req, f->status, NULL, body);
	evbuffer_free(body);
	exchange_close(ex, NULL);
}

/*
 * The cache gave up on a fill (disk full) while this client was part way
 * through: fetch the rest straight from the upstream with a Range.
 */
static void
blob_resume_headers(struct upreq *ur, int status, struct evkeyvalq *h,
    void *arg)
{
	struct exchange	*ex = arg;
	struct blobsrc	*src = ex->src;
	const char	*cr = evhttp_find_header(h, "Content-Range");
	char		 want[48];

	CHECK_MAGIC(ex, EXCHANGE_MAGIC);
	snprintf(want, sizeof(want), "bytes %" PRIu64 "-", src->pos);
	if (status != 206 || cr == NULL ||
	    strncmp(cr, want, strlen(want)) != 0)
		src->resume_bad = 1;
}

static void
blob_resume_body(struct upreq *ur, struct evbuffer *data, void *arg)
{
	struct exchange	*ex = arg;
	struct blobsrc	*src = ex->src;
	size_t		 len = evbuffer_get_length(data);

	CHECK_MAGIC(ex, EXCHANGE_MAGIC);
	if (src->resume_bad || ex->req == NULL || src->pos + len > src->end) {
		src->resume_bad = 1;
		return;
	}
	blob_hash_buffer(src->md, data);
	src->pos += len;
	if (src->pos == src->end) {
		/* Hold the last byte back until the digest is checked. */
		struct evbuffer *head = evbuffer_new();

		evbuffer_remove_buffer(data, head, len - 1);
		evbuffer_add_buffer(src->tail, data);	/* the last byte */
		evbuffer_add_buffer(data, head);
		evbuffer_free(head);
	}
	stats.bytes_from_upstream += evbuffer_get_length(data);
	if (evbuffer_get_length(data) > 0)
		v2_send_chunk(ex, data);
	if (!ex->paused && evbuffer_get_length(v2_output(ex)) >
	    STREAM_HIGH_WATER) {
		ex->paused = 1;
		upreq_pause(ur);
	}
}

static void
blob_resume_done(struct upreq *ur, enum up_error err, const char *cause,
    void *arg)
{
	struct exchange	*ex = arg;
	struct blobsrc	*src = ex->src;

	CHECK_MAGIC(ex, EXCHANGE_MAGIC);
	ex->ur = NULL;
	if (err == UP_OK && !src->resume_bad && src->pos == src->end)
		blob_resume_finish(ex);
	else
		v2_abort(ex, "resume from the upstream failed");
}

static const struct upreq_cb blob_resume_cb = {
	blob_resume_headers, blob_resume_body, blob_resume_done
};

/* Send the last byte if the whole blob hashes to its digest. */
static void
blob_resume_finish(struct exchange *ex)
{
	struct blobsrc	*src = ex->src;
	unsigned char	 md[EVP_MAX_MD_SIZE];
	unsigned int	 mdlen, i;
	char		 hex[2 * EVP_MAX_MD_SIZE + 1];

	/* The tail byte was hashed with its chunk. */
	if (EVP_DigestFinal_ex(src->md, md, &mdlen) != 1)
		mdlen = 0;
	for (i = 0; i < mdlen; i++)
		snprintf(hex + 2 * i, 3, "%02x", md[i]);
	if (mdlen == 0 || strcmp(hex, strchr(ex->p.ref, ':') + 1) != 0) {
		stats.digest_mismatches++;
		log_warnx("blob %s: the upstream's bytes do not match the "
		    "digest", ex->p.ref);
		v2_abort(ex, "digest mismatch");
		return;
	}
	if (src->tail != NULL && evbuffer_get_length(src->tail) > 0) {
		stats.bytes_from_upstream += evbuffer_get_length(src->tail);
		v2_send_chunk(ex, src->tail);
	}
	v2_reply_finish(ex);
}

/* Start the upstream request for [resume_from, end). */
static void
blob_resume_start(struct exchange *ex)
{
	struct blobsrc	*src = ex->src;
	char		*scope, range[64];

	if (src->resume_started)
		return;
	src->resume_started = 1;
	if (src->resume_from >= src->end) {
		blob_resume_finish(ex);
		return;
	}
	snprintf(range, sizeof(range), "bytes=%" PRIu64 "-%" PRIu64,
	    src->pos, src->end - 1);
	xasprintf(&scope, "repository:%s:pull", ex->rt.name);
	ex->ur = upreq_new(ex->rt.upstream, EVHTTP_REQ_GET, ex->upath, scope,
	    &blob_resume_cb, ex);
	free(scope);
	upreq_set_auth(ex->ur, ex->up_auth);
	upreq_add_header(ex->ur, "Range", range);
	log_info("blob %s: the cache could not keep it; streaming the rest "
	    "from %s", ex->p.ref, ex->rt.upstream->cfg->name);
	upreq_start(ex->ur);
}

/*
 * The cache gave up on the fill this client reads (disk full).  It gets
 * what reached the disk from its own descriptor, the rest from the
 * upstream, and the whole still goes through the digest check, from the
 * fill's hash of the bytes on disk.
 */
static void
blob_resume(struct exchange *ex, struct fill *f)
{
	struct blobsrc	*src = ex->src;

	/* The hash can be finished only for a body that runs to the end of
	 * the blob; a shorter range just fails. */
	if (src->open_end || f->size < 0 || src->end != (uint64_t)f->size ||
	    (src->md = EVP_MD_CTX_new()) == NULL ||
	    EVP_MD_CTX_copy_ex(src->md, f->md) != 1 ||
	    (src->tail = evbuffer_new()) == NULL || src->pos > f->written) {
		v2_abort(ex, "fill failed");
		return;
	}
	src->resuming = 1;
	src->resume_from = f->written;
	ex->xcache = "MISS";
	blob_pump(ex);
}

/* Was fill f started for the upstream and repository of this request? */
static int
blob_fill_ours(struct exchange *ex, struct fill *f)
{
	return strcmp(f->upstream_name, ex->rt.upstream->cfg->name) == 0 &&
	    strcmp(f->repo, ex->rt.name) == 0;
}

/*
 * Handle the request again from the start, with what is known now: after a
 * fill for another repository was refused, or once the upstream confirmed
 * the digest in this repository (server_xrepo.c).
 */
void
blob_rerun(struct exchange *ex)
{
	blob_src_free(ex);
	if (blob_handle(ex) == -1)
		v2_passthrough(ex);
}

/* What a fill tells one of its readers. */
static void
blob_fill_event(struct fill_reader *r, enum fill_event ev)
{
	struct exchange	*ex = r->arg;
	struct blobsrc	*src;
	struct fill	*f = r->fill;
	char		 msg[256];

	CHECK_MAGIC(ex, EXCHANGE_MAGIC);
	src = ex->src;
	switch (ev) {
	case FILL_EV_HEAD:
		/* Without a size the reply could only be close-delimited or
		 * chunked, where a failed fill can look complete: wait for
		 * the verified blob and answer with its length. */
		if (f->size < 0 && f->state == FILL_RUNNING)
			return;
		if ((src->fd = dup(f->fd)) == -1) {
			log_warn("blob %s: dup", ex->p.ref);
			fill_leave(r);
			v2_fail(ex, 500, "UNKNOWN", "cache error", "dup");
			return;
		}
		if (blob_begin(ex, src, f->size))
			blob_pump(ex);
		return;
	case FILL_EV_DATA:
	case FILL_EV_DONE:
		if (!ex->started && src->fd == -1 && f->state != FILL_RUNNING) {
			/* A fill of unknown size is verified: begin now. */
			blob_fill_event(r, FILL_EV_HEAD);
			return;
		}
		if (!ex->started)
			return;
		if (src->open_end && (f->state == FILL_PUBLISHING ||
		    f->state == FILL_DONE))
			src->end = f->written;
		blob_pump(ex);
		return;
	case FILL_EV_UPSTREAM_ERROR:
		fill_leave(r);
		if (!blob_fill_ours(ex, f)) {
			/* Refused for another repository: ask for ours. */
			blob_rerun(ex);
			return;
		}
		blob_fill_refused(ex, f);
		return;
	case FILL_EV_FAILED:
		fill_leave(r);
		if (ex->started && f->disk_error && src->pos < src->end) {
			blob_resume(ex, f);
			return;
		}
		if (ex->started) {
			v2_abort(ex, "fill failed");
			return;
		}
		if (f->disk_error) {
			/* The cache cannot take it: stream it instead. */
			blob_src_free(ex);
			ex->xcache = "MISS";
			v2_passthrough(ex);
			return;
		}
		snprintf(msg, sizeof(msg), "upstream %s: %s",
		    ex->rt.upstream->cfg->name, f->up_error != UP_OK ?
		    up_error_str(f->up_error) : "bad blob");
		v2_fail(ex, f->up_error == UP_ERR_TIMEOUT ? 504 : 502,
		    "UNAVAILABLE", msg, "fill failed");
		return;
	}
}

/*
 * A blob request, after routing.  Returns 0 when this file answers it,
 * -1 when it should stream straight through (HEAD of an uncached blob, or
 * a cache that cannot take a fill).  A credentialed upstream first
 * confirms a blob cached, or being fetched, for another repository.
 */
int
blob_handle(struct exchange *ex)
{
	struct idx_blob	 b;
	struct blobsrc	*src;
	struct fill	*f;
	int		 fd;

	if ((fd = cache_blob_open(ex->p.ref, &b)) != -1) {
		if (xrepo_needed(ex)) {
			close(fd);
			xrepo_confirm(ex);
			return 0;
		}
		stats.hits++;
		ex->xcache = "HIT";
		idx_touch(ex->p.ref, time(NULL));
		idx_blob_seen_in(ex->p.ref, ex->rt.upstream->cfg->name,
		    ex->rt.name);
		src = xcalloc(1, sizeof(*src));
		src->fd = fd;
		ex->src = src;
		if (blob_begin(ex, src, (int64_t)b.size))
			blob_pump(ex);
		return 0;
	}
	if (ex->method == EVHTTP_REQ_HEAD) {
		ex->xcache = "MISS";
		return -1;
	}
	if ((f = fill_find(ex->p.ref)) != NULL) {
		if (!blob_fill_ours(ex, f) && xrepo_needed(ex)) {
			xrepo_confirm(ex);
			return 0;
		}
		stats.coalesced++;
		stats.fill_readers_joined++;
		ex->xcache = "COALESCED";
	} else if ((f = fill_start(ex->rt.upstream, ex->rt.name,
	    ex->p.ref, ex->up_auth)) != NULL) {
		stats.misses++;
		ex->xcache = "MISS";
	} else {
		ex->xcache = "MISS";
		return -1;
	}
	src = xcalloc(1, sizeof(*src));
	src->fd = -1;
	src->from_fill = 1;
	src->reader.cb = blob_fill_event;
	src->reader.arg = ex;
	ex->src = src;
	fill_join(f, &src->reader);
	if (f->have_head)
		blob_fill_event(&src->reader, FILL_EV_HEAD);
	return 0;
}
