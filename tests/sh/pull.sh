#!/bin/bash
# Two daxfsd hosts on one region pulling from a real registry
# (see tests/py/pull_test.py).
exec python3 "$DAXFS_SRC/tests/py/pull_test.py"
