//! End-to-end: `matchpoint serve` runs the scheduler next to the API. A never-run source is
//! synced by the serve process itself, `/metrics` then names the run (and holds no BSN of the
//! export), `/readyz` reports the source fresh, and SIGTERM stops API and scheduler cleanly.
//! `--log-format json` writes JSON lines. `matchpoint sync` takes the source lease and skips a
//! source another instance holds. SIGTERM while a run started by `POST /api/v1/sync/runs` is
//! in progress (paused at a known point with `MATCHPOINT_PAUSE_AT=stage:1`, released by
//! closing the child's stdin) cancels it — recorded as failed, nothing published, lease
//! released — within `[server] shutdown_grace_secs`, and past it serve records and releases
//! the run itself. Synchronisation is by reading the process's output, the run history and
//! the lease table (never by sleeping).

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Stdio};
use std::sync::mpsc;

use common::{Install, export_bsns, nine_digit_runs};

/// A schedule that does not fire while the test runs (a never-run source is due at once).
const FAR_SCHEDULE: &str = "0 0 0 1 1 * 2099";

fn install() -> Install {
    let inst = Install::new(150, 7, 0.02);
    let path = inst.path("matchpoint.toml");
    let text = std::fs::read_to_string(&path).expect("read config");
    let text = text.replace(
        "schedule = \"0 30 2 * * *\"",
        &format!("schedule = \"{FAR_SCHEDULE}\""),
    );
    assert!(text.contains(FAR_SCHEDULE), "config template changed");
    std::fs::write(&path, text).expect("write config");
    inst
}

#[test]
fn serve_runs_the_scheduler_exports_metrics_and_stops_on_sigterm() {
    let inst = install();
    let mut child = inst
        .command(&["serve", "--listen", "127.0.0.1:0", "--log-format", "json"])
        .env("MATCHPOINT_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn matchpoint serve");
    let mut out = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let first = out.next().expect("a line").expect("stdout line");
    assert!(first.contains("scheduler running"), "{first}");
    let addr = first
        .split("http://")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .expect("address")
        .to_owned();
    // Wait (by reading the log) until the scheduler inside serve has published the run.
    let mut err = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let mut seen = Vec::new();
    for line in err.by_ref() {
        let line = line.expect("stderr line");
        let done = line.contains("Sync run published.") || line.contains("did not publish");
        seen.push(line);
        if done {
            break;
        }
    }
    let last = seen.last().cloned().unwrap_or_default();
    assert!(last.contains("Sync run published."), "{seen:#?}");
    // JSON lines: each parses, with level and fields.
    for line in &seen {
        let v: serde_json::Value = serde_json::from_str(line).expect("a JSON log line");
        assert!(v["level"].is_string() && v["fields"].is_object(), "{line}");
    }

    let client = reqwest::blocking::Client::new();
    let metrics = client
        .get(format!("http://{addr}/metrics"))
        .send()
        .expect("GET /metrics")
        .text()
        .expect("metrics text");
    assert!(
        metrics.contains(
            "matchpoint_sync_runs_total{source=\"okc-2\",mode=\"full\",status=\"succeeded\"} 1"
        ),
        "{metrics}"
    );
    assert!(metrics.contains("matchpoint_sync_records_total{source=\"okc-2\",outcome=\"read\"}"));
    assert!(metrics.contains("matchpoint_source_stale{source=\"okc-2\"} 0"));
    let bsns = export_bsns(&inst.export());
    assert!(!bsns.is_empty());
    for run in nine_digit_runs(metrics.as_bytes()) {
        assert!(!bsns.contains(&run), "a BSN of the export in /metrics");
    }
    let ready: serde_json::Value = serde_json::from_str(
        &client
            .get(format!("http://{addr}/readyz"))
            .send()
            .expect("GET /readyz")
            .text()
            .expect("readyz body"),
    )
    .expect("readyz json");
    assert_eq!(ready["sources"][0]["source"], "okc-2", "{ready}");
    assert_eq!(ready["sources"][0]["stale"], false, "{ready}");

    let kill = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(kill.success());
    let rest_err: Vec<String> = err.map_while(Result::ok).collect();
    let rest_out: Vec<String> = out.map_while(Result::ok).collect();
    let status = child.wait().expect("wait");
    assert!(status.success(), "exit {status:?}: {rest_err:#?}");
    assert!(rest_out.iter().any(|l| l == "Stopped."), "{rest_out:?}");
    assert!(
        rest_err.iter().any(|l| l.contains("Scheduler stopped.")),
        "{rest_err:#?}"
    );
    for line in rest_err.iter().chain(&seen) {
        for run in nine_digit_runs(line.as_bytes()) {
            assert!(!bsns.contains(&run), "a BSN of the export in the log");
        }
    }
}

