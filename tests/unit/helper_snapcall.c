/* One call to a Snapshots gRPC socket, for the integration tests:
 *
 *   helper_snapcall SOCKET prepare KEY PARENT [LABEL=VALUE...]
 *   helper_snapcall SOCKET mounts|usage|remove|stat KEY
 *
 * Prints "status N MESSAGE", then for prepare and mounts one line
 * "mount TYPE SOURCE OPTION,OPTION..." and for usage "usage SIZE INODES".
 * Exits 0 once an answer came, 1 if none did. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "snapclient.h"
#include "snapshots.pb-c.h"

#define P(x) Containerd__Services__Snapshots__V1__##x

static void print_mounts(size_t n, Containerd__Types__Mount **mounts)
{
	for (size_t i = 0; i < n; i++) {
		printf("mount %s %s ", mounts[i]->type, mounts[i]->source);
		for (size_t j = 0; j < mounts[i]->n_options; j++)
			printf("%s%s", j ? "," : "", mounts[i]->options[j]);
		printf("\n");
	}
}

/* The reply's first message, if it is not empty. */
#define UNPACK(type, c) \
	((c)->bodylen > 5 ? (void *)snapclient_unpack((c), \
		&containerd__services__snapshots__v1__##type##__descriptor) : NULL)

int main(int argc, char **argv)
{
	struct snapclient_call c = { 0 };
	const char *sock, *op, *key;
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
		rc = snapclient_call(sock, "Prepare", &q.base, &c);
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
		rc = snapclient_call(sock, "Mounts", &q.base, &c);
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
		rc = snapclient_call(sock, "Usage", &q.base, &c);
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
		/* Stat's request has the same single field. */
		rc = snapclient_call(sock, op[0] == 'r' ? "Remove" : "Stat", &q.base, &c);
		if (rc == 0)
			printf("status %s %s\n", c.status, c.msg);
	} else {
		return 2;
	}
	snapclient_call_free(&c);
	if (rc < 0)
		fprintf(stderr, "helper_snapcall: no answer from %s\n", sock);
	return rc < 0 ? 1 : 0;
}
