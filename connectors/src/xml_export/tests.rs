//! Tests for the XML export reader.

use std::cell::Cell;
use std::io::{BufRead, BufReader, Read};
use std::rc::Rc;

use matchpoint_schemas::{RawGroup, RawRecord};
use proptest::prelude::*;

use super::{XmlExportFormat, XmlExportReader};
use crate::location::ReadLimits;
use crate::{DeliveryError, RecordError, RecordResult};

type Item = Result<RecordResult, DeliveryError>;

const LOC: &str = "okc-2/export.xml";
const MB: u64 = 1 << 20;

fn export(aantal: usize, records: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <export xmlns=\"urn:matchpoint:okc-xml-export:1\" systeem=\"okc-2\" \
         aangemaakt=\"2026-11-23T02:00:00Z\" aantal=\"{aantal}\">\n{records}</export>\n"
    )
}

/// A complete record, one field per line; `naam` is the client's name.
fn dossier(id: &str, naam: &str) -> String {
    format!(
        "  <dossier id=\"{id}\">\n\
         \x20   <client><bsn>123456782</bsn><naam>{naam}</naam><geboortedatum>2015-03-01</geboortedatum></client>\n\
         \x20   <organisatie code=\"OKC-N\"/>\n\
         \x20   <domein>JGZ</domein>\n\
         \x20   <contactpersoon><naam>A. de Wit</naam><telefoon>020-5550101</telefoon></contactpersoon>\n\
         \x20   <periode begin=\"2024-01-05\"/>\n\
         \x20   <relaties><relatie soort=\"ouder\" bsn=\"111222333\"/></relaties>\n\
         \x20 </dossier>\n"
    )
}

fn small_format() -> XmlExportFormat {
    XmlExportFormat {
        max_depth: 5,
        max_record_bytes: 4096,
        limits: ReadLimits {
            max_bytes: 64 << 10,
            max_event_bytes: 512,
        },
        ..XmlExportFormat::default()
    }
}

/// Pulls at most `max` items, so a reader that never ends fails instead of hanging.
fn collect<R: BufRead>(reader: &mut XmlExportReader<R>, max: usize) -> Vec<Item> {
    let items: Vec<Item> = reader.by_ref().take(max + 1).collect();
    assert!(
        items.len() <= max,
        "the reader did not stop after {max} items"
    );
    items
}

fn read_with(xml: &[u8], format: XmlExportFormat) -> Vec<Item> {
    let mut reader = XmlExportReader::new(xml, LOC, format);
    let items = collect(&mut reader, xml.len() + 2);
    assert!(
        reader.next().is_none(),
        "the reader yields items after it ended"
    );
    items
}

fn read_all(xml: &[u8]) -> Vec<Item> {
    read_with(xml, XmlExportFormat::default())
}

fn record(item: &Item) -> &RawRecord {
    match item {
        Ok(Ok(r)) => r,
        other => panic!("expected a record, got {other:?}"),
    }
}

fn quarantined(item: &Item) -> &RecordError {
    match item {
        Ok(Err(e)) => e,
        other => panic!("expected a quarantined record, got {other:?}"),
    }
}

/// The delivery error that ends `items`; fails if anything else ends them.
fn delivery_error(items: &[Item]) -> &DeliveryError {
    match items.last() {
        Some(Err(e)) => e,
        other => panic!("expected the delivery to fail, last item is {other:?}"),
    }
}

fn assert_truncated(items: &[Item], context: &str) {
    match delivery_error(items) {
        DeliveryError::Truncated { location, .. } => assert_eq!(location, LOC),
        other => panic!("{context}: expected Truncated, got {other:?}"),
    }
}

/// Bytes: `prefix`, then `fill` repeated up to `len` bytes in all, produced on demand; counts
/// how many bytes the reader pulled.
struct LazyInput {
    prefix: Vec<u8>,
    fill: u8,
    len: u64,
    pos: u64,
    pulled: Rc<Cell<u64>>,
}

