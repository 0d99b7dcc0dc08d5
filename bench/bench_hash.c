/* Concurrent insert throughput of the region's lock-free hash, against a
 * table of the same slot layout guarded by one process-shared mutex.
 *
 * P processes (1, 2, 4) each insert N distinct 32-byte keys at the same
 * time.  Lock-free: each process opens a fresh region and attaches as its
 * own host, then calls hash_insert.  Mutex: each process maps one table
 * in a MAP_SHARED file and inserts under a PTHREAD_PROCESS_SHARED mutex
 * (linear probing, memcmp of the keys).  Both tables have the same number
 * of slots, sized so that they end a run a quarter full.  Each process
 * maps its table's slots in before the timed part starts (a running
 * daemon has its region mapped long before it inserts).
 *
 *   bench_hash [-d DIR] [-r REPS] [-n KEYS_PER_PROCESS]
 *
 * DIR (default /dev/shm) should be on tmpfs. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "benchutil.h"
#include "daxfs.h"
#include "format.h"
#include "hash.h"

#define MAX_REPS 15
#define NPROCS 3
static const int procs[NPROCS] = { 1, 2, 4 };

enum impl { LOCKFREE = 0, MUTEX = 1, NIMPLS };

/* ---- the mutex baseline: same slot layout as struct dfs_hslot ---- */

struct mslot {
	uint64_t word;		/* 0 = empty, 1 = used */
	uint64_t value;
	uint8_t key[32];
	uint64_t kind;
	uint64_t reserved;
};
_Static_assert(sizeof(struct mslot) == sizeof(struct dfs_hslot),
	       "baseline slot must match the region's");

struct mhdr {
	pthread_mutex_t lock;
	uint64_t nslots;
	uint64_t count;
};
#define MHDR_BYTES 4096
_Static_assert(sizeof(struct mhdr) <= MHDR_BYTES, "table header size");

struct mtable {
	void *map;
	size_t maplen;
	struct mhdr *hdr;
	struct mslot *slots;
};

/* The region's probe start (hash.c), so both tables probe the same
 * slots for the same keys. */
static uint64_t key_hash(uint32_t kind, const uint8_t key[32])
{
	uint64_t h;

	memcpy(&h, key, 8);
	h ^= (uint64_t)kind * 0x9e3779b97f4a7c15ULL;
	h ^= h >> 29;
	return h;
}

static int mt_insert(struct mtable *t, uint32_t kind, const uint8_t key[32],
		     uint64_t value)
{
	uint64_t mask = t->hdr->nslots - 1, h = key_hash(kind, key);
	int rc = -ENOSPC, e;

	e = pthread_mutex_lock(&t->hdr->lock);
	if (e)
		return -e;
	if (t->hdr->count >= t->hdr->nslots - t->hdr->nslots / 8)
		goto out;
	for (uint64_t i = 0; i <= mask; i++) {
		struct mslot *s = &t->slots[(h + i) & mask];

		if (!s->word) {
			memcpy(s->key, key, 32);
			s->kind = kind;
			s->value = value;
			s->word = 1;
			t->hdr->count++;
			rc = 0;
			break;
		}
		if (s->kind == kind && !memcmp(s->key, key, 32)) {
			rc = -EEXIST;
			break;
		}
	}
out:
	e = pthread_mutex_unlock(&t->hdr->lock);
	return e ? -e : rc;
}

static int mt_map(const char *path, uint64_t nslots, int create,
		  struct mtable *t)
{
	size_t len = MHDR_BYTES + nslots * sizeof(struct mslot);
	int fd, rc = 0;

	memset(t, 0, sizeof(*t));
	fd = open(path, O_RDWR | O_CLOEXEC | (create ? O_CREAT | O_EXCL : 0), 0600);
	if (fd < 0)
		return -errno;
	if (create) {
		/* Allocate the memory now, as mkfs does for a region. */
		rc = -posix_fallocate(fd, 0, (off_t)len);
		if (rc < 0)
			goto out;
	}
	t->map = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (t->map == MAP_FAILED) {
		t->map = NULL;
		rc = -errno;
		goto out;
	}
	t->maplen = len;
	t->hdr = t->map;
	t->slots = (struct mslot *)((uint8_t *)t->map + MHDR_BYTES);
out:
	close(fd);
	return rc;
}

