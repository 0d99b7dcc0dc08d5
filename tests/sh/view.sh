#!/bin/bash
# FUSE view, overlay mounts and daemon restarts (see tests/py/view_test.py).
exec python3 "$DAXFS_SRC/tests/py/view_test.py"