impl LazyInput {
    fn new(prefix: &[u8], fill: u8, len: u64) -> (BufReader<Self>, Rc<Cell<u64>>) {
        let pulled = Rc::new(Cell::new(0));
        let input = LazyInput {
            prefix: prefix.to_vec(),
            fill,
            len,
            pos: 0,
            pulled: pulled.clone(),
        };
        (BufReader::with_capacity(8 << 10, input), pulled)
    }
}

impl Read for LazyInput {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = usize::try_from(self.len - self.pos).unwrap_or(usize::MAX);
        let n = buf.len().min(left);
        for (i, b) in buf[..n].iter_mut().enumerate() {
            let at = self.pos as usize + i;
            *b = self.prefix.get(at).copied().unwrap_or(self.fill);
        }
        self.pos += n as u64;
        self.pulled.set(self.pos);
        Ok(n)
    }
}

#[test]
fn a_well_formed_file_yields_its_records_with_fields_groups_ids_and_positions() {
    let second = "  <dossier id=\"OKC2-2\">\n\
        \x20   <client><bsn>123456782</bsn><naam>Zoë de Vries</naam></client>\n\
        \x20   <domein>OPV</domein>\n\
        \x20   <doel>Jan &amp; Piet &#x41;&#66; <![CDATA[a < b]]></doel>\n\
        \x20   <contactpersoon><naam>B. Bakker</naam></contactpersoon>\n\
        \x20   <periode begin=\"2024-02-01\" eind=\"2024-12-31\"/>\n\
        \x20   <!-- comments are skipped --><status>\n      afgesloten\n    </status>\n\
        \x20   <relaties>\n\
        \x20     <relatie soort=\"ouder\" bsn=\"111222333\"/>\n\
        \x20     <relatie soort=\"kind\"><bsn>444555666</bsn></relatie>\n\
        \x20   </relaties>\n\
        \x20 </dossier>\n";
    let xml = export(
        2,
        &format!("{}{second}", dossier("OKC2-1", "Sanne Kuipers")),
    );
    let mut reader = XmlExportReader::new(xml.as_bytes(), LOC, XmlExportFormat::default());
    assert_eq!(reader.announced_count(), None);
    let items = collect(&mut reader, 10);
    assert_eq!(items.len(), 2, "{items:?}");
    assert_eq!(reader.announced_count(), Some(2));
    assert_eq!(reader.bytes_read(), xml.len() as u64);
    assert!(reader.next().is_none());

    let first = record(&items[0]);
    assert_eq!(first.record_id.as_deref(), Some("OKC2-1"));
    assert_eq!(first.position.index, 1);
    assert_eq!(
        first.position.byte_offset,
        xml.find("<dossier id=\"OKC2-1\"").unwrap() as u64
    );
    let fields: Vec<(&str, &str)> = first
        .fields
        .iter()
        .map(|(p, v)| (p.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        fields,
        [
            ("client/bsn", "123456782"),
            ("client/naam", "Sanne Kuipers"),
            ("client/geboortedatum", "2015-03-01"),
            ("organisatie/@code", "OKC-N"),
            ("domein", "JGZ"),
            ("contactpersoon/naam", "A. de Wit"),
            ("contactpersoon/telefoon", "020-5550101"),
            ("periode/@begin", "2024-01-05"),
        ]
    );
    assert_eq!(
        first.groups,
        [RawGroup {
            path: "relaties/relatie".into(),
            fields: vec![
                ("@soort".into(), "ouder".into()),
                ("@bsn".into(), "111222333".into())
            ],
        }]
    );

    let second = record(&items[1]);
    assert_eq!(second.record_id.as_deref(), Some("OKC2-2"));
    assert_eq!(second.position.index, 2);
    assert_eq!(
        second.position.byte_offset,
        xml.find("<dossier id=\"OKC2-2\"").unwrap() as u64
    );
    assert_eq!(second.field("client/naam"), Some("Zoë de Vries"));
    assert_eq!(second.field("doel"), Some("Jan & Piet AB a < b"));
    assert_eq!(second.field("status"), Some("afgesloten"));
    assert_eq!(second.field("periode/@eind"), Some("2024-12-31"));
    assert_eq!(second.field("relaties"), None);
    assert_eq!(second.groups.len(), 2);
    assert_eq!(second.groups[1].path, "relaties/relatie");
    assert_eq!(second.groups[1].field("@soort"), Some("kind"));
    assert_eq!(second.groups[1].field("bsn"), Some("444555666"));
}

#[test]
fn the_example_file_in_schemas_formats_parses_into_one_record() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../schemas/formats/examples/okc-xml-export.xml"
    );
    let file = std::fs::File::open(path).expect("the example file exists");
    let mut reader = XmlExportReader::new(BufReader::new(file), path, XmlExportFormat::default());
    let items = collect(&mut reader, 10);
    assert_eq!(items.len(), 1, "{items:?}");
    let r = record(&items[0]);
    assert_eq!(r.record_id.as_deref(), Some("OKC2-00000001"));
    assert_eq!(r.field("client/bsn"), Some("123456782"));
    assert_eq!(r.field("organisatie/@code"), Some("OKC-N"));
    assert_eq!(
        r.field("contactpersoon/email"),
        Some("a.dewit@okc-noord.example")
    );
    assert_eq!(r.field("periode/@eind"), Some("2025-02-01"));
    assert_eq!(r.groups.len(), 1);
    assert_eq!(r.groups[0].field("@bsn"), Some("111222333"));
    assert_eq!(reader.announced_count(), Some(1));
}

