/* Concurrency stress: several hosts race on one region.
 *
 * Built three ways from this one source:
 *   test_stress    every case with forked processes; each child opens the
 *                  region file itself and attaches as its own host;
 *   test_hash_mt   the hash case with threads   } #include this file with
 *   test_alloc_mt  the layer case with threads  } STRESS_THREADS set.
 * Threads also attach as separate hosts (one struct daxfs each), but all
 * of them over ONE mapping of the region (daxfs_open_buffer): separate
 * mmaps of the file would put the shared words at different addresses,
 * and ThreadSanitizer, which tracks memory by address, would then see
 * neither the races nor the synchronisation between the threads.
 *
 * Test bookkeeping (barriers, counters of winners, the expected state of
 * every layer) lives in a MAP_SHARED anonymous mapping made before the
 * workers start.  Every outcome that must be unique is counted there, so a
 * duplicate winner is caught even if each racer's return code looked fine,
 * and the table itself is scanned for keys that appear twice.
 *
 * DAXFS_STRESS_SEED=N replays the keys, contents and choices of a run (not
 * its interleaving); DAXFS_TEST_LONG=1 runs ten times the rounds. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "check.h"
#include "hash.h"
#include "testutil.h"

#ifndef STRESS_THREADS
#define STRESS_THREADS 0
#endif
#ifndef STRESS_PROG
#define STRESS_PROG "test_stress"
#endif
#ifndef STRESS_HASH
#define STRESS_HASH 1
#endif
#ifndef STRESS_LAYERS
#define STRESS_LAYERS 1
#endif

#if defined(__SANITIZE_THREAD__)
#define UNDER_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define UNDER_TSAN 1
#endif
#endif
#ifndef UNDER_TSAN
#define UNDER_TSAN 0
#endif

#define NW 4			/* racing hosts */
#define MAXW 8
#define MAXR 256		/* bookkeeping room for layer rounds */
#define HMAXR 2048		/* ... and for hash rounds */
#define LEASE_MS 10000u		/* only bounds internal waits here */
#define BARRIER_MS 120000u
#define TEAM_MS 240000u		/* below tests/run.sh's 300 s */
#define BUFSZ 65536u

/* ---------------------------------------------------------------------
 * Shared bookkeeping */

#define KS 48			/* keys every worker races on */
#define KO 16			/* keys each worker owns */
#define NGROUP 8		/* keys of a group share probe start + fingerprint */

/* Layer bookkeeping word: [generation:56][state:8], changed only by the
 * host that changes the layer (owner, contest winner, evictor). */
enum { BK_ABSENT = 0, BK_BUILDING = 1, BK_READY = 2, BK_EVICTING = 3 };
#define BK_STATE(w) ((unsigned)((w) & 0xff))

struct shared {
	struct tu_barrier bar;
	uint64_t seed;
	unsigned rounds;
	/* hash case: [round][cycle][key] */
	_Atomic uint32_t hwin[HMAXR][2][KS];
	_Atomic uint32_t hdel[HMAXR][2][KS];
	_Atomic uint64_t hval[HMAXR][2][KS];
	_Atomic uint64_t own_val[MAXW][KO];
	_Atomic uint64_t wins[MAXW];		/* shared keys won, per worker */
	_Atomic uint64_t split_cycles;		/* cycles won by 2+ workers */
	/* layer case */
	_Atomic uint64_t lbk[MAXW][MAXR];	/* own layer (worker, round) */
	_Atomic uint64_t cbk[MAXR];		/* contested layer of a round */
	_Atomic uint64_t hbk[MAXW];		/* hot layer of a worker */
	_Atomic uint32_t c_claim[MAXR], c_busy[MAXR], c_exist[MAXR],
			 c_evict[MAXR];
	_Atomic uint64_t c_serial[MAXR];	/* the contest winner's layer */
	_Atomic uint64_t n_build, n_rebuild, n_evict, n_evict_busy, n_read,
			 n_read_raced, n_bytes, n_hot_evict, n_hot_busy,
			 n_hot_build, n_hot_read, n_hot_raced;
};

struct wk {
	struct daxfs *fs;
	struct shared *sh;
	int id;
	unsigned round;
	uint64_t rng;
	bool failed;
	uint8_t *buf, *buf2;
};

static uint64_t mix64(uint64_t x)
{
	x += 0x9e3779b97f4a7c15ULL;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
	return x ^ (x >> 31);
}

static uint64_t rnd(struct wk *w)
{
	w->rng = mix64(w->rng);
	return w->rng;
}

/* 32 well-spread bytes for the tuple (a, b, c, d). */
static void make_id(uint8_t out[32], uint64_t a, uint64_t b, uint64_t c,
		    uint64_t d)
{
	uint64_t x = mix64(a ^ mix64(b ^ mix64(c ^ mix64(d))));

	for (int i = 0; i < 4; i++) {
		x = mix64(x + (uint64_t)i);
		memcpy(out + 8 * i, &x, 8);
	}
}

static void wk_fail(struct wk *w, int line, const char *what)
{
	fprintf(stderr, "%s: worker %d round %u: line %d: check failed: %s\n",
		STRESS_PROG, w->id, w->round, line, what);
	w->failed = true;
	tu_barrier_abort(&w->sh->bar);
}

