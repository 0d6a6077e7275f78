#!/usr/bin/env bash
# Lookup load benchmark: `matchpoint serve` on a large index, audited, against a benchmark-only
# build with auditing compiled out, on SQLite and (when MATCHPOINT_BENCH_POSTGRES_URL is set)
# PostgreSQL. Client and server share the machine, on loopback.
#
#   bench/lookup-bench.sh [--records N] [--connections C] [--seconds S] [--dir DIR] [--only sqlite,postgres]
#
# --records N      involvement records in the index (default 1000000)
# --connections C  concurrent client connections (default 32)
# --seconds S      measured seconds per run, after 2 s warm-up (default 15)
# --dir DIR        scratch folder (default ${TMPDIR:-/tmp}/matchpoint-bench; data is shared with
#                  bench/sync-bench.sh)
# --only LIST      stores to measure (default sqlite,postgres)
#
# Prints lookups/s and p50/p99 latency per store and build, and the audited/unaudited ratio.
# The unaudited build is made with RUSTFLAGS="--cfg matchpoint_unaudited" in its own target
# folder (<target dir>/unaudited); no cargo profile sets that cfg, and such a binary serves on
# loopback only.
set -euo pipefail

records=1000000
connections=32
seconds=15
scratch="${TMPDIR:-/tmp}/matchpoint-bench"
only=sqlite,postgres
seed=7
records_per_kilo_person=1602

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
while [[ $# -gt 0 ]]; do
  case "$1" in
    --records) records=$2; shift 2 ;;
    --connections) connections=$2; shift 2 ;;
    --seconds) seconds=$2; shift 2 ;;
    --dir) scratch=$2; shift 2 ;;
    --only) only=$2; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "unknown option: $1 (see --help)" >&2; exit 2 ;;
  esac
done

repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
log() { echo "== $*" >&2; }
wanted() { [[ ",$only," == *",$1,"* ]]; }
command -v curl >/dev/null || { echo "curl is needed" >&2; exit 1; }

mkdir -p "$scratch"
scratch=$(cd "$scratch" && pwd)
results="$scratch/lookup-$(date +%Y%m%dT%H%M%S)"
mkdir -p "$results"
log "results in $results"