static void mt_unmap(struct mtable *t)
{
	if (t->map)
		munmap(t->map, t->maplen);
	memset(t, 0, sizeof(*t));
}

/* Create the table file: zeroed slots (written once, like mkfs) and a
 * process-shared mutex. */
static int mt_create(const char *path, uint64_t nslots)
{
	pthread_mutexattr_t at;
	struct mtable t;
	int rc, e;

	rc = mt_map(path, nslots, 1, &t);
	if (rc < 0)
		return rc;
	memset(t.map, 0, t.maplen);
	t.hdr->nslots = nslots;
	e = pthread_mutexattr_init(&at);
	if (e == 0) {
		e = pthread_mutexattr_setpshared(&at, PTHREAD_PROCESS_SHARED);
		if (e == 0)
			e = pthread_mutex_init(&t.hdr->lock, &at);
		pthread_mutexattr_destroy(&at);
	}
	mt_unmap(&t);
	return -e;
}

static int mt_finish(const char *path, uint64_t nslots, uint64_t *count)
{
	struct mtable t;
	int rc = mt_map(path, nslots, 0, &t);

	if (rc < 0)
		return rc;
	*count = 0;
	for (uint64_t i = 0; i < nslots; i++)
		*count += t.slots[i].word != 0;
	if (*count != t.hdr->count)
		rc = -EIO;
	if (pthread_mutex_destroy(&t.hdr->lock) != 0 && rc == 0)
		rc = -EIO;
	mt_unmap(&t);
	return rc;
}

/* ---- jobs ---- */

struct job_ctx {
	enum impl impl;
	const char *path;
	uint64_t nkeys, nslots;
	uint64_t seed;
	uint8_t *keys;		/* per process, generated in setup */
	struct daxfs *fs;
	struct mtable t;
};

static int job_setup(void *arg, int idx)
{
	struct job_ctx *c = arg;
	int rc;

	c->keys = malloc(c->nkeys * 32);
	if (!c->keys)
		return -ENOMEM;
	/* Uniform random keys (like sha256 digests), distinct per process. */
	bench_fill(c->keys, c->nkeys * 32, c->seed * 64 + (uint64_t)idx);
	if (c->impl == MUTEX) {
		rc = mt_map(c->path, c->nslots, 0, &c->t);
		if (rc == 0)
			rc = bench_prefault(c->t.slots, c->nslots * sizeof(struct mslot));
		if (rc < 0)
			fprintf(stderr, "bench_hash: map %s: %s\n", c->path,
				strerror(-rc));
	} else {
		struct daxfs_open_opts oo = { .path = c->path };
		struct daxfs_host_opts ho = { .kind = DAXFS_PROC_DAEMON };
		struct daxfs_err err = { 0 };
		char name[32];

		ho.uuid[0] = 0xbe;
		ho.uuid[1] = 0x4a;
		ho.uuid[15] = (uint8_t)(idx + 1);
		snprintf(name, sizeof(name), "bench-hash-%d", idx);
		ho.name = name;
		rc = daxfs_open(&oo, &c->fs, &err);
		if (rc == 0) {
			rc = daxfs_host_attach(c->fs, &ho, &err);
			if (rc < 0) {
				daxfs_close(c->fs);
				c->fs = NULL;
			}
		}
		if (rc < 0) {
			fprintf(stderr, "bench_hash: attach %d: %s\n", idx, err.msg);
			return rc;
		}
		/* fs->hash: the slot table inside this process's mapping. */
		rc = bench_prefault(c->fs->hash, c->nslots * sizeof(struct dfs_hslot));
		if (rc < 0)
			fprintf(stderr, "bench_hash: prefault: %s\n", strerror(-rc));
	}
	return rc;
}

static int job_run(void *arg, int idx)
{
	struct job_ctx *c = arg;
	uint64_t base = (uint64_t)(idx + 1) << 40;

	for (uint64_t i = 0; i < c->nkeys; i++) {
		const uint8_t *k = c->keys + i * 32;
		int rc;

		if (c->impl == MUTEX)
			rc = mt_insert(&c->t, DFS_KIND_TEST, k, base + i + 1);
		else
			rc = hash_insert(c->fs, DFS_KIND_TEST, k, base + i + 1, NULL);
		if (rc < 0) {
			fprintf(stderr, "bench_hash: process %d, insert %llu: %s\n", idx,
				(unsigned long long)i, strerror(-rc));
			return rc;
		}
	}
	return 0;
}

