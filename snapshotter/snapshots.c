/* The Snapshots service: see snapshots.h.
 *
 * Errors travel as negative errnos with a message: -ENOENT NotFound,
 * -EEXIST AlreadyExists, -EINVAL InvalidArgument and -EBUSY
 * FailedPrecondition (the snapshot's kind or children forbid it). */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "daemon.h"
#include "filter.h"
#include "import.h"
#include "log.h"
#include "pins.h"
#include "ref.h"
#include "snapdir.h"
#include "snapshots.h"
#include "snapshots.pb-c.h"
#include "store.h"

#define P(x) Containerd__Services__Snapshots__V1__##x
typedef P(Info) Info;
typedef P(Info__LabelsEntry) InfoLabel;
typedef Google__Protobuf__Timestamp Timestamp;
typedef Containerd__Types__Mount Mount;

/* The label containerd's unpacker puts on a layer's Prepare. */
#define LABEL_SNAPSHOT_REF "containerd.io/snapshot.ref"
/* What CRI adds (containerd's pkg/snapshotters): the image and the
 * layer's blob digest. */
#define LABEL_CRI_IMAGE "containerd.io/snapshot/cri.image-ref"
#define LABEL_CRI_LAYER "containerd.io/snapshot/cri.layer-digest"
/* containerd's limit on a label (key and value together). */
#define LABEL_MAX 4096
/* Infos per ListSnapshotsResponse message. */
#define LIST_BATCH 100
/* How long a Prepare waits for the view to show a layer just published
 * (the view rescans twice a second). */
#define VIEW_WAIT_MS 2000

/* A region pull for CRI Prepares of one image: the first Prepare runs
 * it, the others wait for its outcome. */
struct cri_pull {
	char image[1024];
	unsigned refs;		/* the puller and its waiters */
	int done, rc;
	char msg[512];
	struct cri_pull *next;
};

struct snapshots {
	struct store *store;
	struct daemon *d;	/* NULL: no region, no remote snapshots */
	struct pins *pins;	/* the layers our records hold */
	struct importer *imp;	/* background import of unpacked layers */
	pthread_mutex_t lock;	/* unheld, pulls */
	pthread_cond_t pulled;
	struct cri_pull *pulls;	/* in flight */
	int64_t *unheld;	/* records whose layer could not be held at start */
	size_t nunheld;
	char base[4096];	/* ROOT/snapshots */
	char view[4096];	/* the view's mount point */
};

static int64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int fail(struct grpc_reply *r, int rc, const struct daxfs_err *err)
{
	int status;

	switch (-rc) {
	case ENOENT: status = GRPC_NOT_FOUND; break;
	case EEXIST: status = GRPC_ALREADY_EXISTS; break;
	case EINVAL: status = GRPC_INVALID_ARGUMENT; break;
	case EBUSY: status = GRPC_FAILED_PRECONDITION; break;
	case ENOMEM: status = GRPC_RESOURCE_EXHAUSTED; break;
	default: status = GRPC_UNKNOWN; break;
	}
	return grpc_reply_error(r, status, "%s", err->msg[0] ? err->msg : strerror(-rc));
}

static int reply(struct grpc_reply *r, const ProtobufCMessage *m)
{
	if (grpc_reply_message(r, m) < 0)
		return grpc_reply_error(r, GRPC_RESOURCE_EXHAUSTED, "out of memory");
	return GRPC_OK;
}

static int label_add(struct snap_info *i, const char *key, const char *value,
		     struct daxfs_err *err)
{
	if (strlen(key) + strlen(value) > LABEL_MAX)
		return daxfs_err_set(err, -EINVAL, "label %s: key and value longer than %d bytes",
				     key, LABEL_MAX);
	if (snap_label_set(i, key, value) < 0)
		return daxfs_err_set(err, -ENOMEM, "out of memory");
	return 0;
}

/* Every request's labels field has the same shape, not the same type. */
#define LABELS_FROM(info, msg, rc, err) \
	for (size_t j_ = 0; j_ < (msg)->n_labels && (rc) == 0; j_++) \
		(rc) = label_add((info), (msg)->labels[j_]->key, (msg)->labels[j_]->value, (err))

/* ---- Info messages ---- */

struct info_msg {
	Info info;
	Timestamp created, updated;
	InfoLabel *entries;
	InfoLabel **ptrs;
};

static void timestamp(Timestamp *t, int64_t ns)
{
	google__protobuf__timestamp__init(t);
	t->seconds = ns / 1000000000;
	t->nanos = (int32_t)(ns % 1000000000);
}

/* Borrows i's strings: i must outlive m. */
static int info_msg_init(struct info_msg *m, const struct snap_info *i)
{
	memset(m, 0, sizeof(*m));
	containerd__services__snapshots__v1__info__init(&m->info);
	m->info.name = i->name;
	m->info.parent = i->parent;
	m->info.kind = (P(Kind))i->kind;
	timestamp(&m->created, i->created_ns);
	timestamp(&m->updated, i->updated_ns);
	m->info.created_at = &m->created;
	m->info.updated_at = &m->updated;
	if (!i->nlabels)
		return 0;
	m->entries = calloc(i->nlabels, sizeof(*m->entries));
	m->ptrs = calloc(i->nlabels, sizeof(*m->ptrs));
	if (!m->entries || !m->ptrs) {
		free(m->entries);
		free(m->ptrs);
		return -ENOMEM;
	}
	for (size_t j = 0; j < i->nlabels; j++) {
		containerd__services__snapshots__v1__info__labels_entry__init(&m->entries[j]);
		m->entries[j].key = i->labels[j].key;
		m->entries[j].value = i->labels[j].value;
		m->ptrs[j] = &m->entries[j];
	}
	m->info.n_labels = i->nlabels;
	m->info.labels = m->ptrs;
	return 0;
}

