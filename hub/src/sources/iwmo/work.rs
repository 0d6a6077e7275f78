//! The run's work index, a temporary SQLite database on disk, so that a run holds the
//! messages of a few (provider, client) pairs at a time instead of the whole archive's:
//!
//! | table | rows |
//! |---|---|
//! | `file` | the folder's files in name order (index, name), marked when a run reads them |
//! | `registry` | the applied files' entries of the stored state, as stored |
//! | `msg` | one per message to read: pair key, the fields of its place in the order of application, file index |
//! | `uses` | per `ToewijzingNummer` a WMO301 product of a message to read assigns: provider, number, the message's place in the order of application ([`super::order_bytes`]), pair, file index, the product's record id |
//!
//! The database is SQLite's private temporary database (opened with an empty file name, so
//! its file is in the system's temporary folder: `SQLITE_TMPDIR` or `TMPDIR`, else
//! `/var/tmp` or `/tmp`): its file is deleted when the run ends (or fails), it has no journal
//! and is never synced, and its page cache is bounded (`cache_size`, 4 MB). It takes a few
//! hundred bytes per message file. It never holds a BSN: the pair key is the provider's AGB
//! code and the client's pseudonym under the index key ([`super::stored`]'s pair key; a
//! preview without store uses a random key of its own), or, for a message without valid
//! BSN, a key of its own file.

use matchpoint_connectors::iwmo::{Header, MessageKind};
use rusqlite::{Connection, OptionalExtension, params};

/// The place in the order of application of one message, and its file.
#[derive(Debug, Clone)]
pub(super) struct Row {
    pub dagtekening: chrono::NaiveDate,
    pub kind: MessageKind,
    pub id: String,
    pub sender: String,
    pub file: usize,
    /// The file's name, as text and as the system's bytes.
    pub name: String,
    pub raw: Vec<u8>,
    /// The file is marked to do (see [`WorkIndex::set_todo`]).
    pub todo: bool,
}

/// The run's work index.
pub(super) struct WorkIndex {
    conn: Connection,
    /// The last pair handed out by [`WorkIndex::next_pairs`].
    last: Option<Vec<u8>>,
    /// Rows inserted in the open transaction.
    pending: usize,
    /// Files listed.
    files: usize,
    /// The last file name.
    last_name: Option<String>,
}

fn kind_code(k: MessageKind) -> i64 {
    match k {
        MessageKind::Wmo301 => 1,
        MessageKind::Wmo305 => 2,
        MessageKind::Wmo307 => 3,
    }
}

fn kind_of(code: i64) -> Option<MessageKind> {
    match code {
        1 => Some(MessageKind::Wmo301),
        2 => Some(MessageKind::Wmo305),
        3 => Some(MessageKind::Wmo307),
        _ => None,
    }
}

/// Rows inserted per transaction.
const TXN_ROWS: usize = 50_000;

impl WorkIndex {
    /// A new, empty index.
    pub(super) fn new() -> rusqlite::Result<Self> {
        let conn = Connection::open("")?;
        conn.execute_batch(
            "PRAGMA journal_mode = OFF;
             PRAGMA synchronous = OFF;
             PRAGMA cache_size = -4096;
             PRAGMA temp_store = FILE;
             CREATE TABLE msg (
                 pair BLOB NOT NULL,
                 day INTEGER NOT NULL,
                 kind INTEGER NOT NULL,
                 id TEXT NOT NULL,
                 sender TEXT NOT NULL,
                 file INTEGER NOT NULL
             );
             CREATE TABLE listing (name TEXT PRIMARY KEY, raw BLOB NOT NULL) WITHOUT ROWID;
             CREATE TABLE file (
                 idx INTEGER PRIMARY KEY,
                 name TEXT NOT NULL,
                 raw BLOB NOT NULL,
                 todo INTEGER NOT NULL DEFAULT 0
             );
             CREATE TABLE registry (name TEXT PRIMARY KEY, entry BLOB NOT NULL) WITHOUT ROWID;
             CREATE TABLE uses (
                 provider TEXT NOT NULL,
                 number TEXT NOT NULL,
                 ord BLOB NOT NULL,
                 pair BLOB NOT NULL,
                 file INTEGER NOT NULL,
                 product TEXT NOT NULL
             );",
        )?;
        Ok(WorkIndex {
            conn,
            last: None,
            pending: 0,
            files: 0,
            last_name: None,
        })
    }

    fn begin(&mut self) -> rusqlite::Result<()> {
        if self.pending == 0 {
            self.conn.execute_batch("BEGIN")?;
        }
        self.pending += 1;
        if self.pending >= TXN_ROWS {
            self.conn.execute_batch("COMMIT; BEGIN")?;
            self.pending = 1;
        }
        Ok(())
    }

    fn commit(&mut self) -> rusqlite::Result<()> {
        if self.pending > 0 {
            self.conn.execute_batch("COMMIT")?;
            self.pending = 0;
        }
        Ok(())
    }