/* Worker checks: record the failure, stop everybody, return -1. */
#define WCHECK(w, cond)                                                    \
	do {                                                               \
		if (!(cond)) {                                             \
			wk_fail(w, __LINE__, #cond);                       \
			return -1;                                         \
		}                                                          \
	} while (0)
#define WCHECK_RC(w, expr, want)                                           \
	do {                                                               \
		long _r = (long)(expr);                                    \
		if (_r != (long)(want)) {                                  \
			char _m[256];                                      \
			snprintf(_m, sizeof(_m), "%s returned %ld, want %ld", \
				 #expr, _r, (long)(want));                 \
			wk_fail(w, __LINE__, _m);                          \
			return -1;                                         \
		}                                                          \
	} while (0)
#define WSYNC(w)                                                           \
	do {                                                               \
		if (tu_barrier_wait(&(w)->sh->bar, BARRIER_MS) < 0)        \
			return -1;                                         \
	} while (0)

/* ---------------------------------------------------------------------
 * Running a team of workers: processes or threads */

struct team {
	char path[256];
	uint64_t size;
	struct shared *sh;
	void *map;		/* threads: the one mapping they share */
};

static uint64_t stress_seed(void)
{
	const char *s = getenv("DAXFS_STRESS_SEED");

	if (s && *s)
		return strtoull(s, NULL, 0);
	return mix64((uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32));
}

static unsigned scaled(unsigned rounds, unsigned max)
{
	const char *l = getenv("DAXFS_TEST_LONG");

	if (l && *l && strcmp(l, "0"))
		rounds *= 10;
	return rounds < max ? rounds : max;
}

static int make_region(struct team *t, const char *tag, uint64_t size,
		       uint64_t hash_slots)
{
	struct daxfs_mkfs_opts o = { .size = size, .max_hosts = NW + 2,
				     .hash_slots = hash_slots, .meta_percent = 20 };
	struct daxfs_err err = { 0 };
	int rc;

	tu_region_path(t->path, sizeof(t->path), tag);
	unlink(t->path);
	o.path = t->path;
	rc = daxfs_mkfs(&o, &err);
	if (rc < 0)
		fprintf(stderr, "mkfs %s: %s\n", t->path, err.msg);
	t->size = size;
	return rc;
}

static int work_start(struct team *t, struct wk *w, int id)
{
	memset(w, 0, sizeof(*w));
	w->sh = t->sh;
	w->id = id;
	w->rng = mix64(t->sh->seed ^ ((uint64_t)id << 56));
	w->buf = malloc(BUFSZ);
	w->buf2 = malloc(BUFSZ);
	if (!w->buf || !w->buf2)
		return -ENOMEM;
#if STRESS_THREADS
	return tu_attach_buffer(t->map, t->size, id + 1, LEASE_MS, &w->fs);
#else
	return tu_attach(t->path, id + 1, LEASE_MS, &w->fs);
#endif
}

static void work_end(struct wk *w)
{
	daxfs_close(w->fs);	/* clean detach */
	w->fs = NULL;
	free(w->buf);
	free(w->buf2);
}

typedef int (*work_fn)(struct wk *);

#if STRESS_THREADS
struct tslot {
	struct team *t;
	work_fn fn;
	int id;
	int result;
	pthread_t th;
};

static void *thread_main(void *arg)
{
	struct tslot *ts = arg;
	struct wk w;
	int rc = work_start(ts->t, &w, ts->id);

	if (rc < 0) {
		tu_barrier_abort(&ts->t->sh->bar);
		ts->result = 1;
	} else {
		rc = ts->fn(&w);
		ts->result = rc < 0 || w.failed;
	}
	work_end(&w);
	return NULL;
}

/* Returns the number of workers that failed (or were stopped). */
static int team_run(struct team *t, work_fn fn)
{
	struct tslot ts[NW];
	int bad = 0;

	tu_barrier_init(&t->sh->bar, NW);
	for (int i = 0; i < NW; i++) {
		ts[i] = (struct tslot){ .t = t, .fn = fn, .id = i };
		if (pthread_create(&ts[i].th, NULL, thread_main, &ts[i])) {
			fprintf(stderr, "pthread_create failed\n");
			tu_barrier_abort(&t->sh->bar);
			for (int k = 0; k < i; k++)
				pthread_join(ts[k].th, NULL);
			return NW;
		}
	}
	for (int i = 0; i < NW; i++) {
		pthread_join(ts[i].th, NULL);
		bad += ts[i].result != 0;
	}
	return bad;
}
#else
static int child_main(struct team *t, work_fn fn, int id)
{
	struct wk w;
	int rc = work_start(t, &w, id);

	if (rc < 0) {
		tu_barrier_abort(&t->sh->bar);
		work_end(&w);
		return 1;
	}
	rc = fn(&w);
	work_end(&w);
	return rc < 0 || w.failed;
}

static int team_run(struct team *t, work_fn fn)
{
	pid_t pid[NW];
	bool done[NW] = { false };
	int bad = 0, left = 0;
	uint64_t deadline;

	tu_barrier_init(&t->sh->bar, NW);
	fflush(stdout);
	fflush(stderr);
	for (int i = 0; i < NW; i++) {
		pid[i] = fork();
		if (pid[i] == 0)
			_exit(child_main(t, fn, i));
		if (pid[i] < 0) {
			perror("fork");
			tu_barrier_abort(&t->sh->bar);
			done[i] = true;
			bad++;
			continue;
		}
		left++;
	}
	deadline = tu_now_ms() + TEAM_MS;
	while (left) {
		for (int i = 0; i < NW; i++) {
			int st;

			if (done[i] || waitpid(pid[i], &st, WNOHANG) != pid[i])
				continue;
			done[i] = true;
			left--;
			if (!WIFEXITED(st) || WEXITSTATUS(st)) {
				if (WIFSIGNALED(st))
					fprintf(stderr, "worker %d: killed by signal %d\n",
						i, WTERMSIG(st));
				bad++;
				tu_barrier_abort(&t->sh->bar);
			}
		}
		if (left && tu_now_ms() > deadline) {
			fprintf(stderr, "workers still running after %u ms: killing them\n",
				TEAM_MS);
			tu_barrier_abort(&t->sh->bar);
			for (int i = 0; i < NW; i++)
				if (!done[i])
					kill(pid[i], SIGKILL);
			deadline = UINT64_MAX;
		}
		if (left)
			nanosleep(&(struct timespec){ 0, 2000000 }, NULL);
	}
	return bad;
}
#endif

static int team_begin(struct team *t, const char *tag, uint64_t size,
		      uint64_t hash_slots, unsigned rounds)
{
	memset(t, 0, sizeof(*t));
	t->sh = tu_shared_alloc(sizeof(*t->sh));
	if (!t->sh)
		return -ENOMEM;
	t->sh->seed = stress_seed();
	t->sh->rounds = rounds;
	if (make_region(t, tag, size, hash_slots) < 0)
		return -1;
#if STRESS_THREADS
	{
		int fd = open(t->path, O_RDWR | O_CLOEXEC);

		if (fd < 0)
			return -errno;
		t->map = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
		close(fd);
		if (t->map == MAP_FAILED) {
			t->map = NULL;
			return -errno;
		}
	}
#endif
	return 0;
}

static void team_end(struct team *t)
{
	if (t->map)
		munmap(t->map, t->size);
	if (t->path[0])
		unlink(t->path);
	if (t->sh)
		munmap(t->sh, sizeof(*t->sh));
}

static int open_plain(struct team *t, struct daxfs **fs)
{
	struct daxfs_open_opts o = { .path = t->path, .lease_ms = LEASE_MS };
	struct daxfs_err err = { 0 };
	int rc = daxfs_open(&o, fs, &err);

	if (rc < 0)
		fprintf(stderr, "open %s: %s\n", t->path, err.msg);
	return rc;
}

static int fsck_problems(struct daxfs *fs)
{
	tu_fsck_count = 0;
	return daxfs_fsck(fs, 0, tu_fsck_line, NULL);
}

static double secs_since(uint64_t t0)
{
	return (double)(tu_now_ms() - t0) / 1000.0;
}

static const char *team_kind(void)
{
	return STRESS_THREADS ? "threads" : "processes";
}

#if STRESS_HASH
/* ---------------------------------------------------------------------
 * Hash: one winner per key, nothing lost or duplicated */

/* Shared key k, or own key j of worker id.  Keys of one group share their
 * first 8 bytes: the same probe start and the same fingerprint, so every
 * insert has to compare full keys against its neighbours'. */
static void hkey(uint8_t key[32], uint64_t seed, int id, unsigned k)
{
	uint8_t g[32];
	unsigned group = id < 0 ? k % NGROUP : (unsigned)(id + (int)k) % NGROUP;

	make_id(key, seed, 0x4b4559, (uint64_t)(id + 1), k);
	make_id(g, seed, 0x475250, group, 0);
	memcpy(key, g, 8);
}

/* Values name who inserted and when. */
#define HVAL(id, r, c, k) (((uint64_t)(id) + 1) << 48 | (uint64_t)(r) << 24 | \
			   (uint64_t)(c) << 20 | (uint64_t)(k))
#define HVAL_ID(v) ((int)((v) >> 48) - 1)
#define HVAL_R(v) ((unsigned)(((v) >> 24) & 0xffffff))
#define HVAL_C(v) ((unsigned)(((v) >> 20) & 0xf))
#define HVAL_K(v) ((unsigned)((v) & 0xfffff))
#define OVAL(id, n, j) (((uint64_t)(id) + 1) << 48 | 1ULL << 47 | \
			(uint64_t)(n) << 16 | (uint64_t)(j))

