//! Kind `fhir`: a FHIR R4 server's `EpisodeOfCare` resources with their patients, care
//! teams, practitioners, organisations and related persons, through the shared runner
//! (`schemas/formats/fhir-r4.md`).
//!
//! `location` is the FHIR service base URL. `[source.paging]` sets `_count` (at most 1000)
//! and the page-body cap; `[source.http]` the credentials; `[source.fhir]`
//! `organization_system` which `Organization.identifier` is mapped.

use matchpoint_connectors::fhir::{FhirConnector, FhirSettings};

use super::paged::{http_client, open_paged};
use super::{OpenContext, Opened};

/// Opens one run: a full search, or `_lastUpdated=gt<cursor>` for an incremental run.
pub fn open(cx: &OpenContext<'_>) -> Result<Option<Opened>, String> {
    let s = cx.source;
    let settings = FhirSettings {
        base_url: s.location.clone(),
        page_size: s.paging.page_size,
        max_page_bytes: s.paging.max_page_bytes,
        organization_system: s.fhir.organization_system.clone(),
    };
    let connector = FhirConnector::new(http_client(s)?, settings).map_err(|e| e.to_string())?;
    Ok(Some(open_paged(cx, connector)))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use chrono::NaiveDate;
    use matchpoint_connectors::fhir::bundle::{DecodeOptions, decode_bundle};
    use matchpoint_mapping::{Mapper, MappingSpec, RejectReason};
    use matchpoint_schemas::{
        Bsn, InvolvementStatus, KeyPurpose, LifeDomain, MasterKey, Registry, RelationKind,
    };

    use crate::generate::ORGANISATIONS_TOML;

    const GOLDEN: &str = include_str!("../../../schemas/formats/examples/fhir-r4-bundle.json");

    /// The documented example page, through the okc-5 mapping: the canonical involvements.
    #[test]
    fn the_golden_bundle_maps_to_canonical_involvements() {
        let spec = MappingSpec::parse(
            include_str!("../../../deploy/mappings/okc-5.toml"),
            "okc-5.toml",
        )
        .expect("okc-5 mapping");
        let registry = Registry::parse(ORGANISATIONS_TOML, "organisations.toml").expect("registry");
        let key = MasterKey::from_secret("k1", &[3u8; 32]).expect("key");
        let pseudonymiser = key.pseudonymiser(KeyPurpose::Index);
        let mapper = Mapper::new("okc-5", spec, Arc::new(registry), pseudonymiser.clone());
        let options = DecodeOptions {
            organization_system: Some(
                "https://matchpoint.example/fhir/NamingSystem/organisation".into(),
            ),
            ..DecodeOptions::default()
        };
        let page = decode_bundle(GOLDEN.as_bytes(), 1, 0, &options).expect("page");
        let pseudo = |bsn: &str| pseudonymiser.pseudonymise(&Bsn::parse(bsn).expect("bsn"));
        let date = |s: &str| NaiveDate::parse_from_str(s, "%Y-%m-%d").expect("date");

        let first = page.records[0].as_ref().expect("eoc-1 decodes");
        let a = mapper.map(first).expect("eoc-1 maps");
        assert_eq!(a.source_record_id, "eoc-1");
        assert_eq!(a.person, pseudo("123456782"));
        assert_eq!(a.organisation_code, "OKC-NOORD");
        assert_eq!(a.life_domain, LifeDomain::YouthHealth);
        assert_eq!(a.status, InvolvementStatus::Active);
        assert_eq!(a.team.as_deref(), Some("Team Noord-West"));
        assert_eq!(
            a.goal.as_deref(),
            Some("Volgen van groei en ontwikkeling van het kind")
        );
        assert_eq!(a.contact.name, "A. de Wit");
        assert_eq!(a.contact.role.as_deref(), Some("jeugdverpleegkundige"));
        assert_eq!(a.contact.phone.as_deref(), Some("020-5550101"));
        assert_eq!(a.start_date, date("2024-01-05"));
        assert_eq!(a.end_date, None);
        assert!(!a.coordinator);
        assert_eq!(a.relations.len(), 1);
        assert_eq!(a.relations[0].kind, RelationKind::Parent);
        assert_eq!(a.relations[0].other, pseudo("111222333"));
        // Born 2015 and under 23 at the start: purged 23 years after birth.
        assert_eq!(a.purge_after, Some(date("2038-03-01")));

        let second = page.records[1].as_ref().expect("eoc-2 decodes");
        let b = mapper.map(second).expect("eoc-2 maps");
        assert_eq!(b.person, pseudo("111222333"));
        assert_eq!(b.organisation_code, "MADI-SHV");
        assert_eq!(b.life_domain, LifeDomain::Debt);
        assert_eq!(b.status, InvolvementStatus::Ended);
        assert!(
            b.coordinator,
            "careManager makes the organisation coordinator"
        );
        assert_eq!(b.start_date, date("2023-02-01"));
        assert_eq!(b.end_date, Some(date("2024-06-30")));
        assert_eq!(b.contact.name, "M. Bakker");
        assert_eq!(b.contact.email, None);
        // The inactive RelatedPerson (the former spouse) is not a relation.
        assert_eq!(b.relations.len(), 1);
        assert_eq!(b.relations[0].kind, RelationKind::Child);
        assert_eq!(b.relations[0].other, pseudo("123456782"));

        // The episode whose patient was not included is quarantined by the connector.
        assert!(page.records[2].is_err());
        assert!(page.records[3].is_err());
    }

    /// A record without a BSN identifier is rejected by the mapping with the path.
    #[test]
    fn a_patient_without_a_bsn_is_rejected_at_patient_bsn() {
        let spec = MappingSpec::parse(
            include_str!("../../../deploy/mappings/okc-5.toml"),
            "okc-5.toml",
        )
        .expect("okc-5 mapping");
        let registry = Registry::parse(ORGANISATIONS_TOML, "organisations.toml").expect("registry");
        let key = MasterKey::from_secret("k1", &[3u8; 32]).expect("key");
        let mapper = Mapper::new(
            "okc-5",
            spec,
            Arc::new(registry),
            key.pseudonymiser(KeyPurpose::Index),
        );
        let body = GOLDEN.replace(
            "http://fhir.nl/fhir/NamingSystem/bsn\", \"value\": \"123456782\" }\n        ],",
            "urn:other\", \"value\": \"123456782\" }\n        ],",
        );
        assert_ne!(body, GOLDEN, "the test edit applies");
        let page = decode_bundle(body.as_bytes(), 1, 0, &DecodeOptions::default()).expect("page");
        let raw = page.records[0].as_ref().expect("decodes");
        let err = mapper.map(raw).expect_err("no BSN");
        assert_eq!(err.field.as_deref(), Some("patient.bsn"));
        assert_eq!(err.reason, RejectReason::MissingBsn);
    }
}

