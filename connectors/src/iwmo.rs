//! iWmo 3.2 messages (`/work/shared/istandaarden/iwmo-3.2/`): WMO301 (assignment of a
//! product to a provider), WMO305 (start of support) and WMO307 (stop of support), one
//! message per file, read streaming with quick-xml into typed [`Message`]s.
//!
//! The reader keeps only what the WMO module needs: the header, the client's BSN and birth
//! date, and per product the assignment, start and stop data. Names, addresses, relations,
//! contact details and free-text comments are skipped while reading and never held in memory.
//!
//! Hardened against hostile input like the XML export reader: any DOCTYPE is refused (no
//! entity can be declared), element depth, event size and message size are capped, and
//! problems are classified:
//! - [`MessageError::Malformed`], [`MessageError::Truncated`], [`MessageError::Limit`]: the
//!   file is not a complete, well-formed XML document (the delivery fails);
//! - [`MessageError::Version`]: a message of another iWmo release (or another standard's
//!   namespace); the error names the version found;
//! - [`MessageError::Invalid`]: a well-formed message that breaks the schema where this reader
//!   looks (missing element, bad date, unknown code), naming the element; never its value.
//!
//! The parser does not check the BSN's elfproef: the hub quarantines such messages with the
//! mapping's `invalid_bsn` reason.

use std::io::BufRead;
use std::rc::Rc;

use chrono::NaiveDate;
use quick_xml::NsReader;
use quick_xml::events::Event;
use quick_xml::name::{Namespace, ResolveResult};

use crate::location::{LIMIT_MARKER, LimitedReader, ReadCounter, ReadLimits};

/// The iWmo release this reader understands.
pub const RELEASE: &str = "3.2";

/// The namespace prefix of every iStandaarden message.
const NS_PREFIX: &str = "http://www.istandaarden.nl/";

/// Which of the three messages.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum MessageKind {
    /// WMO301 (BerichtCode 414): assignment (toewijzing), sent by the municipality.
    Wmo301,
    /// WMO305 (BerichtCode 418): start of support, sent by the provider.
    Wmo305,
    /// WMO307 (BerichtCode 420): stop of support, sent by the provider.
    Wmo307,
}

impl MessageKind {
    /// The message's `BerichtCode`.
    pub fn code(self) -> &'static str {
        match self {
            MessageKind::Wmo301 => "414",
            MessageKind::Wmo305 => "418",
            MessageKind::Wmo307 => "420",
        }
    }

    /// The message's name, e.g. `WMO301`.
    pub fn name(self) -> &'static str {
        match self {
            MessageKind::Wmo301 => "WMO301",
            MessageKind::Wmo305 => "WMO305",
            MessageKind::Wmo307 => "WMO307",
        }
    }

    /// The target namespace of the message's schema.
    pub fn namespace(self) -> &'static str {
        match self {
            MessageKind::Wmo301 => "http://www.istandaarden.nl/iwmo/3_2/wmo301/schema",
            MessageKind::Wmo305 => "http://www.istandaarden.nl/iwmo/3_2/wmo305/schema",
            MessageKind::Wmo307 => "http://www.istandaarden.nl/iwmo/3_2/wmo307/schema",
        }
    }

    /// The element holding one product: `ToegewezenProduct`, `StartProduct`, `StopProduct`.
    fn product_path(self) -> &'static str {
        match self {
            MessageKind::Wmo301 => "Client/ToegewezenProducten/ToegewezenProduct",
            MessageKind::Wmo305 => "Client/StartProducten/StartProduct",
            MessageKind::Wmo307 => "Client/StopProducten/StopProduct",
        }
    }
}

/// The message header.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Header {
    /// Which message.
    pub kind: MessageKind,
    /// `Afzender`: municipality code (301) or provider AGB code (305/307).
    pub sender: String,
    /// `Ontvanger`: provider AGB code (301) or municipality code (305/307).
    pub receiver: String,
    /// `BerichtIdentificatie/Identificatie`.
    pub id: String,
    /// `BerichtIdentificatie/Dagtekening`.
    pub dagtekening: NaiveDate,
    /// `XsdVersie/BerichtXsdVersie`.
    pub message_xsd_version: String,
    /// `XsdVersie/BasisschemaXsdVersie`.
    pub base_xsd_version: String,
}

impl Header {
    /// The provider's AGB code: the receiver of a 301, the sender of a 305/307.
    pub fn provider(&self) -> &str {
        match self.kind {
            MessageKind::Wmo301 => &self.receiver,
            MessageKind::Wmo305 | MessageKind::Wmo307 => &self.sender,
        }
    }

