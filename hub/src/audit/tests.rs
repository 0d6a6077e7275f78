//! Audit trail tests, run against SQLite and — when `MATCHPOINT_TEST_POSTGRES_URL` is set —
//! against a fresh PostgreSQL database per test.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use chrono::Utc;
use matchpoint_schemas::{Bsn, KeyPurpose, MasterKey};
use proptest::prelude::*;
use sqlx::{AssertSqlSafe, Connection, PgConnection};

use super::chain::{CANONICAL_LABEL, canonical_bytes, time_text};
use super::*;
use crate::testdb::{self, Kind, POSTGRES_URL_VAR};

fn key() -> Arc<MasterKey> {
    Arc::new(MasterKey::from_secret("k-test", &[7u8; 32]).expect("key"))
}

/// A fresh database of this suite (see [`crate::testdb`]).
struct Target(testdb::TestDb);

impl std::ops::Deref for Target {
    type Target = testdb::TestDb;
    fn deref(&self) -> &testdb::TestDb {
        &self.0
    }
}

async fn targets() -> Vec<Target> {
    testdb::targets("audit")
        .await
        .into_iter()
        .map(Target)
        .collect()
}

impl Target {
    async fn open(&self) -> AuditLog {
        AuditLog::open(&self.url, key())
            .await
            .unwrap_or_else(|err| panic!("open {} audit log: {err}", self.name))
    }

    /// Runs SQL directly against the database, as an attacker or a DBA would.
    async fn exec(&self, sql: &str) -> Result<(), String> {
        match &self.kind {
            Kind::Sqlite { path, .. } => {
                let conn = rusqlite::Connection::open(path).map_err(|e| e.to_string())?;
                conn.busy_timeout(std::time::Duration::from_secs(10))
                    .map_err(|e| e.to_string())?;
                conn.execute_batch(sql).map_err(|e| e.to_string())
            }
            Kind::Postgres { .. } => {
                let mut conn = PgConnection::connect(&self.url)
                    .await
                    .map_err(|e| e.to_string())?;
                let r = sqlx::raw_sql(AssertSqlSafe(sql.to_owned()))
                    .execute(&mut conn)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string());
                let _ = conn.close().await;
                r
            }
        }
    }

    /// Removes the append-only triggers, as an attacker with database access would.
    async fn disable_triggers(&self) {
        let sql = if self.is_pg() {
            "ALTER TABLE audit_log DISABLE TRIGGER USER; \
             ALTER TABLE audit_anchors DISABLE TRIGGER USER;"
        } else {
            "DROP TRIGGER IF EXISTS audit_log_no_update; \
             DROP TRIGGER IF EXISTS audit_log_no_delete; \
             DROP TRIGGER IF EXISTS audit_anchors_no_update; \
             DROP TRIGGER IF EXISTS audit_anchors_no_delete;"
        };
        self.exec(sql).await.expect("disable triggers");
    }

    async fn cleanup(self) {
        self.0.drop_database().await;
    }
}

/// An entry with every field set, varied by `i`.
fn sample(i: usize) -> NewAuditEntry {
    NewAuditEntry {
        user_id: Some(100 + i as i64),
        role: "professional".into(),
        organisation: Some(format!("ORG{}", i % 3)),
        action: AuditAction::Lookup,
        subject: Some(format!("{:064x}", i)),
        subject_key_id: Some("k-test".into()),
        purpose: Some("care_coordination".into()),
        outcome: AuditOutcome::Granted,
        checks: vec!["authenticated".into(), format!("relationship:{i}")],
        break_glass: Some("safety: test".into()),
        records_returned: 3,
        client_addr: Some("127.0.0.1".into()),
        request_id: format!("req-{i}"),
        refers_to: Some(1),
    }
}

/// Appends `n` entries one after the other (distinct times, one commit each).
async fn append_n(log: &AuditLog, n: usize) -> Vec<AuditEntry> {
    let mut out = Vec::new();
    for i in 0..n {
        out.push(log.append(sample(i)).await.expect("append"));
    }
    out
}

fn failure(report: &VerifyReport) -> (FailureKind, i64) {
    let f = report
        .failure
        .as_ref()
        .unwrap_or_else(|| panic!("verify must fail: {report:?}"));
    (f.kind, f.seq)
}

