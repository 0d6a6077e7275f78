//! End-to-end tests of `matchpoint serve` and `matchpoint users`, driving the real binary over
//! a real socket: durability of the audit entry across SIGKILL, graceful shutdown on SIGTERM,
//! disabled users, and no BSN in the server's (debug) log.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Stdio};

use common::{Install, export_bsns, nine_digit_runs, stderr, stdout};
use serde_json::{Value, json};

/// A running `matchpoint serve` and the thread collecting its stderr.
struct Server {
    child: Child,
    addr: String,
    log: std::thread::JoinHandle<Vec<u8>>,
    out: BufReader<std::process::ChildStdout>,
}

fn start(install: &Install) -> Server {
    let mut child = install
        .command(&["serve", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn serve");
    let mut err = child.stderr.take().expect("stderr");
    let log = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = err.read_to_end(&mut buf);
        buf
    });
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    out.read_line(&mut line).expect("first line");
    // "Matchpoint API listening on http://127.0.0.1:PORT (Ctrl-C stops)"
    let addr = line
        .split("http://")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_owned();
    Server {
        child,
        addr,
        log,
        out,
    }
}

impl Server {
    fn post(&self, token: &str, path: &str, body: Value) -> (u16, String, Value) {
        let resp = reqwest::blocking::Client::new()
            .post(format!("http://{}{path}", self.addr))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .expect("request");
        let status = resp.status().as_u16();
        let id = resp
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let v = resp.json_value();
        (status, id, v)
    }

    fn get(&self, token: &str, path: &str) -> (u16, Value) {
        let resp = reqwest::blocking::Client::new()
            .get(format!("http://{}{path}", self.addr))
            .bearer_auth(token)
            .send()
            .expect("request");
        (resp.status().as_u16(), resp.json_value())
    }

    /// Ends the server; returns its exit status success and its log.
    fn finish(mut self) -> (bool, String, Vec<u8>) {
        let status = self.child.wait().expect("wait");
        let mut rest = String::new();
        let _ = self.out.read_to_string(&mut rest);
        let log = self.log.join().expect("log thread");
        (status.success(), rest, log)
    }
}

trait JsonValue {
    fn json_value(self) -> Value;
}

impl JsonValue for reqwest::blocking::Response {
    fn json_value(self) -> Value {
        let bytes = self.bytes().expect("body");
        serde_json::from_slice(&bytes).unwrap_or(Value::Null)
    }
}

