/* Internal: the attached region and bounds-checked access to it. */
#ifndef DAXFS_REGION_H
#define DAXFS_REGION_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "daxfs.h"
#include "format.h"

struct area {
	struct dfs_area_geom g;
	uint64_t units_per_chunk;
	uint64_t words_per_chunk;
	_Atomic uint64_t *owners;	/* chunk owner words */
	_Atomic uint64_t *bitmap;
};

/* Chunks one allocation context owns in one area (process memory). */
struct alloc_ctx {
	uint64_t *chunks;
	uint32_t n, cap;
	uint32_t cur;		/* index into chunks to try first */
	uint64_t hint;		/* bitmap word of chunks[cur] where the next
				 * search starts (0: from the chunk start) */
	bool loaded;
};

/* When this process first saw a chunk carry a given ORPHAN owner word
 * (the word names the reaped incarnation, so a chunk orphaned again later
 * starts a new watch). */
struct orphan_watch {
	uint64_t word;
	uint64_t since_ms;
};

struct host_obs {
	uint64_t owner;		/* owner word when last sampled */
	uint64_t beats;		/* sum of heartbeats when last changed */
	uint64_t changed_ms;	/* our monotonic clock at that change */
	bool seen;
	/* For stale holder bits: the sum of every process heartbeat of the
	 * slot, whoever claims the process entry, and when it last moved. */
	bool all_seen;
	uint64_t all_beats;
	uint64_t all_changed_ms;
};

/* Process-local state of one attached region.  Everything here is owned by
 * this process; fs->lock guards ctx_busy, ctx_trimming, holds[], obs[] and
 * orphan_seen. */
struct daxfs {
	uint8_t *base;		/* superblock address */
	uint64_t size;
	void *map;
	size_t maplen;
	int fd;
	bool owns_map;
	int readonly;
	uint32_t lease_ms, grace_ms;

	struct dfs_super sb;	/* validated copy */
	struct dfs_shared *shared;
	struct dfs_host *hosts;
	struct dfs_hslot *hash;
	struct dfs_jentry *journals;
	struct area meta, data;

	int slot;		/* -1 until attached */
	uint32_t inc;
	/* Atomic: a view's rejoin moves it while its heartbeat thread and
	 * readers use it. */
	_Atomic int proc;
	bool daemon;
	bool view;		/* holder bits of the view class */

	pthread_mutex_t lock;
	bool ctx_busy[DFS_CTX_PER_HOST];
	bool ctx_trimming[DFS_CTX_PER_HOST];	/* busy for daxfs_alloc_trim */
	struct alloc_ctx actx[DFS_CTX_PER_HOST][2];	/* [ctx][meta, data] */
	struct orphan_watch *orphan_seen[2];	/* per chunk, under lock */
	uint64_t *prefaulted[2];	/* bit per chunk: mapped in by chunk_claim */
	struct hold *holds;		/* layers this process holds */
	struct host_obs obs[DFS_MAX_HOSTS];
	_Atomic int readers;	/* threads inside read_enter */
	pthread_t hb_thread;
	_Atomic int hb_run;
	bool hb_started;
};

/* Pointer to [off, off+len) of the region, or NULL if it falls outside.
 * Every offset read from the region goes through here before use. */
static inline void *reg_ptr(struct daxfs *fs, uint64_t off, uint64_t len)
{
	if (off > fs->size || len > fs->size - off)
		return 0;
	return fs->base + off;
}

static inline uint64_t reg_off(struct daxfs *fs, const void *p)
{
	return (uint64_t)((const uint8_t *)p - fs->base);
}

/* Is [off, off+len) inside area a? */
static inline bool area_contains(const struct area *a, uint64_t off,
				 uint64_t len)
{
	uint64_t end = a->g.base + (a->g.nchunks << a->g.chunk_shift);

	return off >= a->g.base && off <= end && len <= end - off;
}

uint64_t now_ms(void);
void failpoint(void);

/* Shared with the CLI through daxfs.h: validation of a superblock copy. */
int super_check(const struct dfs_super *sb, uint64_t avail,
		struct daxfs_err *err);

#endif
