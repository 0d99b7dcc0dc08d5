"""What the integration tests share: PASS:/FAIL: reporting, daxfsctl
calls and daxfsd hosts on one region."""
import os
import signal
import subprocess
import sys
import time

BUILD = os.environ.get('DAXFS_BUILD', 'build')
TMP = os.environ.get('DAXFS_TMP', '/tmp')


class Suite:
    """Counts cases; each prints one PASS:/FAIL: line for the runner."""

    def __init__(self, prefix):
        self.prefix = prefix
        self.results = []

    def case(self, name, ok, detail=''):
        self.results.append(bool(ok))
        print('%s: %s/%s%s' % ('PASS' if ok else 'FAIL', self.prefix, name,
                               '' if ok else ': ' + str(detail)[:2000]))
        sys.stdout.flush()

    def exit_code(self):
        return 0 if all(self.results) else 1


def ctl(*args, address=None):
    """Run daxfsctl (with --address after the command when given)."""
    cmd = [BUILD + '/daxfsctl'] + list(args)
    if address:
        cmd[2:2] = ['--address', address]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def short_id(serial):
    """A layer's directory name in the view (its serial in base 36)."""
    digits = '0123456789abcdefghijklmnopqrstuvwxyz'
    out = ''
    while True:
        out = digits[serial % 36] + out
        serial //= 36
        if not serial:
            return out


def wait_listening(name, sock, proc, logpath):
    """Until the daxfsd started as proc answers on sock (15 s at most);
    RuntimeError with its log if it exits or never answers."""
    for _ in range(300):
        if os.path.exists(sock) and ctl('hosts', address=sock).returncode == 0:
            return
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    raise RuntimeError('daxfsd %s did not start: %s' % (name, open(logpath).read()))


class Daemon:
    """One host: daxfsd with its own root, socket and log under TMP."""

    def __init__(self, name, region, config, extra=()):
        self.name = name
        self.region = region
        self.config = config
        self.extra = list(extra)
        self.root = os.path.join(TMP, name)
        self.sock = os.path.join(TMP, name + '.sock')
        self.mnt = os.path.join(self.root, 'mnt')
        self.start()

    def start(self):
        self.log = open(os.path.join(TMP, self.name + '.log'), 'a')
        self.proc = subprocess.Popen(
            [BUILD + '/daxfsd', '--config', self.config, '--region', self.region,
             '--root', self.root, '--address', self.sock, '--host-name', self.name,
             '--lease-ms', '1000'] + self.extra, stdout=self.log, stderr=subprocess.STDOUT)
        wait_listening(self.name, self.sock, self.proc, self.log.name)

    def stop(self):
        """SIGTERM; the exit code (-9 if it had to be killed)."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return -9


def view_pid(mnt):
    """The daxfs-view process serving mnt (from its command line)."""
    return pid_of('daxfs-view', mnt)


def stop_view(mnt):
    """Unmount a host's view; wait until it closed its layers and exited."""
    subprocess.run(['umount', '-l', mnt], capture_output=True)
    for _ in range(100):
        if not view_pid(mnt):
            break
        time.sleep(0.05)


def pid_of(prog, *needles):
    """A process whose program name ends with prog and whose command line
    holds every needle."""
    for pid in os.listdir('/proc'):
        if not pid.isdigit():
            continue
        try:
            cmd = open('/proc/%s/cmdline' % pid, 'rb').read().split(b'\0')
        except OSError:
            continue
        if cmd and cmd[0].endswith(prog.encode()) and \
                all(any(n.encode() == c for c in cmd) for n in needles):
            return int(pid)
    return None


