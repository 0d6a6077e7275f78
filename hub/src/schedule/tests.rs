//! Scheduler tests under an injected clock: both DST nights of 2026 and 2027, missed slots,
//! full reconciliation, staleness, and leases on both stores (two real instances sharing one
//! database; PostgreSQL when `MATCHPOINT_TEST_POSTGRES_URL` is set).

use std::path::{Path, PathBuf};

use chrono::{DateTime, Datelike, Duration, NaiveDate, TimeZone, Utc, Weekday};
use chrono_tz::Europe::Amsterdam;
use proptest::prelude::*;
use sqlx::{Connection, PgConnection};

use super::*;
use crate::config::{Config, SourceConfig};
use crate::store::{Completion, LeaseOutcome, RunMode, RunRecord, Store};
use crate::sync::SyncError;
use crate::testdb::{self, Kind};

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, mo, d, h, mi, 0)
        .single()
        .expect("valid UTC time")
}

/// Amsterdam wall-clock time that exists exactly once.
fn ams(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
    Amsterdam
        .with_ymd_and_hms(y, mo, d, h, mi, 0)
        .single()
        .expect("unambiguous Amsterdam time")
        .with_timezone(&Utc)
}

/// The last Sunday of a month (the EU switches DST then).
fn last_sunday(year: i32, month: u32) -> NaiveDate {
    let mut d = NaiveDate::from_ymd_opt(year, month + 1, 1)
        .expect("first of next month")
        .pred_opt()
        .expect("last of month");
    while d.weekday() != Weekday::Sun {
        d = d.pred_opt().expect("earlier day");
    }
    d
}

fn sched(expr: &str) -> CronSchedule {
    CronSchedule::parse_in(expr, "Europe/Amsterdam").expect("schedule parses")
}

