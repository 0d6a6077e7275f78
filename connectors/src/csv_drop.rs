//! CSV drops (connector kind `csv_drop`): semicolon-separated, Windows-1252 encoded files
//! with a header line, read streaming.
//!
//! The layout is documented in `schemas/formats/csv-drop.md`. In short:
//!
//! - The bytes are decoded from Windows-1252 while they are read (`encoding_rs_io`); a file
//!   that starts with a UTF-8 (or UTF-16) byte-order mark is decoded by that mark instead.
//! - The first line is the header. Each column's header name is the field path of its values
//!   in the [`RawRecord`], so the mapping file names columns by their header: renaming a
//!   header in the mapping file alone changes what is read. Header names are trimmed; an empty
//!   or repeated header name fails the delivery.
//! - Fields are separated by `;` and may be quoted with `"` (a quote inside a quoted field is
//!   doubled); quoted fields may hold separators and line breaks (the `csv` crate).
//! - One column holds the record id ([`CsvFormat::id_column`]); an optional relations column
//!   ([`RelationColumn`]) holds relations to other persons as `soort:BSN|soort:BSN`, which
//!   become repeated groups named after the column.
//!
//! What happens to bad input:
//!
//! | problem | outcome |
//! |---|---|
//! | a record with more or fewer fields than the header | that record → quarantine |
//! | a relations item that is not `soort:BSN` | that record → quarantine |
//! | a record longer than `max_record_bytes` (but shorter than the read window) | that record → quarantine |
//! | a record longer than the read window (`max_record_bytes` + 64 KiB) | delivery fails (`Limit`): the parser cannot find the next record safely |
//! | the file is larger than `max_bytes` | delivery fails (`Limit`) |
//! | the file ends inside a quoted field (unterminated quote) | delivery fails (`Truncated`) |
//! | the last record (or the header line) is not followed by a line break: the file was cut mid-record, also right after a field or a delimiter | delivery fails (`Truncated`), naming the record and byte offset; the cut record is not handed out. Accepted when [`CsvFormat::require_final_line_break`] is `false` |
//! | an empty file (0 bytes) | delivery fails (`Truncated`): no header line |
//! | no header line, a column the mapping needs is missing, a repeated header | delivery fails (`Malformed`) |
//!
//! The final line break is seen in the decoded text as it streams by (the last byte and the
//! end of the text are tracked in `DecodedText`'s counter), without buffering. A file cut
//! exactly after a line break cannot be told from a complete one; for full snapshots the
//! shrink guard holds such a delivery when it would end too many involvements.
//!
//! Memory is bounded by one record (plus the read buffers), whatever the size of the file.
//! Byte offsets in messages count bytes of the decoded (UTF-8) text from the start of the
//! file, which equals the file offset for plain ASCII content. A record's offset is its first
//! byte, after the CRLF or LF ending the line before and any empty lines (the `csv` crate
//! reports where it started reading, before those: `TextCounter::record_start`).

use std::cell::{Cell, RefCell};
use std::collections::{HashSet, VecDeque};
use std::io::{self, BufRead, Read};
use std::rc::Rc;

use encoding_rs::WINDOWS_1252;
use encoding_rs_io::{DecodeReaderBytes, DecodeReaderBytesBuilder};
use matchpoint_schemas::{RawGroup, RawRecord, RecordPosition};

use crate::location::{LIMIT_MARKER, LimitedReader, ReadCounter, ReadLimits};
use crate::{DeliveryError, RecordError, RecordResult, RecordStream};

/// Bytes the CSV parser may read ahead of the record it is parsing.
const READ_AHEAD: u64 = 64 * 1024;

/// Where relations to other persons are in a CSV record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelationColumn {
    /// Header name of the column, e.g. `relaties`; also the path of the repeated groups.
    pub column: String,
    /// Field name (inside each group) that receives the relation kind, e.g. `soort`.
    pub kind_field: String,
    /// Field name (inside each group) that receives the other person's BSN, e.g. `bsn`.
    pub bsn_field: String,
}