#[test]
fn a_doctype_with_entity_declarations_fails_the_delivery_at_the_doctype() {
    let mut header =
        String::from("<?xml version=\"1.0\"?>\n<!DOCTYPE export [\n  <!ENTITY lol0 \"lol\">\n");
    for i in 1..10 {
        let prev = format!("&lol{};", i - 1);
        header.push_str(&format!("  <!ENTITY lol{i} \"{}\">\n", prev.repeat(10)));
    }
    header.push_str(
        "]>\n<export aantal=\"1\"><dossier id=\"1\"><client><naam>&lol9;</naam></client></dossier></export>\n<!-- ",
    );
    // After the header, 50 MB more: the reader must stop at the DOCTYPE, not read on.
    let (input, pulled) = LazyInput::new(header.as_bytes(), b' ', 50 * MB);
    let mut reader = XmlExportReader::new(input, LOC, XmlExportFormat::default());
    let items = collect(&mut reader, 5);
    assert_eq!(items.len(), 1, "{items:?}");
    match delivery_error(&items) {
        DeliveryError::Malformed {
            message,
            byte_offset,
            ..
        } => {
            assert!(message.contains("DOCTYPE"), "{message}");
            assert!(*byte_offset <= header.len() as u64, "{byte_offset}");
        }
        other => panic!("expected Malformed, got {other:?}"),
    }
    assert!(reader.next().is_none());
    assert!(
        pulled.get() < 64 << 10,
        "the reader pulled {} bytes after a DOCTYPE",
        pulled.get()
    );
    assert!(reader.bytes_read() <= header.len() as u64);
}

/// Reads `bad` followed by a good record `B`; `bad` must be quarantined for `field`, `B` must
/// come through, and the reason must not leak any of `secrets`.
fn assert_quarantined(bad: &[u8], field: Option<&str>, secrets: &[&str]) -> RecordError {
    let mut xml = export(2, "").into_bytes();
    let at = xml.windows(9).position(|w| w == b"</export>").unwrap();
    let mut records = bad.to_vec();
    records.extend_from_slice(dossier("B", "Bram").as_bytes());
    xml.splice(at..at, records);
    let items = read_all(&xml);
    assert_eq!(items.len(), 2, "{items:?}");
    let e = quarantined(&items[0]).clone();
    assert_eq!(e.field.as_deref(), field, "{e:?}");
    assert_eq!(e.position.index, 1);
    assert_eq!(
        e.position.byte_offset,
        xml.windows(8).position(|w| w == b"<dossier").unwrap() as u64
    );
    for secret in secrets {
        assert!(
            !e.reason.contains(secret),
            "reason {:?} leaks {secret:?}",
            e.reason
        );
    }
    let good = record(&items[1]);
    assert_eq!(good.record_id.as_deref(), Some("B"));
    assert_eq!(good.position.index, 2);
    e
}

