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

use crate::generate::feed::{Feed, FeedRecord};
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
}

impl Default for SupplierOptions {
    fn default() -> Self {
        SupplierOptions {
            persons: 1000,
            seed: 1,
            prefix: String::new(),
            okc4_share: 0.5,
            ris_share: 0.3,
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

/// One simulated supplier database.
pub struct SupplierDb {
    url: String,
    conn: SqlConn,
    prefix: String,
    okc4: Feed,
    ris: Feed,
    generation: u32,
}

/// Rows per INSERT statement.
const CHUNK: usize = 250;

impl SupplierDb {
    /// Connects, (re)creates the tables and views and writes generation 0.
    pub async fn create(
        url: &str,
        opts: &SupplierOptions,
    ) -> Result<(SupplierDb, Generation), SupplierError> {
        let mut db = Self::connect(url, opts).await?;
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
        })
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
        let (feed, table, key, column, value) = if source == "ris" {
            (
                &self.ris,
                "ris_zaken",
                "zaaknummer",
                "leefgebied",
                "onbekend",
            )
        } else {
            (&self.okc4, "okc4_trajecten", "id", "domein", "ONB")
        };
        let dialect = self.conn.dialect();
        let ids: Vec<String> = feed
            .changed_since(g, since)
            .filter(|r| pick(&r.id))
            .map(|r| lit(&r.id, dialect))
            .collect();
        let p = self.prefix.clone();
        for chunk in ids.chunks(CHUNK) {
            self.execute(format!(
                "UPDATE {p}{table} SET {column} = '{value}' WHERE {key} IN ({})",
                chunk.join(", ")
            ))
            .await?;
        }
        Ok(ids.len() as u64)
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
    /// `since` is `None`).
    async fn write_generation(
        &mut self,
        g: u32,
        since: Option<u32>,
    ) -> Result<Generation, SupplierError> {
        let p = self.prefix.clone();
        let dialect = self.dialect();
        let mut out = Generation {
            number: g,
            ..Generation::default()
        };
        self.execute("BEGIN".into()).await?;
        // okc-4
        let rows: Vec<FeedRecord> = self.okc4.changed_since(g, since).collect();
        let day = self.okc4.day(g);
        let mut values = Vec::with_capacity(rows.len());
        for (i, r) in rows.iter().enumerate() {
            let deleted = is_deleted(r, g);
            count(&mut out.okc4, r, g, day, deleted);
            values.push(okc4_values(r, deleted, &timestamp(day, i), dialect));
        }
        let ids: Vec<String> = rows.iter().map(|r| lit(&r.id, dialect)).collect();
        self.replace(
            &format!("{p}okc4_trajecten"),
            "id",
            &ids,
            "id, bsn, geboortedatum, instelling, team, domein, doel, contactpersoon, functie, \
             telefoon, email, startdatum, einddatum, status, regisseur, verwijderd, gewijzigd_op",
            &values,
        )
        .await?;
        // RIS
        let rows: Vec<FeedRecord> = self.ris.changed_since(g, since).collect();
        let day = self.ris.day(g);
        let mut values = Vec::with_capacity(rows.len());
        let mut members = Vec::new();
        for (i, r) in rows.iter().enumerate() {
            count(&mut out.ris, r, g, day, false);
            values.push(ris_values(r, &timestamp(day, i), dialect));
            for (bsn, kind) in &r.relations {
                let rol = match *kind {
                    "parent" => "ouder",
                    "child" => "kind",
                    _ => "partner",
                };
                members.push(format!(
                    "({}, {}, {})",
                    lit(&r.id, dialect),
                    lit(bsn, dialect),
                    lit(rol, dialect)
                ));
            }
        }
        let ids: Vec<String> = rows.iter().map(|r| lit(&r.id, dialect)).collect();
        self.replace(
            &format!("{p}ris_zaken"),
            "zaaknummer",
            &ids,
            "zaaknummer, bsn, geboortedatum, afdeling, regisseur_naam, regisseur_functie, \
             regisseur_telefoon, regisseur_email, leefgebied, doel, begindatum, einddatum, \
             zaakstatus, laatst_gewijzigd",
            &values,
        )
        .await?;
        self.replace(
            &format!("{p}ris_gezinsleden"),
            "zaaknummer",
            &ids,
            "zaaknummer, bsn, rol",
            &members,
        )
        .await?;
        self.execute(format!("UPDATE {p}sim_meta SET generatie = {g}"))
            .await?;
        self.execute("COMMIT".into()).await?;
        self.generation = g;
        Ok(out)
    }

    /// Deletes the rows with `ids` and inserts `values`, in chunks.
    async fn replace(
        &mut self,
        table: &str,
        key: &str,
        ids: &[String],
        columns: &str,
        values: &[String],
    ) -> Result<(), SupplierError> {
        for chunk in ids.chunks(CHUNK) {
            self.execute(format!(
                "DELETE FROM {table} WHERE {key} IN ({})",
                chunk.join(", ")
            ))
            .await?;
        }
        for chunk in values.chunks(CHUNK) {
            self.execute(format!(
                "INSERT INTO {table} ({columns}) VALUES {}",
                chunk.join(", ")
            ))
            .await?;
        }
        Ok(())
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