// ---------------------------------------------------------------------------------------------
// Chain, concurrency, durability
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_from_two_instances_form_one_gapless_durable_chain() {
    for t in targets().await {
        // Two logs on one database: two server instances (or server and CLI).
        let a = t.open().await;
        let b = t.open().await;
        let mut tasks = Vec::new();
        for i in 0..200 {
            let log = if i % 2 == 0 { a.clone() } else { b.clone() };
            tasks.push(tokio::spawn(async move { log.append(sample(i)).await }));
        }
        let mut written = Vec::new();
        for task in tasks {
            written.push(task.await.expect("task").expect("append"));
        }
        let mut seqs: Vec<i64> = written.iter().map(|e| e.seq).collect();
        seqs.sort_unstable();
        assert_eq!(seqs, (1..=200).collect::<Vec<_>>(), "{}: gapless", t.name);
        drop((a, b));

        // Durable: everything acknowledged is there after reopening.
        let log = t.open().await;
        let report = log.verify(None).await.expect("verify");
        assert!(report.ok, "{}: {report:?}", t.name);
        assert_eq!(report.entries_verified, 200, "{}", t.name);
        for e in &written {
            assert_eq!(
                log.entry(e.seq).await.expect("read").as_ref(),
                Some(e),
                "{}",
                t.name
            );
        }
        t.cleanup().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_commit_batches_fifty_concurrent_appends_into_few_transactions() {
    for t in targets().await {
        let log = t.open().await;
        log.append(sample(0)).await.expect("first append");
        let before = log.commits();
        // Hold the chain head from another connection, so the appends queue up while the
        // writer waits for the database lock (as it waits for an fsync under load).
        enum Blocker {
            Sqlite(rusqlite::Connection),
            Pg(PgConnection),
        }
        let blocker = match &t.kind {
            Kind::Sqlite { path, .. } => {
                let c = rusqlite::Connection::open(path).expect("open");
                c.execute_batch("BEGIN IMMEDIATE; UPDATE audit_head SET seq = seq WHERE id = 1;")
                    .expect("lock");
                Blocker::Sqlite(c)
            }
            Kind::Postgres { .. } => {
                let mut c = PgConnection::connect(&t.url).await.expect("connect");
                sqlx::raw_sql("BEGIN; SELECT seq FROM audit_head WHERE id = 1 FOR UPDATE;")
                    .execute(&mut c)
                    .await
                    .expect("lock");
                Blocker::Pg(c)
            }
        };
        let enqueued_before = log.enqueued();
        let tasks: Vec<_> = (0..50)
            .map(|i| {
                let log = log.clone();
                tokio::spawn(async move { log.append(sample(i)).await })
            })
            .collect();
        while log.enqueued() < enqueued_before + 50 {
            tokio::task::yield_now().await;
        }
        match blocker {
            Blocker::Sqlite(c) => c.execute_batch("COMMIT").expect("unlock"),
            Blocker::Pg(mut c) => {
                sqlx::raw_sql("COMMIT")
                    .execute(&mut c)
                    .await
                    .expect("unlock");
            }
        }
        for task in tasks {
            task.await.expect("task").expect("append");
        }
        let commits = log.commits() - before;
        assert!(
            commits <= 2,
            "{}: 50 appends took {commits} transactions",
            t.name
        );
        assert!(log.verify(None).await.expect("verify").ok, "{}", t.name);
        t.cleanup().await;
    }
}

// ---------------------------------------------------------------------------------------------
// Tampering
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn changing_any_column_of_an_entry_is_detected_at_that_entry() {
    for t in targets().await {
        let log = t.open().await;
        append_n(&log, 8).await;
        assert!(log.verify(None).await.expect("verify").ok);
        t.disable_triggers().await;
        t.exec("CREATE TABLE audit_backup AS SELECT * FROM audit_log WHERE seq = 5")
            .await
            .expect("backup");
        let at_change = if t.is_pg() {
            "at + interval '1 second'"
        } else {
            "'2020-01-01T00:00:00.000000Z'"
        };
        let cases: Vec<(&str, String)> = vec![
            ("at", at_change.to_owned()),
            ("user_id", "user_id + 1".into()),
            ("role", "role || 'x'".into()),
            ("organisation", "organisation || 'x'".into()),
            ("action", "'audit_search'".into()),
            ("subject", "subject || 'x'".into()),
            ("subject_key_id", "subject_key_id || 'x'".into()),
            ("purpose", "purpose || 'x'".into()),
            ("outcome", "'refused'".into()),
            ("checks", "'[\"authenticated\"]'".into()),
            ("break_glass", "NULL".into()),
            ("records_returned", "records_returned + 1".into()),
            ("client_addr", "'10.0.0.1'".into()),
            ("request_id", "request_id || 'x'".into()),
            ("refers_to", "refers_to + 1".into()),
            ("hash", format!("'{}'", "ab".repeat(32))),
        ];
        for (column, value) in &cases {
            t.exec(&format!(
                "UPDATE audit_log SET {column} = {value} WHERE seq = 5"
            ))
            .await
            .unwrap_or_else(|e| panic!("{}: tamper {column}: {e}", t.name));
            let report = log.verify(None).await.expect("verify");
            assert_eq!(
                failure(&report),
                (FailureKind::Changed, 5),
                "{}: column {column}",
                t.name
            );
            assert!(
                report
                    .failure
                    .as_ref()
                    .is_some_and(|f| f.message.contains('5'))
            );
            t.exec(&format!(
                "UPDATE audit_log SET {column} = (SELECT {column} FROM audit_backup) WHERE seq = 5"
            ))
            .await
            .expect("restore");
            assert!(
                log.verify(None).await.expect("verify").ok,
                "{}: restored {column}",
                t.name
            );
        }
        // The sequence number itself: the entry is gone from its place.
        t.exec("UPDATE audit_log SET seq = 1000 WHERE seq = 5")
            .await
            .expect("tamper seq");
        assert_eq!(
            failure(&log.verify(None).await.expect("verify")),
            (FailureKind::Removed, 5),
            "{}",
            t.name
        );
        t.cleanup().await;
    }
}

#[tokio::test]
async fn deleting_reordering_and_truncating_are_detected_and_named() {
    for t in targets().await {
        let log = t.open().await;
        let entries = append_n(&log, 10).await;
        let cp = log.checkpoint().await.expect("checkpoint");
        assert_eq!(cp.size, 10);
        let report = log.verify(Some(&cp)).await.expect("verify");
        assert!(
            report.ok && report.checkpoint_matched == Some(true),
            "{report:?}"
        );
        t.disable_triggers().await;

        // Reorder entries 6 and 7.
        t.exec(
            "UPDATE audit_log SET seq = -6 WHERE seq = 6; \
             UPDATE audit_log SET seq = 6 WHERE seq = 7; \
             UPDATE audit_log SET seq = 7 WHERE seq = -6;",
        )
        .await
        .expect("reorder");
        assert_eq!(
            failure(&log.verify(None).await.expect("verify")),
            (FailureKind::Reordered, 6),
            "{}",
            t.name
        );
        t.exec(
            "UPDATE audit_log SET seq = -6 WHERE seq = 6; \
             UPDATE audit_log SET seq = 6 WHERE seq = 7; \
             UPDATE audit_log SET seq = 7 WHERE seq = -6;",
        )
        .await
        .expect("reorder back");
        assert!(log.verify(None).await.expect("verify").ok, "{}", t.name);

        // Truncate the tail and move the head back, as a careful attacker would: only the
        // checkpoint shows it.
        let head8 = &entries[7].hash;
        t.exec(&format!(
            "DELETE FROM audit_log WHERE seq > 8; \
             UPDATE audit_head SET seq = 8, hash = '{head8}' WHERE id = 1;"
        ))
        .await
        .expect("truncate");
        assert!(
            log.verify(None).await.expect("verify").ok,
            "{}: without a checkpoint a clean truncation is invisible",
            t.name
        );
        let report = log.verify(Some(&cp)).await.expect("verify");
        assert_eq!(failure(&report), (FailureKind::Truncated, 9), "{}", t.name);

        // Delete an entry in the middle.
        t.exec("DELETE FROM audit_log WHERE seq = 4")
            .await
            .expect("delete");
        assert_eq!(
            failure(&log.verify(None).await.expect("verify")),
            (FailureKind::Removed, 4),
            "{}",
            t.name
        );
        t.cleanup().await;
    }
}

#[tokio::test]
async fn a_truncated_tail_is_named_from_the_head_and_a_rewritten_chain_from_the_checkpoint() {
    for t in targets().await {
        let log = t.open().await;
        let entries = append_n(&log, 6).await;
        let cp = log.checkpoint().await.expect("checkpoint");
        t.disable_triggers().await;
        // A careless truncation leaves the head: caught without a checkpoint.
        t.exec("DELETE FROM audit_log WHERE seq = 6")
            .await
            .expect("truncate");
        assert_eq!(
            failure(&log.verify(None).await.expect("verify")),
            (FailureKind::Truncated, 6),
            "{}",
            t.name
        );
        // Rewrite entry 2 and recompute every hash after it (the attacker knows the format):
        // the chain verifies by itself, but not against the checkpoint.
        let mut prev = chain::GENESIS_HASH;
        let mut statements = String::new();
        for e in entries.iter().take(5) {
            let mut content = e.entry.clone();
            if e.seq == 2 {
                content.role = "admin".into();
            }
            prev = chain::chain_hash(&prev, e.seq, &e.at, &content);
            statements.push_str(&format!(
                "UPDATE audit_log SET role = '{}', hash = '{}' WHERE seq = {};",
                content.role,
                hex::encode(prev),
                e.seq
            ));
        }
        statements.push_str(&format!(
            "UPDATE audit_head SET seq = 5, hash = '{}' WHERE id = 1;",
            hex::encode(prev)
        ));
        t.exec(&statements).await.expect("rewrite");
        assert!(log.verify(None).await.expect("verify").ok, "{}", t.name);
        let report = log.verify(Some(&cp)).await.expect("verify");
        assert_eq!(failure(&report), (FailureKind::Truncated, 6), "{}", t.name);
        // A checkpoint at 5 (made before the rewrite would have had the old hash).
        let old5 = Checkpoint::sign(&key(), 5, &entries[4].hash, Utc::now());
        let report = log.verify(Some(&old5)).await.expect("verify");
        assert_eq!(
            failure(&report),
            (FailureKind::CheckpointMismatch, 5),
            "{}",
            t.name
        );
        t.cleanup().await;
    }
}

#[tokio::test]
async fn the_triggers_refuse_update_and_delete_outside_the_retention_path() {
    for t in targets().await {
        let log = t.open().await;
        append_n(&log, 3).await;
        for sql in [
            "UPDATE audit_log SET role = 'admin' WHERE seq = 2",
            "DELETE FROM audit_log WHERE seq = 3",
            "DELETE FROM audit_log",
        ] {
            let err = t
                .exec(sql)
                .await
                .expect_err(&format!("{}: `{sql}` must be refused", t.name));
            if sql.contains("audit_log") {
                assert!(err.contains("append-only"), "{}: {err}", t.name);
            }
        }
        if t.is_pg() {
            let err = t
                .exec("TRUNCATE audit_log")
                .await
                .expect_err("TRUNCATE must be refused");
            assert!(err.contains("append-only"), "{err}");
        }
        let report = log.verify(None).await.expect("verify");
        assert!(report.ok && report.entries_verified == 3, "{report:?}");
        t.cleanup().await;
    }
}

// ---------------------------------------------------------------------------------------------
// Retention
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn retention_purges_only_old_entries_behind_a_signed_anchor_and_verify_still_passes() {
    for t in targets().await {
        let log = t.open().await;
        let entries = append_n(&log, 10).await;
        let cp_before = log.checkpoint().await.expect("checkpoint");
        let cutoff = entries[6].at;
        let expect_removed = entries.iter().filter(|e| e.at < cutoff).count() as u64;
        assert!(expect_removed > 0, "entries must have distinct times");
        let report = log.purge_before(cutoff).await.expect("purge");
        assert_eq!(report.removed, expect_removed, "{}", t.name);
        let anchor = report.anchor_seq.expect("anchor");
        assert_eq!(anchor, expect_removed as i64 + 1);
        assert_eq!(report.entry.entry.action, AuditAction::RetentionPurge);
        assert_eq!(report.entry.seq, 11);

        let v = log.verify(Some(&cp_before)).await.expect("verify");
        assert!(v.ok, "{}: {v:?}", t.name);
        assert_eq!(v.first_seq, anchor);
        assert_eq!(v.checkpoint_matched, Some(true));
        assert!(log.entry(1).await.expect("read").is_none());

        // The flag was reset: DELETE is refused again, appends go on, verify passes.
        for sql in [
            "DELETE FROM audit_log WHERE seq = 10",
            "UPDATE audit_anchors SET key_id = 'x'",
            "DELETE FROM audit_anchors",
        ] {
            assert!(
                t.exec(sql).await.is_err(),
                "{}: `{sql}` must be refused",
                t.name
            );
        }
        log.append(sample(99)).await.expect("append");
        let cp = log.checkpoint().await.expect("checkpoint");
        assert!(log.verify(Some(&cp)).await.expect("verify").ok);
        // A purge with nothing before the cutoff removes nothing but is still recorded.
        let none = log.purge_before(cutoff).await.expect("purge");
        assert_eq!((none.removed, none.anchor_seq), (0, None));

        // An anchor that the key did not sign is refused.
        t.disable_triggers().await;
        t.exec(&format!(
            "INSERT INTO audit_anchors (first_seq, prev_hash, purged_at, key_id, tag) \
             VALUES (12, '{}', '2026-01-01T00:00:00.000000Z', 'k-test', '{}'); \
             DELETE FROM audit_log WHERE seq < 12;",
            "cd".repeat(32),
            "00".repeat(32)
        ))
        .await
        .expect("forge anchor");
        assert_eq!(
            failure(&log.verify(None).await.expect("verify")),
            (FailureKind::AnchorInvalid, 12),
            "{}",
            t.name
        );
        t.cleanup().await;
    }
}

// ---------------------------------------------------------------------------------------------
// Write failures (fail closed)
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_write_refused_by_the_database_is_an_error_for_the_caller() {
    for t in targets().await {
        let log = t.open().await;
        log.append(sample(0)).await.expect("append");
        // A DBA's (or attacker's) trigger refusing inserts: a real failure in the database.
        let sql = if t.is_pg() {
            "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS \
             $$ BEGIN RAISE EXCEPTION 'no more audit'; END $$; \
             CREATE TRIGGER refuse BEFORE INSERT ON audit_log FOR EACH ROW EXECUTE FUNCTION refuse();"
        } else {
            "CREATE TRIGGER refuse BEFORE INSERT ON audit_log \
             BEGIN SELECT RAISE(ABORT, 'no more audit'); END;"
        };
        t.exec(sql).await.expect("install refusing trigger");
        let err = log.append(sample(1)).await.expect_err("must fail");
        assert!(matches!(err, AuditError::Write(_)), "{}: {err}", t.name);
        assert!(err.to_string().contains("must fail"), "{err}");
        t.exec("DROP TRIGGER refuse ON audit_log")
            .await
            .or(t.exec("DROP TRIGGER refuse").await)
            .expect("drop trigger");
        let e = log.append(sample(2)).await.expect("append after repair");
        assert_eq!(e.seq, 2, "{}: the failed batch left no trace", t.name);
        assert!(log.verify(None).await.expect("verify").ok);
        t.cleanup().await;
    }
}

#[tokio::test]
async fn sqlite_append_fails_when_the_database_files_become_immutable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("audit.db");
    let url = format!("sqlite://{}", path.display());
    let log = AuditLog::open(&url, key()).await.expect("open");
    log.append(sample(0)).await.expect("append");
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    let files = [path.clone(), PathBuf::from(wal)];
    let chattr = |flag: &str| {
        std::process::Command::new("chattr")
            .arg(flag)
            .args(&files)
            .status()
            .is_ok_and(|s| s.success())
    };
    if !chattr("+i") {
        // CI must run it (outside tools fail rather than skip when CI is set).
        assert!(
            std::env::var_os("CI").is_none(),
            "`chattr +i` failed under CI: install e2fsprogs on an ext4/xfs/btrfs filesystem"
        );
        let _ = writeln!(
            std::io::stderr(),
            "immutable-file audit test SKIPPED: `chattr +i` is not available here"
        );
        return;
    }
    let result = log.append(sample(1)).await;
    let undone = chattr("-i");
    assert!(undone, "chattr -i must undo the flag");
    let err = result.expect_err("append to an immutable database must fail");
    assert!(matches!(err, AuditError::Write(_)), "{err}");
    drop(log);
    let log = AuditLog::open(&url, key()).await.expect("reopen");
    let report = log.verify(None).await.expect("verify");
    assert!(report.ok && report.entries_verified == 1, "{report:?}");
}

#[tokio::test]
async fn postgres_append_fails_when_insert_is_revoked_from_the_role() {
    let Some(t) = targets().await.into_iter().find(|t| t.is_pg()) else {
        return;
    };
    let Kind::Postgres { database, .. } = &t.kind else {
        return;
    };
    drop(t.open().await); // migrate as the owner
    let role = format!("mp_audit_writer_{:08x}", rand::random::<u32>());
    t.exec(&format!(
        "CREATE ROLE {role} LOGIN; \
         GRANT CONNECT ON DATABASE {database} TO {role}; \
         GRANT USAGE ON SCHEMA public TO {role}; \
         GRANT SELECT, INSERT ON audit_log, audit_anchors TO {role}; \
         GRANT SELECT, UPDATE ON audit_head, audit_retention TO {role};"
    ))
    .await
    .expect("role");
    let Some(rest) = t.url.split_once("://").map(|(_, r)| r) else {
        return;
    };
    let host = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    let url = format!("postgres://{role}@{host}");
    let log = AuditLog::open_migrated(&url, key())
        .await
        .expect("open as the limited role");
    log.append(sample(0)).await.expect("append with INSERT");
    t.exec(&format!("REVOKE INSERT ON audit_log FROM {role}"))
        .await
        .expect("revoke");
    let err = log.append(sample(1)).await.expect_err("must fail");
    assert!(matches!(err, AuditError::Write(_)), "{err}");
    assert!(err.to_string().contains("permission denied"), "{err}");
    drop(log);
    t.exec(&format!("REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {role}; REVOKE ALL ON SCHEMA public FROM {role}; REVOKE ALL ON DATABASE {database} FROM {role};"))
        .await
        .expect("revoke all");
    t.cleanup().await;
    if let Ok(admin) = std::env::var(POSTGRES_URL_VAR) {
        let mut c = PgConnection::connect(&admin).await.expect("admin");
        let _ = sqlx::raw_sql(AssertSqlSafe(format!("DROP ROLE IF EXISTS {role}")))
            .execute(&mut c)
            .await;
    }
}

// ---------------------------------------------------------------------------------------------
// Queries
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn search_filters_and_pages_newest_first() {
    for t in targets().await {
        let log = t.open().await;
        let entries = append_n(&log, 10).await;
        let mut refused = sample(50);
        refused.outcome = AuditOutcome::Refused;
        refused.user_id = Some(7);
        let refused = log.append(refused).await.expect("append");

        // Paging walks everything, newest first, without overlap.
        let mut seen = Vec::new();
        let mut page = PageRequest {
            before: None,
            limit: 3,
        };
        loop {
            let p = log
                .search(&AuditFilter::default(), page)
                .await
                .expect("search");
            assert!(p.entries.len() <= 3);
            seen.extend(p.entries.iter().map(|e| e.seq));
            match p.next_before {
                Some(b) => page.before = Some(b),
                None => break,
            }
        }
        assert_eq!(seen, (1..=11).rev().collect::<Vec<_>>(), "{}", t.name);

        let by = |f: AuditFilter| {
            let log = log.clone();
            async move {
                log.search(&f, PageRequest::default())
                    .await
                    .expect("search")
                    .entries
                    .iter()
                    .map(|e| e.seq)
                    .collect::<Vec<_>>()
            }
        };
        assert_eq!(
            by(AuditFilter {
                user_id: Some(7),
                ..Default::default()
            })
            .await,
            vec![refused.seq]
        );
        assert_eq!(
            by(AuditFilter {
                outcome: Some(AuditOutcome::Refused),
                ..Default::default()
            })
            .await,
            vec![refused.seq]
        );
        let org1: Vec<i64> = entries
            .iter()
            .rev()
            .filter(|e| e.entry.organisation.as_deref() == Some("ORG1"))
            .map(|e| e.seq)
            .collect();
        assert_eq!(
            by(AuditFilter {
                organisation: Some("ORG1".into()),
                ..Default::default()
            })
            .await,
            org1
        );
        assert_eq!(
            by(AuditFilter {
                subject: entries[3].entry.subject.clone(),
                ..Default::default()
            })
            .await,
            vec![4]
        );
        // Any of several subjects (one person under several audit key versions).
        assert_eq!(
            by(AuditFilter {
                subjects: [1, 3, 8]
                    .iter()
                    .filter_map(|i| entries[*i].entry.subject.clone())
                    .chain([format!("{:064x}", 999)])
                    .collect(),
                ..Default::default()
            })
            .await,
            vec![9, 4, 2]
        );
        assert_eq!(
            by(AuditFilter {
                from: Some(entries[2].at),
                to: Some(entries[4].at),
                ..Default::default()
            })
            .await,
            vec![4, 3]
        );
        assert_eq!(
            by(AuditFilter {
                action: Some(AuditAction::AuditSearch),
                ..Default::default()
            })
            .await,
            Vec::<i64>::new()
        );
        assert!(matches!(
            log.search(
                &AuditFilter::default(),
                PageRequest {
                    before: None,
                    limit: 0
                }
            )
            .await,
            Err(AuditError::Query(_))
        ));
        t.cleanup().await;
    }
}

#[tokio::test]
async fn break_glass_queue_empties_as_reviews_are_appended_and_subject_access_finds_a_person() {
    for t in targets().await {
        let log = t.open().await;
        let bsn = Bsn::parse("111222333").expect("bsn");
        let (subject, key_id) = log.subject(&bsn);
        let mut glass = Vec::new();
        for i in 0..3 {
            let mut e = sample(i);
            e.action = AuditAction::BreakGlassLookup;
            e.outcome = AuditOutcome::BreakGlass;
            e.refers_to = None;
            if i == 1 {
                e.subject = Some(subject.clone());
                e.subject_key_id = Some(key_id.clone());
            }
            glass.push(log.append(e).await.expect("append"));
        }
        append_n(&log, 2).await;
        let queue = log
            .break_glass_queue(PageRequest::default())
            .await
            .expect("queue");
        let seqs: Vec<i64> = queue.entries.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, vec![glass[2].seq, glass[1].seq, glass[0].seq]);

        let mut review = NewAuditEntry::new(
            "privacy_officer",
            AuditAction::BreakGlassReview,
            AuditOutcome::Granted,
            "req-review",
        )
        .into_review(glass[1].seq, "justified", "checked with the team lead");
        review.user_id = Some(9);
        let review = log.append(review).await.expect("review");
        assert_eq!(review.entry.refers_to, Some(glass[1].seq));
        let queue = log
            .break_glass_queue(PageRequest::default())
            .await
            .expect("queue");
        let seqs: Vec<i64> = queue.entries.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, vec![glass[2].seq, glass[0].seq], "{}", t.name);

        let access = log
            .subject_access(std::slice::from_ref(&subject), PageRequest::default())
            .await
            .expect("subject access");
        assert_eq!(access.entries.len(), 1);
        assert_eq!(access.entries[0].seq, glass[1].seq);
        t.cleanup().await;
    }
}

