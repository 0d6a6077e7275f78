//! Simulated okc-1: a paginated REST/JSON API (`schemas/formats/rest-json.md`).
//!
//! `GET /okc-1/involvements?limit=N[&updated_since=TS][&after=ID]` with
//! `Authorization: Bearer sandbox-okc-1`: records in id order, `next` as a relative link
//! (keyset paging on the record id), `total` the number of records of the whole delivery.
//! With `links=header` in the query, the next link comes as `Link: <…>; rel="next"`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

use super::Upstream;
use crate::generate::feed::FeedRecord;

/// Path of the collection.
pub const PATH: &str = "/okc-1/involvements";
/// The token the sandbox accepts.
pub const TOKEN: &str = "sandbox-okc-1";
/// How a sync authenticates.
pub const AUTH_HINT: &str = "bearer token `sandbox-okc-1`";
/// Largest page served.
const MAX_LIMIT: usize = 1000;

/// okc-1's own life-domain codes: okc-2's, in lower case.
fn domain(code: &str) -> String {
    code.to_ascii_lowercase()
}

fn status(s: &str) -> &'static str {
    match s {
        "planned" => "registered",
        "ended" => "closed",
        _ => "active",
    }
}

/// One record as okc-1 renders it.
pub fn render(r: &FeedRecord, updated_at: &str) -> Value {
    let contact = r.contact.as_ref().map(|(name, role, phone, email)| {
        json!({"name": name, "role": role, "phone": phone, "email": email})
    });
    json!({
        "id": r.id,
        "updated_at": updated_at,
        "client": {"bsn": r.bsn, "name": r.name, "birth_date": r.birth.format("%Y-%m-%d").to_string()},
        "organisation": {"code": r.org},
        "team": r.team,
        "domain": domain(r.domain),
        "goal": r.goal,
        "contact": contact,
        "period": {
            "start": r.start.format("%Y-%m-%d").to_string(),
            "end": r.end.map(|d| d.format("%Y-%m-%d").to_string()),
        },
        "status": status(r.status),
        "coordinator": r.coordinator,
        "relations": r.relations.iter().map(|(bsn, kind)| json!({"bsn": bsn, "kind": kind})).collect::<Vec<_>>(),
    })
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

async fn page(
    State(up): State<Arc<Upstream>>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let authorised = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == format!("Bearer {TOKEN}"));
    if !authorised {
        return (StatusCode::UNAUTHORIZED, "bearer token required\n").into_response();
    }
    let limit = match q.get("limit").map(|l| l.parse::<usize>()) {
        None => 100,
        Some(Ok(l)) if (1..=MAX_LIMIT).contains(&l) => l,
        Some(_) => {
            return (
                StatusCode::BAD_REQUEST,
                format!("limit must be 1..={MAX_LIMIT}\n"),
            )
                .into_response();
        }
    };
    let since = q.get("updated_since").map(String::as_str);
    // `links=header`: the next page's link travels in a `Link` header instead of the body.
    let link_header = q.get("links").is_some_and(|l| l == "header");
    let page = up.page(since, q.get("after").map(String::as_str), limit);
    let items: Vec<Value> = page
        .records
        .iter()
        .map(|r| {
            if up.malformed(&r.id) {
                json!("corrupt record")
            } else {
                render(r, &up.feed.timestamp(r.touched))
            }
        })
        .collect();
    let next = page
        .more
        .then(|| page.records.last())
        .flatten()
        .map(|last| {
            let mut n = format!("{PATH}?limit={limit}&after={}", encode(&last.id));
            if let Some(s) = since {
                n.push_str(&format!("&updated_since={}", encode(s)));
            }
            if link_header {
                n.push_str("&links=header");
            }
            n
        });
    if link_header {
        let mut resp = axum::Json(json!({"total": page.total, "items": items})).into_response();
        if let Some(n) = next
            && let Ok(v) = header::HeaderValue::from_str(&format!("<{n}>; rel=\"next\""))
        {
            resp.headers_mut().insert(header::LINK, v);
        }
        return resp;
    }
    axum::Json(json!({"total": page.total, "items": items, "next": next})).into_response()
}

/// The okc-1 router.
pub fn router(up: Arc<Upstream>) -> Router {
    Router::new().route(PATH, get(page)).with_state(up)
}
