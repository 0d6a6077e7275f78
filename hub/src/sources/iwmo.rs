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
//! 2. reads each picked file (pass 1; only the header and the client's BSN of a message
//!    that does not read whole) and writes one row per message into the run's work index
//!    ([`work`], a temporary SQLite database on disk): its (provider, client pseudonym)
//!    pair, the fields that order it and its file; and one row per `ToewijzingNummer` a
//!    WMO301 makes, with the message's place in the order of application (step 3);
//! 3. then takes the pairs one by one (a batch of pairs at a time, with their stored logs):
//!    reads the pair's files a second time, adds the stored messages of its log, sorts them
//!    by `Dagtekening`, then message kind (WMO301 before WMO305 before WMO307 on the same
//!    day: identifications of the municipality and of providers are not comparable), then
//!    `Identificatie` (numerically when both are numbers), sender and file name, and
//!    applies them in that order to a fresh assignment state machine ([`state`]): the state
//!    of a pair depends on its own messages only. The one exception is a `ToewijzingNummer`
//!    of a provider used for two clients (a data error): the client of the first WMO301 in
//!    that order that makes it keeps it, whichever pair is applied first and whichever run
//!    each message arrived in; the other client's assignment is reported (its products of
//!    new messages) and not delivered. Per number of the pair the run looks up the first
//!    use among its own messages (work index) and, on an incremental run, among the stored
//!    ones (the state's `number` entries, [`stored`]); a new message that takes a number
//!    from the stored client that had it (it arrived late) reports that client's product,
//!    and so does a preview for an old message that had it. A state stored before the
//!    `number` entries existed is rebuilt from the folder once;
//! 4. yields, as each pair is applied, one raw record per assignment touched by a new
//!    message (every assignment on a full run), and per other assignment the provider has
//!    for the client of a new message (a late message can change how an older start or
//!    stop without number matched), holding its final state, for the source's mapping
//!    (`deploy/mappings/wmo.toml`). The record id is `AGB-ToewijzingNummer`. Stored messages
//!    keep no birth date: an assignment made by a stored WMO301 is delivered with the birth
//!    date of the new message;
//! 5. stages the pair's changed log with the run as it goes (1,000 changes at a time), and
//!    the picked files' entries after the last pair.
//!
//! A `--full` run, the first run with a store, and a run after the index key changed read every
//! file and replace the stored state. Retention (`crate::retention`) purges a pair's log (and its
//! `number` entries) with the pair's last involvement; a `--full` run under the same key then does
//! not apply again a message of an applied, unchanged file that its pair's log no longer holds
//! ([`stored`]), and a new message of the pair starts a fresh log. Without a store (a preview)
//! every run reads every file for the work index and replays the old messages of the pairs the new
//! ones (named after the cursor) concern. Either way a message that arrives late (an earlier
//! `Dagtekening` in a later file) is applied in its place, a WMO305/307 that arrived before its
//! WMO301 takes effect once the WMO301 arrives, and the same message twice changes nothing (every
//! operation sets state). The incremental upsert of the store is idempotent on (source, record id).
//!
//! Problems of new messages are quarantined with the message's kind, sender and
//! identification as record id (no personal data): a schema problem, another iWmo version
//! (the reason names the version found), a start or stop without matching assignment. A
//! message whose BSN fails the elfproef is passed to the mapping as a record holding only the
//! BSN, which quarantines it as `invalid_bsn` (sealed for replay). A file that is not
//! well-formed XML, truncated or larger than `limits.max_record_bytes` fails the run. The
//! run logs `files_read` and `bytes_read` (message files opened). A record is quarantined once
//! per run and reason: a message sent twice (the same message in two new files) once, and a
//! product whose assignment number a late message of another client takes once, also when its
//! own message is sent again in the same run (it would be reported by both pairs).
//!
//! # Memory and time
//! Memory does not grow with the archive: the folder's file list, the applied files' entries
//! (read from the store 1,000 at a time) and the message rows of pass 1 live in the work index,
//! whose page cache is bounded (4 MB); it never holds a BSN (pairs are keyed by the provider
//! and the client's pseudonym under the index key, or without store a random key of the run)
//! and is deleted when the run ends. In memory are the messages, state and log of the pairs of
//! one batch (256 pairs; a pair's messages are held while it is applied, each file capped at
//! `limits.max_record_bytes`), the records of one pair not yet taken, up to 1,000 state
//! changes not yet staged, and the record ids of the products the run quarantined for a reused
//! assignment number (a data error: few). Measured (`tests/iwmo_memory.rs`): a full re-sync of
//! 2,229 and of 8,915 messages peaks at 1.2 and 1.5 MB of heap (1.8 and 1.9 MB before the
//! assignment numbers were recorded; 6.6 and 26.6 MB when every pair was held). An incremental
//! run reads only the new files (and lists and stats the folder); a full run reads every file
//! three times (message, message again when its pair is applied, hash) and does a point lookup
//! in the work index per file and per pair. Per assignment of a pair applied, the run does one
//! lookup in the work index. An incremental run reads the store's state a batch of pairs at a
//! time: the batch's stored logs in one query, the first `number` entries of every assignment
//! number the batch's messages make in one more (per number at most 4; a number with more and
//! none of them live is read on a page at a time), and the stored logs of other pairs those
//! entries name (a number reused for two clients) in a third; so its state queries grow with
//! the batches, not with the assignments (`state_reads` in the run's log).

