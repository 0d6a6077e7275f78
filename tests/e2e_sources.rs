//! End-to-end: delivery locations — an incremental folder of exports with a cursor, and an
//! export served over HTTP on loopback (including a short body).

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;

use common::{Install, index_snapshot, rewrite_export, stderr};

fn set_source(inst: &Install, location: &str, mode: &str) {
    let path = inst.path("matchpoint.toml");
    let text = std::fs::read_to_string(&path).expect("config");
    let text = text
        .replace(
            "location = \"data/okc-2/export.xml\"",
            &format!("location = \"{location}\""),
        )
        .replace("mode = \"full\"", &format!("mode = \"{mode}\""));
    std::fs::write(path, text).expect("write config");
}

#[test]
fn an_incremental_folder_is_read_file_by_file_and_the_cursor_moves_with_published_data() {
    let inst = Install::new(200, 21, 0.0);
    let export = std::fs::read_to_string(inst.export()).expect("export");
    let deltas = inst.path("deltas");
    std::fs::create_dir_all(&deltas).expect("mkdir");
    // Day 1: the first half of the records; day 2: the second half.
    std::fs::write(deltas.join("2026-11-01.xml"), &export).expect("write");
    rewrite_export(&deltas.join("2026-11-01.xml"), |i, r| {
        (i % 2 == 0).then(|| r.to_owned())
    });
    std::fs::write(deltas.join("2026-11-02.xml"), &export).expect("write");
    rewrite_export(&deltas.join("2026-11-02.xml"), |i, r| {
        (i % 2 == 1).then(|| r.to_owned())
    });
    set_source(&inst, "deltas", "incremental");

    let (ok, first) = inst.sync_json();
    assert!(ok, "{first}");
    assert_eq!(first["mode"], "incremental");
    let all = first["counts"]["inserted"].as_u64().expect("inserted");
    assert!(all > 250, "{first}");
    let conn = rusqlite::Connection::open(inst.db()).expect("db");
    let cursor: String = conn
        .query_row("SELECT cursor FROM sources WHERE name = 'okc-2'", [], |r| {
            r.get(0)
        })
        .expect("cursor");
    assert_eq!(cursor, "2026-11-02.xml");

    // A quiet night: no new file, nothing read, nothing changes, the run succeeds.
    let before = index_snapshot(&inst.db());
    let (ok, quiet) = inst.sync_json();
    assert!(ok, "{quiet}");
    assert_eq!(quiet["counts"]["read"], 0);
    assert_eq!(index_snapshot(&inst.db()), before);

    // Day 3 holds only a few records: incremental runs never end what is absent.
    std::fs::write(deltas.join("2026-11-03.xml"), &export).expect("write");
    rewrite_export(&deltas.join("2026-11-03.xml"), |i, r| {
        (i < 5).then(|| r.replace("<team>", "<team>Nieuw "))
    });
    let (ok, third) = inst.sync_json();
    assert!(ok, "{third}");
    assert_eq!(third["counts"]["ended"], 0);
    assert_eq!(third["counts"]["read"], 5);
    assert_eq!(third["counts"]["updated"], 5);

    // A failed delivery does not move the cursor.
    std::fs::write(
        deltas.join("2026-11-04.xml"),
        "<export aantal=\"1\"><dossier id=\"x\">",
    )
    .expect("write");
    let (ok, failed) = inst.sync_json();
    assert!(!ok);
    assert_eq!(failed["status"], "failed");
    let cursor: String = conn
        .query_row("SELECT cursor FROM sources WHERE name = 'okc-2'", [], |r| {
            r.get(0)
        })
        .expect("cursor");
    assert_eq!(cursor, "2026-11-03.xml");

    // `--full` reconciles from the newest file: a full snapshot of day 5 ends the rest.
    std::fs::remove_file(deltas.join("2026-11-04.xml")).expect("rm");
    std::fs::write(deltas.join("2026-11-05.xml"), &export).expect("write");
    let out = inst.mp(&["sync", "--full", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v[0]["mode"], "full");
    assert_eq!(
        v[0]["counts"]["updated"], 5,
        "the day-3 changes are reverted by the snapshot"
    );
}

/// Serves one response per connection on loopback: `body`, announcing `announce` bytes.
fn serve(body: Vec<u8>, announce: usize, connections: usize) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        for stream in listener.incoming().take(connections) {
            let Ok(mut stream) = stream else { return };
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            let mut line = String::new();
            while reader.read_line(&mut line).map(|n| n > 2).unwrap_or(false) {
                line.clear();
            }
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/xml\r\nContent-Length: {announce}\r\nConnection: close\r\n\r\n"
            );
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(&body);
        }
    });
    format!("http://{addr}/export.xml")
}

#[test]
fn an_export_served_over_http_syncs_and_a_short_body_fails_the_run() {
    let inst = Install::new(150, 22, 0.0);
    let body = std::fs::read(inst.export()).expect("export");
    let url = serve(body.clone(), body.len(), 1);
    set_source(&inst, &url, "full");
    let (ok, run) = inst.sync_json();
    assert!(ok, "{run}");
    assert!(
        run["counts"]["inserted"].as_u64().unwrap_or(0) > 150,
        "{run}"
    );
    let before = index_snapshot(&inst.db());

    // The server announces the full length but closes after two thirds.
    let url2 = serve(body[..body.len() * 2 / 3].to_vec(), body.len(), 1);
    let text = std::fs::read_to_string(inst.path("matchpoint.toml")).expect("config");
    std::fs::write(inst.path("matchpoint.toml"), text.replace(&url, &url2)).expect("config");
    let (ok, run) = inst.sync_json();
    assert!(!ok);
    assert_eq!(run["status"], "failed", "{run}");
    assert_eq!(index_snapshot(&inst.db()), before);
}
