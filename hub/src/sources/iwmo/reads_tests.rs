//! How many queries of the store's state an incremental iWmo run sends (SQLite, and
//! PostgreSQL when `MATCHPOINT_TEST_POSTGRES_URL` is set): a batch of pairs is read together,
//! so the count grows with the batches, not with the assignments of the pairs applied.

use matchpoint_connectors::iwmo::{Body, DeliveryStatus, MessageKind};
use matchpoint_schemas::Bsn;

use super::store_tests::{context, sync};
use super::tests::{Harness, THUIS, a301, assigned, client, day, started};
use crate::generate::iwmo::{OutMessage, header};
use crate::store::Store;
use crate::testdb;

/// The first `n` valid BSNs from 100000009 on (elfproef).
fn bsns(n: usize) -> Vec<String> {
    (10_000_000u32..)
        .filter_map(|prefix| {
            let digits = prefix.to_string();
            let sum: u32 = digits
                .bytes()
                .zip((2..=9).rev())
                .map(|(d, w)| u32::from(d - b'0') * w)
                .sum();
            let check = sum % 11;
            (check < 10).then(|| format!("{digits}{check}"))
        })
        .filter(|b| Bsn::parse(b).is_ok())
        .take(n)
        .collect()
}

/// The state queries of the second of two runs over `clients` clients with `numbers`
/// assignments each: the first applies every client's WMO301, the second (incremental) one
/// start per client, which delivers every assignment of the client.
async fn state_reads_of_incremental_run(store: &Store, clients: usize, numbers: u64) -> u64 {
    let ctx = context(store);
    let h = Harness::new();
    let bsns = bsns(clients);
    for (i, bsn) in (0u64..).zip(&bsns) {
        let products = (1..=numbers)
            .map(|n| assigned(100 * i + n, "02", day(3, 1), None))
            .collect();
        h.put(
            &format!("a{i:03}.xml"),
            &a301(&format!("T{i}"), day(3, 1), bsn, products),
        );
    }
    sync(&ctx, &h).await;
    for (i, bsn) in (0u64..).zip(&bsns) {
        let start = OutMessage {
            header: header(MessageKind::Wmo305, THUIS, &format!("S{i}"), day(3, 6)),
            client: client(bsn),
            body: Body::Start(vec![started(
                Some(100 * i + 1),
                day(3, 5),
                DeliveryStatus::First,
            )]),
            every_optional: false,
        };
        h.put(&format!("s{i:03}.xml"), &start);
    }
    let before = store.state_reads();
    sync(&ctx, &h).await;
    let reads = store.state_reads() - before;
    let delivered = store.involvements("wmo").await.expect("involvements");
    let expected = clients * usize::try_from(numbers).expect("numbers");
    assert_eq!(delivered.len(), expected);
    let begun = delivered.iter().filter(|s| s.status == "active").count();
    assert_eq!(begun, clients, "one start per client applied");
    reads
}

#[tokio::test]
async fn an_incremental_run_reads_the_state_per_batch_of_pairs_not_per_assignment_on_every_store() {
    // 8 clients: 4 batches of 2 pairs (the batch size in tests).
    let mut one = Vec::new();
    for db in testdb::targets("iwmo_reads_one").await {
        let store = Store::open(&db.url).await.expect("store");
        one.push((db.name, state_reads_of_incremental_run(&store, 8, 1).await));
    }
    let mut three = Vec::new();
    for db in testdb::targets("iwmo_reads_three").await {
        let store = Store::open(&db.url).await.expect("store");
        three.push((db.name, state_reads_of_incremental_run(&store, 8, 3).await));
    }
    assert_eq!(one.len(), three.len());
    for ((name, one), (_, three)) in one.iter().zip(&three) {
        // Three times the assignments: not one query more.
        assert_eq!(
            one, three,
            "{name}: state queries with 1 and 3 assignments per pair"
        );
    }
    // Twice the batches: at most a few queries more per batch (logs, numbers).
    for db in testdb::targets("iwmo_reads_more").await {
        let store = Store::open(&db.url).await.expect("store");
        let more = state_reads_of_incremental_run(&store, 16, 3).await;
        let (_, base) = three
            .iter()
            .find(|(name, _)| *name == db.name)
            .expect("same targets");
        // The registry of applied files is read 3 entries a page (tests): 16 more files.
        assert!(
            more <= base + 4 * 2 + 16 / 3 + 1,
            "{}: {base} state queries for 4 batches, {more} for 8",
            db.name
        );
    }
}
