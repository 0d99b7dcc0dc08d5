/* Helpers shared by the unit tests: regions in /dev/shm or memory. */
#ifndef DAXFS_TESTUTIL_H
#define DAXFS_TESTUTIL_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "daxfs.h"

/* A unique region path for this test process. */
static inline void tu_region_path(char *buf, size_t n, const char *tag)
{
	const char *dir = getenv("DAXFS_TMP");

	snprintf(buf, n, "%s/daxfs-%s-%d", dir ? dir : "/dev/shm", tag, (int)getpid());
}

/* Make a region file (size bytes) with small journals; 0 or -errno. */
static inline int tu_mkfs(const char *path, uint64_t size, uint32_t hosts)
{
	struct daxfs_mkfs_opts o = { .path = path, .size = size, .max_hosts = hosts };
	struct daxfs_err err = { 0 };
	int rc = daxfs_mkfs(&o, &err);

	if (rc < 0)
		fprintf(stderr, "mkfs: %s\n", err.msg);
	return rc;
}

/* Attach an opened region (rc from its open) as host number id (uuid
 * derived from id); abandons it if the attach fails. */
static inline int tu_attach_opened(int rc, struct daxfs **fs, int id,
				   struct daxfs_err *err)
{
	struct daxfs_host_opts h = { .kind = DAXFS_PROC_DAEMON };
	char name[32];

	memset(h.uuid, 0, 16);
	h.uuid[0] = 0xda;
	h.uuid[15] = (uint8_t)id;
	snprintf(name, sizeof(name), "test-host-%d", id);
	h.name = name;
	if (rc == 0) {
		rc = daxfs_host_attach(*fs, &h, err);
		if (rc < 0)
			daxfs_abandon(*fs);
	}
	if (rc < 0)
		fprintf(stderr, "attach host %d: %s\n", id, err->msg);
	return rc;
}

/* Open and attach as host number id. */
static inline int tu_attach(const char *path, int id, uint32_t lease_ms,
			    struct daxfs **fs)
{
	struct daxfs_open_opts o = { .path = path, .lease_ms = lease_ms,
				     .grace_ms = lease_ms };
	struct daxfs_err err = { 0 };

	return tu_attach_opened(daxfs_open(&o, fs, &err), fs, id, &err);
}

static inline void tu_digest(uint8_t d[32], uint64_t a, uint64_t b)
{
	/* Distinct, well-spread 32-byte keys for tests. */
	uint64_t x = a * 0x9e3779b97f4a7c15ULL ^ (b + 0x7f4a7c159e3779b9ULL);

	for (int i = 0; i < 4; i++) {
		x ^= x >> 31;
		x *= 0xbf58476d1ce4e5b9ULL;
		x ^= x >> 27;
		memcpy(d + 8 * i, &x, 8);
	}
}

static int tu_fsck_count;
static inline void tu_fsck_line(const char *line, void *arg)
{
	(void)arg;
	tu_fsck_count++;
	fprintf(stderr, "fsck: %s\n", line);
}

/* ---- scripted layers (crash tests and their helper) ----
 *
 * A layer is described by a list of tar-like entries whose file data is a
 * deterministic pattern of (seed, size), so a test can build a layer in
 * one process and check it byte for byte in another. */
#include <errno.h>
#include <sys/stat.h>

enum tu_kind { TU_DIR = 1, TU_REG, TU_LNK, TU_HARD };

struct tu_ent {
	const char *path;
	int kind;
	uint64_t size;		/* TU_REG */
	uint32_t seed;		/* TU_REG data pattern */
	const char *link;	/* TU_LNK target, TU_HARD earlier path */
	const char *xname;	/* optional xattr */
	const char *xval;
};

struct tu_spec {
	const char *name;
	uint64_t key;		/* diff_id = tu_digest(0xc0ffee, key) */
	const struct tu_ent *ents;
	size_t n;
};

static inline uint64_t tu_mix(uint64_t x)
{
	x += 0x9e3779b97f4a7c15ULL;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
	return x ^ (x >> 31);
}

/* Bytes [off, off+len) of the pattern named seed. */
static inline void tu_fill(uint8_t *p, uint32_t seed, uint64_t off, size_t len)
{
	size_t i = 0;

	while (i < len) {
		uint64_t pos = off + i, w = tu_mix(((uint64_t)seed << 40) ^ (pos >> 3));
		unsigned k = (unsigned)(pos & 7);

		for (; k < 8 && i < len; k++, i++)
			p[i] = (uint8_t)(w >> (8 * k));
	}
}

static inline void tu_spec_id(const struct tu_spec *s, uint8_t id[32])
{
	tu_digest(id, 0xc0ffee, s->key);
}

