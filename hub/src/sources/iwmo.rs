//! Kind `iwmo`: the WMO module's iWmo 3.2 messages (WMO301 assignment, WMO305 start, WMO307
//! stop), one message per file in a folder (`schemas/formats/iwmo.md`).
//!
//! # How a run works
//! The messages applied so far are kept in the store ([`stored`]): per (provider, client
//! pseudonym) pair the log of its messages (headers and products, never the client), and per
//! applied file its size, modification time and SHA-256. They are staged with the run and
//! published in the same transaction as its involvements, so a failed, cancelled or killed
//! run leaves index and state as they were, and the next run starts from both. A run
//! 1. lists the folder's `*.xml` files and picks those the state has not applied: a name it
//!    does not know, or a known file whose size or time changed (hashed: an unchanged hash
//!    only refreshes the entry; a changed one is quarantined as `file:NAME` once — an applied
//!    message is never applied again; `--full` rebuilds from the folder as it is). No file
//!    to pick is a quiet night: no message file is opened;
//! 2. reads the header and the client's BSN of each picked file (pass 1), loads the stored
//!    logs of the pairs they concern, and sorts all these messages by `Dagtekening`, then
//!    message kind (WMO301 before WMO305 before WMO307 on the same day: identifications of
//!    the municipality and of providers are not comparable), then `Identificatie`
//!    (numerically when both are numbers), sender and file name;
//! 3. applies them in that order to the assignment state machine ([`state`]), reading each
//!    new file a second time, one at a time: the state of a pair depends on its own messages
//!    only (one exception: a `ToewijzingNummer` reused for another client is only noticed
//!    when that client's messages are applied too, e.g. on a `--full` run);
//! 4. yields one raw record per assignment touched by a new message (every assignment on a
//!    full run), and per other assignment the provider has for a client of a new message (a
//!    late message can change how an older start or stop without number matched), holding
//!    its final state, for the source's mapping (`deploy/mappings/wmo.toml`). The record id
//!    is `AGB-ToewijzingNummer`. Stored messages keep no birth date: an assignment made by a
//!    stored WMO301 is delivered with the birth date of the new message;
//! 5. stages the changed pair logs and the picked files' entries with the run.
//!
//! A `--full` run, the first run with a store, and a run after the index key changed read
//! every file and replace the stored state. Retention (`crate::retention`) purges a pair's
//! log with the pair's last involvement; a `--full` run under the same key then does not
//! apply again a message of an applied, unchanged file that its pair's log no longer holds
//! ([`stored`]), and a new message of the pair starts a fresh log. Without a store (a
//! preview) every run reads the header of every file and replays the old messages of the
//! pairs the new ones (named after the cursor) concern. Either way a message that arrives late (an earlier `Dagtekening` in
//! a later file) is applied in its place, a WMO305/307 that arrived before its WMO301 takes
//! effect once the WMO301 arrives, and the same message twice changes nothing (every
//! operation sets state). The incremental upsert of the store is idempotent on (source,
//! record id).
//!
//! Problems of new messages are quarantined with the message's kind, sender and
//! identification as record id (no personal data): a schema problem, another iWmo version
//! (the reason names the version found), a start or stop without matching assignment. A
//! message whose BSN fails the elfproef is passed to the mapping as a record holding only the
//! BSN, which quarantines it as `invalid_bsn` (sealed for replay). A file that is not
//! well-formed XML, truncated or larger than `limits.max_record_bytes` fails the run. The
//! run logs `files_read` and `bytes_read` (message files opened).
//!
//! # Memory and time
//! Memory is bounded by the number of assignments applied (about 200 bytes each, the BSN in
//! memory only), the logs of the pairs concerned, and the applied-file entries (about 150
//! bytes per file in the folder); no message file is held after it was applied, and each
//! is capped at `limits.max_record_bytes`. An incremental run reads only the new files (and
//! lists and stats the folder); a full run reads every file twice (once more to hash it) and
//! holds the logs of all pairs until they are staged.

