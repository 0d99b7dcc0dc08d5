/* Making and opening regions: files, FILE@OFFSET, memory buffers; size and
 * region parsing; refusal of damaged or foreign superblocks; mkfs on a
 * filesystem too small to hold the region. */
#include <errno.h>
#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>

#include "check.h"
#include "crc32c.h"
#include "format.h"
#include "testutil.h"

#define MiB (1ULL << 20)

static char path[256], path2[256];

static int write_pattern(int fd, uint64_t off, uint64_t len, uint32_t seed)
{
	uint8_t buf[65536];

	for (uint64_t p = 0; p < len;) {
		size_t n = len - p < sizeof(buf) ? (size_t)(len - p) : sizeof(buf);

		tu_fill(buf, seed, p, n);
		if (pwrite(fd, buf, n, (off_t)(off + p)) != (ssize_t)n)
			return -1;
		p += n;
	}
	return 0;
}

static int check_pattern(int fd, uint64_t off, uint64_t len, uint32_t seed)
{
	uint8_t buf[65536], want[65536];

	for (uint64_t p = 0; p < len;) {
		size_t n = len - p < sizeof(buf) ? (size_t)(len - p) : sizeof(buf);

		tu_fill(want, seed, p, n);
		if (pread(fd, buf, n, (off_t)(off + p)) != (ssize_t)n ||
		    memcmp(buf, want, n))
			return -1;
		p += n;
	}
	return 0;
}

static int fsck_problems(struct daxfs *fs, int live)
{
	tu_fsck_count = 0;
	return daxfs_fsck(fs, live, tu_fsck_line, NULL);
}

/* Attach to an open region as a daemon, publish one scripted layer and
 * read it back. */
static int use_region(struct daxfs *fs, int id)
{
	struct daxfs_host_opts h = { .kind = DAXFS_PROC_DAEMON, .name = "region-test" };
	struct daxfs_err err = { 0 };
	char why[256];
	int rc;

	h.uuid[0] = 0xda;
	h.uuid[15] = (uint8_t)id;
	rc = daxfs_host_attach(fs, &h, &err);
	if (rc == 0)
		rc = tu_build_spec(fs, tu_spec(2), &err);
	if (rc < 0) {
		fprintf(stderr, "use region: %s\n", err.msg);
		return rc;
	}
	if (tu_verify_spec(fs, tu_spec(2), why, sizeof(why)) < 0) {
		fprintf(stderr, "%s\n", why);
		return -EIO;
	}
	return fsck_problems(fs, 1) == 0 ? 0 : -EUCLEAN;
}

TEST(file_region)
{
	struct daxfs_mkfs_opts mo = { .path = path, .size = 32 * MiB };
	struct daxfs_open_opts oo = { .path = path };
	struct daxfs_err err = { 0 };
	struct daxfs_usage u;
	struct daxfs *fs;
	struct stat st;

	unlink(path);
	CHECK_RC(daxfs_mkfs(&mo, &err), 0);
	CHECK(stat(path, &st) == 0 && (uint64_t)st.st_size == 32 * MiB);
	CHECK_RC(daxfs_open(&oo, &fs, &err), 0);
	daxfs_usage(fs, &u);
	CHECK(u.region_size == 32 * MiB && u.max_hosts == 8 && u.version == DFS_VERSION);
	CHECK(u.data_total > 16 * MiB && u.meta_total > 0 && u.data_used == 0);
	CHECK(u.hash_slots >= 1024 && !(u.hash_slots & (u.hash_slots - 1)));
	CHECK_RC(use_region(fs, 1), 0);
	daxfs_close(fs);
	/* Offline: clean, the layer still there. */
	CHECK_RC(daxfs_open(&oo, &fs, &err), 0);
	CHECK_RC(fsck_problems(fs, 0), 0);
	daxfs_usage(fs, &u);
	CHECK(u.layers_ready == 1 && u.data_used > 0);
	daxfs_close(fs);
	/* Size 0 = the rest of an existing file; mkfs again starts over. */
	mo.size = 0;
	CHECK_RC(daxfs_mkfs(&mo, &err), 0);
	CHECK_RC(daxfs_open(&oo, &fs, &err), 0);
	daxfs_usage(fs, &u);
	CHECK(u.region_size == 32 * MiB && u.layers_ready == 0 && u.data_used == 0);
	daxfs_close(fs);
	/* A read-only open works and refuses to attach. */
	oo.readonly = 1;
	CHECK_RC(daxfs_open(&oo, &fs, &err), 0);
	{
		struct daxfs_host_opts h = { .kind = DAXFS_PROC_DAEMON };

		CHECK(daxfs_host_attach(fs, &h, &err) == -EROFS);
	}
	CHECK_RC(fsck_problems(fs, 0), 0);
	daxfs_close(fs);
	unlink(path);
}

