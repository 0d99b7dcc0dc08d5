/* daxfsd: attach the host to the region, heartbeat, reap dead peers and
 * serve the control API until SIGTERM/SIGINT. */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "daemon.h"
#include "log.h"
#include "snapshotter.h"
#include "supervise.h"

static struct api_server *server;
static struct daemon D;

static int mkdir_p(const char *dir, mode_t mode)
{
	char tmp[4096];

	if (strlen(dir) >= sizeof(tmp))
		return -ENAMETOOLONG;
	strcpy(tmp, dir);
	for (char *p = tmp + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = 0;
		if (mkdir(tmp, mode) < 0 && errno != EEXIST)
			return -errno;
		*p = '/';
	}
	if (mkdir(tmp, mode) < 0 && errno != EEXIST)
		return -errno;
	return 0;
}

/* One daemon per root: the lock is held for the life of the process. */
static int lock_root(const char *root, struct daxfs_err *err)
{
	char path[4200];
	int fd;

	snprintf(path, sizeof(path), "%s/daxfsd.lock", root);
	fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0)
		return daxfs_err_set(err, -errno, "open %s: %s", path, strerror(errno));
	if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
		close(fd);
		return daxfs_err_set(err, -EBUSY,
				     "another daxfsd is running with root %s", root);
	}
	return fd;
}

static int attach(struct settings *c, struct daxfs_err *err)
{
	struct daxfs_open_opts o = { .lease_ms = c->lease_ms, .grace_ms = c->grace_ms };
	struct daxfs_host_opts h = { .kind = DAXFS_PROC_DAEMON, .name = c->host_name };
	char path[4096];
	int rc;

	rc = daxfs_host_uuid_load(c->root, h.uuid, err);
	if (rc < 0)
		return rc;
	rc = daxfs_parse_region(c->region, path, sizeof(path), &o.offset, err);
	if (rc < 0)
		return rc;
	o.path = path;
	rc = daxfs_open(&o, &D.fs, err);
	if (rc < 0)
		return rc;
	rc = daxfs_host_attach(D.fs, &h, err);
	if (rc == 0)
		rc = daxfs_heartbeat_start(D.fs);
	if (rc < 0) {
		daxfs_abandon(D.fs);
		D.fs = NULL;
	}
	return rc;
}

void daemon_exit_if_reaped(struct daemon *d)
{
	if (daxfs_host_check(d->fs) != -ESTALE)
		return;
	/* Our unpublished work was undone by the reaper and our space may be
	 * handed out after its grace: write nothing more, not even a
	 * detach.  The view stays and follows the next incarnation. */
	log_error("this host's incarnation %u was reaped by another host; exiting",
		  daxfs_host_incarnation(d->fs));
	_exit(75);
}

static void *signal_main(void *arg)
{
	sigset_t *set = arg;
	int sig;

	while (sigwait(set, &sig) == 0) {
		log_info("signal %d: stopping", sig);
		atomic_store(&D.stopping, 1);
		api_stop(server);
		return NULL;
	}
	return NULL;
}

/* Watch peers and reap the dead ones (liveness is judged on our clock,
 * so we have to keep looking). */
static void *reaper_main(void *arg)
{
	uint32_t step = D.cfg->lease_ms ? D.cfg->lease_ms / 4 : 2500;

	(void)arg;
	if (!step)
		step = 1;
	while (!atomic_load(&D.stopping)) {
		struct daxfs_err err = { 0 };
		int n;

		daemon_exit_if_reaped(&D);
		hosts_watch(&D);
		n = daxfs_reap_dead(D.fs, &err);
		if (n < 0)
			log_warn("reaping dead hosts: %s", err.msg);
		else if (n > 0)
			log_info("reaped %d dead host%s", n, n == 1 ? "" : "s");
		/* Chunks our idle contexts own but others emptied (evictions)
		 * serve no other host until we give them back. */
		n = daxfs_alloc_trim(D.fs);
		if (n > 0)
			log_debug("gave back %d empty chunk%s", n, n == 1 ? "" : "s");
		/* Sleep in slices so SIGTERM is not kept waiting a lease. */
		for (uint32_t t = 0; t < step && !atomic_load(&D.stopping); t += 50) {
			struct timespec ts = { 0, 50 * 1000000L };

			nanosleep(&ts, NULL);
		}
	}
	return NULL;
}

