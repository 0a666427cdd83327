/*
 * The byte budget: when the cache passes cache.high_water percent of
 * cache.max_bytes, the least recently served blobs go until it is under
 * cache.low_water percent; blobs idle longer than cache.max_idle go too.
 * This runs off the request path, from a timer, and right after a fill
 * is stored or announced, so usage stays within one blob of the budget.
 * A blob that is being read keeps its bytes: the reader's descriptor
 * outlives the unlink.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "regcache.h"

#define EVICT_INTERVAL_S	10

struct victim {
	int64_t		last_served;
	uint64_t	size;
	char		digest[V2_DIGEST_MAX + 1];
};

struct victims {
	struct victim	*v;
	size_t		 n, cap;
};

static struct event	*evict_timer;

static int
victim_collect(const char *digest, const struct idx_blob *b, void *arg)
{
	struct victims	*vs = arg;

	if (vs->n == vs->cap) {
		vs->cap = vs->cap ? vs->cap * 2 : 256;
		if ((vs->v = realloc(vs->v, vs->cap * sizeof(*vs->v))) == NULL)
			fatal("realloc");
	}
	vs->v[vs->n].last_served = b->last_served;
	vs->v[vs->n].size = b->size;
	snprintf(vs->v[vs->n].digest, sizeof(vs->v[vs->n].digest), "%s",
	    digest);
	vs->n++;
	return 0;
}

static int
victim_cmp(const void *a, const void *b)
{
	const struct victim	*x = a, *y = b;

	if (x->last_served != y->last_served)
		return x->last_served < y->last_served ? -1 : 1;
	return strcmp(x->digest, y->digest);
}

/*
 * Remove least recently served blobs until the cache holds at most target
 * bytes, and every blob last served before idle_cutoff (0: none).  With
 * dry set, only count.  Returns how many blobs went (or would go).
 */
int
cache_evict_run(uint64_t target, int64_t idle_cutoff, int dry)
{
	struct victims	 vs;
	uint64_t	 total;
	size_t		 i;
	int		 n = 0;

	idx_resync();	/* totals right even after regcache gc or verify */
	total = idx_total_bytes();

	if (total <= target && idle_cutoff == 0)
		return 0;
	memset(&vs, 0, sizeof(vs));
	idx_flush_touches();
	if (idx_blob_iter(victim_collect, &vs) == -1) {
		free(vs.v);
		return -1;
	}
	qsort(vs.v, vs.n, sizeof(*vs.v), victim_cmp);
	for (i = 0; i < vs.n; i++) {
		if (total <= target && (idle_cutoff == 0 ||
		    vs.v[i].last_served >= idle_cutoff))
			break;
		if (!dry) {
			if (cache_blob_remove(vs.v[i].digest) == -1)
				continue;
			log_debug("evict: %s, %llu bytes", vs.v[i].digest,
			    (unsigned long long)vs.v[i].size);
			stats.evictions++;
			stats.evicted_bytes += vs.v[i].size;
		}
		total -= vs.v[i].size < total ? vs.v[i].size : total;
		n++;
	}
	free(vs.v);
	if (n > 0 && !dry)
		log_info("evicted %d blob%s; the cache now holds %llu bytes",
		    n, n == 1 ? "" : "s", (unsigned long long)idx_total_bytes());
	return n;
}

static uint64_t
pct(uint64_t v, int p)
{
	return v / 100 * (uint64_t)p + v % 100 * (uint64_t)p / 100;
}

/* The largest blob worth caching: one that fits under the low water mark
 * (a bigger one would evict everything and then itself). */
uint64_t
cache_blob_limit(void)
{
	if (conf->cache_max_bytes == 0)
		return UINT64_MAX;
	return pct(conf->cache_max_bytes, conf->cache_low_water);
}

/* Before a fill of size bytes: evict so that it fits under the high water
 * mark together with the other fills in flight. */
void
cache_make_room(uint64_t size)
{
	uint64_t	high, low, need;

	if (conf->cache_max_bytes == 0)
		return;
	high = pct(conf->cache_max_bytes, conf->cache_high_water);
	low = pct(conf->cache_max_bytes, conf->cache_low_water);
	need = fill_bytes_inflight;	/* includes this fill already */
	(void)size;
	if (idx_total_bytes() + need <= high)
		return;
	cache_evict_run(need >= low ? 0 : low - need, 0, 0);
}

/* After a store: back under the budget if the store took us over. */
void
cache_after_store(void)
{
	if (conf->cache_max_bytes == 0)
		return;
	if (idx_total_bytes() + fill_bytes_inflight >
	    pct(conf->cache_max_bytes, conf->cache_high_water))
		cache_make_room(0);
}

static void
cache_evict_tick(evutil_socket_t fd, short what, void *arg)
{
	int64_t	cutoff = 0;

	idx_resync();	/* regcache gc or verify may have removed blobs */
	idx_flush_touches();
	if (conf->cache_max_idle_s > 0)
		cutoff = (int64_t)time(NULL) - conf->cache_max_idle_s;
	if (conf->cache_max_bytes > 0 && idx_total_bytes() +
	    fill_bytes_inflight > pct(conf->cache_max_bytes,
	    conf->cache_high_water))
		cache_make_room(0);
	if (cutoff > 0)
		cache_evict_run(UINT64_MAX, cutoff, 0);
}

/* The periodic work: batched access times and eviction. */
int
cache_evict_start(void)
{
	struct timeval	tv = { EVICT_INTERVAL_S, 0 };

	if ((evict_timer = event_new(ev_base, -1, EV_PERSIST,
	    cache_evict_tick, NULL)) == NULL)
		return -1;
	event_add(evict_timer, &tv);
	cache_after_store();
	return 0;
}

void
cache_evict_stop(void)
{
	if (evict_timer != NULL)
		event_free(evict_timer);
	evict_timer = NULL;
}
