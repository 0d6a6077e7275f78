//! The iWmo source through the whole pipeline into each store (SQLite, and PostgreSQL when
//! `MATCHPOINT_TEST_POSTGRES_URL` is set).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use matchpoint_connectors::iwmo::DeliveryStatus;
use matchpoint_schemas::{MasterKey, Registry};

use super::tests::{
    BSN, Harness, OTHER_BSN, Op, REUSED_LATER, THUIS, a301, assigned, day, e307, op_message,
    person, reuse_message, s305, shared_op_message, started, stopped,
};
use crate::generate::ORGANISATIONS_TOML;
use crate::store::{QuarantineFilter, RunRecord, RunStatus, Store};
use crate::sync::{Progress, SyncContext, sync_source};
use crate::testdb;

pub(super) fn context(store: &Store) -> SyncContext {
    context_with_key(
        store,
        MasterKey::from_secret("k1", &[7u8; 32]).expect("key"),
    )
}

fn context_with_key(store: &Store, key: MasterKey) -> SyncContext {
    SyncContext {
        store: store.clone(),
        key: Arc::new(key),
        registry: Arc::new(Registry::parse(ORGANISATIONS_TOML, "reg").expect("registry")),
        max_end_share: 0.5,
        quarantine_raw_days: 30,
        batch_size: 50,
        cancel: Arc::new(AtomicBool::new(false)),
    }
}

pub(super) async fn sync(ctx: &SyncContext, h: &Harness) -> RunRecord {
    sync_counted(ctx, h).await.0
}

/// One run and the bytes of message files it read.
async fn sync_counted(ctx: &SyncContext, h: &Harness) -> (RunRecord, u64) {
    let progress = Arc::new(Progress::default());
    let out = sync_source(ctx, &h.source, false, progress.clone())
        .await
        .expect("sync");
    assert_eq!(out.status, RunStatus::Succeeded, "{:?}", out.error);
    (out, progress.bytes.load(Ordering::Relaxed))
}

fn size(h: &Harness, file: &str) -> u64 {
    std::fs::metadata(h.dir.path().join(file))
        .expect("file")
        .len()
}

/// Status and end reason code of a published assignment of the home-care provider.
pub(super) async fn assignment(store: &Store, number: u64) -> Option<(String, Option<String>)> {
    store
        .involvements("wmo")
        .await
        .expect("involvements")
        .into_iter()
        .find(|s| s.source_record_id == format!("{THUIS}-{number}"))
        .map(|s| (s.status, s.end_reason))
}

fn status(s: &str) -> Option<(String, Option<String>)> {
    Some((s.to_owned(), None))
}

/// The published row of assignment 1 of the home-care provider, as the lookup reads it:
/// (status, end date, end reason code, end reason description).
async fn published(store: &Store) -> (String, Option<String>, Option<String>, Option<String>) {
    let stored = store.involvements("wmo").await.expect("involvements");
    assert_eq!(stored.len(), 1);
    let s = &stored[0];
    assert_eq!(s.source_record_id, format!("{THUIS}-1"));
    let rows = store
        .person_involvements(vec![hex::decode(&s.person).expect("hex")])
        .await
        .expect("lookup");
    assert_eq!(rows.len(), 1);
    let r = &rows[0];
    assert_eq!(r.end_reason_code, s.end_reason);
    (
        r.status.clone(),
        r.end_date.clone(),
        r.end_reason_code.clone(),
        r.end_reason.clone(),
    )
}

