#!/usr/bin/env bash
# The documented sync benchmark (bench/README.md): builds release, generates one synthetic
# okc-2 export of about N records, then measures on this machine in one run:
#   floor            parse + map + pseudonymise, no store (cargo bench --bench floor)
#   sqlite first     `matchpoint sync` into an empty SQLite index
#   sqlite re-sync   the same export again (nothing changes)
#   postgres first / re-sync   the same on a fresh PostgreSQL database, when
#                    MATCHPOINT_BENCH_POSTGRES_URL (a maintenance URL) is set
#   python           bench/baseline.py (ElementTree + hmac + sqlite3)
# Each sync and the baseline run under /usr/bin/time -v (wall time, peak RSS).
#
# Usage: bench/sync-bench.sh [--records N] [--rss-scale] [--scale-records M] [--dir DIR]
#                            [--regenerate] [--keep]
#   --records N        records in the export (default 1000000)
#   --rss-scale        also run the first SQLite sync at M records (default 5N) and compare
#                      its peak RSS with the one at N
#   --scale-records M  the larger size for --rss-scale
#   --dir DIR          scratch folder (default ${TMPDIR:-/tmp}/matchpoint-bench); generated
#                      exports are kept there and reused by later runs of the same size
#   --regenerate       generate the exports again even if present
#   --keep             keep index databases (and the PostgreSQL database) after the run
set -euo pipefail

records=1000000
rss_scale=0
scale_records=
scratch="${TMPDIR:-/tmp}/matchpoint-bench"
regenerate=0
keep=0
seed=7
bad_share=0.02
# `matchpoint generate` writes about 1.602 records per person at scale (1.63 for tiny runs:
# households of parents and children); persons = records / 1.602.
records_per_kilo_person=1602

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }

while [[ $# -gt 0 ]]; do
  case "$1" in
    --records) records=$2; shift 2 ;;
    --rss-scale) rss_scale=1; shift ;;
    --scale-records) scale_records=$2; rss_scale=1; shift 2 ;;
    --dir) scratch=$2; shift 2 ;;
    --regenerate) regenerate=1; shift ;;
    --keep) keep=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "unknown option: $1 (see --help)" >&2; exit 2 ;;
  esac
done
[[ "$records" =~ ^[0-9]+$ && "$records" -gt 0 ]] || { echo "--records must be a positive number" >&2; exit 2; }
scale_records=${scale_records:-$((records * 5))}

repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"

if [[ ! -x /usr/bin/time ]]; then
  echo "/usr/bin/time (GNU time) is missing: install it with 'apt-get install -y time'." >&2
  exit 1
fi
command -v python3 >/dev/null || { echo "python3 is needed for the baseline and for reading results" >&2; exit 1; }

