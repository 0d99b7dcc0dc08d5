/* Making, validating, mapping and unmapping a region. */
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "crc32c.h"
#include "devdax.h"
#include "alloc.h"
#include "host.h"
#include "region.h"

#define MIN_REGION (16ULL << 20)

_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
	       "the region format is little-endian; big-endian hosts need byte swapping");

static uint64_t align_up(uint64_t v, uint64_t a)
{
	return (v + a - 1) & ~(a - 1);
}

static bool is_pow2(uint64_t v)
{
	return v && !(v & (v - 1));
}

int daxfs_parse_size(const char *s, uint64_t *out)
{
	char *end;
	unsigned long long v;
	unsigned shift = 0;

	/* strtoull would take "-1" as 2^64 - 1. */
	if (strchr(s, '-'))
		return -EINVAL;
	errno = 0;
	v = strtoull(s, &end, 0);
	if (errno || end == s)
		return -EINVAL;
	switch (*end) {
	case 'k': case 'K': shift = 10; break;
	case 'm': case 'M': shift = 20; break;
	case 'g': case 'G': shift = 30; break;
	case 't': case 'T': shift = 40; break;
	default: break;
	}
	/* A unit, then optionally "iB" or "B"; or only "B". */
	if (shift)
		end++;
	if (shift && end[0] == 'i' && end[1] == 'B')
		end += 2;
	else if (*end == 'B')
		end++;
	if (*end || v > (UINT64_MAX >> shift))
		return -EINVAL;
	*out = (uint64_t)v << shift;
	return 0;
}

int daxfs_parse_region(const char *spec, char *path, size_t pathlen,
		       uint64_t *offset, struct daxfs_err *err)
{
	const char *at = strrchr(spec, '@');
	size_t n = at ? (size_t)(at - spec) : strlen(spec);

	*offset = 0;
	if (n == 0 || n >= pathlen)
		return daxfs_err_set(err, -EINVAL, "bad region '%s'", spec);
	memcpy(path, spec, n);
	path[n] = 0;
	if (at && daxfs_parse_size(at + 1, offset) < 0)
		return daxfs_err_set(err, -EINVAL,
				     "bad offset in region '%s'", spec);
	if (*offset % DFS_BLOCK)
		return daxfs_err_set(err, -EINVAL,
				     "region offset %llu is not a multiple of %u",
				     (unsigned long long)*offset, DFS_BLOCK);
	return 0;
}

/* Lay out one allocation area of `bytes` at `off`; returns the end. */
static uint64_t area_layout(struct dfs_area_geom *g, uint64_t off,
			    uint64_t bytes, unsigned unit_shift,
			    unsigned chunk_shift)
{
	uint64_t chunk = 1ULL << chunk_shift;
	uint64_t per_chunk_meta = 8 + (chunk >> unit_shift) / 8;
	uint64_t n = bytes / (chunk + per_chunk_meta);

	g->unit_shift = unit_shift;
	g->chunk_shift = chunk_shift;
	g->nchunks = n;
	g->chunk_table = off;
	g->bitmap = align_up(off + n * 8, DFS_BLOCK);
	g->base = align_up(g->bitmap + n * ((chunk >> unit_shift) / 8),
			   DFS_BLOCK);
	return g->base + (n << chunk_shift);
}

static int geometry(struct dfs_super *sb, const struct daxfs_mkfs_opts *o,
		    struct daxfs_err *err)
{
	uint64_t off, left, meta_bytes, jbytes;
	uint32_t pct = o->meta_percent ? o->meta_percent : 12;

