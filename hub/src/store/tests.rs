//! Store tests: every behaviour is checked on every backend — a fresh SQLite file always, and
//! a fresh PostgreSQL database per test when `MATCHPOINT_TEST_POSTGRES_URL` is set.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::OnceLock;

use chrono::{Duration, NaiveDate, Utc};
use matchpoint_schemas::bsn::passes_elfproef;
use matchpoint_schemas::{
    Bsn, ContactPerson, Involvement, InvolvementStatus, KeyPurpose, LifeDomain, MasterKey,
    Pseudonym, Pseudonymiser, Relation, RelationKind,
};
use sqlx::{AssertSqlSafe, Connection, PgConnection};

use crate::testdb::{self, Kind, with_database};

use super::{
    Completion, QuarantineEntry, QuarantineFilter, RunCounts, RunMode, RunRecord, RunStatus,
    ShrinkGuard, Store, StoreError, StoredInvolvement,
};

pub(super) const SRC: &str = "okc-noord";

// ---------------------------------------------------------------------------------------------
// Backends
// ---------------------------------------------------------------------------------------------

/// Where a test store lives, before it is opened (see [`crate::testdb`]).
struct Target(testdb::TestDb);

impl std::ops::Deref for Target {
    type Target = testdb::TestDb;
    fn deref(&self) -> &testdb::TestDb {
        &self.0
    }
}

/// An opened test store.
struct Backend {
    store: Store,
    target: Target,
}

/// Fresh, empty targets: a SQLite file always, a PostgreSQL database when the variable is set.
async fn targets() -> Vec<Target> {
    testdb::targets("store")
        .await
        .into_iter()
        .map(Target)
        .collect()
}

impl Target {
    async fn open(self) -> Backend {
        let store = Store::open(&self.url)
            .await
            .unwrap_or_else(|err| panic!("open {} store: {err}", self.name));
        Backend {
            store,
            target: self,
        }
    }

    /// Drops the test database (PostgreSQL); the SQLite tempdir goes with the value.
    async fn cleanup(self) {
        if let Kind::Postgres {
            admin_url,
            database,
        } = &self.kind
            && let Ok(mut admin) = PgConnection::connect(admin_url).await
        {
            let _ = sqlx::raw_sql(AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {database} WITH (FORCE)"
            )))
            .execute(&mut admin)
            .await;
            let _ = admin.close().await;
        }
    }

    /// Runs SQL directly against the database, behind the store's back.
    async fn exec(&self, sql: &str) {
        match &self.kind {
            Kind::Sqlite { path, .. } => {
                let conn = rusqlite::Connection::open(path).expect("open sqlite");
                conn.busy_timeout(std::time::Duration::from_secs(10))
                    .expect("busy timeout");
                conn.execute_batch(sql).expect("exec sqlite");
            }
            Kind::Postgres { .. } => {
                let mut conn = PgConnection::connect(&self.url).await.expect("connect");
                sqlx::raw_sql(AssertSqlSafe(sql.to_owned()))
                    .execute(&mut conn)
                    .await
                    .expect("exec postgres");
                let _ = conn.close().await;
            }
        }
    }

    /// (record id, changed_run) of every involvement of the source: shows which rows a run
    /// rewrote.
    async fn changed_runs(&self, source: &str) -> Vec<(String, i64)> {
        match &self.kind {
            Kind::Sqlite { path, .. } => {
                let conn = rusqlite::Connection::open(path).expect("open sqlite");
                let mut st = conn
                    .prepare(
                        "SELECT source_record_id, changed_run FROM involvements
                         WHERE source = ?1 ORDER BY source_record_id",
                    )
                    .expect("prepare");
                st.query_map([source], |r| Ok((r.get(0)?, r.get(1)?)))
                    .expect("query")
                    .collect::<Result<_, _>>()
                    .expect("rows")
            }
            Kind::Postgres { .. } => {
                let mut conn = PgConnection::connect(&self.url).await.expect("connect");
                let rows = sqlx::query_as(
                    "SELECT source_record_id, changed_run FROM involvements
                     WHERE source = $1 ORDER BY source_record_id",
                )
                .bind(source)
                .fetch_all(&mut conn)
                .await
                .expect("query");
                let _ = conn.close().await;
                rows
            }
        }
    }
}

/// Runs `test` once per backend, each on a fresh store. The backend's name is printed first,
/// so a failure shows which one failed.
async fn on_every_backend(test: impl AsyncFn(&Backend)) {
    for target in targets().await {
        eprintln!("--- store backend: {}", target.name);
        let backend = target.open().await;
        test(&backend).await;
        let Backend { store, target } = backend;
        drop(store);
        target.cleanup().await;
    }
}

// ---------------------------------------------------------------------------------------------
// Records
// ---------------------------------------------------------------------------------------------

/// Organisation codes in mixed case, so a collation-dependent ORDER BY would show.
const ORGS: [&str; 3] = ["okc-noord", "GGD-AMS", "Samen_Doen"];
const DOMAINS: [LifeDomain; 4] = [
    LifeDomain::YouthHealth,
    LifeDomain::Parenting,
    LifeDomain::Debt,
    LifeDomain::Housing,
];

fn pseudonymiser() -> &'static Pseudonymiser {
    static P: OnceLock<Pseudonymiser> = OnceLock::new();
    P.get_or_init(|| {
        MasterKey::from_secret("k1", &[7u8; 32])
            .expect("key")
            .pseudonymiser(KeyPurpose::Index)
    })
}

/// Valid BSNs, generated with the elfproef.
fn valid_bsns(n: usize) -> Vec<Bsn> {
    (100_000_000u32..)
        .filter(|&v| passes_elfproef(v))
        .take(n)
        .map(|v| Bsn::parse(&format!("{v:09}")).expect("valid BSN"))
        .collect()
}

fn person(n: usize) -> Pseudonym {
    static BSNS: OnceLock<Vec<Bsn>> = OnceLock::new();
    let bsns = BSNS.get_or_init(|| valid_bsns(4000));
    pseudonymiser().pseudonymise(&bsns[n % bsns.len()])
}

/// Record ids alternate upper and lower case for the same reason as [`ORGS`].
fn record_id(n: usize) -> String {
    if n.is_multiple_of(2) {
        format!("R-{n:05}")
    } else {
        format!("r_{n:05}")
    }
}

pub(super) fn record(source: &str, n: usize) -> Involvement {
    Involvement {
        person: person(n),
        key_id: pseudonymiser().key_id().as_str().to_owned(),
        organisation_code: ORGS[n % ORGS.len()].into(),
        organisation_name: format!("Organisation {}", n % ORGS.len()),
        team: (!n.is_multiple_of(3)).then(|| "Team Noord".to_owned()),
        life_domain: DOMAINS[n % DOMAINS.len()],
        goal: Some(format!("goal {n}")),
        contact: ContactPerson {
            name: format!("Contact {n}"),
            role: Some("jeugdverpleegkundige".into()),
            phone: (n.is_multiple_of(2)).then(|| "020-5555555".to_owned()),
            email: Some(format!("contact{n}@example.org")),
        },
        start_date: NaiveDate::from_ymd_opt(2024, 1, 1).expect("date")
            + Duration::days(i64::try_from(n % 300).expect("small")),
        end_date: None,
        end_reason: None,
        status: if n % 7 == 3 {
            InvolvementStatus::Planned
        } else {
            InvolvementStatus::Active
        },
        coordinator: n.is_multiple_of(5),
        sensitive: n.is_multiple_of(11),
        shielded: false,
        purge_after: (n.is_multiple_of(4))
            .then(|| NaiveDate::from_ymd_opt(2031, 1, 1).expect("date")),
        source: source.into(),
        source_record_id: record_id(n),
        relations: if n.is_multiple_of(2) {
            vec![
                Relation {
                    kind: RelationKind::Parent,
                    other: person(n + 1000),
                },
                Relation {
                    kind: RelationKind::HouseholdMember,
                    other: person(n + 2000),
                },
            ]
        } else {
            Vec::new()
        },
    }
}