#[cfg(test)]
mod reads_tests;
#[cfg(test)]
mod retention_tests;
pub mod state;
#[cfg(test)]
mod store_tests;
pub mod stored;
#[cfg(test)]
mod tests;
mod work;

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
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
        /// The applied files of the stored state are in the work index (a full run under
        /// the same index key): a message of such a file is applied again only when its
        /// pair's stored log holds it (retention purges the log of a pair left without
        /// involvement).
        prior: bool,
    },
    /// Reads only the files the stored state has not applied (marked to do in the work
    /// index, with the applied files' entries), and replays the stored logs of the pairs
    /// they concern.
    FromState,
}

/// Stored entries (and files) read at a time (tiny in tests, so that they cross pages).
const ENTRIES_PER_PAGE: usize = if cfg!(test) { 3 } else { 1000 };

/// A listed file of the work index: index, name, and the name's system bytes.
type Listed = (usize, String, Vec<u8>);

/// Walks files of the work index a page at a time: `page(on, after)` gives the next page
/// after file `after` (empty at the end), and `f` is called with each file in order; the
/// first error stops the walk.
fn for_each_file<T, E>(
    on: &mut T,
    page: impl Fn(&T, Option<usize>) -> Result<Vec<Listed>, E>,
    mut f: impl FnMut(&mut T, Listed) -> Result<(), E>,
) -> Result<(), E> {
    let mut after = None;
    loop {
        let files = page(on, after)?;
        let Some((last, _, _)) = files.last() else {
            return Ok(());
        };
        after = Some(*last);
        for file in files {
            f(on, file)?;
        }
    }
}

/// Copies the applied files of the stored state into the work index, when it was made with
/// the current index key (`false`: it was not).
fn load_registry(st: &SourceState, source: &str, work: &mut WorkIndex) -> Result<bool, String> {
    let fail =
        |e: crate::store::StoreError| format!("source {source}: reading the iWmo state: {e}");
    let meta = st
        .read(source, stored::META, Some(vec![stored::KEY_ID.to_vec()]))
        .map_err(fail)?;
    let current = st.pseudonymiser.key_id().as_str().as_bytes().to_vec();
    if meta.first().map(|(_, v)| v) != Some(&current) {
        return Ok(false);
    }
    let mut after: Option<Vec<u8>> = None;
    loop {
        let page = st
            .read_page(source, stored::FILE, after.take(), ENTRIES_PER_PAGE)
            .map_err(fail)?;
        let Some((last, _)) = page.last() else {
            break;
        };
        after = Some(last.clone());
        for (k, v) in &page {
            if stored::parse_file(v).is_none() {
                let name = String::from_utf8_lossy(k);
                return Err(format!(
                    "source {source}: the stored state of file {name} cannot be read; run --full"
                ));
            }
            work.add_entry(k, v).map_err(|e| work_failed(source, e))?;
        }
    }
    work.flush().map_err(|e| work_failed(source, e))?;
    Ok(true)
}

/// Whether the stored state has the `number` entries ([`stored`]).
fn has_numbers(st: &SourceState, source: &str) -> Result<bool, String> {
    let meta = st
        .read(source, stored::META, Some(vec![stored::NUMBERS.to_vec()]))
        .map_err(|e| format!("source {source}: reading the iWmo state: {e}"))?;
    Ok(!meta.is_empty())
}

