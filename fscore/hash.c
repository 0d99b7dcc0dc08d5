/* The shared hash: open addressing with CAS-claimed slots.
 *
 * Exactly one insert of a key wins, without locks:
 *  1. claim the first EMPTY or TOMB slot of the probe sequence by CAS
 *     (CLAIMED), write key and value, publish KEYED;
 *  2. rescan the whole probe sequence (to its first EMPTY slot) for the
 *     same key.  A VALID copy wins: withdraw.  A KEYED copy at a lower
 *     position wins: withdraw, then wait for it to settle.  A KEYED copy at
 *     a higher position: wait until it settles (it withdraws once it sees
 *     us, or turns VALID if its rescan ran before our claim, and then we
 *     withdraw).  Waits only go from a lower to a higher position or to
 *     an already withdrawn slot, so they cannot form a cycle;
 *  3. publish VALID.
 * The claim and the rescan loads are seq_cst: of two racing inserts, at
 * least one sees the other's claim (store-then-load on both sides).
 *
 * Removal is one CAS VALID -> TOMB from the word under which key and value
 * were checked.  The owner bits of VALID and TOMB words hold a reuse tag:
 * a tombstone keeps the tag of the entry it replaced, and an insert that
 * reuses the slot leaves it VALID (or withdrawn, TOMB) with the next tag.
 * Without it, a remover that checked an entry, then lost the race to
 * remove it, could still win its CAS against a new entry of the same key
 * inserted there by the same host: the word would be bit for bit the old
 * one. */
#include <errno.h>
#include <sched.h>
#include <string.h>
#include <time.h>

#include "cache.h"
#include "hash.h"

static uint64_t key_hash(uint32_t kind, const uint8_t key[32])
{
	uint64_t h;

	/* Keys are sha256 digests: their bytes are already uniform. */
	memcpy(&h, key, 8);
	h ^= (uint64_t)kind * 0x9e3779b97f4a7c15ULL;
	h ^= h >> 29;
	return h;
}

static uint64_t fp_of(uint64_t h)
{
	return (h & DFS_HFP_MASK) | 1;	/* never 0 */
}

static bool slot_is(struct dfs_hslot *s, uint32_t kind, const uint8_t key[32])
{
	if (atomic_load_explicit(&s->kind, memory_order_relaxed) != kind)
		return false;
	for (int i = 0; i < 4; i++) {
		uint64_t k;

		memcpy(&k, key + 8 * i, 8);
		if (atomic_load_explicit(&s->key[i], memory_order_relaxed) != k)
			return false;
	}
	return true;
}

static void slot_fill(struct dfs_hslot *s, uint32_t kind, const uint8_t key[32],
		      uint64_t value)
{
	for (int i = 0; i < 4; i++) {
		uint64_t k;

		memcpy(&k, key + 8 * i, 8);
		atomic_store_explicit(&s->key[i], k, memory_order_relaxed);
	}
	atomic_store_explicit(&s->kind, kind, memory_order_relaxed);
	atomic_store_explicit(&s->value, value, memory_order_relaxed);
}

void hash_slot_key(struct dfs_hslot *s, uint8_t key[32])
{
	for (int i = 0; i < 4; i++) {
		uint64_t k = atomic_load_explicit(&s->key[i], memory_order_relaxed);

		memcpy(key + 8 * i, &k, 8);
	}
}

/* Look key up along its probe sequence from h.  With free_at, also
 * report the probe position of the first EMPTY or TOMB slot met, where
 * an insert starts claiming (no such slot: mask + 1). */
static int lookup_from(struct daxfs *fs, uint32_t kind, const uint8_t key[32],
		       uint64_t h, uint64_t *value, uint64_t *free_at)
{
	uint64_t mask = fs->sb.hash_slots - 1, fp = fp_of(h);

	if (free_at)
		*free_at = mask + 1;
	for (uint64_t i = 0; i <= mask; i++) {
		struct dfs_hslot *s = &fs->hash[(h + i) & mask];
		uint64_t w = atomic_load_explicit(&s->word, memory_order_acquire);

		if (free_at && *free_at > mask &&
		    (DFS_HWORD_STATE(w) == DFS_H_EMPTY ||
		     DFS_HWORD_STATE(w) == DFS_H_TOMB))
			*free_at = i;
		if (DFS_HWORD_STATE(w) == DFS_H_EMPTY)
			break;
		if (DFS_HWORD_STATE(w) != DFS_H_VALID || DFS_HWORD_FP(w) != fp)
			continue;
		cache_invalidate(s, sizeof(*s));
		if (slot_is(s, kind, key)) {
			*value = atomic_load_explicit(&s->value, memory_order_relaxed);
			/* The slot may have been removed and reused while we
			 * read it: only a word unchanged since proves the copy. */
			if (atomic_load_explicit(&s->word, memory_order_acquire) == w)
				return 0;
			i--;	/* look at this slot again */
		}
	}
	return -ENOENT;
}

