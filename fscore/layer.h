/* Internal: layer records and their state word. */
#ifndef DAXFS_LAYER_H
#define DAXFS_LAYER_H

#include "journal.h"

struct dfs_layer *layer_get(struct daxfs *fs, uint64_t rec);
/* The tree of a READY layer, bounds-checked, or NULL. */
struct dfs_tree *tree_get(struct daxfs *fs, uint64_t off, uint64_t len);
/* Find or create the record for diff_id (journaled in j). */
int layer_record(struct jctx *j, const uint8_t diff_id[32], uint64_t *rec,
		 struct daxfs_err *err);
/* Drop every reference the tree at (off,len) holds, journaled in j as
 * group; inodes below from_ino were already done. */
int tree_release(struct jctx *j, uint32_t group, struct dfs_tree *t,
		 uint32_t from_ino, uint64_t victim_base);
/* Finish evicting L (state EVICTING), as its evictor or its reaper. */
int layer_evict_finish(struct jctx *j, uint64_t rec, uint32_t from_ino);

#endif
