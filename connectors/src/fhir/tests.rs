use std::time::Duration;

use proptest::prelude::*;
use serde_json::{Value, json};

use super::bundle::{BundleError, DecodeOptions, decode_bundle};
use super::*;

const GOLDEN: &str = include_str!("../../../schemas/formats/examples/fhir-r4-bundle.json");
const GOLDEN_RECORDS: &str =
    include_str!("../../../schemas/formats/examples/fhir-r4-bundle.records.json");

fn options() -> DecodeOptions {
    DecodeOptions {
        max_entries: 100,
        organization_system: Some(
            "https://matchpoint.example/fhir/NamingSystem/organisation".into(),
        ),
    }
}

/// The golden page decodes to exactly the stored records: matches resolved against the
/// included resources, quarantine for the episode whose patient is missing and the one
/// without an id, paging data from the Bundle.
#[test]
fn the_golden_bundle_decodes_to_the_golden_records() {
    let page = decode_bundle(GOLDEN.as_bytes(), 1, 0, &options()).expect("decodes");
    let got: Vec<Value> = page
        .records
        .iter()
        .map(|r| match r {
            Ok(rec) => json!({ "ok": rec }),
            Err(e) => json!({ "quarantine": {
                "record_id": e.record_id, "index": e.position.index,
                "field": e.field, "reason": e.reason } }),
        })
        .collect();
    let expected: Vec<Value> = serde_json::from_str(GOLDEN_RECORDS).expect("golden json");
    assert_eq!(
        got,
        expected,
        "decoded records differ from the golden file; got:\n{}",
        serde_json::to_string_pretty(&got).unwrap_or_default()
    );
    assert_eq!(page.total, Some(4));
    assert!(
        page.next
            .as_deref()
            .is_some_and(|n| n.ends_with("_offset=4"))
    );
    assert_eq!(
        page.snapshot.map(|s| s.text).as_deref(),
        Some("2026-11-23T02:00:00Z")
    );
    // 2026-11-21T09:30:00Z (eoc-3, quarantined) is not a delivered record; the largest
    // delivered one is eoc-2's.
    assert_eq!(
        page.max_last_updated.map(|s| s.text).as_deref(),
        Some("2026-11-21T09:00:00Z")
    );
    assert_eq!(page.warnings, vec!["warning `processing`".to_owned()]);
}

#[test]
fn the_golden_bundle_never_shows_patient_names() {
    let page = decode_bundle(GOLDEN.as_bytes(), 1, 0, &options()).expect("decodes");
    let text = format!("{:?}", page.records);
    assert!(!text.contains("Kuipers"), "a patient name leaked: {text}");
    assert!(!text.contains("free text"), "diagnostics leaked");
}

#[test]
fn records_are_numbered_from_the_given_index() {
    let page = decode_bundle(GOLDEN.as_bytes(), 41, 7000, &options()).expect("decodes");
    let positions: Vec<(u64, u64)> = page
        .records
        .iter()
        .map(|r| match r {
            Ok(r) => (r.position.index, r.position.byte_offset),
            Err(e) => (e.position.index, e.position.byte_offset),
        })
        .collect();
    assert_eq!(
        positions,
        vec![(41, 7000), (42, 7000), (43, 7000), (44, 7000)]
    );
}

#[test]
fn an_operation_outcome_is_an_error_with_its_codes_and_without_its_diagnostics() {
    let body = json!({
        "resourceType": "OperationOutcome",
        "issue": [{
            "severity": "error", "code": "invalid",
            "details": { "coding": [{ "system": "x", "code": "MSG_PARAM_INVALID" }] },
            "diagnostics": "Invalid _lastUpdated for patient 123456782"
        }]
    })
    .to_string();
    let err = decode_bundle(body.as_bytes(), 1, 0, &options()).expect_err("outcome");
    let BundleError::OperationOutcome(summary) = &err else {
        panic!("expected an OperationOutcome error, got {err:?}");
    };
    assert!(summary.contains("error `invalid`"), "{summary}");
    assert!(summary.contains("MSG_PARAM_INVALID"), "{summary}");
    assert!(!err.to_string().contains("123456782"), "{err}");
}

#[test]
fn codes_that_are_not_tokens_are_not_echoed() {
    let body = json!({
        "resourceType": "OperationOutcome",
        "issue": [{ "severity": "error", "code": "Jan Kuipers 123456782" }]
    })
    .to_string();
    let err = decode_bundle(body.as_bytes(), 1, 0, &options()).expect_err("outcome");
    assert!(!err.to_string().contains("Kuipers"), "{err}");
}