static void info_msg_free(struct info_msg *m)
{
	free(m->entries);
	free(m->ptrs);
}

/* ---- mounts ---- */

struct mount_msg {
	Mount mount;
	Mount *ptr;
	char *options[8];
	char *own[4];		/* strings we allocated */
};

static void mount_msg_free(struct mount_msg *m)
{
	for (size_t i = 0; i < sizeof(m->own) / sizeof(m->own[0]); i++)
		free(m->own[i]);
}

/* ---- region layers held by records ---- */

/* The region layer record i keeps held: 1 with its diff_id, or 0. */
static int record_layer(struct snapshots *ss, const struct snap_info *i, uint8_t diff_id[32])
{
	struct daxfs_chain_info ci;
	uint8_t chain[32];

	if (i->layer && i->layer[0])
		return digest_parse(i->layer, diff_id) == 0;
	/* A remote record written before layers were recorded: it is
	 * named by its chain. */
	if (!i->dir || !i->dir[0] || !ss->d || digest_parse(i->name, chain) < 0 ||
	    daxfs_chain_get(ss->d->fs, chain, &ci) < 0)
		return 0;
	memcpy(diff_id, ci.diff_id, 32);
	return 1;
}

static void unheld_add(struct snapshots *ss, int64_t id)
{
	int64_t *v;

	pthread_mutex_lock(&ss->lock);
	v = realloc(ss->unheld, (ss->nunheld + 1) * sizeof(*v));
	if (v) {
		ss->unheld = v;
		v[ss->nunheld++] = id;
	}
	pthread_mutex_unlock(&ss->lock);
}

/* Was record id one whose layer we could not hold?  Then it is not any
 * more (it is being removed, or a new hold was taken for it). */
static int unheld_take(struct snapshots *ss, int64_t id)
{
	int found = 0;

	pthread_mutex_lock(&ss->lock);
	for (size_t k = 0; k < ss->nunheld && !found; k++)
		if (ss->unheld[k] == id) {
			ss->unheld[k] = ss->unheld[--ss->nunheld];
			found = 1;
		}
	pthread_mutex_unlock(&ss->lock);
	return found;
}

/* Hold record i's layer, when it has one (at start, from the records). */
static int hold_record(struct snap_info *i, void *arg)
{
	struct snapshots *ss = arg;
	struct daxfs_err err = { 0 };
	uint8_t diff_id[32];

	if (!record_layer(ss, i, diff_id)) {
		if (i->dir[0]) {
			log_warn("snapshotter: snapshot %s: its layer's chain is no longer in the "
				 "region; it cannot be mounted", i->name);
			unheld_add(ss, i->id);
		}
		return 0;
	}
	if (pins_hold(ss->pins, diff_id, &err) < 0) {
		log_warn("snapshotter: snapshot %s: %s; it cannot be mounted", i->name, err.msg);
		unheld_add(ss, i->id);
	}
	return 0;
}

/* The directory holding snapshot i's files: for a remote snapshot its
 * held layer's directory in the view. */
static int files_dir(struct snapshots *ss, const struct snap_info *i, char *out, size_t len,
		     struct daxfs_err *err)
{
	uint8_t diff_id[32];
	uint64_t serial;
	char id[16];

	if (!i->dir || !i->dir[0]) {
		snapdir_path(ss->base, i->id, "fs", out, len);
		return 0;
	}
	if (!ss->pins || !record_layer(ss, i, diff_id) ||
	    pins_serial(ss->pins, diff_id, &serial) < 0)
		return daxfs_err_set(err, -EBUSY, "snapshot %s: its layer is no longer in the "
				     "region; remove the image and pull it again", i->name);
	daxfs_short_id(serial, id);
	snprintf(out, len, "%s/l/%s", ss->view, id);
	return 0;
}

/* "dir1:dir2:..." of i's ancestors, nearest first; *n counts them. */
static int lowerdirs(struct snapshots *ss, const struct snap_info *i, char **out, int *n,
		     struct daxfs_err *err)
{
	int64_t id = i->parent_id;
	size_t len = 0, cap = 0;
	char *s = NULL;

	*n = 0;
	while (id) {
		struct snap_info p;
		char dir[4200];
		size_t dl;
		int rc = store_get_id(ss->store, id, &p, err);

		/* An imported snapshot names the view's copy once it is in. */
		if (rc == 0)
			rc = import_files_dir(ss->imp, &p, i->id, dir, sizeof(dir), err);
		if (rc == 0)
			rc = files_dir(ss, &p, dir, sizeof(dir), err);
		id = p.parent_id;
		snap_info_free(&p);
		if (rc < 0) {
			free(s);
			return rc;
		}
		dl = strlen(dir);
		if (len + dl + 2 > cap) {
			char *ns;

			cap = (len + dl + 2) * 2;
			ns = realloc(s, cap);
			if (!ns) {
				free(s);
				return daxfs_err_set(err, -ENOMEM, "out of memory");
			}
			s = ns;
		}
		if (len)
			s[len++] = ':';
		memcpy(s + len, dir, dl + 1);
		len += dl;
		(*n)++;
	}
	*out = s;
	return 0;
}

static char *printf_dup(const char *fmt, const char *arg)
{
	char *s = NULL;

	return asprintf(&s, fmt, arg) < 0 ? NULL : s;
}

/* As containerd's overlay snapshotter: a bind mount without parents
 * (and for a view of a single parent: overlayfs needs two lower
 * directories or an upper one), else an overlay. */
static int mounts_of(struct snapshots *ss, const struct snap_info *i, struct mount_msg *m,
		     struct daxfs_err *err)
{
	char dir[4200], *lower = NULL;
	size_t k = 0;
	int n, rc;

