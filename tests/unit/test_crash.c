/* Crash recovery: a writer host killed at every failpoint site, reaped by
 * the test process; a reaper killed while reaping; a paused writer that is
 * reaped and then continues.
 *
 * Host 1 is this process; helper_writer runs as host 2 (and 3).  After
 * each crash the region must be fsck-clean (live and offline), everything
 * published must read back byte-exact, unpublished layers must be absent
 * and buildable again, and the space in use must be exactly what the
 * indexed records need (evicting everything leaves only layer records). */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stddef.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>

#include "check.h"
#include "format.h"
#include "testutil.h"

#define REGION_SIZE (64ULL << 20)
#define MAX_HOSTS 4
#define LEASE 50		/* host 1 (this process) and the writer */
#define REAPER_LEASE 100	/* host 3, judging host 2 */
#define FULL_LIMIT 150		/* above this many sites, sample */
#define SAMPLE 80

extern char **environ;

static char path[256], helper_path[512];

#define EXPECT(cond, ...)                                                  \
	do {                                                               \
		if (!(cond)) {                                             \
			fprintf(stderr, "%s:%d: %s: ", __FILE__, __LINE__, #cond); \
			fprintf(stderr, __VA_ARGS__);                      \
			fputc('\n', stderr);                               \
			return -1;                                         \
		}                                                          \
	} while (0)

static void sleep_ms(unsigned ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---- the helper process ---- */

struct helper {
	pid_t pid;
	int fd;
	char text[16384];
	size_t len;
};

static int helper_start(struct helper *h, int id, unsigned lease,
			const char *mode, int slot, uint64_t fp)
{
	char ids[16], leases[16], slots[16], fps[48];
	char *argv[7] = { helper_path, path, ids, leases, (char *)mode, NULL, NULL };
	char **envp;
	size_t n = 0, k = 0;
	int pfd[2];

	snprintf(ids, sizeof(ids), "%d", id);
	snprintf(leases, sizeof(leases), "%u", lease);
	snprintf(slots, sizeof(slots), "%d", slot);
	if (slot >= 0)
		argv[5] = slots;
	snprintf(fps, sizeof(fps), "DAXFS_FAILPOINT=%llu", (unsigned long long)fp);
	/* The environment is prepared before fork: only exec follows it. */
	while (environ[n])
		n++;
	envp = calloc(n + 2, sizeof(*envp));
	if (!envp)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++)
		if (strncmp(environ[i], "DAXFS_FAILPOINT=", 16))
			envp[k++] = environ[i];
	if (fp)
		envp[k++] = fps;
	if (pipe2(pfd, O_CLOEXEC) < 0) {
		free(envp);
		return -errno;
	}
	fflush(stdout);
	fflush(stderr);
	h->pid = fork();
	if (h->pid == 0) {
		static const char msg[] = "test_crash: cannot exec helper_writer\n";

		dup2(pfd[1], 1);
		execve(helper_path, argv, envp);
		if (write(2, msg, sizeof(msg) - 1) < 0)
			_exit(126);
		_exit(127);
	}
	free(envp);
	close(pfd[1]);
	if (h->pid < 0) {
		close(pfd[0]);
		return -errno;
	}
	h->fd = pfd[0];
	h->len = 0;
	h->text[0] = 0;
	return 0;
}

/* Read output until a line starts with word (1) or EOF (0). */
static int helper_read_until(struct helper *h, const char *word)
{
	for (;;) {
		ssize_t r;

		if (word) {
			size_t wl = strlen(word);

			for (char *p = h->text; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL)
				if (!strncmp(p, word, wl) && strchr(p, '\n'))
					return 1;
		}
		if (h->len + 1 >= sizeof(h->text))
			return 0;
		r = read(h->fd, h->text + h->len, sizeof(h->text) - 1 - h->len);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return 0;
		h->len += (size_t)r;
		h->text[h->len] = 0;
	}
}

/* Read to EOF and reap: the exit code, or 128 + signal. */
static int helper_finish(struct helper *h)
{
	int st;

	helper_read_until(h, NULL);
	close(h->fd);
	while (waitpid(h->pid, &st, 0) < 0)
		if (errno != EINTR)
			return -1;
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static int helper_run(int id, unsigned lease, const char *mode, int slot,
		      uint64_t fp, struct helper *h)
{
	int rc = helper_start(h, id, lease, mode, slot, fp);

	return rc < 0 ? rc : helper_finish(h);
}

/* The number after "WORD NAME" (NAME may be NULL) in the helper output. */
static int marker(const struct helper *h, const char *word, const char *name,
		  uint64_t *fp)
{
	char pat[64];
	const char *p = h->text;
	size_t pl;

	snprintf(pat, sizeof(pat), "%s %s%s", word, name ? name : "", name ? " " : "");
	pl = strlen(pat);
	for (; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL) {
		if (!strncmp(p, pat, pl)) {
			if (fp)
				*fp = strtoull(p + pl, NULL, 10);
			return 1;
		}
	}
	return 0;
}

/* ---- looking at the region ---- */

static int host_info(struct daxfs *fs, int id, struct daxfs_host_info *out)
{
	struct daxfs_host_info info[DFS_MAX_HOSTS];
	int n = daxfs_hosts_observe(fs, info, DFS_MAX_HOSTS);

	for (int i = 0; i < n && i < (int)DFS_MAX_HOSTS; i++) {
		if (info[i].uuid[0] == 0xda && info[i].uuid[15] == id) {
			*out = info[i];
			return 0;
		}
	}
	return -ENOENT;
}

static int wait_liveness(struct daxfs *fs, int id, enum daxfs_liveness want,
			 unsigned timeout_ms)
{
	double end = now_s() + timeout_ms / 1000.0;
	struct daxfs_host_info hi;

	int rc;

	do {
		rc = host_info(fs, id, &hi);
		if (rc == 0 && hi.liveness == want)
			return 0;
		sleep_ms(2);
	} while (now_s() < end);
	if (rc < 0)
		fprintf(stderr, "host %d: no slot of its uuid\n", id);
	else
		fprintf(stderr, "host %d: liveness %d, incarnation %u, %d procs\n", id,
			(int)hi.liveness, hi.incarnation, hi.nprocs);
	return -ETIMEDOUT;
}

struct find_layer {
	uint8_t id[32];
	int state;	/* -1: no record */
};

static int find_layer_cb(const struct daxfs_layer_info *li, void *arg)
{
	struct find_layer *f = arg;

	if (memcmp(li->diff_id, f->id, 32))
		return 0;
	f->state = (int)li->state;
	return 1;
}

static int layer_state(struct daxfs *fs, const struct tu_spec *s)
{
	struct find_layer f;

	tu_spec_id(s, f.id);
	f.state = -1;
	daxfs_layers_foreach(fs, find_layer_cb, &f);
	return f.state;
}

static int fsck_count(struct daxfs *fs, int live)
{
	tu_fsck_count = 0;
	return daxfs_fsck(fs, live, tu_fsck_line, NULL);
}

static int open_offline(struct daxfs **fs)
{
	struct daxfs_open_opts o = { .path = path, .lease_ms = LEASE };
	struct daxfs_err err = { 0 };
	int rc = daxfs_open(&o, fs, &err);

	if (rc < 0)
		fprintf(stderr, "open: %s\n", err.msg);
	return rc;
}

/* What the indexed records need, computed from the region itself: every
 * content record and its extents, every layer record, the tree of every
 * READY layer, every chain/image/alias record. */
struct acct {
	uint64_t meta, data, layer_recs, ready, contents;
};

static uint64_t round_to(uint64_t v, unsigned shift)
{
	uint64_t u = 1ULL << shift;

	return (v + u - 1) & ~(u - 1);
}

static int expected_use(struct acct *a)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	struct stat st;
	const uint8_t *base;
	const struct dfs_super *sb;

	memset(a, 0, sizeof(*a));
	if (fd < 0 || fstat(fd, &st) < 0)
		return -errno;
	base = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, fd, 0);
	close(fd);
	if (base == MAP_FAILED)
		return -errno;
	sb = (const struct dfs_super *)base;
	for (uint64_t i = 0; i < sb->hash_slots; i++) {
		const struct dfs_hslot *s = (const struct dfs_hslot *)
			(base + sb->hash_off) + i;
		uint64_t v = atomic_load(&((struct dfs_hslot *)s)->value);
		uint64_t kind = atomic_load(&((struct dfs_hslot *)s)->kind);
		unsigned mu = sb->meta.unit_shift;

		if (DFS_HWORD_STATE(atomic_load(&((struct dfs_hslot *)s)->word)) != DFS_H_VALID)
			continue;
		if (kind == DFS_KIND_CONTENT) {
			const struct dfs_content *c = (const void *)(base + v);

			a->contents++;
			a->meta += round_to(sizeof(*c) + (uint64_t)c->cap * sizeof(c->ext[0]), mu);
			for (uint32_t e = 0; e < c->nextents; e++)
				a->data += round_to(c->ext[e].len, sb->data.unit_shift);
		} else if (kind == DFS_KIND_LAYER) {
			struct dfs_layer *l = (struct dfs_layer *)(base + v);

			a->layer_recs++;
			a->meta += round_to(sizeof(*l), mu);
			if (DFS_LW_STATE(atomic_load(&l->state)) == DFS_L_READY) {
				a->ready++;
				a->meta += round_to(l->tree_len, mu);
			}
		} else if (kind == DFS_KIND_CHAIN) {
			a->meta += round_to(sizeof(struct dfs_chain), mu);
		} else if (kind == DFS_KIND_IMAGE) {
			a->meta += round_to(sizeof(struct dfs_image), mu);
		} else if (kind == DFS_KIND_ALIAS) {
			a->meta += round_to(sizeof(struct dfs_alias), mu);
		}
	}
	munmap((void *)base, (size_t)st.st_size);
	return 0;
}

