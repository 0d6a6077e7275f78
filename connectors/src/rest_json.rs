//! Kind `rest_json`: a paginated REST/JSON API (`schemas/formats/rest-json.md`).
//!
//! The first page is `GET LOCATION?limit=N[&updated_since=CURSOR]`; each response is a JSON
//! object with the records in `items`, the next page's URL in `next` (or in a
//! `Link: <…>; rel="next"` header), and optionally the delivery's record count in `total`.
//! Records are flattened with [`crate::json_flatten`] (`client.bsn`; arrays of objects are
//! groups). The run's cursor is the largest `updated_at` seen, so the next incremental run
//! asks only for what changed since.
//!
//! The body is read through a size cap (`paging.max_page_bytes`) into one buffer, reused
//! from page to page, and decoded from there. A page is flattened record by record
//! straight from the parser ([`crate::json_flatten::RecordSeed`]), whatever order its
//! objects list their members in (servers differ: serde structs keep declaration order,
//! Jackson, .NET and Python dicts mostly insertion order); the fields come out in the order
//! of the member names, as from a `serde_json::Value`. A page with a member name given
//! twice in one object, a record over a limit, or any other problem is decoded through a
//! `Value` tree instead, with the same result (property tests check that both give the same
//! records, errors, positions, links, totals and cursor). A body that ends early (short of
//! its `Content-Length`, or JSON cut off at the end) is a truncated delivery; other invalid
//! JSON or a page without `items` is a malformed delivery; an item that is not an object or
//! lacks its id goes to quarantine.

use std::io::Read;

use matchpoint_schemas::{RawRecord, RecordPosition};
use reqwest::Url;
use reqwest::header::{HeaderMap, LINK};
use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use crate::http::{HttpClient, body_error};
use crate::json_flatten::{
    Flat, FlattenError, FlattenLimits, RecordSeed, Scratch, Streamed, flatten,
};
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
    /// The body of the page being decoded, kept for the next.
    buf: Vec<u8>,
}

/// Largest page buffer kept from one page to the next.
const KEEP_BUFFER: usize = 4 << 20;

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

