//! Fresh test databases for the suites that run on every store: a SQLite file in a new tempdir
//! always, and a new PostgreSQL database when `MATCHPOINT_TEST_POSTGRES_URL` is set. An
//! unreachable PostgreSQL fails the test instead of skipping it; without the variable a
//! suite prints once that its PostgreSQL half was skipped.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Mutex;

use sqlx::{AssertSqlSafe, Connection, PgConnection};

/// The variable naming the PostgreSQL server the tests may create databases on.
pub(crate) const POSTGRES_URL_VAR: &str = "MATCHPOINT_TEST_POSTGRES_URL";

/// Where a test database lives, before it is opened.
pub(crate) struct TestDb {
    /// `sqlite` or `postgres`, for messages.
    pub name: &'static str,
    /// The store URL.
    pub url: String,
    /// The backend and what to clean up.
    pub kind: Kind,
}

/// The backend of a [`TestDb`].
pub(crate) enum Kind {
    /// A SQLite file; the tempdir goes with the value.
    Sqlite {
        path: PathBuf,
        _dir: tempfile::TempDir,
    },
    /// A PostgreSQL database created on `admin_url`'s server.
    Postgres { admin_url: String, database: String },
}

impl TestDb {
    /// Whether this is the PostgreSQL database.
    pub fn is_pg(&self) -> bool {
        matches!(self.kind, Kind::Postgres { .. })
    }

    /// Drops the PostgreSQL database (nothing to do for SQLite: the tempdir goes on drop).
    pub async fn drop_database(&self) {
        if let Kind::Postgres {
            admin_url,
            database,
        } = &self.kind
            && let Ok(mut conn) = PgConnection::connect(admin_url).await
        {
            let _ = sqlx::raw_sql(AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {database} WITH (FORCE)"
            )))
            .execute(&mut conn)
            .await;
            let _ = conn.close().await;
        }
    }
}

/// Fresh, empty databases for one test of `suite` (used in the SKIPPED notice and the
/// PostgreSQL database name).
pub(crate) async fn targets(suite: &'static str) -> Vec<TestDb> {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(format!("{suite}.db"));
    let mut out = vec![TestDb {
        name: "sqlite",
        url: format!("sqlite://{}", path.display()),
        kind: Kind::Sqlite { path, _dir: dir },
    }];
    out.extend(postgres(suite).await);
    out
}

/// A fresh PostgreSQL database only: `None` (after a once-per-suite SKIPPED notice) when the
/// variable is unset; an unreachable server fails the test.
pub(crate) async fn postgres(suite: &'static str) -> Option<TestDb> {
    match std::env::var(POSTGRES_URL_VAR) {
        Ok(admin_url) if !admin_url.is_empty() => {
            let database = format!("mp_{suite}_{:016x}", rand::random::<u64>());
            let mut admin = PgConnection::connect(&admin_url)
                .await
                .unwrap_or_else(|err| {
                    panic!("{POSTGRES_URL_VAR} is set but PostgreSQL is unreachable: {err}")
                });
            sqlx::raw_sql(AssertSqlSafe(format!("CREATE DATABASE {database}")))
                .execute(&mut admin)
                .await
                .expect("create test database");
            let _ = admin.close().await;
            Some(TestDb {
                name: "postgres",
                url: with_database(&admin_url, &database),
                kind: Kind::Postgres {
                    admin_url,
                    database,
                },
            })
        }
        _ => {
            // Once per suite. Straight to stderr: the test harness captures only `eprintln!`.
            static NOTICED: Mutex<BTreeSet<&str>> = Mutex::new(BTreeSet::new());
            let first = NOTICED.lock().map(|mut n| n.insert(suite)).unwrap_or(true);
            if first {
                let _ = writeln!(
                    std::io::stderr(),
                    "PostgreSQL {suite} tests SKIPPED: set {POSTGRES_URL_VAR}"
                );
            }
            None
        }
    }
}

/// `url` with its database name replaced (query parameters kept).
pub(crate) fn with_database(url: &str, database: &str) -> String {
    let rest_at = url.find("://").map_or(0, |i| i + 3);
    let (head, query) = match url[rest_at..].find('?') {
        Some(q) => url.split_at(rest_at + q),
        None => (url, ""),
    };
    match head[rest_at..].find('/') {
        Some(slash) => format!("{}/{database}{query}", &head[..rest_at + slash]),
        None => format!("{head}/{database}{query}"),
    }
}
