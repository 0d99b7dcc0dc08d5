/* Background import of unpacked snapshots: see import.h.
 *
 * Crash safety comes from ordering.  The layer is built through the
 * region's layer builder, whose journal group is rolled back when a dead
 * incarnation is reaped, so a daemon killed mid-import leaves no trace
 * in the region.  The SQLite row moves pending -> ready only after the
 * layer is READY and its chain recorded, so a restart finds the row
 * pending and runs the import again (finding the layer already READY if
 * the crash came after publishing).  A local copy is removed before its
 * row says so, so a crash in between only repeats the removal. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#include "daemon.h"
#include "import.h"
#include "log.h"
#include "pins.h"
#include "ref.h"
#include "snapdir.h"

enum import_state { IMPORT_PENDING = 0, IMPORT_READY = 1, IMPORT_FAILED = 2 };

/* Busy layer claims and a view that does not show the layer yet are
 * retried after this long. */
#define RETRY_MS 200
/* How long one attempt waits for the view to show a new layer (the view
 * rescans twice a second). */
#define VIEW_WAIT_MS 2000
/* The layer key of an imported non-bottom layer, see layer_key. */
#define DERIVED_KEY_PREFIX "daxfs import of chain "

static const char import_schema[] =
	"CREATE TABLE IF NOT EXISTS imports ("
	" snapshot INTEGER PRIMARY KEY REFERENCES snapshots(id) ON DELETE CASCADE,"
	" chain TEXT NOT NULL,"
	" state INTEGER NOT NULL DEFAULT 0,"
	" layer TEXT NOT NULL DEFAULT '',"
	" dir TEXT NOT NULL DEFAULT '',"
	" local INTEGER NOT NULL DEFAULT 1,"
	" error TEXT NOT NULL DEFAULT '');"
	"CREATE TABLE IF NOT EXISTS import_users ("
	" imported INTEGER NOT NULL REFERENCES snapshots(id) ON DELETE CASCADE,"
	" user INTEGER NOT NULL REFERENCES snapshots(id) ON DELETE CASCADE,"
	" PRIMARY KEY (imported, user));"
	"CREATE INDEX IF NOT EXISTS import_users_user ON import_users(user);";

struct importer {
	struct store *store;
	struct daemon *d;	/* NULL without a region */
	struct daxfs *fs;
	struct pins *pins;	/* snapshots.c's region holds; NULL without a region */
	char base[4096];
	char view[4096];
	pthread_t thread;
	int running;
	pthread_mutex_t lock;
	pthread_cond_t wake;
	int kicked;		/* under lock */
	atomic_int stop;	/* also read by a running import, unlocked */
	atomic_uint_fast64_t failures;
};

/* ---- SQL ---- */

static int sql_err(struct importer *im, int rc, const char *what, struct daxfs_err *err)
{
	return daxfs_err_set(err, rc == SQLITE_NOMEM ? -ENOMEM : -EIO, "import records: %s: %s",
			     what, sqlite3_errmsg(store_sqlite(im->store)));
}

static int sql_prepare(struct importer *im, const char *sql, sqlite3_stmt **st,
		       struct daxfs_err *err)
{
	int rc = sqlite3_prepare_v2(store_sqlite(im->store), sql, -1, st, NULL);

	return rc == SQLITE_OK ? 0 : sql_err(im, rc, "prepare", err);
}

/* Run a statement with up to two integer and one text parameter
 * (?1, ?2 integers, ?3 text), expecting no rows. */
static int sql_exec(struct importer *im, const char *sql, int64_t a, int64_t b,
		    const char *text, struct daxfs_err *err)
{
	sqlite3_stmt *st;
	int rc = sql_prepare(im, sql, &st, err);

	if (rc < 0)
		return rc;
	if (sqlite3_bind_parameter_count(st) >= 1)
		sqlite3_bind_int64(st, 1, a);
	if (sqlite3_bind_parameter_count(st) >= 2)
		sqlite3_bind_int64(st, 2, b);
	if (sqlite3_bind_parameter_count(st) >= 3)
		sqlite3_bind_text(st, 3, text ? text : "", -1, SQLITE_STATIC);
	rc = sqlite3_step(st);
	sqlite3_finalize(st);
	return rc == SQLITE_DONE ? 0 : sql_err(im, rc, "write", err);
}