    /// The municipality code: the sender of a 301, the receiver of a 305/307.
    pub fn municipality(&self) -> &str {
        match self.kind {
            MessageKind::Wmo301 => &self.sender,
            MessageKind::Wmo305 | MessageKind::Wmo307 => &self.receiver,
        }
    }
}

/// The client, as far as the WMO module needs it.
#[derive(Clone, PartialEq, Eq)]
pub struct Client {
    /// The BSN as delivered (nine digits; the elfproef is not checked here).
    pub bsn: String,
    /// `Geboortedatum/Datum`.
    pub birth_date: NaiveDate,
    /// `Geboortedatum/DatumGebruik`: 1 day unknown, 2 day and month unknown, 3 date unknown.
    pub birth_date_use: Option<String>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print a clear BSN or birth date.
        f.write_str("Client { .. }")
    }
}

/// `CDT_Product`: a WMO020 product category and an optional product code.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct Product {
    /// WMO020 product category (`01`..`18`).
    pub category: String,
    /// The municipality's product code (up to five characters).
    pub code: Option<String>,
}

/// `CDT_Omvang`: volume, unit (WMO757) and frequency (WMO756).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Extent {
    /// Volume.
    pub volume: u64,
    /// Unit code.
    pub unit: String,
    /// Frequency code.
    pub frequency: String,
}

/// `StatusAanlevering` (WMO036) of a 305/307 product.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum DeliveryStatus {
    /// 1: first delivery.
    First,
    /// 2: corrected delivery (replaces the earlier one).
    Corrected,
    /// 3: withdrawal of the earlier delivery.
    Withdrawn,
    /// 9: not applicable (unchanged).
    Unchanged,
}

/// One `ToegewezenProduct` of a WMO301.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AssignedProduct {
    /// `ToewijzingNummer`.
    pub number: u64,
    /// `ReferentieAanbieder`.
    pub provider_reference: Option<String>,
    /// `Product`; absent for budget assignments.
    pub product: Option<Product>,
    /// `Toewijzingsdatum`: when the municipality decided the assignment.
    pub assigned_on: NaiveDate,
    /// `Toewijzingstijd`, as delivered (`hh:mm:ss`).
    pub assigned_at: String,
    /// `Ingangsdatum`: first day of the assignment.
    pub start: NaiveDate,
    /// `Einddatum`: last day of the assignment, when fixed.
    pub end: Option<NaiveDate>,
    /// `RedenWijziging` (`LDT_RedenWijziging`); [`CHANGE_REASON_VOIDED`] voids the assignment.
    pub change_reason: Option<String>,
    /// `Omvang`.
    pub extent: Option<Extent>,
    /// `Budget` in eurocents.
    pub budget: Option<u64>,
}

/// `RedenWijziging` 13: the assignment is deleted (voided).
pub const CHANGE_REASON_VOIDED: &str = "13";

/// One `StartProduct` of a WMO305.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StartedProduct {
    /// `ToewijzingNummer`, when the provider sent it.
    pub number: Option<u64>,
    /// `Product`.
    pub product: Option<Product>,
    /// `ToewijzingIngangsdatum`: the assignment's `Ingangsdatum`.
    pub assignment_start: Option<NaiveDate>,
    /// `Begindatum`: first day support was delivered.
    pub start: NaiveDate,
    /// `StatusAanlevering`.
    pub status: DeliveryStatus,
}

/// One `StopProduct` of a WMO307.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StoppedProduct {
    /// `ToewijzingNummer`, when the provider sent it.
    pub number: Option<u64>,
    /// `Product`.
    pub product: Option<Product>,
    /// `ToewijzingIngangsdatum`: the assignment's `Ingangsdatum`.
    pub assignment_start: Option<NaiveDate>,
    /// `Begindatum`: first day support was delivered.
    pub start: NaiveDate,
    /// `RedenBeeindiging` (WMO588).
    pub reason: String,
    /// `Einddatum`: last day support was delivered.
    pub end: NaiveDate,
    /// `StatusAanlevering`.
    pub status: DeliveryStatus,
}

/// The products of a message, by kind.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Body {
    /// WMO301.
    Assignment(Vec<AssignedProduct>),
    /// WMO305.
    Start(Vec<StartedProduct>),
    /// WMO307.
    Stop(Vec<StoppedProduct>),
}

/// One message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The header.
    pub header: Header,
    /// The client.
    pub client: Client,
    /// The products.
    pub body: Body,
}

