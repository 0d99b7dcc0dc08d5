/* Pins, stale holder bits and the multi-host clock (MH-clock).
 *
 * The clock: dfs_shared.clock_hand is a position over the hash slots that
 * every host sweeping advances with fetch_add in small batches, so hosts
 * collecting at once take disjoint ranges with no coordinator.  A READY
 * layer that no host holds and no pinned image names loses its
 * recently-used bit on the first visit and is evicted on the next (one CAS
 * READY-with-no-holders -> EVICTING, journaled as any eviction).
 *
 * Pins: an image record whose flags have DAXFS_IMAGE_PINNED pins every
 * layer of its chain.  The pinner holds those layers while it sets the
 * flag and bumps dfs_shared.pin_gen, and lets go only afterwards; an
 * evictor that won its CAS re-reads pin_gen and rolls the eviction back if
 * a pin it did not know about now names the layer (see daxfs_image_pin and
 * gc_evict for why this cannot miss a pin). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "gc.h"
#include "hash.h"
#include "host.h"
#include "layer.h"
#include "records.h"

#define GC_BATCH 16		/* hash slots taken from the hand at once */
#define CHAIN_MAX 4096		/* bound on a chain walk (a corrupt loop) */

/* ---- the pinned set ---- */

static int pin_add(struct pinset *p, uint64_t rec)
{
	if (p->n == p->cap) {
		size_t cap = p->cap ? 2 * p->cap : 64;
		uint64_t *r = realloc(p->recs, cap * sizeof(*r));

		if (!r)
			return -ENOMEM;
		p->recs = r;
		p->cap = cap;
	}
	p->recs[p->n++] = rec;
	return 0;
}

static bool zero32(const uint8_t k[32])
{
	for (int i = 0; i < 32; i++)
		if (k[i])
			return false;
	return true;
}

/* Call fn for the layer record of every chain from top down to the bottom
 * (inside a read section: chain records may be freed). */
static int chain_walk(struct daxfs *fs, const uint8_t top[32],
		      int (*fn)(uint64_t layer, void *arg), void *arg)
{
	uint8_t id[32];

	memcpy(id, top, 32);
	for (int depth = 0; depth < CHAIN_MAX && !zero32(id); depth++) {
		struct dfs_chain *c;
		uint64_t rec;
		int rc;

		if (hash_lookup(fs, DFS_KIND_CHAIN, id, &rec) < 0 ||
		    !(c = record_get(fs, DFS_KIND_CHAIN, rec)))
			break;
		rc = fn(c->layer, arg);
		if (rc)
			return rc;
		memcpy(id, c->parent, 32);
	}
	return 0;
}

static int pin_layer(uint64_t layer, void *arg)
{
	return pin_add(arg, layer);
}

static int pin_image(struct daxfs *fs, struct dfs_hslot *s, void *arg)
{
	struct dfs_image *im = record_get(fs, DFS_KIND_IMAGE,
			atomic_load_explicit(&s->value, memory_order_relaxed));

	/* seq_cst: read after the pin_gen load that decided to rebuild. */
	if (!im || !(atomic_load_explicit(&im->flags, memory_order_seq_cst) &
		     DAXFS_IMAGE_PINNED))
		return 0;
	return chain_walk(fs, im->top_chain, pin_layer, arg);
}

