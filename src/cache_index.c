/*
 * The index of the cache: one LMDB environment that records which blobs
 * and manifests are cached (size, times, hits, media type), in which
 * (upstream, repository) pairs each blob was seen, and what each tag
 * resolved to.  The blob files themselves are cache_blob.c's concern.
 *
 * One process writes (the daemon); any number may read at the same time
 * (regcache ls opens it read-only).  The daemon is single-threaded, so one
 * read transaction is kept and renewed for every lookup, and hits are
 * counted in memory (idx_touch) and written in one transaction every few
 * seconds (idx_flush_touches) rather than once per request.  Writes keep
 * LMDB's default sync: after kill -9 the index says exactly what the last
 * committed transaction said.
 *
 * Values are written field by field, little-endian, behind a version
 * byte, so the format does not depend on the compiler or the host.  The
 * layout is described in docs/ARCHITECTURE.md.
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lmdb.h>

#include "regcache.h"

/*
 * The map is reserved address space, not disk: data.mdb is sparse and only
 * grows with what is stored.  1 GiB holds millions of records.
 */
#define IDX_MAP_SIZE		((size_t)1 << 30)
#define IDX_MAX_DBS		8
#define IDX_DIR_MODE		0750
#define IDX_FILE_MODE		0640

#define IDX_SCHEMA_KEY		"schema_version"
#define IDX_SCHEMA_VERSION	1u

/* Blob value: version, size, stored, last_served, hits, media type. */
#define IDX_BLOB_VERSION	1
#define IDX_BLOB_HDR		33
/* Tag value: version, flags, fetched_ms, then three u16-prefixed strings. */
#define IDX_TAG_VERSION		1
#define IDX_TAG_HDR		10
#define IDX_TAG_NEGATIVE	0x01
#define IDX_TAG_VAL_MAX		(IDX_TAG_HDR + 3 * 2 + V2_DIGEST_MAX + \
				    IDX_MEDIA_MAX + IDX_ETAG_MAX)

/*
 * LMDB's default largest key (mdb_env_get_maxkeysize).  A tag key is
 * upstream, repository, tag and accept class: the class is capped so that
 * real names fit; anything longer is refused.
 */
#define IDX_KEY_MAX		511
#define IDX_ACCEPT_CLASS_MAX	64

#define IDX_TOUCH_MAX		4096	/* pending touches before a flush */
#define IDX_TOUCH_INIT		64	/* first size of the touch table */
#define IDX_ITER_BATCH		128	/* records copied per read txn */

enum idx_slot_state {
	IDX_SLOT_FREE = 0,
	IDX_SLOT_LIVE,
	IDX_SLOT_DEAD
};

/* One pending touch: a blob served since the last flush. */
struct idx_touch {
	int		it_state;
	char		it_digest[V2_DIGEST_MAX + 1];
	int64_t		it_last;
	uint64_t	it_hits;
};

static struct {
	MDB_env			*ix_env;
	MDB_dbi			 ix_blobs;
	MDB_dbi			 ix_blob_repos;
	MDB_dbi			 ix_tags;
	MDB_dbi			 ix_meta;
	MDB_txn			*ix_rtxn;	/* reset when not in use */
	int			 ix_rtxn_busy;
	int			 ix_readonly;
	size_t			 ix_maxkey;
	uint64_t		 ix_total_bytes;
	size_t			 ix_txnid;	/* newest we know of */
	int			 ix_foreign;	/* another process wrote */
	uint64_t		 ix_nblobs;
	uint64_t		 ix_gen;	/* bumped by every write */
	/* Pending touches: open addressing, linear probing. */
	struct idx_touch	*ix_touch;
	size_t			 ix_touch_cap;
	size_t			 ix_touch_live;
	size_t			 ix_touch_used;	/* live and dead slots */
} idx;

/* Fixed-width little-endian fields, independent of the host. */
static void
idx_put_le16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}

static uint16_t
idx_get_le16(const uint8_t *p)
{
	return (uint16_t)(p[0] | (p[1] << 8));
}