/* Add entry t to b and write the first `upto` bytes of its data. */
static inline int tu_add_ent(struct daxfs_layer_builder *b, const struct tu_ent *t,
			     uint64_t upto, struct daxfs_err *err)
{
	struct daxfs_entry e;
	const char *xn[1];
	const void *xv[1];
	size_t xl[1];
	uint8_t *buf;
	int rc;

	memset(&e, 0, sizeof(e));
	e.path = t->path;
	e.uid = 1000;
	e.gid = 1000;
	e.mtime_sec = 1700000000 + (int64_t)t->seed;
	switch (t->kind) {
	case TU_DIR: e.mode = S_IFDIR | 0755; break;
	case TU_REG: e.mode = S_IFREG | 0644; e.size = t->size; break;
	case TU_LNK: e.mode = S_IFLNK | 0777; e.link = t->link; break;
	default: e.mode = S_IFREG | 0644; e.link = t->link; e.hardlink = 1; break;
	}
	if (t->xname) {
		xn[0] = t->xname;
		xv[0] = t->xval;
		xl[0] = strlen(t->xval);
		e.nxattrs = 1;
		e.xattr_names = xn;
		e.xattr_values = xv;
		e.xattr_lens = xl;
	}
	rc = daxfs_builder_add(b, &e, err);
	if (rc < 0 || t->kind != TU_REG || !upto)
		return rc;
	if (upto > t->size)
		upto = t->size;
	buf = malloc(65536);
	if (!buf)
		return -ENOMEM;
	for (uint64_t off = 0; off < upto && rc == 0;) {
		size_t n = upto - off < 65536 ? (size_t)(upto - off) : 65536;

		tu_fill(buf, t->seed, off, n);
		rc = daxfs_builder_write(b, buf, n, err);
		off += n;
	}
	free(buf);
	return rc;
}

/* Build and publish the whole layer.  err says why on failure. */
static inline int tu_build_spec(struct daxfs *fs, const struct tu_spec *s,
				struct daxfs_err *err)
{
	struct daxfs_layer_builder *b = NULL;
	uint8_t id[32];
	int rc;

	tu_spec_id(s, id);
	rc = daxfs_layer_build(fs, id, &b, err);
	for (size_t i = 0; rc == 0 && i < s->n; i++)
		rc = tu_add_ent(b, &s->ents[i], UINT64_MAX, err);
	if (rc == 0)
		rc = daxfs_builder_publish(b, NULL, err);
	if (rc < 0)
		daxfs_builder_abort(b);	/* a failed publish keeps the builder */
	return rc;
}

/* The last entry of the spec for path (later entries replace earlier). */
static inline const struct tu_ent *tu_spec_final(const struct tu_spec *s,
						  const char *path)
{
	const struct tu_ent *f = NULL;

	for (size_t i = 0; i < s->n; i++)
		if (!strcmp(s->ents[i].path, path))
			f = &s->ents[i];
	return f;
}

/* Compare file ino of l with the pattern (seed, size); 0 when equal. */
static inline int tu_check_data(struct daxfs_layer *l, uint32_t ino,
				uint32_t seed, uint64_t size, char *why, size_t wn)
{
	uint8_t *got = malloc(65536), *want = malloc(65536);
	uint64_t off = 0;
	int rc = 0;

	if (!got || !want) {
		free(got);
		free(want);
		snprintf(why, wn, "out of memory");
		return -1;
	}
	while (off < size) {
		size_t n = size - off < 65536 ? (size_t)(size - off) : 65536;
		ssize_t r = daxfs_pread(l, ino, got, n, off);

		tu_fill(want, seed, off, n);
		if (r != (ssize_t)n || memcmp(got, want, n)) {
			snprintf(why, wn, "data differs at offset %llu (pread %zd of %zu)",
				 (unsigned long long)off, r, n);
			rc = -1;
			break;
		}
		off += n;
	}
	if (rc == 0 && daxfs_pread(l, ino, got, 16, size) != 0) {
		snprintf(why, wn, "data past the end");
		rc = -1;
	}
	free(got);
	free(want);
	return rc;
}

/* Check a READY layer against its spec: every final path, its type,
 * size, data (byte-exact), link target, hardlink identity and xattr.
 * 0 or -1 with why filled. */
