/* The DaxFS region format: every structure that lives in the shared region.
 *
 * Rules for everything in this file:
 *  - offsets, never pointers; every offset is relative to the superblock, so
 *    a region may start anywhere inside its backing file or device;
 *  - fixed-width little-endian fields (the format is little-endian only: a
 *    big-endian host refuses to attach, see region.c);
 *  - a file-scope _Static_assert pins every struct size;
 *  - shared words changed after publication are _Atomic 64-bit (or smaller)
 *    integers; 128-bit atomics may fall back to a process-local lock.
 *
 * docs/FORMAT.md describes the layout and every CAS protocol. */
#ifndef DAXFS_FORMAT_H
#define DAXFS_FORMAT_H

#include <stdatomic.h>
#include <stdint.h>

_Static_assert(ATOMIC_LLONG_LOCK_FREE == 2, "64-bit atomics must be lock-free");
_Static_assert(sizeof(_Atomic uint64_t) == 8, "atomic u64 must be 8 bytes");

#define DFS_MAGIC 0x3130534658414444ULL /* "DDAXFS01" little-endian */
#define DFS_VERSION 1

/* Incompatible features: an attacher that does not know a bit refuses. */
#define DFS_INCOMPAT_SUPPORTED 0ULL
/* Compatible features: unknown bits are ignored. */
#define DFS_COMPAT_SUPPORTED 0ULL

#define DFS_BLOCK 4096u		/* alignment of every table */
#define DFS_MAX_HOSTS 28u	/* two holder bits per slot in the layer word */
#define DFS_PROCS_PER_HOST 4u	/* daxfsd, the FUSE view, tools */
#define DFS_CTX_PER_HOST 4u	/* allocation contexts (parallel writers) */
#define DFS_NAME_MAX 64u
#define DFS_VERSION_MAX 32u

/* ---- superblock (region offset 0, 4096 bytes, immutable after mkfs) ---- */

struct dfs_area_geom {
	uint64_t chunk_table;	/* offset of the u64 chunk owner words */
	uint64_t bitmap;	/* offset of the unit bitmap, 1 bit per unit */
	uint64_t base;		/* offset of chunk 0 */
	uint64_t nchunks;
	uint32_t unit_shift;	/* allocation unit = 1 << unit_shift bytes */
	uint32_t chunk_shift;	/* chunk = 1 << chunk_shift bytes */
};
_Static_assert(sizeof(struct dfs_area_geom) == 40, "area geometry size");

struct dfs_super {
	uint64_t magic;
	uint32_t version;
	uint32_t sb_size;		/* sizeof(struct dfs_super) */
	uint64_t compat;
	uint64_t incompat;
	uint8_t uuid[16];
	uint64_t region_size;		/* bytes from the superblock on */
	uint64_t shared_off;		/* struct dfs_shared */
	uint64_t hosts_off;		/* max_hosts x struct dfs_host */
	uint32_t max_hosts;
	uint32_t journal_entries;	/* per context, power of two */
	uint64_t journals_off;		/* hosts x contexts x entries x entry */
	uint64_t hash_off;		/* hash_slots x struct dfs_hslot */
	uint64_t hash_slots;		/* power of two */
	struct dfs_area_geom meta;	/* records and layer trees */
	struct dfs_area_geom data;	/* file contents */
	uint64_t mkfs_time;		/* wall clock seconds, informational */
	uint8_t reserved[3896];
	uint32_t pad;
	uint32_t crc;			/* crc32c of this struct, crc = 0 */
};
_Static_assert(sizeof(struct dfs_super) == 4096, "superblock size");

/* ---- shared counters (4096 bytes after the superblock) ---- */

struct dfs_shared {
	_Atomic uint64_t next_layer_serial;	/* fetch_add; never reused */
	_Atomic uint64_t global_epoch;		/* reclamation epoch */
	_Atomic uint64_t clock_hand;		/* eviction clock position */
	_Atomic uint64_t hash_live;		/* VALID slots, for "full" */
	_Atomic uint64_t pin_gen;		/* bumped by every pin change */
	uint8_t reserved[4056];
};
_Static_assert(sizeof(struct dfs_shared) == 4096, "shared page size");

/* ---- hosts ---- */

