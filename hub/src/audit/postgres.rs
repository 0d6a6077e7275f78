//! PostgreSQL backend of the audit trail: its own sqlx pool and a writer task. Each batch
//! locks the chain head row (`SELECT … FOR UPDATE`) so appends from several server instances
//! are serialised by the database, and commits with `synchronous_commit = on`.

use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use chrono::{DateTime, Utc};
use matchpoint_schemas::{KeyPurpose, MasterKey};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgRow};
use sqlx::{AssertSqlSafe, PgConnection, PgPool, Postgres, QueryBuilder, Row};
use tokio::sync::mpsc;

use super::chain::{chain_hash, parse_hash, truncate_micros};
use super::checkpoint::{Checkpoint, anchor_message};
use super::verify::{Anchor, Verifier, VerifyReport};
use super::{
    AuditAction, AuditEntry, AuditError, AuditFilter, AuditOutcome, AuditPage, COLUMNS, Counters,
    Job, MAX_BATCH, NewAuditEntry, PageRequest, PurgeReport, Query, RawRow, checks_json,
};
use crate::store::redact_url;

/// Rows fetched per round trip while verifying.
const VERIFY_PAGE: i64 = 2000;

pub(crate) struct PgAudit {
    pool: PgPool,
}

fn e(op: &'static str) -> impl Fn(sqlx::Error) -> AuditError {
    move |err| AuditError::db(op, err)
}

fn raw_row(r: &PgRow) -> Result<RawRow, sqlx::Error> {
    Ok(RawRow {
        seq: r.try_get("seq")?,
        at: Ok(r.try_get::<DateTime<Utc>, _>("at")?),
        user_id: r.try_get("user_id")?,
        role: r.try_get("role")?,
        organisation: r.try_get("organisation")?,
        action: r.try_get("action")?,
        subject: r.try_get("subject")?,
        subject_key_id: r.try_get("subject_key_id")?,
        purpose: r.try_get("purpose")?,
        outcome: r.try_get("outcome")?,
        checks: r.try_get("checks")?,
        break_glass: r.try_get("break_glass")?,
        records_returned: r.try_get("records_returned")?,
        client_addr: r.try_get("client_addr")?,
        request_id: r.try_get("request_id")?,
        refers_to: r.try_get("refers_to")?,
        hash: r.try_get("hash")?,
    })
}

/// Locks the chain head until the transaction ends; returns `(seq, hash)`.
async fn lock_head(conn: &mut PgConnection) -> Result<(i64, [u8; 32]), AuditError> {
    let row = sqlx::query("SELECT seq, hash FROM audit_head WHERE id = 1 FOR UPDATE")
        .fetch_one(&mut *conn)
        .await
        .map_err(|err| AuditError::Write(err.to_string()))?;
    let seq: i64 = row
        .try_get(0)
        .map_err(|err| AuditError::Write(err.to_string()))?;
    let hash: String = row
        .try_get(1)
        .map_err(|err| AuditError::Write(err.to_string()))?;
    let hash = parse_hash(&hash).ok_or_else(|| {
        AuditError::Write(
            "the chain head holds no valid hash; run `matchpoint audit verify`".into(),
        )
    })?;
    Ok((seq, hash))
}