/* Space in use equals exactly what the records need. */
static int check_accounting(struct daxfs *fs)
{
	struct daxfs_usage u;
	struct acct a;

	EXPECT(expected_use(&a) == 0, "cannot map %s", path);
	daxfs_usage(fs, &u);
	EXPECT(u.meta_used == a.meta && u.data_used == a.data,
	       "meta used %llu, records need %llu; data used %llu, records need %llu",
	       (unsigned long long)u.meta_used, (unsigned long long)a.meta,
	       (unsigned long long)u.data_used, (unsigned long long)a.data);
	EXPECT(u.contents == a.contents && u.layers_ready == a.ready,
	       "usage counts %llu contents %llu ready, region %llu/%llu",
	       (unsigned long long)u.contents, (unsigned long long)u.layers_ready,
	       (unsigned long long)a.contents, (unsigned long long)a.ready);
	return 0;
}

struct idlist {
	uint8_t id[32][32];
	int n;
};

static int ready_cb(const struct daxfs_layer_info *li, void *arg)
{
	struct idlist *l = arg;

	if (li->state == DFS_L_READY && l->n < 32)
		memcpy(l->id[l->n++], li->diff_id, 32);
	return 0;
}

/* ---- one scenario ---- */

/* Fresh region; this process attaches as host 1, heartbeats and publishes
 * the pre-existing layers. */
