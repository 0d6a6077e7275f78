//! The simulated supplier databases of the SQL sources: **okc-4** (an OKC system whose
//! supplier offers a view) and **RIS** (the case registration system, which carries household
//! relations). SQLite by default; PostgreSQL or MariaDB/MySQL given a URL
//! (`matchpoint sandbox --supplier-db URL`). The layout is documented in
//! `schemas/formats/sql-pull.md`.
//!
//! Both are filled from [`crate::generate::feed`], the same seeded population as every other
//! source (okc-4 and RIS each know their own share of the households). Generations model the
//! nights: [`SupplierDb::create`] writes generation 0, each [`SupplierDb::advance`] the next
//! one — new rows, revised rows and ended rows, each with a later `updated_at`, and in okc-4
//! some ended rows are *deleted* instead (the soft-delete column `verwijderd`), so an
//! incremental sync has something to do. Table and view names start with a prefix, so tests
//! can share one server.
//!
//! | object | okc-4 | RIS |
//! |---|---|---|
//! | table | `{p}okc4_trajecten` | `{p}ris_zaken`, `{p}ris_gezinsleden` |
//! | view Matchpoint reads | `{p}matchpoint_okc4` | `{p}matchpoint_ris` (relations as `rol:BSN\|…`) |
//! | keyset | `gewijzigd_op`, `id` | `laatst_gewijzigd`, `zaaknummer` |

use chrono::NaiveDate;

use crate::generate::feed::{Cursor, Feed, FeedRecord};
use crate::sources::sql_pull::{Dialect, SqlConn, redact};

/// Why the supplier database could not be set up or changed.
#[derive(Debug, thiserror::Error)]
pub enum SupplierError {
    /// The population could not be generated.
    #[error("cannot generate the supplier data: {0}")]
    Feed(String),
    /// The database failed.
    #[error("supplier database {url}: {message}")]
    Db { url: String, message: String },
    /// The prefix is not a plain identifier.
    #[error("table prefix `{0}` must be letters, digits and '_'")]
    Prefix(String),
}

/// What to simulate.
#[derive(Debug, Clone)]
pub struct SupplierOptions {
    /// Persons in the population (the same number as the other sources).
    pub persons: u64,
    /// Seed of the population.
    pub seed: u64,
    /// Prefix of every table and view (empty for the sandbox; unique per test).
    pub prefix: String,
    /// Share of the households okc-4 knows.
    pub okc4_share: f64,
    /// Share of the households RIS knows.
    pub ris_share: f64,
    /// Rows per batch: per multi-row `INSERT` (and `DELETE` of the rows it replaces). The
    /// rows are generated batch by batch while they are written, so memory depends on this,
    /// not on the number of persons.
    pub batch_rows: usize,
}

impl Default for SupplierOptions {
    fn default() -> Self {
        SupplierOptions {
            persons: 1000,
            seed: 1,
            prefix: String::new(),
            okc4_share: 0.5,
            ris_share: 0.3,
            batch_rows: DEFAULT_BATCH_ROWS,
        }
    }
}

/// Rows written by one generation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Changes {
    /// Rows that are new.
    pub new: u64,
    /// Rows revised (goal changed).
    pub revised: u64,
    /// Rows ended (status and end date).
    pub ended: u64,
    /// Rows marked deleted (okc-4 only).
    pub deleted: u64,
}

impl Changes {
    /// Every row written.
    pub fn total(&self) -> u64 {
        self.new + self.revised + self.ended + self.deleted
    }
}

/// What one generation wrote, per source.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Generation {
    /// The generation number (0 = first fill).
    pub number: u32,
    /// okc-4 rows written.
    pub okc4: Changes,
    /// RIS cases written.
    pub ris: Changes,
}

/// How far writing a generation has got, after each batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress<'a> {
    /// The source being written: `okc-4` or `ris`.
    pub source: &'a str,
    /// Rows of this source written so far in this generation.
    pub rows: u64,
    /// Rows this source will write in this generation, when known without a walk of the
    /// feed (generation 0).
    pub total: Option<u64>,
    /// Whether this source is done (reported once more after its last batch).
    pub done: bool,
}

