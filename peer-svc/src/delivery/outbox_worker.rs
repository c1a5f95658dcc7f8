//! The outbox worker: redelivers queued messages until shutdown. Each peer
//! with a backlog is retried with exponential backoff and jitter, and at
//! once when it comes back (it registers again, or handshakes with us).

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::Duration,
};

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::Delivery;
use crate::{backoff::Backoff, store::Store};

/// With nothing due, the worker still looks this often (a peer may have
/// become reachable without telling anyone).
const IDLE_CHECK: Duration = Duration::from_secs(5);

/// Runs the worker until `shutdown`.
pub async fn run(delivery: Arc<Delivery>, store: Arc<Store>, shutdown: CancellationToken) {
    let mut waits: HashMap<String, (Backoff, Instant)> = HashMap::new();
    loop {
        for peer in delivery.take_retries() {
            waits.remove(&peer);
        }
        let now = Instant::now();
        let pending: HashSet<String> = store.peers_with_pending().into_iter().collect();
        // A peer whose queue is gone (dropped with `chat leave PEER`,
        // removed, forgotten, or flushed by a direct delivery) has nothing
        // to wait for: a wait kept for it would be past due for ever, and
        // the loop would never sleep.
        waits.retain(|peer, _| pending.contains(peer));
        let due: Vec<String> = pending
            .into_iter()
            .filter(|p| waits.get(p).is_none_or(|(_, at)| *at <= now))
            .collect();
        let results = futures::future::join_all(due.iter().map(|p| delivery.flush_outbox(p))).await;
        for (peer, done) in due.into_iter().zip(results) {
            if done {
                waits.remove(&peer);
            } else {
                let (backoff, at) = waits
                    .entry(peer)
                    .or_insert_with(|| (Backoff::default(), now));
                *at = Instant::now() + backoff.next_delay();
            }
        }
        let next = waits
            .values()
            .map(|(_, at)| *at)
            .min()
            .unwrap_or_else(|| Instant::now() + IDLE_CHECK);
        tokio::select! {
            _ = tokio::time::sleep_until(next) => {}
            _ = delivery.wake.notified() => {}
            _ = shutdown.cancelled() => return,
        }
    }
}