static int setup(struct daxfs **fs1)
{
	struct daxfs_err err = { 0 };
	struct daxfs *fs;
	int rc;

	*fs1 = NULL;
	unlink(path);
	EXPECT(tu_mkfs(path, REGION_SIZE, MAX_HOSTS) == 0, "mkfs");
	EXPECT(tu_attach(path, 1, LEASE, &fs) == 0, "attach host 1");
	*fs1 = fs;
	EXPECT(daxfs_heartbeat_start(*fs1) == 0, "heartbeat");
	for (int i = 0; i < TU_FIRST_WRITER_SPEC; i++) {
		rc = tu_build_spec(*fs1, tu_spec(i), &err);
		EXPECT(rc == 0, "build %s: %s", tu_spec(i)->name, err.msg);
	}
	return 0;
}

static int verify(struct daxfs *fs, const struct tu_spec *s)
{
	char why[512] = "";

	EXPECT(tu_verify_spec(fs, s, why, sizeof(why)) == 0, "%s", why);
	return 0;
}

/* Everything after the writers are gone (exited or reaped).  h is the
 * writer's output (what it reported published); *fs1 is closed here. */
static int check_all(struct daxfs **fs1, const struct helper *h)
{
	struct daxfs_err err = { 0 };
	struct daxfs_usage u;
	struct idlist ready = { .n = 0 };
	struct acct a;
	struct daxfs *fs = *fs1, *off;
	int rc;

	EXPECT(fsck_count(fs, 1) == 0, "live fsck after the crash: %d problems",
	       tu_fsck_count);
	for (int i = 0; i < TU_FIRST_WRITER_SPEC; i++)
		if (verify(fs, tu_spec(i)) < 0)
			return -1;
	for (int i = TU_FIRST_WRITER_SPEC; i < TU_NSPECS; i++) {
		const struct tu_spec *s = tu_spec(i);
		int st = layer_state(fs, s);
		int pub = h && marker(h, "published", s->name, NULL);
		int evicting = h && marker(h, "evict", s->name, NULL);
		int evicted = h && marker(h, "evicted", s->name, NULL);

		if (st == DFS_L_READY) {
			EXPECT(!evicted, "%s: evicted, yet READY", s->name);
			if (verify(fs, s) < 0)
				return -1;
			continue;
		}
		EXPECT(st == -1 || st == DFS_L_ABSENT, "%s: left in state %d", s->name, st);
		EXPECT(!pub || evicting, "%s: reported published, but state %d", s->name, st);
		/* Never published (or evicted): it can be built again. */
		rc = tu_build_spec(fs, s, &err);
		EXPECT(rc == 0, "rebuild %s: %s", s->name, err.msg);
		if (verify(fs, s) < 0)
			return -1;
	}
	EXPECT(fsck_count(fs, 1) == 0, "live fsck after rebuilding: %d problems",
	       tu_fsck_count);
	if (check_accounting(fs) < 0)
		return -1;
	daxfs_close(fs);
	*fs1 = NULL;
	EXPECT(open_offline(&off) == 0, "offline open");
	rc = fsck_count(off, 0);
	daxfs_close(off);
	EXPECT(rc == 0, "offline fsck: %d problems", rc);

	/* Evict everything: nothing but the layer records may stay. */
	EXPECT(tu_attach(path, 1, LEASE, &fs) == 0, "re-attach host 1");
	*fs1 = fs;
	daxfs_layers_foreach(fs, ready_cb, &ready);
	EXPECT(ready.n == TU_NSPECS, "%d READY layers, want %d", ready.n, TU_NSPECS);
	for (int i = 0; i < ready.n; i++) {
		rc = daxfs_layer_evict(fs, ready.id[i], &err);
		EXPECT(rc == 0, "evict: %s", err.msg);
	}
	daxfs_usage(fs, &u);
	EXPECT(expected_use(&a) == 0, "map");
	EXPECT(u.data_used == 0 && u.contents == 0 && u.layers_ready == 0,
	       "after evicting all: data used %llu, %llu contents, %llu ready",
	       (unsigned long long)u.data_used, (unsigned long long)u.contents,
	       (unsigned long long)u.layers_ready);
	EXPECT(u.meta_used == a.layer_recs * sizeof(struct dfs_layer) &&
	       a.layer_recs == TU_NSPECS,
	       "after evicting all: meta used %llu for %llu layer records",
	       (unsigned long long)u.meta_used, (unsigned long long)a.layer_recs);
	EXPECT(fsck_count(fs, 1) == 0, "live fsck after evicting all: %d problems",
	       tu_fsck_count);
	daxfs_close(fs);
	*fs1 = NULL;
	EXPECT(open_offline(&off) == 0, "offline open");
	rc = fsck_count(off, 0);
	daxfs_close(off);
	EXPECT(rc == 0, "final offline fsck: %d problems", rc);
	return 0;
}

