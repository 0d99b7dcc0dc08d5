/* The allocator between hosts: space others freed in a live, idle host's
 * chunks comes back to everyone (context put down, daxfs_alloc_trim, an
 * allocation waiting for the owner's trim), and ORPHAN chunks of reaped
 * incarnations are adopted after the lease + grace watch instead of the
 * area being reported full.
 *
 * Each host is its own attach of one region file, as separate processes
 * would be.  Host B fills the data area with layers of one 1 MiB file
 * each; another host evicts them, so B's chunks hold no live unit. */
#include <errno.h>
#include <pthread.h>
#include <time.h>

#include "check.h"
#include "testutil.h"

#define REGION (32ULL << 20)
#define LEASE 100u
#define GRACE 100u
#define FILE_BYTES (1u << 20)

static char path[256];

static void sleep_ms(unsigned ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

static int mk(void)
{
	tu_region_path(path, sizeof(path), "alloc");
	unlink(path);
	return tu_mkfs(path, REGION, 4);
}

static int host(int id, struct daxfs **fs)
{
	struct daxfs_open_opts o = { .path = path, .lease_ms = LEASE, .grace_ms = GRACE };
	struct daxfs_err err = { 0 };

	return tu_attach_opened(daxfs_open(&o, fs, &err), fs, id, &err);
}

static void layer_id(uint8_t id[32], unsigned key)
{
	tu_digest(id, 0xa110c, key);
}

/* A layer of one file of `bytes` whose data is its own (key seeds it). */
static int build(struct daxfs *fs, unsigned key, uint64_t bytes)
{
	struct daxfs_layer_builder *b = NULL;
	struct daxfs_err err = { 0 };
	uint8_t id[32];
	char p[32];
	struct tu_ent e = { p, TU_REG, bytes, 7000 + key, NULL, NULL, NULL };
	int rc;

	snprintf(p, sizeof(p), "f%u", key);
	layer_id(id, key);
	rc = daxfs_layer_build(fs, id, &b, &err);
	if (rc == 0)
		rc = tu_add_ent(b, &e, UINT64_MAX, &err);
	if (rc == 0)
		rc = daxfs_builder_publish(b, NULL, &err);
	if (rc < 0) {
		if (rc != -ENOSPC)
			fprintf(stderr, "build %u: %s\n", key, err.msg);
		daxfs_builder_abort(b);
	}
	return rc;
}

/* Build layers key0, key0+1, ... until the area is full; how many. */
static int fill(struct daxfs *fs, unsigned key0)
{
	int n = 0, rc;

	while ((rc = build(fs, key0 + (unsigned)n, FILE_BYTES)) == 0)
		n++;
	return rc == -ENOSPC ? n : rc;
}

static int gc_all(struct daxfs *fs)
{
	struct daxfs_gc_opts o = { .all = 1 };
	struct daxfs_gc_result r;
	struct daxfs_err err = { 0 };
	int rc = daxfs_gc(fs, &o, &r, &err);

	if (rc < 0)
		fprintf(stderr, "gc: %s\n", err.msg);
	return rc < 0 ? rc : (int)r.evicted;
}

static int fsck_live(struct daxfs *fs)
{
	tu_fsck_count = 0;
	return daxfs_fsck(fs, 1, tu_fsck_line, NULL);
}

/* B fills the data area, C evicts all of it: B's chunks are empty but
 * still B's.  Returns how many layers B built. */
static int fill_and_evict(struct daxfs *b, struct daxfs *c)
{
	int n = fill(b, 1), ev;

	if (n <= 2) {
		fprintf(stderr, "fill built %d layers\n", n);
		return -1;
	}
	ev = gc_all(c);
	if (ev != n) {
		fprintf(stderr, "evicted %d of %d layers\n", ev, n);
		return -1;
	}
	return n;
}

/* The idle owner's daxfs_alloc_trim (its daemon's reaper loop) gives
 * the chunks back; C then allocates in them. */
TEST(trim_gives_back_idle_chunks)
{
	struct daxfs *b, *c;
	int n, released;

	CHECK_RC(mk(), 0);
	CHECK_RC(host(2, &b), 0);
	CHECK_RC(host(3, &c), 0);
	CHECK((n = fill_and_evict(b, c)) > 0);
	released = daxfs_alloc_trim(b);
	printf("info: %d layers, %d chunks given back\n", n, released);
	CHECK(released >= 2);
	/* Nothing more to give back. */
	CHECK_RC(daxfs_alloc_trim(b), 0);
	CHECK_RC(build(c, 100, FILE_BYTES), 0);
	CHECK_RC(build(c, 101, FILE_BYTES), 0);
	/* B still writes, in the chunk it kept and what is left. */
	CHECK_RC(build(b, 200, FILE_BYTES), 0);
	CHECK_RC(fsck_live(c), 0);
	daxfs_close(c);
	daxfs_close(b);
	unlink(path);
}

/* Putting a writer context down gives its empty chunks back, all but the
 * one the next allocation starts in. */
TEST(ctx_release_gives_back)
{
	struct daxfs *b, *c;

	CHECK_RC(mk(), 0);
	CHECK_RC(host(2, &b), 0);
	CHECK_RC(host(3, &c), 0);
	CHECK(fill_and_evict(b, c) > 0);
	/* A small write of B's: its context goes down after it. */
	CHECK_RC(build(b, 300, 4096), 0);
	CHECK_RC(build(c, 100, FILE_BYTES), 0);
	CHECK_RC(build(c, 101, FILE_BYTES), 0);
	CHECK_RC(fsck_live(c), 0);
	daxfs_close(c);
	daxfs_close(b);
	unlink(path);
}

struct trimmer {
	struct daxfs *fs;
	_Atomic int stop;
	_Atomic int released;
};

/* What daxfsd's reaper loop does, starting half a lease late. */
static void *trimmer_main(void *arg)
{
	struct trimmer *t = arg;

	sleep_ms(LEASE / 2);
	while (!atomic_load(&t->stop)) {
		atomic_fetch_add(&t->released, daxfs_alloc_trim(t->fs));
		sleep_ms(LEASE / 4);
	}
	return NULL;
}

/* C's allocation finds no chunk but sees empty ones B owns: it waits for
 * B to trim instead of failing at once. */
TEST(allocation_waits_for_owner_trim)
{
	struct daxfs *b, *c;
	struct trimmer t = { 0 };
	pthread_t th;
	int rc;

	CHECK_RC(mk(), 0);
	CHECK_RC(host(2, &b), 0);
	CHECK_RC(host(3, &c), 0);
	CHECK(fill_and_evict(b, c) > 0);
	t.fs = b;
	CHECK_RC(pthread_create(&th, NULL, trimmer_main, &t), 0);
	rc = build(c, 100, FILE_BYTES);
	atomic_store(&t.stop, 1);
	pthread_join(th, NULL);
	CHECK_RC(rc, 0);
	CHECK(atomic_load(&t.released) >= 1);
	CHECK_RC(fsck_live(c), 0);
	daxfs_close(c);
	daxfs_close(b);
	unlink(path);
}

/* Reap host id (abandoned) from obs; 0 once it is reaped. */
static int reap(struct daxfs *obs)
{
	struct daxfs_err err = { 0 };
	uint64_t end = tu_now_ms() + 20 * LEASE;

	while (tu_now_ms() < end) {
		int n = daxfs_reap_dead(obs, &err);

		if (n < 0) {
			fprintf(stderr, "reap: %s\n", err.msg);
			return n;
		}
		if (n > 0)
			return 0;
		sleep_ms(LEASE / 4);
	}
	return -ETIMEDOUT;
}

/* Only ORPHAN chunks are left, and a freshly attached host has not
 * watched them yet: its allocation waits lease + grace, then adopts them
 * (never sooner: the reaped host may only have been paused). */
TEST(orphans_adopted_after_watch)
{
	struct daxfs *b, *c, *d;
	uint64_t t0, waited;

	CHECK_RC(mk(), 0);
	CHECK_RC(host(2, &b), 0);
	CHECK(fill(b, 1) > 2);
	daxfs_abandon(b);		/* killed */
	CHECK_RC(host(3, &c), 0);
	CHECK_RC(reap(c), 0);
	CHECK(gc_all(c) > 2);
	daxfs_close(c);
	CHECK_RC(host(4, &d), 0);
	t0 = tu_now_ms();
	CHECK_RC(build(d, 100, FILE_BYTES), 0);
	waited = tu_now_ms() - t0;
	printf("info: adopted orphan chunks after %llu ms (lease %u + grace %u)\n",
	       (unsigned long long)waited, LEASE, GRACE);
	CHECK(waited >= LEASE + GRACE);
	/* Adopted now: no more waiting for those. */
	CHECK_RC(build(d, 101, FILE_BYTES), 0);
	CHECK_RC(fsck_live(d), 0);
	daxfs_close(d);
	unlink(path);
}

/* A restarted daemon reaps its own killed incarnation: those chunks get
 * the same watch (an old process of it could be paused), and then serve
 * the new incarnation. */
TEST(own_orphans_after_restart)
{
	struct daxfs *b, *b2;
	uint64_t t0, waited;

	CHECK_RC(mk(), 0);
	CHECK_RC(host(2, &b), 0);
	CHECK(fill(b, 1) > 2);
	daxfs_abandon(b);		/* killed */
	t0 = tu_now_ms();
	CHECK_RC(host(2, &b2), 0);	/* reaps incarnation 1 itself */
	CHECK(daxfs_host_incarnation(b2) == 2);
	CHECK(gc_all(b2) > 2);
	CHECK_RC(build(b2, 100, FILE_BYTES), 0);
	waited = tu_now_ms() - t0;
	printf("info: own orphan chunks adopted %llu ms after the restart began\n",
	       (unsigned long long)waited);
	CHECK(waited >= LEASE + GRACE);
	CHECK_RC(fsck_live(b2), 0);
	daxfs_close(b2);
	unlink(path);
}

/* The area is really full (live units everywhere): ENOSPC, no waiting
 * for chunks that cannot come. */
TEST(full_is_still_full)
{
	struct daxfs *b, *c;

	CHECK_RC(mk(), 0);
	CHECK_RC(host(2, &b), 0);
	CHECK_RC(host(3, &c), 0);
	CHECK(fill(b, 1) > 2);
	CHECK_RC(build(c, 100, FILE_BYTES), -ENOSPC);
	CHECK_RC(daxfs_alloc_trim(b), 0);
	CHECK_RC(fsck_live(c), 0);
	daxfs_close(c);
	daxfs_close(b);
	unlink(path);
}

CHECK_MAIN_BEGIN("test_alloc")
{
	RUN(trim_gives_back_idle_chunks);
	RUN(ctx_release_gives_back);
	RUN(allocation_waits_for_owner_trim);
	RUN(orphans_adopted_after_watch);
	RUN(own_orphans_after_restart);
	RUN(full_is_still_full);
}
CHECK_MAIN_END
