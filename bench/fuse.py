"""Reading through the daxfs FUSE view vs overlayfs on tmpfs and on ext4
(make bench-fuse; see bench/fuse.sh).

One image of two layers, a Debian minbase rootfs (bench/fuse_rootfs.py)
under a layer holding one 256 MiB file, is pushed to a private
docker-registry, pulled by a private daxfsd into a region in /dev/shm and
mounted with "daxfsctl mount" (an overlay of the view's two layer
directories).  The same two layer tars, extracted onto a fresh tmpfs and
onto a fresh ext4 in a loop image on the root disk, are mounted as the
same read-only overlay.  bench_read (bench/bench_read.c) then reads all
three: a sequential read of the big file, random 4 KiB reads of it, and a
walk of the whole tree (lstat every entry, then read every file), each
first-read (after dropping the page, dentry and inode caches) and warm.
The region and tmpfs stay in RAM across the drop; ext4 reads its disk.

Environment: DAXFS_BENCH_REPS (default 3), DAXFS_BENCH_RAND (random
reads, default 20000), DAXFS_BENCH_CACHE (default /var/tmp/daxfs-bench),
DAXFS_BENCH_JSON (a file to write every round's times to),
DAXFS_BENCH_HOOK (a shell command run once the mounts are up, before
measuring, with DAXFS_BENCH_VIEW, _OVL_TMPFS, _OVL_EXT4, _VIEW_PID and
_BUILD in its environment: for profiling).
Everything mounted, started or created is undone on the way out, also
after an error or a signal."""
import contextlib
import glob
import hashlib
import inspect
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, '..', 'tests', 'py'))
import fixture  # noqa: E402
import fuse_rootfs  # noqa: E402

BIG_MIB = 256
REPS = int(os.environ.get('DAXFS_BENCH_REPS', '3'))
NRAND = int(os.environ.get('DAXFS_BENCH_RAND', '20000'))
CACHE = fuse_rootfs.CACHE
IMAGE = 'bench/fuse:1'
OVL_OPTS = 'index=off,redirect_dir=off,metacopy=off'	# as daxfsctl mount
TARGETS = ('view', 'ovl-tmpfs', 'ovl-ext4')


class Stop(Exception):
    pass


def on_signal(signum, frame):
    raise Stop('signal %d' % signum)


def log(msg):
    print('  ' + msg, flush=True)


def run(cmd, **kw):
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if r.returncode != 0:
        raise RuntimeError('%s: exit %d: %s' % (' '.join(cmd), r.returncode,
                                                (r.stderr or r.stdout).strip()[-1500:]))
    return r.stdout


def quiet(cmd):
    subprocess.run(cmd, capture_output=True)


# ---- the image ----

def make_layout(path, rootfs_tar):
    """Two uncompressed layers: the rootfs, then bench/big."""
    lay = fixture.Layout(path)
    with open(rootfs_tar, 'rb') as f:
        rootfs = f.read()
    rnd = random.Random(4242)
    big = b''.join(rnd.randbytes(1 << 20) for _ in range(BIG_MIB))
    top = fixture.tar_bytes([('bench', 'd', None, 0o755, {}),
                             ('bench/big', 'f', big, 0o644, {})])
    _, info = lay.image('1', [(rootfs, 'none'), (top, 'none')])
    with open(os.path.join(path, 'bench.json'), 'w') as f:
        json.dump({'layers': [dg.split(':')[1] for dg, _, _ in info]}, f)


def layout(rootfs_tar):
    src = (os.path.basename(rootfs_tar) + str(BIG_MIB) + inspect.getsource(make_layout) +
           inspect.getsource(fixture.Layout) + inspect.getsource(fixture.tar_bytes))
    path = os.path.join(CACHE, 'layout-' + hashlib.sha256(src.encode()).hexdigest()[:16])
    if not os.path.exists(os.path.join(path, 'bench.json')):
        log('building the OCI layout (cached as %s)' % path)
        for old in glob.glob(os.path.join(CACHE, 'layout-*')):
            shutil.rmtree(old, ignore_errors=True)
        tmp = path + '.tmp%d' % os.getpid()
        try:
            make_layout(tmp, rootfs_tar)
            os.rename(tmp, path)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    with open(os.path.join(path, 'bench.json')) as f:
        blobs = json.load(f)['layers']
    return path, [os.path.join(path, 'blobs', 'sha256', b) for b in blobs]


# ---- daxfsd and its view ----

def view_pids(mnt):
    out = []
    for pid in os.listdir('/proc'):
        if not pid.isdigit():
            continue
        try:
            cmd = open('/proc/%s/cmdline' % pid, 'rb').read().split(b'\0')
        except OSError:
            continue
        if cmd and cmd[0].endswith(b'daxfs-view') and mnt.encode() in cmd:
            out.append(int(pid))
    return out


