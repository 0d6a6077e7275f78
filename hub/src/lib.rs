//! The Matchpoint hub: the index store, the sync pipeline, configuration, synthetic data and
//! the commands of the `matchpoint` binary.
//!
//! - [`audit`]: the hash-chained audit trail of every access to personal data.
//! - [`config`]: the TOML configuration, checked completely at start-up.
//! - [`retention`]: the retention job (index, quarantine, audit trail).
//! - [`store`]: the published index, runs, staging and quarantine (SQLite or PostgreSQL).
//! - [`sources`]: one module per connector kind, from a configured source to raw records.
//! - [`sync`]: pull → map → validate → pseudonymise → stage → publish, per source and run.
//! - [`schedule`]: when each source runs (DST rule, catch-up, leases) and source staleness.
//! - [`generate`]: synthetic but realistic source data for demos, tests and benchmarks.
//! - [`users`]: API users, roles and bearer tokens.
//! - [`api`]: the lookup service's JSON API (axum router).
//! - [`sandbox`]: the simulated upstream systems (HTTP servers on loopback) with fault injection.
//! - [`failpoint`]: named pause points used by the crash-safety tests.

pub mod api;
pub mod audit;
pub mod config;
pub mod failpoint;
pub mod generate;
pub mod metrics;
pub mod retention;
pub mod sandbox;
pub mod schedule;
pub mod sources;
pub mod store;
pub mod sync;
#[cfg(test)]
pub(crate) mod testdb;
pub mod users;
