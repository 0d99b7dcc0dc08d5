/* Layer unpack throughput: tar -> DaxFS region vs tar -> tmpfs.
 *
 * Two layer tarballs are generated in memory (deterministic, seeded): a
 * "small" one with thousands of small files in nested directories and a
 * "large" one with a few large files.  Each is then unpacked
 *  - into a fresh region: libarchive reads the tar, every entry goes
 *    through daxfs_builder_add/write and the layer is published;
 *  - onto tmpfs: libarchive reads the same tar and archive_write_disk
 *    extracts it into a fresh directory under the work directory.
 * Both run with 1 and with 2 writer processes (each its own layer with
 * distinct contents, at the same time).  memcpy + sha256 over the large
 * data is the reference for what the region path must at least do.
 *
 *   bench_unpack [-d DIR] [-r REPS] [-n SMALL_FILES] [-c LARGE_FILES]
 *                [-m LARGE_MIB]
 *
 * DIR (default /dev/shm) must be on tmpfs; regions and extraction
 * directories are created below it and removed again. */
#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <openssl/evp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "benchutil.h"
#include "daxfs.h"

#define MAX_REPS 15
#define WRITERS_MAX 2
#define SMALL_MIN 512
#define SMALL_MAX (16 * 1024)
#define SMALL_PKGS 50
#define SMALL_SUBS 4
#define REF_BLOCK (128 * 1024)
#define MAX_XATTRS 64
#define DISK_FLAGS (ARCHIVE_EXTRACT_TIME | ARCHIVE_EXTRACT_PERM | \
		    ARCHIVE_EXTRACT_SECURE_NODOTDOT)

struct opts {
	const char *dir;
	int reps;
	unsigned small_files;
	unsigned large_files;
	unsigned large_mib;
};

/* One generated layer. */
struct layer {
	uint8_t *tar;
	size_t tar_len, tar_cap;
	uint8_t *data;		/* large layers: all file contents, in order */
	uint64_t file_size;	/* large layers: bytes per file */
	uint64_t nfiles;	/* regular files */
	uint64_t ndirs;
	uint64_t bytes;		/* bytes in regular files */
	uint8_t diff_id[32];
};

enum kind { SMALL = 0, LARGE = 1, NKINDS };
enum path { REGION = 0, TMPFS = 1, REF = 2, NPATHS };

static const char *const kind_name[NKINDS] = { "small", "large" };

/* State of one measurement.  Forked processes get their own copy, so the
 * per-process fields (fs, dst) are private to each writer. */
struct job_ctx {
	struct layer *layers;	/* one per writer */
	const char *region;
	char dirs[WRITERS_MAX][PATH_MAX];
	struct daxfs *fs;
	uint8_t *dst;
};

/* ---- generating tarballs ---- */

static la_ssize_t tar_write_cb(struct archive *a, void *arg, const void *buf,
			       size_t len)
{
	struct layer *l = arg;

	if (len > l->tar_cap - l->tar_len) {
		size_t cap = l->tar_cap + l->tar_cap / 2 + len;
		uint8_t *p = realloc(l->tar, cap);

		if (!p) {
			archive_set_error(a, ENOMEM, "out of memory");
			return -1;
		}
		l->tar = p;
		l->tar_cap = cap;
	}
	memcpy(l->tar + l->tar_len, buf, len);
	l->tar_len += len;
	return (la_ssize_t)len;
}

static int archive_fail(struct archive *a, const char *what)
{
	int e = archive_errno(a);

	fprintf(stderr, "bench_unpack: %s: %s\n", what,
		archive_error_string(a) ? archive_error_string(a) : "unknown error");
	return e > 0 ? -e : -EIO;
}

static int tar_open(struct layer *l, size_t estimate, struct archive **out)
{
	struct archive *a;

	l->tar = malloc(estimate);
	if (!l->tar)
		return -ENOMEM;
	l->tar_cap = estimate;
	l->tar_len = 0;
	a = archive_write_new();
	if (!a)
		return -ENOMEM;
	if (archive_write_set_format_pax_restricted(a) != ARCHIVE_OK ||
	    archive_write_open2(a, l, NULL, tar_write_cb, NULL, NULL) != ARCHIVE_OK) {
		int rc = archive_fail(a, "tar writer");

		archive_write_free(a);
		return rc;
	}
	*out = a;
	return 0;
}

