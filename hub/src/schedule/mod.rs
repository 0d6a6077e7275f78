//! The scheduler: when each source runs, no overlapping runs of one source (also across
//! instances), catch-up after downtime and source staleness. `docs/scheduling.md` is the
//! operator's version of this text.
//!
//! Everything here reads the time from an injected [`Clock`], so tests can walk through DST
//! nights and downtime without sleeping.
//!
//! # When a schedule fires
//!
//! A source's `schedule` is a six-field cron expression (`cron` crate, pinned) evaluated in
//! the configured time zone (default `Europe/Amsterdam`). We do not rely on the crate's DST
//! behaviour (it has changed between versions): [`CronSchedule`] lets the crate enumerate
//! *wall-clock* times only (as if in a zone without DST) and maps each to an instant with our
//! own rule:
//!
//! - a wall-clock time that does not exist (skipped in spring, e.g. 02:30 on the last Sunday
//!   of March) fires once, at the first valid time after it (03:00 CEST);
//! - a wall-clock time that exists twice (repeated in autumn, e.g. 02:30 on the last Sunday of
//!   October) fires once, at its first occurrence (02:30 CEST), not again an hour later;
//! - several wall-clock times mapping to one instant fire once.
//!
//! # When a source runs
//!
//! [`decide`] looks at the source's run history in the store ([`ScheduleHistory`]): a source
//! that never ran is due at once; otherwise it is due when a slot of its schedule lies after
//! the start of its latest run (any outcome, manual `matchpoint sync` runs included) and at
//! or before now. All slots missed during downtime are folded into one run (catch-up runs
//! once, not once per missed slot). An incremental source also has a `full_schedule` (weekly
//! by default) whose slots start a full reconciliation instead.
//!
//! # No overlapping runs
//!
//! Before a run the scheduler takes the source's lease in the database (`source_leases`: a
//! holder and an expiry, taken with one conditional upsert), renews it while the run lasts and
//! releases it after. Another instance on the same database finds the lease held, skips the
//! source and logs that it did. A crashed holder's lease expires after `lease_secs`.
//!
//! # Staleness
//!
//! [`is_stale`] / [`freshness`]: a source whose last successful run finished more than
//! `stale_after_hours` (default 36) ago, or that never succeeded, is stale. The API's
//! `/readyz`, the metrics and lookup answers call these.

mod cron_tz;
mod scheduler;
#[cfg(test)]
mod tests;

use std::sync::{Arc, Mutex};

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;

use crate::config::{Config, SourceMode};
pub use crate::store::ScheduleHistory;
use crate::store::{Store, StoreError};
pub use cron_tz::CronSchedule;
pub use scheduler::{
    Action, RETENTION_JOB, RunSource, Scheduler, SyncRunner, TickReport, holder_id,
};

/// Where the scheduler gets the time from.
pub trait Clock: Send + Sync {
    /// The current instant.
    fn now(&self) -> DateTime<Utc>;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that only moves when told to (tests, simulations). Clones share the time.
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<Mutex<DateTime<Utc>>>);

impl ManualClock {
    /// A clock standing at `at`.
    pub fn new(at: DateTime<Utc>) -> Self {
        ManualClock(Arc::new(Mutex::new(at)))
    }

    /// Sets the time.
    pub fn set(&self, at: DateTime<Utc>) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = at;
    }

    /// Moves the time forward by `by`.
    pub fn advance(&self, by: Duration) {
        let mut t = self.0.lock().unwrap_or_else(|p| p.into_inner());
        *t += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A schedule setting that cannot be used. Names the source and key.
#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    /// Not a cron expression the crate accepts.
    #[error(
        "{what}: `{expr}` is not a cron expression ({message}); expected six fields: sec min hour day month weekday"
    )]
    Cron {
        /// Which setting (`source okc-2 schedule`).
        what: String,
        /// The expression.
        expr: String,
        /// The parser's message.
        message: String,
    },
    /// Not an IANA time zone name.
    #[error("schedule.time_zone `{0}` is not an IANA time zone name, e.g. \"Europe/Amsterdam\"")]
    TimeZone(String),
}

/// When and how one source runs.
#[derive(Debug, Clone)]
pub struct SourcePlan {
    /// Source name.
    pub source: String,
    /// Whether every run of the source is full (full-mode source).
    pub full_mode: bool,
    /// The source's `schedule`.
    pub schedule: CronSchedule,
    /// Incremental sources: the full-reconciliation schedule.
    pub full_schedule: Option<CronSchedule>,
}

