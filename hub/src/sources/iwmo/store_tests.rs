//! The iWmo source through the whole pipeline into each store (SQLite, and PostgreSQL when
//! `MATCHPOINT_TEST_POSTGRES_URL` is set).

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use matchpoint_connectors::iwmo::DeliveryStatus;
use matchpoint_schemas::{MasterKey, Registry};

use super::tests::{BSN, Harness, THUIS, a301, assigned, day, e307, s305, started, stopped};
use crate::generate::ORGANISATIONS_TOML;
use crate::store::{RunRecord, RunStatus, Store};
use crate::sync::{Progress, SyncContext, sync_source};
use crate::testdb;

fn context(store: &Store) -> SyncContext {
    SyncContext {
        store: store.clone(),
        key: Arc::new(MasterKey::from_secret("k1", &[7u8; 32]).expect("key")),
        registry: Arc::new(Registry::parse(ORGANISATIONS_TOML, "reg").expect("registry")),
        max_end_share: 0.5,
        quarantine_raw_days: 30,
        batch_size: 50,
        cancel: Arc::new(AtomicBool::new(false)),
    }
}

async fn sync(ctx: &SyncContext, h: &Harness) -> RunRecord {
    let out = sync_source(ctx, &h.source, false, Arc::new(Progress::default()))
        .await
        .expect("sync");
    assert_eq!(out.status, RunStatus::Succeeded, "{:?}", out.error);
    out
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
