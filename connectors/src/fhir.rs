//! FHIR R4 REST (JSON): `EpisodeOfCare` searches with their `Patient`, `Organization`,
//! `CareTeam`, `Practitioner` and `RelatedPerson` resources, as a [`PagedConnector`].
//!
//! One search per run (the profile is in `schemas/formats/fhir-r4.md`):
//!
//! ```text
//! GET {base}/EpisodeOfCare?_count=N&_sort=_lastUpdated[&_lastUpdated=gt{cursor}]
//!     &_include=EpisodeOfCare:patient&_include=EpisodeOfCare:organization
//!     &_include=EpisodeOfCare:care-manager&_include=EpisodeOfCare:team
//!     &_include:iterate=CareTeam:participant&_revinclude:iterate=RelatedPerson:patient
//! ```
//!
//! then every `link[relation=next]` of the returned searchset Bundles, on the same server
//! only. Each matched `EpisodeOfCare` is resolved with the resources included in its own page
//! into one [`matchpoint_schemas::RawRecord`] ([`bundle`]), so memory is bounded by one page:
//! `_count` is capped at [`MAX_PAGE_SIZE`] and each body at `max_page_bytes`. A page is parsed
//! into a light tree ([`node`]: strings borrowed from the body, objects as member lists)
//! that answers lookups as a `serde_json::Value` would, at a fraction of its cost.
//!
//! Incremental runs search `_lastUpdated=gt<cursor>`; the cursor is the largest
//! `meta.lastUpdated` of the episodes delivered, but never later than the moment the server
//! ran the search (`Bundle.meta.lastUpdated` of the first page), so an episode changed while
//! the run pages on is fetched again next time rather than skipped. `Bundle.total` is handed
//! to the runner as the announced total. An `OperationOutcome` answer fails the run with its
//! issue codes (never its diagnostics text); HTTP 429 and 5xx are transient, with the
//! server's `Retry-After`.

pub mod bundle;
pub mod node;

#[cfg(test)]
mod loopback_tests;
#[cfg(test)]
mod tests;

use std::io::Read;
use std::time::Duration;

use reqwest::Url;
use reqwest::blocking::Response;
use reqwest::header::{ACCEPT, RETRY_AFTER};

use self::bundle::{BundleError, DecodeOptions, Instant, decode_bundle};
use crate::DeliveryError;
use crate::http::HttpClient;
use crate::paged::{FetchError, Page, PageRequest, PagedConnector};

/// Largest `_count` the connector asks for.
pub const MAX_PAGE_SIZE: u32 = 1000;

/// The `_include` / `_revinclude` parameters of every search.
pub const INCLUDES: &[(&str, &str)] = &[
    ("_include", "EpisodeOfCare:patient"),
    ("_include", "EpisodeOfCare:organization"),
    ("_include", "EpisodeOfCare:care-manager"),
    ("_include", "EpisodeOfCare:team"),
    ("_include:iterate", "CareTeam:participant"),
    ("_revinclude:iterate", "RelatedPerson:patient"),
];

/// What to ask one FHIR server for. Timeout, credentials and body cap are the
/// [`HttpClient`]'s.
#[derive(Debug, Clone)]
pub struct FhirSettings {
    /// The service base URL, e.g. `https://fhir.example/r4` (no trailing `/EpisodeOfCare`).
    pub base_url: String,
    /// `_count`: episodes per page (1 ..= [`MAX_PAGE_SIZE`]).
    pub page_size: u32,
    /// Most bytes of one response body (the same cap as the client's).
    pub max_page_bytes: u64,
    /// Which `Organization.identifier` system to deliver as `organization.identifier`.
    pub organization_system: Option<String>,
}

impl Default for FhirSettings {
    fn default() -> Self {
        FhirSettings {
            base_url: String::new(),
            page_size: 100,
            max_page_bytes: 16 << 20,
            organization_system: None,
        }
    }
}

/// A FHIR R4 `EpisodeOfCare` source.
pub struct FhirConnector {
    settings: FhirSettings,
    base: Url,
    client: HttpClient,
    decode: DecodeOptions,
    /// When the first page's search ran (caps the cursor).
    snapshot: Option<Instant>,
    /// Largest `meta.lastUpdated` delivered in this run.
    max_seen: Option<Instant>,
    /// Records delivered so far in this run.
    records: u64,
    /// Bytes received so far in this run.
    bytes: u64,
    /// The URL of the page fetched last (a next link pointing to itself is a loop).
    last_url: Option<String>,
}

impl std::fmt::Debug for FhirConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FhirConnector")
            .field("base", &self.describe())
            .finish_non_exhaustive()
    }
}

fn fatal_io(location: &str, message: impl Into<String>) -> FetchError {
    FetchError::Fatal(DeliveryError::Io {
        location: location.to_owned(),
        message: message.into(),
    })
}

