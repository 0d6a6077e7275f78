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
    /// Runs started here and not finished yet (awaited by [`Trigger::shutdown`]).
    pub in_flight: InFlight,
}

/// The background runs of a [`Trigger`]: their tasks and, per run, its source.
#[derive(Default)]
pub struct InFlight {
    tasks: std::sync::Mutex<tokio::task::JoinSet<()>>,
    runs: std::sync::Mutex<std::collections::BTreeMap<crate::store::RunId, String>>,
}

impl InFlight {
    fn insert(&self, run: crate::store::RunId, source: &str) {
        if let Ok(mut runs) = self.runs.lock() {
            runs.insert(run, source.to_owned());
        }
    }

    fn remove(&self, run: crate::store::RunId) {
        if let Ok(mut runs) = self.runs.lock() {
            runs.remove(&run);
        }
    }

    /// Runs started here and still going.
    pub fn runs(&self) -> Vec<(crate::store::RunId, String)> {
        self.runs
            .lock()
            .map(|r| r.iter().map(|(k, v)| (*k, v.clone())).collect())
            .unwrap_or_default()
    }
}

/// What [`Trigger::shutdown`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Runs that stopped within the grace period (cancelled, or finished just before).
    pub stopped: usize,
    /// Runs still going at the end of the grace period: recorded as failed, lease released.
    pub abandoned: Vec<crate::store::RunId>,
}

impl Trigger {
    /// Stops the manual runs of this process (`serve` calls it on Ctrl-C/SIGTERM, after the
    /// listener stopped): sets the sync context's cancel flag — a cancelled run publishes
    /// nothing, is recorded as failed with the reason and releases its lease — and waits up to
    /// `grace` for the runs to end. A run still going then is abandoned: its task is aborted,
    /// the run recorded as failed (the index stays at its last publication) and its lease
    /// released, so the next instance need not wait for the lease to expire.
    pub async fn shutdown(&self, grace: std::time::Duration) -> ShutdownReport {
        use std::sync::atomic::Ordering;
        self.ctx.cancel.store(true, Ordering::SeqCst);
        let mut tasks = match self.in_flight.tasks.lock() {
            Ok(mut t) => std::mem::take(&mut *t),
            Err(_) => tokio::task::JoinSet::new(),
        };
        let before = self.in_flight.runs().len();
        if before > 0 {
            tracing::info!(
                runs = before,
                grace_secs = grace.as_secs(),
                "Waiting for cancelled sync runs to stop."
            );
        }
        let all_stopped =
            tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} })
                .await
                .is_ok();
        let mut report = ShutdownReport::default();
        if !all_stopped {
            tasks.abort_all();
            for (run, source) in self.in_flight.runs() {
                let reason = format!(
                    "cancelled (shutdown): the run did not stop within the {} s grace period \
                     ([server] shutdown_grace_secs); nothing was published",
                    grace.as_secs()
                );
                tracing::warn!(source = %source, run_id = run, "A sync run did not stop within the shutdown grace period; recorded as failed.");
                if let Err(error) = self.ctx.store.fail_run(run, 0, &reason).await {
                    tracing::error!(%error, run_id = run, "Recording the abandoned run failed.");
                }
                if let Err(error) = self
                    .ctx
                    .store
                    .release_lease(&source, self.scheduler.holder())
                    .await
                {
                    tracing::warn!(%error, source = %source, "Releasing the source lease failed; it expires by itself.");
                }
                self.in_flight.remove(run);
                report.abandoned.push(run);
            }
        }
        report.stopped = before - report.abandoned.len().min(before);
        report
    }
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
            trigger.in_flight.insert(run, &name);
            // Only whether it worked: a poisoned lock's guard must not live across an await.
            let spawned = match trigger.in_flight.tasks.lock() {
                Ok(mut tasks) => {
                    tasks.spawn(async move {
                        let runner = Begun {
                            ctx: &task.ctx,
                            run,
                        };
                        let result = task.scheduler.run_holding(&source, full, &runner).await;
                        if let Err(error) = result {
                            tracing::error!(
                                source = %source.name, run_id = run, %error,
                                "Manual run failed."
                            );
                        }
                        task.in_flight.remove(run);
                    });
                    // Reap finished tasks so the set does not grow with every run.
                    while tasks.try_join_next().is_some() {}
                    true
                }
                Err(_) => false,
            };
            if !spawned {
                trigger.in_flight.remove(run);
                let _ = state
                    .store()
                    .fail_run(run, 0, "internal: the run could not be started")
                    .await;
                let _ = state
                    .store()
                    .release_lease(&name, trigger.scheduler.holder())
                    .await;
                return Err(ApiError::Internal);
            }
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
