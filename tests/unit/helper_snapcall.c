/* One call to a Snapshots gRPC socket, for the integration tests:
 *
 *   helper_snapcall SOCKET prepare KEY PARENT [LABEL=VALUE...]
 *   helper_snapcall SOCKET mounts|usage|remove|stat KEY
 *
 * Prints "status N MESSAGE", then for prepare and mounts one line
 * "mount TYPE SOURCE OPTION,OPTION..." and for usage "usage SIZE INODES".
 * Exits 0 once an answer came, 1 if none did. */
#include <nghttp2/nghttp2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "snapshots.pb-c.h"

#define P(x) Containerd__Services__Snapshots__V1__##x
#define SVC "/containerd.services.snapshots.v1.Snapshots/"

struct call {
	int fd;
	uint8_t *req;
	size_t reqlen, sent;
	uint8_t body[65536];
	size_t bodylen;
	char status[8], msg[1024];
	int done;
};

static ssize_t c_send(nghttp2_session *s, const uint8_t *d, size_t n, int f, void *ud)
{
	(void)s;
	(void)f;
	return send(((struct call *)ud)->fd, d, n, MSG_NOSIGNAL);
}

static void copy(char *out, size_t size, const uint8_t *v, size_t n)
{
	n = n < size ? n : size - 1;
	memcpy(out, v, n);
	out[n] = 0;
}

static int c_header(nghttp2_session *s, const nghttp2_frame *f, const uint8_t *name, size_t nl,
		    const uint8_t *v, size_t vl, uint8_t fl, void *ud)
{
	struct call *c = ud;

	(void)s;
	(void)f;
	(void)fl;
	if (nl == 11 && !memcmp(name, "grpc-status", 11))
		copy(c->status, sizeof(c->status), v, vl);
	else if (nl == 12 && !memcmp(name, "grpc-message", 12))
		copy(c->msg, sizeof(c->msg), v, vl);
	return 0;
}

static int c_data(nghttp2_session *s, uint8_t fl, int32_t sid, const uint8_t *d, size_t n,
		  void *ud)
{
	struct call *c = ud;

	(void)s;
	(void)fl;
	(void)sid;
	if (c->bodylen + n <= sizeof(c->body)) {
		memcpy(c->body + c->bodylen, d, n);
		c->bodylen += n;
	}
	return 0;
}

static int c_close(nghttp2_session *s, int32_t sid, uint32_t code, void *ud)
{
	(void)s;
	(void)sid;
	(void)code;
	((struct call *)ud)->done = 1;
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

#define NV(n, v) { (uint8_t *)(n), (uint8_t *)(v), strlen(n), strlen(v), 0 }

static int run(const char *sock, const char *path, const ProtobufCMessage *m, struct call *c)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	size_t n = protobuf_c_message_get_packed_size(m);
	nghttp2_session_callbacks *cb;
	nghttp2_session *s;
	nghttp2_nv h[] = { NV(":method", "POST"), NV(":scheme", "http"), NV(":path", path),
			   NV(":authority", "localhost"), NV("content-type", "application/grpc"),
			   NV("te", "trailers") };
	nghttp2_data_provider body = { .source.ptr = c, .read_callback = c_body };
	int rc = 0;

	c->req = malloc(n + 5);
	c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", sock);
	if (!c->req || c->fd < 0 || connect(c->fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
		return -1;
	c->req[0] = 0;
	c->req[1] = (uint8_t)(n >> 24);
	c->req[2] = (uint8_t)(n >> 16);
	c->req[3] = (uint8_t)(n >> 8);
	c->req[4] = (uint8_t)n;
	protobuf_c_message_pack(m, c->req + 5);
	c->reqlen = n + 5;
	nghttp2_session_callbacks_new(&cb);
	nghttp2_session_callbacks_set_send_callback(cb, c_send);
	nghttp2_session_callbacks_set_on_header_callback(cb, c_header);
	nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, c_data);
	nghttp2_session_callbacks_set_on_stream_close_callback(cb, c_close);
	nghttp2_session_client_new(&s, cb, c);
	nghttp2_session_callbacks_del(cb);
	nghttp2_submit_settings(s, NGHTTP2_FLAG_NONE, NULL, 0);
	if (nghttp2_submit_request(s, NULL, h, 6, &body, c) < 0)
		rc = -1;
	while (rc == 0 && !c->done) {
		uint8_t buf[16384];
		ssize_t got;

		if (nghttp2_session_send(s) != 0)
			rc = -1;
		got = rc ? 0 : recv(c->fd, buf, sizeof(buf), 0);
		if (got <= 0 || nghttp2_session_mem_recv(s, buf, (size_t)got) < 0)
			rc = -1;
	}
	nghttp2_session_del(s);
	close(c->fd);
	free(c->req);
	return c->done ? 0 : -1;
}

static void print_mounts(size_t n, Containerd__Types__Mount **mounts)
{
	for (size_t i = 0; i < n; i++) {
		printf("mount %s %s ", mounts[i]->type, mounts[i]->source);
		for (size_t j = 0; j < mounts[i]->n_options; j++)
			printf("%s%s", j ? "," : "", mounts[i]->options[j]);
		printf("\n");
	}
}

/* The reply's first message, without its 5-byte frame header. */
#define UNPACK(type, c) \
	((c)->bodylen > 5 ? containerd__services__snapshots__v1__##type##__unpack(NULL, \
		(c)->bodylen - 5, (c)->body + 5) : NULL)

