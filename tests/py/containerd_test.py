"""daxfsd's snapshotter under a real containerd: a private containerd
(own root, state and socket, no CRI plugin) with daxfsd's socket as the
proxy snapshotter "daxfs".

  remote: an image daxfsd pulled into the region first is pulled through
          containerd's unpacker (tests/go/testsuite's "pull"): every layer
          becomes a remote snapshot over the view, no layer blob is
          fetched, and a container runs on it.
  local:  an image only the registry has, pulled with ctr (containerd
          unpacks into daxfs snapshots on local disk, on top of the
          remote base layer), and run with ctr.
  gc:     removing the images removes every snapshot record, and the
          view's layers stay.
Prints PASS:/FAIL: lines."""
import hashlib
import os
import signal
import sqlite3
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
import fixture  # noqa: E402
import harness  # noqa: E402

BUILD = harness.BUILD
TMP = harness.TMP
SRC = os.environ.get('DAXFS_SRC', os.path.join(os.path.dirname(__file__), '..', '..'))
REGION = os.path.join(TMP, 'region')
CONFIG = os.path.join(TMP, 'config.json')
SNAP_SOCK = os.path.join(TMP, 'snapshotter.sock')
CTRD = os.path.join(TMP, 'ctrd')
CTRD_SOCK = os.path.join(CTRD, 'containerd.sock')
suite = harness.Suite('containerd')
FIGURES = {}
case = suite.case


def build(path):
    lay = fixture.Layout(path)
    base = fixture.tar_bytes(fixture.busybox_entries())
    top_a = fixture.tar_bytes([('srv', 'd', None, 0o755, {}),
                               ('srv/hello', 'f', b'hello from the region\n', 0o644, {})])
    top_b = fixture.tar_bytes([('srv', 'd', None, 0o755, {}),
                               ('srv/hello', 'f', b'hello from local disk\n', 0o644, {})])
    lay.image('remote', [(base, 'gzip'), (top_a, 'gzip')])
    lay.image('local', [(base, 'gzip'), (top_b, 'gzip')])


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
    def __init__(self):
        os.makedirs(CTRD, exist_ok=True)
        cfg = os.path.join(CTRD, 'config.toml')
        with open(cfg, 'w') as f:
            f.write('version = 2\nroot = "%s/root"\nstate = "%s/state"\n'
                    'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
                    '[grpc]\n  address = "%s"\n[ttrpc]\n  address = "%s.ttrpc"\n'
                    '[debug]\n  address = ""\n[metrics]\n  address = ""\n'
                    '[plugins."io.containerd.internal.v1.opt"]\n  path = "%s/opt"\n'
                    '[proxy_plugins.daxfs]\n  type = "snapshot"\n  address = "%s"\n'
                    % (CTRD, CTRD, CTRD_SOCK, CTRD_SOCK, CTRD, SNAP_SOCK))
        self.log = open(os.path.join(CTRD, 'containerd.log'), 'w')
        self.proc = subprocess.Popen(['containerd', '--config', cfg], stdout=self.log,
                                     stderr=subprocess.STDOUT)
        for _ in range(200):
            if ctr('version').returncode == 0:
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError('containerd did not start: ' + open(self.log.name).read()[-3000:])

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def ctr(*args, timeout=120):
    return subprocess.run(['ctr', '-a', CTRD_SOCK] + list(args), capture_output=True,
                          text=True, timeout=timeout)


def run(image, name, *cmd):
    return ctr('run', '--rm', '--snapshotter', 'daxfs', '--runc-root',
               os.path.join(TMP, 'runc'), image, '%s-%d' % (name, os.getpid()), *cmd)


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
    import json
    idx = json.load(open(os.path.join(path, 'index.json')))
    for m in idx['manifests']:
        if m.get('annotations', {}).get('org.opencontainers.image.ref.name') == tag:
            d = m['digest'].split(':')[1]
            man = json.load(open(os.path.join(path, 'blobs', 'sha256', d)))
            return [l['digest'] for l in man['layers']]
    return []


