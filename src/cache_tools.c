/*
 * The maintenance commands on a data directory, run as separate processes
 * beside the daemon or instead of it:
 *
 *	verify	re-hash every cached blob; drop those whose bytes or size
 *		are wrong or whose file is gone
 *	gc	evict to the configured budget offline
 *	ls	list what is cached
 *
 * verify and gc also remove files under blobs/ that the index does not
 * know (a crash between the rename and the index commit leaves them, see
 * cache_store.c) and leftovers in tmp/.  Removing an entry takes LMDB's
 * write lock for one short transaction, which LMDB shares with a running
 * daemon.  Files the index does not know, however, are exactly what a
 * daemon has in flight (a fill in tmp/, a blob renamed but not yet
 * committed), so they are only touched while no daemon runs: the daemon
 * holds DATA/regcache.lock, and the tools sweep only when they can take
 * that lock themselves (without waiting).  verify releases it before the
 * long re-hash, so a daemon started meanwhile waits at most for the sweep.
 */
#include "config.h"

#include <sys/file.h>
#include <sys/stat.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/evp.h>

#include "regcache.h"

#define TOOL_EXIT_OK		0
#define TOOL_EXIT_FOUND		1	/* verify: something was wrong */
#define TOOL_EXIT_ERROR		2

#define TOOL_LOCK_FILE		"regcache.lock"	/* held by the daemon */
#define TOOL_READ_CHUNK		(256 * 1024)	/* bytes hashed per read */
#define TOOL_SWEEP_DEPTH	2	/* blobs/<alg>/<2 hex>/<file> */

/* One run of verify or gc on one data directory. */
struct tool_run {
	const char	*tr_cmd;	/* "verify", "gc": prefixes each line */
	const char	*tr_dir;	/* the data directory */
	int		 tr_dry;	/* report only */
	int		 tr_lock_fd;	/* DATA/regcache.lock, or -1 */
	int		 tr_swept;	/* blobs/ and tmp/ were looked at */
	unsigned char	*tr_buf;	/* TOOL_READ_CHUNK bytes */
	uint64_t	 tr_checked;
	uint64_t	 tr_bad;
	uint64_t	 tr_missing;
	uint64_t	 tr_orphans;	/* unknown files and tmp/ leftovers */
	uint64_t	 tr_orphan_bytes;
	uint64_t	 tr_errors;
};

/* What re-hashing one blob found. */
enum blob_check {
	BLOB_GOOD,
	BLOB_BAD,
	BLOB_MISSING,
	BLOB_ERROR
};

/* Percent p of v without overflow (as the eviction code computes it). */
static uint64_t
tool_pct(uint64_t v, int p)
{
	return v / 100 * (uint64_t)p + v % 100 * (uint64_t)p / 100;
}

/* "512 B", "1.5 MiB": a size for people; exact bytes go elsewhere. */
static const char *
tool_fmt_size(uint64_t n, char *buf, size_t len)
{
	static const char *const units[] = { "KiB", "MiB", "GiB", "TiB",
	    "PiB" };
	double	v = (double)n;
	size_t	u = 0;

	if (n < 1024) {
		snprintf(buf, len, "%llu B", (unsigned long long)n);
		return buf;
	}
	v /= 1024;
	while (v >= 1024 && u + 1 < sizeof(units) / sizeof(units[0])) {
		v /= 1024;
		u++;
	}
	snprintf(buf, len, "%.1f %s", v, units[u]);
	return buf;
}

/* "42s", "5m", "3h", "12d": how long ago a time was; "-" for never. */
static const char *
tool_fmt_age(int64_t then, int64_t now, char *buf, size_t len)
{
	int64_t	d = now - then;

	if (then <= 0)
		snprintf(buf, len, "-");
	else if (d < 60)
		snprintf(buf, len, "%llds", (long long)(d > 0 ? d : 0));
	else if (d < 3600)
		snprintf(buf, len, "%lldm", (long long)(d / 60));
	else if (d < 86400)
		snprintf(buf, len, "%lldh", (long long)(d / 3600));
	else
		snprintf(buf, len, "%lldd", (long long)(d / 86400));
	return buf;
}

/*
 * Open the store of a data directory for a tool: read-only for commands
 * that only look, read-write otherwise (neither locks the directory nor
 * clears tmp/, so a running daemon is left alone).  0, or -1 after saying
 * why on stderr.
 */
static int
tool_store_open(const char *cmd, const char *dir, int readonly)
{
	struct stat	st;
	char		path[PATH_MAX], err[1024];

	if (snprintf(path, sizeof(path), "%s/index", dir) >= (int)sizeof(path)) {
		fprintf(stderr, "regcache %s: %s: path too long\n", cmd, dir);
		return -1;
	}
	if (stat(dir, &st) == -1 || stat(path, &st) == -1) {
		fprintf(stderr, "regcache %s: no cache in %s: %s\n", cmd, dir,
		    strerror(errno));
		return -1;
	}
	if (cache_store_open(dir, readonly ? CACHE_STORE_RDONLY :
	    CACHE_STORE_RW, err, sizeof(err)) == -1) {
		fprintf(stderr, "regcache %s: %s\n", cmd, err);
		return -1;
	}
	return 0;
}

