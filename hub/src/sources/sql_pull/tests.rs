//! SQL pull against the simulated supplier databases on all three backends: SQLite always,
//! PostgreSQL with `MATCHPOINT_TEST_POSTGRES_URL`, MariaDB/MySQL with
//! `MATCHPOINT_TEST_MYSQL_URL` (each prints SKIPPED when unset and fails when set but
//! unreachable). Every test uses its own table prefix.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use matchpoint_connectors::RecordStream;
use matchpoint_connectors::runner::{PagedRunner, RunnerConfig};
use matchpoint_schemas::{MasterKey, Registry};

use super::*;
use crate::config::Config;
use crate::sandbox::supplier_db::{SupplierDb, SupplierOptions};
use crate::store::{RunStatus, Store, StoredInvolvement};
use crate::sync::{Progress, SyncContext, sync_source};

const PERSONS: u64 = 700;
const PAGE: u32 = 3;

fn deploy() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

/// A table prefix no other test (or test run) uses.
fn prefix() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "t{}_{}_{}_",
        std::process::id(),
        nanos % 100_000,
        N.fetch_add(1, Ordering::Relaxed)
    )
}

fn options(prefix: &str) -> SupplierOptions {
    SupplierOptions {
        persons: PERSONS,
        seed: 42,
        prefix: prefix.to_owned(),
        ..SupplierOptions::default()
    }
}

struct Harness {
    _dir: tempfile::TempDir,
    config: Config,
    ctx: SyncContext,
}

impl Harness {
    async fn new(url: &str, prefix: &str) -> Harness {
        let dir = tempfile::tempdir().expect("tempdir");
        let url_file = dir.path().join("supplier.url");
        std::fs::write(&url_file, format!("{url}\n")).expect("write url file");
        let deploy = deploy();
        let text = format!(
            r#"
store = "sqlite://{store}"
organisations = "{deploy}/organisations.toml"

[[source]]
name = "okc-4"
kind = "sql_pull"
location = "{prefix}matchpoint_okc4"
mode = "incremental"
schedule = "0 0 3 * * *"
mapping = "{deploy}/mappings/okc-4.toml"
[source.sql]
url_file = "{url_file}"
id_column = "id"
updated_at_column = "gewijzigd_op"
deleted_column = "verwijderd"
[source.paging]
page_size = {PAGE}
max_attempts = 2
base_delay_ms = 1
max_delay_ms = 1

[[source]]
name = "ris"
kind = "sql_pull"
location = "{prefix}matchpoint_ris"
mode = "incremental"
schedule = "0 0 3 * * *"
mapping = "{deploy}/mappings/ris.toml"
[source.sql]
url_file = "{url_file}"
id_column = "zaaknummer"
updated_at_column = "laatst_gewijzigd"
[source.paging]
page_size = 50
"#,
            store = dir.path().join("index.db").display(),
            deploy = deploy.display(),
            url_file = url_file.display(),
        );
        let config = Config::parse(&text, "test.toml", dir.path()).expect("config parses");
        let store = Store::open(&config.store).await.expect("store");
        let registry = Registry::load(&config.organisations).expect("registry");
        let key = MasterKey::from_secret("test", &[7u8; 32]).expect("key");
        let ctx = SyncContext {
            store,
            key: Arc::new(key),
            registry: Arc::new(registry),
            max_end_share: 0.10,
            quarantine_raw_days: 1,
            batch_size: 100,
            cancel: Arc::new(AtomicBool::new(false)),
        };
        Harness {
            _dir: dir,
            config,
            ctx,
        }
    }

    fn source(&self, name: &str) -> crate::config::SourceConfig {
        self.config
            .sources
            .iter()
            .find(|s| s.name == name)
            .cloned()
            .expect("source")
    }

    async fn sync(&self, source: &crate::config::SourceConfig) -> crate::store::RunRecord {
        sync_source(&self.ctx, source, false, Arc::new(Progress::default()))
            .await
            .expect("sync ran")
    }

    async fn index(&self, source: &str) -> Vec<StoredInvolvement> {
        self.ctx.store.involvements(source).await.expect("index")
    }
}

