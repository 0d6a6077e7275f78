//! Upgrading a database of an earlier schema version: a version-4 database (before the end
//! reason) migrates to the current version on open, keeps its rows and their hashes, and
//! takes end reasons afterwards. On SQLite always, on PostgreSQL when
//! `MATCHPOINT_TEST_POSTGRES_URL` is set.

use matchpoint_schemas::{EndReason, Involvement};
use sqlx::{AssertSqlSafe, Connection, PgConnection};

use super::tests::{SRC, publish_full, record};
use super::{Store, postgres, sqlite};
use crate::testdb::{self, Kind};

/// The schema version before `Involvement.end_reason`.
const V4: usize = 4;

/// A row as a version-4 build published it.
fn v4_row() -> Involvement {
    let r = record(SRC, 1);
    assert!(r.relations.is_empty() && r.end_reason.is_none());
    r
}

fn build_sqlite_v4(path: &std::path::Path, r: &Involvement) {
    let conn = rusqlite::Connection::open(path).expect("open");
    for (i, sql) in sqlite::MIGRATIONS[..V4].iter().enumerate() {
        conn.execute_batch(sql).expect("migration");
        conn.execute_batch(&format!("PRAGMA user_version = {}", i + 1))
            .expect("version");
    }
    conn.execute(
        "INSERT INTO involvements (source, source_record_id, person, key_id,
           organisation_code, organisation_name, team, life_domain, goal, contact_name,
           contact_role, contact_phone, contact_email, start_date, end_date, status,
           coordinator, sensitive, purge_after, content_hash, first_seen, changed_run)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, NULL, ?15,
                 ?16, ?17, NULL, ?18, '2026-01-01T00:00:00.000Z', 0)",
        rusqlite::params![
            r.source,
            r.source_record_id,
            &r.person.as_bytes()[..],
            r.key_id,
            r.organisation_code,
            r.organisation_name,
            r.team,
            r.life_domain.as_str(),
            r.goal,
            r.contact.name,
            r.contact.role,
            r.contact.phone,
            r.contact.email,
            r.start_date.to_string(),
            r.status.as_str(),
            r.coordinator,
            r.sensitive,
            &r.content_hash()[..],
        ],
    )
    .expect("v4 row");
}

async fn build_postgres_v4(url: &str, r: &Involvement) {
    let mut conn = PgConnection::connect(url).await.expect("connect");
    sqlx::raw_sql(
        "CREATE TABLE matchpoint_schema_version (
           version integer PRIMARY KEY,
           applied_at timestamptz NOT NULL DEFAULT now())",
    )
    .execute(&mut conn)
    .await
    .expect("version table");
    for (i, sql) in postgres::MIGRATIONS[..V4].iter().enumerate() {
        sqlx::raw_sql(AssertSqlSafe(*sql))
            .execute(&mut conn)
            .await
            .expect("migration");
        sqlx::query("INSERT INTO matchpoint_schema_version (version) VALUES ($1)")
            .bind(i32::try_from(i + 1).expect("small"))
            .execute(&mut conn)
            .await
            .expect("version");
    }
    sqlx::query(
        "INSERT INTO involvements (source, source_record_id, person, key_id,
           organisation_code, organisation_name, team, life_domain, goal, contact_name,
           contact_role, contact_phone, contact_email, start_date, end_date, status,
           coordinator, sensitive, purge_after, content_hash, first_seen, changed_run)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, NULL, $15,
                 $16, $17, NULL, $18, now(), 0)",
    )
    .bind(&r.source)
    .bind(&r.source_record_id)
    .bind(&r.person.as_bytes()[..])
    .bind(&r.key_id)
    .bind(&r.organisation_code)
    .bind(&r.organisation_name)
    .bind(&r.team)
    .bind(r.life_domain.as_str())
    .bind(&r.goal)
    .bind(&r.contact.name)
    .bind(&r.contact.role)
    .bind(&r.contact.phone)
    .bind(&r.contact.email)
    .bind(r.start_date)
    .bind(r.status.as_str())
    .bind(r.coordinator)
    .bind(r.sensitive)
    .bind(&r.content_hash()[..])
    .execute(&mut conn)
    .await
    .expect("v4 row");
    let _ = conn.close().await;
}

async fn schema_version(db: &testdb::TestDb) -> usize {
    match &db.kind {
        Kind::Sqlite { path, .. } => {
            let conn = rusqlite::Connection::open(path).expect("open");
            let v: i64 = conn
                .query_row("PRAGMA user_version", [], |r| r.get(0))
                .expect("version");
            usize::try_from(v).expect("positive")
        }
        Kind::Postgres { .. } => {
            let mut conn = PgConnection::connect(&db.url).await.expect("connect");
            let v: i32 = sqlx::query_scalar("SELECT max(version) FROM matchpoint_schema_version")
                .fetch_one(&mut conn)
                .await
                .expect("version");
            let _ = conn.close().await;
            usize::try_from(v).expect("positive")
        }
    }
}