fn add_user(install: &Install, role: &str, org: &str) -> (i64, String) {
    let out = install.mp(&[
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
    assert!(out.status.success(), "users add: {}", stderr(&out));
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    (
        v["id"].as_i64().expect("id"),
        v["token"].as_str().expect("token").to_owned(),
    )
}

#[test]
fn the_audit_entry_of_a_200_survives_sigkill_and_the_server_log_holds_no_bsn() {
    let install = Install::new(150, 11, 0.0);
    let out = install.mp(&["sync"]);
    assert!(out.status.success(), "sync: {}", stderr(&out));
    let (prof_id, prof) = add_user(&install, "professional", "SD-NOORD");
    let (_, officer) = add_user(&install, "privacy_officer", "GGD-AMS");
    let bad = install.mp(&[
        "users",
        "add",
        "--name",
        "x",
        "--role",
        "root",
        "--organisation",
        "GGD-AMS",
    ]);
    assert!(!bad.status.success());
    assert!(stderr(&bad).contains("unknown role"), "{}", stderr(&bad));
    let listed = install.mp(&["users", "list", "--json"]);
    assert!(!stdout(&listed).contains(&prof), "tokens are never listed");

    let mut bsns: Vec<String> = export_bsns(&install.export()).into_iter().collect();
    bsns.sort();
    let bsn = bsns.first().expect("a BSN").clone();

    // A break-the-glass lookup is answered (200) whoever asks; kill the server right after.
    let server = start(&install);
    let (status, request_id, v) = server.post(
        &prof,
        "/api/v1/lookups",
        json!({ "bsn": bsn, "purpose": "safety_assessment",
                "break_glass_reason": { "code": "acute_safety",
                    "justification": "Acute danger reported during a home visit" } }),
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["break_glass"], true);
    let mut server = server;
    server.child.kill().expect("SIGKILL");
    let (_, _, log1) = server.finish();

    // After a restart the entry is there, and the chain verifies.
    let server = start(&install);
    let (status, _, found) = server.post(&officer, "/api/v1/audit/search", json!({ "bsn": bsn }));
    assert_eq!(status, 200, "{found}");
    let entries = found["entries"].as_array().cloned().unwrap_or_default();
    assert!(
        entries
            .iter()
            .any(|e| e["request_id"] == request_id.as_str() && e["outcome"] == "break_glass"),
        "the killed server's 200 left its audit entry: {found}"
    );
    let (status, report) = server.get(&officer, "/api/v1/audit/verify");
    assert_eq!(status, 200);
    assert_eq!(report["ok"], true, "{report}");

    // A disabled user's token is refused from then on (the change is audited).
    let out = install.mp(&["users", "disable", &prof_id.to_string()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let (status, _, _) = server.post(
        &prof,
        "/api/v1/lookups",
        json!({ "bsn": bsn, "purpose": "intake" }),
    );
    assert_eq!(status, 401);
    let (_, _, mgmt) = server.post(
        &officer,
        "/api/v1/audit/search",
        json!({ "action": "user_management" }),
    );
    assert_eq!(
        mgmt["entries"].as_array().map(Vec::len),
        Some(3),
        "two users added, one disabled: {mgmt}"
    );

    // SIGTERM: graceful shutdown, exit code 0.
    let term = std::process::Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .expect("kill -TERM");
    assert!(term.success());
    let (ok, rest, log2) = server.finish();
    assert!(ok, "graceful shutdown exits 0");
    assert!(rest.contains("Stopped."), "{rest}");

    let bsn_set = export_bsns(&install.export());
    for log in [&log1, &log2] {
        assert!(
            String::from_utf8_lossy(log).contains("Request answered."),
            "the debug log was captured"
        );
        let leaked: Vec<String> = nine_digit_runs(log)
            .into_iter()
            .filter(|d| bsn_set.contains(d))
            .collect();
        assert!(
            leaked.is_empty(),
            "{} BSNs reached the server log",
            leaked.len()
        );
    }
}

/// One printed curl line: (url, token, body).
fn parse_curl(line: &str) -> (String, String, Option<String>) {
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .expect("url")
        .to_owned();
    let token = line
        .split("Bearer ")
        .nth(1)
        .and_then(|r| r.split('\'').next())
        .expect("token")
        .to_owned();
    let body = line
        .split(" -d '")
        .nth(1)
        .and_then(|r| r.strip_suffix('\''))
        .map(str::to_owned);
    (url, token, body)
}

#[test]
fn the_demo_serves_and_its_printed_requests_give_granted_refused_and_break_the_glass() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = std::process::Command::new(common::bin())
        .args(["demo", "--persons", "300", "--listen", "127.0.0.1:0"])
        .current_dir(dir.path())
        .env("MATCHPOINT_LOG", "debug")
        .env_remove("MATCHPOINT_KEY_FILE")
        .env_remove("MATCHPOINT_CONFIG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn demo");
    let mut err = child.stderr.take().expect("stderr");
    let log = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = err.read_to_end(&mut buf);
        buf
    });
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let mut printed = String::new();
    let mut curls = Vec::new();
    loop {
        let mut line = String::new();
        if out.read_line(&mut line).expect("read") == 0 {
            panic!("the demo ended before printing its requests:\n{printed}");
        }
        printed.push_str(&line);
        if line.starts_with("curl -s") {
            curls.push(line.trim_end().to_owned());
        }
        if line.starts_with("# The API description") {
            break;
        }
    }
    assert!(curls.len() >= 5, "{printed}");
    let client = reqwest::blocking::Client::new();
    let mut statuses = Vec::new();
    for line in &curls[..3] {
        let (url, token, body) = parse_curl(line);
        let resp = client
            .post(url)
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(body.expect("a body"))
            .send()
            .expect("send");
        statuses.push(resp.status().as_u16());
    }
    assert_eq!(
        statuses,
        [200, 403, 200],
        "granted, refused, break-the-glass"
    );
    for line in &curls[3..5] {
        let (url, token, _) = parse_curl(line);
        let resp = client.get(url).bearer_auth(token).send().expect("send");
        assert_eq!(resp.status().as_u16(), 200, "{line}");
    }
    // Ctrl-C stops it cleanly.
    let int = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill -INT");
    assert!(int.success());
    let status = child.wait().expect("wait");
    let mut rest = String::new();
    let _ = out.read_to_string(&mut rest);
    assert!(status.success(), "{rest}");
    assert!(rest.contains("Stopped."), "{rest}");
    // The generated BSNs may be printed on the terminal, never in the log.
    let log = log.join().expect("log");
    let bsns = export_bsns(&dir.path().join("matchpoint-demo/data/okc-2/export.xml"));
    assert!(
        nine_digit_runs(&log).iter().all(|d| !bsns.contains(d)),
        "no BSN in the demo's log"
    );
}
