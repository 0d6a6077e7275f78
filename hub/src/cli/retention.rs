//! `matchpoint retention [--dry-run] [--json]`: runs the retention job once (see
//! `matchpoint_hub::retention`); the scheduler (`matchpoint run`) runs it on
//! `[retention] schedule`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use chrono::Utc;
use matchpoint_hub::audit::AuditLog;
use matchpoint_hub::config::Config;
use matchpoint_hub::store::Store;
use matchpoint_schemas::MasterKey;

use super::output;

/// Runs retention once and prints the counts.
pub async fn retention(config_path: &Path, dry_run: bool, json: bool) -> anyhow::Result<ExitCode> {
    let config = Config::load(config_path)?;
    let store = Store::open(&config.store)
        .await
        .with_context(|| format!("opening the store named in {}", config_path.display()))?;
    let key_path = std::env::var_os("MATCHPOINT_KEY_FILE")
        .map(PathBuf::from)
        .unwrap_or_else(|| config.key_file.clone());
    let key = MasterKey::load(&key_path)?;
    let audit = AuditLog::open(&config.store, Arc::new(key))
        .await
        .context("opening the audit trail")?;
    let counts = matchpoint_hub::retention::run(
        &store,
        Some(&audit),
        &config.retention,
        Utc::now(),
        dry_run,
    )
    .await?;
    if json {
        output::json(&counts)?;
        return Ok(ExitCode::SUCCESS);
    }
    let verb = if dry_run { "Would purge" } else { "Purged" };
    println!(
        "{verb}: {} involvements (ended over {} months ago or past their purge date), {} relations, \
         {} iWmo message logs (of client/provider pairs left without involvement), \
         {} quarantine entries (over {} days old){}",
        counts.involvements,
        config.retention.involvement_months,
        counts.relations,
        counts.message_logs,
        counts.quarantine,
        config.retention.quarantine_days,
        if dry_run {
            "; the audit trail is not touched by a dry run.".to_owned()
        } else {
            format!(
                ", {} audit entries (over {} years old, behind a signed anchor).",
                counts.audit, config.retention.audit_years
            )
        }
    );
    if let Some(run) = counts.run {
        println!("Recorded as run {run} (`matchpoint runs --source __retention__`).");
    }
    Ok(ExitCode::SUCCESS)
}
