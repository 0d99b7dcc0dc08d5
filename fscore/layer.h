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
/* Start evicting rec: journal TREE in j, then one CAS from READY with no
 * holders (and, unless any_ru, the recently-used bit clear) to EVICTING.
 * Returns the TREE entry's seq; -EBUSY (held or recently used) or -ENOENT
 * (not READY) with the entry UNDONE; or -errno. */
int64_t evict_start(struct jctx *j, uint64_t rec, bool any_ru);
/* Undo a started eviction before anything was released (EVICTING ->
 * READY, entry seq UNDONE). */
int evict_rollback(struct jctx *j, uint64_t rec, int64_t seq);
int layer_fill(struct dfs_layer *l, struct daxfs_layer_info *li);
/* Finish evicting L (state EVICTING), as its evictor or its reaper. */
int layer_evict_finish(struct jctx *j, uint64_t rec, uint32_t from_ino);

#endif