#[tokio::test]
async fn a_stop_publishes_its_wmo588_reason_and_a_withdrawal_clears_it_on_every_store() {
    for db in testdb::targets("iwmo_end_reason").await {
        let store = Store::open(&db.url).await.expect("store");
        let ctx = context(&store);
        let h = Harness::new();
        h.put(
            "001.xml",
            &a301(
                "T1",
                day(3, 1),
                BSN,
                vec![assigned(1, "02", day(3, 1), None)],
            ),
        );
        h.put(
            "002.xml",
            &s305(
                "S1",
                day(3, 6),
                started(Some(1), day(3, 5), DeliveryStatus::First),
            ),
        );
        sync(&ctx, &h).await;
        let (status, _, code, text) = published(&store).await;
        assert_eq!(
            (status.as_str(), code, text),
            ("active", None, None),
            "{}",
            db.name
        );

        // A stop with WMO588 reason 38: ended, with the reason and its description.
        h.put(
            "003.xml",
            &e307(
                "E1",
                day(6, 2),
                stopped(day(6, 1), "38", DeliveryStatus::First),
            ),
        );
        let out = sync(&ctx, &h).await;
        assert_eq!(out.counts.updated, 1, "{}", db.name);
        assert_eq!(
            published(&store).await,
            (
                "ended".to_owned(),
                Some("2026-06-01".to_owned()),
                Some("38".to_owned()),
                Some("Overstap naar andere aanbieder".to_owned())
            ),
            "{}",
            db.name
        );

        // The same stop again (a new file holding the same message): nothing changes, the
        // row is not rewritten.
        h.put(
            "004.xml",
            &e307(
                "E1",
                day(6, 2),
                stopped(day(6, 1), "38", DeliveryStatus::First),
            ),
        );
        let out = sync(&ctx, &h).await;
        assert_eq!(
            (out.counts.updated, out.counts.unchanged),
            (0, 1),
            "{}",
            db.name
        );

        // A corrected stop with another reason: only the reason changed, and that is a change.
        h.put(
            "005.xml",
            &e307(
                "E2",
                day(6, 3),
                stopped(day(6, 1), "19", DeliveryStatus::Corrected),
            ),
        );
        let out = sync(&ctx, &h).await;
        assert_eq!(out.counts.updated, 1, "{}", db.name);
        assert_eq!(
            published(&store).await.2.as_deref(),
            Some("19"),
            "{}",
            db.name
        );

        // The stop withdrawn (StatusAanlevering 3): running again, the reason cleared.
        h.put(
            "006.xml",
            &e307(
                "E3",
                day(6, 4),
                stopped(day(6, 1), "19", DeliveryStatus::Withdrawn),
            ),
        );
        let out = sync(&ctx, &h).await;
        assert_eq!(out.counts.updated, 1, "{}", db.name);
        let (status, end, code, text) = published(&store).await;
        assert_eq!(
            (status.as_str(), end.as_deref(), code, text),
            ("active", Some("2026-12-31"), None, None),
            "{}",
            db.name
        );
        drop(ctx);
        drop(store);
        db.drop_database().await;
    }
}