static int tar_close(struct archive *a)
{
	int rc = 0;

	if (archive_write_close(a) != ARCHIVE_OK)
		rc = archive_fail(a, "closing tar");
	if (archive_write_free(a) != ARCHIVE_OK && rc == 0)
		rc = -EIO;
	return rc;
}

static int tar_add(struct archive *a, struct archive_entry *ae, struct layer *l,
		   const char *path, mode_t type, const void *data, size_t size,
		   int64_t mtime)
{
	archive_entry_clear(ae);
	archive_entry_set_pathname(ae, path);
	archive_entry_set_filetype(ae, type);
	archive_entry_set_perm(ae, type == AE_IFDIR ? 0755 : 0644);
	archive_entry_set_uid(ae, 0);
	archive_entry_set_gid(ae, 0);
	archive_entry_set_uname(ae, "root");
	archive_entry_set_gname(ae, "root");
	archive_entry_set_mtime(ae, mtime, 0);
	archive_entry_set_size(ae, type == AE_IFREG ? (la_int64_t)size : 0);
	if (archive_write_header(a, ae) != ARCHIVE_OK)
		return archive_fail(a, path);
	if (type == AE_IFREG) {
		/* archive_write_data takes at most SSIZE_MAX per call. */
		const uint8_t *p = data;

		while (size) {
			la_ssize_t n = archive_write_data(a, p, size);

			if (n <= 0)
				return archive_fail(a, path);
			p += n;
			size -= (size_t)n;
		}
		l->nfiles++;
	} else {
		l->ndirs++;
	}
	return 0;
}

static int layer_seal(struct layer *l)
{
	unsigned int n = 32;

	if (EVP_Digest(l->tar, l->tar_len, l->diff_id, &n, EVP_sha256(), NULL) != 1)
		return -EIO;
	return 0;
}

/* Thousands of small files in SMALL_PKGS x SMALL_SUBS leaf directories. */
static int gen_small(struct layer *l, unsigned nfiles, uint64_t seed)
{
	struct archive *a = NULL;
	struct archive_entry *ae = archive_entry_new();
	unsigned nleaf = SMALL_PKGS * SMALL_SUBS, cur = UINT32_MAX;
	uint64_t rs = seed;
	uint8_t *buf = malloc(SMALL_MAX);
	char path[256];
	int rc;

	memset(l, 0, sizeof(*l));
	if (!ae || !buf) {
		rc = -ENOMEM;
		goto out;
	}
	rc = tar_open(l, (size_t)nfiles * (SMALL_MAX / 2 + 2048) + (4u << 20), &a);
	if (rc < 0)
		goto out;
	rc = tar_add(a, ae, l, "usr/", AE_IFDIR, NULL, 0, 1700000000);
	if (rc == 0)
		rc = tar_add(a, ae, l, "usr/lib/", AE_IFDIR, NULL, 0, 1700000000);
	for (unsigned i = 0; rc == 0 && i < nfiles; i++) {
		unsigned leaf = (unsigned)((uint64_t)i * nleaf / nfiles);
		unsigned pkg = leaf / SMALL_SUBS, sub = leaf % SMALL_SUBS;
		size_t size = SMALL_MIN + bench_rand(&rs) % (SMALL_MAX - SMALL_MIN + 1);

		if (leaf != cur) {
			if (sub == 0 || cur == UINT32_MAX) {
				snprintf(path, sizeof(path), "usr/lib/pkg%02u/", pkg);
				rc = tar_add(a, ae, l, path, AE_IFDIR, NULL, 0, 1700000000);
				if (rc < 0)
					break;
			}
			snprintf(path, sizeof(path), "usr/lib/pkg%02u/sub%u/", pkg, sub);
			rc = tar_add(a, ae, l, path, AE_IFDIR, NULL, 0, 1700000000);
			if (rc < 0)
				break;
			cur = leaf;
		}
		/* Random bytes: every file's content is distinct. */
		bench_fill(buf, size, seed * 1000003 + i);
		snprintf(path, sizeof(path), "usr/lib/pkg%02u/sub%u/file%05u.dat",
			 pkg, sub, i);
		rc = tar_add(a, ae, l, path, AE_IFREG, buf, size, 1700000000 + i);
		l->bytes += size;
	}
	if (rc == 0) {
		rc = tar_close(a);
		a = NULL;
	}
	if (rc == 0)
		rc = layer_seal(l);
out:
	if (a)
		archive_write_free(a);
	archive_entry_free(ae);
	free(buf);
	return rc;
}

