use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

use matchpoint_connectors::iwmo::{MessageLimits, read_message};

use super::*;

/// The official schemas, copied into the repository.
pub(crate) fn schema_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas/formats/iwmo-3.2")
}

fn date(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).expect("valid date")
}

fn client() -> OutClient {
    OutClient {
        bsn: "123456782".into(),
        birth: date(1948, 5, 1),
        birth_use: Some("1".into()),
        gender: "2".into(),
        surname: "Veldhoven & Zn".into(),
        prefix: Some("van".into()),
        initials: "MJ".into(),
    }
}

fn product() -> Product {
    Product {
        category: "16".into(),
        code: Some("16A01".into()),
    }
}

/// One message of each kind with every optional element, and every product-level variation.
pub(crate) fn full_corpus() -> Vec<OutMessage> {
    let assigned = AssignedProduct {
        number: 4711,
        provider_reference: Some("REF-0001".into()),
        product: Some(product()),
        assigned_on: date(2026, 3, 1),
        assigned_at: "10:15:30".into(),
        start: date(2026, 3, 2),
        end: Some(date(2026, 12, 31)),
        change_reason: Some("04".into()),
        extent: Some(Extent {
            volume: 3,
            unit: "04".into(),
            frequency: "2".into(),
        }),
        budget: Some(150_000),
    };
    let started = StartedProduct {
        number: Some(4711),
        product: Some(product()),
        assignment_start: Some(date(2026, 3, 2)),
        start: date(2026, 3, 5),
        status: DeliveryStatus::First,
    };
    let stopped = StoppedProduct {
        number: Some(4711),
        product: Some(product()),
        assignment_start: Some(date(2026, 3, 2)),
        start: date(2026, 3, 5),
        reason: "19".into(),
        end: date(2026, 6, 30),
        status: DeliveryStatus::Corrected,
    };
    let msg = |kind, id: &str, body| OutMessage {
        header: header(kind, "98000001", id, date(2026, 3, 1)),
        client: client(),
        body,
        every_optional: true,
    };
    vec![
        msg(
            MessageKind::Wmo301,
            "T-1",
            Body::Assignment(vec![
                assigned.clone(),
                AssignedProduct {
                    number: 4712,
                    change_reason: Some("13".into()),
                    ..assigned
                },
            ]),
        ),
        msg(MessageKind::Wmo305, "S-1", Body::Start(vec![started])),
        msg(MessageKind::Wmo307, "E-1", Body::Stop(vec![stopped])),
    ]
}

/// `Some(path)` of xmllint, `None` (after printing SKIPPED) when missing outside CI.
pub(crate) fn xmllint() -> Option<&'static str> {
    let found = Command::new("xmllint").arg("--version").output().is_ok();
    if found {
        return Some("xmllint");
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "xmllint is missing: CI must install libxml2-utils"
    );
    eprintln!(
        "SKIPPED: xmllint not found (apt-get install libxml2-utils); iWmo schema validation not run"
    );
    None
}

pub(crate) fn schema_of(kind: MessageKind) -> PathBuf {
    schema_dir().join(format!("{}.xsd", kind.name()))
}

