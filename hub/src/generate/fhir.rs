//! Source okc-5 as FHIR R4 resources (`schemas/formats/fhir-r4.md`): renders the records of
//! a [`Feed`](super::feed::Feed) as `EpisodeOfCare` with its `Patient`, `Organization`,
//! `CareTeam`, `Practitioner` and `RelatedPerson` resources, the way the simulated okc-5
//! server (`crate::sandbox::fhir`) serves them and `deploy/mappings/okc-5.toml` maps them.
//!
//! Each resource comes twice: as a `serde_json::Value` (`episode`, `patient`, …: the
//! readable reference) and as a typed struct (`episode_out`, `patient_out`, …) that the
//! sandbox serializes straight into the page, with the same bytes (a test checks every
//! resource of a feed).
//!
//! Resource ids never carry a BSN: patients and practitioners get ids derived from a keyed
//! hash (the sandbox seed is the key), episodes the feed's record id.

use serde::Serialize;
use serde_json::{Value, json};

use super::feed::{FeedRecord, Ymd};

/// The BSN naming system.
pub const BSN_SYSTEM: &str = "http://fhir.nl/fhir/NamingSystem/bsn";
/// The naming system of registry organisation codes, which okc-5 uses in
/// `Organization.identifier` (set as `[source.fhir] organization_system`).
pub const ORGANISATION_SYSTEM: &str = "https://matchpoint.example/fhir/NamingSystem/organisation";
/// okc-5's code system of life domains (`EpisodeOfCare.type`).
pub const DOMAIN_SYSTEM: &str = "https://matchpoint.example/fhir/CodeSystem/okc-5-levensdomein";
/// HL7 v3 RoleCode (`RelatedPerson.relationship`).
pub const ROLE_CODE_SYSTEM: &str = "http://terminology.hl7.org/CodeSystem/v3-RoleCode";

/// okc-5's life-domain code for an okc-2 domain code (`deploy/mappings/okc-5.toml`).
pub fn domain_code(okc2: &str) -> &'static str {
    match okc2 {
        "JGZ" => "jeugdgezondheidszorg",
        "OPV" => "opvoedondersteuning",
        "JH" => "jeugdhulp",
        "WI" => "werk-en-inkomen",
        "SHV" => "schulden",
        "WON" => "wonen",
        "GGZ" => "ggz",
        "VSL" => "verslaving",
        "OND" => "onderwijs",
        "VEI" => "veiligheid",
        "WMO" => "wmo",
        "SOM" => "somatiek",
        _ => "onbekend",
    }
}

/// `EpisodeOfCare.status` for a feed status.
pub fn episode_status(status: &str) -> &'static str {
    match status {
        "planned" => "planned",
        "ended" => "finished",
        _ => "active",
    }
}

/// HL7 v3 RoleCode of what the other person is to the patient.
pub fn relationship_code(kind: &str) -> &'static str {
    match kind {
        "parent" => "PRN",
        "child" => "CHILD",
        _ => "DOMPART",
    }
}

fn keyed(key: u64, text: &str) -> u64 {
    let h = text.bytes().fold(0xCBF2_9CE4_8422_2325u64 ^ key, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01B3)
    });
    // Finalise (splitmix64) so nearby inputs give unrelated ids.
    let mut z = h.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The logical id of the patient with `bsn` (no BSN in it).
pub fn patient_id(key: u64, bsn: &str) -> String {
    format!("pat-{:016x}", keyed(key, bsn))
}

/// The logical id of the practitioner with this e-mail address.
pub fn practitioner_id(key: u64, email: &str) -> String {
    format!("pr-{:016x}", keyed(key ^ 0x5052, email))
}

/// The logical id of an organisation by registry code.
pub fn organization_id(code: &str) -> String {
    format!("org-{}", code.to_ascii_lowercase())
}

/// The logical id of a record's care team.
pub fn care_team_id(record_id: &str) -> String {
    format!("ct-{}", record_id.to_ascii_lowercase())
}

