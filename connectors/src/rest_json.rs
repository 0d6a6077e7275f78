//! Kind `rest_json`: a paginated REST/JSON API (`schemas/formats/rest-json.md`).
//!
//! The first page is `GET LOCATION?limit=N[&updated_since=CURSOR]`; each response is a JSON
//! object with the records in `items`, the next page's URL in `next` (or in a
//! `Link: <…>; rel="next"` header), and optionally the delivery's record count in `total`.
//! Records are flattened with [`crate::json_flatten`] (`client.bsn`; arrays of objects are
//! groups). The run's cursor is the largest `updated_at` seen, so the next incremental run
//! asks only for what changed since.
//!
//! The body is read through a size cap and decoded straight from the stream; a body that
//! ends early (short of its `Content-Length`, or JSON cut off at the end) is a truncated
//! delivery; other invalid JSON or a page without `items` is a malformed delivery; an item
//! that is not an object or lacks its id goes to quarantine.

use std::io::{BufReader, Read};

use matchpoint_schemas::{RawRecord, RecordPosition};
use reqwest::Url;
use reqwest::header::{HeaderMap, LINK};
use serde_json::Value;

use crate::http::{HttpClient, body_error};
use crate::json_flatten::{FlattenLimits, flatten};
use crate::paged::{FetchError, Page, PageRequest, PagedConnector};
use crate::{DeliveryError, RecordError, RecordResult};

/// How one REST/JSON API pages and names things. Defaults match the documented format.
#[derive(Debug, Clone)]
pub struct RestJsonFormat {
    /// Query parameter carrying the cursor on the first page of an incremental run.
    pub since_param: String,
    /// Query parameter carrying the page size.
    pub page_size_param: String,
    /// Records per page asked for.
    pub page_size: u32,
    /// Member of the page object holding the records.
    pub items_field: String,
    /// Member holding the next page's URL (`null` or absent on the last page).
    pub next_field: String,
    /// Member announcing the delivery's record count, if the API gives one.
    pub total_field: String,
    /// Record member holding the record id (dotted path).
    pub id_field: String,
    /// Record member holding the last-change time (dotted path); its largest value is the
    /// run's cursor.
    pub cursor_field: String,
    /// Limits per record.
    pub flatten: FlattenLimits,
}

impl Default for RestJsonFormat {
    fn default() -> Self {
        RestJsonFormat {
            since_param: "updated_since".into(),
            page_size_param: "limit".into(),
            page_size: 500,
            items_field: "items".into(),
            next_field: "next".into(),
            total_field: "total".into(),
            id_field: "id".into(),
            cursor_field: "updated_at".into(),
            flatten: FlattenLimits::default(),
        }
    }
}

/// Decodes REST/JSON pages: the state one delivery carries from page to page (record
/// count, byte offset, cursor). Separate from the HTTP client so it can be tested and fuzzed
/// on bytes.
#[derive(Debug, Clone)]
pub struct RestJsonDecoder {
    format: RestJsonFormat,
    location: String,
    records: u64,
    offset: u64,
    cursor: Option<String>,
}

/// One decoded page.
#[derive(Debug, Default)]
pub struct DecodedPage {
    /// Records in order.
    pub records: Vec<RecordResult>,
    /// The next page's link as given (relative or absolute), from the body or `Link`.
    pub next: Option<String>,
    /// The announced total.
    pub total: Option<u64>,
    /// Bytes read.
    pub bytes: u64,
}

/// A reader that counts what it hands out.
struct Counting<R> {
    inner: R,
    n: u64,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.n += n as u64;
        Ok(n)
    }
}

impl RestJsonDecoder {
    /// A decoder for one delivery from `location` (named in messages).
    pub fn new(format: RestJsonFormat, location: &str) -> Self {
        RestJsonDecoder {
            format,
            location: location.to_owned(),
            records: 0,
            offset: 0,
            cursor: None,
        }
    }

    /// The largest cursor value seen so far.
    pub fn cursor(&self) -> Option<&str> {
        self.cursor.as_deref()
    }

    fn malformed(&self, message: String) -> DeliveryError {
        DeliveryError::Malformed {
            location: self.location.clone(),
            byte_offset: self.offset,
            record_index: self.records,
            message,
        }
    }

