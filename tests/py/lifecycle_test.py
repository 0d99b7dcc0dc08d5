"""Layer lifecycle across hosts: pulls that hold, pins, eviction by
watermark and by daxfsctl gc, the view letting go of unmounted layers,
and daemons that are killed, paused or reaped mid-unpack.

Each host is a daxfsd (and its view) in namespaces of its own, with its own
monotonic clock and private /run, /tmp and /dev/shm: the hosts share only
the region file.  DAXFS_TEST_LONG=1 repeats the rounds.  Prints
PASS:/FAIL: lines."""
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))
import fixture  # noqa: E402
import harness  # noqa: E402

BUILD = os.environ['DAXFS_BUILD']
TMP = os.environ['DAXFS_TMP']
LONG = os.environ.get('DAXFS_TEST_LONG') == '1'
CONFIG = os.path.join(TMP, 'config.json')
LEASE_MS = 1000
GRACE_MS = 5000
# (c): a region of SMALL_REGION holds two of the images x, y, z (two
# layers of XYZ_FILES MiB each) but not all three.
SMALL_REGION = '64M'
XYZ_FILES = 10
suite = harness.Suite('lifecycle')
case = suite.case
ctl = harness.ctl
short_id = harness.short_id


def noise(seed, size):
    """Hex of random bytes: compresses about 2:1, never dedups."""
    return random.Random(seed).randbytes(size // 2).hex().encode()


def files_layer(tag, n, size):
    return fixture.tar_bytes([('%s/f%02d' % (tag, i), 'f', noise('%s%d' % (tag, i), size),
                               0o644, {}) for i in range(n)])


def build(path):
    lay = fixture.Layout(path)
    base = fixture.tar_bytes(fixture.busybox_entries())
    shared = files_layer('shared', 4, 64 << 10)
    # (a) overlapping images pulled by three hosts at once.
    lay.image('r1', [(base, 'gzip'), (shared, 'gzip'), (files_layer('own1', 4, 64 << 10), 'gzip')])
    lay.image('r2', [(base, 'gzip'), (shared, 'gzip'), (files_layer('own2', 4, 64 << 10), 'gzip')])
    lay.image('r3', [(base, 'gzip'), (files_layer('own3', 4, 64 << 10), 'gzip')])
    # (f) pins; the view's release after umount.
    lay.image('keep', [(files_layer('keep', 2, 32 << 10), 'gzip')])
    lay.image('drop', [(files_layer('drop', 2, 32 << 10), 'gzip')])
    lay.image('mnt', [(base, 'gzip'), (files_layer('mnt', 3, 32 << 10), 'gzip')])
    # (b), (d): one large layer, so a kill or a pause lands mid-unpack.
    lay.image('big', [(files_layer('big', 8, 4 << 20), 'gzip')])
    # (c), (g): a region that holds two of x, y, z; w fits nowhere.
    for t in 'xyz':
        lay.image(t, [(files_layer(t + '0', XYZ_FILES, 1 << 20), 'gzip'),
                      (files_layer(t + '1', XYZ_FILES, 1 << 20), 'gzip')])
    lay.image('w', [(files_layer('w', 4 * XYZ_FILES, 1 << 20), 'gzip')])


def layout():
    src = open(__file__, 'rb').read() + open(fixture.__file__, 'rb').read()
    return fixture.cached_layout('lifecycle-' + hashlib.sha256(src).hexdigest()[:16], build)


def jctl(host, *args):
    r = host.ctl(*args, '--json')
    if r.returncode != 0:
        raise RuntimeError('daxfsctl %s: %s' % (' '.join(args), r.stderr))
    return json.loads(r.stdout)


def layers_by_digest(host):
    return {l.get('digest'): l for l in jctl(host, 'layers')['layers']}


def state_of(host, digest):
    l = layers_by_digest(host).get(digest)
    return l['state'] if l else 'absent'


def image(host, ref):
    for im in jctl(host, 'images')['images']:
        if im['ref'] == ref:
            return im
    return None


def fsck(region):
    r = ctl('fsck', region)
    return r.returncode == 0, r.stdout + r.stderr


def wait_for(pred, secs=10.0, step=0.05):
    end = time.time() + secs
    while time.time() < end:
        v = pred()
        if v:
            return v
        time.sleep(step)
    return pred()


def digests(mans, tag):
    return [l['digest'] for l in mans[tag]['layers']]


class World:
    def __init__(self, reg, mans):
        self.reg = reg
        self.mans = mans
        self.hosts = []

    def ref(self, tag):
        return self.reg.addr + '/test/lc:' + tag

    def gets(self):
        return self.reg.blob_gets()

    def new_hosts(self, region, names):
        with open(CONFIG, 'w') as f:
            json.dump({'lease-ms': LEASE_MS, 'grace-ms': GRACE_MS, 'view-recheck-ms': 60000,
                       'gc-low-watermark': 10, 'gc-target': 20, 'log-level': 'debug',
                       'stall-timeout-ms': 60000}, f)
        for k, n in enumerate(names):
            h = harness.NsHost(n, region, CONFIG, clock_s=1000 * (k + 1) + len(self.hosts))
            self.hosts.append(h)
            h.start()
        return self.hosts[-len(names):]

    def close(self):
        for h in self.hosts:
            h.close()
        self.hosts = []


# ---- (a) ----

def concurrent_rounds(w, hosts, region):
    tags = ['r1', 'r2', 'r3']
    blobs = sorted({d for t in tags for d in digests(w.mans, t)})
    rounds = 10 if LONG else 2
    bad, freed = [], 0
    for rnd in range(rounds):
        before = len(w.gets())
        out = {}

        def pulls(h, k):
            order = tags[k:] + tags[:k]
            out[h.name] = [h.ctl('pull', w.ref(t)) for t in order]
        ts = [threading.Thread(target=pulls, args=(h, k)) for k, h in enumerate(hosts)]
        [t.start() for t in ts]
        [t.join() for t in ts]
        gets = w.gets()[before:]
        counts = {d[7:19]: sum(d in g for g in gets) for d in blobs}
        failed = [r.stderr for rs in out.values() for r in rs if r.returncode != 0]
        ok, rep = fsck(region)
        if failed or set(counts.values()) != {1} or not ok:
            bad.append((rnd, counts, failed[:2], rep))
        # Evict everything so the next round unpacks every layer again.
        g = jctl(hosts[rnd % 3], 'gc')
        freed += g['data_freed'] + g['meta_freed']
        if g['evicted'] < len(blobs):
            bad.append((rnd, 'gc evicted %d of %d' % (g['evicted'], len(blobs)), g))
    case('concurrent_rounds_each_layer_once_fsck_clean', not bad, bad)
    # Every layer was evicted: no file data may be left behind.
    left = jctl(hosts[0], 'df')['data_used']
    case('no_data_left_after_evicting_every_layer', left == 0, left)
    print('info: %d rounds of 9 concurrent pulls on 3 hosts; gc reclaimed %d bytes, '
          '%d bytes of file data left (leaked)' % (rounds, freed, left))


# ---- (f) ----

def pins_and_gc(w, a, b):
    keep, drop = w.ref('keep'), w.ref('drop')
    r1 = a.ctl('pull', '--pin', keep)
    r2 = b.ctl('pull', drop)
    im = image(a, keep)
    case('pull_pin', r1.returncode == 0 and r2.returncode == 0 and im and im['pinned'],
         (r1.stderr, r2.stderr, im))
    before = layers_by_digest(a)
    dry = jctl(b, 'gc', '--dry-run')
    listed = {l['diff_id'] for l in dry['layers']}
    after = layers_by_digest(a)
    drop_diff = before[digests(w.mans, 'drop')[0]]['diff_id']
    keep_diff = before[digests(w.mans, 'keep')[0]]['diff_id']
    case('gc_dry_run_lists_and_changes_nothing',
         drop_diff in listed and keep_diff not in listed and
         {k: v['state'] for k, v in before.items()} == {k: v['state'] for k, v in after.items()},
         (listed, dry))
    txt = b.ctl('gc')
    g_after = layers_by_digest(a)
    case('gc_evicts_unpinned_keeps_pinned',
         txt.returncode == 0 and 'evicted' in txt.stdout and
         g_after.get(digests(w.mans, 'drop')[0], {}).get('state') != 'ready' and
         g_after[digests(w.mans, 'keep')[0]]['state'] == 'ready',
         (txt.stdout, txt.stderr))
    im = image(a, drop)
    case('images_shows_evicted_layers_absent', im and im['layers_present'] == 0 and
         image(a, keep)['layers_present'] == 1, im)
    before = len(w.gets())
    r = a.ctl('pull', drop)
    gets = w.gets()[before:]
    case('evicted_image_pulled_again', r.returncode == 0 and
         sum(digests(w.mans, 'drop')[0] in g for g in gets) == 1 and
         image(a, drop)['layers_present'] == 1, (r.stderr, gets))
    r = a.ctl('unpin', keep)
    g = jctl(a, 'gc')
    case('unpinned_image_evictable', r.returncode == 0 and not image(a, keep)['pinned'] and
         keep_diff in {l['diff_id'] for l in g['layers']}, (r.stderr, g))
    r = a.ctl('pin', w.ref('nothere'))
    case('pin_unknown_image_error', r.returncode != 0 and 'not in the region' in r.stderr,
         r.stderr)
    df = jctl(a, 'df')
    case('df_fields', all(k in df for k in ('layers_held', 'layers_pinned', 'held_bytes',
                                            'reclaimable_bytes')), df)


# ---- the view lets go after a plain umount ----

def view_release(w, b):
    ref = w.ref('mnt')
    r = b.ctl('pull', ref)
    dgs = digests(w.mans, 'mnt')
    mdir = os.path.join(TMP, 'mnt-b')
    os.makedirs(mdir, exist_ok=True)
    m = b.run(BUILD + '/daxfsctl', 'mount', '--address', b.sock, ref, mdir)
    rd = b.run('cat', mdir + '/mnt/f00')
    held = [layers_by_digest(b)[d]['holder_mask'] for d in dgs]
    g = jctl(b, 'gc')
    refused = not ({layers_by_digest(b)[d]['diff_id'] for d in dgs} &
                   {l['diff_id'] for l in g['layers']})
    case('mounted_layers_held_gc_refuses', r.returncode == 0 and m.returncode == 0 and
         rd.returncode == 0 and all(held) and refused,
         (r.stderr, m.stderr, rd.stderr, held, g))
    u = b.run('umount', mdir)
    vp = b.view_pid()
    if vp:
        os.kill(vp, signal.SIGUSR1)

    def released():
        lays = layers_by_digest(b)
        return all(lays[d]['holders'] == 0 for d in dgs)
    ok = wait_for(released, 10)
    g = jctl(b, 'gc')
    evicted = {l['diff_id'] for l in g['layers']}
    case('umount_then_sigusr1_releases_layers', u.returncode == 0 and vp and ok and
         b.view_pid() == vp and
         all(layers_by_digest(b)[d]['state'] != 'ready' for d in dgs),
         (u.stderr, vp, layers_by_digest(b), evicted))


# ---- (e) ----

def paused_holder(w, a, b):
    ref = w.ref('mnt')
    a.ctl('pull', ref)
    dgs = digests(w.mans, 'mnt')
    mdir = os.path.join(TMP, 'mnt-a')
    os.makedirs(mdir, exist_ok=True)
    m = a.run(BUILD + '/daxfsctl', 'mount', '--address', a.sock, ref, mdir)
    want = a.run('sha256sum', mdir + '/mnt/f00', mdir + '/bin/busybox').stdout
    diffs = {layers_by_digest(b)[d]['diff_id'] for d in dgs}
    dpid, vpid = a.daemon_pid(), a.view_pid()
    os.kill(dpid, signal.SIGSTOP)
    os.kill(vpid, signal.SIGSTOP)
    try:
        # Past the lease (the host is reaped), inside the grace.
        dead = wait_for(lambda: [h['liveness'] for h in jctl(b, 'hosts')['hosts']
                                 if h['name'] == a.name and
                                 h['liveness'] in ('dead', 'reaping', 'detached')], 4)
        time.sleep(LEASE_MS / 1000.0 * 0.5)
        g = jctl(b, 'gc')
        lays = layers_by_digest(b)
    finally:
        os.kill(vpid, signal.SIGCONT)
        a.resume()
    evicted = {l['diff_id'] for l in g['layers']}
    case('paused_host_keeps_its_holds_through_grace', m.returncode == 0 and
         not (evicted & diffs) and all(lays[d]['state'] == 'ready' for d in dgs),
         (m.stderr, dead, g, lays))
    code = a.wait_daemon(10)
    log = open(a.logpath).read()
    case('reaped_daemon_exits_nonzero', code not in (None, 0) and
         'was reaped by another host; exiting' in log, (code, log[-2000:]))
    a.start(restarts=3)
    got = wait_for(lambda: a.run('sha256sum', mdir + '/mnt/f00', mdir + '/bin/busybox').stdout
                   == want, 5)
    case('view_survives_and_mount_reads', got and a.view_pid() == vpid,
         (want, a.view_pid(), vpid))
    a.run('umount', mdir)


# ---- (b) ----

def killed_mid_unpack(w, hosts, region):
    a, b = hosts[0], hosts[1]
    ref = w.ref('big')
    dg = digests(w.mans, 'big')[0]
    n = 20 if LONG else 3
    bad, mid, freed = [], 0, 0
    rng = random.Random()
    for i in range(n):
        puller = subprocess.Popen([BUILD + '/daxfsctl', 'pull', '--address', a.sock, ref],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: state_of(b, dg) != 'absent', 10, 0.01)
        time.sleep(rng.uniform(0, 0.15))
        mid += state_of(b, dg) == 'unpacking'
        a.signal(signal.SIGKILL)
        a.wait_daemon(10)
        puller.wait()
        r = b.ctl('pull', ref)
        ok, rep = fsck(region)
        if r.returncode != 0 or state_of(b, dg) != 'ready' or not ok or 'leak' in rep:
            bad.append((i, r.stderr, state_of(b, dg), rep))
        a.start(restarts=3)
        g = jctl(b, 'gc')
        freed += g['data_freed'] + g['meta_freed']
        ok, rep = fsck(region)
        if not ok or state_of(b, dg) == 'ready':
            bad.append((i, 'after gc', g, rep))
    case('kill9_mid_unpack_others_finish_fsck_clean', not bad, bad)
    print('info: %d kills, %d of them while the layer was unpacking; gc after each '
          'reclaimed %d bytes in all, fsck found no leaked units' % (n, mid, freed))


# ---- (d) ----

def paused_mid_unpack(w, a, b, region, lay):
    ref = w.ref('big')
    dg = digests(w.mans, 'big')[0]
    puller = subprocess.Popen([BUILD + '/daxfsctl', 'pull', '--address', a.sock, ref],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    vpid = a.view_pid()
    seen = wait_for(lambda: state_of(b, dg) == 'unpacking', 10, 0.005)
    a.signal(signal.SIGSTOP)
    time.sleep(LEASE_MS / 1000.0 * 1.5)
    r = b.ctl('pull', ref)
    lays = layers_by_digest(b)
    a.resume()
    code = a.wait_daemon(10)
    a_err = puller.communicate()[1]
    log = open(a.logpath).read()
    case('paused_claimant_taken_over', seen and r.returncode == 0 and
         lays[dg]['state'] == 'ready', (seen, a_err, r.stdout, r.stderr, lays.get(dg)))
    case('paused_claimant_notices_reaped_and_exits',
         code not in (None, 0) and 'was reaped by another host; exiting' in log,
         (code, log[-1500:]))
    ok, rep = fsck(region)
    # Every file of the layer as the tar has it, read through B's view.
    sid = short_id(layers_by_digest(b)[dg]['serial'])
    files = ['%s/l/%s/big/f%02d' % (b.mnt, sid, i) for i in range(8)]
    got = b.run('sha256sum', *files).stdout.split()[::2]
    want = [hashlib.sha256(noise('big%d' % i, 4 << 20)).hexdigest() for i in range(8)]
    case('after_pause_fsck_clean_checksums_intact', ok and got == want, (rep, got, want))
    case('view_survives_daemon_exit', a.view_pid() == vpid, (a.view_pid(), vpid))
    a.start(restarts=3)


# ---- (c), (g) ----

def watermark_eviction(w, region):
    a, b, c = w.new_hosts(region, ['wm-a', 'wm-b', 'wm-c'])
    x, y, z = w.ref('x'), w.ref('y'), w.ref('z')
    # Host C pulls y itself: the units an eviction frees stay in chunks
    # of the host that allocated them, and only that host reuses them.
    r = [a.ctl('pull', x), c.ctl('pull', y)]
    mdir = os.path.join(TMP, 'mnt-x')
    os.makedirs(mdir, exist_ok=True)
    m = a.run(BUILD + '/daxfsctl', 'mount', '--address', a.sock, x, mdir)
    paths = ['%s/%s/f%02d' % (mdir, t, i) for t in ('x0', 'x1') for i in range(XYZ_FILES)]
    want = [hashlib.sha256(noise('%s%d' % (t, i), 1 << 20)).hexdigest()
            for t in ('x0', 'x1') for i in range(XYZ_FILES)]
    reads = {'ok': 0, 'bad': []}
    stop = threading.Event()

    def reader():
        while not stop.is_set():
            got = a.run('sha256sum', *paths).stdout.split()[::2]
            if got == want:
                reads['ok'] += 1
            else:
                reads['bad'].append(got)
    t = threading.Thread(target=reader)
    t.start()
    try:
        rz = c.ctl('pull', z)
    finally:
        stop.set()
        t.join()
    lays = layers_by_digest(a)
    xs = [lays.get(d, {}).get('state') for d in digests(w.mans, 'x')]
    ys = [lays.get(d, {}).get('state') for d in digests(w.mans, 'y')]
    zs = [lays.get(d, {}).get('state') for d in digests(w.mans, 'z')]
    log = open(c.logpath).read()
    case('watermark_evicts_only_unheld_layers',
         all(q.returncode == 0 for q in r) and m.returncode == 0 and rz.returncode == 0 and
         xs == ['ready'] * 2 and zs == ['ready'] * 2 and ys.count('ready') < 2 and
         'evicting layer' in log,
         (r[0].stderr, r[1].stderr, m.stderr, rz.stderr, xs, ys, zs))
    case('reads_through_mount_during_eviction', reads['ok'] > 0 and not reads['bad'],
         (reads['ok'], reads['bad'][:2]))
    ok, rep = fsck(region)
    case('fsck_clean_after_watermark_eviction', ok, rep)

    # (g) z pinned, x mounted: w cannot fit and nothing can be freed.
    c.ctl('pin', z)
    rw = b.ctl('pull', w.ref('w'))
    wd = digests(w.mans, 'w')[0]
    case('region_full_clear_error', rw.returncode != 0 and 'region full' in rw.stderr and
         'nothing reclaimable' in rw.stderr and a.name in rw.stderr and
         rw.stderr.count('\n') == 1 and state_of(a, wd) != 'ready', rw.stderr)
    ok, rep = fsck(region)
    case('fsck_clean_after_region_full', ok, rep)
    hosts = jctl(a, 'hosts')['hosts']
    me = [h for h in hosts if h['name'] == a.name]
    case('hosts_lists_holds_and_liveness', me and me[0]['layers_held'] >= 2 and
         all('heartbeat_age_ms' in h and 'layers_held' in h for h in hosts) and
         {a.name, b.name, c.name} <= {h['name'] for h in hosts}, hosts)
    a.run('umount', mdir)


def main():
    lay = layout()
    reg = fixture.Registry(TMP)
    w = World(reg, fixture.manifests(lay))
    try:
        for tag in ('r1', 'r2', 'r3', 'keep', 'drop', 'mnt', 'big', 'x', 'y', 'z', 'w'):
            fixture.push(lay, tag, reg, 'test/lc')
        region = os.path.join(TMP, 'region')
        subprocess.run([BUILD + '/daxfsctl', 'mkfs', '--size', '256M', region], check=True,
                       capture_output=True)
        hosts = w.new_hosts(region, ['host-a', 'host-b', 'host-c'])
        mono = [float(h.run('python3', '-c', 'import time; print(time.monotonic())').stdout)
                for h in hosts]
        case('hosts_have_their_own_clocks', len({int(x) // 500 for x in mono}) == 3, mono)
        concurrent_rounds(w, hosts, region)
        pins_and_gc(w, hosts[0], hosts[1])
        view_release(w, hosts[1])
        paused_holder(w, hosts[0], hosts[1])
        killed_mid_unpack(w, hosts, region)
        paused_mid_unpack(w, hosts[0], hosts[1], region, lay)
        w.close()
        small = os.path.join(TMP, 'region-small')
        subprocess.run([BUILD + '/daxfsctl', 'mkfs', '--size', SMALL_REGION, small], check=True,
                       capture_output=True)
        watermark_eviction(w, small)
    finally:
        w.close()
        reg.stop()
    return suite.exit_code()


if __name__ == '__main__':
    sys.exit(main())