#[test]
fn an_undefined_entity_in_a_text_quarantines_only_its_record() {
    let bad = dossier("A", "Geheim&foo;Naam");
    let e = assert_quarantined(
        bad.as_bytes(),
        Some("client/naam"),
        &["Geheim", "Naam", "foo"],
    );
    assert_eq!(e.record_id.as_deref(), Some("A"));
}

#[test]
fn an_invalid_character_reference_quarantines_only_its_record() {
    let bad = dossier("A", "Geheim&#0;Naam");
    assert_quarantined(bad.as_bytes(), Some("client/naam"), &["Geheim", "Naam"]);
}

#[test]
fn invalid_utf8_in_a_text_quarantines_only_its_record() {
    let bad = dossier("A", "Geheim\u{1}Naam").replace('\u{1}', "\u{ff}");
    let mut bytes = bad.into_bytes();
    // Replace the two-byte UTF-8 of U+00FF by one lone continuation byte and a lone lead byte.
    let at = bytes
        .windows(2)
        .position(|w| w == "\u{ff}".as_bytes())
        .unwrap();
    bytes[at] = 0xff;
    bytes[at + 1] = 0xfe;
    let e = assert_quarantined(&bytes, Some("client/naam"), &["Geheim", "Naam"]);
    assert!(e.reason.contains("UTF-8"), "{}", e.reason);
}

#[test]
fn invalid_utf8_in_an_attribute_quarantines_only_its_record() {
    let mut bytes = dossier("A", "Sanne").into_bytes();
    let at = bytes.windows(5).position(|w| w == b"OKC-N").unwrap();
    bytes[at + 2] = 0xc3;
    assert_quarantined(&bytes, Some("organisatie/@code"), &["OK"]);
}

#[test]
fn an_undefined_entity_in_an_attribute_quarantines_only_its_record() {
    let bad = dossier("A", "Sanne").replace("bsn=\"111222333\"", "bsn=\"111&foo;333\"");
    assert_quarantined(
        bad.as_bytes(),
        Some("relaties/relatie/@bsn"),
        &["111", "333", "foo"],
    );
}

#[test]
fn a_duplicated_scalar_field_quarantines_only_its_record() {
    let bad = dossier("A", "Sanne").replace(
        "<bsn>123456782</bsn>",
        "<bsn>123456782</bsn><bsn>987654321</bsn>",
    );
    let e = assert_quarantined(
        bad.as_bytes(),
        Some("client/bsn"),
        &["123456782", "987654321"],
    );
    assert_eq!(e.record_id.as_deref(), Some("A"));
}

#[test]
fn a_duplicated_field_inside_a_group_quarantines_only_its_record() {
    let bad = dossier("A", "Sanne").replace(
        "<relatie soort=\"ouder\" bsn=\"111222333\"/>",
        "<relatie soort=\"ouder\"><bsn>111222333</bsn><bsn>444555666</bsn></relatie>",
    );
    assert_quarantined(
        bad.as_bytes(),
        Some("relaties/relatie/bsn"),
        &["111222333", "444555666"],
    );
}

#[test]
fn a_record_without_an_id_quarantines_only_that_record() {
    for bad in [
        dossier("A", "Sanne").replace(" id=\"A\"", ""),
        dossier("   ", "Sanne"),
    ] {
        let e = assert_quarantined(bad.as_bytes(), Some("@id"), &["Sanne"]);
        assert_eq!(e.record_id, None, "{e:?}");
    }
}

#[test]
fn text_mixed_with_child_elements_quarantines_only_its_record() {
    let bad = dossier("A", "Sanne").replace("<client><bsn>", "<client>Geheim<bsn>");
    assert_quarantined(bad.as_bytes(), Some("client"), &["Geheim"]);
    let bad = dossier("A", "Sanne").replace("</client>", "</client>Geheim");
    assert_quarantined(bad.as_bytes(), None, &["Geheim"]);
}

