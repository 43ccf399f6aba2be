#!/usr/bin/env bash
# Runs every Tern test: the Rust unit and integration tests (cargo test --workspace),
# the interop tests (tests/interop, pytest) against the real `tern` binary, and the
# Debian package end to end (tests/package/test_deb.sh: builds, installs, runs and
# purges it; as root only).
#
# Installs what the tests need, only when it is missing (idempotent; needs root
# or sudo for apt-get):
#   - Debian packages mosquitto (the remote broker of the bridge tests), mosquitto-clients
#     (mosquitto_pub / mosquitto_sub), openssl and
#     nats-server (the cluster tests, tests/cluster), via apt-get; systemd
#     (systemd-analyze verify on the packaged unit; nothing is started) when
#     systemd-analyze is missing
#   - cargo-deb (the package test), via cargo install --locked
#   - PyPI packages paho-mqtt (2.x), stomp.py, pytest, requests (HTTP /v1 tests), fastavro
#     (Avro payloads of the schema tests) and
#     openapi-spec-validator (checks GET /v1/openapi.json), via python3 -m pip
#   - Debian packages chromium and chromium-driver, and nodejs/npm if node is missing,
#     for the browser tests (tests/browser: playwright-core drives /usr/bin/chromium;
#     no browser is downloaded); their npm packages with `npm ci` (package-lock.json)
# Non-interactive: safe with no stdin and with CI=true.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n==> %s\n' "$*" >&2; }
# A step's heading, with the time it starts (where a run's time goes).
step() { log "[$(date -u +%H:%M:%S)] $*"; }

# --- Debian packages ---------------------------------------------------------
export DEBIAN_FRONTEND=noninteractive
SUDO=""
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then
    SUDO="sudo -n"
fi
apt_missing=()
browser_pkgs=(chromium chromium-driver)
command -v npm >/dev/null 2>&1 || browser_pkgs+=(nodejs npm)
# openssl: the TLS interop tests drive `openssl s_client` for handshake failures.
package_pkgs=()
command -v systemd-analyze >/dev/null 2>&1 || package_pkgs+=(systemd)
for pkg in mosquitto mosquitto-clients openssl nats-server "${browser_pkgs[@]}" "${package_pkgs[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
        apt_missing+=("$pkg")
    fi
done
if [ "${#apt_missing[@]}" -gt 0 ]; then
    log "installing Debian packages: ${apt_missing[*]}"
    # Wait for the dpkg lock instead of failing if another apt-get is running.
    apt_opts=(-o DPkg::Lock::Timeout=600 -o Dpkg::Use-Pty=0)
    $SUDO apt-get "${apt_opts[@]}" update -q
    $SUDO apt-get "${apt_opts[@]}" install -y -q --no-install-recommends "${apt_missing[@]}"
fi

# --- cargo-deb (the package test) ------------------------------------------------
if ! cargo deb --version >/dev/null 2>&1; then
    log "installing cargo-deb (cargo install --locked)"
    cargo install cargo-deb --locked
fi

# --- Python packages -----------------------------------------------------------
pip_missing=()
python3 -c 'import paho.mqtt, sys; sys.exit(int(paho.mqtt.__version__.split(".")[0]) < 2)' \
    2>/dev/null || pip_missing+=("paho-mqtt>=2,<3")
python3 -c 'import stomp' 2>/dev/null || pip_missing+=("stomp.py")
python3 -c 'import pytest' 2>/dev/null || pip_missing+=("pytest")
python3 -c 'import requests' 2>/dev/null || pip_missing+=("requests")
python3 -c 'import fastavro' 2>/dev/null || pip_missing+=("fastavro")
python3 -c 'import openapi_spec_validator' 2>/dev/null || pip_missing+=("openapi-spec-validator")
if [ "${#pip_missing[@]}" -gt 0 ]; then
    log "installing Python packages: ${pip_missing[*]}"
    export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore PIP_NO_INPUT=1
    if ! python3 -m pip install -q "${pip_missing[@]}"; then
        # A Debian system Python (PEP 668) refuses plain installs.
        log "retrying with --break-system-packages"
        python3 -m pip install -q --break-system-packages "${pip_missing[@]}"
    fi
fi

# --- npm packages of the browser tests -------------------------------------------
# Only when node_modules lacks a pinned package (npm ci starts from scratch).
if ! (cd tests/browser && npm ls --depth=0 >/dev/null 2>&1); then
    log "installing the browser tests' npm packages (npm ci)"
    (cd tests/browser && npm ci --no-audit --no-fund --loglevel=error)
fi

# --- Build and test --------------------------------------------------------------
# The broker reads every TERN_* variable as a setting, so none may leak in from the
# caller (one it does not know, such as TERN_BIN, stops it at start-up).
mapfile -t tern_vars < <(compgen -e | grep '^TERN_' || true)
for var in "${tern_vars[@]}"; do
    unset "$var"
done
target_dir="${CARGO_TARGET_DIR:-$PWD/target}"
tern_bin="$target_dir/debug/tern"
failed=()

# Runs "$@" for at most $1 seconds; a run that overstays says so (timeout's
# status 124, or 137 once it had to kill), instead of ending silently.
bounded() {
    local secs=$1 status=0
    shift
    timeout --signal=TERM --kill-after=30 "$secs" "$@" || status=$?
    if [ "$status" -eq 124 ] || [ "$status" -eq 137 ]; then
        log "timed out after ${secs} s: $*"
    fi
    return "$status"
}

step "cargo build --workspace"
cargo build --workspace

step "cargo test --workspace"
cargo test --workspace --no-fail-fast || failed+=("cargo test --workspace")

step "pytest tests/interop (TERN_BIN=$tern_bin)"
# The interop tests bound every wait themselves; timeout is a backstop for a hang.
TERN_BIN="$tern_bin" bounded 900 \
    python3 -m pytest -q -p no:cacheprovider tests/interop || failed+=("pytest tests/interop")

step "pytest tests/cluster (real nats-server processes, several tern nodes)"
TERN_BIN="$tern_bin" bounded 900 \
    python3 -m pytest -q -p no:cacheprovider tests/cluster || failed+=("pytest tests/cluster")

step "browser tests (tests/browser: headless Chromium, stompjs and mqtt.js over WebSocket, the dashboard)"
TERN_BIN="$tern_bin" SCREENSHOT_DIR="$target_dir/browser-screenshots" bounded 600 \
    node --test --test-concurrency=1 tests/browser/browser.test.mjs tests/browser/dashboard_bridges.test.mjs || failed+=("browser tests")

step "Debian package (tests/package/test_deb.sh: build, dpkg -i, run as the unit does, purge)"
if [ "$(id -u)" -eq 0 ]; then
    # Builds the release binary (profile deb) in $CARGO_TARGET_DIR: a few minutes.
    bounded 1500 tests/package/test_deb.sh || failed+=("package test")
elif [ -n "$SUDO" ]; then
    $SUDO env CARGO_TARGET_DIR="$target_dir" PATH="$PATH" timeout --signal=TERM --kill-after=30 1500 \
        tests/package/test_deb.sh || failed+=("package test")
else
    log "the package test needs root or sudo (dpkg -i)"
    failed+=("package test (no root)")
fi

if [ "${#failed[@]}" -gt 0 ]; then
    log "FAILED: ${failed[*]}"
    exit 1
fi
log "all tests passed"
