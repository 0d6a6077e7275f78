//! End-to-end: `matchpoint run` through the real binary — a never-run source is synced,
//! nothing is due right after, a lease held by another instance makes it skip, two real
//! processes on one store (SQLite; PostgreSQL when `MATCHPOINT_TEST_POSTGRES_URL` is set) never
//! run one source twice, SIGTERM stops the long-running scheduler cleanly, and no BSN of the
//! export appears in the output.

mod common;

use common::{Install, export_bsns, nine_digit_runs, spawn_paused, stderr, stdout};

/// A schedule that does not fire while the test runs (1 January 2099, 00:00).
const FAR_SCHEDULE: &str = "0 0 0 1 1 * 2099";

fn install() -> Install {
    install_on(None)
}

fn install_on(store: Option<&str>) -> Install {
    let inst = Install::with_store(200, 5, 0.02, store);
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
    let plan = |inst: &Install| -> serde_json::Value {
        let out = inst.mp(&["run", "--plan", "--json"]);
        assert!(out.status.success(), "run --plan: {}", stderr(&out));
        serde_json::from_slice(&out.stdout).expect("plan json")
    };
    let before = plan(&inst);
    assert_eq!(before[0]["source"], "okc-2");
    assert_eq!(before[0]["stale"], true, "never succeeded: {before}");
    assert!(before[0]["last_started"].is_null(), "{before}");

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

    let after = plan(&inst);
    assert_eq!(after[0]["stale"], false, "{after}");
    assert!(after[0]["last_started"].is_string(), "{after}");
    assert!(
        after[0]["next_due"]
            .as_str()
            .is_some_and(|t| t.starts_with("2098-12-31T23:00:00")),
        "next due is the far slot (1 Jan 2099 00:00 Amsterdam): {after}"
    );
    let out = inst.mp(&["run", "--plan"]);
    assert!(stdout(&out).contains("fresh"), "{}", stdout(&out));

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

#[test]
fn the_long_running_scheduler_stops_cleanly_on_sigterm() {
    use std::io::BufRead;
    use std::process::Stdio;

    let inst = install();
    let out = inst.mp(&["run", "--once"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let mut child = inst
        .command(&["run"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn matchpoint run");
    let mut lines = std::io::BufReader::new(child.stderr.take().expect("stderr")).lines();
    // Wait (by reading, not sleeping) until the scheduler has started.
    let mut seen = Vec::new();
    for line in lines.by_ref() {
        let line = line.expect("stderr line");
        let started = line.contains("Scheduler started.");
        seen.push(line);
        if started {
            break;
        }
    }
    assert!(
        seen.last()
            .is_some_and(|l| l.contains("Scheduler started.")),
        "{seen:?}"
    );
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(kill.success());
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let status = child.wait().expect("wait");
    assert!(status.success(), "exit {status:?}: {rest:?}");
    assert!(
        rest.iter().any(|l| l.contains("Scheduler stopped.")),
        "{rest:?}"
    );
    // Nothing ran in the meantime: still one run in the history.
    let conn = rusqlite::Connection::open(inst.db()).expect("open db");
    let runs: i64 = conn
        .query_row("SELECT count(*) FROM runs", [], |r| r.get(0))
        .expect("count runs");
    assert_eq!(runs, 1);
}

/// Two real processes on one store: A holds the lease (paused right after taking it), B finds
/// the source due, skips it and names A; A then completes the only run.
fn two_instances_never_run_one_source_twice(inst: &Install) {
    let (a, _seen, rest) = spawn_paused(inst, &["run", "--once"], "schedule:leased");
    let out = inst.mp(&["run", "--once"]);
    let (o, e) = (stdout(&out), stderr(&out));
    assert!(out.status.success(), "B: {o}\n{e}");
    assert!(o.contains("okc-2: skipped, another instance ("), "B: {o}");
    assert!(e.contains("another instance holds its lease"), "B: {e}");
    // Resume A: closing its stdin releases the pause.
    let mut a = a;
    drop(a.stdin.take());
    let status = a.wait().expect("wait for A");
    let rest = rest.join().expect("stderr of A");
    assert!(status.success(), "A: {}", String::from_utf8_lossy(&rest));
    let out = inst.mp(&["runs", "--json"]);
    let runs: serde_json::Value = serde_json::from_slice(&out.stdout).expect("runs json");
    assert_eq!(
        runs.as_array().map(Vec::len),
        Some(1),
        "exactly one run: {runs}"
    );
    assert_eq!(runs[0]["status"], "succeeded");
}

#[test]
fn a_second_process_skips_a_source_leased_by_the_first_on_sqlite() {
    two_instances_never_run_one_source_twice(&install());
}

#[test]
fn a_second_process_skips_a_source_leased_by_the_first_on_postgres() {
    let Ok(admin) = std::env::var("MATCHPOINT_TEST_POSTGRES_URL") else {
        let _ = std::io::Write::write_all(
            &mut std::io::stderr(),
            b"PostgreSQL scheduler end-to-end test SKIPPED: set MATCHPOINT_TEST_POSTGRES_URL\n",
        );
        return;
    };
    let name = format!("mp_e2e_run_{}", std::process::id());
    let psql = |url: &str, sql: &str| {
        let out = std::process::Command::new("psql")
            .args([url, "-v", "ON_ERROR_STOP=1", "-qAtc", sql])
            .output()
            .expect("psql must be installed to run the PostgreSQL tests");
        assert!(out.status.success(), "psql {sql}: {}", stderr(&out));
    };
    psql(
        &admin,
        &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
    );
    psql(&admin, &format!("CREATE DATABASE {name}"));
    let base = admin
        .rsplit_once('/')
        .map(|(b, _)| b.to_owned())
        .expect("url has a database");
    let inst = install_on(Some(&format!("{base}/{name}")));
    two_instances_never_run_one_source_twice(&inst);
    psql(
        &admin,
        &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
    );
}