fn date(d: chrono::NaiveDate) -> String {
    d.format("%Y-%m-%d").to_string()
}

/// The `EpisodeOfCare` of a record, last updated at `updated`. A `malformed` episode has no
/// patient reference (the connector quarantines it).
pub fn episode(key: u64, r: &FeedRecord, updated: &str, malformed: bool) -> Value {
    let mut period = json!({ "start": date(r.start) });
    if let Some(end) = r.end {
        period["end"] = json!(date(end));
    }
    let mut e = json!({
        "resourceType": "EpisodeOfCare",
        "id": r.id,
        "meta": { "lastUpdated": updated },
        "status": episode_status(r.status),
        "type": [{ "coding": [{ "system": DOMAIN_SYSTEM, "code": domain_code(r.domain) }] }],
        "patient": { "reference": format!("Patient/{}", patient_id(key, &r.bsn)) },
        "managingOrganization": { "reference": format!("Organization/{}", organization_id(&r.org)) },
        "period": period,
        "team": [{ "reference": format!("CareTeam/{}", care_team_id(&r.id)) }],
    });
    if r.coordinator
        && let Some((_, _, _, email)) = &r.contact
    {
        e["careManager"] =
            json!({ "reference": format!("Practitioner/{}", practitioner_id(key, email)) });
    }
    if malformed && let Some(obj) = e.as_object_mut() {
        obj.remove("patient");
    }
    e
}

/// The `Patient` of a record.
pub fn patient(key: u64, r: &FeedRecord, updated: &str) -> Value {
    let (given, family) = r.name.split_once(' ').unwrap_or(("", r.name.as_str()));
    json!({
        "resourceType": "Patient",
        "id": patient_id(key, &r.bsn),
        "meta": { "lastUpdated": updated },
        "identifier": [{ "system": BSN_SYSTEM, "value": r.bsn }],
        "name": [{ "use": "official", "family": family, "given": [given] }],
        "birthDate": date(r.birth),
    })
}

/// The `RelatedPerson` resources of a record's patient: one per household relation.
pub fn related_persons(key: u64, r: &FeedRecord, updated: &str) -> Vec<Value> {
    let patient = patient_id(key, &r.bsn);
    r.relations
        .iter()
        .map(|(bsn, kind)| {
            let other = patient_id(key, bsn);
            json!({
                "resourceType": "RelatedPerson",
                "id": format!("rp-{}-{}", patient.trim_start_matches("pat-"), other.trim_start_matches("pat-")),
                "meta": { "lastUpdated": updated },
                "active": true,
                "patient": { "reference": format!("Patient/{patient}") },
                "identifier": [{ "system": BSN_SYSTEM, "value": bsn }],
                "relationship": [{ "coding": [{ "system": ROLE_CODE_SYSTEM, "code": relationship_code(kind) }] }],
            })
        })
        .collect()
}

/// The `Organization` with a registry code.
pub fn organization(code: &str) -> Value {
    json!({
        "resourceType": "Organization",
        "id": organization_id(code),
        "identifier": [{ "system": ORGANISATION_SYSTEM, "value": code }],
        "active": true,
    })
}

/// The `CareTeam` of a record: its team, the goal as reason, the contact as participant.
pub fn care_team(key: u64, r: &FeedRecord, updated: &str) -> Value {
    let mut t = json!({
        "resourceType": "CareTeam",
        "id": care_team_id(&r.id),
        "meta": { "lastUpdated": updated },
        "status": "active",
        "name": r.team,
        "reasonCode": [{ "text": r.goal }],
        "managingOrganization": [{ "reference": format!("Organization/{}", organization_id(&r.org)) }],
        "participant": [],
    });
    if let Some((_, role, _, email)) = &r.contact {
        t["participant"] = json!([{
            "role": [{ "text": role }],
            "member": { "reference": format!("Practitioner/{}", practitioner_id(key, email)) },
        }]);
    }
    t
}

