/* A small gRPC client for the tests of the snapshotter's socket: HTTP/2
 * (nghttp2) on a unix socket, unary requests framed the gRPC way (one
 * flag byte, a 4-byte big-endian length, the packed message), answers
 * collected per stream with their grpc-status and grpc-message.
 *
 * Header-only (static inline) because each test binary is built from one
 * source file.  No globals: each thread uses its own struct snapclient.
 *
 *   struct snapclient cl;
 *   struct snapclient_call c = { 0 };
 *
 *   snapclient_connect(&cl, "/run/x.sock");
 *   snapclient_request(&c, SNAPCLIENT_SERVICE "Stat", &req.base);
 *   snapclient_run(&cl, &c, 1);       (any number of calls at once)
 *   ... c.status, c.msg, snapclient_unpack(&c, descriptor) ...
 *   snapclient_call_free(&c);
 *   snapclient_close(&cl);
 *
 * or, for one call on a connection of its own, snapclient_call().
 */
#ifndef DAXFS_TEST_SNAPCLIENT_H
#define DAXFS_TEST_SNAPCLIENT_H

#include <errno.h>
#include <nghttp2/nghttp2.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <protobuf-c/protobuf-c.h>

#define SNAPCLIENT_SERVICE "/containerd.services.snapshots.v1.Snapshots/"

/* One request and what came back for it. */
struct snapclient_call {
	char *path;			/* :path (owned) */
	const char *content_type;	/* NULL: application/grpc */
	uint8_t *req;			/* frame header + packed message */
	size_t reqlen, sent;
	uint8_t *body;			/* the answer's DATA, frame headers included */
	size_t bodylen;
	char status[8];			/* grpc-status, "" if none came */
	char http[8];			/* :status */
	char msg[1024];			/* grpc-message, as sent (percent-encoded) */
	int done;			/* the stream has closed */
};

/* One connection. */
struct snapclient {
	int fd;
	nghttp2_session *h2;
	const char *authority;		/* "localhost" unless the caller sets it */
	int open;			/* streams submitted and not yet closed */
};

static inline ssize_t snapclient_send_cb(nghttp2_session *s, const uint8_t *d, size_t n,
					 int flags, void *ud)
{
	(void)s;
	(void)flags;
	return send(((struct snapclient *)ud)->fd, d, n, MSG_NOSIGNAL);
}

static inline void snapclient_copy_value(char *out, size_t size, const uint8_t *v, size_t n)
{
	if (n >= size)
		n = size - 1;
	memcpy(out, v, n);
	out[n] = 0;
}

/* Headers and trailers alike: the stream's call picks out what it keeps. */
static inline int snapclient_header_cb(nghttp2_session *s, const nghttp2_frame *f,
				       const uint8_t *name, size_t nl, const uint8_t *v,
				       size_t vl, uint8_t flags, void *ud)
{
	struct snapclient_call *c = nghttp2_session_get_stream_user_data(s, f->hd.stream_id);

	(void)flags;
	(void)ud;
	if (!c)
		return 0;
	if (nl == 11 && !memcmp(name, "grpc-status", 11))
		snapclient_copy_value(c->status, sizeof(c->status), v, vl);
	else if (nl == 12 && !memcmp(name, "grpc-message", 12))
		snapclient_copy_value(c->msg, sizeof(c->msg), v, vl);
	else if (nl == 7 && !memcmp(name, ":status", 7))
		snapclient_copy_value(c->http, sizeof(c->http), v, vl);
	return 0;
}

static inline int snapclient_data_cb(nghttp2_session *s, uint8_t flags, int32_t sid,
				     const uint8_t *d, size_t n, void *ud)
{
	struct snapclient_call *c = nghttp2_session_get_stream_user_data(s, sid);
	uint8_t *grown;

	(void)flags;
	(void)ud;
	if (!c || n == 0)
		return 0;
	grown = realloc(c->body, c->bodylen + n);
	if (!grown)
		return NGHTTP2_ERR_CALLBACK_FAILURE;
	memcpy(grown + c->bodylen, d, n);
	c->body = grown;
	c->bodylen += n;
	return 0;
}

static inline int snapclient_close_cb(nghttp2_session *s, int32_t sid, uint32_t code, void *ud)
{
	struct snapclient_call *c = nghttp2_session_get_stream_user_data(s, sid);

	(void)code;
	if (c)
		c->done = 1;
	((struct snapclient *)ud)->open--;
	return 0;
}

static inline ssize_t snapclient_body_cb(nghttp2_session *s, int32_t sid, uint8_t *buf,
					 size_t len, uint32_t *flags,
					 nghttp2_data_source *src, void *ud)
{
	struct snapclient_call *c = src->ptr;
	size_t n = c->reqlen - c->sent < len ? c->reqlen - c->sent : len;

	(void)s;
	(void)sid;
	(void)ud;
	memcpy(buf, c->req + c->sent, n);
	c->sent += n;
	if (c->sent == c->reqlen)
		*flags |= NGHTTP2_DATA_FLAG_EOF;
	return (ssize_t)n;
}

/* Connect to sa (a path or an abstract name, all of sun_path counts) and
 * start the HTTP/2 session; 0 or -errno. */
