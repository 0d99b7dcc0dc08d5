/* Internal: the lock-free unit allocator (chunks owned per context). */
#ifndef DAXFS_ALLOC_H
#define DAXFS_ALLOC_H

#include "journal.h"

enum { AREA_META = 0, AREA_DATA = 1 };

static inline struct area *area_of(struct daxfs *fs, int which)
{
	return which == AREA_META ? &fs->meta : &fs->data;
}

/* Find free units for up to `bytes` (at least min_bytes, contiguous) in
 * chunks owned by j's context, claiming new chunks as needed.  Nothing is
 * marked yet: journal the extent, then alloc_mark() it.  -ENOSPC when the
 * area is full. */
int alloc_find(struct jctx *j, int which, uint64_t bytes, uint64_t min_bytes,
	       uint64_t *off, uint64_t *len);
void alloc_mark(struct daxfs *fs, int which, uint64_t off, uint64_t len);
/* Units at off that j's context found were given back (a dropped copy, an
 * aborted file): its next search in that chunk starts no later than there,
 * so the hole is filled first, as a search from the chunk start would. */
void alloc_rewind(struct jctx *j, int which, uint64_t off);
/* Clear the units of [off, off+len); idempotent. */
void alloc_free(struct daxfs *fs, int which, uint64_t off, uint64_t len);
/* Are all units of the extent set? */
bool alloc_is_set(struct daxfs *fs, int which, uint64_t off, uint64_t len);
/* Bytes actually allocated for len bytes. */
uint64_t alloc_round(struct daxfs *fs, int which, uint64_t len);
uint64_t alloc_used_bytes(struct daxfs *fs, int which);
/* On clean detach: our chunks become RELEASED. */
void alloc_release_chunks(struct daxfs *fs);
/* Give back the entirely free chunks of our context ctx (the caller has
 * it), except the one its next allocation starts in: they become RELEASED,
 * adoptable by anyone at once.  Returns how many. */
int alloc_trim_ctx(struct daxfs *fs, int ctx);
/* Reaping: chunks of (slot, inc) become ORPHAN; we start their watch. */
void alloc_orphan_chunks(struct daxfs *fs, int slot, uint32_t inc);
void alloc_state_free(struct daxfs *fs);

#endif
