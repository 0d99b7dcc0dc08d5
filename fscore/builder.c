/* Building a layer: tar entries in, an immutable tree out.
 *
 * The tree is assembled in process memory (tar order: later entries
 * replace earlier ones, hardlinks name earlier entries, parents appear
 * implicitly) while file data streams straight into the region.  Publish
 * writes the tree in one allocation and turns the layer READY with one
 * CAS.  Everything the builder allocates or references is in its journal
 * group, so an abort, or a reaper after a crash, undoes exactly that. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "alloc.h"
#include "cache.h"
#include "content.h"
#include "crc32c.h"
#include "hash.h"
#include "host.h"
#include "layer.h"
#include "reap.h"

struct bxattr {
	char *name;
	void *value;
	uint32_t len;
};

struct binode {
	uint32_t mode, uid, gid, flags, rdev_major, rdev_minor, mtime_nsec;
	uint32_t nlink;
	int64_t mtime_sec;
	uint64_t size;
	uint64_t content;	/* record offset (regular files) */
	char *link;		/* symlink target */
	struct bxattr *xattrs;
	uint32_t nxattrs;
	uint32_t *kids;		/* directories: dirent indexes */
	uint32_t nkids, capkids;
	uint32_t out;		/* index in the written inode table */
};

struct bdent {
	char *name;
	uint32_t len;		/* strlen(name) */
	uint32_t dir;		/* the directory holding it */
	uint32_t ino;
	bool gone;
};

struct daxfs_layer_builder;
static void builder_free(struct daxfs_layer_builder *b);

struct daxfs_layer_builder {
	struct daxfs *fs;
	struct jctx j;
	int ctx;
	uint64_t rec;
	uint64_t serial;
	uint32_t group;
	struct binode *inodes;
	uint32_t ninodes, capinodes;
	struct bdent *dents;
	uint32_t ndents, capdents;
	/* Dirent indexes by (directory, name), open addressing; DENT_NONE
	 * marks a free slot.  Kept under half full. */
	uint32_t *index;
	uint32_t index_cap;
	struct content_writer w;
	bool writing;
	uint32_t writing_ino;
	uint64_t files, bytes;
	struct { int64_t seq; uint64_t rec; } *deferred;
	uint32_t ndeferred, capdeferred;
};

static int grow(void **p, uint32_t *cap, uint32_t need, size_t elem)
{
	uint32_t n;
	void *q;

	if (need <= *cap)
		return 0;
	n = *cap ? *cap * 2 : 64;
	while (n < need)
		n *= 2;
	q = realloc(*p, (size_t)n * elem);
	if (!q)
		return -ENOMEM;
	*p = q;
	*cap = n;
	return 0;
}

static int new_inode(struct daxfs_layer_builder *b, uint32_t mode, uint32_t *out)
{
	struct binode *n;

	if (grow((void **)&b->inodes, &b->capinodes, b->ninodes + 1, sizeof(*n)))
		return -ENOMEM;
	n = &b->inodes[b->ninodes];
	memset(n, 0, sizeof(*n));
	n->mode = mode;
	*out = b->ninodes++;
	return 0;
}

/* Name lookups go through a hash of (directory, name) rather than a scan
 * of the directory's entries: a layer with a large directory (tens of
 * thousands of files, as in some /usr/share trees) would otherwise cost
 * time quadratic in its size. */
#define DENT_NONE UINT32_MAX

static uint64_t dent_hash(uint32_t dir, const char *name, size_t len)
{
	uint64_t h = 0xcbf29ce484222325ULL ^ ((uint64_t)dir * 0x9e3779b97f4a7c15ULL);

	for (size_t i = 0; i < len; i++)
		h = (h ^ (uint8_t)name[i]) * 0x100000001b3ULL;	/* FNV-1a */
	return h ^ (h >> 31);
}

static void index_put(uint32_t *index, uint32_t cap, const struct bdent *e,
		      uint32_t dent)
{
	uint64_t i = dent_hash(e->dir, e->name, e->len);

	while (index[i & (cap - 1)] != DENT_NONE)
		i++;
	index[i & (cap - 1)] = dent;
}

/* Room in the index for one more entry.  Removed entries are left out
 * when it is rebuilt: they are never found again. */