	sb->max_hosts = o->max_hosts ? o->max_hosts : 8;
	if (sb->max_hosts > DFS_MAX_HOSTS)
		return daxfs_err_set(err, -EINVAL,
				     "--max-hosts %u: at most %u fit in a layer's holder bits",
				     sb->max_hosts, DFS_MAX_HOSTS);
	sb->journal_entries = o->journal_entries;
	if (!sb->journal_entries) {
		/* A layer being built holds about one entry per file until
		 * it is published: give the journals ~3% of the region,
		 * between 1024 and 256Ki entries per writer context. */
		uint64_t per = sb->region_size /
			       ((uint64_t)sb->max_hosts * DFS_CTX_PER_HOST * 32 * 32);

		sb->journal_entries = 1024;
		while (sb->journal_entries < per && sb->journal_entries < (1u << 18))
			sb->journal_entries <<= 1;
	}
	if (!is_pow2(sb->journal_entries) || sb->journal_entries < 64)
		return daxfs_err_set(err, -EINVAL,
				     "journal entries must be a power of two >= 64");
	sb->shared_off = DFS_BLOCK;
	sb->hosts_off = 2 * DFS_BLOCK;
	off = align_up(sb->hosts_off + sb->max_hosts * sizeof(struct dfs_host),
		       DFS_BLOCK);
	sb->journals_off = off;
	jbytes = (uint64_t)sb->max_hosts * DFS_CTX_PER_HOST *
		 sb->journal_entries * sizeof(struct dfs_jentry);
	off = align_up(off + jbytes, DFS_BLOCK);
	sb->hash_slots = o->hash_slots;
	if (!sb->hash_slots) {
		sb->hash_slots = 1024;
		while (sb->hash_slots * 8192 < sb->region_size)
			sb->hash_slots <<= 1;
	}
	if (!is_pow2(sb->hash_slots))
		return daxfs_err_set(err, -EINVAL,
				     "hash slots must be a power of two");
	sb->hash_off = off;
	off = align_up(off + sb->hash_slots * sizeof(struct dfs_hslot),
		       DFS_BLOCK);
	if (off + (8ULL << 20) > sb->region_size)
		return daxfs_err_set(err, -ENOSPC,
				     "region of %llu bytes is too small for its tables",
				     (unsigned long long)sb->region_size);
	left = sb->region_size - off;
	meta_bytes = left / 100 * pct;
	off = area_layout(&sb->meta, off, meta_bytes, 6, 20);
	off = align_up(off, DFS_BLOCK);
	area_layout(&sb->data, off, sb->region_size - off, 9, 21);
	if (!sb->meta.nchunks || !sb->data.nchunks)
		return daxfs_err_set(err, -ENOSPC, "region too small");
	return 0;
}

static void region_format(void *base, struct dfs_super *tmpl);

static void super_seal(struct dfs_super *sb)
{
	sb->crc = 0;
	sb->crc = crc32c(0, sb, sizeof(*sb));
}

static int area_check(const struct dfs_area_geom *g, const char *what,
		      uint64_t size, struct daxfs_err *err)
{
	uint64_t units, bitmap_end, end;

	if (g->unit_shift < 6 || g->unit_shift > 16 || g->chunk_shift < 16 ||
	    g->chunk_shift > 30 || g->unit_shift + 9 > g->chunk_shift)
		return daxfs_err_set(err, -EUCLEAN,
				     "impossible %s unit/chunk sizes", what);
	units = 1ULL << (g->chunk_shift - g->unit_shift);
	if (g->nchunks == 0 || g->nchunks > (size >> g->chunk_shift) ||
	    g->chunk_table % 8 || g->bitmap % 8 ||
	    g->chunk_table + g->nchunks * 8 > g->bitmap ||
	    g->bitmap > size)
		return daxfs_err_set(err, -EUCLEAN, "impossible %s area geometry",
				     what);
	bitmap_end = g->bitmap + g->nchunks * (units / 8);
	end = g->base + (g->nchunks << g->chunk_shift);
	if (bitmap_end > g->base || g->base > size || end > size ||
	    end < g->base)
		return daxfs_err_set(err, -EUCLEAN,
				     "%s area does not fit the region", what);
	return 0;
}

/* Validate in a fixed order: magic, version, geometry, features, crc. */
int super_check(const struct dfs_super *sb, uint64_t avail,
		struct daxfs_err *err)
{
	struct dfs_super c;
	uint64_t size = sb->region_size, jbytes;
	int rc;

