/* Reaping: undoing exactly what a dead host (or an aborting builder) did.
 *
 * A host is declared dead by one CAS on its owner word (LIVE, inc) ->
 * (REAPING, inc, reaper), so exactly one live host reaps it.  The reaper
 * walks each of the dead host's journals: groups whose layer was published
 * are kept; the others are undone entry by entry, each undo itself
 * journaled in the reaper's own journal with a pointer back (VICTIM), so
 * if the reaper dies too, whoever takes over knows which undos happened. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "content.h"
#include "gc.h"
#include "hash.h"
#include "host.h"
#include "layer.h"
#include "reap.h"
#include "records.h"

struct jview {
	uint64_t seq;
	uint64_t word;
	struct dfs_jentry *e;
};

static unsigned jstate(const struct jview *v)
{
	return DFS_JWORD_STATE(v->word);
}

static void mark(struct jctx *victim, struct jview *v, enum dfs_jstate st)
{
	journal_set(victim, v->seq, st);
	v->word = DFS_JWORD(v->seq, st);
}

/* Is a layer still claimed (UNPACKING) by the journal's owner? */
static bool claimed_by(struct daxfs *fs, uint64_t rec, int slot, uint32_t inc)
{
	struct dfs_layer *l = layer_get(fs, rec);
	uint64_t w;

	if (!l)
		return false;
	w = atomic_load_explicit(&l->state, memory_order_acquire);
	return DFS_LW_STATE(w) == DFS_L_UNPACKING &&
	       LW_CLAIM_SLOT(w) == (unsigned)slot && LW_CLAIM_INC(w) == inc;
}

static uint32_t owner_inc(struct daxfs *fs, int slot)
{
	return DFS_OWNER_INC(atomic_load_explicit(&fs->hosts[slot].owner,
						  memory_order_acquire));
}

/* A REF_DEC of the victim took a count to zero but crashed before it
 * journaled the RETIRE: retire the record now. */
static int finish_zero(struct jctx *victim, struct jctx *mine,
		       struct jview *v, bool retire_follows)
{
	struct dfs_content *c = content_get(victim->fs, v->e->a);
	int64_t seq;
	uint64_t val;

	if (retire_follows || !c ||
	    DFS_RC_COUNT(atomic_load_explicit(&c->rc, memory_order_acquire)) != 0)
		return 0;
	/* Retired already (by an earlier reaper) if no longer indexed: its
	 * units may be someone else's by now. */
	if (hash_lookup(victim->fs, DFS_KIND_CONTENT, c->sha256, &val) < 0 ||
	    val != v->e->a)
		return 0;
	seq = journal_append(mine, DFS_JOP_RETIRE, v->e->a, 0, 0);
	if (seq < 0)
		return (int)seq;
	return content_retire(mine, seq, v->e->a);
}

static bool retire_after(struct jview *v, size_t i, size_t n, uint64_t rec)
{
	for (size_t k = i + 1; k < n; k++)
		if (v[k].e->op == DFS_JOP_RETIRE && v[k].e->a == rec)
			return true;
	return false;
}

/* Settle one entry whose change (inc/dec) may be PENDING. */
static bool change_applied(struct jctx *victim, struct jview *v)
{
	if (jstate(v) == DFS_J_DONE)
		return true;
	if (jstate(v) != DFS_J_PENDING)
		return false;
	if (content_change_applied(victim, v->seq, v->e->a))
		return true;
	/* Never applied, and it never will be: its writer is gone. */
	mark(victim, v, DFS_J_UNDONE);
	return false;
}

static bool create_applied(struct jctx *victim, struct jview *v)
{
	struct dfs_content *c;
	uint64_t val;

	if (jstate(v) == DFS_J_DONE)
		return true;
	if (jstate(v) != DFS_J_PENDING)
		return false;
	c = content_get(victim->fs, v->e->a);
	return c && hash_lookup(victim->fs, DFS_KIND_CONTENT, c->sha256, &val) == 0 &&
	       val == v->e->a;
}

static int settle_entry(struct jctx *victim, struct jctx *mine,
			struct jview *v, size_t i, size_t n, struct jview *all);

