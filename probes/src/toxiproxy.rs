//! The probe's Toxiproxy client: a few calls of its HTTP API (`toxiproxy-server`, or `toxiproxy-lite` in the
//! nspawn machine) over a plain HTTP/1.1 connection, so the probe needs no HTTP library.

use anyhow::{Context, Result, ensure};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// The API's address when `TOXIPROXY_API` is not set: the proxy on the machine under test (nspawn).
pub const DEFAULT_API: &str = "127.0.0.1:8474";

/// The API's address: `TOXIPROXY_API` (`host:port`, e.g. `proxy:8474` when the proxy is a node of its own
/// in the VM test), else [`DEFAULT_API`].
pub fn api() -> String {
    api_from(std::env::var("TOXIPROXY_API").ok())
}

fn api_from(var: Option<String>) -> String {
    let var = var.map(|v| v.trim().trim_start_matches("http://").trim_end_matches('/').to_owned());
    var.filter(|v| !v.is_empty()).unwrap_or_else(|| DEFAULT_API.to_owned())
}

fn call(method: &str, path: &str, body: &str) -> Result<String> {
    let api = api();
    let mut stream =
        TcpStream::connect(api.as_str()).with_context(|| format!("connecting to the Toxiproxy API at {api}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {api}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    let status: u16 = answer.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    ensure!((200..300).contains(&status), "Toxiproxy {method} {path} answered: {answer}");
    Ok(answer.split_once("\r\n\r\n").map_or(String::new(), |(_, body)| body.to_owned()))
}

/// Enables or disables a proxy: disabled, it refuses connections and cuts the live ones.
pub fn set_enabled(proxy: &str, enabled: bool) -> Result<()> {
    call("POST", &format!("/proxies/{proxy}"), &format!("{{\"enabled\":{enabled}}}")).map(|_| ())
}

/// Adds a latency toxic (milliseconds, downstream) to a proxy.
pub fn add_latency(proxy: &str, name: &str, millis: u64) -> Result<()> {
    let body = format!(
        "{{\"name\":\"{name}\",\"type\":\"latency\",\"stream\":\"downstream\",\"toxicity\":1.0,\"attributes\":{{\"latency\":{millis},\"jitter\":0}}}}"
    );
    call("POST", &format!("/proxies/{proxy}/toxics"), &body).map(|_| ())
}

/// Every proxy enabled, every toxic gone.
pub fn reset() -> Result<()> {
    call("POST", "/reset", "").map(|_| ())
}

/// Adds a bandwidth toxic (KB/s, downstream) to a proxy, so a read takes long enough to be cut mid-way.
pub fn add_bandwidth(proxy: &str, name: &str, rate_kb: u64) -> Result<()> {
    let body = format!(
        "{{\"name\":\"{name}\",\"type\":\"bandwidth\",\"stream\":\"downstream\",\"toxicity\":1.0,\"attributes\":{{\"rate\":{rate_kb}}}}}"
    );
    call("POST", &format!("/proxies/{proxy}/toxics"), &body).map(|_| ())
}

/// The proxy as the API describes it (enabled, toxics), for error messages.
pub fn describe(proxy: &str) -> String {
    call("GET", &format!("/proxies/{proxy}"), "").unwrap_or_else(|e| format!("{e:#}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_api_address_comes_from_the_environment_or_defaults_to_loopback() {
        assert_eq!(api_from(None), DEFAULT_API);
        assert_eq!(api_from(Some(String::new())), DEFAULT_API);
        assert_eq!(api_from(Some("proxy:8474".into())), "proxy:8474");
        assert_eq!(api_from(Some("http://proxy:8474/".into())), "proxy:8474");
    }
}
