/* Corrupted regions: seeded random damage to a copy of a region with
 * layers, in the superblock, host table, hash table, content records,
 * layer records, layer trees (and journals, chunk tables, bitmaps, file
 * data).  Opening must refuse with a message or succeed; then fsck, usage,
 * listing and reading every layer may fail but must not crash (this test
 * is meant to run under ASan/UBSan too).  Superblock damage must be
 * refused; damage inside a layer tree must make fsck report a problem.
 *
 *   DAXFS_CORRUPT_SEED=N     another seed (printed)
 *   DAXFS_CORRUPT_TRIAL=K[-L] run trials K..L only: a crash names its
 *                          trial, or (UBSan exits without any hook) the
 *                          range printed before the category ran
 *   DAXFS_TEST_LONG=1        eight times as many trials */
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stddef.h>
#include <sys/stat.h>

#include "check.h"
#include "format.h"
#include "testutil.h"

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_UNDEFINED__)
#include <sanitizer/common_interface_defs.h>
#define HAVE_SAN_CB 1
#endif

#define REGION (16ULL << 20)

enum cat {
	C_SUPER, C_HOSTS, C_HASH, C_CONTENT, C_LAYER, C_TREE,
	C_JOURNAL, C_CHUNKS, C_DATA, NCAT
};
static const char *cat_name[NCAT] = {
	"superblock", "host table", "hash table", "content record",
	"layer record", "layer tree", "journal", "chunk tables", "file data",
};
/* Trials per category (the first six are the ones asked for). */
static const unsigned cat_trials[NCAT] = { 200, 200, 250, 250, 250, 250, 80, 80, 40 };

static uint8_t *pristine, *work;
static uint64_t seed;

/* Where things are in the pristine region. */
struct span { uint64_t off, len; };
static struct span contents[64], layers[16], trees[16], slots[128];
static int ncontents, nlayers, ntrees, nslots;

static char crash_note[512];

static void note_crash(void)
{
	if (crash_note[0] && write(2, crash_note, strlen(crash_note)) < 0)
		crash_note[0] = 0;
}

static void on_signal(int sig)
{
	note_crash();
	signal(sig, SIG_DFL);
	raise(sig);
}

/* ---- building the pristine region ---- */

static int build_pristine(void)
{
	struct daxfs_mkfs_opts mo = { .max_hosts = 4, .journal_entries = 64 };
	struct daxfs_open_opts oo = { .lease_ms = 1000 };
	struct daxfs_host_opts h = { .kind = DAXFS_PROC_DAEMON, .name = "corrupt" };
	struct daxfs_err err = { 0 };
	struct daxfs *fs;
	const struct dfs_super *sb;
	const int specs[] = { 0, 1, 2, 3, 4 };
	int rc;

	pristine = aligned_alloc(4096, REGION);
	work = aligned_alloc(4096, REGION);
	if (!pristine || !work)
		return -ENOMEM;
	memset(pristine, 0, REGION);
	rc = daxfs_mkfs_buffer(pristine, REGION, &mo, &err);
	if (rc == 0)
		rc = daxfs_open_buffer(pristine, REGION, &oo, &fs, &err);
	if (rc < 0) {
		fprintf(stderr, "pristine: %s\n", err.msg);
		return rc;
	}
	h.uuid[0] = 0xda;
	h.uuid[15] = 1;
	rc = daxfs_host_attach(fs, &h, &err);
	for (size_t i = 0; rc == 0 && i < sizeof(specs) / sizeof(specs[0]); i++)
		rc = tu_build_spec(fs, tu_spec(specs[i]), &err);
	if (rc < 0) {
		fprintf(stderr, "pristine: %s\n", err.msg);
		daxfs_close(fs);
		return rc;
	}
	tu_fsck_count = 0;
	rc = daxfs_fsck(fs, 1, tu_fsck_line, NULL);
	daxfs_close(fs);
	if (rc != 0)
		return -EUCLEAN;
	/* Find the records through the format: hash values name them. */
	sb = (const struct dfs_super *)pristine;
	for (uint64_t i = 0; i < sb->hash_slots; i++) {
		struct dfs_hslot *s = (struct dfs_hslot *)(pristine + sb->hash_off) + i;
		uint64_t w = atomic_load(&s->word), v = atomic_load(&s->value);
		uint64_t kind = atomic_load(&s->kind);

		if (DFS_HWORD_STATE(w) != DFS_H_VALID)
			continue;
		if (nslots < 128)
			slots[nslots++] = (struct span){ sb->hash_off + i * sizeof(*s), sizeof(*s) };
		if (kind == DFS_KIND_CONTENT && ncontents < 64) {
			struct dfs_content *c = (struct dfs_content *)(pristine + v);

			contents[ncontents++] = (struct span){ v, sizeof(*c) +
							       c->cap * sizeof(c->ext[0]) };
		} else if (kind == DFS_KIND_LAYER && nlayers < 16) {
			struct dfs_layer *l = (struct dfs_layer *)(pristine + v);

			layers[nlayers++] = (struct span){ v, sizeof(*l) };
			if (DFS_LW_STATE(atomic_load(&l->state)) == DFS_L_READY)
				trees[ntrees++] = (struct span){ atomic_load(&l->tree), l->tree_len };
		}
	}
	printf("info: pristine region: %d hash entries, %d contents, %d layers, %d trees\n",
	       nslots, ncontents, nlayers, ntrees);
	return ncontents && nlayers == 5 && ntrees == 5 ? 0 : -EUCLEAN;
}

