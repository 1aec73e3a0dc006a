#!/usr/bin/env bash
# Benchmarks `strata backup` of a Redis source (an RDB snapshot over the
# replication protocol) against the equivalent shell pipeline, and
# `strata restore --into` a second running server.
#
#   scripts/bench.sh redis                       # ~1.2 GiB data set, 3 rounds
#   REDIS_MB=64 REPS=1 scripts/bench.sh redis    # quick check of the script
#
# Environment:
#   REDIS_MB          approximate data set size in MiB of values (default 1200;
#                     Redis's used_memory comes out somewhat larger)
#   REPS              measured rounds after one warm-up round (default 3); a
#                     round runs every case once, so background load hits all
#                     cases alike; the table shows median and min wall time
#   BENCH_DIR         work directory (default /var/tmp/strata-bench-redis);
#                     removed at the end unless BENCH_KEEP=1
#   CARGO_TARGET_DIR  where the release build goes (default /var/tmp/strata-target)
#   RESULTS           also write the final table to this file
#
# Cases (both servers run with repl-diskless-sync-delay 0: the default 5 s
# would add 5 s to every replication-based snapshot, strata's and
# redis-cli's alike):
#   floor         redis-cli --rdb - > /dev/null
#   pipeline      redis-cli --rdb - | zstd -3 -T0 | age -r KEY > FILE
#   strata L1     strata backup cache   ([compression] level = 1, the default)
#   strata L3     strata backup cache   ([compression] level = 3, as the pipeline)
#   into          strata restore cache --into redis://…  --replace (a second server)
#   logical       strata backup cache   (mode = "logical": SCAN + DUMP, level 1)
#   logical into  strata restore cache --into redis://…  --replace, of that backup
#                 (pipelined RESTORE … ABSTTL REPLACE)
#
# A second table gives each strata case's throughput: keys/s and MB/s of
# the data it moved (the backup's plain bytes: the RDB, or the logical
# object), from the median wall time.
#
# The data set: keys of JSON-like session documents (~1 KiB: fixed field
# names, user ids, random hex tokens, a short word list), compressible
# about as real cache data is.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO_ROOT=$PWD
REDIS_MB=${REDIS_MB:-1200}
REPS=${REPS:-3}
BENCH_DIR=${BENCH_DIR:-/var/tmp/strata-bench-redis}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/strata-target}
T0=$SECONDS

step() { printf '==> [bench redis +%ss] %s\n' "$((SECONDS - T0))" "$*" >&2; }
die() { printf '==> [bench redis] ERROR: %s\n' "$*" >&2; exit 1; }

command -v /usr/bin/time >/dev/null || { step "installing time"; apt-get install -y -q time >/dev/null; }
for c in redis-server redis-cli zstd age jq cargo python3; do
    command -v "$c" >/dev/null || die "$c is not installed"
done

step "building strata (release) in $CARGO_TARGET_DIR"
cargo build --release --quiet --bin strata
STRATA=$CARGO_TARGET_DIR/release/strata

[ -e "$BENCH_DIR" ] && die "$BENCH_DIR exists; remove it or set BENCH_DIR"
mkdir -p "$BENCH_DIR/src" "$BENCH_DIR/dst" "$BENCH_DIR/out"
PIDS=()
cleanup() {
    local rc=$?
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    # let the servers exit before their directories go (rm races a
    # server still writing otherwise)
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    if [ "${BENCH_KEEP:-0}" = 1 ]; then step "kept $BENCH_DIR"; else rm -rf "$BENCH_DIR"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
    local p=$1
    while (: </dev/tcp/127.0.0.1/$p) 2>/dev/null; do p=$((p + 1)); done
    echo "$p"
}
start_redis() { # DIR PORT
    redis-server --port "$2" --bind 127.0.0.1 --dir "$1" --save '' --appendonly no \
        --repl-diskless-sync-delay 0 --daemonize no --logfile "$1/redis.log" \
        </dev/null >/dev/null 2>&1 &
    PIDS+=($!)
    for _ in $(seq 100); do redis-cli -p "$2" ping >/dev/null 2>&1 && return; sleep 0.1; done
    die "redis-server on port $2 did not start"
}
SRC_PORT=$(free_port 16400)
start_redis "$BENCH_DIR/src" "$SRC_PORT"
DST_PORT=$(free_port $((SRC_PORT + 1)))
start_redis "$BENCH_DIR/dst" "$DST_PORT"

step "filling redis on port $SRC_PORT with ~$REDIS_MB MiB of session documents"
python3 - "$REDIS_MB" <<'PY' | redis-cli -p "$SRC_PORT" --pipe >"$BENCH_DIR/fill.log"
import os, random, sys
target = int(sys.argv[1]) << 20
rnd = random.Random(42)
words = ("checkout cart search login logout view product category banner promo "
         "recommend wishlist review rating shipping payment invoice refund").split()
