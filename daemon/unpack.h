/* Streaming layer unpack: blob bytes -> sha256 -> decompression -> sha256
 * -> tar entries -> a layer tree in the region.  No blob touches disk. */
#ifndef DAXFSD_UNPACK_H
#define DAXFSD_UNPACK_H

#include <stdint.h>
#include <sys/types.h>

#include "daxfs.h"

enum unpack_compression {
	UNPACK_ANY = 0,		/* detect from the bytes */
	UNPACK_NONE,
	UNPACK_GZIP,
	UNPACK_ZSTD,
};

/* Pulls the next bytes of the blob; 0 at the end, -errno on error. */
typedef ssize_t (*unpack_read_fn)(void *arg, void *buf, size_t len);

struct unpack_job {
	const uint8_t *diff_id;		/* expected uncompressed digest */
	const uint8_t *digest;		/* expected blob digest, or NULL */
	enum unpack_compression compression;
	/* Called once the layer is claimed, before the first read: the
	 * blob is requested only by the host that won the claim. */
	int (*open)(void *arg, struct daxfs_err *err);
	unpack_read_fn read;
	void *arg;
	/* Called just before the layer is published (may be NULL); an
	 * error aborts the unpack. */
	int (*before_publish)(void *arg, struct daxfs_err *err);
	/* Progress: called with the count of blob bytes read so far. */
	void (*progress)(void *arg, uint64_t blob_bytes);
	void *progress_arg;
};

struct unpack_result {
	uint8_t digest[32];		/* what the blob hashed to */
	uint8_t diff_id[32];		/* what the tar stream hashed to */
	uint64_t blob_bytes, tar_bytes, entries;
	uint64_t serial;
};

/* Media type of a layer -> compression; -EPROTONOSUPPORT if unknown. */
int unpack_media_type(const char *media_type, enum unpack_compression *out);

/* Claim, unpack, verify both digests and publish the layer.  On any
 * failure the layer is rolled back: nothing READY, nothing allocated. */
int unpack_layer(struct daxfs *fs, const struct unpack_job *job,
		 struct unpack_result *res, struct daxfs_err *err);

#endif
