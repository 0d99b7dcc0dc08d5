/* Host slots: attach, heartbeat, liveness on the observer's clock, detach.
 *
 * Liveness never uses a timestamp written by another host: an observer
 * remembers when, on its own monotonic clock, it last saw a host's
 * heartbeat counters move. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "alloc.h"
#include "cache.h"
#include "host.h"
#include "reap.h"

static void sleep_ms(uint32_t ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

/* claim_new_slot writes a slot's uuid just after the CAS that makes the
 * slot LIVE, while other attachers may already be comparing it: its bytes
 * are accessed as relaxed atomics.  (Such an attacher may still see the
 * slot's previous uuid for a moment.) */
static void uuid_store(struct dfs_host *h, const uint8_t uuid[16])
{
	for (int i = 0; i < 16; i++)
		__atomic_store_n(&h->uuid[i], uuid[i], __ATOMIC_RELAXED);
}

static void uuid_copy(uint8_t out[16], struct dfs_host *h)
{
	for (int i = 0; i < 16; i++)
		out[i] = __atomic_load_n(&h->uuid[i], __ATOMIC_RELAXED);
}

static bool uuid_equal(struct dfs_host *h, const uint8_t uuid[16])
{
	uint8_t u[16];

	uuid_copy(u, h);
	return !memcmp(u, uuid, 16);
}

static uint32_t proc_kind(struct dfs_proc *p)
{
	return __atomic_load_n(&p->kind, __ATOMIC_RELAXED);
}

/* Sum of the heartbeats of slot's processes of incarnation inc; with
 * daemons_only, of its daemons alone. */
static uint64_t beats_of(struct daxfs *fs, int slot, uint32_t inc, bool daemons_only)
{
	struct dfs_host *h = &fs->hosts[slot];
	uint64_t sum = 0;

	for (unsigned i = 0; i < DFS_PROCS_PER_HOST; i++) {
		struct dfs_proc *p = &h->procs[i];

		if (atomic_load_explicit(&p->claim, memory_order_acquire) != inc)
			continue;
		if (daemons_only && proc_kind(p) != DAXFS_PROC_DAEMON)
			continue;
		sum += atomic_load_explicit(&p->heartbeat, memory_order_relaxed);
	}
	return sum;
}

uint64_t host_beats(struct daxfs *fs, int slot, uint32_t inc)
{
	return beats_of(fs, slot, inc, false);
}

static bool has_daemon(struct daxfs *fs, int slot, uint32_t inc)
{
	struct dfs_host *h = &fs->hosts[slot];

	for (unsigned i = 0; i < DFS_PROCS_PER_HOST; i++)
		if (atomic_load_explicit(&h->procs[i].claim, memory_order_acquire) == inc &&
		    proc_kind(&h->procs[i]) == DAXFS_PROC_DAEMON)
			return true;
	return false;
}

/* The heartbeats that keep incarnation inc alive: its daemons' while it
 * has one (a stalled daxfsd is reaped even if its view beats on, so its
 * unpack claims are taken over), else every process's (the daemon
 * stopped cleanly, the view still serves). */
static uint64_t liveness_beats(struct daxfs *fs, int slot, uint32_t inc)
{
	return beats_of(fs, slot, inc, has_daemon(fs, slot, inc));
}

bool host_holds_stale(struct daxfs *fs, int slot, uint64_t now)
{
	struct host_obs *o = &fs->obs[slot];
	struct dfs_host *h = &fs->hosts[slot];
	uint64_t w = atomic_load_explicit(&h->owner, memory_order_acquire);
	uint64_t sum = 0;

	/* Every entry, claimed or not: a reaped host's view keeps beating
	 * on the entry whose claim its reaper cleared. */
	for (unsigned i = 0; i < DFS_PROCS_PER_HOST; i++)
		sum += atomic_load_explicit(&h->procs[i].heartbeat, memory_order_relaxed);
	if (!o->all_seen || o->all_beats != sum) {
		o->all_seen = true;
		o->all_beats = sum;
		o->all_changed_ms = now;
		return false;
	}
	if (DFS_OWNER_STATE(w) != DFS_HOST_RETIRED ||
	    (DFS_OWNER_FLAGS(w) & DFS_OWNER_HOLDS_CLEARED))
		return false;
	return now - o->all_changed_ms >= (uint64_t)fs->lease_ms + fs->grace_ms;
}

