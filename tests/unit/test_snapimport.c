/* Background import of unpacked snapshots (snapshotter/import.c) through
 * a real daxfsd: its snapshotter socket is driven like containerd's
 * unpacker does (Prepare "NS/ID/extract-<unique> <chainID>" labelled
 * containerd.io/snapshot.ref, files into the upper directory, Commit),
 * with daxfs-view started by the test so the moment the region's copy
 * becomes visible is the test's choice.  Needs root (whiteout devices,
 * trusted xattrs, overlay and FUSE mounts). */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#include <openssl/sha.h>

#include "check.h"
#include "daxfs.h"
#include "ref.h"
#include "snapclient.h"
#include "snapshots.pb-c.h"

#define P(x) Containerd__Services__Snapshots__V1__##x
#define WAIT_MS 20000

static char tmp[1024], build[1024], region[1100], root[1100], mnt[1200], sock[1100],
	ctl_sock[1100], logpath[1100];
static pid_t daemon_pid, view_pid;

/* ---- gRPC calls ---- */

/* Call method with req; the grpc status (0 OK), or -1 if the call could
 * not be made or gave no status.  *resp gets the reply unpacked with rd
 * (if non-NULL). */
static int call(const char *method, const ProtobufCMessage *req,
		const ProtobufCMessageDescriptor *rd, ProtobufCMessage **resp)
{
	struct snapclient_call c = { 0 };
	int rc = snapclient_call(sock, method, req, &c);
	int status = c.status[0] ? atoi(c.status) : -1;

	if (rc == 0 && status == 0 && rd && resp) {
		*resp = snapclient_unpack(&c, rd);
		if (!*resp)
			rc = -1;
	}
	snapclient_call_free(&c);
	return rc < 0 ? -1 : status;
}

/* ---- the Snapshots methods the test uses ---- */

/* Prepare (or, view = 1, View) key on parent; with ref, labelled as the
 * unpacker does.  The status; mount's options go to opts ("\n"-joined),
 * its source to src. */
static int prepare(const char *key, const char *parent, const char *ref, int view,
		   char *opts, size_t olen)
{
	P(PrepareSnapshotRequest) q = CONTAINERD__SERVICES__SNAPSHOTS__V1__PREPARE_SNAPSHOT_REQUEST__INIT;
	P(PrepareSnapshotRequest__LabelsEntry) lab = CONTAINERD__SERVICES__SNAPSHOTS__V1__PREPARE_SNAPSHOT_REQUEST__LABELS_ENTRY__INIT;
	P(PrepareSnapshotRequest__LabelsEntry) *labs[1] = { &lab };
	P(PrepareSnapshotResponse) *r = NULL;
	int st;

	q.key = (char *)key;
	q.parent = (char *)parent;
	if (ref) {
		lab.key = "containerd.io/snapshot.ref";
		lab.value = (char *)ref;
		q.n_labels = 1;
		q.labels = labs;
	}
	/* View's request has the same fields as Prepare's. */
	st = call(view ? "View" : "Prepare", &q.base,
		  &containerd__services__snapshots__v1__prepare_snapshot_response__descriptor,
		  (ProtobufCMessage **)&r);
	if (opts)
		opts[0] = 0;
	if (st == 0 && r && r->n_mounts == 1 && opts) {
		size_t len = (size_t)snprintf(opts, olen, "source=%s\n", r->mounts[0]->source);

		for (size_t k = 0; k < r->mounts[0]->n_options && len < olen; k++)
			len += (size_t)snprintf(opts + len, olen - len, "%s\n",
						r->mounts[0]->options[k]);
	}
	if (r)
		protobuf_c_message_free_unpacked(&r->base, NULL);
	return st;
}

static int commit(const char *name, const char *key, const char *ref)
{
	P(CommitSnapshotRequest) q = CONTAINERD__SERVICES__SNAPSHOTS__V1__COMMIT_SNAPSHOT_REQUEST__INIT;
	P(CommitSnapshotRequest__LabelsEntry) lab = CONTAINERD__SERVICES__SNAPSHOTS__V1__COMMIT_SNAPSHOT_REQUEST__LABELS_ENTRY__INIT;
	P(CommitSnapshotRequest__LabelsEntry) *labs[1] = { &lab };

	q.name = (char *)name;
	q.key = (char *)key;
	if (ref) {
		lab.key = "containerd.io/snapshot.ref";
		lab.value = (char *)ref;
		q.n_labels = 1;
		q.labels = labs;
	}
	return call("Commit", &q.base, NULL, NULL);
}