	memset(m, 0, sizeof(*m));
	containerd__types__mount__init(&m->mount);
	m->ptr = &m->mount;
	rc = lowerdirs(ss, i, &lower, &n, err);
	if (rc < 0)
		return rc;
	if (n == 0 || (n == 1 && i->kind == SNAP_VIEW)) {
		m->mount.type = "bind";
		if (n == 0 && (rc = files_dir(ss, i, dir, sizeof(dir), err)) < 0)
			return rc;
		m->mount.source = m->own[0] = strdup(n ? lower : dir);
		m->options[k++] = i->kind == SNAP_ACTIVE ? "rw" : "ro";
		m->options[k++] = "rbind";
	} else {
		m->mount.type = "overlay";
		m->mount.source = "overlay";
		m->options[k++] = "index=off";
		m->options[k++] = "redirect_dir=off";
		m->options[k++] = "metacopy=off";
		if (i->kind == SNAP_ACTIVE) {
			snapdir_path(ss->base, i->id, "work", dir, sizeof(dir));
			m->options[k++] = m->own[1] = printf_dup("workdir=%s", dir);
			snapdir_path(ss->base, i->id, "fs", dir, sizeof(dir));
			m->options[k++] = m->own[2] = printf_dup("upperdir=%s", dir);
		}
		m->options[k++] = m->own[3] = printf_dup("lowerdir=%s", lower);
	}
	free(lower);
	m->mount.n_options = k;
	m->mount.options = m->options;
	for (size_t j = 0; j < k; j++)
		if (!m->options[j] || (j == 0 && !m->mount.source)) {
			mount_msg_free(m);
			return daxfs_err_set(err, -ENOMEM, "out of memory");
		}
	return 0;
}

/* ---- Prepare and View ---- */

/* Hold the layer of chain ref if it is READY in the region (after
 * waiting while it is being unpacked) and shown by the view: 1 with its
 * directory in dir, ni's layer and usage set and one hold the caller
 * owns; else 0 with the reason in err. */
static int region_layer(struct snapshots *ss, const char *ref, char *dir, size_t len,
			struct snap_info *ni, struct daxfs_err *err)
{
	struct daxfs_chain_info ci;
	struct daxfs_layer_info li;
	uint8_t chain[32];
	uint64_t serial = 0;
	char id[16], dg[72];
	struct stat st;

	if (!ss->d || digest_parse(ref, chain) < 0 || daxfs_chain_get(ss->d->fs, chain, &ci) < 0) {
		daxfs_err_set(err, -ENOENT, "chain %s is not in the region", ref);
		return 0;
	}
	if (daxfs_layer_info(ss->d->fs, ci.diff_id, &li, NULL) == 0 && li.state == 1) {
		log_info("snapshotter: chain %s is being unpacked (host slot %d); waiting", ref,
			 li.claimant_slot);
		if (layer_wait_unpacked(ss->d, ci.diff_id, NULL, NULL, err) < 0)
			return 0;
	}
	/* Held before anything is recorded or answered: from here on no
	 * eviction can take the layer. */
	if (pins_hold(ss->pins, ci.diff_id, err) < 0)
		return 0;
	pins_serial(ss->pins, ci.diff_id, &serial);
	daxfs_short_id(serial, id);
	snprintf(dir, len, "%s/l/%s", ss->view, id);
	for (int waited = 0; stat(dir, &st) < 0 || !S_ISDIR(st.st_mode); waited += 50) {
		struct timespec ts = { 0, 50000000 };

		if (waited >= VIEW_WAIT_MS) {
			pins_release(ss->pins, ci.diff_id);
			daxfs_err_set(err, -ENOENT, "the view does not show %s", dir);
			return 0;
		}
		nanosleep(&ts, NULL);
	}
	if (daxfs_layer_info(ss->d->fs, ci.diff_id, &li, NULL) == 0) {
		ni->size = (int64_t)li.unpacked_bytes;
		ni->inodes = (int64_t)li.files;
	}
	digest_format(ci.diff_id, dg);
	ni->layer = strdup(dg);
	if (!ni->layer) {
		pins_release(ss->pins, ci.diff_id);
		daxfs_err_set(err, -ENOMEM, "out of memory");
		return 0;
	}
	return 1;
}

/* The parent of a new snapshot: it must exist and be committed. */
static int get_parent(struct snapshots *ss, const char *parent, int64_t *id,
		      struct daxfs_err *err)
{
	struct snap_info p;
	int rc;

	*id = 0;
	if (!parent[0])
		return 0;
	rc = store_get(ss->store, parent, &p, err);
	if (rc == -ENOENT)
		return daxfs_err_set(err, rc, "parent snapshot %s does not exist", parent);
	if (rc < 0)
		return rc;
	*id = p.id;
	rc = p.kind == SNAP_COMMITTED ? 0 :
		daxfs_err_set(err, -EINVAL, "parent %s is not a committed snapshot", parent);
	snap_info_free(&p);
	return rc;
}

/* Undo what a failed remote() put in ni. */
static void remote_forget(struct snap_info *ni)
{
	free(ni->name);
	free(ni->parent);
	free(ni->dir);
	free(ni->layer);
	ni->name = ni->parent = ni->dir = ni->layer = NULL;
	ni->size = ni->inodes = 0;
}

/* A layer the region already has: record (or find) the committed
 * snapshot named ref, holding its layer.  1 when there is one (the
 * caller answers AlreadyExists), 0 to go the local way (the reason in
 * err). */
static int remote(struct snapshots *ss, const char *ref, const char *parent,
		  struct snap_info *ni, struct daxfs_err *err)
{
	struct snap_info old;
	uint8_t diff_id[32];
	char dir[4200];
	int rc, keep = 0;

