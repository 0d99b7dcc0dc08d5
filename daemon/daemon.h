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

/* Pull ref into the region (pull.c); progress goes to call as events. */
int pull_image(struct daemon *d, const char *ref, const char *platform,
	       struct api_call *call, json_t **result, struct daxfs_err *err);

#endif
