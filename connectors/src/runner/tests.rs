use std::sync::Mutex;

use matchpoint_schemas::{RawRecord, RecordPosition};

use super::*;
use crate::RecordError;

/// A clock that only advances when the runner sleeps, and records every sleep.
struct FakeClock {
    now: Arc<Mutex<Instant>>,
    sleeps: Arc<Mutex<Vec<Duration>>>,
    /// Sets the cancel flag once this many sleeps happened.
    cancel_after: Option<(usize, Arc<AtomicBool>)>,
}

impl Clock for FakeClock {
    fn now(&self) -> Instant {
        *self.now.lock().unwrap()
    }
    fn sleep(&mut self, d: Duration, cancel: &AtomicBool) -> Result<(), Cancelled> {
        let mut sleeps = self.sleeps.lock().unwrap();
        sleeps.push(d);
        if let Some((n, flag)) = &self.cancel_after
            && sleeps.len() >= *n
        {
            flag.store(true, Ordering::Relaxed);
        }
        if cancel.load(Ordering::Relaxed) {
            return Err(Cancelled);
        }
        *self.now.lock().unwrap() += d;
        Ok(())
    }
}

type Script = VecDeque<Result<Page, FetchError>>;

/// A connector replaying scripted answers and recording the requests and their times.
struct Scripted {
    script: Script,
    requests: Arc<Mutex<Vec<(PageRequest, Instant)>>>,
    now: Arc<Mutex<Instant>>,
}

impl PagedConnector for Scripted {
    fn describe(&self) -> String {
        "scripted".into()
    }
    fn fetch(&mut self, request: &PageRequest) -> Result<Page, FetchError> {
        let at = *self.now.lock().unwrap();
        self.requests.lock().unwrap().push((request.clone(), at));
        self.script.pop_front().unwrap_or_else(|| {
            Err(FetchError::Fatal(DeliveryError::Io {
                location: "scripted".into(),
                message: "script exhausted".into(),
            }))
        })
    }
}

fn rec(i: u64) -> RecordResult {
    Ok(RawRecord {
        record_id: Some(format!("r{i}")),
        position: RecordPosition {
            index: i,
            byte_offset: 0,
        },
        ..RawRecord::default()
    })
}

fn page(ids: std::ops::Range<u64>, next: Option<&str>, cursor: Option<&str>) -> Page {
    Page {
        records: ids.map(rec).collect(),
        next: next.map(str::to_owned),
        cursor: cursor.map(str::to_owned),
        announced_total: None,
        bytes: 10,
    }
}

fn transient(retry_after: Option<u64>) -> Result<Page, FetchError> {
    Err(FetchError::Transient {
        message: "HTTP 503".into(),
        retry_after: retry_after.map(Duration::from_secs),
    })
}

struct Harness {
    runner: PagedRunner<Scripted>,
    sleeps: Arc<Mutex<Vec<Duration>>>,
    requests: Arc<Mutex<Vec<(PageRequest, Instant)>>>,
    start: Instant,
}

fn harness(script: Vec<Result<Page, FetchError>>, config: RunnerConfig) -> Harness {
    harness_cancel(script, config, None)
}

fn harness_cancel(
    script: Vec<Result<Page, FetchError>>,
    config: RunnerConfig,
    cancel_after: Option<usize>,
) -> Harness {
    let start = Instant::now();
    let now = Arc::new(Mutex::new(start));
    let sleeps = Arc::new(Mutex::new(Vec::new()));
    let requests = Arc::new(Mutex::new(Vec::new()));
    let clock = FakeClock {
        now: now.clone(),
        sleeps: sleeps.clone(),
        cancel_after: cancel_after.map(|n| (n, config.cancel.clone())),
    };
    let conn = Scripted {
        script: script.into(),
        requests: requests.clone(),
        now,
    };
    Harness {
        runner: PagedRunner::with_clock(conn, config, Box::new(clock)),
        sleeps,
        requests,
        start,
    }
}

fn drain(runner: &mut PagedRunner<Scripted>) -> Result<Vec<RecordResult>, DeliveryError> {
    let mut out = Vec::new();
    while let Some(r) = runner.next_record()? {
        out.push(r);
    }
    Ok(out)
}

fn config() -> RunnerConfig {
    RunnerConfig {
        jitter_seed: Some(7),
        retry: RetryPolicy {
            max_attempts: 5,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(1000),
            max_retry_after: Duration::from_secs(10),
        },
        ..RunnerConfig::default()
    }
}

