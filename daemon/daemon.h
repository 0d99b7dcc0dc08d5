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
};

/* The control API methods (methods.c). */
extern const struct api_method daemon_methods[];

/* Pull ref into the region (pull.c); progress goes to call as events.
 * With pin, the image is pinned before the pull's holds are dropped. */
int pull_image(struct daemon *d, const char *ref, const char *platform, int pin,
	       struct api_call *call, json_t **result, struct daxfs_err *err);

/* Sample the hosts' liveness for "hosts" (methods.c); the reaper calls it. */
void hosts_watch(struct daemon *d);

/* If another host reaped this incarnation, stop at once: log it and exit
 * non-zero (main.c), so the service manager starts a new incarnation. */
void daemon_exit_if_reaped(struct daemon *d);

#endif