/// Inserts entries after the locked head and moves the head.
async fn insert_entries(
    conn: &mut PgConnection,
    head: (i64, [u8; 32]),
    entries: Vec<NewAuditEntry>,
) -> Result<Vec<AuditEntry>, sqlx::Error> {
    let (mut seq, mut prev) = head;
    let at = truncate_micros(Utc::now());
    let mut out = Vec::with_capacity(entries.len());
    for entry in entries {
        seq += 1;
        prev = chain_hash(&prev, seq, &at, &entry);
        out.push(AuditEntry {
            seq,
            at,
            entry,
            hash: hex::encode(prev),
        });
    }
    if !out.is_empty() {
        let mut qb: QueryBuilder<Postgres> = QueryBuilder::new(
            "INSERT INTO audit_log (seq, at, user_id, role, organisation, action, subject, \
             subject_key_id, purpose, outcome, checks, break_glass, records_returned, \
             client_addr, request_id, refers_to, hash) ",
        );
        qb.push_values(out.iter(), |mut b, e| {
            let n = &e.entry;
            b.push_bind(e.seq)
                .push_bind(e.at)
                .push_bind(n.user_id)
                .push_bind(n.role.clone())
                .push_bind(n.organisation.clone())
                .push_bind(n.action.as_str())
                .push_bind(n.subject.clone())
                .push_bind(n.subject_key_id.clone())
                .push_bind(n.purpose.clone())
                .push_bind(n.outcome.as_str())
                .push_bind(checks_json(&n.checks))
                .push_bind(n.break_glass.clone())
                .push_bind(i64::from(n.records_returned))
                .push_bind(n.client_addr.clone())
                .push_bind(n.request_id.clone())
                .push_bind(n.refers_to)
                .push_bind(e.hash.clone());
        });
        qb.build().execute(&mut *conn).await?;
    }
    sqlx::query("UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1")
        .bind(seq)
        .bind(hex::encode(prev))
        .execute(&mut *conn)
        .await?;
    Ok(out)
}

async fn write_batch(
    pool: &PgPool,
    entries: Vec<NewAuditEntry>,
) -> Result<Vec<AuditEntry>, AuditError> {
    let w = |err: sqlx::Error| AuditError::Write(err.to_string());
    let mut tx = pool.begin().await.map_err(w)?;
    sqlx::query("SET LOCAL synchronous_commit = on")
        .execute(&mut *tx)
        .await
        .map_err(w)?;
    let head = lock_head(&mut tx).await?;
    let out = insert_entries(&mut tx, head, entries).await.map_err(w)?;
    tx.commit().await.map_err(w)?;
    Ok(out)
}

async fn writer_loop(pool: PgPool, mut rx: mpsc::Receiver<Job>, counters: Arc<Counters>) {
    while let Some(first) = rx.recv().await {
        let mut jobs = vec![first];
        while jobs.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(j) => jobs.push(j),
                Err(_) => break,
            }
        }
        let (entries, replies): (Vec<_>, Vec<_>) =
            jobs.into_iter().map(|j| (j.entry, j.reply)).unzip();
        match write_batch(&pool, entries).await {
            Ok(written) => {
                counters.commits.fetch_add(1, Ordering::SeqCst);
                for (reply, entry) in replies.into_iter().zip(written) {
                    let _ = reply.send(Ok(entry));
                }
            }
            Err(err) => {
                tracing::error!(error = %err, "audit batch could not be written");
                for reply in replies {
                    let _ = reply.send(Err(err.clone()));
                }
            }
        }
    }
}

