/* Layer eviction: daxfs_gc over a region full of unheld layers vs rm -rf
 * of the same trees on tmpfs, and the cost of a clock pass that can free
 * nothing.
 *
 * Two workloads of deterministic, seeded layers: "small" (many layers of
 * hundreds of small files in nested directories; one file in SHARED_EVERY
 * has the same content in every layer, the rest is distinct) and "large"
 * (a few layers of a few large, distinct files).  Each run builds the
 * layers untimed, then times only the removal:
 *  - region: the layers are built into a fresh region by a host that then
 *    detaches; P processes (1 or 2), each attached as its own daemon host
 *    with the region mapped in, call daxfs_gc with all = 1 at the same
 *    time (the shared clock hand gives them disjoint ranges);
 *  - tmpfs: the same trees are written as files on tmpfs, one directory
 *    per layer (what containerd's overlayfs snapshotter keeps per
 *    snapshot); P processes remove their share of the layer directories
 *    with nftw + unlink/rmdir (what its Remove does with os.RemoveAll).
 * Throughput counts the layers' own bytes and files on both sides.
 *
 * The clock pass: in the small region, before its eviction, the filling
 * host holds most layers open and pins the rest through an image record,
 * then runs daxfs_gc with a want the region cannot meet (a daemon short of
 * space), so each pass walks its two revolutions over the hash and evicts
 * nothing.  The same pass with all = 1 (no want checks) and one count of
 * the data area's used units (what a want check does) are timed as well,
 * to show where the time of a pass goes.
 *
 *   bench_gc [-d DIR] [-r REPS] [-l SMALL_LAYERS] [-n FILES_PER_LAYER]
 *            [-L LARGE_LAYERS] [-c LARGE_FILES] [-m LARGE_MIB]
 *
 * DIR (default /dev/shm) should be on tmpfs. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "benchutil.h"
#include "alloc.h"
#include "daxfs.h"
#include "region.h"

#define MAX_REPS 15
#define PROCS_MAX 2
#define SMALL_MIN 512
#define SMALL_MAX (16 * 1024)
#define FILES_PER_DIR 50
#define SHARED_EVERY 16
#define SCAN_PASSES_WANT 5	/* passes with a want: slow, see count_cost */
#define SCAN_PASSES_MAX 9
#define GC_BATCH 16		/* hash slots the clock takes at once (gc.c) */
#define PIN_EVERY 8		/* one layer in 8 pinned, the others held */
#define PIN_REF "bench.local/pinned:latest"
#define MTIME 1700000000

enum kind { SMALL = 0, LARGE = 1, NKINDS };
enum impl { REGION = 0, TMPFS = 1, NIMPLS };
enum scan { SCAN_WANT = 0, SCAN_ALL = 1, SCAN_COUNT = 2, NSCAN };

static const char *const kind_name[NKINDS] = { "small", "large" };

struct workload {
	enum kind kind;
	unsigned nlayers;
	unsigned nfiles;	/* per layer */
	uint64_t large_size;	/* LARGE: bytes per file */
	uint64_t files;		/* regular files, all layers */
	uint64_t bytes;		/* their bytes, all layers */
	uint64_t distinct_bytes; /* bytes of distinct contents */
	uint64_t max_file;
	uint64_t hash_slots;	/* of its region, once one was made */
};

/* ---- the layers ---- */

static int is_shared(const struct workload *w, unsigned i)
{
	return w->kind == SMALL && i % SHARED_EVERY == 0;
}

static uint64_t file_size(const struct workload *w, unsigned layer, unsigned i)
{
	uint64_t s;

	if (w->kind == LARGE)
		return w->large_size;
	/* A shared file has one size (and content) in every layer. */
	s = is_shared(w, i) ? i : ((uint64_t)(layer + 1) << 32) | i;
	return SMALL_MIN + bench_rand(&s) % (SMALL_MAX - SMALL_MIN + 1);
}

static uint64_t file_seed(const struct workload *w, unsigned layer, unsigned i)
{
	uint64_t owner = is_shared(w, i) ? 0xffffff : layer + 1;

	return ((uint64_t)w->kind << 56) | (owner << 32) | i;
}

static void layer_id(const struct workload *w, unsigned layer, uint8_t id[32])
{
	bench_fill(id, 32, 0x1d000000ULL + ((uint64_t)w->kind << 24) + layer);
}

