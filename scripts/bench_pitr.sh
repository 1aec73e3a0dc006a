#!/usr/bin/env bash
# PITR benchmark: strata against pgBackRest on one throwaway cluster.
#
#   scripts/bench.sh pitr                 # or scripts/bench_pitr.sh directly
#   SCALE=5 SEGMENTS=16 scripts/bench_pitr.sh   # quick check of the script
#
# Environment:
#   SCALE       pgbench scale factor (default 50, ~750 MB)
#   DATASET     pgbench (default; blank filler, compresses ~80:1) or realistic
#               (filler = 84 random hex characters, compresses ~2:1)
#   SEGMENTS    WAL segments for the push measurements (default 64)
#   BASE_REPS   rounds of the four base backup cases (default 3; median)
#   PITR_MINUTES  minutes of pgbench before the PITR target (default 10; 0 skips)
#   PROCESSES   parallel uploads of the async modes / pgBackRest process-max (default 4)
#   BENCH_DIR   work directory (default /var/tmp/strata-bench-pitr); removed
#               at the end unless BENCH_KEEP=1
#   RESULTS     also write the final table to this file
#   STRATA_BIN  use this strata binary instead of building one (release!)
#
# Measures, on the same cluster:
#   base backup   strata backup --kind base (zstd level 1, the default, and 3)
#                 against pgbackrest backup --type=full (compress-type=zst at
#                 level 1 and 3, process-max=2, repo-cipher-type=aes-256-cbc):
#                 wall time and stored size. The archive_command feeds both
#                 archives (each tool waits for its own WAL).
#   wal push      SEGMENTS real 16 MiB segments (from a pgbench -c 4 run,
#                 copied aside), pushed in order as archive_command would,
#                 each tool into its own fresh archive: strata sync, strata
#                 --async (PROCESSES uploads), pgbackrest archive-push sync
#                 (zst 1 and its default 3) and --archive-async
#                 (process-max=PROCESSES), while pgbench keeps running.
#                 Seconds per segment: the median call, and total / SEGMENTS.
#   PITR          restore of everything archived (the newest base backup,
#                 then replay of the pgbench run's WAL, ~SEGMENTS segments)
#                 into a new directory, from command to promoted server:
#                 pgbackrest restore + pg_ctl start (archive-get one segment
#                 at a time) against strata restore --latest --start.
#   PITR to T     fresh base backups, pgbench -c 4 for PITR_MINUTES (+1), then
#                 restore to the time PITR_MINUTES in: pgbackrest restore
#                 --type=time + pg_ctl start against strata restore --to-time
#                 --start; both must hold the same pgbench_history.
# Local repositories on the same disk for both tools; fsync on.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
SCALE=${SCALE:-50}
SEGMENTS=${SEGMENTS:-64}
PROCESSES=${PROCESSES:-4}
BASE_REPS=${BASE_REPS:-3}
PITR_MINUTES=${PITR_MINUTES:-10}
BENCH_DIR=${BENCH_DIR:-/var/tmp/strata-bench-pitr}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/strata-target}
PGBIN=/usr/lib/postgresql/15/bin
T0=$SECONDS