static int index_reserve(struct daxfs_layer_builder *b)
{
	uint32_t cap = b->index_cap ? b->index_cap : 256, *idx;

	if ((uint64_t)(b->ndents + 1) * 2 <= b->index_cap)
		return 0;
	while ((uint64_t)(b->ndents + 1) * 2 > cap) {
		if (cap > UINT32_MAX / 2)
			return -ENOMEM;
		cap *= 2;
	}
	idx = malloc((size_t)cap * sizeof(*idx));
	if (!idx)
		return -ENOMEM;
	memset(idx, 0xff, (size_t)cap * sizeof(*idx));	/* all DENT_NONE */
	for (uint32_t i = 0; i < b->ndents; i++)
		if (!b->dents[i].gone)
			index_put(idx, cap, &b->dents[i], i);
	free(b->index);
	b->index = idx;
	b->index_cap = cap;
	return 0;
}

static int find_kid(struct daxfs_layer_builder *b, uint32_t dir,
		    const char *name, size_t len, uint32_t *dent)
{
	uint64_t i;

	if (!b->index_cap)
		return -ENOENT;
	for (i = dent_hash(dir, name, len);; i++) {
		uint32_t k = b->index[i & (b->index_cap - 1)];
		struct bdent *e;

		if (k == DENT_NONE)
			return -ENOENT;
		e = &b->dents[k];
		if (!e->gone && e->dir == dir && e->len == len &&
		    !memcmp(e->name, name, len)) {
			*dent = k;
			return 0;
		}
	}
}

static int add_kid(struct daxfs_layer_builder *b, uint32_t dir,
		   const char *name, size_t len, uint32_t ino)
{
	struct binode *d = &b->inodes[dir];
	struct bdent *e;

	if (len > UINT32_MAX ||
	    grow((void **)&b->dents, &b->capdents, b->ndents + 1, sizeof(*e)) ||
	    grow((void **)&d->kids, &d->capkids, d->nkids + 1, sizeof(uint32_t)) ||
	    index_reserve(b))
		return -ENOMEM;
	e = &b->dents[b->ndents];
	e->name = strndup(name, len);
	if (!e->name)
		return -ENOMEM;
	e->len = (uint32_t)len;
	e->dir = dir;
	e->ino = ino;
	e->gone = false;
	index_put(b->index, b->index_cap, e, b->ndents);
	d->kids[d->nkids++] = b->ndents++;
	b->inodes[ino].nlink++;
	return 0;
}

static void unlink_dent(struct daxfs_layer_builder *b, uint32_t dent)
{
	struct bdent *e = &b->dents[dent];

	e->gone = true;
	b->inodes[e->ino].nlink--;
}

/* A path cut into components: buf holds them NUL-separated. */
struct npath {
	char *buf;
	char **part;
	size_t n;
};

static void npath_free(struct npath *p)
{
	free(p->buf);
	free(p->part);
	memset(p, 0, sizeof(*p));
}

/* Split path into components; "." and empty ones vanish.  ".." is kept:
 * whether it may climb depends on where the walk stands. */
static int npath_split(const char *path, struct npath *p)
{
	size_t len = strlen(path);
	char *s;

	memset(p, 0, sizeof(*p));
	p->buf = strdup(path);
	p->part = calloc(len / 2 + 2, sizeof(char *));
	if (!p->buf || !p->part) {
		npath_free(p);
		return -ENOMEM;
	}
	for (s = p->buf; *s;) {
		char *e = strchr(s, '/');

		if (e)
			*e = 0;
		if (*s && strcmp(s, "."))
			p->part[p->n++] = s;
		if (!e)
			break;
		s = e + 1;
	}
	return 0;
}

#define MAX_HOPS 40

static int walk(struct daxfs_layer_builder *b, uint32_t *dir, char **part,
		size_t n, const char *entry, int *hops, struct daxfs_err *err);

/* Follow a symlink met in the middle of a path, from directory dir. */
static int follow(struct daxfs_layer_builder *b, uint32_t *dir,
		  const char *target, const char *entry, int *hops,
		  struct daxfs_err *err)
{
	struct npath t;
	int rc;

	if (++*hops > MAX_HOPS)
		return daxfs_err_set(err, -ELOOP, "entry '%s': too many symlinks",
				     entry);
	rc = npath_split(target, &t);
	if (rc < 0)
		return rc;
	if (target[0] == '/')
		*dir = 0;
	rc = walk(b, dir, t.part, t.n, entry, hops, err);
	npath_free(&t);
	return rc;
}

static uint32_t parent_of(struct daxfs_layer_builder *b, uint32_t dir)
{
	return (uint32_t)b->inodes[dir].content;	/* directories keep it here */
}

static int implicit_dir(struct daxfs_layer_builder *b, uint32_t dir,
			const char *name, uint32_t *out)
{
	uint32_t ino;
	int rc = new_inode(b, S_IFDIR | 0755, &ino);

	if (rc < 0)
		return rc;
	b->inodes[ino].content = dir;
	rc = add_kid(b, dir, name, strlen(name), ino);
	*out = ino;
	return rc;
}

