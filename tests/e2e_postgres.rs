//! End-to-end on PostgreSQL (when `MATCHPOINT_TEST_POSTGRES_URL` is set): the binary syncs into
//! a fresh database, a second sync changes nothing, a short export is held, SIGKILL inside the
//! publish transaction leaves the old state, and a `pg_dump` of the whole database holds no
//! generated BSN or client surname.

mod common;

use std::process::Command;

use common::{Install, export_bsns, kill, nine_digit_runs, rewrite_export, spawn_paused, stderr};
use matchpoint_hub::generate::client_surnames;

/// A fresh database on the test server, dropped on drop.
struct PgDb {
    admin: String,
    name: String,
    url: String,
}

impl PgDb {
    fn create(tag: &str) -> Option<PgDb> {
        let Ok(admin) = std::env::var("MATCHPOINT_TEST_POSTGRES_URL") else {
            // Straight to stderr: the test harness captures only `eprintln!`.
            let _ = std::io::Write::write_all(
                &mut std::io::stderr(),
                b"PostgreSQL end-to-end tests SKIPPED: set MATCHPOINT_TEST_POSTGRES_URL\n",
            );
            return None;
        };
        let name = format!(
            "mp_e2e_{tag}_{}_{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0)
        );
        psql(&admin, &format!("CREATE DATABASE {name}"));
        let base = admin
            .rsplit_once('/')
            .map(|(b, _)| b.to_owned())
            .expect("url has a database");
        let url = format!("{base}/{name}");
        Some(PgDb { admin, name, url })
    }

    fn query(&self, sql: &str) -> String {
        psql(&self.url, sql)
    }
}

impl Drop for PgDb {
    fn drop(&mut self) {
        let _ = Command::new("psql")
            .args([
                &self.admin,
                "-qAtc",
                &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
            ])
            .output();
    }
}

fn psql(url: &str, sql: &str) -> String {
    let out = Command::new("psql")
        .args([url, "-v", "ON_ERROR_STOP=1", "-qAtc", sql])
        .output()
        .expect("psql must be installed to run the PostgreSQL tests");
    assert!(out.status.success(), "psql {sql}: {}", stderr(&out));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn pg_snapshot(db: &PgDb) -> String {
    db.query(
        "SELECT string_agg(source || '|' || source_record_id || '|' || encode(person, 'hex') || '|'
                || status || '|' || COALESCE(end_date::text, '') || '|' || encode(content_hash, 'hex'),
                E'\\n' ORDER BY source, source_record_id) FROM involvements",
    ) + &db.query(
        "SELECT COALESCE(string_agg(source_record_id || kind || encode(other, 'hex'), ',' ORDER BY 1), '')
         FROM relations",
    )
}

#[test]
fn postgres_sync_is_idempotent_guarded_crash_safe_and_leaks_no_identity() {
    let Some(db) = PgDb::create("sync") else {
        return;
    };
    let inst = Install::with_store(600, 31, 0.04, Some(&db.url));
    let bsns = export_bsns(&inst.export());

    let (ok, first) = inst.sync_json();
    assert!(ok, "{first}");
    let inserted = first["counts"]["inserted"].as_u64().expect("inserted");
    assert!(inserted > 600, "{first}");
    let snap = pg_snapshot(&db);

    let (ok, second) = inst.sync_json();
    assert!(ok, "{second}");
    assert_eq!(second["counts"]["inserted"], 0);
    assert_eq!(second["counts"]["updated"], 0);
    assert_eq!(second["counts"]["ended"], 0);
    assert_eq!(second["counts"]["unchanged"].as_u64(), Some(inserted));
    assert_eq!(pg_snapshot(&db), snap);

    // SIGKILL inside the publish transaction of a changing run: the old state remains.
    rewrite_export(&inst.export(), |i, r| match i % 25 {
        0 => None,
        1 => Some(r.replace("<team>", "<team>Herzien ")),
        _ => Some(r.to_owned()),
    });
    for point in ["publish:updated", "publish:ended", "publish:commit"] {
        let (child, _, _) = spawn_paused(&inst, &["sync"], point);
        kill(child, point);
        assert_eq!(
            pg_snapshot(&db),
            snap,
            "SIGKILL at {point} changed the published index"
        );
    }
    let (ok, changed) = inst.sync_json();
    assert!(ok, "{changed}");
    assert!(
        changed["counts"]["ended"].as_u64().unwrap_or(0) > 0,
        "{changed}"
    );
    assert!(
        changed["counts"]["updated"].as_u64().unwrap_or(0) > 0,
        "{changed}"
    );

    // A short export is held.
    let after = pg_snapshot(&db);
    rewrite_export(&inst.export(), |i, r| (i % 2 == 0).then(|| r.to_owned()));
    let (ok, held) = inst.sync_json();
    assert!(!ok);
    assert_eq!(held["status"], "held", "{held}");
    assert_eq!(pg_snapshot(&db), after);

    // The whole database, dumped, holds no generated BSN or client surname.
    let dump = Command::new("pg_dump")
        .args(["--no-owner", &db.url])
        .output()
        .expect("pg_dump must be installed to run the PostgreSQL tests");
    assert!(dump.status.success(), "pg_dump: {}", stderr(&dump));
    assert!(
        dump.stdout.len() > 100_000,
        "dump too small to mean anything"
    );
    for run in nine_digit_runs(&dump.stdout) {
        assert!(!bsns.contains(&run), "a BSN appears in the pg_dump");
    }
    let text = String::from_utf8_lossy(&dump.stdout);
    for s in client_surnames() {
        assert!(
            !text.contains(s),
            "client surname {s} appears in the pg_dump"
        );
    }
}
