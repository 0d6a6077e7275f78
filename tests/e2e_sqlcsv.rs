//! End-to-end: the CSV drop (okc-3) and the SQL pulls (okc-4, RIS) through the real binary,
//! next to the XML export (okc-2), all from one population: `matchpoint supplier-db` writes
//! the supplier database (SQLite) and the okc-3 drop, `matchpoint sync` reads all four, and
//! the same persons come out under one pseudonym with their household relations.

mod common;

use common::{Install, nine_digit_runs, stderr, stdout};

const PERSONS: u64 = 300;
const SEED: u64 = 7;

fn add_sources(inst: &Install) {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for m in ["okc-3", "okc-4", "ris"] {
        std::fs::copy(
            root.join(format!("deploy/mappings/{m}.toml")),
            inst.path(&format!("mappings/{m}.toml")),
        )
        .expect("copy mapping");
    }
    let url = format!("sqlite://{}", inst.path("supplier.db").display());
    std::fs::write(inst.path("supplier.url"), format!("{url}\n")).expect("url file");
    let mut text = std::fs::read_to_string(inst.path("matchpoint.toml")).expect("config");
    text.push_str(
        r#"
[[source]]
name = "okc-3"
kind = "csv_drop"
location = "data/okc-3"
mode = "full"
schedule = "0 0 3 * * *"
mapping = "mappings/okc-3.toml"
[source.csv]
id_column = "dossiernummer"

[[source]]
name = "okc-4"
kind = "sql_pull"
location = "matchpoint_okc4"
mode = "incremental"
schedule = "0 10 3 * * *"
mapping = "mappings/okc-4.toml"
[source.sql]
url_file = "supplier.url"
updated_at_column = "gewijzigd_op"
deleted_column = "verwijderd"
[source.paging]
page_size = 50

[[source]]
name = "ris"
kind = "sql_pull"
location = "matchpoint_ris"
mode = "incremental"
schedule = "0 20 3 * * *"
mapping = "mappings/ris.toml"
[source.sql]
url_file = "supplier.url"
id_column = "zaaknummer"
updated_at_column = "laatst_gewijzigd"
"#,
    );
    std::fs::write(inst.path("matchpoint.toml"), text).expect("write config");
}

fn supplier_db(inst: &Install, advance: bool) {
    let url = format!("sqlite://{}", inst.path("supplier.db").display());
    let persons = PERSONS.to_string();
    let seed = SEED.to_string();
    let mut args = vec![
        "supplier-db",
        "--url",
        &url,
        "--persons",
        &persons,
        "--seed",
        &seed,
        "--dir",
        ".",
    ];
    if advance {
        args.push("--advance");
    }
    let out = inst.mp(&args);
    assert!(out.status.success(), "supplier-db: {}", stderr(&out));
    assert!(stdout(&out).contains("okc-4"), "{}", stdout(&out));
    // Progress on stderr (not a terminal here: a line per source at its end).
    let progress = stderr(&out);
    for source in ["okc-4", "ris"] {
        assert!(
            progress
                .lines()
                .any(|l| l.starts_with(source) && l.ends_with("rows written")),
            "{progress}"
        );
    }
}

fn sync(inst: &Install) -> Vec<serde_json::Value> {
    let out = inst.mp(&["sync", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("sync --json output: {e}\n{}", stderr(&out)));
    assert!(out.status.success(), "sync: {v}\n{}", stderr(&out));
    // No BSN (nor any nine-digit number) in the output or the debug log.
    let mut printed = out.stdout.clone();
    printed.extend_from_slice(&out.stderr);
    assert_eq!(nine_digit_runs(&printed), Vec::<String>::new());
    v.as_array().cloned().unwrap_or_default()
}

fn run_of<'a>(runs: &'a [serde_json::Value], source: &str) -> &'a serde_json::Value {
    runs.iter()
        .find(|r| r["source"] == source)
        .unwrap_or_else(|| panic!("no run of {source} in {runs:?}"))
}

#[test]
fn csv_and_sql_sources_sync_with_the_xml_export_into_one_index() {
    let inst = Install::new(PERSONS, SEED, 0.0);
    add_sources(&inst);
    supplier_db(&inst, false);

    let runs = sync(&inst);
    for source in ["okc-2", "okc-3", "okc-4", "ris"] {
        let r = run_of(&runs, source);
        assert_eq!(r["status"], "succeeded", "{r}");
        assert!(r["counts"]["inserted"].as_u64().unwrap_or(0) > 0, "{r}");
    }

    let db = rusqlite::Connection::open(inst.db()).expect("index");
    // The same persons, one pseudonym, several sources.
    let shared: i64 = db
        .query_row(
            "SELECT COUNT(*) FROM (SELECT person FROM involvements GROUP BY person \
             HAVING COUNT(DISTINCT source) >= 3)",
            [],
            |r| r.get(0),
        )
        .expect("query");
    assert!(shared > 0, "no person is known to three sources");
    // RIS relations point at persons other sources know.
    let linked: i64 = db
        .query_row(
            "SELECT COUNT(*) FROM relations r WHERE r.source = 'ris' AND EXISTS \
             (SELECT 1 FROM involvements i WHERE i.person = r.other AND i.source <> 'ris')",
            [],
            |r| r.get(0),
        )
        .expect("query");
    assert!(
        linked > 0,
        "RIS relations link to no person of another source"
    );

    // The next night: the SQL sources read only what changed.
    supplier_db(&inst, true);
    let runs = sync(&inst);
    let okc4 = run_of(&runs, "okc-4");
    assert_eq!(okc4["status"], "succeeded", "{okc4}");
    let read = okc4["counts"]["read"].as_u64().unwrap_or(0);
    let total: i64 = db
        .query_row(
            "SELECT COUNT(*) FROM involvements WHERE source = 'okc-4'",
            [],
            |r| r.get(0),
        )
        .expect("query");
    assert!(
        read > 0 && (read as i64) < total / 4,
        "read {read} of {total}"
    );
}
