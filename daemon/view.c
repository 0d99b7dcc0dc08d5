/* daxfs-view: the region's READY layers as a read-only FUSE filesystem.
 *
 *   /l/<short-id>/...        each layer's own tree, as overlayfs expects a
 *                            lower layer: whiteouts are 0:0 character
 *                            devices, opaque directories carry
 *                            trusted.overlay.opaque=y
 *   /by-digest/<diff_id>     -> ../l/<short-id>
 *
 * Handlers are thin: op() calls do_op(), which returns an errno, then
 * exactly one fuse_reply_*.  A layer stays open (its holder bit set)
 * while the kernel holds any node of it (lookup counts, see forget).
 *
 * The kernel keeps unused dentries (and so their nodes) cached long after
 * the last mount of a layer is gone, which would keep the layer held
 * forever.  So every recheck_ms, and on SIGUSR1, the view reads its mount
 * table and asks the kernel to drop l/<short-id> of every held layer that
 * no mount references; the forgets that follow release the hold. */
/* 3.12: fuse_session_loop_mt takes the loop configuration as built by
 * fuse_loop_cfg_create(); under an older version libfuse would read it as
 * the old struct and start a thread per request. */
#define FUSE_USE_VERSION 312

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <fuse_lowlevel.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "view.h"

#define XATTR_OPAQUE "trusted.overlay.opaque"

struct vlayer {
	uint64_t serial;
	uint8_t diff_id[32];
	struct daxfs_layer *l;		/* open while lookups > 0 */
	uint64_t lookups;		/* kernel references to its nodes */
	bool ready;			/* seen READY at the last scan */
	struct vlayer *next;
};

struct view {
	struct daxfs *fs;
	bool no_open;			/* the kernel may skip open/opendir */
	struct fuse_session *se;
	double entry_timeout;
	uint32_t poll_ms;
	uint32_t recheck_ms;
	pthread_mutex_t lock;		/* layers */
	struct vlayer *layers;
	_Atomic int stop;
};

static void hexd(const uint8_t *d, char out[72])
{
	memcpy(out, "sha256:", 7);
	for (int i = 0; i < 32; i++)
		snprintf(out + 7 + 2 * i, 3, "%02x", d[i]);
}

/* ---- the layer table (fs->lock-free: v->lock guards it) ---- */

static struct vlayer *vl_find(struct view *v, uint64_t serial)
{
	for (struct vlayer *l = v->layers; l; l = l->next)
		if (l->serial == serial)
			return l;
	return NULL;
}

struct scan {
	struct view *v;
	int changed;
};

static int scan_one(const struct daxfs_layer_info *li, void *arg)
{
	struct scan *sc = arg;
	struct vlayer *l;

	if (li->state != 2)	/* READY */
		return 0;
	l = vl_find(sc->v, li->serial);
	if (!l) {
		l = calloc(1, sizeof(*l));
		if (!l)
			return 0;
		l->serial = li->serial;
		memcpy(l->diff_id, li->diff_id, 32);
		l->next = sc->v->layers;
		sc->v->layers = l;
		sc->changed = 1;
	}
	if (!l->ready)
		sc->changed = 1;
	l->ready = true;
	return 0;
}

/* Rescan the region's READY layers; returns 1 if the set changed.  With
 * gone, layers no longer READY and unreferenced are unlinked into it. */
static int vl_scan(struct view *v, struct vlayer **gone)
{
	struct scan sc = { v, 0 };

	pthread_mutex_lock(&v->lock);
	for (struct vlayer *l = v->layers; l; l = l->next)
		l->ready = false;
	daxfs_layers_foreach(v->fs, scan_one, &sc);
	if (!gone) {
		pthread_mutex_unlock(&v->lock);
		return sc.changed;
	}
	*gone = NULL;
	for (struct vlayer **p = &v->layers; *p;) {
		struct vlayer *l = *p;

		if (!l->ready && !l->lookups) {
			*p = l->next;
			l->next = *gone;
			*gone = l;
			sc.changed = 1;
			continue;
		}
		p = &l->next;
	}
	pthread_mutex_unlock(&v->lock);
	return sc.changed;
}

/* Take a kernel reference on a layer, opening it on the first.  Returns
 * the open handle (v->lock held by the caller). */
static struct daxfs_layer *vl_ref(struct view *v, struct vlayer *l, int *err)
{
	struct daxfs_err e = { 0 };

	if (!l->l) {
		*err = -daxfs_layer_open(v->fs, l->diff_id, &l->l, &e);
		if (*err)
			return NULL;
	}
	l->lookups++;
	return l->l;
}