fn work_failed(source: &str, e: rusqlite::Error) -> String {
    format!("source {source}: iWmo work index: {e}")
}

/// Where the files are: a folder, or the one file.
struct Folder {
    path: PathBuf,
    is_dir: bool,
}

impl Folder {
    /// The path of a listed file (by its name's system bytes).
    fn path(&self, raw: &[u8]) -> PathBuf {
        if !self.is_dir {
            return self.path.clone();
        }
        #[cfg(unix)]
        {
            use std::os::unix::ffi::OsStrExt;
            self.path.join(std::ffi::OsStr::from_bytes(raw))
        }
        #[cfg(not(unix))]
        {
            self.path.join(String::from_utf8_lossy(raw).as_ref())
        }
    }
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
    let name = &cx.source.name;
    let mut work = WorkIndex::new().map_err(|e| work_failed(name, e))?;
    let folder = list(Path::new(loc), &mut work).map_err(|e| match e {
        Listing::Io(e) => e,
        Listing::Work(e) => work_failed(name, e),
    })?;
    let full_run = cx.full || cx.source.mode == SourceMode::Full;
    let since = if full_run {
        None
    } else {
        cx.cursor.map(str::to_owned)
    };
    let mode = match &cx.state {
        None => Mode::Stateless,
        Some(st) if full_run => Mode::Rebuild {
            prior: load_registry(st, name, &mut work)?,
        },
        Some(st) => {
            let same_key = load_registry(st, name, &mut work)?;
            if same_key && !has_numbers(st, name)? {
                // A state stored before the `number` entries: rebuilt once.
                Mode::Rebuild { prior: true }
            } else if same_key {
                let mut any = false;
                for_each_file(
                    &mut work,
                    |work, after| {
                        let page = work.files_after(after, ENTRIES_PER_PAGE, false);
                        page.map_err(|e| work_failed(name, e))
                    },
                    |work, (idx, file, raw)| {
                        let entry = work.entry(&file).map_err(|e| work_failed(name, e))?;
                        let unchanged =
                            entry
                                .as_deref()
                                .and_then(stored::parse_file)
                                .is_some_and(|e| {
                                    FileEntry::stat(&folder.path(&raw))
                                        .is_ok_and(|(size, mtime)| !e.differs(size, mtime))
                                });
                        if !unchanged {
                            work.set_todo(idx, true).map_err(|e| work_failed(name, e))?;
                            any = true;
                        }
                        Ok(())
                    },
                )?;
                work.flush().map_err(|e| work_failed(name, e))?;
                if !any && work.file_count() > 0 {
                    // Every file was applied: a quiet night, nothing read.
                    return Ok(None);
                }
                Mode::FromState
            } else {
                Mode::Rebuild { prior: false }
            }
        }
    };
    if !matches!(mode, Mode::FromState)
        && let Some(c) = &since
        && work.last_name().is_none_or(|last| last <= c.as_str())
    {
        return Ok(None);
    }
    if work.file_count() == 0 {
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
            .map_err(|e| format!("source {name}: {e}"))?
            .pseudonymiser(KeyPurpose::Index),
    };
    let mut stream = IwmoStream::new(cx.source, folder, work, since, cx.cancel.clone(), pair_keys);
    stream.store = cx.state.clone().map(|st| (st, mode));
    stream
        .for_each_pass1_file(|stream, (_, _, raw)| {
            stream.total += std::fs::metadata(stream.folder.path(&raw)).map_or(0, |m| m.len());
            Ok(())
        })
        .map_err(|e| e.to_string())?;
    Ok(Some(Opened {
        stream: Box::new(stream),
    }))
}

/// Why the folder could not be listed.
enum Listing {
    Io(String),
    Work(rusqlite::Error),
}

