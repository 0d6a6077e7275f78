//! `POST /api/v1/lookups`: who is involved with this person and their household — under need
//! to know, with break-the-glass.
//!
//! Rules:
//! - The BSN travels only in the body; an invalid one gets 400 "fails the elfproef" without
//!   the digits.
//! - `purpose` is one of [`PURPOSES`].
//! - Household = the persons directly related to the looked-up person (parent, child,
//!   household member), one hop, in either direction of the stored relation.
//! - Need to know: the caller's organisation has an `active` involvement with the person or a
//!   household member. Otherwise 403 with [`super::error::NEED_TO_KNOW`] — the same bytes
//!   whether or not the person is in the index.
//! - Break-the-glass: `break_glass_reason {code, justification}` answers anyway, flagged and
//!   queued for the privacy officer; never for a shielded person; a justification holding
//!   anything BSN-like is refused.
//! - Sensitive involvements of *other* organisations are shown without goal and with the
//!   organisation's general contact instead of the named professional.
//! - Every outcome writes exactly one audit entry before the response (fail-closed: 503).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use matchpoint_schemas::Bsn;
use serde::{Deserialize, Serialize};

use super::auth::Caller;
use super::body::JsonBody;
use super::{ApiError, AppState};
use crate::audit::{AuditAction, AuditOutcome};
use crate::store::lookup::LookupRow;
use crate::users::Role;

/// Purpose codes a lookup may state: (code, meaning).
pub const PURPOSES: &[(&str, &str)] = &[
    (
        "coordinating_care",
        "coordinating support around a person or household (1 household, 1 plan, 1 coordinator)",
    ),
    (
        "safety_assessment",
        "assessing the safety of a child or adult",
    ),
    ("referral", "referring the person to another organisation"),
    (
        "intake",
        "intake of a new client, to find who is already involved",
    ),
    ("crisis_response", "responding to an acute crisis"),
];

/// Break-the-glass reason codes: (code, meaning).
pub const BREAK_GLASS_REASONS: &[(&str, &str)] = &[
    (
        "acute_safety",
        "immediate danger to the safety of a child or adult",
    ),
    (
        "crisis",
        "an acute crisis where the involved organisations must be reached now",
    ),
    (
        "continuity_of_care",
        "care would be interrupted without contacting the involved organisation",
    ),
];

/// Longest break-glass justification, in characters.
pub const MAX_JUSTIFICATION_CHARS: usize = 500;

/// The request body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LookupRequest {
    /// The BSN (8 or 9 digits; spaces, dots and dashes allowed).
    pub bsn: String,
    /// One of [`PURPOSES`].
    pub purpose: String,
    /// Break-the-glass reason, only after a need-to-know refusal.
    #[serde(default)]
    pub break_glass_reason: Option<BreakGlassReason>,
}

/// A coded reason plus a short justification.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakGlassReason {
    /// One of [`BREAK_GLASS_REASONS`].
    pub code: String,
    /// A short explanation without any BSN.
    pub justification: String,
}

/// One involvement as answered.
#[derive(Debug, Serialize, PartialEq)]
pub struct InvolvementView {
    /// Organisation code and name.
    pub organisation: OrganisationView,
    /// Team.
    pub team: Option<String>,
    /// Life domain code.
    pub life_domain: String,
    /// Goal; withheld for sensitive involvements of other organisations.
    pub goal: Option<String>,
    /// Who to contact.
    pub contact: ContactView,
    /// Start and end.
    pub period: Period,
    /// Why it ended, when the source says (iWmo: the WMO588 reason of the stop); withheld
    /// for sensitive involvements of other organisations, like the goal.
    pub end_reason: Option<EndReasonView>,
    /// `planned`, `active` or `ended`.
    pub status: String,
    /// The household's coordinator.
    pub coordinator: bool,
    /// Details are restricted because the involvement is sensitive.
    pub restricted: bool,
    /// Source system.
    pub source: String,
    /// When that source last synced successfully.
    pub source_synced_at: Option<DateTime<Utc>>,
    /// Whether that source's data is stale: its last successful sync is older than
    /// `[schedule] stale_after_hours`, or it never synced.
    pub source_stale: bool,
}

/// Organisation of an involvement.
#[derive(Debug, Serialize, PartialEq)]
pub struct OrganisationView {
    /// Registry code.
    pub code: String,
    /// Name.
    pub name: String,
}

