//! The resilience suite, Layer 1: the real filesystem logic, reader and stores, in-process, with fault
//! wrappers (`FaultyOrigin`, `FaultyCasStore`) and resource limits. (Layer 2, the real binary on a real
//! mount, is `tests/process/`.) Every test names the failure modes it proves (`/// Proves L1: <ids>`,
//! see docs/failure-modes.toml).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test crate: a panic is a failed test

mod cache_disk;
mod cache_faults;
mod origin_faults;
mod permissions;
mod remote_pools;
mod resource_limits;
