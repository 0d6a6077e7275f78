//! Kind `sql_pull`: a view in the supplier's database — PostgreSQL, MySQL/MariaDB or SQLite —
//! read page by page (`schemas/formats/sql-pull.md`).
//!
//! - **Where**: `location` is the view (or table) name; the connection URL (`postgres://`,
//!   `mysql://`/`mariadb://`, `sqlite://`) comes from `[source.sql] url_env` (an environment
//!   variable) or `url_file` (a file), never from the configuration's clear text, and is never
//!   shown with its password.
//! - **Paging by keyset**: `SELECT * FROM view WHERE (updated_at, id) > (cursor) ORDER BY
//!   updated_at, id LIMIT page_size` (`[source.paging] page_size`; on MySQL/MariaDB the
//!   condition is written out as `u > ? OR (u = ? AND id > ?)`, the form its range optimizer
//!   indexes). The supplier needs an index on `(updated_at, id)` of the table behind the
//!   view; without one every page scans the table. A page token and the incremental cursor are the last row's
//!   `(updated_at, id)`, kept in the column's own type (JSON), so comparisons are exact.
//! - **Incremental**: the first page of an incremental run starts after the committed cursor,
//!   so a run reads only rows changed since the last successful run; an interrupted run
//!   commits nothing and the next one starts again from the committed cursor.
//! - **Columns → field paths**: every column of the view becomes the field of the same name
//!   (values as text: numbers in decimal, booleans `true`/`false`, dates `YYYY-MM-DD`,
//!   timestamps `YYYY-MM-DDTHH:MM:SS[.f]`); the mapping file names the columns. When the
//!   mapping has `[relations]`, its `group` column holds the relations as `soort:BSN|…`.
//! - **Deleted rows**: `[source.sql] deleted_column` marks a deleted/withdrawn row; such a row
//!   is delivered with the mapping's status field set to a code its `[codes.status]` maps to
//!   `ended`, so the involvement ends (the mapping must have both).
//! - **Size**: a row whose values add up to more than `limits.max_record_bytes` is
//!   quarantined; a page holds at most `page_size` rows.
//! - **Cancellation**: Ctrl-C abandons a connection attempt or a query within 100 ms.
//! - **Errors**: connection failures and timeouts are transient (the runner retries them; the
//!   connection is opened again); SQL errors (a missing view or column) and values that cannot
//!   be read fail the run with a message naming the source and the view.
//!
//! sqlx is async and the sync pipeline reads on a plain thread: the connector owns a small
//! current-thread tokio runtime and blocks on it for each page; one connection per run. (So
//! [`SqlPull::fetch`](PagedConnector::fetch) must not be called from inside an async task;
//! the pipeline's reader thread and `spawn_blocking` threads are fine.) The
//! shared runner (`matchpoint_connectors::runner`) drives the pages: retries with backoff,
//! cancellation, page and byte limits.

use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use matchpoint_connectors::paged::{FetchError, Page, PageRequest, PagedConnector};
use matchpoint_connectors::{DeliveryError, RecordError, RecordResult};
use matchpoint_schemas::{InvolvementStatus, RawGroup, RawRecord, RecordPosition};
use serde::{Deserialize, Serialize};
use sqlx::mysql::{MySqlConnectOptions, MySqlConnection, MySqlRow};
use sqlx::postgres::{PgConnectOptions, PgConnection, PgRow};
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection, SqliteRow};
use sqlx::{AssertSqlSafe, Column, ConnectOptions, Connection, Row, TypeInfo};

use super::{OpenContext, Opened};
use crate::config::{SourceConfig, SqlSettings};

/// SQL dialects Matchpoint reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// PostgreSQL.
    Postgres,
    /// MySQL or MariaDB.
    MySql,
    /// SQLite.
    Sqlite,
}

impl Dialect {
    /// The dialect of a connection URL, by its scheme.
    pub fn of_url(url: &str) -> Option<Dialect> {
        let scheme = url.split_once("://").map(|(s, _)| s)?;
        match scheme {
            "postgres" | "postgresql" => Some(Dialect::Postgres),
            "mysql" | "mariadb" => Some(Dialect::MySql),
            "sqlite" => Some(Dialect::Sqlite),
            _ => None,
        }
    }
}

/// One open connection to a supplier database.
pub enum SqlConn {
    /// PostgreSQL.
    Postgres(PgConnection),
    /// MySQL or MariaDB.
    MySql(MySqlConnection),
    /// SQLite.
    Sqlite(SqliteConnection),
}

