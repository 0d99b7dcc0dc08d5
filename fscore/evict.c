/* Evicting a layer: READY with no holders -> EVICTING by one CAS, then its
 * contents' references are dropped and its tree freed, all journaled so a
 * reaper can finish an eviction whose host died. */
#include <errno.h>
#include <string.h>
#include <sys/stat.h>

#include "alloc.h"
#include "gc.h"
#include "content.h"
#include "hash.h"
#include "host.h"
#include "layer.h"

int tree_release(struct jctx *j, uint32_t group, struct dfs_tree *t,
		 uint32_t from_ino, uint64_t unused)
{
	struct dfs_inode *inodes = (struct dfs_inode *)((uint8_t *)t + t->inodes_off);

	(void)unused;
	for (uint32_t i = from_ino; i < t->ninodes; i++) {
		int rc;

		if (!S_ISREG(inodes[i].mode) || !inodes[i].u0)
			continue;
		rc = content_ref_dec(j, group, inodes[i].u0, EVICT_INO(i));
		if (rc < 0 && rc != -ENOENT)
			return rc;
	}
	return 0;
}

int layer_evict_finish(struct jctx *j, uint64_t rec, uint32_t from_ino)
{
	struct daxfs *fs = j->fs;
	struct dfs_layer *l = layer_get(fs, rec);
	uint64_t toff, tlen, w;
	struct dfs_tree *t;
	int rc;

	if (!l)
		return -EUCLEAN;
	toff = atomic_load_explicit(&l->tree, memory_order_acquire);
	tlen = l->tree_len;
	t = tree_get(fs, toff, tlen);
	if (t) {
		rc = tree_release(j, (uint32_t)l->serial, t, from_ino, 0);
		if (rc < 0)
			return rc;
		/* Tools walk trees without holder bits, inside read
		 * sections: let them finish before the tree goes. */
		rc = epoch_synchronize(fs, 4 * fs->lease_ms);
		if (rc < 0)
			return rc;
		failpoint();
	}
	/* Forget the tree before freeing it: a crash in between leaks its
	 * units (fsck reports them) but never lets a reaper read a tree
	 * whose units someone may already reuse.  A tree pointer already
	 * zero means an earlier evictor got this far. */
	atomic_store_explicit(&l->tree, 0, memory_order_release);
	l->tree_len = 0;
	if (t)
		alloc_free(fs, AREA_META, toff, tlen);
	w = atomic_load_explicit(&l->state, memory_order_acquire);
	if (DFS_LW_STATE(w) == DFS_L_EVICTING)
		atomic_compare_exchange_strong_explicit(&l->state, &w,
				DFS_LW(DFS_L_ABSENT, 0, 0, 0),
				memory_order_acq_rel, memory_order_relaxed);
	journal_close_group(j);
	return t || !toff ? 0 : -EUCLEAN;
}

int64_t evict_start(struct jctx *j, uint64_t rec, bool any_ru)
{
	struct dfs_layer *l = layer_get(j->fs, rec);
	uint64_t w;
	int64_t seq;

	if (!l)
		return -EUCLEAN;
	w = atomic_load_explicit(&l->state, memory_order_acquire);
	if (DFS_LW_STATE(w) != DFS_L_READY)
		return -ENOENT;
	seq = journal_append(j, DFS_JOP_TREE, rec, l->serial, 0);
	if (seq < 0)
		return seq;
	failpoint();
	/* One CAS from READY-with-no-holders: a racing reference either
	 * lands first (and this fails) or finds the layer not READY. */
	do {
		if (DFS_LW_STATE(w) != DFS_L_READY || DFS_LW_HOLDERS(w) ||
		    (!any_ru && (w & DFS_LW_RU))) {
			journal_set(j, (uint64_t)seq, DFS_J_UNDONE);
			journal_close_group(j);
			return DFS_LW_STATE(w) == DFS_L_READY ? -EBUSY : -ENOENT;
		}
	} while (!atomic_compare_exchange_weak_explicit(&l->state, &w,
			DFS_LW(DFS_L_EVICTING, DFS_LW_TAG(w), 0, 0),
			memory_order_acq_rel, memory_order_acquire));
	failpoint();
	return seq;
}

