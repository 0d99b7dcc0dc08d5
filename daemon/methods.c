/* The control API methods of daxfsd: a table of names and handlers. */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <time.h>
#include <stdio.h>
#include <string.h>

#include "daemon.h"
#include "ref.h"
#include "supervise.h"

static const char *const layer_states[] = {
	"absent", "unpacking", "ready", "evicting", "failed"
};

static const char *liveness(enum daxfs_liveness l)
{
	switch (l) {
	case DAXFS_HOST_ALIVE: return "alive";
	case DAXFS_HOST_SUSPECT: return "attached";
	case DAXFS_HOST_DEAD: return "dead";
	case DAXFS_HOST_REAPING: return "reaping";
	case DAXFS_HOST_GONE: return "detached";
	default: return "unused";
	}
}

static int m_ping(void *ctx, struct api_call *call, json_t *params, json_t **result,
		  struct daxfs_err *err)
{
	struct daemon *d = ctx;

	(void)call;
	(void)params;
	(void)err;
	*result = json_pack("{s:s, s:i, s:i}", "version", daxfs_version(),
			    "slot", daxfs_host_slot(d->fs),
			    "incarnation", (int)daxfs_host_incarnation(d->fs));
	return 0;
}

static int m_pull(void *ctx, struct api_call *call, json_t *params, json_t **result,
		  struct daxfs_err *err)
{
	const char *ref = json_string_value(json_object_get(params, "ref"));
	const char *plat = json_string_value(json_object_get(params, "platform"));
	int pin = json_is_true(json_object_get(params, "pin"));

	if (!ref)
		return daxfs_err_set(err, -EINVAL, "pull: no image reference");
	return pull_image(ctx, ref, plat, pin, call, result, err);
}

/* The image's reference as recorded (normalised). */
static int norm_ref(json_t *params, const char *what, char *norm, size_t len,
		    struct daxfs_err *err)
{
	const char *s = json_string_value(json_object_get(params, "ref"));
	struct image_ref r;
	int rc;

	if (!s)
		return daxfs_err_set(err, -EINVAL, "%s: no image reference", what);
	rc = ref_parse(s, &r, err);
	if (rc < 0)
		return rc;
	ref_format(&r, norm, len);
	return 0;
}

static int set_pin(struct daemon *d, json_t *params, int pin, json_t **result,
		   struct daxfs_err *err)
{
	char norm[1024];
	int rc = norm_ref(params, pin ? "pin" : "unpin", norm, sizeof(norm), err);

	if (rc < 0)
		return rc;
	rc = daxfs_image_pin(d->fs, norm, pin, err);
	if (rc == -ENOENT)
		return daxfs_err_set(err, rc, "image %s is not in the region; pull it first", norm);
	if (rc < 0)
		return rc;
	*result = json_pack("{s:s, s:b}", "ref", norm, "pinned", pin);
	return 0;
}

static int m_pin(void *ctx, struct api_call *call, json_t *params, json_t **result,
		 struct daxfs_err *err)
{
	(void)call;
	return set_pin(ctx, params, 1, result, err);
}

static int m_unpin(void *ctx, struct api_call *call, json_t *params, json_t **result,
		   struct daxfs_err *err)
{
	(void)call;
	return set_pin(ctx, params, 0, result, err);
}

struct image_walk {
	struct daemon *d;
	json_t *out;
};

/* How many of an image's layers are READY now (evicted ones are not). */
static uint64_t layers_present(struct daemon *d, const struct daxfs_image_info *im)
{
	struct daxfs_chain_info ci;
	struct daxfs_layer_info li;
	uint8_t chain[32];
	uint64_t n = 0;

	memcpy(chain, im->top_chain, 32);
	for (uint64_t i = 0; i < im->nlayers; i++) {
		if (daxfs_chain_get(d->fs, chain, &ci) < 0)
			break;
		if (daxfs_layer_info(d->fs, ci.diff_id, &li, NULL) == 0 && li.state == 2)
			n++;
		memcpy(chain, ci.parent, 32);
	}
	return n;
}