target_dir=$(cargo metadata --format-version 1 --no-deps |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
log "building release, the unaudited benchmark build ($target_dir/unaudited) and the load generator"
cargo build --release -q -p matchpoint-hub
RUSTFLAGS="--cfg matchpoint_unaudited" cargo build --release -q -p matchpoint-hub --target-dir "$target_dir/unaudited"
load_exe=$(cargo bench -q -p matchpoint-hub --bench lookup_load --no-run --message-format=json |
  python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "lookup_load" and m.get("executable"):
        print(m["executable"])')
cp "$target_dir/release/matchpoint" "$results/matchpoint"
cp "$target_dir/unaudited/release/matchpoint" "$results/matchpoint-unaudited"
cp "$load_exe" "$results/lookup_load"
mp="$results/matchpoint"
git rev-parse --short HEAD >"$results/commit.txt" 2>/dev/null || true

install="$scratch/install"
mkdir -p "$install/mappings"
[[ -f "$install/matchpoint.key" ]] || "$mp" keygen --out "$install/matchpoint.key" --key-id bench-k1 >/dev/null
cp deploy/organisations.toml "$install/organisations.toml"
cp deploy/mappings/okc-2.toml "$install/mappings/okc-2.toml"

persons=$(( (records * 1000 + records_per_kilo_person - 1) / records_per_kilo_person ))
data="$scratch/lookup-data-$records"
if [[ ! -f "$data/okc-2/export.xml" ]]; then
  log "generating $persons persons (~$records records) into $data"
  rm -rf "$data"
  "$mp" generate --persons "$persons" --out "$data" --seed "$seed" --bad-share 0 >&2
fi
export_xml="$data/okc-2/export.xml"

# 100,000 client BSNs of the export in a fixed shuffled order (fake, generated numbers).
bsns="$data/bsns.txt"
[[ -f "$bsns" ]] || grep -o '<bsn>[0-9]*</bsn>' "$export_xml" | sed 's/<[^>]*>//g' |
  awk '!seen[$0]++' | shuf --random-source=<(yes) -n 100000 >"$bsns"
# The requester: a professional of the organisation with the most involvements, so the run
# mixes granted lookups (200) and refusals (403), both audited.
org_code=$(grep -o '<organisatie code="[^"]*"' "$export_xml" | sort | uniq -c | sort -rn | awk 'NR == 1' |
  sed 's/.*code="\([^"]*\)"/\1/')
org=$(python3 - "$install/mappings/okc-2.toml" "$install/organisations.toml" "$org_code" <<'PY'
import sys, tomllib
reg = tomllib.load(open(sys.argv[2], "rb"))
code = sys.argv[3]
for o in reg.get("organisation", []):
    if code == o.get("code") or code in o.get("source_codes", {}).get("okc-2", []):
        print(o["code"]); break
else:
    print(code)
PY
)

write_config() {
  cat >"$1" <<CFG
store = "$2"
key_file = "$install/matchpoint.key"
organisations = "$install/organisations.toml"
[[source]]
name = "okc-2"
kind = "xml_export"
location = "$export_xml"
mode = "full"
schedule = "0 30 2 * * *"
mapping = "$install/mappings/okc-2.toml"
CFG
}

port=18480
rows="$results/rows.tsv"
: >"$rows"

measure() {
  local store_label=$1 config=$2 build=$3 exe=$4 token=$5
  port=$((port + 1))
  log "$store_label, $build: serve on 127.0.0.1:$port, $connections connections, $seconds s"
  "$exe" serve --config "$config" --listen "127.0.0.1:$port" >"$results/serve-$store_label-$build.log" 2>&1 &
  local pid=$!
  local tries=0
  until curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1; do
    tries=$((tries + 1))
    if [[ $tries -gt 600 ]] || ! kill -0 "$pid" 2>/dev/null; then
      echo "serve did not become ready; see $results/serve-$store_label-$build.log" >&2
      kill "$pid" 2>/dev/null || true
      return 1
    fi
    sleep 0.1
  done
  local line
  line=$("$results/lookup_load" --url "http://127.0.0.1:$port" --token "$token" --bsns "$bsns" \
    --connections "$connections" --seconds "$seconds")
  kill -TERM "$pid"
  wait "$pid" || true
  echo "$line" | tee -a "$results/load.txt" >&2
  printf '%s\t%s\t%s\n' "$store_label" "$build" "$line" >>"$rows"
}

run_store() {
  local label=$1 url=$2
  local config="$results/$label.toml"
  write_config "$config" "$url"
  log "$label: syncing $export_xml"
  "$mp" sync --config "$config" >"$results/sync-$label.txt" 2>&1 || { cat "$results/sync-$label.txt" >&2; return 1; }
  local token
  token=$("$mp" users add --config "$config" --name "Load test" --role professional --organisation "$org" --json |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
  measure "$label" "$config" audited "$mp" "$token"
  measure "$label" "$config" unaudited "$results/matchpoint-unaudited" "$token"
}

if wanted sqlite; then
  rm -f "$results/index.db"*
  run_store sqlite "sqlite://$results/index.db"
fi
if wanted postgres && [[ -n "${MATCHPOINT_BENCH_POSTGRES_URL:-}" ]]; then
  db="matchpoint_lookup_bench_$$"
  psql -q "$MATCHPOINT_BENCH_POSTGRES_URL" -c "CREATE DATABASE $db" >/dev/null
  pg_url="${MATCHPOINT_BENCH_POSTGRES_URL%/*}/$db"
  run_store postgres "$pg_url" || true
  psql -q "$MATCHPOINT_BENCH_POSTGRES_URL" -c "DROP DATABASE $db WITH (FORCE)" >/dev/null || true
elif wanted postgres; then
  log "PostgreSQL skipped: set MATCHPOINT_BENCH_POSTGRES_URL (e.g. postgres://postgres@127.0.0.1:5432/postgres)"
fi

python3 - "$rows" "$records" "$connections" <<'PY'
import sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
def kv(line):
    return dict(p.split("=", 1) for p in line.split()[1:])
res = {(s, b): kv(l) for s, b, l in rows}
print(f"\nLookup load: {int(sys.argv[2]):,} involvements indexed, {sys.argv[3]} connections, loopback, client and server on this machine\n")
print(f"{'store':<9} {'build':<10} {'lookups/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'200':>8} {'403':>8} {'other':>6}")
for (s, b), r in res.items():
    print(f"{s:<9} {b:<10} {float(r['per_sec']):>10,.0f} {float(r['p50_ms']):>8.2f} {float(r['p99_ms']):>8.2f} {r['ok']:>8} {r['forbidden']:>8} {r['other']:>6}")
print()
targets = {"sqlite": 5000, "postgres": 3000}
for s in ("sqlite", "postgres"):
    a, u = res.get((s, "audited")), res.get((s, "unaudited"))
    if not a or not u:
        continue
    ratio = float(a["per_sec"]) / max(float(u["per_sec"]), 1e-9)
    ok = lambda c: "met" if c else "MISSED"
    print(f"{s}: audited/unaudited {ratio:.2f} (target >= 0.7: {ok(ratio >= 0.7)}); "
          f"audited {float(a['per_sec']):,.0f}/s (target >= {targets[s]:,}: {ok(float(a['per_sec']) >= targets[s])}); "
          f"p99 {float(a['p99_ms']):.1f} ms (target < 20: {ok(float(a['p99_ms']) < 20)})")
PY