TEST(offset_region)
{
	struct daxfs_mkfs_opts mo = { .size = 32 * MiB };
	struct daxfs_open_opts oo = { 0 };
	struct daxfs_err err = { 0 };
	char spec[300], p[256];
	struct daxfs *fs;
	uint64_t off;
	int fd;

	/* 2 MiB of foreign data, the region, 1 MiB of foreign data. */
	unlink(path);
	fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
	CHECK(fd >= 0);
	CHECK(ftruncate(fd, (off_t)(35 * MiB)) == 0);
	CHECK(write_pattern(fd, 0, 2 * MiB, 901) == 0);
	CHECK(write_pattern(fd, 34 * MiB, MiB, 902) == 0);
	snprintf(spec, sizeof(spec), "%s@2M", path);
	CHECK_RC(daxfs_parse_region(spec, p, sizeof(p), &off, &err), 0);
	CHECK(!strcmp(p, path) && off == 2 * MiB);
	mo.path = p;
	mo.offset = off;
	CHECK_RC(daxfs_mkfs(&mo, &err), 0);
	oo.path = p;
	oo.offset = off;
	CHECK_RC(daxfs_open(&oo, &fs, &err), 0);
	CHECK_RC(use_region(fs, 1), 0);
	daxfs_close(fs);
	CHECK_RC(daxfs_open(&oo, &fs, &err), 0);
	CHECK_RC(fsck_problems(fs, 0), 0);
	daxfs_close(fs);
	/* The bytes around the region are untouched. */
	CHECK(check_pattern(fd, 0, 2 * MiB, 901) == 0);
	CHECK(check_pattern(fd, 34 * MiB, MiB, 902) == 0);
	/* Elsewhere in the file there is no region. */
	oo.offset = 0;
	CHECK(daxfs_open(&oo, &fs, &err) == -EUCLEAN);
	CHECK(strstr(err.msg, "not a DaxFS region") != NULL);
	oo.offset = MiB;
	CHECK(daxfs_open(&oo, &fs, &err) == -EUCLEAN);
	oo.offset = 2 * MiB + 4096;
	CHECK(daxfs_open(&oo, &fs, &err) == -EUCLEAN);
	/* Misaligned or past the end. */
	oo.offset = 2 * MiB + 512;
	CHECK(daxfs_open(&oo, &fs, &err) == -EINVAL);
	oo.offset = 35 * MiB;
	CHECK(daxfs_open(&oo, &fs, &err) == -EINVAL);
	CHECK(strstr(err.msg, "past the end") != NULL);
	mo.offset = 2 * MiB + 100;
	CHECK(daxfs_mkfs(&mo, &err) == -EINVAL);
	close(fd);
	unlink(path);
}

