/* The gRPC server (snapshotter/grpc.c) from a small nghttp2 client:
 * unary calls, server streaming, failures in trailers-only responses
 * (percent-encoded messages), unknown methods, a non-gRPC request, and
 * many streams on several connections at once (also under TSan). */
#include <errno.h>
#include <nghttp2/nghttp2.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "check.h"
#include "grpc.h"
#include "snapshots.pb-c.h"

#define P(x) Containerd__Services__Snapshots__V1__##x
#define NCONNS 4
#define NSTREAMS 24

static struct sockaddr_un addr = { .sun_family = AF_UNIX };

/* ---- the server's methods ---- */

static int echo(void *ctx, const ProtobufCMessage *m, struct grpc_reply *r)
{
	const P(StatSnapshotRequest) *q = (const void *)m;
	P(StatSnapshotResponse) resp = CONTAINERD__SERVICES__SNAPSHOTS__V1__STAT_SNAPSHOT_RESPONSE__INIT;
	P(Info) info = CONTAINERD__SERVICES__SNAPSHOTS__V1__INFO__INIT;

	(void)ctx;
	info.name = q->key;
	resp.info = &info;
	return grpc_reply_message(r, &resp.base) ? GRPC_INTERNAL : GRPC_OK;
}

static int fail(void *ctx, const ProtobufCMessage *m, struct grpc_reply *r)
{
	(void)ctx;
	(void)m;
	return grpc_reply_error(r, GRPC_NOT_FOUND, "no such thing: \xc3\xbc%%");
}

/* As many messages as the first filter says. */
static int stream(void *ctx, const ProtobufCMessage *m, struct grpc_reply *r)
{
	const P(ListSnapshotsRequest) *q = (const void *)m;
	int n = q->n_filters ? atoi(q->filters[0]) : 0;

	(void)ctx;
	for (int i = 0; i < n; i++) {
		P(ListSnapshotsResponse) resp = CONTAINERD__SERVICES__SNAPSHOTS__V1__LIST_SNAPSHOTS_RESPONSE__INIT;

		if (grpc_reply_message(r, &resp.base))
			return GRPC_INTERNAL;
	}
	return GRPC_OK;
}

static const struct grpc_method methods[] = {
	{ "/t.S/Echo", &containerd__services__snapshots__v1__stat_snapshot_request__descriptor, echo },
	{ "/t.S/Fail", &containerd__services__snapshots__v1__stat_snapshot_request__descriptor, fail },
	{ "/t.S/Stream", &containerd__services__snapshots__v1__list_snapshots_request__descriptor,
	  stream },
	{ NULL, NULL, NULL },
};

/* ---- a client ---- */

struct call {
	const char *path, *ctype;
	uint8_t req[256];
	size_t reqlen, sent;
	uint8_t body[4096];
	size_t bodylen;
	char status[8], http[8], msg[128];
	int done;
};

struct client {
	int fd;
	int open;
};

static ssize_t c_send(nghttp2_session *s, const uint8_t *d, size_t n, int f, void *ud)
{
	(void)s;
	(void)f;
	return send(((struct client *)ud)->fd, d, n, MSG_NOSIGNAL);
}

static void copy(char *out, size_t size, const uint8_t *v, size_t n)
{
	if (n >= size)
		n = size - 1;
	memcpy(out, v, n);
	out[n] = 0;
}

static int c_header(nghttp2_session *s, const nghttp2_frame *f, const uint8_t *name, size_t nl,
		    const uint8_t *v, size_t vl, uint8_t fl, void *ud)
{
	struct call *c = nghttp2_session_get_stream_user_data(s, f->hd.stream_id);

	(void)fl;
	(void)ud;
	if (!c)
		return 0;
	if (nl == 11 && !memcmp(name, "grpc-status", 11))
		copy(c->status, sizeof(c->status), v, vl);
	else if (nl == 12 && !memcmp(name, "grpc-message", 12))
		copy(c->msg, sizeof(c->msg), v, vl);
	else if (nl == 7 && !memcmp(name, ":status", 7))
		copy(c->http, sizeof(c->http), v, vl);
	return 0;
}

