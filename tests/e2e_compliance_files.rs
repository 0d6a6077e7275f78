//! End-to-end compliance suite of the file and SQL connector kinds: the okc-2 XML export, the
//! okc-3 CSV drop, the okc-4 and RIS SQL pulls (SQLite; PostgreSQL and MariaDB when
//! `MATCHPOINT_TEST_POSTGRES_URL` / `MATCHPOINT_TEST_MYSQL_URL` are set) and the iWmo
//! messages of `wmo`, against the real `matchpoint` binary and the real simulated sources of
//! `matchpoint sandbox --dir` (files on disk, tables in the supplier database), driven through
//! the sandbox's control servers (`/_sandbox/advance`, `/_sandbox/faults`, `/_sandbox/stats`).
//!
//! The checks of the HTTP suite (`e2e_connectors.rs`) where they apply to files and
//! databases: records map to the canonical record (golden file per kind); an advance is
//! read as exactly the records it changed (the sandbox counts what it wrote), and a night
//! without changes is quiet; a malformed record goes to quarantine; a truncated or garbled
//! delivery fails the run (the CSV drop: a file cut mid-record has no final line break) and
//! leaves the index unchanged; an empty full delivery is held
//! (incremental kinds: a quiet night); a failed incremental run leaves the cursor where the
//! last committed run ended and the next run continues from there.
//!
//! Golden files are created with `MATCHPOINT_UPDATE_GOLDEN=1` and must then be reviewed.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use common::{Install, bin, nine_digit_runs, stderr};

/// A file or SQL kind under test.
pub struct FileKind {
    /// Source name (as the sandbox writes it).
    pub source: &'static str,
    /// Connector kind in the configuration.
    pub kind: &'static str,
    /// `full` or `incremental`.
    pub mode: &'static str,
    /// Extra configuration lines after the source's common lines.
    pub extra: &'static str,
    /// Golden file, relative to the repository root.
    pub golden: &'static str,
    /// Status of a run over a truncated delivery (file kinds).
    pub truncated: &'static str,
}

/// Kind `xml_export` (okc-2).
pub const XML: FileKind = FileKind {
    source: "okc-2",
    kind: "xml_export",
    mode: "full",
    extra: "",
    golden: "tests/golden/okc-2.golden",
    truncated: "failed",
};

/// Kind `csv_drop` (okc-3).
pub const CSV: FileKind = FileKind {
    source: "okc-3",
    kind: "csv_drop",
    mode: "full",
    extra: "[source.csv]\nid_column = \"dossiernummer\"\n",
    golden: "tests/golden/okc-3.golden",
    // A drop cut mid-record (even between two fields) has no final line break: Truncated.
    truncated: "failed",
};

/// Kind `sql_pull` (okc-4: soft deletes).
pub const SQL_OKC4: FileKind = FileKind {
    source: "okc-4",
    kind: "sql_pull",
    mode: "incremental",
    extra: "[source.sql]\nurl_file = \"supplier.url\"\nupdated_at_column = \"gewijzigd_op\"\n\
            deleted_column = \"verwijderd\"\n[source.paging]\npage_size = 7\n",
    golden: "tests/golden/okc-4.golden",
    truncated: "",
};

/// Kind `sql_pull` (RIS: household relations).
pub const SQL_RIS: FileKind = FileKind {
    source: "ris",
    kind: "sql_pull",
    mode: "incremental",
    extra: "[source.sql]\nurl_file = \"supplier.url\"\nid_column = \"zaaknummer\"\n\
            updated_at_column = \"laatst_gewijzigd\"\n[source.paging]\npage_size = 7\n",
    golden: "tests/golden/ris.golden",
    truncated: "",
};

/// Kind `iwmo` (wmo).
pub const IWMO: FileKind = FileKind {
    source: "wmo",
    kind: "iwmo",
    mode: "incremental",
    extra: "[source.iwmo]\nmunicipality = \"0363\"\n",
    golden: "tests/golden/wmo.golden",
    truncated: "failed",
};

/// Where the supplier database lives.
#[derive(Clone)]
pub enum Db {
    /// `sqlite://DIR/supplier.db`, written by the sandbox.
    Sqlite,
    /// A server URL; tables get a unique prefix.
    Server(String),
}

/// A running `matchpoint sandbox --dir`; killed when dropped.
struct Sandbox {
    child: Child,
    _stdout: BufReader<std::process::ChildStdout>,
    /// (name, location, control root)
    sources: Vec<(String, String, String)>,
    http: reqwest::blocking::Client,
}

