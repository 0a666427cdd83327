/*
 * Manifests for clients.  By digest: the exact bytes from the cache, or
 * fetched once, verified and kept.  By tag: the tag -> digest mapping is
 * kept per (upstream, repository, tag, Accept class) for the upstream's
 * tag_ttl; within it a tag pull asks the upstream nothing; after it one
 * HEAD revalidates, and the manifest is fetched again only if the digest
 * changed.  An upstream that is down, times out, or answers 5xx or 429
 * gets the cached mapping served anyway (stale-if-error).  A 404 is
 * remembered for negative_ttl.  Through a credentialed upstream a
 * manifest by digest cached for another repository is served once
 * server_xrepo.c confirmed it in this one; a tag's digest counts as
 * confirmed in the tag's repository.
 *
 * Accept classes: upstreams answer a tag differently by Accept (a list to
 * clients that take lists, a platform manifest otherwise), so a client is
 * only ever served a media type it accepts.  The class is the set of
 * manifest types the client accepts; the mapping fetched for the full set
 * serves every client that accepts its type.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "regcache.h"

/* distribution refuses manifests over 4 MiB: so do we. */
#define MANIFEST_MAX		(4 * 1024 * 1024)

static const char *const mf_types[] = {
	"application/vnd.oci.image.index.v1+json",
	"application/vnd.docker.distribution.manifest.list.v2+json",
	"application/vnd.oci.image.manifest.v1+json",
	"application/vnd.docker.distribution.manifest.v2+json",
	"application/vnd.docker.distribution.manifest.v1+prettyjws",
	"application/vnd.docker.distribution.manifest.v1+json",
	NULL
};
#define MF_ALL			0x3fu
/* The types that change an upstream's answer; schema 1 does not count. */
#define MF_CLASS_BITS		0x0fu

enum mop_step {
	MOP_GET_TAG,		/* GET by tag: a new mapping */
	MOP_HEAD_TAG,		/* HEAD by tag: revalidate a stale one */
	MOP_GET_DIGEST		/* GET by digest: the manifest itself */
};

/*
 * Concurrent requests for the same manifest share one upstream request:
 * the first leads, the others wait on its flight and run again, from the
 * cache, once it is over.  A pull by 20 clients at once is one upstream
 * pull (which Docker Hub counts against its limit), not 20.
 */
struct mf_flight {
	TAILQ_ENTRY(mf_flight)	 entry;
	char			*key;
	TAILQ_HEAD(, mop)	 waiters;
};
TAILQ_HEAD(mf_flight_list, mf_flight);
static struct mf_flight_list	flights = TAILQ_HEAD_INITIALIZER(flights);

struct mop {
	struct exchange		*ex;
	struct mf_flight	*lead;		/* the flight we lead */
	struct mf_flight	*wait;		/* the flight we wait on */
	TAILQ_ENTRY(mop)	 wentry;
	int			 reruns;
	enum mop_step		 step;
	unsigned		 mask;		/* the client's Accept class */
	char			 cls[8];
	struct idx_tag		 tag;		/* the mapping we have, if any */
	char			 target[V2_DIGEST_MAX + 1]; /* GET_DIGEST of */
	int			 have_tag;
	int			 status;
	char			*ctype;
	char			*dcd;		/* Docker-Content-Digest */
	char			*etag;		/* the upstream's ETag */
	struct evkeyvalq	 pass;		/* headers for a passed answer */
	struct evbuffer		*body;
	int			 too_big;
};

static void	mf_up_headers(struct upreq *, int, struct evkeyvalq *, void *);
static void	mf_up_body(struct upreq *, struct evbuffer *, void *);
static void	mf_up_done(struct upreq *, enum up_error, const char *,
		    void *);

static const struct upreq_cb mf_upreq_cb = {
	mf_up_headers, mf_up_body, mf_up_done
};

static unsigned
mf_type_bit(const char *t)
{
	size_t	i;

	for (i = 0; mf_types[i] != NULL; i++)
		if (strcasecmp(t, mf_types[i]) == 0)
			return 1u << i;
	return 0;
}

