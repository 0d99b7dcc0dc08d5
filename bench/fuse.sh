#!/usr/bin/env bash
# FUSE view read benchmark (make bench-fuse; never part of make test).
#
#   bench/fuse.sh BUILD_DIR
#
# Reads one image through the daxfs FUSE view (daxfsd pull + daxfsctl
# mount) and the same layers as overlayfs on tmpfs and on a fresh ext4
# loop image: a 256 MiB sequential read, random 4 KiB reads and a walk of
# a Debian minbase rootfs, each first-read and warm, and prints one table
# of medians and view/overlay ratios.  See bench/fuse.py.  Needs root.
# The rootfs (debootstrap, once) and the OCI layout are cached under
# /var/tmp/daxfs-bench (DAXFS_BENCH_CACHE); all else is removed on exit.

set -euo pipefail

if [ $# -ne 1 ]; then
	echo "usage: $0 BUILD_DIR" >&2
	exit 2
fi
export LC_ALL=C
# The rootfs comes from debootstrap (a Debian package, like those "make
# deps" installs); without it fuse.py falls back to a generated tree.
if ! command -v debootstrap >/dev/null && [ "$(id -u)" = 0 ]; then
	echo "installing debootstrap"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
		debootstrap >/dev/null 2>&1 || echo "cannot install debootstrap"
fi
exec python3 "$(dirname "${BASH_SOURCE[0]}")/fuse.py" "$1"
