#!/usr/bin/env bash
# Benchmarks `strata backup` / `strata restore` of PostgreSQL against the
# equivalent shell pipeline and against pg_dump alone (the floor).
#
#   scripts/bench.sh                 # full run: pgbench scale 50 (~750 MB per database)
#   SCALE=2 REPS=1 scripts/bench.sh  # quick check of the script itself
#   scripts/bench.sh pitr            # base backup and WAL push vs pgBackRest (bench_pitr.sh)
#   scripts/bench.sh redis           # Redis snapshot and restore --into (bench_redis.sh)
#   scripts/bench.sh chroma          # Chroma export and import (bench_chroma.sh)
#   scripts/bench.sh incremental     # incremental base backups (bench_incremental.sh)
#
# Environment:
#   SCALE             pgbench scale factor of both databases (default 50)
#   REPS              measured rounds, after one warm-up round (default 5); a
#                     round runs every case once, so background load hits all
#                     cases alike; the table shows median and min wall time
#   RESTORE_REPS      measured restore rounds (default 2)
#   DATASETS          which databases to measure (default "pgbench realistic")
#   BENCH_DIR         work directory (default /var/tmp/strata-bench); removed
#                     at the end unless BENCH_KEEP=1
#   CARGO_TARGET_DIR  where the release build goes (default /var/tmp/strata-target)
#   RESULTS           also write the final tables to this file
#   BENCH_REV         label for the source revision in the report (default: git)
#
# It builds strata in release mode, starts a throwaway PostgreSQL 15 cluster
# (as the `postgres` OS user, on its own port, stopped on exit), creates two
# databases and times, for each:
#   floor         pg_dump -Fc -Z0 DB > /dev/null
#   pipeline      pg_dump -Fc -Z0 DB | zstd -3 -T0 | age -r KEY > FILE
#   pipeline+sync the same, then `sync FILE` (strata fsyncs what it stores)
#   strata L1     strata backup SRC   (default [compression] level = 1)
#   strata L3     strata backup SRC   ([compression] level = 3)
# and `strata restore SRC --to-database NEW --create` (from the last level-1
# backup) against `pg_restore` of the same dump read from stdin (restore floor).
#
# Wall, CPU and peak RSS come from `/usr/bin/time -f '%e %U %S %M'`. CPU is
# user+sys of the measured process and all its children (pg_dump, zstd,
# age, pg_restore); the PostgreSQL server's own backend is in no figure.
# Peak RSS is that of the largest single process of the tree (for strata:
# max(strata, pg_dump); the floor row shows pg_dump's alone).
set -euo pipefail

# `scripts/bench.sh pitr`: base backups and WAL push against pgBackRest
# (scripts/bench_pitr.sh; its own environment variables)
if [ "${1:-}" = pitr ]; then exec "$(dirname "${BASH_SOURCE[0]}")/bench_pitr.sh"; fi
# `scripts/bench.sh redis`: Redis snapshots against redis-cli --rdb | zstd |
# age, and restore --into (scripts/bench_redis.sh; its own environment)
if [ "${1:-}" = redis ]; then exec "$(dirname "${BASH_SOURCE[0]}")/bench_redis.sh"; fi
# `scripts/bench.sh chroma`: Chroma export and import, records per second
# (scripts/bench_chroma.sh; its own environment variables)
if [ "${1:-}" = chroma ]; then exec "$(dirname "${BASH_SOURCE[0]}")/bench_chroma.sh"; fi
# `scripts/bench.sh incremental`: full against incremental base backups,
# beside pgBackRest and pg_basebackup --incremental (scripts/bench_incremental.sh)
if [ "${1:-}" = incremental ]; then exec "$(dirname "${BASH_SOURCE[0]}")/bench_incremental.sh"; fi

cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO_ROOT=$PWD
SCALE=${SCALE:-50}
REPS=${REPS:-5}
RESTORE_REPS=${RESTORE_REPS:-2}
DATASETS=${DATASETS:-pgbench realistic}
BENCH_DIR=${BENCH_DIR:-/var/tmp/strata-bench}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/strata-target}
PGBIN=/usr/lib/postgresql/15/bin
T0=$SECONDS

