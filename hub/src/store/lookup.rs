//! Store queries for the lookup API: users, a person's involvements and relations, source
//! freshness and the data-quality report. Backends: `lookup_sqlite.rs`, `lookup_postgres.rs`.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{Store, StoreError};
use crate::users::{Role, User};

/// One published involvement with everything the lookup answer shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LookupRow {
    /// Source system name.
    pub source: String,
    /// The person's index pseudonym (32 bytes).
    pub person: Vec<u8>,
    /// Registry organisation code.
    pub organisation_code: String,
    /// Organisation name.
    pub organisation_name: String,
    /// Team.
    pub team: Option<String>,
    /// Life domain code.
    pub life_domain: String,
    /// Goal of the support.
    pub goal: Option<String>,
    /// Contact person's name.
    pub contact_name: String,
    /// Contact person's role.
    pub contact_role: Option<String>,
    /// Contact phone.
    pub contact_phone: Option<String>,
    /// Contact e-mail.
    pub contact_email: Option<String>,
    /// Start date (ISO).
    pub start_date: String,
    /// End date (ISO).
    pub end_date: Option<String>,
    /// `planned`, `active` or `ended`.
    pub status: String,
    /// The household's coordinator.
    pub coordinator: bool,
    /// Marked sensitive by the mapping.
    pub sensitive: bool,
    /// The person is shielded: never answered through break-the-glass.
    pub shielded: bool,
    /// End reason code, when the source gave one.
    pub end_reason_code: Option<String>,
    /// Its description.
    pub end_reason: Option<String>,
}

/// A relation of the looked-up person, seen from that person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersonRelation {
    /// `parent`, `child` or `household_member`: what the other person is to this one.
    pub kind: String,
    /// The other person's index pseudonym.
    pub other: Vec<u8>,
}

/// Everything one lookup reads, fetched in one store call.
#[derive(Debug, Clone, Default)]
pub struct HouseholdRows {
    /// The person's relations (one hop, both directions), from the person's point of view.
    pub relations: Vec<PersonRelation>,
    /// Involvements of the person and of every related person.
    pub rows: Vec<LookupRow>,
    /// Last successful sync per source.
    pub freshness: Vec<SourceFreshness>,
}

/// When a source last synced successfully.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SourceFreshness {
    /// Source name.
    pub source: String,
    /// Finish time of its last successful run.
    pub last_success_at: Option<DateTime<Utc>>,
}

/// How carefully one run's delivery was filled in.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QualityRow {
    /// Run id.
    pub run_id: i64,
    /// Source.
    pub source: String,
    /// Start time.
    pub started_at: DateTime<Utc>,
    /// Run status.
    pub status: String,
    /// Records read.
    pub read: u64,
    /// Records rejected.
    pub rejected: u64,
    /// Records rejected for a BSN failing the elfproef.
    pub invalid_bsn: u64,
    /// Records rejected for a missing contact person.
    pub missing_contact: u64,
    /// Records rejected for a code the mapping or registry does not know.
    pub unknown_code: u64,
}

/// Inverts a relation kind: if Q is P's parent, P is Q's child.
pub(crate) fn inverse_kind(kind: &str) -> &'static str {
    match kind {
        "parent" => "child",
        "child" => "parent",
        _ => "household_member",
    }
}

pub(crate) fn role_of(code: &str) -> Result<Role, StoreError> {
    code.parse()
        .map_err(|_| StoreError::db("read users", "a stored role code is unknown"))
}

macro_rules! dispatch {
    ($self:ident, $s:ident => $e:expr) => {
        match $self {
            Store::Sqlite($s) => $e,
            Store::Postgres($s) => $e,
        }
    };
}

impl Store {
    /// Adds a user with the hash of their token; returns the new id.
    pub async fn add_user(
        &self,
        name: &str,
        role: Role,
        organisation: &str,
        token_hash: [u8; 32],
    ) -> Result<i64, StoreError> {
        dispatch!(self, s => s.add_user(name, role, organisation, token_hash).await)
    }

    /// Every user, by id.
    pub async fn users(&self) -> Result<Vec<User>, StoreError> {
        dispatch!(self, s => s.users().await)
    }

    /// Disables (or re-enables) a user; `false` when there is no such user.
    pub async fn set_user_disabled(&self, id: i64, disabled: bool) -> Result<bool, StoreError> {
        dispatch!(self, s => s.set_user_disabled(id, disabled).await)
    }

    /// The user holding the token with this hash, if any.
    pub async fn user_by_token(&self, token_hash: [u8; 32]) -> Result<Option<User>, StoreError> {
        dispatch!(self, s => s.user_by_token(token_hash).await)
    }

    /// Published involvements of these persons (index pseudonyms), any status.
    pub async fn person_involvements(
        &self,
        persons: Vec<Vec<u8>>,
    ) -> Result<Vec<LookupRow>, StoreError> {
        dispatch!(self, s => s.person_involvements(persons).await)
    }

    /// The person's relations in both directions (one hop), from the person's point of view.
    pub async fn person_relations(
        &self,
        person: Vec<u8>,
    ) -> Result<Vec<PersonRelation>, StoreError> {
        dispatch!(self, s => s.person_relations(person).await)
    }

    /// The person's relations, the involvements of the person and of every related person,
    /// and source freshness, in one call (one hop to the store's thread on SQLite).
    ///
    /// `selves` are the person's index pseudonyms under every loaded key version (during a
    /// key rotation a person's rows may carry either); relations and involvements of all of
    /// them are returned.
    pub async fn household_rows(&self, selves: Vec<Vec<u8>>) -> Result<HouseholdRows, StoreError> {
        dispatch!(self, s => s.household_rows(selves).await)
    }

    /// Last successful sync per source.
    pub async fn source_freshness(&self) -> Result<Vec<SourceFreshness>, StoreError> {
        dispatch!(self, s => s.source_freshness().await)
    }

    /// Data quality per run, newest first.
    pub async fn data_quality(
        &self,
        source: Option<&str>,
        limit: u64,
    ) -> Result<Vec<QualityRow>, StoreError> {
        dispatch!(self, s => s.data_quality(source, limit).await)
    }

    /// Whether the store answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        dispatch!(self, s => s.ping().await)
    }
}
