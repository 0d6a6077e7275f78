//! The lookup service's JSON API under `/api/v1` (axum), built apart from the listener so
//! tests can call [`router`] directly.
//!
//! - Every response carries `x-request-id` (taken from the request when it is a short token of
//!   letters, digits, `-`, `_` or `.`, generated otherwise); every request runs in a tracing
//!   span with that id, the method and the *matched route* (never the raw URL).
//! - Bodies are capped ([`crate::config::ServerSettings::max_body_bytes`]), requests time out.
//! - JSON bodies are parsed by [`body::JsonBody`], whose errors never echo the input (a BSN
//!   sent as a number must not come back in an error message).
//! - Authentication: `Authorization: Bearer <token>` ([`auth`]); roles per endpoint.
//! - Every request that touches personal data writes one audit entry *before* the response;
//!   if it cannot be written the answer is 503 without data (fail-closed).
//!
//! Modules: [`auth`], [`lookup`] (need-to-know, break-the-glass), [`operator`],
//! [`openapi`] (the document at `/api/v1/openapi.json`).

pub mod auth;
pub mod body;
pub mod error;
pub mod lookup;
pub mod openapi;
pub mod operator;
pub mod privacy;
#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use matchpoint_schemas::{Bsn, KeyPurpose, MasterKey, Pseudonymiser, Registry};
use serde_json::json;
use tracing::Instrument;

use crate::audit::{AuditLog, NewAuditEntry};
use crate::config::ServerSettings;
use crate::store::Store;
pub use error::ApiError;

/// Header carrying the request id.
pub const REQUEST_ID: &str = "x-request-id";

/// Everything a handler needs; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    audit: AuditLog,
    registry: Arc<Registry>,
    index: Pseudonymiser,
    /// Index pseudonymisers of every loaded key version (lookups during a key rotation).
    index_all: Vec<Pseudonymiser>,
    settings: ServerSettings,
    stale_after: chrono::Duration,
    trigger: Option<Arc<operator::Trigger>>,
    /// When the index and quarantine gauges were last counted (see [`crate::metrics::GAUGE_TTL`]).
    gauges_at: std::sync::Mutex<Option<std::time::Instant>>,
}

impl AppState {
    /// State over an opened store and audit log, with the key for index pseudonyms.
    pub fn new(
        store: Store,
        audit: AuditLog,
        key: &MasterKey,
        registry: Arc<Registry>,
        settings: ServerSettings,
    ) -> AppState {
        AppState {
            inner: Arc::new(Inner {
                store,
                audit,
                registry,
                index: key.pseudonymiser(KeyPurpose::Index),
                index_all: key.index_pseudonymisers(),
                settings,
                stale_after: chrono::Duration::hours(36),
                trigger: None,
                gauges_at: std::sync::Mutex::new(None),
            }),
        }
    }

