/* The unit allocator.
 *
 * Each area is cut into chunks; a chunk is owned by one allocation context
 * (host slot, context, incarnation), claimed by CAS on its owner word.
 * Only the owner sets bits in a chunk's bitmap, so it needs no CAS for
 * that: it finds clear bits, journals the extent, then sets them with
 * fetch_or.  Anyone may clear bits (fetch_and) when an object dies.  A
 * reaper therefore knows that every set bit in a dead context's chunks was
 * set by that context.
 *
 * Since only the owner allocates in a chunk, units others free there are
 * lost to everyone else until the owner gives the chunk back: an owner
 * releases its entirely free chunks when a context is put down and when
 * its daemon trims idle contexts, and an allocation that finds no chunk
 * waits a bounded time for such chunks (and for ORPHAN chunks to become
 * adoptable) before it reports the area full. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "alloc.h"
#include "cache.h"
#include "host.h"

/* How often an allocation that waits for chunks looks again. */
#define CLAIM_POLL_MS 20

static void sleep_ms(uint32_t ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

static uint64_t unit_bytes(const struct area *a)
{
	return 1ULL << a->g.unit_shift;
}

uint64_t alloc_round(struct daxfs *fs, int which, uint64_t len)
{
	uint64_t u = unit_bytes(area_of(fs, which));

	return (len + u - 1) & ~(u - 1);
}

static _Atomic uint64_t *chunk_words(struct area *a, uint64_t chunk)
{
	return a->bitmap + chunk * a->words_per_chunk;
}

static int actx_push(struct alloc_ctx *ac, uint64_t chunk)
{
	if (ac->n == ac->cap) {
		uint32_t cap = ac->cap ? ac->cap * 2 : 16;
		uint64_t *p = realloc(ac->chunks, cap * sizeof(*p));

		if (!p)
			return -ENOMEM;
		ac->chunks = p;
		ac->cap = cap;
	}
	ac->chunks[ac->n++] = chunk;
	return 0;
}

static uint64_t ctx_owner(struct daxfs *fs, int ctx)
{
	return DFS_CHUNK(DFS_CHUNK_OWNED, fs->slot + 1, ctx, fs->inc);
}

static uint64_t my_owner(struct jctx *j)
{
	return DFS_CHUNK(DFS_CHUNK_OWNED, j->slot + 1, j->ctx, j->fs->inc);
}

/* Relaxed loads suffice: no one sets bits in a chunk but its owner, and
 * whoever takes the chunk after us reads the words after our release CAS
 * of the owner word, so it sees at least the values we saw. */
static bool chunk_empty(struct area *a, uint64_t chunk)
{
	_Atomic uint64_t *w = chunk_words(a, chunk);

	for (uint64_t i = 0; i < a->words_per_chunk; i++)
		if (atomic_load_explicit(&w[i], memory_order_relaxed))
			return false;
	return true;
}

static uint64_t chunk_free_units(struct area *a, uint64_t chunk)
{
	_Atomic uint64_t *w = chunk_words(a, chunk);
	uint64_t used = 0;

	for (uint64_t i = 0; i < a->words_per_chunk; i++)
		used += (uint64_t)__builtin_popcountll(
			atomic_load_explicit(&w[i], memory_order_relaxed));
	return a->units_per_chunk - used;
}

/* Learn which chunks this context already owns (after a restart the
 * region remembers, the process does not). */
static int actx_load(struct jctx *j, int which)
{
	struct alloc_ctx *ac = &j->fs->actx[j->ctx][which];
	struct area *a = area_of(j->fs, which);
	uint64_t me = my_owner(j);

	if (ac->loaded)
		return 0;
	ac->n = 0;
	ac->cur = 0;
	ac->hint = 0;
	for (uint64_t c = 0; c < a->g.nchunks; c++)
		if (atomic_load_explicit(&a->owners[c], memory_order_acquire) == me &&
		    actx_push(ac, c) < 0)
			return -ENOMEM;
	ac->loaded = true;
	return 0;
}

/* Longest run search from bitmap word from on: first run of at least min
 * units (prefers want). */
static bool chunk_find(struct area *a, uint64_t chunk, uint64_t from,
		       uint64_t want, uint64_t min, uint64_t *first,
		       uint64_t *count)
{
	_Atomic uint64_t *w = chunk_words(a, chunk);
	uint64_t start = 0, run = 0, best = 0, best_start = 0;

	for (uint64_t i = from; i < a->words_per_chunk; i++) {
		uint64_t v = atomic_load_explicit(&w[i], memory_order_relaxed);

		if (v == 0 && run + 64 <= want) {
			if (!run)
				start = i * 64;
			run += 64;
		} else if (v == ~0ULL) {
			run = 0;
		} else {
			for (unsigned b = 0; b < 64; b++) {
				if (v & (1ULL << b)) {
					run = 0;
					continue;
				}
				if (!run)
					start = i * 64 + b;
				run++;
				if (run >= want)
					break;
			}
		}
		if (run > best) {
			best = run;
			best_start = start;
		}
		if (run >= want)
			break;
	}
	if (best < min)
		return false;
	*first = best_start;
	*count = best < want ? best : want;
	return true;
}

static struct orphan_watch *orphan_clock(struct daxfs *fs, int which)
{
	if (!fs->orphan_seen[which])
		fs->orphan_seen[which] = calloc(area_of(fs, which)->g.nchunks,
						sizeof(struct orphan_watch));
	return fs->orphan_seen[which];
}

/* May we take chunk c?  FREE and RELEASED chunks yes; an ORPHAN chunk
 * only once we have watched it stay orphaned for lease + grace, since the
 * reaped host may have been paused, not dead, and could still write.  The
 * watch is keyed by the owner word: a chunk orphaned by a later reap is
 * watched afresh. */
static bool chunk_takeable(struct daxfs *fs, int which, uint64_t c, uint64_t w)
{
	struct orphan_watch *ow;
	uint64_t now;

	switch (DFS_CHUNK_STATE(w)) {
	case DFS_CHUNK_FREE:
	case DFS_CHUNK_RELEASED:
		return true;
	case DFS_CHUNK_ORPHAN: {
		bool ok = false;

		pthread_mutex_lock(&fs->lock);
		ow = orphan_clock(fs, which);
		now = now_ms();
		if (ow && ow[c].word != w) {
			ow[c].word = w;
			ow[c].since_ms = now;
		} else if (ow) {
			ok = now - ow[c].since_ms >= (uint64_t)fs->lease_ms + fs->grace_ms;
		}
		pthread_mutex_unlock(&fs->lock);
		return ok;
	}
	default:
		return false;
	}
}

/* Map the pages of a chunk we just took into this process at once.  The
 * context fills the chunk next; on a region file each first write to a
 * page would otherwise take a page fault of its own, and on tmpfs those
 * faults are most of the cost of writing fresh memory (one madvise call
 * per chunk is cheaper than a fault per page).  A hint only: the contents
 * are untouched, and if it fails the writes fault the pages in as before.
 * Done once per chunk and process: the pages stay mapped, and walking
 * mapped pages again still costs a good part of a fault each. */
static void chunk_prefault(struct daxfs *fs, int which, uint64_t c)
{
#ifdef MADV_POPULATE_WRITE
	struct area *a = area_of(fs, which);
	uintptr_t pg = (uintptr_t)sysconf(_SC_PAGESIZE);
	uintptr_t p = (uintptr_t)fs->base + a->g.base + (c << a->g.chunk_shift);
	uintptr_t e = p + (1ULL << a->g.chunk_shift);
	uint64_t *done;
	bool first;

	if (fs->readonly || !pg || (pg & (pg - 1)))
		return;
	pthread_mutex_lock(&fs->lock);
	if (!fs->prefaulted[which])
		fs->prefaulted[which] = calloc((a->g.nchunks + 63) / 64,
					       sizeof(uint64_t));
	done = fs->prefaulted[which];
	first = done && !(done[c / 64] & (1ULL << (c % 64)));
	if (first)
		done[c / 64] |= 1ULL << (c % 64);
	pthread_mutex_unlock(&fs->lock);
	if (!first)
		return;
	p &= ~(pg - 1);
	e = (e + pg - 1) & ~(pg - 1);
	(void)madvise((void *)p, e - p, MADV_POPULATE_WRITE);
#else
	(void)fs;
	(void)which;
	(void)c;
#endif
}

/* Claim n consecutive chunks (n = 1 for ordinary allocations).  A run of
 * several must be empty as a whole (a RELEASED or ORPHAN chunk may still
 * hold live units; once it is not owned its bits are only ever cleared, so
 * a check before the CAS holds after it). */
static int chunk_claim(struct jctx *j, int which, uint64_t n, uint64_t *first)
{
	struct area *a = area_of(j->fs, which);
	struct alloc_ctx *ac = &j->fs->actx[j->ctx][which];
	uint64_t me = my_owner(j);

	for (uint64_t c = 0; c + n <= a->g.nchunks; c++) {
		uint64_t k;

		for (k = 0; k < n; k++) {
			uint64_t w = atomic_load_explicit(&a->owners[c + k],
							  memory_order_acquire);

			if (!chunk_takeable(j->fs, which, c + k, w) ||
			    (n > 1 && !chunk_empty(a, c + k)) ||
			    !atomic_compare_exchange_strong_explicit(&a->owners[c + k],
					&w, me, memory_order_acq_rel,
					memory_order_acquire))
				break;
			if (actx_push(ac, c + k) < 0)
				return -ENOMEM;
			chunk_prefault(j->fs, which, c + k);
		}
		if (k == n) {
			*first = c;
			return 0;
		}
		/* Keep the chunks we got; they serve later allocations. */
		c += k;
	}
	return -ENOSPC;
}

/* No chunk could be claimed: for how long (ms from the first failure) may
 * space still come to us without anyone evicting?  Entirely free chunks
 * other contexts own are given back by their owners when they put the
 * context down or trim (daxfsd trims every lease / 4): up to a lease.
 * ORPHAN chunks with room become adoptable once watched for lease + grace
 * (chunk_claim started the watch).  0: nothing will come. */
static uint64_t claim_patience(struct jctx *j, int which, uint64_t n,
			       uint64_t min)
{
	struct daxfs *fs = j->fs;
	struct area *a = area_of(fs, which);
	uint64_t me = my_owner(j), idle = 0, orphans = 0;

	for (uint64_t c = 0; c < a->g.nchunks && idle + orphans < n; c++) {
		uint64_t w = atomic_load_explicit(&a->owners[c], memory_order_acquire);

		if (DFS_CHUNK_STATE(w) == DFS_CHUNK_OWNED && w != me &&
		    chunk_empty(a, c))
			idle++;
		else if (DFS_CHUNK_STATE(w) == DFS_CHUNK_ORPHAN &&
			 (n > 1 ? chunk_empty(a, c) : chunk_free_units(a, c) >= min))
			orphans++;
	}
	if (idle + orphans < n)
		return 0;
	if (orphans)
		return (uint64_t)fs->lease_ms + fs->grace_ms + fs->lease_ms / 4 +
		       2 * CLAIM_POLL_MS;
	return fs->lease_ms;
}

/* chunk_claim, waiting (bounded, see claim_patience) while chunks are
 * about to become takeable, instead of failing with space in sight. */
static int chunk_claim_wait(struct jctx *j, int which, uint64_t n,
			    uint64_t min, uint64_t *first)
{
	uint64_t start = 0, patience;
	int rc;

	for (;;) {
		rc = chunk_claim(j, which, n, first);
		if (rc != -ENOSPC)
			return rc;
		if (!start)
			start = now_ms();
		patience = claim_patience(j, which, n, min);
		if (!patience || now_ms() - start >= patience)
			return -ENOSPC;
		sleep_ms(CLAIM_POLL_MS);
		if (daxfs_host_check(j->fs) < 0)
			return -ESTALE;
	}
}

int alloc_find(struct jctx *j, int which, uint64_t bytes, uint64_t min_bytes,
	       uint64_t *off, uint64_t *len)
{
	struct area *a = area_of(j->fs, which);
	struct alloc_ctx *ac = &j->fs->actx[j->ctx][which];
	uint64_t ub = unit_bytes(a);
	uint64_t want = (bytes + ub - 1) / ub, min = (min_bytes + ub - 1) / ub;
	uint64_t first, count, c;
	int rc;

	/* A host reaped while it was paused must not allocate: its chunks
	 * are orphaned and will be handed to others. */
	if (daxfs_host_check(j->fs) < 0)
		return -ESTALE;
	if (!want)
		want = min = 1;
	if (!min)
		min = 1;
	rc = actx_load(j, which);
	if (rc < 0)
		return rc;
	if (min > a->units_per_chunk) {
		/* Larger than a chunk: whole consecutive chunks. */
		uint64_t n = (min + a->units_per_chunk - 1) / a->units_per_chunk;

		rc = chunk_claim_wait(j, which, n, a->units_per_chunk, &c);
		if (rc < 0)
			return rc;
		*off = a->g.base + (c << a->g.chunk_shift);
		*len = min * ub;
		return 0;
	}
	if (want > a->units_per_chunk)
		want = a->units_per_chunk;
	/* Where the last allocation ended (or where this context gave units
	 * back since, alloc_rewind), the current chunk is most likely free: a
	 * whole run of want units from there is taken without scanning the
	 * chunk's full words from its start again (a scan per file, as long
	 * as the chunk is).  Otherwise the full search, as before: units
	 * others freed behind the hint are found there, and a new chunk is
	 * claimed only when no owned chunk has a run of min units. */
	if (ac->n && ac->cur < ac->n && ac->hint &&
	    chunk_find(a, ac->chunks[ac->cur], ac->hint, want, want, &first,
		       &count)) {
		c = ac->chunks[ac->cur];
		goto found;
	}
	for (uint32_t i = 0; i < ac->n; i++) {
		uint32_t k = (ac->cur + i) % ac->n;

		c = ac->chunks[k];
		if (chunk_find(a, c, 0, want, min, &first, &count)) {
			ac->cur = k;
			goto found;
		}
	}
	/* Take more chunks until one has room; the ones taken stay ours
	 * for later allocations. */
	do {
		rc = chunk_claim_wait(j, which, 1, min, &c);
		if (rc < 0)
			return rc;
	} while (!chunk_find(a, c, 0, want, min, &first, &count));
	ac->cur = ac->n - 1;
found:
	ac->hint = (first + count) / 64;
	*off = a->g.base + (c << a->g.chunk_shift) + first * ub;
	*len = count * ub;
	return 0;
}

void alloc_rewind(struct jctx *j, int which, uint64_t off)
{
	struct area *a = area_of(j->fs, which);
	struct alloc_ctx *ac = &j->fs->actx[j->ctx][which];
	uint64_t rel, word;

	if (!ac->n || ac->cur >= ac->n || !area_contains(a, off, 1))
		return;
	rel = off - a->g.base;
	if (rel >> a->g.chunk_shift != ac->chunks[ac->cur])
		return;
	word = ((rel & ((1ULL << a->g.chunk_shift) - 1)) >> a->g.unit_shift) / 64;
	if (word < ac->hint)
		ac->hint = word;
}

/* Apply op to the bitmap words covering [off, off+len). */
static void bits_apply(struct area *a, uint64_t off, uint64_t len, bool set)
{
	uint64_t u0 = (off - a->g.base) >> a->g.unit_shift;
	uint64_t n = (len + unit_bytes(a) - 1) >> a->g.unit_shift;

	while (n) {
		uint64_t bit = u0 % 64, k = 64 - bit < n ? 64 - bit : n;
		uint64_t mask = (k == 64 ? ~0ULL : ((1ULL << k) - 1)) << bit;

		/* Release on set: the journal entry naming these units is
		 * visible before the units are marked. */
		if (set)
			atomic_fetch_or_explicit(&a->bitmap[u0 / 64], mask,
						 memory_order_release);
		else
			atomic_fetch_and_explicit(&a->bitmap[u0 / 64], ~mask,
						  memory_order_release);
		u0 += k;
		n -= k;
	}
}

void alloc_mark(struct daxfs *fs, int which, uint64_t off, uint64_t len)
{
	struct area *a = area_of(fs, which);

	if (area_contains(a, off, len))
		bits_apply(a, off, len, true);
}

void alloc_free(struct daxfs *fs, int which, uint64_t off, uint64_t len)
{
	struct area *a = area_of(fs, which);

	if (len && area_contains(a, off, len))
		bits_apply(a, off, len, false);
}

bool alloc_is_set(struct daxfs *fs, int which, uint64_t off, uint64_t len)
{
	struct area *a = area_of(fs, which);
	uint64_t u0, n;

	if (!area_contains(a, off, len))
		return false;
	u0 = (off - a->g.base) >> a->g.unit_shift;
	n = (len + unit_bytes(a) - 1) >> a->g.unit_shift;
	for (uint64_t u = u0; u < u0 + n; u++)
		if (!(atomic_load_explicit(&a->bitmap[u / 64], memory_order_acquire) &
		      (1ULL << (u % 64))))
			return false;
	return true;
}

uint64_t alloc_used_bytes(struct daxfs *fs, int which)
{
	struct area *a = area_of(fs, which);
	uint64_t words = a->g.nchunks * a->words_per_chunk, units = 0;

	for (uint64_t i = 0; i < words; i++)
		units += (uint64_t)__builtin_popcountll(
			atomic_load_explicit(&a->bitmap[i], memory_order_relaxed));
	return units << a->g.unit_shift;
}

/* We watched the chunk become ORPHAN ourselves: its watch starts now. */
static void orphan_watch_start(struct daxfs *fs, int which, uint64_t c,
			       uint64_t w)
{
	struct orphan_watch *ow;

	pthread_mutex_lock(&fs->lock);
	ow = orphan_clock(fs, which);
	if (ow && ow[c].word != w) {
		ow[c].word = w;
		ow[c].since_ms = now_ms();
	}
	pthread_mutex_unlock(&fs->lock);
}

static void chunks_transfer(struct daxfs *fs, int slot, uint32_t inc,
			    unsigned state)
{
	for (int which = 0; which < 2; which++) {
		struct area *a = area_of(fs, which);

		for (uint64_t c = 0; c < a->g.nchunks; c++) {
			uint64_t w = atomic_load_explicit(&a->owners[c],
							  memory_order_acquire);
			uint64_t to;

			if (DFS_CHUNK_STATE(w) != DFS_CHUNK_OWNED ||
			    DFS_CHUNK_SLOT1(w) != (unsigned)slot + 1 ||
			    DFS_CHUNK_INC(w) != inc)
				continue;
			to = DFS_CHUNK(state, slot + 1, DFS_CHUNK_CTX(w), inc);
			if (atomic_compare_exchange_strong_explicit(&a->owners[c], &w,
					to, memory_order_acq_rel, memory_order_relaxed) &&
			    state == DFS_CHUNK_ORPHAN)
				orphan_watch_start(fs, which, c, to);
		}
	}
}

void alloc_release_chunks(struct daxfs *fs)
{
	chunks_transfer(fs, fs->slot, fs->inc, DFS_CHUNK_RELEASED);
	for (unsigned c = 0; c < DFS_CTX_PER_HOST; c++)
		for (int w = 0; w < 2; w++)
			fs->actx[c][w].loaded = false;
}

void alloc_orphan_chunks(struct daxfs *fs, int slot, uint32_t inc)
{
	chunks_transfer(fs, slot, inc, DFS_CHUNK_ORPHAN);
}

int alloc_trim_ctx(struct daxfs *fs, int ctx)
{
	struct dfs_ctx *jc;
	uint64_t me;
	int released = 0;

	if (fs->slot < 0 || fs->readonly || daxfs_host_check(fs) < 0)
		return 0;
	/* An open journal group names units in our chunks, and a reaper
	 * would free those units again should we die: keep every chunk
	 * until the group is closed. */
	jc = &fs->hosts[fs->slot].ctx[ctx];
	if (atomic_load_explicit(&jc->head, memory_order_relaxed) !=
	    atomic_load_explicit(&jc->tail, memory_order_relaxed))
		return 0;
	me = ctx_owner(fs, ctx);
	for (int which = 0; which < 2; which++) {
		struct alloc_ctx *ac = &fs->actx[ctx][which];
		struct area *a = area_of(fs, which);
		uint32_t keep = 0, cur = 0;

		if (!ac->loaded)
			continue;
		for (uint32_t k = 0; k < ac->n; k++) {
			uint64_t c = ac->chunks[k], w = me;

			/* Release: whoever adopts the chunk (acquire on the
			 * owner word) sees the bitmap we saw empty. */
			if (k != ac->cur && chunk_empty(a, c) &&
			    atomic_compare_exchange_strong_explicit(&a->owners[c], &w,
					DFS_CHUNK(DFS_CHUNK_RELEASED, fs->slot + 1,
						  ctx, fs->inc),
					memory_order_release, memory_order_relaxed)) {
				released++;
				continue;
			}
			if (k == ac->cur)
				cur = keep;
			ac->chunks[keep++] = c;
		}
		ac->n = keep;
		ac->cur = cur;
	}
	return released;
}

int daxfs_alloc_trim(struct daxfs *fs)
{
	int released = 0;

	if (fs->slot < 0 || !fs->daemon)
		return 0;
	for (int ctx = 0; ctx < (int)DFS_CTX_PER_HOST; ctx++) {
		if (!ctx_take_idle(fs, ctx))
			continue;
		released += alloc_trim_ctx(fs, ctx);
		ctx_put(fs, ctx);
	}
	return released;
}

void alloc_state_free(struct daxfs *fs)
{
	for (unsigned c = 0; c < DFS_CTX_PER_HOST; c++)
		for (int w = 0; w < 2; w++)
			free(fs->actx[c][w].chunks);
	free(fs->orphan_seen[0]);
	free(fs->orphan_seen[1]);
	free(fs->prefaulted[0]);
	free(fs->prefaulted[1]);
}