/// The `Practitioner` who is a record's contact person, if it has one.
pub fn practitioner(key: u64, r: &FeedRecord) -> Option<Value> {
    let (name, _, phone, email) = r.contact.as_ref()?;
    Some(json!({
        "resourceType": "Practitioner",
        "id": practitioner_id(key, email),
        "name": [{ "text": name }],
        "telecom": [
            { "system": "phone", "value": phone },
            { "system": "email", "value": email },
        ],
    }))
}

// The typed resources: serialized straight from the feed record, without a `Value` tree.
// Members are declared in the order a `serde_json::Value` object writes them (sorted), so
// the bytes are those of the functions above (the sandbox's tests check it).

/// `{"reference": "..."}`.
#[derive(Debug, Serialize)]
pub struct Reference {
    /// `Type/id`.
    pub reference: String,
}

impl Reference {
    fn to(ty: &str, id: &str) -> Self {
        Reference {
            reference: format!("{ty}/{id}"),
        }
    }
}

/// `{"lastUpdated": "..."}`.
#[derive(Debug, Serialize)]
pub struct Meta<'a> {
    /// The instant.
    #[serde(rename = "lastUpdated")]
    pub last_updated: &'a str,
}

/// `{"code", "system"}`.
#[derive(Debug, Serialize)]
pub struct Coding<'a> {
    /// Code.
    pub code: &'a str,
    /// Code system.
    pub system: &'a str,
}

/// `{"coding": [...]}`.
#[derive(Debug, Serialize)]
pub struct Concept<'a> {
    /// One coding.
    pub coding: [Coding<'a>; 1],
}

/// `{"system", "value"}` (identifiers and telecom).
#[derive(Debug, Serialize)]
pub struct SystemValue<'a> {
    /// System.
    pub system: &'a str,
    /// Value.
    pub value: &'a str,
}

/// `{"text": "..."}`.
#[derive(Debug, Serialize)]
pub struct Text<'a> {
    /// The text.
    pub text: &'a str,
}

/// `EpisodeOfCare.period`.
#[derive(Debug, Serialize)]
pub struct Period {
    /// End, when ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end: Option<Ymd>,
    /// Start.
    pub start: Ymd,
}

/// An `EpisodeOfCare` ([`episode`]).
#[derive(Debug, Serialize)]
pub struct EpisodeOut<'a> {
    #[serde(rename = "careManager", skip_serializing_if = "Option::is_none")]
    care_manager: Option<Reference>,
    id: &'a str,
    #[serde(rename = "managingOrganization")]
    managing_organization: Reference,
    meta: Meta<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    patient: Option<Reference>,
    period: Period,
    #[serde(rename = "resourceType")]
    resource_type: &'static str,
    status: &'static str,
    team: [Reference; 1],
    #[serde(rename = "type")]
    ty: [Concept<'a>; 1],
}

/// The typed form of [`episode`].
pub fn episode_out<'a>(
    key: u64,
    r: &'a FeedRecord,
    updated: &'a str,
    malformed: bool,
) -> EpisodeOut<'a> {
    let care_manager = match &r.contact {
        Some((_, _, _, email)) if r.coordinator => {
            Some(Reference::to("Practitioner", &practitioner_id(key, email)))
        }
        _ => None,
    };
    EpisodeOut {
        care_manager,
        id: &r.id,
        managing_organization: Reference::to("Organization", &organization_id(&r.org)),
        meta: Meta {
            last_updated: updated,
        },
        patient: (!malformed).then(|| Reference::to("Patient", &patient_id(key, &r.bsn))),
        period: Period {
            end: r.end.map(Ymd),
            start: Ymd(r.start),
        },
        resource_type: "EpisodeOfCare",
        status: episode_status(r.status),
        team: [Reference::to("CareTeam", &care_team_id(&r.id))],
        ty: [Concept {
            coding: [Coding {
                code: domain_code(r.domain),
                system: DOMAIN_SYSTEM,
            }],
        }],
    }
}

