//! The privacy officer's endpoints: audit search, the break-glass review queue and reviews,
//! subject access reports (JSON or CSV) and chain verification. Each is itself audited, before
//! the response, fail-closed.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use matchpoint_schemas::Bsn;
use serde::{Deserialize, Serialize};

use super::auth::Caller;
use super::body::JsonBody;
use super::lookup::looks_like_bsn;
use super::{ApiError, AppState};
use crate::audit::{
    AuditAction, AuditEntry, AuditError, AuditFilter, AuditOutcome, AuditPage, Checkpoint,
    MAX_PAGE, PageRequest,
};
use crate::users::Role;

const ROLES: &[Role] = &[Role::PrivacyOfficer];

/// Review verdict codes: (code, meaning).
pub const VERDICTS: &[(&str, &str)] = &[
    ("justified", "the break-the-glass access was justified"),
    (
        "unjustified",
        "the access was not justified; follow-up with the organisation",
    ),
    (
        "needs_follow_up",
        "more information is needed from the professional",
    ),
];

/// Most accesses listed in one subject access report.
pub const MAX_REPORT_ENTRIES: usize = 10_000;

/// `POST /api/v1/audit/search` body: every given field must match.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchRequest {
    /// Acting user id.
    pub user_id: Option<i64>,
    /// Acting user's organisation code.
    pub organisation: Option<String>,
    /// The person's BSN: turned into the audit pseudonym, never stored or echoed.
    pub bsn: Option<String>,
    /// From (inclusive), RFC 3339.
    pub from: Option<DateTime<Utc>>,
    /// To (exclusive), RFC 3339.
    pub to: Option<DateTime<Utc>>,
    /// Outcome code.
    pub outcome: Option<AuditOutcome>,
    /// Action code.
    pub action: Option<AuditAction>,
    /// Cursor: `next_before` of the previous page.
    pub before: Option<i64>,
    /// Page size (1..=1000, default 100).
    pub limit: Option<u32>,
}

/// Paging in a query string.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    /// Cursor.
    pub before: Option<i64>,
    /// Page size.
    pub limit: Option<u32>,
}

/// `POST …/reviews` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReviewRequest {
    /// One of [`VERDICTS`].
    pub verdict: String,
    /// A short note without any BSN.
    pub note: String,
}

/// `POST /api/v1/audit/subject-access` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubjectAccessRequest {
    /// The person's BSN.
    pub bsn: String,
}

/// An organisation holding involvements with the person.
#[derive(Debug, Serialize)]
pub struct HeldBy {
    /// Registry code.
    pub organisation_code: String,
    /// Name.
    pub organisation_name: String,
    /// Life domains of its involvements.
    pub life_domains: Vec<String>,
    /// Statuses of its involvements.
    pub statuses: Vec<String>,
}

/// One access in a subject access report.
#[derive(Debug, Serialize)]
pub struct Access {
    /// When.
    pub at: DateTime<Utc>,
    /// Organisation of the user.
    pub organisation: Option<String>,
    /// Role of the user.
    pub role: String,
    /// Stated purpose.
    pub purpose: Option<String>,
    /// Action.
    pub action: AuditAction,
    /// Outcome.
    pub outcome: AuditOutcome,
    /// Through break-the-glass.
    pub break_glass: bool,
}

/// The subject access report.
#[derive(Debug, Serialize)]
pub struct SubjectAccessReport {
    /// Organisations with involvements in the index.
    pub organisations: Vec<HeldBy>,
    /// Every access to the person's data, newest first.
    pub accesses: Vec<Access>,
    /// True when more than [`MAX_REPORT_ENTRIES`] accesses exist and the list is cut.
    pub truncated: bool,
}

fn page(before: Option<i64>, limit: Option<u32>) -> Result<PageRequest, ApiError> {
    let limit = limit.unwrap_or(100);
    if limit == 0 || limit > MAX_PAGE {
        return Err(ApiError::BadRequest(format!(
            "limit must be between 1 and {MAX_PAGE}."
        )));
    }
    Ok(PageRequest { before, limit })
}

fn audit_failed(error: crate::audit::AuditError) -> ApiError {
    tracing::error!(%error, "Audit trail query failed.");
    ApiError::Internal
}

fn parse_bsn(text: &str) -> Result<Bsn, ApiError> {
    Bsn::parse(text).map_err(|e| ApiError::BadRequest(super::lookup::bsn_message(e)))
}

