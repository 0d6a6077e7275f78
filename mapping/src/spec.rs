//! The mapping file: which source field feeds which canonical field, code tables, date
//! format, retention and sensitivity. Checked completely at start-up; every problem is
//! reported with file and line.

use std::collections::BTreeMap;
use std::path::Path;

use matchpoint_schemas::{InvolvementStatus, LifeDomain, RelationKind};
use serde::Deserialize;
use toml::Spanned;

/// A mapping file that cannot be used. Names the file and line.
#[derive(Debug, thiserror::Error)]
pub enum MappingError {
    /// Unreadable file.
    #[error("cannot read mapping file {path}: {message}")]
    Read { path: String, message: String },
    /// One or more problems, each `file:line: message`.
    #[error("mapping file {path} is invalid:\n{}", .problems.join("\n"))]
    Invalid { path: String, problems: Vec<String> },
}

/// Source field paths for each canonical field. Paths are relative to the record.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldPaths {
    /// The client's BSN (required).
    pub bsn: String,
    /// The client's birth date, used only to compute `purge_after`; never stored.
    #[serde(default)]
    pub birth_date: Option<String>,
    /// The organisation's code in this source (resolved through the registry).
    #[serde(default)]
    pub organisation: Option<String>,
    /// Team or unit.
    #[serde(default)]
    pub team: Option<String>,
    /// Life domain code (looked up in `codes.life_domain`).
    pub life_domain: String,
    /// Goal of the support.
    #[serde(default)]
    pub goal: Option<String>,
    /// Contact person's name (required: a record without one is rejected).
    pub contact_name: String,
    /// Contact person's role.
    #[serde(default)]
    pub contact_role: Option<String>,
    /// Contact person's phone.
    #[serde(default)]
    pub contact_phone: Option<String>,
    /// Contact person's e-mail.
    #[serde(default)]
    pub contact_email: Option<String>,
    /// Start date (required).
    pub start_date: String,
    /// End date.
    #[serde(default)]
    pub end_date: Option<String>,
    /// Why the involvement ended (looked up in `codes.end_reason`, code → description).
    /// Absent or empty: no end reason.
    #[serde(default)]
    pub end_reason: Option<String>,
    /// Status code (looked up in `codes.status`); without it the status follows the end date.
    #[serde(default)]
    pub status: Option<String>,
    /// Coordinator flag (looked up in `codes.coordinator`).
    #[serde(default)]
    pub coordinator: Option<String>,
    /// Shielded-person flag (looked up in `codes.shielded`): a shielded person is never
    /// answered through break-the-glass. Absent: not shielded.
    #[serde(default)]
    pub shielded: Option<String>,
}

/// Where relations to other persons are found.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelationPaths {
    /// Path of the repeated group, relative to the record.
    pub group: String,
    /// The other person's BSN, relative to the group.
    pub bsn: String,
    /// The relation kind code (looked up in `codes.relation_kind`), relative to the group.
    pub kind: String,
}

/// Date handling.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dates {
    /// chrono `strftime` format of every date field.
    #[serde(default = "default_date_format")]
    pub format: String,
}

fn default_date_format() -> String {
    "%Y-%m-%d".into()
}

impl Default for Dates {
    fn default() -> Self {
        Dates {
            format: default_date_format(),
        }
    }
}

/// The source's retention rule, used to compute `purge_after`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retention {
    /// Months an ended involvement stays in the index after its end date.
    #[serde(default = "default_ended_months")]
    pub ended_months: u32,
    /// Years after birth after which a person's records leave the index, if set.
    #[serde(default)]
    pub age_limit_years: Option<u32>,
}

fn default_ended_months() -> u32 {
    24
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            ended_months: default_ended_months(),
            age_limit_years: None,
        }
    }
}

/// Code tables: source code → canonical value.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CodeTables {
    /// Source domain code → life domain.
    pub life_domain: BTreeMap<String, Spanned<String>>,
    /// Source status code → planned/active/ended.
    #[serde(default)]
    pub status: BTreeMap<String, Spanned<String>>,
    /// Source relation code → parent/child/household_member.
    #[serde(default)]
    pub relation_kind: BTreeMap<String, Spanned<String>>,
    /// Source coordinator flag → true/false.
    #[serde(default)]
    pub coordinator: BTreeMap<String, bool>,
    /// Source shielded flag → true/false.
    #[serde(default)]
    pub shielded: BTreeMap<String, bool>,
    /// Source end-reason code → its description (e.g. the WMO588 list); the closed set of
    /// end reasons of the source.
    #[serde(default)]
    pub end_reason: BTreeMap<String, String>,
}

