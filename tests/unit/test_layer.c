/* Building layers and reading them back: tar semantics, dedup, eviction. */
#include <errno.h>
#include <sys/stat.h>

#include "check.h"
#include "testutil.h"

static char path[256];

static struct daxfs_entry ent(const char *p, uint32_t mode)
{
	struct daxfs_entry e;

	memset(&e, 0, sizeof(e));
	e.path = p;
	e.mode = mode;
	e.uid = 1000;
	e.gid = 100;
	e.mtime_sec = 1700000000;
	e.mtime_nsec = 123456789;
	return e;
}

static int add_file(struct daxfs_layer_builder *b, const char *p,
		    const char *data, size_t len)
{
	struct daxfs_entry e = ent(p, S_IFREG | 0644);
	struct daxfs_err err = { 0 };
	int rc;

	e.size = len;
	rc = daxfs_builder_add(b, &e, &err);
	if (rc == 0)
		rc = daxfs_builder_write(b, data, len, &err);
	if (rc < 0)
		fprintf(stderr, "add %s: %s\n", p, err.msg);
	return rc;
}

static int fsck_problems(struct daxfs *fs, int live)
{
	tu_fsck_count = 0;
	return daxfs_fsck(fs, live, tu_fsck_line, NULL);
}

TEST(build_and_read)
{
	struct daxfs *fs;
	struct daxfs_layer_builder *b;
	struct daxfs_layer *l;
	struct daxfs_err err = { 0 };
	struct daxfs_stat st;
	uint8_t id[32];
	uint32_t ino, ino2;
	char buf[64];
	const char *name, *tgt;
	size_t nl;
	uint8_t dt;
	uint64_t serial;
	const char *xn[] = { "security.capability" };
	const void *xv[] = { "\x01\x02\x03" };
	size_t xl[] = { 3 };

	CHECK_RC(tu_mkfs(path, 64 << 20, 4), 0);
	CHECK_RC(tu_attach(path, 1, 2000, &fs), 0);
	tu_digest(id, 1, 0);
	CHECK_RC(daxfs_layer_build(fs, id, &b, &err), 0);
	CHECK_RC(add_file(b, "etc/passwd", "root:x:0:0\n", 11), 0);
	CHECK_RC(add_file(b, "/etc/passwd", "root:x:0:0:root\n", 16), 0); /* replaces */
	struct daxfs_entry e = ent("./usr/bin/", S_IFDIR | 0755);
	CHECK_RC(daxfs_builder_add(b, &e, &err), 0);
	e = ent("usr/bin/tool", S_IFREG | 04755);
	e.size = 5;
	e.nxattrs = 1;
	e.xattr_names = xn;
	e.xattr_values = xv;
	e.xattr_lens = xl;
	CHECK_RC(daxfs_builder_add(b, &e, &err), 0);
	CHECK_RC(daxfs_builder_write(b, "hello", 5, &err), 0);
	e = ent("usr/bin/tool2", S_IFREG);
	e.hardlink = 1;
	e.link = "usr/bin/tool";
	CHECK_RC(daxfs_builder_add(b, &e, &err), 0);
	e = ent("usr/lib/libx.so", S_IFLNK | 0777);
	e.link = "libx.so.1";
	CHECK_RC(daxfs_builder_add(b, &e, &err), 0);
	e = ent("dev/null", S_IFCHR | 0666);
	e.rdev_major = 1;
	e.rdev_minor = 3;
	CHECK_RC(daxfs_builder_add(b, &e, &err), 0);
	e = ent("old", S_IFREG);
	e.whiteout = 1;
	CHECK_RC(daxfs_builder_add(b, &e, &err), 0);
	e = ent("var/cache", S_IFDIR);
	e.opaque = 1;
	CHECK_RC(daxfs_builder_add(b, &e, &err), 0);
	e = ent("../escape", S_IFREG);
	CHECK(daxfs_builder_add(b, &e, &err) == -EPERM);
	CHECK(strstr(err.msg, "escapes") != NULL);
	CHECK_RC(add_file(b, "empty", "", 0), 0);
	CHECK_RC(daxfs_builder_publish(b, &serial, &err), 0);
	CHECK(serial >= 2);

	CHECK_RC(daxfs_layer_open(fs, id, &l, &err), 0);
	CHECK(daxfs_layer_serial(l) == serial);
	CHECK_RC(daxfs_lookup_path(l, "etc/passwd", &ino), 0);
	CHECK_RC(daxfs_stat(l, ino, &st), 0);
	CHECK(st.size == 16 && st.uid == 1000 && st.gid == 100);
	CHECK(st.mtime_sec == 1700000000 && st.mtime_nsec == 123456789);
	CHECK(daxfs_pread(l, ino, buf, sizeof(buf), 0) == 16);
	CHECK(!memcmp(buf, "root:x:0:0:root\n", 16));
	CHECK(daxfs_pread(l, ino, buf, 4, 5) == 4 && !memcmp(buf, "x:0:", 4));
	CHECK_RC(daxfs_lookup_path(l, "usr/bin/tool", &ino), 0);
	CHECK_RC(daxfs_lookup_path(l, "usr/bin/tool2", &ino2), 0);
	CHECK(ino == ino2);
	CHECK_RC(daxfs_stat(l, ino, &st), 0);
	CHECK(st.mode == (S_IFREG | 04755) && st.nlink == 2);
	CHECK(daxfs_getxattr(l, ino, "security.capability", buf, sizeof(buf)) == 3);
	CHECK(!memcmp(buf, "\x01\x02\x03", 3));
	CHECK(daxfs_getxattr(l, ino, "user.none", buf, sizeof(buf)) == -ENODATA);
	CHECK(daxfs_listxattr(l, ino, buf, sizeof(buf)) == 20);
	CHECK_RC(daxfs_lookup_path(l, "usr/lib/libx.so", &ino), 0);
	CHECK_RC(daxfs_readlink(l, ino, &tgt, &nl), 0);
	CHECK(nl == 9 && !memcmp(tgt, "libx.so.1", 9));
	CHECK_RC(daxfs_lookup_path(l, "dev/null", &ino), 0);
	CHECK_RC(daxfs_stat(l, ino, &st), 0);
	CHECK(S_ISCHR(st.mode) && st.rdev_major == 1 && st.rdev_minor == 3);
	CHECK_RC(daxfs_lookup_path(l, "old", &ino), 0);
	CHECK_RC(daxfs_stat(l, ino, &st), 0);
	CHECK(st.flags & DAXFS_F_WHITEOUT);
	CHECK(S_ISCHR(st.mode) && st.rdev_major == 0 && st.rdev_minor == 0);
	CHECK_RC(daxfs_lookup_path(l, "var/cache", &ino), 0);
	CHECK_RC(daxfs_stat(l, ino, &st), 0);
	CHECK(S_ISDIR(st.mode) && (st.flags & DAXFS_F_OPAQUE));
	CHECK_RC(daxfs_lookup_path(l, "empty", &ino), 0);
	CHECK(daxfs_pread(l, ino, buf, sizeof(buf), 0) == 0);
	/* Root listing is sorted and reports types. */
	const char *want[] = { "dev", "empty", "etc", "old", "usr", "var" };
	for (uint32_t i = 0; i < 6; i++) {
		CHECK_RC(daxfs_readdir(l, DAXFS_ROOT_INO, i, &name, &nl, &ino, &dt), 0);
		CHECK(nl == strlen(want[i]) && !memcmp(name, want[i], nl));
	}
	CHECK(daxfs_readdir(l, DAXFS_ROOT_INO, 6, &name, &nl, &ino, &dt) == -ENOENT);
	CHECK(daxfs_lookup_path(l, "nope", &ino) == -ENOENT);
	/* Held: cannot be evicted. */
	CHECK(daxfs_layer_evict(fs, id, &err) == -EBUSY);
	CHECK_RC(fsck_problems(fs, 1), 0);
	daxfs_layer_close(l);
	CHECK_RC(daxfs_layer_evict(fs, id, &err), 0);
	CHECK(daxfs_layer_open(fs, id, &l, &err) == -ENOENT);
	daxfs_close(fs);
	CHECK_RC(tu_attach(path, 1, 2000, &fs), 0);
	daxfs_close(fs);
	{
		struct daxfs_open_opts o = { .path = path };
		struct daxfs_usage u;

		CHECK_RC(daxfs_open(&o, &fs, &err), 0);
		CHECK_RC(fsck_problems(fs, 0), 0);
		daxfs_usage(fs, &u);
		CHECK(u.data_used == 0);
		CHECK(u.contents == 0);
		daxfs_close(fs);
	}
	unlink(path);
}

