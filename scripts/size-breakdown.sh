#!/usr/bin/env bash
# Where a release binary's code goes, per crate, from its symbol table: a
# cargo-bloat-style breakdown that works for any target's binary (cargo bloat
# itself needs to drive the build, which the ARM cross-build does not allow).
# A function's crate is the first path segment of its demangled name (for
# `<a::T as b::Trait>::f`, the crate of the type); symbols without a Rust
# path (C code, libc stubs) are counted as "[C/other]". Generic code is
# counted in the crate that defines it, not the one that instantiated it.
#
# Usage: scripts/size-breakdown.sh BINARY [NM] [TOP]
#   BINARY  an unstripped (symbols kept) binary, e.g. target/release/fixgate
#   NM      the target's nm (default nm; aarch64-linux-gnu-nm for arm64)
#   TOP     how many crates to list (default 25)
set -euo pipefail
bin=${1:?usage: $0 BINARY [NM] [TOP]}
nm_tool=${2:-nm}
top=${3:-25}
"$nm_tool" --print-size --size-sort --radix=d --demangle=rust "$bin" |
    awk -v top="$top" '
        $3 ~ /^[tTwW]$/ {
            size = $2 + 0
            name = $0
            sub(/^[^ ]+ [^ ]+ [^ ]+ /, "", name)
            sub(/^</, "", name)
            sub(/^&(mut )?/, "", name)
            crate = name
            if (match(crate, /^[A-Za-z_][A-Za-z0-9_]*::/)) {
                crate = substr(crate, 1, RLENGTH - 2)
            } else {
                crate = "[C/other]"
            }
            by[crate] += size
            total += size
        }
        END {
            n = 0
            for (c in by) { order[++n] = c }
            # insertion sort by size, largest first (n is small)
            for (i = 2; i <= n; i++) {
                c = order[i]; j = i - 1
                while (j > 0 && by[order[j]] < by[c]) { order[j + 1] = order[j]; j-- }
                order[j + 1] = c
            }
            printf "%10s %6s  %s\n", "bytes", "share", "crate"
            shown = 0
            for (i = 1; i <= n && i <= top; i++) {
                printf "%10d %5.1f%%  %s\n", by[order[i]], 100 * by[order[i]] / total, order[i]
                shown += by[order[i]]
            }
            printf "%10d %5.1f%%  (%d more crates)\n", total - shown, 100 * (total - shown) / total, (n > top ? n - top : 0)
            printf "%10d 100.0%%  functions in all\n", total
        }'