	if (!region_layer(ss, ref, dir, sizeof(dir), ni, err))
		return 0;
	digest_parse(ni->layer, diff_id);
	rc = store_begin(ss->store, err);
	if (rc < 0)
		goto out;
	rc = store_get(ss->store, ref, &old, err);
	if (rc == 0) {
		/* Ours only if it sits on the same parent.  It holds its
		 * layer already, unless that failed at start: then this
		 * hold becomes its. */
		rc = old.kind == SNAP_COMMITTED && !strcmp(old.parent, parent) ? 1 : 0;
		keep = rc == 1 && unheld_take(ss, old.id);
		if (rc == 0)
			daxfs_err_set(err, -EEXIST, "snapshot %s exists on another parent", ref);
		snap_info_free(&old);
		if (store_end(ss->store, 0, err) < 0)
			rc = 0;
		goto out;
	}
	if (rc == -ENOENT)
		rc = get_parent(ss, parent, &ni->parent_id, err);
	if (rc == 0) {
		ni->name = strdup(ref);
		ni->parent = strdup(parent);
		ni->dir = strdup(dir);
		ni->kind = SNAP_COMMITTED;
		rc = ni->name && ni->parent && ni->dir ? store_insert(ss->store, ni, err) :
			daxfs_err_set(err, -ENOMEM, "out of memory");
	}
	rc = store_end(ss->store, rc, err) == 0;
	keep = rc;	/* the new record owns the hold */
out:
	if (!keep)
		pins_release(ss->pins, diff_id);
	if (rc != 1)
		remote_forget(ni);
	return rc == 1;
}

/* Pull image into the region for a CRI Prepare: one pull per image at a
 * time, the Prepares that come while it runs wait for its outcome. */
static int cri_pull(struct snapshots *ss, const char *image, struct daxfs_err *err)
{
	struct cri_pull *p, **pp;
	json_t *res = NULL;
	int rc;

	pthread_mutex_lock(&ss->lock);
	for (p = ss->pulls; p && strcmp(p->image, image); p = p->next)
		;
	if (p) {
		p->refs++;
		while (!p->done)
			pthread_cond_wait(&ss->pulled, &ss->lock);
		rc = p->rc;
		if (rc < 0)
			daxfs_err_set(err, rc, "%s", p->msg);
	} else if (strlen(image) >= sizeof(p->image) || !(p = calloc(1, sizeof(*p)))) {
		pthread_mutex_unlock(&ss->lock);
		return daxfs_err_set(err, -EINVAL, "cannot pull %.100s", image);
	} else {
		memcpy(p->image, image, strlen(image) + 1);
		p->refs = 1;
		p->next = ss->pulls;
		ss->pulls = p;
		pthread_mutex_unlock(&ss->lock);
		atomic_fetch_add(&ss->d->cri_pulls, 1);
		log_info("snapshotter: pulling %s into the region for containerd", image);
		rc = pull_image(ss->d, image, NULL, 0, NULL, &res, err);
		json_decref(res);
		pthread_mutex_lock(&ss->lock);
		p->done = 1;
		p->rc = rc;
		snprintf(p->msg, sizeof(p->msg), "%s", rc < 0 ? err->msg : "");
		for (pp = &ss->pulls; *pp != p; pp = &(*pp)->next)
			;
		*pp = p->next;
		pthread_cond_broadcast(&ss->pulled);
	}
	if (--p->refs == 0)
		free(p);
	pthread_mutex_unlock(&ss->lock);
	return rc;
}

/* A Prepare labelled with chain ref: 1 if a remote snapshot answers it.
 * With CRI's labels and the chain not in the region, the image is pulled
 * into the region first; if that does not give the chain, containerd
 * unpacks the layer itself (a fallback, logged and counted). */
static int remote_or_pull(struct snapshots *ss, const char *key, const char *ref,
			  const char *parent, struct snap_info *ni)
{
	const char *image = snap_label_get(ni, LABEL_CRI_IMAGE);
	const char *layer = snap_label_get(ni, LABEL_CRI_LAYER);
	struct daxfs_err why = { 0 };

	if (remote(ss, ref, parent, ni, &why))
		return 1;
	if (!image || !layer || !ss->d)
		return 0;
	memset(&why, 0, sizeof(why));
	if (cri_pull(ss, image, &why) == 0) {
		if (remote(ss, ref, parent, ni, &why))
			return 1;
	} else {
		daxfs_err_prefix(&why, "pull failed");
	}
	atomic_fetch_add(&ss->d->cri_fallbacks, 1);
	log_warn("snapshotter: %s: layer %s of %s is unpacked by containerd: %s", key, layer,
		 image, why.msg);
	return 0;
}

static int create_local(struct snapshots *ss, const char *key, const char *parent,
			struct snap_info *ni, struct mount_msg *m, struct daxfs_err *err)
{
	int rc, made = 0;

	ni->name = strdup(key);
	ni->parent = strdup(parent);
	if (!ni->name || !ni->parent)
		return daxfs_err_set(err, -ENOMEM, "out of memory");
	rc = store_begin(ss->store, err);
	if (rc < 0)
		return rc;
	rc = get_parent(ss, parent, &ni->parent_id, err);
	if (rc == 0)
		rc = store_insert(ss->store, ni, err);
	if (rc == 0) {
		rc = snapdir_create(ss->base, ni->id, ni->kind == SNAP_ACTIVE, err);
		made = rc == 0;
	}
	if (rc == 0)
		rc = mounts_of(ss, ni, m, err);
	if (rc < 0 && made)
		mount_msg_free(m);
	rc = store_end(ss->store, rc, err);
	if (rc < 0 && made)
		snapdir_remove(ss->base, ni->id);
	return rc;
}

/* Prepare (kind ACTIVE) or View (kind VIEW); labels are already in ni. */
static int create(struct snapshots *ss, int kind, const char *key, const char *parent,
		  struct snap_info *ni, struct mount_msg *m, struct daxfs_err *err)
{
	const char *ref = snap_label_get(ni, LABEL_SNAPSHOT_REF);

