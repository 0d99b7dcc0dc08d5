/* Layer records, references (holder bits) and reading layer trees.
 *
 * Every offset taken from the region is checked against the tree's or
 * the area's bounds at the point of use, not only when the layer opens:
 * a corrupt region yields -EUCLEAN, never a wild read. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "alloc.h"
#include "cache.h"
#include "content.h"
#include "hash.h"
#include "host.h"
#include "layer.h"

struct hold {
	uint64_t rec;
	uint32_t count;
	struct hold *next;
};

struct daxfs_layer {
	struct daxfs *fs;
	uint64_t rec;
	struct dfs_tree *t;
	uint64_t tlen;
	struct dfs_inode *inodes;
	struct dfs_dirent *dirents;
	struct dfs_xattr *xattrs;
	const char *strings;
};

struct dfs_layer *layer_get(struct daxfs *fs, uint64_t rec)
{
	if (rec % 8 || !area_contains(&fs->meta, rec, sizeof(struct dfs_layer)))
		return NULL;
	return reg_ptr(fs, rec, sizeof(struct dfs_layer));
}

struct dfs_tree *tree_get(struct daxfs *fs, uint64_t off, uint64_t len)
{
	struct dfs_tree *t;
	uint64_t need;

	if (off % 8 || len < sizeof(*t) || !area_contains(&fs->meta, off, len))
		return NULL;
	t = reg_ptr(fs, off, len);
	cache_invalidate(t, len);
	if (t->magic != DFS_TREE_MAGIC || t->total_len != len || t->ninodes == 0)
		return NULL;
	need = sizeof(*t) + (uint64_t)t->ninodes * sizeof(struct dfs_inode);
	if (t->inodes_off != sizeof(*t) || t->dirents_off != need)
		return NULL;
	need += (uint64_t)t->ndirents * sizeof(struct dfs_dirent);
	if (t->xattrs_off != need)
		return NULL;
	need += (uint64_t)t->nxattrs * sizeof(struct dfs_xattr);
	if (t->strings_off != need || t->strings_len > len - need ||
	    need + t->strings_len != len)
		return NULL;
	return t;
}

int layer_record(struct jctx *j, const uint8_t diff_id[32], uint64_t *rec,
		 struct daxfs_err *err)
{
	struct daxfs *fs = j->fs;
	uint64_t len = sizeof(struct dfs_layer), off, got, other;
	struct dfs_layer *l;
	int64_t seq;
	int rc;

	if (hash_lookup(fs, DFS_KIND_LAYER, diff_id, rec) == 0)
		return layer_get(fs, *rec) ? 0 :
		       daxfs_err_set(err, -EUCLEAN, "corrupt layer index entry");
	rc = alloc_find(j, AREA_META, len, len, &off, &got);
	if (rc < 0)
		return daxfs_err_set(err, rc, "layer record: %s",
				     rc == -ENOSPC ? "region metadata area full" : strerror(-rc));
	l = reg_ptr(fs, off, len);
	memset(l, 0, len);
	memcpy(l->diff_id, diff_id, 32);
	seq = journal_append(j, DFS_JOP_NEWLAYER, off, len, 0);
	if (seq < 0)
		return daxfs_err_set(err, (int)seq, "intent journal full");
	failpoint();
	alloc_mark(fs, AREA_META, off, len);
	cache_flush(l, len);
	rc = hash_insert(fs, DFS_KIND_LAYER, diff_id, off, &other);
	if (rc == 0) {
		failpoint();
		journal_set(j, (uint64_t)seq, DFS_J_COMMITTED);
		*rec = off;
		return 0;
	}
	alloc_free(fs, AREA_META, off, len);
	journal_set(j, (uint64_t)seq, DFS_J_UNDONE);
	if (rc == -EEXIST) {
		*rec = other;
		return 0;
	}
	return daxfs_err_set(err, rc, "layer index: %s",
			     rc == -ENOSPC ? "region metadata (hash) full" : strerror(-rc));
}

/* ---- references ---- */

static struct hold **hold_find(struct daxfs *fs, uint64_t rec)
{
	struct hold **h = &fs->holds;