fn records(source: &str, range: std::ops::Range<usize>) -> Vec<Involvement> {
    range.map(|n| record(source, n)).collect()
}

/// The record with a new goal and different relations.
fn changed(mut r: Involvement) -> Involvement {
    r.goal = Some("a different goal".into());
    r.relations = vec![Relation {
        kind: RelationKind::Child,
        other: person(3000),
    }];
    r
}

/// How a published record reads back.
fn stored(r: &Involvement) -> StoredInvolvement {
    StoredInvolvement {
        source: r.source.clone(),
        source_record_id: r.source_record_id.clone(),
        person: r.person.to_hex(),
        key_id: r.key_id.clone(),
        organisation_code: r.organisation_code.clone(),
        life_domain: r.life_domain.as_str().into(),
        status: r.status.as_str().into(),
        end_date: r.end_date.map(|d| d.to_string()),
        content_hash: hex::encode(r.content_hash()),
        end_reason: r.end_reason.as_ref().map(|x| x.code.clone()),
    }
}

/// Published state of records, in the store's order (record id, byte order).
fn stored_all<'a>(rs: impl IntoIterator<Item = &'a Involvement>) -> Vec<StoredInvolvement> {
    let mut v: Vec<_> = rs.into_iter().map(stored).collect();
    v.sort_by(|a, b| a.source_record_id.cmp(&b.source_record_id));
    v
}

/// Relations of records, in the store's order.
fn relations_of<'a>(
    rs: impl IntoIterator<Item = &'a Involvement>,
) -> Vec<(String, String, String)> {
    let mut v: Vec<_> = rs
        .into_iter()
        .flat_map(|r| {
            r.relations.iter().map(|rel| {
                (
                    r.source_record_id.clone(),
                    rel.kind.as_str().to_owned(),
                    rel.other.to_hex(),
                )
            })
        })
        .collect();
    v.sort();
    v
}

/// A reject, optionally with a sealed raw record expiring `expires_in_days` from now.
fn reject(id: &str, index: u64, sealed: Option<(&[u8], i64)>) -> QuarantineEntry {
    QuarantineEntry {
        source_record_id: Some(id.into()),
        record_index: index,
        byte_offset: index * 100,
        field: Some("bsn".into()),
        reason_code: "invalid_bsn".into(),
        reason: "the BSN fails the elfproef".into(),
        sealed_raw: sealed.map(|(raw, _)| raw.to_vec()),
        sealed_key_id: sealed.map(|_| "k1".to_owned()),
        sealed_expires_at: sealed.map(|(_, days)| Utc::now() + Duration::days(days)),
        replay_of: None,
    }
}

fn guarded(read: u64, mode: RunMode, max_end_share: f64) -> Completion {
    Completion {
        read,
        mode,
        cursor: None,
        guard: Some(ShrinkGuard { max_end_share }),
        accept: false,
    }
}

fn full(read: u64) -> Completion {
    guarded(read, RunMode::Full, 0.3)
}

/// One full run delivering `rs` in one batch.
pub(super) async fn publish_full(store: &Store, source: &str, rs: &[Involvement]) -> RunRecord {
    let run = store.begin_run(source, RunMode::Full).await.expect("begin");
    let out = store
        .stage(run, rs.to_vec(), Vec::new())
        .await
        .expect("stage");
    assert!(out.duplicates.is_empty(), "{:?}", out.duplicates);
    store
        .complete_run(run, full(rs.len() as u64))
        .await
        .expect("complete")
}

fn today() -> String {
    Utc::now().date_naive().to_string()
}