/* Walk directories part[0..n) from *dir, creating missing ones and
 * following symlinks that stay inside the layer. */
static int walk(struct daxfs_layer_builder *b, uint32_t *dir, char **part,
		size_t n, const char *entry, int *hops, struct daxfs_err *err)
{
	for (size_t i = 0; i < n; i++) {
		uint32_t dent, ino;
		struct binode *node;
		int rc;

		if (!strcmp(part[i], "..")) {
			if (*dir == 0)
				return daxfs_err_set(err, -EPERM,
						     "entry '%s' escapes the layer root",
						     entry);
			*dir = parent_of(b, *dir);
			continue;
		}
		if (find_kid(b, *dir, part[i], strlen(part[i]), &dent) < 0) {
			rc = implicit_dir(b, *dir, part[i], dir);
			if (rc < 0)
				return rc;
			continue;
		}
		ino = b->dents[dent].ino;
		node = &b->inodes[ino];
		if (S_ISDIR(node->mode)) {
			*dir = ino;
		} else if (S_ISLNK(node->mode)) {
			rc = follow(b, dir, node->link, entry, hops, err);
			if (rc < 0)
				return rc;
		} else {
			return daxfs_err_set(err, -ENOTDIR,
					     "entry '%s': '%s' is not a directory",
					     entry, part[i]);
		}
	}
	return 0;
}

/* Resolve everything but the last component of path; *last is it. */
static int resolve_parent(struct daxfs_layer_builder *b, const char *path,
			  struct npath *np, uint32_t *dir, const char **last,
			  struct daxfs_err *err)
{
	int hops = 0, rc;

	rc = npath_split(path, np);
	if (rc < 0)
		return rc;
	if (np->n == 0) {
		*dir = 0;
		*last = NULL;
		return 0;
	}
	*last = np->part[np->n - 1];
	if (!strcmp(*last, ".."))
		return daxfs_err_set(err, -EINVAL, "entry '%s' names '..'", path);
	*dir = 0;
	return walk(b, dir, np->part, np->n - 1, path, &hops, err);
}

static void set_attrs(struct binode *n, const struct daxfs_entry *e)
{
	n->uid = e->uid;
	n->gid = e->gid;
	n->mtime_sec = e->mtime_sec;
	n->mtime_nsec = e->mtime_nsec;
	n->rdev_major = e->rdev_major;
	n->rdev_minor = e->rdev_minor;
}

static void xattrs_clear(struct binode *n)
{
	for (uint32_t i = 0; i < n->nxattrs; i++) {
		free(n->xattrs[i].name);
		free(n->xattrs[i].value);
	}
	free(n->xattrs);
	n->xattrs = NULL;
	n->nxattrs = 0;
}

static int set_xattrs(struct binode *n, const struct daxfs_entry *e,
		      struct daxfs_err *err)
{
	xattrs_clear(n);
	if (!e->nxattrs)
		return 0;
	n->xattrs = calloc(e->nxattrs, sizeof(*n->xattrs));
	if (!n->xattrs)
		return -ENOMEM;
	for (size_t i = 0; i < e->nxattrs; i++) {
		struct bxattr *x = &n->xattrs[n->nxattrs];

		if (strlen(e->xattr_names[i]) > 255 || e->xattr_lens[i] > 65536)
			return daxfs_err_set(err, -E2BIG, "entry '%s': xattr too large",
					     e->path);
		x->name = strdup(e->xattr_names[i]);
		x->value = malloc(e->xattr_lens[i] ? e->xattr_lens[i] : 1);
		if (!x->name || !x->value) {
			free(x->name);
			free(x->value);
			return -ENOMEM;
		}
		memcpy(x->value, e->xattr_values[i], e->xattr_lens[i]);
		x->len = (uint32_t)e->xattr_lens[i];
		n->nxattrs++;
	}
	return 0;
}

/* End the regular file being written, if any. */
static int finish_file(struct daxfs_layer_builder *b, struct daxfs_err *err)
{
	uint64_t rec;
	int rc;

	if (!b->writing)
		return 0;
	b->writing = false;
	rc = content_end(&b->w, &rec);
	if (rc < 0) {
		content_abort(&b->w);
		return daxfs_err_set(err, rc, "storing file data: %s",
				     strerror(-rc));
	}
	b->inodes[b->writing_ino].content = rec;
	return 0;
}

