//! End-to-end: `generate` + `sync` through the real binary on SQLite — idempotency, shrink
//! guard, truncation, quarantine against the manifest, replay, hostile input and the
//! no-clear-identity canary.

mod common;

use common::{
    Install, export_bsns, index_snapshot, nine_digit_runs, rewrite_export, spawn_paused, stderr,
    stdout,
};
use matchpoint_hub::generate::client_surnames;

fn counts(v: &serde_json::Value) -> (u64, u64, u64, u64, u64) {
    let c = &v["counts"];
    let n = |k: &str| c[k].as_u64().unwrap_or(u64::MAX);
    (
        n("inserted"),
        n("updated"),
        n("unchanged"),
        n("ended"),
        n("rejected"),
    )
}

#[test]
fn a_second_sync_of_unchanged_input_changes_and_rewrites_nothing() {
    let inst = Install::new(400, 11, 0.02);
    let (ok, first) = inst.sync_json();
    assert!(ok, "{first}");
    let (inserted, ..) = counts(&first);
    assert!(inserted > 400, "{first}");
    let conn = rusqlite::Connection::open(inst.db()).expect("open");
    let changed_before: Vec<i64> = conn
        .prepare("SELECT changed_run FROM involvements ORDER BY source_record_id")
        .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
        .expect("changed_run");
    let snap = index_snapshot(&inst.db());

    let (ok, second) = inst.sync_json();
    assert!(ok, "{second}");
    let (ins, upd, unch, ended, _) = counts(&second);
    assert_eq!((ins, upd, ended), (0, 0, 0), "{second}");
    assert_eq!(unch, inserted);
    assert_eq!(index_snapshot(&inst.db()), snap);
    let changed_after: Vec<i64> = conn
        .prepare("SELECT changed_run FROM involvements ORDER BY source_record_id")
        .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
        .expect("changed_run");
    assert_eq!(changed_before, changed_after, "no row may be rewritten");
}

#[test]
fn quarantine_equals_the_generators_manifest_id_by_id() {
    let inst = Install::new(600, 5, 0.05);
    let (ok, run) = inst.sync_json();
    assert!(ok, "{run}");
    let run_id = run["id"].as_i64().expect("id").to_string();
    let out = inst.mp(&[
        "quarantine",
        "--run",
        &run_id,
        "--limit",
        "100000",
        "--json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let mut got: Vec<(String, String, Option<String>)> = listed
        .as_array()
        .expect("array")
        .iter()
        .map(|q| {
            (
                q["source_record_id"].as_str().unwrap_or("").to_owned(),
                q["reason_code"].as_str().unwrap_or("").to_owned(),
                q["field"].as_str().map(str::to_owned),
            )
        })
        .collect();
    let manifest = std::fs::read_to_string(inst.path("data/manifest.jsonl")).expect("manifest");
    let mut want: Vec<(String, String, Option<String>)> = manifest
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("manifest line");
            (
                v["source_record_id"].as_str().unwrap_or("").to_owned(),
                v["reason"].as_str().unwrap_or("").to_owned(),
                v["field"].as_str().map(str::to_owned),
            )
        })
        .collect();
    got.sort();
    want.sort();
    assert!(
        want.len() > 20,
        "manifest too small to mean anything: {}",
        want.len()
    );
    assert_eq!(got, want);
    assert_eq!(run["counts"]["rejected"].as_u64(), Some(want.len() as u64));
}