    /// Lists a file of the folder (any order; a name listed twice counts once): its name
    /// as text and as the system's bytes.
    pub(super) fn list(&mut self, name: &str, raw: &[u8]) -> rusqlite::Result<()> {
        self.begin()?;
        self.conn
            .prepare_cached("INSERT OR IGNORE INTO listing (name, raw) VALUES (?1, ?2)")?
            .execute(params![name, raw])?;
        Ok(())
    }

    /// Ends the listing: numbers the files in name order, from 0.
    pub(super) fn number_files(&mut self) -> rusqlite::Result<()> {
        self.commit()?;
        self.conn.execute_batch(
            "INSERT INTO file (idx, name, raw)
             SELECT row_number() OVER (ORDER BY name) - 1, name, raw FROM listing ORDER BY name;
             DELETE FROM listing;",
        )?;
        let n: i64 = self
            .conn
            .query_row("SELECT count(*) FROM file", [], |r| r.get(0))?;
        self.files = usize::try_from(n).unwrap_or(0);
        self.last_name = self
            .conn
            .query_row("SELECT name FROM file ORDER BY idx DESC LIMIT 1", [], |r| {
                r.get(0)
            })
            .optional()?;
        Ok(())
    }

    /// Number of files in the folder.
    pub(super) fn file_count(&self) -> usize {
        self.files
    }

    /// The last file name in name order.
    pub(super) fn last_name(&self) -> Option<&str> {
        self.last_name.as_deref()
    }

