//! The OKC nightly XML export (`schemas/formats/okc-xml-export.xsd`), read streaming.
//!
//! Reads one record element at a time into a [`RawRecord`] of field paths (`client/bsn`,
//! `organisatie/@code`) and repeated groups (`relaties/relatie`). Hardened against hostile
//! input: any DOCTYPE is refused (so no entity can be declared or expanded), element depth,
//! element size and total size are capped, and invalid UTF-8 or undefined entities in a record
//! send that record to quarantine with its position. Syntax errors, a missing closing root
//! element, or a record count that differs from the one the file announces fail the delivery.

use std::io::BufRead;
use std::rc::Rc;

use matchpoint_schemas::{RawGroup, RawRecord, RecordPosition};
use quick_xml::Reader;
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
    /// Attribute of the root element announcing the number of records, if the format has one.
    pub count_attribute: Option<String>,
    /// Paths (relative to the record) of repeated groups.
    pub groups: Vec<String>,
    /// Deepest element nesting allowed.
    pub max_depth: usize,
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

struct Building {
    record: RawRecord,
    error: Option<(Option<String>, String)>,
    group: Option<(usize, RawGroup)>,
    text: String,
    has_text: bool,
}

/// Streaming reader of one XML export; an iterator of records.
///
/// `Some(Ok(Ok(record)))` is a record, `Some(Ok(Err(e)))` a record for quarantine,
/// `Some(Err(e))` ends the delivery as failed.
pub struct XmlExportReader<R: BufRead> {
    reader: Reader<LimitedReader<R>>,
    counter: Rc<ReadCounter>,
    format: XmlExportFormat,
    location: String,
    buf: Vec<u8>,
    phase: Phase,
    announced: Option<u64>,
    records: u64,
    /// Path segments relative to the record, with their lengths in `path`.
    path: String,
    seg_lens: Vec<usize>,
    depth: usize,
    current: Option<Building>,
}