/// Every firing in `(from, to]`.
fn firings(s: &CronSchedule, from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<DateTime<Utc>> {
    let mut out = Vec::new();
    let mut t = from;
    while let Some(next) = s.next_after(t) {
        if next > to {
            break;
        }
        out.push(next);
        t = next;
    }
    out
}

fn plan(expr: &str, full_mode: bool, full: Option<&str>) -> SourcePlan {
    SourcePlan {
        source: "okc-2".into(),
        full_mode,
        schedule: sched(expr),
        full_schedule: full.map(sched),
    }
}

fn ran_at(t: DateTime<Utc>, full: bool) -> ScheduleHistory {
    ScheduleHistory {
        last_started: Some(t),
        last_full_started: full.then_some(t),
        last_success_at: Some(t),
    }
}

// ---------------------------------------------------------------------------------------------
// DST rule
// ---------------------------------------------------------------------------------------------

#[test]
fn the_dst_nights_of_2026_and_2027_are_the_last_sundays_of_march_and_october() {
    assert_eq!(
        last_sunday(2026, 3),
        NaiveDate::from_ymd_opt(2026, 3, 29).expect("date")
    );
    assert_eq!(
        last_sunday(2026, 10),
        NaiveDate::from_ymd_opt(2026, 10, 25).expect("date")
    );
    assert_eq!(
        last_sunday(2027, 3),
        NaiveDate::from_ymd_opt(2027, 3, 28).expect("date")
    );
    assert_eq!(
        last_sunday(2027, 10),
        NaiveDate::from_ymd_opt(2027, 10, 31).expect("date")
    );
}

#[test]
fn a_time_skipped_in_spring_runs_once_at_the_first_valid_time_after_it() {
    let s = sched("0 30 2 * * *");
    for year in [2026, 2027] {
        let day = last_sunday(year, 3);
        let (m, d) = (day.month(), day.day());
        let saturday = ams(year, m, d - 1, 12, 0);
        let monday = ams(year, m, d + 1, 12, 0);
        // 02:30 does not exist that night; 03:00 CEST (01:00 UTC) is the first valid time.
        assert_eq!(
            firings(&s, saturday, monday),
            vec![utc(year, m, d, 1, 0), ams(year, m, d + 1, 2, 30)],
            "spring {year}"
        );
    }
}

#[test]
fn a_time_repeated_in_autumn_runs_once_at_its_first_occurrence() {
    let s = sched("0 30 2 * * *");
    for year in [2026, 2027] {
        let day = last_sunday(year, 10);
        let (m, d) = (day.month(), day.day());
        let saturday = ams(year, m, d - 1, 12, 0);
        let next_day = day.succ_opt().expect("next day");
        let after = ams(year, next_day.month(), next_day.day(), 12, 0);
        // 02:30 happens at 00:30 UTC (CEST) and again at 01:30 UTC (CET): only the first.
        assert_eq!(
            firings(&s, saturday, after),
            vec![
                utc(year, m, d, 0, 30),
                ams(year, next_day.month(), next_day.day(), 2, 30)
            ],
            "autumn {year}"
        );
        // Asked during the repeated hour, after the first occurrence: not again that night.
        let second = utc(year, m, d, 1, 29);
        assert_eq!(
            s.next_after(second),
            Some(ams(year, next_day.month(), next_day.day(), 2, 30)),
            "autumn {year}, asked during the repeated hour"
        );
    }
}

#[test]
fn slots_inside_the_spring_gap_fold_into_one_run_at_its_end() {
    let s = sched("0 */15 * * * *");
    for year in [2026, 2027] {
        let day = last_sunday(year, 3);
        let (m, d) = (day.month(), day.day());
        // 00:45 UTC = 01:45 CET; 02:00–02:45 do not exist and all become 03:00 CEST, which
        // is itself a slot: one firing at 01:00 UTC.
        let got = firings(&s, utc(year, m, d, 0, 40), utc(year, m, d, 1, 30));
        assert_eq!(
            got,
            vec![
                utc(year, m, d, 0, 45),
                utc(year, m, d, 1, 0),
                utc(year, m, d, 1, 15),
                utc(year, m, d, 1, 30)
            ],
            "spring {year}"
        );
    }
}

#[test]
fn slots_in_the_repeated_autumn_hour_fire_only_in_its_first_pass() {
    let s = sched("0 */15 * * * *");
    for year in [2026, 2027] {
        let day = last_sunday(year, 10);
        let (m, d) = (day.month(), day.day());
        // 00:00–00:45 UTC are 02:00–02:45 CEST; 01:00–01:45 UTC repeat them in CET and do not
        // fire; 02:00 UTC is 03:00 CET.
        let got = firings(
            &s,
            utc(year, m, d, 23, 59) - Duration::days(1),
            utc(year, m, d, 2, 0),
        );
        assert_eq!(
            got,
            vec![
                utc(year, m, d, 0, 0),
                utc(year, m, d, 0, 15),
                utc(year, m, d, 0, 30),
                utc(year, m, d, 0, 45),
                utc(year, m, d, 2, 0)
            ],
            "autumn {year}"
        );
    }
}

#[test]
fn the_scheduler_runs_the_spring_night_once_under_an_injected_clock() {
    let p = plan("0 30 2 * * *", true, None);
    for year in [2026, 2027] {
        let day = last_sunday(year, 3);
        let (m, d) = (day.month(), day.day());
        let clock = ManualClock::new(ams(year, m, d - 1, 2, 30));
        let mut history = ran_at(clock.now(), true);
        let mut runs = Vec::new();
        // Walk the night minute by minute, "running" whenever the scheduler says so.
        while clock.now() < ams(year, m, d, 12, 0) {
            clock.advance(Duration::minutes(1));
            if let Some(dec) = decide(&p, &history, clock.now()) {
                assert_eq!(dec.missed, 0);
                runs.push(clock.now());
                history = ran_at(clock.now(), true);
            }
        }
        assert_eq!(runs, vec![utc(year, m, d, 1, 0)], "spring {year}");
    }
}

#[test]
fn the_scheduler_runs_the_autumn_night_once_under_an_injected_clock() {
    let p = plan("0 30 2 * * *", true, None);
    for year in [2026, 2027] {
        let day = last_sunday(year, 10);
        let (m, d) = (day.month(), day.day());
        let clock = ManualClock::new(ams(year, m, d - 1, 2, 30));
        let mut history = ran_at(clock.now(), true);
        let mut runs = Vec::new();
        while clock.now() < utc(year, m, d, 12, 0) {
            clock.advance(Duration::minutes(1));
            if decide(&p, &history, clock.now()).is_some() {
                runs.push(clock.now());
                history = ran_at(clock.now(), true);
            }
        }
        assert_eq!(runs, vec![utc(year, m, d, 0, 30)], "autumn {year}");
    }
}

proptest! {
    /// Whatever the instant and the (minute-granular) schedule, the next firing is strictly
    /// later, no more than a day and a bit away, and the one after it later still.
    #[test]
    fn next_firings_strictly_increase(
        secs in 1_700_000_000i64..1_900_000_000i64,
        minute in 0u32..60,
        hour in 0u32..24,
    ) {
        let s = sched(&format!("0 {minute} {hour} * * *"));
        let t = DateTime::from_timestamp(secs, 0).expect("timestamp");
        let a = s.next_after(t).expect("a daily schedule fires again");
        prop_assert!(a > t);
        prop_assert!(a - t <= Duration::hours(26));
        let b = s.next_after(a).expect("and again");
        prop_assert!(b > a);
    }
}

// ---------------------------------------------------------------------------------------------
// Catch-up, full reconciliation, never run
// ---------------------------------------------------------------------------------------------

#[test]
fn after_downtime_missed_slots_are_run_once_not_once_per_slot() {
    let p = plan("0 30 2 * * *", true, None);
    let last = ams(2026, 6, 1, 2, 30);
    let now = ams(2026, 6, 4, 9, 0);
    let dec = decide(&p, &ran_at(last, true), now).expect("due after downtime");
    assert_eq!(dec.slot, ams(2026, 6, 4, 2, 30), "serves the latest slot");
    assert_eq!(dec.missed, 2, "June 2 and 3 folded in");
    assert_eq!(dec.reason, DueReason::Scheduled);
    // Once it ran (now), nothing is due until the next slot.
    let after = ran_at(now, true);
    assert!(decide(&p, &after, now + Duration::hours(1)).is_none());
    assert!(decide(&p, &after, ams(2026, 6, 5, 2, 30)).is_some());
}

#[test]
fn a_source_that_never_ran_is_due_at_once() {
    let p = plan("0 30 2 * * *", false, Some("0 0 3 * * Sun"));
    let now = ams(2026, 6, 3, 14, 7);
    let dec = decide(&p, &ScheduleHistory::default(), now).expect("due");
    assert_eq!(dec.reason, DueReason::NeverRun);
    assert!(
        !dec.full,
        "an incremental source starts incremental, like `sync`"
    );
    assert_eq!(next_due(&p, &ScheduleHistory::default(), now), Some(now));
}

#[test]
fn an_incremental_source_gets_its_weekly_full_reconciliation() {
    let p = plan("0 0 * * * *", false, Some("0 0 3 * * Sun"));
    // Sunday 7 June 2026; hourly incremental runs all along.
    let sunday_3 = ams(2026, 6, 7, 3, 0);
    let mut history = ran_at(ams(2026, 6, 7, 2, 0), false);
    history.last_full_started = Some(ams(2026, 5, 31, 3, 0));
    let dec = decide(&p, &history, sunday_3).expect("due at 03:00");
    assert!(dec.full, "{dec:?}");
    assert_eq!(dec.reason, DueReason::FullReconciliation);
    // The full run serves the 03:00 incremental slot too; 04:00 is incremental again.
    let history = ran_at(sunday_3, true);
    assert!(decide(&p, &history, sunday_3 + Duration::minutes(30)).is_none());
    let dec = decide(&p, &history, ams(2026, 6, 7, 4, 0)).expect("due at 04:00");
    assert!(!dec.full);
    assert_eq!(
        next_due(&p, &history, sunday_3),
        Some(ams(2026, 6, 7, 4, 0))
    );
}

#[test]
fn incremental_runs_do_not_serve_the_full_schedule() {
    let p = plan("0 */10 * * * *", false, Some("0 0 3 * * Sun"));
    let mut history = ran_at(ams(2026, 6, 7, 3, 0), false);
    history.last_full_started = Some(ams(2026, 5, 31, 3, 0));
    // An incremental run happened at 03:00 (manually, say): the full slot is still owed.
    let dec = decide(&p, &history, ams(2026, 6, 7, 3, 5)).expect("full still due");
    assert!(dec.full);
}

// ---------------------------------------------------------------------------------------------
// Staleness
// ---------------------------------------------------------------------------------------------

#[test]
fn a_source_is_stale_only_when_its_last_success_is_older_than_the_limit() {
    let limit = Duration::hours(36);
    let now = utc(2026, 6, 3, 12, 0);
    assert!(is_stale(None, now, limit), "never succeeded");
    assert!(
        !is_stale(Some(now - limit), now, limit),
        "exactly the limit"
    );
    assert!(is_stale(
        Some(now - limit - Duration::seconds(1)),
        now,
        limit
    ));
    assert!(!is_stale(Some(now - Duration::hours(1)), now, limit));
}

// ---------------------------------------------------------------------------------------------
// Stores: leases and two scheduler instances on one database
// ---------------------------------------------------------------------------------------------

/// A fresh database: a SQLite file, or a new PostgreSQL database (see [`crate::testdb`]).
struct Db(testdb::TestDb);

impl std::ops::Deref for Db {
    type Target = testdb::TestDb;
    fn deref(&self) -> &testdb::TestDb {
        &self.0
    }
}

impl Db {
    async fn all() -> Vec<Db> {
        testdb::targets("sched").await.into_iter().map(Db).collect()
    }

    async fn open(&self) -> Store {
        Store::open(&self.url)
            .await
            .unwrap_or_else(|e| panic!("open {}: {e}", self.name))
    }

    /// Stamps a finished run (and the source's last success, if it was that run) with the
    /// injected clock's time, behind the store's back (the store stamps the real time).
    async fn stamp(&self, run: i64, at: DateTime<Utc>) {
        if let Kind::Sqlite { path, .. } = &self.kind {
            let conn = rusqlite::Connection::open(path).expect("open sqlite");
            conn.busy_timeout(std::time::Duration::from_secs(10))
                .expect("busy timeout");
            let at = at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
            conn.execute(
                "UPDATE runs SET started_at = ?1, finished_at = ?1 WHERE id = ?2",
                rusqlite::params![at, run],
            )
            .expect("update run");
            conn.execute(
                "UPDATE sources SET last_success_at = ?1 WHERE last_success_run = ?2",
                rusqlite::params![at, run],
            )
            .expect("update source");
        } else {
            let mut conn = PgConnection::connect(&self.url).await.expect("connect");
            sqlx::query("UPDATE runs SET started_at = $1, finished_at = $1 WHERE id = $2")
                .bind(at)
                .bind(run)
                .execute(&mut conn)
                .await
                .expect("update run");
            sqlx::query("UPDATE sources SET last_success_at = $1 WHERE last_success_run = $2")
                .bind(at)
                .bind(run)
                .execute(&mut conn)
                .await
                .expect("update source");
            let _ = conn.close().await;
        }
    }

    async fn cleanup(self) {
        self.0.drop_database().await;
    }
}

#[tokio::test]
async fn a_lease_is_exclusive_until_released_or_expired_on_every_store() {
    for db in Db::all().await {
        eprintln!("--- backend: {}", db.name);
        let a = db.open().await;
        let b = db.open().await; // a second instance: its own connection(s)
        let t0 = utc(2026, 6, 1, 2, 30);
        let ttl = Duration::minutes(15);
        assert_eq!(
            a.try_lease("okc-2", "a", t0, t0 + ttl)
                .await
                .expect("lease"),
            LeaseOutcome::Acquired
        );
        match b
            .try_lease("okc-2", "b", t0, t0 + ttl)
            .await
            .expect("lease")
        {
            LeaseOutcome::HeldBy { holder, expires_at } => {
                assert_eq!(holder, "a");
                assert_eq!(expires_at, t0 + ttl);
            }
            other => panic!("{}: expected held, got {other:?}", db.name),
        }
        // Another source is independent.
        assert_eq!(
            b.try_lease("other", "b", t0, t0 + ttl)
                .await
                .expect("lease"),
            LeaseOutcome::Acquired
        );
        // Only the holder renews; a non-holder's release changes nothing.
        assert!(
            a.renew_lease("okc-2", "a", t0 + ttl * 2)
                .await
                .expect("renew")
        );
        assert!(
            !b.renew_lease("okc-2", "b", t0 + ttl * 4)
                .await
                .expect("renew")
        );
        b.release_lease("okc-2", "b").await.expect("release");
        assert!(matches!(
            b.try_lease("okc-2", "b", t0 + ttl, t0 + ttl * 2)
                .await
                .expect("lease"),
            LeaseOutcome::HeldBy { .. }
        ));
        // Expired (a crashed holder): taken over.
        assert_eq!(
            b.try_lease("okc-2", "b", t0 + ttl * 2, t0 + ttl * 3)
                .await
                .expect("lease"),
            LeaseOutcome::Acquired
        );
        assert!(
            !a.renew_lease("okc-2", "a", t0 + ttl * 5)
                .await
                .expect("renew")
        );
        // Released: free for anyone.
        b.release_lease("okc-2", "b").await.expect("release");
        assert_eq!(
            a.try_lease("okc-2", "a", t0 + ttl * 2, t0 + ttl * 3)
                .await
                .expect("lease"),
            LeaseOutcome::Acquired
        );
        db.cleanup().await;
    }
}

/// A runner that records a real (empty, published) run in the store, stamped with the
/// injected clock's time, optionally waiting for a signal first.
struct RecordingRunner<'a> {
    store: Store,
    db: &'a Db,
    clock: ManualClock,
    started: std::sync::Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
    proceed: tokio::sync::Mutex<Option<tokio::sync::oneshot::Receiver<()>>>,
    calls: std::sync::Mutex<Vec<(String, bool)>>,
}

