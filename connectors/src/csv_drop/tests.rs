use std::io::Cursor;

use proptest::prelude::*;

use super::*;

const GOLDEN: &[u8] = include_bytes!("../../../schemas/formats/examples/okc-3.csv");

fn format() -> CsvFormat {
    CsvFormat {
        id_column: "dossiernummer".into(),
        relations: Some(RelationColumn {
            column: "relaties".into(),
            kind_field: "soort".into(),
            bsn_field: "bsn".into(),
        }),
        ..CsvFormat::default()
    }
}

fn reader(bytes: &[u8], format: CsvFormat) -> CsvDropReader {
    CsvDropReader::new(Box::new(Cursor::new(bytes.to_vec())), "test.csv", format)
}

/// Every item of the delivery, or the delivery error.
fn read_all(bytes: &[u8], format: CsvFormat) -> Result<Vec<RecordResult>, DeliveryError> {
    let mut r = reader(bytes, format);
    let mut out = Vec::new();
    while let Some(rec) = r.next_record()? {
        out.push(rec);
    }
    Ok(out)
}

#[test]
fn the_golden_file_decodes_windows_1252_quotes_and_relations() {
    assert!(
        GOLDEN.contains(&0xEB) && GOLDEN.contains(&0xE9),
        "the golden file must hold Windows-1252 bytes for ë and é"
    );
    let items = read_all(GOLDEN, format()).expect("delivery reads");
    assert_eq!(items.len(), 4);
    let first = items[0].as_ref().expect("record 1 is good");
    assert_eq!(first.record_id.as_deref(), Some("OKC3-00000001"));
    assert_eq!(first.position.index, 1);
    assert_eq!(first.field("contactpersoon"), Some("Renée Brouwer"));
    assert_eq!(
        first.field("doel"),
        Some("Opvoedondersteuning; twee keer per maand")
    );
    assert_eq!(first.field("einddatum"), Some(""));
    assert!(first.field("relaties").is_none(), "relations become groups");
    assert_eq!(first.groups.len(), 2);
    assert_eq!(first.groups[0].path, "relaties");
    assert_eq!(first.groups[0].field("soort"), Some("kind"));
    assert_eq!(first.groups[0].field("bsn"), Some("111222345"));
    assert_eq!(first.groups[1].field("bsn"), Some("111222357"));

    let second = items[1].as_ref().expect("record 2 is good");
    assert_eq!(second.field("contactpersoon"), Some("Zoë Dekker"));
    assert_eq!(
        second.field("doel"),
        Some("Consultatiebureau:\r\nvaccinaties en groei")
    );
    let third = items[2].as_ref().expect("record 3 is good");
    assert_eq!(third.field("contactpersoon"), Some("Noël van Dijk"));
    assert_eq!(third.field("team"), Some("Team \"De Brug\""));
    assert!(third.position.byte_offset > second.position.byte_offset);

    let fourth = items[3].as_ref().expect_err("record 4 has too few fields");
    assert_eq!(fourth.record_id.as_deref(), Some("OKC3-00000004"));
    assert_eq!(fourth.position.index, 4);
    assert!(fourth.reason.contains("9 fields"), "{}", fourth.reason);
    assert!(!fourth.reason.contains("111222369"), "no BSN in the reason");
}

#[test]
fn header_names_are_field_paths_so_a_rename_needs_only_the_mapping() {
    let csv = b"id;burgerservicenummer;naam\r\n1;111222333;A\r\n";
    let items = read_all(csv, CsvFormat::default()).expect("reads");
    let rec = items[0].as_ref().expect("good");
    assert_eq!(rec.field("burgerservicenummer"), Some("111222333"));
    let required = CsvFormat {
        required_columns: vec!["bsn".into(), "naam".into()],
        ..CsvFormat::default()
    };
    let err = read_all(csv, required).expect_err("bsn column missing");
    let msg = err.to_string();
    assert!(msg.contains("`bsn`"), "{msg}");
    assert!(msg.contains("burgerservicenummer"), "{msg}");
}