impl FhirConnector {
    /// A connector for the server at `settings.base_url`, asking through `client`. Fails on
    /// a base URL that is not http(s) or carries credentials, and on a page size out of range.
    pub fn new(client: HttpClient, settings: FhirSettings) -> Result<Self, DeliveryError> {
        let problem = |message: String| DeliveryError::Io {
            location: "the FHIR source".into(),
            message,
        };
        let mut base = Url::parse(settings.base_url.trim_end_matches('/')).map_err(|e| {
            problem(format!(
                "the FHIR base URL is not a URL ({e}); expected e.g. https://fhir.example/r4"
            ))
        })?;
        if !matches!(base.scheme(), "http" | "https") || base.host_str().is_none() {
            return Err(problem(
                "the FHIR base URL must be an http:// or https:// URL with a host".into(),
            ));
        }
        if !base.username().is_empty() || base.password().is_some() {
            return Err(problem(
                "the FHIR base URL must not hold credentials; use [source.http] auth with a secret from the environment or a file"
                    .into(),
            ));
        }
        base.set_query(None);
        base.set_fragment(None);
        if settings.page_size == 0 || settings.page_size > MAX_PAGE_SIZE {
            return Err(problem(format!(
                "the FHIR page size (paging.page_size) must be between 1 and {MAX_PAGE_SIZE}, found {}",
                settings.page_size
            )));
        }
        // A page holds its matches plus at most a few dozen included resources per match.
        let max_entries = usize::try_from(settings.page_size)
            .unwrap_or(usize::MAX)
            .saturating_mul(64)
            .max(1024);
        let decode = DecodeOptions {
            max_entries,
            organization_system: settings.organization_system.clone(),
        };
        Ok(FhirConnector {
            settings,
            base,
            client,
            decode,
            snapshot: None,
            max_seen: None,
            records: 0,
            bytes: 0,
            last_url: None,
        })
    }

    /// The search URL of a run's first page.
    pub fn search_url(&self, since: Option<&str>) -> Url {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .map(|mut s| {
                s.pop_if_empty().push("EpisodeOfCare");
            })
            .ok();
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("_count", &self.settings.page_size.to_string());
            q.append_pair("_sort", "_lastUpdated");
            if let Some(since) = since {
                q.append_pair("_lastUpdated", &format!("gt{since}"));
            }
            for (k, v) in INCLUDES {
                q.append_pair(k, v);
            }
        }
        url
    }

    /// Resolves a next link (relative links against the page they came from) and checks
    /// that it stays on the configured server.
    fn next_url(&self, link: &str) -> Result<Url, FetchError> {
        let page = match self.last_url.as_deref().and_then(|u| Url::parse(u).ok()) {
            Some(page) => page,
            None => self.search_url(None),
        };
        let url = page.join(link).map_err(|_| {
            FetchError::Fatal(DeliveryError::Malformed {
                location: self.describe(),
                byte_offset: self.bytes,
                record_index: self.records,
                message: "the Bundle's next link is not a URL".into(),
            })
        })?;
        if url.scheme() != self.base.scheme()
            || url.host_str() != self.base.host_str()
            || url.port_or_known_default() != self.base.port_or_known_default()
        {
            return Err(FetchError::Fatal(DeliveryError::Malformed {
                location: self.describe(),
                byte_offset: self.bytes,
                record_index: self.records,
                message: format!(
                    "the Bundle's next link points to another server ({}); refusing to follow it",
                    url.host_str().unwrap_or("no host")
                ),
            }));
        }
        Ok(url)
    }

    fn get(&self, url: &Url) -> Result<Response, FetchError> {
        self.client
            .get(url.as_str())
            .header(ACCEPT, "application/fhir+json")
            .send()
            .map_err(|e| {
                let kind = if e.is_timeout() {
                    "timed out"
                } else if e.is_connect() {
                    "connection failed"
                } else {
                    "request failed"
                };
                FetchError::Transient {
                    message: format!("{}: {kind} ({})", self.describe(), e.without_url()),
                    retry_after: None,
                }
            })
    }

    /// Reads a body, at most `max_page_bytes`.
    fn read_body(&self, resp: Response) -> Result<Vec<u8>, FetchError> {
        let max = self.settings.max_page_bytes;
        let location = self.describe();
        let announced = resp.content_length();
        if let Some(len) = announced.filter(|&l| l > max) {
            return Err(FetchError::Fatal(DeliveryError::Limit {
                location,
                message: format!(
                    "the server announces a page of {len} bytes, more than paging.max_page_bytes ({max}); lower paging.page_size or raise the limit"
                ),
            }));
        }
        // Room for the announced body (at most the cap) at once.
        let mut body =
            Vec::with_capacity(usize::try_from(announced.unwrap_or(0).min(max)).unwrap_or(0));
        let read = resp.take(max.saturating_add(1)).read_to_end(&mut body);
        if let Err(e) = read {
            return Err(FetchError::Fatal(DeliveryError::Truncated {
                location,
                message: format!(
                    "the page body broke off after {} bytes{} ({e})",
                    body.len(),
                    announced.map(|l| format!(" of {l}")).unwrap_or_default()
                ),
            }));
        }
        if body.len() as u64 > max {
            return Err(FetchError::Fatal(DeliveryError::Limit {
                location,
                message: format!(
                    "a page is larger than paging.max_page_bytes ({max}); lower paging.page_size or raise the limit"
                ),
            }));
        }
        if let Some(len) = announced
            && (body.len() as u64) < len
        {
            return Err(FetchError::Fatal(DeliveryError::Truncated {
                location,
                message: format!("the page body has {} of {len} bytes", body.len()),
            }));
        }
        Ok(body)
    }

    fn error_status(&self, resp: Response) -> FetchError {
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        // The body may explain (OperationOutcome); read a little of it, never much.
        let mut body = Vec::new();
        let _ = resp.take(64 << 10).read_to_end(&mut body);
        let outcome = node::Node::parse(&body)
            .ok()
            .filter(|v| v.get("resourceType").and_then(|t| t.as_str()) == Some("OperationOutcome"))
            .map(|v| format!(": OperationOutcome {}", bundle::outcome_summary(&v)))
            .unwrap_or_default();
        let message = format!("{}: HTTP {status}{outcome}", self.describe());
        if status.as_u16() == 429 || status.is_server_error() {
            FetchError::Transient {
                message,
                retry_after,
            }
        } else {
            let hint = match status.as_u16() {
                401 | 403 => {
                    " (credentials refused: check the [source.http] auth settings and the secret they point to)"
                }
                404 => {
                    " (check the location: it must be the FHIR service base URL, without /EpisodeOfCare)"
                }
                _ => "",
            };
            fatal_io(&self.describe(), format!("HTTP {status}{outcome}{hint}"))
        }
    }
}

