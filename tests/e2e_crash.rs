//! Crash safety: the sync process is killed with SIGKILL at seeded points — while staging
//! batches and at every step inside the publish transaction — and each time the published
//! index equals the state before or after that run, and the next run completes.

mod common;

use common::{Install, index_snapshot, kill, rewrite_export, spawn_paused, stderr};

/// The publish steps, in order; all but the last run inside the publish transaction.
const PUBLISH_POINTS: [&str; 8] = [
    "publish:begin",
    "publish:relations",
    "publish:relations-inserted",
    "publish:updated",
    "publish:inserted",
    "publish:ended",
    "publish:commit",
    "publish:committed",
];

/// A small deterministic generator (SplitMix64), so the chosen batch points follow the seed.
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Starts `matchpoint sync` paused at `point`, waits until it reports that phase, kills it.
fn kill_at(inst: &Install, point: &str) {
    let (child, _, _) = spawn_paused(inst, &["sync"], point);
    kill(child, point);
}

struct Scenario {
    name: &'static str,
    prepare: fn(&Install),
}

fn change_some(inst: &Install) {
    // About 5% ended (below the 10% guard), 10% changed; plus a changed goal text.
    rewrite_export(&inst.export(), |i, rec| match i % 20 {
        0 => None,
        1 | 2 => Some(rec.replace("<team>", "<team>Herzien ")),
        _ => Some(rec.to_owned()),
    });
}

fn nothing(_: &Install) {}