enum daxfs_liveness host_observe_slot(struct daxfs *fs, int slot, uint64_t now)
{
	struct host_obs *o = &fs->obs[slot];
	uint64_t w = atomic_load_explicit(&fs->hosts[slot].owner,
					  memory_order_acquire);
	uint64_t beats;

	switch (DFS_OWNER_STATE(w)) {
	case DFS_HOST_FREE:
		return DAXFS_HOST_UNUSED;
	case DFS_HOST_RETIRED:
	case DFS_HOST_CLEARING:
		return DAXFS_HOST_GONE;
	case DFS_HOST_REAPING:
		return DAXFS_HOST_REAPING;
	default:
		break;
	}
	if (slot == fs->slot && DFS_OWNER_INC(w) == fs->inc)
		return DAXFS_HOST_ALIVE;
	beats = liveness_beats(fs, slot, DFS_OWNER_INC(w));
	if (!o->changed_ms || o->owner != w || o->beats != beats) {
		o->seen = o->changed_ms != 0 && o->owner == w;
		o->owner = w;
		o->beats = beats;
		o->changed_ms = now;
		return o->seen ? DAXFS_HOST_ALIVE : DAXFS_HOST_SUSPECT;
	}
	if (now - o->changed_ms < fs->lease_ms)
		return o->seen ? DAXFS_HOST_ALIVE : DAXFS_HOST_SUSPECT;
	return DAXFS_HOST_DEAD;
}

int daxfs_hosts_observe(struct daxfs *fs, struct daxfs_host_info *out, int max)
{
	uint64_t now = now_ms();
	int n = 0;

	pthread_mutex_lock(&fs->lock);
	for (uint32_t s = 0; s < fs->sb.max_hosts; s++) {
		struct dfs_host *h = &fs->hosts[s];
		struct host_obs *o = &fs->obs[s];
		enum daxfs_liveness l = host_observe_slot(fs, (int)s, now);
		uint64_t w, age = 0;

		if ((int)s != fs->slot)
			host_holds_stale(fs, (int)s, now);	/* starts the watch */
		if (l == DAXFS_HOST_UNUSED)
			continue;
		/* A host no longer LIVE is watched through every heartbeat of
		 * its slot (host_holds_stale), a live one through the beats
		 * that keep it alive; our own slot beats with us. */
		if ((int)s == fs->slot)
			age = 0;
		else if (l == DAXFS_HOST_GONE || l == DAXFS_HOST_REAPING)
			age = o->all_seen ? now - o->all_changed_ms : 0;
		else
			age = o->changed_ms ? now - o->changed_ms : 0;
		if (n < max) {
			struct daxfs_host_info *i = &out[n];

			w = atomic_load_explicit(&h->owner, memory_order_acquire);
			memset(i, 0, sizeof(*i));
			i->slot = (int)s;
			uuid_copy(i->uuid, h);
			memcpy(i->name, h->name, DFS_NAME_MAX);
			memcpy(i->version, h->version, DFS_VERSION_MAX);
			i->incarnation = DFS_OWNER_INC(w);
			i->liveness = l;
			i->heartbeat_age_ms = age;
			for (unsigned p = 0; p < DFS_PROCS_PER_HOST; p++)
				if (atomic_load_explicit(&h->procs[p].claim,
							 memory_order_relaxed) == i->incarnation)
					i->nprocs++;
		}
		n++;
	}
	pthread_mutex_unlock(&fs->lock);
	return n;
}