out = sys.stdout.buffer
size, i = 0, 0
buf = []
while size < target:
    uid = rnd.randrange(1, 5_000_000)
    hist = " ".join(rnd.choice(words) for _ in range(rnd.randrange(40, 90)))
    doc = ('{"user_id":%d,"name":"user-%d","email":"user%d@example.com",'
           '"token":"%s","csrf":"%s","locale":"en-GB","tz":"Europe/London",'
           '"cart":[{"sku":"SKU-%06d","qty":%d,"price":%d.%02d},{"sku":"SKU-%06d","qty":%d,"price":%d.%02d}],'
           '"flags":{"beta":%s,"newsletter":%s,"consent":"2026-%02d-%02dT10:00:00Z"},'
           '"history":"%s"}') % (
        uid, uid, uid, os.urandom(32).hex(), os.urandom(16).hex(),
        rnd.randrange(10**6), rnd.randrange(1, 5), rnd.randrange(1, 500), rnd.randrange(100),
        rnd.randrange(10**6), rnd.randrange(1, 5), rnd.randrange(1, 500), rnd.randrange(100),
        "true" if rnd.random() < .1 else "false", "true" if rnd.random() < .5 else "false",
        rnd.randrange(1, 13), rnd.randrange(1, 29), hist)
    key = "session:%d" % i
    buf.append(b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (
        len(key), key.encode(), len(doc), doc.encode()))
    size += len(doc) + len(key)
    i += 1
    if len(buf) >= 10000:
        out.write(b"".join(buf)); buf.clear()
out.write(b"".join(buf))
PY
USED=$(redis-cli -p "$SRC_PORT" info memory | awk -F: '/^used_memory:/{print $2}' | tr -d '\r')
KEYS=$(redis-cli -p "$SRC_PORT" dbsize)
RDB_BYTES=$(redis-cli -p "$SRC_PORT" --rdb - 2>/dev/null | wc -c)
step "data set: $KEYS keys, used_memory $((USED >> 20)) MiB, RDB $((RDB_BYTES >> 20)) MiB"

KEY=$BENCH_DIR/identity.txt
RECIPIENT=$("$STRATA" key generate --out "$KEY" 2>/dev/null)
write_config() { # FILE LEVEL [MODE]
    cat >"$1" <<EOF
[repository]
url = "file://$BENCH_DIR/repo"

[encryption]
recipients = ["$RECIPIENT"]
identity_file = "$KEY"

[compression]
level = $2

[sources.cache]
kind = "redis"
url = "redis://127.0.0.1:$SRC_PORT"
mode = "${3:-auto}"
EOF
}
write_config "$BENCH_DIR/l1.toml" 1
write_config "$BENCH_DIR/l3.toml" 3
write_config "$BENCH_DIR/logical.toml" 1 logical
PLAIN=$BENCH_DIR/plain.tsv # case plain_bytes
: >"$PLAIN"
"$STRATA" --config "$BENCH_DIR/l1.toml" init >/dev/null

RAW=$BENCH_DIR/raw.tsv # case run wall cpu rss_kib stored_bytes
: >"$RAW"
TIMEF=$BENCH_DIR/time.out
timed() { # CASE RUN STORED_CMD -- COMMAND...
    local case=$1 run=$2 stored_cmd=$3
    shift 4
    sync
    if ! /usr/bin/time -f '%e %U %S %M' -o "$TIMEF" "$@" >"$BENCH_DIR/last.out" 2>"$BENCH_DIR/last.err"; then
        cat "$BENCH_DIR/last.err" >&2
        die "$case failed: $*"
    fi
    local wall user sys rss cpu stored
    read -r wall user sys rss <"$TIMEF"
    cpu=$(awk -v u="$user" -v s="$sys" 'BEGIN { printf "%.2f", u + s }')
    stored=$(eval "$stored_cmd")
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$case" "$run" "$wall" "$cpu" "$rss" "$stored" >>"$RAW"
    printf '    %-10s run %s: %6.2fs wall, %6.2fs CPU, %4d MiB RSS\n' "$case" "$run" "$wall" "$cpu" "$((rss / 1024))" >&2
}
OUT=$BENCH_DIR/out/pipeline.age
STORED_JSON="jq -r .stored_bytes $BENCH_DIR/last.out"
for run in $(seq 0 "$REPS"); do
    timed floor "$run" 'echo -' -- bash -c "redis-cli -p $SRC_PORT --rdb - 2>/dev/null > /dev/null"
    timed pipeline "$run" "stat -c %s $OUT" -- bash -o pipefail -c \
        "redis-cli -p $SRC_PORT --rdb - 2>/dev/null | zstd -q -3 -T0 | age -r '$RECIPIENT' > '$OUT'"
    rm -f "$OUT"
    timed "strata L1" "$run" "$STORED_JSON" -- "$STRATA" --json --config "$BENCH_DIR/l1.toml" backup cache
    timed "strata L3" "$run" "$STORED_JSON" -- "$STRATA" --json --config "$BENCH_DIR/l3.toml" backup cache
    LAST=$(jq -r .id "$BENCH_DIR/last.out")
    P=$(jq -r .plain_bytes "$BENCH_DIR/last.out")
    printf 'strata L1\t%s\ninto\t%s\n' "$P" "$P" >>"$PLAIN"
    timed into "$run" 'echo -' -- "$STRATA" --json --config "$BENCH_DIR/l1.toml" restore cache \
        --backup "$LAST" --into "redis://127.0.0.1:$DST_PORT" --replace
    timed logical "$run" "$STORED_JSON" -- "$STRATA" --json --config "$BENCH_DIR/logical.toml" backup cache
    LAST=$(jq -r .id "$BENCH_DIR/last.out")
    P=$(jq -r .plain_bytes "$BENCH_DIR/last.out")
    printf 'logical\t%s\nlogical into\t%s\n' "$P" "$P" >>"$PLAIN"
    timed "logical into" "$run" 'echo -' -- "$STRATA" --json --config "$BENCH_DIR/logical.toml" restore cache \
        --backup "$LAST" --into "redis://127.0.0.1:$DST_PORT" --replace
