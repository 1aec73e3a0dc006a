#!/usr/bin/env bash
# Runs the whole strata test suite. The one command for developers and CI
# (.ci/run): on a fresh Debian 12 machine it installs what the tests need
# first; every step is skipped quickly when already done.
#
#   scripts/test.sh                       # everything
#   scripts/test.sh --test harness_smoke  # extra args go to `cargo test`
#
# Environment:
#   CARGO_TARGET_DIR      build dir (default /var/tmp/strata-target, kept
#                         outside the clone so fresh CI clones reuse it)
#   STRATA_TEST_CHROMA=1  also set up the ChromaDB venv (automatic once
#                         tests/chroma*.rs exist)
#   STRATA_CHROMA_VENV    where that venv lives (/var/tmp/strata-chroma-venv)
#   STRATA_MOTO_VENV      moto[server] venv for the S3 Object Lock tests
#                         (/var/tmp/strata-moto-venv)
#   STRATA_TEST_KEEP=1    keep test servers' temp dirs (for debugging)
#   STRATA_FUZZ_SECONDS   seconds per fuzz target after the tests (default
#                         20; 0 skips; see scripts/fuzz.sh)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO_ROOT=$PWD
export DEBIAN_FRONTEND=noninteractive
: "${HOME:=$(getent passwd "$(id -u)" | cut -d: -f6)}"
export HOME
export PATH="$HOME/.cargo/bin:$PATH"

T0=$SECONDS
step() { printf '==> [test.sh +%ss] %s\n' "$((SECONDS - T0))" "$*"; }
die() { printf '==> [test.sh] ERROR: %s\n' "$*" >&2; exit 1; }

# root runs commands directly; others go through sudo (if there is one)
as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"
    elif command -v sudo >/dev/null; then sudo -n "$@"
    else die "need root (or sudo) to run: $*"
    fi
}

# --- Debian packages ---------------------------------------------------------
APT_UPDATED=0
pkg_installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}