static void copy_text(sqlite3_stmt *st, int col, char *out, size_t len)
{
	const unsigned char *t = sqlite3_column_text(st, col);

	snprintf(out, len, "%s", t ? (const char *)t : "");
}

/* ---- hooks called inside the snapshot store's transactions ---- */

static const char *basename_of(const char *s)
{
	const char *slash = strrchr(s, '/');

	return slash ? slash + 1 : s;
}

/* Is this containerd's unpacker committing layer chain?  Its Prepare key
 * is "extract-<unique> <chainID>" (behind containerd's "NS/ID/"), its
 * Commit name ends in the chainID and the Commit carries the Prepare's
 * containerd.io/snapshot.ref=<chainID>, which containerd only commits
 * after checking the unpacked layer's diff_id. */
static const char *unpacked_chain(const struct snap_info *i, const char *key)
{
	const char *k = basename_of(key), *ref = snap_label_get(i, "containerd.io/snapshot.ref");
	const char *space = strchr(k, ' ');
	uint8_t d[32];

	if (strncmp(k, "extract-", 8) || !space || !ref || strcmp(space + 1, ref) ||
	    strcmp(basename_of(i->name), ref) || digest_parse(ref, d) < 0)
		return NULL;
	return ref;
}

int import_commit(struct importer *im, const struct snap_info *i, const char *key,
		  struct daxfs_err *err)
{
	const char *chain = unpacked_chain(i, key);
	int rc;

	/* Committed: the mounts it was handed are done with. */
	rc = sql_exec(im, "DELETE FROM import_users WHERE user = ?1", i->id, 0, NULL, err);
	if (rc < 0 || !chain)
		return rc;
	return sql_exec(im, "INSERT INTO imports (snapshot, state, chain) VALUES (?1, ?2, ?3)",
			i->id, IMPORT_PENDING, chain, err);
}

int import_files_dir(struct importer *im, const struct snap_info *p, int64_t user, char *out,
		     size_t len, struct daxfs_err *err)
{
	sqlite3_stmt *st;
	int rc = sql_prepare(im, "SELECT state, dir FROM imports WHERE snapshot = ?", &st, err);

	if (rc < 0)
		return rc;
	sqlite3_bind_int64(st, 1, p->id);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW && sqlite3_column_int(st, 0) == IMPORT_READY) {
		copy_text(st, 1, out, len);
		sqlite3_finalize(st);
		return 1;
	}
	sqlite3_finalize(st);
	if (rc == SQLITE_DONE)
		return 0;	/* never to be imported */
	if (rc != SQLITE_ROW)
		return sql_err(im, rc, "read", err);
	/* The local copy goes into this mount: keep it while user exists. */
	return sql_exec(im, "INSERT OR IGNORE INTO import_users (imported, user) VALUES (?1, ?2)",
			p->id, user, NULL, err);
}

int import_describe(struct importer *im, struct snap_info *i, struct daxfs_err *err)
{
	static const char *const names[] = { "pending", "ready", "failed" };
	char layer[80], error[512];
	sqlite3_stmt *st;
	int state = -1, rc = store_begin(im->store, err);

	if (rc < 0)
		return rc;
	rc = sql_prepare(im, "SELECT state, layer, error FROM imports WHERE snapshot = ?", &st,
			 err);
	if (rc == 0) {
		sqlite3_bind_int64(st, 1, i->id);
		rc = sqlite3_step(st);
		if (rc == SQLITE_ROW) {
			state = sqlite3_column_int(st, 0);
			copy_text(st, 1, layer, sizeof(layer));
			copy_text(st, 2, error, sizeof(error));
		}
		rc = rc == SQLITE_ROW || rc == SQLITE_DONE ? 0 : sql_err(im, rc, "read", err);
		sqlite3_finalize(st);
	}
	rc = store_end(im->store, rc, err);
	if (rc < 0 || state < 0)
		return rc;
	if (snap_label_set(i, IMPORT_LABEL_STATE,
			   state >= 0 && state <= 2 ? names[state] : "unknown") < 0 ||
	    snap_label_set(i, IMPORT_LABEL_LAYER, layer) < 0 ||
	    snap_label_set(i, IMPORT_LABEL_ERROR, error) < 0)
		return daxfs_err_set(err, -ENOMEM, "out of memory");
	return 0;
}

