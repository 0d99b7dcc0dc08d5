/* libdaxfs: the DaxFS shared region.
 *
 * A region is a byte range (a file under /dev/shm, a file@offset, a
 * device-dax device or a memory buffer) that several hosts map at the same
 * time.  Hosts coordinate only through compare-and-swap on the region.
 *
 * Conventions: functions return 0 (or a count) on success and a negative
 * errno on failure.  Where a message helps, it is written into the
 * caller's struct daxfs_err (which may be NULL); callers add context and
 * print it once, at the top.  The library never prints and never exits. */
#ifndef DAXFS_H
#define DAXFS_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define DAXFS_VERSION_STRING "0.1.0"

struct daxfs_err {
	int code;		/* positive errno, 0 = no error */
	char msg[512];
};

__attribute__((format(printf, 3, 4)))
int daxfs_err_set(struct daxfs_err *err, int neg_errno, const char *fmt, ...);
/* Prefix the message already in err with "context: ". Returns -err->code. */
__attribute__((format(printf, 2, 3)))
int daxfs_err_prefix(struct daxfs_err *err, const char *fmt, ...);

/* ---- making and opening a region ---- */

struct daxfs_mkfs_opts {
	const char *path;	/* file, FILE@OFFSET is parsed by callers */
	uint64_t offset;	/* region start inside the file */
	uint64_t size;		/* region bytes; 0 = rest of an existing file */
	uint32_t max_hosts;	/* default 8, at most 28 */
	uint32_t journal_entries; /* per writer context; default 16384 */
	uint64_t hash_slots;	/* default: from size */
	uint32_t meta_percent;	/* share of space for metadata; default 12 */
};

int daxfs_mkfs(const struct daxfs_mkfs_opts *o, struct daxfs_err *err);
/* Format a region in a memory buffer of len bytes (o->path unused). */
int daxfs_mkfs_buffer(void *buf, size_t len, const struct daxfs_mkfs_opts *o,
		      struct daxfs_err *err);

struct daxfs;

struct daxfs_open_opts {
	const char *path;
	uint64_t offset;
	uint64_t size;		/* 0 = as recorded in the superblock */
	int readonly;
	uint32_t lease_ms;	/* liveness lease; default 10000 */
	uint32_t grace_ms;	/* extra time before a dead host's space is reused */
};

int daxfs_open(const struct daxfs_open_opts *o, struct daxfs **out,
	       struct daxfs_err *err);
/* Attach a region held in memory (tests, fuzzers).  buf must stay valid
 * and 8-byte aligned until daxfs_close. */
int daxfs_open_buffer(void *buf, size_t len, const struct daxfs_open_opts *o,
		      struct daxfs **out, struct daxfs_err *err);
/* Detach cleanly (retires the host slot if this was its last process),
 * then unmap.  Safe on NULL. */
void daxfs_close(struct daxfs *fs);
/* Unmap without touching the region: what a crash leaves behind. */
void daxfs_abandon(struct daxfs *fs);

/* Device-dax devices (/dev/daxX.Y) found through libdaxctl. */
struct daxfs_device {
	char path[64];
	uint64_t size;
	uint64_t align;		/* mappings must be aligned to this */
	char region[32];
};
/* Fills up to max entries; returns how many exist (0 without a
 * device-dax driver) or -errno. */
int daxfs_list_devices(struct daxfs_device *out, int max);

/* Parse "PATH" or "PATH@OFFSET" (OFFSET with optional K/M/G suffix). */
int daxfs_parse_region(const char *spec, char *path, size_t pathlen,
		       uint64_t *offset, struct daxfs_err *err);
int daxfs_parse_size(const char *s, uint64_t *out);

/* ---- hosts ---- */

enum daxfs_proc_kind {
	DAXFS_PROC_DAEMON = 1,
	DAXFS_PROC_VIEW = 2,
	DAXFS_PROC_TOOL = 3,
};

