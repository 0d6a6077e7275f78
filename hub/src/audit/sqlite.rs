//! SQLite backend of the audit trail: a dedicated writer thread with its own rusqlite
//! connection (`synchronous = FULL`, so a commit is on disk before callers are answered), and
//! short-lived reader connections on blocking threads.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use matchpoint_schemas::{KeyPurpose, MasterKey};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use tokio::sync::mpsc;

use super::chain::{chain_hash, parse_hash, time_text, truncate_micros};
use super::checkpoint::{Checkpoint, anchor_message};
use super::verify::{Anchor, Verifier, VerifyReport};
use super::{
    AuditAction, AuditEntry, AuditError, AuditFilter, AuditOutcome, AuditPage, COLUMNS, Counters,
    Job, MAX_BATCH, NewAuditEntry, PageRequest, PurgeReport, Query, RawRow, checks_json,
};

/// How long to wait for another connection's write lock before failing the append.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

pub(crate) struct SqliteAudit {
    path: PathBuf,
    reader: Arc<Mutex<Connection>>,
}

fn e(op: &'static str) -> impl Fn(rusqlite::Error) -> AuditError {
    move |err| AuditError::db(op, err)
}

fn connect(path: &Path, op: &'static str) -> Result<Connection, AuditError> {
    let conn = Connection::open(path)
        .map_err(|err| AuditError::db(op, format!("{}: {err}", path.display())))?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(e(op))?;
    // The store opened the file in WAL mode (a property of the file). FULL: every commit
    // syncs the WAL, so an acknowledged entry survives a power cut, not only a crash.
    conn.execute_batch("PRAGMA synchronous = FULL;")
        .map_err(e(op))?;
    Ok(conn)
}

fn parse_at(s: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(s)
        .map(|d| d.with_timezone(&Utc))
        .map_err(|e| e.to_string())
}

fn raw_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawRow> {
    let at: String = r.get(1)?;
    Ok(RawRow {
        seq: r.get(0)?,
        at: parse_at(&at),
        user_id: r.get(2)?,
        role: r.get(3)?,
        organisation: r.get(4)?,
        action: r.get(5)?,
        subject: r.get(6)?,
        subject_key_id: r.get(7)?,
        purpose: r.get(8)?,
        outcome: r.get(9)?,
        checks: r.get(10)?,
        break_glass: r.get(11)?,
        records_returned: r.get(12)?,
        client_addr: r.get(13)?,
        request_id: r.get(14)?,
        refers_to: r.get(15)?,
        hash: r.get(16)?,
    })
}

/// Inserts entries after the locked head `(seq, hash)`; returns them and the new head.
fn insert_entries(
    tx: &rusqlite::Transaction<'_>,
    head: (i64, [u8; 32]),
    entries: Vec<NewAuditEntry>,
) -> Result<Vec<AuditEntry>, rusqlite::Error> {
    let (mut seq, mut prev) = head;
    let at = truncate_micros(Utc::now());
    let at_text = time_text(&at);
    let mut out = Vec::with_capacity(entries.len());
    let mut st = tx.prepare_cached(
        "INSERT INTO audit_log (seq, at, user_id, role, organisation, action, subject,
           subject_key_id, purpose, outcome, checks, break_glass, records_returned, client_addr,
           request_id, refers_to, hash)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)",
    )?;
    for entry in entries {
        seq += 1;
        prev = chain_hash(&prev, seq, &at, &entry);
        let hash = hex::encode(prev);
        st.execute(params![
            seq,
            at_text,
            entry.user_id,
            entry.role,
            entry.organisation,
            entry.action.as_str(),
            entry.subject,
            entry.subject_key_id,
            entry.purpose,
            entry.outcome.as_str(),
            checks_json(&entry.checks),
            entry.break_glass,
            i64::from(entry.records_returned),
            entry.client_addr,
            entry.request_id,
            entry.refers_to,
            hash,
        ])?;
        out.push(AuditEntry {
            seq,
            at,
            entry,
            hash,
        });
    }
    tx.execute(
        "UPDATE audit_head SET seq = ?1, hash = ?2 WHERE id = 1",
        params![seq, hex::encode(prev)],
    )?;
    Ok(out)
}