static void workload_totals(struct workload *w)
{
	w->files = (uint64_t)w->nlayers * w->nfiles;
	w->bytes = w->distinct_bytes = w->max_file = 0;
	for (unsigned l = 0; l < w->nlayers; l++)
		for (unsigned i = 0; i < w->nfiles; i++) {
			uint64_t sz = file_size(w, l, i);

			w->bytes += sz;
			if (!is_shared(w, i) || l == 0)
				w->distinct_bytes += sz;
			if (sz > w->max_file)
				w->max_file = sz;
		}
}

/* Where one layer's entries go: the region's builder or a tmpfs tree. */
struct sink {
	int (*dir)(void *ctx, const char *path);
	int (*file)(void *ctx, const char *path, const void *buf, size_t size);
	void *ctx;
};

/* Emit one layer's directories and files, parents first, as a tar lists
 * them.  buf holds w->max_file bytes. */
static int layer_emit(const struct workload *w, unsigned layer, uint8_t *buf,
		      const struct sink *s)
{
	const char *top = w->kind == SMALL ? "usr" : "opt";
	const char *mid = w->kind == SMALL ? "usr/lib" : "opt/blob";
	unsigned cur = UINT_MAX;
	char path[256];
	int rc;

	rc = s->dir(s->ctx, top);
	if (rc == 0)
		rc = s->dir(s->ctx, mid);
	for (unsigned i = 0; rc == 0 && i < w->nfiles; i++) {
		size_t size = (size_t)file_size(w, layer, i);

		bench_fill(buf, size, file_seed(w, layer, i));
		if (w->kind == LARGE) {
			snprintf(path, sizeof(path), "%s/large%u.bin", mid, i);
		} else {
			if (i / FILES_PER_DIR != cur) {
				cur = i / FILES_PER_DIR;
				snprintf(path, sizeof(path), "%s/pkg%03u", mid, cur);
				rc = s->dir(s->ctx, path);
				if (rc < 0)
					break;
			}
			snprintf(path, sizeof(path), "%s/pkg%03u/file%05u.dat", mid,
				 cur, i);
		}
		rc = s->file(s->ctx, path, buf, size);
	}
	return rc;
}

/* ---- building layers into a region ---- */

struct region_sink {
	struct daxfs_layer_builder *b;
	struct daxfs_err *err;
};

static int region_dir(void *ctx, const char *path)
{
	struct region_sink *r = ctx;
	struct daxfs_entry e = { .path = path, .mode = S_IFDIR | 0755,
				 .mtime_sec = MTIME };

	return daxfs_builder_add(r->b, &e, r->err);
}

static int region_file(void *ctx, const char *path, const void *buf,
		       size_t size)
{
	struct region_sink *r = ctx;
	struct daxfs_entry e = { .path = path, .mode = S_IFREG | 0644,
				 .mtime_sec = MTIME, .size = size };
	int rc = daxfs_builder_add(r->b, &e, r->err);

	return rc < 0 ? rc : daxfs_builder_write(r->b, buf, size, r->err);
}

static int region_fill(struct daxfs *fs, const struct workload *w, uint8_t *buf,
		       struct daxfs_err *err)
{
	struct region_sink rs = { .err = err };
	struct sink s = { region_dir, region_file, &rs };
	uint8_t id[32];
	int rc = 0;

	for (unsigned l = 0; rc == 0 && l < w->nlayers; l++) {
		layer_id(w, l, id);
		rc = daxfs_layer_build(fs, id, &rs.b, err);
		if (rc < 0)
			break;
		rc = layer_emit(w, l, buf, &s);
		if (rc == 0)
			rc = daxfs_builder_publish(rs.b, NULL, err);
		if (rc < 0)
			daxfs_builder_abort(rs.b);
		daxfs_heartbeat(fs);
	}
	return rc;
}

static uint64_t region_size(const struct workload *w)
{
	uint64_t need = w->bytes + w->files * 1024 + (uint64_t)w->nlayers * (2u << 20);

	need = need / 85 * 100 + (64ULL << 20);
	return (need + (2ULL << 20) - 1) & ~((2ULL << 20) - 1);
}

/* The builder journals every file of its layer until publish. */
static uint32_t journal_size(const struct workload *w)
{
	uint32_t n = 16384;

	while (n < 2ULL * w->nfiles + 1024)
		n <<= 1;
	return n;
}

static int attach(const char *path, int idx, const char *what,
		  struct daxfs **out)
{
	struct daxfs_open_opts oo = { .path = path };
	struct daxfs_host_opts ho = { .kind = DAXFS_PROC_DAEMON };
	struct daxfs_err err = { 0 };
	char name[32];
	int rc;

