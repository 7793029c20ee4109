//! Logging setup: `tracing` to stderr (journald captures it under systemd); `RUST_LOG` overrides the config.

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber once; later calls are ignored (tests may call it repeatedly).
pub fn init(level: &str) {
    // object_store logs every retried request at info; the reader summarises origin failures itself (4.2.3).
    let level = if level.contains("object_store") { level.to_owned() } else { format!("{level},object_store=warn") };
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&level))
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

/// Panics go to the log (2.2): thread, location, payload and a backtrace, through `tracing`, so they reach
/// the journal like every other line. What happens next is up to the code that caught the panic.
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let thread = std::thread::current();
        let payload = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "(non-string payload)".into());
        let location = info.location().map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column())).unwrap_or_default();
        let backtrace = std::backtrace::Backtrace::force_capture();
        tracing::error!(thread = thread.name().unwrap_or("unnamed"), location, payload, %backtrace, "2.2 panic");
    }));
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<u8>>>);

    impl Write for Capture {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// Proves L1: 2.2
    #[test]
    fn the_panic_hook_logs_thread_location_payload_and_backtrace() {
        let capture = Capture::default();
        let writer = capture.clone();
        tracing_subscriber::fmt().with_writer(move || writer.clone()).with_ansi(false).init();
        super::install_panic_hook();
        let joined =
            std::thread::Builder::new().name("musicfs-worker".into()).spawn(|| panic!("disk on fire")).unwrap().join();
        assert!(joined.is_err());
        let log = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
        for needle in ["2.2 panic", "musicfs-worker", "disk on fire", "logging.rs", "backtrace"] {
            assert!(log.contains(needle), "{needle} missing from:\n{log}");
        }
    }
}
