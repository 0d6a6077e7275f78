//! Writing the okc-2 nightly XML export (`urn:matchpoint:okc-xml-export:1`), one record at a
//! time into a reused buffer, and the matching manifest lines.

use std::fmt::Write as _;

use serde::Serialize;

use super::catalogue::{Catalogue, SOURCE, area_team};
use super::population::{Defect, Household, Record, Team};

/// The export's XML namespace.
pub(crate) const NAMESPACE: &str = "urn:matchpoint:okc-xml-export:1";

/// Appends `text` to `out` with XML's special characters escaped (for text and attributes).
pub(crate) fn escape_into(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            _ => out.push(c),
        }
    }
}

/// The XML declaration and the opening root element.
pub(crate) fn header(created: &str, count: u64) -> String {
    let mut s = String::with_capacity(200);
    s.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<export xmlns=\"");
    s.push_str(NAMESPACE);
    s.push_str("\" systeem=\"");
    escape_into(&mut s, SOURCE);
    s.push_str("\" aangemaakt=\"");
    escape_into(&mut s, created);
    let _ = writeln!(s, "\" aantal=\"{count}\">");
    s
}

/// The closing root element.
pub(crate) const FOOTER: &str = "</export>\n";

/// The record id as written: `OKC2-` and eight digits.
pub(crate) fn record_id(id: u64) -> String {
    format!("OKC2-{id:08}")
}

fn element(out: &mut String, indent: &str, name: &str, text: &str) {
    out.push_str(indent);
    out.push('<');
    out.push_str(name);
    out.push('>');
    escape_into(out, text);
    out.push_str("</");
    out.push_str(name);
    out.push_str(">\n");
}

/// Appends one `<dossier>` element for `record` of `household` to `out`.
pub(crate) fn write_record(
    out: &mut String,
    catalogue: &Catalogue,
    household: &Household,
    record: &Record,
) {
    let Some(person) = household.persons.get(record.person) else {
        return;
    };
    let org = &catalogue.orgs[record.org];
    let defect = record.defect;

    let _ = writeln!(out, "  <dossier id=\"{}\">", record_id(record.id));
    out.push_str("    <client>\n");
    let bsn = match defect {
        Some(Defect::InvalidBsn(bad)) => bad,
        _ => person.bsn,
    };
    let _ = writeln!(out, "      <bsn>{bsn:09}</bsn>");
    out.push_str("      <naam>");
    escape_into(out, person.first_name);
    out.push(' ');
    escape_into(out, person.surname);
    out.push_str("</naam>\n");
    let _ = writeln!(
        out,
        "      <geboortedatum>{}</geboortedatum>",
        person.birth.format("%Y-%m-%d")
    );
    out.push_str("    </client>\n");

    out.push_str("    <organisatie code=\"");
    escape_into(out, &org.source_code);
    out.push_str("\"/>\n");
    match record.team {
        Team::Area => element(out, "    ", "team", &area_team(household.area)),
        Team::Named(name) => element(out, "    ", "team", name),
    }
    let domain = match defect {
        Some(Defect::UnknownDomain(code)) => code,
        _ => record.domain.code(),
    };
    element(out, "    ", "domein", domain);
    element(out, "    ", "doel", record.goal);

    out.push_str("    <contactpersoon>\n");
    if let Some(p) = org.staff.get(record.staff) {
        if defect != Some(Defect::MissingContact) {
            element(out, "      ", "naam", &p.name);
        }
        element(out, "      ", "functie", p.role);
        element(out, "      ", "telefoon", &p.phone);
        element(out, "      ", "email", &p.email);
    }
    out.push_str("    </contactpersoon>\n");

    let begin = if defect == Some(Defect::BadDate) {
        record.start.format("%d-%m-%Y")
    } else {
        record.start.format("%Y-%m-%d")
    };
    let _ = write!(out, "    <periode begin=\"{begin}\"");
    if let Some(end) = record.end {
        let _ = write!(out, " eind=\"{}\"", end.format("%Y-%m-%d"));
    }
    out.push_str("/>\n");
    element(out, "    ", "status", record.status.code());
    element(
        out,
        "    ",
        "regisseur",
        if record.coordinator { "ja" } else { "nee" },
    );

    // Every person of a household of two or more has a relation: children have a parent.
    if household.persons.len() > 1 {
        out.push_str("    <relaties>\n");
        for (i, other) in household.persons.iter().enumerate() {
            if i == record.person {
                continue;
            }
            let kind = match (person.adult, other.adult) {
                (false, true) => "ouder",
                (true, false) => "kind",
                (true, true) => "huisgenoot",
                // Siblings are related through their parents only.
                (false, false) => continue,
            };
            let _ = writeln!(
                out,
                "      <relatie soort=\"{kind}\" bsn=\"{:09}\"/>",
                other.bsn
            );
        }
        out.push_str("    </relaties>\n");
    }
    out.push_str("  </dossier>\n");
}

/// One line of `manifest.jsonl`: a record written bad on purpose.
#[derive(Debug, Serialize)]
pub(crate) struct ManifestEntry<'a> {
    pub source: &'a str,
    pub source_record_id: String,
    pub reason: &'static str,
    pub field: Option<&'static str>,
}

impl ManifestEntry<'static> {
    pub(crate) fn for_record(record: &Record, defect: Defect) -> Self {
        ManifestEntry {
            source: SOURCE,
            source_record_id: record_id(record.id),
            reason: defect.reason(),
            field: defect.field(),
        }
    }
}