fn unique_prefix() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "c{}_{}_",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

impl Sandbox {
    fn start(inst: &Install, persons: u64, seed: u64, db: &Db) -> Sandbox {
        let dir = inst.dir.path().display().to_string();
        let mut args = vec![
            "sandbox".to_owned(),
            "--persons".into(),
            persons.to_string(),
            "--seed".into(),
            seed.to_string(),
            "--listen-base".into(),
            "0".into(),
            "--dir".into(),
            dir,
        ];
        let url = match db {
            Db::Sqlite => format!("sqlite://{}", inst.path("supplier.db").display()),
            Db::Server(url) => {
                args.extend([
                    "--supplier-db".into(),
                    url.clone(),
                    "--supplier-prefix".into(),
                    unique_prefix(),
                ]);
                url.clone()
            }
        };
        std::fs::write(inst.path("supplier.url"), format!("{url}\n")).expect("url file");
        let mut child = Command::new(bin())
            .args(&args)
            .env_remove("MATCHPOINT_SUPPLIER_DB_URL")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start sandbox");
        // Kept open until the sandbox stopped, so its last words find a reader.
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut sources = Vec::new();
        loop {
            let mut line = String::new();
            let n = stdout.read_line(&mut line).expect("sandbox output");
            assert!(n > 0, "the sandbox ended before it was ready");
            if line.starts_with("Sandbox ready") {
                break;
            }
            let mut words = line.split_whitespace();
            let (Some(name), Some(_kind), Some(location)) =
                (words.next(), words.next(), words.next())
            else {
                continue;
            };
            if let Some(control) = line.split("control: ").nth(1) {
                let root = control.split("/_sandbox/").next().unwrap_or("").to_owned();
                sources.push((name.to_owned(), location.to_owned(), root));
            }
        }
        assert!(
            sources.iter().any(|s| s.0 == "okc-3"),
            "the sandbox announced no file source: {sources:?}"
        );
        Sandbox {
            child,
            _stdout: stdout,
            sources,
            http: reqwest::blocking::Client::new(),
        }
    }

    fn source(&self, name: &str) -> (&str, &str) {
        self.sources
            .iter()
            .find(|u| u.0 == name)
            .map(|u| (u.1.as_str(), u.2.as_str()))
            .unwrap_or_else(|| panic!("the sandbox has no {name}"))
    }

    fn control(&self, name: &str, what: &str, body: &str) -> serde_json::Value {
        let (_, root) = self.source(name);
        let url = format!("{root}/_sandbox/{what}");
        let resp = if what == "stats" {
            self.http.get(&url).send()
        } else {
            self.http.post(&url).body(body.to_owned()).send()
        }
        .expect("control request");
        let status = resp.status();
        let text = resp.text().expect("body");
        assert!(status.is_success(), "{what}: {status}: {text}");
        serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text))
    }

    /// Advances the source; returns what it wrote.
    fn advance(&self, name: &str) -> serde_json::Value {
        self.control(name, "advance", "")["written"].clone()
    }

    /// Sets faults; returns what the re-written delivery holds.
    fn faults(&self, name: &str, spec: &str) -> serde_json::Value {
        self.control(name, "faults", spec)["written"].clone()
    }
}