/*
 * Take DATA/regcache.lock without waiting.  Held, no daemon runs and the
 * files the index does not know are leftovers; not held, say why.
 */
static void
tool_lock(struct tool_run *tr)
{
	char	path[PATH_MAX];
	int	fd;

	tr->tr_lock_fd = -1;
	snprintf(path, sizeof(path), "%s/%s", tr->tr_dir, TOOL_LOCK_FILE);
	if ((fd = open(path, O_RDONLY | O_CREAT | O_CLOEXEC, 0640)) == -1) {
		printf("%s: cannot open %s (%s): not checking tmp/ and "
		    "unindexed files\n", tr->tr_cmd, path, strerror(errno));
		return;
	}
	if (flock(fd, LOCK_EX | LOCK_NB) == -1) {
		if (errno == EWOULDBLOCK)
			printf("%s: a running regcache holds %s: not checking "
			    "tmp/ and unindexed files (fills may be in "
			    "flight)\n", tr->tr_cmd, path);
		else
			printf("%s: cannot lock %s (%s): not checking tmp/ "
			    "and unindexed files\n", tr->tr_cmd, path,
			    strerror(errno));
		close(fd);
		return;
	}
	tr->tr_lock_fd = fd;
}

/* Let a daemon start again. */
static void
tool_unlock(struct tool_run *tr)
{
	if (tr->tr_lock_fd != -1)
		close(tr->tr_lock_fd);
	tr->tr_lock_fd = -1;
}

/* Report (and unless dry, remove) one file nobody needs: rel is relative
 * to the data directory. */
static void
tool_orphan(struct tool_run *tr, const char *rel, const struct stat *st,
    const char *what)
{
	char	path[PATH_MAX + 256];

	snprintf(path, sizeof(path), "%s/%s", tr->tr_dir, rel);
	if (tr->tr_dry) {
		printf("%s: %s: %s, %llu bytes: would remove\n", tr->tr_cmd,
		    rel, what, (unsigned long long)st->st_size);
	} else if (unlink(path) == -1 && errno != ENOENT) {
		printf("%s: %s: %s: cannot remove: %s\n", tr->tr_cmd, rel,
		    what, strerror(errno));
		tr->tr_errors++;
		return;
	} else
		printf("%s: %s: %s, %llu bytes: removed\n", tr->tr_cmd, rel,
		    what, (unsigned long long)st->st_size);
	tr->tr_orphans++;
	tr->tr_orphan_bytes += (uint64_t)st->st_size;
}

/*
 * Whether rel ("blobs/<alg>/<xx>/<hex>") is the file of an indexed blob:
 * 1 yes, 0 no, -1 when the index cannot tell (the file is then kept).
 */
static int
tool_blob_known(const char *dir, const char *rel)
{
	char		 digest[V2_DIGEST_MAX + 1], want[PATH_MAX];
	char		 have[PATH_MAX + 256];
	const char	*alg, *name;
	struct idx_blob	 b;
	int		 r;

	alg = rel + strlen("blobs/");
	if ((name = strrchr(rel, '/')) == NULL)
		return 0;
	name++;
	if (snprintf(digest, sizeof(digest), "%.*s:%s",
	    (int)strcspn(alg, "/"), alg, name) >= (int)sizeof(digest) ||
	    !v2_digest_valid(digest))
		return 0;
	snprintf(have, sizeof(have), "%s/%s", dir, rel);
	if (cache_blob_path(digest, want, sizeof(want)) == -1 ||
	    strcmp(want, have) != 0)
		return 0;	/* a valid name in the wrong directory */
	if ((r = idx_blob_get(digest, &b)) == -1)
		return -1;
	return r == 0;
}

/*
 * Sweep rel (under the data directory) down to TOOL_SWEEP_DEPTH levels
 * of subdirectories: under blobs/ a file that is not an indexed blob's is
 * an orphan; under tmp/ every file is a leftover.  Directories where a
 * file belongs are reported and left alone.
 */
static void
tool_sweep_dir(struct tool_run *tr, const char *rel, int blobs, int depth)
{
	DIR		*d;
	struct dirent	*de;
	struct stat	 st;
	char		 path[PATH_MAX], sub[PATH_MAX];
	int		 known;

	snprintf(path, sizeof(path), "%s/%s", tr->tr_dir, rel);
	if ((d = opendir(path)) == NULL) {
		if (errno != ENOENT) {
			printf("%s: %s: %s\n", tr->tr_cmd, rel,
			    strerror(errno));
			tr->tr_errors++;
		}
		return;
	}
	while ((de = readdir(d)) != NULL) {
		if (strcmp(de->d_name, ".") == 0 ||
		    strcmp(de->d_name, "..") == 0)
			continue;
		if (snprintf(sub, sizeof(sub), "%s/%s", rel, de->d_name) >=
		    (int)sizeof(sub)) {
			printf("%s: %s/...: name too long, left alone\n",
			    tr->tr_cmd, rel);
			tr->tr_errors++;
			continue;
		}
		if (fstatat(dirfd(d), de->d_name, &st,
		    AT_SYMLINK_NOFOLLOW) == -1) {
			if (errno == ENOENT)
				continue;
			printf("%s: %s: %s\n", tr->tr_cmd, sub,
			    strerror(errno));
			tr->tr_errors++;
			continue;
		}
		if (S_ISDIR(st.st_mode)) {
			if (blobs && depth < TOOL_SWEEP_DEPTH)
				tool_sweep_dir(tr, sub, blobs, depth + 1);
			else
				printf("%s: %s: unexpected directory, left "
				    "alone\n", tr->tr_cmd, sub);
			continue;
		}
		if (!blobs) {
			tool_orphan(tr, sub, &st, "leftover of an unfinished "
			    "fill");
			continue;
		}
		known = depth == TOOL_SWEEP_DEPTH && S_ISREG(st.st_mode) ?
		    tool_blob_known(tr->tr_dir, sub) : 0;
		if (known == -1) {
			printf("%s: %s: cannot look it up in the index, left "
			    "alone\n", tr->tr_cmd, sub);
			tr->tr_errors++;
		} else if (!known)
			tool_orphan(tr, sub, &st, "not in the index");
	}
	closedir(d);
}