#[test]
fn an_unterminated_quote_at_the_end_is_truncated() {
    let csv = b"id;naam\r\n1;\"Jansen\r\n2;Pietersen\r\n";
    let err = read_all(csv, CsvFormat::default()).expect_err("truncated");
    assert!(matches!(err, DeliveryError::Truncated { .. }), "{err}");
    // Terminated the same data reads fine, with the newline kept inside the field.
    let csv = b"id;naam\r\n1;\"Jansen\r\n2;Pietersen\"\r\n";
    let items = read_all(csv, CsvFormat::default()).expect("reads");
    assert_eq!(items.len(), 1);
}

#[test]
fn an_empty_file_has_no_header_and_a_header_only_file_is_empty() {
    let err = read_all(b"", CsvFormat::default()).expect_err("no header");
    assert!(matches!(err, DeliveryError::Truncated { .. }), "{err}");
    let items = read_all(b"id;naam\r\n", CsvFormat::default()).expect("reads");
    assert!(items.is_empty());
}

/// The delivery error of `bytes`, which must be `Truncated`.
fn truncated(bytes: &[u8], format: CsvFormat) -> String {
    let err = read_all(bytes, format).expect_err("truncated");
    assert!(matches!(err, DeliveryError::Truncated { .. }), "{err}");
    err.to_string()
}

const COMPLETE: &[u8] = b"id;naam;plaats\r\n1;Jansen;Amsterdam\r\n2;Pietersen;Diemen\r\n";

#[test]
fn a_drop_cut_mid_field_is_truncated_naming_file_record_and_offset() {
    let cut = &COMPLETE[..COMPLETE.len() - 5]; // "2;Pietersen;Die"
    let msg = truncated(cut, CsvFormat::default());
    assert!(msg.contains("test.csv"), "{msg}");
    // The record's first byte, after the CRLF ending the line before.
    assert!(msg.contains("record 2 (from byte 36)"), "{msg}");
    assert!(
        msg.contains(&format!("ends at byte {}", cut.len())),
        "{msg}"
    );
    assert!(msg.contains("ask the supplier"), "{msg}");
    assert!(msg.contains("final_line_break = \"optional\""), "{msg}");
    assert!(msg.contains("nothing was published"), "{msg}");
    assert!(
        !msg.contains("Pietersen"),
        "no field value in the message: {msg}"
    );
}

#[test]
fn a_drop_cut_between_fields_is_truncated_not_a_short_record() {
    // "2;Pietersen": two whole fields of three; once read as a short record (quarantine)
    // and a complete but smaller delivery.
    let cut = &COMPLETE[..COMPLETE.len() - 9];
    assert!(cut.ends_with(b"Pietersen"));
    let msg = truncated(cut, CsvFormat::default());
    assert!(msg.contains("record 2 "), "{msg}");
    // The records before the cut are handed out; the cut one is not.
    let mut r = reader(cut, CsvFormat::default());
    assert!(matches!(r.next_record(), Ok(Some(Ok(_)))));
    assert!(matches!(
        r.next_record(),
        Err(DeliveryError::Truncated { .. })
    ));
    assert!(
        matches!(r.next_record(), Ok(None)),
        "a failed stream stays finished"
    );
}

#[test]
fn a_drop_cut_right_after_a_delimiter_is_truncated() {
    let cut = &COMPLETE[..COMPLETE.len() - 8]; // "2;Pietersen;"
    assert!(cut.ends_with(b";"));
    truncated(cut, CsvFormat::default());
    // Also in the first record, and in the header line itself.
    truncated(b"id;naam;plaats\r\n1;", CsvFormat::default());
    let msg = truncated(b"id;naam;", CsvFormat::default());
    assert!(msg.contains("the header line is not followed"), "{msg}");
    // After a closed quote the record is just as incomplete.
    truncated(b"id;naam\r\n1;\"Jansen\"", CsvFormat::default());
}

#[test]
fn complete_drops_with_crlf_or_lf_read_in_full() {
    let lf: Vec<u8> = COMPLETE.iter().copied().filter(|&b| b != b'\r').collect();
    for bytes in [COMPLETE, lf.as_slice()] {
        let items = read_all(bytes, CsvFormat::default()).expect("complete");
        assert_eq!(items.len(), 2);
        let last = items[1].as_ref().expect("good");
        assert_eq!(last.field("plaats"), Some("Diemen"));
    }
    // A quoted last field, a line break in a quoted field, and empty lines at the end.
    let csv = b"id;naam\n1;\"Jan\r\nsen\"\n\n\r\n";
    let items = read_all(csv, CsvFormat::default()).expect("complete");
    assert_eq!(items.len(), 1);
}

