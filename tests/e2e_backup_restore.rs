//! The backup and restore procedure of docs/operations.md, on PostgreSQL (when
//! `MATCHPOINT_TEST_POSTGRES_URL` is set): sync, `pg_dump --format=custom` without the
//! per-run staging tables, `pg_restore` into a fresh database, then the restored index equals
//! the original, the run history is there, and the restored store is fully operational: a
//! lookup through `serve` answers the same involvements as before the backup, the audit
//! trail (including that lookup's entry) verifies, the next sync of the unchanged source
//! changes nothing and `run --once` finds nothing due.

mod common;

use std::io::BufRead;
use std::process::{Child, Command, Stdio};

use common::{Install, export_bsns, stderr};
use matchpoint_schemas::bsn::passes_elfproef;

/// `matchpoint serve` on a free loopback port; stopped with SIGINT on drop.
struct Server {
    child: Child,
    base: String,
}

impl Server {
    fn start(inst: &Install) -> Server {
        let mut child = inst
            .command(&["serve", "--listen", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn serve");
        let out = child.stdout.take().expect("stdout");
        let mut base = None;
        for line in std::io::BufReader::new(out).lines() {
            let line = line.expect("serve stdout");
            if let Some(rest) = line.split("listening on ").nth(1) {
                base = rest.split_whitespace().next().map(str::to_owned);
                break;
            }
        }
        let base = base.expect("serve printed its address");
        Server { child, base }
    }

    fn lookup(&self, token: &str, bsn: &str) -> (u16, serde_json::Value) {
        let resp = reqwest::blocking::Client::new()
            .post(format!("{}/api/v1/lookups", self.base))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(
                serde_json::json!({
                    "bsn": bsn,
                    "purpose": "coordinating_care",
                    "break_glass_reason": {
                        "code": "crisis",
                        "justification": "restore drill of the backup procedure"
                    }
                })
                .to_string(),
            )
            .send()
            .expect("lookup request");
        let status = resp.status().as_u16();
        let body = resp.bytes().expect("lookup body");
        (
            status,
            serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
        )
    }

    fn verify(&self, token: &str) -> serde_json::Value {
        let resp = reqwest::blocking::Client::new()
            .get(format!("{}/api/v1/audit/verify", self.base))
            .bearer_auth(token)
            .send()
            .expect("verify request");
        assert!(
            resp.status().is_success(),
            "audit verify: {}",
            resp.status()
        );
        serde_json::from_slice(&resp.bytes().expect("verify body")).expect("verify json")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

fn add_user(inst: &Install, name: &str, role: &str) -> String {
    let out = inst.mp(&[
        "users",
        "add",
        "--name",
        name,
        "--role",
        role,
        "--organisation",
        "OKC-CENTRUM",
        "--json",
    ]);
    assert!(out.status.success(), "users add: {}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("users add json");
    v["token"].as_str().expect("token").to_owned()
}

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
    // Before the backup: users, and a lookup that answers involvements (and is audited).
    let professional = add_user(&inst, "Restore Drill Professional", "professional");
    let officer = add_user(&inst, "Restore Drill Officer", "privacy_officer");
    let mut bsns: Vec<String> = export_bsns(&inst.export())
        .into_iter()
        .filter(|b| b.parse::<u32>().is_ok_and(passes_elfproef))
        .collect();
    bsns.sort();
    let (bsn, answer_before) = {
        let server = Server::start(&inst);
        let found = bsns.iter().take(20).find_map(|b| {
            let (status, v) = server.lookup(&professional, b);
            (status == 200 && v["involvements"].as_array().is_some_and(|a| !a.is_empty()))
                .then(|| (b.clone(), v))
        });
        found.expect("one of the first valid BSNs has involvements")
    };
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

    // The restored store answers the same lookup, and its audit trail verifies.
    {
        let server = Server::start(&inst);
        let (status, answer_after) = server.lookup(&professional, &bsn);
        assert_eq!(status, 200, "{answer_after}");
        assert_eq!(
            answer_after["involvements"], answer_before["involvements"],
            "the restored index answers differently"
        );
        let report = server.verify(&officer);
        assert_eq!(report["ok"], true, "audit verify after restore: {report}");
    }
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
