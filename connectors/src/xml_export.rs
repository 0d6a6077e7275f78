//! The OKC nightly XML export (`schemas/formats/okc-xml-export.xsd`), read streaming.
//!
//! Reads one record element at a time into a [`RawRecord`] of field paths (`client/bsn`,
//! `organisatie/@code`) and repeated groups (`relaties/relatie`). Hardened against hostile
//! input: any DOCTYPE is refused (so no entity can be declared or expanded), element depth,
//! event size, record size and total size are capped, and invalid UTF-8, characters XML does
//! not allow, undefined entities, duplicated fields or mixed content in a record send that
//! record to quarantine with its position. Syntax errors, a missing closing root element, a
//! missing record count or one that differs from the number of records fail the delivery.

use std::collections::HashSet;
use std::io::BufRead;
use std::rc::Rc;

use matchpoint_schemas::{RawGroup, RawRecord, RecordPosition};
use quick_xml::Reader;
use quick_xml::errors::{IllFormedError, SyntaxError};
use quick_xml::events::{BytesStart, Event};

use crate::location::{LIMIT_MARKER, LimitedReader, ReadCounter, ReadLimits};
use crate::{DeliveryError, RecordError, RecordResult};

/// How to read one XML export. Defaults match the documented OKC export format.
#[derive(Debug, Clone)]
pub struct XmlExportFormat {
    /// Name of the root element.
    pub root_element: String,
    /// Name of the element that holds one record.
    pub record_element: String,
    /// Attribute of the record element that holds its id.
    pub id_attribute: String,
    /// Attribute of the root element announcing the number of records. When set, the
    /// attribute is required and must match the number of records read.
    pub count_attribute: Option<String>,
    /// Paths (relative to the record) of repeated groups.
    pub groups: Vec<String>,
    /// Deepest element nesting allowed below the root element (the record element is
    /// level 1, `client/bsn` level 3).
    pub max_depth: usize,
    /// Most bytes one record element may span; a larger record is quarantined, and what it
    /// holds beyond that is not kept in memory.
    pub max_record_bytes: u64,
    /// Size limits.
    pub limits: ReadLimits,
}

impl Default for XmlExportFormat {
    fn default() -> Self {
        XmlExportFormat {
            root_element: "export".into(),
            record_element: "dossier".into(),
            id_attribute: "id".into(),
            count_attribute: Some("aantal".into()),
            groups: vec!["relaties/relatie".into()],
            max_depth: 16,
            max_record_bytes: 1 << 20,
            limits: ReadLimits {
                max_bytes: 8 << 30,
                max_event_bytes: 64 << 10,
            },
        }
    }
}

enum Phase {
    Prolog,
    InRoot,
    AfterRoot,
    Done,
}

/// One open element inside the record being read (the record element itself first).
struct Level {
    /// Length of the reader's `path` before this element's segment was added.
    parent_path_len: usize,
    /// Whether a child element has been opened inside this element.
    has_children: bool,
}

struct OpenGroup {
    /// Length of the group's path (its element's path) in the reader's `path`.
    path_len: usize,
    group: RawGroup,
    /// Field paths already in `group`.
    seen: HashSet<String>,
}

/// The record being read.
struct Building {
    record: RawRecord,
    /// First problem found: field path (if one field is at fault) and reason.
    error: Option<(Option<String>, String)>,
    /// Field paths already in `record.fields`.
    seen: HashSet<String>,
    group: Option<OpenGroup>,
    levels: Vec<Level>,
    /// Text of the innermost open element since it was opened or its last child closed.
    text: String,
    /// Whether `text` holds something other than whitespace (or came from CDATA or a reference).
    has_text: bool,
}

impl Building {
    /// Keeps the first problem and drops what was collected: the record goes to quarantine
    /// with its id and position only, and nothing more is kept for it.
    fn fail(&mut self, field: &str, reason: &str) {
        if self.error.is_none() {
            let field = (!field.is_empty()).then(|| field.to_owned());
            self.error = Some((field, reason.to_owned()));
            self.record.fields = Vec::new();
            self.record.groups = Vec::new();
            self.seen = HashSet::new();
            self.group = None;
            self.text = String::new();
        }
    }