fn snapshot(v: &[StoredInvolvement]) -> Vec<String> {
    v.iter()
        .map(|i| {
            format!(
                "{} {} {} {:?} {}",
                i.source_record_id, i.status, i.organisation_code, i.end_date, i.content_hash
            )
        })
        .collect()
}

/// The whole behaviour on one backend.
async fn scenario(url: &str) {
    let prefix = prefix();
    let (mut db, g0) = SupplierDb::create(url, &options(&prefix))
        .await
        .expect("supplier database is created");
    let (okc4_rows, ris_rows) = db.row_counts().await.expect("counts");
    assert_eq!(okc4_rows, g0.okc4.new);
    assert!(
        okc4_rows / u64::from(PAGE) >= 100,
        "the test population must need at least 100 pages ({okc4_rows} rows)"
    );
    let h = Harness::new(url, &prefix).await;
    let okc4 = h.source("okc-4");

    // Paging is real: the connector alone crosses every page, in keyset order.
    // (The connector blocks on its own runtime: it runs on a plain thread, as in a sync.)
    let settings = settings_for(&okc4).expect("settings");
    let (ids, pages, cursor) = std::thread::spawn(move || {
        let mut runner = PagedRunner::new(
            SqlPull::new(settings).expect("connector"),
            RunnerConfig::default(),
        );
        let mut ids = Vec::new();
        while let Some(rec) = runner.next_record().expect("reads") {
            ids.push(rec.expect("good row").record_id.expect("id"));
        }
        (
            ids,
            runner.connector().expect("connector").pages,
            runner.cursor(),
        )
    })
    .join()
    .expect("reader thread");
    assert_eq!(ids.len() as u64, okc4_rows);
    let unique: std::collections::HashSet<_> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "no row twice across pages");
    assert!(pages >= 100, "{pages} pages");
    assert!(cursor.is_some());

    // First run: everything.
    let run = h.sync(&okc4).await;
    assert_eq!(run.status, RunStatus::Succeeded, "{:?}", run.error);
    assert_eq!(run.counts.read, okc4_rows);
    assert_eq!(run.counts.rejected, 0);
    assert_eq!(run.counts.inserted, okc4_rows);

    // A quiet night: nothing changed, nothing read.
    let run = h.sync(&okc4).await;
    assert_eq!(run.status, RunStatus::Succeeded, "{:?}", run.error);
    assert_eq!(run.counts.read, 0);

    // The next generation: only the changed rows are read; deleted rows end involvements.
    let g1 = db.advance().await.expect("advance");
    assert!(
        g1.okc4.total() > 0 && g1.okc4.total() < okc4_rows / 4,
        "{g1:?}"
    );
    let run = h.sync(&okc4).await;
    assert_eq!(run.status, RunStatus::Succeeded, "{:?}", run.error);
    assert_eq!(run.counts.read, g1.okc4.total());
    assert_eq!(run.counts.inserted, g1.okc4.new);
    assert_eq!(
        run.counts.updated,
        g1.okc4.revised + g1.okc4.ended + g1.okc4.deleted
    );

    // An interrupted run (stopped after one page) publishes nothing and moves no cursor; the
    // next run reads every change since the last committed run.
    let g2 = db.advance().await.expect("advance");
    assert!(g2.okc4.total() > u64::from(PAGE), "{g2:?}");
    let before = snapshot(&h.index("okc-4").await);
    let cursor = h.ctx.store.cursor("okc-4").await.expect("cursor");
    let mut one_page = okc4.clone();
    one_page.paging.max_pages = 1;
    let run = h.sync(&one_page).await;
    assert_eq!(run.status, RunStatus::Failed);
    assert_eq!(snapshot(&h.index("okc-4").await), before, "index untouched");
    assert_eq!(h.ctx.store.cursor("okc-4").await.expect("cursor"), cursor);
    let run = h.sync(&okc4).await;
    assert_eq!(run.status, RunStatus::Succeeded, "{:?}", run.error);
    assert_eq!(run.counts.read, g2.okc4.total());

    // Deleted rows (soft delete) and ended rows are ended in the index.
    let index = h.index("okc-4").await;
    let ended = index.iter().filter(|i| i.status == "ended").count() as u64;
    assert!(ended >= g1.okc4.ended + g1.okc4.deleted + g2.okc4.ended + g2.okc4.deleted);
    if g1.okc4.deleted + g2.okc4.deleted == 0 {
        panic!("the simulation must delete some rows: {g1:?} {g2:?}");
    }

    // A missing view fails the run with a clear message; the index is untouched.
    let before = snapshot(&index);
    db.execute(format!("DROP VIEW {}", db.okc4_view()))
        .await
        .expect("drop view");
    db.advance().await.expect("advance");
    let run = h.sync(&okc4).await;
    assert_eq!(run.status, RunStatus::Failed);
    let error = run.error.unwrap_or_default();
    assert!(error.contains("okc-4"), "{error}");
    assert!(error.contains(&db.okc4_view()), "{error}");
    assert_eq!(snapshot(&h.index("okc-4").await), before, "index untouched");
    db.create_okc4_view().await.expect("view again");

    // RIS: cases with household relations.
    let ris = h.source("ris");
    let run = h.sync(&ris).await;
    assert_eq!(run.status, RunStatus::Succeeded, "{:?}", run.error);
    assert_eq!(run.counts.rejected, 0, "{:?}", run.counts);
    assert!(run.counts.read >= ris_rows);
    let relations = h.ctx.store.relations("ris").await.expect("relations");
    assert!(!relations.is_empty(), "RIS carries household relations");
    for kind in ["parent", "child"] {
        assert!(
            relations.iter().any(|(_, k, _)| k == kind),
            "no {kind} relation in {relations:?}"
        );
    }

    db.drop_objects().await.expect("clean up");
    db.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_pull_on_sqlite() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("supplier.db").display());
    scenario(&url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_pull_on_postgres() {
    match std::env::var("MATCHPOINT_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => scenario(&url).await,
        _ => eprintln!(
            "SKIPPED sql_pull_on_postgres: set MATCHPOINT_TEST_POSTGRES_URL \
             (e.g. postgres://postgres@127.0.0.1:5432/test) to run it"
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_pull_on_mariadb() {
    match std::env::var("MATCHPOINT_TEST_MYSQL_URL") {
        Ok(url) if !url.is_empty() => scenario(&url).await,
        _ => eprintln!(
            "SKIPPED sql_pull_on_mariadb: set MATCHPOINT_TEST_MYSQL_URL \
             (e.g. mysql://root@127.0.0.1:3306/test) to run it"
        ),
    }
}

#[test]
fn a_connection_failure_is_transient_and_a_bad_cursor_is_fatal() {
    let settings = SqlPullSettings {
        source: "okc-4".into(),
        // Nothing listens on port 9 of loopback.
        url: "postgres://u:secret@127.0.0.1:9/x".into(),
        view: "v".into(),
        id_column: "id".into(),
        updated_at_column: "updated_at".into(),
        page_size: 10,
        deleted: None,
        relations: None,
        timeout: Duration::from_secs(5),
        max_record_bytes: 1 << 20,
        cancel: Arc::new(AtomicBool::new(false)),
    };
    let mut c = SqlPull::new(settings).expect("connector");
    match c.fetch(&PageRequest::First { since: None }) {
        Err(FetchError::Transient { message, .. }) => {
            assert!(message.contains("okc-4"), "{message}");
            assert!(!message.contains("secret"), "{message}");
        }
        other => panic!(
            "expected a transient error, got {:?}",
            other.map(|p| p.records.len())
        ),
    }
    match c.fetch(&PageRequest::Next("not a keyset".into())) {
        Err(FetchError::Fatal(e)) => assert!(e.to_string().contains("--full"), "{e}"),
        other => panic!(
            "expected a fatal error, got {:?}",
            other.map(|p| p.records.len())
        ),
    }
    assert!(!c.describe().contains("secret"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_database_fails_the_run_after_the_retries() {
    let prefix = prefix();
    // Nothing listens on port 9 of loopback; the password must never be shown.
    let h = Harness::new("postgres://u:secret@127.0.0.1:9/x", &prefix).await;
    let run = h.sync(&h.source("okc-4")).await;
    assert_eq!(run.status, RunStatus::Failed);
    let error = run.error.unwrap_or_default();
    assert!(
        error.contains("okc-4") && error.contains("connection"),
        "{error}"
    );
    assert!(!error.contains("secret"), "{error}");
    assert!(h.index("okc-4").await.is_empty());
}

#[test]
fn keysets_round_trip_in_their_own_types() {
    let k = Keyset {
        u: KeyValue::Text("2026-11-01 02:00:00.000001".into()),
        id: KeyValue::Int(7),
    };
    assert_eq!(Keyset::decode(&k.encode()), Some(k));
    assert!(truthy("1") && truthy("true") && truthy("J"));
    assert!(!truthy("0") && !truthy("false") && !truthy(" "));
}

#[test]
fn odd_rows_are_quarantined_and_odd_types_fail_the_run_naming_the_column() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("odd.db").display());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let mut c = SqlConn::connect(&url, true).await.expect("connect");
        c.execute(
            "CREATE TABLE v (id TEXT PRIMARY KEY, updated_at TEXT NOT NULL, doel TEXT, \
             relaties TEXT); \
             INSERT INTO v VALUES ('a', '2026-01-01 00:00:00', 'kort', 'ouder:123456782'); \
             INSERT INTO v VALUES ('b', '2026-01-01 00:00:00', 'x', 'ouder123456782'); \
             INSERT INTO v VALUES ('c', '2026-01-02 00:00:00', printf('%.500c', 'x'), NULL);"
                .into(),
        )
        .await
        .expect("fill");
        c.close().await.expect("close");
    });
    let settings = SqlPullSettings {
        source: "s".into(),
        url: url.clone(),
        view: "v".into(),
        id_column: "id".into(),
        updated_at_column: "updated_at".into(),
        page_size: 2,
        deleted: None,
        relations: Some(RelationLayout {
            column: "relaties".into(),
            kind_field: "soort".into(),
            bsn_field: "bsn".into(),
        }),
        timeout: Duration::from_secs(5),
        max_record_bytes: 200,
        cancel: Arc::new(AtomicBool::new(false)),
    };
    let mut c = SqlPull::new(settings.clone()).expect("connector");
    let first = c
        .fetch(&PageRequest::First { since: None })
        .expect("page 1");
    assert_eq!(first.records.len(), 2);
    let a = first.records[0].as_ref().expect("row a is good");
    assert_eq!(a.groups.len(), 1);
    assert_eq!(a.groups[0].field("soort"), Some("ouder"));
    let b = first.records[1]
        .as_ref()
        .expect_err("row b has a bad relation");
    assert_eq!(b.field.as_deref(), Some("relaties"));
    assert!(!b.reason.contains("123456782"));
    let next = first.next.expect("a full page has a next token");
    let second = c.fetch(&PageRequest::Next(next)).expect("page 2");
    let big = second.records[0].as_ref().expect_err("row c is too large");
    assert!(big.reason.contains("max_record_bytes"), "{}", big.reason);
    assert!(second.next.is_none(), "a short page is the last");

    // A missing keyset column is an SQL error: the run fails, naming the view and the column.
    let mut bad = SqlPull::new(SqlPullSettings {
        updated_at_column: "gewijzigd".into(),
        ..settings
    })
    .expect("connector");
    match bad.fetch(&PageRequest::First { since: None }) {
        Err(FetchError::Fatal(e)) => {
            let m = e.to_string();
            assert!(m.contains("view `v`") && m.contains("gewijzigd"), "{m}");
        }
        other => panic!(
            "expected a fatal error, got {:?}",
            other.map(|p| p.records.len())
        ),
    }
}

#[test]
fn a_cancelled_run_stops_waiting_for_the_database() {
    let cancel = Arc::new(AtomicBool::new(true));
    let mut c = SqlPull::new(SqlPullSettings {
        source: "s".into(),
        // An address that never answers: without the cancel flag this waits for the timeout.
        url: "postgres://u@10.255.255.1:5432/x".into(),
        view: "v".into(),
        id_column: "id".into(),
        updated_at_column: "updated_at".into(),
        page_size: 10,
        deleted: None,
        relations: None,
        timeout: Duration::from_secs(3600),
        max_record_bytes: 1 << 20,
        cancel,
    })
    .expect("connector");
    match c.fetch(&PageRequest::First { since: None }) {
        Err(FetchError::Fatal(e)) => assert!(e.to_string().contains("cancelled"), "{e}"),
        other => panic!(
            "expected cancellation, got {:?}",
            other.map(|p| p.records.len())
        ),
    }
}

/// Integer ids and zoned timestamps as keyset columns, on one backend.
async fn typed_keys(url: &str) {
    let table = format!("{}typed", prefix());
    let mut c = SqlConn::connect(url, true).await.expect("connect");
    let ts = match c.dialect() {
        Dialect::Postgres => "TIMESTAMPTZ",
        Dialect::MySql => "TIMESTAMP(6)",
        Dialect::Sqlite => "TEXT",
    };
    c.execute(format!(
        "CREATE TABLE {table} (id BIGINT NOT NULL PRIMARY KEY, updated_at {ts} NOT NULL, \
         naam VARCHAR(20))"
    ))
    .await
    .expect("create");
    let rows: Vec<String> = (1..=7)
        .map(|i| format!("({i}, '2026-11-0{} 10:00:00.25', 'n{i}')", 1 + i / 3))
        .collect();
    c.execute(format!("INSERT INTO {table} VALUES {}", rows.join(", ")))
        .await
        .expect("insert");
    let settings = SqlPullSettings {
        source: "typed".into(),
        url: url.to_owned(),
        view: table.clone(),
        id_column: "id".into(),
        updated_at_column: "updated_at".into(),
        page_size: 2,
        deleted: None,
        relations: None,
        timeout: Duration::from_secs(30),
        max_record_bytes: 1 << 20,
        cancel: Arc::new(AtomicBool::new(false)),
    };
    let read = |since: Option<String>, settings: SqlPullSettings| {
        std::thread::spawn(move || {
            let mut runner = PagedRunner::new(
                SqlPull::new(settings).expect("connector"),
                RunnerConfig {
                    since,
                    ..RunnerConfig::default()
                },
            );
            let mut ids = Vec::new();
            while let Some(rec) = runner.next_record().expect("reads") {
                ids.push(rec.expect("good row").record_id.expect("id"));
            }
            (ids, runner.cursor())
        })
        .join()
        .expect("reader thread")
    };
    let (ids, cursor) = read(None, settings.clone());
    assert_eq!(ids, (1..=7).map(|i| i.to_string()).collect::<Vec<_>>());
    c.execute(format!(
        "INSERT INTO {table} VALUES (8, '2026-11-03 10:00:00.25', 'n8'), \
         (0, '2026-11-09 10:00:00.5', 'n0')"
    ))
    .await
    .expect("insert more");
    let (ids, _) = read(cursor, settings);
    assert_eq!(
        ids,
        vec!["8".to_owned(), "0".to_owned()],
        "only the rows after the cursor"
    );
    c.execute(format!("DROP TABLE {table}"))
        .await
        .expect("drop");
    c.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn integer_ids_and_zoned_timestamps_page_exactly() {
    let dir = tempfile::tempdir().expect("tempdir");
    typed_keys(&format!("sqlite://{}", dir.path().join("t.db").display())).await;
    for var in ["MATCHPOINT_TEST_POSTGRES_URL", "MATCHPOINT_TEST_MYSQL_URL"] {
        match std::env::var(var) {
            Ok(url) if !url.is_empty() => typed_keys(&url).await,
            _ => eprintln!("SKIPPED typed keys on {var}: the variable is not set"),
        }
    }
}