/* A few large files; their contents stay in l->data for the reference. */
static int gen_large(struct layer *l, unsigned nfiles, uint64_t file_size,
		     uint64_t seed)
{
	struct archive *a = NULL;
	struct archive_entry *ae = archive_entry_new();
	char path[256];
	int rc;

	memset(l, 0, sizeof(*l));
	l->file_size = file_size;
	l->data = malloc(nfiles * file_size);
	if (!ae || !l->data) {
		rc = -ENOMEM;
		goto out;
	}
	rc = tar_open(l, nfiles * (file_size + 4096) + (1u << 20), &a);
	if (rc < 0)
		goto out;
	rc = tar_add(a, ae, l, "opt/", AE_IFDIR, NULL, 0, 1700000000);
	if (rc == 0)
		rc = tar_add(a, ae, l, "opt/blob/", AE_IFDIR, NULL, 0, 1700000000);
	for (unsigned i = 0; rc == 0 && i < nfiles; i++) {
		uint8_t *d = l->data + i * file_size;

		bench_fill(d, file_size, seed * 1000003 + i);
		snprintf(path, sizeof(path), "opt/blob/large%u.bin", i);
		rc = tar_add(a, ae, l, path, AE_IFREG, d, file_size, 1700000000 + i);
		l->bytes += file_size;
	}
	if (rc == 0) {
		rc = tar_close(a);
		a = NULL;
	}
	if (rc == 0)
		rc = layer_seal(l);
out:
	if (a)
		archive_write_free(a);
	archive_entry_free(ae);
	return rc;
}

static void layer_free(struct layer *l)
{
	free(l->tar);
	free(l->data);
	memset(l, 0, sizeof(*l));
}

/* ---- tar -> region ---- */

struct xattrs {
	const char *names[MAX_XATTRS];
	const void *values[MAX_XATTRS];
	size_t lens[MAX_XATTRS];
};

/* Translate a tar entry, including OCI whiteouts, for the builder. */
static int entry_convert(struct archive_entry *ae, struct daxfs_entry *e,
			 char *path, size_t pathlen, struct xattrs *x)
{
	const char *p = archive_entry_pathname(ae), *base, *hl;
	int n;

	memset(e, 0, sizeof(*e));
	if (!p)
		return -EINVAL;
	e->path = p;
	e->mode = archive_entry_mode(ae);
	e->uid = (uint32_t)archive_entry_uid(ae);
	e->gid = (uint32_t)archive_entry_gid(ae);
	e->mtime_sec = archive_entry_mtime(ae);
	e->mtime_nsec = (uint32_t)archive_entry_mtime_nsec(ae);
	e->rdev_major = (uint32_t)archive_entry_rdevmajor(ae);
	e->rdev_minor = (uint32_t)archive_entry_rdevminor(ae);
	e->size = archive_entry_size(ae) > 0 ? (uint64_t)archive_entry_size(ae) : 0;
	hl = archive_entry_hardlink(ae);
	if (hl) {
		e->hardlink = 1;
		e->link = hl;
	} else if (S_ISLNK(e->mode)) {
		e->link = archive_entry_symlink(ae);
	}
	base = strrchr(p, '/');
	base = base ? base + 1 : p;
	if (!strncmp(base, ".wh.", 4)) {
		int dlen = (int)(base - p);

		if (!strcmp(base, ".wh..wh..opq")) {
			n = snprintf(path, pathlen, "%.*s", dlen, p);
			e->opaque = 1;
		} else {
			n = snprintf(path, pathlen, "%.*s%s", dlen, p, base + 4);
			e->whiteout = 1;
		}
		if (n < 0 || (size_t)n >= pathlen)
			return -ENAMETOOLONG;
		e->path = path;
	}
	n = archive_entry_xattr_reset(ae);
	if (n > MAX_XATTRS)
		return -E2BIG;
	for (int i = 0; i < n; i++) {
		if (archive_entry_xattr_next(ae, &x->names[i], &x->values[i],
					     &x->lens[i]) != ARCHIVE_OK)
			return -EIO;
	}
	e->nxattrs = (size_t)n;
	e->xattr_names = x->names;
	e->xattr_values = x->values;
	e->xattr_lens = x->lens;
	return 0;
}

static const uint8_t zeros[64 * 1024];

static int write_zeros(struct daxfs_layer_builder *b, uint64_t n,
		       struct daxfs_err *err)
{
	while (n) {
		size_t k = n < sizeof(zeros) ? (size_t)n : sizeof(zeros);
		int rc = daxfs_builder_write(b, zeros, k, err);

		if (rc < 0)
			return rc;
		n -= k;
	}
	return 0;
}