	if (!key[0])
		return daxfs_err_set(err, -EINVAL, "snapshot key is empty");
	ni->kind = kind;
	ni->created_ns = ni->updated_ns = now_ns();
	if (kind == SNAP_ACTIVE && ref && strcmp(ref, key)) {
		if (remote_or_pull(ss, key, ref, parent, ni))
			return daxfs_err_set(err, -EEXIST, "target snapshot %s: already exists", ref);
		ni->kind = kind;
	}
	return create_local(ss, key, parent, ni, m, err);
}

/* Prepare and View: requests and answers of the same shape in different
 * protobuf types; rc and err carry the outcome of reading the labels. */
static int create_reply(void *ctx, int kind, const char *key, const char *parent,
			struct snap_info *ni, int rc, struct daxfs_err *err,
			ProtobufCMessage *resp, size_t *n_mounts, Mount ***mounts,
			struct grpc_reply *r)
{
	struct mount_msg m;

	if (rc == 0)
		rc = create(ctx, kind, key, parent, ni, &m, err);
	snap_info_free(ni);
	if (rc < 0)
		return fail(r, rc, err);
	*n_mounts = 1;
	*mounts = &m.ptr;
	rc = reply(r, resp);
	mount_msg_free(&m);
	return rc;
}

static int h_prepare(void *ctx, const ProtobufCMessage *msg, struct grpc_reply *r)
{
	const P(PrepareSnapshotRequest) *q = (const void *)msg;
	P(PrepareSnapshotResponse) resp = CONTAINERD__SERVICES__SNAPSHOTS__V1__PREPARE_SNAPSHOT_RESPONSE__INIT;
	struct daxfs_err err = { 0 };
	struct snap_info ni = { 0 };
	int rc = 0;

	LABELS_FROM(&ni, q, rc, &err);
	return create_reply(ctx, SNAP_ACTIVE, q->key, q->parent, &ni, rc, &err, &resp.base,
			    &resp.n_mounts, &resp.mounts, r);
}

static int h_view(void *ctx, const ProtobufCMessage *msg, struct grpc_reply *r)
{
	const P(ViewSnapshotRequest) *q = (const void *)msg;
	P(ViewSnapshotResponse) resp = CONTAINERD__SERVICES__SNAPSHOTS__V1__VIEW_SNAPSHOT_RESPONSE__INIT;
	struct daxfs_err err = { 0 };
	struct snap_info ni = { 0 };
	int rc = 0;

	LABELS_FROM(&ni, q, rc, &err);
	return create_reply(ctx, SNAP_VIEW, q->key, q->parent, &ni, rc, &err, &resp.base,
			    &resp.n_mounts, &resp.mounts, r);
}

/* ---- Mounts, Stat, Usage ---- */

/* Read key's record in a transaction of its own. */
static int lookup(struct snapshots *ss, const char *key, struct snap_info *i,
		  struct daxfs_err *err)
{
	int rc = store_begin(ss->store, err);

	if (rc < 0)
		return rc;
	rc = store_get(ss->store, key, i, err);
	return store_end(ss->store, rc, err);
}

static int h_mounts(void *ctx, const ProtobufCMessage *msg, struct grpc_reply *r)
{
	const P(MountsRequest) *q = (const void *)msg;
	P(MountsResponse) resp = CONTAINERD__SERVICES__SNAPSHOTS__V1__MOUNTS_RESPONSE__INIT;
	struct snapshots *ss = ctx;
	struct daxfs_err err = { 0 };
	struct snap_info i;
	struct mount_msg m;
	int rc = store_begin(ss->store, &err);

	if (rc < 0)
		return fail(r, rc, &err);
	rc = store_get(ss->store, q->key, &i, &err);
	if (rc == 0) {
		if (i.kind == SNAP_COMMITTED)
			rc = daxfs_err_set(&err, -EBUSY, "snapshot %s is committed: not active or view",
					   q->key);
		else
			rc = mounts_of(ss, &i, &m, &err);
		snap_info_free(&i);
	}
	rc = store_end(ss->store, rc, &err);
	if (rc < 0)
		return fail(r, rc, &err);
	resp.n_mounts = 1;
	resp.mounts = &m.ptr;
	rc = reply(r, &resp.base);
	mount_msg_free(&m);
	return rc;
}

/* Reply with one message carrying i's Info in its field "info". */
#define REPLY_INFO(resp_type, init, r, i, status) \
	do { \
		resp_type resp_ = init; \
		struct info_msg im_; \
		if (info_msg_init(&im_, (i)) < 0) { \
			(status) = grpc_reply_error((r), GRPC_RESOURCE_EXHAUSTED, "out of memory"); \
			break; \
		} \
		resp_.info = &im_.info; \
		(status) = reply((r), &resp_.base); \
		info_msg_free(&im_); \
	} while (0)

static int h_stat(void *ctx, const ProtobufCMessage *msg, struct grpc_reply *r)
{
	const P(StatSnapshotRequest) *q = (const void *)msg;
	struct daxfs_err err = { 0 };
	struct snap_info i;
	struct snapshots *ss = ctx;
	int rc = lookup(ss, q->key, &i, &err);

	if (rc == 0 && (rc = import_describe(ss->imp, &i, &err)) < 0)
		snap_info_free(&i);
	if (rc < 0)
		return fail(r, rc, &err);
	REPLY_INFO(P(StatSnapshotResponse),
		   CONTAINERD__SERVICES__SNAPSHOTS__V1__STAT_SNAPSHOT_RESPONSE__INIT, r, &i, rc);
	snap_info_free(&i);
	return rc;
}

