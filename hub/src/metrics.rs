//! Prometheus metrics: the names (one place, [`names`]), the process-wide registry
//! ([`global`]) and the hooks the sync pipeline, the scheduler and the API call.
//!
//! The names are the contract of `docs/instrumentation.md` and the alert rules in
//! `deploy/prometheus/`; a test checks that every name the alert rules use is registered here
//! and every registered name is in the spec.
//!
//! Labels take bounded values only: configured source names, fixed enumerations (mode,
//! status, outcome, status class) and route *templates*. Never a pseudonym, user, BSN, record
//! id or raw path: that is why `/metrics` can be served without authentication (see
//! `docs/instrumentation.md`, "Exposition").
//!
//! The text exposition ([`Metrics::render`]) is OpenMetrics text, as written by the
//! `prometheus-client` crate.

use std::sync::OnceLock;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::schedule::Freshness;
use crate::store::{IndexGauges, RunRecord};

/// How long `serve` reuses the index and quarantine gauges ([`Metrics::set_index_gauges`])
/// before a scrape counts again: two `GROUP BY` queries at most once a minute per replica,
/// however often Prometheus scrapes.
pub const GAUGE_TTL: std::time::Duration = std::time::Duration::from_secs(60);

/// Metric names, exactly as in `docs/instrumentation.md`.
pub mod names {
    /// Finished sync runs by `source`, `mode`, `status`.
    pub const SYNC_RUNS_TOTAL: &str = "matchpoint_sync_runs_total";
    /// Run duration histogram by `source`, `mode`.
    pub const SYNC_RUN_DURATION_SECONDS: &str = "matchpoint_sync_run_duration_seconds";
    /// Records through the pipeline by `source`, `outcome` (read, accepted, rejected).
    pub const SYNC_RECORDS_TOTAL: &str = "matchpoint_sync_records_total";
    /// Published changes by `source`, `change` (inserted, updated, ended).
    pub const SYNC_INVOLVEMENTS_CHANGED_TOTAL: &str = "matchpoint_sync_involvements_changed_total";
    /// Held runs awaiting a decision, by `source`.
    pub const SOURCE_HELD_RUNS: &str = "matchpoint_source_held_runs";
    /// End of the last published run (Unix time), by `source`.
    pub const SOURCE_LAST_SUCCESS_TIMESTAMP_SECONDS: &str =
        "matchpoint_source_last_success_timestamp_seconds";
    /// Seconds since the last published run, by `source`.
    pub const SOURCE_AGE_SECONDS: &str = "matchpoint_source_age_seconds";
    /// 1 when the source is stale, by `source`.
    pub const SOURCE_STALE: &str = "matchpoint_source_stale";
    /// Due runs not started here, by `source`, `reason`.
    pub const SCHEDULER_SKIPPED_TOTAL: &str = "matchpoint_scheduler_skipped_total";
    /// Unresolved quarantined records, by `source`.
    pub const QUARANTINE_ENTRIES: &str = "matchpoint_quarantine_entries";
    /// Index rows, by `source`, `status`, `key_id`.
    pub const INDEX_ROWS: &str = "matchpoint_index_rows";
    /// Lookups answered, by `outcome`.
    pub const LOOKUPS_TOTAL: &str = "matchpoint_lookups_total";
    /// Lookup latency histogram, by `outcome`.
    pub const LOOKUP_DURATION_SECONDS: &str = "matchpoint_lookup_duration_seconds";
    /// Lookups under break-glass (no labels).
    pub const BREAKGLASS_LOOKUPS_TOTAL: &str = "matchpoint_breakglass_lookups_total";
    /// Audit entries written, by `outcome` (ok, error).
    pub const AUDIT_WRITES_TOTAL: &str = "matchpoint_audit_writes_total";
    /// Audit write latency histogram.
    pub const AUDIT_WRITE_DURATION_SECONDS: &str = "matchpoint_audit_write_duration_seconds";
    /// HTTP requests by `route` (template), `method`, `status_class`.
    pub const HTTP_REQUESTS_TOTAL: &str = "matchpoint_http_requests_total";
    /// HTTP latency histogram by `route`, `method`, `status_class`.
    pub const HTTP_REQUEST_DURATION_SECONDS: &str = "matchpoint_http_request_duration_seconds";
    /// 1, labelled with the running `version`.
    pub const BUILD_INFO: &str = "matchpoint_build_info";

