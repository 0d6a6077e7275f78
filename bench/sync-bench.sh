#!/usr/bin/env bash
# The documented sync benchmark (bench/README.md): builds release, generates one synthetic
# okc-2 export of about N records, then measures on this machine in one run:
#   floor            parse + map + pseudonymise, no store (cargo bench --bench floor)
#   sqlite first     `matchpoint sync` into an empty SQLite index
#   sqlite re-sync   the same export again (nothing changes)
#   postgres first / re-sync   the same on a fresh PostgreSQL database, when
#                    MATCHPOINT_BENCH_POSTGRES_URL (a maintenance URL) is set; each also
#                    reads pg_current_wal_lsn() before and after and prints the WAL volume
#                    (bytes per record, GB per million records). WAL is cluster-wide: other
#                    activity on the same server during the phase is counted too.
#   python           bench/baseline.py (ElementTree + hmac + sqlite3)
# Each sync and the baseline run under /usr/bin/time -v (wall time, peak RSS).
#
# Usage: bench/sync-bench.sh [--records N] [--rss-scale] [--scale-records M] [--dir DIR]
#                            [--regenerate] [--keep] [--only LIST]
#   --records N        records in the export (default 1000000)
#   --rss-scale        also run the first SQLite sync at M records (default 5N) and compare
#                      its peak RSS with the one at N
#   --scale-records M  the larger size for --rss-scale
#   --dir DIR          scratch folder (default ${TMPDIR:-/tmp}/matchpoint-bench); generated
#                      exports are kept there and reused by later runs of the same size
#   --regenerate       generate the exports again even if present
#   --keep             keep index databases (and the PostgreSQL database) after the run
#   --only LIST        measure only these, comma-separated: floor,sqlite,postgres,python
#                      (ratios need floor and python in the same run)
#   --binary PATH      use this matchpoint executable instead of building release (no floor:
#                      for volume figures such as the WAL, which do not depend on the build)
set -euo pipefail

records=1000000
rss_scale=0
scale_records=
scratch="${TMPDIR:-/tmp}/matchpoint-bench"
regenerate=0
keep=0
only=floor,sqlite,postgres,python
binary=
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
    --only) only=$2; shift 2 ;;
    --binary) binary=$2; shift 2 ;;
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

log() { echo "== $*" >&2; }
wanted() { [[ ",$only," == *",$1,"* ]]; }

mkdir -p "$scratch"
scratch=$(cd "$scratch" && pwd)
results="$scratch/results-$(date +%Y%m%dT%H%M%S)"
mkdir -p "$results"
log "scratch folder: $scratch (results in $results)"

if [[ -n "$binary" ]]; then
  [[ -x "$binary" ]] || { echo "--binary $binary is not an executable" >&2; exit 2; }
  wanted floor && { echo "--binary has no floor executable: add --only without floor" >&2; exit 2; }
  log "using $binary (not a release build: volumes only, not speeds)"
  cp "$binary" "$results/matchpoint"