static int remove_snap(const char *key)
{
	P(RemoveSnapshotRequest) q = CONTAINERD__SERVICES__SNAPSHOTS__V1__REMOVE_SNAPSHOT_REQUEST__INIT;

	q.key = (char *)key;
	return call("Remove", &q.base, NULL, NULL);
}

/* The value of label k of snapshot key ("" if none); -1 if Stat fails. */
static int stat_label(const char *key, const char *k, char *out, size_t len)
{
	P(StatSnapshotRequest) q = CONTAINERD__SERVICES__SNAPSHOTS__V1__STAT_SNAPSHOT_REQUEST__INIT;
	P(StatSnapshotResponse) *r = NULL;
	int st;

	q.key = (char *)key;
	st = call("Stat", &q.base,
		  &containerd__services__snapshots__v1__stat_snapshot_response__descriptor,
		  (ProtobufCMessage **)&r);
	out[0] = 0;
	if (st != 0 || !r || !r->info)
		st = -1;
	for (size_t j = 0; st == 0 && j < r->info->n_labels; j++)
		if (!strcmp(r->info->labels[j]->key, k))
			snprintf(out, len, "%s", r->info->labels[j]->value);
	if (r)
		protobuf_c_message_free_unpacked(&r->base, NULL);
	return st;
}

/* Poll key's import state until it is want; 0 or -1 after WAIT_MS. */
static int wait_state(const char *key, const char *want)
{
	char v[64];

	for (int waited = 0; waited < WAIT_MS; waited += 50) {
		if (stat_label(key, "daxfs.io/import", v, sizeof(v)) == 0 && !strcmp(v, want))
			return 0;
		usleep(50000);
	}
	fprintf(stderr, "snapshot %s: import state '%s', want '%s'\n", key, v, want);
	return -1;
}

/* ---- processes ---- */

static pid_t spawn(char *const argv[])
{
	pid_t pid = fork();

	if (pid == 0) {
		int fd = open(logpath, O_WRONLY | O_CREAT | O_APPEND, 0644);

		if (fd >= 0) {
			dup2(fd, 1);
			dup2(fd, 2);
		}
		execv(argv[0], argv);
		_exit(127);
	}
	return pid;
}

static int start_daemon(void)
{
	char bin[1100], cfg[1100];
	struct stat st;

	snprintf(bin, sizeof(bin), "%s/daxfsd", build);
	snprintf(cfg, sizeof(cfg), "%s/config.json", tmp);
	{
		char *argv[] = { bin, "--config", cfg, "--region", region, "--root", root,
				 "--address", ctl_sock, "--snapshotter-address", sock,
				 "--view", "external", "--lease-ms", "1000", "--log-level", "debug",
				 NULL };

		unlink(sock);
		daemon_pid = spawn(argv);
	}
	for (int k = 0; k < 200; k++) {
		if (stat(sock, &st) == 0)
			return 0;
		usleep(50000);
	}
	return -1;
}

static void kill_daemon(int sig)
{
	if (daemon_pid > 0) {
		kill(daemon_pid, sig);
		waitpid(daemon_pid, NULL, 0);
		daemon_pid = 0;
	}
}

static int start_view(void)
{
	char bin[1100];
	char *argv[] = { bin, "--region", region, "--root", root, "--mountpoint", mnt,
			 "--lease-ms", "1000", NULL };

	snprintf(bin, sizeof(bin), "%s/daxfs-view", build);
	view_pid = spawn(argv);
	return view_pid > 0 ? 0 : -1;
}

static void stop_view(void)
{
	if (view_pid > 0) {
		umount2(mnt, MNT_DETACH);
		kill(view_pid, SIGTERM);
		waitpid(view_pid, NULL, 0);
		view_pid = 0;
	}
}

static int run(const char *fmt, const char *a, const char *b)
{
	char cmd[4200];

	snprintf(cmd, sizeof(cmd), fmt, a, b);
	return system(cmd);
}

/* ---- files ---- */