/* Orphans under blobs/ and leftovers in tmp/, when no daemon runs. */
static void
tool_sweep(struct tool_run *tr)
{
	if (tr->tr_lock_fd == -1)
		return;
	tool_sweep_dir(tr, "blobs", 1, 0);
	tool_sweep_dir(tr, "tmp", 0, 0);
	tr->tr_swept = 1;
}

/*
 * Hash the file of digest in TOOL_READ_CHUNK pieces and compare it with
 * the digest and the size the index recorded; why says what is wrong.
 */
static enum blob_check
tool_blob_check(struct tool_run *tr, const char *digest,
    const struct idx_blob *b, char *why, size_t whylen)
{
	char		 path[PATH_MAX], hex[2 * EVP_MAX_MD_SIZE + 1];
	unsigned char	 md[EVP_MAX_MD_SIZE];
	unsigned int	 mdlen, i;
	const EVP_MD	*alg;
	EVP_MD_CTX	*ctx = NULL;
	struct stat	 st;
	uint64_t	 total = 0;
	ssize_t		 n;
	enum blob_check	 ret = BLOB_ERROR;
	int		 fd;

	if (strncmp(digest, "sha256:", 7) == 0)
		alg = EVP_sha256();
	else if (strncmp(digest, "sha512:", 7) == 0)
		alg = EVP_sha512();
	else {
		snprintf(why, whylen, "unsupported digest algorithm");
		return BLOB_BAD;
	}
	if (cache_blob_path(digest, path, sizeof(path)) == -1) {
		snprintf(why, whylen, "no file name for this digest");
		return BLOB_BAD;
	}
	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) == -1) {
		if (errno == ENOENT) {
			snprintf(why, whylen, "indexed, but %s is gone", path);
			return BLOB_MISSING;
		}
		snprintf(why, whylen, "%s: %s", path, strerror(errno));
		return BLOB_ERROR;
	}
	if (fstat(fd, &st) == -1) {
		snprintf(why, whylen, "fstat %s: %s", path, strerror(errno));
		goto out;
	}
	if (!S_ISREG(st.st_mode)) {
		snprintf(why, whylen, "%s is not a regular file", path);
		ret = BLOB_BAD;
		goto out;
	}
	if ((uint64_t)st.st_size != b->size) {
		snprintf(why, whylen, "%llu bytes on disk, %llu in the index",
		    (unsigned long long)st.st_size,
		    (unsigned long long)b->size);
		ret = BLOB_BAD;
		goto out;
	}
	if ((ctx = EVP_MD_CTX_new()) == NULL ||
	    EVP_DigestInit_ex(ctx, alg, NULL) != 1) {
		snprintf(why, whylen, "cannot set up the digest");
		goto out;
	}
	for (;;) {
		n = read(fd, tr->tr_buf, TOOL_READ_CHUNK);
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1) {
			snprintf(why, whylen, "read %s: %s", path,
			    strerror(errno));
			goto out;
		}
		if (n == 0)
			break;
		if (EVP_DigestUpdate(ctx, tr->tr_buf, (size_t)n) != 1) {
			snprintf(why, whylen, "cannot compute the digest");
			goto out;
		}
		total += (uint64_t)n;
	}
	if (EVP_DigestFinal_ex(ctx, md, &mdlen) != 1) {
		snprintf(why, whylen, "cannot compute the digest");
		goto out;
	}
	if (total != b->size) {
		snprintf(why, whylen, "read %llu bytes, %llu in the index",
		    (unsigned long long)total, (unsigned long long)b->size);
		ret = BLOB_BAD;
		goto out;
	}
	for (i = 0; i < mdlen; i++)
		snprintf(hex + 2 * i, 3, "%02x", md[i]);
	if (strcmp(hex, strchr(digest, ':') + 1) != 0) {
		snprintf(why, whylen, "the content hashes to %.*s%s",
		    (int)(strchr(digest, ':') - digest + 1), digest, hex);
		ret = BLOB_BAD;
		goto out;
	}
	ret = BLOB_GOOD;
 out:
	EVP_MD_CTX_free(ctx);
	close(fd);
	return ret;
}

/* Drop a blob's index entry, then its file; 0 or -1. */
static int
tool_blob_drop(const char *digest)
{
	if (idx_blob_del(digest) == -1)
		return -1;
	return cache_blob_remove(digest);
}