/// `POST /api/v1/audit/search`.
pub async fn search(
    State(state): State<AppState>,
    caller: Caller,
    body: Result<JsonBody<SearchRequest>, ApiError>,
) -> Result<Json<AuditPage>, ApiError> {
    caller
        .require_audited(&state, ROLES, AuditAction::AuditSearch)
        .await?;
    let mut entry = caller.entry(AuditAction::AuditSearch, AuditOutcome::Granted);
    entry.checks.push("role".to_owned());
    let prepared = (|| {
        let JsonBody(req) = body?;
        // The active version's subject for this request's own entry; every loaded audit
        // version's for the search (entries from before an audit rotation).
        let subject = match &req.bsn {
            Some(b) => {
                let bsn = parse_bsn(b)?;
                Some((state.audit().subject(&bsn), state.audit().subjects(&bsn)))
            }
            None => None,
        };
        Ok::<_, ApiError>((req, subject))
    })();
    let (req, subject) = match prepared {
        Ok(p) => p,
        Err(error) => {
            entry.outcome = AuditOutcome::Invalid;
            state.record(entry).await?;
            return Err(error);
        }
    };
    let paging = page(req.before, req.limit);
    if let Some(((s, k), _)) = &subject {
        entry.subject = Some(s.clone());
        entry.subject_key_id = Some(k.clone());
    }
    let paging = match paging {
        Ok(p) => p,
        Err(error) => {
            entry.outcome = AuditOutcome::Invalid;
            state.record(entry).await?;
            return Err(error);
        }
    };
    let filter = AuditFilter {
        user_id: req.user_id,
        organisation: req.organisation,
        subject: None,
        subjects: subject.map(|(_, all)| all).unwrap_or_default(),
        from: req.from,
        to: req.to,
        outcome: req.outcome,
        action: req.action,
    };
    let found = state.audit().search(&filter, paging).await;
    let found = match found {
        Ok(f) => f,
        Err(error) => {
            entry.outcome = AuditOutcome::Error;
            state.record(entry).await?;
            return Err(audit_failed(error));
        }
    };
    entry.records_returned = u32::try_from(found.entries.len()).unwrap_or(u32::MAX);
    state.record(entry).await?;
    Ok(Json(found))
}