#[test]
fn a_record_larger_than_max_record_bytes_is_quarantined_and_the_next_one_comes_through() {
    let many: String = (0..2000).map(|i| format!("<veld{i}>x</veld{i}>")).collect();
    let bad = dossier("A", "Sanne").replace("<domein>", &format!("{many}<domein>"));
    let xml = export(2, &format!("{bad}{}", dossier("B", "Bram")));
    let items = read_with(xml.as_bytes(), small_format());
    assert_eq!(items.len(), 2, "{items:?}");
    let e = quarantined(&items[0]);
    assert!(e.reason.contains("max_record_bytes"), "{}", e.reason);
    assert_eq!(record(&items[1]).record_id.as_deref(), Some("B"));
}

#[test]
fn a_record_with_very_many_fields_keeps_them_all_and_finds_a_late_duplicate() {
    let many: String = (0..200_000).map(|i| format!("<v{i}>x</v{i}>")).collect();
    let good = dossier("A", "Sanne").replace("<domein>", &format!("{many}<domein>"));
    let dup = dossier("B", "Bram").replace("<domein>", &format!("{many}<v7>y</v7><domein>"));
    let xml = export(2, &format!("{good}{dup}"));
    let format = XmlExportFormat {
        max_record_bytes: 64 * MB,
        ..XmlExportFormat::default()
    };
    let items = read_with(xml.as_bytes(), format);
    assert_eq!(record(&items[0]).fields.len(), 200_000 + 8);
    let e = quarantined(&items[1]);
    assert_eq!(e.field.as_deref(), Some("v7"), "{e:?}");
}

#[test]
fn a_file_cut_anywhere_before_its_closing_root_element_is_truncated() {
    let xml = export(
        2,
        &format!("{}{}", dossier("A", "Zoë"), dossier("B", "Bram")),
    );
    let end = xml.find("</export>").unwrap() + "</export>".len();
    for cut in 0..end {
        let items = read_all(&xml.as_bytes()[..cut]);
        assert_truncated(&items, &format!("cut at byte {cut}"));
        for item in &items[..items.len() - 1] {
            assert!(item.is_ok(), "cut at byte {cut}: {item:?}");
        }
    }
    for cut in end..=xml.len() {
        let items = read_all(&xml.as_bytes()[..cut]);
        assert_eq!(items.len(), 2);
        assert!(items.iter().all(|i| matches!(i, Ok(Ok(_)))), "cut at {cut}");
    }
}

#[test]
fn a_file_cut_mid_record_yields_the_records_before_the_cut_then_truncated() {
    let xml = export(
        2,
        &format!("{}{}", dossier("A", "Sanne"), dossier("B", "Bram")),
    );
    let cut = xml.find("<naam>Bram").unwrap() + "<naam>Br".len();
    let items = read_all(&xml.as_bytes()[..cut]);
    assert_eq!(items.len(), 2, "{items:?}");
    assert_eq!(record(&items[0]).record_id.as_deref(), Some("A"));
    assert_truncated(&items, "cut mid-record");
}

#[test]
fn a_file_without_its_closing_root_element_is_truncated() {
    let xml = export(1, &dossier("A", "Sanne"));
    let cut = xml.find("</export>").unwrap();
    let items = read_all(&xml.as_bytes()[..cut]);
    assert_eq!(items.len(), 2, "{items:?}");
    record(&items[0]);
    assert_truncated(&items, "without </export>");
}

#[test]
fn an_empty_file_is_truncated() {
    for input in ["", "   \n", "<?xml version=\"1.0\"?>\n", "\u{feff}"] {
        let items = read_all(input.as_bytes());
        assert_eq!(items.len(), 1, "{input:?}: {items:?}");
        assert_truncated(&items, input);
    }
}

#[test]
fn an_announced_count_that_differs_from_the_records_is_truncated() {
    let records = format!("{}{}", dossier("A", "Sanne"), dossier("B", "Bram"));
    for aantal in [0, 1, 3, 1000] {
        let items = read_all(export(aantal, &records).as_bytes());
        assert_eq!(items.len(), 3, "aantal={aantal}: {items:?}");
        match delivery_error(&items) {
            DeliveryError::Truncated { message, .. } => {
                assert!(message.contains(&aantal.to_string()), "{message}")
            }
            other => panic!("aantal={aantal}: expected Truncated, got {other:?}"),
        }
    }
    let items = read_all(export(0, "").as_bytes());
    assert!(items.is_empty(), "{items:?}");
}

