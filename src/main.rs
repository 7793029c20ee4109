//! `musicfs`: the command line. Thin on purpose: parse arguments, build the config, hand over to the daemon.

use clap::{Parser, Subcommand};
use musicfs_core::config::{
    CacheConfig, EventsConfig, FuseConfig, HealthConfig, LibraryConfig, LoggingConfig, OriginConfig,
};
use musicfs_core::{ByteSize, Config, Seconds};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

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
    },
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

/// The cache directory and size limit named by `--cache-dir` or `--config`.
fn target_cache(args: CacheArgs) -> Result<(PathBuf, ByteSize), String> {
    match (args.cache_dir, args.config) {
        (Some(dir), _) => Ok((dir, CacheConfig::default().max_size)),
        (None, Some(file)) => Config::load(&file).map(|c| (c.cache_dir, c.cache.max_size)).map_err(|e| e.to_string()),
        (None, None) => Err("give --cache-dir DIR or --config FILE".into()),
    }
}

/// How long `status`, `metrics` and `shutdown` wait for the daemon's answer; a sync of a large library may
/// take much longer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);
const SYNC_TIMEOUT: Duration = Duration::from_secs(3600);

fn control(args: CacheArgs, command: &str, timeout: Duration) -> Result<String, String> {
    let (cache_dir, _) = target_cache(args)?;
    let socket = musicfs_daemon::control::socket_path(&cache_dir);
    musicfs_daemon::control::request(&socket, command, timeout)
        .map_err(|e| format!("no running daemon answers on {} ({e})", socket.display()))
}

/// Prints a one-shot answer, or the error; an `{"error": …}` answer fails too.
fn print_answer(answer: Result<String, String>) -> ExitCode {
    match answer {
        Ok(text) if text.starts_with("{\"error\"") => {
            eprint!("musicfs: {text}");
            ExitCode::FAILURE
        }
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("musicfs: {e}");
            ExitCode::FAILURE
        }
    }
}

fn search(args: CacheArgs, limit: usize, json: bool, words: Vec<String>) -> ExitCode {
    let (cache_dir, _) = match target_cache(args) {
        Ok(target) => target,
        Err(e) => {
            eprintln!("musicfs: {e}");
            return ExitCode::FAILURE;
        }
    };
    let socket = musicfs_daemon::control::socket_path(&cache_dir);
    if words == ["rebuild"] {
        let answer = match musicfs_daemon::control::request(&socket, r#"{"cmd":"search_rebuild"}"#, SYNC_TIMEOUT) {
            Ok(answer) => answer,
            // No daemon: rebuild offline (this takes the cache lock, so it never races one).
            Err(_) => match musicfs_daemon::search::rebuild_offline(&cache_dir) {
                Ok(documents) => format!("{{\"rebuilt\":true,\"documents\":{documents}}}"),
                Err(e) => {
                    eprintln!("musicfs: {e}");
                    return ExitCode::FAILURE;
                }
            },
        };
        return print_answer(Ok(answer));
    }
    let command = serde_json::json!({ "cmd": "search", "query": words.join(" "), "limit": limit }).to_string();
    let answer = musicfs_daemon::control::request(&socket, &command, ANSWER_TIMEOUT)
        .map_err(|e| format!("no running daemon answers on {} ({e})", socket.display()));
    match answer {
        Ok(text) if !json && !text.starts_with("{\"error\"") => {
            let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
            let mount_point = PathBuf::from(v["mount_point"].as_str().unwrap_or(""));
            for hit in v["hits"].as_array().into_iter().flatten() {
                println!("{}", mount_point.join(hit["path"].as_str().unwrap_or("")).display());
            }
            ExitCode::SUCCESS
        }
        other => print_answer(other),
    }
}

fn events(args: CacheArgs) -> ExitCode {
    let socket = match target_cache(args) {
        Ok((cache_dir, _)) => musicfs_daemon::control::socket_path(&cache_dir),
        Err(e) => {
            eprintln!("musicfs: {e}");
            return ExitCode::FAILURE;
        }
    };
    match musicfs_daemon::control::follow(&socket, r#"{"cmd":"events"}"#, std::io::stdout()) {
        Ok(()) => ExitCode::SUCCESS,
        // The reader of our output went away (`musicfs events | head`): not a failure.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("musicfs: no running daemon streams events on {} ({e})", socket.display());
            ExitCode::FAILURE
        }
    }
}