int hash_lookup(struct daxfs *fs, uint32_t kind, const uint8_t key[32],
		uint64_t *value)
{
	return lookup_from(fs, kind, key, key_hash(kind, key), value, NULL);
}

static void pause_briefly(unsigned *spins)
{
	if (++*spins < 64) {
		sched_yield();
	} else {
		struct timespec ts = { 0, 200000 };

		nanosleep(&ts, NULL);
	}
}

/* Has the wait that *deadline bounds (twice the lease) run out?  The clock
 * is first read when a wait begins (*deadline 0): an insert that never
 * waits never reads it, and a clock read costs as much as the rest of an
 * uncontended insert. */
static bool wait_expired(struct daxfs *fs, uint64_t *deadline)
{
	uint64_t now = now_ms();

	if (!*deadline)
		*deadline = now + 2ULL * fs->lease_ms;
	return now > *deadline;
}

/* Wait while slot s is CLAIMED (its key is being written). */
static uint64_t wait_keyed(struct daxfs *fs, struct dfs_hslot *s, uint64_t w,
			   uint64_t *deadline)
{
	unsigned spins = 0;

	while (DFS_HWORD_STATE(w) == DFS_H_CLAIMED && !wait_expired(fs, deadline)) {
		pause_briefly(&spins);
		w = atomic_load_explicit(&s->word, memory_order_seq_cst);
	}
	return w;
}

enum scan_verdict { SCAN_WIN, SCAN_LOSE, SCAN_RETRY, SCAN_STUCK };

/* Step 2: look for another copy of key around our slot at index mine. */
static enum scan_verdict rescan(struct daxfs *fs, uint32_t kind,
				const uint8_t key[32], uint64_t h,
				uint64_t mine, uint64_t *existing)
{
	uint64_t mask = fs->sb.hash_slots - 1, fp = fp_of(h);
	uint64_t mypos = (mine - h) & mask;
	uint64_t deadline = 0;	/* set by the first wait */
	unsigned spins = 0;

	for (uint64_t i = 0; i <= mask; i++) {
		uint64_t idx = (h + i) & mask;
		struct dfs_hslot *s = &fs->hash[idx];
		uint64_t w;

		if (idx == mine)
			continue;
		w = atomic_load_explicit(&s->word, memory_order_seq_cst);
		if (DFS_HWORD_STATE(w) == DFS_H_EMPTY)
			return SCAN_WIN;
		if (DFS_HWORD_FP(w) != fp)
			continue;
		w = wait_keyed(fs, s, w, &deadline);
		switch (DFS_HWORD_STATE(w)) {
		case DFS_H_CLAIMED:
			return SCAN_STUCK;
		case DFS_H_VALID:
			if (!slot_is(s, kind, key))
				continue;
			*existing = atomic_load_explicit(&s->value, memory_order_relaxed);
			return SCAN_LOSE;
		case DFS_H_KEYED:
			if (!slot_is(s, kind, key))
				continue;
			if (i < mypos)
				return SCAN_RETRY;	/* lower wins */
			/* Higher: wait for it to settle, then look again. */
			while (atomic_load_explicit(&s->word, memory_order_seq_cst) == w) {
				if (wait_expired(fs, &deadline))
					return SCAN_STUCK;
				pause_briefly(&spins);
			}
			i--;
			continue;
		default:
			continue;
		}
	}
	return SCAN_WIN;
}

/* The tag an insert gives the slot it claimed from word w. */
static uint64_t next_tag(uint64_t w)
{
	return DFS_HWORD_STATE(w) == DFS_H_TOMB ? (DFS_HWORD_SLOT(w) + 1) & 0x3f : 0;
}

/* Claim the first EMPTY or TOMB slot from probe position start on.  The
 * caller's lookup saw every slot before start neither EMPTY nor TOMB. */