impl Drop for Sandbox {
    /// Ctrl-C (the sandbox drops prefixed supplier tables on it), then a kill if it has not
    /// stopped within ten seconds.
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An installation with the sandbox's sources written into it and the kind under test
/// configured (okc-2 is part of every installation).
fn setup(k: &FileKind, persons: u64, seed: u64, db: &Db) -> (Install, Sandbox) {
    let inst = Install::new(persons, seed, 0.0);
    let sb = Sandbox::start(&inst, persons, seed, db);
    if k.source != "okc-2" {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        std::fs::copy(
            root.join(format!("deploy/mappings/{}.toml", k.source)),
            inst.path(&format!("mappings/{}.toml", k.source)),
        )
        .expect("copy mapping");
        let (location, _) = sb.source(k.source);
        let section = format!(
            "\n[[source]]\nname = \"{name}\"\nkind = \"{kind}\"\nlocation = \"{location}\"\n\
             mode = \"{mode}\"\nschedule = \"0 0 * * * *\"\nmapping = \"mappings/{name}.toml\"\n{extra}",
            name = k.source,
            kind = k.kind,
            mode = k.mode,
            extra = k.extra,
        );
        let cfg = inst.path("matchpoint.toml");
        let mut text = std::fs::read_to_string(&cfg).expect("config");
        text.push_str(&section);
        std::fs::write(&cfg, text).expect("write config");
    }
    (inst, sb)
}

/// Syncs the kind's source and returns its run record.
fn sync_one(inst: &Install, k: &FileKind) -> serde_json::Value {
    let out = inst.mp(&["sync", "--json", "--source", k.source]);
    let mut printed = out.stdout.clone();
    printed.extend_from_slice(&out.stderr);
    assert_eq!(
        nine_digit_runs(&printed),
        Vec::<String>::new(),
        "a BSN was printed"
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("sync --json output: {e}\n{}", stderr(&out)));
    v[0].clone()
}

fn count(v: &serde_json::Value, key: &str) -> u64 {
    v["counts"][key]
        .as_u64()
        .unwrap_or_else(|| panic!("no counts.{key} in {v}"))
}

fn num(v: &serde_json::Value, key: &str) -> u64 {
    v[key].as_u64().unwrap_or_else(|| panic!("no {key} in {v}"))
}
fn full(k: &FileKind) -> bool {
    k.mode == "full"
}

// ---- The checks -------------------------------------------------------------------------

/// Records map to the canonical record: the published rows of a small population equal the
/// reviewed golden file (the same file for every database of the SQL kinds).
pub fn golden(k: &FileKind, db: &Db) {
    let (inst, _sb) = setup(k, 60, 11, db);
    let run = sync_one(&inst, k);
    assert_eq!(run["status"], "succeeded", "{run}");
    let got = inst.published_rows(k.source).join("\n") + "\n";
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(k.golden);
    if std::env::var_os("MATCHPOINT_UPDATE_GOLDEN").is_some() && matches!(db, Db::Sqlite) {
        std::fs::write(&path, &got).expect("write golden");
    }
    let want = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "golden file {}: {e} (create it with MATCHPOINT_UPDATE_GOLDEN=1 and review it)",
            path.display()
        )
    });
    assert_eq!(got, want, "published rows differ from {}", k.golden);
    assert!(
        got.lines().count() > 3,
        "a golden file with a handful of rows"
    );
}

/// An advance is read as exactly what it changed; a night without changes is quiet.
pub fn advance_is_read_as_its_changes(k: &FileKind, db: &Db) {
    let (inst, sb) = setup(k, 600, 12, db);
    let first = sync_one(&inst, k);
    assert_eq!(first["status"], "succeeded", "{first}");
    let total = count(&first, "inserted");
    assert!(total > 50, "{first}");
    let c1 = inst.cursor(k.source);

    let written = sb.advance(k.source);
    let changed = num(&written, "changed");
    assert!(changed > 0 && changed * 5 < total, "{written}");
    let second = sync_one(&inst, k);
    assert_eq!(second["status"], "succeeded", "{second}");
    assert_eq!(
        count(&second, "ended"),
        0,
        "nothing ends by absence: {second}"
    );
    assert!(count(&second, "updated") > 0, "{second}");
    if full(k) {
        assert_eq!(
            count(&second, "inserted") + count(&second, "updated"),
            changed,
            "a full delivery shows exactly the changes: {second}"
        );
        assert!(count(&second, "inserted") > 0, "new records: {second}");
    } else {
        assert_eq!(count(&second, "read"), changed, "{second}");
        let c2 = inst.cursor(k.source).expect("cursor");
        assert!(c1.as_deref() < Some(c2.as_str()), "the cursor moves on");
    }
    assert_eq!(
        inst.published_rows(k.source).len() as u64,
        total + count(&second, "inserted")
    );

    let quiet = sync_one(&inst, k);
    assert_eq!(quiet["status"], "succeeded", "{quiet}");
    assert_eq!(
        count(&quiet, "inserted") + count(&quiet, "updated"),
        0,
        "{quiet}"
    );
    if !full(k) {
        assert_eq!(count(&quiet, "read"), 0, "a quiet night: {quiet}");
    }
}

