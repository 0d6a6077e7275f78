//! Kind `soap`: a SOAP-style XML web service (`schemas/formats/soap.md`).
//!
//! One request envelope is POSTed per page (`GetInvolvements` with `pageSize`, optionally
//! `since` (the cursor) and `pageToken`); the response is parsed streaming with quick-xml
//! straight from the size-capped body: `GetInvolvementsResponse` with the attributes `total`
//! and `nextPageToken`, one `involvement` element per record. Records become field paths
//! relative to the record element (`client/bsn`, `periode/@begin`) with repeated groups
//! (`relaties/relatie`), as in the XML export. Namespace prefixes are ignored (local names).
//!
//! Hardening as for the XML export: a DOCTYPE is refused (no entity can be declared),
//! element depth and the size of one element or text are capped, undefined entities and
//! invalid UTF-8 send the record to quarantine. A `soap:Fault` fails the run with its
//! `faultcode` and `faultstring` (shortened; records' values never appear). A body that ends
//! before `</Envelope>` is a truncated delivery. HTTP 500 without a SOAP fault is transient.

use std::io::{BufRead, BufReader};

use matchpoint_schemas::{RawGroup, RawRecord, RecordPosition};
use quick_xml::Reader;
use quick_xml::events::{BytesStart, Event};
use reqwest::header::CONTENT_TYPE;

use crate::http::HttpClient;
use crate::location::{LIMIT_MARKER, LimitedReader, ReadLimits};
use crate::paged::{FetchError, Page, PageRequest, PagedConnector};
use crate::{DeliveryError, RecordError, RecordResult};

/// How one SOAP service names things. Defaults match the documented okc-6 format.
#[derive(Debug, Clone)]
pub struct SoapFormat {
    /// Namespace of the operation's elements.
    pub namespace: String,
    /// Operation element of the request (`GetInvolvements`).
    pub operation: String,
    /// Element of the response inside `soap:Body`.
    pub response_element: String,
    /// Element of one record inside the response element.
    pub record_element: String,
    /// Attribute of the record element with the record id.
    pub id_attribute: String,
    /// Attribute of the record element with its last-change time (the cursor).
    pub updated_attribute: String,
    /// Attribute of the response element announcing the delivery's record count.
    pub total_attribute: String,
    /// Attribute of the response element with the next page's token.
    pub next_attribute: String,
    /// Paths of repeated groups, relative to the record.
    pub groups: Vec<String>,
    /// `SOAPAction` header.
    pub soap_action: String,
    /// Records per page asked for.
    pub page_size: u32,
    /// Deepest element nesting (the envelope is level 1, a record level 4).
    pub max_depth: usize,
    /// Most bytes of one element or text.
    pub max_element_bytes: u64,
    /// Most bytes of one page.
    pub max_page_bytes: u64,
}

impl Default for SoapFormat {
    fn default() -> Self {
        SoapFormat {
            namespace: "urn:matchpoint:okc6:1".into(),
            operation: "GetInvolvements".into(),
            response_element: "GetInvolvementsResponse".into(),
            record_element: "involvement".into(),
            id_attribute: "id".into(),
            updated_attribute: "updated".into(),
            total_attribute: "total".into(),
            next_attribute: "nextPageToken".into(),
            groups: vec!["relaties/relatie".into()],
            soap_action: "urn:matchpoint:okc6:1#GetInvolvements".into(),
            page_size: 500,
            max_depth: 16,
            max_element_bytes: 64 << 10,
            max_page_bytes: 64 << 20,
        }
    }
}

/// The SOAP envelope namespace (SOAP 1.1).
pub const SOAP_ENV: &str = "http://schemas.xmlsoap.org/soap/envelope/";

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
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
    out
}

