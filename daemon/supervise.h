/* daxfsd's care of the host's FUSE view process (daxfs-view). */
#ifndef DAXFSD_SUPERVISE_H
#define DAXFSD_SUPERVISE_H

#include "daxfs.h"
#include "settings.h"

/* Is a live daxfs view mounted at dir?  1 yes, 0 no (a dead one is
 * lazily unmounted so a new view can take its place). */
int view_alive(const char *dir);
/* Start daxfs-view detached from us (it outlives daxfsd) unless one is
 * already serving; then keep checking and restart it if it dies. */
int supervise_start(const struct settings *c, struct daxfs_err *err);
void supervise_stop(void);
/* Where the view serves: --mountpoint or ROOT/mnt. */
void view_mountpoint(const struct settings *c, char *out, size_t len);

#endif
