#!/bin/bash
# Streaming unpack of reference layer tars (see tests/py/unpack_test.py).
exec python3 "$DAXFS_SRC/tests/py/unpack_test.py"