/// The request envelope of one page.
pub fn envelope(format: &SoapFormat, since: Option<&str>, token: Option<&str>) -> String {
    let mut body = format!("<m:pageSize>{}</m:pageSize>", format.page_size);
    if let Some(s) = since {
        body.push_str(&format!("<m:since>{}</m:since>", escape(s)));
    }
    if let Some(t) = token {
        body.push_str(&format!("<m:pageToken>{}</m:pageToken>", escape(t)));
    }
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<soap:Envelope xmlns:soap=\"{SOAP_ENV}\" xmlns:m=\"{ns}\"><soap:Body><m:{op}>{body}</m:{op}></soap:Body></soap:Envelope>\n",
        ns = escape(&format.namespace),
        op = format.operation,
    )
}

/// One parsed response page.
#[derive(Debug, Default)]
pub struct ParsedPage {
    /// Records in order.
    pub records: Vec<RecordResult>,
    /// The announced total.
    pub total: Option<u64>,
    /// The next page's token.
    pub next: Option<String>,
    /// The largest `updated` value of the page's records.
    pub max_updated: Option<String>,
    /// A SOAP fault: code and (shortened) string.
    pub fault: Option<(String, String)>,
    /// Bytes read.
    pub bytes: u64,
}

/// A record being read.
struct Building {
    record: RawRecord,
    error: Option<(Option<String>, String)>,
    group: Option<(usize, RawGroup)>,
    text: String,
}

impl Building {
    fn fail(&mut self, field: &str, reason: &str) {
        if self.error.is_none() {
            self.error = Some((
                (!field.is_empty()).then(|| field.to_owned()),
                reason.to_owned(),
            ));
        }
    }

    fn push(&mut self, path: &str, value: String) {
        match &mut self.group {
            Some((len, g)) if path.len() > *len => {
                g.fields.push((path[*len + 1..].to_owned(), value));
            }
            Some((len, g)) if path.len() == *len => g.fields.push((String::new(), value)),
            _ => self.record.fields.push((path.to_owned(), value)),
        }
    }
}

fn local(e: &BytesStart<'_>) -> String {
    String::from_utf8_lossy(e.local_name().into_inner()).into_owned()
}