#[test]
fn a_missing_or_unreadable_announced_count_fails_the_delivery() {
    let records = dossier("A", "Sanne");
    for xml in [
        export(1, &records).replace(" aantal=\"1\"", ""),
        export(1, &records).replace("aantal=\"1\"", "aantal=\"een\""),
        export(1, &records).replace("aantal=\"1\"", "aantal=\"-1\""),
    ] {
        let items = read_all(xml.as_bytes());
        assert_eq!(items.len(), 1, "{items:?}");
        match delivery_error(&items) {
            DeliveryError::Malformed { message, .. } => {
                assert!(message.contains("aantal"), "{message}")
            }
            other => panic!("expected Malformed, got {other:?}"),
        }
    }
}

#[test]
fn a_mismatched_end_tag_fails_the_delivery_with_its_byte_offset() {
    let bad = dossier("B", "Bram").replace("<naam>Bram</naam>", "<naam>Bram</name>");
    let xml = export(2, &format!("{}{bad}", dossier("A", "Sanne")));
    let items = read_all(xml.as_bytes());
    assert_eq!(items.len(), 2, "{items:?}");
    record(&items[0]);
    match delivery_error(&items) {
        DeliveryError::Malformed {
            byte_offset,
            record_index,
            location,
            ..
        } => {
            assert_eq!(location, LOC);
            assert_eq!(*byte_offset, xml.find("</name>").unwrap() as u64);
            assert_eq!(*record_index, 2);
        }
        other => panic!("expected Malformed, got {other:?}"),
    }
}

#[test]
fn content_outside_the_records_fails_the_delivery() {
    let records = dossier("A", "Sanne");
    for xml in [
        export(1, &records).replace("</export>\n", "</export>\n<export aantal=\"0\"/>"),
        export(1, &records).replace("</export>", "tekst</export>"),
        export(1, &records).replace("</export>", "&amp;</export>"),
        export(1, &records).replace("</export>", "<![CDATA[x]]></export>"),
        export(1, &records).replace("</export>", "<anders/></export>"),
        export(1, &records).replace("<export ", "<anders "),
        export(1, &records).replace("encoding=\"UTF-8\"", "encoding=\"ISO-8859-1\""),
    ] {
        let items = read_all(xml.as_bytes());
        assert!(
            matches!(items.last(), Some(Err(DeliveryError::Malformed { .. }))),
            "{xml}: {items:?}"
        );
    }
}

#[test]
fn nesting_deeper_than_max_depth_fails_the_delivery() {
    // small_format allows 5 levels below <export>: dossier and four inside the record.
    let ok = dossier("A", "Sanne").replace("<domein>", "<a><b><c><d>x</d></c></b></a><domein>");
    let items = read_with(export(1, &ok).as_bytes(), small_format());
    assert_eq!(record(&items[0]).field("a/b/c/d"), Some("x"));

    let deep =
        dossier("A", "Sanne").replace("<domein>", "<a><b><c><d><e/></d></c></b></a><domein>");
    let items = read_with(export(1, &deep).as_bytes(), small_format());
    assert_eq!(items.len(), 1, "{items:?}");
    match delivery_error(&items) {
        DeliveryError::Limit { message, .. } => assert!(message.contains("max_depth"), "{message}"),
        other => panic!("expected Limit, got {other:?}"),
    }

    // A million open elements stop at the limit without reading them all.
    let mut prefix = export(1, "<dossier id=\"A\">").replace("</export>\n", "");
    prefix.push_str(&"<a>".repeat(1_000_000));
    let mut reader = XmlExportReader::new(prefix.as_bytes(), LOC, XmlExportFormat::default());
    let items = collect(&mut reader, 3);
    assert!(
        matches!(delivery_error(&items), DeliveryError::Limit { .. }),
        "{items:?}"
    );
    assert!(reader.bytes_read() < 4096, "{}", reader.bytes_read());
}