static int put(const char *dir, const char *name, const void *data, size_t len)
{
	char p[2200];
	int fd, ok;

	snprintf(p, sizeof(p), "%s/%s", dir, name);
	fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (fd < 0)
		return -1;
	ok = write(fd, data, len) == (ssize_t)len;
	close(fd);
	return ok ? 0 : -1;
}

/* len pseudo-random bytes from seed (nothing the region can dedupe). */
static int put_random(const char *dir, const char *name, size_t len, uint64_t seed)
{
	uint64_t *buf = malloc(len + 8);
	int rc;

	if (!buf)
		return -1;
	for (size_t k = 0; k < len / 8 + 1; k++) {
		seed ^= seed << 13;
		seed ^= seed >> 7;
		seed ^= seed << 17;
		buf[k] = seed;
	}
	rc = put(dir, name, buf, len);
	free(buf);
	return rc;
}

static int read_file(const char *path, char *out, size_t len)
{
	int fd = open(path, O_RDONLY);
	ssize_t n;

	if (fd < 0)
		return -1;
	n = read(fd, out, len - 1);
	close(fd);
	if (n < 0)
		return -1;
	out[n] = 0;
	return 0;
}

/* The value of option name= in opts ("" if none). */
static void option(const char *opts, const char *name, char *out, size_t len)
{
	const char *p = strstr(opts, name);
	size_t n;

	out[0] = 0;
	if (!p)
		return;
	p += strlen(name);
	n = strcspn(p, "\n");
	snprintf(out, len, "%.*s", (int)n, p);
}

static void chain(char out[72], int n)
{
	snprintf(out, 72, "sha256:%064x", 0xc0de0000 + n + (unsigned)getpid() % 1000 * 100);
}

static int exists(const char *path)
{
	struct stat st;

	return lstat(path, &st) == 0;
}

/* Wait until path no longer exists; 0 or -1. */
static int wait_gone(const char *path)
{
	for (int waited = 0; waited < WAIT_MS; waited += 50) {
		if (!exists(path))
			return 0;
		usleep(50000);
	}
	return -1;
}

/* ---- cases ---- */

/* The imported layer is held by daxfsd itself (its record names it), not
 * only by the view while mounted: with the view gone, it stays held and
 * another host's gc cannot take it.  (Ends the case on failure.) */
static void held_without_view(const char *chain)
{

	struct daxfs_open_opts o = { .path = region, .readonly = 1 };
	struct daxfs_layer_info li;
	uint8_t key[32];
	struct daxfs *fs;

	CHECK_RC(digest_parse(chain, key), 0);
	stop_view();
	CHECK_RC(daxfs_open(&o, &fs, NULL), 0);
	CHECK_RC(daxfs_layer_info(fs, key, &li, NULL), 0);
	CHECK(li.state == 2 /* READY */ && li.holders != 0);
	daxfs_close(fs);
	/* Another host sweeps everything it may. */
	{
		struct daxfs_host_opts h = { .uuid = { 0xec, 1 }, .name = "sweeper",
					     .kind = DAXFS_PROC_DAEMON };
		struct daxfs_gc_opts g = { .all = 1 };
		struct daxfs_gc_result r;

		o.readonly = 0;
		CHECK_RC(daxfs_open(&o, &fs, NULL), 0);
		CHECK_RC(daxfs_host_attach(fs, &h, NULL), 0);
		CHECK_RC(daxfs_gc(fs, &g, &r, NULL), 0);
		CHECK_RC(daxfs_layer_info(fs, key, &li, NULL), 0);
		CHECK(li.state == 2 /* READY */);
		daxfs_close(fs);
	}
	CHECK_RC(start_view(), 0);
}

static char c1[72], c1name[200], c1dir[1200], c1view[1200];

/* An unpacked layer becomes a region layer; until the view shows it the
 * local copy serves, and it is dropped once its last user is removed. */