fn lock_head(tx: &rusqlite::Transaction<'_>) -> Result<(i64, [u8; 32]), AuditError> {
    let (seq, hash): (i64, String) = tx
        .query_row("SELECT seq, hash FROM audit_head WHERE id = 1", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .map_err(e("read chain head"))?;
    let hash = parse_hash(&hash).ok_or_else(|| {
        AuditError::Write(
            "the chain head holds no valid hash; run `matchpoint audit verify`".into(),
        )
    })?;
    Ok((seq, hash))
}

/// Writes one batch in one transaction.
fn write_batch(
    conn: &mut Connection,
    entries: Vec<NewAuditEntry>,
) -> Result<Vec<AuditEntry>, AuditError> {
    let w = |err: rusqlite::Error| AuditError::Write(err.to_string());
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(w)?;
    let head = lock_head(&tx).map_err(|err| AuditError::Write(err.to_string()))?;
    let out = insert_entries(&tx, head, entries).map_err(w)?;
    tx.commit().map_err(w)?;
    Ok(out)
}

fn writer_loop(mut conn: Connection, mut rx: mpsc::Receiver<Job>, counters: Arc<Counters>) {
    while let Some(first) = rx.blocking_recv() {
        let mut jobs = vec![first];
        while jobs.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(j) => jobs.push(j),
                Err(_) => break,
            }
        }
        let (entries, replies): (Vec<_>, Vec<_>) =
            jobs.into_iter().map(|j| (j.entry, j.reply)).unzip();
        match write_batch(&mut conn, entries) {
            Ok(written) => {
                counters.commits.fetch_add(1, Ordering::SeqCst);
                for (reply, entry) in replies.into_iter().zip(written) {
                    // A caller that went away no longer needs the answer; the entry stands.
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

impl SqliteAudit {
    pub(crate) async fn open(
        path: &str,
        rx: mpsc::Receiver<Job>,
        counters: Arc<Counters>,
    ) -> Result<SqliteAudit, AuditError> {
        let path = PathBuf::from(path);
        let p = path.clone();
        let (writer, reader) = tokio::task::spawn_blocking(move || {
            Ok::<_, AuditError>((
                connect(&p, "open audit writer")?,
                connect(&p, "open audit reader")?,
            ))
        })
        .await
        .map_err(|err| AuditError::db("open", err))??;
        let migrated = reader
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'audit_head'",
                [],
                |r| r.get::<_, i64>(0),
            )
            .map_err(e("open"))?;
        if migrated == 0 {
            return Err(AuditError::Open(format!(
                "{} holds no audit trail tables; open it once with a role that may migrate \
                 (e.g. run `matchpoint audit verify`)",
                path.display()
            )));
        }
        std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || writer_loop(writer, rx, counters))
            .map_err(|err| AuditError::db("start audit writer", err))?;
        Ok(SqliteAudit {
            path,
            reader: Arc::new(Mutex::new(reader)),
        })
    }

    async fn read<T, F>(&self, f: F) -> Result<T, AuditError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, AuditError> + Send + 'static,
    {
        let reader = self.reader.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = reader
                .lock()
                .map_err(|_| AuditError::db("lock", "a previous audit read panicked"))?;
            f(&mut conn)
        })
        .await
        .map_err(|err| AuditError::db("task", err))?
    }

    pub(crate) async fn head(&self) -> Result<(i64, String), AuditError> {
        self.read(|conn| {
            conn.query_row("SELECT seq, hash FROM audit_head WHERE id = 1", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .map_err(e("read chain head"))
        })
        .await
    }

    pub(crate) async fn query(&self, q: Query, page: PageRequest) -> Result<AuditPage, AuditError> {
        self.read(move |conn| run_query(conn, &q, page)).await
    }

    pub(crate) async fn verify(
        &self,
        key: Arc<MasterKey>,
        cp: Option<Checkpoint>,
    ) -> Result<VerifyReport, AuditError> {
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            // Its own connection: a long verification must not hold up searches.
            let mut conn = connect(&path, "verify")?;
            let op = "verify";
            // One read transaction: head, anchor and rows from the same snapshot.
            let tx = conn.transaction().map_err(e(op))?;
            let head: Option<(i64, String)> = tx
                .query_row("SELECT seq, hash FROM audit_head WHERE id = 1", [], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .optional()
                .map_err(e(op))?;
            let anchor = tx
                .query_row(
                    "SELECT first_seq, prev_hash, purged_at, key_id, tag FROM audit_anchors
                     ORDER BY first_seq DESC LIMIT 1",
                    [],
                    |r| {
                        let at: String = r.get(2)?;
                        Ok(Anchor {
                            first_seq: r.get(0)?,
                            prev_hash: r.get(1)?,
                            purged_at: parse_at(&at).unwrap_or_default(),
                            key_id: r.get(3)?,
                            tag: r.get(4)?,
                        })
                    },
                )
                .optional()
                .map_err(e(op))?;
            let mut v = Verifier::new(anchor, cp, &key);
            {
                let mut st = tx
                    .prepare(&format!(
                        "SELECT {COLUMNS} FROM audit_log WHERE seq >= ?1 ORDER BY seq"
                    ))
                    .map_err(e(op))?;
                let mut rows = st.query([v.first_seq()]).map_err(e(op))?;
                while !v.done() {
                    let Some(row) = rows.next().map_err(e(op))? else {
                        break;
                    };
                    v.push(raw_row(row).map_err(e(op))?);
                }
            }
            Ok(v.finish(head))
        })
        .await
        .map_err(|err| AuditError::db("task", err))?
    }

    pub(crate) async fn purge_before(
        &self,
        cutoff: DateTime<Utc>,
        key: Arc<MasterKey>,
    ) -> Result<PurgeReport, AuditError> {
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = connect(&path, "retention purge")?;
            let op = "retention purge";
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(e(op))?;
            let head = lock_head(&tx)?;
            let cutoff_text = time_text(&truncate_micros(cutoff));
            // The last entry before the cutoff; the chain then resumes right after it.
            let last_old: Option<(i64, String)> = tx
                .query_row(
                    "SELECT seq, hash FROM audit_log WHERE at < ?1 ORDER BY seq DESC LIMIT 1",
                    [&cutoff_text],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()
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
                tx.execute(
                    "INSERT INTO audit_anchors (first_seq, prev_hash, purged_at, key_id, tag)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![
                        first_seq,
                        last_hash,
                        time_text(&now),
                        key_id,
                        hex::encode(tag)
                    ],
                )
                .map_err(e(op))?;
                tx.execute(
                    "UPDATE audit_retention SET purge_below = ?1 WHERE id = 1",
                    [first_seq],
                )
                .map_err(e(op))?;
                let n = tx
                    .execute("DELETE FROM audit_log WHERE seq < ?1", [first_seq])
                    .map_err(e(op))?;
                tx.execute(
                    "UPDATE audit_retention SET purge_below = 0 WHERE id = 1",
                    [],
                )
                .map_err(e(op))?;
                removed = n as u64;
                anchor_seq = Some(first_seq);
            }
            let mut record = NewAuditEntry::new(
                "system",
                AuditAction::RetentionPurge,
                AuditOutcome::Granted,
                format!("retention-{}", cutoff_text),
            );
            record.checks = vec![
                format!("cutoff:{cutoff_text}"),
                format!("removed:{removed}"),
            ];
            if let Some(a) = anchor_seq {
                record.checks.push(format!("anchor:{a}"));
            }
            record.records_returned = u32::try_from(removed).unwrap_or(u32::MAX);
            let mut written = insert_entries(&tx, head, vec![record]).map_err(e(op))?;
            tx.commit().map_err(e(op))?;
            let entry = written
                .pop()
                .ok_or_else(|| AuditError::db(op, "the purge entry was not written"))?;
            Ok(PurgeReport {
                removed,
                anchor_seq,
                entry,
            })
        })
        .await
        .map_err(|err| AuditError::db("task", err))?
    }
}

