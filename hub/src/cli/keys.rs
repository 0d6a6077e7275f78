//! `matchpoint keys`: key rotation. `rotate` adds a new index key version to the key file (not
//! active), `activate ID` makes it the one new rows use, `status` shows per source how many
//! index and relation rows still carry each version. With `--audit`, `rotate` and `activate`
//! act on the *audit* versions instead (subject pseudonyms, checkpoints, retention anchors);
//! `status` also shows how many audit entries carry each audit version. See
//! docs/operations.md, "Key rotation", for the procedure (every instance must load the new
//! version before it is activated; each source is then re-keyed by a `sync --full`; audit
//! versions are never re-keyed and stay in the file for the audit retention period). There is
//! deliberately no command that removes a version.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use matchpoint_hub::config::Config;
use matchpoint_hub::store::{KeyVersionCount, Store};
use matchpoint_schemas::MasterKey;
use serde::Serialize;

use super::output;

/// `keys` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum KeysAction {
    /// Add a new random index key version (or, with --audit, audit key version) to the key
    /// file; it is not active yet.
    Rotate {
        /// Id of the new version; default `k` (index) or `a` (audit) + today's date and time.
        #[arg(long)]
        key_id: Option<String>,
        /// Add an audit version (subject pseudonyms, checkpoints, anchors) instead.
        #[arg(long)]
        audit: bool,
    },
    /// Make a version the one new index rows (or, with --audit, new audit entries) use. Only
    /// once every instance (serve, run, CronJobs) has loaded the key file holding it.
    Activate {
        /// The version's id.
        id: String,
        /// Activate an audit version instead.
        #[arg(long)]
        audit: bool,
    },
    /// Per source: rows in the index and relations per key version; audit entries per audit
    /// key version.
    Status {
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
}

fn key_path(config: &Config) -> PathBuf {
    std::env::var_os("MATCHPOINT_KEY_FILE")
        .map(PathBuf::from)
        .unwrap_or_else(|| config.key_file.clone())
}

