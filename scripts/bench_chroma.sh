#!/usr/bin/env bash
# Benchmarks the export (`strata backup`) and import (`strata restore
# --into`) of a ChromaDB source, in records per second.
#
#   scripts/bench.sh chroma                          # 50,000 records × 384
#   RECORDS=5000 REPS=1 scripts/bench.sh chroma      # quick check of the script
#
# Environment:
#   RECORDS           records in the data set (default 50000), dimension DIM
#                     (default 384), in 3 collections (cosine, l2, ip)
#   REPS              measured rounds (default 2); the table shows the median
#   BENCH_DIR         work directory (default /var/tmp/strata-bench-chroma);
#                     removed at the end unless BENCH_KEEP=1
#   STRATA_CHROMA_VENV  the chromadb venv (default /var/tmp/strata-chroma-venv;
#                     scripts/test.sh creates it)
#   CARGO_TARGET_DIR  where the release build goes (default /var/tmp/strata-target)
#   RESULTS           also write the final table to this file
#
# Cases:
#   fill      the data set added by a Python client in batches of 1000
#             (base64 embeddings): what Chroma's add costs on this machine,
#             the floor of any import
#   export    strata backup vectors          (get pages, encode, zstd, age)
#   import    strata restore vectors --into  (a fresh second server: fetch,
#             decode, add in batches of 1000, then count and probe checks)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
RECORDS=${RECORDS:-50000}
DIM=${DIM:-384}
REPS=${REPS:-2}
BENCH_DIR=${BENCH_DIR:-/var/tmp/strata-bench-chroma}
VENV=${STRATA_CHROMA_VENV:-/var/tmp/strata-chroma-venv}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/strata-target}
T0=$SECONDS

step() { printf '==> [bench chroma +%ss] %s\n' "$((SECONDS - T0))" "$*" >&2; }
die() { printf '==> [bench chroma] ERROR: %s\n' "$*" >&2; exit 1; }

[ -x "$VENV/bin/chroma" ] || die "no chroma in $VENV: run scripts/test.sh (it creates the venv) or set STRATA_CHROMA_VENV"
for c in cargo jq curl python3; do command -v "$c" >/dev/null || die "$c is not installed"; done

step "building strata (release) in $CARGO_TARGET_DIR"
cargo build --release --quiet --bin strata
STRATA=$CARGO_TARGET_DIR/release/strata

[ -e "$BENCH_DIR" ] && die "$BENCH_DIR exists; remove it or set BENCH_DIR"
mkdir -p "$BENCH_DIR"
PIDS=()
cleanup() {
    local rc=$?
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    if [ "${BENCH_KEEP:-0}" = 1 ]; then step "kept $BENCH_DIR"; else rm -rf "$BENCH_DIR"; fi
    exit $rc
}
trap cleanup EXIT INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# start_chroma NAME: starts a server, sets PORT (not in a subshell, so that
# PIDS reaches the cleanup trap)
start_chroma() {
    local name=$1
    PORT=$(free_port)
    ANONYMIZED_TELEMETRY=False "$VENV/bin/chroma" run --path "$BENCH_DIR/$name" \
        --host 127.0.0.1 --port "$PORT" >"$BENCH_DIR/$name.log" 2>&1 &
    PIDS+=($!)
    for _ in $(seq 1 300); do
        curl -fs "http://127.0.0.1:$PORT/api/v2/heartbeat" >/dev/null 2>&1 && return
        sleep 0.2
    done
    die "chroma $name did not start (log: $BENCH_DIR/$name.log)"
}

start_chroma src
SRC_PORT=$PORT
step "source Chroma on port $SRC_PORT; filling $RECORDS records × $DIM"
FILL_START=$(date +%s.%N)
python3 - "$SRC_PORT" "$RECORDS" "$DIM" <<'PY'
import base64, json, random, struct, sys, urllib.request
port, total, dim = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
base = f"http://127.0.0.1:{port}/api/v2/tenants/default_tenant/databases/default_database"
def call(path, body):
    r = urllib.request.Request(base + path, data=json.dumps(body).encode(),
                               headers={"content-type": "application/json"})
    with urllib.request.urlopen(r) as f:
        return json.loads(f.read() or "null")
