//! Opening one session: DNS (on a helper thread, so it is bounded too), TCP, the SSH handshake, the host
//! key check, the public key login and the SFTP start, all within the connect timeout and the operation's
//! deadline. Failures say which step failed (4.2.5).

use super::host_keys::{cipher_preferences, hardware_aes, host_key_preferences};
use super::pool::{Conn, Pool};
use super::{HostKeyCheck, LIBSSH2_ERROR_TIMEOUT, known_hosts, sha256_fingerprint};
use crate::OriginError;
use ssh2::{ErrorCode, MethodType, Session};
use std::cell::{Cell, RefCell};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::atomic::Ordering;
use std::time::Instant;

impl Pool {
    /// Opens and logs in one session, within the connect timeout and `deadline`.
    pub(super) fn connect(&self, deadline: Instant) -> Result<Conn, OriginError> {
        let s = &self.settings;
        let started = Instant::now();
        let deadline = deadline.min(started + s.connect_timeout);
        let timed_out = || OriginError::Timeout(s.connect_timeout.min(s.timeout));
        let unavailable = |what: String| OriginError::Unavailable(format!("SFTP origin `{}`: {what}", self.id));
        if let Err(e) = std::fs::File::open(&s.private_key_file) {
            return Err(unavailable(format!("cannot read private_key_file `{}`: {e}", s.private_key_file.display())));
        }
        let addrs = resolve(&s.host, s.port, deadline)?;
        let tcp = connect_tcp(&addrs, deadline).map_err(|e| match e.kind() {
            std::io::ErrorKind::TimedOut => timed_out(),
            std::io::ErrorKind::ConnectionRefused => {
                unavailable(format!("cannot connect to {}:{}: connection refused", s.host, s.port))
            }
            _ => unavailable(format!("cannot connect to {}:{}: {e}", s.host, s.port)),
        })?;
        let _ = tcp.set_nodelay(true);
        let session_socket = tcp.try_clone().map_err(OriginError::Io)?;
        let fail = |e: OriginError| {
            let _ = tcp.shutdown(Shutdown::Both);
            e
        };
        let mut session = Session::new().map_err(|e| fail(unavailable(format!("cannot start libssh2: {e}"))))?;
        session.set_tcp_stream(session_socket);
        // A known_hosts file may list the host under several key types: ask the server for those first.
        let known =
            match &s.host_key {
                HostKeyCheck::KnownHosts(file) => Some(std::fs::read_to_string(file).map_err(|e| {
                    fail(unavailable(format!("cannot read known_hosts_file `{}`: {e}", file.display())))
                })?),
                HostKeyCheck::Fingerprint(_) => None,
            };
        if let Some(text) = &known {
            let types = known_hosts::key_types_for(text, &s.host, s.port);
            if !types.is_empty()
                && let Ok(supported) = session.supported_algs(MethodType::HostKey)
            {
                let prefs = host_key_preferences(&types, &supported);
                if let Err(e) = session.method_pref(MethodType::HostKey, &prefs) {
                    tracing::debug!(origin = %self.id, error = %e, prefs, "cannot set host key preferences");
                }
            }
        }
        let hardware_aes = hardware_aes();
        for direction in [MethodType::CryptCs, MethodType::CryptSc] {
            if let Ok(supported) = session.supported_algs(direction) {
                let prefs = cipher_preferences(&supported, hardware_aes);
                if let Err(e) = session.method_pref(direction, &prefs) {
                    tracing::debug!(origin = %self.id, error = %e, prefs, "cannot set cipher preferences");
                }
            }
        }
        let arm = |session: &Session| -> Result<(), OriginError> {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(timed_out());
            }
            session.set_timeout(left.as_millis().clamp(1, u32::MAX as u128) as u32);
            Ok(())
        };
        let ssh_error = |what: &str, e: ssh2::Error| match e.code() {
            ErrorCode::Session(LIBSSH2_ERROR_TIMEOUT) => timed_out(),
            _ => unavailable(format!("{what}: {e}")),
        };
        arm(&session).map_err(fail)?;
        session
            .handshake()
            .map_err(|e| fail(ssh_error(&format!("SSH handshake with {}:{} failed", s.host, s.port), e)))?;

        let cipher = session.methods(MethodType::CryptCs).map(str::to_owned);
        tracing::debug!(origin = %self.id, ?cipher, "SSH session negotiated");
        *musicfs_core::sync_util::lock_or_recover(&self.stats.cipher) = cipher;

