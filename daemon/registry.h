/* OCI distribution client (libcurl): manifests and streamed blobs. */
#ifndef DAXFSD_REGISTRY_H
#define DAXFSD_REGISTRY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "daxfs.h"
#include "ref.h"

struct registry_opts {
	const char *const *insecure;	/* HOST[:PORT] allowed over plain http */
	size_t ninsecure;
	const char *const *mirrors;	/* "docker.io=http://127.0.0.1:5001", tried first */
	size_t nmirrors;
	const char *docker_config;	/* default: $HOME/.docker/config.json */
	uint32_t connect_timeout_ms;	/* default 10000 */
	uint32_t stall_timeout_ms;	/* no byte for this long = error; default 30000 */
	uint32_t retries;		/* default 5 */
	uint32_t backoff_ms;		/* first retry delay, doubled; default 200 */
};

struct registry;	/* one per daemon; thread-safe */
struct registry_blob;	/* one streamed blob */

int registry_new(const struct registry_opts *o, struct registry **out,
		 struct daxfs_err *err);
void registry_free(struct registry *r);

/* GET the manifest of ref (tag, or digest if given), following the
 * redirects, auth flow and retries.  *body is malloc'd; *content_type
 * too.  The body's sha256 is checked when ref names a digest. */
int registry_get_manifest(struct registry *r, const struct image_ref *ref,
			  const char *reference, char **body, size_t *len,
			  char **content_type, struct daxfs_err *err);
/* GET a small blob (a config) whole, digest verified. */
int registry_get_blob(struct registry *r, const struct image_ref *ref,
		      const uint8_t digest[32], size_t max, char **body,
		      size_t *len, struct daxfs_err *err);

/* Stream a blob: read returns the next bytes in order (0 at its end,
 * -errno with err set).  A connection that breaks or stalls midway is
 * resumed with a Range request from the next byte (retries apply).  The
 * caller verifies the digest. */
int registry_blob_open(struct registry *r, const struct image_ref *ref,
		       const uint8_t digest[32], uint64_t size,
		       struct registry_blob **out, struct daxfs_err *err);
ssize_t registry_blob_read(struct registry_blob *b, void *buf, size_t len,
			   struct daxfs_err *err);
void registry_blob_close(struct registry_blob *b);

#endif