TEST(import_layer)
{
	char key[200], opts[8192], up[1200], v[4096], p[2400], lower[4200];
	struct stat st, st2;

	chain(c1, 1);
	snprintf(key, sizeof(key), "default/1/extract-1 %s", c1);
	snprintf(c1name, sizeof(c1name), "default/2/%s", c1);
	CHECK_RC(prepare(key, "", c1, 0, opts, sizeof(opts)), 0);
	option(opts, "source=", up, sizeof(up));
	CHECK(strstr(up, "/snapshots/") && strstr(opts, "rbind"));
	snprintf(c1dir, sizeof(c1dir), "%s", up);
	/* What containerd's overlay differ leaves in an upper directory. */
	CHECK_RC(put(up, "a.txt", "hello layer\n", 12), 0);
	CHECK_RC(put_random(up, "big", 300000, 7), 0);
	snprintf(p, sizeof(p), "%s/gone", up);
	CHECK_RC(mknod(p, S_IFCHR | 0, makedev(0, 0)), 0);
	snprintf(p, sizeof(p), "%s/opq", up);
	CHECK_RC(mkdir(p, 0750), 0);
	CHECK_RC(setxattr(p, "trusted.overlay.opaque", "y", 1, 0), 0);
	CHECK_RC(put(p, "inside", "x", 1), 0);
	CHECK_RC(put(up, "orig", "o", 1), 0);
	snprintf(p, sizeof(p), "%s/orig", up);
	CHECK_RC(setxattr(p, "trusted.overlay.origin", "\0\1\2", 3, 0), 0);
	CHECK_RC(setxattr(p, "user.keep", "kept", 4, 0), 0);
	snprintf(p, sizeof(p), "%s/link", up);
	CHECK_RC(symlink("a.txt", p), 0);
	snprintf(p, sizeof(p), "%s/a.txt", up);
	snprintf(lower, sizeof(lower), "%s/hard", up);
	CHECK_RC(link(p, lower), 0);
	CHECK_RC(commit(c1name, key, c1), 0);

	/* No view yet: the layer cannot be shown, the local copy serves. */
	CHECK_RC(stat_label(c1name, "daxfs.io/import", v, sizeof(v)), 0);
	CHECK(!strcmp(v, "pending"));
	CHECK_RC(prepare("default/3/user-of-local", c1name, NULL, 0, opts, sizeof(opts)), 0);
	option(opts, "lowerdir=", lower, sizeof(lower));
	CHECK(!strcmp(lower, up));

	CHECK_RC(start_view(), 0);
	CHECK_RC(wait_state(c1name, "ready"), 0);
	CHECK_RC(stat_label(c1name, "daxfs.io/import.layer", v, sizeof(v)), 0);
	CHECK(!strncmp(v, "sha256:", 7));
	/* A bottom layer is keyed by its chainID, which is its diff_id. */
	CHECK(!strcmp(v, c1));

	/* New mounts use the region's directory. */
	CHECK_RC(prepare("default/4/child", c1name, NULL, 0, opts, sizeof(opts)), 0);
	option(opts, "lowerdir=", c1view, sizeof(c1view));
	CHECK(!strncmp(c1view, mnt, strlen(mnt)) && strstr(c1view, "/l/"));

	/* The layer's tree: flags for whiteouts and opaque directories,
	 * overlay's private xattrs gone, contents and links kept. */
	snprintf(p, sizeof(p), "%s/gone", c1view);
	CHECK(lstat(p, &st) == 0 && S_ISCHR(st.st_mode) && st.st_rdev == makedev(0, 0));
	snprintf(p, sizeof(p), "%s/opq", c1view);
	CHECK(lstat(p, &st) == 0 && S_ISDIR(st.st_mode) && (st.st_mode & 07777) == 0750);
	CHECK(getxattr(p, "trusted.overlay.opaque", v, sizeof(v)) == 1 && v[0] == 'y');
	snprintf(p, sizeof(p), "%s/orig", c1view);
	CHECK(getxattr(p, "trusted.overlay.origin", v, sizeof(v)) < 0);
	CHECK(getxattr(p, "user.keep", v, sizeof(v)) == 4 && !memcmp(v, "kept", 4));
	snprintf(p, sizeof(p), "%s/a.txt", c1view);
	CHECK(read_file(p, v, sizeof(v)) == 0 && !strcmp(v, "hello layer\n"));
	CHECK(lstat(p, &st) == 0);
	snprintf(p, sizeof(p), "%s/hard", c1view);
	CHECK(lstat(p, &st2) == 0 && st2.st_ino == st.st_ino && st.st_nlink == 2);
	snprintf(p, sizeof(p), "%s/link", c1view);
	CHECK(readlink(p, v, sizeof(v)) == 5 && !memcmp(v, "a.txt", 5));
	CHECK_RC(run("cmp -s '%s/big' '%s/big'", c1view, up), 0);

	held_without_view(c1);
	if (check_failed)
		return;
	/* The chain is in the region: a Prepare of it elsewhere is remote. */
	CHECK_RC(prepare("default/5/extract-5 again", "", c1, 0, NULL, 0), 6 /* AlreadyExists */);

	/* The local copy stays while its user exists. */
	usleep(300000);
	CHECK(exists(up));
	CHECK_RC(remove_snap("default/3/user-of-local"), 0);
	CHECK_RC(wait_gone(up), 0);

	/* A real mount of the child: the whiteout hides, the rest shows. */
	snprintf(p, sizeof(p), "%s/m", tmp);
	mkdir(p, 0755);
	{
		char data[12000] = "", up2[4200], work[4200];

		option(opts, "upperdir=", up2, sizeof(up2));
		option(opts, "workdir=", work, sizeof(work));
		snprintf(data, sizeof(data), "lowerdir=%s,upperdir=%s,workdir=%s", c1view, up2,
			 work);
		CHECK_RC(mount("overlay", p, "overlay", 0, data), 0);
	}
	snprintf(lower, sizeof(lower), "%s/m/a.txt", tmp);
	CHECK(read_file(lower, v, sizeof(v)) == 0 && !strcmp(v, "hello layer\n"));
	snprintf(lower, sizeof(lower), "%s/m/gone", tmp);
	CHECK(!exists(lower));
	CHECK_RC(umount2(p, MNT_DETACH), 0);
}

