/* The gRPC server (snapshotter/grpc.c) from a small nghttp2 client:
 * unary calls, server streaming, failures in trailers-only responses
 * (percent-encoded messages), unknown methods, a non-gRPC request, and
 * many streams on several connections at once (also under TSan). */
#include <pthread.h>
#include <stdatomic.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "check.h"
#include "grpc.h"
#include "snapclient.h"
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

/* Run calls[0..n) concurrently on one connection; 0 or -1. */
static int run_calls(struct snapclient_call *calls, int n)
{
	struct snapclient cl;
	int rc;

	if (snapclient_connect_addr(&cl, &addr) < 0)
		return -1;
	/* What gRPC clients on unix sockets send: the server must take it. */
	cl.authority = "/the/socket";
	rc = snapclient_run(&cl, calls, n);
	snapclient_close(&cl);
	return rc;
}

/* ---- checks of one call ---- */

/* 0 or -1 (out of memory); c is to be freed with snapclient_call_free. */
static int setup_call(struct snapclient_call *c, int kind, int i)
{
	P(StatSnapshotRequest) st = CONTAINERD__SERVICES__SNAPSHOTS__V1__STAT_SNAPSHOT_REQUEST__INIT;
	P(ListSnapshotsRequest) ls = CONTAINERD__SERVICES__SNAPSHOTS__V1__LIST_SNAPSHOTS_REQUEST__INIT;
	char key[32], count[8], *filters[1] = { count };
	int rc;

	snprintf(key, sizeof(key), "key-%d", i);
	st.key = key;
	snprintf(count, sizeof(count), "%d", i % 5);
	ls.n_filters = 1;
	ls.filters = filters;
	switch (kind) {
	case 0: rc = snapclient_request(c, "/t.S/Echo", &st.base); break;
	case 1: rc = snapclient_request(c, "/t.S/Fail", &st.base); break;
	case 2: rc = snapclient_request(c, "/t.S/Stream", &ls.base); break;
	case 3: rc = snapclient_request(c, "/t.S/Nope", &st.base); break;
	default:
		rc = snapclient_request(c, "/t.S/Echo", &st.base);
		c->content_type = "text/plain";
		break;
	}
	return rc < 0 ? -1 : 0;
}

/* Does c carry the answer its kind and index call for? */
static int call_ok(const struct snapclient_call *c, int kind, int i)
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
		resp = (void *)snapclient_unpack(
			c, &containerd__services__snapshots__v1__stat_snapshot_response__descriptor);
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
	int base = (int)(intptr_t)arg, rc = 0;
	struct snapclient_call *calls = calloc(NSTREAMS, sizeof(*calls));

	if (!calls) {
		atomic_fetch_add(&bad_calls, NSTREAMS);
		return NULL;
	}
	for (int i = 0; i < NSTREAMS; i++)
		if (setup_call(&calls[i], (base + i) % 5, base + i) < 0)
			rc = -1;
	if (rc < 0 || run_calls(calls, NSTREAMS) < 0) {
		atomic_fetch_add(&bad_calls, NSTREAMS);
		goto out;
	}
	for (int i = 0; i < NSTREAMS; i++)
		if (!call_ok(&calls[i], (base + i) % 5, base + i)) {
			fprintf(stderr, "call %d (%s): status '%s' http '%s' msg '%s' body %zu\n",
				base + i, calls[i].path, calls[i].status, calls[i].http,
				calls[i].msg, calls[i].bodylen);
			atomic_fetch_add(&bad_calls, 1);
		}
out:
	for (int i = 0; i < NSTREAMS; i++)
		snapclient_call_free(&calls[i]);
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
	struct snapclient_call c;
	int fd = listen_fd();

	CHECK(fd >= 0);
	CHECK_RC(grpc_server_start(fd, methods, NULL, &srv, &err), 0);
	for (int kind = 0; kind < 5; kind++) {
		if (setup_call(&c, kind, 7) < 0 || run_calls(&c, 1) < 0 || !call_ok(&c, kind, 7)) {
			fprintf(stderr, "kind %d: status '%s' http '%s' msg '%s' body %zu\n", kind,
				c.status, c.http, c.msg, c.bodylen);
			check_failed = 1;
		}
		snapclient_call_free(&c);
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