struct daxfs_host_opts {
	uint8_t uuid[16];	/* the host's identity */
	const char *name;	/* label */
	enum daxfs_proc_kind kind;
	/* A DAEMON attach claims the slot as a new incarnation (refused while
	 * the slot's heartbeat moves); other kinds join the live incarnation. */
};

int daxfs_host_attach(struct daxfs *fs, const struct daxfs_host_opts *o,
		      struct daxfs_err *err);
/* Bump this process's heartbeat; call more often than lease_ms / 2. */
void daxfs_heartbeat(struct daxfs *fs);
/* Start/stop a thread that heartbeats every lease_ms / 4, at most
 * 200 ms apart. */
int daxfs_heartbeat_start(struct daxfs *fs);
void daxfs_heartbeat_stop(struct daxfs *fs);
/* 0 while this process's incarnation still owns its slot, -ESTALE once
 * it was reaped (then stop writing). */
int daxfs_host_check(struct daxfs *fs);
int daxfs_host_slot(const struct daxfs *fs);
/* For a non-daemon process (the FUSE view): follow the host to the
 * daemon's new incarnation after a daemon restart, and set our holder
 * bits again.  0 nothing to do, 1 rejoined, -EAGAIN no daemon attached. */
int daxfs_host_rejoin(struct daxfs *fs);
uint32_t daxfs_host_incarnation(const struct daxfs *fs);

/* Load (or create) the host UUID kept in DIR/host-uuid. */
int daxfs_host_uuid_load(const char *dir, uint8_t uuid[16],
			 struct daxfs_err *err);

enum daxfs_liveness {
	DAXFS_HOST_UNUSED = 0,
	DAXFS_HOST_ALIVE = 1,	/* heartbeat moved within the lease */
	DAXFS_HOST_SUSPECT = 2,	/* not seen moving yet; still in its lease */
	DAXFS_HOST_DEAD = 3,	/* heartbeat stalled for the lease */
	DAXFS_HOST_REAPING = 4,
	DAXFS_HOST_GONE = 5,	/* detached or reaped */
};

struct daxfs_host_info {
	int slot;
	uint8_t uuid[16];
	char name[65];
	char version[33];
	uint32_t incarnation;
	enum daxfs_liveness liveness;
	int nprocs;
	/* How long ago, on this process's monotonic clock, it saw the
	 * host's heartbeat move (or first sampled it); 0 for itself. */
	uint64_t heartbeat_age_ms;
};

/* Sample every host's heartbeats; liveness is judged on this process's
 * monotonic clock across calls (the first call sees live hosts as
 * SUSPECT until their heartbeat moves or the lease runs out). */
int daxfs_hosts_observe(struct daxfs *fs, struct daxfs_host_info *out,
			int max);
/* Reap every host observed DEAD (and resume reaping abandoned by a dead
 * reaper).  Returns the number of hosts reaped. */
int daxfs_reap_dead(struct daxfs *fs, struct daxfs_err *err);
/* Give back the chunks of this host's idle writer contexts that hold no
 * live unit (units others freed there can serve no one else while we own
 * them); a daemon calls it every lease / 4 or so.  Returns how many
 * chunks were released. */
int daxfs_alloc_trim(struct daxfs *fs);

/* ---- reading: epochs ---- */

/* Bracket any use of region offsets that no holder bit protects. */
void daxfs_read_enter(struct daxfs *fs);
void daxfs_read_leave(struct daxfs *fs);

/* ---- layers ---- */

struct daxfs_layer_builder;
struct daxfs_layer;

struct daxfs_entry {
	const char *path;	/* as in the tar; normalised by the builder */
	uint32_t mode;		/* S_IFMT | permissions */
	uint32_t uid, gid;
	int64_t mtime_sec;
	uint32_t mtime_nsec;
	uint32_t rdev_major, rdev_minor;
	uint64_t size;		/* regular files */
	const char *link;	/* symlink target, or hardlink target path */
	int hardlink;		/* link names an earlier entry of the layer */
	int whiteout;		/* the OCI whiteout of path */
	int opaque;		/* path is a directory marked opaque */
	size_t nxattrs;
	const char *const *xattr_names;
	const void *const *xattr_values;
	const size_t *xattr_lens;
};

