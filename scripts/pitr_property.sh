#!/usr/bin/env bash
# PITR exactness as a property, the long run (issue 13): tests/pitr_property.rs
# with N random restore times (default 20) plus N/2 LSNs, N/2 restore points
# and the two later base backups' end LSNs, each restored with `strata
# restore --start` and compared row by row with the ledger the workload kept.
# CI runs the same test with N = 4.
#
#   scripts/pitr_property.sh          # N = 20: 42 restores, about 4 minutes
#   scripts/pitr_property.sh 50
#   STRATA_PITR_PROPERTY_SEED=123 scripts/pitr_property.sh   # replay a seed
#
# Needs what scripts/test.sh installs (PostgreSQL 15); run that once first.
# Environment:
#   CARGO_TARGET_DIR            build dir (default /var/tmp/strata-target,
#                               as scripts/test.sh)
#   STRATA_PITR_PROPERTY_SEED   RNG seed (printed by every run)
#   STRATA_TEST_KEEP=1          keep the servers' temp dirs
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
: "${HOME:=$(getent passwd "$(id -u)" | cut -d: -f6)}"
export PATH="$HOME/.cargo/bin:$PATH"

N=${1:-20}
case $N in
    '' | *[!0-9]*) echo "usage: $0 [N]  (N: number of restore times, a positive integer)" >&2; exit 2 ;;
esac
[ "$N" -ge 1 ] || { echo "$0: N must be at least 1" >&2; exit 2; }

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/strata-target}
export STRATA_PITR_PROPERTY_N=$N
exec cargo test --test pitr_property -- --nocapture </dev/null