/// How to read one CSV drop.
#[derive(Debug, Clone)]
pub struct CsvFormat {
    /// Field separator (default `;`).
    pub delimiter: u8,
    /// Header name of the column holding the record id.
    pub id_column: String,
    /// The relations column, when the source delivers relations.
    pub relations: Option<RelationColumn>,
    /// Header names that must be present (e.g. every column the mapping names); a missing
    /// one fails the delivery before any record is read.
    pub required_columns: Vec<String>,
    /// Most bytes one record may have; a larger record is quarantined.
    pub max_record_bytes: u64,
    /// Most bytes the file may have.
    pub max_bytes: u64,
    /// Whether the last record must end with a line break (default `true`). A file whose
    /// last record does not is taken as cut off in transport and fails the delivery
    /// (`Truncated`); `false` accepts it, for a supplier that never writes a final line break.
    pub require_final_line_break: bool,
}

impl Default for CsvFormat {
    fn default() -> Self {
        CsvFormat {
            delimiter: b';',
            id_column: "id".into(),
            relations: None,
            required_columns: Vec::new(),
            max_record_bytes: 1 << 20,
            max_bytes: 8 << 30,
            require_final_line_break: true,
        }
    }
}

/// Quoting state of the decoded text, mirroring the `csv` crate's reading of it (quote `"`,
/// doubled quotes inside quoted fields, no escape character).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum QuoteState {
    /// At the start of a field.
    FieldStart,
    /// Inside an unquoted field (a quote here is an ordinary character).
    Unquoted,
    /// Inside a quoted field.
    Quoted,
    /// Just after a quote inside a quoted field: the end of the quotes, or half of `""`.
    AfterQuote,
}

/// Shared counters of the decoded text.
#[derive(Debug, Default)]
struct TextCounter {
    /// Decoded bytes handed to the parser.
    total: Cell<u64>,
    /// Decoded bytes handed out since the current record started.
    since_mark: Cell<u64>,
    /// Quoting state after the last byte handed out.
    quote: Cell<Option<QuoteState>>,
    /// The last decoded byte handed out (`None` before the first).
    last: Cell<Option<u8>>,
    /// Whether the end of the decoded text has been reached.
    eof: Cell<bool>,
    /// The last byte handed out was inside a line (not a line break outside quotes): the
    /// next byte does not start a record.
    in_line: Cell<bool>,
    /// Where the records in the text handed out but not yet parsed start (see
    /// [`TextCounter::record_start`]); at most one read-ahead's worth.
    starts: RefCell<VecDeque<u64>>,
}

impl TextCounter {
    /// Where the record the parser reports at byte `reported` really starts. The `csv`
    /// crate reports where it started reading the record, which is before the line breaks
    /// it skips first: the LF of a CRLF ending the line before, and empty lines. Forgets
    /// the starts before `reported`.
    fn record_start(&self, reported: u64) -> u64 {
        let mut starts = self.starts.borrow_mut();
        while starts.front().is_some_and(|&s| s < reported) {
            starts.pop_front();
        }
        starts.front().copied().unwrap_or(reported)
    }
}

/// The decoded text: tracks the quoting state (so an unterminated quote at the end of the
/// file is seen) and fails once one record spans more than the read window.
struct DecodedText<R> {
    inner: R,
    window: u64,
    delimiter: u8,
    counter: Rc<TextCounter>,
}

