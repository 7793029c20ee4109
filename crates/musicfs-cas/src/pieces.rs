//! The bytes of one read in the buffers that hold them: a read that spans two chunks is a slice of each,
//! answered with one vectored write (musicfs-fuse's adapter), never first joined into a new buffer. Joining
//! them was a tenth of the daemon's samples on a warm sequential read, where most 1 MiB reads span two chunks
//! of about 1 MiB.

use bytes::{Bytes, BytesMut};

/// Bytes in order, in one or more pieces; never holds an empty piece.
#[derive(Clone, Debug, Default)]
pub struct Pieces(Vec<Bytes>);

impl Pieces {
    /// Appends `piece` after the bytes held.
    pub fn push(&mut self, piece: Bytes) {
        if !piece.is_empty() {
            self.0.push(piece);
        }
    }

    /// How many bytes in all.
    pub fn len(&self) -> usize {
        self.0.iter().map(Bytes::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Appends the pieces of `other` after the bytes held.
    pub fn append(&mut self, other: Pieces) {
        self.0.extend(other.0);
    }

    /// The bytes from `start` to `end`, offsets into all of them, as slices of the pieces that hold them; as
    /// many as there are of them when the range goes past the end.
    pub fn slice(&self, start: usize, end: usize) -> Pieces {
        let (mut sliced, mut at) = (Pieces::default(), 0);
        for piece in &self.0 {
            let (from, to) = (start.max(at), end.min(at + piece.len()));
            if from < to {
                sliced.push(piece.slice(from - at..to - at));
            }
            at += piece.len();
        }
        sliced
    }

    /// The pieces, in order.
    pub fn slices(&self) -> impl Iterator<Item = &[u8]> {
        self.0.iter().map(|piece| &piece[..])
    }

    /// The bytes as one buffer: the piece itself when there is one, else a copy of them joined.
    pub fn into_bytes(mut self) -> Bytes {
        match self.0.len() {
            1 => self.0.swap_remove(0),
            _ => {
                let mut joined = BytesMut::with_capacity(self.len());
                self.0.iter().for_each(|piece| joined.extend_from_slice(piece));
                joined.freeze()
            }
        }
    }
}

impl From<Bytes> for Pieces {
    fn from(piece: Bytes) -> Pieces {
        let mut pieces = Pieces::default();
        pieces.push(piece);
        pieces
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_keep_their_order_skip_empty_ones_and_join_only_when_there_are_several() {
        let mut pieces = Pieces::default();
        assert!(pieces.is_empty());
        assert!(pieces.clone().into_bytes().is_empty());
        let first = Bytes::from_static(b"abc");
        pieces.push(first.clone());
        assert!(!pieces.is_empty());
        pieces.push(Bytes::new());
        assert_eq!(pieces.slices().count(), 1);
        // One piece is returned as it is, not copied.
        assert_eq!(pieces.clone().into_bytes().as_ptr(), first.as_ptr());
        pieces.push(Bytes::from_static(b"defg"));
        assert_eq!(pieces.len(), 7);
        assert_eq!(pieces.slices().collect::<Vec<_>>(), [&b"abc"[..], &b"defg"[..]]);
        assert_eq!(&pieces.into_bytes()[..], b"abcdefg");
        assert!(Pieces::from(Bytes::new()).is_empty());
    }

    #[test]
    fn a_slice_of_pieces_takes_the_range_from_each_piece_that_holds_part_of_it() {
        let mut pieces = Pieces::from(Bytes::from_static(b"abc"));
        pieces.push(Bytes::from_static(b"defg"));
        let joined = pieces.clone().into_bytes();
        for start in 0..=7 {
            for end in start..=7 {
                let sliced = pieces.slice(start, end);
                assert_eq!(&sliced.clone().into_bytes()[..], &joined[start..end], "{start}..{end}");
                assert_eq!(
                    sliced.slices().count(),
                    [start < 3 && end > start, end > 3.max(start)].iter().filter(|b| **b).count()
                );
            }
        }
        assert_eq!(&pieces.slice(5, 99).into_bytes()[..], b"fg");
        assert!(pieces.slice(6, 2).is_empty());
        let mut more = pieces.slice(1, 2);
        more.append(pieces.slice(5, 7));
        assert_eq!(&more.into_bytes()[..], b"bfg");
    }
}
