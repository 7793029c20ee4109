//! The proxy store: every proxy the API knows, running (a noxious proxy runner task bound to its listen
//! address) or disabled (no socket at all, so connections are refused, as with real Toxiproxy).
//!
//! Toxics live in the noxious shared state while a proxy runs (noxious updates it and re-links live
//! connections), and in the store while it is disabled, so they survive a disable/enable cycle.
//!
//! Stopping a proxy must cut every connection through it, and noxious's stop signal alone does not: its runner
//! picks between a ready accept and the signal at random, and links made for a connection accepted after the
//! signal subscribe to it too late; and the signal travels from task to task over broadcast channels of
//! capacity one, where a forwarder that lags (behind the second signal a link sends when its other direction
//! ends) gives up without passing it on. Either way a connection, a download under a bandwidth toxic say,
//! went on through a disabled proxy now and then. So stopping also shuts down, from outside, every socket of
//! this process still connected on the proxy's listen address ([`cut_accepted`]).

use crate::ApiError;
use bmrng::RequestSender;
use noxious::proxy::{ProxyConfig, ProxyRunner, ProxyWithToxics, Runner, Toxics};
use noxious::signal::{Close, Stop, Stopper};
use noxious::socket::TcpListener;
use noxious::state::SharedProxyInfo;
use noxious::toxic::{StreamDirection, Toxic, ToxicEvent, ToxicEventKind, ToxicEventResult};
use std::collections::BTreeMap;
use tokio::sync::Mutex;

/// A proxy the API knows about.
struct Entry {
    /// The current config; `listen` is the concrete address once the proxy has been bound.
    config: ProxyConfig,
    /// The toxics while the proxy is disabled (stale while it runs: the runner's state is the truth then).
    toxics: Toxics,
    running: Option<Running>,
}

/// Handles to a running noxious proxy task.
struct Running {
    info: SharedProxyInfo,
    stopper: Stopper,
    close: Close,
    events: RequestSender<ToxicEvent, ToxicEventResult>,
}

/// All proxies. One async mutex serialises API calls, which is plenty for a test server.
pub(crate) struct Store {
    proxies: Mutex<BTreeMap<String, Entry>>,
    stop: Stop,
    /// Stops every proxy (and its connections) when the store is dropped.
    stopper: Option<Stopper>,
}

impl Drop for Store {
    fn drop(&mut self) {
        if let Some(stopper) = self.stopper.take() {
            stopper.stop();
        }
    }
}

impl Entry {
    fn view(&self) -> ProxyWithToxics {
        let toxics = match &self.running {
            Some(running) => running.info.state.lock().toxics.clone(),
            None => self.toxics.clone(),
        };
        ProxyWithToxics { proxy: self.config.clone(), toxics: toxics.into_vec() }
    }

    fn current_toxics(&self) -> Toxics {
        match &self.running {
            Some(running) => running.info.state.lock().toxics.clone(),
            None => self.toxics.clone(),
        }
    }

    /// Binds the listen address and spawns the noxious runner. A listen port of 0 means "any free port":
    /// one is picked by binding `host:0` and releasing it (retried if someone takes it meanwhile).
    async fn start(&mut self, parent: &Stop) -> Result<(), ApiError> {
        let mut last_err = None;
        for _ in 0..5 {
            let mut config = self.config.clone();
            config.listen = concrete_listen(&config.listen)?;
            match ProxyRunner::initialize_proxy::<TcpListener>(config.clone(), self.toxics.clone()).await {
                Ok((listener, info)) => {
                    let (stop, stopper) = parent.fork();
                    let (close, closer) = Close::new();
                    let (events, receiver) = bmrng::channel(4);
                    tokio::spawn(ProxyRunner::run_proxy(listener, info.clone(), receiver, stop, closer));
                    self.config = config;
                    self.running = Some(Running { info, stopper, close, events });
                    return Ok(());
                }
                Err(err) if self.config.listen.ends_with(":0") => last_err = Some(err),
                Err(err) => return Err(ApiError::server(format!("listen {}: {err}", config.listen))),
            }
        }
        Err(ApiError::server(format!("listen {}: {last_err:?}", self.config.listen)))
    }

