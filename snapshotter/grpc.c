/* gRPC over HTTP/2 with libnghttp2: see grpc.h.
 *
 * An nghttp2 session is not thread-safe, so only its connection's thread
 * touches it.  Handler threads fill a call's reply, put the call on the
 * connection's done list and wake the connection thread through a pipe;
 * that thread submits the reply.  A call whose stream the client reset
 * meanwhile is freed unanswered. */
#include <errno.h>
#include <fcntl.h>
#include <nghttp2/nghttp2.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "grpc.h"

/* Largest request message accepted (gRPC's usual default). */
#define GRPC_MAX_REQUEST (4u << 20)
#define GRPC_MAX_STREAMS 128

struct grpc_reply {
	uint8_t *buf;
	size_t len, cap;
	int status;
	char msg[1024];
};

struct conn;

struct call {
	struct call *next_done;		/* on the connection's done list */
	struct call *prev, *next;	/* every live call of the connection */
	struct conn *conn;
	int32_t stream_id;
	const struct grpc_method *method;
	int not_grpc;			/* content-type was not application/grpc */
	int too_big;
	int running;			/* a handler thread owns it */
	int closed;			/* the stream is gone */
	size_t sent;			/* reply bytes handed to nghttp2 */
	uint8_t *in;
	size_t inlen, incap;
	struct grpc_reply reply;
};

struct grpc_server {
	int fd;
	int wake[2];
	const struct grpc_method *methods;
	void *ctx;
	pthread_t thread;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct conn *conns;
	int nconns;
	_Atomic int stopping;
};

struct conn {
	struct grpc_server *srv;
	struct conn *prev, *next;	/* in srv->conns */
	int fd;
	int wake[2];
	nghttp2_session *h2;
	struct call *calls;
	pthread_mutex_t lock;		/* done, workers */
	pthread_cond_t idle;
	struct call *done;
	int workers;
};

/* ---- replies ---- */

static int reserve(struct grpc_reply *r, size_t more)
{
	size_t cap = r->cap ? r->cap : 256;
	uint8_t *p;

	if (r->len + more <= r->cap)
		return 0;
	while (cap < r->len + more)
		cap *= 2;
	p = realloc(r->buf, cap);
	if (!p)
		return -ENOMEM;
	r->buf = p;
	r->cap = cap;
	return 0;
}

int grpc_reply_message(struct grpc_reply *r, const ProtobufCMessage *m)
{
	size_t n = protobuf_c_message_get_packed_size(m);
	uint8_t *p;

	if (n > UINT32_MAX || reserve(r, n + 5) < 0)
		return -ENOMEM;
	/* The gRPC frame: a compressed flag, then a big-endian length. */
	p = r->buf + r->len;
	p[0] = 0;
	p[1] = (uint8_t)(n >> 24);
	p[2] = (uint8_t)(n >> 16);
	p[3] = (uint8_t)(n >> 8);
	p[4] = (uint8_t)n;
	protobuf_c_message_pack(m, p + 5);
	r->len += n + 5;
	return 0;
}

int grpc_reply_error(struct grpc_reply *r, int status, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(r->msg, sizeof(r->msg), fmt, ap);
	va_end(ap);
	r->status = status;
	return status;
}

/* grpc-message is percent-encoded: printable ASCII but '%' as is. */
static void percent_encode(const char *in, char *out, size_t len)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t o = 0;

	for (const unsigned char *p = (const unsigned char *)in; *p && o + 4 < len; p++) {
		if (*p >= 0x20 && *p <= 0x7e && *p != '%') {
			out[o++] = (char)*p;
			continue;
		}
		out[o++] = '%';
		out[o++] = hex[*p >> 4];
		out[o++] = hex[*p & 15];
	}
	out[o] = 0;
}

/* ---- calls ---- */

static void call_free(struct call *c)
{
	if (c->prev)
		c->prev->next = c->next;
	else
		c->conn->calls = c->next;
	if (c->next)
		c->next->prev = c->prev;
	free(c->in);
	free(c->reply.buf);
	free(c);
}