impl<'a> RecordingRunner<'a> {
    fn new(store: Store, db: &'a Db, clock: ManualClock) -> Self {
        RecordingRunner {
            store,
            db,
            clock,
            started: std::sync::Mutex::new(None),
            proceed: tokio::sync::Mutex::new(None),
            calls: std::sync::Mutex::new(Vec::new()),
        }
    }

    fn calls(&self) -> Vec<(String, bool)> {
        self.calls.lock().expect("calls").clone()
    }
}

impl RunSource for RecordingRunner<'_> {
    async fn run(&self, source: &SourceConfig, full: bool) -> Result<RunRecord, SyncError> {
        self.calls
            .lock()
            .expect("calls")
            .push((source.name.clone(), full));
        if let Some(tx) = self.started.lock().expect("started").take() {
            let _ = tx.send(());
        }
        if let Some(rx) = self.proceed.lock().await.take() {
            let _ = rx.await;
        }
        let mode = if full {
            RunMode::Full
        } else {
            RunMode::Incremental
        };
        let run = self.store.begin_run(&source.name, mode).await?;

        let rec = self
            .store
            .complete_run(
                run,
                Completion {
                    read: 0,
                    mode,
                    cursor: None,
                    guard: None,
                    accept: false,
                },
            )
            .await?;
        self.db.stamp(run, self.clock.now()).await;
        Ok(rec)
    }
}

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

