/* Held region layers, refcounted: see pins.h. */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "pins.h"
#include "ref.h"

struct pin {
	uint8_t diff_id[32];
	struct daxfs_layer *layer;
	unsigned refs;
};

struct pins {
	struct daxfs *fs;
	pthread_mutex_t lock;
	struct pin *v;
	size_t n, cap;
};

int pins_new(struct daxfs *fs, struct pins **out)
{
	struct pins *p = calloc(1, sizeof(*p));

	if (!p)
		return -ENOMEM;
	p->fs = fs;
	pthread_mutex_init(&p->lock, NULL);
	*out = p;
	return 0;
}

void pins_free(struct pins *p)
{
	if (!p)
		return;
	for (size_t k = 0; k < p->n; k++)
		daxfs_layer_close(p->v[k].layer);
	free(p->v);
	pthread_mutex_destroy(&p->lock);
	free(p);
}

/* Under the lock. */
static struct pin *find(struct pins *p, const uint8_t diff_id[32])
{
	for (size_t k = 0; k < p->n; k++)
		if (!memcmp(p->v[k].diff_id, diff_id, 32))
			return &p->v[k];
	return NULL;
}

int pins_hold(struct pins *p, const uint8_t diff_id[32], struct daxfs_err *err)
{
	struct daxfs_layer *l;
	struct pin *e;
	char dg[72];
	int rc = 0;

	pthread_mutex_lock(&p->lock);
	e = find(p, diff_id);
	if (e) {
		e->refs++;
		goto out;
	}
	if (p->n == p->cap) {
		size_t cap = p->cap ? p->cap * 2 : 16;
		struct pin *v = realloc(p->v, cap * sizeof(*v));

		if (!v) {
			rc = daxfs_err_set(err, -ENOMEM, "out of memory");
			goto out;
		}
		p->v = v;
		p->cap = cap;
	}
	/* Opening is the hold: it fails unless the layer is READY, and once
	 * it returns no eviction can take the layer. */
	rc = daxfs_layer_open(p->fs, diff_id, &l, err);
	if (rc < 0) {
		digest_format(diff_id, dg);
		rc = daxfs_err_set(err, -ENOENT, "layer %s is not in the region (%s)", dg,
				   strerror(-rc));
		goto out;
	}
	e = &p->v[p->n++];
	memcpy(e->diff_id, diff_id, 32);
	e->layer = l;
	e->refs = 1;
out:
	pthread_mutex_unlock(&p->lock);
	return rc;
}

void pins_release(struct pins *p, const uint8_t diff_id[32])
{
	struct pin *e;

	pthread_mutex_lock(&p->lock);
	e = find(p, diff_id);
	if (e && --e->refs == 0) {
		daxfs_layer_close(e->layer);
		*e = p->v[--p->n];
	}
	pthread_mutex_unlock(&p->lock);
}

int pins_serial(struct pins *p, const uint8_t diff_id[32], uint64_t *serial)
{
	struct pin *e;

	pthread_mutex_lock(&p->lock);
	e = find(p, diff_id);
	if (e)
		*serial = daxfs_layer_serial(e->layer);
	pthread_mutex_unlock(&p->lock);
	return e ? 0 : -ENOENT;
}

unsigned pins_refs(struct pins *p, const uint8_t diff_id[32])
{
	struct pin *e;
	unsigned n;

	pthread_mutex_lock(&p->lock);
	e = find(p, diff_id);
	n = e ? e->refs : 0;
	pthread_mutex_unlock(&p->lock);
	return n;
}