/* Watch a slot's heartbeat for up to the lease: 1 if it moved. */
static int slot_heartbeat_moves(struct daxfs *fs, int slot, uint32_t inc)
{
	/* Only a daemon's heartbeat says another daemon is running: the
	 * host's FUSE view outlives daemon restarts and keeps beating. */
	uint64_t start = now_ms(), b0 = beats_of(fs, slot, inc, true);
	uint32_t step = fs->lease_ms / 8 ? fs->lease_ms / 8 : 1;

	while (now_ms() - start < fs->lease_ms) {
		uint64_t b, w;

		sleep_ms(step);
		b = beats_of(fs, slot, inc, true);
		/* Owner after beats: a peer that reaps the incarnation CASes
		 * REAPING before it releases the claims, which changes the
		 * sum; that is no daemon of ours at work. */
		w = atomic_load_explicit(&fs->hosts[slot].owner, memory_order_acquire);
		if (DFS_OWNER_INC(w) != inc)
			return 1;
		if (DFS_OWNER_STATE(w) != DFS_HOST_LIVE)
			return 0;
		if (b != b0)
			return 1;
	}
	return 0;
}

static int find_slot(struct daxfs *fs, const uint8_t uuid[16])
{
	for (uint32_t s = 0; s < fs->sb.max_hosts; s++) {
		uint64_t w = atomic_load_explicit(&fs->hosts[s].owner,
						  memory_order_acquire);

		if (DFS_OWNER_STATE(w) != DFS_HOST_FREE &&
		    uuid_equal(&fs->hosts[s], uuid))
			return (int)s;
	}
	return -1;
}

/* Take a never-used slot (or a retired one of another host) for uuid:
 * free slots first, then retired ones whose holder bits are cleared, then
 * any retired one.  The bits such a slot still carries belong to a host
 * that is gone for good (a host finds its slot by uuid, and this one now
 * has ours): they are cleared before we can set any of our own. */
static int claim_new_slot(struct daxfs *fs, const uint8_t uuid[16],
			  uint32_t *inc)
{
	for (int pass = 0; pass < 3; pass++) {
		for (uint32_t s = 0; s < fs->sb.max_hosts; s++) {
			struct dfs_host *h = &fs->hosts[s];
			uint64_t w = atomic_load_explicit(&h->owner,
							  memory_order_acquire);
			unsigned want = pass ? DFS_HOST_RETIRED : DFS_HOST_FREE;
			bool cleared = DFS_OWNER_FLAGS(w) & DFS_OWNER_HOLDS_CLEARED;

			if (DFS_OWNER_STATE(w) != want || (pass == 1 && !cleared))
				continue;
			*inc = DFS_OWNER_INC(w) + 1;
			if (atomic_compare_exchange_strong_explicit(&h->owner, &w,
					DFS_OWNER(*inc, DFS_HOST_LIVE, 0),
					memory_order_acq_rel, memory_order_acquire)) {
				uuid_store(h, uuid);
				if (pass == 2 && !cleared)
					holds_clear_slot(fs, (int)s, NULL, 0);
				return (int)s;
			}
		}
	}
	return -ENOSPC;
}

/* Another host is clearing the stale holder bits of slot s: wait until it
 * is done, or, if that host died, hand the slot back to RETIRED with the
 * bits that are left (clearing is only ever an optimisation for others;
 * our own restarted daemon re-syncs its bits itself). */
static void clearing_wait(struct daxfs *fs, int s)
{
	uint32_t step = fs->lease_ms / 8 ? fs->lease_ms / 8 : 1;

	for (;;) {
		_Atomic uint64_t *ow = &fs->hosts[s].owner;
		uint64_t w = atomic_load_explicit(ow, memory_order_acquire);
		unsigned c1 = DFS_OWNER_REAPER1(w);
		enum daxfs_liveness lv = DAXFS_HOST_GONE;

		if (DFS_OWNER_STATE(w) != DFS_HOST_CLEARING)
			return;
		if (c1 && c1 <= fs->sb.max_hosts) {
			pthread_mutex_lock(&fs->lock);
			lv = host_observe_slot(fs, (int)c1 - 1, now_ms());
			pthread_mutex_unlock(&fs->lock);
		}
		if (lv == DAXFS_HOST_ALIVE || lv == DAXFS_HOST_SUSPECT) {
			sleep_ms(step);
			continue;
		}
		atomic_compare_exchange_strong_explicit(ow, &w,
				DFS_OWNER(DFS_OWNER_INC(w), DFS_HOST_RETIRED, 0),
				memory_order_acq_rel, memory_order_relaxed);
	}
}