/// The attributes of `e` (local names, namespace declarations left out); `Err` with a
/// reason (never the value) when one cannot be read.
fn attrs(e: &BytesStart<'_>) -> Result<Vec<(String, String)>, &'static str> {
    let mut out = Vec::new();
    for a in e.attributes() {
        let a = a.map_err(|_| "malformed attribute (bad quoting or a duplicate)")?;
        if a.key.as_namespace_binding().is_some() {
            continue;
        }
        let k = std::str::from_utf8(a.key.local_name().into_inner())
            .map_err(|_| "invalid UTF-8 in an attribute name")?
            .to_owned();
        let v = a
            .unescape_value()
            .map_err(|_| "undefined entity or invalid UTF-8 in an attribute")?
            .into_owned();
        out.push((k, v));
    }
    Ok(out)
}

fn shorten(s: &str) -> String {
    let t = s.trim();
    match t.char_indices().nth(200) {
        Some((i, _)) => format!("{}…", &t[..i]),
        None => t.to_owned(),
    }
}

/// Parses one response page from `input`. Record positions count from `first_index` (the
/// index of the page's first record) and `base_offset` (bytes before this page).
pub fn parse_page<R: BufRead>(
    input: R,
    location: &str,
    format: &SoapFormat,
    first_index: u64,
    base_offset: u64,
) -> Result<ParsedPage, DeliveryError> {
    let (limited, counter) = LimitedReader::new(
        input,
        ReadLimits {
            max_bytes: format.max_page_bytes,
            max_event_bytes: format.max_element_bytes,
        },
    );
    let mut reader = Reader::from_reader(limited);
    reader.config_mut().trim_text(false);
    reader.config_mut().check_end_names = true;
    let mut page = ParsedPage::default();
    // Local names of the open elements.
    let mut stack: Vec<String> = Vec::new();
    // Path inside the current record and the stack depth of the record element.
    let mut path = String::new();
    let mut path_lens: Vec<usize> = Vec::new();
    let mut current: Option<Building> = None;
    let mut in_response = false;
    let mut fault: Option<(String, String)> = None;
    let mut fault_text = String::new();
    let mut done = false;
    let mut index = first_index;
    let mut buf = Vec::with_capacity(4096);
    let malformed = |reader: &Reader<_>, index: u64, message: String| DeliveryError::Malformed {
        location: location.to_owned(),
        byte_offset: base_offset + reader_pos(reader),
        record_index: index,
        message,
    };
    loop {
        counter.mark();
        let start = reader.buffer_position();
        buf.clear();
        let event = match reader.read_event_into(&mut buf) {
            Ok(e) => e,
            Err(e) => {
                let text = e.to_string();
                if let Some(i) = text.find(LIMIT_MARKER) {
                    return Err(DeliveryError::Limit {
                        location: location.to_owned(),
                        message: text[i + LIMIT_MARKER.len()..].trim().to_owned(),
                    });
                }
                let exhausted = matches!(reader.get_mut().fill_buf(), Ok(rest) if rest.is_empty());
                if matches!(e, quick_xml::Error::Io(_)) || exhausted {
                    return Err(DeliveryError::Truncated {
                        location: location.to_owned(),
                        message: format!(
                            "the SOAP response breaks off after {} bytes ({text})",
                            counter.total()
                        ),
                    });
                }
                return Err(malformed(&reader, index, text));
            }
        };
        let (e, empty) = match event {
            Event::Start(e) => (e.into_owned(), false),
            Event::Empty(e) => (e.into_owned(), true),
            Event::End(_) => {
                close(
                    &mut stack,
                    &mut path,
                    &mut path_lens,
                    &mut current,
                    &mut page,
                    &mut in_response,
                    &mut fault,
                    &mut fault_text,
                    &mut done,
                );
                continue;
            }
            Event::Text(t) => {
                let s = std::str::from_utf8(&t);
                if let Some(b) = current.as_mut() {
                    match s {
                        Ok(s) => b.text.push_str(s),
                        Err(_) => b.fail(&path, "invalid UTF-8 in text"),
                    }
                } else if fault.is_some() {
                    fault_text.push_str(s.unwrap_or(""));
                } else if stack.get(1).is_some_and(|h| h == "Header") {
                    // Header content is not read.
                } else if s.is_ok_and(|s| !s.trim().is_empty()) {
                    return Err(malformed(&reader, index, "text outside a record".into()));
                }
                continue;
            }
            Event::CData(t) => {
                if let Some(b) = current.as_mut() {
                    match std::str::from_utf8(&t) {
                        Ok(s) => b.text.push_str(s),
                        Err(_) => b.fail(&path, "invalid UTF-8 in CDATA"),
                    }
                }
                continue;
            }
            Event::GeneralRef(r) => {
                let c = match r.resolve_char_ref() {
                    Ok(Some(c)) => Some(c),
                    Ok(None) => match &*r {
                        b"amp" => Some('&'),
                        b"lt" => Some('<'),
                        b"gt" => Some('>'),
                        b"quot" => Some('"'),
                        b"apos" => Some('\''),
                        _ => None,
                    },
                    Err(_) => None,
                };
                if let Some(b) = current.as_mut() {
                    match c {
                        Some(c) => b.text.push(c),
                        None => b.fail(&path, "undefined entity or invalid character reference"),
                    }
                } else if let Some(c) = c {
                    fault_text.push(c);
                }
                continue;
            }
            Event::DocType(_) => {
                return Err(malformed(
                    &reader,
                    index,
                    "DOCTYPE declarations are not allowed".into(),
                ));
            }
            Event::Decl(_) | Event::Comment(_) | Event::PI(_) => continue,
            Event::Eof => {
                if done {
                    break;
                }
                return Err(DeliveryError::Truncated {
                    location: location.to_owned(),
                    message: format!(
                        "the SOAP response ends before </Envelope> after {} bytes",
                        counter.total()
                    ),
                });
            }
        };
        if done {
            return Err(malformed(
                &reader,
                index,
                "content after </Envelope>".into(),
            ));
        }
        let name = local(&e);
        let depth = stack.len();
        if depth + 1 > format.max_depth {
            return Err(DeliveryError::Limit {
                location: location.to_owned(),
                message: format!(
                    "elements nest deeper than the configured limit of {} levels (limits.max_depth)",
                    format.max_depth
                ),
            });
        }
        let in_header = stack.get(1).is_some_and(|s| s == "Header");
        if let Some(b) = current.as_mut() {
            // Inside a record.
            b.text.clear();
            path_lens.push(path.len());
            if !path.is_empty() {
                path.push('/');
            }
            path.push_str(&name);
            if format.groups.contains(&path) {
                if b.group.is_some() {
                    b.fail(&path, "nested repeated group");
                } else {
                    b.group = Some((
                        path.len(),
                        RawGroup {
                            path: path.clone(),
                            fields: Vec::new(),
                        },
                    ));
                }
            }
            match attrs(&e) {
                Ok(list) => {
                    for (k, v) in list {
                        let p = format!("{path}/@{k}");
                        b.push(&p, v);
                    }
                }
                Err(reason) => b.fail(&path, reason),
            }
        } else if in_header || fault.is_some() {
            // Headers are ignored; fault children are read as text.
            if fault.is_some() {
                fault_text.clear();
            }
        } else {
            match (depth, name.as_str()) {
                (0, "Envelope") | (1, "Header") | (1, "Body") => {}
                (2, "Fault") if stack.get(1).is_some_and(|s| s == "Body") => {
                    fault = Some((String::new(), String::new()));
                }
                (2, n) if n == format.response_element => {
                    in_response = true;
                    let list = attrs(&e).map_err(|r| malformed(&reader, index, r.into()))?;
                    for (k, v) in list {
                        if k == format.total_attribute {
                            page.total = Some(v.trim().parse().map_err(|_| {
                                malformed(
                                    &reader,
                                    index,
                                    format!("`{k}` is not a non-negative integer"),
                                )
                            })?);
                        } else if k == format.next_attribute && !v.is_empty() {
                            page.next = Some(v);
                        }
                    }
                }
                (3, n) if in_response && n == format.record_element => {
                    index += 1;
                    let mut b = Building {
                        record: RawRecord {
                            position: RecordPosition {
                                index,
                                byte_offset: base_offset + start,
                            },
                            ..RawRecord::default()
                        },
                        error: None,
                        group: None,
                        text: String::new(),
                    };
                    match attrs(&e) {
                        Ok(list) => {
                            for (k, v) in list {
                                if k == format.id_attribute {
                                    if !v.trim().is_empty() {
                                        b.record.record_id = Some(v);
                                    }
                                } else {
                                    if k == format.updated_attribute
                                        && page
                                            .max_updated
                                            .as_deref()
                                            .is_none_or(|m| v.as_str() > m)
                                    {
                                        page.max_updated = Some(v.clone());
                                    }
                                    b.record.fields.push((format!("@{k}"), v));
                                }
                            }
                        }
                        Err(reason) => b.fail("", reason),
                    }
                    if b.record.record_id.is_none() {
                        b.fail(&format!("@{}", format.id_attribute), "record has no id");
                    }
                    path.clear();
                    path_lens.clear();
                    current = Some(b);
                }
                _ => {
                    return Err(malformed(
                        &reader,
                        index,
                        format!(
                            "unexpected element <{name}> at depth {} (expected Envelope/Body/{}/{})",
                            depth + 1,
                            format.response_element,
                            format.record_element
                        ),
                    ));
                }
            }
        }
        stack.push(name);
        if empty {
            close(
                &mut stack,
                &mut path,
                &mut path_lens,
                &mut current,
                &mut page,
                &mut in_response,
                &mut fault,
                &mut fault_text,
                &mut done,
            );
        }
    }
    page.fault = fault;
    page.bytes = counter.total();
    Ok(page)
}

fn reader_pos<R>(reader: &Reader<R>) -> u64 {
    reader.buffer_position()
}

/// Handles the end of the innermost open element.
#[allow(clippy::too_many_arguments)]
fn close(
    stack: &mut Vec<String>,
    path: &mut String,
    path_lens: &mut Vec<usize>,
    current: &mut Option<Building>,
    page: &mut ParsedPage,
    in_response: &mut bool,
    fault: &mut Option<(String, String)>,
    fault_text: &mut String,
    done: &mut bool,
) {
    let Some(name) = stack.pop() else { return };
    let depth = stack.len();
    if let Some(b) = current.as_mut() {
        if depth == 3 {
            // The record element closes.
            if let Some((_, g)) = b.group.take() {
                b.record.groups.push(g);
            }
            if let Some(b) = current.take() {
                page.records.push(match b.error {
                    None => Ok(b.record),
                    Some((field, reason)) => Err(RecordError {
                        record_id: b.record.record_id,
                        position: b.record.position,
                        field,
                        reason,
                    }),
                });
            }
            path.clear();
            return;
        }
        let value = b.text.trim().to_owned();
        if !value.is_empty() {
            let p = path.clone();
            b.push(&p, value);
        }
        b.text.clear();
        if b.group.as_ref().is_some_and(|(len, _)| *len == path.len())
            && let Some((_, g)) = b.group.take()
        {
            b.record.groups.push(g);
        }
        path.truncate(path_lens.pop().unwrap_or(0));
        return;
    }
    if let Some(f) = fault.as_mut() {
        match name.as_str() {
            "faultcode" => f.0 = shorten(fault_text),
            "faultstring" => f.1 = shorten(fault_text),
            _ => {}
        }
        fault_text.clear();
    }
    if depth == 2 {
        *in_response = false;
    }
    if depth == 0 {
        *done = true;
    }
}

/// A SOAP source.
pub struct SoapConnector {
    client: HttpClient,
    url: String,
    format: SoapFormat,
    records: u64,
    offset: u64,
    cursor: Option<String>,
}

impl SoapConnector {
    /// A connector POSTing to `url` through `client`.
    pub fn new(client: HttpClient, url: &str, format: SoapFormat) -> Self {
        SoapConnector {
            client,
            url: url.to_owned(),
            format,
            records: 0,
            offset: 0,
            cursor: None,
        }
    }
}

impl PagedConnector for SoapConnector {
    fn describe(&self) -> String {
        self.client.location().to_owned()
    }

    fn fetch(&mut self, request: &PageRequest) -> Result<Page, FetchError> {
        let body = match request {
            PageRequest::First { since } => envelope(&self.format, since.as_deref(), None),
            PageRequest::Next(token) => envelope(&self.format, None, Some(token)),
        };
        let rb = self
            .client
            .post(&self.url)
            .header(CONTENT_TYPE, "text/xml; charset=utf-8")
            .header("SOAPAction", format!("\"{}\"", self.format.soap_action))
            .body(body);
        let (resp, capped) = self.client.send(rb, true)?;
        let server_error = resp.status().as_u16() == 500;
        let input = BufReader::with_capacity(64 * 1024, capped.reader(resp));
        let location = self.client.location().to_owned();
        let parsed = parse_page(input, &location, &self.format, self.records, self.offset);
        let parsed = match parsed {
            Ok(p) => p,
            Err(_) if server_error => {
                return Err(FetchError::Transient {
                    message: format!("{location}: HTTP 500 without a SOAP fault"),
                    retry_after: None,
                });
            }
            Err(e) => return Err(FetchError::Fatal(e)),
        };
        if let Some((code, string)) = parsed.fault {
            return Err(FetchError::Fatal(DeliveryError::Io {
                location,
                message: format!("SOAP fault {code}: {string}"),
            }));
        }
        if server_error {
            return Err(FetchError::Transient {
                message: format!("{location}: HTTP 500 without a SOAP fault"),
                retry_after: None,
            });
        }
        self.records += parsed.records.len() as u64;
        self.offset += parsed.bytes;
        if let Some(m) = parsed.max_updated
            && self.cursor.as_deref().is_none_or(|c| m.as_str() > c)
        {
            self.cursor = Some(m);
        }
        Ok(Page {
            records: parsed.records,
            next: parsed.next,
            cursor: self.cursor.clone(),
            announced_total: parsed.total,
            bytes: parsed.bytes,
        })
    }
}

#[cfg(test)]
mod tests;