    fn failed(&self) -> bool {
        self.error.is_some()
    }

    fn push_text(&mut self, path: &str, text: &str, significant: bool) {
        if self.failed() {
            return;
        }
        if !text.chars().all(is_xml_char) {
            self.fail(path, "text holds a character XML does not allow");
            return;
        }
        self.text.push_str(text);
        self.has_text |= significant || !text.chars().all(is_xml_whitespace);
    }

    fn push_field(&mut self, full_path: &str, value: String) {
        if self.failed() {
            return;
        }
        if let Some(open) = self.group.as_mut() {
            let rel = full_path[open.path_len..].trim_start_matches('/');
            let rel = if rel.is_empty() { "." } else { rel };
            if !already_has(&open.group.fields, &mut open.seen, rel) {
                open.group.fields.push((rel.to_owned(), value));
            } else {
                self.fail(full_path, "field appears twice in one group");
            }
            return;
        }
        if !already_has(&self.record.fields, &mut self.seen, full_path) {
            self.record.fields.push((full_path.to_owned(), value));
        } else {
            self.fail(full_path, "field appears twice in one record");
        }
    }
}

/// Whether `path` is already among `fields`: a linear scan for the usual handful of fields,
/// a hash set once a record has many (so a hostile record cannot make reading quadratic).
/// `seen` is either empty or holds every path in `fields`.
fn already_has(fields: &[(String, String)], seen: &mut HashSet<String>, path: &str) -> bool {
    const LINEAR: usize = 32;
    if fields.len() < LINEAR {
        return fields.iter().any(|(p, _)| p == path);
    }
    if seen.is_empty() {
        seen.extend(fields.iter().map(|(p, _)| p.clone()));
    }
    !seen.insert(path.to_owned())
}

/// Streaming reader of one XML export; an iterator of records.
///
/// `Some(Ok(Ok(record)))` is a record, `Some(Ok(Err(e)))` a record for quarantine,
/// `Some(Err(e))` ends the delivery as failed; after it the iterator yields nothing more.
pub struct XmlExportReader<R: BufRead> {
    reader: Reader<LimitedReader<R>>,
    counter: Rc<ReadCounter>,
    format: XmlExportFormat,
    location: String,
    buf: Vec<u8>,
    phase: Phase,
    announced: Option<u64>,
    records: u64,
    /// Path of the innermost open element, relative to the record.
    path: String,
    /// Open elements inside the root element.
    depth: usize,
    current: Option<Building>,
}

impl<R: BufRead> XmlExportReader<R> {
    /// Starts reading `input`; `location` names it in errors.
    pub fn new(input: R, location: &str, format: XmlExportFormat) -> Self {
        let (limited, counter) = LimitedReader::new(input, format.limits.clone());
        let mut reader = Reader::from_reader(limited);
        let cfg = reader.config_mut();
        // Text is trimmed per value, not per event: quick-xml splits text at every `&`, and
        // trimming each piece would eat the spaces around a reference (`Jan &amp; Piet`).
        cfg.trim_text(false);
        cfg.check_end_names = true;
        cfg.expand_empty_elements = false;
        XmlExportReader {
            reader,
            counter,
            format,
            location: location.to_owned(),
            buf: Vec::with_capacity(4096),
            phase: Phase::Prolog,
            announced: None,
            records: 0,
            path: String::new(),
            depth: 0,
            current: None,
        }
    }

    /// The record count the file announced, once the root element was read.
    pub fn announced_count(&self) -> Option<u64> {
        self.announced
    }

    /// Bytes read so far.
    pub fn bytes_read(&self) -> u64 {
        self.counter.total()
    }

    fn record_index(&self) -> u64 {
        self.records + u64::from(self.current.is_some())
    }

    fn malformed(&self, message: impl Into<String>) -> DeliveryError {
        DeliveryError::Malformed {
            location: self.location.clone(),
            byte_offset: self.reader.buffer_position(),
            record_index: self.record_index(),
            message: message.into(),
        }
    }

    fn limit(&self, message: String) -> DeliveryError {
        DeliveryError::Limit {
            location: self.location.clone(),
            message,
        }
    }

