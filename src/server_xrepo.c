/*
 * Digests cached through one repository, asked for through another.
 *
 * The cache keeps blobs and manifests by digest only, shared by every
 * repository and upstream.  From an anonymous upstream that shares nothing
 * a client could not fetch itself.  An upstream that regcache sends
 * credentials to is different: its repositories may be private, and a
 * client that knows a digest from repository A must not read it through
 * repository B, or through another upstream, merely because regcache
 * fetched it once for A.  So before such a digest is served for (upstream,
 * B) the index must record it there (blob_repos); if it does not, one HEAD
 * with regcache's credentials asks the upstream of B.  A 2xx is recorded,
 * so B is asked once; anything else is answered to the client as an OCI
 * error and nothing from the cache is served.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "regcache.h"

static void	xrepo_headers(struct upreq *, int, struct evkeyvalq *, void *);
static void	xrepo_body(struct upreq *, struct evbuffer *, void *);
static void	xrepo_done(struct upreq *, enum up_error, const char *,
		    void *);

static const struct upreq_cb xrepo_cb = {
	xrepo_headers, xrepo_body, xrepo_done
};

/* What the records of a digest say about where it was seen. */
struct xrepo_seen {
	int	 any;
	int	 public;	/* through an anonymous upstream */
};

/* idx_repo_iter: stops at a record of an anonymous upstream. */
static int
xrepo_public_cb(const char *upstream, const char *repo, void *arg)
{
	struct xrepo_seen	*seen = arg;
	struct upstream		*up;
	size_t			 i;

	seen->any = 1;
	for (i = 0; i < upstream_count(); i++) {
		up = upstream_get(i);
		if (strcmp(up->cfg->name, upstream) == 0) {
			seen->public = up->cfg->cred_kind == CRED_NONE;
			return seen->public;
		}
	}
	return 0;	/* gone from the configuration: assume private */
}

/*
 * Must the upstream of this request confirm its digest (ex->p.ref) in its
 * repository before the cache serves it?  For a credentialed upstream
 * whose (upstream, repository) the index does not record for the digest;
 * and for an anonymous one too when the digest was only ever seen through
 * private upstreams (else a public route would read private content).
 * Pass-through upstreams are private too: their HEAD carries the
 * client's credentials, and server_passthrough.c has checked the client's
 * access to the repository, this checks the digest is in it.  Not again
 * once this exchange got a confirmation.  An index error counts as not
 * recorded: asking costs a HEAD, serving could leak.
 */
int
xrepo_needed(struct exchange *ex)
{
	struct upstream		*up = ex->rt.upstream;
	struct xrepo_seen	 seen = { 0, 0 };

	if (ex->xrepo_status >= 200 && ex->xrepo_status < 300)
		return 0;
	if (idx_blob_known_in(ex->p.ref, up->cfg->name, ex->rt.name) == 1)
		return 0;
	if (up->cfg->cred_kind != CRED_NONE)
		return 1;
	/* Anonymous: free unless every record is of a private upstream. */
	if (idx_repo_iter(ex->p.ref, xrepo_public_cb, &seen) == -1)
		return 1;
	return seen.any && !seen.public;
}

/*
 * Ask the upstream whether ex->p.ref is in the requested repository (a
 * HEAD of the blob or of the manifest, with every manifest type in Accept),
 * then either run the request again, now confirmed, or refuse it.
 */
void
xrepo_confirm(struct exchange *ex)
{
	char	*scope;

	log_debug("%s: %s not yet confirmed in %s/%s: asking",
	    __func__, ex->p.ref, ex->rt.upstream->cfg->name, ex->rt.name);
	ex->xcache = NULL;
	ex->xrepo_status = 0;
	xasprintf(&scope, "repository:%s:pull", ex->rt.name);
	ex->ur = upreq_new(ex->rt.upstream, EVHTTP_REQ_HEAD, ex->upath, scope,
	    &xrepo_cb, ex);
	free(scope);
	upreq_set_auth(ex->ur, ex->up_auth);
	if (ex->p.kind == V2_MANIFEST)
		manifest_accept_all(ex->ur);
	upreq_start(ex->ur);
}

static void
xrepo_headers(struct upreq *ur, int status, struct evkeyvalq *h, void *arg)
{
	struct exchange	*ex = arg;

	CHECK_MAGIC(ex, EXCHANGE_MAGIC);
	ex->xrepo_status = status;
}

/* A HEAD has no body; whatever comes is dropped. */
static void
xrepo_body(struct upreq *ur, struct evbuffer *data, void *arg)
{
	CHECK_MAGIC((struct exchange *)arg, EXCHANGE_MAGIC);
}

/* Refuse the request with the OCI error that matches the upstream's no. */
static void
xrepo_refuse(struct exchange *ex, int status)
{
	const char	*name = ex->rt.upstream->cfg->name;
	char		 msg[512];

	switch (status) {
	case 404:
		v2_fail(ex, 404, ex->p.kind == V2_MANIFEST ?
		    "MANIFEST_UNKNOWN" : "BLOB_UNKNOWN",
		    ex->p.kind == V2_MANIFEST ? "manifest unknown to "
		    "repository" : "blob unknown to repository",
		    "not in this repository upstream");
		return;
	case 401:
		/* The upstream's challenge is for regcache's credentials,
		 * not for this client: it does not go along. */
		v2_fail(ex, 401, "UNAUTHORIZED", "the upstream refused "
		    "access to this repository", "refused upstream");
		return;
	case 403:
		v2_fail(ex, 403, "DENIED", "the upstream denied access to "
		    "this repository", "denied upstream");
		return;
	case 429:
		v2_fail(ex, 429, "TOOMANYREQUESTS", "the upstream asks for "
		    "fewer requests", "rate-limited upstream");
		return;
	}
	snprintf(msg, sizeof(msg), "upstream %s answered %d", name, status);
	v2_fail(ex, 502, "UNAVAILABLE", msg, "unconfirmed");
}

static void
xrepo_done(struct upreq *ur, enum up_error err, const char *cause,
    void *arg)
{
	struct exchange	*ex = arg;
	struct upstream	*up;
	char		 msg[512];

	CHECK_MAGIC(ex, EXCHANGE_MAGIC);
	ex->ur = NULL;
	if (ex->req == NULL) {
		exchange_close(ex, NULL);
		return;
	}
	up = ex->rt.upstream;
	if (err != UP_OK) {
		/* Not confirmed, so not served, although it is cached. */
		log_warnx("upstream %s: cannot confirm %s in %s: %s",
		    up->cfg->name, ex->p.ref, ex->rt.name, cause);
		snprintf(msg, sizeof(msg), "upstream %s: %s", up->cfg->name,
		    cause);
		v2_fail(ex, err == UP_ERR_TIMEOUT ? 504 : 502, "UNAVAILABLE",
		    msg, up_error_str(err));
		return;
	}
	log_debug("%s: %s in %s/%s: the upstream answered %d", __func__,
	    ex->p.ref, up->cfg->name, ex->rt.name, ex->xrepo_status);
	if (ex->xrepo_status < 200 || ex->xrepo_status >= 300) {
		xrepo_refuse(ex, ex->xrepo_status);
		return;
	}
	idx_blob_seen_in(ex->p.ref, up->cfg->name, ex->rt.name);
	if (ex->p.kind == V2_MANIFEST) {
		manifest_op_free(ex);
		if (manifest_handle(ex) == -1)
			v2_passthrough(ex);
	} else
		blob_rerun(ex);
}