/* Unpack the one request message and run the handler. */
static void call_run(struct call *c)
{
	struct grpc_reply *r = &c->reply;
	ProtobufCMessage *req;
	uint32_t n;

	if (c->inlen < 5)
		goto bad;
	if (c->in[0] != 0) {
		grpc_reply_error(r, GRPC_UNIMPLEMENTED, "compressed messages are not supported");
		return;
	}
	n = (uint32_t)c->in[1] << 24 | (uint32_t)c->in[2] << 16 | (uint32_t)c->in[3] << 8 |
	    c->in[4];
	if (n != c->inlen - 5)
		goto bad;
	req = protobuf_c_message_unpack(c->method->input, NULL, n, c->in + 5);
	if (!req) {
		grpc_reply_error(r, GRPC_INTERNAL, "cannot decode the %s request",
				 c->method->input->name);
		return;
	}
	r->status = c->method->handler(c->conn->srv->ctx, req, r);
	protobuf_c_message_free_unpacked(req, NULL);
	if (r->status != GRPC_OK && !r->msg[0])
		snprintf(r->msg, sizeof(r->msg), "failed");
	return;
bad:
	grpc_reply_error(r, GRPC_UNIMPLEMENTED, "expected exactly one request message");
}

static void wake(int fd)
{
	ssize_t n = write(fd, "", 1);

	(void)n;	/* a full pipe already wakes the reader */
}

static void *worker_main(void *arg)
{
	struct call *c = arg;
	struct conn *k = c->conn;

	call_run(c);
	pthread_mutex_lock(&k->lock);
	c->next_done = k->done;
	k->done = c;
	wake(k->wake[1]);
	/* Last touch of k: the connection thread frees it once workers is 0. */
	k->workers--;
	pthread_cond_signal(&k->idle);
	pthread_mutex_unlock(&k->lock);
	return NULL;
}

static void submit_reply(struct conn *k, struct call *c);

/* The request is complete: run it on a thread of its own. */
static void dispatch(struct conn *k, struct call *c)
{
	pthread_attr_t attr;
	pthread_t t;
	int rc;

	if (c->not_grpc || c->too_big || !c->method) {
		if (c->too_big)
			grpc_reply_error(&c->reply, GRPC_RESOURCE_EXHAUSTED,
					 "request larger than %u bytes", GRPC_MAX_REQUEST);
		else if (!c->method)
			grpc_reply_error(&c->reply, GRPC_UNIMPLEMENTED, "unknown method");
		submit_reply(k, c);
		return;
	}
	c->running = 1;
	pthread_mutex_lock(&k->lock);
	k->workers++;
	pthread_mutex_unlock(&k->lock);
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	rc = pthread_create(&t, &attr, worker_main, c);
	pthread_attr_destroy(&attr);
	if (rc != 0)
		worker_main(c);	/* no thread to be had: answer inline */
}

/* ---- nghttp2 callbacks ---- */

static ssize_t send_cb(nghttp2_session *s, const uint8_t *data, size_t len, int flags,
		       void *ud)
{
	struct conn *k = ud;
	ssize_t n = send(k->fd, data, len, MSG_NOSIGNAL);

	(void)s;
	(void)flags;
	if (n >= 0)
		return n;
	if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
		return NGHTTP2_ERR_WOULDBLOCK;
	return NGHTTP2_ERR_CALLBACK_FAILURE;
}

static int begin_headers_cb(nghttp2_session *s, const nghttp2_frame *f, void *ud)
{
	struct conn *k = ud;
	struct call *c;

	if (f->hd.type != NGHTTP2_HEADERS || f->headers.cat != NGHTTP2_HCAT_REQUEST)
		return 0;
	c = calloc(1, sizeof(*c));
	if (!c)
		return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
	c->conn = k;
	c->stream_id = f->hd.stream_id;
	c->not_grpc = 1;	/* until its content-type says otherwise */
	c->next = k->calls;
	if (k->calls)
		k->calls->prev = c;
	k->calls = c;
	nghttp2_session_set_stream_user_data(s, f->hd.stream_id, c);
	return 0;
}

static const struct grpc_method *find_method(const struct grpc_server *srv,
					     const uint8_t *path, size_t len)
{
	for (const struct grpc_method *m = srv->methods; m->path; m++)
		if (strlen(m->path) == len && !memcmp(m->path, path, len))
			return m;
	return NULL;
}

static int header_cb(nghttp2_session *s, const nghttp2_frame *f, const uint8_t *name,
		     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
		     void *ud)
{
	static const char grpc_type[] = "application/grpc";
	struct conn *k = ud;
	struct call *c;

	(void)flags;
	if (f->hd.type != NGHTTP2_HEADERS || f->headers.cat != NGHTTP2_HCAT_REQUEST)
		return 0;
	c = nghttp2_session_get_stream_user_data(s, f->hd.stream_id);
	if (!c)
		return 0;
	if (namelen == 5 && !memcmp(name, ":path", 5))
		c->method = find_method(k->srv, value, valuelen);
	else if (namelen == 12 && !memcmp(name, "content-type", 12))
		/* "application/grpc" or "application/grpc+proto" and the like */
		c->not_grpc = valuelen < sizeof(grpc_type) - 1 ||
			      memcmp(value, grpc_type, sizeof(grpc_type) - 1) ||
			      (valuelen > sizeof(grpc_type) - 1 &&
			       value[sizeof(grpc_type) - 1] != '+' &&
			       value[sizeof(grpc_type) - 1] != ';');
	return 0;
}