    fn truncated(&self, message: String) -> DeliveryError {
        DeliveryError::Truncated {
            location: self.location.clone(),
            message,
        }
    }

    /// Whether the input has no bytes left (a failed read counts as not exhausted).
    fn input_exhausted(&mut self) -> bool {
        matches!(self.reader.get_mut().fill_buf(), Ok(rest) if rest.is_empty())
    }

    fn map_xml_error(&mut self, e: quick_xml::Error) -> DeliveryError {
        let text = e.to_string();
        if let Some(idx) = text.find(LIMIT_MARKER) {
            return self.limit(text[idx + LIMIT_MARKER.len()..].trim().to_owned());
        }
        if let quick_xml::Error::Io(io) = &e {
            return DeliveryError::Io {
                location: self.location.clone(),
                message: io.to_string(),
            };
        }
        // Markup left open by the end of the input is a cut-off file, not a syntax error.
        let at_end = match &e {
            quick_xml::Error::Syntax(SyntaxError::InvalidBangMarkup)
            | quick_xml::Error::IllFormed(IllFormedError::UnclosedReference) => {
                self.input_exhausted()
            }
            quick_xml::Error::Syntax(_) => true,
            _ => false,
        };
        if at_end {
            return self.truncated(format!(
                "the file ends inside markup at byte {} ({})",
                self.reader.error_position(),
                if self.current.is_some() {
                    format!("inside record {}", self.records + 1)
                } else {
                    format!("after {} records", self.records)
                }
            ));
        }
        DeliveryError::Malformed {
            location: self.location.clone(),
            byte_offset: self.reader.error_position(),
            record_index: self.record_index(),
            message: text,
        }
    }

    fn next_inner(&mut self) -> Option<Result<RecordResult, DeliveryError>> {
        loop {
            if matches!(self.phase, Phase::Done) {
                return None;
            }
            self.counter.mark();
            let start_offset = self.reader.buffer_position();
            // The event borrows a buffer taken out of `self`, so handlers can take `&mut self`
            // without copying every event.
            let mut buf = std::mem::take(&mut self.buf);
            buf.clear();
            let step = match self.reader.read_event_into(&mut buf) {
                Ok(event) => match self.phase {
                    Phase::Prolog => self.on_prolog(event),
                    Phase::InRoot => self.on_in_root(event, start_offset),
                    Phase::AfterRoot => self.on_after_root(event),
                    Phase::Done => Ok(None),
                },
                Err(e) => {
                    let e = self.map_xml_error(e);
                    self.buf = buf;
                    self.phase = Phase::Done;
                    self.current = None;
                    return Some(Err(e));
                }
            };
            self.buf = buf;
            match step {
                Ok(Some(rec)) => return Some(Ok(rec)),
                Ok(None) => {}
                Err(e) => {
                    self.phase = Phase::Done;
                    self.current = None;
                    return Some(Err(e));
                }
            }
        }
    }

    fn on_prolog(&mut self, event: Event<'_>) -> Result<Option<RecordResult>, DeliveryError> {
        match event {
            Event::Decl(d) => {
                match d.encoding() {
                    None => {}
                    Some(Ok(enc))
                        if enc.eq_ignore_ascii_case(b"UTF-8")
                            || enc.eq_ignore_ascii_case(b"UTF8") => {}
                    Some(_) => {
                        return Err(self
                            .malformed("the XML declaration names an encoding other than UTF-8"));
                    }
                }
                Ok(None)
            }
            Event::Comment(_) | Event::PI(_) => Ok(None),
            Event::Text(t) if t.iter().all(|&b| is_xml_whitespace(char::from(b))) => Ok(None),
            Event::DocType(_) => Err(self.malformed(
                "DOCTYPE declarations are not allowed (entity declarations are refused)",
            )),
            Event::Start(e) => {
                self.on_root(&e)?;
                self.phase = Phase::InRoot;
                Ok(None)
            }
            Event::Empty(e) => {
                self.on_root(&e)?;
                self.phase = Phase::AfterRoot;
                Ok(None)
            }
            Event::Eof => Err(self.truncated("no root element: the delivery is empty".into())),
            _ => Err(self.malformed("unexpected content before the root element")),
        }
    }

