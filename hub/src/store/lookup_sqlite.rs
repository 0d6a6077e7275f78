//! SQLite queries for the lookup API (see `lookup.rs`). A child module of `sqlite.rs`.
//!
//! Writes (users) run on the store's connection; lookups run on a small pool of read-only
//! connections ([`Readers`]): in WAL mode readers never wait for the writer, so lookups run
//! in parallel with each other and with a sync's publication.

use rusqlite::{OptionalExtension, params};

use super::{SqliteStore, e, now_text, parse_time};
use crate::store::StoreError;
use rusqlite::Connection;

use crate::store::lookup::{
    HouseholdRows, LookupRow, PersonRelation, QualityRow, SourceFreshness, inverse_kind, role_of,
};
use crate::users::{Role, User};

/// Most idle read-only connections kept.
const MAX_IDLE_READERS: usize = 8;

/// A pool of read-only connections to the store's file, opened on demand.
pub(super) struct Readers {
    path: std::path::PathBuf,
    idle: std::sync::Mutex<Vec<Connection>>,
}

impl Readers {
    pub(super) fn new(path: &std::path::Path) -> Readers {
        Readers {
            path: path.to_path_buf(),
            idle: std::sync::Mutex::new(Vec::new()),
        }
    }

    fn take(&self) -> Result<Connection, StoreError> {
        if let Some(c) = self.idle.lock().ok().and_then(|mut v| v.pop()) {
            return Ok(c);
        }
        let c = Connection::open_with_flags(
            &self.path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(e("open reader"))?;
        c.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(e("open reader"))?;
        Ok(c)
    }

    fn give_back(&self, c: Connection) {
        if let Ok(mut v) = self.idle.lock()
            && v.len() < MAX_IDLE_READERS
        {
            v.push(c);
        }
    }
}

const USER_COLUMNS: &str = "id, name, role, organisation, disabled, created_at";

fn user_row(
    r: &rusqlite::Row<'_>,
) -> rusqlite::Result<(i64, String, String, String, bool, String)> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
    ))
}

fn to_user(
    (id, name, role, organisation, disabled, created): (i64, String, String, String, bool, String),
) -> Result<User, StoreError> {
    Ok(User {
        id,
        name,
        role: role_of(&role)?,
        organisation,
        disabled,
        created_at: parse_time(&created),
    })
}