#[cfg(test)]
mod retention_tests;
pub mod state;
#[cfg(test)]
mod store_tests;
pub mod stored;
#[cfg(test)]
mod tests;
mod work;

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use matchpoint_connectors::iwmo::{
    Body, Header, Message, MessageError, MessageKind, MessageLimits, read_envelope, read_message,
};
use matchpoint_connectors::{DeliveryError, RecordError, RecordResult, RecordStream};
use matchpoint_schemas::{Bsn, KeyPurpose, MasterKey, Pseudonymiser, RawRecord, RecordPosition};
use tracing::{debug, info};

use super::{OpenContext, Opened, SourceState};
use crate::config::{SourceConfig, SourceMode};
use crate::store::StateChange;
use state::{Assignments, Key, Phase};
use stored::{FileEntry, Logged, pair_change, stored_messages};
use work::WorkIndex;

/// How a run gets the state of earlier messages.
enum Mode {
    /// No store (a preview): every run reads the header of every file and replays the old
    /// messages of the pairs that new messages concern.
    Stateless,
    /// Reads every file and replaces the stored state (a full run, the first run with a
    /// store, or after the index key changed).
    Rebuild {
        /// The applied files of the stored state (a full run under the same index key): a
        /// message of such a file is applied again only when its pair's stored log holds
        /// it (retention purges the log of a pair left without involvement).
        prior: Option<HashMap<String, FileEntry>>,
    },
    /// Reads only the files the stored state has not applied (`work`), and replays the
    /// stored logs of the pairs they concern.
    FromState {
        /// Applied files by name.
        registry: HashMap<String, FileEntry>,
        /// Indexes of the files to read: new, or possibly changed since applied.
        work: BTreeSet<usize>,
    },
}

/// The applied files of the stored state, when it was made with the current index key.
fn load_registry(
    st: &SourceState,
    source: &str,
) -> Result<Option<HashMap<String, FileEntry>>, String> {
    let fail =
        |e: crate::store::StoreError| format!("source {source}: reading the iWmo state: {e}");
    let meta = st
        .read(source, stored::META, Some(vec![stored::KEY_ID.to_vec()]))
        .map_err(fail)?;
    let current = st.pseudonymiser.key_id().as_str().as_bytes().to_vec();
    if meta.first().map(|(_, v)| v) != Some(&current) {
        return Ok(None);
    }
    let mut registry = HashMap::new();
    for (k, v) in st.read(source, stored::FILE, None).map_err(fail)? {
        let name = String::from_utf8_lossy(&k).into_owned();
        let entry = stored::parse_file(&v).ok_or_else(|| {
            format!("source {source}: the stored state of file {name} cannot be read; run --full")
        })?;
        registry.insert(name, entry);
    }
    Ok(Some(registry))
}

/// WMO020 product categories and their names (the goal of an involvement).
pub const PRODUCT_CATEGORIES: &[(&str, &str)] = &[
    ("01", "Hulp bij het huishouden"),
    ("02", "Begeleiding"),
    ("03", "Persoonlijke verzorging"),
    ("04", "Kortdurend verblijf"),
    ("05", "Woondiensten"),
    (
        "06",
        "Overige ondersteuning gericht op het individu of huishouden/gezin",
    ),
    ("07", "Dagbesteding"),
    ("08", "Vervoerdiensten"),
    ("09", "Overige groepsgerichte ondersteuning"),
    ("10", "Overige maatwerk arrangementen"),
    ("11", "Rolstoelen"),
    ("12", "Vervoervoorzieningen"),
    ("13", "Woonvoorzieningen"),
    ("14", "Overige hulpmiddelen"),
    ("15", "Beschermd wonen"),
    ("16", "Opvang"),
    ("17", "Spoedopvang"),
    ("18", "Overige beschermd wonen en opvang"),
];

/// WMO588 reasons for ending support.
pub const END_REASONS: &[(&str, &str)] = &[
    ("02", "Overlijden"),
    ("19", "Levering volgens plan beeindigd"),
    ("20", "Levering is tijdelijk beeindigd"),
    ("21", "Levering is eenzijdig door client beeindigd"),
    ("22", "Levering is eenzijdig door aanbieder beeindigd"),
    ("23", "Levering is in overeenstemming voortijdig beeindigd"),
    ("31", "Verhuizing naar een andere gemeente"),
    ("36", "Geinitieerd door de gemeente"),
    ("37", "In verband met wijzigingsverzoek"),
    ("38", "Overstap naar andere aanbieder"),
    ("39", "Uitstroom naar ander domein"),
];

