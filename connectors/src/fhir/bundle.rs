//! Decoding one FHIR R4 searchset `Bundle` page (JSON) into raw records.
//!
//! Pure and bounded: the caller hands in a body that is already size-capped; this module
//! never panics on any input (a property test and a fuzz target check that). Each
//! `EpisodeOfCare` entry with `search.mode = match` becomes one [`RawRecord`], resolved
//! against the resources included in the same page (`Patient`, `Organization`, `CareTeam`,
//! `Practitioner`, `RelatedPerson`). The field paths are documented in
//! `schemas/formats/fhir-r4.md`.

use std::collections::HashMap;

use chrono::{DateTime, FixedOffset};
use matchpoint_schemas::{RawGroup, RawRecord, RecordPosition};

use super::node::Node;
use crate::{RecordError, RecordResult};

/// The naming system of the Dutch citizen service number in `Patient.identifier` and
/// `RelatedPerson.identifier`.
pub const BSN_SYSTEM: &str = "http://fhir.nl/fhir/NamingSystem/bsn";

/// Path of the repeated group holding one related person of the episode's patient.
pub const RELATED_GROUP: &str = "relatedPerson";

/// Options of the decoder.
#[derive(Debug, Clone)]
pub struct DecodeOptions {
    /// Most entries (matches and includes together) one page may hold.
    pub max_entries: usize,
    /// The identifier system of `Organization.identifier` to deliver as
    /// `organization.identifier`; `None`: the first identifier.
    pub organization_system: Option<String>,
}

impl Default for DecodeOptions {
    fn default() -> Self {
        DecodeOptions {
            max_entries: 10_000,
            organization_system: None,
        }
    }
}

/// One decoded page.
#[derive(Debug, Default)]
pub struct DecodedBundle {
    /// One result per `EpisodeOfCare` match entry, in page order.
    pub records: Vec<RecordResult>,
    /// The `link` with `relation = next`, if any.
    pub next: Option<String>,
    /// `Bundle.total`, when the server gives it.
    pub total: Option<u64>,
    /// `Bundle.meta.lastUpdated` (when the server ran the search), when given and valid.
    pub snapshot: Option<Instant>,
    /// The largest `meta.lastUpdated` of the page's matched episodes.
    pub max_last_updated: Option<Instant>,
    /// Issue codes of `OperationOutcome` entries with `search.mode = outcome` (warnings).
    pub warnings: Vec<String>,
}

/// A FHIR `instant`, parsed for comparison and kept as delivered for the cursor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instant {
    /// The parsed moment.
    pub at: DateTime<FixedOffset>,
    /// The text as the server wrote it.
    pub text: String,
}

impl Instant {
    /// Parses an RFC 3339 instant (what FHIR `instant` is).
    pub fn parse(text: &str) -> Option<Instant> {
        DateTime::parse_from_rfc3339(text).ok().map(|at| Instant {
            at,
            text: text.to_owned(),
        })
    }

    /// The later of two instants (by moment, not by text).
    pub fn max(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
        match (a, b) {
            (Some(a), Some(b)) => Some(if b.at > a.at { b } else { a }),
            (a, b) => a.or(b),
        }
    }
}

/// Why a page could not be decoded at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BundleError {
    /// The body is an `OperationOutcome`: its issues (severity, code, details codes), never
    /// its diagnostics text (which may hold data).
    OperationOutcome(String),
    /// Not a searchset Bundle in JSON.
    Malformed(String),
    /// The JSON ends before the Bundle does: the body was cut off in transport.
    Truncated,
    /// More entries than allowed.
    TooManyEntries(usize),
}

impl std::fmt::Display for BundleError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BundleError::OperationOutcome(s) => {
                write!(f, "the server answered OperationOutcome: {s}")
            }
            BundleError::Malformed(s) => write!(f, "not a FHIR searchset Bundle: {s}"),
            BundleError::Truncated => {
                f.write_str("the page ends in the middle of its JSON (the body was cut off)")
            }
            BundleError::TooManyEntries(max) => write!(
                f,
                "the page holds more than {max} entries; lower paging.page_size or check the server"
            ),
        }
    }
}

fn str_at<'v>(v: &'v Node<'v>, path: &[&str]) -> Option<&'v str> {
    let mut cur = v;
    for key in path {
        cur = cur.get(key)?;
    }
    cur.as_str()
}