    /// Stops the runner: the listener closes and every connection through the proxy is cut.
    async fn stop(&mut self) {
        if let Some(running) = self.running.take() {
            self.toxics = running.info.state.lock().toxics.clone();
            running.stopper.stop();
            let _ = running.close.recv().await;
            // Dropping the links drops the sockets of connections that are still being torn down.
            running.info.state.lock().clients.clear();
            // The runner has closed its listener: whatever is still connected there slipped past the signal.
            cut_accepted(&self.config.listen);
        }
    }

    /// Applies a toxic change: through the runner (which re-links live connections) or to the stored list.
    async fn apply(&mut self, kind: ToxicEventKind) -> Result<(), ApiError> {
        if let (Some(_), ToxicEventKind::RemoveAllToxics) = (&self.running, &kind) {
            // noxious' RemoveAllToxics stops after clearing the upstream list: remove them one by one.
            for toxic in self.current_toxics().into_vec() {
                Box::pin(self.apply(ToxicEventKind::RemoveToxic(toxic.name))).await?;
            }
            return Ok(());
        }
        match &self.running {
            Some(running) => {
                let event = ToxicEvent::new(self.config.name.clone(), kind);
                match running.events.send_receive(event).await {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(err)) => Err(ApiError::not_found(format!("toxic update failed: {err}"))),
                    Err(err) => Err(ApiError::server(format!("proxy runner gone: {err}"))),
                }
            }
            None => apply_to_list(&mut self.toxics, kind),
        }
    }
}

/// Shuts down (both ways) every TCP connection of this process whose local address is `listen`: the client
/// connections a proxy listening there accepted. Called once its listener is closed, so nothing new can be
/// accepted there; noxious's tasks then see their sockets end. Linux only (it reads /proc/self); returns how
/// many connections it cut.
fn cut_accepted(listen: &str) -> usize {
    let Ok(std::net::SocketAddr::V4(addr)) = listen.parse::<std::net::SocketAddr>() else { return 0 };
    // /proc/net/tcp prints the address as the native-endian value of its network-order bytes.
    let local = format!("{:08X}:{:04X}", u32::from_ne_bytes(addr.ip().octets()), addr.port());
    let Ok(table) = std::fs::read_to_string("/proc/self/net/tcp") else { return 0 };
    let inodes: std::collections::HashSet<&str> = table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // sl local_address rem_address st … inode; 0A is LISTEN.
            (fields.len() > 9 && fields[1] == local && fields[3] != "0A").then(|| fields[9])
        })
        .collect();
    if inodes.is_empty() {
        return 0;
    }
    let Ok(fds) = std::fs::read_dir("/proc/self/fd") else { return 0 };
    let mut cut = 0;
    for fd in fds.flatten() {
        let Ok(target) = std::fs::read_link(fd.path()) else { continue };
        let target = target.to_string_lossy();
        let Some(inode) = target.strip_prefix("socket:[").and_then(|t| t.strip_suffix(']')) else { continue };
        let Ok(number) = fd.file_name().to_string_lossy().parse::<i32>() else { continue };
        if inodes.contains(inode) {
            // SAFETY: shutdown(2) on a socket descriptor of this process; it ends the connection and leaves the
            // descriptor itself to its owner.
            if unsafe { libc::shutdown(number, libc::SHUT_RDWR) } == 0 {
                cut += 1;
            }
        }
    }
    cut
}

/// `host:0` becomes `host:<free port>`; anything else is used as given.
fn concrete_listen(listen: &str) -> Result<String, ApiError> {
    let Some(host) = listen.strip_suffix(":0") else { return Ok(listen.to_owned()) };
    let probe = std::net::TcpListener::bind(listen)
        .map_err(|err| ApiError::bad_request(format!("cannot listen on {listen}: {err}")))?;
    let port = probe.local_addr().map_err(|err| ApiError::server(err.to_string()))?.port();
    Ok(format!("{host}:{port}"))
}