/* Host slot owner word: [incarnation:32][state:8][reaper slot+1:8][flags:16].
 * FREE: never used.  LIVE: attached as incarnation INC.  REAPING: declared
 * dead by the reaper named in the word; reaping may be taken over.
 * RETIRED: reaped (or detached cleanly); INC is kept so the next attach of
 * the same host uses INC+1.  CLEARING: a RETIRED slot whose stale holder
 * bits the host named in the reaper field is clearing; it returns to
 * RETIRED with DFS_OWNER_HOLDS_CLEARED (or, if that host dies, without). */
enum dfs_host_state {
	DFS_HOST_FREE = 0,
	DFS_HOST_LIVE = 1,
	DFS_HOST_REAPING = 2,
	DFS_HOST_RETIRED = 3,
	DFS_HOST_CLEARING = 4,
};
#define DFS_OWNER(inc, st, reaper1) \
	(((uint64_t)(inc) << 32) | ((uint64_t)(st) << 24) | ((uint64_t)(reaper1) << 16))
#define DFS_OWNER_INC(w) ((uint32_t)((w) >> 32))
#define DFS_OWNER_STATE(w) ((unsigned)(((w) >> 24) & 0xff))
#define DFS_OWNER_REAPER1(w) ((unsigned)(((w) >> 16) & 0xff))
#define DFS_OWNER_FLAGS(w) ((unsigned)((w) & 0xffff))
/* RETIRED only: the slot's holder bits were cleared; no one clears again. */
#define DFS_OWNER_HOLDS_CLEARED 0x1u

/* One attached process of a host.  claim: 0 free, else the incarnation
 * that took it (a new incarnation may reuse stale entries).  heartbeat is
 * only ever incremented by its process; observers judge liveness by
 * whether it moves on their own clock.  reader_epoch: 0 when the process
 * holds no region offsets, else the global epoch it entered with. */
struct dfs_proc {
	_Atomic uint64_t claim;
	_Atomic uint64_t heartbeat;
	_Atomic uint64_t reader_epoch;
	uint32_t kind;			/* enum daxfs_proc_kind, informational */
	uint32_t pad;
};
_Static_assert(sizeof(struct dfs_proc) == 32, "proc size");

/* An allocation context: one writer thread of a host at a time.  It owns
 * chunks and a journal ring; entries [tail, head) may still matter.
 * claim: 0 free, else incarnation of the process using it. */
struct dfs_ctx {
	_Atomic uint64_t claim;
	_Atomic uint64_t head;		/* next seq to write */
	_Atomic uint64_t tail;		/* first seq still relevant */
	uint64_t pad;
};
_Static_assert(sizeof(struct dfs_ctx) == 32, "context size");

struct dfs_host {
	_Atomic uint64_t owner;
	uint8_t uuid[16];		/* written once by the first attach */
	char name[DFS_NAME_MAX];	/* label, NUL padded */
	char version[DFS_VERSION_MAX];	/* software version of the attacher */
	_Atomic uint64_t reap_done;	/* last incarnation fully reaped */
	uint64_t pad;
	struct dfs_proc procs[DFS_PROCS_PER_HOST];
	struct dfs_ctx ctx[DFS_CTX_PER_HOST];
	uint8_t reserved[120];
};
_Static_assert(sizeof(struct dfs_host) == 512, "host slot size");

/* ---- per-host intent journal ----
 *
 * Every allocation and every reference-count change a host makes is first
 * written to its journal, so whoever reaps the host can undo exactly what it
 * did and nothing else.  Entry index = seq % journal_entries.  The word
 * [seq:56][state:8] is the entry's identity: helpers and reapers match the
 * full seq, so a reused entry is never mistaken for an old one. */
enum dfs_jstate {
	DFS_J_FREE = 0,
	DFS_J_PENDING = 1,	/* written, operation may or may not be applied */
	DFS_J_DONE = 2,		/* applied and recorded */
	DFS_J_UNDONE = 3,	/* rolled back (by a reaper) or abandoned */
	DFS_J_COMMITTED = 4,	/* owned by published state; never undone */
};
enum dfs_jop {
	DFS_JOP_ALLOC_META = 1,	/* a = offset, b = length */
	DFS_JOP_ALLOC_DATA = 2,
	DFS_JOP_REF_INC = 3,	/* a = content record offset */
	DFS_JOP_REF_DEC = 4,	/* a = content record offset */
	DFS_JOP_CREATE = 5,	/* a = content record offset (rc = 1) */
	DFS_JOP_RETIRE = 6,	/* a = content record offset, freeing */
	DFS_JOP_BEGIN = 7,	/* a = layer record, b = serial: a group */
	DFS_JOP_TREE = 8,	/* a = layer record, b = serial, group = first
				 * inode released: group evicts its tree */
	DFS_JOP_NEWLAYER = 9,	/* a = new layer record, b = length */
	DFS_JOP_NEWREC = 10,	/* a = new chain/image/alias record, b = length,
				 * group = its kind */
	DFS_JOP_FREEREC = 11,	/* a = chain/image/alias record being freed */
};
#define DFS_JWORD(seq, st) (((uint64_t)(seq) << 8) | (uint64_t)(st))
#define DFS_JWORD_SEQ(w) ((w) >> 8)
#define DFS_JWORD_STATE(w) ((unsigned)((w) & 0xff))

