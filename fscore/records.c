/* Chain, image and alias records: small immutable records in the shared
 * hash.  A record is written in full in our own chunk, journaled, then
 * published by the hash insert; replacing or removing one makes it
 * unreachable first and frees it after an epoch wait. */
#include <errno.h>
#include <openssl/evp.h>
#include <string.h>

#include "alloc.h"
#include "hash.h"
#include "host.h"
#include "layer.h"
#include "records.h"

static int sha256(const void *buf, size_t len, uint8_t out[32])
{
	unsigned int n = 32;

	return EVP_Digest(buf, len, out, &n, EVP_sha256(), NULL) == 1 ? 0 : -EIO;
}

static size_t rec_size(uint32_t kind)
{
	switch (kind) {
	case DFS_KIND_CHAIN: return sizeof(struct dfs_chain);
	case DFS_KIND_IMAGE: return sizeof(struct dfs_image);
	case DFS_KIND_ALIAS: return sizeof(struct dfs_alias);
	default: return 0;
	}
}

void *record_get(struct daxfs *fs, uint32_t kind, uint64_t rec)
{
	size_t len = rec_size(kind);

	if (!len || rec % 8 || !area_contains(&fs->meta, rec, len))
		return NULL;
	return reg_ptr(fs, rec, len);
}

int record_key(struct daxfs *fs, uint32_t kind, uint64_t rec, uint8_t key[32])
{
	void *p = record_get(fs, kind, rec);

	if (!p)
		return -EUCLEAN;
	switch (kind) {
	case DFS_KIND_CHAIN:
		memcpy(key, ((struct dfs_chain *)p)->chain_id, 32);
		return 0;
	case DFS_KIND_ALIAS:
		memcpy(key, ((struct dfs_alias *)p)->digest, 32);
		return 0;
	default: {
		struct dfs_image *im = p;

		return sha256(im->ref, strnlen(im->ref, sizeof(im->ref)), key);
	}
	}
}

/* With a writer context of ours for the length of a call. */
struct wctx {
	struct jctx j;
	int ctx;
};

static int wctx_get(struct daxfs *fs, struct wctx *w, struct daxfs_err *err)
{
	if (fs->slot < 0 || !fs->daemon)
		return daxfs_err_set(err, -EPERM, "attach as a host daemon to write");
	w->ctx = ctx_acquire(fs);
	if (w->ctx < 0)
		return daxfs_err_set(err, -EAGAIN, "all writer contexts busy");
	journal_bind(fs, fs->slot, w->ctx, &w->j);
	return 0;
}

static void wctx_put(struct daxfs *fs, struct wctx *w)
{
	journal_close_group(&w->j);
	ctx_release(fs, w->ctx);
}

/* Insert a new record of kind built from tmpl.  *existing gets the
 * record already indexed under the key when there is one (-EEXIST). */
static int record_insert(struct jctx *j, uint32_t kind, const void *tmpl,
			 const uint8_t key[32], uint64_t *existing,
			 struct daxfs_err *err)
{
	struct daxfs *fs = j->fs;
	size_t len = rec_size(kind);
	uint64_t off, got, other;
	int64_t seq;
	int rc;

	rc = alloc_find(j, AREA_META, len, len, &off, &got);
	if (rc < 0)
		return daxfs_err_set(err, rc, "%s", rc == -ENOSPC ?
				     "region metadata area full" : strerror(-rc));
	memcpy(reg_ptr(fs, off, len), tmpl, len);
	seq = journal_append(j, DFS_JOP_NEWREC, off, len, kind);
	if (seq < 0)
		return daxfs_err_set(err, (int)seq, "intent journal full");
	failpoint();
	alloc_mark(fs, AREA_META, off, len);
	rc = hash_insert(fs, kind, key, off, &other);
	if (rc == 0) {
		journal_set(j, (uint64_t)seq, DFS_J_COMMITTED);
		return 0;
	}
	alloc_free(fs, AREA_META, off, len);
	journal_set(j, (uint64_t)seq, DFS_J_UNDONE);
	if (rc == -EEXIST) {
		*existing = other;
		return rc;
	}
	return daxfs_err_set(err, rc, "record index: %s", rc == -ENOSPC ?
			     "region metadata (hash) full" : strerror(-rc));
}

