//! `matchpoint serve`: the lookup API on a socket, with graceful shutdown on Ctrl-C/SIGTERM.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use matchpoint_hub::api::{self, AppState};
use matchpoint_hub::audit::AuditLog;
use matchpoint_hub::config::Config;
use matchpoint_hub::store::Store;
use matchpoint_schemas::{MasterKey, Registry};

/// The key file named by `MATCHPOINT_KEY_FILE` or the config.
pub fn load_key(config: &Config) -> anyhow::Result<MasterKey> {
    let path = std::env::var_os("MATCHPOINT_KEY_FILE")
        .map(PathBuf::from)
        .unwrap_or_else(|| config.key_file.clone());
    Ok(MasterKey::load(&path)?)
}

/// Opens store, key, registry and audit trail and builds the API state.
pub async fn state(config: &Config) -> anyhow::Result<AppState> {
    let store = Store::open(&config.store)
        .await
        .with_context(|| format!("opening the store named in {}", config.path.display()))?;
    let key = Arc::new(load_key(config)?);
    let registry = Arc::new(Registry::load(&config.organisations)?);
    let audit = AuditLog::open(&config.store, key.clone())
        .await
        .context("opening the audit trail")?;
    Ok(
        AppState::new(store, audit, &key, registry, config.server.clone())
            .with_stale_after(matchpoint_hub::schedule::stale_after(config)),
    )
}

/// Serves `state` on `listen` until Ctrl-C or SIGTERM; `ready` is called with the bound
/// address once the socket accepts connections.
pub async fn run(
    state: AppState,
    listen: &str,
    ready: impl FnOnce(SocketAddr),
) -> anyhow::Result<()> {
    run_until(state, listen, ready, shutdown_signal()).await
}

/// Like [`run`], stopping (gracefully) when `shutdown` resolves.
pub async fn run_until(
    state: AppState,
    listen: &str,
    ready: impl FnOnce(SocketAddr),
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    #[cfg(matchpoint_unaudited)]
    {
        let loopback = listen
            .parse::<SocketAddr>()
            .is_ok_and(|a| a.ip().is_loopback());
        anyhow::ensure!(
            loopback,
            "this is a benchmark-only build with auditing compiled out: it serves on loopback only"
        );
        eprintln!(
            "WARNING: benchmark-only build, auditing is compiled out. Never use it for real data."
        );
    }
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen} (in use? try --listen 127.0.0.1:0)"))?;
    let local = listener.local_addr().context("reading the bound address")?;
    tracing::info!(address = %local, "Listening.");
    ready(local);
    axum::serve(
        listener,
        api::router(state).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
    .context("serving the API")?;
    Ok(())
}

/// Resolves on Ctrl-C or (Unix) SIGTERM. The SIGTERM handler is installed when this is
/// *called* (inside the runtime), not when the future is first polled, so a SIGTERM arriving
/// while the store opens or the socket binds stops the server cleanly instead of being lost.
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    async move {
        let ctrl_c = async {
            if tokio::signal::ctrl_c().await.is_err() {
                std::future::pending::<()>().await;
            }
        };
        #[cfg(unix)]
        let term = async move {
            match term {
                Some(mut s) => {
                    s.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let term = std::future::pending::<()>();
        tokio::select! {
            () = ctrl_c => {},
            () = term => {},
        }
        tracing::info!("Shutting down: finishing requests in flight.");
    }
}

/// `matchpoint serve`: the API, and the scheduler loop next to it unless `no_scheduler`
/// (source leases keep several replicas from running one source twice). Ctrl-C or SIGTERM
/// stops both: requests in flight finish, a sync run in progress (scheduled or started through
/// `POST /api/v1/sync/runs`) is cancelled, publishes nothing and releases its lease. Manual
/// runs are awaited for at most `[server] shutdown_grace_secs` (20 s by default); one still
/// going then is recorded as failed and its lease released.
pub async fn serve(
    config_path: &Path,
    listen: Option<String>,
    no_scheduler: bool,
) -> anyhow::Result<ExitCode> {
    let config = Config::load(config_path)?;
    // Registered before anything is served, so an early SIGTERM is not lost.
    let signal = shutdown_signal();
    // Manual runs (`POST /api/v1/sync/runs`): their own sync context, cancelled on shutdown.
    let mut cancel: Vec<Arc<std::sync::atomic::AtomicBool>> = Vec::new();
    let trigger = {
        let env = super::Env::load(config_path).await?;
        cancel.push(env.ctx()?.cancel.clone());
        let super::Env { config, store, ctx } = env;
        api::operator::Trigger {
            ctx: ctx.context("internal: no sync context")?,
            sources: config.sources.clone(),
            scheduler: matchpoint_hub::schedule::Scheduler::from_config(
                &config,
                store,
                matchpoint_hub::schedule::SystemClock,
            )?,
            in_flight: api::operator::InFlight::default(),
        }
    };
    let state = state(&config).await?.with_trigger(trigger);
    let manual_runs = state.trigger();
    let grace = std::time::Duration::from_secs(config.server.shutdown_grace_secs);
    let listen = listen.unwrap_or_else(|| config.server.listen.clone());
    let stop = Arc::new(tokio::sync::Notify::new());
    let scheduler = if no_scheduler {
        None
    } else {
        let env = super::Env::load(config_path).await?;
        cancel.push(env.ctx()?.cancel.clone());
        let stop = stop.clone();
        Some(tokio::spawn(async move {
            let result = super::run::scheduler_loop(&env, false, stop).await;
            if let Err(error) = &result {
                tracing::error!(error = %format!("{error:#}"), "The scheduler stopped with an error.");
            }
            result.map(|_| ())
        }))
    };
    let shutdown = {
        let stop = stop.clone();
        async move {
            signal.await;
            for c in cancel {
                c.store(true, std::sync::atomic::Ordering::SeqCst);
            }
            tracing::info!("Sync runs in flight are cancelled: they publish nothing.");
            stop.notify_one();
        }
    };
    run_until(
        state,
        &listen,
        |addr| {
            use std::io::Write;
            println!(
                "Matchpoint API listening on http://{addr} ({}Ctrl-C stops)",
                if no_scheduler {
                    ""
                } else {
                    "scheduler running; "
                }
            );
            let _ = std::io::stdout().flush();
        },
        shutdown,
    )
    .await?;
    // Runs started through the API: cancelled above, awaited here for at most the grace
    // period; one still going then is recorded as failed and its lease released.
    if let Some(trigger) = manual_runs {
        let report = trigger.shutdown(grace).await;
        if !report.abandoned.is_empty() {
            eprintln!(
                "warning: {} sync run(s) did not stop within {} s ([server] shutdown_grace_secs) \
                 and were recorded as failed: {:?}",
                report.abandoned.len(),
                grace.as_secs(),
                report.abandoned
            );
        }
    }
    if let Some(task) = scheduler {
        match task.await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => eprintln!("warning: the scheduler stopped with an error: {error:#}"),
            Err(error) => eprintln!("warning: the scheduler task failed: {error}"),
        }
    }
    println!("Stopped.");
    Ok(ExitCode::SUCCESS)
}
