//! End-to-end compliance suite of the paged connector kinds, against the real `matchpoint`
//! binary and the real simulated upstreams of `matchpoint sandbox` on loopback.
//!
//! Every kind runs the same checks ([`compliance_suite!`]): records map to the canonical
//! record (golden file per format); paging crosses ≥ 100 pages and an incremental re-run
//! fetches only what changed (the upstream's counters); a quiet night is quiet; transient
//! faults are retried honouring `Retry-After` (the upstream's request log shows the spacing);
//! exhausted retries fail the run while other sources still publish and the index stays as
//! it was; a malformed record goes to quarantine; a malformed page and a truncated body fail
//! the run; an empty full delivery is held by the shrink guard; Ctrl-C stops a waiting run
//! quickly without publishing; an interrupted incremental run resumes from the committed
//! cursor.
//!
//! Adding a kind: register its upstream in `hub/src/sandbox/mod.rs` (`UPSTREAMS`), write a
//! [`KindUnderTest`] constant below and one `compliance_suite!(module_name, CONSTANT);` line;
//! golden files are created with `MATCHPOINT_UPDATE_GOLDEN=1` and must then be reviewed.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Install, bin, stderr};

/// A connector kind under test.
pub struct KindUnderTest {
    /// Source name (as the sandbox serves it).
    pub source: &'static str,
    /// Connector kind in the configuration.
    pub kind: &'static str,
    /// Mapping file, relative to the repository root.
    pub mapping: &'static str,
    /// Extra `[source.http]` lines (credentials by env var).
    pub http: &'static str,
    /// Environment variables a sync needs (the secret the sandbox accepts).
    pub env: &'static [(&'static str, &'static str)],
    /// Golden file, relative to the repository root.
    pub golden: &'static str,
    /// Words the error of a malformed page mentions.
    pub malformed_page_error: &'static str,
}

/// Kind `rest_json` (okc-1).
pub const REST_JSON: KindUnderTest = KindUnderTest {
    source: "okc-1",
    kind: "rest_json",
    mapping: "deploy/mappings/okc-1.toml",
    http: "auth = \"bearer\"\ntoken_env = \"MATCHPOINT_TEST_OKC1_TOKEN\"\n",
    env: &[("MATCHPOINT_TEST_OKC1_TOKEN", "sandbox-okc-1")],
    golden: "tests/golden/okc-1.golden",
    malformed_page_error: "invalid JSON",
};

/// Kind `fhir` (okc-5).
pub const FHIR: KindUnderTest = KindUnderTest {
    source: "okc-5",
    kind: "fhir",
    mapping: "deploy/mappings/okc-5.toml",
    http: "auth = \"bearer\"\ntoken_env = \"MATCHPOINT_TEST_OKC5_TOKEN\"\n[source.fhir]\n\
           organization_system = \"https://matchpoint.example/fhir/NamingSystem/organisation\"\n",
    env: &[("MATCHPOINT_TEST_OKC5_TOKEN", "sandbox-okc-5")],
    golden: "tests/golden/okc-5.golden",
    malformed_page_error: "invalid JSON",
};

/// Kind `soap` (okc-6).
pub const SOAP: KindUnderTest = KindUnderTest {
    source: "okc-6",
    kind: "soap",
    mapping: "deploy/mappings/okc-6.toml",
    http: "auth = \"basic\"\nusername = \"okc6\"\npassword_env = \"MATCHPOINT_TEST_OKC6_PASSWORD\"\n",
    env: &[("MATCHPOINT_TEST_OKC6_PASSWORD", "sandbox-okc-6")],
    golden: "tests/golden/okc-6.golden",
    malformed_page_error: "malformed delivery",
};

/// A running `matchpoint sandbox`; killed when dropped.
struct Sandbox {
    child: Child,
    upstreams: Vec<(String, String, String)>,
    http: reqwest::blocking::Client,
}

