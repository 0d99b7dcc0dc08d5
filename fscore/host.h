/* Internal: host slots, processes, heartbeats, epochs, contexts. */
#ifndef DAXFS_HOST_H
#define DAXFS_HOST_H

#include "region.h"

void host_detach(struct daxfs *fs);
/* Set our holder bit again on every layer this process holds (after
 * rejoining a new incarnation, whose reaping of the old one cleared them). */
void holds_reassert(struct daxfs *fs);
/* Forget this process's holds (process memory only; at unmap). */
void holds_free(struct daxfs *fs);
void host_stop_heartbeat(struct daxfs *fs);
/* Sample slot's liveness on our clock (fs->lock held). */
enum daxfs_liveness host_observe_slot(struct daxfs *fs, int slot, uint64_t now);
/* Have the holder bits of slot gone stale: the slot is RETIRED (holds not
 * yet cleared) and no process heartbeat of it moved for lease + grace on
 * our clock?  Also starts the observation (fs->lock held). */
bool host_holds_stale(struct daxfs *fs, int slot, uint64_t now);
/* Clear every holder bit of slot (both classes) on every READY layer;
 * with guard, stop with -ESTALE as soon as *guard != want.  Returns the
 * number of layers that had bits. */
int holds_clear_slot(struct daxfs *fs, int slot, _Atomic uint64_t *guard,
		     uint64_t want);
/* Clear the holds of every slot seen stale (a daemon's job; see gc.c).
 * Returns the number of slots cleared. */
int holds_clear_stale(struct daxfs *fs);
/* Sum of the heartbeats of slot's processes of incarnation inc. */
uint64_t host_beats(struct daxfs *fs, int slot, uint32_t inc);
/* Claim one of this host's allocation contexts; -EAGAIN if all busy. */
int ctx_acquire(struct daxfs *fs);
/* Put a context down; its entirely free chunks go back (alloc_trim_ctx). */
void ctx_release(struct daxfs *fs, int ctx);
/* Take context ctx if this incarnation has it and no thread of this
 * process uses it now; ctx_put gives it back untouched. */
bool ctx_take_idle(struct daxfs *fs, int ctx);
void ctx_put(struct daxfs *fs, int ctx);
/* Wait until no attached process may still use offsets retired before
 * this call.  -ETIMEDOUT after timeout_ms. */
int epoch_synchronize(struct daxfs *fs, uint32_t timeout_ms);

#endif