fn list(toxics: &mut Toxics, direction: StreamDirection) -> &mut Vec<Toxic> {
    match direction {
        StreamDirection::Upstream => &mut toxics.upstream,
        StreamDirection::Downstream => &mut toxics.downstream,
    }
}

fn apply_to_list(toxics: &mut Toxics, kind: ToxicEventKind) -> Result<(), ApiError> {
    match kind {
        ToxicEventKind::AddToxic(toxic) => list(toxics, toxic.direction).push(toxic),
        ToxicEventKind::UpdateToxic(toxic) => {
            let slot = list(toxics, toxic.direction).iter_mut().find(|t| t.name == toxic.name);
            *slot.ok_or_else(|| ApiError::not_found("toxic not found"))? = toxic;
        }
        ToxicEventKind::RemoveToxic(name) => {
            toxics.upstream.retain(|t| t.name != name);
            toxics.downstream.retain(|t| t.name != name);
        }
        ToxicEventKind::RemoveAllToxics => {
            toxics.upstream.clear();
            toxics.downstream.clear();
        }
    }
    Ok(())
}

impl Store {
    pub(crate) fn new() -> Store {
        let (stop, stopper) = Stop::new();
        Store { proxies: Mutex::new(BTreeMap::new()), stop, stopper: Some(stopper) }
    }

    pub(crate) async fn list(&self) -> BTreeMap<String, ProxyWithToxics> {
        self.proxies.lock().await.iter().map(|(name, entry)| (name.clone(), entry.view())).collect()
    }

    pub(crate) async fn get(&self, name: &str) -> Result<ProxyWithToxics, ApiError> {
        self.proxies.lock().await.get(name).map(Entry::view).ok_or_else(proxy_not_found)
    }

    pub(crate) async fn create(&self, config: ProxyConfig) -> Result<ProxyWithToxics, ApiError> {
        config.validate().map_err(|err| ApiError::bad_request(err.to_string()))?;
        let mut proxies = self.proxies.lock().await;
        if proxies.contains_key(&config.name) {
            return Err(ApiError::conflict("proxy already exists"));
        }
        let mut entry = Entry { config, toxics: Toxics::empty(), running: None };
        if entry.config.enabled {
            entry.start(&self.stop).await?;
        }
        let view = entry.view();
        proxies.insert(entry.config.name.clone(), entry);
        Ok(view)
    }

    /// Replaces proxies of the same names and creates the others (`POST /populate`).
    pub(crate) async fn populate(&self, configs: Vec<ProxyConfig>) -> Result<Vec<ProxyWithToxics>, ApiError> {
        for config in &configs {
            config.validate().map_err(|err| ApiError::bad_request(err.to_string()))?;
        }
        let mut created = Vec::with_capacity(configs.len());
        for config in configs {
            if let Some(mut old) = self.proxies.lock().await.remove(&config.name) {
                old.stop().await;
            }
            created.push(self.create(config).await?);
        }
        Ok(created)
    }

    /// Applies a new config (`POST /proxies/{name}`): rename, listen/upstream change, enable/disable.
    /// A listen port of 0 keeps the port already bound, so clients that created the proxy with port 0
    /// and post their stale config back (noxious-client does) keep the same port across disable/enable.
    pub(crate) async fn update(&self, name: &str, mut config: ProxyConfig) -> Result<ProxyWithToxics, ApiError> {
        let mut proxies = self.proxies.lock().await;
        let mut entry = proxies.remove(name).ok_or_else(proxy_not_found)?;
        if config.name.is_empty() {
            config.name = name.to_owned();
        }
        if config.listen.is_empty() || (config.listen.ends_with(":0") && !entry.config.listen.ends_with(":0")) {
            config.listen = entry.config.listen.clone();
        }
        if config.upstream.is_empty() {
            config.upstream = entry.config.upstream.clone();
        }
        if config.name != name && proxies.contains_key(&config.name) {
            proxies.insert(name.to_owned(), entry);
            return Err(ApiError::conflict("proxy already exists"));
        }
        let rebind = config.listen != entry.config.listen || config.upstream != entry.config.upstream;
        let restart = rebind || config.name != entry.config.name || config.enabled != entry.running.is_some();
        if restart {
            entry.stop().await;
            entry.config = ProxyConfig { rand_seed: entry.config.rand_seed, ..config };
            if entry.config.enabled {
                let started = entry.start(&self.stop).await;
                if let Err(err) = started {
                    entry.config.enabled = false;
                    proxies.insert(entry.config.name.clone(), entry);
                    return Err(err);
                }
            }
        }
        let view = entry.view();
        proxies.insert(entry.config.name.clone(), entry);
        Ok(view)
    }