/// `GET /api/v1/audit/break-glass`: break-glass lookups not reviewed yet.
pub async fn break_glass_queue(
    State(state): State<AppState>,
    caller: Caller,
    query: Result<Query<PageQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<AuditPage>, ApiError> {
    caller
        .require_audited(&state, ROLES, AuditAction::AuditSearch)
        .await?;
    let mut entry = caller.entry(AuditAction::AuditSearch, AuditOutcome::Granted);
    entry
        .checks
        .extend(["role".to_owned(), "break_glass_queue".to_owned()]);
    let paging = query
        .map_err(|_| {
            ApiError::BadRequest("Query parameters: before (integer), limit (1-1000).".into())
        })
        .and_then(|Query(q)| page(q.before, q.limit));
    let paging = match paging {
        Ok(p) => p,
        Err(error) => {
            entry.outcome = AuditOutcome::Invalid;
            state.record(entry).await?;
            return Err(error);
        }
    };
    let found = match state.audit().break_glass_queue(paging).await {
        Ok(f) => f,
        Err(error) => {
            entry.outcome = AuditOutcome::Error;
            state.record(entry).await?;
            return Err(audit_failed(error));
        }
    };
    entry.records_returned = u32::try_from(found.entries.len()).unwrap_or(u32::MAX);
    state.record(entry).await?;
    Ok(Json(found))
}

/// `POST /api/v1/audit/break-glass/{seq}/reviews`: a verdict on one break-glass access, stored
/// as a new audit entry that refers to it (never an update).
pub async fn review(
    State(state): State<AppState>,
    caller: Caller,
    Path(seq): Path<i64>,
    body: Result<JsonBody<ReviewRequest>, ApiError>,
) -> Result<Response, ApiError> {
    caller
        .require_audited(&state, ROLES, AuditAction::BreakGlassReview)
        .await?;
    let mut invalid = caller.entry(AuditAction::BreakGlassReview, AuditOutcome::Invalid);
    invalid.checks.push("role".to_owned());
    invalid.refers_to = Some(seq);
    let checked = (|| {
        let JsonBody(req) = body?;
        if !VERDICTS.iter().any(|(c, _)| *c == req.verdict) {
            return Err(ApiError::BadRequest(format!(
                "verdict must be one of: {}.",
                VERDICTS
                    .iter()
                    .map(|(c, _)| *c)
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        let n = req.note.trim().chars().count();
        if n == 0 || n > 1000 || req.note.chars().any(char::is_control) {
            return Err(ApiError::BadRequest(
                "note must be 1-1000 characters without control characters.".into(),
            ));
        }
        if looks_like_bsn(&req.note) {
            return Err(ApiError::BadRequest(
                "note must not contain a BSN or any other number of 8 or more digits.".into(),
            ));
        }
        Ok(req)
    })();
    let req = match checked {
        Ok(r) => r,
        Err(error) => {
            state.record(invalid).await?;
            return Err(error);
        }
    };
    let reviewed = state.audit().entry(seq).await.map_err(audit_failed)?;
    let Some(reviewed) = reviewed.filter(|e| e.entry.action == AuditAction::BreakGlassLookup)
    else {
        state.record(invalid).await?;
        return Err(ApiError::BadRequest(format!(
            "Audit entry {seq} is not a break-the-glass lookup; see GET /api/v1/audit/break-glass."
        )));
    };
    let mut entry = caller
        .entry(AuditAction::BreakGlassReview, AuditOutcome::Granted)
        .into_review(seq, &req.verdict, req.note.trim());
    entry.checks.insert(1, "role".to_owned());
    entry.subject = reviewed.entry.subject.clone();
    entry.subject_key_id = reviewed.entry.subject_key_id.clone();
    let stored = state.audit().append(entry).await.map_err(|error| {
        tracing::error!(%error, "Audit entry could not be written; request refused.");
        ApiError::AuditUnavailable
    })?;
    Ok((StatusCode::CREATED, Json(stored)).into_response())
}

/// `POST /api/v1/audit/subject-access`: which organisations hold involvements with the person,
/// and every access to their data. JSON, or CSV with `Accept: text/csv`.
pub async fn subject_access(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: Result<JsonBody<SubjectAccessRequest>, ApiError>,
) -> Result<Response, ApiError> {
    caller
        .require_audited(&state, ROLES, AuditAction::SubjectAccessReport)
        .await?;
    let mut entry = caller.entry(AuditAction::SubjectAccessReport, AuditOutcome::Granted);
    entry.checks.push("role".to_owned());
    let bsn = match body.and_then(|JsonBody(r)| parse_bsn(&r.bsn)) {
        Ok(b) => b,
        Err(error) => {
            entry.outcome = AuditOutcome::Invalid;
            state.record(entry).await?;
            return Err(error);
        }
    };
    let (subject, key_id) = state.audit().subject(&bsn);
    // Under every loaded audit key version (entries written before an audit rotation).
    let subjects = state.audit().subjects(&bsn);
    // Under every loaded key version (rows of sources not yet re-keyed).
    let persons = state.index_pseudonyms(&bsn);
    drop(bsn);
    entry.subject = Some(subject.clone());
    entry.subject_key_id = Some(key_id);
    let rows = state.store().person_involvements(persons).await?;
    let mut held: BTreeMap<String, HeldBy> = BTreeMap::new();
    for r in rows {
        let h = held
            .entry(r.organisation_code.clone())
            .or_insert_with(|| HeldBy {
                organisation_code: r.organisation_code.clone(),
                organisation_name: r.organisation_name.clone(),
                life_domains: Vec::new(),
                statuses: Vec::new(),
            });
        if !h.life_domains.contains(&r.life_domain) {
            h.life_domains.push(r.life_domain);
        }
        if !h.statuses.contains(&r.status) {
            h.statuses.push(r.status);
        }
    }
    let mut accesses: Vec<AuditEntry> = Vec::new();
    let mut before = None;
    let mut truncated = false;
    loop {
        let found = state
            .audit()
            .subject_access(
                &subjects,
                PageRequest {
                    before,
                    limit: MAX_PAGE,
                },
            )
            .await;
        let found = match found {
            Ok(f) => f,
            Err(error) => {
                entry.outcome = AuditOutcome::Error;
                state.record(entry).await?;
                return Err(audit_failed(error));
            }
        };
        accesses.extend(found.entries);
        if accesses.len() >= MAX_REPORT_ENTRIES {
            truncated = found.next_before.is_some() || accesses.len() > MAX_REPORT_ENTRIES;
            accesses.truncate(MAX_REPORT_ENTRIES);
            break;
        }
        match found.next_before {
            Some(b) => before = Some(b),
            None => break,
        }
    }
    let report = SubjectAccessReport {
        organisations: held.into_values().collect(),
        accesses: accesses
            .into_iter()
            .map(|e| Access {
                at: e.at,
                organisation: e.entry.organisation,
                role: e.entry.role,
                purpose: e.entry.purpose,
                break_glass: matches!(e.entry.action, AuditAction::BreakGlassLookup)
                    || e.entry.outcome == AuditOutcome::BreakGlass,
                action: e.entry.action,
                outcome: e.entry.outcome,
            })
            .collect(),
        truncated,
    };
    entry.records_returned = u32::try_from(report.accesses.len()).unwrap_or(u32::MAX);
    let csv = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/csv"));
    if csv {
        entry.checks.push("format:csv".to_owned());
    }
    state.record(entry).await?;
    if csv {
        Ok((
            [(header::CONTENT_TYPE, "text/csv; charset=utf-8")],
            report_csv(&report),
        )
            .into_response())
    } else {
        Ok(Json(report).into_response())
    }
}

/// A CSV cell, safe against formula injection: a cell starting with `=`, `+`, `-`, `@`, tab
/// or carriage return gets a leading `'`; cells with separators or quotes are quoted.
pub fn csv_cell(text: &str) -> String {
    let mut s = String::with_capacity(text.len() + 3);
    if text.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        s.push('\'');
    }
    s.push_str(text);
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

/// The report as CSV: one section per part, each with its header line.
pub fn report_csv(report: &SubjectAccessReport) -> String {
    let mut out = String::from(
        "section,organisation,name_or_role,life_domains_or_purpose,statuses_or_action,outcome,break_glass,at\n",
    );
    for h in &report.organisations {
        let row = [
            "holds_involvements".to_owned(),
            h.organisation_code.clone(),
            h.organisation_name.clone(),
            h.life_domains.join(" "),
            h.statuses.join(" "),
            String::new(),
            String::new(),
            String::new(),
        ];
        push_row(&mut out, &row);
    }
    for a in &report.accesses {
        let row = [
            "access".to_owned(),
            a.organisation.clone().unwrap_or_default(),
            a.role.clone(),
            a.purpose.clone().unwrap_or_default(),
            a.action.as_str().to_owned(),
            a.outcome.as_str().to_owned(),
            a.break_glass.to_string(),
            a.at.to_rfc3339(),
        ];
        push_row(&mut out, &row);
    }
    out
}

fn push_row(out: &mut String, cells: &[String]) {
    let line: Vec<String> = cells.iter().map(|c| csv_cell(c)).collect();
    out.push_str(&line.join(","));
    out.push('\n');
}

/// `POST /api/v1/audit/verify` body: a checkpoint line from `matchpoint audit checkpoint`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifyRequest {
    /// The checkpoint (one JSON line) kept outside the database.
    pub checkpoint: String,
}

/// `GET /api/v1/audit/verify`: recomputes the chain and names the first damaged entry.
pub async fn verify(State(state): State<AppState>, caller: Caller) -> Result<Response, ApiError> {
    verify_with(state, caller, None).await
}

/// `POST /api/v1/audit/verify`: the same against a checkpoint kept outside the database, so a
/// truncated tail or a rewritten chain is found too.
pub async fn verify_checkpoint(
    State(state): State<AppState>,
    caller: Caller,
    body: Result<JsonBody<VerifyRequest>, ApiError>,
) -> Result<Response, ApiError> {
    verify_with(state, caller, Some(body)).await
}

async fn verify_with(
    state: AppState,
    caller: Caller,
    body: Option<Result<JsonBody<VerifyRequest>, ApiError>>,
) -> Result<Response, ApiError> {
    caller
        .require_audited(&state, ROLES, AuditAction::AuditVerify)
        .await?;
    let mut entry = caller.entry(AuditAction::AuditVerify, AuditOutcome::Granted);
    entry.checks.push("role".to_owned());
    let checkpoint = match body {
        None => None,
        Some(body) => {
            let parsed = body.and_then(|JsonBody(r)| {
                Checkpoint::parse(&r.checkpoint).map_err(|e| {
                    ApiError::BadRequest(format!(
                        "checkpoint: {e} (use a line printed by `matchpoint audit checkpoint`)"
                    ))
                })
            });
            match parsed {
                Ok(cp) => {
                    entry.checks.push("checkpoint".to_owned());
                    Some(cp)
                }
                Err(error) => {
                    entry.outcome = AuditOutcome::Invalid;
                    state.record(entry).await?;
                    return Err(error);
                }
            }
        }
    };
    let report = match state.audit().verify(checkpoint.as_ref()).await {
        Ok(r) => r,
        Err(
            error @ (AuditError::CheckpointSignature
            | AuditError::CheckpointKey { .. }
            | AuditError::Checkpoint(_)),
        ) => {
            entry.outcome = AuditOutcome::Invalid;
            state.record(entry).await?;
            return Err(ApiError::BadRequest(format!("checkpoint: {error}")));
        }
        Err(error) => {
            entry.outcome = AuditOutcome::Error;
            state.record(entry).await?;
            return Err(audit_failed(error));
        }
    };
    entry
        .checks
        .push(format!("chain:{}", if report.ok { "ok" } else { "failed" }));
    state.record(entry).await?;
    Ok(Json(report).into_response())
}