fn array<'v>(v: &'v Node<'v>, key: &str) -> &'v [Node<'v>] {
    v.get(key).and_then(Node::as_array).unwrap_or(&[])
}

/// Summarises an `OperationOutcome` resource: `severity code [details]` per issue, no
/// diagnostics text.
pub fn outcome_summary(outcome: &Node<'_>) -> String {
    let issues: Vec<String> = array(outcome, "issue")
        .iter()
        .take(5)
        .map(|issue| {
            let severity = str_at(issue, &["severity"]).unwrap_or("?");
            let code = str_at(issue, &["code"]).unwrap_or("?");
            let details: Vec<&str> = issue
                .get("details")
                .map(|d| array(d, "coding"))
                .unwrap_or(&[])
                .iter()
                .filter_map(|c| str_at(c, &["code"]))
                .take(3)
                .collect();
            let mut s = format!("{} `{}`", safe_code(severity), safe_code(code));
            if !details.is_empty() {
                let d: Vec<String> = details.into_iter().map(safe_code).collect();
                s.push_str(&format!(" (details {})", d.join(", ")));
            }
            s
        })
        .collect();
    if issues.is_empty() {
        "no issue given".into()
    } else {
        issues.join("; ")
    }
}

/// A code from outside, made safe to put in a message: FHIR codes are short tokens, so
/// anything else is cut and replaced rather than echoed.
fn safe_code(code: &str) -> String {
    if !code.is_empty()
        && code.len() <= 64
        && code
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'))
    {
        code.to_owned()
    } else {
        "<unreadable code>".into()
    }
}

/// `(Type, id)` of a reference (relative, absolute or versioned), or `None` for contained
/// (`#id`) or unusable references. Neither part contains a `/`.
fn reference_key(reference: &str) -> Option<(&str, &str)> {
    let r = reference.split('?').next().unwrap_or(reference);
    let r = match r.find("/_history/") {
        Some(i) => &r[..i],
        None => r,
    };
    let mut parts = r.rsplit('/');
    let id = parts.next()?;
    let ty = parts.next()?;
    if id.is_empty() || ty.is_empty() || !ty.starts_with(|c: char| c.is_ascii_uppercase()) {
        return None;
    }
    Some((ty, id))
}

fn resource_key<'v>(resource: &'v Node<'v>) -> Option<(&'v str, &'v str)> {
    let ty = str_at(resource, &["resourceType"])?;
    let id = str_at(resource, &["id"])?;
    Some((ty, id))
}

/// The resources of one page, by `(Type, id)` (borrowed from the page: no key is copied).
struct Included<'v> {
    by_key: HashMap<(&'v str, &'v str), &'v Node<'v>>,
    related_by_patient: HashMap<(&'v str, &'v str), Vec<&'v Node<'v>>>,
}

impl<'v> Included<'v> {
    fn resolve(&self, reference: Option<&'v str>, ty: &str) -> Option<&'v Node<'v>> {
        let key = reference_key(reference?)?;
        if key.0 != ty {
            return None;
        }
        self.by_key.get(&key).copied()
    }
}

/// A resource contained in `owner`, by a local reference `#id`.
fn contained<'v>(owner: &'v Node<'v>, reference: Option<&str>, ty: &str) -> Option<&'v Node<'v>> {
    let id = reference?.strip_prefix('#')?;
    array(owner, "contained")
        .iter()
        .find(|r| str_at(r, &["resourceType"]) == Some(ty) && str_at(r, &["id"]) == Some(id))
}

/// A referenced resource: contained in `owner` (`#id`), else included in the page.
fn resolve_in<'v>(
    inc: &Included<'v>,
    owner: &'v Node<'v>,
    reference: Option<&'v str>,
    ty: &str,
) -> Option<&'v Node<'v>> {
    contained(owner, reference, ty).or_else(|| inc.resolve(reference, ty))
}