target_dir=$(cargo metadata --format-version 1 --no-deps |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
mp="$target_dir/release/matchpoint"

log() { echo "== $*" >&2; }

log "building release (cargo build --release -p matchpoint-hub; bench floor)"
cargo build --release -q -p matchpoint-hub
cargo bench -q -p matchpoint-hub --bench floor --no-run 2>/dev/null ||
  cargo bench -p matchpoint-hub --bench floor --no-run

mkdir -p "$scratch"
scratch=$(cd "$scratch" && pwd)
results="$scratch/results-$(date +%Y%m%dT%H%M%S)"
mkdir -p "$results"
log "scratch folder: $scratch (results in $results)"

# The installation: key, registry, mapping (configs are written per store below).
install="$scratch/install"
mkdir -p "$install/mappings"
[[ -f "$install/matchpoint.key" ]] || "$mp" keygen --out "$install/matchpoint.key" --key-id bench-k1 >/dev/null
cp deploy/organisations.toml "$install/organisations.toml"
cp deploy/mappings/okc-2.toml "$install/mappings/okc-2.toml"

# Generates (once) an export of about $1 records; prints its path.
export_for() {
  local n=$1
  local persons=$(( (n * 1000 + records_per_kilo_person - 1) / records_per_kilo_person ))
  local dir="$scratch/data-$n"
  local stamp="persons=$persons seed=$seed bad_share=$bad_share"
  if [[ $regenerate -eq 1 || ! -f "$dir/okc-2/export.xml" || "$(cat "$dir/.stamp" 2>/dev/null)" != "$stamp" ]]; then
    log "generating $persons persons (~$n records) into $dir"
    rm -rf "$dir"
    "$mp" generate --persons "$persons" --out "$dir" --seed "$seed" --bad-share "$bad_share" >&2
    echo "$stamp" >"$dir/.stamp"
  else
    log "reusing $dir/okc-2/export.xml ($stamp)"
  fi
  echo "$dir/okc-2/export.xml"
}

# Writes a config for store URL $2 and export $3 to $1.
write_config() {
  cat >"$1" <<EOF
store = "$2"
key_file = "$install/matchpoint.key"
organisations = "$install/organisations.toml"
[sync]
max_end_share = 0.10
batch_size = 5000
[[source]]
name = "okc-2"
kind = "xml_export"
location = "$3"
mode = "full"
schedule = "0 30 2 * * *"
mapping = "$install/mappings/okc-2.toml"
EOF
}

# Wall seconds and peak RSS (MB) from a `time -v` report: prints "SECONDS MB".
time_report() {
  awk -F': ' '
    /Elapsed \(wall clock\)/ { n = split($2, p, ":"); s = 0; for (i = 1; i <= n; i++) s = s * 60 + p[i] }
    /Maximum resident set size/ { rss = $2 / 1024 }
    END { printf "%.3f %.1f\n", s, rss }' "$1"
}

# Table rows: label records seconds rss_mb note, one per line in $rows.
rows="$results/rows.tsv"
: >"$rows"
phases="$results/phases.tsv"
: >"$phases"

# Runs one `matchpoint sync` under time -v; label $1, config $2. Records a row and phases.
measure_sync() {
  local label=$1 config=$2 slug=${1// /-}
  log "$label"
  local rc=0
  NO_COLOR=1 MATCHPOINT_LOG=info /usr/bin/time -v -o "$results/$slug.time" \
    "$mp" sync --config "$config" --json >"$results/$slug.json" 2>"$results/$slug.log" || rc=$?
  read -r secs rss < <(time_report "$results/$slug.time")
  local summary
  summary=$(python3 - "$results/$slug.json" "$results/$slug.log" "$rc" <<'PY'
import json, re, sys
from datetime import datetime
path, logpath, rc = sys.argv[1], sys.argv[2], int(sys.argv[3])
try:
    run = json.load(open(path))[0]
except Exception as e:
    tail = open(logpath, errors="replace").read().strip().splitlines()[-3:]
    print("FAILED 0 -", "exit", rc, "/", " | ".join(tail)[:300])
    sys.exit()
c = run["counts"]
ts = lambda s: datetime.fromisoformat(s.replace("Z", "+00:00"))
stage = publish = "-"
if run.get("finished_at"):
    start, fin = ts(run["started_at"]), ts(run["finished_at"])
    stage = f'{(fin - start).total_seconds():.2f}'
    ansi = re.compile(r"\x1b\[[0-9;]*m")
    for line in open(logpath, errors="replace"):
        line = ansi.sub("", line)
        if "Sync run published." in line:
            publish = f'{(ts(line.split()[0]) - fin).total_seconds():.2f}'
note = (f'{run["status"]}: read={c["read"]} inserted={c["inserted"]} updated={c["updated"]} '
        f'unchanged={c["unchanged"]} rejected={c["rejected"]}')
if run.get("error"):
    note += " error=" + run["error"][:200]
ok = "OK" if run["status"] == "succeeded" else "FAILED"
print(ok, c["read"], f"{stage}/{publish}", note)
PY
)
  local ok read phase note
  read -r ok read phase note <<<"$summary"
  printf '%s\t%s\t%s\t%s\t%s\n' "$label" "$read" "$secs" "$rss" "$note" >>"$rows"
  printf '%s\t%s\t%s\n' "$label" "$secs" "$phase" >>"$phases"
  log "  $secs s, peak RSS $rss MB, $note"
  [[ $ok == OK ]]
}

export_n=$(export_for "$records")
ls -l "$export_n" >&2

# 1. Floor.
log "floor (cargo bench -p matchpoint-hub --bench floor -- $export_n)"
floor_line=$(cargo bench -q -p matchpoint-hub --bench floor -- "$export_n" 2> >(cat >&2) | grep '^floor ')
echo "$floor_line" >"$results/floor.txt"
floor_records=$(sed -E 's/.*records=([0-9]+).*/\1/' <<<"$floor_line")
floor_secs=$(sed -E 's/.*seconds=([0-9.]+).*/\1/' <<<"$floor_line")
printf '%s\t%s\t%s\t%s\t%s\n' "floor" "$floor_records" "$floor_secs" "-" "median of 3, no store" >>"$rows"

# 2. SQLite: first sync into an empty index, then re-sync of the unchanged export.
sqlite_db="$scratch/index-$records.db"
rm -rf "$sqlite_db" "$sqlite_db"-* "$sqlite_db.staging"
write_config "$results/sqlite.toml" "sqlite://$sqlite_db" "$export_n"
measure_sync "sqlite first" "$results/sqlite.toml" || log "SQLite first sync failed (see $results)"
measure_sync "sqlite re-sync" "$results/sqlite.toml" || log "SQLite re-sync failed (see $results)"
[[ -f "$sqlite_db" ]] && log "SQLite index size: $(du -sh "$sqlite_db" | cut -f1)"

# 3. PostgreSQL, on a fresh database, when a maintenance URL is given.
pg_db=
if [[ -n "${MATCHPOINT_BENCH_POSTGRES_URL:-}" ]]; then
  if command -v psql >/dev/null; then
    pg_db="matchpoint_bench_$$"
    maint=$MATCHPOINT_BENCH_POSTGRES_URL
    base=${maint%%\?*}
    query=${maint#"$base"}
    pg_url="${base%/*}/$pg_db$query"
    drop_pg() { [[ $keep -eq 1 ]] || psql -q "$maint" -c "DROP DATABASE IF EXISTS $pg_db" >/dev/null 2>&1 || true; }
    trap drop_pg EXIT
    if psql -q "$maint" -c "CREATE DATABASE $pg_db" >/dev/null; then
      log "PostgreSQL database $pg_db created"
      write_config "$results/postgres.toml" "$pg_url" "$export_n"
      if measure_sync "postgres first" "$results/postgres.toml"; then
        measure_sync "postgres re-sync" "$results/postgres.toml" || log "PostgreSQL re-sync failed (see $results)"
      else
        log "PostgreSQL first sync failed (see $results/postgres-first.log); SQLite results stand"
      fi
    else
      log "cannot create database $pg_db via $maint: PostgreSQL part skipped"
    fi
  else
    log "psql is missing: cannot create a fresh database; PostgreSQL part skipped"
  fi
else
  log "MATCHPOINT_BENCH_POSTGRES_URL is not set: PostgreSQL part skipped"
fi

# 4. Python baseline.
log "python baseline (bench/baseline.py)"
/usr/bin/time -v -o "$results/python.time" \
  python3 bench/baseline.py "$export_n" --db "$scratch/python-$records.db" \
  --key "$install/matchpoint.key" >"$results/python.txt"
py_line=$(grep '^python ' "$results/python.txt")
read -r py_secs py_rss < <(time_report "$results/python.time")
py_records=$(sed -E 's/.*records=([0-9]+).*/\1/' <<<"$py_line")
py_inner=$(sed -E 's/.*seconds=([0-9.]+).*/\1/' <<<"$py_line")
printf '%s\t%s\t%s\t%s\t%s\n' "python" "$py_records" "$py_secs" "$py_rss" "in-script ${py_inner}s" >>"$rows"
rm -f "$scratch/python-$records.db"

# 5. Peak RSS against input size.
if [[ $rss_scale -eq 1 ]]; then
  export_m=$(export_for "$scale_records")
  big_db="$scratch/index-$scale_records.db"
  rm -rf "$big_db" "$big_db"-* "$big_db.staging"
  write_config "$results/sqlite-scale.toml" "sqlite://$big_db" "$export_m"
  measure_sync "sqlite first x$((scale_records / records))" "$results/sqlite-scale.toml" ||
    log "SQLite first sync at $scale_records records failed"
  [[ $keep -eq 1 ]] || rm -rf "$big_db" "$big_db"-* "$big_db.staging"
fi
[[ $keep -eq 1 ]] || rm -rf "$sqlite_db" "$sqlite_db"-* "$sqlite_db.staging"

# The table.
python3 - "$rows" "$phases" "$records" <<'PY'
import sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
phases = {l.split("\t")[0]: l.rstrip("\n").split("\t") for l in open(sys.argv[2]) if l.strip()}
def rate(r):
    try:
        return int(r[1]) / float(r[2])
    except (ValueError, ZeroDivisionError):
        return None
by = {r[0]: r for r in rows}
floor = rate(by["floor"]) if "floor" in by else None
py = rate(by["python"]) if "python" in by else None
print(f"\nSync benchmark, {sys.argv[3]} records requested, this machine:\n")
hdr = ["measurement", "records", "seconds", "records/s", "x floor", "x python", "peak RSS MB",
       "stage/publish s"]
out = []
for r in rows:
    rr = rate(r)
    out.append([
        r[0], r[1], r[2], f"{rr:,.0f}" if rr else "-",
        f"{rr / floor:.2f}" if rr and floor else "-",
        f"{rr / py:.1f}" if rr and py else "-",
        r[3], phases.get(r[0], ["", "", "-"])[2],
    ])
w = [max(len(str(x)) for x in col) for col in zip(hdr, *out)]
line = lambda cells: "  ".join(f"{c:<{n}}" if i == 0 else f"{c:>{n}}" for i, (c, n) in enumerate(zip(cells, w)))
print(line(hdr))
for o in out:
    print(line(o))
print()
for r in rows:
    if r[4] and r[0] not in ("floor",):
        print(f"  {r[0]}: {r[4]}")
# Targets from the issue.
print("\nTargets:")
def check(label, ok, detail):
    print(f"  [{'ok' if ok else 'MISS'}] {label}: {detail}")
targets = [("sqlite first", 0.5), ("sqlite re-sync", 0.75), ("postgres first", 0.3), ("postgres re-sync", 0.5)]
for name, t in targets:
    if name in by and floor and rate(by[name]):
        f = rate(by[name]) / floor
        check(f"{name} >= {t}x floor", f >= t, f"{f:.2f}x")
        if py:
            p = rate(by[name]) / py
            check(f"{name} >= 10x python", p >= 10, f"{p:.1f}x")
        try:
            mb = float(by[name][3])
            check(f"{name} peak RSS < 200 MB", mb < 200, f"{mb:.0f} MB")
        except ValueError:
            pass
scale = [r for r in rows if r[0].startswith("sqlite first x")]
if scale and "sqlite first" in by:
    a, b = float(by["sqlite first"][3]), float(scale[0][3])
    check(f"peak RSS independent of input size ({by['sqlite first'][1]} vs {scale[0][1]} records)",
          b < 1.25 * a + 10, f"{a:.0f} MB vs {b:.0f} MB")
PY
echo
echo "Raw outputs: $results"
