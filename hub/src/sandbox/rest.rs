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
use serde::Serialize;
use serde_json::{Value, json};

use super::{Stamps, Upstream};
use crate::generate::feed::{FeedRecord, Ymd};

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

/// One record as okc-1 renders it, as a JSON value (the reference for [`Item`]).
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

// The wire form, serialized straight from the feed record: no `Value` tree per record.
// Members are declared in the order a `serde_json::Value` object writes them (sorted), so
// the bytes are those of [`render`] (a test checks it).

#[derive(Serialize)]
struct Client<'a> {
    birth_date: Ymd,
    bsn: &'a str,
    name: &'a str,
}

#[derive(Serialize)]
struct Contact<'a> {
    email: &'a str,
    name: &'a str,
    phone: &'a str,
    role: &'a str,
}

#[derive(Serialize)]
struct Organisation<'a> {
    code: &'a str,
}

#[derive(Serialize)]
struct Period {
    end: Option<Ymd>,
    start: Ymd,
}

#[derive(Serialize)]
struct Relation<'a> {
    bsn: &'a str,
    kind: &'a str,
}

/// A record's relations, serialized as an array of `{bsn, kind}`.
struct Relations<'a>(&'a [(String, &'static str)]);

impl Serialize for Relations<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(|(bsn, kind)| Relation { bsn, kind }))
    }
}

#[derive(Serialize)]
struct Record<'a> {
    client: Client<'a>,
    contact: Option<Contact<'a>>,
    coordinator: bool,
    domain: String,
    goal: &'a str,
    id: &'a str,
    organisation: Organisation<'a>,
    period: Period,
    relations: Relations<'a>,
    status: &'static str,
    team: &'a str,
    updated_at: &'a str,
}

/// One item of a page: a record, or the string a malformed record is rendered as.
#[derive(Serialize)]
#[serde(untagged)]
enum Item<'a> {
    Record(Box<Record<'a>>),
    Corrupt(&'static str),
}

impl<'a> Item<'a> {
    fn of(r: &'a FeedRecord, updated_at: &'a str) -> Self {
        Item::Record(Box::new(Record {
            client: Client {
                birth_date: Ymd(r.birth),
                bsn: &r.bsn,
                name: &r.name,
            },
            contact: r
                .contact
                .as_ref()
                .map(|(name, role, phone, email)| Contact {
                    email,
                    name,
                    phone,
                    role,
                }),
            coordinator: r.coordinator,
            domain: domain(r.domain),
            goal: &r.goal,
            id: &r.id,
            organisation: Organisation { code: &r.org },
            period: Period {
                end: r.end.map(Ymd),
                start: Ymd(r.start),
            },
            relations: Relations(&r.relations),
            status: status(r.status),
            team: &r.team,
            updated_at,
        }))
    }
}

/// A page as served: `next` is left out when the link travels in the `Link` header.
#[derive(Serialize)]
struct PageBody<'a> {
    items: Vec<Item<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next: Option<Option<String>>,
    total: usize,
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
    let stamps = Stamps::of(&up.feed, &page.records);
    let malformed = up.malformed_draw();
    let items: Vec<Item<'_>> = page
        .records
        .iter()
        .map(|r| {
            if malformed.is(&r.id) {
                Item::Corrupt("corrupt record")
            } else {
                Item::of(r, stamps.get(r.touched))
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
        let body = PageBody {
            items,
            next: None,
            total: page.total,
        };
        let mut resp = axum::Json(body).into_response();
        if let Some(n) = next
            && let Ok(v) = header::HeaderValue::from_str(&format!("<{n}>; rel=\"next\""))
        {
            resp.headers_mut().insert(header::LINK, v);
        }
        return resp;
    }
    axum::Json(PageBody {
        items,
        next: Some(next),
        total: page.total,
    })
    .into_response()
}

/// The okc-1 router.
pub fn router(up: Arc<Upstream>) -> Router {
    Router::new().route(PATH, get(page)).with_state(up)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generate::feed::Feed;

    /// The typed page writes exactly the bytes of the `Value` rendering it replaced: every
    /// record of a small feed (with and without contact, end date, relations), malformed
    /// items, and both forms of the page.
    #[test]
    fn typed_pages_are_byte_identical_to_the_value_rendering() {
        let feed = Feed::build("okc-1", "OKC1-", 400, 5, 0.7).expect("feed");
        let mut records: Vec<FeedRecord> = feed.changed_since(2, None).collect();
        // The feed gives every record a contact; the formats allow none.
        for r in records.iter_mut().step_by(7) {
            r.contact = None;
        }
        assert!(records.len() > 200, "{}", records.len());
        assert!(records.iter().any(|r| r.contact.is_none()));
        assert!(records.iter().any(|r| r.end.is_some()));
        assert!(records.iter().any(|r| r.relations.is_empty()));
        let stamps = Stamps::of(&feed, &records);
        let corrupt = |r: &FeedRecord| r.id.ends_with('7');
        let items: Vec<Item<'_>> = records
            .iter()
            .map(|r| {
                if corrupt(r) {
                    Item::Corrupt("corrupt record")
                } else {
                    Item::of(r, stamps.get(r.touched))
                }
            })
            .collect();
        let values: Vec<Value> = records
            .iter()
            .map(|r| {
                if corrupt(r) {
                    json!("corrupt record")
                } else {
                    render(r, &feed.timestamp(r.touched))
                }
            })
            .collect();
        for (item, value) in items.iter().zip(&values) {
            assert_eq!(
                serde_json::to_string(item).expect("item"),
                value.to_string()
            );
        }
        let next = Some("/okc-1/involvements?limit=5&after=OKC1-00000009".to_owned());
        let typed = PageBody {
            items,
            next: Some(next.clone()),
            total: 12,
        };
        assert_eq!(
            serde_json::to_string(&typed).expect("page"),
            json!({"total": 12, "items": values, "next": next}).to_string()
        );
        let typed = PageBody {
            items: Vec::new(),
            next: None,
            total: 0,
        };
        assert_eq!(
            serde_json::to_string(&typed).expect("page"),
            json!({"total": 0, "items": []}).to_string()
        );
    }
}