impl PgAudit {
    pub(crate) async fn open(
        url: &str,
        rx: mpsc::Receiver<Job>,
        counters: Arc<Counters>,
    ) -> Result<PgAudit, AuditError> {
        let options = PgConnectOptions::from_str(url)
            .map_err(|err| AuditError::Open(format!("{}: {err}", redact_url(url))))?
            .application_name("matchpoint-audit");
        let pool = PgPoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options)
            .await
            .map_err(|err| AuditError::Open(format!("{}: {err}", redact_url(url))))?;
        let migrated: bool = sqlx::query_scalar("SELECT to_regclass('audit_head') IS NOT NULL")
            .fetch_one(&pool)
            .await
            .map_err(e("open"))?;
        if !migrated {
            return Err(AuditError::Open(format!(
                "{} holds no audit trail tables; open it once with a role that may migrate \
                 (e.g. run `matchpoint audit verify`)",
                redact_url(url)
            )));
        }
        tokio::spawn(writer_loop(pool.clone(), rx, counters));
        Ok(PgAudit { pool })
    }

    pub(crate) async fn head(&self) -> Result<(i64, String), AuditError> {
        let row = sqlx::query("SELECT seq, hash FROM audit_head WHERE id = 1")
            .fetch_one(&self.pool)
            .await
            .map_err(e("read chain head"))?;
        Ok((
            row.try_get(0).map_err(e("read chain head"))?,
            row.try_get(1).map_err(e("read chain head"))?,
        ))
    }

    pub(crate) async fn query(&self, q: Query, page: PageRequest) -> Result<AuditPage, AuditError> {
        let op = "audit query";
        let mut qb: QueryBuilder<Postgres> =
            QueryBuilder::new(format!("SELECT {COLUMNS} FROM audit_log WHERE TRUE"));
        match q {
            Query::Search(f) => {
                let AuditFilter {
                    user_id,
                    organisation,
                    subject,
                    subjects,
                    from,
                    to,
                    outcome,
                    action,
                } = f;
                if let Some(u) = user_id {
                    qb.push(" AND user_id = ").push_bind(u);
                }
                if let Some(o) = organisation {
                    qb.push(" AND organisation = ").push_bind(o);
                }
                if let Some(s) = subject {
                    qb.push(" AND subject = ").push_bind(s);
                }
                if !subjects.is_empty() {
                    qb.push(" AND subject = ANY(").push_bind(subjects).push(")");
                }
                if let Some(t) = from {
                    qb.push(" AND at >= ").push_bind(t);
                }
                if let Some(t) = to {
                    qb.push(" AND at < ").push_bind(t);
                }
                if let Some(o) = outcome {
                    qb.push(" AND outcome = ").push_bind(o.as_str());
                }
                if let Some(a) = action {
                    qb.push(" AND action = ").push_bind(a.as_str());
                }
            }
            Query::BreakGlassQueue => {
                qb.push(" AND action = ")
                    .push_bind(AuditAction::BreakGlassLookup.as_str())
                    .push(
                        " AND NOT EXISTS (SELECT 1 FROM audit_log r WHERE r.refers_to = \
                         audit_log.seq AND r.action = 'break_glass_review')",
                    );
            }
        }
        if let Some(b) = page.before {
            qb.push(" AND seq < ").push_bind(b);
        }
        qb.push(" ORDER BY seq DESC LIMIT ")
            .push_bind(i64::from(page.limit) + 1);
        let rows = qb.build().fetch_all(&self.pool).await.map_err(e(op))?;
        let mut entries = Vec::with_capacity(rows.len());
        for row in &rows {
            let raw = raw_row(row).map_err(e(op))?;
            let seq = raw.seq;
            entries.push(raw.decode().map_err(|why| {
                AuditError::db(
                    op,
                    format!("entry {seq} cannot be read: {why}; run `matchpoint audit verify`"),
                )
            })?);
        }
        let next_before = if entries.len() > page.limit as usize {
            entries.truncate(page.limit as usize);
            entries.last().map(|e| e.seq)
        } else {
            None
        };
        Ok(AuditPage {
            entries,
            next_before,
        })
    }

    pub(crate) async fn verify(
        &self,
        key: &MasterKey,
        cp: Option<&Checkpoint>,
    ) -> Result<VerifyReport, AuditError> {
        let op = "verify";
        let mut tx = self.pool.begin().await.map_err(e(op))?;
        // One snapshot for head, anchor and all pages.
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut *tx)
            .await
            .map_err(e(op))?;
        let head = sqlx::query("SELECT seq, hash FROM audit_head WHERE id = 1")
            .fetch_optional(&mut *tx)
            .await
            .map_err(e(op))?
            .map(|r| Ok::<_, sqlx::Error>((r.try_get(0)?, r.try_get(1)?)))
            .transpose()
            .map_err(e(op))?;
        let anchor = sqlx::query(
            "SELECT first_seq, prev_hash, purged_at, key_id, tag FROM audit_anchors
             ORDER BY first_seq DESC LIMIT 1",
        )
        .fetch_optional(&mut *tx)
        .await
        .map_err(e(op))?
        .map(|r| {
            Ok::<_, sqlx::Error>(Anchor {
                first_seq: r.try_get(0)?,
                prev_hash: r.try_get(1)?,
                purged_at: r.try_get(2)?,
                key_id: r.try_get(3)?,
                tag: r.try_get(4)?,
            })
        })
        .transpose()
        .map_err(e(op))?;
        let mut v = Verifier::new(anchor, cp.cloned(), key);
        let mut from = v.first_seq();
        while !v.done() {
            let rows = sqlx::query(AssertSqlSafe(format!(
                "SELECT {COLUMNS} FROM audit_log WHERE seq >= $1 ORDER BY seq LIMIT $2"
            )))
            .bind(from)
            .bind(VERIFY_PAGE)
            .fetch_all(&mut *tx)
            .await
            .map_err(e(op))?;
            let Some(last) = rows.last() else { break };
            from = last.try_get::<i64, _>("seq").map_err(e(op))? + 1;
            let n = rows.len();
            for row in &rows {
                v.push(raw_row(row).map_err(e(op))?);
            }
            if (n as i64) < VERIFY_PAGE {
                break;
            }
        }
        tx.commit().await.map_err(e(op))?;
        Ok(v.finish(head))
    }

    pub(crate) async fn purge_before(
        &self,
        cutoff: DateTime<Utc>,
        key: &MasterKey,
    ) -> Result<PurgeReport, AuditError> {
        let op = "retention purge";
        let cutoff = truncate_micros(cutoff);
        let mut tx = self.pool.begin().await.map_err(e(op))?;
        sqlx::query("SET LOCAL synchronous_commit = on")
            .execute(&mut *tx)
            .await
            .map_err(e(op))?;
        let head = lock_head(&mut tx).await?;
        let last_old =
            sqlx::query("SELECT seq, hash FROM audit_log WHERE at < $1 ORDER BY seq DESC LIMIT 1")
                .bind(cutoff)
                .fetch_optional(&mut *tx)
                .await
                .map_err(e(op))?
                .map(|r| Ok::<(i64, String), sqlx::Error>((r.try_get(0)?, r.try_get(1)?)))
                .transpose()
                .map_err(e(op))?;
        let mut removed = 0u64;
        let mut anchor_seq = None;
        if let Some((last_seq, last_hash)) = last_old {
            let first_seq = last_seq + 1;
            let now = truncate_micros(Utc::now());
            let key_id = key
                .mac_key_id(KeyPurpose::AuditCheckpoint)
                .as_str()
                .to_owned();
            let tag = key.mac(
                KeyPurpose::AuditCheckpoint,
                &anchor_message(first_seq, &last_hash, &now, &key_id),
            );
            sqlx::query(
                "INSERT INTO audit_anchors (first_seq, prev_hash, purged_at, key_id, tag)
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(first_seq)
            .bind(&last_hash)
            .bind(now)
            .bind(&key_id)
            .bind(hex::encode(tag))
            .execute(&mut *tx)
            .await
            .map_err(e(op))?;
            sqlx::query("UPDATE audit_retention SET purge_below = $1 WHERE id = 1")
                .bind(first_seq)
                .execute(&mut *tx)
                .await
                .map_err(e(op))?;
            removed = sqlx::query("DELETE FROM audit_log WHERE seq < $1")
                .bind(first_seq)
                .execute(&mut *tx)
                .await
                .map_err(e(op))?
                .rows_affected();
            sqlx::query("UPDATE audit_retention SET purge_below = 0 WHERE id = 1")
                .execute(&mut *tx)
                .await
                .map_err(e(op))?;
            anchor_seq = Some(first_seq);
        }
        let cutoff_text = super::chain::time_text(&cutoff);
        let mut record = NewAuditEntry::new(
            "system",
            AuditAction::RetentionPurge,
            AuditOutcome::Granted,
            format!("retention-{cutoff_text}"),
        );
        record.checks = vec![
            format!("cutoff:{cutoff_text}"),
            format!("removed:{removed}"),
        ];
        if let Some(a) = anchor_seq {
            record.checks.push(format!("anchor:{a}"));
        }
        record.records_returned = u32::try_from(removed).unwrap_or(u32::MAX);
        let mut written = insert_entries(&mut tx, head, vec![record])
            .await
            .map_err(e(op))?;
        tx.commit().await.map_err(e(op))?;
        let entry = written
            .pop()
            .ok_or_else(|| AuditError::db(op, "the purge entry was not written"))?;
        Ok(PurgeReport {
            removed,
            anchor_seq,
            entry,
        })
    }
}