impl Sandbox {
    fn start(persons: u64, seed: u64) -> Sandbox {
        let mut child = Command::new(bin())
            .args([
                "sandbox",
                "--persons",
                &persons.to_string(),
                "--seed",
                &seed.to_string(),
                "--listen-base",
                "0",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start sandbox");
        let out = child.stdout.take().expect("stdout");
        let mut upstreams = Vec::new();
        for line in BufReader::new(out).lines() {
            let line = line.expect("sandbox output");
            if line.starts_with("Sandbox ready") {
                break;
            }
            let mut words = line.split_whitespace();
            let (Some(name), Some(kind), Some(url)) = (words.next(), words.next(), words.next())
            else {
                continue;
            };
            if let Some(control) = line.split("control: ").nth(1) {
                let root = control.split("/_sandbox/").next().unwrap_or("").to_owned();
                upstreams.push((name.to_owned(), url.to_owned(), root));
            } else {
                let _ = kind;
            }
        }
        assert!(!upstreams.is_empty(), "the sandbox announced no upstream");
        Sandbox {
            child,
            upstreams,
            http: reqwest::blocking::Client::new(),
        }
    }

    fn upstream(&self, name: &str) -> (&str, &str) {
        self.upstreams
            .iter()
            .find(|u| u.0 == name)
            .map(|u| (u.1.as_str(), u.2.as_str()))
            .unwrap_or_else(|| panic!("the sandbox serves no {name}"))
    }

    fn control(&self, name: &str, what: &str, body: &str) -> serde_json::Value {
        let (_, root) = self.upstream(name);
        let url = format!("{root}/_sandbox/{what}");
        let resp = if what == "stats" {
            self.http.get(&url).send()
        } else {
            self.http.post(&url).body(body.to_owned()).send()
        }
        .expect("control request");
        assert!(resp.status().is_success(), "{what}: {}", resp.status());
        let text = resp.text().expect("body");
        serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text))
    }

    fn stats(&self, name: &str) -> serde_json::Value {
        self.control(name, "stats", "")
    }