static void
idx_put_le64(uint8_t *p, uint64_t v)
{
	int	i;

	for (i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t
idx_get_le64(const uint8_t *p)
{
	uint64_t	v = 0;
	int		i;

	for (i = 0; i < 8; i++)
		v |= (uint64_t)p[i] << (8 * i);
	return v;
}

/* Two's complement back to signed without implementation-defined casts. */
static int64_t
idx_get_le64s(const uint8_t *p)
{
	uint64_t	v = idx_get_le64(p);

	if (v <= (uint64_t)INT64_MAX)
		return (int64_t)v;
	return -(int64_t)~v - 1;
}

/* Log a failed LMDB call; a full map gets a line saying what it means. */
static void
idx_warn(const char *what, int rc)
{
	if (rc == MDB_MAP_FULL)
		log_warnx("index: %s: %s: the index map (%zu MiB) is full, "
		    "new entries are not recorded", what, mdb_strerror(rc),
		    IDX_MAP_SIZE >> 20);
	else
		log_warnx("index: %s: %s", what, mdb_strerror(rc));
}

/* A digest fits the keys and buffers: 1 to V2_DIGEST_MAX bytes. */
static int
idx_digest_ok(const char *digest)
{
	size_t	len;

	if (digest == NULL)
		return 0;
	len = strnlen(digest, V2_DIGEST_MAX + 1);
	return len > 0 && len <= V2_DIGEST_MAX;
}

/* 0 when the index is open for reading. */
static int
idx_readable(void)
{
	if (idx.ix_env == NULL) {
		log_debug("%s: index not open", __func__);
		return -1;
	}
	return 0;
}

/* 0 when the index is open for writing; a read-only open refuses. */
static int
idx_writable(void)
{
	if (idx_readable() == -1)
		return -1;
	if (idx.ix_readonly) {
		log_warnx("index: opened read-only, not writing");
		return -1;
	}
	return 0;
}

/*
 * Another process grew the map beyond ours: adopt its size (LMDB allows
 * this only while no write transaction is open in this process).
 */
static int
idx_map_adopt(void)
{
	int	rc;

	if ((rc = mdb_env_set_mapsize(idx.ix_env, 0)) != 0) {
		idx_warn("resize map", rc);
		return -1;
	}
	return 0;
}

/* Start the one read transaction; pair with idx_rtxn_end(). */
static int
idx_rtxn_begin(MDB_txn **txn)
{
	int	rc;

	if (idx.ix_rtxn_busy)
		fatalx("%s: read transaction already in use", __func__);
	if (idx.ix_rtxn == NULL)
		rc = mdb_txn_begin(idx.ix_env, NULL, MDB_RDONLY, &idx.ix_rtxn);
	else
		rc = mdb_txn_renew(idx.ix_rtxn);
	if (rc == MDB_MAP_RESIZED && idx_map_adopt() == 0) {
		if (idx.ix_rtxn == NULL)
			rc = mdb_txn_begin(idx.ix_env, NULL, MDB_RDONLY,
			    &idx.ix_rtxn);
		else
			rc = mdb_txn_renew(idx.ix_rtxn);
	}
	if (rc != 0) {
		idx_warn("read transaction", rc);
		if (idx.ix_rtxn != NULL)
			mdb_txn_abort(idx.ix_rtxn);
		idx.ix_rtxn = NULL;
		return -1;
	}
	idx.ix_rtxn_busy = 1;
	*txn = idx.ix_rtxn;
	return 0;
}

/* Release the snapshot but keep the handle for the next lookup. */
static void
idx_rtxn_end(void)
{
	mdb_txn_reset(idx.ix_rtxn);
	idx.ix_rtxn_busy = 0;
}

/* Start a write transaction (LMDB allows one at a time); 0 or -1. */
static int
idx_wtxn_begin(MDB_txn **txn)
{
	int	rc;

	rc = mdb_txn_begin(idx.ix_env, NULL, 0, txn);
	if (rc == MDB_MAP_RESIZED && idx_map_adopt() == 0)
		rc = mdb_txn_begin(idx.ix_env, NULL, 0, txn);
	if (rc != 0) {
		idx_warn("write transaction", rc);
		*txn = NULL;
		return -1;
	}
	/* Our transaction ids follow each other unless someone else's
	 * came between: then our totals may be wrong. */
	if (mdb_txn_id(*txn) != idx.ix_txnid + 1)
		idx.ix_foreign = 1;
	return 0;
}

/* The environment's newest transaction, to notice other processes' writes. */
static size_t
idx_last_txnid(void)
{
	MDB_envinfo	ei;

	if (mdb_env_info(idx.ix_env, &ei) != 0)
		return 0;
	return ei.me_last_txnid;
}

/* Commit, and tell running iterators that records changed; 0 or -1. */
static int
idx_commit(MDB_txn *txn, const char *what)
{
	int	rc;

	if ((rc = mdb_txn_commit(txn)) != 0) {
		idx_warn(what, rc);
		return -1;
	}
	idx.ix_gen++;
	idx.ix_txnid = idx_last_txnid();
	return 0;
}

/* Encode a blob record into out (IDX_BLOB_HDR + IDX_MEDIA_MAX); 0 if bad. */
static size_t
idx_blob_encode(const struct idx_blob *b, uint8_t *out)
{
	size_t	mlen = strnlen(b->media_type, sizeof(b->media_type));

	if (mlen == sizeof(b->media_type))
		return 0;
	out[0] = IDX_BLOB_VERSION;
	idx_put_le64(out + 1, b->size);
	idx_put_le64(out + 9, (uint64_t)b->stored);
	idx_put_le64(out + 17, (uint64_t)b->last_served);
	idx_put_le64(out + 25, b->hits);
	memcpy(out + IDX_BLOB_HDR, b->media_type, mlen);
	return IDX_BLOB_HDR + mlen;
}

/* Decode a stored blob record; -1 when it is not one this code wrote. */
static int
idx_blob_decode(const MDB_val *v, struct idx_blob *b)
{
	const uint8_t	*p = v->mv_data;
	size_t		 mlen;

	if (v->mv_size < IDX_BLOB_HDR || p[0] != IDX_BLOB_VERSION)
		return -1;
	mlen = v->mv_size - IDX_BLOB_HDR;
	if (mlen >= sizeof(b->media_type))
		return -1;
	b->size = idx_get_le64(p + 1);
	b->stored = idx_get_le64s(p + 9);
	b->last_served = idx_get_le64s(p + 17);
	b->hits = idx_get_le64(p + 25);
	memcpy(b->media_type, p + IDX_BLOB_HDR, mlen);
	b->media_type[mlen] = '\0';
	return 0;
}

/* Append a u16-prefixed string; 0 or -1 when it does not fit its field. */
static int
idx_put_str(uint8_t **pp, const char *s, size_t field)
{
	size_t	len = strnlen(s, field);

	if (len == field)
		return -1;
	idx_put_le16(*pp, (uint16_t)len);
	memcpy(*pp + 2, s, len);
	*pp += 2 + len;
	return 0;
}

/* Read a u16-prefixed string into a field of size field; 0 or -1. */
static int
idx_get_str(const uint8_t **pp, const uint8_t *end, char *s, size_t field)
{
	size_t	len;

	if (end - *pp < 2)
		return -1;
	len = idx_get_le16(*pp);
	if (len >= field || (size_t)(end - *pp - 2) < len)
		return -1;
	memcpy(s, *pp + 2, len);
	s[len] = '\0';
	*pp += 2 + len;
	return 0;
}

/* Encode a tag record into out (IDX_TAG_VAL_MAX); 0 if a field is bad. */
static size_t
idx_tag_encode(const struct idx_tag *t, uint8_t *out)
{
	uint8_t	*p = out + IDX_TAG_HDR;

	out[0] = IDX_TAG_VERSION;
	out[1] = t->negative ? IDX_TAG_NEGATIVE : 0;
	idx_put_le64(out + 2, (uint64_t)t->fetched_ms);
	if (idx_put_str(&p, t->digest, sizeof(t->digest)) == -1 ||
	    idx_put_str(&p, t->media_type, sizeof(t->media_type)) == -1 ||
	    idx_put_str(&p, t->etag, sizeof(t->etag)) == -1)
		return 0;
	return (size_t)(p - out);
}

/* Decode a stored tag record; -1 when it is not one this code wrote. */
static int
idx_tag_decode(const MDB_val *v, struct idx_tag *t)
{
	const uint8_t	*p = v->mv_data, *end = p + v->mv_size;

	if (v->mv_size < IDX_TAG_HDR || p[0] != IDX_TAG_VERSION)
		return -1;
	t->negative = (p[1] & IDX_TAG_NEGATIVE) != 0;
	t->fetched_ms = idx_get_le64s(p + 2);
	p += IDX_TAG_HDR;
	if (idx_get_str(&p, end, t->digest, sizeof(t->digest)) == -1 ||
	    idx_get_str(&p, end, t->media_type, sizeof(t->media_type)) == -1 ||
	    idx_get_str(&p, end, t->etag, sizeof(t->etag)) == -1)
		return -1;
	return 0;
}

/*
 * Build a NUL-separated key from n strings into buf (IDX_KEY_MAX + 1
 * bytes); -1 when a part is missing or the key exceeds LMDB's limit.
 */
static int
idx_key_join(char *buf, size_t *lenp, const char *const *parts, size_t n)
{
	size_t	i, len = 0, plen;

	for (i = 0; i < n; i++) {
		if (parts[i] == NULL)
			return -1;
		plen = strnlen(parts[i], IDX_KEY_MAX + 1);
		if (len + plen + (i > 0) > idx.ix_maxkey)
			return -1;
		if (i > 0)
			buf[len++] = '\0';
		memcpy(buf + len, parts[i], plen);
		len += plen;
	}
	buf[len] = '\0';
	*lenp = len;
	return 0;
}

/* digest \0 upstream \0 repo: one (upstream, repository) a blob is in. */
static int
idx_pair_key(const char *digest, const char *upstream, const char *repo,
    char *buf, size_t *lenp)
{
	const char	*parts[3] = { digest, upstream, repo };

	if (!idx_digest_ok(digest) || upstream == NULL || repo == NULL ||
	    *upstream == '\0' || *repo == '\0' ||
	    idx_key_join(buf, lenp, parts, 3) == -1) {
		log_warnx("index: blob repository key too long or empty");
		return -1;
	}
	return 0;
}

/* upstream \0 repo \0 tag \0 accept_class; a NULL class is "". */
static int
idx_tag_key_make(const struct idx_tag_key *k, char *buf, size_t *lenp)
{
	const char	*parts[4];

	parts[0] = k->upstream;
	parts[1] = k->repo;
	parts[2] = k->tag;
	parts[3] = k->accept_class != NULL ? k->accept_class : "";
	if (parts[0] == NULL || parts[1] == NULL || parts[2] == NULL ||
	    *parts[0] == '\0' || *parts[1] == '\0' || *parts[2] == '\0' ||
	    strnlen(parts[3], IDX_ACCEPT_CLASS_MAX + 1) > IDX_ACCEPT_CLASS_MAX ||
	    idx_key_join(buf, lenp, parts, 4) == -1) {
		log_warnx("index: tag key too long or empty");
		return -1;
	}
	return 0;
}

/* Split a stored tag key (NUL-terminated copy in buf) into its parts. */
static int
idx_tag_key_split(char *buf, size_t len, struct idx_tag_key *k)
{
	const char	**parts[4] = { &k->upstream, &k->repo, &k->tag,
			    &k->accept_class };
	size_t		  i, off = 0;

	for (i = 0; i < 4; i++) {
		if (off > len)
			return -1;
		*parts[i] = buf + off;
		off += strlen(buf + off) + 1;
	}
	return off == len + 1 ? 0 : -1;
}

/* FNV-1a of a digest, for the touch table. */
static uint64_t
idx_hash(const char *s)
{
	uint64_t	h = 0xcbf29ce484222325ULL;

	for (; *s != '\0'; s++) {
		h ^= (unsigned char)*s;
		h *= 0x100000001b3ULL;
	}
	return h;
}

/*
 * The pending touch of digest, or NULL; *freep, when given, gets the slot
 * an insert would use.  The table always has a free slot, so this ends.
 */
static struct idx_touch *
idx_touch_find(const char *digest, struct idx_touch **freep)
{
	struct idx_touch	*t, *fr = NULL;
	size_t			 i, mask;

	if (freep != NULL)
		*freep = NULL;
	if (idx.ix_touch == NULL)
		return NULL;
	mask = idx.ix_touch_cap - 1;
	for (i = idx_hash(digest) & mask;; i = (i + 1) & mask) {
		t = &idx.ix_touch[i];
		if (t->it_state == IDX_SLOT_FREE) {
			if (fr == NULL)
				fr = t;
			break;
		}
		if (t->it_state == IDX_SLOT_DEAD) {
			if (fr == NULL)
				fr = t;
			continue;
		}
		if (strcmp(t->it_digest, digest) == 0)
			return t;
	}
	if (freep != NULL)
		*freep = fr;
	return NULL;
}

/* Empty the touch table and free it; the next touch allocates again. */
static void
idx_touch_clear(void)
{
	free(idx.ix_touch);
	idx.ix_touch = NULL;
	idx.ix_touch_cap = idx.ix_touch_live = idx.ix_touch_used = 0;
}

/* Rehash into a table at most half full after the next insert. */
static void
idx_touch_rehash(void)
{
	struct idx_touch	*old = idx.ix_touch, *fr;
	size_t			 oldcap = idx.ix_touch_cap, cap, i;

	cap = oldcap > 0 ? oldcap : IDX_TOUCH_INIT;
	while ((idx.ix_touch_live + 1) * 2 > cap)
		cap *= 2;
	idx.ix_touch = xcalloc(cap, sizeof(*idx.ix_touch));
	idx.ix_touch_cap = cap;
	idx.ix_touch_used = idx.ix_touch_live;
	for (i = 0; i < oldcap; i++) {
		if (old[i].it_state != IDX_SLOT_LIVE)
			continue;
		idx_touch_find(old[i].it_digest, &fr);
		*fr = old[i];
	}
	free(old);
}

/* Drop the pending touch of digest: its record was replaced or deleted. */
static void
idx_touch_forget(const char *digest)
{
	struct idx_touch	*t;

	if ((t = idx_touch_find(digest, NULL)) != NULL) {
		t->it_state = IDX_SLOT_DEAD;
		idx.ix_touch_live--;
	}
}

/* Fold the pending touch of digest into a record read from LMDB. */
static void
idx_touch_merge(const char *digest, struct idx_blob *b)
{
	struct idx_touch	*t;

	if ((t = idx_touch_find(digest, NULL)) == NULL)
		return;
	if (t->it_last > b->last_served)
		b->last_served = t->it_last;
	b->hits += t->it_hits;
}

/*
 * Open (creating it, unless readonly) the LMDB environment in dir, check
 * its schema version and count what it holds.  0, or -1 with err set.
 */

/* Count total bytes and blobs with one pass over the records. */
static int
idx_count_totals(void)
{
	MDB_txn		*rtxn;
	MDB_cursor	*cur;
	MDB_val		 k, v;
	struct idx_blob	 b;
	int		 rc, skipped = 0;

	idx.ix_total_bytes = 0;
	idx.ix_nblobs = 0;
	idx.ix_txnid = idx_last_txnid();
	if (idx_rtxn_begin(&rtxn) == -1)
		return -1;
	if ((rc = mdb_cursor_open(rtxn, idx.ix_blobs, &cur)) != 0) {
		idx_rtxn_end();
		idx_warn("scan", rc);
		return -1;
	}
	for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0;
	    rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
		if (idx_blob_decode(&v, &b) == -1) {
			skipped++;
			continue;
		}
		idx.ix_total_bytes += b.size;
		idx.ix_nblobs++;
	}
	mdb_cursor_close(cur);
	idx_rtxn_end();
	if (rc != MDB_NOTFOUND) {
		idx_warn("scan", rc);
		return -1;
	}
	if (skipped > 0)
		log_warnx("index: %d unreadable blob records ignored",
		    skipped);
	return 0;
}

/*
 * Another process (regcache verify or gc) may have removed blobs: when the
 * environment moved on without us, count the totals again.
 */
void
idx_resync(void)
{
	if (idx.ix_env == NULL || (!idx.ix_foreign &&
	    idx_last_txnid() == idx.ix_txnid))
		return;
	idx.ix_foreign = 0;
	/* Reader slots of killed tools would pin old pages. */
	mdb_reader_check(idx.ix_env, &(int){ 0 });
	log_debug("%s: the index changed under us: recounting", __func__);
	idx_count_totals();
}

int
idx_open(const char *dir, int readonly, char *err, size_t errlen)
{
	MDB_txn		*txn = NULL;
	MDB_val		 k, v;
	const char	*what;
	uint8_t		 ver[4];
	unsigned int	 version, flags = MDB_NOTLS, dbflags;
	int		 rc, dead;

	if (idx.ix_env != NULL) {
		snprintf(err, errlen, "index %s: an index is already open",
		    dir);
		return -1;
	}
	if (!readonly && mkdir_p(dir, IDX_DIR_MODE) == -1) {
		snprintf(err, errlen, "index %s: %s", dir, strerror(errno));
		return -1;
	}
	memset(&idx, 0, sizeof(idx));
	idx.ix_readonly = readonly != 0;

	what = "create";
	if ((rc = mdb_env_create(&idx.ix_env)) != 0)
		goto fail_mdb;
	what = "configure";
	if ((rc = mdb_env_set_maxdbs(idx.ix_env, IDX_MAX_DBS)) != 0 ||
	    (rc = mdb_env_set_mapsize(idx.ix_env, IDX_MAP_SIZE)) != 0)
		goto fail_mdb;
	if (readonly)
		flags |= MDB_RDONLY;
	what = "open";
	if ((rc = mdb_env_open(idx.ix_env, dir, flags, IDX_FILE_MODE)) != 0)
		goto fail_mdb;
	idx.ix_maxkey = (size_t)mdb_env_get_maxkeysize(idx.ix_env);
	if (idx.ix_maxkey > IDX_KEY_MAX)
		idx.ix_maxkey = IDX_KEY_MAX;

	/* Reader slots of a process killed mid-read would pin old pages. */
	if (mdb_reader_check(idx.ix_env, &dead) == 0 && dead > 0)
		log_info("index: cleared %d stale reader slots", dead);

	what = "begin";
	if ((rc = mdb_txn_begin(idx.ix_env, NULL, readonly ? MDB_RDONLY : 0,
	    &txn)) != 0)
		goto fail_mdb;
	dbflags = readonly ? 0 : MDB_CREATE;
	what = "open databases";
	if ((rc = mdb_dbi_open(txn, "blobs", dbflags, &idx.ix_blobs)) != 0 ||
	    (rc = mdb_dbi_open(txn, "blob_repos", dbflags,
	    &idx.ix_blob_repos)) != 0 ||
	    (rc = mdb_dbi_open(txn, "tags", dbflags, &idx.ix_tags)) != 0 ||
	    (rc = mdb_dbi_open(txn, "meta", dbflags, &idx.ix_meta)) != 0) {
		if (rc == MDB_NOTFOUND) {
			snprintf(err, errlen, "index %s: not initialised "
			    "(no regcache index there yet)", dir);
			goto fail;
		}
		goto fail_mdb;
	}

	k.mv_data = (void *)(uintptr_t)IDX_SCHEMA_KEY;
	k.mv_size = strlen(IDX_SCHEMA_KEY);
	rc = mdb_get(txn, idx.ix_meta, &k, &v);
	if (rc == 0) {
		if (v.mv_size != sizeof(ver)) {
			snprintf(err, errlen, "index %s: bad schema version "
			    "record (%zu bytes)", dir, v.mv_size);
			goto fail;
		}
		memcpy(ver, v.mv_data, sizeof(ver));
		version = (unsigned int)ver[0] | (unsigned int)ver[1] << 8 |
		    (unsigned int)ver[2] << 16 | (unsigned int)ver[3] << 24;
		if (version > IDX_SCHEMA_VERSION) {
			snprintf(err, errlen, "index %s: schema version %u is "
			    "newer than this regcache supports (%u); run a "
			    "newer regcache or move the index away", dir,
			    version, IDX_SCHEMA_VERSION);
			goto fail;
		}
		if (version < IDX_SCHEMA_VERSION) {
			snprintf(err, errlen, "index %s: unknown schema "
			    "version %u", dir, version);
			goto fail;
		}
	} else if (rc == MDB_NOTFOUND && !readonly) {
		/* Created just now, in this transaction. */
		ver[0] = IDX_SCHEMA_VERSION & 0xff;
		ver[1] = (IDX_SCHEMA_VERSION >> 8) & 0xff;
		ver[2] = (IDX_SCHEMA_VERSION >> 16) & 0xff;
		ver[3] = (IDX_SCHEMA_VERSION >> 24) & 0xff;
		v.mv_data = ver;
		v.mv_size = sizeof(ver);
		what = "write schema version";
		if ((rc = mdb_put(txn, idx.ix_meta, &k, &v, 0)) != 0)
			goto fail_mdb;
	} else if (rc == MDB_NOTFOUND) {
		snprintf(err, errlen, "index %s: no schema version", dir);
		goto fail;
	} else {
		what = "read schema version";
		goto fail_mdb;
	}
	/* Even a read-only transaction must commit to keep its DB handles. */
	what = "commit";
	rc = mdb_txn_commit(txn);
	txn = NULL;
	if (rc != 0)
		goto fail_mdb;

	/* Totals: one pass over the records, nothing else touched. */
	if (idx_count_totals() == -1) {
		snprintf(err, errlen, "index %s: cannot count the blobs", dir);
		goto fail;
	}
	log_debug("%s: %s%s: %llu blobs, %llu bytes", __func__, dir,
	    readonly ? " (read-only)" : "",
	    (unsigned long long)idx.ix_nblobs,
	    (unsigned long long)idx.ix_total_bytes);
	return 0;

 fail_mdb:
	snprintf(err, errlen, "index %s: %s: %s", dir, what, mdb_strerror(rc));
 fail:
	if (txn != NULL)
		mdb_txn_abort(txn);
	if (idx.ix_rtxn != NULL)
		mdb_txn_abort(idx.ix_rtxn);
	if (idx.ix_env != NULL)
		mdb_env_close(idx.ix_env);
	memset(&idx, 0, sizeof(idx));
	return -1;
}

/* Is the index open (for /readyz)? */
int
idx_is_open(void)
{
	return idx.ix_env != NULL;
}

/* Write pending touches and close the environment; safe to call twice. */
void
idx_close(void)
{
	if (idx.ix_env == NULL)
		return;
	idx_flush_touches();
	if (idx.ix_rtxn != NULL)
		mdb_txn_abort(idx.ix_rtxn);
	mdb_env_close(idx.ix_env);
	idx_touch_clear();
	memset(&idx, 0, sizeof(idx));
}

/*
 * Look a blob up, with the hits counted since the last flush folded in.
 * 0 found, 1 absent, -1 error.
 */
int
idx_blob_get(const char *digest, struct idx_blob *out)
{
	MDB_txn	*txn;
	MDB_val	 k, v;
	int	 rc, ret;

	memset(out, 0, sizeof(*out));
	if (idx_readable() == -1 || !idx_digest_ok(digest))
		return -1;
	if (idx_rtxn_begin(&txn) == -1)
		return -1;
	k.mv_data = (void *)(uintptr_t)digest;
	k.mv_size = strlen(digest);
	if ((rc = mdb_get(txn, idx.ix_blobs, &k, &v)) == 0) {
		ret = 0;
		if (idx_blob_decode(&v, out) == -1) {
			log_warnx("index: %s: unreadable record", digest);
			ret = -1;
		}
	} else if (rc == MDB_NOTFOUND)
		ret = 1;
	else {
		idx_warn("get blob", rc);
		ret = -1;
	}
	idx_rtxn_end();
	if (ret == 0)
		idx_touch_merge(digest, out);
	return ret;
}

/* Size of a stored record, for the totals; -1 when it was unreadable. */
static int
idx_stored_size(const MDB_val *v, uint64_t *size)
{
	struct idx_blob	b;

	if (idx_blob_decode(v, &b) == -1)
		return -1;
	*size = b.size;
	return 0;
}

/*
 * Insert or replace the record of digest and, when upstream and repo are
 * given, note that the blob is in that repository: one transaction.  The
 * record given replaces any touches not yet flushed.  0 or -1.
 */
int
idx_blob_put(const char *digest, const struct idx_blob *b,
    const char *upstream, const char *repo)
{
	MDB_txn		*txn;
	MDB_val		 k, v, pk, pv;
	uint8_t		 val[IDX_BLOB_HDR + IDX_MEDIA_MAX];
	char		 pair[IDX_KEY_MAX + 1];
	size_t		 vlen, pairlen = 0;
	uint64_t	 oldsize = 0;
	int		 rc, had_old = 0;

	if (idx_writable() == -1)
		return -1;
	if (!idx_digest_ok(digest)) {
		log_warnx("index: bad digest");
		return -1;
	}
	if ((vlen = idx_blob_encode(b, val)) == 0) {
		log_warnx("index: %s: media type too long", digest);
		return -1;
	}
	if (upstream != NULL && repo != NULL &&
	    idx_pair_key(digest, upstream, repo, pair, &pairlen) == -1)
		return -1;

	if (idx_wtxn_begin(&txn) == -1)
		return -1;
	k.mv_data = (void *)(uintptr_t)digest;
	k.mv_size = strlen(digest);
	rc = mdb_get(txn, idx.ix_blobs, &k, &v);
	if (rc == 0)
		had_old = idx_stored_size(&v, &oldsize) == 0;
	else if (rc != MDB_NOTFOUND)
		goto fail;
	v.mv_data = val;
	v.mv_size = vlen;
	if ((rc = mdb_put(txn, idx.ix_blobs, &k, &v, 0)) != 0)
		goto fail;
	if (pairlen > 0) {
		pk.mv_data = pair;
		pk.mv_size = pairlen;
		pv.mv_data = NULL;
		pv.mv_size = 0;
		rc = mdb_put(txn, idx.ix_blob_repos, &pk, &pv,
		    MDB_NOOVERWRITE);
		if (rc != 0 && rc != MDB_KEYEXIST)
			goto fail;
	}
	if (idx_commit(txn, "put blob") == -1)
		return -1;

	if (had_old)
		idx.ix_total_bytes -= oldsize;
	else
		idx.ix_nblobs++;
	idx.ix_total_bytes += b->size;
	idx_touch_forget(digest);
	return 0;

 fail:
	idx_warn("put blob", rc);
	mdb_txn_abort(txn);
	return -1;
}

/* Note that digest was seen in (upstream, repo); nothing if known.  0/-1. */
int
idx_blob_seen_in(const char *digest, const char *upstream, const char *repo)
{
	MDB_txn	*txn;
	MDB_val	 k, v;
	char	 pair[IDX_KEY_MAX + 1];
	size_t	 pairlen;
	int	 rc;

	if (idx_writable() == -1 ||
	    idx_pair_key(digest, upstream, repo, pair, &pairlen) == -1)
		return -1;
	k.mv_data = pair;
	k.mv_size = pairlen;
	/* Usually known already: a read, not a write, on the hit path. */
	if (idx_rtxn_begin(&txn) == 0) {
		rc = mdb_get(txn, idx.ix_blob_repos, &k, &v);
		idx_rtxn_end();
		if (rc == 0)
			return 0;
	}
	if (idx_wtxn_begin(&txn) == -1)
		return -1;
	v.mv_data = NULL;
	v.mv_size = 0;
	rc = mdb_put(txn, idx.ix_blob_repos, &k, &v, MDB_NOOVERWRITE);
	if (rc == MDB_KEYEXIST) {
		mdb_txn_abort(txn);
		return 0;
	}
	if (rc != 0) {
		idx_warn("put blob repository", rc);
		mdb_txn_abort(txn);
		return -1;
	}
	return idx_commit(txn, "put blob repository");
}

/*
 * Was digest seen in (upstream, repo)?  A read only: the check a
 * credentialed upstream makes before serving a blob cached through another
 * repository.  1 recorded, 0 not, -1 error (treat as not recorded).
 */
int
idx_blob_known_in(const char *digest, const char *upstream, const char *repo)
{
	MDB_txn	*txn;
	MDB_val	 k, v;
	char	 pair[IDX_KEY_MAX + 1];
	size_t	 pairlen;
	int	 rc;

	if (idx_readable() == -1 ||
	    idx_pair_key(digest, upstream, repo, pair, &pairlen) == -1)
		return -1;
	if (idx_rtxn_begin(&txn) == -1)
		return -1;
	k.mv_data = pair;
	k.mv_size = pairlen;
	rc = mdb_get(txn, idx.ix_blob_repos, &k, &v);
	idx_rtxn_end();
	if (rc == 0)
		return 1;
	if (rc == MDB_NOTFOUND)
		return 0;
	idx_warn("get blob repository", rc);
	return -1;
}

/*
 * Delete the record of digest and every repository it was seen in, with
 * its pending touches.  0 deleted, 1 absent, -1 error.
 */
int
idx_blob_del(const char *digest)
{
	MDB_txn		*txn;
	MDB_cursor	*cur = NULL;
	MDB_val		 k, v;
	char		 prefix[V2_DIGEST_MAX + 2];
	size_t		 plen;
	uint64_t	 oldsize = 0;
	int		 rc, found = 0, counted = 0, changed = 0;

	if (idx_writable() == -1 || !idx_digest_ok(digest))
		return -1;
	if (idx_wtxn_begin(&txn) == -1)
		return -1;
	k.mv_data = (void *)(uintptr_t)digest;
	k.mv_size = strlen(digest);
	rc = mdb_get(txn, idx.ix_blobs, &k, &v);
	if (rc == 0) {
		found = 1;
		counted = idx_stored_size(&v, &oldsize) == 0;
		if ((rc = mdb_del(txn, idx.ix_blobs, &k, NULL)) != 0)
			goto fail;
		changed = 1;
	} else if (rc != MDB_NOTFOUND)
		goto fail;

	/* The pairs: every key starting with "digest\0". */
	plen = strlen(digest) + 1;
	memcpy(prefix, digest, plen);
	if ((rc = mdb_cursor_open(txn, idx.ix_blob_repos, &cur)) != 0)
		goto fail;
	for (;;) {
		k.mv_data = prefix;
		k.mv_size = plen;
		rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
		if (rc == MDB_NOTFOUND)
			break;
		if (rc != 0)
			goto fail;
		if (k.mv_size < plen || memcmp(k.mv_data, prefix, plen) != 0)
			break;
		if ((rc = mdb_cursor_del(cur, 0)) != 0)
			goto fail;
		changed = 1;
	}
	mdb_cursor_close(cur);
	if (!changed) {
		mdb_txn_abort(txn);
		return 1;
	}
	if (idx_commit(txn, "delete blob") == -1)
		return -1;
	if (counted) {
		idx.ix_total_bytes -= oldsize;
		idx.ix_nblobs--;
	}
	idx_touch_forget(digest);
	return found ? 0 : 1;

 fail:
	idx_warn("delete blob", rc);
	if (cur != NULL)
		mdb_cursor_close(cur);
	mdb_txn_abort(txn);
	return -1;
}

/* What a tag resolved to, for one accept class.  0 found, 1 absent, -1. */
int
idx_tag_get(const struct idx_tag_key *key, struct idx_tag *out)
{
	MDB_txn	*txn;
	MDB_val	 k, v;
	char	 kbuf[IDX_KEY_MAX + 1];
	size_t	 klen;
	int	 rc, ret;

	memset(out, 0, sizeof(*out));
	if (idx_readable() == -1 || idx_tag_key_make(key, kbuf, &klen) == -1)
		return -1;
	if (idx_rtxn_begin(&txn) == -1)
		return -1;
	k.mv_data = kbuf;
	k.mv_size = klen;
	if ((rc = mdb_get(txn, idx.ix_tags, &k, &v)) == 0) {
		ret = 0;
		if (idx_tag_decode(&v, out) == -1) {
			log_warnx("index: tag %s: unreadable record", key->tag);
			ret = -1;
		}
	} else if (rc == MDB_NOTFOUND)
		ret = 1;
	else {
		idx_warn("get tag", rc);
		ret = -1;
	}
	idx_rtxn_end();
	return ret;
}

/* Insert or replace what a tag resolved to.  0 or -1. */
int
idx_tag_put(const struct idx_tag_key *key, const struct idx_tag *t)
{
	MDB_txn	*txn;
	MDB_val	 k, v;
	uint8_t	 val[IDX_TAG_VAL_MAX];
	char	 kbuf[IDX_KEY_MAX + 1];
	size_t	 klen, vlen;
	int	 rc;

	if (idx_writable() == -1 || idx_tag_key_make(key, kbuf, &klen) == -1)
		return -1;
	if ((vlen = idx_tag_encode(t, val)) == 0) {
		log_warnx("index: tag %s: a field is too long", key->tag);
		return -1;
	}
	if (idx_wtxn_begin(&txn) == -1)
		return -1;
	k.mv_data = kbuf;
	k.mv_size = klen;
	v.mv_data = val;
	v.mv_size = vlen;
	if ((rc = mdb_put(txn, idx.ix_tags, &k, &v, 0)) != 0) {
		idx_warn("put tag", rc);
		mdb_txn_abort(txn);
		return -1;
	}
	return idx_commit(txn, "put tag");
}

/* Forget a tag for one accept class.  0 deleted, 1 absent, -1 error. */
int
idx_tag_del(const struct idx_tag_key *key)
{
	MDB_txn	*txn;
	MDB_val	 k;
	char	 kbuf[IDX_KEY_MAX + 1];
	size_t	 klen;
	int	 rc;

	if (idx_writable() == -1 || idx_tag_key_make(key, kbuf, &klen) == -1)
		return -1;
	if (idx_wtxn_begin(&txn) == -1)
		return -1;
	k.mv_data = kbuf;
	k.mv_size = klen;
	rc = mdb_del(txn, idx.ix_tags, &k, NULL);
	if (rc == MDB_NOTFOUND) {
		mdb_txn_abort(txn);
		return 1;
	}
	if (rc != 0) {
		idx_warn("delete tag", rc);
		mdb_txn_abort(txn);
		return -1;
	}
	return idx_commit(txn, "delete tag");
}

/*
 * Count one hit of digest at now, in memory only; idx_flush_touches()
 * writes them.  A full table is flushed first.  Read-only: nothing.
 */
void
idx_touch(const char *digest, int64_t now)
{
	struct idx_touch	*t, *fr;

	if (idx.ix_env == NULL || idx.ix_readonly || !idx_digest_ok(digest))
		return;
	if ((t = idx_touch_find(digest, NULL)) == NULL) {
		if (idx.ix_touch_live >= IDX_TOUCH_MAX)
			idx_flush_touches();
		if ((idx.ix_touch_used + 1) * 2 > idx.ix_touch_cap)
			idx_touch_rehash();
		idx_touch_find(digest, &fr);
		t = fr;
		if (t->it_state == IDX_SLOT_FREE)
			idx.ix_touch_used++;
		idx.ix_touch_live++;
		t->it_state = IDX_SLOT_LIVE;
		strlcpy_rc(t->it_digest, digest, sizeof(t->it_digest));
		t->it_last = now;
		t->it_hits = 0;
	}
	if (now > t->it_last)
		t->it_last = now;
	t->it_hits++;
}

/*
 * Write every pending touch in one transaction, skipping blobs deleted
 * since, and empty the table.  On failure the touches are dropped too:
 * they are hints for eviction, and keeping them would retry the same
 * failing write on every later touch.  0 or -1.
 */
int
idx_flush_touches(void)
{
	struct idx_touch	*t;
	struct idx_blob		 b;
	MDB_txn			*txn;
	MDB_val			 k, v;
	uint8_t			 val[IDX_BLOB_HDR + IDX_MEDIA_MAX];
	size_t			 i;
	int			 rc;

	if (idx.ix_touch_live == 0 || idx.ix_env == NULL || idx.ix_readonly) {
		idx_touch_clear();
		return 0;
	}
	if (idx_wtxn_begin(&txn) == -1) {
		idx_touch_clear();
		return -1;
	}
	for (i = 0; i < idx.ix_touch_cap; i++) {
		t = &idx.ix_touch[i];
		if (t->it_state != IDX_SLOT_LIVE)
			continue;
		k.mv_data = t->it_digest;
		k.mv_size = strlen(t->it_digest);
		rc = mdb_get(txn, idx.ix_blobs, &k, &v);
		if (rc == MDB_NOTFOUND)
			continue;
		if (rc != 0)
			goto fail;
		if (idx_blob_decode(&v, &b) == -1) {
			log_warnx("index: %s: unreadable record", t->it_digest);
			continue;
		}
		if (t->it_last > b.last_served)
			b.last_served = t->it_last;
		b.hits += t->it_hits;
		v.mv_data = val;
		v.mv_size = idx_blob_encode(&b, val);
		if ((rc = mdb_put(txn, idx.ix_blobs, &k, &v, 0)) != 0)
			goto fail;
	}
	idx_touch_clear();
	return idx_commit(txn, "flush touches");

 fail:
	idx_warn("flush touches", rc);
	mdb_txn_abort(txn);
	idx_touch_clear();
	return -1;
}

struct idx_blob_ent {
	char		digest[V2_DIGEST_MAX + 1];
	struct idx_blob	rec;
};

/*
 * Call cb for every blob, in digest order, until it returns non-zero.
 * Records are copied out in batches and cb runs with no transaction open,
 * so it may put or delete anything; once it has written, the rest of the
 * batch is read again, so a record deleted by cb is not reported.  0/-1.
 */
int
idx_blob_iter(int (*cb)(const char *, const struct idx_blob *, void *),
    void *arg)
{
	struct idx_blob_ent	*batch;
	struct idx_blob		 rec;
	MDB_txn			*txn;
	MDB_cursor		*cur;
	MDB_val			 k, v;
	char			 last[V2_DIGEST_MAX + 1];
	size_t			 i, n;
	uint64_t		 gen;
	int			 rc, r, ret = -1, have_last = 0;

	if (idx_readable() == -1)
		return -1;
	batch = xcalloc(IDX_ITER_BATCH, sizeof(*batch));
	for (;;) {
		if (idx_rtxn_begin(&txn) == -1)
			goto out;
		if ((rc = mdb_cursor_open(txn, idx.ix_blobs, &cur)) != 0) {
			idx_rtxn_end();
			idx_warn("iterate blobs", rc);
			goto out;
		}
		if (have_last) {
			k.mv_data = last;
			k.mv_size = strlen(last);
			rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
			if (rc == 0 && k.mv_size == strlen(last) &&
			    memcmp(k.mv_data, last, k.mv_size) == 0)
				rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
		} else
			rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST);
		for (n = 0; rc == 0 && n < IDX_ITER_BATCH;
		    rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
			if (k.mv_size == 0 || k.mv_size > V2_DIGEST_MAX ||
			    idx_blob_decode(&v, &batch[n].rec) == -1)
				continue;
			memcpy(batch[n].digest, k.mv_data, k.mv_size);
			batch[n].digest[k.mv_size] = '\0';
			n++;
		}
		mdb_cursor_close(cur);
		idx_rtxn_end();
		if (rc != 0 && rc != MDB_NOTFOUND) {
			idx_warn("iterate blobs", rc);
			goto out;
		}

		gen = idx.ix_gen;
		for (i = 0; i < n; i++) {
			rec = batch[i].rec;
			if (idx.ix_gen != gen) {
				if ((r = idx_blob_get(batch[i].digest,
				    &rec)) == 1)
					continue;
				if (r == -1)
					goto out;
			} else
				idx_touch_merge(batch[i].digest, &rec);
			if (cb(batch[i].digest, &rec, arg) != 0) {
				ret = 0;
				goto out;
			}
		}
		if (rc == MDB_NOTFOUND)
			break;
		memcpy(last, batch[n - 1].digest, sizeof(last));
		have_last = 1;
	}
	ret = 0;
 out:
	free(batch);
	return ret;
}