/* Stream one regular file's data (holes of sparse entries as zeros). */
static int region_data(struct archive *a, struct daxfs_layer_builder *b,
		       uint64_t size, struct daxfs_err *err)
{
	uint64_t done = 0;
	int rc;

	for (;;) {
		const void *buf;
		size_t len;
		la_int64_t off;
		int r = archive_read_data_block(a, &buf, &len, &off);

		if (r == ARCHIVE_EOF)
			break;
		if (r != ARCHIVE_OK)
			return archive_fail(a, "reading file data");
		if (off < 0 || (uint64_t)off < done || len > size - (uint64_t)off)
			return -EIO;
		rc = write_zeros(b, (uint64_t)off - done, err);
		if (rc == 0)
			rc = daxfs_builder_write(b, buf, len, err);
		if (rc < 0)
			return rc;
		done = (uint64_t)off + len;
	}
	return write_zeros(b, size - done, err);
}

static int unpack_region(struct daxfs *fs, const struct layer *l)
{
	struct daxfs_layer_builder *b = NULL;
	struct daxfs_err err = { 0 };
	struct archive_entry *ae;
	struct archive *a;
	struct xattrs x;
	char path[PATH_MAX];
	int rc, r;

	a = archive_read_new();
	if (!a)
		return -ENOMEM;
	if (archive_read_support_format_tar(a) != ARCHIVE_OK ||
	    archive_read_open_memory(a, l->tar, l->tar_len) != ARCHIVE_OK) {
		rc = archive_fail(a, "opening tar");
		goto out;
	}
	rc = daxfs_layer_build(fs, l->diff_id, &b, &err);
	if (rc < 0) {
		b = NULL;
		goto out;
	}
	while ((r = archive_read_next_header(a, &ae)) == ARCHIVE_OK) {
		struct daxfs_entry e;

		rc = entry_convert(ae, &e, path, sizeof(path), &x);
		if (rc < 0) {
			daxfs_err_set(&err, rc, "entry '%s': cannot translate",
				      archive_entry_pathname(ae));
			goto out;
		}
		rc = daxfs_builder_add(b, &e, &err);
		if (rc == 0 && S_ISREG(e.mode) && !e.hardlink && !e.whiteout)
			rc = region_data(a, b, e.size, &err);
		if (rc < 0)
			goto out;
	}
	if (r != ARCHIVE_EOF) {
		rc = archive_fail(a, "reading tar");
		goto out;
	}
	rc = daxfs_builder_publish(b, NULL, &err);
	if (rc == 0)
		b = NULL;	/* publish frees the builder */
out:
	if (rc < 0 && err.msg[0])
		fprintf(stderr, "bench_unpack: region: %s\n", err.msg);
	daxfs_builder_abort(b);
	if (archive_read_free(a) != ARCHIVE_OK && rc == 0)
		rc = -EIO;
	return rc;
}

/* ---- tar -> tmpfs (into the current directory) ---- */

static int disk_data(struct archive *a, struct archive *w)
{
	for (;;) {
		const void *buf;
		size_t len;
		la_int64_t off;
		int r = archive_read_data_block(a, &buf, &len, &off);

		if (r == ARCHIVE_EOF)
			return 0;
		if (r != ARCHIVE_OK)
			return archive_fail(a, "reading file data");
		if (archive_write_data_block(w, buf, len, off) != ARCHIVE_OK)
			return archive_fail(w, "writing file data");
	}
}

static int unpack_disk(const struct layer *l)
{
	struct archive *a = archive_read_new(), *w = archive_write_disk_new();
	struct archive_entry *ae;
	int rc = 0, r;

	if (!a || !w) {
		rc = -ENOMEM;
		goto out;
	}
	if (archive_read_support_format_tar(a) != ARCHIVE_OK ||
	    archive_read_open_memory(a, l->tar, l->tar_len) != ARCHIVE_OK) {
		rc = archive_fail(a, "opening tar");
		goto out;
	}
	if (archive_write_disk_set_options(w, DISK_FLAGS) != ARCHIVE_OK) {
		rc = archive_fail(w, "disk writer options");
		goto out;
	}
	while ((r = archive_read_next_header(a, &ae)) == ARCHIVE_OK) {
		if (archive_write_header(w, ae) != ARCHIVE_OK) {
			rc = archive_fail(w, archive_entry_pathname(ae));
			goto out;
		}
		if (archive_entry_size(ae) > 0) {
			rc = disk_data(a, w);
			if (rc < 0)
				goto out;
		}
		if (archive_write_finish_entry(w) != ARCHIVE_OK) {
			rc = archive_fail(w, archive_entry_pathname(ae));
			goto out;
		}
	}
	if (r != ARCHIVE_EOF) {
		rc = archive_fail(a, "reading tar");
		goto out;
	}
	if (archive_write_close(w) != ARCHIVE_OK)
		rc = archive_fail(w, "finishing extraction");
out:
	if (w && archive_write_free(w) != ARCHIVE_OK && rc == 0)
		rc = -EIO;
	if (a && archive_read_free(a) != ARCHIVE_OK && rc == 0)
		rc = -EIO;
	return rc;
}

