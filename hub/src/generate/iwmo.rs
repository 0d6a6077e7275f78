//! Synthetic iWmo 3.2 messages (WMO301, WMO305, WMO307) for the WMO module source.
//!
//! - [`message_xml`] writes one message; with [`OutMessage::every_optional`] it writes every
//!   optional element the three schemas define (communication, legal status, representation,
//!   comments, relations with full names and addresses, two phone numbers, periods, product
//!   codes, extent, budget, …), so a corpus validated with `xmllint --schema` proves the
//!   writer and the reader agree with the official schemas.
//! - [`write_lifecycles`] writes a folder of message files for `clients` clients, each an
//!   assignment followed (mostly) by a start and (often) a stop, with the variations the
//!   standard allows: starts without `ToewijzingNummer`, corrections, withdrawals and
//!   assignments voided by a later WMO301. File names sort in delivery order
//!   (`YYYYMMDD-NNNNNNNN-wmo3xx.xml`), which is what the source's cursor relies on.
//!
//! - [`generations`] writes the later nights for `matchpoint sandbox` (new, extended,
//!   started and stopped assignments).
//!
//! All persons are fictitious: BSNs come from the generator's keyed BSN permutation, names
//! from a short list of invented surnames.

use std::fmt::Write as _;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

use chrono::{Days, NaiveDate};
use matchpoint_connectors::iwmo::{
    AssignedProduct, Body, DeliveryStatus, Extent, Header, MessageKind, Product, StartedProduct,
    StoppedProduct,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::bsn::BsnAllocator;

pub mod generations;

/// The namespace of the base schema: children of its complex types (`iwmo:Identificatie`,
/// `iwmo:Categorie`, …) are qualified with it.
pub const BASE_NAMESPACE: &str = "http://www.istandaarden.nl/iwmo/3_2/basisschema/schema";

/// The municipality code of Amsterdam (CBS), the sender of every WMO301.
pub const AMSTERDAM: &str = "0363";

/// The fictitious AGB codes of the WMO providers in `deploy/organisations.toml` (source `wmo`).
pub const PROVIDERS: &[&str] = &["98000001", "98000002", "98000003", "98000004", "98000005"];

/// The client of a written message: what the schemas need and allow about a person.
#[derive(Clone, PartialEq, Eq)]
pub struct OutClient {
    /// Nine digits.
    pub bsn: String,
    /// Date of birth.
    pub birth: NaiveDate,
    /// `DatumGebruik`, when part of the date is unknown.
    pub birth_use: Option<String>,
    /// `Geslacht`: 0 unknown, 1 male, 2 female.
    pub gender: String,
    /// Surname.
    pub surname: String,
    /// Surname prefix (`van`, `de`).
    pub prefix: Option<String>,
    /// Initials.
    pub initials: String,
}

impl std::fmt::Debug for OutClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OutClient { .. }")
    }
}

/// One message to write.
#[derive(Debug, Clone)]
pub struct OutMessage {
    /// The header (its kind decides the message).
    pub header: Header,
    /// The client.
    pub client: OutClient,
    /// The products; must match the header's kind.
    pub body: Body,
    /// Write every optional element the schema defines (client and product level).
    pub every_optional: bool,
}

fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            _ => out.push(c),
        }
    }
    out
}

fn d(date: NaiveDate) -> String {
    date.format("%Y-%m-%d").to_string()
}

/// Appends `<name>value</name>` with the value escaped.
fn el(out: &mut String, indent: usize, name: &str, value: &str) {
    let _ = writeln!(out, "{:indent$}<{name}>{}</{name}>", "", esc(value));
}

fn open(out: &mut String, indent: usize, name: &str) {
    let _ = writeln!(out, "{:indent$}<{name}>", "");
}

fn close(out: &mut String, indent: usize, name: &str) {
    let _ = writeln!(out, "{:indent$}</{name}>", "");
}

fn product(out: &mut String, indent: usize, p: &Option<Product>) {
    if let Some(p) = p {
        open(out, indent, "Product");
        el(out, indent + 2, "iwmo:Categorie", &p.category);
        if let Some(c) = &p.code {
            el(out, indent + 2, "iwmo:Code", c);
        }
        close(out, indent, "Product");
    }
}