static inline int snapclient_connect_addr(struct snapclient *cl, const struct sockaddr_un *sa)
{
	nghttp2_session_callbacks *cb;
	int rc;

	memset(cl, 0, sizeof(*cl));
	cl->authority = "localhost";
	cl->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (cl->fd < 0)
		return -errno;
	if (connect(cl->fd, (const struct sockaddr *)sa, sizeof(*sa)) < 0) {
		rc = -errno;
		goto out_close;
	}
	rc = -ENOMEM;
	if (nghttp2_session_callbacks_new(&cb) != 0)
		goto out_close;
	nghttp2_session_callbacks_set_send_callback(cb, snapclient_send_cb);
	nghttp2_session_callbacks_set_on_header_callback(cb, snapclient_header_cb);
	nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, snapclient_data_cb);
	nghttp2_session_callbacks_set_on_stream_close_callback(cb, snapclient_close_cb);
	if (nghttp2_session_client_new(&cl->h2, cb, cl) != 0)
		cl->h2 = NULL;
	nghttp2_session_callbacks_del(cb);
	if (!cl->h2)
		goto out_close;
	if (nghttp2_submit_settings(cl->h2, NGHTTP2_FLAG_NONE, NULL, 0) != 0) {
		rc = -EPROTO;
		nghttp2_session_del(cl->h2);
		goto out_close;
	}
	return 0;
out_close:
	close(cl->fd);
	cl->fd = -1;
	return rc;
}

/* Connect to the unix socket at path; 0 or -errno. */
static inline int snapclient_connect(struct snapclient *cl, const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };

	if (strlen(path) >= sizeof(sa.sun_path))
		return -ENAMETOOLONG;
	memcpy(sa.sun_path, path, strlen(path) + 1);
	return snapclient_connect_addr(cl, &sa);
}

static inline void snapclient_close(struct snapclient *cl)
{
	nghttp2_session_del(cl->h2);
	close(cl->fd);
	cl->h2 = NULL;
	cl->fd = -1;
}

/* Reset c to a request of m on path; 0 or -ENOMEM.  Whatever the
 * result, c is to be freed with snapclient_call_free. */
static inline int snapclient_request(struct snapclient_call *c, const char *path,
				     const ProtobufCMessage *m)
{
	size_t n = protobuf_c_message_get_packed_size(m);

	memset(c, 0, sizeof(*c));
	c->path = strdup(path);
	c->req = malloc(n + 5);
	if (!c->path || !c->req)
		return -ENOMEM;
	c->req[0] = 0;	/* not compressed */
	c->req[1] = (uint8_t)(n >> 24);
	c->req[2] = (uint8_t)(n >> 16);
	c->req[3] = (uint8_t)(n >> 8);
	c->req[4] = (uint8_t)n;
	protobuf_c_message_pack(m, c->req + 5);
	c->reqlen = n + 5;
	return 0;
}

static inline void snapclient_call_free(struct snapclient_call *c)
{
	free(c->path);
	free(c->req);
	free(c->body);
	c->path = NULL;
	c->req = NULL;
	c->body = NULL;
}

#define SNAPCLIENT_NV(n, v) { (uint8_t *)(n), (uint8_t *)(v), strlen(n), strlen(v), 0 }

/* Send calls[0..n) as concurrent streams on cl and wait until all of them
 * have closed; 0, or -1 if the connection failed first (calls that had
 * ended by then have done set). */
static inline int snapclient_run(struct snapclient *cl, struct snapclient_call *calls, int n)
{
	int rc = 0;

	for (int i = 0; i < n; i++) {
		const char *ctype = calls[i].content_type ? calls[i].content_type
							  : "application/grpc";
		nghttp2_nv h[] = { SNAPCLIENT_NV(":method", "POST"),
				   SNAPCLIENT_NV(":scheme", "http"),
				   SNAPCLIENT_NV(":path", calls[i].path),
				   SNAPCLIENT_NV(":authority", cl->authority),
				   SNAPCLIENT_NV("content-type", ctype),
				   SNAPCLIENT_NV("te", "trailers") };
		nghttp2_data_provider body = { .source.ptr = &calls[i],
					       .read_callback = snapclient_body_cb };

		if (nghttp2_submit_request(cl->h2, NULL, h, 6, &body, &calls[i]) < 0)
			rc = -1;
		else
			cl->open++;
	}
	while (rc == 0 && cl->open > 0) {
		uint8_t buf[16384];
		ssize_t got;

		if (nghttp2_session_send(cl->h2) != 0)
			rc = -1;
		got = rc ? 0 : recv(cl->fd, buf, sizeof(buf), 0);
		if (got <= 0 || nghttp2_session_mem_recv(cl->h2, buf, (size_t)got) < 0)
			rc = -1;
	}
	return rc;
}

/* One unary call of method (after SNAPCLIENT_SERVICE) on a connection of
 * its own to the socket at sock; c holds the answer (free it with
 * snapclient_call_free, also on failure).  0 once the call ended, or -1
 * if no answer came. */
static inline int snapclient_call(const char *sock, const char *method,
				  const ProtobufCMessage *req, struct snapclient_call *c)
{
	struct snapclient cl;
	char path[256];
	int rc;

	snprintf(path, sizeof(path), SNAPCLIENT_SERVICE "%s", method);
	if (snapclient_request(c, path, req) < 0)
		return -1;
	if (snapclient_connect(&cl, sock) < 0)
		return -1;
	rc = snapclient_run(&cl, c, 1);
	snapclient_close(&cl);
	return rc == 0 && c->done ? 0 : -1;
}

/* The answer's first message unpacked with d (free it with
 * protobuf_c_message_free_unpacked), or NULL if there is none. */
static inline ProtobufCMessage *snapclient_unpack(const struct snapclient_call *c,
						  const ProtobufCMessageDescriptor *d)
{
	size_t len;

	if (c->bodylen < 5)
		return NULL;
	len = (size_t)c->body[1] << 24 | (size_t)c->body[2] << 16 | (size_t)c->body[3] << 8 |
	      c->body[4];
	if (len > c->bodylen - 5)
		return NULL;
	return protobuf_c_message_unpack(d, NULL, len, c->body + 5);
}

#endif