// ---------------------------------------------------------------------------------------------
// Checkpoints, subjects, canonical bytes
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn checkpoints_round_trip_as_one_json_line_and_reject_tampering_and_other_keys() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("a.db").display());
    let log = AuditLog::open(&url, key()).await.expect("open");
    let empty = log.checkpoint().await.expect("checkpoint");
    assert_eq!(empty.size, 0);
    assert!(log.verify(Some(&empty)).await.expect("verify").ok);
    append_n(&log, 3).await;
    let cp = log.checkpoint().await.expect("checkpoint");
    let line = cp.to_json_line();
    assert!(!line.contains('\n'));
    let parsed = Checkpoint::parse(&format!("{line}\n")).expect("parse");
    assert_eq!(parsed, cp);
    assert!(log.verify(Some(&parsed)).await.expect("verify").ok);

    let mut forged = parsed.clone();
    forged.size = 2;
    assert!(matches!(
        log.verify(Some(&forged)).await,
        Err(AuditError::CheckpointSignature)
    ));
    let other = MasterKey::from_secret("k-other", &[9u8; 32]).expect("key");
    let foreign = Checkpoint::sign(&other, cp.size, &cp.head_hash, Utc::now());
    assert!(matches!(
        log.verify(Some(&foreign)).await,
        Err(AuditError::CheckpointKey { .. })
    ));
    for bad in [
        "",
        "{}",
        "not json",
        &line.replace("\"size\":3", "\"size\":-1"),
        &line.replace(&cp.head_hash, "zz"),
        &format!("{{\"extra\":1,{}", &line[1..]),
        &"x".repeat(5000),
    ] {
        let err = Checkpoint::parse(bad).expect_err("must refuse");
        assert!(!err.to_string().is_empty());
    }
}

