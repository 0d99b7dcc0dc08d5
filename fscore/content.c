/* Content records: each distinct file content is stored once.
 *
 * A writer streams data into extents of its own chunks while hashing it;
 * at the end it either takes a reference on an identical content that is
 * already indexed (and frees its copy) or publishes its record in the
 * hash with a count of 1.  Every step is journaled so a reaper can tell
 * what a dead writer did (see format.h, FORMAT.md). */
#include <errno.h>
#include <sched.h>
#include <stdatomic.h>
#include <string.h>

#include "alloc.h"
#include "cache.h"
#include "content.h"
#include "hash.h"
#include "host.h"

struct dfs_content *content_get(struct daxfs *fs, uint64_t rec)
{
	struct dfs_content *c;

	if (!area_contains(&fs->meta, rec, sizeof(*c)) || rec % 8)
		return NULL;
	c = reg_ptr(fs, rec, sizeof(*c));
	if (!c || c->nextents > c->cap || c->cap > DFS_MAX_EXTENTS ||
	    !area_contains(&fs->meta, rec, sizeof(*c) + c->cap * sizeof(c->ext[0])))
		return NULL;
	return c;
}

uint64_t content_rec_len(struct daxfs *fs, struct dfs_content *c)
{
	return alloc_round(fs, AREA_META,
			   sizeof(*c) + (uint64_t)c->cap * sizeof(c->ext[0]));
}

void content_free(struct daxfs *fs, uint64_t rec, uint64_t rec_len)
{
	struct dfs_content *c = content_get(fs, rec);

	if (!c)
		return;
	for (uint32_t i = 0; i < c->nextents; i++)
		alloc_free(fs, AREA_DATA, c->ext[i].off,
			   alloc_round(fs, AREA_DATA, c->ext[i].len));
	alloc_free(fs, AREA_META, rec, rec_len);
}

/* The sha256 implementation.  With OpenSSL 3, EVP_sha256() makes every
 * EVP_DigestInit_ex look the algorithm up in the provider tables again,
 * a cost comparable to hashing a small file: fetch it once per process
 * (it is never freed) and fall back to EVP_sha256() if that fails. */
static const EVP_MD *sha256_md(void)
{
#if OPENSSL_VERSION_NUMBER >= 0x30000000L
	static _Atomic(EVP_MD *) fetched;
	EVP_MD *md = atomic_load_explicit(&fetched, memory_order_acquire), *none = NULL;

	if (md)
		return md;
	md = EVP_MD_fetch(NULL, "SHA256", NULL);
	if (!md)
		return EVP_sha256();
	if (!atomic_compare_exchange_strong_explicit(&fetched, &none, md,
			memory_order_acq_rel, memory_order_acquire)) {
		EVP_MD_free(md);	/* another thread was first */
		md = none;
	}
	return md;
#else
	return EVP_sha256();
#endif
}

int content_begin(struct jctx *j, uint32_t group, uint64_t size,
		  struct content_writer *w)
{
	struct daxfs *fs = j->fs;
	uint64_t chunk = 1ULL << fs->data.g.chunk_shift, off, len;
	struct dfs_content *c;
	int rc;

	memset(w, 0, sizeof(*w));
	w->j = j;
	w->group = group;
	w->size = size;
	w->cap = (uint32_t)(size / chunk + 4);
	if (w->cap > DFS_MAX_EXTENTS)
		return -EFBIG;
	w->rec_len = alloc_round(fs, AREA_META,
				 sizeof(*c) + (uint64_t)w->cap * sizeof(c->ext[0]));
	rc = alloc_find(j, AREA_META, w->rec_len, w->rec_len, &off, &len);
	if (rc < 0)
		return rc;
	/* The units are clear and in our own chunk: nobody else writes
	 * here, so the record is blank before the journal can name it. */
	c = reg_ptr(fs, off, w->rec_len);
	memset(c, 0, w->rec_len);
	c->cap = w->cap;
	w->seq = journal_append(j, DFS_JOP_CREATE, off, w->rec_len, group);
	if (w->seq < 0)
		return (int)w->seq;
	failpoint();
	alloc_mark(fs, AREA_META, off, w->rec_len);
	w->rec = off;
	w->md = EVP_MD_CTX_new();
	if (!w->md || EVP_DigestInit_ex(w->md, sha256_md(), NULL) != 1) {
		content_abort(w);
		return -ENOMEM;
	}
	return 0;
}

