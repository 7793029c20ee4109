//! Untagged audio templates, one per [`Format`], made by Debian's `ffmpeg`.
//!
//! `ffmpeg` runs only here, six times per [`generate`](super::generate) call;
//! every generated file starts as a copy of one of these templates.

use std::ffi::OsStr;
use std::io::ErrorKind;
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

use super::Format;

/// Sample rate of every template: mono, 16 kHz (one of the rates libopus accepts).
pub const SAMPLE_RATE: u32 = 16_000;

/// Frequency of the sine tone in every template, in Hz.
pub const TONE_HZ: u32 = 440;

/// The error text when the `ffmpeg` program cannot be started.
pub(super) const FFMPEG_MISSING: &str = "ffmpeg not found on PATH: install Debian package ffmpeg";

/// The untagged bytes of one short sine tone in each format.
pub(super) struct Templates {
    bytes: Vec<Vec<u8>>,
}

impl Templates {
    /// Encodes a `seconds`-long tone in every format with the `ffmpeg` on `PATH`.
    pub(super) fn build(seconds: f32) -> Result<Self> {
        Self::build_with(OsStr::new("ffmpeg"), seconds)
    }

    /// Like [`Templates::build`], with the ffmpeg program given (tests use a missing one).
    pub(super) fn build_with(ffmpeg: &OsStr, seconds: f32) -> Result<Self> {
        check_ffmpeg(ffmpeg)?;
        let dir = tempfile::Builder::new()
            .prefix("musicfs-sample-templates-")
            .tempdir()
            .context("creating a temporary directory for audio templates")?;
        let mut bytes = Vec::with_capacity(Format::ALL.len());
        for format in Format::ALL {
            let out = dir.path().join(format!("template.{}", format.extension()));
            let output = Command::new(ffmpeg)
                .args(["-nostdin", "-hide_banner", "-loglevel", "error", "-y"])
                .args(["-f", "lavfi", "-i"])
                .arg(format!("sine=frequency={TONE_HZ}:sample_rate={SAMPLE_RATE}:duration={seconds}"))
                .args(["-ac", "1", "-map_metadata", "-1"])
                .args(["-fflags", "+bitexact", "-flags", "+bitexact"])
                .args(codec_args(format))
                .arg(&out)
                .stdin(Stdio::null())
                .output()
                .with_context(|| format!("running ffmpeg to encode the {format:?} template"))?;
            if !output.status.success() {
                bail!(
                    "ffmpeg failed to encode the {format:?} template ({}): {}",
                    output.status,
                    String::from_utf8_lossy(&output.stderr).trim()
                );
            }
            let data =
                std::fs::read(&out).with_context(|| format!("reading the {format:?} template {}", out.display()))?;
            if data.is_empty() {
                bail!("ffmpeg wrote an empty {format:?} template");
            }
            bytes.push(data);
        }
        Ok(Self { bytes })
    }

    /// The untagged template for `format`.
    pub(super) fn get(&self, format: Format) -> &[u8] {
        // `bytes` was filled in `Format::ALL` order, which is declaration order.
        self.bytes.get(format as usize).map_or(&[], Vec::as_slice)
    }
}

/// Encoder and muxer options per format: small, mono, no tags written by ffmpeg.
fn codec_args(format: Format) -> &'static [&'static str] {
    match format {
        Format::Flac => &["-c:a", "flac"],
        Format::Mp3 => &["-c:a", "libmp3lame", "-b:a", "32k", "-id3v2_version", "0", "-write_id3v1", "0"],
        Format::OggVorbis => &["-c:a", "libvorbis", "-q:a", "0"],
        Format::Opus => &["-c:a", "libopus", "-b:a", "16k"],
        Format::M4a => &["-c:a", "aac", "-b:a", "24k"],
        Format::Wav => &["-c:a", "pcm_s16le"],
    }
}

/// Fails with [`FFMPEG_MISSING`] when `ffmpeg` cannot be started at all.
fn check_ffmpeg(ffmpeg: &OsStr) -> Result<()> {
    let status =
        Command::new(ffmpeg).arg("-version").stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).status();
    match status {
        Ok(status) if status.success() => Ok(()),
        Ok(status) => bail!("`{} -version` failed ({status})", ffmpeg.to_string_lossy()),
        Err(e) if e.kind() == ErrorKind::NotFound => bail!(FFMPEG_MISSING),
        Err(e) => Err(e).with_context(|| format!("starting {}", ffmpeg.to_string_lossy())),
    }
}
