//! The iWmo connector's memory does not grow with the message archive (issue 3): a run
//! processes the messages pair by pair from an on-disk work index, so a full re-sync of four
//! times the messages peaks at about the same heap as one of a quarter of them.
//!
//! Measured with a counting global allocator over the whole process (the SQLite store works
//! on threads of its own). This binary holds this one test, so nothing else allocates while
//! it measures. SQLite's own page caches are allocated by SQLite, not through Rust's
//! allocator, and are bounded by their `cache_size` anyway.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use chrono::NaiveDate;
use matchpoint_hub::config::Config;
use matchpoint_hub::generate::ORGANISATIONS_TOML;
use matchpoint_hub::generate::iwmo::write_lifecycles;
use matchpoint_hub::sources::{OpenContext, SourceState, open};
use matchpoint_hub::store::{RunMode, RunStatus, Store};
use matchpoint_hub::sync::{Progress, SyncContext, sync_source};
use matchpoint_schemas::{KeyPurpose, MasterKey, Registry};

#[path = "common/counting.rs"]
mod counting;

#[global_allocator]
static ALLOCATOR: counting::Counting = counting::Counting(counting::process);

const KB: isize = 1024;

/// What one size measured: messages, records delivered, heap peak of the full re-sync.
struct Measured {
    messages: u64,
    records: u64,
    peak: isize,
    /// Heap peak of the first sync through the whole pipeline (shown, not asserted).
    first_peak: isize,
}

/// Writes `clients` generated lifecycles, publishes a first sync, then measures the heap
/// peak of a `--full` re-sync's delivery (the stored logs of every pair are its prior state).
fn measure(rt: &tokio::runtime::Runtime, clients: u64) -> Measured {
    let dir = tempfile::tempdir().expect("tempdir");
    let folder = dir.path().join("wmo");
    let first_day = NaiveDate::from_ymd_opt(2024, 1, 1).expect("date");
    let summary = write_lifecycles(&folder, clients, 3, first_day).expect("messages");
    let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy");
    let text = format!(
        r#"
[[source]]
name = "wmo"
kind = "iwmo"
location = "{}"
mode = "incremental"
schedule = "0 0 * * * *"
mapping = "mappings/wmo.toml"
"#,
        folder.display()
    );
    let cfg = Config::parse(&text, "test.toml", &deploy).expect("config");
    let source = cfg.sources[0].clone();
    let url = format!("sqlite://{}", dir.path().join("index.db").display());
    let store = rt.block_on(Store::open(&url)).expect("store");
    let key = Arc::new(MasterKey::from_secret("k1", &[7u8; 32]).expect("key"));
    let ctx = SyncContext {
        store: store.clone(),
        key: key.clone(),
        registry: Arc::new(Registry::parse(ORGANISATIONS_TOML, "reg").expect("registry")),
        max_end_share: 0.5,
        quarantine_raw_days: 30,
        batch_size: 500,
        cancel: Arc::new(AtomicBool::new(false)),
    };
    let before = counting::start();
    let first = rt
        .block_on(sync_source(
            &ctx,
            &source,
            true,
            Arc::new(Progress::default()),
        ))
        .expect("first sync");
    assert_eq!(first.status, RunStatus::Succeeded, "{:?}", first.error);
    let first_peak = counting::peak_since(before);

    // The re-sync's delivery, measured on its own: the connector and its store state.
    let run = rt
        .block_on(store.begin_run("wmo", RunMode::Full))
        .expect("run");
    let before = counting::start();
    let cx = OpenContext {
        source: &source,
        cursor: None,
        full: true,
        cancel: Arc::new(AtomicBool::new(false)),
        state: Some(SourceState {
            store: store.clone(),
            runtime: rt.handle().clone(),
            run,
            pseudonymiser: key.pseudonymiser(KeyPurpose::Index),
        }),
    };
    let mut opened = open(&cx).expect("open").expect("messages to read");
    let mut records = 0u64;
    while let Some(r) = opened.stream.next_record().expect("delivery") {
        if r.is_ok() {
            records += 1;
        }
    }
    drop(opened);
    let peak = counting::peak_since(before);
    Measured {
        messages: summary.messages,
        records,
        peak,
        first_peak,
    }
}

#[test]
fn a_full_resync_of_four_times_the_messages_peaks_at_about_the_same_heap() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let small = measure(&rt, 1_000);
    let large = measure(&rt, 4_000);
    eprintln!(
        "first sync through the pipeline: peak {} KB for {} messages, {} KB for {}",
        small.first_peak / KB,
        small.messages,
        large.first_peak / KB,
        large.messages
    );
    eprintln!(
        "full re-sync of {} messages ({} records): peak {} KB; of {} messages ({} records): peak {} KB",
        small.messages,
        small.records,
        small.peak / KB,
        large.messages,
        large.records,
        large.peak / KB
    );
    // The test means something: four times the clients is about four times the messages
    // and the assignments delivered.
    assert!(small.records > 900, "{} records", small.records);
    assert!(
        large.messages > 3 * small.messages && large.records > 3 * small.records,
        "{} vs {} messages",
        large.messages,
        small.messages
    );
    // The allocator counts (a re-sync holds at least its batches and the SQLite work index's
    // Rust-side buffers): a peak of zero would make the next check pass for nothing.
    assert!(small.peak > 256 * KB, "{} bytes", small.peak);
    assert!(
        large.peak - small.peak < 512 * KB,
        "the re-sync of {} messages peaked at {} KB, of {} messages at {} KB: it grows with the archive",
        large.messages,
        large.peak / KB,
        small.messages,
        small.peak / KB
    );
}