#[test]
fn one_text_or_tag_larger_than_max_event_bytes_fails_early_without_buffering_it() {
    let start = export(1, "<dossier id=\"A\">").replace("</export>\n", "");
    let cases = [
        format!("{start}<client><naam>"),
        format!("{start}<client><naam>&amp;"),
        format!("{start}<client naam=\""),
        format!("{start}<client><!-- "),
        format!("{start}<client><![CDATA["),
        format!("{start}<"),
        String::from("<?xml version=\"1.0\"?>"),
        String::from("<?xml version=\"1.0\"?><!DOCTYPE export ["),
    ];
    for prefix in cases {
        let (input, pulled) = LazyInput::new(prefix.as_bytes(), b'x', 50 * MB);
        let mut reader = XmlExportReader::new(input, LOC, XmlExportFormat::default());
        let items = collect(&mut reader, 3);
        match delivery_error(&items) {
            DeliveryError::Limit { message, location } => {
                assert_eq!(location, LOC);
                assert!(message.contains("max_element_bytes"), "{prefix}: {message}");
            }
            other => panic!("{prefix}: expected Limit, got {other:?}"),
        }
        assert!(
            pulled.get() < MB,
            "{prefix}: pulled {} bytes before failing",
            pulled.get()
        );
        assert!(reader.bytes_read() <= (64 << 10) + prefix.len() as u64 + 1);
    }
}

#[test]
fn whitespace_larger_than_max_event_bytes_fails_early() {
    let start = export(1, "<dossier id=\"A\">").replace("</export>\n", "");
    for prefix in [String::new(), start] {
        let (input, pulled) = LazyInput::new(prefix.as_bytes(), b' ', 50 * MB);
        let mut reader = XmlExportReader::new(input, LOC, XmlExportFormat::default());
        let items = collect(&mut reader, 3);
        assert!(
            matches!(delivery_error(&items), DeliveryError::Limit { .. }),
            "{items:?}"
        );
        assert!(pulled.get() < MB, "pulled {} bytes", pulled.get());
    }
}

#[test]
fn input_larger_than_max_bytes_fails_the_delivery() {
    let records: String = (0..20)
        .map(|i| dossier(&format!("R{i}"), "Sanne"))
        .collect();
    let xml = export(20, &records);
    let format = XmlExportFormat {
        limits: ReadLimits {
            max_bytes: 2000,
            max_event_bytes: 64 << 10,
        },
        ..XmlExportFormat::default()
    };
    let mut reader = XmlExportReader::new(xml.as_bytes(), LOC, format);
    let items = collect(&mut reader, 30);
    assert!(items.len() < 20, "{}", items.len());
    match delivery_error(&items) {
        DeliveryError::Limit { message, .. } => assert!(message.contains("max_bytes"), "{message}"),
        other => panic!("expected Limit, got {other:?}"),
    }
    assert!(reader.bytes_read() <= 2001, "{}", reader.bytes_read());
    assert!(
        items[..items.len() - 1]
            .iter()
            .all(|i| matches!(i, Ok(Ok(_))))
    );

    // A file of exactly max_bytes is fine.
    let format = XmlExportFormat {
        limits: ReadLimits {
            max_bytes: xml.len() as u64,
            max_event_bytes: 64 << 10,
        },
        ..XmlExportFormat::default()
    };
    let items = read_with(xml.as_bytes(), format);
    assert_eq!(items.len(), 20);
    assert!(items.iter().all(|i| matches!(i, Ok(Ok(_)))));
}

/// What must hold for any input: no panic (checked by running), an end, at most one delivery
/// error and only as the last item, records numbered 1, 2, 3, … and, when the delivery
/// succeeds, exactly as many records as announced.
fn check_invariants(input: &[u8], format: XmlExportFormat) {
    let mut reader = XmlExportReader::new(input, LOC, format);
    let items = collect(&mut reader, input.len() / 8 + 2);
    assert!(reader.next().is_none());
    let errors = items.iter().filter(|i| i.is_err()).count();
    assert!(errors <= 1);
    if errors == 1 {
        assert!(items.last().unwrap().is_err());
    }
    for (n, item) in items.iter().enumerate() {
        let position = match item {
            Ok(Ok(r)) => r.position,
            Ok(Err(e)) => {
                assert!(e.reason.len() < 200, "{}", e.reason);
                e.position
            }
            Err(_) => continue,
        };
        assert_eq!(position.index, n as u64 + 1);
        assert!(position.byte_offset < input.len() as u64);
    }
    if errors == 0 {
        assert_eq!(reader.announced_count(), Some(items.len() as u64));
    }
}