static int claim_proc(struct daxfs *fs, int slot, uint32_t inc, bool daemon);
static void set_label(char *dst, size_t n, const char *src);

/* Our own previous incarnation (slot s, inc) died.  Reaping it takes a live
 * identity of our own: a slot whose heartbeat shows we are at it (so no
 * one takes the reap over) and a journal for the undo bookkeeping (which
 * whoever takes over settles first).  So we attach, for the time of the
 * reap, as a host of a spare slot, under a uuid no real host has (version
 * nibble 0xf), reap as any host would, and retire that slot. */
static int reap_own(struct daxfs *fs, const uint8_t uuid[16], int s,
		    uint32_t inc, struct daxfs_err *err)
{
	uint8_t tmp[16];
	char label[DFS_NAME_MAX];
	uint32_t rinc;
	int rs, p, rc;

	memcpy(tmp, uuid, 16);
	tmp[6] = (uint8_t)(tmp[6] | 0xf0);
	rs = claim_new_slot(fs, tmp, &rinc);
	if (rs < 0)
		return daxfs_err_set(err, -EAGAIN,
				     "host slot %d: its incarnation %u died, and no spare "
				     "slot is free to reap it from; another attached host "
				     "must reap it", s, inc);
	p = claim_proc(fs, rs, rinc, true);
	snprintf(label, sizeof(label), "reaping slot %d", s);
	set_label(fs->hosts[rs].name, DFS_NAME_MAX, label);
	fs->slot = rs;
	fs->inc = rinc;
	fs->proc = p;
	fs->daemon = true;
	rc = p < 0 ? -EAGAIN : daxfs_heartbeat_start(fs);
	if (rc == 0) {
		daxfs_heartbeat(fs);
		rc = reap_host(fs, s, inc, err);
	}
	if (rc == -EAGAIN)
		daxfs_err_set(err, rc, "host slot %d: its incarnation %u died and "
			      "another host is reaping it; try again", s, inc);
	if (p < 0) {
		uint64_t w = DFS_OWNER(rinc, DFS_HOST_LIVE, 0);

		atomic_compare_exchange_strong_explicit(&fs->hosts[rs].owner, &w,
				DFS_OWNER(rinc, DFS_HOST_RETIRED, 0),
				memory_order_acq_rel, memory_order_relaxed);
	} else {
		host_detach(fs);
	}
	fs->slot = -1;
	fs->inc = 0;
	fs->proc = -1;
	fs->daemon = false;
	return rc;
}

/* Claim uuid's slot as a new incarnation (daemon attach). */
static int claim_slot(struct daxfs *fs, const uint8_t uuid[16], uint32_t *inc,
		      struct daxfs_err *err)
{
	/* A peer may be reaping our previous incarnation (it died with
	 * a daemon claimed): wait for it, a few leases at most. */
	uint64_t wait_end = now_ms() + 4 * (uint64_t)fs->lease_ms;
	uint32_t step = fs->lease_ms / 8 ? fs->lease_ms / 8 : 1;