/// Called after every batch written (the CLI's progress display).
pub type Report = Box<dyn FnMut(Progress<'_>) + Send>;

/// One simulated supplier database.
pub struct SupplierDb {
    url: String,
    conn: SqlConn,
    prefix: String,
    okc4: Feed,
    ris: Feed,
    generation: u32,
    batch_rows: usize,
    report: Option<Report>,
}

/// Rows per batch unless the options say otherwise: a multi-row INSERT of 5,000 rows is
/// about 2 MB of SQL (well under MariaDB's default `max_allowed_packet` of 16 MB).
pub const DEFAULT_BATCH_ROWS: usize = 5_000;

impl SupplierDb {
    /// Connects, (re)creates the tables and views and writes generation 0.
    pub async fn create(
        url: &str,
        opts: &SupplierOptions,
    ) -> Result<(SupplierDb, Generation), SupplierError> {
        Self::create_reporting(url, opts, None).await
    }

    /// [`SupplierDb::create`], calling `report` after every batch written.
    pub async fn create_reporting(
        url: &str,
        opts: &SupplierOptions,
        report: Option<Report>,
    ) -> Result<(SupplierDb, Generation), SupplierError> {
        let mut db = Self::connect(url, opts).await?;
        db.report = report;
        db.drop_objects().await?;
        db.create_objects().await?;
        let g = db.write_generation(0, None).await?;
        Ok((db, g))
    }

    /// Connects to a database made by [`SupplierDb::create`] with the same options and reads
    /// which generation it holds.
    pub async fn open(url: &str, opts: &SupplierOptions) -> Result<SupplierDb, SupplierError> {
        let mut db = Self::connect(url, opts).await?;
        let sql = format!("SELECT generatie FROM {}sim_meta", db.prefix);
        let g = db.scalar(sql).await?;
        db.generation = u32::try_from(g).unwrap_or(0);
        Ok(db)
    }

    async fn connect(url: &str, opts: &SupplierOptions) -> Result<SupplierDb, SupplierError> {
        if !opts
            .prefix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return Err(SupplierError::Prefix(opts.prefix.clone()));
        }
        if opts.batch_rows == 0 {
            return Err(SupplierError::Feed(
                "the batch size must be at least one row".into(),
            ));
        }
        let okc4 = Feed::build("okc-4", "OKC4-", opts.persons, opts.seed, opts.okc4_share)
            .map_err(SupplierError::Feed)?;
        let ris = Feed::build("ris", "RIS-", opts.persons, opts.seed, opts.ris_share)
            .map_err(SupplierError::Feed)?;
        let conn = SqlConn::connect(url, true)
            .await
            .map_err(|e| SupplierError::Db {
                url: redact(url),
                message: e.to_string(),
            })?;
        Ok(SupplierDb {
            url: url.to_owned(),
            conn,
            prefix: opts.prefix.clone(),
            okc4,
            ris,
            generation: 0,
            batch_rows: opts.batch_rows,
            report: None,
        })
    }

    /// Calls `report` after every batch that [`SupplierDb::advance`] writes.
    pub fn set_report(&mut self, report: Option<Report>) {
        self.report = report;
    }

    /// The generation the database holds.
    pub fn generation(&self) -> u32 {
        self.generation
    }

    /// The dialect of the database.
    pub fn dialect(&self) -> Dialect {
        self.conn.dialect()
    }

    /// The okc-4 view Matchpoint reads.
    pub fn okc4_view(&self) -> String {
        format!("{}matchpoint_okc4", self.prefix)
    }

    /// The RIS view Matchpoint reads.
    pub fn ris_view(&self) -> String {
        format!("{}matchpoint_ris", self.prefix)
    }

    /// Writes the next generation: new, revised, ended (and deleted) rows.
    pub async fn advance(&mut self) -> Result<Generation, SupplierError> {
        let next = self.generation + 1;
        self.write_generation(next, Some(self.generation)).await
    }

    /// Rows in the okc-4 view and the RIS view, as the database counts them.
    pub async fn row_counts(&mut self) -> Result<(u64, u64), SupplierError> {
        let a = self
            .scalar(format!("SELECT COUNT(*) FROM {}", self.okc4_view()))
            .await?;
        let b = self
            .scalar(format!("SELECT COUNT(*) FROM {}", self.ris_view()))
            .await?;
        Ok((a.max(0) as u64, b.max(0) as u64))
    }

    /// Runs a statement (tests use it to break and repair the views).
    pub async fn execute(&mut self, sql: String) -> Result<(), SupplierError> {
        let url = redact(&self.url);
        self.conn.execute(sql).await.map_err(|e| SupplierError::Db {
            url,
            message: e.to_string(),
        })
    }

    /// Drops every table and view (tests clean up with it).
    pub async fn drop_objects(&mut self) -> Result<(), SupplierError> {
        let p = self.prefix.clone();
        for v in ["matchpoint_okc4", "matchpoint_ris"] {
            self.execute(format!("DROP VIEW IF EXISTS {p}{v}")).await?;
        }
        for t in ["okc4_trajecten", "ris_gezinsleden", "ris_zaken", "sim_meta"] {
            self.execute(format!("DROP TABLE IF EXISTS {p}{t}")).await?;
        }
        Ok(())
    }

    /// (Re)creates the okc-4 view (after a test dropped it).
    pub async fn create_okc4_view(&mut self) -> Result<(), SupplierError> {
        let p = self.prefix.clone();
        self.execute(format!(
            "CREATE VIEW {p}matchpoint_okc4 AS SELECT id, bsn, geboortedatum, instelling, team, \
             domein, doel, contactpersoon, functie, telefoon, email, startdatum, einddatum, \
             status, regisseur, verwijderd, gewijzigd_op FROM {p}okc4_trajecten"
        ))
        .await
    }

    /// (Re)creates the RIS view (after a test or the `missing-view` fault dropped it).
    pub async fn create_ris_view(&mut self) -> Result<(), SupplierError> {
        let p = self.prefix.clone();
        let agg = match self.dialect() {
            Dialect::Postgres => "string_agg(g.rol || ':' || g.bsn, '|' ORDER BY g.bsn)",
            Dialect::MySql => {
                "GROUP_CONCAT(CONCAT(g.rol, ':', g.bsn) ORDER BY g.bsn SEPARATOR '|')"
            }
            Dialect::Sqlite => "group_concat(g.rol || ':' || g.bsn, '|')",
        };
        self.execute(format!(
            "CREATE VIEW {p}matchpoint_ris AS SELECT z.zaaknummer, z.bsn, z.geboortedatum, \
             z.afdeling, z.regisseur_naam, z.regisseur_functie, z.regisseur_telefoon, \
             z.regisseur_email, z.leefgebied, z.doel, z.begindatum, z.einddatum, z.zaakstatus, \
             z.laatst_gewijzigd, (SELECT {agg} FROM {p}ris_gezinsleden g \
             WHERE g.zaaknummer = z.zaaknummer) AS relaties FROM {p}ris_zaken z"
        ))
        .await
    }

    /// Gives the rows the current generation wrote (all rows of generation 0) in the view of
    /// `source` (`okc-4` or `ris`) that `pick(record id)` picks a life domain no mapping
    /// knows, so they go to quarantine (the `malformed` fault). Returns the rows changed.
    pub async fn corrupt(
        &mut self,
        source: &str,
        pick: &(dyn Fn(&str) -> bool + Sync),
    ) -> Result<u64, SupplierError> {
        let g = self.generation;
        let since = g.checked_sub(1);
        let ris = source == "ris";
        let (table, key, column, value) = if ris {
            ("ris_zaken", "zaaknummer", "leefgebied", "onbekend")
        } else {
            ("okc4_trajecten", "id", "domein", "ONB")
        };
        let dialect = self.conn.dialect();
        let p = self.prefix.clone();
        let mut batches = Batches::new(g, since, self.batch_rows);
        let mut changed = 0u64;
        loop {
            let feed = if ris { &self.ris } else { &self.okc4 };
            let Some(rows) = batches.next(feed) else {
                break;
            };
            let ids: Vec<String> = rows
                .iter()
                .filter(|r| pick(&r.id))
                .map(|r| lit(&r.id, dialect))
                .collect();
            drop(rows);
            if ids.is_empty() {
                continue;
            }
            changed += ids.len() as u64;
            self.execute(format!(
                "UPDATE {p}{table} SET {column} = '{value}' WHERE {key} IN ({})",
                ids.join(", ")
            ))
            .await?;
        }
        Ok(changed)
    }

    /// Closes the connection.
    pub async fn close(self) -> Result<(), SupplierError> {
        let url = redact(&self.url);
        self.conn.close().await.map_err(|e| SupplierError::Db {
            url,
            message: e.to_string(),
        })
    }

    async fn scalar(&mut self, sql: String) -> Result<i64, SupplierError> {
        let url = redact(&self.url);
        let q = sqlx::AssertSqlSafe(sql);
        let r = match &mut self.conn {
            SqlConn::Postgres(c) => sqlx::query_scalar::<_, i64>(q).fetch_one(c).await,
            SqlConn::MySql(c) => sqlx::query_scalar::<_, i64>(q).fetch_one(c).await,
            SqlConn::Sqlite(c) => sqlx::query_scalar::<_, i64>(q).fetch_one(c).await,
        };
        r.map_err(|e| SupplierError::Db {
            url,
            message: e.to_string(),
        })
    }

    async fn create_objects(&mut self) -> Result<(), SupplierError> {
        let p = self.prefix.clone();
        let ts = match self.dialect() {
            Dialect::Postgres => "TIMESTAMP(6)",
            Dialect::MySql => "DATETIME(6)",
            Dialect::Sqlite => "TEXT",
        };
        let text = |n: u32| format!("VARCHAR({n})");
        self.execute(format!(
            "CREATE TABLE {p}sim_meta (generatie BIGINT NOT NULL)"
        ))
        .await?;
        self.execute(format!("INSERT INTO {p}sim_meta (generatie) VALUES (0)"))
            .await?;
        self.execute(format!(
            "CREATE TABLE {p}okc4_trajecten (id {id} NOT NULL PRIMARY KEY, bsn {bsn} NOT NULL, \
             geboortedatum DATE, instelling {org}, team {team}, domein {dom}, doel {doel}, \
             contactpersoon {naam}, functie {naam}, telefoon {tel}, email {naam}, \
             startdatum DATE, einddatum DATE, status {st}, regisseur BOOLEAN NOT NULL, \
             verwijderd BOOLEAN NOT NULL, gewijzigd_op {ts} NOT NULL)",
            id = text(20),
            bsn = text(9),
            org = text(40),
            team = text(80),
            dom = text(8),
            doel = text(200),
            naam = text(120),
            tel = text(20),
            st = text(2),
        ))
        .await?;
        self.execute(format!(
            "CREATE INDEX {p}okc4_keyset ON {p}okc4_trajecten (gewijzigd_op, id)"
        ))
        .await?;
        self.create_okc4_view().await?;
        self.execute(format!(
            "CREATE TABLE {p}ris_zaken (zaaknummer {id} NOT NULL PRIMARY KEY, bsn {bsn} NOT NULL, \
             geboortedatum DATE, afdeling {org}, regisseur_naam {naam}, regisseur_functie {naam}, \
             regisseur_telefoon {tel}, regisseur_email {naam}, leefgebied {lg}, doel {doel}, \
             begindatum DATE, einddatum DATE, zaakstatus {lg}, laatst_gewijzigd {ts} NOT NULL)",
            id = text(20),
            bsn = text(9),
            org = text(40),
            naam = text(120),
            tel = text(20),
            lg = text(24),
            doel = text(200),
        ))
        .await?;
        self.execute(format!(
            "CREATE INDEX {p}ris_keyset ON {p}ris_zaken (laatst_gewijzigd, zaaknummer)"
        ))
        .await?;
        self.execute(format!(
            "CREATE TABLE {p}ris_gezinsleden (zaaknummer {id} NOT NULL, bsn {bsn} NOT NULL, \
             rol {rol} NOT NULL)",
            id = text(20),
            bsn = text(9),
            rol = text(12),
        ))
        .await?;
        self.execute(format!(
            "CREATE INDEX {p}ris_leden_zaak ON {p}ris_gezinsleden (zaaknummer)"
        ))
        .await?;
        self.create_ris_view().await
    }

    /// Writes the rows of generation `g` touched after `since` (all of generation 0 when
    /// `since` is `None`) in one transaction, batch by batch as the feeds generate them.
    async fn write_generation(
        &mut self,
        g: u32,
        since: Option<u32>,
    ) -> Result<Generation, SupplierError> {
        self.execute("BEGIN".into()).await?;
        let written = match self.write_rows(g, since).await {
            Ok(w) => w,
            Err(e) => {
                // Best effort: the error that matters is the first one.
                let _ = self.execute("ROLLBACK".into()).await;
                return Err(e);
            }
        };
        self.execute("COMMIT".into()).await?;
        self.generation = g;
        Ok(written)
    }

    async fn write_rows(
        &mut self,
        g: u32,
        since: Option<u32>,
    ) -> Result<Generation, SupplierError> {
        let okc4 = self.write_okc4(g, since).await?;
        let ris = self.write_ris(g, since).await?;
        let p = self.prefix.clone();
        self.execute(format!("UPDATE {p}sim_meta SET generatie = {g}"))
            .await?;
        Ok(Generation {
            number: g,
            okc4,
            ris,
        })
    }

    /// The okc-4 rows of generation `g`: per batch, the rows they replace are deleted (not
    /// in generation 0: the tables are new) and the batch is inserted with one statement.
    async fn write_okc4(&mut self, g: u32, since: Option<u32>) -> Result<Changes, SupplierError> {
        let dialect = self.dialect();
        let table = format!("{}okc4_trajecten", self.prefix);
        let day = self.okc4.day(g);
        let total = since
            .is_none()
            .then(|| self.okc4.count_changed(g, None) as u64);
        let mut changes = Changes::default();
        let mut batches = Batches::new(g, since, self.batch_rows);
        let mut i = 0usize;
        while let Some(rows) = batches.next(&self.okc4) {
            let mut insert = format!("INSERT INTO {table} ({OKC4_COLUMNS}) VALUES ");
            let mut ids = String::new();
            for (n, r) in rows.iter().enumerate() {
                let deleted = is_deleted(r, g);
                count(&mut changes, r, g, day, deleted);
                if n > 0 {
                    insert.push_str(", ");
                    ids.push_str(", ");
                }
                insert.push_str(&okc4_values(r, deleted, &timestamp(day, i), dialect));
                ids.push_str(&lit(&r.id, dialect));
                i += 1;
            }
            drop(rows);
            if since.is_some() {
                self.execute(format!("DELETE FROM {table} WHERE id IN ({ids})"))
                    .await?;
            }
            self.execute(insert).await?;
            self.report("okc-4", i as u64, total, false);
        }
        self.report("okc-4", i as u64, total, true);
        Ok(changes)
    }

    /// The RIS cases of generation `g` and their household members, batch by batch like
    /// [`SupplierDb::write_okc4`].
    async fn write_ris(&mut self, g: u32, since: Option<u32>) -> Result<Changes, SupplierError> {
        let dialect = self.dialect();
        let cases = format!("{}ris_zaken", self.prefix);
        let members_table = format!("{}ris_gezinsleden", self.prefix);
        let day = self.ris.day(g);
        let total = since
            .is_none()
            .then(|| self.ris.count_changed(g, None) as u64);
        let mut changes = Changes::default();
        let mut batches = Batches::new(g, since, self.batch_rows);
        let mut i = 0usize;
        while let Some(rows) = batches.next(&self.ris) {
            let mut insert = format!("INSERT INTO {cases} ({RIS_COLUMNS}) VALUES ");
            let mut members = format!("INSERT INTO {members_table} (zaaknummer, bsn, rol) VALUES ");
            let mut any_member = false;
            let mut ids = String::new();
            for (n, r) in rows.iter().enumerate() {
                count(&mut changes, r, g, day, false);
                if n > 0 {
                    insert.push_str(", ");
                    ids.push_str(", ");
                }
                insert.push_str(&ris_values(r, &timestamp(day, i), dialect));
                ids.push_str(&lit(&r.id, dialect));
                for (bsn, kind) in &r.relations {
                    let rol = match *kind {
                        "parent" => "ouder",
                        "child" => "kind",
                        _ => "partner",
                    };
                    if any_member {
                        members.push_str(", ");
                    }
                    any_member = true;
                    members.push_str(&format!(
                        "({}, {}, {})",
                        lit(&r.id, dialect),
                        lit(bsn, dialect),
                        lit(rol, dialect)
                    ));
                }
                i += 1;
            }
            drop(rows);
            if since.is_some() {
                self.execute(format!("DELETE FROM {cases} WHERE zaaknummer IN ({ids})"))
                    .await?;
            }
            self.execute(insert).await?;
            if since.is_some() {
                self.execute(format!(
                    "DELETE FROM {members_table} WHERE zaaknummer IN ({ids})"
                ))
                .await?;
            }
            if any_member {
                self.execute(members).await?;
            }
            self.report("ris", i as u64, total, false);
        }
        self.report("ris", i as u64, total, true);
        Ok(changes)
    }

    fn report(&mut self, source: &str, rows: u64, total: Option<u64>, done: bool) {
        if let Some(report) = &mut self.report {
            report(Progress {
                source,
                rows,
                total,
                done,
            });
        }
    }
}

