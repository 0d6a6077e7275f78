//! Applies a [`MappingSpec`] to one raw record: validate, resolve codes, pseudonymise.

use std::sync::Arc;

use chrono::{Months, NaiveDate};
use matchpoint_schemas::{
    Bsn, BsnError, ContactPerson, EndReason, Involvement, InvolvementStatus, Pseudonymiser,
    RawRecord, Registry, Relation,
};

use crate::reject::{RejectReason, Rejection};
use crate::spec::MappingSpec;

/// Maps one source's raw records to canonical involvements.
#[derive(Debug, Clone)]
pub struct Mapper {
    source: String,
    spec: MappingSpec,
    registry: Arc<Registry>,
    pseudonymiser: Pseudonymiser,
    /// Index pseudonymisers of the other loaded key versions (during a key rotation).
    relation_versions: Vec<Pseudonymiser>,
}

fn non_empty(v: Option<&str>) -> Option<&str> {
    v.map(str::trim).filter(|s| !s.is_empty())
}

impl Mapper {
    /// A mapper for `source` with its spec, the shared registry and the index pseudonymiser.
    pub fn new(
        source: &str,
        spec: MappingSpec,
        registry: Arc<Registry>,
        pseudonymiser: Pseudonymiser,
    ) -> Self {
        Mapper {
            source: source.to_owned(),
            spec,
            registry,
            pseudonymiser,
            relation_versions: Vec::new(),
        }
    }

    /// During a key rotation: relations also name the other person under each of these
    /// versions (those with the mapper's own key id are skipped), so a household is found
    /// whichever version the other person's rows still carry.
    pub fn with_relation_versions(mut self, versions: Vec<Pseudonymiser>) -> Self {
        let own = self.pseudonymiser.key_id().clone();
        self.relation_versions = versions
            .into_iter()
            .filter(|p| p.key_id() != &own)
            .collect();
        self
    }

    /// The source this mapper is for.
    pub fn source(&self) -> &str {
        &self.source
    }