static int claim_slot(struct daxfs *fs, uint64_t h, uint64_t start,
		      uint64_t *mine, uint64_t *tag)
{
	uint64_t mask = fs->sb.hash_slots - 1, fp = fp_of(h);
	uint64_t claimed = DFS_HWORD(DFS_H_CLAIMED, (uint64_t)fs->slot & 0x3f, fp);

	for (uint64_t i = start; i <= mask; i++) {
		uint64_t idx = (h + i) & mask;
		struct dfs_hslot *s = &fs->hash[idx];
		uint64_t w = atomic_load_explicit(&s->word, memory_order_acquire);

		while (DFS_HWORD_STATE(w) == DFS_H_EMPTY ||
		       DFS_HWORD_STATE(w) == DFS_H_TOMB) {
			/* seq_cst: the claim must be ordered before our
			 * rescan loads (see the comment at the top). */
			if (atomic_compare_exchange_strong_explicit(&s->word, &w,
					claimed, memory_order_seq_cst,
					memory_order_acquire)) {
				*mine = idx;
				*tag = next_tag(w);
				return 0;
			}
		}
	}
	return -ENOSPC;
}

/* Is an insert of key still in flight anywhere in its probe sequence? */
static bool key_pending(struct daxfs *fs, uint32_t kind, const uint8_t key[32],
			uint64_t h)
{
	uint64_t mask = fs->sb.hash_slots - 1, fp = fp_of(h);

	for (uint64_t i = 0; i <= mask; i++) {
		struct dfs_hslot *s = &fs->hash[(h + i) & mask];
		uint64_t w = atomic_load_explicit(&s->word, memory_order_seq_cst);
		unsigned st = DFS_HWORD_STATE(w);

		if (st == DFS_H_EMPTY)
			return false;
		if (DFS_HWORD_FP(w) != fp)
			continue;
		if (st == DFS_H_CLAIMED ||
		    (st == DFS_H_KEYED && slot_is(s, kind, key)))
			return true;
	}
	return false;
}

/* We withdrew in favour of a lower copy: learn the winner's value, or
 * start over if every other copy withdrew too. */
static int await_winner(struct daxfs *fs, uint32_t kind, const uint8_t key[32],
			uint64_t h, uint64_t *existing)
{
	uint64_t deadline = now_ms() + 2ULL * fs->lease_ms;
	unsigned spins = 0;

	for (;;) {
		if (hash_lookup(fs, kind, key, existing) == 0)
			return -EEXIST;
		if (!key_pending(fs, kind, key, h))
			return -EAGAIN;		/* nobody won: retry */
		if (now_ms() > deadline)
			return -ETIMEDOUT;
		pause_briefly(&spins);
	}
}

static int insert_once(struct daxfs *fs, uint32_t kind, const uint8_t key[32],
		       uint64_t value, uint64_t *existing)
{
	uint64_t h = key_hash(kind, key), fp = fp_of(h), mine, tag, start;
	uint64_t keyed = DFS_HWORD(DFS_H_KEYED, (uint64_t)fs->slot, fp);
	struct dfs_hslot *s;
	enum scan_verdict vd;

	/* Step 1, and where step 2 starts: no second walk over the slots
	 * the lookup has just passed. */
	if (lookup_from(fs, kind, key, h, existing, &start) == 0)
		return -EEXIST;
	if (claim_slot(fs, h, start, &mine, &tag) < 0)
		return -ENOSPC;
	failpoint();
	s = &fs->hash[mine];
	slot_fill(s, kind, key, value);
	cache_flush(s, sizeof(*s));
	cache_fence();
	/* seq_cst store: key and value are complete before anyone sees
	 * KEYED, and it is ordered before our rescan loads. */
	atomic_store_explicit(&s->word, keyed, memory_order_seq_cst);
	vd = rescan(fs, kind, key, h, mine, existing);
	if (vd == SCAN_WIN) {
		uint64_t w = keyed;

		if (atomic_compare_exchange_strong_explicit(&s->word, &w,
				DFS_HWORD(DFS_H_VALID, tag, fp),
				memory_order_seq_cst, memory_order_relaxed))
			return 0;
		return -ESTALE;		/* a reaper cleared our slot */
	}
	/* Withdraw: the slot becomes a tombstone, reusable at once. */
	atomic_store_explicit(&s->word, DFS_HWORD(DFS_H_TOMB, tag, 0),
			      memory_order_seq_cst);
	if (vd == SCAN_LOSE)
		return -EEXIST;
	if (vd == SCAN_STUCK)
		return -EAGAIN;
	return await_winner(fs, kind, key, h, existing);
}

