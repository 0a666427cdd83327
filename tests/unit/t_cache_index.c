/*
 * Unit tests of src/cache_index.c: blobs with their totals, the
 * repositories a blob was seen in, tags per accept class, touches, the
 * iterators (writing from inside the callback), persistence across a
 * reopen, read-only opens, the schema version check and key limits.
 * Everything happens under a fresh mkdtemp directory, removed afterwards.
 */
#include "config.h"

#include <sys/stat.h>
#include <errno.h>
#include <ftw.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <lmdb.h>

#include "regcache.h"
#include "tap.h"

/* The library refers to these; main.c defines them in the daemon. */
struct event_base	*ev_base;
struct evdns_base	*dns_base;
struct config		*conf;

#define MANIFEST_TYPE	"application/vnd.oci.image.manifest.v1+json"
#define NITER		300	/* more than one iteration batch */

static char	tmpdir[512];
static char	idxdir[600];

/* A distinct, sortable digest for i. */
static const char *
digest_of(unsigned int i, char *buf, size_t len)
{
	snprintf(buf, len, "sha256:%064x", i);
	return buf;
}

static struct idx_blob
blob_rec(uint64_t size, int64_t stored, const char *media)
{
	struct idx_blob	b;

	memset(&b, 0, sizeof(b));
	b.size = size;
	b.stored = stored;
	b.last_served = stored;
	snprintf(b.media_type, sizeof(b.media_type), "%s", media);
	return b;
}

static int
open_rw(void)
{
	char	err[512];

	if (idx_open(idxdir, 0, err, sizeof(err)) == -1) {
		diag("idx_open: %s", err);
		return -1;
	}
	return 0;
}

struct pairs {
	char	buf[1024];
	int	n;
	int	stop_after;
};

static int
collect_pair(const char *upstream, const char *repo, void *arg)
{
	struct pairs	*p = arg;
	size_t		 len = strlen(p->buf);

	snprintf(p->buf + len, sizeof(p->buf) - len, "%s%s/%s",
	    len > 0 ? " " : "", upstream, repo);
	p->n++;
	return p->stop_after > 0 && p->n >= p->stop_after;
}

