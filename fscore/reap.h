/* Internal: reaping a dead host's unfinished work. */
#ifndef DAXFS_REAP_H
#define DAXFS_REAP_H

#include "journal.h"

/* Declare (slot, inc) dead and undo its unpublished work; resumes a reap
 * started by a reaper that died.  -EAGAIN if another live host is reaping
 * it now, -ESTALE if the slot moved on. */
int reap_host(struct daxfs *fs, int slot, uint32_t inc, struct daxfs_err *err);
int reap_host_depth(struct daxfs *fs, int slot, uint32_t inc, int depth,
		    struct daxfs_err *err);
/* Undo or finish every entry of one context journal (also used by a
 * builder that aborts). */
int reap_journal(struct daxfs *fs, struct jctx *victim, struct jctx *mine);

#endif
