//! The canonical involvement record: Matchpoint's "key facts" about who is involved with whom.

use std::fmt;
use std::str::FromStr;

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::pseudonym::Pseudonym;

/// The life domains an involvement can belong to. Closed: a source code that maps to none of
/// these is rejected (quarantined), never guessed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LifeDomain {
    /// Youth health care (JGZ): consultations, growth, vaccinations.
    YouthHealth,
    /// Parenting support (opvoedondersteuning).
    Parenting,
    /// Youth care and youth protection (jeugdhulp, jeugdbescherming).
    YouthCare,
    /// Income, benefits and work (inkomen en werk).
    IncomeWork,
    /// Debt counselling (schuldhulpverlening).
    Debt,
    /// Housing (wonen), including housing corporations and eviction prevention.
    Housing,
    /// Mental health care (GGZ).
    MentalHealth,
    /// Addiction care (verslavingszorg).
    Addiction,
    /// Education and school attendance (onderwijs, leerplicht).
    Education,
    /// Safety: domestic violence, child abuse, police and justice (veiligheid).
    Safety,
    /// Social support under the WMO (maatschappelijke ondersteuning).
    SocialSupport,
    /// Physical health (somatische zorg).
    PhysicalHealth,
}

impl LifeDomain {
    /// Every domain, in documentation order.
    pub const ALL: [LifeDomain; 12] = [
        LifeDomain::YouthHealth,
        LifeDomain::Parenting,
        LifeDomain::YouthCare,
        LifeDomain::IncomeWork,
        LifeDomain::Debt,
        LifeDomain::Housing,
        LifeDomain::MentalHealth,
        LifeDomain::Addiction,
        LifeDomain::Education,
        LifeDomain::Safety,
        LifeDomain::SocialSupport,
        LifeDomain::PhysicalHealth,
    ];

    /// The stable code used in the store and in mapping files.
    pub fn as_str(self) -> &'static str {
        match self {
            LifeDomain::YouthHealth => "youth_health",
            LifeDomain::Parenting => "parenting",
            LifeDomain::YouthCare => "youth_care",
            LifeDomain::IncomeWork => "income_work",
            LifeDomain::Debt => "debt",
            LifeDomain::Housing => "housing",
            LifeDomain::MentalHealth => "mental_health",
            LifeDomain::Addiction => "addiction",
            LifeDomain::Education => "education",
            LifeDomain::Safety => "safety",
            LifeDomain::SocialSupport => "social_support",
            LifeDomain::PhysicalHealth => "physical_health",
        }
    }
}

impl fmt::Display for LifeDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An unknown code for one of the closed enums.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} `{code}`")]
pub struct UnknownCode {
    /// Which enum.
    pub kind: &'static str,
    /// The code that was not recognised.
    pub code: String,
}

impl FromStr for LifeDomain {
    type Err = UnknownCode;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        LifeDomain::ALL
            .into_iter()
            .find(|d| d.as_str() == s)
            .ok_or_else(|| UnknownCode {
                kind: "life domain",
                code: s.to_owned(),
            })
    }
}

/// Where an involvement stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InvolvementStatus {
    /// Registered, support not started yet.
    Planned,
    /// Support is ongoing.
    Active,
    /// Support has ended (by the source, or because a full delivery no longer contains it).
    Ended,
}

impl InvolvementStatus {
    /// The stable code used in the store and in mapping files.
    pub fn as_str(self) -> &'static str {
        match self {
            InvolvementStatus::Planned => "planned",
            InvolvementStatus::Active => "active",
            InvolvementStatus::Ended => "ended",
        }
    }
}

impl FromStr for InvolvementStatus {
    type Err = UnknownCode;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "planned" => Ok(Self::Planned),
            "active" => Ok(Self::Active),
            "ended" => Ok(Self::Ended),
            _ => Err(UnknownCode {
                kind: "status",
                code: s.to_owned(),
            }),
        }
    }
}

/// How two persons are related, seen from the record's person.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RelationKind {
    /// The other person is a parent of this person.
    Parent,
    /// The other person is a child of this person.
    Child,
    /// The other person lives in the same household.
    HouseholdMember,
}

impl RelationKind {
    /// The stable code used in the store and in mapping files.
    pub fn as_str(self) -> &'static str {
        match self {
            RelationKind::Parent => "parent",
            RelationKind::Child => "child",
            RelationKind::HouseholdMember => "household_member",
        }
    }
}

impl FromStr for RelationKind {
    type Err = UnknownCode;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "parent" => Ok(Self::Parent),
            "child" => Ok(Self::Child),
            "household_member" => Ok(Self::HouseholdMember),
            _ => Err(UnknownCode {
                kind: "relation kind",
                code: s.to_owned(),
            }),
        }
    }
}