/// Which involvements are sensitive.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sensitivity {
    /// Every involvement in these life domains is sensitive.
    #[serde(default)]
    pub life_domains: Vec<Spanned<String>>,
    /// Every involvement whose *source* life-domain code is one of these is sensitive (e.g.
    /// WMO020 product categories 16 and 17, shelters); each must be in `codes.life_domain`.
    #[serde(default)]
    pub life_domain_codes: Vec<Spanned<String>>,
}

/// The contact shown for an organisation when the source delivers no contact person (e.g.
/// iWmo, which carries none). Keyed by registry organisation code in `[directory]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirectoryEntry {
    /// Name of the contact (a person or a desk).
    pub name: String,
    /// Role.
    #[serde(default)]
    pub role: Option<String>,
    /// Work phone.
    #[serde(default)]
    pub phone: Option<String>,
    /// Work e-mail.
    #[serde(default)]
    pub email: Option<String>,
}

/// Defaults for fields a source does not deliver.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Defaults {
    /// Organisation code (registry or source code) when the record has none.
    #[serde(default)]
    pub organisation: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct SpecFile {
    fields: FieldPaths,
    #[serde(default)]
    relations: Option<RelationPaths>,
    #[serde(default)]
    dates: Dates,
    #[serde(default)]
    retention: Retention,
    codes: CodeTables,
    #[serde(default)]
    sensitive: Sensitivity,
    #[serde(default)]
    defaults: Defaults,
    #[serde(default)]
    directory: BTreeMap<String, Spanned<DirectoryEntry>>,
}

