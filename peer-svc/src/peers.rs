//! One record per remote peer, as boringtun keeps one `Peer` per remote: its
//! sessions (the one to send on, and every live one), the lock that makes
//! concurrent senders share one handshake, and the newest handshake stamp
//! accepted from it. Beside the records, the index by session id that
//! opening an envelope needs.
//!
//! Lock discipline: the records map, then one record's state, then the
//! session index; never the other way round. The handshake lock is async
//! and held across the round trip; nothing else is held across an await.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use chat_noise::SessionId;
use tokio::time::Instant;

use crate::session::{Role, Session};

/// Sessions kept per remote peer and role: the current one plus the
/// previous ones still draining in-flight messages after a rekey.
const SESSIONS_PER_PEER: usize = 3;

/// What this peer keeps about one remote peer.
#[derive(Debug, Default)]
pub struct PeerRecord {
    /// Held for the whole of a handshake with this peer.
    handshake: tokio::sync::Mutex<()>,
    state: Mutex<PeerState>,
}

#[derive(Debug, Default)]
struct PeerState {
    /// The session used to send (one this peer initiated).
    sending: Option<Arc<Session>>,
    /// Every live session with this peer, both roles.
    live: Vec<Arc<Session>>,
    /// The newest handshake timestamp accepted from this peer: an older or
    /// equal one is a replayed first message.
    last_stamp_seen: u64,
}

impl PeerRecord {
    /// Waits for any handshake with this peer in progress, and holds the
    /// lock until the guard drops.
    pub async fn handshake_lock(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.handshake.lock().await
    }

    /// Records `stamp` if it is newer than every one accepted before; false
    /// (and nothing changes) for a replay.
    pub fn accept_stamp(&self, stamp: u64) -> bool {
        let mut state = self.state.lock().expect("peer lock");
        if stamp <= state.last_stamp_seen {
            return false;
        }
        state.last_stamp_seen = stamp;
        true
    }
}

/// Every remote peer's record, and the live sessions by id.
#[derive(Debug, Default)]
pub struct Peers {
    records: Mutex<HashMap<String, Arc<PeerRecord>>>,
    by_id: Mutex<HashMap<SessionId, Arc<Session>>>,
}

impl Peers {
    /// Nobody known yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The record of `peer`, made on first use.
    pub fn record(&self, peer: &str) -> Arc<PeerRecord> {
        self.records
            .lock()
            .expect("peers lock")
            .entry(peer.to_owned())
            .or_default()
            .clone()
    }

    fn existing(&self, peer: &str) -> Option<Arc<PeerRecord>> {
        self.records.lock().expect("peers lock").get(peer).cloned()
    }

    /// Restores the newest handshake stamps accepted before a restart, so a
    /// replayed first message is refused as it was before.
    pub fn restore_stamps(&self, stamps: impl IntoIterator<Item = (String, u64)>) {
        // A stamp saved from a clock far ahead (before such stamps were
        // refused) must not lock its peer out: at most as far ahead as a
        // handshake may be now.
        let latest = chat_proto::registration::now_micros()
            .saturating_add(crate::config::MAX_CLOCK_AHEAD.as_micros() as u64);
        for (peer, stamp) in stamps {
            self.record(&peer).accept_stamp(stamp.min(latest));
        }
    }

    /// The session to send to `peer` on, if one is fresh enough.
    pub fn sending(&self, peer: &str) -> Option<Arc<Session>> {
        let record = self.existing(peer)?;
        let state = record.state.lock().expect("peer lock");
        state.sending.as_ref().filter(|s| !s.needs_rekey()).cloned()
    }

    /// Any live session with `peer`, for the connection list.
    pub fn has_session(&self, peer: &str) -> bool {
        self.existing(peer).is_some_and(|record| {
            let state = record.state.lock().expect("peer lock");
            state.live.iter().any(|s| !s.expired())
        })
    }

    /// The session an envelope names, if it is live.
    pub fn by_id(&self, id: &[u8]) -> Option<Arc<Session>> {
        let id: SessionId = id.try_into().ok()?;
        let by_id = self.by_id.lock().expect("session index lock");
        by_id.get(&id).filter(|s| !s.expired()).cloned()
    }