static int data_chunk_cb(nghttp2_session *s, uint8_t flags, int32_t sid, const uint8_t *data,
			 size_t len, void *ud)
{
	struct call *c = nghttp2_session_get_stream_user_data(s, sid);
	size_t cap;
	uint8_t *p;

	(void)flags;
	(void)ud;
	if (!c || c->too_big)
		return 0;
	if (c->inlen + len > GRPC_MAX_REQUEST + 5) {
		c->too_big = 1;
		return 0;
	}
	if (c->inlen + len > c->incap) {
		cap = c->incap ? c->incap : 256;
		while (cap < c->inlen + len)
			cap *= 2;
		p = realloc(c->in, cap);
		if (!p)
			return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
		c->in = p;
		c->incap = cap;
	}
	memcpy(c->in + c->inlen, data, len);
	c->inlen += len;
	return 0;
}

static int frame_recv_cb(nghttp2_session *s, const nghttp2_frame *f, void *ud)
{
	struct call *c;

	if ((f->hd.type != NGHTTP2_HEADERS && f->hd.type != NGHTTP2_DATA) ||
	    !(f->hd.flags & NGHTTP2_FLAG_END_STREAM))
		return 0;
	c = nghttp2_session_get_stream_user_data(s, f->hd.stream_id);
	if (c && !c->running)
		dispatch(ud, c);
	return 0;
}

static int stream_close_cb(nghttp2_session *s, int32_t sid, uint32_t code, void *ud)
{
	struct call *c = nghttp2_session_get_stream_user_data(s, sid);

	(void)code;
	(void)ud;
	if (!c)
		return 0;
	nghttp2_session_set_stream_user_data(s, sid, NULL);
	c->closed = 1;
	if (!c->running)
		call_free(c);
	return 0;
}

static ssize_t body_cb(nghttp2_session *s, int32_t sid, uint8_t *buf, size_t len,
		       uint32_t *flags, nghttp2_data_source *src, void *ud)
{
	struct call *c = src->ptr;
	size_t n = c->reply.len - c->sent;
	char status[16], msg[3100];

	(void)ud;
	if (n > len)
		n = len;
	memcpy(buf, c->reply.buf + c->sent, n);
	c->sent += n;
	if (c->sent < c->reply.len)
		return (ssize_t)n;
	/* The body is out: the status goes in the trailers. */
	snprintf(status, sizeof(status), "%d", c->reply.status);
	percent_encode(c->reply.msg, msg, sizeof(msg));
	nghttp2_nv tr[] = {
		{ (uint8_t *)"grpc-status", (uint8_t *)status, 11, strlen(status), 0 },
		{ (uint8_t *)"grpc-message", (uint8_t *)msg, 12, strlen(msg), 0 },
	};
	*flags |= NGHTTP2_DATA_FLAG_EOF;
	if (nghttp2_submit_trailer(s, sid, tr, c->reply.msg[0] ? 2 : 1) == 0)
		*flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
	return (ssize_t)n;
}

#define NV(n, v) { (uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, strlen(v), 0 }

/* Headers, the messages, then trailers; "Trailers-Only" (one HEADERS
 * frame) when there is no message. */
static void submit_reply(struct conn *k, struct call *c)
{
	char status[16], msg[3100];
	nghttp2_data_provider body = { .source.ptr = c, .read_callback = body_cb };
	int rc;

	if (c->not_grpc) {
		nghttp2_nv h[] = { NV(":status", "415") };

		rc = nghttp2_submit_response(k->h2, c->stream_id, h, 1, NULL);
	} else if (c->reply.len) {
		nghttp2_nv h[] = { NV(":status", "200"), NV("content-type", "application/grpc") };

		rc = nghttp2_submit_response(k->h2, c->stream_id, h, 2, &body);
	} else {
		snprintf(status, sizeof(status), "%d", c->reply.status);
		percent_encode(c->reply.msg, msg, sizeof(msg));
		nghttp2_nv h[] = { NV(":status", "200"), NV("content-type", "application/grpc"),
				   NV("grpc-status", status), NV("grpc-message", msg) };

		rc = nghttp2_submit_response(k->h2, c->stream_id, h, msg[0] ? 4 : 3, NULL);
	}
	if (rc != 0)
		nghttp2_submit_rst_stream(k->h2, NGHTTP2_FLAG_NONE, c->stream_id,
					  NGHTTP2_INTERNAL_ERROR);
}

