//! `toxiproxy-lite --host H --port P [--config FILE]`: serves the Toxiproxy HTTP API (see the library docs) until killed.

// Test tooling for the network layer: a panic fails the test that uses it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use anyhow::{Context, Result};
use clap::Parser;

/// A Toxiproxy-API-compatible server with Toxiproxy's toxics.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Address the API listens on.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port the API listens on (Toxiproxy's default is 8474; 0 picks a free one).
    #[arg(long, default_value_t = 8474)]
    port: u16,
    /// Proxies to create at start: a JSON array as `POST /populate` takes (Toxiproxy's `-config`).
    #[arg(long)]
    config: Option<std::path::PathBuf>,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let listener = tokio::net::TcpListener::bind((args.host.as_str(), args.port))
        .await
        .with_context(|| format!("binding {}:{}", args.host, args.port))?;
    let addr = listener.local_addr().context("listener address")?;
    eprintln!("toxiproxy-lite: API listening on http://{addr}");
    toxiproxy_lite::serve_populated(listener, args.config.as_deref()).await
}
