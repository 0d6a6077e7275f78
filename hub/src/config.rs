//! The configuration file (`matchpoint.toml`): store, key, registry and sources.
//!
//! Parsed with serde (`deny_unknown_fields`), then checked as a whole: every problem found is
//! reported at once, each with the file and the key it concerns. Relative paths are resolved
//! against the directory of the configuration file.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use matchpoint_mapping::MappingSpec;
use serde::Deserialize;

/// The configuration file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Unreadable file.
    #[error(
        "cannot read configuration {path}: {message} (create one with `matchpoint demo`, or see deploy/matchpoint.example.toml)"
    )]
    Read { path: String, message: String },
    /// Every problem found, one per line.
    #[error("configuration {path} is invalid:\n{}", .problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid { path: String, problems: Vec<String> },
}

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Store URL: `sqlite://PATH` (default `sqlite://matchpoint.db`) or `postgres://…`.
    #[serde(default = "default_store")]
    pub store: String,
    /// Path of the key file; `MATCHPOINT_KEY_FILE` overrides it.
    #[serde(default = "default_key_file")]
    pub key_file: PathBuf,
    /// Path of the shared organisation registry.
    #[serde(default = "default_organisations")]
    pub organisations: PathBuf,
    /// Settings for every sync.
    #[serde(default)]
    pub sync: SyncSettings,
    /// The lookup API server (`matchpoint serve`).
    #[serde(default)]
    pub server: ServerSettings,
    /// The scheduler of `matchpoint run`: time zone, full-run default, staleness, leases.
    #[serde(default)]
    pub schedule: ScheduleSettings,
    /// How long data is kept (used by the retention job).
    #[serde(default)]
    pub retention: RetentionSettings,
    /// The source systems.
    #[serde(default, rename = "source")]
    pub sources: Vec<SourceConfig>,
    /// Directory the file was read from (set after parsing).
    #[serde(skip)]
    pub base_dir: PathBuf,
    /// The file's path (set after parsing).
    #[serde(skip)]
    pub path: PathBuf,
}

fn default_store() -> String {
    "sqlite://matchpoint.db".into()
}
fn default_key_file() -> PathBuf {
    "matchpoint.key".into()
}
fn default_organisations() -> PathBuf {
    "organisations.toml".into()
}

/// Settings shared by every sync run.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncSettings {
    /// Shrink guard: largest share of a source's active involvements one full run may end
    /// before it is held (0.10 = 10%).
    #[serde(default = "default_max_end_share")]
    pub max_end_share: f64,
    /// Days a rejected record's encrypted raw copy is kept for `quarantine replay`.
    #[serde(default = "default_quarantine_days")]
    pub quarantine_raw_days: u32,
    /// Records per staging transaction.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
}

fn default_max_end_share() -> f64 {
    0.10
}
fn default_quarantine_days() -> u32 {
    30
}
fn default_batch_size() -> usize {
    5000
}

impl Default for SyncSettings {
    fn default() -> Self {
        SyncSettings {
            max_end_share: default_max_end_share(),
            quarantine_raw_days: default_quarantine_days(),
            batch_size: default_batch_size(),
        }
    }
}

/// Settings of the lookup API server (`[server]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    /// Address to listen on; `--listen` overrides it.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Longest a request may take before it is answered with 408.
    #[serde(default = "default_request_timeout_secs")]
    pub request_timeout_secs: u64,
    /// Largest request body accepted (413 beyond it).
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    /// On Ctrl-C/SIGTERM, how long `serve` waits for the sync runs it started through
    /// `POST /api/v1/sync/runs` to stop after cancelling them. A run still going after it is
    /// abandoned: recorded as failed (nothing published) and its lease released. Keep it
    /// below the orchestrator's kill timeout (Kubernetes `terminationGracePeriodSeconds`,
    /// 30 s by default; systemd `TimeoutStopSec`).
    #[serde(default = "default_shutdown_grace_secs")]
    pub shutdown_grace_secs: u64,
}

fn default_listen() -> String {
    "127.0.0.1:8080".into()
}
fn default_request_timeout_secs() -> u64 {
    30
}
fn default_max_body_bytes() -> usize {
    64 * 1024
}
fn default_shutdown_grace_secs() -> u64 {
    20
}

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            listen: default_listen(),
            request_timeout_secs: default_request_timeout_secs(),
            max_body_bytes: default_max_body_bytes(),
            shutdown_grace_secs: default_shutdown_grace_secs(),
        }
    }
}

/// Settings of the scheduler (`matchpoint run`); see `docs/scheduling.md`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleSettings {
    /// IANA time zone every `schedule` is evaluated in.
    #[serde(default = "default_time_zone")]
    pub time_zone: String,
    /// Default full-reconciliation schedule of incremental sources (weekly: Sunday 03:00).
    #[serde(default = "default_full_schedule")]
    pub full_schedule: String,
    /// A source whose last successful run is older than this is stale.
    #[serde(default = "default_stale_after_hours")]
    pub stale_after_hours: u32,
    /// How long a source lease lasts before another instance may take it over; renewed
    /// while the run lasts.
    #[serde(default = "default_lease_secs")]
    pub lease_secs: u64,
    /// Longest sleep between two looks at the schedules.
    #[serde(default = "default_poll_secs")]
    pub poll_secs: u64,
}

