//! The sync pipeline, per source and run: pull (streaming) → map → validate → pseudonymise →
//! stage → publish.
//!
//! A reader thread parses the delivery and hands raw records, in small chunks, to a mapper
//! thread that maps each record (so parsing and pseudonymising each get a core); batches travel
//! over a bounded channel to the store, so memory is bounded by `batch_size` × channel depth
//! (plus two chunks of at most 512 records or about 1 MB) whatever the size of the delivery. Publication is one transaction in the store; a failed, cancelled or
//! crashed run publishes nothing.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use chrono::Utc;
use matchpoint_connectors::{DeliveryError, RecordError, RecordResult};
use matchpoint_mapping::{Mapper, RejectReason, Rejection};
use matchpoint_schemas::{Involvement, KeyPurpose, MasterKey, RawRecord, Registry, Sealer};
use tracing::{Instrument, info, info_span, warn};

use crate::config::{Config, SourceConfig, SourceMode};
use crate::failpoint;
use crate::sources::{self, OpenContext, SourceState};
use crate::store::{
    Completion, QuarantineEntry, RunId, RunMode, RunRecord, RunStatus, ShrinkGuard, Store,
    StoreError,
};

/// What stops a sync before a run could be recorded.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The source's mapping was not loaded.
    #[error("source {0}: mapping was not loaded")]
    NoMapping(String),
}

/// Everything a run needs besides its source.
pub struct SyncContext {
    /// The store.
    pub store: Store,
    /// The master key (index pseudonyms and quarantine sealing are derived from it).
    pub key: Arc<MasterKey>,
    /// The organisation registry.
    pub registry: Arc<Registry>,
    /// Shrink guard default.
    pub max_end_share: f64,
    /// How long sealed raw records are kept.
    pub quarantine_raw_days: u32,
    /// Records per staging batch.
    pub batch_size: usize,
    /// Set to stop runs early (Ctrl-C); a cancelled run publishes nothing.
    pub cancel: Arc<AtomicBool>,
}

impl SyncContext {
    /// A context from a loaded configuration.
    pub fn new(cfg: &Config, store: Store, key: Arc<MasterKey>, registry: Arc<Registry>) -> Self {
        SyncContext {
            store,
            key,
            registry,
            max_end_share: cfg.sync.max_end_share,
            quarantine_raw_days: cfg.sync.quarantine_raw_days,
            batch_size: cfg.sync.batch_size,
            cancel: Arc::new(AtomicBool::new(false)),
        }
    }
}

/// Live counters a progress display can read.
#[derive(Debug, Default)]
pub struct Progress {
    /// Records read so far.
    pub records: AtomicU64,
    /// Bytes read so far.
    pub bytes: AtomicU64,
    /// Total bytes when known.
    pub total_bytes: AtomicU64,
}

struct Batch {
    records: Vec<Involvement>,
    positions: Vec<(u64, u64)>,
    rejects: Vec<QuarantineEntry>,
}

impl Batch {
    fn with_capacity(n: usize) -> Self {
        Batch {
            records: Vec::with_capacity(n),
            positions: Vec::with_capacity(n),
            rejects: Vec::new(),
        }
    }
    fn len(&self) -> usize {
        self.records.len() + self.rejects.len()
    }
}

enum Message {
    Batch(Batch),
    Fatal { read: u64, message: String },
    Done { read: u64, cursor: Option<String> },
}

/// The seal context binds a sealed raw record to its source and record id.
fn seal_context(source: &str, record_id: Option<&str>) -> Vec<u8> {
    format!(
        "matchpoint-quarantine\u{0}{source}\u{0}{}",
        record_id.unwrap_or("")
    )
    .into_bytes()
}

/// A quarantine entry for a record the mapping rejected, with its raw content sealed.
fn sealed_reject(
    sealer: &Sealer,
    source: &str,
    raw: &RawRecord,
    rejection: Rejection,
    keep_days: u32,
) -> QuarantineEntry {
    let sealed = serde_json::to_vec(raw)
        .ok()
        .map(|plain| sealer.seal(&plain, &seal_context(source, raw.record_id.as_deref())));
    QuarantineEntry {
        source_record_id: raw.record_id.clone(),
        record_index: raw.position.index,
        byte_offset: raw.position.byte_offset,
        field: rejection.field,
        reason_code: rejection.reason.code().to_owned(),
        reason: rejection.reason.to_string(),
        sealed_key_id: sealed.as_ref().map(|_| sealer.key_id().to_string()),
        sealed_expires_at: sealed
            .as_ref()
            .map(|_| Utc::now() + chrono::Duration::days(i64::from(keep_days))),
        sealed_raw: sealed,
        replay_of: None,
    }
}

