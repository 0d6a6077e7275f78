//! The file and SQL sources of `matchpoint sandbox`: the okc-2 XML export, the okc-3 CSV
//! drop and the iWmo messages of `wmo` (files under `DIR/data`), and the okc-4 and RIS views
//! of the supplier database. Each gets a control server on loopback (no data is served over
//! HTTP: a sync reads the files and the database directly) with the same endpoints as the
//! HTTP upstreams:
//!
//! - `POST /_sandbox/advance` writes the next generation: a new okc-2 export (over
//!   `data/okc-2/export.xml`), a new okc-3 drop (`data/okc-3/okc3-YYYYMMDD.csv`), new iWmo
//!   messages (WMO301/305/307 for new, extended, started and stopped assignments) or the
//!   supplier database's next night (new, revised, ended and deleted rows with a later
//!   updated-at; okc-4 and RIS share one database, so advancing either advances both);
//! - `POST /_sandbox/faults` (a [`FaultSpec`]) sets the faults of the source and re-writes the
//!   current delivery with them: the okc-2 export and the okc-3 drop of the current
//!   generation, the iWmo messages of the current generation (from generation 1; the
//!   messages of generation 0 stay as written), and for the SQL views the `missing-view`
//!   fault (dropped at once, re-created when the fault is cleared); the SQL `malformed`
//!   fault applies to the rows of the next advance;
//! - `GET /_sandbox/stats`: the generation, records in the last written delivery (the whole
//!   snapshot of the XML and CSV sources; the messages or rows an advance wrote for iWmo and
//!   SQL), `changed` (records new or changed by the last advance: what an incremental sync,
//!   or a full sync as inserted plus updated, should see), `malformed` and the files written;
//! - `POST /_sandbox/reset-stats` (nothing to reset; accepted for symmetry).
//!
//! Which fault items apply is documented in [`super::faults`]. The okc-2 export of
//! generation 0 is `matchpoint generate`'s; later ones (and any re-written one) come from the
//! okc-2 feed ([`crate::generate::okc2_feed`]), which agrees with it for `--bad-share 0`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use chrono::NaiveDate;
use serde::Serialize;

use super::faults::{FaultSpec, draw};
use super::supplier_db::SupplierDb;
use crate::generate::GenerateOptions;
use crate::generate::feed::{Feed, FeedRecord};
use crate::generate::iwmo::generations::{generation_day, generation_messages};
use crate::generate::iwmo::{file_name, message_xml};
use crate::generate::okc2_feed::{okc2_changed, okc2_feed, write_okc2_generation};
use crate::generate::okc3_csv::{okc3_feed, write_okc3_csv_with};

/// One in this many adults of the population gets a WMO assignment in generation 0 (source
/// `wmo`), so WMO clients are known to the OKC sources too.
pub const IWMO_EVERY: u64 = 5;

/// First day of the generated iWmo messages.
pub fn iwmo_first_day() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 1, 5).unwrap_or_default()
}

/// The kind of delivery a file source writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryKind {
    /// The okc-2 XML export.
    XmlExport,
    /// The okc-3 CSV drop.
    CsvDrop,
    /// iWmo message files.
    Iwmo,
    /// A view in the supplier database.
    Sql,
}

/// One file or SQL source of the sandbox.
#[derive(Debug)]
pub struct FileDef {
    /// Source name.
    pub name: &'static str,
    /// Connector kind that reads it.
    pub kind: &'static str,
    /// Port offset of its control server from `--listen-base`.
    pub port_offset: u16,
    /// What it writes.
    pub delivery: DeliveryKind,
}

/// The file and SQL sources; one line each.
pub const FILE_SOURCES: &[FileDef] = &[
    FileDef {
        name: "okc-2",
        kind: "xml_export",
        port_offset: 2,
        delivery: DeliveryKind::XmlExport,
    },
    FileDef {
        name: "okc-3",
        kind: "csv_drop",
        port_offset: 3,
        delivery: DeliveryKind::CsvDrop,
    },
    FileDef {
        name: "okc-4",
        kind: "sql_pull",
        port_offset: 4,
        delivery: DeliveryKind::Sql,
    },
    FileDef {
        name: "ris",
        kind: "sql_pull",
        port_offset: 7,
        delivery: DeliveryKind::Sql,
    },
    FileDef {
        name: "wmo",
        kind: "iwmo",
        port_offset: 8,
        delivery: DeliveryKind::Iwmo,
    },
];