	for (int tries = 0; tries < 8; tries++) {
		int s = find_slot(fs, uuid), rc;
		uint64_t w;

		if (s < 0) {
			s = claim_new_slot(fs, uuid, inc);
			if (s < 0)
				return daxfs_err_set(err, s,
						     "all %u host slots are in use",
						     fs->sb.max_hosts);
			return s;
		}
		w = atomic_load_explicit(&fs->hosts[s].owner, memory_order_acquire);
		if (DFS_OWNER_STATE(w) == DFS_HOST_CLEARING) {
			clearing_wait(fs, s);
			continue;
		}
		if (DFS_OWNER_STATE(w) == DFS_HOST_LIVE) {
			if (slot_heartbeat_moves(fs, s, DFS_OWNER_INC(w)))
				return daxfs_err_set(err, -EBUSY,
						     "host slot %d (incarnation %u) is in use: "
						     "its heartbeat is moving; is another daemon "
						     "of this host running?", s, DFS_OWNER_INC(w));
		}
		if (DFS_OWNER_STATE(w) != DFS_HOST_RETIRED) {
			/* Our own previous incarnation died: reap it first. */
			rc = reap_own(fs, uuid, s, DFS_OWNER_INC(w), err);
			if (rc == -EAGAIN && now_ms() < wait_end) {
				sleep_ms(step);
				tries--;
				continue;
			}
			if (rc < 0 && (rc != -EAGAIN || tries == 7))
				return rc;
			continue;
		}
		*inc = DFS_OWNER_INC(w) + 1;
		if (atomic_compare_exchange_strong_explicit(&fs->hosts[s].owner, &w,
				DFS_OWNER(*inc, DFS_HOST_LIVE, 0),
				memory_order_acq_rel, memory_order_acquire))
			return s;
	}
	return daxfs_err_set(err, -EAGAIN, "host slot keeps changing under us");
}

static int claim_proc(struct daxfs *fs, int slot, uint32_t inc, bool daemon)
{
	struct dfs_host *h = &fs->hosts[slot];

	/* Free entries first; then entries of older incarnations, a view's
	 * last (a view may still be serving and about to rejoin). */
	for (int pass = 0; pass < 3; pass++) {
		for (unsigned i = 0; i < DFS_PROCS_PER_HOST; i++) {
			struct dfs_proc *p = &h->procs[i];
			uint64_t c = atomic_load_explicit(&p->claim, memory_order_acquire);

			if (c == inc || (c > inc && !daemon))
				continue;
			if (pass == 0 && c != 0)
				continue;
			if (pass == 1 && proc_kind(p) == DAXFS_PROC_VIEW)
				continue;
			atomic_store_explicit(&p->reader_epoch, 0, memory_order_relaxed);
			if (atomic_compare_exchange_strong_explicit(&p->claim, &c, inc,
					memory_order_acq_rel, memory_order_acquire))
				return (int)i;
		}
	}
	return -ENOSPC;
}

static void set_label(char *dst, size_t n, const char *src)
{
	size_t len = src ? strnlen(src, n - 1) : 0;

	memset(dst, 0, n);
	memcpy(dst, src ? src : "", len);
}

int daxfs_host_attach(struct daxfs *fs, const struct daxfs_host_opts *o,
		      struct daxfs_err *err)
{
	bool daemon = o->kind == DAXFS_PROC_DAEMON;
	uint32_t inc = 0;
	int s, p;

	if (fs->readonly)
		return daxfs_err_set(err, -EROFS, "region opened read-only");
	if (daemon) {
		s = claim_slot(fs, o->uuid, &inc, err);
		if (s < 0)
			return s;
	} else {
		uint64_t w;

		s = find_slot(fs, o->uuid);
		w = s >= 0 ? atomic_load_explicit(&fs->hosts[s].owner,
						  memory_order_acquire) : 0;
		if (s < 0 || DFS_OWNER_STATE(w) != DFS_HOST_LIVE)
			return daxfs_err_set(err, -ENOENT,
					     "host is not attached to the region; start its daemon first");
		inc = DFS_OWNER_INC(w);
	}
	p = claim_proc(fs, s, inc, daemon);
	if (p < 0)
		return daxfs_err_set(err, p, "no free process entry in host slot %d", s);
	__atomic_store_n(&fs->hosts[s].procs[p].kind, (uint32_t)o->kind, __ATOMIC_RELAXED);
	/* The daemon names the host; a process joining it without a name
	 * keeps that label. */
	if (daemon || (o->name && *o->name))
		set_label(fs->hosts[s].name, DFS_NAME_MAX, o->name);
	set_label(fs->hosts[s].version, DFS_VERSION_MAX, DAXFS_VERSION_STRING);
	fs->slot = s;
	fs->inc = inc;
	fs->proc = p;
	fs->daemon = daemon;
	fs->view = o->kind == DAXFS_PROC_VIEW;
	daxfs_heartbeat(fs);
	return 0;
}

