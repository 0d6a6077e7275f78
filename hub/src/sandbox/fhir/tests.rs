//! The FHIR connector against the simulated okc-5 server on loopback: real paging over
//! `next` links, incremental runs that fetch only what changed (checked with the server's
//! counters), OperationOutcome and transient answers, malformed records.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use matchpoint_connectors::RecordResult;
use matchpoint_connectors::fhir::{FhirConnector, FhirSettings};
use matchpoint_connectors::http::{Auth, HttpClient, Secret};
use matchpoint_connectors::paged::{FetchError, PageRequest, PagedConnector};
use matchpoint_mapping::{Mapper, MappingSpec};
use matchpoint_schemas::{KeyPurpose, MasterKey, Registry, RelationKind};

use super::{AUTH_HINT, MAX_COUNT, PATH, TOKEN, router};
use crate::generate::ORGANISATIONS_TOML;
use crate::generate::feed::Feed;
use crate::generate::fhir::ORGANISATION_SYSTEM;
use crate::sandbox::faults::FaultSpec;
use crate::sandbox::{Upstream, UpstreamDef, app};

struct Server {
    base: String,
    root: String,
    up: Arc<Upstream>,
    _rt: tokio::runtime::Runtime,
}

fn start(persons: u64, seed: u64) -> Server {
    let feed = Feed::build("okc-5", "OKC5-", persons, seed, 0.6).expect("feed");
    let up = Arc::new(Upstream::new("okc-5", seed, feed, FaultSpec::default()));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let def = UpstreamDef {
        name: "okc-5",
        kind: "fhir",
        port_offset: 5,
        prefix: "OKC5-",
        share: 0.6,
        path: PATH,
        auth_hint: AUTH_HINT,
        router,
    };
    let app = app(&def, up.clone());
    rt.spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let root = format!("http://{addr}");
    Server {
        base: format!("{root}{PATH}"),
        root,
        up,
        _rt: rt,
    }
}

impl Server {
    fn post(&self, path: &str, body: &str) {
        let resp = reqwest::blocking::Client::new()
            .post(format!("{}{path}", self.root))
            .body(body.to_owned())
            .send()
            .expect("control request");
        assert!(resp.status().is_success(), "{path}: {}", resp.status());
    }

    fn connector(&self, page_size: u32, token: Option<&str>) -> FhirConnector {
        let auth = token.map_or(Auth::None, |t| Auth::Bearer(Secret::new(t)));
        let client =
            HttpClient::new(&self.base, Duration::from_secs(10), auth, 8 << 20).expect("client");
        FhirConnector::new(
            client,
            FhirSettings {
                base_url: self.base.clone(),
                page_size,
                max_page_bytes: 8 << 20,
                organization_system: Some(ORGANISATION_SYSTEM.into()),
            },
        )
        .expect("connector")
    }
}

/// What one run delivered.
struct Run {
    records: Vec<RecordResult>,
    pages: u64,
    cursor: Option<String>,
    total: Option<u64>,
}

/// Pages through one run the way the runner does: first page, then every `next` link.
fn run(c: &mut FhirConnector, since: Option<&str>) -> Result<Run, FetchError> {
    let mut out = Run {
        records: Vec::new(),
        pages: 0,
        cursor: None,
        total: None,
    };
    let mut req = PageRequest::First {
        since: since.map(str::to_owned),
    };
    loop {
        let page = c.fetch(&req)?;
        out.pages += 1;
        assert!(out.pages < 100_000, "paging does not end");
        out.records.extend(page.records);
        if page.cursor.is_some() {
            out.cursor = page.cursor;
        }
        out.total = page.announced_total.or(out.total);
        match page.next {
            Some(n) => req = PageRequest::Next(n),
            None => return Ok(out),
        }
    }
}

fn ids(records: &[RecordResult]) -> BTreeSet<String> {
    records
        .iter()
        .map(|r| match r {
            Ok(r) => r.record_id.clone().unwrap_or_default(),
            Err(e) => e.record_id.clone().unwrap_or_default(),
        })
        .collect()
}

