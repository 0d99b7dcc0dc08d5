/* Internal: content-addressed file data (sha256 -> extents, refcounted). */
#ifndef DAXFS_CONTENT_H
#define DAXFS_CONTENT_H

#include <openssl/evp.h>

#include "journal.h"

struct content_writer {
	struct jctx *j;
	uint32_t group;
	uint64_t size, written;
	uint64_t rec;		/* our record's offset */
	uint64_t rec_len;	/* bytes allocated for it */
	uint32_t cap;		/* extent slots in the record */
	int64_t seq;		/* its CREATE journal entry */
	uint64_t ext_cap;	/* bytes allocated for the last extent */
	uint64_t ext_used;	/* bytes written into it */
	EVP_MD_CTX *md;
};

/* Start a content of exactly size (> 0) bytes. */
int content_begin(struct jctx *j, uint32_t group, uint64_t size,
		  struct content_writer *w);
int content_write(struct content_writer *w, const void *buf, size_t len);
/* Finish: the record of this content (ours, or an identical one that
 * already existed) with one reference held for the journal's group. */
int content_end(struct content_writer *w, uint64_t *rec);
/* Give back what an unfinished writer allocated. */
void content_abort(struct content_writer *w);

/* Exactly-once reference changes, journaled in j.  victim names the
 * journal entry this change undoes (0 if none), see reap.c. */
int content_ref_inc(struct jctx *j, uint32_t group, uint64_t rec);
int content_ref_dec(struct jctx *j, uint32_t group, uint64_t rec,
		    uint64_t victim);
/* A decrement announced now (in a builder's group) and applied only after
 * the group's layer is published: replaced files of a layer. */
int content_ref_defer(struct jctx *j, uint32_t group, uint64_t rec, int64_t *seq);
int content_ref_dec_deferred(struct jctx *j, int64_t seq, uint64_t rec);
#define DEFERRED (1ULL << 61)

/* Finish retiring a record whose count reached 0; seq is its RETIRE
 * entry in journal j (the retirer's, or a dead retirer's for a reaper). */
int content_retire(struct jctx *j, int64_t seq, uint64_t rec);
/* Was the rc change journaled as (j, seq) applied?  For PENDING entries
 * of a dead journal only. */
bool content_change_applied(struct jctx *j, uint64_t seq, uint64_t rec);
/* Free a record's extents and the record itself. */
void content_free(struct daxfs *fs, uint64_t rec, uint64_t rec_len);
/* Record pointer after bounds checks, or NULL. */
struct dfs_content *content_get(struct daxfs *fs, uint64_t rec);
uint64_t content_rec_len(struct daxfs *fs, struct dfs_content *c);

/* b of a REF_DEC made by an eviction: the inode it releases. */
#define EVICT_INO(ino) ((1ULL << 62) | (uint64_t)(ino))
#define IS_EVICT_INO(b) (((b) >> 62) == 1)

#define VICTIM(slot, ctx, seq) \
	((1ULL << 63) | ((uint64_t)(slot) << 56) | ((uint64_t)(ctx) << 48) | \
	 ((uint64_t)(seq) & ((1ULL << 48) - 1)))
#define VICTIM_SLOT(v) ((int)(((v) >> 56) & 0x7f))
#define VICTIM_CTX(v) ((int)(((v) >> 48) & 0xff))
#define VICTIM_SEQ(v) ((v) & ((1ULL << 48) - 1))

#endif