/// Where `needle` first occurs in `bytes`.
fn offset_of(bytes: &[u8], needle: &[u8]) -> u64 {
    let at = bytes
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("needle");
    at as u64
}

#[test]
fn record_offsets_are_exact_after_crlf_empty_lines_and_quoted_line_breaks() {
    // Every record has a field too many, so each is quarantined with its position.
    let crlf: &[u8] = b"id;naam\r\n1;a;x\r\n2;b;x\r\n\r\n\r\n3;\"c\r\nd\";x\r\n\n4;e;x\r\n";
    let lf: Vec<u8> = crlf.iter().copied().filter(|&b| b != b'\r').collect();
    for bytes in [crlf, lf.as_slice()] {
        let items = read_all(bytes, CsvFormat::default()).expect("reads");
        let offsets: Vec<(u64, u64)> = items
            .iter()
            .map(|i| {
                let e = i.as_ref().expect_err("a field too many");
                (e.position.index, e.position.byte_offset)
            })
            .collect();
        let expected: Vec<(u64, u64)> = [&b"1;a"[..], b"2;b", b"3;\"c", b"4;e"]
            .iter()
            .enumerate()
            .map(|(i, start)| (i as u64 + 1, offset_of(bytes, start)))
            .collect();
        assert_eq!(offsets, expected, "{}", String::from_utf8_lossy(bytes));
    }
}

#[test]
fn final_line_break_optional_accepts_a_drop_without_one() {
    let optional = CsvFormat {
        require_final_line_break: false,
        ..CsvFormat::default()
    };
    let no_break = &COMPLETE[..COMPLETE.len() - 2];
    let items = read_all(no_break, optional.clone()).expect("accepted");
    assert_eq!(items.len(), 2);
    assert_eq!(
        items[1].as_ref().expect("good").field("plaats"),
        Some("Diemen")
    );
    let items = read_all(b"id;naam", optional.clone()).expect("header only");
    assert!(items.is_empty());
    // An unterminated quote is still a truncation.
    truncated(b"id;naam\r\n1;\"Jans", optional);
}

#[test]
fn repeated_or_empty_header_names_fail_the_delivery() {
    for csv in [&b"id;naam;naam\r\n"[..], &b"id;;naam\r\n"[..]] {
        let err = read_all(csv, CsvFormat::default()).expect_err("bad header");
        assert!(matches!(err, DeliveryError::Malformed { .. }), "{err}");
    }
}

#[test]
fn a_bad_relation_item_quarantines_the_record() {
    let csv = b"dossiernummer;relaties\r\n1;kind111222333\r\n2;kind:111222333\r\n";
    let items = read_all(csv, format()).expect("reads");
    let bad = items[0].as_ref().expect_err("bad relation");
    assert_eq!(bad.field.as_deref(), Some("relaties"));
    assert!(!bad.reason.contains("111222333"));
    assert!(items[1].is_ok());
}

#[test]
fn record_and_file_caps() {
    let big = format!("id;naam\r\n1;{}\r\n2;b\r\n", "x".repeat(300));
    let capped = CsvFormat {
        max_record_bytes: 100,
        ..CsvFormat::default()
    };
    let items = read_all(big.as_bytes(), capped.clone()).expect("reads");
    let err = items[0].as_ref().expect_err("too large");
    assert!(err.reason.contains("max_record_bytes"), "{}", err.reason);
    assert!(items[1].is_ok(), "the next record still reads");

    // A record running far past the window (an unterminated quote) fails the delivery
    // without buffering the rest of the file.
    let runaway = format!("id;naam\r\n1;\"{}\r\n", "x".repeat(200_000));
    let err = read_all(runaway.as_bytes(), capped).expect_err("runaway");
    assert!(matches!(err, DeliveryError::Limit { .. }), "{err}");
    // Named by where it starts, after the header's CRLF.
    assert!(err.to_string().contains("record 1 (from byte 9)"), "{err}");

    let small = CsvFormat {
        max_bytes: 50,
        ..CsvFormat::default()
    };
    let err = read_all(big.as_bytes(), small).expect_err("file too large");
    assert!(err.to_string().contains("max_bytes"), "{err}");
}