/// The category code delivered for an assignment without product (a budget assignment).
pub const NO_PRODUCT: &str = "geen";

/// Opens the run's messages: `Ok(None)` when no file is named after the cursor.
pub fn open(cx: &OpenContext<'_>) -> Result<Option<Opened>, String> {
    let loc = &cx.source.location;
    if loc.starts_with("http://") || loc.starts_with("https://") {
        return Err(format!(
            "source {}: an iwmo source reads a folder of message files; `{loc}` is a URL",
            cx.source.name
        ));
    }
    let files = list(Path::new(loc))?;
    let full_run = cx.full || cx.source.mode == SourceMode::Full;
    let since = if full_run {
        None
    } else {
        cx.cursor.map(str::to_owned)
    };
    let mode = match &cx.state {
        None => Mode::Stateless,
        Some(st) if full_run => Mode::Rebuild {
            prior: load_registry(st, &cx.source.name)?,
        },
        Some(st) => match load_registry(st, &cx.source.name)? {
            None => Mode::Rebuild { prior: None },
            Some(registry) => {
                let mut work = BTreeSet::new();
                for (i, (path, name)) in files.iter().enumerate() {
                    let unchanged = registry.get(name).is_some_and(|e| {
                        FileEntry::stat(path).is_ok_and(|(size, mtime)| !e.differs(size, mtime))
                    });
                    if !unchanged {
                        work.insert(i);
                    }
                }
                if work.is_empty() && !files.is_empty() {
                    // Every file was applied: a quiet night, nothing read.
                    return Ok(None);
                }
                Mode::FromState { registry, work }
            }
        },
    };
    if !matches!(mode, Mode::FromState { .. })
        && let Some(c) = &since
        && !files.iter().any(|(_, name)| name.as_str() > c.as_str())
    {
        return Ok(None);
    }
    if files.is_empty() {
        // An empty folder is a quiet night for an incremental run; a full run has nothing
        // to compare with and fails.
        if since.is_none() && (cx.full || cx.source.mode == SourceMode::Full) {
            return Err(format!(
                "no .xml message file in {loc}; nothing was published"
            ));
        }
        return Ok(None);
    }
    let pair_keys = match &cx.state {
        Some(st) => st.pseudonymiser.clone(),
        // No store: the work index's pairs are keyed with a random key of this run.
        None => MasterKey::from_secret("run", &rand::random::<[u8; 32]>())
            .map_err(|e| format!("source {}: {e}", cx.source.name))?
            .pseudonymiser(KeyPurpose::Index),
    };
    let mut stream = IwmoStream::new(cx.source, files, since, cx.cancel.clone(), pair_keys);
    stream.store = cx.state.clone().map(|st| (st, mode));
    stream.total = stream.pass1().iter().filter_map(|&f| stream.size(f)).sum();
    Ok(Some(Opened {
        stream: Box::new(stream),
    }))
}

/// The message files of a folder (or the one file), in name order.
fn list(path: &Path) -> Result<Vec<(PathBuf, String)>, String> {
    let shown = path.display();
    let mut files: Vec<PathBuf> = if path.is_dir() {
        std::fs::read_dir(path)
            .map_err(|e| format!("cannot list {shown}: {e}"))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "xml"))
            .collect()
    } else if path.is_file() {
        vec![path.to_path_buf()]
    } else {
        return Err(format!(
            "iWmo message folder {shown} does not exist; create it or fix `location`"
        ));
    };
    files.sort();
    Ok(files
        .into_iter()
        .map(|p| {
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            (p, name)
        })
        .collect())
}

/// The order messages are applied in.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct SortKey {
    dagtekening: chrono::NaiveDate,
    kind: MessageKind,
    /// Numeric identifications first, by value; then the others by text.
    id_numeric: Option<u64>,
    id: String,
    sender: String,
    /// The file's name, then its index in this run (stored messages: after the files).
    name: String,
    file: usize,
}

/// A message to apply: in a file of the folder (as read), or from the stored state.
enum Item {
    File(usize, Result<Message, MessageError>),
    Stored(Box<Message>),
}

