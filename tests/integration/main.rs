//! The network layer (L3) of the resilience suite: real servers, started by the tests themselves on free
//! loopback ports (OpenSSH `sshd` for SFTP, an S3 server, Toxiproxy), never assumed running. A missing tool
//! fails the test with the command that installs it; CI installs them all:
//!
//! ```text
//! apt-get install -y openssh-server openssh-client libssl-dev pkg-config
//! cargo install s3s-fs --version 0.14.1 --locked --features binary   # unless MinIO is on PATH
//! ```
//!
//! Most of these tests prove the launchers in `musicfs_test_utils::servers` give working servers, so the origin
//! tests built on them can trust their tools. `remote` is the fixture the origin tests share: a library on
//! a real server of either kind ([`remote::Remote`]), its `[[origins]]` table and Toxiproxy in front of it;
//! `remote_origins` writes each behaviour every remote has once and runs it on S3 and on SFTP.
//! `backup_origin` reads an S3 origin's tracks from a local backup while the S3 connection is cut, mid-read
//! too (4.2.6, N2); `s3_origin` runs the real `musicfs` binary on an S3 bucket through Toxiproxy (behind a
//! relay that counts the daemon's connections and requests and can drop them mid-read); `sftp_origin` tests
//! the SFTP origin and its session pool against a real `sshd` and runs the binary on a library served over
//! SFTP through Toxiproxy while the connection is cut mid-read. Every test starts its own servers, so they run in parallel; timings are
//! asserted with generous lower bounds (a 300 ms latency toxic must add 300 ms) and upper bounds of seconds
//! only. `docker-compose.yml` here is for people who want the same servers in Docker; the tests do not use
//! it.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test crate: a panic is a failed test

mod backup_origin;
mod mounted;
mod remote;
mod remote_origins;
mod s3;
mod s3_origin;
mod secrets;
mod sftp_origin;
mod sshd;
mod support;
mod through_proxy;
mod toxiproxy;