/// What the last write of a source produced.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Written {
    /// Records (rows, messages) in the last written delivery.
    pub records: u64,
    /// Records new or changed by the last advance.
    pub changed: u64,
    /// Records written malformed.
    pub malformed: u64,
    /// Files written.
    pub files: Vec<String>,
}

/// The shared state of one running file or SQL source.
pub struct FileSource {
    /// Its definition.
    pub def: &'static FileDef,
    /// Where it lives: the folder or file of the deliveries, or the view.
    pub location: String,
    data: PathBuf,
    persons: u64,
    seed: u64,
    bad_share: f64,
    generation: AtomicU32,
    faults: RwLock<FaultSpec>,
    written: Mutex<Written>,
    feed: Option<Feed>,
    supplier: Option<Arc<tokio::sync::Mutex<SupplierDb>>>,
}

/// Why a delivery could not be written.
type WriteResult = Result<Written, String>;

fn io_err(what: &Path) -> impl Fn(std::io::Error) -> String + '_ {
    move |e| format!("{}: {e}", what.display())
}

/// Cuts a file mid-record (in the middle of a line): the `truncate` fault. The cut never
/// falls right after a line break, so the last record of a CSV drop has none and the reader
/// sees the truncation, as it sees a missing closing element in XML.
fn cut(path: &Path) -> Result<(), String> {
    let bytes = std::fs::read(path).map_err(io_err(path))?;
    let mut at = bytes.len() / 2;
    while at > 1 && matches!(bytes.get(at - 1), Some(b'\n' | b'\r')) {
        at -= 1;
    }
    std::fs::write(path, bytes.get(..at).unwrap_or(&[])).map_err(io_err(path))
}

/// Replaces a file with text that is no delivery: the `garbage` fault.
fn garbage(path: &Path) -> Result<(), String> {
    std::fs::write(path, "%%% this is not a delivery %%%\n").map_err(io_err(path))
}

/// Whether record `id` is written malformed under `share` in generation `g`.
fn pick(seed: u64, share: f64, g: u32, id: &str) -> bool {
    if share <= 0.0 {
        return false;
    }
    let h = id.bytes().fold(0xCBF2_9CE4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01B3)
    });
    draw(seed ^ h, u64::from(g)) < share
}

impl FileSource {
    /// A file source writing under `dir/data` (the folder `matchpoint sandbox --dir` was
    /// given), or an SQL source over the shared supplier database.
    fn new(
        def: &'static FileDef,
        opts: &FileOptions<'_>,
        dir: &Path,
        supplier: Option<Arc<tokio::sync::Mutex<SupplierDb>>>,
        view: Option<String>,
    ) -> Result<FileSource, String> {
        let (persons, seed) = (opts.persons, opts.seed);
        let data = dir.join("data");
        let (feed, location) = match def.delivery {
            DeliveryKind::XmlExport => (
                Some(okc2_feed(persons, seed)?),
                data.join("okc-2").join("export.xml").display().to_string(),
            ),
            DeliveryKind::CsvDrop => (
                Some(okc3_feed(persons, seed)?),
                data.join("okc-3").display().to_string(),
            ),
            DeliveryKind::Iwmo => (
                None,
                data.join("wmo").join("berichten").display().to_string(),
            ),
            DeliveryKind::Sql => (None, view.unwrap_or_default()),
        };
        Ok(FileSource {
            def,
            location,
            data,
            persons,
            seed,
            bad_share: opts.bad_share,
            generation: AtomicU32::new(0),
            faults: RwLock::new(FaultSpec::default()),
            written: Mutex::new(Written::default()),
            feed,
            supplier,
        })
    }

    /// The current fault spec.
    pub fn faults(&self) -> FaultSpec {
        self.faults.read().map(|f| f.clone()).unwrap_or_default()
    }

    /// The generation the source holds.
    pub async fn generation(&self) -> u32 {
        match &self.supplier {
            Some(db) => db.lock().await.generation(),
            None => self.generation.load(Ordering::Relaxed),
        }
    }