/* ---- jobs run by each writer process ---- */

static int region_setup(void *arg, int idx)
{
	struct job_ctx *c = arg;
	struct daxfs_open_opts oo = { .path = c->region };
	struct daxfs_host_opts ho = { .kind = DAXFS_PROC_DAEMON };
	struct daxfs_err err = { 0 };
	char name[32];
	int rc;

	ho.uuid[0] = 0xbe;
	ho.uuid[15] = (uint8_t)(idx + 1);
	snprintf(name, sizeof(name), "bench-writer-%d", idx);
	ho.name = name;
	rc = daxfs_open(&oo, &c->fs, &err);
	if (rc == 0) {
		rc = daxfs_host_attach(c->fs, &ho, &err);
		if (rc < 0) {
			daxfs_close(c->fs);
			c->fs = NULL;
		}
	}
	if (rc < 0)
		fprintf(stderr, "bench_unpack: attach writer %d: %s\n", idx, err.msg);
	return rc;
}

static int region_run(void *arg, int idx)
{
	struct job_ctx *c = arg;

	return unpack_region(c->fs, &c->layers[idx]);
}

static void region_teardown(void *arg, int idx)
{
	struct job_ctx *c = arg;

	(void)idx;
	daxfs_close(c->fs);
	c->fs = NULL;
}

static int disk_setup(void *arg, int idx)
{
	struct job_ctx *c = arg;

	if (mkdir(c->dirs[idx], 0755) < 0 || chdir(c->dirs[idx]) < 0) {
		int rc = -errno;

		fprintf(stderr, "bench_unpack: %s: %s\n", c->dirs[idx], strerror(-rc));
		return rc;
	}
	return 0;
}

static int disk_run(void *arg, int idx)
{
	struct job_ctx *c = arg;

	return unpack_disk(&c->layers[idx]);
}

static int ref_setup(void *arg, int idx)
{
	struct job_ctx *c = arg;
	size_t len = c->layers[idx].bytes;

	c->dst = malloc(len);
	if (!c->dst)
		return -ENOMEM;
	memset(c->dst, 0xa5, len);	/* fault the pages in: not timed */
	return 0;
}

/* The least the region path does per byte: copy it and hash it. */
static int ref_run(void *arg, int idx)
{
	struct job_ctx *c = arg;
	const struct layer *l = &c->layers[idx];
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	uint8_t sha[32];
	unsigned int n;
	int rc = 0;

	if (!md)
		return -ENOMEM;
	for (uint64_t f = 0; rc == 0 && f < l->nfiles; f++) {
		uint64_t base = f * l->file_size;

		if (EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1) {
			rc = -EIO;
			break;
		}
		for (uint64_t off = 0; off < l->file_size; off += REF_BLOCK) {
			size_t k = l->file_size - off < REF_BLOCK ?
				   (size_t)(l->file_size - off) : REF_BLOCK;

			memcpy(c->dst + base + off, l->data + base + off, k);
			if (EVP_DigestUpdate(md, l->data + base + off, k) != 1) {
				rc = -EIO;
				break;
			}
		}
		if (rc == 0 && EVP_DigestFinal_ex(md, sha, &n) != 1)
			rc = -EIO;
	}
	EVP_MD_CTX_free(md);
	return rc;
}

static void ref_teardown(void *arg, int idx)
{
	struct job_ctx *c = arg;

	(void)idx;
	free(c->dst);
	c->dst = NULL;
}

/* ---- measurements ---- */

static uint64_t region_size(const struct layer *ls, int writers)
{
	uint64_t need = 0;

	for (int i = 0; i < writers; i++)
		need += ls[i].bytes + ls[i].nfiles * 512 + (16ULL << 20);
	need = need / 85 * 100 + (64ULL << 20);
	return (need + (2ULL << 20) - 1) & ~((2ULL << 20) - 1);
}

