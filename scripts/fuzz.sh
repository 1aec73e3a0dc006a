#!/usr/bin/env bash
# Fuzzes strata's parsers: every target in fuzz/fuzz_targets/ (config,
# manifest, time, rdb, chroma_export, wal_name, wal_history, incremental_tar, base_blocks; entry points
# in src/fuzzing.rs) for SECONDS each. Installs cargo-fuzz when missing.
# Exits non-zero when a target crashed (panic, overflow, timeout, OOM);
# the crashing input is in fuzz/artifacts/<target>/ — reproduce it with
# `RUSTC_BOOTSTRAP=1 cargo fuzz run -s none <target> <file>`, fix it, and
# add the input to fuzz/corpus/<target>/ as crash-<what> (the unit tests
# in src/fuzzing.rs replay the corpus in every `cargo test`).
#
#   scripts/fuzz.sh              # 300 s per target
#   scripts/fuzz.sh 20           # what CI runs (scripts/test.sh)
#   scripts/fuzz.sh 600 config   # only some targets
#
# Environment:
#   STRATA_FUZZ_TARGET_DIR  build dir (default /var/tmp/strata-fuzz-target,
#                           outside the clone so fresh CI clones reuse it)
#   STRATA_FUZZ_CORPUS      where the fuzzer keeps the inputs it finds
#                           (default /var/tmp/strata-fuzz-corpus; the
#                           committed seeds in fuzz/corpus/ are read too)
#   STRATA_FUZZ_SANITIZER   none (default: the targets are safe Rust; what
#                           is hunted is panics and overflows) or address
#
# Only a stable toolchain is needed: cargo fuzz's nightly flags are
# enabled with RUSTC_BOOTSTRAP=1.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO_ROOT=$PWD
: "${HOME:=$(getent passwd "$(id -u)" | cut -d: -f6)}"
export HOME
export PATH="$HOME/.cargo/bin:$PATH"

SECONDS_EACH=${1:-300}
shift || true
case $SECONDS_EACH in
'' | *[!0-9]*)
    echo "usage: scripts/fuzz.sh [SECONDS] [TARGET...]" >&2
    exit 2
    ;;
esac

T0=$SECONDS
step() { printf '==> [fuzz.sh +%ss] %s\n' "$((SECONDS - T0))" "$*"; }
die() { printf '==> [fuzz.sh] ERROR: %s\n' "$*" >&2; exit 1; }

command -v cargo >/dev/null || die "cargo is not installed"
if ! cargo fuzz --version >/dev/null 2>&1; then
    step "installing cargo-fuzz (cargo install, one-off, a few minutes)"
    (
        # one install at a time even if several runs start at once
        flock 9
        cargo fuzz --version >/dev/null 2>&1 ||
            env -u CARGO_TARGET_DIR cargo install cargo-fuzz --locked </dev/null
    ) 9>/var/tmp/strata-cargo-fuzz-install.lock
    cargo fuzz --version >/dev/null 2>&1 || die "cargo-fuzz install failed"
fi

export RUSTC_BOOTSTRAP=1
export CARGO_TARGET_DIR=${STRATA_FUZZ_TARGET_DIR:-/var/tmp/strata-fuzz-target}
CORPUS=${STRATA_FUZZ_CORPUS:-/var/tmp/strata-fuzz-corpus}
SANITIZER=${STRATA_FUZZ_SANITIZER:-none}

if [ $# -gt 0 ]; then
    TARGETS=("$@")
else
    TARGETS=()
    for f in fuzz/fuzz_targets/*.rs; do
        TARGETS+=("$(basename "$f" .rs)")
    done
fi

step "building ${#TARGETS[@]} fuzz target(s) (sanitizer $SANITIZER, CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"
(cd fuzz && cargo fuzz build -s "$SANITIZER" </dev/null) || die "the fuzz build failed"

LOGS=$CARGO_TARGET_DIR/strata-fuzz-logs
mkdir -p "$LOGS"
failed=()
for t in "${TARGETS[@]}"; do
    mkdir -p "$CORPUS/$t"
    step "$t: ${SECONDS_EACH}s"
    log=$LOGS/$t.log
    # a target's dictionary (its keywords) when it has one
    dict=()
    [ -f "fuzz/dict/$t.dict" ] && dict=(-dict="dict/$t.dict")
    rc=0
    # new inputs go to $CORPUS/$t (the first directory), never into the clone
    (cd fuzz && cargo fuzz run -s "$SANITIZER" "$t" "$CORPUS/$t" "corpus/$t" -- \
        -max_total_time="$SECONDS_EACH" -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 "${dict[@]}" </dev/null) >"$log" 2>&1 || rc=$?
    if [ "$rc" -eq 0 ]; then
        grep -E '^stat::number_of_executed_units|^Done [0-9]+ runs' "$log" | tail -1 || true
    else
        tail -n 60 "$log" >&2
        step "$t: CRASHED (exit $rc; full log $log, input in $REPO_ROOT/fuzz/artifacts/$t/)"
        failed+=("$t")
    fi
done

if [ ${#failed[@]} -gt 0 ]; then
    step "FAILED: ${failed[*]}"
    exit 1
fi
step "no target crashed"