/* Replies the handler threads finished since we last looked. */
static void submit_done(struct conn *k)
{
	struct call *c, *next;

	pthread_mutex_lock(&k->lock);
	c = k->done;
	k->done = NULL;
	pthread_mutex_unlock(&k->lock);
	for (; c; c = next) {
		next = c->next_done;
		c->running = 0;
		if (c->closed)
			call_free(c);	/* the client gave up on it */
		else
			submit_reply(k, c);
	}
}

/* ---- connections ---- */

static int session_new(struct conn *k)
{
	nghttp2_session_callbacks *cb;
	nghttp2_option *opt;
	nghttp2_settings_entry iv[] = {
		{ NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, GRPC_MAX_STREAMS },
	};
	int rc;

	if (nghttp2_session_callbacks_new(&cb) != 0)
		return -ENOMEM;
	nghttp2_session_callbacks_set_send_callback(cb, send_cb);
	nghttp2_session_callbacks_set_on_begin_headers_callback(cb, begin_headers_cb);
	nghttp2_session_callbacks_set_on_header_callback(cb, header_cb);
	nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, data_chunk_cb);
	nghttp2_session_callbacks_set_on_frame_recv_callback(cb, frame_recv_cb);
	nghttp2_session_callbacks_set_on_stream_close_callback(cb, stream_close_cb);
	if (nghttp2_option_new(&opt) != 0) {
		nghttp2_session_callbacks_del(cb);
		return -ENOMEM;
	}
	/* gRPC clients on unix sockets send the socket path as :authority,
	 * which nghttp2's HTTP checks refuse; gRPC needs none of them. */
	nghttp2_option_set_no_http_messaging(opt, 1);
	rc = nghttp2_session_server_new2(&k->h2, cb, k, opt);
	nghttp2_option_del(opt);
	nghttp2_session_callbacks_del(cb);
	if (rc != 0)
		return -ENOMEM;
	if (nghttp2_submit_settings(k->h2, NGHTTP2_FLAG_NONE, iv, 1) != 0)
		return -ENOMEM;
	return 0;
}

static int workers_running(struct conn *k)
{
	int n;

	pthread_mutex_lock(&k->lock);
	n = k->workers || k->done;
	pthread_mutex_unlock(&k->lock);
	return n;
}

/* Feed what the socket has to the session: 0, or 1 at end of input. */
static int receive(struct conn *k)
{
	uint8_t buf[16384];
	ssize_t n = recv(k->fd, buf, sizeof(buf), 0);

	if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
		return 0;
	if (n <= 0)
		return 1;
	return nghttp2_session_mem_recv(k->h2, buf, (size_t)n) < 0 ? 1 : 0;
}

/* Run the session until the client leaves or the server stops. */
static void serve(struct conn *k)
{
	int eof = 0;

	for (;;) {
		struct pollfd p[2] = { { k->fd, 0, 0 }, { k->wake[0], POLLIN, 0 } };
		char drain[64];

		submit_done(k);
		if (!eof && nghttp2_session_send(k->h2) != 0)
			eof = 1;
		if (atomic_load(&k->srv->stopping))
			return;
		if (!eof && nghttp2_session_want_read(k->h2))
			p[0].events |= POLLIN;
		if (!eof && nghttp2_session_want_write(k->h2))
			p[0].events |= POLLOUT;
		if (!p[0].events)
			eof = 1;
		if (eof && !workers_running(k))
			return;
		if (poll(p, 2, -1) < 0 && errno != EINTR)
			return;
		if (p[1].revents & POLLIN)
			while (read(k->wake[0], drain, sizeof(drain)) > 0)
				;
		if (p[0].revents & (POLLIN | POLLHUP | POLLERR) && receive(k))
			eof = 1;
	}
}

