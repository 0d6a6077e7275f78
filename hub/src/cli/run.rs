//! `matchpoint run`: the long-running scheduler. Syncs each source when its schedule says so
//! (see `matchpoint_hub::schedule` and docs/scheduling.md), never two runs of one source at
//! once, also across instances. Ctrl-C stops cleanly: the current run publishes nothing and
//! its lease is released. `--once` runs what is due now and exits (tests, external cron).
//!
//! The lead folds this loop into `serve` later; the loop itself stays here.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use chrono::Utc;
use matchpoint_hub::schedule::{Action, Scheduler, SyncRunner, SystemClock, TickReport};
use matchpoint_hub::store::{RunRecord, RunStatus};
use tokio::sync::Notify;
use tracing::{info, warn};

use super::Env;
use super::sync_cmd::print_summary;

/// Runs the scheduler until Ctrl-C (or once, with `once`).
pub async fn run(env: &Env, once: bool) -> anyhow::Result<ExitCode> {
    let ctx = env.ctx()?;
    let stop = Arc::new(Notify::new());
    {
        let cancel = ctx.cancel.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!(
                    "Interrupted: stopping; a run in progress publishes nothing and its lease is released."
                );
                cancel.store(true, Ordering::Relaxed);
                stop.notify_one();
            }
        });
    }
    let scheduler = Scheduler::from_config(&env.config, env.store.clone(), SystemClock)?;
    info!(
        holder = scheduler.holder(),
        sources = scheduler.plans().len(),
        time_zone = %env.config.schedule.time_zone,
        "Scheduler started."
    );
    let runner = SyncRunner { ctx };
    let cancelled = || ctx.cancel.load(Ordering::Relaxed);
    let poll =
        chrono::Duration::seconds(i64::try_from(env.config.schedule.poll_secs).unwrap_or(60));
    let mut results: Vec<RunRecord> = Vec::new();
    let mut not_started = false;
    loop {
        let reports = scheduler
            .tick(&env.config.sources, &runner, cancelled)
            .await?;
        if reports.iter().any(|r| matches!(r.action, Action::Ran(_))) {
            let expired = ctx.store.expire_sealed(Utc::now()).await?;
            if expired > 0 {
                info!(
                    expired,
                    "Deleted sealed raw copies of quarantined records past their retention."
                );
            }
        }
        // HOOK(retention, issue 5 part 2): schedule the retention job here from
        // `env.config.retention.schedule`, like a source, under the `RETENTION_JOB` lease.
        if once {
            not_started |= report_once(&reports, &mut results);
        }
        if once || cancelled() {
            break;
        }
        let now = Utc::now();
        let wake = scheduler
            .next_wake()
            .await?
            .map_or(now + poll, |w| w.min(now + poll));
        // A source that is due but leased elsewhere is looked at again after `poll`.
        let wait = (wake - now)
            .max(chrono::Duration::seconds(1))
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
    if once {
        if results.is_empty() {
            println!("Nothing was due.");
        } else {
            print_summary(&env.config.path, &results);
        }
        let bad = results
            .iter()
            .any(|r| !matches!(r.status, RunStatus::Succeeded | RunStatus::Accepted));
        return Ok(if bad || not_started || cancelled() {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        });
    }
    Ok(ExitCode::SUCCESS)
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