TEST(buffer_region)
{
	struct daxfs_mkfs_opts mo = { .max_hosts = 4 };
	struct daxfs_open_opts oo = { .lease_ms = 1000 };
	struct daxfs_err err = { 0 };
	struct daxfs_usage u;
	struct daxfs *fs;
	uint8_t *buf = aligned_alloc(4096, 24 * MiB);

	CHECK(buf != NULL);
	CHECK_RC(daxfs_mkfs_buffer(buf, 24 * MiB, &mo, &err), 0);
	CHECK_RC(daxfs_open_buffer(buf, 24 * MiB, &oo, &fs, &err), 0);
	daxfs_usage(fs, &u);
	CHECK(u.region_size == 24 * MiB && u.max_hosts == 4);
	CHECK_RC(use_region(fs, 3), 0);
	daxfs_close(fs);
	CHECK_RC(daxfs_open_buffer(buf, 24 * MiB, &oo, &fs, &err), 0);
	CHECK_RC(fsck_problems(fs, 0), 0);
	daxfs_close(fs);
	/* A smaller region inside the buffer (o->size). */
	mo.size = 16 * MiB;
	CHECK_RC(daxfs_mkfs_buffer(buf, 24 * MiB, &mo, &err), 0);
	CHECK_RC(daxfs_open_buffer(buf, 24 * MiB, &oo, &fs, &err), 0);
	daxfs_usage(fs, &u);
	CHECK(u.region_size == 16 * MiB);
	daxfs_close(fs);
	/* Refusals: misaligned, too small, a mapping shorter than the region. */
	CHECK(daxfs_open_buffer(buf + 4, 16 * MiB, &oo, &fs, &err) == -EINVAL);
	CHECK(daxfs_open_buffer(buf, 8 * MiB, &oo, &fs, &err) == -EUCLEAN);
	CHECK(strstr(err.msg, "impossible region size") != NULL);
	CHECK(daxfs_open_buffer(buf, 100, &oo, &fs, &err) == -EUCLEAN);
	CHECK(strstr(err.msg, "superblock") != NULL);
	mo.size = 0;
	CHECK(daxfs_mkfs_buffer(buf, 8 * MiB, &mo, &err) == -EINVAL);
	memset(buf, 0, 4096);
	CHECK(daxfs_open_buffer(buf, 24 * MiB, &oo, &fs, &err) == -EUCLEAN);
	free(buf);
}

TEST(parse_size)
{
	static const struct { const char *s; uint64_t v; } ok[] = {
		{ "0", 0 }, { "4096", 4096 }, { "4k", 4096 }, { "4K", 4096 },
		{ "4KiB", 4096 }, { "4KB", 4096 }, { "2M", 2 * MiB }, { "2MiB", 2 * MiB },
		{ "1g", 1ULL << 30 }, { "1G", 1ULL << 30 }, { "3T", 3ULL << 40 },
		{ "0x1000", 4096 }, { "512B", 512 }, { "16777215T", 16777215ULL << 40 },
		{ "18446744073709551615", UINT64_MAX },
	};
	static const char *bad[] = {
		"", "k", "M", "abc", "4X", "4 k", "4k ", "4KiBx", "4KBB", "4iB", "4i",
		"-1", "-4k", "16777216T", "18446744073709551616", "99999999999999999999G",
		"1e3", "0x", "4.5M",
	};
	uint64_t v;

	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		v = 12345;
		if (daxfs_parse_size(ok[i].s, &v) != 0 || v != ok[i].v) {
			fprintf(stderr, "parse_size(\"%s\") = %llu, want %llu\n", ok[i].s,
				(unsigned long long)v, (unsigned long long)ok[i].v);
			CHECK(0);
		}
	}
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		v = 12345;
		if (daxfs_parse_size(bad[i], &v) != -EINVAL || v != 12345) {
			fprintf(stderr, "parse_size(\"%s\") accepted (%llu)\n", bad[i],
				(unsigned long long)v);
			CHECK(0);
		}
	}
}

