"""containerd with daxfs vs containerd's overlayfs snapshotter on a
realistic image, measured in one run (bench/containerd.sh).

The image: a Debian bookworm minbase rootfs (debootstrap, cached by
bench/fuse_rootfs.py) split into three layers (usr/lib, usr/share, the
rest) plus an application layer of generated files and a small config
layer.  Two hosts share one region under /dev/shm; each has a daxfsd
(own root, view and host UUID) and a private containerd whose "daxfs"
proxy snapshotter is that daxfsd.  All other state (registry, containerd
roots, daxfsd roots, overlayfs snapshots) is on a fresh ext4 in a loop
image.  Measured:

  pull A    host A, containerd's unpacker pull with the CRI plugin's
            layer labels (as Kubernetes pulls): daxfs = daxfsd pulls the
            image into the region and containerd fetches nothing;
            overlayfs = containerd downloads and unpacks
  pull B    host B, the same: daxfs = the layers are in the region
            already; overlayfs = its own download and unpack
  start     ctr run --rm IMAGE ID /bin/true, median of RUNS
  walk      find / -xdev -type f | cat inside a container, after
            drop_caches (first) and again in the same container (warm)
  extra     what host B adds: disk (containerd's content store and
            snapshots, daxfsd's snapshots) and page cache its copy of the
            files holds after its walk (fincore on its view or snapshots)
Prints one table and daxfs/overlayfs ratios."""
import hashlib
import io
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
BUILD = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else 'build')
WORK = tempfile.mkdtemp(prefix='daxfs-bench-ctrd.', dir='/var/tmp')
DISK = os.path.join(WORK, 'disk')
os.environ['DAXFS_BUILD'] = BUILD
os.environ['DAXFS_TMP'] = DISK
sys.path.insert(0, os.path.join(HERE, '..', 'tests', 'py'))
sys.path.insert(0, HERE)
import containerd_test as ct  # noqa: E402
import fixture  # noqa: E402
import fuse_rootfs  # noqa: E402
import harness  # noqa: E402

CACHE = os.path.join(BUILD, 'bench-containerd')
RUNS = int(os.environ.get('DAXFS_BENCH_RUNS', '10'))
REGION = '/dev/shm/daxfs-bench-ctrd.%d' % os.getpid()
WALK = ('w() { s=$(date +%s%N); n=$(find / -xdev -type f -exec cat {} + | wc -c); '
        'e=$(date +%s%N); echo "$n $(( (e - s) / 1000000 ))"; }; w; w')


def log(msg):
    print('[bench-containerd] ' + msg, file=sys.stderr, flush=True)


def split_layers(rootfs_tar):
    """The rootfs as layer tars: usr/lib, usr/share, the rest (each with
    the directories above its entries; a hard link goes with its target)."""
    groups = ('usr/lib', 'usr/share', '')

    def group(name):
        for i, g in enumerate(groups):
            if not g or name == g or name.startswith(g + '/'):
                return i
    with tarfile.open(rootfs_tar) as src:
        members = src.getmembers()
        dirs = {m.name: m for m in members if m.isdir()}
        home = {}
        outs = [io.BytesIO() for _ in groups]
        tars = [tarfile.open(fileobj=o, mode='w', format=tarfile.PAX_FORMAT) for o in outs]
        made = [set() for _ in groups]
        for m in members:
            g = home[m.linkname] if m.islnk() and m.linkname in home else group(m.name)
            home[m.name] = g
            parts = m.name.split('/')
            for k in range(1, len(parts)):
                p = '/'.join(parts[:k])
                if p in dirs and p not in made[g]:
                    made[g].add(p)
                    tars[g].addfile(dirs[p])
            if m.isdir():
                if m.name in made[g]:
                    continue
                made[g].add(m.name)
            tars[g].addfile(m, src.extractfile(m) if m.isreg() else None)
        for t in tars:
            t.close()
    return [o.getvalue() for o in outs]


