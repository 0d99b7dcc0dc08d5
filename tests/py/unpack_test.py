"""Streaming unpack against reference tars: every kind of entry, three
compressions, digest checks and hostile entries.  Prints PASS:/FAIL: lines."""
import gzip
import hashlib
import io
import os
import subprocess
import sys
import tarfile

sys.path.insert(0, os.path.dirname(__file__))
import fixture  # noqa: E402
import layertar  # noqa: E402

BUILD = os.environ['DAXFS_BUILD']
TMP = os.environ['DAXFS_TMP']
REGION = os.path.join(TMP, 'region')
results = []


def run(*args, check=False):
    p = subprocess.run([str(a) for a in args], capture_output=True, text=True)
    if check and p.returncode != 0:
        raise RuntimeError('%s failed: %s %s' % (args[0], p.stdout, p.stderr))
    return p


def case(name, ok, detail=''):
    results.append(ok)
    print('%s: unpack/%s%s' % ('PASS' if ok else 'FAIL', name, '' if ok else ': ' + detail))
    sys.stdout.flush()


def add(tf, name, kind='f', data=b'', mode=0o644, **kw):
    fixture.tar_add(tf, name, kind, data if kind == 'f' else kw.get('link', ''), mode, kw)


def make_tar(build):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode='w', format=tarfile.PAX_FORMAT) as tf:
        build(tf)
    return buf.getvalue()