impl<R: Read> Read for DecodedText<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.counter.since_mark.get() > self.window {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{LIMIT_MARKER} record window exceeded"),
            ));
        }
        let room = usize::try_from(self.window - self.counter.since_mark.get() + 1)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        let n = self.inner.read(&mut buf[..room])?;
        if n == 0 && room > 0 {
            self.counter.eof.set(true);
        }
        if let Some(&b) = buf[..n].last() {
            self.counter.last.set(Some(b));
        }
        let mut state = self.counter.quote.get().unwrap_or(QuoteState::FieldStart);
        let mut in_line = self.counter.in_line.get();
        let mut starts = self.counter.starts.borrow_mut();
        for (i, &b) in buf[..n].iter().enumerate() {
            let line_break = b == b'\n' || b == b'\r';
            if !in_line && !line_break {
                starts.push_back(self.counter.total.get() + i as u64);
            }
            in_line = !line_break || state == QuoteState::Quoted;
            let sep = b == self.delimiter || line_break;
            state = match (state, b) {
                (QuoteState::FieldStart, b'"') => QuoteState::Quoted,
                (QuoteState::FieldStart | QuoteState::Unquoted, _) if sep => QuoteState::FieldStart,
                (QuoteState::FieldStart | QuoteState::Unquoted, _) => QuoteState::Unquoted,
                (QuoteState::Quoted, b'"') => QuoteState::AfterQuote,
                (QuoteState::Quoted, _) => QuoteState::Quoted,
                (QuoteState::AfterQuote, b'"') => QuoteState::Quoted,
                (QuoteState::AfterQuote, _) if sep => QuoteState::FieldStart,
                (QuoteState::AfterQuote, _) => QuoteState::Unquoted,
            };
        }
        drop(starts);
        self.counter.quote.set(Some(state));
        self.counter.in_line.set(in_line);
        self.counter.total.set(self.counter.total.get() + n as u64);
        self.counter
            .since_mark
            .set(self.counter.since_mark.get() + n as u64);
        Ok(n)
    }
}

type Source = DecodedText<DecodeReaderBytes<LimitedReader<Box<dyn BufRead>>, Vec<u8>>>;

/// Reads one CSV drop record by record.
pub struct CsvDropReader {
    location: String,
    format: CsvFormat,
    reader: csv::Reader<Source>,
    raw: Rc<ReadCounter>,
    text: Rc<TextCounter>,
    /// Header names, once read.
    header: Option<Vec<String>>,
    id_index: usize,
    relations_index: Option<usize>,
    record: csv::ByteRecord,
    index: u64,
    done: bool,
}

impl CsvDropReader {
    /// A reader of `input` (the raw file bytes); `location` names the file in messages.
    pub fn new(input: Box<dyn BufRead>, location: &str, format: CsvFormat) -> Self {
        let (limited, raw) = LimitedReader::new(
            input,
            ReadLimits {
                max_bytes: format.max_bytes,
                max_event_bytes: u64::MAX,
            },
        );
        let decoded = DecodeReaderBytesBuilder::new()
            .encoding(Some(WINDOWS_1252))
            .bom_override(true)
            .build(limited);
        let text = Rc::new(TextCounter::default());
        let source = DecodedText {
            inner: decoded,
            window: format.max_record_bytes.saturating_add(READ_AHEAD),
            delimiter: format.delimiter,
            counter: text.clone(),
        };
        let reader = csv::ReaderBuilder::new()
            .delimiter(format.delimiter)
            .has_headers(false)
            .flexible(true)
            .buffer_capacity(32 * 1024)
            .from_reader(source);
        CsvDropReader {
            location: location.to_owned(),
            format,
            reader,
            raw,
            text,
            header: None,
            id_index: 0,
            relations_index: None,
            record: csv::ByteRecord::new(),
            index: 0,
            done: false,
        }
    }

    fn error(&self, e: csv::Error) -> DeliveryError {
        // The start of the record being read (where the parser started reading it, when the
        // error has no position).
        let offset = self.text.record_start(
            e.position()
                .or(self.record.position())
                .map_or(self.text.total.get(), |p| p.byte()),
        );
        match e.into_kind() {
            csv::ErrorKind::Io(io) if io.to_string().contains(LIMIT_MARKER) => {
                if self.raw.total() > self.format.max_bytes {
                    DeliveryError::Limit {
                        location: self.location.clone(),
                        message: format!(
                            "the file is larger than the configured limit of {} bytes \
                             (limits.max_bytes); nothing was published",
                            self.format.max_bytes
                        ),
                    }
                } else {
                    DeliveryError::Limit {
                        location: self.location.clone(),
                        message: format!(
                            "record {} (from byte {}) runs on for more than {} bytes, the \
                             configured limit (limits.max_record_bytes); an unterminated \
                             quote is the usual cause; nothing was published",
                            self.index + 1,
                            offset,
                            self.format.max_record_bytes
                        ),
                    }
                }
            }
            csv::ErrorKind::Io(io) => DeliveryError::Io {
                location: self.location.clone(),
                message: io.to_string(),
            },
            other => DeliveryError::Malformed {
                location: self.location.clone(),
                byte_offset: offset,
                record_index: self.index + 1,
                message: format!("{other:?}"),
            },
        }
    }