const OKC4_COLUMNS: &str = "id, bsn, geboortedatum, instelling, team, domein, doel, \
    contactpersoon, functie, telefoon, email, startdatum, einddatum, status, regisseur, \
    verwijderd, gewijzigd_op";

const RIS_COLUMNS: &str = "zaaknummer, bsn, geboortedatum, afdeling, regisseur_naam, \
    regisseur_functie, regisseur_telefoon, regisseur_email, leefgebied, doel, begindatum, \
    einddatum, zaakstatus, laatst_gewijzigd";

/// The rows of one generation in batches: the feed's pages, continued from a cursor so that
/// each household is generated once. Holds one batch at a time, never the generation.
struct Batches {
    g: u32,
    since: Option<u32>,
    size: usize,
    from: usize,
    cursor: Option<Cursor>,
    done: bool,
}

impl Batches {
    fn new(g: u32, since: Option<u32>, size: usize) -> Batches {
        Batches {
            g,
            since,
            size: size.max(1),
            from: 0,
            cursor: None,
            done: false,
        }
    }

    /// The next batch of `feed` (always the same feed); `None` after the last.
    fn next(&mut self, feed: &Feed) -> Option<Vec<FeedRecord>> {
        if self.done {
            return None;
        }
        let (rows, more, cursor) =
            feed.page(self.cursor.take(), self.from, self.g, self.since, self.size);
        self.cursor = cursor;
        self.done = !more;
        match rows.last() {
            Some(last) => self.from = feed.index_after(&last.id),
            None => self.done = true,
        }
        (!rows.is_empty()).then_some(rows)
    }
}

