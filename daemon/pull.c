/* Pulling an image into the region, once per region.
 *
 * Every layer whose chain is already in the region is skipped before
 * anything is fetched.  The others are claimed in the region one by one
 * (ABSENT -> UNPACKING): the host that wins streams the blob; a host that
 * finds a layer being unpacked by another live host waits while that
 * host's progress counter moves, and takes the layer over if that host
 * dies.  Several layers are fetched in parallel.
 *
 * While a pull runs it holds every layer of the image that is READY (its
 * host holder bit is set), so another host's eviction cannot take a layer
 * between its unpack and the image record; the holds are dropped once the
 * record is written (and, with --pin, the image pinned).  Before each
 * unpack, free space is checked against the low watermark and unheld
 * layers are evicted if needed (daxfs_gc). */
#include <errno.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "daemon.h"
#include "log.h"
#include "ref.h"
#include "unpack.h"

#define CONFIG_MAX (4u << 20)

enum lstatus { L_PENDING, L_PRESENT, L_FETCHED, L_SHARED, L_FAILED };
static const char *const status_names[] = {
	"pending", "already in region", "downloaded", "unpacked by another host", "failed"
};

struct player {
	struct descriptor desc;
	uint8_t diff_id[32];
	uint8_t chain[32];
	enum lstatus status;
	uint64_t bytes;
	struct daxfs_layer *hold;	/* open while the pull runs */
};

struct pull {
	struct daemon *d;
	struct api_call *call;
	struct image_ref ref;
	int pin;
	struct player *layers;
	size_t n;
	_Atomic size_t next;
	_Atomic int failed;
	pthread_mutex_t lock;	/* err, events */
	struct daxfs_err err;
};

static uint64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void event(struct pull *p, size_t i, const char *status, uint64_t bytes,
		  const char *extra)
{
	char dg[72];

	if (!p->call)
		return;
	digest_format(p->layers[i].desc.digest, dg);
	pthread_mutex_lock(&p->lock);
	api_event(p->call, json_pack("{s:s, s:i, s:s, s:s, s:I, s:I, s:s?}", "event", "layer",
				     "index", (int)i, "digest", dg, "status", status,
				     "bytes", (json_int_t)bytes,
				     "total", (json_int_t)p->layers[i].desc.size,
				     "detail", extra));
	pthread_mutex_unlock(&p->lock);
}

static void fail(struct pull *p, const struct daxfs_err *e)
{
	pthread_mutex_lock(&p->lock);
	if (!atomic_exchange(&p->failed, 1))
		p->err = *e;
	pthread_mutex_unlock(&p->lock);
}

/* ---- fetching and unpacking one layer ---- */

struct stream {
	struct pull *p;
	size_t i;
	struct registry_blob *blob;
	struct daxfs_err *err;
	uint64_t last_event;
};

static ssize_t stream_read(void *arg, void *buf, size_t len)
{
	struct stream *s = arg;

	if (atomic_load(&s->p->d->stopping))
		return -ECANCELED;
	daemon_exit_if_reaped(s->p->d);	/* before writing what we read */
	if (atomic_load(&s->p->failed))
		return -ECANCELED;	/* another layer failed: give up early */
	return registry_blob_read(s->blob, buf, len, s->err);
}

static int stream_open(void *arg, struct daxfs_err *err)
{
	struct stream *s = arg;
	struct player *l = &s->p->layers[s->i];

	daemon_exit_if_reaped(s->p->d);
	return registry_blob_open(s->p->d->reg, &s->p->ref, l->desc.digest,
				  l->desc.size, &s->blob, err);
}

static void stream_progress(void *arg, uint64_t bytes)
{
	struct stream *s = arg;
	uint64_t now = mono_ms();

	s->p->layers[s->i].bytes = bytes;
	if (now - s->last_event >= 100) {
		s->last_event = now;
		event(s->p, s->i, "downloading", bytes, NULL);
	}
}

static int stream_before_publish(void *arg, struct daxfs_err *err)
{
	struct stream *s = arg;

	(void)err;
	daemon_exit_if_reaped(s->p->d);
	return 0;
}

