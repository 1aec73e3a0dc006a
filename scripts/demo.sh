#!/usr/bin/env bash
# The main job on the embedded default, end to end: builds strata, starts a
# throwaway PostgreSQL (unless DEMO_PG_URL names one), backs it up to a
# local repository, lists, verifies and restores it, and compares.
#
#   scripts/demo.sh                                   # throwaway server
#   DEMO_PG_URL=postgres://me@db:5432/app scripts/demo.sh
#
# Everything lives in DEMO_DIR (default: a new temp dir, removed at exit
# unless DEMO_KEEP=1).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export DEBIAN_FRONTEND=noninteractive
export PATH="$HOME/.cargo/bin:$PATH"
say() { printf '\n==> %s\n' "$*"; }

need_pkgs=()
for p in postgresql-15 age zstd; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || need_pkgs+=("$p")
done
if [ ${#need_pkgs[@]} -gt 0 ]; then
    say "installing ${need_pkgs[*]}"
    apt-get update -q && apt-get install -y -q "${need_pkgs[@]}" </dev/null
fi

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/strata-target}
say "building strata (release)"
cargo build --release -q
STRATA="$CARGO_TARGET_DIR/release/strata"

DEMO_DIR=${DEMO_DIR:-$(mktemp -d /tmp/strata-demo.XXXXXX)}
chmod 755 "$DEMO_DIR"
PGBIN=/usr/lib/postgresql/15/bin
cleanup() {
    if [ -n "${PGDATA_DIR:-}" ]; then run_pg "$PGBIN/pg_ctl" -D "$PGDATA_DIR" -m fast stop >/dev/null 2>&1 || true; fi
    [ "${DEMO_KEEP:-0}" = 1 ] || rm -rf "$DEMO_DIR"
}
trap cleanup EXIT
# PostgreSQL refuses to run as root: run the server as `postgres` then.
run_pg() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

if [ -n "${DEMO_PG_URL:-}" ]; then
    PG_URL=$DEMO_PG_URL
else
    PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    PGDATA_DIR=$DEMO_DIR/pgdata
    mkdir -p "$PGDATA_DIR"
    [ "$(id -u)" -eq 0 ] && chown postgres: "$PGDATA_DIR"
    say "starting a throwaway PostgreSQL 15 on port $PORT"
    run_pg "$PGBIN/initdb" -D "$PGDATA_DIR" -U postgres --auth=trust -E UTF8 >/dev/null
    run_pg "$PGBIN/pg_ctl" -D "$PGDATA_DIR" -l "$PGDATA_DIR/log" -w \
        -o "-p $PORT -k $PGDATA_DIR -c listen_addresses=127.0.0.1" start >/dev/null
    PG_URL="postgres://postgres@127.0.0.1:$PORT/app"
    psql -X -q "postgres://postgres@127.0.0.1:$PORT/postgres" -c "CREATE DATABASE app"
    psql -X -q "$PG_URL" <<'SQL'
CREATE TABLE orders (id bigint PRIMARY KEY, placed timestamptz, total numeric(12,2), note text, tags text[], data jsonb);
INSERT INTO orders SELECT g, now() - g * interval '1 minute', g * 1.25, 'commande n°' || g, ARRAY['a', 'b' || g],
       jsonb_build_object('n', g, 'ok', g % 2 = 0) FROM generate_series(1, 100000) g;
SQL
fi

say "creating a key and a local repository in $DEMO_DIR"
RECIPIENT=$("$STRATA" key generate --out "$DEMO_DIR/key.txt")
cat > "$DEMO_DIR/strata.toml" <<TOML
[repository]
url = "file://$DEMO_DIR/repo"

[encryption]
recipients = ["$RECIPIENT"]
identity_file = "key.txt"

[sources.app]
kind = "postgres"
url = "$PG_URL"
TOML
export STRATA_CONFIG=$DEMO_DIR/strata.toml
"$STRATA" init

say "strata backup app"
"$STRATA" backup app
say "strata list"
"$STRATA" list
say "strata verify --read-data"
"$STRATA" verify --read-data
say "strata restore app --to-database app_restored --create"
"$STRATA" restore app --to-database app_restored --create

if [ -z "${DEMO_PG_URL:-}" ]; then
    say "comparing the original and the restored database"
    q="SELECT md5(string_agg(o::text, ',' ORDER BY id)) FROM orders o"
    a=$(psql -X -At "$PG_URL" -c "$q")
    b=$(psql -X -At "${PG_URL%/app}/app_restored" -c "$q")
    [ "$a" = "$b" ] && echo "identical ($a)" || { echo "DIFFERENT: $a vs $b"; exit 1; }
fi
say "done: the whole path works"