struct hentry {
	uint8_t key[32];
	uint64_t val;
	unsigned seen;
};

struct hscan {
	struct hentry *e;
	size_t n, cap;
	uint64_t other_kinds;
};

static int scan_cb(struct daxfs *fs, struct dfs_hslot *s, void *arg)
{
	struct hscan *sc = arg;

	(void)fs;
	if (atomic_load_explicit(&s->kind, memory_order_relaxed) != DFS_KIND_TEST) {
		sc->other_kinds++;
		return 0;
	}
	if (sc->n < sc->cap) {
		hash_slot_key(s, sc->e[sc->n].key);
		sc->e[sc->n].val = atomic_load_explicit(&s->value, memory_order_relaxed);
	}
	sc->n++;
	return 0;
}

/* The table must hold exactly the n expected entries: each once, with
 * its value, and nothing else; the counters must agree. */
static int hash_expect(struct wk *w, struct daxfs *fs, struct hentry *exp,
		       size_t n)
{
	struct hentry found[KS + MAXW * KO + 64];
	struct hscan sc = { found, 0, sizeof(found) / sizeof(found[0]), 0 };
	uint64_t tombs, v;

	for (size_t i = 0; i < n; i++)
		exp[i].seen = 0;
	hash_foreach(fs, 0, scan_cb, &sc);
	WCHECK(w, sc.other_kinds == 0);
	WCHECK(w, sc.n <= sc.cap);
	for (size_t f = 0; f < sc.n; f++) {
		size_t i;

		for (i = 0; i < n; i++)
			if (!memcmp(exp[i].key, found[f].key, 32))
				break;
		WCHECK(w, i < n);		/* a key nobody expects */
		WCHECK(w, found[f].val == exp[i].val);
		exp[i].seen++;
	}
	for (size_t i = 0; i < n; i++) {
		WCHECK(w, exp[i].seen == 1);	/* lost (0) or duplicated (2+) */
		WCHECK_RC(w, hash_lookup(fs, DFS_KIND_TEST, exp[i].key, &v), 0);
		WCHECK(w, v == exp[i].val);
	}
	WCHECK(w, sc.n == n);
	WCHECK(w, hash_count(fs, &tombs) == n);
	WCHECK(w, atomic_load(&fs->shared->hash_live) == n);
	return 0;
}

/* Expected table: every worker's own keys, plus the shared keys of
 * (r, c) when with_shared. */
static size_t hash_expected(struct shared *sh, struct hentry *exp,
			    bool with_shared, unsigned r, unsigned c)
{
	size_t n = 0;

	for (int id = 0; id < NW; id++)
		for (unsigned j = 0; j < KO; j++, n++) {
			hkey(exp[n].key, sh->seed, id, j);
			exp[n].val = atomic_load(&sh->own_val[id][j]);
		}
	if (with_shared)
		for (unsigned k = 0; k < KS; k++, n++) {
			hkey(exp[n].key, sh->seed, -1, k);
			exp[n].val = atomic_load(&sh->hval[r][c][k]);
		}
	return n;
}

static int hash_scan_all(struct wk *w, bool with_shared, unsigned r, unsigned c)
{
	struct hentry exp[KS + MAXW * KO];
	size_t n = hash_expected(w->sh, exp, with_shared, r, c);

	return hash_expect(w, w->fs, exp, n);
}

/* Own keys: nobody else touches them, so every step must succeed. */
static int own_churn(struct wk *w, uint64_t *serial)
{
	unsigned j = (unsigned)(rnd(w) % KO);
	uint64_t old = atomic_load(&w->sh->own_val[w->id][j]);
	uint64_t nv = OVAL(w->id, ++*serial, j), v;
	uint8_t key[32];

	hkey(key, w->sh->seed, w->id, j);
	WCHECK_RC(w, hash_lookup(w->fs, DFS_KIND_TEST, key, &v), 0);
	WCHECK(w, v == old);
	WCHECK_RC(w, hash_remove(w->fs, DFS_KIND_TEST, key, nv), -ENOENT);
	WCHECK_RC(w, hash_remove(w->fs, DFS_KIND_TEST, key, old), 0);
	WCHECK_RC(w, hash_remove(w->fs, DFS_KIND_TEST, key, old), -ENOENT);
	WCHECK_RC(w, hash_insert(w->fs, DFS_KIND_TEST, key, nv, NULL), 0);
	v = 0;
	WCHECK_RC(w, hash_insert(w->fs, DFS_KIND_TEST, key, old, &v), -EEXIST);
	WCHECK(w, v == nv);
	WCHECK_RC(w, hash_lookup(w->fs, DFS_KIND_TEST, key, &v), 0);
	WCHECK(w, v == nv);
	atomic_store(&w->sh->own_val[w->id][j], nv);
	return 0;
}

/* A whole cycle takes microseconds: when the machine leaves us a single
 * core, only yields between operations let the other hosts in. */
static void maybe_yield(struct wk *w)
{
	if (rnd(w) % 3 == 0)
		sched_yield();
}

static void shuffle(struct wk *w, unsigned *a, unsigned n, bool same_order)
{
	for (unsigned i = 0; i < n; i++)
		a[i] = i;
	if (same_order)
		return;		/* everyone in the same order: most collisions */
	for (unsigned i = n - 1; i > 0; i--) {
		unsigned k = (unsigned)(rnd(w) % (i + 1)), t = a[i];

		a[i] = a[k];
		a[k] = t;
	}
}

/* One cycle: (c == 1: remove the cycle-0 winner, then) insert every shared
 * key, all workers at once. */
