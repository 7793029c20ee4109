//! Reading tags with lofty. Tags are untrusted input: anything unreadable becomes "no tags", never an error
//! that hides the file.

use lofty::config::{ParseOptions, ParsingMode};
use lofty::file::TaggedFileExt;
use lofty::tag::Accessor;
use musicfs_origins::ReadSeek;

/// Audio file extensions the scanner picks up (lowercase).
pub const AUDIO_EXTENSIONS: &[&str] =
    &["flac", "mp3", "ogg", "oga", "opus", "m4a", "mp4", "aac", "wav", "wv", "ape", "aiff", "aif", "mpc", "spx"];

pub fn is_audio(rel_path: &std::path::Path) -> bool {
    rel_path
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| AUDIO_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrackTags {
    pub artist: Option<String>,
    pub album: Option<String>,
    pub year: Option<u32>,
    pub track: Option<u32>,
    pub title: Option<String>,
}

fn present(value: Option<std::borrow::Cow<'_, str>>) -> Option<String> {
    value.map(|v| v.into_owned()).filter(|v| !v.trim().is_empty())
}

/// The most bytes one file's tags may take to read. A real file's tags take a few hundred bytes (lofty seeks
/// past audio and pictures); a corrupt or hostile one that looks like MPEG makes lofty walk it byte by byte, to
/// its end: a 256 MiB file of noise named `.wav` was read whole, which on a remote origin is a download of it
/// at scan time. Past this budget the file has no tags.
pub const TAG_READ_LIMIT: u64 = 8 << 20;

/// A reader that fails once it has handed out [`TAG_READ_LIMIT`] bytes.
struct Budgeted<R> {
    inner: R,
    left: u64,
}

impl<R: std::io::Read> std::io::Read for Budgeted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            return Err(std::io::Error::other(format!("tags take more than {TAG_READ_LIMIT} bytes to read")));
        }
        let want = buf.len().min(self.left.min(usize::MAX as u64) as usize);
        let n = self.inner.read(&mut buf[..want])?;
        self.left -= n as u64;
        Ok(n)
    }
}

impl<R: std::io::Seek> std::io::Seek for Budgeted<R> {
    fn seek(&mut self, to: std::io::SeekFrom) -> std::io::Result<u64> {
        self.inner.seek(to)
    }

    // The default asks `seek(Current(0))`, which the inner reader may pay for with a system call.
    fn stream_position(&mut self) -> std::io::Result<u64> {
        self.inner.stream_position()
    }
}

/// Reads the primary tag (or the first one found). Errors are logged at debug and give empty tags; so does a
/// file whose tags would take more than [`TAG_READ_LIMIT`] bytes to read.
pub fn read_tags(reader: Box<dyn ReadSeek>) -> TrackTags {
    let probe = lofty::probe::Probe::new(Budgeted { inner: reader, left: TAG_READ_LIMIT })
        .options(ParseOptions::new().read_properties(false).read_cover_art(false).parsing_mode(ParsingMode::Relaxed));
    let probe = match probe.guess_file_type() {
        Ok(probe) => probe,
        Err(e) => {
            tracing::debug!(error = %e, "unreadable file");
            return TrackTags::default();
        }
    };
    let tagged = match probe.read() {
        Ok(tagged) => tagged,
        Err(e) => {
            tracing::debug!(error = %e, "unreadable tags");
            return TrackTags::default();
        }
    };
    let Some(tag) = tagged.primary_tag().or_else(|| tagged.first_tag()) else {
        return TrackTags::default();
    };
    TrackTags {
        artist: present(tag.artist()),
        album: present(tag.album()),
        year: tag.date().map(|d| d.year as u32).filter(|y| *y > 0),
        track: tag.track().filter(|t| *t > 0),
        title: present(tag.title()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // a test: a panic is a failed test
    use super::*;
    use std::io::{Cursor, Read, Seek, SeekFrom};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    /// Counts the bytes read through it.
    struct Counting(Cursor<Vec<u8>>, Arc<AtomicU64>);

    impl Read for Counting {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.0.read(buf)?;
            self.1.fetch_add(n as u64, Ordering::Relaxed);
            Ok(n)
        }
    }

    impl Seek for Counting {
        fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
            self.0.seek(to)
        }
    }

    #[test]
    fn noise_behind_an_mpeg_frame_header_is_not_read_to_its_end() {
        // An MPEG-1 layer III frame header, then 24 MiB of noise: lofty takes it for MPEG and walks it.
        let mut data = vec![0xFF, 0xFB, 0x90, 0x64];
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        data.extend((0..24 << 20).map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        }));
        let read = Arc::new(AtomicU64::new(0));
        let tags = read_tags(Box::new(Counting(Cursor::new(data), read.clone())));
        assert_eq!(tags, TrackTags::default());
        let read = read.load(Ordering::Relaxed);
        assert!(read <= TAG_READ_LIMIT, "{read} bytes read for the tags of a 24 MiB file");
    }
}