/* ---- the upper directory as layer entries ---- */

struct link {
	dev_t dev;
	ino_t ino;
	char *path;		/* relative, the first name seen */
};

struct walker {
	struct importer *im;
	struct daxfs_layer_builder *b;
	struct daxfs_err *err;
	char path[8192];	/* absolute; the layer's root is path[0..root_len) */
	size_t root_len;
	struct link *links;
	size_t nlinks, cap;
	uint8_t buf[65536];
};

struct xattrs {
	char *list;		/* llistxattr's names */
	const char **names;
	const void **values;
	size_t *lens;
	size_t n;
	int opaque;		/* trusted.overlay.opaque=y */
};

static void xattrs_free(struct xattrs *x)
{
	for (size_t k = 0; k < x->n; k++)
		free((void *)x->values[k]);
	free(x->list);
	free(x->names);
	free(x->values);
	free(x->lens);
	memset(x, 0, sizeof(*x));
}

/* The entry's xattrs without overlayfs's private ones (origin, impure,
 * redirect, ...): those describe this host's upper directory, not the
 * layer.  The opaque marker becomes the entry's flag. */
static int xattrs_read(const char *path, struct xattrs *x)
{
	ssize_t len = llistxattr(path, NULL, 0);
	size_t max;

	memset(x, 0, sizeof(*x));
	if (len <= 0)
		return len < 0 && errno != ENOTSUP ? -errno : 0;
	x->list = malloc((size_t)len + 1);
	max = (size_t)len / 2 + 1;
	x->names = calloc(max, sizeof(*x->names));
	x->values = calloc(max, sizeof(*x->values));
	x->lens = calloc(max, sizeof(*x->lens));
	if (!x->list || !x->names || !x->values || !x->lens)
		return -ENOMEM;
	len = llistxattr(path, x->list, (size_t)len);
	if (len < 0)
		return -errno;
	for (char *name = x->list; name < x->list + len; name += strlen(name) + 1) {
		ssize_t vl;
		char *v;

		if (!strncmp(name, "trusted.overlay.", 16)) {
			char y[2];

			if (!strcmp(name, "trusted.overlay.opaque") &&
			    lgetxattr(path, name, y, sizeof(y)) == 1 && y[0] == 'y')
				x->opaque = 1;
			continue;
		}
		vl = lgetxattr(path, name, NULL, 0);
		if (vl < 0)
			return -errno;
		v = malloc((size_t)vl + 1);
		if (!v)
			return -ENOMEM;
		vl = lgetxattr(path, name, v, (size_t)vl);
		if (vl < 0) {
			free(v);
			return -errno;
		}
		x->names[x->n] = name;
		x->values[x->n] = v;
		x->lens[x->n++] = (size_t)vl;
	}
	return 0;
}

/* A second name of an inode already added becomes a hardlink entry. */
static int link_seen(struct walker *w, const struct stat *st, const char *rel,
		     const char **first)
{
	for (size_t k = 0; k < w->nlinks; k++)
		if (w->links[k].dev == st->st_dev && w->links[k].ino == st->st_ino) {
			*first = w->links[k].path;
			return 1;
		}
	if (w->nlinks == w->cap) {
		size_t cap = w->cap ? w->cap * 2 : 16;
		struct link *v = realloc(w->links, cap * sizeof(*v));

		if (!v)
			return -ENOMEM;
		w->links = v;
		w->cap = cap;
	}
	w->links[w->nlinks].path = strdup(rel);
	if (!w->links[w->nlinks].path)
		return -ENOMEM;
	w->links[w->nlinks].dev = st->st_dev;
	w->links[w->nlinks++].ino = st->st_ino;
	return 0;
}

static int copy_data(struct walker *w, const char *rel, uint64_t size)
{
	int fd = open(w->path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC), rc = 0;

	if (fd < 0)
		return daxfs_err_set(w->err, -errno, "%s: %s", rel, strerror(errno));
	while (size && rc == 0) {
		ssize_t n = read(fd, w->buf, size < sizeof(w->buf) ? size : sizeof(w->buf));

		if (n <= 0)
			rc = daxfs_err_set(w->err, n < 0 ? -errno : -EIO, "%s: %s", rel,
					   n < 0 ? strerror(errno) : "file shrank while read");
		else {
			rc = daxfs_builder_write(w->b, w->buf, (size_t)n, w->err);
			size -= (uint64_t)n;
		}
	}
	close(fd);
	return rc;
}

