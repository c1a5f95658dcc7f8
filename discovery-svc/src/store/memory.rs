//! The default store: the registry in this process's memory, expired by a
//! reaper task. Events are published under the registry lock, so every
//! watcher sees them in registry order.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::{
    sync::{Notify, broadcast},
    time::Instant,
};
use tokio_util::sync::CancellationToken;

use super::{Store, log_event};
use crate::config::Config;
use crate::registry::{Event, Grant, MemberInfo, Registry, RegistryError};

/// When no lease is live, the reaper still wakes this often to re-check.
const IDLE_REAPER_PERIOD: Duration = Duration::from_secs(60);

/// The in-memory registry and its event feed.
#[derive(Debug)]
pub struct MemoryStore {
    registry: Mutex<Registry>,
    events: broadcast::Sender<Event>,
    /// Wakes the reaper when a new lease may expire sooner than it planned.
    reaper_wake: Notify,
}

impl MemoryStore {
    /// An empty store whose reaper runs until `shutdown`.
    pub fn start(config: &Config, shutdown: CancellationToken) -> Arc<Self> {
        let (events, _) = broadcast::channel(config.watch_lag_limit.max(1));
        let store = Arc::new(Self {
            registry: Mutex::new(Registry::with_caps(config.ttl, config.caps)),
            events,
            reaper_wake: Notify::new(),
        });
        tokio::spawn(store.clone().run_reaper(shutdown));
        store
    }

    /// Expires leases as they run out, until shutdown.
    async fn run_reaper(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            let next = self
                .lock()
                .next_expiry()
                .unwrap_or_else(|| Instant::now() + IDLE_REAPER_PERIOD);
            tokio::select! {
                _ = tokio::time::sleep_until(next) => {}
                _ = self.reaper_wake.notified() => continue,
                _ = shutdown.cancelled() => return,
            }
            let mut registry = self.lock();
            let events = registry.expire(Instant::now());
            self.publish(events);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.registry.lock().expect("registry lock")
    }

    /// The registry, locked, with every lease due by now expired and
    /// published first: a call that is then refused (a taken name, a
    /// wrong token) cannot swallow the EXPIRED events its expiry found.
    fn current(&self) -> std::sync::MutexGuard<'_, Registry> {
        let mut registry = self.lock();
        let events = registry.expire(Instant::now());
        self.publish(events);
        registry
    }

    /// Sends events to every watcher; called with the registry lock held.
    fn publish(&self, events: Vec<Event>) {
        for event in events {
            log_event(&event);
            // An error only means nobody is watching.
            let _ = self.events.send(event);
        }
    }
}

#[tonic::async_trait]
impl Store for MemoryStore {
    async fn register(
        &self,
        name: &str,
        address: &str,
        public_key: &[u8],
        proof_stamp: u64,
        source: &str,
    ) -> Result<Grant, RegistryError> {
        let mut registry = self.current();
        let (grant, events) = registry.register(
            name,
            address,
            public_key,
            proof_stamp,
            source,
            Instant::now(),
            chrono::Utc::now(),
        )?;
        self.publish(events);
        drop(registry);
        self.reaper_wake.notify_one();
        Ok(grant)
    }

    async fn keep_alive(&self, lease_id: &str, token: &str) -> Result<Duration, RegistryError> {
        let mut registry = self.current();
        let (ttl, events) = registry.keep_alive(lease_id, token, Instant::now())?;
        self.publish(events);
        Ok(ttl)
    }

    async fn leave(&self, lease_id: &str, token: &str) -> Result<(), RegistryError> {
        let mut registry = self.current();
        let events = registry.leave(lease_id, token, Instant::now())?;
        self.publish(events);
        Ok(())
    }

    async fn holder(&self, lease_id: &str, token: &str) -> Result<MemberInfo, RegistryError> {
        let mut registry = self.current();
        let (info, events) = registry.holder(lease_id, token, Instant::now())?;
        self.publish(events);
        Ok(info)
    }

    async fn page(
        &self,
        after: &str,
        limit: usize,
    ) -> Result<(Vec<MemberInfo>, Option<String>), RegistryError> {
        let (page, more) = self.current().page(after, limit);
        let next = page.last().filter(|_| more).map(|m| m.name.clone());
        Ok((page, next))
    }

    async fn subscribe(&self) -> (Arc<[MemberInfo]>, broadcast::Receiver<Event>) {
        let mut registry = self.current();
        (registry.snapshot(), self.events.subscribe())
    }
}