static void job_teardown(void *arg, int idx)
{
	struct job_ctx *c = arg;

	(void)idx;
	free(c->keys);
	c->keys = NULL;
	mt_unmap(&c->t);
	daxfs_close(c->fs);
	c->fs = NULL;
}

static int region_count(const char *path, uint64_t *count)
{
	struct daxfs_open_opts oo = { .path = path, .readonly = 1 };
	struct daxfs_err err = { 0 };
	struct daxfs *fs;
	int rc = daxfs_open(&oo, &fs, &err);

	if (rc < 0) {
		fprintf(stderr, "bench_hash: reopen region: %s\n", err.msg);
		return rc;
	}
	*count = hash_count(fs, NULL);
	daxfs_close(fs);
	return 0;
}

/* One run: Mops/s of P processes inserting nkeys each. */
static int measure(const char *dir, enum impl impl, int nproc, uint64_t nkeys,
		   uint64_t nslots, uint64_t seed, double *mops)
{
	struct job_ctx c = { .impl = impl, .nkeys = nkeys, .nslots = nslots,
			     .seed = seed };
	struct bench_job j = { .nproc = nproc, .setup = job_setup, .run = job_run,
			       .teardown = job_teardown, .arg = &c };
	char path[PATH_MAX];
	uint64_t count = 0;
	double secs = 0;
	int rc;

	rc = bench_path(path, sizeof(path), "%s/%s", dir,
			impl == MUTEX ? "mtable" : "region");
	if (rc < 0)
		return rc;
	c.path = path;
	if (impl == MUTEX) {
		rc = mt_create(path, nslots);
	} else {
		struct daxfs_mkfs_opts mo = {
			.path = path,
			.size = nslots * sizeof(struct dfs_hslot) + (64ULL << 20),
			.hash_slots = nslots,
		};
		struct daxfs_err err = { 0 };

		rc = daxfs_mkfs(&mo, &err);
		if (rc < 0)
			fprintf(stderr, "bench_hash: mkfs: %s\n", err.msg);
	}
	if (rc == 0)
		rc = bench_run(&j, &secs);
	if (rc == 0)
		rc = impl == MUTEX ? mt_finish(path, nslots, &count) :
				     region_count(path, &count);
	if (rc == 0 && count != nkeys * (uint64_t)nproc) {
		fprintf(stderr, "bench_hash: table holds %llu keys, expected %llu\n",
			(unsigned long long)count,
			(unsigned long long)(nkeys * (uint64_t)nproc));
		rc = -EIO;
	}
	if (unlink(path) < 0 && rc == 0)
		rc = -errno;
	if (rc < 0)
		return rc;
	*mops = secs > 0 ? (double)nkeys * nproc / secs / 1e6 : 0;
	return 0;
}

static void usage(void)
{
	fprintf(stderr, "usage: bench_hash [-d DIR] [-r REPS] [-n KEYS_PER_PROCESS]\n");
	exit(2);
}

