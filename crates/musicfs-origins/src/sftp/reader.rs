//! The blocking `Read + Seek` reader that [`Origin::open_blocking`](crate::Origin::open_blocking) returns,
//! for the tag parser: ranged reads through the pool with a read-ahead buffer.

use super::pool::Pool;
use bytes::Bytes;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The blocking reader used for tag parsing fetches at least this much per request.
pub const READ_AHEAD: usize = 256 << 10;

/// `Read + Seek` over ranged reads through the pool, with a read-ahead buffer so the tag parser's many
/// small reads become a few requests. Used on blocking threads only.
pub(super) struct BlockingReader {
    pool: Arc<Pool>,
    rel: PathBuf,
    timeout: Duration,
    size: u64,
    pos: u64,
    buf: Bytes,
    buf_start: u64,
}

impl BlockingReader {
    /// A reader of `rel` (`size` bytes long) from the start; each request is bounded by `timeout`.
    pub(super) fn new(pool: Arc<Pool>, rel: PathBuf, timeout: Duration, size: u64) -> Self {
        Self { pool, rel, timeout, size, pos: 0, buf: Bytes::new(), buf_start: 0 }
    }
}

impl Read for BlockingReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if out.is_empty() || self.pos >= self.size {
            return Ok(0);
        }
        let buffered = self.pos >= self.buf_start && self.pos < self.buf_start + self.buf.len() as u64;
        if !buffered {
            let want = out.len().max(READ_AHEAD).min((self.size - self.pos) as usize);
            let deadline = Instant::now() + self.timeout;
            let bytes = self
                .pool
                .read_range(&self.rel, self.pos, want, deadline)
                .map_err(|e| std::io::Error::other(e.to_string()))?;
            if bytes.is_empty() {
                return Ok(0);
            }
            self.buf = bytes;
            self.buf_start = self.pos;
        }
        let at = (self.pos - self.buf_start) as usize;
        let n = out.len().min(self.buf.len() - at);
        out[..n].copy_from_slice(&self.buf[at..at + n]);
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for BlockingReader {
    fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
        let target = match to {
            SeekFrom::Start(n) => Some(n),
            SeekFrom::End(d) => self.size.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        match target {
            Some(n) => {
                self.pos = n;
                Ok(n)
            }
            None => Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "seek before the start of the file")),
        }
    }
}