	while (*h && (*h)->rec != rec)
		h = &(*h)->next;
	return h;
}

/* This process's holder bit: its host slot's bit of its class. */
static uint64_t hold_bit(const struct daxfs *fs)
{
	return fs->view ? DFS_HOLD_VIEW(fs->slot) : DFS_HOLD_DAEMON(fs->slot);
}

/* Set our holder bit on a READY layer (and its recently-used bit). */
static int holder_set(struct daxfs *fs, struct dfs_layer *l)
{
	uint64_t bit = hold_bit(fs);
	uint64_t w = atomic_load_explicit(&l->state, memory_order_acquire);

	for (;;) {
		uint64_t nw = w | bit | DFS_LW_RU;

		if (DFS_LW_STATE(w) != DFS_L_READY)
			return DFS_LW_STATE(w) == DFS_L_UNPACKING ? -EBUSY : -ENOENT;
		if (nw == w)
			return 0;
		/* acq_rel: the tree offset is read after this succeeds and
		 * an evictor's CAS from READY-with-no-holders must fail. */
		if (atomic_compare_exchange_weak_explicit(&l->state, &w, nw,
				memory_order_acq_rel, memory_order_acquire))
			return 0;
	}
}

static int hold_take(struct daxfs *fs, uint64_t rec, struct dfs_layer *l)
{
	struct hold **h;
	int rc = 0;

	pthread_mutex_lock(&fs->lock);
	h = hold_find(fs, rec);
	if (*h) {
		/* Held, so READY: this only sets the recently-used bit. */
		holder_set(fs, l);
		(*h)->count++;
	} else {
		rc = holder_set(fs, l);
		if (rc == 0) {
			*h = calloc(1, sizeof(**h));
			if (*h) {
				(*h)->rec = rec;
				(*h)->count = 1;
			} else {
				atomic_fetch_and_explicit(&l->state, ~hold_bit(fs),
							  memory_order_acq_rel);
				rc = -ENOMEM;
			}
		}
	}
	pthread_mutex_unlock(&fs->lock);
	return rc;
}

static void hold_drop(struct daxfs *fs, uint64_t rec, struct dfs_layer *l)
{
	struct hold **h, *dead;

	pthread_mutex_lock(&fs->lock);
	h = hold_find(fs, rec);
	if (*h && --(*h)->count == 0) {
		dead = *h;
		*h = dead->next;
		free(dead);
		/* Release: our reads of the tree happen before the layer can
		 * be seen unheld and evicted. */
		atomic_fetch_and_explicit(&l->state, ~hold_bit(fs),
					  memory_order_acq_rel);
	}
	pthread_mutex_unlock(&fs->lock);
}

/* Clear bits of a READY layer (the holder field names a claimant in
 * other states, and is zero while EVICTING).  true if any were set. */
static bool holder_clear(struct dfs_layer *l, uint64_t bits)
{
	uint64_t w = atomic_load_explicit(&l->state, memory_order_acquire);

	while (DFS_LW_STATE(w) == DFS_L_READY && (w & bits)) {
		/* Release: as hold_drop, for whatever the holder read. */
		if (atomic_compare_exchange_weak_explicit(&l->state, &w, w & ~bits,
				memory_order_acq_rel, memory_order_acquire))
			return true;
	}
	return false;
}

struct sync_arg {
	int cleared;
};

static int sync_one(struct daxfs *fs, struct dfs_hslot *s, void *arg)
{
	struct sync_arg *a = arg;
	uint64_t rec = atomic_load_explicit(&s->value, memory_order_relaxed);
	struct dfs_layer *l = layer_get(fs, rec);

	if (!l)
		return 0;
	/* Under fs->lock: an open of ours cannot slip in between. */
	pthread_mutex_lock(&fs->lock);
	if (!*hold_find(fs, rec) && holder_clear(l, hold_bit(fs)))
		a->cleared++;
	pthread_mutex_unlock(&fs->lock);
	return 0;
}

