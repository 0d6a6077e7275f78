//! Source okc-5 as FHIR R4 resources (`schemas/formats/fhir-r4.md`): renders the records of
//! a [`Feed`](super::feed::Feed) as `EpisodeOfCare` with its `Patient`, `Organization`,
//! `CareTeam`, `Practitioner` and `RelatedPerson` resources, the way the simulated okc-5
//! server (`crate::sandbox::fhir`) serves them and `deploy/mappings/okc-5.toml` maps them.
//!
//! Resource ids never carry a BSN: patients and practitioners get ids derived from a keyed
//! hash (the sandbox seed is the key), episodes the feed's record id.

use serde_json::{Value, json};

use super::feed::FeedRecord;

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
