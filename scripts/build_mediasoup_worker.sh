#!/usr/bin/env bash
# Build mediasoup's worker from the npm package's sources against Debian 12's libraries (offline: the
# package's own install downloads a prebuilt binary or subproject sources, both unreachable here).
#
# Cached at ${SPEECHLOAD_CACHE:-$HOME/.cache/speechload}/mediasoup/<version>-<hash>/mediasoup-worker,
# where <hash> covers this script and the patch, so changing either rebuilds. Skips when present.
# Prints the binary's path as its last line of stdout.
#
# Needs: node/npm, python3, meson>=1.1 and ninja (from the venv, PyPI), a C++ compiler, and the -dev
# packages that scripts/setup.sh installs (libssl, libuv1, libsrtp2, libusrsctp, libabsl, libflatbuffers).
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=scripts/mediasoup_worker_path.sh
source "$REPO_ROOT/scripts/mediasoup_worker_path.sh"

log() { echo "[mediasoup-worker] $*" >&2; }

BIN="$(mediasoup_worker_path)"
if [[ -x "$BIN" ]]; then
    log "cached: $BIN"
    echo "$BIN"
    exit 0
fi

VENV_BIN="${VENV_BIN:-$REPO_ROOT/.venv/bin}"
MESON="$VENV_BIN/meson"
NINJA="$VENV_BIN/ninja"
for tool in "$MESON" "$NINJA"; do
    [[ -x "$tool" ]] || { log "error: $tool not found (run scripts/setup.sh: meson and ninja come from PyPI)"; exit 1; }
done
for tool in npm python3 c++ pkg-config flatc; do
    command -v "$tool" >/dev/null || { log "error: '$tool' not on PATH (run scripts/setup.sh)"; exit 1; }
done

OUT_DIR="$(dirname "$BIN")"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/mediasoup-build.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

log "fetching mediasoup@$MEDIASOUP_VERSION sources (npm pack)"
(cd "$WORK" && npm pack --silent "mediasoup@$MEDIASOUP_VERSION" >/dev/null)
tar -xzf "$WORK/mediasoup-$MEDIASOUP_VERSION.tgz" -C "$WORK"
WORKER="$WORK/package/worker"

log "patching for system libraries and the DTLS BIO callback"
python3 "$MEDIASOUP_PATCH" "$WORKER" >&2

# ms_disable_liburing exists only in newer releases; pass it when the release knows it, else meson
# would reject an unknown option (3.13.5 has no liburing support at all).
EXTRA_OPTS=()
if grep -q "ms_disable_liburing" "$WORKER/meson_options.txt"; then
    EXTRA_OPTS+=("-Dms_disable_liburing=true")
fi

log "configuring (meson $("$MESON" --version))"
# nofallback: a missing system library must fail here, never start a download from a wrap file.
(cd "$WORKER" && PATH="$VENV_BIN:$PATH" "$MESON" setup build --buildtype=release --wrap-mode=nofallback \
    "${EXTRA_OPTS[@]}" >"$WORK/meson-setup.log" 2>&1) || {
    tail -n 40 "$WORK/meson-setup.log" >&2
    log "error: meson setup failed (log above)"
    exit 1
}

JOBS="${MEDIASOUP_BUILD_JOBS:-$(nproc)}"
START=$(date +%s)
log "building with $JOBS jobs (takes ~3-5 min on 2 cores)"
# The generated FBS headers must exist before libwebrtc compiles (it includes FBS/message.h).
for target in flatbuffers-generator mediasoup-worker; do
    PATH="$VENV_BIN:$PATH" "$MESON" compile -C "$WORKER/build" -j "$JOBS" "$target" \
        >"$WORK/ninja-$target.log" 2>&1 || {
        tail -n 40 "$WORK/ninja-$target.log" >&2
        log "error: building $target failed (log above)"
        exit 1
    }
done
log "built in $(($(date +%s) - START)) s"

mkdir -p "$OUT_DIR"
# Install atomically so a concurrent reader never sees a half-written binary.
install -m 0755 "$WORKER/build/mediasoup-worker" "$OUT_DIR/.mediasoup-worker.tmp"
mv -f "$OUT_DIR/.mediasoup-worker.tmp" "$BIN"
log "installed: $BIN"
echo "$BIN"
