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
        for _ in range(300):
            if os.path.exists(self.sock) and ctl('hosts', address=self.sock).returncode == 0:
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError('daxfsd %s did not start: %s' % (self.name,
                                                             open(self.log.name).read()))

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
    for pid in os.listdir('/proc'):
        if not pid.isdigit():
            continue
        try:
            cmd = open('/proc/%s/cmdline' % pid, 'rb').read().split(b'\0')
        except OSError:
            continue
        if cmd and cmd[0].endswith(b'daxfs-view') and mnt.encode() in cmd:
            return int(pid)
    return None


def stop_view(mnt):
    """Unmount a host's view; wait until it closed its layers and exited."""
    subprocess.run(['umount', '-l', mnt], capture_output=True)
    for _ in range(100):
        if not view_pid(mnt):
            break
        time.sleep(0.05)