fn config(store: &str) -> Config {
    let text = format!(
        r#"
store = "{store}"
[schedule]
lease_secs = 900
[[source]]
name = "okc-2"
kind = "xml_export"
location = "x.xml"
mode = "full"
schedule = "0 30 2 * * *"
mapping = "mappings/okc-2.toml"
"#
    );
    Config::parse(&text, "test.toml", &deploy_dir()).expect("config parses")
}

#[tokio::test]
async fn a_second_instance_skips_a_source_whose_run_is_in_progress_on_every_store() {
    for db in Db::all().await {
        eprintln!("--- backend: {}", db.name);
        let cfg = config(&db.url);
        let clock = ManualClock::new(ams(2026, 6, 1, 2, 30));
        let (store_a, store_b) = (db.open().await, db.open().await);
        let a = Scheduler::from_config(&cfg, store_a.clone(), clock.clone())
            .expect("scheduler a")
            .with_holder("instance-a");
        let b = Scheduler::from_config(&cfg, store_b.clone(), clock.clone())
            .expect("scheduler b")
            .with_holder("instance-b");
        let runner_a = RecordingRunner::new(store_a.clone(), &db, clock.clone());
        let runner_b = RecordingRunner::new(store_b.clone(), &db, clock.clone());
        let (started_tx, started_rx) = tokio::sync::oneshot::channel();
        let (proceed_tx, proceed_rx) = tokio::sync::oneshot::channel();
        *runner_a.started.lock().expect("started") = Some(started_tx);
        *runner_a.proceed.lock().await = Some(proceed_rx);

        // A starts the (never run, so due) source and waits inside the run; B looks meanwhile.
        let tick_a = a.tick(&cfg.sources, &runner_a, || false);
        let tick_b = async {
            started_rx.await.expect("a started");
            let reports = b.tick(&cfg.sources, &runner_b, || false).await;
            let _ = proceed_tx.send(());
            reports
        };
        let (ra, rb) = tokio::join!(tick_a, tick_b);
        let (ra, rb) = (ra.expect("tick a"), rb.expect("tick b"));
        assert_eq!(ra.len(), 1);
        assert!(matches!(ra[0].action, Action::Ran(_)), "{:?}", ra[0].action);
        assert_eq!(rb.len(), 1, "{}: B saw the source due", db.name);
        match &rb[0].action {
            Action::Skipped { holder, .. } => assert_eq!(holder, "instance-a"),
            other => panic!("{}: B should have skipped, did {other:?}", db.name),
        }
        assert_eq!(runner_a.calls(), vec![("okc-2".to_owned(), true)]);
        assert!(runner_b.calls().is_empty(), "B never ran the source");

        // A released the lease and its run is in the history: neither runs it again today.
        assert!(
            b.tick(&cfg.sources, &runner_b, || false)
                .await
                .expect("tick")
                .is_empty()
        );
        assert!(
            a.tick(&cfg.sources, &runner_a, || false)
                .await
                .expect("tick")
                .is_empty()
        );
        assert_eq!(
            b.next_wake().await.expect("wake"),
            Some(ams(2026, 6, 2, 2, 30))
        );

        // Next night, A has crashed holding the lease: B skips until the lease expires.
        clock.set(ams(2026, 6, 2, 2, 30));
        let now = clock.now();
        assert_eq!(
            store_a
                .try_lease("okc-2", "instance-a", now, now + Duration::minutes(15))
                .await
                .expect("lease"),
            LeaseOutcome::Acquired
        );
        let r = b
            .tick(&cfg.sources, &runner_b, || false)
            .await
            .expect("tick");
        assert!(
            matches!(r[0].action, Action::Skipped { .. }),
            "{:?}",
            r[0].action
        );
        clock.advance(Duration::minutes(16));
        let r = b
            .tick(&cfg.sources, &runner_b, || false)
            .await
            .expect("tick");
        assert!(matches!(r[0].action, Action::Ran(_)), "{:?}", r[0].action);
        assert_eq!(runner_b.calls(), vec![("okc-2".to_owned(), true)]);

        // Freshness follows the published runs.
        let fresh = freshness(&store_b, &cfg, clock.now())
            .await
            .expect("freshness");
        assert_eq!(fresh.len(), 1);
        assert!(!fresh[0].stale, "{fresh:?}");
        let later = clock.now() + Duration::hours(40);
        let fresh = freshness(&store_b, &cfg, later).await.expect("freshness");
        assert!(fresh[0].stale, "{fresh:?}");
        db.cleanup().await;
    }
}