static int hash_cycle(struct wk *w, unsigned r, unsigned c, uint64_t *serial)
{
	struct shared *sh = w->sh;
	unsigned order[KS];
	uint64_t seen[KS];
	bool won[KS];
	uint8_t key[32];
	uint64_t v;

	shuffle(w, order, KS, (r + c) % 2 == 0);
	for (unsigned i = 0; i < KS; i++) {
		unsigned k = order[i];
		uint64_t mine = HVAL(w->id, r, c, k), ex = 0;
		int rc;

		hkey(key, sh->seed, -1, k);
		if (c == 1) {
			rc = hash_remove(w->fs, DFS_KIND_TEST, key,
					 atomic_load(&sh->hval[r][0][k]));
			WCHECK(w, rc == 0 || rc == -ENOENT);
			if (rc == 0)
				atomic_fetch_add(&sh->hdel[r][0][k], 1);
		}
		/* Nobody stored this value: removing it must never work. */
		WCHECK_RC(w, hash_remove(w->fs, DFS_KIND_TEST, key, mine), -ENOENT);
		rc = hash_insert(w->fs, DFS_KIND_TEST, key, mine, &ex);
		won[k] = rc == 0;
		if (rc == 0) {
			atomic_store(&sh->hval[r][c][k], mine);
			atomic_fetch_add(&sh->hwin[r][c][k], 1);
			atomic_fetch_add(&sh->wins[w->id], 1);
		} else {
			WCHECK_RC(w, rc, -EEXIST);
			/* The existing value is some worker's insert of this
			 * very key in this very cycle. */
			WCHECK(w, HVAL_ID(ex) >= 0 && HVAL_ID(ex) < NW &&
				  HVAL_ID(ex) != w->id);
			WCHECK(w, HVAL_R(ex) == r && HVAL_C(ex) == c && HVAL_K(ex) == k);
			seen[k] = ex;
		}
		if (i % 6 == 0 && own_churn(w, serial) < 0)
			return -1;
		maybe_yield(w);
	}
	WSYNC(w);
	for (unsigned k = 0; k < KS; k++) {
		uint64_t winner = atomic_load(&sh->hval[r][c][k]);

		/* Counted, not trusted: two "winners" show up here. */
		if (atomic_load(&sh->hwin[r][c][k]) != 1)
			fprintf(stderr, "%s: round %u cycle %u key %u: %u winners "
				"(%u removals of the previous value)\n", STRESS_PROG, r, c, k,
				atomic_load(&sh->hwin[r][c][k]),
				c ? atomic_load(&sh->hdel[r][0][k]) :
				    r ? atomic_load(&sh->hdel[r - 1][1][k]) : 0);
		WCHECK(w, atomic_load(&sh->hwin[r][c][k]) == 1);
		if (c == 1)
			WCHECK(w, atomic_load(&sh->hdel[r][0][k]) == 1);
		WCHECK(w, won[k] || seen[k] == winner);
		hkey(key, sh->seed, -1, k);
		WCHECK_RC(w, hash_lookup(w->fs, DFS_KIND_TEST, key, &v), 0);
		WCHECK(w, v == winner);
	}
	if (w->id == 0) {
		/* Did the workers really overlap?  Then several won keys. */
		for (unsigned k = 1; k < KS; k++)
			if (HVAL_ID(atomic_load(&sh->hval[r][c][k])) !=
			    HVAL_ID(atomic_load(&sh->hval[r][c][0]))) {
				atomic_fetch_add(&sh->split_cycles, 1);
				break;
			}
		if (hash_scan_all(w, true, r, c) < 0)
			return -1;
	}
	WSYNC(w);
	return 0;
}

/* Everyone removes the cycle-1 winners at once: one remove succeeds. */
static int hash_drain(struct wk *w, unsigned r, uint64_t *serial)
{
	struct shared *sh = w->sh;
	unsigned order[KS];
	uint8_t key[32];
	uint64_t v;

	shuffle(w, order, KS, false);
	for (unsigned i = 0; i < KS; i++) {
		unsigned k = order[i];
		int rc;

		hkey(key, sh->seed, -1, k);
		rc = hash_remove(w->fs, DFS_KIND_TEST, key,
				 atomic_load(&sh->hval[r][1][k]));
		WCHECK(w, rc == 0 || rc == -ENOENT);
		if (rc == 0)
			atomic_fetch_add(&sh->hdel[r][1][k], 1);
		if (i % 6 == 0 && own_churn(w, serial) < 0)
			return -1;
		maybe_yield(w);
	}
	WSYNC(w);
	for (unsigned k = 0; k < KS; k++) {
		WCHECK(w, atomic_load(&sh->hdel[r][1][k]) == 1);
		hkey(key, sh->seed, -1, k);
		WCHECK_RC(w, hash_lookup(w->fs, DFS_KIND_TEST, key, &v), -ENOENT);
	}
	if (w->id == 0 && hash_scan_all(w, false, 0, 0) < 0)
		return -1;
	WSYNC(w);
	return 0;
}

static int hash_worker(struct wk *w)
{
	struct shared *sh = w->sh;
	uint64_t serial = 0;
	uint8_t key[32];

	for (unsigned j = 0; j < KO; j++) {
		uint64_t v = OVAL(w->id, 0, j);

		hkey(key, sh->seed, w->id, j);
		WCHECK_RC(w, hash_insert(w->fs, DFS_KIND_TEST, key, v, NULL), 0);
		atomic_store(&sh->own_val[w->id][j], v);
	}
	WSYNC(w);
	for (unsigned r = 0; r < sh->rounds; r++) {
		w->round = r;
		if (hash_cycle(w, r, 0, &serial) < 0 ||
		    hash_cycle(w, r, 1, &serial) < 0)
			return -1;
		/* The last round's winners stay for the final check. */
		if (r + 1 < sh->rounds && hash_drain(w, r, &serial) < 0)
			return -1;
	}
	return 0;
}

TEST(hash_races)
{
	struct team t;
	struct daxfs *fs = NULL;
	struct hentry exp[KS + MAXW * KO];
	struct wk chk = { 0 };
	unsigned rounds = scaled(UNDER_TSAN ? 100 : 300, HMAXR);
	uint64_t t0 = tu_now_ms();
	size_t n;
	int bad, rc;

	rc = team_begin(&t, "stress-hash", 32 << 20, 1024, rounds);
	if (rc < 0)
		team_end(&t);
	CHECK_RC(rc, 0);
	printf("%s: hash: %d %s, %u rounds, %u shared + %dx%u own keys in %u groups, "
	       "seed %#" PRIx64 "\n", STRESS_PROG, NW, team_kind(), rounds, KS, NW,
	       KO, NGROUP, t.sh->seed);
	fflush(stdout);
	bad = team_run(&t, hash_worker);
	if (bad == 0 && open_plain(&t, &fs) == 0) {
		/* A fresh mapping sees the last round's winners and every
		 * worker's own keys, each exactly once. */
		chk.sh = t.sh;
		chk.id = -1;
		chk.round = rounds;
		n = hash_expected(t.sh, exp, true, rounds - 1, 1);
		rc = hash_expect(&chk, fs, exp, n);
		if (rc == 0)
			rc = fsck_problems(fs);
		daxfs_close(fs);
	} else {
		rc = -1;
	}
	printf("%s: hash: shared keys won per worker:", STRESS_PROG);
	for (int i = 0; i < NW; i++)
		printf(" %llu", (unsigned long long)t.sh->wins[i]);
	printf("; %llu of %u insert cycles split between workers\n",
	       (unsigned long long)t.sh->split_cycles, 2 * rounds);
	team_end(&t);
	printf("%s: hash: %.2f s\n", STRESS_PROG, secs_since(t0));
	CHECK(bad == 0);
	CHECK_RC(rc, 0);
}