#[test]
fn serve_without_the_scheduler_runs_nothing_and_stops_on_sigterm() {
    let inst = install();
    let mut child = inst
        .command(&["serve", "--listen", "127.0.0.1:0", "--no-scheduler"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn matchpoint serve");
    let mut out = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let first = out.next().expect("a line").expect("stdout line");
    assert!(
        first.contains("listening") && !first.contains("scheduler"),
        "{first}"
    );
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(kill.success());
    let rest: Vec<String> = out.map_while(Result::ok).collect();
    assert!(child.wait().expect("wait").success());
    assert!(rest.iter().any(|l| l == "Stopped."), "{rest:?}");
    let conn = rusqlite::Connection::open(inst.db()).expect("open db");
    let runs: i64 = conn
        .query_row("SELECT count(*) FROM runs", [], |r| r.get(0))
        .unwrap_or(0);
    assert_eq!(runs, 0, "no scheduler: nothing ran");
}

#[test]
fn sync_takes_the_source_lease_and_skips_a_source_another_instance_holds() {
    let inst = install();
    let out = inst.mp(&["stats"]);
    assert!(out.status.success(), "{}", common::stderr(&out));
    let conn = rusqlite::Connection::open(inst.db()).expect("open db");
    conn.execute(
        "INSERT INTO source_leases (source, holder, acquired_at, expires_at)
         VALUES ('okc-2', 'other-host/4242/cafe', 0, ?1)",
        [i64::MAX],
    )
    .expect("take lease");
    let out = inst.mp(&["sync"]);
    let e = common::stderr(&out);
    assert!(
        !out.status.success(),
        "a skipped sync is not a success: {e}"
    );
    assert!(
        e.contains("okc-2: not synced") && e.contains("other-host/4242/cafe"),
        "{e}"
    );
    let runs: i64 = conn
        .query_row("SELECT count(*) FROM runs", [], |r| r.get(0))
        .expect("count runs");
    assert_eq!(runs, 0, "nothing ran");

    // Lease gone: the sync runs and releases it afterwards.
    conn.execute("DELETE FROM source_leases", [])
        .expect("drop lease");
    let out = inst.mp(&["sync"]);
    assert!(out.status.success(), "{}", common::stderr(&out));
    let leases: i64 = conn
        .query_row("SELECT count(*) FROM source_leases", [], |r| r.get(0))
        .expect("count leases");
    assert_eq!(leases, 0, "the lease is released after the run");
    let runs: i64 = conn
        .query_row("SELECT count(*) FROM runs", [], |r| r.get(0))
        .expect("count runs");
    assert_eq!(runs, 1);
}

fn add_user(inst: &Install, role: &str, org: &str) -> String {
    let out = inst.mp(&[
        "users",
        "add",
        "--name",
        "E2E user",
        "--role",
        role,
        "--organisation",
        org,
        "--json",
    ]);
    assert!(out.status.success(), "users add: {}", common::stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    v["token"].as_str().expect("token").to_owned()
}

#[test]
fn an_operator_starts_a_run_202_a_held_lease_answers_409_a_professional_403_all_audited() {
    let inst = install();
    let operator = add_user(&inst, "operator", "GGD-AMS");
    let professional = add_user(&inst, "professional", "SD-NOORD");
    let mut child = inst
        .command(&["serve", "--listen", "127.0.0.1:0", "--no-scheduler"])
        .env("MATCHPOINT_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn matchpoint serve");
    let mut out = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let first = out.next().expect("a line").expect("stdout line");
    let addr = first
        .split("http://")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .expect("address")
        .to_owned();
    let client = reqwest::blocking::Client::new();
    let post = |token: &str, body: serde_json::Value| {
        client
            .post(format!("http://{addr}/api/v1/sync/runs"))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .expect("POST /api/v1/sync/runs")
    };
    let forbidden = post(&professional, serde_json::json!({ "source": "okc-2" }));
    assert_eq!(forbidden.status().as_u16(), 403);
    let started = post(
        &operator,
        serde_json::json!({ "source": "okc-2", "full": true }),
    );
    assert_eq!(started.status().as_u16(), 202);
    let started: serde_json::Value =
        serde_json::from_str(&started.text().expect("202 body")).expect("202 json");
    let run_id = started["run_id"].as_i64().expect("run id");
    // Wait (by reading the log) for the run to finish.
    let mut err = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let mut seen = Vec::new();
    for line in err.by_ref() {
        let line = line.expect("stderr line");
        let done = line.contains("Sync run published.") || line.contains("did not publish");
        seen.push(line);
        if done {
            break;
        }
    }
    assert!(
        seen.last()
            .is_some_and(|l| l.contains("Sync run published.")),
        "{seen:#?}"
    );
    let runs: serde_json::Value = serde_json::from_str(
        &client
            .get(format!("http://{addr}/api/v1/sync/runs"))
            .bearer_auth(&operator)
            .send()
            .expect("GET runs")
            .text()
            .expect("runs body"),
    )
    .expect("runs json");
    assert_eq!(runs[0]["source"], "okc-2", "{runs}");
    assert_eq!(runs[0]["id"], run_id, "{runs}");
    assert_eq!(runs[0]["mode"], "full", "{runs}");
    assert_eq!(runs[0]["status"], "succeeded", "{runs}");

    // Another instance holds the lease now: 409, nothing started. (Upsert: the serving
    // instance may not have released its own lease yet; its release then leaves this one.)
    let conn = rusqlite::Connection::open(inst.db()).expect("open db");
    conn.execute(
        "INSERT INTO source_leases (source, holder, acquired_at, expires_at)
         VALUES ('okc-2', 'other-host/4242/cafe', 0, ?1)
         ON CONFLICT (source) DO UPDATE SET holder = excluded.holder,
           acquired_at = excluded.acquired_at, expires_at = excluded.expires_at",
        [i64::MAX],
    )
    .expect("take lease");
    let held = post(&operator, serde_json::json!({ "source": "okc-2" }));
    assert_eq!(held.status().as_u16(), 409);
    let unknown = post(&operator, serde_json::json!({ "source": "no-such-source" }));
    assert_eq!(unknown.status().as_u16(), 400);

    let kill = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(kill.success());
    let _: Vec<String> = err.map_while(Result::ok).collect();
    assert!(child.wait().expect("wait").success());
    let runs: i64 = conn
        .query_row("SELECT count(*) FROM runs", [], |r| r.get(0))
        .expect("count runs");
    assert_eq!(runs, 1, "the 409 started nothing");
    // One audit entry per trigger request: granted, refused (lease), invalid, and the 403.
    let outcomes: Vec<String> = {
        let mut st = conn
            .prepare(
                "SELECT outcome FROM audit_log WHERE action = 'operator_view'
                 AND (checks LIKE '%trigger:run%' OR outcome = 'refused') ORDER BY seq",
            )
            .expect("prepare");
        st.query_map([], |r| r.get(0))
            .expect("query")
            .map(|r| r.expect("row"))
            .collect()
    };
    assert_eq!(
        outcomes,
        ["refused", "granted", "refused", "invalid"],
        "{outcomes:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Shutdown with a manual run in flight
// ---------------------------------------------------------------------------------------------

/// Lines of a child's stderr, read on a thread.
struct Lines {
    rx: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Lines {
    fn of(child: &mut Child) -> Lines {
        let err = child.stderr.take().expect("stderr");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Lines {
            rx,
            seen: Vec::new(),
        }
    }

    /// Blocks until a line containing `needle`; panics, with the output, if stderr ends first
    /// or nothing comes for two minutes (a guard so a regression fails instead of hanging; the
    /// wait itself is on the line).
    fn wait_for(&mut self, needle: &str) -> String {
        loop {
            match self.rx.recv_timeout(std::time::Duration::from_secs(120)) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(e) => panic!("no `{needle}` on stderr ({e}):\n{:#?}", self.seen),
            }
        }
    }

    /// Everything until stderr closes.
    fn rest(&mut self) -> Vec<String> {
        let rest: Vec<String> = self.rx.iter().collect();
        self.seen.extend(rest.iter().cloned());
        rest
    }
}

/// A published baseline, then `serve` with a manual full run paused after its first staged
/// batch. Returns the child, its stderr, the run id and the index before the run.
fn serve_with_a_paused_run(inst: &Install) -> (Child, Lines, i64, Vec<String>) {
    let operator = add_user(inst, "operator", "GGD-AMS");
    let out = inst.mp(&["sync"]);
    assert!(
        out.status.success(),
        "baseline sync: {}",
        common::stderr(&out)
    );
    let before = common::index_snapshot(&inst.db());
    assert!(!before.is_empty(), "the baseline published nothing");

    let mut child = inst
        .command(&["serve", "--listen", "127.0.0.1:0", "--no-scheduler"])
        .env("MATCHPOINT_LOG", "info")
        .env("MATCHPOINT_PAUSE_AT", "stage:1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn matchpoint serve");
    let mut out = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let first = out.next().expect("a line").expect("stdout line");
    let addr = first
        .split("http://")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .expect("address")
        .to_owned();
    // Keep draining stdout so the child never blocks on it.
    std::thread::spawn(move || for _ in out.map_while(Result::ok) {});
    let mut err = Lines::of(&mut child);
    let started = reqwest::blocking::Client::new()
        .post(format!("http://{addr}/api/v1/sync/runs"))
        .bearer_auth(&operator)
        .header("content-type", "application/json")
        .body(serde_json::json!({ "source": "okc-2", "full": true }).to_string())
        .send()
        .expect("POST /api/v1/sync/runs");
    assert_eq!(started.status().as_u16(), 202);
    let started: serde_json::Value =
        serde_json::from_str(&started.text().expect("202 body")).expect("202 json");
    let run_id = started["run_id"].as_i64().expect("run id");
    err.wait_for("paused at stage:1");

    let (status, leases) = run_and_leases(inst, run_id);
    assert_eq!(status.0, "running");
    assert_eq!(leases, 1, "the run holds the source lease");
    (child, err, run_id, before)
}

/// `(status, error)` of the run, and the number of source leases held.
fn run_and_leases(inst: &Install, run_id: i64) -> ((String, String), i64) {
    let conn = rusqlite::Connection::open(inst.db()).expect("open db");
    let run = conn
        .query_row(
            "SELECT status, COALESCE(error, '') FROM runs WHERE id = ?1",
            [run_id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .expect("the run row");
    let leases = conn
        .query_row("SELECT count(*) FROM source_leases", [], |r| r.get(0))
        .expect("count leases");
    (run, leases)
}

fn sigterm(child: &Child) {
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(kill.success());
}

#[test]
fn sigterm_cancels_an_api_started_run_which_fails_cleanly_and_releases_its_lease() {
    let inst = Install::new(150, 7, 0.02);
    let (mut child, mut err, run_id, before) = serve_with_a_paused_run(&inst);
    sigterm(&child);
    // Logged after the cancel flags are set: from here the run can only stop.
    err.wait_for("Sync runs in flight are cancelled");
    drop(child.stdin.take()); // releases the pause
    let rest = err.rest();
    let exit = child.wait().expect("wait");
    assert!(exit.success(), "{:#?}", err.seen);
    assert!(
        rest.iter().any(|l| l.contains("Sync run did not publish.")),
        "{rest:#?}"
    );

    let ((status, error), leases) = run_and_leases(&inst, run_id);
    assert_eq!(status, "failed", "{error}");
    assert!(error.contains("cancelled"), "{error}");
    assert!(error.contains("nothing was published"), "{error}");
    assert_eq!(leases, 0, "the lease is released, not left to expire");
    assert_eq!(
        common::index_snapshot(&inst.db()),
        before,
        "the index stays at its last complete publication"
    );
}

#[test]
fn a_run_that_outlives_the_grace_period_is_recorded_failed_and_its_lease_released() {
    let inst = Install::new(150, 7, 0.02);
    let mut config = std::fs::OpenOptions::new()
        .append(true)
        .open(inst.path("matchpoint.toml"))
        .expect("open config");
    writeln!(config, "\n[server]\nshutdown_grace_secs = 1").expect("append config");
    drop(config);
    let (mut child, mut err, run_id, before) = serve_with_a_paused_run(&inst);
    sigterm(&child);
    // The run stays paused: serve gives up on it after the grace period, records it and
    // releases its lease, then says so.
    err.wait_for("did not stop within 1 s");
    let ((status, error), leases) = run_and_leases(&inst, run_id);
    assert_eq!(status, "failed", "{error}");
    assert!(error.contains("grace period"), "{error}");
    assert_eq!(leases, 0);
    assert_eq!(common::index_snapshot(&inst.db()), before);
    drop(child.stdin.take());
    err.rest();
    assert!(child.wait().expect("wait").success(), "{:#?}", err.seen);
    // The aborted task published nothing after all.
    assert_eq!(common::index_snapshot(&inst.db()), before);
    assert_eq!(run_and_leases(&inst, run_id).0.0, "failed");
}
