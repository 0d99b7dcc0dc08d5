/* Pins and the multi-host clock.  Placeholder until the clock lands. */
#include <errno.h>

#include "daxfs.h"

int daxfs_holds_sync(struct daxfs *fs)
{
	(void)fs;
	return -ENOSYS;
}

int daxfs_image_pin(struct daxfs *fs, const char *ref, int pin,
		    struct daxfs_err *err)
{
	(void)fs; (void)ref; (void)pin;
	return daxfs_err_set(err, -ENOSYS, "pins not implemented");
}

int daxfs_gc(struct daxfs *fs, const struct daxfs_gc_opts *o,
	     struct daxfs_gc_result *r, struct daxfs_err *err)
{
	(void)fs; (void)o; (void)r;
	return daxfs_err_set(err, -ENOSYS, "gc not implemented");
}

int daxfs_gc_full_error(struct daxfs *fs, const struct daxfs_gc_result *r,
			struct daxfs_err *err)
{
	(void)fs; (void)r;
	return daxfs_err_set(err, -ENOSPC, "region full");
}