#[tokio::test]
async fn a_version_4_database_migrates_keeps_its_rows_and_takes_end_reasons() {
    assert_eq!(sqlite::MIGRATIONS.len(), postgres::MIGRATIONS.len());
    for db in testdb::targets("migrate_v4").await {
        let r = v4_row();
        match &db.kind {
            Kind::Sqlite { path, .. } => build_sqlite_v4(path, &r),
            Kind::Postgres { .. } => build_postgres_v4(&db.url, &r).await,
        }
        assert_eq!(schema_version(&db).await, V4, "{}", db.name);
        let store = Store::open(&db.url).await.expect("open migrates");
        assert_eq!(
            schema_version(&db).await,
            sqlite::MIGRATIONS.len(),
            "{}",
            db.name
        );
        let rows = store.involvements(SRC).await.expect("rows");
        assert_eq!(rows.len(), 1, "{}", db.name);
        assert_eq!(rows[0].end_reason, None, "{}", db.name);
        assert_eq!(rows[0].content_hash, hex::encode(r.content_hash()));

        // The same record again: its hash is the one a version-4 build stored, so the row is
        // not rewritten.
        let again = publish_full(&store, SRC, std::slice::from_ref(&r)).await;
        assert_eq!(
            (again.counts.unchanged, again.counts.updated),
            (1, 0),
            "{}",
            db.name
        );

        // Ended with a reason: a change, stored and read back.
        let mut ended = r.clone();
        ended.end_date = Some(ended.start_date);
        ended.status = matchpoint_schemas::InvolvementStatus::Ended;
        ended.end_reason = Some(EndReason {
            code: "19".into(),
            description: "Levering volgens plan beeindigd".into(),
        });
        let run = publish_full(&store, SRC, std::slice::from_ref(&ended)).await;
        assert_eq!(run.counts.updated, 1, "{}", db.name);
        let rows = store.involvements(SRC).await.expect("rows");
        assert_eq!(rows[0].end_reason.as_deref(), Some("19"), "{}", db.name);
        let looked = store
            .person_involvements(vec![r.person.as_bytes().to_vec()])
            .await
            .expect("lookup");
        assert_eq!(
            (
                looked[0].end_reason_code.as_deref(),
                looked[0].end_reason.as_deref()
            ),
            (Some("19"), Some("Levering volgens plan beeindigd")),
            "{}",
            db.name
        );

        // Reopening an up-to-date database migrates nothing.
        drop(store);
        let store = Store::open(&db.url).await.expect("reopen");
        assert_eq!(store.involvements(SRC).await.expect("rows").len(), 1);
        drop(store);
        db.drop_database().await;
    }
}

/// A run held (shrink guard) by a build before v5 has a staging table without the end
/// reason: accepting it after the upgrade still publishes.
#[tokio::test]
async fn a_run_held_before_the_upgrade_can_be_accepted_after_it() {
    for db in testdb::targets("held_v4").await {
        let store = Store::open(&db.url).await.expect("open");
        let rs: Vec<Involvement> = (0..10).map(|n| record(SRC, n)).collect();
        publish_full(&store, SRC, &rs).await;
        let held = publish_full(&store, SRC, &rs[..3]).await;
        assert_eq!(held.status, super::RunStatus::Held, "{}", db.name);
        let drop_columns = |s: &str| {
            format!(
                "ALTER TABLE {s} DROP COLUMN end_reason_code; ALTER TABLE {s} DROP COLUMN end_reason"
            )
        };
        match &db.kind {
            Kind::Sqlite { path, .. } => {
                let mut staging = path.as_os_str().to_owned();
                staging.push(".staging");
                let file = std::path::PathBuf::from(staging).join(format!("run-{}.db", held.id));
                let conn = rusqlite::Connection::open(&file).expect("staging file");
                conn.execute_batch(&drop_columns("staging"))
                    .expect("as staged before v5");
            }
            Kind::Postgres { .. } => {
                let mut conn = PgConnection::connect(&db.url).await.expect("connect");
                sqlx::raw_sql(AssertSqlSafe(drop_columns(&format!(
                    "staging_run_{}",
                    held.id
                ))))
                .execute(&mut conn)
                .await
                .expect("as staged before v5");
                let _ = conn.close().await;
            }
        }
        let accepted = store.accept_run(held.id).await.expect("accept");
        assert_eq!(accepted.status, super::RunStatus::Accepted, "{}", db.name);
        let rows = store.involvements(SRC).await.expect("rows");
        assert_eq!(
            rows.iter().filter(|r| r.status != "ended").count(),
            3,
            "{}",
            db.name
        );
        drop(store);
        db.drop_database().await;
    }
}

fn page_size(path: &std::path::Path) -> i64 {
    let conn = rusqlite::Connection::open(path).expect("open");
    conn.query_row("PRAGMA page_size", [], |r| r.get(0))
        .expect("page size")
}

/// New index and staging files get the store's larger pages; a file made with SQLite's
/// default 4 KiB pages keeps them, and a run still stages and publishes into it.
#[tokio::test]
async fn new_sqlite_files_use_large_pages_and_old_files_keep_theirs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fresh = dir.path().join("fresh.db");
    let store = Store::open(&format!("sqlite://{}", fresh.display()))
        .await
        .expect("open");
    assert_eq!(page_size(&fresh), i64::from(sqlite::PAGE_SIZE));
    let run = store
        .begin_run(SRC, super::RunMode::Full)
        .await
        .expect("begin");
    let staging = dir.path().join(format!("fresh.db.staging/run-{run}.db"));
    store
        .stage(run, vec![record(SRC, 1)], Vec::new())
        .await
        .expect("stage");
    assert_eq!(page_size(&staging), i64::from(sqlite::PAGE_SIZE));
    drop(store);

    let old = dir.path().join("old.db");
    build_sqlite_v4(&old, &v4_row());
    assert_eq!(page_size(&old), 4096);
    let store = Store::open(&format!("sqlite://{}", old.display()))
        .await
        .expect("open");
    let rs: Vec<Involvement> = (1..=3).map(|i| record(SRC, i)).collect();
    let run = publish_full(&store, SRC, &rs).await;
    assert_eq!(
        run.counts.inserted + run.counts.updated + run.counts.unchanged,
        3
    );
    assert_eq!(store.involvements(SRC).await.expect("rows").len(), 3);
    drop(store);
    assert_eq!(page_size(&old), 4096);
}