/* ---- damage ---- */

static uint64_t rnd(uint64_t *x)
{
	return *x = tu_mix(*x);
}

/* Pick the byte range a trial of category c damages. */
static struct span target(enum cat c, uint64_t *x)
{
	const struct dfs_super *sb = (const struct dfs_super *)pristine;
	struct span s = { 0, 0 };

	switch (c) {
	case C_SUPER:
		/* Mostly the fields (not the reserved bytes, which only the
		 * checksum covers). */
		s = (struct span){ 0, rnd(x) % 4 ? offsetof(struct dfs_super, reserved)
						 : sizeof(struct dfs_super) };
		break;
	case C_HOSTS:
		/* Mostly the slot in use (owner word, processes, contexts). */
		s = (struct span){ sb->hosts_off, rnd(x) % 4 ? sizeof(struct dfs_host) :
				   sb->max_hosts * sizeof(struct dfs_host) };
		break;
	case C_HASH:
		/* Used slots; the state word of any slot; anywhere. */
		switch (rnd(x) % 4) {
		case 0: case 1:
			s = slots[rnd(x) % (uint64_t)nslots];
			break;
		case 2:
			s = (struct span){ sb->hash_off + (rnd(x) % sb->hash_slots) *
					   sizeof(struct dfs_hslot), 8 };
			break;
		default:
			s = (struct span){ sb->hash_off, sb->hash_slots * sizeof(struct dfs_hslot) };
			break;
		}
		break;
	case C_CONTENT:
		s = contents[rnd(x) % (uint64_t)ncontents];
		break;
	case C_LAYER:
		s = layers[rnd(x) % (uint64_t)nlayers];
		break;
	case C_TREE:
		s = trees[rnd(x) % (uint64_t)ntrees];
		break;
	case C_JOURNAL:
		s = (struct span){ sb->journals_off, (uint64_t)sb->max_hosts *
				   DFS_CTX_PER_HOST * sb->journal_entries * sizeof(struct dfs_jentry) };
		/* The used part: the first context's first entries. */
		s.len = 16 * sizeof(struct dfs_jentry);
		break;
	case C_CHUNKS:
		if (rnd(x) % 2)
			s = (struct span){ sb->meta.chunk_table, sb->meta.base - sb->meta.chunk_table };
		else
			s = (struct span){ sb->data.chunk_table, sb->data.base - sb->data.chunk_table };
		/* Mostly the chunks in use: the start of each table. */
		if (rnd(x) % 4)
			s.len = s.len < 64 ? s.len : 64;
		break;
	default:
		s = (struct span){ sb->data.base, 4ULL << 20 };
		break;
	}
	return s;
}

static const uint64_t interesting[] = {
	0, 1, 8, 0x40, 0x1000, 0xffffffffULL, 0x100000000ULL, 1ULL << 40,
	1ULL << 63, UINT64_MAX, UINT64_MAX - 7, REGION, REGION - 8,
};

/* Damage work in s: 1-4 byte flips, or (not for trees) u64 overwrites
 * with values that stress bounds checks.  Describes it into d. */
static void damage(enum cat c, struct span s, uint64_t *x, char *d, size_t dn)
{
	int n = 1 + (int)(rnd(x) % (c == C_TREE ? 3 : 4));
	size_t used = 0;

	d[0] = 0;
	for (int k = 0; k < n; k++) {
		uint64_t off = s.off + rnd(x) % s.len;

		if (c != C_TREE && rnd(x) % 3 == 0 && s.len >= 8) {
			uint64_t v, old;

			off = s.off + (rnd(x) % (s.len / 8)) * 8;
			memcpy(&old, work + off, 8);
			switch (rnd(x) % 4) {
			case 0: v = interesting[rnd(x) % (sizeof(interesting) / 8)]; break;
			case 1: v = old + 1 + rnd(x) % 64; break;
			case 2: v = old - 1 - rnd(x) % 64; break;
			default: v = rnd(x); break;
			}
			if (v == old)
				v = ~old;
			memcpy(work + off, &v, 8);
			used += (size_t)snprintf(d + used, dn - used, " u64@%#llx=%#llx",
						 (unsigned long long)off, (unsigned long long)v);
		} else {
			uint8_t m = (uint8_t)(1 + rnd(x) % 255);

			work[off] ^= m;
			used += (size_t)snprintf(d + used, dn - used, " byte@%#llx^%#x",
						 (unsigned long long)off, m);
		}
		if (used >= dn)
			break;
	}
}