#[test]
fn follows_next_tokens_and_keeps_the_last_cursor() {
    let mut h = harness(
        vec![
            Ok(page(1..3, Some("p2"), Some("c1"))),
            Ok(page(3..3, Some("p3"), None)),
            Ok(page(3..5, None, Some("c3"))),
        ],
        RunnerConfig {
            since: Some("c0".into()),
            ..config()
        },
    );
    let recs = drain(&mut h.runner).unwrap();
    let ids: Vec<_> = recs
        .iter()
        .map(|r| r.as_ref().unwrap().record_id.clone().unwrap())
        .collect();
    assert_eq!(ids, ["r1", "r2", "r3", "r4"]);
    assert_eq!(h.runner.cursor().as_deref(), Some("c3"));
    let reqs: Vec<_> = h
        .requests
        .lock()
        .unwrap()
        .iter()
        .map(|r| r.0.clone())
        .collect();
    assert_eq!(
        reqs,
        [
            PageRequest::First {
                since: Some("c0".into())
            },
            PageRequest::Next("p2".into()),
            PageRequest::Next("p3".into())
        ]
    );
    let s = h.runner.stats();
    assert_eq!(
        (s.pages, s.records, s.requests, s.retries, s.bytes),
        (3, 4, 3, 0, 30)
    );
    assert!(h.sleeps.lock().unwrap().is_empty());
    // Finished: nothing more, even when asked again.
    assert!(h.runner.next_record().unwrap().is_none());
}

#[test]
fn quarantined_records_pass_through() {
    let mut p = page(1..2, None, None);
    p.records.push(Err(RecordError {
        record_id: Some("bad".into()),
        position: RecordPosition::default(),
        field: None,
        reason: "not an object".into(),
    }));
    p.announced_total = Some(2);
    let mut h = harness(vec![Ok(p)], config());
    let recs = drain(&mut h.runner).unwrap();
    assert_eq!(recs.len(), 2);
    assert!(recs[1].is_err());
}

#[test]
fn announced_total_mismatch_is_truncation() {
    let mut p = page(1..4, None, None);
    p.announced_total = Some(5);
    let mut h = harness(vec![Ok(p)], config());
    let err = drain(&mut h.runner).unwrap_err();
    assert!(matches!(err, DeliveryError::Truncated { .. }), "{err}");
    assert!(err.to_string().contains("announced 5"), "{err}");
    assert!(h.runner.next_record().unwrap().is_none());
}

#[test]
fn backoff_is_exponential_with_full_jitter_under_the_ceiling() {
    let cfg = config();
    let mut h = harness(
        vec![
            transient(None),
            transient(None),
            transient(None),
            transient(None),
            Ok(page(1..2, None, None)),
        ],
        cfg.clone(),
    );
    assert_eq!(drain(&mut h.runner).unwrap().len(), 1);
    let sleeps = h.sleeps.lock().unwrap().clone();
    assert_eq!(sleeps.len(), 4);
    // The same seed gives the same draws: recompute them independently.
    let mut j = Jitter(7);
    for (i, s) in sleeps.iter().enumerate() {
        let retry = i as u32 + 1;
        let ceiling = cfg.retry.ceiling(retry);
        assert!(*s <= ceiling, "retry {retry}: {s:?} > {ceiling:?}");
        assert_eq!(*s, ceiling.mul_f64(j.unit()));
    }
    assert_eq!(h.runner.stats().retries, 4);
    assert_eq!(h.runner.stats().requests, 5);
}

#[test]
fn ceilings_double_and_stop_at_max_delay() {
    let p = config().retry;
    let got: Vec<u64> = (1..=6).map(|r| p.ceiling(r).as_millis() as u64).collect();
    assert_eq!(got, [100, 200, 400, 800, 1000, 1000]);
    assert_eq!(p.ceiling(200), p.max_delay);
    assert_eq!(p.delay(3, 1.0, None), Duration::from_millis(400));
    assert_eq!(p.delay(3, 0.0, None), Duration::ZERO);
}

#[test]
fn retry_after_is_a_floor() {
    let mut h = harness(
        vec![transient(Some(3)), Ok(page(1..2, None, None))],
        config(),
    );
    drain(&mut h.runner).unwrap();
    let sleeps = h.sleeps.lock().unwrap().clone();
    assert_eq!(sleeps, [Duration::from_secs(3)]);
    let reqs = h.requests.lock().unwrap();
    assert_eq!(reqs[1].1 - reqs[0].1, Duration::from_secs(3));
}

#[test]
fn too_long_retry_after_fails_the_run() {
    let mut h = harness(vec![transient(Some(60))], config());
    let err = drain(&mut h.runner).unwrap_err();
    assert!(err.to_string().contains("max_retry_after"), "{err}");
}

#[test]
fn exhausted_retries_fail_with_the_last_error() {
    let mut h = harness((0..5).map(|_| transient(None)).collect(), config());
    let err = drain(&mut h.runner).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("gave up after 5 attempts"), "{msg}");
    assert!(msg.contains("HTTP 503"), "{msg}");
    assert_eq!(h.runner.stats().requests, 5);
    assert_eq!(h.sleeps.lock().unwrap().len(), 4);
    assert!(h.runner.next_record().unwrap().is_none());
}

#[test]
fn fatal_errors_are_not_retried() {
    let mut h = harness(
        vec![
            Ok(page(1..2, Some("p2"), None)),
            Err(FetchError::Fatal(DeliveryError::Malformed {
                location: "x".into(),
                byte_offset: 3,
                record_index: 0,
                message: "bad page".into(),
            })),
        ],
        config(),
    );
    assert!(h.runner.next_record().unwrap().is_some());
    let err = h.runner.next_record().unwrap_err();
    assert!(err.to_string().contains("bad page"));
    assert_eq!(h.runner.stats().requests, 2);
}