	ho.uuid[0] = 0xbe;
	ho.uuid[1] = 0x9c;
	ho.uuid[15] = (uint8_t)(idx + 1);
	snprintf(name, sizeof(name), "bench-%s-%d", what, idx);
	ho.name = name;
	rc = daxfs_open(&oo, out, &err);
	if (rc == 0) {
		rc = daxfs_host_attach(*out, &ho, &err);
		if (rc < 0) {
			daxfs_close(*out);
			*out = NULL;
		}
	}
	if (rc < 0)
		fprintf(stderr, "bench_gc: attach %s %d: %s\n", what, idx, err.msg);
	return rc;
}

/* ---- the clock pass that can free nothing ---- */

struct scan_result {
	double want_ns;		/* gc with a want it cannot meet */
	double all_ns;		/* gc with all = 1: the revolutions alone */
	double count_ns;	/* one count of the data area's used units */
	uint64_t held, pinned, hash_slots;
};

/* Pin the layers l % PIN_EVERY == PIN_EVERY - 1 through one image whose
 * chain names exactly them. */
static int pin_some(struct daxfs *fs, const struct workload *w,
		    uint64_t *npinned, struct daxfs_err *err)
{
	struct daxfs_chain_info c;
	struct daxfs_image_info im;
	uint64_t depth = 0;
	int rc = 0;

	memset(&c, 0, sizeof(c));
	for (unsigned l = PIN_EVERY - 1; rc == 0 && l < w->nlayers; l += PIN_EVERY) {
		if (depth)
			memcpy(c.parent, c.chain_id, 32);
		bench_fill(c.chain_id, 32, 0xc4a100000ULL + l);
		layer_id(w, l, c.diff_id);
		c.depth = ++depth;
		rc = daxfs_chain_put(fs, &c, err);
	}
	if (rc < 0 || !depth)
		return rc;
	memset(&im, 0, sizeof(im));
	snprintf(im.ref, sizeof(im.ref), "%s", PIN_REF);
	memcpy(im.top_chain, c.chain_id, 32);
	im.nlayers = depth;
	rc = daxfs_image_put(fs, &im, err);
	if (rc == 0)
		rc = daxfs_image_pin(fs, PIN_REF, 1, err);
	*npinned = depth;
	return rc;
}

/* n passes of daxfs_gc(o); each must evict nothing and see every layer
 * held or pinned.  *ns is the median pass. */
static int scan_passes(struct daxfs *fs, const struct daxfs_gc_opts *o,
		       const struct scan_result *want, int n, double *ns,
		       struct daxfs_err *err)
{
	double t[SCAN_PASSES_MAX];
	int rc = 0;

	for (int p = 0; rc == 0 && p < n; p++) {
		struct daxfs_gc_result r;
		int64_t t0 = bench_now_ns();

		rc = daxfs_gc(fs, o, &r, err);
		t[p] = (double)(bench_now_ns() - t0);
		if (rc == 0 && (r.evicted || r.held != want->held ||
				r.pinned != want->pinned))
			rc = daxfs_err_set(err, -EIO, "pass %d evicted %llu, saw %llu "
					   "held and %llu pinned; expected 0, %llu, %llu",
					   p, (unsigned long long)r.evicted,
					   (unsigned long long)r.held,
					   (unsigned long long)r.pinned,
					   (unsigned long long)want->held,
					   (unsigned long long)want->pinned);
	}
	if (rc == 0)
		*ns = bench_median(t, n);
	return rc;
}

/* What the want check of the clock costs: it counts the data area's used
 * units (daxfs_gc's wants_met; the metadata area only once the data want
 * is met) once per batch of the hand. */
static double count_cost(struct daxfs *fs)
{
	double t[SCAN_PASSES_MAX];
	uint64_t sink = 0;

	for (int p = 0; p < SCAN_PASSES_MAX; p++) {
		int64_t t0 = bench_now_ns();

		sink += alloc_used_bytes(fs, AREA_DATA);
		t[p] = (double)(bench_now_ns() - t0);
	}
	return sink ? bench_median(t, SCAN_PASSES_MAX) : 0;
}

static int scan_measure(struct daxfs *fs, const struct workload *w,
			struct scan_result *out)
{
	struct daxfs_layer **h = calloc(w->nlayers, sizeof(*h));
	struct daxfs_gc_opts want = { .want_data = fs->size, .want_meta = fs->size };
	struct daxfs_gc_opts all = { .all = 1 };
	struct daxfs_err err = { 0 };
	uint8_t id[32];
	int rc = 0;