/* Add an extent big enough that the rest still fits the record. */
static int writer_extend(struct content_writer *w, struct dfs_content *c)
{
	struct daxfs *fs = w->j->fs;
	uint64_t left = w->size - w->written, slots = w->cap - c->nextents;
	uint64_t min, off, len;
	int rc;

	if (!slots)
		return -ENOSPC;
	min = (left + slots - 1) / slots;
	rc = alloc_find(w->j, AREA_DATA, left, min, &off, &len);
	if (rc < 0)
		return rc;
	if (len > alloc_round(fs, AREA_DATA, left))
		len = alloc_round(fs, AREA_DATA, left);
	/* Until content_end the extent's len is all of its allocation, so
	 * a reaper (or an abort) of an unfinished file frees all of it. */
	c->ext[c->nextents].off = off;
	c->ext[c->nextents].len = len;
	/* The record names the extent before its bits are set: a reaper
	 * frees what the record names, and freeing clear bits does nothing.
	 * Release orders the extent before the count that exposes it (a
	 * release store: a fence before a plain store orders nothing, and
	 * ThreadSanitizer builds reject fences). */
	__atomic_store_n(&c->nextents, c->nextents + 1, __ATOMIC_RELEASE);
	failpoint();
	alloc_mark(fs, AREA_DATA, off, len);
	w->ext_cap = len;
	w->ext_used = 0;
	return 0;
}

int content_write(struct content_writer *w, const void *buf, size_t len)
{
	struct daxfs *fs = w->j->fs;
	struct dfs_content *c = reg_ptr(fs, w->rec, w->rec_len);
	const uint8_t *p = buf;
	int rc;

	if (len > w->size - w->written)
		return -EFBIG;
	if (EVP_DigestUpdate(w->md, buf, len) != 1)
		return -EIO;
	while (len) {
		struct dfs_extent *e;
		uint64_t n;

		if (!c->nextents || w->ext_used == w->ext_cap) {
			rc = writer_extend(w, c);
			if (rc < 0)
				return rc;
		}
		e = &c->ext[c->nextents - 1];
		n = w->ext_cap - w->ext_used;
		if (n > len)
			n = len;
		memcpy(fs->base + e->off + w->ext_used, p, n);
		w->ext_used += n;
		w->written += n;
		p += n;
		len -= n;
	}
	return 0;
}

/* Free the units of our own unpublished record and its extents, and let
 * our allocator reuse them first. */
static void writer_free(struct content_writer *w)
{
	struct dfs_content *c = content_get(w->j->fs, w->rec);

	for (uint32_t i = 0; c && i < c->nextents; i++)
		alloc_rewind(w->j, AREA_DATA, c->ext[i].off);
	alloc_rewind(w->j, AREA_META, w->rec);
	content_free(w->j->fs, w->rec, w->rec_len);
}

/* Our copy duplicates another: give ours back.  Order: free, then record
 * it.  A crash in between makes a reaper free the same units again, which
 * nobody else can have taken: only this context allocates in its chunks. */
static void writer_drop_copy(struct content_writer *w)
{
	failpoint();
	writer_free(w);
	journal_set(w->j, (uint64_t)w->seq, DFS_J_UNDONE);
}

/* Publish our record, or take a reference on the identical one that is
 * already indexed.  The read section keeps the other record from being
 * freed between finding it and referencing it. */
static int writer_publish(struct content_writer *w, const uint8_t sha[32],
			  uint64_t *out)
{
	struct daxfs *fs = w->j->fs;
	uint64_t other;
	int rc;

	daxfs_read_enter(fs);
	rc = hash_insert(fs, DFS_KIND_CONTENT, sha, w->rec, &other);
	if (rc == -EEXIST)
		rc = content_ref_inc(w->j, w->group, other) ? -ENOENT : 1;
	daxfs_read_leave(fs);
	if (rc == 0) {
		failpoint();
		journal_set(w->j, (uint64_t)w->seq, DFS_J_DONE);
		*out = w->rec;
	} else if (rc == 1) {
		writer_drop_copy(w);
		*out = other;
		rc = 0;
	}
	return rc;
}

int content_end(struct content_writer *w, uint64_t *out)
{
	struct daxfs *fs = w->j->fs;
	struct dfs_content *c = reg_ptr(fs, w->rec, w->rec_len);
	uint8_t sha[32];
	unsigned int mdlen = 32;
	int rc;

	if (w->written != w->size)
		return -EIO;
	if (EVP_DigestFinal_ex(w->md, sha, &mdlen) != 1)
		return -EIO;
	EVP_MD_CTX_free(w->md);
	w->md = NULL;
	/* Only the last extent can be partly used: its len becomes the
	 * bytes it holds (its allocation is exactly that, rounded up). */
	if (c->nextents)
		c->ext[c->nextents - 1].len = w->ext_used;
	memcpy(c->sha256, sha, 32);
	c->size = w->size;
	atomic_store_explicit(&c->rc, DFS_RC(1, w->j->slot, w->j->ctx, w->seq),
			      memory_order_relaxed);
	for (uint32_t i = 0; i < c->nextents; i++)
		cache_flush(fs->base + c->ext[i].off, c->ext[i].len);
	cache_flush(c, w->rec_len);
	cache_fence();
	for (int tries = 0; tries < 10000; tries++) {
		rc = writer_publish(w, sha, out);
		if (rc != -ENOENT)
			return rc;
		/* The other copy is dying; once it leaves the index, ours
		 * takes its place. */
		sched_yield();
	}
	return -EAGAIN;
}