static void
test_blobs(void)
{
	struct idx_blob	 b, got;
	struct pairs	 p;
	const char	*a = "sha256:aaaa", *m = "sha256:bbbb";
	char		 big[V2_DIGEST_MAX + 8];

	ok(idx_blob_count() == 0 && idx_total_bytes() == 0,
	    "blobs: empty index, zero totals");
	ok(idx_blob_get(a, &got) == 1, "blobs: get absent -> 1");

	b = blob_rec(100, 1000, "");
	ok(idx_blob_put(a, &b, "docker.io", "library/alpine") == 0,
	    "blobs: put with a repository");
	ok(idx_blob_get(a, &got) == 0 && got.size == 100 &&
	    got.stored == 1000 && got.last_served == 1000 && got.hits == 0 &&
	    got.media_type[0] == '\0', "blobs: get returns the record");
	ok(idx_blob_count() == 1 && idx_total_bytes() == 100,
	    "blobs: totals 1 / 100");

	b = blob_rec(50, 1001, MANIFEST_TYPE);
	ok(idx_blob_put(m, &b, NULL, NULL) == 0, "blobs: put without repo");
	ok(idx_blob_get(m, &got) == 0, "blobs: get the manifest");
	is_str(got.media_type, MANIFEST_TYPE, "blobs: media type kept");
	ok(idx_blob_count() == 2 && idx_total_bytes() == 150,
	    "blobs: totals 2 / 150");

	b = blob_rec(200, 1002, "");
	ok(idx_blob_put(a, &b, NULL, NULL) == 0, "blobs: replace");
	ok(idx_blob_count() == 2 && idx_total_bytes() == 250,
	    "blobs: replace adjusts totals, 2 / 250");
	ok(idx_blob_get(a, &got) == 0 && got.size == 200 &&
	    got.stored == 1002, "blobs: replaced record read back");

	b = blob_rec(7, -5, "");
	b.last_served = INT64_MIN;
	b.hits = UINT64_MAX;
	ok(idx_blob_put("sha256:edge", &b, NULL, NULL) == 0 &&
	    idx_blob_get("sha256:edge", &got) == 0 && got.stored == -5 &&
	    got.last_served == INT64_MIN && got.hits == UINT64_MAX,
	    "blobs: negative times and extreme values round-trip");
	ok(idx_blob_del("sha256:edge") == 0, "blobs: edge record deleted");

	/* Repositories. */
	ok(idx_blob_known_in(a, "ghcr.io", "x/y") == 0,
	    "pairs: known_in before seen_in -> 0");
	ok(idx_blob_known_in(a, "docker.io", "library/alpine") == 1,
	    "pairs: known_in for the pair put with the blob -> 1");
	ok(idx_blob_seen_in(a, "ghcr.io", "x/y") == 0, "pairs: seen_in");
	ok(idx_blob_known_in(a, "ghcr.io", "x/y") == 1,
	    "pairs: known_in after seen_in -> 1");
	ok(idx_blob_known_in(a, "ghcr.io", "x") == 0 &&
	    idx_blob_known_in(a, "ghcr.io", "x/y/z") == 0 &&
	    idx_blob_known_in(a, "ghcr", "x/y") == 0 &&
	    idx_blob_known_in(a, "docker.io", "x/y") == 0,
	    "pairs: known_in is exact: no prefix, no other upstream");
	ok(idx_blob_known_in(m, "docker.io", "library/alpine") == 0,
	    "pairs: known_in is per digest");
	ok(idx_blob_known_in(a, "", "x/y") == -1 &&
	    idx_blob_known_in(a, "ghcr.io", "") == -1 &&
	    idx_blob_known_in(a, NULL, "x/y") == -1 &&
	    idx_blob_known_in("", "ghcr.io", "x/y") == -1,
	    "pairs: known_in with an empty part -> -1");
	ok(idx_blob_seen_in(a, "ghcr.io", "x/y") == 0,
	    "pairs: seen_in again is a no-op");
	b = blob_rec(200, 1002, "");
	ok(idx_blob_put(a, &b, "docker.io", "library/alpine") == 0,
	    "pairs: put with a known pair");
	memset(&p, 0, sizeof(p));
	ok(idx_repo_iter(a, collect_pair, &p) == 0 && p.n == 2,
	    "pairs: repo_iter reports two");
	is_str(p.buf, "docker.io/library/alpine ghcr.io/x/y",
	    "pairs: both, in key order");
	memset(&p, 0, sizeof(p));
	p.stop_after = 1;
	ok(idx_repo_iter(a, collect_pair, &p) == 0 && p.n == 1,
	    "pairs: callback stops the iteration");
	memset(&p, 0, sizeof(p));
	ok(idx_repo_iter(m, collect_pair, &p) == 0 && p.n == 0,
	    "pairs: none for a blob put without one");
	/* A digest that is a prefix of another must not see its pairs. */
	ok(idx_blob_seen_in("sha256:aa", "docker.io", "other") == 0,
	    "pairs: seen_in for a prefix digest");
	memset(&p, 0, sizeof(p));
	ok(idx_repo_iter(a, collect_pair, &p) == 0 && p.n == 2,
	    "pairs: prefix digest's pair is not reported");

	/* Delete. */
	ok(idx_blob_del(a) == 0, "del: deleted -> 0");
	ok(idx_blob_get(a, &got) == 1, "del: get -> 1");
	ok(idx_blob_count() == 1 && idx_total_bytes() == 50,
	    "del: totals 1 / 50");
	memset(&p, 0, sizeof(p));
	ok(idx_repo_iter(a, collect_pair, &p) == 0 && p.n == 0,
	    "del: its pairs are gone");
	ok(idx_blob_known_in(a, "ghcr.io", "x/y") == 0,
	    "del: known_in -> 0 once the blob is deleted");
	memset(&p, 0, sizeof(p));
	ok(idx_repo_iter("sha256:aa", collect_pair, &p) == 0 && p.n == 1,
	    "del: the prefix digest's pair stays");
	ok(idx_blob_del(a) == 1, "del: again -> 1");
	ok(idx_blob_del("sha256:aa") == 1, "del: pairs only -> 1");
	memset(&p, 0, sizeof(p));
	ok(idx_repo_iter("sha256:aa", collect_pair, &p) == 0 && p.n == 0,
	    "del: and removes the orphan pairs");

	/* Bad input. */
	memset(big, 'f', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	b = blob_rec(1, 1, "");
	ok(idx_blob_put("", &b, NULL, NULL) == -1, "bad: empty digest");
	ok(idx_blob_put(big, &b, NULL, NULL) == -1 &&
	    idx_blob_get(big, &got) == -1, "bad: digest too long");
	memset(b.media_type, 'x', sizeof(b.media_type));
	ok(idx_blob_put(m, &b, NULL, NULL) == -1,
	    "bad: unterminated media type");
	ok(idx_blob_count() == 1 && idx_total_bytes() == 50,
	    "bad: totals unchanged");
}

static void
test_key_limits(void)
{
	struct idx_blob		b = blob_rec(10, 1, ""), bgot;
	struct idx_tag		t, got;
	struct idx_tag_key	k;
	char			up[300], repo[V2_NAME_MAX + 1], tag[V2_TAG_MAX + 1];
	char			cls[80];

	memset(up, 'u', 250);
	up[250] = '\0';
	memset(repo, 'r', V2_NAME_MAX);
	repo[V2_NAME_MAX] = '\0';
	memset(tag, 't', V2_TAG_MAX);
	tag[V2_TAG_MAX] = '\0';
	memset(&t, 0, sizeof(t));
	snprintf(t.digest, sizeof(t.digest), "sha256:1");

	ok(idx_blob_put("sha256:long", &b, up, repo) == -1,
	    "keys: blob pair key too long -> -1");
	ok(idx_blob_get("sha256:long", &bgot) == 1 && idx_blob_count() == 1,
	    "keys: and the blob was not stored either");
	ok(idx_blob_seen_in("sha256:long", up, repo) == -1,
	    "keys: seen_in too long -> -1");
	ok(idx_blob_known_in("sha256:long", up, repo) == -1,
	    "keys: known_in too long -> -1");

	k = (struct idx_tag_key){ up, repo, tag, "oci" };
	ok(idx_tag_put(&k, &t) == -1, "keys: tag key too long -> -1");
	ok(idx_tag_get(&k, &got) == -1, "keys: tag get too long -> -1");
	ok(idx_tag_del(&k) == -1, "keys: tag del too long -> -1");

	memset(cls, 'c', 65);
	cls[65] = '\0';
	k = (struct idx_tag_key){ "docker.io", "library/alpine", "latest",
	    cls };
	ok(idx_tag_put(&k, &t) == -1, "keys: accept class over 64 -> -1");
	cls[64] = '\0';
	ok(idx_tag_put(&k, &t) == 0 && idx_tag_get(&k, &got) == 0 &&
	    idx_tag_del(&k) == 0, "keys: accept class of 64 fits");

	/* The longest real key: upstream fills what names leave. */
	up[511 - 3 - V2_NAME_MAX - V2_TAG_MAX - 64] = '\0';
	k = (struct idx_tag_key){ up, repo, tag, cls };
	ok(idx_tag_put(&k, &t) == 0 && idx_tag_del(&k) == 0,
	    "keys: a key of exactly 511 bytes fits");
	up[511 - 3 - V2_NAME_MAX - V2_TAG_MAX - 64] = 'u';
	up[512 - 3 - V2_NAME_MAX - V2_TAG_MAX - 64] = '\0';
	ok(idx_tag_put(&k, &t) == -1, "keys: 512 bytes does not");

	k = (struct idx_tag_key){ "docker.io", NULL, "latest", "oci" };
	ok(idx_tag_put(&k, &t) == -1, "keys: NULL repo -> -1");
	k = (struct idx_tag_key){ "docker.io", "a", "", "oci" };
	ok(idx_tag_put(&k, &t) == -1, "keys: empty tag -> -1");

	memset(t.etag, 'e', sizeof(t.etag));
	k = (struct idx_tag_key){ "docker.io", "a", "b", "oci" };
	ok(idx_tag_put(&k, &t) == -1, "keys: unterminated etag -> -1");
}

static void
test_tags(void)
{
	struct idx_tag_key	koci = { "docker.io", "library/alpine",
				    "latest", "oci" };
	struct idx_tag_key	kdocker = { "docker.io", "library/alpine",
				    "latest", "docker" };
	struct idx_tag_key	kneg = { "ghcr.io", "x/y", "nope", NULL };
	struct idx_tag		t, got;

	ok(idx_tag_get(&koci, &got) == 1, "tags: get absent -> 1");
	memset(&t, 0, sizeof(t));
	snprintf(t.digest, sizeof(t.digest), "sha256:0c1");
	snprintf(t.media_type, sizeof(t.media_type), MANIFEST_TYPE);
	snprintf(t.etag, sizeof(t.etag), "\"etag-oci\"");
	t.fetched_ms = 1700000000123;
	ok(idx_tag_put(&koci, &t) == 0, "tags: put oci");
	snprintf(t.digest, sizeof(t.digest), "sha256:d0c");
	snprintf(t.media_type, sizeof(t.media_type),
	    "application/vnd.docker.distribution.manifest.v2+json");
	t.etag[0] = '\0';
	t.fetched_ms = 1700000000456;
	ok(idx_tag_put(&kdocker, &t) == 0, "tags: put docker");
	memset(&t, 0, sizeof(t));
	t.negative = 1;
	t.fetched_ms = 42;
	ok(idx_tag_put(&kneg, &t) == 0, "tags: put negative, NULL class");

	ok(idx_tag_get(&koci, &got) == 0, "tags: get oci");
	is_str(got.digest, "sha256:0c1", "tags: oci digest");
	is_str(got.media_type, MANIFEST_TYPE, "tags: oci media type");
	is_str(got.etag, "\"etag-oci\"", "tags: oci etag");
	ok(got.fetched_ms == 1700000000123 && !got.negative,
	    "tags: oci fetched_ms, not negative");
	ok(idx_tag_get(&kdocker, &got) == 0, "tags: get docker");
	is_str(got.digest, "sha256:d0c", "tags: docker digest differs");
	is_str(got.etag, "", "tags: empty etag");
	ok(idx_tag_get(&kneg, &got) == 0 && got.negative &&
	    got.digest[0] == '\0' && got.fetched_ms == 42,
	    "tags: negative entry");
	kneg.accept_class = "";
	ok(idx_tag_get(&kneg, &got) == 0, "tags: NULL class is \"\"");

	ok(idx_tag_del(&kdocker) == 0, "tags: del docker -> 0");
	ok(idx_tag_get(&kdocker, &got) == 1, "tags: docker gone");
	ok(idx_tag_get(&koci, &got) == 0, "tags: oci stays");
	ok(idx_tag_del(&kdocker) == 1, "tags: del again -> 1");

	/* Replace. */
	memset(&t, 0, sizeof(t));
	snprintf(t.digest, sizeof(t.digest), "sha256:new");
	ok(idx_tag_put(&koci, &t) == 0 && idx_tag_get(&koci, &got) == 0 &&
	    strcmp(got.digest, "sha256:new") == 0 && got.etag[0] == '\0',
	    "tags: replace");
}

static void
test_touches(void)
{
	struct idx_blob	 b, got;
	const char	*c = "sha256:cccc";
	char		 d[80];
	unsigned int	 i;

	b = blob_rec(10, 1000, "");
	ok(idx_blob_put(c, &b, NULL, NULL) == 0, "touch: put");
	idx_touch(c, 2000);
	idx_touch(c, 1500);
	ok(idx_blob_get(c, &got) == 0 && got.last_served == 2000 &&
	    got.hits == 2, "touch: merged in get (max time, two hits)");
	ok(idx_flush_touches() == 0, "touch: flush");
	ok(idx_blob_get(c, &got) == 0 && got.last_served == 2000 &&
	    got.hits == 2, "touch: after flush, not counted twice");
	ok(idx_flush_touches() == 0, "touch: empty flush");
	idx_touch(c, 1800);
	ok(idx_blob_get(c, &got) == 0 && got.last_served == 2000 &&
	    got.hits == 3, "touch: older time keeps last_served");

	idx_touch("sha256:gone", 3000);
	ok(idx_flush_touches() == 0 && idx_blob_get("sha256:gone", &got) == 1,
	    "touch: unknown digest skipped by flush");

	/* More than the table holds: it flushes itself, nothing lost. */
	for (i = 0; i < 5000; i++)
		idx_touch(digest_of(i + 100000, d, sizeof(d)), 4000);
	idx_touch(c, 4000);
	for (i = 0; i < 5000; i++)
		idx_touch(digest_of(i + 200000, d, sizeof(d)), 4000);
	ok(idx_blob_get(c, &got) == 0 && got.last_served == 4000 &&
	    got.hits == 4, "touch: bounded table, hits exact");
	ok(idx_blob_count() == 2 && idx_total_bytes() == 60,
	    "touch: totals untouched");

	/* A put replaces pending touches; a delete drops them. */
	idx_touch(c, 5000);
	b = blob_rec(10, 1000, "");
	ok(idx_blob_put(c, &b, NULL, NULL) == 0 &&
	    idx_blob_get(c, &got) == 0 && got.hits == 0 &&
	    got.last_served == 1000, "touch: put discards pending touches");
	idx_touch(c, 6000);
	ok(idx_blob_del(c) == 0 && idx_blob_put(c, &b, NULL, NULL) == 0 &&
	    idx_blob_get(c, &got) == 0 && got.hits == 0,
	    "touch: delete discards pending touches");
	idx_touch(c, 7000);	/* left pending for idx_close */
}

struct iter_state {
	unsigned int	seen;
	unsigned int	deleted_seen;	/* visits of deleted keys */
	unsigned int	size_bad;
	unsigned int	stop_after;
	uint64_t	hits;
};

static unsigned int
index_of(const char *digest)
{
	return (unsigned int)strtoul(digest + 7, NULL, 16);
}

static int
count_blob(const char *digest, const struct idx_blob *rec, void *arg)
{
	struct iter_state	*st = arg;

	if (strncmp(digest, "sha256:000", 10) != 0)
		return 0;	/* not one of the NITER */
	st->seen++;
	if (rec->size != index_of(digest))
		st->size_bad++;
	st->hits += rec->hits;
	return st->stop_after > 0 && st->seen >= st->stop_after;
}

/* Deletes itself when i % 3 == 0, and i + 1 before it is visited. */
static int
delete_blob(const char *digest, const struct idx_blob *rec, void *arg)
{
	struct iter_state	*st = arg;
	unsigned int		 i;
	char			 d[80];

	if (strncmp(digest, "sha256:000", 10) != 0)
		return 0;
	i = index_of(digest);
	st->seen++;
	if (i % 3 == 1)
		st->deleted_seen++;
	if (i % 3 == 0) {
		if (idx_blob_del(digest) != 0 ||
		    idx_blob_del(digest_of(i + 1, d, sizeof(d))) != 0)
			st->size_bad++;
	} else {
		/* Rewrite the current one: must not disturb the walk. */
		struct idx_blob b = *rec;

		b.hits = 1;
		if (idx_blob_put(digest, &b, NULL, NULL) != 0)
			st->size_bad++;
	}
	return 0;
}

static void
test_blob_iter(void)
{
	struct iter_state	 st;
	struct idx_blob		 b;
	char			 d[80];
	unsigned int		 i, ok_put = 1;
	uint64_t		 count0 = idx_blob_count();
	uint64_t		 bytes0 = idx_total_bytes(), sum = 0;

	for (i = 0; i < NITER; i++) {
		b = blob_rec(i, 1, "");
		if (idx_blob_put(digest_of(i, d, sizeof(d)), &b, NULL,
		    NULL) != 0)
			ok_put = 0;
		sum += i;
	}
	ok(ok_put, "iter: %d blobs put", NITER);
	ok(idx_blob_count() == count0 + NITER &&
	    idx_total_bytes() == bytes0 + sum, "iter: totals follow");

	idx_touch(digest_of(7, d, sizeof(d)), 10);
	idx_touch(digest_of(250, d, sizeof(d)), 10);
	memset(&st, 0, sizeof(st));
	ok(idx_blob_iter(count_blob, &st) == 0 && st.seen == NITER &&
	    st.size_bad == 0, "iter: every blob once, records right");
	ok(st.hits == 2, "iter: records include pending touches");

	memset(&st, 0, sizeof(st));
	st.stop_after = 5;
	ok(idx_blob_iter(count_blob, &st) == 0 && st.seen == 5,
	    "iter: callback stops it");

	memset(&st, 0, sizeof(st));
	ok(idx_blob_iter(delete_blob, &st) == 0 && st.size_bad == 0,
	    "iter: deleting and putting inside the callback");
	ok(st.seen == NITER - NITER / 3 && st.deleted_seen == 0,
	    "iter: %u visited, none already deleted", st.seen);
	ok(idx_blob_count() == count0 + NITER / 3, "iter: %u left",
	    NITER / 3);
	memset(&st, 0, sizeof(st));
	ok(idx_blob_iter(count_blob, &st) == 0 && st.seen == NITER / 3 &&
	    st.hits == NITER / 3, "iter: survivors rewritten once each");

	sum = 0;
	for (i = 2; i < NITER; i += 3) {
		sum += i;
		idx_blob_del(digest_of(i, d, sizeof(d)));
	}
	ok(idx_blob_count() == count0 && idx_total_bytes() == bytes0,
	    "iter: totals back to where they were");
}

struct tag_state {
	char	buf[512];
	int	n;
};

static int
tag_cb(const struct idx_tag_key *k, const struct idx_tag *t, void *arg)
{
	struct tag_state	*st = arg;
	size_t			 len = strlen(st->buf);

	snprintf(st->buf + len, sizeof(st->buf) - len, "%s%s|%s|%s|%s=%s",
	    len > 0 ? " " : "", k->upstream, k->repo, k->tag, k->accept_class,
	    t->negative ? "404" : t->digest);
	st->n++;
	/* Delete the current one and the next, which must then not show. */
	if (strcmp(k->tag, "a") == 0) {
		struct idx_tag_key next = *k;

		next.tag = "b";
		idx_tag_del(k);
		idx_tag_del(&next);
	}
	return 0;
}

static void
test_tag_iter(void)
{
	struct idx_tag_key	k = { "q.io", "r", "a", "" };
	struct idx_tag		t;
	struct tag_state	st;

	memset(&t, 0, sizeof(t));
	snprintf(t.digest, sizeof(t.digest), "sha256:1");
	idx_tag_put(&k, &t);
	k.tag = "b";
	idx_tag_put(&k, &t);
	k.tag = "c";
	k.accept_class = "oci";
	idx_tag_put(&k, &t);

	memset(&st, 0, sizeof(st));
	ok(idx_tag_iter(tag_cb, &st) == 0, "tag iter: returns 0");
	is_str(st.buf, "docker.io|library/alpine|latest|oci=sha256:new "
	    "ghcr.io|x/y|nope|=404 q.io|r|a|=sha256:1 q.io|r|c|oci=sha256:1",
	    "tag iter: key parts split, deleted one skipped");
	k.tag = "a";
	k.accept_class = "";
	ok(idx_tag_get(&k, &t) == 1, "tag iter: deletion in the callback");
	k.tag = "c";
	k.accept_class = "oci";
	ok(idx_tag_del(&k) == 0, "tag iter: cleanup");
}

/* Read the raw blob record of digest with plain LMDB (index closed). */
static int
raw_blob(const char *digest, unsigned char *out, size_t *len)
{
	MDB_env	*env;
	MDB_txn	*txn;
	MDB_dbi	 dbi;
	MDB_val	 k, v;
	int	 rc;

	if (mdb_env_create(&env) != 0)
		return -1;
	mdb_env_set_maxdbs(env, 8);
	rc = mdb_env_open(env, idxdir, MDB_RDONLY, 0);
	if (rc == 0)
		rc = mdb_txn_begin(env, NULL, MDB_RDONLY, &txn);
	if (rc == 0) {
		if ((rc = mdb_dbi_open(txn, "blobs", 0, &dbi)) == 0) {
			k.mv_data = (void *)(uintptr_t)digest;
			k.mv_size = strlen(digest);
			if ((rc = mdb_get(txn, dbi, &k, &v)) == 0 &&
			    v.mv_size <= *len) {
				memcpy(out, v.mv_data, v.mv_size);
				*len = v.mv_size;
			}
		}
		mdb_txn_abort(txn);
	}
	mdb_env_close(env);
	return rc == 0 ? 0 : -1;
}

/* Write meta/schema_version by hand, as another version would. */
static int
write_schema(const void *val, size_t len)
{
	MDB_env	*env;
	MDB_txn	*txn;
	MDB_dbi	 dbi;
	MDB_val	 k, v;
	int	 rc;

	if (mdb_env_create(&env) != 0)
		return -1;
	mdb_env_set_maxdbs(env, 8);
	rc = mdb_env_open(env, idxdir, 0, 0640);
	if (rc == 0)
		rc = mdb_txn_begin(env, NULL, 0, &txn);
	if (rc == 0) {
		if ((rc = mdb_dbi_open(txn, "meta", 0, &dbi)) == 0) {
			k.mv_data = (void *)(uintptr_t)"schema_version";
			k.mv_size = strlen("schema_version");
			v.mv_data = (void *)(uintptr_t)val;
			v.mv_size = len;
			rc = mdb_put(txn, dbi, &k, &v, 0);
		}
		if (rc == 0)
			rc = mdb_txn_commit(txn);
		else
			mdb_txn_abort(txn);
	}
	mdb_env_close(env);
	return rc == 0 ? 0 : -1;
}

static void
test_persistence(void)
{
	struct idx_blob		 got;
	struct idx_tag		 t;
	struct idx_tag_key	 k = { "docker.io", "library/alpine", "latest",
				    "oci" };
	unsigned char		 raw[256];
	size_t			 rawlen = sizeof(raw);
	char			 err[512], path[600];
	struct stat		 st;
	uint64_t		 count = idx_blob_count();
	uint64_t		 bytes = idx_total_bytes();

	idx_close();
	idx_close();
	ok(1, "persist: closed twice");
	ok(idx_blob_get("sha256:bbbb", &got) == -1,
	    "persist: get on a closed index -> -1");

	ok(raw_blob("sha256:cccc", raw, &rawlen) == 0 && rawlen == 33 &&
	    raw[0] == 1 && raw[1] == 10 && raw[2] == 0 && raw[25] == 1 &&
	    raw[17] == (7000 & 0xff) && raw[18] == (7000 >> 8),
	    "persist: raw record: v1, size 10 LE, touch flushed by close");
	rawlen = sizeof(raw);
	ok(raw_blob("sha256:bbbb", raw, &rawlen) == 0 &&
	    rawlen == 33 + strlen(MANIFEST_TYPE) &&
	    memcmp(raw + 33, MANIFEST_TYPE, strlen(MANIFEST_TYPE)) == 0,
	    "persist: raw record: media type after the 33-byte header");

	ok(open_rw() == 0, "persist: reopen");
	ok(idx_blob_count() == count && idx_total_bytes() == bytes,
	    "persist: totals recomputed (%" PRIu64 " / %" PRIu64 ")", count,
	    bytes);
	ok(idx_blob_get("sha256:cccc", &got) == 0 && got.hits == 1 &&
	    got.last_served == 7000, "persist: flushed touch kept");
	ok(idx_tag_get(&k, &t) == 0 && strcmp(t.digest, "sha256:new") == 0,
	    "persist: tag kept");
	ok(idx_open(idxdir, 0, err, sizeof(err)) == -1,
	    "persist: second open refused");
	idx_close();

	/* Read-only. */
	ok(idx_open(idxdir, 1, err, sizeof(err)) == 0, "ro: open");
	ok(idx_blob_count() == count && idx_total_bytes() == bytes,
	    "ro: totals");
	ok(idx_blob_get("sha256:bbbb", &got) == 0 &&
	    strcmp(got.media_type, MANIFEST_TYPE) == 0, "ro: get");
	ok(idx_tag_get(&k, &t) == 0, "ro: tag get");
	ok(idx_blob_put("sha256:ro", &got, NULL, NULL) == -1,
	    "ro: blob put -> -1");
	ok(idx_blob_del("sha256:bbbb") == -1, "ro: blob del -> -1");
	ok(idx_blob_seen_in("sha256:bbbb", "a", "b") == -1,
	    "ro: seen_in -> -1");
	ok(idx_blob_known_in("sha256:bbbb", "a", "b") == 0,
	    "ro: known_in reads -> 0");
	ok(idx_tag_put(&k, &t) == -1 && idx_tag_del(&k) == -1,
	    "ro: tag put/del -> -1");
	idx_touch("sha256:bbbb", 99999);
	ok(idx_flush_touches() == 0 && idx_blob_get("sha256:bbbb", &got) == 0 &&
	    got.last_served != 99999, "ro: touches ignored");
	ok(idx_blob_count() == count, "ro: count unchanged");
	idx_close();

	snprintf(path, sizeof(path), "%s/nothing", tmpdir);
	ok(idx_open(path, 1, err, sizeof(err)) == -1 &&
	    stat(path, &st) == -1, "ro: missing dir fails, not created");
	diag("%s", err);
}

static void
test_schema(void)
{
	char		err[512];
	const uint8_t	v1[4] = { 1, 0, 0, 0 }, v2[4] = { 2, 0, 0, 0 };
	const uint8_t	bad[2] = { 1, 0 };

	ok(write_schema(v2, sizeof(v2)) == 0, "schema: wrote version 2");
	err[0] = '\0';
	ok(idx_open(idxdir, 0, err, sizeof(err)) == -1 &&
	    strstr(err, "newer") != NULL, "schema: newer version refused");
	diag("%s", err);
	ok(idx_open(idxdir, 1, err, sizeof(err)) == -1,
	    "schema: refused read-only too");
	ok(idx_blob_get("sha256:bbbb", &(struct idx_blob){ 0 }) == -1,
	    "schema: nothing left open");
	ok(write_schema(bad, sizeof(bad)) == 0 &&
	    idx_open(idxdir, 0, err, sizeof(err)) == -1,
	    "schema: malformed version refused");
	ok(write_schema(v1, sizeof(v1)) == 0 && open_rw() == 0,
	    "schema: version 1 opens");
	idx_close();
}

static int
rm_entry(const char *path, const struct stat *st, int flag, struct FTW *f)
{
	return remove(path);
}

int
main(void)
{
	const char	*tmp = getenv("TMPDIR");
	struct stat	 st;

	log_init(LOG_LEVEL_WARN, 0);
	if (tmp == NULL || *tmp == '\0')
		tmp = "/tmp";
	snprintf(tmpdir, sizeof(tmpdir), "%s/t_cache_index.XXXXXX", tmp);
	if (mkdtemp(tmpdir) == NULL) {
		perror(tmpdir);
		return 1;
	}
	snprintf(idxdir, sizeof(idxdir), "%s/data/index", tmpdir);

	ok(open_rw() == 0, "open: creates the directory and the index");
	ok(stat(idxdir, &st) == 0 && S_ISDIR(st.st_mode) &&
	    (st.st_mode & 0007) == 0, "open: directory, not world-readable");

	test_blobs();
	test_key_limits();
	test_tags();
	test_touches();
	test_blob_iter();
	test_tag_iter();
	test_persistence();
	test_schema();

	if (nftw(tmpdir, rm_entry, 16, FTW_DEPTH | FTW_PHYS) == -1)
		diag("could not remove %s", tmpdir);
	return tap_done();
}