    fn faults(&self, name: &str, spec: &str) {
        self.control(name, "faults", spec);
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Paging settings for tests: small pages, fast retries.
struct Paging {
    page_size: u32,
    max_attempts: u32,
    base_delay_ms: u64,
    max_retry_after_ms: u64,
}

impl Default for Paging {
    fn default() -> Self {
        Paging {
            page_size: 50,
            max_attempts: 4,
            base_delay_ms: 10,
            max_retry_after_ms: 5000,
        }
    }
}

/// An installation with the okc-2 XML source (generated) and the kind under test.
fn install(k: &KindUnderTest, sb: &Sandbox, mode: &str, paging: &Paging) -> Install {
    let inst = Install::new(30, 4, 0.0);
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mapping_name = Path::new(k.mapping)
        .file_name()
        .expect("mapping name")
        .to_string_lossy()
        .into_owned();
    std::fs::copy(
        root.join(k.mapping),
        inst.path(&format!("mappings/{mapping_name}")),
    )
    .expect("copy mapping");
    let (url, _) = sb.upstream(k.source);
    let section = format!(
        "\n[[source]]\nname = \"{name}\"\nkind = \"{kind}\"\nlocation = \"{url}\"\nmode = \"{mode}\"\n\
         schedule = \"0 0 * * * *\"\nmapping = \"mappings/{mapping_name}\"\n\
         [source.paging]\npage_size = {ps}\nmax_attempts = {ma}\nbase_delay_ms = {bd}\nmax_delay_ms = 50\n\
         max_retry_after_ms = {mra}\n[source.http]\n{http}",
        name = k.source,
        kind = k.kind,
        ps = paging.page_size,
        ma = paging.max_attempts,
        bd = paging.base_delay_ms,
        mra = paging.max_retry_after_ms,
        http = k.http,
    );
    let cfg = inst.path("matchpoint.toml");
    let mut text = std::fs::read_to_string(&cfg).expect("config");
    text.push_str(&section);
    std::fs::write(&cfg, text).expect("write config");
    inst
}

fn command(inst: &Install, k: &KindUnderTest, args: &[&str]) -> Command {
    let mut c = inst.command(args);
    for (name, value) in k.env {
        c.env(name, value);
    }
    c
}

/// Syncs `sources` (all when empty) and returns the run records by source.
fn sync(inst: &Install, k: &KindUnderTest, sources: &[&str]) -> Vec<serde_json::Value> {
    let mut args = vec!["sync", "--json"];
    for s in sources {
        args.extend(["--source", s]);
    }
    let out = command(inst, k, &args).output().expect("run sync");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("sync --json output: {e}\n{}", stderr(&out)));
    v.as_array().expect("array").clone()
}

fn sync_one(inst: &Install, k: &KindUnderTest) -> serde_json::Value {
    sync(inst, k, &[k.source]).remove(0)
}

fn count(v: &serde_json::Value, key: &str) -> u64 {
    v["counts"][key]
        .as_u64()
        .unwrap_or_else(|| panic!("no counts.{key} in {v}"))
}

// ---- The checks -------------------------------------------------------------------------

/// Records map to the canonical record: the published rows of a small population equal the
/// reviewed golden file.
pub fn golden(k: &KindUnderTest) {
    let sb = Sandbox::start(25, 11);
    let inst = install(k, &sb, "full", &Paging::default());
    let out = command(&inst, k, &["sync", "--json", "--source", k.source])
        .output()
        .expect("sync");
    // Debug logs and the summary name no BSN (nor any other nine-digit number).
    let mut printed = out.stdout.clone();
    printed.extend_from_slice(&out.stderr);
    assert_eq!(common::nine_digit_runs(&printed), Vec::<String>::new());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let run = v[0].clone();
    assert_eq!(run["status"], "succeeded", "{run}");
    let got = inst.published_rows(k.source).join("\n") + "\n";
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(k.golden);
    if std::env::var_os("MATCHPOINT_UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(&path, &got).expect("write golden");
    }
    let want = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "golden file {}: {e} (create it with MATCHPOINT_UPDATE_GOLDEN=1 and review it)",
            path.display()
        )
    });
    assert_eq!(got, want, "published rows differ from {}", k.golden);
    assert_eq!(count(&run, "read"), got.lines().count() as u64);
}

/// Paging crosses ≥ 100 pages; an incremental re-run fetches only the changed records; a
/// night without changes is quiet.
pub fn paging_and_incremental(k: &KindUnderTest) {
    let sb = Sandbox::start(300, 12);
    let paging = Paging {
        page_size: 3,
        ..Paging::default()
    };
    let inst = install(k, &sb, "incremental", &paging);
    let first = sync_one(&inst, k);
    assert_eq!(first["status"], "succeeded", "{first}");
    let s1 = sb.stats(k.source);
    assert!(s1["pages"].as_u64().unwrap_or(0) >= 100, "{s1}");
    assert_eq!(count(&first, "read"), s1["records"].as_u64().unwrap_or(0));
    assert_eq!(count(&first, "inserted"), count(&first, "read"));
    let published = inst.published_rows(k.source).len() as u64;
    assert_eq!(published, count(&first, "read"));
    let c1 = inst.cursor(k.source).expect("a cursor after the first run");

    sb.control(k.source, "reset-stats", "");
    sb.control(k.source, "advance", "");
    let second = sync_one(&inst, k);
    assert_eq!(second["status"], "succeeded", "{second}");
    let s2 = sb.stats(k.source);
    let served = s2["records"].as_u64().unwrap_or(0);
    assert!(served > 0, "the new generation changed something: {s2}");
    assert!(
        served * 5 < count(&first, "read"),
        "an incremental run fetches only changes: {served} of {}",
        count(&first, "read")
    );
    assert_eq!(count(&second, "read"), served);
    assert_eq!(
        count(&second, "inserted") + count(&second, "updated") + count(&second, "unchanged"),
        served,
        "{second}"
    );
    assert!(count(&second, "updated") > 0, "{second}");
    assert_eq!(
        count(&second, "ended"),
        0,
        "incremental runs end nothing by absence"
    );
    let c2 = inst.cursor(k.source).expect("cursor");
    assert!(c2 > c1, "the cursor moves on: {c1} → {c2}");

    sb.control(k.source, "reset-stats", "");
    let quiet = sync_one(&inst, k);
    assert_eq!(quiet["status"], "succeeded", "{quiet}");
    assert_eq!(count(&quiet, "read"), 0);
    assert_eq!(sb.stats(k.source)["records"], 0);
    assert_eq!(inst.cursor(k.source), Some(c2));
}

