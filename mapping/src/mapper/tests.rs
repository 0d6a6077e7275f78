//! Mapper behaviour on good and bad records.

use super::*;
use matchpoint_schemas::{EndReason, KeyPurpose, LifeDomain, MasterKey, RawGroup, RelationKind};
use proptest::prelude::*;

const REGISTRY: &str = r#"
[[organisation]]
code = "OKC-NOORD"
name = "Ouder- en Kindcentrum Noord"
kind = "youth_health"
source_codes = { okc-2 = ["OKCN"] }
"#;

fn mapper() -> Mapper {
    let spec = MappingSpec::parse(
        include_str!("../../../deploy/mappings/okc-2.toml"),
        "okc-2.toml",
    )
    .expect("spec");
    let registry = Arc::new(Registry::parse(REGISTRY, "reg").expect("registry"));
    let key = MasterKey::from_secret("k1", &[9u8; 32]).expect("key");
    Mapper::new(
        "okc-2",
        spec,
        registry,
        key.pseudonymiser(KeyPurpose::Index),
    )
}

fn good() -> RawRecord {
    let f = |p: &str, v: &str| (p.to_owned(), v.to_owned());
    RawRecord {
        record_id: Some("R1".into()),
        fields: vec![
            f("client/bsn", "123456782"),
            f("client/naam", "Test Persoon"),
            f("client/geboortedatum", "2015-03-01"),
            f("organisatie/@code", "OKCN"),
            f("domein", "JGZ"),
            f("contactpersoon/naam", "A. de Vries"),
            f("periode/@begin", "2024-01-05"),
            f("periode/@eind", "2025-02-01"),
            f("status", "afgesloten"),
            f("regisseur", "ja"),
        ],
        groups: vec![RawGroup {
            path: "relaties/relatie".into(),
            fields: vec![f("@soort", "ouder"), f("@bsn", "111222333")],
        }],
        ..RawRecord::default()
    }
}

fn with(mut r: RawRecord, path: &str, value: Option<&str>) -> RawRecord {
    r.fields.retain(|(p, _)| p != path);
    if let Some(v) = value {
        r.fields.push((path.to_owned(), v.to_owned()));
    }
    r
}

#[test]
fn a_good_record_maps_to_the_canonical_involvement() {
    let inv = mapper().map(&good()).expect("maps");
    assert_eq!(inv.organisation_code, "OKC-NOORD");
    assert_eq!(inv.life_domain, LifeDomain::YouthHealth);
    assert_eq!(inv.status, InvolvementStatus::Ended);
    assert!(inv.coordinator);
    assert_eq!(inv.relations.len(), 1);
    assert_eq!(inv.relations[0].kind, RelationKind::Parent);
    // min(end + 24 months, birth + 23 years)
    assert_eq!(inv.purge_after, NaiveDate::from_ymd_opt(2027, 2, 1));
}

#[test]
fn the_age_limit_applies_to_youth_records_only() {
    let m = mapper();
    let adult = with(
        with(good(), "client/geboortedatum", Some("1980-05-01")),
        "periode/@eind",
        None,
    );
    let adult = with(adult, "status", Some("actief"));
    assert_eq!(m.map(&adult).expect("maps").purge_after, None);
    let child = with(
        with(good(), "periode/@eind", None),
        "status",
        Some("actief"),
    );
    assert_eq!(
        m.map(&child).expect("maps").purge_after,
        NaiveDate::from_ymd_opt(2038, 3, 1)
    );
}

#[test]
fn bad_records_are_rejected_with_field_and_reason_code() {
    let m = mapper();
    let cases = [
        (
            with(good(), "client/bsn", Some("123456789")),
            "client/bsn",
            "invalid_bsn",
        ),
        (
            with(good(), "client/bsn", None),
            "client/bsn",
            "missing_field",
        ),
        (
            with(good(), "contactpersoon/naam", None),
            "contactpersoon/naam",
            "missing_field",
        ),
        (
            with(good(), "domein", Some("XYZ")),
            "domein",
            "unknown_code",
        ),
        (
            with(good(), "periode/@begin", Some("05-01-2024")),
            "periode/@begin",
            "bad_date",
        ),
        (
            with(good(), "periode/@eind", Some("2020-01-01")),
            "periode/@eind",
            "end_before_start",
        ),
        (
            with(good(), "organisatie/@code", Some("NOPE")),
            "organisatie/@code",
            "unknown_code",
        ),
    ];
    for (rec, field, code) in cases {
        let rej = m.map(&rec).expect_err(code);
        assert_eq!(rej.field.as_deref(), Some(field), "{code}");
        assert_eq!(rej.reason.code(), code);
        assert!(
            !rej.reason.to_string().contains("12345678"),
            "{}",
            rej.reason
        );
    }
}

