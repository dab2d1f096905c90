#!/usr/bin/env bash
# Release binaries and Debian packages for the ARM gateways (Raspberry Pi),
# built on Debian 12 x86-64 with Debian's own Rust compiler: rustc-web builds
# the ARM standard library from rust-web-src itself (-Zbuild-std, allowed on
# a stable compiler by RUSTC_BOOTSTRAP=1), the GNU cross toolchains link, and
# qemu-user runs what was built. rustup's toolchain cannot fetch ARM targets
# on these machines; it still builds the amd64 package.
#
# Usage: scripts/build-arm.sh [--target T]... [--test T]...
#   --target aarch64 (or arm64)  release binary and .deb for arm64 (Pi 3/4/5, 64-bit OS)
#            armv7 (or armhf)    ... for armhf (Pi 2/3/4/5 on a 32-bit OS)
#            amd64               ... for amd64, with the normal toolchain (cargo deb)
#            arm                 aarch64 and armv7 (the default without --target or --test)
#            all                 aarch64, armv7 and amd64
#   --test aarch64|armv7|all     the library's unit tests (cargo test --lib) for
#                                that target, run under qemu-user; with --test
#                                alone no release build is made
#   --profile NAME               build the packages with this Cargo profile
#                                (default release)
#   --prebuilt PATH              amd64 only: package this binary, already built,
#                                instead of building one (CI packages the one its
#                                integration tests ran, target/debug/fixgate)
#
# The ARM builds have their own target directory, target/arm (target/ stays
# the normal toolchain's). Packages land in target/debian/. Binaries built
# against Debian 12's glibc run on Raspberry Pi OS Bookworm (glibc 2.36) and
# later; the script prints the newest glibc symbol version each one needs.
# Installs what it needs when missing: the Debian packages below (apt) and
# cargo-deb (cargo install).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

usage() {
    sed -n '9,22p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

triple_of() {
    case $1 in
        aarch64 | arm64) echo aarch64-unknown-linux-gnu ;;
        armv7 | armhf) echo armv7-unknown-linux-gnueabihf ;;
        amd64 | x86_64) echo x86_64-unknown-linux-gnu ;;
        *) echo "unknown target: $1" >&2 && usage ;;
    esac
}