/// Pairs read from the work index at a time (their stored logs are read together).
const PAIRS_PER_BATCH: usize = 256;

/// State changes staged at a time.
const CHANGES_PER_STAGE: usize = 1000;

impl SortKey {
    fn new(h: &Header, name: String, file: usize) -> Self {
        SortKey {
            dagtekening: h.dagtekening,
            kind: h.kind,
            id_numeric: numeric(&h.id),
            id: h.id.clone(),
            sender: h.sender.clone(),
            name,
            file,
        }
    }

    fn from_row(r: &work::Row, name: String) -> Self {
        SortKey {
            dagtekening: r.dagtekening,
            kind: r.kind,
            id_numeric: numeric(&r.id),
            id: r.id.clone(),
            sender: r.sender.clone(),
            name,
            file: r.file,
        }
    }
}

fn numeric(id: &str) -> Option<u64> {
    (id.bytes().all(|b| b.is_ascii_digit()))
        .then(|| id.parse::<u64>().ok())
        .flatten()
}

/// One run over the message folder.
pub struct IwmoStream {
    source: String,
    /// Only messages of this municipality are applied (`[source.iwmo] municipality`).
    municipality: Option<String>,
    files: Vec<(PathBuf, String)>,
    since: Option<String>,
    limits: MessageLimits,
    cancel: Arc<AtomicBool>,
    prepared: bool,
    queue: VecDeque<RecordResult>,
    /// The run's work index (pass 1), until every pair was applied.
    work: Option<WorkIndex>,
    /// The pairs read from the work index and not applied yet, and their stored logs.
    batch: VecDeque<(Vec<u8>, Vec<work::Row>)>,
    batch_logs: HashMap<Vec<u8>, Vec<Logged>>,
    /// Keys the work index's pairs: the store's index pseudonymiser, or (no store) one
    /// with a random key of this run.
    pair_keys: Pseudonymiser,
    /// State changes not staged yet.
    pending: Vec<StateChange>,
    index: u64,
    bytes: u64,
    total: u64,
    finished: bool,
    /// The store's state and how this run uses it (`None`: no store).
    store: Option<(SourceState, Mode)>,
    /// Files opened this run (observable: `files_read` in the log).
    files_read: u64,
    /// Messages of applied files not applied again by a full run (their pair was purged).
    purged: u64,
}

impl IwmoStream {
    fn new(
        source: &SourceConfig,
        files: Vec<(PathBuf, String)>,
        since: Option<String>,
        cancel: Arc<AtomicBool>,
        pair_keys: Pseudonymiser,
    ) -> Self {
        IwmoStream {
            source: source.name.clone(),
            municipality: source.iwmo.as_ref().and_then(|i| i.municipality.clone()),
            files,
            since,
            limits: MessageLimits {
                max_bytes: source.limits.max_record_bytes,
                max_event_bytes: source.limits.max_element_bytes,
                max_depth: source.limits.max_depth,
                ..MessageLimits::default()
            },
            cancel,
            prepared: false,
            queue: VecDeque::new(),
            work: None,
            batch: VecDeque::new(),
            batch_logs: HashMap::new(),
            pair_keys,
            pending: Vec::new(),
            index: 0,
            bytes: 0,
            total: 0,
            finished: false,
            store: None,
            files_read: 0,
            purged: 0,
        }
    }

    fn is_new(&self, file: usize) -> bool {
        if let Some((_, Mode::FromState { work, .. })) = &self.store {
            return work.contains(&file);
        }
        match (&self.since, self.files.get(file)) {
            (None, _) => true,
            (Some(c), Some((_, name))) => name.as_str() > c.as_str(),
            (Some(_), None) => false,
        }
    }

    fn next_position(&mut self) -> RecordPosition {
        self.index += 1;
        RecordPosition {
            index: self.index,
            byte_offset: 0,
        }
    }

