//! `cargo xtask bench --peers`: MusicFS side by side with the filesystems people would pick instead, in one
//! run, on the same files and the same loopback servers ([`super::data`]):
//!
//! * local origin: MusicFS, `bindfs -o ro`, direct reads of the origin directory;
//! * SFTP, one `sshd`: MusicFS with an SFTP origin, `sshfs`, `rclone mount` (sftp backend);
//! * S3, one s3s-fs (or MinIO): MusicFS with an S3 origin, `s3fs`, `rclone mount` (s3 backend).
//!
//! Within a group the systems run in alternation (MusicFS, peer, peer, MusicFS, …) `--pairs` times, each run
//! on a fresh mount with an empty cache ([`super::systems`]), taking the figures of [`super::probe`]; the
//! report ([`super::report`]) shows medians and ratios. A peer that cannot be started or fails keeps its reason
//! in its column and the run goes on; an error of MusicFS or wrong bytes from anyone is recorded the same way,
//! the report is still written, and then the command fails. Timing never fails it.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use musicfs_test_utils::servers::s3::S3Backend;

use super::data::{Data, Servers};
use super::probe::{self, WrongBytes};
use super::report::{self, Column, Figures, Group, Metric};
use super::systems::{self, Origin, System};

/// What `--peers` runs with (from [`super::Args`]).
pub struct Options {
    pub size_mib: usize,
    pub tracks: usize,
    pub pairs: usize,
    /// The origin groups measured; empty: all.
    pub origins: Vec<Origin>,
    pub workdir: PathBuf,
    pub binary: PathBuf,
    pub json: Option<PathBuf>,
}

