//! The retention job: removes what may no longer be kept.
//!
//! - Involvements whose end date lies more than `[retention] involvement_months` (default 24)
//!   in the past, and those past their own `purge_after` date (set by the source's mapping,
//!   e.g. an age limit), with their relations, and the stored iWmo message logs
//!   (`source_state` kind `pair`) of the (provider, client pseudonym) pairs whose last
//!   involvements of the source they were: in the same transaction, so index and state stay
//!   in step (see `crate::sources::iwmo` for what a later run does with such a pair).
//! - Quarantine entries older than `quarantine_days` (their sealed raw copies expire earlier,
//!   on their own).
//! - Audit entries older than `audit_years` (default 5), only through the audit trail's
//!   privileged path ([`AuditLog::purge_before`]), which records a signed anchor, so that
//!   `matchpoint audit verify` still proves the remaining chain.
//!
//! Each (non-dry) run is recorded in the run history as source `__retention__`, mode
//! `retention` (see [`crate::store::RetentionCounts`] for which count is where). `matchpoint
//! retention [--dry-run]` runs it by hand; `--dry-run` counts the index, message-log and
//! quarantine rows it would remove (rolled back) and leaves the audit trail alone.

use chrono::{DateTime, Months, Utc};

use crate::audit::{AuditError, AuditLog};
use crate::config::RetentionSettings;
use crate::store::{RetentionCounts, RetentionCutoffs, Store, StoreError};

/// What can go wrong in a retention run.
#[derive(Debug, thiserror::Error)]
pub enum RetentionError {
    /// The index store failed; nothing of the index part was removed.
    #[error("retention in the index store failed: {0}")]
    Store(#[from] StoreError),
    /// The audit trail's purge failed (the index part was already purged).
    #[error("retention of the audit trail failed: {0}")]
    Audit(#[from] AuditError),
}

/// The cutoffs for `now` under `settings`.
pub fn cutoffs(settings: &RetentionSettings, now: DateTime<Utc>) -> RetentionCutoffs {
    let today = now.date_naive();
    RetentionCutoffs {
        ended_before: today
            .checked_sub_months(Months::new(settings.involvement_months))
            .unwrap_or(chrono::NaiveDate::MIN),
        today,
        quarantine_before: now - chrono::Duration::days(i64::from(settings.quarantine_days)),
    }
}

/// The audit cutoff for `now`: `audit_years` back.
pub fn audit_cutoff(settings: &RetentionSettings, now: DateTime<Utc>) -> DateTime<Utc> {
    now.checked_sub_months(Months::new(settings.audit_years.saturating_mul(12)))
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// Runs retention at `now`: index and quarantine, then (unless `dry_run`, and when an audit
/// trail is given) the audit trail; records the run. A failure is recorded too.
pub async fn run(
    store: &Store,
    audit: Option<&AuditLog>,
    settings: &RetentionSettings,
    now: DateTime<Utc>,
    dry_run: bool,
) -> Result<RetentionCounts, RetentionError> {
    let started = Utc::now();
    let result = async {
        let mut counts = store
            .purge_retention(cutoffs(settings, now), dry_run)
            .await?;
        if !dry_run && let Some(audit) = audit {
            counts.audit = audit
                .purge_before(audit_cutoff(settings, now))
                .await?
                .removed;
        }
        Ok::<_, RetentionError>(counts)
    }
    .await;
    if dry_run {
        return result;
    }
    match result {
        Ok(mut counts) => {
            counts.run = Some(store.record_retention_run(started, counts, None).await?);
            tracing::info!(
                involvements = counts.involvements,
                relations = counts.relations,
                quarantine = counts.quarantine,
                message_logs = counts.message_logs,
                audit = counts.audit,
                "Retention run done."
            );
            Ok(counts)
        }
        Err(err) => {
            let _ = store
                .record_retention_run(started, RetentionCounts::default(), Some(err.to_string()))
                .await;
            Err(err)
        }
    }
}

/// What the scheduled retention job did on one look.
#[derive(Debug)]
pub enum Scheduled {
    /// Not due yet.
    NotDue,
    /// Another instance holds the `__retention__` lease.
    Skipped {
        /// The other holder.
        holder: String,
    },
    /// Ran (the run is in the history, also when it failed).
    Ran(Result<RetentionCounts, RetentionError>),
}

/// The scheduled job (`matchpoint run`): when a slot of `[retention] schedule` (in
/// `time_zone`) lies after the last retention run's start (or after `since`, the scheduler's
/// start, when there is none: a first start never purges at once) and at or before `now`,
/// runs retention once under the `__retention__` lease (so several instances on one database
/// do not run it twice). Missed slots are caught up with one run.
#[allow(clippy::too_many_arguments)]
pub async fn run_if_due(
    store: &Store,
    audit: Option<&AuditLog>,
    settings: &RetentionSettings,
    time_zone: &str,
    holder: &str,
    lease: chrono::Duration,
    since: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<Scheduled, RetentionError> {
    let schedule = match crate::schedule::CronSchedule::parse_in(&settings.schedule, time_zone) {
        Ok(s) => s,
        // Checked when the configuration was loaded; an unusable schedule never runs.
        Err(_) => return Ok(Scheduled::NotDue),
    };
    let last = store
        .runs(Some(crate::store::RETENTION_SOURCE), 1)
        .await?
        .first()
        .map(|r| r.started_at)
        .unwrap_or(since);
    if schedule.next_after(last).is_none_or(|slot| slot > now) {
        return Ok(Scheduled::NotDue);
    }
    let job = crate::schedule::RETENTION_JOB;
    match store.try_lease(job, holder, now, now + lease).await? {
        crate::store::LeaseOutcome::HeldBy { holder, .. } => Ok(Scheduled::Skipped { holder }),
        crate::store::LeaseOutcome::Acquired => {
            let result = run(store, audit, settings, now, false).await;
            if let Err(e) = store.release_lease(job, holder).await {
                tracing::warn!(error = %e, "Releasing the retention lease failed; it expires on its own.");
            }
            Ok(Scheduled::Ran(result))
        }
    }
}

#[cfg(test)]
mod tests;