fn status(s: DeliveryStatus) -> &'static str {
    match s {
        DeliveryStatus::First => "1",
        DeliveryStatus::Corrected => "2",
        DeliveryStatus::Withdrawn => "3",
        DeliveryStatus::Unchanged => "9",
    }
}

/// The complete `Contact` of a client or relation (every optional element when `full`).
fn contact(out: &mut String, indent: usize, full: bool, kind: &str, street: &str) {
    open(out, indent, "Contact");
    el(out, indent + 2, "Soort", kind);
    if full {
        open(out, indent + 2, "Adres");
        open(out, indent + 4, "iwmo:Huis");
        el(out, indent + 6, "iwmo:Huisnummer", "12");
        el(out, indent + 6, "iwmo:Huisletter", "a");
        el(out, indent + 6, "iwmo:HuisnummerToevoeging", "3hg");
        el(out, indent + 6, "iwmo:AanduidingWoonadres", "BY");
        close(out, indent + 4, "iwmo:Huis");
        el(out, indent + 4, "iwmo:Postcode", "1011AB");
        el(out, indent + 4, "iwmo:Straatnaam", street);
        el(out, indent + 4, "iwmo:Plaatsnaam", "Amsterdam");
        el(out, indent + 4, "iwmo:LandCode", "NL");
        close(out, indent + 2, "Adres");
        el(out, indent + 2, "Organisatie", "Stichting Onderdak & Zo");
        open(out, indent + 2, "Telefoon");
        for t in ["iwmo:Telefoon01", "iwmo:Telefoon02"] {
            open(out, indent + 4, t);
            el(out, indent + 6, "iwmo:Telefoonnummer", "0205550999");
            el(out, indent + 6, "iwmo:Landnummer", "0031");
            close(out, indent + 4, t);
        }
        close(out, indent + 2, "Telefoon");
        el(out, indent + 2, "Emailadres", "post@onderdak.example");
        open(out, indent + 2, "Periode");
        el(out, indent + 4, "iwmo:Begindatum", "2026-01-01");
        el(out, indent + 4, "iwmo:Einddatum", "2026-12-31");
        close(out, indent + 2, "Periode");
    }
    close(out, indent, "Contact");
}

