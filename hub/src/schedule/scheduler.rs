//! One look at every schedule ([`Scheduler::tick`]): decide, take the lease, run, release.
//! The loop around it (sleeping, Ctrl-C) is `matchpoint run` (`cli/run.rs`).

use std::future::Future;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use tracing::{error, info, warn};

use super::{Clock, Decision, ScheduleError, SourcePlan, decide, is_stale, next_due};
use crate::config::{Config, SourceConfig};
use crate::store::{LeaseOutcome, RunRecord, Store, StoreError};
use crate::sync::{Progress, SyncContext, SyncError, sync_source};

/// Lease name reserved for the retention job (issue 5, part 2): when it lands, it is
/// scheduled like a source, under this lease, from `[retention] schedule`.
pub const RETENTION_JOB: &str = "__retention__";

/// What runs a source when it is due: the real sync ([`SyncRunner`]) in production.
pub trait RunSource {
    /// Runs one sync of `source` (`full`: a full reconciliation) and returns its record.
    fn run(
        &self,
        source: &SourceConfig,
        full: bool,
    ) -> impl Future<Output = Result<RunRecord, SyncError>>;
}

/// Runs sources with the sync pipeline (`sync::sync_source`).
pub struct SyncRunner<'a> {
    /// Store, key, registry and cancellation flag.
    pub ctx: &'a SyncContext,
}

impl RunSource for SyncRunner<'_> {
    async fn run(&self, source: &SourceConfig, full: bool) -> Result<RunRecord, SyncError> {
        sync_source(self.ctx, source, full, Arc::new(Progress::default())).await
    }
}

/// What a tick did with a due source.
#[derive(Debug, Clone)]
pub enum Action {
    /// The run happened (its record says whether it published).
    Ran(RunRecord),
    /// Another instance holds the source's lease; nothing was started here.
    Skipped {
        /// The lease's holder.
        holder: String,
        /// When its lease expires unless renewed.
        until: DateTime<Utc>,
    },
    /// By the time the lease was ours, another instance had already run it.
    AlreadyRun,
    /// The run could not be started or recorded.
    Failed(String),
}

/// One due source and what happened to it.
#[derive(Debug, Clone)]
pub struct TickReport {
    /// Source name.
    pub source: String,
    /// Why and how it was due.
    pub decision: Decision,
    /// What happened.
    pub action: Action,
}

/// One source as the scheduler sees it now (`matchpoint run --plan`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Outlook {
    /// Source name.
    pub source: String,
    /// Every run full (full-mode source).
    pub full_mode: bool,
    /// The `schedule` expression.
    pub schedule: String,
    /// The full-reconciliation expression (incremental sources).
    pub full_schedule: Option<String>,
    /// Start of the latest full or incremental run.
    pub last_started: Option<DateTime<Utc>>,
    /// When it is next due (now or earlier: due at the next look).
    pub next_due: Option<DateTime<Utc>>,
    /// End of the last successful run.
    pub last_success_at: Option<DateTime<Utc>>,
    /// Whether the source is stale now.
    pub stale: bool,
}

/// The scheduler of one process. Several may share one database: leases keep their runs of
/// one source apart.
pub struct Scheduler<C: Clock> {
    store: Store,
    clock: C,
    holder: String,
    lease: Duration,
    plans: Vec<SourcePlan>,
}

/// A lease holder id for this process: `host/pid/nonce` (no personal data).
pub fn holder_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| {
            h.trim()
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
                .take(64)
                .collect::<String>()
        })
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".into());
    format!(
        "{host}/{}/{:08x}",
        std::process::id(),
        rand::random::<u32>()
    )
}

/// Whether a lease holder id (`host/pid/nonce`) names a process of this host that no longer
/// exists (Linux: no `/proc/<pid>`). Conservative: `false` whenever unsure.
fn holder_is_dead_here(holder: &str) -> bool {
    let mine = holder_id();
    let (Some(my_host), mut parts) = (mine.split('/').next(), holder.split('/')) else {
        return false;
    };
    let (Some(host), Some(pid)) = (parts.next(), parts.next()) else {
        return false;
    };
    let Ok(pid) = pid.parse::<u32>() else {
        return false;
    };
    host == my_host
        && pid != std::process::id()
        && std::path::Path::new("/proc/self").exists()
        && !std::path::Path::new(&format!("/proc/{pid}")).exists()
}

impl<C: Clock> Scheduler<C> {
    /// A scheduler for every configured source.
    pub fn from_config(config: &Config, store: Store, clock: C) -> Result<Self, ScheduleError> {
        let lease = Duration::seconds(i64::try_from(config.schedule.lease_secs).unwrap_or(900));
        Ok(Scheduler {
            store,
            clock,
            holder: holder_id(),
            lease,
            plans: SourcePlan::from_config(config)?,
        })
    }