    fn delivery_error(&self, file: usize, e: MessageError) -> DeliveryError {
        let location = self
            .files
            .get(file)
            .map(|(p, _)| p.display().to_string())
            .unwrap_or_default();
        match e {
            MessageError::Truncated(message) => DeliveryError::Truncated { location, message },
            MessageError::Limit(message) => DeliveryError::Limit {
                location,
                // One message file is capped by the source's `limits.max_record_bytes`.
                message: message.replace("(limits.max_bytes)", "(limits.max_record_bytes)"),
            },
            MessageError::Malformed {
                byte_offset,
                message,
            } => DeliveryError::Malformed {
                location,
                byte_offset,
                record_index: 0,
                message,
            },
            other => DeliveryError::Malformed {
                location,
                byte_offset: 0,
                record_index: 0,
                message: other.to_string(),
            },
        }
    }

    /// A problem with one message: the run fails (broken file) or the message is
    /// quarantined (new files only; old files were reported by their own run).
    fn problem(
        &mut self,
        file: usize,
        record_id: String,
        e: MessageError,
    ) -> Result<(), DeliveryError> {
        if !self.is_new(file) {
            debug!(file, "Skipping an old message that could not be applied.");
            return Ok(());
        }
        if e.breaks_delivery() {
            return Err(self.delivery_error(file, e));
        }
        let field = match &e {
            MessageError::Invalid { element, .. } => Some(element.clone()),
            _ => None,
        };
        let position = self.next_position();
        self.queue.push_back(Err(RecordError {
            record_id: Some(record_id),
            position,
            field,
            reason: e.to_string(),
        }));
        Ok(())
    }

    fn open_file(&self, file: usize) -> Result<BufReader<File>, DeliveryError> {
        let (path, _) = &self.files[file];
        File::open(path)
            .map(|f| BufReader::with_capacity(16 * 1024, f))
            .map_err(|e| DeliveryError::Io {
                location: path.display().to_string(),
                message: e.to_string(),
            })
    }

    fn check_cancel(&self) -> Result<(), DeliveryError> {
        if self.cancel.load(Ordering::Relaxed) {
            return Err(DeliveryError::Io {
                location: self.source.clone(),
                message: "cancelled (interrupt)".into(),
            });
        }
        Ok(())
    }

    /// The files pass 1 reads: all of them, or (store-backed state) those not yet applied.
    fn pass1(&self) -> Vec<usize> {
        match &self.store {
            Some((_, Mode::FromState { work, .. })) => work.iter().copied().collect(),
            _ => (0..self.files.len()).collect(),
        }
    }

    fn size(&self, file: usize) -> Option<u64> {
        std::fs::metadata(&self.files.get(file)?.0)
            .ok()
            .map(|m| m.len())
    }

    fn store_error(&self, e: impl std::fmt::Display) -> DeliveryError {
        DeliveryError::Io {
            location: self.source.clone(),
            message: format!("iWmo state: {e}"),
        }
    }

    /// Pass 1: reads the header and BSN of every file to read into the work index, keyed by
    /// (provider, client pseudonym) pair; stages the entries of changed files.
    fn start(&mut self) -> Result<(), DeliveryError> {
        let mut changes = self.first_changes();
        self.check_changed(&mut changes)?;
        self.stage_some(changes, true)?;
        let mut work = WorkIndex::new().map_err(|e| self.work_error(e))?;
        for file in self.pass1() {
            self.check_cancel()?;
            let name = self.files[file].1.clone();
            self.bytes += self.size(file).unwrap_or(0);
            self.files_read += 1;
            match read_envelope(self.open_file(file)?, &self.limits) {
                Ok((h, bsn)) => {
                    let pair = match bsn.as_deref().map(Bsn::parse) {
                        Some(Ok(b)) => stored::pair_key(
                            h.provider(),
                            self.pair_keys.pseudonymise(&b).as_bytes(),
                        ),
                        // No valid BSN: the message is a pair of its own (it never reaches
                        // the state).
                        _ => {
                            let mut k = vec![1u8];
                            k.extend_from_slice(&(file as u64).to_be_bytes());
                            k
                        }
                    };
                    work.add(&pair, &h, file).map_err(|e| self.work_error(e))?;
                }
                Err(e) => self.problem(file, format!("file:{name}"), e)?,
            }
        }
        work.seal().map_err(|e| self.work_error(e))?;
        self.work = Some(work);
        Ok(())
    }