#[test]
fn replay_after_a_mapping_fix_publishes_the_fixed_records() {
    let inst = Install::new(600, 6, 0.05);
    let (ok, _) = inst.sync_json();
    assert!(ok);
    let manifest = std::fs::read_to_string(inst.path("data/manifest.jsonl")).expect("manifest");
    let unknown: Vec<String> = manifest
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["reason"] == "unknown_code")
        .filter_map(|v| v["source_record_id"].as_str().map(str::to_owned))
        .collect();
    assert!(!unknown.is_empty());
    // The unknown domain code the generator writes; find it in the quarantine reason.
    let out = inst.mp(&["quarantine", "--json", "--limit", "100000"]);
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let mut codes: Vec<String> = listed
        .as_array()
        .expect("array")
        .iter()
        .filter(|q| q["reason_code"] == "unknown_code" && q["field"] == "domein")
        .filter_map(|q| q["reason"].as_str()?.split('`').nth(1).map(str::to_owned))
        .collect();
    codes.sort();
    codes.dedup();
    assert!(!codes.is_empty());
    let mapping = inst.path("mappings/okc-2.toml");
    let text = std::fs::read_to_string(&mapping).expect("mapping");
    let added: String = codes
        .iter()
        .map(|c| format!("{c} = \"social_support\"\n"))
        .collect();
    let fixed = text.replace(
        "[codes.life_domain]\n",
        &format!("[codes.life_domain]\n{added}"),
    );
    assert_ne!(text, fixed);
    std::fs::write(&mapping, fixed).expect("write mapping");

    let out = inst.mp(&["quarantine", "replay", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let runs: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(
        runs[0]["counts"]["accepted"].as_u64(),
        Some(unknown.len() as u64),
        "{runs}"
    );
    assert_eq!(runs[0]["status"], "succeeded");

    let conn = rusqlite::Connection::open(inst.db()).expect("open");
    for id in &unknown {
        let domain: String = conn
            .query_row(
                "SELECT life_domain FROM involvements WHERE source = 'okc-2' AND source_record_id = ?1",
                [id],
                |r| r.get(0),
            )
            .unwrap_or_else(|e| panic!("{id} not published: {e}"));
        assert_eq!(domain, "social_support");
    }
    // The fixed entries are resolved; the others stay listed.
    let out = inst.mp(&["quarantine", "--json", "--limit", "100000"]);
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert!(
        listed
            .as_array()
            .expect("array")
            .iter()
            .all(|q| q["reason_code"] != "unknown_code"),
        "{listed}"
    );
    // A second replay finds nothing new to publish for them.
    let out = inst.mp(&["quarantine", "replay", "--json"]);
    let runs: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(
        runs[0]["counts"]["inserted"].as_u64().unwrap_or(0),
        0,
        "{runs}"
    );
}

#[test]
fn a_short_well_formed_export_is_held_and_accept_publishes_it() {
    let inst = Install::new(500, 7, 0.0);
    assert!(inst.sync_json().0);
    let before = index_snapshot(&inst.db());
    // Keep two records in three: a third of the index would end.
    rewrite_export(&inst.export(), |i, rec| {
        (i % 3 != 0).then(|| rec.to_owned())
    });
    let (ok, held) = inst.sync_json();
    assert!(!ok, "a held run must exit non-zero");
    assert_eq!(held["status"], "held", "{held}");
    assert_eq!(
        index_snapshot(&inst.db()),
        before,
        "a held run publishes nothing"
    );

    let run = held["id"].as_i64().expect("id").to_string();
    let out = inst.mp(&["runs", "show", &run, "--json"]);
    assert!(out.status.success());
    let shown: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let would: u64 = shown["would_end"]
        .as_array()
        .expect("would_end")
        .iter()
        .map(|w| w["count"].as_u64().unwrap_or(0))
        .sum();
    assert!(would > 100, "{shown}");
    let text = stdout(&inst.mp(&["runs", "show", &run]));
    assert!(
        text.contains("Would end") && text.contains("runs accept"),
        "{text}"
    );

    let out = inst.mp(&["runs", "accept", &run, "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let accepted: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(accepted["status"], "accepted");
    assert_eq!(accepted["counts"]["ended"].as_u64(), Some(would));
    assert_ne!(index_snapshot(&inst.db()), before);
    let again = inst.mp(&["runs", "accept", &run]);
    assert!(!again.status.success(), "a run is accepted once");
}

#[test]
fn an_empty_export_is_held_when_the_index_holds_records() {
    let inst = Install::new(100, 8, 0.0);
    assert!(inst.sync_json().0);
    let before = index_snapshot(&inst.db());
    rewrite_export(&inst.export(), |_, _| None);
    let (ok, held) = inst.sync_json();
    assert!(!ok);
    assert_eq!(held["status"], "held", "{held}");
    assert!(
        held["error"].as_str().unwrap_or("").contains("no records"),
        "{held}"
    );
    assert_eq!(index_snapshot(&inst.db()), before);
}

#[test]
fn a_truncated_export_fails_and_leaves_the_index_unchanged() {
    let inst = Install::new(300, 9, 0.0);
    assert!(inst.sync_json().0);
    let before = index_snapshot(&inst.db());
    let text = std::fs::read(inst.export()).expect("export");
    for cut in [text.len() * 2 / 3, text.len() - 12] {
        std::fs::write(inst.export(), &text[..cut]).expect("write");
        let (ok, run) = inst.sync_json();
        assert!(!ok);
        assert_eq!(run["status"], "failed", "{run}");
        assert!(
            run["error"].as_str().unwrap_or("").contains("truncated"),
            "{run}"
        );
        assert_eq!(index_snapshot(&inst.db()), before);
    }
}

#[test]
fn hostile_xml_fails_the_run_with_a_clear_error_and_no_panic() {
    let inst = Install::new(50, 10, 0.0);
    assert!(inst.sync_json().0);
    let before = index_snapshot(&inst.db());
    let laughs = "<?xml version=\"1.0\"?>\n<!DOCTYPE lolz [<!ENTITY lol \"lol\"><!ENTITY lol2 \"&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;\">]>\n<export aantal=\"1\"><dossier id=\"x\"><doel>&lol2;</doel></dossier></export>\n";
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (laughs.as_bytes().to_vec(), "DOCTYPE"),
        (
            b"<export aantal=\"1\"><dossier id=\"a\"></doel></dossier></export>".to_vec(),
            "malformed",
        ),
        (vec![0xff, 0xfe, 0x00, 0x3c], "malformed"),
    ];
    for (bytes, needle) in cases {
        std::fs::write(inst.export(), &bytes).expect("write");
        let out = inst.mp(&["sync", "--json"]);
        assert!(!out.status.success());
        let err = stderr(&out);
        assert!(!err.contains("panicked"), "{err}");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        assert_eq!(v[0]["status"], "failed", "{v}");
        let msg = v[0]["error"].as_str().unwrap_or("");
        assert!(msg.contains(needle), "{needle} not in {msg}");
        assert_eq!(index_snapshot(&inst.db()), before);
    }
}

#[test]
fn a_world_readable_key_is_refused_with_instructions() {
    use std::os::unix::fs::PermissionsExt;
    let inst = Install::new(10, 1, 0.0);
    std::fs::set_permissions(
        inst.path("matchpoint.key"),
        std::fs::Permissions::from_mode(0o644),
    )
    .expect("chmod");
    let out = inst.mp(&["sync"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("chmod 600"), "{}", stderr(&out));
    std::fs::remove_file(inst.path("matchpoint.key")).expect("rm");
    let out = inst.mp(&["sync"]);
    assert!(
        stderr(&out).contains("matchpoint keygen"),
        "{}",
        stderr(&out)
    );
}

fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(files_under(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

#[test]
fn no_bsn_or_client_surname_reaches_the_database_wal_quarantine_or_logs() {
    let inst = Install::new(800, 12, 0.05);
    let bsns = export_bsns(&inst.export());
    assert!(
        bsns.len() > 800,
        "the canary needs the BSNs: {}",
        bsns.len()
    );
    // Run with debug logging and keep every byte the commands print.
    let mut printed = Vec::new();
    for args in [
        vec!["sync", "-vv"],
        vec!["sync", "-vv"],
        vec!["quarantine", "--limit", "100000"],
        vec!["quarantine", "--json", "--limit", "100000"],
        vec!["runs"],
        vec!["stats", "--json"],
    ] {
        let out = inst.mp(&args);
        printed.extend_from_slice(&out.stdout);
        printed.extend_from_slice(&out.stderr);
    }
    assert!(
        printed.len() > 1000,
        "log capture too small to mean anything"
    );
    // Pause a changing sync right after its commit, while the WAL still holds the new pages,
    // and copy every file of the installation for the scan.
    rewrite_export(&inst.export(), |i, rec| {
        Some(if i % 7 == 0 {
            rec.replace("<team>", "<team>Gewijzigd ")
        } else {
            rec.to_owned()
        })
    });
    let snapshot = tempfile::tempdir().expect("tempdir");
    {
        let (mut child, seen, rest) = spawn_paused(&inst, &["sync", "-vv"], "publish:committed");
        printed.extend_from_slice(&seen);
        for f in files_under(inst.dir.path()) {
            let rel = f.strip_prefix(inst.dir.path()).expect("under");
            let to = snapshot.path().join(rel);
            std::fs::create_dir_all(to.parent().expect("parent")).expect("mkdir");
            std::fs::copy(&f, &to).expect("copy");
        }
        drop(child.stdin.take());
        let out = child.wait_with_output().expect("wait");
        assert!(
            out.status.success(),
            "the paused sync completes once released"
        );
        printed.extend_from_slice(&out.stdout);
        printed.extend_from_slice(&rest.join().expect("stderr reader"));
    }
    // Shrink the export so a run is held and its staging file stays on disk for the scan.
    rewrite_export(&inst.export(), |i, rec| {
        (i % 2 == 0).then(|| rec.to_owned())
    });
    let out = inst.mp(&["sync", "-vv"]);
    printed.extend_from_slice(&out.stdout);
    printed.extend_from_slice(&out.stderr);

    let mut scanned = vec![("captured output".to_owned(), printed)];
    for f in files_under(inst.dir.path())
        .into_iter()
        .chain(files_under(snapshot.path()))
    {
        let name = f.display().to_string();
        if name.contains("/data/") || name.ends_with(".toml") || name.ends_with(".key") {
            continue; // the simulated source's own files and configuration
        }
        scanned.push((name, std::fs::read(&f).expect("read")));
    }
    assert!(
        scanned
            .iter()
            .any(|(n, _)| n.ends_with("matchpoint.db-wal")),
        "WAL must be scanned"
    );
    assert!(
        scanned.iter().any(|(n, _)| n.contains(".staging/")),
        "staging must be scanned"
    );
    let surnames: Vec<&str> = client_surnames().to_vec();
    assert!(surnames.len() > 10);
    for (name, bytes) in &scanned {
        for run in nine_digit_runs(bytes) {
            assert!(!bsns.contains(&run), "a BSN appears in {name}");
        }
        let text = String::from_utf8_lossy(bytes);
        for s in &surnames {
            assert!(!text.contains(s), "client surname {s} appears in {name}");
        }
    }
}