struct idx_tag_ent {
	char		key[IDX_KEY_MAX + 1];
	size_t		keylen;
	struct idx_tag	tag;
};

/* Like idx_blob_iter, for tags: cb gets the key split into its parts. */
int
idx_tag_iter(int (*cb)(const struct idx_tag_key *, const struct idx_tag *,
    void *), void *arg)
{
	struct idx_tag_ent	*batch;
	struct idx_tag_key	 key;
	struct idx_tag		 tag;
	MDB_txn			*txn;
	MDB_cursor		*cur;
	MDB_val			 k, v;
	char			 last[IDX_KEY_MAX + 1];
	size_t			 i, n, lastlen = 0;
	uint64_t		 gen;
	int			 rc, r, ret = -1, have_last = 0;

	if (idx_readable() == -1)
		return -1;
	batch = xcalloc(IDX_ITER_BATCH, sizeof(*batch));
	for (;;) {
		if (idx_rtxn_begin(&txn) == -1)
			goto out;
		if ((rc = mdb_cursor_open(txn, idx.ix_tags, &cur)) != 0) {
			idx_rtxn_end();
			idx_warn("iterate tags", rc);
			goto out;
		}
		if (have_last) {
			k.mv_data = last;
			k.mv_size = lastlen;
			rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
			if (rc == 0 && k.mv_size == lastlen &&
			    memcmp(k.mv_data, last, lastlen) == 0)
				rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
		} else
			rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST);
		for (n = 0; rc == 0 && n < IDX_ITER_BATCH;
		    rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
			if (k.mv_size > IDX_KEY_MAX ||
			    idx_tag_decode(&v, &batch[n].tag) == -1)
				continue;
			memcpy(batch[n].key, k.mv_data, k.mv_size);
			batch[n].key[k.mv_size] = '\0';
			batch[n].keylen = k.mv_size;
			n++;
		}
		mdb_cursor_close(cur);
		idx_rtxn_end();
		if (rc != 0 && rc != MDB_NOTFOUND) {
			idx_warn("iterate tags", rc);
			goto out;
		}

		gen = idx.ix_gen;
		for (i = 0; i < n; i++) {
			if (idx_tag_key_split(batch[i].key, batch[i].keylen,
			    &key) == -1)
				continue;
			tag = batch[i].tag;
			if (idx.ix_gen != gen) {
				if ((r = idx_tag_get(&key, &tag)) == 1)
					continue;
				if (r == -1)
					goto out;
			}
			if (cb(&key, &tag, arg) != 0) {
				ret = 0;
				goto out;
			}
		}
		if (rc == MDB_NOTFOUND)
			break;
		memcpy(last, batch[n - 1].key, batch[n - 1].keylen);
		lastlen = batch[n - 1].keylen;
		have_last = 1;
	}
	ret = 0;
 out:
	free(batch);
	return ret;
}