/// Lists the message files of a folder (or the one file) into the work index, numbered in
/// name order.
fn list(path: &Path, work: &mut WorkIndex) -> Result<Folder, Listing> {
    let shown = path.display();
    let folder = if path.is_dir() {
        for e in
            std::fs::read_dir(path).map_err(|e| Listing::Io(format!("cannot list {shown}: {e}")))?
        {
            let Ok(e) = e else {
                continue;
            };
            let p = e.path();
            if !(p.is_file() && p.extension().is_some_and(|x| x == "xml")) {
                continue;
            }
            let os = e.file_name();
            let name = os.to_string_lossy();
            #[cfg(unix)]
            let raw = {
                use std::os::unix::ffi::OsStrExt;
                os.as_bytes().to_vec()
            };
            #[cfg(not(unix))]
            let raw = name.as_bytes().to_vec();
            work.list(&name, &raw).map_err(Listing::Work)?;
        }
        Folder {
            path: path.to_path_buf(),
            is_dir: true,
        }
    } else if path.is_file() {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        work.list(&name, name.as_bytes()).map_err(Listing::Work)?;
        Folder {
            path: path.to_path_buf(),
            is_dir: false,
        }
    } else {
        return Err(Listing::Io(format!(
            "iWmo message folder {shown} does not exist; create it or fix `location`"
        )));
    };
    work.number_files().map_err(Listing::Work)?;
    Ok(folder)
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
    /// The file, whether it is new to this run, and its message as read.
    File(PathBuf, bool, Box<Result<Message, MessageError>>),
    Stored(Box<Message>),
}

/// Why an assignment whose number another client has is not delivered.
const REUSED: &str = "the assignment number is already used for another client by this provider (by a message earlier in the order of application)";

/// Pairs read from the work index at a time (their stored logs are read together; tiny in
/// tests, so that they cross batches).
const PAIRS_PER_BATCH: usize = if cfg!(test) { 2 } else { 256 };

/// State changes staged at a time (tiny in tests).
const CHANGES_PER_STAGE: usize = if cfg!(test) { 3 } else { 1000 };

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

/// The place of a message in the order of application ([`SortKey`] without the file's
/// index in the run) as bytes that compare in that order: the work index and the stored
/// state order the uses of an assignment number by it.
fn order_bytes(h: &Header, name: &str) -> Vec<u8> {
    let mut b = Vec::with_capacity(24 + h.id.len() + h.sender.len() + name.len());
    let day = chrono::Datelike::num_days_from_ce(&h.dagtekening);
    b.extend_from_slice(&(day.cast_unsigned() ^ 0x8000_0000).to_be_bytes());
    b.push(match h.kind {
        MessageKind::Wmo301 => 1,
        MessageKind::Wmo305 => 2,
        MessageKind::Wmo307 => 3,
    });
    match numeric(&h.id) {
        None => b.push(0),
        Some(v) => {
            b.push(1);
            b.extend_from_slice(&v.to_be_bytes());
        }
    }
    // No text here holds a NUL (XML and file names cannot), so a NUL ends each one.
    for text in [h.id.as_str(), h.sender.as_str(), name] {
        b.extend_from_slice(text.as_bytes());
        b.push(0);
    }
    b
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
    /// Where the files are; their names are in the work index.
    folder: Folder,
    since: Option<String>,
    limits: MessageLimits,
    cancel: Arc<AtomicBool>,
    prepared: bool,
    queue: VecDeque<RecordResult>,
    /// The run's work index: the files, the applied files' entries, and (pass 1) a row
    /// per message to read.
    work: WorkIndex,
    /// The pairs read from the work index and not applied yet, and their stored logs.
    batch: VecDeque<(Vec<u8>, Vec<work::Row>)>,
    batch_logs: HashMap<Vec<u8>, Vec<Logged>>,
    /// Incremental run: the stored `number` entries of the assignment numbers of the batch's
    /// pairs (by [`stored::number_prefix`]), and the stored logs (as stored; `None`: none) of
    /// the other pairs those entries name, read with the batch ([`stored`]).
    batch_numbers: HashMap<Vec<u8>, stored::Prefetched>,
    batch_number_logs: HashMap<Vec<u8>, Option<Vec<u8>>>,
    /// Queries of the store's state this run sent (observable: `state_reads` in the log).
    state_reads: std::cell::Cell<u64>,
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
    /// The problems (record id, reason) quarantined for the pair being applied: a message
    /// sent twice (in two files) is reported once.
    reported: HashSet<(String, String)>,
    /// The products quarantined this run for a reused assignment number: one is reported by
    /// the pair that took its number and again by its own pair when its message is sent
    /// again; kept for the run (one entry per such report).
    reused: HashSet<String>,
}