static void vl_unref(struct view *v, struct vlayer *l, uint64_t n)
{
	l->lookups = n > l->lookups ? 0 : l->lookups - n;
	if (!l->lookups && l->l) {
		daxfs_layer_close(l->l);	/* the layer may be evicted now */
		l->l = NULL;
	}
	(void)v;
}

/* Open handle of the layer a node belongs to, without taking a ref. */
static struct daxfs_layer *vl_handle(struct view *v, fuse_ino_t node)
{
	struct vlayer *l;
	struct daxfs_layer *h = NULL;

	pthread_mutex_lock(&v->lock);
	l = vl_find(v, VIEW_SERIAL(node));
	if (l)
		h = l->l;
	pthread_mutex_unlock(&v->lock);
	return h;
}

static struct view *V(fuse_req_t req)
{
	return fuse_req_userdata(req);
}

/* ---- attributes ---- */

static void dir_attr(fuse_ino_t node, struct stat *st)
{
	memset(st, 0, sizeof(*st));
	st->st_ino = node;
	st->st_mode = S_IFDIR | 0555;
	st->st_nlink = 2;
}

static int layer_attr(struct daxfs_layer *h, fuse_ino_t node, struct stat *st)
{
	struct daxfs_stat ds;
	int rc = daxfs_stat(h, VIEW_INO(node), &ds);

	if (rc < 0)
		return -rc;
	memset(st, 0, sizeof(*st));
	st->st_ino = node;
	st->st_mode = ds.mode;
	st->st_nlink = ds.nlink;
	st->st_uid = ds.uid;
	st->st_gid = ds.gid;
	st->st_size = (off_t)ds.size;
	st->st_rdev = makedev(ds.rdev_major, ds.rdev_minor);
	st->st_mtim.tv_sec = ds.mtime_sec;
	st->st_mtim.tv_nsec = ds.mtime_nsec;
	st->st_ctim = st->st_atim = st->st_mtim;
	st->st_blksize = 4096;
	st->st_blocks = (blkcnt_t)((ds.size + 511) / 512);
	if (ds.flags & DAXFS_F_WHITEOUT) {
		/* What overlayfs takes for a whiteout. */
		st->st_mode = S_IFCHR;
		st->st_rdev = makedev(0, 0);
	}
	return 0;
}

static int link_attr(fuse_ino_t node, struct stat *st)
{
	char id[16];

	daxfs_short_id(VIEW_SERIAL(node), id);
	memset(st, 0, sizeof(*st));
	st->st_ino = node;
	st->st_mode = S_IFLNK | 0777;
	st->st_nlink = 1;
	st->st_size = (off_t)(5 + strlen(id));	/* "../l/" + id */
	return 0;
}

/* ---- lookup ---- */

static int lookup_layer_root(struct view *v, const char *name, bool link,
			     struct fuse_entry_param *e)
{
	uint64_t serial = 0;
	struct vlayer *l = NULL;
	struct daxfs_layer *h;
	int err = ENOENT;

	pthread_mutex_lock(&v->lock);
	if (link) {
		for (struct vlayer *x = v->layers; x; x = x->next) {
			char d[72];

			hexd(x->diff_id, d);
			if (x->ready && !strcmp(d, name))
				l = x;
		}
	} else if (daxfs_parse_short_id(name, &serial) == 0) {
		l = vl_find(v, serial);
	}
	if (l && (l->ready || l->l)) {
		if (link) {
			/* Counted like any node, so forget balances; a link
			 * needs no open tree. */
			link_attr(VIEW_NODE(l->serial, VIEW_LINK), &e->attr);
			e->ino = e->attr.st_ino;
			l->lookups++;
			err = 0;
		} else if ((h = vl_ref(v, l, &err))) {
			e->ino = VIEW_NODE(l->serial, DAXFS_ROOT_INO);
			err = layer_attr(h, e->ino, &e->attr);
		}
	}
	pthread_mutex_unlock(&v->lock);
	return err;
}

static int do_lookup(struct view *v, fuse_ino_t parent, const char *name,
		     struct fuse_entry_param *e);

/* A layer published since the last scan is found at once: a miss in "l"
 * or "by-digest" rescans before it answers ENOENT. */
static int lookup_top(struct view *v, fuse_ino_t parent, const char *name,
		      struct fuse_entry_param *e)
{
	int rc = lookup_layer_root(v, name, parent == VIEW_BYDIGEST, e);

	if (rc == ENOENT) {
		vl_scan(v, NULL);
		rc = lookup_layer_root(v, name, parent == VIEW_BYDIGEST, e);
	}
	return rc;
}