static int add_hardlink(struct daxfs_layer_builder *b, uint32_t dir,
			const char *name, const struct daxfs_entry *e,
			struct daxfs_err *err)
{
	struct npath np;
	const char *last;
	uint32_t tdir, dent, ino;
	int rc;

	rc = resolve_parent(b, e->link, &np, &tdir, &last, err);
	if (rc == 0 && (!last || find_kid(b, tdir, last, strlen(last), &dent) < 0))
		rc = daxfs_err_set(err, -ENOENT,
				   "hardlink '%s' names '%s', which is not in the layer",
				   e->path, e->link);
	npath_free(&np);
	if (rc < 0)
		return rc;
	ino = b->dents[dent].ino;
	if (S_ISDIR(b->inodes[ino].mode))
		return daxfs_err_set(err, -EPERM, "hardlink '%s' to a directory",
				     e->path);
	if (find_kid(b, dir, name, strlen(name), &dent) == 0) {
		if (b->dents[dent].ino == ino)
			return 0;
		unlink_dent(b, dent);
	}
	return add_kid(b, dir, name, strlen(name), ino);
}

/* Attributes of a node as the entry gives them. */
static int node_fill(struct binode *n, const struct daxfs_entry *e,
		     uint32_t mode, struct daxfs_err *err)
{
	n->mode = mode;
	set_attrs(n, e);
	if (e->whiteout)
		n->flags |= DFS_IF_WHITEOUT;
	if (e->opaque)
		n->flags |= DFS_IF_OPAQUE;
	return set_xattrs(n, e, err);
}

/* Add (or update) entry name of dir; *out is its inode. */
static int add_node(struct daxfs_layer_builder *b, uint32_t dir,
		    const char *name, const struct daxfs_entry *e,
		    uint32_t *out, struct daxfs_err *err)
{
	bool is_dir = S_ISDIR(e->mode) || e->opaque;
	uint32_t mode = e->whiteout ? S_IFCHR : e->mode, dent, ino;
	int rc;

	if (is_dir)
		mode = S_IFDIR | (e->mode & 07777);
	if (find_kid(b, dir, name, strlen(name), &dent) == 0) {
		ino = b->dents[dent].ino;
		*out = ino;
		if (is_dir && S_ISDIR(b->inodes[ino].mode)) {
			/* A directory again: keep its entries.  An opaque
			 * marker alone only sets the flag. */
			if (e->opaque && !S_ISDIR(e->mode)) {
				b->inodes[ino].flags |= DFS_IF_OPAQUE;
				return 0;
			}
			return node_fill(&b->inodes[ino], e, mode, err);
		}
		unlink_dent(b, dent);
	}
	rc = new_inode(b, mode, &ino);
	if (rc < 0)
		return rc;
	*out = ino;
	if (is_dir)
		b->inodes[ino].content = dir;	/* parent, see parent_of */
	rc = add_kid(b, dir, name, strlen(name), ino);
	if (rc < 0)
		return rc;
	if (e->opaque && !S_ISDIR(e->mode)) {
		b->inodes[ino].flags |= DFS_IF_OPAQUE;
		return 0;
	}
	return node_fill(&b->inodes[ino], e, mode, err);
}

static bool mode_supported(uint32_t mode)
{
	switch (mode & S_IFMT) {
	case S_IFREG: case S_IFDIR: case S_IFLNK:
	case S_IFCHR: case S_IFBLK: case S_IFIFO:
		return true;
	default:
		return false;
	}
}