static inline int tu_verify_spec(struct daxfs *fs, const struct tu_spec *s,
				 char *why, size_t wn)
{
	struct daxfs_layer *l;
	struct daxfs_err err = { 0 };
	uint8_t id[32];
	int rc;

	tu_spec_id(s, id);
	rc = daxfs_layer_open(fs, id, &l, &err);
	if (rc < 0) {
		snprintf(why, wn, "%s: open: %.200s", s->name, err.msg);
		return -1;
	}
	for (size_t i = 0; i < s->n; i++) {
		const struct tu_ent *t = &s->ents[i], *d = t;
		struct daxfs_stat st;
		uint32_t ino, ino2;
		char xb[256];

		if (tu_spec_final(s, t->path) != t)
			continue;	/* replaced later */
		rc = -1;
		if (daxfs_lookup_path(l, t->path, &ino) < 0 || daxfs_stat(l, ino, &st) < 0) {
			snprintf(why, wn, "%s: %s: not found", s->name, t->path);
			break;
		}
		if (t->kind == TU_HARD) {
			d = tu_spec_final(s, t->link);
			if (!d || daxfs_lookup_path(l, t->link, &ino2) < 0 || ino2 != ino) {
				snprintf(why, wn, "%s: %s: not a hardlink of %s", s->name,
					 t->path, t->link);
				break;
			}
		}
		if (d->kind == TU_DIR && !S_ISDIR(st.mode)) {
			snprintf(why, wn, "%s: %s: not a directory", s->name, t->path);
			break;
		}
		if (d->kind == TU_LNK) {
			const char *tg;
			size_t tl;

			if (!S_ISLNK(st.mode) || daxfs_readlink(l, ino, &tg, &tl) < 0 ||
			    tl != strlen(d->link) || memcmp(tg, d->link, tl)) {
				snprintf(why, wn, "%s: %s: wrong symlink", s->name, t->path);
				break;
			}
		}
		if (d->kind == TU_REG) {
			if (!S_ISREG(st.mode) || st.size != d->size) {
				snprintf(why, wn, "%s: %s: mode %o size %llu, want size %llu",
					 s->name, t->path, st.mode,
					 (unsigned long long)st.size,
					 (unsigned long long)d->size);
				break;
			}
			if (tu_check_data(l, ino, d->seed, d->size, why, wn) < 0) {
				char tmp[256];

				snprintf(tmp, sizeof(tmp), "%.200s", why);
				snprintf(why, wn, "%s: %s: %.200s", s->name, t->path, tmp);
				break;
			}
		}
		if (d->xname) {
			ssize_t n = daxfs_getxattr(l, ino, d->xname, xb, sizeof(xb));

			if (n != (ssize_t)strlen(d->xval) || memcmp(xb, d->xval, (size_t)n)) {
				snprintf(why, wn, "%s: %s: xattr %s differs", s->name,
					 t->path, d->xname);
				break;
			}
		}
		rc = 0;
	}
	daxfs_layer_close(l);
	return rc;
}

/* The scripted layers.  0..2 are built by the test process (host 1) before
 * the writer runs; 3..6 are the writer's (helper_writer.c):
 *   3 shares a file with 0, has new files, a hardlink, a symlink, an
 *     xattr, an empty file and a file replaced by a later entry;
 *   4 holds a large multi-extent file and shares a file with 0;
 *   5 shares with 1 and 3 and has a file of its own; the writer evicts it;
 *   6 is built after the eviction and re-creates 5's own file. */
#define TU_NSPECS 7
#define TU_FIRST_WRITER_SPEC 3
#define TU_BIG_SIZE (3ULL * 1024 * 1024 + 4321)

