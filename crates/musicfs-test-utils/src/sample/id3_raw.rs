//! A hand-built ID3v2.4 tag, for the `invalid-utf8-title` hostile case.
//!
//! lofty only writes valid text, so a tag whose TIT2 frame declares UTF-8 but
//! holds invalid bytes has to be assembled byte by byte here (ID3v2.4 spec,
//! sections 3.1 and 4.1: 10-byte headers, sizes as 28-bit "synchsafe" integers).

use anyhow::{Result, bail};

/// ID3v2 text encoding byte for UTF-8 (ID3v2.4 only).
const ENCODING_UTF8: u8 = 3;

/// Largest size a 4-byte synchsafe integer can hold.
const SYNCHSAFE_MAX: usize = (1 << 28) - 1;

/// The artist written, valid UTF-8, into the TPE1 frame.
pub(super) const ARTIST: &str = "Raw Id3 Artist";

/// The bytes of the TIT2 frame's text: declared UTF-8 but not UTF-8
/// (`0xff`, `0xfe` never occur in UTF-8; `0xc3 0x28` is a lead byte without its continuation).
pub(super) const INVALID_TITLE: &[u8] = b"Broken \xff\xfe\xc3\x28 Title";

/// Encodes `value` as a 4-byte synchsafe integer (7 bits per byte, top bit clear).
pub(super) fn synchsafe(value: usize) -> Result<[u8; 4]> {
    if value > SYNCHSAFE_MAX {
        bail!("{value} bytes do not fit an ID3v2 synchsafe size");
    }
    Ok([((value >> 21) & 0x7f) as u8, ((value >> 14) & 0x7f) as u8, ((value >> 7) & 0x7f) as u8, (value & 0x7f) as u8])
}

/// One ID3v2.4 text frame: header (id, synchsafe size, no flags), encoding byte, text as given.
fn text_frame(id: &[u8; 4], text: &[u8]) -> Result<Vec<u8>> {
    let body_len = 1 + text.len();
    let mut frame = Vec::with_capacity(10 + body_len);
    frame.extend_from_slice(id);
    frame.extend_from_slice(&synchsafe(body_len)?);
    frame.extend_from_slice(&[0, 0]);
    frame.push(ENCODING_UTF8);
    frame.extend_from_slice(text);
    Ok(frame)
}

/// A complete ID3v2.4 tag (no padding, no flags) with a valid TPE1 [`ARTIST`]
/// and a TIT2 frame holding [`INVALID_TITLE`].
pub(super) fn invalid_utf8_title_tag() -> Result<Vec<u8>> {
    let mut frames = text_frame(b"TPE1", ARTIST.as_bytes())?;
    frames.extend(text_frame(b"TIT2", INVALID_TITLE)?);
    let mut tag = Vec::with_capacity(10 + frames.len());
    tag.extend_from_slice(b"ID3");
    tag.extend_from_slice(&[4, 0]); // version 2.4.0
    tag.push(0); // flags: no unsynchronisation, no extended header, no footer
    tag.extend_from_slice(&synchsafe(frames.len())?);
    tag.extend(frames);
    Ok(tag)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synchsafe_encodes_seven_bits_per_byte() {
        assert_eq!(synchsafe(0).unwrap(), [0, 0, 0, 0]);
        assert_eq!(synchsafe(127).unwrap(), [0, 0, 0, 127]);
        assert_eq!(synchsafe(128).unwrap(), [0, 0, 1, 0]);
        assert_eq!(synchsafe(255).unwrap(), [0, 0, 1, 127]);
        assert_eq!(synchsafe(SYNCHSAFE_MAX).unwrap(), [127; 4]);
        assert!(synchsafe(SYNCHSAFE_MAX + 1).is_err());
    }

    #[test]
    fn tag_layout_is_id3v24_with_two_frames() {
        let tag = invalid_utf8_title_tag().unwrap();
        assert_eq!(&tag[..6], b"ID3\x04\x00\x00");
        assert_eq!(tag[6..10], synchsafe(tag.len() - 10).unwrap());
        assert_eq!(&tag[10..14], b"TPE1");
        assert_eq!(tag[14..18], synchsafe(1 + ARTIST.len()).unwrap());
        let tit2 = 10 + 10 + 1 + ARTIST.len();
        assert_eq!(&tag[tit2..tit2 + 4], b"TIT2");
        assert_eq!(tag[tit2 + 4..tit2 + 8], synchsafe(1 + INVALID_TITLE.len()).unwrap());
        assert_eq!(tag[tit2 + 10], ENCODING_UTF8);
        assert_eq!(&tag[tit2 + 11..], INVALID_TITLE);
        assert!(String::from_utf8(INVALID_TITLE.to_vec()).is_err());
    }
}
