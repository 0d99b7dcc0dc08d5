/* Host slots: attach, a second daemon of the same host refused, a killed
 * daemon replaced by a new incarnation, liveness as observers see it,
 * running out of slots, clean detach and slot reuse. */
#include <errno.h>
#include <signal.h>
#include <sys/wait.h>
#include <time.h>

#include "check.h"
#include "format.h"
#include "testutil.h"

#define LEASE 100

static char path[256];

static double now_ms_d(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static void sleep_ms(unsigned ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

static int open_region(struct daxfs **fs)
{
	struct daxfs_open_opts o = { .path = path, .lease_ms = LEASE, .grace_ms = LEASE };
	struct daxfs_err err = { 0 };
	int rc = daxfs_open(&o, fs, &err);

	if (rc < 0)
		fprintf(stderr, "open: %s\n", err.msg);
	return rc;
}

static int attach_as(struct daxfs *fs, int id, enum daxfs_proc_kind kind,
		     struct daxfs_err *err)
{
	struct daxfs_host_opts h = { .kind = kind, .name = "host-test" };

	h.uuid[0] = 0xda;
	h.uuid[15] = (uint8_t)id;
	memset(err, 0, sizeof(*err));
	return daxfs_host_attach(fs, &h, err);
}

/* Liveness of host slot as fs observes it now (UNUSED if not listed). */
static enum daxfs_liveness liveness(struct daxfs *fs, int slot,
				    struct daxfs_host_info *out)
{
	struct daxfs_host_info info[DFS_MAX_HOSTS];
	int n = daxfs_hosts_observe(fs, info, DFS_MAX_HOSTS);

	for (int i = 0; i < n && i < (int)DFS_MAX_HOSTS; i++) {
		if (info[i].slot == slot) {
			if (out)
				*out = info[i];
			return info[i].liveness;
		}
	}
	return DAXFS_HOST_UNUSED;
}

static int fsck_problems(struct daxfs *fs, int live)
{
	tu_fsck_count = 0;
	return daxfs_fsck(fs, live, tu_fsck_line, NULL);
}

TEST(attach)
{
	struct daxfs *d, *v, *x;
	struct daxfs_err err;
	struct daxfs_host_info hi;

	unlink(path);
	CHECK_RC(tu_mkfs(path, 32 << 20, 4), 0);
	CHECK_RC(open_region(&d), 0);
	CHECK(daxfs_host_check(d) == -ENOENT);	/* not attached yet */
	CHECK_RC(attach_as(d, 1, DAXFS_PROC_DAEMON, &err), 0);
	CHECK(daxfs_host_slot(d) == 0 && daxfs_host_incarnation(d) == 1);
	CHECK_RC(daxfs_host_check(d), 0);
	CHECK(liveness(d, 0, &hi) == DAXFS_HOST_ALIVE);	/* itself */
	CHECK(hi.uuid[0] == 0xda && hi.uuid[15] == 1 && hi.incarnation == 1);
	CHECK(!strcmp(hi.name, "host-test") && !strcmp(hi.version, daxfs_version()));
	CHECK(hi.nprocs == 1);
	/* A view of the same host joins its incarnation. */
	CHECK_RC(open_region(&v), 0);
	CHECK_RC(attach_as(v, 1, DAXFS_PROC_VIEW, &err), 0);
	CHECK(daxfs_host_slot(v) == 0 && daxfs_host_incarnation(v) == 1);
	CHECK(liveness(d, 0, &hi) == DAXFS_HOST_ALIVE && hi.nprocs == 2);
	/* A view cannot start a host. */
	CHECK_RC(open_region(&x), 0);
	CHECK(attach_as(x, 9, DAXFS_PROC_VIEW, &err) == -ENOENT);
	CHECK(strstr(err.msg, "daemon") != NULL);
	daxfs_close(x);
	/* A view is not a writer. */
	{
		struct daxfs_layer_builder *b;
		uint8_t id[32];

		tu_digest(id, 7, 7);
		CHECK(daxfs_layer_build(v, id, &b, &err) == -EPERM);
	}
	daxfs_close(v);
	CHECK(liveness(d, 0, &hi) == DAXFS_HOST_ALIVE && hi.nprocs == 1);
	daxfs_close(d);
	CHECK_RC(open_region(&x), 0);
	CHECK_RC(fsck_problems(x, 0), 0);
	daxfs_close(x);
}

TEST(second_daemon_refused)
{
	struct daxfs *a, *b;
	struct daxfs_err err;
	double t0;
	int rc;

	unlink(path);
	CHECK_RC(tu_mkfs(path, 32 << 20, 4), 0);
	CHECK_RC(open_region(&a), 0);
	CHECK_RC(attach_as(a, 1, DAXFS_PROC_DAEMON, &err), 0);
	CHECK_RC(daxfs_heartbeat_start(a), 0);
	CHECK_RC(open_region(&b), 0);
	t0 = now_ms_d();
	rc = attach_as(b, 1, DAXFS_PROC_DAEMON, &err);
	printf("info: second daemon: %s (after %.0f ms)\n", err.msg, now_ms_d() - t0);
	CHECK(rc == -EBUSY);
	CHECK(strstr(err.msg, "heartbeat is moving") != NULL);
	CHECK(strstr(err.msg, "another daemon") != NULL);
	/* The first is untouched. */
	CHECK_RC(daxfs_host_check(a), 0);
	CHECK(daxfs_host_incarnation(a) == 1);
	daxfs_close(b);
	daxfs_close(a);
}

/* A child attaches as host 1, starts a layer, heartbeats; it is killed.
 * A new daemon of host 1 waits out the lease, reaps its previous
 * incarnation and takes the slot as the next incarnation. */
TEST(killed_daemon_new_incarnation)
{
	struct daxfs *fs, *off;
	struct daxfs_err err;
	struct daxfs_host_info hi;
	const struct tu_spec *s = tu_spec(4);
	int pfd[2], slot = -1, st;
	unsigned inc = 0;
	char line[64] = "";
	double t0, took;
	pid_t pid;

	unlink(path);
	CHECK_RC(tu_mkfs(path, 64 << 20, 4), 0);
	CHECK(pipe(pfd) == 0);
	fflush(stdout);
	fflush(stderr);
	pid = fork();
	CHECK(pid >= 0);
	if (pid == 0) {
		struct daxfs_layer_builder *b;
		uint8_t id[32];
		char msg[64];
		int n;

		close(pfd[0]);
		if (open_region(&fs) < 0 || attach_as(fs, 1, DAXFS_PROC_DAEMON, &err) < 0 ||
		    daxfs_heartbeat_start(fs) < 0)
			_exit(1);
		/* Half a layer: a claim and data a reaper must undo. */
		tu_spec_id(s, id);
		if (daxfs_layer_build(fs, id, &b, &err) < 0 ||
		    tu_add_ent(b, &s->ents[0], UINT64_MAX, &err) < 0 ||
		    tu_add_ent(b, &s->ents[1], s->ents[1].size / 3, &err) < 0)
			_exit(2);
		n = snprintf(msg, sizeof(msg), "%d %u\n", daxfs_host_slot(fs),
			     daxfs_host_incarnation(fs));
		if (write(pfd[1], msg, (size_t)n) != n)
			_exit(3);
		for (;;)
			pause();
	}
	close(pfd[1]);
	st = (int)read(pfd[0], line, sizeof(line) - 1);
	close(pfd[0]);
	if (st <= 0 || sscanf(line, "%d %u", &slot, &inc) != 2) {
		kill(pid, SIGKILL);
		waitpid(pid, &st, 0);
		CHECK(0);
	}
	/* While it runs, a second daemon is refused. */
	CHECK_RC(open_region(&fs), 0);
	CHECK(attach_as(fs, 1, DAXFS_PROC_DAEMON, &err) == -EBUSY);
	daxfs_close(fs);
	kill(pid, SIGKILL);
	CHECK(waitpid(pid, &st, 0) == pid && WIFSIGNALED(st));
	/* Now the heartbeat stalls: after the lease the slot is ours. */
	CHECK_RC(open_region(&fs), 0);
	t0 = now_ms_d();
	CHECK_RC(attach_as(fs, 1, DAXFS_PROC_DAEMON, &err), 0);
	took = now_ms_d() - t0;
	printf("info: new incarnation %u of slot %d after %.0f ms (lease %d)\n",
	       daxfs_host_incarnation(fs), daxfs_host_slot(fs), took, LEASE);
	CHECK(took >= LEASE);
	CHECK(daxfs_host_slot(fs) == slot && daxfs_host_incarnation(fs) == inc + 1);
	CHECK(liveness(fs, slot, &hi) == DAXFS_HOST_ALIVE && hi.incarnation == inc + 1);
	/* The dead incarnation's half layer was rolled back. */
	CHECK_RC(fsck_problems(fs, 1), 0);
	CHECK_RC(tu_build_spec(fs, s, &err), 0);
	{
		char why[256];

		if (tu_verify_spec(fs, s, why, sizeof(why)) < 0) {
			fprintf(stderr, "%s\n", why);
			CHECK(0);
		}
	}
	daxfs_close(fs);
	CHECK_RC(open_region(&off), 0);
	CHECK_RC(fsck_problems(off, 0), 0);
	daxfs_close(off);
}

TEST(liveness_transitions)
{
	struct daxfs *a, *b, *c;
	struct daxfs_err err;
	enum daxfs_liveness lv;
	double t0, stopped;
	int bslot, seen_alive_after_stop = 0;
	uint8_t id[32];
	struct daxfs_layer_builder *bl;

	unlink(path);
	CHECK_RC(tu_mkfs(path, 32 << 20, 4), 0);
	CHECK_RC(open_region(&a), 0);
	CHECK_RC(attach_as(a, 1, DAXFS_PROC_DAEMON, &err), 0);
	CHECK_RC(daxfs_heartbeat_start(a), 0);
	CHECK_RC(open_region(&b), 0);
	CHECK_RC(attach_as(b, 2, DAXFS_PROC_DAEMON, &err), 0);
	CHECK_RC(daxfs_heartbeat_start(b), 0);
	bslot = daxfs_host_slot(b);
	/* A first sighting proves nothing yet. */
	CHECK(liveness(a, bslot, NULL) == DAXFS_HOST_SUSPECT);
	/* Its heartbeat moves: ALIVE, and it stays so. */
	t0 = now_ms_d();
	while ((lv = liveness(a, bslot, NULL)) == DAXFS_HOST_SUSPECT && now_ms_d() - t0 < 2000)
		sleep_ms(5);
	CHECK(lv == DAXFS_HOST_ALIVE);
	for (int i = 0; i < 10; i++) {
		sleep_ms(LEASE / 5);
		CHECK(liveness(a, bslot, NULL) == DAXFS_HOST_ALIVE);
	}
	/* A fresh observer starts from SUSPECT too. */
	CHECK_RC(open_region(&c), 0);
	CHECK_RC(attach_as(c, 3, DAXFS_PROC_DAEMON, &err), 0);
	CHECK(liveness(c, bslot, NULL) == DAXFS_HOST_SUSPECT);
	daxfs_close(c);
	/* It stops beating: ALIVE until a lease without movement, then DEAD. */
	daxfs_heartbeat_stop(b);
	stopped = now_ms_d();
	while ((lv = liveness(a, bslot, NULL)) == DAXFS_HOST_ALIVE && now_ms_d() - stopped < 5000) {
		seen_alive_after_stop = 1;
		sleep_ms(5);
	}
	printf("info: DEAD %.0f ms after the heartbeat stopped (lease %d)\n",
	       now_ms_d() - stopped, LEASE);
	CHECK(lv == DAXFS_HOST_DEAD);
	CHECK(seen_alive_after_stop);
	/* Beating once more makes it ALIVE; DEAD again only after a full
	 * lease (on the observer's ms clock) since this beat. */
	stopped = now_ms_d();
	daxfs_heartbeat(b);
	CHECK(liveness(a, bslot, NULL) == DAXFS_HOST_ALIVE);
	while ((lv = liveness(a, bslot, NULL)) == DAXFS_HOST_ALIVE && now_ms_d() - stopped < 5000)
		sleep_ms(5);
	CHECK(lv == DAXFS_HOST_DEAD);
	CHECK(now_ms_d() - stopped >= LEASE - 1);
	/* Reaped: GONE to observers, -ESTALE to itself, and it writes
	 * nothing more. */
	CHECK(daxfs_reap_dead(a, &err) == 1);
	CHECK(liveness(a, bslot, NULL) == DAXFS_HOST_GONE);
	CHECK(daxfs_host_check(b) == -ESTALE);
	tu_digest(id, 5, 5);
	CHECK(daxfs_layer_build(b, id, &bl, &err) == -ESTALE);
	CHECK(strstr(err.msg, "declared dead") != NULL);
	daxfs_close(b);
	CHECK(liveness(a, bslot, NULL) == DAXFS_HOST_GONE);
	CHECK(daxfs_reap_dead(a, &err) == 0);
	CHECK_RC(fsck_problems(a, 1), 0);
	daxfs_close(a);
}

TEST(max_hosts_and_reuse)
{
	struct daxfs *a, *b, *c, *v[DFS_PROCS_PER_HOST], *off;
	struct daxfs_err err;
	struct daxfs_host_info hi;
	double t0;
	int aslot, rc;
	uint32_t ainc;

	unlink(path);
	CHECK_RC(tu_mkfs(path, 32 << 20, 2), 0);
	CHECK_RC(open_region(&a), 0);
	CHECK_RC(attach_as(a, 1, DAXFS_PROC_DAEMON, &err), 0);
	CHECK_RC(open_region(&b), 0);
	CHECK_RC(attach_as(b, 2, DAXFS_PROC_DAEMON, &err), 0);
	CHECK_RC(open_region(&c), 0);
	rc = attach_as(c, 3, DAXFS_PROC_DAEMON, &err);
	printf("info: third host: %s\n", err.msg);
	CHECK(rc == -ENOSPC);
	CHECK(strstr(err.msg, "all 2 host slots are in use") != NULL);
	/* Process entries of one host run out too. */
	for (unsigned i = 0; i + 1 < DFS_PROCS_PER_HOST; i++) {
		CHECK_RC(open_region(&v[i]), 0);
		CHECK_RC(attach_as(v[i], 1, DAXFS_PROC_VIEW, &err), 0);
	}
	CHECK_RC(open_region(&v[DFS_PROCS_PER_HOST - 1]), 0);
	rc = attach_as(v[DFS_PROCS_PER_HOST - 1], 1, DAXFS_PROC_TOOL, &err);
	CHECK(rc == -ENOSPC && strstr(err.msg, "no free process entry") != NULL);
	for (unsigned i = 0; i < DFS_PROCS_PER_HOST; i++)
		daxfs_close(v[i]);
	/* Clean detach: GONE at once, no lease to wait for. */
	aslot = daxfs_host_slot(a);
	ainc = daxfs_host_incarnation(a);
	daxfs_close(a);
	CHECK(liveness(b, aslot, &hi) == DAXFS_HOST_GONE && hi.incarnation == ainc);
	CHECK(daxfs_reap_dead(b, &err) == 0);
	/* Another host takes the retired slot as its next incarnation. */
	t0 = now_ms_d();
	CHECK_RC(attach_as(c, 3, DAXFS_PROC_DAEMON, &err), 0);
	CHECK(now_ms_d() - t0 < LEASE);
	CHECK(daxfs_host_slot(c) == aslot && daxfs_host_incarnation(c) == ainc + 1);
	CHECK(liveness(b, aslot, &hi) == DAXFS_HOST_SUSPECT && hi.uuid[15] == 3);
	/* Full again; then host 3 leaves and host 1 comes back at once. */
	CHECK_RC(open_region(&a), 0);
	CHECK(attach_as(a, 1, DAXFS_PROC_DAEMON, &err) == -ENOSPC);
	daxfs_close(c);
	t0 = now_ms_d();
	CHECK_RC(attach_as(a, 1, DAXFS_PROC_DAEMON, &err), 0);
	CHECK(now_ms_d() - t0 < LEASE);
	CHECK(daxfs_host_slot(a) == aslot && daxfs_host_incarnation(a) == ainc + 2);
	/* Detach and re-attach of the same host: next incarnation, same slot. */
	daxfs_close(a);
	CHECK_RC(open_region(&a), 0);
	CHECK_RC(attach_as(a, 1, DAXFS_PROC_DAEMON, &err), 0);
	CHECK(daxfs_host_slot(a) == aslot && daxfs_host_incarnation(a) == ainc + 3);
	CHECK_RC(fsck_problems(a, 1), 0);
	daxfs_close(a);
	daxfs_close(b);
	CHECK_RC(open_region(&off), 0);
	CHECK_RC(fsck_problems(off, 0), 0);
	daxfs_close(off);
}

/* The age of a peer's heartbeat on an observer's clock: it grows while
 * the peer is stopped and starts again from 0 when the peer beats. */
TEST(heartbeat_age)
{
	struct daxfs *a, *b;
	struct daxfs_err err;
	struct daxfs_host_info ia, ib;
	uint64_t age1;
	int bslot;

	unlink(path);
	CHECK_RC(tu_mkfs(path, 32 << 20, 4), 0);
	CHECK_RC(open_region(&a), 0);
	CHECK_RC(attach_as(a, 1, DAXFS_PROC_DAEMON, &err), 0);
	CHECK_RC(open_region(&b), 0);
	CHECK_RC(attach_as(b, 2, DAXFS_PROC_DAEMON, &err), 0);
	bslot = daxfs_host_slot(b);
	/* Neither beats on its own here: b's heartbeat is driven by hand. */
	CHECK(liveness(a, bslot, &ib) == DAXFS_HOST_SUSPECT);
	sleep_ms(30);
	CHECK(liveness(a, bslot, &ib) != DAXFS_HOST_UNUSED);
	age1 = ib.heartbeat_age_ms;
	CHECK(age1 >= 30);
	sleep_ms(30);
	CHECK(liveness(a, bslot, &ib) != DAXFS_HOST_UNUSED);
	CHECK(ib.heartbeat_age_ms >= age1 + 30);
	/* It moves: the age starts over. */
	daxfs_heartbeat(b);
	CHECK(liveness(a, bslot, &ib) == DAXFS_HOST_ALIVE);
	CHECK(ib.heartbeat_age_ms == 0);
	/* An observer's own slot. */
	CHECK(liveness(a, daxfs_host_slot(a), &ia) == DAXFS_HOST_ALIVE);
	CHECK(ia.heartbeat_age_ms == 0);
	daxfs_close(b);
	daxfs_close(a);
}

/* A view joining its host without a name keeps the daemon's label; one
 * that gives a name sets it. */
TEST(view_join_keeps_name)
{
	struct daxfs *d, *v, *w;
	struct daxfs_err err;
	struct daxfs_host_opts h = { .kind = DAXFS_PROC_VIEW, .name = NULL };
	struct daxfs_host_info i;

	unlink(path);
	CHECK_RC(tu_mkfs(path, 32 << 20, 4), 0);
	CHECK_RC(open_region(&d), 0);
	CHECK_RC(attach_as(d, 1, DAXFS_PROC_DAEMON, &err), 0);
	h.uuid[0] = 0xda;
	h.uuid[15] = 1;
	CHECK_RC(open_region(&v), 0);
	memset(&err, 0, sizeof(err));
	CHECK_RC(daxfs_host_attach(v, &h, &err), 0);
	CHECK(liveness(d, daxfs_host_slot(d), &i) == DAXFS_HOST_ALIVE);
	CHECK(strcmp(i.name, "host-test") == 0);
	h.name = "";
	CHECK_RC(open_region(&w), 0);
	CHECK_RC(daxfs_host_attach(w, &h, &err), 0);
	CHECK(liveness(d, daxfs_host_slot(d), &i) == DAXFS_HOST_ALIVE);
	CHECK(strcmp(i.name, "host-test") == 0);
	daxfs_close(w);
	h.name = "renamed";
	CHECK_RC(open_region(&w), 0);
	CHECK_RC(daxfs_host_attach(w, &h, &err), 0);
	CHECK(liveness(d, daxfs_host_slot(d), &i) == DAXFS_HOST_ALIVE);
	CHECK(strcmp(i.name, "renamed") == 0);
	daxfs_close(w);
	daxfs_close(v);
	daxfs_close(d);
}

CHECK_MAIN_BEGIN("test_host")
	tu_region_path(path, sizeof(path), "host");
	RUN(attach);
	RUN(second_daemon_refused);
	RUN(killed_daemon_new_incarnation);
	RUN(liveness_transitions);
	RUN(max_hosts_and_reuse);
	RUN(heartbeat_age);
	RUN(view_join_keeps_name);
	unlink(path);
CHECK_MAIN_END