#endif /* STRESS_HASH */

#if STRESS_LAYERS
/* ---------------------------------------------------------------------
 * Layers: allocation, dedup, eviction and claims racing */

#define NPOOL 12	/* contents every host may store: dedup races */
#define BIG_POOL (NPOOL - 1)
static const uint64_t pool_size[NPOOL] = {
	1, 100, 511, 512, 513, 4096, 10007, 65536, 131079, 250000, 3001,
	2300000		/* more than one data chunk */
};

#define MAXF 12
struct fent {
	char path[32];
	uint64_t cid;	/* content id: 0 empty, 1..NPOOL pool, else unique */
	uint64_t size;
	bool replaced;	/* a later entry of the same path replaces it */
};

struct lspec {
	uint8_t id[32];
	unsigned nf;
	struct fent f[MAXF];
	uint64_t bytes;	/* as the layer counts them: every file added */
};

static void fent_add(struct lspec *s, const char *path, uint64_t cid,
		     uint64_t size, bool replaced)
{
	struct fent *f = &s->f[s->nf++];

	snprintf(f->path, sizeof(f->path), "%s", path);
	f->cid = cid;
	f->size = size;
	f->replaced = replaced;
	s->bytes += size;
}

static void fent_pool(struct lspec *s, const char *path, unsigned i, bool replaced)
{
	fent_add(s, path, 1 + i, pool_size[i], replaced);
}

/* Unique contents are at least 64 bytes, so they never equal another. */
static void fent_unique(struct lspec *s, const char *path, uint64_t a,
			uint64_t b, uint64_t c, uint64_t maxsize, bool replaced)
{
	uint64_t cid = mix64(a ^ mix64(b ^ mix64(c))) | 1ULL << 63;

	fent_add(s, path, cid, 64 + mix64(cid) % maxsize, replaced);
}

/* The layer worker id builds in round r (the same every time). */
static void spec_own(struct lspec *s, uint64_t seed, int id, unsigned r)
{
	uint64_t h = mix64(seed ^ mix64(((uint64_t)id << 32) | r));
	uint64_t u = ((uint64_t)id << 32) | r;

	memset(s, 0, sizeof(*s));
	make_id(s->id, seed, 0x4f574e, (uint64_t)id, r);
	/* The first pool file is the same for every worker of a round. */
	fent_pool(s, "pool/a", r % BIG_POOL, false);
	fent_pool(s, "pool/b", (r + 3 + (unsigned)id) % BIG_POOL, false);
	fent_pool(s, "pool/c", (unsigned)(h % BIG_POOL), false);
	fent_unique(s, "own/u0", seed, u, 0, 300000, false);
	fent_unique(s, "own/sub/u1", seed, u, 1, 40000, false);
	fent_unique(s, "u2", seed, u, 2, 8000, false);
	fent_add(s, "empty", 0, 0, false);
	/* Replaced within the layer: its reference goes at publish. */
	if (h & 256)
		fent_pool(s, "dup", (unsigned)((h >> 9) % BIG_POOL), true);
	else
		fent_unique(s, "dup", seed, u, 3, 20000, true);
	if (h & 512)
		fent_pool(s, "dup", (unsigned)((h >> 17) % BIG_POOL), false);
	else
		fent_unique(s, "dup", seed, u, 4, 20000, false);
}

/* The layer every worker tries to build in round r. */
static void spec_contested(struct lspec *s, uint64_t seed, unsigned r)
{
	memset(s, 0, sizeof(*s));
	make_id(s->id, seed, 0x434f4e, 0, r);
	fent_pool(s, "c/p0", (r * 7) % BIG_POOL, false);
	fent_pool(s, "c/p1", (r * 7 + 4) % BIG_POOL, false);
	fent_unique(s, "c/u0", seed, 0xc0, r, 100000, false);
	fent_unique(s, "c/u1", seed, 0xc1, r, 5000, false);
	if (r % 4 == 1)
		fent_pool(s, "c/big", BIG_POOL, false);
}

/* Worker id's hot layer: evicted and rebuilt over and over while the
 * others read it.  Small, with one pool file (dedup against retiring
 * copies) and unique files (freed and allocated again each time). */
static void spec_hot(struct lspec *s, uint64_t seed, int id)
{
	memset(s, 0, sizeof(*s));
	make_id(s->id, seed, 0x484f54, (uint64_t)id, 0);
	fent_pool(s, "h/p", (unsigned)id % 4, false);
	fent_unique(s, "h/u0", seed, 0x40, (uint64_t)id, 6000, false);
	fent_unique(s, "h/u1", seed, 0x41, (uint64_t)id, 600, false);
}

/* Layer number i of all the layers a run may build (own layers, then
 * contested ones, then hot ones): its spec and its bookkeeping word, or
 * NULL past the end. */
static _Atomic uint64_t *layer_at(struct shared *sh, unsigned i,
				  struct lspec *s)
{
	unsigned own = NW * sh->rounds;

	if (i < own) {
		spec_own(s, sh->seed, (int)(i / sh->rounds), i % sh->rounds);
		return &sh->lbk[i / sh->rounds][i % sh->rounds];
	}
	i -= own;
	if (i < sh->rounds) {
		spec_contested(s, sh->seed, i);
		return &sh->cbk[i];
	}
	i -= sh->rounds;
	if (i < NW) {
		spec_hot(s, sh->seed, (int)i);
		return &sh->hbk[i];
	}
	return NULL;
}

/* Content bytes: a function of the content id and the offset only. */
static void gen(uint64_t cid, uint64_t off, uint8_t *out, size_t len)
{
	while (len) {
		uint64_t word = mix64(cid * 0x9e3779b97f4a7c15ULL + (off >> 3));
		unsigned sh = (unsigned)(off & 7);
		size_t n = 8 - sh < len ? 8 - sh : len;

		for (size_t i = 0; i < n; i++)
			out[i] = (uint8_t)(word >> (8 * (sh + i)));
		out += n;
		off += n;
		len -= n;
	}
}

static int put_file(struct wk *w, struct daxfs_layer_builder *b,
		    const struct fent *f)
{
	struct daxfs_entry e;
	struct daxfs_err err = { 0 };
	uint64_t off = 0;

	memset(&e, 0, sizeof(e));
	e.path = f->path;
	e.mode = S_IFREG | 0644;
	e.mtime_sec = 1700000000;
	e.size = f->size;
	WCHECK_RC(w, daxfs_builder_add(b, &e, &err), 0);
	while (off < f->size) {
		size_t n = 1 + (size_t)(rnd(w) % BUFSZ);

		if (n > f->size - off)
			n = (size_t)(f->size - off);
		gen(f->cid, off, w->buf, n);
		if (daxfs_builder_write(b, w->buf, n, &err) < 0) {
			fprintf(stderr, "write %s: %s\n", f->path, err.msg);
			WCHECK(w, !"daxfs_builder_write");
		}
		off += n;
	}
	return 0;
}