#[test]
fn pages_that_are_not_searchset_bundles_fail_the_page() {
    for body in [
        "",
        "[]",
        r#"{"resourceType":"Patient"}"#,
        r#"{"resourceType":"Bundle","type":"transaction"}"#,
        r#"{"resourceType":"Bundle"}"#,
        r#"{"resourceType":"Bundle","type":"searchset","entry":{}}"#,
        r#"{"resourceType":"Bundle","type":"searchset","total":-1}"#,
        r#"{"resourceType":"Bundle","type":"searchset","link":[{"relation":"next"}]}"#,
    ] {
        let r = decode_bundle(body.as_bytes(), 1, 0, &options());
        assert!(matches!(r, Err(BundleError::Malformed(_))), "{body}: {r:?}");
    }
}

#[test]
fn a_cut_off_page_is_truncated_not_malformed() {
    let half = &GOLDEN.as_bytes()[..GOLDEN.len() / 2];
    let r = decode_bundle(half, 1, 0, &options());
    assert!(matches!(r, Err(BundleError::Truncated)), "{r:?}");
    assert!(matches!(
        decode_bundle(b"{", 1, 0, &options()),
        Err(BundleError::Truncated)
    ));
}

#[test]
fn an_empty_searchset_is_a_quiet_page() {
    let body = r#"{"resourceType":"Bundle","type":"searchset","total":0}"#;
    let page = decode_bundle(body.as_bytes(), 1, 0, &options()).expect("decodes");
    assert!(page.records.is_empty());
    assert_eq!(page.total, Some(0));
    assert!(page.next.is_none());
}

#[test]
fn too_many_entries_fail_the_page() {
    let entries: Vec<Value> = (0..101)
        .map(|i| json!({"resource": {"resourceType": "Patient", "id": format!("p{i}")}}))
        .collect();
    let body = json!({"resourceType":"Bundle","type":"searchset","entry": entries}).to_string();
    let r = decode_bundle(body.as_bytes(), 1, 0, &options());
    assert!(matches!(r, Err(BundleError::TooManyEntries(100))), "{r:?}");
}

#[test]
fn retry_after_takes_seconds_and_http_dates() {
    assert_eq!(parse_retry_after("7"), Some(Duration::from_secs(7)));
    assert_eq!(parse_retry_after(" 0 "), Some(Duration::ZERO));
    assert_eq!(
        parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT"),
        Some(Duration::ZERO)
    );
    assert_eq!(parse_retry_after("soon"), None);
}

fn client() -> HttpClient {
    HttpClient::new(
        "fhir test",
        Duration::from_secs(5),
        crate::http::Auth::None,
        1 << 20,
    )
    .expect("client")
}

fn connector() -> FhirConnector {
    FhirConnector::new(
        client(),
        FhirSettings {
            base_url: "http://127.0.0.1:9/fhir/".into(),
            page_size: 25,
            ..FhirSettings::default()
        },
    )
    .expect("connector")
}

#[test]
fn the_search_asks_for_the_includes_and_the_cursor() {
    let c = connector();
    let full = c.search_url(None).to_string();
    assert!(
        full.starts_with("http://127.0.0.1:9/fhir/EpisodeOfCare?_count=25&_sort=_lastUpdated&"),
        "{full}"
    );
    assert!(!full.contains("_lastUpdated=gt"), "{full}");
    assert!(full.contains("_include=EpisodeOfCare%3Apatient"), "{full}");
    assert!(
        full.contains("_revinclude%3Aiterate=RelatedPerson%3Apatient"),
        "{full}"
    );
    let inc = c.search_url(Some("2026-11-20T10:15:00+01:00")).to_string();
    assert!(
        inc.contains("_lastUpdated=gt2026-11-20T10%3A15%3A00%2B01%3A00"),
        "{inc}"
    );
}

#[test]
fn a_next_link_to_another_server_is_refused_without_a_request() {
    let mut c = connector();
    for link in [
        "http://other.example/fhir/EpisodeOfCare?page=2",
        "https://127.0.0.1:9/fhir/EpisodeOfCare?page=2",
        "http://127.0.0.1:10/fhir/EpisodeOfCare?page=2",
    ] {
        let err = c
            .fetch(&PageRequest::Next(link.into()))
            .expect_err("refused");
        assert!(
            matches!(err, FetchError::Fatal(DeliveryError::Malformed { .. })),
            "{link}: {err:?}"
        );
        assert!(err.to_string().contains("another server"), "{err}");
    }
}

