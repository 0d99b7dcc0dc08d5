#!/usr/bin/env bash
# containerd with the daxfs snapshotter vs containerd's overlayfs
# snapshotter on a Debian-based image, two hosts on one region (make
# bench-containerd; never part of make test).
#
#   bench/containerd.sh BUILD_DIR
#
# Pull and unpack on the first host, pull on a second host, container
# start, a read-all-files walk inside a container (first and warm), and
# the disk and page cache a second host adds; one table with ratios.  See
# bench/containerd.py.  Needs root, containerd, runc, docker-registry,
# skopeo, Go and containerd's Go sources (make deps).  The rootfs is made
# once with debootstrap (bench/fuse_rootfs.py) and the image cached under
# BUILD_DIR/bench-containerd; everything else is removed on exit.
set -euo pipefail
if [ $# -ne 1 ]; then
	echo "usage: $0 BUILD_DIR" >&2
	exit 2
fi
export LC_ALL=C
exec python3 "$(dirname "${BASH_SOURCE[0]}")/containerd.py" "$1"
