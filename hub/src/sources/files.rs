//! File deliveries: one file, an HTTP(S) URL, or a folder of files read in name order.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::time::Duration;

use matchpoint_connectors::{DeliveryError, RecordResult, RecordStream, location};

use crate::config::{SourceConfig, SourceMode};

/// Turns one opened file into a record stream.
pub type Decoder = fn(&SourceConfig, Box<dyn BufRead>, &str) -> Box<dyn RecordStream>;

/// The files one run reads: a file or URL as it is; for a folder, the newest file with
/// `extension` (full) or every such file named after the cursor (incremental), in name order.
/// An empty list is a quiet night of an incremental source.
pub fn deliveries(
    source: &SourceConfig,
    extension: &str,
    cursor: Option<&str>,
    full: bool,
) -> Result<Vec<String>, String> {
    let loc = &source.location;
    if loc.starts_with("http://") || loc.starts_with("https://") {
        return Ok(vec![loc.clone()]);
    }
    let path = Path::new(loc);
    if !path.is_dir() {
        return Ok(vec![loc.clone()]);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(|e| format!("cannot list {loc}: {e}"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == extension))
        .collect();
    files.sort();
    if full || source.mode == SourceMode::Full {
        return files
            .pop()
            .map(|p| vec![p.display().to_string()])
            .ok_or_else(|| format!("no .{extension} file in folder {loc}; nothing was published"));
    }
    Ok(files
        .into_iter()
        .filter(|p| {
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            cursor.is_none_or(|c| name.as_str() > c)
        })
        .map(|p| p.display().to_string())
        .collect())
}

/// Reads a list of files one after the other as one delivery. The cursor is the name of the
/// last file read completely (incremental folders).
pub struct FileDeliveries {
    source: SourceConfig,
    files: std::vec::IntoIter<String>,
    decoder: Decoder,
    current: Option<Box<dyn RecordStream>>,
    done_bytes: u64,
    total: u64,
    last_done: Option<String>,
    current_name: Option<String>,
}

impl FileDeliveries {
    /// A delivery of `files`, each decoded with `decoder`.
    pub fn new(source: &SourceConfig, files: Vec<String>, decoder: Decoder) -> Self {
        let total = files
            .iter()
            .filter_map(|f| std::fs::metadata(f).ok())
            .map(|m| m.len())
            .sum();
        FileDeliveries {
            source: source.clone(),
            files: files.into_iter(),
            decoder,
            current: None,
            done_bytes: 0,
            total,
            last_done: None,
            current_name: None,
        }
    }
}

impl RecordStream for FileDeliveries {
    fn next_record(&mut self) -> Result<Option<RecordResult>, DeliveryError> {
        loop {
            if let Some(stream) = self.current.as_mut() {
                if let Some(rec) = stream.next_record()? {
                    return Ok(Some(rec));
                }
                self.done_bytes += stream.bytes_read();
                self.current = None;
                self.last_done = self.current_name.take();
            }
            let Some(file) = self.files.next() else {
                return Ok(None);
            };
            let input = location::open(
                &file,
                Duration::from_secs(self.source.limits.timeout_secs),
                self.source.limits.max_bytes,
            )?;
            self.current = Some((self.decoder)(&self.source, input, &file));
            self.current_name = Path::new(&file)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned());
        }
    }

    fn bytes_read(&self) -> u64 {
        self.done_bytes + self.current.as_ref().map_or(0, |s| s.bytes_read())
    }

    fn total_bytes(&self) -> Option<u64> {
        (self.total > 0).then_some(self.total)
    }

    fn cursor(&self) -> Option<String> {
        (self.source.mode == SourceMode::Incremental)
            .then(|| self.last_done.clone())
            .flatten()
    }
}
