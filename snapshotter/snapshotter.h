/* daxfsd's containerd snapshotter: the Snapshots gRPC service on the
 * unix socket --snapshotter-address (0600), served by threads of daxfsd
 * until snapshotter_stop. */
#ifndef DAXFS_SNAPSHOTTER_H
#define DAXFS_SNAPSHOTTER_H

#include "daxfs.h"

struct daemon;

/* Open the records under the root, hold the region layers they use, and
 * start serving (Prepares labelled by CRI pull through d).  If the
 * default address is already served (another daxfsd on this machine),
 * log that and serve nothing; an address given explicitly must be free.
 * With the containerd-root setting, also keep
 * CONTAINERD_ROOT/io.containerd.snapshotter.v1.daxfs a read-only bind
 * mount of the view (containerd 1.6's CRI reports that path's statfs as
 * the image filesystem). */
int snapshotter_start(struct daemon *d, struct daxfs_err *err);
/* Stop serving (running calls finish first) and close.  Safe to call
 * when not started. */
void snapshotter_stop(void);
/* Failed imports of unpacked snapshots since start (0 when not serving). */
uint64_t snapshotter_import_failures(void);

#endif