/// Transient faults are retried; every retry after a `Retry-After` waits at least that long.
pub fn retries_honour_retry_after(k: &KindUnderTest) {
    let sb = Sandbox::start(60, 13);
    sb.faults(k.source, "status=429:0.3:retry-after=1,503:0.2,reset=0.1");
    let paging = Paging {
        page_size: 10,
        max_attempts: 8,
        ..Paging::default()
    };
    let inst = install(k, &sb, "full", &paging);
    let run = sync_one(&inst, k);
    assert_eq!(run["status"], "succeeded", "{run}");
    let stats = sb.stats(k.source);
    let log = stats["log"].as_array().expect("log").clone();
    let mut waits = 0;
    for pair in log.windows(2) {
        if let Some(ra) = pair[0]["retry_after"].as_u64() {
            let gap =
                pair[1]["at_ms"].as_u64().unwrap_or(0) - pair[0]["at_ms"].as_u64().unwrap_or(0);
            assert!(
                gap >= ra * 1000,
                "retried after {gap} ms despite Retry-After: {ra} s"
            );
            waits += 1;
        }
    }
    let faulted = log.iter().filter(|e| e["status"] != 200).count();
    assert!(
        waits > 0 && faulted > waits,
        "faults were injected: {stats}"
    );
    assert_eq!(count(&run, "read"), stats["records"].as_u64().unwrap_or(0));
}

/// Exhausted retries fail the run cleanly: other sources still publish, the index of this
/// source stays as it was.
pub fn exhausted_retries_fail_cleanly(k: &KindUnderTest) {
    let sb = Sandbox::start(40, 14);
    let inst = install(k, &sb, "full", &Paging::default());
    let ok = sync(&inst, k, &[]);
    assert!(ok.iter().all(|r| r["status"] == "succeeded"), "{ok:?}");
    let before = inst.published_rows(k.source);
    assert!(!before.is_empty());
    sb.control(k.source, "reset-stats", "");
    sb.faults(k.source, "status=503:1");
    sb.control(k.source, "advance", "");
    let runs = sync(&inst, k, &[]);
    let mine = runs.iter().find(|r| r["source"] == k.source).expect("run");
    let other = runs
        .iter()
        .find(|r| r["source"] == "okc-2")
        .expect("okc-2 run");
    assert_eq!(mine["status"], "failed", "{mine}");
    let err = mine["error"].as_str().unwrap_or("");
    assert!(
        err.contains("gave up after 4 attempts") && err.contains("503"),
        "{err}"
    );
    assert_eq!(other["status"], "succeeded", "{other}");
    assert_eq!(inst.published_rows(k.source), before);
    assert_eq!(sb.stats(k.source)["requests"], 4);
}

/// A malformed record goes to quarantine with its reason; the rest publishes.
pub fn malformed_record_is_quarantined(k: &KindUnderTest) {
    let sb = Sandbox::start(80, 15);
    sb.faults(k.source, "malformed=0.1");
    let inst = install(k, &sb, "full", &Paging::default());
    let run = sync_one(&inst, k);
    assert_eq!(run["status"], "succeeded", "{run}");
    let rejected = count(&run, "rejected");
    assert!(rejected > 0, "{run}");
    assert_eq!(count(&run, "inserted") + rejected, count(&run, "read"));
    let out = command(&inst, k, &["quarantine", "--json", "--source", k.source])
        .output()
        .expect("quarantine");
    let q: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let text = q.to_string();
    assert!(text.contains("malformed"), "{text}");
}