impl SqliteStore {
    /// Runs `f` on a read-only connection on a blocking thread.
    async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let conn = inner.readers.take()?;
            let out = f(&conn);
            // A connection that failed is dropped rather than reused.
            if out.is_ok() {
                inner.readers.give_back(conn);
            }
            out
        })
        .await
        .map_err(|err| StoreError::db("task", err))?
    }

    pub(in crate::store) async fn add_user(
        &self,
        name: &str,
        role: Role,
        organisation: &str,
        token_hash: [u8; 32],
    ) -> Result<i64, StoreError> {
        let (name, organisation) = (name.to_owned(), organisation.to_owned());
        self.with(move |conn, _| {
            conn.execute(
                "INSERT INTO users (name, role, organisation, disabled, token_hash, created_at)
                 VALUES (?1, ?2, ?3, 0, ?4, ?5)",
                params![
                    name,
                    role.as_str(),
                    organisation,
                    &token_hash[..],
                    now_text()
                ],
            )
            .map_err(e("add user"))?;
            Ok(conn.last_insert_rowid())
        })
        .await
    }

    pub(in crate::store) async fn users(&self) -> Result<Vec<User>, StoreError> {
        self.with(move |conn, _| {
            let mut st = conn
                .prepare(&format!("SELECT {USER_COLUMNS} FROM users ORDER BY id"))
                .map_err(e("read users"))?;
            let rows = st
                .query_map([], user_row)
                .map_err(e("read users"))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(e("read users"))?;
            rows.into_iter().map(to_user).collect()
        })
        .await
    }

    pub(in crate::store) async fn set_user_disabled(
        &self,
        id: i64,
        disabled: bool,
    ) -> Result<bool, StoreError> {
        self.with(move |conn, _| {
            let n = conn
                .execute(
                    "UPDATE users SET disabled = ?2 WHERE id = ?1",
                    params![id, disabled],
                )
                .map_err(e("disable user"))?;
            Ok(n == 1)
        })
        .await
    }

    pub(in crate::store) async fn user_by_token(
        &self,
        token_hash: [u8; 32],
    ) -> Result<Option<User>, StoreError> {
        self.read(move |conn| {
            let row = conn
                .query_row(
                    &format!("SELECT {USER_COLUMNS} FROM users WHERE token_hash = ?1"),
                    [&token_hash[..]],
                    user_row,
                )
                .optional()
                .map_err(e("read users"))?;
            row.map(to_user).transpose()
        })
        .await
    }

    pub(in crate::store) async fn person_involvements(
        &self,
        persons: Vec<Vec<u8>>,
    ) -> Result<Vec<LookupRow>, StoreError> {
        self.read(move |conn| involvements_of(conn, &persons)).await
    }

    pub(in crate::store) async fn person_relations(
        &self,
        person: Vec<u8>,
    ) -> Result<Vec<PersonRelation>, StoreError> {
        self.read(move |conn| relations_of(conn, &person)).await
    }

    pub(in crate::store) async fn household_rows(
        &self,
        selves: Vec<Vec<u8>>,
    ) -> Result<HouseholdRows, StoreError> {
        self.read(move |conn| {
            let mut relations = Vec::new();
            for person in &selves {
                relations.extend(relations_of(conn, person)?);
            }
            let mut persons = selves.clone();
            for r in &relations {
                if !persons.contains(&r.other) {
                    persons.push(r.other.clone());
                }
            }
            Ok(HouseholdRows {
                rows: involvements_of(conn, &persons)?,
                relations,
                freshness: freshness(conn)?,
            })
        })
        .await
    }

    pub(in crate::store) async fn source_freshness(
        &self,
    ) -> Result<Vec<SourceFreshness>, StoreError> {
        self.read(freshness).await
    }

    pub(in crate::store) async fn data_quality(
        &self,
        source: Option<&str>,
        limit: u64,
    ) -> Result<Vec<QualityRow>, StoreError> {
        let source = source.map(str::to_owned);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.with(move |conn, _| {
            let mut st = conn
                .prepare(
                    "SELECT r.id, r.source, r.started_at, r.status, r.read, r.rejected,
                       (SELECT count(*) FROM quarantine q WHERE q.run_id = r.id
                          AND q.reason_code = 'invalid_bsn'),
                       (SELECT count(*) FROM quarantine q WHERE q.run_id = r.id
                          AND q.reason_code = 'missing_field' AND lower(q.field) LIKE '%contact%'),
                       (SELECT count(*) FROM quarantine q WHERE q.run_id = r.id
                          AND q.reason_code = 'unknown_code')
                     FROM runs r WHERE (?1 IS NULL OR r.source = ?1)
                     ORDER BY r.id DESC LIMIT ?2",
                )
                .map_err(e("data quality"))?;
            st.query_map(params![source, limit], |r| {
                Ok(QualityRow {
                    run_id: r.get(0)?,
                    source: r.get(1)?,
                    started_at: parse_time(&r.get::<_, String>(2)?),
                    status: r.get(3)?,
                    read: r.get::<_, i64>(4)?.max(0) as u64,
                    rejected: r.get::<_, i64>(5)?.max(0) as u64,
                    invalid_bsn: r.get::<_, i64>(6)?.max(0) as u64,
                    missing_contact: r.get::<_, i64>(7)?.max(0) as u64,
                    unknown_code: r.get::<_, i64>(8)?.max(0) as u64,
                })
            })
            .map_err(e("data quality"))?
            .collect::<Result<_, _>>()
            .map_err(e("data quality"))
        })
        .await
    }

    pub(in crate::store) async fn ping(&self) -> Result<(), StoreError> {
        self.with(move |conn, _| {
            conn.query_row("SELECT 1", [], |_| Ok(()))
                .map_err(e("ping"))
        })
        .await
    }
}