	memset(out, 0, sizeof(*out));
	if (!h)
		return -ENOMEM;
	for (unsigned l = 0; rc == 0 && l < w->nlayers; l++) {
		if (l % PIN_EVERY == PIN_EVERY - 1)
			continue;
		layer_id(w, l, id);
		rc = daxfs_layer_open(fs, id, &h[l], &err);
		out->held += rc == 0;
	}
	if (rc == 0)
		rc = pin_some(fs, w, &out->pinned, &err);
	if (rc == 0)
		rc = scan_passes(fs, &want, out, SCAN_PASSES_WANT, &out->want_ns, &err);
	if (rc == 0)
		rc = scan_passes(fs, &all, out, SCAN_PASSES_MAX, &out->all_ns, &err);
	if (rc == 0) {
		out->count_ns = count_cost(fs);
		out->hash_slots = fs->sb.hash_slots;
		/* Leave the layers evictable again for the timed gc. */
		if (out->pinned)
			rc = daxfs_image_pin(fs, PIN_REF, 0, &err);
		if (rc == 0 && out->pinned)
			rc = daxfs_image_remove(fs, PIN_REF, &err);
	}
	for (unsigned l = 0; l < w->nlayers; l++)
		daxfs_layer_close(h[l]);
	free(h);
	if (rc < 0)
		fprintf(stderr, "bench_gc: clock pass: %s\n",
			err.msg[0] ? err.msg : strerror(-rc));
	return rc;
}

/* ---- the timed removals ---- */

struct proc_out {
	uint64_t evicted, data_freed;
	long files;
};

/* Forked processes get their own copy; out is shared with the parent. */
struct job_ctx {
	const struct workload *w;
	const char *region;
	const char *tree;	/* tmpfs: parent of the layer directories */
	int nproc;
	struct daxfs *fs;
	struct proc_out *out;	/* MAP_SHARED, one per process */
};

static int gc_setup(void *arg, int idx)
{
	struct job_ctx *c = arg;
	int rc = attach(c->region, idx + 1, "gc", &c->fs);

	/* A running daemon has had its region mapped for long: map in
	 * everything up to the data chunks (tables, metadata, bitmaps), the
	 * part an eviction reads and writes. */
	if (rc == 0)
		rc = bench_prefault(c->fs->base, c->fs->data.g.base);
	return rc;
}

static int gc_run(void *arg, int idx)
{
	struct job_ctx *c = arg;
	struct daxfs_gc_opts go = { .all = 1 };
	struct daxfs_gc_result r;
	struct daxfs_err err = { 0 };
	int rc = daxfs_gc(c->fs, &go, &r, &err);

	if (rc < 0) {
		fprintf(stderr, "bench_gc: gc in process %d: %s\n", idx, err.msg);
		return rc;
	}
	c->out[idx].evicted = r.evicted;
	c->out[idx].data_freed = r.data_freed;
	return 0;
}

static void gc_teardown(void *arg, int idx)
{
	struct job_ctx *c = arg;

	(void)idx;
	daxfs_close(c->fs);
	c->fs = NULL;
}

static int rm_run(void *arg, int idx)
{
	struct job_ctx *c = arg;
	char path[PATH_MAX];

	for (unsigned l = (unsigned)idx; l < c->w->nlayers; l += (unsigned)c->nproc) {
		long n;
		int rc = bench_path(path, sizeof(path), "%s/layer%04u", c->tree, l);

		if (rc < 0)
			return rc;
		n = bench_rm_tree(path);
		if (n < 0)
			return (int)n;
		c->out[idx].files += n;
	}
	return 0;
}

/* ---- writing the trees on tmpfs ---- */

struct tmpfs_sink {
	int dirfd;
};

static int tmpfs_dir(void *ctx, const char *path)
{
	struct tmpfs_sink *t = ctx;

	return mkdirat(t->dirfd, path, 0755) < 0 ? -errno : 0;
}