def is_mounted(path):
    real = os.path.realpath(path)
    with open('/proc/self/mountinfo') as f:
        return any(line.split()[4] == real for line in f)


def umount(path):
    for _ in range(50):
        if not is_mounted(path):
            return
        if subprocess.run(['umount', path], capture_output=True).returncode != 0:
            time.sleep(0.1)
    quiet(['umount', '-l', path])


class Daxfsd:
    def __init__(self, build, work, region):
        self.build = build
        self.root = os.path.join(work, 'host')
        self.mnt = os.path.join(self.root, 'mnt')
        self.sock = os.path.join(work, 'daxfsd.sock')
        cfg = os.path.join(work, 'daxfsd.json')
        with open(cfg, 'w') as f:
            f.write('{}\n')
        self.logf = open(os.path.join(work, 'daxfsd.log'), 'w')
        self.proc = subprocess.Popen(
            [build + '/daxfsd', '--config', cfg, '--region', region, '--root', self.root,
             '--address', self.sock, '--snapshotter-address', os.path.join(work, 'snap.sock'),
             '--host-name', 'bench', '--view-binary', build + '/daxfs-view'],
            stdout=self.logf, stderr=subprocess.STDOUT)

    def wait_ready(self):
        for _ in range(400):
            if os.path.exists(self.sock) and self.ctl('hosts', check=False).returncode == 0:
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError('daxfsd did not start: ' + open(self.logf.name).read()[-1500:])

    def ctl(self, cmd, *args, check=True):
        r = subprocess.run([self.build + '/daxfsctl', cmd, '--address', self.sock] + list(args),
                           capture_output=True, text=True, timeout=300)
        if check and r.returncode != 0:
            raise RuntimeError('daxfsctl %s: %s' % (cmd, r.stderr.strip()))
        return r

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        # The view outlives daxfsd by design: unmount it, and it exits.
        umount(self.mnt)
        for _ in range(100):
            if not view_pids(self.mnt):
                break
            time.sleep(0.05)
        for pid in view_pids(self.mnt):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        self.logf.close()


def detach_loops(img):
    for line in run(['losetup', '-j', img]).splitlines():
        quiet(['losetup', '-d', line.split(':', 1)[0]])


# ---- the comparison trees ----

def extract(blobs, parent):
    """Each layer tar into parent/N (bottom first); returns the lowerdir
    list, top first."""
    dirs = []
    for i, blob in enumerate(blobs):
        d = os.path.join(parent, str(i))
        os.makedirs(d)
        run(['tar', '--numeric-owner', '-xpf', blob, '-C', d])
        dirs.append(d)
    return ':'.join(reversed(dirs))


def overlay(lower, target):
    run(['mount', '-t', 'overlay', 'overlay', '-o',
         'ro,nosuid,nodev,lowerdir=%s,%s' % (lower, OVL_OPTS), target])


def tree(root):
    """{path: (type, mode, uid, gid, size, sha1 or link target)}"""
    out = {}
    for d, dirs, files in os.walk(root):
        for n in dirs + files:
            p = os.path.join(d, n)
            st = os.lstat(p)
            fmt = st.st_mode & 0o170000
            data = ''
            if fmt == 0o100000:
                h = hashlib.sha1()
                with open(p, 'rb') as f:
                    for chunk in iter(lambda: f.read(1 << 20), b''):
                        h.update(chunk)
                data = h.hexdigest()
            elif fmt == 0o120000:
                data = os.readlink(p)
            out[os.path.relpath(p, root)] = (fmt, st.st_mode & 0o7777, st.st_uid, st.st_gid,
                                            st.st_size if fmt == 0o100000 else 0, data)
    return out


# ---- measuring ----

def bench_read(build, args):
    out = run([build + '/bench/bench_read'] + args, timeout=600)
    res = {}
    for line in out.splitlines():
        w = line.split()
        kv = dict(x.split('=', 1) for x in w[1:])
        res[w[0]] = (float(kv['seconds']), int(kv['count']), int(kv['bytes']))
    return res


