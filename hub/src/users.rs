//! Users of the lookup API: roles, organisations and bearer tokens.
//!
//! A token is 256 random bits, shown once as 64 hex characters and stored only as its SHA-256
//! hash, so a copy of the database does not hold usable tokens. [`Token`] never prints itself
//! in `Debug`.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// What a user may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Looks up persons under need-to-know (youth nurse, case manager, …).
    Professional,
    /// Reviews the audit trail, break-glass accesses and subject access reports.
    PrivacyOfficer,
    /// Watches sync runs, quarantine and data quality; sees no personal data.
    Operator,
    /// Manages users; also sees the operator views.
    Admin,
}

impl Role {
    /// Every role, in documentation order.
    pub const ALL: [Role; 4] = [
        Role::Professional,
        Role::PrivacyOfficer,
        Role::Operator,
        Role::Admin,
    ];

    /// The stored code.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Professional => "professional",
            Role::PrivacyOfficer => "privacy_officer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A role code that is not one of [`Role::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown role `{0}`: use professional, privacy_officer, operator or admin")]
pub struct UnknownRole(pub String);

impl FromStr for Role {
    type Err = UnknownRole;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| UnknownRole(s.chars().take(40).collect()))
    }
}

/// A user as stored (without the token hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct User {
    /// User id.
    pub id: i64,
    /// Display name of the professional.
    pub name: String,
    /// Role.
    pub role: Role,
    /// Registry code of the user's organisation.
    pub organisation: String,
    /// A disabled user's token is refused.
    pub disabled: bool,
    /// When the user was added.
    pub created_at: DateTime<Utc>,
}

/// A bearer token in the clear: only ever shown once, to the person who created it.
pub struct Token(String);

impl Token {
    /// 256 random bits from the operating system's generator, as 64 hex characters.
    pub fn generate() -> Token {
        let bytes: [u8; 32] = rand::random();
        Token(hex::encode(bytes))
    }

    /// The token text, to print once.
    pub fn reveal(&self) -> &str {
        &self.0
    }

    /// The hash stored in the users table.
    pub fn hash(&self) -> [u8; 32] {
        token_hash(&self.0)
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// SHA-256 of a presented token (a token has 256 bits of entropy, so an unsalted fast hash is
/// enough: there is nothing to brute-force).
pub fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.trim().as_bytes()).into()
}

/// Checks a user name or organisation code given on the command line.
pub fn check_label(what: &str, value: &str) -> Result<(), String> {
    if value.trim().is_empty() || value.chars().count() > 100 {
        return Err(format!("{what} must be 1-100 characters"));
    }
    if value.chars().any(char::is_control) {
        return Err(format!("{what} must not contain control characters"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_round_trip_and_unknown_roles_are_refused() {
        for r in Role::ALL {
            assert_eq!(r.as_str().parse::<Role>(), Ok(r));
        }
        assert!("root".parse::<Role>().is_err());
    }

    #[test]
    fn tokens_are_256_bits_differ_and_never_print() {
        let a = Token::generate();
        let b = Token::generate();
        assert_eq!(a.reveal().len(), 64);
        assert_ne!(a.reveal(), b.reveal());
        assert_eq!(a.hash(), token_hash(a.reveal()));
        assert_ne!(a.hash(), b.hash());
        assert!(!format!("{a:?}").contains(a.reveal()));
    }
}