# Installs the given packages that are missing. Services they ship are not
# started: a temporary policy-rc.d refuses every start (tests run their own
# servers on free ports).
apt_install() {
    local missing=() p
    for p in "$@"; do pkg_installed "$p" || missing+=("$p"); done
    [ ${#missing[@]} -eq 0 ] && return 0
    step "installing Debian packages: ${missing[*]}"
    local policy=/usr/sbin/policy-rc.d made_policy=0
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' | as_root tee "$policy" >/dev/null
        as_root chmod +x "$policy"
        made_policy=1
    fi
    local rc=0
    {
        if [ "$APT_UPDATED" -eq 0 ]; then
            as_root apt-get update -q && APT_UPDATED=1
        fi
        as_root apt-get install -y -q --no-install-recommends \
            -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
            "${missing[@]}" </dev/null
    } || rc=$?
    [ "$made_policy" -eq 1 ] && as_root rm -f "$policy"
    [ "$rc" -eq 0 ] || die "apt-get install ${missing[*]} failed"
}

step "checking Debian packages"
PACKAGES=(postgresql-15 redis-server age zstd pgbackrest ca-certificates)
# tests/pg_tls.rs and tests/redis_tls.rs make their test CAs and
# certificates with the openssl CLI
PACKAGES+=(openssl)
command -v cc >/dev/null || PACKAGES+=(build-essential)
# headless Chromium renders the drill's HTML report in tests/drill.rs
PACKAGES+=(chromium)
apt_install "${PACKAGES[@]}"

# --- Rust toolchain ----------------------------------------------------------
command -v cargo >/dev/null || die "cargo is not installed (Rust 1.95 or newer is required)"

# --- S3 test server (s3s-fs) -------------------------------------------------
# Pinned: newer s3s-fs releases need a newer rustc than ours.
S3S_VERSION=0.14.1
if command -v s3s-fs >/dev/null || [ -x "$HOME/.cargo/bin/s3s-fs" ]; then
    step "s3s-fs present"
else
    step "installing s3s-fs $S3S_VERSION (cargo install, one-off, several minutes)"
    lock=/var/tmp/strata-s3s-install.lock
    (
        # one install at a time even if test.sh runs concurrently
        flock 9
        if ! command -v s3s-fs >/dev/null && [ ! -x "$HOME/.cargo/bin/s3s-fs" ]; then
            env -u CARGO_TARGET_DIR cargo install "s3s-fs@$S3S_VERSION" --locked \
                --features binary </dev/null
        fi
    ) 9>"$lock"
    [ -x "$HOME/.cargo/bin/s3s-fs" ] || command -v s3s-fs >/dev/null ||
        die "s3s-fs install failed"
fi

# --- ChromaDB venv (hook) ----------------------------------------------------
# Chroma tests need a `chroma` server from the chromadb Python package. It
# lives in a venv OUTSIDE the clone so fresh CI clones reuse it. This only
# runs when STRATA_TEST_CHROMA=1 or once tests/chroma*.rs exist. The tests
# find it through STRATA_CHROMA_VENV (…/bin/chroma, …/bin/python).
STRATA_CHROMA_VENV=${STRATA_CHROMA_VENV:-/var/tmp/strata-chroma-venv}
ensure_chroma() {
    local venv=$STRATA_CHROMA_VENV
    if [ -x "$venv/bin/chroma" ] && "$venv/bin/python" -c 'import chromadb' 2>/dev/null; then
        step "chromadb venv present ($venv)"
    else
        step "creating chromadb venv in $venv"
        command -v python3 >/dev/null || apt_install python3
        if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c 'import ensurepip' 2>/dev/null; then
            apt_install python3-venv
        fi
        rm -rf "$venv"
        python3 -m venv "$venv"
        "$venv/bin/pip" install -q --upgrade pip </dev/null
        # pinned: the chroma tests and docs/chroma.md describe 1.5.9's API
        "$venv/bin/pip" install -q "chromadb==${STRATA_CHROMA_VERSION:-1.5.9}" </dev/null
        "$venv/bin/python" -c 'import chromadb' || die "chromadb import failed in $venv"
    fi
    export STRATA_CHROMA_VENV="$venv"
    export PATH="$venv/bin:$PATH"
}
if [ "${STRATA_TEST_CHROMA:-0}" = 1 ] || compgen -G "$REPO_ROOT/tests/chroma*.rs" >/dev/null; then
    ensure_chroma
fi
# --- end ChromaDB hook -------------------------------------------------------

# --- moto (S3 Object Lock server) ------------------------------------------
# tests/object_lock.rs needs an S3 server with Object Lock, which s3s-fs
# lacks: moto's server mode, in a venv OUTSIDE the clone (reused by fresh
# CI clones). The tests find it through STRATA_MOTO_VENV.
STRATA_MOTO_VENV=${STRATA_MOTO_VENV:-/var/tmp/strata-moto-venv}
if [ -x "$STRATA_MOTO_VENV/bin/moto_server" ] &&
    "$STRATA_MOTO_VENV/bin/python" -c 'import moto.server, boto3' 2>/dev/null; then
    step "moto venv present ($STRATA_MOTO_VENV)"
else
    step "creating moto venv in $STRATA_MOTO_VENV"
    command -v python3 >/dev/null || apt_install python3
    if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c 'import ensurepip' 2>/dev/null; then
        apt_install python3-venv
    fi
    rm -rf "$STRATA_MOTO_VENV"
    python3 -m venv "$STRATA_MOTO_VENV"
    "$STRATA_MOTO_VENV/bin/pip" install -q "moto[server]==${STRATA_MOTO_VERSION:-5.2.5}" </dev/null
    "$STRATA_MOTO_VENV/bin/python" -c 'import moto.server, boto3' ||
        die "moto import failed in $STRATA_MOTO_VENV"
fi
export STRATA_MOTO_VENV
# --- end moto ----------------------------------------------------------------

# --- tests -------------------------------------------------------------------
# the source tree's shape (docs/design.md, "Module map"): import cycles,
# layers, file sizes, module docs; a second, nothing to build
step "checking the module map (scripts/module_graph.py)"
command -v python3 >/dev/null || apt_install python3
python3 scripts/module_graph.py || die "the module map does not hold (see above)"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/strata-target}
step "cargo test --no-fail-fast $* (CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"
rc=0
cargo test --no-fail-fast "$@" </dev/null || rc=$?
if [ "$rc" -eq 0 ]; then
    step "all tests passed"
else
    step "tests FAILED (cargo exit $rc)"
fi

# --- fuzzing (time-boxed) ----------------------------------------------------
# Every fuzz target for STRATA_FUZZ_SECONDS (default 20) each, with the
# whole suite only (not with extra cargo test args); STRATA_FUZZ_SECONDS=0
# skips it. Its build dir is outside the clone (scripts/fuzz.sh), so only
# the first CI run pays for the fuzz build. Longer runs: scripts/fuzz.sh.
fuzz_rc=0
FUZZ_SECONDS=${STRATA_FUZZ_SECONDS:-20}
if [ $# -eq 0 ] && [ "$FUZZ_SECONDS" != 0 ]; then
    step "fuzzing every target for ${FUZZ_SECONDS}s (scripts/fuzz.sh)"
    "$REPO_ROOT/scripts/fuzz.sh" "$FUZZ_SECONDS" </dev/null || fuzz_rc=$?
    [ "$fuzz_rc" -eq 0 ] || step "fuzzing FAILED (exit $fuzz_rc)"
fi
if [ "$rc" -ne 0 ]; then
    exit "$rc"
fi
exit "$fuzz_rc"
