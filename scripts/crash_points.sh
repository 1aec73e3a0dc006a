#!/usr/bin/env bash
# Crash points, all of them: runs tests/crash_points.rs killing strata at
# every durable step of every path (CI walks every third step of base
# backups only). See "Crash points" in docs/design.md.
#
#   scripts/crash_points.sh                  # every step
#   STRATA_CRASH_EVERY=2 scripts/crash_points.sh
#   scripts/crash_points.sh prune            # one test (a cargo test filter)
#
# Installs what the tests need through scripts/test.sh (same environment:
# CARGO_TARGET_DIR, STRATA_CHROMA_VENV, STRATA_TEST_KEEP=1 …).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export STRATA_CRASH_EVERY="${STRATA_CRASH_EVERY:-1}"
exec scripts/test.sh --test crash_points "$@"
