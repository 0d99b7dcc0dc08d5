#!/bin/bash
# containerd's snapshotter test suite (its snapshots/testsuite package)
# against daxfsd's Snapshots service over its unix socket, one case per
# run of tests/go/testsuite's binary.  Needs root (the cases mount).
set -u

tmp=$DAXFS_TMP
daemon_pid=

if [ "$(id -u)" != 0 ]; then
	echo "snapshotter_suite: needs root" >&2
	exit 77
fi
bin=$(bash "$DAXFS_SRC/tests/go/testsuite/build.sh")
rc=$?
[ $rc -eq 77 ] && exit 77
if [ $rc -ne 0 ]; then
	echo "FAIL: snapshotter_suite/build"
	exit 1
fi

# Unmount whatever a failed case left under $tmp, deepest first.
unmount_all() {
	findmnt -rn -o TARGET | grep "^$tmp/" | sort -r | while read -r m; do
		umount -l "$m" 2>/dev/null
	done
}

stop() {
	if [ -n "$daemon_pid" ]; then
		kill "$daemon_pid" 2>/dev/null
		wait "$daemon_pid" 2>/dev/null
		daemon_pid=
	fi
	unmount_all
}
trap stop EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

sock=$tmp/snapshotter.sock
"$DAXFS_BUILD/daxfsctl" mkfs --size 64M "$tmp/region" >/dev/null || {
	echo "FAIL: snapshotter_suite/mkfs"
	exit 1
}
echo '{}' >"$tmp/config.json"
"$DAXFS_BUILD/daxfsd" --config "$tmp/config.json" --region "$tmp/region" \
	--root "$tmp/root" --address "$tmp/daxfsd.sock" --snapshotter-address "$sock" \
	--view external --lease-ms 1000 >"$tmp/daxfsd.log" 2>&1 &
daemon_pid=$!
for _ in $(seq 100); do
	[ -S "$sock" ] && break
	sleep 0.05
done
if [ ! -S "$sock" ]; then
	echo "FAIL: snapshotter_suite/start"
	cat "$tmp/daxfsd.log" >&2
	exit 1
fi

# The case names, as the installed suite has them.
suite=/usr/share/gocode/src/github.com/containerd/containerd/snapshots/testsuite/testsuite.go
cases=$(grep -o 't\.Run("[A-Za-z0-9]*"' "$suite" | cut -d'"' -f2)
mkdir -p "$tmp/suite"
for c in $cases; do
	out=$tmp/suite/$c.log
	TMPDIR=$tmp/suite DAXFS_SNAPSHOTTER=$sock timeout 120 "$bin" suite \
		-test.run "^TestDaxfs\$/^$c\$" -test.v >"$out" 2>&1
	if grep -q "^    --- PASS: TestDaxfs/$c " "$out"; then
		echo "PASS: snapshotter_suite/$c"
	elif grep -q "^    --- SKIP: TestDaxfs/$c " "$out"; then
		echo "SKIP: snapshotter_suite/$c (skipped by the suite)"
	else
		echo "FAIL: snapshotter_suite/$c"
		grep -v "helpers.go:.*[0-9] /" "$out" | tail -n 20 >&2
	fi
	unmount_all
done
# Many calls at once: 4 connections with 8 streams each.
if "$bin" stress "$sock" 4 8 10 >"$tmp/stress.log" 2>&1; then
	echo "PASS: snapshotter_suite/concurrent_calls"
else
	echo "FAIL: snapshotter_suite/concurrent_calls"
	tail -n 20 "$tmp/stress.log" >&2
fi
if ! kill -0 "$daemon_pid" 2>/dev/null; then
	echo "FAIL: snapshotter_suite/daemon_alive"
	tail -n 20 "$tmp/daxfsd.log" >&2
fi