    /// Sets the staleness limit (`[schedule] stale_after_hours`; 36 h unless set) used by
    /// `/readyz` and lookup answers. Call it right after [`AppState::new`], before the state
    /// is cloned (a shared state is left unchanged).
    pub fn with_stale_after(mut self, stale_after: chrono::Duration) -> AppState {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.stale_after = stale_after;
        }
        self
    }

    /// Enables `POST /api/v1/sync/runs` (manual runs). Like [`AppState::with_stale_after`],
    /// call it before the state is cloned.
    pub fn with_trigger(mut self, trigger: operator::Trigger) -> AppState {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.trigger = Some(Arc::new(trigger));
        }
        self
    }

    /// What manual runs need, when enabled.
    pub fn trigger(&self) -> Option<Arc<operator::Trigger>> {
        self.inner.trigger.clone()
    }

    /// The staleness limit of sources.
    pub fn stale_after(&self) -> chrono::Duration {
        self.inner.stale_after
    }

    /// The index store.
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// The audit trail.
    pub fn audit(&self) -> &AuditLog {
        &self.inner.audit
    }

    /// The organisation registry.
    pub fn registry(&self) -> &Registry {
        &self.inner.registry
    }

    /// The index pseudonym of a BSN, as stored (32 bytes).
    pub fn index_pseudonym(&self, bsn: &Bsn) -> Vec<u8> {
        self.inner.index.pseudonymise(bsn).as_bytes().to_vec()
    }

    /// The index pseudonyms of a BSN under every loaded key version, the active one first
    /// (lookups consult them all while sources are re-keyed).
    pub fn index_pseudonyms(&self, bsn: &Bsn) -> Vec<Vec<u8>> {
        let mut all = vec![self.index_pseudonym(bsn)];
        for p in &self.inner.index_all {
            let v = p.pseudonymise(bsn).as_bytes().to_vec();
            if !all.contains(&v) {
                all.push(v);
            }
        }
        all
    }

    /// The audit pseudonym (hex) and its key id.
    pub fn audit_subject(&self, bsn: &Bsn) -> (String, String) {
        self.inner.audit.subject(bsn)
    }

    /// Writes one audit entry; any failure becomes 503 (fail-closed) and is logged without
    /// personal data.
    pub async fn record(&self, entry: NewAuditEntry) -> Result<(), ApiError> {
        // Benchmark-only build (bench/lookup-bench.sh): auditing compiled out to measure its
        // cost. No cargo profile sets this cfg, and such a binary refuses to listen on anything
        // but loopback (cli/serve.rs).
        #[cfg(matchpoint_unaudited)]
        {
            let _ = entry;
            return Ok(());
        }
        #[cfg(not(matchpoint_unaudited))]
        let started = std::time::Instant::now();
        #[cfg(not(matchpoint_unaudited))]
        let written = self.inner.audit.append(entry).await;
        #[cfg(not(matchpoint_unaudited))]
        crate::metrics::global().audit_write(written.is_ok(), started.elapsed().as_secs_f64());
        #[cfg(not(matchpoint_unaudited))]
        match written {
            Ok(_) => Ok(()),
            Err(error) => {
                tracing::error!(%error, "Audit entry could not be written; request refused.");
                Err(ApiError::AuditUnavailable)
            }
        }
    }
}

/// Per-request facts set by the request-id middleware.
#[derive(Debug, Clone)]
pub struct RequestCtx {
    /// The request id (also in the response header and the span).
    pub id: String,
    /// The client's IP address, when served over a socket.
    pub client: Option<String>,
}

/// The API's routes: (method, path). The OpenAPI document must describe each one (tested).
pub const ROUTES: &[(&str, &str)] = &[
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
    ("get", "/api/v1/openapi.json"),
    ("get", "/api/v1/me"),
    ("post", "/api/v1/lookups"),
    ("post", "/api/v1/audit/search"),
    ("get", "/api/v1/audit/break-glass"),
    ("post", "/api/v1/audit/break-glass/{seq}/reviews"),
    ("post", "/api/v1/audit/subject-access"),
    ("get", "/api/v1/audit/verify"),
    ("post", "/api/v1/audit/verify"),
    ("get", "/api/v1/sync/runs"),
    ("post", "/api/v1/sync/runs"),
    ("get", "/api/v1/sync/quarantine"),
    ("get", "/api/v1/sync/quality"),
];

/// The router with every route and layer; serve it with
/// `into_make_service_with_connect_info::<SocketAddr>()` to record client addresses.
pub fn router(state: AppState) -> Router {
    let settings = state.inner.settings.clone();
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/api/v1/openapi.json", get(openapi::document))
        .route("/api/v1/me", get(auth::me))
        .route("/api/v1/lookups", post(lookup::lookup))
        .route("/api/v1/audit/search", post(privacy::search))
        .route("/api/v1/audit/break-glass", get(privacy::break_glass_queue))
        .route(
            "/api/v1/audit/break-glass/{seq}/reviews",
            post(privacy::review),
        )
        .route(
            "/api/v1/audit/subject-access",
            post(privacy::subject_access),
        )
        .route(
            "/api/v1/audit/verify",
            get(privacy::verify).post(privacy::verify_checkpoint),
        )
        .route(
            "/api/v1/sync/runs",
            get(operator::runs).post(operator::trigger),
        )
        .route("/api/v1/sync/quarantine", get(operator::quarantine))
        .route("/api/v1/sync/quality", get(operator::quality))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(settings.max_body_bytes))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            Duration::from_secs(settings.request_timeout_secs),
        ))
        .layer(middleware::from_fn(request_context))
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::NotFound
}

