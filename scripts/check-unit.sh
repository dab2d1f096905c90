#!/usr/bin/env bash
# Checks the systemd unit as CI must: `systemd-analyze verify` clean, and
# `systemd-analyze security` exposure at or below 1.5. Neither needs systemd
# running as PID 1. verify also checks that ExecStart's binary exists, so the
# unit is checked as installed when /usr/bin/fixgate is there, else against
# the binary given (default: target/debug/fixgate).
# Usage: scripts/check-unit.sh [UNIT] [BINARY]
set -euo pipefail
cd "$(dirname "$0")/.."
unit=${1:-systemd/fixgate.service}
binary=${2:-target/debug/fixgate}
# Exposure is given in tenths: 15 is 1.5.
threshold=15

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp "$unit" "$work/fixgate.service"
if ! grep -q '^ExecStart=/usr/bin/fixgate ' "$unit"; then
    echo "check-unit: $unit does not run /usr/bin/fixgate" >&2
    exit 1
fi
if [[ ! -x /usr/bin/fixgate ]]; then
    [[ -x $binary ]] || { echo "check-unit: no $binary to stand in for /usr/bin/fixgate" >&2; exit 1; }
    sed -i "s|^ExecStart=/usr/bin/fixgate |ExecStart=$(realpath "$binary") |" "$work/fixgate.service"
fi

# verify prints problems but may still exit 0 for some: any output fails.
out=$(systemd-analyze verify "$work/fixgate.service" 2>&1) || { echo "$out"; exit 1; }
if [[ -n $out ]]; then
    echo "systemd-analyze verify is not clean:"
    echo "$out"
    exit 1
fi
echo "systemd-analyze verify: clean"
if ! systemd-analyze security --offline=true --threshold=$threshold "$work/fixgate.service" >"$work/security.txt" 2>&1; then
    cat "$work/security.txt"
    echo "systemd-analyze security: exposure above 1.5"
    exit 1
fi
grep 'Overall exposure level' "$work/security.txt"