TEST(parse_region)
{
	struct daxfs_err err = { 0 };
	char p[64];
	uint64_t off;

	CHECK_RC(daxfs_parse_region("/dev/shm/r", p, sizeof(p), &off, &err), 0);
	CHECK(!strcmp(p, "/dev/shm/r") && off == 0);
	CHECK_RC(daxfs_parse_region("/dev/shm/r@2M", p, sizeof(p), &off, &err), 0);
	CHECK(!strcmp(p, "/dev/shm/r") && off == 2 * MiB);
	CHECK_RC(daxfs_parse_region("/dev/dax0.0@4096", p, sizeof(p), &off, &err), 0);
	CHECK(!strcmp(p, "/dev/dax0.0") && off == 4096);
	CHECK_RC(daxfs_parse_region("/dev/shm/r@0", p, sizeof(p), &off, &err), 0);
	CHECK(off == 0);
	/* The last '@' separates: paths may hold one. */
	CHECK_RC(daxfs_parse_region("/tmp/a@b@1G", p, sizeof(p), &off, &err), 0);
	CHECK(!strcmp(p, "/tmp/a@b") && off == (1ULL << 30));
	CHECK(daxfs_parse_region("/dev/shm/r@100", p, sizeof(p), &off, &err) == -EINVAL);
	CHECK(strstr(err.msg, "multiple of 4096") != NULL);
	CHECK(daxfs_parse_region("/dev/shm/r@", p, sizeof(p), &off, &err) == -EINVAL);
	CHECK(strstr(err.msg, "bad offset") != NULL);
	CHECK(daxfs_parse_region("/dev/shm/r@x", p, sizeof(p), &off, &err) == -EINVAL);
	CHECK(daxfs_parse_region("/dev/shm/r@-4096", p, sizeof(p), &off, &err) == -EINVAL);
	CHECK(daxfs_parse_region("@4096", p, sizeof(p), &off, &err) == -EINVAL);
	CHECK(daxfs_parse_region("", p, sizeof(p), &off, &err) == -EINVAL);
	CHECK(strstr(err.msg, "bad region") != NULL);
	/* Exactly fitting, and one byte too long for the buffer. */
	CHECK_RC(daxfs_parse_region("0123456789", p, 11, &off, &err), 0);
	CHECK(daxfs_parse_region("0123456789a", p, 11, &off, &err) == -EINVAL);
}

/* ---- refusals ---- */

static void seal(struct dfs_super *sb)
{
	sb->crc = 0;
	sb->crc = crc32c(0, sb, sizeof(*sb));
}

struct refusal {
	const char *what;
	int reseal;
	int want;		/* errno (negative) or 0 = accepted */
	const char *msg;	/* substring of the message */
};

/* Apply case i to sb; returns its description. */
static const struct refusal *damage(int i, struct dfs_super *sb)
{
	static const struct refusal r[] = {
		{ "bad magic", 0, -EUCLEAN, "not a DaxFS region" },
		{ "bad magic, resealed", 1, -EUCLEAN, "not a DaxFS region" },
		{ "format version 2", 1, -EUCLEAN, "unsupported format version" },
		{ "superblock size", 1, -EUCLEAN, "superblock of 2048 bytes" },
		{ "unknown incompatible feature", 1, -EOPNOTSUPP, "unknown incompatible features" },
		{ "unknown compatible feature", 1, 0, NULL },
		{ "bad crc (reserved byte)", 0, -EUCLEAN, "checksum mismatch" },
		{ "bad crc (crc field)", 0, -EUCLEAN, "checksum mismatch" },
		{ "bad crc (uuid)", 0, -EUCLEAN, "checksum mismatch" },
		{ "region larger than the file", 1, -EUCLEAN, "impossible region size" },
		{ "region size not a block multiple", 1, -EUCLEAN, "impossible region size" },
		{ "data nchunks huge", 1, -EUCLEAN, "data area" },
		{ "meta nchunks huge", 1, -EUCLEAN, "impossible" },
		{ "data nchunks one too many", 1, -EUCLEAN, "data area" },
		{ "data base past the end", 1, -EUCLEAN, "data area" },
		{ "chunk shift 40", 1, -EUCLEAN, "impossible data unit/chunk sizes" },
		{ "unit shift 2", 1, -EUCLEAN, "impossible metadata unit/chunk sizes" },
		{ "max hosts 0", 1, -EUCLEAN, "impossible table sizes" },
		{ "max hosts 57", 1, -EUCLEAN, "impossible table sizes" },
		{ "hash slots not a power of two", 1, -EUCLEAN, "impossible table sizes" },
		{ "journal entries 48", 1, -EUCLEAN, "impossible table sizes" },
		{ "hash table overlaps the journals", 1, -EUCLEAN, "impossible table layout" },
		{ "journals overlap the host table", 1, -EUCLEAN, "impossible table layout" },
		{ "data area overlaps the metadata area", 1, -EUCLEAN, "impossible table layout" },
		{ "huge journal offset", 1, -EUCLEAN, "impossible table layout" },
	};

	if (i < 0 || i >= (int)(sizeof(r) / sizeof(r[0])))
		return NULL;
	switch (i) {
	case 0: case 1: sb->magic ^= 0x100; break;
	case 2: sb->version = 2; break;
	case 3: sb->sb_size = 2048; break;
	case 4: sb->incompat |= 1ULL << 17; break;
	case 5: sb->compat |= 1ULL << 5; break;
	case 6: sb->reserved[100] ^= 1; break;
	case 7: sb->crc ^= 0x80000000u; break;
	case 8: sb->uuid[3] ^= 0x40; break;
	case 9: sb->region_size += 64 * MiB; break;
	case 10: sb->region_size -= 512; break;
	case 11: sb->data.nchunks = 1ULL << 60; break;
	case 12: sb->meta.nchunks = UINT64_MAX / 4; break;
	case 13: sb->data.nchunks += 1; break;
	case 14: sb->data.base = sb->region_size; break;
	case 15: sb->data.chunk_shift = 40; break;
	case 16: sb->meta.unit_shift = 2; break;
	case 17: sb->max_hosts = 0; break;
	case 18: sb->max_hosts = 57; break;
	case 19: sb->hash_slots += 1; break;
	case 20: sb->journal_entries = 48; break;
	case 21: sb->hash_off = sb->journals_off + 4096; break;
	case 22: sb->journals_off = sb->hosts_off; break;
	case 23: sb->data.chunk_table = sb->meta.base; break;
	case 24: sb->journals_off = UINT64_MAX - 4095; break;
	}
	if (r[i].reseal)
		seal(sb);
	return &r[i];
}