static int do_lookup(struct view *v, fuse_ino_t parent, const char *name,
		     struct fuse_entry_param *e)
{
	struct daxfs_layer *h;
	uint32_t ino;
	int rc;

	memset(e, 0, sizeof(*e));
	e->attr_timeout = e->entry_timeout = 1.0;
	if (parent == VIEW_ROOT) {
		if (!strcmp(name, "l"))
			e->ino = VIEW_LDIR;
		else if (!strcmp(name, "by-digest"))
			e->ino = VIEW_BYDIGEST;
		else
			return ENOENT;
		dir_attr(e->ino, &e->attr);
		return 0;
	}
	if (parent == VIEW_LDIR || parent == VIEW_BYDIGEST) {
		rc = lookup_top(v, parent, name, e);
		if (rc == 0 && parent == VIEW_LDIR)
			e->attr_timeout = e->entry_timeout = v->entry_timeout;
		return rc;
	}
	h = vl_handle(v, parent);
	if (!h)
		return ESTALE;
	rc = daxfs_lookup(h, VIEW_INO(parent), name, strlen(name), &ino);
	if (rc < 0) {
		/* Layers never change: remember that it is not there. */
		e->ino = 0;
		e->entry_timeout = rc == -ENOENT ? v->entry_timeout : 0;
		return rc == -ENOENT ? 0 : -rc;
	}
	e->ino = VIEW_NODE(VIEW_SERIAL(parent), ino);
	e->attr_timeout = e->entry_timeout = v->entry_timeout;
	pthread_mutex_lock(&v->lock);
	vl_find(v, VIEW_SERIAL(parent))->lookups++;
	pthread_mutex_unlock(&v->lock);
	return layer_attr(h, e->ino, &e->attr);
}

static void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct fuse_entry_param e;
	int err = do_lookup(V(req), parent, name, &e);

	if (err)
		fuse_reply_err(req, err);
	else
		fuse_reply_entry(req, &e);
}

static void forget_one(struct view *v, fuse_ino_t node, uint64_t n)
{
	struct vlayer *l;

	if (node <= VIEW_BYDIGEST)
		return;
	pthread_mutex_lock(&v->lock);
	l = vl_find(v, VIEW_SERIAL(node));
	if (l)
		vl_unref(v, l, n);
	pthread_mutex_unlock(&v->lock);
}

static void op_forget(fuse_req_t req, fuse_ino_t node, uint64_t n)
{
	forget_one(V(req), node, n);
	fuse_reply_none(req);
}

static void op_forget_multi(fuse_req_t req, size_t count,
			    struct fuse_forget_data *f)
{
	for (size_t i = 0; i < count; i++)
		forget_one(V(req), f[i].ino, f[i].nlookup);
	fuse_reply_none(req);
}

static int do_getattr(struct view *v, fuse_ino_t node, struct stat *st)
{
	struct daxfs_layer *h;

	if (node <= VIEW_BYDIGEST) {
		dir_attr(node, st);
		return 0;
	}
	if (VIEW_INO(node) == VIEW_LINK)
		return link_attr(node, st);
	h = vl_handle(v, node);
	return h ? layer_attr(h, node, st) : ESTALE;
}

static void op_getattr(fuse_req_t req, fuse_ino_t node, struct fuse_file_info *fi)
{
	struct view *v = V(req);
	struct stat st;
	int err = do_getattr(v, node, &st);

	(void)fi;
	if (err)
		fuse_reply_err(req, err);
	else
		fuse_reply_attr(req, &st, node <= VIEW_BYDIGEST ? 1.0 : v->entry_timeout);
}

static void op_readlink(fuse_req_t req, fuse_ino_t node)
{
	struct daxfs_layer *h;
	const char *t;
	char buf[4097];
	size_t len;

	if (node > VIEW_BYDIGEST && VIEW_INO(node) == VIEW_LINK) {
		char id[16];

		daxfs_short_id(VIEW_SERIAL(node), id);
		snprintf(buf, sizeof(buf), "../l/%s", id);
		fuse_reply_readlink(req, buf);
		return;
	}
	h = vl_handle(V(req), node);
	if (!h || daxfs_readlink(h, VIEW_INO(node), &t, &len) < 0 || len >= sizeof(buf)) {
		fuse_reply_err(req, h ? EINVAL : ESTALE);
		return;
	}
	memcpy(buf, t, len);
	buf[len] = 0;
	fuse_reply_readlink(req, buf);
}

/* ---- directories: offsets are indexes ---- */

struct dirbuf {
	char *p;
	size_t size, used;
};