fn default_time_zone() -> String {
    "Europe/Amsterdam".into()
}
fn default_full_schedule() -> String {
    "0 0 3 * * Sun".into()
}
fn default_stale_after_hours() -> u32 {
    36
}
fn default_lease_secs() -> u64 {
    900
}
fn default_poll_secs() -> u64 {
    60
}

impl Default for ScheduleSettings {
    fn default() -> Self {
        ScheduleSettings {
            time_zone: default_time_zone(),
            full_schedule: default_full_schedule(),
            stale_after_hours: default_stale_after_hours(),
            lease_secs: default_lease_secs(),
            poll_secs: default_poll_secs(),
        }
    }
}

/// Retention periods and the retention job's schedule (the job itself: issue 5, part 2).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionSettings {
    /// Involvements that ended longer ago than this many months are purged.
    #[serde(default = "default_involvement_months")]
    pub involvement_months: u32,
    /// Quarantine entries older than this many days are purged.
    #[serde(default = "default_quarantine_entry_days")]
    pub quarantine_days: u32,
    /// Audit entries are kept this many years, then removed through the privileged path.
    #[serde(default = "default_audit_years")]
    pub audit_years: u32,
    /// When the retention job runs (cron, in `schedule.time_zone`).
    #[serde(default = "default_retention_schedule")]
    pub schedule: String,
}

fn default_involvement_months() -> u32 {
    24
}
fn default_quarantine_entry_days() -> u32 {
    180
}
fn default_audit_years() -> u32 {
    5
}
fn default_retention_schedule() -> String {
    "0 30 4 * * *".into()
}

impl Default for RetentionSettings {
    fn default() -> Self {
        RetentionSettings {
            involvement_months: default_involvement_months(),
            quarantine_days: default_quarantine_entry_days(),
            audit_years: default_audit_years(),
            schedule: default_retention_schedule(),
        }
    }
}

/// Kinds of connector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceKind {
    /// XML export files (`schemas/formats/okc-xml-export.xsd`) from a file, folder or URL.
    XmlExport,
    /// Semicolon-separated Windows-1252 CSV files (`schemas/formats/csv-drop.md`) from a file,
    /// folder or URL; options in `[source.csv]`.
    CsvDrop,
    /// A view in the supplier's database (PostgreSQL, MySQL/MariaDB, SQLite), paged by
    /// keyset on `(updated_at, id)` (`schemas/formats/sql-pull.md`); `location` is the view,
    /// options in `[source.sql]`.
    SqlPull,
    /// A paginated REST/JSON API (`schemas/formats/rest-json.md`).
    RestJson,
    /// A SOAP-style XML web service, one POSTed envelope per page (`schemas/formats/soap.md`).
    Soap,
    /// A FHIR R4 server: `EpisodeOfCare` searches with included resources
    /// (`schemas/formats/fhir-r4.md`).
    Fhir,
    /// iWmo 3.2 messages (WMO301/305/307), one per file in a folder (`schemas/formats/iwmo.md`).
    Iwmo,
}

impl SourceKind {
    /// Whether the kind reads pages through the shared runner (and uses `[source.paging]`).
    pub fn is_paged(self) -> bool {
        matches!(
            self,
            SourceKind::RestJson | SourceKind::Soap | SourceKind::Fhir | SourceKind::SqlPull
        )
    }

    /// Whether the kind talks HTTP (and uses `[source.http]`).
    pub fn is_http(self) -> bool {
        matches!(
            self,
            SourceKind::RestJson | SourceKind::Soap | SourceKind::Fhir
        )
    }
}

/// Paging, retry and rate-limit settings of a paged source (`[source.paging]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PagingSettings {
    /// Records asked for per page.
    #[serde(default = "default_page_size")]
    pub page_size: u32,
    /// Attempts per page before the run fails (1 = no retry).
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// Backoff ceiling of the first retry, in milliseconds (doubles per retry, full jitter).
    #[serde(default = "default_base_delay_ms")]
    pub base_delay_ms: u64,
    /// Largest backoff ceiling, in milliseconds.
    #[serde(default = "default_max_delay_ms")]
    pub max_delay_ms: u64,
    /// Longest `Retry-After` honoured, in milliseconds; a server asking more fails the run.
    #[serde(default = "default_max_retry_after_ms")]
    pub max_retry_after_ms: u64,
    /// Minimum time between the starts of two requests, in milliseconds (rate limit).
    #[serde(default)]
    pub min_interval_ms: u64,
    /// Most pages one run may fetch.
    #[serde(default = "default_max_pages")]
    pub max_pages: u64,
    /// Most bytes of one page's response body.
    #[serde(default = "default_max_page_bytes")]
    pub max_page_bytes: u64,
}

