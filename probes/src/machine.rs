//! The machine under test as the probe sees it: the unit (systemctl, unit properties, the journal), the
//! mount (mountinfo, reads), the origin (the bytes every read is checked against) and the cache directory.

use anyhow::{Context, Result, bail, ensure};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Kills in a soak run unless `--kills` says otherwise: enough for CI to cycle every moment twice.
pub const DEFAULT_SOAK_KILLS: usize = 6;

pub struct Machine {
    pub unit: String,
    pub config: String,
    pub mount_point: PathBuf,
    pub cache_dir: PathBuf,
    /// The first origin's directory (a local origin).
    pub origin: PathBuf,
    /// The origin's id in the config (what `musicfs status` and STATUS= call it).
    pub origin_id: String,
    /// Every library origin (backups are not listed) with the local directory holding its files, which
    /// every read through the mount is checked against: a local or SFTP origin's `path` (the SSH server
    /// runs on this machine), an S3 origin's local `backup_for` copy (the S3 server's bucket directory).
    pub library: Vec<(String, PathBuf)>,
    /// Per origin, a command run after the probe writes a new track into its local directory, so the
    /// track reaches a remote server too ([`Overrides::uploads`]).
    pub uploads: Vec<(String, String)>,
    /// How many times the soak scenario kills the daemon.
    pub soak_kills: usize,
}

/// What the config alone cannot tell when the servers are other machines (the VM test): for an origin,
/// the local directory mirroring its files and the command that uploads a new one. The nspawn runner
/// needs neither (its servers serve local directories).
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    /// `ID=PATH`: the local directory checked against origin ID and written to for new tracks.
    pub origin_dirs: Vec<(String, PathBuf)>,
    /// `ID=COMMAND`: run with `sh -c` after a new track is written locally; `{file}` is replaced by its
    /// local path, `{name}` by its file name (both shell-quoted).
    pub uploads: Vec<(String, String)>,
}

/// Splits `ID=VALUE` (a command-line override).
pub fn parse_override(arg: &str) -> Result<(String, String), String> {
    match arg.split_once('=') {
        Some((id, value)) if !id.is_empty() && !value.is_empty() => Ok((id.to_owned(), value.to_owned())),
        _ => Err(format!("expected ID=VALUE, got `{arg}`")),
    }
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// The upload command for `file`: the template with `{file}` and `{name}` replaced, shell-quoted.
pub fn upload_command(template: &str, file: &Path) -> String {
    let name = file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    template.replace("{file}", &shell_quote(&file.to_string_lossy())).replace("{name}", &shell_quote(&name))
}

#[derive(Debug, PartialEq, Eq)]
pub enum MountState {
    Absent,
    Serving,
    /// A FUSE mount that no longer answers: what a killed daemon leaves without cleanup.
    Dead,
}

pub fn now_epoch() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn hash_file(path: &Path) -> Result<[u8; 32]> {
    Ok(*blake3::hash(&std::fs::read(path).with_context(|| format!("reading {}", path.display()))?).as_bytes())
}

/// `len` pseudo-random bytes (xorshift) from `seed`: new tracks no chunk of the cache can already hold.
pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

pub fn walk(root: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for entry in std::fs::read_dir(root).with_context(|| format!("listing {}", root.display()))? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            walk(&entry.path(), out)?;
        } else {
            out.push(entry.path());
        }
    }
    Ok(())
}

impl Machine {
    pub fn new(unit: &str, config: &str, overrides: &Overrides) -> Result<Machine> {
        let text = std::fs::read_to_string(config).with_context(|| format!("reading {config}"))?;
        Machine::from_config(unit, config, &text, overrides)
    }