void daxfs_heartbeat(struct daxfs *fs)
{
	if (fs->slot < 0)
		return;
	/* Relaxed: observers only need to see the counter move eventually. */
	atomic_fetch_add_explicit(&fs->hosts[fs->slot].procs[fs->proc].heartbeat,
				  1, memory_order_relaxed);
}

static void *heartbeat_main(void *arg)
{
	struct daxfs *fs = arg;
	/* A quarter of the lease, and at most 200 ms: a beat is one relaxed
	 * add, and a tool sampling for half a second (daxfsctl info) then
	 * sees every live host's heartbeat move. */
	uint32_t step = fs->lease_ms / 4 < 200 ? fs->lease_ms / 4 : 200;

	if (!step)
		step = 1;

	while (atomic_load_explicit(&fs->hb_run, memory_order_acquire)) {
		daxfs_heartbeat(fs);
		sleep_ms(step);
	}
	return NULL;
}

int daxfs_heartbeat_start(struct daxfs *fs)
{
	int rc;

	if (fs->hb_started)
		return 0;
	atomic_store_explicit(&fs->hb_run, 1, memory_order_release);
	rc = pthread_create(&fs->hb_thread, NULL, heartbeat_main, fs);
	if (rc)
		return -rc;
	fs->hb_started = true;
	return 0;
}

void host_stop_heartbeat(struct daxfs *fs)
{
	if (!fs->hb_started)
		return;
	atomic_store_explicit(&fs->hb_run, 0, memory_order_release);
	pthread_join(fs->hb_thread, NULL);
	fs->hb_started = false;
}

void daxfs_heartbeat_stop(struct daxfs *fs)
{
	host_stop_heartbeat(fs);
}

int daxfs_host_check(struct daxfs *fs)
{
	uint64_t w;

	if (fs->slot < 0)
		return -ENOENT;
	w = atomic_load_explicit(&fs->hosts[fs->slot].owner, memory_order_acquire);
	if (DFS_OWNER_STATE(w) != DFS_HOST_LIVE || DFS_OWNER_INC(w) != fs->inc)
		return -ESTALE;
	return 0;
}

int daxfs_host_slot(const struct daxfs *fs)
{
	return fs->slot;
}

uint32_t daxfs_host_incarnation(const struct daxfs *fs)
{
	return fs->inc;
}

/* Other processes of our incarnation still attached? */
static bool others_attached(struct daxfs *fs)
{
	struct dfs_host *h = &fs->hosts[fs->slot];

	for (unsigned i = 0; i < DFS_PROCS_PER_HOST; i++)
		if ((int)i != fs->proc &&
		    atomic_load_explicit(&h->procs[i].claim, memory_order_acquire) == fs->inc)
			return true;
	return false;
}

void host_detach(struct daxfs *fs)
{
	struct dfs_host *h;
	uint64_t w;

	host_stop_heartbeat(fs);
	if (fs->slot < 0 || fs->readonly)
		return;
	h = &fs->hosts[fs->slot];
	atomic_store_explicit(&h->procs[fs->proc].reader_epoch, 0,
			      memory_order_release);
	if (daxfs_host_check(fs) < 0)
		return;		/* reaped while we were away: touch nothing */
	if (fs->daemon && others_attached(fs)) {
		/* The host's FUSE view still serves containers: the host
		 * stays LIVE on its heartbeat; a restarted daemon takes over
		 * as a new incarnation. */
		alloc_release_chunks(fs);
	} else if (fs->daemon) {
		alloc_release_chunks(fs);
		/* The host's last process leaves: nothing of it holds a
		 * layer any more, so its bits go now rather than after a
		 * lease + grace. */
		holds_clear_slot(fs, fs->slot, NULL, 0);
		w = DFS_OWNER(fs->inc, DFS_HOST_LIVE, 0);
		/* Release: everything we wrote is visible before RETIRED. */
		atomic_compare_exchange_strong_explicit(&h->owner, &w,
				DFS_OWNER(fs->inc, DFS_HOST_RETIRED, 0) |
				DFS_OWNER_HOLDS_CLEARED,
				memory_order_acq_rel, memory_order_acquire);
		atomic_store_explicit(&h->reap_done, fs->inc, memory_order_release);
	}
	w = fs->inc;
	atomic_compare_exchange_strong_explicit(&h->procs[fs->proc].claim, &w, 0,
			memory_order_acq_rel, memory_order_relaxed);
	fs->slot = -1;
}