/// With its state in the store, a run reads only the message files it has not applied: the
/// old messages of a (provider, client) pair come from the stored log, so a start that came
/// before its assignment and a file named before the cursor are still applied in order.
#[tokio::test]
async fn a_run_reads_only_the_message_files_it_has_not_applied_on_every_store() {
    for db in testdb::targets("iwmo_state").await {
        let store = Store::open(&db.url).await.expect("store");
        let ctx = context(&store);
        let h = Harness::new();
        h.put(
            "001.xml",
            &a301(
                "T1",
                day(3, 1),
                BSN,
                vec![assigned(1, "02", day(3, 1), None)],
            ),
        );
        h.put(
            "002.xml",
            &a301(
                "T2",
                day(3, 1),
                OTHER_BSN,
                vec![assigned(2, "02", day(3, 1), None)],
            ),
        );
        // The first run builds the state from every file.
        let (first, bytes) = sync_counted(&ctx, &h).await;
        assert_eq!(first.counts.inserted, 2, "{}", db.name);
        assert_eq!(
            bytes,
            size(&h, "001.xml") + size(&h, "002.xml"),
            "{}",
            db.name
        );

        // One new file: only it is read; only its client's assignment is delivered.
        h.put(
            "003.xml",
            &s305(
                "S1",
                day(3, 6),
                started(Some(1), day(3, 5), DeliveryStatus::First),
            ),
        );
        let (run, bytes) = sync_counted(&ctx, &h).await;
        assert_eq!(bytes, size(&h, "003.xml"), "{}", db.name);
        assert_eq!((run.counts.read, run.counts.updated), (1, 1), "{}", db.name);
        assert_eq!(assignment(&store, 1).await, status("active"), "{}", db.name);
        assert_eq!(
            assignment(&store, 2).await,
            status("planned"),
            "{}",
            db.name
        );

        // No new file: nothing read, no message body opened.
        let (quiet, bytes) = sync_counted(&ctx, &h).await;
        assert_eq!((quiet.counts.read, bytes), (0, 0), "{}", db.name);

        // A start before its assignment: quarantined until the assignment arrives in a
        // later run, then applied from the stored log.
        h.put(
            "004.xml",
            &s305(
                "S3",
                day(3, 7),
                started(Some(3), day(3, 5), DeliveryStatus::First),
            ),
        );
        let early = sync(&ctx, &h).await;
        assert_eq!(early.counts.rejected, 1, "{}", db.name);
        assert_eq!(assignment(&store, 3).await, None, "{}", db.name);
        h.put(
            "005.xml",
            &a301(
                "T3",
                day(3, 1),
                BSN,
                vec![assigned(3, "02", day(3, 1), None)],
            ),
        );
        let (late, bytes) = sync_counted(&ctx, &h).await;
        assert_eq!(bytes, size(&h, "005.xml"), "{}", db.name);
        assert_eq!(late.counts.rejected, 0, "{}", db.name);
        assert_eq!(assignment(&store, 3).await, status("active"), "{}", db.name);

        // A file named before the cursor is new all the same: the stop of assignment 1.
        h.put(
            "000-late.xml",
            &e307(
                "E1",
                day(6, 1),
                stopped(day(5, 31), "19", DeliveryStatus::First),
            ),
        );
        let (run, bytes) = sync_counted(&ctx, &h).await;
        assert_eq!(bytes, size(&h, "000-late.xml"), "{}", db.name);
        assert_eq!(run.counts.updated, 1, "{}", db.name);
        assert_eq!(
            assignment(&store, 1).await,
            Some(("ended".to_owned(), Some("19".to_owned()))),
            "{}",
            db.name
        );

        // An applied file that changes is reported once and not applied again.
        h.put(
            "002.xml",
            &a301(
                "T2-CHANGED",
                day(3, 1),
                OTHER_BSN,
                vec![assigned(2, "07", day(3, 2), None)],
            ),
        );
        let changed = sync(&ctx, &h).await;
        assert_eq!(
            (changed.counts.rejected, changed.counts.updated),
            (1, 0),
            "{}",
            db.name
        );
        let q = store
            .quarantine(&QuarantineFilter {
                source: Some("wmo".into()),
                run: Some(changed.id),
                include_resolved: true,
                limit: 10,
            })
            .await
            .expect("quarantine");
        assert_eq!(q.len(), 1, "{}", db.name);
        assert_eq!(q[0].source_record_id.as_deref(), Some("file:002.xml"));
        assert!(
            q[0].reason.contains("changed after it was applied"),
            "{}",
            q[0].reason
        );
        assert_eq!(
            assignment(&store, 2).await,
            status("planned"),
            "{}",
            db.name
        );
        let (again, bytes) = sync_counted(&ctx, &h).await;
        assert_eq!((again.counts.read, bytes), (0, 0), "{}", db.name);

        // A full run rebuilds the state from the folder as it is now.
        let full = sync_source(&ctx, &h.source, true, Arc::new(Progress::default()))
            .await
            .expect("full");
        assert_eq!(full.status, RunStatus::Succeeded, "{:?}", full.error);
        assert_eq!(full.counts.read, 3, "{}", db.name);
        let (after, bytes) = sync_counted(&ctx, &h).await;
        assert_eq!((after.counts.read, bytes), (0, 0), "{}", db.name);
        drop(ctx);
        drop(store);
        db.drop_database().await;
    }
}

/// What an index holds for the source, comparable across stores.
async fn published_rows(
    store: &Store,
) -> Vec<(String, String, Option<String>, Option<String>, String)> {
    store
        .involvements("wmo")
        .await
        .expect("involvements")
        .into_iter()
        .map(|s| {
            (
                s.source_record_id,
                s.status,
                s.end_date,
                s.end_reason,
                s.content_hash,
            )
        })
        .collect()
}

fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Seeded message histories delivered over up to three incremental runs with stored state
/// publish what one full run over all files publishes (SQLite for every seed, PostgreSQL for
/// the first few); also when both clients use the same assignment numbers (in either order
/// of their pair keys).
#[tokio::test]
async fn incremental_runs_with_stored_state_publish_what_a_full_run_publishes() {
    for (shared, seed) in [None, Some(false), Some(true)]
        .into_iter()
        .flat_map(|s| (0..24u64).map(move |seed| (s, seed)))
    {
        let message = |i: usize, op: Op| match shared {
            None => op_message(i, op),
            Some(swap) => shared_op_message(i, op, swap),
        };
        let mut rng = seed.wrapping_mul(7919).wrapping_add(1);
        let n = 1 + (splitmix(&mut rng) % 12) as usize;
        let ops: Vec<Op> = (0..n)
            .map(|_| {
                let r = splitmix(&mut rng);
                (
                    1 + (r % 28) as u32,
                    ((r >> 8) % 7) as u8,
                    1 + ((r >> 16) % 2),
                    (r >> 24) % 2 == 1,
                    1 + ((r >> 32) % 28) as u32,
                )
            })
            .collect();
        let cuts = {
            let mut c = [
                (splitmix(&mut rng) % (n as u64 + 1)) as usize,
                (splitmix(&mut rng) % (n as u64 + 1)) as usize,
            ];
            c.sort_unstable();
            c
        };
        let mut dbs = testdb::targets("iwmo_agree").await;
        if seed >= 4 {
            dbs.truncate(1);
        }
        for db in dbs {
            let store = Store::open(&db.url).await.expect("store");
            let ctx = context(&store);
            let h = Harness::new();
            let mut written = 0;
            for cut in cuts.into_iter().chain([n]) {
                for (i, op) in ops.iter().enumerate().take(cut).skip(written) {
                    h.put_unchecked(&format!("{i:04}.xml"), &message(i, *op));
                }
                written = written.max(cut);
                sync(&ctx, &h).await;
            }
            let incremental = published_rows(&store).await;

            let full_db = tempfile::tempdir().expect("tempdir");
            let full_store = Store::open(&format!(
                "sqlite://{}",
                full_db.path().join("full.db").display()
            ))
            .await
            .expect("store");
            let full_ctx = context(&full_store);
            let full = sync_source(&full_ctx, &h.source, true, Arc::new(Progress::default()))
                .await
                .expect("full");
            assert_eq!(full.status, RunStatus::Succeeded, "{:?}", full.error);
            assert_eq!(
                incremental,
                published_rows(&full_store).await,
                "seed {seed}, shared numbers {shared:?} on {} (ops {ops:?}, cuts {cuts:?})",
                db.name
            );
            drop((ctx, store, full_ctx, full_store));
            db.drop_database().await;
        }
    }
}

/// The state is keyed by pseudonyms: under another index key the next run with a new file
/// reads every file and rebuilds it; the run after that reads only new files again.
#[tokio::test]
async fn a_new_index_key_rebuilds_the_state_from_the_folder() {
    for db in testdb::targets("iwmo_rekey").await {
        let store = Store::open(&db.url).await.expect("store");
        let h = Harness::new();
        h.put(
            "001.xml",
            &a301(
                "T1",
                day(3, 1),
                BSN,
                vec![assigned(1, "02", day(3, 1), None)],
            ),
        );
        sync(&context(&store), &h).await;
        let k2 = context_with_key(
            &store,
            MasterKey::from_secret("k2", &[8u8; 32]).expect("key"),
        );
        // Nothing new: a quiet night even under the new key.
        let (quiet, bytes) = sync_counted(&k2, &h).await;
        assert_eq!((quiet.counts.read, bytes), (0, 0), "{}", db.name);
        h.put(
            "002.xml",
            &s305(
                "S1",
                day(3, 6),
                started(Some(1), day(3, 5), DeliveryStatus::First),
            ),
        );
        let (rebuilt, bytes) = sync_counted(&k2, &h).await;
        assert_eq!(
            bytes,
            size(&h, "001.xml") + size(&h, "002.xml"),
            "{}",
            db.name
        );
        assert_eq!(rebuilt.counts.updated, 1, "{}", db.name);
        assert_eq!(assignment(&store, 1).await, status("active"), "{}", db.name);
        h.put(
            "003.xml",
            &e307(
                "E1",
                day(6, 1),
                stopped(day(5, 31), "19", DeliveryStatus::First),
            ),
        );
        let (run, bytes) = sync_counted(&k2, &h).await;
        assert_eq!(bytes, size(&h, "003.xml"), "{}", db.name);
        assert_eq!(run.counts.updated, 1, "{}", db.name);
        assert_eq!(
            assignment(&store, 1).await,
            Some(("ended".to_owned(), Some("19".to_owned()))),
            "{}",
            db.name
        );
        drop((k2, store));
        db.drop_database().await;
    }
}