impl SqlConn {
    /// Connects to `url`; a SQLite database is opened read-only unless `write` (and then
    /// created when missing). sqlx's statement logging is off: statements of the simulated
    /// supplier databases carry (synthetic) BSNs as literals, and none belong in a log.
    pub async fn connect(url: &str, write: bool) -> Result<SqlConn, sqlx::Error> {
        match Dialect::of_url(url) {
            Some(Dialect::Postgres) => Ok(SqlConn::Postgres(
                PgConnectOptions::from_str(url)?
                    .disable_statement_logging()
                    .connect()
                    .await?,
            )),
            Some(Dialect::MySql) => {
                let url = url.replacen("mariadb://", "mysql://", 1);
                Ok(SqlConn::MySql(
                    MySqlConnectOptions::from_str(&url)?
                        .disable_statement_logging()
                        .connect()
                        .await?,
                ))
            }
            Some(Dialect::Sqlite) => Ok(SqlConn::Sqlite(
                SqliteConnectOptions::from_str(url)?
                    .read_only(!write)
                    .create_if_missing(write)
                    .busy_timeout(Duration::from_secs(30))
                    .disable_statement_logging()
                    .connect()
                    .await?,
            )),
            None => Err(sqlx::Error::Configuration(
                "the connection URL must start with postgres://, mysql://, mariadb:// or sqlite://"
                    .into(),
            )),
        }
    }

    /// The connection's dialect.
    pub fn dialect(&self) -> Dialect {
        match self {
            SqlConn::Postgres(_) => Dialect::Postgres,
            SqlConn::MySql(_) => Dialect::MySql,
            SqlConn::Sqlite(_) => Dialect::Sqlite,
        }
    }

    /// Runs statements without parameters (for setting up simulated databases).
    pub async fn execute(&mut self, sql: String) -> Result<(), sqlx::Error> {
        let q = sqlx::raw_sql(AssertSqlSafe(sql));
        match self {
            SqlConn::Postgres(c) => q.execute(c).await.map(drop),
            SqlConn::MySql(c) => q.execute(c).await.map(drop),
            SqlConn::Sqlite(c) => q.execute(c).await.map(drop),
        }
    }

    /// Closes the connection.
    pub async fn close(self) -> Result<(), sqlx::Error> {
        match self {
            SqlConn::Postgres(c) => c.close().await,
            SqlConn::MySql(c) => c.close().await,
            SqlConn::Sqlite(c) => c.close().await,
        }
    }
}

/// A URL with its password replaced by `***`, for messages.
pub fn redact(url: &str) -> String {
    crate::store::redact_url(url)
}

/// One keyset value, in the column's own type, so a comparison with it is exact.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum KeyValue {
    /// Text (also SQLite timestamps stored as text).
    #[serde(rename = "t")]
    Text(String),
    /// An integer.
    #[serde(rename = "i")]
    Int(i64),
    /// A timestamp without time zone.
    #[serde(rename = "n")]
    Naive(NaiveDateTime),
    /// A timestamp with time zone.
    #[serde(rename = "z")]
    Utc(DateTime<Utc>),
}

/// A keyset position: the last row read. Serialised as JSON for page tokens and cursors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Keyset {
    /// The updated-at value.
    pub u: KeyValue,
    /// The id value.
    pub id: KeyValue,
}