int daxfs_holds_sync(struct daxfs *fs)
{
	struct sync_arg a = { 0 };
	int rc;

	if (fs->slot < 0)
		return -EPERM;
	rc = hash_foreach(fs, DFS_KIND_LAYER, sync_one, &a);
	return rc < 0 ? rc : a.cleared;
}

struct clear_arg {
	uint64_t bits;
	_Atomic uint64_t *guard;
	uint64_t want;
	int layers;
};

static int clear_one(struct daxfs *fs, struct dfs_hslot *s, void *arg)
{
	struct clear_arg *a = arg;
	struct dfs_layer *l = layer_get(fs, atomic_load_explicit(&s->value,
						memory_order_relaxed));

	/* A clearer that stalled and was replaced stops at the next layer. */
	if (a->guard && atomic_load_explicit(a->guard, memory_order_acquire) != a->want)
		return -ESTALE;
	if (l && holder_clear(l, a->bits))
		a->layers++;
	return 0;
}

int holds_clear_slot(struct daxfs *fs, int slot, _Atomic uint64_t *guard,
		     uint64_t want)
{
	struct clear_arg a = { DFS_HOLD_SLOT(slot), guard, want, 0 };
	int rc = hash_foreach(fs, DFS_KIND_LAYER, clear_one, &a);

	return rc < 0 ? rc : a.layers;
}

void holds_free(struct daxfs *fs)
{
	while (fs->holds) {
		struct hold *h = fs->holds;

		fs->holds = h->next;
		free(h);
	}
}

void holds_reassert(struct daxfs *fs)
{
	pthread_mutex_lock(&fs->lock);
	for (struct hold *h = fs->holds; h; h = h->next) {
		struct dfs_layer *l = layer_get(fs, h->rec);

		if (l)
			holder_set(fs, l);
	}
	pthread_mutex_unlock(&fs->lock);
}

int daxfs_layer_open(struct daxfs *fs, const uint8_t diff_id[32],
		     struct daxfs_layer **out, struct daxfs_err *err)
{
	struct daxfs_layer *h;
	struct dfs_layer *l;
	uint64_t rec;
	int rc;

	if (fs->slot < 0)
		return daxfs_err_set(err, -EPERM, "attach as a host to hold layers");
	if (hash_lookup(fs, DFS_KIND_LAYER, diff_id, &rec) < 0 ||
	    !(l = layer_get(fs, rec)))
		return daxfs_err_set(err, -ENOENT, "layer not in the region");
	rc = hold_take(fs, rec, l);
	if (rc < 0)
		return daxfs_err_set(err, rc, "layer is %s",
				     rc == -EBUSY ? "still being unpacked" : "not in the region");
	h = calloc(1, sizeof(*h));
	if (!h) {
		hold_drop(fs, rec, l);
		return -ENOMEM;
	}
	h->fs = fs;
	h->rec = rec;
	h->tlen = l->tree_len;
	h->t = tree_get(fs, atomic_load_explicit(&l->tree, memory_order_acquire),
			h->tlen);
	if (!h->t) {
		daxfs_layer_close(h);
		return daxfs_err_set(err, -EUCLEAN, "layer tree is corrupt");
	}
	h->inodes = (struct dfs_inode *)((uint8_t *)h->t + h->t->inodes_off);
	h->dirents = (struct dfs_dirent *)((uint8_t *)h->t + h->t->dirents_off);
	h->xattrs = (struct dfs_xattr *)((uint8_t *)h->t + h->t->xattrs_off);
	h->strings = (const char *)h->t + h->t->strings_off;
	*out = h;
	return 0;
}

void daxfs_layer_close(struct daxfs_layer *h)
{
	if (!h)
		return;
	hold_drop(h->fs, h->rec, layer_get(h->fs, h->rec));
	free(h);
}

uint64_t daxfs_layer_serial(const struct daxfs_layer *h)
{
	return h->t->serial;
}

uint32_t daxfs_layer_ninodes(const struct daxfs_layer *h)
{
	return h->t->ninodes;
}

/* ---- reading a tree ---- */

static struct dfs_inode *ino_get(struct daxfs_layer *h, uint32_t ino)
{
	return ino < h->t->ninodes ? &h->inodes[ino] : NULL;
}