    /// Decodes one page from `input`; `link` is the `Link: rel="next"` target, if any.
    pub fn decode<R: Read>(
        &mut self,
        input: R,
        link: Option<String>,
    ) -> Result<DecodedPage, DeliveryError> {
        let mut reader = Counting { inner: input, n: 0 };
        let parsed: Result<Value, serde_json::Error> =
            serde_json::from_reader(BufReader::with_capacity(64 * 1024, &mut reader));
        let bytes = reader.n;
        let value = match parsed {
            Ok(v) => v,
            Err(e) if e.is_io() => {
                let io = std::io::Error::other(e.to_string());
                return Err(body_error(&self.location, &io));
            }
            Err(e) if e.is_eof() => {
                return Err(DeliveryError::Truncated {
                    location: self.location.clone(),
                    message: format!(
                        "the JSON page ends early after {bytes} bytes (page after record {})",
                        self.records
                    ),
                });
            }
            Err(e) => {
                return Err(self.malformed(format!(
                    "invalid JSON at line {} column {}",
                    e.line(),
                    e.column()
                )));
            }
        };
        let Value::Object(mut page) = value else {
            return Err(self.malformed("the page is not a JSON object".into()));
        };
        let Some(Value::Array(items)) = page.remove(&self.format.items_field) else {
            return Err(self.malformed(format!(
                "the page has no `{}` array",
                self.format.items_field
            )));
        };
        let total = match page.get(&self.format.total_field) {
            None | Some(Value::Null) => None,
            Some(v) => Some(v.as_u64().ok_or_else(|| {
                self.malformed(format!(
                    "`{}` is not a non-negative integer",
                    self.format.total_field
                ))
            })?),
        };
        let next = match page.get(&self.format.next_field) {
            Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
            None | Some(Value::Null) | Some(Value::String(_)) => link,
            Some(_) => {
                return Err(
                    self.malformed(format!("`{}` is not a URL string", self.format.next_field))
                );
            }
        };
        let mut records = Vec::with_capacity(items.len());
        for item in &items {
            self.records += 1;
            let position = RecordPosition {
                index: self.records,
                byte_offset: self.offset,
            };
            records.push(self.decode_item(item, position));
        }
        self.offset += bytes;
        Ok(DecodedPage {
            records,
            next,
            total,
            bytes,
        })
    }

    fn decode_item(&mut self, item: &Value, position: RecordPosition) -> RecordResult {
        let id = item
            .get(&self.format.id_field)
            .and_then(|v| match v {
                Value::String(s) => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            })
            .filter(|s| !s.is_empty());
        let flat = flatten(item, self.format.flatten).map_err(|e| RecordError {
            record_id: id.clone(),
            position,
            field: None,
            reason: e.to_string(),
        })?;
        let Some(id) = id else {
            return Err(RecordError {
                record_id: None,
                position,
                field: Some(self.format.id_field.clone()),
                reason: format!("the record has no `{}`", self.format.id_field),
            });
        };
        if let Some(c) = flat.field(&self.format.cursor_field)
            && self.cursor.as_deref().is_none_or(|cur| c > cur)
        {
            self.cursor = Some(c.to_owned());
        }
        Ok(RawRecord {
            record_id: Some(id),
            position,
            fields: flat.fields,
            groups: flat.groups,
        })
    }
}

/// A REST/JSON source.
pub struct RestJsonConnector {
    client: HttpClient,
    base: String,
    decoder: RestJsonDecoder,
}

impl RestJsonConnector {
    /// A connector reading from `base` (the collection URL) through `client`.
    pub fn new(client: HttpClient, base: &str, format: RestJsonFormat) -> Self {
        let decoder = RestJsonDecoder::new(format, client.location());
        RestJsonConnector {
            client,
            base: base.to_owned(),
            decoder,
        }
    }

    fn first_url(&self, since: Option<&str>) -> Result<Url, FetchError> {
        let format = &self.decoder.format;
        let mut url = Url::parse(&self.base).map_err(|e| {
            FetchError::Fatal(
                self.decoder
                    .malformed(format!("the location is not a URL: {e}")),
            )
        })?;
        {
            let mut q = url.query_pairs_mut();
            q.append_pair(&format.page_size_param, &format.page_size.to_string());
            if let Some(since) = since {
                q.append_pair(&format.since_param, since);
            }
        }
        Ok(url)
    }
}

/// The `rel="next"` target of a `Link` header.
pub fn link_next(headers: &HeaderMap) -> Option<String> {
    for value in headers.get_all(LINK) {
        let Ok(text) = value.to_str() else { continue };
        for part in text.split(',') {
            let mut pieces = part.split(';');
            let Some(target) = pieces.next() else {
                continue;
            };
            let target = target.trim();
            let is_next = pieces.any(|p| {
                let p = p.trim();
                p.strip_prefix("rel=")
                    .map(|r| r.trim_matches('"').split_whitespace().any(|r| r == "next"))
                    .unwrap_or(false)
            });
            if is_next && target.starts_with('<') && target.ends_with('>') {
                return Some(target[1..target.len() - 1].to_owned());
            }
        }
    }
    None
}

impl PagedConnector for RestJsonConnector {
    fn describe(&self) -> String {
        self.client.location().to_owned()
    }