impl Keyset {
    fn encode(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
    fn decode(s: &str) -> Option<Keyset> {
        serde_json::from_str(s).ok()
    }
}

/// What the deleted marker column does.
#[derive(Debug, Clone)]
pub struct DeletedMarker {
    /// The marker column.
    pub column: String,
    /// The mapping's status field path, set on deleted rows.
    pub status_field: String,
    /// A status code the mapping maps to `ended`.
    pub ended_code: String,
}

/// Where relations are in a row.
#[derive(Debug, Clone)]
pub struct RelationLayout {
    /// The column (and group path).
    pub column: String,
    /// Name of the kind inside each group.
    pub kind_field: String,
    /// Name of the BSN inside each group.
    pub bsn_field: String,
}

/// Everything the connector needs.
#[derive(Debug, Clone)]
pub struct SqlPullSettings {
    /// Source name, for messages.
    pub source: String,
    /// Connection URL (a secret: never shown unredacted).
    pub url: String,
    /// The view.
    pub view: String,
    /// The id column.
    pub id_column: String,
    /// The updated-at column.
    pub updated_at_column: String,
    /// Rows per page.
    pub page_size: u32,
    /// Deleted marker, if any.
    pub deleted: Option<DeletedMarker>,
    /// Relations column, if any.
    pub relations: Option<RelationLayout>,
    /// Timeout for connecting and for one page.
    pub timeout: Duration,
    /// Most bytes of one row's values; a larger row is quarantined.
    pub max_record_bytes: u64,
    /// Set on Ctrl-C: a connection attempt or query in progress is abandoned.
    pub cancel: Arc<AtomicBool>,
}

/// Waits until `cancel` is set, looking every 100 ms.
async fn cancelled(cancel: Arc<AtomicBool>) {
    while !cancel.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The SQL pull connector: one page per [`PagedConnector::fetch`].
pub struct SqlPull {
    settings: SqlPullSettings,
    runtime: tokio::runtime::Runtime,
    conn: Option<SqlConn>,
    index: u64,
    /// Rows fetched so far (what the database served).
    pub rows_served: u64,
    /// Pages fetched so far.
    pub pages: u64,
}

fn transient(message: String) -> FetchError {
    FetchError::Transient {
        message,
        retry_after: None,
    }
}

impl SqlPull {
    /// A connector; connects lazily on the first fetch.
    pub fn new(settings: SqlPullSettings) -> Result<SqlPull, String> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("source {}: cannot start a runtime: {e}", settings.source))?;
        Ok(SqlPull {
            settings,
            runtime,
            conn: None,
            index: 0,
            rows_served: 0,
            pages: 0,
        })
    }

    fn location(&self) -> String {
        format!(
            "source {} (view `{}` in {})",
            self.settings.source,
            self.settings.view,
            redact(&self.settings.url)
        )
    }

    fn classify(&self, e: sqlx::Error) -> FetchError {
        match e {
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed
            | sqlx::Error::Protocol(_) => {
                transient(format!("{}: connection failed: {e}", self.location()))
            }
            sqlx::Error::Database(db) => FetchError::Fatal(DeliveryError::Io {
                location: self.location(),
                message: format!(
                    "the database refused the query: {}{}; check that the view exists, that \
                     it has the columns `{}` and `{}`, and that the user may read it",
                    db.message(),
                    db.code()
                        .map(|c| format!(" (code {c})"))
                        .unwrap_or_default(),
                    self.settings.updated_at_column,
                    self.settings.id_column
                ),
            }),
            other => FetchError::Fatal(DeliveryError::Io {
                location: self.location(),
                message: other.to_string(),
            }),
        }
    }

    fn interrupted(&self) -> FetchError {
        FetchError::Fatal(DeliveryError::Io {
            location: self.location(),
            message: "cancelled (interrupt) while waiting for the database".into(),
        })
    }

    fn query_text(&self, dialect: Dialect, after: bool) -> String {
        let s = &self.settings;
        let (u, id) = (&s.updated_at_column, &s.id_column);
        let filter = match (after, dialect) {
            (false, _) => String::new(),
            // A row-value comparison: PostgreSQL and SQLite seek the (updated_at, id) index
            // to the cursor. SQLite scans the index from its start for the `OR` form (every
            // page then costs more than the one before: 36 s for 950k rows instead of ~6 s).
            (true, Dialect::Postgres) => format!(" WHERE ({u}, {id}) > ($1, $2)"),
            (true, Dialect::Sqlite) => format!(" WHERE ({u}, {id}) > (?1, ?2)"),
            // MariaDB does not turn a row-value comparison into an index range; the `OR`
            // form it does.
            (true, Dialect::MySql) => format!(" WHERE {u} > ? OR ({u} = ? AND {id} > ?)"),
        };
        format!(
            "SELECT * FROM {}{filter} ORDER BY {u}, {id} LIMIT {}",
            s.view, s.page_size
        )
    }

