"""daxfsd's snapshotter under real containerds: private containerds (own
root, state and socket, no CRI plugin) with a daxfsd's socket as the
proxy snapshotter "daxfs"; two hosts (daxfsd + containerd each, own
roots, views and host UUIDs) on one region file.

  badcalls:   invalid gRPC requests get the codes containerd's
              snapshotters and grpc-go give, and the daemon goes on.
  remote:     an image daxfsd pulled into the region first is pulled
              through containerd's unpacker (tests/go/testsuite's
              "pull"): every layer becomes a remote snapshot over the
              view, no layer blob is fetched, and a container runs on it.
  ctr_snap:   ctr snapshots ls / info / usage / tree / rm on them.
  namespaces: a second containerd namespace pulls the same image.
  host B:     the second host pulls it without a layer download and runs it.
  many:       20 containers of one image at once.
  deep:       a 128-layer image, remote, runs.
  restart:    daxfsd stopped (SIGTERM, then kill -9) and restarted under
              running containers.
  cri:        both hosts pull a new image at once with the CRI layer
              labels: each layer blob is downloaded once (SKIP while
              daxfsd does not fetch layers for such Prepares).
  local:      an image only the registry has, pulled with ctr (containerd
              unpacks into daxfs snapshots on local disk, on top of the
              remote base layer), and run with ctr.
  gc:         removing the images removes every snapshot record, and the
              view's layers stay.
Prints PASS:/FAIL:/SKIP: lines.  DAXFS_TEST_LONG=1 runs more containers."""
import concurrent.futures
import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))
import fixture  # noqa: E402
import harness  # noqa: E402

BUILD = harness.BUILD
TMP = harness.TMP
SRC = os.environ.get('DAXFS_SRC', os.path.join(os.path.dirname(__file__), '..', '..'))
LONG = os.environ.get('DAXFS_TEST_LONG') == '1'
REGION = os.path.join(TMP, 'region')
CONFIG = os.path.join(TMP, 'config.json')
RUNC_ROOT = os.path.join(TMP, 'runc')
DEEP_LAYERS = 128
MANY = 50 if LONG else 20
RUNNERS = 6 if LONG else 3
suite = harness.Suite('containerd')
FIGURES = {}
case = suite.case
HELLO = b'hello from the region\n'


def skip(name, why):
    print('SKIP: containerd/%s (%s)' % (name, why))
    sys.stdout.flush()


def build(path):
    lay = fixture.Layout(path)
    base = fixture.tar_bytes(fixture.busybox_entries())
    top_a = fixture.tar_bytes([('srv', 'd', None, 0o755, {}),
                               ('srv/hello', 'f', HELLO, 0o644, {})])
    top_b = fixture.tar_bytes([('srv', 'd', None, 0o755, {}),
                               ('srv/hello', 'f', b'hello from local disk\n', 0o644, {})])
    lay.image('remote', [(base, 'gzip'), (top_a, 'gzip')])
    lay.image('local', [(base, 'gzip'), (top_b, 'gzip')])
    # 128 layers: busybox at the bottom, one file per layer above it.
    deep = [(fixture.tar_bytes(fixture.busybox_entries() + [
        ('layers', 'd', None, 0o755, {}),
        ('layers/000', 'f', b'bottom\n', 0o644, {})]), 'gzip')]
    for n in range(1, DEEP_LAYERS):
        deep.append((fixture.tar_bytes([('layers', 'd', None, 0o755, {}),
                                        ('layers/%03d' % n, 'f', b'layer %d\n' % n, 0o644,
                                         {})]), 'gzip'))
    lay.image('deep', deep)
    # Images no host has yet, for the CRI-label pulls (a probe and the
    # race), each with layers of its own.
    for tag in ('criprobe', 'cri'):
        lay.image(tag, [(fixture.tar_bytes(fixture.busybox_entries() + [
            ('tag', 'f', tag.encode(), 0o644, {})]), 'gzip'),
            (fixture.tar_bytes([('srv', 'd', None, 0o755, {}),
                                ('srv/' + tag, 'f', os.urandom(4096), 0o644, {})]), 'gzip')])


