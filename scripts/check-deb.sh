#!/usr/bin/env bash
# Checks a fixgate Debian package: its contents and maintainer scripts (the
# man pages render, the bash completion completes), then,
# when it is for this machine's architecture, installs it for real, checks the
# access tokens its postinst made, runs the installed binary on the installed
# configuration (from a network namespace of its own, anonymous reads are
# refused and the tokens work), reinstalls it over a locally edited
# configuration (the tokens stay), removes and purges it (the tokens go).
# Needs root (or sudo), iproute2 and curl, and no fixgate installed
# beforehand. Exits non-zero on the first failure, after purging what it
# installed.
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
netns_made=0
daemon=""
cleanup() {
    local rc=$?
    if [[ -n $daemon ]]; then
        $sudo kill -TERM "$daemon" 2>/dev/null || true
        wait "$daemon" 2>/dev/null || true
    fi
    if ((netns_made)); then
        $sudo ip netns del "fixgate-deb-$$" 2>/dev/null || true
    fi
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
# The access tokens are made before the unit is started (its LoadCredential=
# needs them), and only where none is.
token_line=$(grep -n 'fixgate token --out' "$work/control/postinst" | head -n1 | cut -d: -f1)
start_line=$(grep -n 'deb-systemd-invoke' "$work/control/postinst" | head -n1 | cut -d: -f1)
[[ -n $token_line && -n $start_line && $token_line -lt $start_line ]] ||
    fail "postinst does not make the access tokens before it starts $unit"
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

check "man pages and completions"
man1=./usr/share/man/man1
completions=(./usr/share/bash-completion/completions/fixgate ./usr/share/zsh/vendor-completions/_fixgate
    ./usr/share/fish/vendor_completions.d/fixgate.fish)
for want in $man1/fixgate.1.gz "${completions[@]}"; do
    grep -qx "$want" <<<"$paths" || fail "missing $want"
done
dpkg-deb -x "$deb" "$work/root"
page=$(gzip -dc "$work/root/$man1/fixgate.1.gz") || fail "$man1/fixgate.1.gz is not gzip"
grep -q '^\.TH fixgate 1 ' <<<"$page" || fail "fixgate.1 has no .TH fixgate 1 line"
# The page of the version packaged (a stale one would name another).
version=$(dpkg-deb -f "$deb" Version)
grep -qF "\"fixgate ${version%-*}\"" <<<"$page" || fail "fixgate.1 is not the page of fixgate ${version%-*}"
grep -q '^\.SH EXAMPLES' <<<"$page" || fail "fixgate.1 has no EXAMPLES"
# A page for every command the root page lists.
commands=$(grep -o '^fixgate\\-[a-z\\-]*(1)$' <<<"$page" | sed -e 's/\\-/-/g' -e 's/(1)$//')
[[ -n $commands ]] || fail "fixgate.1 lists no commands"
for command in $commands; do
    grep -qx "$man1/$command.1.gz" <<<"$paths" || fail "no man page for $command"
done
echo "man pages: fixgate.1 (fixgate ${version%-*}) and $(wc -w <<<"$commands") commands:" $commands
# As man renders it (-k: preconv, for the UTF-8 in the text).
if command -v groff >/dev/null; then
    for name in fixgate $commands; do
        warnings=$(gzip -dc "$work/root/$man1/$name.1.gz" | groff -k -man -Tutf8 -ww -z 2>&1) || true
        [[ -z $warnings ]] || fail "groff warns about $name.1: $warnings"
    done
    echo "groff renders every page without a warning"
fi
# bash: the completion registers a function for fixgate that offers its commands.
offered=$(bash -c 'source "$1" && complete -p fixgate >/dev/null &&
    COMP_WORDS=(fixgate ch) COMP_CWORD=1 COMP_LINE="fixgate ch" COMP_POINT=10 &&
    "$(complete -p fixgate | grep -o -- "-F [^ ]*" | cut -c4-)" fixgate ch fixgate &&
    printf "%s\n" "${COMPREPLY[@]}"' _ "$work/root/usr/share/bash-completion/completions/fixgate") ||
    fail "the bash completion does not load"
grep -qx check-config <<<"$offered" || fail "the bash completion does not offer check-config for 'fixgate ch': $offered"
grep -q '^#compdef fixgate' "$work/root/usr/share/zsh/vendor-completions/_fixgate" || fail "_fixgate is no zsh completion"
grep -q '^complete -c fixgate ' "$work/root/usr/share/fish/vendor_completions.d/fixgate.fish" || fail "fixgate.fish is no fish completion"
echo "completions: bash offers check-config for 'fixgate ch'; zsh and fish files in place"

check "stripped binary"
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
# Where man looks (unless dpkg was told to leave man pages out, as slim images are).
if command -v man >/dev/null && [[ -e /usr/share/man/man1/fixgate.1.gz ]]; then
    [[ $(man -w fixgate) == /usr/share/man/man1/fixgate.1.gz ]] || fail "man -w fixgate: $(man -w fixgate 2>&1)"
    man fixgate 2>/dev/null | grep -q 'fixgate check-config /etc/fixgate/fixgate.toml' || fail "man fixgate shows no examples"
    echo "man fixgate: /usr/share/man/man1/fixgate.1.gz, with its examples"
fi

check "generated access tokens"
tokens=/etc/fixgate/tokens
[[ $(stat -c '%a %U %G' "$tokens") == "750 root root" ]] || fail "$tokens is $(stat -c '%a %U %G' "$tokens"), not 750 root root"
for name in read write; do
    file=$tokens/$name.token
    [[ -f $file ]] || fail "no $file"
    [[ $(stat -c '%a %U %G' "$file") == "640 root root" ]] || fail "$file is $(stat -c '%a %U %G' "$file"), not 640 root root"
    [[ $(tr -d '\n' <"$file" | wc -c) -eq 43 ]] || fail "$file does not hold a 43-character token"
    grep -q "^LoadCredential=$name.token:$file\$" "/usr/lib/systemd/system/$unit" || fail "$unit does not load $file"
done
cmp -s "$tokens/read.token" "$tokens/write.token" && fail "the read and write tokens are the same"
sha256sum "$tokens"/*.token >"$work/tokens.sha256"
ls -l "$tokens"
# As the service sees them: the credentials directory.
CREDENTIALS_DIRECTORY=$tokens /usr/bin/fixgate check-config "$conffile" 2>"$work/check.err" ||
    { cat "$work/check.err"; fail "check-config with the credentials exited $?"; }
if grep -q "not checked" "$work/check.err"; then fail "check-config did not read the credentials"; fi
echo "check-config with CREDENTIALS_DIRECTORY=$tokens: exit 0, both tokens read"

check "anonymous reads from another host are refused, the generated tokens work"
# The installed binary on the installed configuration (the credentials as
# the service gets them), with its port moved to a free one, the store to a
# scratch directory and MQTT off, so that nothing of the machine's is used.
# A client in a network namespace of our own, joined by a veth pair
# (198.18.0.0/15, a range for test networks), reaches it from an address
# that is not loopback, as a screen on the depot LAN would.
ns=fixgate-deb-$$
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
sed -e "s|^listen = \"0.0.0.0:8080\"|listen = \"0.0.0.0:$port\"|" \
    -e "s|^path = \"/var/lib/fixgate/store\"|path = \"$work/store\"|" \
    -e 's|^broker = "embedded"|broker = "off"|' "$conffile" >"$work/lan.toml"
grep -q "0.0.0.0:$port" "$work/lan.toml" || fail "could not move the port in a copy of $conffile"
$sudo ip netns add "$ns"
netns_made=1
$sudo ip link add "fgd$$" type veth peer name "fgn$$"
$sudo ip link set "fgn$$" netns "$ns"
$sudo ip addr add 198.18.255.1/30 dev "fgd$$"
$sudo ip link set "fgd$$" up
$sudo ip netns exec "$ns" ip addr add 198.18.255.2/30 dev "fgn$$"
$sudo ip netns exec "$ns" ip link set "fgn$$" up
$sudo env CREDENTIALS_DIRECTORY="$tokens" /usr/bin/fixgate run --config "$work/lan.toml" 2>"$work/lan.log" &
daemon=$!
for _ in $(seq 100); do
    curl -fsS -o /dev/null "http://127.0.0.1:$port/healthz" 2>/dev/null && break
    sleep 0.1
done
curl -fsS -o /dev/null "http://127.0.0.1:$port/healthz" || { cat "$work/lan.log"; fail "the daemon did not come up"; }
lan() { # PATH [curl args]: the status of a request from the test host
    local path=$1
    shift
    $sudo ip netns exec "$ns" curl -sS --max-time 10 -o /dev/null -w '%{http_code}' "$@" "http://198.18.255.1:$port$path"
}
read_token=$(cat "$tokens/read.token")
write_token=$(cat "$tokens/write.token")
fix="{\"device\":\"deb-check-1\",\"lat\":52.1,\"lon\":5.1,\"time\":$(date +%s)000}"
expect() { # WANT GOT WHAT
    [[ $2 == "$1" ]] || { cat "$work/lan.log"; fail "$3: $2, not $1"; }
    echo "$3: $2"
}
expect 200 "$(lan /healthz)" "anonymous /healthz from the test host"
expect 401 "$(lan /api/devices)" "anonymous /api/devices from the test host"
expect 401 "$(lan /events)" "anonymous /events from the test host"
expect 401 "$(lan /metrics)" "anonymous /metrics from the test host"
expect 401 "$(lan /api/fixes -X POST -H 'Content-Type: application/json' --data "$fix")" "anonymous POST /api/fixes from the test host"
expect 200 "$(lan /api/devices -H "Authorization: Bearer $read_token")" "/api/devices with the read token"
expect 200 "$(lan /metrics -H "Authorization: Bearer $read_token")" "/metrics with the read token"
expect 403 "$(lan /api/fixes -X POST -H "Authorization: Bearer $read_token" -H 'Content-Type: application/json' --data "$fix")" "POST /api/fixes with the read token"
expect 200 "$(lan /api/fixes -X POST -H "Authorization: Bearer $write_token" -H 'Content-Type: application/json' --data "$fix")" "POST /api/fixes with the write token"
expect 403 "$(lan /api/devices -H "Authorization: Bearer $write_token")" "/api/devices with the write token"
expect 200 "$(curl -sS -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/api/devices")" "anonymous /api/devices on loopback"
if grep -Fq -e "$read_token" -e "$write_token" "$work/lan.log"; then fail "a token is in the daemon's log"; fi
$sudo kill -TERM "$daemon"
wait "$daemon" || fail "the daemon exited $? on SIGTERM"
daemon=""
$sudo ip netns del "$ns"
netns_made=0

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
sha256sum -c --quiet "$work/tokens.sha256" || fail "the reinstall replaced the access tokens"
/usr/bin/fixgate check-config "$conffile" || fail "check-config after the reinstall exited $?"
[[ -L $wants ]] || fail "$unit no longer enabled after the reinstall"

check "dpkg -r"
$sudo dpkg -r fixgate
dpkg-query -W -f='${Status}\n' fixgate | grep -qx "deinstall ok config-files" || fail "status after remove: $(dpkg-query -W -f='${Status}' fixgate)"
[[ ! -e /usr/bin/fixgate ]] || fail "/usr/bin/fixgate is still there"
[[ -f $conffile ]] || fail "remove deleted the conffile (only purge may)"
sha256sum -c --quiet "$work/tokens.sha256" || fail "remove deleted or changed the access tokens (only purge may)"
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