/// A checked mapping, ready to apply.
#[derive(Debug, Clone)]
pub struct MappingSpec {
    /// Field paths.
    pub fields: FieldPaths,
    /// Relation paths, if the source delivers relations.
    pub relations: Option<RelationPaths>,
    /// Date format.
    pub date_format: String,
    /// Retention rule.
    pub retention: Retention,
    /// Source life-domain code → domain.
    pub life_domains: BTreeMap<String, LifeDomain>,
    /// Source status code → status.
    pub statuses: BTreeMap<String, InvolvementStatus>,
    /// Source relation code → kind.
    pub relation_kinds: BTreeMap<String, RelationKind>,
    /// Source coordinator flag → bool.
    pub coordinator: BTreeMap<String, bool>,
    /// Source shielded flag → bool.
    pub shielded: BTreeMap<String, bool>,
    /// Source end-reason code → description.
    pub end_reasons: BTreeMap<String, String>,
    /// Sensitive life domains.
    pub sensitive_domains: Vec<LifeDomain>,
    /// Source life-domain codes whose involvements are sensitive.
    pub sensitive_codes: Vec<String>,
    /// Registry organisation code → contact, for records without a contact person.
    pub directory: BTreeMap<String, DirectoryEntry>,
    /// Defaults.
    pub defaults: Defaults,
    /// The file this came from, for messages.
    pub origin: String,
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

impl MappingSpec {
    /// Reads and checks a mapping file.
    pub fn load(path: &Path) -> Result<Self, MappingError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| MappingError::Read {
            path: origin.clone(),
            message: e.to_string(),
        })?;
        Self::parse(&text, &origin)
    }

    /// Parses and checks mapping TOML; `origin` names the file in messages.
    pub fn parse(text: &str, origin: &str) -> Result<Self, MappingError> {
        let file: SpecFile = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| line_of(text, s.start)).unwrap_or(0);
            MappingError::Invalid {
                path: origin.to_owned(),
                problems: vec![format!("{origin}:{line}: {}", e.message())],
            }
        })?;
        let mut problems = Vec::new();
        let mut at = |span: std::ops::Range<usize>, msg: String| {
            problems.push(format!("{origin}:{}: {msg}", line_of(text, span.start)));
        };
        let mut life_domains = BTreeMap::new();
        for (code, v) in &file.codes.life_domain {
            match v.get_ref().parse::<LifeDomain>() {
                Ok(d) => {
                    life_domains.insert(code.clone(), d);
                }
                Err(_) => at(
                    v.span(),
                    format!(
                        "codes.life_domain.{code}: `{}` is not a life domain (one of: {})",
                        v.get_ref(),
                        LifeDomain::ALL.map(LifeDomain::as_str).join(", ")
                    ),
                ),
            }
        }
        let mut statuses = BTreeMap::new();
        for (code, v) in &file.codes.status {
            match v.get_ref().parse::<InvolvementStatus>() {
                Ok(s) => {
                    statuses.insert(code.clone(), s);
                }
                Err(_) => at(
                    v.span(),
                    format!(
                        "codes.status.{code}: `{}` is not a status (planned, active, ended)",
                        v.get_ref()
                    ),
                ),
            }
        }
        let mut relation_kinds = BTreeMap::new();
        for (code, v) in &file.codes.relation_kind {
            match v.get_ref().parse::<RelationKind>() {
                Ok(k) => {
                    relation_kinds.insert(code.clone(), k);
                }
                Err(_) => at(
                    v.span(),
                    format!(
                        "codes.relation_kind.{code}: `{}` is not a relation kind (parent, child, household_member)",
                        v.get_ref()
                    ),
                ),
            }
        }
        let mut sensitive_domains = Vec::new();
        for v in &file.sensitive.life_domains {
            match v.get_ref().parse::<LifeDomain>() {
                Ok(d) => sensitive_domains.push(d),
                Err(_) => at(
                    v.span(),
                    format!(
                        "sensitive.life_domains: `{}` is not a life domain",
                        v.get_ref()
                    ),
                ),
            }
        }
        let mut sensitive_codes = Vec::new();
        for v in &file.sensitive.life_domain_codes {
            if file.codes.life_domain.contains_key(v.get_ref()) {
                sensitive_codes.push(v.get_ref().clone());
            } else {
                at(
                    v.span(),
                    format!(
                        "sensitive.life_domain_codes: `{}` is not a code of [codes.life_domain]",
                        v.get_ref()
                    ),
                );
            }
        }
        let mut directory = BTreeMap::new();
        for (org, entry) in &file.directory {
            if entry.get_ref().name.trim().is_empty() {
                at(
                    entry.span(),
                    format!("directory.{org}.name must not be empty"),
                );
            }
            directory.insert(org.clone(), entry.get_ref().clone());
        }
        if file.fields.status.is_some() && file.codes.status.is_empty() {
            problems.push(format!(
                "{origin}: fields.status is mapped but the code table [codes.status] is missing"
            ));
        }
        if file.fields.shielded.is_some() && file.codes.shielded.is_empty() {
            problems.push(format!(
                "{origin}: fields.shielded is mapped but the code table [codes.shielded] is missing"
            ));
        }
        if file.fields.end_reason.is_some() && file.codes.end_reason.is_empty() {
            problems.push(format!(
                "{origin}: fields.end_reason is mapped but the code table [codes.end_reason] is missing"
            ));
        }
        for (code, text) in &file.codes.end_reason {
            if text.trim().is_empty() {
                problems.push(format!(
                    "{origin}: codes.end_reason.{code} has an empty description"
                ));
            }
        }
        if file.fields.coordinator.is_some() && file.codes.coordinator.is_empty() {
            problems.push(format!(
                "{origin}: fields.coordinator is mapped but the code table [codes.coordinator] is missing"
            ));
        }
        if file.relations.is_some() && file.codes.relation_kind.is_empty() {
            problems.push(format!(
                "{origin}: [relations] is mapped but the code table [codes.relation_kind] is missing"
            ));
        }
        if file.codes.life_domain.is_empty() {
            problems.push(format!(
                "{origin}: the code table [codes.life_domain] is empty"
            ));
        }
        if file.fields.organisation.is_none() && file.defaults.organisation.is_none() {
            problems.push(format!(
                "{origin}: neither fields.organisation nor defaults.organisation is set"
            ));
        }
        if chrono::NaiveDate::parse_from_str("2026-01-02", "%Y-%m-%d")
            .ok()
            .map(|d| d.format(&file.dates.format).to_string())
            .and_then(|s| chrono::NaiveDate::parse_from_str(&s, &file.dates.format).ok())
            .is_none()
        {
            problems.push(format!(
                "{origin}: dates.format `{}` cannot round-trip a date",
                file.dates.format
            ));
        }
        let mut all_paths: Vec<&str> = vec![
            &file.fields.bsn,
            &file.fields.life_domain,
            &file.fields.contact_name,
            &file.fields.start_date,
        ];
        for p in [
            &file.fields.birth_date,
            &file.fields.organisation,
            &file.fields.team,
            &file.fields.goal,
            &file.fields.contact_role,
            &file.fields.contact_phone,
            &file.fields.contact_email,
            &file.fields.end_date,
            &file.fields.end_reason,
            &file.fields.status,
            &file.fields.coordinator,
            &file.fields.shielded,
        ]
        .into_iter()
        .flatten()
        {
            all_paths.push(p);
        }
        if let Some(r) = &file.relations {
            all_paths.extend([r.group.as_str(), r.bsn.as_str(), r.kind.as_str()]);
        }
        for p in all_paths {
            if !valid_path(p) {
                problems.push(format!(
                    "{origin}: `{p}` is not a valid field path (segments of letters, digits, '_', '-' or '.', separated by '/', an optional final `@attribute`)"
                ));
            }
        }
        if !problems.is_empty() {
            return Err(MappingError::Invalid {
                path: origin.to_owned(),
                problems,
            });
        }
        Ok(MappingSpec {
            fields: file.fields,
            relations: file.relations,
            date_format: file.dates.format,
            retention: file.retention,
            life_domains,
            statuses,
            relation_kinds,
            coordinator: file.codes.coordinator,
            shielded: file.codes.shielded,
            end_reasons: file.codes.end_reason,
            sensitive_domains,
            sensitive_codes,
            directory,
            defaults: file.defaults,
            origin: origin.to_owned(),
        })
    }
}

