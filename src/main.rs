//! `musicfs`: the command line. Thin on purpose: it parses arguments and calls the libraries — the config
//! from `musicfs_core::overrides`, the daemon from `musicfs_daemon`, the control socket through
//! `musicfs_daemon::control::Client` — and turns their answers into output and an exit code.

use clap::{Parser, Subcommand};
use musicfs_core::overrides::{self, MountOptions};
use musicfs_core::{ByteSize, Seconds};
use musicfs_daemon::control::{self, Client, ControlError};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "musicfs", version, about = "A read-only FUSE filesystem that shows a music library by its tags")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Mount the library and serve it in the foreground until SIGTERM/SIGINT.
    Mount(MountArgs),
    /// Show the running daemon's state: library state, tracks, cache use, origins, FUSE ops, fds, memory.
    Status {
        #[command(flatten)]
        target: CacheArgs,
        /// Print the raw JSON.
        #[arg(long)]
        json: bool,
    },
    /// Ask the running daemon for an ordered shutdown and wait until it has exited (systemd's ExecStop).
    Shutdown {
        #[command(flatten)]
        target: CacheArgs,
        /// How long in-flight reads may take to finish, e.g. 5s.
        #[arg(long, value_parser = Seconds::parse)]
        drain_timeout: Option<Seconds>,
        /// Restart without unmounting: the daemon exits for its service manager to start it again, which
        /// takes the FUSE connection back; readers only wait (2.11). Needs the unit's fd store.
        #[arg(long)]
        restart: bool,
        /// As ExecStop= of this systemd unit (`--unit %n`): restart as with --restart when systemd is
        /// restarting the unit (`systemctl restart`), stop in order otherwise.
        #[arg(long, value_name = "NAME")]
        unit: Option<String>,
    },
    /// As ExecStopPost= of a systemd unit (`--unit %n`), or as the unit its OnFailure= starts: unmount
    /// MOUNT_POINT unless systemd is about to start the daemon again, which resumes the mount (2.11); reads
    /// $SERVICE_RESULT and $EXIT_STATUS.
    AfterStop {
        #[arg(long, value_name = "NAME")]
        unit: String,
        /// Run by the unit's OnFailure= (musicfs-unmount.service): unmount only if the unit stays failed
        /// with nothing queued to start it again (the start limit).
        #[arg(long)]
        on_failure: bool,
        mount_point: PathBuf,
    },
    /// As ExecStartPre=+ of a systemd unit whose daemon runs unprivileged: mount the library's FUSE
    /// connection (as root, in the host's mount namespace) and hand it to the daemon through the unit's fd
    /// store; on a restart, when the store still holds the live connection, leave it alone (2.11).
    MountHelper {
        #[command(flatten)]
        mount: MountArgs,
        /// The unit the daemon runs in (`%n`), whose fd store is asked.
        #[arg(long, value_name = "NAME")]
        unit: String,
        /// The daemon's user (the unit's User=), a name, UID or UID:GID: the owner of the mount.
        #[arg(long, value_name = "USER")]
        owner: String,
    },
    /// As ExecStartPost=+ of that unit: raise the kernel's readahead of the mount at MOUNT_POINT, which the
    /// unprivileged daemon cannot (FUSE starts at 128 KiB per read request).
    AfterStart { mount_point: PathBuf },
    /// Print the running daemon's metrics in Prometheus text format.
    Metrics {
        #[command(flatten)]
        target: CacheArgs,
    },
    /// Compare the origins with the library now (instead of waiting for sync_interval) and print what changed.
    Sync {
        #[command(flatten)]
        target: CacheArgs,
    },
    /// Follow the running daemon's events (library changes, origins going down and up), one JSON line each.
    Events {
        #[command(flatten)]
        target: CacheArgs,
    },
    /// Find tracks by their tags; prints their paths in the mount, best match first. `musicfs search rebuild`
    /// rebuilds the search index from the database instead (through the daemon, or offline if none runs).
    Search {
        #[command(flatten)]
        target: CacheArgs,
        /// Most paths to print.
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// Print the raw JSON answer.
        #[arg(long)]
        json: bool,
        /// Words that must all match, in any tag; `artist:`, `album:`, `title:`, `year:` or `path:` before a
        /// word limits it to one (so `title:rebuild` searches for the word "rebuild").
        #[arg(required = true)]
        words: Vec<String>,
    },
    /// Offline cache maintenance (the daemon must not be running on this cache).
    Cache {
        #[command(subcommand)]
        op: CacheOp,
    },
}