/* Claim s->id; if we got it, fill and publish it.  *claim gets the claim's
 * result (0, -EBUSY, -EEXIST, ...), *serial the published layer's serial. */
static int build(struct wk *w, const struct lspec *s, int *claim,
		 uint64_t *serial)
{
	struct daxfs_layer_builder *b;
	struct daxfs_err err = { 0 };
	int rc;

	*claim = daxfs_layer_build(w->fs, s->id, &b, &err);
	if (*claim < 0)
		return 0;
	for (unsigned i = 0; i < s->nf; i++)
		if (put_file(w, b, &s->f[i]) < 0)
			return -1;	/* the test fails; nobody reuses b */
	*serial = 0;
	rc = daxfs_builder_publish(b, serial, &err);
	if (rc < 0)
		fprintf(stderr, "publish: %s\n", err.msg);
	WCHECK_RC(w, rc, 0);
	WCHECK(w, *serial >= 2);
	atomic_fetch_add(&w->sh->n_bytes, s->bytes);
	return 0;
}

/* Every file of an open layer reads back as generated. */
static int verify_open(struct wk *w, struct daxfs_layer *l,
		       const struct lspec *s)
{
	for (unsigned i = 0; i < s->nf; i++) {
		const struct fent *f = &s->f[i];
		struct daxfs_stat st;
		uint32_t ino;
		uint64_t off = 0;

		if (f->replaced)
			continue;
		WCHECK_RC(w, daxfs_lookup_path(l, f->path, &ino), 0);
		WCHECK_RC(w, daxfs_stat(l, ino, &st), 0);
		WCHECK(w, S_ISREG(st.mode) && st.size == f->size && st.nlink == 1);
		while (off < f->size) {
			size_t n = f->size - off < BUFSZ ? (size_t)(f->size - off) : BUFSZ;

			WCHECK_RC(w, daxfs_pread(l, ino, w->buf, n, off), (long)n);
			gen(f->cid, off, w->buf2, n);
			WCHECK(w, !memcmp(w->buf, w->buf2, n));
			off += n;
		}
		WCHECK_RC(w, daxfs_pread(l, ino, w->buf, 16, f->size), 0);
		if (f->size > 1) {
			/* An unaligned piece from the middle. */
			uint64_t o = rnd(w) % f->size;
			size_t n = f->size - o < 3000 ? (size_t)(f->size - o) : 3000;

			WCHECK_RC(w, daxfs_pread(l, ino, w->buf, n, o), (long)n);
			gen(f->cid, o, w->buf2, n);
			WCHECK(w, !memcmp(w->buf, w->buf2, n));
		}
	}
	return 0;
}

/* Open and check a layer nobody evicts right now; serial: 0 or the serial
 * it must have. */
static int verify_layer(struct wk *w, const struct lspec *s, uint64_t serial)
{
	struct daxfs_layer *l;
	struct daxfs_err err = { 0 };
	int rc;

	rc = daxfs_layer_open(w->fs, s->id, &l, &err);
	if (rc < 0)
		fprintf(stderr, "open layer: %s\n", err.msg);
	WCHECK_RC(w, rc, 0);
	if (serial && daxfs_layer_serial(l) != serial) {
		daxfs_layer_close(l);
		WCHECK(w, !"the READY layer is the claim winner's");
	}
	rc = verify_open(w, l, s);
	daxfs_layer_close(l);
	return rc;
}

static void bk_set(_Atomic uint64_t *bk, unsigned st)
{
	uint64_t gen = atomic_load(bk) >> 8;

	atomic_store(bk, ((gen + 1) << 8) | st);
}

/* Read a layer some other host may be evicting or rebuilding right now:
 * either it opens and reads back correctly, or its bookkeeping moved on
 * while we tried.  0 read, 1 raced (not open), -1 failed. */
static int read_racing(struct wk *w, _Atomic uint64_t *bk, const struct lspec *s)
{
	uint64_t before = atomic_load(bk);
	struct daxfs_layer *l;
	int rc;

	if (BK_STATE(before) != BK_READY)
		return 1;
	rc = daxfs_layer_open(w->fs, s->id, &l, NULL);
	if (rc == 0) {
		rc = verify_open(w, l, s);
		daxfs_layer_close(l);
		return rc;
	}
	WCHECK(w, rc == -ENOENT || rc == -EBUSY);
	WCHECK(w, atomic_load(bk) != before);
	return 1;
}

static unsigned own_ready(struct shared *sh, int id, unsigned upto)
{
	unsigned n = 0;

	for (unsigned q = 0; q < upto; q++)
		n += BK_STATE(atomic_load(&sh->lbk[id][q])) == BK_READY;
	return n;
}

/* A random entry of bk[0..n) that is READY now, if there is one. */
static unsigned pick_ready(struct wk *w, _Atomic uint64_t *bk, unsigned n)
{
	unsigned q = (unsigned)(rnd(w) % n);

	for (unsigned k = 0; k < n; k++, q = (q + 1) % n)
		if (BK_STATE(atomic_load(&bk[q])) == BK_READY)
			break;
	return q;
}

/* Evict one of our READY layers of an earlier round (readers may hold
 * it: then it stays). */
static int evict_some(struct wk *w, unsigned r)
{
	struct shared *sh = w->sh;
	struct daxfs_err err = { 0 };
	struct lspec s;
	unsigned q = pick_ready(w, sh->lbk[w->id], r);
	int rc;

	if (BK_STATE(atomic_load(&sh->lbk[w->id][q])) != BK_READY)
		return 0;
	spec_own(&s, sh->seed, w->id, q);
	bk_set(&sh->lbk[w->id][q], BK_EVICTING);
	rc = daxfs_layer_evict(w->fs, s.id, &err);
	if (rc == -EBUSY) {
		bk_set(&sh->lbk[w->id][q], BK_READY);
		atomic_fetch_add(&sh->n_evict_busy, 1);
		return 0;
	}
	if (rc < 0)
		fprintf(stderr, "evict: %s\n", err.msg);
	WCHECK_RC(w, rc, 0);
	bk_set(&sh->lbk[w->id][q], BK_ABSENT);
	atomic_fetch_add(&sh->n_evict, 1);
	return 0;
}

static int build_own(struct wk *w, unsigned q, bool again)
{
	struct shared *sh = w->sh;
	struct lspec s;
	uint64_t serial;
	int claim;

	spec_own(&s, sh->seed, w->id, q);
	bk_set(&sh->lbk[w->id][q], BK_BUILDING);
	if (build(w, &s, &claim, &serial) < 0)
		return -1;
	WCHECK_RC(w, claim, 0);		/* nobody else builds our layers */
	bk_set(&sh->lbk[w->id][q], BK_READY);
	atomic_fetch_add(again ? &sh->n_rebuild : &sh->n_build, 1);
	return 0;
}

/* All workers claim the same diff_id at once: one builds it, the others
 * are told it is busy or already there.  On odd rounds they then all
 * evict it at once: one eviction happens. */