int main(int argc, char **argv)
{
	static struct call c;
	const char *sock, *op, *key;
	char path[128];
	int rc = -1;

	if (argc < 4) {
		fprintf(stderr, "usage: helper_snapcall SOCKET OP KEY [PARENT [LABEL=VALUE...]]\n");
		return 2;
	}
	sock = argv[1];
	op = argv[2];
	key = argv[3];
	if (!strcmp(op, "prepare") && argc >= 5) {
		P(PrepareSnapshotRequest) q = CONTAINERD__SERVICES__SNAPSHOTS__V1__PREPARE_SNAPSHOT_REQUEST__INIT;
		P(PrepareSnapshotRequest__LabelsEntry) e[16], *ep[16];

		q.key = (char *)key;
		q.parent = argv[4];
		for (int i = 5; i < argc && i - 5 < 16; i++) {
			char *eq = strchr(argv[i], '=');

			if (!eq)
				return 2;
			*eq = 0;
			containerd__services__snapshots__v1__prepare_snapshot_request__labels_entry__init(&e[i - 5]);
			e[i - 5].key = argv[i];
			e[i - 5].value = eq + 1;
			ep[i - 5] = &e[i - 5];
			q.n_labels++;
		}
		q.labels = ep;
		rc = run(sock, SVC "Prepare", &q.base, &c);
		if (rc == 0) {
			P(PrepareSnapshotResponse) *r = UNPACK(prepare_snapshot_response, &c);

			printf("status %s %s\n", c.status, c.msg);
			if (r) {
				print_mounts(r->n_mounts, r->mounts);
				protobuf_c_message_free_unpacked(&r->base, NULL);
			}
		}
	} else if (!strcmp(op, "mounts")) {
		P(MountsRequest) q = CONTAINERD__SERVICES__SNAPSHOTS__V1__MOUNTS_REQUEST__INIT;

		q.key = (char *)key;
		rc = run(sock, SVC "Mounts", &q.base, &c);
		if (rc == 0) {
			P(MountsResponse) *r = UNPACK(mounts_response, &c);

			printf("status %s %s\n", c.status, c.msg);
			if (r) {
				print_mounts(r->n_mounts, r->mounts);
				protobuf_c_message_free_unpacked(&r->base, NULL);
			}
		}
	} else if (!strcmp(op, "usage")) {
		P(UsageRequest) q = CONTAINERD__SERVICES__SNAPSHOTS__V1__USAGE_REQUEST__INIT;

		q.key = (char *)key;
		rc = run(sock, SVC "Usage", &q.base, &c);
		if (rc == 0) {
			P(UsageResponse) *r = UNPACK(usage_response, &c);

			printf("status %s %s\n", c.status, c.msg);
			if (r) {
				printf("usage %lld %lld\n", (long long)r->size, (long long)r->inodes);
				protobuf_c_message_free_unpacked(&r->base, NULL);
			}
		}
	} else if (!strcmp(op, "remove") || !strcmp(op, "stat")) {
		P(RemoveSnapshotRequest) q = CONTAINERD__SERVICES__SNAPSHOTS__V1__REMOVE_SNAPSHOT_REQUEST__INIT;

		q.key = (char *)key;
		snprintf(path, sizeof(path), SVC "%s", op[0] == 'r' ? "Remove" : "Stat");
		/* Stat's request has the same single field. */
		rc = run(sock, path, &q.base, &c);
		if (rc == 0)
			printf("status %s %s\n", c.status, c.msg);
	} else {
		return 2;
	}
	if (rc < 0)
		fprintf(stderr, "helper_snapcall: no answer from %s\n", sock);
	return rc < 0 ? 1 : 0;
}