#[test]
fn the_same_person_gets_the_same_pseudonym_in_every_format_of_the_bsn() {
    let m = mapper();
    let a = m.map(&good()).expect("maps");
    let b = m
        .map(&with(good(), "client/bsn", Some("12345.67.82")))
        .expect("maps");
    assert_eq!(a.person, b.person);
    assert_eq!(a.content_hash(), b.content_hash());
}

proptest! {
    #[test]
    fn mapping_never_panics_on_arbitrary_field_values(
        values in proptest::collection::vec("\\PC{0,30}", 10),
    ) {
        let m = mapper();
        let mut r = good();
        for (slot, v) in r.fields.iter_mut().zip(values) {
            slot.1 = v;
        }
        let _ = m.map(&r);
    }
}

#[test]
fn a_mapped_shielded_flag_marks_the_involvement_and_an_unknown_code_is_rejected() {
    let text = include_str!("../../../deploy/mappings/okc-2.toml").replace(
        "[fields]\n",
        "[fields]\nshielded = \"client/@afgeschermd\"\n",
    ) + "\n[codes.shielded]\nja = true\nnee = false\n";
    let spec = MappingSpec::parse(&text, "okc-2.toml").expect("spec");
    let registry = Arc::new(Registry::parse(REGISTRY, "reg").expect("registry"));
    let key = MasterKey::from_secret("k1", &[9u8; 32]).expect("key");
    let m = Mapper::new(
        "okc-2",
        spec,
        registry,
        key.pseudonymiser(KeyPurpose::Index),
    );
    assert!(
        !m.map(&good()).expect("maps").shielded,
        "absent: not shielded"
    );
    let shielded = with(good(), "client/@afgeschermd", Some("ja"));
    assert!(m.map(&shielded).expect("maps").shielded);
    let unknown = with(good(), "client/@afgeschermd", Some("misschien"));
    let rejection = m.map(&unknown).expect_err("unknown code");
    assert_eq!(rejection.field.as_deref(), Some("client/@afgeschermd"));
    // The unshielded mapping ignores the field; a mapped field needs its code table.
    assert!(!mapper().map(&shielded).expect("maps").shielded);
    let missing = include_str!("../../../deploy/mappings/okc-2.toml").replace(
        "[fields]\n",
        "[fields]\nshielded = \"client/@afgeschermd\"\n",
    );
    let err = MappingSpec::parse(&missing, "okc-2.toml").expect_err("needs [codes.shielded]");
    assert!(err.to_string().contains("codes.shielded"), "{err}");
}

#[test]
fn a_mapped_end_reason_carries_its_description_and_an_unknown_code_is_rejected() {
    let field = "[fields]\nend_reason = \"periode/@reden\"\n";
    let text = include_str!("../../../deploy/mappings/okc-2.toml").replace("[fields]\n", field)
        + "\n[codes.end_reason]\n\"19\" = \"Levering volgens plan beeindigd\"\n";
    let spec = MappingSpec::parse(&text, "okc-2.toml").expect("spec");
    let registry = Arc::new(Registry::parse(REGISTRY, "reg").expect("registry"));
    let key = MasterKey::from_secret("k1", &[9u8; 32]).expect("key");
    let m = Mapper::new(
        "okc-2",
        spec,
        registry,
        key.pseudonymiser(KeyPurpose::Index),
    );
    let plain = m.map(&good()).expect("maps");
    assert_eq!(plain.end_reason, None, "absent: no end reason");
    let ended = m
        .map(&with(good(), "periode/@reden", Some("19")))
        .expect("maps");
    assert_eq!(
        ended.end_reason,
        Some(EndReason {
            code: "19".into(),
            description: "Levering volgens plan beeindigd".into(),
        })
    );
    // The reason is part of what tells a changed record from an unchanged one.
    assert_ne!(plain.content_hash(), ended.content_hash());
    let unknown = with(good(), "periode/@reden", Some("99"));
    let rejection = m.map(&unknown).expect_err("unknown code");
    assert_eq!(rejection.field.as_deref(), Some("periode/@reden"));
    assert!(rejection.reason.to_string().contains("end_reason"));
    // A mapped field needs its code table, with a description per code.
    let missing = include_str!("../../../deploy/mappings/okc-2.toml").replace("[fields]\n", field);
    let err = MappingSpec::parse(&missing, "okc-2.toml").expect_err("needs [codes.end_reason]");
    assert!(err.to_string().contains("codes.end_reason"), "{err}");
    let empty = missing + "\n[codes.end_reason]\n\"19\" = \" \"\n";
    let err = MappingSpec::parse(&empty, "okc-2.toml").expect_err("empty description");
    assert!(err.to_string().contains("empty description"), "{err}");
}
