#!/bin/bash
# Holds, pins, eviction and reaping across three namespaced hosts on one
# region (see tests/py/lifecycle_test.py).
exec python3 "$DAXFS_SRC/tests/py/lifecycle_test.py"
