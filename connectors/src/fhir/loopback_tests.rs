//! The FHIR connector against small canned HTTP servers on loopback: the cursor cap,
//! relative next links, paging loops, the body cap and short bodies.

use std::time::Duration;

use serde_json::json;

use super::*;

/// A tiny HTTP/1.1 server on loopback that answers each connection with the next canned
/// response and records the request lines it saw.
struct Canned {
    base: String,
    seen: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

/// One canned answer: status, extra headers, body.
type Answer = (u16, Vec<(&'static str, String)>, String);

fn canned(responses: Vec<Answer>) -> Canned {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let base = format!("http://{}/fhir", listener.local_addr().expect("addr"));
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for (status, headers, body) in responses {
            let Ok((stream, _)) = listener.accept() else {
                return;
            };
            let mut reader = BufReader::new(stream);
            let mut line = String::new();
            let _ = reader.read_line(&mut line);
            log.lock().expect("log").push(line.trim().to_owned());
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                    break;
                }
            }
            let mut stream = reader.into_inner();
            let mut head = format!("HTTP/1.1 {status} X\r\nConnection: close\r\n");
            let mut has_length = false;
            for (k, v) in &headers {
                has_length |= k.eq_ignore_ascii_case("content-length");
                head.push_str(&format!("{k}: {v}\r\n"));
            }
            if !has_length {
                head.push_str(&format!("Content-Length: {}\r\n", body.len()));
            }
            head.push_str("\r\n");
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(body.as_bytes());
        }
    });
    Canned { base, seen }
}

fn bundle(snapshot: &str, updated: &[&str], next: Option<&str>) -> String {
    let mut entries = Vec::new();
    for (i, u) in updated.iter().enumerate() {
        entries.push(
            json!({"resource": {"resourceType": "EpisodeOfCare", "id": format!("e{u}{i}"),
            "meta": {"lastUpdated": u}, "patient": {"reference": "Patient/p"}},
            "search": {"mode": "match"}}),
        );
    }
    entries.push(
        json!({"resource": {"resourceType": "Patient", "id": "p"}, "search": {"mode": "include"}}),
    );
    let mut links = vec![];
    if let Some(n) = next {
        links.push(json!({"relation": "next", "url": n}));
    }
    json!({"resourceType": "Bundle", "type": "searchset", "meta": {"lastUpdated": snapshot},
        "total": 3, "link": links, "entry": entries})
    .to_string()
}

fn connector_for(base: &str, max_page_bytes: u64) -> FhirConnector {
    FhirConnector::new(
        HttpClient::new(
            base,
            Duration::from_secs(5),
            crate::http::Auth::None,
            1 << 20,
        )
        .expect("client"),
        FhirSettings {
            base_url: base.to_owned(),
            page_size: 2,
            max_page_bytes,
            organization_system: None,
        },
    )
    .expect("connector")
}

/// The cursor is the largest lastUpdated delivered (as instants, not text), but an episode
/// changed after the search started does not move it past the search's own time.
#[test]
fn the_cursor_never_passes_the_moment_the_search_ran() {
    let server = canned(vec![
        (
            200,
            vec![],
            bundle(
                "2026-11-23T02:00:00Z",
                &["2026-11-23T01:00:00Z", "2026-11-23T01:30:00+01:00"],
                Some("EpisodeOfCare?page=2"),
            ),
        ),
        (
            200,
            vec![],
            bundle("2026-11-23T02:00:05Z", &["2026-11-23T02:00:03Z"], None),
        ),
    ]);
    let mut c = connector_for(&server.base, 1 << 20);
    let first = c
        .fetch(&PageRequest::First {
            since: Some("2026-11-01T00:00:00Z".into()),
        })
        .expect("page 1");
    // 01:30+01:00 is 00:30Z: later as text, earlier as an instant than 01:00Z.
    assert_eq!(first.cursor.as_deref(), Some("2026-11-23T01:00:00Z"));
    let next = first.next.expect("next link");
    let second = c.fetch(&PageRequest::Next(next)).expect("page 2");
    assert_eq!(second.cursor.as_deref(), Some("2026-11-23T02:00:00Z"));
    assert_eq!(second.records.len(), 1);
    let seen = server.seen.lock().expect("log").clone();
    assert!(
        seen[0].contains("_lastUpdated=gt2026-11-01T00%3A00%3A00Z"),
        "{seen:?}"
    );
    assert!(
        seen[1].starts_with("GET /fhir/EpisodeOfCare?page=2 "),
        "{seen:?}"
    );
}

#[test]
fn a_next_link_to_the_page_itself_is_a_loop() {
    let server = canned(vec![
        (
            200,
            vec![],
            bundle(
                "2026-11-23T02:00:00Z",
                &["2026-11-22T10:00:00Z"],
                Some("EpisodeOfCare?page=2"),
            ),
        ),
        (
            200,
            vec![],
            bundle(
                "2026-11-23T02:00:00Z",
                &["2026-11-22T10:00:00Z"],
                Some("EpisodeOfCare?page=2"),
            ),
        ),
    ]);
    let mut c = connector_for(&server.base, 1 << 20);
    let first = c
        .fetch(&PageRequest::First { since: None })
        .expect("page 1");
    let second = c
        .fetch(&PageRequest::Next(first.next.expect("next")))
        .expect("page 2");
    let err = c
        .fetch(&PageRequest::Next(second.next.expect("next")))
        .expect_err("loop");
    assert!(
        err.to_string().contains("points to the page itself"),
        "{err}"
    );
}

#[test]
fn bodies_over_the_cap_and_short_bodies_fail_the_run() {
    let body = bundle("2026-11-23T02:00:00Z", &["2026-11-22T10:00:00Z"], None);
    let server = canned(vec![
        (200, vec![], body.clone()),
        (
            200,
            vec![("Transfer-Encoding", "chunked".to_owned())],
            format!("{:x}\r\n{body}\r\n0\r\n\r\n", body.len()),
        ),
        (
            200,
            vec![("Content-Length", (body.len() + 50).to_string())],
            body.clone(),
        ),
    ]);
    let small = u64::try_from(body.len() / 2).expect("len");
    let mut c = connector_for(&server.base, small);
    let announced = c
        .fetch(&PageRequest::First { since: None })
        .expect_err("announced too big");
    assert!(
        matches!(announced, FetchError::Fatal(DeliveryError::Limit { .. })),
        "{announced:?}"
    );
    let streamed = c
        .fetch(&PageRequest::First { since: None })
        .expect_err("too big");
    assert!(
        matches!(streamed, FetchError::Fatal(DeliveryError::Limit { .. })),
        "{streamed:?}"
    );
    assert!(
        streamed.to_string().contains("paging.max_page_bytes"),
        "{streamed}"
    );
    let mut c = connector_for(&server.base, 1 << 20);
    let short = c
        .fetch(&PageRequest::First { since: None })
        .expect_err("short");
    assert!(
        matches!(short, FetchError::Fatal(DeliveryError::Truncated { .. })),
        "{short:?}"
    );
}