    /// Drops the supplier database's tables and views (an SQL source only; a test's
    /// sandbox with a table prefix cleans up with it when it stops).
    pub async fn drop_supplier_objects(&self) -> Result<(), String> {
        match &self.supplier {
            Some(db) => db
                .lock()
                .await
                .drop_objects()
                .await
                .map_err(|e| e.to_string()),
            None => Ok(()),
        }
    }

    fn generate_options(&self) -> GenerateOptions {
        GenerateOptions {
            persons: self.persons,
            out: self.data.clone(),
            seed: self.seed,
            bad_share: self.bad_share,
        }
    }

    /// Writes the delivery of file generation `g` with the current faults.
    fn write_files(&self, g: u32) -> WriteResult {
        let f = self.faults();
        let malformed_share = f.malformed;
        let seed = self.seed;
        let mut w = Written::default();
        let path: Option<PathBuf> = match (self.def.delivery, &self.feed) {
            (DeliveryKind::XmlExport, Some(feed)) => {
                let path = PathBuf::from(&self.location);
                let bad = std::cell::Cell::new(0u64);
                let is_bad = |r: &FeedRecord| {
                    let b = pick(seed, malformed_share, g, &r.id);
                    bad.set(bad.get() + u64::from(b));
                    b
                };
                w.records = write_okc2_generation(feed, g, &path, f.empty > 0.0, &is_bad)
                    .map_err(io_err(&path))?;
                w.malformed = bad.get();
                w.changed = okc2_changed(feed, g);
                Some(path)
            }
            (DeliveryKind::CsvDrop, Some(feed)) => {
                let folder = PathBuf::from(&self.location);
                let mut bad = 0u64;
                let drop = write_okc3_csv_with(feed, g, &folder, f.empty > 0.0, &mut |r| {
                    let b = pick(seed, malformed_share, g, &r.id);
                    bad += u64::from(b);
                    b
                })
                .map_err(io_err(&folder))?;
                w.records = drop.records;
                w.malformed = bad;
                w.changed = if g == 0 {
                    0
                } else {
                    feed.changed_since(g, Some(g - 1)).count() as u64
                };
                Some(drop.path)
            }
            (DeliveryKind::Iwmo, _) => {
                if g == 0 {
                    return Ok(w);
                }
                let folder = PathBuf::from(&self.location);
                std::fs::create_dir_all(&folder).map_err(io_err(&folder))?;
                let day = generation_day(iwmo_first_day(), g);
                let prefix = day.format("%Y%m%d-").to_string();
                // Re-writing a generation replaces its files.
                if let Ok(entries) = std::fs::read_dir(&folder) {
                    for e in entries.flatten() {
                        if e.file_name().to_string_lossy().starts_with(&prefix) {
                            let _ = std::fs::remove_file(e.path());
                        }
                    }
                }
                if f.empty > 0.0 {
                    return Ok(w);
                }
                let (messages, _) =
                    generation_messages(&self.generate_options(), IWMO_EVERY, iwmo_first_day(), g)
                        .map_err(|e| e.to_string())?;
                let mut last = None;
                for (seq, mut m) in (1u64..).zip(messages) {
                    if pick(seed, malformed_share, g, &m.header.id) {
                        // One digit off: the BSN fails the elfproef.
                        let mut digits: Vec<u8> = m.client.bsn.bytes().collect();
                        if let Some(d) = digits.last_mut() {
                            *d = b'0' + (*d - b'0' + 1) % 10;
                        }
                        m.client.bsn = String::from_utf8_lossy(&digits).into_owned();
                        w.malformed += 1;
                    }
                    let path = folder.join(file_name(&m.header, seq));
                    std::fs::write(&path, message_xml(&m)).map_err(io_err(&path))?;
                    w.records += 1;
                    w.files.push(path.display().to_string());
                    last = Some(path);
                }
                w.changed = w.records;
                last
            }
            _ => None,
        };
        if let Some(path) = path {
            if f.truncate > 0.0 {
                cut(&path)?;
            } else if f.garbage > 0.0 {
                garbage(&path)?;
            }
            if self.def.delivery != DeliveryKind::Iwmo {
                w.files.push(path.display().to_string());
            }
        }
        Ok(w)
    }