static int c_data(nghttp2_session *s, uint8_t fl, int32_t sid, const uint8_t *d, size_t n,
		  void *ud)
{
	struct call *c = nghttp2_session_get_stream_user_data(s, sid);

	(void)fl;
	(void)ud;
	if (c && c->bodylen + n <= sizeof(c->body)) {
		memcpy(c->body + c->bodylen, d, n);
		c->bodylen += n;
	}
	return 0;
}

static int c_close(nghttp2_session *s, int32_t sid, uint32_t code, void *ud)
{
	struct call *c = nghttp2_session_get_stream_user_data(s, sid);

	(void)code;
	if (c)
		c->done = 1;
	((struct client *)ud)->open--;
	return 0;
}

static ssize_t c_body(nghttp2_session *s, int32_t sid, uint8_t *buf, size_t len,
		      uint32_t *flags, nghttp2_data_source *src, void *ud)
{
	struct call *c = src->ptr;
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

static void frame(struct call *c, const ProtobufCMessage *m)
{
	size_t n = protobuf_c_message_pack(m, c->req + 5);

	c->req[0] = 0;
	c->req[1] = 0;
	c->req[2] = 0;
	c->req[3] = (uint8_t)(n >> 8);
	c->req[4] = (uint8_t)n;
	c->reqlen = n + 5;
}

#define NV(n, v) { (uint8_t *)(n), (uint8_t *)(v), strlen(n), strlen(v), 0 }

/* Run calls[0..n) concurrently on one connection; 0 or -1. */
static int run_calls(struct call *calls, int n)
{
	struct client cl = { socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0), n };
	nghttp2_session_callbacks *cb;
	nghttp2_session *s;
	int rc = 0;

	if (cl.fd < 0 || connect(cl.fd, (struct sockaddr *)&addr, sizeof(addr)) < 0)
		return -1;
	nghttp2_session_callbacks_new(&cb);
	nghttp2_session_callbacks_set_send_callback(cb, c_send);
	nghttp2_session_callbacks_set_on_header_callback(cb, c_header);
	nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, c_data);
	nghttp2_session_callbacks_set_on_stream_close_callback(cb, c_close);
	nghttp2_session_client_new(&s, cb, &cl);
	nghttp2_session_callbacks_del(cb);
	nghttp2_submit_settings(s, NGHTTP2_FLAG_NONE, NULL, 0);
	for (int i = 0; i < n; i++) {
		nghttp2_nv h[] = { NV(":method", "POST"), NV(":scheme", "http"),
				   NV(":path", calls[i].path), NV(":authority", "/the/socket"),
				   NV("content-type", calls[i].ctype), NV("te", "trailers") };
		nghttp2_data_provider body = { .source.ptr = &calls[i], .read_callback = c_body };

		if (nghttp2_submit_request(s, NULL, h, 6, &body, &calls[i]) < 0)
			rc = -1;
	}
	while (rc == 0 && cl.open > 0) {
		uint8_t buf[16384];
		ssize_t got;

		if (nghttp2_session_send(s) != 0)
			rc = -1;
		got = rc ? 0 : recv(cl.fd, buf, sizeof(buf), 0);
		if (got <= 0 || nghttp2_session_mem_recv(s, buf, (size_t)got) < 0)
			rc = -1;
	}
	nghttp2_session_del(s);
	close(cl.fd);
	return rc;
}

/* ---- checks of one call ---- */

static void setup_call(struct call *c, int kind, int i)
{
	P(StatSnapshotRequest) st = CONTAINERD__SERVICES__SNAPSHOTS__V1__STAT_SNAPSHOT_REQUEST__INIT;
	P(ListSnapshotsRequest) ls = CONTAINERD__SERVICES__SNAPSHOTS__V1__LIST_SNAPSHOTS_REQUEST__INIT;
	char key[32], count[8], *filters[1] = { count };

	memset(c, 0, sizeof(*c));
	c->ctype = "application/grpc";
	snprintf(key, sizeof(key), "key-%d", i);
	st.key = key;
	snprintf(count, sizeof(count), "%d", i % 5);
	ls.n_filters = 1;
	ls.filters = filters;
	switch (kind) {
	case 0: c->path = "/t.S/Echo"; frame(c, &st.base); break;
	case 1: c->path = "/t.S/Fail"; frame(c, &st.base); break;
	case 2: c->path = "/t.S/Stream"; frame(c, &ls.base); break;
	case 3: c->path = "/t.S/Nope"; frame(c, &st.base); break;
	default: c->path = "/t.S/Echo"; c->ctype = "text/plain"; frame(c, &st.base); break;
	}
}