/// The contact: a named professional, or the organisation's general contact.
#[derive(Debug, Serialize, PartialEq)]
pub struct ContactView {
    /// The professional's name (absent when restricted).
    pub name: Option<String>,
    /// Their role.
    pub role: Option<String>,
    /// Phone.
    pub phone: Option<String>,
    /// E-mail.
    pub email: Option<String>,
    /// The organisation's general contact (restricted involvements).
    pub general: Option<String>,
}

/// Start and end date.
#[derive(Debug, Serialize, PartialEq)]
pub struct Period {
    /// First day.
    pub start: String,
    /// Last day, when known.
    pub end: Option<String>,
}

/// Why an involvement ended: the source's code and its description.
#[derive(Debug, Serialize, PartialEq)]
pub struct EndReasonView {
    /// The source's code, e.g. WMO588 `19`.
    pub code: String,
    /// Its description, e.g. "Levering volgens plan beeindigd".
    pub description: String,
}

/// A household member's involvements (the member is not identified).
#[derive(Debug, Serialize)]
pub struct HouseholdView {
    /// What the member is to the looked-up person (`parent`, `child`, `household_member`).
    pub relation: String,
    /// The member's involvements.
    pub involvements: Vec<InvolvementView>,
}

/// The answer.
#[derive(Debug, Serialize)]
pub struct LookupResponse {
    /// The person's own involvements.
    pub involvements: Vec<InvolvementView>,
    /// Household members' involvements, marked as such.
    pub household: Vec<HouseholdView>,
    /// E.g. several organisations and no coordinator.
    pub warnings: Vec<String>,
    /// Answered through break-the-glass (flagged, queued for review).
    pub break_glass: bool,
}

/// True when `text` holds something that looks like a BSN: 9 or more digits, or 8 digits
/// (an old BSN without its leading zero), possibly split by single spaces, dots or dashes
/// (`123456782`, `1234.56.782`, `12 34 56 782`). Eight digits shaped like a date (4-2-2 or
/// 2-2-4, as in `2024-01-31`) are allowed.
pub fn looks_like_bsn(text: &str) -> bool {
    fn bsn_like(groups: &[usize]) -> bool {
        let total: usize = groups.iter().sum();
        total >= 9 || (total == 8 && !matches!(groups, [4, 2, 2] | [2, 2, 4]))
    }
    let mut groups: Vec<usize> = Vec::new();
    let mut current = 0usize;
    let mut after_separator = false;
    for c in text.chars() {
        if c.is_ascii_digit() {
            current += 1;
            after_separator = false;
        } else if matches!(c, ' ' | '.' | '-') && current > 0 && !after_separator {
            groups.push(current);
            current = 0;
            after_separator = true;
        } else {
            if current > 0 {
                groups.push(current);
                current = 0;
            }
            if bsn_like(&groups) {
                return true;
            }
            groups.clear();
            after_separator = false;
        }
    }
    if current > 0 {
        groups.push(current);
    }
    bsn_like(&groups)
}

fn check_break_glass(reason: &BreakGlassReason) -> Result<(), String> {
    if !BREAK_GLASS_REASONS.iter().any(|(c, _)| *c == reason.code) {
        return Err(format!(
            "break_glass_reason.code must be one of: {}.",
            codes(BREAK_GLASS_REASONS)
        ));
    }
    let n = reason.justification.trim().chars().count();
    if !(10..=MAX_JUSTIFICATION_CHARS).contains(&n) {
        return Err(format!(
            "break_glass_reason.justification must be 10-{MAX_JUSTIFICATION_CHARS} characters."
        ));
    }
    if looks_like_bsn(&reason.justification) {
        return Err(
            "break_glass_reason.justification must not contain a BSN or any other \
                    number of 8 or more digits; describe the reason in words."
                .to_owned(),
        );
    }
    if reason.justification.chars().any(char::is_control) {
        return Err(
            "break_glass_reason.justification must not contain control characters.".to_owned(),
        );
    }
    Ok(())
}

/// The 400 message for a BSN that does not parse; never holds the digits.
pub fn bsn_message(e: matchpoint_schemas::BsnError) -> String {
    match e {
        matchpoint_schemas::BsnError::Elfproef => {
            "The BSN fails the elfproef (the check on its digits); check the number. It is \
             not repeated here."
                .to_owned()
        }
        other => format!("The BSN is malformed: {other}. It is not repeated here."),
    }
}

fn codes(list: &[(&str, &str)]) -> String {
    list.iter().map(|(c, _)| *c).collect::<Vec<_>>().join(", ")
}