        let (blob, _) =
            session.host_key().ok_or_else(|| fail(unavailable(format!("{}:{} sent no host key", s.host, s.port))))?;
        let fingerprint = sha256_fingerprint(blob);
        match &s.host_key {
            HostKeyCheck::Fingerprint(want) if *want == fingerprint => {}
            HostKeyCheck::Fingerprint(want) => {
                return Err(fail(unavailable(format!(
                    "host key of {}:{} is {fingerprint}, not the configured host_key_fingerprint {want}: refusing to \
                     connect (the server's key changed, or something is in between)",
                    s.host, s.port
                ))));
            }
            HostKeyCheck::KnownHosts(file) => {
                let text = known.as_deref().unwrap_or_default();
                let verdict = known_hosts::check(text, &s.host, s.port, blob);
                let name = known_hosts::lookup_name(&s.host, s.port);
                let problem = match verdict {
                    known_hosts::Verdict::Trusted => None,
                    known_hosts::Verdict::Unknown => Some(format!(
                        "host key of {name} ({fingerprint}) is not in known_hosts_file `{}`: unknown host keys are \
                         rejected; check the fingerprint with the server's owner, then add the key (for example \
                         `ssh-keyscan -p {} {} >> {}`)",
                        file.display(),
                        s.port,
                        s.host,
                        file.display()
                    )),
                    known_hosts::Verdict::Changed { line } => Some(format!(
                        "host key of {name} ({fingerprint}) does not match the one in known_hosts_file `{}` line \
                         {line}: refusing to connect (the server's key changed, or something is in between)",
                        file.display()
                    )),
                    known_hosts::Verdict::Revoked { line } => Some(format!(
                        "host key of {name} ({fingerprint}) is marked @revoked in known_hosts_file `{}` line {line}",
                        file.display()
                    )),
                };
                if let Some(problem) = problem {
                    return Err(fail(unavailable(problem)));
                }
            }
        }

        arm(&session).map_err(fail)?;
        session.userauth_pubkey_file(&s.user, None, &s.private_key_file, None).map_err(|e| {
            fail(ssh_error(
                &format!(
                    "public key login as `{}` at {}:{} with `{}` failed (is its public key in the user's \
                     authorized_keys?)",
                    s.user,
                    s.host,
                    s.port,
                    s.private_key_file.display()
                ),
                e,
            ))
        })?;
        if !session.authenticated() {
            return Err(fail(unavailable(format!("login as `{}` at {}:{} was not accepted", s.user, s.host, s.port))));
        }
        arm(&session).map_err(fail)?;
        let sftp = session
            .sftp()
            .map_err(|e| fail(ssh_error(&format!("cannot start the SFTP subsystem on {}:{}", s.host, s.port), e)))?;
        self.stats.connects.fetch_add(1, Ordering::Relaxed);
        tracing::info!(origin = %self.id, target = %self.target, took = ?started.elapsed(), "SFTP session opened");
        Ok(Conn {
            open_file: RefCell::new(None),
            session,
            sftp,
            tcp,
            last_used: Instant::now(),
            broken: Cell::new(false),
        })
    }
}

/// The addresses of `host`, looked up on a helper thread so the lookup is bounded by `deadline` too.
fn resolve(host: &str, port: u16, deadline: Instant) -> Result<Vec<SocketAddr>, OriginError> {
    if let Ok(ip) = host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    let name = host.to_owned();
    std::thread::Builder::new()
        .name("sftp-dns".into())
        .spawn(move || {
            let _ = tx.send((name.as_str(), port).to_socket_addrs().map(|a| a.collect::<Vec<_>>()));
        })
        .map_err(OriginError::Io)?;
    let left = deadline.saturating_duration_since(Instant::now());
    match rx.recv_timeout(left) {
        Ok(Ok(addrs)) if !addrs.is_empty() => Ok(addrs),
        Ok(Ok(_)) => Err(dns(host, format!("cannot resolve {host}: no addresses"))),
        Ok(Err(e)) => Err(dns(host, format!("cannot resolve {host}: {e}"))),
        Err(_) => Err(dns(host, format!("resolving {host} took longer than {left:?}"))),
    }
}

fn dns(host: &str, detail: String) -> OriginError {
    OriginError::Dns { host: host.to_owned(), detail }
}

/// A TCP connection to the first address that answers, bounded by `deadline`.
fn connect_tcp(addrs: &[SocketAddr], deadline: Instant) -> std::io::Result<TcpStream> {
    let mut last = std::io::Error::new(std::io::ErrorKind::TimedOut, "no time left to connect");
    for addr in addrs {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"));
        }
        match TcpStream::connect_timeout(addr, left) {
            Ok(stream) => return Ok(stream),
            Err(e) => last = e,
        }
    }
    Err(last)
}