fn status(args: CacheArgs, json: bool) -> ExitCode {
    let answer = match control(args, r#"{"cmd":"status"}"#, ANSWER_TIMEOUT) {
        Ok(answer) => answer,
        Err(e) => {
            eprintln!("musicfs: {e}");
            return ExitCode::FAILURE;
        }
    };
    if json {
        print!("{answer}");
        return ExitCode::SUCCESS;
    }
    let v: serde_json::Value = serde_json::from_str(&answer).unwrap_or_default();
    let bytes = |key: &str| ByteSize(v[key].as_u64().unwrap_or(0));
    println!("state:      {}  (pid {}, up {} s)", v["state"].as_str().unwrap_or("?"), v["pid"], v["uptime_secs"]);
    println!("mount:      {}  ({} tracks)", v["mount_point"].as_str().unwrap_or("?"), v["tracks"]);
    println!(
        "cache:      {} of {}  ({} chunks, hit ratio {:.2})",
        bytes("cache_bytes"),
        bytes("cache_max_bytes"),
        v["chunks"],
        v["cache_hit_ratio"].as_f64().unwrap_or(0.0)
    );
    if let Some(why) = v["cache_write_failure"].as_str() {
        println!("            NOT CACHING: {why}");
    }
    for o in v["origins"].as_array().into_iter().flatten() {
        let state = if o["healthy"].as_bool() == Some(true) {
            "up".to_owned()
        } else {
            format!("DOWN: {}", o["last_error"].as_str().unwrap_or(""))
        };
        println!("origin:     {}  {state}", o["id"].as_str().unwrap_or("?"));
    }
    if v["served_from_backup"].as_u64().is_some_and(|n| n > 0) {
        println!(
            "            {} tracks served from a backup origin, re-validated when their origin returns",
            v["served_from_backup"]
        );
    }
    let ops: Vec<String> = v["fuse_ops"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|op| format!("{} {} ({} errors)", op[0].as_str().unwrap_or("?"), op[1], op[2]))
        .collect();
    println!("fuse ops:   {}; {} reads in flight", ops.join(", "), v["reads_in_flight"]);
    println!(
        "resources:  {} of {} fds, {} resident ({} for the library tree)",
        v["open_fds"],
        v["fd_limit"],
        bytes("rss_bytes"),
        bytes("tree_bytes")
    );
    let tasks: Vec<String> = v["tasks"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| {
            let alive = if t["alive"].as_bool() == Some(true) { "alive" } else { "DEAD" };
            format!("{} {alive} ({} restarts)", t["name"].as_str().unwrap_or("?"), t["restarts"])
        })
        .collect();
    println!("tasks:      {}", tasks.join(", "));
    println!("search:     {}  ({} tracks indexed)", v["search"].as_str().unwrap_or("?"), v["search_documents"]);
    let e = &v["events"];
    let lost: Vec<String> = e["consumers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["lost"].as_u64().unwrap_or(0) > 0)
        .map(|c| format!("{} lost {}", c["consumer"].as_str().unwrap_or("?"), c["lost"]))
        .collect();
    println!(
        "events:     {} published (queue {} per consumer){}",
        e["published"],
        e["capacity"],
        if lost.is_empty() { String::new() } else { format!("; {}", lost.join(", ")) }
    );
    ExitCode::SUCCESS
}

fn shutdown(args: CacheArgs, drain: Option<Seconds>) -> ExitCode {
    let command = match drain {
        Some(d) => format!(r#"{{"cmd":"shutdown","drain_timeout_secs":{}}}"#, d.0.as_secs_f64()),
        None => r#"{"cmd":"shutdown"}"#.to_owned(),
    };
    let answer = match control(args, &command, ANSWER_TIMEOUT) {
        Ok(answer) => answer,
        Err(e) => {
            eprintln!("musicfs: {e}");
            return ExitCode::FAILURE;
        }
    };
    let pid = serde_json::from_str::<serde_json::Value>(&answer).ok().and_then(|v| v["pid"].as_u64());
    let Some(pid) = pid else {
        eprintln!("musicfs: unexpected answer: {answer}");
        return ExitCode::FAILURE;
    };
    // Wait for the daemon to finish its ordered shutdown, so that ExecStop returns when it is done.
    let limit = drain.map_or(std::time::Duration::from_secs(5), |d| d.0) + std::time::Duration::from_secs(30);
    let deadline = std::time::Instant::now() + limit;
    // Gone, or a zombie waiting for its parent to reap it: either way it has finished.
    let running = |pid: u64| {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|stat| stat.rsplit_once(')').is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')))
    };
    while running(pid) {
        if std::time::Instant::now() > deadline {
            eprintln!("musicfs: daemon {pid} still running after {limit:?}");
            return ExitCode::FAILURE;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    println!("musicfs {pid} stopped");
    ExitCode::SUCCESS
}

fn cache_op(args: CacheArgs, rebuild: bool) -> ExitCode {
    let (cache_dir, max_size) = match target_cache(args) {
        Ok(target) => target,
        Err(e) => {
            eprintln!("musicfs: {e}");
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
                events: EventsConfig::default(),
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
            .map(|(i, path)| {
                let id = if i == 0 { "local".into() } else { format!("local{}", i + 1) };
                OriginConfig::local(id, i as u32, absolute(path))
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
        Command::Status { target, json } => status(target, json),
        Command::Shutdown { target, drain_timeout } => shutdown(target, drain_timeout),
        Command::Metrics { target } => print_answer(control(target, r#"{"cmd":"metrics"}"#, ANSWER_TIMEOUT)),
        Command::Sync { target } => print_answer(control(target, r#"{"cmd":"sync"}"#, SYNC_TIMEOUT)),
        Command::Events { target } => events(target),
        Command::Search { target, limit, json, words } => search(target, limit, json, words),
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
