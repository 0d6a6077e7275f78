//! A measurement, not a check (ignored; run by hand): the wall time and the store state
//! queries of an incremental iWmo run over 5,000 new message files, on the store at
//! `MATCHPOINT_TEST_POSTGRES_URL` (a fresh database) or else SQLite.
//!
//! `cargo test --release -p matchpoint-hub --test iwmo_reads -- --ignored --nocapture`
//!
//! The folder is a generated archive of lifecycles (`matchpoint generate`'s iWmo messages); the
//! first run applies all files but the last 5,000 in name order, the measured run those.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use chrono::NaiveDate;
use matchpoint_hub::config::Config;
use matchpoint_hub::generate::ORGANISATIONS_TOML;
use matchpoint_hub::generate::iwmo::write_lifecycles;
use matchpoint_hub::store::{RunStatus, Store};
use matchpoint_hub::sync::{Progress, SyncContext, sync_source};
use matchpoint_schemas::{MasterKey, Registry};
use sqlx::Connection;

/// New message files of the measured run.
const NEW: usize = 5_000;

async fn store_url(dir: &Path) -> String {
    let Ok(admin) = std::env::var("MATCHPOINT_TEST_POSTGRES_URL") else {
        return format!("sqlite://{}", dir.join("index.db").display());
    };
    let database = format!("mp_iwmo_reads_{:016x}", rand::random::<u64>());
    let mut conn = sqlx::PgConnection::connect(&admin)
        .await
        .expect("PostgreSQL");
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {database}")))
        .execute(&mut conn)
        .await
        .expect("create database");
    let (base, _) = admin.rsplit_once('/').expect("a URL with a database");
    format!("{base}/{database}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: run by hand"]
async fn measure_an_incremental_run_over_5000_new_messages() {
    let dir = tempfile::tempdir().expect("tempdir");
    let archive = dir.path().join("archive");
    let folder = dir.path().join("wmo");
    std::fs::create_dir_all(&folder).expect("folder");
    let first_day = NaiveDate::from_ymd_opt(2024, 1, 1).expect("date");
    let summary = write_lifecycles(&archive, 6_000, 11, first_day).expect("messages");
    let mut names: Vec<_> = std::fs::read_dir(&archive)
        .expect("archive")
        .map(|e| e.expect("entry").file_name())
        .collect();
    names.sort();
    let split = names.len() - NEW;
    for name in &names[..split] {
        std::fs::rename(archive.join(name), folder.join(name)).expect("move");
    }
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
    let url = store_url(dir.path()).await;
    let store = Store::open(&url).await.expect("store");
    let ctx = SyncContext {
        store: store.clone(),
        key: Arc::new(MasterKey::from_secret("k1", &[7u8; 32]).expect("key")),
        registry: Arc::new(Registry::parse(ORGANISATIONS_TOML, "reg").expect("registry")),
        max_end_share: 0.5,
        quarantine_raw_days: 30,
        batch_size: 500,
        cancel: Arc::new(AtomicBool::new(false)),
    };
    let first = sync_source(&ctx, &source, false, Arc::new(Progress::default()))
        .await
        .expect("first sync");
    assert_eq!(first.status, RunStatus::Succeeded, "{:?}", first.error);
    for name in &names[split..] {
        std::fs::rename(archive.join(name), folder.join(name)).expect("move");
    }
    let reads = store.state_reads();
    let started = Instant::now();
    let run = sync_source(&ctx, &source, false, Arc::new(Progress::default()))
        .await
        .expect("incremental sync");
    let wall = started.elapsed();
    assert_eq!(run.status, RunStatus::Succeeded, "{:?}", run.error);
    eprintln!(
        "store {}: {} messages, {} applied first; incremental run over {NEW} new: {:.2} s, {} state queries",
        url.split(':').next().unwrap_or_default(),
        summary.messages,
        split,
        wall.as_secs_f64(),
        store.state_reads() - reads
    );
}