def layout():
    src = open(__file__, 'rb').read() + open(fixture.__file__, 'rb').read()
    return fixture.cached_layout('ctrd-' + hashlib.sha256(src).hexdigest()[:16], build)


def snaptest():
    """The Go helper, built once per content (tests/go/testsuite)."""
    r = subprocess.run(['bash', os.path.join(SRC, 'tests/go/testsuite/build.sh')],
                       capture_output=True, text=True, timeout=600)
    if r.returncode == 77:
        sys.exit(77)
    if r.returncode != 0:
        raise RuntimeError('building the Go helper: ' + r.stderr[-2000:])
    return r.stdout.strip()


class Containerd:
    """A private containerd whose "daxfs" snapshotter is snap_sock."""

    def __init__(self, name, snap_sock):
        self.dir = os.path.join(TMP, name)
        self.sock = os.path.join(self.dir, 'containerd.sock')
        os.makedirs(self.dir, exist_ok=True)
        cfg = os.path.join(self.dir, 'config.toml')
        with open(cfg, 'w') as f:
            f.write('version = 2\nroot = "%s/root"\nstate = "%s/state"\n'
                    'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
                    '[grpc]\n  address = "%s"\n[ttrpc]\n  address = "%s.ttrpc"\n'
                    '[debug]\n  address = ""\n[metrics]\n  address = ""\n'
                    '[plugins."io.containerd.internal.v1.opt"]\n  path = "%s/opt"\n'
                    '[proxy_plugins.daxfs]\n  type = "snapshot"\n  address = "%s"\n'
                    % (self.dir, self.dir, self.sock, self.sock, self.dir, snap_sock))
        self.log = open(os.path.join(self.dir, 'containerd.log'), 'w')
        self.proc = subprocess.Popen(['containerd', '--config', cfg], stdout=self.log,
                                     stderr=subprocess.STDOUT)
        for _ in range(200):
            if self.ctr('version').returncode == 0:
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError('containerd did not start: ' + open(self.log.name).read()[-3000:])

    def ctr(self, *args, ns=None, timeout=120):
        return subprocess.run(['ctr', '-a', self.sock] + (['-n', ns] if ns else []) +
                              list(args), capture_output=True, text=True, timeout=timeout)

    def run(self, image, name, *cmd, ns=None):
        return self.ctr('run', '--rm', '--snapshotter', 'daxfs', '--runc-root', RUNC_ROOT,
                        image, '%s-%d' % (name, os.getpid()), *cmd, ns=ns)

    def run_detached(self, image, cid, out, *cmd):
        """A container with the host directory out at /out."""
        return self.ctr('run', '-d', '--snapshotter', 'daxfs', '--runc-root', RUNC_ROOT,
                        '--mount', 'type=bind,src=%s,dst=/out,options=rbind:rw' % out,
                        image, cid, *cmd)

    def remove_containers(self):
        """Every container of every namespace, tasks killed first."""
        r = self.ctr('namespaces', 'ls', '-q')
        for ns in r.stdout.split():
            for cid in self.ctr('containers', 'ls', '-q', ns=ns).stdout.split():
                self.ctr('tasks', 'kill', '-s', 'SIGKILL', cid, ns=ns)
                for _ in range(50):
                    if self.ctr('tasks', 'rm', '-f', cid, ns=ns).returncode != 0:
                        break	# no task left
                    time.sleep(0.1)
                self.ctr('containers', 'rm', cid, ns=ns)

    def stop(self):
        try:
            self.remove_containers()
        except Exception as e:	# noqa: BLE001 (stopping anyway)
            print('info: removing containers: %s' % e)
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def records(root, kind=None):
    """This host's snapshot records (of one kind: 1 view, 2 active,
    3 committed): (name, dir) pairs."""
    db = sqlite3.connect(os.path.join(root, 'snapshots.db'), timeout=10)
    try:
        return db.execute('SELECT name, dir FROM snapshots WHERE kind = ? OR ? IS NULL'
                          ' ORDER BY id', (kind, kind)).fetchall()
    finally:
        db.close()