def app_layers():
    """An application layer (1,500 generated files, 40 MiB, half of it
    incompressible) and a config layer."""
    import random
    rnd = random.Random(7)
    entries = [('opt', 'd', None, 0o755, {}), ('opt/app', 'd', None, 0o755, {})]
    for d in range(30):
        entries.append(('opt/app/m%02d' % d, 'd', None, 0o755, {}))
    for i in range(1500):
        size = min(int(rnd.lognormvariate(9.0, 1.3)), 2 << 20)
        data = rnd.randbytes(size // 2) + bytes(size - size // 2)
        entries.append(('opt/app/m%02d/f%04d' % (i % 30, i), 'f', data, 0o644, {}))
    conf = [('etc', 'd', None, 0o755, {}),
            ('etc/app.conf', 'f', b'threads = 4\n', 0o644, {})]
    return [fixture.tar_bytes(entries), fixture.tar_bytes(conf)]


def layout():
    rootfs, desc = fuse_rootfs.rootfs_tar(log)
    with open(__file__, 'rb') as f:
        key = hashlib.sha256(f.read() + os.path.basename(rootfs).encode()).hexdigest()[:16]
    path = os.path.join(CACHE, 'layout-' + key)
    if not os.path.exists(os.path.join(path, 'index.json')):
        log('building the image (once; cached under %s)' % CACHE)
        shutil.rmtree(path, ignore_errors=True)
        tmp = path + '.tmp'
        shutil.rmtree(tmp, ignore_errors=True)
        lay = fixture.Layout(tmp)
        lay.image('deb', [(t, 'gzip') for t in split_layers(rootfs) + app_layers()])
        os.rename(tmp, path)
    return path, desc


def du(path):
    r = subprocess.run(['du', '-sb', path], capture_output=True, text=True)
    return int(r.stdout.split()[0]) if r.returncode == 0 else 0


def resident(root):
    """Bytes of the regular files below root in the page cache (fincore):
    what a host's copy of the image holds there, whatever the other
    processes on this shared machine do to the totals."""
    r = subprocess.run('find %s -type f -print0 | xargs -0 -r fincore -b -n -o RES' % root,
                       shell=True, capture_output=True, text=True)
    return sum(int(x) for x in r.stdout.split() if x.isdigit())


def drop_caches():
    subprocess.run(['sync'])
    with open('/proc/sys/vm/drop_caches', 'w') as f:
        f.write('3\n')


def timed(fn):
    t0 = time.monotonic()
    r = fn()
    return time.monotonic() - t0, r


def must(r, what):
    if r.returncode != 0:
        raise RuntimeError('%s: %s' % (what, (r.stdout + r.stderr)[-1500:]))
    return r


def walk(ctrd, ref, snap, name):
    """(bytes, first ms, warm ms) of the walk in one container."""
    r = must(ctrd.ctr('run', '--rm', '--snapshotter', snap, '--runc-root', ct.RUNC_ROOT, ref,
                      '%s-%d' % (name, os.getpid()), '/bin/sh', '-c', WALK,
                      timeout=600), 'walk on ' + snap)
    a, b = [ln.split() for ln in r.stdout.split('\n') if ln.strip()][:2]
    if a[0] != b[0]:
        raise RuntimeError('walks read %s and %s bytes' % (a[0], b[0]))
    return int(a[0]), int(a[1]) / 1000.0, int(b[1]) / 1000.0


def walk_resident(ctrd, ref, snap, name, root):
    """Bytes of page cache below root once a walk in a container on
    ctrd has read every file, measured while the container still runs
    (this machine's runc drops a container's page cache with its memory
    cgroup)."""
    out = os.path.join(DISK, 'walk-' + name)
    os.makedirs(out)
    cid = '%s-%d' % (name, os.getpid())
    must(ctrd.ctr('run', '-d', '--snapshotter', snap, '--runc-root', ct.RUNC_ROOT, '--mount',
                  'type=bind,src=%s,dst=/out,options=rbind:rw' % out, ref, cid, '/bin/sh',
                  '-c', WALK + ' > /out/walk; touch /out/done; '
                  'while [ ! -e /out/stop ]; do sleep 0.1; done'), 'walk on ' + snap)
    try:
        for _ in range(6000):
            if os.path.exists(os.path.join(out, 'done')):
                break
            time.sleep(0.1)
        return resident(root)
    finally:
        open(os.path.join(out, 'stop'), 'w').close()
        ctrd.remove_containers()


def start_median(ctrd, ref, snap):
    times = []
    for i in range(RUNS):
        t, r = timed(lambda: ctrd.ctr('run', '--rm', '--snapshotter', snap, '--runc-root',
                                      ct.RUNC_ROOT, ref, 'start-%s-%d-%d' % (snap, os.getpid(),
                                                                             i), '/bin/true'))
        must(r, 'ctr run on ' + snap)
        times.append(t)
    return statistics.median(times)


def measure(reg, lay, helper, hosts, ctrds):
    ref = reg.addr + '/bench/deb:deb'
    A, B = hosts
    ca, cb = ctrds
    res = {}
    content = 'root/io.containerd.content.v1.content'
    layers = ct.layer_digests(lay, 'deb')

    log('host A: daxfs pull')
    t1, r = timed(lambda: ct.helper_pull(helper, ca, ref, '-cri'))
    must(r, 'CRI-labelled unpacker pull (daxfs) on A')
    res['pull_a'] = (t1, None)
    res['remote_a'] = len(ct.remote_records(A))
    log('host A: overlayfs pull')
    t, r = timed(lambda: subprocess.run([helper, 'pull', ca.sock, 'overlayfs', ref],
                                        capture_output=True, text=True, timeout=600))
    must(r, 'unpacker pull (overlayfs) on A')
    res['pull_a'] = (res['pull_a'][0], t)

    log('host B: daxfs pull')
    gets0 = len(reg.blob_gets())
    c0 = du(os.path.join(cb.dir, content))
    ct.wait_view(B, len(layers))
    t2, r = timed(lambda: ct.helper_pull(helper, cb, ref, '-cri'))
    must(r, 'CRI-labelled unpacker pull (daxfs) on B')
    res['remote_b'] = len(ct.remote_records(B))
    dax_gets = len(ct.layer_gets(reg, gets0, lay, 'deb'))
    c1 = du(os.path.join(cb.dir, content))
    log('host B: overlayfs pull')
    gets1 = len(reg.blob_gets())
    t, r = timed(lambda: subprocess.run([helper, 'pull', cb.sock, 'overlayfs', ref],
                                        capture_output=True, text=True, timeout=600))
    must(r, 'unpacker pull (overlayfs) on B')
    ovl_gets = len(ct.layer_gets(reg, gets1, lay, 'deb'))
    c2 = du(os.path.join(cb.dir, content))
    res['pull_b'] = (t2, t)
    res['gets_b'] = (dax_gets, ovl_gets)
    res['disk_b'] = (c1 - c0 + du(os.path.join(B.root, 'snapshots')) +
                     du(os.path.join(B.root, 'snapshots.db')),
                     c2 - c1 + du(os.path.join(cb.dir, 'root',
                                               'io.containerd.snapshotter.v1.overlayfs')))

    log('ctr run start times')
    res['start'] = (start_median(ca, ref, 'daxfs'), start_median(ca, ref, 'overlayfs'))

    # Where host B's copy of the files lives: its view's layer
    # directories, or its overlayfs snapshots.
    where_b = {'daxfs': os.path.join(B.mnt, 'l'),
               'overlayfs': os.path.join(cb.dir, 'root', 'io.containerd.snapshotter.v1.overlayfs',
                                         'snapshots')}
    walks, extra = {}, {}
    for snap in ('daxfs', 'overlayfs'):
        log('walks on ' + snap)
        drop_caches()
        walks[snap] = walk(ca, ref, snap, 'walk-a-' + snap)
        extra[snap] = walk_resident(cb, ref, snap, 'walk-b-' + snap, where_b[snap])
    res['walk_bytes'] = (walks['daxfs'][0], walks['overlayfs'][0])
    res['walk_first'] = (walks['daxfs'][1], walks['overlayfs'][1])
    res['walk_warm'] = (walks['daxfs'][2], walks['overlayfs'][2])
    res['cache_b'] = (extra['daxfs'], extra['overlayfs'])
    return res


def image_figures(lay):
    import json
    idx = json.load(open(os.path.join(lay, 'index.json')))
    d = idx['manifests'][0]['digest'].split(':')[1]
    man = json.load(open(os.path.join(lay, 'blobs', 'sha256', d)))
    cfg = json.load(open(os.path.join(lay, 'blobs', 'sha256',
                                      man['config']['digest'].split(':')[1])))
    return len(man['layers']), sum(ly['size'] for ly in man['layers']), cfg


def report(res, lay, desc):
    n, gz, _ = image_figures(lay)
    mib = 1 << 20
    print()
    print('containerd: daxfs snapshotter vs overlayfs snapshotter, one run')
    print('image: %s + app layers: %d layers, %.1f MiB compressed, walk reads %.1f MiB'
          % (desc, n, gz / mib, res['walk_bytes'][0] / mib))
    print('%-34s %12s %12s %10s' % ('', 'daxfs', 'overlayfs', 'dax/ovl'))

    def row(label, pair, unit='s', scale=1.0):
        a, b = pair
        fmt = '%12.3f' if unit == 's' else '%12.1f'
        print('%-34s %s %s %10s' % (label + ' (' + unit + ')', fmt % (a / scale),
                                   fmt % (b / scale), '%.2f' % (a / b) if b else '-'))
    row('pull+unpack, host A', res['pull_a'])
    row('pull, host B', res['pull_b'])
    print('%-34s %12d %12d' % ('layer blobs fetched, host B', *res['gets_b']))
    print('%-34s %12s' % ('remote snapshots A / B (of %d)' % n,
                          '%d / %d' % (res['remote_a'], res['remote_b'])))
    row('ctr run --rm start, median of %d' % RUNS, res['start'])
    row('walk, first (after drop_caches)', res['walk_first'])
    row('walk, warm', res['walk_warm'])
    row('disk added by host B', res['disk_b'], 'MiB', mib)
    row('page cache of host B copy', res['cache_b'], 'MiB', mib)
    if min(res['cache_b']) < res['walk_bytes'][0] / 10:
        print('(page cache below a tenth of what the walk read: the kernel reclaimed it '
              'before fincore saw it; on some machines file pages outside the root disk '
              'last about a second)')
    print('(the region, in /dev/shm, stands for CXL memory: shared, not counted per host)')


def unmount_disk(disk, dev):
    """Unmount the ext4 (the views and shims let go of it within a few
    seconds; lazily after that) and detach its loop device."""
    for _ in range(100):
        if subprocess.run(['umount', disk], capture_output=True).returncode == 0:
            break
        time.sleep(0.1)
    else:
        subprocess.run(['umount', '-l', disk], capture_output=True)
    # A loop device still held by a lazy unmount goes away when released.
    subprocess.run(['losetup', '-d', dev], capture_output=True)


def main():
    if os.getuid() != 0:
        print('containerd.py: needs root', file=sys.stderr)
        return 2
    helper = ct.snaptest()
    os.makedirs(CACHE, exist_ok=True)
    lay, desc = layout()
    img = os.path.join(WORK, 'ext4.img')
    reg, hosts, ctrds, dev = None, [], [], None
    try:
        os.makedirs(DISK)
        subprocess.run(['truncate', '-s', '6G', img], check=True)
        subprocess.run(['mkfs.ext4', '-q', '-F', img], check=True)
        # Direct I/O on the loop device: the image file's pages are not
        # cached a second time in the root file system's page cache.
        dev = subprocess.run(['losetup', '--direct-io=on', '--find', '--show', img],
                             check=True, capture_output=True, text=True).stdout.strip()
        subprocess.run(['mount', dev, DISK], check=True)
        with open(ct.CONFIG, 'w') as f:
            f.write('{}\n')
        reg = fixture.Registry(DISK)
        fixture.push(lay, 'deb', reg, 'bench/deb')
        must(subprocess.run([BUILD + '/daxfsctl', 'mkfs', '--size', '1G', REGION],
                            capture_output=True, text=True), 'mkfs')
        for name in ('host', 'hostb'):
            sock = os.path.join(DISK, name + '-snapshotter.sock')
            h = harness.Daemon(name, REGION, ct.CONFIG, [
                '--snapshotter-address', sock, '--view-binary', BUILD + '/daxfs-view'])
            h.snap_sock = sock
            hosts.append(h)
        ctrds.append(ct.Containerd('ctrd', hosts[0].snap_sock))
        ctrds.append(ct.Containerd('ctrd-b', hosts[1].snap_sock))
        res = measure(reg, lay, helper, hosts, ctrds)
        report(res, lay, desc)
    finally:
        for c in ctrds:
            c.stop()
        for h in hosts:
            h.stop()
            harness.stop_view(h.mnt)
        ct.unmount_all()
        if reg:
            reg.stop()
        if dev:
            unmount_disk(DISK, dev)
        if not os.path.ismount(DISK):
            shutil.rmtree(WORK, ignore_errors=True)
        if os.path.exists(REGION):
            os.unlink(REGION)
    return 0


if __name__ == '__main__':
    sys.exit(main())
