//! `matchpoint run`: the long-running scheduler. Syncs each source when its schedule says so
//! (see `matchpoint_hub::schedule` and docs/scheduling.md), never two runs of one source at
//! once, also across instances. Ctrl-C or SIGTERM stops cleanly: the current run publishes
//! nothing and its lease is released. `--once` runs what is due now and exits (tests, external cron).
//!
//! `matchpoint serve` runs the same loop ([`scheduler_loop`]) next to the API unless
//! `--no-scheduler`; `run` stays for scheduler-only deployments.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use chrono::Utc;
use matchpoint_hub::schedule::{Action, Scheduler, SyncRunner, SystemClock, TickReport};
use matchpoint_hub::store::{RunRecord, RunStatus};
use tokio::sync::Notify;
use tracing::{error, info, warn};

use super::sync_cmd::print_summary;
use super::{Env, output};

/// Runs the scheduler until Ctrl-C (or once, with `once`).
pub async fn run(env: &Env, once: bool) -> anyhow::Result<ExitCode> {
    let ctx = env.ctx()?;
    let stop = Arc::new(Notify::new());
    {
        let cancel = ctx.cancel.clone();
        let stop = stop.clone();
        let signals = StopSignals::register();
        tokio::spawn(async move {
            if signals.recv().await {
                eprintln!(
                    "Interrupted: stopping; a run in progress publishes nothing and its lease is released."
                );
                cancel.store(true, Ordering::Relaxed);
                stop.notify_one();
            }
        });
    }
    let (results, not_started) = scheduler_loop(env, once, stop).await?;
    if once {
        if results.is_empty() {
            println!("Nothing was due.");
        } else {
            print_summary(&env.config.path, &results);
        }
        let bad = results
            .iter()
            .any(|r| !matches!(r.status, RunStatus::Succeeded | RunStatus::Accepted));
        return Ok(
            if bad || not_started || ctx.cancel.load(Ordering::Relaxed) {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            },
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The scheduler loop (also run inside `matchpoint serve`): ticks until `ctx.cancel` is set
/// and `stop` notified, or once with `once`. Returns the runs of a `once` tick and whether a
/// due run could not be started.
pub async fn scheduler_loop(
    env: &Env,
    once: bool,
    stop: Arc<Notify>,
) -> anyhow::Result<(Vec<RunRecord>, bool)> {
    let ctx = env.ctx()?;
    let scheduler = Scheduler::from_config(&env.config, env.store.clone(), SystemClock)?;
    info!(
        holder = scheduler.holder(),
        sources = scheduler.plans().len(),
        time_zone = %env.config.schedule.time_zone,
        "Scheduler started."
    );
    for plan in scheduler.plans() {
        let now = Utc::now();
        info!(
            source = %plan.source,
            schedule = plan.schedule.expr(),
            full_schedule = plan.full_schedule.as_ref().map_or("", |f| f.expr()),
            next_slot = %plan
                .schedule
                .next_after(now)
                .map_or_else(|| "never".to_owned(), |t| t.to_rfc3339()),
            "Source scheduled."
        );
    }
    // The audit trail for the retention job's audit part (opened once).
    let retention_audit =
        match matchpoint_hub::audit::AuditLog::open(&env.config.store, ctx.key.clone()).await {
            Ok(a) => Some(a),
            Err(e) => {
                warn!(error = %e, "Opening the audit trail failed; retention will not run.");
                None
            }
        };
    let started = Utc::now();
    let runner = SyncRunner { ctx };
    let cancelled = || ctx.cancel.load(Ordering::Relaxed);
    let poll =
        chrono::Duration::seconds(i64::try_from(env.config.schedule.poll_secs).unwrap_or(60));
    let mut results: Vec<RunRecord> = Vec::new();
    let mut not_started = false;
    loop {
        let reports = match scheduler
            .tick(&env.config.sources, &runner, cancelled)
            .await
        {
            Ok(reports) => reports,
            // `--once` reports it; the long-running loop survives a store outage and looks
            // again after `poll`.
            Err(e) if once => return Err(e.into()),
            Err(e) => {
                error!(error = %e, "Looking at the schedules failed; trying again later.");
                Vec::new()
            }
        };
        if reports.iter().any(|r| matches!(r.action, Action::Ran(_))) {
            match ctx.store.expire_sealed(Utc::now()).await {
                Ok(0) => {}
                Ok(expired) => info!(
                    expired,
                    "Deleted sealed raw copies of quarantined records past their retention."
                ),
                Err(e) => warn!(error = %e, "Deleting expired sealed raw copies failed."),
            }
        }
        // The retention job, on `[retention] schedule`, under the `__retention__` lease.
        retention_tick(env, retention_audit.as_ref(), scheduler.holder(), started).await;
        if once {
            not_started |= report_once(&reports, &mut results);
        }
        if once || cancelled() {
            break;
        }
        let now = Utc::now();
        // Until the next slot, at most `poll`; a source still due now (leased elsewhere, or
        // its run could not start) is looked at again after `poll`, not in a tight loop.
        let wait = match scheduler.next_wake().await {
            Ok(Some(wake)) if wake > now => (wake - now).min(poll),
            _ => poll,
        }
        .to_std()
        .unwrap_or(std::time::Duration::from_secs(1));
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.notified() => {}
        }
        if cancelled() {
            break;
        }
    }
    info!("Scheduler stopped.");
    Ok((results, not_started))
}

/// Runs the retention job when due; logs what happened (a failure is in the run history).
async fn retention_tick(
    env: &Env,
    audit: Option<&matchpoint_hub::audit::AuditLog>,
    holder: &str,
    since: chrono::DateTime<Utc>,
) {
    use matchpoint_hub::retention::{Scheduled, run_if_due};
    // Without the audit trail the job does not run (it would leave the audit part undone).
    if audit.is_none() {
        return;
    }
    let lease =
        chrono::Duration::seconds(i64::try_from(env.config.schedule.lease_secs).unwrap_or(900));
    match run_if_due(
        &env.store,
        audit,
        &env.config.retention,
        &env.config.schedule.time_zone,
        holder,
        lease,
        since,
        Utc::now(),
    )
    .await
    {
        Ok(Scheduled::NotDue) => {}
        Ok(Scheduled::Skipped { holder }) => {
            info!(%holder, "Retention skipped: another instance is running it.");
        }
        Ok(Scheduled::Ran(Ok(c))) => info!(
            involvements = c.involvements,
            relations = c.relations,
            quarantine = c.quarantine,
            message_logs = c.message_logs,
            audit = c.audit,
            "Retention run done."
        ),
        Ok(Scheduled::Ran(Err(e))) => error!(error = %e, "Retention run failed."),
        Err(e) => error!(error = %e, "Looking at the retention schedule failed."),
    }
}

/// `matchpoint run --plan`: each source's schedule, last run, next due time and staleness.
pub async fn plan(env: &Env, json: bool) -> anyhow::Result<ExitCode> {
    let scheduler = Scheduler::from_config(&env.config, env.store.clone(), SystemClock)?;
    let outlook = scheduler
        .outlook(matchpoint_hub::schedule::stale_after(&env.config))
        .await?;
    if json {
        output::json(&outlook)?;
        return Ok(ExitCode::SUCCESS);
    }
    let time = |t: Option<chrono::DateTime<Utc>>| {
        t.map_or_else(
            || "-".to_owned(),
            |t| {
                t.with_timezone(&scheduler_tz(&env.config))
                    .format("%Y-%m-%d %H:%M %Z")
                    .to_string()
            },
        )
    };
    let rows: Vec<Vec<String>> = outlook
        .iter()
        .map(|o| {
            vec![
                o.source.clone(),
                if o.full_mode { "full" } else { "incremental" }.to_owned(),
                o.schedule.clone(),
                o.full_schedule.clone().unwrap_or_else(|| "-".to_owned()),
                time(o.last_started),
                time(o.next_due),
                time(o.last_success_at),
                if o.stale { "STALE" } else { "fresh" }.to_owned(),
            ]
        })
        .collect();
    print!(
        "{}",
        output::table(
            &[
                "source",
                "mode",
                "schedule",
                "full_schedule",
                "last run",
                "next due",
                "last success",
                "freshness"
            ],
            &rows
        )
    );
    Ok(ExitCode::SUCCESS)
}

/// The configured time zone (checked at load), UTC if unusable.
fn scheduler_tz(config: &matchpoint_hub::config::Config) -> chrono_tz::Tz {
    config.schedule.time_zone.parse().unwrap_or(chrono_tz::UTC)
}

/// Ctrl-C (SIGINT) and, on Unix, SIGTERM (systemd, Kubernetes), registered when created so
/// that a signal arriving before the first look at the schedules is not lost.
struct StopSignals {
    #[cfg(unix)]
    int: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    term: Option<tokio::signal::unix::Signal>,
}

impl StopSignals {
    fn register() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            StopSignals {
                int: signal(SignalKind::interrupt()).ok(),
                term: signal(SignalKind::terminate()).ok(),
            }
        }
        #[cfg(not(unix))]
        {
            StopSignals {}
        }
    }

    /// Waits for one of the signals; `false` when none can be awaited.
    async fn recv(mut self) -> bool {
        #[cfg(unix)]
        {
            async fn next(s: &mut Option<tokio::signal::unix::Signal>) -> bool {
                match s {
                    Some(s) => s.recv().await.is_some(),
                    None => std::future::pending().await,
                }
            }
            if self.int.is_none() && self.term.is_none() {
                return false;
            }
            tokio::select! {
                r = next(&mut self.int) => r,
                r = next(&mut self.term) => r,
            }
        }
        #[cfg(not(unix))]
        {
            tokio::signal::ctrl_c().await.is_ok()
        }
    }
}

/// Collects the runs of a `--once` tick and says what was skipped; `true` when a due run
/// could not be started.
fn report_once(reports: &[TickReport], results: &mut Vec<RunRecord>) -> bool {
    let mut not_started = false;
    for r in reports {
        match &r.action {
            Action::Ran(rec) => results.push(rec.clone()),
            Action::Skipped { holder, until } => println!(
                "{}: skipped, another instance ({holder}) is running it (lease until {})",
                r.source,
                until.to_rfc3339()
            ),
            Action::AlreadyRun => println!("{}: skipped, another instance just ran it", r.source),
            Action::Failed(e) => {
                warn!(source = %r.source, "Scheduled run failed to start.");
                println!("{}: could not start: {e}", r.source);
                not_started = true;
            }
        }
    }
    not_started
}