    /// Every name this module registers.
    pub const ALL: &[&str] = &[
        SYNC_RUNS_TOTAL,
        SYNC_RUN_DURATION_SECONDS,
        SYNC_RECORDS_TOTAL,
        SYNC_INVOLVEMENTS_CHANGED_TOTAL,
        SOURCE_HELD_RUNS,
        SOURCE_LAST_SUCCESS_TIMESTAMP_SECONDS,
        SOURCE_AGE_SECONDS,
        SOURCE_STALE,
        SCHEDULER_SKIPPED_TOTAL,
        QUARANTINE_ENTRIES,
        INDEX_ROWS,
        LOOKUPS_TOTAL,
        LOOKUP_DURATION_SECONDS,
        BREAKGLASS_LOOKUPS_TOTAL,
        AUDIT_WRITES_TOTAL,
        AUDIT_WRITE_DURATION_SECONDS,
        HTTP_REQUESTS_TOTAL,
        HTTP_REQUEST_DURATION_SECONDS,
        BUILD_INFO,
    ];
}

/// A label set: fixed keys, bounded values.
type Labels = Vec<(&'static str, String)>;
type F64Gauge = Gauge<f64, AtomicU64>;

fn labels<const N: usize>(pairs: [(&'static str, &str); N]) -> Labels {
    pairs.into_iter().map(|(k, v)| (k, v.to_owned())).collect()
}

fn latency_histogram() -> Histogram {
    // 1 ms .. ~16 s
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

fn run_histogram() -> Histogram {
    // 0.1 s .. ~27 min
    Histogram::new(exponential_buckets(0.1, 2.0, 15))
}

/// Counters stored without the `_total` suffix, which the encoder appends.
fn counter_name(name: &'static str) -> &'static str {
    name.strip_suffix("_total").unwrap_or(name)
}

/// The process's metric families.
pub struct Metrics {
    registry: Registry,
    sync_runs: Family<Labels, Counter>,
    sync_run_duration: Family<Labels, Histogram, fn() -> Histogram>,
    sync_records: Family<Labels, Counter>,
    sync_changed: Family<Labels, Counter>,
    held_runs: Family<Labels, Gauge>,
    last_success: Family<Labels, F64Gauge>,
    source_age: Family<Labels, F64Gauge>,
    source_stale: Family<Labels, Gauge>,
    scheduler_skipped: Family<Labels, Counter>,
    quarantine_entries: Family<Labels, Gauge>,
    index_rows: Family<Labels, Gauge>,
    lookups: Family<Labels, Counter>,
    lookup_duration: Family<Labels, Histogram, fn() -> Histogram>,
    breakglass: Counter,
    audit_writes: Family<Labels, Counter>,
    audit_duration: Histogram,
    http_requests: Family<Labels, Counter>,
    http_duration: Family<Labels, Histogram, fn() -> Histogram>,
}

impl Metrics {
    /// A fresh registry with every family of [`names::ALL`] registered.
    pub fn new() -> Metrics {
        use names::*;
        let mut registry = Registry::default();
        let m = Metrics {
            registry: Registry::default(),
            sync_runs: Family::default(),
            sync_run_duration: Family::new_with_constructor(run_histogram),
            sync_records: Family::default(),
            sync_changed: Family::default(),
            held_runs: Family::default(),
            last_success: Family::default(),
            source_age: Family::default(),
            source_stale: Family::default(),
            scheduler_skipped: Family::default(),
            quarantine_entries: Family::default(),
            index_rows: Family::default(),
            lookups: Family::default(),
            lookup_duration: Family::new_with_constructor(latency_histogram),
            breakglass: Counter::default(),
            audit_writes: Family::default(),
            audit_duration: latency_histogram(),
            http_requests: Family::default(),
            http_duration: Family::new_with_constructor(latency_histogram),
        };
        registry.register(
            counter_name(SYNC_RUNS_TOTAL),
            "Finished sync runs",
            m.sync_runs.clone(),
        );
        registry.register(
            SYNC_RUN_DURATION_SECONDS,
            "Start to finish of a sync run",
            m.sync_run_duration.clone(),
        );
        registry.register(
            counter_name(SYNC_RECORDS_TOTAL),
            "Records through the pipeline",
            m.sync_records.clone(),
        );
        registry.register(
            counter_name(SYNC_INVOLVEMENTS_CHANGED_TOTAL),
            "Published involvement changes",
            m.sync_changed.clone(),
        );
        registry.register(
            SOURCE_HELD_RUNS,
            "Runs held by the shrink guard",
            m.held_runs.clone(),
        );
        registry.register(
            SOURCE_LAST_SUCCESS_TIMESTAMP_SECONDS,
            "End of the last published run (Unix time)",
            m.last_success.clone(),
        );
        registry.register(
            SOURCE_AGE_SECONDS,
            "Seconds since the last published run",
            m.source_age.clone(),
        );
        registry.register(
            SOURCE_STALE,
            "1 when the source's data is stale (or never synced)",
            m.source_stale.clone(),
        );
        registry.register(
            counter_name(SCHEDULER_SKIPPED_TOTAL),
            "Due runs not started here",
            m.scheduler_skipped.clone(),
        );
        registry.register(
            QUARANTINE_ENTRIES,
            "Unresolved quarantined records",
            m.quarantine_entries.clone(),
        );
        registry.register(
            INDEX_ROWS,
            "Index rows by status and key version",
            m.index_rows.clone(),
        );
        registry.register(
            counter_name(LOOKUPS_TOTAL),
            "Lookups answered",
            m.lookups.clone(),
        );
        registry.register(
            LOOKUP_DURATION_SECONDS,
            "Lookup latency",
            m.lookup_duration.clone(),
        );
        registry.register(
            counter_name(BREAKGLASS_LOOKUPS_TOTAL),
            "Lookups under break-glass",
            m.breakglass.clone(),
        );
        registry.register(
            counter_name(AUDIT_WRITES_TOTAL),
            "Audit entries written",
            m.audit_writes.clone(),
        );
        registry.register(
            AUDIT_WRITE_DURATION_SECONDS,
            "Audit write latency",
            m.audit_duration.clone(),
        );
        registry.register(
            counter_name(HTTP_REQUESTS_TOTAL),
            "HTTP requests",
            m.http_requests.clone(),
        );
        registry.register(
            HTTP_REQUEST_DURATION_SECONDS,
            "HTTP request latency",
            m.http_duration.clone(),
        );
        let build: Family<Labels, Gauge> = Family::default();
        build
            .get_or_create(&labels([("version", env!("CARGO_PKG_VERSION"))]))
            .set(1);
        registry.register(BUILD_INFO, "The running version", build);
        Metrics { registry, ..m }
    }

    /// The OpenMetrics text exposition of every family.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Err(error) = encode(&mut out, &self.registry) {
            tracing::error!(%error, "Metrics could not be encoded.");
        }
        out
    }

    /// A finished sync run: status, duration and record counts.
    pub fn record_run(&self, run: &RunRecord) {
        let source = run.source.as_str();
        self.sync_runs
            .get_or_create(&labels([
                ("source", source),
                ("mode", run.mode.as_str()),
                ("status", run.status.as_str()),
            ]))
            .inc();
        if let Some(secs) = run.duration_secs() {
            self.sync_run_duration
                .get_or_create(&labels([("source", source), ("mode", run.mode.as_str())]))
                .observe(secs.max(0.0));
        }
        let c = &run.counts;
        for (outcome, n) in [
            ("read", c.read),
            ("accepted", c.accepted),
            ("rejected", c.rejected),
        ] {
            self.sync_records
                .get_or_create(&labels([("source", source), ("outcome", outcome)]))
                .inc_by(n);
        }
        for (change, n) in [
            ("inserted", c.inserted),
            ("updated", c.updated),
            ("ended", c.ended),
        ] {
            self.sync_changed
                .get_or_create(&labels([("source", source), ("change", change)]))
                .inc_by(n);
        }
    }

    /// Freshness of every configured source (set on each scrape and each readiness check).
    pub fn set_freshness(&self, sources: &[Freshness]) {
        for f in sources {
            let l = labels([("source", f.source.as_str())]);
            self.source_stale.get_or_create(&l).set(i64::from(f.stale));
            if let Some(at) = f.last_success_at {
                self.last_success
                    .get_or_create(&l)
                    .set(at.timestamp_millis() as f64 / 1000.0);
            }
            if let Some(age) = f.age_secs {
                self.source_age.get_or_create(&l).set(age as f64);
            }
        }
    }

    /// Number of held runs of a source.
    pub fn set_held_runs(&self, source: &str, held: u64) {
        self.held_runs
            .get_or_create(&labels([("source", source)]))
            .set(i64::try_from(held).unwrap_or(i64::MAX));
    }

    /// Index rows per source, status and key version, and quarantined records per source.
    /// Replaces the previous values: a combination that no longer has rows (an old key
    /// version after re-keying) disappears instead of keeping its last count.
    pub fn set_index_gauges(&self, g: &IndexGauges) {
        let gauge = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        self.index_rows.clear();
        for r in &g.rows {
            self.index_rows
                .get_or_create(&labels([
                    ("source", r.source.as_str()),
                    ("status", r.status.as_str()),
                    ("key_id", r.key_id.as_str()),
                ]))
                .set(gauge(r.rows));
        }
        self.quarantine_entries.clear();
        for (source, n) in &g.quarantine {
            self.quarantine_entries
                .get_or_create(&labels([("source", source.as_str())]))
                .set(gauge(*n));
        }
    }

    /// A due run not started here (`reason`: `lease_held` or `already_run`).
    pub fn scheduler_skipped(&self, source: &str, reason: &'static str) {
        self.scheduler_skipped
            .get_or_create(&labels([("source", source), ("reason", reason)]))
            .inc();
    }

    /// An answered lookup (`outcome`: found, not_found, denied, invalid, error).
    pub fn lookup(&self, outcome: &'static str, secs: f64, break_glass: bool) {
        let l = labels([("outcome", outcome)]);
        self.lookups.get_or_create(&l).inc();
        self.lookup_duration.get_or_create(&l).observe(secs);
        if break_glass {
            self.breakglass.inc();
        }
    }

    /// One audit write and how long it took.
    pub fn audit_write(&self, ok: bool, secs: f64) {
        self.audit_writes
            .get_or_create(&labels([("outcome", if ok { "ok" } else { "error" })]))
            .inc();
        self.audit_duration.observe(secs);
    }

    /// One HTTP request: `route` must be a route template (or a fixed placeholder).
    /// Any method outside the standard ones is counted as `other` (a client may send any
    /// token as a method: the label must stay bounded).
    pub fn http_request(&self, route: &str, method: &str, status: u16, secs: f64) {
        const METHODS: &[&str] = &[
            "GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "CONNECT", "TRACE",
        ];
        let method = METHODS
            .iter()
            .find(|m| **m == method)
            .copied()
            .unwrap_or("other");
        let class = match status {
            100..=199 => "1xx",
            200..=299 => "2xx",
            300..=399 => "3xx",
            400..=499 => "4xx",
            _ => "5xx",
        };
        self.http_requests
            .get_or_create(&labels([
                ("route", route),
                ("method", method),
                ("status_class", class),
            ]))
            .inc();
        self.http_duration
            .get_or_create(&labels([
                ("route", route),
                ("method", method),
                ("status_class", class),
            ]))
            .observe(secs);
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// The process-wide metrics, created on first use.
pub fn global() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn read(rel: &str) -> String {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join(rel);
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    /// `matchpoint_…` identifiers in a text, without histogram sample suffixes.
    fn used(text: &str) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        let mut rest = text;
        while let Some(i) = rest.find("matchpoint_") {
            let tail = &rest[i..];
            let end = tail
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(tail.len());
            let name = &tail[..end];
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(name);
            out.insert(base.to_owned());
            rest = &tail[end..];
        }
        out
    }

    #[test]
    fn alert_rules_use_registered_names_and_every_registered_name_is_specified() {
        let registered: BTreeSet<String> = names::ALL.iter().map(|s| (*s).to_owned()).collect();
        let rules: String = read("deploy/prometheus/matchpoint-alerts.yaml")
            .lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .collect::<Vec<_>>()
            .join("\n");
        let in_rules = used(&rules);
        assert!(!in_rules.is_empty());
        for name in &in_rules {
            assert!(
                registered.contains(name),
                "the alert rules use `{name}`, which hub/src/metrics.rs does not register"
            );
        }
        let spec: BTreeSet<String> = read("docs/instrumentation.md")
            .lines()
            .filter_map(|l| l.strip_prefix("| `"))
            .filter_map(|rest| rest.split('`').next())
            .filter(|n| n.starts_with("matchpoint_"))
            .map(str::to_owned)
            .collect();
        for name in &registered {
            assert!(
                spec.contains(name),
                "`{name}` is registered but not in docs/instrumentation.md"
            );
        }
        // And every registered name really is exposed under that name.
        let text = Metrics::new().render();
        assert!(text.contains(names::BUILD_INFO));
    }

    #[test]
    fn every_name_is_exposed_once_families_have_a_sample() {
        let m = Metrics::new();
        let now = chrono::Utc::now();
        m.record_run(&RunRecord {
            id: 1,
            source: "okc".into(),
            mode: "full".into(),
            status: crate::store::RunStatus::Succeeded,
            started_at: now - chrono::Duration::seconds(3),
            finished_at: Some(now),
            counts: crate::store::RunCounts {
                read: 10,
                accepted: 9,
                rejected: 1,
                ..Default::default()
            },
            error: None,
        });
        m.lookup("found", 0.01, true);
        m.audit_write(true, 0.002);
        m.http_request("/api/v1/lookups", "POST", 200, 0.02);
        m.scheduler_skipped("okc", "lease_held");
        m.set_held_runs("okc", 0);
        m.set_freshness(&[Freshness {
            source: "okc".into(),
            last_success_at: Some(chrono::Utc::now()),
            age_secs: Some(5),
            stale: false,
        }]);
        m.set_index_gauges(&IndexGauges {
            rows: vec![crate::store::IndexRowCount {
                source: "okc".into(),
                status: "active".into(),
                key_id: "k1".into(),
                rows: 7,
            }],
            quarantine: vec![("okc".into(), 1)],
        });
        m.http_request("(no route)", "X-PROBE-1234", 404, 0.001);
        let text = m.render();
        assert!(!text.contains("X-PROBE"), "unbounded method label");
        assert!(text.contains("method=\"other\""));
        for name in names::ALL {
            let base = counter_name(name);
            assert!(
                text.contains(&format!("# TYPE {base} ")),
                "{name} missing in\n{text}"
            );
        }
        assert!(text.contains("matchpoint_lookups_total{outcome=\"found\"} 1"));
        assert!(text.contains("matchpoint_breakglass_lookups_total 1"));
        assert!(
            text.contains("matchpoint_sync_records_total{source=\"okc\",outcome=\"rejected\"} 1")
        );
        assert!(text.contains(
            "matchpoint_sync_runs_total{source=\"okc\",mode=\"full\",status=\"succeeded\"} 1"
        ));
        assert!(text.contains("matchpoint_http_requests_total{route=\"/api/v1/lookups\",method=\"POST\",status_class=\"2xx\"} 1"));
        assert!(
            text.contains(
                "matchpoint_index_rows{source=\"okc\",status=\"active\",key_id=\"k1\"} 7"
            ),
            "{text}"
        );
        assert!(text.contains("matchpoint_quarantine_entries{source=\"okc\"} 1"));
    }

    #[test]
    fn index_gauges_are_replaced_not_accumulated() {
        let m = Metrics::new();
        let row = |key: &str, n: u64| crate::store::IndexRowCount {
            source: "okc".into(),
            status: "active".into(),
            key_id: key.into(),
            rows: n,
        };
        m.set_index_gauges(&IndexGauges {
            rows: vec![row("k1", 5), row("k2", 3)],
            quarantine: vec![("okc".into(), 2)],
        });
        let text = m.render();
        assert!(text.contains("key_id=\"k1\"} 5") && text.contains("key_id=\"k2\"} 3"));
        // Re-keyed: k1 has no rows any more and must not linger with its old count.
        m.set_index_gauges(&IndexGauges {
            rows: vec![row("k2", 8)],
            quarantine: vec![("okc".into(), 0)],
        });
        let text = m.render();
        assert!(!text.contains("key_id=\"k1\""), "{text}");
        assert!(text.contains("key_id=\"k2\"} 8"), "{text}");
        assert!(text.contains("matchpoint_quarantine_entries{source=\"okc\"} 0"));
    }
}
