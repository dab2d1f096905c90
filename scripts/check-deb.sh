#!/usr/bin/env bash
# Checks a fixgate Debian package: its contents and maintainer scripts, then,
# when it is for this machine's architecture, installs it for real, runs the
# installed binary on the installed configuration, reinstalls it over a
# locally edited configuration, removes and purges it. Needs root (or sudo)
# and no fixgate installed beforehand. Exits non-zero on the first failure,
# after purging what it installed.
#
# Usage: scripts/check-deb.sh target/debian/fixgate_<version>_<arch>.deb
#
# Packages for another architecture (arm64, armhf on an x86-64 machine) get
# the content checks only; the script says so.
set -euo pipefail

(($# == 1)) || { echo "usage: $0 PACKAGE.deb" >&2 && exit 2; }
deb=$(realpath "$1")
[[ -f $deb ]] || { echo "$0: no such file: $1" >&2 && exit 2; }

sudo=""
[[ $(id -u) -eq 0 ]] || sudo="sudo"

conffile=/etc/fixgate/fixgate.toml
unit=fixgate.service
step=""
fail() {
    echo "FAILED ($step): $*" >&2
    exit 1
}
check() {
    step=$1
    echo "-- $step"
}

work=$(mktemp -d)
installed_by_us=0
cleanup() {
    local rc=$?
    if ((installed_by_us)) && dpkg-query -W -f='${Status}' fixgate 2>/dev/null | grep -qv "not-installed"; then
        echo "purging fixgate after the failure" >&2
        $sudo dpkg -P fixgate >&2 || true
    fi
    rm -rf "$work"
    exit "$rc"
}
trap cleanup EXIT

# --- contents ----------------------------------------------------------------

check "control fields"
dpkg-deb -I "$deb"
[[ $(dpkg-deb -f "$deb" Package) == fixgate ]] || fail "Package is not fixgate"
arch=$(dpkg-deb -f "$deb" Architecture)
for field in Version Maintainer Section Priority Description; do
    [[ -n $(dpkg-deb -f "$deb" "$field") ]] || fail "no $field field"
done
if [[ $arch == "$(dpkg --print-architecture)" ]]; then
    dpkg-deb -f "$deb" Depends | grep -q 'libc6' || fail "Depends does not name libc6"
fi

check "conffiles"
dpkg-deb -e "$deb" "$work/control"
cat "$work/control/conffiles"
grep -qx "$conffile" "$work/control/conffiles" || fail "$conffile is not a conffile"

check "maintainer scripts"
for script in postinst prerm postrm; do
    [[ -x $work/control/$script ]] || fail "no executable $script"
    sh -n "$work/control/$script" || fail "$script is not valid sh"
done
grep -q "deb-systemd-helper enable $unit" "$work/control/postinst" || fail "postinst does not enable $unit"
grep -q "deb-systemd-invoke" "$work/control/postinst" || fail "postinst does not start $unit"
# Starting is left out where systemd does not run (chroots, image builds).
grep -q '\[ -d /run/systemd/system \]' "$work/control/postinst" || fail "postinst starts without checking for systemd"
# Exactly once: cargo-deb substitutes every copy of the debhelper token.
[[ $(grep -c "deb-systemd-helper purge $unit" "$work/control/postrm") == 1 ]] ||
    fail "postrm does not purge the unit's state exactly once"
if grep -q '#DEBHELPER#' "$work"/control/p*; then fail "a debhelper token was left unreplaced"; fi

check "files"
dpkg-deb -c "$deb" | tee "$work/contents"
paths=$(awk '{ print $NF }' "$work/contents")
for want in ./usr/bin/fixgate ./usr/lib/systemd/system/$unit ./etc/fixgate/fixgate.toml \
    ./usr/share/doc/fixgate/examples/fences.example.geojson ./usr/share/doc/fixgate/copyright; do
    grep -qx "$want" <<<"$paths" || fail "missing $want"
done
# systemd makes the state directory (DynamicUser=yes, StateDirectory=fixgate).
if grep -q '^\./var/lib' <<<"$paths"; then fail "ships something under /var/lib"; fi
grep -Eq '^-rwxr-xr-x (root/root|0/0) .* \./usr/bin/fixgate$' "$work/contents" || fail "/usr/bin/fixgate is not root's 0755"

check "stripped binary"
dpkg-deb -x "$deb" "$work/root"
sections=$(readelf -S -W "$work/root/usr/bin/fixgate")
if grep -Eq '\.(symtab|debug_info)\b' <<<"$sections"; then fail "/usr/bin/fixgate is not stripped"; fi
echo "/usr/bin/fixgate: $(stat -c %s "$work/root/usr/bin/fixgate") bytes, no symbol table, no debug info"

check "unit file"
# systemd-analyze verify runs on the installed unit below (it wants the
# ExecStart binary in place).
cmp "$work/root/usr/lib/systemd/system/$unit" "$(dirname "$0")/../systemd/$unit" ||
    echo "note: the packaged unit differs from systemd/$unit in this checkout"

if [[ $arch != "$(dpkg --print-architecture)" ]]; then
    echo "== $deb: content checks passed; not installed ($arch package on a $(dpkg --print-architecture) machine)"
    exit 0
fi

# --- install, use, reinstall, remove, purge ----------------------------------

check "not installed beforehand"
if dpkg-query -W -f='${Status}' fixgate 2>/dev/null | grep -qv "not-installed"; then
    fail "fixgate is already installed ($(dpkg-query -W -f='${Version} ${Status}' fixgate)); purge it first"
fi
state_before=0
[[ -e /var/lib/fixgate || -e /var/lib/private/fixgate ]] && state_before=1

check "dpkg -i"
installed_by_us=1
$sudo dpkg -i "$deb"
dpkg-query -W -f='${Status}\n' fixgate | grep -qx "install ok installed" || fail "not installed"

check "installed binary and configuration"
/usr/bin/fixgate --version
/usr/bin/fixgate check-config "$conffile" || fail "check-config $conffile exited $?"
echo "check-config $conffile: exit 0"

check "dpkg -L"
dpkg -L fixgate
dpkg -L fixgate | grep -qx /usr/bin/fixgate || fail "dpkg -L lacks /usr/bin/fixgate"

check "Conffiles"
dpkg-query -W -f='${Conffiles}\n' fixgate | tee "$work/conffiles"
grep -Eq "^ $conffile [0-9a-f]{32}$" "$work/conffiles" || fail "$conffile not registered as a conffile"

check "unit enabled"
wants=/etc/systemd/system/multi-user.target.wants/$unit
[[ -L $wants ]] || fail "$wants is not a symlink (deb-systemd-helper enable)"
ls -l "$wants"
if command -v systemd-analyze >/dev/null; then
    systemd-analyze verify "/usr/lib/systemd/system/$unit" || fail "systemd-analyze verify"
    echo "systemd-analyze verify: clean"
fi
if [[ -d /run/systemd/system ]]; then
    echo "systemd runs here: the postinst started $unit"
else
    echo "systemd is not running here (PID 1 is $(cat /proc/1/comm)): the postinst skipped the start"
fi
if ((!state_before)) && [[ -e /var/lib/fixgate ]] && [[ ! -d /run/systemd/system ]]; then
    fail "/var/lib/fixgate exists although the service never ran"
fi

check "reinstall keeps a local configuration change"
echo "# local change by check-deb.sh" | $sudo tee -a "$conffile" >/dev/null
$sudo dpkg -i --force-confdef --force-confold "$deb"
tail -n1 "$conffile" | grep -qx "# local change by check-deb.sh" || fail "the local change to $conffile was lost"
/usr/bin/fixgate check-config "$conffile" || fail "check-config after the reinstall exited $?"
[[ -L $wants ]] || fail "$unit no longer enabled after the reinstall"

check "dpkg -r"
$sudo dpkg -r fixgate
dpkg-query -W -f='${Status}\n' fixgate | grep -qx "deinstall ok config-files" || fail "status after remove: $(dpkg-query -W -f='${Status}' fixgate)"
[[ ! -e /usr/bin/fixgate ]] || fail "/usr/bin/fixgate is still there"
[[ -f $conffile ]] || fail "remove deleted the conffile (only purge may)"
[[ ! -e $wants ]] || fail "$wants is still there"

check "dpkg -P"
$sudo dpkg -P fixgate
installed_by_us=0
if dpkg-query -W -f='${Status}' fixgate 2>/dev/null | grep -qv "not-installed"; then
    fail "still known to dpkg: $(dpkg-query -W -f='${Status}' fixgate)"
fi
[[ ! -e /etc/fixgate ]] || fail "/etc/fixgate is still there"
leftover=$(find /etc/systemd/system /var/lib/systemd/deb-systemd-helper-enabled \
    /var/lib/systemd/deb-systemd-helper-masked -name "$unit*" 2>/dev/null || true)
[[ -z $leftover ]] || fail "systemd state left behind: $leftover"

echo "== $deb: all checks passed"
