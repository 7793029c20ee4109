//! The resilience suite, Layers 1 and 2. In-process modules drive the real filesystem logic, reader and
//! stores with fault wrappers (`FaultyOrigin`, `FaultyCasStore`) and resource limits; process modules run
//! the real `musicfs` binary on a real FUSE mount and crash it, signal it and restart it.
//! Every test names the failure modes it proves (`/// Proves L<n>: <ids>`, see docs/failure-modes.toml).

mod cache_faults;
mod crash_recovery;
mod origin_faults;
mod resource_limits;