/// A quarantine entry for a record the connector could not read (nothing to seal).
fn malformed_reject(rec: RecordError) -> QuarantineEntry {
    let reason = RejectReason::Malformed(rec.reason);
    QuarantineEntry {
        source_record_id: rec.record_id,
        record_index: rec.position.index,
        byte_offset: rec.position.byte_offset,
        field: rec.field,
        reason_code: reason.code().to_owned(),
        reason: reason.to_string(),
        ..QuarantineEntry::default()
    }
}

/// Raw records handed from the reader thread to the mapper thread at a time (one thread
/// wake-up per chunk, not per record).
const CHUNK_RECORDS: usize = 512;

/// A chunk is handed over early once its raw records hold this many bytes, so a chunk of
/// large records (each up to `limits.max_record_bytes`) stays small.
const CHUNK_BYTES: usize = 1 << 20;

/// Chunks in flight between reader and mapper.
const CHUNK_DEPTH: usize = 2;

/// What the reader thread hands to the mapper thread, in delivery order.
enum Chunk {
    /// Records read, and the stream's `bytes_read` after the last of them.
    Records(Vec<RecordResult>, u64),
    /// The delivery failed after this many records; nothing may be published.
    Fatal(String, u64),
    /// The delivery ended; the stream's cursor and final `bytes_read`.
    Done(Option<String>, u64),
}

/// Bytes a raw record holds (approximately), to bound a chunk.
fn raw_size(r: &RecordResult) -> usize {
    let pairs = |f: &[(String, String)]| f.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>();
    match r {
        Ok(raw) => {
            pairs(&raw.fields)
                + raw
                    .groups
                    .iter()
                    .map(|g| g.path.len() + pairs(&g.fields))
                    .sum::<usize>()
        }
        Err(e) => e.reason.len(),
    }
}

/// What the mapper thread needs besides its input.
struct MapSide {
    source: String,
    mapper: Mapper,
    sealer: Sealer,
    keep_days: u32,
    batch_size: usize,
    progress: Arc<Progress>,
    tx: tokio::sync::mpsc::Sender<Message>,
}

/// Reads every delivery of the run on this (blocking) thread and hands the raw records, in
/// chunks, to a mapper thread that maps them and sends batches to the store: parsing and
/// mapping (elfproef, HMAC) each get a core.
#[allow(clippy::too_many_arguments)]
fn produce(
    source: SourceConfig,
    cursor: Option<String>,
    full: bool,
    mapper: Mapper,
    sealer: Sealer,
    keep_days: u32,
    batch_size: usize,
    cancel: Arc<AtomicBool>,
    progress: Arc<Progress>,
    state: SourceState,
    tx: tokio::sync::mpsc::Sender<Message>,
) {
    let opened = sources::open(&OpenContext {
        source: &source,
        cursor: cursor.as_deref(),
        full,
        cancel: cancel.clone(),
        state: Some(state),
    });
    let mut stream = match opened {
        Ok(Some(o)) => o.stream,
        Ok(None) => {
            // A quiet night for an incremental source: nothing new.
            let _ = tx.blocking_send(Message::Done {
                read: 0,
                cursor: None,
            });
            return;
        }
        Err(message) => {
            let _ = tx.blocking_send(Message::Fatal { read: 0, message });
            return;
        }
    };
    if let Some(total) = stream.total_bytes() {
        progress.total_bytes.store(total, Ordering::Relaxed);
    }
    let (chunks, input) = std::sync::mpsc::sync_channel::<Chunk>(CHUNK_DEPTH);
    let side = MapSide {
        source: source.name.clone(),
        mapper,
        sealer,
        keep_days,
        batch_size,
        progress,
        tx: tx.clone(),
    };
    let mapping = match std::thread::Builder::new()
        .name(format!("map-{}", source.name))
        .spawn(move || map_chunks(side, input))
    {
        Ok(handle) => handle,
        Err(e) => {
            let _ = tx.blocking_send(Message::Fatal {
                read: 0,
                message: format!("cannot start the mapper thread: {e}; nothing was published"),
            });
            return;
        }
    };
    let mut chunk = Vec::with_capacity(CHUNK_RECORDS);
    let mut chunk_bytes = 0usize;
    let mut read = 0u64;
    let last = loop {
        if cancel.load(Ordering::Relaxed) {
            break Chunk::Fatal("cancelled (interrupt): nothing was published".into(), read);
        }
        match stream.next_record() {
            Ok(None) => {
                let cursor = if source.mode == SourceMode::Incremental {
                    stream.cursor()
                } else {
                    None
                };
                break Chunk::Done(cursor, stream.bytes_read());
            }
            Err(e) => {
                let message = match &e {
                    DeliveryError::Truncated { .. } => e.to_string(),
                    _ => format!("{e}; nothing was published"),
                };
                break Chunk::Fatal(message, read);
            }
            Ok(Some(r)) => {
                read += 1;
                chunk_bytes += raw_size(&r);
                chunk.push(r);
                if chunk.len() >= CHUNK_RECORDS || chunk_bytes >= CHUNK_BYTES {
                    let full = std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK_RECORDS));
                    chunk_bytes = 0;
                    if chunks
                        .send(Chunk::Records(full, stream.bytes_read()))
                        .is_err()
                    {
                        // The mapper stopped: the store side no longer listens.
                        break Chunk::Done(None, 0);
                    }
                }
            }
        }
    };
    // Records read before a failure are not sent: nothing of a failed delivery is staged
    // after the failure is known.
    if matches!(last, Chunk::Done(..)) && !chunk.is_empty() {
        let _ = chunks.send(Chunk::Records(chunk, stream.bytes_read()));
    }
    let _ = chunks.send(last);
    drop(chunks);
    let _ = mapping.join();
}