static int h_usage(void *ctx, const ProtobufCMessage *msg, struct grpc_reply *r)
{
	const P(UsageRequest) *q = (const void *)msg;
	P(UsageResponse) resp = CONTAINERD__SERVICES__SNAPSHOTS__V1__USAGE_RESPONSE__INIT;
	struct snapshots *ss = ctx;
	struct daxfs_err err = { 0 };
	struct snap_info i;
	uint8_t diff_id[32];
	int rc = lookup(ss, q->key, &i, &err);

	if (rc < 0)
		return fail(r, rc, &err);
	resp.size = i.size;
	resp.inodes = i.inodes;
	if (record_layer(ss, &i, diff_id)) {
		struct daxfs_layer_info li;

		/* A remote snapshot: what its layer holds, unpacked. */
		if (daxfs_layer_info(ss->d->fs, diff_id, &li, NULL) == 0) {
			resp.size = (int64_t)li.unpacked_bytes;
			resp.inodes = (int64_t)li.files;
		}
	} else if (i.kind == SNAP_ACTIVE) {
		char dir[4200];

		/* Still changing: measured now, not recorded. */
		snapdir_path(ss->base, i.id, "fs", dir, sizeof(dir));
		rc = snapdir_usage(dir, &resp.size, &resp.inodes);
		if (rc < 0)
			daxfs_err_set(&err, rc, "usage of %s: %s", dir, strerror(-rc));
	}
	snap_info_free(&i);
	if (rc < 0)
		return fail(r, rc, &err);
	return reply(r, &resp.base);
}

/* ---- Commit, Remove, Update ---- */

static int commit(struct snapshots *ss, const P(CommitSnapshotRequest) *q,
		  struct daxfs_err *err)
{
	struct snap_info i;
	int64_t size = 0, inodes = 0, id;
	char dir[4200];
	int rc = lookup(ss, q->key, &i, err);

	if (rc < 0)
		return rc;
	id = i.id;
	rc = i.kind == SNAP_ACTIVE ? 0 :
		daxfs_err_set(err, -EBUSY, "snapshot %s is not active", q->key);
	snap_info_free(&i);
	if (rc < 0)
		return rc;
	/* Measured outside the lock: a big layer takes a while. */
	snapdir_path(ss->base, id, "fs", dir, sizeof(dir));
	rc = snapdir_usage(dir, &size, &inodes);
	if (rc < 0)
		return daxfs_err_set(err, rc, "usage of %s: %s", dir, strerror(-rc));
	rc = store_begin(ss->store, err);
	if (rc < 0)
		return rc;
	rc = store_get(ss->store, q->key, &i, err);
	if (rc == 0 && (i.id != id || i.kind != SNAP_ACTIVE))
		rc = daxfs_err_set(err, -EBUSY, "snapshot %s changed while committing", q->key);
	if (rc == 0) {
		/* containerd's rules: new times, labels replaced, not merged. */
		char *name = strdup(q->name);

		free(i.name);
		i.name = name;
		i.kind = SNAP_COMMITTED;
		i.created_ns = i.updated_ns = now_ns();
		i.size = size;
		i.inodes = inodes;
		while (i.nlabels)
			snap_label_set(&i, i.labels[0].key, NULL);
		rc = name ? 0 : daxfs_err_set(err, -ENOMEM, "out of memory");
		LABELS_FROM(&i, q, rc, err);
		if (rc == 0)
			rc = store_update(ss->store, &i, err);
		if (rc == 0)
			rc = import_commit(ss->imp, &i, q->key, err);
	}
	snap_info_free(&i);
	rc = store_end(ss->store, rc, err);
	if (rc == 0)
		import_kick(ss->imp);
	return rc;
}

static int h_commit(void *ctx, const ProtobufCMessage *msg, struct grpc_reply *r)
{
	Google__Protobuf__Empty resp = GOOGLE__PROTOBUF__EMPTY__INIT;
	struct daxfs_err err = { 0 };
	const P(CommitSnapshotRequest) *q = (const void *)msg;
	int rc;

	if (!q->name[0])
		return grpc_reply_error(r, GRPC_INVALID_ARGUMENT, "snapshot name is empty");
	rc = commit(ctx, q, &err);
	if (rc < 0)
		return fail(r, rc, &err);
	return reply(r, &resp.base);
}

static int h_remove(void *ctx, const ProtobufCMessage *msg, struct grpc_reply *r)
{
	Google__Protobuf__Empty resp = GOOGLE__PROTOBUF__EMPTY__INIT;
	const P(RemoveSnapshotRequest) *q = (const void *)msg;
	struct snapshots *ss = ctx;
	struct daxfs_err err = { 0 };
	struct snap_info i = { 0 };
	int64_t local = 0, id = 0;
	uint8_t diff_id[32];
	int held = 0;
	int rc = store_begin(ss->store, &err);

	if (rc < 0)
		return fail(r, rc, &err);
	rc = store_get(ss->store, q->key, &i, &err);
	if (rc == 0)
		rc = store_has_children(ss->store, i.id, &err);
	if (rc == 1)
		rc = daxfs_err_set(&err, -EBUSY, "cannot remove snapshot %s with child", q->key);
	if (rc == 0) {
		rc = store_delete(ss->store, i.id, &err);
		/* A remote snapshot's directory is the view's, not ours. */
		local = i.dir[0] ? 0 : i.id;
		id = i.id;
		held = record_layer(ss, &i, diff_id);
	}
	snap_info_free(&i);
	rc = store_end(ss->store, rc, &err);
	if (rc < 0)
		return fail(r, rc, &err);
	/* The record is gone: so is its hold (if it had one). */
	if (held && !unheld_take(ss, id))
		pins_release(ss->pins, diff_id);
	/* After the commit: a crash before this leaves a directory that
	 * Cleanup (and the next start) removes. */
	if (local)
		snapdir_remove(ss->base, local);
	import_kick(ss->imp);
	return reply(r, &resp.base);
}