int daxfs_builder_add(struct daxfs_layer_builder *b,
		      const struct daxfs_entry *e, struct daxfs_err *err)
{
	struct npath np;
	const char *last;
	uint32_t dir, ino;
	int rc;

	rc = finish_file(b, err);
	if (rc < 0)
		return rc;
	if (!e->whiteout && !e->opaque && !e->hardlink && !mode_supported(e->mode))
		return daxfs_err_set(err, -EINVAL, "entry '%s': unsupported file type %o",
				     e->path, e->mode & S_IFMT);
	if (S_ISLNK(e->mode) && !e->link)
		return daxfs_err_set(err, -EINVAL, "symlink '%s' has no target", e->path);
	rc = resolve_parent(b, e->path, &np, &dir, &last, err);
	if (rc < 0)
		goto out;
	if (!last) {		/* the root itself */
		if (S_ISDIR(e->mode))
			rc = node_fill(&b->inodes[0], e, S_IFDIR | (e->mode & 07777), err);
		else if (e->opaque)
			b->inodes[0].flags |= DFS_IF_OPAQUE;
		else
			rc = daxfs_err_set(err, -EINVAL, "entry '%s' replaces the root",
					   e->path);
		goto out;
	}
	if (e->hardlink) {
		rc = add_hardlink(b, dir, last, e, err);
		goto out;
	}
	rc = add_node(b, dir, last, e, &ino, err);
	if (rc < 0)
		goto out;
	b->files++;
	if (S_ISLNK(e->mode)) {
		free(b->inodes[ino].link);
		b->inodes[ino].link = strdup(e->link);
		b->inodes[ino].size = strlen(e->link);
		if (!b->inodes[ino].link)
			rc = -ENOMEM;
	} else if (S_ISREG(e->mode) && !e->whiteout) {
		b->inodes[ino].size = e->size;
		b->inodes[ino].content = 0;
		if (e->size) {
			rc = content_begin(&b->j, b->group, e->size, &b->w);
			if (rc < 0) {
				rc = daxfs_err_set(err, rc, "entry '%s': %s", e->path,
						   rc == -ENOSPC ? "region full" :
						   rc == -ENOBUFS ? "the layer has more files than "
						   "the region's intent journal holds; make the region "
						   "with a larger --journal-entries" : strerror(-rc));
				goto out;
			}
			b->writing = true;
			b->writing_ino = ino;
			b->bytes += e->size;
		}
	}
out:
	npath_free(&np);
	return rc;
}

int daxfs_builder_write(struct daxfs_layer_builder *b, const void *buf,
			size_t len, struct daxfs_err *err)
{
	int rc;

	if (!b->writing)
		return len ? daxfs_err_set(err, -EINVAL, "data outside a regular file") : 0;
	/* Reaped while paused: the extents are no longer ours. */
	if (daxfs_host_check(b->fs) < 0)
		return daxfs_err_set(err, -ESTALE,
				     "this host was declared dead; its work was rolled back");
	rc = content_write(&b->w, buf, len);
	if (rc < 0)
		return daxfs_err_set(err, rc, "writing file data: %s",
				     rc == -ENOSPC ? "region data area full" : strerror(-rc));
	atomic_fetch_add_explicit(&layer_get(b->fs, b->rec)->progress, len,
				  memory_order_relaxed);
	return 0;
}

/* ---- writing the tree ---- */

struct tree_out {
	uint8_t *buf;
	uint64_t len;
	struct dfs_tree *hdr;
	struct dfs_inode *inodes;
	struct dfs_dirent *dirents;
	struct dfs_xattr *xattrs;
	char *strings;
	uint64_t strpos;
	uint32_t ninodes, ndirents, nxattrs;
};

static int dent_cmp(const void *x, const void *y, void *arg)
{
	struct daxfs_layer_builder *b = arg;

	return strcmp(b->dents[*(const uint32_t *)x].name,
		      b->dents[*(const uint32_t *)y].name);
}

static uint32_t put_string(struct tree_out *t, const void *s, size_t len)
{
	uint32_t off = (uint32_t)t->strpos;

	memcpy(t->strings + t->strpos, s, len);
	t->strpos += len;
	return off;
}

/* Number inodes in breadth-first order from the root; sizes the output. */
static int tree_plan(struct daxfs_layer_builder *b, uint32_t **order,
		     uint32_t *n, uint64_t *strbytes, uint32_t *ndirents,
		     uint32_t *nxattrs)
{
	uint32_t *q = malloc(sizeof(uint32_t) * (b->ninodes + 1));
	uint32_t head = 0, tail = 0;

	if (!q)
		return -ENOMEM;
	for (uint32_t i = 0; i < b->ninodes; i++)
		b->inodes[i].out = UINT32_MAX;
	*strbytes = 0;
	*ndirents = 0;
	*nxattrs = 0;
	b->inodes[0].out = 0;
	q[tail++] = 0;
	while (head < tail) {
		struct binode *d = &b->inodes[q[head++]];

		if (d->link)
			*strbytes += strlen(d->link);
		for (uint32_t x = 0; x < d->nxattrs; x++)
			*strbytes += strlen(d->xattrs[x].name) + d->xattrs[x].len;
		*nxattrs += d->nxattrs;
		if (!S_ISDIR(d->mode))
			continue;
		for (uint32_t k = 0; k < d->nkids; k++) {
			struct bdent *e = &b->dents[d->kids[k]];

			if (e->gone)
				continue;
			(*ndirents)++;
			*strbytes += e->len;
			if (b->inodes[e->ino].out == UINT32_MAX) {
				b->inodes[e->ino].out = tail;
				q[tail++] = e->ino;
			}
		}
	}
	*order = q;
	*n = tail;
	return 0;
}