/* Claim the layer DIFF_ID (ABSENT -> UNPACKING).  -EEXIST if it is READY,
 * -EBUSY if another host is unpacking it (see daxfs_layer_claimant). */
int daxfs_layer_build(struct daxfs *fs, const uint8_t diff_id[32],
		      struct daxfs_layer_builder **out, struct daxfs_err *err);
/* Add one tar entry (regular files: then write size bytes with
 * daxfs_builder_write; the entry ends with the next add or publish). */
int daxfs_builder_add(struct daxfs_layer_builder *b,
		      const struct daxfs_entry *e, struct daxfs_err *err);
int daxfs_builder_write(struct daxfs_layer_builder *b, const void *buf,
			size_t len, struct daxfs_err *err);
/* Record where the layer came from (its blob digest and size). */
void daxfs_builder_set_source(struct daxfs_layer_builder *b,
			      const uint8_t digest[32], uint64_t blob_bytes);
/* Write the tree and publish the layer READY with one CAS; on failure the
 * builder stays for daxfs_builder_abort. */
int daxfs_builder_publish(struct daxfs_layer_builder *b, uint64_t *serial,
			  struct daxfs_err *err);
/* Roll back everything the builder did and free it (safe on NULL). */
void daxfs_builder_abort(struct daxfs_layer_builder *b);

/* Take a reference on a READY layer (sets this host's holder bit). */
int daxfs_layer_open(struct daxfs *fs, const uint8_t diff_id[32],
		     struct daxfs_layer **out, struct daxfs_err *err);
void daxfs_layer_close(struct daxfs_layer *l);
uint64_t daxfs_layer_serial(const struct daxfs_layer *l);
uint32_t daxfs_layer_ninodes(const struct daxfs_layer *l);

/* Evict an unheld READY layer: its contents' references are dropped. */
int daxfs_layer_evict(struct daxfs *fs, const uint8_t diff_id[32],
		      struct daxfs_err *err);

struct daxfs_stat {
	uint32_t ino;
	uint32_t mode, uid, gid, nlink, flags;
	uint32_t rdev_major, rdev_minor;
	int64_t mtime_sec;
	uint32_t mtime_nsec;
	uint64_t size;
};
#define DAXFS_ROOT_INO 0u
#define DAXFS_F_WHITEOUT 0x1u
#define DAXFS_F_OPAQUE 0x2u

int daxfs_stat(struct daxfs_layer *l, uint32_t ino, struct daxfs_stat *st);
int daxfs_lookup(struct daxfs_layer *l, uint32_t dir, const char *name,
		 size_t namelen, uint32_t *ino);
/* Walk a slash-separated path from the root. */
int daxfs_lookup_path(struct daxfs_layer *l, const char *path,
		      uint32_t *ino);
/* Directory entry at index idx (readdir offset = index); -ENOENT past the
 * end.  *name is not NUL-terminated. */
int daxfs_readdir(struct daxfs_layer *l, uint32_t dir, uint32_t idx,
		  const char **name, size_t *namelen, uint32_t *ino,
		  uint8_t *dtype);
int daxfs_readlink(struct daxfs_layer *l, uint32_t ino, const char **target,
		   size_t *len);
/* Copy the value of xattr NAME; returns the value length (or -ERANGE if
 * size is too small and size != 0; size 0 only returns the length). */
ssize_t daxfs_getxattr(struct daxfs_layer *l, uint32_t ino, const char *name,
		       void *buf, size_t size);
/* NUL-separated list of names, like listxattr(2). */
ssize_t daxfs_listxattr(struct daxfs_layer *l, uint32_t ino, char *buf,
			size_t size);