#[test]
fn cancel_during_backoff_stops_the_run() {
    let cfg = config();
    let mut h = harness_cancel(
        (0..5).map(|_| transient(Some(1))).collect(),
        cfg.clone(),
        Some(2),
    );
    let err = drain(&mut h.runner).unwrap_err();
    assert!(err.to_string().contains("cancelled"), "{err}");
    assert_eq!(h.runner.stats().requests, 2);
}

#[test]
fn cancel_before_a_page_stops_the_run() {
    let cfg = config();
    cfg.cancel.store(true, Ordering::Relaxed);
    let mut h = harness(vec![Ok(page(1..2, None, None))], cfg);
    assert!(drain(&mut h.runner).is_err());
    assert!(h.requests.lock().unwrap().is_empty());
}

#[test]
fn system_clock_sleep_returns_soon_after_cancel() {
    let flag = AtomicBool::new(true);
    // Already cancelled: returns at once instead of sleeping an hour.
    assert_eq!(
        SystemClock.sleep(Duration::from_secs(3600), &flag),
        Err(Cancelled)
    );
    let flag = AtomicBool::new(false);
    assert_eq!(SystemClock.sleep(Duration::ZERO, &flag), Ok(()));
}

#[test]
fn rate_limit_spaces_request_starts() {
    let mut h = harness(
        vec![
            Ok(page(1..2, Some("a"), None)),
            Ok(page(2..3, Some("b"), None)),
            Ok(page(3..4, None, None)),
        ],
        RunnerConfig {
            min_interval: Duration::from_millis(250),
            ..config()
        },
    );
    drain(&mut h.runner).unwrap();
    let reqs = h.requests.lock().unwrap();
    let times: Vec<Duration> = reqs.iter().map(|r| r.1 - h.start).collect();
    assert_eq!(
        times,
        [
            Duration::ZERO,
            Duration::from_millis(250),
            Duration::from_millis(500)
        ]
    );
}

#[test]
fn a_repeated_next_token_fails_instead_of_looping() {
    let mut h = harness(
        vec![
            Ok(page(1..2, Some("same"), None)),
            Ok(page(2..3, Some("same"), None)),
        ],
        config(),
    );
    let err = drain(&mut h.runner).unwrap_err();
    assert!(err.to_string().contains("same next-page token"), "{err}");
}

#[test]
fn max_pages_and_max_bytes_are_enforced() {
    let mut h = harness(
        vec![
            Ok(page(1..2, Some("a"), None)),
            Ok(page(2..3, Some("b"), None)),
        ],
        RunnerConfig {
            max_pages: 1,
            ..config()
        },
    );
    assert!(
        drain(&mut h.runner)
            .unwrap_err()
            .to_string()
            .contains("max_pages")
    );
    let mut h = harness(
        vec![Ok(page(1..2, Some("a"), None)), Ok(page(2..3, None, None))],
        RunnerConfig {
            max_bytes: 15,
            ..config()
        },
    );
    assert!(
        drain(&mut h.runner)
            .unwrap_err()
            .to_string()
            .contains("max_bytes")
    );
}

#[test]
fn jitter_draws_are_in_the_unit_interval() {
    let mut j = Jitter(1);
    for _ in 0..10_000 {
        let u = j.unit();
        assert!((0.0..1.0).contains(&u));
    }
}

/// A connector that flags cancellation as soon as its fetch starts and then hangs until the
/// test lets it go: the runner must not wait for it.
struct Hanging {
    cancel: Arc<AtomicBool>,
    release: Arc<Mutex<std::sync::mpsc::Receiver<()>>>,
}

impl PagedConnector for Hanging {
    fn describe(&self) -> String {
        "hanging".into()
    }
    fn fetch(&mut self, _: &PageRequest) -> Result<Page, FetchError> {
        self.cancel.store(true, Ordering::Relaxed);
        let _ = self.release.lock().unwrap().recv();
        Ok(Page::default())
    }
}

#[test]
fn cancel_during_a_hanging_fetch_stops_the_run() {
    let cfg = config();
    let (release, rx) = std::sync::mpsc::channel::<()>();
    let conn = Hanging {
        cancel: cfg.cancel.clone(),
        release: Arc::new(Mutex::new(rx)),
    };
    let mut runner = PagedRunner::new(conn, cfg);
    let err = runner.next_record().unwrap_err();
    assert!(err.to_string().contains("cancelled"), "{err}");
    assert!(runner.next_record().unwrap().is_none());
    drop(release);
}

struct Panicking;

impl PagedConnector for Panicking {
    fn describe(&self) -> String {
        "panicking".into()
    }
    fn fetch(&mut self, _: &PageRequest) -> Result<Page, FetchError> {
        panic!("connector bug")
    }
}

#[test]
fn a_panicking_fetch_fails_the_run_instead_of_the_process() {
    let mut runner = PagedRunner::new(Panicking, config());
    let err = runner.next_record().unwrap_err();
    assert!(err.to_string().contains("stopped unexpectedly"), "{err}");
}
