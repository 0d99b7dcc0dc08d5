/* Pins and the clock racing, with threads over one mapping of the region
 * (each thread attached as its own host), so ThreadSanitizer sees every
 * access (make test-tsan):
 *  - one host repeatedly holds a layer, pins its image, lets go, checks it
 *    is READY, unpins it (and rebuilds it once the clock took it); another
 *    holds and releases a second layer, checking it READY while held; a
 *    third sweeps with gc --all the whole time: no pinned or held layer
 *    may end up evicted;
 *  - two hosts sweep at once: each layer is evicted exactly once. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sys/mman.h>

#include "check.h"
#include "format.h"
#include "testutil.h"

#define REGION (32ULL << 20)
#define LEASE 1000u
#define NLAYERS 12

static char path[256];
static void *map;

static int region(const char *tag)
{
	int fd, rc;

	tu_region_path(path, sizeof(path), tag);
	unlink(path);
	rc = tu_mkfs(path, REGION, 8);
	if (rc < 0)
		return rc;
	fd = open(path, O_RDWR | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	map = mmap(NULL, REGION, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	close(fd);
	return map == MAP_FAILED ? -errno : 0;
}

static void region_end(void)
{
	munmap(map, REGION);
	unlink(path);
}

static void layer_id(uint8_t id[32], unsigned key)
{
	tu_digest(id, 0x6c7a, key);
}

/* A layer with one file of its own; -EEXIST if READY (or evicting). */
static int build(struct daxfs *fs, unsigned key)
{
	struct daxfs_layer_builder *b = NULL;
	struct tu_ent e = { "f", TU_REG, 5000, 0, NULL, NULL, NULL };
	uint8_t id[32];
	int rc;

	e.seed = 7000 + key;
	layer_id(id, key);
	rc = daxfs_layer_build(fs, id, &b, NULL);
	if (rc == 0)
		rc = tu_add_ent(b, &e, UINT64_MAX, NULL);
	if (rc == 0)
		rc = daxfs_builder_publish(b, NULL, NULL);
	if (rc < 0 && b)
		daxfs_builder_abort(b);
	return rc;
}

static int lstate(struct daxfs *fs, unsigned key)
{
	struct daxfs_layer_info li;
	uint8_t id[32];

	layer_id(id, key);
	return daxfs_layer_info(fs, id, &li, NULL) < 0 ? -1 : (int)li.state;
}

static int lopen(struct daxfs *fs, unsigned key, struct daxfs_layer **l)
{
	uint8_t id[32];

	layer_id(id, key);
	return daxfs_layer_open(fs, id, l, NULL);
}

/* ---- pins and holds against the clock ---- */

struct race {
	_Atomic int stop;
	_Atomic int bad;
	_Atomic unsigned rebuilt, sweeps;
	unsigned rounds;
};

/* Hold layer key, building it again if the clock took it. */
static int hold(struct daxfs *fs, unsigned key, struct daxfs_layer **l,
		struct race *r)
{
	uint64_t end = tu_now_ms() + 10000;

	while (lopen(fs, key, l) < 0) {
		if (tu_now_ms() > end)
			return -ETIMEDOUT;
		if (build(fs, key) == 0)
			atomic_fetch_add(&r->rebuilt, 1);
		sched_yield();
	}
	return 0;
}

/* The state once no eviction is in flight (an evictor that met a pin
 * rolls back from EVICTING). */
static int settled(struct daxfs *fs, unsigned key)
{
	uint64_t end = tu_now_ms() + 10000;
	int st;

	while ((st = lstate(fs, key)) == DFS_L_EVICTING && tu_now_ms() < end)
		sched_yield();
	return st;
}

static void wait_sweeps(struct race *r, unsigned n)
{
	unsigned s0 = atomic_load(&r->sweeps);
	uint64_t end = tu_now_ms() + 2000;

	while (atomic_load(&r->sweeps) - s0 < n && !atomic_load(&r->bad) &&
	       tu_now_ms() < end)
		sched_yield();
}

struct worker {
	struct race *r;
	struct daxfs *fs;
	int id;
};

static void *pinner(void *p)
{
	struct worker *w = p;
	struct daxfs_layer *l;

	uint64_t end = tu_now_ms() + 5000;

	/* At least rounds rounds, and on until the sweeper made 50 passes
	 * (within a time bound, for slow sanitizer builds). */
	for (unsigned i = 0; (i < w->r->rounds || (atomic_load(&w->r->sweeps) < 50 &&
			      tu_now_ms() < end)) && !atomic_load(&w->r->bad); i++) {
		if (hold(w->fs, 1, &l, w->r) < 0 ||
		    daxfs_image_pin(w->fs, "reg/pinned:1", 1, NULL) < 0) {
			atomic_store(&w->r->bad, 1);
			break;
		}
		daxfs_layer_close(l);
		/* Let every sweep that may have listed the pins before ours
		 * end: one of them may have found the layer unheld. */
		wait_sweeps(w->r, 2);
		if (settled(w->fs, 1) != DFS_L_READY) {
			fprintf(stderr, "round %u: pinned layer state %d\n", i, lstate(w->fs, 1));
			atomic_store(&w->r->bad, 1);
		}
		if (daxfs_image_pin(w->fs, "reg/pinned:1", 0, NULL) < 0)
			atomic_store(&w->r->bad, 1);
		sched_yield();
	}
	atomic_store(&w->r->stop, 1);
	return NULL;
}