static int fetch_once(struct pull *p, size_t i, struct daxfs_err *err)
{
	struct player *l = &p->layers[i];
	struct stream s = { .p = p, .i = i, .err = err };
	struct unpack_job job = { 0 };
	struct unpack_result res;
	int rc;

	rc = unpack_media_type(l->desc.media_type, &job.compression);
	if (rc < 0)
		return daxfs_err_set(err, rc, "layer %zu: unsupported media type %s", i,
				     l->desc.media_type);
	job.open = stream_open;
	job.diff_id = l->diff_id;
	job.digest = l->desc.digest;
	job.read = stream_read;
	job.before_publish = stream_before_publish;
	job.arg = &s;
	job.progress = stream_progress;
	job.progress_arg = &s;
	event(p, i, "downloading", 0, NULL);
	rc = unpack_layer(p->d->fs, &job, &res, err);
	if (s.blob)
		registry_blob_close(s.blob);
	if (rc == 0)
		l->bytes = res.blob_bytes;
	return rc;
}

/* ---- room for a layer: the watermarks ---- */

/* One eviction at a time per daemon: parallel layer workers would only
 * race each other over the same candidates. */
static pthread_mutex_t gc_lock = PTHREAD_MUTEX_INITIALIZER;

static uint64_t pct(uint64_t total, uint32_t percent)
{
	return total / 100 * percent + total % 100 * percent / 100;
}

static uint64_t max64(uint64_t a, uint64_t b)
{
	return a > b ? a : b;
}

static void gc_logged(const struct daxfs_layer_info *li, void *arg)
{
	char di[72];

	(void)arg;
	digest_format(li->diff_id, di);
	log_info("evicting layer %s (%llu bytes unpacked)", di,
		 (unsigned long long)li->unpacked_bytes);
}

int region_make_room(struct daemon *d, uint64_t need_data, int more, struct daxfs_err *err)
{
	const struct settings *c = d->cfg;
	struct daxfs_gc_opts o = { .report = gc_logged };
	struct daxfs_gc_result r = { 0 };
	struct daxfs_usage u;
	uint64_t dfree, mfree;
	int rc;

	if (daxfs_usage(d->fs, &u) < 0)
		return 0;	/* nothing to judge by: let the unpack tell */
	dfree = u.data_total - u.data_used;
	mfree = u.meta_total - u.meta_used;
	if (!more && dfree >= pct(u.data_total, c->gc_low_watermark) &&
	    mfree >= pct(u.meta_total, c->gc_low_watermark) && dfree >= need_data)
		return 0;
	o.want_data = max64(pct(u.data_total, c->gc_target), need_data);
	o.want_meta = pct(u.meta_total, c->gc_target);
	if (more) {
		o.want_data = dfree + max64(o.want_data, need_data);
		o.want_meta = mfree + max64(o.want_meta, pct(u.meta_total, 1));
	}
	pthread_mutex_lock(&gc_lock);
	rc = daxfs_gc(d->fs, &o, &r, err);
	pthread_mutex_unlock(&gc_lock);
	if (rc < 0)
		return daxfs_err_prefix(err, "evicting unheld layers");
	if (r.evicted)
		log_info("evicted %llu layers: %llu data and %llu metadata bytes freed",
			 (unsigned long long)r.evicted, (unsigned long long)r.data_freed,
			 (unsigned long long)r.meta_freed);
	if (more && !r.evicted)
		return daxfs_gc_full_error(d->fs, &r, err);
	return 0;
}

/* Unpack layer i; if the region fills up, evict and try once more (the
 * failed attempt was rolled back by the builder's abort). */
static int fetch(struct pull *p, size_t i, struct daxfs_err *err)
{
	uint64_t need = 2 * p->layers[i].desc.size;
	int rc = region_make_room(p->d, need, 0, err);

	if (rc < 0)
		return rc;
	rc = fetch_once(p, i, err);
	if (rc != -ENOSPC)
		return rc;
	log_info("layer %zu: region full, evicting and trying again", i);
	memset(err, 0, sizeof(*err));
	rc = region_make_room(p->d, need, 1, err);
	if (rc < 0)
		return rc;
	rc = fetch_once(p, i, err);
	if (rc == -ENOSPC) {
		memset(err, 0, sizeof(*err));
		rc = region_make_room(p->d, need, 1, err);
		if (rc == 0)
			rc = daxfs_err_set(err, -ENOSPC,
					   "region full: layer %zu did not fit after evicting", i);
	}
	return rc;
}

/* Hold layer i (READY) until the pull ends.  -ENOENT if it is gone. */
static int hold(struct pull *p, size_t i, struct daxfs_err *err)
{
	struct player *l = &p->layers[i];

	if (l->hold)
		return 0;
	return daxfs_layer_open(p->d->fs, l->diff_id, &l->hold, err);
}

