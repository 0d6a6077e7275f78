//! The backup and restore procedure of docs/operations.md, on PostgreSQL (when
//! `MATCHPOINT_TEST_POSTGRES_URL` is set): sync, `pg_dump --format=custom` without the
//! per-run staging tables, `pg_restore` into a fresh database, then the restored index equals
//! the original, the run history is there, and the restored store is fully operational — the
//! next sync of the unchanged source changes nothing and `run --once` finds nothing due.
//! (`audit verify` and lookups join this test when the audit trail and the API land.)

mod common;

use std::process::Command;

use common::{Install, stderr};

struct PgDb {
    admin: String,
    name: String,
    url: String,
}

impl PgDb {
    fn create(admin: &str, tag: &str) -> PgDb {
        let name = format!("mp_restore_{tag}_{}_{:08x}", std::process::id(), rand_u32());
        psql(admin, &format!("CREATE DATABASE {name}"));
        let base = admin
            .rsplit_once('/')
            .map(|(b, _)| b.to_owned())
            .expect("url has a database");
        PgDb {
            admin: admin.to_owned(),
            url: format!("{base}/{name}"),
            name,
        }
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

fn rand_u32() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0)
}

fn psql(url: &str, sql: &str) -> String {
    let out = Command::new("psql")
        .args([url, "-v", "ON_ERROR_STOP=1", "-qAtc", sql])
        .output()
        .expect("psql must be installed to run the PostgreSQL tests");
    assert!(out.status.success(), "psql {sql}: {}", stderr(&out));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The published index and the run history, as text.
fn snapshot(url: &str) -> String {
    psql(
        url,
        "SELECT (SELECT string_agg(source || '|' || source_record_id || '|' || encode(person, 'hex')
                   || '|' || key_id || '|' || status || '|' || encode(content_hash, 'hex'),
                   E'\\n' ORDER BY source, source_record_id) FROM involvements)
             || (SELECT COALESCE(string_agg(source_record_id || kind || encode(other, 'hex'), ','
                   ORDER BY source_record_id, kind, other), '') FROM relations)
             || (SELECT string_agg(id || status || mode, ',' ORDER BY id) FROM runs)
             || (SELECT count(*)::text FROM quarantine)",
    )
}

fn tool_present(name: &str) -> bool {
    Command::new(name).arg("--version").output().is_ok()
}

#[test]
fn a_restored_dump_holds_the_same_index_and_keeps_working() {
    let Ok(admin) = std::env::var("MATCHPOINT_TEST_POSTGRES_URL") else {
        let _ = std::io::Write::write_all(
            &mut std::io::stderr(),
            b"PostgreSQL backup/restore test SKIPPED: set MATCHPOINT_TEST_POSTGRES_URL\n",
        );
        return;
    };
    for tool in ["pg_dump", "pg_restore", "psql"] {
        assert!(
            tool_present(tool),
            "{tool} is missing (apt-get install postgresql-client)"
        );
    }
    let original = PgDb::create(&admin, "orig");
    let inst = Install::with_store(300, 21, 0.02, Some(&original.url));
    let (ok, first) = inst.sync_json();
    assert!(ok, "{first}");
    let before = snapshot(&original.url);
    assert!(
        before.contains("succeeded") && before.len() > 1000,
        "{before}"
    );

    // Back up as docs/operations.md says.
    let dump = inst.path("matchpoint.dump");
    let out = Command::new("pg_dump")
        .args([
            "--format=custom",
            "--no-owner",
            "--exclude-table=staging_run_*",
        ])
        .arg(format!("--file={}", dump.display()))
        .arg(&original.url)
        .output()
        .expect("pg_dump");
    assert!(out.status.success(), "pg_dump: {}", stderr(&out));

    // Restore into a fresh database and point the installation at it.
    let restored = PgDb::create(&admin, "rest");
    let out = Command::new("pg_restore")
        .args(["--no-owner", "--exit-on-error"])
        .arg(format!("--dbname={}", restored.url))
        .arg(&dump)
        .output()
        .expect("pg_restore");
    assert!(out.status.success(), "pg_restore: {}", stderr(&out));
    drop(original);
    assert_eq!(snapshot(&restored.url), before, "restored index differs");

    let config = inst.path("matchpoint.toml");
    let text = std::fs::read_to_string(&config).expect("config");
    let text = text.replace(&inst.store_url, &restored.url);
    std::fs::write(&config, text).expect("write config");

    let out = inst.mp(&["stats", "--json"]);
    assert!(out.status.success(), "stats: {}", stderr(&out));
    let (ok, second) = inst.sync_json();
    assert!(ok, "{second}");
    let c = &second["counts"];
    for key in ["inserted", "updated", "ended", "rejected"] {
        let expected = if key == "rejected" {
            first["counts"]["rejected"].as_u64()
        } else {
            Some(0)
        };
        assert_eq!(c[key].as_u64(), expected, "{key} after restore: {second}");
    }
    let out = inst.mp(&["run", "--once"]);
    assert!(out.status.success(), "run --once: {}", stderr(&out));
}
