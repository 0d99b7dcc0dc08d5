/* The state one daxfsd process shares between its threads. */
#ifndef DAXFSD_DAEMON_H
#define DAXFSD_DAEMON_H

#include <stdatomic.h>

#include "api.h"
#include "daxfs.h"
#include "manifest.h"
#include "registry.h"
#include "settings.h"

struct daemon {
	struct settings *cfg;
	struct daxfs *fs;
	struct registry *reg;
	struct platform plat;
	_Atomic int stopping;	/* set by SIGTERM/SIGINT: abandon work */
	/* containerd Prepares labelled by CRI: region pulls started for them,
	 * and those answered by a local snapshot instead (snapshotter). */
	_Atomic uint64_t cri_pulls, cri_fallbacks;
	/* Failed imports of unpacked snapshots (the snapshotter's count;
	 * main.c sets it when the snapshotter is linked in). */
	uint64_t (*import_failures)(void);
};

/* The control API methods (methods.c). */
extern const struct api_method daemon_methods[];

/* Pull ref into the region (pull.c); progress goes to call as events.
 * With pin, the image is pinned before the pull's holds are dropped. */
int pull_image(struct daemon *d, const char *ref, const char *platform, int pin,
	       struct api_call *call, json_t **result, struct daxfs_err *err);

/* Evict unheld layers if free data or metadata is below the low
 * watermark or below need_data (a rough need of the write to come).  With
 * more (after ENOSPC), evict whatever the gc-target wants reach; -ENOSPC
 * with the region-full message if nothing could be freed (pull.c). */
int region_make_room(struct daemon *d, uint64_t need_data, int more, struct daxfs_err *err);

/* Layer diff_id is being unpacked (by another host, or another pull of
 * ours): wait while that goes on, reaping its host if it dies (then the
 * layer can be claimed again).  0 once the layer is no longer UNPACKING
 * (READY, or free to claim), -ECANCELED if the daemon is stopping.
 * moved(progress, arg), if given, is called when the unpacker's progress
 * counter moves. */
int layer_wait_unpacked(struct daemon *d, const uint8_t diff_id[32],
			void (*moved)(uint64_t progress, void *arg), void *arg,
			struct daxfs_err *err);

/* Sample the hosts' liveness for "hosts" (methods.c); the reaper calls it. */
void hosts_watch(struct daemon *d);

/* If another host reaped this incarnation, stop at once: log it and exit
 * non-zero (main.c), so the service manager starts a new incarnation. */
void daemon_exit_if_reaped(struct daemon *d);

#endif