    pub(crate) async fn delete(&self, name: &str) -> Result<(), ApiError> {
        let mut entry = self.proxies.lock().await.remove(name).ok_or_else(proxy_not_found)?;
        entry.stop().await;
        Ok(())
    }

    /// `POST /reset`: every proxy enabled again and all toxics removed.
    pub(crate) async fn reset(&self) -> Result<(), ApiError> {
        let mut proxies = self.proxies.lock().await;
        for entry in proxies.values_mut() {
            entry.apply(ToxicEventKind::RemoveAllToxics).await?;
            if entry.running.is_none() {
                entry.config.enabled = true;
                entry.start(&self.stop).await?;
            }
        }
        Ok(())
    }

    pub(crate) async fn toxics(&self, proxy: &str) -> Result<Vec<Toxic>, ApiError> {
        let proxies = self.proxies.lock().await;
        Ok(proxies.get(proxy).ok_or_else(proxy_not_found)?.current_toxics().into_vec())
    }

    pub(crate) async fn toxic(&self, proxy: &str, toxic: &str) -> Result<Toxic, ApiError> {
        let proxies = self.proxies.lock().await;
        let toxics = proxies.get(proxy).ok_or_else(proxy_not_found)?.current_toxics();
        toxics.find_by_name(toxic).ok_or_else(toxic_not_found)
    }

    pub(crate) async fn add_toxic(&self, proxy: &str, mut toxic: Toxic) -> Result<Toxic, ApiError> {
        toxic.set_default_name();
        check_toxicity(&toxic)?;
        let mut proxies = self.proxies.lock().await;
        let entry = proxies.get_mut(proxy).ok_or_else(proxy_not_found)?;
        if entry.current_toxics().find_by_name(&toxic.name).is_some() {
            return Err(ApiError::conflict("toxic already exists"));
        }
        entry.apply(ToxicEventKind::AddToxic(toxic.clone())).await?;
        Ok(toxic)
    }

    pub(crate) async fn update_toxic(&self, proxy: &str, name: &str, mut toxic: Toxic) -> Result<Toxic, ApiError> {
        toxic.name = name.to_owned();
        check_toxicity(&toxic)?;
        let mut proxies = self.proxies.lock().await;
        let entry = proxies.get_mut(proxy).ok_or_else(proxy_not_found)?;
        let old = entry.current_toxics().find_by_name(name).ok_or_else(toxic_not_found)?;
        if old.direction == toxic.direction {
            entry.apply(ToxicEventKind::UpdateToxic(toxic.clone())).await?;
        } else {
            entry.apply(ToxicEventKind::RemoveToxic(name.to_owned())).await?;
            entry.apply(ToxicEventKind::AddToxic(toxic.clone())).await?;
        }
        Ok(toxic)
    }

    pub(crate) async fn remove_toxic(&self, proxy: &str, name: &str) -> Result<(), ApiError> {
        let mut proxies = self.proxies.lock().await;
        let entry = proxies.get_mut(proxy).ok_or_else(proxy_not_found)?;
        entry.current_toxics().find_by_name(name).ok_or_else(toxic_not_found)?;
        entry.apply(ToxicEventKind::RemoveToxic(name.to_owned())).await
    }
}

fn check_toxicity(toxic: &Toxic) -> Result<(), ApiError> {
    if (0.0..=1.0).contains(&toxic.toxicity) {
        Ok(())
    } else {
        Err(ApiError::bad_request("toxicity must be between 0 and 1"))
    }
}

fn proxy_not_found() -> ApiError {
    ApiError::not_found("proxy not found")
}

fn toxic_not_found() -> ApiError {
    ApiError::not_found("toxic not found")
}
