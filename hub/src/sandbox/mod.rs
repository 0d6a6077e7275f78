//! The simulated upstream systems of `matchpoint sandbox`: real HTTP servers on loopback,
//! one per HTTP source, serving one consistent synthetic population.
//!
//! Each upstream is a `fn router(Arc<Upstream>) -> axum::Router` in its own module
//! ([`rest`], [`soap`]), registered with one line in [`UPSTREAMS`]; the framework adds to
//! every upstream
//!
//! - the fault middleware of [`faults`] (latency, error statuses with `Retry-After`,
//!   connection resets, truncated or garbage bodies; malformed records are rendered by the
//!   upstream itself from [`Upstream::malformed`]);
//! - control endpoints: `GET /_sandbox/stats` (requests, pages and records served, and a log
//!   of every answer with its time, status and `Retry-After`, so tests can check retry
//!   spacing), `POST /_sandbox/advance` (next generation of the data: new, changed and ended
//!   records), `POST /_sandbox/faults` (body: a new fault spec) and
//!   `POST /_sandbox/reset-stats`.
//!
//! The SQL sources (okc-4, RIS) are tables and views in a supplier database instead
//! ([`supplier_db`]: SQLite by default, PostgreSQL or MariaDB given `--supplier-db URL`).
//! They and the file sources (okc-2 XML export, okc-3 CSV drop, iWmo messages of `wmo`) get
//! control servers with the same endpoints, which write their next generation and apply
//! their faults ([`files`]).
//!
//! The data of every upstream comes from [`crate::generate::feed`]: the same seeded
//! population as `matchpoint generate`, each source with its own subset of households.

pub mod faults;
pub mod fhir;
pub mod files;
pub mod rest;
pub mod soap;
pub mod supplier_db;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use serde::Serialize;

use crate::generate::feed::{Cursor, Feed, FeedRecord};
use faults::{FaultSpec, FaultyListener};

/// One registered upstream kind.
pub struct UpstreamDef {
    /// Source name it simulates.
    pub name: &'static str,
    /// Connector kind that reads it.
    pub kind: &'static str,
    /// Port offset from `--listen-base`.
    pub port_offset: u16,
    /// Record id prefix.
    pub prefix: &'static str,
    /// Share of households this source knows.
    pub share: f64,
    /// Path of the collection/service (the source's `location` is the server URL + this).
    pub path: &'static str,
    /// How a sync authenticates (shown to the user).
    pub auth_hint: &'static str,
    /// The router.
    pub router: fn(Arc<Upstream>) -> Router,
}

/// Every simulated HTTP upstream; one line each.
pub const UPSTREAMS: &[UpstreamDef] = &[
    UpstreamDef {
        name: "okc-1",
        kind: "rest_json",
        port_offset: 1,
        prefix: "OKC1-",
        share: 0.7,
        path: rest::PATH,
        auth_hint: rest::AUTH_HINT,
        router: rest::router,
    },
    UpstreamDef {
        name: "okc-5",
        kind: "fhir",
        port_offset: 5,
        prefix: "OKC5-",
        share: 0.8,
        path: fhir::PATH,
        auth_hint: fhir::AUTH_HINT,
        router: fhir::router,
    },
    UpstreamDef {
        name: "okc-6",
        kind: "soap",
        port_offset: 6,
        prefix: "OKC6-",
        share: 0.6,
        path: soap::PATH,
        auth_hint: soap::AUTH_HINT,
        router: soap::router,
    },
];

/// One answer in the request log.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct LogEntry {
    /// Milliseconds since the upstream started.
    pub at_ms: u64,
    /// Status sent (0: connection reset without an answer).
    pub status: u16,
    /// `Retry-After` sent, in seconds.
    pub retry_after: Option<u64>,
}

/// Most entries kept in the request log.
const MAX_LOG: usize = 100_000;

/// The size of one delivery: (generation, since generation, records).
type Total = (u32, Option<u32>, usize);

/// The `malformed` fault of one moment ([`Upstream::malformed_draw`]).
#[derive(Debug, Clone, Copy)]
pub struct MalformedDraw {
    share: f64,
    seed: u64,
    generation: u32,
}

impl MalformedDraw {
    /// Whether record `id` is rendered malformed.
    pub fn is(&self, id: &str) -> bool {
        if self.share <= 0.0 {
            return false;
        }
        let h = id.bytes().fold(0xCBF2_9CE4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01B3)
        });
        faults::draw(self.seed ^ h, u64::from(self.generation)) < self.share
    }
}

/// The `updated_at` timestamps of the generations one page's records were last touched
/// in, each formatted once per page rather than once per record.
pub struct Stamps(Vec<(u32, String)>);