impl RestJsonDecoder {
    /// A decoder for one delivery from `location` (named in messages).
    pub fn new(format: RestJsonFormat, location: &str) -> Self {
        RestJsonDecoder {
            format,
            location: location.to_owned(),
            records: 0,
            offset: 0,
            cursor: None,
            buf: Vec::new(),
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
    ///
    /// The body is read into the decoder's buffer (reused from page to page; the input is
    /// size-capped by the caller) and decoded from there: streaming, record by record, into
    /// flat fields ([`crate::json_flatten::RecordSeed`]), with members in any order; when
    /// an object names a member twice, a record is over a limit, or the page has any other
    /// problem, through a `serde_json::Value` tree, which gives the same records and the
    /// exact error.
    pub fn decode<R: Read>(
        &mut self,
        input: R,
        link: Option<String>,
    ) -> Result<DecodedPage, DeliveryError> {
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        let mut input = input;
        let read = input.read_to_end(&mut buf);
        let result = match read {
            Err(e) => Err(body_error(&self.location, &e)),
            Ok(_) => match self.decode_fast(&buf, link.clone()) {
                Some(page) => page,
                None => self.decode_value(&buf, link),
            },
        };
        // A page's buffer is kept for the next one, unless it was unusually large.
        if buf.capacity() <= KEEP_BUFFER {
            self.buf = buf;
        }
        result
    }

    /// The streaming path: `None` when an object of the page names a member twice, a
    /// record is over a limit, or the page has any other problem (the caller decodes it
    /// through a `Value` tree then).
    fn decode_fast(
        &mut self,
        body: &[u8],
        link: Option<String>,
    ) -> Option<Result<DecodedPage, DeliveryError>> {
        let f = &self.format;
        let names = [&f.items_field, &f.total_field, &f.next_field];
        if names[0] == names[1] || names[0] == names[2] || names[1] == names[2] {
            return None;
        }
        let mut de = serde_json::Deserializer::from_slice(body);
        let page = PageSeed {
            format: &self.format,
        }
        .deserialize(&mut de)
        .ok()?;
        de.end().ok()?;
        let items = page.items?;
        let (total, next) = match self.page_links(page.total.as_ref(), page.next.as_ref(), link) {
            Ok(x) => x,
            Err(e) => return Some(Err(e)),
        };
        let mut records = Vec::with_capacity(items.len());
        for item in items {
            self.records += 1;
            let position = RecordPosition {
                index: self.records,
                byte_offset: self.offset,
            };
            records.push(match item {
                Streamed::NotAnObject => Err(RecordError {
                    record_id: None,
                    position,
                    field: None,
                    reason: FlattenError::NotAnObject.to_string(),
                }),
                Streamed::Object { flat, id } => {
                    self.record(flat, id.filter(|s| !s.is_empty()), position)
                }
            });
        }
        let bytes = body.len() as u64;
        self.offset += bytes;
        Some(Ok(DecodedPage {
            records,
            next,
            total,
            bytes,
        }))
    }

    /// `total` and `next` of a page (`link`: the `Link` header's next target).
    fn page_links(
        &self,
        total: Option<&Value>,
        next: Option<&Value>,
        link: Option<String>,
    ) -> Result<(Option<u64>, Option<String>), DeliveryError> {
        let total = match total {
            None | Some(Value::Null) => None,
            Some(v) => Some(v.as_u64().ok_or_else(|| {
                self.malformed(format!(
                    "`{}` is not a non-negative integer",
                    self.format.total_field
                ))
            })?),
        };
        let next = match next {
            Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
            None | Some(Value::Null) | Some(Value::String(_)) => link,
            Some(_) => {
                return Err(
                    self.malformed(format!("`{}` is not a URL string", self.format.next_field))
                );
            }
        };
        Ok((total, next))
    }

    /// The `Value` path (see [`RestJsonDecoder::decode`]).
    fn decode_value(
        &mut self,
        body: &[u8],
        link: Option<String>,
    ) -> Result<DecodedPage, DeliveryError> {
        let bytes = body.len() as u64;
        let value = match serde_json::from_slice::<Value>(body) {
            Ok(v) => v,
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
        let (total, next) = self.page_links(
            page.get(&self.format.total_field),
            page.get(&self.format.next_field),
            link,
        )?;
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
        self.record(flat, id, position)
    }

    /// A flattened record with its id (`None`: missing); moves the cursor.
    fn record(&mut self, flat: Flat, id: Option<String>, position: RecordPosition) -> RecordResult {
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

/// A page as the streaming path reads it: the records, and `total` and `next` as given.
struct FastPage {
    items: Option<Vec<Streamed>>,
    total: Option<Value>,
    next: Option<Value>,
}

/// Reads a page object for [`RestJsonDecoder::decode_fast`]; fails (to the `Value` path)
/// on anything unusual, e.g. a member given twice.
struct PageSeed<'f> {
    format: &'f RestJsonFormat,
}

impl<'de> DeserializeSeed<'de> for PageSeed<'_> {
    type Value = FastPage;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<FastPage, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for PageSeed<'_> {
    type Value = FastPage;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a page object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<FastPage, A::Error> {
        use serde::de::Error;
        let f = self.format;
        let mut page = FastPage {
            items: None,
            total: None,
            next: None,
        };
        let twice = || A::Error::custom("a page member given twice");
        while let Some(key) = map.next_key::<String>()? {
            if key == f.items_field {
                if page.items.is_some() {
                    return Err(twice());
                }
                page.items = Some(map.next_value_seed(ItemsSeed { format: f })?);
            } else if key == f.total_field {
                if page.total.is_some() {
                    return Err(twice());
                }
                page.total = Some(map.next_value()?);
            } else if key == f.next_field {
                if page.next.is_some() {
                    return Err(twice());
                }
                page.next = Some(map.next_value()?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(page)
    }
}

/// The `items` array, record by record.
struct ItemsSeed<'f> {
    format: &'f RestJsonFormat,
}

impl<'de> DeserializeSeed<'de> for ItemsSeed<'_> {
    type Value = Vec<Streamed>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Vec<Streamed>, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for ItemsSeed<'_> {
    type Value = Vec<Streamed>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an array of records")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<Streamed>, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        let mut scratch = Scratch::default();
        while let Some(item) = seq.next_element_seed(RecordSeed {
            limits: self.format.flatten,
            id_field: &self.format.id_field,
            scratch: &mut scratch,
        })? {
            items.push(item);
        }
        Ok(items)
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
            prop_assert!(decoder().decode(&PAGE.as_bytes()[..cut], None).is_err());
        }
    }

    /// Both paths of one page: the result of [`RestJsonDecoder::decode`] and of the
    /// `Value` path alone, each from a fresh decoder.
    fn both(format: &RestJsonFormat, body: &[u8]) -> (String, String) {
        let mut d = RestJsonDecoder::new(format.clone(), "test");
        let fast = format!("{:?} {:?}", d.decode(body, None), d.cursor());
        let mut d = RestJsonDecoder::new(format.clone(), "test");
        let slow = format!("{:?} {:?}", d.decode_value(body, None), d.cursor());
        (fast, slow)
    }

    /// JSON values whose objects come with members in any order, repeated or not.
    fn arb_json() -> impl Strategy<Value = String> {
        let leaf = prop_oneof![
            Just("null".to_owned()),
            any::<bool>().prop_map(|b| b.to_string()),
            any::<i64>().prop_map(|n| n.to_string()),
            (-1e6f64..1e6).prop_map(|f| format!("{f:.3}")),
            "[a-z0-9 .]{0,6}".prop_map(|s| format!("{s:?}")),
            Just("\"a\\u00e9\\n\"".to_owned()),
        ];
        leaf.prop_recursive(5, 48, 5, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4)
                    .prop_map(|v| format!("[{}]", v.join(","))),
                prop::collection::vec(("(id|updated_at|[a-c.]{1,3})", inner), 0..5).prop_map(
                    |members| {
                        let m: Vec<String> =
                            members.iter().map(|(k, v)| format!("{k:?}:{v}")).collect();
                        format!("{{{}}}", m.join(","))
                    }
                ),
            ]
        })
    }

    /// JSON values whose objects list each member once, in ascending order or (`shuffle`)
    /// in any order.
    fn arb_unique(shuffle: bool) -> impl Strategy<Value = String> {
        let leaf = prop_oneof![
            Just("null".to_owned()),
            any::<bool>().prop_map(|b| b.to_string()),
            any::<i64>().prop_map(|n| n.to_string()),
            any::<u64>().prop_map(|n| n.to_string()),
            (-1e6f64..1e6).prop_map(|f| format!("{f:e}")),
            "[a-z0-9 .]{0,6}".prop_map(|s| format!("{s:?}")),
            Just("\"a\\u00e9\\n\"".to_owned()),
        ];
        leaf.prop_recursive(5, 48, 5, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4)
                    .prop_map(|v| format!("[{}]", v.join(","))),
                prop::collection::btree_map("(id|updated_at|[a-c.]{1,3}|\\u{e9}|B)", inner, 0..5)
                    .prop_map(|members| {
                        members
                            .iter()
                            .map(|(k, v)| format!("{k:?}:{v}"))
                            .collect::<Vec<_>>()
                    })
                    .prop_shuffle()
                    .prop_map(move |mut m| {
                        if !shuffle {
                            m.sort();
                        }
                        format!("{{{}}}", m.join(","))
                    }),
            ]
        })
    }

    /// Records of the shape the sandbox writes, members in ascending order (as the
    /// sandbox's structs declare them) or (`shuffle`) in any order.
    fn sandbox_record(shuffle: bool) -> impl Strategy<Value = String> {
        (
            "[A-Z0-9]{0,4}",
            prop::option::of("[0-9:T-]{4,10}"),
            prop::collection::vec(("[0-9]{9}", "(parent|child)"), 0..3),
            any::<bool>(),
            prop::option::of(any::<u32>()),
        )
            .prop_map(move |(id, updated, relations, flag, n)| {
                let rel: Vec<String> = relations
                    .iter()
                    .map(|(b, k)| match shuffle && flag {
                        true => format!(r#"{{"kind":"{k}","bsn":"{b}"}}"#),
                        false => format!(r#"{{"bsn":"{b}","kind":"{k}"}}"#),
                    })
                    .collect();
                let client = match shuffle {
                    true => r#""client":{"name":"A \"B\"","bsn":"123456782"}"#,
                    false => r#""client":{"bsn":"123456782","name":"A \"B\""}"#,
                };
                let mut m = vec![client.to_owned(), format!(r#""coordinator":{flag}"#)];
                match n {
                    Some(n) => m.push(format!(r#""id":{n}"#)),
                    None => m.push(format!(r#""id":"{id}""#)),
                }
                m.push(format!(r#""relations":[{}]"#, rel.join(",")));
                m.push(r#""tags":["a",1,null]"#.to_owned());
                if let Some(u) = updated {
                    m.push(format!(r#""updated_at":"{u}""#));
                }
                m
            })
            .prop_shuffle()
            .prop_map(move |mut m| {
                if !shuffle {
                    m.sort();
                }
                format!("{{{}}}", m.join(","))
            })
    }

    proptest! {
        /// The streaming path gives exactly what the `Value` path gives, on any page: the
        /// same records, errors, positions, links, totals and cursor.
        #[test]
        fn the_streaming_path_equals_the_value_path(
            items in prop::collection::vec(
                prop_oneof![arb_json(), sandbox_record(false), sandbox_record(true)],
                0..6,
            ),
            total in prop::option::of(0u64..9),
            next in prop::option::of("[a-z/?=]{0,8}"),
            depth in 1usize..6,
            fields in 1usize..40,
        ) {
            let mut members = vec![format!(r#""items":[{}]"#, items.join(","))];
            if let Some(n) = next {
                members.push(format!(r#""next":"{n}""#));
            }
            if let Some(t) = total {
                members.push(format!(r#""total":{t}"#));
            }
            let page = format!("{{{}}}", members.join(","));
            let format = RestJsonFormat {
                flatten: FlattenLimits { max_depth: depth, max_fields: fields },
                ..RestJsonFormat::default()
            };
            let (fast, slow) = both(&format, page.as_bytes());
            prop_assert_eq!(fast, slow, "{}", page);
        }
    }

    proptest! {
        /// Pages whose objects name each member once, in ascending or any order (the page's
        /// own members too): the streaming path takes all of them but those with a record
        /// over a limit, and gives what the `Value` path gives (records, errors, positions,
        /// links, totals and cursor).
        #[test]
        fn pages_in_any_member_order_stream_with_the_value_result(
            items in prop::collection::vec(
                prop_oneof![
                    arb_unique(false),
                    arb_unique(true),
                    sandbox_record(false),
                    sandbox_record(true),
                ],
                0..6,
            ),
            next in prop::option::of("[a-z/?=]{1,8}"),
            link in prop::option::of(Just("/l".to_owned())),
            depth in 2usize..8,
            page_members in Just(vec![0usize, 1, 2]).prop_shuffle(),
        ) {
            let page_members: Vec<String> = page_members
                .iter()
                .map(|m| match m {
                    0 => format!(r#""items":[{}]"#, items.join(",")),
                    1 => format!(r#""total":{}"#, items.len()),
                    _ => match &next {
                        Some(n) => format!(r#""next":"{n}""#),
                        None => r#""next":null"#.to_owned(),
                    },
                })
                .collect();
            let page = format!("{{{}}}", page_members.join(","));
            let format = RestJsonFormat {
                flatten: FlattenLimits { max_depth: depth, max_fields: 60 },
                ..RestJsonFormat::default()
            };
            // Two pages through one decoder, so positions and the cursor carry over.
            let mut d = RestJsonDecoder::new(format.clone(), "test");
            let streamed: Vec<_> = (0..2).map(|_| d.decode_fast(page.as_bytes(), link.clone())).collect();
            let cursor = format!("{:?}", d.cursor());
            let mut d = RestJsonDecoder::new(format.clone(), "test");
            let slow: Vec<_> = (0..2).map(|_| d.decode_value(page.as_bytes(), link.clone())).collect();
            if streamed.iter().all(Option::is_some) {
                let fast: Vec<_> = streamed.into_iter().flatten().collect();
                prop_assert_eq!(format!("{fast:?} {cursor}"), format!("{slow:?} {:?}", d.cursor()));
            } else {
                // Only a record over a limit sends such a page to the `Value` path.
                let quarantined = slow[0].as_ref().expect("page").records.iter().any(|r| {
                    r.as_ref().is_err_and(|e| e.reason.contains("deeper") || e.reason.contains("more than"))
                });
                prop_assert!(quarantined, "{}", page);
            }
        }
    }

    proptest! {
        /// A member named twice in one object, at any depth and in any order, sends the page
        /// to the `Value` path (which keeps the last), so the result is the `Value` one.
        #[test]
        fn a_member_named_twice_takes_the_value_path(
            record in arb_unique(true),
            key in "(id|updated_at|[a-c]{1,2})",
            first in "[a-z0-9]{0,3}",
            second in prop_oneof!["[a-z0-9]{0,3}".prop_map(|s| format!("{s:?}")), arb_unique(true)],
            nested in any::<bool>(),
            at in any::<prop::sample::Index>(),
        ) {
            let mut members = [
                format!("{key:?}:{first:?}"),
                format!("{key:?}:{second}"),
                format!(r#""other":{record}"#),
            ];
            let i = at.index(members.len());
            members.swap(0, i);
            let object = format!("{{{}}}", members.join(","));
            let item = match nested {
                true => format!(r#"{{"id":"A","zz":{object}}}"#),
                false => object,
            };
            let page = format!(r#"{{"items":[{{"id":"B"}},{item}],"total":2}}"#);
            prop_assert!(decoder().decode_fast(page.as_bytes(), None).is_none(), "{}", page);
            let (fast, slow) = both(&RestJsonFormat::default(), page.as_bytes());
            prop_assert_eq!(fast, slow, "{}", page);
        }
    }

    proptest! {
        /// Objects with many members in any order, maybe with one name given twice:
        /// streamed with the `Value` result, or (a name twice) decoded through `Value`.
        #[test]
        fn large_objects_in_any_order_stream_with_the_value_result(
            members in prop::collection::btree_map(
                "[a-z]{1,3}",
                prop_oneof![
                    "[a-z0-9]{0,3}".prop_map(|s| format!("{s:?}")),
                    arb_unique(true),
                    Just(r#"[{"k":"1","b":"2"},{"b":"3"}]"#.to_owned()),
                ],
                20..80,
            )
            .prop_map(|m| m.into_iter().map(|(k, v)| format!("{k:?}:{v}")).collect::<Vec<_>>())
            .prop_shuffle(),
            twice in prop::option::of(any::<prop::sample::Index>()),
            nested in any::<bool>(),
        ) {
            let mut members = members;
            if let Some(i) = twice {
                let i = i.index(members.len());
                let key = members[i].split(':').next().unwrap_or_default().to_owned();
                members.push(format!("{key}:\"again\""));
            }
            let object = format!("{{{}}}", members.join(","));
            let item = match nested {
                true => format!(r#"{{"zz":{object},"id":"A"}}"#),
                false => object,
            };
            let page = format!(r#"{{"items":[{item}],"total":1}}"#);
            let format = RestJsonFormat {
                flatten: FlattenLimits { max_depth: 16, max_fields: 100_000 },
                ..RestJsonFormat::default()
            };
            let mut d = RestJsonDecoder::new(format.clone(), "test");
            prop_assert_eq!(d.decode_fast(page.as_bytes(), None).is_none(), twice.is_some(), "{}", page);
            let (fast, slow) = both(&format, page.as_bytes());
            prop_assert_eq!(fast, slow, "{}", page);
        }
    }

    /// Pages take the streaming path whatever order their objects list their members in;
    /// pages with a member named twice in one object (or not pages) take the `Value` path,
    /// with the same result.
    #[test]
    fn pages_stream_in_any_member_order_and_the_others_decode_the_same() {
        let sorted = r#"{"items":[{"client":{"bsn":"123456782"},"id":"A1","relations":[{"bsn":"111222333","kind":"parent"}],"updated_at":"2026-11-02T02:00:00Z"},"x"],"next":"/n","total":2}"#;
        // Members in declaration or insertion order, as Jackson, .NET or Python write them,
        // with groups and nested objects that must come out in the order of their names.
        let unsorted = r#"{"total":2,"items":[{"updated_at":"2026-11-02T02:00:00Z","id":"A1","relations":[{"kind":"parent","bsn":"111222333"}],"zorg":{"teams":[{"t":"2"}],"period":{"start":"2026","end":null},"codes":[{"c":"1"}]},"client":{"name":"P","bsn":"123456782","address":{"zip":"1234AB","city":"X"}},"tags":["b","a"]},"x",{"b":1,"a":2,"id":3,"":4,"B":5,"\u00e9":6,"a.b":7}],"next":"/n"}"#;
        for page in [sorted, unsorted, PAGE] {
            let mut d = decoder();
            assert!(
                d.decode_fast(page.as_bytes(), None).is_some(),
                "the page streams: {page}"
            );
            let (fast, slow) = both(&RestJsonFormat::default(), page.as_bytes());
            assert_eq!(fast, slow, "{page}");
        }
        let mut d = decoder();
        let Some(Ok(p)) = d.decode_fast(unsorted.as_bytes(), None) else {
            panic!("the unsorted page streams");
        };
        let r = p.records[0].as_ref().expect("record");
        let paths: Vec<&str> = r.fields.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            paths,
            [
                "client.address.city",
                "client.address.zip",
                "client.bsn",
                "client.name",
                "id",
                "tags",
                "tags",
                "updated_at",
                "zorg.period.start",
            ]
        );
        let groups: Vec<&str> = r.groups.iter().map(|g| g.path.as_str()).collect();
        assert_eq!(groups, ["relations", "zorg.codes", "zorg.teams"]);
        assert_eq!(r.groups[0].fields[0].0, "bsn");
        let mut d = decoder();
        for other in [
            r#"{"items":[{"id":"A","id":"B"}]}"#,
            r#"{"items":[{"id":"B","a":1,"id":"A"}]}"#,
            r#"{"items":[{"id":"A","c":{"y":2,"x":1,"y":3}}]}"#,
            r#"{"items":[{"id":"A","n":null,"n":null}]}"#,
            r#"{"items":[{"b":1,"a":{"y":1,"x":2}}],"items":[]}"#,
            r#"{"items":[{"id":"A","a":1,"a.b":2}]} trailing"#,
        ] {
            assert!(d.decode_fast(other.as_bytes(), None).is_none(), "{other}");
            let (fast, slow) = both(&RestJsonFormat::default(), other.as_bytes());
            assert_eq!(fast, slow, "{other}");
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
