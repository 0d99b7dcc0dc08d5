/* daxfsd's snapshotter socket and service: see snapshotter.h. */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "daemon.h"
#include "grpc.h"
#include "log.h"
#include "snapshots.h"
#include "snapshotter.h"
#include "supervise.h"

static struct grpc_server *server;
static struct snapshots *snaps;
static char sock_path[sizeof(((struct sockaddr_un *)0)->sun_path)];
static ino_t sock_ino;

/* The image-filesystem path containerd 1.6's CRI reports: a read-only
 * bind mount of the view (whose statfs is the region's). */
#define CAPACITY_DIR "io.containerd.snapshotter.v1.daxfs"
#define FUSE_MAGIC 0x65735546
static char cap_path[4200], cap_view[4200];
static pthread_t cap_thread;
static _Atomic int cap_stop;
static int cap_running;

static void mkdirs(const char *path)
{
	char tmp[sizeof(sock_path)];

	if (strlen(path) >= sizeof(tmp))
		return;
	memcpy(tmp, path, strlen(path) + 1);
	for (char *p = tmp + 1; (p = strchr(p, '/')); p++) {
		*p = 0;
		mkdir(tmp, 0755);
		*p = '/';
	}
}

/* Does a live server answer on path? */
static int in_use(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0), rc;

	if (fd < 0 || strlen(path) >= sizeof(sa.sun_path)) {
		if (fd >= 0)
			close(fd);
		return 0;
	}
	memcpy(sa.sun_path, path, strlen(path) + 1);
	rc = connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0;
	close(fd);
	return rc;
}

/* Listen on path, created 0600 under a temporary name and renamed into
 * place, so nobody else can connect in between. */
static int listen_on(const char *path, struct daxfs_err *err)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct stat st;
	int fd, rc;

	/* Bound under a name of our own, then renamed into place, so two
	 * daemons starting at once never unlink each other's socket. */
	if (snprintf(sa.sun_path, sizeof(sa.sun_path), "%s.%d", path, (int)getpid()) >=
	    (int)sizeof(sa.sun_path))
		return daxfs_err_set(err, -ENAMETOOLONG, "socket path too long: %s", path);
	mkdirs(path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return daxfs_err_set(err, -errno, "socket: %s", strerror(errno));
	unlink(sa.sun_path);
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || chmod(sa.sun_path, 0600) < 0 ||
	    listen(fd, 64) < 0 || rename(sa.sun_path, path) < 0 || stat(path, &st) < 0) {
		rc = daxfs_err_set(err, -errno, "listen on %s: %s", path, strerror(errno));
		unlink(sa.sun_path);
		close(fd);
		return rc;
	}
	sock_ino = st.st_ino;
	return fd;
}

/* ---- the image-filesystem bind mount ---- */

static int is_fuse(const char *path, int *eno)
{
	struct statfs st;

	if (statfs(path, &st) < 0) {
		*eno = errno;
		return 0;
	}
	*eno = 0;
	return st.f_type == FUSE_MAGIC;
}

/* Bind the view at cap_path once it serves.  A bind already there (from
 * before a daxfsd restart) is kept; one left by a view that died is
 * replaced. */
static void capacity_check(void)
{
	char dir[sizeof(cap_path)];
	int eno;

	if (!is_fuse(cap_view, &eno))
		return;		/* the view is not serving (yet) */
	if (is_fuse(cap_path, &eno))
		return;
	if (eno == ENOTCONN) {
		log_info("snapshotter: %s shows a view that is gone; binding the new one", cap_path);
		umount2(cap_path, MNT_DETACH);
	}
	snprintf(dir, sizeof(dir), "%s", cap_path);
	for (char *p = dir + 1; (p = strchr(p, '/')); p++) {
		*p = 0;
		mkdir(dir, 0755);
		*p = '/';
	}
	mkdir(cap_path, 0755);
	if (mount(cap_view, cap_path, NULL, MS_BIND, NULL) < 0) {
		log_warn("snapshotter: bind %s at %s: %s", cap_view, cap_path, strerror(errno));
		return;
	}
	if (mount(NULL, cap_path, NULL, MS_BIND | MS_REMOUNT | MS_RDONLY, NULL) < 0)
		log_warn("snapshotter: make %s read-only: %s", cap_path, strerror(errno));
	log_info("snapshotter: %s shows the region (the view at %s)", cap_path, cap_view);
}

static void *capacity_main(void *arg)
{
	(void)arg;
	while (!atomic_load(&cap_stop)) {
		capacity_check();
		/* The view may start late or be restarted: look again. */
		for (int t = 0; t < 500 && !atomic_load(&cap_stop); t += 50) {
			struct timespec ts = { 0, 50 * 1000000L };

			nanosleep(&ts, NULL);
		}
	}
	return NULL;
}

static void capacity_start(const struct settings *c, const char *view)
{
	if (!c->containerd_root[0])
		return;
	snprintf(cap_path, sizeof(cap_path), "%s/%s", c->containerd_root, CAPACITY_DIR);
	snprintf(cap_view, sizeof(cap_view), "%s", view);
	atomic_store(&cap_stop, 0);
	cap_running = pthread_create(&cap_thread, NULL, capacity_main, NULL) == 0;
	if (!cap_running)
		log_warn("snapshotter: no thread to bind %s", cap_path);
}

static void capacity_stop(void)
{
	if (!cap_running)
		return;
	atomic_store(&cap_stop, 1);
	pthread_join(cap_thread, NULL);
	cap_running = 0;
}

/* ---- the service ---- */

int snapshotter_start(struct daemon *d, struct daxfs_err *err)
{
	const struct settings *c = d->cfg;
	const char *path = c->snapshotter_address;
	char view[4200];
	int fd, rc;

	if (in_use(path)) {
		if (strcmp(path, SETTINGS_SNAPSHOTTER_ADDRESS))
			return daxfs_err_set(err, -EADDRINUSE, "snapshotter address %s is in use",
					     path);
		log_warn("snapshotter: %s is served by another process; not serving it "
			 "(set --snapshotter-address)", path);
		return 0;
	}
	view_mountpoint(c, view, sizeof(view));
	capacity_start(c, view);
	rc = snapshots_open(c->root, view, d, &snaps, err);
	if (rc < 0) {
		capacity_stop();
		return daxfs_err_prefix(err, "snapshotter");
	}
	rc = snapshots_cleanup(snaps, err);
	if (rc < 0)
		log_warn("snapshotter: %s", err->msg);
	fd = listen_on(path, err);
	if (fd >= 0)
		rc = grpc_server_start(fd, snapshots_methods, snaps, &server, err);
	else
		rc = fd;
	if (rc < 0) {
		if (fd >= 0)
			unlink(path);
		snapshots_close(snaps);
		snaps = NULL;
		capacity_stop();
		return daxfs_err_prefix(err, "snapshotter");
	}
	memcpy(sock_path, path, strlen(path) + 1);
	log_info("containerd snapshotter listening on %s", path);
	return 0;
}

void snapshotter_stop(void)
{
	struct stat st;

	capacity_stop();	/* the bind mount stays, with the view */
	if (!server)
		return;
	grpc_server_stop(server);
	server = NULL;
	/* Only our socket: a newer daxfsd may have taken the path over. */
	if (stat(sock_path, &st) == 0 && st.st_ino == sock_ino)
		unlink(sock_path);
	snapshots_close(snaps);
	snaps = NULL;
}

uint64_t snapshotter_import_failures(void)
{
	return snapshots_import_failures(snaps);
}