impl Stamps {
    /// The timestamps `records` need.
    pub fn of(feed: &Feed, records: &[FeedRecord]) -> Self {
        let mut v: Vec<(u32, String)> = Vec::new();
        for r in records {
            if !v.iter().any(|(g, _)| *g == r.touched) {
                v.push((r.touched, feed.timestamp(r.touched)));
            }
        }
        Stamps(v)
    }

    /// The timestamp of generation `g` (one of the records' own).
    pub fn get(&self, g: u32) -> &str {
        self.0
            .iter()
            .find(|(x, _)| *x == g)
            .map_or("", |(_, t)| t.as_str())
    }
}

/// One page of records an upstream serves.
pub struct PageSlice {
    /// Records of the whole delivery.
    pub total: usize,
    /// This page's records, in id order.
    pub records: Vec<FeedRecord>,
    /// Whether more pages follow.
    pub more: bool,
}

/// The shared state of one running upstream.
pub struct Upstream {
    /// Source name.
    pub name: String,
    /// Sandbox seed (fault draws).
    pub seed: u64,
    /// The data.
    pub feed: Feed,
    /// Requests seen (faulted ones included).
    pub requests: AtomicU64,
    /// Pages served.
    pub pages: AtomicU64,
    /// Records served.
    pub records: AtomicU64,
    generation: AtomicU32,
    faults: RwLock<FaultSpec>,
    started: Instant,
    log: Mutex<Vec<LogEntry>>,
    total: Mutex<Option<Total>>,
    cursor: Mutex<Option<(u32, Option<u32>, Cursor)>>,
}

impl Upstream {
    /// A new upstream over `feed`.
    pub fn new(name: &str, seed: u64, feed: Feed, faults: FaultSpec) -> Self {
        Upstream {
            name: name.to_owned(),
            seed,
            feed,
            requests: AtomicU64::new(0),
            pages: AtomicU64::new(0),
            records: AtomicU64::new(0),
            generation: AtomicU32::new(0),
            faults: RwLock::new(faults),
            started: Instant::now(),
            log: Mutex::new(Vec::new()),
            total: Mutex::new(None),
            cursor: Mutex::new(None),
        }
    }

    /// The current fault spec.
    pub fn faults(&self) -> FaultSpec {
        self.faults.read().map(|f| f.clone()).unwrap_or_default()
    }

    /// The current data generation.
    pub fn generation(&self) -> u32 {
        self.generation.load(Ordering::Relaxed)
    }

