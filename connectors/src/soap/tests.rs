use proptest::prelude::*;

use super::*;

const PAGE: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/" xmlns:m="urn:matchpoint:okc6:1">
  <soap:Header><m:trace>abc</m:trace></soap:Header>
  <soap:Body>
    <m:GetInvolvementsResponse total="7" nextPageToken="tok-2">
      <m:involvement id="OKC6-1" updated="2026-11-02T02:00:00Z">
        <client><bsn>123456782</bsn><naam>Jan &amp; Piet</naam></client>
        <organisatie code="OKC-NOORD"/>
        <periode begin="2024-01-05"/>
        <relaties><relatie soort="ouder" bsn="111222333"/><relatie soort="kind" bsn="444555666"/></relaties>
      </m:involvement>
      <m:involvement updated="2026-11-03T02:00:00Z"><team>x</team></m:involvement>
      <m:involvement id="OKC6-3" updated="2026-11-01T02:00:00Z"><team>&bogus;</team></m:involvement>
    </m:GetInvolvementsResponse>
  </soap:Body>
</soap:Envelope>
"#;

fn parse(text: &str) -> Result<ParsedPage, DeliveryError> {
    parse_page(text.as_bytes(), "test", &SoapFormat::default(), 10, 100)
}

#[test]
fn a_page_is_read_into_records_groups_and_paging_attributes() {
    let p = parse(PAGE).expect("page");
    assert_eq!(p.total, Some(7));
    assert_eq!(p.next.as_deref(), Some("tok-2"));
    assert_eq!(p.max_updated.as_deref(), Some("2026-11-03T02:00:00Z"));
    assert_eq!(p.records.len(), 3);
    let r = p.records[0].as_ref().expect("good record");
    assert_eq!(r.record_id.as_deref(), Some("OKC6-1"));
    assert_eq!(r.position.index, 11);
    assert!(r.position.byte_offset > 100);
    assert_eq!(r.field("client/bsn"), Some("123456782"));
    assert_eq!(r.field("client/naam"), Some("Jan & Piet"));
    assert_eq!(r.field("organisatie/@code"), Some("OKC-NOORD"));
    assert_eq!(r.field("periode/@begin"), Some("2024-01-05"));
    assert_eq!(r.groups.len(), 2);
    assert_eq!(r.groups[0].path, "relaties/relatie");
    assert_eq!(r.groups[0].field("@soort"), Some("ouder"));
    assert_eq!(r.groups[1].field("@bsn"), Some("444555666"));
    let no_id = p.records[1].as_ref().expect_err("no id");
    assert!(no_id.reason.contains("no id"));
    let entity = p.records[2].as_ref().expect_err("entity");
    assert_eq!(entity.record_id.as_deref(), Some("OKC6-3"));
    assert!(entity.reason.contains("entity"));
}

#[test]
fn a_fault_is_reported_with_code_and_string() {
    let text = r#"<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"><soap:Body>
      <soap:Fault><faultcode>soap:Server</faultcode><faultstring>database offline</faultstring></soap:Fault>
      </soap:Body></soap:Envelope>"#;
    let p = parse(text).expect("fault page");
    assert_eq!(
        p.fault,
        Some(("soap:Server".into(), "database offline".into()))
    );
}

#[test]
fn a_cut_off_page_is_truncated() {
    for cut in [
        PAGE.len() / 2,
        PAGE.len() - 20,
        PAGE.find("</soap:Body>").unwrap(),
    ] {
        let err = parse(&PAGE[..cut]).expect_err("truncated");
        assert!(
            matches!(err, DeliveryError::Truncated { .. }),
            "cut at {cut}: {err}"
        );
    }
}

#[test]
fn doctype_wrong_elements_and_limits_are_refused() {
    let doctype = "<!DOCTYPE x [<!ENTITY a \"b\">]><soap:Envelope/>";
    assert!(parse(doctype).unwrap_err().to_string().contains("DOCTYPE"));
    let wrong = "<soap:Envelope><soap:Body><Other/></soap:Body></soap:Envelope>";
    assert!(matches!(
        parse(wrong).unwrap_err(),
        DeliveryError::Malformed { .. }
    ));
    let garbage = "%%% this is not a page %%%";
    assert!(parse(garbage).is_err());
    let deep = format!(
        "<Envelope><Body><GetInvolvementsResponse><involvement id=\"1\">{}{}</involvement></GetInvolvementsResponse></Body></Envelope>",
        "<a>".repeat(20),
        "</a>".repeat(20)
    );
    assert!(matches!(
        parse(&deep).unwrap_err(),
        DeliveryError::Limit { .. }
    ));
    let fmt = SoapFormat {
        max_element_bytes: 64,
        ..SoapFormat::default()
    };
    let big = format!(
        "<Envelope><Body><GetInvolvementsResponse><involvement id=\"1\"><t>{}</t></involvement></GetInvolvementsResponse></Body></Envelope>",
        "x".repeat(1000)
    );
    let err = parse_page(big.as_bytes(), "t", &fmt, 0, 0).unwrap_err();
    assert!(matches!(err, DeliveryError::Limit { .. }), "{err}");
}

#[test]
fn the_request_envelope_escapes_its_values() {
    let e = envelope(&SoapFormat::default(), Some("a<b"), Some("t&1"));
    assert!(e.contains("<m:since>a&lt;b</m:since>"));
    assert!(e.contains("<m:pageToken>t&amp;1</m:pageToken>"));
    assert!(e.contains("<m:pageSize>500</m:pageSize>"));
}

proptest! {
    /// No input makes the parser panic.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        let _ = parse_page(&bytes[..], "p", &SoapFormat::default(), 0, 0);
    }

    /// Any cut of a valid page is either the whole page or an error, never a silent short page.
    #[test]
    fn every_cut_of_a_page_fails(cut in 0usize..PAGE.len() - 1) {
        let end = PAGE.trim_end().len();
        prop_assume!(cut < end);
        prop_assert!(parse(&PAGE[..cut]).is_err());
    }
}