/// `Patient.name`.
#[derive(Debug, Serialize)]
pub struct HumanName<'a> {
    family: &'a str,
    given: [&'a str; 1],
    #[serde(rename = "use")]
    usage: &'static str,
}

/// A `Patient` ([`patient`]).
#[derive(Debug, Serialize)]
pub struct PatientOut<'a> {
    #[serde(rename = "birthDate")]
    birth_date: Ymd,
    id: String,
    identifier: [SystemValue<'a>; 1],
    meta: Meta<'a>,
    name: [HumanName<'a>; 1],
    #[serde(rename = "resourceType")]
    resource_type: &'static str,
}

/// The typed form of [`patient`].
pub fn patient_out<'a>(key: u64, r: &'a FeedRecord, updated: &'a str) -> PatientOut<'a> {
    let (given, family) = r.name.split_once(' ').unwrap_or(("", r.name.as_str()));
    PatientOut {
        birth_date: Ymd(r.birth),
        id: patient_id(key, &r.bsn),
        identifier: [SystemValue {
            system: BSN_SYSTEM,
            value: &r.bsn,
        }],
        meta: Meta {
            last_updated: updated,
        },
        name: [HumanName {
            family,
            given: [given],
            usage: "official",
        }],
        resource_type: "Patient",
    }
}

/// A `RelatedPerson` ([`related_persons`]).
#[derive(Debug, Serialize)]
pub struct RelatedPersonOut<'a> {
    active: bool,
    id: String,
    identifier: [SystemValue<'a>; 1],
    meta: Meta<'a>,
    patient: Reference,
    relationship: [Concept<'a>; 1],
    #[serde(rename = "resourceType")]
    resource_type: &'static str,
}

/// The id of the `RelatedPerson` of relation `(patient, other)` (both patient ids).
pub fn related_person_id(patient: &str, other: &str) -> String {
    format!(
        "rp-{}-{}",
        patient.trim_start_matches("pat-"),
        other.trim_start_matches("pat-")
    )
}

/// The typed form of one of [`related_persons`]: relation `(bsn, kind)` of the record's
/// patient `patient` (its id); `id` from [`related_person_id`].
pub fn related_person_out<'a>(
    patient: &str,
    id: String,
    bsn: &'a str,
    kind: &str,
    updated: &'a str,
) -> RelatedPersonOut<'a> {
    RelatedPersonOut {
        active: true,
        id,
        identifier: [SystemValue {
            system: BSN_SYSTEM,
            value: bsn,
        }],
        meta: Meta {
            last_updated: updated,
        },
        patient: Reference::to("Patient", patient),
        relationship: [Concept {
            coding: [Coding {
                code: relationship_code(kind),
                system: ROLE_CODE_SYSTEM,
            }],
        }],
        resource_type: "RelatedPerson",
    }
}

/// An `Organization` ([`organization`]).
#[derive(Debug, Serialize)]
pub struct OrganizationOut<'a> {
    active: bool,
    id: String,
    identifier: [SystemValue<'a>; 1],
    #[serde(rename = "resourceType")]
    resource_type: &'static str,
}

/// The typed form of [`organization`].
pub fn organization_out(code: &str) -> OrganizationOut<'_> {
    OrganizationOut {
        active: true,
        id: organization_id(code),
        identifier: [SystemValue {
            system: ORGANISATION_SYSTEM,
            value: code,
        }],
        resource_type: "Organization",
    }
}

/// `CareTeam.participant`.
#[derive(Debug, Serialize)]
pub struct Participant<'a> {
    member: Reference,
    role: [Text<'a>; 1],
}

