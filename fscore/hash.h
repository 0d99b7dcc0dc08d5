/* Internal: the lock-free shared hash (see format.h and FORMAT.md). */
#ifndef DAXFS_HASH_H
#define DAXFS_HASH_H

#include "region.h"

/* 0 and *value, or -ENOENT. */
int hash_lookup(struct daxfs *fs, uint32_t kind, const uint8_t key[32],
		uint64_t *value);
/* 0 when inserted; -EEXIST with *existing when the key is present (exactly
 * one concurrent insert of a key wins); -ENOSPC when the table is full;
 * -EAGAIN when a dead host's half-done insert of the same key blocks us
 * (retry after it is reaped). */
int hash_insert(struct daxfs *fs, uint32_t kind, const uint8_t key[32],
		uint64_t value, uint64_t *existing);
/* Remove key if it maps to value: 0 or -ENOENT. */
int hash_remove(struct daxfs *fs, uint32_t kind, const uint8_t key[32],
		uint64_t value);
/* Turn a dead host's unfinished inserts into tombstones. */
int hash_reap(struct daxfs *fs, int slot);
/* Call cb for each VALID entry of kind (0 = all kinds). */
int hash_foreach(struct daxfs *fs, uint32_t kind,
		 int (*cb)(struct daxfs *fs, struct dfs_hslot *s,
			   void *arg), void *arg);
void hash_slot_key(struct dfs_hslot *s, uint8_t key[32]);
uint64_t hash_count(struct daxfs *fs, uint64_t *tombs);

#endif