/// Some records ended in a later generation are deleted in okc-4 instead (soft delete).
fn is_deleted(r: &FeedRecord, g: u32) -> bool {
    r.status == "ended"
        && r.touched == g
        && r.born < g
        && r.id
            .rsplit('-')
            .next()
            .and_then(|n| n.parse::<u64>().ok())
            .is_some_and(|n| n % 3 == 0)
}

/// Counts one written row: new, deleted, ended in this generation (the feed ends a record
/// on the generation's day) or revised.
fn count(c: &mut Changes, r: &FeedRecord, g: u32, day: NaiveDate, deleted: bool) {
    if r.born == g {
        c.new += 1;
    } else if deleted {
        c.deleted += 1;
    } else if r.status == "ended" && r.end == Some(day.max(r.start)) {
        c.ended += 1;
    } else {
        c.revised += 1;
    }
}

/// `updated_at` of the `i`-th row a generation writes: that day from 02:00, a second per
/// 50 rows (so rows share timestamps and the id decides), with microseconds.
fn timestamp(day: NaiveDate, i: usize) -> String {
    let s = (i / 50) as u64 % 20_000;
    let micros = (i as u64 * 7919) % 1_000_000;
    format!(
        "{} {:02}:{:02}:{:02}.{micros:06}",
        day.format("%Y-%m-%d"),
        2 + s / 3600,
        (s / 60) % 60,
        s % 60
    )
}