static int contest(struct wk *w, unsigned r)
{
	struct shared *sh = w->sh;
	struct daxfs_layer *l;
	struct lspec s;
	uint64_t serial;
	int claim, rc;

	spec_contested(&s, sh->seed, r);
	WSYNC(w);
	if (build(w, &s, &claim, &serial) < 0)
		return -1;
	if (claim == 0) {
		atomic_fetch_add(&sh->c_claim[r], 1);
		atomic_store(&sh->c_serial[r], serial);
		bk_set(&sh->cbk[r], BK_READY);
	} else if (claim == -EBUSY) {
		atomic_fetch_add(&sh->c_busy[r], 1);
	} else {
		WCHECK_RC(w, claim, -EEXIST);
		atomic_fetch_add(&sh->c_exist[r], 1);
	}
	WSYNC(w);
	WCHECK(w, atomic_load(&sh->c_claim[r]) == 1);
	WCHECK(w, atomic_load(&sh->c_busy[r]) + atomic_load(&sh->c_exist[r]) == NW - 1);
	WCHECK(w, BK_STATE(atomic_load(&sh->cbk[r])) == BK_READY);
	if (verify_layer(w, &s, atomic_load(&sh->c_serial[r])) < 0)
		return -1;
	if (r % 2 == 0)
		return 0;
	WSYNC(w);
	rc = daxfs_layer_evict(w->fs, s.id, NULL);
	if (rc == 0) {
		atomic_fetch_add(&sh->c_evict[r], 1);
		bk_set(&sh->cbk[r], BK_ABSENT);
	} else {
		WCHECK(w, rc == -ENOENT || rc == -EBUSY);
	}
	WSYNC(w);
	WCHECK(w, atomic_load(&sh->c_evict[r]) == 1);
	WCHECK_RC(w, daxfs_layer_open(w->fs, s.id, &l, NULL), -ENOENT);
	return 0;
}

static int verify_all(struct wk *w)
{
	_Atomic uint64_t *bk;
	struct lspec s;

	for (unsigned i = 0; (bk = layer_at(w->sh, i, &s)); i++)
		if (BK_STATE(atomic_load(bk)) == BK_READY && verify_layer(w, &s, 0) < 0)
			return -1;
	return 0;
}

/* Owners evict and rebuild their hot layer while the others open and read
 * it: holder bits race the eviction CAS, retired contents race dedup. */
static int hot_phase(struct wk *w, unsigned iters)
{
	struct shared *sh = w->sh;
	_Atomic uint64_t *mine = &sh->hbk[w->id];
	struct daxfs_err err = { 0 };
	struct lspec s, own;
	uint64_t serial;
	int rc, claim;

	spec_hot(&own, sh->seed, w->id);
	WSYNC(w);
	for (unsigned i = 0; i < iters; i++) {
		sched_yield();		/* let the other hosts in between */
		if (i % 2 == 0) {
			int o = (w->id + 1 + (int)(rnd(w) % (NW - 1))) % NW;

			spec_hot(&s, sh->seed, o);
			rc = read_racing(w, &sh->hbk[o], &s);
			if (rc < 0)
				return -1;
			atomic_fetch_add(rc ? &sh->n_hot_raced : &sh->n_hot_read, 1);
			continue;
		}
		if (BK_STATE(atomic_load(mine)) == BK_READY) {
			bk_set(mine, BK_EVICTING);
			rc = daxfs_layer_evict(w->fs, own.id, &err);
			if (rc == -EBUSY) {
				bk_set(mine, BK_READY);
				atomic_fetch_add(&sh->n_hot_busy, 1);
				continue;
			}
			if (rc < 0)
				fprintf(stderr, "evict: %s\n", err.msg);
			WCHECK_RC(w, rc, 0);
			bk_set(mine, BK_ABSENT);
			atomic_fetch_add(&sh->n_hot_evict, 1);
		}
		/* Back at once: readers mostly find it READY. */
		bk_set(mine, BK_BUILDING);
		if (build(w, &own, &claim, &serial) < 0)
			return -1;
		WCHECK_RC(w, claim, 0);
		bk_set(mine, BK_READY);
		atomic_fetch_add(&sh->n_hot_build, 1);
	}
	WSYNC(w);
	return 0;
}

static int layer_worker(struct wk *w)
{
	struct shared *sh = w->sh;
	struct lspec s;
	int rc;

	WSYNC(w);
	for (unsigned r = 0; r < sh->rounds; r++) {
		w->round = r;
		if (build_own(w, r, false) < 0)
			return -1;
		/* Rebuild an evicted layer, identically. */
		if (r > 0 && rnd(w) % 2) {
			unsigned q = (unsigned)(rnd(w) % r);

			if (BK_STATE(atomic_load(&sh->lbk[w->id][q])) == BK_ABSENT &&
			    build_own(w, q, true) < 0)
				return -1;
		}
		/* Read other hosts' layers while they evict and rebuild. */
		for (int k = 0; k < 4; k++) {
			int o = (w->id + 1 + (int)(rnd(w) % (NW - 1))) % NW;
			unsigned q = pick_ready(w, sh->lbk[o], r + 1);

			/* Up to two evictions a round keep about six of our
			 * layers READY, however long the run. */
			if (k == 2 && r > 0) {
				unsigned n = own_ready(sh, w->id, r) > 5 ? 2 :
					     (unsigned)(rnd(w) % 2);

				while (n--)
					if (evict_some(w, r) < 0)
						return -1;
			}
			if (k == 3) {
				/* Nobody evicts contested layers here. */
				q = pick_ready(w, sh->cbk, r + 1);
				if (BK_STATE(atomic_load(&sh->cbk[q])) != BK_READY)
					continue;
				spec_contested(&s, sh->seed, q);
				WCHECK_RC(w, read_racing(w, &sh->cbk[q], &s), 0);
				atomic_fetch_add(&sh->n_read, 1);
				continue;
			}
			spec_own(&s, sh->seed, o, q);
			rc = read_racing(w, &sh->lbk[o][q], &s);
			if (rc < 0)
				return -1;
			atomic_fetch_add(rc ? &sh->n_read_raced : &sh->n_read, 1);
		}
		if (contest(w, r) < 0 || hot_phase(w, 24) < 0)
			return -1;
	}
	w->round = sh->rounds;
	WSYNC(w);
	if (verify_all(w) < 0)
		return -1;
	WSYNC(w);
	return 0;
}

/* What the region must hold, from the bookkeeping. */
struct expect {
	uint64_t layers, contents, content_bytes, referenced;
	uint64_t cids[(MAXR * (MAXW + 1) + MAXW) * MAXF];
};

static void expect_add(struct expect *e, const struct lspec *s)
{
	e->layers++;
	e->referenced += s->bytes;
	for (unsigned i = 0; i < s->nf; i++) {
		const struct fent *f = &s->f[i];
		uint64_t k;

		if (f->replaced || !f->cid)
			continue;
		for (k = 0; k < e->contents; k++)
			if (e->cids[k] == f->cid)
				break;
		if (k < e->contents)
			continue;
		e->cids[e->contents++] = f->cid;
		e->content_bytes += f->size;
	}
}