static void *holder(void *p)
{
	struct worker *w = p;
	struct daxfs_layer *l;

	while (!atomic_load(&w->r->stop)) {
		if (hold(w->fs, 2, &l, w->r) < 0) {
			atomic_store(&w->r->bad, 1);
			break;
		}
		if (lstate(w->fs, 2) != DFS_L_READY) {
			fprintf(stderr, "held layer state %d\n", lstate(w->fs, 2));
			atomic_store(&w->r->bad, 1);
		}
		daxfs_layer_close(l);
		sched_yield();
	}
	return NULL;
}

static void *sweeper(void *p)
{
	struct worker *w = p;
	struct daxfs_gc_opts o = { .all = 1 };
	struct daxfs_gc_result res;
	struct daxfs_err err = { 0 };

	while (!atomic_load(&w->r->stop)) {
		if (daxfs_gc(w->fs, &o, &res, &err) < 0) {
			fprintf(stderr, "gc: %s\n", err.msg);
			atomic_store(&w->r->bad, 1);
			break;
		}
		atomic_fetch_add(&w->r->sweeps, 1);
	}
	return NULL;
}

static int image(struct daxfs *fs, unsigned key, const char *ref)
{
	struct daxfs_chain_info c = { .depth = 1 };
	struct daxfs_image_info im = { .nlayers = 1 };
	int rc;

	tu_digest(c.chain_id, 0xc4a1, key);
	layer_id(c.diff_id, key);
	rc = daxfs_chain_put(fs, &c, NULL);
	if (rc < 0)
		return rc;
	snprintf(im.ref, sizeof(im.ref), "%s", ref);
	memcpy(im.top_chain, c.chain_id, 32);
	return daxfs_image_put(fs, &im, NULL);
}

TEST(pin_and_hold_race_the_clock)
{
	static void *(*const fn[3])(void *) = { pinner, holder, sweeper };
	struct race r = { .rounds = 150 };
	struct worker w[3];
	pthread_t t[3];
	const char *lg = getenv("DAXFS_TEST_LONG");

	if (lg && *lg && strcmp(lg, "0"))
		r.rounds *= 10;
	CHECK_RC(region("gcmt1"), 0);
	for (int i = 0; i < 3; i++) {
		w[i] = (struct worker){ &r, NULL, i + 1 };
		CHECK_RC(tu_attach_buffer(map, REGION, i + 1, LEASE, &w[i].fs), 0);
	}
	CHECK_RC(build(w[0].fs, 1), 0);
	CHECK_RC(build(w[0].fs, 2), 0);
	CHECK_RC(image(w[0].fs, 1, "reg/pinned:1"), 0);
	for (int i = 0; i < 3; i++)
		CHECK_RC(pthread_create(&t[i], NULL, fn[i], &w[i]), 0);
	for (int i = 0; i < 3; i++)
		pthread_join(t[i], NULL);
	fprintf(stderr, "%u sweeps, pinned layer rebuilt %u times\n",
		atomic_load(&r.sweeps), atomic_load(&r.rebuilt));
	CHECK(!atomic_load(&r.bad));
	tu_fsck_count = 0;
	CHECK_RC(daxfs_fsck(w[0].fs, 1, tu_fsck_line, NULL), 0);
	for (int i = 0; i < 3; i++)
		daxfs_close(w[i].fs);
	region_end();
}

/* ---- two hosts sweeping at once ---- */

struct sweep2 {
	struct tu_barrier bar;
	_Atomic int evicted[NLAYERS];
	_Atomic int bad;
	struct daxfs *fs[2];
};

static void sweep_report(const struct daxfs_layer_info *li, void *arg)
{
	struct sweep2 *s = arg;
	uint8_t id[32];

	for (unsigned k = 0; k < NLAYERS; k++) {
		layer_id(id, 100 + k);
		if (!memcmp(id, li->diff_id, 32)) {
			atomic_fetch_add(&s->evicted[k], 1);
			return;
		}
	}
	atomic_store(&s->bad, 1);
}

static struct sweep2 *sweep_sh;

static void *sweep_main(void *p)
{
	struct daxfs *fs = p;
	struct daxfs_gc_opts o = { .all = 1, .report = sweep_report, .arg = sweep_sh };
	struct daxfs_gc_result res;

	if (tu_barrier_wait(&sweep_sh->bar, 10000) < 0 ||
	    daxfs_gc(fs, &o, &res, NULL) < 0)
		atomic_store(&sweep_sh->bad, 1);
	return NULL;
}

TEST(two_hosts_sweep)
{
	struct sweep2 s = { 0 };
	pthread_t t[2];

	sweep_sh = &s;
	tu_barrier_init(&s.bar, 2);
	CHECK_RC(region("gcmt2"), 0);
	for (int i = 0; i < 2; i++)
		CHECK_RC(tu_attach_buffer(map, REGION, i + 1, LEASE, &s.fs[i]), 0);
	for (unsigned k = 0; k < NLAYERS; k++)
		CHECK_RC(build(s.fs[0], 100 + k), 0);
	for (int i = 0; i < 2; i++)
		CHECK_RC(pthread_create(&t[i], NULL, sweep_main, s.fs[i]), 0);
	for (int i = 0; i < 2; i++)
		pthread_join(t[i], NULL);
	CHECK(!atomic_load(&s.bad));
	for (unsigned k = 0; k < NLAYERS; k++)
		CHECK(atomic_load(&s.evicted[k]) == 1 && lstate(s.fs[0], 100 + k) == DFS_L_ABSENT);
	tu_fsck_count = 0;
	CHECK_RC(daxfs_fsck(s.fs[0], 1, tu_fsck_line, NULL), 0);
	for (int i = 0; i < 2; i++)
		daxfs_close(s.fs[i]);
	region_end();
}

CHECK_MAIN_BEGIN("test_gc_mt")
	RUN(pin_and_hold_race_the_clock);
	RUN(two_hosts_sweep);
CHECK_MAIN_END