    fn work_error(&self, e: rusqlite::Error) -> DeliveryError {
        DeliveryError::Io {
            location: self.source.clone(),
            message: format!("iWmo work index: {e}"),
        }
    }

    /// Applies the messages of the next pair; `false` when every pair was applied.
    fn next_pair(&mut self) -> Result<bool, DeliveryError> {
        if self.batch.is_empty() {
            let Some(work) = self.work.as_mut() else {
                return Ok(false);
            };
            let next = work.next_pairs(PAIRS_PER_BATCH);
            let next = next.map_err(|e| self.work_error(e))?;
            if next.is_empty() {
                return Ok(false);
            }
            self.batch_logs = self.stored_logs(next.iter().map(|(pair, _)| pair))?;
            self.batch = next.into();
        }
        let Some((pair, rows)) = self.batch.pop_front() else {
            return Ok(false);
        };
        let stored = self.batch_logs.remove(&pair);
        self.apply_pair(rows, stored)?;
        Ok(true)
    }

    /// Reads and applies the messages of one (provider, client) pair, in order, with the
    /// stored log of the pair; queues its problems and the assignments to deliver, and
    /// stages its log.
    fn apply_pair(
        &mut self,
        rows: Vec<work::Row>,
        stored: Option<Vec<Logged>>,
    ) -> Result<(), DeliveryError> {
        let stateless = self.store.is_none();
        let from_state = matches!(self.store, Some((_, Mode::FromState { .. })));
        // An old message of a pair without new message cannot change what this run
        // delivers (in incremental runs; a full run applies everything).
        if stateless && self.since.is_some() && !rows.iter().any(|r| self.is_new(r.file)) {
            return Ok(());
        }
        let mut order: Vec<(SortKey, Item)> = Vec::with_capacity(rows.len());
        let mut bsn: Option<String> = None;
        for row in rows {
            self.check_cancel()?;
            let key = SortKey::from_row(&row, self.files[row.file].1.clone());
            let read = read_message(self.open_file(row.file)?, &self.limits);
            if let (Ok(m), None) = (&read, &bsn) {
                bsn = Some(m.client.bsn.clone());
            }
            order.push((key, Item::File(row.file, read)));
        }
        // A full run under the same key: the pair's log as stored, to tell messages purged
        // by retention; an incremental run: the stored messages, replayed.
        let mut prior: Option<Vec<Logged>> = None;
        if let Some(log) = stored {
            if from_state {
                if let Some(bsn) = &bsn {
                    order.extend(stored_messages(log, bsn));
                }
            } else {
                prior = Some(log);
            }
        }
        order.sort_by(|a, b| a.0.cmp(&b.0));
        let mut state = Assignments::default();
        let mut log: Vec<Logged> = Vec::new();
        let mut birth: Option<chrono::NaiveDate> = None;
        let mut touched: BTreeSet<Key> = BTreeSet::new();
        // The provider and BSN of a new message: all their assignments are delivered, since
        // a late message can change how an older start or stop without number matched.
        let mut client: Option<(String, String)> = None;
        // Who made each assignment: the record id of the product and whether it is new.
        let mut made: HashMap<Key, (String, bool)> = HashMap::new();
        let mut logged_pair: Option<(String, String)> = None;
        for (key, item) in order {
            self.check_cancel()?;
            let record_id = format!("{}:{}:{}", key.kind.name(), key.sender, key.id);
            let (m, new, file_index) = match item {
                Item::Stored(m) => (*m, false, None),
                Item::File(file, read) => match read {
                    Ok(m) => (m, self.is_new(file), Some(file)),
                    Err(e) => {
                        self.problem(file, record_id, e)?;
                        continue;
                    }
                },
            };
            if let Some(own) = self.municipality.clone()
                && m.header.municipality() != own
            {
                if new {
                    let position = self.next_position();
                    self.queue.push_back(Err(RecordError {
                        record_id: Some(record_id),
                        position,
                        field: Some("Header".into()),
                        reason: format!(
                            "message of municipality {}; this source applies messages of municipality {own} only ([source.iwmo] municipality)",
                            m.header.municipality()
                        ),
                    }));
                }
                continue;
            }
            if Bsn::parse(&m.client.bsn).is_err() {
                // The mapping rejects it as `invalid_bsn`; the state never sees it.
                if new {
                    let position = self.next_position();
                    self.queue.push_back(Ok(RawRecord {
                        record_id: Some(record_id),
                        position,
                        fields: vec![("client/bsn".into(), m.client.bsn.clone())],
                        groups: Vec::new(),
                    }));
                }
                continue;
            }
            if let Some(file) = file_index
                && self.applied_before(file)
                && !prior
                    .as_ref()
                    .is_some_and(|log| log.iter().any(|l| l.header == m.header && l.body == m.body))
            {
                // Applied before, and no longer in its pair's log: purged by retention.
                self.purged += 1;
                continue;
            }
            let pair = (m.header.provider().to_owned(), m.client.bsn.clone());
            if new {
                if m.client.birth_date_use.is_none() {
                    birth = Some(m.client.birth_date);
                }
                client = Some(pair.clone());
            }
            if self.store.is_some() {
                let entry = Logged {
                    file: key.name.clone(),
                    header: m.header.clone(),
                    body: m.body.clone(),
                };
                if !log
                    .iter()
                    .any(|l| l.header == entry.header && l.body == entry.body)
                {
                    log.push(entry);
                }
                logged_pair = Some(pair);
            }
            let creates = matches!(m.body, Body::Assignment(_));
            for (i, result) in state.apply(&m).into_iter().enumerate() {
                let product_id = format!("{record_id}#{}", i + 1);
                match result {
                    Ok(k) => {
                        if creates {
                            made.entry(k.clone()).or_insert((product_id, new));
                        }
                        if new {
                            touched.insert(k);
                        }
                    }
                    Err(p) => {
                        if new {
                            let position = self.next_position();
                            self.queue.push_back(Err(RecordError {
                                record_id: Some(product_id),
                                position,
                                field: Some(p.element),
                                reason: p.reason,
                            }));
                        }
                    }
                }
            }
        }
        let mut keys: Vec<Key> = if self.since.is_none() && !from_state {
            let mut all: Vec<Key> = state.keys().cloned().collect();
            all.sort();
            all
        } else {
            if let Some((provider, bsn)) = &client {
                for n in state.numbers_of(provider, bsn) {
                    touched.insert((provider.clone(), *n));
                }
            }
            touched.into_iter().collect()
        };
        // A `ToewijzingNummer` of the provider that another client's messages in this run
        // used first: reported with the assignment that reused it, not delivered.
        if let (Some(work), Some(bsn)) = (&self.work, &bsn) {
            let mut pair_id = bsn.as_bytes().to_vec();
            if let Ok(b) = Bsn::parse(bsn) {
                pair_id = self.pair_keys.pseudonymise(&b).as_bytes().to_vec();
            }
            let mut lost = Vec::new();
            for k in state.keys() {
                if !work
                    .claim(&k.0, k.1, &pair_id)
                    .map_err(|e| self.work_error(e))?
                {
                    lost.push(k.clone());
                }
            }
            for k in lost {
                keys.retain(|x| *x != k);
                if let Some((product_id, true)) = made.get(&k) {
                    let position = self.next_position();
                    self.queue.push_back(Err(RecordError {
                        record_id: Some(product_id.clone()),
                        position,
                        field: Some(format!("ToegewezenProduct ToewijzingNummer {}", k.1)),
                        reason: "the assignment number is already used for another client by this provider".into(),
                    }));
                }
            }
        }
        for key in keys {
            if let Some(rec) = self.record(&state, birth, &key) {
                self.queue.push_back(Ok(rec));
            }
        }
        if let Some((provider, bsn)) = logged_pair
            && let Some((st, _)) = &self.store
            && let Ok(b) = Bsn::parse(&bsn)
        {
            let p = st.pseudonymiser.pseudonymise(&b);
            let change = pair_change(stored::pair_key(&provider, p.as_bytes()), &log);
            self.stage_some(vec![change], false)?;
        }
        Ok(())
    }

