//! Declarative mapping: raw source records → validated, pseudonymised canonical involvements.
//!
//! - [`spec`]: the mapping file (field paths, code tables, dates, retention), checked at start-up.
//! - [`mapper`]: applies a spec to one raw record.
//! - [`reject`]: why a record was rejected, in words that never contain a BSN or name.

pub mod mapper;
pub mod reject;
pub mod spec;

pub use mapper::Mapper;
pub use reject::{RejectReason, Rejection};
pub use spec::{MappingError, MappingSpec};
