/* Internal: the per-context intent journal (see format.h). */
#ifndef DAXFS_JOURNAL_H
#define DAXFS_JOURNAL_H

#include "region.h"

struct jctx {
	struct daxfs *fs;
	int slot, ctx;
	struct dfs_ctx *c;
	struct dfs_jentry *ring;
	uint64_t mask;
};

void journal_bind(struct daxfs *fs, int slot, int ctx, struct jctx *j);
struct dfs_jentry *journal_entry(struct daxfs *fs, int slot, int ctx,
				 uint64_t seq);
/* Append a PENDING entry; returns its seq (> 0) or -ENOBUFS when the
 * ring is full. */
int64_t journal_append(struct jctx *j, uint32_t op, uint64_t a, uint64_t b,
		       uint32_t group);
void journal_set(struct jctx *j, uint64_t seq, enum dfs_jstate st);
/* Forget entries before head: the group is closed. */
void journal_close_group(struct jctx *j);
uint64_t journal_head(struct jctx *j);
/* Mark the entry named by an rc tag DONE if it is still PENDING. */
void journal_help(struct daxfs *fs, uint64_t rcword);

#endif
