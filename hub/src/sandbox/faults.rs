//! Fault injection for the simulated upstreams: a spec (`--faults`), a middleware that
//! applies it to any upstream's router, and a listener that resets connections.
//!
//! Spec: comma-separated items, e.g.
//! `latency=50ms,status=503:0.1,429:0.05:retry-after=1,reset=0.02,truncate=0.01,malformed=0.01`:
//!
//! - `latency=DURATION` (`ms` or `s`): delay before every answer;
//! - `status=CODE:SHARE[:retry-after=SECONDS]` (the `status=` may be left out after the
//!   first): answer that share of requests with that HTTP status (and `Retry-After`);
//! - `reset=SHARE`: close that share of new connections without an answer (every answer
//!   then says `Connection: close`, so each request opens a new connection);
//! - `truncate=SHARE`: cut that share of bodies in half;
//! - `garbage=SHARE`: replace that share of bodies with text that is no valid page;
//! - `malformed=SHARE`: the upstream renders that share of records malformed (per format);
//! - `empty=1`: the upstream delivers no records at all (a complete, empty delivery);
//! - `missing-view=1`: the SQL source's view is dropped (re-created when the fault is
//!   cleared).
//!
//! Decisions are drawn from the sandbox seed and a per-upstream request counter, so the same
//! seed and the same request sequence give the same faults. Paths under `/_sandbox/` are
//! never faulted.
//!
//! # Which items apply to which kind
//!
//! | item | HTTP (okc-1 REST, okc-5 FHIR, okc-6 SOAP) | XML export (okc-2), CSV drop (okc-3) | iWmo messages (wmo) | SQL views (okc-4, RIS) |
//! |---|---|---|---|---|
//! | `latency`, `status`, `reset` | yes | no (files) | no (files) | no |
//! | `truncate` | share of bodies cut in half | the delivery file cut mid-record | the last message file of the generation cut mid-element | no |
//! | `garbage` | share of bodies replaced | the delivery file replaced | the last message file replaced | no |
//! | `malformed` | share of records | share of records: a date in the wrong format (XML), one field short (CSV) | share of messages: a BSN that fails the elfproef | share of the rows of the next advance: an unknown life domain |
//! | `empty` | no records | a complete delivery without records | the advance writes no messages (a quiet night) | the advance writes no rows (a quiet night) |
//! | `missing-view` | no | no | no | the view is dropped |
//!
//! For files, any share above 0 of `truncate` and `garbage` applies to the whole delivery
//! (or the generation's last message file). File faults are applied when the spec is set
//! (`POST /_sandbox/faults` re-writes the current delivery; iWmo messages from generation 1)
//! and at every advance; see [`super::files`].

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::net::{TcpListener, TcpStream};

use super::Upstream;

/// One status fault.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusFault {
    /// HTTP status code.
    pub code: u16,
    /// Share of requests.
    pub share: f64,
    /// `Retry-After` seconds to send.
    pub retry_after: Option<u64>,
}

/// A parsed `--faults` spec.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FaultSpec {
    /// Delay before every answer.
    pub latency: Duration,
    /// Status faults, tried in order.
    pub statuses: Vec<StatusFault>,
    /// Share of new connections closed without an answer.
    pub reset: f64,
    /// Share of bodies cut in half.
    pub truncate: f64,
    /// Share of bodies replaced by garbage.
    pub garbage: f64,
    /// Share of records rendered malformed.
    pub malformed: f64,
    /// Above 0: deliveries are empty.
    pub empty: f64,
    /// Above 0: the SQL source's view is missing.
    pub missing_view: f64,
}

fn share(key: &str, v: &str) -> Result<f64, String> {
    let x: f64 = v
        .parse()
        .map_err(|_| format!("faults: `{key}` needs a share between 0 and 1, found `{v}`"))?;
    if !(0.0..=1.0).contains(&x) {
        return Err(format!(
            "faults: `{key}` share must be between 0 and 1, found {x}"
        ));
    }
    Ok(x)
}

fn duration(v: &str) -> Result<Duration, String> {
    let (num, unit) = if let Some(n) = v.strip_suffix("ms") {
        (n, 1)
    } else if let Some(n) = v.strip_suffix('s') {
        (n, 1000)
    } else {
        (v, 1)
    };
    num.parse::<u64>()
        .map(|n| Duration::from_millis(n * unit))
        .map_err(|_| format!("faults: latency `{v}` is not a duration like 50ms or 2s"))
}

impl FaultSpec {
    /// Parses a spec; an empty string is no faults.
    pub fn parse(spec: &str) -> Result<FaultSpec, String> {
        let mut f = FaultSpec::default();
        for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (key, value) = match item.split_once('=') {
                Some((k, v)) if !k.contains(':') => (k.trim(), v.trim()),
                _ => ("status", item),
            };
            match key {
                "latency" => f.latency = duration(value)?,
                "reset" => f.reset = share(key, value)?,
                "truncate" => f.truncate = share(key, value)?,
                "garbage" => f.garbage = share(key, value)?,
                "malformed" => f.malformed = share(key, value)?,
                "empty" => f.empty = share(key, value)?,
                "missing-view" => f.missing_view = share(key, value)?,
                "status" => {
                    let mut parts = value.split(':');
                    let code = parts
                        .next()
                        .and_then(|c| c.parse::<u16>().ok())
                        .filter(|c| (400..600).contains(c))
                        .ok_or_else(|| {
                            format!("faults: `{item}`: expected CODE:SHARE with a 4xx/5xx code")
                        })?;
                    let s = share(item, parts.next().unwrap_or(""))?;
                    let mut retry_after = None;
                    for p in parts {
                        let secs = p
                            .strip_prefix("retry-after=")
                            .and_then(|n| n.parse::<u64>().ok())
                            .ok_or_else(|| {
                                format!("faults: `{item}`: `{p}` is not retry-after=SECONDS")
                            })?;
                        retry_after = Some(secs);
                    }
                    f.statuses.push(StatusFault {
                        code,
                        share: s,
                        retry_after,
                    });
                }
                other => {
                    return Err(format!(
                        "faults: unknown item `{other}` (known: latency, status, reset, truncate, garbage, malformed, empty, missing-view)"
                    ));
                }
            }
        }
        if f.statuses.iter().map(|s| s.share).sum::<f64>() > 1.0 {
            return Err("faults: the status shares add up to more than 1".into());
        }
        Ok(f)
    }
}

