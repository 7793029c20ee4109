//! SIGHUP (3.6): the config file read again; what can change live is applied, the rest reported as needing a
//! restart, and an invalid file changes nothing.

use musicfs_cas::ChunkStore;
use musicfs_core::Config;
use musicfs_fuse::MusicFs;
use std::path::Path;

/// SIGHUP (3.6): re-read and validate the config file; apply what can change live, report the rest, keep
/// the old config if the new one is invalid.
pub(crate) fn reload(config: &mut Config, file: Option<&Path>, fs: &MusicFs, store: &ChunkStore) {
    let Some(file) = file else {
        tracing::warn!("3.6 SIGHUP: started without --config, nothing to reload");
        return;
    };
    let new = match Config::load(file) {
        Ok(new) => new,
        Err(e) => {
            tracing::error!(error = %e, "3.6 SIGHUP: new config rejected; keeping the running one");
            return;
        }
    };
    let mut applied = Vec::new();
    if new.cache.max_size != config.cache.max_size {
        store.set_max_size(new.cache.max_size.0);
        applied.push(format!("cache.max_size {} -> {}", config.cache.max_size, new.cache.max_size));
    }
    if new.fuse.read_timeout != config.fuse.read_timeout {
        fs.set_read_timeout(new.fuse.read_timeout.0);
        applied.push(format!("fuse.read_timeout {:?} -> {:?}", config.fuse.read_timeout.0, new.fuse.read_timeout.0));
    }
    let mut restart = Vec::new();
    let live = Config {
        cache: musicfs_core::CacheConfig { max_size: new.cache.max_size, ..config.cache.clone() },
        fuse: musicfs_core::FuseConfig { read_timeout: new.fuse.read_timeout, ..config.fuse.clone() },
        ..config.clone()
    };
    if live != new {
        for (name, changed) in [
            ("mount_point", new.mount_point != config.mount_point),
            ("cache_dir", new.cache_dir != config.cache_dir),
            ("origins", new.origins != config.origins),
            ("cache (chunk sizes, memory)", new.cache != live.cache),
            ("library", new.library != config.library),
            ("health", new.health != config.health),
            ("fuse (threads, allow_other)", new.fuse != live.fuse),
            ("logging", new.logging != config.logging),
            ("events", new.events != config.events),
        ] {
            if changed {
                restart.push(name);
            }
        }
    }
    tracing::info!(applied = ?applied, needs_restart = ?restart, "3.6 SIGHUP: config reloaded");
    config.cache.max_size = new.cache.max_size;
    config.fuse.read_timeout = new.fuse.read_timeout;
}

#[cfg(test)]
mod tests {
    use super::*;
    use musicfs_cas::manifest::MemoryManifests;
    use musicfs_cas::{ChunkParams, ManifestStore, Reader};
    use std::sync::Arc;
    use std::time::Duration;

    /// Proves L1: 3.6
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_reload_applies_live_fields_and_rejects_an_invalid_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("musicfs.toml");
        let text = |max: &str, timeout: &str, threads: u32| {
            format!(
                "mount_point = \"/m\"\ncache_dir = \"/c\"\n[[origins]]\nid = \"o\"\ntype = \"local\"\npath = \"/o\"\n\
                 [cache]\nmax_size = \"{max}\"\n[fuse]\nread_timeout = \"{timeout}\"\nthreads = {threads}\n"
            )
        };
        std::fs::write(&file, text("1GiB", "30s", 2)).unwrap();
        let mut config = Config::load(&file).unwrap();
        let store = Arc::new(ChunkStore::open(dir.path(), config.cache.max_size.0).unwrap());
        let manifests: Arc<dyn ManifestStore> = Arc::new(MemoryManifests::default());
        let reader = Reader::new(store.clone(), manifests, ChunkParams::default(), 1 << 20, Duration::from_secs(1));
        let tree = musicfs_meta::Tree::build(Vec::new(), &std::collections::HashMap::new());
        let fs = MusicFs::new(tree, reader, &[], config.read_timeout());

        std::fs::write(&file, text("512MiB", "7s", 4)).unwrap();
        reload(&mut config, Some(&file), &fs, &store);
        assert_eq!(store.max_size(), 512 << 20);
        assert_eq!(fs.read_timeout(), Duration::from_secs(7));
        assert_eq!(config.fuse.threads, 2, "threads need a restart: the running value stays");

        std::fs::write(&file, "max_size = = broken").unwrap();
        reload(&mut config, Some(&file), &fs, &store);
        assert_eq!(store.max_size(), 512 << 20, "an invalid file changes nothing");
        assert_eq!(fs.read_timeout(), Duration::from_secs(7));
    }
}