    fn fetch_rows(&mut self, after: Option<&Keyset>) -> Result<Vec<Row0>, FetchError> {
        let timeout = self.settings.timeout;
        if self.conn.is_none() {
            let url = self.settings.url.clone();
            let cancel = self.settings.cancel.clone();
            let conn = self
                .runtime
                .block_on(async {
                    tokio::select! {
                        biased;
                        () = cancelled(cancel) => None,
                        r = tokio::time::timeout(timeout, SqlConn::connect(&url, false)) => Some(r),
                    }
                })
                .ok_or_else(|| self.interrupted())?
                .map_err(|_| {
                    transient(format!(
                        "{}: connecting timed out after {}s",
                        self.location(),
                        timeout.as_secs()
                    ))
                })?
                .map_err(|e| match e {
                    sqlx::Error::Configuration(m) => FetchError::Fatal(DeliveryError::Io {
                        location: self.location(),
                        message: format!("bad connection URL: {m}"),
                    }),
                    e => self.classify(e),
                })?;
            self.conn = Some(conn);
        }
        let Some(mut conn) = self.conn.take() else {
            return Err(transient(format!("{}: not connected", self.location())));
        };
        let dialect = conn.dialect();
        let sql = self.query_text(dialect, after.is_some());
        let cancel = self.settings.cancel.clone();
        let result = self.runtime.block_on(async {
            tokio::select! {
                biased;
                () = cancelled(cancel) => None,
                r = tokio::time::timeout(timeout, query_page(&mut conn, sql, after)) => Some(r),
            }
        });
        // Interrupted: the connection is dropped mid-query (the next run opens a new one).
        let Some(result) = result else {
            return Err(self.interrupted());
        };
        match result {
            Err(_) => Err(transient(format!(
                "{}: the query timed out after {}s",
                self.location(),
                timeout.as_secs()
            ))),
            Ok(Err(QueryError::Sql(e))) => {
                let err = self.classify(e);
                if matches!(err, FetchError::Fatal(_)) {
                    self.conn = Some(conn);
                }
                Err(err)
            }
            Ok(Err(QueryError::Type { column, type_name })) => {
                Err(FetchError::Fatal(DeliveryError::Io {
                    location: self.location(),
                    message: format!(
                        "column `{column}` has type {type_name}, which Matchpoint cannot read; \
                         cast it to text in the view"
                    ),
                }))
            }
            Ok(Ok(rows)) => {
                self.conn = Some(conn);
                Ok(rows)
            }
        }
    }

    /// Turns one row into a raw record (or a quarantine entry) and its keyset position.
    fn record(&mut self, row: Row0, bytes: u64) -> Result<(RecordResult, Keyset), FetchError> {
        self.index += 1;
        let s = &self.settings;
        let position = RecordPosition {
            index: self.index,
            byte_offset: 0,
        };
        let mut u = None;
        let mut id = None;
        let mut record_id = None;
        let mut fields = Vec::with_capacity(row.len());
        let mut groups = Vec::new();
        let mut deleted = false;
        let mut bad_relation = None;
        for col in row {
            if col.name == s.updated_at_column {
                u = col.key.clone();
            }
            if col.name == s.id_column {
                id = col.key.clone();
                record_id = col.text.clone();
            }
            if let Some(d) = &s.deleted
                && col.name == d.column
            {
                deleted = col.text.as_deref().is_some_and(truthy);
                continue;
            }
            if let Some(r) = &s.relations
                && col.name == r.column
            {
                for (n, item) in col
                    .text
                    .as_deref()
                    .unwrap_or("")
                    .split('|')
                    .map(str::trim)
                    .filter(|i| !i.is_empty())
                    .enumerate()
                {
                    match item.split_once(':') {
                        Some((kind, bsn)) => groups.push(RawGroup {
                            path: r.column.clone(),
                            fields: vec![
                                (r.kind_field.clone(), kind.trim().to_owned()),
                                (r.bsn_field.clone(), bsn.trim().to_owned()),
                            ],
                        }),
                        None => bad_relation = Some(n + 1),
                    }
                }
                continue;
            }
            fields.push((col.name, col.text.unwrap_or_default()));
        }
        let (Some(u), Some(id)) = (u, id) else {
            return Err(FetchError::Fatal(DeliveryError::Io {
                location: self.location(),
                message: format!(
                    "a row has no value in `{}` or `{}` (the keyset columns must not be NULL)",
                    s.updated_at_column, s.id_column
                ),
            }));
        };
        let key = Keyset { u, id };
        if bytes > s.max_record_bytes {
            return Ok((
                Err(RecordError {
                    record_id,
                    position,
                    field: None,
                    reason: format!(
                        "the row is {bytes} bytes, more than the configured limit of {} bytes \
                         (limits.max_record_bytes)",
                        s.max_record_bytes
                    ),
                }),
                key,
            ));
        }
        if let Some(n) = bad_relation
            && let Some(r) = &s.relations
        {
            return Ok((
                Err(RecordError {
                    record_id,
                    position,
                    field: Some(r.column.clone()),
                    reason: format!(
                        "relation {n} is not written as `soort:BSN` (items are separated by `|`)"
                    ),
                }),
                key,
            ));
        }
        if deleted && let Some(d) = &s.deleted {
            match fields.iter_mut().find(|(p, _)| *p == d.status_field) {
                Some(f) => f.1 = d.ended_code.clone(),
                None => fields.push((d.status_field.clone(), d.ended_code.clone())),
            }
        }
        Ok((
            Ok(RawRecord {
                record_id,
                position,
                fields,
                groups,
            }),
            key,
        ))
    }
}

