//! Turning untrusted tags into safe, unique paths: `Artist/Album (Year)/NN - Title.ext`.
//!
//! Every component is sanitised: no `/`, NUL or control characters, never empty, `.` or `..`, and at most
//! 255 bytes (cut at a character boundary). Files that would get the same path are disambiguated
//! deterministically: ordered by (origin, origin path), the first keeps the name, the next get ` (2)`, ` (3)`.

use crate::tags::TrackTags;
use std::collections::HashSet;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// The longest file name most Linux filesystems accept, in bytes.
pub const MAX_NAME_BYTES: usize = 255;
/// Room kept in a file name for a ` (NNNN)` disambiguation suffix.
const SUFFIX_ROOM: usize = 8;

pub const UNKNOWN_ARTIST: &str = "Unknown Artist";
pub const UNKNOWN_ALBUM: &str = "Unknown Album";

/// Cuts `text` to at most `max` bytes without splitting a character.
pub fn truncate_bytes(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// A safe single path component, or `fallback` when nothing usable is left.
pub fn component(raw: &str, max: usize, fallback: &str) -> String {
    let cleaned: String = raw.chars().map(|c| if c == '/' || c == '\0' || c.is_control() { '_' } else { c }).collect();
    let cut = truncate_bytes(cleaned.trim(), max).trim_end();
    if cut.is_empty() || cut == "." || cut == ".." { fallback.to_owned() } else { cut.to_owned() }
}

fn extension(rel_path: &Path) -> String {
    let ext: String = rel_path
        .extension()
        .map(|e| String::from_utf8_lossy(e.as_bytes()).to_ascii_lowercase())
        .unwrap_or_default()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .take(10)
        .collect();
    if ext.is_empty() { "bin".into() } else { ext }
}

/// Where one track wants to live before collisions are resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub dir: String,
    pub stem: String,
    pub ext: String,
}

impl Placement {
    fn file_name(&self, copy: usize) -> String {
        if copy <= 1 { format!("{}.{}", self.stem, self.ext) } else { format!("{} ({copy}).{}", self.stem, self.ext) }
    }
}

pub fn placement(rel_path: &Path, tags: &TrackTags) -> Placement {
    let ext = extension(rel_path);
    let stem_room = MAX_NAME_BYTES - SUFFIX_ROOM - ext.len() - 1;
    let Some(title) = tags.title.as_deref().filter(|t| !component(t, stem_room, "").is_empty()) else {
        // Untagged or unreadable: keep the file under its own name so it never vanishes.
        let name = rel_path.file_stem().map(|s| String::from_utf8_lossy(s.as_bytes()).into_owned()).unwrap_or_default();
        return Placement {
            dir: format!("{UNKNOWN_ARTIST}/{UNKNOWN_ALBUM}"),
            stem: component(&name, stem_room, "Untitled"),
            ext,
        };
    };
    let artist = component(tags.artist.as_deref().unwrap_or(""), MAX_NAME_BYTES, UNKNOWN_ARTIST);
    let album_name = tags.album.as_deref().unwrap_or("");
    let album = match tags.year {
        Some(year) if year > 0 => {
            // The year as tagged, any number of digits (a hostile tag says 4294967295): room for all of them.
            let suffix = format!(" ({year})");
            let base = component(album_name, MAX_NAME_BYTES - suffix.len(), UNKNOWN_ALBUM);
            format!("{base}{suffix}")
        }
        _ => component(album_name, MAX_NAME_BYTES, UNKNOWN_ALBUM),
    };
    let stem = match tags.track {
        Some(n) if n > 0 => {
            let prefix = format!("{n:02} - ");
            format!("{prefix}{}", component(title, stem_room - prefix.len(), "Untitled"))
        }
        _ => component(title, stem_room, "Untitled"),
    };
    Placement { dir: format!("{artist}/{album}"), stem, ext }
}

/// Final virtual paths (relative, `/`-separated) for `placements`, in the given order of preference:
/// the caller sorts by (origin, origin path) so the outcome is deterministic.
pub fn assign_unique(placements: &[Placement]) -> Vec<String> {
    let mut taken: HashSet<String> = HashSet::with_capacity(placements.len());
    placements
        .iter()
        .map(|p| {
            let mut copy = 1;
            loop {
                let path = format!("{}/{}", p.dir, p.file_name(copy));
                if taken.insert(path.clone()) {
                    return path;
                }
                copy += 1;
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(artist: &str, album: &str, year: u32, track: u32, title: &str) -> TrackTags {
        TrackTags {
            artist: Some(artist.into()),
            album: Some(album.into()),
            year: Some(year),
            track: Some(track),
            title: Some(title.into()),
        }
    }

    fn path_of(rel: &str, t: &TrackTags) -> String {
        assign_unique(&[placement(Path::new(rel), t)]).remove(0)
    }

    #[test]
    fn ordinary_tags_make_artist_album_year_track_title() {
        assert_eq!(path_of("x/1.FLAC", &tags("Nina", "Pastel", 1999, 3, "Blue")), "Nina/Pastel (1999)/03 - Blue.flac");
    }

    #[test]
    fn hostile_components_are_neutralised() {
        let p = path_of("a.mp3", &tags("../../etc", "..", 0, 1, "AC/DC\0x\x07"));
        let parts: Vec<&str> = p.split('/').collect();
        assert_eq!(parts.len(), 3, "{p}");
        assert!(parts.iter().all(|c| *c != "." && *c != ".." && !c.is_empty()), "{p}");
        assert!(!p.contains('\0') && !p.chars().any(char::is_control), "{p}");
        assert_eq!(parts[1], UNKNOWN_ALBUM);
        assert_eq!(parts[2], "01 - AC_DC_x_.mp3");
        assert_eq!(path_of("b.ogg", &tags(".", "A", 0, 0, "T")), "Unknown Artist/A/T.ogg");
    }

    #[test]
    fn long_names_fit_the_byte_limit_on_char_boundaries() {
        let long = "ä".repeat(700) + &"x".repeat(300);
        let p = path_of("a.flac", &tags(&"y".repeat(10_000), &long, 2001, 7, &long));
        for part in p.split('/') {
            assert!(part.len() <= MAX_NAME_BYTES, "{} bytes", part.len());
        }
        assert!(p.ends_with(".flac"));
    }

    #[test]
    fn untagged_files_keep_their_name_under_unknown() {
        let p = path_of("in/Some Song.wav", &TrackTags::default());
        assert_eq!(p, "Unknown Artist/Unknown Album/Some Song.wav");
        let invalid = std::ffi::OsStr::from_bytes(b"bad-\xff-name.flac");
        let p = assign_unique(&[placement(Path::new(invalid), &TrackTags::default())]).remove(0);
        assert!(p.starts_with("Unknown Artist/Unknown Album/bad-"), "{p}");
    }

    #[test]
    fn collisions_get_deterministic_suffixes() {
        let t = tags("A", "B", 2000, 1, "Same");
        let placed = vec![
            placement(Path::new("1.flac"), &t),
            placement(Path::new("2.flac"), &t),
            placement(Path::new("3.flac"), &t),
        ];
        let paths = assign_unique(&placed);
        assert_eq!(
            paths,
            vec!["A/B (2000)/01 - Same.flac", "A/B (2000)/01 - Same (2).flac", "A/B (2000)/01 - Same (3).flac"]
        );
    }
}