/* After a restart our holder bits are those of the previous incarnation:
 * the snapshotter has re-opened what its records reference, everything
 * else of ours is released (the view's class is not touched). */
static int holds_recompute(void)
{
	int n = daxfs_holds_sync(D.fs);

	if (n > 0)
		log_info("released %d holder bit%s left by the previous incarnation", n,
			 n == 1 ? "" : "s");
	else if (n == 0)
		log_debug("holder bits: nothing left over from a previous incarnation");
	return n < 0 ? n : 0;
}

static int registry_setup(struct settings *c, struct daxfs_err *err)
{
	struct registry_opts o = {
		.insecure = (const char *const *)c->insecure,
		.ninsecure = (size_t)c->ninsecure,
		.mirrors = (const char *const *)c->mirrors,
		.nmirrors = (size_t)c->nmirrors,
		.docker_config = c->docker_config[0] ? c->docker_config : NULL,
		.connect_timeout_ms = c->connect_timeout_ms,
		.stall_timeout_ms = c->stall_timeout_ms,
		.retries = c->retries,
		.backoff_ms = c->backoff_ms,
	};

	return registry_new(&o, &D.reg, err);
}

static int run(struct settings *c, struct daxfs_err *err)
{
	pthread_t sigt, reapt;
	sigset_t set;
	char dir[4096];
	int rc, lockfd;

	rc = mkdir_p(c->root, 0700);
	if (rc < 0)
		return daxfs_err_set(err, rc, "create %s: %s", c->root, strerror(-rc));
	lockfd = lock_root(c->root, err);
	if (lockfd < 0)
		return lockfd;
	if (c->platform[0])
		rc = platform_parse(c->platform, &D.plat, err);
	else
		platform_host(&D.plat);
	if (rc == 0)
		rc = registry_setup(c, err);
	if (rc == 0)
		rc = attach(c, err);
	if (rc < 0)
		goto out;
	snprintf(dir, sizeof(dir), "%s", c->address);
	mkdir_p(dirname(dir), 0755);
	rc = api_listen(c->address, daemon_methods, &D, &server, err);
	if (rc < 0)
		goto out;
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	D.import_failures = snapshotter_import_failures;
	rc = snapshotter_start(&D, err);
	if (rc < 0)
		goto out_api;
	rc = holds_recompute();
	if (rc < 0) {
		rc = daxfs_err_set(err, rc, "recomputing this host's holds: %s", strerror(-rc));
		goto out_api;
	}
	if (!strcmp(c->view, "managed")) {
		rc = supervise_start(c, err);
		if (rc < 0)
			goto out_api;
	}
	pthread_create(&sigt, NULL, signal_main, &set);
	pthread_create(&reapt, NULL, reaper_main, NULL);
	log_info("host %s attached to %s as slot %d, incarnation %u; listening on %s",
		 c->host_name, c->region, daxfs_host_slot(D.fs),
		 daxfs_host_incarnation(D.fs), c->address);
	rc = api_serve(server);
	atomic_store(&D.stopping, 1);
	pthread_cancel(sigt);
	pthread_join(sigt, NULL);
	pthread_join(reapt, NULL);
	supervise_stop();	/* the view itself keeps running */
out_api:
	snapshotter_stop();
	api_close(server);
	log_info("detached; bye");
out:
	daxfs_close(D.fs);
	registry_free(D.reg);
	close(lockfd);
	return rc;
}

int main(int argc, char **argv)
{
	struct settings cfg;
	struct daxfs_err err = { 0 };
	sigset_t set;
	int rc;

	rc = settings_load(argc, argv, &cfg, &err);
	if (rc > 0) {
		settings_usage();
		return 0;
	}
	if (rc < 0) {
		fprintf(stderr, "daxfsd: %s\n", err.msg);
		return 2;
	}
	if (log_set_level(cfg.log_level) < 0) {
		fprintf(stderr, "daxfsd: unknown log level '%s'\n", cfg.log_level);
		return 2;
	}
	D.cfg = &cfg;
	/* Before any thread exists: every thread inherits the mask, and only
	 * the signal thread takes SIGTERM/SIGINT (with sigwait). */
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	rc = run(&cfg, &err);
	settings_free(&cfg);
	if (rc < 0) {
		log_error("%s", err.msg);
		return 1;
	}
	return 0;
}