/* idx_blob_iter callback of verify: check one blob, drop it if bad. */
static int
tool_verify_blob(const char *digest, const struct idx_blob *b, void *arg)
{
	struct tool_run	*tr = arg;
	struct idx_blob	 now;
	enum blob_check	 r;
	const char	*what;
	char		 why[PATH_MAX + 128];

	r = tool_blob_check(tr, digest, b, why, sizeof(why));
	if (r == BLOB_MISSING && idx_blob_get(digest, &now) == 1)
		return 0;	/* evicted by a daemon since it was listed */
	tr->tr_checked++;
	switch (r) {
	case BLOB_GOOD:
		return 0;
	case BLOB_ERROR:
		printf("verify: %s: cannot check: %s\n", digest, why);
		tr->tr_errors++;
		return 0;
	case BLOB_BAD:
		tr->tr_bad++;
		what = "bad";
		break;
	case BLOB_MISSING:
	default:
		tr->tr_missing++;
		what = "missing";
		break;
	}
	if (tr->tr_dry)
		printf("verify: %s: %s: %s: would remove\n", digest, what, why);
	else if (tool_blob_drop(digest) == -1) {
		printf("verify: %s: %s: %s: cannot remove it\n", digest, what,
		    why);
		tr->tr_errors++;
	} else
		printf("verify: %s: %s: %s: removed\n", digest, what, why);
	return 0;
}

/*
 * regcache verify: re-hash every cached blob, drop the bad and the
 * missing, sweep orphans and tmp/ when no daemon runs.  Exit 0 when all
 * was well, 1 when something was found (and removed unless dry), 2 on
 * errors.
 */
int
cache_tool_verify(const struct config *cf, int dry)
{
	struct tool_run	tr;
	int		ret;

	memset(&tr, 0, sizeof(tr));
	tr.tr_cmd = "verify";
	tr.tr_dir = cf->data_dir;
	tr.tr_dry = dry;
	tr.tr_lock_fd = -1;
	if (tool_store_open(tr.tr_cmd, cf->data_dir, dry) == -1)
		return TOOL_EXIT_ERROR;
	tr.tr_buf = xcalloc(1, TOOL_READ_CHUNK);

	/* The sweep first, so the lock is released before the long part. */
	tool_lock(&tr);
	tool_sweep(&tr);
	tool_unlock(&tr);
	if (idx_blob_iter(tool_verify_blob, &tr) == -1) {
		printf("verify: cannot read the index\n");
		tr.tr_errors++;
	}
	printf("verify: %llu blobs checked, %llu bad, %llu missing, ",
	    (unsigned long long)tr.tr_checked, (unsigned long long)tr.tr_bad,
	    (unsigned long long)tr.tr_missing);
	if (!tr.tr_swept)
		printf("orphans not checked\n");
	else if (dry)
		printf("%llu orphans found (-n: nothing removed)\n",
		    (unsigned long long)tr.tr_orphans);
	else
		printf("%llu orphans removed\n",
		    (unsigned long long)tr.tr_orphans);
	if (tr.tr_errors > 0)
		printf("verify: %llu errors\n",
		    (unsigned long long)tr.tr_errors);

	if (tr.tr_errors > 0)
		ret = TOOL_EXIT_ERROR;
	else if (tr.tr_bad + tr.tr_missing + tr.tr_orphans > 0)
		ret = TOOL_EXIT_FOUND;
	else
		ret = TOOL_EXIT_OK;
	free(tr.tr_buf);
	cache_store_close();
	return ret;
}

/* A blob as gc saw it before evicting. */
struct gc_blob {
	char		digest[V2_DIGEST_MAX + 1];
	uint64_t	size;
	int64_t		last_served;
};

struct gc_blobs {
	struct gc_blob	*v;
	size_t		 n, cap;
};

/* idx_blob_iter callback of gc: remember a blob as it was before. */
static int
tool_gc_collect(const char *digest, const struct idx_blob *b, void *arg)
{
	struct gc_blobs	*gs = arg;
	struct gc_blob	*nv;

	if (gs->n == gs->cap) {
		gs->cap = gs->cap > 0 ? gs->cap * 2 : 256;
		if ((nv = reallocarray(gs->v, gs->cap, sizeof(*nv))) == NULL)
			fatal("reallocarray");
		gs->v = nv;
	}
	snprintf(gs->v[gs->n].digest, sizeof(gs->v[gs->n].digest), "%s",
	    digest);
	gs->v[gs->n].size = b->size;
	gs->v[gs->n].last_served = b->last_served;
	gs->n++;
	return 0;
}

/* The order cache_evict_run() takes victims in: least recently served
 * first, then by digest. */
static int
tool_gc_cmp(const void *a, const void *b)
{
	const struct gc_blob	*x = a, *y = b;

	if (x->last_served != y->last_served)
		return x->last_served < y->last_served ? -1 : 1;
	return strcmp(x->digest, y->digest);
}

/*
 * Evict with cache_evict_run() to the low-water mark of cache.max_bytes
 * and cache.max_idle, and print each blob that went (or, dry, would go).
 * Returns the bytes evicted, or -1.
 */