/* Add the entry at w->path; 1 if it is a directory to descend into. */
static int add_path(struct walker *w, size_t len)
{
	const char *rel = len > w->root_len ? w->path + w->root_len + 1 : ".";
	const char *first = NULL;
	struct daxfs_entry e = { 0 };
	char target[4096];
	struct xattrs x;
	struct stat st;
	int rc;

	if (lstat(w->path, &st) < 0)
		return daxfs_err_set(w->err, -errno, "%s: %s", rel, strerror(errno));
	if (S_ISSOCK(st.st_mode))
		return 0;	/* a layer cannot carry sockets */
	e.path = rel;
	e.mode = st.st_mode;
	e.uid = st.st_uid;
	e.gid = st.st_gid;
	e.mtime_sec = st.st_mtim.tv_sec;
	e.mtime_nsec = (uint32_t)st.st_mtim.tv_nsec;
	/* overlayfs's whiteout: a 0:0 character device. */
	if (S_ISCHR(st.st_mode) && st.st_rdev == makedev(0, 0)) {
		e.whiteout = 1;
		return daxfs_builder_add(w->b, &e, w->err);
	}
	if (!S_ISDIR(st.st_mode) && st.st_nlink > 1) {
		rc = link_seen(w, &st, rel, &first);
		if (rc < 0)
			return daxfs_err_set(w->err, rc, "out of memory");
		if (rc == 1) {
			e.hardlink = 1;
			e.link = first;
			return daxfs_builder_add(w->b, &e, w->err);
		}
	}
	e.rdev_major = major(st.st_rdev);
	e.rdev_minor = minor(st.st_rdev);
	if (S_ISLNK(st.st_mode)) {
		ssize_t n = readlink(w->path, target, sizeof(target) - 1);

		if (n < 0)
			return daxfs_err_set(w->err, -errno, "%s: %s", rel, strerror(errno));
		target[n] = 0;
		e.link = target;
	} else if (S_ISREG(st.st_mode)) {
		e.size = (uint64_t)st.st_size;
	}
	rc = xattrs_read(w->path, &x);
	if (rc < 0) {
		xattrs_free(&x);
		return daxfs_err_set(w->err, rc, "%s: xattrs: %s", rel, strerror(-rc));
	}
	e.opaque = S_ISDIR(st.st_mode) && x.opaque;
	e.nxattrs = x.n;
	e.xattr_names = x.names;
	e.xattr_values = x.values;
	e.xattr_lens = x.lens;
	rc = daxfs_builder_add(w->b, &e, w->err);
	xattrs_free(&x);
	if (rc == 0 && e.size)
		rc = copy_data(w, rel, e.size);
	return rc < 0 ? rc : S_ISDIR(st.st_mode);
}

static int not_dots(const struct dirent *d)
{
	return strcmp(d->d_name, ".") && strcmp(d->d_name, "..");
}

/* Add the entries under the directory w->path (of length len), parents
 * before their children as in a tar. */
static int walk_dir(struct walker *w, size_t len)
{
	struct dirent **names;
	int n = scandir(w->path, &names, not_dots, alphasort), rc = 0;

	if (n < 0)
		return daxfs_err_set(w->err, -errno, "%s: %s", w->path, strerror(errno));
	for (int k = 0; k < n; k++) {
		size_t nl = strlen(names[k]->d_name);

		if (rc == 0 && atomic_load_explicit(&w->im->stop, memory_order_relaxed))
			rc = daxfs_err_set(w->err, -ECANCELED, "daxfsd is stopping");
		if (rc == 0 && len + 1 + nl >= sizeof(w->path))
			rc = daxfs_err_set(w->err, -ENAMETOOLONG, "%s/%s: path too long",
					   w->path, names[k]->d_name);
		if (rc == 0) {
			w->path[len] = '/';
			memcpy(w->path + len + 1, names[k]->d_name, nl + 1);
			rc = add_path(w, len + 1 + nl);
			if (rc == 1)
				rc = walk_dir(w, len + 1 + nl);
			w->path[len] = 0;
		}
		free(names[k]);
	}
	free(names);
	return rc;
}