static void release_holds(struct pull *p)
{
	for (size_t i = 0; i < p->n; i++) {
		daxfs_layer_close(p->layers[i].hold);
		p->layers[i].hold = NULL;
	}
}

static const char *host_name_of(struct daemon *d, int slot, char *buf, size_t n)
{
	struct daxfs_host_info h[64];
	int cnt = daxfs_hosts_observe(d->fs, h, 64);

	snprintf(buf, n, "slot %d", slot);
	for (int k = 0; k < cnt && k < 64; k++)
		if (h[k].slot == slot && h[k].name[0])
			snprintf(buf, n, "%s", h[k].name);
	return buf;
}

struct waiting {
	struct pull *p;
	size_t i;
	const char *host;
};

static void waiting_event(uint64_t progress, void *arg)
{
	struct waiting *w = arg;

	event(w->p, w->i, "waiting", progress, w->host);
}

/* Another host is unpacking layer i: wait for it (see daemon.h). */
static int wait_for_other(struct pull *p, size_t i, const struct daxfs_layer_info *li,
			  struct daxfs_err *err)
{
	char name[80];
	struct waiting w = { p, i, name };

	host_name_of(p->d, li->claimant_slot, name, sizeof(name));
	event(p, i, "waiting", 0, name);
	return layer_wait_unpacked(p->d, p->layers[i].diff_id, waiting_event, &w, err);
}

int layer_wait_unpacked(struct daemon *d, const uint8_t diff_id[32],
			void (*moved)(uint64_t progress, void *arg), void *arg,
			struct daxfs_err *err)
{
	struct daxfs_layer_info now;
	uint64_t prog = 0, last;

	daxfs_layer_info(d->fs, diff_id, &now, &prog);
	last = prog;
	for (;;) {
		if (atomic_load(&d->stopping))
			return daxfs_err_set(err, -ECANCELED, "daemon is stopping");
		daemon_exit_if_reaped(d);
		usleep(20000);
		if (daxfs_layer_info(d->fs, diff_id, &now, &prog) < 0 ||
		    now.state != 1 /* UNPACKING */)
			return 0;
		if (prog != last) {
			last = prog;
			if (moved)
				moved(prog, arg);
		}
		/* Liveness is judged on our clock; reaping is a CAS, so if
		 * several hosts try, one does it. */
		if (daxfs_reap_dead(d->fs, err) < 0)
			log_warn("reaping: %s", err->msg);
	}
}

static int do_layer(struct pull *p, size_t i, struct daxfs_err *err)
{
	struct player *l = &p->layers[i];
	struct daxfs_layer_info li;
	int rc;

	for (int round = 0; round < 1000; round++) {
		if (daxfs_layer_info(p->d->fs, l->diff_id, &li, NULL) == 0) {
			if (li.state == 2 /* READY */) {
				/* Evicted between the look and the open: look again. */
				if (hold(p, i, err) < 0) {
					memset(err, 0, sizeof(*err));
					usleep(1000);
					continue;
				}
				if (l->status == L_PENDING)
					l->status = round ? L_SHARED : L_PRESENT;
				return 0;
			}
			if (li.state == 1 /* UNPACKING */) {
				rc = wait_for_other(p, i, &li, err);
				if (rc < 0)
					return rc;
				l->status = L_SHARED;
				continue;
			}
		}
		rc = fetch(p, i, err);
		if (rc == 0) {
			l->status = L_FETCHED;
			if (hold(p, i, err) == 0)
				return 0;
			memset(err, 0, sizeof(*err));	/* evicted already: again */
			continue;
		}
		if (rc != -EBUSY && rc != -EEXIST)
			return rc;
		memset(err, 0, sizeof(*err));	/* lost the claim: look again */
	}
	return daxfs_err_set(err, -EAGAIN, "layer %zu: claim keeps changing hands", i);
}

static void *worker(void *arg)
{
	struct pull *p = arg;
	size_t i;

	while ((i = atomic_fetch_add(&p->next, 1)) < p->n) {
		struct daxfs_err err = { 0 };
		char dg[72];

		if (atomic_load(&p->failed))
			break;
		if (p->layers[i].status != L_PENDING)
			continue;
		if (do_layer(p, i, &err) < 0) {
			digest_format(p->layers[i].desc.digest, dg);
			daxfs_err_prefix(&err, "layer %s", dg);
			p->layers[i].status = L_FAILED;
			fail(p, &err);
			event(p, i, "failed", 0, err.msg);
			break;
		}
		event(p, i, status_names[p->layers[i].status], p->layers[i].bytes, NULL);
	}
	return NULL;
}