    fn on_root(&mut self, e: &BytesStart<'_>) -> Result<(), DeliveryError> {
        let name = local_name(e);
        if name != self.format.root_element {
            return Err(self.malformed(format!(
                "expected root element <{}>, found <{name}>",
                self.format.root_element
            )));
        }
        if let Some(attr) = &self.format.count_attribute {
            let value = attribute(e, attr).map_err(|m| self.malformed(m))?;
            let Some(v) = value else {
                return Err(self.malformed(format!(
                    "the root element has no record count attribute `{attr}`"
                )));
            };
            let v = v.trim_matches(is_xml_whitespace);
            let n = v
                .bytes()
                .all(|b| b.is_ascii_digit())
                .then(|| v.parse::<u64>().ok())
                .flatten()
                .ok_or_else(|| {
                    self.malformed(format!("root attribute `{attr}` is not a record count"))
                })?;
            self.announced = Some(n);
        }
        Ok(())
    }

    fn on_after_root(&mut self, event: Event<'_>) -> Result<Option<RecordResult>, DeliveryError> {
        match event {
            Event::Comment(_) | Event::PI(_) => Ok(None),
            Event::Text(t) if t.iter().all(|&b| is_xml_whitespace(char::from(b))) => Ok(None),
            Event::Eof => {
                self.phase = Phase::Done;
                match self.announced {
                    Some(n) if n != self.records => Err(self.truncated(format!(
                        "the file announces {n} records but holds {}",
                        self.records
                    ))),
                    _ => Ok(None),
                }
            }
            _ => Err(self.malformed("content after the closing root element")),
        }
    }