/* Build layer key from directory dir and publish it. */
static int build_layer(struct importer *im, const uint8_t key[32], const char *dir,
		       struct daxfs_err *err)
{
	struct walker *w = calloc(1, sizeof(*w));
	uint64_t serial;
	int rc;

	if (!w)
		return daxfs_err_set(err, -ENOMEM, "out of memory");
	w->im = im;
	w->err = err;
	w->root_len = (size_t)snprintf(w->path, sizeof(w->path), "%s", dir);
	rc = daxfs_layer_build(im->fs, key, &w->b, err);
	if (rc == 0)
		rc = add_path(w, w->root_len);
	if (rc >= 0)
		rc = walk_dir(w, w->root_len);
	if (rc == 0) {
		rc = daxfs_builder_publish(w->b, &serial, err);
		if (rc == 0)
			w->b = NULL;	/* published: the builder is gone */
	}
	daxfs_builder_abort(w->b);
	for (size_t k = 0; k < w->nlinks; k++)
		free(w->links[k].path);
	free(w->links);
	free(w);
	return rc;
}

/* ---- one import ---- */

struct job {
	int64_t id;
	char name[4096];
	char chain[72];
	char parent_chain[72];	/* "" for a bottom layer */
	uint64_t ancestors;
	char dir[4200];		/* the local copy */
};

/* The chain of the parent: recorded with its import, or the name of a
 * snapshot that came from the region (named by its chainID). */
static int parent_chain(struct importer *im, int64_t parent, struct job *j,
			struct daxfs_err *err)
{
	struct snap_info p;
	sqlite3_stmt *st;
	uint8_t d[32];
	int rc = sql_prepare(im, "SELECT chain FROM imports WHERE snapshot = ?", &st, err);

	if (rc < 0)
		return rc;
	sqlite3_bind_int64(st, 1, parent);
	if (sqlite3_step(st) == SQLITE_ROW)
		copy_text(st, 0, j->parent_chain, sizeof(j->parent_chain));
	sqlite3_finalize(st);
	rc = store_get_id(im->store, parent, &p, err);
	if (rc < 0)
		return rc;
	if (!j->parent_chain[0] && p.dir[0] && digest_parse(basename_of(p.name), d) == 0)
		snprintf(j->parent_chain, sizeof(j->parent_chain), "%s", basename_of(p.name));
	if (!j->parent_chain[0])
		rc = daxfs_err_set(err, -EINVAL, "parent snapshot %s is not a layer of the region",
				   p.name);
	for (int64_t id = p.parent_id; rc == 0 && id; j->ancestors++) {
		struct snap_info a;

		rc = store_get_id(im->store, id, &a, err);
		id = rc == 0 ? a.parent_id : 0;
		snap_info_free(&a);
	}
	j->ancestors++;
	snap_info_free(&p);
	return rc;
}

/* The oldest pending import: 1 with j filled, 0 if none. */
static int next_job(struct importer *im, struct job *j, struct daxfs_err *err)
{
	sqlite3_stmt *st;
	int64_t parent = 0;
	int rc;

	memset(j, 0, sizeof(*j));
	rc = sql_prepare(im, "SELECT i.snapshot, i.chain, coalesce(s.parent, 0), s.name"
			     " FROM imports i JOIN snapshots s ON s.id = i.snapshot"
			     " WHERE i.state = 0 ORDER BY i.snapshot LIMIT 1", &st, err);

	if (rc < 0)
		return rc;
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		j->id = sqlite3_column_int64(st, 0);
		copy_text(st, 1, j->chain, sizeof(j->chain));
		parent = sqlite3_column_int64(st, 2);
		copy_text(st, 3, j->name, sizeof(j->name));
	}
	sqlite3_finalize(st);
	if (rc == SQLITE_DONE)
		return 0;
	if (rc != SQLITE_ROW)
		return sql_err(im, rc, "read", err);
	snapdir_path(im->base, j->id, "fs", j->dir, sizeof(j->dir));
	if (parent) {
		rc = parent_chain(im, parent, j, err);
		if (rc < 0)
			return rc;
	}
	return 1;
}

