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
    Ok(AppState::new(
        store,
        audit,
        &key,
        registry,
        config.server.clone(),
    )
    .with_stale_after(matchpoint_hub::schedule::stale_after(config)))
}

/// Serves `state` on `listen` until Ctrl-C or SIGTERM; `ready` is called with the bound
/// address once the socket accepts connections.
pub async fn run(
    state: AppState,
    listen: &str,
    ready: impl FnOnce(SocketAddr),
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
    .with_graceful_shutdown(shutdown_signal())
    .await
    .context("serving the API")?;
    Ok(())
}

/// Resolves on Ctrl-C or (Unix) SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
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

/// `matchpoint serve`.
pub async fn serve(config_path: &Path, listen: Option<String>) -> anyhow::Result<ExitCode> {
    let config = Config::load(config_path)?;
    let state = state(&config).await?;
    let listen = listen.unwrap_or_else(|| config.server.listen.clone());
    run(state, &listen, |addr| {
        use std::io::Write;
        println!("Matchpoint API listening on http://{addr} (Ctrl-C stops)");
        let _ = std::io::stdout().flush();
    })
    .await?;
    println!("Stopped.");
    Ok(ExitCode::SUCCESS)
}
