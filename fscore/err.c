/* Error messages that travel up, and test failpoints. */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
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

static _Atomic uint64_t fp_count;
static uint64_t fp_target;
static pthread_once_t fp_once = PTHREAD_ONCE_INIT;

static void failpoint_init(void)
{
	const char *s = getenv("DAXFS_FAILPOINT");

	fp_target = s ? strtoull(s, NULL, 10) : 0;
}

/* A failpoint site: with DAXFS_FAILPOINT=N the N-th site this process
 * passes ends it at once, leaving the region as a crash there would.  Only
 * tests set the variable. */
void failpoint(void)
{
	uint64_t n;

	pthread_once(&fp_once, failpoint_init);
	n = atomic_fetch_add_explicit(&fp_count, 1, memory_order_relaxed) + 1;
	if (fp_target && n == fp_target)
		_exit(99);
}

uint64_t daxfs_failpoint_count(void)
{
	return atomic_load_explicit(&fp_count, memory_order_relaxed);
}

const char *daxfs_version(void)
{
	return DAXFS_VERSION_STRING;
}