/// Why a message could not be read. Messages never contain a delivered value that could be
/// personal data (BSN, names, dates of birth).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    /// Not well-formed XML.
    #[error("malformed XML at byte {byte_offset}: {message}")]
    Malformed {
        /// Where.
        byte_offset: u64,
        /// What.
        message: String,
    },
    /// The file ends before the message is complete.
    #[error("the message is truncated: {0}")]
    Truncated(String),
    /// A configured limit was exceeded.
    #[error("{0}")]
    Limit(String),
    /// A message of another iWmo release, or not an iWmo message at all.
    #[error(
        "iWmo version {found} found; this source reads iWmo {RELEASE} messages only (WMO301, WMO305, WMO307): ask the sender for a {RELEASE} message or remove the file"
    )]
    Version {
        /// The release (or namespace) found.
        found: String,
    },
    /// A well-formed message that breaks the schema.
    #[error("{element}: {reason}")]
    Invalid {
        /// The element at fault, e.g. `Client/StartProducten/StartProduct[1]/Begindatum`.
        element: String,
        /// What is wrong (never the value).
        reason: String,
    },
}

impl MessageError {
    /// Whether the file itself is broken (the delivery fails), as opposed to one message
    /// that is readable but not acceptable (quarantine).
    pub fn breaks_delivery(&self) -> bool {
        matches!(
            self,
            MessageError::Malformed { .. } | MessageError::Truncated(_) | MessageError::Limit(_)
        )
    }

    fn invalid(element: impl Into<String>, reason: impl Into<String>) -> Self {
        MessageError::Invalid {
            element: element.into(),
            reason: reason.into(),
        }
    }
}

/// Limits on one message file.
#[derive(Debug, Clone)]
pub struct MessageLimits {
    /// Most bytes in one message file.
    pub max_bytes: u64,
    /// Most bytes in one element or text node.
    pub max_event_bytes: u64,
    /// Deepest element nesting (the root element is level 1).
    pub max_depth: usize,
    /// Most products in one message.
    pub max_products: usize,
}

impl Default for MessageLimits {
    fn default() -> Self {
        MessageLimits {
            max_bytes: 1 << 20,
            max_event_bytes: 64 << 10,
            max_depth: 16,
            max_products: 1000,
        }
    }
}

/// Leaf elements the reader keeps, relative to `Bericht`.
const KEPT: &[&str] = &[
    "Header/BerichtCode",
    "Header/BerichtVersie",
    "Header/BerichtSubversie",
    "Header/Afzender",
    "Header/Ontvanger",
    "Header/BerichtIdentificatie/Identificatie",
    "Header/BerichtIdentificatie/Dagtekening",
    "Header/XsdVersie/BasisschemaXsdVersie",
    "Header/XsdVersie/BerichtXsdVersie",
    "Client/Bsn",
    "Client/Geboortedatum/Datum",
    "Client/Geboortedatum/DatumGebruik",
];

/// Leaf elements kept inside a product, relative to the product element.
const KEPT_IN_PRODUCT: &[&str] = &[
    "ToewijzingNummer",
    "ReferentieAanbieder",
    "Product/Categorie",
    "Product/Code",
    "Toewijzingsdatum",
    "Toewijzingstijd",
    "Ingangsdatum",
    "Einddatum",
    "RedenWijziging",
    "Omvang/Volume",
    "Omvang/Eenheid",
    "Omvang/Frequentie",
    "Budget",
    "ToewijzingIngangsdatum",
    "Begindatum",
    "RedenBeeindiging",
    "StatusAanlevering",
];

/// Leaf values of one element set.
#[derive(Debug, Default)]
struct Fields {
    values: Vec<(&'static str, String)>,
}

impl Fields {
    fn get(&self, path: &str) -> Option<&str> {
        self.values
            .iter()
            .find(|(p, _)| *p == path)
            .map(|(_, v)| v.as_str())
    }
}

/// What the streaming pass collected.
struct Collected {
    kind: MessageKind,
    fields: Fields,
    products: Vec<Fields>,
}

/// How far to read.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Depth {
    HeaderOnly,
    /// Up to and including `Client/Bsn`.
    Envelope,
    Whole,
}

/// Reads one whole message.
pub fn read_message<R: BufRead>(input: R, limits: &MessageLimits) -> Result<Message, MessageError> {
    let c = collect(input, limits, Depth::Whole)?;
    let header = header(&c)?;
    let client = client(&c)?;
    let body = body(&c)?;
    Ok(Message {
        header,
        client,
        body,
    })
}

