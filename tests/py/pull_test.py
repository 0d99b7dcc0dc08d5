"""End-to-end pulls: two daxfsd hosts on one region against a real
registry.  Prints PASS:/FAIL: lines."""
import hashlib
import json
import os
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))
import fixture  # noqa: E402
import harness  # noqa: E402
import layertar  # noqa: E402

BUILD = os.environ['DAXFS_BUILD']
TMP = os.environ['DAXFS_TMP']
REGION = os.path.join(TMP, 'region')
CONFIG = os.path.join(TMP, 'config.json')
suite = harness.Suite('pull')
case = suite.case
ctl = harness.ctl



def rich_entries():
    return [
        ('etc', 'd', None, 0o755, {}),
        ('etc/passwd', 'f', b'root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n',
         0o644, {}),
        ('etc/.wh.motd', 'f', b'', 0o644, {}),
        ('var/cache', 'd', None, 0o755, {}),
        ('var/cache/.wh..wh..opq', 'f', b'', 0o644, {}),
        ('var/cache/fresh', 'f', b'new cache', 0o600, {'uid': 1000, 'gid': 1000}),
        ('usr/bin/ping', 'f', b'\x7fELF' + b'p' * 4000, 0o4755,
         {'pax': {'SCHILY.xattr.security.capability': '\x01\x00\x00\x02\x00\x20\x00\x00'}}),
        ('usr/bin/ping6', 'h', 'usr/bin/ping', 0o4755, {}),
        ('usr/bin/grp', 'f', b'setgid', 0o2755, {'gid': 50}),
        ('usr/lib/libfoo.so', 'l', 'libfoo.so.1', 0o777, {}),
        ('usr/lib/libfoo.so.1', 'f', bytes(range(256)) * 64, 0o644,
         {'pax': {'mtime': '1700000001.5'}}),
        ('dev/null', 'c', None, 0o666, {'dev': (1, 3)}),
        ('dev/loop0', 'b', None, 0o660, {'dev': (7, 0), 'gid': 6}),
        ('run/ctl', 'p', None, 0o600, {}),
        ('srv/data.bin', 'f', os.urandom(0) + bytes((i * 7) & 0xff for i in range(3 << 20)),
         0o644, {}),
    ]


def build_app(path):
    lay = fixture.Layout(path)
    base = fixture.tar_bytes(fixture.busybox_entries())
    rich = fixture.tar_bytes(rich_entries())
    empty = fixture.tar_bytes([])
    ztar = fixture.tar_bytes([('opt/z/readme', 'f', b'zstd layer ' * 1000, 0o644, {}),
                              ('opt/z/bin', 'f', bytes(range(256)) * 4096, 0o755, {})])
    extra = fixture.tar_bytes([('app/v2', 'f', b'version two\n', 0o644, {})])
    lay.image('1', [(base, 'gzip'), (rich, 'gzip'), (empty, 'gzip'), (ztar, 'zstd')])
    lay.image('2', [(base, 'gzip'), (rich, 'gzip'), (extra, 'gzip')])
    fresh = [fixture.tar_bytes([('fresh/%d/%d' % (k, j), 'f', os.urandom(0) +
                                 (b'%d-%d ' % (k, j)) * 5000, 0o644, {}) for j in range(20)])
             for k in range(3)]
    lay.image('3', [(t, 'gzip') for t in fresh])
    bad = fixture.tar_bytes([('bad', 'f', b'diff id lies', 0o644, {})])
    lay.image('baddiff', [(base, 'gzip'), (bad, 'gzip')], wrong_diff_id=True)
    odd = fixture.tar_bytes([('odd', 'f', b'odd media type', 0o644, {})])
    lay.image('badtype', [(odd, 'gzip')], media_type='application/vnd.example.unknown')
    for tag in ('flaky', 'corrupt', 'cut', 'slow'):
        import random
        noise = random.Random(tag).randbytes(1 << 20)	# does not compress
        t = fixture.tar_bytes([('%s/blob' % tag, 'f', noise, 0o644, {})])
        lay.image(tag, [(t, 'gzip')])
    for arch, var in (('amd64', None), ('arm64', 'v8')):
        t = fixture.tar_bytes([('arch', 'f', arch.encode(), 0o644, {})])
        lay.image(arch, [(base, 'gzip'), (t, 'gzip')], arch=arch, variant=var)


def layout():
    src = open(__file__, 'rb').read() + open(fixture.__file__, 'rb').read()
    return fixture.cached_layout('app-' + hashlib.sha256(src).hexdigest()[:16], build_app)


