//! Failpoint tests, in-process (Layer 1): each makes one real effect boundary fail, checks the error path,
//! then removes the failpoint and checks the happy path. Built only with `--features failpoints`; nextest
//! runs each test in its own process, and `FailScenario` serialises them under plain `cargo test`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test crate: a panic is a failed test

mod cas;
mod meta;
mod origins;