int ctx_acquire(struct daxfs *fs)
{
	struct dfs_host *h = &fs->hosts[fs->slot];
	bool trimming;
	int got;

again:
	got = -EAGAIN;
	trimming = false;
	pthread_mutex_lock(&fs->lock);
	for (unsigned i = 0; i < DFS_CTX_PER_HOST; i++) {
		uint64_t c;

		trimming |= fs->ctx_trimming[i];
		if (fs->ctx_busy[i])
			continue;
		c = atomic_load_explicit(&h->ctx[i].claim, memory_order_acquire);
		if (c == fs->inc || !atomic_compare_exchange_strong_explicit(
				&h->ctx[i].claim, &c, fs->inc,
				memory_order_acq_rel, memory_order_acquire)) {
			if (c != fs->inc)
				continue;
		}
		fs->ctx_busy[i] = true;
		got = (int)i;
		break;
	}
	pthread_mutex_unlock(&fs->lock);
	/* A trim holds a context for a moment only: not a reason to fail. */
	if (got == -EAGAIN && trimming) {
		sleep_ms(1);
		goto again;
	}
	return got;
}

bool ctx_take_idle(struct daxfs *fs, int ctx)
{
	struct dfs_host *h = &fs->hosts[fs->slot];
	bool got = false;

	pthread_mutex_lock(&fs->lock);
	if (!fs->ctx_busy[ctx] &&
	    atomic_load_explicit(&h->ctx[ctx].claim, memory_order_acquire) == fs->inc) {
		fs->ctx_busy[ctx] = true;
		fs->ctx_trimming[ctx] = true;
		got = true;
	}
	pthread_mutex_unlock(&fs->lock);
	return got;
}

void ctx_put(struct daxfs *fs, int ctx)
{
	pthread_mutex_lock(&fs->lock);
	fs->ctx_busy[ctx] = false;
	fs->ctx_trimming[ctx] = false;
	pthread_mutex_unlock(&fs->lock);
}

void ctx_release(struct daxfs *fs, int ctx)
{
	/* Chunks others emptied go back while we still hold the context:
	 * no allocation of ours can be between find and mark in them. */
	alloc_trim_ctx(fs, ctx);
	ctx_put(fs, ctx);
}

void daxfs_read_enter(struct daxfs *fs)
{
	struct dfs_proc *p;

	if (fs->slot < 0)
		return;
	p = &fs->hosts[fs->slot].procs[fs->proc];
	pthread_mutex_lock(&fs->lock);
	if (fs->readers++ == 0) {
		/* seq_cst pairs with epoch_synchronize: either the
		 * reclaimer sees our epoch, or we see the new global epoch
		 * and with it the removal that preceded it. */
		atomic_store_explicit(&p->reader_epoch,
			atomic_load_explicit(&fs->shared->global_epoch,
					     memory_order_seq_cst),
			memory_order_seq_cst);
	}
	pthread_mutex_unlock(&fs->lock);
}

void daxfs_read_leave(struct daxfs *fs)
{
	if (fs->slot < 0)
		return;
	pthread_mutex_lock(&fs->lock);
	if (--fs->readers == 0)
		atomic_store_explicit(&fs->hosts[fs->slot].procs[fs->proc].reader_epoch,
				      0, memory_order_release);
	pthread_mutex_unlock(&fs->lock);
}

/* May any process of a live host still hold an offset from before epoch
 * e?  Processes of hosts that are not LIVE hold nothing. */