/* The layer record's key.  A region layer is keyed by its diff_id, which
 * Commit does not pass.  A chain the region already has names its layer;
 * a bottom layer's chainID is its diff_id; any other layer is keyed by
 * sha256("daxfs import of chain " + chainID).  That input is shorter
 * than one 512-byte tar block, so the key can never equal the diff_id of
 * a real layer (the digest of a whole tar stream). */
static void layer_key(struct importer *im, const struct job *j, uint8_t key[32],
		      uint64_t *depth)
{
	struct daxfs_chain_info ci;
	uint8_t chain[32];
	unsigned int n = 32;
	EVP_MD_CTX *md;

	digest_parse(j->chain, chain);
	*depth = j->ancestors + 1;
	if (j->parent_chain[0] && digest_parse(j->parent_chain, ci.chain_id) == 0 &&
	    daxfs_chain_get(im->fs, ci.chain_id, &ci) == 0)
		*depth = ci.depth + 1;
	if (daxfs_chain_get(im->fs, chain, &ci) == 0) {
		memcpy(key, ci.diff_id, 32);
		return;
	}
	if (!j->parent_chain[0]) {
		memcpy(key, chain, 32);
		return;
	}
	md = EVP_MD_CTX_new();
	if (!md || EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1 ||
	    EVP_DigestUpdate(md, DERIVED_KEY_PREFIX, strlen(DERIVED_KEY_PREFIX)) != 1 ||
	    EVP_DigestUpdate(md, j->chain, strlen(j->chain)) != 1 ||
	    EVP_DigestFinal_ex(md, key, &n) != 1)
		memset(key, 0, 32);	/* no sha256: the build fails on the zero key */
	EVP_MD_CTX_free(md);
}

/* The layer's directory in the view, once the view shows it. */
static int view_dir(struct importer *im, const uint8_t key[32], char *out, size_t len)
{
	struct daxfs_layer_info li;
	struct stat st;
	char id[16];

	if (daxfs_layer_info(im->fs, key, &li, NULL) < 0 || li.state != 2 /* READY */)
		return -EAGAIN;
	daxfs_short_id(li.serial, id);
	snprintf(out, len, "%s/l/%s", im->view, id);
	for (int waited = 0; stat(out, &st) < 0 || !S_ISDIR(st.st_mode); waited += 50) {
		struct timespec ts = { 0, 50000000 };

		if (waited >= VIEW_WAIT_MS || atomic_load_explicit(&im->stop, memory_order_relaxed))
			return -EAGAIN;
		nanosleep(&ts, NULL);
	}
	return 0;
}

/* Build the layer, making room first as a pull does: evict unheld layers
 * below the low watermark, and once more after the region filled up (the
 * failed build was rolled back); with nothing to evict, the region-full
 * error names what holds the space. */
static int build_with_room(struct importer *im, const uint8_t key[32], const char *dir,
			   struct daxfs_err *err)
{
	int rc = region_make_room(im->d, 0, 0, err);

	if (rc < 0)
		return rc;
	rc = build_layer(im, key, dir, err);
	if (rc != -ENOSPC)
		return rc;
	memset(err, 0, sizeof(*err));
	rc = region_make_room(im->d, 0, 1, err);
	return rc < 0 ? rc : build_layer(im, key, dir, err);
}

/* Import j: 0 done, -EAGAIN to retry later, other -errno failed. */
static int run_job(struct importer *im, const struct job *j, uint8_t key[32], char *dir,
		   size_t len, struct daxfs_err *err)
{
	struct daxfs_chain_info ci = { 0 };
	int rc;

	layer_key(im, j, key, &ci.depth);
	rc = build_with_room(im, key, j->dir, err);
	if (rc == -EBUSY || rc == -ECANCELED)
		return -EAGAIN;	/* another host builds it, or we stop */
	/* -EEXIST: READY already (another host won, or our previous run
	 * published it before dying): the region's copy serves. */
	if (rc < 0 && rc != -EEXIST)
		return rc;
	memset(err, 0, sizeof(*err));
	digest_parse(j->chain, ci.chain_id);
	if (j->parent_chain[0])
		digest_parse(j->parent_chain, ci.parent);
	memcpy(ci.diff_id, key, 32);
	rc = daxfs_chain_put(im->fs, &ci, err);
	if (rc < 0)
		return rc == -ENOENT ? -EAGAIN : rc;	/* evicted meanwhile */
	return view_dir(im, key, dir, len);
}