/* A commit that is not containerd's unpacker stays local. */
TEST(other_commit_stays_local)
{
	char opts[8192], up[1200], v[256], lower[4200];

	CHECK_RC(prepare("build-1", "", NULL, 0, opts, sizeof(opts)), 0);
	option(opts, "source=", up, sizeof(up));
	CHECK_RC(put(up, "f", "local", 5), 0);
	CHECK_RC(commit("built", "build-1", NULL), 0);
	/* An extract key with a foreign ref label stays local too. */
	CHECK_RC(prepare("default/7/extract-7 sha256:00", "", "sha256:00", 0, NULL, 0), 0);
	CHECK_RC(commit("default/8/other", "default/7/extract-7 sha256:00", "sha256:00"), 0);
	usleep(300000);
	CHECK_RC(stat_label("built", "daxfs.io/import", v, sizeof(v)), 0);
	CHECK(!v[0]);
	CHECK_RC(stat_label("default/8/other", "daxfs.io/import", v, sizeof(v)), 0);
	CHECK(!v[0]);
	CHECK_RC(prepare("on-built", "built", NULL, 1, opts, sizeof(opts)), 0);
	option(opts, "source=", lower, sizeof(lower));
	CHECK(!strcmp(lower, up));
}

/* A layer the region has no room for: the local copy stays and serves,
 * the failure is reported and counted. */
/* A READY layer no host holds, built by another host that then leaves. */
static void filler_layer(uint8_t id[32], size_t len)
{
	struct daxfs_open_opts o = { .path = region, .lease_ms = 1000 };
	struct daxfs_host_opts h = { .uuid = { 0xf1, 2 }, .name = "filler",
				     .kind = DAXFS_PROC_DAEMON };
	struct daxfs_entry e = { .path = "blob", .mode = S_IFREG | 0644, .size = len };
	struct daxfs_layer_builder *b;
	uint64_t *buf = malloc(len), serial;
	struct daxfs *fs;

	CHECK(buf != NULL);
	for (size_t k = 0; k < len / 8; k++)
		buf[k] = k * 0x9e3779b97f4a7c15ull + 7;
	memset(id, 0xf1, 32);
	CHECK_RC(daxfs_open(&o, &fs, NULL), 0);
	CHECK_RC(daxfs_host_attach(fs, &h, NULL), 0);
	CHECK_RC(daxfs_heartbeat_start(fs), 0);	/* daxfsd reaps silent hosts */
	CHECK_RC(daxfs_layer_build(fs, id, &b, NULL), 0);
	CHECK_RC(daxfs_builder_add(b, &e, NULL), 0);
	CHECK_RC(daxfs_builder_write(b, buf, len, NULL), 0);
	CHECK_RC(daxfs_builder_publish(b, &serial, NULL), 0);
	daxfs_close(fs);
	free(buf);
}

