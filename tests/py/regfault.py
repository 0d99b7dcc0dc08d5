#!/usr/bin/env python3
"""A fault-injecting proxy in front of a real OCI registry, for the
registry client tests (tests/sh/registry.sh).

  regfault.py serve --upstream HOST:PORT --state DIR
      Serves the proxy and a second "redirect target" server on free
      ports, written to DIR/ports as "PROXY TARGET" once listening.
  regfault.py push URL REPO TAG ENVFILE
      Uploads test blobs and a manifest; writes their digests and sizes
      as shell assignments to ENVFILE.
  regfault.py ctl URL rules JSON | reset | clearlog | log
      Controls a running proxy (POST /_ctl/WHAT with the JSON as body).

Rules are tried in order for each request whose path contains "match":
  bearer   require "Authorization: Bearer <token>", else 401 with a
           challenge whose realm is this proxy's /token.  Options: token,
           user/pass (the token endpoint then wants Basic credentials),
           refresh (accept POST refresh_token=<refresh>), field ("token"
           or "access_token").  Never used up.
  basic    require Basic user/pass, else 401.  Never used up.
  norange  forward a Range request without its Range header (the
           registry answers 200 with the whole body).
  status   answer "status" (with "headers") and an OCI error body.
  cut      send the headers and "bytes" of the body (default half),
           then drop the connection.
  stall    like cut, but go silent for "secs" before dropping it.
  stall_headers  read the request, say nothing for "secs", then close.
  corrupt  flip one byte in the middle of the body.
  redirect answer 307 to the same path on the target server.
"count" is how many requests a rule applies to (-1: all; default 1).
Every request is logged as one line:
  SERVER METHOD PATH range=R auth=SCHEME action=A status=S
"""
import base64
import hashlib
import http.client
import http.server
import json
import os
import random
import socket
import sys
import threading
import time
import urllib.parse
import urllib.request

lock = threading.Lock()
rules = []
log = []
state = {}
GATES = ('bearer', 'basic')
KEEP = ('Content-Type', 'Docker-Content-Digest', 'Content-Range',
        'Accept-Ranges', 'Docker-Distribution-Api-Version', 'Etag')


def record(line):
    with lock:
        log.append(line)
        with open(state['log'], 'a') as f:
            f.write(line + '\n')


def take(rule):
    """Use up one application of rule (called with lock held)."""
    if rule.get('count', 1) > 0:
        rule['count'] = rule.get('count', 1) - 1


def live(rule, path):
    return rule.get('count', 1) != 0 and rule.get('match', '') in path


def repo_of(path):
    p = path.split('?')[0]
    for kind in ('/manifests/', '/blobs/'):
        if p.startswith('/v2/') and kind in p:
            return p[4:p.index(kind)]
    return ''