/* Undo one entry of an unpublished group. */
static int undo_entry(struct jctx *victim, struct jctx *mine, struct jview *v)
{
	struct daxfs *fs = victim->fs;
	struct dfs_jentry *e = v->e;
	uint64_t back = VICTIM(victim->slot, victim->ctx, v->seq);
	int rc = 0;

	switch (e->op) {
	case DFS_JOP_ALLOC_META:
	case DFS_JOP_ALLOC_DATA:
		if (jstate(v) == DFS_J_PENDING || jstate(v) == DFS_J_DONE) {
			/* Set bits in the victim's chunks are its own. */
			alloc_free(fs, e->op == DFS_JOP_ALLOC_META ? AREA_META : AREA_DATA,
				   e->a, e->b);
			mark(victim, v, DFS_J_UNDONE);
		}
		break;
	case DFS_JOP_CREATE:
		if (create_applied(victim, v)) {
			rc = content_ref_dec(mine, 0, e->a, back);
		} else if (jstate(v) == DFS_J_PENDING) {
			content_free(fs, e->a, e->b);
		} else {
			break;
		}
		if (rc == 0)
			mark(victim, v, DFS_J_UNDONE);
		break;
	case DFS_JOP_REF_INC:
		if (change_applied(victim, v)) {
			rc = content_ref_dec(mine, 0, e->a, back);
			if (rc == 0)
				mark(victim, v, DFS_J_UNDONE);
		}
		break;
	case DFS_JOP_REF_DEC:
		if (e->b == DEFERRED) {
			/* Announced for a publish that never came: the
			 * reference goes with its CREATE or REF_INC. */
			if (jstate(v) == DFS_J_PENDING)
				mark(victim, v, DFS_J_UNDONE);
			break;
		}
		rc = settle_entry(victim, mine, v, 0, 1, v);
		break;
	default:
		/* Records and retires are not part of the layer: settle. */
		rc = settle_entry(victim, mine, v, 0, 1, v);
		break;
	}
	return rc;
}

/* Settle an entry outside an unpublished group (reaper bookkeeping,
 * evictions, retires, new layer records). */
static int settle_entry(struct jctx *victim, struct jctx *mine,
			struct jview *v, size_t i, size_t n, struct jview *all)
{
	struct daxfs *fs = victim->fs;
	struct dfs_jentry *e = v->e;
	struct dfs_layer *l;
	uint64_t val;

	switch (e->op) {
	case DFS_JOP_NEWLAYER:
		if (jstate(v) != DFS_J_PENDING && jstate(v) != DFS_J_DONE)
			break;
		l = layer_get(fs, e->a);
		if (l && hash_lookup(fs, DFS_KIND_LAYER, l->diff_id, &val) == 0 &&
		    val == e->a) {
			mark(victim, v, DFS_J_COMMITTED);
		} else {
			alloc_free(fs, AREA_META, e->a, e->b);
			mark(victim, v, DFS_J_UNDONE);
		}
		break;
	case DFS_JOP_REF_DEC:
		if (e->b == DEFERRED && jstate(v) == DFS_J_PENDING &&
		    !content_change_applied(victim, v->seq, e->a)) {
			/* The layer was published: its replaced files still
			 * owe their decrement.  It is made in our journal with
			 * a pointer back, so if we die, whoever reaps us marks
			 * this entry and the decrement is not made twice. */
			int rc = content_ref_dec(mine, 0, e->a,
						 VICTIM(victim->slot, victim->ctx, v->seq));

			if (rc == 0)
				mark(victim, v, DFS_J_UNDONE);
			return rc;
		}
		if (!change_applied(victim, v))
			break;
		if ((e->b >> 63) && (uint32_t)VICTIM_SLOT(e->b) < fs->sb.max_hosts &&
		    (uint32_t)VICTIM_CTX(e->b) < DFS_CTX_PER_HOST) {
			/* An undo made for another victim: record it there. */
			struct jctx other;

			journal_bind(fs, VICTIM_SLOT(e->b), VICTIM_CTX(e->b), &other);
			journal_set(&other, VICTIM_SEQ(e->b), DFS_J_UNDONE);
		}
		return finish_zero(victim, mine, v, retire_after(all, i, n, e->a));
	case DFS_JOP_RETIRE:
		if (jstate(v) == DFS_J_PENDING)
			return content_retire(victim, (int64_t)v->seq, e->a);
		break;
	case DFS_JOP_NEWREC: {
		uint8_t key[32];

		if (jstate(v) != DFS_J_PENDING && jstate(v) != DFS_J_DONE)
			break;
		if (record_key(fs, e->group, e->a, key) == 0 &&
		    hash_lookup(fs, e->group, key, &val) == 0 && val == e->a) {
			mark(victim, v, DFS_J_COMMITTED);
		} else {
			alloc_free(fs, AREA_META, e->a, e->b);
			mark(victim, v, DFS_J_UNDONE);
		}
		break;
	}
	case DFS_JOP_FREEREC:
		if (jstate(v) == DFS_J_PENDING)
			return record_free(victim, (int64_t)v->seq, e->group, e->a);
		break;
	case DFS_JOP_CREATE:
	case DFS_JOP_REF_INC:
		/* In a published group: only settle the state. */
		if (jstate(v) == DFS_J_PENDING &&
		    (e->op == DFS_JOP_CREATE ? create_applied(victim, v)
					     : change_applied(victim, v)))
			mark(victim, v, DFS_J_DONE);
		break;
	default:
		break;
	}
	return 0;
}