struct dfs_jentry {
	_Atomic uint64_t word;
	uint32_t op;
	uint32_t group;		/* caller's transaction id (layer serial low) */
	uint64_t a;
	uint64_t b;
};
_Static_assert(sizeof(struct dfs_jentry) == 32, "journal entry size");

/* ---- chunks and units ----
 *
 * Each area is split into chunks; a host allocates only inside chunks it
 * owns (so a reaper knows every unit a dead host may have set), in units
 * found by CAS on bitmap words.  Any host may free units (atomic AND).
 * Chunk owner word: 0 = free, else [state:8][slot+1:8][ctx:8][inc:32]. */
enum dfs_chunk_state {
	DFS_CHUNK_FREE = 0,
	DFS_CHUNK_OWNED = 1,
	DFS_CHUNK_ORPHAN = 2,	/* owner reaped; adoptable after lease+grace */
	DFS_CHUNK_RELEASED = 3,	/* owner detached cleanly; adoptable now */
};
#define DFS_CHUNK(st, slot1, ctx, inc) \
	(((uint64_t)(st) << 56) | ((uint64_t)(slot1) << 48) | \
	 ((uint64_t)(ctx) << 40) | (uint64_t)(inc))
#define DFS_CHUNK_STATE(w) ((unsigned)((w) >> 56))
#define DFS_CHUNK_SLOT1(w) ((unsigned)(((w) >> 48) & 0xff))
#define DFS_CHUNK_CTX(w) ((unsigned)(((w) >> 40) & 0xff))
#define DFS_CHUNK_INC(w) ((uint32_t)(w))

/* ---- the shared hash ----
 *
 * Open addressing, linear probing.  Slot word:
 * [state:3][owner slot:6][fingerprint:55].  EMPTY slots end a probe;
 * TOMB slots are skipped by lookups and reused by inserts.  CLAIMED and
 * KEYED slots belong to an insert in progress (key not yet / already
 * written); the owner is named so a reaper can clear them.  In VALID and
 * TOMB words those 6 bits are instead a reuse tag, advanced by each insert
 * that reuses the slot, so a VALID word is not repeated when the slot is
 * removed and refilled with the same key (see hash.c).  value and key
 * are written before the word turns KEYED (release) and read after it is
 * seen KEYED or VALID (acquire). */
enum dfs_hstate {
	DFS_H_EMPTY = 0,
	DFS_H_CLAIMED = 1,
	DFS_H_KEYED = 2,
	DFS_H_VALID = 3,
	DFS_H_TOMB = 4,
};
#define DFS_HFP_MASK ((1ULL << 55) - 1)
#define DFS_HWORD(st, slot, fp) \
	(((uint64_t)(st) << 61) | ((uint64_t)(slot) << 55) | ((fp) & DFS_HFP_MASK))
#define DFS_HWORD_STATE(w) ((unsigned)((w) >> 61))
#define DFS_HWORD_SLOT(w) ((unsigned)(((w) >> 55) & 0x3f))
#define DFS_HWORD_FP(w) ((w) & DFS_HFP_MASK)

enum dfs_kind {
	DFS_KIND_CONTENT = 1,	/* sha256 of file data -> struct dfs_content */
	DFS_KIND_LAYER = 2,	/* diff_id -> struct dfs_layer */
	DFS_KIND_CHAIN = 3,	/* chainID -> struct dfs_chain */
	DFS_KIND_IMAGE = 4,	/* sha256(reference) -> struct dfs_image */
	DFS_KIND_ALIAS = 5,	/* compressed digest -> struct dfs_layer */
	DFS_KIND_TEST = 15,	/* used by tests and benchmarks only */
};

/* key, kind and value are rewritten when a tombstone is reused while
 * readers may still compare them, so they are accessed as relaxed atomic
 * words; the slot word's acquire/release orders them. */
