//! The iWmo source's state in the store (`Store::source_state`), so that a run reads only
//! the message files it has not applied yet.
//!
//! | kind | key | value |
//! |---|---|---|
//! | `meta` | `key_id` | the index key version the pair keys were made with |
//! | `file` | file name | [`FileEntry`]: size, modification time and SHA-256 of an applied file |
//! | `meta` | `numbers` | `1`: the state has the `number` entries (a run of a state without them rebuilds it) |
//! | `pair` | provider AGB code, `0`, client pseudonym | [`Logged`] messages of that provider for that client |
//! | `number` | provider AGB code, `0`, `ToewijzingNummer` (8 bytes), the message's place in the order of application, the product's index (4 bytes) | the `pair` key whose logged WMO301 made the number there |
//!
//! A pair's log holds the header and products of every message applied to it, never the
//! client (BSN, birth date): a run replays the log of each (provider, client) pair a new
//! message concerns, with the client of the new message, so a late message is applied in
//! its place and a start that arrived before its assignment takes effect, exactly as when
//! the whole folder is read. Changes are staged with the run and published in the same
//! transaction as its involvements.
//!
//! The `number` entries say, per assignment number of a provider, which logged messages made
//! it, in the order of application, so that a run finds the stored client that has a number
//! (the first entry whose pair's log still holds the message) without reading every pair's
//! log: an incremental run reads the entries of the numbers of a batch of pairs in one query
//! ([`IwmoStream::prefetch_numbers`]). Retention purges a pair's
//! `number` entries with its log; a run deletes an entry it finds stale all the same.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::time::UNIX_EPOCH;

use matchpoint_connectors::iwmo::{Body, Client, Header, Message, MessageKind};
use matchpoint_connectors::{DeliveryError, RecordError};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{CHANGES_PER_STAGE, Item, IwmoStream, Mode, SortKey, order_bytes, work};
use crate::store::{StateChange, StateEntries};

/// State kinds.
pub const META: &str = "meta";
/// Applied files.
pub const FILE: &str = "file";
/// Message logs per (provider, client pseudonym).
pub const PAIR: &str = "pair";
/// The `meta` key holding the key version.
pub const KEY_ID: &[u8] = b"key_id";
/// Uses of assignment numbers per (provider, `ToewijzingNummer`).
pub const NUMBER: &str = "number";
/// The `meta` key that says the state has the `number` entries.
pub const NUMBERS: &[u8] = b"numbers";

/// The start of the `number` keys of an assignment number of a provider.
pub fn number_prefix(provider: &str, number: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(provider.len() + 9);
    k.extend_from_slice(provider.as_bytes());
    k.push(0);
    k.extend_from_slice(&number.to_be_bytes());
    k
}

/// The `number` entries of an assignment number read at a time: with the batch of pairs
/// ([`IwmoStream::prefetch_numbers`]), then a page at a time while none is live.
const NUMBER_PAGE: usize = 4;

/// The end of the `number` keys of an assignment number of a provider (exclusive): the
/// keys from `prefix` to it are those that start with it.
fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// The first stored `number` entries of an assignment number, read with the batch of pairs
/// that may make it ([`IwmoStream::prefetch_numbers`]).
#[derive(Debug, Clone)]
pub(super) struct Prefetched {
    /// At most [`NUMBER_PAGE`] entries, in key order.
    entries: StateEntries,
    /// No more entries follow.
    complete: bool,
}

/// The state change recording that product `index` (from 1) of the message at `ord` of
/// `pair` made `number`.
pub fn number_change(
    provider: &str,
    number: u64,
    ord: &[u8],
    index: usize,
    pair: &[u8],
) -> StateChange {
    let mut key = number_prefix(provider, number);
    key.extend_from_slice(ord);
    key.extend_from_slice(&u32::try_from(index).unwrap_or(u32::MAX).to_be_bytes());
    StateChange {
        kind: NUMBER.into(),
        key,
        value: Some(pair.to_vec()),
    }
}

