//! A counting TCP relay for tests that need to see, and cut, the connections a client makes: how many it
//! opened, how many requests it sent over them, which are open now. Used to prove connection pooling (3.2)
//! in-process (L1) and through the real binary (L3).

use musicfs_core::sync_util::lock_or_recover;
use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream as StdTcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// A TCP relay on a free loopback port in front of `upstream`, counting what passes through it: the
/// connections clients opened, the HTTP requests they sent (each request head ends with an empty line; the S3
/// client's GET, HEAD and LIST requests carry no body), the bytes sent back, and the connections open now.
/// [`Relay::cut`] drops every open connection and keeps listening, as a server or a middlebox dropping its
/// connections would. Stopped on drop.
pub struct Relay {
    pub addr: SocketAddr,
    shared: Arc<RelayShared>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

#[derive(Default)]
struct RelayShared {
    accepted: AtomicUsize,
    requests: AtomicUsize,
    bytes_down: AtomicU64,
    next_id: AtomicU64,
    /// Both sockets of every open connection (client side, upstream side), to cut them.
    open: Mutex<HashMap<u64, (StdTcpStream, StdTcpStream)>>,
}

impl RelayShared {
    fn open(&self) -> std::sync::MutexGuard<'_, HashMap<u64, (StdTcpStream, StdTcpStream)>> {
        lock_or_recover(&self.open)
    }

    /// Shuts both sockets of connection `id` down (if still open) and forgets it.
    fn close(&self, id: u64) -> bool {
        match self.open().remove(&id) {
            Some((client, upstream)) => {
                let _ = client.shutdown(Shutdown::Both);
                let _ = upstream.shutdown(Shutdown::Both);
                true
            }
            None => false,
        }
    }
}

impl Relay {
    pub fn start(upstream: SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(RelayShared::default());
        let stop = Arc::new(AtomicBool::new(false));
        let (stopping, state) = (stop.clone(), shared.clone());
        let thread = std::thread::spawn(move || {
            while !stopping.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((client, _)) => {
                        client.set_nonblocking(false).unwrap();
                        state.accepted.fetch_add(1, Ordering::Relaxed);
                        // Refused or unreachable upstream: the client's connection is closed, as a proxy does.
                        if let Ok(upstream) = StdTcpStream::connect_timeout(&upstream, Duration::from_secs(2)) {
                            relay_connection(&state, client, upstream);
                        }
                    }
                    Err(err) if err.kind() == ErrorKind::WouldBlock => std::thread::sleep(Duration::from_millis(2)),
                    Err(err) => panic!("relay accept failed: {err}"),
                }
            }
            let ids: Vec<u64> = state.open().keys().copied().collect();
            for id in ids {
                state.close(id);
            }
        });
        Relay { addr, shared, stop, thread: Some(thread) }
    }

    /// Connections clients opened so far.
    pub fn connections(&self) -> usize {
        self.shared.accepted.load(Ordering::Relaxed)
    }

    /// HTTP requests clients sent so far.
    pub fn requests(&self) -> usize {
        self.shared.requests.load(Ordering::Relaxed)
    }

    /// Bytes sent back to clients so far.
    pub fn bytes_down(&self) -> u64 {
        self.shared.bytes_down.load(Ordering::Relaxed)
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.shared.open().len()
    }

    /// Drops every open connection (both ends see it closed); returns how many there were.
    pub fn cut(&self) -> usize {
        let ids: Vec<u64> = self.shared.open().keys().copied().collect();
        ids.into_iter().filter(|&id| self.shared.close(id)).count()
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Copies both ways between `client` and `upstream` on two threads, counting; when either side ends or
/// fails, the whole connection is closed.
fn relay_connection(state: &Arc<RelayShared>, client: StdTcpStream, upstream: StdTcpStream) {
    let id = state.next_id.fetch_add(1, Ordering::Relaxed);
    let (Ok(c), Ok(u)) = (client.try_clone(), upstream.try_clone()) else { return };
    state.open().insert(id, (c, u));
    let (Ok(mut client_in), Ok(mut upstream_out)) = (client.try_clone(), upstream.try_clone()) else {
        state.close(id);
        return;
    };
    let up = state.clone();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 << 10];
        // The last three bytes of the previous read, so a head's end split across two reads is still seen.
        let mut tail: Vec<u8> = Vec::new();
        while let Ok(n) = client_in.read(&mut buf) {
            if n == 0 || upstream_out.write_all(&buf[..n]).is_err() {
                break;
            }
            tail.extend_from_slice(&buf[..n]);
            let heads = tail.windows(4).filter(|w| *w == b"\r\n\r\n").count();
            up.requests.fetch_add(heads, Ordering::Relaxed);
            tail.drain(..tail.len().saturating_sub(3));
        }
        up.close(id);
    });
    let (mut upstream_in, mut client_out) = (upstream, client);
    let down = state.clone();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 << 10];
        while let Ok(n) = upstream_in.read(&mut buf) {
            if n == 0 || client_out.write_all(&buf[..n]).is_err() {
                break;
            }
            down.bytes_down.fetch_add(n as u64, Ordering::Relaxed);
        }
        down.close(id);
    });
}
