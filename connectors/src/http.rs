//! HTTP plumbing shared by the HTTP paged kinds (REST/JSON, SOAP, FHIR): authentication,
//! classification of failures into [`FetchError`]s, and size-capped response bodies.
//!
//! - connection problems, timeouts and HTTP 429/500/502/503/504 are
//!   [`FetchError::Transient`] (with the server's `Retry-After` in seconds, when given);
//! - 401/403 and every other non-success status are fatal, with a hint what to check;
//! - a body larger than the cap fails with [`DeliveryError::Limit`] without being buffered;
//!   a body that ends before its `Content-Length` (or breaks off) is
//!   [`DeliveryError::Truncated`].
//!
//! Secrets never appear in messages or `Debug` output.

use std::fmt;
use std::io::{self, Read};
use std::time::Duration;

use reqwest::blocking::{Client, RequestBuilder, Response};
use reqwest::header::{HeaderMap, RETRY_AFTER};

use crate::DeliveryError;
use crate::paged::FetchError;

/// A secret value (token or password); `Debug` shows nothing of it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret, trimming the trailing newline a secret file usually has.
    pub fn new(value: &str) -> Self {
        Secret(value.trim_end_matches(['\r', '\n']).to_owned())
    }

    fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(…)")
    }
}

/// How requests authenticate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Auth {
    /// No credentials.
    #[default]
    None,
    /// `Authorization: Bearer TOKEN`.
    Bearer(Secret),
    /// HTTP basic authentication.
    Basic {
        /// User name.
        username: String,
        /// Password.
        password: Secret,
    },
}

/// A blocking HTTP client for one source: timeouts, credentials and a body cap.
#[derive(Debug, Clone)]
pub struct HttpClient {
    client: Client,
    auth: Auth,
    max_body: u64,
    location: String,
}

impl HttpClient {
    /// A client for `location` (named in messages) with a per-request `timeout` and bodies of
    /// at most `max_body` bytes.
    pub fn new(
        location: &str,
        timeout: Duration,
        auth: Auth,
        max_body: u64,
    ) -> Result<Self, DeliveryError> {
        let client = Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(30)))
            .build()
            .map_err(|e| DeliveryError::Io {
                location: location.to_owned(),
                message: e.to_string(),
            })?;
        Ok(HttpClient {
            client,
            auth,
            max_body,
            location: location.to_owned(),
        })
    }

    /// Where this client goes, for messages.
    pub fn location(&self) -> &str {
        &self.location
    }

    /// A GET with credentials.
    pub fn get(&self, url: &str) -> RequestBuilder {
        self.authenticate(self.client.get(url))
    }

    /// A POST with credentials.
    pub fn post(&self, url: &str) -> RequestBuilder {
        self.authenticate(self.client.post(url))
    }

    fn authenticate(&self, rb: RequestBuilder) -> RequestBuilder {
        match &self.auth {
            Auth::None => rb,
            Auth::Bearer(t) => rb.bearer_auth(t.expose()),
            Auth::Basic { username, password } => rb.basic_auth(username, Some(password.expose())),
        }
    }

    /// Sends a request and classifies the outcome. `accept_fault` lets a kind read the body
    /// of a 500 response itself (SOAP faults travel as HTTP 500).
    pub fn send(
        &self,
        rb: RequestBuilder,
        accept_fault: bool,
    ) -> Result<(Response, CappedBody), FetchError> {
        let resp = rb.send().map_err(|e| {
            let kind = if e.is_timeout() {
                "timed out"
            } else if e.is_connect() {
                "connection failed"
            } else {
                "request failed"
            };
            FetchError::Transient {
                message: format!("{}: {kind} ({})", self.location, e.without_url()),
                retry_after: None,
            }
        })?;
        let status = resp.status();
        let fault_body = accept_fault && status.as_u16() == 500;
        if !(status.is_success() || fault_body) {
            let code = status.as_u16();
            if matches!(code, 429 | 500 | 502 | 503 | 504) {
                return Err(FetchError::Transient {
                    message: format!("{}: HTTP {status}", self.location),
                    retry_after: retry_after(resp.headers()),
                });
            }
            let hint = match code {
                401 | 403 => {
                    " (credentials refused: check the [source.http] auth settings and the secret they point to)"
                }
                404 => " (check the source's location)",
                _ => "",
            };
            return Err(FetchError::Fatal(DeliveryError::Io {
                location: self.location.clone(),
                message: format!("HTTP {status}{hint}"),
            }));
        }
        if let Some(len) = resp.content_length().filter(|&l| l > self.max_body) {
            return Err(FetchError::Fatal(DeliveryError::Limit {
                location: self.location.clone(),
                message: format!(
                    "server announces a page of {len} bytes, more than the configured limit of {} bytes (paging.max_page_bytes)",
                    self.max_body
                ),
            }));
        }
        let body = CappedBody {
            expected: resp.content_length(),
            read: 0,
            cap: self.max_body,
        };
        Ok((resp, body))
    }

    /// Turns an I/O error met while reading a body into the delivery error it means.
    pub fn body_error(&self, e: &io::Error) -> DeliveryError {
        body_error(&self.location, e)
    }
}