    fn from_config(unit: &str, config: &str, text: &str, overrides: &Overrides) -> Result<Machine> {
        let value: toml::Value = toml::from_str(text).with_context(|| format!("parsing {config}"))?;
        let get = |v: Option<&toml::Value>, what: &str| -> Result<PathBuf> {
            v.and_then(|v| v.as_str()).map(PathBuf::from).with_context(|| format!("{config} has no {what}"))
        };
        let origins = value.get("origins").and_then(|o| o.as_array()).cloned().unwrap_or_default();
        let field = |o: &toml::Value, key: &str| o.get(key).and_then(|v| v.as_str()).map(str::to_owned);
        let mut library = Vec::new();
        for o in origins.iter().filter(|o| field(o, "backup_for").is_none()) {
            let id = field(o, "id").with_context(|| format!("{config}: an origin without id"))?;
            let over = overrides.origin_dirs.iter().find(|(o, _)| *o == id).map(|(_, d)| d.to_string_lossy().into());
            let dir = over.or(match field(o, "type").as_deref() {
                Some("s3") => origins
                    .iter()
                    .find(|b| field(b, "backup_for").as_deref() == Some(id.as_str()))
                    .and_then(|b| field(b, "path")),
                _ => field(o, "path"),
            });
            let dir =
                dir.with_context(|| format!("{config}: origin `{id}` has no local directory to check against"))?;
            library.push((id, PathBuf::from(dir)));
        }
        for id in overrides.origin_dirs.iter().map(|(id, _)| id).chain(overrides.uploads.iter().map(|(id, _)| id)) {
            ensure!(library.iter().any(|(o, _)| o == id), "{config}: no library origin `{id}` to override");
        }
        Ok(Machine {
            library,
            uploads: overrides.uploads.clone(),
            soak_kills: DEFAULT_SOAK_KILLS,
            unit: unit.to_owned(),
            config: config.to_owned(),
            mount_point: get(value.get("mount_point"), "mount_point")?,
            cache_dir: get(value.get("cache_dir"), "cache_dir")?,
            origin: get(value.get("origins").and_then(|o| o.get(0)).and_then(|o| o.get("path")), "origins[0].path")?,
            origin_id: get(value.get("origins").and_then(|o| o.get(0)).and_then(|o| o.get("id")), "origins[0].id")?
                .to_string_lossy()
                .into_owned(),
        })
    }

    /// Runs the origin's upload command for a file just written into its local directory, if it has one.
    pub fn upload(&self, origin: &str, file: &Path) -> Result<()> {
        let Some((_, template)) = self.uploads.iter().find(|(o, _)| o == origin) else {
            return Ok(());
        };
        let command = upload_command(template, file);
        let (ok, text) = self.run("sh", &["-c", &command])?;
        ensure!(ok, "uploading {} to origin `{origin}` failed ({command}): {text}", file.display());
        Ok(())
    }

    pub fn run(&self, program: &str, args: &[&str]) -> Result<(bool, String)> {
        let out = Command::new(program).args(args).output().with_context(|| format!("running {program}"))?;
        let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
        Ok((out.status.success(), text))
    }

    pub fn systemctl(&self, args: &[&str]) -> Result<String> {
        let mut full: Vec<&str> = args.to_vec();
        full.push(&self.unit);
        let (ok, text) = self.run("systemctl", &full)?;
        if !ok {
            bail!("systemctl {} {} failed: {text}", args.join(" "), self.unit);
        }
        Ok(text)
    }

    pub fn prop(&self, name: &str) -> String {
        self.run("systemctl", &["show", "-p", name, "--value", &self.unit])
            .map(|(_, t)| t.trim().to_owned())
            .unwrap_or_default()
    }

    pub fn restarts(&self) -> u64 {
        self.prop("NRestarts").parse().unwrap_or(0)
    }

    pub fn main_pid(&self) -> u64 {
        self.prop("MainPID").parse().unwrap_or(0)
    }

    pub fn is_active(&self) -> bool {
        self.prop("ActiveState") == "active"
    }

    /// Stopped for good: inactive or failed, not merely deactivating.
    pub fn is_stopped(&self) -> bool {
        matches!(self.prop("ActiveState").as_str(), "inactive" | "failed")
    }