/* Observe host id until DEAD, then reap; want_reaped hosts must go. */
static int reap_host_id(struct daxfs *fs, int id)
{
	struct daxfs_err err = { 0 };
	struct daxfs_host_info hi;
	int rc;

	EXPECT(wait_liveness(fs, id, DAXFS_HOST_DEAD, 20 * LEASE + 2000) == 0,
	       "host %d never seen dead", id);
	rc = daxfs_reap_dead(fs, &err);
	EXPECT(rc >= 1, "reap_dead returned %d: %s", rc, err.msg);
	EXPECT(host_info(fs, id, &hi) == 0 && hi.liveness == DAXFS_HOST_GONE,
	       "host %d not gone after the reap (liveness %d)", id, hi.liveness);
	return 0;
}

/* The writer dies at failpoint fp (0: runs to the end). */
static int crash_once(uint64_t fp, struct helper *h)
{
	struct daxfs *fs1;
	struct daxfs_host_info hi;
	int st, rc;

	if (setup(&fs1) < 0)
		goto fail;
	st = helper_run(2, LEASE, "work", -1, fp, h);
	if (fp) {
		if (st != 99) {
			fprintf(stderr, "writer exited %d at failpoint %llu, want 99\n",
				st, (unsigned long long)fp);
			goto fail;
		}
		if (reap_host_id(fs1, 2) < 0)
			goto fail;
	} else {
		if (st != 0) {
			fprintf(stderr, "writer exited %d\n", st);
			goto fail;
		}
		if (host_info(fs1, 2, &hi) < 0 || hi.liveness != DAXFS_HOST_GONE) {
			fprintf(stderr, "writer detached but its slot is not GONE\n");
			goto fail;
		}
	}
	rc = check_all(&fs1, h);
	if (rc == 0)
		return 0;
fail:
	daxfs_close(fs1);
	return -1;
}