    /// After the last pair: stages the entries of the files read and what is left.
    fn finish(&mut self) -> Result<(), DeliveryError> {
        info!(
            files_read = self.files_read,
            bytes_read = self.bytes,
            purged_not_reapplied = self.purged,
            "iWmo messages read."
        );
        self.work = None;
        self.stage_files()?;
        self.stage_some(Vec::new(), true)
    }

    /// The raw record of an assignment's current state.
    fn record(
        &mut self,
        state: &Assignments,
        birth: Option<chrono::NaiveDate>,
        key: &Key,
    ) -> Option<RawRecord> {
        let mut a = state.get(key)?.clone();
        if a.birth_date.is_none() {
            // Created by a stored message (no birth date kept): the new message's.
            a.birth_date = birth;
        }
        let position = self.next_position();
        let d = |date: chrono::NaiveDate| date.format("%Y-%m-%d").to_string();
        let phase = a.phase();
        let mut fields = vec![
            ("client/bsn".to_owned(), a.bsn.clone()),
            ("aanbieder/agb".to_owned(), key.0.clone()),
            ("gemeente".to_owned(), a.municipality.clone()),
            ("toewijzing/nummer".to_owned(), key.1.to_string()),
            ("toewijzing/datum".to_owned(), d(a.assigned_on)),
            ("toewijzing/ingangsdatum".to_owned(), d(a.start)),
            ("status".to_owned(), phase.code().to_owned()),
        ];
        if let Some(b) = a.birth_date {
            fields.push(("client/geboortedatum".into(), d(b)));
        }
        if let Some(e) = a.end {
            fields.push(("toewijzing/einddatum".into(), d(e)));
        }
        if let Some(r) = &a.change_reason {
            fields.push(("toewijzing/reden_wijziging".into(), r.clone()));
        }
        match &a.product {
            Some(p) => {
                fields.push(("product/categorie".into(), p.category.clone()));
                let name = PRODUCT_CATEGORIES
                    .iter()
                    .find(|(c, _)| *c == p.category)
                    .map_or("Wmo-ondersteuning", |(_, n)| n);
                let goal = match &p.code {
                    Some(code) => {
                        fields.push(("product/code".into(), code.clone()));
                        format!("{name} (product {code})")
                    }
                    None => name.to_owned(),
                };
                fields.push(("product/doel".into(), goal));
            }
            None => {
                fields.push(("product/categorie".into(), NO_PRODUCT.into()));
                fields.push(("product/doel".into(), "Wmo-ondersteuning (budget)".into()));
            }
        }
        // The involvement runs from the start of support (or of the assignment) to the
        // stop (or the assignment's end); a voided assignment ends where it started.
        let begin = a.started.unwrap_or(a.start);
        fields.push(("levering/begindatum".into(), d(begin)));
        let end = match (phase, &a.stopped) {
            (Phase::Voided, _) => Some(begin),
            (_, Some((end, reason))) => {
                fields.push(("levering/reden_beeindiging".into(), reason.clone()));
                if let Some((_, text)) = END_REASONS.iter().find(|(c, _)| c == reason) {
                    fields.push(("levering/reden_omschrijving".into(), (*text).to_owned()));
                }
                Some(*end)
            }
            (_, None) => a.end,
        };
        if let Some(e) = end {
            fields.push(("levering/einddatum".into(), d(e.max(begin))));
        }
        Some(RawRecord {
            record_id: Some(format!("{}-{}", key.0, key.1)),
            position,
            fields,
            groups: Vec::new(),
        })
    }
}

impl RecordStream for IwmoStream {
    fn next_record(&mut self) -> Result<Option<RecordResult>, DeliveryError> {
        if !self.prepared {
            self.prepared = true;
            self.start()?;
        }
        loop {
            if let Some(r) = self.queue.pop_front() {
                return Ok(Some(r));
            }
            if self.finished {
                return Ok(None);
            }
            if !self.next_pair()? {
                self.finish()?;
                self.finished = true;
            }
        }
    }

    fn bytes_read(&self) -> u64 {
        self.bytes
    }

    fn total_bytes(&self) -> Option<u64> {
        (self.total > 0).then_some(self.total)
    }

    /// The name of the last file in the folder, once every message was applied.
    fn cursor(&self) -> Option<String> {
        if !self.finished {
            return None;
        }
        self.files.last().map(|(_, name)| name.clone())
    }
}