#[cfg(test)]
mod config_tests {
    use std::path::Path;

    use crate::config::{Config, SourceKind};

    fn parse(extra: &str) -> Result<Config, String> {
        let text = format!(
            "[[source]]\nname = \"okc-5\"\nkind = \"fhir\"\n\
             location = \"http://127.0.0.1:1/okc-5/fhir\"\nmode = \"incremental\"\n\
             schedule = \"0 10 * * * *\"\nmapping = \"mappings/okc-5.toml\"\n{extra}"
        );
        let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy");
        Config::parse(&text, "m.toml", &deploy).map_err(|e| e.to_string())
    }

    #[test]
    fn a_fhir_source_with_its_table_parses() {
        let cfg = parse("[source.fhir]\norganization_system = \"urn:x\"\n").expect("valid");
        assert_eq!(cfg.sources[0].kind, SourceKind::Fhir);
        assert_eq!(
            cfg.sources[0].fhir.organization_system.as_deref(),
            Some("urn:x")
        );
        assert!(parse("").is_ok(), "[source.fhir] is optional");
    }

    #[test]
    fn fhir_settings_are_checked_with_their_key() {
        let err = parse("[source.paging]\npage_size = 2000\n").expect_err("too large");
        assert!(
            err.contains("paging.page_size must be at most 1000"),
            "{err}"
        );
        let err = parse("[source.fhir]\norganisation_system = \"urn:x\"\n").expect_err("typo");
        assert!(err.contains("m.toml:9"), "{err}");
        let err = Config::parse(
            "[[source]]\nname = \"okc-5\"\nkind = \"fhir\"\nlocation = \"fhir/\"\n\
             mode = \"full\"\nschedule = \"0 10 * * * *\"\nmapping = \"x.toml\"\n",
            "m.toml",
            Path::new("."),
        )
        .expect_err("not a URL")
        .to_string();
        assert!(err.contains("must be an http:// or https:// URL"), "{err}");
    }
}