fn human_name(resource: &Node<'_>) -> Option<String> {
    let names = array(resource, "name");
    let name = names
        .iter()
        .find(|n| str_at(n, &["use"]) == Some("official"))
        .or_else(|| names.first())?;
    if let Some(text) = str_at(name, &["text"]).filter(|t| !t.trim().is_empty()) {
        return Some(text.trim().to_owned());
    }
    let mut parts: Vec<&str> = array(name, "given")
        .iter()
        .filter_map(Node::as_str)
        .collect();
    if let Some(family) = str_at(name, &["family"]) {
        parts.push(family);
    }
    let joined = parts
        .iter()
        .map(|p| p.trim())
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    (!joined.is_empty()).then_some(joined)
}

fn telecom<'v>(resource: &'v Node<'v>, system: &str) -> Option<&'v str> {
    array(resource, "telecom")
        .iter()
        .find(|t| str_at(t, &["system"]) == Some(system))
        .and_then(|t| str_at(t, &["value"]))
}

fn identifier<'v>(resource: &'v Node<'v>, system: Option<&str>) -> Option<&'v str> {
    let ids = array(resource, "identifier");
    match system {
        Some(sys) => ids
            .iter()
            .find(|i| str_at(i, &["system"]) == Some(sys))
            .and_then(|i| str_at(i, &["value"])),
        None => ids.iter().find_map(|i| str_at(i, &["value"])),
    }
}

fn concept_text<'v>(concept: &'v Node<'v>) -> Option<&'v str> {
    str_at(concept, &["text"]).or_else(|| {
        array(concept, "coding")
            .iter()
            .find_map(|c| str_at(c, &["display"]).or_else(|| str_at(c, &["code"])))
    })
}

/// The date part (`YYYY-MM-DD`) of a FHIR `date`/`dateTime`, when it has one.
fn date_part(value: &str) -> Option<&str> {
    let d = value.get(..10)?;
    let b = d.as_bytes();
    let ok = b.iter().enumerate().all(|(i, c)| match i {
        4 | 7 => *c == b'-',
        _ => c.is_ascii_digit(),
    });
    (ok && (value.len() == 10 || value.as_bytes().get(10) == Some(&b'T'))).then_some(d)
}

struct RecordBuilder {
    fields: Vec<(String, String)>,
}

impl RecordBuilder {
    fn put(&mut self, path: &str, value: Option<&str>) {
        if let Some(v) = value {
            self.fields.push((path.to_owned(), v.to_owned()));
        }
    }
}