static int64_t
tool_gc_evict(const struct config *cf, int dry, uint64_t *nblobs)
{
	struct gc_blobs	 gs;
	struct idx_blob	 b;
	uint64_t	 target = UINT64_MAX, bytes = 0;
	int64_t		 cutoff = 0, now = (int64_t)time(NULL);
	char		 sz[32], age[32];
	size_t		 i;
	int		 n, gone;

	*nblobs = 0;
	if (cf->cache_max_bytes > 0) {
		target = tool_pct(cf->cache_max_bytes, cf->cache_low_water);
		printf("gc: cache.max_bytes %llu, low water %d%%: evicting "
		    "down to %llu bytes\n",
		    (unsigned long long)cf->cache_max_bytes,
		    cf->cache_low_water, (unsigned long long)target);
	}
	if (cf->cache_max_idle_s > 0) {
		cutoff = now - cf->cache_max_idle_s;
		printf("gc: cache.max_idle %llds: evicting blobs not served "
		    "since then\n", (long long)cf->cache_max_idle_s);
	}
	if (cf->cache_max_bytes == 0 && cutoff == 0) {
		printf("gc: no cache.max_bytes or cache.max_idle configured: "
		    "nothing to evict\n");
		return 0;
	}

	memset(&gs, 0, sizeof(gs));
	if (idx_blob_iter(tool_gc_collect, &gs) == -1 ||
	    (n = cache_evict_run(target, cutoff, dry)) == -1) {
		free(gs.v);
		return -1;
	}
	qsort(gs.v, gs.n, sizeof(*gs.v), tool_gc_cmp);
	for (i = 0; i < gs.n; i++) {
		/* Dry: the first n in eviction order would go.  Otherwise
		 * what went is what the index no longer has. */
		if (dry)
			gone = i < (size_t)n;
		else
			gone = idx_blob_get(gs.v[i].digest, &b) == 1;
		if (!gone)
			continue;
		printf("gc: %s: %s, last served %s ago: %s\n",
		    gs.v[i].digest, tool_fmt_size(gs.v[i].size, sz,
		    sizeof(sz)), tool_fmt_age(gs.v[i].last_served, now, age,
		    sizeof(age)), dry ? "would evict" : "evicted");
		bytes += gs.v[i].size;
		(*nblobs)++;
	}
	free(gs.v);
	return (int64_t)bytes;
}

/*
 * regcache gc: evict to the budget offline, sweep orphans and tmp/ when no
 * daemon runs, print what went and the resulting total.  0, or 2 on
 * errors.
 */
int
cache_tool_gc(const struct config *cf, int dry)
{
	struct tool_run	 tr;
	uint64_t	 nblobs, total;
	int64_t		 bytes;
	char		 sz[32];

	memset(&tr, 0, sizeof(tr));
	tr.tr_cmd = "gc";
	tr.tr_dir = cf->data_dir;
	tr.tr_dry = dry;
	tr.tr_lock_fd = -1;
	if (tool_store_open(tr.tr_cmd, cf->data_dir, dry) == -1)
		return TOOL_EXIT_ERROR;

	tool_lock(&tr);
	if ((bytes = tool_gc_evict(cf, dry, &nblobs)) == -1) {
		printf("gc: eviction failed\n");
		tr.tr_errors++;
		bytes = 0;
	}
	tool_sweep(&tr);
	tool_unlock(&tr);

	total = idx_total_bytes();
	if (dry)
		total -= (uint64_t)bytes < total ? (uint64_t)bytes : total;
	printf("gc: %s %llu blobs (%llu bytes)", dry ? "would evict" :
	    "evicted", (unsigned long long)nblobs, (unsigned long long)bytes);
	if (tr.tr_swept)
		printf(", %s %llu orphan files (%llu bytes)",
		    dry ? "would remove" : "removed",
		    (unsigned long long)tr.tr_orphans,
		    (unsigned long long)tr.tr_orphan_bytes);
	printf("; the cache %s %llu blobs, %llu bytes (%s)\n",
	    dry ? "would hold" : "holds",
	    (unsigned long long)(idx_blob_count() - (dry ? nblobs : 0)),
	    (unsigned long long)total, tool_fmt_size(total, sz, sizeof(sz)));
	cache_store_close();
	return tr.tr_errors > 0 ? TOOL_EXIT_ERROR : TOOL_EXIT_OK;
}

/*
 * ls: everything is read first, then grouped by repository.
 */
struct ls_repo {
	char		*upstream;
	char		*name;
	size_t		 ntags;
	size_t		 nblobs;
	size_t		 first_tag;	/* index in the sorted tags */
	json_t		*blobs;		/* --json: digests seen in it */
};

struct ls_tag {
	char		*upstream;
	char		*repo;
	char		*tag;
	char		*cls;
	struct idx_tag	 t;
};

struct ls_blob {
	char		  digest[V2_DIGEST_MAX + 1];
	struct idx_blob	  b;
	char		**repos;	/* "upstream\0repo" */
	size_t		  nrepos;
};

struct ls_state {
	struct ls_repo	*repos;
	size_t		 nrepos, repos_cap;
	struct ls_tag	*tags;
	size_t		 ntags, tags_cap;
	struct ls_blob	*blobs;
	size_t		 nblobs, blobs_cap;
	struct ls_blob	*cur;		/* whose repositories are read */
};

