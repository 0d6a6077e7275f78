//! Opening a delivery by location: a local file, or an HTTP(S) URL streamed with a size cap.

use std::cell::Cell;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::rc::Rc;
use std::time::Duration;

use crate::DeliveryError;

/// Byte limits shared by a reader and the parser that drives it.
#[derive(Debug, Clone)]
pub struct ReadLimits {
    /// Most bytes one delivery may have.
    pub max_bytes: u64,
    /// Most bytes between two marks (one XML event), so one element cannot fill memory.
    pub max_event_bytes: u64,
}

/// Counters a [`LimitedReader`] shares with its parser.
#[derive(Debug, Default)]
pub struct ReadCounter {
    total: Cell<u64>,
    since_mark: Cell<u64>,
}

impl ReadCounter {
    /// Bytes read so far.
    pub fn total(&self) -> u64 {
        self.total.get()
    }
    /// Starts a new event window.
    pub fn mark(&self) {
        self.since_mark.set(0);
    }
}

/// A `BufRead` that fails with `InvalidData` once a limit is passed, instead of buffering on.
pub struct LimitedReader<R> {
    inner: R,
    limits: ReadLimits,
    counter: Rc<ReadCounter>,
}

/// Marker text carried in the io::Error so callers can tell limit errors apart.
pub const LIMIT_MARKER: &str = "matchpoint-limit:";

impl<R: BufRead> LimitedReader<R> {
    /// Wraps `inner`; the returned counter is shared with the parser.
    pub fn new(inner: R, limits: ReadLimits) -> (Self, Rc<ReadCounter>) {
        let counter = Rc::new(ReadCounter::default());
        (
            LimitedReader {
                inner,
                limits,
                counter: counter.clone(),
            },
            counter,
        )
    }
}

impl<R: BufRead> Read for LimitedReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let avail = self.fill_buf()?;
        let n = avail.len().min(buf.len());
        buf[..n].copy_from_slice(&avail[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl<R: BufRead> BufRead for LimitedReader<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.counter.total.get() > self.limits.max_bytes {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{LIMIT_MARKER} input exceeds the configured limit of {} bytes (limits.max_bytes)",
                    self.limits.max_bytes
                ),
            ));
        }
        if self.counter.since_mark.get() > self.limits.max_event_bytes {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{LIMIT_MARKER} one element or text is larger than the configured limit of {} bytes (limits.max_element_bytes)",
                    self.limits.max_event_bytes
                ),
            ));
        }
        // Hand out at most one byte past either limit, so the next call fails right after the
        // limit instead of a whole buffer of the inner reader later.
        let room = (self.limits.max_bytes - self.counter.total.get())
            .min(self.limits.max_event_bytes - self.counter.since_mark.get())
            .saturating_add(1);
        let avail = self.inner.fill_buf()?;
        let n = usize::try_from(room).map_or(avail.len(), |room| room.min(avail.len()));
        Ok(&avail[..n])
    }

    fn consume(&mut self, amt: usize) {
        self.counter
            .total
            .set(self.counter.total.get() + amt as u64);
        self.counter
            .since_mark
            .set(self.counter.since_mark.get() + amt as u64);
        self.inner.consume(amt);
    }
}

/// Opens a location: `http://` / `https://` URLs are streamed, anything else is a file path.
pub fn open(
    location: &str,
    timeout: Duration,
    max_bytes: u64,
) -> Result<Box<dyn BufRead>, DeliveryError> {
    if location.starts_with("http://") || location.starts_with("https://") {
        let client = reqwest::blocking::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| DeliveryError::Io {
                location: location.to_owned(),
                message: e.to_string(),
            })?;
        let resp = client
            .get(location)
            .send()
            .and_then(|r| r.error_for_status())
            .map_err(|e| DeliveryError::Io {
                location: location.to_owned(),
                message: e.without_url().to_string(),
            })?;
        if let Some(len) = resp.content_length().filter(|&l| l > max_bytes) {
            return Err(DeliveryError::Limit {
                location: location.to_owned(),
                message: format!(
                    "server announces {len} bytes, more than the configured limit of {max_bytes} bytes"
                ),
            });
        }
        Ok(Box::new(BufReader::with_capacity(64 * 1024, resp)))
    } else {
        let file = File::open(location).map_err(|e| DeliveryError::Io {
            location: location.to_owned(),
            message: e.to_string(),
        })?;
        Ok(Box::new(BufReader::with_capacity(64 * 1024, file)))
    }
}