    /// Adds a new session; as initiator it becomes the one to send on. Old
    /// sessions with the same peer and role beyond the few kept, and
    /// expired ones, are dropped.
    pub fn insert(&self, session: Session) -> Arc<Session> {
        let session = Arc::new(session);
        let record = self.record(&session.peer);
        let mut state = record.state.lock().expect("peer lock");
        if session.role == Role::Initiator {
            state.sending = Some(session.clone());
        }
        state.live.push(session.clone());
        let mut same_role: Vec<(Instant, SessionId)> = state
            .live
            .iter()
            .filter(|s| s.role == session.role)
            .map(|s| (s.established, s.id()))
            .collect();
        same_role.sort();
        let excess = same_role.len().saturating_sub(SESSIONS_PER_PEER);
        let dropped: Vec<SessionId> = same_role[..excess].iter().map(|(_, id)| *id).collect();
        let mut by_id = self.by_id.lock().expect("session index lock");
        by_id.insert(session.id(), session.clone());
        state.live.retain(|s| {
            let keep = !s.expired() && !dropped.contains(&s.id());
            if !keep {
                by_id.remove(&s.id());
            }
            keep
        });
        by_id.retain(|_, s| !s.expired());
        session
    }

    /// Stops sending on `failed` to `peer`, unless another caller already
    /// replaced it with a fresh session (which must be kept).
    pub fn forget_sending_if(&self, peer: &str, failed: &Session) {
        if let Some(record) = self.existing(peer) {
            let mut state = record.state.lock().expect("peer lock");
            if state
                .sending
                .as_ref()
                .is_some_and(|s| s.id() == failed.id())
            {
                state.sending = None;
            }
        }
    }

    /// Stops sending on the current session to `peer`.
    pub fn forget_sending(&self, peer: &str) {
        if let Some(record) = self.existing(peer) {
            record.state.lock().expect("peer lock").sending = None;
        }
    }

    /// Forgets every session with `peer` (it left, restarted, or its key
    /// changed). The record stays: its last stamp still refuses replays.
    pub fn forget_peer(&self, peer: &str) {
        let Some(record) = self.existing(peer) else {
            return;
        };
        let mut state = record.state.lock().expect("peer lock");
        state.sending = None;
        let mut by_id = self.by_id.lock().expect("session index lock");
        for session in state.live.drain(..) {
            by_id.remove(&session.id());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::session::{REJECT_AFTER_TIME, REKEY_AFTER_TIME, tests::transports};

    #[tokio::test(start_paused = true)]
    async fn sessions_rekey_after_the_time_bound_and_are_refused_after_the_reject_bound() {
        let peers = Peers::new();
        let s = peers.insert(Session::new(transports().0, "bob".into(), Role::Initiator));
        assert!(peers.sending("bob").is_some());
        tokio::time::advance(REKEY_AFTER_TIME).await;
        assert!(s.needs_rekey());
        assert!(peers.sending("bob").is_none(), "time for a fresh handshake");
        assert!(
            peers.by_id(&s.id()).is_some(),
            "still accepted while draining"
        );
        tokio::time::advance(REJECT_AFTER_TIME - REKEY_AFTER_TIME).await;
        assert!(peers.by_id(&s.id()).is_none(), "too old to accept");
        assert!(!peers.has_session("bob"));
    }

    #[tokio::test(start_paused = true)]
    async fn only_a_few_sessions_per_peer_are_kept() {
        let peers = Peers::new();
        let mut ids = Vec::new();
        for _ in 0..5 {
            tokio::time::advance(Duration::from_millis(1)).await;
            ids.push(
                peers
                    .insert(Session::new(transports().1, "bob".into(), Role::Responder))
                    .id(),
            );
        }
        let live: Vec<bool> = ids.iter().map(|id| peers.by_id(id).is_some()).collect();
        assert_eq!(live, [false, false, true, true, true]);
        peers.forget_peer("bob");
        assert!(ids.iter().all(|id| peers.by_id(id).is_none()));
    }

    #[test]
    fn a_replaced_sending_session_is_not_forgotten_by_a_late_failure() {
        let peers = Peers::new();
        let old = peers.insert(Session::new(transports().0, "bob".into(), Role::Initiator));
        let fresh = peers.insert(Session::new(transports().0, "bob".into(), Role::Initiator));
        peers.forget_sending_if("bob", &old);
        assert_eq!(peers.sending("bob").unwrap().id(), fresh.id());
        peers.forget_sending_if("bob", &fresh);
        assert!(peers.sending("bob").is_none());
    }

    #[test]
    fn handshake_stamps_only_move_forward_and_survive_forgetting_the_sessions() {
        let peers = Peers::new();
        let bob = peers.record("bob");
        assert!(bob.accept_stamp(10));
        assert!(!bob.accept_stamp(10), "the same stamp again is a replay");
        assert!(!bob.accept_stamp(9));
        peers.forget_peer("bob");
        assert!(!peers.record("bob").accept_stamp(10));
        assert!(peers.record("bob").accept_stamp(11));
    }
}
