/* daxfs-view: one per host; serves the region's layers over FUSE at
 * ROOT/mnt.  It attaches as a process of its host (its own heartbeat and
 * reader epoch) and holds nothing the daemon owns, so daxfsd can stop,
 * restart or crash without touching running containers. */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "view.h"

static void usage(FILE *out)
{
	fprintf(out, "usage: daxfs-view --region PATH[@OFFSET] [--root DIR] [--mountpoint DIR]\n"
		"                  [--host-name NAME] [--lease-ms MS] [--poll-ms MS]\n"
		"                  [--recheck-ms MS]\n\n"
		"Serves the region's READY layers read-only at DIR (default ROOT/mnt):\n"
		"l/<short-id>/ for each layer and by-digest/<diff_id> links.  The host's\n"
		"daxfsd must be attached (it starts this process by default).  Every\n"
		"--recheck-ms (default 30000) and on SIGUSR1 it lets go of layers no\n"
		"mount uses any more, so they can be evicted.\n");
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "region", required_argument, 0, 'r' },
		{ "root", required_argument, 0, 'R' },
		{ "mountpoint", required_argument, 0, 'm' },
		{ "lease-ms", required_argument, 0, 'l' },
		{ "host-name", required_argument, 0, 'n' },
		{ "poll-ms", required_argument, 0, 'p' },
		{ "recheck-ms", required_argument, 0, 'c' },
		{ "help", no_argument, 0, 'h' },
		{ 0, 0, 0, 0 },
	};
	struct daxfs_open_opts oo = { 0 };
	struct daxfs_host_opts ho = { .kind = DAXFS_PROC_VIEW, .name = NULL };
	struct view_opts vo = { 0 };
	struct daxfs_err err = { 0 };
	const char *region = NULL, *root = "/var/lib/daxfs";
	char path[4096], mnt[4200];
	struct daxfs *fs;
	sigset_t usr1;
	int c, rc;

	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'r': region = optarg; break;
		case 'R': root = optarg; break;
		case 'm': vo.mountpoint = optarg; break;
		case 'n': ho.name = optarg; break;
		case 'l': oo.lease_ms = (uint32_t)strtoul(optarg, NULL, 10); break;
		case 'p': vo.poll_ms = (uint32_t)strtoul(optarg, NULL, 10); break;
		case 'c': vo.recheck_ms = (uint32_t)strtoul(optarg, NULL, 10); break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (!region || optind != argc) {
		usage(stderr);
		return 2;
	}
	if (!vo.mountpoint) {
		snprintf(mnt, sizeof(mnt), "%s/mnt", root);
		vo.mountpoint = mnt;
	}
	mkdir(vo.mountpoint, 0755);
	/* Before any thread starts: SIGUSR1 is taken by the view's recheck
	 * thread alone (sigtimedwait), never by its default action. */
	sigemptyset(&usr1);
	sigaddset(&usr1, SIGUSR1);
	pthread_sigmask(SIG_BLOCK, &usr1, NULL);
	rc = daxfs_host_uuid_load(root, ho.uuid, &err);
	if (rc == 0)
		rc = daxfs_parse_region(region, path, sizeof(path), &oo.offset, &err);
	if (rc == 0) {
		oo.path = path;
		rc = daxfs_open(&oo, &fs, &err);
	}
	if (rc == 0) {
		rc = daxfs_host_attach(fs, &ho, &err);
		if (rc < 0)
			daxfs_abandon(fs);
	}
	if (rc == 0) {
		rc = daxfs_heartbeat_start(fs);
		if (rc == 0)
			rc = view_run(fs, &vo, &err);
		daxfs_close(fs);
	}
	if (rc < 0) {
		fprintf(stderr, "daxfs-view: %s\n", err.msg[0] ? err.msg : strerror(-rc));
		return 1;
	}
	return 0;
}