static int tree_fill(struct daxfs_layer_builder *b, struct tree_out *t,
		     const uint32_t *order)
{
	uint32_t dpos = 0, xpos = 0;

	for (uint32_t i = 0; i < t->ninodes; i++) {
		struct binode *s = &b->inodes[order[i]];
		struct dfs_inode *o = &t->inodes[i];
		uint32_t *kids = NULL, nk = 0;

		o->mode = s->mode;
		o->uid = s->uid;
		o->gid = s->gid;
		o->flags = s->flags;
		o->nlink = S_ISDIR(s->mode) ? 2 : s->nlink;
		o->rdev_major = s->rdev_major;
		o->rdev_minor = s->rdev_minor;
		o->mtime_sec = s->mtime_sec;
		o->mtime_nsec = s->mtime_nsec;
		o->size = s->size;
		o->xattr_first = xpos;
		o->nxattrs = s->nxattrs;
		for (uint32_t x = 0; x < s->nxattrs; x++, xpos++) {
			struct dfs_xattr *ox = &t->xattrs[xpos];

			ox->name_len = (uint16_t)strlen(s->xattrs[x].name);
			ox->name_off = put_string(t, s->xattrs[x].name, ox->name_len);
			ox->value_len = s->xattrs[x].len;
			ox->value_off = put_string(t, s->xattrs[x].value, ox->value_len);
		}
		if (S_ISREG(s->mode)) {
			o->u0 = s->content;
		} else if (S_ISLNK(s->mode)) {
			o->u1 = (uint32_t)strlen(s->link);
			o->u0 = put_string(t, s->link, o->u1);
		} else if (S_ISDIR(s->mode)) {
			kids = malloc(sizeof(uint32_t) * (s->nkids + 1));
			if (!kids)
				return -ENOMEM;
			for (uint32_t k = 0; k < s->nkids; k++)
				if (!b->dents[s->kids[k]].gone)
					kids[nk++] = s->kids[k];
			/* Sorted by byte order: lookups binary-search it. */
			qsort_r(kids, nk, sizeof(uint32_t), dent_cmp, b);
			o->u0 = dpos;
			o->u1 = nk;
			for (uint32_t k = 0; k < nk; k++, dpos++) {
				struct bdent *e = &b->dents[kids[k]];
				struct dfs_dirent *od = &t->dirents[dpos];
				uint32_t m = b->inodes[e->ino].mode;

				od->name_len = (uint16_t)e->len;
				od->name_off = put_string(t, e->name, od->name_len);
				od->ino = b->inodes[e->ino].out;
				od->type = (uint8_t)((m & S_IFMT) >> 12);
				if (S_ISDIR(m))
					o->nlink++;
			}
			free(kids);
		}
	}
	return 0;
}

/* Write the tree into one journaled metadata allocation. */
static int tree_write(struct daxfs_layer_builder *b, uint64_t *off_out,
		      uint64_t *len_out, struct daxfs_err *err)
{
	struct daxfs *fs = b->fs;
	struct tree_out t;
	uint32_t *order = NULL;
	uint64_t strbytes, off, got;
	int64_t seq;
	int rc;

	memset(&t, 0, sizeof(t));
	rc = tree_plan(b, &order, &t.ninodes, &strbytes, &t.ndirents, &t.nxattrs);
	if (rc < 0)
		return rc;
	t.len = sizeof(struct dfs_tree) + (uint64_t)t.ninodes * sizeof(struct dfs_inode) +
		(uint64_t)t.ndirents * sizeof(struct dfs_dirent) +
		(uint64_t)t.nxattrs * sizeof(struct dfs_xattr) + strbytes;
	rc = alloc_find(&b->j, AREA_META, t.len, t.len, &off, &got);
	if (rc < 0) {
		rc = daxfs_err_set(err, rc, "layer tree of %llu bytes: %s",
				   (unsigned long long)t.len,
				   rc == -ENOSPC ? "region metadata area full" : strerror(-rc));
		goto out;
	}
	t.buf = reg_ptr(fs, off, t.len);
	memset(t.buf, 0, t.len);
	seq = journal_append(&b->j, DFS_JOP_ALLOC_META, off, t.len, b->group);
	if (seq < 0) {
		rc = daxfs_err_set(err, (int)seq, "intent journal full");
		goto out;
	}
	failpoint();
	alloc_mark(fs, AREA_META, off, t.len);
	t.hdr = (struct dfs_tree *)t.buf;
	t.inodes = (struct dfs_inode *)(t.hdr + 1);
	t.dirents = (struct dfs_dirent *)(t.inodes + t.ninodes);
	t.xattrs = (struct dfs_xattr *)(t.dirents + t.ndirents);
	t.strings = (char *)(t.xattrs + t.nxattrs);
	rc = tree_fill(b, &t, order);
	if (rc < 0)
		goto out;
	t.hdr->magic = DFS_TREE_MAGIC;
	t.hdr->serial = b->serial;
	t.hdr->ninodes = t.ninodes;
	t.hdr->ndirents = t.ndirents;
	t.hdr->nxattrs = t.nxattrs;
	t.hdr->inodes_off = sizeof(struct dfs_tree);
	t.hdr->dirents_off = (uint64_t)((uint8_t *)t.dirents - t.buf);
	t.hdr->xattrs_off = (uint64_t)((uint8_t *)t.xattrs - t.buf);
	t.hdr->strings_off = (uint64_t)((uint8_t *)t.strings - t.buf);
	t.hdr->strings_len = strbytes;
	t.hdr->total_len = t.len;
	t.hdr->crc = crc32c(0, t.buf, t.len);
	cache_flush(t.buf, t.len);
	*off_out = off;
	*len_out = t.len;
out:
	free(order);
	return rc;
}

