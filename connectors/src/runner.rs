//! The shared paged runner: turns any [`PagedConnector`] into a [`RecordStream`].
//!
//! [`PagedRunner`] owns everything a paged kind (REST/JSON, FHIR, SOAP, SQL) has in common:
//!
//! - **paging**: the first page with the committed cursor (`since`), then [`Page::next`]
//!   tokens until a page has none; a `next` token that repeats the one just fetched, or more
//!   pages than [`RunnerConfig::max_pages`], fails the run instead of looping forever;
//! - **cursor**: the last [`Page::cursor`] any page reported is the run's cursor;
//! - **completeness**: the last [`Page::announced_total`] is checked against the records that
//!   arrived (a mismatch is [`DeliveryError::Truncated`]);
//! - **retries**: [`FetchError::Transient`] is retried with exponential backoff and full jitter
//!   (`delay = random(0, min(max_delay, base_delay × 2^(attempt-1)))`), never shorter than the
//!   server's `Retry-After`, up to [`RetryPolicy::max_attempts`] attempts per page; then the run
//!   fails cleanly with the last error;
//! - **cancellation**: every wait (backoff, rate limit, and the fetch itself, which runs on
//!   its own thread) watches the cancel flag in slices of at most [`CANCEL_POLL`], so Ctrl-C
//!   stops a run within a fraction of a second even while a slow server is answering;
//! - **rate limiting**: an optional minimum interval between the starts of two requests;
//! - **metrics**: request, retry, page, record and byte counters ([`RunnerStats`]), and a
//!   `debug`-level tracing span per page.
//!
//! Time is injected ([`Clock`]) so the backoff schedule is tested without real sleeps.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tracing::{debug, debug_span, warn};

use crate::paged::{FetchError, Page, PageRequest, PagedConnector};
use crate::{DeliveryError, RecordResult, RecordStream};

/// Longest single sleep between two looks at the cancel flag.
pub const CANCEL_POLL: Duration = Duration::from_millis(100);

/// How transient failures are retried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts per page, the first included (1 = no retry).
    pub max_attempts: u32,
    /// Backoff ceiling of the first retry; doubles with every further retry.
    pub base_delay: Duration,
    /// Largest backoff ceiling (a server's `Retry-After` may ask for longer, up to
    /// [`RetryPolicy::max_retry_after`]).
    pub max_delay: Duration,
    /// Longest `Retry-After` honoured; a server asking for more fails the run.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 6,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
            max_retry_after: Duration::from_secs(300),
        }
    }
}

impl RetryPolicy {
    /// The backoff ceiling before retry number `retry` (1-based).
    pub fn ceiling(&self, retry: u32) -> Duration {
        let factor = 1u32
            .checked_shl(retry.saturating_sub(1))
            .unwrap_or(u32::MAX);
        self.base_delay
            .checked_mul(factor)
            .unwrap_or(self.max_delay)
            .min(self.max_delay)
    }

    /// The wait before retry number `retry` given a jitter draw `unit` in `[0, 1)` and the
    /// server's `Retry-After`: full jitter under the ceiling, never less than `Retry-After`.
    pub fn delay(&self, retry: u32, unit: f64, retry_after: Option<Duration>) -> Duration {
        let jittered = self.ceiling(retry).mul_f64(unit.clamp(0.0, 1.0));
        match retry_after {
            Some(ra) => jittered.max(ra),
            None => jittered,
        }
    }
}

/// Everything the runner needs besides the connector.
#[derive(Debug, Clone)]
pub struct RunnerConfig {
    /// The committed cursor of the last successful run (`None`: full snapshot).
    pub since: Option<String>,
    /// Retry policy for transient failures.
    pub retry: RetryPolicy,
    /// Minimum time between the starts of two requests (rate limit); zero for none.
    pub min_interval: Duration,
    /// Most pages one run may fetch (a guard against a server that pages forever).
    pub max_pages: u64,
    /// Most bytes one run may receive over all pages.
    pub max_bytes: u64,
    /// Set on Ctrl-C.
    pub cancel: Arc<AtomicBool>,
    /// Seed of the jitter generator; `None` seeds from the system clock.
    pub jitter_seed: Option<u64>,
}

impl Default for RunnerConfig {
    fn default() -> Self {
        RunnerConfig {
            since: None,
            retry: RetryPolicy::default(),
            min_interval: Duration::ZERO,
            max_pages: 10_000_000,
            max_bytes: u64::MAX,
            cancel: Arc::new(AtomicBool::new(false)),
            jitter_seed: None,
        }
    }
}

/// The wait was interrupted by the cancel flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cancelled;

/// Time as the runner sees it; injected so tests need not sleep.
pub trait Clock: Send {
    /// Now.
    fn now(&self) -> Instant;
    /// Waits `d`, looking at `cancel` at least every [`CANCEL_POLL`].
    fn sleep(&mut self, d: Duration, cancel: &AtomicBool) -> Result<(), Cancelled>;
}