/* Apply the update mask to i's labels, as containerd does. */
static int update_labels(struct snap_info *i, const Info *in, const ProtobufCMessage *mask_msg,
			 struct daxfs_err *err)
{
	const Google__Protobuf__FieldMask *mask = (const void *)mask_msg;
	struct snap_info want = { 0 };
	int rc = 0, all = !mask || !mask->n_paths;

	LABELS_FROM(&want, in, rc, err);
	for (size_t p = 0; rc == 0 && mask && p < mask->n_paths; p++) {
		const char *path = mask->paths[p];

		if (!strcmp(path, "labels"))
			all = 1;
		else if (!strncmp(path, "labels.", 7))
			rc = snap_label_set(i, path + 7, snap_label_get(&want, path + 7));
		else
			rc = daxfs_err_set(err, -EINVAL, "cannot update %s field on snapshot %s",
					   path, i->name);
	}
	if (rc == 0 && all) {
		while (i->nlabels)
			snap_label_set(i, i->labels[0].key, NULL);
		for (size_t j = 0; rc == 0 && j < want.nlabels; j++)
			rc = snap_label_set(i, want.labels[j].key, want.labels[j].value);
	}
	snap_info_free(&want);
	return rc;
}

static int h_update(void *ctx, const ProtobufCMessage *msg, struct grpc_reply *r)
{
	const P(UpdateSnapshotRequest) *q = (const void *)msg;
	struct snapshots *ss = ctx;
	struct daxfs_err err = { 0 };
	struct snap_info i = { 0 };
	int rc;

	if (!q->info || !q->info->name[0])
		return grpc_reply_error(r, GRPC_INVALID_ARGUMENT, "no snapshot named");
	rc = store_begin(ss->store, &err);
	if (rc < 0)
		return fail(r, rc, &err);
	rc = store_get(ss->store, q->info->name, &i, &err);
	if (rc == 0)
		rc = update_labels(&i, q->info, q->update_mask ? &q->update_mask->base : NULL,
				   &err);
	if (rc == 0) {
		i.updated_ns = now_ns();
		rc = store_update(ss->store, &i, &err);
	}
	rc = store_end(ss->store, rc, &err);
	if (rc < 0) {
		snap_info_free(&i);
		return fail(r, rc, &err);
	}
	REPLY_INFO(P(UpdateSnapshotResponse),
		   CONTAINERD__SERVICES__SNAPSHOTS__V1__UPDATE_SNAPSHOT_RESPONSE__INIT, r, &i, rc);
	snap_info_free(&i);
	return rc;
}

/* ---- List ---- */

struct list {
	struct filter *filter;
	struct snap_info *v;
	size_t n, cap;
};

static const char *kind_name(int kind)
{
	return kind == SNAP_VIEW ? "view" : kind == SNAP_ACTIVE ? "active" :
		kind == SNAP_COMMITTED ? "committed" : NULL;
}

/* The fields a filter can name, as containerd's snapshot adaptor has them. */
static int field(void *arg, char *const *path, size_t n, const char **value)
{
	const struct snap_info *i = arg;
	char key[4200];
	size_t len = 0;

	if (!strcmp(path[0], "kind"))
		return (*value = kind_name(i->kind)) != NULL;
	if (!strcmp(path[0], "name") || !strcmp(path[0], "parent")) {
		*value = path[0][0] == 'n' ? i->name : i->parent;
		return 1;
	}
	if (strcmp(path[0], "labels") || !i->nlabels)
		return 0;
	key[0] = 0;
	for (size_t j = 1; j < n; j++) {
		int k = snprintf(key + len, sizeof(key) - len, "%s%s", j > 1 ? "." : "", path[j]);

		if (k < 0 || (size_t)k >= sizeof(key) - len)
			return 0;
		len += (size_t)k;
	}
	return (*value = snap_label_get(i, key)) != NULL;
}

static int list_add(struct snap_info *i, void *arg)
{
	struct list *l = arg;

	if (!filter_match(l->filter, field, i))
		return 0;
	if (l->n == l->cap) {
		size_t cap = l->cap ? l->cap * 2 : 64;
		struct snap_info *v = realloc(l->v, cap * sizeof(*v));

		if (!v)
			return -ENOMEM;
		l->v = v;
		l->cap = cap;
	}
	l->v[l->n++] = *i;
	memset(i, 0, sizeof(*i));	/* moved */
	return 0;
}

static int list_send(struct list *l, struct grpc_reply *r)
{
	int status = GRPC_OK;

	for (size_t start = 0; start < l->n && status == GRPC_OK; start += LIST_BATCH) {
		P(ListSnapshotsResponse) resp = CONTAINERD__SERVICES__SNAPSHOTS__V1__LIST_SNAPSHOTS_RESPONSE__INIT;
		size_t n = l->n - start < LIST_BATCH ? l->n - start : LIST_BATCH, k;
		struct info_msg m[LIST_BATCH];
		Info *ptrs[LIST_BATCH];

		for (k = 0; k < n; k++) {
			if (info_msg_init(&m[k], &l->v[start + k]) < 0)
				break;
			ptrs[k] = &m[k].info;
		}
		resp.n_info = k;
		resp.info = ptrs;
		status = k < n ? grpc_reply_error(r, GRPC_RESOURCE_EXHAUSTED, "out of memory") :
			reply(r, &resp.base);
		while (k)
			info_msg_free(&m[--k]);
	}
	return status;
}