#[test]
fn bad_settings_are_refused_with_what_to_do() {
    for (base, size, needle) in [
        ("ftp://x/fhir", 10, "http"),
        ("http://user:hunter2@x/fhir", 10, "credentials"),
        ("not a url", 10, "not a URL"),
        ("http://x/fhir", 0, "page size"),
        ("http://x/fhir", MAX_PAGE_SIZE + 1, "page size"),
    ] {
        let err = FhirConnector::new(
            client(),
            FhirSettings {
                base_url: base.into(),
                page_size: size,
                ..FhirSettings::default()
            },
        )
        .expect_err("refused")
        .to_string();
        assert!(err.contains(needle), "{base}: {err}");
        assert!(!err.contains("hunter2"), "{err}");
    }
}

#[test]
fn a_closed_port_is_transient() {
    let mut c = connector();
    let err = c
        .fetch(&PageRequest::First { since: None })
        .expect_err("nothing listens on port 9");
    assert!(matches!(err, FetchError::Transient { .. }), "{err:?}");
}

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        prop_oneof![
            Just("Bundle".to_owned()),
            Just("searchset".to_owned()),
            Just("EpisodeOfCare".to_owned()),
            Just("Patient".to_owned()),
            Just("Patient/p1".to_owned()),
            Just("CareTeam/c1".to_owned()),
            Just("Practitioner/x".to_owned()),
            Just("RelatedPerson".to_owned()),
            Just("match".to_owned()),
            Just("2026-11-20T10:15:00Z".to_owned()),
            ".{0,12}",
        ]
        .prop_map(Value::String),
    ];
    leaf.prop_recursive(5, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec(
                (
                    prop_oneof![
                        Just("resourceType".to_owned()),
                        Just("type".to_owned()),
                        Just("entry".to_owned()),
                        Just("resource".to_owned()),
                        Just("search".to_owned()),
                        Just("mode".to_owned()),
                        Just("id".to_owned()),
                        Just("patient".to_owned()),
                        Just("reference".to_owned()),
                        Just("team".to_owned()),
                        Just("participant".to_owned()),
                        Just("member".to_owned()),
                        Just("identifier".to_owned()),
                        Just("name".to_owned()),
                        Just("meta".to_owned()),
                        Just("lastUpdated".to_owned()),
                        Just("period".to_owned()),
                        Just("start".to_owned()),
                        Just("link".to_owned()),
                        Just("total".to_owned()),
                        "[a-z]{1,6}",
                    ],
                    inner
                ),
                0..6
            )
            .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Any JSON at all: an error or a page, never a panic.
    #[test]
    fn the_decoder_never_panics_on_arbitrary_json(v in arb_json()) {
        let _ = decode_bundle(v.to_string().as_bytes(), 1, 0, &options());
    }

    /// Arbitrary entries inside a valid searchset: every matched episode gives exactly one
    /// result, numbered in order.
    #[test]
    fn every_match_gives_one_result(entries in prop::collection::vec(arb_json(), 0..8)) {
        let body = json!({"resourceType":"Bundle","type":"searchset","entry": entries}).to_string();
        if let Ok(page) = decode_bundle(body.as_bytes(), 1, 0, &options()) {
            for (i, r) in page.records.iter().enumerate() {
                let index = match r { Ok(r) => r.position.index, Err(e) => e.position.index };
                prop_assert_eq!(index, i as u64 + 1);
            }
        }
    }

    /// Arbitrary bytes, including cut-off golden pages.
    #[test]
    fn the_decoder_never_panics_on_bytes(
        bytes in prop::collection::vec(any::<u8>(), 0..256),
        cut in 0usize..GOLDEN.trim_end().len(),
    ) {
        let _ = decode_bundle(&bytes, 1, 0, &options());
        let r = decode_bundle(&GOLDEN.as_bytes()[..cut], 1, 0, &options());
        prop_assert!(
            matches!(r, Err(BundleError::Truncated) | Err(BundleError::Malformed(_))),
            "{:?}", r
        );
        if cut > 0 {
            prop_assert!(matches!(r, Err(BundleError::Truncated)), "{:?}", r);
        }
    }
}