/* Each writer journals every file of its layer until publish. */
static uint32_t journal_size(const struct layer *ls, int writers)
{
	uint64_t need = 0;
	uint32_t n = 16384;

	for (int i = 0; i < writers; i++)
		if (2 * ls[i].nfiles + 1024 > need)
			need = 2 * ls[i].nfiles + 1024;
	while (n < need)
		n <<= 1;
	return n;
}

static int region_verify(const char *path, const struct layer *ls, int writers)
{
	struct daxfs_open_opts oo = { .path = path, .readonly = 1 };
	struct daxfs_err err = { 0 };
	struct daxfs_usage u;
	uint64_t files = 0, bytes = 0;
	struct daxfs *fs;
	int rc;

	rc = daxfs_open(&oo, &fs, &err);
	if (rc < 0) {
		fprintf(stderr, "bench_unpack: reopen region: %s\n", err.msg);
		return rc;
	}
	rc = daxfs_usage(fs, &u);
	daxfs_close(fs);
	if (rc < 0)
		return rc;
	for (int i = 0; i < writers; i++) {
		files += ls[i].nfiles;
		bytes += ls[i].bytes;
	}
	if (u.layers_ready != (uint64_t)writers || u.contents != files ||
	    u.content_bytes != bytes) {
		fprintf(stderr, "bench_unpack: region holds %llu layers, %llu contents, "
			"%llu bytes; expected %d, %llu, %llu\n",
			(unsigned long long)u.layers_ready,
			(unsigned long long)u.contents,
			(unsigned long long)u.content_bytes, writers,
			(unsigned long long)files, (unsigned long long)bytes);
		return -EIO;
	}
	return 0;
}

static int measure(const struct opts *o, struct layer *ls, enum kind k,
		   enum path p, int writers, int rep, double *value)
{
	struct job_ctx c;
	struct bench_job j = { .nproc = writers, .arg = &c };
	char region[PATH_MAX];
	double secs = 0, units = 0;
	int rc;

	memset(&c, 0, sizeof(c));
	c.layers = ls;
	for (int i = 0; i < writers; i++)
		units += k == SMALL ? (double)ls[i].nfiles : (double)ls[i].bytes / 1e6;
	if (p == REGION) {
		struct daxfs_mkfs_opts mo = {
			.path = region,
			.size = region_size(ls, writers),
			.journal_entries = journal_size(ls, writers),
		};
		struct daxfs_err err = { 0 };

		rc = bench_path(region, sizeof(region), "%s/region", o->dir);
		if (rc < 0)
			return rc;
		c.region = region;
		rc = daxfs_mkfs(&mo, &err);
		if (rc < 0) {
			fprintf(stderr, "bench_unpack: mkfs %s: %s\n", region, err.msg);
			unlink(region);
			return rc;
		}
		j.setup = region_setup;
		j.run = region_run;
		j.teardown = region_teardown;
		rc = bench_run(&j, &secs);
		if (rc == 0)
			rc = region_verify(region, ls, writers);
		if (unlink(region) < 0 && rc == 0)
			rc = -errno;
	} else if (p == TMPFS) {
		long want = 0, got;

		for (int i = 0; i < writers; i++) {
			rc = bench_path(c.dirs[i], sizeof(c.dirs[i]), "%s/tmpfs-%s-%d-%d-w%d",
					o->dir, kind_name[k], writers, rep, i);
			if (rc < 0)
				return rc;
			want += (long)ls[i].nfiles;
		}
		j.setup = disk_setup;
		j.run = disk_run;
		rc = bench_run(&j, &secs);
		for (int i = 0; i < writers; i++) {
			got = bench_rm_tree(c.dirs[i]);
			if (got < 0 && rc == 0)
				rc = (int)got;
			else if (rc == 0)
				want -= got;
		}
		if (rc == 0 && want != 0) {
			fprintf(stderr, "bench_unpack: tmpfs extraction left %ld files "
				"unaccounted for\n", want);
			rc = -EIO;
		}
	} else {
		j.setup = ref_setup;
		j.run = ref_run;
		j.teardown = ref_teardown;
		rc = bench_run(&j, &secs);
	}
	if (rc < 0)
		return rc;
	*value = secs > 0 ? units / secs : 0;
	return 0;
}

/* ---- main ---- */