/// Process is up.
async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// Freshness of every source with a run history, at `now`, under the state's limit; also
/// sets the freshness gauges.
async fn source_freshness(
    state: &AppState,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Vec<crate::schedule::Freshness>, crate::store::StoreError> {
    let limit = state.stale_after();
    let sources = state.store().source_freshness().await?;
    let out: Vec<crate::schedule::Freshness> = sources
        .into_iter()
        .map(|f| crate::schedule::Freshness {
            age_secs: f.last_success_at.map(|t| (now - t).num_seconds()),
            stale: crate::schedule::is_stale(f.last_success_at, now, limit),
            last_success_at: f.last_success_at,
            source: f.source,
        })
        .collect();
    crate::metrics::global().set_freshness(&out);
    Ok(out)
}

/// Store reachable; per source the last successful sync, its age and whether it is stale
/// (`[schedule] stale_after_hours`). Stale sources do not make the service unready: lookups
/// still answer, with `source_stale` on each involvement.
async fn readyz(State(state): State<AppState>) -> Response {
    let store = state.store().ping().await;
    let fresh = source_freshness(&state, chrono::Utc::now()).await;
    match (store, fresh) {
        (Ok(()), Ok(sources)) => {
            let stale = sources.iter().filter(|s| s.stale).count();
            Json(json!({ "status": "ready", "stale_sources": stale, "sources": sources }))
                .into_response()
        }
        (Err(error), _) | (_, Err(error)) => {
            tracing::warn!(%error, "Readiness check failed.");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({ "status": "unavailable", "reason": "the store is not reachable" })),
            )
                .into_response()
        }
    }
}

/// `GET /metrics`: Prometheus/OpenMetrics text. Unauthenticated by design: every label is
/// bounded (sources, enumerations, route templates), nothing identifies a person or user.
async fn metrics(State(state): State<AppState>) -> Response {
    match source_freshness(&state, chrono::Utc::now()).await {
        Ok(sources) => {
            // Held runs among each source's recent history (a held run awaits `runs accept`;
            // a later run supersedes it).
            for f in &sources {
                match state.store().runs(Some(&f.source), 20).await {
                    Ok(runs) => {
                        let held = runs
                            .iter()
                            .filter(|r| r.status == crate::store::RunStatus::Held)
                            .count();
                        crate::metrics::global().set_held_runs(&f.source, held as u64);
                    }
                    Err(error) => tracing::warn!(%error, "Run history unavailable for /metrics."),
                }
            }
        }
        Err(error) => tracing::warn!(%error, "Source freshness unavailable for /metrics."),
    }
    refresh_index_gauges(&state).await;
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        crate::metrics::global().render(),
    )
        .into_response()
}

/// Counts the index rows and quarantined records for the gauges, at most once per
/// [`crate::metrics::GAUGE_TTL`] (two aggregate queries; scrapes in between reuse the values).
async fn refresh_index_gauges(state: &AppState) {
    let due = match state.inner.gauges_at.lock() {
        Ok(at) => at.is_none_or(|t| t.elapsed() >= crate::metrics::GAUGE_TTL),
        Err(_) => true,
    };
    if !due {
        return;
    }
    match state.store().index_gauges().await {
        Ok(g) => {
            crate::metrics::global().set_index_gauges(&g);
            if let Ok(mut at) = state.inner.gauges_at.lock() {
                *at = Some(std::time::Instant::now());
            }
        }
        Err(error) => tracing::warn!(%error, "Index gauges unavailable for /metrics."),
    }
}

fn valid_request_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

fn new_request_id() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}

/// Request id, client address and the request span.
async fn request_context(mut req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|s| valid_request_id(s))
        .map(str::to_owned)
        .unwrap_or_else(new_request_id);
    let client = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip().to_string());
    // The matched route, never the raw path: a client may put anything in a URL.
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "(no route)".to_owned());
    let span = tracing::info_span!(
        "request",
        request_id = %id,
        method = %req.method(),
        route = %route,
        user_id = tracing::field::Empty
    );
    req.extensions_mut().insert(RequestCtx {
        id: id.clone(),
        client,
    });
    let method = req.method().as_str().to_owned();
    let started = std::time::Instant::now();
    let mut response = next.run(req).instrument(span.clone()).await;
    crate::metrics::global().http_request(
        &route,
        &method,
        response.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    if let Ok(v) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID, v);
    }
    span.in_scope(|| {
        tracing::info!(status = response.status().as_u16(), "Request answered.");
    });
    response
}