static int tmpfs_file(void *ctx, const char *path, const void *buf, size_t size)
{
	struct tmpfs_sink *t = ctx;
	int fd = openat(t->dirfd, path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
	int rc;

	if (fd < 0)
		return -errno;
	rc = bench_write_all(fd, buf, size);
	if (close(fd) < 0 && rc == 0)
		rc = -errno;
	return rc;
}

static int tmpfs_fill(const char *tree, const struct workload *w, uint8_t *buf)
{
	char path[PATH_MAX];
	int rc;

	if (mkdir(tree, 0755) < 0)
		return -errno;
	for (unsigned l = 0; l < w->nlayers; l++) {
		struct tmpfs_sink ts;
		struct sink s = { tmpfs_dir, tmpfs_file, &ts };

		rc = bench_path(path, sizeof(path), "%s/layer%04u", tree, l);
		if (rc < 0)
			return rc;
		if (mkdir(path, 0755) < 0)
			return -errno;
		ts.dirfd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (ts.dirfd < 0)
			return -errno;
		rc = layer_emit(w, l, buf, &s);
		close(ts.dirfd);
		if (rc < 0)
			return rc;
	}
	return 0;
}

/* ---- one measurement ---- */

static int region_verify(const char *path, const struct workload *w,
			 const struct proc_out *out, int nproc)
{
	struct daxfs_open_opts oo = { .path = path, .readonly = 1 };
	struct daxfs_err err = { 0 };
	struct daxfs_usage u;
	struct daxfs *fs;
	uint64_t evicted = 0;
	int rc;

	for (int i = 0; i < nproc; i++)
		evicted += out[i].evicted;
	rc = daxfs_open(&oo, &fs, &err);
	if (rc < 0) {
		fprintf(stderr, "bench_gc: reopen region: %s\n", err.msg);
		return rc;
	}
	rc = daxfs_usage(fs, &u);
	daxfs_close(fs);
	if (rc < 0)
		return rc;
	/* One process sees every unit freed; with two each sees some of the
	 * other's frees as well, so only its sum is checked. */
	if (evicted != w->nlayers || u.layers_ready || u.contents ||
	    (nproc == 1 && out[0].data_freed < w->distinct_bytes)) {
		fprintf(stderr, "bench_gc: gc evicted %llu layers and freed %llu bytes, "
			"%llu layers and %llu contents left; expected %u layers, "
			"at least %llu bytes, nothing left\n",
			(unsigned long long)evicted,
			(unsigned long long)out[0].data_freed,
			(unsigned long long)u.layers_ready,
			(unsigned long long)u.contents, w->nlayers,
			(unsigned long long)w->distinct_bytes);
		return -EIO;
	}
	return 0;
}

static int measure_region(const char *dir, struct workload *w, int nproc,
			  uint8_t *buf, struct proc_out *out, double *secs,
			  struct scan_result *scan)
{
	struct job_ctx c = { .w = w, .nproc = nproc, .out = out };
	struct bench_job j = { .nproc = nproc, .setup = gc_setup, .run = gc_run,
			       .teardown = gc_teardown, .arg = &c };
	struct daxfs_mkfs_opts mo = { .size = region_size(w),
				      .journal_entries = journal_size(w) };
	struct daxfs_err err = { 0 };
	struct daxfs *fs = NULL;
	char region[PATH_MAX];
	int rc;

	rc = bench_path(region, sizeof(region), "%s/region", dir);
	if (rc < 0)
		return rc;
	mo.path = c.region = region;
	rc = daxfs_mkfs(&mo, &err);
	if (rc < 0) {
		fprintf(stderr, "bench_gc: mkfs %s: %s\n", region, err.msg);
		goto out;
	}
	rc = attach(region, 0, "fill", &fs);
	if (rc < 0)
		goto out;
	w->hash_slots = fs->sb.hash_slots;
	rc = region_fill(fs, w, buf, &err);
	if (rc < 0)
		fprintf(stderr, "bench_gc: filling the region: %s\n", err.msg);
	if (rc == 0 && scan)
		rc = scan_measure(fs, w, scan);
	/* Detach: the layers are unheld, the filler's chunks released. */
	daxfs_close(fs);
	if (rc == 0)
		rc = bench_run(&j, secs);
	if (rc == 0)
		rc = region_verify(region, w, out, nproc);
out:
	if (unlink(region) < 0 && rc == 0)
		rc = -errno;
	return rc;
}

static int measure_tmpfs(const char *dir, const struct workload *w, int nproc,
			 int rep, uint8_t *buf, struct proc_out *out, double *secs)
{
	struct job_ctx c = { .w = w, .nproc = nproc, .out = out };
	struct bench_job j = { .nproc = nproc, .run = rm_run, .arg = &c };
	char tree[PATH_MAX];
	long files = 0, left;
	int rc;

	rc = bench_path(tree, sizeof(tree), "%s/tmpfs-%s-%d-%d", dir,
			kind_name[w->kind], nproc, rep);
	if (rc < 0)
		return rc;
	c.tree = tree;
	rc = tmpfs_fill(tree, w, buf);
	if (rc < 0)
		fprintf(stderr, "bench_gc: writing %s: %s\n", tree, strerror(-rc));
	if (rc == 0)
		rc = bench_run(&j, secs);
	for (int i = 0; i < nproc; i++)
		files += out[i].files;
	if (rc == 0 && files != (long)w->files) {
		fprintf(stderr, "bench_gc: rm removed %ld files, expected %llu\n",
			files, (unsigned long long)w->files);
		rc = -EIO;
	}
	/* Whatever is left: nothing after a good run. */
	left = bench_rm_tree(tree);
	if (left < 0 && rc == 0)
		rc = (int)left;
	else if (left > 0 && rc == 0)
		rc = -EIO;
	return rc;
}

/* ---- main ---- */

static void usage(void)
{
	fprintf(stderr, "usage: bench_gc [-d DIR] [-r REPS] [-l SMALL_LAYERS] "
		"[-n FILES_PER_LAYER] [-L LARGE_LAYERS] [-c LARGE_FILES] "
		"[-m LARGE_MIB]\n");
	exit(2);
}

static const char *procs_word(int p)
{
	return p > 1 ? "processes" : "process  ";
}

static void print_row(const struct workload *w, int nproc, const char *path,
		      double secs, double ratio)
{
	printf("  %-6s %5d  %-7s %9.1f %10.0f %11.0f %9.0f", kind_name[w->kind],
	       nproc, path, secs * 1e3, w->nlayers / secs, (double)w->files / secs,
	       (double)w->bytes / 1e6 / secs);
	if (ratio > 0)
		printf(" %12.2f", ratio);
	printf("\n");
}

static void print_scan(const struct workload *w, const struct scan_result *s,
		       const double *med, double ns[][MAX_REPS], int reps)
{
	static const char *const what[NSCAN] = { "want", "all", "count" };
	double visits = 2.0 * (double)s->hash_slots;
	double batches = visits / GC_BATCH;

	printf("\nclock pass that can free nothing: %llu of %u small layers held, "
	       "%llu pinned (one image)\n", (unsigned long long)s->held, w->nlayers,
	       (unsigned long long)s->pinned);
	printf("  a daxfs_gc call sweeps two revolutions of the hand over all %llu "
	       "hash slots,\n  %u of which hold layer records (%.0f layer visits); "
	       "median over runs of the median pass\n",
	       (unsigned long long)s->hash_slots, w->nlayers, 2.0 * w->nlayers);
	printf("  want:  want_data/meta > region (a daemon under pressure)  "
	       "%9.2f ms  %8.1f us/layer  %7.1f ns/slot\n", med[SCAN_WANT] / 1e6,
	       med[SCAN_WANT] / 1e3 / (2.0 * w->nlayers), med[SCAN_WANT] / visits);
	printf("  all:   all = 1 (same sweep, no free-space checks)         "
	       "%9.2f ms  %8.1f us/layer  %7.1f ns/slot\n", med[SCAN_ALL] / 1e6,
	       med[SCAN_ALL] / 1e3 / (2.0 * w->nlayers), med[SCAN_ALL] / visits);
	printf("  count: one count of the data area's used units: %.1f us; the want "
	       "check runs it\n         once per batch of %d slots, %.0f times a "
	       "pass: ~%.0f ms\n", med[SCAN_COUNT] / 1e3, GC_BATCH, batches,
	       med[SCAN_COUNT] * batches / 1e6);
	printf("  no comparison exists (overlayfs has no eviction scan): absolute "
	       "figures\n");
	for (int i = 0; i < NSCAN; i++) {
		printf("  all runs, %-5s (ms):", what[i]);
		for (int r = 0; r < reps; r++)
			printf(" %.3f", ns[i][r] / 1e6);
		printf("\n");
	}
	printf("\n");
}

int main(int argc, char **argv)
{
	struct workload wl[NKINDS] = {
		{ .kind = SMALL, .nlayers = 64, .nfiles = 500 },
		{ .kind = LARGE, .nlayers = 8, .nfiles = 4, .large_size = 8u << 20 },
	};
	static double res[NKINDS][PROCS_MAX][NIMPLS][MAX_REPS];
	static double scan_ns[NSCAN][MAX_REPS];
	double med[NKINDS][PROCS_MAX][NIMPLS], scan_med[NSCAN];
	struct scan_result scan = { 0 };
	struct proc_out *out = NULL;
	const char *parent = "/dev/shm";
	uint64_t freed[NKINDS] = { 0 };
	char workdir[PATH_MAX];
	uint8_t *buf = NULL;
	unsigned v, reps = 3;
	int64_t t0 = bench_now_ns();
	int opt, rc = 0;

	while ((opt = getopt(argc, argv, "d:r:l:n:L:c:m:")) != -1) {
		switch (opt) {
		case 'd':
			parent = optarg;
			break;
		case 'r':
			if (bench_parse_uint(optarg, 1, MAX_REPS, &reps) < 0)
				usage();
			break;
		case 'l':
			if (bench_parse_uint(optarg, 1, 4096, &wl[SMALL].nlayers) < 0)
				usage();
			break;
		case 'n':
			if (bench_parse_uint(optarg, 1, 100000, &wl[SMALL].nfiles) < 0)
				usage();
			break;
		case 'L':
			if (bench_parse_uint(optarg, 1, 256, &wl[LARGE].nlayers) < 0)
				usage();
			break;
		case 'c':
			if (bench_parse_uint(optarg, 1, 64, &wl[LARGE].nfiles) < 0)
				usage();
			break;
		case 'm':
			if (bench_parse_uint(optarg, 1, 1024, &v) < 0)
				usage();
			wl[LARGE].large_size = (uint64_t)v << 20;
			break;
		default:
			usage();
		}
	}
	if (optind != argc)
		usage();
	for (int k = 0; k < NKINDS; k++)
		workload_totals(&wl[k]);
	buf = malloc(wl[LARGE].max_file > wl[SMALL].max_file ?
		     wl[LARGE].max_file : wl[SMALL].max_file);
	out = mmap(NULL, sizeof(*out) * PROCS_MAX, PROT_READ | PROT_WRITE,
		   MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (!buf || out == MAP_FAILED) {
		fprintf(stderr, "bench_gc: out of memory\n");
		return 1;
	}
	if (bench_path(workdir, sizeof(workdir), "%s/bench-gc.XXXXXX", parent) < 0 ||
	    !mkdtemp(workdir)) {
		fprintf(stderr, "bench_gc: mkdtemp %s: %s\n", workdir, strerror(errno));
		return 1;
	}
	/* Run -1 of each configuration is a warm-up and is not recorded. */
	for (int k = 0; k < NKINDS && rc == 0; k++)
		for (int p = 1; p <= PROCS_MAX && rc == 0; p++)
			for (int r = -1; r < (int)reps && rc == 0; r++)
				for (int q = 0; q < NIMPLS && rc == 0; q++) {
					/* Alternate the order: drift hits both alike. */
					int i = r & 1 ? NIMPLS - 1 - q : q;
					int want_scan = k == SMALL && p == 1 && r >= 0;
					double secs = 0;

					memset(out, 0, sizeof(*out) * PROCS_MAX);
					if (i == REGION)
						rc = measure_region(workdir, &wl[k], p, buf, out,
								    &secs, want_scan ? &scan : NULL);
					else
						rc = measure_tmpfs(workdir, &wl[k], p, r + 1, buf,
								   out, &secs);
					if (rc < 0) {
						fprintf(stderr, "bench_gc: %s, %d process(es), %s, "
							"run %d: %s\n", kind_name[k], p,
							i == REGION ? "region" : "tmpfs", r + 1,
							strerror(-rc));
						break;
					}
					if (r < 0)
						continue;
					res[k][p - 1][i][r] = secs;
					if (i == REGION && p == 1)
						freed[k] = out[0].data_freed;
					if (want_scan && i == REGION) {
						scan_ns[SCAN_WANT][r] = scan.want_ns;
						scan_ns[SCAN_ALL][r] = scan.all_ns;
						scan_ns[SCAN_COUNT][r] = scan.count_ns;
					}
				}
	if (rc < 0)
		goto out;
	for (int k = 0; k < NKINDS; k++)
		for (int p = 0; p < PROCS_MAX; p++)
			for (int i = 0; i < NIMPLS; i++)
				med[k][p][i] = bench_median(res[k][p][i], (int)reps);
	for (int i = 0; i < NSCAN; i++)
		scan_med[i] = bench_median(scan_ns[i], (int)reps);

	printf("layer eviction: daxfs_gc (all) over a full region vs rm -rf of the "
	       "same trees on tmpfs\n  (median of %u runs after a warm-up run; only "
	       "the gc call / the removal is timed)\n", reps);
	for (int k = 0; k < NKINDS; k++)
		printf("  %-5s: %u layers x %u files (%.1f MB, %.1f MB distinct), region "
		       "%.0f MiB, %llu hash slots\n", kind_name[k], wl[k].nlayers,
		       wl[k].nfiles, (double)wl[k].bytes / 1e6,
		       (double)wl[k].distinct_bytes / 1e6,
		       (double)region_size(&wl[k]) / 1048576,
		       (unsigned long long)wl[k].hash_slots);
	printf("  small files are %d-%d bytes, %d per directory, 1 in %d with the "
	       "same content in every layer;\n  large files are distinct\n",
	       SMALL_MIN, SMALL_MAX, FILES_PER_DIR, SHARED_EVERY);
	printf("  region: layers built by a host that detaches; P daemon hosts call "
	       "daxfs_gc(all) at once\n");
	printf("  tmpfs:  one directory per layer, P processes remove their share "
	       "with nftw + unlink/rmdir\n");
	printf("  rates count the layers' own files and bytes (MB = 10^6 bytes) on "
	       "both sides\n\n");
	printf("  %-6s %5s  %-7s %9s %10s %11s %9s %12s\n", "work", "procs", "path",
	       "time ms", "layers/s", "files/s", "MB/s", "region/tmpfs");
	for (int k = 0; k < NKINDS; k++)
		for (int p = 0; p < PROCS_MAX; p++) {
			print_row(&wl[k], p + 1, "region", med[k][p][REGION],
				  med[k][p][TMPFS] / med[k][p][REGION]);
			print_row(&wl[k], p + 1, "tmpfs", med[k][p][TMPFS], 0);
		}
	printf("\n  data freed by one region gc (the unit bitmap's count): small "
	       "%.1f MB, large %.1f MB\n", (double)freed[SMALL] / 1e6,
	       (double)freed[LARGE] / 1e6);
	printf("\n  all runs (ms; ratio tmpfs/region time of the same run):\n");
	for (int k = 0; k < NKINDS; k++)
		for (int p = 0; p < PROCS_MAX; p++) {
			for (int i = 0; i <= NIMPLS; i++) {
				printf("    %-5s %d %s %-7s", kind_name[k], p + 1,
				       procs_word(p + 1), i == REGION ? "region" :
				       i == TMPFS ? "tmpfs" : "ratio");
				for (unsigned r = 0; r < reps; r++)
					if (i < NIMPLS)
						printf(" %9.2f", res[k][p][i][r] * 1e3);
					else
						printf(" %9.2f", res[k][p][TMPFS][r] /
						       res[k][p][REGION][r]);
				printf("\n");
			}
		}

	print_scan(&wl[SMALL], &scan, scan_med, scan_ns, (int)reps);
	for (int k = 0; k < NKINDS; k++)
		for (int p = 0; p < PROCS_MAX; p++)
			printf("summary: gc %-5s %d %s region/tmpfs %.2f (%.0f vs %.0f "
			       "layers/s, %.0f vs %.0f %s)\n", kind_name[k], p + 1,
			       procs_word(p + 1), med[k][p][TMPFS] / med[k][p][REGION],
			       wl[k].nlayers / med[k][p][REGION],
			       wl[k].nlayers / med[k][p][TMPFS],
			       k == SMALL ? (double)wl[k].files / med[k][p][REGION] :
					    (double)wl[k].bytes / 1e6 / med[k][p][REGION],
			       k == SMALL ? (double)wl[k].files / med[k][p][TMPFS] :
					    (double)wl[k].bytes / 1e6 / med[k][p][TMPFS],
			       k == SMALL ? "files/s" : "MB/s");
	for (int k = 0; k < NKINDS; k++)
		printf("summary: gc %-5s 2/1 processes throughput: region %.2f, tmpfs "
		       "%.2f\n", kind_name[k], med[k][0][REGION] / med[k][1][REGION],
		       med[k][0][TMPFS] / med[k][1][TMPFS]);
	printf("summary: gc clock pass, want unmet, nothing evictable: %.1f ms, "
	       "%.0f us per layer record (%u layers, %llu hash slots; absolute, "
	       "no baseline)\n", scan_med[SCAN_WANT] / 1e6,
	       scan_med[SCAN_WANT] / 1e3 / (2.0 * wl[SMALL].nlayers),
	       wl[SMALL].nlayers, (unsigned long long)scan.hash_slots);
	printf("summary: gc clock pass, all, nothing evictable: %.2f ms, %.1f us "
	       "per layer record (absolute, no baseline)\n",
	       scan_med[SCAN_ALL] / 1e6,
	       scan_med[SCAN_ALL] / 1e3 / (2.0 * wl[SMALL].nlayers));
	printf("bench_gc: %.1f s\n", (double)(bench_now_ns() - t0) / 1e9);
out:
	free(buf);
	munmap(out, sizeof(*out) * PROCS_MAX);
	{
		long n = bench_rm_tree(workdir);

		if (n < 0) {
			fprintf(stderr, "bench_gc: removing %s: %s\n", workdir,
				strerror((int)-n));
			rc = -EIO;
		}
	}
	return rc < 0 ? 1 : 0;
}