#[test]
fn sigkill_at_any_phase_leaves_the_index_at_a_complete_state_and_the_next_run_recovers() {
    let seed: u64 = std::env::var("MATCHPOINT_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20261123);
    let mut rng = seed;
    eprintln!("crash test seed {seed} (set MATCHPOINT_CRASH_SEED to reproduce)");
    let scenarios = [
        Scenario {
            name: "first sync into an empty index",
            prepare: nothing,
        },
        Scenario {
            name: "sync with changes and ends",
            prepare: change_some,
        },
    ];
    let mut kills = 0;
    let mut inside_publish = 0;
    for sc in &scenarios {
        // Reference states: before and after the run, computed once without crashes.
        let reference = Install::new(300, 3, 0.02);
        if sc.name != "first sync into an empty index" {
            assert!(reference.sync_json().0);
        }
        let before = index_snapshot(&reference.db());
        (sc.prepare)(&reference);
        let (ok, run) = reference.sync_json();
        assert!(ok, "{}: {run}", sc.name);
        let after = index_snapshot(&reference.db());
        assert_ne!(before, after, "{}: the run must change something", sc.name);
        let batches = run["counts"]["read"].as_u64().expect("read") / 50;

        let mut points: Vec<String> = PUBLISH_POINTS.iter().map(|p| (*p).to_owned()).collect();
        for _ in 0..4 {
            points.push(format!("stage:{}", 1 + splitmix(&mut rng) % batches.max(1)));
        }
        for point in &points {
            let inst = Install::new(300, 3, 0.02);
            inst.write_config(50, 0.10);
            std::fs::copy(
                reference.path("matchpoint.key"),
                inst.path("matchpoint.key"),
            )
            .expect("same key as the reference");
            if sc.name != "first sync into an empty index" {
                assert!(inst.sync_json().0);
            }
            assert_eq!(index_snapshot(&inst.db()), before, "{}: setup", sc.name);
            (sc.prepare)(&inst);

            kill_at(&inst, point);
            kills += 1;
            if point.starts_with("publish:") && point != "publish:committed" {
                inside_publish += 1;
            }
            let state = index_snapshot(&inst.db());
            assert!(
                state == before || state == after,
                "{}: after SIGKILL at {point} the index is neither the old nor the new state",
                sc.name
            );
            if point == "publish:committed" {
                assert!(state == after, "{}: a committed run must survive", sc.name);
            }
            if point.starts_with("stage:") || point == "publish:begin" {
                assert!(
                    state == before,
                    "{}: nothing published before commit",
                    sc.name
                );
            }

            let out = inst.mp(&["sync", "--json"]);
            assert!(
                out.status.success(),
                "{}: recovery run after {point}: {}",
                sc.name,
                stderr(&out)
            );
            assert_eq!(
                index_snapshot(&inst.db()),
                after,
                "{}: recovered state after {point}",
                sc.name
            );
            let runs = inst.mp(&["runs", "--json"]);
            let runs: serde_json::Value = serde_json::from_slice(&runs.stdout).expect("runs json");
            if point != "publish:committed" {
                // Newest first: the recovery run, then the killed run.
                let killed = &runs[1];
                assert_eq!(
                    killed["status"], "failed",
                    "{}: killed run at {point}: {runs}",
                    sc.name
                );
                assert!(
                    killed["error"]
                        .as_str()
                        .unwrap_or("")
                        .contains("interrupted"),
                    "{runs}"
                );
            }
            assert!(
                std::fs::read_dir(inst.path("matchpoint.db.staging"))
                    .map(|d| d.count())
                    .unwrap_or(0)
                    == 0,
                "{}: staging files left behind after recovery from {point}",
                sc.name
            );
        }
    }
    assert!(kills >= 20, "only {kills} kills");
    assert!(
        inside_publish >= 5,
        "only {inside_publish} kills inside the publish transaction"
    );
}

// ---------------------------------------------------------------------------------------------
// iWmo: the message state in the store moves with the index
// ---------------------------------------------------------------------------------------------

use matchpoint_connectors::iwmo::{Body, DeliveryStatus, MessageKind, StoppedProduct};
use matchpoint_hub::generate::iwmo::{OutClient, OutMessage, header, message_xml};

fn iwmo_day(m: u32, d: u32) -> chrono::NaiveDate {
    chrono::NaiveDate::from_ymd_opt(2026, m, d).expect("date")
}

/// An installation syncing only the WMO module's message folder, with `key` (another
/// installation's key file) so that pseudonyms agree.
fn iwmo_install(key: Option<&Install>) -> Install {
    let inst = Install::new(3, 1, 0.0);
    if let Some(other) = key {
        std::fs::copy(other.path("matchpoint.key"), inst.path("matchpoint.key")).expect("key");
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    std::fs::copy(
        root.join("deploy/mappings/wmo.toml"),
        inst.path("mappings/wmo.toml"),
    )
    .expect("copy mapping");
    let text = format!(
        "store = \"{}\"\nkey_file = \"matchpoint.key\"\norganisations = \"organisations.toml\"\n\
         [sync]\nmax_end_share = 0.5\nbatch_size = 20\n\
         [[source]]\nname = \"wmo\"\nkind = \"iwmo\"\nlocation = \"data/wmo\"\n\
         mode = \"incremental\"\nschedule = \"0 0 * * * *\"\nmapping = \"mappings/wmo.toml\"\n",
        inst.store_url
    );
    std::fs::write(inst.path("matchpoint.toml"), text).expect("config");
    matchpoint_hub::generate::iwmo::write_lifecycles(&inst.path("data/wmo"), 40, 7, iwmo_day(1, 5))
        .expect("messages");
    inst
}

/// Later messages: a stop (WMO588 38) for each of the first ten assignments.
fn iwmo_stops(inst: &Install) {
    let folder = inst.path("data/wmo");
    let mut assignments: Vec<_> = std::fs::read_dir(&folder)
        .expect("list")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().ends_with("wmo301.xml"))
        .collect();
    assignments.sort();
    for (i, path) in assignments.iter().take(10).enumerate() {
        let xml = std::fs::read_to_string(path).expect("read");
        let field = |tag: &str| {
            xml.split(&format!("<{tag}>"))
                .nth(1)
                .and_then(|r| r.split('<').next())
                .expect("field")
                .to_owned()
        };
        let stop = OutMessage {
            header: header(
                MessageKind::Wmo307,
                &field("Ontvanger"),
                &format!("STOP-{i}"),
                iwmo_day(12, 1),
            ),
            client: OutClient {
                bsn: field("Bsn"),
                birth: iwmo_day(1, 1) - chrono::Duration::days(365 * 60),
                birth_use: None,
                gender: "1".into(),
                surname: "Stop".into(),
                prefix: None,
                initials: "S".into(),
            },
            body: Body::Stop(vec![StoppedProduct {
                number: Some(field("ToewijzingNummer").parse().expect("number")),
                product: None,
                assignment_start: None,
                start: iwmo_day(1, 1),
                reason: "38".into(),
                end: iwmo_day(11, 30),
                status: DeliveryStatus::First,
            }]),
            every_optional: false,
        };
        std::fs::write(
            folder.join(format!("zz-stop-{i:02}.xml")),
            message_xml(&stop),
        )
        .expect("write stop");
    }
}

/// The iWmo state in a SQLite store: kind, key and (for files) the content hash.
fn state_snapshot(db: &std::path::Path) -> Vec<String> {
    let conn = rusqlite::Connection::open(db).expect("open db");
    let mut st = conn
        .prepare("SELECT kind, hex(key), value FROM source_state ORDER BY 1, 2")
        .expect("prepare");
    let rows = st
        .query_map([], |r| {
            let kind: String = r.get(0)?;
            let key: String = r.get(1)?;
            let value: Vec<u8> = r.get(2)?;
            Ok((kind, key, value))
        })
        .expect("query");
    rows.map(|r| {
        let (kind, key, value) = r.expect("row");
        let value = if kind == "file" {
            // Size and modification time differ between installations; the hash does not.
            let v: serde_json::Value = serde_json::from_slice(&value).expect("file entry");
            v["sha256"].as_str().expect("sha256").to_owned()
        } else {
            String::from_utf8_lossy(&value).into_owned()
        };
        format!("{kind}|{key}|{value}")
    })
    .collect()
}

fn iwmo_snapshot(inst: &Install) -> (Vec<String>, Vec<String>) {
    (index_snapshot(&inst.db()), state_snapshot(&inst.db()))
}

#[test]
fn sigkill_during_an_iwmo_run_leaves_index_and_message_state_consistent() {
    let reference = iwmo_install(None);
    assert!(reference.sync_json().0);
    let before = iwmo_snapshot(&reference);
    assert!(
        before.1.iter().any(|r| r.starts_with("pair|")),
        "state built"
    );
    iwmo_stops(&reference);
    let (ok, run) = reference.sync_json();
    assert!(ok, "{run}");
    let after = iwmo_snapshot(&reference);
    assert_ne!(before.0, after.0, "the stops change the index");
    assert_ne!(before.1, after.1, "and the state");
    let (ok, quiet) = reference.sync_json();
    assert!(ok && quiet["counts"]["read"] == 0, "{quiet}");

    for point in [
        "stage:1",
        "publish:begin",
        "publish:updated",
        "publish:commit",
        "publish:committed",
    ] {
        let inst = iwmo_install(Some(&reference));
        assert!(inst.sync_json().0);
        assert_eq!(iwmo_snapshot(&inst), before, "setup for {point}");
        iwmo_stops(&inst);
        kill_at(&inst, point);
        let now = iwmo_snapshot(&inst);
        assert!(
            now == before || now == after,
            "after SIGKILL at {point} index and state are not one complete state"
        );
        if point == "publish:committed" {
            assert!(now == after, "a committed run must survive");
        } else {
            assert!(now == before, "nothing published before commit ({point})");
        }
        let out = inst.mp(&["sync", "--json"]);
        assert!(
            out.status.success(),
            "recovery after {point}: {}",
            stderr(&out)
        );
        assert_eq!(iwmo_snapshot(&inst), after, "recovered after {point}");
        // The state is complete: the next run has nothing to read.
        let (ok, quiet) = inst.sync_json();
        assert!(ok && quiet["counts"]["read"] == 0, "after {point}: {quiet}");
    }
}