/* Files replaced by later entries hold a reference nobody will use: announce
 * its release in the group now, apply it once the layer is published. */
static int defer_dropped(struct daxfs_layer_builder *b, struct daxfs_err *err)
{
	for (uint32_t i = 0; i < b->ninodes; i++) {
		struct binode *n = &b->inodes[i];
		int64_t seq;
		int rc;

		if (n->nlink || !S_ISREG(n->mode) || !n->content)
			continue;
		if (grow((void **)&b->deferred, &b->capdeferred, b->ndeferred + 1,
			 sizeof(*b->deferred)))
			return -ENOMEM;
		rc = content_ref_defer(&b->j, b->group, n->content, &seq);
		if (rc < 0)
			return daxfs_err_set(err, rc, "intent journal full");
		b->deferred[b->ndeferred].seq = seq;
		b->deferred[b->ndeferred++].rec = n->content;
		n->content = 0;
	}
	return 0;
}

void daxfs_builder_set_source(struct daxfs_layer_builder *b,
			      const uint8_t digest[32], uint64_t blob_bytes)
{
	struct dfs_layer *l = layer_get(b->fs, b->rec);

	/* Ours until publish; published with the state CAS. */
	memcpy(l->digest, digest, 32);
	l->compressed_bytes = blob_bytes;
}

int daxfs_builder_publish(struct daxfs_layer_builder *b, uint64_t *serial,
			  struct daxfs_err *err)
{
	struct daxfs *fs = b->fs;
	struct dfs_layer *l = layer_get(fs, b->rec);
	uint64_t off = 0, len = 0, w;
	int rc;

	/* Checked first too: finishing the file indexes its content. */
	if (daxfs_host_check(fs) < 0)
		return daxfs_err_set(err, -ESTALE,
				     "this host was declared dead; its work was rolled back");
	rc = finish_file(b, err);
	if (rc < 0)
		return rc;
	rc = defer_dropped(b, err);
	if (rc < 0)
		return rc;
	rc = tree_write(b, &off, &len, err);
	if (rc < 0)
		return rc;
	l->tree_len = len;
	l->files = b->files;
	l->unpacked_bytes = b->bytes;
	atomic_store_explicit(&l->tree, off, memory_order_relaxed);
	cache_flush(l, sizeof(*l));
	cache_fence();
	/* A host that was reaped while paused must not publish. */
	if (daxfs_host_check(fs) < 0)
		return daxfs_err_set(err, -ESTALE,
				     "this host was declared dead; its work was rolled back");
	failpoint();
	w = LW_UNPACKING(fs->slot, fs->inc);
	/* Release: the tree and the record fields are visible to anyone
	 * who sees READY (readers load the state with acquire). */
	if (!atomic_compare_exchange_strong_explicit(&l->state, &w,
			DFS_LW(DFS_L_READY, fs->inc, 0, 0),
			memory_order_acq_rel, memory_order_acquire))
		return daxfs_err_set(err, -ESTALE,
				     "layer claim was taken over while unpacking");
	cache_flush(&l->state, sizeof(l->state));
	failpoint();
	for (uint32_t i = 0; i < b->ndeferred; i++)
		content_ref_dec_deferred(&b->j, b->deferred[i].seq, b->deferred[i].rec);
	journal_close_group(&b->j);
	if (serial)
		*serial = b->serial;
	builder_free(b);
	return 0;
}