    /// Reads the next CSV record into `self.record`; `false` at the end of the file.
    fn read(&mut self) -> Result<bool, DeliveryError> {
        self.text.since_mark.set(
            self.text
                .total
                .get()
                .saturating_sub(self.reader.position().byte()),
        );
        match self.reader.read_byte_record(&mut self.record) {
            Ok(more) => Ok(more),
            Err(e) => Err(self.error(e)),
        }
    }

    fn read_header(&mut self) -> Result<(), DeliveryError> {
        if !self.read()? {
            return Err(DeliveryError::Truncated {
                location: self.location.clone(),
                message: "the file is empty: no header line".into(),
            });
        }
        self.check_end(0, 0)?;
        let mut names = Vec::with_capacity(self.record.len());
        let mut seen = HashSet::new();
        for (i, raw) in self.record.iter().enumerate() {
            let name = String::from_utf8_lossy(raw).trim().to_owned();
            if name.is_empty() {
                return Err(self.malformed_header(format!("column {} has no header name", i + 1)));
            }
            if !seen.insert(name.clone()) {
                return Err(self.malformed_header(format!("header `{name}` appears twice")));
            }
            names.push(name);
        }
        let find = |n: &str| names.iter().position(|h| h == n);
        let mut missing: Vec<&str> = Vec::new();
        let id_index = find(&self.format.id_column);
        if id_index.is_none() {
            missing.push(&self.format.id_column);
        }
        let relations_index = match &self.format.relations {
            Some(r) => {
                let i = find(&r.column);
                if i.is_none() {
                    missing.push(&r.column);
                }
                i
            }
            None => None,
        };
        for c in &self.format.required_columns {
            if find(c).is_none() && !missing.contains(&c.as_str()) {
                missing.push(c);
            }
        }
        if !missing.is_empty() {
            let msg = format!(
                "the header has no column {} (named by the mapping file or [source.csv]); \
                 the header has: {}; rename the column in the mapping file or fix the file",
                missing
                    .iter()
                    .map(|m| format!("`{m}`"))
                    .collect::<Vec<_>>()
                    .join(", "),
                names.join(";")
            );
            return Err(self.malformed_header(msg));
        }
        self.id_index = id_index.unwrap_or(0);
        self.relations_index = relations_index;
        self.header = Some(names);
        Ok(())
    }

    /// Whether the parser has taken in the whole decoded text: the record just read is the
    /// last of the file.
    fn at_end(&self) -> bool {
        self.text.eof.get() && self.reader.position().byte() == self.text.total.get()
    }

    /// Fails the delivery (`Truncated`) when the record just read — number `record`, `0` for
    /// the header line, starting at byte `start` — is the last of the file and the file ends
    /// inside a quoted field, or (unless the format allows it) not with a line break: a
    /// transfer cut off mid-record, even between two fields, is never taken for a complete
    /// delivery.
    fn check_end(&self, record: u64, start: u64) -> Result<(), DeliveryError> {
        if !self.at_end() {
            return Ok(());
        }
        let what = if record == 0 {
            "the header line".to_owned()
        } else {
            format!("record {record} (from byte {start})")
        };
        let message = if self.text.quote.get() == Some(QuoteState::Quoted) {
            format!("the file ends inside a quoted field (an unterminated quote, {what})")
        } else if self.format.require_final_line_break
            && !matches!(self.text.last.get(), None | Some(b'\n' | b'\r'))
        {
            format!(
                "{what} is not followed by a line break: the file ends at byte {} in the \
                 middle of a record, so it was probably cut off in transport; ask the supplier \
                 for a complete file, or set `final_line_break = \"optional\"` in [source.csv] \
                 if this supplier never ends its files with a line break",
                self.text.total.get()
            )
        } else {
            return Ok(());
        };
        Err(DeliveryError::Truncated {
            location: self.location.clone(),
            message,
        })
    }