#[derive(Subcommand)]
enum CacheOp {
    /// Re-hash every chunk; rotten ones are removed and refetched when next read.
    Verify(CacheArgs),
    /// Rebuild the chunk index from the chunk files, then verify every chunk.
    Repair(CacheArgs),
}

#[derive(clap::Args)]
struct CacheArgs {
    /// Config file naming the cache directory.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// The cache directory (instead of --config).
    #[arg(long, value_name = "DIR")]
    cache_dir: Option<PathBuf>,
}

#[derive(clap::Args)]
struct MountArgs {
    /// TOML config file; the flags below override its values.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// A local origin directory (repeat for several; replaces the config's origins).
    #[arg(long = "origin", value_name = "DIR")]
    origins: Vec<PathBuf>,
    /// Directory for the chunk cache, its index, the database and the lock file.
    #[arg(long, value_name = "DIR")]
    cache_dir: Option<PathBuf>,
    /// Cache size limit, e.g. 10GiB.
    #[arg(long, value_parser = ByteSize::parse)]
    max_size: Option<ByteSize>,
    /// Bound on one read, e.g. 30s.
    #[arg(long, value_parser = Seconds::parse)]
    read_timeout: Option<Seconds>,
    /// Let other users see the mount.
    #[arg(long)]
    allow_other: bool,
    /// Where to mount (overrides mount_point in the config).
    mount_point: Option<PathBuf>,
}

impl MountArgs {
    /// The config file's settings with these flags over them.
    fn config(self) -> Result<musicfs_core::Config, overrides::OverrideError> {
        overrides::mount_config(MountOptions {
            config_file: self.config,
            origins: self.origins,
            cache_dir: self.cache_dir,
            mount_point: self.mount_point,
            max_size: self.max_size,
            read_timeout: self.read_timeout,
            allow_other: self.allow_other,
        })
    }
}