static bool epoch_busy(struct daxfs *fs, uint64_t e)
{
	for (uint32_t s = 0; s < fs->sb.max_hosts; s++) {
		struct dfs_host *h = &fs->hosts[s];
		uint64_t w = atomic_load_explicit(&h->owner, memory_order_acquire);

		if (DFS_OWNER_STATE(w) != DFS_HOST_LIVE)
			continue;
		for (unsigned i = 0; i < DFS_PROCS_PER_HOST; i++) {
			struct dfs_proc *p = &h->procs[i];
			uint64_t re;

			if (atomic_load_explicit(&p->claim, memory_order_acquire) !=
			    DFS_OWNER_INC(w))
				continue;
			re = atomic_load_explicit(&p->reader_epoch, memory_order_seq_cst);
			if (re && re < e)
				return true;
		}
	}
	return false;
}

/* The caller must not be inside daxfs_read_enter itself. */
int epoch_synchronize(struct daxfs *fs, uint32_t timeout_ms)
{
	uint64_t start = now_ms();
	uint64_t e = atomic_fetch_add_explicit(&fs->shared->global_epoch, 1,
					       memory_order_seq_cst) + 1;

	while (epoch_busy(fs, e)) {
		if (now_ms() - start > timeout_ms)
			return -ETIMEDOUT;
		sleep_ms(1);
	}
	return 0;
}

int daxfs_host_uuid_load(const char *dir, uint8_t uuid[16],
			 struct daxfs_err *err)
{
	char path[4096], s[64] = "";
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "%s/host-uuid", dir);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0 && errno == ENOENT) {
		int rfd = open("/proc/sys/kernel/random/uuid", O_RDONLY | O_CLOEXEC);

		if (rfd < 0)
			return daxfs_err_set(err, -errno, "read random uuid: %s",
					     strerror(errno));
		n = read(rfd, s, 36);
		close(rfd);
		if (n != 36)
			return daxfs_err_set(err, -EIO, "short random uuid");
		mkdir(dir, 0700);
		fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
		if (fd < 0)
			return daxfs_err_set(err, -errno, "create %s: %s", path,
					     strerror(errno));
		s[36] = '\n';
		if (write(fd, s, 37) != 37) {
			close(fd);
			return daxfs_err_set(err, -EIO, "write %s", path);
		}
		close(fd);
		fd = open(path, O_RDONLY | O_CLOEXEC);
	}
	if (fd < 0)
		return daxfs_err_set(err, -errno, "open %s: %s", path,
				     strerror(errno));
	memset(s, 0, sizeof(s));
	n = read(fd, s, 36);
	close(fd);
	if (n != 36)
		return daxfs_err_set(err, -EUCLEAN, "%s: not a uuid", path);
	for (int i = 0, j = 0; i < 36; i++) {
		if (s[i] == '-')
			continue;
		if (j >= 16 || sscanf(s + i, "%2hhx", &uuid[j++]) != 1)
			return daxfs_err_set(err, -EUCLEAN, "%s: not a uuid", path);
		i++;
	}
	return 0;
}

int daxfs_host_rejoin(struct daxfs *fs)
{
	struct dfs_host *h;
	uint64_t w;
	uint32_t inc;
	int p;

	if (fs->slot < 0 || fs->daemon)
		return -EINVAL;
	h = &fs->hosts[fs->slot];
	w = atomic_load_explicit(&h->owner, memory_order_acquire);
	inc = DFS_OWNER_INC(w);
	if (DFS_OWNER_STATE(w) == DFS_HOST_LIVE && inc == fs->inc &&
	    atomic_load_explicit(&h->procs[fs->proc].claim, memory_order_acquire) == inc)
		return 0;
	if (DFS_OWNER_STATE(w) != DFS_HOST_LIVE)
		return -EAGAIN;		/* no daemon attached right now */
	p = claim_proc(fs, fs->slot, inc, false);
	if (p < 0)
		return p;
	__atomic_store_n(&h->procs[p].kind, (uint32_t)DAXFS_PROC_VIEW, __ATOMIC_RELAXED);
	pthread_mutex_lock(&fs->lock);
	fs->inc = inc;
	fs->proc = p;
	pthread_mutex_unlock(&fs->lock);
	daxfs_heartbeat(fs);
	holds_reassert(fs);
	return 1;
}
