/*
 * The blob files of the cache.  Layout under the data directory:
 *
 *	blobs/sha256/ab/ab12...ef	one file per digest, exact bytes
 *	tmp/				fills in progress, removed at start
 *	index/				the LMDB index (cache_index.c)
 *
 * A blob becomes visible in a fixed order that survives a crash at any
 * point: the tmp file is written and fdatasync'ed, renamed into place,
 * the directory fsync'ed, and only then is the index entry committed.
 * So an index entry never points at a missing or partial file; a crash
 * can at worst leave a complete file the index does not know, which
 * `regcache gc` removes.
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

#include "regcache.h"

static char	*store_dir;	/* the data directory */
static uint64_t	 tmp_seq;
static int	 lock_fd = -1;	/* DATA/regcache.lock, held by the daemon */

/* The path of digest's file: DATA/blobs/<alg>/<2 hex>/<hex>. */
int
cache_blob_path(const char *digest, char *buf, size_t len)
{
	const char	*hex = strchr(digest, ':');
	int		 n;

	if (hex == NULL || strlen(hex + 1) < 2)
		return -1;
	n = snprintf(buf, len, "%s/blobs/%.*s/%.2s/%s", store_dir,
	    (int)(hex - digest), digest, hex + 1, hex + 1);
	return n < 0 || (size_t)n >= len ? -1 : 0;
}

/* Remove every file in dir (not recursing); returns how many. */
static int
store_empty_dir(const char *dir)
{
	DIR		*d;
	struct dirent	*de;
	char		 path[PATH_MAX + 256];
	int		 n = 0;

	if ((d = opendir(dir)) == NULL)
		return 0;
	while ((de = readdir(d)) != NULL) {
		if (de->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
		if (unlink(path) == 0)
			n++;
	}
	closedir(d);
	return n;
}

/*
 * Open the store under data_dir.  The daemon (CACHE_STORE_DAEMON) locks the
 * directory, creates its directories and clears tmp/ of fills a previous
 * run left; tools open it read-write (CACHE_STORE_RW, no lock: a daemon
 * may be running) or read-only (CACHE_STORE_RDONLY).
 */
int
cache_store_open(const char *data_dir, int mode, char *err, size_t errlen)
{
	char	path[PATH_MAX];
	int	n;

	free(store_dir);
	store_dir = xstrdup(data_dir);
	if (mode == CACHE_STORE_DAEMON) {
		/* One daemon per data directory; tools see it is running. */
		snprintf(path, sizeof(path), "%s/regcache.lock", data_dir);
		lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0640);
		if (lock_fd == -1 || flock(lock_fd, LOCK_EX | LOCK_NB) == -1) {
			snprintf(err, errlen, "%s: %s", path, errno ==
			    EWOULDBLOCK ? "another regcache uses this data "
			    "directory" : strerror(errno));
			if (lock_fd != -1)
				close(lock_fd);
			lock_fd = -1;
			return -1;
		}
		snprintf(path, sizeof(path), "%s/blobs", data_dir);
		if (mkdir_p(path, 0750) == -1) {
			snprintf(err, errlen, "%s: %s", path, strerror(errno));
			return -1;
		}
		snprintf(path, sizeof(path), "%s/tmp", data_dir);
		if (mkdir_p(path, 0750) == -1) {
			snprintf(err, errlen, "%s: %s", path, strerror(errno));
			return -1;
		}
		if ((n = store_empty_dir(path)) > 0)
			log_info("store: removed %d unfinished fill%s from "
			    "tmp/", n, n == 1 ? "" : "s");
	}
	snprintf(path, sizeof(path), "%s/index", data_dir);
	return idx_open(path, mode == CACHE_STORE_RDONLY, err, errlen);
}

void
cache_store_close(void)
{
	idx_close();
	if (lock_fd != -1)
		close(lock_fd);
	lock_fd = -1;
	free(store_dir);
	store_dir = NULL;
}

/* A new tmp file for a fill of digest; its path goes to *path. */
int
cache_tmp_create(const char *digest, char **path)
{
	const char	*hex = strchr(digest, ':');
	int		 fd;

	xasprintf(path, "%s/tmp/%.16s.%ld.%llu", store_dir,
	    hex != NULL ? hex + 1 : digest, (long)getpid(),
	    (unsigned long long)++tmp_seq);
	fd = open(*path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0640);
	if (fd == -1) {
		free(*path);
		*path = NULL;
	}
	return fd;
}

