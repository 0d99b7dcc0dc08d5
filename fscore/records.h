/* Internal: chain, image and alias records. */
#ifndef DAXFS_RECORDS_H
#define DAXFS_RECORDS_H

#include "journal.h"

/* Record of kind at rec, bounds-checked, or NULL. */
void *record_get(struct daxfs *fs, uint32_t kind, uint64_t rec);
/* The hash key a record is indexed under. */
int record_key(struct daxfs *fs, uint32_t kind, uint64_t rec, uint8_t key[32]);
/* The image record indexed for ref: 0 and *rec, or -ENOENT. */
int record_image_lookup(struct daxfs *fs, const char *ref, uint64_t *rec);
/* Finish freeing a record (FREEREC entry seq in j). */
int record_free(struct jctx *j, int64_t seq, uint32_t kind, uint64_t rec);

#endif