/// One generated episode with its patient, organisation, team and practitioner.
#[derive(Debug, Clone)]
struct GenEpisode {
    id: String,
    status: &'static str,
    bsn: String,
    birth: String,
    org: String,
    team: String,
    goal: String,
    contact: String,
    start: String,
    end: Option<String>,
    coordinator: bool,
    relations: Vec<(String, &'static str)>,
}

fn gen_episode() -> impl Strategy<Value = GenEpisode> {
    let text = "[\\p{L}\\p{N} .,'()-]{1,40}";
    (
        "[A-Za-z0-9.-]{1,20}",
        prop::sample::select(vec!["planned", "active", "finished", "cancelled"]),
        "[0-9]{9}",
        "(19[5-9][0-9]|20[0-2][0-9])-(0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])",
        "[A-Z][A-Z-]{1,15}",
        (text, text, text),
        (
            "20[12][0-9]-0[1-9]-1[0-9]",
            prop::option::of("20[12][0-9]-0[1-9]-2[0-8](T10:00:00\\+01:00)?"),
        ),
        any::<bool>(),
        prop::collection::vec(
            (
                "[0-9]{9}",
                prop::sample::select(vec!["PRN", "CHILD", "SPS"]),
            ),
            0..4,
        ),
    )
        .prop_map(
            |(
                id,
                status,
                bsn,
                birth,
                org,
                (team, goal, contact),
                (start, end),
                coordinator,
                relations,
            )| {
                GenEpisode {
                    id,
                    status,
                    bsn,
                    birth,
                    org,
                    team,
                    goal,
                    contact,
                    start,
                    end,
                    coordinator,
                    relations,
                }
            },
        )
}

fn render(eps: &[GenEpisode]) -> String {
    let mut entries = Vec::new();
    for (i, e) in eps.iter().enumerate() {
        let mut period = json!({ "start": e.start });
        if let Some(end) = &e.end {
            period["end"] = json!(end);
        }
        let mut eoc = json!({
            "resourceType": "EpisodeOfCare", "id": e.id, "status": e.status,
            "meta": { "lastUpdated": "2026-11-20T10:00:00Z" },
            "type": [{ "coding": [{ "system": "urn:x", "code": "wmo" }] }],
            "patient": { "reference": format!("Patient/p{i}") },
            "managingOrganization": { "reference": format!("Organization/o{i}") },
            "team": [{ "reference": format!("CareTeam/t{i}") }],
            "period": period,
        });
        if e.coordinator {
            eoc["careManager"] = json!({ "reference": format!("Practitioner/pr{i}") });
        }
        entries.push(json!({ "resource": eoc, "search": { "mode": "match" } }));
        entries.push(
            json!({ "resource": { "resourceType": "Patient", "id": format!("p{i}"),
            "identifier": [{ "system": bundle::BSN_SYSTEM, "value": e.bsn }],
            "birthDate": e.birth }, "search": { "mode": "include" } }),
        );
        entries.push(
            json!({ "resource": { "resourceType": "Organization", "id": format!("o{i}"),
            "identifier": [{ "system": "urn:org", "value": e.org }] },
            "search": { "mode": "include" } }),
        );
        entries.push(
            json!({ "resource": { "resourceType": "CareTeam", "id": format!("t{i}"),
            "name": e.team, "reasonCode": [{ "text": e.goal }],
            "participant": [{ "member": { "reference": format!("Practitioner/pr{i}") } }] },
            "search": { "mode": "include" } }),
        );
        entries.push(
            json!({ "resource": { "resourceType": "Practitioner", "id": format!("pr{i}"),
            "name": [{ "text": e.contact }] }, "search": { "mode": "include" } }),
        );
        for (j, (bsn, code)) in e.relations.iter().enumerate() {
            entries.push(json!({ "resource": { "resourceType": "RelatedPerson",
                "id": format!("rp{i}-{j}"), "patient": { "reference": format!("Patient/p{i}") },
                "identifier": [{ "system": bundle::BSN_SYSTEM, "value": bsn }],
                "relationship": [{ "coding": [{ "code": code }] }] },
                "search": { "mode": "include" } }));
        }
    }
    json!({ "resourceType": "Bundle", "type": "searchset", "total": eps.len(), "entry": entries })
        .to_string()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Any well-formed page decodes to exactly what was put in it: each episode resolved with
    /// its own patient, organisation, team, contact and related persons, none mixed up.
    #[test]
    fn a_generated_page_decodes_to_what_it_holds(
        eps in prop::collection::vec(gen_episode(), 0..6)
    ) {
        let body = render(&eps);
        let page = decode_bundle(body.as_bytes(), 1, 0, &DecodeOptions {
            max_entries: 1000,
            organization_system: Some("urn:org".into()),
        }).expect("decodes");
        prop_assert_eq!(page.total, Some(eps.len() as u64));
        prop_assert_eq!(page.records.len(), eps.len());
        for (e, r) in eps.iter().zip(&page.records) {
            let r = r.as_ref().expect("record");
            prop_assert_eq!(r.record_id.as_deref(), Some(e.id.as_str()));
            prop_assert_eq!(r.field("status"), Some(e.status));
            prop_assert_eq!(r.field("patient.bsn"), Some(e.bsn.as_str()));
            prop_assert_eq!(r.field("patient.birthDate"), Some(e.birth.as_str()));
            prop_assert_eq!(r.field("organization.identifier"), Some(e.org.as_str()));
            prop_assert_eq!(r.field("careTeam.name"), Some(e.team.as_str()));
            prop_assert_eq!(r.field("careTeam.reason"), Some(e.goal.as_str()));
            let contact = e.contact.trim();
            prop_assert_eq!(
                r.field("careTeam.participant.name"),
                (!contact.is_empty()).then_some(contact)
            );
            prop_assert_eq!(r.field("period.start.date"), Some(e.start.as_str()));
            prop_assert_eq!(r.field("period.end.date"), e.end.as_deref().map(|d| &d[..10]));
            prop_assert_eq!(
                r.field("careManager.present"),
                Some(if e.coordinator { "true" } else { "false" })
            );
            let rels: Vec<(Option<&str>, Option<&str>)> = r
                .groups
                .iter()
                .map(|g| (g.field("bsn"), g.field("relationship")))
                .collect();
            let want: Vec<(Option<&str>, Option<&str>)> = e
                .relations
                .iter()
                .map(|(b, c)| (Some(b.as_str()), Some(*c)))
                .collect();
            prop_assert_eq!(rels, want);
        }
    }
}

/// `#id` references resolve to resources contained in the episode (or, for a care team's
/// members, in the care team), never to an included resource of another episode.
#[test]
fn contained_resources_are_resolved_in_their_container() {
    let body = json!({
        "resourceType": "Bundle", "type": "searchset",
        "entry": [
            { "resource": {
                "resourceType": "EpisodeOfCare", "id": "e1", "status": "active",
                "contained": [
                    { "resourceType": "Patient", "id": "p",
                      "identifier": [{ "system": bundle::BSN_SYSTEM, "value": "123456782" }] },
                    { "resourceType": "CareTeam", "id": "t", "name": "Team Zuid",
                      "participant": [{ "member": { "reference": "#m" } }] },
                    { "resourceType": "Practitioner", "id": "m", "name": [{ "text": "B. Smit" }] }
                ],
                "patient": { "reference": "#p" },
                "team": [{ "reference": "#t" }]
              }, "search": { "mode": "match" } },
            { "resource": {
                "resourceType": "EpisodeOfCare", "id": "e2", "status": "active",
                "patient": { "reference": "#p" },
                "team": [{ "reference": "CareTeam/t2" }]
              }, "search": { "mode": "match" } },
            { "resource": {
                "resourceType": "CareTeam", "id": "t2", "name": "Team West",
                "contained": [{ "resourceType": "Practitioner", "id": "m",
                                "name": [{ "text": "C. Kok" }] }],
                "participant": [{ "member": { "reference": "#m" } }]
              }, "search": { "mode": "include" } }
        ]
    })
    .to_string();
    let page = decode_bundle(body.as_bytes(), 1, 0, &options()).expect("decodes");
    let first = page.records[0].as_ref().expect("e1");
    assert_eq!(first.field("patient.bsn"), Some("123456782"));
    assert_eq!(first.field("careTeam.name"), Some("Team Zuid"));
    assert_eq!(first.field("careTeam.participant.name"), Some("B. Smit"));
    // e2's `#p` is not e1's patient: e2 contains none.
    let second = page.records[1].as_ref().expect_err("no patient");
    assert_eq!(second.field.as_deref(), Some("patient"));
}