fn truthy(v: &str) -> bool {
    let v = v.trim().to_ascii_lowercase();
    !matches!(v.as_str(), "" | "0" | "false" | "f" | "n" | "nee" | "no")
}

impl PagedConnector for SqlPull {
    fn describe(&self) -> String {
        self.location()
    }

    fn fetch(&mut self, request: &PageRequest) -> Result<Page, FetchError> {
        let after = match request {
            PageRequest::First { since: None } => None,
            PageRequest::First { since: Some(t) } | PageRequest::Next(t) => {
                Some(Keyset::decode(t).ok_or_else(|| {
                    FetchError::Fatal(DeliveryError::Io {
                        location: self.location(),
                        message: "the stored cursor is not a SQL keyset position; run once with \
                                  --full to start again"
                            .into(),
                    })
                })?)
            }
        };
        let rows = self.fetch_rows(after.as_ref())?;
        self.pages += 1;
        self.rows_served += rows.len() as u64;
        let full_page = rows.len() as u64 >= u64::from(self.settings.page_size);
        let mut page = Page::default();
        let mut last = None;
        for row in rows {
            let bytes = row
                .iter()
                .map(|c| c.name.len() + c.text.as_ref().map_or(0, String::len))
                .sum::<usize>() as u64;
            page.bytes += bytes;
            let (rec, key) = self.record(row, bytes)?;
            page.records.push(rec);
            last = Some(key);
        }
        let last = last.map(|k| k.encode());
        page.cursor = last.clone();
        page.next = if full_page { last } else { None };
        Ok(page)
    }
}

/// One column of one row: name, text value, and keyset value.
struct Col {
    name: String,
    text: Option<String>,
    key: Option<KeyValue>,
}

type Row0 = Vec<Col>;

enum QueryError {
    Sql(sqlx::Error),
    Type { column: String, type_name: String },
}

impl From<sqlx::Error> for QueryError {
    fn from(e: sqlx::Error) -> Self {
        QueryError::Sql(e)
    }
}

fn naive_text(v: NaiveDateTime) -> String {
    v.format("%Y-%m-%dT%H:%M:%S%.f").to_string()
}

/// Tries each type in turn; the first compatible one gives the value.
macro_rules! decode_col {
    ($row:expr, $i:expr, $name:expr, $type_name:expr, [$($t:ty => $text:expr, $key:expr);* $(;)?]) => {{
        let mut out: Option<Col> = None;
        $(
            if out.is_none()
                && let Ok(v) = $row.try_get::<Option<$t>, _>($i)
            {
                out = Some(Col {
                    name: $name.clone(),
                    text: v.clone().map($text),
                    key: v.and_then($key),
                });
            }
        )*
        out.ok_or_else(|| QueryError::Type { column: $name.clone(), type_name: $type_name })
    }};
}

fn pg_row(row: &PgRow) -> Result<Row0, QueryError> {
    let mut out = Vec::with_capacity(row.len());
    for (i, c) in row.columns().iter().enumerate() {
        let name = c.name().to_owned();
        let type_name = c.type_info().name().to_owned();
        out.push(decode_col!(row, i, name, type_name, [
            String => |v: String| v, |v: String| Some(KeyValue::Text(v));
            i64 => |v: i64| v.to_string(), |v: i64| Some(KeyValue::Int(v));
            i32 => |v: i32| v.to_string(), |v: i32| Some(KeyValue::Int(i64::from(v)));
            i16 => |v: i16| v.to_string(), |v: i16| Some(KeyValue::Int(i64::from(v)));
            bool => |v: bool| v.to_string(), |_| None;
            f64 => |v: f64| v.to_string(), |_| None;
            f32 => |v: f32| v.to_string(), |_| None;
            NaiveDate => |v: NaiveDate| v.format("%Y-%m-%d").to_string(), |v: NaiveDate| v.and_hms_opt(0, 0, 0).map(KeyValue::Naive);
            NaiveDateTime => naive_text, |v| Some(KeyValue::Naive(v));
            DateTime<Utc> => |v: DateTime<Utc>| naive_text(v.naive_utc()), |v| Some(KeyValue::Utc(v));
        ])?);
    }
    Ok(out)
}

