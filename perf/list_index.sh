#!/usr/bin/env bash
# List over the bulk store's name index (issue 15), at sizes too costly for ctest: a store of
# 1,000,000 empty objects written directly in the store's layout, then one List of all of it
# (time to first result, peak RSS, index rebuild time). The store goes to /dev/shm when it has
# room (about 1.5 GB of RAM for the run); elsewhere (LIST_STORE_DIR=/some/ext4/dir) it takes about
# 4 GB of disk, each object's xattr taking a block. Also reruns the 40-stalled-Lists memory case.
#   usage: perf/list_index.sh [build-dir]      (default: build)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${1:-$here/build}"
/usr/bin/python3 "$here/tests/e2e/test_list_index.py" --server "$build/ringstreamd" \
    --group huge --group memory
