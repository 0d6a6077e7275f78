//! End-to-end: `matchpoint audit checkpoint` and `audit verify` through the real binary on
//! SQLite — a clean trail verifies, tampering done directly in the database makes `verify`
//! exit non-zero and name the entry, and both commands leave their own audit entry.

mod common;

use common::{Install, stderr, stdout};

fn verify_json(inst: &Install, checkpoint: Option<&str>) -> (bool, serde_json::Value) {
    let mut args = vec!["audit", "verify", "--json"];
    if let Some(cp) = checkpoint {
        args.extend(["--checkpoint", cp]);
    }
    let out = inst.mp(&args);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("verify --json output: {e}\n{}", stderr(&out)));
    (out.status.success(), v)
}

#[test]
fn verify_and_checkpoint_detect_tampering_and_audit_themselves() {
    let inst = Install::new(20, 3, 0.0);
    let out = inst.mp(&["audit", "checkpoint", "--out", "cp1.json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = inst.mp(&["audit", "checkpoint"]);
    assert!(out.status.success(), "{}", stderr(&out));
    std::fs::write(inst.path("cp2.json"), stdout(&out)).expect("write");
    let out = inst.mp(&["audit", "verify", "--checkpoint", "cp2.json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("checkpoint matches"),
        "{}",
        stdout(&out)
    );

    // Every command left one entry with role `cli`: 2 checkpoints + 1 verify so far.
    let conn = rusqlite::Connection::open(inst.db()).expect("open");
    let actions: Vec<(String, String)> = conn
        .prepare("SELECT role, action FROM audit_log ORDER BY seq")
        .and_then(|mut s| s.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect())
        .expect("entries");
    let expected: Vec<(String, String)> = ["audit_checkpoint", "audit_checkpoint", "audit_verify"]
        .iter()
        .map(|a| ("cli".to_owned(), (*a).to_owned()))
        .collect();
    assert_eq!(actions, expected);

    // The trigger refuses a plain UPDATE; an attacker drops it first.
    assert!(
        conn.execute("UPDATE audit_log SET role = 'admin' WHERE seq = 2", [])
            .is_err()
    );
    conn.execute_batch(
        "DROP TRIGGER audit_log_no_update; UPDATE audit_log SET role = 'admin' WHERE seq = 2;",
    )
    .expect("tamper");
    let out = inst.mp(&["audit", "verify"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("FAILED at entry 2 (changed)"),
        "{}",
        stderr(&out)
    );
    let (ok, v) = verify_json(&inst, None);
    assert!(!ok);
    assert_eq!(v["failure"]["seq"], 2, "{v}");
    assert_eq!(v["failure"]["kind"], "changed", "{v}");
    conn.execute_batch("UPDATE audit_log SET role = 'cli' WHERE seq = 2;")
        .expect("restore");
    let (ok, v) = verify_json(&inst, Some("cp2.json"));
    assert!(ok, "{v}");

    // Truncate the tail and fix the head: only the checkpoint reveals it.
    let head: String = conn
        .query_row("SELECT hash FROM audit_log WHERE seq = 1", [], |r| r.get(0))
        .expect("hash");
    conn.execute_batch(&format!(
        "DROP TRIGGER audit_log_no_delete; DELETE FROM audit_log WHERE seq > 1; \
         UPDATE audit_head SET seq = 1, hash = '{head}' WHERE id = 1;"
    ))
    .expect("truncate");
    let (ok, v) = verify_json(&inst, Some("cp2.json"));
    assert!(!ok, "{v}");
    assert_eq!(v["failure"]["kind"], "truncated", "{v}");
    assert_eq!(v["failure"]["seq"], 2, "{v}");

    // A checkpoint that was edited is refused outright.
    let edited = std::fs::read_to_string(inst.path("cp2.json"))
        .expect("read")
        .replace("\"size\":2", "\"size\":1");
    std::fs::write(inst.path("cp3.json"), edited).expect("write");
    let out = inst.mp(&["audit", "verify", "--checkpoint", "cp3.json"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("signature"), "{}", stderr(&out));
}

fn psql(url: &str, sql: &str) -> std::process::Output {
    std::process::Command::new("psql")
        .args([url, "-v", "ON_ERROR_STOP=1", "-qAtc", sql])
        .output()
        .expect("psql must be installed to run the PostgreSQL tests")
}

#[test]
fn postgres_verify_and_checkpoint_through_the_binary() {
    let Ok(admin) = std::env::var("MATCHPOINT_TEST_POSTGRES_URL") else {
        let _ = std::io::Write::write_all(
            &mut std::io::stderr(),
            b"PostgreSQL audit end-to-end test SKIPPED: set MATCHPOINT_TEST_POSTGRES_URL\n",
        );
        return;
    };
    let name = format!("mp_e2e_audit_{}_{:08x}", std::process::id(), rand_tag());
    let out = psql(&admin, &format!("CREATE DATABASE {name}"));
    assert!(out.status.success(), "{}", stderr(&out));
    let base = admin
        .rsplit_once('/')
        .map(|(b, _)| b.to_owned())
        .expect("url has a database");
    let url = format!("{base}/{name}");
    let inst = Install::with_store(20, 4, 0.0, Some(&url));

    let out = inst.mp(&["audit", "checkpoint", "--out", "cp.json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let (ok, v) = verify_json(&inst, Some("cp.json"));
    assert!(ok, "{v}");
    assert_eq!(v["checkpoint_matched"], true, "{v}");

    // The trigger refuses; with triggers disabled the change is named.
    let refused = psql(&url, "UPDATE audit_log SET role = 'admin' WHERE seq = 1");
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("append-only"),
        "{}",
        stderr(&refused)
    );
    let out = psql(
        &url,
        "ALTER TABLE audit_log DISABLE TRIGGER USER; \
         UPDATE audit_log SET role = 'admin' WHERE seq = 1;",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let (ok, v) = verify_json(&inst, Some("cp.json"));
    assert!(!ok, "{v}");
    assert_eq!(v["failure"]["seq"], 1, "{v}");
    assert_eq!(v["failure"]["kind"], "changed", "{v}");

    drop(inst);
    let _ = psql(
        &admin,
        &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
    );
}

fn rand_tag() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0)
}

#[test]
fn an_audit_key_rotation_through_the_cli_keeps_old_checkpoints_verifiable() {
    let inst = Install::new(20, 3, 0.0);
    let out = inst.mp(&["audit", "checkpoint", "--out", "cp1.json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = inst.mp(&["keys", "rotate", "--audit", "--key-id", "a2"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("audit key version `a2`"),
        "{}",
        stdout(&out)
    );
    let out = inst.mp(&["keys", "activate", "--audit", "a2"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = inst.mp(&["audit", "checkpoint", "--out", "cp2.json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let cp2 = std::fs::read_to_string(inst.path("cp2.json")).expect("read");
    assert!(cp2.contains("\"key_id\":\"a2\""), "{cp2}");
    for cp in ["cp1.json", "cp2.json"] {
        let (ok, v) = verify_json(&inst, Some(cp));
        assert!(ok, "{cp}: {v}");
        assert_eq!(v["checkpoint_matched"], true, "{cp}: {v}");
    }
    let out = inst.mp(&["keys", "status", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status json");
    assert_eq!(
        v["active"], "test-k1",
        "the index version is untouched: {v}"
    );
    assert_eq!(v["audit_active"], "a2", "{v}");
    assert_eq!(
        v["audit_loaded"],
        serde_json::json!(["test-k1", "a2"]),
        "{v}"
    );
    assert_eq!(v["audit_missing"], serde_json::json!([]), "{v}");
    // An unknown audit version is refused with the versions the file holds.
    let out = inst.mp(&["keys", "activate", "--audit", "a9"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("a2"), "{}", stderr(&out));
}