	if (sb->magic != DFS_MAGIC)
		return daxfs_err_set(err, -EUCLEAN,
				     "not a DaxFS region (bad magic %016llx)",
				     (unsigned long long)sb->magic);
	if (sb->version != DFS_VERSION || sb->sb_size != sizeof(*sb))
		return daxfs_err_set(err, -EUCLEAN,
				     "unsupported format version %u (superblock of %u bytes)",
				     sb->version, sb->sb_size);
	if (size < MIN_REGION || size > avail || size % DFS_BLOCK)
		return daxfs_err_set(err, -EUCLEAN,
				     "impossible region size %llu (mapping has %llu)",
				     (unsigned long long)size,
				     (unsigned long long)avail);
	if (!sb->max_hosts || sb->max_hosts > DFS_MAX_HOSTS ||
	    !is_pow2(sb->journal_entries) || sb->journal_entries < 64 ||
	    !is_pow2(sb->hash_slots) || sb->hash_slots > size / 64)
		return daxfs_err_set(err, -EUCLEAN, "impossible table sizes");
	jbytes = (uint64_t)sb->max_hosts * DFS_CTX_PER_HOST *
		 sb->journal_entries * sizeof(struct dfs_jentry);
	if (sb->shared_off != DFS_BLOCK || sb->hosts_off != 2 * DFS_BLOCK ||
	    sb->journals_off < sb->hosts_off + sb->max_hosts * sizeof(struct dfs_host) ||
	    sb->journals_off > size || jbytes > size - sb->journals_off ||
	    sb->hash_off < sb->journals_off + jbytes || sb->hash_off > size ||
	    sb->hash_slots * sizeof(struct dfs_hslot) > size - sb->hash_off ||
	    sb->meta.chunk_table < sb->hash_off + sb->hash_slots * sizeof(struct dfs_hslot))
		return daxfs_err_set(err, -EUCLEAN, "impossible table layout");
	rc = area_check(&sb->meta, "metadata", size, err);
	if (rc < 0)
		return rc;
	rc = area_check(&sb->data, "data", size, err);
	if (rc < 0)
		return rc;
	/* Only now is the metadata chunk shift known to be sane. */
	if (sb->data.chunk_table < sb->meta.base + (sb->meta.nchunks << sb->meta.chunk_shift))
		return daxfs_err_set(err, -EUCLEAN, "impossible table layout");
	if (sb->incompat & ~DFS_INCOMPAT_SUPPORTED)
		return daxfs_err_set(err, -EOPNOTSUPP,
				     "region uses unknown incompatible features %#llx",
				     (unsigned long long)(sb->incompat & ~DFS_INCOMPAT_SUPPORTED));
	c = *sb;
	c.crc = 0;
	if (crc32c(0, &c, sizeof(c)) != sb->crc)
		return daxfs_err_set(err, -EUCLEAN, "superblock checksum mismatch");
	return 0;
}

static int file_size_of(int fd, const char *path, uint64_t *size,
			uint64_t *align, struct daxfs_err *err)
{
	struct stat st;
	int rc;

	*align = DFS_BLOCK;
	if (fstat(fd, &st) < 0)
		return daxfs_err_set(err, -errno, "stat %s: %s", path,
				     strerror(errno));
	if (S_ISREG(st.st_mode)) {
		*size = (uint64_t)st.st_size;
		return 0;
	}
	if (S_ISCHR(st.st_mode)) {
		rc = devdax_query(path, size, align);
		if (rc < 0)
			return daxfs_err_set(err, rc,
					     "%s: not a usable device-dax device (%s); "
					     "this kernel may lack the device-dax driver",
					     path, strerror(-rc));
		return 0;
	}
	return daxfs_err_set(err, -EINVAL,
			     "%s: neither a regular file nor a device-dax device",
			     path);
}

int daxfs_mkfs(const struct daxfs_mkfs_opts *o, struct daxfs_err *err)
{
	struct dfs_super *sb = NULL;
	uint64_t fsize = 0, align = DFS_BLOCK;
	void *map = MAP_FAILED;
	size_t maplen = 0;
	int fd, rc;

	fd = open(o->path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0)
		return daxfs_err_set(err, -errno, "open %s: %s", o->path,
				     strerror(errno));
	rc = file_size_of(fd, o->path, &fsize, &align, err);
	if (rc < 0)
		goto out;
	if (o->offset % align) {
		rc = daxfs_err_set(err, -EINVAL, "offset must be a multiple of %llu",
				   (unsigned long long)align);
		goto out;
	}
	sb = calloc(1, sizeof(*sb));
	if (!sb) {
		rc = -ENOMEM;
		goto out;
	}
	sb->region_size = o->size ? o->size : (fsize > o->offset ? fsize - o->offset : 0);
	sb->region_size &= ~(uint64_t)(DFS_BLOCK - 1);
	if (sb->region_size < MIN_REGION) {
		rc = daxfs_err_set(err, -EINVAL,
				   "region size %llu is below the minimum of 16 MiB",
				   (unsigned long long)sb->region_size);
		goto out;
	}
	rc = geometry(sb, o, err);
	if (rc < 0)
		goto out;
	if (fsize < o->offset + sb->region_size) {
		struct stat st;

		if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
			rc = daxfs_err_set(err, -ENOSPC, "%s is smaller than the region",
					   o->path);
			goto out;
		}
		/* Reserve the memory now: a sparse tmpfs file that cannot
		 * grow later raises SIGBUS on a store, not ENOSPC. */
		rc = posix_fallocate(fd, 0, (off_t)(o->offset + sb->region_size));
		if (rc) {
			rc = daxfs_err_set(err, -rc, "allocate %llu bytes for %s: %s",
					   (unsigned long long)(o->offset + sb->region_size),
					   o->path, strerror(rc));
			goto out;
		}
	}
	maplen = (size_t)(o->offset + sb->region_size);
	map = mmap(NULL, maplen, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (map == MAP_FAILED) {
		rc = daxfs_err_set(err, -errno, "mmap %s: %s", o->path,
				   strerror(errno));
		goto out;
	}
	region_format((uint8_t *)map + o->offset, sb);
	if (msync(map, maplen, MS_SYNC) < 0)
		rc = daxfs_err_set(err, -errno, "msync: %s", strerror(errno));
out:
	if (map != MAP_FAILED)
		munmap(map, maplen);
	free(sb);
	close(fd);
	return rc;
}