/// A deterministic draw in `[0, 1)` from a seed and a counter.
pub fn draw(seed: u64, n: u64) -> f64 {
    let mut z = seed ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

/// The middleware: applies the upstream's current fault spec to one request and logs it.
pub async fn layer(State(up): State<Arc<Upstream>>, req: Request, next: Next) -> Response {
    if req.uri().path().starts_with("/_sandbox/") {
        return next.run(req).await;
    }
    let spec = up.faults();
    let n = up.requests.fetch_add(1, Ordering::Relaxed);
    let seed = up.seed;
    if !spec.latency.is_zero() {
        tokio::time::sleep(spec.latency).await;
    }
    let mut u = draw(seed, n);
    for s in &spec.statuses {
        if u < s.share {
            let mut resp = (
                StatusCode::from_u16(s.code).unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
                "injected fault\n",
            )
                .into_response();
            if let Some(ra) = s.retry_after
                && let Ok(v) = HeaderValue::from_str(&ra.to_string())
            {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
            up.log(s.code, s.retry_after);
            return close_if(resp, spec.reset > 0.0);
        }
        u -= s.share;
    }
    let resp = next.run(req).await;
    let status = resp.status().as_u16();
    up.log(status, None);
    let body_fault = draw(seed ^ 0xB0D1, n);
    let resp = if body_fault < spec.truncate {
        let (mut parts, body) = resp.into_parts();
        let bytes = to_bytes(body, usize::MAX).await.unwrap_or_default();
        parts.headers.remove(header::CONTENT_LENGTH);
        Response::from_parts(parts, Body::from(bytes.slice(..bytes.len() / 2)))
    } else if body_fault < spec.truncate + spec.garbage {
        let (mut parts, _) = resp.into_parts();
        parts.headers.remove(header::CONTENT_LENGTH);
        Response::from_parts(parts, Body::from("%%% this is not a page %%%"))
    } else {
        resp
    };
    close_if(resp, spec.reset > 0.0)
}

fn close_if(mut resp: Response, close: bool) -> Response {
    if close {
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

/// A listener that closes a share of new connections at once (the `reset` fault).
pub struct FaultyListener {
    /// The real listener.
    pub inner: TcpListener,
    /// The upstream whose fault spec applies.
    pub upstream: Arc<Upstream>,
    /// Connections accepted so far.
    pub accepted: AtomicU64,
}

impl axum::serve::Listener for FaultyListener {
    type Io = TcpStream;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let (stream, addr) = match self.inner.accept().await {
                Ok(x) => x,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            let n = self.accepted.fetch_add(1, Ordering::Relaxed);
            let reset = self.upstream.faults().reset;
            if reset > 0.0 && draw(self.upstream.seed ^ 0x5E5E, n) < reset {
                let _ = stream.set_zero_linger();
                self.upstream.log(0, None);
                drop(stream);
                continue;
            }
            // Answers go out at once, not held back waiting for the client's ACK.
            let _ = stream.set_nodelay(true);
            return (stream, addr);
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_spec_parses() {
        let f = FaultSpec::parse(
            "latency=50ms,status=503:0.1,429:0.05:retry-after=1,reset=0.02,truncate=0.01,malformed=0.01",
        )
        .expect("spec");
        assert_eq!(f.latency, Duration::from_millis(50));
        assert_eq!(
            f.statuses,
            vec![
                StatusFault {
                    code: 503,
                    share: 0.1,
                    retry_after: None
                },
                StatusFault {
                    code: 429,
                    share: 0.05,
                    retry_after: Some(1)
                }
            ]
        );
        assert_eq!((f.reset, f.truncate, f.malformed), (0.02, 0.01, 0.01));
        assert_eq!(FaultSpec::parse("").expect("empty"), FaultSpec::default());
    }

    #[test]
    fn bad_specs_are_named() {
        for bad in [
            "latency=fast",
            "status=200:0.1",
            "reset=2",
            "boom=1",
            "503:0.7,500:0.7",
        ] {
            let err = FaultSpec::parse(bad).expect_err(bad);
            assert!(err.starts_with("faults:"), "{err}");
        }
    }

    proptest::proptest! {
        /// Any text parses or is refused with a message; never a panic.
        #[test]
        fn any_spec_text_is_handled(text in "[a-z0-9=:,.-]{0,40}") {
            if let Err(e) = FaultSpec::parse(&text) {
                proptest::prop_assert!(e.starts_with("faults:"));
            }
        }
    }

    #[test]
    fn draws_are_deterministic_and_spread() {
        assert_eq!(draw(1, 2), draw(1, 2));
        let below = (0..10_000).filter(|n| draw(9, *n) < 0.1).count();
        assert!((800..1200).contains(&below), "{below}");
    }
}