/* fsync a directory so a rename in it is durable. */
static int
store_sync_dir(const char *file)
{
	char	dir[PATH_MAX], *slash;
	int	fd, rc;

	snprintf(dir, sizeof(dir), "%s", file);
	if ((slash = strrchr(dir, '/')) == NULL)
		return 0;
	*slash = '\0';
	if ((fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) == -1)
		return -1;
	rc = fsync(fd);
	close(fd);
	return rc;
}

/*
 * The file half of publishing: sync the tmp file, rename it into place,
 * sync the directory.  No index access, so the publish worker runs it.
 * On failure the tmp file is removed.
 */
static int
store_publish_files(int fd, const char *tmp, const char *path, int *err)
{
	char	dir[PATH_MAX], *slash;

	snprintf(dir, sizeof(dir), "%s", path);
	if ((slash = strrchr(dir, '/')) != NULL)
		*slash = '\0';
	if (mkdir_p(dir, 0750) == -1 || fdatasync(fd) == -1 ||
	    rename(tmp, path) == -1) {
		*err = errno;
		unlink(tmp);
		return -1;
	}
	*err = store_sync_dir(path) == -1 ? errno : 0;
	return 0;
}

/* The index half: from here on the blob is visible. */
static int
store_publish_index(const char *path, const char *digest, uint64_t size,
    const char *media_type, const char *upstream, const char *repo)
{
	struct idx_blob	 b;

	memset(&b, 0, sizeof(b));
	b.size = size;
	b.stored = time(NULL);
	b.last_served = b.stored;
	snprintf(b.media_type, sizeof(b.media_type), "%s",
	    media_type != NULL ? media_type : "");
	if (idx_blob_put(digest, &b, upstream, repo) == -1) {
		/* The file goes too: a file the index does not know is
		 * only waste. */
		unlink(path);
		return -1;
	}
	return 0;
}

/*
 * Make a verified tmp file the blob digest: sync it, rename it into place,
 * sync the directory, then commit the index entry (in that order; see the
 * top of this file).  On failure the tmp file is removed.  This blocks on
 * the disk: fills use cache_publish_async, small manifests this.
 */
int
cache_publish(int fd, const char *tmp, const char *digest, uint64_t size,
    const char *media_type, const char *upstream, const char *repo)
{
	char	path[PATH_MAX];
	int	err;

	if (cache_blob_path(digest, path, sizeof(path)) == -1) {
		unlink(tmp);
		return -1;
	}
	if (store_publish_files(fd, tmp, path, &err) == -1) {
		errno = err;
		log_warn("store: cannot publish %s", digest);
		return -1;
	}
	if (err != 0) {
		errno = err;
		log_warn("store: fsync of the directory of %s", path);
	}
	return store_publish_index(path, digest, size, media_type, upstream,
	    repo);
}

/*
 * Publishing a fill in the background.  fdatasync of a large blob can take
 * seconds on a busy disk, which must not stop the event loop: one worker
 * thread does the file half (sync, rename, sync the directory) and reports
 * through a pipe; the index half runs back on the loop, where the index
 * lives.  The caller's completion is looked up by its id.
 */
struct publish_job {
	struct worker_job job;		/* first: see worker.c */
	int		 fd;
	char		*tmp;
	char		 path[PATH_MAX];
	char		 digest[V2_DIGEST_MAX + 1];
	uint64_t	 size;
	char		*upstream;
	char		*repo;
	uint64_t	 id;
	void		(*done)(uint64_t, int);
	int		 ok;
	int		 err;
};

/* On the worker thread: the file half. */
static void
publish_files(struct worker_job *wj)
{
	struct publish_job	*j = (struct publish_job *)wj;

	j->ok = store_publish_files(j->fd, j->tmp, j->path, &j->err) == 0;
}