fn valid_file() -> String {
    let second = dossier("B", "Zoë &amp; Bram").replace(
        "</relaties>",
        "<relatie soort=\"kind\"><bsn>444555666</bsn></relatie></relaties>",
    );
    export(2, &format!("{}<!-- x -->{second}", dossier("A", "Sanne")))
}

#[derive(Debug, Clone)]
enum Mutation {
    Truncate(usize),
    Flip(usize, u8),
    Insert(usize, Vec<u8>),
    Delete(usize, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let token = prop_oneof![
        proptest::collection::vec(any::<u8>(), 1..4),
        proptest::sample::select(vec![
            b"<".to_vec(),
            b">".to_vec(),
            b"</".to_vec(),
            b"/>".to_vec(),
            b"&".to_vec(),
            b"&foo;".to_vec(),
            b"&#0;".to_vec(),
            b"\"".to_vec(),
            b"<!--".to_vec(),
            b"<![CDATA[".to_vec(),
            b"]]>".to_vec(),
            b"<!DOCTYPE x>".to_vec(),
            b"<?xml version=\"1.0\"?>".to_vec(),
            b"<dossier>".to_vec(),
            b"<dossier id=\"Z\">".to_vec(),
            b"</dossier>".to_vec(),
            b"</export>".to_vec(),
            b"<a><a><a><a><a><a><a>".to_vec(),
            vec![0xff, 0xfe],
            "ë".as_bytes().to_vec(),
        ]),
    ];
    prop_oneof![
        any::<usize>().prop_map(Mutation::Truncate),
        (any::<usize>(), any::<u8>()).prop_map(|(p, b)| Mutation::Flip(p, b)),
        (any::<usize>(), token).prop_map(|(p, t)| Mutation::Insert(p, t)),
        (any::<usize>(), 1..8usize).prop_map(|(p, n)| Mutation::Delete(p, n)),
    ]
}

fn apply(bytes: &mut Vec<u8>, m: &Mutation) {
    let len = bytes.len().max(1);
    match m {
        Mutation::Truncate(p) => bytes.truncate(p % len),
        Mutation::Flip(p, b) => {
            if !bytes.is_empty() {
                bytes[p % len] ^= b | 1;
            }
        }
        Mutation::Insert(p, t) => {
            let at = p % (bytes.len() + 1);
            bytes.splice(at..at, t.iter().copied());
        }
        Mutation::Delete(p, n) => {
            let at = p % len;
            let to = (at + n).min(bytes.len());
            if at < to {
                bytes.drain(at..to);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_bytes_never_panic_and_always_end(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        check_invariants(&bytes, XmlExportFormat::default());
        check_invariants(&bytes, small_format());
    }

    #[test]
    fn arbitrary_bytes_after_a_valid_prolog_never_panic_and_always_end(
        bytes in proptest::collection::vec(any::<u8>(), 0..2048)
    ) {
        let mut input = export(1, "<dossier id=\"A\">").replace("</export>\n", "").into_bytes();
        input.extend_from_slice(&bytes);
        check_invariants(&input, XmlExportFormat::default());
        check_invariants(&input, small_format());
    }

    #[test]
    fn mutations_of_a_valid_file_never_panic_and_always_end(
        mutations in proptest::collection::vec(mutation(), 1..6)
    ) {
        let mut bytes = valid_file().into_bytes();
        for m in &mutations {
            apply(&mut bytes, m);
        }
        check_invariants(&bytes, XmlExportFormat::default());
        check_invariants(&bytes, small_format());
    }
}

#[test]
fn the_valid_file_used_by_the_property_tests_is_valid() {
    let items = read_all(valid_file().as_bytes());
    assert_eq!(items.len(), 2);
    assert!(items.iter().all(|i| matches!(i, Ok(Ok(_)))), "{items:?}");
    assert_eq!(record(&items[1]).field("client/naam"), Some("Zoë & Bram"));
}