/// Reads only the header of a message (stops after `</Header>`): enough to order messages.
pub fn read_header<R: BufRead>(input: R, limits: &MessageLimits) -> Result<Header, MessageError> {
    let c = collect(input, limits, Depth::HeaderOnly)?;
    header(&c)
}

/// Reads the header and the client's BSN (stops after `</Bsn>`, the first element of
/// `Client`): enough to order messages and to tell which client they concern. The BSN is
/// `None` when the message has none where the schema puts it (reading the whole message then
/// reports the problem).
pub fn read_envelope<R: BufRead>(
    input: R,
    limits: &MessageLimits,
) -> Result<(Header, Option<String>), MessageError> {
    let c = collect(input, limits, Depth::Envelope)?;
    let h = header(&c)?;
    Ok((h, c.fields.get("Client/Bsn").map(str::to_owned)))
}

fn collect<R: BufRead>(
    input: R,
    limits: &MessageLimits,
    depth: Depth,
) -> Result<Collected, MessageError> {
    let (limited, counter) = LimitedReader::new(
        input,
        ReadLimits {
            max_bytes: limits.max_bytes,
            max_event_bytes: limits.max_event_bytes,
        },
    );
    let mut reader = NsReader::from_reader(limited);
    {
        let cfg = reader.config_mut();
        cfg.trim_text(false);
        cfg.check_end_names = true;
        cfg.expand_empty_elements = true;
    }
    let mut buf = Vec::with_capacity(1024);
    let mut stack: Vec<String> = Vec::new();
    let mut path = String::new();
    let mut text = String::new();
    let mut kind: Option<MessageKind> = None;
    let mut root_closed = false;
    let mut fields = Fields::default();
    let mut products: Vec<Fields> = Vec::new();
    let mut in_product = false;
    let mut header_done = false;
    let malformed =
        |reader: &NsReader<LimitedReader<R>>, message: String| MessageError::Malformed {
            byte_offset: reader.buffer_position(),
            message,
        };
    loop {
        counter.mark();
        buf.clear();
        let (ns, event) = match reader.read_resolved_event_into(&mut buf) {
            Ok(x) => x,
            Err(e) => return Err(xml_error(&reader, &counter, e)),
        };
        match event {
            Event::DocType(_) => {
                return Err(malformed(
                    &reader,
                    "DOCTYPE declarations are not allowed".into(),
                ));
            }
            Event::Decl(_) | Event::PI(_) | Event::Comment(_) => {}
            Event::Empty(_) => {
                // Never produced: empty elements are expanded to Start + End.
                return Err(malformed(&reader, "unexpected empty element".into()));
            }
            Event::Start(e) => {
                if root_closed {
                    return Err(malformed(&reader, "content after the root element".into()));
                }
                let name = String::from_utf8_lossy(e.local_name().into_inner()).into_owned();
                if stack.is_empty() {
                    if name != "Bericht" {
                        return Err(MessageError::invalid(
                            name,
                            "the root element must be `Bericht` (an iWmo message)",
                        ));
                    }
                    kind = Some(message_kind(&ns)?);
                } else {
                    if stack.len() >= limits.max_depth {
                        return Err(MessageError::Limit(format!(
                            "elements nest deeper than the limit of {} levels",
                            limits.max_depth
                        )));
                    }
                    if !path.is_empty() {
                        path.push('/');
                    }
                    path.push_str(&name);
                }
                if path == "Client" && !header_done {
                    return Err(MessageError::invalid(
                        "Client",
                        "comes before the message's Header",
                    ));
                }
                stack.push(name);
                text.clear();
                if let Some(k) = kind
                    && path == k.product_path()
                {
                    if products.len() >= limits.max_products {
                        return Err(MessageError::Limit(format!(
                            "more than {} products in one message",
                            limits.max_products
                        )));
                    }
                    products.push(Fields::default());
                    in_product = true;
                }
            }
            Event::End(_) => {
                let Some(k) = kind else {
                    return Err(malformed(
                        &reader,
                        "closing tag without an opening tag".into(),
                    ));
                };
                let value = text.trim();
                if !value.is_empty() {
                    let product_prefix = k.product_path();
                    if in_product && path.len() > product_prefix.len() {
                        let rel = &path[product_prefix.len() + 1..];
                        if let (Some(keep), Some(p)) = (
                            KEPT_IN_PRODUCT.iter().find(|k| **k == rel),
                            products.last_mut(),
                        ) {
                            if p.get(keep).is_some() {
                                return Err(MessageError::invalid(
                                    format!("{product_prefix}[{}]/{rel}", products.len()),
                                    "element appears twice",
                                ));
                            }
                            p.values.push((keep, value.to_owned()));
                        }
                    } else if let Some(keep) = KEPT.iter().find(|k| **k == path) {
                        if fields.get(keep).is_some() {
                            return Err(MessageError::invalid(*keep, "element appears twice"));
                        }
                        fields.values.push((keep, value.to_owned()));
                    }
                }
                text.clear();
                if path == k.product_path() {
                    in_product = false;
                }
                if path == "Header" {
                    header_done = true;
                }
                if (depth == Depth::HeaderOnly && path == "Header")
                    || (depth == Depth::Envelope && path == "Client/Bsn")
                {
                    return Ok(Collected {
                        kind: k,
                        fields,
                        products,
                    });
                }
                stack.pop();
                match path.rfind('/') {
                    Some(i) => path.truncate(i),
                    None => path.clear(),
                }
                if stack.is_empty() {
                    root_closed = true;
                }
            }
            Event::Text(t) => {
                let s = std::str::from_utf8(&t)
                    .map_err(|_| malformed(&reader, "invalid UTF-8 in text".into()))?;
                if stack.is_empty() {
                    if !s.chars().all(is_xml_whitespace) {
                        return Err(malformed(&reader, "text outside the root element".into()));
                    }
                    continue;
                }
                if !s.chars().all(is_xml_char) {
                    return Err(malformed(
                        &reader,
                        "text holds a character XML does not allow".into(),
                    ));
                }
                text.push_str(s);
            }
            Event::CData(t) => {
                if stack.is_empty() {
                    return Err(malformed(&reader, "CDATA outside the root element".into()));
                }
                let s = std::str::from_utf8(&t)
                    .map_err(|_| malformed(&reader, "invalid UTF-8 in CDATA".into()))?;
                text.push_str(s);
            }
            Event::GeneralRef(r) => {
                if stack.is_empty() {
                    return Err(malformed(
                        &reader,
                        "entity reference outside the root element".into(),
                    ));
                }
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
                    Some(c) if is_xml_char(c) => text.push(c),
                    _ => {
                        return Err(malformed(
                            &reader,
                            "undefined entity or invalid character reference".into(),
                        ));
                    }
                }
            }
            Event::Eof => {
                return match (kind, root_closed) {
                    (None, _) => Err(MessageError::Truncated(
                        "no root element: the file is empty".into(),
                    )),
                    (Some(_), false) => Err(MessageError::Truncated(
                        "the file ends before the closing `</Bericht>`".into(),
                    )),
                    (Some(k), true) if depth == Depth::HeaderOnly => Err(MessageError::invalid(
                        "Header",
                        format!("missing in this {} message", k.name()),
                    )),
                    (Some(k), true) if depth == Depth::Envelope => Ok(Collected {
                        kind: k,
                        fields,
                        products,
                    }),
                    (Some(k), true) => Ok(Collected {
                        kind: k,
                        fields,
                        products,
                    }),
                };
            }
        }
    }
}

