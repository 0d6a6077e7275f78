//! The simulated upstream systems of `matchpoint sandbox`.
//!
//! - [`supplier_db`]: the supplier databases of the SQL sources (okc-4, RIS) in SQLite,
//!   PostgreSQL or MariaDB/MySQL, created, filled and changed between runs.

pub mod supplier_db;