fn mapper() -> Mapper {
    let spec = MappingSpec::parse(
        include_str!("../../../../deploy/mappings/okc-5.toml"),
        "okc-5.toml",
    )
    .expect("okc-5 mapping");
    let registry = Registry::parse(ORGANISATIONS_TOML, "organisations.toml").expect("registry");
    let key = MasterKey::from_secret("k1", &[7u8; 32]).expect("key");
    Mapper::new(
        "okc-5",
        spec,
        Arc::new(registry),
        key.pseudonymiser(KeyPurpose::Index),
    )
}

#[test]
fn a_full_run_crosses_100_pages_and_an_incremental_run_fetches_only_the_changes() {
    let server = start(160, 11);
    let expected: BTreeSet<String> = server
        .up
        .feed
        .changed_since(0, None)
        .map(|r| r.id)
        .collect();
    assert!(
        expected.len() >= 100,
        "population too small: {}",
        expected.len()
    );
    let page_size = u32::try_from(expected.len() / 100).expect("small").max(1);
    let mut c = server.connector(page_size, Some(TOKEN));

    // Full run.
    let full = run(&mut c, None).expect("full run");
    assert!(full.pages >= 100, "only {} pages", full.pages);
    assert_eq!(ids(&full.records), expected);
    assert_eq!(full.records.len(), expected.len(), "an episode came twice");
    assert_eq!(full.total, Some(expected.len() as u64));
    assert_eq!(
        server.up.records.load(Ordering::Relaxed),
        expected.len() as u64
    );
    assert_eq!(server.up.pages.load(Ordering::Relaxed), full.pages);
    assert_eq!(
        full.cursor.as_deref(),
        Some(server.up.feed.timestamp(0).as_str())
    );

    // Every episode maps, with household relations.
    let m = mapper();
    let mut parents = 0;
    for r in &full.records {
        let raw = r.as_ref().expect("no quarantine without faults");
        let inv = m
            .map(raw)
            .unwrap_or_else(|e| panic!("{:?} rejected: {e:?}", raw.record_id));
        parents += inv
            .relations
            .iter()
            .filter(|rel| rel.kind == RelationKind::Parent)
            .count();
    }
    assert!(parents > 0, "no child with a parent relation");

    // The data changes; an incremental run gets exactly the changed episodes.
    server.post("/_sandbox/advance", "");
    server.post("/_sandbox/reset-stats", "");
    let changed: BTreeSet<String> = server
        .up
        .feed
        .changed_since(1, Some(0))
        .map(|r| r.id)
        .collect();
    assert!(!changed.is_empty());
    let inc = run(&mut c, full.cursor.as_deref()).expect("incremental run");
    assert_eq!(ids(&inc.records), changed);
    assert_eq!(
        server.up.records.load(Ordering::Relaxed),
        changed.len() as u64,
        "the server served more than the changes"
    );
    assert_eq!(
        inc.cursor.as_deref(),
        Some(server.up.feed.timestamp(1).as_str())
    );
    for r in &inc.records {
        let raw = r.as_ref().expect("record");
        assert!(raw.field("meta.lastUpdated") > full.cursor.as_deref());
        m.map(raw).expect("changed episode maps");
    }

    // Nothing changed since: a quiet night, one empty page, the cursor stays.
    server.post("/_sandbox/reset-stats", "");
    let quiet = run(&mut c, inc.cursor.as_deref()).expect("quiet run");
    assert!(quiet.records.is_empty());
    assert_eq!(quiet.pages, 1);
    assert_eq!(quiet.cursor, None);
    assert_eq!(quiet.total, Some(0));
    assert_eq!(server.up.records.load(Ordering::Relaxed), 0);
}

#[test]
fn an_operation_outcome_fails_the_run_with_its_codes() {
    let server = start(20, 3);
    let too_many = u32::try_from(MAX_COUNT + 1).expect("small");
    let mut c = server.connector(too_many, Some(TOKEN));
    let err = run(&mut c, None).err().expect("the server refuses _count");
    let FetchError::Fatal(e) = &err else {
        panic!("a refused search is not worth retrying: {err:?}");
    };
    let msg = e.to_string();
    assert!(msg.contains("HTTP 400"), "{msg}");
    assert!(msg.contains("OperationOutcome error `invalid`"), "{msg}");
    assert!(msg.contains("MSG_PARAM_INVALID"), "{msg}");
    // Diagnostics text is never copied into messages.
    assert!(!msg.contains("_count must be"), "{msg}");
}