    /// The unit's journal (systemd's lines about it and the daemon's own) since `epoch`.
    pub fn journal_since(&self, epoch: u64) -> String {
        let since = format!("@{epoch}");
        self.run("journalctl", &["-u", &self.unit, "--since", &since, "-o", "cat", "--no-pager"])
            .map(|(_, t)| t)
            .unwrap_or_default()
    }

    pub fn mount_state(&self) -> MountState {
        let target = self.mount_point.to_string_lossy().replace(' ', "\\040");
        let mounted = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default().lines().any(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            f.get(4) == Some(&target.as_str()) && l.contains(" - fuse")
        });
        match (mounted, std::fs::read_dir(&self.mount_point)) {
            (false, _) => MountState::Absent,
            (true, Ok(_)) => MountState::Serving,
            (true, Err(_)) => MountState::Dead,
        }
    }

    /// Files visible under the mount point, listed without reading them.
    pub fn mount_file_count(&self) -> Result<usize> {
        let mut files = Vec::new();
        walk(&self.mount_point, &mut files)?;
        Ok(files.len())
    }

    /// Files of every library origin, listed without reading them.
    pub fn origin_file_count(&self) -> Result<usize> {
        let mut files = Vec::new();
        for (_, dir) in &self.library {
            walk(dir, &mut files)?;
        }
        Ok(files.len())
    }

    /// Content hash → origin path, for every file of every library origin.
    pub fn origin_hashes(&self) -> Result<BTreeMap<[u8; 32], PathBuf>> {
        let mut files = Vec::new();
        for (_, dir) in &self.library {
            walk(dir, &mut files)?;
        }
        files.into_iter().map(|p| Ok((hash_file(&p)?, p))).collect()
    }

    /// Reads every file through the mount; each must equal an origin file byte for byte, and every origin
    /// file must appear. Returns the number of files checked.
    pub fn verify_mount(&self) -> Result<usize> {
        let origin = self.origin_hashes()?;
        let mut files = Vec::new();
        walk(&self.mount_point, &mut files)?;
        let mut seen = BTreeMap::new();
        for path in &files {
            let hash = hash_file(path)?;
            if !origin.contains_key(&hash) {
                bail!("{} matches no origin file", path.display());
            }
            seen.insert(hash, path.clone());
        }
        if seen.len() != origin.len() {
            bail!("{} of {} origin files seen through the mount", seen.len(), origin.len());
        }
        Ok(files.len())
    }

    /// Makes the kernel forget the pages it keeps of every file in the mount (the daemon opens files with
    /// FOPEN_KEEP_CACHE), so the next reads reach the daemon instead of the page cache. Returns the files.
    pub fn drop_kernel_pages(&self) -> Result<usize> {
        use std::os::fd::AsRawFd;
        let mut files = Vec::new();
        walk(&self.mount_point, &mut files)?;
        for path in &files {
            let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
            // SAFETY: fadvise on a descriptor we own; it only drops clean page-cache pages.
            let rc = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
            ensure!(rc == 0, "posix_fadvise on {} failed: {rc}", path.display());
        }
        Ok(files.len())
    }

    /// Waits until the unit is active and the mount serves byte-identical files; returns how long it took.
    pub fn wait_serving(&self, limit: Duration) -> Result<Duration> {
        let started = Instant::now();
        let mut last = String::new();
        while started.elapsed() < limit {
            if self.is_active() && self.mount_state() == MountState::Serving {
                match self.verify_mount() {
                    Ok(_) => return Ok(started.elapsed()),
                    Err(e) => last = format!("{e:#}"),
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!(
            "not serving within {limit:?} (active: {}, mount: {:?}, last error: {last})",
            self.is_active(),
            self.mount_state()
        )
    }

    pub fn wait_until(&self, limit: Duration, what: &str, mut done: impl FnMut() -> bool) -> Result<Duration> {
        let started = Instant::now();
        while started.elapsed() < limit {
            if done() {
                return Ok(started.elapsed());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!("{what} did not happen within {limit:?}")
    }

    /// Installs a runtime drop-in for the unit and reloads systemd.
    pub fn dropin(&self, name: &str, content: &str) -> Result<()> {
        let dir = PathBuf::from(format!("/run/systemd/system/{}.d", self.unit));
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join(format!("{name}.conf")), content)?;
        self.run("systemctl", &["daemon-reload"])?;
        Ok(())
    }

    pub fn remove_dropin(&self, name: &str) -> Result<()> {
        let path = PathBuf::from(format!("/run/systemd/system/{}.d/{name}.conf", self.unit));
        if path.exists() {
            std::fs::remove_file(path)?;
            self.run("systemctl", &["daemon-reload"])?;
        }
        Ok(())
    }

    /// `musicfs status --json` through the control socket.
    pub fn status(&self) -> Result<serde_json::Value> {
        let (ok, text) = self.run("musicfs", &["status", "--json", "--config", &self.config])?;
        if !ok {
            bail!("musicfs status failed: {text}");
        }
        Ok(serde_json::from_str(text.trim())?)
    }

    /// Back to a serving unit after a scenario, whatever state it left.
    pub fn recover(&self) -> Result<()> {
        let _ = crate::faults::restore();
        let _ = self.remove_dropin("probe");
        let _ = self.run("systemctl", &["kill", "-s", "SIGCONT", &self.unit]);
        let _ = self.run("systemctl", &["reset-failed", &self.unit]);
        if !self.is_active() {
            let _ = self.run("systemctl", &["start", &self.unit]);
        }
        self.wait_serving(Duration::from_secs(60)).map(|_| ())
    }
}

/// A player streaming one track through the mount in small reads until told to stop; every byte it gets
/// is checked against the origin. Errors after the daemon is stopped are expected and only counted.
pub struct Streamer {
    stop: Arc<AtomicBool>,
    pub bytes: Arc<AtomicU64>,
    /// The longest one open-and-read took, in microseconds: how long a listener waited at worst.
    pub longest_wait_us: Arc<AtomicU64>,
    /// Failed opens and reads so far.
    pub errors: Arc<AtomicU64>,
    handle: std::thread::JoinHandle<Result<u64>>,
}

impl Streamer {
    pub fn start(machine: &Machine) -> Result<Streamer> {
        let origin = machine.origin_hashes()?;
        let mut files = Vec::new();
        walk(&machine.mount_point, &mut files)?;
        let largest = files
            .into_iter()
            .max_by_key(|p| std::fs::metadata(p).map_or(0, |m| m.len()))
            .context("the mount is empty")?;
        let expected = {
            let hash = hash_file(&largest)?;
            std::fs::read(origin.get(&hash).context("the streamed track is not an origin file")?)?
        };
        let (stop, bytes) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)));
        let (longest_wait_us, errors) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let (s, b, w, e) = (stop.clone(), bytes.clone(), longest_wait_us.clone(), errors.clone());
        let handle = std::thread::spawn(move || -> Result<u64> {
            use std::os::unix::fs::FileExt;
            let mut offset = 0u64;
            let mut buf = vec![0u8; 64 * 1024];
            while !s.load(Ordering::SeqCst) {
                let started = Instant::now();
                let result = std::fs::File::open(&largest).and_then(|f| f.read_at(&mut buf, offset));
                w.fetch_max(started.elapsed().as_micros() as u64, Ordering::SeqCst);
                match result {
                    Ok(0) => offset = 0,
                    Ok(n) => {
                        let at = offset as usize;
                        if buf[..n] != expected[at..at + n] {
                            bail!("wrong bytes at offset {offset} of {}", largest.display());
                        }
                        offset += n as u64;
                        b.fetch_add(n as u64, Ordering::SeqCst);
                    }
                    Err(_) => {
                        e.fetch_add(1, Ordering::SeqCst);
                    }
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            Ok(e.load(Ordering::SeqCst))
        });
        Ok(Streamer { stop, bytes, longest_wait_us, errors, handle })
    }

    /// Stops the stream; returns (bytes read and verified, read errors seen).
    pub fn finish(self) -> Result<(u64, u64)> {
        self.stop.store(true, Ordering::SeqCst);
        let errors = self.handle.join().map_err(|_| anyhow::anyhow!("the streaming thread panicked"))??;
        Ok((self.bytes.load(Ordering::SeqCst), errors))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = r#"
mount_point = "/mnt/music"
cache_dir = "/var/cache/musicfs"
[[origins]]
id = "disk"
type = "local"
path = "/srv/music"
[[origins]]
id = "bucket"
type = "s3"
bucket = "music"
[[origins]]
id = "bucket-copy"
type = "local"
path = "/srv/s3/music"
backup_for = "bucket"
[[origins]]
id = "nas"
type = "sftp"
path = "/srv/music"
"#;

    fn dirs(m: &Machine) -> Vec<(&str, &str)> {
        m.library.iter().map(|(id, d)| (id.as_str(), d.to_str().unwrap())).collect()
    }

    #[test]
    fn without_overrides_the_library_is_read_from_the_config_as_in_nspawn() {
        let m = Machine::from_config("musicfs.service", "c.toml", CONFIG, &Overrides::default()).unwrap();
        assert_eq!(dirs(&m), [("disk", "/srv/music"), ("bucket", "/srv/s3/music"), ("nas", "/srv/music")]);
        assert_eq!(m.origin, PathBuf::from("/srv/music"));
        assert!(m.uploads.is_empty());
        m.upload("bucket", Path::new("/nonexistent/x.wav")).unwrap();
    }

    #[test]
    fn an_origin_dir_override_replaces_the_config_path_and_unknown_origins_are_refused() {
        let overrides = Overrides {
            origin_dirs: vec![("nas".into(), "/srv/sftp/music".into())],
            uploads: vec![("nas".into(), "true {file}".into())],
        };
        let m = Machine::from_config("u", "c.toml", CONFIG, &overrides).unwrap();
        assert_eq!(dirs(&m), [("disk", "/srv/music"), ("bucket", "/srv/s3/music"), ("nas", "/srv/sftp/music")]);
        let typo = Overrides { origin_dirs: vec![("nsa".into(), "/x".into())], ..Overrides::default() };
        assert!(Machine::from_config("u", "c.toml", CONFIG, &typo).is_err());
        let backup = Overrides { uploads: vec![("bucket-copy".into(), "true".into())], ..Overrides::default() };
        assert!(Machine::from_config("u", "c.toml", CONFIG, &backup).is_err(), "backups are not library origins");
    }

    #[test]
    fn the_upload_template_gets_the_file_and_its_name_quoted() {
        let cmd = upload_command("curl -T {file} http://minio:9000/music/{name}", Path::new("/srv/s3/music/a b.wav"));
        assert_eq!(cmd, "curl -T '/srv/s3/music/a b.wav' http://minio:9000/music/'a b.wav'");
        assert_eq!(upload_command("scp {file} x:", Path::new("/m/it's.wav")), "scp '/m/it'\\''s.wav' x:");
        assert_eq!(parse_override("nas=/srv/sftp/music"), Ok(("nas".into(), "/srv/sftp/music".into())));
        assert_eq!(parse_override("bucket=curl a=b").unwrap().1, "curl a=b");
        assert!(parse_override("nas").is_err() && parse_override("=x").is_err() && parse_override("x=").is_err());
    }

    #[test]
    fn a_failing_upload_command_fails_the_upload() {
        let overrides = Overrides { uploads: vec![("nas".into(), "test -e {file}".into())], ..Overrides::default() };
        let m = Machine::from_config("u", "c.toml", CONFIG, &overrides).unwrap();
        assert!(m.upload("nas", Path::new("/nonexistent/x.wav")).is_err());
        m.upload("nas", Path::new("/")).unwrap();
    }
}