/// The mapper thread: maps each raw record and sends batches of `batch_size` to the store.
fn map_chunks(side: MapSide, input: std::sync::mpsc::Receiver<Chunk>) {
    let MapSide {
        source,
        mapper,
        sealer,
        keep_days,
        batch_size,
        progress,
        tx,
    } = side;
    let mut read = 0u64;
    let mut batch = Batch::with_capacity(batch_size);
    let mut last_bytes = 0u64;
    let mut flush = |batch: &mut Batch, read: u64, bytes: u64| -> bool {
        progress.records.store(read, Ordering::Relaxed);
        progress
            .bytes
            .fetch_add(bytes.saturating_sub(last_bytes), Ordering::Relaxed);
        last_bytes = bytes.max(last_bytes);
        let full = std::mem::replace(batch, Batch::with_capacity(batch_size));
        full.len() == 0 || tx.blocking_send(Message::Batch(full)).is_ok()
    };
    // A reader that vanished without a last word (it panicked): not a complete delivery.
    let mut last = Message::Fatal {
        read,
        message: "the reader stopped unexpectedly; nothing was published".into(),
    };
    while let Ok(chunk) = input.recv() {
        match chunk {
            Chunk::Records(records, bytes) => {
                for r in records {
                    read += 1;
                    match r {
                        Err(rec) => batch.rejects.push(malformed_reject(rec)),
                        Ok(raw) => match mapper.map(&raw) {
                            Ok(inv) => {
                                batch.records.push(inv);
                                batch
                                    .positions
                                    .push((raw.position.index, raw.position.byte_offset));
                            }
                            Err(rej) => batch
                                .rejects
                                .push(sealed_reject(&sealer, &source, &raw, rej, keep_days)),
                        },
                    }
                    if batch.len() >= batch_size && !flush(&mut batch, read, bytes) {
                        return;
                    }
                }
            }
            Chunk::Fatal(message, read) => {
                last = Message::Fatal { read, message };
                break;
            }
            Chunk::Done(cursor, at) => {
                if !flush(&mut batch, read, at) {
                    return;
                }
                last = Message::Done { read, cursor };
                break;
            }
        }
    }
    let _ = tx.blocking_send(last);
}

/// Runs one sync of one source and returns its run record (succeeded, held or failed).
pub async fn sync_source(
    ctx: &SyncContext,
    source: &SourceConfig,
    force_full: bool,
    progress: Arc<Progress>,
) -> Result<RunRecord, SyncError> {
    let run = ctx
        .store
        .begin_run(&source.name, run_mode(source, force_full))
        .await?;
    sync_begun(ctx, source, run, force_full, progress).await
}