/// `POST /api/v1/lookups`; counted in `matchpoint_lookups_total` by outcome.
pub async fn lookup(
    state: State<AppState>,
    caller: Caller,
    body: Result<JsonBody<LookupRequest>, ApiError>,
) -> Result<Json<LookupResponse>, ApiError> {
    let started = std::time::Instant::now();
    let result = lookup_inner(state, caller, body).await;
    let (outcome, break_glass) = match &result {
        Ok(Json(r)) if r.involvements.is_empty() && r.household.is_empty() => {
            ("not_found", r.break_glass)
        }
        Ok(Json(r)) => ("found", r.break_glass),
        Err(ApiError::NeedToKnow | ApiError::Shielded | ApiError::WrongRole) => ("denied", false),
        Err(ApiError::Unauthorized) => ("denied", false),
        Err(ApiError::BadRequest(_) | ApiError::TooLarge) => ("invalid", false),
        Err(_) => ("error", false),
    };
    crate::metrics::global().lookup(outcome, started.elapsed().as_secs_f64(), break_glass);
    result
}

async fn lookup_inner(
    State(state): State<AppState>,
    caller: Caller,
    body: Result<JsonBody<LookupRequest>, ApiError>,
) -> Result<Json<LookupResponse>, ApiError> {
    caller
        .require_audited(&state, &[Role::Professional], AuditAction::Lookup)
        .await?;
    let invalid = |message: String, purpose: Option<String>| {
        let mut entry = caller.entry(AuditAction::Lookup, AuditOutcome::Invalid);
        entry.checks.push("role".to_owned());
        entry.purpose = purpose;
        (entry, ApiError::BadRequest(message))
    };
    let req = match body {
        Ok(JsonBody(req)) => req,
        Err(error) => {
            let (entry, _) = invalid(String::new(), None);
            state.record(entry).await?;
            return Err(error);
        }
    };
    let purpose_ok = PURPOSES.iter().any(|(c, _)| *c == req.purpose);
    let purpose = purpose_ok.then(|| req.purpose.clone());
    if !purpose_ok {
        let (entry, error) = invalid(
            format!("purpose must be one of: {}.", codes(PURPOSES)),
            None,
        );
        state.record(entry).await?;
        return Err(error);
    }
    let bsn = match Bsn::parse(&req.bsn) {
        Ok(b) => b,
        Err(e) => {
            let (entry, error) = invalid(bsn_message(e), purpose);
            state.record(entry).await?;
            return Err(error);
        }
    };
    let (subject, subject_key_id) = state.audit_subject(&bsn);
    if let Some(reason) = &req.break_glass_reason
        && let Err(message) = check_break_glass(reason)
    {
        let (mut entry, error) = invalid(message, purpose);
        entry.subject = Some(subject);
        entry.subject_key_id = Some(subject_key_id);
        state.record(entry).await?;
        return Err(error);
    }

    // Every loaded key version: rows of sources not yet re-keyed carry an older one.
    let selves = state.index_pseudonyms(&bsn);
    drop(bsn);
    let is_self = |p: &[u8]| selves.iter().any(|s| s.as_slice() == p);
    let mut entry = caller.entry(AuditAction::Lookup, AuditOutcome::Granted);
    entry.checks.push("role".to_owned());
    entry.purpose = purpose;
    entry.subject = Some(subject);
    entry.subject_key_id = Some(subject_key_id);
    let loaded = state.store().household_rows(selves.clone()).await.map(|h| {
        // One relation kind per member: parent/child win over household_member.
        let mut members: BTreeMap<Vec<u8>, String> = BTreeMap::new();
        for r in h.relations {
            if is_self(&r.other) {
                continue;
            }
            let slot = members.entry(r.other).or_insert_with(|| r.kind.clone());
            if slot == "household_member" {
                *slot = r.kind;
            }
        }
        let fresh: HashMap<String, Option<DateTime<Utc>>> = h
            .freshness
            .into_iter()
            .map(|f| (f.source, f.last_success_at))
            .collect();
        (members, h.rows, fresh)
    });
    let (members, rows, fresh) = match loaded {
        Ok(l) => l,
        Err(error) => {
            tracing::error!(%error, "Lookup failed in the store.");
            entry.outcome = AuditOutcome::Error;
            state.record(entry).await?;
            return Err(ApiError::Internal);
        }
    };
    let org = caller.user.organisation.as_str();
    let involved_with = |p: &[u8]| {
        rows.iter()
            .any(|r| r.person == p && r.organisation_code == org && r.status == "active")
    };
    let relationship = if selves.iter().any(|s| involved_with(s)) {
        Some("relationship:person")
    } else if members.keys().any(|m| involved_with(m)) {
        Some("relationship:household")
    } else {
        None
    };

    let break_glass = match (relationship, &req.break_glass_reason) {
        (Some(rel), _) => {
            entry.checks.push(rel.to_owned());
            false
        }
        (None, None) => {
            entry.checks.push("relationship:none".to_owned());
            entry.outcome = AuditOutcome::Refused;
            state.record(entry).await?;
            return Err(ApiError::NeedToKnow);
        }
        (None, Some(reason)) => {
            entry.checks.push("relationship:none".to_owned());
            entry.action = AuditAction::BreakGlassLookup;
            entry.break_glass = Some(format!("{}: {}", reason.code, reason.justification.trim()));
            entry.checks.push(format!("break_glass:{}", reason.code));
            if rows.iter().any(|r| is_self(&r.person) && r.shielded) {
                entry.checks.push("shielded".to_owned());
                entry.outcome = AuditOutcome::Refused;
                state.record(entry).await?;
                return Err(ApiError::Shielded);
            }
            entry.outcome = AuditOutcome::BreakGlass;
            true
        }
    };

    let view = |r: &LookupRow| involvement_view(&state, org, &fresh, r);
    let own: Vec<InvolvementView> = rows
        .iter()
        .filter(|r| is_self(&r.person))
        .map(view)
        .collect();
    let mut household = Vec::new();
    for (member, relation) in &members {
        let involvements: Vec<InvolvementView> = rows
            .iter()
            .filter(|r| &r.person == member)
            .map(view)
            .collect();
        if !involvements.is_empty() {
            household.push(HouseholdView {
                relation: relation.clone(),
                involvements,
            });
        }
    }
    let warnings = coordinator_warning(&rows).into_iter().collect();
    let returned = own.len()
        + household
            .iter()
            .map(|h| h.involvements.len())
            .sum::<usize>();
    entry.records_returned = u32::try_from(returned).unwrap_or(u32::MAX);
    state.record(entry).await?;
    Ok(Json(LookupResponse {
        involvements: own,
        household,
        warnings,
        break_glass,
    }))
}