impl SourcePlan {
    /// The plans of every configured source.
    pub fn from_config(config: &Config) -> Result<Vec<SourcePlan>, ScheduleError> {
        let tz = cron_tz::parse_tz(&config.schedule.time_zone)?;
        config
            .sources
            .iter()
            .map(|s| {
                let full_mode = s.mode == SourceMode::Full;
                let schedule =
                    CronSchedule::parse(&s.schedule, tz, &format!("source {} schedule", s.name))?;
                let full_schedule = if full_mode {
                    None
                } else {
                    let expr = s
                        .full_schedule
                        .as_deref()
                        .unwrap_or(&config.schedule.full_schedule);
                    Some(CronSchedule::parse(
                        expr,
                        tz,
                        &format!("source {} full_schedule", s.name),
                    )?)
                };
                Ok(SourcePlan {
                    source: s.name.clone(),
                    full_mode,
                    schedule,
                    full_schedule,
                })
            })
            .collect()
    }
}

/// Why a source is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DueReason {
    /// The source has no run in the history yet.
    NeverRun,
    /// A slot of its `schedule` came (or was missed).
    Scheduled,
    /// A slot of its `full_schedule` came (or was missed): full reconciliation.
    FullReconciliation,
}

/// A run to start now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Decision {
    /// Full run (`sync --full`), else incremental.
    pub full: bool,
    /// The latest slot this run serves (now, for a source that never ran).
    pub slot: DateTime<Utc>,
    /// Earlier slots missed (downtime) that this one run also serves.
    pub missed: u64,
    /// Why.
    pub reason: DueReason,
}

/// Most slots counted when folding missed slots into one run (the count is informational).
const MAX_COUNTED_SLOTS: u64 = 10_000;

/// The latest slot in `(after, now]` and how many earlier ones lie there too, or `None`.
fn due_since(
    schedule: &CronSchedule,
    after: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Option<(DateTime<Utc>, u64)> {
    let mut latest = schedule.next_after(after).filter(|t| *t <= now)?;
    let mut missed = 0;
    while missed < MAX_COUNTED_SLOTS {
        match schedule.next_after(latest) {
            Some(t) if t <= now => {
                latest = t;
                missed += 1;
            }
            _ => break,
        }
    }
    Some((latest, missed))
}

/// Whether a source should run now, and how; pure (the history comes from the store).
pub fn decide(
    plan: &SourcePlan,
    history: &ScheduleHistory,
    now: DateTime<Utc>,
) -> Option<Decision> {
    let Some(last) = history.last_started else {
        return Some(Decision {
            full: plan.full_mode,
            slot: now,
            missed: 0,
            reason: DueReason::NeverRun,
        });
    };
    if let Some(full) = &plan.full_schedule {
        // The first full slot counts from the latest full run, or from the latest run of any
        // kind when there has been no full run yet.
        // (A full run also serves the regular schedule, never the other way round.)
        let since = history.last_full_started.unwrap_or(last);
        if let Some((slot, missed)) = due_since(full, since, now) {
            return Some(Decision {
                full: true,
                slot,
                missed,
                reason: DueReason::FullReconciliation,
            });
        }
    }
    due_since(&plan.schedule, last, now).map(|(slot, missed)| Decision {
        full: plan.full_mode,
        slot,
        missed,
        reason: DueReason::Scheduled,
    })
}

/// When the source will next be due after its history, if ever (now when never run).
pub fn next_due(
    plan: &SourcePlan,
    history: &ScheduleHistory,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let Some(last) = history.last_started else {
        return Some(now);
    };
    let regular = plan.schedule.next_after(last);
    let full = plan
        .full_schedule
        .as_ref()
        .and_then(|f| f.next_after(history.last_full_started.unwrap_or(last)));
    match (regular, full) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Whether a source whose last successful run finished at `last_success` is stale at `now`:
/// never succeeded, or longer ago than `stale_after`.
pub fn is_stale(
    last_success: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    stale_after: Duration,
) -> bool {
    match last_success {
        None => true,
        Some(t) => now - t > stale_after,
    }
}

/// How fresh one source's data is (for `/readyz`, metrics and lookup answers).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Freshness {
    /// Source name.
    pub source: String,
    /// When its last successful run finished.
    pub last_success_at: Option<DateTime<Utc>>,
    /// Seconds since then.
    pub age_secs: Option<i64>,
    /// Older than the configured `stale_after_hours`, or never succeeded.
    pub stale: bool,
}

/// The configured staleness limit.
pub fn stale_after(config: &Config) -> Duration {
    Duration::hours(i64::from(config.schedule.stale_after_hours))
}

/// Freshness of every configured source at `now`.
pub async fn freshness(
    store: &Store,
    config: &Config,
    now: DateTime<Utc>,
) -> Result<Vec<Freshness>, StoreError> {
    let limit = stale_after(config);
    let mut out = Vec::with_capacity(config.sources.len());
    for s in &config.sources {
        let h = store.schedule_history(&s.name).await?;
        out.push(Freshness {
            source: s.name.clone(),
            last_success_at: h.last_success_at,
            age_secs: h.last_success_at.map(|t| (now - t).num_seconds()),
            stale: is_stale(h.last_success_at, now, limit),
        });
    }
    Ok(out)
}