/* An import that only fits once an unheld layer goes: daxfsd evicts it,
 * as a pull would, and the import succeeds. */
TEST(import_makes_room)
{
	char key[200], name[200], c[72], opts[8192], up[1200];
	struct daxfs_open_opts o = { .path = region, .readonly = 1 };
	struct daxfs_layer_info li;
	uint8_t filler[32];
	struct daxfs *fs;

	struct daxfs_usage u;
	size_t free_mib;

	/* Sized from the free space: the filler takes three quarters, the
	 * import needs half, so it fits only once the filler is gone. */
	CHECK_RC(daxfs_open(&o, &fs, NULL), 0);
	CHECK_RC(daxfs_usage(fs, &u), 0);
	daxfs_close(fs);
	free_mib = (u.data_total - u.data_used) >> 20;
	CHECK(free_mib >= 8);
	filler_layer(filler, (free_mib * 3 / 4) << 20);
	if (check_failed)
		return;
	chain(c, 4);
	snprintf(key, sizeof(key), "default/30/extract-30 %s", c);
	snprintf(name, sizeof(name), "default/31/%s", c);
	CHECK_RC(prepare(key, "", c, 0, opts, sizeof(opts)), 0);
	option(opts, "source=", up, sizeof(up));
	CHECK_RC(put_random(up, "big", (free_mib / 2) << 20, 30), 0);
	CHECK_RC(commit(name, key, c), 0);
	CHECK_RC(wait_state(name, "ready"), 0);
	CHECK_RC(daxfs_open(&o, &fs, NULL), 0);
	CHECK(daxfs_layer_info(fs, filler, &li, NULL) < 0 || li.state != 2 /* READY */);
	daxfs_close(fs);
	CHECK_RC(run("grep -q 'evicted 1 layers' '%s'%s", logpath, ""), 0);
}

TEST(region_full)
{
	char key[200], name[200], c[72], opts[8192], up[1200], v[1024], lower[4200];

	chain(c, 2);
	snprintf(key, sizeof(key), "default/10/extract-10 %s", c);
	snprintf(name, sizeof(name), "default/11/%s", c);
	CHECK_RC(prepare(key, "", c, 0, opts, sizeof(opts)), 0);
	option(opts, "source=", up, sizeof(up));
	CHECK_RC(put_random(up, "huge", 48u << 20, 11), 0);
	CHECK_RC(commit(name, key, c), 0);
	CHECK_RC(wait_state(name, "failed"), 0);
	CHECK_RC(stat_label(name, "daxfs.io/import.error", v, sizeof(v)), 0);
	CHECK(strstr(v, "full") || strstr(v, "space"));
	CHECK_RC(prepare("default/12/on-full", name, NULL, 0, opts, sizeof(opts)), 0);
	option(opts, "lowerdir=", lower, sizeof(lower));
	CHECK(!strcmp(lower, up));
	snprintf(lower, sizeof(lower), "%s/huge", up);
	CHECK(exists(lower));
	CHECK_RC(run("grep -q 'failed (1 failed imports so far)' '%s'%s", logpath, ""), 0);
	CHECK_RC(run("'%s/daxfsctl' stats --address '%s' | "
		     "grep -qx 'failed imports of unpacked snapshots: 1'", build, ctl_sock), 0);
	/* Nothing of the failed layer is left behind. */
	CHECK_RC(run("'%s/daxfsctl' fsck --live '%s' >/dev/null", build, region), 0);
}

/* Wait (briefly) until layer key is being built in the region; 1 if seen. */
static int saw_unpacking(const uint8_t key[32])
{
	struct daxfs_open_opts o = { .path = region, .readonly = 1 };
	struct daxfs_layer_info li;
	struct daxfs *fs;
	int seen = 0;

	if (daxfs_open(&o, &fs, NULL) < 0)
		return 0;
	for (long k = 0; k < 20000000 && !seen; k++)
		seen = daxfs_layer_info(fs, key, &li, NULL) == 0 && li.state == 1 /* UNPACKING */;
	daxfs_close(fs);
	return seen;
}

