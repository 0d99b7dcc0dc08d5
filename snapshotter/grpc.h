/* A gRPC server over HTTP/2 (cleartext, prior knowledge, as gRPC
 * clients speak it on unix sockets), on libnghttp2 and protobuf-c.
 *
 * Each accepted connection gets a thread that runs its HTTP/2 session;
 * each call runs its handler on a thread of its own, so the streams of
 * one connection (containerd multiplexes every call on one) proceed
 * concurrently.  Unary calls and server streaming are supported; request
 * streaming and message compression are not. */
#ifndef DAXFS_GRPC_H
#define DAXFS_GRPC_H

#include <protobuf-c/protobuf-c.h>

#include "daxfs.h"

enum grpc_status {
	GRPC_OK = 0,
	GRPC_CANCELLED = 1,
	GRPC_UNKNOWN = 2,
	GRPC_INVALID_ARGUMENT = 3,
	GRPC_NOT_FOUND = 5,
	GRPC_ALREADY_EXISTS = 6,
	GRPC_RESOURCE_EXHAUSTED = 8,
	GRPC_FAILED_PRECONDITION = 9,
	GRPC_UNIMPLEMENTED = 12,
	GRPC_INTERNAL = 13,
	GRPC_UNAVAILABLE = 14,
};

/* What a handler answers: zero or more messages, then a status. */
struct grpc_reply;

struct grpc_method {
	const char *path;	/* "/package.Service/Method" */
	const ProtobufCMessageDescriptor *input;
	/* Returns a grpc_status.  A unary method adds one message on
	 * success; a server-streaming one any number. */
	int (*handler)(void *ctx, const ProtobufCMessage *req,
		       struct grpc_reply *r);
};

/* Append one length-prefixed message: 0 or -ENOMEM. */
int grpc_reply_message(struct grpc_reply *r, const ProtobufCMessage *m);
/* Set the status message sent with a failure; returns status. */
__attribute__((format(printf, 3, 4)))
int grpc_reply_error(struct grpc_reply *r, int status, const char *fmt, ...);

struct grpc_server;

/* Serve methods (terminated by a NULL path) on the listening socket
 * listen_fd, which the server then owns. */
int grpc_server_start(int listen_fd, const struct grpc_method *methods,
		      void *ctx, struct grpc_server **out,
		      struct daxfs_err *err);
/* Stop accepting, end every connection once its running calls return,
 * and free the server.  Safe on NULL. */
void grpc_server_stop(struct grpc_server *s);

#endif