fn default_page_size() -> u32 {
    500
}
fn default_max_attempts() -> u32 {
    6
}
fn default_base_delay_ms() -> u64 {
    500
}
fn default_max_delay_ms() -> u64 {
    30_000
}
fn default_max_retry_after_ms() -> u64 {
    300_000
}
fn default_max_pages() -> u64 {
    10_000_000
}
fn default_max_page_bytes() -> u64 {
    64 << 20
}

impl Default for PagingSettings {
    fn default() -> Self {
        PagingSettings {
            page_size: default_page_size(),
            max_attempts: default_max_attempts(),
            base_delay_ms: default_base_delay_ms(),
            max_delay_ms: default_max_delay_ms(),
            max_retry_after_ms: default_max_retry_after_ms(),
            min_interval_ms: 0,
            max_pages: default_max_pages(),
            max_page_bytes: default_max_page_bytes(),
        }
    }
}

/// How an HTTP source authenticates.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthKind {
    /// No credentials.
    #[default]
    None,
    /// `Authorization: Bearer` with a token from `token_env` or `token_file`.
    Bearer,
    /// HTTP basic with `username` and a password from `password_env` or `password_file`.
    Basic,
}

/// HTTP settings of an HTTP source (`[source.http]`). Holds where secrets are, never secrets.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSettings {
    /// Authentication scheme.
    #[serde(default)]
    pub auth: AuthKind,
    /// Environment variable holding the bearer token.
    #[serde(default)]
    pub token_env: Option<String>,
    /// File holding the bearer token (mode 0600 recommended).
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// Basic-auth user name.
    #[serde(default)]
    pub username: Option<String>,
    /// Environment variable holding the basic-auth password.
    #[serde(default)]
    pub password_env: Option<String>,
    /// File holding the basic-auth password.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Query parameter of the cursor (REST/JSON; default `updated_since`).
    #[serde(default)]
    pub since_param: Option<String>,
    /// Query parameter of the page size (REST/JSON; default `limit`).
    #[serde(default)]
    pub page_size_param: Option<String>,
    /// Record member holding the record id (REST/JSON; default `id`).
    #[serde(default)]
    pub id_field: Option<String>,
    /// Record member holding the last-change time, the cursor (REST/JSON; default `updated_at`).
    #[serde(default)]
    pub cursor_field: Option<String>,
    /// `SOAPAction` header value (SOAP).
    #[serde(default)]
    pub soap_action: Option<String>,
}

/// FHIR settings of a `fhir` source (`[source.fhir]`, optional).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FhirSourceSettings {
    /// The `Organization.identifier` system whose value is delivered as
    /// `organization.identifier` (default: the first identifier).
    #[serde(default)]
    pub organization_system: Option<String>,
}

/// Full snapshot or changes only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceMode {
    /// Every delivery is complete; missing involvements are ended (guarded).
    Full,
    /// Deliveries hold changes since the cursor.
    Incremental,
}

/// Limits on what a source may deliver.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Most bytes in one delivery.
    #[serde(default = "default_max_bytes")]
    pub max_bytes: u64,
    /// Most bytes in one element or text node.
    #[serde(default = "default_max_element_bytes")]
    pub max_element_bytes: u64,
    /// Most bytes in one record; a larger record is quarantined.
    #[serde(default = "default_max_record_bytes")]
    pub max_record_bytes: u64,
    /// Deepest element nesting.
    #[serde(default = "default_max_depth")]
    pub max_depth: usize,
    /// Network timeout for HTTP(S) locations, in seconds.
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: u64,
}

fn default_max_bytes() -> u64 {
    8 << 30
}
fn default_max_element_bytes() -> u64 {
    64 << 10
}
fn default_max_record_bytes() -> u64 {
    1 << 20
}
fn default_max_depth() -> usize {
    16
}
fn default_timeout_secs() -> u64 {
    300
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bytes: default_max_bytes(),
            max_element_bytes: default_max_element_bytes(),
            max_record_bytes: default_max_record_bytes(),
            max_depth: default_max_depth(),
            timeout_secs: default_timeout_secs(),
        }
    }
}

