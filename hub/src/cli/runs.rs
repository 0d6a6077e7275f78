//! `matchpoint runs`, `quarantine` and `stats`: the operator's view of syncs and data quality.

use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;
use matchpoint_hub::store::{QuarantineFilter, RunId, RunStatus};
use matchpoint_hub::sync::replay_source;

use super::Env;
use super::output;
use super::sync_cmd::print_summary;

/// `runs` sub-actions.
#[derive(Debug, Subcommand)]
pub enum RunsAction {
    /// Show one run; for a held run, what it would end (counts, no identities).
    Show {
        /// Run id.
        run: RunId,
    },
    /// Publish a held run deliberately.
    Accept {
        /// Run id.
        run: RunId,
    },
}

/// `quarantine` sub-actions.
#[derive(Debug, Subcommand)]
pub enum QuarantineAction {
    /// Re-process quarantined records with the current mapping and publish those that pass
    /// (all sources, or the one named with --source).
    Replay,
}

fn fmt_time(t: &chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S").to_string()
}

/// Lists runs, shows one, or accepts one.
pub async fn runs(
    env: &Env,
    action: Option<RunsAction>,
    source: Option<String>,
    limit: u64,
    json: bool,
) -> anyhow::Result<ExitCode> {
    match action {
        None => {
            let runs = env.store.runs(source.as_deref(), limit).await?;
            if json {
                output::json(&runs)?;
                return Ok(ExitCode::SUCCESS);
            }
            let rows: Vec<Vec<String>> = runs
                .iter()
                .map(|r| {
                    vec![
                        r.id.to_string(),
                        r.source.clone(),
                        r.mode.clone(),
                        r.status.as_str().into(),
                        fmt_time(&r.started_at),
                        r.duration_secs()
                            .map(|d| format!("{d:.1}s"))
                            .unwrap_or_default(),
                        r.counts.read.to_string(),
                        r.counts.rejected.to_string(),
                        r.counts.inserted.to_string(),
                        r.counts.updated.to_string(),
                        r.counts.unchanged.to_string(),
                        r.counts.ended.to_string(),
                    ]
                })
                .collect();
            print!(
                "{}",
                output::table(
                    &[
                        "run",
                        "source",
                        "mode",
                        "status",
                        "started (UTC)",
                        "took",
                        "read",
                        "rejected",
                        "inserted",
                        "updated",
                        "unchanged",
                        "ended"
                    ],
                    &rows
                )
            );
            Ok(ExitCode::SUCCESS)
        }
        Some(RunsAction::Show { run }) => {
            let rec = env.store.run(run).await?;
            let would_end = env.store.would_end(run).await?;
            if json {
                output::json(&serde_json::json!({ "run": rec, "would_end": would_end }))?;
                return Ok(ExitCode::SUCCESS);
            }
            println!(
                "run {} of {} ({}): {}",
                rec.id,
                rec.source,
                rec.mode,
                rec.status.as_str()
            );
            println!("started  {}", fmt_time(&rec.started_at));
            if let Some(f) = &rec.finished_at {
                println!("finished {}", fmt_time(f));
            }
            let c = &rec.counts;
            println!(
                "read {}  accepted {}  rejected {}  inserted {}  updated {}  unchanged {}  ended {}",
                c.read, c.accepted, c.rejected, c.inserted, c.updated, c.unchanged, c.ended
            );
            if let Some(e) = &rec.error {
                println!("{e}");
            }
            if rec.status == RunStatus::Held {
                println!("\nWould end, per organisation and life domain:");
                let rows: Vec<Vec<String>> = would_end
                    .iter()
                    .map(|w| {
                        vec![
                            w.organisation_code.clone(),
                            w.life_domain.clone(),
                            w.count.to_string(),
                        ]
                    })
                    .collect();
                print!(
                    "{}",
                    output::table(&["organisation", "life domain", "involvements"], &rows)
                );
                println!(
                    "\nPublish it anyway with: {}",
                    output::hint(&env.config.path, &format!("runs accept {run}"))
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Some(RunsAction::Accept { run }) => {
            let rec = env
                .store
                .accept_run(run)
                .await
                .with_context(|| format!("accepting run {run}"))?;
            if json {
                output::json(&rec)?;
            } else {
                print_summary(&env.config.path, std::slice::from_ref(&rec));
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Lists quarantined records (never a BSN or name: field and reason only).
pub async fn quarantine_list(
    env: &Env,
    source: Option<String>,
    run: Option<RunId>,
    all: bool,
    limit: u64,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let rows = env
        .store
        .quarantine(&QuarantineFilter {
            source,
            run,
            include_resolved: all,
            limit,
        })
        .await?;
    if json {
        output::json(&rows)?;
        return Ok(ExitCode::SUCCESS);
    }
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|q| {
            vec![
                q.id.to_string(),
                q.source.clone(),
                q.run_id.to_string(),
                q.source_record_id.clone().unwrap_or_else(|| "-".into()),
                q.record_index.to_string(),
                q.field.clone().unwrap_or_else(|| "-".into()),
                q.reason_code.clone(),
                q.reason.clone(),
                if q.resolved_by_run.is_some() {
                    "published".into()
                } else if q.replayable {
                    "replayable".into()
                } else {
                    "-".into()
                },
            ]
        })
        .collect();
    print!(
        "{}",
        output::table(
            &[
                "id",
                "source",
                "run",
                "record id",
                "record #",
                "field",
                "code",
                "reason",
                "state"
            ],
            &table
        )
    );
    Ok(ExitCode::SUCCESS)
}

/// Replays quarantined records of one or all sources.
pub async fn replay(env: &Env, source: Option<String>, json: bool) -> anyhow::Result<ExitCode> {
    let ctx = env.ctx()?;
    let names: Vec<String> = source.into_iter().collect();
    let sources = env.config.select(&names).map_err(anyhow::Error::msg)?;
    let mut results = Vec::new();
    for s in sources {
        match replay_source(ctx, s).await? {
            Some(rec) => results.push(rec),
            None if !json => println!("{}: nothing to replay.", s.name),
            None => {}
        }
    }
    if json {
        output::json(&results)?;
    } else if !results.is_empty() {
        print_summary(&env.config.path, &results);
    }
    Ok(ExitCode::SUCCESS)
}

/// Index statistics per source.
pub async fn stats(env: &Env, json: bool) -> anyhow::Result<ExitCode> {
    let stats = env.store.stats().await?;
    if json {
        output::json(&stats)?;
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Vec<String>> = stats
        .iter()
        .map(|s| {
            vec![
                s.source.clone(),
                s.active.to_string(),
                s.planned.to_string(),
                s.ended.to_string(),
                s.persons.to_string(),
                s.relations.to_string(),
                s.quarantined.to_string(),
                s.last_success_at
                    .as_ref()
                    .map(fmt_time)
                    .unwrap_or_else(|| "never".into()),
            ]
        })
        .collect();
    print!(
        "{}",
        output::table(
            &[
                "source",
                "active",
                "planned",
                "ended",
                "persons",
                "relations",
                "quarantined",
                "last success (UTC)"
            ],
            &rows
        )
    );
    Ok(ExitCode::SUCCESS)
}
