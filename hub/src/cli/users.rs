//! `matchpoint users add|list|disable`: API users and their tokens. Adding and disabling are
//! recorded in the audit trail (action `user_management`, role `cli`).

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Subcommand;
use matchpoint_hub::audit::{AuditAction, AuditLog, AuditOutcome, NewAuditEntry};
use matchpoint_hub::config::Config;
use matchpoint_hub::store::Store;
use matchpoint_hub::users::{Role, Token, check_label};
use matchpoint_schemas::Registry;

use super::output;
use super::serve::load_key;

/// What to do with users.
#[derive(Debug, Subcommand)]
pub enum UsersAction {
    /// Add a user and print their token once (it is stored only as a hash).
    Add {
        /// The professional's name.
        #[arg(long)]
        name: String,
        /// professional, privacy_officer, operator or admin.
        #[arg(long)]
        role: String,
        /// Organisation code from the registry (organisations.toml).
        #[arg(long)]
        organisation: String,
        /// Print id and token as JSON.
        #[arg(long)]
        json: bool,
    },
    /// List users (never tokens).
    List {
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Disable a user: their token is refused from now on.
    Disable {
        /// User id (see `users list`).
        id: i64,
    },
}

async fn audit_change(config: &Config, check: String) -> anyhow::Result<()> {
    let key = Arc::new(load_key(config)?);
    let audit = AuditLog::open(&config.store, key)
        .await
        .context("opening the audit trail")?;
    let mut entry = NewAuditEntry::new(
        "cli",
        AuditAction::UserManagement,
        AuditOutcome::Granted,
        format!("cli-{}", hex::encode(rand::random::<[u8; 8]>())),
    );
    entry.checks = vec!["cli".to_owned(), check];
    audit
        .append(entry)
        .await
        .context("recording the change in the audit trail")?;
    Ok(())
}

/// Adds a user and returns (id, token); the change is audited, or undone (disabled) when the
/// audit trail cannot record it.
pub async fn add_user(
    config: &Config,
    store: &Store,
    name: &str,
    role: Role,
    organisation: &str,
) -> anyhow::Result<(i64, Token)> {
    check_label("--name", name).map_err(anyhow::Error::msg)?;
    let registry = Registry::load(&config.organisations)?;
    anyhow::ensure!(
        registry
            .organisations()
            .iter()
            .any(|o| o.code == organisation),
        "--organisation `{}` is not in the organisation registry {}; use a registry code such as `{}`",
        organisation.chars().take(60).collect::<String>(),
        config.organisations.display(),
        registry
            .organisations()
            .first()
            .map(|o| o.code.as_str())
            .unwrap_or("OKC-CENTRUM")
    );
    let token = Token::generate();
    let id = store
        .add_user(name, role, organisation, token.hash())
        .await?;
    if let Err(e) = audit_change(config, format!("add_user:{id}:{role}:{organisation}")).await {
        let _ = store.set_user_disabled(id, true).await;
        return Err(e.context(format!(
            "user {id} was disabled again because the audit trail could not record it"
        )));
    }
    Ok((id, token))
}

/// `matchpoint users …`.
pub async fn users(config_path: &Path, action: UsersAction) -> anyhow::Result<ExitCode> {
    let config = Config::load(config_path)?;
    let store = Store::open(&config.store)
        .await
        .with_context(|| format!("opening the store named in {}", config_path.display()))?;
    match action {
        UsersAction::Add {
            name,
            role,
            organisation,
            json,
        } => {
            let role: Role = role.parse()?;
            let (id, token) = add_user(&config, &store, &name, role, &organisation).await?;
            if json {
                output::json(&serde_json::json!({ "id": id, "token": token.reveal() }))?;
            } else {
                println!("Added user {id} ({role}, {organisation}).");
                println!("Token (shown once; store it safely, it cannot be shown again):");
                println!("{}", token.reveal());
            }
        }
        UsersAction::List { json } => {
            let users = store.users().await?;
            if json {
                output::json(&users)?;
            } else {
                let rows: Vec<Vec<String>> = users
                    .iter()
                    .map(|u| {
                        vec![
                            u.id.to_string(),
                            u.name.clone(),
                            u.role.to_string(),
                            u.organisation.clone(),
                            if u.disabled { "disabled" } else { "active" }.to_owned(),
                            u.created_at.format("%Y-%m-%d %H:%M").to_string(),
                        ]
                    })
                    .collect();
                print!(
                    "{}",
                    output::table(
                        &["id", "name", "role", "organisation", "state", "created"],
                        &rows
                    )
                );
            }
        }
        UsersAction::Disable { id } => {
            anyhow::ensure!(
                store.set_user_disabled(id, true).await?,
                "there is no user {id} (see `matchpoint users list`)"
            );
            audit_change(&config, format!("disable_user:{id}")).await?;
            println!("User {id} is disabled; their token is refused from now on.");
        }
    }
    Ok(ExitCode::SUCCESS)
}