static int one_image(const struct daxfs_image_info *im, void *arg)
{
	struct image_walk *w = arg;
	char md[72], cf[72];

	digest_format(im->manifest, md);
	digest_format(im->config, cf);
	json_array_append_new(w->out, json_pack("{s:s, s:s, s:s, s:I, s:I, s:b}", "ref", im->ref,
		"manifest", md, "config", cf, "layers", (json_int_t)im->nlayers,
		"layers_present", (json_int_t)layers_present(w->d, im),
		"pinned", (im->flags & DAXFS_IMAGE_PINNED) != 0));
	return 0;
}

static int m_images(void *ctx, struct api_call *call, json_t *params, json_t **result,
		    struct daxfs_err *err)
{
	struct image_walk w = { ctx, json_array() };

	(void)call;
	(void)params;
	(void)err;
	daxfs_images_foreach(w.d->fs, one_image, &w);
	*result = json_pack("{s:o}", "images", w.out);
	return 0;
}

static int one_layer(const struct daxfs_layer_info *li, void *arg)
{
	char di[72], dg[72];
	bool has_digest = false;

	for (int i = 0; i < 32; i++)
		has_digest |= li->digest[i] != 0;
	digest_format(li->diff_id, di);
	digest_format(li->digest, dg);
	json_array_append_new(arg, json_pack("{s:s, s:s?, s:s, s:I, s:I, s:I, s:I, s:i, s:I}",
		"diff_id", di, "digest", has_digest ? dg : NULL,
		"state", li->state < 5 ? layer_states[li->state] : "?",
		"serial", (json_int_t)li->serial, "files", (json_int_t)li->files,
		"unpacked_bytes", (json_int_t)li->unpacked_bytes,
		"compressed_bytes", (json_int_t)li->compressed_bytes,
		"holders", __builtin_popcountll(li->holders),
		"holder_mask", (json_int_t)li->holders));
	json_object_set_new(json_array_get(arg, json_array_size(arg) - 1), "recently_used",
			    json_boolean(li->recently_used));
	return 0;
}

static int m_layers(void *ctx, struct api_call *call, json_t *params, json_t **result,
		    struct daxfs_err *err)
{
	struct daemon *d = ctx;
	json_t *a = json_array();

	(void)call;
	(void)params;
	(void)err;
	daxfs_layers_foreach(d->fs, one_layer, a);
	*result = json_pack("{s:o}", "layers", a);
	return 0;
}

static int m_rm(void *ctx, struct api_call *call, json_t *params, json_t **result,
		struct daxfs_err *err)
{
	struct daemon *d = ctx;
	char norm[1024];
	int rc;

	(void)call;
	rc = norm_ref(params, "rm", norm, sizeof(norm), err);
	if (rc < 0)
		return rc;
	rc = daxfs_image_remove(d->fs, norm, err);
	if (rc == 0)
		*result = json_pack("{s:s}", "removed", norm);
	return rc;
}

static int m_df(void *ctx, struct api_call *call, json_t *params, json_t **result,
		struct daxfs_err *err)
{
	struct daemon *d = ctx;
	struct daxfs_usage u;

	(void)call;
	(void)params;
	(void)err;
	daxfs_usage(d->fs, &u);
	*result = json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}",
		"region_bytes", (json_int_t)u.region_size,
		"data_bytes", (json_int_t)u.data_total, "data_used", (json_int_t)u.data_used,
		"meta_bytes", (json_int_t)u.meta_total, "meta_used", (json_int_t)u.meta_used,
		"contents", (json_int_t)u.contents, "content_bytes", (json_int_t)u.content_bytes,
		"referenced_bytes", (json_int_t)u.referenced_bytes,
		"layers_ready", (json_int_t)u.layers_ready,
		"layers_held", (json_int_t)u.layers_held,
		"layers_pinned", (json_int_t)u.layers_pinned,
		"held_bytes", (json_int_t)u.held_bytes,
		"reclaimable_bytes", (json_int_t)u.reclaimable_bytes);
	json_object_set_new(*result, "saved_bytes", json_integer(
		(json_int_t)(u.referenced_bytes > u.content_bytes ?
			     u.referenced_bytes - u.content_bytes : 0)));
	return 0;
}

