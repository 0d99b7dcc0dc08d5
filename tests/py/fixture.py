"""Test fixtures: a private Debian docker-registry on 127.0.0.1 and OCI
images built from layer tars made here (busybox-static plus generated
files), pushed with skopeo.  Layouts are cached by content hash under
$DAXFS_FIXTURES (default /var/tmp/daxfs-fixtures) so a run builds each
image once."""
import gzip
import hashlib
import io
import json
import os
import shutil
import socket
import subprocess
import tarfile
import time
import urllib.request

CACHE = os.environ.get('DAXFS_FIXTURES', '/var/tmp/daxfs-fixtures')


def free_port():
    s = socket.socket()
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Registry:
    def __init__(self, tmp):
        self.dir = os.path.join(tmp, 'registry')
        os.makedirs(self.dir, exist_ok=True)
        self.port = free_port()
        self.log = os.path.join(self.dir, 'access.log')
        cfg = os.path.join(self.dir, 'config.yml')
        with open(cfg, 'w') as f:
            f.write('version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\n'
                    'storage:\n  filesystem:\n    rootdirectory: %s/data\n'
                    '  delete:\n    enabled: true\n'
                    'http:\n  addr: 127.0.0.1:%d\n' % (self.dir, self.port))
        self.logf = open(self.log, 'w')
        self.proc = subprocess.Popen(['/usr/bin/docker-registry', 'serve', cfg],
                                     stdout=self.logf, stderr=subprocess.STDOUT)
        for _ in range(200):
            try:
                urllib.request.urlopen('http://127.0.0.1:%d/v2/' % self.port, timeout=1)
                return
            except Exception:
                time.sleep(0.05)
        raise RuntimeError('registry did not start')

    @property
    def addr(self):
        return '127.0.0.1:%d' % self.port

    def blob_gets(self):
        """Blob GETs the registry served so far (its access log)."""
        self.logf.flush()
        with open(self.log, errors='replace') as f:
            return [line for line in f if '"GET /v2/' in line and '/blobs/sha256:' in line]

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.logf.close()


def tar_add(tf, name, kind, data, mode, extra):
    """One entry: kind f (data is the content), d, l or h (data is the
    link target), c, b or p; extra may set mtime, uid, gid, pax, dev."""
    ti = tarfile.TarInfo(name)
    ti.mode = mode
    ti.mtime = extra.get('mtime', 1700000000)
    ti.uid = extra.get('uid', 0)
    ti.gid = extra.get('gid', 0)
    if 'pax' in extra:
        ti.pax_headers = extra['pax']
    if kind == 'f':
        ti.size = len(data)
        tf.addfile(ti, io.BytesIO(data))
        return
    ti.type = {'d': tarfile.DIRTYPE, 'l': tarfile.SYMTYPE, 'h': tarfile.LNKTYPE,
               'c': tarfile.CHRTYPE, 'b': tarfile.BLKTYPE, 'p': tarfile.FIFOTYPE}[kind]
    ti.linkname = data or ''
    ti.devmajor, ti.devminor = extra.get('dev', (0, 0))
    tf.addfile(ti)