done
[ "$(redis-cli -p "$DST_PORT" dbsize)" = "$KEYS" ] || die "the restored server does not hold $KEYS keys"

report() {
    echo "strata Redis benchmark: $KEYS keys, used_memory $((USED >> 20)) MiB, RDB $((RDB_BYTES >> 20)) MiB; REPS=$REPS, $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB RAM"
    echo "strata $("$STRATA" --version | awk '{print $2}') ($(git -C "$REPO_ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$REPO_ROOT" diff --quiet 2>/dev/null || echo '+dirty')), $(redis-server --version | awk '{print $3}'), $(zstd --version | head -1), age $(age --version)"
    echo
    python3 - "$RAW" "$RDB_BYTES" "$PLAIN" "$KEYS" <<'PY'
import sys, statistics
raw, rdb, plain_f, keys = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
rows = [l.rstrip("\n").split("\t") for l in open(raw)]
order = ["floor", "pipeline", "strata L1", "strata L3", "into", "logical", "logical into"]
stat = {}
for case in order:
    rs = [r for r in rows if r[0] == case and r[1] != "0"]
    if not rs:
        continue
    walls = sorted(float(r[2]) for r in rs)
    stored = [int(r[5]) for r in rs if r[5] not in ("-", "null")]
    stat[case] = (statistics.median(walls), walls, statistics.median(float(r[3]) for r in rs),
                  max(int(r[4]) for r in rs) / 1024, stored)
def x(case, base):
    if base not in stat:
        return "–"
    m = stat[case][0] / stat[base][0]
    return f"{m:.2f}× ({stat[case][1][0] / stat[base][1][0]:.2f}×)" if len(stat[case][1]) > 1 else f"{m:.2f}×"
print("| case | wall s: median (min–max) | CPU s | peak RSS MiB | stored MB | RDB:stored | × pipeline: median (min) | × floor |")
print("|---|---|---|---|---|---|---|---|")
for case in order:
    if case not in stat:
        continue
    med, walls, cpu, rss, stored = stat[case]
    wall = f"{med:.2f} ({walls[0]:.2f}–{walls[-1]:.2f})" if len(walls) > 1 else f"{med:.2f}"
    st = f"{statistics.median(stored)/1e6:.1f}" if stored else "–"
    ratio = f"{rdb/statistics.median(stored):.1f}:1" if stored else "–"
    xp = "–" if case in ("floor", "into", "logical into") else x(case, "pipeline")
    print(f"| {case} | {wall} | {cpu:.1f} | {rss:.0f} | {st} | {ratio} | {xp} | {x(case, 'floor')} |")
plain = {}
for l in open(plain_f):
    c, b = l.rstrip("\n").split("\t")
    plain.setdefault(c, []).append(int(b))
print()
print("| case | keys | data MB | wall s (median) | keys/s | MB/s | × strata L1 wall |")
print("|---|---|---|---|---|---|---|")
for case in ["strata L1", "into", "logical", "logical into"]:
    if case not in stat or case not in plain:
        continue
    med = stat[case][0]
    mb = statistics.median(plain[case]) / 1e6
    rel = f"{med / stat['strata L1'][0]:.2f}×" if "strata L1" in stat else "–"
    print(f"| {case} | {keys} | {mb:.1f} | {med:.2f} | {keys / med:,.0f} | {mb / med:.1f} | {rel} |")
PY
}
step "done in $((SECONDS - T0))s"
if [ -n "${RESULTS:-}" ]; then report | tee "$RESULTS"; else report; fi