/// Writes one message as XML (UTF-8, default namespace of the message's schema).
pub fn message_xml(m: &OutMessage) -> String {
    let h = &m.header;
    let full = m.every_optional;
    let mut out = String::with_capacity(if full { 6000 } else { 1500 });
    out.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        out,
        "<Bericht xmlns=\"{}\" xmlns:iwmo=\"{BASE_NAMESPACE}\">",
        h.kind.namespace()
    );
    open(&mut out, 2, "Header");
    el(&mut out, 4, "BerichtCode", h.kind.code());
    el(&mut out, 4, "BerichtVersie", "3");
    el(&mut out, 4, "BerichtSubversie", "2");
    el(&mut out, 4, "Afzender", &h.sender);
    el(&mut out, 4, "Ontvanger", &h.receiver);
    open(&mut out, 4, "BerichtIdentificatie");
    el(&mut out, 6, "iwmo:Identificatie", &h.id);
    el(&mut out, 6, "iwmo:Dagtekening", &d(h.dagtekening));
    close(&mut out, 4, "BerichtIdentificatie");
    open(&mut out, 4, "XsdVersie");
    el(
        &mut out,
        6,
        "iwmo:BasisschemaXsdVersie",
        &h.base_xsd_version,
    );
    el(&mut out, 6, "iwmo:BerichtXsdVersie", &h.message_xsd_version);
    close(&mut out, 4, "XsdVersie");
    close(&mut out, 2, "Header");

    let c = &m.client;
    open(&mut out, 2, "Client");
    el(&mut out, 4, "Bsn", &c.bsn);
    open(&mut out, 4, "Geboortedatum");
    el(&mut out, 6, "iwmo:Datum", &d(c.birth));
    if let Some(u) = &c.birth_use {
        el(&mut out, 6, "iwmo:DatumGebruik", u);
    }
    close(&mut out, 4, "Geboortedatum");
    el(&mut out, 4, "Geslacht", &c.gender);
    let surname = |out: &mut String, indent: usize, tag: &str, name: &str| {
        open(out, indent, tag);
        el(out, indent + 2, "iwmo:Achternaam", name);
        if let Some(p) = &c.prefix {
            el(out, indent + 2, "iwmo:Voorvoegsel", p);
        }
        close(out, indent, tag);
    };
    let is_301 = h.kind == MessageKind::Wmo301;
    open(&mut out, 4, "Naam");
    surname(&mut out, 6, "iwmo:Geslachtsnaam", &c.surname);
    if full && is_301 {
        surname(&mut out, 6, "iwmo:Partnernaam", "Partnerveld");
    }
    if full {
        el(&mut out, 6, "iwmo:Voornamen", "Fictief Persoon");
    }
    el(&mut out, 6, "iwmo:Voorletters", &c.initials);
    if is_301 {
        el(&mut out, 6, "iwmo:NaamGebruik", "1");
    }
    close(&mut out, 4, "Naam");

    match &m.body {
        Body::Assignment(products) => {
            if full {
                open(&mut out, 4, "Communicatie");
                el(&mut out, 6, "iwmo:Vorm", "1");
                el(&mut out, 6, "iwmo:Taal", "Nederlandse Gebarentaal");
                close(&mut out, 4, "Communicatie");
                el(&mut out, 4, "JuridischeStatus", "01");
                el(&mut out, 4, "WettelijkeVertegenwoordiging", "07");
                el(
                    &mut out,
                    4,
                    "Commentaar",
                    "Client heeft voorkeur voor ochtendbezoek.",
                );
                open(&mut out, 4, "Relaties");
                open(&mut out, 6, "Relatie");
                el(&mut out, 8, "Nummer", "R-1");
                el(&mut out, 8, "Volgorde", "1");
                el(&mut out, 8, "Soort", "14");
                open(&mut out, 8, "Geboortedatum");
                el(&mut out, 10, "iwmo:Datum", "1970-06-01");
                el(&mut out, 10, "iwmo:DatumGebruik", "1");
                close(&mut out, 8, "Geboortedatum");
                el(&mut out, 8, "Geslacht", "2");
                open(&mut out, 8, "Naam");
                surname(&mut out, 10, "iwmo:Geslachtsnaam", "Bewindveld");
                surname(&mut out, 10, "iwmo:Partnernaam", "Partnerveld");
                el(&mut out, 10, "iwmo:Voornamen", "Fictieve Bewindvoerder");
                el(&mut out, 10, "iwmo:Voorletters", "FB");
                el(&mut out, 10, "iwmo:NaamGebruik", "2");
                close(&mut out, 8, "Naam");
                contact(&mut out, 8, true, "02", "Bewindstraat");
                close(&mut out, 6, "Relatie");
                close(&mut out, 4, "Relaties");
            }
            open(&mut out, 4, "Contactgegevens");
            contact(&mut out, 6, full, "01", "Fictiefstraat");
            if full {
                contact(&mut out, 6, true, "04", "Tijdelijkstraat");
            }
            close(&mut out, 4, "Contactgegevens");
            open(&mut out, 4, "ToegewezenProducten");
            for p in products {
                assigned(&mut out, p, full);
            }
            close(&mut out, 4, "ToegewezenProducten");
        }
        Body::Start(products) => {
            open(&mut out, 4, "StartProducten");
            for p in products {
                open(&mut out, 6, "StartProduct");
                if let Some(n) = p.number {
                    el(&mut out, 8, "ToewijzingNummer", &n.to_string());
                }
                product(&mut out, 8, &p.product);
                if let Some(s) = p.assignment_start {
                    el(&mut out, 8, "ToewijzingIngangsdatum", &d(s));
                }
                el(&mut out, 8, "Begindatum", &d(p.start));
                el(&mut out, 8, "StatusAanlevering", status(p.status));
                close(&mut out, 6, "StartProduct");
            }
            close(&mut out, 4, "StartProducten");
        }
        Body::Stop(products) => {
            open(&mut out, 4, "StopProducten");
            for p in products {
                open(&mut out, 6, "StopProduct");
                if let Some(n) = p.number {
                    el(&mut out, 8, "ToewijzingNummer", &n.to_string());
                }
                product(&mut out, 8, &p.product);
                if let Some(s) = p.assignment_start {
                    el(&mut out, 8, "ToewijzingIngangsdatum", &d(s));
                }
                el(&mut out, 8, "Begindatum", &d(p.start));
                el(&mut out, 8, "RedenBeeindiging", &p.reason);
                el(&mut out, 8, "Einddatum", &d(p.end));
                el(&mut out, 8, "StatusAanlevering", status(p.status));
                close(&mut out, 6, "StopProduct");
            }
            close(&mut out, 4, "StopProducten");
        }
    }
    close(&mut out, 2, "Client");
    out.push_str("</Bericht>\n");
    out
}

