/* The region layers this daxfsd keeps held for its snapshot records.
 *
 * A layer is opened (daxfs_layer_open: the host's daemon-class holder bit
 * is set) by the first record that needs it and closed when the last
 * such record goes, so many snapshots share one open.  A held layer is
 * never evicted, by any host. */
#ifndef DAXFS_SNAP_PINS_H
#define DAXFS_SNAP_PINS_H

#include <stdint.h>

#include "daxfs.h"

struct pins;

int pins_new(struct daxfs *fs, struct pins **out);
/* Close every layer still held.  Safe on NULL. */
void pins_free(struct pins *p);
/* One more reference on layer diff_id, opening it if this is the first;
 * -ENOENT (with a message) unless the layer is READY. */
int pins_hold(struct pins *p, const uint8_t diff_id[32], struct daxfs_err *err);
/* Drop one reference; the last closes the layer. */
void pins_release(struct pins *p, const uint8_t diff_id[32]);
/* The serial of a held layer (its view directory is l/<short id>), or
 * -ENOENT if nothing holds it. */
int pins_serial(struct pins *p, const uint8_t diff_id[32], uint64_t *serial);
/* How many references layer diff_id has (0 if not held). */
unsigned pins_refs(struct pins *p, const uint8_t diff_id[32]);

#endif
