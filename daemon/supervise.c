/* Keeping the host's FUSE view running.
 *
 * The view is a separate, long-lived process: running containers read
 * through its FUSE connection, and a FUSE server that exits aborts that
 * connection for good.  So daxfsd starts it detached (own session, not
 * our child's fate), never stops it, and on start looks for one already
 * serving before starting another.  If the view dies, that host's running
 * containers lose their files; daxfsd starts a new view so that new
 * containers work again. */
#include <errno.h>
#include <signal.h>
#include <fcntl.h>
#include <libgen.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "supervise.h"

static pthread_t thread;
static _Atomic int running;
static const struct settings *cfg;

void view_mountpoint(const struct settings *c, char *out, size_t len)
{
	if (c->view_mountpoint[0])
		snprintf(out, len, "%s", c->view_mountpoint);
	else
		snprintf(out, len, "%s/mnt", c->root);
}

/* A FUSE mount of ours at dir, per /proc/self/mountinfo. */
static int mounted_here(const char *dir)
{
	char line[8192], want[4200], mp[4200], fstype[256];
	FILE *f = fopen("/proc/self/mountinfo", "re");
	int found = 0;

	if (!f || !realpath(dir, want)) {
		if (f)
			fclose(f);
		return 0;
	}
	while (fgets(line, sizeof(line), f)) {
		char *sep = strstr(line, " - ");

		if (!sep || sscanf(line, "%*s %*s %*s %*s %4199s", mp) != 1 ||
		    sscanf(sep + 3, "%255s", fstype) != 1)
			continue;
		if (!strcmp(mp, want) && !strcmp(fstype, "fuse.daxfs"))
			found = 1;
	}
	fclose(f);
	return found;
}

int view_alive(const char *dir)
{
	struct stat st;

	if (!mounted_here(dir))
		return 0;
	if (stat(dir, &st) == 0)
		return 1;
	if (errno == ENOTCONN) {
		/* Its server died: clear the way for a new one. */
		log_warn("the view at %s died; unmounting it", dir);
		umount2(dir, MNT_DETACH);
	}
	return 0;
}

static void view_binary(char *out, size_t len)
{
	char self[4096];
	ssize_t n;

	if (cfg->view_binary[0]) {
		snprintf(out, len, "%s", cfg->view_binary);
		return;
	}
	n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	self[n > 0 ? n : 0] = 0;
	snprintf(out, len, "%s/daxfs-view", n > 0 ? dirname(self) : "/usr/sbin");
}

static int spawn(const char *mnt)
{
	char bin[4200], lease[32], recheck[32], logp[4200];
	pid_t pid;

	view_binary(bin, sizeof(bin));
	snprintf(lease, sizeof(lease), "%u", cfg->lease_ms ? cfg->lease_ms : 10000);
	snprintf(recheck, sizeof(recheck), "%u", cfg->view_recheck_ms);
	snprintf(logp, sizeof(logp), "%s/view.log", cfg->root);
	pid = fork();
	if (pid < 0)
		return -errno;
	if (pid == 0) {
		/* Grandchild: its own session, reparented to init, so it
		 * outlives us and our process group's signals. */
		if (fork() != 0)
			_exit(0);
		setsid();
		int fd = open(logp, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);

		if (fd >= 0) {
			dup2(fd, 1);
			dup2(fd, 2);
		}
		sigset_t none;

		sigemptyset(&none);
		sigprocmask(SIG_SETMASK, &none, NULL);
		execl(bin, bin, "--region", cfg->region, "--root", cfg->root, "--mountpoint",
		      mnt, "--lease-ms", lease, "--recheck-ms", recheck, "--host-name",
		      cfg->host_name, (char *)NULL);
		_exit(127);
	}
	waitpid(pid, NULL, 0);
	log_info("started the view (%s) at %s", bin, mnt);
	return 0;
}

static int ensure(void)
{
	char mnt[4200];

	view_mountpoint(cfg, mnt, sizeof(mnt));
	if (view_alive(mnt))
		return 0;
	mkdir(mnt, 0755);
	return spawn(mnt);
}

static void *supervise_main(void *arg)
{
	(void)arg;
	while (atomic_load(&running)) {
		struct timespec ts = { 1, 0 };

		nanosleep(&ts, NULL);
		if (atomic_load(&running))
			ensure();
	}
	return NULL;
}

int supervise_start(const struct settings *c, struct daxfs_err *err)
{
	char mnt[4200];
	int rc;

	cfg = c;
	rc = ensure();
	if (rc < 0)
		return daxfs_err_set(err, rc, "starting the view: %s", strerror(-rc));
	/* Wait briefly for the first mount so callers can use it at once. */
	view_mountpoint(c, mnt, sizeof(mnt));
	for (int i = 0; i < 100 && !view_alive(mnt); i++)
		usleep(20000);
	atomic_store(&running, 1);
	pthread_create(&thread, NULL, supervise_main, NULL);
	return 0;
}

void supervise_stop(void)
{
	if (!atomic_exchange(&running, 0))
		return;
	pthread_join(thread, NULL);
}
