//! Command-line interface: argument definitions and dispatch to one module per command.

mod audit;
mod demo;
mod keys;
mod output;
mod retention;
mod run;
mod runs;
mod sandbox;
mod serve;
mod supplier_db;
mod sync_cmd;
mod users;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use matchpoint_hub::config::Config;
use matchpoint_hub::store::Store;
use matchpoint_hub::sync::SyncContext;
use matchpoint_schemas::{MasterKey, Registry};

/// Matchpoint: who else is involved with this client or household?
///
/// Pulls involvement records from the social domain's source systems, validates and
/// pseudonymises them, and publishes one index. Start with `matchpoint demo`.
#[derive(Debug, Parser)]
#[command(name = "matchpoint", version, about, long_about)]
pub struct Cli {
    /// More log output on stderr (-v info, -vv debug). MATCHPOINT_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Log line format on stderr: `text` (human-readable) or `json` (one JSON object a line,
    /// for log collectors).
    #[arg(
        long,
        value_enum,
        global = true,
        env = "MATCHPOINT_LOG_FORMAT",
        default_value = "text"
    )]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

/// Where the configuration file is.
#[derive(Debug, clap::Args)]
pub struct ConfigArg {
    /// Configuration file.
    #[arg(
        long,
        short = 'c',
        env = "MATCHPOINT_CONFIG",
        default_value = "matchpoint.toml",
        global = true
    )]
    pub config: PathBuf,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write a new random 256-bit pseudonymisation key file (mode 0600).
    Keygen {
        /// Where to write the key; refuses to overwrite.
        #[arg(long, default_value = "matchpoint.key")]
        out: PathBuf,
        /// Key id (version) stored beside every pseudonym; default `k` + today's date.
        #[arg(long)]
        key_id: Option<String>,
    },
    /// Index key rotation: add a version, activate it, show rows per version.
    Keys {
        #[command(flatten)]
        config: ConfigArg,
        #[command(subcommand)]
        action: keys::KeysAction,
    },
    /// Write realistic synthetic source data (fake persons, valid BSNs) and a manifest of the
    /// deliberately bad records.
    Generate {
        /// Number of persons.
        #[arg(long, default_value_t = 1000)]
        persons: u64,
        /// Output folder.
        #[arg(long)]
        out: PathBuf,
        /// Random seed; the same seed gives the same files.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Share of records written with one defect (0.0–1.0).
        #[arg(long, default_value_t = 0.02)]
        bad_share: f64,
    },
    /// Sync sources into the index (all configured sources unless --source is given).
    ///
    /// Exits non-zero when any source failed or was held.
    Sync {
        #[command(flatten)]
        config: ConfigArg,
        /// Only this source (repeatable).
        #[arg(long = "source", short = 's')]
        sources: Vec<String>,
        /// Full reconciliation, also for incremental sources.
        #[arg(long)]
        full: bool,
        /// Print the summary as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run the scheduler: sync each source when its schedule says so, until Ctrl-C.
    ///
    /// Never two runs of one source at once, also with several instances on one database
    /// (a lease in the store). Missed slots after downtime are caught up with one run.
    Run {
        #[command(flatten)]
        config: ConfigArg,
        /// Run what is due now, then exit (non-zero when a run failed or was held).
        #[arg(long, conflicts_with = "plan")]
        once: bool,
        /// Only show each source's schedule, last run, next due time and staleness.
        #[arg(long)]
        plan: bool,
        /// With --plan: JSON output.
        #[arg(long, requires = "plan")]
        json: bool,
    },
    /// Show the run history, one run, or accept a held run.
    Runs {
        #[command(flatten)]
        config: ConfigArg,
        #[command(subcommand)]
        action: Option<runs::RunsAction>,
        /// Only this source.
        #[arg(long, global = true)]
        source: Option<String>,
        /// Most runs to list.
        #[arg(long, default_value_t = 20)]
        limit: u64,
        /// JSON output.
        #[arg(long, global = true)]
        json: bool,
    },
    /// List quarantined (rejected) records, or replay them after a mapping fix.
    Quarantine {
        #[command(flatten)]
        config: ConfigArg,
        #[command(subcommand)]
        action: Option<runs::QuarantineAction>,
        /// Only this source.
        #[arg(long, global = true)]
        source: Option<String>,
        /// Only this run.
        #[arg(long)]
        run: Option<i64>,
        /// Include records already published by a replay.
        #[arg(long)]
        all: bool,
        /// Most entries to list.
        #[arg(long, default_value_t = 100)]
        limit: u64,
        /// JSON output.
        #[arg(long, global = true)]
        json: bool,
    },
    /// Purge what may no longer be kept: ended involvements (with the iWmo message logs of
    /// the client/provider pairs they leave without involvement), old quarantine entries and
    /// audit entries (behind a signed anchor); recorded in the run history.
    Retention {
        #[command(flatten)]
        config: ConfigArg,
        /// Only count what would be purged (index, message logs and quarantine; the audit
        /// trail is untouched).
        #[arg(long)]
        dry_run: bool,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Index statistics per source.
    Stats {
        #[command(flatten)]
        config: ConfigArg,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Serve the lookup API (JSON under /api/v1; OpenAPI at /api/v1/openapi.json).
    Serve {
        #[command(flatten)]
        config: ConfigArg,
        /// Address to listen on (default: `[server] listen`, 127.0.0.1:8080).
        #[arg(long)]
        listen: Option<String>,
        /// Serve the API only; do not run the scheduler in this process (run
        /// `matchpoint run` elsewhere). Several replicas may run it: source leases keep one
        /// source from running twice.
        #[arg(long)]
        no_scheduler: bool,
    },
    /// Manage API users and their tokens.
    Users {
        #[command(flatten)]
        config: ConfigArg,
        #[command(subcommand)]
        action: users::UsersAction,
    },
    /// Verify the audit trail's hash chain or make a signed checkpoint of it.
    Audit {
        #[command(flatten)]
        config: ConfigArg,
        #[command(subcommand)]
        action: audit::AuditCommand,
    },
    /// First-time experience on SQLite: key, synthetic data, config, sync and summary, all
    /// under one folder; then serves the lookup API with demo users.
    Demo {
        /// Folder for everything the demo writes.
        #[arg(long, default_value = "matchpoint-demo")]
        dir: PathBuf,
        /// Number of synthetic persons.
        #[arg(long, default_value_t = 2000)]
        persons: u64,
        /// Random seed for the synthetic data.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Address the lookup API listens on after the sync.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: String,
        /// Stop after the sync instead of serving the API.
        #[arg(long)]
        no_serve: bool,
    },
    /// Start every simulated upstream system on 127.0.0.1 (REST, SOAP, …) with one synthetic
    /// population, optionally with injected faults; runs until Ctrl-C.
    Sandbox(sandbox::SandboxArgs),
    /// Create the simulated supplier databases of the SQL sources (okc-4, RIS) in SQLite,
    /// PostgreSQL or MariaDB, or write their next night (`--advance`).
    SupplierDb(supplier_db::SupplierDbArgs),
}

/// Sets up `tracing` on stderr.
/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// JSON lines (timestamp, level, fields, spans).
    Json,
}

pub fn init_logging(verbose: u8, format: LogFormat) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("MATCHPOINT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().with_current_span(true).try_init(),
    };
}