int main(int argc, char **argv)
{
	const char *dir = "/dev/shm";
	uint64_t nkeys = 500000;
	int reps = 3, opt, rc = 0;
	double res[NPROCS][NIMPLS][MAX_REPS], med[NPROCS][NIMPLS];
	uint64_t slots[NPROCS];
	char workdir[PATH_MAX];
	int64_t t0 = bench_now_ns();

	while ((opt = getopt(argc, argv, "d:r:n:")) != -1) {
		char *end;
		unsigned long long v;

		errno = 0;
		v = strtoull(optarg, &end, 10);
		if (opt != 'd' && (errno || end == optarg || *end))
			usage();
		switch (opt) {
		case 'd':
			dir = optarg;
			break;
		case 'r':
			if (v < 1 || v > MAX_REPS)
				usage();
			reps = (int)v;
			break;
		case 'n':
			if (v < 1 || v > (1ULL << 26))
				usage();
			nkeys = v;
			break;
		default:
			usage();
		}
	}
	if (optind != argc)
		usage();
	if (bench_path(workdir, sizeof(workdir), "%s/bench-hash.XXXXXX", dir) < 0 ||
	    !mkdtemp(workdir)) {
		fprintf(stderr, "bench_hash: mkdtemp %s: %s\n", workdir, strerror(errno));
		return 1;
	}
	for (int p = 0; p < NPROCS; p++) {
		/* A quarter full at the end of the run, whatever P is. */
		slots[p] = 1024;
		while (slots[p] < 4 * nkeys * (uint64_t)procs[p])
			slots[p] <<= 1;
	}
	/* Run -1 is a warm-up and is not recorded (first touch of fresh
	 * memory is slow on a virtual machine). */
	for (int p = 0; p < NPROCS && rc == 0; p++)
		for (int r = -1; r < reps && rc == 0; r++)
			for (int o = 0; o < NIMPLS && rc == 0; o++) {
				/* Alternate the order: drift hits both alike. */
				int i = r & 1 ? NIMPLS - 1 - o : o;
				double v = 0;

				rc = measure(workdir, (enum impl)i, procs[p], nkeys, slots[p],
					     (uint64_t)r + 2, &v);
				if (rc < 0)
					fprintf(stderr, "bench_hash: %s, %d processes, run %d: %s\n",
						i == MUTEX ? "mutex" : "lock-free", procs[p],
						r + 1, strerror(-rc));
				else if (r >= 0)
					res[p][i][r] = v;
			}
	if (rc < 0)
		goto out;
	for (int p = 0; p < NPROCS; p++)
		for (int i = 0; i < NIMPLS; i++)
			med[p][i] = bench_median(res[p][i], reps);
	printf("shared hash inserts: lock-free region hash vs one process-shared "
	       "mutex (median of %d runs after a warm-up run)\n", reps);
	printf("  each process inserts %llu distinct 32-byte keys (kind %d); "
	       "64-byte slots, linear probing;\n  tables sized to end a quarter "
	       "full; Mops/s = all inserts / wall time\n\n",
	       (unsigned long long)nkeys, DFS_KIND_TEST);
	printf("  %9s %9s %14s %14s %16s\n", "processes", "slots", "lock-free",
	       "mutex", "lock-free/mutex");
	for (int p = 0; p < NPROCS; p++)
		printf("  %9d %9llu %9.2f Mop/s %9.2f Mop/s %16.2f\n", procs[p],
		       (unsigned long long)slots[p], med[p][LOCKFREE], med[p][MUTEX],
		       med[p][LOCKFREE] / med[p][MUTEX]);
	printf("\n  all runs (Mops/s; ratio of the same run):\n");
	for (int p = 0; p < NPROCS; p++) {
		for (int i = 0; i < NIMPLS; i++) {
			printf("    %d process%s %-9s", procs[p], procs[p] > 1 ? "es" : "  ",
			       i == MUTEX ? "mutex" : "lock-free");
			for (int r = 0; r < reps; r++)
				printf(" %7.2f", res[p][i][r]);
			printf("\n");
		}
		printf("    %d process%s %-9s", procs[p], procs[p] > 1 ? "es" : "  ", "ratio");
		for (int r = 0; r < reps; r++)
			printf(" %7.2f", res[p][LOCKFREE][r] / res[p][MUTEX][r]);
		printf("\n");
	}
	printf("\n");
	for (int p = 0; p < NPROCS; p++)
		printf("summary: hash insert %d process%s lock-free/mutex %.2f "
		       "(%.2f vs %.2f Mops/s)\n", procs[p], procs[p] > 1 ? "es" : "  ",
		       med[p][LOCKFREE] / med[p][MUTEX], med[p][LOCKFREE], med[p][MUTEX]);
	printf("bench_hash: %.1f s\n", (double)(bench_now_ns() - t0) / 1e9);
out:
	{
		long n = bench_rm_tree(workdir);

		if (n < 0) {
			fprintf(stderr, "bench_hash: removing %s: %s\n", workdir,
				strerror((int)-n));
			rc = -EIO;
		}
	}
	return rc < 0 ? 1 : 0;
}