/* ---- using a damaged region ---- */

static int count_cb(const struct daxfs_layer_info *li, void *arg)
{
	(void)li;
	(*(int *)arg)++;
	return 0;
}

static void quiet_line(const char *line, void *arg)
{
	(void)line;
	(*(int *)arg)++;
}

struct walk {
	struct daxfs_layer *l;
	unsigned visits;
	uint8_t buf[8192];
};

/* Read everything about inode ino; recurse into directories (bounded). */
static void walk_ino(struct walk *w, uint32_t ino, int depth)
{
	struct daxfs_stat st;
	char names[1024];
	const char *tg;
	size_t tl;
	ssize_t n;

	if (++w->visits > 4000 || depth > 40 || daxfs_stat(w->l, ino, &st) < 0)
		return;
	n = daxfs_listxattr(w->l, ino, names, sizeof(names));
	for (ssize_t p = 0; n > 0 && p < n;) {
		size_t nl = strnlen(names + p, (size_t)(n - p));

		if (p + (ssize_t)nl >= n)
			break;
		daxfs_getxattr(w->l, ino, names + p, w->buf, sizeof(w->buf));
		daxfs_getxattr(w->l, ino, names + p, NULL, 0);
		p += (ssize_t)nl + 1;
	}
	daxfs_getxattr(w->l, ino, "user.none", w->buf, sizeof(w->buf));
	if (S_ISLNK(st.mode))
		daxfs_readlink(w->l, ino, &tg, &tl);
	if (S_ISREG(st.mode)) {
		struct daxfs_piece pc[8];
		uint64_t offs[4] = { 0, st.size / 2, st.size > 4096 ? st.size - 4096 : 0,
				     st.size + 1 };

		for (int i = 0; i < 4; i++)
			daxfs_pread(w->l, ino, w->buf, sizeof(w->buf), offs[i]);
		daxfs_file_pieces(w->l, ino, 0, SIZE_MAX, pc, 8);
		/* Small files whole. */
		for (uint64_t off = 0; off < st.size && off < (256u << 10);
		     off += sizeof(w->buf))
			if (daxfs_pread(w->l, ino, w->buf, sizeof(w->buf), off) <= 0)
				break;
	}
	daxfs_readlink(w->l, ino, &tg, &tl);	/* also on non-links */
	for (uint32_t i = 0; i < 100000; i++) {
		const char *name;
		size_t nl;
		uint32_t child, again;
		uint8_t dt;

		if (daxfs_readdir(w->l, ino, i, &name, &nl, &child, &dt) < 0)
			break;
		daxfs_lookup(w->l, ino, name, nl, &again);
		walk_ino(w, child, depth + 1);
		if (w->visits > 4000)
			break;
	}
}

static void read_layers(struct daxfs *fs)
{
	static struct walk w;
	struct daxfs_err err;
	uint32_t ino;

	for (int i = 0; i < TU_NSPECS; i++) {
		uint8_t id[32];
		char why[256];

		tu_spec_id(tu_spec(i), id);
		if (daxfs_layer_open(fs, id, &w.l, &err) < 0)
			continue;
		w.visits = 0;
		daxfs_layer_serial(w.l);
		daxfs_layer_ninodes(w.l);
		walk_ino(&w, DAXFS_ROOT_INO, 0);
		daxfs_lookup_path(w.l, "app/new1", &ino);
		daxfs_lookup_path(w.l, "/big/blob", &ino);
		daxfs_lookup_path(w.l, "no/such/path", &ino);
		daxfs_stat(w.l, UINT32_MAX, &(struct daxfs_stat){ 0 });
		daxfs_readdir(w.l, UINT32_MAX, 0, &(const char *){ NULL }, &(size_t){ 0 },
			      &ino, &(uint8_t){ 0 });
		/* The checker reads everything too (its verdict is ignored). */
		tu_verify_spec(fs, tu_spec(i), why, sizeof(why));
		daxfs_layer_close(w.l);
	}
}

struct outcome {
	unsigned trials, refused, opened, attached, fsck_found, layers_read;
};