impl IwmoStream {
    fn new(
        source: &SourceConfig,
        folder: Folder,
        work: WorkIndex,
        since: Option<String>,
        cancel: Arc<AtomicBool>,
        pair_keys: Pseudonymiser,
    ) -> Self {
        IwmoStream {
            source: source.name.clone(),
            municipality: source.iwmo.as_ref().and_then(|i| i.municipality.clone()),
            folder,
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
            work,
            batch: VecDeque::new(),
            batch_logs: HashMap::new(),
            batch_numbers: HashMap::new(),
            batch_number_logs: HashMap::new(),
            state_reads: std::cell::Cell::new(0),
            pair_keys,
            pending: Vec::new(),
            index: 0,
            bytes: 0,
            total: 0,
            finished: false,
            store: None,
            files_read: 0,
            purged: 0,
            reported: HashSet::new(),
            reused: HashSet::new(),
        }
    }

    /// Queues a problem of a new message for quarantine, once per record and reason in the
    /// pair being applied and, for a reused assignment number, once per product in the run.
    fn quarantine(&mut self, record_id: String, field: Option<String>, reason: String) {
        let first = if reason == REUSED {
            self.reused.insert(record_id.clone())
        } else {
            self.reported.insert((record_id.clone(), reason.clone()))
        };
        if !first {
            debug!("Skipping a problem already quarantined in this run.");
            return;
        }
        let position = self.next_position();
        self.queue.push_back(Err(RecordError {
            record_id: Some(record_id),
            position,
            field,
            reason,
        }));
    }

    /// Whether the file is new to this run (its messages are delivered).
    fn is_new(&self, file: usize, name: &str) -> Result<bool, DeliveryError> {
        if let Some((_, Mode::FromState)) = &self.store {
            return self.work.is_todo(file).map_err(|e| self.work_error(e));
        }
        Ok(match &self.since {
            None => true,
            Some(c) => name > c.as_str(),
        })
    }

    fn next_position(&mut self) -> RecordPosition {
        self.index += 1;
        RecordPosition {
            index: self.index,
            byte_offset: 0,
        }
    }

    fn delivery_error(&self, path: &Path, e: MessageError) -> DeliveryError {
        let location = path.display().to_string();
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
        new: bool,
        path: &Path,
        record_id: String,
        e: MessageError,
    ) -> Result<(), DeliveryError> {
        if !new {
            debug!("Skipping an old message that could not be applied.");
            return Ok(());
        }
        if e.breaks_delivery() {
            return Err(self.delivery_error(path, e));
        }
        let field = match &e {
            MessageError::Invalid { element, .. } => Some(element.clone()),
            _ => None,
        };
        self.quarantine(record_id, field, e.to_string());
        Ok(())
    }