static const char *str_get(struct daxfs_layer *h, uint64_t off, uint64_t len)
{
	if (off > h->t->strings_len || len > h->t->strings_len - off)
		return NULL;
	return h->strings + off;
}

int daxfs_stat(struct daxfs_layer *h, uint32_t ino, struct daxfs_stat *st)
{
	struct dfs_inode *i = ino_get(h, ino);

	if (!i)
		return -ENOENT;
	st->ino = ino;
	st->mode = i->mode;
	st->uid = i->uid;
	st->gid = i->gid;
	st->nlink = i->nlink;
	st->flags = i->flags;
	st->rdev_major = i->rdev_major;
	st->rdev_minor = i->rdev_minor;
	st->mtime_sec = i->mtime_sec;
	st->mtime_nsec = i->mtime_nsec;
	st->size = i->size;
	return 0;
}

/* The dirents of directory ino, bounds-checked. */
static int dir_range(struct daxfs_layer *h, uint32_t ino, uint64_t *first,
		     uint32_t *n)
{
	struct dfs_inode *i = ino_get(h, ino);

	if (!i)
		return -ENOENT;
	if (!S_ISDIR(i->mode))
		return -ENOTDIR;
	if (i->u0 > h->t->ndirents || i->u1 > h->t->ndirents - i->u0)
		return -EUCLEAN;
	*first = i->u0;
	*n = i->u1;
	return 0;
}

static int name_cmp(const char *a, size_t alen, const char *b, size_t blen)
{
	int c = memcmp(a, b, alen < blen ? alen : blen);

	if (c)
		return c;
	return alen < blen ? -1 : alen > blen;
}

int daxfs_lookup(struct daxfs_layer *h, uint32_t dir, const char *name,
		 size_t namelen, uint32_t *ino)
{
	uint64_t first;
	uint32_t n, lo = 0, hi;
	int rc = dir_range(h, dir, &first, &n);

	if (rc < 0)
		return rc;
	hi = n;
	while (lo < hi) {
		uint32_t mid = lo + (hi - lo) / 2;
		struct dfs_dirent *d = &h->dirents[first + mid];
		const char *s = str_get(h, d->name_off, d->name_len);
		int c;

		if (!s)
			return -EUCLEAN;
		c = name_cmp(name, namelen, s, d->name_len);
		if (c == 0) {
			if (d->ino >= h->t->ninodes)
				return -EUCLEAN;
			*ino = d->ino;
			return 0;
		}
		if (c < 0)
			hi = mid;
		else
			lo = mid + 1;
	}
	return -ENOENT;
}

int daxfs_lookup_path(struct daxfs_layer *h, const char *path, uint32_t *ino)
{
	uint32_t cur = DAXFS_ROOT_INO;

	while (*path) {
		const char *e;
		int rc;

		while (*path == '/')
			path++;
		if (!*path)
			break;
		e = strchrnul(path, '/');
		rc = daxfs_lookup(h, cur, path, (size_t)(e - path), &cur);
		if (rc < 0)
			return rc;
		path = e;
	}
	*ino = cur;
	return 0;
}

int daxfs_readdir(struct daxfs_layer *h, uint32_t dir, uint32_t idx,
		  const char **name, size_t *namelen, uint32_t *ino,
		  uint8_t *dtype)
{
	struct dfs_dirent *d;
	uint64_t first;
	uint32_t n;
	int rc = dir_range(h, dir, &first, &n);

	if (rc < 0)
		return rc;
	if (idx >= n)
		return -ENOENT;
	d = &h->dirents[first + idx];
	*name = str_get(h, d->name_off, d->name_len);
	if (!*name || d->ino >= h->t->ninodes)
		return -EUCLEAN;
	*namelen = d->name_len;
	*ino = d->ino;
	*dtype = d->type;
	return 0;
}

int daxfs_readlink(struct daxfs_layer *h, uint32_t ino, const char **target,
		   size_t *len)
{
	struct dfs_inode *i = ino_get(h, ino);

	if (!i)
		return -ENOENT;
	if (!S_ISLNK(i->mode))
		return -EINVAL;
	*target = str_get(h, i->u0, i->u1);
	*len = i->u1;
	return *target ? 0 : -EUCLEAN;
}

