#!/bin/bash
# daxfsd's snapshotter under private containerds (two hosts on one
# region): invalid gRPC requests, pulls through containerd's unpacker onto
# layers already in the region, ctr snapshots, namespaces, many
# containers at once, a 128-layer image, daxfsd restarts under running
# containers, ctr pull and run, garbage collection (see
# tests/py/containerd_test.py).
exec python3 "$DAXFS_SRC/tests/py/containerd_test.py"
