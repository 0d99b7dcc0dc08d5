/* Internal: pinned layers and the multi-host clock. */
#ifndef DAXFS_GC_H
#define DAXFS_GC_H

#include "region.h"

/* The layer records of every pinned image's chain, sorted. */
struct pinset {
	uint64_t *recs;
	size_t n, cap;
};

/* Walk the pinned images (inside a read section of its own). */
int pinset_build(struct daxfs *fs, struct pinset *p);
bool pinset_has(const struct pinset *p, uint64_t rec);
void pinset_free(struct pinset *p);
/* Is layer record rec pinned right now? */
bool layer_pinned(struct daxfs *fs, uint64_t rec);

#endif