/// The mode a run of `source` has (full when forced or when the source is full-mode).
pub fn run_mode(source: &SourceConfig, force_full: bool) -> RunMode {
    if force_full || source.mode == SourceMode::Full {
        RunMode::Full
    } else {
        RunMode::Incremental
    }
}

/// Like [`sync_source`], for a run already begun (`store.begin_run` with
/// [`run_mode`]) so that its id could be handed out first (the operator API's 202).
pub async fn sync_begun(
    ctx: &SyncContext,
    source: &SourceConfig,
    run: RunId,
    force_full: bool,
    progress: Arc<Progress>,
) -> Result<RunRecord, SyncError> {
    let mode = run_mode(source, force_full);
    let full = mode == RunMode::Full;
    let span = info_span!("sync", source = %source.name, run_id = run, mode = mode.as_str());
    async move {
        info!("Sync run started.");
        let record = run_inner(ctx, source, run, full, progress).await?;
        crate::metrics::global().record_run(&record);
        match record.status {
            RunStatus::Succeeded | RunStatus::Accepted => info!(
                inserted = record.counts.inserted,
                updated = record.counts.updated,
                unchanged = record.counts.unchanged,
                ended = record.counts.ended,
                rejected = record.counts.rejected,
                "Sync run published."
            ),
            _ => warn!(
                status = record.status.as_str(),
                error = record.error.as_deref().unwrap_or(""),
                "Sync run did not publish."
            ),
        }
        Ok(record)
    }
    .instrument(span)
    .await
}

/// The mapper of a source: its checked mapping, the registry and the index pseudonymiser.
fn mapper_for(ctx: &SyncContext, source: &SourceConfig) -> Result<Mapper, SyncError> {
    let spec = source
        .mapping_spec
        .clone()
        .ok_or_else(|| SyncError::NoMapping(source.name.clone()))?;
    Ok(Mapper::new(
        &source.name,
        spec,
        ctx.registry.clone(),
        ctx.key.pseudonymiser(KeyPurpose::Index),
    )
    // Key rotation: relations also under every other loaded index version (households found
    // across versions while sources are re-keyed).
    .with_relation_versions(ctx.key.index_pseudonymisers()))
}

async fn run_inner(
    ctx: &SyncContext,
    source: &SourceConfig,
    run: RunId,
    full: bool,
    progress: Arc<Progress>,
) -> Result<RunRecord, SyncError> {
    let mapper = mapper_for(ctx, source)?;
    let cursor = if full {
        None
    } else {
        ctx.store.cursor(&source.name).await?
    };
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Message>(4);
    let producer = {
        let source = source.clone();
        let sealer = ctx.key.sealer();
        let cancel = ctx.cancel.clone();
        let keep = ctx.quarantine_raw_days;
        let batch = ctx.batch_size;
        let state = SourceState {
            store: ctx.store.clone(),
            runtime: tokio::runtime::Handle::current(),
            run,
            pseudonymiser: ctx.key.pseudonymiser(KeyPurpose::Index),
        };
        std::thread::Builder::new()
            .name(format!("read-{}", source.name))
            .spawn(move || {
                produce(
                    source, cursor, full, mapper, sealer, keep, batch, cancel, progress, state, tx,
                )
            })
            .map_err(|e| StoreError::db("spawn reader", e))?
    };
    let mut batches = 0u64;
    let mut outcome: Result<(u64, Option<String>), (u64, String)> = Err((
        0,
        "the reader stopped unexpectedly; nothing was published".into(),
    ));
    while let Some(msg) = rx.recv().await {
        match msg {
            Message::Batch(b) => {
                let Batch {
                    records,
                    positions,
                    mut rejects,
                } = b;
                let staged = ctx
                    .store
                    .stage(run, records, std::mem::take(&mut rejects))
                    .await;
                let staged = match staged {
                    Ok(s) => s,
                    Err(e) => {
                        drop(rx);
                        let _ = producer.join();
                        ctx.store.fail_run(run, 0, &e.to_string()).await?;
                        return Ok(ctx.store.run(run).await?);
                    }
                };
                if !staged.duplicates.is_empty() {
                    let dups = staged
                        .duplicates
                        .iter()
                        .filter_map(|(i, id)| positions.get(*i).map(|p| (id.clone(), *p)))
                        .map(|(id, (index, offset))| QuarantineEntry {
                            source_record_id: Some(id),
                            record_index: index,
                            byte_offset: offset,
                            field: None,
                            reason_code: RejectReason::DuplicateRecord.code().into(),
                            reason: RejectReason::DuplicateRecord.to_string(),
                            ..QuarantineEntry::default()
                        })
                        .collect();
                    ctx.store.stage(run, Vec::new(), dups).await?;
                }
                batches += 1;
                failpoint::hit(&format!("stage:{batches}"));
            }
            Message::Fatal { read, message } => {
                outcome = Err((read, message));
                break;
            }
            Message::Done { read, cursor } => {
                outcome = Ok((read, cursor));
                break;
            }
        }
    }
    drop(rx);
    let _ = producer.join();
    // Cancelled after the whole delivery was read (e.g. `serve` stopping while the last
    // batches were staged): still nothing is published.
    if outcome.is_ok() && ctx.cancel.load(Ordering::Relaxed) {
        let read = outcome.as_ref().map(|(r, _)| *r).unwrap_or(0);
        outcome = Err((
            read,
            "cancelled (interrupt) before publication: nothing was published".into(),
        ));
    }
    match outcome {
        Err((read, msg)) => {
            ctx.store.fail_run(run, read, &msg).await?;
            Ok(ctx.store.run(run).await?)
        }
        Ok((read, cursor)) => {
            ctx.store.set_phase(run, "publishing").await?;
            let guard = Some(ShrinkGuard {
                max_end_share: source.max_end_share.unwrap_or(ctx.max_end_share),
            });
            Ok(ctx
                .store
                .complete_run(
                    run,
                    Completion {
                        read,
                        mode: if full {
                            RunMode::Full
                        } else {
                            RunMode::Incremental
                        },
                        cursor,
                        guard,
                        accept: false,
                    },
                )
                .await?)
        }
    }
}

