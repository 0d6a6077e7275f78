//! `matchpoint demo` end to end: the real binary writes everything under a scratch folder,
//! starts the simulated upstreams in-process and syncs all eight sources once; then a
//! `matchpoint sandbox --dir` started as the demo prints it serves the same data, and a
//! second `sync` in a new process inserts and changes nothing.
//!
//! Readiness is read from the sandbox's output lines (with a deadline), never slept for.

mod common;

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{bin, stderr, stdout};

/// Persons of the demo population: small, but households still known to six sources.
const PERSONS: u64 = 300;
/// The eight sources of the example config.
const SOURCES: &[&str] = &[
    "okc-1", "okc-2", "okc-3", "okc-4", "ris", "okc-5", "okc-6", "wmo",
];

fn matchpoint(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new(bin())
        .args(args)
        .current_dir(dir)
        .env_remove("MATCHPOINT_KEY_FILE")
        .env_remove("MATCHPOINT_CONFIG")
        .env_remove("MATCHPOINT_SUPPLIER_DB_URL")
        .env_remove("MATCHPOINT_PAUSE_AT")
        .output()
        .expect("run matchpoint")
}

/// `runs --json`: the newest run of every source.
fn newest_runs(dir: &Path, config: &str) -> Vec<serde_json::Value> {
    let out = matchpoint(dir, &["runs", "--json", "--config", config]);
    assert!(out.status.success(), "runs --json: {}", stderr(&out));
    let runs: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("runs --json output: {e}\n{}", stdout(&out)));
    let mut seen = HashSet::new();
    runs.into_iter()
        .filter(|r| seen.insert(r["source"].as_str().unwrap_or_default().to_owned()))
        .collect()
}

/// Kills the sandbox child when the test ends, also on a failed assertion.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn demo_syncs_all_eight_sources_and_a_later_sync_with_the_sandbox_changes_nothing() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("demo");
    let dir_s = dir.to_str().expect("utf-8 temp path");
    let persons = PERSONS.to_string();
    let out = matchpoint(
        tmp.path(),
        &[
            "demo",
            "--no-serve",
            "--dir",
            dir_s,
            "--persons",
            &persons,
            "--seed",
            "3",
        ],
    );
    let text = stdout(&out);
    assert!(
        out.status.success(),
        "demo failed:\n{text}\n{}",
        stderr(&out)
    );
    let config = dir.join("matchpoint.toml");
    let config_s = config.to_str().expect("utf-8 config path");

    // All eight sources ran once and succeeded, with records.
    let runs = newest_runs(tmp.path(), config_s);
    let names: HashSet<&str> = runs.iter().filter_map(|r| r["source"].as_str()).collect();
    assert_eq!(
        names,
        SOURCES.iter().copied().collect::<HashSet<_>>(),
        "{runs:?}"
    );
    for r in &runs {
        assert_eq!(r["status"], "succeeded", "{r}");
        assert!(
            r["counts"]["inserted"].as_u64().unwrap_or_default() > 0,
            "{} inserted nothing: {r}",
            r["source"]
        );
    }

    // Secrets are in files only the owner can read, and the config names no secret itself.
    let cfg_text = std::fs::read_to_string(&config).expect("config");
    let settings: Vec<&str> = cfg_text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect();
    for secret in [
        "sandbox-okc-1",
        "sandbox-okc-5",
        "sandbox-okc-6",
        "supplier.db",
    ] {
        assert!(
            !settings.iter().any(|l| l.contains(secret)),
            "{secret} is set in the config"
        );
    }
    #[cfg(unix)]
    for f in [
        "okc-1.token",
        "okc-5.token",
        "okc-6.password",
        "supplier-db.url",
    ] {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join("secrets").join(f))
            .expect("secret file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{f}");
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join("secrets"))
            .expect("secrets folder")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700, "secrets folder");
    }

    // One person is known to at least six sources under one pseudonym, and no source
    // pseudonymised differently: there are no more persons in the index than in the
    // population.
    let db = rusqlite::Connection::open(dir.join("matchpoint.db")).expect("index");
    let most: i64 = db
        .query_row(
            "SELECT MAX(n) FROM (SELECT COUNT(DISTINCT source) AS n FROM involvements
              GROUP BY person)",
            [],
            |r| r.get(0),
        )
        .expect("query");
    assert!(
        most >= 6,
        "the best-known person is known to {most} sources"
    );
    let persons_in_index: i64 = db
        .query_row("SELECT COUNT(DISTINCT person) FROM involvements", [], |r| {
            r.get(0)
        })
        .expect("query");
    assert!(
        persons_in_index as u64 <= PERSONS,
        "{persons_in_index} pseudonyms for {PERSONS} persons"
    );
    drop(db);

    // The demo printed how to serve the HTTP sources for later syncs; do as it says.
    let line = text
        .lines()
        .find(|l| l.contains(" sandbox --dir "))
        .unwrap_or_else(|| panic!("no sandbox command in the demo output:\n{text}"));
    let args: Vec<&str> = line
        .split_whitespace()
        .skip_while(|w| *w != "sandbox")
        .collect();
    assert!(args.contains(&"--listen-base"), "{line}");
    let mut child = KillOnDrop(
        Command::new(bin())
            .args(&args)
            .current_dir(tmp.path())
            .env_remove("MATCHPOINT_SUPPLIER_DB_URL")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start sandbox"),
    );
    let lines = child.0.stdout.take().expect("sandbox stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(lines).lines() {
            let Ok(l) = l else { break };
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) if l.starts_with("Sandbox ready") => break,
            Ok(_) => {}
            Err(e) => panic!("the sandbox did not get ready: {e}"),
        }
    }

    let out = matchpoint(tmp.path(), &["sync", "--json", "--config", config_s]);
    assert!(
        out.status.success(),
        "second sync:\n{}\n{}",
        stdout(&out),
        stderr(&out)
    );
    let runs = newest_runs(tmp.path(), config_s);
    assert_eq!(runs.len(), SOURCES.len(), "{runs:?}");
    for r in &runs {
        assert_eq!(r["status"], "succeeded", "{r}");
        for count in ["inserted", "updated", "ended"] {
            assert_eq!(r["counts"][count], 0, "second sync, {count}: {r}");
        }
    }
}