else
log "building release (cargo build --release -p matchpoint-hub; cargo bench --bench floor --no-run)"
cargo build --release -q -p matchpoint-hub
floor_exe=$(cargo bench -q -p matchpoint-hub --bench floor --no-run --message-format=json |
  python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "floor" and m.get("executable"):
        print(m["executable"])')
target_dir=$(cargo metadata --format-version 1 --no-deps |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
# The target folder may be shared and rebuilt by others while this runs: every measurement
# uses copies of the binaries taken now, and the table names the commit they came from.
cp "$target_dir/release/matchpoint" "$results/matchpoint"
cp "$floor_exe" "$results/floor"
fi
mp="$results/matchpoint"
commit="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
[[ -z "$(git status --porcelain --untracked-files=no -- hub connectors mapping schemas 2>/dev/null)" ]] ||
  commit="$commit+uncommitted changes"
echo "$commit" >"$results/commit.txt"
log "code: $commit"

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
  local gen
  gen=$(git log -1 --format=%h -- hub/src/generate 2>/dev/null || true)
  local stamp="persons=$persons seed=$seed bad_share=$bad_share generator=$gen"
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

# Wall seconds, peak RSS (MB) and CPU seconds (user + system) from a `time -v` report.
time_report() {
  awk -F': ' '
    /Elapsed \(wall clock\)/ { n = split($2, p, ":"); s = 0; for (i = 1; i <= n; i++) s = s * 60 + p[i] }
    /Maximum resident set size/ { rss = $2 / 1024 }
    /User time \(seconds\)|System time \(seconds\)/ { cpu += $2 }
    END { printf "%.3f %.1f %.2f\n", s, rss, cpu }' "$1"
}

# Busy CPU time of the whole machine so far, in 1/100 s (from /proc/stat).
busy_cs() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9 }' /proc/stat; }

# CPU seconds the rest of the machine used while a measurement ran: busy before ($1) and
# after ($2), the measured process's own CPU seconds ($3). Other engineers' builds on the
# same two cores show up here; for PostgreSQL it includes the server's own work.
other_cpu() { awk -v a="$1" -v b="$2" -v own="$3" 'BEGIN { o = (b - a) / 100 - own; printf "%.1f\n", o < 0 ? 0 : o }'; }

# Table rows: label, records, seconds, peak RSS MB, note, CPU seconds elsewhere (tab-separated).
rows="$results/rows.tsv"
: >"$rows"
phases="$results/phases.tsv"
: >"$phases"

# Runs one `matchpoint sync` under time -v; label $1, config $2. Records a row and phases.
measure_sync() {
  local label=$1 config=$2 slug=${1// /-}
  log "$label"
  local rc=0 busy0
  busy0=$(busy_cs)
  # Store logs at debug level: the SQLite store logs how long each publish step took.
  NO_COLOR=1 MATCHPOINT_LOG="info,matchpoint_hub::store=debug" /usr/bin/time -v -o "$results/$slug.time" \
    "$mp" sync --config "$config" --json >"$results/$slug.json" 2>"$results/$slug.log" || rc=$?
  local busy1 secs rss cpu other
  busy1=$(busy_cs)
  read -r secs rss cpu < <(time_report "$results/$slug.time")
  other=$(other_cpu "$busy0" "$busy1" "$cpu")
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
    steps = []
    for line in open(logpath, errors="replace"):
        line = ansi.sub("", line)
        if "Sync run published." in line:
            publish = f'{(ts(line.split()[0]) - fin).total_seconds():.2f}'
        m = re.search(r'Publish step done\. step="?([^"=]+?)"? ms=(\d+)', line)
        if m:
            steps.append(f"{m.group(1).strip()}={int(m.group(2)) / 1000:.2f}s")
    if steps:
        with open(logpath + ".steps", "w") as f:
            f.write(" ".join(steps) + "\n")
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
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$label" "$read" "$secs" "$rss" "$note" "$other" >>"$rows"
  printf '%s\t%s\t%s\n' "$label" "$secs" "$phase" >>"$phases"
  if [[ -f "$results/$slug.log.steps" ]]; then
    printf '%s\t%s\n' "$label" "$(cat "$results/$slug.log.steps")" >>"$results/steps.tsv"
  fi
  log "  $secs s, peak RSS $rss MB, CPU elsewhere ${other}s, $note"
  [[ $ok == OK ]]
}

export_n=$(export_for "$records")
ls -l "$export_n" >&2

# 1. Floor.
if wanted floor; then
log "floor (the executable of: cargo bench -p matchpoint-hub --bench floor -- $export_n)"
busy0=$(busy_cs)
floor_line=$(/usr/bin/time -v -o "$results/floor.time" "$results/floor" --bench "$export_n" | grep '^floor ')
busy1=$(busy_cs)
read -r _ floor_rss floor_cpu < <(time_report "$results/floor.time")
floor_other=$(other_cpu "$busy0" "$busy1" "$floor_cpu")
echo "$floor_line" >"$results/floor.txt"
floor_records=$(sed -E 's/.*records=([0-9]+).*/\1/' <<<"$floor_line")
floor_secs=$(sed -E 's/.*seconds=([0-9.]+).*/\1/' <<<"$floor_line")
printf '%s\t%s\t%s\t%s\t%s\t%s\n' "floor" "$floor_records" "$floor_secs" "$floor_rss" "median of 3 passes, no store" "$floor_other" >>"$rows"
fi

# 2. SQLite: first sync into an empty index, then re-sync of the unchanged export.
sqlite_db="$scratch/index-$records.db"
if wanted sqlite; then
rm -rf "$sqlite_db" "$sqlite_db"-* "$sqlite_db.staging"
write_config "$results/sqlite.toml" "sqlite://$sqlite_db" "$export_n"
measure_sync "sqlite first" "$results/sqlite.toml" || log "SQLite first sync failed (see $results)"
measure_sync "sqlite re-sync" "$results/sqlite.toml" || log "SQLite re-sync failed (see $results)"
[[ -f "$sqlite_db" ]] && log "SQLite index size: $(du -sh "$sqlite_db" | cut -f1)"
fi

# 3. PostgreSQL, on a fresh database, when a maintenance URL is given.
pg_db=
if ! wanted postgres; then
  :
elif [[ -n "${MATCHPOINT_BENCH_POSTGRES_URL:-}" ]]; then
  if command -v psql >/dev/null; then
    pg_db="matchpoint_bench_$$"
    maint=$MATCHPOINT_BENCH_POSTGRES_URL
    base=${maint%%\?*}
    query=${maint#"$base"}
    pg_url="${base%/*}/$pg_db$query"
    drop_pg() { [[ $keep -eq 1 ]] || psql -q "$maint" -c "DROP DATABASE IF EXISTS $pg_db" >/dev/null 2>&1 || true; }
    wal_lsn() { psql -qtAX "$maint" -c "SELECT pg_current_wal_lsn()"; }
    # WAL written between LSN $2 and now, for phase $1 (records read: from its row).
    wal_report() {
      local label=$1 before=$2 after bytes n
      after=$(wal_lsn)
      bytes=$(psql -qtAX "$maint" -c "SELECT pg_wal_lsn_diff('$after', '$before')::bigint")
      n=$(awk -F'\t' -v l="$label" '$1 == l { r = $2 } END { print r + 0 }' "$rows")
      printf '%s\t%s\t%s\n' "$label" "$n" "$bytes" >>"$results/wal.tsv"
      if [[ $n -gt 0 ]]; then
        log "  WAL: $bytes bytes, $((bytes / n)) bytes/record, $(awk -v b="$bytes" -v n="$n" 'BEGIN { printf "%.2f", b / n * 1e6 / 1e9 }') GB per million records"
      fi
    }
    trap drop_pg EXIT
    if psql -q "$maint" -c "CREATE DATABASE $pg_db" >/dev/null; then
      log "PostgreSQL database $pg_db created"
      write_config "$results/postgres.toml" "$pg_url" "$export_n"
      wal0=$(wal_lsn)
      if measure_sync "postgres first" "$results/postgres.toml"; then
        wal_report "postgres first" "$wal0"
        wal0=$(wal_lsn)
        measure_sync "postgres re-sync" "$results/postgres.toml" || log "PostgreSQL re-sync failed (see $results)"
        wal_report "postgres re-sync" "$wal0"
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
if wanted python; then
log "python baseline (bench/baseline.py)"
busy0=$(busy_cs)
/usr/bin/time -v -o "$results/python.time" \
  python3 bench/baseline.py "$export_n" --db "$scratch/python-$records.db" \
  --key "$install/matchpoint.key" >"$results/python.txt"
py_line=$(grep '^python ' "$results/python.txt")
busy1=$(busy_cs)
read -r py_secs py_rss py_cpu < <(time_report "$results/python.time")
py_other=$(other_cpu "$busy0" "$busy1" "$py_cpu")
py_records=$(sed -E 's/.*records=([0-9]+).*/\1/' <<<"$py_line")
py_inner=$(sed -E 's/.*seconds=([0-9.]+).*/\1/' <<<"$py_line")
printf '%s\t%s\t%s\t%s\t%s\t%s\n' "python" "$py_records" "$py_secs" "$py_rss" "in-script ${py_inner}s" "$py_other" >>"$rows"
rm -f "$scratch/python-$records.db"
fi

# 5. Peak RSS against input size.
if [[ $rss_scale -eq 1 ]] && wanted sqlite; then
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
touch "$results/steps.tsv" "$results/wal.tsv"
python3 - "$rows" "$phases" "$records" "$results/steps.tsv" "$commit" <<'PY'
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
print(f"\nSync benchmark, {sys.argv[3]} records requested, code {sys.argv[5]}, this machine:\n")
hdr = ["measurement", "records", "seconds", "records/s", "x floor", "x python", "peak RSS MB",
       "stage/publish s", "CPU elsewhere s"]
out = []
for r in rows:
    rr = rate(r)
    out.append([
        r[0], r[1], r[2], f"{rr:,.0f}" if rr else "-",
        f"{rr / floor:.2f}" if rr and floor else "-",
        f"{rr / py:.1f}" if rr and py else "-",
        r[3], phases.get(r[0], ["", "", "-"])[2], r[5] if len(r) > 5 else "-",
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
busy = [r for r in rows if len(r) > 5 and not r[0].startswith("postgres")
        and float(r[5]) > 0.1 * float(r[2])]
if busy:
    print("\n  WARNING: other processes used the CPU during " + ", ".join(r[0] for r in busy)
          + " (CPU elsewhere > 10% of wall time): two cores are shared, re-run when idle.")
steps = [l.rstrip("\n").split("\t") for l in open(sys.argv[4]) if l.strip()]
if steps:
    print("\nPublish steps (SQLite store, debug log):")
    for label, st in steps:
        print(f"  {label}: {st}")
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
if [[ -s "$results/wal.tsv" ]]; then
  echo
  echo "PostgreSQL WAL volume (pg_current_wal_lsn() before/after; cluster-wide):"
  awk -F'\t' '$2 > 0 { printf "  %s: %d records, %d bytes WAL, %d bytes/record, %.2f GB per million records\n", $1, $2, $3, $3 / $2, $3 / $2 * 1e6 / 1e9 }' "$results/wal.tsv"
fi
echo
echo "Raw outputs: $results"