pub(crate) fn validate(xmllint: &str, kind: MessageKind, file: &Path) {
    let out = Command::new(xmllint)
        .arg("--noout")
        .arg("--schema")
        .arg(schema_of(kind))
        .arg(file)
        .output()
        .expect("run xmllint");
    assert!(
        out.status.success(),
        "{} does not validate against {}: {}",
        file.display(),
        kind.name(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Names of optional elements (`minOccurs="0"`) declared in an XSD, optionally limited to the
/// named complex types.
fn optional_elements(xsd: &Path, types: Option<&[&str]>) -> BTreeSet<String> {
    let text = std::fs::read_to_string(xsd).expect("read xsd");
    let mut names = BTreeSet::new();
    let mut current_type: Option<String> = None;
    for line in text.lines() {
        let l = line.trim();
        if let Some(rest) = l.strip_prefix("<xs:complexType name=\"") {
            current_type = rest.split('"').next().map(str::to_owned);
        }
        if l.starts_with("</xs:complexType") {
            current_type = None;
        }
        let wanted = match (types, &current_type) {
            (None, _) => true,
            (Some(ts), Some(t)) => ts.contains(&t.as_str()),
            (Some(_), None) => false,
        };
        if wanted
            && l.starts_with("<xs:element ")
            && l.contains("minOccurs=\"0\"")
            && let Some(name) = l.split("name=\"").nth(1).and_then(|r| r.split('"').next())
        {
            names.insert(name.to_owned());
        }
    }
    names
}

#[test]
fn the_full_corpus_uses_every_optional_element_of_the_three_schemas() {
    let corpus = full_corpus();
    let xml_of = |kind: MessageKind| {
        corpus
            .iter()
            .filter(|m| m.header.kind == kind)
            .map(message_xml)
            .collect::<String>()
    };
    // Complex types of the base schema the three messages use.
    let base_types: &[&str] = &[
        "CDT_Geboortedatum",
        "CDT_VolledigeNaam",
        "CDT_VerkorteNaam",
        "CDT_Achternaam",
        "CDT_Communicatie",
        "CDT_Adres",
        "CDT_Huis",
        "CDT_Telefoonnummers",
        "CDT_Telefoon",
        "CDT_OpenPeriode",
        "CDT_Product",
        "CDT_Omvang",
        "CDT_BerichtIdentificatie",
        "CDT_XsdVersie",
    ];
    let base = optional_elements(&schema_dir().join("basisschema.xsd"), Some(base_types));
    assert!(
        base.contains("Partnernaam") && base.contains("Huisletter"),
        "{base:?}"
    );
    for kind in [
        MessageKind::Wmo301,
        MessageKind::Wmo305,
        MessageKind::Wmo307,
    ] {
        let xml = xml_of(kind);
        let mut wanted = optional_elements(&schema_of(kind), None);
        assert!(!wanted.is_empty());
        // Base-schema optional elements that can occur in this message.
        for name in &base {
            let applies = match name.as_str() {
                // Only CDT_VolledigeNaam (301) has these.
                "Partnernaam" => kind == MessageKind::Wmo301,
                // Addresses, phones, periods and communication only occur in a 301.
                "Huis"
                | "Huisletter"
                | "HuisnummerToevoeging"
                | "AanduidingWoonadres"
                | "Postcode"
                | "Straatnaam"
                | "Plaatsnaam"
                | "LandCode"
                | "Telefoon02"
                | "Begindatum"
                | "Einddatum"
                | "Taal" => kind == MessageKind::Wmo301,
                _ => true,
            };
            if applies {
                wanted.insert(name.clone());
            }
        }
        for name in wanted {
            assert!(
                xml.contains(&format!("<{name}>")) || xml.contains(&format!("<iwmo:{name}>")),
                "{}: optional element {name} is not used by the corpus",
                kind.name()
            );
        }
    }
}

#[test]
fn the_full_corpus_validates_against_the_official_schemas_and_reads_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lint = xmllint();
    for (i, m) in full_corpus().iter().enumerate() {
        let xml = message_xml(m);
        let path = dir.path().join(format!("{i}.xml"));
        std::fs::write(&path, &xml).expect("write");
        if let Some(lint) = lint {
            validate(lint, m.header.kind, &path);
        }
        let back = read_message(xml.as_bytes(), &MessageLimits::default()).expect("reads back");
        assert_eq!(back.header, m.header);
        assert_eq!(back.body, m.body);
        assert_eq!(back.client.bsn, m.client.bsn);
        assert_eq!(back.client.birth_date, m.client.birth);
        assert_eq!(back.client.birth_date_use, m.client.birth_use);
    }
}

#[test]
fn generated_lifecycles_validate_and_read_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let summary = write_lifecycles(dir.path(), 60, 7, date(2026, 1, 5)).expect("write");
    assert_eq!(summary.assignments, 60);
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir.path())
        .expect("list")
        .map(|e| e.expect("entry").path())
        .collect();
    files.sort();
    assert_eq!(files.len() as u64, summary.messages);
    let lint = xmllint();
    let mut kinds = BTreeSet::new();
    let mut without_number = 0;
    for f in &files {
        let m = read_message(
            std::io::BufReader::new(std::fs::File::open(f).expect("open")),
            &MessageLimits::default(),
        )
        .expect("reads");
        kinds.insert(m.header.kind);
        if let Body::Start(p) = &m.body {
            without_number += p.iter().filter(|p| p.number.is_none()).count();
        }
        if let Some(lint) = lint {
            validate(lint, m.header.kind, f);
        }
    }
    assert_eq!(kinds.len(), 3);
    assert!(without_number > 0);
    // Same seed, same files.
    let again = tempfile::tempdir().expect("tempdir");
    write_lifecycles(again.path(), 60, 7, date(2026, 1, 5)).expect("write");
    for f in &files {
        let name = f.file_name().expect("name");
        assert_eq!(
            std::fs::read(f).expect("read"),
            std::fs::read(again.path().join(name)).expect("read again")
        );
    }
}

#[test]
fn wmo_clients_of_a_population_are_persons_of_the_okc_export() {
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = crate::generate::GenerateOptions {
        persons: 300,
        out: dir.path().join("data"),
        seed: 3,
        bad_share: 0.0,
    };
    crate::generate::generate(&opts, &mut |_| {}).expect("generate");
    let export =
        std::fs::read_to_string(crate::generate::okc2_export_path(&opts.out)).expect("export");
    let folder = dir.path().join("wmo");
    let summary = write_for_population(&folder, &opts, 3, date(2026, 1, 5)).expect("wmo");
    assert!(summary.assignments > 10, "{summary:?}");
    let mut known = 0;
    for entry in std::fs::read_dir(&folder).expect("list") {
        let xml = std::fs::read_to_string(entry.expect("entry").path()).expect("read");
        let m = read_message(xml.as_bytes(), &MessageLimits::default()).expect("reads");
        if export.contains(&format!("<bsn>{}</bsn>", m.client.bsn)) {
            known += 1;
        }
    }
    // Every WMO client is an adult of the population; most adults have an OKC record.
    assert!(
        known * 2 > summary.messages,
        "{known} of {}",
        summary.messages
    );
}