struct dfs_hslot {
	_Atomic uint64_t word;
	_Atomic uint64_t value;		/* record offset */
	_Atomic uint64_t key[4];	/* 32 key bytes, little-endian words */
	_Atomic uint64_t kind;
	uint64_t reserved;
};
_Static_assert(sizeof(struct dfs_hslot) == 64, "hash slot size");

/* ---- content records (meta area) ----
 *
 * rc word: [count:24][slot:6][ctx:2][seq:32].  count only moves up from
 * a non-zero value, so a record that reached 0 is dead for good.
 * slot/ctx/seq name the journal entry of the last change, which lets a
 * reaper decide whether a dead host's pending change was applied. */
#define DFS_RC(count, slot, ctx, seq) \
	(((uint64_t)(count) << 40) | ((uint64_t)(slot) << 34) | \
	 ((uint64_t)(ctx) << 32) | ((uint64_t)(seq) & 0xffffffffULL))
#define DFS_RC_COUNT(w) ((uint32_t)((w) >> 40))
#define DFS_RC_SLOT(w) ((unsigned)(((w) >> 34) & 0x3f))
#define DFS_RC_CTX(w) ((unsigned)(((w) >> 32) & 0x3))
#define DFS_RC_SEQ(w) ((uint32_t)(w))
#define DFS_RC_COUNT_MAX ((1u << 24) - 1)

struct dfs_extent {
	uint64_t off;		/* data area offset */
	uint64_t len;		/* bytes used (the allocation rounds up) */
};
_Static_assert(sizeof(struct dfs_extent) == 16, "extent size");

struct dfs_content {
	_Atomic uint64_t rc;
	uint8_t sha256[32];
	uint64_t size;
	uint32_t nextents;
	uint32_t cap;		/* extent slots allocated with the record */
	uint64_t retire_epoch;	/* unused, reserved */
	struct dfs_extent ext[];	/* nextents entries */
};
_Static_assert(sizeof(struct dfs_content) == 64, "content record size");
#define DFS_MAX_EXTENTS 1024u

/* ---- layers ----
 *
 * Layer state word (one CAS changes it):
 *   bits  0..55  holder bits, two per host slot: bit SLOT for the host's
 *                daemon class (daxfsd, tools), bit 28 + SLOT for its view
 *   bits 56..59  claimant incarnation tag (incarnation & 15)
 *   bit  60      recently used
 *   bits 61..63  state
 * A holder bit may be set only while READY; the tree offset is read only
 * after the bit is set.  While UNPACKING no holder bit can be set, and the
 * 56 bits name the claimant instead: (slot << 32) | incarnation. */
enum dfs_layer_state {
	DFS_L_ABSENT = 0,
	DFS_L_UNPACKING = 1,
	DFS_L_READY = 2,
	DFS_L_EVICTING = 3,
	DFS_L_FAILED = 4,
};
#define DFS_LW_HOLDERS(w) ((w) & ((1ULL << 56) - 1))
#define DFS_LW_TAG(w) ((unsigned)(((w) >> 56) & 0xf))
#define DFS_LW_RU (1ULL << 60)
#define DFS_LW_STATE(w) ((unsigned)((w) >> 61))
#define DFS_LW(st, tag, ru, holders) \
	(((uint64_t)(st) << 61) | ((ru) ? DFS_LW_RU : 0) | \
	 ((uint64_t)((tag) & 0xf) << 56) | ((holders) & ((1ULL << 56) - 1)))

/* Holder bits of one host slot: daemon class, view class, both. */
#define DFS_HOLD_DAEMON(slot) (1ULL << (slot))
#define DFS_HOLD_VIEW(slot) (1ULL << (DFS_MAX_HOSTS + (slot)))
#define DFS_HOLD_SLOT(slot) (DFS_HOLD_DAEMON(slot) | DFS_HOLD_VIEW(slot))
/* Holder bits folded to a mask of host slots. */
#define DFS_HOLD_SLOTS(h) \
	(((h) | ((h) >> DFS_MAX_HOSTS)) & ((1ULL << DFS_MAX_HOSTS) - 1))
_Static_assert(2 * DFS_MAX_HOSTS <= 56, "both holder classes fit the word");

#define LW_UNPACKING(slot, inc) \
	DFS_LW(DFS_L_UNPACKING, (inc), 0, ((uint64_t)(slot) << 32) | (uint32_t)(inc))
#define LW_CLAIM_SLOT(w) ((unsigned)((DFS_LW_HOLDERS(w) >> 32) & 0xff))
#define LW_CLAIM_INC(w) ((uint32_t)DFS_LW_HOLDERS(w))