    fn opt<'r>(&self, raw: &'r RawRecord, path: &Option<String>) -> Option<&'r str> {
        path.as_deref().and_then(|p| non_empty(raw.field(p)))
    }

    fn date(&self, value: &str, field: &str) -> Result<NaiveDate, Rejection> {
        NaiveDate::parse_from_str(value, &self.spec.date_format)
            .map_err(|_| Rejection::at(field, RejectReason::BadDate))
    }

    fn bsn(value: Option<&str>, field: &str) -> Result<Bsn, Rejection> {
        let v = value.ok_or_else(|| Rejection::at(field, RejectReason::MissingBsn))?;
        Bsn::parse(v).map_err(|e| {
            Rejection::at(
                field,
                match e {
                    BsnError::InvalidCharacters
                    | BsnError::WrongLength(_)
                    | BsnError::AllZero
                    | BsnError::Elfproef => RejectReason::InvalidBsn,
                },
            )
        })
    }

    /// Validates and maps one record. The clear BSN lives only inside this call.
    pub fn map(&self, raw: &RawRecord) -> Result<Involvement, Rejection> {
        let f = &self.spec.fields;
        let record_id = non_empty(raw.record_id.as_deref()).ok_or(Rejection {
            field: None,
            reason: RejectReason::MissingField,
        })?;
        let bsn = Self::bsn(non_empty(raw.field(&f.bsn)), &f.bsn)?;

        let org_code = self
            .opt(raw, &f.organisation)
            .or(self.spec.defaults.organisation.as_deref())
            .ok_or_else(|| {
                Rejection::at(
                    f.organisation.as_deref().unwrap_or("organisation"),
                    RejectReason::MissingField,
                )
            })?;
        let org = self
            .registry
            .resolve(&self.source, org_code)
            .ok_or_else(|| {
                Rejection::at(
                    f.organisation.as_deref().unwrap_or("organisation"),
                    RejectReason::UnknownCode {
                        table: "organisation",
                        code: org_code.to_owned(),
                    },
                )
            })?;

        let domain_code = non_empty(raw.field(&f.life_domain))
            .ok_or_else(|| Rejection::at(&f.life_domain, RejectReason::MissingField))?;
        let life_domain = *self.spec.life_domains.get(domain_code).ok_or_else(|| {
            Rejection::at(
                &f.life_domain,
                RejectReason::UnknownCode {
                    table: "life_domain",
                    code: domain_code.to_owned(),
                },
            )
        })?;

        // The delivered contact person, else the mapping's directory entry of the organisation.
        let contact = match non_empty(raw.field(&f.contact_name)) {
            Some(name) => ContactPerson {
                name: name.to_owned(),
                role: self.opt(raw, &f.contact_role).map(str::to_owned),
                phone: self.opt(raw, &f.contact_phone).map(str::to_owned),
                email: self.opt(raw, &f.contact_email).map(str::to_owned),
            },
            None => match self.spec.directory.get(&org.code) {
                Some(e) => ContactPerson {
                    name: e.name.clone(),
                    role: e.role.clone(),
                    phone: e.phone.clone(),
                    email: e.email.clone(),
                },
                None => {
                    return Err(Rejection::at(&f.contact_name, RejectReason::MissingField));
                }
            },
        };

        let start_raw = non_empty(raw.field(&f.start_date))
            .ok_or_else(|| Rejection::at(&f.start_date, RejectReason::MissingField))?;
        let start_date = self.date(start_raw, &f.start_date)?;
        let end_date = match self.opt(raw, &f.end_date) {
            Some(v) => Some(self.date(v, f.end_date.as_deref().unwrap_or("end_date"))?),
            None => None,
        };
        if let Some(end) = end_date
            && end < start_date
        {
            return Err(Rejection::at(
                f.end_date.as_deref().unwrap_or("end_date"),
                RejectReason::EndBeforeStart,
            ));
        }
        let birth_date = match self.opt(raw, &f.birth_date) {
            Some(v) => Some(self.date(v, f.birth_date.as_deref().unwrap_or("birth_date"))?),
            None => None,
        };

        let status = match self.opt(raw, &f.status) {
            Some(code) => *self.spec.statuses.get(code).ok_or_else(|| {
                Rejection::at(
                    f.status.as_deref().unwrap_or("status"),
                    RejectReason::UnknownCode {
                        table: "status",
                        code: code.to_owned(),
                    },
                )
            })?,
            None if end_date.is_some() => InvolvementStatus::Ended,
            None => InvolvementStatus::Active,
        };
        let coordinator = match self.opt(raw, &f.coordinator) {
            Some(code) => *self.spec.coordinator.get(code).ok_or_else(|| {
                Rejection::at(
                    f.coordinator.as_deref().unwrap_or("coordinator"),
                    RejectReason::UnknownCode {
                        table: "coordinator",
                        code: code.to_owned(),
                    },
                )
            })?,
            None => false,
        };
        let shielded = match self.opt(raw, &f.shielded) {
            Some(code) => *self.spec.shielded.get(code).ok_or_else(|| {
                Rejection::at(
                    f.shielded.as_deref().unwrap_or("shielded"),
                    RejectReason::UnknownCode {
                        table: "shielded",
                        code: code.to_owned(),
                    },
                )
            })?,
            None => false,
        };
        let end_reason = match self.opt(raw, &f.end_reason) {
            Some(code) => {
                let description = self.spec.end_reasons.get(code).ok_or_else(|| {
                    Rejection::at(
                        f.end_reason.as_deref().unwrap_or("end_reason"),
                        RejectReason::UnknownCode {
                            table: "end_reason",
                            code: code.to_owned(),
                        },
                    )
                })?;
                Some(EndReason {
                    code: code.to_owned(),
                    description: description.clone(),
                })
            }
            None => None,
        };

        let mut relations = Vec::new();
        if let Some(rp) = &self.spec.relations {
            for g in raw.groups.iter().filter(|g| g.path == rp.group) {
                let field = format!("{}/{}", rp.group, rp.bsn);
                let other = Self::bsn(non_empty(g.field(&rp.bsn)), &field)?;
                let kind_field = format!("{}/{}", rp.group, rp.kind);
                let code = non_empty(g.field(&rp.kind))
                    .ok_or_else(|| Rejection::at(&kind_field, RejectReason::MissingField))?;
                let kind = *self.spec.relation_kinds.get(code).ok_or_else(|| {
                    Rejection::at(
                        &kind_field,
                        RejectReason::UnknownCode {
                            table: "relation_kind",
                            code: code.to_owned(),
                        },
                    )
                })?;
                relations.push(Relation {
                    kind,
                    other: self.pseudonymiser.pseudonymise(&other),
                });
                for p in &self.relation_versions {
                    relations.push(Relation {
                        kind,
                        other: p.pseudonymise(&other),
                    });
                }
            }
            relations.sort();
            relations.dedup();
        }

        let purge_by_end = end_date
            .and_then(|e| e.checked_add_months(Months::new(self.spec.retention.ended_months)));
        // The age limit is a rule for youth records: it applies when the person was under the
        // limit when the involvement started (an adult's record is not purged by age).
        let purge_by_age = match (birth_date, self.spec.retention.age_limit_years) {
            (Some(b), Some(years)) => b
                .checked_add_months(Months::new(years.saturating_mul(12)))
                .filter(|limit| *limit > start_date),
            _ => None,
        };
        let purge_after = match (purge_by_end, purge_by_age) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };

        Ok(Involvement {
            person: self.pseudonymiser.pseudonymise(&bsn),
            key_id: self.pseudonymiser.key_id().to_string(),
            organisation_code: org.code.clone(),
            organisation_name: org.name.clone(),
            team: self.opt(raw, &f.team).map(str::to_owned),
            life_domain,
            goal: self.opt(raw, &f.goal).map(str::to_owned),
            contact,
            start_date,
            end_date,
            end_reason,
            status,
            coordinator,
            sensitive: self.spec.sensitive_domains.contains(&life_domain)
                || self.spec.sensitive_codes.iter().any(|c| c == domain_code),
            shielded,
            purge_after,
            source: self.source.clone(),
            source_record_id: record_id.to_owned(),
            relations,
        })
    }
}

#[cfg(test)]
mod tests;