/// The place in the order of application and the product's record id of a `number` key
/// (after its prefix); `None` when it cannot be read.
fn parse_number_key(rest: &[u8]) -> Option<(Vec<u8>, String)> {
    let split = rest.len().checked_sub(4)?;
    let (ord, index) = rest.split_at(split);
    let index = u32::from_be_bytes(index.try_into().ok()?);
    // Day (4 bytes), kind, then the numeric identification (flag, 8 bytes when set).
    let kind = match ord.get(4)? {
        1 => MessageKind::Wmo301,
        2 => MessageKind::Wmo305,
        _ => MessageKind::Wmo307,
    };
    let texts = match ord.get(5)? {
        0 => ord.get(6..)?,
        _ => ord.get(14..)?,
    };
    let mut parts = texts.split(|b| *b == 0);
    let id = std::str::from_utf8(parts.next()?).ok()?;
    let sender = std::str::from_utf8(parts.next()?).ok()?;
    Some((
        ord.to_vec(),
        format!("{}:{sender}:{id}#{index}", kind.name()),
    ))
}

/// What is known of an applied file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Size in bytes.
    pub size: u64,
    /// Modification time, nanoseconds since the Unix epoch (0 when unknown).
    pub mtime: u128,
    /// SHA-256 of the content, hex.
    pub sha256: String,
    /// The content changed after the file was applied (reported once): its new messages
    /// were not applied; a full run applies them.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub changed: bool,
}

impl FileEntry {
    /// Size and modification time of `path` (the hash is filled in by [`FileEntry::read`]).
    pub fn stat(path: &Path) -> std::io::Result<(u64, u128)> {
        let m = std::fs::metadata(path)?;
        let mtime = m
            .modified()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        Ok((m.len(), mtime))
    }

    /// Size, modification time and hash of `path` (reads the file; at most `max` bytes).
    pub fn read(path: &Path, max: u64) -> std::io::Result<Self> {
        let (size, mtime) = Self::stat(path)?;
        let mut h = Sha256::new();
        let mut f = std::io::Read::take(std::fs::File::open(path)?, max);
        std::io::copy(&mut f, &mut h)?;
        Ok(FileEntry {
            size,
            mtime,
            sha256: hex::encode(h.finalize()),
            changed: false,
        })
    }

    /// Whether the file may have changed since this entry (size or time differ).
    pub fn differs(&self, size: u64, mtime: u128) -> bool {
        self.size != size || self.mtime != mtime
    }

    /// The state change recording it.
    pub fn change(&self, name: &str) -> StateChange {
        StateChange {
            kind: FILE.into(),
            key: name.as_bytes().to_vec(),
            value: serde_json::to_vec(self).ok(),
        }
    }
}

/// One applied message in a pair's log: no client data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Logged {
    /// The file it came from (orders messages that sort equal otherwise).
    pub file: String,
    /// Its header.
    pub header: Header,
    /// Its products.
    pub body: Body,
}

/// The state key of a (provider, client pseudonym) pair.
pub fn pair_key(provider: &str, pseudonym: &[u8; 32]) -> Vec<u8> {
    let mut k = Vec::with_capacity(provider.len() + 33);
    k.extend_from_slice(provider.as_bytes());
    k.push(0);
    k.extend_from_slice(pseudonym);
    k
}

/// The state change storing a pair's log.
pub fn pair_change(key: Vec<u8>, log: &[Logged]) -> StateChange {
    StateChange {
        kind: PAIR.into(),
        key,
        value: serde_json::to_vec(log).ok(),
    }
}

/// A pair's log as stored; `None` when it cannot be read (the run then fails).
pub fn parse_log(value: &[u8]) -> Option<Vec<Logged>> {
    serde_json::from_slice(value).ok()
}

/// A file entry as stored.
pub fn parse_file(value: &[u8]) -> Option<FileEntry> {
    serde_json::from_slice(value).ok()
}

