//! Canonical model and identity handling shared by every Matchpoint crate.
//!
//! - [`bsn`]: parsing and the elfproef; a `Bsn` never prints its digits.
//! - [`keys`], [`pseudonym`], [`sealed`]: the key file, keyed pseudonyms and sealed records.
//! - [`model`]: the canonical involvement record.
//! - [`registry`]: the shared organisation registry.
//! - [`raw`]: raw records as connectors deliver them.

pub mod bsn;
pub mod keys;
pub mod model;
pub mod pseudonym;
pub mod raw;
pub mod registry;
pub mod sealed;

pub use bsn::{Bsn, BsnError};
pub use keys::{KeyError, KeyId, KeyPurpose, MasterKey};
pub use model::{
    ContactPerson, EndReason, Involvement, InvolvementStatus, LifeDomain, Relation, RelationKind,
};
pub use pseudonym::{Pseudonym, Pseudonymiser};
pub use raw::{RawGroup, RawRecord, RecordPosition};
pub use registry::{Organisation, Registry};
pub use sealed::{SealError, Sealer};