/// What went wrong, printed as `musicfs: …`. A mount or cache command that cannot tell what to work on exits
/// 2, everything else 1.
#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error(transparent)]
    Usage(#[from] overrides::OverrideError),
    /// A command for a running daemon that cannot tell which one.
    #[error(transparent)]
    Target(overrides::OverrideError),
    #[error(transparent)]
    Control(#[from] ControlError),
    #[error(transparent)]
    Daemon(#[from] musicfs_daemon::DaemonError),
    #[error(transparent)]
    Failpoints(#[from] musicfs_core::failpoints::FailpointsError),
    #[error(transparent)]
    StillRunning(#[from] control::client::StillRunning),
    #[error(transparent)]
    Helper(#[from] musicfs_daemon::mount_helper::HelperError),
    #[error("6.2 the library database in {0} fails its integrity check; the next start moves it aside and rescans")]
    DamagedDatabase(PathBuf),
}

impl CacheArgs {
    fn target(self) -> Result<(PathBuf, ByteSize), overrides::OverrideError> {
        overrides::cache_target(self.cache_dir, self.config.as_deref())
    }

    fn client(self) -> Result<Client, Failure> {
        Ok(Client::for_cache(&self.target().map_err(Failure::Target)?.0))
    }
}

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Mount(args) => mount(args),
        Command::Status { target, json } => status(target, json),
        Command::Shutdown { target, drain_timeout, restart, unit } => shutdown(target, drain_timeout, restart, unit),
        Command::AfterStop { unit, on_failure, mount_point } => after_stop(&unit, &mount_point, on_failure),
        Command::MountHelper { mount, unit, owner } => mount_helper(mount, &unit, &owner),
        Command::AfterStart { mount_point } => {
            let raised = musicfs_daemon::mount_helper::after_start(&mount_point);
            println!(
                "readahead of {}: {}",
                mount_point.display(),
                if raised.is_some() { "raised" } else { "no FUSE mount" }
            );
            Ok(())
        }
        Command::Metrics { target } => metrics(target),
        Command::Sync { target } => target.client().and_then(|client| print_json(&client.sync()?)),
        Command::Events { target } => events(target),
        Command::Search { target, limit, json, words } => search(target, limit, json, words),
        Command::Cache { op: CacheOp::Verify(args) } => cache_op(args, false),
        Command::Cache { op: CacheOp::Repair(args) } => cache_op(args, true),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("musicfs: {e}");
            match e {
                Failure::Usage(_) | Failure::Failpoints(_) => ExitCode::from(2),
                _ => ExitCode::FAILURE,
            }
        }
    }
}

fn print_json(answer: &impl serde::Serialize) -> Result<(), Failure> {
    println!("{}", serde_json::to_string(answer).unwrap_or_default());
    Ok(())
}

fn mount(args: MountArgs) -> Result<(), Failure> {
    let config_file = args.config.clone();
    let config = args.config()?;
    musicfs_core::logging::init(&config.logging.level);
    musicfs_core::logging::install_panic_hook();
    let names = musicfs_core::failpoints::setup_from_env()?;
    if !names.is_empty() {
        eprintln!("musicfs: failpoints active: {}", names.join(", "));
    }
    Ok(musicfs_daemon::run(config, config_file)?)
}

fn status(target: CacheArgs, json: bool) -> Result<(), Failure> {
    let status = target.client()?.status()?;
    if json {
        return print_json(&status);
    }
    print!("{status}");
    Ok(())
}

fn shutdown(target: CacheArgs, drain: Option<Seconds>, restart: bool, unit: Option<String>) -> Result<(), Failure> {
    let drain = drain.map(|d| d.0);
    let client = target.client()?;
    let restart = restart
        || unit.is_some_and(|unit| musicfs_daemon::handover::unit_jobs(&unit).iter().any(|j| j.contains("restart")));
    let answer = if restart { client.restart()? } else { client.shutdown(drain)? };
    // Wait for the daemon to finish its ordered shutdown, so that ExecStop returns when it is done.
    let limit = drain.unwrap_or(musicfs_daemon::DRAIN_TIMEOUT) + control::client::SHUTDOWN_GRACE;
    control::client::wait_for_exit(answer.pid, limit)?;
    println!("musicfs {} {}", answer.pid, if restart { "left for a restart; the mount stays" } else { "stopped" });
    Ok(())
}

fn mount_helper(args: MountArgs, unit: &str, owner: &str) -> Result<(), Failure> {
    let config = args.config()?;
    musicfs_core::logging::init(&config.logging.level);
    let owner = musicfs_daemon::mount_helper::Owner::parse(owner)?;
    let outcome = musicfs_daemon::mount_helper::run(&config.mount_point, config.fuse.allow_other, owner, unit)?;
    println!("{}: {outcome:?}", config.mount_point.display());
    Ok(())
}

fn after_stop(unit: &str, mount_point: &std::path::Path, on_failure: bool) -> Result<(), Failure> {
    // The mount lives in the host's mount namespace (mount-helper); an unmount in the unit's own would not
    // reach it. Not root (no sandboxed unit): nothing to enter.
    let _ = musicfs_daemon::mount_helper::enter_host_mount_namespace();
    let jobs = musicfs_daemon::handover::unit_jobs(unit);
    let result = std::env::var("SERVICE_RESULT").ok();
    let exit_status = std::env::var("EXIT_STATUS").ok();
    let mounted = musicfs_daemon::mounts::mounted_fstype(mount_point).is_some_and(|t| t.starts_with("fuse"));
    let keep = if on_failure {
        // OnFailure= fires on every failed attempt, `systemctl restart`'s hand-over (exit 75) included: only
        // a unit that stays failed, with nothing queued to start it again, is down for good.
        let state = musicfs_daemon::handover::unit_property(unit, "ActiveState");
        state.as_deref() != Some("failed") || !jobs.is_empty()
    } else {
        musicfs_daemon::handover::keep_mount_after_stop(&jobs, result.as_deref(), exit_status.as_deref())
    };
    if keep {
        println!("2.11 {unit} starts again (jobs {jobs:?}, result {result:?}, exit {exit_status:?}): mount kept");
    } else if mounted {
        musicfs_daemon::mounts::lazy_unmount(mount_point);
        println!("{unit} stopped (jobs {jobs:?}, result {result:?}): {} unmounted", mount_point.display());
    }
    Ok(())
}

fn metrics(target: CacheArgs) -> Result<(), Failure> {
    print!("{}", target.client()?.metrics()?);
    Ok(())
}

fn events(target: CacheArgs) -> Result<(), Failure> {
    match target.client()?.follow_events(std::io::stdout()) {
        // The reader of our output went away (`musicfs events | head`): not a failure.
        Err(ControlError::Output(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

fn search(target: CacheArgs, limit: usize, json: bool, words: Vec<String>) -> Result<(), Failure> {
    let (cache_dir, _) = target.target().map_err(Failure::Target)?;
    let client = Client::for_cache(&cache_dir);
    if words == ["rebuild"] {
        let rebuilt = match client.search_rebuild() {
            // No daemon: rebuild offline (this takes the cache lock, so it never races one).
            Err(ControlError::NoDaemon { .. }) => {
                let documents = musicfs_daemon::search::rebuild_offline(&cache_dir)?;
                control::protocol::RebuildAnswer { documents, rebuilt: true }
            }
            answer => answer?,
        };
        return print_json(&rebuilt);
    }
    let answer = client.search(words.join(" "), limit)?;
    if json {
        return print_json(&answer);
    }
    for hit in &answer.hits {
        println!("{}", answer.mount_point.join(&hit.path).display());
    }
    Ok(())
}

fn cache_op(target: CacheArgs, rebuild: bool) -> Result<(), Failure> {
    let (cache_dir, max_size) = target.target()?;
    musicfs_core::logging::init("info");
    let check = musicfs_daemon::cache_maintenance(&cache_dir, max_size.0, rebuild)?;
    let report = &check.chunks;
    if report.rotten == 0 {
        println!("checked {} chunks ({}): all sound", report.checked, ByteSize(report.bytes));
    } else {
        println!(
            "checked {} chunks ({}): {} rotten chunks removed; they are fetched again from the origin when next read",
            report.checked,
            ByteSize(report.bytes),
            report.rotten
        );
    }
    let fixed = &check.index_repaired;
    if fixed.orphans_adopted + fixed.orphans_removed + fixed.dangling_dropped == 0 {
        println!("chunk index: matches the chunk files");
    } else {
        println!(
            "chunk index: repaired ({} chunk files adopted, {} removed, {} entries without a file dropped)",
            fixed.orphans_adopted, fixed.orphans_removed, fixed.dangling_dropped
        );
    }
    match check.database.as_deref() {
        None => println!("library database: none yet"),
        Some("ok") => println!("library database: integrity_check ok"),
        Some(problems) => {
            println!("library database: {}", problems.replace('\n', "; "));
            return Err(Failure::DamagedDatabase(cache_dir));
        }
    }
    Ok(())
}