impl<R: BufRead> XmlExportReader<R> {
    /// Starts reading `input`; `location` names it in errors.
    pub fn new(input: R, location: &str, format: XmlExportFormat) -> Self {
        let (limited, counter) = LimitedReader::new(input, format.limits.clone());
        let mut reader = Reader::from_reader(limited);
        let cfg = reader.config_mut();
        cfg.trim_text(true);
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
            seg_lens: Vec::new(),
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

    fn malformed(&self, message: impl Into<String>) -> DeliveryError {
        DeliveryError::Malformed {
            location: self.location.clone(),
            byte_offset: self.reader.buffer_position(),
            record_index: self.records + u64::from(self.current.is_some()),
            message: message.into(),
        }
    }

    fn map_xml_error(&self, e: quick_xml::Error) -> DeliveryError {
        let text = e.to_string();
        if let Some(idx) = text.find(LIMIT_MARKER) {
            return DeliveryError::Limit {
                location: self.location.clone(),
                message: text[idx + LIMIT_MARKER.len()..].trim().to_owned(),
            };
        }
        if let quick_xml::Error::Io(io) = &e {
            return DeliveryError::Io {
                location: self.location.clone(),
                message: io.to_string(),
            };
        }
        DeliveryError::Malformed {
            location: self.location.clone(),
            byte_offset: self.reader.error_position(),
            record_index: self.records + u64::from(self.current.is_some()),
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
            self.buf.clear();
            let event = match self.reader.read_event_into(&mut self.buf) {
                Ok(ev) => ev.into_owned(),
                Err(e) => {
                    self.phase = Phase::Done;
                    return Some(Err(self.map_xml_error(e)));
                }
            };
            let step = match self.phase {
                Phase::Prolog => self.on_prolog(event),
                Phase::InRoot => self.on_in_root(event, start_offset),
                Phase::AfterRoot => self.on_after_root(event),
                Phase::Done => return None,
            };
            match step {
                Ok(Some(rec)) => return Some(Ok(rec)),
                Ok(None) => {}
                Err(e) => {
                    self.phase = Phase::Done;
                    return Some(Err(e));
                }
            }
        }
    }

    fn on_prolog(&mut self, event: Event<'static>) -> Result<Option<RecordResult>, DeliveryError> {
        match event {
            Event::Decl(_) | Event::Comment(_) | Event::PI(_) => Ok(None),
            Event::Text(t) if t.iter().all(u8::is_ascii_whitespace) => Ok(None),
            Event::DocType(_) => Err(self.malformed(
                "DOCTYPE declarations are not allowed (entity declarations are refused)",
            )),
            Event::Start(e) => {
                let name = local_name(&e);
                if name != self.format.root_element {
                    return Err(self.malformed(format!(
                        "expected root element <{}>, found <{name}>",
                        self.format.root_element
                    )));
                }
                if let Some(attr) = &self.format.count_attribute {
                    let value = attribute(&e, attr).map_err(|m| self.malformed(m))?;
                    if let Some(v) = value {
                        let n = v.trim().parse::<u64>().map_err(|_| {
                            self.malformed(format!("root attribute `{attr}` is not a number"))
                        })?;
                        self.announced = Some(n);
                    }
                }
                self.phase = Phase::InRoot;
                Ok(None)
            }
            Event::Empty(e) if local_name(&e) == self.format.root_element => {
                self.phase = Phase::AfterRoot;
                Ok(None)
            }
            Event::Eof => Err(DeliveryError::Truncated {
                location: self.location.clone(),
                message: "no root element: the delivery is empty".into(),
            }),
            _ => Err(self.malformed("unexpected content before the root element")),
        }
    }

    fn on_after_root(&mut self, event: Event<'static>) -> Result<Option<RecordResult>, DeliveryError> {
        match event {
            Event::Comment(_) | Event::PI(_) => Ok(None),
            Event::Text(t) if t.iter().all(u8::is_ascii_whitespace) => Ok(None),
            Event::Eof => {
                self.phase = Phase::Done;
                match self.announced {
                    Some(n) if n != self.records => Err(DeliveryError::Truncated {
                        location: self.location.clone(),
                        message: format!(
                            "the file announces {n} records but holds {}",
                            self.records
                        ),
                    }),
                    _ => Ok(None),
                }
            }
            _ => Err(self.malformed("content after the closing root element")),
        }
    }

    fn on_in_root(
        &mut self,
        event: Event<'static>,
        start_offset: u64,
    ) -> Result<Option<RecordResult>, DeliveryError> {
        match event {
            Event::Eof => Err(DeliveryError::Truncated {
                location: self.location.clone(),
                message: if self.current.is_some() {
                    format!("the file ends inside record {}", self.records + 1)
                } else {
                    format!(
                        "the closing </{}> is missing after {} records",
                        self.format.root_element, self.records
                    )
                },
            }),
            Event::DocType(_) => Err(self.malformed("DOCTYPE declarations are not allowed")),
            Event::Start(e) => {
                self.open_element(&e, start_offset, false)?;
                Ok(None)
            }
            Event::Empty(e) => {
                self.open_element(&e, start_offset, true)?;
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
                if let Some(b) = self.current.as_mut() {
                    match std::str::from_utf8(&t) {
                        Ok(s) => {
                            b.text.push_str(s);
                            b.has_text = true;
                        }
                        Err(_) => set_error(b, &self.path, "invalid UTF-8 in text"),
                    }
                } else if !t.iter().all(u8::is_ascii_whitespace) {
                    return Err(self.malformed("text outside a record"));
                }
                Ok(None)
            }
            Event::CData(t) => {
                if let Some(b) = self.current.as_mut() {
                    match std::str::from_utf8(&t) {
                        Ok(s) => {
                            b.text.push_str(s);
                            b.has_text = true;
                        }
                        Err(_) => set_error(b, &self.path, "invalid UTF-8 in CDATA"),
                    }
                }
                Ok(None)
            }
            Event::GeneralRef(r) => {
                if let Some(b) = self.current.as_mut() {
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
                        Some(c) => {
                            b.text.push(c);
                            b.has_text = true;
                        }
                        None => set_error(b, &self.path, "undefined entity or invalid character reference"),
                    }
                }
                Ok(None)
            }
            Event::Comment(_) | Event::PI(_) => Ok(None),
            Event::Decl(_) => Err(self.malformed("XML declaration inside the document")),
        }
    }