/* Make room for one more element in an array of n of cap. */
static void *
ls_grow(void *v, size_t n, size_t *cap, size_t size)
{
	void	*nv;

	if (n < *cap)
		return v;
	*cap = *cap > 0 ? *cap * 2 : 64;
	if ((nv = reallocarray(v, *cap, size)) == NULL)
		fatal("reallocarray");
	return nv;
}

/* Note a repository; ls_load() sorts and merges the duplicates. */
static void
ls_repo_add(struct ls_state *ls, const char *upstream, const char *name)
{
	struct ls_repo	*r;

	ls->repos = ls_grow(ls->repos, ls->nrepos, &ls->repos_cap,
	    sizeof(*ls->repos));
	r = &ls->repos[ls->nrepos++];
	memset(r, 0, sizeof(*r));
	r->upstream = xstrdup(upstream);
	r->name = xstrdup(name);
}

/* idx_tag_iter callback: copy a tag and note its repository. */
static int
ls_collect_tag(const struct idx_tag_key *k, const struct idx_tag *t,
    void *arg)
{
	struct ls_state	*ls = arg;
	struct ls_tag	*lt;

	ls->tags = ls_grow(ls->tags, ls->ntags, &ls->tags_cap,
	    sizeof(*ls->tags));
	lt = &ls->tags[ls->ntags++];
	lt->upstream = xstrdup(k->upstream);
	lt->repo = xstrdup(k->repo);
	lt->tag = xstrdup(k->tag);
	lt->cls = xstrdup(k->accept_class != NULL ? k->accept_class : "");
	lt->t = *t;
	ls_repo_add(ls, k->upstream, k->repo);
	return 0;
}

/* idx_blob_iter callback: copy a blob's record. */
static int
ls_collect_blob(const char *digest, const struct idx_blob *b, void *arg)
{
	struct ls_state	*ls = arg;
	struct ls_blob	*lb;

	ls->blobs = ls_grow(ls->blobs, ls->nblobs, &ls->blobs_cap,
	    sizeof(*ls->blobs));
	lb = &ls->blobs[ls->nblobs++];
	memset(lb, 0, sizeof(*lb));
	snprintf(lb->digest, sizeof(lb->digest), "%s", digest);
	lb->b = *b;
	return 0;
}

/* idx_repo_iter callback: a repository the current blob was seen in. */
static int
ls_collect_pair(const char *upstream, const char *repo, void *arg)
{
	struct ls_state	*ls = arg;
	struct ls_blob	*lb = ls->cur;
	size_t		 ulen = strlen(upstream), rlen = strlen(repo);
	char		**nv;

	if ((nv = reallocarray(lb->repos, lb->nrepos + 1,
	    sizeof(*nv))) == NULL)
		fatal("reallocarray");
	lb->repos = nv;
	lb->repos[lb->nrepos] = xcalloc(1, ulen + rlen + 2);
	memcpy(lb->repos[lb->nrepos], upstream, ulen + 1);
	memcpy(lb->repos[lb->nrepos] + ulen + 1, repo, rlen + 1);
	lb->nrepos++;
	ls_repo_add(ls, upstream, repo);
	return 0;
}

/* Repositories by upstream, then name. */
static int
ls_repo_cmp(const void *a, const void *b)
{
	const struct ls_repo	*x = a, *y = b;
	int			 c;

	if ((c = strcmp(x->upstream, y->upstream)) != 0)
		return c;
	return strcmp(x->name, y->name);
}

/* Tags by repository, tag, then Accept class, as the index keys them. */
static int
ls_tag_cmp(const void *a, const void *b)
{
	const struct ls_tag	*x = a, *y = b;
	int			 c;

	if ((c = strcmp(x->upstream, y->upstream)) != 0 ||
	    (c = strcmp(x->repo, y->repo)) != 0 ||
	    (c = strcmp(x->tag, y->tag)) != 0)
		return c;
	return strcmp(x->cls, y->cls);
}

/* The repository (upstream, name), which ls_collect_* added. */
static struct ls_repo *
ls_repo_find(struct ls_state *ls, const char *upstream, const char *name)
{
	struct ls_repo	key;

	key.upstream = (char *)(uintptr_t)upstream;
	key.name = (char *)(uintptr_t)name;
	return bsearch(&key, ls->repos, ls->nrepos, sizeof(*ls->repos),
	    ls_repo_cmp);
}

/*
 * Read tags, blobs and the repositories of each blob, then sort and merge
 * the repositories and count what each holds.  0 or -1.
 */
