//! The sync floor: streaming parse + map (BSN parse, elfproef, HMAC pseudonymisation) of one
//! XML export with no store, i.e. exactly the work `matchpoint sync` does before staging.
//!
//! Run: `cargo bench -p matchpoint-hub --bench floor -- PATH [--runs N]` (or set
//! `MATCHPOINT_BENCH_EXPORT=PATH`, `MATCHPOINT_BENCH_RUNS=N`). Prints one line per run on
//! stderr and the median as one machine-readable line on stdout:
//! `floor records=N seconds=S records_per_sec=R runs=K`. See `bench/README.md`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use matchpoint_connectors::location::{self, ReadLimits};
use matchpoint_connectors::xml_export::{XmlExportFormat, XmlExportReader};
use matchpoint_mapping::{Mapper, MappingSpec};
use matchpoint_schemas::{Involvement, KeyPurpose, MasterKey, Registry, Sealer};

/// The allocator the `matchpoint` binary uses (`hub/src/main.rs`), so the floor measures the
/// same build.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Records per batch, as `sync.batch_size` defaults to: records are collected and dropped in
/// batches of this size so allocation behaves as in a sync.
const BATCH_SIZE: usize = 5000;

/// What one pass over the export counted.
struct Pass {
    read: u64,
    mapped: u64,
    rejected: u64,
    elapsed: Duration,
}

/// The bench's inputs: export, mapping, registry, key.
struct Setup {
    export: String,
    mapper: Mapper,
    sealer: Sealer,
    runs: usize,
}

fn usage() -> String {
    "usage: cargo bench -p matchpoint-hub --bench floor -- PATH [--runs N]\n\
     (or MATCHPOINT_BENCH_EXPORT=PATH; PATH is an okc-2 export from `matchpoint generate`)"
        .to_owned()
}

fn setup() -> Result<Setup, String> {
    let mut export = std::env::var("MATCHPOINT_BENCH_EXPORT").ok();
    let mut runs: usize = match std::env::var("MATCHPOINT_BENCH_RUNS") {
        Ok(v) => v
            .parse()
            .map_err(|_| format!("MATCHPOINT_BENCH_RUNS: `{v}` is not a number"))?,
        Err(_) => 3,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            // `cargo bench` passes `--bench` to every bench binary.
            "--bench" => {}
            "--runs" => {
                let v = args.next().ok_or_else(usage)?;
                runs = v
                    .parse()
                    .map_err(|_| format!("--runs: `{v}` is not a number"))?;
            }
            "-h" | "--help" => return Err(usage()),
            other if other.starts_with('-') => return Err(format!("unknown option {other}")),
            other => export = Some(other.to_owned()),
        }
    }
    let export = export.ok_or_else(usage)?;
    if !Path::new(&export).is_file() {
        return Err(format!("{export}: no such file"));
    }
    let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy");
    let mapping: PathBuf = deploy.join("mappings/okc-2.toml");
    let spec = MappingSpec::load(&mapping).map_err(|e| e.to_string())?;
    let registry = Registry::load(&deploy.join("organisations.toml")).map_err(|e| e.to_string())?;
    // The key's value does not change the work; a fixed one keeps the bench self-contained.
    let key = MasterKey::from_secret("bench-k1", &[0x5a; 32]).map_err(|e| e.to_string())?;
    let mapper = Mapper::new(
        "okc-2",
        spec,
        Arc::new(registry),
        key.pseudonymiser(KeyPurpose::Index),
    );
    Ok(Setup {
        export,
        mapper,
        sealer: key.sealer(),
        runs: runs.max(1),
    })
}

/// One pass, as `sync::produce` does it: open (64 KiB buffer), stream records, map each,
/// seal rejected raw records, collect results in batches and drop them.
fn pass(s: &Setup) -> Result<Pass, String> {
    let limits = ReadLimits {
        max_bytes: 8 << 30,
        max_event_bytes: 64 << 10,
    };
    let input = location::open(&s.export, Duration::from_secs(300), limits.max_bytes)
        .map_err(|e| e.to_string())?;
    let format = XmlExportFormat {
        max_depth: 16,
        limits,
        ..XmlExportFormat::default()
    };
    let started = Instant::now();
    let mut reader = XmlExportReader::new(input, &s.export, format);
    let mut batch: Vec<Involvement> = Vec::with_capacity(BATCH_SIZE);
    let mut sealed: Vec<Vec<u8>> = Vec::new();
    let (mut read, mut mapped, mut rejected) = (0u64, 0u64, 0u64);
    for item in &mut reader {
        match item.map_err(|e| e.to_string())? {
            Err(_malformed) => {
                read += 1;
                rejected += 1;
            }
            Ok(raw) => {
                read += 1;
                match s.mapper.map(&raw) {
                    Ok(inv) => {
                        mapped += 1;
                        batch.push(inv);
                    }
                    Err(_) => {
                        rejected += 1;
                        let plain = serde_json::to_vec(&raw).map_err(|e| e.to_string())?;
                        let ctx = format!(
                            "matchpoint-quarantine\u{0}okc-2\u{0}{}",
                            raw.record_id.as_deref().unwrap_or("")
                        );
                        sealed.push(s.sealer.seal(&plain, ctx.as_bytes()));
                    }
                }
            }
        }
        if batch.len() + sealed.len() >= BATCH_SIZE {
            std::hint::black_box(&batch);
            batch.clear();
            sealed.clear();
        }
    }
    std::hint::black_box((&batch, &sealed));
    drop(batch);
    Ok(Pass {
        read,
        mapped,
        rejected,
        elapsed: started.elapsed(),
    })
}

fn main() -> ExitCode {
    let s = match setup() {
        Ok(s) => s,
        Err(msg) => {
            eprintln!("floor: {msg}");
            return ExitCode::FAILURE;
        }
    };
    let mut passes = Vec::with_capacity(s.runs);
    for i in 0..s.runs {
        match pass(&s) {
            Ok(p) => {
                eprintln!(
                    "floor run {}/{}: {} records ({} mapped, {} rejected) in {:.3}s = {:.0} records/s",
                    i + 1,
                    s.runs,
                    p.read,
                    p.mapped,
                    p.rejected,
                    p.elapsed.as_secs_f64(),
                    p.read as f64 / p.elapsed.as_secs_f64()
                );
                passes.push(p);
            }
            Err(msg) => {
                eprintln!("floor: {}: {msg}", s.export);
                return ExitCode::FAILURE;
            }
        }
    }
    passes.sort_by_key(|p| p.elapsed);
    let median = &passes[passes.len() / 2];
    let secs = median.elapsed.as_secs_f64();
    println!(
        "floor records={} seconds={secs:.3} records_per_sec={:.0} runs={}",
        median.read,
        median.read as f64 / secs,
        passes.len()
    );
    ExitCode::SUCCESS
}