TEST(dedup_and_abort)
{
	struct daxfs *fs;
	struct daxfs_layer_builder *b;
	struct daxfs_err err = { 0 };
	struct daxfs_usage u0, u1;
	uint8_t id1[32], id2[32], id3[32];
	static char big[3 << 20];

	for (size_t i = 0; i < sizeof(big); i++)
		big[i] = (char)(i * 7 + i / 4096);
	CHECK_RC(tu_mkfs(path, 64 << 20, 4), 0);
	CHECK_RC(tu_attach(path, 1, 2000, &fs), 0);
	tu_digest(id1, 2, 1);
	tu_digest(id2, 2, 2);
	tu_digest(id3, 2, 3);
	CHECK_RC(daxfs_layer_build(fs, id1, &b, &err), 0);
	CHECK_RC(add_file(b, "a", big, sizeof(big)), 0);
	CHECK_RC(add_file(b, "b", "small", 5), 0);
	CHECK_RC(daxfs_builder_publish(b, NULL, &err), 0);
	daxfs_usage(fs, &u0);
	/* Same contents in another layer: stored once. */
	CHECK_RC(daxfs_layer_build(fs, id2, &b, &err), 0);
	CHECK_RC(add_file(b, "x/y/z", big, sizeof(big)), 0);
	CHECK_RC(add_file(b, "c", "small", 5), 0);
	CHECK_RC(daxfs_builder_publish(b, NULL, &err), 0);
	daxfs_usage(fs, &u1);
	CHECK(u1.data_used == u0.data_used);
	CHECK(u1.contents == 2);
	CHECK(u1.referenced_bytes == 2 * (sizeof(big) + 5));
	/* The same layer twice: refused while READY. */
	CHECK(daxfs_layer_build(fs, id1, &b, &err) == -EEXIST);
	/* Aborted build leaves nothing behind. */
	CHECK_RC(daxfs_layer_build(fs, id3, &b, &err), 0);
	CHECK_RC(add_file(b, "new", "fresh data", 10), 0);
	CHECK_RC(add_file(b, "dup", big, sizeof(big)), 0);
	CHECK_RC(add_file(b, "partial", big, 100), 0);
	daxfs_builder_abort(b);
	daxfs_usage(fs, &u1);
	CHECK(u1.data_used == u0.data_used);
	CHECK(u1.contents == 2);
	CHECK_RC(fsck_problems(fs, 1), 0);
	/* The aborted layer can be built again. */
	CHECK_RC(daxfs_layer_build(fs, id3, &b, &err), 0);
	CHECK_RC(daxfs_builder_publish(b, NULL, &err), 0);
	CHECK_RC(daxfs_layer_evict(fs, id1, &err), 0);
	daxfs_usage(fs, &u1);
	CHECK(u1.data_used == u0.data_used);	/* still used by id2 */
	CHECK_RC(daxfs_layer_evict(fs, id2, &err), 0);
	daxfs_usage(fs, &u1);
	CHECK(u1.data_used == 0 && u1.contents == 0);
	CHECK_RC(fsck_problems(fs, 1), 0);
	daxfs_close(fs);
	unlink(path);
}

CHECK_MAIN_BEGIN("test_layer")
	tu_region_path(path, sizeof(path), "layer");
	RUN(build_and_read);
	RUN(dedup_and_abort);
CHECK_MAIN_END