def rich(tf):
    big = bytes((i * 131 + i // 4096) & 0xff for i in range(5 << 20))
    add(tf, './', 'd', mode=0o755)
    add(tf, 'etc', 'd', mode=0o755, uid=0, gid=0, mtime=1600000000)
    add(tf, 'etc/passwd', data=b'root:x:0:0\n', uid=0, gid=0)
    add(tf, 'etc/passwd', data=b'root:x:0:0:root:/root:/bin/sh\n')  # replaces
    add(tf, 'usr/bin/su', data=b'#!/bin/true\n', mode=0o4755, uid=0, gid=0)
    add(tf, 'usr/bin/sg', data=b'#!/bin/true\n', mode=0o2755, gid=42)
    add(tf, 'tmp', 'd', mode=0o1777)
    add(tf, 'usr/bin/ping', data=b'ping' * 100, mode=0o755,
        pax={'SCHILY.xattr.security.capability': '\x01\x00\x00\x02\x00\x20\x00\x00',
             'SCHILY.xattr.user.note': 'hello',
             'SCHILY.xattr.trusted.overlay.opaque': 'y',
             'mtime': '1700000000.123456789'})
    add(tf, 'usr/bin/ping6', 'h', link='usr/bin/ping')
    add(tf, 'usr/lib/libc.so', 'l', link='libc.so.6')
    add(tf, 'usr/lib/abs', 'l', link='/etc/passwd')
    add(tf, 'dev/null', 'c', mode=0o666, dev=(1, 3))
    add(tf, 'dev/sda', 'b', mode=0o660, dev=(8, 0), gid=6)
    add(tf, 'run/fifo', 'p', mode=0o600)
    add(tf, 'data/big.bin', data=big, uid=1000, gid=1000)
    add(tf, 'data/copy.bin', data=big)   # same content: stored once
    add(tf, 'data/empty', data=b'')
    add(tf, 'gone/.wh.old', data=b'')
    add(tf, 'var/cache/.wh..wh..opq', data=b'')
    add(tf, 'var/cache/keep', data=b'k')
    add(tf, 'deep/a/b/c/d/file', data=b'implicit parents')
    add(tf, 'link2dir', 'l', link='deep/a')
    add(tf, 'link2dir/b/through', data=b'written through an inside symlink')


def hexsha(b):
    return hashlib.sha256(b).hexdigest()


def compress(raw, how):
    if how == 'gzip':
        return gzip.compress(raw, mtime=0), 'application/vnd.oci.image.layer.v1.tar+gzip'
    if how == 'zstd':
        p = subprocess.run(['zstd', '-q', '-c'], input=raw, capture_output=True, check=True)
        return p.stdout, 'application/vnd.oci.image.layer.v1.tar+zstd'
    return raw, 'application/vnd.oci.image.layer.v1.tar'


def unpack(blob, media, diff, digest=None, host=1):
    path = os.path.join(TMP, 'blob')
    with open(path, 'wb') as f:
        f.write(blob)
    args = [BUILD + '/tests/helper_unpack', REGION, host, path, media, diff]
    if digest:
        args.append(digest)
    return run(*args)


def dump(diff):
    return run(BUILD + '/tests/helper_dump', REGION, 1, diff)


def fsck_clean():
    p = run(BUILD + '/daxfsctl', 'fsck', REGION)
    return p.returncode == 0, p.stdout + p.stderr


def main():
    run(BUILD + '/daxfsctl', 'mkfs', '--size', '128M', REGION, check=True)
    raw = make_tar(rich)
    tarpath = os.path.join(TMP, 'rich.tar')
    with open(tarpath, 'wb') as f:
        f.write(raw)
    want = layertar.expected_tree(tarpath)
    for how in ('none', 'gzip', 'zstd'):
        # A distinct layer per compression: append a marker file.
        def build(tf, how=how):
            rich(tf)
            add(tf, 'compression', data=how.encode())
        raw_h = make_tar(build)
        p = os.path.join(TMP, 'l.tar')
        with open(p, 'wb') as f:
            f.write(raw_h)
        want_h = layertar.expected_tree(p)
        blob, media = compress(raw_h, how)
        r = unpack(blob, media, hexsha(raw_h), hexsha(blob))
        if r.returncode != 0:
            case('tree_' + how, False, r.stdout + r.stderr)
            continue
        d = dump(hexsha(raw_h))
        diffs = layertar.compare(want_h, layertar.parse_dump(d.stdout))
        case('tree_' + how, not diffs and len(want_h) > 20, '; '.join(diffs[:5]))
    ok, out = fsck_clean()
    case('fsck_after_unpack', ok, out)

    # Digest and stream faults: nothing READY, region clean.
    def minimal(tf):
        add(tf, 'f', data=b'payload')
    raw_m = make_tar(minimal)
    blob, media = compress(raw_m, 'gzip')
    faults = [
        ('wrong_diff_id', blob, media, hexsha(b'other'), hexsha(blob), 'diff_id mismatch'),
        ('wrong_digest', blob, media, hexsha(raw_m), hexsha(b'x'), 'blob digest mismatch'),
        ('truncated_blob', blob[:len(blob) // 2], media, hexsha(raw_m), None, 'error'),
        ('wrong_compression', blob, 'application/vnd.oci.image.layer.v1.tar+zstd',
         hexsha(raw_m), None, 'compressed with gzip'),
        ('not_a_tar', gzip.compress(b'x' * 3000), media, hexsha(b'x' * 3000), None, 'error'),
    ]
    for name, b, m, diff, dig, msg in faults:
        r = unpack(b, m, diff, dig)
        d = dump(diff)
        ok = r.returncode != 0 and msg in r.stdout and 'not in the region' in d.stdout
        case(name, ok, r.stdout + r.stderr + d.stdout)
    # The same layer can still be unpacked after a failed attempt.
    r = unpack(blob, media, hexsha(raw_m), hexsha(blob))
    case('retry_after_fault', r.returncode == 0, r.stdout + r.stderr)

    hostile = {
        'dotdot': lambda tf: add(tf, '../outside', data=b'x'),
        'dotdot_deep': lambda tf: add(tf, 'a/../../outside', data=b'x'),
        'hardlink_out': lambda tf: add(tf, 'h', 'h', link='../../etc/shadow'),
        'symlink_out': lambda tf: (add(tf, 'evil', 'l', link='../../..'),
                                   add(tf, 'evil/x', data=b'x')),
        'hardlink_missing': lambda tf: add(tf, 'h', 'h', link='nothere'),
    }
    for name, build in hostile.items():
        raw_x = make_tar(build)
        r = unpack(raw_x, 'application/vnd.oci.image.layer.v1.tar', hexsha(raw_x))
        d = dump(hexsha(raw_x))
        ok = (r.returncode != 0 and 'entry' in r.stdout or 'hardlink' in r.stdout) and \
            'not in the region' in d.stdout
        case('hostile_' + name, ok and r.returncode != 0, r.stdout + r.stderr)
    ok, out = fsck_clean()
    case('fsck_after_faults', ok, out)
    return 0 if all(results) else 1


if __name__ == '__main__':
    sys.exit(main())
