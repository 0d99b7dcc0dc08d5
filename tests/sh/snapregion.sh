#!/bin/bash
# The snapshotter's region side at the gRPC level: pins, Usage, CRI
# pulls and fallbacks, the image-filesystem path (see
# tests/py/snapregion_test.py).
exec python3 "$DAXFS_SRC/tests/py/snapregion_test.py"
