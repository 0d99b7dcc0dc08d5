/* The local directories of snapshots: BASE/<id>/fs (the files, an
 * overlay upper directory while active) and BASE/<id>/work (overlayfs's
 * work directory), BASE being ROOT/snapshots. */
#ifndef DAXFS_SNAPDIR_H
#define DAXFS_SNAPDIR_H

#include <stddef.h>
#include <stdint.h>

#include "daxfs.h"

/* BASE/<id>/SUB ("" for BASE/<id>). */
void snapdir_path(const char *base, int64_t id, const char *sub, char *out,
		  size_t len);
/* Make BASE/<id>/fs (0755) and, if with_work, BASE/<id>/work; whatever
 * a crash left at BASE/<id> is removed first. */
int snapdir_create(const char *base, int64_t id, int with_work,
		   struct daxfs_err *err);
/* Remove BASE/<id> and everything under it, staying on its filesystem
 * (a mount left inside is not entered). */
int snapdir_remove(const char *base, int64_t id);
/* Remove every BASE/<id> with id <= last that keep(id) refuses. */
int snapdir_prune(const char *base, int64_t last,
		  int (*keep)(int64_t id, void *arg), void *arg);
/* Disk usage of a tree as containerd counts it: bytes in allocated
 * blocks and inodes, each hard-linked inode once. */
int snapdir_usage(const char *dir, int64_t *size, int64_t *inodes);

#endif