fn my_row(row: &MySqlRow) -> Result<Row0, QueryError> {
    let mut out = Vec::with_capacity(row.len());
    for (i, c) in row.columns().iter().enumerate() {
        let name = c.name().to_owned();
        let type_name = c.type_info().name().to_owned();
        out.push(decode_col!(row, i, name, type_name, [
            String => |v: String| v, |v: String| Some(KeyValue::Text(v));
            i64 => |v: i64| v.to_string(), |v: i64| Some(KeyValue::Int(v));
            i32 => |v: i32| v.to_string(), |v: i32| Some(KeyValue::Int(i64::from(v)));
            i16 => |v: i16| v.to_string(), |v: i16| Some(KeyValue::Int(i64::from(v)));
            i8 => |v: i8| v.to_string(), |v: i8| Some(KeyValue::Int(i64::from(v)));
            u32 => |v: u32| v.to_string(), |v: u32| Some(KeyValue::Int(i64::from(v)));
            u16 => |v: u16| v.to_string(), |v: u16| Some(KeyValue::Int(i64::from(v)));
            u8 => |v: u8| v.to_string(), |v: u8| Some(KeyValue::Int(i64::from(v)));
            u64 => |v: u64| v.to_string(), |v: u64| i64::try_from(v).ok().map(KeyValue::Int);
            bool => |v: bool| v.to_string(), |_| None;
            f64 => |v: f64| v.to_string(), |_| None;
            f32 => |v: f32| v.to_string(), |_| None;
            NaiveDate => |v: NaiveDate| v.format("%Y-%m-%d").to_string(), |v: NaiveDate| v.and_hms_opt(0, 0, 0).map(KeyValue::Naive);
            NaiveDateTime => naive_text, |v| Some(KeyValue::Naive(v));
            DateTime<Utc> => |v: DateTime<Utc>| naive_text(v.naive_utc()), |v| Some(KeyValue::Utc(v));
            Vec<u8> => |v: Vec<u8>| String::from_utf8_lossy(&v).into_owned(), |v: Vec<u8>| Some(KeyValue::Text(String::from_utf8_lossy(&v).into_owned()));
        ])?);
    }
    Ok(out)
}

fn lite_row(row: &SqliteRow) -> Result<Row0, QueryError> {
    let mut out = Vec::with_capacity(row.len());
    for (i, c) in row.columns().iter().enumerate() {
        let name = c.name().to_owned();
        let type_name = c.type_info().name().to_owned();
        out.push(decode_col!(row, i, name, type_name, [
            String => |v: String| v, |v: String| Some(KeyValue::Text(v));
            i64 => |v: i64| v.to_string(), |v: i64| Some(KeyValue::Int(v));
            f64 => |v: f64| v.to_string(), |_| None;
            Vec<u8> => |v: Vec<u8>| String::from_utf8_lossy(&v).into_owned(), |_| None;
        ])?);
    }
    Ok(out)
}

/// Binds one keyset value.
macro_rules! bind_key {
    ($q:expr, $v:expr) => {
        match $v {
            KeyValue::Text(s) => $q.bind(s.clone()),
            KeyValue::Int(i) => $q.bind(*i),
            KeyValue::Naive(n) => $q.bind(*n),
            KeyValue::Utc(z) => $q.bind(*z),
        }
    };
}