#[tokio::test]
async fn a_tick_stops_starting_runs_when_asked_to_stop() {
    let db = Db::all().await.into_iter().next().expect("sqlite");
    let cfg = config(&db.url);
    let clock = ManualClock::new(ams(2026, 6, 1, 2, 30));
    let store = db.open().await;
    let s = Scheduler::from_config(&cfg, store.clone(), clock.clone()).expect("scheduler");
    let runner = RecordingRunner::new(store, &db, clock);
    let r = s.tick(&cfg.sources, &runner, || true).await.expect("tick");
    assert!(r.is_empty());
    assert!(runner.calls().is_empty());
}

/// One cron field with values up to `max` (a little beyond, so invalid ones occur too): a
/// wildcard, a value, a range, a step or a list.
fn field(max: u32) -> impl Strategy<Value = String> {
    let v = 0..max + 2;
    prop_oneof![
        Just("*".to_owned()),
        v.clone().prop_map(|n| n.to_string()),
        (v.clone(), v.clone()).prop_map(|(a, b)| format!("{a}-{b}")),
        (1..max + 2).prop_map(|k| format!("*/{k}")),
        (v.clone(), v).prop_map(|(a, b)| format!("{a},{b}")),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Arbitrary (sometimes invalid) expressions never panic; valid ones fire strictly later
    /// each time, whatever the instant — the range covers the DST nights of 2026 and 2027.
    #[test]
    fn arbitrary_cron_expressions_never_panic_and_fire_forward(
        sec in field(59),
        min in field(59),
        hour in field(23),
        day in field(31),
        month in field(12),
        weekday in prop_oneof![Just("*"), Just("Sun"), Just("Mon-Fri"), Just("8")],
        secs in 1_774_000_000i64..1_825_000_000i64,
    ) {
        let expr = format!("{sec} {min} {hour} {day} {month} {weekday}");
        if let Ok(s) = CronSchedule::parse_in(&expr, "Europe/Amsterdam") {
            let t = DateTime::from_timestamp(secs, 0).expect("timestamp");
            if let Some(a) = s.next_after(t) {
                prop_assert!(a > t, "{expr}: {a} after {t}");
                if let Some(b) = s.next_after(a) {
                    prop_assert!(b > a, "{expr}: {b} after {a}");
                }
            }
        }
    }
}