fn failed_delivery(k: &KindUnderTest, spec: &str, needle: &str) {
    let sb = Sandbox::start(40, 16);
    let inst = install(k, &sb, "full", &Paging::default());
    let ok = sync_one(&inst, k);
    assert_eq!(ok["status"], "succeeded", "{ok}");
    let before = inst.published_rows(k.source);
    sb.faults(k.source, spec);
    sb.control(k.source, "advance", "");
    let run = sync_one(&inst, k);
    assert_eq!(run["status"], "failed", "{run}");
    let err = run["error"].as_str().unwrap_or("");
    assert!(err.contains(needle), "`{needle}` not in: {err}");
    assert!(err.contains("nothing was published"), "{err}");
    assert_eq!(inst.published_rows(k.source), before);
}

/// A malformed page fails the run; the published index is untouched.
pub fn malformed_page_fails(k: &KindUnderTest) {
    failed_delivery(k, "garbage=1", k.malformed_page_error);
}

/// A truncated body fails the run; the published index is untouched.
pub fn truncated_body_fails(k: &KindUnderTest) {
    failed_delivery(k, "truncate=1", "truncated");
}

/// An empty full delivery is held by the shrink guard.
pub fn empty_full_delivery_is_held(k: &KindUnderTest) {
    let sb = Sandbox::start(40, 17);
    let inst = install(k, &sb, "full", &Paging::default());
    let ok = sync_one(&inst, k);
    assert_eq!(ok["status"], "succeeded", "{ok}");
    let before = inst.published_rows(k.source);
    sb.faults(k.source, "empty=1");
    let run = sync_one(&inst, k);
    assert_eq!(run["status"], "held", "{run}");
    assert_eq!(inst.published_rows(k.source), before);
}

/// Ctrl-C during a long `Retry-After` wait stops the run within seconds, publishing nothing.
pub fn cancellation_stops_quickly(k: &KindUnderTest) {
    cancellation_under(k, "status=503:1:retry-after=300");
}

/// Ctrl-C while a slow server has not answered yet stops the run within seconds too.
pub fn cancellation_during_a_slow_answer(k: &KindUnderTest) {
    cancellation_under(k, "latency=300s");
}