step() { printf '==> [bench-pitr +%ss] %s\n' "$((SECONDS - T0))" "$*" >&2; }
die() { printf '==> [bench-pitr] ERROR: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "run as root (the cluster runs as the postgres OS user)"
id postgres >/dev/null 2>&1 || die "no postgres OS user"
[ -x "$PGBIN/initdb" ] || die "PostgreSQL 15 is not installed in $PGBIN"
command -v pgbackrest >/dev/null || die "pgbackrest is not installed (apt-get install pgbackrest)"

if [ -n "${STRATA_BIN:-}" ]; then
    STRATA=$STRATA_BIN
else
    step "building strata (release) in $CARGO_TARGET_DIR"
    cargo build --release --quiet --bin strata
    STRATA=$CARGO_TARGET_DIR/release/strata
fi

[ -e "$BENCH_DIR" ] && die "$BENCH_DIR exists; remove it or set BENCH_DIR"
mkdir -p "$BENCH_DIR"/{pg/data,pg/sock,wal-copy,pgbr/repo,pgbr/spool,pgbr/log}
# the server (and so archive_command) runs as postgres: everything it
# touches lives here and belongs to it
cp "$STRATA" "$BENCH_DIR/strata"
STRATA=$BENCH_DIR/strata
PGDATA=$BENCH_DIR/pg/data
chown -R postgres:postgres "$BENCH_DIR"
chmod 755 "$BENCH_DIR"

cleanup() {
    local rc=$?
    if [ -f "$PGDATA/postmaster.pid" ]; then
        runuser -u postgres -- "$PGBIN/pg_ctl" -D "$PGDATA" -m fast -w stop >/dev/null 2>&1 || true
    fi
    if [ "${BENCH_KEEP:-0}" = 1 ]; then step "kept $BENCH_DIR"; else rm -rf "$BENCH_DIR"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

as_pg() { runuser -u postgres -- "$@"; }

PORT=56432
while (: </dev/tcp/127.0.0.1/$PORT) 2>/dev/null; do PORT=$((PORT + 1)); done

# --- strata ---------------------------------------------------------------------
RECIPIENT=$(as_pg "$STRATA" key generate --out "$BENCH_DIR/identity.txt" 2>/dev/null)
write_config() { # FILE LEVEL
    cat >"$1" <<EOF
[repository]
url = "file://$BENCH_DIR/repo"

[encryption]
recipients = ["$RECIPIENT"]
identity_file = "$BENCH_DIR/identity.txt"

[compression]
level = $2

[sources.main]
kind = "postgres"
url = "postgres://postgres@127.0.0.1:$PORT/postgres"

[sources.push_sync]
kind = "postgres"
url = "postgres://postgres@127.0.0.1:$PORT/postgres"

[sources.push_async]
kind = "postgres"
url = "postgres://postgres@127.0.0.1:$PORT/postgres"
EOF
    chown postgres: "$1"
}
write_config "$BENCH_DIR/strata.toml" 1
write_config "$BENCH_DIR/strata-l3.toml" 3
as_pg "$STRATA" --config "$BENCH_DIR/strata.toml" init >/dev/null

# --- pgBackRest -------------------------------------------------------------------
PGBR_CONF=$BENCH_DIR/pgbackrest.conf
cat >"$PGBR_CONF" <<EOF
[global]
repo1-path=$BENCH_DIR/pgbr/repo
repo1-cipher-type=aes-256-cbc
repo1-cipher-pass=bench-not-secret-0123456789abcdef
compress-type=zst
compress-level=1
process-max=2
spool-path=$BENCH_DIR/pgbr/spool
log-path=$BENCH_DIR/pgbr/log
log-level-console=warn
lock-path=$BENCH_DIR/pgbr/lock
start-fast=y
repo1-retention-full=99

[main]
pg1-path=$PGDATA
pg1-port=$PORT
pg1-socket-path=$BENCH_DIR/pg/sock

[push_sync]
pg1-path=$PGDATA
pg1-port=$PORT
pg1-socket-path=$BENCH_DIR/pg/sock

[push_async]
pg1-path=$PGDATA
pg1-port=$PORT
pg1-socket-path=$BENCH_DIR/pg/sock

[push_sync3]
pg1-path=$PGDATA
pg1-port=$PORT
pg1-socket-path=$BENCH_DIR/pg/sock
EOF
chown postgres: "$PGBR_CONF"
pgbr() { as_pg pgbackrest --config="$PGBR_CONF" "$@"; }

# --- cluster --------------------------------------------------------------------
step "starting PostgreSQL 15 on 127.0.0.1:$PORT"
as_pg "$PGBIN/initdb" -D "$PGDATA" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >"$BENCH_DIR/initdb.log"
cat >>"$PGDATA/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $PORT
unix_socket_directories = '$BENCH_DIR/pg/sock'
shared_buffers = 512MB
maintenance_work_mem = 512MB
max_wal_size = 1GB
wal_keep_size = 2GB
wal_level = replica
archive_mode = on
archive_command = '$STRATA --config $BENCH_DIR/strata.toml wal push --source main %p && pgbackrest --config=$PGBR_CONF --stanza=main archive-push %p'
EOF
as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -l "$BENCH_DIR/pg/server.log" -w start >/dev/null
export PGHOST=127.0.0.1 PGPORT=$PORT PGUSER=postgres
unset PGPASSWORD PGDATABASE
psqlc() { "$PGBIN/psql" -X -q -A -t -v ON_ERROR_STOP=1 -d postgres "$@"; }
for s in main push_sync push_sync3 push_async; do pgbr --stanza=$s stanza-create >/dev/null; done

step "pgbench -i -s $SCALE"
"$PGBIN/pgbench" -q -i -s "$SCALE" postgres >"$BENCH_DIR/pgbench-init.log" 2>&1
if [ "${DATASET:-pgbench}" = realistic ]; then
    step "realistic data: random hex filler in pgbench_accounts"
    psqlc <<'SQL'
UPDATE pgbench_accounts
   SET filler = substr(md5(random()::text) || md5(random()::text) || md5(random()::text), 1, 84);
VACUUM FULL pgbench_accounts;
SQL
fi
psqlc -c "VACUUM ANALYZE" -c "CHECKPOINT"
DB_SIZE=$(psqlc -c "SELECT pg_size_pretty(sum(pg_database_size(datname))) FROM pg_database")

declare -a ROWS
row() { ROWS+=("$(printf '%-64s %10s %12s' "$@")"); printf '%-64s %10s %12s\n' "$@" >&2; }
secs() { date +%s.%N; }
since() { echo "$(secs) - $1" | bc -l | xargs printf '%.2f'; }
dir_mib() { du -sb "$1" | awk '{printf "%.1f", $1 / 1048576}'; }

# --- base backups -----------------------------------------------------------------
# Each backup ends by waiting for its WAL, and the archive_command pushes
# into both archives one segment after the other: a backlog left by the
# previous step (pgbench -i, the filler UPDATE) would be charged to
# whichever backup runs first. So the archiver is caught up before every
# run, and the four cases take turns, BASE_REPS rounds (median reported).
catch_up_archiver() {
    until [ "$(psqlc -c "SELECT count(*) FROM pg_ls_archive_statusdir() WHERE name LIKE '%.ready'")" = 0 ]; do sleep 0.2; done
}
median() { sort -n | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}'; }
step "base backups (cluster: $DB_SIZE), $BASE_REPS rounds"
declare -A WALLS SIZES
for round in $(seq "$BASE_REPS"); do
    for level in 1 3; do
        cfg=$BENCH_DIR/strata.toml
        [ "$level" = 3 ] && cfg=$BENCH_DIR/strata-l3.toml
        catch_up_archiver
        t=$(secs)
        out=$(as_pg "$STRATA" --config "$cfg" --json backup main --kind base)
        w=$(since "$t")
        stored=$(echo "$out" | jq -r '.stored_bytes // .stored_size // empty' 2>/dev/null || true)
        [ -n "$stored" ] || stored=$(du -sb "$BENCH_DIR/repo/backups/main/$(echo "$out" | jq -r .id)" | cut -f1)
        WALLS[strata$level]+="$w "
        SIZES[strata$level]=$stored
        step "round $round: strata zstd $level ${w}s"
    done
    for level in 1 3; do
        catch_up_archiver
        before=$(du -sb "$BENCH_DIR/pgbr/repo/backup" 2>/dev/null | cut -f1 || echo 0)
        t=$(secs)
        pgbr --stanza=main --compress-level=$level backup --type=full
        w=$(since "$t")
        after=$(du -sb "$BENCH_DIR/pgbr/repo/backup" | cut -f1)
        WALLS[pgbr$level]+="$w "
        SIZES[pgbr$level]=$((after - before))
        step "round $round: pgbackrest zst $level ${w}s"
    done
done
mib() { awk -v b="$1" 'BEGIN{printf "%.1f MiB", b/1048576}'; }
for level in 1 3; do
    row "strata backup --kind base (zstd $level), median" "$(echo "${WALLS[strata$level]}" | tr ' ' '\n' | grep . | median)s" "$(mib "${SIZES[strata$level]}")"
done
for level in 1 3; do
    row "pgbackrest backup --type=full (zst $level), median" "$(echo "${WALLS[pgbr$level]}" | tr ' ' '\n' | grep . | median)s" "$(mib "${SIZES[pgbr$level]}")"
done
for k in strata1 strata3 pgbr1 pgbr3; do echo "base backup walls $k: ${WALLS[$k]}" >&2; done

# --- segments for the push measurements ------------------------------------------
# pgbench -c 4 with a checkpoint every second (full-page writes: WAL as a
# busy server writes it, and 16 MiB of it in seconds rather than minutes);
# it keeps running through the push measurements
step "collecting $SEGMENTS segments under pgbench -c 4"
first=$(psqlc -c "SELECT pg_walfile_name(pg_current_wal_insert_lsn())")
"$PGBIN/pgbench" -n -c 4 -j 2 -T 3600 postgres >"$BENCH_DIR/pgbench-run.log" 2>&1 &
BENCH_PID=$!
while :; do
    n=$(psqlc -c "SELECT count(*) FROM pg_ls_waldir() WHERE name ~ '^[0-9A-F]{24}$' AND name > '$first' AND name < pg_walfile_name(pg_current_wal_insert_lsn())")
    [ "$n" -ge "$((SEGMENTS + 1))" ] && break
    psqlc -c "CHECKPOINT" >/dev/null
    sleep 1
done
# completed segments only, in order (not the one being written, nor
# recycled ones waiting under future names); wal_keep_size keeps them
mapfile -t SEGS < <(psqlc -c "SELECT name FROM pg_ls_waldir() WHERE name ~ '^[0-9A-F]{24}$' AND name > '$first' AND name < pg_walfile_name(pg_current_wal_insert_lsn()) ORDER BY name LIMIT $SEGMENTS")
for s in "${SEGS[@]}"; do cp "$PGDATA/pg_wal/$s" "$BENCH_DIR/wal-copy/"; done
chown -R postgres: "$BENCH_DIR/wal-copy"

# a pg_wal look-alike per async run: the segments with .ready files
# (pgBackRest wants it inside pg1-path, with PG_VERSION and pg_control)
fake_wal() { # DIR
    mkdir -p "$1/archive_status"
    for s in "${SEGS[@]}"; do cp "$BENCH_DIR/wal-copy/$s" "$1/"; : >"$1/archive_status/$s.ready"; done
    mkdir -p "$1/../global"
    cp "$PGDATA/PG_VERSION" "$1/.."
    cp "$PGDATA/global/pg_control" "$1/../global/"
    chown -R postgres: "$1/.."
}
# what PostgreSQL does after a successful archive_command
done_ready() { mv "$1/archive_status/$2.ready" "$1/archive_status/$2.done"; }

# Each call is timed on its own: the row gives the median call and the mean
# (total / SEGMENTS; an async mode's pusher works between calls).
push_case() { # LABEL FUNCTION (called with each segment name, in order)
    local label=$1 fn=$2 s t t0 w
    local -a walls=()
    t0=$(secs)
    for s in "${SEGS[@]}"; do
        t=$(secs)
        "$fn" "$s"
        walls+=("$(echo "$(secs) - $t" | bc -l)")
    done
    w=$(echo "$(secs) - $t0" | bc -l)
    row "$label, s/segment median" \
        "$(printf '%s\n' "${walls[@]}" | median | xargs printf '%.3f')" \
        "mean $(echo "$w / $SEGMENTS" | bc -l | xargs printf '%.3f')"
}
strata_sync() { as_pg "$STRATA" --config "$BENCH_DIR/strata.toml" wal push --source push_sync "$BENCH_DIR/wal-copy/$1"; }
strata_async() {
    as_pg "$STRATA" --config "$BENCH_DIR/strata.toml" wal push --source push_async --async \
        --processes "$PROCESSES" "$BENCH_DIR/fake-strata/pg_wal/$1"
    done_ready "$BENCH_DIR/fake-strata/pg_wal" "$1"
}
pgbr_sync1() { pgbr --stanza=push_sync archive-push "$BENCH_DIR/wal-copy/$1"; }
pgbr_sync3() { pgbr --stanza=push_sync3 --compress-level=3 archive-push "$BENCH_DIR/wal-copy/$1"; }
pgbr_async() {
    pgbr --stanza=push_async --pg1-path="$BENCH_DIR/fake-pgbr" --archive-async --process-max="$PROCESSES" \
        archive-push "$BENCH_DIR/fake-pgbr/pg_wal/$1"
    done_ready "$BENCH_DIR/fake-pgbr/pg_wal" "$1"
}

step "wal push: $SEGMENTS segments each"
push_case "strata wal push (sync, zstd 1)" strata_sync
fake_wal "$BENCH_DIR/fake-strata/pg_wal"
push_case "strata wal push --async ($PROCESSES, zstd 1)" strata_async
push_case "pgbackrest archive-push (sync, zst 1)" pgbr_sync1
push_case "pgbackrest archive-push (sync, zst 3)" pgbr_sync3
fake_wal "$BENCH_DIR/fake-pgbr/pg_wal"
push_case "pgbackrest archive-push --archive-async ($PROCESSES, zst 1)" pgbr_async

kill "$BENCH_PID" 2>/dev/null || true
wait "$BENCH_PID" 2>/dev/null || true

# --- PITR: everything archived, from command to promoted server -------------------
step "PITR: waiting for the archiver"
last=$(psqlc -c "SELECT pg_walfile_name(pg_current_wal_insert_lsn())")
psqlc -c "SELECT pg_switch_wal()" >/dev/null
until [ "$(psqlc -c "SELECT coalesce(last_archived_wal, '') >= '$last' FROM pg_stat_archiver")" = t ]; do sleep 1; done
free_port() { local p=$1; while (: </dev/tcp/127.0.0.1/$p) 2>/dev/null; do p=$((p + 1)); done; echo "$p"; }
wait_promoted() { # PORT
    until [ "$("$PGBIN/psql" -X -A -t -p "$1" -d postgres -c 'SELECT pg_is_in_recovery()' 2>/dev/null)" = f ]; do sleep 0.2; done
}
# pgBackRest first, with archiving off in the copy: a promoted copy that
# archives would add a timeline the other restore would follow
step "PITR: pgbackrest restore + start"
RDIR=$BENCH_DIR/restore-pgbr
mkdir -p "$RDIR" && chown postgres: "$RDIR" && chmod 700 "$RDIR"
RPORT=$(free_port $((PORT + 1)))
t=$(secs)
pgbr --stanza=main --pg1-path="$RDIR" --archive-mode=off \
    --recovery-option="restore_command=pgbackrest --config=$PGBR_CONF --stanza=main --pg1-path=$RDIR archive-get %f \"%p\"" restore
as_pg "$PGBIN/pg_ctl" -D "$RDIR" -l "$BENCH_DIR/restore-pgbr.log" -o "-p $RPORT" -w -t 3600 start >/dev/null
wait_promoted "$RPORT"
w=$(since "$t")
as_pg "$PGBIN/pg_ctl" -D "$RDIR" -m immediate -w stop >/dev/null
row "pgbackrest restore (latest) to promoted" "${w}s" "$(grep -c 'restored log file' "$BENCH_DIR/restore-pgbr.log") segs"
rm -rf "$RDIR"

step "PITR: strata restore --latest --start"
SDIR=$BENCH_DIR/restore-strata
RPORT=$(free_port $((PORT + 1)))
t=$(secs)
as_pg "$STRATA" --config "$BENCH_DIR/strata.toml" restore main --target-dir "$SDIR" --latest \
    --start --port "$RPORT" --archive-mode off >"$BENCH_DIR/restore-strata.out"
w=$(since "$t")
as_pg "$PGBIN/pg_ctl" -D "$SDIR" -m immediate -w stop >/dev/null
row "strata restore --latest --start" "${w}s" "$(grep -c 'restored log file' "$SDIR/strata-restore.log") segs"
cat "$BENCH_DIR/restore-strata.out" >&2
rm -rf "$SDIR"

# --- PITR: to a target PITR_MINUTES into a pgbench run ------------------------------
# A fresh base backup with each tool, then pgbench -c 4 (no forced
# checkpoints) for PITR_MINUTES and one more; the target is the server's
# clock PITR_MINUTES in. Both restores must see the same pgbench_history.
if [ "$PITR_MINUTES" -gt 0 ]; then
    step "PITR to a target: base backups, then pgbench -c 4 for $PITR_MINUTES+1 minutes"
    catch_up_archiver
    as_pg "$STRATA" --config "$BENCH_DIR/strata.toml" backup main --kind base >/dev/null
    pgbr --stanza=main backup --type=full
    "$PGBIN/pgbench" -n -c 4 -j 2 -T "$((PITR_MINUTES * 60 + 60))" postgres >"$BENCH_DIR/pgbench-pitr.log" 2>&1 &
    BENCH_PID=$!
    sleep "$((PITR_MINUTES * 60))"
    TARGET=$(psqlc -c "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') || '+00'")
    step "PITR target $TARGET; waiting for pgbench and the archiver"
    wait "$BENCH_PID" || true
    last=$(psqlc -c "SELECT pg_walfile_name(pg_current_wal_insert_lsn())")
    psqlc -c "SELECT pg_switch_wal()" >/dev/null
    until [ "$(psqlc -c "SELECT coalesce(last_archived_wal, '') >= '$last' FROM pg_stat_archiver")" = t ]; do sleep 1; done
    history_rows() { "$PGBIN/psql" -X -A -t -p "$1" -d postgres -c 'SELECT count(*) FROM pgbench_history'; }

    step "PITR to a target: pgbackrest restore --type=time + start"
    mkdir -p "$RDIR" && chown postgres: "$RDIR" && chmod 700 "$RDIR"
    RPORT=$(free_port $((PORT + 1)))
    t=$(secs)
    pgbr --stanza=main --pg1-path="$RDIR" --archive-mode=off --type=time --target="$TARGET" \
        --target-action=promote \
        --recovery-option="restore_command=pgbackrest --config=$PGBR_CONF --stanza=main --pg1-path=$RDIR archive-get %f \"%p\"" restore
    as_pg "$PGBIN/pg_ctl" -D "$RDIR" -l "$BENCH_DIR/restore-pgbr-time.log" -o "-p $RPORT" -w -t 3600 start >/dev/null
    wait_promoted "$RPORT"
    w=$(since "$t")
    pgbr_rows=$(history_rows "$RPORT")
    as_pg "$PGBIN/pg_ctl" -D "$RDIR" -m immediate -w stop >/dev/null
    row "pgbackrest restore (${PITR_MINUTES} min in) to promoted" "${w}s" "$(grep -c 'restored log file' "$BENCH_DIR/restore-pgbr-time.log") segs"
    rm -rf "$RDIR"

    step "PITR to a target: strata restore --to-time --start"
    RPORT=$(free_port $((PORT + 1)))
    t=$(secs)
    as_pg "$STRATA" --config "$BENCH_DIR/strata.toml" restore main --target-dir "$SDIR" --to-time "$TARGET" \
        --start --port "$RPORT" --archive-mode off >"$BENCH_DIR/restore-strata-time.out"
    w=$(since "$t")
    strata_rows=$(history_rows "$RPORT")
    as_pg "$PGBIN/pg_ctl" -D "$SDIR" -m immediate -w stop >/dev/null
    row "strata restore --to-time (${PITR_MINUTES} min in) --start" "${w}s" "$(grep -c 'restored log file' "$SDIR/strata-restore.log") segs"
    cat "$BENCH_DIR/restore-strata-time.out" >&2
    [ "$pgbr_rows" = "$strata_rows" ] ||
        die "the two restores to $TARGET differ: pgbench_history has $pgbr_rows rows (pgBackRest), $strata_rows (strata)"
    step "both restores hold $strata_rows pgbench_history rows at $TARGET"
fi

REPORT=$(
    echo "PITR benchmark, $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "cluster: ${DATASET:-pgbench} data, pgbench scale $SCALE ($DB_SIZE), PostgreSQL 15, $(pgbackrest version), strata $("$STRATA" --version | awk '{print $2}')"
    echo "pushes: $SEGMENTS segments of 16 MiB from pgbench -c 4, local repositories, fsync on"
    printf '%-64s %10s %12s\n' "case" "wall" "stored"
    printf '%s\n' "${ROWS[@]}"
)
echo "$REPORT"
[ -n "${RESULTS:-}" ] && echo "$REPORT" >"$RESULTS"
step "done"