targets=()
tests=()
profile=release
prebuilt=""
while (($#)); do
    case $1 in
        --target)
            (($# >= 2)) || usage
            case $2 in
                all) targets+=(aarch64 armv7 amd64) ;;
                arm) targets+=(aarch64 armv7) ;;
                *) triple_of "$2" >/dev/null && targets+=("$2") ;;
            esac
            shift 2
            ;;
        --test)
            (($# >= 2)) || usage
            case $2 in
                all) tests+=(aarch64 armv7) ;;
                aarch64 | arm64 | armv7 | armhf) tests+=("$2") ;;
                *) echo "--test: aarch64, armv7 or all" >&2 && usage ;;
            esac
            shift 2
            ;;
        --profile)
            (($# >= 2)) || usage
            profile=$2
            shift 2
            ;;
        --prebuilt)
            (($# >= 2)) || usage
            prebuilt=$2
            shift 2
            ;;
        -h | --help) usage ;;
        *) echo "unknown argument: $1" >&2 && usage ;;
    esac
done
if ((${#targets[@]} == 0 && ${#tests[@]} == 0)); then
    targets=(aarch64 armv7)
fi

needs_arm=0
for t in "${targets[@]}" "${tests[@]}"; do
    [[ $(triple_of "$t") == x86_64-* ]] || needs_arm=1
done
if [[ -n $prebuilt ]]; then
    if [[ ${targets[*]} != amd64 && ${targets[*]} != x86_64 ]] || ((${#tests[@]})); then
        echo "--prebuilt goes with --target amd64 alone" >&2 && usage
    fi
    [[ -x $prebuilt ]] || { echo "--prebuilt: no executable at $prebuilt" >&2 && exit 1; }
fi

# --- what the builds need -------------------------------------------------

sudo=""
[[ $(id -u) -eq 0 ]] || sudo="sudo"
packages=(dpkg-dev)
if ((needs_arm)); then
    # The compiler (rustc-web and co.) is pinned below. The
    # libc6-dev-*-cross packages are only recommended by the cross
    # compilers, so they are named here.
    packages+=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross
        gcc-arm-linux-gnueabihf libc6-dev-armhf-cross
        qemu-user)
fi
# The ARM builds double as the rust-version check: they use Debian 12's
# rustc-web 1.85, the compiler fixgate promises to build with (Cargo.toml's
# rust-version), not the newer one bookworm-security may carry. Its
# packages must all be the same version. If the archive no longer has it, the
# build goes on with what is installed and says so.
debian_rust=${FIXGATE_DEBIAN_RUST:-1.85.0+dfsg3-1~deb12u3}
pin_debian_rust() {
    local have
    have=$(dpkg-query -W -f='${Version}' rustc-web 2>/dev/null || true)
    if [[ $have == "$debian_rust" ]]; then
        return
    fi
    in_archive() { apt-cache madison rustc-web 2>/dev/null | grep -qF " $debian_rust "; }
    in_archive || $sudo apt-get update -qq
    if in_archive; then
        echo "installing: rustc-web, cargo-web, rust-web-src $debian_rust (was ${have:-none})"
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
            --allow-downgrades "rustc-web=$debian_rust" "cargo-web=$debian_rust" \
            "rust-web-src=$debian_rust" "libstd-rust-web-dev=$debian_rust"
    else
        echo "WARNING: rustc-web $debian_rust is not in the archive; building with ${have:-nothing}," \
            "so this build does not check rust-version (set FIXGATE_DEBIAN_RUST to pin another)" >&2
    fi
}

missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    echo "installing: ${missing[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
if ((needs_arm)); then
    pin_debian_rust
fi
if ((${#targets[@]})) && ! cargo deb --version >/dev/null 2>&1; then
    echo "installing: cargo-deb (cargo install)"
    cargo install cargo-deb --version 3.8.0 --locked
fi

# Debian's compiler, named by path: rustup's rustc and cargo come first on
# PATH. Host tools (build scripts, proc macros) are built by it too.
debian_cargo() {
    env RUSTC=/usr/bin/rustc RUSTC_BOOTSTRAP=1 CARGO_TARGET_DIR="$root/target/arm" \
        CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc \
        CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64 -L /usr/aarch64-linux-gnu" \
        CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc \
        AR_aarch64_unknown_linux_gnu=aarch64-linux-gnu-ar \
        CARGO_TARGET_ARMV7_UNKNOWN_LINUX_GNUEABIHF_LINKER=arm-linux-gnueabihf-gcc \
        CARGO_TARGET_ARMV7_UNKNOWN_LINUX_GNUEABIHF_RUNNER="qemu-arm -L /usr/arm-linux-gnueabihf" \
        CC_armv7_unknown_linux_gnueabihf=arm-linux-gnueabihf-gcc \
        AR_armv7_unknown_linux_gnueabihf=arm-linux-gnueabihf-ar \
        /usr/bin/cargo "$@"
}

# The GNU triple of the cross binutils and the qemu sysroot.
gnu_of() {
    case $1 in
        aarch64-*) echo aarch64-linux-gnu ;;
        armv7-*) echo arm-linux-gnueabihf ;;
        x86_64-*) echo x86_64-linux-gnu ;;
    esac
}
qemu_of() {
    case $1 in
        aarch64-*) echo "qemu-aarch64 -L /usr/aarch64-linux-gnu" ;;
        armv7-*) echo "qemu-arm -L /usr/arm-linux-gnueabihf" ;;
    esac
}

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.0f s", b - a }'; }
mib() { awk -v n="$1" 'BEGIN { printf "%.2f MiB", n / 1048576 }'; }

summary=()
if ((needs_arm)); then
    summary+=("compiler for the ARM builds: $(/usr/bin/rustc --version)")
fi

# --- unit tests under qemu --------------------------------------------------

for t in "${tests[@]}"; do
    triple=$(triple_of "$t")
    echo "== unit tests (cargo test --lib) for $triple under $(qemu_of "$triple")"
    start=$(now)
    # The arm-test profile (Cargo.toml) keeps the build short: see there.
    # The standard library, built from source here, is optimised like the
    # dependencies the slow tests use (a profile override for these names
    # only in Cargo.toml would warn in every other build).
    std_opt=()
    for crate in std core alloc; do
        std_opt+=(--config "profile.arm-test.package.$crate.opt-level=2")
    done
    debian_cargo test --locked --lib -p fixgate -p fixgate-wire --profile arm-test -Zbuild-std --target "$triple" "${std_opt[@]}"
    summary+=("unit tests $triple: passed in $(since "$start") (build and run)")
done

# --- release binaries and packages -----------------------------------------

mkdir -p target/debian
for t in "${targets[@]}"; do
    triple=$(triple_of "$t")
    start=$(now)
    if [[ $triple == x86_64-* ]]; then
        if [[ -n $prebuilt ]]; then
            # cargo-deb takes a binary from target/<profile>/ only, and
            # refuses the dev profile; a profile directory of our own holds
            # the copy (cargo-deb strips it like a release one).
            echo "== package for $triple of the prebuilt $prebuilt"
            profile=prebuilt
            mkdir -p target/prebuilt
            cp "$prebuilt" target/prebuilt/fixgate
            cargo deb --locked --no-build --profile prebuilt --output target/debian/
        else
            echo "== $profile build and package for $triple (rustup toolchain)"
            cargo deb --locked --profile "$profile" --output target/debian/
        fi
        bin=target/$profile/fixgate
    else
        echo "== $profile build for $triple (Debian's rustc, -Zbuild-std)"
        debian_cargo build --locked --profile "$profile" -Zbuild-std --target "$triple"
        bin=target/arm/$triple/$profile/fixgate
        built=$(since "$start")
        echo "== package for $triple"
        # cargo-deb packages what was just built (--no-build) from the same
        # target directory and strips it with the cross strip
        # (/usr/bin/<gnu triple>-strip, which it finds by itself; named here
        # so that a missing one is an error rather than a skipped strip).
        env CARGO_TARGET_DIR="$root/target/arm" "STRIP_$triple=/usr/bin/$(gnu_of "$triple")-strip" \
            cargo deb --no-build --profile "$profile" --target "$triple" --output target/debian/
        echo "built in $built"
    fi
    arch=$(dpkg-architecture -qDEB_HOST_ARCH -t "$(gnu_of "$triple")" 2>/dev/null)
    deb=$(ls -t target/debian/fixgate_*_"$arch".deb | head -n1)
    shipped=$(dpkg-deb --fsys-tarfile "$deb" | tar -xO ./usr/bin/fixgate | wc -c)
    deb_size=$(stat -c %s "$deb")
    glibc=$("$(gnu_of "$triple")-objdump" -T "$bin" | grep -o 'GLIBC_[0-9.]*' | sort -uV | tail -n1)
    summary+=("$triple: $deb ($deb_size bytes, $(mib "$deb_size")); /usr/bin/fixgate stripped $shipped bytes ($(mib "$shipped")); needs $glibc; $(since "$start") in all")
    if [[ $triple != x86_64-* ]]; then
        # The binary starts and reads the installed default configuration.
        # shellcheck disable=SC2046 # the qemu command is two words and a path
        $(qemu_of "$triple") "$bin" --version
        # shellcheck disable=SC2046
        $(qemu_of "$triple") "$bin" check-config config/fixgate.toml
    fi
done

echo
echo "== summary"
printf '%s\n' "${summary[@]}"