/// The parts of a run that use the stored state.
impl IwmoStream {
    /// Store-backed state: files already applied whose size or time changed are hashed; an
    /// unchanged hash only refreshes the entry, a changed one is reported (an applied
    /// message is never applied again) and recorded, so it is reported once.
    pub(super) fn check_changed(
        &mut self,
        changes: &mut Vec<StateChange>,
    ) -> Result<(), DeliveryError> {
        let Some((_, Mode::FromState)) = &self.store else {
            return Ok(());
        };
        self.for_each_pass1_file(|this, (file, name, raw)| {
            let stored = this.work.entry(&name).map_err(|e| this.work_error(e))?;
            let Some(before) = stored.as_deref().and_then(parse_file) else {
                return Ok(());
            };
            let path = this.folder.path(&raw);
            let mut now = FileEntry::read(&path, this.limits.max_bytes).map_err(|e| {
                DeliveryError::Io {
                    location: path.display().to_string(),
                    message: e.to_string(),
                }
            })?;
            this.bytes += now.size;
            this.files_read += 1;
            if now.sha256 != before.sha256 {
                let position = this.next_position();
                this.queue.push_back(Err(RecordError {
                    record_id: Some(format!("file:{name}")),
                    position,
                    field: None,
                    reason: "the message file changed after it was applied (its SHA-256 differs); an applied iWmo message is not applied again: send a correction (StatusAanlevering 2 or 3), or run --full to rebuild the state from the folder as it is now".into(),
                }));
            }
            now.changed = before.changed || now.sha256 != before.sha256;
            changes.push(now.change(&name));
            let done = this.work.set_todo(file, false);
            done.map_err(|e| this.work_error(e))?;
            Ok(())
        })?;
        let flushed = self.work.flush();
        flushed.map_err(|e| self.work_error(e))?;
        Ok(())
    }