/* ---- hosts: what this observer saw of each slot ---- */

#define WATCH_SLOTS 64

/* Keep sampling heartbeats between calls: liveness and heartbeat ages
 * are judged on our clock across samples. */
void hosts_watch(struct daemon *d)
{
	struct daxfs_host_info h[WATCH_SLOTS];

	(void)daxfs_hosts_observe(d->fs, h, WATCH_SLOTS);
}

static int count_held(const struct daxfs_layer_info *li, void *arg)
{
	uint64_t *held = arg;

	if (li->state != 2)
		return 0;
	for (int s = 0; s < WATCH_SLOTS; s++)
		if (li->holders & (1ull << s))
			held[s]++;
	return 0;
}

static int m_hosts(void *ctx, struct api_call *call, json_t *params, json_t **result,
		   struct daxfs_err *err)
{
	struct daemon *d = ctx;
	struct daxfs_host_info h[WATCH_SLOTS];
	uint64_t held[WATCH_SLOTS] = { 0 };
	json_t *a = json_array();
	int n = daxfs_hosts_observe(d->fs, h, WATCH_SLOTS);

	(void)call;
	(void)params;
	(void)err;
	daxfs_layers_foreach(d->fs, count_held, held);
	for (int i = 0; i < n && i < WATCH_SLOTS; i++) {
		char u[40];

		snprintf(u, sizeof(u),
			 "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
			 h[i].uuid[0], h[i].uuid[1], h[i].uuid[2], h[i].uuid[3], h[i].uuid[4],
			 h[i].uuid[5], h[i].uuid[6], h[i].uuid[7], h[i].uuid[8], h[i].uuid[9],
			 h[i].uuid[10], h[i].uuid[11], h[i].uuid[12], h[i].uuid[13],
			 h[i].uuid[14], h[i].uuid[15]);
		json_array_append_new(a, json_pack("{s:i, s:s, s:s, s:i, s:s, s:i, s:s, s:b}",
			"slot", h[i].slot, "name", h[i].name, "uuid", u,
			"incarnation", (int)h[i].incarnation, "liveness", liveness(h[i].liveness),
			"processes", h[i].nprocs, "version", h[i].version,
			"self", h[i].slot == daxfs_host_slot(d->fs)));
		json_object_set_new(json_array_get(a, json_array_size(a) - 1), "layers_held",
				    json_integer((json_int_t)held[h[i].slot & (WATCH_SLOTS - 1)]));
		json_object_set_new(json_array_get(a, json_array_size(a) - 1),
				    "heartbeat_age_ms",
				    json_integer((json_int_t)h[i].heartbeat_age_ms));
	}
	*result = json_pack("{s:o}", "hosts", a);
	return 0;
}

/* Counters of the containerd snapshotter: its CRI path and imports. */
static int m_stats(void *ctx, struct api_call *call, json_t *params, json_t **result,
		   struct daxfs_err *err)
{
	struct daemon *d = ctx;

	(void)call;
	(void)params;
	(void)err;
	*result = json_pack("{s:I, s:I, s:I}",
		"cri_pulls", (json_int_t)atomic_load(&d->cri_pulls),
		"cri_fallbacks", (json_int_t)atomic_load(&d->cri_fallbacks),
		"import_failures", (json_int_t)(d->import_failures ? d->import_failures() : 0));
	return 0;
}

/* ---- gc ---- */