/* ---- cases ---- */

static struct helper base;	/* the writer's output without failpoint */
static uint64_t base_count;

TEST(baseline)
{
	struct daxfs *fs1;
	struct daxfs_layer *l;
	struct daxfs_err err = { 0 };
	struct daxfs_piece pc[16];
	uint8_t id[32];
	uint32_t ino;
	int n;

	CHECK(crash_once(0, &base) == 0);
	CHECK(marker(&base, "failpoints", NULL, &base_count));
	CHECK(base_count > 0);
	printf("info: writer passes %llu failpoint sites\n",
	       (unsigned long long)base_count);
	/* The large file really spans several extents. */
	CHECK(setup(&fs1) == 0);
	CHECK(tu_build_spec(fs1, tu_spec(TU_FIRST_WRITER_SPEC + 1), &err) == 0);
	tu_spec_id(tu_spec(TU_FIRST_WRITER_SPEC + 1), id);
	CHECK_RC(daxfs_layer_open(fs1, id, &l, &err), 0);
	CHECK_RC(daxfs_lookup_path(l, "big/blob", &ino), 0);
	n = daxfs_file_pieces(l, ino, 0, TU_BIG_SIZE, pc, 16);
	daxfs_layer_close(l);
	daxfs_close(fs1);
	CHECK(n >= 2);
}

/* kill -9 of the writer after a random delay, then reap and check, as
 * for a failpoint crash (long runs only: the timing is not repeatable). */
static int kill_once(unsigned delay_us, struct helper *h)
{
	struct daxfs_host_info hi;
	struct daxfs *fs1;
	int st;

	if (setup(&fs1) < 0)
		return -1;
	if (helper_start(h, 2, LEASE, "work", -1, 0) < 0)
		goto fail;
	usleep(delay_us);
	kill(h->pid, SIGKILL);
	st = helper_finish(h);
	if (st != 0 && st != 128 + SIGKILL) {
		fprintf(stderr, "writer exited %d\n", st);
		goto fail;
	}
	/* Killed before it attached (a kill within the first milliseconds):
	 * no slot names it, and there is nothing to reap. */
	if (st != 0 && host_info(fs1, 2, &hi) == -ENOENT)
		printf("info: killed before it attached\n");
	else if (st != 0 && reap_host_id(fs1, 2) < 0)
		goto fail;
	return check_all(&fs1, h);
fail:
	daxfs_close(fs1);
	return -1;
}

TEST(random_kills)
{
	const char *s = getenv("DAXFS_CRASH_SEED");
	unsigned seed = s ? (unsigned)strtoul(s, NULL, 0) : (unsigned)time(NULL);
	struct helper h;

	printf("info: random_kills seed %u (DAXFS_CRASH_SEED)\n", seed);
	srand(seed);
	for (int i = 0; i < 10; i++) {
		unsigned delay = (unsigned)rand() % 300000;

		printf("info: kill -9 after %u us\n", delay);
		CHECK(kill_once(delay, &h) == 0);
	}
}

/* Which step of the writer's script site fp falls in. */
static const char *phase_of(uint64_t fp, char *buf, size_t n)
{
	const char *p = base.text, *best = "start";
	size_t bl = 5;

	for (; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL) {
		const char *nl = strchr(p, '\n'), *sp = NULL;

		for (const char *q = p; nl && q < nl; q++)
			if (*q == ' ')
				sp = q;
		if (!sp)
			continue;
		if (strtoull(sp + 1, NULL, 10) < fp) {
			best = p;
			bl = (size_t)(sp - p);
		}
	}
	snprintf(buf, n, "after '%.*s'", (int)bl, best);
	return buf;
}