    /// Moves the data on to the next generation (new, changed and ended records); returns
    /// the new generation.
    pub fn advance(&self) -> u32 {
        self.generation.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Logs one answer.
    pub fn log(&self, status: u16, retry_after: Option<u64>) {
        if let Ok(mut log) = self.log.lock()
            && log.len() < MAX_LOG
        {
            log.push(LogEntry {
                at_ms: self.started.elapsed().as_millis() as u64,
                status,
                retry_after,
            });
        }
    }

    /// Counts one page of `records` records served.
    pub fn served(&self, records: usize) {
        self.pages.fetch_add(1, Ordering::Relaxed);
        self.records.fetch_add(records as u64, Ordering::Relaxed);
    }

    /// Whether record `id` is rendered malformed (the `malformed` fault); stable per record
    /// and generation, so a retried page is the same page.
    pub fn malformed(&self, id: &str) -> bool {
        self.malformed_draw().is(id)
    }

    /// The `malformed` fault as it stands now, to decide for every record of a page with
    /// one look at the fault spec (see [`Upstream::malformed`]).
    pub fn malformed_draw(&self) -> MalformedDraw {
        MalformedDraw {
            share: self.faults.read().map(|f| f.malformed).unwrap_or_default(),
            seed: self.seed,
            generation: self.generation(),
        }
    }

    /// Whether deliveries are empty now (the `empty` fault).
    pub fn empty(&self) -> bool {
        self.faults().empty > 0.0
    }

    /// Records of the current generation changed after generation `since` (all without
    /// it): cached per (generation, since), the only thing an upstream keeps about a
    /// delivery.
    fn total(&self, g: u32, since: Option<u32>) -> usize {
        if let Ok(cached) = self.total.lock()
            && let Some((cg, cs, n)) = *cached
            && cg == g
            && cs == since
        {
            return n;
        }
        let n = self.feed.count_changed(g, since);
        if let Ok(mut cached) = self.total.lock() {
            *cached = Some((g, since, n));
        }
        n
    }

    /// The page of at most `size` records changed after `since` whose ids follow `after`
    /// (keyset paging), and counts it as served. The records are generated for the page
    /// (see [`crate::generate::feed`]); nothing grows with the size of the feed.
    pub fn page(&self, since: Option<&str>, after: Option<&str>, size: usize) -> PageSlice {
        if self.empty() {
            self.served(0);
            return PageSlice {
                total: 0,
                records: Vec::new(),
                more: false,
            };
        }
        let g = self.generation();
        let since_gen = since.and_then(|s| self.feed.generation_of(s));
        let total = self.total(g, since_gen);
        let from = after.map_or(0, |a| self.feed.index_after(a));
        // The walk where the last page of this delivery stopped, if any (taken: a parallel
        // request walks from a checkpoint instead).
        let cursor = self
            .cursor
            .lock()
            .ok()
            .and_then(|mut c| c.take())
            .filter(|(cg, cs, _)| *cg == g && *cs == since_gen)
            .map(|(_, _, c)| c);
        let (records, more, cursor) = self.feed.page(cursor, from, g, since_gen, size);
        if let Some(c) = cursor
            && let Ok(mut slot) = self.cursor.lock()
        {
            *slot = Some((g, since_gen, c));
        }
        self.served(records.len());
        PageSlice {
            total,
            records,
            more,
        }
    }
}

#[derive(Serialize)]
struct Stats {
    name: String,
    generation: u32,
    requests: u64,
    pages: u64,
    records: u64,
    log: Vec<LogEntry>,
}

async fn stats(State(up): State<Arc<Upstream>>) -> impl IntoResponse {
    axum::Json(Stats {
        name: up.name.clone(),
        generation: up.generation(),
        requests: up.requests.load(Ordering::Relaxed),
        pages: up.pages.load(Ordering::Relaxed),
        records: up.records.load(Ordering::Relaxed),
        log: up.log.lock().map(|l| l.clone()).unwrap_or_default(),
    })
}

async fn advance(State(up): State<Arc<Upstream>>) -> impl IntoResponse {
    let g = up.advance();
    axum::Json(serde_json::json!({ "generation": g }))
}

async fn set_faults(State(up): State<Arc<Upstream>>, body: String) -> impl IntoResponse {
    match FaultSpec::parse(&body) {
        Ok(spec) => {
            if let Ok(mut f) = up.faults.write() {
                *f = spec;
            }
            (StatusCode::OK, String::from("ok\n"))
        }
        Err(e) => (StatusCode::BAD_REQUEST, format!("{e}\n")),
    }
}

async fn reset_stats(State(up): State<Arc<Upstream>>) -> impl IntoResponse {
    up.requests.store(0, Ordering::Relaxed);
    up.pages.store(0, Ordering::Relaxed);
    up.records.store(0, Ordering::Relaxed);
    if let Ok(mut l) = up.log.lock() {
        l.clear();
    }
    "ok\n"
}

/// The full app of one upstream: its router, the control endpoints and the fault layer.
pub fn app(def: &UpstreamDef, up: Arc<Upstream>) -> Router {
    let control = Router::new()
        .route("/_sandbox/stats", get(stats))
        .route("/_sandbox/advance", post(advance))
        .route("/_sandbox/faults", post(set_faults))
        .route("/_sandbox/reset-stats", post(reset_stats))
        .with_state(up.clone());
    (def.router)(up.clone())
        .merge(control)
        .layer(axum::middleware::from_fn_with_state(up, faults::layer))
}

/// What `matchpoint sandbox` starts.
#[derive(Debug, Clone)]
pub struct SandboxOptions {
    /// Persons in the population.
    pub persons: u64,
    /// Seed of population and faults.
    pub seed: u64,
    /// Faults for every upstream.
    pub faults: FaultSpec,
    /// Base port: upstream N listens on base + its offset; 0 picks free ports.
    pub listen_base: u16,
    /// Folder for the file-based sources (the okc-2 XML export), if wanted.
    pub dir: Option<PathBuf>,
}

/// One running upstream.
pub struct Running {
    /// Source name.
    pub name: &'static str,
    /// Connector kind.
    pub kind: &'static str,
    /// The source's `location`.
    pub url: String,
    /// Server root (control endpoints live under `/_sandbox/`).
    pub root: String,
    /// How to authenticate.
    pub auth_hint: &'static str,
    /// Its state.
    pub upstream: Arc<Upstream>,
}

/// Binds one loopback listener per upstream: port `base` + offset each, or free ports
/// when `base` is 0. Fails (dropping what it bound) if any port is taken.
async fn bind_all(base: u16) -> Result<Vec<tokio::net::TcpListener>, String> {
    let mut listeners = Vec::with_capacity(UPSTREAMS.len());
    for def in UPSTREAMS {
        let port = if base == 0 {
            0
        } else {
            base.checked_add(def.port_offset)
                .ok_or_else(|| format!("--listen-base {base} leaves no room for port offsets"))?
        };
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .map_err(|e| format!("{}: cannot listen on 127.0.0.1:{port}: {e}", def.name))?;
        listeners.push(listener);
    }
    Ok(listeners)
}

/// Builds every upstream's data and serves it on the bound `listeners` (one per entry of
/// [`UPSTREAMS`], in order) on the current tokio runtime.
fn serve_all(
    opts: &SandboxOptions,
    listeners: Vec<tokio::net::TcpListener>,
) -> Result<Vec<Running>, String> {
    let mut running = Vec::new();
    for (def, listener) in UPSTREAMS.iter().zip(listeners) {
        let feed = Feed::build(def.name, def.prefix, opts.persons, opts.seed, def.share)?;
        let up = Arc::new(Upstream::new(
            def.name,
            opts.seed,
            feed,
            opts.faults.clone(),
        ));
        let addr = listener
            .local_addr()
            .map_err(|e| format!("{}: {e}", def.name))?;
        let app = app(def, up.clone());
        let listener = FaultyListener {
            inner: listener,
            upstream: up.clone(),
            accepted: AtomicU64::new(0),
        };
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let root = format!("http://{addr}");
        running.push(Running {
            name: def.name,
            kind: def.kind,
            url: format!("{root}{}", def.path),
            root,
            auth_hint: def.auth_hint,
            upstream: up,
        });
    }
    Ok(running)
}

/// Builds every upstream's data, binds its port and serves it on the current tokio runtime.
/// The servers run until the runtime shuts down; every port is bound before it returns, so
/// the upstreams accept connections as soon as it has returned.
pub async fn start(opts: &SandboxOptions) -> Result<Vec<Running>, String> {
    let listeners = bind_all(opts.listen_base).await?;
    serve_all(opts, listeners)
}

/// Like [`start`], but when a port of `opts.listen_base` is taken (another sandbox or demo
/// on this machine, tests in parallel) tries the bases `step`, `2 * step`, … above it, at
/// most `tries` bases in all, so that every upstream keeps its fixed offset from one base.
/// Returns the base used with the running upstreams. A base of 0 picks free ports.
pub async fn start_with_fallback(
    opts: &SandboxOptions,
    tries: u16,
    step: u16,
) -> Result<(u16, Vec<Running>), String> {
    let mut last_err = String::from("no base port tried");
    let mut base = opts.listen_base;
    for _ in 0..tries.max(1) {
        match bind_all(base).await {
            Ok(listeners) => return Ok((base, serve_all(opts, listeners)?)),
            Err(e) => last_err = e,
        }
        if base == 0 {
            break;
        }
        base = match base.checked_add(step) {
            Some(b) if step > 0 => b,
            _ => break,
        };
    }
    Err(format!(
        "no free ports for the sandbox from base {} on ({last_err}); stop the other sandbox \
         or demo, or choose another base port",
        opts.listen_base
    ))
}

#[cfg(test)]
mod start_tests {
    use super::*;

