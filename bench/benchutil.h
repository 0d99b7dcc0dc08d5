/* Helpers shared by the benchmarks: clocks, medians, a forked start gate
 * and tree removal.  Functions return 0 (or a count) or a negative errno. */
#ifndef DAXFS_BENCHUTIL_H
#define DAXFS_BENCHUTIL_H

#include <errno.h>
#include <stdarg.h>
#include <ftw.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define BENCH_MAX_PROCS 16

static inline int64_t bench_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static inline int bench_cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

/* Median of n values (n <= 64); the input is left as it was. */
static inline double bench_median(const double *v, int n)
{
	double s[64];

	if (n <= 0 || n > 64)
		return 0;
	memcpy(s, v, sizeof(double) * (size_t)n);
	qsort(s, (size_t)n, sizeof(double), bench_cmp_double);
	return n % 2 ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
}

/* A job run by nproc forked processes at the same time.  setup and
 * teardown are not timed; run is.  Each gets the process index. */
struct bench_job {
	int nproc;
	int (*setup)(void *arg, int idx);
	int (*run)(void *arg, int idx);
	void (*teardown)(void *arg, int idx);
	void *arg;
};

struct bench_slot {
	int64_t t0, t1;
	int rc;
	int pad;
};

struct bench_shared {
	volatile int abort;
	int pad;
	struct bench_slot s[BENCH_MAX_PROCS];
};