/// A SQL string literal.
fn lit(v: &str, dialect: Dialect) -> String {
    let mut s = v.replace('\'', "''");
    if dialect == Dialect::MySql {
        s = s.replace('\\', "\\\\");
    }
    format!("'{s}'")
}

fn opt_lit(v: Option<&str>, dialect: Dialect) -> String {
    v.map_or_else(|| "NULL".into(), |v| lit(v, dialect))
}

fn date(d: NaiveDate) -> String {
    format!("'{}'", d.format("%Y-%m-%d"))
}

fn boolean(b: bool) -> &'static str {
    if b { "TRUE" } else { "FALSE" }
}

fn okc4_values(r: &FeedRecord, deleted: bool, ts: &str, d: Dialect) -> String {
    let status = match (deleted, r.status) {
        // A deleted row keeps its last status; the deletion marker ends it.
        (true, _) => "A",
        (false, "planned") => "P",
        (false, "ended") => "B",
        _ => "A",
    };
    let end = if deleted { None } else { r.end };
    let c = r.contact.as_ref();
    format!(
        "({}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {})",
        lit(&r.id, d),
        lit(&r.bsn, d),
        date(r.birth),
        lit(&r.org, d),
        lit(&r.team, d),
        lit(r.domain, d),
        lit(&r.goal, d),
        opt_lit(c.map(|c| c.0.as_str()), d),
        opt_lit(c.map(|c| c.1.as_str()), d),
        opt_lit(c.map(|c| c.2.as_str()), d),
        opt_lit(c.map(|c| c.3.as_str()), d),
        date(r.start),
        end.map_or_else(|| "NULL".into(), date),
        lit(status, d),
        boolean(r.coordinator),
        boolean(deleted),
        lit(ts, d),
    )
}