TEST(refusals)
{
	struct daxfs_open_opts oo = { .path = path2 };
	struct daxfs_err err;
	struct dfs_super good, sb;
	const struct refusal *r;
	struct daxfs *fs;
	int fd, rc, n = 0;

	unlink(path2);
	CHECK_RC(tu_mkfs(path2, 32 * MiB, 4), 0);
	fd = open(path2, O_RDWR);
	CHECK(fd >= 0);
	CHECK(pread(fd, &good, sizeof(good), 0) == (ssize_t)sizeof(good));
	for (int i = 0; (r = damage(i, (sb = good, &sb))) != NULL; i++, n++) {
		CHECK(pwrite(fd, &sb, sizeof(sb), 0) == (ssize_t)sizeof(sb));
		memset(&err, 0, sizeof(err));
		fs = NULL;
		rc = daxfs_open(&oo, &fs, &err);
		if (rc == 0)
			daxfs_close(fs);
		if (rc != r->want || (r->msg && (!strstr(err.msg, r->msg) ||
						 !strstr(err.msg, path2)))) {
			fprintf(stderr, "%s: open returned %d (%s), want %d with '%s'\n",
				r->what, rc, err.msg, r->want, r->msg ? r->msg : "");
			close(fd);
			CHECK(0);
		}
		if (rc < 0)
			printf("info: %s: %s\n", r->what, err.msg);
	}
	printf("info: %d superblock cases\n", n);
	/* Restored, it opens again. */
	CHECK(pwrite(fd, &good, sizeof(good), 0) == (ssize_t)sizeof(good));
	CHECK_RC(daxfs_open(&oo, &fs, &err), 0);
	daxfs_close(fs);
	/* A file cut short of its region, down to nothing. */
	CHECK(ftruncate(fd, (off_t)(20 * MiB)) == 0);
	CHECK(daxfs_open(&oo, &fs, &err) == -EUCLEAN);
	CHECK(strstr(err.msg, "impossible region size") != NULL);
	CHECK(ftruncate(fd, 100) == 0);
	CHECK(daxfs_open(&oo, &fs, &err) == -EUCLEAN);
	CHECK(strstr(err.msg, "cannot hold a superblock") != NULL);
	CHECK(ftruncate(fd, 0) == 0);
	rc = daxfs_open(&oo, &fs, &err);
	if (rc != -EINVAL)
		fprintf(stderr, "empty file: %d (%s)\n", rc, err.msg);
	CHECK(rc == -EINVAL);
	close(fd);
	unlink(path2);
	/* Not there, not a file. */
	CHECK(daxfs_open(&oo, &fs, &err) == -ENOENT);
	CHECK(strstr(err.msg, path2) != NULL);
	oo.path = getenv("DAXFS_TMP") ? getenv("DAXFS_TMP") : "/tmp";
	CHECK(daxfs_open(&oo, &fs, &err) == -EISDIR);
	oo.readonly = 1;
	CHECK(daxfs_open(&oo, &fs, &err) == -EINVAL);
	CHECK(strstr(err.msg, "neither a regular file") != NULL);
}

