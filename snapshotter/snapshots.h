/* containerd.services.snapshots.v1.Snapshots: the methods, with the
 * semantics and error codes of containerd's own snapshotters.
 *
 * Local snapshots keep their files in ROOT/snapshots/<id>/fs, stacked
 * with overlayfs.  A Prepare labelled containerd.io/snapshot.ref=CHAIN
 * whose chain is READY in the region records a committed "remote"
 * snapshot named CHAIN whose directory is the layer's in this host's view
 * (VIEW/l/<short-id>) and answers AlreadyExists: containerd then skips
 * unpacking that layer.  Every record over a region layer keeps it held
 * (pins.h) until Remove deletes the record.
 *
 * A Prepare that also carries CRI's labels (cri.image-ref and
 * cri.layer-digest) and whose chain is not in the region makes daxfsd
 * pull the image into the region first (one pull per image at a time;
 * it also fetches the image's later layers); if the chain is still
 * missing, the Prepare is answered as a local one (counted in the
 * daemon's cri_fallbacks). */
#ifndef DAXFS_SNAPSHOTS_H
#define DAXFS_SNAPSHOTS_H

#include "daxfs.h"
#include "grpc.h"

struct daemon;
struct snapshots;

/* Open ROOT/snapshots.db and ROOT/snapshots/ and hold the region layers
 * the records use (a layer no longer READY is logged; mounting a
 * snapshot over it fails).  view is where this host's view of the region
 * is mounted; d is the daemon whose region, registry and counters the
 * service uses, NULL for none (no remote snapshots). */
int snapshots_open(const char *root, const char *view, struct daemon *d,
		   struct snapshots **out, struct daxfs_err *err);
void snapshots_close(struct snapshots *s);
/* Remove directories no record owns (what a crash can leave). */
int snapshots_cleanup(struct snapshots *s, struct daxfs_err *err);

/* The service's methods, for grpc_server_start with the snapshots as
 * its context. */
extern const struct grpc_method snapshots_methods[];

/* Imports of unpacked snapshots that failed since start (their local
 * copies stay in charge). */
uint64_t snapshots_import_failures(struct snapshots *ss);

#endif