/* Is diff_id one of the layers the bookkeeping says are READY? */
static bool expected_ready(struct shared *sh, const uint8_t id[32])
{
	_Atomic uint64_t *bk;
	struct lspec s;

	for (unsigned i = 0; (bk = layer_at(sh, i, &s)); i++)
		if (BK_STATE(atomic_load(bk)) == BK_READY && !memcmp(s.id, id, 32))
			return true;
	return false;
}

struct lscan {
	struct shared *sh;
	uint64_t ready, records, strays, unsettled;
	uint8_t (*ids)[32];
};

static int layer_scan_cb(const struct daxfs_layer_info *li, void *arg)
{
	struct lscan *ls = arg;

	ls->records++;
	if (li->state == DFS_L_READY) {
		if (!expected_ready(ls->sh, li->diff_id))
			ls->strays++;
		if (ls->ids)
			memcpy(ls->ids[ls->ready], li->diff_id, 32);
		ls->ready++;
	} else if (li->state != DFS_L_ABSENT) {
		ls->unsettled++;
	}
	return 0;
}

/* After the workers detached: check the region against the bookkeeping,
 * read everything back as a new host, evict it all, check again. */
static int layer_final(struct team *t, unsigned rounds)
{
	static struct expect e;
	static uint8_t ids[MAXR * (MAXW + 1) + MAXW][32];
	struct shared *sh = t->sh;
	struct daxfs *fs = NULL;
	struct daxfs_usage u;
	struct daxfs_err err = { 0 };
	struct lscan ls = { .sh = sh, .ids = ids };
	struct lspec s;
	struct wk chk = { .sh = sh, .id = NW, .round = rounds };
	uint64_t records = 0;	/* one per diff_id ever built */
	_Atomic uint64_t *bk;
	struct wk *w = &chk;
	int rc;

	memset(&e, 0, sizeof(e));
	for (unsigned i = 0; (bk = layer_at(sh, i, &s)); i++) {
		records++;
		if (BK_STATE(atomic_load(bk)) == BK_READY)
			expect_add(&e, &s);
	}

	/* A fresh open of the region everyone left cleanly. */
	WCHECK_RC(w, open_plain(t, &fs), 0);
	rc = fsck_problems(fs);
	daxfs_usage(fs, &u);
	daxfs_layers_foreach(fs, layer_scan_cb, &ls);
	daxfs_close(fs);
	WCHECK_RC(w, rc, 0);
	WCHECK(w, ls.records == records);
	WCHECK(w, ls.unsettled == 0);		/* no UNPACKING/EVICTING left */
	WCHECK(w, ls.strays == 0);		/* READY, but nobody built it */
	WCHECK(w, ls.ready == e.layers && u.layers_ready == e.layers);
	WCHECK(w, u.contents == e.contents);	/* dedup: each content once */
	WCHECK(w, u.content_bytes == e.content_bytes);
	WCHECK(w, u.referenced_bytes == e.referenced);
	WCHECK(w, u.hash_used == records + e.contents);

	/* Read every layer back as a new host, then evict them all. */
	chk.buf = malloc(BUFSZ);
	chk.buf2 = malloc(BUFSZ);
	rc = chk.buf && chk.buf2 ? tu_attach(t->path, NW + 1, LEASE_MS, &chk.fs)
				 : -ENOMEM;
	if (rc == 0)
		rc = verify_all(&chk);
	for (uint64_t i = 0; rc == 0 && i < ls.ready; i++) {
		rc = daxfs_layer_evict(chk.fs, ids[i], &err);
		if (rc < 0)
			fprintf(stderr, "evict: %s\n", err.msg);
	}
	if (rc == 0)
		daxfs_usage(chk.fs, &u);
	daxfs_close(chk.fs);
	free(chk.buf);
	free(chk.buf2);
	WCHECK_RC(w, rc, 0);
	WCHECK(w, u.data_used == 0 && u.contents == 0 && u.layers_ready == 0);
	/* Only the layer records stay: no tree or content record leaked. */
	WCHECK(w, u.meta_used == records * sizeof(struct dfs_layer));
	WCHECK(w, u.hash_used == records);
	WCHECK_RC(w, open_plain(t, &fs), 0);
	rc = fsck_problems(fs);
	daxfs_close(fs);
	WCHECK_RC(w, rc, 0);
	return 0;
}

TEST(layer_races)
{
	struct team t;
	unsigned rounds = scaled(UNDER_TSAN ? 10 : 48, MAXR);
	unsigned busy = 0, exist = 0, claims = 0;
	uint64_t t0 = tu_now_ms();
	int bad = -1, rc;

	rc = team_begin(&t, "stress-layers", 96 << 20, 0, rounds);
	if (rc == 0) {
		printf("%s: layers: %d %s, %u rounds, seed %#" PRIx64 "\n",
		       STRESS_PROG, NW, team_kind(), rounds, t.sh->seed);
		fflush(stdout);
		bad = team_run(&t, layer_worker);
		for (unsigned q = 0; q < rounds; q++) {
			claims += t.sh->c_claim[q];
			busy += t.sh->c_busy[q];
			exist += t.sh->c_exist[q];
		}
		printf("%s: layers: %llu builds, %llu rebuilds, %llu MiB of files; "
		       "contested: %u won, %u busy, %u already there; "
		       "evictions %llu (%llu refused while held); "
		       "reads of others' layers %llu (%llu raced an eviction)\n",
		       STRESS_PROG, (unsigned long long)t.sh->n_build,
		       (unsigned long long)t.sh->n_rebuild,
		       (unsigned long long)(t.sh->n_bytes >> 20), claims, busy, exist,
		       (unsigned long long)t.sh->n_evict,
		       (unsigned long long)t.sh->n_evict_busy,
		       (unsigned long long)t.sh->n_read,
		       (unsigned long long)t.sh->n_read_raced);
		printf("%s: layers: hot layers: %llu evictions, %llu refused while held, "
		       "%llu rebuilds; %llu reads, %llu raced an eviction or rebuild\n",
		       STRESS_PROG, (unsigned long long)t.sh->n_hot_evict,
		       (unsigned long long)t.sh->n_hot_busy,
		       (unsigned long long)t.sh->n_hot_build,
		       (unsigned long long)t.sh->n_hot_read,
		       (unsigned long long)t.sh->n_hot_raced);
		if (bad == 0)
			rc = layer_final(&t, rounds);
	}
	team_end(&t);
	printf("%s: layers: %.2f s\n", STRESS_PROG, secs_since(t0));
	CHECK_RC(rc, 0);
	CHECK(bad == 0);
}

#endif /* STRESS_LAYERS */

CHECK_MAIN_BEGIN(STRESS_PROG)
#if STRESS_HASH
	RUN(hash_races);
#endif
#if STRESS_LAYERS
	RUN(layer_races);
#endif
CHECK_MAIN_END