TEST(mkfs_refusals)
{
	struct daxfs_mkfs_opts mo = { .path = path2, .size = 32 * MiB };
	struct daxfs_err err = { 0 };

	unlink(path2);
	mo.size = 8 * MiB;
	CHECK(daxfs_mkfs(&mo, &err) == -EINVAL);
	CHECK(strstr(err.msg, "minimum") != NULL);
	mo.size = 32 * MiB;
	mo.max_hosts = 57;
	CHECK(daxfs_mkfs(&mo, &err) == -EINVAL);
	CHECK(strstr(err.msg, "max-hosts") != NULL);
	mo.max_hosts = 4;
	mo.journal_entries = 100;
	CHECK(daxfs_mkfs(&mo, &err) == -EINVAL);
	CHECK(strstr(err.msg, "journal entries") != NULL);
	mo.journal_entries = 0;
	mo.hash_slots = 1000;
	CHECK(daxfs_mkfs(&mo, &err) == -EINVAL);
	CHECK(strstr(err.msg, "hash slots") != NULL);
	/* Tables that leave no room for the areas. */
	mo.hash_slots = 1 << 19;
	CHECK(daxfs_mkfs(&mo, &err) == -ENOSPC);
	CHECK(strstr(err.msg, "too small") != NULL);
	unlink(path2);
}

/* mkfs on a tmpfs that cannot hold the region: a clean -ENOSPC, and the
 * file left behind is not taken for a region.  Returns 1 if mounting is
 * not permitted here (the case is skipped). */
static int tmpfs_enospc(void)
{
	const char *tmp = getenv("DAXFS_TMP");
	char mnt[300], file[340];
	struct daxfs_mkfs_opts mo = { .path = file, .size = 32 * MiB };
	struct daxfs_open_opts oo = { .path = file };
	struct daxfs_err err = { 0 };
	struct daxfs *fs;
	int rc, rc2;

	snprintf(mnt, sizeof(mnt), "%s/small-%d", tmp ? tmp : "/tmp", (int)getpid());
	snprintf(file, sizeof(file), "%s/region", mnt);
	if (mkdir(mnt, 0700) < 0)
		return 1;
	if (mount("daxfs-test", mnt, "tmpfs", MS_NOSUID | MS_NODEV, "size=8M") < 0) {
		printf("note: test_region/tmpfs_enospc skipped: mount tmpfs: %s\n",
		       strerror(errno));
		rmdir(mnt);
		return 1;
	}
	rc = daxfs_mkfs(&mo, &err);
	if (rc != -ENOSPC || !strstr(err.msg, file))
		fprintf(stderr, "mkfs on an 8 MiB tmpfs: %d (%s)\n", rc, err.msg);
	else
		printf("info: %s\n", err.msg);
	if (!strstr(err.msg, file))
		rc = -EIO;
	rc2 = daxfs_open(&oo, &fs, &err);
	if (rc2 == 0) {
		fprintf(stderr, "the file of a failed mkfs opens as a region\n");
		daxfs_close(fs);
	}
	unlink(file);
	if (umount(mnt) < 0)
		umount2(mnt, MNT_DETACH);
	rmdir(mnt);
	check_failed = rc != -ENOSPC || rc2 == 0;
	return 0;
}

CHECK_MAIN_BEGIN("test_region")
	tu_region_path(path, sizeof(path), "region");
	tu_region_path(path2, sizeof(path2), "region2");
	RUN(file_region);
	RUN(offset_region);
	RUN(buffer_region);
	RUN(parse_size);
	RUN(parse_region);
	RUN(refusals);
	RUN(mkfs_refusals);
	check_failed = 0;
	if (tmpfs_enospc() == 0) {
		printf("%s: test_region/tmpfs_enospc\n", check_failed ? "FAIL" : "PASS");
		check_total_failed += check_failed;
	}
CHECK_MAIN_END