    /// Store-backed state: the stored logs of these pairs (work index keys), when the run
    /// uses them (an incremental run replays them; a full run under the same index key
    /// tells by them which messages retention purged). Pairs without log are left out.
    pub(super) fn stored_logs<'a>(
        &self,
        pairs: impl Iterator<Item = &'a Vec<u8>>,
    ) -> Result<HashMap<Vec<u8>, Vec<Logged>>, DeliveryError> {
        let st = match &self.store {
            Some((st, Mode::FromState | Mode::Rebuild { prior: true })) => st,
            _ => return Ok(HashMap::new()),
        };
        let keys: Vec<Vec<u8>> = pairs.cloned().collect();
        self.count_read();
        let rows = st
            .read(&self.source, PAIR, Some(keys))
            .map_err(|e| self.store_error(e))?;
        let mut out = HashMap::with_capacity(rows.len());
        for (k, v) in rows {
            let log = parse_log(&v).ok_or_else(|| {
                self.store_error("a stored message log cannot be read; run --full")
            })?;
            out.insert(k, log);
        }
        Ok(out)
    }

    /// Counts a query of the store's state (`state_reads` in the run's log).
    fn count_read(&self) {
        self.state_reads.set(self.state_reads.get() + 1);
    }

    /// An incremental run: reads, for a batch of pairs, the first stored `number` entries
    /// of every assignment number their messages (new ones, in the work index, and stored
    /// ones, in `batch_logs`) make, in one query; and, in one more, the stored logs of the
    /// other pairs those entries name. So the owner of a number ([`IwmoStream::owner`]) is
    /// found without a query per assignment; a number not read here (or with more entries
    /// than read, none of them live) is read a page at a time as before.
    pub(super) fn prefetch_numbers(
        &mut self,
        pairs: &[(Vec<u8>, Vec<work::Row>)],
    ) -> Result<(), DeliveryError> {
        self.batch_numbers.clear();
        self.batch_number_logs.clear();
        let Some((st, Mode::FromState)) = &self.store else {
            return Ok(());
        };
        let (Some((first, _)), Some((last, _))) = (pairs.first(), pairs.last()) else {
            return Ok(());
        };
        // Per number (its key prefix), the pairs of the batch that may make it.
        let mut wanted: BTreeMap<Vec<u8>, HashSet<Vec<u8>>> = BTreeMap::new();
        let uses = self.work.numbers_between(first, last);
        for (pair, provider, number) in uses.map_err(|e| self.work_error(e))? {
            let prefix = number_prefix(&provider, number);
            wanted.entry(prefix).or_default().insert(pair);
        }
        for (pair, log) in &self.batch_logs {
            for l in log {
                if let Body::Assignment(products) = &l.body {
                    for p in products {
                        let prefix = number_prefix(l.header.provider(), p.number);
                        wanted.entry(prefix).or_default().insert(pair.clone());
                    }
                }
            }
        }
        // (A number prefix holds a NUL, so it always has an end; one without is read later.)
        wanted.retain(|p, _| prefix_end(p).is_some());
        let ranges: Vec<(Vec<u8>, Vec<u8>)> = wanted
            .keys()
            .filter_map(|p| Some((p.clone(), prefix_end(p)?)))
            .collect();
        if ranges.is_empty() {
            return Ok(());
        }
        self.count_read();
        let rows = st
            .read_ranges(&self.source, NUMBER, ranges, NUMBER_PAGE)
            .map_err(|e| self.store_error(e))?;
        let mut numbers: HashMap<Vec<u8>, Prefetched> = HashMap::new();
        let mut others: HashSet<Vec<u8>> = HashSet::new();
        for (k, v) in rows {
            // The number whose range holds the key: the greatest prefix not after it.
            let Some((prefix, by)) = wanted
                .range::<[u8], _>((
                    std::ops::Bound::Unbounded,
                    std::ops::Bound::Included(k.as_slice()),
                ))
                .next_back()
                .filter(|(p, _)| k.starts_with(p))
            else {
                continue;
            };
            // Another pair's use is live only when its stored log holds the message.
            if by.len() > 1 || !by.contains(&v) {
                others.insert(v.clone());
            }
            numbers
                .entry(prefix.clone())
                .or_insert_with(|| Prefetched {
                    entries: Vec::new(),
                    complete: false,
                })
                .entries
                .push((k, v));
        }
        for prefix in wanted.keys() {
            let p = numbers.entry(prefix.clone()).or_insert_with(|| Prefetched {
                entries: Vec::new(),
                complete: false,
            });
            p.entries.sort();
            p.complete = p.entries.len() < NUMBER_PAGE;
        }
        let mut logs: HashMap<Vec<u8>, Option<Vec<u8>>> =
            others.iter().map(|p| (p.clone(), None)).collect();
        if !others.is_empty() {
            self.count_read();
            let rows = st
                .read(&self.source, PAIR, Some(others.into_iter().collect()))
                .map_err(|e| self.store_error(e))?;
            for (k, v) in rows {
                logs.insert(k, Some(v));
            }
        }
        self.batch_numbers = numbers;
        self.batch_number_logs = logs;
        Ok(())
    }

    /// A full run under the same index key: whether the stored state applied this file
    /// (same size and time, or same hash, and not changed since). A message of such a file
    /// that its pair's log no longer holds was purged by retention (`crate::retention`) and
    /// is not applied again, so a full run publishes what incremental runs would: messages
    /// of files new to the state are applied, a new message of a purged pair starts a fresh
    /// log.
    pub(super) fn applied_before(&self, name: &str, path: &Path) -> Result<bool, DeliveryError> {
        let Some((_, Mode::Rebuild { prior: true })) = &self.store else {
            return Ok(false);
        };
        let stored = self.work.entry(name).map_err(|e| self.work_error(e))?;
        let Some(entry) = stored.as_deref().and_then(parse_file) else {
            return Ok(false);
        };
        if entry.changed {
            return Ok(false);
        }
        Ok(match FileEntry::stat(path) {
            Ok((size, mtime)) if !entry.differs(size, mtime) => true,
            _ => FileEntry::read(path, self.limits.max_bytes)
                .is_ok_and(|now| now.sha256 == entry.sha256),
        })
    }

    /// Whether the stored log of `pair` holds a WMO301 at place `ord` that makes `number`
    /// (the same header: a copy of a logged message in another file counts, as when the pair
    /// is applied).
    fn log_holds(&self, pair: &[u8], number: u64, ord: &[u8]) -> Result<bool, DeliveryError> {
        let Some((st, _)) = &self.store else {
            return Ok(false);
        };
        let rows: Vec<Vec<u8>> = match self.batch_number_logs.get(pair) {
            // Read with the batch (`prefetch_numbers`).
            Some(v) => v.iter().cloned().collect(),
            None => {
                self.count_read();
                let rows = st.read(&self.source, PAIR, Some(vec![pair.to_vec()]));
                rows.map_err(|e| self.store_error(e))?
                    .into_iter()
                    .map(|(_, v)| v)
                    .collect()
            }
        };
        for v in rows {
            let log = parse_log(&v).ok_or_else(|| {
                self.store_error("a stored message log cannot be read; run --full")
            })?;
            if log.iter().any(|l| {
                matches!(&l.body, Body::Assignment(ps) if ps.iter().any(|p| p.number == number))
                    && ord.starts_with(header_part(&l.header).as_slice())
            }) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The first message of this run after place `after` in the order of application that
    /// makes `number` of `provider` and is applied. `me` is the pair being applied, `own` the
    /// numbers and places its applied messages make.
    fn next_applied_use(
        &self,
        provider: &str,
        number: u64,
        me: &[u8],
        own: &HashSet<(u64, Vec<u8>)>,
        after: &[u8],
    ) -> Result<Option<work::Use>, DeliveryError> {
        let purges = matches!(self.store, Some((_, Mode::Rebuild { prior: true })));
        let mut after = after.to_vec();
        loop {
            let next = self.work.next_use(provider, number, &after);
            let Some(u) = next.map_err(|e| self.work_error(e))? else {
                return Ok(None);
            };
            let applied = if u.pair == me {
                own.contains(&(number, u.ord.clone()))
            } else if purges {
                // A full run under the same key does not apply again a message retention
                // purged from its pair's log.
                let path = self.folder.path(&u.raw);
                !self.applied_before(&u.name, &path)? || self.log_holds(&u.pair, number, &u.ord)?
            } else {
                true
            };
            if applied {
                return Ok(Some(u));
            }
            after = u.ord;
        }
    }

    /// The first message of this run that makes `number` of `provider` and is applied. A
    /// preview of new files also tells the product of the first old message that made it,
    /// when a new message of another pair comes before it.
    fn run_owner(
        &self,
        provider: &str,
        number: u64,
        me: &[u8],
        own: &HashSet<(u64, Vec<u8>)>,
    ) -> Result<Option<Candidate>, DeliveryError> {
        let Some(first) = self.next_applied_use(provider, number, me, own, &[])? else {
            return Ok(None);
        };
        let mut product = None;
        if self.store.is_none()
            && let Some(since) = &self.since
            && first.name.as_str() > since.as_str()
        {
            let mut after = first.ord.clone();
            while let Some(u) = self.next_applied_use(provider, number, me, own, &after)? {
                if u.name.as_str() <= since.as_str() {
                    product = (u.pair != first.pair).then_some(u.product);
                    break;
                }
                after = u.ord;
            }
        }
        Ok(Some(Candidate {
            ord: first.ord,
            pair: first.pair,
            product,
        }))
    }

    /// An incremental run: the first stored use of `number` of `provider` whose pair's log
    /// still holds it (stale entries are deleted): its place and use.
    fn stored_owner(
        &mut self,
        provider: &str,
        number: u64,
        me: &[u8],
        own: &HashSet<(u64, Vec<u8>)>,
    ) -> Result<Option<Candidate>, DeliveryError> {
        let Some((st, Mode::FromState)) = &self.store else {
            return Ok(None);
        };
        let prefix = number_prefix(provider, number);
        let mut after = prefix.clone();
        let mut stale = Vec::new();
        let mut found = None;
        // The entries read with the batch first; then, while none is live, a page at a time.
        let mut prefetched = self
            .batch_numbers
            .get(&prefix)
            .map(|p| (p.entries.clone(), p.complete));
        'pages: loop {
            let (page, last) = match prefetched.take() {
                Some(read) => read,
                None => {
                    self.count_read();
                    let page = st
                        .read_page(&self.source, NUMBER, Some(after.clone()), NUMBER_PAGE)
                        .map_err(|e| self.store_error(e))?;
                    let last = page.len() < NUMBER_PAGE;
                    (page, last)
                }
            };
            for (k, v) in page {
                let Some(rest) = k.strip_prefix(prefix.as_slice()) else {
                    break 'pages;
                };
                let parsed = parse_number_key(rest);
                let live = match &parsed {
                    Some((ord, _)) if v.as_slice() == me => own.contains(&(number, ord.clone())),
                    Some((ord, _)) => self.log_holds(&v, number, ord)?,
                    None => false,
                };
                after.clone_from(&k);
                match parsed {
                    Some((ord, product)) if live => {
                        found = Some(Candidate {
                            ord,
                            pair: v,
                            product: Some(product),
                        });
                        break 'pages;
                    }
                    _ => stale.push(StateChange {
                        kind: NUMBER.into(),
                        key: k,
                        value: None,
                    }),
                }
            }
            if last {
                break;
            }
        }
        self.stage_some(stale, false)?;
        Ok(found)
    }

    /// Who has assignment `number` of `provider`: the pair of the first applied message in
    /// the order of application that makes it, among this run's messages and (incremental
    /// run) the stored ones; and, when `me` takes it from the stored pair that had it by a
    /// message of this run, that pair's product (reported).
    pub(super) fn owner(
        &mut self,
        provider: &str,
        number: u64,
        me: &[u8],
        own: &HashSet<(u64, Vec<u8>)>,
    ) -> Result<Owner, DeliveryError> {
        let run = self.run_owner(provider, number, me, own)?;
        let stored = self.stored_owner(provider, number, me, own)?;
        Ok(match (run, stored) {
            (None, None) => Owner::default(),
            (Some(c), None) => Owner {
                pair: Some(c.pair),
                dispossessed: c.product,
            },
            (None, Some(c)) => Owner {
                pair: Some(c.pair),
                dispossessed: None,
            },
            (Some(run), Some(stored)) if stored.ord < run.ord => Owner {
                pair: Some(stored.pair),
                dispossessed: None,
            },
            (Some(run), Some(stored)) => Owner {
                dispossessed: (stored.pair != run.pair)
                    .then_some(stored.product)
                    .flatten(),
                pair: Some(run.pair),
            },
        })
    }

    /// Store-backed state: the changes a run begins with (a full run replaces the state).
    pub(super) fn first_changes(&self) -> Vec<StateChange> {
        let Some((st, Mode::Rebuild { .. })) = &self.store else {
            return Vec::new();
        };
        vec![
            StateChange::replace_all(),
            StateChange {
                kind: META.into(),
                key: KEY_ID.to_vec(),
                value: Some(st.pseudonymiser.key_id().as_str().as_bytes().to_vec()),
            },
            StateChange {
                kind: META.into(),
                key: NUMBERS.to_vec(),
                value: Some(b"1".to_vec()),
            },
        ]
    }

    /// Store-backed state: queues changes, staged with the run a batch at a time (all that
    /// are queued when `flush`).
    pub(super) fn stage_some(
        &mut self,
        changes: Vec<StateChange>,
        flush: bool,
    ) -> Result<(), DeliveryError> {
        let Some((st, _)) = &self.store else {
            return Ok(());
        };
        self.pending.extend(changes);
        if self.pending.is_empty() || (!flush && self.pending.len() < CHANGES_PER_STAGE) {
            return Ok(());
        }
        let batch = std::mem::take(&mut self.pending);
        st.stage(batch).map_err(|e| self.store_error(e))
    }

    /// Store-backed state: stages the entries (size, time, hash) of the files read.
    pub(super) fn stage_files(&mut self) -> Result<(), DeliveryError> {
        if self.store.is_none() {
            return Ok(());
        }
        self.for_each_pass1_file(|this, (_, name, raw)| {
            this.check_cancel()?;
            let path = this.folder.path(&raw);
            let entry =
                FileEntry::read(&path, this.limits.max_bytes).map_err(|e| DeliveryError::Io {
                    location: path.display().to_string(),
                    message: e.to_string(),
                })?;
            this.stage_some(vec![entry.change(&name)], false)
        })
    }
}

