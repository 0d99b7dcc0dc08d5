"""Reference model of an OCI layer tar, read with Python's tarfile.

expected_tree() applies the rules a layer tree follows (later entries
replace earlier ones, hardlinks share an inode, parents appear implicitly,
OCI whiteouts become flags, trusted.overlay.* xattrs are dropped) and
returns {path: entry} in the format helper_dump prints."""
import hashlib
import stat
import tarfile

TYPES = {tarfile.REGTYPE: 'f', tarfile.AREGTYPE: 'f', tarfile.DIRTYPE: 'd',
         tarfile.SYMTYPE: 'l', tarfile.CHRTYPE: 'c', tarfile.BLKTYPE: 'b',
         tarfile.FIFOTYPE: 'p', tarfile.CONTTYPE: 'f'}


def norm(path):
    parts = []
    for p in path.split('/'):
        if p in ('', '.'):
            continue
        if p == '..':
            if not parts:
                raise ValueError('escapes root: ' + path)
            parts.pop()
            continue
        parts.append(p)
    return '/'.join(parts)


def mtime_of(ti):
    m = ti.pax_headers.get('mtime')
    if m is not None:
        if '.' in m:
            sec, frac = m.split('.')
            return '%d.%09d' % (int(sec), int((frac + '000000000')[:9]))
        return '%d.%09d' % (int(m), 0)
    return '%d.%09d' % (int(ti.mtime), 0)


def xattrs_of(ti):
    out = []
    for k, v in ti.pax_headers.items():
        if k.startswith('SCHILY.xattr.'):
            name = k[len('SCHILY.xattr.'):]
            if name.startswith('trusted.overlay.'):
                continue
            out.append((name, v.encode('utf-8', 'surrogateescape').hex()))
    return ''.join('%s=%s;' % kv for kv in sorted(out))


def expected_tree(tarpath):
    """{path: [type, mode, uid, gid, mtime, size, sha/link, inode-key,
    rdev, flags, xattrs]} with inode-key shared by hardlinks."""
    tree = {'.': None}
    inode_of = {}
    nodes = {}
    counter = [0]

    def new_node(vals):
        counter[0] += 1
        nodes[counter[0]] = vals
        return counter[0]

    def resolve(path, hops=0):
        """Follow symlinks met in the parent directories of path, staying
        inside the root (as containerd does); returns the real path."""
        parts = path.split('/')
        cur = []
        for i, p in enumerate(parts[:-1]):
            cand = '/'.join(cur + [p])
            n = nodes.get(inode_of.get(cand))
            if n and n[0] == 'l':
                target = bytes.fromhex(n[6]).decode('utf-8', 'surrogateescape')
                base = '' if target.startswith('/') else '/'.join(cur)
                joined = norm(base + '/' + target)
                return resolve('/'.join([joined] + parts[i + 1:]).lstrip('/'), hops + 1)
            cur.append(p)
        return path

    def ensure_parents(path):
        parts = path.split('/')[:-1]
        for i in range(1, len(parts) + 1):
            d = '/'.join(parts[:i])
            if d not in inode_of:
                inode_of[d] = new_node(['d', 0o755, 0, 0, None, 0, '', '0:0', 0, ''])

    with tarfile.open(tarpath) as tf:
        for ti in tf:
            name = ti.name
            base = name.rsplit('/', 1)[-1]
            flags = 0
            if base == '.wh..wh..opq':
                d = norm(name.rsplit('/', 1)[0] if '/' in name else '')
                if d == '':
                    continue
                ensure_parents(d + '/x')
                if d not in inode_of:
                    inode_of[d] = new_node(['d', 0o755, 0, 0, None, 0, '', '0:0', 0, ''])
                nodes[inode_of[d]][8] |= 2
                continue
            if base.startswith('.wh.'):
                path = norm(name[:len(name) - len(base)] + base[4:])
                ensure_parents(path)
                inode_of[path] = new_node(['c', 0, ti.uid, ti.gid, mtime_of(ti), 0, '',
                                           '0:0', 1, xattrs_of(ti)])
                continue
            path = norm(name)
            if path == '':
                continue
            path = resolve(path)
            ensure_parents(path)
            if ti.islnk():
                inode_of[path] = inode_of[norm(ti.linkname)]
                continue
            t = TYPES[ti.type]
            if t == 'd' and path in inode_of and nodes[inode_of[path]][0] == 'd':
                n = nodes[inode_of[path]]
                n[1:5] = [ti.mode & 0o7777, ti.uid, ti.gid, mtime_of(ti)]
                n[9] = xattrs_of(ti)
                continue
            data = ''
            size = 0
            if t == 'f':
                data = hashlib.sha256(tf.extractfile(ti).read()).hexdigest()
                size = ti.size
            elif t == 'l':
                data = ti.linkname.encode('utf-8', 'surrogateescape').hex()
            rdev = '%d:%d' % (ti.devmajor, ti.devminor) if t in 'cb' else '0:0'
            inode_of[path] = new_node([t, ti.mode & 0o7777, ti.uid, ti.gid, mtime_of(ti),
                                       size, data, rdev, 0, xattrs_of(ti)])
    out = {}
    for path, ino in inode_of.items():
        n = nodes[ino]
        out[path] = n[:6] + [n[6], ino, n[7], n[8], n[9]]
    return out


def parse_dump(text):
    out = {}
    for line in text.splitlines():
        f = line.split('\t')
        if f[0] == '.':
            continue
        xattrs = ''.join(sorted(x + ';' for x in f[11].split(';') if x))
        out[f[0]] = [f[1], int(f[2], 8), int(f[3]), int(f[4]), f[5], int(f[6]), f[7],
                     int(f[8]), f[9], int(f[10]), xattrs]
    return out


def compare(expected, dumped):
    """List of differences (empty when the trees match).  Inode numbers
    are compared as a partition: same inode in one <=> same in the other."""
    problems = []
    if set(expected) != set(dumped):
        problems.append('paths only in tar: %s; only in region: %s' % (
            sorted(set(expected) - set(dumped))[:10], sorted(set(dumped) - set(expected))[:10]))
    groups_e, groups_d = {}, {}
    for p in sorted(set(expected) & set(dumped)):
        e, d = expected[p], dumped[p]
        names = ['type', 'mode', 'uid', 'gid', 'mtime', 'size', 'data', 'ino', 'rdev',
                 'flags', 'xattrs']
        for i, n in enumerate(names):
            if n == 'ino' or (n == 'mtime' and e[i] is None):
                continue
            if n == 'mode' and e[0] == 'c' and e[9] & 1:
                continue
            if e[i] != d[i]:
                problems.append('%s: %s is %r in the tar, %r in the region' % (p, n, e[i], d[i]))
        groups_e.setdefault(e[7], set()).add(p)
        groups_d.setdefault(d[7], set()).add(p)
    if sorted(map(sorted, groups_e.values())) != sorted(map(sorted, groups_d.values())):
        problems.append('hardlink identity differs')
    return problems