TEST(every_failpoint)
{
	const char *lg = getenv("DAXFS_TEST_LONG");
	const char *sd = getenv("DAXFS_CRASH_SEED");
	uint64_t seed = sd ? strtoull(sd, NULL, 0) : 0x5eed0001ULL, x;
	uint64_t *sites, nsites = 0, failed = 0;
	int all = (lg && !strcmp(lg, "1")) || base_count <= FULL_LIMIT;
	double t0 = now_s();
	char ph[128];

	CHECK(base_count > 0);
	sites = calloc(base_count, sizeof(*sites));
	CHECK(sites != NULL);
	if (all) {
		for (uint64_t i = 1; i <= base_count; i++)
			sites[nsites++] = i;
	} else {
		/* First and last 10, and a seeded sample of the rest. */
		uint8_t *pick = calloc(base_count + 1, 1);

		CHECK(pick != NULL);
		for (uint64_t i = 1; i <= 10; i++)
			pick[i] = pick[base_count + 1 - i] = 1;
		x = seed;
		for (int k = 0; k < SAMPLE - 20;) {
			uint64_t s = 11 + (x = tu_mix(x)) % (base_count - 20);

			if (!pick[s]) {
				pick[s] = 1;
				k++;
			}
		}
		for (uint64_t i = 1; i <= base_count; i++)
			if (pick[i])
				sites[nsites++] = i;
		free(pick);
	}
	printf("info: exercising %llu of %llu failpoint sites (%s, seed %#llx)\n",
	       (unsigned long long)nsites, (unsigned long long)base_count,
	       all ? "all" : "sample", (unsigned long long)seed);
	fflush(stdout);
	for (uint64_t i = 0; i < nsites; i++) {
		struct helper h;

		if (crash_once(sites[i], &h) < 0) {
			fprintf(stderr, "  ^ writer killed at failpoint %llu (%s); "
				"reproduce: DAXFS_FAILPOINT=%llu\n",
				(unsigned long long)sites[i],
				phase_of(sites[i], ph, sizeof(ph)),
				(unsigned long long)sites[i]);
			if (++failed >= 10)
				break;
		}
	}
	printf("info: %llu sites in %.1fs, %llu failed\n", (unsigned long long)nsites,
	       now_s() - t0, (unsigned long long)failed);
	free(sites);
	CHECK(failed == 0);
}

/* Host 2 dies at fp2; host 3 reaps it and dies at its own site fp3 (0:
 * runs through); host 1 then finishes.  *reap_sites gets the number of
 * sites host 3 passed while reaping. */
static int reaper_once(uint64_t fp2, uint64_t fp3, uint64_t *reap_sites)
{
	struct daxfs *fs1;
	struct helper h2, h3;
	uint64_t start = 0, end = 0;
	int st;

	if (setup(&fs1) < 0)
		goto fail;
	st = helper_run(2, LEASE, "work", -1, fp2, &h2);
	if (st != 99) {
		fprintf(stderr, "writer exited %d, want 99\n", st);
		goto fail;
	}
	st = helper_run(3, REAPER_LEASE, "reap", 1, fp3, &h3);
	if (!marker(&h3, "reap-start", NULL, &start)) {
		fprintf(stderr, "reaper did not start (exit %d)\n", st);
		goto fail;
	}
	if (fp3) {
		if (st != 99 || marker(&h3, "reaped", NULL, NULL)) {
			fprintf(stderr, "reaper exited %d at its failpoint %llu, want 99\n",
				st, (unsigned long long)fp3);
			goto fail;
		}
		/* Host 1 sees host 3 dead; it settles host 3's undo
		 * bookkeeping, then takes the reap of host 2 over. */
		if (reap_host_id(fs1, 3) < 0)
			goto fail;
		if (wait_liveness(fs1, 2, DAXFS_HOST_GONE, 10) < 0) {
			fprintf(stderr, "host 2 not reaped by the take-over\n");
			goto fail;
		}
	} else {
		if (st != 0 || !marker(&h3, "failpoints", NULL, &end)) {
			fprintf(stderr, "reaper exited %d\n", st);
			goto fail;
		}
		*reap_sites = end - start;
		if (wait_liveness(fs1, 2, DAXFS_HOST_GONE, 10) < 0) {
			fprintf(stderr, "host 2 not reaped by host 3\n");
			goto fail;
		}
	}
	if (check_all(&fs1, &h2) == 0)
		return 0;
fail:
	daxfs_close(fs1);
	return -1;
}