static inline int bench_write_all(int fd, const void *buf, size_t len)
{
	const char *p = buf;

	while (len) {
		ssize_t n = write(fd, p, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

static inline void bench_child(const struct bench_job *j, struct bench_shared *sh,
			       int idx, int ready_fd, int go_fd)
{
	struct bench_slot *s = &sh->s[idx];
	char c, st;
	ssize_t n;
	int rc;

	rc = j->setup ? j->setup(j->arg, idx) : 0;
	st = rc < 0 ? 'E' : 'R';
	if (bench_write_all(ready_fd, &st, 1) < 0 && rc == 0)
		rc = -EPIPE;
	close(ready_fd);
	/* The gate opens when the parent closes its end: read sees EOF. */
	do {
		n = read(go_fd, &c, 1);
	} while (n < 0 && errno == EINTR);
	close(go_fd);
	if (rc == 0 && !sh->abort) {
		s->t0 = bench_now_ns();
		rc = j->run(j->arg, idx);
		s->t1 = bench_now_ns();
	} else if (rc == 0) {
		rc = -ECANCELED;
	}
	if (j->teardown)
		j->teardown(j->arg, idx);
	s->rc = rc;
	_exit(rc < 0 ? 1 : 0);
}

/* Run the job; *seconds is from the first start to the last end. */
static inline int bench_run(const struct bench_job *j, double *seconds)
{
	struct bench_shared *sh;
	pid_t pid[BENCH_MAX_PROCS];
	int ready[2] = { -1, -1 }, go[2] = { -1, -1 };
	int started = 0, rc = 0, nready = 0;
	int64_t t0 = INT64_MAX, t1 = 0;

	if (j->nproc < 1 || j->nproc > BENCH_MAX_PROCS)
		return -EINVAL;
	sh = mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE,
		  MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (sh == MAP_FAILED)
		return -errno;
	memset(sh, 0, sizeof(*sh));
	if (pipe(ready) < 0 || pipe(go) < 0) {
		rc = -errno;
		goto out;
	}
	fflush(stdout);
	fflush(stderr);
	for (; started < j->nproc; started++) {
		sh->s[started].rc = -ECHILD;
		pid[started] = fork();
		if (pid[started] < 0) {
			rc = -errno;
			sh->abort = 1;
			break;
		}
		if (pid[started] == 0) {
			close(ready[0]);
			close(go[1]);
			bench_child(j, sh, started, ready[1], go[0]);
		}
	}
	close(ready[1]);
	ready[1] = -1;
	while (nready < started) {
		char c;
		ssize_t n = read(ready[0], &c, 1);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;	/* a child died before reporting */
		if (c != 'R')
			sh->abort = 1;
		nready++;
	}
	if (nready < started)
		sh->abort = 1;
	close(go[1]);
	go[1] = -1;
	for (int i = 0; i < started; i++) {
		int status = 0;

		while (waitpid(pid[i], &status, 0) < 0) {
			if (errno != EINTR) {
				if (rc == 0)
					rc = -errno;
				break;
			}
		}
		if (rc == 0 && (!WIFEXITED(status) || WEXITSTATUS(status) != 0)) {
			if (WIFSIGNALED(status))
				fprintf(stderr, "bench: process %d killed by signal %d\n",
					i, WTERMSIG(status));
			rc = sh->s[i].rc < 0 ? sh->s[i].rc : -ECHILD;
		}
	}
	for (int i = 0; rc == 0 && i < started; i++) {
		if (sh->s[i].t0 < t0)
			t0 = sh->s[i].t0;
		if (sh->s[i].t1 > t1)
			t1 = sh->s[i].t1;
	}
	if (rc == 0)
		*seconds = (double)(t1 - t0) / 1e9;
out:
	for (int i = 0; i < 2; i++) {
		if (ready[i] >= 0)
			close(ready[i]);
		if (go[i] >= 0)
			close(go[i]);
	}
	munmap(sh, sizeof(*sh));
	return rc;
}

/* Map every page of [p, p+len) writable now, so a timed run does not
 * take first-touch faults. */
static inline int bench_prefault(void *p, size_t len)
{
	uintptr_t pg = (uintptr_t)sysconf(_SC_PAGESIZE);
	uintptr_t a = (uintptr_t)p & ~(pg - 1);
	uintptr_t e = ((uintptr_t)p + len + pg - 1) & ~(pg - 1);

	return madvise((void *)a, e - a, MADV_POPULATE_WRITE) < 0 ? -errno : 0;
}

/* A decimal option value in [lo, hi]; -EINVAL otherwise. */
static inline int bench_parse_uint(const char *s, unsigned lo, unsigned hi, unsigned *out)
{
	char *end;
	unsigned long v;

	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno || end == s || *end || v < lo || v > hi)
		return -EINVAL;
	*out = (unsigned)v;
	return 0;
}

/* snprintf into buf; -ENAMETOOLONG if it does not fit. */
__attribute__((format(printf, 3, 4)))
static inline int bench_path(char *buf, size_t n, const char *fmt, ...)
{
	va_list ap;
	int k;

	va_start(ap, fmt);
	k = vsnprintf(buf, n, fmt, ap);
	va_end(ap);
	return k < 0 || (size_t)k >= n ? -ENAMETOOLONG : 0;
}

/* ---- removing a directory tree ---- */

static long bench_rm_files;

static inline int bench_rm_one(const char *path, const struct stat *st,
			       int type, struct FTW *ftw)
{
	(void)ftw;
	if (type == FTW_DP)
		return rmdir(path) < 0 ? -1 : 0;
	if (S_ISREG(st->st_mode))
		bench_rm_files++;
	return unlink(path) < 0 ? -1 : 0;
}

/* Remove path and everything below it; returns the number of regular
 * files removed.  A missing path is not an error. */
static inline long bench_rm_tree(const char *path)
{
	struct stat st;

	if (lstat(path, &st) < 0)
		return errno == ENOENT ? 0 : -errno;
	bench_rm_files = 0;
	if (nftw(path, bench_rm_one, 32, FTW_DEPTH | FTW_PHYS) != 0)
		return errno ? -errno : -EIO;
	return bench_rm_files;
}

/* Deterministic generator (splitmix64). */
static inline uint64_t bench_rand(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

static inline void bench_fill(void *buf, size_t len, uint64_t seed)
{
	uint8_t *p = buf;
	uint64_t s = seed, v;

	while (len >= 8) {
		v = bench_rand(&s);
		memcpy(p, &v, 8);
		p += 8;
		len -= 8;
	}
	if (len) {
		v = bench_rand(&s);
		memcpy(p, &v, len);
	}
}

#endif