/* Write a fresh region described by *tmpl (geometry already computed)
 * at base.  The superblock is written last so a torn mkfs is refused. */
static void region_format(void *base, struct dfs_super *tmpl)
{
	struct dfs_super *sb = base;
	uint8_t *b = base;
	int fd;

	memset(b, 0, tmpl->hash_off + tmpl->hash_slots * sizeof(struct dfs_hslot));
	memset(b + tmpl->meta.chunk_table, 0, tmpl->meta.base - tmpl->meta.chunk_table);
	memset(b + tmpl->data.chunk_table, 0, tmpl->data.base - tmpl->data.chunk_table);
	tmpl->magic = DFS_MAGIC;
	tmpl->version = DFS_VERSION;
	tmpl->sb_size = sizeof(*tmpl);
	tmpl->compat = 0;
	tmpl->incompat = 0;
	tmpl->mkfs_time = (uint64_t)time(NULL);
	fd = open("/proc/sys/kernel/random/uuid", O_RDONLY | O_CLOEXEC);
	if (fd >= 0) {
		char s[40] = "";
		ssize_t n = read(fd, s, 36);

		close(fd);
		for (int i = 0, j = 0; n == 36 && i < 36 && j < 16; i++) {
			if (s[i] == '-')
				continue;
			sscanf(s + i, "%2hhx", &tmpl->uuid[j++]);
			i++;
		}
	}
	/* Serial 0 and 1 are never handed out; the first layer gets 2. */
	atomic_store_explicit(&((struct dfs_shared *)(b + tmpl->shared_off))->next_layer_serial,
			      2, memory_order_relaxed);
	atomic_store_explicit(&((struct dfs_shared *)(b + tmpl->shared_off))->global_epoch,
			      1, memory_order_relaxed);
	super_seal(tmpl);
	memcpy(sb, tmpl, sizeof(*sb));
}

int daxfs_mkfs_buffer(void *buf, size_t len, const struct daxfs_mkfs_opts *o,
		      struct daxfs_err *err)
{
	struct dfs_super sb;
	int rc;

	memset(&sb, 0, sizeof(sb));
	sb.region_size = (o->size && o->size < len ? o->size : len) &
			 ~(uint64_t)(DFS_BLOCK - 1);
	if (sb.region_size < MIN_REGION)
		return daxfs_err_set(err, -EINVAL, "region below 16 MiB");
	rc = geometry(&sb, o, err);
	if (rc < 0)
		return rc;
	region_format(buf, &sb);
	return 0;
}

static void area_init(struct daxfs *fs, struct area *a,
		      const struct dfs_area_geom *g)
{
	a->g = *g;
	a->units_per_chunk = 1ULL << (g->chunk_shift - g->unit_shift);
	a->words_per_chunk = a->units_per_chunk / 64;
	a->owners = (_Atomic uint64_t *)(fs->base + g->chunk_table);
	a->bitmap = (_Atomic uint64_t *)(fs->base + g->bitmap);
}

static int attach_base(struct daxfs *fs, const struct daxfs_open_opts *o,
		       struct daxfs_err *err)
{
	struct dfs_super *sb = (struct dfs_super *)fs->base;
	int rc;

	if (fs->size < sizeof(struct dfs_super))
		return daxfs_err_set(err, -EUCLEAN,
				     "region of %llu bytes cannot hold a superblock",
				     (unsigned long long)fs->size);
	memcpy(&fs->sb, sb, sizeof(fs->sb));
	rc = super_check(&fs->sb, fs->size, err);
	if (rc < 0)
		return rc;
	fs->size = fs->sb.region_size;
	fs->lease_ms = o && o->lease_ms ? o->lease_ms : 10000;
	fs->grace_ms = o && o->grace_ms ? o->grace_ms : 3 * fs->lease_ms;
	fs->readonly = o ? o->readonly : 0;
	fs->shared = (struct dfs_shared *)(fs->base + fs->sb.shared_off);
	fs->hosts = (struct dfs_host *)(fs->base + fs->sb.hosts_off);
	fs->hash = (struct dfs_hslot *)(fs->base + fs->sb.hash_off);
	fs->journals = (struct dfs_jentry *)(fs->base + fs->sb.journals_off);
	area_init(fs, &fs->meta, &fs->sb.meta);
	area_init(fs, &fs->data, &fs->sb.data);
	fs->slot = -1;
	fs->proc = -1;
	return 0;
}