static int
ls_load(struct ls_state *ls)
{
	struct ls_repo	*r;
	size_t		 i, j, k;

	if (idx_tag_iter(ls_collect_tag, ls) == -1 ||
	    idx_blob_iter(ls_collect_blob, ls) == -1)
		return -1;
	for (i = 0; i < ls->nblobs; i++) {
		ls->cur = &ls->blobs[i];
		if (idx_repo_iter(ls->blobs[i].digest, ls_collect_pair,
		    ls) == -1)
			return -1;
	}
	ls->cur = NULL;

	qsort(ls->repos, ls->nrepos, sizeof(*ls->repos), ls_repo_cmp);
	for (i = 0, j = 0; i < ls->nrepos; i++) {
		if (j > 0 && ls_repo_cmp(&ls->repos[j - 1],
		    &ls->repos[i]) == 0) {
			free(ls->repos[i].upstream);
			free(ls->repos[i].name);
			continue;
		}
		ls->repos[j++] = ls->repos[i];
	}
	ls->nrepos = j;

	qsort(ls->tags, ls->ntags, sizeof(*ls->tags), ls_tag_cmp);
	for (i = 0; i < ls->ntags; i++) {
		if ((r = ls_repo_find(ls, ls->tags[i].upstream,
		    ls->tags[i].repo)) == NULL)
			continue;
		if (r->ntags++ == 0)
			r->first_tag = i;
	}
	for (i = 0; i < ls->nblobs; i++)
		for (k = 0; k < ls->blobs[i].nrepos; k++) {
			r = ls_repo_find(ls, ls->blobs[i].repos[k],
			    ls->blobs[i].repos[k] +
			    strlen(ls->blobs[i].repos[k]) + 1);
			if (r != NULL)
				r->nblobs++;
		}
	return 0;
}

/* Free what ls_load() read. */
static void
ls_free(struct ls_state *ls)
{
	size_t	i, k;

	for (i = 0; i < ls->nrepos; i++) {
		free(ls->repos[i].upstream);
		free(ls->repos[i].name);
		json_decref(ls->repos[i].blobs);
	}
	for (i = 0; i < ls->ntags; i++) {
		free(ls->tags[i].upstream);
		free(ls->tags[i].repo);
		free(ls->tags[i].tag);
		free(ls->tags[i].cls);
	}
	for (i = 0; i < ls->nblobs; i++) {
		for (k = 0; k < ls->blobs[i].nrepos; k++)
			free(ls->blobs[i].repos[k]);
		free(ls->blobs[i].repos);
	}
	free(ls->repos);
	free(ls->tags);
	free(ls->blobs);
	memset(ls, 0, sizeof(*ls));
}

/* A string, or null when jansson refuses it (not UTF-8). */
static json_t *
ls_json_str(const char *s)
{
	json_t	*j;

	if ((j = json_string(s)) == NULL)
		j = json_null();
	return j;
}

/* The whole listing as one JSON document on stdout; 0 or -1. */
static int
ls_print_json(struct ls_state *ls, const char *dir)
{
	json_t		*root, *repos, *blobs, *tags, *o, *br;
	struct ls_repo	*r;
	struct ls_tag	*lt;
	struct ls_blob	*lb;
	int64_t		 now_ms = (int64_t)time(NULL) * 1000;
	size_t		 i, k;
	const char	*up, *name;
	int		 rc;

	root = json_object();
	repos = json_array();
	blobs = json_array();
	json_object_set_new(root, "data_dir", ls_json_str(dir));
	for (i = 0; i < ls->nrepos; i++)
		ls->repos[i].blobs = json_array();
	for (i = 0; i < ls->nblobs; i++) {
		lb = &ls->blobs[i];
		br = json_array();
		for (k = 0; k < lb->nrepos; k++) {
			up = lb->repos[k];
			name = up + strlen(up) + 1;
			json_array_append_new(br, json_pack("{s:o, s:o}",
			    "upstream", ls_json_str(up), "name",
			    ls_json_str(name)));
			if ((r = ls_repo_find(ls, up, name)) != NULL)
				json_array_append_new(r->blobs,
				    ls_json_str(lb->digest));
		}
		json_array_append_new(blobs, json_pack(
		    "{s:s, s:I, s:o, s:I, s:I, s:I, s:o}",
		    "digest", lb->digest,
		    "size", (json_int_t)lb->b.size,
		    "media_type", lb->b.media_type[0] != '\0' ?
		    ls_json_str(lb->b.media_type) : json_null(),
		    "stored", (json_int_t)lb->b.stored,
		    "last_served", (json_int_t)lb->b.last_served,
		    "hits", (json_int_t)lb->b.hits,
		    "repositories", br));
	}
	for (i = 0; i < ls->nrepos; i++) {
		r = &ls->repos[i];
		tags = json_array();
		for (k = 0; k < r->ntags; k++) {
			lt = &ls->tags[r->first_tag + k];
			json_array_append_new(tags, json_pack(
			    "{s:o, s:o, s:o, s:o, s:b, s:I, s:I}",
			    "tag", ls_json_str(lt->tag),
			    "accept_class", ls_json_str(lt->cls),
			    "digest", lt->t.negative ? json_null() :
			    ls_json_str(lt->t.digest),
			    "media_type", lt->t.media_type[0] != '\0' ?
			    ls_json_str(lt->t.media_type) : json_null(),
			    "negative", lt->t.negative,
			    "fetched_ms", (json_int_t)lt->t.fetched_ms,
			    "age_s", (json_int_t)((now_ms -
			    lt->t.fetched_ms) / 1000)));
		}
		o = json_pack("{s:o, s:o, s:o, s:O}",
		    "upstream", ls_json_str(r->upstream),
		    "name", ls_json_str(r->name),
		    "tags", tags,
		    "blobs", r->blobs);
		json_array_append_new(repos, o);
	}
	json_object_set_new(root, "repositories", repos);
	json_object_set_new(root, "blobs", blobs);
	json_object_set_new(root, "totals", json_pack("{s:I, s:I, s:I, s:I}",
	    "repositories", (json_int_t)ls->nrepos,
	    "tags", (json_int_t)ls->ntags,
	    "blobs", (json_int_t)idx_blob_count(),
	    "bytes", (json_int_t)idx_total_bytes()));
	rc = json_dumpf(root, stdout, JSON_INDENT(2));
	json_decref(root);
	putchar('\n');
	return rc;
}