    fn on_in_root(
        &mut self,
        event: Event<'_>,
        start_offset: u64,
    ) -> Result<Option<RecordResult>, DeliveryError> {
        if let Some(b) = self.current.as_mut() {
            let used = self
                .reader
                .buffer_position()
                .saturating_sub(b.record.position.byte_offset);
            if used > self.format.max_record_bytes && !b.failed() {
                b.fail(
                    "",
                    &format!(
                        "record is larger than the configured limit of {} bytes (max_record_bytes)",
                        self.format.max_record_bytes
                    ),
                );
            }
        }
        match event {
            Event::Eof => Err(self.truncated(if self.current.is_some() {
                format!("the file ends inside record {}", self.records + 1)
            } else {
                format!(
                    "the closing </{}> is missing after {} records",
                    self.format.root_element, self.records
                )
            })),
            Event::DocType(_) => Err(self.malformed("DOCTYPE declarations are not allowed")),
            Event::Start(e) => {
                self.open_element(&e, start_offset)?;
                Ok(None)
            }
            Event::Empty(e) => {
                self.open_element(&e, start_offset)?;
                Ok(self.close_element())
            }
            Event::End(_) => {
                if self.current.is_none() && self.depth == 0 {
                    self.phase = Phase::AfterRoot;
                    return Ok(None);
                }
                Ok(self.close_element())
            }
            Event::Text(t) => {
                let Some(b) = self.current.as_mut() else {
                    if t.iter().all(|&b| is_xml_whitespace(char::from(b))) {
                        return Ok(None);
                    }
                    return Err(self.malformed("text outside a record"));
                };
                match std::str::from_utf8(&t) {
                    Ok(s) => b.push_text(&self.path, s, false),
                    Err(_) => b.fail(&self.path, "invalid UTF-8 in text"),
                }
                Ok(None)
            }
            Event::CData(t) => {
                let Some(b) = self.current.as_mut() else {
                    return Err(self.malformed("CDATA outside a record"));
                };
                match std::str::from_utf8(&t) {
                    Ok(s) => b.push_text(&self.path, s, true),
                    Err(_) => b.fail(&self.path, "invalid UTF-8 in CDATA"),
                }
                Ok(None)
            }
            Event::GeneralRef(r) => {
                let Some(b) = self.current.as_mut() else {
                    return Err(self.malformed("entity reference outside a record"));
                };
                let resolved = match r.resolve_char_ref() {
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
                match resolved {
                    Some(c) => b.push_text(&self.path, c.encode_utf8(&mut [0; 4]), true),
                    None => b.fail(
                        &self.path,
                        "undefined entity or invalid character reference",
                    ),
                }
                Ok(None)
            }
            Event::Comment(_) | Event::PI(_) => Ok(None),
            Event::Decl(_) => Err(self.malformed("XML declaration inside the document")),
        }
    }

    fn open_element(&mut self, e: &BytesStart<'_>, start_offset: u64) -> Result<(), DeliveryError> {
        self.depth += 1;
        if self.depth > self.format.max_depth {
            return Err(self.limit(format!(
                "elements nest deeper than the configured limit of {} levels below the root element (limits.max_depth)",
                self.format.max_depth
            )));
        }
        let Some(b) = self.current.as_mut() else {
            return self.open_record(e, start_offset);
        };
        let parent_path_len = self.path.len();
        if let Some(parent) = b.levels.last_mut() {
            parent.has_children = true;
        }
        if b.has_text {
            b.fail(&self.path, "text mixed with child elements");
        }
        b.text.clear();
        b.has_text = false;
        b.levels.push(Level {
            parent_path_len,
            has_children: false,
        });
        let name = match std::str::from_utf8(e.local_name().into_inner()) {
            Ok(name) => name,
            Err(_) => {
                b.fail(&self.path, "invalid UTF-8 in an element name");
                "\u{fffd}"
            }
        };
        if !self.path.is_empty() {
            self.path.push('/');
        }
        self.path.push_str(name);
        if !b.failed() && self.format.groups.contains(&self.path) {
            if b.group.is_some() {
                b.fail(&self.path, "nested repeated group");
            } else {
                b.group = Some(OpenGroup {
                    path_len: self.path.len(),
                    group: RawGroup {
                        path: self.path.clone(),
                        fields: Vec::new(),
                    },
                    seen: HashSet::new(),
                });
            }
        }
        for (key, value) in attributes(e) {
            if b.failed() {
                break;
            }
            let field = match &key {
                Ok(k) => format!("{}/@{k}", self.path),
                Err(()) => self.path.clone(),
            };
            match (key, value) {
                (Ok(_), Ok(v)) => b.push_field(&field, v),
                (Ok(_), Err(reason)) | (Err(()), Err(reason)) => b.fail(&field, reason),
                (Err(()), Ok(_)) => b.fail(&field, "invalid UTF-8 in an attribute name"),
            }
        }
        Ok(())
    }

    fn open_record(&mut self, e: &BytesStart<'_>, start_offset: u64) -> Result<(), DeliveryError> {
        let name = local_name(e);
        if self.depth != 1 || name != self.format.record_element {
            return Err(self.malformed(format!(
                "expected <{}> inside <{}>, found <{name}>",
                self.format.record_element, self.format.root_element
            )));
        }
        let mut b = Building {
            record: RawRecord {
                position: RecordPosition {
                    index: self.records + 1,
                    byte_offset: start_offset,
                },
                ..RawRecord::default()
            },
            error: None,
            seen: HashSet::new(),
            group: None,
            levels: vec![Level {
                parent_path_len: 0,
                has_children: false,
            }],
            text: String::new(),
            has_text: false,
        };
        self.path.clear();
        let id_field = format!("@{}", self.format.id_attribute);
        let mut id_seen = false;
        for (key, value) in attributes(e) {
            match (key, value) {
                (Ok(k), value) if k == self.format.id_attribute => {
                    if id_seen {
                        b.fail(&id_field, "the record id appears twice");
                    }
                    id_seen = true;
                    match value {
                        Ok(v) if !v.trim_matches(is_xml_whitespace).is_empty() => {
                            b.record.record_id = Some(v);
                        }
                        Ok(_) => {}
                        Err(reason) => b.fail(&id_field, reason),
                    }
                }
                (Ok(k), Ok(v)) => b.push_field(&format!("@{k}"), v),
                (Ok(k), Err(reason)) => b.fail(&format!("@{k}"), reason),
                (Err(()), _) => b.fail("", "malformed attribute on the record element"),
            }
        }
        if b.record.record_id.is_none() {
            b.fail(&id_field, "record has no id");
        }
        self.current = Some(b);
        Ok(())
    }

    fn close_element(&mut self) -> Option<RecordResult> {
        self.depth = self.depth.saturating_sub(1);
        let b = self.current.as_mut()?;
        let level = b.levels.pop()?;
        if b.levels.is_empty() {
            // The record element itself closes.
            if b.has_text {
                b.fail("", "text directly inside the record element");
            }
            let b = self.current.take()?;
            self.records += 1;
            self.path.clear();
            return Some(match b.error {
                None => Ok(b.record),
                Some((field, reason)) => Err(RecordError {
                    record_id: b.record.record_id,
                    position: b.record.position,
                    field,
                    reason,
                }),
            });
        }
        if b.has_text {
            if level.has_children {
                b.fail(&self.path, "text mixed with child elements");
            } else {
                let value = b.text.trim_matches(is_xml_whitespace).to_owned();
                b.push_field(&self.path, value);
            }
        }
        b.text.clear();
        b.has_text = false;
        if b.group
            .as_ref()
            .is_some_and(|g| g.path_len == self.path.len())
            && let Some(open) = b.group.take()
        {
            b.record.groups.push(open.group);
        }
        self.path.truncate(level.parent_path_len);
        None
    }
}

/// The attributes of `e` other than namespace declarations: local name (or `Err` when it is
/// not UTF-8) and value (or the reason it cannot be read, without the value). A syntax error in
/// the attribute list ends the list with one `(Err, Err)`.
fn attributes<'a>(
    e: &'a BytesStart<'_>,
) -> impl Iterator<Item = (Result<String, ()>, Result<String, &'static str>)> + 'a {
    let mut broken = false;
    e.attributes().map_while(move |attr| {
        if broken {
            return None;
        }
        let a = match attr {
            Ok(a) => a,
            Err(_) => {
                broken = true;
                return Some(Some((Err(()), Err("malformed attribute (bad quoting or a duplicate)"))));
            }
        };
        if a.key.as_namespace_binding().is_some() {
            return Some(None);
        }
        let key = std::str::from_utf8(a.key.local_name().into_inner())
            .map(str::to_owned)
            .map_err(|_| ());
        let value = match a.unescape_value() {
            Ok(v) if v.chars().all(is_xml_char) => Ok(v.into_owned()),
            Ok(_) => Err("attribute holds a character XML does not allow"),
            Err(_) => Err("undefined entity, invalid character reference or invalid UTF-8 in an attribute"),
        };
        Some(Some((key, value)))
    })
    .flatten()
}

/// XML 1.0 `S`.
fn is_xml_whitespace(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r')
}

/// XML 1.0 `Char` (surrogates cannot occur in a `char`).
fn is_xml_char(c: char) -> bool {
    (c >= ' ' || is_xml_whitespace(c)) && c != '\u{fffe}' && c != '\u{ffff}'
}

fn local_name(e: &BytesStart<'_>) -> String {
    String::from_utf8_lossy(e.local_name().into_inner()).into_owned()
}

fn attribute(e: &BytesStart<'_>, name: &str) -> Result<Option<String>, String> {
    for attr in e.attributes() {
        let a = attr.map_err(|_| "malformed attribute on the root element".to_owned())?;
        if a.key.as_namespace_binding().is_none()
            && a.key.local_name().into_inner() == name.as_bytes()
        {
            let v = a
                .unescape_value()
                .map_err(|_| format!("root attribute `{name}` cannot be read"))?;
            return Ok(Some(v.into_owned()));
        }
    }
    Ok(None)
}

impl<R: BufRead> Iterator for XmlExportReader<R> {
    type Item = Result<RecordResult, DeliveryError>;
    fn next(&mut self) -> Option<Self::Item> {
        self.next_inner()
    }
}

impl<R: BufRead> crate::RecordStream for XmlExportReader<R> {
    fn next_record(&mut self) -> Result<Option<RecordResult>, DeliveryError> {
        self.next_inner().transpose()
    }
    fn bytes_read(&self) -> u64 {
        self.counter.total()
    }
}

#[cfg(test)]
mod tests;