/// A `CareTeam` ([`care_team`]).
#[derive(Debug, Serialize)]
pub struct CareTeamOut<'a> {
    id: String,
    #[serde(rename = "managingOrganization")]
    managing_organization: [Reference; 1],
    meta: Meta<'a>,
    name: &'a str,
    participant: Vec<Participant<'a>>,
    #[serde(rename = "reasonCode")]
    reason_code: [Text<'a>; 1],
    #[serde(rename = "resourceType")]
    resource_type: &'static str,
    status: &'static str,
}

/// The typed form of [`care_team`].
pub fn care_team_out<'a>(key: u64, r: &'a FeedRecord, updated: &'a str) -> CareTeamOut<'a> {
    CareTeamOut {
        id: care_team_id(&r.id),
        managing_organization: [Reference::to("Organization", &organization_id(&r.org))],
        meta: Meta {
            last_updated: updated,
        },
        name: &r.team,
        participant: r
            .contact
            .iter()
            .map(|(_, role, _, email)| Participant {
                member: Reference::to("Practitioner", &practitioner_id(key, email)),
                role: [Text { text: role }],
            })
            .collect(),
        reason_code: [Text { text: &r.goal }],
        resource_type: "CareTeam",
        status: "active",
    }
}

/// A `Practitioner` ([`practitioner`]).
#[derive(Debug, Serialize)]
pub struct PractitionerOut<'a> {
    id: String,
    name: [Text<'a>; 1],
    #[serde(rename = "resourceType")]
    resource_type: &'static str,
    telecom: [SystemValue<'a>; 2],
}

/// The typed form of [`practitioner`].
pub fn practitioner_out(key: u64, r: &FeedRecord) -> Option<PractitionerOut<'_>> {
    let (name, _, phone, email) = r.contact.as_ref()?;
    Some(PractitionerOut {
        id: practitioner_id(key, email),
        name: [Text { text: name }],
        resource_type: "Practitioner",
        telecom: [
            SystemValue {
                system: "phone",
                value: phone,
            },
            SystemValue {
                system: "email",
                value: email,
            },
        ],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generate::feed::Feed;

    fn same<T: Serialize>(typed: &T, value: &Value) {
        assert_eq!(
            serde_json::to_string(typed).expect("serialize"),
            value.to_string()
        );
    }

    /// Every typed resource writes exactly the bytes of its `Value` rendering, for every
    /// record of a small feed (coordinators or not, with and without contact or end date).
    #[test]
    fn typed_resources_are_byte_identical_to_the_value_rendering() {
        let key = 0xFEED;
        let feed = Feed::build("okc-5", "OKC5-", 400, 5, 0.8).expect("feed");
        let mut records: Vec<FeedRecord> = feed.changed_since(2, None).collect();
        // The feed gives every record a contact; the formats allow none.
        for r in records.iter_mut().step_by(7) {
            r.contact = None;
        }
        assert!(records.iter().any(|r| r.contact.is_none()));
        assert!(records.iter().any(|r| r.coordinator && r.contact.is_some()));
        assert!(records.iter().any(|r| r.end.is_some()));
        assert!(records.iter().any(|r| r.relations.len() > 1));
        for (n, r) in records.iter().enumerate() {
            let updated = feed.timestamp(r.touched);
            let malformed = n % 5 == 0;
            same(
                &episode_out(key, r, &updated, malformed),
                &episode(key, r, &updated, malformed),
            );
            same(&patient_out(key, r, &updated), &patient(key, r, &updated));
            let patient = patient_id(key, &r.bsn);
            let related: Vec<_> = r
                .relations
                .iter()
                .map(|(bsn, kind)| {
                    let id = related_person_id(&patient, &patient_id(key, bsn));
                    related_person_out(&patient, id, bsn, kind, &updated)
                })
                .collect();
            same(&related, &Value::Array(related_persons(key, r, &updated)));
            same(&organization_out(&r.org), &organization(&r.org));
            same(
                &care_team_out(key, r, &updated),
                &care_team(key, r, &updated),
            );
            same(
                &practitioner_out(key, r),
                &practitioner(key, r).unwrap_or(Value::Null),
            );
        }
    }
}
