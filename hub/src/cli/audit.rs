//! `matchpoint audit verify|checkpoint`: check the audit trail's hash chain and make signed
//! checkpoints to store outside the database. Both commands write their own audit entry
//! (role `cli`).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Subcommand;
use matchpoint_hub::audit::checkpoint::MAX_CHECKPOINT_BYTES;
use matchpoint_hub::audit::{
    AuditAction, AuditLog, AuditOutcome, Checkpoint, NewAuditEntry, VerifyReport,
};
use matchpoint_hub::config::Config;
use matchpoint_schemas::MasterKey;

use super::output;

/// The audit subcommands.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Recompute the hash chain; exits non-zero and names the first bad entry on failure.
    Verify {
        /// A checkpoint made earlier by `matchpoint audit checkpoint` (a file, or `-` for
        /// stdin), to detect removal of entries at the end.
        #[arg(long)]
        checkpoint: Option<PathBuf>,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Print a signed checkpoint (one JSON line) of the chain's current head; store it
    /// outside this database and pass it to `audit verify --checkpoint` later.
    Checkpoint {
        /// Write the checkpoint to this file instead of stdout.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

fn request_id() -> String {
    format!("cli-{:016x}", rand::random::<u64>())
}

fn cli_entry(action: AuditAction, outcome: AuditOutcome, checks: Vec<String>) -> NewAuditEntry {
    let mut e = NewAuditEntry::new("cli", action, outcome, request_id());
    e.checks = checks;
    e
}

async fn open(config_path: &Path) -> anyhow::Result<AuditLog> {
    let config = Config::load(config_path)?;
    let key_path = std::env::var_os("MATCHPOINT_KEY_FILE")
        .map(PathBuf::from)
        .unwrap_or_else(|| config.key_file.clone());
    let key = MasterKey::load(&key_path)?;
    AuditLog::open(&config.store, Arc::new(key))
        .await
        .with_context(|| {
            format!(
                "opening the audit trail of the store named in {}",
                config_path.display()
            )
        })
}

fn read_checkpoint(path: &Path) -> anyhow::Result<Checkpoint> {
    let mut text = String::new();
    let limit = (MAX_CHECKPOINT_BYTES + 1) as u64;
    if path.as_os_str() == "-" {
        std::io::stdin()
            .take(limit)
            .read_to_string(&mut text)
            .context("reading the checkpoint from stdin")?;
    } else {
        std::fs::File::open(path)
            .and_then(|f| f.take(limit).read_to_string(&mut text))
            .with_context(|| format!("reading the checkpoint file {}", path.display()))?;
    }
    Checkpoint::parse(&text).with_context(|| format!("in checkpoint {}", path.display()))
}

fn describe(report: &VerifyReport) -> String {
    match &report.failure {
        None => {
            let mut s = if report.entries_verified == 0 {
                "Audit trail OK: no entries yet.".to_owned()
            } else {
                format!(
                    "Audit trail OK: entries {}..={} verified, head hash {}.",
                    report.first_seq, report.last_seq, report.head_hash
                )
            };
            if report.checkpoint_matched == Some(true) {
                s.push_str(" The checkpoint matches.");
            }
            for n in &report.notes {
                s.push_str("\nNote: ");
                s.push_str(n);
            }
            s
        }
        Some(f) => format!(
            "Audit trail FAILED at entry {} ({}): {}\n{} entries verified before it. \
             Keep this database as evidence and compare it with a backup.",
            f.seq,
            f.kind.as_str(),
            f.message,
            report.entries_verified
        ),
    }
}

/// Runs one audit subcommand.
pub async fn run(config_path: &Path, action: AuditCommand) -> anyhow::Result<ExitCode> {
    match action {
        AuditCommand::Verify { checkpoint, json } => {
            let cp = checkpoint.as_deref().map(read_checkpoint).transpose()?;
            let log = open(config_path).await?;
            let report = log.verify(cp.as_ref()).await?;
            let mut checks = vec![if report.ok {
                "verify:ok".to_owned()
            } else {
                "verify:failed".to_owned()
            }];
            if let Some(f) = &report.failure {
                checks.push(format!("first_bad_entry:{}", f.seq));
            }
            checks.push(match report.checkpoint_matched {
                Some(true) => "checkpoint:matched".to_owned(),
                Some(false) => "checkpoint:failed".to_owned(),
                None => "checkpoint:none".to_owned(),
            });
            let outcome = if report.ok {
                AuditOutcome::Granted
            } else {
                AuditOutcome::Error
            };
            // Audited before the answer is shown (fail closed).
            log.append(cli_entry(AuditAction::AuditVerify, outcome, checks))
                .await?;
            if json {
                output::json(&report)?;
            } else if report.ok {
                println!("{}", describe(&report));
            } else {
                eprintln!("{}", describe(&report));
            }
            Ok(if report.ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        AuditCommand::Checkpoint { out } => {
            let log = open(config_path).await?;
            // The entry first, so the checkpoint covers it.
            log.append(cli_entry(
                AuditAction::AuditCheckpoint,
                AuditOutcome::Granted,
                vec![],
            ))
            .await?;
            let cp = log.checkpoint().await?;
            let line = cp.to_json_line();
            match out {
                Some(path) => {
                    let mut f = std::fs::File::create(&path)
                        .with_context(|| format!("creating {}", path.display()))?;
                    writeln!(f, "{line}")
                        .and_then(|()| f.sync_all())
                        .with_context(|| format!("writing {}", path.display()))?;
                    eprintln!(
                        "Checkpoint of {} entries written to {}. Store it outside this database \
                         (e.g. with the privacy officer); `matchpoint audit verify --checkpoint {}` \
                         detects later removal of entries.",
                        cp.size,
                        path.display(),
                        path.display()
                    );
                }
                None => println!("{line}"),
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
