//! The blocking `Read + Seek` that remote origins return from [`Origin::open_blocking`](crate::Origin::open_blocking)
//! for the tag parser: ranged reads with a read-ahead buffer, so the parser's many small reads become a few
//! requests. Used on blocking threads only.

use crate::OriginError;
use bytes::Bytes;
use std::io::{Read, Seek, SeekFrom};

/// Each request fetches at least this much.
pub const READ_AHEAD: usize = 256 << 10;

/// Reads a file of `size` bytes through `fetch(offset, len)`, which returns up to `len` bytes at `offset`.
pub struct ReadAhead<F> {
    fetch: F,
    size: u64,
    pos: u64,
    buf: Bytes,
    buf_start: u64,
}

impl<F: FnMut(u64, usize) -> Result<Bytes, OriginError>> ReadAhead<F> {
    pub fn new(size: u64, fetch: F) -> Self {
        ReadAhead { fetch, size, pos: 0, buf: Bytes::new(), buf_start: 0 }
    }
}

impl<F: FnMut(u64, usize) -> Result<Bytes, OriginError>> Read for ReadAhead<F> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if out.is_empty() || self.pos >= self.size {
            return Ok(0);
        }
        let buffered = self.pos >= self.buf_start && self.pos < self.buf_start + self.buf.len() as u64;
        if !buffered {
            let want = out.len().max(READ_AHEAD).min((self.size - self.pos) as usize);
            let bytes = (self.fetch)(self.pos, want).map_err(|e| std::io::Error::other(e.to_string()))?;
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

impl<F> Seek for ReadAhead<F> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_reads_become_few_requests_and_seeks_land_right() {
        let data: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
        let mut requests = 0;
        let mut reader = ReadAhead::new(data.len() as u64, |offset, len| {
            requests += 1;
            let end = (offset as usize + len).min(data.len());
            Ok(Bytes::copy_from_slice(&data[offset as usize..end]))
        });
        let mut all = Vec::new();
        let mut chunk = [0u8; 100];
        loop {
            let n = reader.read(&mut chunk).unwrap();
            if n == 0 {
                break;
            }
            all.extend_from_slice(&chunk[..n]);
        }
        assert_eq!(all, data);
        reader.seek(SeekFrom::End(-10)).unwrap();
        let mut tail = Vec::new();
        reader.read_to_end(&mut tail).unwrap();
        assert_eq!(tail, data[data.len() - 10..]);
        assert!(reader.seek(SeekFrom::Current(-2_000_000)).is_err());
        drop(reader);
        assert_eq!(requests, 1_000_000usize.div_ceil(READ_AHEAD), "256 KiB per request; the tail was still buffered");
    }
}