/*
 * Call cb(upstream, repo) for each repository digest was seen in, until
 * it returns non-zero.  The pairs are copied first, so cb may write.
 */
int
idx_repo_iter(const char *digest, int (*cb)(const char *, const char *,
    void *), void *arg)
{
	MDB_txn		*txn;
	MDB_cursor	*cur;
	MDB_val		 k, v;
	char		 prefix[V2_DIGEST_MAX + 2], **pairs = NULL, **np;
	const char	*p, *repo;
	size_t		 plen, n = 0, cap = 0, i, tail;
	int		 rc, ret = -1;

	if (idx_readable() == -1 || !idx_digest_ok(digest))
		return -1;
	plen = strlen(digest) + 1;
	memcpy(prefix, digest, plen);
	if (idx_rtxn_begin(&txn) == -1)
		return -1;
	if ((rc = mdb_cursor_open(txn, idx.ix_blob_repos, &cur)) != 0) {
		idx_rtxn_end();
		idx_warn("iterate blob repositories", rc);
		return -1;
	}
	k.mv_data = prefix;
	k.mv_size = plen;
	for (rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE); rc == 0;
	    rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
		if (k.mv_size < plen || memcmp(k.mv_data, prefix, plen) != 0)
			break;
		/* The tail is "upstream\0repo": exactly one NUL inside. */
		tail = k.mv_size - plen;
		p = (const char *)k.mv_data + plen;
		if (tail < 3 || memchr(p, '\0', tail) == NULL)
			continue;
		if (n == cap) {
			cap = cap > 0 ? cap * 2 : 8;
			if ((np = reallocarray(pairs, cap,
			    sizeof(*pairs))) == NULL)
				fatal("reallocarray");
			pairs = np;
		}
		pairs[n] = xcalloc(1, tail + 1);
		memcpy(pairs[n++], p, tail);
	}
	mdb_cursor_close(cur);
	idx_rtxn_end();
	if (rc != 0 && rc != MDB_NOTFOUND) {
		idx_warn("iterate blob repositories", rc);
		goto out;
	}
	ret = 0;
	for (i = 0; i < n; i++) {
		repo = pairs[i] + strlen(pairs[i]) + 1;
		if (cb(pairs[i], repo, arg) != 0)
			break;
	}
 out:
	for (i = 0; i < n; i++)
		free(pairs[i]);
	free(pairs);
	return ret;
}

/* Bytes of every blob recorded, as of the last write by this process. */
uint64_t
idx_total_bytes(void)
{
	return idx.ix_total_bytes;
}

/* Blob records, as of the last write by this process. */
uint64_t
idx_blob_count(void)
{
	return idx.ix_nblobs;
}
