/* A scripted writer host for the crash tests (test_crash.c).
 *
 *   helper_writer REGION ID LEASE_MS work
 *	Attach as host ID, heartbeat, build the writer layers of testutil.h
 *	(3, 4, 5), evict 5, build 6, detach, exit 0.  The workload passes
 *	every kind of failpoint site: allocation, hash insert and remove,
 *	reference increment and decrement, retire, publish, evict.
 *   helper_writer REGION ID LEASE_MS pause
 *	Build layer 4 up to the middle of its large file, print "paused" and
 *	stop (SIGSTOP).  Once continued it must find itself reaped: host
 *	check, writing the rest of the file and publish all -ESTALE; then
 *	abort and exit 0 without writing to the region (exit 2/3 otherwise).
 *   helper_writer REGION ID LEASE_MS reap SLOT
 *	Attach as host ID, wait until host slot SLOT is seen DEAD, reap it.
 *
 * Progress goes to stdout, one line each, flushed at once, with the
 * number of failpoint sites passed so far:
 *	begin NAME FP / published NAME FP / evict NAME FP / evicted NAME FP /
 *	reap-start FP / reaped N FP / failpoints FP
 * With DAXFS_FAILPOINT=N the process dies (_exit(99)) at the N-th site. */
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "format.h"
#include "testutil.h"

static void say(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf(" %llu\n", (unsigned long long)daxfs_failpoint_count());
	fflush(stdout);
}

static int die(const char *what, const struct daxfs_err *err, int rc)
{
	fprintf(stderr, "helper_writer: %s: %s (%s)\n", what,
		err && err->msg[0] ? err->msg : "-", strerror(-rc));
	return 1;
}

static int do_work(struct daxfs *fs)
{
	struct daxfs_err err = { 0 };
	uint8_t id[32];
	int rc;

	for (int i = TU_FIRST_WRITER_SPEC; i < TU_NSPECS; i++) {
		const struct tu_spec *s = tu_spec(i);

		if (i == TU_NSPECS - 1) {
			/* Evict the third writer layer before the last one. */
			const struct tu_spec *ev = tu_spec(i - 1);

			tu_spec_id(ev, id);
			say("evict %s", ev->name);
			rc = daxfs_layer_evict(fs, id, &err);
			if (rc < 0)
				return die("evict", &err, rc);
			say("evicted %s", ev->name);
		}
		say("begin %s", s->name);
		rc = tu_build_spec(fs, s, &err);
		if (rc < 0)
			return die(s->name, &err, rc);
		say("published %s", s->name);
	}
	return 0;
}

static int do_pause(struct daxfs *fs)
{
	const struct tu_spec *s = tu_spec(TU_FIRST_WRITER_SPEC + 1);
	struct daxfs_layer_builder *b;
	struct daxfs_err err = { 0 };
	uint8_t id[32];
	int rc;

	tu_spec_id(s, id);
	rc = daxfs_layer_build(fs, id, &b, &err);
	if (rc < 0)
		return die("build", &err, rc);
	/* big/small whole, then half of big/blob. */
	rc = tu_add_ent(b, &s->ents[0], UINT64_MAX, &err);
	if (rc == 0)
		rc = tu_add_ent(b, &s->ents[1], s->ents[1].size / 2, &err);
	if (rc < 0)
		return die("add", &err, rc);
	say("paused");
	raise(SIGSTOP);
	/* Continued: the test reaped us meanwhile and built the layer. */
	rc = daxfs_host_check(fs);
	say("check %d", rc);
	if (rc != -ESTALE) {
		daxfs_builder_abort(b);
		return 2;
	}
	/* The script would go on with the rest of the file: refused. */
	{
		uint8_t buf[4096];

		tu_fill(buf, s->ents[1].seed, s->ents[1].size / 2, sizeof(buf));
		rc = daxfs_builder_write(b, buf, sizeof(buf), &err);
		printf("write %d %s\n", rc, err.msg);
		if (rc != -ESTALE) {
			daxfs_builder_abort(b);
			return 3;
		}
	}
	rc = daxfs_builder_publish(b, NULL, &err);
	printf("publish %d %s\n", rc, err.msg);
	fflush(stdout);
	daxfs_builder_abort(b);
	return rc == -ESTALE ? 0 : 3;
}

static int do_reap(struct daxfs *fs, int slot)
{
	struct daxfs_host_info info[DFS_MAX_HOSTS];
	struct daxfs_err err = { 0 };
	struct timespec ts = { 0, 2000000 };
	int rc, seen = 0;

	say("reap-start");
	for (int tries = 0; tries < 10000 && !seen; tries++) {
		int n = daxfs_hosts_observe(fs, info, DFS_MAX_HOSTS);

		for (int i = 0; i < n && i < (int)DFS_MAX_HOSTS; i++)
			if (info[i].slot == slot && info[i].liveness == DAXFS_HOST_DEAD)
				seen = 1;
		if (!seen)
			nanosleep(&ts, NULL);
	}
	if (!seen) {
		fprintf(stderr, "helper_writer: slot %d never seen dead\n", slot);
		return 4;
	}
	rc = daxfs_reap_dead(fs, &err);
	if (rc < 0)
		return die("reap", &err, rc);
	say("reaped %d", rc);
	return 0;
}

int main(int argc, char **argv)
{
	struct daxfs *fs;
	int id, rc, lease;

	if (argc < 5) {
		fprintf(stderr, "usage: %s REGION ID LEASE_MS work|pause|reap SLOT\n",
			argv[0]);
		return 2;
	}
	id = atoi(argv[2]);
	lease = atoi(argv[3]);
	if (tu_attach(argv[1], id, (uint32_t)lease, &fs) < 0)
		return 1;
	rc = daxfs_heartbeat_start(fs);
	if (rc < 0) {
		daxfs_close(fs);
		return die("heartbeat", NULL, rc);
	}
	if (!strcmp(argv[4], "work"))
		rc = do_work(fs);
	else if (!strcmp(argv[4], "pause"))
		rc = do_pause(fs);
	else if (!strcmp(argv[4], "reap") && argc > 5)
		rc = do_reap(fs, atoi(argv[5]));
	else
		rc = 2;
	say("failpoints");
	daxfs_close(fs);
	return rc;
}