/// Measures every group, writes the report and prints it; fails if MusicFS failed or anyone read wrong bytes.
pub fn run(options: &Options) -> Result<()> {
    let started = Instant::now();
    println!(
        "MusicFS bench --peers: {} MiB sequential file, {} tracks, {} runs per system ({})",
        options.size_mib,
        options.tracks,
        options.pairs,
        options.binary.display()
    );
    let data = Data::prepare(&options.workdir, options.size_mib, options.tracks)?;
    let servers = Servers::start(&data);
    let mut buf = vec![1u8; data.sequential_bytes];
    let mut fatal = Vec::new();
    let mut groups = Vec::new();
    for (origin, title, peers) in [
        (
            Origin::Local,
            "Local origin (a directory on this machine's disk)".to_owned(),
            [System::Bindfs, System::Direct],
        ),
        (Origin::Sftp, sftp_title(&servers), [System::Sshfs, System::RcloneSftp]),
        (Origin::S3, s3_title(&servers), [System::S3fs, System::RcloneS3]),
    ] {
        if !options.origins.is_empty() && !options.origins.contains(&origin) {
            continue;
        }
        let systems = [System::MusicFs(origin), peers[0], peers[1]];
        let mut columns: Vec<Column> = systems.iter().map(|s| Column::new(s.name())).collect();
        let server_missing = match origin {
            Origin::Local => None,
            Origin::Sftp => servers.sshd.as_ref().err(),
            Origin::S3 => servers.s3.as_ref().err(),
        };
        if let Some(why) = server_missing {
            println!("\n{title}: not measured: {why}");
            columns.iter_mut().for_each(|c| c.failure = Some(why.clone()));
        }
        println!("\n{title}");
        for round in 0..options.pairs {
            for (system, column) in systems.iter().zip(columns.iter_mut()) {
                if column.failure.is_some() {
                    continue;
                }
                let clock = Instant::now();
                let tree = column.tree_failure.is_none();
                match measure(*system, &data, &servers, options, &mut buf, (round, tree)) {
                    Ok((figures, tree_failure)) => {
                        let took = clock.elapsed().as_secs_f64();
                        println!(
                            "  run {}/{} {:<12} {took:>6.1} s  {}",
                            round + 1,
                            options.pairs,
                            system.name(),
                            summary(&figures)
                        );
                        if let Some(err) = tree_failure {
                            println!("    no library figures from {}: {err:#}", system.name());
                            column.tree_failure = Some(format!("{err:#}"));
                        }
                        column.runs.push(figures);
                    }
                    Err(err) => {
                        println!("  run {}/{} {:<12} FAILED: {err:#}", round + 1, options.pairs, system.name());
                        if matches!(system, System::MusicFs(_)) || err.downcast_ref::<WrongBytes>().is_some() {
                            fatal.push(format!("{}, {}: {err:#}", title, system.name()));
                        }
                        column.failure = Some(format!("{err:#}"));
                    }
                }
            }
        }
        let notes = match (origin, &servers.s3) {
            (Origin::S3, Ok(s3)) if s3.backend() == S3Backend::S3sFs => vec![S3S_FS_NAGLE.to_owned()],
            _ => Vec::new(),
        };
        groups.push(Group { title, columns, notes });
    }
    let setup = format!(
        "{} MiB sequential file, {} MiB first-byte file, {} MiB random-read file, {}-track library; {} run(s) \
         per system; binary {}. {TAG_TREE}",
        options.size_mib,
        (data.sequential_bytes.clamp(64 << 10, 16 << 20)) >> 20,
        options.size_mib,
        options.tracks,
        options.pairs,
        options.binary.display()
    );
    let run = report::Run { setup, groups, wall_secs: started.elapsed().as_secs_f64() };
    let markdown = report::markdown(&run);
    let out = options.workdir.clone();
    std::fs::write(out.join("report.md"), &markdown).context("writing report.md")?;
    std::fs::write(out.join("report.html"), report::html(&run)).context("writing report.html")?;
    if let Some(path) = &options.json {
        let text = serde_json::to_string_pretty(&report::json(&run)).context("serialising the figures")? + "\n";
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    println!("\n{markdown}");
    println!("report: {} and {}", out.join("report.md").display(), out.join("report.html").display());
    if !fatal.is_empty() {
        bail!("{} run(s) failed where they must not:\n{}", fatal.len(), fatal.join("\n"));
    }
    Ok(())
}

/// One run of `system`: the read set on one fresh mount, then (unless `tree` is false) the library on another.
/// A peer's failure on the library is returned beside the read figures, so they still count.
fn measure(
    system: System,
    data: &Data,
    servers: &Servers,
    options: &Options,
    buf: &mut [u8],
    (round, tree): (usize, bool),
) -> Result<(Figures, Option<anyhow::Error>)> {
    if system == System::Direct {
        let mut figures = probe::read_figures(system, &data.read_set.dir, data, buf, round, &|| None)?;
        figures.extend(probe::tree_figures(&data.library.dir, data.tracks)?);
        return Ok((figures, None));
    }
    let mounted = systems::mount(system, &data.read_set, data, servers, &options.binary)?;
    let read = probe::read_figures(system, &mounted.mount_point, data, buf, round, &|| mounted.cpu_secs());
    let mut figures =
        read.with_context(|| format!("{} on the read set; its log:\n{}", system.name(), mounted.log()))?;
    figures.insert(Metric::MountRead, mounted.mount_secs * 1e3);
    figures.insert(Metric::Rss, mounted.rss_mb()?);
    mounted.stop()?;
    let again = systems::remount(system, &data.read_set, data, servers, &options.binary)?;
    let warm = probe::warm_read(system, &again.mount_point, data, buf);
    figures.insert(
        Metric::Warm,
        warm.with_context(|| format!("{} after a remount; its log:\n{}", system.name(), again.log()))?,
    );
    again.stop()?;
    if !tree {
        return Ok((figures, None));
    }
    if system == System::S3fs && servers.s3.as_ref().is_ok_and(|s3| s3.backend() == S3Backend::S3sFs) {
        // Seen here (a 200-track library took s3fs 15 minutes to list): s3fs looks every directory up as an
        // object first, s3s-fs answers that with 500 InternalError (the key is a directory in its data dir),
        // and s3fs retries each one.
        let why = "s3fs cannot list a nested tree on s3s-fs: s3fs HEADs each directory as an object, s3s-fs \
                   answers 500 InternalError (the key is a directory in its data dir) and s3fs retries it for \
                   minutes (MinIO answers 404)";
        return Ok((figures, Some(anyhow::anyhow!(why))));
    }
    let library = || -> Result<Figures> {
        let mounted = systems::mount(system, &data.library, data, servers, &options.binary)?;
        let mut figures = Figures::from([(Metric::MountLibrary, mounted.mount_secs * 1e3)]);
        let tree = probe::tree_figures(&mounted.mount_point, data.tracks);
        figures.extend(tree.with_context(|| format!("{} on the library; its log:\n{}", system.name(), mounted.log()))?);
        mounted.stop()?;
        Ok(figures)
    };
    match library() {
        Ok(tree) => figures.extend(tree),
        Err(err) if matches!(system, System::MusicFs(_)) => return Err(err),
        Err(err) => return Ok((figures, Some(err))),
    }
    Ok((figures, None))
}

/// A one-line summary of a run's main figures, for progress output.
fn summary(figures: &Figures) -> String {
    let get = |m: Metric| figures.get(&m).copied().unwrap_or(f64::NAN);
    format!(
        "cold {:.3} GB/s, cached {:.3} GB/s, warm {:.3} GB/s, first byte {:.1} ms, random p50/p99 {:.2}/{:.1} ms, \
         find {:.2} s",
        get(Metric::Cold),
        get(Metric::Cached),
        get(Metric::Warm),
        get(Metric::FirstByte),
        get(Metric::RandomP50),
        get(Metric::RandomP99),
        get(Metric::Find)
    )
}

fn sftp_title(servers: &Servers) -> String {
    match &servers.sshd {
        Ok(sshd) => format!("SFTP origin (one OpenSSH sshd on 127.0.0.1:{})", sshd.port()),
        Err(_) => "SFTP origin".into(),
    }
}

/// Seen with `find -type d` on a MusicFS mount of the 20 000-track library: 7 501 directories, where the origin
/// has 5.
const TAG_TREE: &str = "MusicFS shows the library by its tags: a directory per artist and album (7 501 for the \
    default 20 000 tracks), where the origin, and the peers that mirror it, have 5, so the `find` and `ls -lR` \
    rows time walks of differently shaped trees.";

/// Measured here (strace of the daemon, curl): s3s-fs answers without TCP_NODELAY, so on a connection that
/// is reused the last segment of each response waits for the client's delayed ACK.
const S3S_FS_NAGLE: &str = "**s3s-fs** writes its responses without TCP_NODELAY: on a reused connection the \
    last segment of each response waits for the client's delayed ACK, about 40 ms (strace of the daemon: the \
    body stops for 43 ms mid-response; curl on a fresh connection gets a 64 KiB range in 2 ms). Every ranged \
    GET pays it, so these S3 figures favour clients that make few, long requests (rclone streams one GET per \
    file). MinIO and AWS S3 set TCP_NODELAY. s3s-fs also hashes an object it did not receive by PUT on \
    every GET and HEAD (0.7 s for 256 MiB); here every object is uploaded by PUT, so it does not.";

fn s3_title(servers: &Servers) -> String {
    match &servers.s3 {
        Ok(s3) => format!("S3 origin (one {:?} server on 127.0.0.1:{})", s3.backend(), s3.port()),
        Err(_) => "S3 origin".into(),
    }
}