def unmount_all():
    """Everything mounted under TMP, deepest first."""
    r = subprocess.run(['findmnt', '-rn', '-o', 'TARGET'], capture_output=True, text=True)
    for m in sorted((m for m in r.stdout.split('\n') if m.startswith(TMP + '/')),
                    reverse=True):
        subprocess.run(['umount', '-l', m], capture_output=True)


def layer_digests(path, tag):
    """Blob digests of the layers of the image tagged tag in a layout."""
    idx = json.load(open(os.path.join(path, 'index.json')))
    for m in idx['manifests']:
        if m.get('annotations', {}).get('org.opencontainers.image.ref.name') == tag:
            d = m['digest'].split(':')[1]
            man = json.load(open(os.path.join(path, 'blobs', 'sha256', d)))
            return [l['digest'] for l in man['layers']]
    return []


def layer_gets(reg, since, lay, tag):
    """The registry's GETs of tag's layer blobs after the first since."""
    digests = layer_digests(lay, tag)
    return [g for g in reg.blob_gets()[since:] if any(d in g for d in digests)]


def remote_records(host):
    return [(n, d) for n, d in records(host.root) if d]


def wait_view(host, n):
    """Wait (up to 5 s) until host's view shows n layers."""
    for _ in range(100):
        if len(os.listdir(os.path.join(host.mnt, 'l'))) >= n:
            return
        time.sleep(0.05)


def helper_pull(helper, ctrd, ref, *flags):
    return subprocess.run([helper, 'pull'] + list(flags) + [ctrd.sock, 'daxfs', ref],
                          capture_output=True, text=True, timeout=300)


def check_badcalls(helper, host):
    """Before any containerd: containerd's collector would remove the
    snapshots the helper makes."""
    r = subprocess.run([helper, 'badcalls', host.snap_sock], capture_output=True, text=True,
                       timeout=180)
    seen = 0
    for line in r.stdout.splitlines():
        word, _, rest = line.partition(' ')
        if word in ('ok', 'fail'):
            name, _, why = rest.partition(': ')
            case('grpc_' + name, word == 'ok', why)
            seen += 1
    case('grpc_badcalls_ran', seen > 0 and (r.returncode == 0) == ('fail ' not in r.stdout),
         r.stdout[-1000:] + r.stderr[-1000:])
    case('grpc_daemon_alive', host.proc.poll() is None, host.proc.returncode)
    case('grpc_nothing_left', not records(host.root), records(host.root))


def check_remote(reg, lay, host, ctrd, helper):
    ref = reg.addr + '/test/ctrd:remote'
    r = harness.ctl('pull', ref, address=host.sock)
    case('daxfsctl_pull', r.returncode == 0, r.stderr)
    wait_view(host, 2)
    before = len(reg.blob_gets())
    t0 = time.time()
    r = helper_pull(helper, ctrd, ref)
    FIGURES['daxfs_pull'] = time.time() - t0
    case('unpacker_pull', r.returncode == 0, r.stdout + r.stderr)
    fetched = layer_gets(reg, before, lay, 'remote')
    case('no_layer_fetched', not fetched, fetched)
    remote = remote_records(host)
    case('remote_snapshots', len(remote) == 2 and
         all(d.startswith(host.mnt + '/l/') for _, d in remote), records(host.root))
    r = ctrd.run(ref, 'remote-echo', '/bin/busybox', 'echo', 'ok')
    case('remote_run', r.returncode == 0 and r.stdout.strip() == 'ok', r.stdout + r.stderr)
    r = ctrd.run(ref, 'remote-cat', '/bin/busybox', 'cat', '/srv/hello')
    case('remote_rootfs', r.stdout == HELLO.decode(), r.stdout + r.stderr)
    return ref


def snap_ls(ctrd, ns=None):
    """ctr snapshots ls: {key: (parent, kind)}."""
    r = ctrd.ctr('snapshots', '--snapshotter', 'daxfs', 'ls', ns=ns)
    out = {}
    for line in r.stdout.splitlines()[1:]:
        f = line.split()
        if len(f) == 3:
            out[f[0]] = (f[1], f[2])
        elif len(f) == 2:
            out[f[0]] = ('', f[1])
    return out


