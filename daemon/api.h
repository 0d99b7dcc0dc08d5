/* The control API: JSON lines over a unix socket (mode 0600).
 *
 * Request:   {"method": "pull", "params": {...}}
 * Events:    {"event": "...", ...}            (zero or more, e.g. progress)
 * Response:  {"ok": true, "result": {...}} or {"ok": false, "error": "..."}
 * One request per line; a connection may send several in turn. */
#ifndef DAXFSD_API_H
#define DAXFSD_API_H

#include <jansson.h>
#include <stdbool.h>

#include "daxfs.h"

struct api_call;

/* A method: fills *result (a new reference) or err; may send events. */
typedef int (*api_fn)(void *ctx, struct api_call *call, json_t *params,
		      json_t **result, struct daxfs_err *err);

struct api_method {
	const char *name;
	api_fn fn;
};

/* Send an event line to the caller; fails quietly if it hung up (the
 * method learns it from api_call_gone). Steals ev. */
void api_event(struct api_call *call, json_t *ev);
bool api_call_gone(struct api_call *call);

struct api_server;

int api_listen(const char *path, const struct api_method *methods, void *ctx,
	       struct api_server **out, struct daxfs_err *err);
/* Serve until api_stop; each connection gets its own thread. */
int api_serve(struct api_server *s);
/* From a signal-safe context: make api_serve return. */
void api_stop(struct api_server *s);
/* Wait for running calls to end, close and unlink the socket. */
void api_close(struct api_server *s);

#endif