#[test]
fn a_missing_token_is_fatal_with_a_hint() {
    let server = start(20, 3);
    let mut c = server.connector(10, None);
    let err = run(&mut c, None).err().expect("401");
    let msg = err.to_string();
    assert!(matches!(err, FetchError::Fatal(_)), "{msg}");
    assert!(msg.contains("401") && msg.contains("`login`"), "{msg}");
    assert!(msg.contains("[source.http]"), "{msg}");
}

#[test]
fn busy_and_failing_servers_are_transient_with_their_retry_after() {
    let server = start(20, 3);
    let mut c = server.connector(10, Some(TOKEN));
    for (spec, secs) in [
        ("status=429:1:retry-after=3", 3),
        ("status=503:1:retry-after=1", 1),
    ] {
        server.post("/_sandbox/faults", spec);
        let err = run(&mut c, None).err().expect("fault");
        match err {
            FetchError::Transient { retry_after, .. } => {
                assert_eq!(retry_after, Some(Duration::from_secs(secs)), "{spec}");
            }
            other => panic!("{spec}: {other:?}"),
        }
    }
}

#[test]
fn malformed_episodes_are_quarantined_and_the_rest_delivered() {
    let server = start(60, 5);
    server.post("/_sandbox/faults", "malformed=0.3");
    let mut c = server.connector(25, Some(TOKEN));
    let out = run(&mut c, None).expect("run");
    let bad: Vec<_> = out
        .records
        .iter()
        .filter_map(|r| r.as_ref().err())
        .collect();
    let good = out.records.iter().filter(|r| r.is_ok()).count();
    assert!(!bad.is_empty() && good > 0, "bad {} good {good}", bad.len());
    for e in bad {
        assert_eq!(e.field.as_deref(), Some("patient"));
        assert!(
            e.record_id
                .as_deref()
                .is_some_and(|id| id.starts_with("OKC5-"))
        );
        assert!(
            server
                .up
                .malformed(e.record_id.as_deref().unwrap_or_default())
        );
    }
    assert_eq!(out.records.len() as u64, out.total.unwrap_or(0));
}

#[test]
fn unknown_search_parameters_are_refused_like_a_strict_server() {
    let server = start(10, 3);
    let resp = reqwest::blocking::Client::new()
        .get(format!("{}/EpisodeOfCare?name=Kuipers", server.base))
        .bearer_auth(TOKEN)
        .send()
        .expect("request");
    assert_eq!(resp.status().as_u16(), 400);
    let body: serde_json::Value = serde_json::from_str(&resp.text().expect("body")).expect("json");
    assert_eq!(body["resourceType"], "OperationOutcome");
    assert_eq!(body["issue"][0]["code"], "not-supported");
}

#[test]
fn through_the_shared_runner_transient_faults_are_retried_and_the_total_checked() {
    use matchpoint_connectors::RecordStream;
    use matchpoint_connectors::runner::{PagedRunner, RetryPolicy, RunnerConfig};

    let server = start(80, 9);
    let expected: BTreeSet<String> = server
        .up
        .feed
        .changed_since(0, None)
        .map(|r| r.id)
        .collect();
    server.post("/_sandbox/faults", "status=503:0.2");
    let config = RunnerConfig {
        retry: RetryPolicy {
            max_attempts: 20,
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(4),
            max_retry_after: Duration::from_secs(1),
        },
        jitter_seed: Some(1),
        ..RunnerConfig::default()
    };
    let mut runner = PagedRunner::new(server.connector(7, Some(TOKEN)), config);
    let mut got = Vec::new();
    while let Some(r) = runner.next_record().expect("the run completes") {
        got.push(r);
    }
    assert_eq!(ids(&got), expected);
    assert_eq!(got.len(), expected.len());
    assert!(
        runner.stats().retries > 0,
        "no fault was met: {:?}",
        runner.stats()
    );
    assert_eq!(
        runner.cursor().as_deref(),
        Some(server.up.feed.timestamp(0).as_str())
    );
}
