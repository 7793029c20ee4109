//! Shared foundations of MusicFS: the configuration file, byte-size and duration values, logging and the
//! panic hook, the task supervisor and the event bus.
//!
//! Everything here is plain data and has no I/O beyond reading the config file, so every other crate
//! can depend on it.

pub mod aside;
pub mod config;
pub mod events;
pub mod failpoints;
pub mod logging;
pub mod mountinfo;
pub mod overrides;
pub mod supervisor;
pub mod sync_util;
pub mod units;

pub use config::{
    CacheConfig, Config, ConfigError, EventsConfig, FuseConfig, HealthConfig, Invalid, LibraryConfig, LoggingConfig,
    Origin, OriginKind, OriginSpec, Secret,
};
pub use units::{ByteSize, Seconds};
