/* CPU cache maintenance for the shared daxfs region.
 *
 * The region may live in CXL memory shared by several hosts without
 * hardware coherence between them.  Every access that crosses hosts goes
 * through these three calls, so the policy lives in one place:
 *
 *   cache_flush(p, len)       Write back any dirty cache lines covering
 *                             [p, p+len) so another host sees the stores.
 *                             Call after writing data that is about to be
 *                             published.
 *   cache_fence()             Order the preceding flushes (and stores)
 *                             before later stores, i.e. before the store
 *                             that publishes the data.
 *   cache_invalidate(p, len)  Make the next loads of [p, p+len) come from
 *                             memory.  Call before reading data published
 *                             by another host.  Lines still dirty locally
 *                             are written back, not discarded, so never
 *                             invalidate a range this host is writing.
 *                             It fences internally, so no cache_fence()
 *                             is needed between it and the loads.
 *
 * Publication pattern: write data; cache_flush(data); cache_fence();
 * store the pointer/flag; cache_flush(flag).  Reader: cache_invalidate(flag);
 * load flag; cache_invalidate(data); read data.
 *
 * Modes (process-global):
 *   CACHE_COHERENT     The default, for /dev/shm files and coherent CXL.
 *                      Flush and invalidate do nothing; the fence is a
 *                      sequentially consistent atomic_thread_fence.
 *   CACHE_NONCOHERENT  x86-64 only.  Flush uses clwb if the CPU has it,
 *                      else clflushopt, else clflush; invalidate uses
 *                      clflushopt, else clflush; the fence is mfence.
 *                      The instructions are chosen once from CPUID.
 *
 * cache_init() is called at attach.  Calling it again switches mode; the
 * switch is atomic, but calls already in flight on other threads finish
 * under the old mode, so switch only while no shared data is in transit.
 * Without any cache_init() call the mode is CACHE_COHERENT. */
#ifndef DAXFS_CACHE_H
#define DAXFS_CACHE_H

#include <stdatomic.h>
#include <stddef.h>

enum cache_mode {
	CACHE_COHERENT = 0,
	CACHE_NONCOHERENT = 1,
};

/* Select MODE.  0, -EINVAL for an unknown mode, -ENOTSUP when the mode
 * cannot be provided on this CPU/architecture (the mode is unchanged). */
int cache_init(enum cache_mode mode);

/* Current mode, as passed to the last successful cache_init(). */
enum cache_mode cache_get_mode(void);

/* e.g. "coherent", "noncoherent/clflushopt", "noncoherent/clwb+clflushopt"
 * (flush instruction + invalidate instruction when they differ).  Static
 * string, never NULL. */
const char *cache_mode_name(void);

/* Cache line size used for stepping through ranges, in bytes. */
size_t cache_line_size(void);

void cache_fence(void);

/* The work of cache_flush and cache_invalidate when the mode may be
 * non-coherent; call those, not these. */
void cache_flush_lines(const void *p, size_t len);
void cache_invalidate_lines(const void *p, size_t len);
/* Nonzero while the mode is CACHE_NONCOHERENT (set by cache_init after
 * the policy it selects). */
extern atomic_int cache_noncoherent;

/* In coherent mode flush and invalidate do nothing: the mode check is
 * inline, so hot paths (every hash slot read, every insert) pay one load
 * instead of a call into cache.c.  The out-of-line work re-reads the
 * policy itself.  (cache_fence stays out of line: ThreadSanitizer builds
 * reject the fence it contains in every file that would inline it.) */
static inline void cache_flush(const void *p, size_t len)
{
	if (atomic_load_explicit(&cache_noncoherent, memory_order_acquire))
		cache_flush_lines(p, len);
}

static inline void cache_invalidate(const void *p, size_t len)
{
	if (atomic_load_explicit(&cache_noncoherent, memory_order_acquire))
		cache_invalidate_lines(p, len);
}

#endif