int hash_insert(struct daxfs *fs, uint32_t kind, const uint8_t key[32],
		uint64_t value, uint64_t *existing)
{
	uint64_t dummy, live;
	int rc = -EAGAIN;

	if (fs->slot < 0)
		return -EPERM;
	if (!existing)
		existing = &dummy;
	/* Keep an eighth of the slots free so probes stay short and meet
	 * an EMPTY slot.  The count is approximate (racing inserts may pass
	 * together); the hard limit is claim_slot finding no slot. */
	live = atomic_load_explicit(&fs->shared->hash_live, memory_order_relaxed);
	if (live >= fs->sb.hash_slots - fs->sb.hash_slots / 8)
		return -ENOSPC;
	for (int tries = 0; tries < 16 && rc == -EAGAIN; tries++)
		rc = insert_once(fs, kind, key, value, existing);
	if (rc == 0)
		atomic_fetch_add_explicit(&fs->shared->hash_live, 1,
					  memory_order_relaxed);
	return rc;
}

int hash_remove(struct daxfs *fs, uint32_t kind, const uint8_t key[32],
		uint64_t value)
{
	uint64_t mask = fs->sb.hash_slots - 1, h = key_hash(kind, key);
	uint64_t fp = fp_of(h);

	for (uint64_t i = 0; i <= mask; i++) {
		struct dfs_hslot *s = &fs->hash[(h + i) & mask];
		uint64_t w = atomic_load_explicit(&s->word, memory_order_acquire);

		if (DFS_HWORD_STATE(w) == DFS_H_EMPTY)
			break;
		if (DFS_HWORD_STATE(w) != DFS_H_VALID || DFS_HWORD_FP(w) != fp ||
		    !slot_is(s, kind, key) ||
		    atomic_load_explicit(&s->value, memory_order_relaxed) != value)
			continue;
		failpoint();
		if (atomic_compare_exchange_strong_explicit(&s->word, &w,
				DFS_HWORD(DFS_H_TOMB, DFS_HWORD_SLOT(w), 0),
				memory_order_seq_cst, memory_order_relaxed)) {
			atomic_fetch_sub_explicit(&fs->shared->hash_live, 1,
						  memory_order_relaxed);
			return 0;
		}
		return -ENOENT;	/* someone else removed it first */
	}
	return -ENOENT;
}

int hash_reap(struct daxfs *fs, int slot)
{
	int n = 0;

	for (uint64_t i = 0; i < fs->sb.hash_slots; i++) {
		struct dfs_hslot *s = &fs->hash[i];
		uint64_t w = atomic_load_explicit(&s->word, memory_order_acquire);
		unsigned st = DFS_HWORD_STATE(w);

		if ((st != DFS_H_CLAIMED && st != DFS_H_KEYED) ||
		    DFS_HWORD_SLOT(w) != (unsigned)slot)
			continue;
		if (atomic_compare_exchange_strong_explicit(&s->word, &w,
				DFS_HWORD(DFS_H_TOMB, 0, 0), memory_order_seq_cst,
				memory_order_relaxed))
			n++;
	}
	return n;
}

int hash_foreach(struct daxfs *fs, uint32_t kind,
		 int (*cb)(struct daxfs *fs, struct dfs_hslot *s, void *arg),
		 void *arg)
{
	for (uint64_t i = 0; i < fs->sb.hash_slots; i++) {
		struct dfs_hslot *s = &fs->hash[i];
		uint64_t w = atomic_load_explicit(&s->word, memory_order_acquire);
		int rc;

		if (DFS_HWORD_STATE(w) != DFS_H_VALID)
			continue;
		if (kind && atomic_load_explicit(&s->kind, memory_order_relaxed) != kind)
			continue;
		rc = cb(fs, s, arg);
		if (rc)
			return rc;
	}
	return 0;
}

uint64_t hash_count(struct daxfs *fs, uint64_t *tombs)
{
	uint64_t n = 0, t = 0;

	for (uint64_t i = 0; i < fs->sb.hash_slots; i++) {
		unsigned st = DFS_HWORD_STATE(atomic_load_explicit(&fs->hash[i].word,
							memory_order_relaxed));

		n += st == DFS_H_VALID;
		t += st == DFS_H_TOMB;
	}
	if (tombs)
		*tombs = t;
	return n;
}