/* An eviction the victim started: finish it. */
static int roll_forward(struct jctx *victim, struct jctx *mine,
			struct jview *v, size_t n)
{
	struct daxfs *fs = victim->fs;
	struct dfs_layer *l = layer_get(fs, v[0].e->a);
	uint32_t from = v[0].e->group;	/* where this group started */
	int64_t seq;
	int rc;

	if (!l || l->serial != v[0].e->b ||
	    DFS_LW_STATE(atomic_load_explicit(&l->state, memory_order_acquire)) !=
	    DFS_L_EVICTING)
		return 0;
	for (size_t i = 1; i < n; i++) {
		if (v[i].e->op == DFS_JOP_REF_DEC && IS_EVICT_INO(v[i].e->b) &&
		    change_applied(victim, &v[i]))
			from = (uint32_t)v[i].e->b + 1;
		rc = settle_entry(victim, mine, &v[i], i, n, v);
		if (rc < 0)
			return rc;
	}
	/* The victim died between its eviction CAS and its pin check: if
	 * nothing was released yet and the layer is pinned now, the
	 * eviction is rolled back as the victim would have. */
	if (from == 0 && layer_pinned(fs, v[0].e->a)) {
		uint64_t w = atomic_load_explicit(&l->state, memory_order_acquire);

		if (atomic_compare_exchange_strong_explicit(&l->state, &w,
				DFS_LW(DFS_L_READY, DFS_LW_TAG(w), 1, 0),
				memory_order_acq_rel, memory_order_relaxed)) {
			mark(victim, &v[0], DFS_J_UNDONE);
			return 0;
		}
	}
	/* Our releases form a TREE group of our own that starts at from: if
	 * we die, whoever reaps us continues after the last one we made. */
	seq = journal_append(mine, DFS_JOP_TREE, v[0].e->a, v[0].e->b, from);
	if (seq < 0)
		return (int)seq;
	mark(victim, &v[0], DFS_J_DONE);
	return layer_evict_finish(mine, v[0].e->a, from);
}

static int reap_group(struct jctx *victim, struct jctx *mine, uint32_t inc,
		      struct jview *v, size_t n)
{
	struct daxfs *fs = victim->fs;
	int rc = 0;

	if (n && v[0].e->op == DFS_JOP_TREE)
		return roll_forward(victim, mine, v, n);
	if (n && v[0].e->op == DFS_JOP_BEGIN &&
	    claimed_by(fs, v[0].e->a, victim->slot, inc)) {
		for (size_t i = n; i-- > 1 && rc == 0;)
			rc = undo_entry(victim, mine, &v[i]);
		if (rc == 0) {
			struct dfs_layer *l = layer_get(fs, v[0].e->a);
			uint64_t w = LW_UNPACKING(victim->slot, inc);

			/* Give the claim back; the layer can be pulled again. */
			atomic_compare_exchange_strong_explicit(&l->state, &w,
					DFS_LW(DFS_L_ABSENT, 0, 0, 0),
					memory_order_acq_rel, memory_order_relaxed);
			mark(victim, &v[0], DFS_J_UNDONE);
		}
		return rc;
	}
	for (size_t i = 0; i < n && rc == 0; i++)
		rc = settle_entry(victim, mine, &v[i], i, n, v);
	return rc;
}

