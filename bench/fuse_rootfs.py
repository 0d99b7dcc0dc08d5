"""The Debian-sized tree for bench/fuse.sh: a debootstrap --variant=minbase
bookworm rootfs, made once and cached as a tar under CACHE, keyed by the
content hash of this file.  Where debootstrap is missing or fails, a
generated tree of the same shape (about 5,200 files, 116 MiB, a
size distribution like a minbase rootfs) stands in, and the caller says
so.

rootfs_tar() returns (path of the tar, description)."""
import glob
import hashlib
import io
import os
import random
import shutil
import subprocess
import tarfile
import time

CACHE = os.environ.get('DAXFS_BENCH_CACHE', '/var/tmp/daxfs-bench')
SUITE = 'bookworm'
DEFAULT_MIRROR = 'http://deb.debian.org/debian'
DEBOOTSTRAP_DESC = 'Debian %s minbase (debootstrap)' % SUITE


def key():
    with open(__file__, 'rb') as f:
        return hashlib.sha256(f.read()).hexdigest()[:16]


def mirror():
    """The bookworm mirror apt uses here (deb822 .sources or a .list)."""
    for path in sorted(glob.glob('/etc/apt/sources.list.d/*.sources')):
        with open(path, errors='replace') as f:
            for stanza in f.read().split('\n\n'):
                fields = {}
                for line in stanza.splitlines():
                    if ':' in line and not line.startswith(('#', ' ')):
                        k, v = line.split(':', 1)
                        fields[k.strip().lower()] = v.split()
                if SUITE in fields.get('suites', []) and fields.get('uris'):
                    return fields['uris'][0]
    for path in ['/etc/apt/sources.list'] + sorted(glob.glob('/etc/apt/sources.list.d/*.list')):
        try:
            lines = open(path, errors='replace').read().splitlines()
        except OSError:
            continue
        for line in lines:
            w = line.split('#', 1)[0].split()
            if len(w) >= 3 and w[0] == 'deb':
                i = 1
                while i < len(w) and w[i].startswith('['):
                    while i < len(w) and not w[i].endswith(']'):
                        i += 1
                    i += 1
                if i + 1 < len(w) and w[i + 1] == SUITE:
                    return w[i]
    return DEFAULT_MIRROR


def umount_below(path):
    """Unmount everything mounted at or below path, deepest first."""
    real = os.path.realpath(path)
    with open('/proc/self/mountinfo') as f:
        points = [line.split()[4].replace('\\040', ' ') for line in f]
    for p in sorted((p for p in points if p == real or p.startswith(real + '/')),
                    key=len, reverse=True):
        subprocess.run(['umount', '-l', p], capture_output=True)


def tar_dir(src, dst):
    """A PAX tar of src's contents (names relative to src, hard links
    kept, sockets left out)."""
    with tarfile.open(dst, 'w', format=tarfile.PAX_FORMAT) as tf:
        for d, dirs, files in os.walk(src):
            dirs.sort()
            for n in sorted(dirs) + sorted(files):
                p = os.path.join(d, n)
                ti = tf.gettarinfo(p, arcname=os.path.relpath(p, src))
                if ti is None:	# a socket
                    continue
                if ti.isreg():
                    with open(p, 'rb') as f:
                        tf.addfile(ti, f)
                else:
                    tf.addfile(ti)


def debootstrap(dst, log):
    if not shutil.which('debootstrap'):
        log('debootstrap is not installed (apt-get install debootstrap)')
        return False
    tmp = os.path.join(os.environ.get('DAXFS_BENCH_TMP', '/dev/shm'),
                       'daxfs-bench-debootstrap.%d' % os.getpid())
    url = mirror()
    t0 = time.monotonic()
    log('debootstrap --variant=minbase %s from %s (once; cached under %s)' % (SUITE, url, CACHE))
    try:
        os.makedirs(tmp)
        r = subprocess.run(['debootstrap', '--variant=minbase', SUITE, tmp, url],
                           capture_output=True, text=True, timeout=900)
        umount_below(tmp)
        if r.returncode != 0:
            log('debootstrap failed (%d): %s' % (r.returncode, (r.stderr or r.stdout)[-800:]))
            return False
        # Per-run leftovers that no image carries.
        for p in ('var/cache/apt/archives', 'var/lib/apt/lists', 'debootstrap'):
            full = os.path.join(tmp, p)
            if os.path.isdir(full):
                for n in os.listdir(full):
                    q = os.path.join(full, n)
                    if os.path.isdir(q) and not os.path.islink(q):
                        if n != 'partial':
                            shutil.rmtree(q)
                    elif n != 'lock':
                        os.unlink(q)
        tar_dir(tmp, dst)
        log('debootstrap done in %.0f s' % (time.monotonic() - t0))
        return True
    except (OSError, subprocess.SubprocessError) as e:
        log('debootstrap failed: %s' % e)
        return False
    finally:
        umount_below(tmp)
        shutil.rmtree(tmp, ignore_errors=True)


