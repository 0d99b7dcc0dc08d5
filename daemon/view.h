/* daxfs-view: the read-only FUSE view of a region's layers. */
#ifndef DAXFSD_VIEW_H
#define DAXFSD_VIEW_H

#include <stdint.h>

#include "daxfs.h"

/* Node ids: 1 is the mount root, 2 "l", 3 "by-digest"; a layer's inode
 * ino is (serial << 32) | ino, its by-digest link (serial << 32) | LINK.
 * Serials are never reused, so neither is a node id. */
#define VIEW_ROOT 1ULL
#define VIEW_LDIR 2ULL
#define VIEW_BYDIGEST 3ULL
#define VIEW_LINK 0xffffffffULL
#define VIEW_NODE(serial, ino) (((uint64_t)(serial) << 32) | (uint64_t)(ino))
#define VIEW_SERIAL(node) ((node) >> 32)
#define VIEW_INO(node) ((uint32_t)(node))


struct view_opts {
	const char *mountpoint;
	uint32_t entry_timeout_s;	/* inside layers; default 86400 */
	uint32_t poll_ms;		/* how often "l" is rescanned; default 500 */
	uint32_t recheck_ms;		/* how often unmounted layers are let go;
					 * default 30000 (and on SIGUSR1) */
	int foreground_debug;
};

/* Mount and serve until unmounted or signalled.  fs is attached as a
 * VIEW process of its host. */
int view_run(struct daxfs *fs, const struct view_opts *o, struct daxfs_err *err);

#endif