int evict_rollback(struct jctx *j, uint64_t rec, int64_t seq)
{
	struct dfs_layer *l = layer_get(j->fs, rec);
	uint64_t w;

	if (!l)
		return -EUCLEAN;
	w = atomic_load_explicit(&l->state, memory_order_acquire);
	if (DFS_LW_STATE(w) != DFS_L_EVICTING)
		return -EINVAL;
	/* Nothing was released yet: the tree is whole.  It comes back
	 * recently used, so the clock passes it over once more. */
	if (!atomic_compare_exchange_strong_explicit(&l->state, &w,
			DFS_LW(DFS_L_READY, DFS_LW_TAG(w), 1, 0),
			memory_order_acq_rel, memory_order_acquire))
		return -EINVAL;
	failpoint();
	journal_set(j, (uint64_t)seq, DFS_J_UNDONE);
	journal_close_group(j);
	return 0;
}

int daxfs_layer_evict(struct daxfs *fs, const uint8_t diff_id[32],
		      struct daxfs_err *err)
{
	struct dfs_layer *l;
	struct jctx j;
	uint64_t rec;
	int64_t seq;
	int ctx, rc;

	if (fs->slot < 0 || !fs->daemon)
		return daxfs_err_set(err, -EPERM, "attach as a host daemon to evict");
	if (hash_lookup(fs, DFS_KIND_LAYER, diff_id, &rec) < 0 ||
	    !(l = layer_get(fs, rec)))
		return daxfs_err_set(err, -ENOENT, "layer not in the region");
	ctx = ctx_acquire(fs);
	if (ctx < 0)
		return daxfs_err_set(err, -EAGAIN, "all writer contexts busy");
	journal_bind(fs, fs->slot, ctx, &j);
	seq = evict_start(&j, rec, true);
	if (seq == -EBUSY) {
		uint64_t h = DFS_LW_HOLDERS(atomic_load_explicit(&l->state,
							memory_order_acquire));

		rc = daxfs_err_set(err, -EBUSY, "layer is held by hosts %#llx",
				   (unsigned long long)DFS_HOLD_SLOTS(h));
		goto out;
	}
	if (seq < 0) {
		rc = daxfs_err_set(err, (int)seq, "%s", seq == -ENOENT ?
				   "layer is not READY" : seq == -ENOBUFS ?
				   "intent journal full" : strerror((int)-seq));
		goto out;
	}
	rc = layer_evict_finish(&j, rec, 0);
	if (rc < 0)
		daxfs_err_set(err, rc, "evicting layer: %s", strerror(-rc));
out:
	ctx_release(fs, ctx);
	return rc;
}

/* ---- whole-region views ---- */


struct usage_arg {
	struct daxfs_usage *u;
	struct pinset pins;
};

static int usage_one(struct daxfs *fs, struct dfs_hslot *s, void *arg)
{
	struct usage_arg *ua = arg;
	struct daxfs_usage *u = ua->u;
	uint64_t v = atomic_load_explicit(&s->value, memory_order_relaxed);
	uint64_t kind = atomic_load_explicit(&s->kind, memory_order_relaxed);

	if (kind == DFS_KIND_CONTENT) {
		struct dfs_content *c = content_get(fs, v);

		if (c) {
			u->contents++;
			u->content_bytes += c->size;
		}
	} else if (kind == DFS_KIND_LAYER) {
		struct dfs_layer *l = layer_get(fs, v);
		uint64_t w = l ? atomic_load_explicit(&l->state, memory_order_acquire) : 0;
		bool held, pinned;

		if (!l || DFS_LW_STATE(w) != DFS_L_READY)
			return 0;
		u->layers_ready++;
		u->referenced_bytes += l->unpacked_bytes;
		held = DFS_LW_HOLDERS(w) != 0;
		pinned = pinset_has(&ua->pins, v);
		u->layers_held += held;
		u->layers_pinned += pinned;
		if (held || pinned)
			u->held_bytes += l->unpacked_bytes;
		else
			u->reclaimable_bytes += l->unpacked_bytes;
	}
	return 0;
}