/// The client (pseudonym) of the published assignment 1 of the home-care provider.
async fn owner(store: &Store) -> Option<String> {
    store
        .involvements("wmo")
        .await
        .expect("involvements")
        .into_iter()
        .find(|s| s.source_record_id == format!("{THUIS}-1"))
        .map(|s| s.person)
}

/// The record ids a run quarantined (each for an assignment number used for another
/// client).
async fn reused(store: &Store, run: &RunRecord) -> Vec<String> {
    let q = store
        .quarantine(&QuarantineFilter {
            source: Some("wmo".into()),
            run: Some(run.id),
            include_resolved: true,
            limit: 10,
        })
        .await
        .expect("quarantine");
    q.into_iter()
        .map(|e| {
            assert!(
                e.reason.contains("already used for another client"),
                "{}",
                e.reason
            );
            e.source_record_id.unwrap_or_default()
        })
        .collect()
}

#[tokio::test]
async fn a_reused_assignment_number_stays_with_the_client_of_the_earliest_message_on_every_store() {
    // Pairs are applied in the order of their pseudonyms: the clients swap places, so that
    // one of the two orders puts the later message's pair first.
    for (early, late) in [(BSN, OTHER_BSN), (OTHER_BSN, BSN)] {
        // Both in one run (the later one in the file named first).
        for db in testdb::targets("iwmo_reuse").await {
            let store = Store::open(&db.url).await.expect("store");
            let ctx = context(&store);
            let h = Harness::new();
            h.put("001.xml", &reuse_message(false, late));
            h.put("002.xml", &reuse_message(true, early));
            let run = sync(&ctx, &h).await;
            assert_eq!(owner(&store).await, Some(person(early)), "{}", db.name);
            assert_eq!(reused(&store, &run).await, [REUSED_LATER], "{}", db.name);
            drop(ctx);
            drop(store);
            db.drop_database().await;
        }
        // The later one in a later run: reported, the number stays.
        for db in testdb::targets("iwmo_reuse").await {
            let store = Store::open(&db.url).await.expect("store");
            let ctx = context(&store);
            let h = Harness::new();
            h.put("001.xml", &reuse_message(true, early));
            sync(&ctx, &h).await;
            h.put("002.xml", &reuse_message(false, late));
            let run = sync(&ctx, &h).await;
            assert_eq!(owner(&store).await, Some(person(early)), "{}", db.name);
            assert_eq!(reused(&store, &run).await, [REUSED_LATER], "{}", db.name);
            // A new message of the later client does not take it either.
            h.put(
                "003.xml",
                &a301(
                    "T10",
                    day(3, 3),
                    late,
                    vec![
                        assigned(1, "02", day(3, 3), None),
                        assigned(2, "02", day(3, 3), None),
                    ],
                ),
            );
            let run = sync(&ctx, &h).await;
            assert_eq!(owner(&store).await, Some(person(early)), "{}", db.name);
            assert_eq!(
                reused(&store, &run).await,
                ["WMO301:0363:T10#1"],
                "{}",
                db.name
            );
            drop(ctx);
            drop(store);
            db.drop_database().await;
        }
        // The earlier one arrives late: it takes the number, and the assignment that had it
        // is reported.
        for db in testdb::targets("iwmo_reuse").await {
            let store = Store::open(&db.url).await.expect("store");
            let ctx = context(&store);
            let h = Harness::new();
            h.put("001.xml", &reuse_message(false, late));
            let run = sync(&ctx, &h).await;
            assert_eq!(owner(&store).await, Some(person(late)), "{}", db.name);
            assert!(reused(&store, &run).await.is_empty(), "{}", db.name);
            h.put("002.xml", &reuse_message(true, early));
            let run = sync(&ctx, &h).await;
            assert_eq!(owner(&store).await, Some(person(early)), "{}", db.name);
            assert_eq!(reused(&store, &run).await, [REUSED_LATER], "{}", db.name);
            // A full run agrees.
            let full = sync_source(&ctx, &h.source, true, Arc::new(Progress::default()))
                .await
                .expect("sync");
            assert_eq!(full.status, RunStatus::Succeeded, "{:?}", full.error);
            assert_eq!(owner(&store).await, Some(person(early)), "{}", db.name);
            assert_eq!(reused(&store, &full).await, [REUSED_LATER], "{}", db.name);
            drop(ctx);
            drop(store);
            db.drop_database().await;
        }
    }
}