int record_free(struct jctx *j, int64_t seq, uint32_t kind, uint64_t rec)
{
	struct daxfs *fs = j->fs;
	uint8_t key[32];
	int rc;

	if (record_key(fs, kind, rec, key) == 0)
		hash_remove(fs, kind, key, rec);
	rc = epoch_synchronize(fs, 4 * fs->lease_ms);
	if (rc < 0)
		return rc;
	journal_set(j, (uint64_t)seq, DFS_J_DONE);
	alloc_free(fs, AREA_META, rec, rec_size(kind));
	return 0;
}

/* Make rec unreachable and free it, journaled. */
static int record_drop(struct jctx *j, uint32_t kind, uint64_t rec)
{
	int64_t seq = journal_append(j, DFS_JOP_FREEREC, rec, 0, kind);

	if (seq < 0)
		return (int)seq;
	failpoint();
	return record_free(j, seq, kind, rec);
}

int daxfs_chain_put(struct daxfs *fs, const struct daxfs_chain_info *c,
		    struct daxfs_err *err)
{
	struct dfs_chain rec;
	struct wctx w;
	uint64_t layer, other;
	int rc;

	if (hash_lookup(fs, DFS_KIND_LAYER, c->diff_id, &layer) < 0)
		return daxfs_err_set(err, -ENOENT, "chain names a layer not in the region");
	if (hash_lookup(fs, DFS_KIND_CHAIN, c->chain_id, &other) == 0)
		return 0;
	memset(&rec, 0, sizeof(rec));
	memcpy(rec.chain_id, c->chain_id, 32);
	memcpy(rec.parent, c->parent, 32);
	rec.layer = layer;
	rec.depth = c->depth;
	rc = wctx_get(fs, &w, err);
	if (rc < 0)
		return rc;
	rc = record_insert(&w.j, DFS_KIND_CHAIN, &rec, c->chain_id, &other, err);
	wctx_put(fs, &w);
	return rc == -EEXIST ? 0 : rc;
}

int daxfs_chain_get(struct daxfs *fs, const uint8_t chain_id[32],
		    struct daxfs_chain_info *out)
{
	struct dfs_chain *c;
	struct dfs_layer *l;
	uint64_t rec;
	int rc = -ENOENT;

	daxfs_read_enter(fs);
	if (hash_lookup(fs, DFS_KIND_CHAIN, chain_id, &rec) == 0) {
		c = record_get(fs, DFS_KIND_CHAIN, rec);
		l = c ? layer_get(fs, c->layer) : NULL;
		rc = -EUCLEAN;
		if (c && l) {
			memcpy(out->chain_id, c->chain_id, 32);
			memcpy(out->parent, c->parent, 32);
			memcpy(out->diff_id, l->diff_id, 32);
			out->depth = c->depth;
			rc = 0;
		}
	}
	daxfs_read_leave(fs);
	return rc;
}

static void image_from_rec(const struct dfs_image *r, struct daxfs_image_info *o)
{
	memcpy(o->ref, r->ref, sizeof(o->ref));
	o->ref[sizeof(o->ref) - 1] = 0;
	memcpy(o->manifest, r->manifest, 32);
	memcpy(o->config, r->config, 32);
	memcpy(o->top_chain, r->top_chain, 32);
	o->nlayers = r->nlayers;
	o->flags = atomic_load_explicit(&((struct dfs_image *)r)->flags,
					memory_order_acquire);
}

int daxfs_image_put(struct daxfs *fs, const struct daxfs_image_info *im,
		    struct daxfs_err *err)
{
	struct dfs_image rec;
	uint8_t key[32];
	uint64_t old;
	struct wctx w;
	int rc;

	if (strnlen(im->ref, sizeof(im->ref)) >= sizeof(rec.ref))
		return daxfs_err_set(err, -ENAMETOOLONG, "image reference too long");
	memset(&rec, 0, sizeof(rec));
	strcpy(rec.ref, im->ref);
	memcpy(rec.manifest, im->manifest, 32);
	memcpy(rec.config, im->config, 32);
	memcpy(rec.top_chain, im->top_chain, 32);
	rec.nlayers = im->nlayers;
	rec.flags = im->flags;
	rc = sha256(rec.ref, strlen(rec.ref), key);
	if (rc < 0)
		return rc;
	rc = wctx_get(fs, &w, err);
	if (rc < 0)
		return rc;
	/* Replace: take the old record out, then insert ours; a racing
	 * writer of the same reference may win, which is as good. */
	for (int tries = 0; tries < 100; tries++) {
		rc = record_insert(&w.j, DFS_KIND_IMAGE, &rec, key, &old, err);
		if (rc != -EEXIST)
			break;
		rc = record_drop(&w.j, DFS_KIND_IMAGE, old);
		if (rc < 0)
			break;
	}
	wctx_put(fs, &w);
	return rc;
}