fn run_query(conn: &mut Connection, q: &Query, page: PageRequest) -> Result<AuditPage, AuditError> {
    let op = "audit query";
    let mut clauses: Vec<String> = Vec::new();
    let mut args: Vec<rusqlite::types::Value> = Vec::new();
    let mut push = |clause: &str, v: rusqlite::types::Value| {
        args.push(v);
        clauses.push(clause.replace('?', &format!("?{}", args.len())));
    };
    use rusqlite::types::Value;
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
                push("user_id = ?", Value::Integer(*u));
            }
            if let Some(o) = organisation {
                push("organisation = ?", Value::Text(o.clone()));
            }
            if let Some(s) = subject {
                push("subject = ?", Value::Text(s.clone()));
            }
            if !subjects.is_empty() {
                // One bound JSON array, however many audit key versions are loaded.
                let list =
                    serde_json::to_string(subjects).map_err(|err| AuditError::db(op, err))?;
                push(
                    "subject IN (SELECT value FROM json_each(?))",
                    Value::Text(list),
                );
            }
            if let Some(t) = from {
                push("at >= ?", Value::Text(time_text(&truncate_micros(*t))));
            }
            if let Some(t) = to {
                push("at < ?", Value::Text(time_text(&truncate_micros(*t))));
            }
            if let Some(o) = outcome {
                push("outcome = ?", Value::Text(o.as_str().to_owned()));
            }
            if let Some(a) = action {
                push("action = ?", Value::Text(a.as_str().to_owned()));
            }
        }
        Query::BreakGlassQueue => {
            push(
                "action = ? AND NOT EXISTS (SELECT 1 FROM audit_log r
                   WHERE r.refers_to = audit_log.seq AND r.action = 'break_glass_review')",
                Value::Text(AuditAction::BreakGlassLookup.as_str().to_owned()),
            );
        }
    }
    if let Some(b) = page.before {
        push("seq < ?", Value::Integer(b));
    }
    let where_sql = if clauses.is_empty() {
        "1 = 1".to_owned()
    } else {
        clauses.join(" AND ")
    };
    // One more than asked, to know whether there is a next page.
    args.push(Value::Integer(i64::from(page.limit) + 1));
    let sql = format!(
        "SELECT {COLUMNS} FROM audit_log WHERE {where_sql} ORDER BY seq DESC LIMIT ?{}",
        args.len()
    );
    let mut st = conn.prepare(&sql).map_err(e(op))?;
    let rows = st
        .query_map(rusqlite::params_from_iter(args.iter()), raw_row)
        .map_err(e(op))?;
    let mut entries = Vec::new();
    for row in rows {
        let row = row.map_err(e(op))?;
        let seq = row.seq;
        entries.push(row.decode().map_err(|why| {
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