static bool dir_add(fuse_req_t req, struct dirbuf *b, const char *name,
		    fuse_ino_t ino, mode_t mode, off_t next)
{
	struct stat st = { .st_ino = ino, .st_mode = mode };
	size_t n = fuse_add_direntry(req, b->p + b->used, b->size - b->used, name, &st, next);

	if (n > b->size - b->used)
		return false;
	b->used += n;
	return true;
}

static void list_top(fuse_req_t req, fuse_ino_t node, struct dirbuf *b, off_t off)
{
	struct view *v = V(req);
	off_t i = 0;

	if (node == VIEW_ROOT) {
		const char *names[] = { "l", "by-digest" };

		for (i = off; i < 2; i++)
			if (!dir_add(req, b, names[i], VIEW_LDIR + (fuse_ino_t)i, S_IFDIR, i + 1))
				return;
		return;
	}
	pthread_mutex_lock(&v->lock);
	for (struct vlayer *l = v->layers; l; l = l->next) {
		char name[72];
		bool ok;

		if (!l->ready)
			continue;
		if (i++ < off)
			continue;
		if (node == VIEW_LDIR)
			daxfs_short_id(l->serial, name);
		else
			hexd(l->diff_id, name);
		ok = dir_add(req, b, name, VIEW_NODE(l->serial, node == VIEW_LDIR ?
						     DAXFS_ROOT_INO : VIEW_LINK),
			     node == VIEW_LDIR ? S_IFDIR : S_IFLNK, i);
		if (!ok)
			break;
	}
	pthread_mutex_unlock(&v->lock);
}

static int list_layer(fuse_req_t req, fuse_ino_t node, struct dirbuf *b, off_t off)
{
	struct daxfs_layer *h = vl_handle(V(req), node);
	const char *name;
	size_t nl;
	uint32_t ino;
	uint8_t dt;
	char nm[256];

	if (!h)
		return ESTALE;
	for (uint32_t i = (uint32_t)off;; i++) {
		struct daxfs_stat st;
		int rc = daxfs_readdir(h, VIEW_INO(node), i, &name, &nl, &ino, &dt);

		if (rc == -ENOENT)
			return 0;
		if (rc < 0)
			return -rc;
		memcpy(nm, name, nl < 255 ? nl : 255);
		nm[nl < 255 ? nl : 255] = 0;
		/* The file type is always reported: overlayfs recognises
		 * lower whiteouts by DT_CHR in readdir. */
		daxfs_stat(h, ino, &st);
		if (!dir_add(req, b, nm, VIEW_NODE(VIEW_SERIAL(node), ino),
			     (st.flags & DAXFS_F_WHITEOUT) ? S_IFCHR : (st.mode & S_IFMT),
			     (off_t)i + 1))
			return 0;
	}
}

static void op_readdir(fuse_req_t req, fuse_ino_t node, size_t size, off_t off,
		       struct fuse_file_info *fi)
{
	struct dirbuf b = { .size = size };
	int err = 0;

	(void)fi;
	b.p = malloc(size);
	if (!b.p) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	if (node <= VIEW_BYDIGEST)
		list_top(req, node, &b, off);
	else
		err = list_layer(req, node, &b, off);
	if (err)
		fuse_reply_err(req, err);
	else
		fuse_reply_buf(req, b.p, b.used);
	free(b.p);
}

/* ---- files ---- */

static void op_open(fuse_req_t req, fuse_ino_t node, struct fuse_file_info *fi)
{
	if ((fi->flags & O_ACCMODE) != O_RDONLY) {
		fuse_reply_err(req, EROFS);
		return;
	}
	/* Opening holds no state here: let the kernel stop asking (it then
	 * keeps its page cache across opens itself). */
	if (V(req)->no_open) {
		fuse_reply_err(req, ENOSYS);
		return;
	}
	/* Layers never change: the page cache may keep what it read. */
	fi->keep_cache = 1;
	(void)node;
	fuse_reply_open(req, fi);
}

static void op_read(fuse_req_t req, fuse_ino_t node, size_t size, off_t off,
		    struct fuse_file_info *fi)
{
	struct daxfs_layer *h = vl_handle(V(req), node);
	struct fuse_bufvec *bv;
	struct daxfs_piece p[32];
	int n;

