/* containerd.services.snapshots.v1.Snapshots: the methods, with the
 * semantics and error codes of containerd's own snapshotters.
 *
 * Local snapshots keep their files in ROOT/snapshots/<id>/fs, stacked
 * with overlayfs.  A Prepare labelled containerd.io/snapshot.ref=CHAIN
 * whose chain is READY in the region records a committed "remote"
 * snapshot named CHAIN whose directory is the layer's in this host's view
 * (VIEW/l/<short-id>) and answers AlreadyExists: containerd then skips
 * unpacking that layer. */
#ifndef DAXFS_SNAPSHOTS_H
#define DAXFS_SNAPSHOTS_H

#include "daxfs.h"
#include "grpc.h"

struct snapshots;

/* Open ROOT/snapshots.db and ROOT/snapshots/; view is where this host's
 * view of the region is mounted; fs may be NULL (no remote snapshots). */
int snapshots_open(const char *root, const char *view, struct daxfs *fs,
		   struct snapshots **out, struct daxfs_err *err);
void snapshots_close(struct snapshots *s);
/* Remove directories no record owns (what a crash can leave). */
int snapshots_cleanup(struct snapshots *s, struct daxfs_err *err);

/* The service's methods, for grpc_server_start with the snapshots as
 * its context. */
extern const struct grpc_method snapshots_methods[];

#endif