TEST(reaper_dies)
{
	uint64_t pub0 = 0, pub2 = 0, ev = 0, failed = 0, runs = 0, dummy;
	const char *lg = getenv("DAXFS_TEST_LONG");
	int all = lg && !strcmp(lg, "1");
	uint64_t k[4], beg1 = 0, pub1 = 0, nk = 4;
	const char *what[4] = {
		"before its READY CAS, references taken and a record created",
		"in the middle of an eviction",
		"after a READY CAS, before the deferred release",
		"in the middle of its large file",
	};

	CHECK(marker(&base, "published", tu_spec(TU_FIRST_WRITER_SPEC)->name, &pub0));
	CHECK(marker(&base, "published", tu_spec(TU_FIRST_WRITER_SPEC + 2)->name, &pub2));
	CHECK(marker(&base, "evict", tu_spec(TU_FIRST_WRITER_SPEC + 2)->name, &ev));
	CHECK(marker(&base, "begin", tu_spec(TU_FIRST_WRITER_SPEC + 1)->name, &beg1));
	CHECK(marker(&base, "published", tu_spec(TU_FIRST_WRITER_SPEC + 1)->name, &pub1));
	/* The writer's last sites of a publish without replaced files are
	 * tree allocation, before and after the READY CAS; with one
	 * replaced file four more follow (decrement x2, retire, remove). */
	k[0] = pub2 - 1;
	k[1] = ev + 3;
	k[2] = pub0 - 4;
	k[3] = (beg1 + pub1) / 2;
	if (all)
		nk = base_count;	/* every writer site */
	for (uint64_t i = 0; i < nk; i++) {
		uint64_t n = 0, step, kk = all ? i + 1 : k[i];

		CHECK(reaper_once(kk, 0, &n) == 0);
		if (!all) {
			printf("info: writer killed at %llu (%s): reaper passes %llu sites\n",
			       (unsigned long long)kk, what[i], (unsigned long long)n);
			fflush(stdout);
			CHECK(n > 0);
		}
		/* Every site normally; a spread of at most 8 if there are many. */
		step = all || n <= 8 ? 1 : (n + 7) / 8;
		for (uint64_t s = 1; s <= n; s += step) {
			runs++;
			if (reaper_once(kk, s, &dummy) < 0) {
				fprintf(stderr, "  ^ writer killed at %llu, reaper at its "
					"site %llu\n", (unsigned long long)kk,
					(unsigned long long)s);
				failed++;
			}
		}
	}
	printf("info: reaper killed at %llu sites, %llu failed\n",
	       (unsigned long long)runs, (unsigned long long)failed);
	CHECK(failed == 0);
}

/* Region bytes with every heartbeat counter zeroed (they keep moving). */
static uint8_t *snapshot(void)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	uint8_t *buf = malloc(REGION_SIZE);
	const struct dfs_super *sb = (const void *)buf;
	size_t got = 0;

	if (fd < 0 || !buf) {
		free(buf);
		if (fd >= 0)
			close(fd);
		return NULL;
	}
	while (got < REGION_SIZE) {
		ssize_t r = pread(fd, buf + got, REGION_SIZE - got, (off_t)got);

		if (r <= 0)
			break;
		got += (size_t)r;
	}
	close(fd);
	if (got != REGION_SIZE) {
		free(buf);
		return NULL;
	}
	for (uint32_t s = 0; s < sb->max_hosts; s++)
		for (unsigned p = 0; p < DFS_PROCS_PER_HOST; p++)
			memset(buf + sb->hosts_off + s * sizeof(struct dfs_host) +
			       offsetof(struct dfs_host, procs) + p * sizeof(struct dfs_proc) +
			       offsetof(struct dfs_proc, heartbeat), 0, 8);
	return buf;
}

/* Data chunks in state st (format.h) and data chunks owned by host slot. */
static int count_chunks(unsigned st, int slot, uint64_t *n_state, uint64_t *n_slot)
{
	uint8_t *r = snapshot();
	const struct dfs_super *sb = (const void *)r;

	if (!r)
		return -1;
	*n_state = *n_slot = 0;
	for (uint64_t c = 0; c < sb->data.nchunks; c++) {
		uint64_t w;

		memcpy(&w, r + sb->data.chunk_table + 8 * c, 8);
		*n_state += DFS_CHUNK_STATE(w) == st;
		*n_slot += DFS_CHUNK_STATE(w) == DFS_CHUNK_OWNED &&
			   DFS_CHUNK_SLOT1(w) == (unsigned)slot + 1;
	}
	free(r);
	return 0;
}

static const struct tu_ent filler_ents[] = {
	{ "filler/blob", TU_REG, 6 << 20, 77, NULL, NULL, NULL },
};
static const struct tu_spec filler = { "FILLER", 300, filler_ents, 1 };

