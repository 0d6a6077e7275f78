//! Retention on a real SQLite store and audit trail (PostgreSQL too with
//! `MATCHPOINT_TEST_POSTGRES_URL`).

use std::sync::Arc;

use chrono::{Duration, NaiveDate, Utc};
use matchpoint_schemas::{
    Bsn, ContactPerson, Involvement, InvolvementStatus, KeyPurpose, LifeDomain, MasterKey,
    Relation, RelationKind,
};

use super::run;
use crate::audit::{AuditAction, AuditLog, AuditOutcome, NewAuditEntry};
use crate::config::RetentionSettings;
use crate::store::{Completion, QuarantineEntry, RETENTION_SOURCE, RunMode, Store};

fn key() -> Arc<MasterKey> {
    Arc::new(MasterKey::from_secret("ret-k1", &[7u8; 32]).expect("key"))
}

fn record(
    key: &MasterKey,
    id: &str,
    bsn: &str,
    end: Option<NaiveDate>,
    purge_after: Option<NaiveDate>,
    rel: Option<&str>,
) -> Involvement {
    let p = key.pseudonymiser(KeyPurpose::Index);
    let pseudo = |b: &str| p.pseudonymise(&Bsn::parse(b).expect("bsn"));
    Involvement {
        person: pseudo(bsn),
        key_id: p.key_id().as_str().to_owned(),
        organisation_code: "OKC-ZUID".into(),
        organisation_name: "OKC Zuid".into(),
        team: None,
        life_domain: LifeDomain::YouthHealth,
        goal: None,
        contact: ContactPerson {
            name: "Contact".into(),
            role: None,
            phone: None,
            email: None,
        },
        start_date: NaiveDate::from_ymd_opt(2015, 1, 1).expect("date"),
        end_date: end,
        end_reason: None,
        status: if end.is_some() {
            InvolvementStatus::Ended
        } else {
            InvolvementStatus::Active
        },
        coordinator: false,
        sensitive: false,
        shielded: false,
        purge_after,
        source: "okc-2".into(),
        source_record_id: id.to_owned(),
        relations: rel
            .map(|b| {
                vec![Relation {
                    kind: RelationKind::Child,
                    other: pseudo(b),
                }]
            })
            .into_iter()
            .flatten()
            .collect(),
    }
}

fn entry(i: usize) -> NewAuditEntry {
    NewAuditEntry {
        user_id: Some(1),
        role: "professional".into(),
        organisation: Some("OKC-ZUID".into()),
        action: AuditAction::Lookup,
        subject: Some(format!("{i:064x}")),
        subject_key_id: Some("ret-k1".into()),
        purpose: Some("coordinating_care".into()),
        outcome: AuditOutcome::Granted,
        checks: vec!["role".into()],
        break_glass: None,
        records_returned: 1,
        client_addr: None,
        request_id: format!("req-{i}"),
        refers_to: None,
    }
}

async fn retention_on(url: &str) {
    let key = key();
    let store = Store::open(url).await.expect("store");
    let today = Utc::now().date_naive();
    let days = |n: i64| today - Duration::days(n);
    let (a, b, c) = ("111222333", "123456782", "100000009");
    let records = vec![
        // Ended three years ago: purged, with its relation.
        record(&key, "R1", a, Some(days(3 * 366)), None, Some(b)),
        // Ended a year ago: kept until the second run.
        record(&key, "R2", b, Some(days(365)), None, None),
        // Active but past its own purge date (an age limit): purged.
        record(&key, "R3", c, None, Some(days(1)), None),
        // Active: kept, with its relation.
        record(&key, "R4", c, None, None, Some(a)),
    ];
    let run_id = store.begin_run("okc-2", RunMode::Full).await.expect("run");
    let rejects = vec![QuarantineEntry {
        record_index: 5,
        reason_code: "invalid_bsn".into(),
        reason: "test".into(),
        ..Default::default()
    }];
    store.stage(run_id, records, rejects).await.expect("stage");
    store
        .complete_run(
            run_id,
            Completion {
                read: 5,
                mode: RunMode::Full,
                cursor: None,
                guard: None,
                accept: false,
            },
        )
        .await
        .expect("publish");
    let audit = AuditLog::open(url, key.clone()).await.expect("audit");
    for i in 0..3 {
        audit.append(entry(i)).await.expect("append");
    }
    let checkpoint = audit.checkpoint().await.expect("checkpoint");

    let settings = RetentionSettings {
        audit_years: 1,
        ..RetentionSettings::default()
    };
    // 200 days on: the quarantine entry (180 days) is due, the audit entries (1 year) not.
    let later = Utc::now() + Duration::days(200);
    let dry = run(&store, Some(&audit), &settings, later, true)
        .await
        .expect("dry run");
    assert_eq!(
        (
            dry.involvements,
            dry.relations,
            dry.quarantine,
            dry.audit,
            dry.run
        ),
        (2, 1, 1, 0, None)
    );
    assert_eq!(
        store.involvements("okc-2").await.expect("rows").len(),
        4,
        "dry run kept all"
    );

    let done = run(&store, Some(&audit), &settings, later, false)
        .await
        .expect("run");
    assert_eq!(
        (
            done.involvements,
            done.relations,
            done.quarantine,
            done.audit
        ),
        (2, 1, 1, 0)
    );
    let ids: Vec<String> = store
        .involvements("okc-2")
        .await
        .expect("rows")
        .into_iter()
        .map(|r| r.source_record_id)
        .collect();
    assert_eq!(ids, ["R2", "R4"]);
    let rels = store.relations("okc-2").await.expect("relations");
    assert_eq!(rels.len(), 1);
    assert_eq!(rels[0].0, "R4");

    // Two years on: R2 ended over 24 months before; the audit entries are over a year old.
    let much_later = Utc::now() + Duration::days(2 * 366);
    let second = run(&store, Some(&audit), &settings, much_later, false)
        .await
        .expect("run");
    // The three entries and the `retention_purge` entry the first run wrote.
    assert_eq!((second.involvements, second.audit), (1, 4), "{second:?}");
    let verified = audit.verify(Some(&checkpoint)).await.expect("verify");
    assert!(
        verified.ok,
        "audit verify after the retention purge: {verified:?}"
    );

    // Both runs are in the history.
    let history = store.runs(Some(RETENTION_SOURCE), 10).await.expect("runs");
    assert_eq!(history.len(), 2);
    assert!(history.iter().all(|r| r.mode == "retention"));
    assert_eq!(history[1].counts.ended, 2);
    assert_eq!(history[1].counts.rejected, 1);
    assert_eq!(Some(history[0].id), second.run);
}

