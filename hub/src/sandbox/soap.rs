//! Simulated okc-6: a SOAP-style XML web service (`schemas/formats/soap.md`).
//!
//! `POST /okc-6/service` with HTTP basic auth `okc6` / `sandbox-okc-6` and a
//! `GetInvolvements` envelope (`pageSize`, optional `since` and `pageToken`); answers with a
//! `GetInvolvementsResponse` (`total`, `nextPageToken`) of `involvement` records in id
//! order, or a `soap:Fault` for a bad request.

use std::fmt::Write as _;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;

use super::Upstream;
use crate::generate::feed::FeedRecord;

/// Path of the service.
pub const PATH: &str = "/okc-6/service";
/// How a sync authenticates.
pub const AUTH_HINT: &str = "basic auth `okc6` / `sandbox-okc-6`";
/// `Authorization` header the sandbox accepts (`okc6:sandbox-okc-6`).
const BASIC: &str = "Basic b2tjNjpzYW5kYm94LW9rYy02";
/// Largest page served.
const MAX_PAGE: usize = 1000;
const ENV: &str = "http://schemas.xmlsoap.org/soap/envelope/";
const NS: &str = "urn:matchpoint:okc6:1";

fn esc(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            _ => out.push(c),
        }
    }
}

fn el(out: &mut String, name: &str, text: &str) {
    let _ = write!(out, "<{name}>");
    esc(out, text);
    let _ = write!(out, "</{name}>");
}

/// The text of the first element with local name `name` in `body` (no entities expected).
fn value<'a>(body: &'a str, name: &str) -> Option<&'a str> {
    let open = format!(":{name}>");
    let at = body.find(&open).map(|i| i + open.len()).or_else(|| {
        let plain = format!("<{name}>");
        body.find(&plain).map(|i| i + plain.len())
    })?;
    let rest = &body[at..];
    rest.find('<').map(|end| rest[..end].trim())
}

fn status_code(s: &str) -> &'static str {
    match s {
        "planned" => "aangemeld",
        "ended" => "afgesloten",
        _ => "actief",
    }
}

fn relation(kind: &str) -> &'static str {
    match kind {
        "parent" => "ouder",
        "child" => "kind",
        _ => "huisgenoot",
    }
}

/// Appends one `involvement` element.
fn render(out: &mut String, r: &FeedRecord, updated: &str, malformed: bool) {
    out.push_str("<m:involvement");
    if !malformed {
        out.push_str(" id=\"");
        esc(out, &r.id);
        out.push('"');
    }
    let _ = write!(out, " updated=\"{updated}\">");
    out.push_str("<client>");
    el(out, "bsn", &r.bsn);
    el(out, "naam", &r.name);
    el(
        out,
        "geboortedatum",
        &r.birth.format("%Y-%m-%d").to_string(),
    );
    out.push_str("</client><organisatie code=\"");
    esc(out, &r.org);
    out.push_str("\"/>");
    el(out, "team", &r.team);
    el(out, "domein", r.domain);
    el(out, "doel", &r.goal);
    out.push_str("<contactpersoon>");
    if let Some((name, role, phone, email)) = &r.contact {
        el(out, "naam", name);
        el(out, "functie", role);
        el(out, "telefoon", phone);
        el(out, "email", email);
    }
    out.push_str("</contactpersoon>");
    let _ = write!(out, "<periode begin=\"{}\"", r.start.format("%Y-%m-%d"));
    if let Some(end) = r.end {
        let _ = write!(out, " eind=\"{}\"", end.format("%Y-%m-%d"));
    }
    out.push_str("/>");
    el(out, "status", status_code(r.status));
    el(out, "regisseur", if r.coordinator { "ja" } else { "nee" });
    if !r.relations.is_empty() {
        out.push_str("<relaties>");
        for (bsn, kind) in &r.relations {
            let _ = write!(out, "<relatie soort=\"{}\" bsn=\"{bsn}\"/>", relation(kind));
        }
        out.push_str("</relaties>");
    }
    out.push_str("</m:involvement>");
}

fn xml(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/xml; charset=utf-8")],
        body,
    )
        .into_response()
}

fn fault(code: &str, message: &str) -> Response {
    let mut s = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<soap:Envelope xmlns:soap=\"{ENV}\"><soap:Body><soap:Fault><faultcode>{code}</faultcode><faultstring>"
    );
    esc(&mut s, message);
    s.push_str("</faultstring></soap:Fault></soap:Body></soap:Envelope>\n");
    xml(StatusCode::INTERNAL_SERVER_ERROR, s)
}

async fn service(State(up): State<Arc<Upstream>>, headers: HeaderMap, body: String) -> Response {
    let authorised = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == BASIC);
    if !authorised {
        return (StatusCode::UNAUTHORIZED, "basic authentication required\n").into_response();
    }
    if !body.contains("GetInvolvements") {
        return fault("soap:Client", "unknown operation; expected GetInvolvements");
    }
    let size = match value(&body, "pageSize").map(str::parse::<usize>) {
        Some(Ok(n)) if (1..=MAX_PAGE).contains(&n) => n,
        _ => return fault("soap:Client", "pageSize must be 1..1000"),
    };
    // The page token is `LAST_ID|SINCE`; the first page carries `since` itself.
    let (after, since) = match value(&body, "pageToken") {
        Some(t) => match t.split_once('|') {
            Some((a, s)) => (Some(a.to_owned()), (!s.is_empty()).then(|| s.to_owned())),
            None => return fault("soap:Client", "invalid pageToken"),
        },
        None => (None, value(&body, "since").map(str::to_owned)),
    };
    let recs = up.changed_since(since.as_deref());
    let start = match &after {
        Some(a) => recs.partition_point(|r| r.id.as_str() <= a.as_str()),
        None => 0,
    };
    let end = (start + size).min(recs.len());
    let slice = recs.get(start..end).unwrap_or(&[]);
    let mut out = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<soap:Envelope xmlns:soap=\"{ENV}\" xmlns:m=\"{NS}\"><soap:Body><m:GetInvolvementsResponse total=\"{}\"",
        recs.len()
    );
    if end < recs.len()
        && let Some(last) = slice.last()
    {
        out.push_str(" nextPageToken=\"");
        esc(
            &mut out,
            &format!("{}|{}", last.id, since.as_deref().unwrap_or("")),
        );
        out.push('"');
    }
    out.push_str(">\n");
    for r in slice {
        render(
            &mut out,
            r,
            &up.feed.timestamp(r.touched),
            up.malformed(&r.id),
        );
        out.push('\n');
    }
    out.push_str("</m:GetInvolvementsResponse></soap:Body></soap:Envelope>\n");
    up.served(slice.len());
    xml(StatusCode::OK, out)
}

/// The okc-6 router.
pub fn router(up: Arc<Upstream>) -> Router {
    Router::new().route(PATH, post(service)).with_state(up)
}
