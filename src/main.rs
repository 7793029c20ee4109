//! `musicfs`: the command line. Thin on purpose: parse arguments, build the config, hand over to the daemon.

use clap::{Parser, Subcommand};
use musicfs_core::config::{CacheConfig, FuseConfig, HealthConfig, LibraryConfig, LoggingConfig, OriginConfig};
use musicfs_core::{ByteSize, Config, OriginKind, Seconds};
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

fn cache_op(args: CacheArgs, rebuild: bool) -> ExitCode {
    let (cache_dir, max_size) = match (args.cache_dir, args.config) {
        (Some(dir), _) => (dir, CacheConfig::default().max_size),
        (None, Some(file)) => match Config::load(&file) {
            Ok(config) => (config.cache_dir, config.cache.max_size),
            Err(e) => {
                eprintln!("musicfs: {e}");
                return ExitCode::from(2);
            }
        },
        (None, None) => {
            eprintln!("musicfs: give --cache-dir DIR or --config FILE");
            return ExitCode::from(2);
        }
    };
    musicfs_core::logging::init("info");
    match musicfs_daemon::cache_maintenance(&cache_dir, max_size.0, rebuild) {
        Ok(report) if report.rotten == 0 => {
            println!("checked {} chunks ({}): all sound", report.checked, ByteSize(report.bytes));
            ExitCode::SUCCESS
        }
        Ok(report) => {
            println!(
                "checked {} chunks ({}): {} rotten chunks removed; they are fetched again from the origin when next read",
                report.checked,
                ByteSize(report.bytes),
                report.rotten
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("musicfs: {e}");
            ExitCode::FAILURE
        }
    }
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

fn absolute(path: PathBuf) -> PathBuf {
    std::path::absolute(&path).unwrap_or(path)
}

fn build_config(args: MountArgs) -> Result<Config, String> {
    let mut config = match &args.config {
        Some(file) => Config::load(file).map_err(|e| e.to_string())?,
        None => {
            let missing = |what: &str| format!("missing {what} (or give --config FILE)");
            Config {
                mount_point: args.mount_point.clone().ok_or_else(|| missing("MOUNT_POINT"))?,
                cache_dir: args.cache_dir.clone().ok_or_else(|| missing("--cache-dir DIR"))?,
                origins: Vec::new(),
                cache: CacheConfig::default(),
                library: LibraryConfig::default(),
                health: HealthConfig::default(),
                fuse: FuseConfig::default(),
                logging: LoggingConfig::default(),
            }
        }
    };
    if args.config.is_none() && args.origins.is_empty() {
        return Err("missing --origin DIR (or give --config FILE)".into());
    }
    if !args.origins.is_empty() {
        config.origins = args
            .origins
            .into_iter()
            .enumerate()
            .map(|(i, path)| OriginConfig {
                id: if i == 0 { "local".into() } else { format!("local{}", i + 1) },
                kind: OriginKind::Local,
                priority: i as u32,
                path: absolute(path),
            })
            .collect();
    }
    if let Some(dir) = args.cache_dir {
        config.cache_dir = dir;
    }
    if let Some(mp) = args.mount_point {
        config.mount_point = mp;
    }
    config.cache_dir = absolute(config.cache_dir);
    config.mount_point = absolute(config.mount_point);
    if let Some(size) = args.max_size {
        config.cache.max_size = size;
    }
    if let Some(timeout) = args.read_timeout {
        config.fuse.read_timeout = timeout;
    }
    config.fuse.allow_other |= args.allow_other;
    let source = args.config.map_or_else(|| "command line".into(), |f| f.display().to_string());
    config.validate().map_err(|e| format!("config error: {source}: {e}"))?;
    Ok(config)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Cache { op: CacheOp::Verify(args) } => cache_op(args, false),
        Command::Cache { op: CacheOp::Repair(args) } => cache_op(args, true),
        Command::Mount(args) => {
            let config_file = args.config.clone();
            let config = match build_config(args) {
                Ok(config) => config,
                Err(message) => {
                    eprintln!("musicfs: {message}");
                    return ExitCode::from(2);
                }
            };
            musicfs_core::logging::init(&config.logging.level);
            musicfs_core::logging::install_panic_hook();
            match musicfs_core::failpoints::setup_from_env() {
                Ok(names) if !names.is_empty() => eprintln!("musicfs: failpoints active: {}", names.join(", ")),
                Ok(_) => {}
                Err(message) => {
                    eprintln!("musicfs: {message}");
                    return ExitCode::from(2);
                }
            }
            match musicfs_daemon::run(config, config_file) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("musicfs: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