def tar_bytes(entries):
    """entries: list of (name, kind, data/link, mode, extra dict)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode='w', format=tarfile.PAX_FORMAT) as tf:
        for name, kind, data, mode, extra in entries:
            tar_add(tf, name, kind, data, mode, extra)
    return buf.getvalue()


def compress(raw, how):
    if how == 'gzip':
        return gzip.compress(raw, mtime=0), 'application/vnd.oci.image.layer.v1.tar+gzip'
    if how == 'zstd':
        out = subprocess.run(['zstd', '-q', '-c', '-3'], input=raw, capture_output=True,
                             check=True).stdout
        return out, 'application/vnd.oci.image.layer.v1.tar+zstd'
    return raw, 'application/vnd.oci.image.layer.v1.tar'


def sha(b):
    return hashlib.sha256(b).hexdigest()


class Layout:
    """An OCI image layout directory built blob by blob."""

    def __init__(self, path):
        self.path = path
        os.makedirs(os.path.join(path, 'blobs', 'sha256'), exist_ok=True)
        with open(os.path.join(path, 'oci-layout'), 'w') as f:
            json.dump({'imageLayoutVersion': '1.0.0'}, f)
        self.index = {'schemaVersion': 2, 'manifests': []}

    def blob(self, data):
        d = sha(data)
        with open(os.path.join(self.path, 'blobs', 'sha256', d), 'wb') as f:
            f.write(data)
        return 'sha256:' + d

    def image(self, tag, layers, arch='amd64', os_='linux', variant=None,
              media_type=None, wrong_diff_id=False):
        """layers: list of (tar bytes, compression).  Returns the
        manifest descriptor and a list of (digest, diff_id, tar).
        media_type overrides the layers' media type and wrong_diff_id
        makes the config lie about the last layer (fault images)."""
        descs, diff_ids, info = [], [], []
        for raw, how in layers:
            blob, mt = compress(raw, how)
            dg = self.blob(blob)
            descs.append({'mediaType': media_type or mt, 'digest': dg, 'size': len(blob)})
            diff_ids.append('sha256:' + sha(raw))
            info.append((dg, diff_ids[-1], raw))
        if wrong_diff_id:
            diff_ids[-1] = 'sha256:' + sha(b'not this layer')
        plat = {'architecture': arch, 'os': os_}
        if variant:
            plat['variant'] = variant
        cfg = dict(plat, rootfs={'type': 'layers', 'diff_ids': diff_ids},
                   config={'Cmd': ['/bin/sh']}, created='2024-01-01T00:00:00Z')
        cb = json.dumps(cfg, sort_keys=True).encode()
        man = {'schemaVersion': 2, 'mediaType': 'application/vnd.oci.image.manifest.v1+json',
               'config': {'mediaType': 'application/vnd.oci.image.config.v1+json',
                          'digest': self.blob(cb), 'size': len(cb)},
               'layers': descs}
        mb = json.dumps(man, sort_keys=True).encode()
        desc = {'mediaType': 'application/vnd.oci.image.manifest.v1+json',
                'digest': self.blob(mb), 'size': len(mb), 'platform': plat}
        if tag:
            self.index['manifests'].append(dict(desc, annotations={
                'org.opencontainers.image.ref.name': tag}))
            self.save()
        return desc, info

    def save(self):
        with open(os.path.join(self.path, 'index.json'), 'w') as f:
            json.dump(self.index, f)


def push(layout, tag, registry, name):
    subprocess.run(['skopeo', 'copy', '--quiet', '--dest-tls-verify=false',
                    'oci:%s:%s' % (layout, tag),
                    'docker://%s/%s:%s' % (registry.addr, name, tag)], check=True)


def put_manifest(registry, name, tag, body, media_type):
    req = urllib.request.Request('http://%s/v2/%s/manifests/%s' % (registry.addr, name, tag),
                                 data=body, method='PUT',
                                 headers={'Content-Type': media_type})
    urllib.request.urlopen(req, timeout=10).read()


def busybox_entries():
    with open('/bin/busybox', 'rb') as f:
        bb = f.read()
    return [('bin', 'd', None, 0o755, {}),
            ('bin/busybox', 'f', bb, 0o755, {}),
            ('bin/sh', 'h', 'bin/busybox', 0o755, {}),
            ('bin/ls', 'l', 'busybox', 0o777, {}),
            ('etc', 'd', None, 0o755, {}),
            ('etc/passwd', 'f', b'root:x:0:0:root:/root:/bin/sh\n', 0o644, {}),
            ('tmp', 'd', None, 0o1777, {})]


def manifests(path):
    """The manifests of an OCI layout, by their ref.name annotation."""
    idx = json.load(open(os.path.join(path, 'index.json')))
    out = {}
    for m in idx['manifests']:
        blob = open(os.path.join(path, 'blobs', 'sha256', m['digest'][7:]), 'rb').read()
        out[m['annotations']['org.opencontainers.image.ref.name']] = json.loads(blob)
    return out


def cached_layout(key, build):
    """Build a layout with build(path) once per content key."""
    path = os.path.join(CACHE, key)
    if os.path.exists(os.path.join(path, 'index.json')):
        return path
    tmp = path + '.tmp%d' % os.getpid()
    shutil.rmtree(tmp, ignore_errors=True)
    build(tmp)
    shutil.rmtree(path, ignore_errors=True)
    os.rename(tmp, path)
    return path