class Base(http.server.BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'
    server_name = 'proxy'

    def log_message(self, fmt, *args):
        pass

    def note(self, action, status):
        auth = self.headers.get('Authorization', '-').split(' ')[0]
        record('%s %s %s range=%s auth=%s action=%s status=%s' % (
            self.server_name, self.command, self.path,
            self.headers.get('Range', '-'), auth, action, status))

    def reply(self, status, body=b'', headers=None, action='reply'):
        self.note(action, status)
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        if self.command != 'HEAD':
            self.wfile.write(body)

    def oci_error(self, status, code, msg, headers=None, action='status'):
        body = json.dumps({'errors': [{'code': code, 'message': msg}]}).encode()
        h = {'Content-Type': 'application/json'}
        h.update(headers or {})
        self.reply(status, body, h, action)

    def upstream(self, keep_range=True):
        c = http.client.HTTPConnection(state['upstream'], timeout=30)
        h = {}
        for k in ('Accept', 'Range'):
            if self.headers.get(k) and (k != 'Range' or keep_range):
                h[k] = self.headers[k]
        c.request(self.command, self.path, headers=h)
        r = c.getresponse()
        body = r.read()
        hdrs = {k: v for k, v in r.getheaders() if k in KEEP}
        c.close()
        return r.status, hdrs, body

    def drop(self):
        self.close_connection = True
        try:
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def partial(self, action, status, hdrs, body, n, secs=0):
        """Headers for the whole body, then only n bytes of it."""
        self.note(action, status)
        self.send_response(status)
        for k, v in hdrs.items():
            self.send_header(k, v)
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        try:
            self.wfile.write(body[:n])
            self.wfile.flush()
            time.sleep(secs)
        except OSError:
            pass
        self.drop()


class Target(Base):
    """The redirect target: serves the registry's blobs without auth."""
    server_name = 'target'

    def do_GET(self):
        status, hdrs, body = self.upstream()
        self.reply(status, body, hdrs, 'forward')


class Proxy(Base):
    def do_GET(self):
        if self.path.split('?')[0] == '/token':
            return self.token()
        self.serve()

    do_HEAD = do_GET

    def do_POST(self):
        n = int(self.headers.get('Content-Length', '0'))
        self.body = self.rfile.read(n) if n else b''
        if self.path.startswith('/_ctl/'):
            return self.control()
        if self.path.split('?')[0] == '/token':
            return self.token()
        self.oci_error(405, 'UNSUPPORTED', 'the proxy only reads')

    def control(self):
        global rules
        what = self.path[len('/_ctl/'):]
        with lock:
            if what == 'rules':
                rules = json.loads(self.body)
            elif what == 'reset':
                rules = []
                log.clear()
            elif what == 'clearlog':
                log.clear()
            out = '\n'.join(log) + '\n' if what == 'log' else 'ok\n'
        self.send_response(200)
        self.send_header('Content-Length', str(len(out)))
        self.end_headers()
        self.wfile.write(out.encode())

    def gate_ok(self, rule):
        auth = self.headers.get('Authorization', '')
        if rule['mode'] == 'bearer':
            return auth == 'Bearer ' + rule.get('token', 'tok')
        want = '%s:%s' % (rule.get('user', 'u'), rule.get('pass', 'p'))
        return auth == 'Basic ' + base64.b64encode(want.encode()).decode()

    def challenge(self, rule):
        if rule['mode'] == 'basic':
            return 'Basic realm="regfault"'
        return ('Bearer realm="http://127.0.0.1:%d/token",service="regfault",'
                'scope="repository:%s:pull"' % (state['port'], repo_of(self.path)))

    def token(self):
        with lock:
            rule = next((r for r in rules if r['mode'] == 'bearer'), None)
        q = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
        if self.command == 'POST':
            q = urllib.parse.parse_qs(self.body.decode())
        if not rule or q.get('service') != ['regfault'] or not q.get('scope'):
            return self.oci_error(400, 'DENIED', 'bad token request', action='token')
        if self.command == 'POST':
            ok = q.get('grant_type') == ['refresh_token'] and \
                q.get('refresh_token') == [rule.get('refresh')]
        elif 'user' in rule:
            ok = self.gate_ok(dict(rule, mode='basic'))
        else:
            ok = True
        if not ok:
            return self.oci_error(401, 'UNAUTHORIZED', 'bad credentials',
                                  action='token')
        body = json.dumps({rule.get('field', 'token'): rule.get('token', 'tok'),
                           'expires_in': 300}).encode()
        self.reply(200, body, {'Content-Type': 'application/json'}, 'token')

    def pick(self):
        """The action for this request (None: forward), or a 401 gate."""
        norange = False
        with lock:
            for r in rules:
                if not live(r, self.path):
                    continue
                if r['mode'] in GATES:
                    if not self.gate_ok(r):
                        return r, norange
                    continue
                if r['mode'] == 'norange':
                    if self.headers.get('Range'):
                        take(r)
                        norange = True
                    continue
                take(r)
                return dict(r), norange
        return None, norange

    def serve(self):
        rule, norange = self.pick()
        mode = rule['mode'] if rule else None
        if mode in GATES:
            return self.oci_error(401, 'UNAUTHORIZED', 'authentication required',
                                  {'WWW-Authenticate': self.challenge(rule)},
                                  action='challenge')
        if mode == 'status':
            return self.oci_error(rule['status'], rule.get('code', 'INJECTED'),
                                  'injected fault', rule.get('headers'))
        if mode == 'stall_headers':
            self.note(mode, '-')
            time.sleep(rule.get('secs', 5))
            return self.drop()
        if mode == 'redirect':
            loc = 'http://127.0.0.1:%d%s' % (state['target'], self.path)
            return self.reply(307, b'', {'Location': loc}, 'redirect')
        status, hdrs, body = self.upstream(keep_range=not norange)
        if mode in ('cut', 'stall'):
            n = rule.get('bytes', len(body) // 2)
            return self.partial(mode, status, hdrs, body, n, rule.get('secs', 0))
        if mode == 'corrupt' and body:
            body = bytearray(body)
            body[len(body) // 2] ^= 0x55
            body = bytes(body)
        self.reply(status, body, hdrs, mode or ('norange' if norange else 'forward'))


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def serve(args):
    state['upstream'] = args[args.index('--upstream') + 1]
    sdir = args[args.index('--state') + 1]
    state['log'] = os.path.join(sdir, 'proxy.log')
    proxy = Server(('127.0.0.1', 0), Proxy)
    target = Server(('127.0.0.1', 0), Target)
    state['port'] = proxy.server_address[1]
    state['target'] = target.server_address[1]
    threading.Thread(target=target.serve_forever, daemon=True).start()
    tmp = os.path.join(sdir, 'ports.tmp')
    with open(tmp, 'w') as f:
        f.write('%d %d\n' % (state['port'], state['target']))
    os.rename(tmp, os.path.join(sdir, 'ports'))
    proxy.serve_forever()


def push(args):
    url, repo, tag, envfile = args
    u = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(u.netloc, timeout=30)
    rng = random.Random(4242)

    def call(method, path, body=b'', headers=None, want=(200,)):
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        data = r.read()
        if r.status not in want:
            raise RuntimeError('%s %s: %d %s' % (method, path, r.status, data[:200]))
        return r

    def upload(data):
        d = 'sha256:' + hashlib.sha256(data).hexdigest()
        r = call('POST', '/v2/%s/blobs/uploads/' % repo, want=(202,))
        loc = urllib.parse.urlsplit(r.getheader('Location'))
        q = loc.query + '&' if loc.query else ''
        call('PUT', '%s?%sdigest=%s' % (loc.path, q, d), data,
             {'Content-Type': 'application/octet-stream'}, want=(201,))
        return d, len(data)

    blobs = {
        'BIG': rng.randbytes(3 * 1024 * 1024 + 1234),
        'SMALL': rng.randbytes(100 * 1024),
        'P1': rng.randbytes(700 * 1024),
        'P2': rng.randbytes(1200 * 1024 + 7),
        'CFG': json.dumps({'architecture': 'amd64', 'os': 'linux',
                           'rootfs': {'type': 'layers', 'diff_ids': []}}).encode(),
    }
    env = {}
    for name, data in blobs.items():
        env[name + '_DIGEST'], env[name + '_SIZE'] = upload(data)
    layer = 'application/vnd.oci.image.layer.v1.tar+gzip'
    mt = 'application/vnd.oci.image.manifest.v1+json'
    man = json.dumps({
        'schemaVersion': 2, 'mediaType': mt,
        'config': {'mediaType': 'application/vnd.oci.image.config.v1+json',
                   'digest': env['CFG_DIGEST'], 'size': env['CFG_SIZE']},
        'layers': [{'mediaType': layer, 'digest': env[n + '_DIGEST'],
                    'size': env[n + '_SIZE']} for n in ('BIG', 'SMALL', 'P1', 'P2')],
    }, indent=2).encode()
    call('PUT', '/v2/%s/manifests/%s' % (repo, tag), man, {'Content-Type': mt},
         want=(201,))
    env['MAN_DIGEST'] = 'sha256:' + hashlib.sha256(man).hexdigest()
    env['MAN_SIZE'] = len(man)
    env['MAN_TYPE'] = mt
    with open(envfile, 'w') as f:
        for k, v in env.items():
            f.write('%s=%s\n' % (k, v))


def ctl(args):
    url, what = args[0], args[1]
    data = args[2].encode() if what == 'rules' else b''
    req = urllib.request.Request(url.rstrip('/') + '/_ctl/' + what, data=data,
                                 method='POST')
    with urllib.request.urlopen(req, timeout=10) as r:
        sys.stdout.write(r.read().decode())


def main():
    cmds = {'serve': serve, 'push': push, 'ctl': ctl}
    if len(sys.argv) < 2 or sys.argv[1] not in cmds:
        sys.exit(__doc__)
    cmds[sys.argv[1]](sys.argv[2:])


if __name__ == '__main__':
    main()