/* ---- manifest, config, records ---- */

static int resolve(struct pull *p, const struct platform *plat, struct manifest *m,
		   uint8_t mdigest[32], struct daxfs_err *err)
{
	const char *reference = p->ref.digest[0] ? p->ref.digest : p->ref.tag;
	char *body = NULL, *ctype = NULL;
	unsigned int dl = 32;
	size_t len;
	int rc;

	rc = registry_get_manifest(p->d->reg, &p->ref, reference, &body, &len, &ctype, err);
	if (rc < 0)
		return rc;
	EVP_Digest(body, len, mdigest, &dl, EVP_sha256(), NULL);
	rc = manifest_parse(body, len, ctype, plat, m, err);
	free(body);
	free(ctype);
	if (rc < 0 || m->kind == MANIFEST_IMAGE)
		return rc;
	/* An index: fetch the manifest chosen for the platform. */
	{
		char dg[72];
		struct descriptor chosen = m->chosen;

		manifest_free(m);
		digest_format(chosen.digest, dg);
		rc = registry_get_manifest(p->d->reg, &p->ref, dg, &body, &len, &ctype, err);
		if (rc < 0)
			return rc;
		rc = manifest_parse(body, len, ctype, plat, m, err);
		free(body);
		free(ctype);
		if (rc == 0 && m->kind != MANIFEST_IMAGE)
			rc = daxfs_err_set(err, -EBADMSG, "index %s points to another index", dg);
	}
	return rc;
}

static int load_config(struct pull *p, const struct manifest *m,
		       struct image_config *cfg, struct daxfs_err *err)
{
	char *body = NULL;
	size_t len;
	int rc;

	rc = registry_get_blob(p->d->reg, &p->ref, m->config.digest, CONFIG_MAX, &body,
			       &len, err);
	if (rc < 0)
		return rc;
	rc = config_parse(body, len, cfg, err);
	free(body);
	if (rc == 0 && cfg->ndiff_ids != m->nlayers)
		rc = daxfs_err_set(err, -EBADMSG,
				   "image config lists %zu layers, the manifest %zu",
				   cfg->ndiff_ids, m->nlayers);
	return rc;
}

static int record(struct pull *p, const struct manifest *m, const uint8_t mdigest[32],
		  struct daxfs_err *err)
{
	struct daxfs_image_info im;
	int rc;

	for (size_t i = 0; i < p->n; i++) {
		struct daxfs_chain_info c = { 0 };

		memcpy(c.chain_id, p->layers[i].chain, 32);
		if (i)
			memcpy(c.parent, p->layers[i - 1].chain, 32);
		memcpy(c.diff_id, p->layers[i].diff_id, 32);
		c.depth = i + 1;
		rc = daxfs_chain_put(p->d->fs, &c, err);
		if (rc == 0)
			rc = daxfs_layer_alias(p->d->fs, p->layers[i].desc.digest,
					       p->layers[i].diff_id, err);
		if (rc < 0)
			return rc;
	}
	memset(&im, 0, sizeof(im));
	ref_format(&p->ref, im.ref, sizeof(im.ref));
	{
		struct daxfs_image_info old;

		/* A pull of a pinned image keeps it pinned. */
		if (daxfs_image_get(p->d->fs, im.ref, &old) == 0)
			im.flags = old.flags & DAXFS_IMAGE_PINNED;
	}
	memcpy(im.manifest, mdigest, 32);
	memcpy(im.config, m->config.digest, 32);
	if (p->n)
		memcpy(im.top_chain, p->layers[p->n - 1].chain, 32);
	im.nlayers = p->n;
	daemon_exit_if_reaped(p->d);
	rc = daxfs_image_put(p->d->fs, &im, err);
	/* Pinned before our holds go, so no eviction sees it unprotected. */
	if (rc == 0 && p->pin)
		rc = daxfs_image_pin(p->d->fs, im.ref, 1, err);
	return rc;
}