fn is_run_state(r: &Result<impl std::fmt::Debug, StoreError>) -> bool {
    matches!(r, Err(StoreError::RunState { .. }))
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn first_full_run_inserts_everything_and_stores_relations() {
    on_every_backend(async |b| {
        let s = &b.store;
        let rs = records(SRC, 0..12);
        let run = s.begin_run(SRC, RunMode::Full).await.expect("begin");
        assert_eq!(s.run(run).await.expect("run").status, RunStatus::Running);
        let out = s
            .stage(run, rs.clone(), vec![reject("bad-1", 13, None)])
            .await
            .expect("stage");
        assert!(out.duplicates.is_empty());
        let rec = s.complete_run(run, full(13)).await.expect("complete");
        assert_eq!(rec.status, RunStatus::Succeeded);
        assert_eq!(
            rec.counts,
            RunCounts {
                read: 13,
                accepted: 12,
                rejected: 1,
                inserted: 12,
                updated: 0,
                unchanged: 0,
                ended: 0,
            }
        );
        assert!(rec.finished_at.is_some() && rec.error.is_none());
        assert_eq!(s.involvements(SRC).await.expect("read"), stored_all(&rs));
        let rels = s.relations(SRC).await.expect("relations");
        assert_eq!(rels, relations_of(&rs));
        assert_eq!(rels.len(), 12);

        let stats = s.stats().await.expect("stats");
        assert_eq!(stats.len(), 1);
        let st = &stats[0];
        assert_eq!(st.source, SRC);
        assert_eq!((st.planned, st.active, st.ended), (2, 10, 0));
        assert_eq!((st.persons, st.relations, st.quarantined), (12, 12, 1));
        assert_eq!(st.last_success_run, Some(run));
        assert_eq!(st.last_success_at, rec.finished_at);

        let runs = s.runs(Some(SRC), 10).await.expect("runs");
        assert_eq!(runs.iter().map(|r| r.id).collect::<Vec<_>>(), vec![run]);
        assert!(
            s.runs(Some("elsewhere"), 10)
                .await
                .expect("runs")
                .is_empty()
        );
        assert!(matches!(
            s.run(run + 1000).await,
            Err(StoreError::NoSuchRun(_))
        ));
    })
    .await;
}

#[tokio::test]
async fn second_identical_run_reports_everything_unchanged_and_rewrites_no_row() {
    on_every_backend(async |b| {
        let s = &b.store;
        let rs = records(SRC, 0..12);
        let first = publish_full(s, SRC, &rs).await;
        let before = s.involvements(SRC).await.expect("read");
        let rels_before = s.relations(SRC).await.expect("relations");
        let changed_before = b.target.changed_runs(SRC).await;
        assert!(changed_before.iter().all(|(_, run)| *run == first.id));

        let second = publish_full(s, SRC, &rs).await;
        assert_eq!(second.status, RunStatus::Succeeded);
        assert_eq!(
            second.counts,
            RunCounts {
                read: 12,
                accepted: 12,
                rejected: 0,
                inserted: 0,
                updated: 0,
                unchanged: 12,
                ended: 0,
            }
        );
        assert_eq!(s.involvements(SRC).await.expect("read"), before);
        assert_eq!(s.relations(SRC).await.expect("relations"), rels_before);
        assert_eq!(b.target.changed_runs(SRC).await, changed_before);
        let stats = s.stats().await.expect("stats");
        assert_eq!(stats[0].last_success_run, Some(second.id));
    })
    .await;
}

#[tokio::test]
async fn changed_record_is_updated_missing_record_is_ended_and_reappearing_record_is_active_again()
{
    on_every_backend(async |b| {
        let s = &b.store;
        let rs = records(SRC, 0..10);
        let first = publish_full(s, SRC, &rs).await;

        // Record 0 changes, record 8 (with relations) is no longer delivered.
        let mut second_rs = rs.clone();
        second_rs[0] = changed(second_rs[0].clone());
        second_rs.remove(8);
        let second = publish_full(s, SRC, &second_rs).await;
        assert_eq!(second.status, RunStatus::Succeeded);
        assert_eq!(
            (
                second.counts.inserted,
                second.counts.updated,
                second.counts.unchanged,
                second.counts.ended
            ),
            (0, 1, 8, 1)
        );
        let mut expected = stored_all(&second_rs);
        let mut gone = stored(&rs[8]);
        gone.status = "ended".into();
        gone.end_date = Some(today());
        gone.content_hash = String::new();
        expected.push(gone);
        expected.sort_by(|a, b| a.source_record_id.cmp(&b.source_record_id));
        assert_eq!(s.involvements(SRC).await.expect("read"), expected);
        // The changed record's relations are replaced; the ended record keeps its own.
        let mut rels = relations_of(&second_rs);
        rels.extend(relations_of([&rs[8]]));
        rels.sort();
        assert_eq!(s.relations(SRC).await.expect("relations"), rels);
        let changed_runs = b.target.changed_runs(SRC).await;
        for (id, run) in &changed_runs {
            let expect = if *id == record_id(0) || *id == record_id(8) {
                second.id
            } else {
                first.id
            };
            assert_eq!(*run, expect, "changed_run of {id}");
        }
        let st = &s.stats().await.expect("stats")[0];
        assert_eq!(st.ended, 1);

        // Everything is delivered as at first: record 0 reverts, record 8 is active again.
        let third = publish_full(s, SRC, &rs).await;
        assert_eq!(
            (
                third.counts.inserted,
                third.counts.updated,
                third.counts.unchanged,
                third.counts.ended
            ),
            (0, 2, 8, 0)
        );
        assert_eq!(s.involvements(SRC).await.expect("read"), stored_all(&rs));
        assert_eq!(
            s.relations(SRC).await.expect("relations"),
            relations_of(&rs)
        );
    })
    .await;
}

#[tokio::test]
async fn record_rejected_by_a_full_run_is_kept_as_it_was_rather_than_ended() {
    on_every_backend(async |b| {
        let s = &b.store;
        let rs = records(SRC, 0..10);
        publish_full(s, SRC, &rs).await;
        // Record 4 fails validation this time; record 9 is simply missing.
        let run = s.begin_run(SRC, RunMode::Full).await.expect("begin");
        let delivered: Vec<_> = rs[..9]
            .iter()
            .filter(|r| r.source_record_id != record_id(4))
            .cloned()
            .collect();
        s.stage(run, delivered, vec![reject(&record_id(4), 5, None)])
            .await
            .expect("stage");
        let rec = s.complete_run(run, full(9)).await.expect("complete");
        assert_eq!(rec.status, RunStatus::Succeeded);
        assert_eq!(
            (rec.counts.accepted, rec.counts.rejected, rec.counts.ended),
            (8, 1, 1)
        );
        let after = s.involvements(SRC).await.expect("read");
        let status_of = |id: String| {
            after
                .iter()
                .find(|i| i.source_record_id == id)
                .map(|i| i.status.clone())
        };
        assert_eq!(status_of(record_id(4)).as_deref(), Some("active"));
        assert_eq!(status_of(record_id(9)).as_deref(), Some("ended"));
    })
    .await;
}

#[tokio::test]
async fn shrink_guard_holds_a_half_delivery_and_accept_run_publishes_it() {
    on_every_backend(async |b| {
        let s = &b.store;
        let rs = records(SRC, 0..20);
        publish_full(s, SRC, &rs).await;
        let before = s.involvements(SRC).await.expect("read");

        let run = s.begin_run(SRC, RunMode::Full).await.expect("begin");
        s.stage(run, rs[..10].to_vec(), Vec::new())
            .await
            .expect("stage");
        let held = s.complete_run(run, full(10)).await.expect("complete");
        assert_eq!(held.status, RunStatus::Held);
        let why = held.error.clone().unwrap_or_default();
        assert!(
            why.starts_with("held: the run would end 10 of 20 active involvements"),
            "{why}"
        );
        assert_eq!((held.counts.accepted, held.counts.ended), (10, 10));
        assert_eq!(s.involvements(SRC).await.expect("read"), before);

        // What it would end, per organisation and domain, largest first.
        let mut groups: BTreeMap<(String, String), u64> = BTreeMap::new();
        for r in rs[10..]
            .iter()
            .filter(|r| r.status != InvolvementStatus::Ended)
        {
            *groups
                .entry((r.organisation_code.clone(), r.life_domain.as_str().into()))
                .or_default() += 1;
        }
        let mut expected: Vec<_> = groups.into_iter().collect();
        expected.sort_by(|(ka, a), (kb, b)| b.cmp(a).then(ka.cmp(kb)));
        let would_end = s.would_end(run).await.expect("would end");
        let got: Vec<_> = would_end
            .iter()
            .map(|w| {
                (
                    (w.organisation_code.clone(), w.life_domain.clone()),
                    w.count,
                )
            })
            .collect();
        assert_eq!(got, expected);
        assert_eq!(would_end.iter().map(|w| w.count).sum::<u64>(), 10);

        let accepted = s.accept_run(run).await.expect("accept");
        assert_eq!(accepted.status, RunStatus::Accepted);
        assert_eq!(
            (
                accepted.counts.inserted,
                accepted.counts.updated,
                accepted.counts.unchanged,
                accepted.counts.ended
            ),
            (0, 0, 10, 10)
        );
        let after = s.involvements(SRC).await.expect("read");
        assert_eq!(after.iter().filter(|i| i.status == "ended").count(), 10);
        assert!(
            after
                .iter()
                .filter(|i| i.status == "ended")
                .all(|i| i.end_date.as_deref() == Some(today().as_str()))
        );
        assert!(is_run_state(&s.accept_run(run).await));
        assert!(s.would_end(run).await.expect("would end").is_empty());
        assert_eq!(
            s.stats().await.expect("stats")[0].last_success_run,
            Some(run)
        );
    })
    .await;
}

#[tokio::test]
async fn empty_delivery_with_a_non_empty_index_is_held() {
    on_every_backend(async |b| {
        let s = &b.store;
        let rs = records(SRC, 0..5);
        publish_full(s, SRC, &rs).await;
        let run = s.begin_run(SRC, RunMode::Full).await.expect("begin");
        // Even a guard that allows ending everything holds an empty delivery.
        let held = s
            .complete_run(run, guarded(0, RunMode::Full, 1.0))
            .await
            .expect("complete");
        assert_eq!(held.status, RunStatus::Held);
        let why = held.error.unwrap_or_default();
        assert!(why.contains("holds no records"), "{why}");
        assert_eq!(s.involvements(SRC).await.expect("read"), stored_all(&rs));
        assert_eq!(s.would_end(run).await.expect("would end").len(), 5);

        // An empty first delivery of a new source is not held: there is nothing to wipe.
        let run = s
            .begin_run("new-source", RunMode::Full)
            .await
            .expect("begin");
        let rec = s.complete_run(run, full(0)).await.expect("complete");
        assert_eq!(rec.status, RunStatus::Succeeded);
    })
    .await;
}

#[tokio::test]
async fn newer_successful_run_supersedes_an_older_held_run() {
    on_every_backend(async |b| {
        let s = &b.store;
        let rs = records(SRC, 0..10);
        publish_full(s, SRC, &rs).await;

        let older = publish_full(s, SRC, &rs[..3]).await;
        assert_eq!(older.status, RunStatus::Held);
        let newer = publish_full(s, SRC, &rs[..2]).await;
        assert_eq!(newer.status, RunStatus::Held);
        // A newer held run already supersedes the older one.
        let older = s.run(older.id).await.expect("run");
        assert_eq!(older.status, RunStatus::Superseded);
        assert!(is_run_state(&s.accept_run(older.id).await));

        let good = publish_full(s, SRC, &rs).await;
        assert_eq!(good.status, RunStatus::Succeeded);
        let newest: Vec<_> = s
            .runs(Some(SRC), 2)
            .await
            .expect("runs")
            .iter()
            .map(|r| (r.id, r.status))
            .collect();
        assert_eq!(
            newest,
            [
                (good.id, RunStatus::Succeeded),
                (newer.id, RunStatus::Superseded)
            ]
        );
        let newer = s.run(newer.id).await.expect("run");
        assert_eq!(newer.status, RunStatus::Superseded);
        let why = newer.error.clone().unwrap_or_default();
        assert!(
            why.contains(&format!("superseded by run {}", good.id)),
            "{why}"
        );
        assert!(is_run_state(&s.accept_run(newer.id).await));
        assert!(s.would_end(newer.id).await.expect("would end").is_empty());
        assert_eq!(s.involvements(SRC).await.expect("read"), stored_all(&rs));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepting_a_held_run_while_a_newer_run_publishes_leaves_the_newer_state() {
    on_every_backend(async |b| {
        let s = &b.store;
        let rs = records(SRC, 0..10);
        publish_full(s, SRC, &rs).await;
        let held = publish_full(s, SRC, &rs[..3]).await;
        assert_eq!(held.status, RunStatus::Held);
        let newer_rs: Vec<_> = rs.iter().cloned().map(changed).collect();
        let newer = s.begin_run(SRC, RunMode::Full).await.expect("begin");
        s.stage(newer, newer_rs.clone(), Vec::new())
            .await
            .expect("stage");

        // Either order is valid; the two publications must not interleave.
        let (accepted, published) =
            tokio::join!(s.accept_run(held.id), s.complete_run(newer, full(10)));
        let published = published.expect("complete");
        assert_eq!(published.status, RunStatus::Succeeded);
        match accepted {
            Ok(rec) => {
                assert_eq!(rec.status, RunStatus::Accepted);
                assert_eq!(published.counts.updated, 10);
            }
            Err(err) => {
                assert!(matches!(err, StoreError::RunState { .. }), "{err}");
                let rec = s.run(held.id).await.expect("run");
                assert_eq!(rec.status, RunStatus::Superseded);
                assert_eq!(published.counts.updated, 10);
            }
        }
        assert_eq!(
            s.involvements(SRC).await.expect("read"),
            stored_all(&newer_rs)
        );
        assert_eq!(
            s.relations(SRC).await.expect("relations"),
            relations_of(&newer_rs)
        );
    })
    .await;
}

#[tokio::test]
async fn failed_run_publishes_nothing_and_an_unfinished_run_is_marked_interrupted() {
    on_every_backend(async |b| {
        let s = &b.store;
        let rs = records(SRC, 0..6);
        let first = publish_full(s, SRC, &rs).await;
        let before = s.involvements(SRC).await.expect("read");

        let run = s.begin_run(SRC, RunMode::Full).await.expect("begin");
        let changed_rs: Vec<_> = rs.iter().cloned().map(changed).collect();
        s.stage(run, changed_rs, vec![reject("bad", 7, None)])
            .await
            .expect("stage");
        s.fail_run(run, 7, "the export could not be read")
            .await
            .expect("fail");
        let failed = s.run(run).await.expect("run");
        assert_eq!(failed.status, RunStatus::Failed);
        assert_eq!(
            failed.error.as_deref(),
            Some("the export could not be read")
        );
        assert_eq!((failed.counts.read, failed.counts.rejected), (7, 1));
        assert_eq!(s.involvements(SRC).await.expect("read"), before);
        assert!(s.complete_run(run, full(7)).await.is_err());
        assert_eq!(s.involvements(SRC).await.expect("read"), before);

        // A run of another source is not touched by this source's next run.
        let other = s.begin_run("other", RunMode::Full).await.expect("begin");
        let unfinished = s.begin_run(SRC, RunMode::Full).await.expect("begin");
        s.stage(unfinished, rs.clone(), Vec::new())
            .await
            .expect("stage");
        s.set_phase(unfinished, "staging").await.expect("phase");
        let next = s.begin_run(SRC, RunMode::Full).await.expect("begin");
        let interrupted = s.run(unfinished).await.expect("run");
        assert_eq!(interrupted.status, RunStatus::Failed);
        let why = interrupted.error.clone().unwrap_or_default();
        assert!(
            why.starts_with("interrupted:") && why.contains("(phase staging)"),
            "{why}"
        );
        assert!(interrupted.finished_at.is_some());
        assert!(s.stage(unfinished, rs.clone(), Vec::new()).await.is_err());
        assert_eq!(s.run(other).await.expect("run").status, RunStatus::Running);

        s.stage(next, rs.clone(), Vec::new()).await.expect("stage");
        let rec = s.complete_run(next, full(6)).await.expect("complete");
        assert_eq!(rec.status, RunStatus::Succeeded);
        assert_eq!(rec.counts.unchanged, 6);
        assert_eq!(
            b.target
                .changed_runs(SRC)
                .await
                .iter()
                .filter(|(_, r)| *r != first.id)
                .count(),
            0
        );
    })
    .await;
}

#[tokio::test]
async fn duplicates_inside_a_batch_and_across_batches_are_reported_and_the_first_occurrence_is_kept()
 {
    on_every_backend(async |b| {
        let s = &b.store;
        let (a, bb, c, d) = (
            record(SRC, 0),
            record(SRC, 1),
            record(SRC, 2),
            record(SRC, 3),
        );
        let run = s.begin_run(SRC, RunMode::Full).await.expect("begin");
        let out = s
            .stage(
                run,
                vec![a.clone(), bb.clone(), changed(a.clone())],
                Vec::new(),
            )
            .await
            .expect("stage");
        assert_eq!(out.duplicates, vec![(2, record_id(0))]);
        let out = s
            .stage(
                run,
                vec![
                    c.clone(),
                    changed(bb.clone()),
                    d.clone(),
                    changed(c.clone()),
                ],
                Vec::new(),
            )
            .await
            .expect("stage");
        assert_eq!(out.duplicates, vec![(1, record_id(1)), (3, record_id(2))]);
        let rec = s.complete_run(run, full(7)).await.expect("complete");
        assert_eq!((rec.counts.accepted, rec.counts.inserted), (4, 4));
        assert_eq!(
            s.involvements(SRC).await.expect("read"),
            stored_all([&a, &bb, &c, &d])
        );
        assert_eq!(
            s.relations(SRC).await.expect("relations"),
            relations_of([&a, &bb, &c, &d])
        );
    })
    .await;
}

#[tokio::test]
async fn quarantine_entries_are_stored_listed_replayable_and_resolved() {
    on_every_backend(async |b| {
        let s = &b.store;
        let alpha = s.begin_run("alpha", RunMode::Full).await.expect("begin");
        s.stage(
            alpha,
            records("alpha", 0..2),
            vec![
                reject("x-1", 3, Some((b"sealed one", 30))),
                reject("x-2", 4, None),
                reject("x-3", 5, Some((b"sealed three", -1))),
            ],
        )
        .await
        .expect("stage");
        let alpha_rec = s.complete_run(alpha, full(5)).await.expect("complete");
        assert_eq!(alpha_rec.counts.rejected, 3);
        let beta = s.begin_run("beta", RunMode::Full).await.expect("begin");
        s.stage(
            beta,
            records("beta", 0..1),
            vec![reject("y-1", 2, Some((b"sealed four", 30)))],
        )
        .await
        .expect("stage");
        s.complete_run(beta, full(2)).await.expect("complete");

        let all_filter = QuarantineFilter {
            limit: 100,
            ..QuarantineFilter::default()
        };
        let all = s.quarantine(&all_filter).await.expect("list");
        let ids: Vec<_> = all
            .iter()
            .map(|q| q.source_record_id.clone().unwrap_or_default())
            .collect();
        assert_eq!(ids, ["x-1", "x-2", "x-3", "y-1"]);
        assert!(all.windows(2).all(|w| w[0].id < w[1].id));
        let first = &all[0];
        assert_eq!((first.source.as_str(), first.run_id), ("alpha", alpha));
        assert_eq!(
            (first.record_index, first.field.as_deref()),
            (3, Some("bsn"))
        );
        assert_eq!(first.reason_code, "invalid_bsn");
        assert_eq!(first.reason, "the BSN fails the elfproef");
        assert_eq!(
            all.iter().map(|q| q.replayable).collect::<Vec<_>>(),
            [true, false, true, true]
        );
        assert!(all.iter().all(|q| q.resolved_by_run.is_none()));
        let by_source = QuarantineFilter {
            source: Some("beta".into()),
            ..all_filter.clone()
        };
        assert_eq!(s.quarantine(&by_source).await.expect("list").len(), 1);
        let by_run = QuarantineFilter {
            run: Some(alpha),
            ..all_filter.clone()
        };
        assert_eq!(s.quarantine(&by_run).await.expect("list").len(), 3);
        let limited = QuarantineFilter {
            limit: 2,
            ..all_filter.clone()
        };
        assert_eq!(s.quarantine(&limited).await.expect("list").len(), 2);

        let replayable = s.replayable(None).await.expect("replayable");
        assert_eq!(
            replayable
                .iter()
                .map(|r| (
                    r.source_record_id.clone().unwrap_or_default(),
                    r.sealed.clone()
                ))
                .collect::<Vec<_>>(),
            [
                ("x-1".to_owned(), b"sealed one".to_vec()),
                ("x-3".to_owned(), b"sealed three".to_vec()),
                ("y-1".to_owned(), b"sealed four".to_vec()),
            ]
        );
        assert!(replayable.iter().all(|r| r.key_id == "k1"));
        assert_eq!(
            s.replayable(Some("alpha")).await.expect("replayable").len(),
            2
        );

        // Only the newest entry per record is replayed, and none of a record a later run
        // published.
        let again = s.begin_run("alpha", RunMode::Full).await.expect("begin");
        s.stage(
            again,
            records("alpha", 0..2),
            vec![
                reject("x-3", 9, Some((b"sealed three again", 30))),
                reject(&record_id(2), 10, Some((b"sealed record two", 30))),
            ],
        )
        .await
        .expect("stage");
        s.complete_run(again, full(4)).await.expect("complete");
        let sealed_of =
            |rs: Vec<super::SealedRecord>| rs.into_iter().map(|r| r.sealed).collect::<Vec<_>>();
        assert_eq!(
            sealed_of(s.replayable(Some("alpha")).await.expect("replayable")),
            [
                b"sealed one".to_vec(),
                b"sealed three again".to_vec(),
                b"sealed record two".to_vec()
            ]
        );
        let later = publish_full(s, "alpha", &records("alpha", 0..3)).await;
        assert_eq!(later.counts.inserted, 1);
        assert_eq!(
            sealed_of(s.replayable(Some("alpha")).await.expect("replayable")),
            [b"sealed one".to_vec(), b"sealed three again".to_vec()]
        );

        // A replay run resolves x-1.
        let replay = s.begin_run("alpha", RunMode::Replay).await.expect("begin");
        let x1 = all[0].id;
        s.mark_resolved(vec![x1], replay).await.expect("resolve");
        let listed = s.quarantine(&all_filter).await.expect("list");
        assert!(listed.iter().all(|q| q.id != x1));
        let with_resolved = QuarantineFilter {
            include_resolved: true,
            ..all_filter.clone()
        };
        let listed = s.quarantine(&with_resolved).await.expect("list");
        let resolved = listed.iter().find(|q| q.id == x1).expect("x-1 listed");
        assert_eq!(resolved.resolved_by_run, Some(replay));
        assert_eq!(
            sealed_of(s.replayable(Some("alpha")).await.expect("replayable")),
            [b"sealed three again".to_vec()]
        );
        let alpha_stats = s
            .stats()
            .await
            .expect("stats")
            .into_iter()
            .find(|st| st.source == "alpha")
            .expect("alpha stats");
        // Distinct records still in quarantine: x-2 and x-3 (x-1 resolved, record 2 published).
        assert_eq!(alpha_stats.quarantined, 2);

        // The sealed record past its expiry goes; its entry stays, no longer replayable.
        assert_eq!(s.expire_sealed(Utc::now()).await.expect("expire"), 1);
        let listed = s.quarantine(&all_filter).await.expect("list");
        let x3_old = listed
            .iter()
            .find(|q| q.id == all[2].id)
            .expect("x-3 listed");
        assert!(!x3_old.replayable);
        assert_eq!(s.expire_sealed(Utc::now()).await.expect("expire"), 0);
    })
    .await;
}

#[tokio::test]
async fn incremental_run_never_ends_absent_rows_and_commits_the_cursor_only_with_a_published_run() {
    on_every_backend(async |b| {
        let s = &b.store;
        let rs = records(SRC, 0..10);
        publish_full(s, SRC, &rs).await;
        assert_eq!(s.cursor(SRC).await.expect("cursor"), None);

        let run = s.begin_run(SRC, RunMode::Incremental).await.expect("begin");
        let delivered = vec![changed(rs[0].clone()), record(SRC, 10)];
        s.stage(run, delivered.clone(), Vec::new())
            .await
            .expect("stage");
        let rec = s
            .complete_run(
                run,
                Completion {
                    cursor: Some("2026-11-01T00:00:00Z".into()),
                    ..guarded(2, RunMode::Incremental, 0.3)
                },
            )
            .await
            .expect("complete");
        assert_eq!(rec.status, RunStatus::Succeeded);
        assert_eq!(
            (
                rec.counts.inserted,
                rec.counts.updated,
                rec.counts.unchanged,
                rec.counts.ended
            ),
            (1, 1, 0, 0)
        );
        let mut expected = rs.clone();
        expected[0] = delivered[0].clone();
        expected.push(delivered[1].clone());
        assert_eq!(
            s.involvements(SRC).await.expect("read"),
            stored_all(&expected)
        );
        let cursor = Some("2026-11-01T00:00:00Z".to_owned());
        assert_eq!(s.cursor(SRC).await.expect("cursor"), cursor);

        // A failed run commits neither data nor cursor.
        let run = s.begin_run(SRC, RunMode::Incremental).await.expect("begin");
        s.stage(run, vec![record(SRC, 11)], Vec::new())
            .await
            .expect("stage");
        s.fail_run(run, 1, "connection reset").await.expect("fail");
        assert_eq!(s.cursor(SRC).await.expect("cursor"), cursor);

        // Nor does an interrupted one; a quiet run without a new cursor keeps the old one.
        let run = s.begin_run(SRC, RunMode::Incremental).await.expect("begin");
        s.stage(run, vec![record(SRC, 12)], Vec::new())
            .await
            .expect("stage");
        let quiet = s.begin_run(SRC, RunMode::Incremental).await.expect("begin");
        assert_eq!(s.cursor(SRC).await.expect("cursor"), cursor);
        let rec = s
            .complete_run(
                quiet,
                Completion {
                    guard: None,
                    ..guarded(0, RunMode::Incremental, 0.3)
                },
            )
            .await
            .expect("complete");
        assert_eq!(rec.status, RunStatus::Succeeded);
        assert_eq!(s.cursor(SRC).await.expect("cursor"), cursor);
        assert_eq!(
            s.involvements(SRC).await.expect("read"),
            stored_all(&expected)
        );
    })
    .await;
}

#[tokio::test]
async fn publish_that_fails_midway_leaves_the_previous_state_intact() {
    on_every_backend(async |b| {
        let s = &b.store;
        let rs = records(SRC, 0..10);
        let first = publish_full(s, SRC, &rs).await;
        let before = s.involvements(SRC).await.expect("read");
        let rels_before = s.relations(SRC).await.expect("relations");
        let changed_before = b.target.changed_runs(SRC).await;

        // Inserting the new record fails, after relations were replaced and rows updated.
        match b.target.kind {
            Kind::Sqlite { .. } => {
                b.target
                    .exec(
                        "CREATE TRIGGER poison BEFORE INSERT ON involvements
                         WHEN NEW.goal = 'poison'
                         BEGIN SELECT RAISE(ABORT, 'poisoned record'); END;",
                    )
                    .await;
            }
            Kind::Postgres { .. } => {
                b.target
                    .exec(
                        "ALTER TABLE involvements ADD CONSTRAINT poison
                         CHECK (goal IS DISTINCT FROM 'poison')",
                    )
                    .await;
            }
        }
        let mut second_rs: Vec<_> = rs[..9].iter().cloned().map(changed).collect();
        let mut poison = record(SRC, 10);
        poison.goal = Some("poison".into());
        second_rs.push(poison);
        let run = s.begin_run(SRC, RunMode::Full).await.expect("begin");
        s.stage(run, second_rs.clone(), Vec::new())
            .await
            .expect("stage");
        assert!(s.complete_run(run, full(10)).await.is_err());

        assert_eq!(s.involvements(SRC).await.expect("read"), before);
        assert_eq!(s.relations(SRC).await.expect("relations"), rels_before);
        assert_eq!(b.target.changed_runs(SRC).await, changed_before);
        assert_eq!(s.run(run).await.expect("run").status, RunStatus::Running);
        assert_eq!(
            s.stats().await.expect("stats")[0].last_success_run,
            Some(first.id)
        );

        // Once the cause is gone the same run publishes everything, counted from the old state.
        match b.target.kind {
            Kind::Sqlite { .. } => b.target.exec("DROP TRIGGER poison").await,
            Kind::Postgres { .. } => {
                b.target
                    .exec("ALTER TABLE involvements DROP CONSTRAINT poison")
                    .await;
            }
        }
        let rec = s.complete_run(run, full(10)).await.expect("complete");
        assert_eq!(
            (
                rec.counts.inserted,
                rec.counts.updated,
                rec.counts.unchanged,
                rec.counts.ended
            ),
            (1, 9, 0, 1)
        );
    })
    .await;
}

/// The SQLite store inserts and updates with `OR IGNORE` (no statement journal); a row the
/// index would skip fails the publication instead of going missing — on a source's first
/// publication and on a later one.
#[tokio::test]
async fn a_record_the_sqlite_index_would_skip_fails_the_publication() {
    on_every_backend(async |b| {
        let Kind::Sqlite { .. } = b.target.kind else {
            return;
        };
        let s = &b.store;
        b.target
            .exec(
                "CREATE TRIGGER skip BEFORE INSERT ON involvements
                 WHEN NEW.goal = 'skip' BEGIN SELECT RAISE(IGNORE); END;",
            )
            .await;
        let mut rs = records(SRC, 0..10);
        rs[3].goal = Some("skip".into());
        let run = s.begin_run(SRC, RunMode::Full).await.expect("begin");
        s.stage(run, rs.clone(), Vec::new()).await.expect("stage");
        let err = s
            .complete_run(run, full(10))
            .await
            .expect_err("skipped row");
        assert!(
            err.to_string()
                .contains("10 staged records were new or changed but 9 were inserted"),
            "{err}"
        );
        assert!(s.involvements(SRC).await.expect("read").is_empty());
        assert_eq!(s.run(run).await.expect("run").status, RunStatus::Running);
        b.target.exec("DROP TRIGGER skip").await;
        let rec = s.complete_run(run, full(10)).await.expect("complete");
        assert_eq!(rec.counts.inserted, 10);

        // A later publication: one changed record, one new record the trigger skips.
        let before = s.involvements(SRC).await.expect("read");
        b.target
            .exec(
                "CREATE TRIGGER skip BEFORE INSERT ON involvements
                 WHEN NEW.goal = 'skip' BEGIN SELECT RAISE(IGNORE); END;",
            )
            .await;
        let mut next = rs.clone();
        next[0] = changed(next[0].clone());
        let mut new = record(SRC, 10);
        new.goal = Some("skip".into());
        next.push(new);
        let run = s.begin_run(SRC, RunMode::Full).await.expect("begin");
        s.stage(run, next, Vec::new()).await.expect("stage");
        let err = s
            .complete_run(run, full(11))
            .await
            .expect_err("skipped row");
        assert!(
            err.to_string()
                .contains("2 staged records were new or changed but 0 were inserted and 1 updated"),
            "{err}"
        );
        assert_eq!(s.involvements(SRC).await.expect("read"), before);
    })
    .await;
}

#[tokio::test]
async fn publication_is_invisible_to_readers_until_it_commits() {
    // Only PostgreSQL lets the test hold a publish at a known point from outside: a row lock
    // on the source's row stops it just before its last statements, with every change made.
    on_every_backend(async |b| {
        let Kind::Postgres { .. } = b.target.kind else {
            return;
        };
        let s = &b.store;
        let rs = records(SRC, 0..10);
        let first = publish_full(s, SRC, &rs).await;
        let before = s.involvements(SRC).await.expect("read");
        let rels_before = s.relations(SRC).await.expect("relations");

        let mut second_rs: Vec<_> = rs[..9].iter().cloned().map(changed).collect();
        second_rs.push(record(SRC, 10));
        let run = s.begin_run(SRC, RunMode::Full).await.expect("begin");
        s.stage(run, second_rs.clone(), Vec::new())
            .await
            .expect("stage");

        let mut blocker = PgConnection::connect(&b.target.url).await.expect("connect");
        let mut lock = blocker.begin().await.expect("begin");
        sqlx::query("SELECT 1 FROM sources WHERE name = $1 FOR UPDATE")
            .bind(SRC)
            .execute(&mut *lock)
            .await
            .expect("lock source row");
        let publishing = {
            let s = s.clone();
            tokio::spawn(async move { s.complete_run(run, full(10)).await })
        };
        // Wait until the publish is blocked on the lock (polling the server, no sleeps).
        let mut watcher = PgConnection::connect(&b.target.url).await.expect("connect");
        tokio::time::timeout(std::time::Duration::from_secs(30), async {
            loop {
                let waiting: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM pg_stat_activity
                     WHERE datname = current_database() AND wait_event_type = 'Lock'",
                )
                .fetch_one(&mut watcher)
                .await
                .expect("poll");
                if waiting > 0 {
                    break;
                }
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("the publish reaches the lock");
        // Its updates, inserts and ends are made but not committed: readers see the old state.
        assert_eq!(s.involvements(SRC).await.expect("read"), before);
        assert_eq!(s.relations(SRC).await.expect("relations"), rels_before);
        let st = &s.stats().await.expect("stats")[0];
        assert_eq!(
            (st.active, st.ended, st.last_success_run),
            (9, 0, Some(first.id))
        );
        assert_eq!(s.run(run).await.expect("run").status, RunStatus::Running);

        lock.rollback().await.expect("release");
        let rec = publishing.await.expect("task").expect("complete");
        assert_eq!(rec.status, RunStatus::Succeeded);
        assert_eq!(
            (rec.counts.inserted, rec.counts.updated, rec.counts.ended),
            (1, 9, 1)
        );
        assert_eq!(
            s.relations(SRC).await.expect("relations"),
            relations_of(&second_rs)
        );
    })
    .await;
}

#[tokio::test]
async fn staging_emptied_by_a_database_restart_is_refused_rather_than_published() {
    // PostgreSQL empties UNLOGGED staging tables after a crash; a held run accepted from an
    // empty staging table would end the whole source.
    // SQLite's staging file runs without a journal, so a power loss can leave it partial.
    on_every_backend(async |b| {
        let s = &b.store;
        let rs = records(SRC, 0..10);
        publish_full(s, SRC, &rs).await;
        let held = publish_full(s, SRC, &rs[..2]).await;
        assert_eq!(held.status, RunStatus::Held);
        let running = s.begin_run("other", RunMode::Full).await.expect("begin");
        s.stage(running, records("other", 0..3), Vec::new())
            .await
            .expect("stage");
        match &b.target.kind {
            Kind::Postgres { .. } => {
                b.target
                    .exec(&format!(
                        "TRUNCATE staging_run_{h}, staging_run_{h}_ids, staging_run_{running}, \
                         staging_run_{running}_ids",
                        h = held.id
                    ))
                    .await;
            }
            Kind::Sqlite { path, .. } => {
                let mut dir = path.as_os_str().to_owned();
                dir.push(".staging");
                for id in [held.id, running] {
                    let file = std::path::Path::new(&dir).join(format!("run-{id}.db"));
                    let conn = rusqlite::Connection::open(&file).expect("open staging");
                    conn.execute_batch("DELETE FROM staging; DELETE FROM ids")
                        .expect("empty staging");
                }
            }
        }

        let refused = s.accept_run(held.id).await;
        assert!(is_run_state(&refused), "{refused:?}");
        assert_eq!(s.involvements(SRC).await.expect("read"), stored_all(&rs));
        assert_eq!(s.run(held.id).await.expect("run").status, RunStatus::Held);
        let refused = s.complete_run(running, full(3)).await;
        assert!(is_run_state(&refused), "{refused:?}");
        assert!(s.involvements("other").await.expect("read").is_empty());
    })
    .await;
}

#[tokio::test]
async fn a_large_publication_refreshes_the_planner_statistics_on_postgresql() {
    // Without column statistics the planner takes a person for thousands of rows and scans
    // `relations` in parallel on every lookup (measured: 180 ms instead of 0.3 ms at 1M rows).
    for target in targets().await {
        if !target.is_pg() {
            continue;
        }
        let b = target.open().await;
        let stats = async || -> i64 {
            let mut conn = PgConnection::connect(&b.target.url).await.expect("connect");
            let n = sqlx::query_scalar(
                "SELECT count(*) FROM pg_stats
                 WHERE (tablename, attname) IN (('involvements', 'person'), ('relations', 'other'))",
            )
            .fetch_one(&mut conn)
            .await
            .expect("read pg_stats");
            let _ = conn.close().await;
            n
        };
        publish_full(&b.store, SRC, &records(SRC, 0..10)).await;
        assert_eq!(
            stats().await,
            0,
            "a small publication leaves it to autovacuum"
        );
        publish_full(&b.store, "big", &records("big", 0..1500)).await;
        assert_eq!(
            stats().await,
            2,
            "statistics of both tables after 1,500 new rows"
        );
        b.target.drop_database().await;
    }
}

#[tokio::test]
async fn concurrent_opens_of_a_fresh_store_all_succeed() {
    for target in targets().await {
        eprintln!("--- store backend: {}", target.name);
        let mut opens = tokio::task::JoinSet::new();
        for _ in 0..8 {
            let url = target.url.clone();
            opens.spawn(async move { Store::open(&url).await.map(|_| ()) });
        }
        while let Some(done) = opens.join_next().await {
            done.expect("task").expect("open");
        }
        let store = Store::open(&target.url).await.expect("open");
        let run = store.begin_run(SRC, RunMode::Full).await.expect("begin");
        assert!(run > 0);
        drop(store);
        target.cleanup().await;
    }
}

/// Not a timed test: prints staged and published rows per second for 100k records.
/// `cargo test -p matchpoint-hub --release store::tests::throughput -- --ignored --nocapture`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement, run by hand"]
async fn throughput_of_staging_and_publishing_100k_records_is_printed() {
    const N: usize = 100_000;
    const BATCH: usize = 5_000;
    let bsns = valid_bsns(N);
    let p = pseudonymiser();
    let make = |n: usize, goal: &str| {
        let mut r = record(SRC, n);
        r.person = p.pseudonymise(&bsns[n]);
        r.goal = Some(goal.to_owned());
        r
    };
    let first: Vec<_> = (0..N).map(|n| make(n, "first")).collect();
    // The second delivery changes every tenth record.
    let second: Vec<_> = (0..N)
        .map(|n| {
            make(
                n,
                if n.is_multiple_of(10) {
                    "second"
                } else {
                    "first"
                },
            )
        })
        .collect();
    on_every_backend(async |b| {
        let s = &b.store;
        for (label, rs) in [("first run (inserts)", &first), ("second run (10% updates)", &second)] {
            let run = s.begin_run(SRC, RunMode::Full).await.expect("begin");
            let t0 = std::time::Instant::now();
            for chunk in rs.chunks(BATCH) {
                s.stage(run, chunk.to_vec(), Vec::new()).await.expect("stage");
            }
            let staged = t0.elapsed();
            let rec = s.complete_run(run, full(N as u64)).await.expect("complete");
            let total = t0.elapsed();
            assert_eq!(rec.counts.accepted, N as u64);
            let _ = writeln!(
                std::io::stderr(),
                "{:8} {label:26}: staged {:>7.0} rows/s ({:.2}s), publish {:.2}s, staged+published {:>7.0} rows/s",
                b.target.name,
                N as f64 / staged.as_secs_f64(),
                staged.as_secs_f64(),
                (total - staged).as_secs_f64(),
                N as f64 / total.as_secs_f64(),
            );
        }
    })
    .await;
}

#[test]
fn database_name_in_a_url_is_replaced() {
    assert_eq!(
        with_database("postgres://postgres@127.0.0.1:5432/test", "x"),
        "postgres://postgres@127.0.0.1:5432/x"
    );
    assert_eq!(
        with_database("postgres://u:p@h/test?sslmode=disable", "x"),
        "postgres://u:p@h/x?sslmode=disable"
    );
    assert_eq!(
        with_database("postgres://h:5432", "x"),
        "postgres://h:5432/x"
    );
}

#[tokio::test]
async fn a_first_import_rebuilds_the_person_indexes_and_lookups_find_persons() {
    // 12,000 new rows into an empty index: both stores take the path that drops the person
    // indexes and builds them after the inserts (PostgreSQL from 10,000 rows).
    const NAMES: &str = "('involvements_person', 'relations_other')";
    for target in targets().await {
        eprintln!("--- store backend: {}", target.name);
        let b = target.open().await;
        let mut rs = records(SRC, 0..12_000);
        // A relation delivered twice by one record is stored once (the PostgreSQL path
        // inserts without a conflict check and adds the primary key back afterwards).
        let twice = rs[0].relations[0];
        rs[0].relations.push(twice);
        let run = publish_full(&b.store, SRC, &rs).await;
        assert_eq!(run.counts.inserted, 12_000);
        assert_eq!(
            b.store.relations(SRC).await.expect("relations").len(),
            rs.iter().map(|r| r.relations.len()).sum::<usize>() - 1
        );
        let indexes: i64 = match &b.target.kind {
            Kind::Sqlite { path, .. } => rusqlite::Connection::open(path)
                .expect("open sqlite")
                .query_row(
                    &format!(
                        "SELECT count(*) FROM sqlite_master WHERE type = 'index' AND name IN {NAMES}"
                    ),
                    [],
                    |r| r.get(0),
                )
                .expect("count indexes"),
            Kind::Postgres { .. } => {
                let mut conn = PgConnection::connect(&b.target.url).await.expect("connect");
                let n = sqlx::query_scalar(AssertSqlSafe(format!(
                    "SELECT count(*) FROM pg_indexes WHERE indexname IN {NAMES}"
                )))
                .fetch_one(&mut conn)
                .await
                .expect("count indexes");
                let _ = conn.close().await;
                n
            }
        };
        assert_eq!(indexes, 2, "both person indexes exist after the import");
        // Persons repeat every 4,000 records (see `person`).
        let p = person(4242);
        let rows = b
            .store
            .person_involvements(vec![p.as_bytes().to_vec()])
            .await
            .expect("lookup");
        assert_eq!(rows.len(), rs.iter().filter(|r| r.person == p).count());
        let rels = b
            .store
            .person_relations(person(5242).as_bytes().to_vec())
            .await
            .expect("relations");
        assert!(!rels.is_empty(), "relations of a related person");
        b.target.drop_database().await;
    }
}

#[tokio::test]
async fn index_gauges_count_rows_per_status_and_key_and_unresolved_quarantine_per_source() {
    on_every_backend(async |b| {
        let s = &b.store;
        let alpha = s.begin_run("alpha", RunMode::Full).await.expect("begin");
        s.stage(
            alpha,
            records("alpha", 0..6),
            vec![reject("x-1", 7, None), reject("x-2", 8, None)],
        )
        .await
        .expect("stage");
        s.complete_run(alpha, full(8)).await.expect("complete");
        publish_full(s, "beta", &records("beta", 0..3)).await;
        let g = s.index_gauges().await.expect("gauges");
        // Expected from the rows themselves.
        let mut want: BTreeMap<(String, String, String), u64> = BTreeMap::new();
        for src in ["alpha", "beta"] {
            for r in s.involvements(src).await.expect("rows") {
                *want.entry((r.source, r.status, r.key_id)).or_default() += 1;
            }
        }
        let got: BTreeMap<(String, String, String), u64> = g
            .rows
            .iter()
            .map(|r| {
                (
                    (r.source.clone(), r.status.clone(), r.key_id.clone()),
                    r.rows,
                )
            })
            .collect();
        assert_eq!(got, want);
        assert_eq!(got.values().sum::<u64>(), 9);
        assert_eq!(
            g.quarantine,
            [("alpha".to_owned(), 2), ("beta".to_owned(), 0)]
        );
    })
    .await;
}

#[tokio::test]
async fn a_run_failed_before_its_publication_is_not_published() {
    // As when `serve` gives up waiting for a cancelled run at shutdown: the run is recorded
    // failed while its staging is complete; a publication that comes later must refuse.
    on_every_backend(async |b| {
        let s = &b.store;
        let run = s.begin_run(SRC, RunMode::Full).await.expect("begin");
        s.stage(run, records(SRC, 0..5), Vec::new())
            .await
            .expect("stage");
        s.fail_run(run, 5, "cancelled (interrupt)")
            .await
            .expect("fail");
        let refused = s.complete_run(run, full(5)).await;
        assert!(is_run_state(&refused), "{refused:?}");
        assert!(s.involvements(SRC).await.expect("read").is_empty());
        assert_eq!(s.run(run).await.expect("run").status, RunStatus::Failed);
    })
    .await;
}