def check_ctr_snapshots(ctrd):
    """ctr snapshots ls / info / usage / tree / rm on the remote image's
    chain and an active snapshot prepared on it."""
    snaps = snap_ls(ctrd)
    tops = [k for k, (p, kind) in snaps.items() if p and kind == 'Committed']
    case('snapshots_ls', len(snaps) == 2 and len(tops) == 1, snaps)
    if len(tops) != 1:
        return
    top, bottom = tops[0], snaps[tops[0]][0]
    key = 'ctrd-active-%d' % os.getpid()
    r = ctrd.ctr('snapshots', '--snapshotter', 'daxfs', 'prepare', key, top)
    case('snapshots_prepare', r.returncode == 0, r.stderr)
    target = os.path.join(TMP, 'active-mnt')
    os.makedirs(target, exist_ok=True)
    r = ctrd.ctr('snapshots', '--snapshotter', 'daxfs', 'mounts', target, key)
    m = subprocess.run(r.stdout, shell=True, capture_output=True, text=True)
    ok = r.returncode == 0 and m.returncode == 0
    if ok:
        try:
            with open(os.path.join(target, 'written'), 'wb') as f:
                f.write(os.urandom(1 << 20))
            ok = open(os.path.join(target, 'srv/hello'), 'rb').read() == HELLO
        finally:
            subprocess.run(['umount', target], capture_output=True)
    case('snapshots_mount_write', ok, r.stdout + r.stderr + m.stderr)
    r = ctrd.ctr('snapshots', '--snapshotter', 'daxfs', 'info', key)
    try:
        info = json.loads(r.stdout)
    except ValueError:
        info = {}
    case('snapshots_info', info.get('Kind') == 'Active' and info.get('Parent') == top,
         r.stdout + r.stderr)
    r = ctrd.ctr('snapshots', '--snapshotter', 'daxfs', 'usage', key)
    # "KEY  SIZE  INODES", the size as "1.0 MiB".
    f = (r.stdout.splitlines()[1:] or [''])[0].split()
    case('snapshots_usage', r.returncode == 0 and len(f) == 4 and f[0] == key and
         f[2] == 'MiB' and float(f[1]) >= 1.0 and int(f[3]) >= 1, r.stdout + r.stderr)
    r = ctrd.ctr('snapshots', '--snapshotter', 'daxfs', 'tree')
    lines = r.stdout.splitlines()

    def depth(name):
        for ln in lines:
            if ln.strip().endswith(name):
                return len(ln) - len(ln.lstrip())
        return -1
    d = [depth(bottom), depth(top), depth(key)]
    case('snapshots_tree', -1 not in d and d[0] < d[1] < d[2], r.stdout + r.stderr)
    r = ctrd.ctr('snapshots', '--snapshotter', 'daxfs', 'rm', top)
    case('snapshots_rm_parent_fails', r.returncode != 0 and 'failed precondition' in r.stderr
         and top in snap_ls(ctrd), r.stdout + r.stderr)
    r = ctrd.ctr('snapshots', '--snapshotter', 'daxfs', 'rm', key)
    gone = key not in snap_ls(ctrd)
    # The backend Remove comes from containerd's collector, for the
    # backend key "NAMESPACE/ID/KEY".
    def backend():
        return [n for n, _ in records(HOSTS[0].root) if n.endswith('/' + key)]
    for _ in range(100):
        if not backend():
            break
        time.sleep(0.1)
    case('snapshots_rm', r.returncode == 0 and gone and not backend(), r.stderr)


