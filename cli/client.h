/* daxfsctl's client of the daxfsd control API. */
#ifndef DAXFSCTL_CLIENT_H
#define DAXFSCTL_CLIENT_H

#include <jansson.h>

/* Socket path: --address, else $DAXFS_ADDRESS, else the default. */
const char *client_address(const char *flag);
/* Send one request; events go to on_event (may be NULL).  Returns 0 and
 * *result (new reference) on success; on failure prints the daemon's
 * error once and returns -1. */
int client_call(const char *address, const char *method, json_t *params,
		void (*on_event)(json_t *ev, void *arg), void *arg,
		json_t **result);

#endif
