"""The snapshotter's region side, at the gRPC level (tests/unit/
helper_snapcall.c makes the calls), against a real daxfsd, its view and
a registry:

  pins:     remote snapshots keep their layers held by daxfsd; after the
            view and daxfsd stop, a restarted daxfsd holds them again
            from its records alone; Remove drops the hold.
  usage:    Usage of a remote snapshot is its layer's unpacked size.
  cri:      a Prepare with CRI's labels for an image only the registry
            has: daxfsd pulls it into the region once (one GET per blob,
            also when two Prepares come at once), answers AlreadyExists,
            and the later layers are READY.
  fallback: the same for an image the registry does not have: a local
            snapshot, counted and logged with the reason.
  capacity: with --containerd-root, containerd's image-filesystem path
            is a bind of the view (statfs = the region), once, also
            after a restart.
Prints PASS:/FAIL: lines."""
import hashlib
import json
import os
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
import fixture  # noqa: E402
import harness  # noqa: E402

BUILD = harness.BUILD
TMP = harness.TMP
REGION = os.path.join(TMP, 'region')
CONFIG = os.path.join(TMP, 'config.json')
SNAP_SOCK = os.path.join(TMP, 'snapshotter.sock')
CTRD_ROOT = os.path.join(TMP, 'containerd-root')
CAP_PATH = os.path.join(CTRD_ROOT, 'io.containerd.snapshotter.v1.daxfs')
REF_LABEL = 'containerd.io/snapshot.ref'
IMAGE_LABEL = 'containerd.io/snapshot/cri.image-ref'
LAYER_LABEL = 'containerd.io/snapshot/cri.layer-digest'
LAYERS_LABEL = 'containerd.io/snapshot/cri.image-layers'
suite = harness.Suite('snapregion')
case = suite.case


def build(path):
    lay = fixture.Layout(path)
    base = fixture.tar_bytes(fixture.busybox_entries())
    top = fixture.tar_bytes([('srv', 'd', None, 0o755, {}),
                             ('srv/pinned', 'f', b'pinned\n' * 1000, 0o644, {})])
    lay.image('pinned', [(base, 'gzip'), (top, 'gzip')])
    cri = [fixture.tar_bytes([('cri%d' % i, 'd', None, 0o755, {}),
                              ('cri%d/f' % i, 'f', b'layer %d\n' % i * 500, 0o644, {})])
           for i in range(3)]
    lay.image('cri', [(t, 'gzip') for t in cri])


def layout():
    src = open(__file__, 'rb').read() + open(fixture.__file__, 'rb').read()
    return fixture.cached_layout('snapregion-' + hashlib.sha256(src).hexdigest()[:16], build)


def image_layers(path, tag):
    """[(blob digest, diff_id, chainID)] of the image tagged tag."""
    def blob(d):
        return json.load(open(os.path.join(path, 'blobs', 'sha256', d.split(':')[1])))
    idx = json.load(open(os.path.join(path, 'index.json')))
    for m in idx['manifests']:
        if m.get('annotations', {}).get('org.opencontainers.image.ref.name') == tag:
            man = blob(m['digest'])
            diffs = blob(man['config']['digest'])['rootfs']['diff_ids']
            out, chain = [], None
            for l, d in zip(man['layers'], diffs):
                chain = d if chain is None else \
                    'sha256:' + hashlib.sha256((chain + ' ' + d).encode()).hexdigest()
                out.append((l['digest'], d, chain))
            return out
    raise KeyError(tag)


def call(*args):
    """(status, lines after the status line) of one gRPC call."""
    r = subprocess.run([BUILD + '/tests/helper_snapcall', SNAP_SOCK] + list(args),
                       capture_output=True, text=True, timeout=120)
    lines = r.stdout.splitlines()
    if r.returncode != 0 or not lines or not lines[0].startswith('status '):
        return None, [r.stdout + r.stderr]
    return int(lines[0].split()[1]), [lines[0]] + lines[1:]