struct daxfs_piece {
	const void *ptr;	/* points into the mapping */
	size_t len;
};
/* Zero-copy read: the pieces of [off, off+len) in the mapping.  Returns
 * the number of pieces filled (at most max); fewer bytes than asked at
 * EOF. */
int daxfs_file_pieces(struct daxfs_layer *l, uint32_t ino, uint64_t off,
		      size_t len, struct daxfs_piece *out, int max);
ssize_t daxfs_pread(struct daxfs_layer *l, uint32_t ino, void *buf,
		    size_t len, uint64_t off);

/* ---- chains, images, aliases (shared records) ---- */

struct daxfs_chain_info {
	uint8_t chain_id[32];
	uint8_t parent[32];	/* zero for a bottom layer */
	uint8_t diff_id[32];	/* its top layer */
	uint64_t depth;		/* 1 for a bottom layer */
};
/* Record a chain; its layer record must exist.  An existing record for
 * chain_id is kept (0). */
int daxfs_chain_put(struct daxfs *fs, const struct daxfs_chain_info *c,
		    struct daxfs_err *err);
int daxfs_chain_get(struct daxfs *fs, const uint8_t chain_id[32],
		    struct daxfs_chain_info *out);

struct daxfs_image_info {
	char ref[256];
	uint8_t manifest[32];
	uint8_t config[32];
	uint8_t top_chain[32];
	uint64_t nlayers;
	uint64_t flags;
};
/* Record (or replace) the image record for ref. */
int daxfs_image_put(struct daxfs *fs, const struct daxfs_image_info *im,
		    struct daxfs_err *err);
int daxfs_image_get(struct daxfs *fs, const char *ref,
		    struct daxfs_image_info *out);
int daxfs_image_remove(struct daxfs *fs, const char *ref,
		       struct daxfs_err *err);
int daxfs_images_foreach(struct daxfs *fs,
			 int (*cb)(const struct daxfs_image_info *, void *),
			 void *arg);
/* Let a compressed digest name the layer diff_id (whose record exists). */
int daxfs_layer_alias(struct daxfs *fs, const uint8_t digest[32],
		      const uint8_t diff_id[32], struct daxfs_err *err);
/* diff_id of the layer a digest names (a diff_id names itself). */
int daxfs_layer_resolve(struct daxfs *fs, const uint8_t digest[32],
			uint8_t diff_id[32]);

/* ---- whole-region views ---- */

struct daxfs_usage {
	uint64_t region_size;
	uint64_t data_total, data_used;
	uint64_t meta_total, meta_used;
	uint64_t hash_slots, hash_used;
	uint64_t contents, content_bytes;	/* distinct contents */
	uint64_t referenced_bytes;		/* as if every layer had its copy */
	uint64_t layers_ready;
	uint64_t layers_held, layers_pinned;	/* READY and held / pinned */
	uint64_t held_bytes;			/* unpacked bytes of those */
	uint64_t reclaimable_bytes;		/* unpacked bytes of the others */
	uint32_t max_hosts;
	uint8_t uuid[16];
	uint32_t version;
};
int daxfs_usage(struct daxfs *fs, struct daxfs_usage *u);

struct daxfs_layer_info {
	uint8_t diff_id[32];
	unsigned state;		/* format's layer states */
	uint64_t serial;
	uint64_t holders;	/* bit per host slot holding it (either class) */
	uint64_t files, unpacked_bytes;
	uint64_t compressed_bytes;
	uint8_t digest[32];	/* blob digest, zero if unknown */
	int claimant_slot;
	int recently_used;	/* the clock's second-chance bit */
};
/* State of one layer record: 0, or -ENOENT if the region has none.
 * progress is the byte counter its unpacker advances. */
int daxfs_layer_info(struct daxfs *fs, const uint8_t diff_id[32],
		     struct daxfs_layer_info *out, uint64_t *progress);

/* Calls cb for every layer record; stops early if cb returns non-zero. */
int daxfs_layers_foreach(struct daxfs *fs,
			 int (*cb)(const struct daxfs_layer_info *, void *),
			 void *arg);

