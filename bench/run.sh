#!/usr/bin/env bash
# Benchmark runner (make bench).
#
#   bench/run.sh BUILD_DIR
#
# Runs BUILD_DIR/bench/bench_unpack (layer unpack: region vs tmpfs),
# BUILD_DIR/bench/bench_hash (shared hash inserts: lock-free vs one
# process-shared mutex) and BUILD_DIR/bench/bench_gc (layer eviction:
# daxfs_gc vs rm -rf on tmpfs, and the cost of a clock pass that can free
# nothing), prints their tables, then a summary of the ratios.  Scratch
# files live in a private directory under /dev/shm (DAXFS_BENCH_DIR names
# another tmpfs parent), removed afterwards.

set -euo pipefail

usage() {
	echo "usage: $0 BUILD_DIR" >&2
	exit 2
}

[ $# -eq 1 ] || usage
build=$1
for b in bench_unpack bench_hash bench_gc; do
	if [ ! -x "$build/bench/$b" ]; then
		echo "$0: $build/bench/$b not found (run make bench)" >&2
		exit 2
	fi
done

export LC_ALL=C
parent=${DAXFS_BENCH_DIR:-/dev/shm}
# Peak use: two 256 MiB large layers in a region plus their extraction.
need_kb=$((2560 * 1024))
avail_kb=$(df -Pk "$parent" | awk 'NR == 2 { print $4 }')
if [ "${avail_kb:-0}" -lt "$need_kb" ]; then
	echo "$0: $parent has ${avail_kb:-0} KiB free, the benchmarks need $need_kb" >&2
	exit 1
fi

work=$(mktemp -d "$parent/daxfs-bench.XXXXXX")
trap 'rm -rf -- "$work"' EXIT
trap 'exit 130' INT TERM

start=$SECONDS
echo "daxfs benchmarks: $(nproc) CPUs ($(sed -n 's/^model name[^:]*: //p' /proc/cpuinfo | head -n 1)), kernel $(uname -r)"
echo

# Each tool ends with "summary:" lines; they are collected for the end.
"$build/bench/bench_unpack" -d "$work" | tee "$work/unpack.out" | grep -v '^summary:'
echo
"$build/bench/bench_hash" -d "$work" | tee "$work/hash.out" | grep -v '^summary:'
echo
"$build/bench/bench_gc" -d "$work" | tee "$work/gc.out" | grep -v '^summary:'
echo

echo "summary (medians; ratio > 1 means the first is faster):"
sed -n 's/^summary: /  /p' "$work/unpack.out" "$work/hash.out" "$work/gc.out"
echo "  total time $((SECONDS - start)) s"