static int h_list(void *ctx, const ProtobufCMessage *msg, struct grpc_reply *r)
{
	const P(ListSnapshotsRequest) *q = (const void *)msg;
	struct snapshots *ss = ctx;
	struct daxfs_err err = { 0 };
	struct list l = { 0 };
	int rc = filter_parse(q->filters, q->n_filters, &l.filter, &err);

	if (rc < 0)
		return fail(r, rc, &err);
	rc = store_begin(ss->store, &err);
	if (rc == 0) {
		rc = store_foreach(ss->store, list_add, &l, &err);
		if (rc == -ENOMEM)
			daxfs_err_set(&err, rc, "out of memory");
		rc = store_end(ss->store, rc, &err);
	}
	filter_free(l.filter);
	rc = rc < 0 ? fail(r, rc, &err) : list_send(&l, r);
	for (size_t j = 0; j < l.n; j++)
		snap_info_free(&l.v[j]);
	free(l.v);
	return rc;
}

/* ---- Cleanup ---- */

struct ids {
	int64_t *v;
	size_t n, cap;
};

static int ids_add(struct snap_info *i, void *arg)
{
	struct ids *s = arg;

	if (i->dir[0])
		return 0;
	if (s->n == s->cap) {
		size_t cap = s->cap ? s->cap * 2 : 64;
		int64_t *v = realloc(s->v, cap * sizeof(*v));

		if (!v)
			return -ENOMEM;
		s->v = v;
		s->cap = cap;
	}
	s->v[s->n++] = i->id;	/* in id order */
	return 0;
}

static int ids_has(int64_t id, void *arg)
{
	const struct ids *s = arg;
	size_t lo = 0, hi = s->n;

	while (lo < hi) {
		size_t mid = (lo + hi) / 2;

		if (s->v[mid] == id)
			return 1;
		if (s->v[mid] < id)
			lo = mid + 1;
		else
			hi = mid;
	}
	return 0;
}

int snapshots_cleanup(struct snapshots *ss, struct daxfs_err *err)
{
	struct ids ids = { 0 };
	int64_t last = 0;
	int rc = store_begin(ss->store, err);

	if (rc < 0)
		return rc;
	rc = store_foreach(ss->store, ids_add, &ids, err);
	if (rc == 0)
		rc = store_last_id(ss->store, &last, err);
	rc = store_end(ss->store, rc, err);
	/* Ids above last belong to calls that began after we looked. */
	if (rc == 0 && snapdir_prune(ss->base, last, ids_has, &ids) < 0)
		rc = daxfs_err_set(err, -EBUSY, "some directories under %s could not be removed",
				   ss->base);
	free(ids.v);
	return rc;
}

static int h_cleanup(void *ctx, const ProtobufCMessage *msg, struct grpc_reply *r)
{
	Google__Protobuf__Empty resp = GOOGLE__PROTOBUF__EMPTY__INIT;
	struct daxfs_err err = { 0 };
	int rc = snapshots_cleanup(ctx, &err);

	(void)msg;
	if (rc < 0)
		return fail(r, rc, &err);
	return reply(r, &resp.base);
}

/* ---- the service ---- */

#define METHOD(name, req, fn) \
	{ "/containerd.services.snapshots.v1.Snapshots/" name, \
	  &containerd__services__snapshots__v1__##req##__descriptor, fn }

const struct grpc_method snapshots_methods[] = {
	METHOD("Prepare", prepare_snapshot_request, h_prepare),
	METHOD("View", view_snapshot_request, h_view),
	METHOD("Mounts", mounts_request, h_mounts),
	METHOD("Commit", commit_snapshot_request, h_commit),
	METHOD("Remove", remove_snapshot_request, h_remove),
	METHOD("Stat", stat_snapshot_request, h_stat),
	METHOD("Update", update_snapshot_request, h_update),
	METHOD("List", list_snapshots_request, h_list),
	METHOD("Usage", usage_request, h_usage),
	METHOD("Cleanup", cleanup_request, h_cleanup),
	{ NULL, NULL, NULL },
};

int snapshots_open(const char *root, const char *view, struct daemon *d,
		   struct snapshots **out, struct daxfs_err *err)
{
	struct snapshots *ss = calloc(1, sizeof(*ss));
	char db[4200];
	int rc;

	if (!ss)
		return daxfs_err_set(err, -ENOMEM, "out of memory");
	ss->d = d;
	pthread_mutex_init(&ss->lock, NULL);
	pthread_cond_init(&ss->pulled, NULL);
	snprintf(ss->base, sizeof(ss->base), "%s/snapshots", root);
	snprintf(ss->view, sizeof(ss->view), "%s", view);
	snprintf(db, sizeof(db), "%s/snapshots.db", root);
	if (mkdir(ss->base, 0700) < 0 && errno != EEXIST) {
		rc = daxfs_err_set(err, -errno, "create %s: %s", ss->base, strerror(errno));
		goto fail;
	}
	rc = store_open(db, &ss->store, err);
	if (rc < 0)
		goto fail;
	if (d && pins_new(d->fs, &ss->pins) < 0) {
		rc = daxfs_err_set(err, -ENOMEM, "out of memory");
		goto fail;
	}
	/* The records say which layers this host needs: hold them again. */
	if (ss->pins) {
		rc = store_begin(ss->store, err);
		if (rc == 0)
			rc = store_end(ss->store, store_foreach(ss->store, hold_record, ss, err), err);
		if (rc < 0)
			goto fail;
	}
	rc = import_open(ss->store, d, ss->pins, ss->base, ss->view, &ss->imp,
			 err);
	if (rc < 0)
		goto fail;
	*out = ss;
	return 0;
fail:
	snapshots_close(ss);
	return rc;
}

void snapshots_close(struct snapshots *ss)
{
	if (!ss)
		return;
	import_close(ss->imp);
	store_close(ss->store);
	pins_free(ss->pins);
	free(ss->unheld);
	pthread_cond_destroy(&ss->pulled);
	pthread_mutex_destroy(&ss->lock);
	free(ss);
}

uint64_t snapshots_import_failures(struct snapshots *ss)
{
	return ss && ss->imp ? import_failures(ss->imp) : 0;
}