/// One source system.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// Unique name, e.g. `okc-2`; stored with every record.
    pub name: String,
    /// Connector kind.
    pub kind: SourceKind,
    /// File, folder (newest file for full mode; every newer file for incremental) or URL.
    pub location: String,
    /// Full snapshot or incremental.
    pub mode: SourceMode,
    /// Cron expression (seconds minutes hours day-of-month month day-of-week), Europe/Amsterdam.
    pub schedule: String,
    /// Incremental sources: when to run a full reconciliation instead (default
    /// `schedule.full_schedule`, weekly). Not allowed on full-mode sources.
    #[serde(default)]
    pub full_schedule: Option<String>,
    /// Path of the mapping file.
    pub mapping: PathBuf,
    /// Per-source shrink guard override.
    #[serde(default)]
    pub max_end_share: Option<f64>,
    /// Delivery limits.
    #[serde(default)]
    pub limits: Limits,
    /// Paging, retries and rate limit (paged kinds).
    #[serde(default)]
    pub paging: PagingSettings,
    /// HTTP authentication and parameters (HTTP kinds).
    #[serde(default)]
    pub http: HttpSettings,
    /// FHIR settings (kind `fhir`).
    #[serde(default)]
    pub fhir: FhirSourceSettings,
    /// CSV drop options (kind `csv_drop`).
    #[serde(default)]
    pub csv: Option<CsvSettings>,
    /// SQL pull options (kind `sql_pull`, required there).
    #[serde(default)]
    pub sql: Option<SqlSettings>,
    /// Settings of kind `iwmo` (`[source.iwmo]`).
    #[serde(default)]
    pub iwmo: Option<IwmoSettings>,
    /// The loaded mapping (set during checks).
    #[serde(skip)]
    pub mapping_spec: Option<MappingSpec>,
}

/// `[source.csv]`: how a CSV drop is laid out. Column names are header names; the mapping
/// file names the other columns.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CsvSettings {
    /// Header of the column holding the record id.
    #[serde(default = "default_id_column")]
    pub id_column: String,
    /// Field separator, one ASCII character (default `;`).
    #[serde(default = "default_delimiter")]
    pub delimiter: char,
    /// Whether the file must end with a line break (default `"required"`): a file whose last
    /// record does not is taken as cut off in transport and fails the run.
    #[serde(default)]
    pub final_line_break: FinalLineBreak,
}

impl Default for CsvSettings {
    fn default() -> Self {
        CsvSettings {
            id_column: default_id_column(),
            delimiter: default_delimiter(),
            final_line_break: FinalLineBreak::default(),
        }
    }
}

/// `[source.csv] final_line_break`: must a CSV drop end with a line break?
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinalLineBreak {
    /// The last record must end with a line break; a file that ends in the middle of a
    /// record was cut off in transport and fails the run (`Truncated`).
    #[default]
    Required,
    /// Accept a last record without a line break, for a supplier that never writes one (a
    /// file cut off between two records or fields can then not be told from a complete one).
    Optional,
}

fn default_id_column() -> String {
    "id".into()
}
fn default_delimiter() -> char {
    ';'
}
fn default_updated_at_column() -> String {
    "updated_at".into()
}
/// `[source.sql]`: how to reach and page the supplier's view. The connection URL
/// (`postgres://`, `mysql://`/`mariadb://` or `sqlite://`) is never written in the
/// configuration: it is read from an environment variable or a file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqlSettings {
    /// Name of the environment variable holding the connection URL.
    #[serde(default)]
    pub url_env: Option<String>,
    /// File holding the connection URL (first line; relative to the configuration file).
    #[serde(default)]
    pub url_file: Option<PathBuf>,
    /// Column holding the record id (second keyset column).
    #[serde(default = "default_id_column")]
    pub id_column: String,
    /// Column holding the time a row last changed (first keyset column, the incremental cursor).
    #[serde(default = "default_updated_at_column")]
    pub updated_at_column: String,
    /// Column marking a deleted (or withdrawn) row; such a row ends its involvement.
    #[serde(default)]
    pub deleted_column: Option<String>,
}

/// Settings of an `iwmo` source.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IwmoSettings {
    /// The municipality's CBS code (four digits, e.g. `0363`): messages between providers and
    /// another municipality are quarantined instead of applied.
    #[serde(default)]
    pub municipality: Option<String>,
}