int record_image_lookup(struct daxfs *fs, const char *ref, uint64_t *rec)
{
	uint8_t key[32];
	int rc = sha256(ref, strlen(ref), key);

	return rc < 0 ? rc : hash_lookup(fs, DFS_KIND_IMAGE, key, rec);
}

int daxfs_image_get(struct daxfs *fs, const char *ref,
		    struct daxfs_image_info *out)
{
	struct dfs_image *r;
	uint8_t key[32];
	uint64_t rec;
	int rc;

	rc = sha256(ref, strlen(ref), key);
	if (rc < 0)
		return rc;
	rc = -ENOENT;
	daxfs_read_enter(fs);
	if (hash_lookup(fs, DFS_KIND_IMAGE, key, &rec) == 0) {
		r = record_get(fs, DFS_KIND_IMAGE, rec);
		rc = r ? 0 : -EUCLEAN;
		if (r)
			image_from_rec(r, out);
	}
	daxfs_read_leave(fs);
	return rc;
}

int daxfs_image_remove(struct daxfs *fs, const char *ref, struct daxfs_err *err)
{
	uint8_t key[32];
	uint64_t rec;
	struct wctx w;
	int rc;

	rc = sha256(ref, strlen(ref), key);
	if (rc < 0)
		return rc;
	if (hash_lookup(fs, DFS_KIND_IMAGE, key, &rec) < 0)
		return daxfs_err_set(err, -ENOENT, "no image %s in the region", ref);
	rc = wctx_get(fs, &w, err);
	if (rc < 0)
		return rc;
	rc = record_drop(&w.j, DFS_KIND_IMAGE, rec);
	wctx_put(fs, &w);
	return rc;
}

struct img_arg {
	int (*cb)(const struct daxfs_image_info *, void *);
	void *arg;
};

static int image_one(struct daxfs *fs, struct dfs_hslot *s, void *arg)
{
	struct img_arg *a = arg;
	struct dfs_image *r = record_get(fs, DFS_KIND_IMAGE,
			atomic_load_explicit(&s->value, memory_order_relaxed));
	struct daxfs_image_info info;

	if (!r)
		return 0;
	image_from_rec(r, &info);
	return a->cb(&info, a->arg);
}

int daxfs_images_foreach(struct daxfs *fs,
			 int (*cb)(const struct daxfs_image_info *, void *),
			 void *arg)
{
	struct img_arg a = { cb, arg };
	int rc;

	daxfs_read_enter(fs);
	rc = hash_foreach(fs, DFS_KIND_IMAGE, image_one, &a);
	daxfs_read_leave(fs);
	return rc;
}

int daxfs_layer_alias(struct daxfs *fs, const uint8_t digest[32],
		      const uint8_t diff_id[32], struct daxfs_err *err)
{
	struct dfs_alias rec;
	uint64_t layer, other;
	struct wctx w;
	int rc;

	if (hash_lookup(fs, DFS_KIND_LAYER, diff_id, &layer) < 0)
		return daxfs_err_set(err, -ENOENT, "alias names a layer not in the region");
	memset(&rec, 0, sizeof(rec));
	memcpy(rec.digest, digest, 32);
	rec.layer = layer;
	rc = wctx_get(fs, &w, err);
	if (rc < 0)
		return rc;
	rc = record_insert(&w.j, DFS_KIND_ALIAS, &rec, digest, &other, err);
	wctx_put(fs, &w);
	return rc == -EEXIST ? 0 : rc;
}

int daxfs_layer_resolve(struct daxfs *fs, const uint8_t digest[32],
			uint8_t diff_id[32])
{
	struct dfs_alias *a;
	struct dfs_layer *l;
	uint64_t rec;
	int rc = -ENOENT;

	if (hash_lookup(fs, DFS_KIND_LAYER, digest, &rec) == 0) {
		memcpy(diff_id, digest, 32);
		return 0;
	}
	daxfs_read_enter(fs);
	if (hash_lookup(fs, DFS_KIND_ALIAS, digest, &rec) == 0) {
		a = record_get(fs, DFS_KIND_ALIAS, rec);
		l = a ? layer_get(fs, a->layer) : NULL;
		rc = l ? 0 : -EUCLEAN;
		if (l)
			memcpy(diff_id, l->diff_id, 32);
	}
	daxfs_read_leave(fs);
	return rc;
}
