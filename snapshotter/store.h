/* This host's snapshot records, in SQLite (ROOT/snapshots.db).
 *
 * Every change happens inside store_begin .. store_end, one SQLite
 * transaction, so a daemon killed at any instant leaves the records of
 * before or after the change.  One mutex serialises the callers. */
#ifndef DAXFS_SNAP_STORE_H
#define DAXFS_SNAP_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "daxfs.h"

/* The numbers of containerd's snapshots.v1.Kind. */
enum snap_kind { SNAP_VIEW = 1, SNAP_ACTIVE = 2, SNAP_COMMITTED = 3 };

struct snap_label {
	char *key;
	char *value;
};

struct snap_info {
	int64_t id;
	char *name;
	char *parent;		/* parent's name, "" for none */
	int64_t parent_id;	/* 0 for none */
	int kind;
	int64_t created_ns, updated_ns;	/* Unix time */
	char *dir;		/* "" = ROOT/snapshots/<id>; else a directory of
				 * the region's view (a remote snapshot) */
	char *layer;		/* "sha256:<diff_id>" of the region layer the
				 * record keeps held, "" for none */
	int64_t size, inodes;	/* committed: usage when committed */
	size_t nlabels;
	struct snap_label *labels;	/* sorted by key */
};

struct store;

int store_open(const char *path, struct store **out, struct daxfs_err *err);
void store_close(struct store *s);

/* Lock and begin a transaction; store_end commits it if rc is 0 (and
 * then returns the commit's result) or rolls it back, and unlocks. */
int store_begin(struct store *s, struct daxfs_err *err);
int store_end(struct store *s, int rc, struct daxfs_err *err);

/* -ENOENT if there is none. */
int store_get(struct store *s, const char *name, struct snap_info *out,
	      struct daxfs_err *err);
int store_get_id(struct store *s, int64_t id, struct snap_info *out,
		 struct daxfs_err *err);
/* Insert i (name, parent_id, kind, times, dir, layer, usage, labels) and set
 * i->id; -EEXIST if the name is taken. */
int store_insert(struct store *s, struct snap_info *i, struct daxfs_err *err);
/* Rewrite the row of i->id: name, kind, times, usage and labels. */
int store_update(struct store *s, const struct snap_info *i,
		 struct daxfs_err *err);
int store_delete(struct store *s, int64_t id, struct daxfs_err *err);
/* 1 if some snapshot has id as its parent, 0 if none, or -errno. */
int store_has_children(struct store *s, int64_t id, struct daxfs_err *err);
/* Every record, in id order; stops at cb's first non-zero return.  cb
 * may keep *i by moving it out (leaving it zeroed). */
int store_foreach(struct store *s, int (*cb)(struct snap_info *, void *),
		  void *arg, struct daxfs_err *err);
/* The highest id ever given out (ids are never reused), 0 if none. */
int store_last_id(struct store *s, int64_t *id, struct daxfs_err *err);

/* Labels: empty values are not kept (containerd's convention). */
int snap_label_set(struct snap_info *i, const char *key, const char *value);
const char *snap_label_get(const struct snap_info *i, const char *key);
void snap_info_free(struct snap_info *i);

/* The database, for modules keeping tables of their own in it (the
 * importer); only between store_begin and store_end. */
struct sqlite3 *store_sqlite(struct store *s);

#endif