#[tokio::test]
async fn a_late_message_and_new_assignments_of_the_dispossessed_client_report_each_product_once_on_every_store()
 {
    for (early, late) in [(BSN, OTHER_BSN), (OTHER_BSN, BSN)] {
        for db in testdb::targets("iwmo_reuse_once").await {
            let store = Store::open(&db.url).await.expect("store");
            let ctx = context(&store);
            let h = Harness::new();
            h.put("001.xml", &reuse_message(false, late));
            sync(&ctx, &h).await;
            // In one run: the earlier client's message arrives late and takes number 1 from
            // the later client, who also has a new WMO301 for it and sends T9 again.
            h.put("002.xml", &reuse_message(true, early));
            h.put(
                "003.xml",
                &a301(
                    "T10",
                    day(3, 3),
                    late,
                    vec![assigned(1, "02", day(3, 3), None)],
                ),
            );
            h.put("004.xml", &reuse_message(false, late));
            let run = sync(&ctx, &h).await;
            assert_eq!(owner(&store).await, Some(person(early)), "{}", db.name);
            let mut ids = reused(&store, &run).await;
            ids.sort();
            assert_eq!(ids, ["WMO301:0363:T10#1", REUSED_LATER], "{}", db.name);
            // A full run reads both copies of T9 as new: one entry all the same.
            let full = sync_source(&ctx, &h.source, true, Arc::new(Progress::default()))
                .await
                .expect("sync");
            assert_eq!(full.status, RunStatus::Succeeded, "{:?}", full.error);
            let mut ids = reused(&store, &full).await;
            ids.sort();
            assert_eq!(ids, ["WMO301:0363:T10#1", REUSED_LATER], "{}", db.name);
            drop(ctx);
            drop(store);
            db.drop_database().await;
        }
    }
}

#[tokio::test]
async fn a_state_stored_without_assignment_number_entries_is_rebuilt_once() {
    // The SQLite store, edited as a state of an older version: no `number` entries.
    let db = testdb::targets("iwmo_numbers")
        .await
        .into_iter()
        .find(|db| !db.is_pg())
        .expect("sqlite");
    let crate::testdb::Kind::Sqlite { path, .. } = &db.kind else {
        panic!("sqlite");
    };
    let store = Store::open(&db.url).await.expect("store");
    let ctx = context(&store);
    let h = Harness::new();
    h.put("001.xml", &reuse_message(true, BSN));
    sync(&ctx, &h).await;
    let conn = rusqlite::Connection::open(path).expect("open");
    let removed = conn
        .execute(
            "DELETE FROM source_state WHERE kind = 'number' OR (kind = 'meta' AND key = X'6e756d62657273')",
            [],
        )
        .expect("edit");
    assert_eq!(removed, 2);
    drop(conn);
    // The next run reads the folder again and finds the number taken by the earlier message.
    h.put("002.xml", &reuse_message(false, OTHER_BSN));
    let (run, bytes) = sync_counted(&ctx, &h).await;
    assert_eq!(bytes, size(&h, "001.xml") + size(&h, "002.xml"));
    assert_eq!(owner(&store).await, Some(person(BSN)));
    assert_eq!(reused(&store, &run).await, [REUSED_LATER]);
    // Then incrementally again.
    let mut again = reuse_message(false, OTHER_BSN);
    again.header.id = "T11".into();
    h.put("003.xml", &again);
    let (run, bytes) = sync_counted(&ctx, &h).await;
    assert_eq!(bytes, size(&h, "003.xml"));
    assert_eq!(owner(&store).await, Some(person(BSN)));
    assert_eq!(reused(&store, &run).await, ["WMO301:0363:T11#1"]);
}