    fn fetch(&mut self, request: &PageRequest) -> Result<Page, FetchError> {
        let url = match request {
            PageRequest::First { since } => self.first_url(since.as_deref())?,
            PageRequest::Next(token) => Url::parse(token).map_err(|e| {
                FetchError::Fatal(
                    self.decoder
                        .malformed(format!("the next-page link is not a URL: {e}")),
                )
            })?,
        };
        let (resp, body) = self.client.send(self.client.get(url.as_str()), false)?;
        let link = link_next(resp.headers());
        let page = self.decoder.decode(body.reader(resp), link)?;
        let next = match page.next {
            Some(n) => Some(
                url.join(&n)
                    .map_err(|e| {
                        FetchError::Fatal(
                            self.decoder
                                .malformed(format!("the next-page link is invalid: {e}")),
                        )
                    })?
                    .to_string(),
            ),
            None => None,
        };
        Ok(Page {
            records: page.records,
            next,
            cursor: self.decoder.cursor.clone(),
            announced_total: page.total,
            bytes: page.bytes,
        })
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use reqwest::header::HeaderValue;

    use super::*;

    const PAGE: &str = r#"{"total": 3, "next": "/x?after=2", "items": [
        {"id": "A1", "updated_at": "2026-11-02T02:00:00Z", "client": {"bsn": "123456782"},
         "relations": [{"bsn": "111222333", "kind": "parent"}]},
        {"updated_at": "2026-11-05T02:00:00Z"},
        "not an object",
        {"id": 7, "updated_at": "2026-11-03T02:00:00Z"}
    ]}"#;

    fn decoder() -> RestJsonDecoder {
        RestJsonDecoder::new(RestJsonFormat::default(), "test")
    }

    #[test]
    fn a_page_decodes_into_records_next_total_and_cursor() {
        let mut d = decoder();
        let p = d.decode(PAGE.as_bytes(), None).expect("page");
        assert_eq!(p.total, Some(3));
        assert_eq!(p.next.as_deref(), Some("/x?after=2"));
        assert_eq!(p.bytes, PAGE.len() as u64);
        assert_eq!(p.records.len(), 4);
        let a = p.records[0].as_ref().expect("record");
        assert_eq!(a.record_id.as_deref(), Some("A1"));
        assert_eq!(a.field("client.bsn"), Some("123456782"));
        assert_eq!(a.groups[0].field("kind"), Some("parent"));
        let no_id = p.records[1].as_ref().expect_err("no id");
        assert_eq!(no_id.field.as_deref(), Some("id"));
        let not_obj = p.records[2].as_ref().expect_err("not an object");
        assert!(not_obj.reason.contains("not a JSON object"));
        assert_eq!(not_obj.position.index, 3);
        assert_eq!(
            p.records[3]
                .as_ref()
                .expect("numeric id")
                .record_id
                .as_deref(),
            Some("7")
        );
        // Quarantined records do not move the cursor.
        assert_eq!(d.cursor(), Some("2026-11-03T02:00:00Z"));
        // The next page continues the numbering.
        let p2 = d
            .decode(r#"{"items": [{"id": "B"}]}"#.as_bytes(), Some("/l".into()))
            .expect("page 2");
        assert_eq!(
            p2.next.as_deref(),
            Some("/l"),
            "the Link header is used without a body link"
        );
        assert_eq!(p2.records[0].as_ref().expect("r").position.index, 5);
    }

    #[test]
    fn broken_pages_fail_with_the_right_kind() {
        let cut = &PAGE[..PAGE.len() / 2];
        assert!(matches!(
            decoder().decode(cut.as_bytes(), None),
            Err(DeliveryError::Truncated { .. })
        ));
        for bad in [
            "%%% not a page",
            "[1, 2]",
            r#"{"items": 3}"#,
            r#"{"items": [], "total": -1}"#,
            r#"{"items": [], "next": 5}"#,
        ] {
            assert!(
                matches!(
                    decoder().decode(bad.as_bytes(), None),
                    Err(DeliveryError::Malformed { .. })
                ),
                "{bad}"
            );
        }
    }

    proptest! {
        /// No input makes the decoder panic.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
            let _ = decoder().decode(&bytes[..], None);
        }

        /// Every strict prefix of a page is an error, never a silently shorter page.
        #[test]
        fn every_cut_of_a_page_fails(cut in 0usize..PAGE.len()) {
            prop_assert!(decoder().decode(PAGE[..cut].as_bytes(), None).is_err());
        }
    }

    #[test]
    fn link_header_next_is_found() {
        let mut h = HeaderMap::new();
        h.insert(
            LINK,
            HeaderValue::from_static(
                "<https://x/a?page=1>; rel=\"prev\", <https://x/a?page=3>; rel=\"next\"",
            ),
        );
        assert_eq!(link_next(&h).as_deref(), Some("https://x/a?page=3"));
        let mut h = HeaderMap::new();
        h.insert(
            LINK,
            HeaderValue::from_static("<https://x/a>; rel=\"last\""),
        );
        assert_eq!(link_next(&h), None);
    }
}