fn assigned(out: &mut String, p: &AssignedProduct, full: bool) {
    open(out, 6, "ToegewezenProduct");
    el(out, 8, "ToewijzingNummer", &p.number.to_string());
    if let Some(r) = &p.provider_reference {
        el(out, 8, "ReferentieAanbieder", r);
    }
    product(out, 8, &p.product);
    el(out, 8, "Toewijzingsdatum", &d(p.assigned_on));
    el(out, 8, "Toewijzingstijd", &p.assigned_at);
    el(out, 8, "Ingangsdatum", &d(p.start));
    if let Some(e) = p.end {
        el(out, 8, "Einddatum", &d(e));
    }
    if let Some(r) = &p.change_reason {
        el(out, 8, "RedenWijziging", r);
    }
    if let Some(Extent {
        volume,
        unit,
        frequency,
    }) = &p.extent
    {
        open(out, 8, "Omvang");
        el(out, 10, "iwmo:Volume", &volume.to_string());
        el(out, 10, "iwmo:Eenheid", unit);
        el(out, 10, "iwmo:Frequentie", frequency);
        close(out, 8, "Omvang");
    }
    if let Some(b) = p.budget {
        el(out, 8, "Budget", &b.to_string());
    }
    if full {
        el(out, 8, "Commentaar", "Toewijzing na keukentafelgesprek.");
    }
    close(out, 6, "ToegewezenProduct");
}

/// A header for a message of `kind` between Amsterdam and `provider`.
pub fn header(kind: MessageKind, provider: &str, id: &str, dagtekening: NaiveDate) -> Header {
    let (sender, receiver) = match kind {
        MessageKind::Wmo301 => (AMSTERDAM.to_owned(), provider.to_owned()),
        MessageKind::Wmo305 | MessageKind::Wmo307 => (provider.to_owned(), AMSTERDAM.to_owned()),
    };
    Header {
        kind,
        sender,
        receiver,
        id: id.to_owned(),
        dagtekening,
        message_xsd_version: "1.0.0".into(),
        base_xsd_version: "1.0.0".into(),
    }
}

/// The file name a message is written under: sorts by Dagtekening, then sequence.
pub fn file_name(h: &Header, seq: u64) -> String {
    format!(
        "{}-{seq:08}-{}.xml",
        h.dagtekening.format("%Y%m%d"),
        h.kind.name().to_lowercase()
    )
}

const SURNAMES: &[&str] = &[
    "Veldhoven",
    "Zonnebloem",
    "Korenaar",
    "Waterlelie",
    "Dijkgraaf",
    "Molenwiek",
    "Brugman",
    "Lindeboom",
];
const PREFIXES: &[Option<&str>] = &[None, Some("van"), Some("de"), Some("van der")];

/// What [`write_lifecycles`] wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IwmoSummary {
    /// Message files written.
    pub messages: u64,
    /// Assignments (products of WMO301 messages, voiding messages not counted).
    pub assignments: u64,
    /// The folder written to.
    pub folder: PathBuf,
}

/// Writes a folder of message files for `clients` fictitious clients (seeded, repeatable):
/// per client one WMO301 of one product, usually a WMO305, often a WMO307, with every tenth
/// start lacking its `ToewijzingNummer`, some corrected or withdrawn starts and stops, some
/// assignments voided by a later WMO301, and every 25th message written with every optional
/// element. Memory does not grow with `clients`.
pub fn write_lifecycles(
    folder: &Path,
    clients: u64,
    seed: u64,
    first_day: NaiveDate,
) -> io::Result<IwmoSummary> {
    let mut bsns = BsnAllocator::new(seed ^ 0x0049_574D_4F42_534E); // "IWMOBSN"
    let mut birth_rng = ChaCha8Rng::seed_from_u64(seed ^ 0x0042_4952_5448); // "BIRTH"
    let persons = (0..clients).map_while(move |_| {
        let bsn = bsns.next_bsn()?;
        let birth = NaiveDate::from_ymd_opt(
            birth_rng.random_range(1930..2005),
            birth_rng.random_range(1..=12),
            birth_rng.random_range(1..=28),
        )?;
        Some((format!("{bsn:09}"), birth))
    });
    write_lifecycles_for(folder, persons, seed, first_day)
}