step() { printf '==> [bench +%ss] %s\n' "$((SECONDS - T0))" "$*" >&2; }
die() { printf '==> [bench] ERROR: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "run as root (the cluster runs as the postgres OS user)"
id postgres >/dev/null 2>&1 || die "no postgres OS user (apt-get install postgresql-15)"
[ -x "$PGBIN/initdb" ] || die "PostgreSQL 15 is not installed in $PGBIN"
command -v /usr/bin/time >/dev/null || { step "installing time"; apt-get install -y -q time >/dev/null; }
for c in zstd age jq cargo; do command -v "$c" >/dev/null || die "$c is not installed"; done

# --- build --------------------------------------------------------------------
step "building strata (release) in $CARGO_TARGET_DIR"
cargo build --release --quiet --bin strata
STRATA=$CARGO_TARGET_DIR/release/strata

# --- throwaway cluster --------------------------------------------------------
[ -e "$BENCH_DIR" ] && die "$BENCH_DIR exists; remove it or set BENCH_DIR"
mkdir -p "$BENCH_DIR"
PGDATA=$BENCH_DIR/pg/data
PGSOCK=$BENCH_DIR/pg/sock
mkdir -p "$PGDATA" "$PGSOCK"
chown -R postgres:postgres "$BENCH_DIR/pg"

cleanup() {
    local rc=$?
    if [ -f "$PGDATA/postmaster.pid" ]; then
        runuser -u postgres -- "$PGBIN/pg_ctl" -D "$PGDATA" -m fast -w stop >/dev/null 2>&1 || true
    fi
    if [ "${BENCH_KEEP:-0}" = 1 ]; then
        step "kept $BENCH_DIR"
    else
        rm -rf "$BENCH_DIR"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

PORT=55432
while (: </dev/tcp/127.0.0.1/$PORT) 2>/dev/null; do PORT=$((PORT + 1)); done

step "starting PostgreSQL 15 on 127.0.0.1:$PORT ($PGDATA)"
runuser -u postgres -- "$PGBIN/initdb" -D "$PGDATA" -U postgres --auth=trust \
    -E UTF8 --locale=C.UTF-8 >"$BENCH_DIR/initdb.log"
# Settings a DBA would give a 24 GiB machine; fsync stays on.
cat >>"$PGDATA/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $PORT
unix_socket_directories = '$PGSOCK'
shared_buffers = 512MB
maintenance_work_mem = 512MB
max_wal_size = 8GB
checkpoint_timeout = 30min
EOF
runuser -u postgres -- "$PGBIN/pg_ctl" -D "$PGDATA" -l "$BENCH_DIR/pg/server.log" -w start >/dev/null

export PGHOST=127.0.0.1 PGPORT=$PORT PGUSER=postgres
unset PGPASSWORD PGDATABASE
psqlc() { "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -d "${DB:-postgres}" "$@"; }

# --- data ---------------------------------------------------------------------
step "generating pgbench database (scale $SCALE)"
"$PGBIN/createdb" pgbench_db
"$PGBIN/pgbench" -q -i -s "$SCALE" pgbench_db >"$BENCH_DIR/pgbench-init.log" 2>&1
case " $DATASETS " in *" realistic "*)
    step "generating realistic database (pgbench + random hex filler)"
    psqlc -c "CREATE DATABASE realistic_db TEMPLATE pgbench_db"
    DB=realistic_db psqlc <<'SQL'
UPDATE pgbench_accounts
   SET filler = substr(md5(random()::text) || md5(random()::text) || md5(random()::text), 1, 84);
VACUUM FULL pgbench_accounts;
VACUUM ANALYZE;
SQL
esac
DB=pgbench_db psqlc -c "VACUUM ANALYZE"
psqlc -c "CHECKPOINT"

# --- strata repository ----------------------------------------------------------
step "creating the strata repository"
KEY=$BENCH_DIR/identity.txt
RECIPIENT=$("$STRATA" key generate --out "$KEY" 2>/dev/null)
mkdir -p "$BENCH_DIR/out"
write_config() { # FILE EXTRA
    cat >"$1" <<EOF
[repository]
url = "file://$BENCH_DIR/repo"

[encryption]
recipients = ["$RECIPIENT"]
identity_file = "$KEY"
$2
[sources.pgbench]
kind = "postgres"
url = "postgres://postgres@127.0.0.1:$PORT/pgbench_db"

[sources.realistic]
kind = "postgres"
url = "postgres://postgres@127.0.0.1:$PORT/realistic_db"
EOF
}
write_config "$BENCH_DIR/strata-l1.toml" ""
write_config "$BENCH_DIR/strata-l3.toml" $'\n[compression]\nlevel = 3\n'
"$STRATA" --config "$BENCH_DIR/strata-l1.toml" init >/dev/null

# --- measuring ----------------------------------------------------------------
RAW=$BENCH_DIR/raw.tsv # dataset case run wall cpu rss_kib stored_bytes
: >"$RAW"
TIMEF=$BENCH_DIR/time.out

# timed DATASET CASE RUN STORED_CMD -- COMMAND...
# Runs COMMAND under /usr/bin/time; STORED_CMD (a shell snippet) prints the
# stored byte count afterwards (or "-").
timed() {
    local dataset=$1 case=$2 run=$3 stored_cmd=$4
    shift 5
    sync
    if ! /usr/bin/time -f '%e %U %S %M' -o "$TIMEF" "$@" >"$BENCH_DIR/last.out" 2>"$BENCH_DIR/last.err"; then
        cat "$BENCH_DIR/last.err" >&2
        die "$dataset/$case failed: $*"
    fi
    local wall user sys rss stored cpu
    read -r wall user sys rss <"$TIMEF"
    cpu=$(awk -v u="$user" -v s="$sys" 'BEGIN { printf "%.2f", u + s }')
    stored=$(eval "$stored_cmd")
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$dataset" "$case" "$run" "$wall" "$cpu" "$rss" "$stored" >>"$RAW"
    printf '    %-10s %-14s run %s: %6.2fs wall, %6.2fs CPU, %4d MiB RSS\n' \
        "$dataset" "$case" "$run" "$wall" "$cpu" "$((rss / 1024))" >&2
}

PIPE_OUT=$BENCH_DIR/out/pipeline.age
case_floor() {
    timed "$1" floor "$2" 'echo -' -- bash -c "'$PGBIN/pg_dump' -Fc -Z0 -d '$1_db' > /dev/null"
}
case_pipeline() {
    timed "$1" pipeline "$2" "stat -c %s $PIPE_OUT" -- bash -o pipefail -c \
        "'$PGBIN/pg_dump' -Fc -Z0 -d '$1_db' | zstd -q -3 -T0 | age -r '$RECIPIENT' > '$PIPE_OUT'"
    rm -f "$PIPE_OUT"
}
case_pipeline_sync() {
    timed "$1" pipeline+sync "$2" "stat -c %s $PIPE_OUT" -- bash -o pipefail -c \
        "'$PGBIN/pg_dump' -Fc -Z0 -d '$1_db' | zstd -q -3 -T0 | age -r '$RECIPIENT' > '$PIPE_OUT' && sync '$PIPE_OUT'"
    rm -f "$PIPE_OUT"
}
STORED_JSON="jq -r .stored_bytes $BENCH_DIR/last.out"
case_strata_l1() {
    timed "$1" "strata L1" "$2" "$STORED_JSON" -- "$STRATA" --json --config "$BENCH_DIR/strata-l1.toml" backup "$1"
    LAST_L1_ID=$(jq -r .id "$BENCH_DIR/last.out")
}
case_strata_l3() {
    timed "$1" "strata L3" "$2" "$STORED_JSON" -- "$STRATA" --json --config "$BENCH_DIR/strata-l3.toml" backup "$1"
}
CASES=(case_floor case_pipeline case_pipeline_sync case_strata_l1 case_strata_l3)
CASE_NAMES=(floor pipeline pipeline+sync "strata L1" "strata L3")

for ds in $DATASETS; do
    size=$(DB=${ds}_db psqlc -At -c "SELECT pg_size_pretty(pg_database_size(current_database()))")
    dump=$("$PGBIN/pg_dump" -Fc -Z0 -d "${ds}_db" | wc -c)
    printf '%s\t%s\t%s\n' "$ds" "$size" "$dump" >>"$BENCH_DIR/sizes.tsv"
    step "$ds: database $size, dump $dump bytes; warm-up round, then $REPS measured round(s)"
    for run in $(seq 0 "$REPS"); do
        for c in "${CASES[@]}"; do "$c" "$ds" "$run"; done
    done

    step "$ds: restore, $RESTORE_REPS round(s) (strata, then pg_restore of the same dump from stdin)"
    "$PGBIN/pg_dump" -Fc -Z0 -d "${ds}_db" -f "$BENCH_DIR/out/plain.dump"
    for run in $(seq 1 "$RESTORE_REPS"); do
        timed "$ds" "restore strata" "$run" 'echo -' -- "$STRATA" --json --config "$BENCH_DIR/strata-l1.toml" \
            restore "$ds" --backup "$LAST_L1_ID" --to-database "r_$ds" --create
        psqlc -c "DROP DATABASE r_$ds"
        psqlc -c "CREATE DATABASE r_$ds"
        timed "$ds" "restore floor" "$run" 'echo -' -- bash -c \
            "'$PGBIN/pg_restore' --no-password --exit-on-error -d 'r_$ds' < '$BENCH_DIR/out/plain.dump'"
        psqlc -c "DROP DATABASE r_$ds"
    done
    rm -f "$BENCH_DIR/out/plain.dump"
done

# --- report ---------------------------------------------------------------------
report() {
    echo "strata benchmark: SCALE=$SCALE REPS=$REPS, $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB RAM, $(. /etc/os-release; echo "$PRETTY_NAME")"
    echo "strata $("$STRATA" --version | awk '{print $2}') (${BENCH_REV:-$(git -C "$REPO_ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$REPO_ROOT" diff --quiet 2>/dev/null || echo '+dirty')}), $("$PGBIN/pg_dump" --version), $(zstd --version | head -1), age $(age --version)"
    echo
    python3 - "$RAW" "$BENCH_DIR/sizes.tsv" "$REPS" <<'PY'
import sys, statistics
raw, sizes, reps = sys.argv[1], sys.argv[2], int(sys.argv[3])
rows = [l.rstrip("\n").split("\t") for l in open(raw)]
size = {l.split("\t")[0]: l.rstrip("\n").split("\t")[1:] for l in open(sizes)}
order = ["floor", "pipeline", "pipeline+sync", "strata L1", "strata L3",
         "restore floor", "restore strata"]
for ds in size:
    dbsize, dump = size[ds]
    print(f"## {ds}: database {dbsize}, pg_dump -Fc -Z0 output {int(dump)/1e6:.0f} MB")
    print()
    stat = {}
    for case in order:
        rs = [r for r in rows if r[0] == ds and r[1] == case and (r[2] != "0" or case.startswith("restore"))]
        if not rs:
            continue
        walls = sorted(float(r[3]) for r in rs)
        med = statistics.median(walls)
        cpu = statistics.median(float(r[4]) for r in rs)
        rss = max(int(r[5]) for r in rs) / 1024
        stored = [int(r[6]) for r in rs if r[6] not in ("-", "null")]
        stat[case] = (med, walls, cpu, rss, stored)
    print("| case | wall s: median (min–max) | CPU s | peak RSS MiB | stored MB | ratio | × pipeline: median (min) | × floor: median (min) |")
    print("|---|---|---|---|---|---|---|---|")
    def x(case, base):
        if base not in stat:
            return "–"
        m = stat[case][0] / stat[base][0]
        if len(stat[case][1]) > 1:
            return f"{m:.2f}× ({stat[case][1][0] / stat[base][1][0]:.2f}×)"
        return f"{m:.2f}×"
    for case in order:
        if case not in stat:
            continue
        med, walls, cpu, rss, stored = stat[case]
        wall = f"{med:.2f} ({walls[0]:.2f}–{walls[-1]:.2f})" if len(walls) > 1 else f"{med:.2f}"
        st = f"{statistics.median(stored)/1e6:.1f}" if stored else "–"
        ratio = f"{int(dump)/statistics.median(stored):.1f}:1" if stored else "–"
        if case.startswith("restore"):
            xp, xf = "–", x(case, "restore floor")
        else:
            xp, xf = x(case, "pipeline"), x(case, "floor")
        print(f"| {case} | {wall} | {cpu:.1f} | {rss:.0f} | {st} | {ratio} | {xp} | {xf} |")
    print()
PY
}
step "done in $((SECONDS - T0))s"
if [ -n "${RESULTS:-}" ]; then
    report | tee "$RESULTS"
    cp "$RAW" "${RESULTS%.*}.raw.tsv"
else
    report
fi
