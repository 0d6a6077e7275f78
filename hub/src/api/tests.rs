//! API tests: the router called directly (tower `oneshot`) and over a real socket, on a real
//! SQLite store and audit trail (PostgreSQL too when `MATCHPOINT_TEST_POSTGRES_URL` is set).
//!
//! Every call goes through [`Fx::call`], which counts the audit entries the request wrote and
//! checks the rule: exactly one for an authenticated request to an endpoint that touches
//! personal data (or any audited endpoint), none for the rest.

use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use chrono::NaiveDate;
use matchpoint_schemas::bsn::passes_elfproef;
use matchpoint_schemas::{
    Bsn, ContactPerson, Involvement, InvolvementStatus, KeyPurpose, LifeDomain, MasterKey,
    Registry, Relation, RelationKind,
};
use serde_json::{Value, json};
use tower::ServiceExt;

use super::{AppState, ROUTES, router};
use crate::audit::{AuditAction, AuditLog, AuditOutcome};
use crate::config::ServerSettings;
use crate::store::{Completion, RunMode, Store};
use crate::users::{Role, Token};

const POSTGRES_URL_VAR: &str = "MATCHPOINT_TEST_POSTGRES_URL";

// ---------------------------------------------------------------------------------------------
// Captured tracing output: every API test logs into one buffer at debug level.
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut v) = self.0.lock() {
            v.extend_from_slice(buf);
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn captured() -> &'static Captured {
    static CAPTURE: OnceLock<Captured> = OnceLock::new();
    CAPTURE.get_or_init(|| {
        let c = Captured::default();
        let writer = c.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("debug"))
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        let _ = tracing::subscriber::set_global_default(subscriber);
        c
    })
}

/// Every BSN any API test sent (to scan the log for).
fn sent_bsns() -> &'static Mutex<Vec<String>> {
    static SENT: OnceLock<Mutex<Vec<String>>> = OnceLock::new();
    SENT.get_or_init(|| Mutex::new(Vec::new()))
}

// ---------------------------------------------------------------------------------------------
// Fixture
// ---------------------------------------------------------------------------------------------

/// Valid BSNs, distinct per fixture index so tests never share persons.
fn bsns(offset: u32, n: usize) -> Vec<String> {
    (offset..)
        .filter(|&v| passes_elfproef(v))
        .take(n)
        .map(|v| format!("{v:09}"))
        .collect()
}

fn key() -> Arc<MasterKey> {
    Arc::new(MasterKey::from_secret("api-test-k1", &[42u8; 32]).expect("key"))
}

/// The persons of the fixture.
struct People {
    /// Parent: WPI-AMS active (income_work); relation child → `child`.
    parent: String,
    /// Child: OKC-ZUID active; JH-KOERS active and sensitive.
    child: String,
    /// Unrelated: GGZ-AMSTELSTAD active, OKC-OOST active (no coordinator).
    other: String,
    /// Shielded (delivered so by the source): OKC-WEST active.
    shielded: String,
    /// Never indexed.
    unknown: String,
}

struct Fx {
    _dir: tempfile::TempDir,
    url: String,
    state: AppState,
    app: Router,
    tokens: HashMap<&'static str, String>,
    people: People,
}

#[allow(clippy::too_many_arguments)]
fn inv(
    key: &MasterKey,
    bsn: &str,
    record: &str,
    org: &str,
    domain: LifeDomain,
    status: InvolvementStatus,
    coordinator: bool,
    sensitive: bool,
    relations: Vec<Relation>,
) -> Involvement {
    let p = key.pseudonymiser(KeyPurpose::Index);
    Involvement {
        person: p.pseudonymise(&Bsn::parse(bsn).expect("bsn")),
        key_id: p.key_id().as_str().to_owned(),
        organisation_code: org.to_owned(),
        organisation_name: format!("Name of {org}"),
        team: Some("Team Test".into()),
        life_domain: domain,
        goal: Some(format!("goal of {record}")),
        contact: ContactPerson {
            name: format!("Named Professional {record}"),
            role: Some("consulent".into()),
            phone: Some("020-1234567".into()),
            email: Some(format!("{record}@example.org")),
        },
        start_date: NaiveDate::from_ymd_opt(2024, 1, 1).expect("date"),
        end_date: None,
        end_reason: None,
        status,
        coordinator,
        sensitive,
        shielded: record == "R6",
        purge_after: None,
        source: "okc-2".into(),
        source_record_id: record.to_owned(),
        relations,
    }
}