static void finish_job(struct importer *im, const struct job *j, int rc, const uint8_t key[32],
		       const char *dir, struct daxfs_err *err)
{
	struct daxfs_err serr = { 0 };
	char layer[72];
	bool recorded = false;
	int r;

	digest_format(key, layer);
	r = store_begin(im->store, &serr);
	if (r == 0 && rc == 0)
		r = sql_exec(im, "UPDATE imports SET state = 1, dir = ?3 WHERE snapshot = ?1"
			     " AND state = 0", j->id, 0, dir, &serr);
	if (r == 0 && rc == 0)
		r = sql_exec(im, "UPDATE imports SET layer = ?3 WHERE snapshot = ?1", j->id, 0,
			     layer, &serr);
	/* The record names its layer from now on: Remove releases the hold
	 * taken below, and the next start takes it again. */
	if (r == 0 && rc == 0)
		r = sql_exec(im, "UPDATE snapshots SET layer = ?3 WHERE id = ?1", j->id, 0,
			     layer, &serr);
	if (r == 0 && rc == 0)
		recorded = sqlite3_changes(store_sqlite(im->store)) > 0;
	if (r == 0 && rc < 0)
		r = sql_exec(im, "UPDATE imports SET state = 2, error = ?3 WHERE snapshot = ?1"
			     " AND state = 0", j->id, 0, err->msg[0] ? err->msg : strerror(-rc),
			     &serr);
	r = store_end(im->store, r, &serr);
	/* Removed meanwhile (or not recorded): nobody releases the hold. */
	if (rc == 0 && im->pins && !recorded)
		pins_release(im->pins, key);
	if (r < 0) {
		log_warn("import of snapshot %s: %s", j->name, serr.msg);
		return;
	}
	if (rc == 0) {
		log_info("snapshot %s imported into the region as layer %s (%s)", j->name, layer,
			 dir);
		return;
	}
	log_warn("import of snapshot %s failed (%" PRIuFAST64 " failed imports so far); "
		 "its local copy stays: %s", j->name,
		 atomic_fetch_add_explicit(&im->failures, 1, memory_order_relaxed) + 1,
		 err->msg[0] ? err->msg : strerror(-rc));
}

/* 1 after an import (look for more), 0 if there is none, -EAGAIN if one
 * has to wait. */
static int import_next(struct importer *im)
{
	struct daxfs_err err = { 0 }, serr = { 0 };
	char dir[4200] = "";
	uint8_t key[32] = { 0 };
	struct job j;
	int found, rc = store_begin(im->store, &serr);

	if (rc < 0) {
		log_warn("imports: %s", serr.msg);
		return -EAGAIN;
	}
	found = next_job(im, &j, &err);
	/* Only read: committing or rolling back is the same. */
	store_end(im->store, 0, &serr);
	if (found == 0)
		return 0;
	if (found < 0 && !j.id) {
		log_warn("imports: %s", err.msg);
		return -EAGAIN;
	}
	/* A job whose parent is unusable fails, or it would block the rest. */
	rc = found < 0 ? found : run_job(im, &j, key, dir, sizeof(dir), &err);
	/* Hold the layer before the record says it is in the region, so no
	 * host can evict it once mounts name it; if it went meanwhile, the
	 * next round builds it again. */
	if (rc == 0 && im->pins && pins_hold(im->pins, key, &err) < 0)
		rc = -EAGAIN;
	if (rc == -EAGAIN) {
		log_debug("import of snapshot %s waits: %s", j.name, err.msg[0] ? err.msg :
			  "the view does not show the layer yet");
		return -EAGAIN;
	}
	finish_job(im, &j, rc, key, dir, &err);
	return 1;
}

