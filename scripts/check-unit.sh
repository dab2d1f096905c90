#!/usr/bin/env bash
# Checks the systemd units as CI must: `systemd-analyze verify` clean, and
# `systemd-analyze security` exposure at or below 1.5. Neither needs systemd
# running as PID 1. verify also checks that ExecStart's binary exists, so a
# unit is checked as installed when its /usr/bin binary is there, else
# against the binary given (default: target/debug/<the binary's name>).
# Without arguments both units are checked: the daemon's
# (systemd/fixgate.service) and the cloud receiver's
# (systemd/fixgate-receive.service), and the example drop-in for Debian's
# chrony.service (packaging/chrony/) against that unit when chrony is
# installed.
# Usage: scripts/check-unit.sh [UNIT [BINARY]]
set -euo pipefail
cd "$(dirname "$0")/.."
# Exposure is given in tenths: 15 is 1.5.
threshold=15

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# check_unit UNIT [BINARY]
check_unit() {
    local unit=$1 name program binary copy out
    name=$(basename "$unit")
    # The program ExecStart runs: /usr/bin/fixgate, /usr/bin/fixgate-receive.
    program=$(sed -n 's|^ExecStart=\(/usr/bin/[^ ]*\) .*|\1|p' "$unit" | head -n1)
    if [[ -z $program ]]; then
        echo "check-unit: $unit runs nothing from /usr/bin" >&2
        return 1
    fi
    binary=${2:-target/debug/$(basename "$program")}
    copy="$work/$name"
    cp "$unit" "$copy"
    if [[ ! -x $program ]]; then
        [[ -x $binary ]] || { echo "check-unit: no $binary to stand in for $program" >&2; return 1; }
        sed -i "s|^ExecStart=$program |ExecStart=$(realpath "$binary") |" "$copy"
    fi
    # An EnvironmentFile= that is not there yet (a build machine) is no
    # fault of the unit: verify does not read it, and the checks below do
    # not need its values.

    # verify prints problems but may still exit 0 for some: any output fails.
    out=$(systemd-analyze verify "$copy" 2>&1) || { echo "$out"; return 1; }
    if [[ -n $out ]]; then
        echo "systemd-analyze verify $name is not clean:"
        echo "$out"
        return 1
    fi
    echo "systemd-analyze verify $name: clean"
    if ! systemd-analyze security --offline=true --threshold=$threshold "$copy" >"$work/security.txt" 2>&1; then
        cat "$work/security.txt"
        echo "systemd-analyze security $name: exposure above 1.5"
        return 1
    fi
    grep "Overall exposure level" "$work/security.txt"
}

# check_dropin: the chrony drop-in parses cleanly on Debian's chrony.service
# (verify reads drop-ins from a unit directory given in SYSTEMD_UNIT_PATH).
check_dropin() {
    local chrony=/lib/systemd/system/chrony.service dir="$work/units" out
    if [[ ! -f $chrony ]]; then
        echo "check-unit: chrony is not installed: packaging/chrony/fixgate-socket.conf not checked"
        return 0
    fi
    mkdir -p "$dir/chrony.service.d"
    cp "$chrony" "$dir/"
    cp packaging/chrony/fixgate-socket.conf "$dir/chrony.service.d/"
    out=$(SYSTEMD_UNIT_PATH="$dir:" systemd-analyze verify --man=no chrony.service 2>&1) || { echo "$out"; return 1; }
    if [[ -n $out ]]; then
        echo "systemd-analyze verify chrony.service + fixgate-socket.conf is not clean:"
        echo "$out"
        return 1
    fi
    echo "systemd-analyze verify chrony.service + fixgate-socket.conf: clean"
}

if [[ $# -gt 0 ]]; then
    check_unit "$@"
else
    check_unit systemd/fixgate.service
    check_unit systemd/fixgate-receive.service
    check_dropin
fi