fn xml_error<R: BufRead>(
    reader: &NsReader<LimitedReader<R>>,
    counter: &Rc<ReadCounter>,
    e: quick_xml::Error,
) -> MessageError {
    let text = e.to_string();
    if let Some(idx) = text.find(LIMIT_MARKER) {
        return MessageError::Limit(text[idx + LIMIT_MARKER.len()..].trim().to_owned());
    }
    if let quick_xml::Error::Syntax(_) = &e
        && reader.buffer_position() >= counter.total()
    {
        return MessageError::Truncated(format!("the file ends inside markup ({text})"));
    }
    MessageError::Malformed {
        byte_offset: reader.buffer_position(),
        message: text,
    }
}

/// The message kind from the root element's namespace; another release is a version error.
fn message_kind(ns: &ResolveResult<'_>) -> Result<MessageKind, MessageError> {
    let uri = match ns {
        ResolveResult::Bound(Namespace(n)) => String::from_utf8_lossy(n).into_owned(),
        _ => {
            return Err(MessageError::Version {
                found: "unknown (the root element `Bericht` has no namespace)".into(),
            });
        }
    };
    for k in [
        MessageKind::Wmo301,
        MessageKind::Wmo305,
        MessageKind::Wmo307,
    ] {
        if uri == k.namespace() {
            return Ok(k);
        }
    }
    // http://www.istandaarden.nl/<standard>/<release>/<message>/schema
    let parts: Vec<&str> = uri
        .strip_prefix(NS_PREFIX)
        .map(|r| r.split('/').collect())
        .unwrap_or_default();
    match parts.as_slice() {
        [standard, release, message, ..] if *standard == "iwmo" && *release != "3_2" => {
            Err(MessageError::Version {
                found: format!("{} ({message})", release.replace('_', ".")),
            })
        }
        [standard, release, message, ..] if *standard == "iwmo" => Err(MessageError::invalid(
            "Bericht",
            format!(
                "iWmo {} message `{message}` is not read by this source (only WMO301, WMO305, WMO307)",
                release.replace('_', ".")
            ),
        )),
        [standard, release, ..] => Err(MessageError::Version {
            found: format!("{standard} {} (not iWmo)", release.replace('_', ".")),
        }),
        _ => Err(MessageError::Version {
            found: "unknown (the namespace is not an iStandaarden namespace)".into(),
        }),
    }
}

