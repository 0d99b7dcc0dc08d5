/* The intent journal: one ring per (host, context).
 *
 * Only the context's owner appends and changes its entries, except that
 * journal_help() lets anyone mark an entry DONE once the change it
 * announces is visible in a record's rc word (whoever overwrites that tag
 * must first record that the change happened). */
#include <errno.h>

#include "cache.h"
#include "journal.h"

void journal_bind(struct daxfs *fs, int slot, int ctx, struct jctx *j)
{
	uint64_t n = fs->sb.journal_entries;

	j->fs = fs;
	j->slot = slot;
	j->ctx = ctx;
	j->c = &fs->hosts[slot].ctx[ctx];
	j->ring = fs->journals + ((uint64_t)slot * DFS_CTX_PER_HOST + (uint64_t)ctx) * n;
	j->mask = n - 1;
}

struct dfs_jentry *journal_entry(struct daxfs *fs, int slot, int ctx,
				 uint64_t seq)
{
	uint64_t n = fs->sb.journal_entries;

	return fs->journals + ((uint64_t)slot * DFS_CTX_PER_HOST + (uint64_t)ctx) * n +
	       (seq & (n - 1));
}

uint64_t journal_head(struct jctx *j)
{
	return atomic_load_explicit(&j->c->head, memory_order_acquire);
}

int64_t journal_append(struct jctx *j, uint32_t op, uint64_t a, uint64_t b,
		       uint32_t group)
{
	uint64_t head = atomic_load_explicit(&j->c->head, memory_order_relaxed);
	uint64_t tail = atomic_load_explicit(&j->c->tail, memory_order_relaxed);
	struct dfs_jentry *e;

	/* seq 0 is never used so that a zero word means "free". */
	if (head == 0)
		head = 1;
	if (head - tail >= j->mask)
		return -ENOBUFS;	/* distinct from a full area */
	e = &j->ring[head & j->mask];
	e->op = op;
	e->a = a;
	e->b = b;
	e->group = group;
	/* Release: the fields are complete before anyone can match the
	 * seq (a reaper reads the word with acquire). */
	atomic_store_explicit(&e->word, DFS_JWORD(head, DFS_J_PENDING),
			      memory_order_release);
	/* Head moves after the entry is written: a reaper walking
	 * [tail, head) never meets a half-written entry. */
	atomic_store_explicit(&j->c->head, head + 1, memory_order_release);
	cache_flush(e, sizeof(*e));
	return (int64_t)head;
}

void journal_set(struct jctx *j, uint64_t seq, enum dfs_jstate st)
{
	struct dfs_jentry *e = &j->ring[seq & j->mask];

	atomic_store_explicit(&e->word, DFS_JWORD(seq, st), memory_order_release);
	cache_flush(e, sizeof(*e));
}

void journal_close_group(struct jctx *j)
{
	uint64_t head = atomic_load_explicit(&j->c->head, memory_order_relaxed);

	atomic_store_explicit(&j->c->tail, head, memory_order_release);
}

void journal_help(struct daxfs *fs, uint64_t w)
{
	unsigned slot = DFS_RC_SLOT(w);
	struct dfs_jentry *e;
	uint64_t ew;

	if (slot >= fs->sb.max_hosts)
		return;
	e = journal_entry(fs, (int)slot, (int)DFS_RC_CTX(w), DFS_RC_SEQ(w));
	ew = atomic_load_explicit(&e->word, memory_order_acquire);
	if ((uint32_t)DFS_JWORD_SEQ(ew) != DFS_RC_SEQ(w) ||
	    DFS_JWORD_STATE(ew) != DFS_J_PENDING)
		return;
	atomic_compare_exchange_strong_explicit(&e->word, &ew,
			DFS_JWORD(DFS_JWORD_SEQ(ew), DFS_J_DONE),
			memory_order_acq_rel, memory_order_relaxed);
}