def check_namespaces(reg, lay, host, ctrd, helper, ref):
    """The same image in a second namespace: remote again (no download),
    one backend record per (chainID, parent), each namespace lists its
    own."""
    before = records(host.root)
    gets = len(reg.blob_gets())
    r = helper_pull(helper, ctrd, ref, '-n', 'second')
    case('ns_pull', r.returncode == 0, r.stdout + r.stderr)
    fetched = layer_gets(reg, gets, lay, 'remote')
    case('ns_no_layer_fetched', not fetched, fetched)
    after = records(host.root)
    names = [n for n, _ in after]
    case('ns_records_unique', len(names) == len(set(names)) and
         sorted(after) == sorted(before), {'before': before, 'after': after})
    first, second = snap_ls(ctrd), snap_ls(ctrd, ns='second')
    case('ns_ls_each', len(first) == 2 and first == second, (first, second))
    r = ctrd.run(ref, 'ns-cat', '/bin/busybox', 'cat', '/srv/hello', ns='second')
    case('ns_run', r.stdout == HELLO.decode(), r.stdout + r.stderr)
    # One namespace letting go of the image leaves the other's snapshots.
    r = ctrd.ctr('images', 'rm', '--sync', ref, ns='second')
    time.sleep(0.5)
    r2 = ctrd.run(ref, 'ns-after', '/bin/busybox', 'cat', '/srv/hello')
    case('ns_rm_keeps_other', r.returncode == 0 and r2.stdout == HELLO.decode() and
         len(remote_records(host)) == 2, r.stderr + r2.stdout + r2.stderr)


def check_host_b(reg, lay, host_b, ctrd_b, helper, ref):
    before = len(reg.blob_gets())
    wait_view(host_b, 2)
    r = helper_pull(helper, ctrd_b, ref)
    case('hostb_pull', r.returncode == 0, r.stdout + r.stderr)
    fetched = layer_gets(reg, before, lay, 'remote')
    case('hostb_no_layer_fetched', not fetched, fetched)
    remote = remote_records(host_b)
    case('hostb_remote_snapshots', len(remote) == 2 and
         all(d.startswith(host_b.mnt + '/l/') for _, d in remote), records(host_b.root))
    r = ctrd_b.run(ref, 'hostb-cat', '/bin/busybox', 'cat', '/srv/hello')
    case('hostb_run', r.stdout == HELLO.decode(), r.stdout + r.stderr)
    uuids = [open(os.path.join(h.root, 'host-uuid')).read() for h in HOSTS]
    case('hostb_own_uuid', uuids[0] != uuids[1], uuids)


def expected_sum():
    data = HELLO + open('/bin/busybox', 'rb').read()
    return hashlib.md5(data).hexdigest()


def wait_files(paths, seconds):
    for _ in range(int(seconds * 10)):
        if all(os.path.exists(p) for p in paths):
            return True
        time.sleep(0.1)
    return all(os.path.exists(p) for p in paths)


def check_many(ctrd, ref):
    """MANY containers of one image alive at once: each reads image files,
    writes a file of its own, waits for all, then checks its file."""
    out = os.path.join(TMP, 'many')
    os.makedirs(out, exist_ok=True)
    script = ('b=/bin/busybox; $b cat /srv/hello /bin/busybox > /mine && '
              '$b touch /out/$1.ready && '
              'while [ ! -e /out/go ]; do $b sleep 0.1; done && '
              '$b md5sum /mine > /out/$1.tmp && $b mv /out/$1.tmp /out/$1.sum')
    ids = ['many-%d-%d' % (os.getpid(), i) for i in range(MANY)]
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        runs = list(pool.map(lambda cid: ctrd.run_detached(ref, cid, out, '/bin/sh', '-c',
                                                           script, 'sh', cid), ids))
    bad = [r.stderr for r in runs if r.returncode != 0]
    case('many_start', not bad, bad[:3])
    ready = wait_files([os.path.join(out, c + '.ready') for c in ids], 60)
    case('many_all_alive', ready, sorted(os.listdir(out)))
    open(os.path.join(out, 'go'), 'w').close()
    wait_files([os.path.join(out, c + '.sum') for c in ids], 60)
    want = expected_sum()
    sums = {}
    for c in ids:
        try:
            sums[c] = open(os.path.join(out, c + '.sum')).read().split()[0]
        except (OSError, IndexError):
            sums[c] = None
    case('many_outputs', all(v == want for v in sums.values()),
         {k: v for k, v in sums.items() if v != want})
    ctrd.remove_containers()
    left = ctrd.ctr('containers', 'ls', '-q').stdout.split()
    case('many_removed', not left, left)