    /// Up to `limit` files with an index after `after` (all files, or those marked to do),
    /// with their names.
    pub(super) fn files_after(
        &self,
        after: Option<usize>,
        limit: usize,
        todo_only: bool,
    ) -> rusqlite::Result<Vec<(usize, String, Vec<u8>)>> {
        let after = after.map_or(-1, |a| i64::try_from(a).unwrap_or(i64::MAX));
        let mut st = self.conn.prepare_cached(
            "SELECT idx, name, raw FROM file WHERE idx > ?1 AND (?2 = 0 OR todo = 1)
             ORDER BY idx LIMIT ?3",
        )?;
        let rows = st.query_map(
            params![
                after,
                i64::from(todo_only),
                i64::try_from(limit).unwrap_or(i64::MAX)
            ],
            |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?, r.get(2)?)),
        )?;
        let mut out = Vec::new();
        for r in rows {
            let (idx, name, raw) = r?;
            out.push((usize::try_from(idx).unwrap_or(usize::MAX), name, raw));
        }
        Ok(out)
    }

    /// Marks file `idx` to do (or done).
    pub(super) fn set_todo(&mut self, idx: usize, todo: bool) -> rusqlite::Result<()> {
        self.begin()?;
        self.conn
            .prepare_cached("UPDATE file SET todo = ?2 WHERE idx = ?1")?
            .execute(params![
                i64::try_from(idx).unwrap_or(i64::MAX),
                i64::from(todo)
            ])?;
        Ok(())
    }

    /// Whether file `idx` is marked to do.
    pub(super) fn is_todo(&self, idx: usize) -> rusqlite::Result<bool> {
        let todo: Option<i64> = self
            .conn
            .prepare_cached("SELECT todo FROM file WHERE idx = ?1")?
            .query_row([i64::try_from(idx).unwrap_or(i64::MAX)], |r| r.get(0))
            .optional()?;
        Ok(todo == Some(1))
    }

    /// Records the stored entry (as stored) of an applied file.
    pub(super) fn add_entry(&mut self, name: &[u8], entry: &[u8]) -> rusqlite::Result<()> {
        self.begin()?;
        self.conn
            .prepare_cached("INSERT OR REPLACE INTO registry (name, entry) VALUES (?1, ?2)")?
            .execute(params![String::from_utf8_lossy(name), entry])?;
        Ok(())
    }

    /// Commits what was recorded (entries, marks).
    pub(super) fn flush(&mut self) -> rusqlite::Result<()> {
        self.commit()
    }

    /// The stored entry of an applied file (as stored).
    pub(super) fn entry(&self, name: &str) -> rusqlite::Result<Option<Vec<u8>>> {
        self.conn
            .prepare_cached("SELECT entry FROM registry WHERE name = ?1")?
            .query_row([name], |r| r.get(0))
            .optional()
    }

    /// Adds the message of `file` with this header to `pair`.
    pub(super) fn add(&mut self, pair: &[u8], h: &Header, file: usize) -> rusqlite::Result<()> {
        self.begin()?;
        self.conn
            .prepare_cached(
                "INSERT INTO msg (pair, day, kind, id, sender, file) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![
                pair,
                chrono::Datelike::num_days_from_ce(&h.dagtekening),
                kind_code(h.kind),
                h.id,
                h.sender,
                i64::try_from(file).unwrap_or(i64::MAX),
            ])?;
        Ok(())
    }

    /// Ends the inserts: indexes the rows by pair.
    pub(super) fn seal(&mut self) -> rusqlite::Result<()> {
        self.commit()?;
        self.conn.execute_batch(
            "CREATE INDEX msg_pair ON msg (pair, file);
                 CREATE INDEX uses_number ON uses (provider, number, ord);
                 CREATE INDEX uses_pair ON uses (pair);",
        )
    }

    /// The rows of the next (at most) `max` pairs, in pair order; empty when every pair was
    /// handed out.
    pub(super) fn next_pairs(&mut self, max: usize) -> rusqlite::Result<Vec<(Vec<u8>, Vec<Row>)>> {
        let after = self.last.clone().unwrap_or_default();
        let limit = i64::try_from(max).unwrap_or(i64::MAX);
        let bound: Option<Vec<u8>> = self
            .conn
            .query_row(
                "SELECT max(pair) FROM (SELECT DISTINCT pair FROM msg WHERE pair > ?1
                 ORDER BY pair LIMIT ?2)",
                params![after, limit],
                |r| r.get(0),
            )
            .optional()?
            .flatten();
        let Some(bound) = bound else {
            return Ok(Vec::new());
        };
        let mut st = self.conn.prepare_cached(
            "SELECT m.pair, m.day, m.kind, m.id, m.sender, m.file, f.name, f.raw, f.todo
             FROM msg m JOIN file f ON f.idx = m.file
             WHERE m.pair > ?1 AND m.pair <= ?2 ORDER BY m.pair, m.file",
        )?;
        let mut rows = st.query(params![after, bound])?;
        let mut out: Vec<(Vec<u8>, Vec<Row>)> = Vec::new();
        while let Some(r) = rows.next()? {
            let pair: Vec<u8> = r.get(0)?;
            let day: i32 = r.get(1)?;
            let kind: i64 = r.get(2)?;
            let file: i64 = r.get(5)?;
            let (Some(dagtekening), Some(kind), Ok(file)) = (
                chrono::NaiveDate::from_num_days_from_ce_opt(day),
                kind_of(kind),
                usize::try_from(file),
            ) else {
                return Err(rusqlite::Error::InvalidQuery);
            };
            let row = Row {
                dagtekening,
                kind,
                id: r.get(3)?,
                sender: r.get(4)?,
                file,
                name: r.get(6)?,
                raw: r.get(7)?,
                todo: r.get::<_, i64>(8)? == 1,
            };
            match out.last_mut() {
                Some((p, rows)) if *p == pair => rows.push(row),
                _ => out.push((pair, vec![row])),
            }
        }
        self.last = Some(bound);
        Ok(out)
    }

    /// Records that product `product` (record id) of the message of `file` (of `pair`, at
    /// place `ord` in the order of application) assigns `number` of `provider`.
    pub(super) fn add_use(
        &mut self,
        provider: &str,
        number: u64,
        ord: &[u8],
        pair: &[u8],
        file: usize,
        product: &str,
    ) -> rusqlite::Result<()> {
        self.begin()?;
        self.conn
            .prepare_cached(
                "INSERT INTO uses (provider, number, ord, pair, file, product)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![
                provider,
                number.to_string(),
                ord,
                pair,
                i64::try_from(file).unwrap_or(i64::MAX),
                product,
            ])?;
        Ok(())
    }

    /// The assignment numbers the messages of this run of the pairs from `first` to `last`
    /// (in pair order, both included) make: pair, provider and number, each once.
    pub(super) fn numbers_between(
        &self,
        first: &[u8],
        last: &[u8],
    ) -> rusqlite::Result<Vec<(Vec<u8>, String, u64)>> {
        let mut st = self.conn.prepare_cached(
            "SELECT DISTINCT pair, provider, number FROM uses WHERE pair >= ?1 AND pair <= ?2",
        )?;
        let rows = st.query_map(params![first, last], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get::<_, String>(2)?))
        })?;
        let mut out = Vec::new();
        for r in rows {
            let (pair, provider, number) = r?;
            let Ok(number) = number.parse::<u64>() else {
                return Err(rusqlite::Error::InvalidQuery);
            };
            out.push((pair, provider, number));
        }
        Ok(out)
    }

    /// The first message of this run after place `after` (in the order of application) that
    /// assigns `number` of `provider`: its place, pair, file name and the name's bytes.
    pub(super) fn next_use(
        &self,
        provider: &str,
        number: u64,
        after: &[u8],
    ) -> rusqlite::Result<Option<Use>> {
        self.conn
            .prepare_cached(
                "SELECT u.ord, u.pair, f.name, f.raw, u.product FROM uses u JOIN file f ON f.idx = u.file
                 WHERE u.provider = ?1 AND u.number = ?2 AND u.ord > ?3
                 ORDER BY u.ord LIMIT 1",
            )?
            .query_row(params![provider, number.to_string(), after], |r| {
                Ok(Use {
                    ord: r.get(0)?,
                    pair: r.get(1)?,
                    name: r.get(2)?,
                    raw: r.get(3)?,
                    product: r.get(4)?,
                })
            })
            .optional()
    }
}

/// A message of this run that assigns a `ToewijzingNummer` (see [`WorkIndex::next_use`]).
pub(super) struct Use {
    pub ord: Vec<u8>,
    pub pair: Vec<u8>,
    pub name: String,
    pub raw: Vec<u8>,
    /// The product's record id.
    pub product: String,
}