    fn open_file(&self, path: &Path) -> Result<BufReader<File>, DeliveryError> {
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

    /// The next page of the files pass 1 reads (index, name, name's bytes) after file
    /// `after`: all of them, or (store-backed state) those not yet applied.
    fn pass1_page(&self, after: Option<usize>) -> Result<Vec<Listed>, DeliveryError> {
        let todo_only = matches!(self.store, Some((_, Mode::FromState)));
        self.work
            .files_after(after, ENTRIES_PER_PAGE, todo_only)
            .map_err(|e| self.work_error(e))
    }

    /// Calls `f` with each file pass 1 reads ([`IwmoStream::pass1_page`]), in name order, a
    /// page at a time; the first error stops the walk.
    fn for_each_pass1_file(
        &mut self,
        f: impl FnMut(&mut Self, Listed) -> Result<(), DeliveryError>,
    ) -> Result<(), DeliveryError> {
        for_each_file(self, Self::pass1_page, f)
    }

    fn store_error(&self, e: impl std::fmt::Display) -> DeliveryError {
        DeliveryError::Io {
            location: self.source.clone(),
            message: format!("iWmo state: {e}"),
        }
    }

    /// The assignment numbers a message makes when its pair is applied: the products of a
    /// WMO301 with a valid BSN, of this source's municipality.
    fn uses_of(&self, m: &Message) -> Vec<u64> {
        let Body::Assignment(products) = &m.body else {
            return Vec::new();
        };
        if Bsn::parse(&m.client.bsn).is_err()
            || self
                .municipality
                .as_deref()
                .is_some_and(|own| m.header.municipality() != own)
        {
            return Vec::new();
        }
        products.iter().map(|p| p.number).collect()
    }

    /// Pass 1: reads the header and BSN of every file to read into the work index, keyed by
    /// (provider, client pseudonym) pair; stages the entries of changed files.
    fn start(&mut self) -> Result<(), DeliveryError> {
        let mut changes = self.first_changes();
        self.check_changed(&mut changes)?;
        self.stage_some(changes, true)?;
        self.for_each_pass1_file(Self::index_file)?;
        let sealed = self.work.seal();
        sealed.map_err(|e| self.work_error(e))?;
        Ok(())
    }

    /// Pass 1 for one file: its message's row (and the assignment numbers it makes) in the
    /// work index, or its problem.
    fn index_file(&mut self, (file, name, raw): Listed) -> Result<(), DeliveryError> {
        self.check_cancel()?;
        let path = self.folder.path(&raw);
        self.bytes += std::fs::metadata(&path).map_or(0, |m| m.len());
        self.files_read += 1;
        // The whole message, for the assignment numbers a WMO301 makes; a message
        // that does not read whole is ordered by its envelope (its problem is
        // reported when its pair is applied).
        let (envelope, uses) = match read_message(self.open_file(&path)?, &self.limits) {
            Ok(m) => {
                let uses = self.uses_of(&m);
                (Ok((m.header, Some(m.client.bsn))), uses)
            }
            Err(_) => (
                read_envelope(self.open_file(&path)?, &self.limits),
                Vec::new(),
            ),
        };
        match envelope {
            Ok((h, bsn)) => {
                let pair = match bsn.as_deref().map(Bsn::parse) {
                    Some(Ok(b)) => {
                        stored::pair_key(h.provider(), self.pair_keys.pseudonymise(&b).as_bytes())
                    }
                    // No valid BSN: the message is a pair of its own (it never
                    // reaches the state).
                    _ => {
                        let mut k = vec![1u8];
                        k.extend_from_slice(&(file as u64).to_be_bytes());
                        k
                    }
                };
                let added = self.work.add(&pair, &h, file);
                added.map_err(|e| self.work_error(e))?;
                if !uses.is_empty() {
                    let ord = order_bytes(&h, &name);
                    for (i, n) in uses.into_iter().enumerate() {
                        let product = format!("{}:{}:{}#{}", h.kind.name(), h.sender, h.id, i + 1);
                        let added = self
                            .work
                            .add_use(h.provider(), n, &ord, &pair, file, &product);
                        added.map_err(|e| self.work_error(e))?;
                    }
                }
            }
            Err(e) => {
                let new = self.is_new(file, &name)?;
                self.problem(new, &path, format!("file:{name}"), e)?;
            }
        }
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
            let next = self.work.next_pairs(PAIRS_PER_BATCH);
            let next = next.map_err(|e| self.work_error(e))?;
            if next.is_empty() {
                return Ok(false);
            }
            self.batch_logs = self.stored_logs(next.iter().map(|(pair, _)| pair))?;
            self.prefetch_numbers(&next)?;
            self.batch = next.into();
        }
        let Some((pair, rows)) = self.batch.pop_front() else {
            return Ok(false);
        };
        let stored = self.batch_logs.remove(&pair);
        self.apply_pair(&pair, rows, stored)?;
        Ok(true)
    }