rng = random.Random(42)
sizes = [total * 2 // 5, total * 2 // 5, total - 2 * (total * 2 // 5)]
for space, n in zip(["cosine", "l2", "ip"], sizes):
    c = call("/collections", {"name": f"bench-{space}", "configuration": {"hnsw": {"space": space}}})
    for start in range(0, n, 1000):
        k = min(1000, n - start)
        ids = [f"{space}-{i}" for i in range(start, start + k)]
        embs = [base64.b64encode(struct.pack(f"<{dim}f", *[rng.random() - 0.5 for _ in range(dim)])).decode()
                for _ in range(k)]
        docs = [f"document {i} about {space}" for i in range(start, start + k)]
        metas = [{"i": i, "group": i % 17} for i in range(start, start + k)]
        call(f"/collections/{c['id']}/add", {"ids": ids, "embeddings": embs, "documents": docs, "metadatas": metas})
PY
FILL_S=$(echo "$(date +%s.%N) - $FILL_START" | bc)

cd "$BENCH_DIR"
"$STRATA" key generate --out key.txt >recipient.txt 2>/dev/null
cat >strata.toml <<TOML
[repository]
url = "file://$BENCH_DIR/repo"
[encryption]
recipients = ["$(cat recipient.txt)"]
identity_file = "$BENCH_DIR/key.txt"
[sources.vectors]
kind = "chroma"
url = "http://127.0.0.1:$SRC_PORT"
TOML
"$STRATA" --config strata.toml init >/dev/null

median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
EXPORTS=() IMPORTS=() TRANSFER=() ADDS=() STORED=()
for r in $(seq 1 "$REPS"); do
    step "round $r: export"
    out=$("$STRATA" --config strata.toml --json backup vectors)
    EXPORTS+=("$(jq -r .duration_seconds <<<"$out")")
    STORED+=("$(jq -r .stored_bytes <<<"$out")")
    id=$(jq -r .id <<<"$out")
    start_chroma "dst$r"
    DST_PORT=$PORT
    step "round $r: import into port $DST_PORT"
    t=$(date +%s.%N)
    out=$("$STRATA" --config strata.toml --json restore vectors --backup "$id" --into "http://127.0.0.1:$DST_PORT")
    IMPORTS+=("$(echo "$(date +%s.%N) - $t" | bc)")
    TRANSFER+=("$(jq -r .transfer_seconds <<<"$out")")
    ADDS+=("$(jq -r .import_seconds <<<"$out")")
    [ "$(jq -r .records <<<"$out")" = "$RECORDS" ] || die "restored $(jq -r .records <<<"$out") records, not $RECORDS"
done

E=$(printf '%s\n' "${EXPORTS[@]}" | median)
I=$(printf '%s\n' "${IMPORTS[@]}" | median)
A=$(printf '%s\n' "${ADDS[@]}" | median)
S=$(printf '%s\n' "${STORED[@]}" | median)
rate() { python3 -c "print(f'{$RECORDS/$1:,.0f}')"; }
table=$(cat <<TXT
Chroma $("$VENV/bin/python" -c 'import chromadb; print(chromadb.__version__)'), $RECORDS records × $DIM (3 collections), $(nproc) cores, median of $REPS
case                         wall s    records/s
fill (python client, add)    $(printf '%6.1f' "$FILL_S")    $(rate "$FILL_S")
strata backup (export)       $(printf '%6.1f' "$E")    $(rate "$E")
strata restore --into        $(printf '%6.1f' "$I")    $(rate "$I")   (of which Chroma add calls: $(printf '%.1f' "$A") s)
stored: $(python3 -c "print(f'{$S/1048576:.1f} MiB')") (plain float32 alone: $(python3 -c "print(f'{$RECORDS*$DIM*4/1048576:.1f} MiB')"))
TXT
)
echo "$table"
if [ -n "${RESULTS:-}" ]; then echo "$table" >"$RESULTS"; fi