#[test]
fn audit_subjects_are_stable_and_not_joinable_with_index_pseudonyms() {
    let k = key();
    let bsn = Bsn::parse("111222333").expect("bsn");
    let (a, id) = audit_subject(&k, &bsn);
    assert_eq!((a.clone(), id.clone()), audit_subject(&k, &bsn));
    assert_eq!(id, "k-test");
    assert_eq!(a.len(), 64);
    let index = k
        .pseudonymiser(KeyPurpose::Index)
        .pseudonymise(&bsn)
        .to_hex();
    assert_ne!(a, index);
    assert!(!a.contains("111222333"));
}

/// Parses canonical bytes back (test-only): proves the encoding is injective.
fn decode_canonical(b: &[u8]) -> Option<(i64, String, NewAuditEntry)> {
    struct R<'a>(&'a [u8]);
    impl R<'_> {
        fn take(&mut self, n: usize) -> Option<&[u8]> {
            if self.0.len() < n {
                return None;
            }
            let (h, t) = self.0.split_at(n);
            self.0 = t;
            Some(h)
        }
        fn int(&mut self) -> Option<i64> {
            Some(i64::from_be_bytes(self.take(8)?.try_into().ok()?))
        }
        fn str(&mut self) -> Option<String> {
            let n = usize::try_from(self.int()?).ok()?;
            String::from_utf8(self.take(n)?.to_vec()).ok()
        }
        fn flag(&mut self) -> Option<bool> {
            match self.take(1)?[0] {
                0 => Some(false),
                1 => Some(true),
                _ => None,
            }
        }
        fn opt_str(&mut self) -> Option<Option<String>> {
            if self.flag()? {
                Some(Some(self.str()?))
            } else {
                Some(None)
            }
        }
        fn opt_int(&mut self) -> Option<Option<i64>> {
            if self.flag()? {
                Some(Some(self.int()?))
            } else {
                Some(None)
            }
        }
    }
    let mut r = R(b);
    if r.take(CANONICAL_LABEL.len())? != CANONICAL_LABEL {
        return None;
    }
    let seq = r.int()?;
    let at = r.str()?;
    let user_id = r.opt_int()?;
    let role = r.str()?;
    let organisation = r.opt_str()?;
    let action = AuditAction::parse(&r.str()?)?;
    let subject = r.opt_str()?;
    let subject_key_id = r.opt_str()?;
    let purpose = r.opt_str()?;
    let outcome = AuditOutcome::parse(&r.str()?)?;
    let n = r.int()?;
    let mut checks = Vec::new();
    for _ in 0..n {
        checks.push(r.str()?);
    }
    let break_glass = r.opt_str()?;
    let records_returned = u32::try_from(r.int()?).ok()?;
    let client_addr = r.opt_str()?;
    let request_id = r.str()?;
    let refers_to = r.opt_int()?;
    if !r.0.is_empty() {
        return None;
    }
    Some((
        seq,
        at,
        NewAuditEntry {
            user_id,
            role,
            organisation,
            action,
            subject,
            subject_key_id,
            purpose,
            outcome,
            checks,
            break_glass,
            records_returned,
            client_addr,
            request_id,
            refers_to,
        },
    ))
}