/// Decodes one page. `first_index` is the delivery-wide number of the page's first record
/// (1-based); `byte_offset` where the page starts in the delivery.
pub fn decode_bundle(
    body: &[u8],
    first_index: u64,
    byte_offset: u64,
    options: &DecodeOptions,
) -> Result<DecodedBundle, BundleError> {
    let root = Node::parse(body).map_err(|e| {
        if e.is_eof() && !body.iter().all(u8::is_ascii_whitespace) {
            return BundleError::Truncated;
        }
        BundleError::Malformed(format!(
            "invalid JSON at line {} column {} ({:?})",
            e.line(),
            e.column(),
            e.classify()
        ))
    })?;
    match str_at(&root, &["resourceType"]) {
        Some("Bundle") => {}
        Some("OperationOutcome") => {
            return Err(BundleError::OperationOutcome(outcome_summary(&root)));
        }
        Some(other) => {
            return Err(BundleError::Malformed(format!(
                "resourceType is `{}`, expected `Bundle`",
                safe_code(other)
            )));
        }
        None => return Err(BundleError::Malformed("no resourceType".into())),
    }
    match str_at(&root, &["type"]) {
        Some("searchset") => {}
        Some(other) => {
            return Err(BundleError::Malformed(format!(
                "Bundle.type is `{}`, expected `searchset`",
                safe_code(other)
            )));
        }
        None => return Err(BundleError::Malformed("Bundle.type is missing".into())),
    }
    let entries = match root.get("entry") {
        None | Some(Node::Null) => &[][..],
        Some(Node::Array(a)) => a.as_slice(),
        Some(_) => {
            return Err(BundleError::Malformed(
                "Bundle.entry is not an array".into(),
            ));
        }
    };
    if entries.len() > options.max_entries {
        return Err(BundleError::TooManyEntries(options.max_entries));
    }
    let total = match root.get("total") {
        None | Some(Node::Null) => None,
        Some(v) => Some(v.as_u64().ok_or_else(|| {
            BundleError::Malformed("Bundle.total is not a non-negative integer".into())
        })?),
    };
    let next = array(&root, "link")
        .iter()
        .find(|l| str_at(l, &["relation"]) == Some("next"))
        .map(|l| {
            str_at(l, &["url"])
                .map(str::to_owned)
                .ok_or_else(|| BundleError::Malformed("the next link has no url".into()))
        })
        .transpose()?;
    let snapshot = str_at(&root, &["meta", "lastUpdated"]).and_then(Instant::parse);

    let mut included = Included {
        by_key: HashMap::with_capacity(entries.len()),
        related_by_patient: HashMap::new(),
    };
    let mut warnings = Vec::new();
    for entry in entries {
        let Some(resource) = entry.get("resource") else {
            continue;
        };
        if str_at(entry, &["search", "mode"]) == Some("outcome") {
            warnings.push(outcome_summary(resource));
            continue;
        }
        if let Some(key) = resource_key(resource) {
            if str_at(resource, &["resourceType"]) == Some("RelatedPerson")
                && let Some(patient) =
                    str_at(resource, &["patient", "reference"]).and_then(reference_key)
            {
                included
                    .related_by_patient
                    .entry(patient)
                    .or_default()
                    .push(resource);
            }
            included.by_key.insert(key, resource);
        }
    }

    let mut out = DecodedBundle {
        next,
        total,
        snapshot,
        warnings,
        ..DecodedBundle::default()
    };
    let mut index = first_index;
    for entry in entries {
        let Some(resource) = entry.get("resource") else {
            continue;
        };
        let is_episode = str_at(resource, &["resourceType"]) == Some("EpisodeOfCare");
        let mode = str_at(entry, &["search", "mode"]);
        if !is_episode || !matches!(mode, Some("match") | None) {
            continue;
        }
        let position = RecordPosition { index, byte_offset };
        index += 1;
        let record = episode(resource, &included, position, options);
        if let Ok(r) = &record {
            let updated = r.field("meta.lastUpdated").and_then(Instant::parse);
            out.max_last_updated = Instant::max(out.max_last_updated.take(), updated);
        }
        out.records.push(record);
    }
    Ok(out)
}

fn reject(
    record_id: Option<&str>,
    position: RecordPosition,
    field: &str,
    reason: &str,
) -> RecordError {
    RecordError {
        record_id: record_id.map(str::to_owned),
        position,
        field: Some(field.to_owned()),
        reason: reason.to_owned(),
    }
}