static void conn_free(struct conn *k)
{
	pthread_mutex_lock(&k->lock);
	while (k->workers)
		pthread_cond_wait(&k->idle, &k->lock);
	pthread_mutex_unlock(&k->lock);
	/* Streams still open when the session goes get no close callback. */
	while (k->calls)
		call_free(k->calls);
	nghttp2_session_del(k->h2);
	close(k->fd);
	close(k->wake[0]);
	close(k->wake[1]);
	pthread_mutex_destroy(&k->lock);
	pthread_cond_destroy(&k->idle);
	free(k);
}

/* Unlink k from the server and free it. */
static void conn_end(struct conn *k)
{
	struct grpc_server *srv = k->srv;

	pthread_mutex_lock(&srv->lock);
	if (k->prev)
		k->prev->next = k->next;
	else
		srv->conns = k->next;
	if (k->next)
		k->next->prev = k->prev;
	pthread_mutex_unlock(&srv->lock);
	conn_free(k);
	pthread_mutex_lock(&srv->lock);
	srv->nconns--;
	pthread_cond_broadcast(&srv->cond);
	pthread_mutex_unlock(&srv->lock);
}

static void *conn_main(void *arg)
{
	struct conn *k = arg;

	if (session_new(k) == 0)
		serve(k);
	conn_end(k);
	return NULL;
}

static void conn_start(struct grpc_server *srv, int fd)
{
	struct conn *k = calloc(1, sizeof(*k));
	pthread_attr_t attr;
	pthread_t t;
	int rc;

	if (!k || pipe2(k->wake, O_CLOEXEC | O_NONBLOCK) < 0) {
		free(k);
		close(fd);
		return;
	}
	k->srv = srv;
	k->fd = fd;
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
	pthread_mutex_init(&k->lock, NULL);
	pthread_cond_init(&k->idle, NULL);
	pthread_mutex_lock(&srv->lock);
	k->next = srv->conns;
	if (srv->conns)
		srv->conns->prev = k;
	srv->conns = k;
	srv->nconns++;
	pthread_mutex_unlock(&srv->lock);
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	rc = pthread_create(&t, &attr, conn_main, k);
	pthread_attr_destroy(&attr);
	if (rc != 0)
		conn_end(k);
}

static void *accept_main(void *arg)
{
	struct grpc_server *srv = arg;

	while (!atomic_load(&srv->stopping)) {
		struct pollfd p[2] = { { srv->fd, POLLIN, 0 }, { srv->wake[0], POLLIN, 0 } };
		int fd;

		if (poll(p, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		if (p[1].revents)
			break;
		fd = accept4(srv->fd, NULL, NULL, SOCK_CLOEXEC);
		if (fd >= 0)
			conn_start(srv, fd);
		else if (errno == EMFILE || errno == ENFILE)
			poll(NULL, 0, 100);	/* let connections close first */
	}
	return NULL;
}

int grpc_server_start(int listen_fd, const struct grpc_method *methods, void *ctx,
		      struct grpc_server **out, struct daxfs_err *err)
{
	struct grpc_server *srv = calloc(1, sizeof(*srv));
	int rc;

	if (!srv) {
		close(listen_fd);
		return daxfs_err_set(err, -ENOMEM, "out of memory");
	}
	srv->fd = listen_fd;
	srv->methods = methods;
	srv->ctx = ctx;
	if (pipe2(srv->wake, O_CLOEXEC | O_NONBLOCK) < 0) {
		rc = daxfs_err_set(err, -errno, "pipe: %s", strerror(errno));
		close(listen_fd);
		free(srv);
		return rc;
	}
	pthread_mutex_init(&srv->lock, NULL);
	pthread_cond_init(&srv->cond, NULL);
	rc = pthread_create(&srv->thread, NULL, accept_main, srv);
	if (rc != 0) {
		close(srv->wake[0]);
		close(srv->wake[1]);
		close(listen_fd);
		free(srv);
		return daxfs_err_set(err, -rc, "thread: %s", strerror(rc));
	}
	*out = srv;
	return 0;
}

void grpc_server_stop(struct grpc_server *srv)
{
	if (!srv)
		return;
	atomic_store(&srv->stopping, 1);
	wake(srv->wake[1]);
	pthread_join(srv->thread, NULL);
	close(srv->fd);
	pthread_mutex_lock(&srv->lock);
	for (struct conn *k = srv->conns; k; k = k->next)
		wake(k->wake[1]);
	while (srv->nconns)
		pthread_cond_wait(&srv->cond, &srv->lock);
	pthread_mutex_unlock(&srv->lock);
	close(srv->wake[0]);
	close(srv->wake[1]);
	pthread_mutex_destroy(&srv->lock);
	pthread_cond_destroy(&srv->cond);
	free(srv);
}