/// Runs one command.
pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Keygen { out, key_id } => {
            let id = key_id.unwrap_or_else(|| format!("k{}", chrono::Utc::now().format("%Y%m%d")));
            let id = MasterKey::generate_file(&out, &id)?;
            println!("Wrote key `{id}` to {} (mode 0600).", out.display());
            println!("Back it up offline: without it, existing pseudonyms cannot be reproduced.");
            Ok(ExitCode::SUCCESS)
        }
        Command::Keys { config, action } => keys::keys(&config.config, action).await,
        Command::Generate {
            persons,
            out,
            seed,
            bad_share,
        } => demo::generate_cmd(persons, &out, seed, bad_share),
        Command::Sync {
            config,
            sources,
            full,
            json,
        } => {
            let env = Env::load(&config.config).await?;
            sync_cmd::sync(&env, &sources, full, json).await
        }
        Command::Run {
            config,
            once,
            plan,
            json,
        } => {
            if plan {
                let env = Env::load_store_only(&config.config).await?;
                return run::plan(&env, json).await;
            }
            let env = Env::load(&config.config).await?;
            run::run(&env, once).await
        }
        Command::Runs {
            config,
            action,
            source,
            limit,
            json,
        } => {
            let env = Env::load_store_only(&config.config).await?;
            runs::runs(&env, action, source, limit, json).await
        }
        Command::Quarantine {
            config,
            action,
            source,
            run,
            all,
            limit,
            json,
        } => match action {
            Some(runs::QuarantineAction::Replay) => {
                let env = Env::load(&config.config).await?;
                runs::replay(&env, source, json).await
            }
            None => {
                let env = Env::load_store_only(&config.config).await?;
                runs::quarantine_list(&env, source, run, all, limit, json).await
            }
        },
        Command::Retention {
            config,
            dry_run,
            json,
        } => retention::retention(&config.config, dry_run, json).await,
        Command::Stats { config, json } => {
            let env = Env::load_store_only(&config.config).await?;
            runs::stats(&env, json).await
        }
        Command::Serve {
            config,
            listen,
            no_scheduler,
        } => serve::serve(&config.config, listen, no_scheduler).await,
        Command::Users { config, action } => users::users(&config.config, action).await,
        Command::Demo {
            dir,
            persons,
            seed,
            listen,
            no_serve,
        } => demo::demo(&dir, persons, seed, (!no_serve).then_some(listen)).await,
        Command::Audit { config, action } => audit::run(&config.config, action).await,
        Command::Sandbox(args) => sandbox::sandbox(args).await,
        Command::SupplierDb(args) => supplier_db::supplier_db(args).await,
    }
}

/// What most commands need: config, store, and (for syncs) key and registry.
pub struct Env {
    /// The configuration.
    pub config: Config,
    /// The store.
    pub store: Store,
    /// Sync context, when key and registry were loaded.
    pub ctx: Option<SyncContext>,
}

impl Env {
    async fn load_store_only(path: &Path) -> anyhow::Result<Env> {
        let config = Config::load(path)?;
        let store = Store::open(&config.store)
            .await
            .with_context(|| format!("opening the store named in {}", path.display()))?;
        Ok(Env {
            config,
            store,
            ctx: None,
        })
    }

    async fn load(path: &Path) -> anyhow::Result<Env> {
        let mut env = Self::load_store_only(path).await?;
        let key_path = std::env::var_os("MATCHPOINT_KEY_FILE")
            .map(PathBuf::from)
            .unwrap_or_else(|| env.config.key_file.clone());
        let key = MasterKey::load(&key_path)?;
        let registry = Registry::load(&env.config.organisations)?;
        env.ctx = Some(SyncContext::new(
            &env.config,
            env.store.clone(),
            Arc::new(key),
            Arc::new(registry),
        ));
        Ok(env)
    }

    fn ctx(&self) -> anyhow::Result<&SyncContext> {
        self.ctx
            .as_ref()
            .context("internal: key and registry were not loaded for this command")
    }
}