    fn options(listen_base: u16) -> SandboxOptions {
        SandboxOptions {
            persons: 20,
            seed: 1,
            faults: FaultSpec::default(),
            listen_base,
            dir: None,
        }
    }

    #[tokio::test]
    async fn a_taken_port_moves_every_upstream_to_a_later_base() {
        // Hold a free port and ask for the base whose first upstream would listen on it.
        let held = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .expect("bind");
        let port = held.local_addr().expect("addr").port();
        let first = port - UPSTREAMS[0].port_offset;

        let err = start_with_fallback(&options(first), 1, 10)
            .await
            .err()
            .expect("the only base tried has a taken port");
        assert!(err.contains("no free ports"), "{err}");
        assert!(err.contains(&port.to_string()), "{err}");

        let (base, running) = start_with_fallback(&options(first), 5, 10)
            .await
            .expect("a later base is free");
        assert!(
            base > first && (base - first).is_multiple_of(10),
            "base {base}"
        );
        assert_eq!(running.len(), UPSTREAMS.len());
        for (def, r) in UPSTREAMS.iter().zip(&running) {
            assert_eq!(r.name, def.name);
            assert!(
                r.root.ends_with(&format!(":{}", base + def.port_offset)),
                "{} at {}",
                r.name,
                r.root
            );
            // It accepts connections once started.
            let addr = r.root.trim_start_matches("http://");
            tokio::net::TcpStream::connect(addr)
                .await
                .expect("connect to the started upstream");
        }
    }
}
