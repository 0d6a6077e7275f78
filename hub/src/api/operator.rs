//! The operator's endpoints: sync runs, quarantine per source and the data-quality report.
//! No personal data; still audited (action `operator_view`).

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use serde::{Deserialize, Serialize};

use super::auth::Caller;
use super::{ApiError, AppState};
use crate::audit::{AuditAction, AuditOutcome};
use crate::store::lookup::QualityRow;
use crate::store::{QuarantineFilter, QuarantineRecord, RunRecord};
use crate::users::Role;

const ROLES: &[Role] = &[Role::Operator, Role::Admin];

/// Query parameters of the operator listings.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Only this source.
    pub source: Option<String>,
    /// Only this run (quarantine).
    pub run: Option<i64>,
    /// Most rows (default 100, at most 1000).
    pub limit: Option<u64>,
}

/// One run's data quality with shares of read records.
#[derive(Debug, Serialize)]
pub struct QualityView {
    /// The counts.
    #[serde(flatten)]
    pub counts: QualityRow,
    /// Share of read records with a BSN failing the elfproef.
    pub invalid_bsn_share: f64,
    /// Share of read records without a contact person.
    pub missing_contact_share: f64,
    /// Share of read records with an unknown code.
    pub unknown_code_share: f64,
}

async fn begin(
    state: &AppState,
    caller: &Caller,
    what: &str,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<ListQuery, ApiError> {
    caller
        .require_audited(state, ROLES, AuditAction::OperatorView)
        .await?;
    let mut entry = caller.entry(AuditAction::OperatorView, AuditOutcome::Granted);
    entry
        .checks
        .extend(["role".to_owned(), format!("view:{what}")]);
    let q = query
        .map(|Query(q)| q)
        .map_err(|_| {
            ApiError::BadRequest(
                "Query parameters: source (text), run (integer), limit (1-1000).".into(),
            )
        })
        .and_then(|q| match q.limit {
            Some(0) | Some(1001..) => Err(ApiError::BadRequest("limit must be 1-1000.".into())),
            _ => Ok(q),
        });
    if q.is_err() {
        entry.outcome = AuditOutcome::Invalid;
    }
    state.record(entry).await?;
    q
}

/// `GET /api/v1/sync/runs`.
pub async fn runs(
    State(state): State<AppState>,
    caller: Caller,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<Vec<RunRecord>>, ApiError> {
    let q = begin(&state, &caller, "runs", query).await?;
    Ok(Json(
        state
            .store()
            .runs(q.source.as_deref(), q.limit.unwrap_or(100))
            .await?,
    ))
}

/// `GET /api/v1/sync/quarantine`.
pub async fn quarantine(
    State(state): State<AppState>,
    caller: Caller,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<Vec<QuarantineRecord>>, ApiError> {
    let q = begin(&state, &caller, "quarantine", query).await?;
    let filter = QuarantineFilter {
        source: q.source,
        run: q.run,
        include_resolved: false,
        limit: q.limit.unwrap_or(100),
    };
    Ok(Json(state.store().quarantine(&filter).await?))
}

/// `GET /api/v1/sync/quality`: per run, the share of records with an invalid BSN, a missing
/// contact person (a `missing_field` rejection of a field whose path names a contact) or an
/// unknown code.
pub async fn quality(
    State(state): State<AppState>,
    caller: Caller,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<Vec<QualityView>>, ApiError> {
    let q = begin(&state, &caller, "quality", query).await?;
    let rows = state
        .store()
        .data_quality(q.source.as_deref(), q.limit.unwrap_or(100))
        .await?;
    Ok(Json(
        rows.into_iter()
            .map(|r| {
                let share = |n: u64| {
                    if r.read == 0 {
                        0.0
                    } else {
                        n as f64 / r.read as f64
                    }
                };
                QualityView {
                    invalid_bsn_share: share(r.invalid_bsn),
                    missing_contact_share: share(r.missing_contact),
                    unknown_code_share: share(r.unknown_code),
                    counts: r,
                }
            })
            .collect(),
    ))
}