/// The part of [`order_bytes`] that the header gives (all but the file name; it ends with
/// the NUL after the sender, so no other header's part is a prefix of it).
fn header_part(h: &Header) -> Vec<u8> {
    let mut b = order_bytes(h, "");
    b.pop();
    b
}

/// A message that makes an assignment number: its place in the order of application, its
/// pair, and the product that had the number before (see [`IwmoStream::owner`]): a stored
/// use's own, or, in a preview of new files, an old message's of another pair.
pub(super) struct Candidate {
    ord: Vec<u8>,
    pair: Vec<u8>,
    product: Option<String>,
}

/// Who has an assignment number (see [`IwmoStream::owner`]).
#[derive(Debug, Default)]
pub(super) struct Owner {
    /// The pair key; `None` when no applied message makes it.
    pub pair: Option<Vec<u8>>,
    /// The product of the stored pair that had it, when the pair applied takes it.
    pub dispossessed: Option<String>,
}

/// A pair's stored log as messages with the pair's client (BSN only; see [`stored`]).
pub(super) fn stored_messages(log: Vec<Logged>, bsn: &str) -> Vec<(SortKey, Item)> {
    log.into_iter()
        .map(|l| {
            let key = SortKey::new(&l.header, l.file.clone(), usize::MAX);
            let m = Message {
                header: l.header,
                client: Client {
                    bsn: bsn.to_owned(),
                    birth_date: chrono::NaiveDate::MIN,
                    // The birth date is not stored: the new message's is used.
                    birth_date_use: Some("3".into()),
                },
                body: l.body,
            };
            (key, Item::Stored(Box::new(m)))
        })
        .collect()
}
