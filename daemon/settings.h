/* daxfsd configuration: flags and a JSON file (jansson). */
#ifndef DAXFSD_SETTINGS_H
#define DAXFSD_SETTINGS_H

#include <stdint.h>

#include "daxfs.h"

#define SETTINGS_MAX_LIST 16
#define SETTINGS_SNAPSHOTTER_ADDRESS "/run/daxfs/snapshotter.sock"

struct settings {
	char region[4096];
	char host_name[65];
	char root[4096];
	char address[4096];
	char snapshotter_address[4096];	/* containerd's snapshots gRPC socket */
	char log_level[16];
	char platform[100];		/* "" = this host's */
	char docker_config[4096];	/* "" = $HOME/.docker/config.json */
	char view[16];			/* "managed" (default) or "external" */
	char view_mountpoint[4096];	/* "" = ROOT/mnt */
	char view_binary[4096];		/* "" = daxfs-view beside daxfsd */
	char containerd_root[4096];	/* "" = no image-filesystem bind mount */
	char *insecure[SETTINGS_MAX_LIST];
	int ninsecure;
	char *mirrors[SETTINGS_MAX_LIST];	/* "docker.io=http://host:port" */
	int nmirrors;
	uint32_t pull_concurrency;
	uint32_t lease_ms, grace_ms;
	uint32_t connect_timeout_ms, stall_timeout_ms, retries, backoff_ms;
	uint32_t gc_low_watermark;	/* percent free below which a pull evicts */
	uint32_t gc_target;		/* percent free an eviction aims for */
	uint32_t view_recheck_ms;	/* the view's look for unmounted layers */
};

/* Defaults, then the config file (--config, default
 * /etc/daxfs/config.json; a missing default file is fine), then flags,
 * which win.  -EINVAL with a message for unknown keys or flags. */
int settings_load(int argc, char **argv, struct settings *c, struct daxfs_err *err);
void settings_free(struct settings *c);
void settings_usage(void);

#endif