static struct daxfs *fs_alloc(void)
{
	struct daxfs *fs = calloc(1, sizeof(*fs));

	if (!fs)
		return NULL;
	fs->fd = -1;
	fs->slot = -1;
	pthread_mutex_init(&fs->lock, NULL);
	return fs;
}

static void fs_free(struct daxfs *fs)
{
	alloc_state_free(fs);
	holds_free(fs);
	if (fs->owns_map && fs->map)
		munmap(fs->map, fs->maplen);
	if (fs->fd >= 0)
		close(fs->fd);
	pthread_mutex_destroy(&fs->lock);
	free(fs);
}

int daxfs_open(const struct daxfs_open_opts *o, struct daxfs **out,
	       struct daxfs_err *err)
{
	uint64_t fsize, align, want;
	struct daxfs *fs;
	int prot, rc;

	fs = fs_alloc();
	if (!fs)
		return daxfs_err_set(err, -ENOMEM, "out of memory");
	fs->fd = open(o->path, (o->readonly ? O_RDONLY : O_RDWR) | O_CLOEXEC);
	if (fs->fd < 0) {
		rc = daxfs_err_set(err, -errno, "open %s: %s", o->path,
				   strerror(errno));
		goto fail;
	}
	rc = file_size_of(fs->fd, o->path, &fsize, &align, err);
	if (rc < 0)
		goto fail;
	if (o->offset % align || o->offset >= fsize) {
		rc = daxfs_err_set(err, -EINVAL,
				   "%s: offset %llu is past the end or not %llu-aligned",
				   o->path, (unsigned long long)o->offset,
				   (unsigned long long)align);
		goto fail;
	}
	want = o->size ? o->size : fsize - o->offset;
	if (want > fsize - o->offset)
		want = fsize - o->offset;
	fs->maplen = (size_t)(o->offset + want);
	prot = PROT_READ | (o->readonly ? 0 : PROT_WRITE);
	fs->map = mmap(NULL, fs->maplen, prot, MAP_SHARED, fs->fd, 0);
	if (fs->map == MAP_FAILED) {
		fs->map = NULL;
		rc = daxfs_err_set(err, -errno, "mmap %s: %s", o->path,
				   strerror(errno));
		goto fail;
	}
	fs->owns_map = true;
	fs->base = (uint8_t *)fs->map + o->offset;
	fs->size = want;
	rc = attach_base(fs, o, err);
	if (rc < 0) {
		daxfs_err_prefix(err, "%s", o->path);
		goto fail;
	}
	*out = fs;
	return 0;
fail:
	fs_free(fs);
	return rc;
}

int daxfs_open_buffer(void *buf, size_t len, const struct daxfs_open_opts *o,
		      struct daxfs **out, struct daxfs_err *err)
{
	struct daxfs *fs;
	int rc;

	if ((uintptr_t)buf % 8)
		return daxfs_err_set(err, -EINVAL, "buffer not 8-byte aligned");
	fs = fs_alloc();
	if (!fs)
		return daxfs_err_set(err, -ENOMEM, "out of memory");
	fs->base = buf;
	fs->size = len;
	rc = attach_base(fs, o, err);
	if (rc < 0) {
		fs_free(fs);
		return rc;
	}
	*out = fs;
	return 0;
}

void daxfs_abandon(struct daxfs *fs)
{
	if (!fs)
		return;
	host_stop_heartbeat(fs);
	fs_free(fs);
}

void daxfs_close(struct daxfs *fs)
{
	if (!fs)
		return;
	host_detach(fs);
	fs_free(fs);
}

int daxfs_list_devices(struct daxfs_device *out, int max)
{
	struct devdax_info d[64];
	int n = devdax_list(d, 64);

	if (n < 0)
		return n;
	for (int i = 0; i < n && i < 64 && i < max; i++) {
		memcpy(out[i].path, d[i].path, sizeof(out[i].path));
		out[i].size = d[i].size;
		out[i].align = d[i].align;
		memcpy(out[i].region, d[i].region, sizeof(out[i].region));
	}
	return n;
}