def check_deep(reg, lay, host, ctrd, helper):
    ref = reg.addr + '/test/ctrd:deep'
    r = harness.ctl('pull', ref, address=host.sock)
    case('deep_daxfsctl_pull', r.returncode == 0, r.stderr)
    have = len(os.listdir(os.path.join(host.mnt, 'l')))
    wait_view(host, have + DEEP_LAYERS)
    before = len(reg.blob_gets())
    r = helper_pull(helper, ctrd, ref)
    case('deep_pull', r.returncode == 0, r.stdout + r.stderr)
    fetched = layer_gets(reg, before, lay, 'deep')
    case('deep_no_layer_fetched', not fetched, len(fetched))
    r = ctrd.run(ref, 'deep', '/bin/sh', '-c',
                 '/bin/busybox cat /layers/%03d /layers/000; /bin/busybox ls /layers | '
                 '/bin/busybox wc -l' % (DEEP_LAYERS - 1))
    want = 'layer %d\nbottom\n%d\n' % (DEEP_LAYERS - 1, DEEP_LAYERS)
    case('deep_run', r.returncode == 0 and r.stdout == want, r.stdout + r.stderr[-1500:])
    return ref


def log_counts(out, ids):
    """(ok lines, error lines) of each runner's log."""
    res = {}
    for c in ids:
        try:
            lines = open(os.path.join(out, c + '.log')).read().split()
        except OSError:
            lines = []
        res[c] = (lines.count('ok'), len([ln for ln in lines if ln != 'ok']))
    return res


def progressed(out, ids, since, seconds=10):
    """Every runner wrote more ok lines than in since (within seconds)."""
    for _ in range(seconds * 10):
        now = log_counts(out, ids)
        if all(now[c][0] > since[c][0] for c in ids):
            return now
        time.sleep(0.1)
    return log_counts(out, ids)


def check_restart(host, ctrd, ref):
    """Long-running containers read image files and write their rootfs
    while daxfsd is stopped with SIGTERM and then killed with SIGKILL,
    and restarted each time."""
    out = os.path.join(TMP, 'runners')
    os.makedirs(out, exist_ok=True)
    script = ('b=/bin/busybox; $b md5sum /bin/busybox /srv/hello > /want; '
              'while [ ! -e /out/stop ]; do '
              'if $b cat /srv/hello /bin/busybox > /copy && '
              '$b md5sum /bin/busybox /srv/hello > /got && $b cmp -s /got /want && '
              '$b test -s /copy; then echo ok; else echo ERR; fi >> /out/$1.log; '
              '$b sleep 0.05; done')
    ids = ['runner-%d-%d' % (os.getpid(), i) for i in range(RUNNERS)]
    bad = [r.stderr for r in (ctrd.run_detached(ref, c, out, '/bin/sh', '-c', script, 'sh',
                                                c) for c in ids) if r.returncode != 0]
    case('restart_runners_start', not bad, bad)
    counts = progressed(out, ids, {c: (0, 0) for c in ids})
    snaps = snap_ls(ctrd)
    for how in ('sigterm', 'sigkill'):
        if how == 'sigterm':
            host.stop()
        else:
            host.proc.kill()
            host.proc.wait()
        host.log.close()
        down = progressed(out, ids, counts)
        case('restart_%s_runners_while_down' % how,
             all(down[c][0] > counts[c][0] for c in ids), down)
        host.start()
        # containerd redials the proxy snapshotter with a backoff of up
        # to 3 s (its proxy plugin's dial options).
        for _ in range(100):
            if ctrd.ctr('snapshots', '--snapshotter', 'daxfs', 'ls').returncode == 0:
                break
            time.sleep(0.1)
        counts = progressed(out, ids, down)
        case('restart_%s_runners_after' % how, all(counts[c][0] > down[c][0] for c in ids)
             and not any(v[1] for v in counts.values()), counts)
        r = ctrd.run(ref, 'after-%s' % how, '/bin/busybox', 'cat', '/srv/hello')
        case('restart_%s_new_container' % how, r.stdout == HELLO.decode(),
             r.stdout + r.stderr)
        now = snap_ls(ctrd)
        case('restart_%s_snapshots_unchanged' % how, now == snaps,
             {'gone': sorted(set(snaps) - set(now)), 'new': sorted(set(now) - set(snaps)),
              'changed': sorted(k for k in snaps if k in now and snaps[k] != now[k])})
    open(os.path.join(out, 'stop'), 'w').close()
    time.sleep(0.3)
    counts = log_counts(out, ids)
    case('restart_no_errors', not any(v[1] for v in counts.values()), counts)
    ctrd.remove_containers()


