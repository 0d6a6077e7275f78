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

use std::io::BufReader;

use matchpoint_schemas::{RawRecord, RecordPosition};
use reqwest::Url;
use reqwest::header::{HeaderMap, LINK};
use serde_json::Value;

use crate::http::HttpClient;
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

/// A REST/JSON source.
pub struct RestJsonConnector {
    client: HttpClient,
    base: String,
    format: RestJsonFormat,
    records: u64,
    offset: u64,
    cursor: Option<String>,
}

impl RestJsonConnector {
    /// A connector reading from `base` (the collection URL) through `client`.
    pub fn new(client: HttpClient, base: &str, format: RestJsonFormat) -> Self {
        RestJsonConnector {
            client,
            base: base.to_owned(),
            format,
            records: 0,
            offset: 0,
            cursor: None,
        }
    }

    fn malformed(&self, message: String) -> FetchError {
        FetchError::Fatal(DeliveryError::Malformed {
            location: self.client.location().to_owned(),
            byte_offset: self.offset,
            record_index: self.records,
            message,
        })
    }

    fn first_url(&self, since: Option<&str>) -> Result<Url, FetchError> {
        let mut url = Url::parse(&self.base)
            .map_err(|e| self.malformed(format!("the location is not a URL: {e}")))?;
        {
            let mut q = url.query_pairs_mut();
            q.append_pair(
                &self.format.page_size_param,
                &self.format.page_size.to_string(),
            );
            if let Some(since) = since {
                q.append_pair(&self.format.since_param, since);
            }
        }
        Ok(url)
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
            PageRequest::Next(token) => Url::parse(token)
                .map_err(|e| self.malformed(format!("the next-page link is not a URL: {e}")))?,
        };
        let (resp, body) = self.client.send(self.client.get(url.as_str()), false)?;
        let link = link_next(resp.headers());
        let mut reader = body.reader(resp);
        let parsed: Result<Value, serde_json::Error> =
            serde_json::from_reader(BufReader::with_capacity(64 * 1024, &mut reader));
        let bytes = reader.bytes();
        let value = match parsed {
            Ok(v) => v,
            Err(e) if e.is_io() => {
                let io = std::io::Error::other(e.to_string());
                return Err(FetchError::Fatal(self.client.body_error(&io)));
            }
            Err(e) if e.is_eof() => {
                return Err(FetchError::Fatal(DeliveryError::Truncated {
                    location: self.client.location().to_owned(),
                    message: format!(
                        "the JSON page ends early after {bytes} bytes (page after record {})",
                        self.records
                    ),
                }));
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
        let announced_total = match page.get(&self.format.total_field) {
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
            None | Some(Value::Null) => link,
            Some(Value::String(_)) => link,
            Some(_) => {
                return Err(
                    self.malformed(format!("`{}` is not a URL string", self.format.next_field))
                );
            }
        };
        let next = match next {
            Some(n) => Some(
                url.join(&n)
                    .map_err(|e| self.malformed(format!("the next-page link is invalid: {e}")))?
                    .to_string(),
            ),
            None => None,
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
        Ok(Page {
            records,
            next,
            cursor: self.cursor.clone(),
            announced_total,
            bytes,
        })
    }
}

#[cfg(test)]
mod tests {
    use reqwest::header::HeaderValue;

    use super::*;

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