/// RIS names life domains in words.
fn ris_domain(okc2_code: &str) -> &'static str {
    match okc2_code {
        "JGZ" => "jeugdgezondheid",
        "OPV" => "opvoeding",
        "JH" => "jeugdhulp",
        "WI" => "werk_inkomen",
        "SHV" => "schulden",
        "WON" => "wonen",
        "GGZ" => "psychisch",
        "VSL" => "verslaving",
        "OND" => "onderwijs",
        "VEI" => "veiligheid",
        "WMO" => "zorg_ondersteuning",
        _ => "lichamelijk",
    }
}

fn ris_values(r: &FeedRecord, ts: &str, d: Dialect) -> String {
    let status = match r.status {
        "planned" => "aangemeld",
        "ended" => "afgesloten",
        _ => "lopend",
    };
    let c = r.contact.as_ref();
    format!(
        "({}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {})",
        lit(&r.id, d),
        lit(&r.bsn, d),
        date(r.birth),
        lit(&r.org, d),
        opt_lit(c.map(|c| c.0.as_str()), d),
        opt_lit(c.map(|c| c.1.as_str()), d),
        opt_lit(c.map(|c| c.2.as_str()), d),
        opt_lit(c.map(|c| c.3.as_str()), d),
        lit(ris_domain(r.domain), d),
        lit(&r.goal, d),
        date(r.start),
        r.end.map_or_else(|| "NULL".into(), date),
        lit(status, d),
        lit(ts, d),
    )
}