def measure(build, mounts):
    """{(target, metric, 'first'|'warm'): [seconds per rep]}"""
    times, counts = {}, {}
    for rep in range(REPS):
        order = TARGETS[rep % 3:] + TARGETS[:rep % 3]
        t0 = time.monotonic()
        for t in order:
            m = mounts[t]
            big = os.path.join(m, 'bench', 'big')
            for args in (['seq', big], ['rand', big, str(NRAND)], ['walk', m, 'bench']):
                for mode in ('first', 'warm'):
                    res = bench_read(build, (['-d'] if mode == 'first' else []) + args)
                    if 'stat' in res:
                        res['tree'] = (res['stat'][0] + res['read'][0], 0, 0)
                    for metric, (sec, cnt, nbytes) in res.items():
                        times.setdefault((t, metric, mode), []).append(sec)
                        counts.setdefault(metric, set()).add((cnt, nbytes))
        log('round %d/%d: %.1f s' % (rep + 1, REPS, time.monotonic() - t0))
    for metric, c in counts.items():
        if len(c) != 1:
            raise RuntimeError('%s read different amounts on the three mounts: %s' % (metric, c))
    return times, {k: next(iter(v)) for k, v in counts.items()}


def report(times, counts, desc):
    rows = [('seq', 'sequential read %d MiB' % BIG_MIB),
            ('rand', 'random 4 KiB reads x%d' % NRAND),
            ('stat', 'tree walk: lstat %d entries' % counts['stat'][0]),
            ('read', 'tree walk: read %d files' % counts['read'][0]),
            ('tree', 'tree walk: lstat + read')]
    med = {k: statistics.median(v) for k, v in times.items()}
    print()
    print('reading through the daxfs view vs overlayfs on tmpfs and on ext4 (loop image)')
    print('tree: %s, %d entries, %d files, %.1f MiB; median of %d rounds, times in ms'
          % (desc, counts['stat'][0], counts['read'][0], counts['read'][1] / 1048576.0, REPS))
    print('ratio = view time / other time (1.00 = as fast; above 1 the view is slower)')
    print()
    hdr = '%-33s %-6s %9s %9s %9s %11s %10s  %s' % (
        'workload', 'cache', 'view', 'ovl-tmpfs', 'ovl-ext4', 'view/tmpfs', 'view/ext4',
        'target (view/tmpfs)')
    print(hdr)
    print('-' * len(hdr))
    verdicts = []
    for mode in ('first', 'warm'):
        for metric, name in rows:
            v, tm, ex = (med[(t, metric, mode)] for t in TARGETS)
            r_t, r_e = v / tm, v / ex
            limit = 1.5 if mode == 'first' else 1.10
            ok = r_t <= limit
            verdicts.append((metric, mode, ok))
            print('%-33s %-6s %9.1f %9.1f %9.1f %11.2f %10.2f  <= %.2f %s' % (
                name, mode, v * 1e3, tm * 1e3, ex * 1e3, r_t, r_e, limit,
                'met' if ok else 'NOT MET'))
        print()
    spread = max((max(v) - min(v)) / statistics.median(v) for v in times.values()
                 if statistics.median(v) > 0)
    print('largest spread between rounds (max-min)/median: %.0f%%' % (spread * 100))
    first = all(ok for m, mode, ok in verdicts if mode == 'first')
    warm = all(ok for m, mode, ok in verdicts if mode == 'warm')
    print('summary: first read within 1.5x of overlay-on-tmpfs: %s; warm within 10%%: %s'
          % ('met' if first else 'NOT MET', 'met' if warm else 'NOT MET'))
    if 'GENERATED' in desc:
        print('NOTE: the tree is generated, not a Debian rootfs (debootstrap not possible here)')


def remove(path):
    """rm -rf path, never into something still mounted below it."""
    fuse_rootfs.umount_below(path)
    shutil.rmtree(path, ignore_errors=True)


def need_space(path, mib):
    st = os.statvfs(path)
    if st.f_bavail * st.f_frsize < mib << 20:
        raise RuntimeError('%s has less than %d MiB free' % (path, mib))


def main():
    if len(sys.argv) != 2:
        print('usage: fuse.py BUILD_DIR', file=sys.stderr)
        return 2
    build = os.path.abspath(sys.argv[1])
    for b in ('daxfsd', 'daxfs-view', 'daxfsctl', 'bench/bench_read'):
        if not os.access(os.path.join(build, b), os.X_OK):
            print('fuse.py: %s/%s not found (make bench-fuse builds it)' % (build, b),
                  file=sys.stderr)
            return 2
    if os.geteuid() != 0:
        print('fuse.py: needs root (mounts, loop devices, drop_caches)', file=sys.stderr)
        return 2
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)
    start = time.monotonic()
    print('daxfs FUSE view read benchmark: %d CPUs, kernel %s' % (os.cpu_count(),
                                                                  os.uname().release))
    with contextlib.ExitStack() as undo:
        try:
            return run_all(build, undo, start)
        finally:
            # Undo everything even if another signal comes.
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                signal.signal(sig, signal.SIG_IGN)