/* Does c carry the answer its kind and index call for? */
static int call_ok(const struct call *c, int kind, int i)
{
	P(StatSnapshotResponse) *resp;
	char key[32];
	int ok;

	if (!c->done)
		return 0;
	switch (kind) {
	case 0:
		if (strcmp(c->status, "0") || c->bodylen < 5)
			return 0;
		resp = containerd__services__snapshots__v1__stat_snapshot_response__unpack(
			NULL, c->bodylen - 5, c->body + 5);
		snprintf(key, sizeof(key), "key-%d", i);
		ok = resp && resp->info && !strcmp(resp->info->name, key);
		if (resp)
			protobuf_c_message_free_unpacked(&resp->base, NULL);
		return ok;
	case 1:
		return !strcmp(c->status, "5") && !strcmp(c->msg, "no such thing: %C3%BC%25") &&
		       c->bodylen == 0;
	case 2:
		/* i % 5 empty messages: five bytes of frame each */
		return !strcmp(c->status, "0") && c->bodylen == (size_t)(i % 5) * 5;
	case 3:
		return !strcmp(c->status, "12");
	default:
		return !strcmp(c->http, "415");
	}
}

static _Atomic int bad_calls;

static void *client_main(void *arg)
{
	int base = (int)(intptr_t)arg;
	struct call *calls = calloc(NSTREAMS, sizeof(*calls));

	if (!calls)
		return NULL;
	for (int i = 0; i < NSTREAMS; i++)
		setup_call(&calls[i], (base + i) % 5, base + i);
	if (run_calls(calls, NSTREAMS) < 0) {
		atomic_fetch_add(&bad_calls, NSTREAMS);
		free(calls);
		return NULL;
	}
	for (int i = 0; i < NSTREAMS; i++)
		if (!call_ok(&calls[i], (base + i) % 5, base + i)) {
			fprintf(stderr, "call %d (%s): status '%s' http '%s' msg '%s' body %zu\n",
				base + i, calls[i].path, calls[i].status, calls[i].http,
				calls[i].msg, calls[i].bodylen);
			atomic_fetch_add(&bad_calls, 1);
		}
	free(calls);
	return NULL;
}

static int listen_fd(void)
{
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	/* An abstract socket: nothing to clean up. */
	snprintf(addr.sun_path + 1, sizeof(addr.sun_path) - 1, "daxfs-grpc-test-%d",
		 (int)getpid());
	if (fd < 0 || bind(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0 || listen(fd, 16) < 0)
		return -1;
	return fd;
}

TEST(calls)
{
	struct daxfs_err err = { 0 };
	struct grpc_server *srv;
	struct call c;
	int fd = listen_fd();

	CHECK(fd >= 0);
	CHECK_RC(grpc_server_start(fd, methods, NULL, &srv, &err), 0);
	for (int kind = 0; kind < 5; kind++) {
		setup_call(&c, kind, 7);
		if (run_calls(&c, 1) < 0 || !call_ok(&c, kind, 7)) {
			fprintf(stderr, "kind %d: status '%s' http '%s' msg '%s' body %zu\n", kind,
				c.status, c.http, c.msg, c.bodylen);
			check_failed = 1;
		}
	}
	grpc_server_stop(srv);
}

TEST(concurrent_streams_and_connections)
{
	struct daxfs_err err = { 0 };
	struct grpc_server *srv;
	pthread_t t[NCONNS];
	int fd = listen_fd();

	CHECK(fd >= 0);
	CHECK_RC(grpc_server_start(fd, methods, NULL, &srv, &err), 0);
	for (int round = 0; round < 3; round++) {
		for (int i = 0; i < NCONNS; i++)
			CHECK_RC(pthread_create(&t[i], NULL, client_main,
						(void *)(intptr_t)(i * NSTREAMS)), 0);
		for (int i = 0; i < NCONNS; i++)
			pthread_join(t[i], NULL);
	}
	grpc_server_stop(srv);
	CHECK(atomic_load(&bad_calls) == 0);
}

CHECK_MAIN_BEGIN("test_snapgrpc_mt")
	RUN(calls);
	RUN(concurrent_streams_and_connections);
CHECK_MAIN_END
