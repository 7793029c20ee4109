//! Shared test helpers for MusicFS: code that tests, benchmarks and `cargo xtask`
//! use to build the situations MusicFS must cope with.
//!
//! * [`faulty_origin`] and [`faulty_cas`] inject origin and disk faults into the real read path.
//! * [`assertions`] bound time and check error kinds.
//! * [`coverage`] reads the failure-mode catalogue, the tests' `Proves` lines and the failpoints.
//! * [`fixtures`] serve an in-memory library through the real filesystem logic, in-process.
//! * [`daemon`] runs the real `musicfs` binary on a real FUSE mount and always cleans up.
//! * [`sample`] writes real, playable, tagged sample music libraries, including
//!   files with hostile tags and names, so tests can check the tag-built tree
//!   against what the generator says it wrote.
//! * [`servers`] starts real servers for the network layer (L3) on free loopback ports: OpenSSH `sshd`
//!   (SFTP), an S3 server (MinIO or s3s-fs) and Toxiproxy (or the in-process toxiproxy-lite).
//!
//! This crate is for tests and tooling only (`publish = false`); nothing in the
//! shipped binaries depends on it.

// Test support: a panic here is a failed test, so unwrap and expect are fine.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod assertions;
pub mod coverage;
pub mod daemon;
pub mod faulty_cas;
pub mod faulty_origin;
pub mod fdstore;
pub mod files;
pub mod fixtures;
pub mod sample;
pub mod servers;