/* Remove the local copies of imported snapshots no mount uses. */
static void drop_unused(struct importer *im)
{
	struct daxfs_err err = { 0 };
	int64_t ids[64];
	size_t n = 0;
	sqlite3_stmt *st = NULL;
	int rc = store_begin(im->store, &err);

	if (rc == 0)
		rc = sql_prepare(im, "SELECT snapshot FROM imports i WHERE state = 1 AND local = 1"
				 " AND NOT EXISTS (SELECT 1 FROM import_users u"
				 " WHERE u.imported = i.snapshot) LIMIT 64", &st, &err);
	while (rc == 0 && sqlite3_step(st) == SQLITE_ROW)
		ids[n++] = sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	rc = store_end(im->store, rc, &err);
	for (size_t k = 0; k < n && rc == 0; k++) {
		snapdir_remove(im->base, ids[k]);
		rc = store_begin(im->store, &err);
		if (rc == 0)
			rc = sql_exec(im, "UPDATE imports SET local = 0 WHERE snapshot = ?1", ids[k],
				      0, NULL, &err);
		rc = store_end(im->store, rc, &err);
		if (rc == 0)
			log_debug("local copy of imported snapshot #%lld removed",
				  (long long)ids[k]);
	}
	if (rc < 0)
		log_warn("imports: %s", err.msg);
}

/* ---- the thread ---- */

static void wait_ms(struct importer *im, int ms)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	ts.tv_sec += ms / 1000;
	ts.tv_nsec += (long)(ms % 1000) * 1000000;
	if (ts.tv_nsec >= 1000000000) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000;
	}
	pthread_cond_timedwait(&im->wake, &im->lock, &ts);
}

static void *import_main(void *arg)
{
	struct importer *im = arg;

	pthread_mutex_lock(&im->lock);
	while (!atomic_load_explicit(&im->stop, memory_order_relaxed)) {
		int rc;

		im->kicked = 0;
		pthread_mutex_unlock(&im->lock);
		drop_unused(im);
		rc = import_next(im);
		pthread_mutex_lock(&im->lock);
		if (rc == 1 || im->kicked || atomic_load_explicit(&im->stop, memory_order_relaxed))
			continue;
		if (rc == 0)
			pthread_cond_wait(&im->wake, &im->lock);
		else
			wait_ms(im, RETRY_MS);
	}
	pthread_mutex_unlock(&im->lock);
	return NULL;
}

void import_kick(struct importer *im)
{
	if (!im || !im->running)
		return;
	pthread_mutex_lock(&im->lock);
	im->kicked = 1;
	pthread_cond_signal(&im->wake);
	pthread_mutex_unlock(&im->lock);
}

uint64_t import_failures(const struct importer *im)
{
	return im ? atomic_load_explicit(&((struct importer *)im)->failures,
					 memory_order_relaxed) : 0;
}

int import_open(struct store *store, struct daemon *d, struct pins *pins, const char *base,
		const char *view, struct importer **out, struct daxfs_err *err)
{
	struct importer *im = calloc(1, sizeof(*im));
	pthread_condattr_t ca;
	char *msg = NULL;
	int rc;

	if (!im)
		return daxfs_err_set(err, -ENOMEM, "out of memory");
	im->store = store;
	im->d = d;
	im->fs = d ? d->fs : NULL;
	im->pins = pins;
	snprintf(im->base, sizeof(im->base), "%s", base);
	snprintf(im->view, sizeof(im->view), "%s", view);
	rc = store_begin(store, err);
	if (rc == 0 && sqlite3_exec(store_sqlite(store), import_schema, NULL, NULL, &msg) !=
	    SQLITE_OK)
		rc = daxfs_err_set(err, -EIO, "import records: %s", msg ? msg : "out of memory");
	sqlite3_free(msg);
	rc = store_end(store, rc, err);
	if (rc < 0) {
		free(im);
		return rc;
	}
	pthread_mutex_init(&im->lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&im->wake, &ca);
	pthread_condattr_destroy(&ca);
	if (im->fs) {
		rc = pthread_create(&im->thread, NULL, import_main, im);
		if (rc) {
			import_close(im);
			return daxfs_err_set(err, -rc, "import thread: %s", strerror(rc));
		}
		im->running = 1;
	}
	*out = im;
	return 0;
}

void import_close(struct importer *im)
{
	if (!im)
		return;
	if (im->running) {
		pthread_mutex_lock(&im->lock);
		atomic_store_explicit(&im->stop, 1, memory_order_relaxed);
		pthread_cond_signal(&im->wake);
		pthread_mutex_unlock(&im->lock);
		pthread_join(im->thread, NULL);
	}
	pthread_cond_destroy(&im->wake);
	pthread_mutex_destroy(&im->lock);
	free(im);
}
