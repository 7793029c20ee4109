//! Streaming content-defined chunking (FastCDC 2020) over data that arrives in blocks.
//!
//! Cut points depend only on the bytes since the previous cut, so cutting a buffer, keeping the unfinished
//! tail and appending the next block gives the same chunks as cutting the whole file at once.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkParams {
    pub min: usize,
    pub avg: usize,
    pub max: usize,
}

impl ChunkParams {
    /// Cuts `buf` into chunk lengths. Without `eof`, the last chunk may be unfinished: it is left out, and its
    /// bytes (the remainder) must be carried into the next call. With `eof`, every byte is covered.
    pub fn cut(&self, buf: &[u8], eof: bool) -> Vec<usize> {
        let mut lengths = Vec::new();
        let mut consumed = 0;
        for chunk in fastcdc::v2020::FastCDC::new(buf, self.min, self.avg, self.max) {
            let reached_end = chunk.offset + chunk.length == buf.len();
            // A chunk that ends at the buffer's end was cut by running out of data, unless it is max-sized.
            if reached_end && !eof && chunk.length < self.max {
                break;
            }
            lengths.push(chunk.length);
            consumed += chunk.length;
        }
        debug_assert!(consumed <= buf.len());
        lengths
    }
}

/// The defaults, as in the config reference. A minimum of 768 KiB rather than a quarter of the average: the
/// chunker skips the first `min` bytes of each chunk, and fewer, larger chunks mean fewer chunk files and
/// fsyncs. A cold 256 MiB read of a local origin, six alternations: 0.57 against 0.49 GB/s with 256 KiB,
/// daemon CPU 0.60 against 0.70 s; warm reads unchanged (1.12 GB/s both).
impl Default for ChunkParams {
    fn default() -> Self {
        ChunkParams { min: 768 << 10, avg: 1 << 20, max: 4 << 20 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn random(len: usize, seed: u64) -> Vec<u8> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        (0..len).map(|_| rng.random()).collect()
    }

    #[test]
    fn streaming_cuts_equal_whole_file_cuts() {
        let params = ChunkParams { min: 1024, avg: 4096, max: 16384 };
        let data = random(300_000, 7);
        let whole = params.cut(&data, true);
        assert_eq!(whole.iter().sum::<usize>(), data.len());
        for block in [1000, 5000, 16384, 70_000] {
            let mut streamed = Vec::new();
            let mut pending: Vec<u8> = Vec::new();
            for (i, piece) in data.chunks(block).enumerate() {
                pending.extend_from_slice(piece);
                let eof = (i + 1) * block >= data.len();
                let lengths = params.cut(&pending, eof);
                let used: usize = lengths.iter().sum();
                pending.drain(..used);
                streamed.extend(lengths);
            }
            assert!(pending.is_empty());
            assert_eq!(streamed, whole, "block size {block}");
        }
    }

    #[test]
    fn empty_input_has_no_chunks() {
        assert!(ChunkParams::default().cut(&[], true).is_empty());
    }
}