static inline const struct tu_spec *tu_spec(int i)
{
	static const struct tu_ent p0[] = {
		{ "etc/os-release", TU_REG, 300, 1, NULL, NULL, NULL },
		{ "bin/busybox", TU_REG, 200000, 2, NULL, NULL, NULL },
		{ "bin/sh", TU_LNK, 0, 0, "busybox", NULL, NULL },
		{ "lib/libc.so", TU_REG, 70000, 3, NULL, NULL, NULL },
	};
	static const struct tu_ent p1[] = {
		{ "usr/share/doc/README", TU_REG, 5000, 4, NULL, NULL, NULL },
		{ "lib/libc.so", TU_REG, 70000, 3, NULL, NULL, NULL },
		{ "opt/data.bin", TU_REG, 1 << 20, 5, NULL, NULL, NULL },
	};
	static const struct tu_ent p2[] = {
		{ "srv/www", TU_DIR, 0, 0, NULL, NULL, NULL },
		{ "srv/www/index.html", TU_REG, 1234, 6, NULL, "user.kind", "page" },
	};
	static const struct tu_ent w0[] = {
		{ "bin/busybox", TU_REG, 200000, 2, NULL, NULL, NULL },
		{ "app", TU_DIR, 0, 0, NULL, NULL, NULL },
		{ "app/new1", TU_REG, 4096, 20, NULL, "security.capability", "cap" },
		{ "app/link1", TU_HARD, 0, 0, "app/new1", NULL, NULL },
		{ "app/sym", TU_LNK, 0, 0, "new1", NULL, NULL },
		{ "app/replaced", TU_REG, 3000, 21, NULL, NULL, NULL },
		{ "app/empty", TU_REG, 0, 0, NULL, NULL, NULL },
		{ "app/replaced", TU_REG, 2500, 22, NULL, NULL, NULL },
	};
	static const struct tu_ent w1[] = {
		{ "big/small", TU_REG, 777, 31, NULL, NULL, NULL },
		{ "big/blob", TU_REG, TU_BIG_SIZE, 30, NULL, NULL, NULL },
		{ "etc/os-release", TU_REG, 300, 1, NULL, NULL, NULL },
	};
	static const struct tu_ent w2[] = {
		{ "x/new1copy", TU_REG, 4096, 20, NULL, NULL, NULL },
		{ "x/unique", TU_REG, 9000, 40, NULL, NULL, NULL },
		{ "x/shared", TU_REG, 1 << 20, 5, NULL, NULL, NULL },
	};
	static const struct tu_ent w3[] = {
		{ "y/unique-again", TU_REG, 9000, 40, NULL, NULL, NULL },
		{ "y/f", TU_REG, 100, 41, NULL, NULL, NULL },
	};
#define TU_SPEC(n, k, a) { n, k, a, sizeof(a) / sizeof(a[0]) }
	static const struct tu_spec specs[TU_NSPECS] = {
		TU_SPEC("P0", 100, p0), TU_SPEC("P1", 101, p1), TU_SPEC("P2", 102, p2),
		TU_SPEC("W0", 200, w0), TU_SPEC("W1", 201, w1), TU_SPEC("W2", 202, w2),
		TU_SPEC("W3", 203, w3),
	};
#undef TU_SPEC
	return i >= 0 && i < TU_NSPECS ? &specs[i] : NULL;
}

/* ---- helpers for the concurrency tests ---- */

#include <sched.h>
#include <stdatomic.h>
#include <sys/mman.h>
#include <time.h>

static inline uint64_t tu_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Zeroed memory shared with forked children (test bookkeeping), or NULL. */
static inline void *tu_shared_alloc(size_t len)
{
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE,
		       MAP_SHARED | MAP_ANONYMOUS, -1, 0);

	return p == MAP_FAILED ? NULL : p;
}

/* Like tu_attach, over a region already mapped at buf (several hosts of
 * one process can share a single mapping this way). */
static inline int tu_attach_buffer(void *buf, size_t len, int id,
				   uint32_t lease_ms, struct daxfs **fs)
{
	struct daxfs_open_opts o = { .lease_ms = lease_ms, .grace_ms = lease_ms };
	struct daxfs_err err = { 0 };

	return tu_attach_opened(daxfs_open_buffer(buf, len, &o, fs, &err), fs, id, &err);
}

/* A barrier for n threads or processes (put it in tu_shared_alloc memory
 * for processes).  tu_barrier_wait returns 0, or -1 once any party called
 * tu_barrier_abort or the wait exceeded timeout_ms (which aborts it). */
struct tu_barrier {
	_Atomic uint32_t arrived;
	_Atomic uint32_t gen;
	_Atomic int aborted;
	uint32_t n;
};

static inline void tu_barrier_init(struct tu_barrier *b, uint32_t n)
{
	atomic_init(&b->arrived, 0);
	atomic_init(&b->gen, 0);
	atomic_init(&b->aborted, 0);
	b->n = n;
}

static inline void tu_barrier_abort(struct tu_barrier *b)
{
	atomic_store(&b->aborted, 1);
}

static inline int tu_barrier_wait(struct tu_barrier *b, uint64_t timeout_ms)
{
	uint32_t gen = atomic_load(&b->gen);
	uint64_t start = tu_now_ms(), now = start;
	unsigned spins = 0;

	if (atomic_load(&b->aborted))
		return -1;
	if (atomic_fetch_add(&b->arrived, 1) + 1 == b->n) {
		atomic_store(&b->arrived, 0);
		atomic_fetch_add(&b->gen, 1);
		return 0;
	}
	while (atomic_load(&b->gen) == gen) {
		if (atomic_load(&b->aborted))
			return -1;
		/* Yield for a while before sleeping, so that the parties
		 * leave together and really race. */
		if (++spins % 64 == 0)
			now = tu_now_ms();
		if (now - start < 20) {
			sched_yield();
			continue;
		}
		if (now - start > timeout_ms) {
			fprintf(stderr, "barrier: timed out after %llu ms\n",
				(unsigned long long)timeout_ms);
			tu_barrier_abort(b);
			return -1;
		}
		nanosleep(&(struct timespec){ 0, 50000 }, NULL);
		now = tu_now_ms();
	}
	return atomic_load(&b->aborted) ? -1 : 0;
}

#endif
