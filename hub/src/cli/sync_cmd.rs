//! `matchpoint sync`: runs each selected source, shows progress, prints a summary table.
//! Each run takes the source's lease (as the scheduler does); a source whose lease another
//! instance holds is skipped with a message, and the exit code is 1.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use matchpoint_hub::schedule::{Action, RunSource, Scheduler, SystemClock};
use matchpoint_hub::store::{RunRecord, RunStatus};
use matchpoint_hub::sync::{Progress, sync_source};

use super::Env;
use super::output;

/// Syncs the selected sources one after another; Ctrl-C cancels the current run cleanly.
pub async fn sync(env: &Env, names: &[String], full: bool, json: bool) -> anyhow::Result<ExitCode> {
    let ctx = env.ctx()?;
    let sources = env.config.select(names).map_err(anyhow::Error::msg)?;
    let cancel = ctx.cancel.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("Interrupted: stopping the current run; nothing partial is published.");
            cancel.store(true, Ordering::Relaxed);
        }
    });
    let expired = ctx.store.expire_sealed(chrono::Utc::now()).await?;
    if expired > 0 {
        tracing::info!(
            expired,
            "Deleted sealed raw copies of quarantined records past their retention."
        );
    }
    // Each source under its lease, like the scheduler's runs: never two runs of one source
    // at once, also across processes.
    let scheduler = Scheduler::from_config(&env.config, env.store.clone(), SystemClock)?;
    let mut skipped = false;
    let mut results: Vec<RunRecord> = Vec::new();
    for source in sources {
        if ctx.cancel.load(Ordering::Relaxed) {
            break;
        }
        let progress = Arc::new(Progress::default());
        let display = show_progress(&source.name, progress.clone(), json);
        let started = Instant::now();
        let runner = WithProgress {
            ctx,
            progress: progress.clone(),
        };
        let outcome = scheduler.run_now(source, full, &runner).await;
        display.finish().await;
        let rec = match outcome? {
            Action::Ran(rec) => rec,
            Action::Skipped { holder, until } => {
                eprintln!(
                    "{}: not synced: another instance ({holder}) is running it (lease until {}); \
                     its run shows in `matchpoint runs`, or try again later",
                    source.name,
                    until.to_rfc3339()
                );
                skipped = true;
                continue;
            }
            Action::AlreadyRun => continue,
            Action::Failed(e) => anyhow::bail!("{}: {e}", source.name),
        };
        if !json {
            eprintln!(
                "{}: {} in {:.1}s ({} records read)",
                source.name,
                rec.status.as_str(),
                started.elapsed().as_secs_f64(),
                rec.counts.read
            );
        }
        results.push(rec);
    }
    if json {
        output::json(&results)?;
    } else {
        print_summary(&env.config.path, &results);
    }
    let bad = results
        .iter()
        .any(|r| !matches!(r.status, RunStatus::Succeeded | RunStatus::Accepted));
    Ok(if bad || skipped || ctx.cancel.load(Ordering::Relaxed) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// The sync pipeline with this command's progress display.
struct WithProgress<'a> {
    ctx: &'a matchpoint_hub::sync::SyncContext,
    progress: Arc<Progress>,
}

impl RunSource for WithProgress<'_> {
    async fn run(
        &self,
        source: &matchpoint_hub::config::SourceConfig,
        full: bool,
    ) -> Result<RunRecord, matchpoint_hub::sync::SyncError> {
        sync_source(self.ctx, source, full, self.progress.clone()).await
    }
}

/// The summary table printed after a sync.
pub fn print_summary(config: &std::path::Path, results: &[RunRecord]) {
    let rows: Vec<Vec<String>> = results
        .iter()
        .map(|r| {
            vec![
                r.source.clone(),
                r.id.to_string(),
                r.status.as_str().to_owned(),
                r.counts.read.to_string(),
                r.counts.accepted.to_string(),
                r.counts.rejected.to_string(),
                r.counts.inserted.to_string(),
                r.counts.updated.to_string(),
                r.counts.unchanged.to_string(),
                r.counts.ended.to_string(),
                r.duration_secs()
                    .map(|d| format!("{d:.1}s"))
                    .unwrap_or_default(),
            ]
        })
        .collect();
    print!(
        "{}",
        output::table(
            &[
                "source",
                "run",
                "status",
                "read",
                "accepted",
                "rejected",
                "inserted",
                "updated",
                "unchanged",
                "ended",
                "took"
            ],
            &rows
        )
    );
    for r in results {
        if let Some(err) = &r.error {
            println!("{} run {}: {err}", r.source, r.id);
        }
        if r.status == RunStatus::Held {
            println!(
                "  see what it would end: {}; publish anyway: {}",
                output::hint(config, &format!("runs show {}", r.id)),
                output::hint(config, &format!("runs accept {}", r.id))
            );
        }
        if r.counts.rejected > 0 {
            println!(
                "  {} rejected records: {}",
                r.counts.rejected,
                output::hint(
                    config,
                    &format!("quarantine --source {} --run {}", r.source, r.id)
                )
            );
        }
    }
}

struct Display {
    stop: Arc<std::sync::atomic::AtomicBool>,
    handle: Option<tokio::task::JoinHandle<()>>,
}

impl Display {
    async fn finish(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.await;
        }
    }
}

/// A progress bar on a terminal; plain lines every 100k records otherwise.
fn show_progress(name: &str, progress: Arc<Progress>, quiet: bool) -> Display {
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    if quiet {
        return Display { stop, handle: None };
    }
    let terminal = std::io::stderr().is_terminal();
    let name = name.to_owned();
    let stop2 = stop.clone();
    let handle = tokio::spawn(async move {
        let bar = terminal.then(|| {
            let bar = ProgressBar::new(0);
            if let Ok(style) = ProgressStyle::with_template(
                "{prefix:>8} [{bar:30}] {bytes}/{total_bytes} {msg} ({eta})",
            ) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.set_prefix(name.clone());
            bar
        });
        let mut last_line = 0u64;
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        loop {
            tick.tick().await;
            let records = progress.records.load(Ordering::Relaxed);
            if let Some(bar) = &bar {
                bar.set_length(progress.total_bytes.load(Ordering::Relaxed));
                bar.set_position(progress.bytes.load(Ordering::Relaxed));
                bar.set_message(format!("{records} records"));
                if stop2.load(Ordering::Relaxed) {
                    bar.finish_and_clear();
                    return;
                }
            } else {
                if stop2.load(Ordering::Relaxed) {
                    return;
                }
                if records >= last_line + 100_000 {
                    last_line = records - records % 100_000;
                    eprintln!("{name}: {records} records read");
                }
            }
        }
    });
    Display {
        stop,
        handle: Some(handle),
    }
}