fn cancellation_under(k: &KindUnderTest, spec: &str) {
    let sb = Sandbox::start(40, 18);
    let paging = Paging {
        max_retry_after_ms: 600_000,
        ..Paging::default()
    };
    let inst = install(k, &sb, "full", &paging);
    let ok = sync_one(&inst, k);
    assert_eq!(ok["status"], "succeeded", "{ok}");
    let before = inst.published_rows(k.source);
    sb.control(k.source, "reset-stats", "");
    sb.faults(k.source, spec);
    let child = command(&inst, k, &["sync", "--json", "--source", k.source])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sync");
    // Wait until the upstream has the first request (the run now waits 300 s either way).
    let deadline = Instant::now() + Duration::from_secs(60);
    while sb.stats(k.source)["requests"].as_u64().unwrap_or(0) == 0 {
        assert!(
            Instant::now() < deadline,
            "the sync never reached the upstream"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let interrupted = Instant::now();
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill -INT");
    assert!(status.success());
    let out = child.wait_with_output().expect("wait");
    let took = interrupted.elapsed();
    assert!(!out.status.success());
    assert!(
        took < Duration::from_secs(30),
        "stopped {took:?} after Ctrl-C, not within the 300 s wait"
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v[0]["status"], "failed", "{v}");
    assert!(
        v[0]["error"].as_str().unwrap_or("").contains("cancelled"),
        "{v}"
    );
    assert_eq!(inst.published_rows(k.source), before);
    assert_eq!(sb.stats(k.source)["requests"], 1);
}

/// An interrupted incremental run leaves the cursor where the last committed run ended; the
/// next run continues from there and fetches exactly what changed since.
pub fn cursor_resumes_after_an_interrupted_run(k: &KindUnderTest) {
    let sb = Sandbox::start(120, 19);
    let inst = install(k, &sb, "incremental", &Paging::default());
    let first = sync_one(&inst, k);
    assert_eq!(first["status"], "succeeded", "{first}");
    let c1 = inst.cursor(k.source).expect("cursor");
    sb.control(k.source, "advance", "");
    sb.faults(k.source, "truncate=1");
    let broken = sync_one(&inst, k);
    assert_eq!(broken["status"], "failed", "{broken}");
    assert_eq!(inst.cursor(k.source).as_deref(), Some(c1.as_str()));
    sb.faults(k.source, "");
    sb.control(k.source, "reset-stats", "");
    let resumed = sync_one(&inst, k);
    assert_eq!(resumed["status"], "succeeded", "{resumed}");
    let served = sb.stats(k.source)["records"].as_u64().unwrap_or(0);
    assert!(served > 0 && served * 5 < count(&first, "read"), "{served}");
    assert_eq!(count(&resumed, "read"), served);
    assert!(inst.cursor(k.source).expect("cursor") > c1);
}

/// Wrong or missing credentials fail the run with a message naming what to check, never the
/// secret.
pub fn credentials_are_checked(k: &KindUnderTest) {
    let sb = Sandbox::start(20, 20);
    let inst = install(k, &sb, "full", &Paging::default());
    let (var, _) = k.env[0];
    let out = inst
        .command(&["sync", "--json", "--source", k.source])
        .env(var, "wrong-secret-value")
        .output()
        .expect("sync");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let err = v[0]["error"].as_str().unwrap_or("").to_owned();
    assert_eq!(v[0]["status"], "failed", "{v}");
    assert!(
        err.contains("401") && err.contains("credentials refused"),
        "{err}"
    );
    let all = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
    assert!(
        !all.contains("wrong-secret-value"),
        "the secret leaked: {all}"
    );
    assert_eq!(sb.stats(k.source)["requests"], 1, "a 401 is not retried");
    let out = inst
        .command(&["sync", "--json", "--source", k.source])
        .env_remove(var)
        .output()
        .expect("sync");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let err = v[0]["error"].as_str().unwrap_or("");
    assert!(err.contains(var) && err.contains("not set"), "{err}");
}

/// The whole suite for one kind, one test each.
macro_rules! compliance_suite {
    ($module:ident, $kind:expr) => {
        mod $module {
            use super::*;

            #[test]
            fn records_match_the_golden_file() {
                golden(&$kind);
            }
            #[test]
            fn paging_crosses_100_pages_and_incremental_fetches_only_changes() {
                paging_and_incremental(&$kind);
            }
            #[test]
            fn transient_faults_are_retried_honouring_retry_after() {
                retries_honour_retry_after(&$kind);
            }
            #[test]
            fn exhausted_retries_fail_and_other_sources_publish() {
                exhausted_retries_fail_cleanly(&$kind);
            }
            #[test]
            fn a_malformed_record_is_quarantined() {
                malformed_record_is_quarantined(&$kind);
            }
            #[test]
            fn a_malformed_page_fails_the_run() {
                malformed_page_fails(&$kind);
            }
            #[test]
            fn a_truncated_body_fails_the_run() {
                truncated_body_fails(&$kind);
            }
            #[test]
            fn an_empty_full_delivery_is_held() {
                empty_full_delivery_is_held(&$kind);
            }
            #[test]
            fn ctrl_c_stops_a_waiting_run_quickly() {
                cancellation_stops_quickly(&$kind);
            }
            #[test]
            fn ctrl_c_stops_a_run_waiting_for_a_slow_server() {
                cancellation_during_a_slow_answer(&$kind);
            }
            #[test]
            fn the_cursor_resumes_after_an_interrupted_run() {
                cursor_resumes_after_an_interrupted_run(&$kind);
            }
            #[test]
            fn wrong_or_missing_credentials_fail_clearly() {
                credentials_are_checked(&$kind);
            }
        }
    };
}

compliance_suite!(rest_json, REST_JSON);
compliance_suite!(soap, SOAP);
compliance_suite!(fhir, FHIR);

/// One population across kinds: okc-2 (XML export, generated with the sandbox's seed),
/// okc-1 (REST/JSON), okc-5 (FHIR) and okc-6 (SOAP) deliver the same persons, who get one pseudonym each,
/// and household relations link to persons other sources know.
#[test]
fn the_same_person_gets_one_pseudonym_across_kinds() {
    let (persons, seed) = (60, 23);
    let sb = Sandbox::start(persons, seed);
    let inst = Install::new(persons, seed, 0.0);
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut cfg = std::fs::read_to_string(inst.path("matchpoint.toml")).expect("config");
    for k in [&REST_JSON, &SOAP, &FHIR] {
        let name = Path::new(k.mapping).file_name().expect("name");
        std::fs::copy(root.join(k.mapping), inst.path("mappings").join(name)).expect("copy");
        let (url, _) = sb.upstream(k.source);
        cfg.push_str(&format!(
            "\n[[source]]\nname = \"{}\"\nkind = \"{}\"\nlocation = \"{url}\"\nmode = \"full\"\n\
             schedule = \"0 0 * * * *\"\nmapping = \"mappings/{}\"\n[source.http]\n{}",
            k.source,
            k.kind,
            name.to_string_lossy(),
            k.http
        ));
    }
    std::fs::write(inst.path("matchpoint.toml"), cfg).expect("write config");
    let mut c = inst.command(&["sync", "--json"]);
    for (n, v) in REST_JSON.env.iter().chain(SOAP.env).chain(FHIR.env) {
        c.env(n, v);
    }
    let out = c.output().expect("sync");
    assert!(out.status.success(), "{}", stderr(&out));
    let conn = rusqlite::Connection::open(inst.db()).expect("db");
    let in_all: i64 = conn
        .query_row(
            "SELECT count(*) FROM (SELECT person FROM involvements GROUP BY person
               HAVING count(DISTINCT source) = 4)",
            [],
            |r| r.get(0),
        )
        .expect("query");
    assert!(in_all > 0, "some persons are known to all four sources");
    let fhir_linked: i64 = conn
        .query_row(
            "SELECT count(*) FROM relations r WHERE r.source = 'okc-5'
               AND EXISTS (SELECT 1 FROM involvements i WHERE i.person = r.other AND i.source = 'okc-1')",
            [],
            |r| r.get(0),
        )
        .expect("query");
    assert!(
        fhir_linked > 0,
        "okc-5's RelatedPersons point at persons okc-1 delivers"
    );
    let linked: i64 = conn
        .query_row(
            "SELECT count(*) FROM relations r WHERE r.source = 'okc-1'
               AND EXISTS (SELECT 1 FROM involvements i WHERE i.person = r.other AND i.source = 'okc-6')",
            [],
            |r| r.get(0),
        )
        .expect("query");
    assert!(
        linked > 0,
        "okc-1's relations point at persons okc-6 delivers"
    );
}

/// REST/JSON paging also follows `Link: rel="next"` headers (the sandbox sends them when the
/// location asks with `links=header`): the same records arrive.
#[test]
fn rest_json_follows_link_headers() {
    let k = &REST_JSON;
    let sb = Sandbox::start(80, 24);
    let inst = install(k, &sb, "full", &Paging::default());
    let (url, _) = sb.upstream(k.source);
    let cfg = inst.path("matchpoint.toml");
    let text = std::fs::read_to_string(&cfg).expect("config");
    std::fs::write(&cfg, text.replace(url, &format!("{url}?links=header"))).expect("write");
    let run = sync_one(&inst, k);
    assert_eq!(run["status"], "succeeded", "{run}");
    let stats = sb.stats(k.source);
    assert!(stats["pages"].as_u64().unwrap_or(0) > 1, "{stats}");
    assert_eq!(count(&run, "read"), stats["records"].as_u64().unwrap_or(0));
    assert_eq!(count(&run, "inserted"), count(&run, "read"));
}