/* Back on the loop: the index half and the caller's completion. */
static void
publish_complete(struct worker_job *wj)
{
	struct publish_job	*j = (struct publish_job *)wj;

	if (!j->ok) {
		errno = j->err;
		log_warn("store: cannot publish %s", j->digest);
	} else {
		if (j->err != 0) {
			errno = j->err;
			log_warn("store: fsync of the directory of %s",
			    j->path);
		}
		j->ok = store_publish_index(j->path, j->digest, j->size, NULL,
		    j->upstream, j->repo) == 0;
	}
	j->done(j->id, j->ok);
	free(j->tmp);
	free(j->upstream);
	free(j->repo);
	free(j);
}

/*
 * When no thread can be had, fills are published in place from then on
 * rather than retrying every time.  At shutdown every queued publish is
 * finished: a verified fill ends up stored.
 */
static struct worker publish_worker = {
	WORKER_INIT(publish_worker),
	.w_subsystem = "store",
	.w_name = "publish",
	.w_drain = 1,
	.w_run = publish_files,
	.w_complete = publish_complete,
	.w_discard = NULL,
};

/*
 * Publish a verified fill in the background; done(id, ok) runs on the
 * loop afterwards.  fd must stay open until then.  Falls back to doing it
 * here when no thread can be had.
 */
void
cache_publish_async(int fd, const char *tmp, const char *digest,
    uint64_t size, const char *upstream, const char *repo, uint64_t id,
    void (*done)(uint64_t, int))
{
	struct publish_job	*j;

	if (worker_start(&publish_worker) == -1) {
		done(id, cache_publish(fd, tmp, digest, size, NULL, upstream,
		    repo) == 0);
		return;
	}
	j = xcalloc(1, sizeof(*j));
	j->fd = fd;
	j->tmp = xstrdup(tmp);
	if (cache_blob_path(digest, j->path, sizeof(j->path)) == -1)
		fatalx("%s: bad digest", __func__);
	snprintf(j->digest, sizeof(j->digest), "%s", digest);
	j->size = size;
	j->upstream = xstrdup(upstream);
	j->repo = xstrdup(repo);
	j->id = id;
	j->done = done;
	worker_queue(&publish_worker, &j->job);
}

/* Finish every queued publish, then stop the worker (at shutdown). */
void
cache_publish_drain(void)
{
	worker_stop(&publish_worker);
}

/*
 * Open a cached blob for reading.  Returns the fd and fills *b, or -1 when
 * it is not cached.  An index entry whose file went missing (removed by
 * hand) is dropped, so the blob is fetched again.
 */
int
cache_blob_open(const char *digest, struct idx_blob *b)
{
	char		path[PATH_MAX];
	struct stat	st;
	int		fd;

	if (idx_blob_get(digest, b) != 0)
		return -1;
	if (cache_blob_path(digest, path, sizeof(path)) == -1)
		return -1;
	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) == -1) {
		log_warnx("store: %s is indexed but its file is gone: "
		    "dropping the entry", digest);
		idx_blob_del(digest);
		return -1;
	}
	if (fstat(fd, &st) == -1 || (uint64_t)st.st_size != b->size) {
		log_warnx("store: %s has the wrong size on disk: dropping it",
		    digest);
		close(fd);
		cache_blob_remove(digest);
		return -1;
	}
	return fd;
}

/* Remove a blob: the index entry first, then the file (readers that have
 * it open keep their bytes). */
int
cache_blob_remove(const char *digest)
{
	char	path[PATH_MAX];

	/* The file goes only with its entry: an entry kept by a failed
	 * delete must not point at nothing. */
	if (idx_blob_del(digest) == -1)
		return -1;
	if (cache_blob_path(digest, path, sizeof(path)) == -1)
		return -1;
	if (unlink(path) == -1 && errno != ENOENT) {
		log_warn("store: unlink %s", path);
		return -1;
	}
	return 0;
}

/* Read a whole small cached blob (a manifest) into memory. */
int
cache_blob_read(const char *digest, struct evbuffer *out, struct idx_blob *b,
    uint64_t max)
{
	int	fd;

	if ((fd = cache_blob_open(digest, b)) == -1)
		return -1;
	if (b->size > max || fd_read_into(fd, 0, (size_t)b->size, out) == -1) {
		close(fd);
		return -1;
	}
	close(fd);
	return 0;
}

/* The data directory, for tools. */
const char *
cache_store_dir(void)
{
	return store_dir;
}