def run_all(build, undo, start):
    def later(fn, *a):
        def safe():
            try:
                fn(*a)
            except Exception as e:	# keep undoing the rest
                print('cleanup: %s' % e, file=sys.stderr)
        undo.callback(safe)

    need_space('/dev/shm', 2600)
    need_space('/var/tmp', 1100)
    rootfs, desc = fuse_rootfs.rootfs_tar(log)
    log('tree: %s (%s)' % (desc, rootfs))
    lay, blobs = layout(rootfs)
    shm = tempfile.mkdtemp(dir='/dev/shm', prefix='daxfs-fuse-bench.')
    later(remove, shm)
    disk = tempfile.mkdtemp(dir='/var/tmp', prefix='daxfs-fuse-bench.')
    later(remove, disk)

    t0 = time.monotonic()
    reg = fixture.Registry(shm)
    later(reg.stop)
    fixture.push(lay, '1', reg, IMAGE.split(':')[0])
    region = os.path.join(shm, 'region')
    run([build + '/daxfsctl', 'mkfs', '--size', '1G', region])
    d = Daxfsd(build, shm, region)
    later(d.stop)
    d.wait_ready()
    ref = reg.addr + '/' + IMAGE
    d.ctl('pull', ref)
    mounts = {t: os.path.join(shm, 'm-' + t) for t in TARGETS}
    for m in mounts.values():
        os.makedirs(m)
    later(umount, mounts['view'])
    d.ctl('mount', ref, mounts['view'])
    log('registry, push, daxfsd pull and mount: %.1f s' % (time.monotonic() - t0))

    t0 = time.monotonic()
    tmpfs = os.path.join(shm, 'tmpfs')
    os.makedirs(tmpfs)
    later(umount, tmpfs)
    run(['mount', '-t', 'tmpfs', '-o', 'size=1G', 'daxfs-bench', tmpfs])
    later(umount, mounts['ovl-tmpfs'])
    overlay(extract(blobs, tmpfs), mounts['ovl-tmpfs'])

    img, ext4 = os.path.join(disk, 'ext4.img'), os.path.join(shm, 'ext4')
    run(['truncate', '-s', '1G', img])
    run(['mkfs.ext4', '-q', '-F', img])
    dio = 'on'
    later(detach_loops, img)
    try:
        loop = run(['losetup', '--find', '--show', '--direct-io=on', img]).strip()
    except RuntimeError:
        dio = 'off'
        loop = run(['losetup', '--find', '--show', img]).strip()
    os.makedirs(ext4)
    later(umount, ext4)
    run(['mount', loop, ext4])
    later(umount, mounts['ovl-ext4'])
    overlay(extract(blobs, ext4), mounts['ovl-ext4'])
    run(['sync', '-f', ext4])
    log('comparison trees on tmpfs and on ext4 (%s, direct-io %s): %.1f s'
        % (loop, dio, time.monotonic() - t0))

    t0 = time.monotonic()
    want = tree(mounts['view'])
    for t in TARGETS[1:]:
        got = tree(mounts[t])
        if got != want:
            diff = [p for p in sorted(set(want) | set(got)) if want.get(p) != got.get(p)]
            raise RuntimeError('%s differs from the view: %s' % (t, diff[:5]))
    log('the three mounts hold the same %d entries: %.1f s'
        % (len(want), time.monotonic() - t0))

    hook = os.environ.get('DAXFS_BENCH_HOOK')
    if hook:
        env = dict(os.environ, DAXFS_BENCH_BUILD=build,
                   DAXFS_BENCH_VIEW_PID=' '.join(map(str, view_pids(d.mnt))),
                   **{'DAXFS_BENCH_' + t.upper().replace('-', '_'): m
                      for t, m in mounts.items()})
        log('running DAXFS_BENCH_HOOK')
        subprocess.run(['bash', '-c', hook], env=env)
    times, counts = measure(build, mounts)
    if os.environ.get('DAXFS_BENCH_JSON'):
        with open(os.environ['DAXFS_BENCH_JSON'], 'w') as f:
            json.dump({' '.join(k): v for k, v in times.items()}, f, indent=1)
    report(times, counts, desc)
    print('total time %.0f s (before cleanup)' % (time.monotonic() - start))
    return 0


if __name__ == '__main__':
    try:
        sys.exit(main())
    except Stop as e:
        print('fuse.py: stopped by %s, cleaned up' % e, file=sys.stderr)
        sys.exit(130)
    except (RuntimeError, OSError, subprocess.SubprocessError) as e:
        print('fuse.py: %s' % e, file=sys.stderr)
        sys.exit(1)
