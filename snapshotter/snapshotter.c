/* daxfsd's snapshotter socket and service: see snapshotter.h. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "grpc.h"
#include "log.h"
#include "snapshots.h"
#include "snapshotter.h"
#include "supervise.h"

static struct grpc_server *server;
static struct snapshots *snaps;
static char sock_path[sizeof(((struct sockaddr_un *)0)->sun_path)];
static ino_t sock_ino;

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

int snapshotter_start(const struct settings *c, struct daxfs *fs, struct daxfs_err *err)
{
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
	rc = snapshots_open(c->root, view, fs, &snaps, err);
	if (rc < 0)
		return daxfs_err_prefix(err, "snapshotter");
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
		return daxfs_err_prefix(err, "snapshotter");
	}
	memcpy(sock_path, path, strlen(path) + 1);
	log_info("containerd snapshotter listening on %s", path);
	return 0;
}

void snapshotter_stop(void)
{
	struct stat st;

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