    /// Advances: writes the next generation. For SQL with the `empty` fault nothing is
    /// written (a quiet night) and the generation stays.
    async fn advance(self: &Arc<Self>) -> WriteResult {
        if let Some(db) = &self.supplier {
            let f = self.faults();
            let mut db = db.lock().await;
            if f.empty > 0.0 {
                return Ok(Written::default());
            }
            let g = db.advance().await.map_err(|e| e.to_string())?;
            let mine = if self.def.name == "ris" {
                g.ris
            } else {
                g.okc4
            };
            let mut w = Written {
                records: mine.total(),
                changed: mine.total(),
                ..Written::default()
            };
            if f.malformed > 0.0 {
                let (seed, share, n) = (self.seed, f.malformed, g.number);
                w.malformed = db
                    .corrupt(self.def.name, &|id| pick(seed, share, n, id))
                    .await
                    .map_err(|e| e.to_string())?;
            }
            return Ok(w);
        }
        let me = self.clone();
        tokio::task::spawn_blocking(move || {
            let g = me.generation.load(Ordering::Relaxed) + 1;
            if me.def.delivery == DeliveryKind::Iwmo && me.faults().empty > 0.0 {
                return Ok(Written::default());
            }
            let w = me.write_files(g)?;
            me.generation.store(g, Ordering::Relaxed);
            Ok(w)
        })
        .await
        .map_err(|e| e.to_string())?
    }

    /// Sets the faults and re-writes the current delivery with them.
    async fn set_faults(self: &Arc<Self>, spec: FaultSpec) -> WriteResult {
        let missing_view = spec.missing_view > 0.0;
        if let Ok(mut f) = self.faults.write() {
            *f = spec;
        }
        if let Some(db) = &self.supplier {
            let mut db = db.lock().await;
            let view = self.location.clone();
            db.execute(format!("DROP VIEW IF EXISTS {view}"))
                .await
                .map_err(|e| e.to_string())?;
            if !missing_view {
                let r = if self.def.name == "ris" {
                    db.create_ris_view().await
                } else {
                    db.create_okc4_view().await
                };
                r.map_err(|e| e.to_string())?;
            }
            return Ok(Written::default());
        }
        let me = self.clone();
        tokio::task::spawn_blocking(move || {
            let g = me.generation.load(Ordering::Relaxed);
            let mut w = me.write_files(g)?;
            if g == 0 {
                w.changed = 0;
            }
            Ok(w)
        })
        .await
        .map_err(|e| e.to_string())?
    }
}

#[derive(Serialize)]
struct Stats {
    name: String,
    generation: u32,
    #[serde(flatten)]
    written: Written,
}

async fn stats(State(src): State<Arc<FileSource>>) -> impl IntoResponse {
    let written = src.written.lock().map(|w| w.clone()).unwrap_or_default();
    axum::Json(Stats {
        name: src.def.name.to_owned(),
        generation: src.generation().await,
        written,
    })
}

fn answer(src: &FileSource, r: WriteResult) -> axum::response::Response {
    match r {
        Ok(w) => {
            if let Ok(mut last) = src.written.lock() {
                *last = w.clone();
            }
            axum::Json(serde_json::json!({ "ok": true, "written": w })).into_response()
        }
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("{}: {e}\n", src.def.name),
        )
            .into_response(),
    }
}

async fn advance(State(src): State<Arc<FileSource>>) -> axum::response::Response {
    let r = src.advance().await;
    answer(&src, r)
}

async fn set_faults(State(src): State<Arc<FileSource>>, body: String) -> axum::response::Response {
    match FaultSpec::parse(&body) {
        Ok(spec) => {
            let r = src.set_faults(spec).await;
            answer(&src, r)
        }
        Err(e) => (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
    }
}

async fn reset_stats() -> &'static str {
    "ok\n"
}

/// The control app of one file or SQL source.
pub fn app(src: Arc<FileSource>) -> Router {
    Router::new()
        .route("/_sandbox/stats", get(stats))
        .route("/_sandbox/advance", post(advance))
        .route("/_sandbox/faults", post(set_faults))
        .route("/_sandbox/reset-stats", post(reset_stats))
        .with_state(src)
}