    fn open_element(
        &mut self,
        e: &BytesStart<'_>,
        start_offset: u64,
        _empty: bool,
    ) -> Result<(), DeliveryError> {
        self.depth += 1;
        if self.depth > self.format.max_depth {
            return Err(self.malformed(format!(
                "elements nest deeper than the configured limit of {} (limits.max_depth)",
                self.format.max_depth
            )));
        }
        let name = local_name(e);
        match self.current.as_mut() {
            None => {
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
                    group: None,
                    text: String::new(),
                    has_text: false,
                };
                self.path.clear();
                self.seg_lens.clear();
                for attr in e.attributes() {
                    match attr
                        .map_err(|_| ())
                        .and_then(|a| {
                            let key = std::str::from_utf8(a.key.local_name().into_inner())
                                .map_err(|_| ())?
                                .to_owned();
                            let value = a.unescape_value().map_err(|_| ())?.into_owned();
                            Ok((key, value))
                        }) {
                        Ok((k, v)) if k == self.format.id_attribute => b.record.record_id = Some(v),
                        Ok((k, v)) => b.record.fields.push((format!("@{k}"), v)),
                        Err(()) => set_error(&mut b, "", "malformed attribute on the record element"),
                    }
                }
                if b.record.record_id.as_deref().is_none_or(|s| s.trim().is_empty()) {
                    set_error(&mut b, "@id", "record has no id");
                }
                self.current = Some(b);
            }
            Some(b) => {
                self.seg_lens.push(self.path.len());
                if !self.path.is_empty() {
                    self.path.push('/');
                }
                self.path.push_str(&name);
                b.text.clear();
                b.has_text = false;
                let is_group = self.format.groups.iter().any(|g| *g == self.path);
                if is_group {
                    if b.group.is_some() {
                        set_error(b, &self.path, "nested repeated group");
                    } else {
                        b.group = Some((
                            self.path.len(),
                            RawGroup {
                                path: self.path.clone(),
                                fields: Vec::new(),
                            },
                        ));
                    }
                }
                for attr in e.attributes() {
                    let parsed = attr.map_err(|_| ()).and_then(|a| {
                        let key = std::str::from_utf8(a.key.local_name().into_inner())
                            .map_err(|_| ())?
                            .to_owned();
                        let value = a.unescape_value().map_err(|_| ())?.into_owned();
                        Ok((key, value))
                    });
                    match parsed {
                        Ok((k, v)) => {
                            let full = format!("{}/@{k}", self.path);
                            push_field(b, &full, v);
                        }
                        Err(()) => {
                            let p = self.path.clone();
                            set_error(b, &p, "malformed attribute (bad quoting, encoding or entity)");
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn close_element(&mut self) -> Option<RecordResult> {
        self.depth = self.depth.saturating_sub(1);
        let b = self.current.as_mut()?;
        if self.depth == 0 {
            // The record element itself closes.
            let b = self.current.take()?;
            self.records += 1;
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
            let text = std::mem::take(&mut b.text);
            let path = self.path.clone();
            push_field(b, &path, text);
            b.has_text = false;
        }
        if let Some((len, _)) = &b.group
            && *len == self.path.len()
            && let Some((_, g)) = b.group.take()
        {
            b.record.groups.push(g);
        }
        let keep = self.seg_lens.pop().unwrap_or(0);
        self.path.truncate(keep);
        None
    }
}

fn push_field(b: &mut Building, full_path: &str, value: String) {
    if let Some((len, g)) = b.group.as_mut() {
        let rel = full_path[*len..].trim_start_matches('/');
        let rel = if rel.is_empty() { "." } else { rel };
        if g.fields.iter().any(|(p, _)| p == rel) {
            let path = full_path.to_owned();
            set_error(b, &path, "field appears twice in one group");
        } else {
            g.fields.push((rel.to_owned(), value));
        }
        return;
    }
    if b.record.fields.iter().any(|(p, _)| p == full_path) {
        set_error(b, full_path, "field appears twice in one record");
    } else {
        b.record.fields.push((full_path.to_owned(), value));
    }
}

fn set_error(b: &mut Building, path: &str, reason: &str) {
    if b.error.is_none() {
        let field = (!path.is_empty()).then(|| path.to_owned());
        b.error = Some((field, reason.to_owned()));
    }
}

fn local_name(e: &BytesStart<'_>) -> String {
    String::from_utf8_lossy(e.local_name().into_inner()).into_owned()
}

fn attribute(e: &BytesStart<'_>, name: &str) -> Result<Option<String>, String> {
    for attr in e.attributes() {
        let a = attr.map_err(|err| format!("malformed attribute: {err}"))?;
        if a.key.local_name().into_inner() == name.as_bytes() {
            let v = a
                .unescape_value()
                .map_err(|err| format!("malformed attribute `{name}`: {err}"))?;
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

#[cfg(test)]
mod tests;