	(void)fi;
	if (!h) {
		fuse_reply_err(req, ESTALE);
		return;
	}
	n = daxfs_file_pieces(h, VIEW_INO(node), (uint64_t)off, size, p, 32);
	if (n < 0) {
		fuse_reply_err(req, -n);
		return;
	}
	bv = calloc(1, sizeof(*bv) + sizeof(struct fuse_buf) * (size_t)(n ? n : 1));
	if (!bv) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	/* Straight from the mapping: no intermediate copy. */
	bv->count = (size_t)n;
	for (int i = 0; i < n; i++) {
		bv->buf[i].mem = (void *)p[i].ptr;
		bv->buf[i].size = p[i].len;
	}
	fuse_reply_data(req, bv, 0);
	free(bv);
}

/* ---- xattrs ---- */

static void op_getxattr(fuse_req_t req, fuse_ino_t node, const char *name, size_t size)
{
	struct daxfs_layer *h;
	struct daxfs_stat st;
	char *buf = NULL;
	ssize_t n;

	if (node <= VIEW_BYDIGEST || VIEW_INO(node) == VIEW_LINK) {
		fuse_reply_err(req, ENODATA);
		return;
	}
	h = vl_handle(V(req), node);
	if (!h || daxfs_stat(h, VIEW_INO(node), &st) < 0) {
		fuse_reply_err(req, ESTALE);
		return;
	}
	if (!strcmp(name, XATTR_OPAQUE)) {
		if (!(st.flags & DAXFS_F_OPAQUE))
			fuse_reply_err(req, ENODATA);
		else if (!size)
			fuse_reply_xattr(req, 1);
		else
			fuse_reply_buf(req, "y", 1);
		return;
	}
	if (!strncmp(name, "trusted.overlay.", 16)) {
		fuse_reply_err(req, ENODATA);	/* no other overlay control data */
		return;
	}
	if (size)
		buf = malloc(size);
	n = daxfs_getxattr(h, VIEW_INO(node), name, buf, size);
	if (n < 0)
		fuse_reply_err(req, (int)-n);
	else if (!size)
		fuse_reply_xattr(req, (size_t)n);
	else
		fuse_reply_buf(req, buf, (size_t)n);
	free(buf);
}