/// The professional to contact about an involvement (never the client).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContactPerson {
    /// The professional's name.
    pub name: String,
    /// Their role, e.g. "jeugdverpleegkundige".
    pub role: Option<String>,
    /// Work phone number.
    pub phone: Option<String>,
    /// Work e-mail address.
    pub email: Option<String>,
}

/// Why an involvement ended, as the source codes it: the code and its description from the
/// source's code list (for the WMO module the WMO588 list, e.g. `19` "Levering volgens plan
/// beeindigd"). The mapping's `[codes.end_reason]` table is the closed set of a source: an
/// unknown code is rejected, never guessed. Sources without end reasons leave it empty.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct EndReason {
    /// The source's code, e.g. `19`.
    pub code: String,
    /// Its description from the code list.
    pub description: String,
}

/// A relation from the record's person to another person, both pseudonymised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Relation {
    /// What the other person is to this one.
    pub kind: RelationKind,
    /// The other person's pseudonym.
    pub other: Pseudonym,
}

/// One canonical, pseudonymised involvement: organisation X is involved with person P.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Involvement {
    /// The person's index pseudonym.
    pub person: Pseudonym,
    /// Version of the key the pseudonyms were made with.
    pub key_id: String,
    /// Organisation code from the shared registry.
    pub organisation_code: String,
    /// Organisation name from the shared registry.
    pub organisation_name: String,
    /// Team or unit within the organisation.
    pub team: Option<String>,
    /// The life domain of the support.
    pub life_domain: LifeDomain,
    /// The goal of the support.
    pub goal: Option<String>,
    /// Who to contact.
    pub contact: ContactPerson,
    /// First day of the involvement.
    pub start_date: NaiveDate,
    /// Last day, when known.
    pub end_date: Option<NaiveDate>,
    /// Why it ended, when the source says (iWmo: the WMO588 reason of a WMO307 stop).
    pub end_reason: Option<EndReason>,
    /// Planned, active or ended.
    pub status: InvolvementStatus,
    /// Whether this involvement is the household's coordinator (regisseur).
    pub coordinator: bool,
    /// Marked sensitive by the mapping (shelters, addiction care, domestic violence).
    pub sensitive: bool,
    /// The person is shielded (e.g. a protected address): the lookup service never answers
    /// for them through break-the-glass. Delivered by the mapping's `shielded` field.
    pub shielded: bool,
    /// The day after which retention removes this record, when it can be computed.
    pub purge_after: Option<NaiveDate>,
    /// The source system's configured name.
    pub source: String,
    /// The record's id in the source system.
    pub source_record_id: String,
    /// Relations of this person to others, as delivered with this record.
    pub relations: Vec<Relation>,
}

impl Involvement {
    /// SHA-256 over every delivered field, used to tell changed records from unchanged ones
    /// without rewriting the unchanged.
    pub fn content_hash(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        let mut put = |b: &[u8]| {
            h.update((b.len() as u64).to_le_bytes());
            h.update(b);
        };
        let opt = |o: &Option<String>| o.clone().unwrap_or_else(|| "\u{0}".into());
        put(self.person.as_bytes());
        put(self.key_id.as_bytes());
        put(self.organisation_code.as_bytes());
        put(self.organisation_name.as_bytes());
        put(opt(&self.team).as_bytes());
        put(self.life_domain.as_str().as_bytes());
        put(opt(&self.goal).as_bytes());
        put(self.contact.name.as_bytes());
        put(opt(&self.contact.role).as_bytes());
        put(opt(&self.contact.phone).as_bytes());
        put(opt(&self.contact.email).as_bytes());
        put(self.start_date.to_string().as_bytes());
        put(opt(&self.end_date.map(|d| d.to_string())).as_bytes());
        put(self.status.as_str().as_bytes());
        put(&[u8::from(self.coordinator), u8::from(self.sensitive)]);
        put(opt(&self.purge_after.map(|d| d.to_string())).as_bytes());
        // Only when set, so hashes of records published before the flag existed stay valid.
        if self.shielded {
            put(b"shielded");
        }
        // Likewise only when set: records of sources without end reasons keep their hashes.
        if let Some(r) = &self.end_reason {
            put(b"end_reason");
            put(r.code.as_bytes());
            put(r.description.as_bytes());
        }
        let mut rels = self.relations.clone();
        rels.sort();
        for r in &rels {
            put(r.kind.as_str().as_bytes());
            put(r.other.as_bytes());
        }
        h.finalize().into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn life_domain_codes_round_trip() {
        for d in LifeDomain::ALL {
            assert_eq!(d.as_str().parse::<LifeDomain>(), Ok(d));
        }
        assert!("wellness".parse::<LifeDomain>().is_err());
    }
}
