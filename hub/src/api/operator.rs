//! The operator's endpoints: sync runs, quarantine per source and the data-quality report,
//! and a manual run (`POST /api/v1/sync/runs`). No personal data; still audited (action
//! `operator_view`; a manual run's entry carries the check `trigger:run`).

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

/// Body of `POST /api/v1/sync/runs`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TriggerRequest {
    /// A configured source name.
    pub source: String,
    /// A full reconciliation (default: the source's own mode).
    #[serde(default)]
    pub full: bool,
}

/// What `serve` needs to start manual runs: the sync context, the configured sources and a
/// scheduler (for its lease holder id and lease renewal).
pub struct Trigger {
    /// Store, key, registry, cancellation flag.
    pub ctx: crate::sync::SyncContext,
    /// The configured sources.
    pub sources: Vec<crate::config::SourceConfig>,
    /// Lease holder and renewal.
    pub scheduler: crate::schedule::Scheduler<crate::schedule::SystemClock>,
}

/// `POST /api/v1/sync/runs {source, full?}` (operator, admin): takes the source's lease and
/// starts a run in the background. 202 when started (the run shows in `GET
/// /api/v1/sync/runs` and `matchpoint runs`), 409 when another instance holds the lease.
pub async fn trigger(
    State(state): State<AppState>,
    caller: Caller,
    body: Result<super::body::JsonBody<TriggerRequest>, ApiError>,
) -> Result<axum::response::Response, ApiError> {
    use axum::http::StatusCode;
    use axum::response::IntoResponse;
    caller
        .require_audited(&state, ROLES, AuditAction::OperatorView)
        .await?;
    let mut entry = caller.entry(AuditAction::OperatorView, AuditOutcome::Granted);
    entry
        .checks
        .extend(["role".to_owned(), "trigger:run".to_owned()]);
    let req = match body {
        Ok(super::body::JsonBody(r)) => r,
        Err(error) => {
            entry.outcome = AuditOutcome::Invalid;
            state.record(entry).await?;
            return Err(error);
        }
    };
    let Some(trigger) = state.trigger() else {
        entry.outcome = AuditOutcome::Error;
        state.record(entry).await?;
        return Err(ApiError::BadRequest(
            "manual runs are not available in this process (started without the sync context)."
                .into(),
        ));
    };
    let Some(source) = trigger
        .sources
        .iter()
        .find(|s| s.name == req.source)
        .cloned()
    else {
        entry.outcome = AuditOutcome::Invalid;
        state.record(entry).await?;
        let names: Vec<&str> = trigger.sources.iter().map(|s| s.name.as_str()).collect();
        return Err(ApiError::BadRequest(format!(
            "source must be one of the configured sources: {}.",
            names.join(", ")
        )));
    };
    let now = chrono::Utc::now();
    let lease = state
        .store()
        .try_lease(
            &source.name,
            trigger.scheduler.holder(),
            now,
            now + trigger.scheduler.lease(),
        )
        .await;
    match lease {
        Err(error) => {
            tracing::error!(%error, "Taking the source lease failed.");
            entry.outcome = AuditOutcome::Error;
            state.record(entry).await?;
            Err(ApiError::Internal)
        }
        Ok(crate::store::LeaseOutcome::HeldBy { holder, expires_at }) => {
            entry.outcome = AuditOutcome::Refused;
            entry.checks.push("lease:held".to_owned());
            state.record(entry).await?;
            Ok((
                StatusCode::CONFLICT,
                Json(serde_json::json!({
                    "error": "lease_held",
                    "message": "another instance is running this source; see GET /api/v1/sync/runs",
                    "holder": holder,
                    "lease_until": expires_at,
                })),
            )
                .into_response())
        }
        Ok(crate::store::LeaseOutcome::Acquired) => {
            if let Err(error) = state.record(entry).await {
                // Fail-closed: nothing starts without its audit entry.
                let _ = state
                    .store()
                    .release_lease(&source.name, trigger.scheduler.holder())
                    .await;
                return Err(error);
            }
            let full = req.full;
            let mode = crate::sync::run_mode(&source, full);
            let run = match state.store().begin_run(&source.name, mode).await {
                Ok(run) => run,
                Err(error) => {
                    tracing::error!(%error, "Beginning a manual run failed.");
                    let _ = state
                        .store()
                        .release_lease(&source.name, trigger.scheduler.holder())
                        .await;
                    return Err(ApiError::Internal);
                }
            };
            let name = source.name.clone();
            let task = trigger.clone();
            tokio::spawn(async move {
                let runner = Begun {
                    ctx: &task.ctx,
                    run,
                };
                if let Err(error) = task.scheduler.run_holding(&source, full, &runner).await {
                    tracing::error!(source = %source.name, run_id = run, %error, "Manual run failed.");
                }
            });
            Ok((
                StatusCode::ACCEPTED,
                Json(serde_json::json!({
                    "status": "started",
                    "run_id": run,
                    "source": name,
                    "mode": mode.as_str(),
                })),
            )
                .into_response())
        }
    }
}

/// Runs a run begun by the handler (its id already answered).
struct Begun<'a> {
    ctx: &'a crate::sync::SyncContext,
    run: crate::store::RunId,
}

impl crate::schedule::RunSource for Begun<'_> {
    async fn run(
        &self,
        source: &crate::config::SourceConfig,
        full: bool,
    ) -> Result<RunRecord, crate::sync::SyncError> {
        crate::sync::sync_begun(
            self.ctx,
            source,
            self.run,
            full,
            std::sync::Arc::new(crate::sync::Progress::default()),
        )
        .await
    }
}