impl Fx {
    async fn sqlite(offset: u32) -> Fx {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}", dir.path().join("index.db").display());
        Fx::with_url(dir, url, offset).await
    }

    async fn with_url(dir: tempfile::TempDir, url: String, offset: u32) -> Fx {
        captured();
        let key = key();
        let store = Store::open(&url).await.expect("store");
        let b = bsns(100_000_000 + offset * 1000, 5);
        let people = People {
            parent: b[0].clone(),
            child: b[1].clone(),
            other: b[2].clone(),
            shielded: b[3].clone(),
            unknown: b[4].clone(),
        };
        sent_bsns().lock().expect("lock").extend(b.iter().cloned());
        let child_pseudonym = key
            .pseudonymiser(KeyPurpose::Index)
            .pseudonymise(&Bsn::parse(&people.child).expect("bsn"));
        use InvolvementStatus::Active;
        use LifeDomain::*;
        let mut records = vec![
            inv(
                &key,
                &people.parent,
                "R1",
                "WPI-AMS",
                IncomeWork,
                Active,
                false,
                false,
                vec![Relation {
                    kind: RelationKind::Child,
                    other: child_pseudonym,
                }],
            ),
            inv(
                &key,
                &people.child,
                "R2",
                "OKC-ZUID",
                YouthHealth,
                Active,
                false,
                false,
                vec![],
            ),
            inv(
                &key,
                &people.child,
                "R3",
                "JH-KOERS",
                YouthCare,
                Active,
                false,
                true,
                vec![],
            ),
            inv(
                &key,
                &people.other,
                "R4",
                "GGZ-AMSTELSTAD",
                MentalHealth,
                Active,
                false,
                false,
                vec![],
            ),
            inv(
                &key,
                &people.other,
                "R5",
                "OKC-OOST",
                YouthHealth,
                Active,
                false,
                false,
                vec![],
            ),
            inv(
                &key,
                &people.shielded,
                "R6",
                "OKC-WEST",
                YouthHealth,
                Active,
                false,
                false,
                vec![],
            ),
        ];
        // End reasons (as the WMO module delivers them) on R2 and on the sensitive R3.
        for r in records
            .iter_mut()
            .filter(|r| ["R2", "R3"].contains(&r.source_record_id.as_str()))
        {
            r.end_reason = Some(matchpoint_schemas::EndReason {
                code: "38".into(),
                description: format!("Overstap naar andere aanbieder ({})", r.source_record_id),
            });
        }
        // Three rejected records, one per data-quality category.
        let reject = |i: u64, code: &str, field: &str| crate::store::QuarantineEntry {
            record_index: i,
            reason_code: code.to_owned(),
            reason: format!("test {code}"),
            field: Some(field.to_owned()),
            source_record_id: Some(format!("Q{i}")),
            ..Default::default()
        };
        let rejects = vec![
            reject(7, "invalid_bsn", "client/bsn"),
            reject(8, "missing_field", "contactpersoon/naam"),
            reject(9, "unknown_code", "domein"),
        ];
        let n = records.len() as u64 + 3;
        let run = store.begin_run("okc-2", RunMode::Full).await.expect("run");
        store.stage(run, records, rejects).await.expect("stage");
        store
            .complete_run(
                run,
                Completion {
                    read: n,
                    mode: RunMode::Full,
                    cursor: None,
                    guard: None,
                    accept: false,
                },
            )
            .await
            .expect("publish");
        let mut tokens = HashMap::new();
        for (name, role, org) in [
            ("parent_org", Role::Professional, "WPI-AMS"),
            ("child_org", Role::Professional, "OKC-ZUID"),
            ("sensitive_org", Role::Professional, "JH-KOERS"),
            ("outsider", Role::Professional, "SD-NOORD"),
            ("privacy_officer", Role::PrivacyOfficer, "GGD-AMS"),
            ("operator", Role::Operator, "GGD-AMS"),
            ("admin", Role::Admin, "GGD-AMS"),
            ("disabled", Role::Professional, "WPI-AMS"),
        ] {
            let t = Token::generate();
            let id = store
                .add_user(&format!("Test {name}"), role, org, t.hash())
                .await
                .expect("user");
            if name == "disabled" {
                assert!(store.set_user_disabled(id, true).await.expect("disable"));
            }
            tokens.insert(name, t.reveal().to_owned());
        }
        let registry = Registry::load(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/organisations.toml"),
        )
        .expect("registry");
        let audit = AuditLog::open(&url, key.clone()).await.expect("audit");
        let state = AppState::new(
            store,
            audit,
            &key,
            Arc::new(registry),
            ServerSettings::default(),
        );
        Fx {
            _dir: dir,
            url,
            app: router(state.clone()),
            state,
            tokens,
            people,
        }
    }

    async fn audit_size(&self) -> i64 {
        self.state
            .audit()
            .checkpoint()
            .await
            .expect("checkpoint")
            .size
    }

    async fn last_entry(&self) -> crate::audit::AuditEntry {
        let size = self.audit_size().await;
        self.state
            .audit()
            .entry(size)
            .await
            .expect("entry")
            .expect("an entry")
    }

    /// One request; checks how many audit entries it wrote (`audited`: exactly one, else none).
    async fn call_raw(
        &self,
        method: Method,
        path: &str,
        who: Option<&str>,
        body: Option<Value>,
        headers: &[(&str, &str)],
        audited: bool,
    ) -> (StatusCode, HeaderMap, Vec<u8>) {
        let before = self.audit_size().await;
        let mut req = Request::builder().method(method.clone()).uri(path);
        if let Some(who) = who {
            let token = self
                .tokens
                .get(who)
                .cloned()
                .unwrap_or_else(|| who.to_owned());
            req = req.header("authorization", format!("Bearer {token}"));
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = match body {
            Some(b) => req
                .header("content-type", "application/json")
                .body(Body::from(b.to_string())),
            None => req.body(Body::empty()),
        }
        .expect("request");
        let resp = self.app.clone().oneshot(req).await.expect("response");
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 24)
            .await
            .expect("body")
            .to_vec();
        let after = self.audit_size().await;
        assert_eq!(
            after - before,
            i64::from(audited),
            "{method} {path} as {who:?} ({status}) must write {} audit entries",
            i64::from(audited)
        );
        (status, headers, bytes)
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        who: Option<&str>,
        body: Option<Value>,
        audited: bool,
    ) -> (StatusCode, Value) {
        let (status, _, bytes) = self.call_raw(method, path, who, body, &[], audited).await;
        let v = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (status, v)
    }

    async fn lookup(&self, who: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, "/api/v1/lookups", Some(who), Some(body), true)
            .await
    }
}

async fn exec(url: &str, sql: &str) {
    if let Some(path) = url.strip_prefix("sqlite://") {
        let conn = rusqlite::Connection::open(path).expect("open");
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .expect("busy");
        conn.execute_batch(sql).expect("exec");
    } else {
        use sqlx::Connection;
        let mut c = sqlx::PgConnection::connect(url).await.expect("connect");
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
            .execute(&mut c)
            .await
            .expect("exec");
        let _ = c.close().await;
    }
}

fn orgs(v: &Value) -> Vec<String> {
    let mut out: Vec<String> = v["involvements"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|i| i["organisation"]["code"].as_str().unwrap_or("").to_owned())
        .collect();
    out.sort();
    out
}

fn household_orgs(v: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for h in v["household"].as_array().into_iter().flatten() {
        for i in h["involvements"].as_array().into_iter().flatten() {
            out.push((
                h["relation"].as_str().unwrap_or("").to_owned(),
                i["organisation"]["code"].as_str().unwrap_or("").to_owned(),
            ));
        }
    }
    out.sort();
    out
}