fn required<'a>(
    f: &'a Fields,
    path: &'static str,
    kind: MessageKind,
) -> Result<&'a str, MessageError> {
    f.get(path).ok_or_else(|| {
        MessageError::invalid(path, format!("missing in this {} message", kind.name()))
    })
}

fn date(value: &str, element: &str) -> Result<NaiveDate, MessageError> {
    if value.len() != 10 {
        return Err(MessageError::invalid(
            element,
            "not a date (expected YYYY-MM-DD)",
        ));
    }
    NaiveDate::parse_from_str(value, "%Y-%m-%d")
        .map_err(|_| MessageError::invalid(element, "not a date (expected YYYY-MM-DD)"))
}

fn number(value: &str, element: &str, max: u64) -> Result<u64, MessageError> {
    let v = value.strip_prefix('+').unwrap_or(value);
    if v.is_empty() || v.len() > 18 || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(MessageError::invalid(element, "not a whole number"));
    }
    let n: u64 = v
        .parse()
        .map_err(|_| MessageError::invalid(element, "not a whole number"))?;
    if n > max {
        return Err(MessageError::invalid(
            element,
            format!("larger than the schema's maximum {max}"),
        ));
    }
    Ok(n)
}

fn code(value: &str, element: &str, allowed: &[&str]) -> Result<String, MessageError> {
    if allowed.contains(&value) {
        Ok(value.to_owned())
    } else {
        Err(MessageError::invalid(
            element,
            format!("not a code of its list (one of {})", allowed.join(", ")),
        ))
    }
}

fn text(value: &str, element: &str, max_chars: usize) -> Result<String, MessageError> {
    if value.chars().count() > max_chars {
        return Err(MessageError::invalid(
            element,
            format!("longer than {max_chars} characters"),
        ));
    }
    Ok(value.to_owned())
}

fn header(c: &Collected) -> Result<Header, MessageError> {
    let f = &c.fields;
    let k = c.kind;
    let code = required(f, "Header/BerichtCode", k)?;
    if code != k.code() {
        return Err(MessageError::invalid(
            "Header/BerichtCode",
            format!("must be {} in a {} message", k.code(), k.name()),
        ));
    }
    let major = required(f, "Header/BerichtVersie", k)?;
    let minor = required(f, "Header/BerichtSubversie", k)?;
    if major != "3" || minor != "2" {
        let shown = |v: &str| {
            if v.len() <= 3 && v.bytes().all(|b| b.is_ascii_digit()) {
                v.to_owned()
            } else {
                "?".to_owned()
            }
        };
        return Err(MessageError::Version {
            found: format!("{}.{} ({})", shown(major), shown(minor), k.name()),
        });
    }
    let agb = |path: &'static str| -> Result<String, MessageError> {
        let v = required(f, path, k)?;
        if v.len() == 8 && v.bytes().all(|b| b.is_ascii_digit()) {
            Ok(v.to_owned())
        } else {
            Err(MessageError::invalid(
                path,
                "not an AGB code (eight digits)",
            ))
        }
    };
    let municipality = |path: &'static str| -> Result<String, MessageError> {
        let v = required(f, path, k)?;
        if v.len() == 4 && v.bytes().all(|b| b.is_ascii_digit()) {
            Ok(v.to_owned())
        } else {
            Err(MessageError::invalid(
                path,
                "not a municipality code (four digits)",
            ))
        }
    };
    let (sender, receiver) = match k {
        MessageKind::Wmo301 => (municipality("Header/Afzender")?, agb("Header/Ontvanger")?),
        MessageKind::Wmo305 | MessageKind::Wmo307 => {
            (agb("Header/Afzender")?, municipality("Header/Ontvanger")?)
        }
    };
    let id = text(
        required(f, "Header/BerichtIdentificatie/Identificatie", k)?,
        "Header/BerichtIdentificatie/Identificatie",
        12,
    )?;
    let dagtekening = date(
        required(f, "Header/BerichtIdentificatie/Dagtekening", k)?,
        "Header/BerichtIdentificatie/Dagtekening",
    )?;
    let version = |path: &'static str| -> Result<String, MessageError> {
        let v = required(f, path, k)?;
        let parts: Vec<&str> = v.split('.').collect();
        if parts.len() == 3
            && parts
                .iter()
                .all(|p| !p.is_empty() && p.len() <= 4 && p.bytes().all(|b| b.is_ascii_digit()))
        {
            Ok(v.to_owned())
        } else {
            Err(MessageError::invalid(path, "not a version (n.n.n)"))
        }
    };
    Ok(Header {
        kind: k,
        sender,
        receiver,
        id,
        dagtekening,
        message_xsd_version: version("Header/XsdVersie/BerichtXsdVersie")?,
        base_xsd_version: version("Header/XsdVersie/BasisschemaXsdVersie")?,
    })
}