/// One `EpisodeOfCare` with what it references, as a raw record.
fn episode(
    eoc: &Node<'_>,
    inc: &Included<'_>,
    position: RecordPosition,
    options: &DecodeOptions,
) -> RecordResult {
    let id = str_at(eoc, &["id"]).filter(|s| !s.is_empty());
    let Some(id) = id else {
        return Err(reject(None, position, "id", "the EpisodeOfCare has no id"));
    };
    if !eoc.is_object() {
        return Err(reject(
            Some(id),
            position,
            "id",
            "the entry is not a resource",
        ));
    }
    let mut b = RecordBuilder { fields: Vec::new() };
    b.put("id", Some(id));
    b.put("status", str_at(eoc, &["status"]));
    let last_updated = str_at(eoc, &["meta", "lastUpdated"]);
    if let Some(lu) = last_updated
        && Instant::parse(lu).is_none()
    {
        return Err(reject(
            Some(id),
            position,
            "meta.lastUpdated",
            "meta.lastUpdated is not a FHIR instant",
        ));
    }
    b.put("meta.lastUpdated", last_updated);
    if let Some(ty) = array(eoc, "type").first() {
        if let Some(coding) = array(ty, "coding").first() {
            b.put("type.system", str_at(coding, &["system"]));
            b.put("type.code", str_at(coding, &["code"]));
            b.put("type.display", str_at(coding, &["display"]));
        }
        b.put("type.text", str_at(ty, &["text"]));
    }
    for (key, path) in [("start", "period.start"), ("end", "period.end")] {
        let v = str_at(eoc, &["period", key]);
        b.put(path, v);
        b.put(&format!("{path}.date"), v.and_then(date_part));
    }

    // The client.
    let patient_ref = str_at(eoc, &["patient", "reference"]);
    let Some(patient_ref) = patient_ref else {
        return Err(reject(
            Some(id),
            position,
            "patient",
            "EpisodeOfCare.patient has no reference",
        ));
    };
    let Some(patient) = resolve_in(inc, eoc, Some(patient_ref), "Patient") else {
        return Err(reject(
            Some(id),
            position,
            "patient",
            "the referenced Patient is not included in the page (the server must honour _include=EpisodeOfCare:patient)",
        ));
    };
    b.put("patient.id", str_at(patient, &["id"]));
    b.put("patient.bsn", identifier(patient, Some(BSN_SYSTEM)));
    b.put("patient.birthDate", str_at(patient, &["birthDate"]));

    // The organisation.
    if let Some(org) = resolve_in(
        inc,
        eoc,
        str_at(eoc, &["managingOrganization", "reference"]),
        "Organization",
    ) {
        b.put(
            "organization.identifier",
            identifier(org, options.organization_system.as_deref()),
        );
        b.put("organization.name", str_at(org, &["name"]));
    } else {
        // A logical reference (identifier only) is allowed by FHIR.
        let sys = str_at(eoc, &["managingOrganization", "identifier", "system"]);
        let wanted = options.organization_system.as_deref();
        if wanted.is_none() || wanted == sys {
            b.put(
                "organization.identifier",
                str_at(eoc, &["managingOrganization", "identifier", "value"]),
            );
        }
    }

    // The care manager (the coordinator).
    let care_manager = resolve_in(
        inc,
        eoc,
        str_at(eoc, &["careManager", "reference"]),
        "Practitioner",
    );
    b.put(
        "careManager.present",
        Some(if care_manager.is_some() {
            "true"
        } else {
            "false"
        }),
    );
    if let Some(p) = care_manager {
        b.put("careManager.name", human_name(p).as_deref());
        b.put("careManager.phone", telecom(p, "phone"));
        b.put("careManager.email", telecom(p, "email"));
    }

    // The care team and its first practitioner: the contact person.
    let team = array(eoc, "team")
        .iter()
        .find_map(|t| resolve_in(inc, eoc, str_at(t, &["reference"]), "CareTeam"));
    if let Some(team) = team {
        b.put("careTeam.name", str_at(team, &["name"]));
        b.put(
            "careTeam.reason",
            array(team, "reasonCode").first().and_then(concept_text),
        );
        let member = array(team, "participant").iter().find_map(|p| {
            let member = str_at(p, &["member", "reference"]);
            contained(team, member, "Practitioner")
                .or_else(|| resolve_in(inc, eoc, member, "Practitioner"))
                .map(|m| (p, m))
        });
        if let Some((participant, practitioner)) = member {
            b.put(
                "careTeam.participant.name",
                human_name(practitioner).as_deref(),
            );
            b.put(
                "careTeam.participant.role",
                array(participant, "role").first().and_then(concept_text),
            );
            b.put("careTeam.participant.phone", telecom(practitioner, "phone"));
            b.put("careTeam.participant.email", telecom(practitioner, "email"));
        }
    }

    // Household relations: RelatedPerson resources of the patient.
    let mut groups = Vec::new();
    if let Some(key) = reference_key(patient_ref)
        && let Some(related) = inc.related_by_patient.get(&key)
    {
        for rp in related {
            if rp.get("active") == Some(&Node::Bool(false)) {
                continue;
            }
            let mut fields = Vec::new();
            if let Some(bsn) = identifier(rp, Some(BSN_SYSTEM)) {
                fields.push(("bsn".to_owned(), bsn.to_owned()));
            }
            let code = array(rp, "relationship").first().and_then(|r| {
                let codings = array(r, "coding");
                codings
                    .iter()
                    .find(|c| {
                        str_at(c, &["system"])
                            == Some("http://terminology.hl7.org/CodeSystem/v3-RoleCode")
                    })
                    .or_else(|| codings.first())
                    .and_then(|c| str_at(c, &["code"]))
            });
            if let Some(code) = code {
                fields.push(("relationship".to_owned(), code.to_owned()));
            }
            groups.push(RawGroup {
                path: RELATED_GROUP.to_owned(),
                fields,
            });
        }
    }

    Ok(RawRecord {
        record_id: Some(id.to_owned()),
        position,
        fields: b.fields,
        groups,
    })
}
