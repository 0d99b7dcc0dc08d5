#!/bin/bash
# daxfsd's snapshotter under a private containerd: pulls through
# containerd's unpacker onto layers already in the region, ctr pull and
# ctr run, garbage collection (see tests/py/containerd_test.py).
exec python3 "$DAXFS_SRC/tests/py/containerd_test.py"