class NsHost:
    """One host in namespaces of its own: pid, uts, mount and time (its
    monotonic clock shifted by clock_s seconds), with private tmpfs on
    /run, /tmp and /dev/shm, so that only the region (a file in TMP, which
    is bind-mounted through, like the build and source trees) is shared
    with other hosts.  Processes of the
    host run under nsenter; its daxfsd's control socket is in TMP, so
    daxfsctl calls for the daemon work from outside."""

    def __init__(self, name, region, config, clock_s, extra=()):
        self.name = name
        self.region = region
        self.config = config
        self.extra = list(extra)
        self.root = os.path.join(TMP, name)
        self.sock = os.path.join(TMP, name + '.sock')
        self.snap = os.path.join(TMP, name + '-snap.sock')
        self.mnt = os.path.join(self.root, 'mnt')
        self.logpath = os.path.join(TMP, name + '.log')
        self.daemon = None
        os.makedirs(self.root, exist_ok=True)
        ready = os.path.join(TMP, name + '.ready')
        # Directories the host must still see under its private tmpfs
        # mounts (the test's TMP with the region; the build and source
        # trees, which may live under /tmp too): set aside on the private
        # /run before /tmp and /dev/shm are covered, then bound back.
        keep = sorted({os.path.realpath(p) for p in
                       (TMP, BUILD, os.environ.get('DAXFS_SRC', '.'))}, key=len)
        script = ('set -e; host="$1"; ready="$2"; shift 2; mount -t tmpfs tmpfs /run; '
                  'i=0; for d in "$@"; do mkdir -p /run/.keep/$i; '
                  'mount --bind "$d" /run/.keep/$i; i=$((i+1)); done; '
                  'mount -t tmpfs tmpfs /dev/shm; mount -t tmpfs tmpfs /tmp; '
                  'i=0; for d in "$@"; do mkdir -p "$d"; mount --bind /run/.keep/$i "$d"; '
                  'i=$((i+1)); done; '
                  'hostname "$host"; touch "$ready"; exec sleep infinity')
        self.ns = subprocess.Popen(['unshare', '--pid', '--uts', '--mount', '--time', '--fork',
                                    '--propagation', 'private', '--monotonic=%d' % clock_s,
                                    'sh', '-c', script, 'sh', name, ready] + keep)
        for _ in range(200):
            if os.path.exists(ready):
                break
            time.sleep(0.02)
        kids = open('/proc/%d/task/%d/children' % (self.ns.pid, self.ns.pid)).read().split()
        self.init = int(kids[0])

    def cmd(self, args):
        """args run inside the host's namespaces."""
        return ['nsenter', '-t', str(self.init), '-a'] + list(args)

    def run(self, *args, timeout=120):
        return subprocess.run(self.cmd(args), capture_output=True, text=True, timeout=timeout)

    def ctl(self, *args):
        return ctl(*args, address=self.sock)

    def start(self, wait=True, restarts=0, backoff=1.0):
        """Start daxfsd (it starts the host's view); like a service
        manager, start it again up to restarts times if it exits."""
        for _ in range(restarts):
            try:
                return self.start_once(wait)
            except RuntimeError:
                time.sleep(backoff)
        return self.start_once(wait)

    def start_once(self, wait=True):
        self.log = open(self.logpath, 'a')
        self.daemon = subprocess.Popen(self.cmd(
            [BUILD + '/daxfsd', '--config', self.config, '--region', self.region,
             '--root', self.root, '--address', self.sock, '--snapshotter-address', self.snap,
             '--host-name', self.name] + self.extra), stdout=self.log, stderr=subprocess.STDOUT)
        if wait:
            wait_listening(self.name, self.sock, self.daemon, self.logpath)

    def daemon_pid(self):
        return pid_of('daxfsd', '--root', self.root)

    def view_pid(self):
        return view_pid(self.mnt)

    def signal(self, sig):
        pid = self.daemon_pid()
        if pid:
            os.kill(pid, sig)
        return pid

    def resume(self):
        """SIGCONT a stopped daemon, and the nsenter that waits for it
        (nsenter stops itself when its child stops)."""
        self.signal(signal.SIGCONT)
        os.kill(self.daemon.pid, signal.SIGCONT)

    def wait_daemon(self, timeout=30):
        """The daemon's exit code (through nsenter, which passes it on)."""
        try:
            return self.daemon.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self):
        if self.daemon and self.daemon.poll() is None:
            self.signal(signal.SIGTERM)
            if self.wait_daemon(20) is None:
                self.signal(signal.SIGKILL)
                self.daemon.wait()

    def close(self):
        """Kill everything of the host (its pid namespace ends with init)."""
        try:
            os.kill(self.init, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.ns.wait()
        if self.daemon:
            self.daemon.wait()