/// Like [`write_lifecycles`], for given persons (BSN, birth date): lets a generated population
/// (the sandbox) make the same persons WMO clients that other sources know.
pub fn write_lifecycles_for(
    folder: &Path,
    persons: impl IntoIterator<Item = (String, NaiveDate)>,
    seed: u64,
    first_day: NaiveDate,
) -> io::Result<IwmoSummary> {
    std::fs::create_dir_all(folder)?;
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x4957_4D4F); // "IWMO"
    let mut summary = IwmoSummary {
        folder: folder.to_path_buf(),
        ..IwmoSummary::default()
    };
    let mut seq = 0u64;
    let mut write = |m: &OutMessage, summary: &mut IwmoSummary| -> io::Result<()> {
        seq += 1;
        let path = folder.join(file_name(&m.header, seq));
        let mut f = io::BufWriter::new(std::fs::File::create(path)?);
        f.write_all(message_xml(m).as_bytes())?;
        f.flush()?;
        summary.messages += 1;
        Ok(())
    };
    for (i, (bsn, birth)) in (0u64..).zip(persons) {
        let l = lifecycle(i, bsn, birth, &mut rng, first_day);
        for m in &l.messages {
            write(m, &mut summary)?;
        }
        summary.assignments += 1;
    }
    Ok(summary)
}

/// One client's lifecycle in the first delivery: its messages, and what later generations
/// ([`generations`]) need to know about its assignment.
#[derive(Debug, Clone)]
pub(crate) struct Lifecycle {
    /// The messages, in delivery order.
    pub messages: Vec<OutMessage>,
    /// The provider's AGB code.
    pub provider: &'static str,
    /// The assignment as last assigned.
    pub assignment: AssignedProduct,
    /// The start of support, when support started.
    pub started: Option<NaiveDate>,
    /// Whether a (not withdrawn) stop ended the support.
    pub stopped: bool,
    /// Whether a later WMO301 voided the assignment.
    pub voided: bool,
    /// Whether messages carry every optional element.
    pub full: bool,
}