struct dfs_layer {
	_Atomic uint64_t state;
	_Atomic uint64_t progress;	/* bytes unpacked, moves while alive */
	uint64_t serial;		/* never reused; FUSE node ids */
	uint64_t claimant;		/* (slot << 32) | incarnation */
	uint8_t diff_id[32];
	uint8_t digest[32];		/* compressed digest, if known */
	_Atomic uint64_t tree;		/* struct dfs_tree offset, when READY */
	uint64_t tree_len;
	uint64_t files;
	uint64_t unpacked_bytes;
	uint64_t compressed_bytes;
	uint8_t reserved[120];
};
_Static_assert(sizeof(struct dfs_layer) == 256, "layer record size");

/* ---- layer trees (immutable once the layer is READY) ----
 *
 * One meta allocation: header, inode table, dirent table, xattr table,
 * string table; all offsets inside are relative to the tree header. */
#define DFS_IF_WHITEOUT 0x1u	/* OCI .wh.NAME: hides NAME in lower layers */
#define DFS_IF_OPAQUE 0x2u	/* OCI .wh..wh..opq on this directory */

struct dfs_tree {
	uint64_t magic;		/* DFS_TREE_MAGIC */
	uint64_t serial;	/* the layer's serial */
	uint32_t ninodes;	/* inode 0 is the root directory */
	uint32_t ndirents;
	uint32_t nxattrs;
	uint32_t pad;
	uint64_t inodes_off;
	uint64_t dirents_off;
	uint64_t xattrs_off;
	uint64_t strings_off;
	uint64_t strings_len;
	uint64_t total_len;
	uint32_t crc;		/* crc32c of the whole tree with crc = 0 */
	uint32_t pad2;
};
_Static_assert(sizeof(struct dfs_tree) == 88, "tree header size");
#define DFS_TREE_MAGIC 0x3145455254534644ULL /* "DFSTREE1" */

struct dfs_inode {
	uint32_t mode;		/* S_IFMT bits and permissions incl. suid */
	uint32_t uid;
	uint32_t gid;
	uint32_t flags;		/* DFS_IF_* */
	uint32_t nlink;
	uint32_t rdev_major;
	uint32_t rdev_minor;
	uint32_t mtime_nsec;
	int64_t mtime_sec;
	uint64_t size;
	/* regular: content record offset (0 for empty files);
	 * directory: first dirent index; symlink: string offset of target */
	uint64_t u0;
	/* directory: dirent count; symlink: target length */
	uint32_t u1;
	uint32_t xattr_first;	/* index into the xattr table */
	uint32_t nxattrs;
	uint32_t pad;
};
_Static_assert(sizeof(struct dfs_inode) == 72, "inode size");

struct dfs_dirent {
	uint32_t name_off;	/* string table offset */
	uint16_t name_len;
	uint8_t type;		/* DT_* */
	uint8_t pad;
	uint32_t ino;		/* index into the inode table */
	uint32_t pad2;
};
_Static_assert(sizeof(struct dfs_dirent) == 16, "dirent size");

struct dfs_xattr {
	uint32_t name_off;
	uint16_t name_len;
	uint16_t pad;
	uint32_t value_off;
	uint32_t value_len;
};
_Static_assert(sizeof(struct dfs_xattr) == 16, "xattr size");

/* ---- chains and images ---- */

struct dfs_chain {
	uint8_t chain_id[32];
	uint8_t parent[32];	/* zero for the bottom layer */
	uint64_t layer;		/* struct dfs_layer offset */
	uint64_t depth;
};
_Static_assert(sizeof(struct dfs_chain) == 80, "chain record size");

/* Alias: another digest (a layer's compressed digest) naming a layer. */
struct dfs_alias {
	uint8_t digest[32];
	uint64_t layer;		/* struct dfs_layer offset */
	uint64_t pad;
};
_Static_assert(sizeof(struct dfs_alias) == 48, "alias record size");

/* Image record, keyed by sha256(ref). */
struct dfs_image {
	char ref[256];		/* normalised reference, NUL padded */
	uint8_t manifest[32];
	uint8_t config[32];
	uint8_t top_chain[32];
	uint64_t nlayers;
	/* DAXFS_IMAGE_PINNED: changed in place by one atomic operation
	 * (daxfs_image_pin); everything else is immutable. */
	_Atomic uint64_t flags;
};
_Static_assert(sizeof(struct dfs_image) == 368, "image record size");

#endif
