//! Simulated okc-5: a FHIR R4 server (JSON) over the okc-5 feed
//! (`schemas/formats/fhir-r4.md`, resources rendered by [`crate::generate::fhir`]).
//!
//! - `GET /okc-5/fhir/metadata`: a minimal `CapabilityStatement`.
//! - `GET /okc-5/fhir/EpisodeOfCare?_count=N[&_lastUpdated=gtINSTANT][&_sort=_lastUpdated]
//!   [&_include=…][&_revinclude:iterate=RelatedPerson:patient][&_getpagesafter=ID]`
//!   with `Authorization: Bearer sandbox-okc-5`: a `searchset` Bundle of N episodes with the
//!   resources asked for by `_include` / `_revinclude` (deduplicated per page),
//!   `Bundle.total` of the whole search, `Bundle.meta.lastUpdated` the time of the current
//!   data generation, and an absolute `next` link (keyset paging on the episode id,
//!   `_getpagesafter`). Episodes are paged in id order; `_sort=_lastUpdated` is accepted
//!   (every episode of an incremental search is of the same few generations, and the
//!   connector's cursor does not depend on the order).
//! - Like a strict real server it answers problems with an `OperationOutcome`: 401 `login`
//!   without the token, 400 `invalid` (details `MSG_PARAM_INVALID`) for a bad `_count`
//!   (above 500) or `_lastUpdated` (only `gt` is supported), 400 `not-supported` for an
//!   unknown parameter or include.
//!
//! `meta.lastUpdated` of an episode is the time of the generation that last touched its
//! record, so `_lastUpdated=gt<cursor>` serves exactly what changed; the framework's
//! counters ([`Upstream::served`]: pages and matched episodes) let tests check that.
//! Malformed records (the `malformed` fault) are episodes without a patient reference.
//!
//! Simulator limit: next links carry the last id, not a search snapshot, so advancing the
//! data while a run pages on serves later pages from the new generation (real servers keep
//! the search result, e.g. HAPI's `_getpages`). Tests advance only between runs.

use std::collections::HashSet;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;
use serde_json::{Value, json};

use super::{Stamps, Upstream};
use crate::generate::fhir as render;

/// The service base path (the source's `location` is the server URL + this).
pub const PATH: &str = "/okc-5/fhir";
/// The token the sandbox accepts.
pub const TOKEN: &str = "sandbox-okc-5";
/// How a sync authenticates.
pub const AUTH_HINT: &str = "bearer token `sandbox-okc-5`";
/// Largest `_count` served (a larger one is refused, as real servers do).
pub const MAX_COUNT: usize = 500;
/// `_count` when none is given.
const DEFAULT_COUNT: usize = 50;

/// The includes this server supports, by parameter.
const INCLUDES: &[(&str, &str)] = &[
    ("_include", "EpisodeOfCare:patient"),
    ("_include", "EpisodeOfCare:organization"),
    ("_include", "EpisodeOfCare:care-manager"),
    ("_include", "EpisodeOfCare:team"),
    ("_include:iterate", "CareTeam:participant"),
    ("_include", "CareTeam:participant"),
    ("_revinclude:iterate", "RelatedPerson:patient"),
];

/// A response with an `OperationOutcome` body.
fn outcome(status: StatusCode, code: &str, details: Option<&str>, diagnostics: &str) -> Response {
    let mut issue = json!({ "severity": "error", "code": code, "diagnostics": diagnostics });
    if let Some(d) = details {
        issue["details"] = json!({ "coding": [{
            "system": "https://matchpoint.example/fhir/CodeSystem/sandbox-messages", "code": d }] });
    }
    fhir_json(
        status,
        &json!({ "resourceType": "OperationOutcome", "issue": [issue] }),
    )
}

fn fhir_json(status: StatusCode, body: &Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/fhir+json; charset=utf-8")],
        body.to_string(),
    )
        .into_response()
}

/// What one search asks for.
#[derive(Debug, Default)]
struct Search {
    count: usize,
    since: Option<String>,
    /// Keyset paging: the page starts after this episode id.
    after: Option<String>,
    patient: bool,
    organization: bool,
    care_manager: bool,
    team: bool,
    participant: bool,
    related: bool,
    /// The parameters to repeat in the next link (all but the offset).
    repeat: Vec<(String, String)>,
}