    /// Reads and applies the messages of one (provider, client) pair, in order, with the
    /// stored log of the pair; queues its problems and the assignments to deliver, and
    /// stages its log.
    fn apply_pair(
        &mut self,
        pair_key: &[u8],
        rows: Vec<work::Row>,
        stored: Option<Vec<Logged>>,
    ) -> Result<(), DeliveryError> {
        self.reported.clear();
        let stateless = self.store.is_none();
        let from_state = matches!(self.store, Some((_, Mode::FromState)));
        // An old message of a pair without new message cannot change what this run
        // delivers (in incremental runs; a full run applies everything).
        let mut files = Vec::with_capacity(rows.len());
        let from_todo = matches!(self.store, Some((_, Mode::FromState)));
        for mut row in rows {
            let name = std::mem::take(&mut row.name);
            let path = self.folder.path(&row.raw);
            let new = match &self.since {
                _ if from_todo => row.todo,
                None => true,
                Some(c) => name.as_str() > c.as_str(),
            };
            files.push((row, name, path, new));
        }
        if stateless && self.since.is_some() && !files.iter().any(|f| f.3) {
            return Ok(());
        }
        let mut order: Vec<(SortKey, Item)> = Vec::with_capacity(files.len());
        let mut bsn: Option<String> = None;
        for (row, name, path, new) in files {
            self.check_cancel()?;
            let key = SortKey::from_row(&row, name);
            let read = read_message(self.open_file(&path)?, &self.limits);
            if let (Ok(m), None) = (&read, &bsn) {
                bsn = Some(m.client.bsn.clone());
            }
            order.push((key, Item::File(path, new, Box::new(read))));
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
        // The products of new messages that made an assignment (record ids).
        let mut made: Vec<(Key, String)> = Vec::new();
        let mut logged_pair: Option<(String, String)> = None;
        // The assignment numbers the applied messages make, with their places in the order
        // of application; and the stored uses of those from files (store-backed state).
        let mut own: HashSet<(u64, Vec<u8>)> = HashSet::new();
        let mut number_changes: Vec<StateChange> = Vec::new();
        for (key, item) in order {
            self.check_cancel()?;
            let record_id = format!("{}:{}:{}", key.kind.name(), key.sender, key.id);
            let (m, new, from_file) = match item {
                Item::Stored(m) => (*m, false, None),
                Item::File(path, new, read) => match *read {
                    Ok(m) => (m, new, Some(path)),
                    Err(e) => {
                        self.problem(new, &path, record_id, e)?;
                        continue;
                    }
                },
            };
            if let Some(own) = self.municipality.clone()
                && m.header.municipality() != own
            {
                if new {
                    let reason = format!(
                        "message of municipality {}; this source applies messages of municipality {own} only ([source.iwmo] municipality)",
                        m.header.municipality()
                    );
                    self.quarantine(record_id, Some("Header".into()), reason);
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
            if let Some(path) = &from_file
                && self.applied_before(&key.name, path)?
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
            let ord = order_bytes(&m.header, &key.name);
            if let Body::Assignment(products) = &m.body {
                for p in products {
                    own.insert((p.number, ord.clone()));
                }
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
                    // The numbers a WMO301 from a file makes, for the lookups of later runs.
                    if let (Body::Assignment(products), Some(_)) = (&m.body, &from_file) {
                        for (i, p) in products.iter().enumerate() {
                            number_changes.push(stored::number_change(
                                m.header.provider(),
                                p.number,
                                &ord,
                                i + 1,
                                pair_key,
                            ));
                        }
                    }
                    log.push(entry);
                }
                logged_pair = Some(pair);
            }
            let creates = matches!(m.body, Body::Assignment(_));
            for (i, result) in state.apply(&m).into_iter().enumerate() {
                let product_id = format!("{record_id}#{}", i + 1);
                match result {
                    Ok(k) => {
                        if creates && new {
                            made.push((k.clone(), product_id));
                        }
                        if new {
                            touched.insert(k);
                        }
                    }
                    Err(p) => {
                        if new {
                            self.quarantine(product_id, Some(p.element), p.reason);
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
        // A `ToewijzingNummer` of the provider that another client's message earlier in the
        // order of application made: reported with the assignment that reused it, not
        // delivered. A new message that takes a number from the stored client that had it
        // reports that client's assignment.
        if bsn.is_some() {
            let mut lost = Vec::new();
            let mut state_keys: Vec<&Key> = state.keys().collect();
            state_keys.sort();
            for k in state_keys {
                let owner = self.owner(&k.0, k.1, pair_key, &own)?;
                if owner.pair.as_deref().is_some_and(|p| p != pair_key) {
                    lost.push(k.clone());
                } else if let Some(product_id) = owner.dispossessed {
                    let field = format!("ToegewezenProduct ToewijzingNummer {}", k.1);
                    self.quarantine(product_id, Some(field), REUSED.into());
                }
            }
            for k in lost {
                keys.retain(|x| *x != k);
                for (_, product_id) in made.iter().filter(|(made, _)| *made == k) {
                    let field = format!("ToegewezenProduct ToewijzingNummer {}", k.1);
                    self.quarantine(product_id.clone(), Some(field), REUSED.into());
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
            number_changes.push(change);
            self.stage_some(number_changes, false)?;
        }
        Ok(())
    }

    /// After the last pair: stages the entries of the files read and what is left.
    fn finish(&mut self) -> Result<(), DeliveryError> {
        info!(
            files_read = self.files_read,
            bytes_read = self.bytes,
            purged_not_reapplied = self.purged,
            state_reads = self.state_reads.get(),
            "iWmo messages read."
        );
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
        self.work.last_name().map(str::to_owned)
    }
}