fn involvements_of(conn: &Connection, persons: &[Vec<u8>]) -> Result<Vec<LookupRow>, StoreError> {
    let mut st = conn
        .prepare_cached(
            "SELECT source, person, organisation_code, organisation_name, team,
                    life_domain, goal, contact_name, contact_role, contact_phone,
                    contact_email, start_date, end_date, status, coordinator,
                    sensitive, shielded, end_reason_code, end_reason
             FROM involvements WHERE person = ?1
             ORDER BY source, source_record_id",
        )
        .map_err(e("lookup"))?;
    let mut out = Vec::new();
    for p in persons {
        let rows = st
            .query_map([p], |r| {
                Ok(LookupRow {
                    source: r.get(0)?,
                    person: r.get(1)?,
                    organisation_code: r.get(2)?,
                    organisation_name: r.get(3)?,
                    team: r.get(4)?,
                    life_domain: r.get(5)?,
                    goal: r.get(6)?,
                    contact_name: r.get(7)?,
                    contact_role: r.get(8)?,
                    contact_phone: r.get(9)?,
                    contact_email: r.get(10)?,
                    start_date: r.get(11)?,
                    end_date: r.get(12)?,
                    status: r.get(13)?,
                    coordinator: r.get(14)?,
                    sensitive: r.get(15)?,
                    shielded: r.get(16)?,
                    end_reason_code: r.get(17)?,
                    end_reason: r.get(18)?,
                })
            })
            .map_err(e("lookup"))?;
        for row in rows {
            out.push(row.map_err(e("lookup"))?);
        }
    }
    Ok(out)
}

fn relations_of(conn: &Connection, person: &[u8]) -> Result<Vec<PersonRelation>, StoreError> {
    let mut out = Vec::new();
    {
        // Relations delivered with the person's own records.
        let mut st = conn
            .prepare_cached(
                "SELECT DISTINCT r.kind, r.other FROM involvements i
                 JOIN relations r ON r.source = i.source
                                 AND r.source_record_id = i.source_record_id
                 WHERE i.person = ?1",
            )
            .map_err(e("lookup relations"))?;
        let rows = st
            .query_map([person], |r| Ok((r.get::<_, String>(0)?, r.get(1)?)))
            .map_err(e("lookup relations"))?;
        for row in rows {
            let (kind, other) = row.map_err(e("lookup relations"))?;
            out.push(PersonRelation { kind, other });
        }
    }
    // Relations other persons' records hold towards this person.
    let mut st = conn
        .prepare_cached("SELECT DISTINCT kind, person FROM relations WHERE other = ?1")
        .map_err(e("lookup relations"))?;
    let rows = st
        .query_map([person], |r| Ok((r.get::<_, String>(0)?, r.get(1)?)))
        .map_err(e("lookup relations"))?;
    for row in rows {
        let (kind, other) = row.map_err(e("lookup relations"))?;
        out.push(PersonRelation {
            kind: inverse_kind(&kind).to_owned(),
            other,
        });
    }
    Ok(out)
}

fn freshness(conn: &Connection) -> Result<Vec<SourceFreshness>, StoreError> {
    let mut st = conn
        .prepare_cached("SELECT name, last_success_at FROM sources ORDER BY name")
        .map_err(e("freshness"))?;
    st.query_map([], |r| {
        Ok(SourceFreshness {
            source: r.get(0)?,
            last_success_at: r.get::<_, Option<String>>(1)?.map(|s| parse_time(&s)),
        })
    })
    .map_err(e("freshness"))?
    .collect::<Result<_, _>>()
    .map_err(e("freshness"))
}