// ---------------------------------------------------------------------------------------------
// Lookups
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn an_involved_organisation_gets_the_persons_and_households_involvements() {
    let fx = Fx::sqlite(1).await;
    let (status, v) = fx
        .lookup(
            "child_org",
            json!({ "bsn": fx.people.child, "purpose": "coordinating_care" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(orgs(&v), ["JH-KOERS", "OKC-ZUID"]);
    assert_eq!(
        household_orgs(&v),
        [("parent".to_owned(), "WPI-AMS".to_owned())],
        "the parent's involvement, marked with the relation"
    );
    assert_eq!(v["break_glass"], false);
    let first = &v["involvements"][0];
    assert!(first["source_synced_at"].is_string(), "{first}");
    let e = fx.last_entry().await;
    assert_eq!(e.entry.action, AuditAction::Lookup);
    assert_eq!(e.entry.outcome, AuditOutcome::Granted);
    assert_eq!(e.entry.records_returned, 3);
    assert_eq!(e.entry.purpose.as_deref(), Some("coordinating_care"));
    assert!(e.entry.checks.contains(&"relationship:person".to_owned()));
    let (subject, _) = fx
        .state
        .audit()
        .subject(&Bsn::parse(&fx.people.child).expect("bsn"));
    assert_eq!(e.entry.subject.as_deref(), Some(subject.as_str()));
}

#[tokio::test]
async fn a_parents_organisation_sees_the_childs_involvements_through_the_relation() {
    let fx = Fx::sqlite(2).await;
    // WPI-AMS is involved with the parent only; the child is one hop away.
    let (status, v) = fx
        .lookup(
            "parent_org",
            json!({ "bsn": fx.people.child, "purpose": "coordinating_care" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(orgs(&v), ["JH-KOERS", "OKC-ZUID"]);
    assert!(
        fx.last_entry()
            .await
            .entry
            .checks
            .contains(&"relationship:household".to_owned())
    );
    // And the other way round: the child's organisation sees the parent, the child marked.
    let (status, v) = fx
        .lookup(
            "child_org",
            json!({ "bsn": fx.people.parent, "purpose": "referral" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(orgs(&v), ["WPI-AMS"]);
    assert_eq!(
        household_orgs(&v),
        [
            ("child".to_owned(), "JH-KOERS".to_owned()),
            ("child".to_owned(), "OKC-ZUID".to_owned())
        ]
    );
}

#[tokio::test]
async fn the_refusal_is_byte_identical_for_an_indexed_and_an_unknown_bsn_and_audited() {
    let fx = Fx::sqlite(3).await;
    let mut bodies = Vec::new();
    for bsn in [&fx.people.child, &fx.people.unknown] {
        let (status, headers, body) = fx
            .call_raw(
                Method::POST,
                "/api/v1/lookups",
                Some("outsider"),
                Some(json!({ "bsn": bsn, "purpose": "coordinating_care" })),
                &[],
                true,
            )
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        let e = fx.last_entry().await;
        assert_eq!(e.entry.outcome, AuditOutcome::Refused);
        assert!(e.entry.checks.contains(&"relationship:none".to_owned()));
        assert_eq!(e.entry.records_returned, 0);
        let mut h: Vec<(String, String)> = headers
            .iter()
            .filter(|(k, _)| k.as_str() != "x-request-id")
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_owned()))
            .collect();
        h.sort();
        bodies.push((body, h));
    }
    assert_eq!(
        bodies[0], bodies[1],
        "status, headers and body must not differ"
    );
    let text = String::from_utf8_lossy(&bodies[0].0);
    assert!(
        text.contains("break_glass_reason"),
        "explains break-the-glass: {text}"
    );
}

#[tokio::test]
async fn break_the_glass_is_answered_flagged_queued_and_reviewed_as_a_new_entry() {
    let fx = Fx::sqlite(4).await;
    let (status, v) = fx
        .lookup(
            "outsider",
            json!({ "bsn": fx.people.other, "purpose": "safety_assessment",
                    "break_glass_reason": { "code": "acute_safety",
                        "justification": "Acute danger reported by the neighbours" } }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["break_glass"], true);
    assert_eq!(orgs(&v), ["GGZ-AMSTELSTAD", "OKC-OOST"]);
    assert!(
        v["warnings"][0]
            .as_str()
            .is_some_and(|w| w.contains("none is marked coordinator")),
        "{v}"
    );
    let flagged = fx.last_entry().await;
    assert_eq!(flagged.entry.action, AuditAction::BreakGlassLookup);
    assert_eq!(flagged.entry.outcome, AuditOutcome::BreakGlass);
    assert_eq!(
        flagged.entry.break_glass.as_deref(),
        Some("acute_safety: Acute danger reported by the neighbours")
    );

    let (status, q) = fx
        .call(
            Method::GET,
            "/api/v1/audit/break-glass",
            Some("privacy_officer"),
            None,
            true,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{q}");
    let queued: Vec<i64> = q["entries"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["seq"].as_i64())
        .collect();
    assert_eq!(queued, [flagged.seq]);

    let (status, r) = fx
        .call(
            Method::POST,
            &format!("/api/v1/audit/break-glass/{}/reviews", flagged.seq),
            Some("privacy_officer"),
            Some(json!({ "verdict": "justified", "note": "Confirmed with the team lead" })),
            true,
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{r}");
    assert_eq!(r["refers_to"], flagged.seq);
    assert_eq!(r["action"], "break_glass_review");
    let (_, q) = fx
        .call(
            Method::GET,
            "/api/v1/audit/break-glass",
            Some("privacy_officer"),
            None,
            true,
        )
        .await;
    assert_eq!(q["entries"], json!([]), "reviewed entries leave the queue");
    // The flagged entry itself is unchanged (reviews never update).
    let again = fx
        .state
        .audit()
        .entry(flagged.seq)
        .await
        .expect("entry")
        .expect("still there");
    assert_eq!(again, flagged);
}

#[tokio::test]
async fn a_justification_holding_a_bsn_is_refused_without_echoing_it() {
    let fx = Fx::sqlite(5).await;
    for text in [
        format!("Person {} is in danger", fx.people.other),
        format!("Person {} is in danger", {
            let b = &fx.people.other;
            format!("{}.{}.{}", &b[0..4], &b[4..6], &b[6..9])
        }),
    ] {
        let (status, v) = fx
            .lookup(
                "outsider",
                json!({ "bsn": fx.people.other, "purpose": "safety_assessment",
                        "break_glass_reason": { "code": "acute_safety", "justification": text } }),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
        assert!(!v.to_string().contains(&fx.people.other[..8]), "{v}");
        let e = fx.last_entry().await;
        assert_eq!(e.entry.outcome, AuditOutcome::Invalid);
        assert_eq!(e.entry.break_glass, None, "the refused text is not stored");
    }
}

#[tokio::test]
async fn a_shielded_person_is_never_answered_through_break_the_glass() {
    let fx = Fx::sqlite(6).await;
    let (status, v) = fx
        .lookup(
            "outsider",
            json!({ "bsn": fx.people.shielded, "purpose": "safety_assessment",
                    "break_glass_reason": { "code": "crisis",
                        "justification": "Crisis, nobody reachable otherwise" } }),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{v}");
    assert_eq!(v["error"], "shielded");
    assert!(v.get("involvements").is_none());
    let e = fx.last_entry().await;
    assert_eq!(e.entry.outcome, AuditOutcome::Refused);
    assert!(e.entry.checks.contains(&"shielded".to_owned()));
    // Need to know still works for the organisation that is involved.
    let mut fx = fx;
    fx.tokens.insert("okc_west", {
        let t = Token::generate();
        fx.state
            .store()
            .add_user("West", Role::Professional, "OKC-WEST", t.hash())
            .await
            .expect("user");
        t.reveal().to_owned()
    });
    let (status, _) = fx
        .lookup(
            "okc_west",
            json!({ "bsn": fx.people.shielded, "purpose": "coordinating_care" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn a_sensitive_involvement_shows_other_organisations_no_goal_and_the_general_contact() {
    let fx = Fx::sqlite(7).await;
    let (_, v) = fx
        .lookup(
            "child_org",
            json!({ "bsn": fx.people.child, "purpose": "coordinating_care" }),
        )
        .await;
    let koers = v["involvements"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|i| i["organisation"]["code"] == "JH-KOERS")
        .expect("JH-KOERS listed")
        .clone();
    assert_eq!(koers["restricted"], true);
    assert_eq!(koers["goal"], Value::Null);
    assert_eq!(koers["end_reason"], Value::Null);
    assert_eq!(koers["contact"]["name"], Value::Null);
    assert!(koers["contact"]["general"].is_string(), "{koers}");
    assert!(!v.to_string().contains("Named Professional R3"));
    assert!(!v.to_string().contains("aanbieder (R3)"), "{v}");
    // The end reason of a not-sensitive involvement is shown with its description.
    let zuid = v["involvements"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|i| i["organisation"]["code"] == "OKC-ZUID")
        .expect("OKC-ZUID listed");
    assert_eq!(
        zuid["end_reason"],
        json!({ "code": "38", "description": "Overstap naar andere aanbieder (R2)" })
    );
    // The organisation itself sees its own record in full.
    let (_, v) = fx
        .lookup(
            "sensitive_org",
            json!({ "bsn": fx.people.child, "purpose": "coordinating_care" }),
        )
        .await;
    assert!(v.to_string().contains("Named Professional R3"), "{v}");
    assert!(v.to_string().contains("aanbieder (R3)"), "{v}");
}

#[tokio::test]
async fn invalid_input_gets_400_that_never_echoes_the_bsn_and_is_audited() {
    let fx = Fx::sqlite(8).await;
    let bad = {
        let mut b = fx.people.other.clone().into_bytes();
        b[8] = if b[8] == b'9' { b'0' } else { b[8] + 1 };
        String::from_utf8(b).expect("ascii")
    };
    let (status, v) = fx
        .lookup("outsider", json!({ "bsn": bad, "purpose": "referral" }))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        v["message"].as_str().unwrap_or("").contains("elfproef"),
        "{v}"
    );
    assert!(!v.to_string().contains(&bad), "{v}");
    assert_eq!(fx.last_entry().await.entry.outcome, AuditOutcome::Invalid);
    // A BSN sent as a number: serde would quote it in its message; ours does not.
    let number: u64 = fx.people.other.parse().expect("digits");
    let (status, v) = fx
        .lookup("outsider", json!({ "bsn": number, "purpose": "referral" }))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(!v.to_string().contains(&fx.people.other), "{v}");
    // Free-text purpose.
    let (status, v) = fx
        .lookup(
            "outsider",
            json!({ "bsn": fx.people.other, "purpose": "curious" }),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        v["message"]
            .as_str()
            .unwrap_or("")
            .contains("coordinating_care")
    );
    // An oversized body.
    let (status, _, _) = fx
        .call_raw(
            Method::POST,
            "/api/v1/lookups",
            Some("outsider"),
            Some(json!({ "bsn": "x".repeat(100_000), "purpose": "referral" })),
            &[],
            true,
        )
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
}

// ---------------------------------------------------------------------------------------------
// Authorisation matrix
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn authorisation_matrix_every_role_on_every_endpoint() {
    let fx = Fx::sqlite(9).await;
    // A break-glass entry to review.
    let (status, _) = fx
        .lookup(
            "outsider",
            json!({ "bsn": fx.people.other, "purpose": "crisis_response",
                    "break_glass_reason": { "code": "crisis", "justification": "Crisis at school today" } }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let review_seq = fx.last_entry().await.seq;

    let checkpoint = fx
        .state
        .audit()
        .checkpoint()
        .await
        .expect("checkpoint")
        .to_json_line();
    let lookup = json!({ "bsn": fx.people.child, "purpose": "coordinating_care" });
    let bsn_body = json!({ "bsn": fx.people.child });
    let review = json!({ "verdict": "needs_follow_up", "note": "Asked the team for context" });
    let review_path = format!("/api/v1/audit/break-glass/{review_seq}/reviews");
    // (method, path, body, roles allowed, success status, audited for authenticated callers)
    type Endpoint<'a> = (
        Method,
        &'a str,
        Option<Value>,
        Vec<&'a str>,
        StatusCode,
        bool,
    );
    let endpoints: Vec<Endpoint<'_>> = vec![
        (
            Method::GET,
            "/api/v1/me",
            None,
            vec![
                "parent_org",
                "outsider",
                "privacy_officer",
                "operator",
                "admin",
            ],
            StatusCode::OK,
            false,
        ),
        (
            Method::POST,
            "/api/v1/lookups",
            Some(lookup),
            vec!["parent_org"],
            StatusCode::OK,
            true,
        ),
        (
            Method::POST,
            "/api/v1/audit/search",
            Some(bsn_body.clone()),
            vec!["privacy_officer"],
            StatusCode::OK,
            true,
        ),
        (
            Method::GET,
            "/api/v1/audit/break-glass",
            None,
            vec!["privacy_officer"],
            StatusCode::OK,
            true,
        ),
        (
            Method::POST,
            &review_path,
            Some(review),
            vec!["privacy_officer"],
            StatusCode::CREATED,
            true,
        ),
        (
            Method::POST,
            "/api/v1/audit/subject-access",
            Some(bsn_body),
            vec!["privacy_officer"],
            StatusCode::OK,
            true,
        ),
        (
            Method::GET,
            "/api/v1/audit/verify",
            None,
            vec!["privacy_officer"],
            StatusCode::OK,
            true,
        ),
        (
            Method::POST,
            "/api/v1/audit/verify",
            Some(json!({ "checkpoint": checkpoint })),
            vec!["privacy_officer"],
            StatusCode::OK,
            true,
        ),
        (
            Method::GET,
            "/api/v1/sync/runs",
            None,
            vec!["operator", "admin"],
            StatusCode::OK,
            true,
        ),
        (
            Method::GET,
            "/api/v1/sync/quarantine",
            None,
            vec!["operator", "admin"],
            StatusCode::OK,
            true,
        ),
        (
            Method::GET,
            "/api/v1/sync/quality",
            None,
            vec!["operator", "admin"],
            StatusCode::OK,
            true,
        ),
    ];
    let callers = [
        None,
        Some("not-a-token"),
        Some("disabled"),
        Some("parent_org"),
        Some("privacy_officer"),
        Some("operator"),
        Some("admin"),
    ];
    let mut unauthorised_body = None;
    for (method, path, body, allowed, ok, audited) in &endpoints {
        for who in callers {
            let authenticated = matches!(
                who,
                Some("parent_org" | "privacy_officer" | "operator" | "admin")
            );
            let permitted = who.is_some_and(|w| allowed.contains(&w));
            // The review endpoint succeeds once; later permitted calls see a reviewed entry.
            let (status, _, bytes) = fx
                .call_raw(
                    method.clone(),
                    path,
                    who,
                    body.clone(),
                    &[],
                    authenticated && *audited,
                )
                .await;
            let expected = if !authenticated {
                StatusCode::UNAUTHORIZED
            } else if permitted {
                *ok
            } else {
                StatusCode::FORBIDDEN
            };
            assert_eq!(status, expected, "{method} {path} as {who:?}");
            if !authenticated {
                // Missing, unknown and disabled tokens get the same answer.
                match &unauthorised_body {
                    None => unauthorised_body = Some(bytes),
                    Some(b) => assert_eq!(b, &bytes),
                }
            } else if !permitted && *audited {
                let e = fx.last_entry().await;
                assert_eq!(e.entry.outcome, AuditOutcome::Refused, "{method} {path}");
                assert!(e.entry.checks.contains(&"role:refused".to_owned()));
            }
        }
    }
    // Public endpoints need no token and write nothing.
    for (method, path) in ROUTES {
        if !path.starts_with("/api/v1/") || *path == "/api/v1/openapi.json" {
            let (status, _) = fx.call(Method::GET, path, None, None, false).await;
            assert_eq!(status, StatusCode::OK, "{method} {path}");
        }
    }
}

#[tokio::test]
async fn operators_see_runs_quarantine_and_the_share_of_each_defect_per_run() {
    let fx = Fx::sqlite(17).await;
    let (status, q) = fx
        .call(
            Method::GET,
            "/api/v1/sync/quality?source=okc-2",
            Some("operator"),
            None,
            true,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{q}");
    let run = &q[0];
    assert_eq!(run["read"], 9);
    assert_eq!(run["rejected"], 3);
    for (count, share) in [
        ("invalid_bsn", "invalid_bsn_share"),
        ("missing_contact", "missing_contact_share"),
        ("unknown_code", "unknown_code_share"),
    ] {
        assert_eq!(run[count], 1, "{count}: {run}");
        let s = run[share].as_f64().expect("share");
        assert!((s - 1.0 / 9.0).abs() < 1e-9, "{share}: {s}");
    }
    let (status, list) = fx
        .call(
            Method::GET,
            "/api/v1/sync/quarantine",
            Some("admin"),
            None,
            true,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list.as_array().map(Vec::len), Some(3), "{list}");
    let (status, runs) = fx
        .call(
            Method::GET,
            "/api/v1/sync/runs?limit=5",
            Some("operator"),
            None,
            true,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(runs[0]["status"], "succeeded", "{runs}");
    let (status, _) = fx
        .call(
            Method::GET,
            "/api/v1/sync/runs?limit=0",
            Some("operator"),
            None,
            true,
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(fx.last_entry().await.entry.outcome, AuditOutcome::Invalid);
}

#[tokio::test]
async fn verify_against_a_checkpoint_reports_the_chain_and_refuses_a_forged_checkpoint() {
    let fx = Fx::sqlite(19).await;
    let _ = fx
        .lookup(
            "child_org",
            json!({ "bsn": fx.people.child, "purpose": "coordinating_care" }),
        )
        .await;
    let line = fx
        .state
        .audit()
        .checkpoint()
        .await
        .expect("checkpoint")
        .to_json_line();
    let (status, report) = fx
        .call(
            Method::POST,
            "/api/v1/audit/verify",
            Some("privacy_officer"),
            Some(json!({ "checkpoint": line })),
            true,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["checkpoint_matched"], true, "{report}");
    assert!(
        fx.last_entry()
            .await
            .entry
            .checks
            .contains(&"checkpoint".to_owned())
    );
    // A checkpoint whose size was raised (as if entries had been cut off) fails its signature.
    let mut forged: Value = serde_json::from_str(&line).expect("json line");
    let size = forged["size"].as_i64().expect("size");
    forged["size"] = json!(size + 5);
    let (status, v) = fx
        .call(
            Method::POST,
            "/api/v1/audit/verify",
            Some("privacy_officer"),
            Some(json!({ "checkpoint": forged.to_string() })),
            true,
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(fx.last_entry().await.entry.outcome, AuditOutcome::Invalid);
    let (status, _) = fx
        .call(
            Method::POST,
            "/api/v1/audit/verify",
            Some("privacy_officer"),
            Some(json!({ "checkpoint": "not a checkpoint" })),
            true,
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn the_openapi_document_describes_every_route_and_every_route_exists() {
    let fx = Fx::sqlite(10).await;
    let (status, doc) = fx
        .call(Method::GET, "/api/v1/openapi.json", None, None, false)
        .await;
    assert_eq!(status, StatusCode::OK);
    for (method, path) in ROUTES {
        assert!(
            doc["paths"][path][method].is_object(),
            "openapi.json lacks {method} {path}"
        );
        let concrete = path.replace("{seq}", "1");
        let m = Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
        let (status, _, _) = fx.call_raw(m, &concrete, None, None, &[], false).await;
        assert_ne!(
            status,
            StatusCode::NOT_FOUND,
            "{method} {path} is not routed"
        );
    }
    let documented = doc["paths"].as_object().map_or(0, |p| {
        p.values()
            .map(|ops| ops.as_object().map_or(0, |o| o.len()))
            .sum::<usize>()
    });
    assert_eq!(
        documented,
        ROUTES.len(),
        "no undocumented extras either way"
    );
}

#[tokio::test]
async fn request_ids_are_taken_when_sane_generated_otherwise_and_recorded_in_the_audit() {
    let fx = Fx::sqlite(11).await;
    let (_, h, _) = fx
        .call_raw(
            Method::POST,
            "/api/v1/lookups",
            Some("child_org"),
            Some(json!({ "bsn": fx.people.child, "purpose": "intake" })),
            &[("x-request-id", "case-42.a_b")],
            true,
        )
        .await;
    assert_eq!(h["x-request-id"], "case-42.a_b");
    assert_eq!(fx.last_entry().await.entry.request_id, "case-42.a_b");
    let (_, h, _) = fx
        .call_raw(
            Method::GET,
            "/healthz",
            None,
            None,
            &[("x-request-id", "bad id with spaces")],
            false,
        )
        .await;
    let id = h["x-request-id"].to_str().expect("ascii");
    assert_eq!(
        id.len(),
        32,
        "a generated id replaces an unusable one: {id}"
    );
}

#[tokio::test]
async fn subject_access_lists_organisations_and_accesses_as_json_and_formula_safe_csv() {
    let fx = Fx::sqlite(12).await;
    for who in ["child_org", "outsider"] {
        let _ = fx
            .lookup(
                who,
                json!({ "bsn": fx.people.child, "purpose": "coordinating_care" }),
            )
            .await;
    }
    let (status, v) = fx
        .call(
            Method::POST,
            "/api/v1/audit/subject-access",
            Some("privacy_officer"),
            Some(json!({ "bsn": fx.people.child })),
            true,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let held: Vec<&str> = v["organisations"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|o| o["organisation_code"].as_str())
        .collect();
    assert_eq!(held, ["JH-KOERS", "OKC-ZUID"]);
    let accesses = v["accesses"].as_array().cloned().unwrap_or_default();
    assert_eq!(accesses.len(), 2, "{v}");
    assert_eq!(accesses[0]["organisation"], "SD-NOORD");
    assert_eq!(accesses[0]["outcome"], "refused");
    assert_eq!(accesses[1]["organisation"], "OKC-ZUID");

    let (status, h, body) = fx
        .call_raw(
            Method::POST,
            "/api/v1/audit/subject-access",
            Some("privacy_officer"),
            Some(json!({ "bsn": fx.people.child })),
            &[("accept", "text/csv")],
            true,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        h["content-type"]
            .to_str()
            .unwrap_or("")
            .starts_with("text/csv")
    );
    let csv = String::from_utf8(body).expect("utf-8");
    assert!(csv.lines().count() >= 4, "{csv}");
    assert!(!csv.contains(&fx.people.child));
}

#[test]
fn csv_cells_that_could_start_a_formula_are_prefixed() {
    use super::privacy::csv_cell;
    for (input, want) in [
        ("=1+1", "'=1+1"),
        ("+31", "'+31"),
        ("-x", "'-x"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\tx", "'\tx"),
        ("\rx", "\"'\rx\""),
        ("plain", "plain"),
        ("a,b", "\"a,b\""),
        ("say \"hi\"", "\"say \"\"hi\"\"\""),
    ] {
        assert_eq!(csv_cell(input), want, "{input:?}");
    }
}

#[test]
fn bsn_like_text_is_recognised_in_any_common_spelling() {
    use super::lookup::looks_like_bsn;
    for yes in [
        "123456782",
        "1234.56.782",
        "12 34 56 782",
        "x12345678x",
        "1234-5678",
        "0123456789012",
    ] {
        assert!(looks_like_bsn(yes), "{yes}");
    }
    for no in [
        "call 020 555",
        "room 12, 2024-01-01",
        "visit 31-01-2024",
        "1234567",
        "no digits",
    ] {
        assert!(!looks_like_bsn(no), "{no}");
    }
}

mod props {
    use proptest::prelude::*;

    use super::super::lookup::looks_like_bsn;

    proptest! {
        /// Any nine-digit number, however separated by single spaces, dots or dashes, is
        /// caught; text without 8 digits in a row (separators aside) is not.
        #[test]
        fn every_separated_nine_digit_number_is_caught(
            digits in proptest::collection::vec(0u8..10, 9),
            seps in proptest::collection::vec(prop_oneof![Just(""), Just(" "), Just("."), Just("-")], 9),
            prefix in "[a-z ]{0,20}",
            suffix in "[a-z ]{0,20}",
        ) {
            let mut s = prefix.clone();
            for (d, sep) in digits.iter().zip(&seps) {
                s.push(char::from(b'0' + d));
                s.push_str(sep);
            }
            s.push_str(&suffix);
            prop_assert!(looks_like_bsn(&s));
        }

        #[test]
        fn short_numbers_between_words_are_not_flagged(n in 0u32..10_000_000, w in "[a-z]{1,10}") {
            let s = format!("{w} {n} {w}");
            prop_assert!(!looks_like_bsn(&s));
        }

        #[test]
        fn arbitrary_text_never_panics(s in ".{0,200}") {
            let _ = looks_like_bsn(&s);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Fail-closed, real socket, logs
// ---------------------------------------------------------------------------------------------

/// Every lookup outcome (granted, refused, break-glass) returns 503 and no data.
async fn assert_lookups_fail_closed(fx: &Fx) {
    let bodies = [
        (
            "child_org",
            json!({ "bsn": fx.people.child, "purpose": "coordinating_care" }),
        ),
        (
            "outsider",
            json!({ "bsn": fx.people.child, "purpose": "coordinating_care" }),
        ),
        (
            "outsider",
            json!({ "bsn": fx.people.child, "purpose": "coordinating_care",
                    "break_glass_reason": { "code": "crisis", "justification": "Crisis at home, now" } }),
        ),
    ];
    for (who, body) in bodies {
        let (status, v) = fx
            .call(
                Method::POST,
                "/api/v1/lookups",
                Some(who),
                Some(body),
                false,
            )
            .await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{who}: {v}");
        assert_eq!(v["error"], "audit_unavailable");
        assert!(v.get("involvements").is_none());
        assert!(!v.to_string().contains("OKC-ZUID"));
    }
}

#[tokio::test]
async fn lookups_fail_closed_when_the_sqlite_audit_database_cannot_be_written() {
    let fx = Fx::sqlite(13).await;
    let path = fx.url.trim_start_matches("sqlite://").to_owned();
    let files = [path.clone(), format!("{path}-wal")];
    let chattr = |flag: &str| {
        std::process::Command::new("chattr")
            .arg(flag)
            .args(&files)
            .status()
            .is_ok_and(|s| s.success())
    };
    if !chattr("+i") {
        let _ = writeln!(
            std::io::stderr(),
            "fail-closed SQLite API test SKIPPED: `chattr +i` is not available here"
        );
        return;
    }
    // Undo the flag even when an assertion fails, so the temporary folder can be removed.
    struct Undo<F: Fn()>(F);
    impl<F: Fn()> Drop for Undo<F> {
        fn drop(&mut self) {
            (self.0)();
        }
    }
    let _undo = Undo(|| {
        chattr("-i");
    });
    assert_lookups_fail_closed(&fx).await;
}

#[tokio::test]
async fn lookups_fail_closed_on_postgresql_when_insert_on_the_audit_table_is_revoked() {
    let Ok(admin_url) = std::env::var(POSTGRES_URL_VAR) else {
        let _ = writeln!(
            std::io::stderr(),
            "PostgreSQL fail-closed API test SKIPPED: set {POSTGRES_URL_VAR}"
        );
        return;
    };
    use sqlx::Connection;
    let database = format!("mp_api_{:08x}", rand::random::<u32>());
    let role = format!("mp_api_role_{:08x}", rand::random::<u32>());
    {
        let mut c = sqlx::PgConnection::connect(&admin_url)
            .await
            .expect("admin");
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {database}")))
            .execute(&mut c)
            .await
            .expect("create database");
        let _ = c.close().await;
    }
    let (base, _) = admin_url.rsplit_once('/').expect("url with a database");
    let owner_url = format!("{base}/{database}");
    let dir = tempfile::tempdir().expect("tempdir");
    let owner = Fx::with_url(dir, owner_url.clone(), 14).await;
    // Works as the owner.
    let (status, _) = owner
        .lookup(
            "child_org",
            json!({ "bsn": owner.people.child, "purpose": "coordinating_care" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    exec(
        &owner_url,
        &format!(
            "CREATE ROLE {role} LOGIN; GRANT USAGE ON SCHEMA public TO {role}; \
             GRANT SELECT, INSERT, UPDATE ON ALL TABLES IN SCHEMA public TO {role}; \
             GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO {role}; \
             REVOKE INSERT ON audit_log FROM {role};"
        ),
    )
    .await;
    let host = owner_url
        .split_once("://")
        .map(|(_, r)| r.rsplit_once('@').map_or(r, |(_, h)| h))
        .expect("host");
    let limited_url = format!("postgres://{role}@{host}");
    let key = key();
    // The index store stays the owner's; only the audit trail runs as the limited role.
    let store = owner.state.store().clone();
    let audit = AuditLog::open_migrated(&limited_url, key.clone())
        .await
        .expect("audit as the limited role");
    let state = AppState::new(
        store,
        audit,
        &key,
        owner.state.inner.registry.clone(),
        ServerSettings::default(),
    );
    let limited = Fx {
        _dir: tempfile::tempdir().expect("tempdir"),
        url: limited_url,
        app: router(state.clone()),
        state,
        tokens: owner.tokens.clone(),
        people: People {
            parent: owner.people.parent.clone(),
            child: owner.people.child.clone(),
            other: owner.people.other.clone(),
            shielded: owner.people.shielded.clone(),
            unknown: owner.people.unknown.clone(),
        },
    };
    assert_lookups_fail_closed(&limited).await;
    drop(limited);
    drop(owner);
    drop_pg(&admin_url, &database).await;
    // Separate statements: DROP DATABASE cannot share an implicit transaction.
    let mut c = sqlx::PgConnection::connect(&admin_url)
        .await
        .expect("admin");
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP ROLE IF EXISTS {role}")))
        .execute(&mut c)
        .await
        .expect("drop role");
    let _ = c.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookups_over_a_real_socket_record_the_client_address() {
    let fx = Fx::sqlite(15).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = fx.app.clone();
    let server = tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .await
    });
    let client = reqwest::Client::new();
    let resp = client
        .post(format!("http://{addr}/api/v1/lookups"))
        .bearer_auth(&fx.tokens["child_org"])
        .header("content-type", "application/json")
        .body(json!({ "bsn": fx.people.child, "purpose": "coordinating_care" }).to_string())
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), StatusCode::OK);
    let id = resp
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .expect("request id")
        .to_owned();
    let e = fx.last_entry().await;
    assert_eq!(e.entry.request_id, id);
    assert_eq!(e.entry.client_addr.as_deref(), Some("127.0.0.1"));
    let resp = client
        .get(format!("http://{addr}/readyz"))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), StatusCode::OK);
    server.abort();
}

#[tokio::test]
async fn captured_logs_of_the_api_tests_never_contain_a_looked_up_bsn() {
    // Run a few requests of every kind here too, so this test has something to scan even
    // when it runs first; the buffer also holds the other API tests' logs.
    let fx = Fx::sqlite(16).await;
    for who in ["child_org", "outsider"] {
        let _ = fx
            .lookup(
                who,
                json!({ "bsn": fx.people.child, "purpose": "coordinating_care" }),
            )
            .await;
    }
    let _ = fx
        .lookup(
            "outsider",
            json!({ "bsn": fx.people.unknown, "purpose": "intake" }),
        )
        .await;
    let text = {
        let buf = captured().0.lock().expect("lock");
        String::from_utf8_lossy(&buf).into_owned()
    };
    assert!(
        text.contains("Request answered."),
        "the capture works: {text}"
    );
    for bsn in sent_bsns().lock().expect("lock").iter() {
        assert!(
            !text.contains(bsn.as_str()),
            "a looked-up BSN reached the log"
        );
    }
}

/// A fixture on a fresh PostgreSQL database, or `None` (with a SKIPPED line) without one.
async fn pg_fx(offset: u32) -> Option<(Fx, String, String)> {
    let db = crate::testdb::postgres("api").await?;
    let crate::testdb::Kind::Postgres {
        admin_url,
        database,
    } = db.kind
    else {
        return None;
    };
    let fx = Fx::with_url(tempfile::tempdir().expect("tempdir"), db.url, offset).await;
    Some((fx, admin_url, database))
}

async fn drop_pg(admin_url: &str, database: &str) {
    use sqlx::Connection;
    if let Ok(mut c) = sqlx::PgConnection::connect(admin_url).await {
        let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {database} WITH (FORCE)"
        )))
        .execute(&mut c)
        .await;
        let _ = c.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lookup_rules_hold_on_postgresql_too() {
    let Some((fx, admin_url, database)) = pg_fx(18).await else {
        return;
    };
    // Household, both directions.
    let (status, v) = fx
        .lookup(
            "parent_org",
            json!({ "bsn": fx.people.child, "purpose": "coordinating_care" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(orgs(&v), ["JH-KOERS", "OKC-ZUID"]);
    assert_eq!(
        household_orgs(&v),
        [("parent".to_owned(), "WPI-AMS".to_owned())]
    );
    let koers = v["involvements"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|i| i["organisation"]["code"] == "JH-KOERS")
        .expect("listed")
        .clone();
    assert_eq!(koers["restricted"], true);
    assert_eq!(koers["goal"], Value::Null);
    // Identical refusals.
    let mut bodies = Vec::new();
    for bsn in [&fx.people.child, &fx.people.unknown] {
        let (status, _, body) = fx
            .call_raw(
                Method::POST,
                "/api/v1/lookups",
                Some("outsider"),
                Some(json!({ "bsn": bsn, "purpose": "coordinating_care" })),
                &[],
                true,
            )
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        bodies.push(body);
    }
    assert_eq!(bodies[0], bodies[1]);
    // Break-the-glass, and never for the shielded person (flag published by the pipeline).
    let glass = |bsn: &str| {
        json!({ "bsn": bsn, "purpose": "safety_assessment",
                "break_glass_reason": { "code": "acute_safety", "justification": "Acute danger at home" } })
    };
    let (status, v) = fx.lookup("outsider", glass(&fx.people.other)).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["break_glass"], true);
    let (status, _) = fx.lookup("outsider", glass(&fx.people.shielded)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // Data quality.
    let (status, q) = fx
        .call(
            Method::GET,
            "/api/v1/sync/quality",
            Some("operator"),
            None,
            true,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(q[0]["missing_contact"], 1, "{q}");
    // Subject access.
    let (status, r) = fx
        .call(
            Method::POST,
            "/api/v1/audit/subject-access",
            Some("privacy_officer"),
            Some(json!({ "bsn": fx.people.child })),
            true,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(r["accesses"].as_array().map(Vec::len), Some(2), "{r}");
    drop(fx);
    drop_pg(&admin_url, &database).await;
}

// ---------------------------------------------------------------------------------------------
// Key rotation (issue 5): lookups consult every loaded index key version
// ---------------------------------------------------------------------------------------------

/// The fixture's six records (as in [`Fx::with_url`]) under `key`'s active index version.
fn fixture_records(key: &MasterKey, people: &People) -> Vec<Involvement> {
    use InvolvementStatus::Active;
    use LifeDomain::*;
    // As the mapper does: the relation under the active version and every other loaded one.
    let child = Bsn::parse(&people.child).expect("bsn");
    let mut rel = vec![Relation {
        kind: RelationKind::Child,
        other: key.pseudonymiser(KeyPurpose::Index).pseudonymise(&child),
    }];
    for p in key.index_pseudonymisers() {
        let other = p.pseudonymise(&child);
        if !rel.iter().any(|r| r.other == other) {
            rel.push(Relation {
                kind: RelationKind::Child,
                other,
            });
        }
    }
    vec![
        inv(
            key,
            &people.parent,
            "R1",
            "WPI-AMS",
            IncomeWork,
            Active,
            false,
            false,
            rel,
        ),
        inv(
            key,
            &people.child,
            "R2",
            "OKC-ZUID",
            YouthHealth,
            Active,
            false,
            false,
            vec![],
        ),
        inv(
            key,
            &people.child,
            "R3",
            "JH-KOERS",
            YouthCare,
            Active,
            false,
            true,
            vec![],
        ),
        inv(
            key,
            &people.other,
            "R4",
            "GGZ-AMSTELSTAD",
            MentalHealth,
            Active,
            false,
            false,
            vec![],
        ),
        inv(
            key,
            &people.other,
            "R5",
            "OKC-OOST",
            YouthHealth,
            Active,
            false,
            false,
            vec![],
        ),
        inv(
            key,
            &people.shielded,
            "R6",
            "OKC-WEST",
            YouthHealth,
            Active,
            false,
            false,
            vec![],
        ),
    ]
}

impl Fx {
    /// Serves with another key (as after a restart with a rotated key file).
    fn with_key(&mut self, key: &MasterKey) {
        let registry = Registry::load(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/organisations.toml"),
        )
        .expect("registry");
        self.state = AppState::new(
            self.state.store().clone(),
            self.state.audit().clone(),
            key,
            Arc::new(registry),
            ServerSettings::default(),
        );
        self.app = router(self.state.clone());
    }

    /// Publishes `records` as one run of okc-2; returns the run's counts.
    async fn publish(&self, records: Vec<Involvement>, mode: RunMode) -> crate::store::RunCounts {
        let store = self.state.store();
        let n = records.len() as u64;
        let run = store.begin_run("okc-2", mode).await.expect("run");
        store.stage(run, records, vec![]).await.expect("stage");
        store
            .complete_run(
                run,
                Completion {
                    read: n,
                    mode,
                    cursor: None,
                    guard: None,
                    accept: false,
                },
            )
            .await
            .expect("publish")
            .counts
    }

    /// What each organisation's lookup of each person answers (orgs, household orgs).
    async fn answers(&self) -> Vec<(StatusCode, Vec<String>, Vec<(String, String)>)> {
        let mut out = Vec::new();
        for who in ["parent_org", "child_org", "sensitive_org", "outsider"] {
            for bsn in [
                &self.people.parent,
                &self.people.child,
                &self.people.other,
                &self.people.shielded,
            ] {
                let (status, v) = self
                    .lookup(who, json!({ "bsn": bsn, "purpose": "coordinating_care" }))
                    .await;
                out.push((status, orgs(&v), household_orgs(&v)));
            }
        }
        out
    }
}

async fn rotation_end_to_end(mut fx: Fx) {
    let base = || MasterKey::from_secret("api-test-k1", &[42u8; 32]).expect("key");
    let before = fx.answers().await;
    assert!(
        before.iter().filter(|a| a.0 == StatusCode::OK).count() >= 3,
        "the fixture must answer some lookups: {before:?}"
    );

    // Rotated, not active: nothing changes.
    let rotated = base().with_index_version("k2", &[43u8; 32]).expect("k2");
    fx.with_key(&rotated);
    assert_eq!(fx.answers().await, before, "after rotate");

    // Activated; only the parent's record re-sent (incremental): a mix of versions, and the
    // parent's relation now points at the child's new pseudonym.
    let mut active = base().with_index_version("k2", &[43u8; 32]).expect("k2");
    assert!(active.activate_index("k2"));
    fx.with_key(&active);
    let records = fixture_records(&active, &fx.people);
    let counts = fx
        .publish(records[..1].to_vec(), RunMode::Incremental)
        .await;
    assert_eq!(counts.updated, 1, "a key change is a change: {counts:?}");
    let mixed = fx.state.store().key_versions().await.expect("versions");
    assert!(
        mixed
            .iter()
            .any(|c| c.key_id == "k2" && c.involvements == 1 && c.relations == 2)
    );
    assert!(
        mixed
            .iter()
            .any(|c| c.key_id == "api-test-k1" && c.involvements == 5)
    );
    assert_eq!(fx.answers().await, before, "during the re-keying");

    // A full sync re-keys the source completely.
    let counts = fx.publish(records, RunMode::Full).await;
    assert_eq!(
        (counts.updated, counts.unchanged, counts.ended),
        (5, 1, 0),
        "{counts:?}"
    );
    let rows = fx.state.store().involvements("okc-2").await.expect("rows");
    assert_eq!(rows.len(), 6);
    assert!(rows.iter().all(|r| r.key_id == "k2"), "{rows:?}");
    let versions = fx.state.store().key_versions().await.expect("versions");
    assert_eq!(
        versions,
        [crate::store::KeyVersionCount {
            source: "okc-2".into(),
            key_id: "k2".into(),
            involvements: 6,
            relations: 2,
        }]
    );
    assert_eq!(fx.answers().await, before, "after the full sync");

    // The old version retired from the key file: the next full sync drops the relations
    // under it, and lookups still answer the same.
    let only_new = MasterKey::from_secret("k2", &[43u8; 32]).expect("key");
    fx.with_key(&only_new);
    let counts = fx
        .publish(fixture_records(&only_new, &fx.people), RunMode::Full)
        .await;
    assert_eq!((counts.updated, counts.unchanged), (1, 5), "{counts:?}");
    let versions = fx.state.store().key_versions().await.expect("versions");
    assert_eq!(
        (versions.len(), versions[0].relations),
        (1, 1),
        "{versions:?}"
    );
    assert_eq!(fx.answers().await, before, "old version retired");
}

#[tokio::test]
async fn lookups_answer_the_same_before_during_and_after_a_key_rotation() {
    rotation_end_to_end(Fx::sqlite(61).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookups_answer_the_same_through_a_key_rotation_on_postgresql() {
    let Some((fx, admin_url, database)) = pg_fx(62).await else {
        return;
    };
    rotation_end_to_end(fx).await;
    drop_pg(&admin_url, &database).await;
}

// ---------------------------------------------------------------------------------------------
// Metrics and freshness (issue 5, observability)
// ---------------------------------------------------------------------------------------------

/// The first maximal run of `class` characters in `text` whose length is in `lengths`
/// (fraction digits after a `.` excepted).
fn has_run(
    text: &str,
    lengths: std::ops::RangeInclusive<usize>,
    class: fn(u8) -> bool,
) -> Option<String> {
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if class(b[i]) {
            let start = i;
            while i < b.len() && class(b[i]) {
                i += 1;
            }
            // Fraction digits of a sample value (`0.000885507`) are not an identity.
            let fraction = start > 0 && b[start - 1] == b'.';
            if lengths.contains(&(i - start)) && !fraction {
                return Some(text[start..i].to_owned());
            }
        } else {
            i += 1;
        }
    }
    None
}

#[tokio::test]
async fn metrics_after_a_lookup_name_the_spec_and_hold_no_identities() {
    let fx = Fx::sqlite(23).await;
    let (status, _) = fx
        .lookup(
            "child_org",
            json!({ "bsn": fx.people.child, "purpose": "coordinating_care" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = fx
        .lookup(
            "outsider",
            json!({ "bsn": fx.people.child, "purpose": "coordinating_care" }),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // Unauthenticated, not audited.
    let (status, headers, bytes) = fx
        .call_raw(Method::GET, "/metrics", None, None, &[], false)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/openmetrics-text"))
    );
    let text = String::from_utf8(bytes).expect("utf-8");
    use crate::metrics::names;
    for name in [
        names::LOOKUPS_TOTAL,
        names::LOOKUP_DURATION_SECONDS,
        names::AUDIT_WRITES_TOTAL,
        names::AUDIT_WRITE_DURATION_SECONDS,
        names::HTTP_REQUESTS_TOTAL,
        names::HTTP_REQUEST_DURATION_SECONDS,
        names::SOURCE_STALE,
        names::SOURCE_LAST_SUCCESS_TIMESTAMP_SECONDS,
        names::QUARANTINE_ENTRIES,
        names::INDEX_ROWS,
        names::BUILD_INFO,
    ] {
        assert!(text.contains(name), "{name} missing from /metrics:\n{text}");
    }
    // Counted from the store on the scrape: the fixture's source has active rows.
    assert!(
        text.lines().any(|l| l
            .starts_with("matchpoint_index_rows{source=\"okc-2\",status=\"active\",key_id=")
            && !l.ends_with(" 0")),
        "{text}"
    );
    assert!(
        text.contains("matchpoint_quarantine_entries{source=\"okc-2\"}"),
        "{text}"
    );
    assert!(text.contains("matchpoint_lookups_total{outcome=\"found\"}"));
    assert!(text.contains("matchpoint_lookups_total{outcome=\"denied\"}"));
    assert!(text.contains("route=\"/api/v1/lookups\",method=\"POST\",status_class=\"4xx\""));
    assert!(text.contains("matchpoint_source_stale{source=\"okc-2\"} 0"));
    // No identities: no nine-digit number, no pseudonym-like hex, no user names or tokens.
    assert_eq!(
        has_run(&text, 9..=9, |c| c.is_ascii_digit()),
        None,
        "{text}"
    );
    assert_eq!(
        has_run(&text, 16..=usize::MAX, |c| c.is_ascii_hexdigit()),
        None,
        "{text}"
    );
    for bsn in sent_bsns().lock().expect("lock").iter() {
        assert!(!text.contains(bsn.as_str()));
    }
    for (who, token) in &fx.tokens {
        assert!(!text.contains(&format!("Test {who}")));
        assert!(!text.contains(token.as_str()));
    }
    assert!(!text.contains("user"), "no user label or value: {text}");
}

#[tokio::test]
async fn readyz_and_lookups_flag_a_source_whose_last_success_is_old() {
    let fx = Fx::sqlite(24).await;
    let (status, v) = fx.call(Method::GET, "/readyz", None, None, false).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["sources"][0]["source"], "okc-2");
    assert_eq!(v["sources"][0]["stale"], false, "{v}");
    assert_eq!(v["stale_sources"], 0);
    let (_, v) = fx
        .lookup(
            "child_org",
            json!({ "bsn": fx.people.child, "purpose": "coordinating_care" }),
        )
        .await;
    assert_eq!(v["involvements"][0]["source_stale"], false, "{v}");

    // Last success three days ago (stale after 36 h by default).
    let old = (chrono::Utc::now() - chrono::Duration::days(3)).to_rfc3339();
    exec(
        &fx.url,
        &format!("UPDATE sources SET last_success_at = '{old}' WHERE name = 'okc-2'"),
    )
    .await;
    let (status, v) = fx.call(Method::GET, "/readyz", None, None, false).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "stale data does not make the service unready"
    );
    assert_eq!(v["sources"][0]["stale"], true, "{v}");
    assert_eq!(v["stale_sources"], 1);
    assert!(v["sources"][0]["age_secs"].as_i64().expect("age") >= 3 * 86_400 - 60);
    let (_, v) = fx
        .lookup(
            "child_org",
            json!({ "bsn": fx.people.child, "purpose": "coordinating_care" }),
        )
        .await;
    assert_eq!(v["involvements"][0]["source_stale"], true, "{v}");
}