/* kill -9 while importing: the next daxfsd imports it again. */
TEST(kill_mid_import)
{
	char key[200], name[200], c[72], opts[8192], up[1200], lower[4200], f[32], derived[200];
	uint8_t layer[32];

	chain(c, 3);
	snprintf(key, sizeof(key), "default/20/extract-20 %s", c);
	snprintf(name, sizeof(name), "default/21/%s", c);
	CHECK_RC(prepare(key, c1name, c, 0, opts, sizeof(opts)), 0);
	option(opts, "upperdir=", up, sizeof(up));
	for (int k = 0; k < 1000; k++) {
		snprintf(f, sizeof(f), "f%03d", k);
		CHECK_RC(put_random(up, f, 20000, (uint64_t)k + 100), 0);
	}
	/* The key of a non-bottom layer, as docs/containerd.md gives it. */
	snprintf(derived, sizeof(derived), "daxfs import of chain %s", c);
	SHA256((const unsigned char *)derived, strlen(derived), layer);
	CHECK_RC(commit(name, key, c), 0);
	if (!saw_unpacking(layer))
		fprintf(stderr, "kill_mid_import: the import ended before the kill\n");
	kill_daemon(SIGKILL);
	CHECK_RC(start_daemon(), 0);
	CHECK_RC(wait_state(name, "ready"), 0);
	CHECK_RC(prepare("default/22/on-killed", name, NULL, 0, opts, sizeof(opts)), 0);
	option(opts, "lowerdir=", lower, sizeof(lower));
	/* Nearest first: this layer's region directory, then its parent's. */
	CHECK(!strncmp(lower, mnt, strlen(mnt)) && strstr(lower, c1view));
	lower[strcspn(lower, ":")] = 0;
	/* The local copy is gone by now (nobody was handed it). */
	CHECK_RC(wait_gone(up), 0);
	CHECK_RC(put_random(tmp, "f123", 20000, 123 + 100), 0);
	CHECK_RC(run("cmp -s '%s/f123' '%s/f123'", lower, tmp), 0);
	CHECK_RC(run("'%s/daxfsctl' fsck --live '%s' >/dev/null", build, region), 0);
}

CHECK_MAIN_BEGIN("test_snapimport")
{
	const char *t = getenv("DAXFS_TMP"), *b = getenv("DAXFS_BUILD");
	FILE *cfg;

	if (getuid() != 0) {
		printf("SKIP: test_snapimport (needs root)\n");
		return 0;
	}
	if (!t || !t[0]) {
		fprintf(stderr, "test_snapimport: set DAXFS_TMP to a private directory\n");
		return 2;
	}
	snprintf(tmp, sizeof(tmp), "%s", t);
	snprintf(build, sizeof(build), "%s", b ? b : "build");
	snprintf(region, sizeof(region), "%s/import-region", tmp);
	snprintf(root, sizeof(root), "%s/import-root", tmp);
	snprintf(mnt, sizeof(mnt), "%s/mnt", root);
	snprintf(sock, sizeof(sock), "%s/import-snap.sock", tmp);
	snprintf(ctl_sock, sizeof(ctl_sock), "%s/import-ctl.sock", tmp);
	snprintf(logpath, sizeof(logpath), "%s/import-daxfsd.log", tmp);
	snprintf(c1view, sizeof(c1view), "%s/config.json", tmp);
	cfg = fopen(c1view, "w");
	if (cfg) {
		fputs("{}\n", cfg);
		fclose(cfg);
	}
	mkdir(root, 0700);
	mkdir(mnt, 0755);
	if (run("'%s/daxfsctl' mkfs --size 40M '%s' >/dev/null", build, region) != 0 ||
	    start_daemon() < 0) {
		printf("FAIL: test_snapimport/start\n");
		kill_daemon(SIGTERM);
		return 1;
	}
	RUN(import_layer);
	RUN(other_commit_stays_local);
	RUN(kill_mid_import);
	RUN(import_makes_room);
	RUN(region_full);	/* last: the failed layer's space is not reused at once */
	kill_daemon(SIGTERM);
	stop_view();
	if (check_total_failed)
		run("tail -n 30 '%s' >&2%s", logpath, "");
}
CHECK_MAIN_END