def generated(dst):
    """A tree shaped like a minbase rootfs: ~600 directories, ~5,200
    entries (regular files, symlinks, a few hard links), sizes log-normal
    around 3 KiB with a tail of multi-MiB libraries, ~116 MiB in all."""
    rnd = random.Random(20240601)
    tops = ['etc', 'usr/bin', 'usr/sbin', 'usr/lib/x86_64-linux-gnu', 'usr/share/doc',
            'usr/share/locale', 'usr/share/perl5', 'usr/lib/python3', 'var/lib/dpkg/info',
            'usr/share/zoneinfo', 'usr/include', 'usr/share/man']
    dirs = []
    for t in tops:
        dirs.append(t)
        for i in range(rnd.randint(20, 80)):
            dirs.append('%s/d%03d' % (t, i))
    total, budget, files = 0, 116 << 20, []
    for i in range(5200):
        size = min(int(rnd.lognormvariate(8.0, 1.6)), 8 << 20)
        files.append(('%s/f%05d' % (rnd.choice(dirs), i), size))
        total += size
    # Scale to the budget with a handful of big libraries.
    while total < budget:
        size = min(budget - total, rnd.randint(1 << 20, 6 << 20))
        files.append(('usr/lib/x86_64-linux-gnu/lib%03d.so' % len(files), size))
        total += size
    with tarfile.open(dst, 'w', format=tarfile.PAX_FORMAT) as tf:
        seen = set()
        for d in sorted(dirs):
            parts = d.split('/')
            for k in range(1, len(parts) + 1):
                p = '/'.join(parts[:k])
                if p not in seen:
                    seen.add(p)
                    ti = tarfile.TarInfo(p)
                    ti.type, ti.mode, ti.mtime = tarfile.DIRTYPE, 0o755, 1700000000
                    tf.addfile(ti)
        for name, size in files:
            ti = tarfile.TarInfo(name)
            ti.size, ti.mode, ti.mtime = size, 0o644, 1700000000
            tf.addfile(ti, io.BytesIO(rnd.randbytes(size)))
        for i, (name, _) in enumerate(files[:400]):
            ti = tarfile.TarInfo('usr/bin/link%03d' % i)
            ti.type, ti.linkname, ti.mode = tarfile.SYMTYPE, '/' + name, 0o777
            tf.addfile(ti)
        for i, (name, _) in enumerate(files[400:420]):
            ti = tarfile.TarInfo('usr/sbin/hard%03d' % i)
            ti.type, ti.linkname, ti.mode = tarfile.LNKTYPE, name, 0o644
            tf.addfile(ti)


def rootfs_tar(log=print):
    os.makedirs(CACHE, exist_ok=True)
    k = key()
    want = os.path.join(CACHE, 'rootfs-%s.tar' % k)
    if os.path.exists(want):
        return want, DEBOOTSTRAP_DESC
    gen = os.path.join(CACHE, 'rootfs-%s-generated.tar' % k)
    tmp = want + '.tmp%d' % os.getpid()
    try:
        if debootstrap(tmp, log):
            os.rename(tmp, want)
            for old in glob.glob(os.path.join(CACHE, 'rootfs-*.tar')):
                if old != want:
                    os.unlink(old)
            return want, DEBOOTSTRAP_DESC
        if not os.path.exists(gen):
            generated(tmp)
            os.rename(tmp, gen)
            for old in glob.glob(os.path.join(CACHE, 'rootfs-*-generated.tar')):
                if old != gen:
                    os.unlink(old)
        return gen, 'GENERATED tree (debootstrap not possible here), shaped like Debian minbase'
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