/// The lifecycle of client `i` (draws from `rng` in a fixed order).
pub(crate) fn lifecycle(
    i: u64,
    bsn: String,
    birth: NaiveDate,
    rng: &mut ChaCha8Rng,
    first_day: NaiveDate,
) -> Lifecycle {
    let mut messages = Vec::new();
    let day = |offset: u64| {
        first_day
            .checked_add_days(Days::new(offset))
            .unwrap_or(first_day)
    };
    let base = i % 60;
    let provider = PROVIDERS[rng.random_range(0..PROVIDERS.len())];
    let category = format!("{:02}", rng.random_range(1..=18u32));
    let client = OutClient {
        bsn,
        birth,
        birth_use: None,
        gender: rng.random_range(0..3u32).to_string(),
        surname: SURNAMES[rng.random_range(0..SURNAMES.len())].to_owned(),
        prefix: PREFIXES[rng.random_range(0..PREFIXES.len())].map(str::to_owned),
        initials: "AB".into(),
    };
    let full = i.is_multiple_of(25);
    let number = 100_000 + i;
    let start = day(base + 7);
    let prod = Product {
        category: category.clone(),
        code: Some(format!("{category}A{:02}", rng.random_range(1..100u32))),
    };
    let assignment = AssignedProduct {
        number,
        provider_reference: full.then(|| format!("REF-{i}")),
        product: Some(prod.clone()),
        assigned_on: day(base),
        assigned_at: "09:30:00".into(),
        start,
        end: Some(day(base + 365)),
        change_reason: None,
        extent: Some(Extent {
            volume: rng.random_range(1..10),
            unit: "04".into(),
            frequency: "2".into(),
        }),
        budget: full.then_some(125_000),
    };
    let msg = |kind, id: String, on, body| OutMessage {
        header: header(kind, provider, &id, on),
        client: client.clone(),
        body,
        every_optional: full,
    };
    messages.push(msg(
        MessageKind::Wmo301,
        format!("T{i}"),
        day(base),
        Body::Assignment(vec![assignment.clone()]),
    ));
    let mut out = Lifecycle {
        messages: Vec::new(),
        provider,
        assignment: assignment.clone(),
        started: None,
        stopped: false,
        voided: false,
        full,
    };
    if i % 17 == 5 {
        // Voided by a later WMO301 before support starts.
        let void = AssignedProduct {
            change_reason: Some("13".into()),
            end: Some(start),
            ..assignment
        };
        messages.push(msg(
            MessageKind::Wmo301,
            format!("V{i}"),
            day(base + 3),
            Body::Assignment(vec![void]),
        ));
        out.voided = true;
        out.messages = messages;
        return out;
    }
    if i % 7 == 3 {
        // Assigned, not started yet.
        out.messages = messages;
        return out;
    }
    let started = StartedProduct {
        number: (i % 10 != 1).then_some(number),
        product: Some(prod.clone()),
        assignment_start: Some(start),
        start: day(base + 9),
        status: DeliveryStatus::First,
    };
    messages.push(msg(
        MessageKind::Wmo305,
        format!("S{i}"),
        day(base + 10),
        Body::Start(vec![started.clone()]),
    ));
    out.started = Some(started.start);
    if i % 11 == 2 {
        let corrected = StartedProduct {
            start: day(base + 8),
            status: DeliveryStatus::Corrected,
            ..started.clone()
        };
        out.started = Some(corrected.start);
        messages.push(msg(
            MessageKind::Wmo305,
            format!("C{i}"),
            day(base + 12),
            Body::Start(vec![corrected]),
        ));
    }
    if !i.is_multiple_of(3) {
        // Still running.
        out.messages = messages;
        return out;
    }
    let stopped = StoppedProduct {
        number: Some(number),
        product: Some(prod),
        assignment_start: Some(start),
        start: started.start,
        reason: ["19", "21", "23", "31", "38"][rng.random_range(0..5)].into(),
        end: day(base + 40),
        status: DeliveryStatus::First,
    };
    messages.push(msg(
        MessageKind::Wmo307,
        format!("E{i}"),
        day(base + 41),
        Body::Stop(vec![stopped.clone()]),
    ));
    out.stopped = true;
    if i % 13 == 6 {
        let withdrawn = StoppedProduct {
            status: DeliveryStatus::Withdrawn,
            ..stopped
        };
        messages.push(msg(
            MessageKind::Wmo307,
            format!("W{i}"),
            day(base + 45),
            Body::Stop(vec![withdrawn]),
        ));
        out.stopped = false;
    }
    out.messages = messages;
    out
}

/// Writes WMO lifecycles for every `every`-th adult of the population that
/// [`super::generate`] makes with the same options, so WMO clients are persons the other
/// sources know too (one pseudonym across sources). Memory does not grow with the population.
pub fn write_for_population(
    folder: &Path,
    opts: &super::GenerateOptions,
    every: u64,
    first_day: NaiveDate,
) -> Result<IwmoSummary, super::GenerateError> {
    let catalogue = super::Catalogue::build(
        super::ORGANISATIONS_TOML,
        &mut ChaCha8Rng::seed_from_u64(opts.seed ^ super::STAFF_SALT),
    )
    .map_err(super::GenerateError::Registry)?;
    let today = super::export_date(opts.seed);
    let mut population =
        super::Population::new(opts.seed, opts.persons, opts.bad_share, today, &catalogue);
    let every = every.max(1);
    let mut adults = 0u64;
    let mut pending: Vec<(String, NaiveDate)> = Vec::new();
    let persons = std::iter::from_fn(move || {
        loop {
            if let Some(p) = pending.pop() {
                return Some(p);
            }
            let household = population.next_household().ok().flatten()?;
            for person in household.persons.iter().filter(|p| p.adult).rev() {
                adults += 1;
                if adults.is_multiple_of(every) {
                    pending.push((format!("{:09}", person.bsn), person.birth));
                }
            }
        }
    });
    write_lifecycles_for(folder, persons, opts.seed, first_day).map_err(|source| {
        super::GenerateError::Write {
            path: folder.to_path_buf(),
            source,
        }
    })
}

#[cfg(test)]
pub(crate) mod tests;