async fn query_page(
    conn: &mut SqlConn,
    sql: String,
    after: Option<&Keyset>,
) -> Result<Vec<Row0>, QueryError> {
    match conn {
        SqlConn::Postgres(c) => {
            let mut q = sqlx::query(AssertSqlSafe(sql));
            if let Some(k) = after {
                q = bind_key!(q, &k.u);
                q = bind_key!(q, &k.id);
            }
            let rows = q.fetch_all(c).await?;
            rows.iter().map(pg_row).collect()
        }
        SqlConn::MySql(c) => {
            let mut q = sqlx::query(AssertSqlSafe(sql));
            if let Some(k) = after {
                q = bind_key!(q, &k.u);
                q = bind_key!(q, &k.u);
                q = bind_key!(q, &k.id);
            }
            let rows = q.fetch_all(c).await?;
            rows.iter().map(my_row).collect()
        }
        SqlConn::Sqlite(c) => {
            let mut q = sqlx::query(AssertSqlSafe(sql));
            if let Some(k) = after {
                q = bind_key!(q, &k.u);
                q = bind_key!(q, &k.id);
            }
            let rows = q.fetch_all(c).await?;
            rows.iter().map(lite_row).collect()
        }
    }
}

/// Reads the connection URL of a source from its environment variable or file.
pub fn connection_url(source: &SourceConfig, sql: &SqlSettings) -> Result<String, String> {
    let url = match (&sql.url_env, &sql.url_file) {
        (Some(var), _) => std::env::var(var).map_err(|_| {
            format!(
                "source {}: the environment variable {var} (sql.url_env) holding the \
                 connection URL is not set",
                source.name
            )
        })?,
        (None, Some(file)) => std::fs::read_to_string(file)
            .map_err(|e| {
                format!(
                    "source {}: cannot read the connection URL from {} (sql.url_file): {e}",
                    source.name,
                    file.display()
                )
            })?
            .lines()
            .next()
            .unwrap_or("")
            .trim()
            .to_owned(),
        (None, None) => {
            return Err(format!(
                "source {}: [source.sql] needs url_env or url_file",
                source.name
            ));
        }
    };
    if Dialect::of_url(&url).is_none() {
        return Err(format!(
            "source {}: the connection URL must start with postgres://, mysql://, mariadb:// or \
             sqlite:// (found `{}`)",
            source.name,
            url.split("://").next().unwrap_or("")
        ));
    }
    Ok(url)
}

/// The connector settings of a source (configuration + mapping).
pub fn settings_for(source: &SourceConfig) -> Result<SqlPullSettings, String> {
    let sql = source.sql.as_ref().ok_or_else(|| {
        format!(
            "source {}: kind sql_pull needs a [source.sql] table",
            source.name
        )
    })?;
    let url = connection_url(source, sql)?;
    let spec = source.mapping_spec.as_ref();
    let deleted = match &sql.deleted_column {
        None => None,
        Some(column) => {
            let spec = spec.ok_or_else(|| format!("source {}: no mapping", source.name))?;
            let status_field = spec.fields.status.clone().ok_or_else(|| {
                format!(
                    "source {}: sql.deleted_column is set but the mapping {} has no fields.status \
                     to end deleted rows with",
                    source.name, spec.origin
                )
            })?;
            let ended_code = spec
                .statuses
                .iter()
                .find(|(_, s)| **s == InvolvementStatus::Ended)
                .map(|(c, _)| c.clone())
                .ok_or_else(|| {
                    format!(
                        "source {}: sql.deleted_column is set but [codes.status] in {} maps no \
                         code to `ended`",
                        source.name, spec.origin
                    )
                })?;
            Some(DeletedMarker {
                column: column.clone(),
                status_field,
                ended_code,
            })
        }
    };
    let relations = spec
        .and_then(|s| s.relations.as_ref())
        .map(|r| RelationLayout {
            column: r.group.clone(),
            kind_field: r.kind.clone(),
            bsn_field: r.bsn.clone(),
        });
    Ok(SqlPullSettings {
        source: source.name.clone(),
        url,
        view: source.location.clone(),
        id_column: sql.id_column.clone(),
        updated_at_column: sql.updated_at_column.clone(),
        page_size: source.paging.page_size,
        deleted,
        relations,
        timeout: Duration::from_secs(source.limits.timeout_secs.max(1)),
        max_record_bytes: source.limits.max_record_bytes,
        cancel: Arc::new(AtomicBool::new(false)),
    })
}

/// Opens a run: the connector, driven by the shared runner (`[source.paging]`: page size,
/// retries with backoff, limits; the cancel flag).
pub fn open(cx: &OpenContext<'_>) -> Result<Option<Opened>, String> {
    let mut settings = settings_for(cx.source)?;
    settings.cancel = cx.cancel.clone();
    let connector = SqlPull::new(settings)?;
    Ok(Some(super::paged::open_paged(cx, connector)))
}

#[cfg(test)]
mod tests;
