/* Device-dax backend discovery.
 *
 * A device-dax character device (/dev/daxX.Y) is mapped directly as the
 * daxfs region.  stat() reports size 0 for it, so size and the required
 * mapping alignment come from libdaxctl or sysfs. */
#ifndef DAXFS_DEVDAX_H
#define DAXFS_DEVDAX_H

#include <stdint.h>

struct devdax_info {
	char path[64];		/* "/dev/dax0.0" */
	uint64_t size;		/* bytes */
	uint64_t align;		/* mmap offset/length alignment, bytes */
	char region[32];	/* owning region, e.g. "region0" */
};

/* Lists device-dax devices through libdaxctl.  Fills up to max entries;
 * returns the count found (may exceed max) or -errno.  No devices, or no
 * device-dax support in the kernel, is a count of 0. */
int devdax_list(struct devdax_info *out, int max);

/* Is PATH a device-dax character device (/dev/daxX.Y, via stat +
 * /sys/dev/char/MAJ:MIN/subsystem ending in "dax")?  1 yes, 0 no, -errno
 * if PATH cannot be stat'ed. */
int devdax_is_devdax(const char *path);

/* Size and mapping alignment of a devdax device: from libdaxctl, matching
 * by device number or devname, else from /sys/dev/char/MAJ:MIN/size and
 * .../align.  Returns 0 or -errno: -ENODEV when PATH is not a usable
 * device-dax device (including when there is no device-dax driver). */
int devdax_query(const char *path, uint64_t *size, uint64_t *align);

#endif