def cri_supported(reg, helper, ctrd):
    """Does daxfsd fetch a layer into the region for a Prepare with the
    CRI labels (so that containerd does not fetch the blob as well)?  A
    pull of an image no host has tells: remote snapshots afterwards."""
    ref = reg.addr + '/test/ctrd:criprobe'
    before = len(remote_records(HOSTS[0]))
    r = helper_pull(helper, ctrd, ref, '-cri')
    case('cri_probe_pull', r.returncode == 0, r.stdout + r.stderr)
    return len(remote_records(HOSTS[0])) > before


def check_cri_race(reg, lay, helper, ctrds):
    if not cri_supported(reg, helper, ctrds[0]):
        skip('cri_race_one_download', 'daxfsd does not fetch layers for Prepares with the '
             'CRI labels yet')
        return
    ref = reg.addr + '/test/ctrd:cri'
    before = len(reg.blob_gets())
    results = [None, None]

    def go(i):
        results[i] = helper_pull(helper, ctrds[i], ref, '-cri')
    threads = [threading.Thread(target=go, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    case('cri_race_pulls', all(r.returncode == 0 for r in results),
         [r.stdout + r.stderr for r in results])
    gets = layer_gets(reg, before, lay, 'cri')
    per = {d: len([g for g in gets if d in g]) for d in layer_digests(lay, 'cri')}
    case('cri_race_one_download', all(n == 1 for n in per.values()), per)
    for i, c in enumerate(ctrds):
        r = c.run(ref, 'cri-%d' % i, '/bin/busybox', 'cat', '/tag')
        case('cri_race_run_%d' % i, r.stdout == 'cri', r.stdout + r.stderr)


def timed(fn, n=1):
    """Median wall time of n calls of fn (seconds) and the last result."""
    times, r = [], None
    for _ in range(n):
        t0 = time.time()
        r = fn()
        times.append(time.time() - t0)
    return sorted(times)[len(times) // 2], r


def compare_overlayfs(ctrd, helper, ref):
    """Figures, not checks: the same pull through containerd's unpacker
    and the same container start, on daxfs and on containerd's own
    overlayfs snapshotter, in this run (printed as info lines)."""
    def pull(snap):
        return subprocess.run([helper, 'pull', ctrd.sock, snap, ref], capture_output=True,
                              text=True, timeout=120)

    def start(snap):
        return ctrd.ctr('run', '--rm', '--snapshotter', snap, '--runc-root', RUNC_ROOT, ref,
                        'cmp-%s-%d-%f' % (snap, os.getpid(), time.time()),
                        '/bin/busybox', 'true')
    t_dax = FIGURES.get('daxfs_pull', 0.0)
    t_ovl, r = timed(lambda: pull('overlayfs'))
    if r.returncode != 0:
        print('info: overlayfs comparison skipped: %s' % (r.stdout + r.stderr).strip()[:300])
        return
    s_dax, _ = timed(lambda: start('daxfs'), 5)
    s_ovl, r = timed(lambda: start('overlayfs'), 5)
    print('info: unpacker pull of %s: daxfs (layers in the region) %.3f s, '
          'overlayfs (downloads and unpacks) %.3f s' % (ref, t_dax, t_ovl))
    print('info: ctr run --rm (median of 5): daxfs %.3f s, overlayfs %.3f s%s'
          % (s_dax, s_ovl, '' if r.returncode == 0 else ' (overlayfs run failed)'))


def check_local(reg, host, ctrd):
    ref = reg.addr + '/test/ctrd:local'
    local_before = [n for n, d in records(host.root, 3) if not d]
    r = ctrd.ctr('images', 'pull', '--snapshotter', 'daxfs', '--plain-http', ref)
    case('ctr_pull', r.returncode == 0, r.stdout + r.stderr)
    r = ctrd.run(ref, 'local-echo', '/bin/busybox', 'echo', 'ok')
    case('local_run', r.returncode == 0 and r.stdout.strip() == 'ok', r.stdout + r.stderr)
    r = ctrd.run(ref, 'local-cat', '/bin/busybox', 'cat', '/srv/hello')
    case('local_rootfs', r.stdout == 'hello from local disk\n', r.stdout + r.stderr)
    local = [n for n, d in records(host.root, 3) if not d and n not in local_before]
    case('local_snapshot', len(local) == 1, records(host.root))
    return ref


def check_gc(host, ctrd):
    layers = sorted(os.listdir(os.path.join(host.mnt, 'l')))
    for ns in ctrd.ctr('namespaces', 'ls', '-q').stdout.split():
        refs = ctrd.ctr('images', 'ls', '-q', ns=ns).stdout.split()
        if refs:
            r = ctrd.ctr('images', 'rm', '--sync', *refs, ns=ns)
            case('images_rm_%s' % ns, r.returncode == 0, r.stdout + r.stderr)
    left = records(host.root)
    for _ in range(100):	# the collector removes backend snapshots after the images
        if not left:
            break
        time.sleep(0.1)
        left = records(host.root)
    case('gc_removes_snapshots', not left, left)
    dirs = [d for d in os.listdir(os.path.join(host.root, 'snapshots'))]
    case('gc_removes_dirs', not dirs, dirs)
    now = sorted(os.listdir(os.path.join(host.mnt, 'l')))
    case('view_layers_kept', now == layers, (layers, now))


HOSTS = []


def main():
    if os.getuid() != 0 or not all(os.path.exists(p) for p in
                                   ('/usr/bin/containerd', '/usr/bin/ctr')):
        print('containerd: needs root, containerd and ctr', file=sys.stderr)
        return 77
    helper = snaptest()
    lay = layout()
    with open(CONFIG, 'w') as f:
        f.write('{}\n')
    reg = fixture.Registry(TMP)
    ctrds = []
    try:
        for tag in ('remote', 'local', 'deep', 'criprobe', 'cri'):
            fixture.push(lay, tag, reg, 'test/ctrd')
        subprocess.run([BUILD + '/daxfsctl', 'mkfs', '--size', '256M', REGION], check=True,
                       capture_output=True)
        for name in ('host', 'hostb'):
            sock = os.path.join(TMP, name + '-snapshotter.sock')
            h = harness.Daemon(name, REGION, CONFIG, [
                '--snapshotter-address', sock, '--view-binary', BUILD + '/daxfs-view'])
            h.snap_sock = sock
            HOSTS.append(h)
        host, host_b = HOSTS
        check_badcalls(helper, host)
        ctrds.append(Containerd('ctrd', host.snap_sock))
        ctrds.append(Containerd('ctrd-b', host_b.snap_sock))
        ctrd, ctrd_b = ctrds
        ref = check_remote(reg, lay, host, ctrd, helper)
        check_ctr_snapshots(ctrd)
        check_namespaces(reg, lay, host, ctrd, helper, ref)
        check_host_b(reg, lay, host_b, ctrd_b, helper, ref)
        check_many(ctrd, ref)
        check_deep(reg, lay, host, ctrd, helper)
        check_restart(host, ctrd, ref)
        check_cri_race(reg, lay, helper, ctrds)
        check_local(reg, host, ctrd)
        compare_overlayfs(ctrd, helper, ref)
        check_gc(host, ctrd)
    finally:
        for c in ctrds:
            c.stop()
        for h in HOSTS:
            h.stop()
            harness.stop_view(h.mnt)
        unmount_all()
        reg.stop()
    return suite.exit_code()


if __name__ == '__main__':
    sys.exit(main())
