/* Device-dax discovery through libdaxctl, with a sysfs fallback for size
 * and alignment so a device can still be used if libdaxctl cannot see it
 * (e.g. an older library, or a container with a partial /sys). */
#include "devdax.h"

#include <daxctl/libdaxctl.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

/* libdaxctl logs errors to stderr by default; library code stays quiet
 * and reports through return values instead. */
static void devdax_log_quiet(struct daxctl_ctx *ctx, int priority,
			     const char *file, int line, const char *fn,
			     const char *format, va_list args)
{
	(void)ctx;
	(void)priority;
	(void)file;
	(void)line;
	(void)fn;
	(void)format;
	(void)args;
}

static int devdax_ctx_new(struct daxctl_ctx **ctx)
{
	int rc = daxctl_new(ctx);

	if (rc < 0)
		return rc;
	if (!*ctx)
		return -ENOMEM;
	daxctl_set_log_fn(*ctx, devdax_log_quiet);
	return 0;
}

static void devdax_fill(struct devdax_info *info, struct daxctl_region *region,
			struct daxctl_dev *dev)
{
	const char *rname = daxctl_region_get_devname(region);
	const char *dname = daxctl_dev_get_devname(dev);

	memset(info, 0, sizeof(*info));
	if (dname)
		snprintf(info->path, sizeof(info->path), "/dev/%s", dname);
	info->size = daxctl_dev_get_size(dev);
	info->align = daxctl_dev_get_align(dev);
	/* Kernels before per-device alignment only report it per region. */
	if (!info->align)
		info->align = daxctl_region_get_align(region);
	if (rname)
		snprintf(info->region, sizeof(info->region), "%s", rname);
	else
		snprintf(info->region, sizeof(info->region), "region%d",
			 daxctl_region_get_id(region));
}

int devdax_list(struct devdax_info *out, int max)
{
	struct daxctl_ctx *ctx;
	struct daxctl_region *region;
	struct daxctl_dev *dev;
	int n = 0;
	int rc;

	if (max < 0 || (max > 0 && !out))
		return -EINVAL;
	rc = devdax_ctx_new(&ctx);
	if (rc)
		return rc;
	daxctl_region_foreach(ctx, region) {
		daxctl_dev_foreach(region, dev) {
			/* Size 0 is the region's unconfigured seed device:
			 * it has no capacity to map. */
			if (!daxctl_dev_get_size(dev))
				continue;
			if (n < max)
				devdax_fill(&out[n], region, dev);
			n++;
		}
	}
	daxctl_unref(ctx);
	return n;
}

/* stat PATH and decide whether it is a device-dax char device.
 * 1 yes, 0 no, -errno if PATH cannot be examined. */
static int devdax_classify(const char *path, struct stat *st)
{
	char link[64];
	char target[PATH_MAX];
	const char *base;
	ssize_t len;

	if (!path)
		return -EINVAL;
	if (stat(path, st))
		return -errno;
	if (!S_ISCHR(st->st_mode))
		return 0;
	snprintf(link, sizeof(link), "/sys/dev/char/%u:%u/subsystem",
		 major(st->st_rdev), minor(st->st_rdev));
	len = readlink(link, target, sizeof(target) - 1);
	if (len < 0)
		/* No sysfs entry: not a device any driver claims as dax. */
		return (errno == ENOENT || errno == ENOTDIR) ? 0 : -errno;
	target[len] = '\0';
	base = strrchr(target, '/');
	base = base ? base + 1 : target;
	/* /sys/bus/dax (dax bus) or /sys/class/dax (compat). */
	return strcmp(base, "dax") == 0;
}

int devdax_is_devdax(const char *path)
{
	struct stat st;

	return devdax_classify(path, &st);
}

/* Look the device up in libdaxctl by device number (robust against
 * symlinks and renamed nodes), or by devname if the number is unknown. */
static int query_daxctl(const char *path, const struct stat *st,
			uint64_t *size, uint64_t *align)
{
	struct daxctl_ctx *ctx;
	struct daxctl_region *region;
	struct daxctl_dev *dev;
	const char *base = strrchr(path, '/');
	int rc = -ENODEV;

	base = base ? base + 1 : path;
	if (devdax_ctx_new(&ctx))
		return -ENODEV;
	daxctl_region_foreach(ctx, region) {
		daxctl_dev_foreach(region, dev) {
			int maj = daxctl_dev_get_major(dev);
			int min = daxctl_dev_get_minor(dev);
			const char *name = daxctl_dev_get_devname(dev);
			struct devdax_info info;

			if (maj >= 0 && min >= 0) {
				if ((unsigned)maj != major(st->st_rdev) ||
				    (unsigned)min != minor(st->st_rdev))
					continue;
			} else if (!name || strcmp(name, base)) {
				continue;
			}
			devdax_fill(&info, region, dev);
			if (info.size && info.align) {
				*size = info.size;
				*align = info.align;
				rc = 0;
			}
			goto out;
		}
	}
out:
	daxctl_unref(ctx);
	return rc;
}

/* Read one decimal sysfs attribute. */
static int read_sysfs_u64(const char *file, uint64_t *val)
{
	char buf[32];
	char *end;
	ssize_t n;
	int fd;

	fd = open(file, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	n = read(fd, buf, sizeof(buf) - 1);
	if (n < 0) {
		n = -errno;
		close(fd);
		return (int)n;
	}
	close(fd);
	buf[n] = '\0';
	errno = 0;
	*val = strtoull(buf, &end, 10);
	if (errno || end == buf)
		return -EINVAL;
	return 0;
}

static int query_sysfs(const struct stat *st, uint64_t *size, uint64_t *align)
{
	static const char *const align_attrs[] = {
		"align",
		/* Older kernels: only the region has it.  ".." is taken
		 * relative to the resolved device directory. */
		"../dax_region/align",
	};
	char file[96];
	unsigned int maj = major(st->st_rdev), min = minor(st->st_rdev);
	uint64_t sz, al = 0;

	snprintf(file, sizeof(file), "/sys/dev/char/%u:%u/size", maj, min);
	if (read_sysfs_u64(file, &sz) || !sz)
		return -ENODEV;
	for (size_t i = 0; i < sizeof(align_attrs) / sizeof(align_attrs[0]);
	     i++) {
		snprintf(file, sizeof(file), "/sys/dev/char/%u:%u/%s", maj, min,
			 align_attrs[i]);
		if (!read_sysfs_u64(file, &al) && al)
			break;
		al = 0;
	}
	if (!al)
		return -ENODEV;
	*size = sz;
	*align = al;
	return 0;
}

int devdax_query(const char *path, uint64_t *size, uint64_t *align)
{
	struct stat st;
	int rc;

	if (!size || !align)
		return -EINVAL;
	rc = devdax_classify(path, &st);
	if (rc < 0)
		return rc;
	if (!rc)
		return -ENODEV;
	if (!query_daxctl(path, &st, size, align))
		return 0;
	return query_sysfs(&st, size, align);
}
