//! The relay: one running proxy moves bytes between each accepted client and a fresh connection to its
//! upstream, through the proxy's current toxics, with Toxiproxy's semantics.
//!
//! Each direction of a connection is a reader that stamps every chunk with the moment it arrived and a writer
//! that applies the toxics to it, so a latency toxic delays each chunk to its arrival plus the latency, as
//! Toxiproxy does, and chunks behind it wait no longer than that: a 100 ms latency adds 100 ms to a download,
//! not 100 ms per chunk (noxious 1.0.4, which this crate used to run on, slept per chunk in turn, which made
//! a latency toxic a bandwidth cap of 32 KiB per latency). Toxics change live: the writer reads the current
//! list for every chunk. Stopping a relay closes its listener and drops every connection's sockets before
//! [`Relay::stop`] returns.

use bytes::{Bytes, BytesMut};
use noxious::proxy::Toxics;
use noxious::toxic::{StreamDirection, Toxic, ToxicKind};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

/// What one read of a socket takes at most, as Toxiproxy's and noxious's buffers.
const CHUNK: usize = 32 << 10;
/// Chunks read ahead of a delayed writer (Toxiproxy's link buffers hold 1024 too).
const QUEUED_CHUNKS: usize = 1024;

/// A running proxy.
pub(crate) struct Relay {
    toxics: watch::Sender<Toxics>,
    stop: watch::Sender<bool>,
    accept: tokio::task::JoinHandle<()>,
}

impl Relay {
    /// Binds `listen` and starts accepting; every connection goes to `upstream` through `toxics`.
    pub(crate) async fn bind(listen: &str, upstream: String, toxics: Toxics) -> std::io::Result<(Relay, SocketAddr)> {
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let (toxics, toxics_rx) = watch::channel(toxics);
        let (stop, stop_rx) = watch::channel(false);
        let accept = tokio::spawn(accept(listener, upstream, toxics_rx, stop_rx));
        Ok((Relay { toxics, stop, accept }, addr))
    }

    /// Live connections see the new toxics from their next chunk on.
    pub(crate) fn set_toxics(&self, toxics: Toxics) {
        self.toxics.send_replace(toxics);
    }

    /// Closes the listener and cuts every connection; returns once their sockets are closed.
    pub(crate) async fn stop(self) {
        self.stop.send_replace(true);
        let _ = self.accept.await;
    }
}