/// One running file or SQL source.
pub struct RunningFile {
    /// Its state.
    pub source: Arc<FileSource>,
    /// Control server root.
    pub root: String,
}

/// What the file and SQL sources need.
pub struct FileOptions<'a> {
    /// The sandbox folder (`--dir`), holding `data/`; `None`: no file sources.
    pub dir: Option<&'a Path>,
    /// Persons, seed and bad share of the population.
    pub persons: u64,
    /// Seed.
    pub seed: u64,
    /// Share of deliberately bad records of generation 0.
    pub bad_share: f64,
    /// Faults of every source.
    pub faults: FaultSpec,
    /// Base port (0: free ports).
    pub listen_base: u16,
}

/// Starts the control server of every file source (with `dir`) and SQL source (with the
/// `supplier` database, already created) on the current tokio runtime. Applies the initial faults (re-writing
/// the first deliveries when any are set).
pub async fn start_files(
    opts: &FileOptions<'_>,
    supplier: Option<SupplierDb>,
) -> Result<Vec<RunningFile>, String> {
    let views = supplier.as_ref().map(|db| (db.okc4_view(), db.ris_view()));
    let supplier = supplier.map(|db| Arc::new(tokio::sync::Mutex::new(db)));
    let mut out = Vec::new();
    for def in FILE_SOURCES {
        let is_sql = def.delivery == DeliveryKind::Sql;
        let view = views.as_ref().map(|(o, r)| {
            if def.name == "ris" {
                r.clone()
            } else {
                o.clone()
            }
        });
        let (dir, db) = match (is_sql, opts.dir, &supplier) {
            (true, dir, Some(db)) => (dir.unwrap_or(Path::new(".")), Some(db.clone())),
            (false, Some(dir), _) => (dir, None),
            _ => continue,
        };
        let src = Arc::new(FileSource::new(def, opts, dir, db, view)?);
        let f = &opts.faults;
        let for_files = f.truncate + f.garbage + f.malformed + f.empty + f.missing_view > 0.0;
        if for_files {
            src.set_faults(opts.faults.clone()).await?;
        } else if let Ok(mut current) = src.faults.write() {
            // HTTP-only items: nothing to re-write.
            *current = opts.faults.clone();
        }
        let port = if opts.listen_base == 0 {
            0
        } else {
            opts.listen_base
                .checked_add(def.port_offset)
                .ok_or_else(|| format!("--listen-base {} leaves no room", opts.listen_base))?
        };
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .map_err(|e| format!("{}: cannot listen on 127.0.0.1:{port}: {e}", def.name))?;
        let addr = listener
            .local_addr()
            .map_err(|e| format!("{}: {e}", def.name))?;
        let app = app(src.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        out.push(RunningFile {
            source: src,
            root: format!("http://{addr}"),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use matchpoint_connectors::RecordStream;
    use matchpoint_connectors::csv_drop::{CsvDropReader, CsvFormat};

    #[test]
    fn the_truncate_fault_cuts_a_csv_drop_mid_record() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("drop.csv");
        // Half of the file falls right after a line break (byte 21 of 42).
        let csv = b"id;naam;plaats\r\n1;A\r\n2;Pietersen;Utrecht\r\n";
        assert_eq!(&csv[csv.len() / 2 - 2..csv.len() / 2], b"\r\n");
        std::fs::write(&path, csv).expect("write");
        super::cut(&path).expect("cut");
        let cut = std::fs::read(&path).expect("read");
        assert!(cut.len() < csv.len() && csv.starts_with(&cut));
        assert!(!matches!(cut.last(), Some(b'\n' | b'\r')), "{cut:?}");
        let mut reader =
            CsvDropReader::new(Box::new(Cursor::new(cut)), "drop.csv", CsvFormat::default());
        let err = loop {
            match reader.next_record() {
                Ok(Some(_)) => continue,
                Ok(None) => panic!("the cut drop reads as complete"),
                Err(e) => break e,
            }
        };
        assert!(err.to_string().contains("truncated"), "{err}");
    }
}