fn client(c: &Collected) -> Result<Client, MessageError> {
    let f = &c.fields;
    let bsn = required(f, "Client/Bsn", c.kind)?;
    if bsn.len() != 9 || !bsn.bytes().all(|b| b.is_ascii_digit()) {
        return Err(MessageError::invalid("Client/Bsn", "not nine digits"));
    }
    let birth_date = date(
        required(f, "Client/Geboortedatum/Datum", c.kind)?,
        "Client/Geboortedatum/Datum",
    )?;
    let birth_date_use = f
        .get("Client/Geboortedatum/DatumGebruik")
        .map(|v| code(v, "Client/Geboortedatum/DatumGebruik", &["1", "2", "3"]))
        .transpose()?;
    Ok(Client {
        bsn: bsn.to_owned(),
        birth_date,
        birth_date_use,
    })
}

/// WMO020 product categories.
pub const PRODUCT_CATEGORIES: &[&str] = &[
    "01", "02", "03", "04", "05", "06", "07", "08", "09", "10", "11", "12", "13", "14", "15", "16",
    "17", "18",
];

/// WMO588 reasons for ending support (`LDT_RedenBeeindiging`).
pub const END_REASONS: &[&str] = &[
    "02", "19", "20", "21", "22", "23", "31", "36", "37", "38", "39",
];

/// `LDT_RedenWijziging` codes.
pub const CHANGE_REASONS: &[&str] = &[
    "01", "02", "03", "04", "05", "06", "07", "08", "09", "10", "11", "12", "13", "14",
];