fn parse(params: &[(String, String)]) -> Result<Search, Box<Response>> {
    let bad =
        |d: &str, msg: String| Box::new(outcome(StatusCode::BAD_REQUEST, "invalid", Some(d), &msg));
    let mut s = Search {
        count: DEFAULT_COUNT,
        ..Search::default()
    };
    for (k, v) in params {
        match k.as_str() {
            "_count" => {
                s.count = v
                    .parse::<usize>()
                    .ok()
                    .filter(|c| (1..=MAX_COUNT).contains(c))
                    .ok_or_else(|| {
                        bad(
                            "MSG_PARAM_INVALID",
                            format!("_count must be 1..={MAX_COUNT}"),
                        )
                    })?;
            }
            "_lastUpdated" => {
                let instant = v.strip_prefix("gt").ok_or_else(|| {
                    bad(
                        "MSG_PARAM_INVALID",
                        "only _lastUpdated=gt<instant> is supported".into(),
                    )
                })?;
                if chrono::DateTime::parse_from_rfc3339(instant).is_err() {
                    return Err(bad(
                        "MSG_PARAM_INVALID",
                        "_lastUpdated needs an instant (RFC 3339 with time zone)".into(),
                    ));
                }
                s.since = Some(
                    chrono::DateTime::parse_from_rfc3339(instant)
                        .map(|t| {
                            t.with_timezone(&chrono::Utc)
                                .format("%Y-%m-%dT%H:%M:%SZ")
                                .to_string()
                        })
                        .unwrap_or_default(),
                );
            }
            "_sort" if v == "_lastUpdated" => {}
            "_getpagesafter" => {
                s.after = Some(v.clone());
                continue;
            }
            "_include" | "_include:iterate" | "_revinclude" | "_revinclude:iterate" => {
                if !INCLUDES.iter().any(|(p, i)| p == k && i == v) {
                    return Err(Box::new(outcome(
                        StatusCode::BAD_REQUEST,
                        "not-supported",
                        Some("MSG_INCLUDE_UNKNOWN"),
                        &format!("{k}={v} is not supported"),
                    )));
                }
                match v.as_str() {
                    "EpisodeOfCare:patient" => s.patient = true,
                    "EpisodeOfCare:organization" => s.organization = true,
                    "EpisodeOfCare:care-manager" => s.care_manager = true,
                    "EpisodeOfCare:team" => s.team = true,
                    "CareTeam:participant" => s.participant = true,
                    _ => s.related = true,
                }
            }
            _ => {
                return Err(Box::new(outcome(
                    StatusCode::BAD_REQUEST,
                    "not-supported",
                    Some("MSG_PARAM_UNKNOWN"),
                    &format!("unknown search parameter {k}"),
                )));
            }
        }
        s.repeat.push((k.clone(), v.clone()));
    }
    Ok(s)
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn url(root: &str, params: &[(String, String)], after: Option<&str>) -> String {
    let mut u = format!("{root}{PATH}/EpisodeOfCare?");
    let mut parts: Vec<String> = params
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect();
    if let Some(a) = after {
        parts.push(format!("_getpagesafter={}", encode(a)));
    }
    u.push_str(&parts.join("&"));
    u
}

async fn search(
    State(up): State<Arc<Upstream>>,
    headers: HeaderMap,
    Query(params): Query<Vec<(String, String)>>,
) -> Response {
    let authorised = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == format!("Bearer {TOKEN}"));
    if !authorised {
        return outcome(
            StatusCode::UNAUTHORIZED,
            "login",
            None,
            "a bearer token is required",
        );
    }
    let s = match parse(&params) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let key = up.seed;
    let generation = up.generation();
    // Counts the page as served.
    let slice = up.page(s.since.as_deref(), s.after.as_deref(), s.count);
    let page = slice.records.as_slice();
    let stamps = Stamps::of(&up.feed, page);
    let malformed = up.malformed_draw();

    let root = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(|h| format!("http://{h}"))
        .unwrap_or_default();
    let entry = |ty: &str, id: &str, resource, mode| Entry {
        full_url: format!("{root}{PATH}/{ty}/{id}"),
        resource,
        search: SearchMode { mode },
    };
    let mut entries = Vec::with_capacity(page.len() * 6);
    for r in page {
        let e = render::episode_out(key, r, stamps.get(r.touched), malformed.is(&r.id));
        entries.push(entry(
            "EpisodeOfCare",
            &r.id,
            Resource::Episode(Box::new(e)),
            "match",
        ));
    }
    // Included resources once per page, in the order of their first mention; the key is
    // known before the resource is rendered.
    let mut seen: HashSet<String> = HashSet::new();
    let mut first = |ty: &str, id: &str| seen.insert(format!("{ty}/{id}"));
    for r in page {
        let updated = stamps.get(r.touched);
        if s.patient {
            let patient = render::patient_id(key, &r.bsn);
            if first("Patient", &patient) {
                let p = render::patient_out(key, r, updated);
                entries.push(entry(
                    "Patient",
                    &patient,
                    Resource::Patient(Box::new(p)),
                    "include",
                ));
            }
            if s.related {
                for (bsn, kind) in &r.relations {
                    let id = render::related_person_id(&patient, &render::patient_id(key, bsn));
                    if first("RelatedPerson", &id) {
                        let full_url = format!("{root}{PATH}/RelatedPerson/{id}");
                        let rp = render::related_person_out(&patient, id, bsn, kind, updated);
                        entries.push(Entry {
                            full_url,
                            resource: Resource::RelatedPerson(Box::new(rp)),
                            search: SearchMode { mode: "include" },
                        });
                    }
                }
            }
        }
        if s.organization {
            let id = render::organization_id(&r.org);
            if first("Organization", &id) {
                let o = render::organization_out(&r.org);
                entries.push(entry(
                    "Organization",
                    &id,
                    Resource::Organization(Box::new(o)),
                    "include",
                ));
            }
        }
        if s.team {
            let id = render::care_team_id(&r.id);
            if first("CareTeam", &id) {
                let t = render::care_team_out(key, r, updated);
                entries.push(entry(
                    "CareTeam",
                    &id,
                    Resource::CareTeam(Box::new(t)),
                    "include",
                ));
            }
        }
        if ((s.care_manager && r.coordinator) || (s.team && s.participant))
            && let Some((_, _, _, email)) = &r.contact
        {
            let id = render::practitioner_id(key, email);
            if first("Practitioner", &id)
                && let Some(p) = render::practitioner_out(key, r)
            {
                entries.push(entry(
                    "Practitioner",
                    &id,
                    Resource::Practitioner(Box::new(p)),
                    "include",
                ));
            }
        }
    }
    let mut links = vec![Link {
        relation: "self",
        url: url(&root, &s.repeat, s.after.as_deref()),
    }];
    if slice.more
        && let Some(last) = page.last()
    {
        links.push(Link {
            relation: "next",
            url: url(&root, &s.repeat, Some(&last.id)),
        });
    }
    let updated = up.feed.timestamp(generation);
    let bundle = BundleOut {
        entry: entries,
        id: format!(
            "okc5-g{generation}-{}",
            s.after.as_deref().unwrap_or("first")
        ),
        link: links,
        meta: render::Meta {
            last_updated: &updated,
        },
        resource_type: "Bundle",
        total: slice.total,
        ty: "searchset",
    };
    match serde_json::to_vec(&bundle) {
        Ok(body) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/fhir+json; charset=utf-8")],
            body,
        )
            .into_response(),
        Err(e) => outcome(
            StatusCode::INTERNAL_SERVER_ERROR,
            "exception",
            None,
            &format!("cannot write the Bundle: {e}"),
        ),
    }
}