    /// Uses `holder` as this instance's lease holder id (tests name their instances).
    pub fn with_holder(mut self, holder: &str) -> Self {
        holder.clone_into(&mut self.holder);
        self
    }

    /// This instance's lease holder id.
    pub fn holder(&self) -> &str {
        &self.holder
    }

    /// The plans, one per source.
    pub fn plans(&self) -> &[SourcePlan] {
        &self.plans
    }

    /// The injected clock.
    pub fn clock(&self) -> &C {
        &self.clock
    }

    /// Looks at every source once and runs, one after another, those that are due.
    /// `sources` are the configured sources (looked up by name). Stops starting runs when
    /// `stop()` turns true.
    pub async fn tick<R: RunSource>(
        &self,
        sources: &[SourceConfig],
        runner: &R,
        stop: impl Fn() -> bool,
    ) -> Result<Vec<TickReport>, StoreError> {
        let mut reports = Vec::new();
        for plan in &self.plans {
            if stop() {
                break;
            }
            let Some(source) = sources.iter().find(|s| s.name == plan.source) else {
                continue;
            };
            let history = self.store.schedule_history(&plan.source).await?;
            let Some(decision) = decide(plan, &history, self.clock.now()) else {
                continue;
            };
            let action = self.run_leased(plan, source, runner).await?;
            reports.push(TickReport {
                source: plan.source.clone(),
                decision,
                action,
            });
        }
        Ok(reports)
    }

    /// Takes the lease, re-checks the decision, runs with the lease renewed, releases it.
    async fn run_leased<R: RunSource>(
        &self,
        plan: &SourcePlan,
        source: &SourceConfig,
        runner: &R,
    ) -> Result<Action, StoreError> {
        let name = plan.source.as_str();
        let now = self.clock.now();
        match self
            .store
            .try_lease(name, &self.holder, now, now + self.lease)
            .await?
        {
            LeaseOutcome::HeldBy { holder, expires_at } => {
                info!(
                    source = name,
                    holder = %holder,
                    until = %expires_at.to_rfc3339(),
                    "Source is due but another instance holds its lease; skipped here."
                );
                crate::metrics::global().scheduler_skipped(name, "lease_held");
                return Ok(Action::Skipped {
                    holder,
                    until: expires_at,
                });
            }
            LeaseOutcome::Acquired => crate::failpoint::hit("schedule:leased"),
        }
        // Another instance may have run it between our look and our lease.
        let history = match self.store.schedule_history(name).await {
            Ok(h) => h,
            Err(e) => {
                self.release(name).await;
                return Err(e);
            }
        };
        let Some(decision) = decide(plan, &history, self.clock.now()) else {
            info!(
                source = name,
                "Source was run by another instance meanwhile; skipped."
            );
            crate::metrics::global().scheduler_skipped(name, "already_run");
            self.release(name).await;
            return Ok(Action::AlreadyRun);
        };
        if decision.missed > 0 {
            info!(
                source = name,
                missed = decision.missed,
                "Slots were missed (downtime); one catch-up run serves them all."
            );
        }
        info!(
            source = name,
            full = decision.full,
            reason = ?decision.reason,
            slot = %decision.slot.to_rfc3339(),
            "Scheduled run starting."
        );
        let outcome = self.run_renewing(name, source, decision.full, runner).await;
        self.release(name).await;
        Ok(match outcome {
            Ok(record) => Action::Ran(record),
            Err(e) => {
                error!(source = name, error = %e, "Scheduled run could not be started.");
                Action::Failed(e.to_string())
            }
        })
    }

    /// Runs `source` now, outside its schedule (`matchpoint sync`, an operator's trigger),
    /// under its lease like a scheduled run: [`Action::Skipped`] when another instance
    /// holds the lease, else the run (lease renewed while it lasts, released after).
    pub async fn run_now<R: RunSource>(
        &self,
        source: &SourceConfig,
        full: bool,
        runner: &R,
    ) -> Result<Action, StoreError> {
        let name = source.name.as_str();
        let now = self.clock.now();
        let mut outcome = self
            .store
            .try_lease(name, &self.holder, now, now + self.lease)
            .await?;
        if let LeaseOutcome::HeldBy { holder, .. } = &outcome
            && holder_is_dead_here(holder)
        {
            // A killed process on this host (SIGKILL, OOM) cannot release its lease; waiting
            // for it to expire would block a manual recovery run for `lease_secs`.
            warn!(
                source = name,
                holder = %holder,
                "The source's lease belongs to a process of this host that no longer runs; taking it over."
            );
            self.store.release_lease(name, holder).await?;
            outcome = self
                .store
                .try_lease(name, &self.holder, now, now + self.lease)
                .await?;
        }
        if let LeaseOutcome::HeldBy { holder, expires_at } = outcome {
            info!(
                source = name,
                holder = %holder,
                until = %expires_at.to_rfc3339(),
                "Another instance holds the source's lease; not started."
            );
            crate::metrics::global().scheduler_skipped(name, "lease_held");
            return Ok(Action::Skipped {
                holder,
                until: expires_at,
            });
        }
        let outcome = self.run_renewing(name, source, full, runner).await;
        self.release(name).await;
        Ok(match outcome {
            Ok(record) => Action::Ran(record),
            Err(e) => Action::Failed(e.to_string()),
        })
    }