void content_abort(struct content_writer *w)
{
	if (w->md)
		EVP_MD_CTX_free(w->md);
	w->md = NULL;
	if (!w->rec)
		return;
	writer_free(w);
	journal_set(w->j, (uint64_t)w->seq, DFS_J_UNDONE);
	w->rec = 0;
}

/* Apply the change announced by journal entry seq to a record's count.
 * Returns the new count, or -ENOENT if an increment met a dead record. */
static int ref_apply(struct jctx *j, int64_t seq, uint64_t rec, int delta)
{
	struct dfs_content *c = content_get(j->fs, rec);
	uint64_t w, nw;
	uint32_t count;

	if (!c)
		return -EUCLEAN;
	failpoint();
	w = atomic_load_explicit(&c->rc, memory_order_acquire);
	do {
		count = DFS_RC_COUNT(w);
		if (count == 0 || (delta > 0 && count == DFS_RC_COUNT_MAX)) {
			journal_set(j, (uint64_t)seq, DFS_J_UNDONE);
			return count ? -EOVERFLOW : -ENOENT;
		}
		/* Whoever overwrites a tag records that its change happened. */
		journal_help(j->fs, w);
		nw = DFS_RC((uint32_t)((int)count + delta), j->slot, j->ctx, seq);
	} while (!atomic_compare_exchange_weak_explicit(&c->rc, &w, nw,
			memory_order_acq_rel, memory_order_acquire));
	cache_flush(&c->rc, sizeof(c->rc));
	failpoint();
	journal_set(j, (uint64_t)seq, DFS_J_DONE);
	return (int)DFS_RC_COUNT(nw);
}

/* One journaled change of a record's count by delta (+1 or -1). */
static int ref_change(struct jctx *j, uint32_t group, uint64_t rec, int delta,
		      uint64_t victim, int64_t *seqp)
{
	uint32_t op = delta > 0 ? DFS_JOP_REF_INC : DFS_JOP_REF_DEC;
	int64_t seq;

	if (!content_get(j->fs, rec))
		return -EUCLEAN;
	seq = journal_append(j, op, rec, victim, group);
	if (seq < 0)
		return (int)seq;
	*seqp = seq;
	return ref_apply(j, seq, rec, delta);
}

int content_ref_defer(struct jctx *j, uint32_t group, uint64_t rec, int64_t *seq)
{
	*seq = journal_append(j, DFS_JOP_REF_DEC, rec, DEFERRED, group);
	return *seq < 0 ? (int)*seq : 0;
}

int content_ref_dec_deferred(struct jctx *j, int64_t seq, uint64_t rec)
{
	int rc = ref_apply(j, seq, rec, -1);

	if (rc != 0)
		return rc < 0 ? rc : 0;
	seq = journal_append(j, DFS_JOP_RETIRE, rec, 0, 0);
	if (seq < 0)
		return (int)seq;
	return content_retire(j, seq, rec);
}

int content_ref_inc(struct jctx *j, uint32_t group, uint64_t rec)
{
	int64_t seq;
	int rc = ref_change(j, group, rec, +1, 0, &seq);

	return rc < 0 ? rc : 0;
}

int content_ref_dec(struct jctx *j, uint32_t group, uint64_t rec,
		    uint64_t victim)
{
	int64_t seq;
	int rc = ref_change(j, group, rec, -1, victim, &seq);

	if (rc != 0)
		return rc < 0 ? rc : 0;
	/* We took the count to zero: the record is ours to retire. */
	seq = journal_append(j, DFS_JOP_RETIRE, rec, victim, group);
	if (seq < 0)
		return (int)seq;
	return content_retire(j, seq, rec);
}

int content_retire(struct jctx *j, int64_t seq, uint64_t rec)
{
	struct daxfs *fs = j->fs;
	struct dfs_content *c = content_get(fs, rec);
	uint64_t len;
	uint8_t sha[32];
	int rc;

	if (!c)
		return -EUCLEAN;
	failpoint();
	memcpy(sha, c->sha256, 32);
	hash_remove(fs, DFS_KIND_CONTENT, sha, rec);
	/* Nobody can find the record any more; wait until nobody can still
	 * be looking at it. */
	rc = epoch_synchronize(fs, 4 * fs->lease_ms);
	if (rc < 0)
		return rc;
	len = content_rec_len(fs, c);
	/* Record the free before doing it: a crash between the two leaks
	 * the units (fsck reports them) instead of freeing units another
	 * context may have reused by then. */
	journal_set(j, (uint64_t)seq, DFS_J_DONE);
	content_free(fs, rec, len);
	return 0;
}

bool content_change_applied(struct jctx *j, uint64_t seq, uint64_t rec)
{
	struct dfs_content *c = content_get(j->fs, rec);
	uint64_t w;

	if (!c)
		return false;
	w = atomic_load_explicit(&c->rc, memory_order_acquire);
	/* The tag still names the change: it happened and nobody has
	 * changed the count since (whoever would have, marks it DONE). */
	return DFS_RC_SLOT(w) == (unsigned)j->slot &&
	       DFS_RC_CTX(w) == (unsigned)j->ctx && DFS_RC_SEQ(w) == (uint32_t)seq;
}
