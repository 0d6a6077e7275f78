//! Retention and the stored iWmo state, on every store (SQLite, and PostgreSQL when
//! `MATCHPOINT_TEST_POSTGRES_URL` is set): purging the last involvements of a (provider,
//! client) pair purges its message log too, and no later run brings them back.

use std::sync::Arc;

use chrono::{DateTime, TimeZone, Utc};
use matchpoint_connectors::iwmo::DeliveryStatus;

use super::store_tests::{assignment, context, sync};
use super::stored::{NUMBER, PAIR, parse_log};
use super::tests::{BSN, Harness, OTHER_BSN, THUIS, a301, assigned, day, e307, stopped};
use crate::config::RetentionSettings;
use crate::store::{RETENTION_SOURCE, RunStatus, Store};
use crate::sync::{Progress, sync_source};
use crate::testdb;

/// Retention "now": 24 months back is 2026-10-01, between the ended assignments (April and
/// June 2026) and the live one (ends 2026-12-31).
fn later() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2028, 10, 1, 12, 0, 0)
        .single()
        .expect("time")
}

/// The stored pair logs of the source: (key, number of logged messages).
async fn pair_logs(store: &Store) -> Vec<(Vec<u8>, usize)> {
    let mut logs: Vec<(Vec<u8>, usize)> = store
        .source_state("wmo", PAIR, None)
        .await
        .expect("state")
        .into_iter()
        .map(|(k, v)| (k, parse_log(&v).expect("log").len()))
        .collect();
    logs.sort();
    logs
}

/// The person pseudonym (bytes) of a published assignment of the home-care provider.
async fn person(store: &Store, number: u64) -> Vec<u8> {
    let rows = store.involvements("wmo").await.expect("involvements");
    let row = rows
        .iter()
        .find(|s| s.source_record_id == format!("{THUIS}-{number}"))
        .expect("published");
    hex::decode(&row.person).expect("hex")
}

async fn record_ids(store: &Store) -> Vec<String> {
    let mut ids: Vec<String> = store
        .involvements("wmo")
        .await
        .expect("involvements")
        .into_iter()
        .map(|s| s.source_record_id)
        .collect();
    ids.sort();
    ids
}

