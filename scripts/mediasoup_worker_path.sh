#!/usr/bin/env bash
# Where the cached mediasoup worker binary lives (built by scripts/build_mediasoup_worker.sh).
#
# Run:    scripts/mediasoup_worker_path.sh    -> prints the path (whether or not it is built yet;
#                                              exit status 1 when it is not built)
# Source: defines MEDIASOUP_VERSION, MEDIASOUP_PATCH and the function mediasoup_worker_path.
#
# The directory name carries a short hash of the patch and of MEDIASOUP_RECIPE, so a changed recipe gets
# a fresh binary instead of silently reusing an old one. Bump MEDIASOUP_RECIPE when a change to
# build_mediasoup_worker.sh changes the binary (comment edits need not rebuild a 4-minute build).
# sut/stack.py asks this script for the path (unless MEDIASOUP_WORKER_BIN is set).

MEDIASOUP_VERSION="3.13.5"
_MS_SCRIPTS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
MEDIASOUP_PATCH="$_MS_SCRIPTS_DIR/patches/mediasoup_3_13_5.py"
MEDIASOUP_RECIPE="1: meson release, wrap-mode nofallback, shared Debian libs"

mediasoup_worker_path() {
    local cache="${SPEECHLOAD_CACHE:-$HOME/.cache/speechload}"
    local hash
    hash="$({ echo "$MEDIASOUP_RECIPE"; cat "$MEDIASOUP_PATCH"; } | sha256sum | cut -c1-10)"
    echo "$cache/mediasoup/$MEDIASOUP_VERSION-$hash/mediasoup-worker"
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
    set -euo pipefail
    path="$(mediasoup_worker_path)"
    echo "$path"
    [[ -x "$path" ]]
fi