/// `Retry-After`: delay-seconds or an HTTP-date.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs.min(24 * 3600)));
    }
    let at = chrono::DateTime::parse_from_rfc2822(v).ok()?;
    let now = chrono::Utc::now();
    let delta = at.with_timezone(&chrono::Utc) - now;
    Some(
        delta
            .to_std()
            .unwrap_or(Duration::ZERO)
            .min(Duration::from_secs(24 * 3600)),
    )
}

impl PagedConnector for FhirConnector {
    fn describe(&self) -> String {
        let mut shown = self.base.clone();
        shown.set_query(None);
        format!("FHIR {shown}")
    }

    fn fetch(&mut self, request: &PageRequest) -> Result<Page, FetchError> {
        let (url, first) = match request {
            PageRequest::First { since } => {
                self.snapshot = None;
                self.max_seen = None;
                self.records = 0;
                self.bytes = 0;
                self.last_url = None;
                (self.search_url(since.as_deref()), true)
            }
            PageRequest::Next(link) => (self.next_url(link)?, false),
        };
        if !first && self.last_url.as_deref() == Some(url.as_str()) {
            return Err(FetchError::Fatal(DeliveryError::Malformed {
                location: self.describe(),
                byte_offset: self.bytes,
                record_index: self.records,
                message: "the Bundle's next link points to the page itself".into(),
            }));
        }
        let resp = self.get(&url)?;
        if !resp.status().is_success() {
            return Err(self.error_status(resp));
        }
        let body = self.read_body(resp)?;
        let offset = self.bytes;
        let page_bytes = body.len() as u64;
        let decoded =
            decode_bundle(&body, self.records + 1, offset, &self.decode).map_err(|e| {
                let location = self.describe();
                FetchError::Fatal(match e {
                    BundleError::TooManyEntries(_) => DeliveryError::Limit {
                        location,
                        message: e.to_string(),
                    },
                    BundleError::Truncated => DeliveryError::Truncated {
                        location,
                        message: e.to_string(),
                    },
                    _ => DeliveryError::Malformed {
                        location,
                        byte_offset: offset,
                        record_index: self.records,
                        message: e.to_string(),
                    },
                })
            })?;
        for w in &decoded.warnings {
            tracing::warn!(source = %self.describe(), issue = %w, "The FHIR server reports an issue with the search.");
        }
        self.bytes += page_bytes;
        self.records += decoded.records.len() as u64;
        self.last_url = Some(url.to_string());
        if first {
            self.snapshot = decoded.snapshot.clone();
        }
        self.max_seen = Instant::max(self.max_seen.take(), decoded.max_last_updated.clone());
        let cursor = match (&self.max_seen, &self.snapshot) {
            (Some(seen), Some(snap)) if seen.at > snap.at => Some(snap.text.clone()),
            (Some(seen), _) => Some(seen.text.clone()),
            (None, _) => None,
        };
        Ok(Page {
            records: decoded.records,
            next: decoded.next,
            cursor,
            announced_total: decoded.total,
            bytes: page_bytes,
        })
    }
}