/// Re-processes the unresolved, still-sealed quarantined records of one source with the
/// current mapping: records that now pass are published (incrementally, never ending
/// anything) and their entries marked resolved; the rest are quarantined again.
/// Returns `None` when the source has nothing to replay.
pub async fn replay_source(
    ctx: &SyncContext,
    source: &SourceConfig,
) -> Result<Option<RunRecord>, SyncError> {
    let sealed = ctx.store.replayable(Some(&source.name)).await?;
    if sealed.is_empty() {
        return Ok(None);
    }
    let mapper = mapper_for(ctx, source)?;
    let sealer = ctx.key.sealer();
    let run = ctx.store.begin_run(&source.name, RunMode::Replay).await?;
    let span = info_span!("replay", source = %source.name, run_id = run);
    async move {
        let mut records = Vec::new();
        let mut rejects = Vec::new();
        let mut resolved = Vec::new();
        let mut unreadable = 0u64;
        for entry in &sealed {
            let ctx_bytes = seal_context(&source.name, entry.source_record_id.as_deref());
            let raw: Option<RawRecord> = sealer
                .open(&entry.key_id, &entry.sealed, &ctx_bytes)
                .ok()
                .and_then(|plain| serde_json::from_slice(&plain).ok());
            let Some(raw) = raw else {
                unreadable += 1;
                continue;
            };
            match mapper.map(&raw) {
                Ok(inv) => {
                    records.push(inv);
                    resolved.push(entry.id);
                }
                Err(rej) => {
                    let mut q =
                        sealed_reject(&sealer, &source.name, &raw, rej, ctx.quarantine_raw_days);
                    q.replay_of = Some(entry.id);
                    rejects.push(q);
                }
            }
            if records.len() + rejects.len() >= ctx.batch_size {
                ctx.store
                    .stage(run, std::mem::take(&mut records), std::mem::take(&mut rejects))
                    .await?;
            }
        }
        if unreadable > 0 {
            warn!(
                unreadable,
                "Some sealed records could not be opened with the loaded key; they were left as they are."
            );
        }
        ctx.store.stage(run, records, rejects).await?;
        let read = sealed.len() as u64 - unreadable;
        let rec = ctx
            .store
            .complete_run(
                run,
                Completion {
                    read,
                    mode: RunMode::Replay,
                    cursor: None,
                    guard: None,
                    accept: false,
                },
            )
            .await?;
        ctx.store.mark_resolved(resolved, run).await?;
        info!(published = rec.counts.accepted, "Replay run published.");
        Ok(Some(rec))
    }
    .instrument(span)
    .await
}