// The searchset Bundle as written: members in the order a `serde_json::Value` object
// writes them (sorted), the same bytes as rendering `Value`s (a test checks it).

/// One resource of a Bundle.
#[derive(Serialize)]
#[serde(untagged)]
enum Resource<'a> {
    Episode(Box<render::EpisodeOut<'a>>),
    Patient(Box<render::PatientOut<'a>>),
    RelatedPerson(Box<render::RelatedPersonOut<'a>>),
    Organization(Box<render::OrganizationOut<'a>>),
    CareTeam(Box<render::CareTeamOut<'a>>),
    Practitioner(Box<render::PractitionerOut<'a>>),
}

#[derive(Serialize)]
struct SearchMode {
    mode: &'static str,
}

#[derive(Serialize)]
struct Entry<'a> {
    #[serde(rename = "fullUrl")]
    full_url: String,
    resource: Resource<'a>,
    search: SearchMode,
}

#[derive(Serialize)]
struct Link {
    relation: &'static str,
    url: String,
}

#[derive(Serialize)]
struct BundleOut<'a> {
    entry: Vec<Entry<'a>>,
    id: String,
    link: Vec<Link>,
    meta: render::Meta<'a>,
    #[serde(rename = "resourceType")]
    resource_type: &'static str,
    total: usize,
    #[serde(rename = "type")]
    ty: &'static str,
}

async fn metadata() -> Response {
    let includes: Vec<&str> = INCLUDES
        .iter()
        .filter(|(p, _)| p.starts_with("_include"))
        .map(|(_, i)| *i)
        .collect();
    fhir_json(
        StatusCode::OK,
        &json!({
            "resourceType": "CapabilityStatement",
            "status": "active",
            "kind": "instance",
            "fhirVersion": "4.0.1",
            "format": ["application/fhir+json"],
            "rest": [{
                "mode": "server",
                "resource": [{
                    "type": "EpisodeOfCare",
                    "interaction": [{ "code": "search-type" }],
                    "searchInclude": includes,
                    "searchRevInclude": ["RelatedPerson:patient"],
                    "searchParam": [
                        { "name": "_lastUpdated", "type": "date" },
                        { "name": "team", "type": "reference",
                          "documentation": "EpisodeOfCare.team (Matchpoint profile)" }
                    ]
                }]
            }]
        }),
    )
}

/// The okc-5 router.
pub fn router(up: Arc<Upstream>) -> Router {
    Router::new()
        .route(&format!("{PATH}/EpisodeOfCare"), get(search))
        .route(&format!("{PATH}/metadata"), get(metadata))
        .with_state(up)
}

#[cfg(test)]
mod tests;