#[tokio::test]
async fn retention_purges_old_involvements_quarantine_and_audit_entries_on_sqlite() {
    let dir = tempfile::tempdir().expect("tempdir");
    retention_on(&format!(
        "sqlite://{}",
        dir.path().join("index.db").display()
    ))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_purges_old_involvements_quarantine_and_audit_entries_on_postgresql() {
    let Some(db) = crate::testdb::postgres("retention").await else {
        return;
    };
    retention_on(&db.url).await;
    db.drop_database().await;
}

#[tokio::test]
async fn the_scheduled_job_runs_once_per_slot_and_skips_when_another_instance_holds_the_lease() {
    use super::{Scheduled, run_if_due};
    use chrono::TimeZone;
    let settings = RetentionSettings::default(); // 04:30 daily
    let lease = Duration::minutes(15);
    let at = Utc
        .with_ymd_and_hms(2026, 1, 2, 5, 0, 0)
        .single()
        .expect("time");
    let before_slot = Utc
        .with_ymd_and_hms(2026, 1, 2, 4, 0, 0)
        .single()
        .expect("time");

    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("a.db").display());
    let store = Store::open(&url).await.expect("store");
    // Started at 04:00: not due before the 04:30 slot.
    let early = run_if_due(
        &store,
        None,
        &settings,
        "UTC",
        "me",
        lease,
        before_slot,
        before_slot,
    )
    .await
    .expect("look");
    assert!(matches!(early, Scheduled::NotDue), "{early:?}");
    // Started the day before at 04:00: the slot at 04:30 that day was missed and is caught up
    // once.
    let day_before = before_slot - Duration::days(1);
    let first = run_if_due(
        &store,
        None,
        &settings,
        "UTC",
        "me",
        lease,
        day_before,
        before_slot,
    )
    .await
    .expect("look");
    assert!(matches!(first, Scheduled::Ran(Ok(_))), "{first:?}");
    // Its run is recorded with the real start time, after every slot up to `at`.
    let again = run_if_due(&store, None, &settings, "UTC", "me", lease, day_before, at)
        .await
        .expect("look");
    assert!(matches!(again, Scheduled::NotDue), "{again:?}");
    assert_eq!(
        store
            .runs(Some(RETENTION_SOURCE), 10)
            .await
            .expect("runs")
            .len(),
        1
    );

    // Another instance holds the lease: skipped, nothing recorded.
    let dir2 = tempfile::tempdir().expect("tempdir");
    let url2 = format!("sqlite://{}", dir2.path().join("b.db").display());
    let store2 = Store::open(&url2).await.expect("store");
    store2
        .try_lease(crate::schedule::RETENTION_JOB, "other", at, at + lease)
        .await
        .expect("lease");
    let skipped = run_if_due(&store2, None, &settings, "UTC", "me", lease, day_before, at)
        .await
        .expect("look");
    assert!(
        matches!(&skipped, Scheduled::Skipped { holder } if holder == "other"),
        "{skipped:?}"
    );
    assert!(
        store2
            .runs(Some(RETENTION_SOURCE), 10)
            .await
            .expect("runs")
            .is_empty()
    );
}