/* One trial; 0 unless an assertion failed. */
static int trial(unsigned k, enum cat c, struct outcome *o)
{
	struct daxfs_open_opts oo = { .lease_ms = 2, .grace_ms = 2 };
	struct daxfs_host_opts h = { .kind = DAXFS_PROC_DAEMON, .name = "fuzz" };
	struct daxfs_host_info info[DFS_MAX_HOSTS];
	struct daxfs_err err = { 0 };
	struct daxfs_usage u;
	struct daxfs *fs;
	uint64_t x = tu_mix(seed ^ ((uint64_t)k << 20));
	struct span s = target(c, &x);
	char desc[200];
	int rc, n, lines = 0, nl = 0;

	memcpy(work, pristine, REGION);
	damage(c, s, &x, desc, sizeof(desc));
	snprintf(crash_note, sizeof(crash_note),
		 "test_corrupt: crashed in trial %u (%s:%s), seed %#llx; "
		 "rerun with DAXFS_CORRUPT_TRIAL=%u\n", k, cat_name[c], desc,
		 (unsigned long long)seed, k);
	o->trials++;
	rc = daxfs_open_buffer(work, REGION, &oo, &fs, &err);
	if (rc < 0) {
		o->refused++;
		if (!err.msg[0] || (rc != -EUCLEAN && rc != -EOPNOTSUPP)) {
			fprintf(stderr, "trial %u (%s:%s): refused with %d and message '%s'\n",
				k, cat_name[c], desc, rc, err.msg);
			return -1;
		}
		return 0;
	}
	o->opened++;
	if (c == C_SUPER) {
		fprintf(stderr, "trial %u (%s:%s): a damaged superblock was accepted\n",
			k, cat_name[c], desc);
		daxfs_abandon(fs);
		return -1;
	}
	n = daxfs_fsck(fs, 0, quiet_line, &lines);
	if (n > 0)
		o->fsck_found++;
	if (c == C_TREE && n <= 0) {
		fprintf(stderr, "trial %u (%s:%s): fsck found nothing (%d)\n", k,
			cat_name[c], desc, n);
		daxfs_abandon(fs);
		return -1;
	}
	daxfs_usage(fs, &u);
	daxfs_layers_foreach(fs, count_cb, &nl);
	daxfs_hosts_observe(fs, info, DFS_MAX_HOSTS);
	h.uuid[0] = 0xda;
	h.uuid[15] = 1;
	if (daxfs_host_attach(fs, &h, &err) == 0) {
		o->attached++;
		read_layers(fs);
		o->layers_read++;
		daxfs_fsck(fs, 1, quiet_line, &lines);
		daxfs_usage(fs, &u);
		daxfs_hosts_observe(fs, info, DFS_MAX_HOSTS);
	}
	daxfs_close(fs);
	return 0;
}

TEST(damage)
{
	const char *sd = getenv("DAXFS_CORRUPT_SEED"), *one = getenv("DAXFS_CORRUPT_TRIAL");
	const char *lg = getenv("DAXFS_TEST_LONG");
	unsigned mult = lg && !strcmp(lg, "1") ? 8 : 1, k = 0, failed = 0;
	unsigned long lo = 0, hi = ULONG_MAX;
	struct outcome o[NCAT];
	char *e;

	seed = sd ? strtoull(sd, NULL, 0) : 0xc0a5e5eedULL;
	if (one) {
		lo = hi = strtoul(one, &e, 0);
		if (*e == '-')
			hi = strtoul(e + 1, NULL, 0);
	}
	memset(o, 0, sizeof(o));
	CHECK_RC(build_pristine(), 0);
	printf("info: seed %#llx\n", (unsigned long long)seed);
	fflush(stdout);
	for (int c = 0; c < NCAT; c++) {
		if (!one) {
			printf("info: trials %u-%u: %s\n", k, k + cat_trials[c] * mult - 1,
			       cat_name[c]);
			fflush(stdout);
		}
		for (unsigned t = 0; t < cat_trials[c] * mult; t++, k++) {
			if (k < lo || k > hi)
				continue;
			if (trial(k, (enum cat)c, &o[c]) < 0 && ++failed >= 20)
				break;
		}
		if (o[c].trials)
			printf("info: %-14s %4u trials: %4u refused, %4u opened, %4u with fsck "
			       "problems, %4u attached and read\n", cat_name[c], o[c].trials,
			       o[c].refused, o[c].opened, o[c].fsck_found, o[c].layers_read);
	}
	crash_note[0] = 0;
	free(pristine);
	free(work);
	CHECK(failed == 0);
	/* Asked for explicitly: every superblock flip refused, every tree
	 * flip found (checked per trial above). */
	CHECK(one || o[C_SUPER].refused == o[C_SUPER].trials);
	CHECK(one || o[C_TREE].fsck_found == o[C_TREE].trials);
}

CHECK_MAIN_BEGIN("test_corrupt")
#ifdef HAVE_SAN_CB
	__sanitizer_set_death_callback(note_crash);
#endif
	signal(SIGSEGV, on_signal);
	signal(SIGBUS, on_signal);
	signal(SIGFPE, on_signal);
	signal(SIGABRT, on_signal);
	RUN(damage);
CHECK_MAIN_END