def api(host, method):
    s = socket.socket(socket.AF_UNIX)
    s.connect(host.sock)
    s.sendall((json.dumps({'method': method}) + '\n').encode())
    buf = b''
    while not buf.endswith(b'\n'):
        got = s.recv(65536)
        if not got:
            break
        buf += got
    s.close()
    return json.loads(buf.decode().splitlines()[-1]).get('result', {})


def layers(host):
    r = harness.ctl('layers', '--json', address=host.sock)
    return {l['diff_id']: l for l in json.loads(r.stdout)['layers']}


def slot(host):
    r = harness.ctl('hosts', '--json', address=host.sock)
    return [h['slot'] for h in json.loads(r.stdout)['hosts'] if h['self']][0]


def held_by(host, diff_ids):
    """Do all layers diff_ids carry this host's holder bit?"""
    bit = 1 << slot(host)
    ls = layers(host)
    return all(d in ls and ls[d]['holder_mask'] & bit for d in diff_ids), \
        [(ls.get(d, {}).get('holder_mask')) for d in diff_ids]


def start_host(capacity=False):
    """The bind at the capacity path keeps the view's FUSE mount alive, so
    the cases that stop the view run without it."""
    return harness.Daemon('host', REGION, CONFIG, [
        '--snapshotter-address', SNAP_SOCK, '--view-binary', BUILD + '/daxfs-view'] +
        (['--containerd-root', CTRD_ROOT] if capacity else []))


def check_pins(reg, lay, host):
    ref = reg.addr + '/test/snapregion:pinned'
    ls = image_layers(lay, 'pinned')
    r = harness.ctl('pull', ref, address=host.sock)
    case('daxfsctl_pull', r.returncode == 0, r.stderr)
    st1, o1 = call('prepare', 'extract-1', '', REF_LABEL + '=' + ls[0][2])
    st2, o2 = call('prepare', 'extract-2', ls[0][2], REF_LABEL + '=' + ls[1][2])
    case('remote_prepares', st1 == 6 and st2 == 6, o1 + o2)
    st, out = call('prepare', 'container', ls[1][2])
    lower = [o for o in out if o.startswith('mount overlay ')]
    case('container_over_view', st == 0 and lower and lower[0].count(host.mnt + '/l/') == 2,
         out)
    ok, masks = held_by(host, [d for _, d, _ in ls])
    case('held', ok, masks)
    st, out = call('usage', ls[1][2])
    info = layers(host)[ls[1][1]]
    case('usage_is_layer', st == 0 and len(out) > 1 and
         out[1] == 'usage %d %d' % (info['unpacked_bytes'], info['files']), (out, info))
    # Nothing but the records justifies a hold after this.
    host.stop()
    harness.stop_view(host.mnt)
    host.start()
    ok, masks = held_by(host, [d for _, d, _ in ls])
    case('held_after_restart', ok, masks)
    st, out = call('mounts', 'container')
    case('mounts_after_restart', st == 0 and out[1].count(host.mnt + '/l/') == 2, out)
    r = harness.ctl('gc', '--all', address=host.sock)
    if r.returncode == 0 or 'unknown' not in (r.stdout + r.stderr).lower():
        ls_now = layers(host)
        case('gc_keeps_held', all(ls_now.get(d, {}).get('state') == 'ready'
                                  for _, d, _ in ls), r.stdout + r.stderr)
    for key in ('container', ls[1][2], ls[0][2]):
        st, out = call('remove', key)
        case('remove_' + key[:14], st == 0, out)
    # The view may hold a layer the kernel still caches: let it go.
    harness.stop_view(host.mnt)
    bit = 1 << slot(host)
    masks = [layers(host)[d]['holder_mask'] & bit for _, d, _ in ls]
    case('remove_drops_hold', masks == [0, 0], masks)
    return ls