impl Config {
    /// Reads, parses and checks a configuration file, including each source's mapping file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            path: shown.clone(),
            message: e.to_string(),
        })?;
        let base = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        Self::parse(&text, &shown, &base)
    }

    /// Parses and checks configuration text; `origin` names it in messages, `base` resolves
    /// relative paths.
    pub fn parse(text: &str, origin: &str, base: &Path) -> Result<Config, ConfigError> {
        let mut cfg: Config = toml::from_str(text).map_err(|e| {
            let line = e
                .span()
                .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1)
                .unwrap_or(0);
            ConfigError::Invalid {
                path: origin.to_owned(),
                problems: vec![format!("{origin}:{line}: {}", e.message())],
            }
        })?;
        cfg.base_dir = base.to_path_buf();
        cfg.path = PathBuf::from(origin);
        let mut problems = Vec::new();
        if !(cfg.store.starts_with("sqlite://")
            || cfg.store.starts_with("postgres://")
            || cfg.store.starts_with("postgresql://"))
        {
            problems.push(format!(
                "{origin}: store: `{}` is not a sqlite:// or postgres:// URL",
                crate::store::redact_url(&cfg.store)
            ));
        }
        check_share(
            &mut problems,
            origin,
            "sync.max_end_share",
            cfg.sync.max_end_share,
        );
        if cfg.server.listen.parse::<std::net::SocketAddr>().is_err() {
            problems.push(format!(
                "{origin}: server.listen must be an address like 127.0.0.1:8080"
            ));
        }
        if cfg.server.request_timeout_secs == 0 || cfg.server.request_timeout_secs > 3600 {
            problems.push(format!(
                "{origin}: server.request_timeout_secs must be between 1 and 3600"
            ));
        }
        if cfg.server.max_body_bytes < 1024 || cfg.server.max_body_bytes > 16 << 20 {
            problems.push(format!(
                "{origin}: server.max_body_bytes must be between 1024 and 16777216"
            ));
        }
        if cfg.sync.batch_size == 0 || cfg.sync.batch_size > 100_000 {
            problems.push(format!(
                "{origin}: sync.batch_size must be between 1 and 100000"
            ));
        }
        check_schedule_settings(&mut problems, origin, &cfg.schedule, &cfg.retention);
        if cfg.sources.is_empty() {
            problems.push(format!("{origin}: no [[source]] is configured"));
        }
        let base = cfg.base_dir.clone();
        let mut names = std::collections::HashSet::new();
        for (i, s) in cfg.sources.iter_mut().enumerate() {
            let key = format!("source[{i}] ({})", s.name);
            if s.name.is_empty()
                || !s
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                problems.push(format!(
                    "{origin}: {key}.name must be letters, digits, '-' or '_'"
                ));
            }
            if !names.insert(s.name.clone()) {
                problems.push(format!("{origin}: {key}.name `{}` is used twice", s.name));
            }
            if let Err(e) = cron::Schedule::from_str(&s.schedule) {
                problems.push(format!(
                    "{origin}: {key}.schedule `{}` is not a cron expression ({e}); \
                     expected six fields: sec min hour day month weekday, e.g. \"0 30 2 * * *\"",
                    s.schedule
                ));
            }
            if let Some(full) = &s.full_schedule {
                if s.mode == SourceMode::Full {
                    problems.push(format!(
                        "{origin}: {key}.full_schedule is only for incremental sources; \
                         a full-mode source runs in full on `schedule` (remove the key)"
                    ));
                }
                check_cron(&mut problems, origin, &format!("{key}.full_schedule"), full);
            }
            if let Some(share) = s.max_end_share {
                check_share(
                    &mut problems,
                    origin,
                    &format!("{key}.max_end_share"),
                    share,
                );
            }
            if let Some(iwmo) = &s.iwmo {
                if s.kind != SourceKind::Iwmo {
                    problems.push(format!(
                        "{origin}: {key}: [source.iwmo] is only for sources of kind \"iwmo\""
                    ));
                }
                if let Some(m) = &iwmo.municipality
                    && !(m.len() == 4 && m.bytes().all(|b| b.is_ascii_digit()))
                {
                    problems.push(format!(
                        "{origin}: {key}.iwmo.municipality must be a four-digit CBS code such as \"0363\", found `{m}`"
                    ));
                }
            }
            if s.limits.max_depth < 3 {
                problems.push(format!(
                    "{origin}: {key}.limits.max_depth must be at least 3"
                ));
            }
            check_kind_settings(&mut problems, origin, &key, &base, s);
            let is_url = s.location.starts_with("http://") || s.location.starts_with("https://");
            check_paged(&mut problems, origin, &key, s, is_url);
            for p in [&mut s.http.token_file, &mut s.http.password_file]
                .into_iter()
                .flatten()
            {
                *p = resolve(&base, p);
            }
            if !is_url && s.kind != SourceKind::SqlPull {
                let p = resolve(&base, Path::new(&s.location));
                s.location = p.display().to_string();
            }
            s.mapping = resolve(&base, &s.mapping);
            match MappingSpec::load(&s.mapping) {
                Ok(spec) => s.mapping_spec = Some(spec),
                Err(e) => problems.push(format!("{origin}: {key}.mapping: {e}")),
            }
        }
        cfg.key_file = resolve(&base, &cfg.key_file);
        cfg.organisations = resolve(&base, &cfg.organisations);
        if let Some(path) = cfg.store.strip_prefix("sqlite://") {
            let p = resolve(&base, Path::new(path));
            cfg.store = format!("sqlite://{}", p.display());
        }
        if problems.is_empty() {
            Ok(cfg)
        } else {
            Err(ConfigError::Invalid {
                path: origin.to_owned(),
                problems,
            })
        }
    }

    /// The named sources, or all when `names` is empty; unknown names are an error.
    pub fn select(&self, names: &[String]) -> Result<Vec<&SourceConfig>, String> {
        if names.is_empty() {
            return Ok(self.sources.iter().collect());
        }
        names
            .iter()
            .map(|n| {
                self.sources.iter().find(|s| &s.name == n).ok_or_else(|| {
                    format!(
                        "no source named `{n}` in {} (configured: {})",
                        self.path.display(),
                        self.sources
                            .iter()
                            .map(|s| s.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                })
            })
            .collect()
    }
}

/// `schema.name` or `name`, letters, digits and `_` (SQL identifiers Matchpoint puts in queries).
pub fn is_sql_identifier(s: &str, allow_schema: bool) -> bool {
    let parts: Vec<&str> = s.split('.').collect();
    (parts.len() == 1 || (allow_schema && parts.len() == 2))
        && parts.iter().all(|p| {
            p.chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        })
}

/// Checks the kind-specific tables (`[source.csv]`, `[source.sql]`) of one source.
fn check_kind_settings(
    problems: &mut Vec<String>,
    origin: &str,
    key: &str,
    base: &Path,
    s: &mut SourceConfig,
) {
    if s.csv.is_some() && s.kind != SourceKind::CsvDrop {
        problems.push(format!(
            "{origin}: {key}: [source.csv] is only for kind = \"csv_drop\""
        ));
    }
    if s.sql.is_some() && s.kind != SourceKind::SqlPull {
        problems.push(format!(
            "{origin}: {key}: [source.sql] is only for kind = \"sql_pull\""
        ));
    }
    if let Some(csv) = &s.csv {
        if csv.id_column.trim().is_empty() {
            problems.push(format!("{origin}: {key}.csv.id_column is empty"));
        }
        if !csv.delimiter.is_ascii() || matches!(csv.delimiter, '"' | '\n' | '\r') {
            problems.push(format!(
                "{origin}: {key}.csv.delimiter must be one ASCII character other than a quote or line break"
            ));
        }
    }
    if s.kind != SourceKind::SqlPull {
        return;
    }
    if !is_sql_identifier(&s.location, true) {
        problems.push(format!(
            "{origin}: {key}.location `{}` must be the name of the view (or table) to read, \
             e.g. \"matchpoint_okc4\" or \"export.matchpoint_okc4\" (letters, digits, '_')",
            s.location
        ));
    }
    let Some(sql) = s.sql.as_mut() else {
        problems.push(format!(
            "{origin}: {key}: kind = \"sql_pull\" needs a [source.sql] table with url_env or url_file"
        ));
        return;
    };
    match (&sql.url_env, &sql.url_file) {
        (Some(_), Some(_)) | (None, None) => problems.push(format!(
            "{origin}: {key}.sql: set exactly one of url_env (an environment variable) or \
             url_file (a file) holding the connection URL; never the URL itself"
        )),
        (None, Some(f)) => sql.url_file = Some(resolve(base, f)),
        (Some(_), None) => {}
    }
    for (name, col) in [
        ("id_column", Some(&sql.id_column)),
        ("updated_at_column", Some(&sql.updated_at_column)),
        ("deleted_column", sql.deleted_column.as_ref()),
    ] {
        if let Some(col) = col
            && !is_sql_identifier(col, false)
        {
            problems.push(format!(
                "{origin}: {key}.sql.{name} `{col}` is not a column name (letters, digits, '_')"
            ));
        }
    }
}

fn check_cron(problems: &mut Vec<String>, origin: &str, key: &str, expr: &str) {
    if let Err(e) = cron::Schedule::from_str(expr) {
        problems.push(format!(
            "{origin}: {key} `{expr}` is not a cron expression ({e}); \
             expected six fields: sec min hour day month weekday, e.g. \"0 0 3 * * Sun\""
        ));
    }
}

fn check_schedule_settings(
    problems: &mut Vec<String>,
    origin: &str,
    s: &ScheduleSettings,
    r: &RetentionSettings,
) {
    if chrono_tz::Tz::from_str(&s.time_zone).is_err() {
        problems.push(format!(
            "{origin}: schedule.time_zone `{}` is not an IANA time zone name, e.g. \"Europe/Amsterdam\"",
            s.time_zone
        ));
    }
    check_cron(problems, origin, "schedule.full_schedule", &s.full_schedule);
    if s.stale_after_hours == 0 {
        problems.push(format!(
            "{origin}: schedule.stale_after_hours must be at least 1"
        ));
    }
    if !(30..=86_400).contains(&s.lease_secs) {
        problems.push(format!(
            "{origin}: schedule.lease_secs must be between 30 and 86400, found {}",
            s.lease_secs
        ));
    }
    if !(1..=3_600).contains(&s.poll_secs) {
        problems.push(format!(
            "{origin}: schedule.poll_secs must be between 1 and 3600, found {}",
            s.poll_secs
        ));
    }
    check_cron(problems, origin, "retention.schedule", &r.schedule);
    if r.involvement_months == 0 || r.quarantine_days == 0 || r.audit_years == 0 {
        problems.push(format!(
            "{origin}: retention periods (involvement_months, quarantine_days, audit_years) must be at least 1"
        ));
    }
}

fn check_share(problems: &mut Vec<String>, origin: &str, key: &str, v: f64) {
    if !(0.0..=1.0).contains(&v) {
        problems.push(format!(
            "{origin}: {key} must be between 0.0 and 1.0, found {v}"
        ));
    }
}

/// Checks the paging and HTTP settings of one source.
fn check_paged(
    problems: &mut Vec<String>,
    origin: &str,
    key: &str,
    s: &SourceConfig,
    is_url: bool,
) {
    if s.kind.is_http() && !is_url {
        problems.push(format!(
            "{origin}: {key}.location must be an http:// or https:// URL for kind {:?}",
            s.kind
        ));
    }
    if !s.kind.is_paged() {
        return;
    }
    let p = &s.paging;
    if s.kind == SourceKind::Fhir && p.page_size > matchpoint_connectors::fhir::MAX_PAGE_SIZE {
        problems.push(format!(
            "{origin}: {key}.paging.page_size must be at most {} for kind fhir (the FHIR _count)",
            matchpoint_connectors::fhir::MAX_PAGE_SIZE
        ));
    }
    if p.page_size == 0 || p.page_size > 100_000 {
        problems.push(format!(
            "{origin}: {key}.paging.page_size must be between 1 and 100000"
        ));
    }
    if p.max_attempts == 0 || p.max_attempts > 100 {
        problems.push(format!(
            "{origin}: {key}.paging.max_attempts must be between 1 and 100"
        ));
    }
    if p.max_delay_ms < p.base_delay_ms {
        problems.push(format!(
            "{origin}: {key}.paging.max_delay_ms must not be below base_delay_ms"
        ));
    }
    if p.max_pages == 0 || p.max_page_bytes == 0 {
        problems.push(format!(
            "{origin}: {key}.paging.max_pages and max_page_bytes must be above 0"
        ));
    }
    let h = &s.http;
    let one_of = |a: bool, b: bool| a != b;
    match h.auth {
        AuthKind::None => {}
        AuthKind::Bearer => {
            if !one_of(h.token_env.is_some(), h.token_file.is_some()) {
                problems.push(format!(
                    "{origin}: {key}.http: auth = \"bearer\" needs exactly one of token_env or token_file (the token itself never goes in this file)"
                ));
            }
        }
        AuthKind::Basic => {
            if h.username.as_deref().is_none_or(str::is_empty) {
                problems.push(format!(
                    "{origin}: {key}.http: auth = \"basic\" needs a username"
                ));
            }
            if !one_of(h.password_env.is_some(), h.password_file.is_some()) {
                problems.push(format!(
                    "{origin}: {key}.http: auth = \"basic\" needs exactly one of password_env or password_file (the password itself never goes in this file)"
                ));
            }
        }
    }
}

fn resolve(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deploy_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
    }

    #[test]
    fn the_example_config_parses() {
        let path = deploy_dir().join("matchpoint.example.toml");
        let cfg = Config::load(&path).expect("example config parses");
        assert!(!cfg.sources.is_empty());
        assert!(cfg.sources.iter().all(|s| s.mapping_spec.is_some()));
        for (name, kind) in [
            ("okc-3", SourceKind::CsvDrop),
            ("okc-4", SourceKind::SqlPull),
            ("ris", SourceKind::SqlPull),
        ] {
            let s = cfg
                .sources
                .iter()
                .find(|s| s.name == name)
                .expect("source in the example");
            assert_eq!(s.kind, kind);
        }
    }

    #[test]
    fn every_problem_is_reported_at_once_with_its_key() {
        let text = r#"
store = "mysql://x"
[sync]
max_end_share = 1.5
[[source]]
name = "a b"
kind = "xml_export"
location = "x.xml"
mode = "full"
schedule = "every night"
mapping = "missing.toml"
"#;
        let err = Config::parse(text, "m.toml", &deploy_dir())
            .expect_err("invalid")
            .to_string();
        for needle in ["store", "max_end_share", ".name", ".schedule", ".mapping"] {
            assert!(err.contains(needle), "missing {needle} in {err}");
        }
    }

    fn paged_source(extra: &str) -> String {
        format!(
            "[[source]]\nname = \"okc-1\"\nkind = \"rest_json\"\nlocation = \"http://127.0.0.1:1/x\"\n\
             mode = \"incremental\"\nschedule = \"0 0 * * * *\"\nmapping = \"mappings/okc-1.toml\"\n{extra}"
        )
    }

    #[test]
    fn paged_sources_check_their_paging_and_auth_settings() {
        let ok = paged_source(
            "[source.paging]\npage_size = 10\n[source.http]\nauth = \"bearer\"\ntoken_file = \"secret/token\"\n",
        );
        let cfg = Config::parse(&ok, "m.toml", &deploy_dir()).expect("valid");
        let s = &cfg.sources[0];
        assert_eq!(s.paging.page_size, 10);
        assert_eq!(s.paging.max_attempts, 6);
        assert_eq!(
            s.http.token_file.as_deref(),
            Some(deploy_dir().join("secret/token").as_path()),
            "secret paths resolve against the config folder"
        );
        for (extra, needle) in [
            (
                "[source.http]\nauth = \"bearer\"\n",
                "token_env or token_file",
            ),
            (
                "[source.http]\nauth = \"bearer\"\ntoken_env = \"A\"\ntoken_file = \"b\"\n",
                "exactly one",
            ),
            (
                "[source.http]\nauth = \"basic\"\npassword_env = \"P\"\n",
                "username",
            ),
            (
                "[source.http]\nauth = \"basic\"\nusername = \"u\"\n",
                "password_env",
            ),
            ("[source.paging]\npage_size = 0\n", "page_size"),
            ("[source.paging]\nmax_attempts = 0\n", "max_attempts"),
            (
                "[source.paging]\nbase_delay_ms = 10\nmax_delay_ms = 5\n",
                "max_delay_ms",
            ),
            ("[source.http]\ntoken = \"s3cret\"\n", "unknown field"),
        ] {
            let err = Config::parse(&paged_source(extra), "m.toml", &deploy_dir())
                .expect_err(extra)
                .to_string();
            assert!(err.contains(needle), "{extra}: {err}");
        }
        let file_url = paged_source("").replace("http://127.0.0.1:1/x", "data/x.json");
        let err = Config::parse(&file_url, "m.toml", &deploy_dir())
            .expect_err("not a URL")
            .to_string();
        assert!(err.contains("http:// or https:// URL"), "{err}");
    }

    #[test]
    fn bad_server_settings_are_reported_with_their_keys() {
        let text = r#"
[server]
listen = "localhost"
request_timeout_secs = 0
max_body_bytes = 10
[[source]]
name = "okc-2"
kind = "xml_export"
location = "x.xml"
mode = "full"
schedule = "0 30 2 * * *"
mapping = "mappings/okc-2.toml"
"#;
        let err = Config::parse(text, "m.toml", &deploy_dir())
            .expect_err("invalid")
            .to_string();
        for needle in [
            "server.listen",
            "server.request_timeout_secs",
            "server.max_body_bytes",
        ] {
            assert!(err.contains(needle), "missing {needle} in {err}");
        }
        let defaults = ServerSettings::default();
        assert_eq!(defaults.listen, "127.0.0.1:8080");
        assert_eq!(defaults.max_body_bytes, 65536);
    }

    #[test]
    fn the_schedule_and_retention_defaults_apply_when_the_sections_are_missing() {
        let s = ScheduleSettings::default();
        assert_eq!(s.time_zone, "Europe/Amsterdam");
        assert_eq!(s.stale_after_hours, 36);
        assert_eq!(s.full_schedule, "0 0 3 * * Sun");
        assert_eq!(RetentionSettings::default().involvement_months, 24);
        assert_eq!(RetentionSettings::default().audit_years, 5);
    }

    #[test]
    fn bad_schedule_settings_are_each_reported() {
        let text = r#"
[schedule]
time_zone = "Europe/Amstelveen"
full_schedule = "weekly"
stale_after_hours = 0
lease_secs = 1
[retention]
schedule = "nightly"
[[source]]
name = "a"
kind = "xml_export"
location = "x.xml"
mode = "full"
schedule = "0 30 2 * * *"
full_schedule = "0 0 3 * * Sun"
mapping = "mappings/okc-2.toml"
"#;
        let err = Config::parse(text, "m.toml", &deploy_dir())
            .expect_err("invalid")
            .to_string();
        for needle in [
            "schedule.time_zone",
            "schedule.full_schedule",
            "stale_after_hours",
            "lease_secs",
            "retention.schedule",
            "full_schedule is only for incremental sources",
        ] {
            assert!(err.contains(needle), "missing {needle} in {err}");
        }
    }

    #[test]
    fn sql_sources_need_a_secret_url_and_plain_identifiers() {
        let text = r#"
[[source]]
name = "okc-4"
kind = "sql_pull"
location = "v; DROP TABLE x"
mode = "incremental"
schedule = "0 0 3 * * *"
mapping = "mappings/okc-4.toml"
[source.sql]
url_env = "X"
url_file = "y"
updated_at_column = "a b"

[[source]]
name = "ris"
kind = "sql_pull"
location = "matchpoint_ris"
mode = "incremental"
schedule = "0 0 3 * * *"
mapping = "mappings/ris.toml"

[[source]]
name = "okc-3"
kind = "xml_export"
location = "x.xml"
mode = "full"
schedule = "0 0 3 * * *"
mapping = "mappings/okc-3.toml"
[source.csv]
id_column = "id"
"#;
        let err = Config::parse(text, "m.toml", &deploy_dir())
            .expect_err("invalid")
            .to_string();
        for needle in [
            "source[0] (okc-4).location",
            "exactly one of url_env",
            "sql.updated_at_column `a b`",
            "source[1] (ris): kind = \"sql_pull\" needs a [source.sql]",
            "source[2] (okc-3): [source.csv] is only for kind = \"csv_drop\"",
        ] {
            assert!(err.contains(needle), "missing {needle} in {err}");
        }
    }

    #[test]
    fn an_unknown_key_names_its_line() {
        let text = "store = \"sqlite://x.db\"\nstoer = 1\n";
        let err = Config::parse(text, "m.toml", &deploy_dir())
            .expect_err("invalid")
            .to_string();
        assert!(err.contains("m.toml:2"), "{err}");
    }
}