fn involvement_view(
    state: &AppState,
    requester_org: &str,
    fresh: &HashMap<String, Option<DateTime<Utc>>>,
    r: &LookupRow,
) -> InvolvementView {
    let restricted = r.sensitive && r.organisation_code != requester_org;
    let contact = if restricted {
        let general = state
            .registry()
            .organisations()
            .iter()
            .find(|o| o.code == r.organisation_code)
            .and_then(|o| o.general_contact.clone());
        ContactView {
            name: None,
            role: None,
            phone: None,
            email: None,
            general,
        }
    } else {
        ContactView {
            name: Some(r.contact_name.clone()),
            role: r.contact_role.clone(),
            phone: r.contact_phone.clone(),
            email: r.contact_email.clone(),
            general: None,
        }
    };
    InvolvementView {
        organisation: OrganisationView {
            code: r.organisation_code.clone(),
            name: r.organisation_name.clone(),
        },
        team: r.team.clone(),
        life_domain: r.life_domain.clone(),
        goal: if restricted { None } else { r.goal.clone() },
        contact,
        period: Period {
            start: r.start_date.clone(),
            end: r.end_date.clone(),
        },
        end_reason: if restricted {
            None
        } else {
            r.end_reason_code.clone().map(|code| EndReasonView {
                code,
                description: r.end_reason.clone().unwrap_or_default(),
            })
        },
        status: r.status.clone(),
        coordinator: r.coordinator,
        restricted,
        source: r.source.clone(),
        source_synced_at: fresh.get(&r.source).copied().flatten(),
        source_stale: crate::schedule::is_stale(
            fresh.get(&r.source).copied().flatten(),
            Utc::now(),
            state.stale_after(),
        ),
    }
}

/// "1 household, 1 plan, 1 coordinator": a warning when several organisations are currently
/// involved (planned or active) with the person and household and none is coordinator.
pub fn coordinator_warning(rows: &[LookupRow]) -> Option<String> {
    let current = rows.iter().filter(|r| r.status != "ended");
    let mut orgs = BTreeSet::new();
    let mut coordinated = false;
    for r in current {
        orgs.insert(r.organisation_code.as_str());
        coordinated |= r.coordinator;
    }
    (orgs.len() > 1 && !coordinated).then(|| {
        format!(
            "{} organisations are involved with this household and none is marked coordinator: \
             agree on one coordinator (1 household, 1 plan, 1 coordinator).",
            orgs.len()
        )
    })
}