def check_cri(reg, lay, host):
    ref = reg.addr + '/test/snapregion:cri'
    ls = image_layers(lay, 'cri')
    labels = [IMAGE_LABEL + '=' + ref, LAYERS_LABEL + '=' + ','.join(d for d, _, _ in ls)]
    before = len(reg.blob_gets())
    procs = [subprocess.Popen([BUILD + '/tests/helper_snapcall', SNAP_SOCK, 'prepare',
                               'cri-extract-%d' % k, '', REF_LABEL + '=' + ls[0][2],
                               LAYER_LABEL + '=' + ls[0][0]] + labels,
                              stdout=subprocess.PIPE, text=True) for k in range(2)]
    outs = [p.communicate(timeout=120)[0] for p in procs]
    case('cri_prepare_already_exists', all(o.startswith('status 6 ') for o in outs), outs)
    gets = reg.blob_gets()[before:]
    per_blob = [sum(d in g for g in gets) for d, _, _ in ls]
    case('cri_one_get_per_blob', per_blob == [1, 1, 1], (per_blob, gets))
    ready = layers(host)
    case('cri_later_layers_ready', all(ready.get(d, {}).get('state') == 'ready'
                                       for _, d, _ in ls), ready)
    st, out = call('prepare', 'cri-extract-2', ls[0][2], REF_LABEL + '=' + ls[1][2],
                   LAYER_LABEL + '=' + ls[1][0], *labels)
    stats = api(host, 'stats')
    case('cri_second_layer_no_pull', st == 6 and stats.get('cri_pulls') == 1 and
         len(reg.blob_gets()) == before + len(gets), (out, stats))


def check_fallback(reg, host):
    ref = reg.addr + '/test/snapregion:missing'
    chain = 'sha256:' + hashlib.sha256(b'no such layer').hexdigest()
    st, out = call('prepare', 'missing-extract', '', REF_LABEL + '=' + chain,
                   LAYER_LABEL + '=' + chain, IMAGE_LABEL + '=' + ref)
    case('fallback_local_prepare', st == 0 and any(o.startswith('mount bind ') for o in out),
         out)
    stats = api(host, 'stats')
    case('fallback_counted', stats.get('cri_fallbacks') == 1, stats)
    log = open(host.log.name).read()
    lines = [l for l in log.splitlines() if 'missing-extract' in l and 'pull failed' in l]
    case('fallback_logged', lines, log[-2000:])
    st, out = call('remove', 'missing-extract')
    case('fallback_remove', st == 0, out)


def mounts_at(path):
    return sum(1 for l in open('/proc/self/mountinfo') if l.split()[4] == path)


def check_capacity(host):
    for _ in range(100):
        if mounts_at(CAP_PATH):
            break
        time.sleep(0.05)
    df = json.loads(harness.ctl('df', '--json', address=host.sock).stdout)
    try:
        st = os.statvfs(CAP_PATH)
        got = (st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize)
    except OSError as e:
        got = e
    want = (df['data_bytes'] // 4096 * 4096,
            (df['data_bytes'] - df['data_used']) // 4096 * 4096)
    case('capacity_is_region', got == want, (got, want))
    host.stop()
    host.start()
    time.sleep(1.2)	# the bind is looked at twice a second
    case('capacity_not_stacked', mounts_at(CAP_PATH) == 1, mounts_at(CAP_PATH))
    try:
        open(os.path.join(CAP_PATH, 'x'), 'w')
        ro = False
    except OSError:
        ro = True
    case('capacity_read_only', ro)


def main():
    if os.getuid() != 0:
        print('snapregion: needs root (FUSE, mounts)', file=sys.stderr)
        return 77
    lay = layout()
    with open(CONFIG, 'w') as f:
        f.write('{}\n')
    reg = fixture.Registry(TMP)
    host = None
    try:
        for tag in ('pinned', 'cri'):
            fixture.push(lay, tag, reg, 'test/snapregion')
        subprocess.run([BUILD + '/daxfsctl', 'mkfs', '--size', '64M', REGION], check=True,
                       capture_output=True)
        host = start_host()
        check_pins(reg, lay, host)
        check_cri(reg, lay, host)
        check_fallback(reg, host)
        host.stop()
        host = start_host(capacity=True)
        check_capacity(host)
    finally:
        if host:
            host.stop()
        subprocess.run(['umount', '-l', CAP_PATH], capture_output=True)
        if host:
            harness.stop_view(host.mnt)
        reg.stop()
    return suite.exit_code()


if __name__ == '__main__':
    sys.exit(main())