/// Malformed records go to quarantine with their reason; the rest publishes.
pub fn check_malformed_records(k: &FileKind, db: &Db) {
    let (inst, sb) = setup(k, 200, 15, db);
    let written = if full(k) {
        sb.faults(k.source, "malformed=0.1")
    } else {
        let ok = sync_one(&inst, k);
        assert_eq!(ok["status"], "succeeded", "{ok}");
        sb.faults(k.source, "malformed=0.3");
        sb.advance(k.source)
    };
    let bad = num(&written, "malformed");
    assert!(bad > 0, "{written}");
    let run = sync_one(&inst, k);
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(count(&run, "rejected"), bad, "{run}");
    let out = inst.mp(&["quarantine", "--json", "--source", k.source]);
    let q: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let entries = q.as_array().map_or(0, Vec::len) as u64;
    assert!(
        entries >= bad,
        "every rejected record is in quarantine: {q}"
    );
}

/// A truncated or garbled delivery fails the run (or is held) without touching the index.
pub fn broken_delivery_is_not_published(k: &FileKind, db: &Db, spec: &str, status: &str) {
    let (inst, sb) = setup(k, 120, 16, db);
    let ok = sync_one(&inst, k);
    assert_eq!(ok["status"], "succeeded", "{ok}");
    let before = inst.published_rows(k.source);
    let c1 = inst.cursor(k.source);
    sb.faults(k.source, spec);
    sb.advance(k.source);
    let run = sync_one(&inst, k);
    assert_eq!(run["status"], status, "{run}");
    if status == "failed" {
        let err = run["error"].as_str().unwrap_or("");
        assert!(err.contains("nothing was published"), "{err}");
        if k.kind == "csv_drop" && spec.starts_with("truncate") {
            assert!(err.contains("delivery is truncated"), "{err}");
        }
    }
    assert_eq!(inst.published_rows(k.source), before);
    assert_eq!(inst.cursor(k.source), c1);
}

/// An empty full delivery is held by the shrink guard; for an incremental kind an advance
/// without changes is a quiet night.
pub fn empty_delivery(k: &FileKind, db: &Db) {
    let (inst, sb) = setup(k, 120, 17, db);
    let ok = sync_one(&inst, k);
    assert_eq!(ok["status"], "succeeded", "{ok}");
    let before = inst.published_rows(k.source);
    let written = sb.faults(k.source, "empty=1");
    if !full(k) {
        let written = sb.advance(k.source);
        assert_eq!(num(&written, "records"), 0, "{written}");
    } else {
        assert_eq!(num(&written, "records"), 0, "{written}");
    }
    let run = sync_one(&inst, k);
    let want = if full(k) { "held" } else { "succeeded" };
    assert_eq!(run["status"], want, "{run}");
    if !full(k) {
        assert_eq!(count(&run, "read"), 0, "{run}");
    }
    assert_eq!(inst.published_rows(k.source), before);
}

/// A failed incremental run leaves the cursor where the last committed run ended; once the
/// fault is gone the next run reads exactly what changed since.
pub fn cursor_resumes_after_a_failed_run(k: &FileKind, db: &Db) {
    let (inst, sb) = setup(k, 200, 19, db);
    let first = sync_one(&inst, k);
    assert_eq!(first["status"], "succeeded", "{first}");
    let c1 = inst.cursor(k.source).expect("cursor");
    let written = sb.advance(k.source);
    let changed = num(&written, "changed");
    let spec = if k.kind == "iwmo" {
        "truncate=1"
    } else {
        "missing-view=1"
    };
    sb.faults(k.source, spec);
    let broken = sync_one(&inst, k);
    assert_eq!(broken["status"], "failed", "{broken}");
    if spec == "missing-view=1" {
        let (view, _) = sb.source(k.source);
        let err = broken["error"].as_str().unwrap_or("");
        assert!(err.contains(view), "the error names the view: {err}");
    }
    assert_eq!(inst.cursor(k.source).as_deref(), Some(c1.as_str()));
    sb.faults(k.source, "");
    let resumed = sync_one(&inst, k);
    assert_eq!(resumed["status"], "succeeded", "{resumed}");
    assert_eq!(count(&resumed, "read"), changed, "{resumed}");
    assert!(inst.cursor(k.source).expect("cursor") > c1);
}

/// One check that applies to some kinds only (see [`file_suite!`]).
macro_rules! extra_check {
    (truncate, $kind:expr, $db:expr) => {
        #[test]
        fn a_truncated_delivery_is_not_published() {
            if let Some(db) = $db {
                broken_delivery_is_not_published(&$kind, &db, "truncate=1", $kind.truncated);
            }
        }
    };
    (garbage, $kind:expr, $db:expr) => {
        #[test]
        fn a_garbled_delivery_fails_the_run() {
            if let Some(db) = $db {
                broken_delivery_is_not_published(&$kind, &db, "garbage=1", "failed");
            }
        }
    };
    (cursor, $kind:expr, $db:expr) => {
        #[test]
        fn the_cursor_resumes_after_a_failed_run() {
            if let Some(db) = $db {
                cursor_resumes_after_a_failed_run(&$kind, &db);
            }
        }
    };
}