/// Turns an I/O error met while reading a body from `location` into the delivery error it
/// means: the body cap ([`DeliveryError::Limit`]) or a body that broke off
/// ([`DeliveryError::Truncated`]).
pub fn body_error(location: &str, e: &io::Error) -> DeliveryError {
    let text = e.to_string();
    if let Some(idx) = text.find(CAP_MARKER) {
        return DeliveryError::Limit {
            location: location.to_owned(),
            message: text[idx + CAP_MARKER.len()..].trim().to_owned(),
        };
    }
    DeliveryError::Truncated {
        location: location.to_owned(),
        message: format!("the response body broke off ({text})"),
    }
}

const CAP_MARKER: &str = "matchpoint-body-cap:";

/// The counting state of one response body; wrap the response with [`CappedBody::reader`].
#[derive(Debug, Clone, Copy)]
pub struct CappedBody {
    expected: Option<u64>,
    read: u64,
    cap: u64,
}

/// A reader over a response that fails once more than the cap arrives, and reports a body
/// shorter than its `Content-Length` as an error.
pub struct CappedReader<R> {
    inner: R,
    state: CappedBody,
}

impl CappedBody {
    /// A capped reader over `inner`.
    pub fn reader<R: Read>(self, inner: R) -> CappedReader<R> {
        CappedReader { inner, state: self }
    }
}

impl<R> CappedReader<R> {
    /// Bytes read so far.
    pub fn bytes(&self) -> u64 {
        self.state.read
    }
}

impl<R: Read> Read for CappedReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let room = self
            .state
            .cap
            .saturating_sub(self.state.read)
            .saturating_add(1);
        let want = usize::try_from(room).map_or(buf.len(), |r| r.min(buf.len()));
        let n = self.inner.read(&mut buf[..want])?;
        self.state.read += n as u64;
        if self.state.read > self.state.cap {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{CAP_MARKER} the response body exceeds the configured limit of {} bytes (paging.max_page_bytes)",
                    self.state.cap
                ),
            ));
        }
        if n == 0
            && let Some(exp) = self.state.expected
            && self.state.read < exp
        {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{} of {exp} announced bytes arrived", self.state.read),
            ));
        }
        Ok(n)
    }
}

/// `Retry-After` in seconds (the HTTP-date form is not used by the sources we know).
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get(RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_do_not_show_in_debug() {
        let a = Auth::Bearer(Secret::new("s3cr3t\n"));
        assert!(!format!("{a:?}").contains("s3cr3t"));
        assert_eq!(Secret::new("x\r\n").expose(), "x");
    }

    #[test]
    fn capped_reader_stops_at_the_cap() {
        let data = [b'a'; 100];
        let body = CappedBody {
            expected: None,
            read: 0,
            cap: 10,
        };
        let mut r = body.reader(&data[..]);
        let mut out = Vec::new();
        let err = r.read_to_end(&mut out).unwrap_err();
        assert!(err.to_string().contains("max_page_bytes"));
        assert!(out.len() <= 11);
    }

    #[test]
    fn capped_reader_reports_a_short_body() {
        let data = [b'a'; 5];
        let body = CappedBody {
            expected: Some(8),
            read: 0,
            cap: 100,
        };
        let mut out = Vec::new();
        let err = body.reader(&data[..]).read_to_end(&mut out).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn retry_after_seconds() {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, "2".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(2)));
        h.insert(
            RETRY_AFTER,
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&h), None);
    }
}