/* The manifest types the client accepts, from every Accept line. */
static unsigned
mf_client_mask(struct evhttp_request *req)
{
	struct evkeyval	*kv;
	char		*s, *tok, *save, *semi;
	unsigned	 mask = 0;
	size_t		 len;

	TAILQ_FOREACH(kv, evhttp_request_get_input_headers(req), next) {
		if (strcasecmp(kv->key, "Accept") != 0)
			continue;
		s = xstrdup(kv->value);
		for (tok = strtok_r(s, ",", &save); tok != NULL;
		    tok = strtok_r(NULL, ",", &save)) {
			while (*tok == ' ' || *tok == '\t')
				tok++;
			if ((semi = strchr(tok, ';')) != NULL)
				*semi = '\0';
			for (len = strlen(tok); len > 0 && (tok[len - 1] ==
			    ' ' || tok[len - 1] == '\t'); len--)
				tok[len - 1] = '\0';
			if (strcmp(tok, "*/*") == 0 ||
			    strcmp(tok, "application/*") == 0)
				mask |= MF_ALL;
			else
				mask |= mf_type_bit(tok);
		}
		free(s);
	}
	return mask;
}

/* Accept lines for an upstream request of class mask (none for 0). */
static void
mf_add_accept(struct upreq *ur, unsigned mask)
{
	size_t	i;

	for (i = 0; mf_types[i] != NULL; i++)
		if (mask & (1u << i))
			upreq_add_header(ur, "Accept", mf_types[i]);
}

/* Accept lines for every manifest type (a request that asks whether a
 * digest exists, whatever its type). */
void
manifest_accept_all(struct upreq *ur)
{
	mf_add_accept(ur, MF_ALL);
}

static void	mf_flight_end(struct mop *);
static void	mf_rerun(struct exchange *);

static void
mop_free(struct mop *m)
{
	if (m == NULL)
		return;
	if (m->wait != NULL)
		TAILQ_REMOVE(&m->wait->waiters, m, wentry);
	m->wait = NULL;
	mf_flight_end(m);
	free(m->ctype);
	free(m->dcd);
	free(m->etag);
	evhttp_clear_headers(&m->pass);
	if (m->body != NULL)
		evbuffer_free(m->body);
	free(m);
}

void
manifest_op_free(struct exchange *ex)
{
	mop_free(ex->mop);
	ex->mop = NULL;
}

static void
mf_key(struct exchange *ex, const char *cls, struct idx_tag_key *k)
{
	k->upstream = ex->rt.upstream->cfg->name;
	k->repo = ex->rt.name;
	k->tag = ex->p.ref;
	k->accept_class = cls;
}