/* Widen *w to fit s. */
static void
ls_width(int *w, const char *s)
{
	size_t	len = strlen(s);

	if (len > (size_t)*w && len < 1024)
		*w = (int)len;
}

/* Two tables for people: repositories with their tags, then blobs. */
static void
ls_print_table(struct ls_state *ls)
{
	struct ls_repo	*r;
	struct ls_tag	*lt;
	struct ls_blob	*lb;
	int64_t		 now = (int64_t)time(NULL);
	char		 repo[V2_NAME_MAX * 2 + 2], sz[32], a1[32], a2[32];
	int		 wr = 10, wt = 3, wd = 6, wm = 10, wbd = 6;
	size_t		 i, k;

	for (i = 0; i < ls->nrepos; i++) {
		snprintf(repo, sizeof(repo), "%s/%s", ls->repos[i].upstream,
		    ls->repos[i].name);
		ls_width(&wr, repo);
	}
	for (i = 0; i < ls->ntags; i++) {
		ls_width(&wt, ls->tags[i].tag);
		ls_width(&wd, ls->tags[i].t.digest);
		ls_width(&wm, ls->tags[i].t.media_type);
	}
	for (i = 0; i < ls->nblobs; i++)
		ls_width(&wbd, ls->blobs[i].digest);

	printf("%-*s  %-*s  %-5s  %-*s  %-*s  %s\n", wr, "REPOSITORY", wt,
	    "TAG", "CLASS", wd, "DIGEST", wm, "MEDIA TYPE", "AGE");
	for (i = 0; i < ls->nrepos; i++) {
		r = &ls->repos[i];
		snprintf(repo, sizeof(repo), "%s/%s", r->upstream, r->name);
		if (r->ntags == 0)
			printf("%-*s  %-*s  %-5s  %-*s  %-*s  %s\n", wr, repo,
			    wt, "-", "-", wd, "(blobs only)", wm, "-", "-");
		for (k = 0; k < r->ntags; k++) {
			lt = &ls->tags[r->first_tag + k];
			printf("%-*s  %-*s  %-5s  %-*s  %-*s  %s\n", wr, repo,
			    wt, lt->tag, lt->cls[0] != '\0' ? lt->cls : "-",
			    wd, lt->t.negative ? "(not found upstream)" :
			    lt->t.digest, wm, lt->t.media_type[0] != '\0' ?
			    lt->t.media_type : "-",
			    tool_fmt_age(lt->t.fetched_ms / 1000, now, a2,
			    sizeof(a2)));
		}
	}

	printf("\n%-*s  %10s  %6s  %6s  %6s  %s\n", wbd, "BLOB", "SIZE",
	    "STORED", "SERVED", "HITS", "REPOSITORIES");
	for (i = 0; i < ls->nblobs; i++) {
		lb = &ls->blobs[i];
		printf("%-*s  %10s  %6s  %6s  %6llu  ", wbd, lb->digest,
		    tool_fmt_size(lb->b.size, sz, sizeof(sz)),
		    tool_fmt_age(lb->b.stored, now, a1, sizeof(a1)),
		    tool_fmt_age(lb->b.last_served, now, a2, sizeof(a2)),
		    (unsigned long long)lb->b.hits);
		for (k = 0; k < lb->nrepos; k++)
			printf("%s%s/%s", k > 0 ? ", " : "", lb->repos[k],
			    lb->repos[k] + strlen(lb->repos[k]) + 1);
		printf("%s\n", lb->nrepos == 0 ? "-" : "");
	}
	printf("\n%zu repositories, %zu tags, %llu blobs, %llu bytes (%s)\n",
	    ls->nrepos, ls->ntags, (unsigned long long)idx_blob_count(),
	    (unsigned long long)idx_total_bytes(),
	    tool_fmt_size(idx_total_bytes(), sz, sizeof(sz)));
}

/*
 * regcache ls: open the index read-only and list repositories with their
 * tags, and blobs with the repositories they were seen in.  0, or 2 on
 * errors.
 */
int
cache_tool_ls(const struct config *cf, int json)
{
	struct ls_state	ls;
	int		ret = TOOL_EXIT_OK;

	memset(&ls, 0, sizeof(ls));
	if (tool_store_open("ls", cf->data_dir, 1) == -1)
		return TOOL_EXIT_ERROR;
	if (ls_load(&ls) == -1) {
		fprintf(stderr, "regcache ls: cannot read the index\n");
		ret = TOOL_EXIT_ERROR;
	} else if (json) {
		if (ls_print_json(&ls, cf->data_dir) == -1)
			ret = TOOL_EXIT_ERROR;
	} else
		ls_print_table(&ls);
	ls_free(&ls);
	cache_store_close();
	if (fflush(stdout) == EOF || ferror(stdout))
		ret = TOOL_EXIT_ERROR;
	return ret;
}
