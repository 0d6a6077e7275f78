//! End-to-end: `matchpoint run --once` through the real binary on SQLite — a never-run source
//! is synced, nothing is due right after, a lease held by another instance makes it skip, and
//! the run shows up in the run history. No clear identity appears in the output.

mod common;

use common::{Install, export_bsns, nine_digit_runs, stderr, stdout};

/// A schedule that does not fire while the test runs (1 January 2099, 00:00).
const FAR_SCHEDULE: &str = "0 0 0 1 1 * 2099";

fn install() -> Install {
    let inst = Install::new(200, 5, 0.02);
    let path = inst.path("matchpoint.toml");
    let text = std::fs::read_to_string(&path).expect("read config");
    let text = text.replace(
        "schedule = \"0 30 2 * * *\"",
        &format!("schedule = \"{FAR_SCHEDULE}\""),
    );
    assert!(
        text.contains(FAR_SCHEDULE),
        "config template changed: {text}"
    );
    std::fs::write(&path, text).expect("write config");
    inst
}

#[test]
fn run_once_syncs_a_never_run_source_and_then_finds_nothing_due() {
    let inst = install();
    let out = inst.mp(&["run", "--once"]);
    let (o, e) = (stdout(&out), stderr(&out));
    assert!(out.status.success(), "run --once: {o}\n{e}");
    assert!(o.contains("okc-2") && o.contains("succeeded"), "{o}");
    assert!(e.contains("Scheduled run starting."), "{e}");
    let bsns = export_bsns(&inst.export());
    assert!(!bsns.is_empty());
    for run in nine_digit_runs(out.stdout.as_slice())
        .into_iter()
        .chain(nine_digit_runs(out.stderr.as_slice()))
    {
        assert!(
            !bsns.contains(&run),
            "a BSN of the export appears in the output"
        );
    }

    let out = inst.mp(&["run", "--once"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("Nothing was due."),
        "{}",
        stdout(&out)
    );

    let out = inst.mp(&["runs", "--json"]);
    let runs: serde_json::Value = serde_json::from_slice(&out.stdout).expect("runs json");
    assert_eq!(runs.as_array().map(Vec::len), Some(1), "{runs}");
    assert_eq!(runs[0]["status"], "succeeded");

    // The lease was released after the run.
    let conn = rusqlite::Connection::open(inst.db()).expect("open db");
    let leases: i64 = conn
        .query_row("SELECT count(*) FROM source_leases", [], |r| r.get(0))
        .expect("count leases");
    assert_eq!(leases, 0);
}

#[test]
fn run_once_skips_a_source_whose_lease_another_instance_holds() {
    let inst = install();
    // Open (and migrate) the store, then take the lease as "another instance" would.
    let out = inst.mp(&["stats"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let conn = rusqlite::Connection::open(inst.db()).expect("open db");
    conn.execute(
        "INSERT INTO source_leases (source, holder, acquired_at, expires_at)
         VALUES ('okc-2', 'other-host/4242/cafe', 0, ?1)",
        [i64::MAX],
    )
    .expect("take lease");

    let out = inst.mp(&["run", "--once"]);
    let (o, e) = (stdout(&out), stderr(&out));
    assert!(out.status.success(), "a skip is not a failure: {o}\n{e}");
    assert!(
        o.contains("skipped") && o.contains("other-host/4242/cafe"),
        "{o}"
    );
    assert!(e.contains("another instance holds its lease"), "{e}");
    let runs: i64 = conn
        .query_row("SELECT count(*) FROM runs", [], |r| r.get(0))
        .expect("count runs");
    assert_eq!(runs, 0, "nothing ran here");
}
