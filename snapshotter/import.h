/* Background import of containerd-unpacked snapshots into the region.
 *
 * Commit stays fast: it only records that a snapshot containerd unpacked
 * (Prepare key "[NS/ID/]extract-<unique> <chainID>", Commit label
 * containerd.io/snapshot.ref=<chainID>) is to be imported.  A thread of
 * the importer turns its local directory (an overlay upper directory)
 * into a region layer, records the chain, and switches the snapshot to
 * the layer's directory in the view.  Until then, and for as long as
 * some snapshot still uses a mount that names the local directory, the
 * local copy stays; if the import fails it stays for good.
 *
 * The state is kept in two tables of the snapshot store (ROOT/
 * snapshots.db), changed inside the caller's store transaction:
 *   imports(snapshot, chain, state, layer, dir, local, error)
 *   import_users(imported, user): user was handed a mount naming the
 *     local directory of imported. */
#ifndef DAXFS_SNAP_IMPORT_H
#define DAXFS_SNAP_IMPORT_H

#include <stddef.h>
#include <stdint.h>

#include "daxfs.h"
#include "pins.h"
#include "store.h"

/* Stat's label with the import state: "pending", "ready" or "failed". */
#define IMPORT_LABEL_STATE "daxfs.io/import"
/* The region layer's key (sha256:...) once ready. */
#define IMPORT_LABEL_LAYER "daxfs.io/import.layer"
/* Why the import failed. */
#define IMPORT_LABEL_ERROR "daxfs.io/import.error"

struct importer;

struct daemon;

/* Create the tables; with d (a daemon with a region), start the thread
 * (which first resumes what a previous run left pending).  The thread
 * makes room in the region as pulls do.  An imported layer is held
 * through pins (snapshots.c's holds) and named in the snapshot's record,
 * so Remove releases it.  base is ROOT/snapshots, view the view's mount
 * point. */
int import_open(struct store *store, struct daemon *d, struct pins *pins,
		const char *base, const char *view, struct importer **out,
		struct daxfs_err *err);
void import_close(struct importer *im);

/* Inside Commit's transaction, after the record became committed:
 * queue the import if key and i's labels show containerd's unpacker. */
int import_commit(struct importer *im, const struct snap_info *i,
		  const char *key, struct daxfs_err *err);

/* Inside a transaction: the directory to stack for ancestor p in a mount
 * handed to snapshot user.  1 with the region's directory in out once p
 * is imported; 0 to use p's own directory (recording user as one that
 * holds on to p's local copy when p is an import candidate). */
int import_files_dir(struct importer *im, const struct snap_info *p,
		     int64_t user, char *out, size_t len, struct daxfs_err *err);

/* In a transaction of its own: add the import labels to i (Stat). */
int import_describe(struct importer *im, struct snap_info *i,
		    struct daxfs_err *err);

/* After a Commit or Remove: let the thread look for work (imports to
 * run, local copies nobody uses any more). */
void import_kick(struct importer *im);

/* Imports that failed since the start. */
uint64_t import_failures(const struct importer *im);

#endif