async fn accept(
    listener: TcpListener,
    upstream: String,
    toxics: watch::Receiver<Toxics>,
    mut stop: watch::Receiver<bool>,
) {
    let mut connections = JoinSet::new();
    let mut seed = Instant::now().elapsed().as_nanos() as u64 ^ 0x9E37_79B9_7F4A_7C15;
    loop {
        tokio::select! {
            biased;
            _ = stop.wait_for(|stopped| *stopped) => break,
            accepted = listener.accept() => {
                let Ok((client, _)) = accepted else { continue };
                seed = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
                connections.spawn(connection(client, upstream.clone(), toxics.clone(), seed));
            }
            // Reap finished connections so the set does not grow without bound.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    // Aborting a connection's task drops its sockets: the client and the upstream both see the end.
    connections.shutdown().await;
}

/// How a direction ended: its input closed (the other direction may go on), or the connection must end.
enum End {
    Eof,
    Cut,
}

async fn connection(client: TcpStream, upstream: String, toxics: watch::Receiver<Toxics>, seed: u64) {
    let Ok(server) = TcpStream::connect(&upstream).await else { return };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let up = direction(client_read, server_write, toxics.clone(), StreamDirection::Upstream, seed);
    let down = direction(server_read, client_write, toxics, StreamDirection::Downstream, seed.rotate_left(17));
    tokio::pin!(up, down);
    // A cut in either direction ends both; an EOF leaves the other direction running until it ends too.
    tokio::select! {
        end = &mut up => if let End::Eof = end { down.await; },
        end = &mut down => if let End::Eof = end { up.await; },
    }
}

/// Moves one direction's bytes through its toxics until the input ends or a toxic (or an error) cuts it.
async fn direction(
    mut input: OwnedReadHalf,
    mut output: OwnedWriteHalf,
    mut toxics: watch::Receiver<Toxics>,
    which: StreamDirection,
    seed: u64,
) -> End {
    let (chunks, mut queued) = mpsc::channel::<Option<(Instant, Bytes)>>(QUEUED_CHUNKS);
    let reader = async move {
        loop {
            let mut buf = BytesMut::with_capacity(CHUNK);
            match input.read_buf(&mut buf).await {
                Ok(1..) => {
                    if chunks.send(Some((Instant::now(), buf.freeze()))).await.is_err() {
                        return;
                    }
                }
                _ => {
                    let _ = chunks.send(None).await;
                    return;
                }
            }
        }
    };
    let writer = async move {
        let mut dice = Dice { state: seed | 1, rolled: HashMap::new() };
        let mut held_since: Option<Instant> = None;
        let mut written = 0u64;
        loop {
            let active = dice.active(&toxics.borrow_and_update(), which);
            // A timeout toxic lets nothing through and closes the connection after its timeout (never, at 0).
            if let Some(timeout) = active.iter().find_map(|t| match t.kind {
                ToxicKind::Timeout { timeout } => Some(timeout),
                _ => None,
            }) {
                let since = *held_since.get_or_insert_with(Instant::now);
                let deadline = since + Duration::from_millis(timeout);
                tokio::select! {
                    chunk = queued.recv() => if !matches!(chunk, Some(Some(_))) { return End::Eof },
                    _ = toxics.changed() => {}
                    _ = tokio::time::sleep_until(deadline), if timeout > 0 => return End::Cut,
                }
                continue;
            }
            held_since = None;
            let chunk = tokio::select! {
                chunk = queued.recv() => chunk,
                _ = toxics.changed() => continue,
            };
            let Some(Some((arrived, data))) = chunk else {
                for t in &active {
                    if let ToxicKind::SlowClose { delay } = t.kind {
                        tokio::time::sleep(Duration::from_millis(delay)).await;
                    }
                }
                let _ = output.shutdown().await;
                return End::Eof;
            };
            match pass(&mut output, &active, arrived, data, &mut written, &mut dice).await {
                Ok(true) => {}
                Ok(false) | Err(_) => return End::Cut,
            }
        }
    };
    tokio::pin!(reader, writer);
    let mut reading = true;
    loop {
        tokio::select! {
            _ = &mut reader, if reading => reading = false,
            end = &mut writer => return end,
        }
    }
}

/// Writes one chunk through the toxics in order. `Ok(false)` when a toxic ends the connection (limit_data).
async fn pass(
    output: &mut OwnedWriteHalf,
    active: &[Toxic],
    arrived: Instant,
    mut data: Bytes,
    written: &mut u64,
    dice: &mut Dice,
) -> std::io::Result<bool> {
    let mut pieces: Option<(u64, u64, u64)> = None;
    let mut rate = 0u64;
    let mut limit: Option<u64> = None;
    for t in active {
        match t.kind {
            ToxicKind::Latency { latency, jitter } => {
                let spread = if jitter == 0 { 0 } else { dice.next() % (2 * jitter + 1) };
                let delay = (latency + spread).saturating_sub(jitter);
                tokio::time::sleep_until(arrived + Duration::from_millis(delay)).await;
            }
            ToxicKind::Bandwidth { rate: r } => rate = r,
            ToxicKind::Slicer { average_size, size_variation, delay } => {
                pieces = Some((average_size.max(1), size_variation, delay));
            }
            ToxicKind::LimitData { bytes } => limit = Some(bytes),
            _ => {}
        }
    }
    let mut open = true;
    if let Some(limit) = limit {
        let room = limit.saturating_sub(*written);
        if (data.len() as u64) >= room {
            data.truncate(room as usize);
            open = false;
        }
    }
    // A bandwidth toxic sends at most 100 ms worth at a time, each piece after the time its size takes.
    let piece_max = match (pieces, rate) {
        (Some((average, variation, _)), _) => {
            let spread = if variation == 0 { 0 } else { dice.next() % (2 * variation + 1) };
            (average + spread).saturating_sub(variation).max(1) as usize
        }
        (None, 0) => data.len().max(1),
        (None, rate) => (rate * 100).max(1) as usize,
    };
    while !data.is_empty() {
        let piece = data.split_to(piece_max.min(data.len()));
        if rate > 0 {
            tokio::time::sleep(Duration::from_secs_f64(piece.len() as f64 / (rate as f64 * 1000.0))).await;
        }
        output.write_all(&piece).await?;
        *written += piece.len() as u64;
        if let Some((_, _, delay_us)) = pieces
            && !data.is_empty()
        {
            tokio::time::sleep(Duration::from_micros(delay_us)).await;
        }
    }
    Ok(open)
}

/// Toxicity: whether a toxic acts on this connection is decided once, the first time the connection sees it.
struct Dice {
    state: u64,
    rolled: HashMap<String, bool>,
}

impl Dice {
    fn next(&mut self) -> u64 {
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        self.state
    }

    fn active(&mut self, toxics: &Toxics, which: StreamDirection) -> Vec<Toxic> {
        let list = match which {
            StreamDirection::Upstream => &toxics.upstream,
            StreamDirection::Downstream => &toxics.downstream,
        };
        let mut active = Vec::with_capacity(list.len());
        for t in list {
            let roll = (self.next() >> 11) as f64 / (1u64 << 53) as f64;
            let on = *self.rolled.entry(t.name.clone()).or_insert(roll < t.toxicity as f64);
            if on {
                active.push(t.clone());
            }
        }
        active
    }
}
