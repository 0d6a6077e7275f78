use proptest::prelude::*;

use super::*;

fn header(kind: MessageKind, release: &str, major: &str, minor: &str) -> String {
    let (from, to) = match kind {
        MessageKind::Wmo301 => ("0363", "98000001"),
        _ => ("98000001", "0363"),
    };
    let ns = kind.namespace().replace("3_2", release);
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<Bericht xmlns="{ns}">
  <Header>
    <BerichtCode>{code}</BerichtCode>
    <BerichtVersie>{major}</BerichtVersie>
    <BerichtSubversie>{minor}</BerichtSubversie>
    <Afzender>{from}</Afzender>
    <Ontvanger>{to}</Ontvanger>
    <BerichtIdentificatie><Identificatie>M-1</Identificatie><Dagtekening>2026-03-01</Dagtekening></BerichtIdentificatie>
    <XsdVersie><BasisschemaXsdVersie>1.0.0</BasisschemaXsdVersie><BerichtXsdVersie>1.0.0</BerichtXsdVersie></XsdVersie>
  </Header>
"#,
        code = kind.code()
    )
}

const CLIENT_START: &str = r#"  <Client>
    <Bsn>111222333</Bsn>
    <Geboortedatum><Datum>1950-01-31</Datum></Geboortedatum>
    <Geslacht>1</Geslacht>
    <Naam><Geslachtsnaam><Achternaam>Jansen &amp; Co</Achternaam></Geslachtsnaam><Voorletters>J</Voorletters></Naam>
"#;

fn wmo301() -> String {
    format!(
        r#"{}{CLIENT_START}    <Contactgegevens><Contact><Soort>01</Soort></Contact></Contactgegevens>
    <ToegewezenProducten>
      <ToegewezenProduct>
        <ToewijzingNummer>123</ToewijzingNummer>
        <Product><Categorie>02</Categorie><Code>02A01</Code></Product>
        <Toewijzingsdatum>2026-02-20</Toewijzingsdatum>
        <Toewijzingstijd>10:15:00</Toewijzingstijd>
        <Ingangsdatum>2026-03-01</Ingangsdatum>
        <Einddatum>2026-12-31</Einddatum>
        <Omvang><Volume>4</Volume><Eenheid>04</Eenheid><Frequentie>2</Frequentie></Omvang>
      </ToegewezenProduct>
      <ToegewezenProduct>
        <ToewijzingNummer>124</ToewijzingNummer>
        <Toewijzingsdatum>2026-02-20</Toewijzingsdatum>
        <Toewijzingstijd>10:15:00</Toewijzingstijd>
        <Ingangsdatum>2026-03-01</Ingangsdatum>
        <RedenWijziging>13</RedenWijziging>
        <Budget>50000</Budget>
      </ToegewezenProduct>
    </ToegewezenProducten>
  </Client>
</Bericht>
"#,
        header(MessageKind::Wmo301, "3_2", "3", "2")
    )
}

fn wmo305(product: &str) -> String {
    format!(
        "{}{CLIENT_START}    <StartProducten>\n      <StartProduct>{product}</StartProduct>\n    </StartProducten>\n  </Client>\n</Bericht>\n",
        header(MessageKind::Wmo305, "3_2", "3", "2")
    )
}

fn read(xml: &str) -> Result<Message, MessageError> {
    read_message(xml.as_bytes(), &MessageLimits::default())
}

#[test]
fn a_wmo301_is_read_into_typed_products() {
    let m = read(&wmo301()).expect("valid");
    assert_eq!(m.header.kind, MessageKind::Wmo301);
    assert_eq!(m.header.provider(), "98000001");
    assert_eq!(m.header.municipality(), "0363");
    assert_eq!(m.header.id, "M-1");
    assert_eq!(m.client.bsn, "111222333");
    let Body::Assignment(p) = m.body else {
        panic!("not an assignment")
    };
    assert_eq!(p.len(), 2);
    assert_eq!(p[0].number, 123);
    assert_eq!(
        p[0].product,
        Some(Product {
            category: "02".into(),
            code: Some("02A01".into())
        })
    );
    assert_eq!(p[0].end, NaiveDate::from_ymd_opt(2026, 12, 31));
    assert_eq!(p[0].extent.as_ref().map(|e| e.volume), Some(4));
    assert_eq!(p[1].product, None);
    assert_eq!(p[1].change_reason.as_deref(), Some(CHANGE_REASON_VOIDED));
    assert_eq!(p[1].budget, Some(50000));
}

#[test]
fn a_wmo305_without_assignment_number_is_read() {
    let m = read(&wmo305(
        "<Product><Categorie>02</Categorie></Product><ToewijzingIngangsdatum>2026-03-01</ToewijzingIngangsdatum><Begindatum>2026-03-03</Begindatum><StatusAanlevering>1</StatusAanlevering>",
    ))
    .expect("valid");
    let Body::Start(p) = m.body else {
        panic!("not a start")
    };
    assert_eq!(p[0].number, None);
    assert_eq!(p[0].status, DeliveryStatus::First);
    assert_eq!(p[0].assignment_start, NaiveDate::from_ymd_opt(2026, 3, 1));
}

#[test]
fn the_header_alone_can_be_read() {
    let h = read_header(wmo301().as_bytes(), &MessageLimits::default()).expect("header");
    assert_eq!(
        h.dagtekening,
        NaiveDate::from_ymd_opt(2026, 3, 1).expect("date")
    );
    // Reading only the header stops early, so a broken body does not matter.
    let broken = wmo301().replace("</Bericht>", "");
    assert!(read_header(broken.as_bytes(), &MessageLimits::default()).is_ok());
    assert!(matches!(read(&broken), Err(MessageError::Truncated(_))));
}

