/* Consistency check of a region.
 *
 * Walks every index entry, record and tree, marks the units each object
 * owns in private bitmaps and recomputes reference counts, then compares
 * with the region: leaked or doubly-owned space, wrong counts, holder
 * bits of hosts that are gone and malformed entries are each reported.
 * With live set, the unfinished work of hosts not yet reaped (their
 * chunks, claims and inserts) is taken to be in flight. */
#include <errno.h>
#include <stddef.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "alloc.h"
#include "content.h"
#include "crc32c.h"
#include "hash.h"
#include "layer.h"
#include "records.h"

struct refc {
	uint64_t rec;
	uint32_t refs;
};

struct fsck {
	struct daxfs *fs;
	int live;
	void (*report)(const char *, void *);
	void *arg;
	int problems;
	uint64_t *mark[2];	/* units owned by some object */
	bool busy[DFS_MAX_HOSTS];	/* hosts whose work is in flight */
	struct refc *refs;	/* content records and counted refs */
	size_t nrefs, caprefs;
};

__attribute__((format(printf, 2, 3)))
static void problem(struct fsck *f, const char *fmt, ...)
{
	char line[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	f->problems++;
	if (f->report)
		f->report(line, f->arg);
}

static void hex8(const uint8_t *d, char out[17])
{
	for (int i = 0; i < 8; i++)
		snprintf(out + 2 * i, 3, "%02x", d[i]);
}

/* Mark an object's units; report overlap with another object. */
static void own(struct fsck *f, int which, uint64_t off, uint64_t len,
		const char *what)
{
	struct area *a = area_of(f->fs, which);
	uint64_t u0, n;
	bool twice = false, unset = false;

	if (!len)
		return;
	if (!area_contains(a, off, len)) {
		problem(f, "%s at %#llx+%llu lies outside the %s area", what,
			(unsigned long long)off, (unsigned long long)len,
			which == AREA_META ? "metadata" : "data");
		return;
	}
	u0 = (off - a->g.base) >> a->g.unit_shift;
	n = (len + (1ULL << a->g.unit_shift) - 1) >> a->g.unit_shift;
	for (uint64_t u = u0; u < u0 + n; u++) {
		uint64_t bit = 1ULL << (u % 64);

		if (f->mark[which][u / 64] & bit)
			twice = true;
		f->mark[which][u / 64] |= bit;
		if (!(atomic_load_explicit(&a->bitmap[u / 64], memory_order_relaxed) & bit))
			unset = true;
	}
	if (twice)
		problem(f, "%s at %#llx: space owned twice", what, (unsigned long long)off);
	if (unset)
		problem(f, "%s at %#llx: in use but marked free", what,
			(unsigned long long)off);
}

static struct refc *refc_find(struct fsck *f, uint64_t rec)
{
	size_t lo = 0, hi = f->nrefs;

	while (lo < hi) {
		size_t mid = (lo + hi) / 2;

		if (f->refs[mid].rec == rec)
			return &f->refs[mid];
		if (f->refs[mid].rec < rec)
			lo = mid + 1;
		else
			hi = mid;
	}
	return NULL;
}

static int refc_cmp(const void *a, const void *b)
{
	uint64_t x = ((const struct refc *)a)->rec, y = ((const struct refc *)b)->rec;

	return x < y ? -1 : x > y;
}

static int check_content(struct daxfs *fs, struct dfs_hslot *s, void *arg)
{
	struct fsck *f = arg;
	uint64_t rec = atomic_load_explicit(&s->value, memory_order_relaxed);
	struct dfs_content *c = content_get(fs, rec);
	uint8_t key[32];
	char hx[17];
	uint64_t total = 0;

	hash_slot_key(s, key);
	hex8(key, hx);
	if (!c) {
		problem(f, "content %s: record %#llx is malformed", hx,
			(unsigned long long)rec);
		return 0;
	}
	if (memcmp(c->sha256, key, 32))
		problem(f, "content %s: record holds another digest", hx);
	if (DFS_RC_COUNT(atomic_load_explicit(&c->rc, memory_order_relaxed)) == 0)
		problem(f, "content %s: indexed with a zero count", hx);
	own(f, AREA_META, rec, content_rec_len(fs, c), "content record");
	for (uint32_t i = 0; i < c->nextents; i++) {
		own(f, AREA_DATA, c->ext[i].off,
		    alloc_round(fs, AREA_DATA, c->ext[i].len), "content extent");
		total += c->ext[i].len;
	}
	if (total != c->size)
		problem(f, "content %s: extents hold %llu bytes, size says %llu", hx,
			(unsigned long long)total, (unsigned long long)c->size);
	if (f->nrefs == f->caprefs) {
		size_t cap = f->caprefs ? f->caprefs * 2 : 1024;
		struct refc *p = realloc(f->refs, cap * sizeof(*p));

		if (!p)
			return -ENOMEM;
		f->refs = p;
		f->caprefs = cap;
	}
	f->refs[f->nrefs++] = (struct refc){ rec, 0 };
	return 0;
}

static const char *tname(struct dfs_tree *t, struct dfs_dirent *d)
{
	if ((uint64_t)d->name_off + d->name_len > t->strings_len)
		return NULL;
	return (const char *)t + t->strings_off + d->name_off;
}

/* Are the directory's names in strictly increasing byte order? */
static bool dir_sorted(struct dfs_tree *t, struct dfs_inode *dir)
{
	struct dfs_dirent *de = (struct dfs_dirent *)((uint8_t *)t + t->dirents_off);

	if (dir->u0 > t->ndirents || dir->u1 > t->ndirents - dir->u0)
		return true;	/* reported separately */
	for (uint64_t d = dir->u0 + 1; d < dir->u0 + dir->u1; d++) {
		const char *a = tname(t, &de[d - 1]), *b = tname(t, &de[d]);
		size_t al = de[d - 1].name_len, bl = de[d].name_len;
		int c;

		if (!a || !b)
			return false;
		c = memcmp(a, b, al < bl ? al : bl);
		if (c > 0 || (c == 0 && al >= bl))
			return false;
	}
	return true;
}

static void check_tree(struct fsck *f, struct dfs_layer *l, const char *hx)
{
	uint64_t toff = atomic_load_explicit(&l->tree, memory_order_acquire);
	struct dfs_tree *t = tree_get(f->fs, toff, l->tree_len);
	struct dfs_inode *in;
	struct dfs_dirent *de;
	uint32_t crc, zero;

	if (!t) {
		problem(f, "layer %s: tree at %#llx is malformed", hx,
			(unsigned long long)toff);
		return;
	}
	own(f, AREA_META, toff, l->tree_len, "layer tree");
	/* crc32c of the tree with its crc field as zero, without writing. */
	zero = 0;
	crc = crc32c(0, t, offsetof(struct dfs_tree, crc));
	crc = crc32c(crc, &zero, sizeof(zero));
	crc = crc32c(crc, (uint8_t *)t + offsetof(struct dfs_tree, crc) + 4,
		     l->tree_len - offsetof(struct dfs_tree, crc) - 4);
	if (crc != t->crc)
		problem(f, "layer %s: tree checksum mismatch", hx);
	if (t->serial != l->serial)
		problem(f, "layer %s: tree serial %llu, record says %llu", hx,
			(unsigned long long)t->serial, (unsigned long long)l->serial);
	in = (struct dfs_inode *)((uint8_t *)t + t->inodes_off);
	de = (struct dfs_dirent *)((uint8_t *)t + t->dirents_off);
	for (uint32_t i = 0; i < t->ninodes; i++) {
		if (S_ISDIR(in[i].mode) &&
		    (in[i].u0 > t->ndirents || in[i].u1 > t->ndirents - in[i].u0))
			problem(f, "layer %s: inode %u has bad directory entries", hx, i);
		if (S_ISDIR(in[i].mode) && !dir_sorted(t, &in[i]))
			problem(f, "layer %s: directory %u is not sorted", hx, i);
		if (S_ISREG(in[i].mode) && in[i].u0) {
			struct refc *r = refc_find(f, in[i].u0);

			if (!r)
				problem(f, "layer %s: inode %u names content %#llx, which is not indexed",
					hx, i, (unsigned long long)in[i].u0);
			else
				r->refs++;
		}
	}
	for (uint32_t d = 0; d < t->ndirents; d++)
		if (de[d].ino >= t->ninodes)
			problem(f, "layer %s: dirent %u names inode %u of %u", hx, d,
				de[d].ino, t->ninodes);
}

/* May slot's holder bits stand?  While it is attached (or being reaped),
 * and after reaping until they are cleared as stale: a reaped host's
 * containers may still run on its view. */
static bool holds_may_stand(struct fsck *f, unsigned slot)
{
	uint64_t w;

	if (slot >= f->fs->sb.max_hosts)
		return false;
	if (f->busy[slot])
		return true;
	w = atomic_load_explicit(&f->fs->hosts[slot].owner, memory_order_acquire);
	return DFS_OWNER_STATE(w) == DFS_HOST_CLEARING ||
	       (DFS_OWNER_STATE(w) == DFS_HOST_RETIRED &&
		!(DFS_OWNER_FLAGS(w) & DFS_OWNER_HOLDS_CLEARED));
}

static int check_layer(struct daxfs *fs, struct dfs_hslot *s, void *arg)
{
	struct fsck *f = arg;
	uint64_t rec = atomic_load_explicit(&s->value, memory_order_relaxed);
	struct dfs_layer *l = layer_get(fs, rec);
	uint8_t key[32];
	char hx[17];
	uint64_t w, holders;

	hash_slot_key(s, key);
	hex8(key, hx);
	if (!l) {
		problem(f, "layer %s: record %#llx is malformed", hx, (unsigned long long)rec);
		return 0;
	}
	own(f, AREA_META, rec, sizeof(*l), "layer record");
	if (memcmp(l->diff_id, key, 32))
		problem(f, "layer %s: record holds another diff_id", hx);
	w = atomic_load_explicit(&l->state, memory_order_acquire);
	switch (DFS_LW_STATE(w)) {
	case DFS_L_ABSENT:
	case DFS_L_FAILED:
		break;
	case DFS_L_UNPACKING:
		if (!(f->live && LW_CLAIM_SLOT(w) < DFS_MAX_HOSTS && f->busy[LW_CLAIM_SLOT(w)]))
			problem(f, "layer %s: unpacking by host slot %u, which is not attached",
				hx, LW_CLAIM_SLOT(w));
		return 0;
	case DFS_L_EVICTING:
		if (!f->live)
			problem(f, "layer %s: eviction never finished", hx);
		return 0;
	case DFS_L_READY:
		check_tree(f, l, hx);
		break;
	default:
		problem(f, "layer %s: unknown state %u", hx, DFS_LW_STATE(w));
		return 0;
	}
	holders = DFS_LW_HOLDERS(w);
	for (unsigned bit = 0; holders; bit++, holders >>= 1) {
		unsigned slot = bit % DFS_MAX_HOSTS;

		if ((holders & 1) && !holds_may_stand(f, slot))
			problem(f, "layer %s: held (%s) by host slot %u, which is gone",
				hx, bit < DFS_MAX_HOSTS ? "daemon" : "view", slot);
	}
	return 0;
}

static int check_record(struct daxfs *fs, struct dfs_hslot *s, void *arg)
{
	struct fsck *f = arg;
	uint32_t kind = (uint32_t)atomic_load_explicit(&s->kind, memory_order_relaxed);
	uint64_t rec = atomic_load_explicit(&s->value, memory_order_relaxed);
	uint8_t key[32], want[32];
	void *r;

	if (kind != DFS_KIND_CHAIN && kind != DFS_KIND_IMAGE && kind != DFS_KIND_ALIAS)
		return 0;
	r = record_get(fs, kind, rec);
	hash_slot_key(s, want);
	if (!r || record_key(fs, kind, rec, key) < 0 || memcmp(key, want, 32)) {
		problem(f, "record %#llx of kind %u is malformed or indexed under another key",
			(unsigned long long)rec, kind);
		return 0;
	}
	own(f, AREA_META, rec, kind == DFS_KIND_CHAIN ? sizeof(struct dfs_chain) :
	    kind == DFS_KIND_IMAGE ? sizeof(struct dfs_image) : sizeof(struct dfs_alias),
	    "record");
	if (kind == DFS_KIND_CHAIN && !layer_get(fs, ((struct dfs_chain *)r)->layer))
		problem(f, "chain record %#llx names no layer", (unsigned long long)rec);
	if (kind == DFS_KIND_ALIAS && !layer_get(fs, ((struct dfs_alias *)r)->layer))
		problem(f, "alias record %#llx names no layer", (unsigned long long)rec);
	return 0;
}

static void check_hash(struct fsck *f)
{
	struct daxfs *fs = f->fs;

	for (uint64_t i = 0; i < fs->sb.hash_slots; i++) {
		struct dfs_hslot *s = &fs->hash[i];
		uint64_t w = atomic_load_explicit(&s->word, memory_order_acquire);
		unsigned st = DFS_HWORD_STATE(w);
		uint64_t kind = atomic_load_explicit(&s->kind, memory_order_relaxed);
		uint64_t v;
		uint8_t key[32];

		if (st > DFS_H_TOMB) {
			problem(f, "hash slot %llu: bad state %u", (unsigned long long)i, st);
			continue;
		}
		if (st == DFS_H_CLAIMED || st == DFS_H_KEYED) {
			if (!f->live || DFS_HWORD_SLOT(w) >= DFS_MAX_HOSTS ||
			    !f->busy[DFS_HWORD_SLOT(w)])
				problem(f, "hash slot %llu: unfinished insert of host slot %u",
					(unsigned long long)i, DFS_HWORD_SLOT(w));
			continue;
		}
		if (st != DFS_H_VALID)
			continue;
		if (kind < DFS_KIND_CONTENT || (kind > DFS_KIND_ALIAS && kind != DFS_KIND_TEST)) {
			problem(f, "hash slot %llu: unknown kind %llu", (unsigned long long)i,
				(unsigned long long)kind);
			continue;
		}
		hash_slot_key(s, key);
		if (hash_lookup(fs, (uint32_t)kind, key, &v) < 0 ||
		    v != atomic_load_explicit(&s->value, memory_order_relaxed))
			problem(f, "hash slot %llu: key is indexed twice or unreachable",
				(unsigned long long)i);
	}
}

static void check_space(struct fsck *f, int which)
{
	struct daxfs *fs = f->fs;
	struct area *a = area_of(fs, which);
	uint64_t leaked = 0, first = 0;

	for (uint64_t c = 0; c < a->g.nchunks; c++) {
		uint64_t ow = atomic_load_explicit(&a->owners[c], memory_order_relaxed);
		unsigned s1 = DFS_CHUNK_SLOT1(ow);

		if (f->live && DFS_CHUNK_STATE(ow) == DFS_CHUNK_OWNED && s1 &&
		    s1 <= DFS_MAX_HOSTS && f->busy[s1 - 1])
			continue;	/* in flight: its owner may be mid-write */
		for (uint64_t k = 0; k < a->words_per_chunk; k++) {
			uint64_t i = c * a->words_per_chunk + k;
			uint64_t extra = atomic_load_explicit(&a->bitmap[i],
					memory_order_relaxed) & ~f->mark[which][i];

			if (extra && !leaked)
				first = a->g.base + (((i * 64) + (uint64_t)__builtin_ctzll(extra))
						     << a->g.unit_shift);
			leaked += (uint64_t)__builtin_popcountll(extra);
		}
	}
	if (leaked)
		problem(f, "%llu %s units (%llu bytes) are allocated but owned by nothing, first at %#llx",
			(unsigned long long)leaked, which == AREA_META ? "metadata" : "data",
			(unsigned long long)(leaked << a->g.unit_shift),
			(unsigned long long)first);
}

static void check_hosts(struct fsck *f)
{
	struct daxfs *fs = f->fs;

	for (uint32_t s = 0; s < fs->sb.max_hosts; s++) {
		uint64_t w = atomic_load_explicit(&fs->hosts[s].owner, memory_order_acquire);
		unsigned st = DFS_OWNER_STATE(w);

		if (st > DFS_HOST_CLEARING)
			problem(f, "host slot %u: bad state %u", s, st);
		/* Work of a host that is attached, or dead but not yet
		 * reaped, is in flight. */
		f->busy[s] = st == DFS_HOST_LIVE || st == DFS_HOST_REAPING;
		if (!f->live && f->busy[s])
			problem(f, "host slot %u (incarnation %u) is %s; run fsck live or reap it",
				s, DFS_OWNER_INC(w), st == DFS_HOST_LIVE ? "attached" : "being reaped");
	}
}

static void check_refcounts(struct fsck *f)
{
	for (size_t i = 0; i < f->nrefs; i++) {
		struct dfs_content *c = content_get(f->fs, f->refs[i].rec);
		uint32_t have = DFS_RC_COUNT(atomic_load_explicit(&c->rc, memory_order_relaxed));
		uint32_t want = f->refs[i].refs;

		/* Live: unpublished layers may hold more references. */
		if (have < want || (!f->live && have != want))
			problem(f, "content record %#llx: count %u, but %u layer inodes use it",
				(unsigned long long)f->refs[i].rec, have, want);
	}
}

int daxfs_fsck(struct daxfs *fs, int live,
	       void (*report)(const char *line, void *arg), void *arg)
{
	struct fsck f = { .fs = fs, .live = live, .report = report, .arg = arg };
	int rc = 0;

	for (int w = 0; w < 2; w++) {
		struct area *a = area_of(fs, w);

		f.mark[w] = calloc(a->g.nchunks * a->words_per_chunk + 1, sizeof(uint64_t));
		if (!f.mark[w]) {
			rc = -ENOMEM;
			goto out;
		}
	}
	daxfs_read_enter(fs);
	check_hosts(&f);
	check_hash(&f);
	rc = hash_foreach(fs, DFS_KIND_CONTENT, check_content, &f);
	if (rc == 0) {
		if (f.nrefs)	/* refs is NULL without content records */
			qsort(f.refs, f.nrefs, sizeof(*f.refs), refc_cmp);
		hash_foreach(fs, DFS_KIND_LAYER, check_layer, &f);
		hash_foreach(fs, 0, check_record, &f);
		check_refcounts(&f);
		check_space(&f, AREA_META);
		check_space(&f, AREA_DATA);
	}
	daxfs_read_leave(fs);
	if (rc == 0)
		rc = f.problems;
out:
	free(f.mark[0]);
	free(f.mark[1]);
	free(f.refs);
	return rc;
}