static struct dfs_xattr *xattr_at(struct daxfs_layer *h, struct dfs_inode *i,
				  uint32_t k)
{
	if (i->xattr_first > h->t->nxattrs || i->nxattrs > h->t->nxattrs - i->xattr_first ||
	    k >= i->nxattrs)
		return NULL;
	return &h->xattrs[i->xattr_first + k];
}

ssize_t daxfs_getxattr(struct daxfs_layer *h, uint32_t ino, const char *name,
		       void *buf, size_t size)
{
	struct dfs_inode *i = ino_get(h, ino);
	size_t nlen = strlen(name);

	if (!i)
		return -ENOENT;
	for (uint32_t k = 0; k < i->nxattrs; k++) {
		struct dfs_xattr *x = xattr_at(h, i, k);
		const char *n, *v;

		if (!x || !(n = str_get(h, x->name_off, x->name_len)) ||
		    !(v = str_get(h, x->value_off, x->value_len)))
			return -EUCLEAN;
		if (x->name_len != nlen || memcmp(n, name, nlen))
			continue;
		if (size == 0)
			return x->value_len;
		if (size < x->value_len)
			return -ERANGE;
		memcpy(buf, v, x->value_len);
		return x->value_len;
	}
	return -ENODATA;
}

ssize_t daxfs_listxattr(struct daxfs_layer *h, uint32_t ino, char *buf,
			size_t size)
{
	struct dfs_inode *i = ino_get(h, ino);
	size_t total = 0;

	if (!i)
		return -ENOENT;
	for (uint32_t k = 0; k < i->nxattrs; k++) {
		struct dfs_xattr *x = xattr_at(h, i, k);
		const char *n;

		if (!x || !(n = str_get(h, x->name_off, x->name_len)))
			return -EUCLEAN;
		if (size) {
			if (total + x->name_len + 1 > size)
				return -ERANGE;
			memcpy(buf + total, n, x->name_len);
			buf[total + x->name_len] = 0;
		}
		total += x->name_len + 1u;
	}
	return (ssize_t)total;
}

int daxfs_file_pieces(struct daxfs_layer *h, uint32_t ino, uint64_t off,
		      size_t len, struct daxfs_piece *out, int max)
{
	struct dfs_inode *i = ino_get(h, ino);
	struct dfs_content *c;
	uint64_t pos = 0;
	int n = 0;

	if (!i)
		return -ENOENT;
	if (!S_ISREG(i->mode))
		return -EINVAL;
	if (off >= i->size || !len)
		return 0;
	if (len > i->size - off)
		len = (size_t)(i->size - off);
	c = content_get(h->fs, i->u0);
	if (!c || c->size != i->size)
		return -EUCLEAN;
	for (uint32_t k = 0; k < c->nextents && len && n < max; k++) {
		struct dfs_extent *e = &c->ext[k];
		uint64_t skip, take;

		if (!area_contains(&h->fs->data, e->off, e->len))
			return -EUCLEAN;
		if (off >= pos + e->len) {
			pos += e->len;
			continue;
		}
		skip = off - pos;
		take = e->len - skip < len ? e->len - skip : len;
		out[n].ptr = h->fs->base + e->off + skip;
		out[n].len = (size_t)take;
		cache_invalidate(out[n].ptr, out[n].len);
		n++;
		off += take;
		len -= (size_t)take;
		pos += e->len;
	}
	return n;
}

ssize_t daxfs_pread(struct daxfs_layer *h, uint32_t ino, void *buf, size_t len,
		    uint64_t off)
{
	struct daxfs_piece p[16];
	size_t done = 0;

	while (done < len) {
		int n = daxfs_file_pieces(h, ino, off + done, len - done, p, 16);

		if (n < 0)
			return n;
		if (n == 0)
			break;
		for (int k = 0; k < n; k++) {
			memcpy((uint8_t *)buf + done, p[k].ptr, p[k].len);
			done += p[k].len;
		}
	}
	return (ssize_t)done;
}