def Daemon(name):
    return harness.Daemon(name, REGION, CONFIG, ['--retries', '2', '--backoff-ms', '20', '--view', 'external', '--log-level', 'debug'])


def layer_ok(path, diff_hex, tarpath):
    d = subprocess.run([BUILD + '/tests/helper_dump', REGION, '1', diff_hex],
                       capture_output=True, text=True)
    if d.returncode != 0:
        return ['dump failed: ' + d.stdout + d.stderr]
    return layertar.compare(layertar.expected_tree(tarpath), layertar.parse_dump(d.stdout))


class Proxy:
    """tests/py/regfault.py in front of the registry."""

    def __init__(self, reg):
        self.dir = os.path.join(TMP, 'proxy')
        os.makedirs(self.dir, exist_ok=True)
        self.proc = subprocess.Popen(['python3', os.path.join(os.path.dirname(__file__),
                                      'regfault.py'), 'serve', '--upstream', reg.addr,
                                      '--state', self.dir],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        ports = os.path.join(self.dir, 'ports')
        for _ in range(200):
            if os.path.exists(ports):
                break
            time.sleep(0.05)
        self.port = int(open(ports).read().split()[0])
        self.addr = '127.0.0.1:%d' % self.port

    def ctl(self, what, body=b''):
        import urllib.request
        req = urllib.request.Request('http://%s/_ctl/%s' % (self.addr, what), data=body,
                                     method='POST')
        return urllib.request.urlopen(req, timeout=10).read().decode()

    def rules(self, rules):
        self.ctl('rules', json.dumps(rules).encode())

    def requests_for(self, digest):
        return [line for line in self.ctl('log').splitlines() if digest in line]

    def stop(self):
        self.proc.kill()
        self.proc.wait()


def layer_state(d, digest):
    for l in json.loads(ctl('layers', '--json', address=d.sock).stdout)['layers']:
        if l.get('digest') == digest:
            return l['state']
    return None


def faults_via_proxy(reg, mans, a, b, daemons):
    """Registry faults on the way, and a host that dies mid-unpack."""
    px = Proxy(reg)
    try:
        dg = mans['flaky']['layers'][0]['digest']
        px.rules([{'mode': 'status', 'status': 500, 'match': dg, 'count': 2}])
        r = ctl('pull', px.addr + '/test/app:flaky', address=a.sock)
        case('registry_500s_retried', r.returncode == 0 and len(px.requests_for(dg)) == 3,
             (r.stderr, px.requests_for(dg)))
        dg = mans['cut']['layers'][0]['digest']
        px.rules([{'mode': 'cut', 'match': dg}])
        r = ctl('pull', px.addr + '/test/app:cut', address=a.sock)
        reqs = px.requests_for(dg)
        case('truncated_blob_resumed', r.returncode == 0 and len(reqs) == 2 and
             'range=bytes=' in reqs[1], (r.stderr, reqs))
        dg = mans['corrupt']['layers'][0]['digest']
        px.rules([{'mode': 'corrupt', 'match': dg, 'count': -1}])
        r = ctl('pull', px.addr + '/test/app:corrupt', address=a.sock)
        case('corrupt_blob_refused', r.returncode != 0 and 'digest mismatch' in r.stderr and
             layer_state(a, dg) is None, (r.stderr, layer_state(a, dg)))

        # Host A stalls mid-layer and is killed; host B waits, then takes over.
        dg = mans['slow']['layers'][0]['digest']
        px.rules([{'mode': 'stall', 'match': dg, 'secs': 60, 'bytes': 300000}])
        ta = subprocess.Popen([BUILD + '/daxfsctl', 'pull', '--address', a.sock,
                               px.addr + '/test/app:slow'], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
        raw_state = None
        for _ in range(200):
            raw_state = subprocess.run([BUILD + '/daxfsctl', 'layers', '--json', '--address',
                                        b.sock], capture_output=True, text=True).stdout
            if '"unpacking"' in raw_state:
                break
            time.sleep(0.05)
        a.proc.kill()
        a.proc.wait()
        ta.kill()
        ta.wait()
        t0 = time.time()
        r = ctl('pull', reg.addr + '/test/app:slow', address=b.sock)
        case('takeover_after_claimant_dies', r.returncode == 0 and
             'waiting for host host-a' in r.stdout and layer_state(b, dg) == 'ready',
             (raw_state, r.stdout, r.stderr))
        print('info: takeover of a layer from a killed host took %.2f s (lease 1 s)'
              % (time.time() - t0))
        daemons[0] = Daemon('host-a')	# back as a new incarnation
        r = ctl('fsck', REGION)
        case('fsck_clean_after_takeover', r.returncode == 0, r.stdout + r.stderr)
    finally:
        px.stop()


def main():
    lay = layout()
    with open(CONFIG, 'w') as f:
        f.write('{"log-level": "debug"}\n')
    reg = fixture.Registry(TMP)
    daemons = []
    try:
        for tag in ('1', '2', '3', 'baddiff', 'badtype', 'flaky', 'corrupt', 'cut', 'slow',
                    'amd64', 'arm64'):
            fixture.push(lay, tag, reg, 'test/app')
        mans = fixture.manifests(lay)
        index = {'schemaVersion': 2, 'mediaType': 'application/vnd.oci.image.index.v1+json',
                 'manifests': []}
        for m in json.load(open(os.path.join(lay, 'index.json')))['manifests']:
            if m['annotations']['org.opencontainers.image.ref.name'] in ('amd64', 'arm64'):
                index['manifests'].append({k: m[k] for k in ('mediaType', 'digest', 'size',
                                                             'platform')})
        fixture.put_manifest(reg, 'test/app', 'multi', json.dumps(index).encode(),
                             index['mediaType'])
        subprocess.run([BUILD + '/daxfsctl', 'mkfs', '--size', '256M', REGION], check=True,
                       capture_output=True)
        a = Daemon('host-a')
        daemons.append(a)
        ref = reg.addr + '/test/app:1'
        before = len(reg.blob_gets())
        t0 = time.time()
        r = ctl('pull', ref, address=a.sock)
        ta = time.time() - t0
        case('pull_on_a', r.returncode == 0 and 'pulled' in r.stdout, r.stdout + r.stderr)
        gets_a = reg.blob_gets()[before:]
        nblobs = len(mans['1']['layers'])
        case('a_fetched_each_blob_once', len(gets_a) == nblobs + 1,
             '%d blob GETs for %d layers + config' % (len(gets_a), nblobs))
        # Each layer's tree equals its tar.
        for i, l in enumerate(mans['1']['layers']):
            blob = open(os.path.join(lay, 'blobs', 'sha256', l['digest'][7:]), 'rb').read()
            raw = blob
            if l['mediaType'].endswith('gzip'):
                import gzip
                raw = gzip.decompress(blob)
            elif l['mediaType'].endswith('zstd'):
                raw = subprocess.run(['zstd', '-d', '-c', '-q'], input=blob,
                                     capture_output=True, check=True).stdout
            tp = os.path.join(TMP, 'layer%d.tar' % i)
            open(tp, 'wb').write(raw)
            diffs = layer_ok(lay, hashlib.sha256(raw).hexdigest(), tp)
            case('layer%d_tree_matches_tar' % i, not diffs, '; '.join(diffs[:5]))
        df_a = json.loads(ctl('df', '--json', address=a.sock).stdout)

        b = Daemon('host-b')
        daemons.append(b)
        before = len(reg.blob_gets())
        t0 = time.time()
        r = ctl('pull', ref, address=b.sock)
        tb = time.time() - t0
        gets_b = reg.blob_gets()[before:]
        layer_gets = [g for g in gets_b if any(l['digest'] in g for l in mans['1']['layers'])]
        case('pull_on_b', r.returncode == 0, r.stdout + r.stderr)
        case('b_downloads_no_layer', not layer_gets, layer_gets)
        df_b = json.loads(ctl('df', '--json', address=b.sock).stdout)
        case('region_does_not_grow', df_b['data_used'] == df_a['data_used'],
             (df_a['data_used'], df_b['data_used']))
        print('info: pull of %d layers: host A %.2f s, host B %.2f s; data used %d -> %d bytes'
              % (nblobs, ta, tb, df_a['data_used'], df_b['data_used']))

        # Both hosts pull a new image at once: each new layer fetched once.
        before = len(reg.blob_gets())
        out = {}

        def pull_on(d, key):
            out[key] = ctl('pull', reg.addr + '/test/app:2', address=d.sock)
        ts = [threading.Thread(target=pull_on, args=(d, k)) for d, k in ((a, 'a'), (b, 'b'))]
        [t.start() for t in ts]
        [t.join() for t in ts]
        gets = reg.blob_gets()[before:]
        new = mans['2']['layers'][-1]['digest']
        case('concurrent_pull_ok', out['a'].returncode == 0 and out['b'].returncode == 0,
             out['a'].stdout + out['a'].stderr + out['b'].stdout + out['b'].stderr)
        case('concurrent_new_layer_fetched_once', sum(new in g for g in gets) == 1,
             [g for g in gets if new in g])

        # Both hosts pull an image none of whose layers is in the region.
        before = len(reg.blob_gets())
        ts = [threading.Thread(target=lambda d=d, k=k: out.__setitem__(
            k, ctl('pull', reg.addr + '/test/app:3', address=d.sock)))
            for d, k in ((a, 'a3'), (b, 'b3'))]
        [t.start() for t in ts]
        [t.join() for t in ts]
        gets = reg.blob_gets()[before:]
        counts = [sum(l['digest'] in g for g in gets) for l in mans['3']['layers']]
        case('concurrent_all_new_each_layer_once', out['a3'].returncode == 0 and
             out['b3'].returncode == 0 and counts == [1, 1, 1],
             (counts, out['a3'].stderr, out['b3'].stderr))

        # Faults: clear error, nothing READY left behind.
        n_ready = sum(l['state'] == 'ready' for l in
                      json.loads(ctl('layers', '--json', address=a.sock).stdout)['layers'])
        r = ctl('pull', reg.addr + '/test/app:baddiff', address=a.sock)
        case('diff_id_mismatch_error', r.returncode != 0 and 'diff_id mismatch' in r.stderr,
             r.stderr)
        r = ctl('pull', reg.addr + '/test/app:badtype', address=a.sock)
        case('unknown_media_type_error', r.returncode != 0 and
             'application/vnd.example.unknown' in r.stderr, r.stderr)
        lays = json.loads(ctl('layers', '--json', address=a.sock).stdout)['layers']
        # baddiff's first layer is shared with app:1; nothing new became READY.
        case('faults_leave_nothing_ready', sum(l['state'] == 'ready' for l in lays) == n_ready,
             lays)

        faults_via_proxy(reg, mans, a, b, daemons)
        a = daemons[0]

        # Platform selection from an index.
        r = ctl('pull', reg.addr + '/test/app:multi', address=a.sock)
        r2 = ctl('pull', '--platform', 'linux/arm64', reg.addr + '/test/app:multi',
                 address=a.sock)
        lays = json.loads(ctl('layers', '--json', address=a.sock).stdout)['layers']
        amd = mans['amd64']['layers'][-1]['digest']
        arm = mans['arm64']['layers'][-1]['digest']
        have = {l.get('digest') for l in lays}
        case('index_platforms', r.returncode == 0 and r2.returncode == 0 and
             amd in have and arm in have, r.stderr + r2.stderr)
        r = ctl('pull', '--platform', 'linux/s390x', reg.addr + '/test/app:multi',
                address=a.sock)
        case('index_no_platform_error', r.returncode != 0 and 's390x' in r.stderr, r.stderr)

        # Errors: one clear line, non-zero exit.
        r = ctl('pull', reg.addr + '/test/app:nope', address=a.sock)
        case('unknown_tag_error', r.returncode != 0 and r.stderr.count('\n') == 1 and
             ('404' in r.stderr or 'unknown' in r.stderr.lower()), r.stderr)
        r = ctl('pull', 'Bad//Ref', address=a.sock)
        case('bad_reference_error', r.returncode != 0 and r.stderr.strip(), r.stderr)

        # Listings.
        imgs = json.loads(ctl('images', '--json', address=b.sock).stdout)['images']
        case('images_seen_by_every_host', {reg.addr + '/test/app:1', reg.addr + '/test/app:2'}
             <= {i['ref'] for i in imgs}, imgs)
        hosts = json.loads(ctl('hosts', '--json', address=a.sock).stdout)['hosts']
        case('hosts_listing', {'host-a', 'host-b'} <= {h['name'] for h in hosts}, hosts)
        r = ctl('rm', reg.addr + '/test/app:2', address=a.sock)
        imgs = json.loads(ctl('images', '--json', address=b.sock).stdout)['images']
        case('rm_image', r.returncode == 0 and reg.addr + '/test/app:2' not in
             {i['ref'] for i in imgs}, r.stderr)

        # One daemon per root.
        dup = subprocess.run([BUILD + '/daxfsd', '--config', CONFIG, '--region', REGION,
                              '--root', a.root, '--address', a.sock + '2'],
                             capture_output=True, text=True, timeout=30)
        case('second_daemon_same_root_refused', dup.returncode != 0 and
             'another daxfsd' in dup.stderr, dup.stderr)
        codes = [d.stop() for d in daemons]
        daemons = []
        case('sigterm_exits_cleanly', codes == [0, 0], codes)
        r = ctl('fsck', REGION)
        case('fsck_clean', r.returncode == 0, r.stdout + r.stderr)
    finally:
        for d in daemons:
            d.proc.kill()
        reg.stop()
    return suite.exit_code()


if __name__ == '__main__':
    sys.exit(main())