fn valid_path(p: &str) -> bool {
    if p.is_empty() || p.starts_with('/') || p.ends_with('/') {
        return false;
    }
    let segs: Vec<&str> = p.split('/').collect();
    segs.iter().enumerate().all(|(i, s)| {
        let body = if i == segs.len() - 1 {
            s.strip_prefix('@').unwrap_or(s)
        } else {
            s
        };
        !body.is_empty()
            && body
                .chars()
                .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHIPPED: &str = include_str!("../../deploy/mappings/okc-2.toml");

    #[test]
    fn the_shipped_mapping_parses() {
        let spec = MappingSpec::parse(SHIPPED, "okc-2.toml").expect("valid");
        assert_eq!(spec.life_domains.get("JGZ"), Some(&LifeDomain::YouthHealth));
    }

    #[test]
    fn an_unknown_field_is_reported_with_file_and_line() {
        let text = SHIPPED.replace("goal = \"doel\"", "goal = \"doel\"\ngoul = \"x\"");
        let err = MappingSpec::parse(&text, "m.toml")
            .expect_err("must fail")
            .to_string();
        let line = text
            .lines()
            .position(|l| l.starts_with("goul"))
            .expect("line")
            + 1;
        assert!(err.contains(&format!("m.toml:{line}")), "{err}");
        assert!(err.contains("goul"), "{err}");
    }

    #[test]
    fn a_bad_canonical_code_is_reported_with_its_line() {
        let text = SHIPPED.replace("JGZ = \"youth_health\"", "JGZ = \"youth_heath\"");
        let err = MappingSpec::parse(&text, "m.toml")
            .expect_err("must fail")
            .to_string();
        let line = text
            .lines()
            .position(|l| l.starts_with("JGZ"))
            .expect("line")
            + 1;
        assert!(err.contains(&format!("m.toml:{line}")), "{err}");
    }

    const WMO: &str = include_str!("../../deploy/mappings/wmo.toml");

    #[test]
    fn the_shipped_wmo_mapping_parses_with_directory_and_sensitive_codes() {
        let spec = MappingSpec::parse(WMO, "wmo.toml").expect("valid");
        assert_eq!(spec.sensitive_codes, vec!["16".to_owned(), "17".to_owned()]);
        assert_eq!(spec.life_domains.get("16"), Some(&LifeDomain::Housing));
        assert!(spec.directory.contains_key("WMO-THUISBEGELEIDING"));
    }

    #[test]
    fn a_sensitive_code_outside_the_code_table_is_reported_with_its_line() {
        let text = WMO.replace(
            "life_domain_codes = [\"16\", \"17\"]",
            "life_domain_codes = [\"16\", \"71\"]",
        );
        let err = MappingSpec::parse(&text, "m.toml")
            .expect_err("must fail")
            .to_string();
        let line = text
            .lines()
            .position(|l| l.starts_with("life_domain_codes"))
            .expect("line")
            + 1;
        assert!(
            err.contains(&format!("m.toml:{line}")) && err.contains("`71`"),
            "{err}"
        );
        let text = WMO.replace(
            "name = \"Zorgloket Thuisbegeleiding Amstel\"",
            "name = \" \"",
        );
        let err = MappingSpec::parse(&text, "m.toml")
            .expect_err("must fail")
            .to_string();
        assert!(err.contains("directory.WMO-THUISBEGELEIDING.name"), "{err}");
    }

    #[test]
    fn a_missing_code_table_and_a_bad_path_are_both_reported() {
        let text = SHIPPED
            .replace("[codes.status]\naangemeld = \"planned\"\nactief = \"active\"\nafgesloten = \"ended\"\n", "")
            .replace("team = \"team\"", "team = \"team//x\"");
        let err = MappingSpec::parse(&text, "m.toml")
            .expect_err("must fail")
            .to_string();
        assert!(err.contains("[codes.status] is missing"), "{err}");
        assert!(err.contains("team//x"), "{err}");
    }
}
