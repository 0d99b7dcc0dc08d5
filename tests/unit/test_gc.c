/* The multi-host clock, pins, holder classes and stale holder bits.
 *
 * Hosts are separate attaches of one region file (each its own struct
 * daxfs, as separate processes would be), forked processes, or threads
 * over one mapping (test_gc_mt.c, for ThreadSanitizer).  Leases are tens
 * of milliseconds.  A kill test re-executes this binary as a host that
 * pins, sweeps and clears stale bits with DAXFS_FAILPOINT=N, and checks
 * that reaping it leaves fsck clean and every pinned layer READY. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "check.h"
#include "host.h"	/* white-box: owner words, holds_clear_slot */
#include "testutil.h"

#ifndef GC_PROG
#define GC_PROG "test_gc"
#endif

#define REGION (32ULL << 20)
#define LEASE 40u

static char path[256];

static void sleep_ms(unsigned ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

static int mk(const char *tag)
{
	tu_region_path(path, sizeof(path), tag);
	unlink(path);
	return tu_mkfs(path, REGION, 8);
}

/* Open the region and attach as host id, process kind, lease and grace. */
static int host(int id, enum daxfs_proc_kind kind, uint32_t lease,
		uint32_t grace, struct daxfs **fs)
{
	struct daxfs_open_opts o = { .path = path, .lease_ms = lease, .grace_ms = grace };
	struct daxfs_host_opts h = { .kind = kind };
	struct daxfs_err err = { 0 };
	char name[32];
	int rc;

	memset(h.uuid, 0, 16);
	h.uuid[0] = 0xda;
	h.uuid[15] = (uint8_t)id;
	snprintf(name, sizeof(name), "test-host-%d", id);
	h.name = name;
	rc = daxfs_open(&o, fs, &err);
	if (rc < 0) {
		fprintf(stderr, "open: %s\n", err.msg);
		return rc;
	}
	rc = daxfs_host_attach(*fs, &h, &err);
	if (rc < 0) {
		fprintf(stderr, "attach host %d: %s\n", id, err.msg);
		daxfs_abandon(*fs);
	}
	return rc;
}

static void layer_id(uint8_t id[32], unsigned key)
{
	tu_digest(id, 0x1a7e4, key);
}

/* A layer of two files whose bytes belong to it alone (key names both). */
static int build(struct daxfs *fs, unsigned key)
{
	struct daxfs_layer_builder *b = NULL;
	struct daxfs_err err = { 0 };
	uint8_t id[32];
	char p0[32], p1[32];
	struct tu_ent e[2] = {
		{ p0, TU_REG, 20000, 0, NULL, NULL, NULL },
		{ p1, TU_REG, 3000, 0, NULL, NULL, NULL },
	};
	int rc;

	snprintf(p0, sizeof(p0), "k%u/a", key);
	snprintf(p1, sizeof(p1), "k%u/b", key);
	e[0].seed = 1000 + 2 * key;
	e[1].seed = 1001 + 2 * key;
	layer_id(id, key);
	rc = daxfs_layer_build(fs, id, &b, &err);
	for (int i = 0; rc == 0 && i < 2; i++)
		rc = tu_add_ent(b, &e[i], UINT64_MAX, &err);
	if (rc == 0)
		rc = daxfs_builder_publish(b, NULL, &err);
	if (rc < 0) {
		fprintf(stderr, "build %u: %s\n", key, err.msg);
		daxfs_builder_abort(b);
	}
	return rc;
}

/* Image ref whose chain is keys[0] (bottom) .. keys[n-1] (top). */
static int image(struct daxfs *fs, const char *ref, const unsigned *keys, int n)
{
	struct daxfs_image_info im;
	struct daxfs_chain_info c;
	struct daxfs_err err = { 0 };
	uint8_t parent[32] = { 0 };
	int rc;

	for (int i = 0; i < n; i++) {
		memset(&c, 0, sizeof(c));
		tu_digest(c.chain_id, 0xc4a1, (uint64_t)keys[i] * 1000 + (uint64_t)i);
		memcpy(c.parent, parent, 32);
		layer_id(c.diff_id, keys[i]);
		c.depth = (uint64_t)i + 1;
		rc = daxfs_chain_put(fs, &c, &err);
		if (rc < 0) {
			fprintf(stderr, "chain: %s\n", err.msg);
			return rc;
		}
		memcpy(parent, c.chain_id, 32);
	}
	memset(&im, 0, sizeof(im));
	snprintf(im.ref, sizeof(im.ref), "%s", ref);
	memcpy(im.top_chain, parent, 32);
	im.nlayers = (uint64_t)n;
	rc = daxfs_image_put(fs, &im, &err);
	if (rc < 0)
		fprintf(stderr, "image: %s\n", err.msg);
	return rc;
}

/* A host process dies holding layers: the region is left as it is and
 * the process memory (the handles with it) is gone. */
static void crash(struct daxfs *fs, struct daxfs_layer *l1, struct daxfs_layer *l2)
{
	daxfs_abandon(fs);
	free(l1);
	free(l2);
}

static int lstate(struct daxfs *fs, unsigned key, struct daxfs_layer_info *li)
{
	struct daxfs_layer_info tmp;
	uint8_t id[32];

	layer_id(id, key);
	if (!li)
		li = &tmp;
	return daxfs_layer_info(fs, id, li, NULL) < 0 ? -1 : (int)li->state;
}

static int lopen(struct daxfs *fs, unsigned key, struct daxfs_layer **l)
{
	uint8_t id[32];

	layer_id(id, key);
	return daxfs_layer_open(fs, id, l, NULL);
}

static int gc_all(struct daxfs *fs, struct daxfs_gc_result *r)
{
	struct daxfs_gc_opts o = { .all = 1 };
	struct daxfs_gc_result tmp;
	struct daxfs_err err = { 0 };
	int rc = daxfs_gc(fs, &o, r ? r : &tmp, &err);

	if (rc < 0)
		fprintf(stderr, "gc: %s\n", err.msg);
	return rc;
}

static int fsck_live(struct daxfs *fs)
{
	tu_fsck_count = 0;
	return daxfs_fsck(fs, 1, tu_fsck_line, NULL);
}

static void count_report(const struct daxfs_layer_info *li, void *arg)
{
	(void)li;
	(*(int *)arg)++;
}

/* Wait until host id's slot is reaped (fs reaping what it sees dead). */
static int reap_until_gone(struct daxfs *fs, int id)
{
	uint64_t end = tu_now_ms() + 20 * LEASE + 2000;
	struct daxfs_host_info info[DFS_MAX_HOSTS];
	struct daxfs_err err = { 0 };

	while (tu_now_ms() < end) {
		int n = daxfs_hosts_observe(fs, info, DFS_MAX_HOSTS), live = 0;

		for (int i = 0; i < n && i < (int)DFS_MAX_HOSTS; i++)
			if (info[i].uuid[0] == 0xda && info[i].uuid[15] == id &&
			    info[i].liveness != DAXFS_HOST_GONE)
				live = 1;
		if (!live)
			return 0;
		if (daxfs_reap_dead(fs, &err) < 0)
			fprintf(stderr, "reap: %s\n", err.msg);
		sleep_ms(5);
	}
	return -ETIMEDOUT;
}

/* ---- the clock ---- */

TEST(evicts_unheld_only)
{
	struct daxfs *fs;
	struct daxfs_layer *l;
	struct daxfs_usage u0, u1;
	struct daxfs_gc_result r;
	struct daxfs_layer_info li;

	CHECK_RC(mk("gc1"), 0);
	CHECK_RC(host(1, DAXFS_PROC_DAEMON, 1000, 1000, &fs), 0);
	for (unsigned k = 0; k < 3; k++)
		CHECK_RC(build(fs, k), 0);
	CHECK_RC(lopen(fs, 0, &l), 0);
	CHECK_RC(daxfs_usage(fs, &u0), 0);
	CHECK(u0.layers_ready == 3 && u0.layers_held == 1 && u0.layers_pinned == 0);
	CHECK(u0.held_bytes == 23000 && u0.reclaimable_bytes == 46000);
	CHECK_RC(gc_all(fs, &r), 0);
	CHECK(r.evicted == 2);
	CHECK(lstate(fs, 0, &li) == DFS_L_READY && lstate(fs, 1, NULL) == DFS_L_ABSENT &&
	      lstate(fs, 2, NULL) == DFS_L_ABSENT);
	CHECK(li.holders == 1ULL << daxfs_host_slot(fs));
	CHECK(r.held == 1 && r.held_hosts == 1ULL << daxfs_host_slot(fs) && r.pinned == 0);
	CHECK_RC(daxfs_usage(fs, &u1), 0);
	CHECK(u1.data_used < u0.data_used && u1.meta_used < u0.meta_used);
	CHECK(r.data_freed == u0.data_used - u1.data_used);
	CHECK(r.meta_freed == u0.meta_used - u1.meta_used);
	CHECK(r.data_free == u1.data_total - u1.data_used);
	CHECK(u1.layers_ready == 1 && u1.reclaimable_bytes == 0 && u1.held_bytes == 23000);
	CHECK_RC(fsck_live(fs), 0);
	daxfs_layer_close(l);
	CHECK_RC(gc_all(fs, &r), 0);
	CHECK(r.evicted == 1 && r.held == 0 && lstate(fs, 0, NULL) == DFS_L_ABSENT);
	CHECK_RC(fsck_live(fs), 0);
	daxfs_close(fs);
	unlink(path);
}

TEST(second_chance)
{
	struct daxfs *fs;
	struct daxfs_layer *l;
	struct daxfs_layer_info li;
	struct daxfs_usage u;
	struct daxfs_gc_result r;
	struct daxfs_gc_opts o = { 0 };
	struct daxfs_err err = { 0 };

	CHECK_RC(mk("gc2"), 0);
	CHECK_RC(host(1, DAXFS_PROC_DAEMON, 1000, 1000, &fs), 0);
	CHECK_RC(build(fs, 10), 0);
	CHECK_RC(build(fs, 11), 0);
	CHECK(lstate(fs, 10, &li) == DFS_L_READY && !li.recently_used);
	CHECK_RC(lopen(fs, 11, &l), 0);
	daxfs_layer_close(l);
	CHECK(lstate(fs, 11, &li) == DFS_L_READY && li.recently_used);
	/* Wants that one eviction meets: the unused layer goes, the
	 * recently used one survives the pass. */
	CHECK_RC(daxfs_usage(fs, &u), 0);
	o.want_data = u.data_total - u.data_used + 1;
	CHECK_RC(daxfs_gc(fs, &o, &r, &err), 0);
	CHECK(r.evicted == 1 && r.data_free >= o.want_data);
	CHECK(lstate(fs, 10, NULL) == DFS_L_ABSENT && lstate(fs, 11, NULL) == DFS_L_READY);
	/* The next pass that needs space takes it. */
	o.want_data = r.data_free + 1;
	CHECK_RC(daxfs_gc(fs, &o, &r, &err), 0);
	CHECK(r.evicted == 1 && lstate(fs, 11, NULL) == DFS_L_ABSENT);
	/* Wants already met: nothing happens. */
	CHECK_RC(build(fs, 12), 0);
	o.want_data = 0;
	CHECK_RC(daxfs_gc(fs, &o, &r, &err), 0);
	CHECK(r.evicted == 0 && lstate(fs, 12, NULL) == DFS_L_READY);
	CHECK_RC(fsck_live(fs), 0);
	daxfs_close(fs);
	unlink(path);
}

TEST(pins)
{
	static const unsigned pinned[] = { 20, 21 }, other[] = { 22 };
	struct daxfs *fs;
	struct daxfs_image_info im;
	struct daxfs_usage u;
	struct daxfs_gc_result r;
	struct daxfs_gc_opts dry = { .all = 1, .dry_run = 1, .report = count_report };
	struct daxfs_err err = { 0 };
	int n = 0;

	CHECK_RC(mk("gc3"), 0);
	CHECK_RC(host(1, DAXFS_PROC_DAEMON, 1000, 1000, &fs), 0);
	for (unsigned k = 20; k < 23; k++)
		CHECK_RC(build(fs, k), 0);
	CHECK_RC(image(fs, "reg/pinned:1", pinned, 2), 0);
	CHECK_RC(image(fs, "reg/other:1", other, 1), 0);
	CHECK_RC(daxfs_image_pin(fs, "reg/pinned:1", 1, &err), 0);
	CHECK_RC(daxfs_image_get(fs, "reg/pinned:1", &im), 0);
	CHECK(im.flags & DAXFS_IMAGE_PINNED);
	CHECK_RC(daxfs_image_pin(fs, "reg/none:1", 1, &err), -ENOENT);
	CHECK_RC(daxfs_usage(fs, &u), 0);
	CHECK(u.layers_pinned == 2 && u.layers_held == 0 && u.reclaimable_bytes == 23000);
	CHECK_RC(gc_all(fs, &r), 0);
	CHECK(r.evicted == 1 && r.pinned == 2);
	CHECK(lstate(fs, 20, NULL) == DFS_L_READY && lstate(fs, 21, NULL) == DFS_L_READY &&
	      lstate(fs, 22, NULL) == DFS_L_ABSENT);
	dry.arg = &n;
	CHECK_RC(daxfs_gc(fs, &dry, &r, &err), 0);
	CHECK(r.evicted == 0 && n == 0);
	CHECK_RC(daxfs_image_pin(fs, "reg/pinned:1", 0, &err), 0);
	CHECK_RC(daxfs_image_get(fs, "reg/pinned:1", &im), 0);
	CHECK(!(im.flags & DAXFS_IMAGE_PINNED));
	/* dry_run reports without changing anything. */
	CHECK_RC(daxfs_gc(fs, &dry, &r, &err), 0);
	CHECK(r.evicted == 2 && n == 2);
	CHECK(lstate(fs, 20, NULL) == DFS_L_READY && lstate(fs, 21, NULL) == DFS_L_READY);
	CHECK_RC(gc_all(fs, &r), 0);
	CHECK(r.evicted == 2 && r.pinned == 0 && lstate(fs, 21, NULL) == DFS_L_ABSENT);
	CHECK_RC(fsck_live(fs), 0);
	daxfs_close(fs);
	unlink(path);
}

/* ---- holder classes ---- */

TEST(daemon_and_view_classes)
{
	struct daxfs *d, *v;
	struct daxfs_layer *ld, *lv;
	struct daxfs_layer_info li;
	struct daxfs_gc_result r;

	CHECK_RC(mk("gc4"), 0);
	CHECK_RC(host(1, DAXFS_PROC_DAEMON, 1000, 1000, &d), 0);
	CHECK_RC(host(1, DAXFS_PROC_VIEW, 1000, 1000, &v), 0);
	CHECK(daxfs_host_slot(d) == daxfs_host_slot(v));
	CHECK_RC(build(d, 30), 0);
	CHECK_RC(lopen(d, 30, &ld), 0);
	CHECK_RC(lopen(v, 30, &lv), 0);
	daxfs_layer_close(ld);		/* the view still holds it */
	CHECK(lstate(d, 30, &li) == DFS_L_READY && li.holders == 1ULL << daxfs_host_slot(d));
	CHECK_RC(gc_all(d, &r), 0);
	CHECK(r.evicted == 0 && r.held == 1 && lstate(d, 30, NULL) == DFS_L_READY);
	CHECK_RC(lopen(d, 30, &ld), 0);
	daxfs_layer_close(lv);		/* now the daemon holds it */
	CHECK_RC(gc_all(d, &r), 0);
	CHECK(r.evicted == 0 && lstate(d, 30, NULL) == DFS_L_READY);
	daxfs_layer_close(ld);
	CHECK_RC(gc_all(d, &r), 0);
	CHECK(r.evicted == 1 && lstate(d, 30, NULL) == DFS_L_ABSENT);
	daxfs_close(v);
	daxfs_close(d);
	unlink(path);
}

TEST(restart_keeps_holds_and_syncs)
{
	struct daxfs *d1, *d2, *v;
	struct daxfs_layer *x1, *y1, *yv, *x2;
	struct daxfs_layer_info li;
	struct daxfs_gc_result r;
	uint32_t inc1;

	CHECK_RC(mk("gc5"), 0);
	CHECK_RC(host(1, DAXFS_PROC_DAEMON, LEASE, LEASE, &d1), 0);
	CHECK_RC(host(1, DAXFS_PROC_VIEW, LEASE, LEASE, &v), 0);
	CHECK_RC(build(d1, 40), 0);
	CHECK_RC(build(d1, 41), 0);
	CHECK_RC(lopen(d1, 40, &x1), 0);
	CHECK_RC(lopen(d1, 41, &y1), 0);
	CHECK_RC(lopen(v, 41, &yv), 0);
	inc1 = daxfs_host_incarnation(d1);
	crash(d1, x1, y1);		/* daxfsd crashes; its holds stay */
	/* The restarted daemon reaps its previous incarnation: the bits of
	 * both classes survive. */
	CHECK_RC(host(1, DAXFS_PROC_DAEMON, LEASE, LEASE, &d2), 0);
	CHECK(daxfs_host_incarnation(d2) != inc1);
	CHECK(lstate(d2, 40, &li) == DFS_L_READY && li.holders == 1ULL << daxfs_host_slot(d2));
	CHECK(lstate(d2, 41, &li) == DFS_L_READY && li.holders == 1ULL << daxfs_host_slot(d2));
	CHECK_RC(daxfs_host_rejoin(v), 1);
	/* Its records justify layer 40 only. */
	CHECK_RC(lopen(d2, 40, &x2), 0);
	CHECK_RC(daxfs_holds_sync(d2), 1);
	CHECK_RC(daxfs_holds_sync(v), 0);
	CHECK_RC(gc_all(d2, &r), 0);
	CHECK(r.evicted == 0 && r.held == 2);
	/* 41 was held by the view alone: once it lets go, it goes. */
	daxfs_layer_close(yv);
	CHECK_RC(gc_all(d2, &r), 0);
	CHECK(r.evicted == 1 && lstate(d2, 41, NULL) == DFS_L_ABSENT &&
	      lstate(d2, 40, NULL) == DFS_L_READY);
	daxfs_layer_close(x2);
	CHECK_RC(fsck_live(d2), 0);
	daxfs_close(v);
	daxfs_close(d2);
	unlink(path);
}

/* A host with a daemon lives by its daemons' heartbeats; without one (it
 * stopped cleanly), by its view's. */
static enum daxfs_liveness liveness(struct daxfs *obs, int id)
{
	struct daxfs_host_info info[DFS_MAX_HOSTS];
	int n = daxfs_hosts_observe(obs, info, DFS_MAX_HOSTS);

	for (int i = 0; i < n && i < (int)DFS_MAX_HOSTS; i++)
		if (info[i].uuid[0] == 0xda && info[i].uuid[15] == id)
			return info[i].liveness;
	return DAXFS_HOST_UNUSED;
}

static int wait_liveness(struct daxfs *obs, int id, enum daxfs_liveness want)
{
	uint64_t end = tu_now_ms() + 5000;

	while (liveness(obs, id) != want) {
		if (tu_now_ms() > end)
			return -ETIMEDOUT;
		sleep_ms(5);
	}
	return 0;
}

TEST(liveness_follows_the_daemon)
{
	struct daxfs *d, *v, *obs;
	uint64_t end;

	CHECK_RC(mk("gc10"), 0);
	CHECK_RC(host(1, DAXFS_PROC_DAEMON, LEASE, LEASE, &d), 0);
	CHECK_RC(host(1, DAXFS_PROC_VIEW, LEASE, LEASE, &v), 0);
	CHECK_RC(host(2, DAXFS_PROC_DAEMON, LEASE, LEASE, &obs), 0);
	CHECK_RC(daxfs_heartbeat_start(v), 0);
	/* The daemon stalls while the view beats: dead all the same. */
	CHECK_RC(wait_liveness(obs, 1, DAXFS_HOST_DEAD), 0);
	/* It stops cleanly: the view alone keeps the host alive. */
	daxfs_close(d);
	CHECK_RC(wait_liveness(obs, 1, DAXFS_HOST_ALIVE), 0);
	for (end = tu_now_ms() + 4 * LEASE; tu_now_ms() < end; sleep_ms(5))
		CHECK(liveness(obs, 1) == DAXFS_HOST_ALIVE);
	daxfs_close(v);
	daxfs_close(obs);
	unlink(path);
}

struct reaper_arg {
	struct daxfs *fs;
	_Atomic int stop;
};

static void *reaper_main(void *p)
{
	struct reaper_arg *r = p;

	while (!atomic_load(&r->stop)) {
		daxfs_reap_dead(r->fs, NULL);
		sleep_ms(2);
	}
	return NULL;
}

/* daxfsd crashes while its view serves; a peer reaps it (its daemon's
 * heartbeat stalled) while the restarted daemon is attaching: the attach
 * waits for that reaping instead of taking it for a live daemon. */
TEST(restart_while_a_peer_reaps)
{
	struct reaper_arg ra = { 0 };
	struct daxfs *d, *v;
	pthread_t t;
	int rc = 0;

	CHECK_RC(mk("gc12"), 0);
	CHECK_RC(host(1, DAXFS_PROC_DAEMON, LEASE, LEASE, &d), 0);
	CHECK_RC(host(1, DAXFS_PROC_VIEW, LEASE, LEASE, &v), 0);
	CHECK_RC(host(2, DAXFS_PROC_DAEMON, LEASE, LEASE, &ra.fs), 0);
	CHECK_RC(daxfs_heartbeat_start(v), 0);
	CHECK_RC(daxfs_heartbeat_start(ra.fs), 0);
	CHECK_RC(pthread_create(&t, NULL, reaper_main, &ra), 0);
	for (int i = 0; i < 4 && rc == 0; i++) {
		daxfs_abandon(d);
		rc = host(1, DAXFS_PROC_DAEMON, LEASE, LEASE, &d);
		daxfs_host_rejoin(v);
	}
	atomic_store(&ra.stop, 1);
	pthread_join(t, NULL);
	CHECK_RC(rc, 0);
	CHECK(daxfs_host_rejoin(v) >= 0);
	daxfs_close(d);
	daxfs_close(v);
	daxfs_close(ra.fs);
	unlink(path);
}

TEST(at_most_28_hosts)
{
	CHECK_RC(mk("gc11"), 0);
	unlink(path);
	CHECK(tu_mkfs(path, REGION, DFS_MAX_HOSTS + 1) < 0);
	CHECK_RC(tu_mkfs(path, REGION, 28), 0);
	unlink(path);
}

/* ---- stale holder bits ---- */

TEST(dead_host_holds_go_after_grace)
{
	const uint32_t grace = 80;
	struct daxfs *a, *b;
	struct daxfs_layer *l;
	struct daxfs_layer_info li;
	struct daxfs_gc_result r;
	uint64_t died, end;
	int slot_a;

	CHECK_RC(mk("gc6"), 0);
	CHECK_RC(host(2, DAXFS_PROC_DAEMON, LEASE, grace, &b), 0);
	CHECK_RC(host(1, DAXFS_PROC_DAEMON, LEASE, LEASE, &a), 0);
	slot_a = daxfs_host_slot(a);
	CHECK_RC(build(a, 50), 0);
	CHECK_RC(lopen(a, 50, &l), 0);
	died = tu_now_ms();
	crash(a, l, NULL);
	CHECK_RC(reap_until_gone(b, 1), 0);
	/* Reaped, and its bit is still there. */
	CHECK(lstate(b, 50, &li) == DFS_L_READY && li.holders == 1ULL << slot_a);
	end = tu_now_ms() + 5000;
	for (;;) {
		CHECK_RC(gc_all(b, &r), 0);
		if (r.stale_cleared)
			break;
		CHECK(r.evicted == 0 && lstate(b, 50, NULL) == DFS_L_READY);
		CHECK(tu_now_ms() < end);
		sleep_ms(5);
	}
	/* Never before every heartbeat stood still for lease + grace. */
	CHECK(tu_now_ms() - died >= LEASE + grace);
	CHECK(r.stale_cleared == 1 && r.evicted == 1 && lstate(b, 50, NULL) == DFS_L_ABSENT);
	CHECK_RC(gc_all(b, &r), 0);
	CHECK(r.stale_cleared == 0);
	CHECK_RC(fsck_live(b), 0);
	daxfs_close(b);
	unlink(path);
}

struct attach_arg {
	struct daxfs *fs;
	int rc;
	_Atomic int done;
};

static void *attach_main(void *p)
{
	struct attach_arg *a = p;

	a->rc = host(1, DAXFS_PROC_DAEMON, LEASE, LEASE, &a->fs);
	atomic_store(&a->done, 1);
	return NULL;
}

TEST(reattach_while_clearing)
{
	struct daxfs *a, *b;
	struct daxfs_layer *l;
	struct daxfs_layer_info li;
	struct daxfs_gc_result r;
	struct daxfs_layer *l2;
	struct attach_arg at = { 0 };
	pthread_t t;
	_Atomic uint64_t *ow;
	uint64_t w, mine;
	int slot_a;

	CHECK_RC(mk("gc7"), 0);
	CHECK_RC(host(2, DAXFS_PROC_DAEMON, LEASE, LEASE, &b), 0);
	CHECK_RC(host(1, DAXFS_PROC_DAEMON, LEASE, LEASE, &a), 0);
	slot_a = daxfs_host_slot(a);
	CHECK_RC(build(a, 60), 0);
	CHECK_RC(build(a, 61), 0);
	CHECK_RC(lopen(a, 60, &l), 0);
	CHECK_RC(lopen(a, 61, &l2), 0);
	crash(a, l, l2);
	CHECK_RC(reap_until_gone(b, 1), 0);
	/* b starts clearing slot a's stale bits, as holds_clear_stale does. */
	ow = &b->hosts[slot_a].owner;
	w = atomic_load(ow);
	CHECK(DFS_OWNER_STATE(w) == DFS_HOST_RETIRED);
	mine = DFS_OWNER(DFS_OWNER_INC(w), DFS_HOST_CLEARING, daxfs_host_slot(b) + 1);
	CHECK(atomic_compare_exchange_strong(ow, &w, mine));
	CHECK_RC(daxfs_heartbeat_start(b), 0);
	CHECK_RC(pthread_create(&t, NULL, attach_main, &at), 0);
	/* Host 1 restarts: its attach waits while the clearer beats. */
	sleep_ms(6 * LEASE);
	if (atomic_load(&at.done)) {
		daxfs_heartbeat_stop(b);
		pthread_join(t, NULL);
		CHECK(!"attach went ahead of a live clearer");
	}
	/* The clearer stalls: the attach hands the slot back and goes on. */
	daxfs_heartbeat_stop(b);
	pthread_join(t, NULL);
	CHECK_RC(at.rc, 0);
	CHECK(daxfs_host_slot(at.fs) == slot_a);
	CHECK_RC(daxfs_holds_sync(at.fs), 2);
	CHECK_RC(lopen(at.fs, 60, &l), 0);
	/* The stalled clearer wakes up: it must not clear the new bit. */
	CHECK_RC(holds_clear_slot(b, slot_a, ow, mine), -ESTALE);
	CHECK(!atomic_compare_exchange_strong(ow, &mine, DFS_OWNER(DFS_OWNER_INC(mine),
			DFS_HOST_RETIRED, 0) | DFS_OWNER_HOLDS_CLEARED));
	CHECK(lstate(b, 60, &li) == DFS_L_READY && li.holders == 1ULL << slot_a);
	CHECK_RC(gc_all(b, &r), 0);
	CHECK(r.stale_cleared == 0 && r.evicted == 1 && lstate(b, 60, NULL) == DFS_L_READY);
	daxfs_layer_close(l);
	CHECK_RC(fsck_live(b), 0);
	daxfs_close(at.fs);
	daxfs_close(b);
	unlink(path);
}

TEST(full_error_names_holders)
{
	static const unsigned k70[] = { 70 };
	struct daxfs *h1, *h2;
	struct daxfs_layer *l1, *l2;
	struct daxfs_gc_result r;
	struct daxfs_gc_opts o = { .want_data = UINT64_MAX };
	struct daxfs_err err = { 0 };

	CHECK_RC(mk("gc8"), 0);
	CHECK_RC(host(1, DAXFS_PROC_DAEMON, 1000, 1000, &h1), 0);
	CHECK_RC(host(2, DAXFS_PROC_DAEMON, 1000, 1000, &h2), 0);
	CHECK_RC(build(h1, 70), 0);
	CHECK_RC(build(h1, 71), 0);
	CHECK_RC(build(h1, 72), 0);
	CHECK_RC(image(h1, "reg/pin:1", k70, 1), 0);
	CHECK_RC(daxfs_image_pin(h1, "reg/pin:1", 1, &err), 0);
	CHECK_RC(lopen(h1, 71, &l1), 0);
	CHECK_RC(lopen(h2, 72, &l2), 0);
	CHECK_RC(daxfs_gc(h1, &o, &r, &err), 0);
	CHECK(r.evicted == 0 && r.held == 2 && r.pinned == 1);
	CHECK(r.held_hosts == ((1ULL << daxfs_host_slot(h1)) | (1ULL << daxfs_host_slot(h2))));
	CHECK(r.data_free < o.want_data);
	CHECK_RC(daxfs_gc_full_error(h1, &r, &err), -ENOSPC);
	fprintf(stderr, "full: %s\n", err.msg);
	CHECK(strstr(err.msg, "region full") && strstr(err.msg, "2 layers held"));
	CHECK(strstr(err.msg, "test-host-1") && strstr(err.msg, "test-host-2"));
	CHECK(strstr(err.msg, "1 pinned"));
	daxfs_layer_close(l1);
	daxfs_layer_close(l2);
	daxfs_close(h2);
	daxfs_close(h1);
	unlink(path);
}

/* ---- two hosts sweeping at once ---- */

#define NRACE 12

struct race_sh {
	struct tu_barrier bar;
	_Atomic int evicted[NRACE];
	_Atomic int bad;
};

static void race_report(const struct daxfs_layer_info *li, void *arg)
{
	struct race_sh *sh = arg;
	uint8_t id[32];

	for (unsigned k = 0; k < NRACE; k++) {
		layer_id(id, 100 + k);
		if (!memcmp(id, li->diff_id, 32)) {
			atomic_fetch_add(&sh->evicted[k], 1);
			return;
		}
	}
	atomic_fetch_add(&sh->bad, 1);
}

static int race_sweep(struct daxfs *fs, struct race_sh *sh)
{
	struct daxfs_gc_opts o = { .all = 1, .report = race_report, .arg = sh };
	struct daxfs_gc_result r;
	struct daxfs_err err = { 0 };
	int rc;

	if (tu_barrier_wait(&sh->bar, 10000) < 0)
		return -1;
	rc = daxfs_gc(fs, &o, &r, &err);
	if (rc < 0)
		fprintf(stderr, "gc: %s\n", err.msg);
	return rc;
}

static int race_check(struct daxfs *fs, struct race_sh *sh)
{
	int ok = 1;

	for (unsigned k = 0; k < NRACE; k++) {
		if (atomic_load(&sh->evicted[k]) != 1 || lstate(fs, 100 + k, NULL) != DFS_L_ABSENT) {
			fprintf(stderr, "layer %u: evicted %d times, state %d\n", k,
				atomic_load(&sh->evicted[k]), lstate(fs, 100 + k, NULL));
			ok = 0;
		}
	}
	return ok && !atomic_load(&sh->bad) && fsck_live(fs) == 0;
}

TEST(two_processes_sweep)
{
	struct race_sh *sh = tu_shared_alloc(sizeof(*sh));
	struct daxfs *fs;
	pid_t pid[2];
	int st, ok = 1;

	CHECK(sh);
	tu_barrier_init(&sh->bar, 2);
	CHECK_RC(mk("gc9"), 0);
	CHECK_RC(host(1, DAXFS_PROC_DAEMON, 1000, 1000, &fs), 0);
	for (unsigned k = 0; k < NRACE; k++)
		CHECK_RC(build(fs, 100 + k), 0);
	fflush(stdout);
	fflush(stderr);
	for (int i = 0; i < 2; i++) {
		pid[i] = fork();
		if (pid[i] == 0) {
			struct daxfs *c;
			int rc = host(2 + i, DAXFS_PROC_DAEMON, 1000, 1000, &c);

			if (rc < 0) {
				tu_barrier_abort(&sh->bar);
				_exit(1);
			}
			rc = race_sweep(c, sh);
			daxfs_close(c);
			_exit(rc < 0 ? 1 : 0);
		}
	}
	for (int i = 0; i < 2; i++) {
		if (pid[i] < 0 || waitpid(pid[i], &st, 0) < 0 || !WIFEXITED(st) ||
		    WEXITSTATUS(st))
			ok = 0;
	}
	CHECK(ok);
	CHECK(race_check(fs, sh));
	daxfs_close(fs);
	munmap(sh, sizeof(*sh));
	unlink(path);
}

/* ---- killed at every new failpoint site ----
 *
 * The child (host 3) pins image reg/k200, makes layers 201..204 recently
 * used, runs one clock pass that one eviction satisfies (second chances,
 * then that eviction), then a pass with --all that, after its first
 * eviction, pins the images of the layers still READY, so that the
 * evictions that follow are rolled back; then it waits out lease + grace
 * and clears the stale holds of host 4, which died holding layer 205. */
#define KBASE 200
#define KN 5

static void kmark(const char *what)
{
	printf("mark %s %llu\n", what, (unsigned long long)daxfs_failpoint_count());
	fflush(stdout);
}

static void kill_report(const struct daxfs_layer_info *li, void *arg)
{
	struct daxfs *fs = arg;
	static int first = 1;
	char ref[32];

	(void)li;
	if (!first)
		return;
	first = 0;
	kmark("pins");
	for (unsigned k = KBASE + 1; k < KBASE + KN; k++) {
		if (lstate(fs, k, NULL) != DFS_L_READY)
			continue;
		snprintf(ref, sizeof(ref), "reg/k%u", k);
		daxfs_image_pin(fs, ref, 1, NULL);
	}
	kmark("rollbacks");
}

static int kill_child(int argc, char **argv)
{
	struct daxfs_gc_opts o = { 0 };
	struct daxfs_gc_result r;
	struct daxfs_usage u;
	struct daxfs_host_info info[DFS_MAX_HOSTS];
	struct daxfs_err err = { 0 };
	struct daxfs_layer *l;
	struct daxfs *fs;

	if (argc < 3 || strcmp(argv[1], "kill-child"))
		return 2;
	snprintf(path, sizeof(path), "%s", argv[2]);
	if (host(3, DAXFS_PROC_DAEMON, LEASE, LEASE, &fs) < 0 ||
	    daxfs_heartbeat_start(fs) < 0)
		return 3;
	daxfs_hosts_observe(fs, info, DFS_MAX_HOSTS);	/* the stale watch starts */
	kmark("pin");
	if (daxfs_image_pin(fs, "reg/k200", 1, &err) < 0)
		return 4;
	for (unsigned k = KBASE + 1; k < KBASE + KN; k++) {
		if (lopen(fs, k, &l) < 0)
			return 5;
		daxfs_layer_close(l);
	}
	/* Wants one eviction meets: second chances, then one eviction. */
	kmark("clock");
	if (daxfs_usage(fs, &u) < 0)
		return 6;
	o.want_data = u.data_total - u.data_used + 1;
	if (daxfs_gc(fs, &o, &r, &err) < 0 || r.evicted != 1)
		return 6;
	/* --all: the first eviction pins the others, which roll back. */
	kmark("all");
	o.all = 1;
	o.report = kill_report;
	o.arg = fs;
	if (daxfs_gc(fs, &o, &r, &err) < 0 || r.evicted != 1)
		return 6;
	sleep_ms(2 * LEASE + 20);
	kmark("stale");
	memset(&o, 0, sizeof(o));
	if (daxfs_gc(fs, &o, &r, &err) < 0 || r.stale_cleared != 1)
		return 7;
	kmark("end");
	daxfs_close(fs);
	return 0;
}

/* The region before each run: layers 200..205, an image per layer, host 4
 * dead and reaped while holding 205.  Leaves host 1 attached in *fs. */
static int kill_setup(struct daxfs **fs)
{
	struct daxfs *dead;
	struct daxfs_layer *l;
	char ref[32];
	int rc = mk("gck");

	if (rc == 0)
		rc = host(1, DAXFS_PROC_DAEMON, LEASE, LEASE, fs);
	if (rc < 0)
		return rc;
	for (unsigned k = KBASE; k <= KBASE + KN && rc == 0; k++) {
		snprintf(ref, sizeof(ref), "reg/k%u", k);
		rc = build(*fs, k);
		if (rc == 0)
			rc = image(*fs, ref, &k, 1);
	}
	if (rc == 0)
		rc = host(4, DAXFS_PROC_DAEMON, LEASE, LEASE, &dead);
	if (rc == 0 && (rc = lopen(dead, KBASE + KN, &l)) == 0) {
		crash(dead, l, NULL);
		rc = reap_until_gone(*fs, 4);
	}
	return rc;
}

/* Run the child with DAXFS_FAILPOINT=fp (0: none); its output in out. */
static int kill_run(uint64_t fp, char *out, size_t n)
{
	char fps[32];
	int pfd[2], st;
	size_t len = 0;
	pid_t pid;

	snprintf(fps, sizeof(fps), "%llu", (unsigned long long)fp);
	if (pipe(pfd) < 0)
		return -errno;
	fflush(stdout);
	fflush(stderr);
	pid = fork();
	if (pid == 0) {
		char *av[] = { "/proc/self/exe", "kill-child", path, NULL };

		dup2(pfd[1], 1);
		close(pfd[0]);
		if (fp)
			setenv("DAXFS_FAILPOINT", fps, 1);
		else
			unsetenv("DAXFS_FAILPOINT");
		execv(av[0], av);
		_exit(127);
	}
	close(pfd[1]);
	for (;;) {
		ssize_t r = read(pfd[0], out + len, n - 1 - len);

		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		len += (size_t)r;
	}
	out[len] = 0;
	close(pfd[0]);
	if (pid < 0 || waitpid(pid, &st, 0) < 0)
		return -ECHILD;
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static uint64_t mark_of(const char *out, const char *what)
{
	char pat[32];
	const char *p;

	snprintf(pat, sizeof(pat), "mark %s ", what);
	p = strstr(out, pat);
	return p ? strtoull(p + strlen(pat), NULL, 10) : 0;
}

/* After the run: reap the child, then fsck (live, then offline) and
 * check that every pinned image's layer is READY. */
static int kill_verify(struct daxfs *fs, uint64_t fp)
{
	struct daxfs_open_opts oo = { .path = path };
	struct daxfs_image_info im;
	struct daxfs_err err = { 0 };
	struct daxfs *off;
	char ref[32];
	int rc;

	if (reap_until_gone(fs, 3) < 0)
		return fprintf(stderr, "site %llu: child never reaped\n",
			       (unsigned long long)fp), -1;
	if (fsck_live(fs) != 0)
		return fprintf(stderr, "site %llu: live fsck\n", (unsigned long long)fp), -1;
	for (unsigned k = KBASE; k < KBASE + KN; k++) {
		snprintf(ref, sizeof(ref), "reg/k%u", k);
		if (daxfs_image_get(fs, ref, &im) == 0 &&
		    (im.flags & DAXFS_IMAGE_PINNED) && lstate(fs, k, NULL) != DFS_L_READY)
			return fprintf(stderr, "site %llu: %s pinned, layer state %d\n",
				       (unsigned long long)fp, ref, lstate(fs, k, NULL)), -1;
	}
	daxfs_close(fs);
	rc = daxfs_open(&oo, &off, &err);
	if (rc < 0)
		return rc;
	rc = daxfs_fsck(off, 0, tu_fsck_line, NULL);
	daxfs_close(off);
	if (rc != 0)
		fprintf(stderr, "site %llu: offline fsck: %d\n", (unsigned long long)fp, rc);
	return rc ? -1 : 0;
}

TEST(kill_at_every_site)
{
	static const char *marks[] = { "pin", "clock", "all", "pins", "rollbacks", "stale" };
	const char *lg = getenv("DAXFS_TEST_LONG");
	bool all = lg && *lg && strcmp(lg, "0");
	uint64_t sites[16], first, last;
	size_t nsites = 0;
	char *out = malloc(8192);
	struct daxfs *fs;
	int rc;

	CHECK(out);
	CHECK_RC(kill_setup(&fs), 0);
	rc = kill_run(0, out, 8192);
	if (rc != 0)
		fprintf(stderr, "child: exit %d\n%s", rc, out);
	CHECK_RC(rc, 0);
	first = mark_of(out, "pin");
	last = mark_of(out, "end");
	CHECK(strstr(out, "mark pin ") && last > first);
	CHECK(mark_of(out, "rollbacks") > mark_of(out, "pins"));
	CHECK_RC(kill_verify(fs, 0), 0);
	/* Quick: the first sites after each mark (pin, second chance, pins
	 * inside the pass, rollbacks, stale clearing); long: every site. */
	for (size_t m = 0; m < sizeof(marks) / sizeof(marks[0]); m++) {
		uint64_t at = mark_of(out, marks[m]);

		sites[nsites++] = at + 1;
		sites[nsites++] = at + 2;
	}
	for (uint64_t i = 0, n = all ? last - first : nsites; i < n; i++) {
		uint64_t site = all ? first + 1 + i : sites[i];

		CHECK_RC(kill_setup(&fs), 0);
		rc = kill_run(site, out, 8192);
		CHECK(rc == 99 || rc == 0);
		CHECK_RC(kill_verify(fs, site), 0);
	}
	fprintf(stderr, "killed at %llu of %llu sites\n",
		(unsigned long long)(all ? last - first : nsites),
		(unsigned long long)(last - first));
	free(out);
	unlink(path);
}


CHECK_MAIN_BEGIN(GC_PROG)
	if (argc > 1)
		return kill_child(argc, argv);
	RUN(evicts_unheld_only);
	RUN(second_chance);
	RUN(pins);
	RUN(daemon_and_view_classes);
	RUN(restart_keeps_holds_and_syncs);
	RUN(liveness_follows_the_daemon);
	RUN(restart_while_a_peer_reaps);
	RUN(at_most_28_hosts);
	RUN(dead_host_holds_go_after_grace);
	RUN(reattach_while_clearing);
	RUN(full_error_names_holders);
	RUN(two_processes_sweep);
	RUN(kill_at_every_site);
CHECK_MAIN_END