static int u64_cmp(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

int pinset_build(struct daxfs *fs, struct pinset *p)
{
	size_t k = 0;
	int rc;

	p->n = 0;
	daxfs_read_enter(fs);
	rc = hash_foreach(fs, DFS_KIND_IMAGE, pin_image, p);
	daxfs_read_leave(fs);
	if (rc < 0 || !p->n)
		return rc;
	qsort(p->recs, p->n, sizeof(*p->recs), u64_cmp);
	for (size_t i = 0; i < p->n; i++)
		if (!k || p->recs[k - 1] != p->recs[i])
			p->recs[k++] = p->recs[i];
	p->n = k;
	return 0;
}

bool pinset_has(const struct pinset *p, uint64_t rec)
{
	return p->n && bsearch(&rec, p->recs, p->n, sizeof(*p->recs), u64_cmp);
}

void pinset_free(struct pinset *p)
{
	free(p->recs);
	memset(p, 0, sizeof(*p));
}

bool layer_pinned(struct daxfs *fs, uint64_t rec)
{
	struct pinset p = { 0 };
	bool pinned;

	/* Without memory to know, count it pinned: keeping is always safe. */
	pinned = pinset_build(fs, &p) < 0 || pinset_has(&p, rec);
	pinset_free(&p);
	return pinned;
}

/* ---- pins ---- */

struct pin_holds {
	struct daxfs *fs;
	struct daxfs_layer **l;
	size_t n, cap;
};

static int pin_hold(uint64_t layer, void *arg)
{
	struct pin_holds *h = arg;
	struct dfs_layer *l = layer_get(h->fs, layer);
	uint8_t id[32];

	if (!l)
		return 0;
	if (h->n == h->cap) {
		size_t cap = h->cap ? 2 * h->cap : 16;
		struct daxfs_layer **p = realloc(h->l, cap * sizeof(*p));

		if (!p)
			return -ENOMEM;
		h->l = p;
		h->cap = cap;
	}
	memcpy(id, l->diff_id, 32);
	/* A layer that is not READY is not protected by the pin anyway. */
	if (daxfs_layer_open(h->fs, id, &h->l[h->n], NULL) == 0)
		h->n++;
	return 0;
}

int daxfs_image_pin(struct daxfs *fs, const char *ref, int pin,
		    struct daxfs_err *err)
{
	struct pin_holds h = { .fs = fs };
	struct dfs_image *im = NULL;
	uint64_t rec;
	int rc;

	if (fs->slot < 0)
		return daxfs_err_set(err, -EPERM, "attach as a host to pin images");
	daxfs_read_enter(fs);
	if (record_image_lookup(fs, ref, &rec) < 0) {
		rc = daxfs_err_set(err, -ENOENT, "no image %s in the region", ref);
		goto out;
	}
	im = record_get(fs, DFS_KIND_IMAGE, rec);
	if (!im) {
		rc = daxfs_err_set(err, -EUCLEAN, "image record of %s is corrupt", ref);
		goto out;
	}
	/* Hold the layers while the pin changes: an evictor's CAS either
	 * came first (the layer was not READY to hold) or fails, or comes
	 * after our holds go, i.e. after the pin_gen bump below. */
	rc = chain_walk(fs, im->top_chain, pin_hold, &h);
	if (rc < 0) {
		daxfs_err_set(err, rc, "pinning %s: %s", ref, strerror(-rc));
		goto out;
	}
	failpoint();
	/* One atomic change of the record: a crash leaves it either way. */
	if (pin)
		atomic_fetch_or_explicit(&im->flags, DAXFS_IMAGE_PINNED,
					 memory_order_seq_cst);
	else
		atomic_fetch_and_explicit(&im->flags, ~DAXFS_IMAGE_PINNED,
					  memory_order_seq_cst);
	/* seq_cst, after the flag and before our holds are dropped: an
	 * evictor that sees the layer unheld sees this bump too. */
	atomic_fetch_add_explicit(&fs->shared->pin_gen, 1, memory_order_seq_cst);
	failpoint();
out:
	daxfs_read_leave(fs);
	for (size_t i = 0; i < h.n; i++)
		daxfs_layer_close(h.l[i]);
	free(h.l);
	return rc;
}

/* ---- stale holder bits ---- */

int holds_clear_stale(struct daxfs *fs)
{
	uint64_t now = now_ms();
	int cleared = 0;

	if (fs->slot < 0 || !fs->daemon)
		return 0;
	for (uint32_t s = 0; s < fs->sb.max_hosts; s++) {
		_Atomic uint64_t *ow = &fs->hosts[s].owner;
		uint64_t w, mine;
		bool stale;

		if ((int)s == fs->slot)
			continue;
		pthread_mutex_lock(&fs->lock);
		stale = host_holds_stale(fs, (int)s, now);
		pthread_mutex_unlock(&fs->lock);
		if (!stale)
			continue;
		w = atomic_load_explicit(ow, memory_order_acquire);
		if (DFS_OWNER_STATE(w) != DFS_HOST_RETIRED ||
		    (DFS_OWNER_FLAGS(w) & DFS_OWNER_HOLDS_CLEARED))
			continue;
		/* The slot names us while we clear: an attach of it waits
		 * (or, if we die, hands it back), so no bit that a new
		 * incarnation sets is ever cleared by us. */
		mine = DFS_OWNER(DFS_OWNER_INC(w), DFS_HOST_CLEARING, fs->slot + 1);
		if (!atomic_compare_exchange_strong_explicit(ow, &w, mine,
				memory_order_acq_rel, memory_order_acquire))
			continue;
		failpoint();
		if (holds_clear_slot(fs, (int)s, ow, mine) < 0)
			continue;	/* handed back while we stalled */
		failpoint();
		if (atomic_compare_exchange_strong_explicit(ow, &mine,
				DFS_OWNER(DFS_OWNER_INC(mine), DFS_HOST_RETIRED, 0) |
				DFS_OWNER_HOLDS_CLEARED,
				memory_order_acq_rel, memory_order_relaxed))
			cleared++;
	}
	return cleared;
}

/* ---- the clock ---- */

struct gc_pass {
	struct daxfs *fs;
	const struct daxfs_gc_opts *o;
	struct daxfs_gc_result *r;
	struct jctx j;
	struct pinset pins;
	uint64_t gen;		/* pin_gen the pinned set was built at */
};

static uint64_t area_free(struct daxfs *fs, int which)
{
	struct area *a = area_of(fs, which);
	uint64_t total = a->g.nchunks << a->g.chunk_shift;
	uint64_t used = alloc_used_bytes(fs, which);

	return used < total ? total - used : 0;
}

static bool wants_met(struct daxfs *fs, const struct daxfs_gc_opts *o)
{
	return area_free(fs, AREA_DATA) >= o->want_data &&
	       area_free(fs, AREA_META) >= o->want_meta;
}

/* The layer record in hash slot i, or NULL. */
static struct dfs_layer *slot_layer(struct daxfs *fs, uint64_t i, uint64_t *rec)
{
	struct dfs_hslot *s = &fs->hash[i];
	uint64_t hw = atomic_load_explicit(&s->word, memory_order_acquire);

	if (DFS_HWORD_STATE(hw) != DFS_H_VALID ||
	    atomic_load_explicit(&s->kind, memory_order_relaxed) != DFS_KIND_LAYER)
		return NULL;
	*rec = atomic_load_explicit(&s->value, memory_order_relaxed);
	return layer_get(fs, *rec);
}

/* Evict rec.  1 evicted, 0 not (held, used, pinned meanwhile), -errno. */
static int gc_evict(struct gc_pass *g, uint64_t rec, struct dfs_layer *l)
{
	struct daxfs *fs = g->fs;
	struct daxfs_layer_info li;
	int64_t seq;
	uint64_t gen;
	int rc;

	layer_fill(l, &li);
	seq = evict_start(&g->j, rec, g->o->all);
	if (seq == -EBUSY || seq == -ENOENT)
		return 0;
	if (seq < 0)
		return (int)seq;
	/* A pinner sets the flag, bumps pin_gen (both seq_cst) and only
	 * then drops its holds.  Our CAS found no holders, so it read the
	 * state word at or after that drop (release -> our acquire): the
	 * bump happens before this load, which therefore sees it, and the
	 * set rebuilt below sees the flag.  (A pinner whose hold came after
	 * our CAS found the layer EVICTING and could not hold it.) */
	gen = atomic_load_explicit(&fs->shared->pin_gen, memory_order_seq_cst);
	if (gen != g->gen) {
		g->gen = gen;
		rc = pinset_build(fs, &g->pins);
		if (rc < 0 || pinset_has(&g->pins, rec)) {
			int rb = evict_rollback(&g->j, rec, seq);

			return rc < 0 ? rc : rb;
		}
	}
	rc = layer_evict_finish(&g->j, rec, 0);
	if (rc < 0)
		return rc;
	g->r->evicted++;
	if (g->o->report)
		g->o->report(&li, g->o->arg);
	return 1;
}

/* One hand position: second chance or eviction. */
static int clock_visit(struct gc_pass *g, uint64_t i)
{
	uint64_t rec, w;
	struct dfs_layer *l = slot_layer(g->fs, i, &rec);

	if (!l)
		return 0;
	w = atomic_load_explicit(&l->state, memory_order_acquire);
	if (DFS_LW_STATE(w) != DFS_L_READY || DFS_LW_HOLDERS(w) ||
	    pinset_has(&g->pins, rec))
		return 0;
	if (!g->o->all && (w & DFS_LW_RU)) {
		/* Second chance.  If the CAS fails the layer was just used
		 * (or held): either way it stays this round. */
		atomic_compare_exchange_strong_explicit(&l->state, &w, w & ~DFS_LW_RU,
				memory_order_acq_rel, memory_order_relaxed);
		failpoint();
		return 0;
	}
	return gc_evict(g, rec, l);
}

static int clock_sweep(struct gc_pass *g)
{
	struct daxfs *fs = g->fs;
	uint64_t nslots = fs->sb.hash_slots, done = 0;

	/* At most two revolutions of our share of the hand: a layer whose
	 * bit we cleared on the first is evicted on the second. */
	while (done < 2 * nslots) {
		uint64_t pos;

		if (!g->o->all && wants_met(fs, g->o))
			return 0;
		/* Relaxed: the hand only spreads the work; every decision is
		 * a CAS on the layer's own state word. */
		pos = atomic_fetch_add_explicit(&fs->shared->clock_hand, GC_BATCH,
						memory_order_relaxed);
		for (uint64_t k = 0; k < GC_BATCH && done < 2 * nslots; k++, done++) {
			int rc = clock_visit(g, (pos + k) & (nslots - 1));

			if (rc < 0)
				return rc;
			if (rc > 0 && !g->o->all && wants_met(fs, g->o))
				return 0;
		}
	}
	return 0;
}

/* dry_run: report every layer an --all pass would evict now. */
static void dry_sweep(struct gc_pass *g)
{
	for (uint64_t i = 0; i < g->fs->sb.hash_slots; i++) {
		uint64_t rec, w;
		struct dfs_layer *l = slot_layer(g->fs, i, &rec);
		struct daxfs_layer_info li;

		if (!l)
			continue;
		w = atomic_load_explicit(&l->state, memory_order_acquire);
		if (DFS_LW_STATE(w) != DFS_L_READY || DFS_LW_HOLDERS(w) ||
		    pinset_has(&g->pins, rec))
			continue;
		g->r->evicted++;
		if (g->o->report) {
			layer_fill(l, &li);
			g->o->report(&li, g->o->arg);
		}
	}
}

/* What keeps the READY layers that are left. */
static void gc_tally(struct gc_pass *g)
{
	for (uint64_t i = 0; i < g->fs->sb.hash_slots; i++) {
		uint64_t rec, w;
		struct dfs_layer *l = slot_layer(g->fs, i, &rec);

		if (!l)
			continue;
		w = atomic_load_explicit(&l->state, memory_order_acquire);
		if (DFS_LW_STATE(w) != DFS_L_READY)
			continue;
		if (DFS_LW_HOLDERS(w)) {
			g->r->held++;
			g->r->held_hosts |= DFS_HOLD_SLOTS(DFS_LW_HOLDERS(w));
		}
		if (pinset_has(&g->pins, rec))
			g->r->pinned++;
	}
}

int daxfs_gc(struct daxfs *fs, const struct daxfs_gc_opts *o,
	     struct daxfs_gc_result *r, struct daxfs_err *err)
{
	static const struct daxfs_gc_opts none;
	struct daxfs_gc_result res;
	struct gc_pass g = { .fs = fs, .o = o ? o : &none, .r = &res };
	uint64_t used_data, used_meta, now_data, now_meta;
	int ctx = -1, rc;

	memset(&res, 0, sizeof(res));
	if (fs->slot < 0 || !fs->daemon)
		return daxfs_err_set(err, -EPERM, "attach as a host daemon to collect garbage");
	if (!g.o->dry_run)
		res.stale_cleared = (uint64_t)holds_clear_stale(fs);
	used_data = alloc_used_bytes(fs, AREA_DATA);
	used_meta = alloc_used_bytes(fs, AREA_META);
	/* Read before the set is built: a pin after this read is caught by
	 * the re-read after each eviction CAS. */
	g.gen = atomic_load_explicit(&fs->shared->pin_gen, memory_order_seq_cst);
	rc = pinset_build(fs, &g.pins);
	if (rc < 0) {
		daxfs_err_set(err, rc, "listing pinned images: %s", strerror(-rc));
		goto out;
	}
	if (g.o->dry_run) {
		dry_sweep(&g);
	} else {
		ctx = ctx_acquire(fs);
		if (ctx < 0) {
			rc = daxfs_err_set(err, -EAGAIN, "all writer contexts busy");
			goto out;
		}
		journal_bind(fs, fs->slot, ctx, &g.j);
		rc = clock_sweep(&g);
		ctx_release(fs, ctx);
		if (rc < 0) {
			daxfs_err_set(err, rc, "evicting: %s", rc == -ENOBUFS ?
				      "intent journal full" : strerror(-rc));
			goto out;
		}
	}
	gc_tally(&g);
	now_data = alloc_used_bytes(fs, AREA_DATA);
	now_meta = alloc_used_bytes(fs, AREA_META);
	res.data_freed = used_data > now_data ? used_data - now_data : 0;
	res.meta_freed = used_meta > now_meta ? used_meta - now_meta : 0;
	res.data_free = area_free(fs, AREA_DATA);
	res.meta_free = area_free(fs, AREA_META);
out:
	pinset_free(&g.pins);
	if (r)
		*r = res;
	return rc;
}

static void human(char *out, size_t n, uint64_t b)
{
	static const char *unit[] = { "bytes", "KiB", "MiB", "GiB", "TiB" };
	double v = (double)b;
	int u = 0;

	while (v >= 1024 && u < 4) {
		v /= 1024;
		u++;
	}
	if (u == 0)
		snprintf(out, n, "%llu bytes", (unsigned long long)b);
	else
		snprintf(out, n, v < 10 ? "%.1f %s" : "%.0f %s", v, unit[u]);
}

int daxfs_gc_full_error(struct daxfs *fs, const struct daxfs_gc_result *r,
			struct daxfs_err *err)
{
	char d[32], m[32], hosts[400] = "", pinned[48] = "";
	size_t len = 0;

	human(d, sizeof(d), r->data_free);
	human(m, sizeof(m), r->meta_free);
	for (uint32_t s = 0; s < fs->sb.max_hosts && s < DFS_MAX_HOSTS; s++) {
		char name[DFS_NAME_MAX + 1];
		int k;

		if (!(r->held_hosts & (1ULL << s)))
			continue;
		for (k = 0; k < (int)DFS_NAME_MAX; k++)
			name[k] = __atomic_load_n(&fs->hosts[s].name[k], __ATOMIC_RELAXED);
		name[DFS_NAME_MAX] = 0;
		if (!name[0])
			snprintf(name, sizeof(name), "slot %u", s);
		k = snprintf(hosts + len, sizeof(hosts) - len, "%s%s",
			     len ? ", " : "", name);
		if (k < 0 || (size_t)k >= sizeof(hosts) - len)
			break;
		len += (size_t)k;
	}
	if (r->pinned)
		snprintf(pinned, sizeof(pinned), "; %llu pinned",
			 (unsigned long long)r->pinned);
	if (r->held)
		return daxfs_err_set(err, -ENOSPC,
				     "region full: %s data and %s metadata free, nothing "
				     "reclaimable; %llu layer%s held by host%s %s%s",
				     d, m, (unsigned long long)r->held,
				     r->held == 1 ? "" : "s",
				     strchr(hosts, ',') ? "s" : "", hosts, pinned);
	return daxfs_err_set(err, -ENOSPC,
			     "region full: %s data and %s metadata free, nothing "
			     "reclaimable%s", d, m, pinned);
}
