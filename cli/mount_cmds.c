/* daxfsctl mount, umount: an image's rootfs from the host's FUSE view. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "client.h"

/* The lowerdir list, top layer first, as overlayfs wants: short ids
 * relative to the view's l/ directory, where the mount is made from, so
 * that 128 layers fit the kernel's 4096-byte limit on mount options. */
static int lowerdirs(json_t *r, char *out, size_t len)
{
	json_t *ids = json_object_get(r, "layers"), *id;
	size_t i, n = 0;

	out[0] = 0;
	json_array_foreach(ids, i, id) {
		int k = snprintf(out + n, len - n, "%s%s", i ? ":" : "", json_string_value(id));

		if (k < 0 || (size_t)k >= len - n)
			return -E2BIG;
		n += (size_t)k;
	}
	return (int)json_array_size(ids);
}

/* Enter the view's l/ directory (relative lowerdirs resolve there). */
static int enter_view(json_t *r, char *back, size_t len)
{
	char dir[4200];

	snprintf(dir, sizeof(dir), "%s/l", json_string_value(json_object_get(r, "view")));
	if (!getcwd(back, len) || chdir(dir) < 0) {
		cli_error("mount: cannot enter the view at %s: %s (is daxfs-view running?)",
			  dir, strerror(errno));
		return -1;
	}
	return 0;
}

static int mount_here(json_t *r, const char *dir, const char *upper, unsigned long flags)
{
	char lower[16384], opts[25600], up[4224], work[4224];
	int n = lowerdirs(r, lower, sizeof(lower));

	if (n < 0) {
		cli_error("mount: too many layers for one mount");
		return -1;
	}
	if (n == 0) {
		cli_error("mount: the image has no layers");
		return -1;
	}
	if (n == 1 && !upper) {
		/* One layer: a read-only bind mount of its directory. */
		if (mount(lower, dir, NULL, MS_BIND, NULL) < 0 ||
		    mount(NULL, dir, NULL, MS_BIND | MS_REMOUNT | MS_RDONLY | flags, NULL) < 0) {
			cli_error("mount: bind %s on %s: %s", lower, dir, strerror(errno));
			return -1;
		}
		return 0;
	}
	if (upper) {
		if (strlen(upper) > sizeof(up) - 8) {
			cli_error("mount: --upper path too long");
			return -1;
		}
		snprintf(up, sizeof(up), "%s/upper", upper);
		snprintf(work, sizeof(work), "%s/work", upper);
		mkdir(upper, 0755);
		mkdir(up, 0755);
		mkdir(work, 0700);
		snprintf(opts, sizeof(opts), "lowerdir=%s,upperdir=%s,workdir=%s,"
			 "index=off,redirect_dir=off,metacopy=off", lower, up, work);
	} else {
		/* A lone lowerdir needs a second one for overlayfs: fine with
		 * two or more layers, which is the case here. */
		snprintf(opts, sizeof(opts), "lowerdir=%s,index=off,redirect_dir=off,metacopy=off",
			 lower);
		flags |= MS_RDONLY;
	}
	if (mount("daxfs", dir, "overlay", flags, opts) < 0) {
		cli_error("mount: overlay on %s: %s", dir, strerror(errno));
		return -1;
	}
	return 0;
}

static int do_mount(json_t *r, const char *dir, const char *upper, unsigned long flags)
{
	char target[4096], uabs[4096], cwd[4096];
	int rc;

	/* Paths given by the user are taken from where the user is. */
	if (!realpath(dir, target)) {
		cli_error("mount: %s: %s", dir, strerror(errno));
		return -1;
	}
	if (upper) {
		mkdir(upper, 0755);
		if (!realpath(upper, uabs)) {
			cli_error("mount: %s: %s", upper, strerror(errno));
			return -1;
		}
	}
	if (enter_view(r, cwd, sizeof(cwd)) < 0)
		return -1;
	rc = mount_here(r, target, upper ? uabs : NULL, flags);
	if (chdir(cwd) < 0)
		rc = -1;
	return rc;
}

static int cmd_mount(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "address", required_argument, 0, 'a' },
		{ "upper", required_argument, 0, 'u' },
		{ "suid", no_argument, 0, 's' },
		{ "dev", no_argument, 0, 'd' },
		{ 0, 0, 0, 0 },
	};
	unsigned long flags = MS_NOSUID | MS_NODEV;
	const char *address = NULL, *upper = NULL;
	json_t *params, *r = NULL;
	int o, rc;

	optind = 1;
	while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (o) {
		case 'a': address = optarg; break;
		case 'u': upper = optarg; break;
		case 's': flags &= ~(unsigned long)MS_NOSUID; break;
		case 'd': flags &= ~(unsigned long)MS_NODEV; break;
		default: return cli_usage(cli_find("mount"), 2);
		}
	}
	if (argc - optind != 2)
		return cli_usage(cli_find("mount"), 2);
	params = json_pack("{s:s}", "ref", argv[optind]);
	rc = client_call(client_address(address), "image_layers", params, NULL, NULL, &r);
	json_decref(params);
	if (rc < 0)
		return 1;
	rc = do_mount(r, argv[optind + 1], upper, flags);
	json_decref(r);
	return rc < 0 ? 1 : 0;
}

static int cmd_umount(int argc, char **argv)
{
	if (argc != 2)
		return cli_usage(cli_find("umount"), 2);
	if (umount2(argv[1], 0) < 0) {
		cli_error("umount %s: %s", argv[1], strerror(errno));
		return 1;
	}
	return 0;
}

const struct cli_cmd mount_cmds[] = {
	{ "mount", "[--address SOCK] [--upper DIR2] [--suid] [--dev] IMAGE DIR",
	  "Mount IMAGE's rootfs at DIR from this host's view of the region:\n"
	  "read-only (an overlay of its layers, top first; a bind mount for a\n"
	  "one-layer image), or writable with --upper, whose upper and work\n"
	  "directories are kept in DIR2 on local disk.  nosuid,nodev unless\n"
	  "--suid / --dev.  The layers stay referenced while the mount exists.", cmd_mount },
	{ "umount", "DIR", "Unmount what daxfsctl mount mounted at DIR.", cmd_umount },
	{ 0, 0, 0, 0 },
};
