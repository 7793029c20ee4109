//! Logging setup: `tracing` to stderr (journald captures it under systemd); `RUST_LOG` overrides the config.

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber once; later calls are ignored (tests may call it repeatedly).
pub fn init(level: &str) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let under_systemd = std::env::var_os("JOURNAL_STREAM").is_some();
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(ansi);
    // journald stamps every line itself.
    let _ = if under_systemd { builder.without_time().try_init() } else { builder.try_init() };
}