def check_remote(reg, lay, host, helper):
    ref = reg.addr + '/test/ctrd:remote'
    r = harness.ctl('pull', ref, address=host.sock)
    case('daxfsctl_pull', r.returncode == 0, r.stderr)
    time.sleep(1.0)	# the view rescans its layers twice a second
    before = len(reg.blob_gets())
    t0 = time.time()
    r = subprocess.run([helper, 'pull', CTRD_SOCK, 'daxfs', ref], capture_output=True,
                       text=True, timeout=120)
    FIGURES['daxfs_pull'] = time.time() - t0
    case('unpacker_pull', r.returncode == 0, r.stdout + r.stderr)
    fetched = [g for g in reg.blob_gets()[before:]
               if any(d in g for d in layer_digests(lay, 'remote'))]
    case('no_layer_fetched', not fetched, fetched)
    remote = [(n, d) for n, d in records(host.root) if d]
    case('remote_snapshots', len(remote) == 2 and
         all(d.startswith(host.mnt + '/l/') for _, d in remote), records(host.root))
    r = run(ref, 'remote-echo', '/bin/busybox', 'echo', 'ok')
    case('remote_run', r.returncode == 0 and r.stdout.strip() == 'ok', r.stdout + r.stderr)
    r = run(ref, 'remote-cat', '/bin/busybox', 'cat', '/srv/hello')
    case('remote_rootfs', r.stdout == 'hello from the region\n', r.stdout + r.stderr)
    return ref


def timed(fn, n=1):
    """Median wall time of n calls of fn (seconds) and the last result."""
    times, r = [], None
    for _ in range(n):
        t0 = time.time()
        r = fn()
        times.append(time.time() - t0)
    return sorted(times)[len(times) // 2], r


def compare_overlayfs(reg, helper, ref):
    """Figures, not checks: the same pull through containerd's unpacker
    and the same container start, on daxfs and on containerd's own
    overlayfs snapshotter, in this run (printed as info lines)."""
    def pull(snap):
        return subprocess.run([helper, 'pull', CTRD_SOCK, snap, ref], capture_output=True,
                              text=True, timeout=120)

    def start(snap):
        return ctr('run', '--rm', '--snapshotter', snap, '--runc-root',
                   os.path.join(TMP, 'runc'), ref, 'cmp-%s-%d-%f' % (snap, os.getpid(),
                                                                    time.time()),
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


def check_local(reg, host):
    ref = reg.addr + '/test/ctrd:local'
    r = ctr('images', 'pull', '--snapshotter', 'daxfs', '--plain-http', ref)
    case('ctr_pull', r.returncode == 0, r.stdout + r.stderr)
    r = run(ref, 'local-echo', '/bin/busybox', 'echo', 'ok')
    case('local_run', r.returncode == 0 and r.stdout.strip() == 'ok', r.stdout + r.stderr)
    r = run(ref, 'local-cat', '/bin/busybox', 'cat', '/srv/hello')
    case('local_rootfs', r.stdout == 'hello from local disk\n', r.stdout + r.stderr)
    local = [n for n, d in records(host.root, 3) if not d]
    case('local_snapshot', len(local) == 1, records(host.root))
    return ref


def check_gc(host, refs):
    r = ctr('images', 'rm', '--sync', *refs)
    case('images_rm', r.returncode == 0, r.stdout + r.stderr)
    left = records(host.root)
    for _ in range(100):	# the collector removes backend snapshots after the images
        if not left:
            break
        time.sleep(0.1)
        left = records(host.root)
    case('gc_removes_snapshots', not left, left)
    dirs = [d for d in os.listdir(os.path.join(host.root, 'snapshots'))]
    case('gc_removes_dirs', not dirs, dirs)
    case('view_layers_kept', len(os.listdir(os.path.join(host.mnt, 'l'))) == 2,
         os.listdir(os.path.join(host.mnt, 'l')))


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
    host = ctrd = None
    try:
        for tag in ('remote', 'local'):
            fixture.push(lay, tag, reg, 'test/ctrd')
        subprocess.run([BUILD + '/daxfsctl', 'mkfs', '--size', '128M', REGION], check=True,
                       capture_output=True)
        host = harness.Daemon('host', REGION, CONFIG, [
            '--snapshotter-address', SNAP_SOCK, '--view-binary', BUILD + '/daxfs-view'])
        ctrd = Containerd()
        refs = [check_remote(reg, lay, host, helper), check_local(reg, host)]
        compare_overlayfs(reg, helper, refs[0])
        check_gc(host, refs)
    finally:
        if ctrd:
            ctrd.stop()
        if host:
            host.stop()
            harness.stop_view(host.mnt)
        unmount_all()
        reg.stop()
    return suite.exit_code()


if __name__ == '__main__':
    sys.exit(main())
