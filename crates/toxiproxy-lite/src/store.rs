//! The proxy store: every proxy the API knows, running (a [`Relay`] bound to its listen address) or disabled
//! (no socket at all, so connections are refused, as with real Toxiproxy). The store's list of a proxy's
//! toxics is the truth; a running relay gets a copy after every change and applies it to live connections.

use crate::ApiError;
use crate::relay::Relay;
use noxious::proxy::{ProxyConfig, ProxyWithToxics, Toxics};
use noxious::toxic::{StreamDirection, Toxic, ToxicEventKind};
use std::collections::BTreeMap;
use tokio::sync::Mutex;

/// A proxy the API knows about.
struct Entry {
    /// The current config; `listen` is the concrete address once the proxy has been bound.
    config: ProxyConfig,
    toxics: Toxics,
    running: Option<Relay>,
}

/// All proxies. One async mutex serialises API calls, which is plenty for a test server.
pub(crate) struct Store {
    proxies: Mutex<BTreeMap<String, Entry>>,
}

impl Entry {
    fn view(&self) -> ProxyWithToxics {
        ProxyWithToxics { proxy: self.config.clone(), toxics: self.toxics.clone().into_vec() }
    }

    /// Binds the listen address and starts the relay. A listen port of 0 means "any free port": the port the
    /// kernel picked is kept in the config, so a disable/enable cycle binds the same one again.
    async fn start(&mut self) -> Result<(), ApiError> {
        let (relay, addr) = Relay::bind(&self.config.listen, self.config.upstream.clone(), self.toxics.clone())
            .await
            .map_err(|err| ApiError::server(format!("listen {}: {err}", self.config.listen)))?;
        if self.config.listen.ends_with(":0") {
            self.config.listen = addr.to_string();
        }
        self.running = Some(relay);
        Ok(())
    }

    /// Stops the relay: the listener closes and every connection through the proxy is cut.
    async fn stop(&mut self) {
        if let Some(relay) = self.running.take() {
            relay.stop().await;
        }
    }

    /// Applies a toxic change to the list, and to the live connections when the proxy runs.
    fn apply(&mut self, kind: ToxicEventKind) -> Result<(), ApiError> {
        apply_to_list(&mut self.toxics, kind)?;
        if let Some(relay) = &self.running {
            relay.set_toxics(self.toxics.clone());
        }
        Ok(())
    }
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
        Store { proxies: Mutex::new(BTreeMap::new()) }
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
            entry.start().await?;
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
                let started = entry.start().await;
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
            entry.apply(ToxicEventKind::RemoveAllToxics)?;
            if entry.running.is_none() {
                entry.config.enabled = true;
                entry.start().await?;
            }
        }
        Ok(())
    }

    pub(crate) async fn toxics(&self, proxy: &str) -> Result<Vec<Toxic>, ApiError> {
        let proxies = self.proxies.lock().await;
        Ok(proxies.get(proxy).ok_or_else(proxy_not_found)?.toxics.clone().into_vec())
    }

    pub(crate) async fn toxic(&self, proxy: &str, toxic: &str) -> Result<Toxic, ApiError> {
        let proxies = self.proxies.lock().await;
        let toxics = &proxies.get(proxy).ok_or_else(proxy_not_found)?.toxics;
        toxics.find_by_name(toxic).ok_or_else(toxic_not_found)
    }

    pub(crate) async fn add_toxic(&self, proxy: &str, mut toxic: Toxic) -> Result<Toxic, ApiError> {
        toxic.set_default_name();
        check_toxicity(&toxic)?;
        let mut proxies = self.proxies.lock().await;
        let entry = proxies.get_mut(proxy).ok_or_else(proxy_not_found)?;
        if entry.toxics.find_by_name(&toxic.name).is_some() {
            return Err(ApiError::conflict("toxic already exists"));
        }
        entry.apply(ToxicEventKind::AddToxic(toxic.clone()))?;
        Ok(toxic)
    }

    pub(crate) async fn update_toxic(&self, proxy: &str, name: &str, mut toxic: Toxic) -> Result<Toxic, ApiError> {
        toxic.name = name.to_owned();
        check_toxicity(&toxic)?;
        let mut proxies = self.proxies.lock().await;
        let entry = proxies.get_mut(proxy).ok_or_else(proxy_not_found)?;
        let old = entry.toxics.find_by_name(name).ok_or_else(toxic_not_found)?;
        if old.direction == toxic.direction {
            entry.apply(ToxicEventKind::UpdateToxic(toxic.clone()))?;
        } else {
            entry.apply(ToxicEventKind::RemoveToxic(name.to_owned()))?;
            entry.apply(ToxicEventKind::AddToxic(toxic.clone()))?;
        }
        Ok(toxic)
    }

    pub(crate) async fn remove_toxic(&self, proxy: &str, name: &str) -> Result<(), ApiError> {
        let mut proxies = self.proxies.lock().await;
        let entry = proxies.get_mut(proxy).ok_or_else(proxy_not_found)?;
        entry.toxics.find_by_name(name).ok_or_else(toxic_not_found)?;
        entry.apply(ToxicEventKind::RemoveToxic(name.to_owned()))
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
