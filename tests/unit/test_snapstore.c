/* Snapshot records (snapshotter/store.c): insert, get, update, delete,
 * labels, children, ids never reused, and a process killed with -9 in
 * the middle of a transaction leaving the records of before it. */
#include <errno.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "store.h"

static char dbpath[4096];

static void fresh(void)
{
	const char *tmp = getenv("DAXFS_TMP");
	char p[4200];

	snprintf(dbpath, sizeof(dbpath), "%s/snap-%d.db", tmp ? tmp : "/tmp", (int)getpid());
	unlink(dbpath);
	snprintf(p, sizeof(p), "%s-wal", dbpath);
	unlink(p);
	snprintf(p, sizeof(p), "%s-shm", dbpath);
	unlink(p);
}

static int add(struct store *s, const char *name, int64_t parent, int kind, int64_t *id)
{
	struct snap_info i = { 0 };
	struct daxfs_err err = { 0 };
	int rc;

	i.name = strdup(name);
	i.parent_id = parent;
	i.kind = kind;
	i.created_ns = i.updated_ns = 1700000000123456789LL;
	rc = snap_label_set(&i, "containerd.io/gc.root", "x");
	if (rc == 0)
		rc = store_begin(s, &err);
	if (rc == 0)
		rc = store_end(s, store_insert(s, &i, &err), &err);
	*id = i.id;
	snap_info_free(&i);
	return rc;
}

static int get(struct store *s, const char *name, struct snap_info *i)
{
	struct daxfs_err err = { 0 };
	int rc = store_begin(s, &err);

	if (rc == 0)
		rc = store_end(s, store_get(s, name, i, &err), &err);
	return rc;
}

TEST(records)
{
	struct daxfs_err err = { 0 };
	struct store *s;
	struct snap_info i;
	int64_t c1, a1, last;

	fresh();
	CHECK_RC(store_open(dbpath, &s, &err), 0);
	CHECK_RC(add(s, "c1", 0, SNAP_COMMITTED, &c1), 0);
	CHECK_RC(add(s, "a1", c1, SNAP_ACTIVE, &a1), 0);
	CHECK_RC(add(s, "a1", 0, SNAP_ACTIVE, &last), -EEXIST);
	CHECK_RC(get(s, "a1", &i), 0);
	CHECK(!strcmp(i.parent, "c1") && i.parent_id == c1 && i.kind == SNAP_ACTIVE);
	CHECK(i.created_ns == 1700000000123456789LL && i.nlabels == 1);
	CHECK(!strcmp(snap_label_get(&i, "containerd.io/gc.root"), "x"));
	/* commit: renamed, labels replaced; an empty value removes a label */
	free(i.name);
	i.name = strdup("c2");
	i.kind = SNAP_COMMITTED;
	CHECK_RC(snap_label_set(&i, "b", "2"), 0);
	CHECK_RC(snap_label_set(&i, "a", "1"), 0);
	CHECK_RC(snap_label_set(&i, "containerd.io/gc.root", ""), 0);
	CHECK_RC(store_begin(s, &err), 0);
	CHECK_RC(store_end(s, store_update(s, &i, &err), &err), 0);
	snap_info_free(&i);
	CHECK_RC(get(s, "a1", &i), -ENOENT);
	CHECK_RC(get(s, "c2", &i), 0);
	CHECK(i.nlabels == 2 && !strcmp(i.labels[0].key, "a") && !strcmp(i.labels[1].value, "2"));
	snap_info_free(&i);
	CHECK_RC(store_begin(s, &err), 0);
	CHECK(store_has_children(s, c1, &err) == 1 && store_has_children(s, a1, &err) == 0);
	CHECK_RC(store_delete(s, a1, &err), 0);
	CHECK(store_has_children(s, c1, &err) == 0);
	CHECK_RC(store_last_id(s, &last, &err), 0);
	CHECK_RC(store_end(s, 0, &err), 0);
	CHECK(last == a1);
	/* ids are never given out twice, even after the highest is gone */
	CHECK_RC(add(s, "a2", 0, SNAP_ACTIVE, &last), 0);
	CHECK(last > a1);
	store_close(s);
}

/* Child: begin, insert "lost", tell the parent, wait to be killed. */
static void insert_and_hang(int fd)
{
	struct daxfs_err err = { 0 };
	struct snap_info i = { .name = "lost", .kind = SNAP_ACTIVE };
	struct store *s;

	if (store_open(dbpath, &s, &err) < 0 || store_begin(s, &err) < 0 ||
	    store_insert(s, &i, &err) < 0)
		_exit(1);
	if (write(fd, "x", 1) != 1)
		_exit(1);
	for (;;)
		pause();
}

TEST(kill_mid_transaction)
{
	struct daxfs_err err = { 0 };
	struct store *s;
	struct snap_info i;
	int64_t id;
	int status, fds[2];
	pid_t pid;
	char c;

	fresh();
	CHECK_RC(store_open(dbpath, &s, &err), 0);
	CHECK_RC(add(s, "kept", 0, SNAP_COMMITTED, &id), 0);
	store_close(s);
	CHECK_RC(pipe(fds), 0);
	pid = fork();
	CHECK(pid >= 0);
	if (pid == 0)
		insert_and_hang(fds[1]);
	close(fds[1]);
	status = (int)read(fds[0], &c, 1);
	close(fds[0]);
	kill(pid, SIGKILL);
	CHECK(status == 1);	/* it was inside its transaction */
	waitpid(pid, &status, 0);
	CHECK(WIFSIGNALED(status));
	CHECK_RC(store_open(dbpath, &s, &err), 0);
	CHECK_RC(get(s, "lost", &i), -ENOENT);
	CHECK_RC(get(s, "kept", &i), 0);
	snap_info_free(&i);
	/* and the database takes changes again */
	CHECK_RC(add(s, "after", 0, SNAP_ACTIVE, &id), 0);
	store_close(s);
	unlink(dbpath);
}

CHECK_MAIN_BEGIN("test_snapstore")
	RUN(records);
	RUN(kill_mid_transaction);
CHECK_MAIN_END
