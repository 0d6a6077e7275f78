//! Audit key versions (`matchpoint keys rotate --audit` / `keys activate --audit`), on SQLite
//! and — when `MATCHPOINT_TEST_POSTGRES_URL` is set — PostgreSQL: entries written before and
//! after an audit rotation are both found by subject access, checkpoints and retention anchors
//! verify with the version that signed them, and a key file lacking that version says so.

use std::sync::Arc;

use matchpoint_schemas::{Bsn, MasterKey};

use super::verify::FailureKind;
use super::*;
use crate::testdb;

const SECRET: [u8; 32] = [9u8; 32];

/// The key before the rotation: the base version only.
fn base_key() -> Arc<MasterKey> {
    Arc::new(MasterKey::from_secret("k1", &SECRET).expect("key"))
}

/// The same key file after `keys rotate --audit` (`a2`) and `keys activate --audit a2`.
fn rotated_key() -> Arc<MasterKey> {
    let mut key = MasterKey::from_secret("k1", &SECRET)
        .expect("key")
        .with_audit_version("a2", &[10u8; 32])
        .expect("audit version");
    assert!(key.activate_audit("a2"));
    Arc::new(key)
}

/// A lookup entry about `bsn`, with the subject the log's active audit version makes.
fn about(log: &AuditLog, bsn: &Bsn, request: &str) -> NewAuditEntry {
    let (subject, key_id) = log.subject(bsn);
    let mut e = NewAuditEntry::new(
        "professional",
        AuditAction::Lookup,
        AuditOutcome::Granted,
        request,
    );
    e.subject = Some(subject);
    e.subject_key_id = Some(key_id);
    e
}

#[tokio::test]
async fn entries_before_and_after_an_audit_rotation_are_found_and_the_trail_verifies() {
    let bsn = Bsn::parse("111222333").expect("bsn");
    let other = Bsn::parse("123456782").expect("bsn");
    for t in testdb::targets("audit_rot").await {
        let before = AuditLog::open(&t.url, base_key()).await.expect("open");
        let e1 = before
            .append(about(&before, &bsn, "r1"))
            .await
            .expect("append");
        let e2 = before
            .append(about(&before, &other, "r2"))
            .await
            .expect("append");
        let cp_before = before.checkpoint().await.expect("checkpoint");
        assert_eq!(cp_before.key_id, "k1");
        drop(before);

        // Every instance restarts with the rotated key file.
        let after = AuditLog::open(&t.url, rotated_key()).await.expect("open");
        let e3 = after
            .append(about(&after, &bsn, "r3"))
            .await
            .expect("append");
        assert_eq!(e1.entry.subject_key_id.as_deref(), Some("k1"));
        assert_eq!(e3.entry.subject_key_id.as_deref(), Some("a2"));
        assert_ne!(
            e1.entry.subject, e3.entry.subject,
            "a new version makes new subjects"
        );
        let cp_after = after.checkpoint().await.expect("checkpoint");
        assert_eq!(cp_after.key_id, "a2");

        // Subject access consults every loaded audit version.
        let subjects = after.subjects(&bsn);
        assert_eq!(subjects.len(), 2);
        assert_eq!(
            Some(&subjects[0]),
            e3.entry.subject.as_ref(),
            "active version first"
        );
        let found = after
            .subject_access(&subjects, PageRequest::default())
            .await
            .expect("subject access");
        let seqs: Vec<i64> = found.entries.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, [e3.seq, e1.seq], "{}", t.name);
        // Only the active version would miss the entry from before the rotation.
        let only_new = after
            .subject_access(&subjects[..1], PageRequest::default())
            .await
            .expect("subject access");
        assert_eq!(only_new.entries.len(), 1);

        // Both checkpoints verify, each with the version that signed it.
        for cp in [&cp_before, &cp_after] {
            let v = after.verify(Some(cp)).await.expect("verify");
            assert!(
                v.ok && v.checkpoint_matched == Some(true),
                "{}: {v:?}",
                t.name
            );
        }
        // A key file without the audit version cannot check the new checkpoint, and says so.
        let stale = AuditLog::open(&t.url, base_key()).await.expect("open");
        let err = stale
            .verify(Some(&cp_after))
            .await
            .expect_err("unknown version");
        assert!(matches!(err, AuditError::CheckpointKey { .. }), "{err}");
        assert!(err.to_string().contains("`a2`"), "{err}");
        drop(stale);

        // Retention after the rotation: the anchor is signed by the active audit version and
        // the remaining chain verifies with it.
        let report = after
            .purge_before(e2.at + chrono::Duration::microseconds(1))
            .await
            .expect("purge");
        assert_eq!(report.removed, 2, "{}", t.name);
        let v = after.verify(Some(&cp_after)).await.expect("verify");
        assert!(v.ok, "{}: {v:?}", t.name);
        let stale = AuditLog::open(&t.url, base_key()).await.expect("open");
        let v = stale.verify(None).await.expect("verify");
        assert!(
            !v.ok,
            "an anchor signed by a version the key file lacks must not verify"
        );
        assert_eq!(
            v.failure.as_ref().map(|f| f.kind),
            Some(FailureKind::AnchorInvalid),
            "{v:?}"
        );
        drop(stale);
        drop(after);
        t.drop_database().await;
    }
}
