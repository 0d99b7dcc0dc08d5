/* daxfsd's containerd snapshotter: the Snapshots gRPC service on the
 * unix socket --snapshotter-address (0600), served by threads of daxfsd
 * until snapshotter_stop. */
#ifndef DAXFS_SNAPSHOTTER_H
#define DAXFS_SNAPSHOTTER_H

#include "daxfs.h"
#include "settings.h"

/* Open the records under the root and start serving.  If the default
 * address is already served (another daxfsd on this machine), log that
 * and serve nothing; an address given explicitly must be free. */
int snapshotter_start(const struct settings *c, struct daxfs *fs,
		      struct daxfs_err *err);
/* Stop serving (running calls finish first) and close.  Safe to call
 * when not started. */
void snapshotter_stop(void);

#endif
