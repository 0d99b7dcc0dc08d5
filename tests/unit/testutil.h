/* Helpers shared by the unit tests: regions in /dev/shm or memory. */
#ifndef DAXFS_TESTUTIL_H
#define DAXFS_TESTUTIL_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "daxfs.h"

/* A unique region path for this test process. */
static inline void tu_region_path(char *buf, size_t n, const char *tag)
{
	const char *dir = getenv("DAXFS_TMP");

	snprintf(buf, n, "%s/daxfs-%s-%d", dir ? dir : "/dev/shm", tag, (int)getpid());
}

/* Make a region file (size bytes) with small journals; 0 or -errno. */
static inline int tu_mkfs(const char *path, uint64_t size, uint32_t hosts)
{
	struct daxfs_mkfs_opts o = { .path = path, .size = size, .max_hosts = hosts };
	struct daxfs_err err = { 0 };
	int rc = daxfs_mkfs(&o, &err);

	if (rc < 0)
		fprintf(stderr, "mkfs: %s\n", err.msg);
	return rc;
}

/* Open and attach as host number id (uuid derived from id). */
static inline int tu_attach(const char *path, int id, uint32_t lease_ms,
			    struct daxfs **fs)
{
	struct daxfs_open_opts o = { .path = path, .lease_ms = lease_ms,
				     .grace_ms = lease_ms };
	struct daxfs_host_opts h = { .kind = DAXFS_PROC_DAEMON };
	struct daxfs_err err = { 0 };
	char name[32];
	int rc;

	memset(h.uuid, 0, 16);
	h.uuid[0] = 0xda;
	h.uuid[15] = (uint8_t)id;
	snprintf(name, sizeof(name), "test-host-%d", id);
	h.name = name;
	rc = daxfs_open(&o, fs, &err);
	if (rc == 0) {
		rc = daxfs_host_attach(*fs, &h, &err);
		if (rc < 0)
			daxfs_abandon(*fs);
	}
	if (rc < 0)
		fprintf(stderr, "attach host %d: %s\n", id, err.msg);
	return rc;
}

static inline void tu_digest(uint8_t d[32], uint64_t a, uint64_t b)
{
	/* Distinct, well-spread 32-byte keys for tests. */
	uint64_t x = a * 0x9e3779b97f4a7c15ULL ^ (b + 0x7f4a7c159e3779b9ULL);

	for (int i = 0; i < 4; i++) {
		x ^= x >> 31;
		x *= 0xbf58476d1ce4e5b9ULL;
		x ^= x >> 27;
		memcpy(d + 8 * i, &x, 8);
	}
}

static int tu_fsck_count;
static inline void tu_fsck_line(const char *line, void *arg)
{
	(void)arg;
	tu_fsck_count++;
	fprintf(stderr, "fsck: %s\n", line);
}

#endif