static void op_listxattr(fuse_req_t req, fuse_ino_t node, size_t size)
{
	struct daxfs_layer *h;
	struct daxfs_stat st;
	size_t extra;
	char *buf;
	ssize_t n;

	if (node <= VIEW_BYDIGEST || VIEW_INO(node) == VIEW_LINK) {
		size ? fuse_reply_buf(req, NULL, 0) : fuse_reply_xattr(req, 0);
		return;
	}
	h = vl_handle(V(req), node);
	if (!h || daxfs_stat(h, VIEW_INO(node), &st) < 0) {
		fuse_reply_err(req, ESTALE);
		return;
	}
	extra = (st.flags & DAXFS_F_OPAQUE) ? sizeof(XATTR_OPAQUE) : 0;
	n = daxfs_listxattr(h, VIEW_INO(node), NULL, 0);
	if (n < 0) {
		fuse_reply_err(req, (int)-n);
		return;
	}
	if (!size) {
		fuse_reply_xattr(req, (size_t)n + extra);
		return;
	}
	if (size < (size_t)n + extra) {
		fuse_reply_err(req, ERANGE);
		return;
	}
	buf = malloc((size_t)n + extra + 1);
	if (!buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	daxfs_listxattr(h, VIEW_INO(node), buf, (size_t)n);
	memcpy(buf + n, XATTR_OPAQUE, extra);
	fuse_reply_buf(req, buf, (size_t)n + extra);
	free(buf);
}

static void op_statfs(fuse_req_t req, fuse_ino_t node)
{
	struct daxfs_usage u;
	struct statvfs s;

	(void)node;
	daxfs_usage(V(req)->fs, &u);
	memset(&s, 0, sizeof(s));
	s.f_bsize = s.f_frsize = 4096;
	s.f_blocks = u.data_total / 4096;
	s.f_bfree = s.f_bavail = (u.data_total - u.data_used) / 4096;
	s.f_files = u.hash_slots;
	s.f_ffree = u.hash_slots - u.hash_used;
	s.f_namemax = 255;
	s.f_flag = ST_RDONLY;
	fuse_reply_statfs(req, &s);
}

static void op_access(fuse_req_t req, fuse_ino_t node, int mask)
{
	(void)node;
	fuse_reply_err(req, (mask & W_OK) ? EROFS : 0);
}

/* Every request that would change something. */
static void op_erofs(fuse_req_t req)
{
	fuse_reply_err(req, EROFS);
}

static void erofs_setattr(fuse_req_t req, fuse_ino_t n, struct stat *a, int s,
			  struct fuse_file_info *fi)
{
	(void)n; (void)a; (void)s; (void)fi;
	op_erofs(req);
}

static void erofs_mknod(fuse_req_t req, fuse_ino_t p, const char *n, mode_t m, dev_t r)
{
	(void)p; (void)n; (void)m; (void)r;
	op_erofs(req);
}

static void erofs_mkdir(fuse_req_t req, fuse_ino_t p, const char *n, mode_t m)
{
	(void)p; (void)n; (void)m;
	op_erofs(req);
}

static void erofs_unlink(fuse_req_t req, fuse_ino_t p, const char *n)
{
	(void)p; (void)n;
	op_erofs(req);
}

static void erofs_symlink(fuse_req_t req, const char *l, fuse_ino_t p, const char *n)
{
	(void)l; (void)p; (void)n;
	op_erofs(req);
}

static void erofs_rename(fuse_req_t req, fuse_ino_t p, const char *n, fuse_ino_t np,
			 const char *nn, unsigned int f)
{
	(void)p; (void)n; (void)np; (void)nn; (void)f;
	op_erofs(req);
}

static void erofs_link(fuse_req_t req, fuse_ino_t i, fuse_ino_t p, const char *n)
{
	(void)i; (void)p; (void)n;
	op_erofs(req);
}

static void erofs_write(fuse_req_t req, fuse_ino_t i, const char *b, size_t s, off_t o,
			struct fuse_file_info *fi)
{
	(void)i; (void)b; (void)s; (void)o; (void)fi;
	op_erofs(req);
}

static void erofs_setxattr(fuse_req_t req, fuse_ino_t i, const char *n, const char *v,
			   size_t s, int f)
{
	(void)i; (void)n; (void)v; (void)s; (void)f;
	op_erofs(req);
}

static void erofs_removexattr(fuse_req_t req, fuse_ino_t i, const char *n)
{
	(void)i; (void)n;
	op_erofs(req);
}

static void erofs_create(fuse_req_t req, fuse_ino_t p, const char *n, mode_t m,
			 struct fuse_file_info *fi)
{
	(void)p; (void)n; (void)m; (void)fi;
	op_erofs(req);
}

static void op_opendir(fuse_req_t req, fuse_ino_t node, struct fuse_file_info *fi)
{
	(void)node;
	if (V(req)->no_open)
		fuse_reply_err(req, ENOSYS);	/* as for open */
	else
		fuse_reply_open(req, fi);
}

static void op_init(void *userdata, struct fuse_conn_info *conn)
{
	struct view *v = userdata;

	v->no_open = (conn->capable & FUSE_CAP_NO_OPEN_SUPPORT) &&
		     (conn->capable & FUSE_CAP_NO_OPENDIR_SUPPORT);
	/* Reads are served from memory: no need for the kernel to split
	 * them, and large reads cost one request. */
	conn->max_readahead = 1 << 20;
	/* Our replies come from region memory, never from pipes. */
	conn->want &= ~(unsigned)FUSE_CAP_SPLICE_READ;
}

static const struct fuse_lowlevel_ops ops = {
	.init = op_init,
	.lookup = op_lookup,
	.forget = op_forget,
	.forget_multi = op_forget_multi,
	.getattr = op_getattr,
	.readlink = op_readlink,
	.open = op_open,
	.read = op_read,
	.opendir = op_opendir,
	.readdir = op_readdir,
	.getxattr = op_getxattr,
	.listxattr = op_listxattr,
	.statfs = op_statfs,
	.access = op_access,
	.setattr = erofs_setattr,
	.mknod = erofs_mknod,
	.mkdir = erofs_mkdir,
	.unlink = erofs_unlink,
	.rmdir = erofs_unlink,
	.symlink = erofs_symlink,
	.rename = erofs_rename,
	.link = erofs_link,
	.write = erofs_write,
	.setxattr = erofs_setxattr,
	.removexattr = erofs_removexattr,
	.create = erofs_create,
};

/* ---- releasing layers no mount uses ---- */

/* Short ids some mount references, as a NUL-separated list. */
struct idset {
	char *buf;
	size_t len, cap;
};

static void idset_add(struct idset *set, const char *id, size_t n)
{
	if (!n || n >= 16)
		return;	/* not a short id */
	if (set->len + n + 1 > set->cap) {
		size_t cap = set->cap ? 2 * set->cap : 4096;
		char *b;

		while (cap < set->len + n + 1)
			cap *= 2;
		b = realloc(set->buf, cap);
		if (!b)
			return;	/* keeps fewer: we only release less */
		set->buf = b;
		set->cap = cap;
	}
	memcpy(set->buf + set->len, id, n);
	set->buf[set->len + n] = 0;
	set->len += n + 1;
}

static bool idset_has(const struct idset *set, const char *id)
{
	for (size_t off = 0; off < set->len; off += strlen(set->buf + off) + 1)
		if (!strcmp(set->buf + off, id))
			return true;
	return false;
}

/* A layer directory named by a path: ".../l/<id>[/...]", or a bare
 * "<id>" (daxfsctl mount gives lowerdirs relative to l/).  A bare name
 * from some unrelated mount can only keep a layer held a little longer. */
static void add_path(struct idset *set, const char *p, size_t n)
{
	const char *at = NULL;

	for (size_t i = 0; i + 3 <= n; i++)
		if (!memcmp(p + i, "l/", 2) && (i == 0 || p[i - 1] == '/'))
			at = p + i + 2;
	if (at) {
		size_t k = 0;

		while (at + k < p + n && at[k] != '/')
			k++;
		idset_add(set, at, k);
	} else if (!memchr(p, '/', n)) {
		idset_add(set, p, n);
	}
}

/* lowerdir=a:b:c and upperdir=d in an overlay's options. */
static void add_overlay_opts(struct idset *set, const char *opts)
{
	const char *o = opts;

	while (*o) {
		size_t n = strcspn(o, ",");
		const char *eq = memchr(o, '=', n);

		if (eq && (!strncmp(o, "lowerdir", (size_t)(eq - o)) ||
			   !strncmp(o, "lowerdir+", (size_t)(eq - o)) ||
			   !strncmp(o, "upperdir", (size_t)(eq - o)))) {
			const char *v = eq + 1, *end = o + n;

			while (v < end) {
				size_t k = 0;

				while (v + k < end && v[k] != ':')
					k++;
				add_path(set, v, k);
				v += k + 1;
			}
		}
		o += n;
		if (*o == ',')
			o++;
	}
}

static void mounts_referencing(struct idset *set)
{
	FILE *f = fopen("/proc/self/mountinfo", "re");
	char *line = NULL;
	size_t cap = 0;

	if (!f)
		return;
	while (getline(&line, &cap, f) > 0) {
		char root[4096], fstype[256], opts[16384];
		char *sep = strstr(line, " - ");

		line[strcspn(line, "\n")] = 0;
		if (!sep || sscanf(line, "%*s %*s %*s %4095s", root) != 1 ||
		    sscanf(sep + 3, "%255s %*s %16383s", fstype, opts) != 2)
			continue;
		if (!strcmp(fstype, "fuse.daxfs"))
			add_path(set, root, strlen(root));	/* a bind mount's root */
		else if (!strcmp(fstype, "overlay"))
			add_overlay_opts(set, opts);
	}
	free(line);
	fclose(f);
}

struct released {
	uint64_t serial;
	uint8_t diff_id[32];
};

/* Ask the kernel to forget the nodes of held layers no mount uses. */
static void recheck(struct view *v)
{
	struct idset set = { 0 };
	struct released *out = NULL;
	size_t n = 0, cap = 0;

	mounts_referencing(&set);
	pthread_mutex_lock(&v->lock);
	for (struct vlayer *l = v->layers; l; l = l->next) {
		char id[16];

		if (!l->lookups)
			continue;
		daxfs_short_id(l->serial, id);
		if (idset_has(&set, id))
			continue;
		if (n == cap) {
			struct released *r = realloc(out, (cap = cap ? 2 * cap : 16) * sizeof(*r));

			if (!r)
				break;
			out = r;
		}
		out[n].serial = l->serial;
		memcpy(out[n].diff_id, l->diff_id, 32);
		n++;
	}
	pthread_mutex_unlock(&v->lock);
	/* Outside the lock: the kernel answers with forgets, which take it. */
	for (size_t i = 0; i < n; i++) {
		char name[72];

		daxfs_short_id(out[i].serial, name);
		fuse_lowlevel_notify_inval_entry(v->se, VIEW_LDIR, name, strlen(name));
		hexd(out[i].diff_id, name);
		fuse_lowlevel_notify_inval_entry(v->se, VIEW_BYDIGEST, name, strlen(name));
	}
	free(out);
	free(set.buf);
}

/* Rechecks every recheck_ms and whenever SIGUSR1 arrives (blocked in
 * every thread, taken here with sigtimedwait). */
static void *recheck_main(void *arg)
{
	struct view *v = arg;
	struct timespec ts = { v->recheck_ms / 1000, (long)(v->recheck_ms % 1000) * 1000000L };
	sigset_t set;

	sigemptyset(&set);
	sigaddset(&set, SIGUSR1);
	while (!atomic_load(&v->stop)) {
		int sig = sigtimedwait(&set, NULL, &ts);

		if (atomic_load(&v->stop))
			break;
		if (sig == SIGUSR1 || (sig < 0 && errno == EAGAIN))
			recheck(v);
	}
	return NULL;
}

/* Announce layers that appeared or went away in "l" and "by-digest". */
static void *poll_main(void *arg)
{
	struct view *v = arg;

	while (!atomic_load(&v->stop)) {
		struct vlayer *gone = NULL;

		usleep(v->poll_ms * 1000);
		/* The daemon may have restarted as a new incarnation. */
		daxfs_host_rejoin(v->fs);
		daxfs_heartbeat(v->fs);
		if (!vl_scan(v, &gone))
			continue;
		fuse_lowlevel_notify_inval_inode(v->se, VIEW_LDIR, 0, 0);
		fuse_lowlevel_notify_inval_inode(v->se, VIEW_BYDIGEST, 0, 0);
		while (gone) {
			struct vlayer *l = gone;
			char name[72];

			gone = l->next;
			daxfs_short_id(l->serial, name);
			fuse_lowlevel_notify_inval_entry(v->se, VIEW_LDIR, name, strlen(name));
			hexd(l->diff_id, name);
			fuse_lowlevel_notify_inval_entry(v->se, VIEW_BYDIGEST, name, strlen(name));
			free(l);
		}
	}
	return NULL;
}

int view_run(struct daxfs *fs, const struct view_opts *o, struct daxfs_err *err)
{
	char *argv[] = { "daxfs-view", "-o",
		"ro,allow_other,default_permissions,fsname=daxfs,subtype=daxfs", NULL };
	struct fuse_args args = FUSE_ARGS_INIT(3, argv);
	struct fuse_loop_config *lc;
	struct view v = { .fs = fs };
	struct vlayer *gone;
	pthread_t poller, rechecker;
	sigset_t usr1;
	int rc;

	v.entry_timeout = o->entry_timeout_s ? o->entry_timeout_s : 86400;
	v.poll_ms = o->poll_ms ? o->poll_ms : 500;
	v.recheck_ms = o->recheck_ms ? o->recheck_ms : 30000;
	/* Holder bits a previous view of this host left behind. */
	rc = daxfs_holds_sync(fs);
	if (rc > 0)
		fprintf(stderr, "daxfs-view: released %d holds of a previous view\n", rc);
	else if (rc < 0)
		return daxfs_err_set(err, rc, "releasing a previous view's holds: %s",
				     strerror(-rc));
	/* The caller blocked it before starting any thread; so do we, for
	 * the threads started here. */
	sigemptyset(&usr1);
	sigaddset(&usr1, SIGUSR1);
	pthread_sigmask(SIG_BLOCK, &usr1, NULL);
	pthread_mutex_init(&v.lock, NULL);
	vl_scan(&v, &gone);
	v.se = fuse_session_new(&args, &ops, sizeof(ops), &v);
	/* Option parsing may have copied the arguments. */
	fuse_opt_free_args(&args);
	if (!v.se)
		return daxfs_err_set(err, -EINVAL, "cannot create the FUSE session");
	if (fuse_set_signal_handlers(v.se) < 0 ||
	    fuse_session_mount(v.se, o->mountpoint) < 0) {
		fuse_session_destroy(v.se);
		return daxfs_err_set(err, -EIO, "cannot mount the view at %s", o->mountpoint);
	}
	pthread_create(&poller, NULL, poll_main, &v);
	pthread_create(&rechecker, NULL, recheck_main, &v);
	lc = fuse_loop_cfg_create();
	fuse_loop_cfg_set_clone_fd(lc, 1);
	fuse_loop_cfg_set_max_threads(lc, 16);
	rc = fuse_session_loop_mt(v.se, lc);
	fuse_loop_cfg_destroy(lc);
	atomic_store(&v.stop, 1);
	pthread_join(poller, NULL);
	pthread_kill(rechecker, SIGUSR1);
	pthread_join(rechecker, NULL);
	fuse_session_unmount(v.se);
	fuse_remove_signal_handlers(v.se);
	fuse_session_destroy(v.se);
	for (struct vlayer *l = v.layers; l;) {
		struct vlayer *n = l->next;

		if (l->l)
			daxfs_layer_close(l->l);
		free(l);
		l = n;
	}
	pthread_mutex_destroy(&v.lock);
	return rc < 0 ? daxfs_err_set(err, rc, "FUSE loop: %s", strerror(-rc)) : 0;
}