    /// For a caller that already took `source`'s lease as [`Scheduler::holder`] (the
    /// operator API answers 409 or 202 before the run): runs it, renewing the lease, and
    /// releases it after.
    pub async fn run_holding<R: RunSource>(
        &self,
        source: &SourceConfig,
        full: bool,
        runner: &R,
    ) -> Result<RunRecord, SyncError> {
        let outcome = self.run_renewing(&source.name, source, full, runner).await;
        self.release(&source.name).await;
        outcome
    }

    /// How long a lease lasts before it must be renewed.
    pub fn lease(&self) -> Duration {
        self.lease
    }

    /// Runs the source while renewing its lease every third of the lease period.
    async fn run_renewing<R: RunSource>(
        &self,
        name: &str,
        source: &SourceConfig,
        full: bool,
        runner: &R,
    ) -> Result<RunRecord, SyncError> {
        let every = self
            .lease
            .to_std()
            .map(|d| d / 3)
            .unwrap_or(std::time::Duration::from_secs(300));
        let mut renew = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        let run = runner.run(source, full);
        tokio::pin!(run);
        loop {
            tokio::select! {
                result = &mut run => return result,
                _ = renew.tick() => {
                    let until = self.clock.now() + self.lease;
                    match self.store.renew_lease(name, &self.holder, until).await {
                        Ok(true) => {}
                        Ok(false) => warn!(
                            source = name,
                            "The source lease was lost during the run (expired and taken over); \
                             publication stays serialised by the store, but check lease_secs."
                        ),
                        Err(e) => warn!(source = name, error = %e, "Renewing the source lease failed."),
                    }
                }
            }
        }
    }

    async fn release(&self, name: &str) {
        if let Err(e) = self.store.release_lease(name, &self.holder).await {
            warn!(source = name, error = %e, "Releasing the source lease failed; it expires by itself.");
        }
    }

    /// Every source's schedule, history, next due time and staleness, at the clock's now.
    pub async fn outlook(&self, stale_after: Duration) -> Result<Vec<Outlook>, StoreError> {
        let now = self.clock.now();
        let mut out = Vec::with_capacity(self.plans.len());
        for plan in &self.plans {
            let h = self.store.schedule_history(&plan.source).await?;
            out.push(Outlook {
                source: plan.source.clone(),
                full_mode: plan.full_mode,
                schedule: plan.schedule.expr().to_owned(),
                full_schedule: plan.full_schedule.as_ref().map(|f| f.expr().to_owned()),
                last_started: h.last_started,
                next_due: next_due(plan, &h, now),
                last_success_at: h.last_success_at,
                stale: is_stale(h.last_success_at, now, stale_after),
            });
        }
        Ok(out)
    }

    /// The earliest instant any source is next due (now for a source that never ran).
    pub async fn next_wake(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        let now = self.clock.now();
        let mut wake: Option<DateTime<Utc>> = None;
        for plan in &self.plans {
            let history = self.store.schedule_history(&plan.source).await?;
            if let Some(t) = next_due(plan, &history, now) {
                wake = Some(wake.map_or(t, |w| w.min(t)));
            }
        }
        Ok(wake)
    }
}

#[cfg(test)]
mod lease_holder_tests {
    use super::{holder_id, holder_is_dead_here};

    #[test]
    fn only_a_vanished_process_of_this_host_counts_as_dead() {
        let mine = holder_id();
        let host = mine.split('/').next().expect("host");
        assert!(!holder_is_dead_here(&mine), "this process is alive");
        assert!(!holder_is_dead_here(&format!("not-{host}/4000000/ab")));
        assert!(!holder_is_dead_here("garbage"));
        assert!(!holder_is_dead_here(&format!("{host}/not-a-pid/ab")));
        if std::path::Path::new("/proc/self").exists() {
            // PIDs above the kernel's pid_max (at most 2^22) never exist.
            assert!(holder_is_dead_here(&format!("{host}/4194305/ab")));
        }
    }
}