#[tokio::test]
async fn retention_purges_the_message_log_of_a_pair_left_without_involvement_on_every_store() {
    for db in testdb::targets("iwmo_retention").await {
        let store = Store::open(&db.url).await.expect("store");
        let ctx = context(&store);
        let h = Harness::new();
        // Pair (THUIS, BSN): assignment 1, stopped on 2026-06-01 (two messages in its log).
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
            &e307(
                "E1",
                day(6, 2),
                stopped(day(6, 1), "19", DeliveryStatus::First),
            ),
        );
        // Pair (THUIS, OTHER_BSN): assignment 2 live (ends 2026-12-31), assignment 3 ended
        // on 2026-04-30.
        let mut ended = assigned(3, "07", day(3, 1), None);
        ended.end = Some(day(4, 30));
        h.put(
            "003.xml",
            &a301(
                "T2",
                day(3, 1),
                OTHER_BSN,
                vec![assigned(2, "02", day(3, 1), None), ended],
            ),
        );
        let first = sync(&ctx, &h).await;
        assert_eq!(first.counts.inserted, 3, "{}", db.name);
        let live_person = person(&store, 2).await;
        assert_eq!(pair_logs(&store).await.len(), 2, "{}", db.name);

        let settings = RetentionSettings::default();
        // A dry run counts the log and removes nothing.
        let dry = crate::retention::run(&store, None, &settings, later(), true)
            .await
            .expect("dry run");
        assert_eq!((dry.involvements, dry.message_logs), (2, 1), "{}", db.name);
        assert_eq!(pair_logs(&store).await.len(), 2, "{}", db.name);
        assert_eq!(record_ids(&store).await.len(), 3, "{}", db.name);

        let done = crate::retention::run(&store, None, &settings, later(), false)
            .await
            .expect("retention");
        assert_eq!(
            (done.involvements, done.message_logs),
            (2, 1),
            "{}",
            db.name
        );
        assert_eq!(record_ids(&store).await, vec![format!("{THUIS}-2")]);
        // The pair left without involvement lost its log; the live pair keeps its own
        // (with the message of the purged assignment 3: the pair is still in care).
        let logs = pair_logs(&store).await;
        assert_eq!(logs.len(), 1, "{}", db.name);
        assert!(logs[0].0.ends_with(&live_person), "{}", db.name);
        assert!(logs[0].0.starts_with(THUIS.as_bytes()), "{}", db.name);
        assert_eq!(logs[0].1, 1, "{}", db.name);
        // The run history counts it (`accepted` = message logs).
        let runs = store.runs(Some(RETENTION_SOURCE), 1).await.expect("runs");
        assert_eq!(runs[0].id, done.run.expect("recorded"), "{}", db.name);
        assert_eq!(
            (runs[0].counts.ended, runs[0].counts.accepted),
            (2, 1),
            "{}",
            db.name
        );

        // The next incremental run is quiet: the files stay applied, nothing is read,
        // published or ended.
        let quiet = sync(&ctx, &h).await;
        assert_eq!(
            (
                quiet.counts.read,
                quiet.counts.inserted,
                quiet.counts.updated,
                quiet.counts.ended
            ),
            (0, 0, 0, 0),
            "{}",
            db.name
        );
        assert_eq!(record_ids(&store).await, vec![format!("{THUIS}-2")]);

        // A new message for the purged pair starts a fresh log: its own assignment is
        // published, the purged one is not replayed.
        h.put(
            "004.xml",
            &a301(
                "T4",
                day(9, 1),
                BSN,
                vec![assigned(4, "02", day(9, 1), None)],
            ),
        );
        let fresh = sync(&ctx, &h).await;
        assert_eq!(
            (fresh.counts.read, fresh.counts.inserted, fresh.counts.ended),
            (1, 1, 0),
            "{}",
            db.name
        );
        assert_eq!(assignment(&store, 1).await, None, "{}", db.name);
        let bsn_person = person(&store, 4).await;
        let logs = pair_logs(&store).await;
        assert_eq!(logs.len(), 2, "{}", db.name);
        let fresh_log = logs
            .iter()
            .find(|(k, _)| k.ends_with(&bsn_person))
            .expect("fresh log");
        assert_eq!(fresh_log.1, 1, "{}", db.name);

        // A full run rebuilds from the folder, which still holds the purged messages: a
        // message of an applied file that its pair's log no longer holds is not applied
        // again, so assignment 1 stays purged. The message of assignment 3 is still in the
        // log of its live pair (it also assigned assignment 2), so a full run publishes
        // assignment 3 again, until the next retention run (documented limitation).
        let full = sync_source(&ctx, &h.source, true, Arc::new(Progress::default()))
            .await
            .expect("full");
        assert_eq!(full.status, RunStatus::Succeeded, "{:?}", full.error);
        assert_eq!(
            (full.counts.inserted, full.counts.ended),
            (1, 0),
            "{}",
            db.name
        );
        assert_eq!(
            record_ids(&store).await,
            vec![
                format!("{THUIS}-2"),
                format!("{THUIS}-3"),
                format!("{THUIS}-4")
            ]
        );
        let logs = pair_logs(&store).await;
        assert_eq!(logs.iter().map(|(_, n)| n).sum::<usize>(), 2, "{}", db.name);
        let again = crate::retention::run(&store, None, &settings, later(), false)
            .await
            .expect("retention");
        assert_eq!(
            (again.involvements, again.message_logs),
            (1, 0),
            "{}",
            db.name
        );
        let quiet = sync(&ctx, &h).await;
        assert_eq!(
            (quiet.counts.read, quiet.counts.inserted, quiet.counts.ended),
            (0, 0, 0),
            "{}",
            db.name
        );
        drop(ctx);
        drop(store);
        db.drop_database().await;
    }
}

#[tokio::test]
async fn an_assignment_number_of_a_purged_pair_goes_to_the_next_client_on_every_store() {
    for db in testdb::targets("iwmo_retention_number").await {
        let store = Store::open(&db.url).await.expect("store");
        let ctx = context(&store);
        let h = Harness::new();
        // Assignment 1 of BSN ended on 2026-04-30: retention purges it and the pair's log.
        let mut ended = assigned(1, "02", day(3, 1), None);
        ended.end = Some(day(4, 30));
        h.put("001.xml", &a301("T1", day(3, 1), BSN, vec![ended]));
        sync(&ctx, &h).await;
        let numbers = |store: &Store| {
            let store = store.clone();
            async move {
                store
                    .source_state("wmo", NUMBER, None)
                    .await
                    .expect("state")
                    .len()
            }
        };
        assert_eq!(numbers(&store).await, 1, "{}", db.name);
        let settings = RetentionSettings::default();
        let done = crate::retention::run(&store, None, &settings, later(), false)
            .await
            .expect("retention");
        assert_eq!(done.message_logs, 1, "{}", db.name);
        assert!(pair_logs(&store).await.is_empty(), "{}", db.name);
        // The log's assignment-number entries went with it.
        assert_eq!(numbers(&store).await, 0, "{}", db.name);

        // The provider gives number 1 to another client later: it is that client's.
        h.put(
            "002.xml",
            &a301(
                "T9",
                day(11, 1),
                OTHER_BSN,
                vec![assigned(1, "02", day(11, 1), None)],
            ),
        );
        let run = sync(&ctx, &h).await;
        assert_eq!(
            (run.counts.inserted, run.counts.rejected),
            (1, 0),
            "{}",
            db.name
        );
        assert_eq!(
            person(&store, 1).await,
            hex::decode(super::tests::person(OTHER_BSN)).expect("hex"),
            "{}",
            db.name
        );
        assert_eq!(numbers(&store).await, 1, "{}", db.name);
        drop(ctx);
        drop(store);
        db.drop_database().await;
    }
}