static void gc_one(const struct daxfs_layer_info *li, void *arg)
{
	char di[72], id[16];

	digest_format(li->diff_id, di);
	daxfs_short_id(li->serial, id);
	json_array_append_new(arg, json_pack("{s:s, s:s, s:I, s:I}", "diff_id", di, "short_id", id,
		"unpacked_bytes", (json_int_t)li->unpacked_bytes,
		"compressed_bytes", (json_int_t)li->compressed_bytes));
}

static int m_gc(void *ctx, struct api_call *call, json_t *params, json_t **result,
		struct daxfs_err *err)
{
	struct daemon *d = ctx;
	json_t *layers = json_array();
	struct daxfs_gc_opts o = {
		.all = 1,
		.dry_run = json_is_true(json_object_get(params, "dry_run")),
		.report = gc_one,
		.arg = layers,
	};
	struct daxfs_gc_result r = { 0 };
	int rc;

	(void)call;
	rc = daxfs_gc(d->fs, &o, &r, err);
	if (rc < 0) {
		json_decref(layers);
		return rc;
	}
	*result = json_pack("{s:b, s:o, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}",
		"dry_run", o.dry_run, "layers", layers, "evicted", (json_int_t)r.evicted,
		"data_freed", (json_int_t)r.data_freed, "meta_freed", (json_int_t)r.meta_freed,
		"held", (json_int_t)r.held, "pinned", (json_int_t)r.pinned,
		"stale_cleared", (json_int_t)r.stale_cleared,
		"data_free", (json_int_t)r.data_free, "meta_free", (json_int_t)r.meta_free);
	return 0;
}

/* The view's short ids of an image's layers, top first, for mounting. */
static int m_image_layers(void *ctx, struct api_call *call, json_t *params,
			  json_t **result, struct daxfs_err *err)
{
	struct daemon *d = ctx;
	const char *s = json_string_value(json_object_get(params, "ref"));
	struct daxfs_image_info im;
	struct daxfs_chain_info ci;
	struct image_ref r;
	uint8_t chain[32];
	char norm[1024], mnt[4200];
	json_t *ids;
	int rc;

	(void)call;
	if (!s)
		return daxfs_err_set(err, -EINVAL, "no image reference");
	rc = ref_parse(s, &r, err);
	if (rc < 0)
		return rc;
	ref_format(&r, norm, sizeof(norm));
	if (daxfs_image_get(d->fs, norm, &im) < 0)
		return daxfs_err_set(err, -ENOENT, "image %s is not in the region; pull it first",
				     norm);
	ids = json_array();
	memcpy(chain, im.top_chain, 32);
	for (uint64_t i = 0; i < im.nlayers; i++) {
		struct daxfs_layer_info li;
		char id[16], dg[72];

		if (daxfs_chain_get(d->fs, chain, &ci) < 0 ||
		    daxfs_layer_info(d->fs, ci.diff_id, &li, NULL) < 0 || li.state != 2) {
			digest_format(chain, dg);
			json_decref(ids);
			return daxfs_err_set(err, -ENOENT,
					     "layer %" PRIu64 " (chain %s) of %s is not in the region; pull it again",
					     im.nlayers - i, dg, norm);
		}
		daxfs_short_id(li.serial, id);
		json_array_append_new(ids, json_string(id));
		memcpy(chain, ci.parent, 32);
	}
	view_mountpoint(d->cfg, mnt, sizeof(mnt));
	*result = json_pack("{s:s, s:s, s:o}", "ref", norm, "view", mnt, "layers", ids);
	return 0;
}

const struct api_method daemon_methods[] = {
	{ "image_layers", m_image_layers },
	{ "ping", m_ping },
	{ "pull", m_pull },
	{ "images", m_images },
	{ "layers", m_layers },
	{ "rm", m_rm },
	{ "df", m_df },
	{ "hosts", m_hosts },
	{ "stats", m_stats },
	{ "pin", m_pin },
	{ "unpin", m_unpin },
	{ "gc", m_gc },
	{ NULL, NULL },
};