static void usage(void)
{
	fprintf(stderr, "usage: bench_unpack [-d DIR] [-r REPS] [-n SMALL_FILES] "
		"[-c LARGE_FILES] [-m LARGE_MIB]\n");
	exit(2);
}

static void print_row(const char *name, const char *unit, int writers,
		      double region, double tmpfs)
{
	char ratio[32] = "-", tm[32] = "-";

	if (tmpfs > 0) {
		snprintf(tm, sizeof(tm), "%.0f", tmpfs);
		snprintf(ratio, sizeof(ratio), "%.2f", region / tmpfs);
	}
	printf("  %-14s %-8s %7d %12.0f %12s %13s\n", name, unit, writers, region,
	       tm, ratio);
}

static void print_runs(const char *name, int writers, const char *path,
		       const double *v, int n, int prec)
{
	printf("    %-14s %d writer%s %-7s", name, writers, writers > 1 ? "s" : " ",
	       path);
	for (int i = 0; i < n; i++)
		printf(" %10.*f", prec, v[i]);
	printf("\n");
}

int main(int argc, char **argv)
{
	struct opts o = { .dir = "/dev/shm", .reps = 3, .small_files = 5000,
			  .large_files = 4, .large_mib = 64 };
	static double res[NKINDS][WRITERS_MAX][NPATHS][MAX_REPS];
	double med[NKINDS][WRITERS_MAX][NPATHS];
	struct layer ls[NKINDS][WRITERS_MAX];
	char workdir[PATH_MAX];
	unsigned reps = 3;
	int64_t t0 = bench_now_ns();
	int opt, rc = 0;

	while ((opt = getopt(argc, argv, "d:r:n:c:m:")) != -1) {
		switch (opt) {
		case 'd':
			o.dir = optarg;
			break;
		case 'r':
			if (bench_parse_uint(optarg, 1, MAX_REPS, &reps) < 0)
				usage();
			o.reps = (int)reps;
			break;
		case 'n':
			if (bench_parse_uint(optarg, 1, 1000000, &o.small_files) < 0)
				usage();
			break;
		case 'c':
			if (bench_parse_uint(optarg, 1, 64, &o.large_files) < 0)
				usage();
			break;
		case 'm':
			if (bench_parse_uint(optarg, 1, 1024, &o.large_mib) < 0)
				usage();
			break;
		default:
			usage();
		}
	}
	if (optind != argc)
		usage();
	if (bench_path(workdir, sizeof(workdir), "%s/bench-unpack.XXXXXX", o.dir) < 0 ||
	    !mkdtemp(workdir)) {
		fprintf(stderr, "bench_unpack: mkdtemp %s: %s\n", workdir,
			strerror(errno));
		return 1;
	}
	o.dir = workdir;
	memset(ls, 0, sizeof(ls));
	for (int w = 0; w < WRITERS_MAX && rc == 0; w++) {
		rc = gen_small(&ls[SMALL][w], o.small_files, 101 + (uint64_t)w);
		if (rc == 0)
			rc = gen_large(&ls[LARGE][w], o.large_files,
				       (uint64_t)o.large_mib << 20, 202 + (uint64_t)w);
	}
	if (rc < 0) {
		fprintf(stderr, "bench_unpack: generating layers: %s\n", strerror(-rc));
		goto out;
	}
	/* Run -1 of each configuration is a warm-up and is not recorded:
	 * on a virtual machine the first touch of fresh memory is far slower
	 * than any later one. */
	for (int k = 0; k < NKINDS && rc == 0; k++)
		for (int w = 1; w <= WRITERS_MAX && rc == 0; w++)
			for (int r = -1; r < o.reps && rc == 0; r++)
				for (int q = 0; q < NPATHS && rc == 0; q++) {
					/* Alternate region and tmpfs: drift hits both. */
					int p = q == REF || !(r & 1) ? q : 1 - q;
					double v = 0;

					if (p == REF && k != LARGE)
						continue;
					rc = measure(&o, ls[k], (enum kind)k, (enum path)p,
						     w, r + 1, &v);
					if (rc < 0)
						fprintf(stderr, "bench_unpack: %s, %d writer(s), "
							"run %d: %s\n", kind_name[k], w, r + 1,
							strerror(-rc));
					else if (r >= 0)
						res[k][w - 1][p][r] = v;
				}
	if (rc < 0)
		goto out;
	for (int k = 0; k < NKINDS; k++)
		for (int w = 0; w < WRITERS_MAX; w++)
			for (int p = 0; p < NPATHS; p++)
				med[k][w][p] = bench_median(res[k][w][p], o.reps);

	printf("layer unpack: tar in memory -> DaxFS region vs -> tmpfs "
	       "(median of %d runs after a warm-up run)\n", o.reps);
	printf("  small layer: %llu files of %u-%u bytes (%.1f MB) in %llu dirs, "
	       "tar %.1f MB\n", (unsigned long long)ls[SMALL][0].nfiles, SMALL_MIN,
	       SMALL_MAX, (double)ls[SMALL][0].bytes / 1e6,
	       (unsigned long long)ls[SMALL][0].ndirs,
	       (double)ls[SMALL][0].tar_len / 1e6);
	printf("  large layer: %llu files of %u MiB (%.1f MB), tar %.1f MB\n",
	       (unsigned long long)ls[LARGE][0].nfiles, o.large_mib,
	       (double)ls[LARGE][0].bytes / 1e6, (double)ls[LARGE][0].tar_len / 1e6);
	printf("  region: libarchive read -> daxfs_builder_add/write/publish, "
	       "fresh region per run\n");
	printf("  tmpfs:  libarchive read -> archive_write_disk "
	       "(TIME|PERM|SECURE_NODOTDOT), fresh dir per run\n");
	printf("  writers: processes unpacking distinct layers at the same time; "
	       "MB = 10^6 bytes\n\n");
	printf("  %-14s %-8s %7s %12s %12s %13s\n", "workload", "unit", "writers",
	       "region", "tmpfs", "region/tmpfs");
	for (int k = 0; k < NKINDS; k++)
		for (int w = 0; w < WRITERS_MAX; w++)
			print_row(kind_name[k], k == SMALL ? "files/s" : "MB/s", w + 1,
				  med[k][w][REGION], med[k][w][TMPFS]);
	for (int w = 0; w < WRITERS_MAX; w++)
		print_row("memcpy+sha256", "MB/s", w + 1, med[LARGE][w][REF], 0);
	printf("\n  large region / memcpy+sha256: %.2f (1 writer), %.2f (2 writers)\n",
	       med[LARGE][0][REGION] / med[LARGE][0][REF],
	       med[LARGE][1][REGION] / med[LARGE][1][REF]);
	printf("\n  all runs (ratio: region/tmpfs of the same run):\n");
	for (int k = 0; k < NKINDS; k++)
		for (int w = 0; w < WRITERS_MAX; w++) {
			double ratio[MAX_REPS];

			for (int p = 0; p < NPATHS; p++)
				if (p != REF || k == LARGE)
					print_runs(p == REF ? "memcpy+sha256" : kind_name[k],
						   w + 1,
						   p == REGION ? "region" : p == TMPFS ? "tmpfs" : "",
						   res[k][w][p], o.reps, 0);
			for (int r = 0; r < o.reps; r++)
				ratio[r] = res[k][w][REGION][r] / res[k][w][TMPFS][r];
			print_runs(kind_name[k], w + 1, "ratio", ratio, o.reps, 2);
		}
	printf("\n");
	for (int k = 0; k < NKINDS; k++)
		for (int w = 0; w < WRITERS_MAX; w++)
			printf("summary: unpack %-5s %d writer%s region/tmpfs %.2f "
			       "(%.0f vs %.0f %s)\n", kind_name[k], w + 1,
			       w ? "s" : " ", med[k][w][REGION] / med[k][w][TMPFS],
			       med[k][w][REGION], med[k][w][TMPFS],
			       k == SMALL ? "files/s" : "MB/s");
	for (int w = 0; w < WRITERS_MAX; w++)
		printf("summary: unpack large %d writer%s region/(memcpy+sha256) %.2f "
		       "(%.0f vs %.0f MB/s)\n", w + 1, w ? "s" : " ",
		       med[LARGE][w][REGION] / med[LARGE][w][REF],
		       med[LARGE][w][REGION], med[LARGE][w][REF]);
	printf("bench_unpack: %.1f s\n", (double)(bench_now_ns() - t0) / 1e9);
out:
	for (int k = 0; k < NKINDS; k++)
		for (int w = 0; w < WRITERS_MAX; w++)
			layer_free(&ls[k][w]);
	{
		long n = bench_rm_tree(workdir);

		if (n < 0) {
			fprintf(stderr, "bench_unpack: removing %s: %s\n", workdir,
				strerror((int)-n));
			rc = -EIO;
		}
	}
	return rc < 0 ? 1 : 0;
}