static int64_t
now_ms(void)
{
	struct timespec	ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/*
 * Answer with a manifest from the cache: its exact bytes and stored media
 * type.  warning is for stale answers.  Returns -1 when the bytes are not
 * cached (evicted since): the caller fetches them.
 */
static int
mf_serve_cached(struct exchange *ex, const char *digest, const char *warning)
{
	struct evhttp_request	*req = ex->req;
	struct evkeyvalq	*out = evhttp_request_get_output_headers(req);
	struct idx_blob		 b;
	struct evbuffer		*body;
	const char		*inm;
	char			 len[32], etag[V2_DIGEST_MAX + 3];
	int			 status = 200;

	if ((body = evbuffer_new()) == NULL)
		fatalx("%s: evbuffer_new", __func__);
	if (cache_blob_read(digest, body, &b, MANIFEST_MAX) == -1) {
		evbuffer_free(body);
		return -1;
	}
	idx_touch(digest, time(NULL));
	evhttp_clear_headers(out);
	v2_common_headers(req);
	evhttp_add_header(out, "Content-Type", b.media_type[0] != '\0' ?
	    b.media_type : "application/vnd.docker.distribution.manifest.v2+json");
	snprintf(len, sizeof(len), "%llu", (unsigned long long)b.size);
	evhttp_add_header(out, "Content-Length", len);
	evhttp_add_header(out, "Docker-Content-Digest", digest);
	snprintf(etag, sizeof(etag), "\"%s\"", digest);
	evhttp_add_header(out, "ETag", etag);
	if (ex->ns[0] != '\0')
		evhttp_add_header(out, "OCI-Namespace", ex->ns);
	if (warning != NULL)
		evhttp_add_header(out, "Warning", warning);
	if (ex->xcache != NULL)
		evhttp_add_header(out, "X-Cache", ex->xcache);
	inm = evhttp_find_header(evhttp_request_get_input_headers(req),
	    "If-None-Match");
	if (inm != NULL && (strcmp(inm, "*") == 0 ||
	    strstr(inm, etag) != NULL)) {
		status = 304;
		evhttp_remove_header(out, "Content-Length");
		evbuffer_drain(body, evbuffer_get_length(body));
	} else if (ex->method == EVHTTP_REQ_HEAD)
		evbuffer_drain(body, evbuffer_get_length(body));
	/* Just fetched by this request, or held already (stale too). */
	if (warning == NULL && ex->mop != NULL && ex->mop->status == 200 &&
	    ex->mop->step != MOP_HEAD_TAG)
		stats.bytes_from_upstream += evbuffer_get_length(body);
	else
		stats.bytes_from_cache += evbuffer_get_length(body);
	ex->status = status;
	ex->bytes = evbuffer_get_length(body);
	exchange_replied(ex);
	evhttp_send_reply(req, status, NULL, body);
	evbuffer_free(body);
	exchange_close(ex, NULL);
	return 0;
}

/* The flight key: one upstream request answers all who share it. */
static char *
mf_flight_key(struct exchange *ex, enum mop_step step, const char *ref)
{
	char	*k;

	xasprintf(&k, "%d|%s|%s|%s|%s", (int)step,
	    ex->rt.upstream->cfg->name, ex->rt.name, ref, ex->mop->cls);
	return k;
}

/* Join a flight for key, or become its leader.  1: now waiting. */
static int
mf_flight_join(struct exchange *ex, enum mop_step step, const char *ref)
{
	struct mop		*m = ex->mop;
	struct mf_flight	*fl;
	char			*key = mf_flight_key(ex, step, ref);

	TAILQ_FOREACH(fl, &flights, entry) {
		if (strcmp(fl->key, key) == 0 && m->reruns < 2) {
			free(key);
			m->wait = fl;
			TAILQ_INSERT_TAIL(&fl->waiters, m, wentry);
			stats.coalesced++;
			return 1;
		}
	}
	fl = xcalloc(1, sizeof(*fl));
	fl->key = key;
	TAILQ_INIT(&fl->waiters);
	TAILQ_INSERT_TAIL(&flights, fl, entry);
	m->lead = fl;
	return 0;
}

/* The leader is done (answered, failed or gone): wake the waiters. */
static void
mf_flight_end(struct mop *m)
{
	struct mf_flight	*fl = m->lead;
	struct mop		*w;

	if (fl == NULL)
		return;
	m->lead = NULL;
	TAILQ_REMOVE(&flights, fl, entry);
	while ((w = TAILQ_FIRST(&fl->waiters)) != NULL) {
		TAILQ_REMOVE(&fl->waiters, w, wentry);
		w->wait = NULL;
		w->reruns++;
		mf_rerun(w->ex);
	}
	free(fl->key);
	free(fl);
}

/* Start one upstream request of the manifest op. */
static void
mf_request(struct exchange *ex, enum mop_step step, const char *ref)
{
	struct mop	*m = ex->mop;
	char		*path, *scope;

	if (ref != m->target)
		snprintf(m->target, sizeof(m->target), "%s", ref);
	if (m->lead != NULL) {
		/* A follow-up request: the waiters follow it too, instead
		 * of all running again and asking the upstream each. */
		free(m->lead->key);
		m->lead->key = mf_flight_key(ex, step, m->target);
	} else if (mf_flight_join(ex, step, m->target))
		return;
	ref = m->target;
	m->step = step;
	m->status = 0;
	free(m->ctype);
	free(m->dcd);
	free(m->etag);
	m->ctype = m->dcd = m->etag = NULL;
	evhttp_clear_headers(&m->pass);
	if (m->body != NULL)
		evbuffer_free(m->body);
	if ((m->body = evbuffer_new()) == NULL)
		fatalx("%s: evbuffer_new", __func__);
	m->too_big = 0;
	xasprintf(&path, "/v2/%s/manifests/%s", ex->rt.name, ref);
	xasprintf(&scope, "repository:%s:pull", ex->rt.name);
	ex->ur = upreq_new(ex->rt.upstream, step == MOP_HEAD_TAG ?
	    EVHTTP_REQ_HEAD : EVHTTP_REQ_GET, path, scope, &mf_upreq_cb, ex);
	upreq_set_auth(ex->ur, ex->up_auth);
	free(path);
	free(scope);
	/* A client that sent no Accept gets what the upstream gives one. */
	mf_add_accept(ex->ur, m->mask);
	upreq_start(ex->ur);
}

/* Pass the upstream's answer (a 4xx, a 5xx) on as it was. */
static void
mf_pass(struct exchange *ex)
{
	struct mop		*m = ex->mop;
	struct evhttp_request	*req = ex->req;
	struct evkeyvalq	*out = evhttp_request_get_output_headers(req);
	struct evkeyval		*kv;

	evhttp_clear_headers(out);
	v2_common_headers(req);
	TAILQ_FOREACH(kv, &m->pass, next)
		evhttp_add_header(out, kv->key, kv->value);
	if (ex->ns[0] != '\0')
		evhttp_add_header(out, "OCI-Namespace", ex->ns);
	if (ex->method == EVHTTP_REQ_HEAD)
		evbuffer_drain(m->body, evbuffer_get_length(m->body));
	ex->status = m->status;
	ex->bytes = evbuffer_get_length(m->body);
	if (m->status == 200)
		stats.bytes_from_upstream += ex->bytes;
	exchange_replied(ex);
	evhttp_send_reply(req, m->status, NULL, m->body);
	exchange_close(ex, NULL);
}

/* Is this upstream failure one to answer from a stale mapping? */
static int
mf_stale_ok(enum up_error err, int status)
{
	if (err != UP_OK)
		return err != UP_ERR_CANCELLED;
	return status == 429 || status >= 500;
}

/* Serve the mapping we have although the upstream could not confirm it. */
static int
mf_serve_stale(struct exchange *ex, const char *why)
{
	struct mop		*m = ex->mop;
	struct idx_tag_key	 k;
	struct idx_tag		 t;
	unsigned		 accept = m->mask ? m->mask : MF_ALL;
	char			 all[8];

	if (!m->have_tag || m->tag.negative ||
	    !(mf_type_bit(m->tag.media_type) & accept)) {
		/* The map fetched for every type may suit this client. */
		snprintf(all, sizeof(all), "%02x", MF_CLASS_BITS);
		mf_key(ex, all, &k);
		if (idx_tag_get(&k, &t) != 0 || t.negative ||
		    !(mf_type_bit(t.media_type) & accept))
			return -1;
		m->tag = t;
		m->have_tag = 1;
	}
	stats.stale_served++;
	ex->xcache = "STALE";
	log_warnx("upstream %s: %s; serving %s:%s from the cache",
	    ex->rt.upstream->cfg->name, why, ex->rt.name, ex->p.ref);
	return mf_serve_cached(ex, m->tag.digest,
	    "110 - \"Response is Stale\"");
}

/* Keep tag -> (digest, type) for this class. */
static void
mf_store_tag(struct exchange *ex, const char *digest, const char *ctype,
    int negative)
{
	struct mop		*m = ex->mop;
	struct idx_tag_key	 k;
	struct idx_tag		 t;

	memset(&t, 0, sizeof(t));
	if (digest != NULL)
		snprintf(t.digest, sizeof(t.digest), "%s", digest);
	if (ctype != NULL)
		snprintf(t.media_type, sizeof(t.media_type), "%s", ctype);
	if (m->etag != NULL)
		snprintf(t.etag, sizeof(t.etag), "%s", m->etag);
	t.fetched_ms = now_ms();
	t.negative = negative;
	mf_key(ex, m->cls, &k);
	idx_tag_put(&k, &t);
	/* The upstream named the digest for a tag of this repository, so a
	 * pull by that digest here needs no confirmation (server_xrepo.c). */
	if (!negative && digest != NULL)
		idx_blob_seen_in(digest, k.upstream, k.repo);
	m->tag = t;
	m->have_tag = 1;
}

/* sha256 of the body, as "sha256:<hex>". */
static void
mf_digest_of(struct evbuffer *body, const char *alg, char *out, size_t len)
{
	unsigned char	 md[EVP_MAX_MD_SIZE];
	unsigned int	 mdlen, i;
	size_t		 n;
	char		*w;

	EVP_Digest(evbuffer_pullup(body, -1), evbuffer_get_length(body), md,
	    &mdlen, strcmp(alg, "sha512") == 0 ? EVP_sha512() : EVP_sha256(),
	    NULL);
	n = (size_t)snprintf(out, len, "%s:", alg);
	for (i = 0, w = out + n; i < mdlen && n + 2 < len; i++, n += 2)
		w += snprintf(w, 3, "%02x", md[i]);
}

/* Store a fetched manifest under its digest; -1 when it cannot be. */
static int
mf_store_body(struct exchange *ex, const char *digest, const char *ctype)
{
	struct mop	*m = ex->mop;
	char		*tmp;
	int		 fd, rc;
	size_t		 len = evbuffer_get_length(m->body);

	if (idx_blob_get(digest, &(struct idx_blob){ 0 }) == 0) {
		/* The same bytes are there already, maybe through another
		 * repository: this one has them too now. */
		idx_blob_seen_in(digest, ex->rt.upstream->cfg->name,
		    ex->rt.name);
		return 0;
	}
	if ((fd = cache_tmp_create(digest, &tmp)) == -1)
		return -1;
	rc = fd_write_all(fd, evbuffer_pullup(m->body, -1), len);
	if (rc == 0)
		rc = cache_publish(fd, tmp, digest, len, ctype,
		    ex->rt.upstream->cfg->name, ex->rt.name);
	else
		unlink(tmp);
	close(fd);
	free(tmp);
	if (rc == 0)
		cache_after_store();
	return rc;
}

static void
mf_up_headers(struct upreq *ur, int status, struct evkeyvalq *h, void *arg)
{
	struct exchange	*ex = arg;
	struct mop	*m = ex->mop;
	const char	*v;

	CHECK_MAGIC(ex, EXCHANGE_MAGIC);
	m->status = status;
	if ((v = evhttp_find_header(h, "Content-Type")) != NULL)
		m->ctype = xstrdup(v);
	if ((v = evhttp_find_header(h, "Docker-Content-Digest")) != NULL)
		m->dcd = xstrdup(v);
	if ((v = evhttp_find_header(h, "ETag")) != NULL)
		m->etag = xstrdup(v);
	headers_copy(&m->pass, h, "Content-Type");
	headers_copy(&m->pass, h, "Retry-After");
	headers_copy(&m->pass, h, "RateLimit-Limit");
	headers_copy(&m->pass, h, "RateLimit-Remaining");
	headers_copy(&m->pass, h, "Docker-RateLimit-Source");

}

static void
mf_up_body(struct upreq *ur, struct evbuffer *data, void *arg)
{
	struct exchange	*ex = arg;
	struct mop	*m = ex->mop;

	CHECK_MAGIC(ex, EXCHANGE_MAGIC);
	if (evbuffer_get_length(m->body) + evbuffer_get_length(data) >
	    MANIFEST_MAX) {
		m->too_big = 1;
		return;
	}
	evbuffer_add_buffer(m->body, data);
}

/* A GET came back 200: verify, keep, map the tag, answer. */
static void
mf_got_manifest(struct exchange *ex)
{
	struct mop	*m = ex->mop;
	char		 digest[V2_DIGEST_MAX + 1];
	const char	*want;

	if (m->too_big) {
		v2_fail(ex, 502, "MANIFEST_INVALID",
		    "the upstream's manifest is over 4 MiB", "too big");
		return;
	}
	want = m->step == MOP_GET_DIGEST ? m->target : m->dcd;
	mf_digest_of(m->body, want != NULL && strncmp(want, "sha512:", 7) ==
	    0 ? "sha512" : "sha256", digest, sizeof(digest));
	if (want != NULL && strcmp(want, digest) != 0) {
		stats.digest_mismatches++;
		log_warnx("upstream %s: manifest %s:%s has digest %s, not %s",
		    ex->rt.upstream->cfg->name, ex->rt.name, ex->p.ref,
		    digest, want);
		v2_fail(ex, 502, "MANIFEST_INVALID",
		    "the upstream's manifest does not match its digest",
		    "digest mismatch");
		return;
	}
	if (m->ctype == NULL || mf_type_bit(m->ctype) == 0) {
		/* Not a manifest type we know: pass it on, keep nothing. */
		m->status = 200;
		evhttp_add_header(&m->pass, "Docker-Content-Digest", digest);
		mf_pass(ex);
		return;
	}
	if (mf_store_body(ex, digest, m->ctype) == -1)
		log_warnx("manifest %s: not stored", digest);
	if (!ex->p.ref_is_digest)
		mf_store_tag(ex, digest, m->ctype, 0);
	if (mf_serve_cached(ex, digest, NULL) == -1) {
		/* Could not store it (disk full): answer from memory. */
		m->status = 200;
		evhttp_add_header(&m->pass, "Docker-Content-Digest", digest);
		mf_pass(ex);
	}
}

static void	mf_done(struct exchange *, enum up_error, const char *);

static void
mf_up_done(struct upreq *ur, enum up_error err, const char *cause, void *arg)
{
	struct exchange	*ex = arg;

	CHECK_MAGIC(ex, EXCHANGE_MAGIC);
	ex->ur = NULL;
	if (ex->req == NULL) {
		exchange_close(ex, NULL);
		return;
	}
	mf_done(ex, err, cause);
}

/*
 * The end of one upstream request of a manifest op.  Whatever happens to
 * this exchange, waiters on its flight run again afterwards (mop_free
 * wakes them when the exchange closes; a follow-up request passes the
 * lead on).
 */
static void
mf_done(struct exchange *ex, enum up_error err, const char *cause)
{
	struct mop	*m = ex->mop;
	const char	*d;
	char		 msg[512];

	if (err == UP_OK && m->status == 200) {
		if (m->step != MOP_HEAD_TAG) {
			mf_got_manifest(ex);
			return;
		}
		/* Revalidated: the same digest needs nothing more. */
		stats.revalidations++;
		d = m->dcd;
		if (d != NULL && strcmp(d, m->tag.digest) == 0) {
			mf_store_tag(ex, d, m->tag.media_type, 0);
			if (mf_serve_cached(ex, m->tag.digest, NULL) == 0)
				return;
			/* Not d: mf_request frees m->dcd. */
			snprintf(m->target, sizeof(m->target), "%s",
			    m->tag.digest);
			mf_request(ex, MOP_GET_DIGEST, m->target);
			return;
		}
		/* Changed: fetch the new digest (unless we hold it already).
		 * Without a digest in the answer, fetch by tag. */
		if (d != NULL && v2_digest_valid(d) && m->ctype != NULL &&
		    mf_type_bit(m->ctype) != 0) {
			/* m->tag keeps the old digest for stale-if-error. */
			snprintf(m->target, sizeof(m->target), "%s", d);
			if (idx_blob_get(d, &(struct idx_blob){ 0 }) == 0) {
				mf_store_tag(ex, d, m->ctype, 0);
				if (mf_serve_cached(ex, m->target, NULL) == 0)
					return;
			}
			mf_request(ex, MOP_GET_DIGEST, m->target);
			return;
		}
		mf_request(ex, MOP_GET_TAG, ex->p.ref);
		return;
	}
	if (err == UP_OK && m->status == 404 && !ex->p.ref_is_digest &&
	    m->step != MOP_GET_DIGEST) {
		if (ex->rt.upstream->cfg->negative_ttl_ms > 0)
			mf_store_tag(ex, NULL, NULL, 1);
		mf_pass(ex);
		return;
	}
	if (!ex->p.ref_is_digest && mf_stale_ok(err, m->status) &&
	    mf_serve_stale(ex, err != UP_OK ? cause : "error status") == 0)
		return;
	if (err == UP_OK) {
		mf_pass(ex);
		return;
	}
	log_warnx("upstream %s: manifest %s:%s: %s",
	    ex->rt.upstream->cfg->name, ex->rt.name, ex->p.ref, cause);
	snprintf(msg, sizeof(msg), "upstream %s: %s",
	    ex->rt.upstream->cfg->name, cause);
	v2_fail(ex, err == UP_ERR_TIMEOUT ? 504 : 502, "UNAVAILABLE", msg,
	    up_error_str(err));
}

/* A manifest request by tag. */
static void
mf_by_tag(struct exchange *ex)
{
	struct mop		*m = ex->mop;
	struct idx_tag_key	 k;
	struct idx_tag		 t;
	int64_t			 now = now_ms();
	int			 ttl = ex->rt.upstream->cfg->tag_ttl_ms;
	int			 nttl = ex->rt.upstream->cfg->negative_ttl_ms;
	unsigned		 accept = m->mask ? m->mask : MF_ALL;
	char			 all[8];

	/* The mapping fetched for every type serves whoever accepts it. */
	snprintf(all, sizeof(all), "%02x", MF_CLASS_BITS);
	if (m->mask != 0 && (m->mask & MF_CLASS_BITS) != MF_CLASS_BITS) {
		mf_key(ex, all, &k);
		if (idx_tag_get(&k, &t) == 0 && !t.negative &&
		    (mf_type_bit(t.media_type) & accept) &&
		    now - t.fetched_ms < ttl) {
			stats.hits++;
			ex->xcache = "HIT";
			if (mf_serve_cached(ex, t.digest, NULL) == 0)
				return;
		}
	}
	mf_key(ex, m->cls, &k);
	if (idx_tag_get(&k, &t) == 0) {
		m->tag = t;
		m->have_tag = 1;
		if (t.negative && now - t.fetched_ms < nttl) {
			stats.negative_hits++;
			ex->xcache = "HIT";
			v2_fail(ex, 404, "MANIFEST_UNKNOWN",
			    "manifest unknown (cached answer of the upstream)",
			    NULL);
			return;
		}
		if (!t.negative && now - t.fetched_ms < ttl) {
			stats.hits++;
			ex->xcache = "HIT";
			if (mf_serve_cached(ex, t.digest, NULL) == 0)
				return;
			/* The bytes were evicted: fetch them by digest. */
			mf_request(ex, MOP_GET_DIGEST, t.digest);
			return;
		}
		if (!t.negative) {
			ex->xcache = "REVALIDATED";
			mf_request(ex, MOP_HEAD_TAG, ex->p.ref);
			return;
		}
	}
	stats.misses++;
	ex->xcache = "MISS";
	mf_request(ex, MOP_GET_TAG, ex->p.ref);
}

/*
 * A manifest request by digest: from the cache whatever the TTL, or one
 * fetch.  A credentialed upstream first confirms a cached digest in this
 * repository (server_xrepo.c).  rerun: after a flight it waited on.
 */
static void
mf_by_digest(struct exchange *ex, int rerun)
{
	if (xrepo_needed(ex) &&
	    idx_blob_get(ex->p.ref, &(struct idx_blob){ 0 }) == 0) {
		xrepo_confirm(ex);
		return;
	}
	ex->xcache = rerun ? "COALESCED" : "HIT";
	if (mf_serve_cached(ex, ex->p.ref, NULL) == 0) {
		if (!rerun)
			stats.hits++;
		return;
	}
	if (!rerun) {
		stats.misses++;
		ex->xcache = "MISS";
	}
	mf_request(ex, MOP_GET_DIGEST, ex->p.ref);
}

/* Resolve the request again, after the flight it waited on: usually a
 * cache hit now. */
static void
mf_rerun(struct exchange *ex)
{
	struct mop	*m = ex->mop;

	m->have_tag = 0;
	if (!ex->p.ref_is_digest) {
		mf_by_tag(ex);
		return;
	}
	mf_by_digest(ex, 1);
}

/*
 * A manifest request, after routing.  Returns 0: manifests are always
 * answered here (from the cache, or fetched into it).
 */
int
manifest_handle(struct exchange *ex)
{
	struct mop	*m;

	m = xcalloc(1, sizeof(*m));
	m->ex = ex;
	TAILQ_INIT(&m->pass);
	m->mask = mf_client_mask(ex->req);
	/* Clients that differ only in schema 1 share a class (skopeo,
	 * containerd and dockerd all take the four current types). */
	snprintf(m->cls, sizeof(m->cls), "%02x", m->mask & MF_CLASS_BITS);
	ex->mop = m;
	if (!ex->p.ref_is_digest) {
		mf_by_tag(ex);
		return 0;
	}
	mf_by_digest(ex, 0);
	return 0;
}