fn body(c: &Collected) -> Result<Body, MessageError> {
    let k = c.kind;
    if c.products.is_empty() {
        return Err(MessageError::invalid(
            k.product_path(),
            format!("a {} message needs at least one product", k.name()),
        ));
    }
    let mut assigned = Vec::new();
    let mut started = Vec::new();
    let mut stopped = Vec::new();
    for (i, p) in c.products.iter().enumerate() {
        let at = |rel: &str| format!("{}[{}]/{rel}", k.product_path(), i + 1);
        let req = |rel: &'static str| {
            p.get(rel).ok_or_else(|| {
                MessageError::invalid(at(rel), format!("missing in this {} message", k.name()))
            })
        };
        let opt_date = |rel: &'static str| p.get(rel).map(|v| date(v, &at(rel))).transpose();
        let product = match (p.get("Product/Categorie"), p.get("Product/Code")) {
            (Some(cat), code_v) => Some(Product {
                category: code(cat, &at("Product/Categorie"), PRODUCT_CATEGORIES)?,
                code: code_v
                    .map(|v| text(v, &at("Product/Code"), 5))
                    .transpose()?,
            }),
            (None, Some(_)) => {
                return Err(MessageError::invalid(
                    at("Product/Categorie"),
                    "missing while Product/Code is present",
                ));
            }
            (None, None) => None,
        };
        let status = || -> Result<DeliveryStatus, MessageError> {
            match req("StatusAanlevering")? {
                "1" => Ok(DeliveryStatus::First),
                "2" => Ok(DeliveryStatus::Corrected),
                "3" => Ok(DeliveryStatus::Withdrawn),
                "9" => Ok(DeliveryStatus::Unchanged),
                _ => Err(MessageError::invalid(
                    at("StatusAanlevering"),
                    "not a code of its list (one of 1, 2, 3, 9)",
                )),
            }
        };
        let number_opt = p
            .get("ToewijzingNummer")
            .map(|v| number(v, &at("ToewijzingNummer"), 999_999_999))
            .transpose()?;
        match k {
            MessageKind::Wmo301 => {
                let extent = match (
                    p.get("Omvang/Volume"),
                    p.get("Omvang/Eenheid"),
                    p.get("Omvang/Frequentie"),
                ) {
                    (None, None, None) => None,
                    (Some(v), Some(u), Some(fr)) => Some(Extent {
                        volume: number(v, &at("Omvang/Volume"), 99_999_999)?,
                        unit: code(
                            u,
                            &at("Omvang/Eenheid"),
                            &["01", "04", "14", "16", "82", "83", "84"],
                        )?,
                        frequency: code(fr, &at("Omvang/Frequentie"), &["1", "2", "4", "6"])?,
                    }),
                    _ => {
                        return Err(MessageError::invalid(
                            at("Omvang"),
                            "needs Volume, Eenheid and Frequentie",
                        ));
                    }
                };
                let assignment_number = number_opt.ok_or_else(|| {
                    MessageError::invalid(at("ToewijzingNummer"), "missing in this WMO301 message")
                })?;
                let start = date(req("Ingangsdatum")?, &at("Ingangsdatum"))?;
                let end = opt_date("Einddatum")?;
                if let Some(e) = end
                    && e < start
                {
                    return Err(MessageError::invalid(
                        at("Einddatum"),
                        "before Ingangsdatum",
                    ));
                }
                let assigned_at = req("Toewijzingstijd")?;
                if !is_time(assigned_at) {
                    return Err(MessageError::invalid(
                        at("Toewijzingstijd"),
                        "not a time (expected hh:mm:ss)",
                    ));
                }
                assigned.push(AssignedProduct {
                    number: assignment_number,
                    provider_reference: p
                        .get("ReferentieAanbieder")
                        .map(|v| text(v, &at("ReferentieAanbieder"), 36))
                        .transpose()?,
                    product,
                    assigned_on: date(req("Toewijzingsdatum")?, &at("Toewijzingsdatum"))?,
                    assigned_at: assigned_at.to_owned(),
                    start,
                    end,
                    change_reason: p
                        .get("RedenWijziging")
                        .map(|v| code(v, &at("RedenWijziging"), CHANGE_REASONS))
                        .transpose()?,
                    extent,
                    budget: p
                        .get("Budget")
                        .map(|v| number(v, &at("Budget"), 99_999_999))
                        .transpose()?,
                });
            }
            MessageKind::Wmo305 => started.push(StartedProduct {
                number: number_opt,
                product,
                assignment_start: opt_date("ToewijzingIngangsdatum")?,
                start: date(req("Begindatum")?, &at("Begindatum"))?,
                status: status()?,
            }),
            MessageKind::Wmo307 => {
                let start = date(req("Begindatum")?, &at("Begindatum"))?;
                let end = date(req("Einddatum")?, &at("Einddatum"))?;
                if end < start {
                    return Err(MessageError::invalid(at("Einddatum"), "before Begindatum"));
                }
                stopped.push(StoppedProduct {
                    number: number_opt,
                    product,
                    assignment_start: opt_date("ToewijzingIngangsdatum")?,
                    start,
                    reason: code(
                        req("RedenBeeindiging")?,
                        &at("RedenBeeindiging"),
                        END_REASONS,
                    )?,
                    end,
                    status: status()?,
                });
            }
        }
    }
    Ok(match k {
        MessageKind::Wmo301 => Body::Assignment(assigned),
        MessageKind::Wmo305 => Body::Start(started),
        MessageKind::Wmo307 => Body::Stop(stopped),
    })
}

/// `hh:mm:ss` with an optional fraction, no zone (`LDT_Tijd`).
fn is_time(v: &str) -> bool {
    let (main, frac) = match v.split_once('.') {
        Some((m, f)) => (m, Some(f)),
        None => (v, None),
    };
    let parts: Vec<&str> = main.split(':').collect();
    let ok_main = parts.len() == 3
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_digit()))
        && parts[0] < "24"
        && parts[1] < "60"
        && parts[2] < "60";
    ok_main && frac.is_none_or(|f| !f.is_empty() && f.bytes().all(|b| b.is_ascii_digit()))
}

fn is_xml_whitespace(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r')
}

/// XML 1.0 `Char` (surrogates cannot occur in a `char`).
fn is_xml_char(c: char) -> bool {
    (c >= ' ' || is_xml_whitespace(c)) && c != '\u{fffe}' && c != '\u{ffff}'
}

#[cfg(test)]
mod tests;