/* ---- pins, holder bits and eviction ----
 *
 * A layer is held by a host while any of its processes has it open
 * (daxfs_layer_open).  Holder bits are per (host, class): the daemon class
 * (daxfsd and tools) and the view class (the FUSE view), so the two
 * processes of one host never clear each other's holds. */

/* After a restart: clear this process's class bit on every layer this
 * process does not hold open now (a restarted daemon first re-opens the
 * layers its records justify, a new view holds nothing yet).  Returns the
 * number of bits cleared or -errno. */
int daxfs_holds_sync(struct daxfs *fs);

/* Image records with this flag pin their layers against eviction. */
#define DAXFS_IMAGE_PINNED 0x1ull
/* Set or clear DAXFS_IMAGE_PINNED on the image record of ref; -ENOENT
 * without one.  Bumps the region's pin generation so a concurrent
 * eviction of one of its layers is rolled back. */
int daxfs_image_pin(struct daxfs *fs, const char *ref, int pin,
		    struct daxfs_err *err);

struct daxfs_gc_opts {
	uint64_t want_data;	/* stop once this many data bytes are free */
	uint64_t want_meta;	/* and this many metadata bytes */
	int all;		/* evict every evictable layer (daxfsctl gc) */
	int dry_run;		/* only report what would be evicted */
	/* Called for each layer evicted (or, with dry_run, evictable). */
	void (*report)(const struct daxfs_layer_info *li, void *arg);
	void *arg;
};

struct daxfs_gc_result {
	uint64_t evicted;		/* layers (with dry_run: evictable) */
	uint64_t data_freed, meta_freed;	/* bytes, as the bitmap saw it */
	uint64_t held;			/* READY layers with holder bits */
	uint64_t pinned;		/* READY layers of pinned images */
	uint64_t held_hosts;		/* union of holder host slots, bit per slot */
	uint64_t stale_cleared;		/* holder bits of gone hosts cleared */
	uint64_t data_free, meta_free;	/* free bytes after the pass */
};

/* One pass of the multi-host clock: the shared hand advances by CAS over
 * the layer records; a READY, unheld, unpinned layer whose recently-used
 * bit is set loses the bit, one whose bit is clear is evicted.  Stops when
 * the wants are met (or, with all, after evicting every candidate).  Needs
 * a daemon attach.  Returns 0 (even if nothing could be freed: compare
 * the result's free bytes with the wants) or -errno. */
int daxfs_gc(struct daxfs *fs, const struct daxfs_gc_opts *o,
	     struct daxfs_gc_result *r, struct daxfs_err *err);

/* "region full: X free, nothing reclaimable; N layers held by hosts a, b"
 * from a gc result, for error messages. */
int daxfs_gc_full_error(struct daxfs *fs, const struct daxfs_gc_result *r,
			struct daxfs_err *err);

/* Consistency check.  Every problem found is passed to report (one line
 * each).  Returns the number of problems, or -errno if the check itself
 * could not run.  With live = 1 the work of attached hosts is treated as in
 * flight rather than leaked. */
int daxfs_fsck(struct daxfs *fs, int live,
	       void (*report)(const char *line, void *arg), void *arg);

/* ---- failpoints (tests) ----
 * DAXFS_FAILPOINT=N in the environment makes the N-th failpoint site hit
 * by this process call _exit(99), simulating a crash there.  The count of
 * sites passed so far is returned by daxfs_failpoint_count(). */
uint64_t daxfs_failpoint_count(void);

/* A layer's short id: its serial in base 36 (8 characters or fewer below
 * 2.8e12 layers), the name of its directory in the FUSE view, so an
 * image of 128 layers fits the kernel's 4096-byte mount option limit. */
void daxfs_short_id(uint64_t serial, char out[16]);
int daxfs_parse_short_id(const char *s, uint64_t *serial);

const char *daxfs_version(void);

#endif