#[test]
fn a_utf8_byte_order_mark_overrides_windows_1252() {
    let mut csv = vec![0xEF, 0xBB, 0xBF];
    csv.extend_from_slice("id;naam\r\n1;Zoë\r\n".as_bytes());
    let items = read_all(&csv, CsvFormat::default()).expect("reads");
    assert_eq!(items[0].as_ref().expect("good").field("naam"), Some("Zoë"));
}

/// Characters Windows-1252 can encode, with the ones CSV treats specially.
fn cp1252_text() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![
            Just(';'),
            Just('"'),
            Just('\n'),
            Just('\r'),
            Just('é'),
            Just('ë'),
            Just('€'),
            Just('|'),
            proptest::char::range(' ', '~'),
        ],
        0..40,
    )
    .prop_map(|v| v.into_iter().collect())
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let fmt = CsvFormat { max_record_bytes: 64, ..format() };
        let mut r = reader(&bytes, fmt);
        let mut n = 0;
        while let Ok(Some(_)) = r.next_record() {
            n += 1;
            prop_assert!(n <= bytes.len() + 1);
        }
        prop_assert!(matches!(r.next_record(), Ok(None)), "a finished stream stays finished");
    }

    #[test]
    fn a_strict_prefix_not_ending_at_a_line_break_is_truncated(
        values in proptest::collection::vec(cp1252_text(), 1..6),
        crlf in any::<bool>(),
        always_quote in any::<bool>(),
        cut_at in any::<prop::sample::Index>(),
    ) {
        let mut w = csv::WriterBuilder::new()
            .delimiter(b';')
            .terminator(if crlf { csv::Terminator::CRLF } else { csv::Terminator::Any(b'\n') })
            .quote_style(if always_quote { csv::QuoteStyle::Always } else { csv::QuoteStyle::Necessary })
            .from_writer(Vec::new());
        w.write_record(["id", "waarde", "plaats"]).expect("write");
        for (i, v) in values.iter().enumerate() {
            w.write_record([format!("r{i}"), v.clone(), "x".into()]).expect("write");
        }
        let text = String::from_utf8(w.into_inner().expect("flush")).expect("utf8");
        let (bytes, _, unmappable) = WINDOWS_1252.encode(&text);
        prop_assert!(!unmappable);
        prop_assert_eq!(read_all(&bytes, CsvFormat::default()).expect("complete").len(), values.len());
        let cut = &bytes[..cut_at.index(bytes.len())];
        let result = read_all(cut, CsvFormat::default());
        if !matches!(cut.last(), Some(b'\n' | b'\r')) {
            // Also the empty prefix: a file without a header is truncated.
            prop_assert!(matches!(result, Err(DeliveryError::Truncated { .. })), "{:?}", result.map(|v| v.len()));
        } else if let Err(e) = result {
            // A prefix ending at a line break inside a quoted field is an unterminated quote.
            prop_assert!(matches!(e, DeliveryError::Truncated { .. }), "{e}");
            prop_assert!(e.to_string().contains("quoted field"), "{e}");
        }
    }

    #[test]
    fn quoted_fields_round_trip(values in proptest::collection::vec(cp1252_text(), 1..6)) {
        let mut w = csv::WriterBuilder::new()
            .delimiter(b';')
            .quote_style(csv::QuoteStyle::Always)
            .from_writer(Vec::new());
        w.write_record(["id", "waarde"]).expect("write");
        for (i, v) in values.iter().enumerate() {
            w.write_record([format!("r{i}"), v.clone()]).expect("write");
        }
        let text = String::from_utf8(w.into_inner().expect("flush")).expect("utf8");
        let (bytes, _, unmappable) = WINDOWS_1252.encode(&text);
        prop_assert!(!unmappable);
        let items = read_all(&bytes, CsvFormat::default()).expect("reads");
        prop_assert_eq!(items.len(), values.len());
        for (i, (item, v)) in items.iter().zip(&values).enumerate() {
            let rec = item.as_ref().expect("good record");
            let id = format!("r{i}");
            prop_assert_eq!(rec.record_id.as_deref(), Some(id.as_str()));
            prop_assert_eq!(rec.field("waarde"), Some(v.as_str()));
        }
    }
}