/// The suite for one kind on one database: the common checks, and the named extra ones
/// (`truncate` and `garbage` for file kinds, `cursor` for incremental kinds).
macro_rules! file_suite {
    ($module:ident, $kind:expr, $db:expr $(, $extra:ident)*) => {
        mod $module {
            use super::*;

            #[test]
            fn records_match_the_golden_file() {
                if let Some(db) = $db {
                    golden(&$kind, &db);
                }
            }
            #[test]
            fn an_advance_is_read_as_its_changes_and_a_quiet_night_is_quiet() {
                if let Some(db) = $db {
                    advance_is_read_as_its_changes(&$kind, &db);
                }
            }
            #[test]
            fn malformed_records_are_quarantined() {
                if let Some(db) = $db {
                    check_malformed_records(&$kind, &db);
                }
            }
            #[test]
            fn an_empty_delivery_is_held_or_quiet() {
                if let Some(db) = $db {
                    empty_delivery(&$kind, &db);
                }
            }
            $( extra_check!($extra, $kind, $db); )*
        }
    };
}

fn sqlite() -> Option<Db> {
    Some(Db::Sqlite)
}

fn server(var: &str) -> Option<Db> {
    match std::env::var(var) {
        Ok(url) if !url.is_empty() => Some(Db::Server(url)),
        _ => {
            eprintln!("SKIPPED: set {var} to run the SQL compliance checks on that server");
            None
        }
    }
}

fn postgres() -> Option<Db> {
    server("MATCHPOINT_TEST_POSTGRES_URL")
}

fn mariadb() -> Option<Db> {
    server("MATCHPOINT_TEST_MYSQL_URL")
}

file_suite!(xml_export, XML, sqlite(), truncate, garbage);
file_suite!(csv_drop, CSV, sqlite(), truncate, garbage);
file_suite!(iwmo, IWMO, sqlite(), truncate, garbage, cursor);
file_suite!(sql_okc4_sqlite, SQL_OKC4, sqlite(), cursor);
file_suite!(sql_ris_sqlite, SQL_RIS, sqlite(), cursor);
file_suite!(sql_okc4_postgres, SQL_OKC4, postgres(), cursor);
file_suite!(sql_ris_postgres, SQL_RIS, postgres(), cursor);
file_suite!(sql_okc4_mariadb, SQL_OKC4, mariadb(), cursor);
file_suite!(sql_ris_mariadb, SQL_RIS, mariadb(), cursor);

/// The messages an advance writes are schema-valid iWmo 3.2 (`xmllint --schema` against the
/// official XSDs), WMO301, WMO305 and WMO307 alike.
#[test]
fn advanced_iwmo_messages_validate_against_the_schemas() {
    let found = Command::new("xmllint").arg("--version").output().is_ok();
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "xmllint is missing: CI must install libxml2-utils"
        );
        eprintln!("SKIPPED: xmllint not found (apt-get install libxml2-utils)");
        return;
    }
    let (_inst, sb) = setup(&IWMO, 400, 21, &Db::Sqlite);
    let schemas = Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas/formats/iwmo-3.2");
    let mut kinds = std::collections::BTreeSet::new();
    for _ in 0..3 {
        let written = sb.advance("wmo");
        let files = written["files"].as_array().expect("files").clone();
        assert!(!files.is_empty(), "{written}");
        for f in files {
            let file = f.as_str().expect("path");
            let kind = ["wmo301", "wmo305", "wmo307"]
                .into_iter()
                .find(|k| file.ends_with(&format!("-{k}.xml")))
                .expect("a message kind in the file name");
            kinds.insert(kind);
            let xsd = schemas.join(format!("{}.xsd", kind.to_uppercase()));
            let out = Command::new("xmllint")
                .arg("--noout")
                .arg("--schema")
                .arg(&xsd)
                .arg(file)
                .output()
                .expect("xmllint");
            assert!(
                out.status.success(),
                "{file} does not validate: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    assert_eq!(
        kinds.len(),
        3,
        "new, changed and ended assignments: {kinds:?}"
    );
}