/// The real clock: sleeps in slices, watching the cancel flag.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn sleep(&mut self, d: Duration, cancel: &AtomicBool) -> Result<(), Cancelled> {
        let deadline = Instant::now() + d;
        loop {
            if cancel.load(Ordering::Relaxed) {
                return Err(Cancelled);
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(());
            }
            std::thread::sleep((deadline - now).min(CANCEL_POLL));
        }
    }
}

/// Counters of one run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunnerStats {
    /// Requests sent (retries included).
    pub requests: u64,
    /// Retries after transient failures.
    pub retries: u64,
    /// Pages received and decoded.
    pub pages: u64,
    /// Records yielded (quarantined ones included).
    pub records: u64,
    /// Bytes received for the decoded pages.
    pub bytes: u64,
}

/// A small deterministic generator for jitter (splitmix64); no cryptographic use.
#[derive(Debug, Clone)]
struct Jitter(u64);

impl Jitter {
    fn unit(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

enum State {
    /// Fetch this page next.
    Fetch(PageRequest),
    /// The last page was read; check and finish.
    Finishing,
    /// Finished (or failed): yields nothing more.
    Done,
}

/// Reads a paged source as one delivery. See the [module documentation](self).
pub struct PagedRunner<C: PagedConnector + 'static> {
    connector: Arc<Mutex<C>>,
    location: String,
    config: RunnerConfig,
    clock: Box<dyn Clock>,
    jitter: Jitter,
    state: State,
    buffer: VecDeque<RecordResult>,
    cursor: Option<String>,
    announced: Option<u64>,
    last_request_at: Option<Instant>,
    last_token: Option<String>,
    stats: RunnerStats,
}

impl<C: PagedConnector + 'static> PagedRunner<C> {
    /// A runner with the system clock.
    pub fn new(connector: C, config: RunnerConfig) -> Self {
        Self::with_clock(connector, config, Box::new(SystemClock))
    }