static json_t *summary(struct pull *p, const uint8_t mdigest[32], uint64_t ms)
{
	json_t *layers = json_array();
	uint64_t down = 0;
	char dg[72], di[72], md[72];

	for (size_t i = 0; i < p->n; i++) {
		struct player *l = &p->layers[i];

		digest_format(l->desc.digest, dg);
		digest_format(l->diff_id, di);
		if (l->status == L_FETCHED)
			down += l->bytes;
		json_array_append_new(layers, json_pack("{s:s, s:s, s:s, s:I}", "digest", dg,
					"diff_id", di, "status", status_names[l->status],
					"size", (json_int_t)l->desc.size));
	}
	digest_format(mdigest, md);
	return json_pack("{s:s, s:o, s:I, s:I}", "manifest", md, "layers", layers, "downloaded_bytes",
			 (json_int_t)down, "ms", (json_int_t)ms);
}

static int pull_layers(struct pull *p, struct daxfs_err *err)
{
	size_t nthreads = p->d->cfg->pull_concurrency;
	pthread_t t[32];
	size_t started = 0;

	if (nthreads > p->n)
		nthreads = p->n;
	for (; started < nthreads; started++)
		if (pthread_create(&t[started], NULL, worker, p))
			break;
	if (!started && p->n)
		worker(p);
	for (size_t k = 0; k < started; k++)
		pthread_join(t[k], NULL);
	if (atomic_load(&p->failed)) {
		*err = p->err;
		return -(err->code ? err->code : EIO);
	}
	return 0;
}

int pull_image(struct daemon *d, const char *refstr, const char *platform, int pin,
	       struct api_call *call, json_t **result, struct daxfs_err *err)
{
	struct pull p = { .d = d, .call = call, .pin = pin };
	struct manifest m = { 0 };
	struct image_config cfg = { 0 };
	struct platform plat = d->plat;
	uint8_t mdigest[32], *chains = NULL;
	uint64_t t0 = mono_ms();
	char norm[1024];
	int rc;

	pthread_mutex_init(&p.lock, NULL);
	rc = ref_parse(refstr, &p.ref, err);
	if (rc == 0 && platform && *platform)
		rc = platform_parse(platform, &plat, err);
	if (rc == 0)
		rc = resolve(&p, &plat, &m, mdigest, err);
	if (rc == 0)
		rc = load_config(&p, &m, &cfg, err);
	if (rc < 0)
		goto out;
	p.n = m.nlayers;
	p.layers = calloc(p.n ? p.n : 1, sizeof(*p.layers));
	chains = calloc(p.n ? p.n : 1, 32);
	if (!p.layers || !chains) {
		rc = daxfs_err_set(err, -ENOMEM, "out of memory");
		goto out;
	}
	chain_ids(cfg.diff_ids, cfg.ndiff_ids, chains);
	for (size_t i = 0; i < p.n; i++) {
		struct daxfs_chain_info ci;
		struct daxfs_layer_info li;
		struct daxfs_err skip_err = { 0 };	/* not held: pulled as usual */

		p.layers[i].desc = m.layers[i];
		memcpy(p.layers[i].diff_id, cfg.diff_ids + 32 * i, 32);
		memcpy(p.layers[i].chain, chains + 32 * i, 32);
		/* Already there: skip before fetching anything. */
		if (daxfs_chain_get(d->fs, p.layers[i].chain, &ci) == 0 &&
		    daxfs_layer_info(d->fs, ci.diff_id, &li, NULL) == 0 && li.state == 2 &&
		    hold(&p, i, &skip_err) == 0) {
			p.layers[i].status = L_PRESENT;
			event(&p, i, status_names[L_PRESENT], 0, NULL);
		}
	}
	rc = pull_layers(&p, err);
	if (rc == 0)
		rc = record(&p, &m, mdigest, err);
	if (rc == 0) {
		*result = summary(&p, mdigest, mono_ms() - t0);
		ref_format(&p.ref, norm, sizeof(norm));
		json_object_set_new(*result, "ref", json_string(norm));
		json_object_set_new(*result, "pinned", json_boolean(pin));
		log_info("pulled %s: %zu layers in %llu ms", norm, p.n,
			 (unsigned long long)(mono_ms() - t0));
	}
out:
	if (rc < 0)
		log_warn("pull %s: %s", refstr, err->msg);
	if (p.layers)
		release_holds(&p);
	free(p.layers);
	free(chains);
	manifest_free(&m);
	config_free(&cfg);
	pthread_mutex_destroy(&p.lock);
	return rc;
}