int daxfs_usage(struct daxfs *fs, struct daxfs_usage *u)
{
	struct usage_arg ua = { .u = u };
	int rc;

	memset(u, 0, sizeof(*u));
	u->region_size = fs->sb.region_size;
	u->data_total = fs->data.g.nchunks << fs->data.g.chunk_shift;
	u->meta_total = fs->meta.g.nchunks << fs->meta.g.chunk_shift;
	u->data_used = alloc_used_bytes(fs, AREA_DATA);
	u->meta_used = alloc_used_bytes(fs, AREA_META);
	u->hash_slots = fs->sb.hash_slots;
	u->max_hosts = fs->sb.max_hosts;
	u->version = fs->sb.version;
	memcpy(u->uuid, fs->sb.uuid, 16);
	daxfs_read_enter(fs);
	rc = pinset_build(fs, &ua.pins);
	if (rc == 0) {
		u->hash_used = hash_count(fs, NULL);
		hash_foreach(fs, 0, usage_one, &ua);
	}
	daxfs_read_leave(fs);
	pinset_free(&ua.pins);
	return rc;
}

int layer_fill(struct dfs_layer *l, struct daxfs_layer_info *li)
{
	uint64_t w = atomic_load_explicit(&l->state, memory_order_acquire);

	memset(li, 0, sizeof(*li));
	memcpy(li->diff_id, l->diff_id, 32);
	li->state = DFS_LW_STATE(w);
	li->serial = l->serial;
	li->holders = li->state == DFS_L_UNPACKING ? 0 : DFS_HOLD_SLOTS(DFS_LW_HOLDERS(w));
	li->recently_used = li->state == DFS_L_READY && (w & DFS_LW_RU);
	li->files = l->files;
	li->unpacked_bytes = l->unpacked_bytes;
	li->compressed_bytes = l->compressed_bytes;
	memcpy(li->digest, l->digest, 32);
	li->claimant_slot = li->state == DFS_L_UNPACKING ? (int)LW_CLAIM_SLOT(w) : -1;
	return 0;
}

struct foreach_arg {
	int (*cb)(const struct daxfs_layer_info *, void *);
	void *arg;
};

static int layer_one(struct daxfs *fs, struct dfs_hslot *s, void *arg)
{
	struct foreach_arg *fa = arg;
	struct dfs_layer *l = layer_get(fs, atomic_load_explicit(&s->value,
						memory_order_relaxed));
	struct daxfs_layer_info li;

	if (!l)
		return 0;
	layer_fill(l, &li);
	return fa->cb(&li, fa->arg);
}

int daxfs_layers_foreach(struct daxfs *fs,
			 int (*cb)(const struct daxfs_layer_info *, void *),
			 void *arg)
{
	struct foreach_arg fa = { cb, arg };
	int rc;

	daxfs_read_enter(fs);
	rc = hash_foreach(fs, DFS_KIND_LAYER, layer_one, &fa);
	daxfs_read_leave(fs);
	return rc;
}

int daxfs_layer_info(struct daxfs *fs, const uint8_t diff_id[32],
		     struct daxfs_layer_info *out, uint64_t *progress)
{
	struct dfs_layer *l;
	uint64_t rec;
	int rc;

	if (hash_lookup(fs, DFS_KIND_LAYER, diff_id, &rec) < 0 ||
	    !(l = layer_get(fs, rec)))
		return -ENOENT;
	rc = layer_fill(l, out);
	if (progress)
		*progress = atomic_load_explicit(&l->progress, memory_order_relaxed);
	return rc;
}