/// Runs a `keys` subcommand.
pub async fn keys(config_path: &Path, action: KeysAction) -> anyhow::Result<ExitCode> {
    let config = Config::load(config_path)?;
    let path = key_path(&config);
    match action {
        KeysAction::Rotate {
            key_id,
            audit: true,
        } => {
            let id =
                key_id.unwrap_or_else(|| format!("a{}", chrono::Utc::now().format("%Y%m%d%H%M")));
            let id = MasterKey::rotate_audit_file(&path, &id)?;
            println!(
                "Added audit key version `{id}` to {} (not active).",
                path.display()
            );
            println!(
                "Next: back the key file up offline, roll it out to every instance, then \
                 `matchpoint keys activate --audit {id}`. Keep every audit version for the whole \
                 audit retention period."
            );
            Ok(ExitCode::SUCCESS)
        }
        KeysAction::Activate { id, audit: true } => {
            MasterKey::activate_audit_file(&path, &id)?;
            println!(
                "Audit key version `{id}` is active in {}: new audit entries, checkpoints and \
                 retention anchors use it once the processes reload the key file. Older entries \
                 stay searchable under their own versions.",
                path.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        KeysAction::Rotate {
            key_id,
            audit: false,
        } => {
            let id =
                key_id.unwrap_or_else(|| format!("k{}", chrono::Utc::now().format("%Y%m%d%H%M")));
            let id = MasterKey::rotate_file(&path, &id)?;
            println!(
                "Added index key version `{id}` to {} (not active).",
                path.display()
            );
            println!(
                "Next: back the key file up offline, roll it out to every instance, then \
                 `matchpoint keys activate {id}`."
            );
            Ok(ExitCode::SUCCESS)
        }
        KeysAction::Activate { id, audit: false } => {
            MasterKey::activate_file(&path, &id)?;
            println!(
                "Index key version `{id}` is active in {}: new rows use it once the processes \
                 reload the key file. Re-key each source with `matchpoint sync --full --source NAME`; \
                 follow it with `matchpoint keys status`.",
                path.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        KeysAction::Status { json } => {
            let key = MasterKey::load(&path)?;
            let store = Store::open(&config.store).await?;
            let counts = store.key_versions().await?;
            let audit = store.audit_key_versions().await?;
            let report = status_report(&key, counts, audit);
            if json {
                output::json(&report)?;
            } else {
                print_status(&report);
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// What `keys status` reports.
#[derive(Debug, Serialize)]
pub struct KeyStatus {
    /// The version new index rows use.
    pub active: String,
    /// Versions the key file holds.
    pub loaded: Vec<String>,
    /// Rows per source and version.
    pub rows: Vec<KeyVersionCount>,
    /// Versions rows carry that the key file does not hold (lookups cannot find those rows).
    pub missing: Vec<String>,
    /// Sources with rows under a version other than the active one (not yet re-keyed).
    pub not_rekeyed: Vec<String>,
    /// The audit version new audit entries, checkpoints and anchors use.
    pub audit_active: String,
    /// Audit versions the key file holds.
    pub audit_loaded: Vec<String>,
    /// Audit entries per audit version (`subject_key_id`), over the entries still kept.
    pub audit_entries: Vec<AuditVersionCount>,
    /// Audit versions entries carry that the key file does not hold (their subjects cannot be
    /// found by subject access).
    pub audit_missing: Vec<String>,
}

/// Audit entries carrying one audit key version.
#[derive(Debug, Serialize)]
pub struct AuditVersionCount {
    /// Audit key version (`subject_key_id`).
    pub key_id: String,
    /// Entries.
    pub entries: u64,
}

fn status_report(
    key: &MasterKey,
    rows: Vec<KeyVersionCount>,
    audit: Vec<(String, u64)>,
) -> KeyStatus {
    let audit_loaded: Vec<String> = key
        .audit_versions()
        .iter()
        .map(|k| k.as_str().to_owned())
        .collect();
    let audit_missing: Vec<String> = audit
        .iter()
        .filter(|(k, _)| !audit_loaded.contains(k))
        .map(|(k, _)| k.clone())
        .collect();
    let active = key.active_index_id().as_str().to_owned();
    let loaded: Vec<String> = key
        .index_versions()
        .iter()
        .map(|k| k.as_str().to_owned())
        .collect();
    let mut missing: Vec<String> = rows
        .iter()
        .filter(|r| !loaded.contains(&r.key_id))
        .map(|r| r.key_id.clone())
        .collect();
    missing.dedup();
    let mut not_rekeyed: BTreeMap<String, ()> = BTreeMap::new();
    for r in rows.iter().filter(|r| r.key_id != active) {
        not_rekeyed.insert(r.source.clone(), ());
    }
    KeyStatus {
        active,
        loaded,
        rows,
        missing,
        not_rekeyed: not_rekeyed.into_keys().collect(),
        audit_active: key.active_audit_id().as_str().to_owned(),
        audit_loaded,
        audit_entries: audit
            .into_iter()
            .map(|(key_id, entries)| AuditVersionCount { key_id, entries })
            .collect(),
        audit_missing,
    }
}

fn print_status(s: &KeyStatus) {
    println!(
        "Active index key version: {} (key file holds: {})",
        s.active,
        s.loaded.join(", ")
    );
    let rows: Vec<Vec<String>> = s
        .rows
        .iter()
        .map(|r| {
            vec![
                r.source.clone(),
                r.key_id.clone(),
                if r.key_id == s.active {
                    "active"
                } else {
                    "old"
                }
                .to_owned(),
                r.involvements.to_string(),
                r.relations.to_string(),
            ]
        })
        .collect();
    print!(
        "{}",
        output::table(
            &["source", "key version", "", "involvements", "relations"],
            &rows
        )
    );
    if !s.missing.is_empty() {
        println!(
            "WARNING: rows carry key versions the key file does not hold ({}); lookups cannot \
             find them. Restore those versions from the key backup.",
            s.missing.join(", ")
        );
    }
    if s.not_rekeyed.is_empty() {
        println!("Every source is on the active version.");
    } else {
        println!(
            "Not yet re-keyed (run `matchpoint sync --full --source NAME`; message sources keep \
             old rows until they end and are purged): {}",
            s.not_rekeyed.join(", ")
        );
    }
    println!(
        "Active audit key version: {} (key file holds: {})",
        s.audit_active,
        s.audit_loaded.join(", ")
    );
    let rows: Vec<Vec<String>> = s
        .audit_entries
        .iter()
        .map(|a| {
            vec![
                a.key_id.clone(),
                if a.key_id == s.audit_active {
                    "active"
                } else if s.audit_loaded.contains(&a.key_id) {
                    "old (keep)"
                } else {
                    "MISSING"
                }
                .to_owned(),
                a.entries.to_string(),
            ]
        })
        .collect();
    print!(
        "{}",
        output::table(&["audit key version", "", "audit entries"], &rows)
    );
    if !s.audit_missing.is_empty() {
        println!(
            "WARNING: audit entries carry audit key versions the key file does not hold ({}); \
             subject access cannot find them and their checkpoints cannot be verified. Restore \
             those versions from the key backup.",
            s.audit_missing.join(", ")
        );
    }
}
