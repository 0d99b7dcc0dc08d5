/* Error messages that travel up, and test failpoints. */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "daxfs.h"
#include "region.h"

int daxfs_err_set(struct daxfs_err *err, int neg_errno, const char *fmt, ...)
{
	va_list ap;

	if (err) {
		err->code = -neg_errno;
		va_start(ap, fmt);
		vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
		va_end(ap);
	}
	return neg_errno;
}

int daxfs_err_prefix(struct daxfs_err *err, const char *fmt, ...)
{
	char old[sizeof(err->msg)];
	size_t n;
	va_list ap;

	if (!err)
		return -EIO;
	memcpy(old, err->msg, sizeof(old));
	va_start(ap, fmt);
	vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
	va_end(ap);
	n = strlen(err->msg);
	if (n + 2 < sizeof(err->msg)) {
		memcpy(err->msg + n, ": ", 2);
		n += 2;
		strncpy(err->msg + n, old, sizeof(err->msg) - n - 1);
		err->msg[sizeof(err->msg) - 1] = 0;
	}
	return -err->code;
}

uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Failpoint sites sit on hot paths (every hash insert, every file), so a
 * site must cost next to nothing when no failpoint is set; but tests also
 * count the sites a run passes without one (daxfs_failpoint_count), so it
 * must still count them.  Each thread therefore counts in a counter of
 * its own: one thread-local load, and a plain store to a line no other
 * thread writes, instead of a locked add on a line all threads share.
 * The process count is the sum.  With DAXFS_FAILPOINT=N set (tests), the
 * N-th site of the whole process must be exact, so sites then count in
 * one shared counter instead. */
struct fp_counter {		/* allocated 64-byte aligned, never freed */
	_Atomic uint64_t n;		/* written by its owner thread only */
	atomic_bool busy;		/* owned by a live thread */
	struct fp_counter *next;	/* fixed once the counter is listed */
};

enum { FP_UNKNOWN, FP_COUNT, FP_ARMED };

static atomic_int fp_mode;
static uint64_t fp_target;
static _Atomic uint64_t fp_count;	/* armed sites, and any without a counter */
static _Atomic(struct fp_counter *) fp_counters;	/* only ever grows */
static _Thread_local struct fp_counter *fp_mine;
static pthread_key_t fp_key;
static bool fp_key_ok;
static pthread_once_t fp_once = PTHREAD_ONCE_INIT;

/* A thread ends: its counter (and the sites it counted) go to the next
 * thread that needs one. */
static void fp_counter_release(void *arg)
{
	struct fp_counter *c = arg;

	fp_mine = NULL;		/* a later site in this thread takes one again */
	atomic_store_explicit(&c->busy, false, memory_order_release);
}

static void failpoint_init(void)
{
	const char *s = getenv("DAXFS_FAILPOINT");

	fp_target = s ? strtoull(s, NULL, 10) : 0;
	fp_key_ok = pthread_key_create(&fp_key, fp_counter_release) == 0;
	atomic_store_explicit(&fp_mode, fp_target ? FP_ARMED : FP_COUNT,
			      memory_order_release);
}

/* The calling thread's counter: a released one, or a new one; NULL if
 * there is no memory or no way to release it when the thread ends. */
static struct fp_counter *fp_counter_get(void)
{
	struct fp_counter *c;

	if (!fp_key_ok)
		return NULL;
	for (c = atomic_load_explicit(&fp_counters, memory_order_acquire); c;
	     c = c->next) {
		bool f = false;

		if (atomic_compare_exchange_strong_explicit(&c->busy, &f, true,
				memory_order_acquire, memory_order_relaxed))
			break;
	}
	if (!c) {
		/* A cache line of its own: no false sharing between threads. */
		c = aligned_alloc(64, 64);
		if (!c)
			return NULL;
		memset(c, 0, sizeof(*c));
		atomic_init(&c->busy, true);
		c->next = atomic_load_explicit(&fp_counters, memory_order_relaxed);
		while (!atomic_compare_exchange_weak_explicit(&fp_counters,
				&c->next, c, memory_order_release,
				memory_order_relaxed))
			;
	}
	if (pthread_setspecific(fp_key, c) != 0) {
		atomic_store_explicit(&c->busy, false, memory_order_release);
		return NULL;
	}
	return c;
}

static void failpoint_slow(void)
{
	uint64_t n;

	pthread_once(&fp_once, failpoint_init);
	if (atomic_load_explicit(&fp_mode, memory_order_acquire) == FP_COUNT) {
		if (!fp_mine)
			fp_mine = fp_counter_get();
		if (fp_mine) {
			atomic_fetch_add_explicit(&fp_mine->n, 1, memory_order_relaxed);
			return;
		}
	}
	n = atomic_fetch_add_explicit(&fp_count, 1, memory_order_relaxed) + 1;
	if (fp_target && n == fp_target)
		_exit(99);
}

/* A failpoint site: with DAXFS_FAILPOINT=N the N-th site this process
 * passes ends it at once, leaving the region as a crash there would.  Only
 * tests set the variable. */
void failpoint(void)
{
	struct fp_counter *c = fp_mine;	/* set in FP_COUNT mode only */

	if (c) {
		/* Only this thread writes c->n: no locked add needed. */
		atomic_store_explicit(&c->n, atomic_load_explicit(&c->n,
				      memory_order_relaxed) + 1, memory_order_relaxed);
		return;
	}
	failpoint_slow();
}

uint64_t daxfs_failpoint_count(void)
{
	uint64_t n = atomic_load_explicit(&fp_count, memory_order_relaxed);

	for (struct fp_counter *c = atomic_load_explicit(&fp_counters,
					memory_order_acquire); c; c = c->next)
		n += atomic_load_explicit(&c->n, memory_order_relaxed);
	return n;
}

const char *daxfs_version(void)
{
	return DAXFS_VERSION_STRING;
}