static void builder_free(struct daxfs_layer_builder *b)
{
	for (uint32_t i = 0; i < b->ninodes; i++) {
		free(b->inodes[i].link);
		free(b->inodes[i].kids);
		xattrs_clear(&b->inodes[i]);
	}
	for (uint32_t i = 0; i < b->ndents; i++)
		free(b->dents[i].name);
	free(b->inodes);
	free(b->dents);
	free(b->index);
	free(b->deferred);
	if (b->ctx >= 0)
		ctx_release(b->fs, b->ctx);
	free(b);
}

void daxfs_builder_abort(struct daxfs_layer_builder *b)
{
	bool live;

	if (!b)
		return;
	/* Reaped while paused: the reaper undid everything; touch nothing. */
	live = daxfs_host_check(b->fs) == 0;
	if (b->writing && !live)
		b->w.rec = 0;
	if (b->writing)
		content_abort(&b->w);
	b->writing = false;
	/* Undo our own journal group exactly as a reaper would. */
	if (live)
		reap_journal(b->fs, &b->j, &b->j);
	builder_free(b);
}

/* Claim the layer: ABSENT -> UNPACKING with our incarnation tag. */
static int layer_claim(struct daxfs_layer_builder *b, struct daxfs_err *err)
{
	struct daxfs *fs = b->fs;
	struct dfs_layer *l = layer_get(fs, b->rec);
	uint64_t w;

	if (!l)
		return daxfs_err_set(err, -EUCLEAN, "corrupt layer record");
	w = atomic_load_explicit(&l->state, memory_order_acquire);
	for (;;) {
		switch (DFS_LW_STATE(w)) {
		case DFS_L_READY:
		case DFS_L_EVICTING:
			return daxfs_err_set(err, -EEXIST, "layer is already in the region");
		case DFS_L_UNPACKING:
			return daxfs_err_set(err, -EBUSY,
					     "layer is being unpacked by host slot %u",
					     LW_CLAIM_SLOT(w));
		default:
			break;
		}
		/* The claimant is named inside the state word itself, so a
		 * reaper can always tell whose claim it is. */
		if (atomic_compare_exchange_weak_explicit(&l->state, &w,
				LW_UNPACKING(fs->slot, fs->inc),
				memory_order_acq_rel, memory_order_acquire))
			break;
	}
	/* We own the record until publish: plain stores are fine. */
	l->claimant = ((uint64_t)fs->slot << 32) | fs->inc;
	l->serial = b->serial;
	atomic_store_explicit(&l->progress, 0, memory_order_relaxed);
	return 0;
}

int daxfs_layer_build(struct daxfs *fs, const uint8_t diff_id[32],
		      struct daxfs_layer_builder **out, struct daxfs_err *err)
{
	struct daxfs_layer_builder *b;
	uint32_t root;
	int64_t seq;
	int rc;

	if (fs->slot < 0 || !fs->daemon)
		return daxfs_err_set(err, -EPERM, "attach as a host daemon to write");
	rc = daxfs_host_check(fs);
	if (rc < 0)
		return daxfs_err_set(err, rc, "this host was declared dead");
	b = calloc(1, sizeof(*b));
	if (!b)
		return -ENOMEM;
	b->fs = fs;
	b->ctx = ctx_acquire(fs);
	if (b->ctx < 0) {
		free(b);
		return daxfs_err_set(err, -EAGAIN, "all %u writer contexts busy",
				     DFS_CTX_PER_HOST);
	}
	journal_bind(fs, fs->slot, b->ctx, &b->j);
	rc = new_inode(b, S_IFDIR | 0755, &root);
	if (rc < 0)
		goto fail;
	rc = layer_record(&b->j, diff_id, &b->rec, err);
	if (rc < 0)
		goto fail;
	/* Journal the group before claiming, so a claim never exists that
	 * a reaper cannot find. */
	b->serial = atomic_fetch_add_explicit(&fs->shared->next_layer_serial, 1,
					      memory_order_relaxed);
	b->group = (uint32_t)b->serial;
	seq = journal_append(&b->j, DFS_JOP_BEGIN, b->rec, b->serial, b->group);
	if (seq < 0) {
		rc = daxfs_err_set(err, (int)seq, "intent journal full");
		goto fail;
	}
	failpoint();
	rc = layer_claim(b, err);
	if (rc < 0) {
		journal_set(&b->j, (uint64_t)seq, DFS_J_UNDONE);
		journal_close_group(&b->j);
		goto fail;
	}
	*out = b;
	return 0;
fail:
	builder_free(b);
	return rc;
}