int reap_journal(struct daxfs *fs, struct jctx *victim, struct jctx *mine)
{
	uint64_t tail = atomic_load_explicit(&victim->c->tail, memory_order_acquire);
	uint64_t head = atomic_load_explicit(&victim->c->head, memory_order_acquire);
	uint32_t inc = victim == mine ? fs->inc : owner_inc(fs, victim->slot);
	struct jview *v;
	size_t n = 0, start = 0;
	int rc = 0;

	if (tail == 0)
		tail = 1;
	if (head <= tail)
		return 0;
	if (head - tail > fs->sb.journal_entries)
		return -EUCLEAN;
	v = calloc(head - tail, sizeof(*v));
	if (!v)
		return -ENOMEM;
	for (uint64_t s = tail; s < head; s++) {
		struct dfs_jentry *e = journal_entry(fs, victim->slot, victim->ctx, s);
		uint64_t w = atomic_load_explicit(&e->word, memory_order_acquire);

		if (DFS_JWORD_SEQ(w) != s)
			continue;	/* never fully written */
		v[n++] = (struct jview){ s, w, e };
	}
	for (size_t i = 0; i <= n && rc == 0; i++) {
		bool boundary = i == n || v[i].e->op == DFS_JOP_BEGIN ||
				v[i].e->op == DFS_JOP_TREE;

		if (!boundary || i == start)
			continue;
		rc = reap_group(victim, mine, inc, v + start, i - start);
		start = i;
	}
	free(v);
	if (rc == 0)
		journal_close_group(victim);
	return rc;
}

/* A dead host was clearing the stale holder bits of some slot: hand that
 * slot back to RETIRED (bits not cleared), so another host clears them
 * and an attach of the slot does not wait for a clearer that is gone. */
static void release_clearings(struct daxfs *fs, int slot)
{
	for (uint32_t t = 0; t < fs->sb.max_hosts; t++) {
		_Atomic uint64_t *ow = &fs->hosts[t].owner;
		uint64_t w = atomic_load_explicit(ow, memory_order_acquire);

		if (DFS_OWNER_STATE(w) == DFS_HOST_CLEARING &&
		    DFS_OWNER_REAPER1(w) == (unsigned)slot + 1)
			atomic_compare_exchange_strong_explicit(ow, &w,
					DFS_OWNER(DFS_OWNER_INC(w), DFS_HOST_RETIRED, 0),
					memory_order_acq_rel, memory_order_relaxed);
	}
}

static void release_slot_tables(struct daxfs *fs, int slot, uint32_t inc)
{
	struct dfs_host *h = &fs->hosts[slot];

	/* Its holder bits stay: a reaped host is not known to be gone (a
	 * stalled daxfsd's containers may still run on its view); they are
	 * cleared once every heartbeat of the slot stood still for lease +
	 * grace (holds_clear_stale). */
	release_clearings(fs, slot);
	hash_reap(fs, slot);
	for (unsigned i = 0; i < DFS_PROCS_PER_HOST; i++) {
		uint64_t c = inc;

		atomic_store_explicit(&h->procs[i].reader_epoch, 0,
				      memory_order_release);
		atomic_compare_exchange_strong_explicit(&h->procs[i].claim, &c, 0,
				memory_order_acq_rel, memory_order_relaxed);
	}
	for (unsigned i = 0; i < DFS_CTX_PER_HOST; i++) {
		uint64_t c = inc;

		atomic_compare_exchange_strong_explicit(&h->ctx[i].claim, &c, 0,
				memory_order_acq_rel, memory_order_relaxed);
	}
	alloc_orphan_chunks(fs, slot, inc);
}

/* Become the reaper of (slot, inc).  0 when we are; 1 when there is
 * nothing to do; -EAGAIN when a live reaper has it. */
static int reap_claim(struct daxfs *fs, int slot, uint32_t inc, int depth,
		      struct daxfs_err *err)
{
	_Atomic uint64_t *ow = &fs->hosts[slot].owner;
	uint64_t me = DFS_OWNER(inc, DFS_HOST_REAPING, fs->slot + 1);