    fn malformed_header(&self, message: String) -> DeliveryError {
        DeliveryError::Malformed {
            location: self.location.clone(),
            byte_offset: 0,
            record_index: 0,
            message: format!("header line: {message}"),
        }
    }

    /// Turns the current CSV record into a raw record, or a quarantine entry.
    fn convert(&self, header: &[String], position: RecordPosition, bytes: u64) -> RecordResult {
        let value = |i: usize| {
            self.record
                .get(i)
                .map(|v| String::from_utf8_lossy(v).into_owned())
        };
        let record_id = value(self.id_index)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty());
        let reject = |field: Option<String>, reason: String| RecordError {
            record_id: record_id.clone(),
            position,
            field,
            reason,
        };
        if self.record.len() != header.len() {
            return Err(reject(
                None,
                format!(
                    "the record has {} fields, the header has {}",
                    self.record.len(),
                    header.len()
                ),
            ));
        }
        if bytes > self.format.max_record_bytes {
            return Err(reject(
                None,
                format!(
                    "the record is {bytes} bytes, more than the configured limit of {} bytes (limits.max_record_bytes)",
                    self.format.max_record_bytes
                ),
            ));
        }
        let mut fields = Vec::with_capacity(header.len());
        let mut groups = Vec::new();
        for (i, name) in header.iter().enumerate() {
            let v = value(i).unwrap_or_default();
            if Some(i) == self.relations_index
                && let Some(rel) = &self.format.relations
            {
                for (n, item) in v
                    .split('|')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .enumerate()
                {
                    let Some((kind, bsn)) = item.split_once(':') else {
                        return Err(reject(
                            Some(name.clone()),
                            format!(
                                "relation {} is not written as `soort:BSN` (items are separated by `|`)",
                                n + 1
                            ),
                        ));
                    };
                    groups.push(RawGroup {
                        path: rel.column.clone(),
                        fields: vec![
                            (rel.kind_field.clone(), kind.trim().to_owned()),
                            (rel.bsn_field.clone(), bsn.trim().to_owned()),
                        ],
                    });
                }
                continue;
            }
            fields.push((name.clone(), v));
        }
        Ok(RawRecord {
            record_id,
            position,
            fields,
            groups,
        })
    }
}

impl RecordStream for CsvDropReader {
    fn next_record(&mut self) -> Result<Option<RecordResult>, DeliveryError> {
        if self.done {
            return Ok(None);
        }
        let result = self.next_inner();
        if !matches!(result, Ok(Some(_))) {
            self.done = true;
        }
        result
    }

    fn bytes_read(&self) -> u64 {
        self.raw.total()
    }
}

impl CsvDropReader {
    fn next_inner(&mut self) -> Result<Option<RecordResult>, DeliveryError> {
        if self.header.is_none() {
            self.read_header()?;
        }
        let start = self.reader.position().byte();
        if !self.read()? {
            // Every byte of an unterminated last record makes a record, so this is seen
            // when that record is read; checked again here all the same.
            self.check_end(self.index, start)?;
            return Ok(None);
        }
        let record_start = self
            .text
            .record_start(self.record.position().map_or(start, |p| p.byte()));
        self.check_end(self.index + 1, record_start)?;
        self.index += 1;
        let end = self.reader.position().byte();
        let position = RecordPosition {
            index: self.index,
            byte_offset: record_start,
        };
        let header = self.header.take().unwrap_or_default();
        let out = self.convert(&header, position, end.saturating_sub(record_start));
        self.header = Some(header);
        Ok(Some(out))
    }
}

#[cfg(test)]
mod tests;