fn small_str() -> impl Strategy<Value = String> {
    // Few distinct characters so neighbouring fields often could be confused.
    "[ab:\u{0}]{0,4}"
}

prop_compose! {
    fn arb_entry()(
        user_id in proptest::option::of(-2i64..3),
        role in small_str(),
        organisation in proptest::option::of(small_str()),
        action in 0usize..AuditAction::ALL.len(),
        subject in proptest::option::of(small_str()),
        subject_key_id in proptest::option::of(small_str()),
        purpose in proptest::option::of(small_str()),
        outcome in 0usize..AuditOutcome::ALL.len(),
        checks in proptest::collection::vec(small_str(), 0..3),
        break_glass in proptest::option::of(small_str()),
        records_returned in 0u32..3,
        client_addr in proptest::option::of(small_str()),
        request_id in small_str(),
        refers_to in proptest::option::of(0i64..3),
    ) -> NewAuditEntry {
        NewAuditEntry {
            user_id, role, organisation, action: AuditAction::ALL[action], subject,
            subject_key_id, purpose, outcome: AuditOutcome::ALL[outcome], checks, break_glass,
            records_returned, client_addr, request_id, refers_to,
        }
    }
}

proptest! {
    #[test]
    fn canonical_bytes_are_injective(
        a in arb_entry(), b in arb_entry(), seq_a in 0i64..3, seq_b in 0i64..3,
        ms_a in 0i64..3, ms_b in 0i64..3,
    ) {
        let base = Utc::now();
        let at_a = chain::truncate_micros(base + chrono::Duration::microseconds(ms_a));
        let at_b = chain::truncate_micros(base + chrono::Duration::microseconds(ms_b));
        let ba = canonical_bytes(seq_a, &at_a, &a);
        let bb = canonical_bytes(seq_b, &at_b, &b);
        // Decodable back to exactly its input: no two inputs share an encoding.
        prop_assert_eq!(decode_canonical(&ba), Some((seq_a, time_text(&at_a), a.clone())));
        if (seq_a, at_a, &a) != (seq_b, at_b, &b) {
            prop_assert_ne!(ba, bb);
        } else {
            prop_assert_eq!(ba, bb);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_streams_past_one_page_and_names_a_change_beyond_it() {
    for t in targets().await {
        let log = t.open().await;
        let n = 2300usize; // more than one verification page (2000 rows) on PostgreSQL
        let tasks: Vec<_> = (0..n)
            .map(|i| {
                let log = log.clone();
                tokio::spawn(async move { log.append(sample(i)).await })
            })
            .collect();
        for task in tasks {
            task.await.expect("task").expect("append");
        }
        assert!(
            log.commits() < n as u64,
            "{}: {} commits",
            t.name,
            log.commits()
        );
        let report = log.verify(None).await.expect("verify");
        assert!(report.ok, "{}: {report:?}", t.name);
        assert_eq!(report.entries_verified, n as u64);
        t.disable_triggers().await;
        t.exec("UPDATE audit_log SET purpose = 'referral' WHERE seq = 2201")
            .await
            .expect("tamper");
        assert_eq!(
            failure(&log.verify(None).await.expect("verify")),
            (FailureKind::Changed, 2201),
            "{}",
            t.name
        );
        t.cleanup().await;
    }
}

proptest! {
    #[test]
    fn checkpoint_parse_never_panics_on_arbitrary_text(text in "\\PC{0,300}") {
        let _ = Checkpoint::parse(&text);
    }

    #[test]
    fn a_signed_checkpoint_round_trips_and_any_edit_breaks_its_signature(
        size in 0i64..1_000_000,
        head in proptest::array::uniform32(any::<u8>()),
        secs in 0i64..4_000_000_000,
        field in 0usize..4,
    ) {
        let k = key();
        let at = chrono::DateTime::from_timestamp(secs, 0).expect("time");
        let cp = Checkpoint::sign(&k, size, &hex::encode(head), at);
        let parsed = Checkpoint::parse(&cp.to_json_line()).expect("parse");
        prop_assert_eq!(&parsed, &cp);
        prop_assert!(parsed.check_signature(&k).is_ok());
        let mut edited = parsed.clone();
        match field {
            0 => edited.size += 1,
            1 => edited.head_hash = hex::encode(head.map(|b| b ^ 1)),
            2 => edited.at += chrono::Duration::microseconds(1),
            _ => edited.tag = hex::encode([0u8; 32]),
        }
        prop_assert!(edited.check_signature(&k).is_err());
    }
}

// ---------------------------------------------------------------------------------------------
// The verifier alone, over in-memory chains
// ---------------------------------------------------------------------------------------------

fn raw(e: &AuditEntry) -> RawRow {
    let n = &e.entry;
    RawRow {
        seq: e.seq,
        at: Ok(e.at),
        user_id: n.user_id,
        role: n.role.clone(),
        organisation: n.organisation.clone(),
        action: n.action.as_str().to_owned(),
        subject: n.subject.clone(),
        subject_key_id: n.subject_key_id.clone(),
        purpose: n.purpose.clone(),
        outcome: n.outcome.as_str().to_owned(),
        checks: checks_json(&n.checks),
        break_glass: n.break_glass.clone(),
        records_returned: i64::from(n.records_returned),
        client_addr: n.client_addr.clone(),
        request_id: n.request_id.clone(),
        refers_to: n.refers_to,
        hash: e.hash.clone(),
    }
}

/// A valid chain of `n` entries, as the writer would store it.
fn chain_of(n: usize) -> Vec<AuditEntry> {
    let at = chain::truncate_micros(Utc::now());
    let mut prev = chain::GENESIS_HASH;
    (1..=n)
        .map(|i| {
            let entry = sample(i);
            let seq = i as i64;
            prev = chain::chain_hash(&prev, seq, &at, &entry);
            AuditEntry {
                seq,
                at,
                entry,
                hash: hex::encode(prev),
            }
        })
        .collect()
}

fn run_verifier(rows: &[AuditEntry], head: (i64, String), cp: Option<Checkpoint>) -> VerifyReport {
    let k = key();
    let mut v = verify::Verifier::new(None, cp, &k);
    for r in rows {
        v.push(raw(r));
    }
    v.finish(Some(head))
}

proptest! {
    #[test]
    fn the_verifier_names_the_first_damaged_entry(
        n in 2usize..40,
        op in 0usize..4,
        pick in any::<proptest::sample::Index>(),
    ) {
        let good = chain_of(n);
        let head = |rows: &[AuditEntry]| {
            rows.last().map_or((0, hex::encode(chain::GENESIS_HASH)), |e| (e.seq, e.hash.clone()))
        };
        let clean = run_verifier(&good, head(&good), None);
        prop_assert!(clean.ok, "{:?}", clean);
        let cp = Checkpoint::sign(&key(), n as i64, &good[n - 1].hash, Utc::now());
        let mut rows = good.clone();
        let (expected, report) = match op {
            0 => {
                // Change one field of entry k.
                let k = pick.index(n);
                rows[k].entry.role.push('x');
                ((FailureKind::Changed, k as i64 + 1), run_verifier(&rows, head(&good), None))
            }
            1 => {
                // Delete entry k (the head still records all n).
                let k = pick.index(n);
                rows.remove(k);
                let kind = if k + 1 == n { FailureKind::Truncated } else { FailureKind::Removed };
                ((kind, k as i64 + 1), run_verifier(&rows, head(&good), None))
            }
            2 => {
                // Swap entries k and k+1 (their positions keep their sequence numbers).
                let k = pick.index(n - 1);
                rows.swap(k, k + 1);
                rows[k].seq = k as i64 + 1;
                rows[k + 1].seq = k as i64 + 2;
                ((FailureKind::Reordered, k as i64 + 1), run_verifier(&rows, head(&good), None))
            }
            _ => {
                // Truncate to m entries and move the head back: only the checkpoint shows it.
                let m = pick.index(n);
                rows.truncate(m);
                let h = head(&rows);
                prop_assert!(run_verifier(&rows, h.clone(), None).ok);
                ((FailureKind::Truncated, m as i64 + 1), run_verifier(&rows, h, Some(cp)))
            }
        };
        let f = report.failure.clone().expect("must fail");
        prop_assert_eq!((f.kind, f.seq), expected, "{:?}", report);
    }
}

#[tokio::test]
async fn opening_an_unmigrated_database_without_migrating_says_what_to_do() {
    for t in targets().await {
        let err = AuditLog::open_migrated(&t.url, key())
            .await
            .expect_err("no audit tables yet");
        assert!(matches!(err, AuditError::Open(_)), "{}: {err}", t.name);
        assert!(err.to_string().contains("no audit trail tables"), "{err}");
        assert!(AuditLog::open(&t.url, key()).await.is_ok());
        t.cleanup().await;
    }
}