	for (;;) {
		uint64_t w = atomic_load_explicit(ow, memory_order_acquire);
		unsigned r1 = DFS_OWNER_REAPER1(w);

		if (DFS_OWNER_INC(w) != inc || DFS_OWNER_STATE(w) == DFS_HOST_RETIRED ||
		    DFS_OWNER_STATE(w) == DFS_HOST_CLEARING ||
		    DFS_OWNER_STATE(w) == DFS_HOST_FREE)
			return 1;
		if (w == me)
			return 0;
		if (DFS_OWNER_STATE(w) == DFS_HOST_REAPING && r1 &&
		    r1 <= fs->sb.max_hosts) {
			/* Another reaper: take over only if it died too, and
			 * first settle what it did (its undo bookkeeping). */
			uint32_t rinc = owner_inc(fs, (int)r1 - 1);
			enum daxfs_liveness lv;

			pthread_mutex_lock(&fs->lock);
			lv = host_observe_slot(fs, (int)r1 - 1, now_ms());
			pthread_mutex_unlock(&fs->lock);
			if (lv == DAXFS_HOST_ALIVE || lv == DAXFS_HOST_SUSPECT)
				return -EAGAIN;
			if (depth < (int)DFS_MAX_HOSTS && lv == DAXFS_HOST_DEAD &&
			    (int)r1 - 1 != fs->slot) {
				int rc = reap_host_depth(fs, (int)r1 - 1, rinc, depth + 1, err);

				if (rc < 0 && rc != -EAGAIN)
					return rc;
			}
		}
		/* One CAS decides who reaps. */
		if (atomic_compare_exchange_strong_explicit(ow, &w, me,
				memory_order_acq_rel, memory_order_acquire))
			return 0;
	}
}

int reap_host_depth(struct daxfs *fs, int slot, uint32_t inc, int depth,
		    struct daxfs_err *err)
{
	struct jctx mine;
	int ctx, rc;
	uint64_t w;

	if (fs->slot < 0 || !fs->daemon)
		return daxfs_err_set(err, -EPERM, "only an attached daemon can reap");
	rc = reap_claim(fs, slot, inc, depth, err);
	if (rc)
		return rc > 0 ? 0 : rc;
	ctx = ctx_acquire(fs);
	if (ctx < 0)
		return daxfs_err_set(err, -EAGAIN, "no free writer context to reap with");
	journal_bind(fs, fs->slot, ctx, &mine);
	for (unsigned c = 0; c < DFS_CTX_PER_HOST && rc == 0; c++) {
		struct jctx victim;

		journal_bind(fs, slot, (int)c, &victim);
		rc = reap_journal(fs, &victim, &mine);
	}
	journal_close_group(&mine);
	ctx_release(fs, ctx);
	if (rc < 0)
		return daxfs_err_set(err, rc, "reaping host slot %d: %s", slot,
				     strerror(-rc));
	release_slot_tables(fs, slot, inc);
	w = DFS_OWNER(inc, DFS_HOST_REAPING, fs->slot + 1);
	/* Release: every undo above is visible before the slot says so. */
	atomic_store_explicit(&fs->hosts[slot].reap_done, inc, memory_order_release);
	atomic_compare_exchange_strong_explicit(&fs->hosts[slot].owner, &w,
			DFS_OWNER(inc, DFS_HOST_RETIRED, 0),
			memory_order_acq_rel, memory_order_relaxed);
	return 0;
}

int reap_host(struct daxfs *fs, int slot, uint32_t inc, struct daxfs_err *err)
{
	return reap_host_depth(fs, slot, inc, 0, err);
}

int daxfs_reap_dead(struct daxfs *fs, struct daxfs_err *err)
{
	struct daxfs_host_info info[DFS_MAX_HOSTS];
	int n = daxfs_hosts_observe(fs, info, DFS_MAX_HOSTS), reaped = 0;

	for (int i = 0; i < n && i < (int)DFS_MAX_HOSTS; i++) {
		int rc;

		if (info[i].liveness != DAXFS_HOST_DEAD &&
		    info[i].liveness != DAXFS_HOST_REAPING)
			continue;
		/* REAPING: resumed only if its reaper is gone (reap_claim). */
		rc = reap_host(fs, info[i].slot, info[i].incarnation, err);
		if (rc == -EAGAIN)
			continue;
		if (rc < 0)
			return rc;
		reaped++;
	}
	holds_clear_stale(fs);
	return reaped;
}