#[test]
fn the_envelope_holds_header_and_bsn() {
    let (h, bsn) = read_envelope(wmo301().as_bytes(), &MessageLimits::default()).expect("envelope");
    assert_eq!(h.id, "M-1");
    assert_eq!(bsn.as_deref(), Some("111222333"));
    // Reading stops after the BSN.
    let broken = wmo301().replace("</Bericht>", "");
    assert!(read_envelope(broken.as_bytes(), &MessageLimits::default()).is_ok());
    // The schema's order is required: Header, then Client.
    let swapped = wmo301()
        .replace("<Header>", "<Header_>")
        .replace("</Header>", "</Header_>");
    let err = read(&swapped).expect_err("no header first");
    assert!(err.to_string().contains("Client"), "{err}");
    let no_bsn = wmo301().replace("<Bsn>111222333</Bsn>", "");
    let (_, bsn) = read_envelope(no_bsn.as_bytes(), &MessageLimits::default()).expect("envelope");
    assert_eq!(bsn, None);
}

#[test]
fn another_release_is_rejected_naming_the_version_found() {
    let xml = wmo301().replace(
        &header(MessageKind::Wmo301, "3_2", "3", "2"),
        &header(MessageKind::Wmo301, "3_1", "3", "1"),
    );
    let err = read(&xml).expect_err("3.1");
    assert!(matches!(err, MessageError::Version { .. }));
    let text = err.to_string();
    assert!(text.contains("3.1"), "{text}");
    assert!(text.contains("3.2"), "{text}");
    // Right namespace, wrong header version.
    let xml = wmo301().replace(
        "<BerichtSubversie>2</BerichtSubversie>",
        "<BerichtSubversie>3</BerichtSubversie>",
    );
    let err = read(&xml).expect_err("3.3");
    assert!(err.to_string().contains("3.3"), "{err}");
}

#[test]
fn schema_problems_name_the_element_but_never_the_value() {
    let xml = wmo305("<Begindatum>2026-13-03</Begindatum><StatusAanlevering>1</StatusAanlevering>");
    let err = read(&xml).expect_err("bad date");
    let text = err.to_string();
    assert!(text.contains("StartProduct[1]/Begindatum"), "{text}");
    assert!(!text.contains("2026-13-03"), "{text}");
    assert!(!err.breaks_delivery());
    let xml = wmo305("<Begindatum>2026-03-03</Begindatum>");
    assert!(
        read(&xml)
            .expect_err("missing")
            .to_string()
            .contains("StatusAanlevering")
    );
    let xml = wmo301().replace("<Bsn>111222333</Bsn>", "<Bsn>11122233</Bsn>");
    let err = read(&xml).expect_err("short bsn").to_string();
    assert!(
        err.contains("Client/Bsn") && !err.contains("11122233"),
        "{err}"
    );
}

#[test]
fn broken_files_break_the_delivery() {
    let doctype = wmo301().replace(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>",
        "<?xml version=\"1.0\"?><!DOCTYPE x [<!ENTITY a \"b\">]>",
    );
    let err = read(&doctype).expect_err("doctype");
    assert!(err.breaks_delivery(), "{err}");
    let cut = &wmo301()[..wmo301().len() / 2];
    let err = read(cut).expect_err("cut");
    assert!(matches!(err, MessageError::Truncated(_)), "{err}");
    assert!(matches!(read(""), Err(MessageError::Truncated(_))));
    let err = read_message(
        wmo301().as_bytes(),
        &MessageLimits {
            max_bytes: 200,
            ..MessageLimits::default()
        },
    )
    .expect_err("too big");
    assert!(matches!(err, MessageError::Limit(_)), "{err}");
}

#[test]
fn debug_output_never_shows_the_bsn() {
    let m = read(&wmo301()).expect("valid");
    assert!(!format!("{m:?}").contains("111222333"));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn the_reader_never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = read_message(&bytes[..], &MessageLimits::default());
        let _ = read_header(&bytes[..], &MessageLimits::default());
        let _ = read_envelope(&bytes[..], &MessageLimits::default());
    }

    #[test]
    fn the_reader_never_panics_on_damaged_messages(cut in 0usize..2000, at in 0usize..2000, junk in "[<>&/a-zA-Z0-9;#\"' ]{0,12}") {
        let mut xml = wmo301();
        let at = at.min(xml.len());
        let at = (0..=at).rev().find(|i| xml.is_char_boundary(*i)).unwrap_or(0);
        xml.insert_str(at, &junk);
        let cut = cut.min(xml.len());
        let cut = (0..=cut).rev().find(|i| xml.is_char_boundary(*i)).unwrap_or(0);
        let _ = read(&xml[cut..]);
        let _ = read(&xml[..xml.len() - cut]);
    }

    #[test]
    fn any_start_date_round_trips(y in 1900i32..2100, m in 1u32..=12, d in 1u32..=28) {
        let date = NaiveDate::from_ymd_opt(y, m, d).expect("valid date");
        let xml = wmo305(&format!("<ToewijzingNummer>7</ToewijzingNummer><Begindatum>{}</Begindatum><StatusAanlevering>2</StatusAanlevering>", date.format("%Y-%m-%d")));
        let msg = read(&xml).expect("valid");
        let Body::Start(p) = msg.body else { panic!("not a start") };
        prop_assert_eq!(p[0].start, date);
        prop_assert_eq!(p[0].number, Some(7));
    }
}