TEST(paused_writer)
{
	const struct tu_spec *s = tu_spec(TU_FIRST_WRITER_SPEC + 1);
	struct daxfs *fs1 = NULL, *off;
	struct daxfs_err err = { 0 };
	struct helper h;
	uint8_t *before = NULL, *after = NULL;
	uint64_t orphans0, orphans1, mine;
	int st, wst, rc;

	CHECK(setup(&fs1) == 0);
	CHECK_RC(helper_start(&h, 2, LEASE, "pause", -1, 0), 0);
	if (!helper_read_until(&h, "paused")) {
		fprintf(stderr, "writer did not pause: %s\n", h.text);
		kill(h.pid, SIGKILL);
		helper_finish(&h);
		daxfs_close(fs1);
		CHECK(0);
	}
	CHECK(waitpid(h.pid, &wst, WUNTRACED) == h.pid && WIFSTOPPED(wst));
	/* Stopped mid-file: its heartbeat stalls, it is reaped. */
	CHECK(reap_host_id(fs1, 2) == 0);
	CHECK(layer_state(fs1, s) == DFS_L_ABSENT);
	/* The claim was given back: this host builds the layer. */
	rc = tu_build_spec(fs1, s, &err);
	if (rc < 0)
		fprintf(stderr, "build after reaping: %s\n", err.msg);
	CHECK(rc == 0);
	CHECK(verify(fs1, s) == 0);
	CHECK_RC(fsck_count(fs1, 1), 0);
	CHECK(check_accounting(fs1) == 0);
	/* Once lease + grace have passed, this host takes the chunks the
	 * writer was filling: from now on a stale write would hit them. */
	CHECK(count_chunks(DFS_CHUNK_ORPHAN, 0, &orphans0, &mine) == 0);
	CHECK(orphans0 > 0);
	sleep_ms(2 * LEASE + 50);	/* tu_attach: grace = lease */
	rc = tu_build_spec(fs1, &filler, &err);
	if (rc < 0)
		fprintf(stderr, "filler: %s\n", err.msg);
	CHECK(rc == 0);
	CHECK(count_chunks(DFS_CHUNK_ORPHAN, 0, &orphans1, &mine) == 0);
	printf("info: orphaned data chunks %llu, %llu after the grace\n",
	       (unsigned long long)orphans0, (unsigned long long)orphans1);
	CHECK(orphans1 < orphans0);
	before = snapshot();
	CHECK(before != NULL);
	/* Continued, the writer must find itself reaped and write nothing. */
	kill(h.pid, SIGCONT);
	st = helper_finish(&h);
	after = snapshot();
	if (st != 0)
		fprintf(stderr, "paused writer exited %d:\n%s", st, h.text);
	if (after && memcmp(before, after, REGION_SIZE)) {
		for (size_t i = 0; i < REGION_SIZE; i++) {
			if (before[i] != after[i]) {
				fprintf(stderr, "region changed at %#zx after the reaped "
					"writer continued\n", i);
				break;
			}
		}
	}
	rc = after && !memcmp(before, after, REGION_SIZE);
	free(before);
	free(after);
	CHECK(st == 0);
	CHECK(marker(&h, "check", NULL, NULL) && marker(&h, "write", NULL, NULL) &&
	      marker(&h, "publish", NULL, NULL));
	CHECK(rc);
	CHECK(verify(fs1, s) == 0);
	CHECK(verify(fs1, &filler) == 0);
	CHECK_RC(fsck_count(fs1, 1), 0);
	CHECK(check_accounting(fs1) == 0);
	daxfs_close(fs1);
	CHECK(open_offline(&off) == 0);
	rc = fsck_count(off, 0);
	daxfs_close(off);
	CHECK_RC(rc, 0);
}

CHECK_MAIN_BEGIN("test_crash")
	const char *b = getenv("DAXFS_BUILD");
	double t0 = now_s();

	if (b) {
		snprintf(helper_path, sizeof(helper_path), "%s/tests/helper_writer", b);
	} else {
		ssize_t n = readlink("/proc/self/exe", helper_path, sizeof(helper_path) - 32);

		if (n < 0)
			n = 0;
		helper_path[n] = 0;
		if (strrchr(helper_path, '/'))
			strcpy(strrchr(helper_path, '/') + 1, "helper_writer");
	}
	tu_region_path(path, sizeof(path), "crash");
	RUN(baseline);
	if (base_count) {
		RUN(every_failpoint);
		RUN(reaper_dies);
	}
	RUN(paused_writer);
	if (getenv("DAXFS_TEST_LONG"))
		RUN(random_kills);
	unlink(path);
	printf("info: test_crash took %.1fs\n", now_s() - t0);
CHECK_MAIN_END