    /// A runner with an injected clock (tests).
    pub fn with_clock(connector: C, config: RunnerConfig, clock: Box<dyn Clock>) -> Self {
        let seed = config.jitter_seed.unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0x5EED)
        });
        let first = PageRequest::First {
            since: config.since.clone(),
        };
        PagedRunner {
            location: connector.describe(),
            connector: Arc::new(Mutex::new(connector)),
            config,
            clock,
            jitter: Jitter(seed),
            state: State::Fetch(first),
            buffer: VecDeque::new(),
            cursor: None,
            announced: None,
            last_request_at: None,
            last_token: None,
            stats: RunnerStats::default(),
        }
    }

    /// The counters so far.
    pub fn stats(&self) -> RunnerStats {
        self.stats
    }

    /// The connector (e.g. for its own counters); `None` if a fetch panicked while holding it.
    pub fn connector(&self) -> Option<std::sync::MutexGuard<'_, C>> {
        self.connector.lock().ok()
    }

    fn fail(&mut self, e: DeliveryError) -> DeliveryError {
        self.state = State::Done;
        self.buffer.clear();
        e
    }

    fn cancelled(&mut self) -> DeliveryError {
        self.fail(DeliveryError::Io {
            location: self.location.clone(),
            message: "cancelled (interrupt) while waiting".into(),
        })
    }

    /// Waits for the rate limit, then sends one request.
    fn request(&mut self, req: &PageRequest) -> Result<Page, FetchError> {
        if let Some(last) = self.last_request_at
            && !self.config.min_interval.is_zero()
        {
            let ready = last + self.config.min_interval;
            let now = self.clock.now();
            if ready > now && self.clock.sleep(ready - now, &self.config.cancel).is_err() {
                return Err(FetchError::Fatal(self.cancelled()));
            }
        }
        self.last_request_at = Some(self.clock.now());
        self.stats.requests += 1;
        self.fetch_watching_cancel(req)
    }

    /// Runs one fetch on its own thread and waits for it, looking at the cancel flag every
    /// [`CANCEL_POLL`]: Ctrl-C does not wait for a slow server. A cancelled fetch is left to
    /// end on its own (its timeout bounds it); a fetch that panics fails the run.
    fn fetch_watching_cancel(&mut self, req: &PageRequest) -> Result<Page, FetchError> {
        let (tx, rx) = mpsc::channel();
        let connector = self.connector.clone();
        let request = req.clone();
        let location = self.location.clone();
        std::thread::Builder::new()
            .name("page-fetch".into())
            .spawn(move || {
                let result = match connector.lock() {
                    Ok(mut c) => c.fetch(&request),
                    Err(_) => Err(FetchError::Fatal(DeliveryError::Io {
                        location,
                        message: "an earlier page fetch failed unexpectedly".into(),
                    })),
                };
                let _ = tx.send(result);
            })
            .map_err(|e| {
                FetchError::Fatal(DeliveryError::Io {
                    location: self.location.clone(),
                    message: format!("cannot start a fetch thread: {e}"),
                })
            })?;
        loop {
            match rx.recv_timeout(CANCEL_POLL) {
                Ok(result) => return result,
                Err(RecvTimeoutError::Timeout) => {
                    if self.config.cancel.load(Ordering::Relaxed) {
                        return Err(FetchError::Fatal(self.cancelled()));
                    }
                }
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(FetchError::Fatal(DeliveryError::Io {
                        location: self.location.clone(),
                        message: "the page fetch stopped unexpectedly (internal error)".into(),
                    }));
                }
            }
        }
    }

    /// Fetches one page with retries.
    fn fetch_with_retries(&mut self, req: &PageRequest) -> Result<Page, DeliveryError> {
        let mut attempt = 1u32;
        loop {
            match self.request(req) {
                Ok(page) => return Ok(page),
                Err(FetchError::Fatal(e)) => return Err(self.fail(e)),
                Err(FetchError::Transient {
                    message,
                    retry_after,
                }) => {
                    let location = self.location.clone();
                    if attempt >= self.config.retry.max_attempts {
                        return Err(self.fail(DeliveryError::Io {
                            location,
                            message: format!(
                                "gave up after {attempt} attempts (retry.max_attempts); last error: {message}"
                            ),
                        }));
                    }
                    if let Some(ra) = retry_after
                        && ra > self.config.retry.max_retry_after
                    {
                        return Err(self.fail(DeliveryError::Io {
                            location,
                            message: format!(
                                "server asks to retry after {}s, longer than the configured {}s (retry.max_retry_after_ms); last error: {message}",
                                ra.as_secs(),
                                self.config.retry.max_retry_after.as_secs()
                            ),
                        }));
                    }
                    let wait = self
                        .config
                        .retry
                        .delay(attempt, self.jitter.unit(), retry_after);
                    warn!(
                        attempt,
                        wait_ms = wait.as_millis() as u64,
                        error = %message,
                        "Transient failure; retrying."
                    );
                    self.stats.retries += 1;
                    if self.clock.sleep(wait, &self.config.cancel).is_err() {
                        return Err(self.cancelled());
                    }
                    attempt += 1;
                }
            }
        }
    }

    fn next_page(&mut self, req: PageRequest) -> Result<(), DeliveryError> {
        if self.config.cancel.load(Ordering::Relaxed) {
            return Err(self.cancelled());
        }
        if self.stats.pages >= self.config.max_pages {
            let location = self.location.clone();
            return Err(self.fail(DeliveryError::Limit {
                location,
                message: format!(
                    "more than {} pages (paging.max_pages); is the server paging in a loop?",
                    self.config.max_pages
                ),
            }));
        }
        let span = debug_span!("page", n = self.stats.pages + 1);
        let _enter = span.enter();
        let page = self.fetch_with_retries(&req)?;
        self.stats.pages += 1;
        self.stats.bytes += page.bytes;
        debug!(
            records = page.records.len(),
            bytes = page.bytes,
            has_next = page.next.is_some(),
            "Page received."
        );
        if self.stats.bytes > self.config.max_bytes {
            let location = self.location.clone();
            return Err(self.fail(DeliveryError::Limit {
                location,
                message: format!(
                    "the delivery exceeds the configured limit of {} bytes (limits.max_bytes)",
                    self.config.max_bytes
                ),
            }));
        }
        if page.cursor.is_some() {
            self.cursor = page.cursor;
        }
        if page.announced_total.is_some() {
            self.announced = page.announced_total;
        }
        self.buffer.extend(page.records);
        self.state = match page.next {
            Some(token) => {
                if self.last_token.as_deref() == Some(token.as_str()) {
                    let location = self.location.clone();
                    return Err(self.fail(DeliveryError::Malformed {
                        location,
                        byte_offset: self.stats.bytes,
                        record_index: self.stats.records,
                        message: "the server returned the same next-page token twice".into(),
                    }));
                }
                self.last_token = Some(token.clone());
                State::Fetch(PageRequest::Next(token))
            }
            None => State::Finishing,
        };
        Ok(())
    }
}

impl<C: PagedConnector + 'static> RecordStream for PagedRunner<C> {
    fn next_record(&mut self) -> Result<Option<RecordResult>, DeliveryError> {
        loop {
            if let Some(rec) = self.buffer.pop_front() {
                self.stats.records += 1;
                return Ok(Some(rec));
            }
            match std::mem::replace(&mut self.state, State::Done) {
                State::Done => return Ok(None),
                State::Fetch(req) => self.next_page(req)?,
                State::Finishing => {
                    if let Some(total) = self.announced
                        && total != self.stats.records
                    {
                        let location = self.location.clone();
                        return Err(self.fail(DeliveryError::Truncated {
                            location,
                            message: format!(
                                "the source announced {total} records, {} arrived",
                                self.stats.records
                            ),
                        }));
                    }
                    debug!(
                        pages = self.stats.pages,
                        records = self.stats.records,
                        requests = self.stats.requests,
                        retries = self.stats.retries,
                        "Paged delivery complete."
                    );
                    return Ok(None);
                }
            }
        }
    }

    fn bytes_read(&self) -> u64 {
        self.stats.bytes
    }

    fn cursor(&self) -> Option<String> {
        self.cursor.clone()
    }
}

#[cfg(test)]
mod tests;
