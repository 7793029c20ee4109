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

/// Reads the primary tag (or the first one found). Errors are logged at debug and give empty tags.
pub fn read_tags(reader: Box<dyn ReadSeek>) -> TrackTags {
    let probe = lofty::probe::Probe::new(reader)
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
