//! Established Noise sessions of this peer: the ones it initiated (to send
//! to a peer) by peer name, and every live one by session id (to open what
//! arrives). Each carries its anti-replay window and knows when to rekey.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use chat_noise::{ReplayError, ReplayWindow, SessionId, Transport};
use tokio::time::Instant;

/// Rekey after this many messages sent in one session: far below the 2^64
/// nonce space, small enough that one key protects a bounded amount of data.
pub const REKEY_AFTER_MESSAGES: u64 = 1 << 20;

/// Rekey after this long, as WireGuard does (REKEY_AFTER_TIME, 120 s), so a
/// key compromised later exposes at most a few minutes of traffic.
pub const REKEY_AFTER_TIME: Duration = Duration::from_secs(120);

/// Sessions older than this are refused (WireGuard's REJECT_AFTER_TIME):
/// the sender has rekeyed long before.
pub const REJECT_AFTER_TIME: Duration = Duration::from_secs(180);

/// Sessions kept per remote peer for receiving: the current one plus the
/// previous ones still draining in-flight messages after a rekey.
const SESSIONS_PER_PEER: usize = 3;

/// Which side of the handshake this peer was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// This peer started the handshake.
    Initiator,
    /// The other peer started it.
    Responder,
}

/// One established session with a peer.
#[derive(Debug)]
pub struct Session {
    /// The keys.
    pub transport: Transport,
    /// The peer on the other side (authenticated by the handshake).
    pub peer: String,
    /// Which side we were.
    pub role: Role,
    /// When the handshake completed.
    pub established: Instant,
    /// The fingerprint of the key the handshake authenticated (stamped on
    /// every message received on this session).
    pub fingerprint: String,
    replay: Mutex<ReplayWindow>,
}

impl Session {
    /// A session just established.
    pub fn new(transport: Transport, peer: String, role: Role) -> Self {
        Self {
            fingerprint: chat_proto::keys::fingerprint(&transport.remote_static()),
            transport,
            peer,
            role,
            established: Instant::now(),
            replay: Mutex::new(ReplayWindow::new()),
        }
    }

    /// The session id both sides derive from the handshake hash.
    pub fn id(&self) -> SessionId {
        self.transport.session_id()
    }

    /// Is it time for a fresh handshake before sending more?
    pub fn needs_rekey(&self) -> bool {
        self.transport.messages_sent() >= REKEY_AFTER_MESSAGES
            || self.established.elapsed() >= REKEY_AFTER_TIME
    }

    /// Too old to accept anything on.
    pub fn expired(&self) -> bool {
        self.established.elapsed() >= REJECT_AFTER_TIME
    }

    /// Rejects a counter already seen or too old, without changing state.
    pub fn check_counter(&self, counter: u64) -> Result<(), ReplayError> {
        self.replay.lock().expect("replay lock").check(counter)
    }

    /// Marks a counter seen, after its envelope was authenticated.
    pub fn accept_counter(&self, counter: u64) -> Result<(), ReplayError> {
        self.replay.lock().expect("replay lock").accept(counter)
    }
}

/// The associated data of an envelope: binds session id, sender and message
/// id to the ciphertext (each length-prefixed, so no two triples collide).
pub fn envelope_aad(session_id: &[u8], sender: &str, message_id: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(session_id.len() + sender.len() + message_id.len() + 8);
    for part in [session_id, sender.as_bytes(), message_id.as_bytes()] {
        aad.extend_from_slice(&(part.len() as u32).to_be_bytes());
        aad.extend_from_slice(part);
    }
    aad
}

#[derive(Debug, Default)]
struct Inner {
    /// The session used to send to each peer (one this peer initiated).
    sending: HashMap<String, Arc<Session>>,
    /// Every live session by id, both roles.
    by_id: HashMap<SessionId, Arc<Session>>,
}

/// All sessions of this peer.
#[derive(Debug, Default)]
pub struct Sessions {
    inner: Mutex<Inner>,
}

impl Sessions {
    /// No sessions yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The session to send to `peer` on, if one is fresh enough.
    pub fn sending(&self, peer: &str) -> Option<Arc<Session>> {
        let inner = self.inner.lock().expect("sessions lock");
        inner
            .sending
            .get(peer)
            .filter(|s| !s.needs_rekey())
            .cloned()
    }

    /// Any live session with `peer`, for the connection list.
    pub fn has_session(&self, peer: &str) -> bool {
        let inner = self.inner.lock().expect("sessions lock");
        inner.by_id.values().any(|s| s.peer == peer && !s.expired())
    }

    /// The session an envelope names, if it is live.
    pub fn by_id(&self, id: &[u8]) -> Option<Arc<Session>> {
        let id: SessionId = id.try_into().ok()?;
        let inner = self.inner.lock().expect("sessions lock");
        inner.by_id.get(&id).filter(|s| !s.expired()).cloned()
    }

    /// Adds a new session; as initiator it becomes the one to send on. Old
    /// sessions with the same peer beyond the few kept are dropped.
    pub fn insert(&self, session: Session) -> Arc<Session> {
        let session = Arc::new(session);
        let mut inner = self.inner.lock().expect("sessions lock");
        if session.role == Role::Initiator {
            inner.sending.insert(session.peer.clone(), session.clone());
        }
        inner.by_id.insert(session.id(), session.clone());
        let mut same_peer: Vec<(Instant, SessionId)> = inner
            .by_id
            .values()
            .filter(|s| s.peer == session.peer && s.role == session.role)
            .map(|s| (s.established, s.id()))
            .collect();
        if same_peer.len() > SESSIONS_PER_PEER {
            same_peer.sort();
            for (_, id) in &same_peer[..same_peer.len() - SESSIONS_PER_PEER] {
                inner.by_id.remove(id);
            }
        }
        inner.by_id.retain(|_, s| !s.expired());
        session
    }

    /// Forgets the sending session with `peer` (it failed, or the peer changed).
    /// Stops sending on `failed` to `peer`, unless another caller already
    /// replaced it with a fresh session (which must be kept).
    pub fn forget_sending_if(&self, peer: &str, failed: &Session) {
        let mut inner = self.inner.lock().expect("sessions lock");
        if inner
            .sending
            .get(peer)
            .is_some_and(|s| s.id() == failed.id())
        {
            inner.sending.remove(peer);
        }
    }

    /// Stops sending on the current session to `peer`.
    pub fn forget_sending(&self, peer: &str) {
        self.inner
            .lock()
            .expect("sessions lock")
            .sending
            .remove(peer);
    }

    /// Forgets every session with `peer` (it left, or its key changed).
    pub fn forget_peer(&self, peer: &str) {
        let mut inner = self.inner.lock().expect("sessions lock");
        inner.sending.remove(peer);
        inner.by_id.retain(|_, s| s.peer != peer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real handshake's transport pair.
    fn transports() -> (Transport, Transport) {
        use chat_noise::{Initiator, Responder, StaticKeypair};
        let (a, b) = (StaticKeypair::generate(), StaticKeypair::generate());
        let (m1, waiting) = Initiator::new(&a, b.public_key(), b"t")
            .write_message(b"")
            .unwrap();
        let (m2, responder) = Responder::read_message(&b, b"t", &m1)
            .unwrap()
            .write_message(b"")
            .unwrap();
        let (_, initiator) = waiting.read_message(&m2).unwrap();
        (initiator, responder)
    }

    #[tokio::test(start_paused = true)]
    async fn sessions_rekey_after_the_time_bound_and_are_refused_after_the_reject_bound() {
        let sessions = Sessions::new();
        let s = sessions.insert(Session::new(transports().0, "bob".into(), Role::Initiator));
        assert!(sessions.sending("bob").is_some());
        tokio::time::advance(REKEY_AFTER_TIME).await;
        assert!(s.needs_rekey());
        assert!(
            sessions.sending("bob").is_none(),
            "time for a fresh handshake"
        );
        assert!(
            sessions.by_id(&s.id()).is_some(),
            "still accepted while draining"
        );
        tokio::time::advance(REJECT_AFTER_TIME - REKEY_AFTER_TIME).await;
        assert!(sessions.by_id(&s.id()).is_none(), "too old to accept");
    }

    #[tokio::test(start_paused = true)]
    async fn only_a_few_sessions_per_peer_are_kept() {
        let sessions = Sessions::new();
        let mut ids = Vec::new();
        for _ in 0..5 {
            tokio::time::advance(Duration::from_millis(1)).await;
            ids.push(
                sessions
                    .insert(Session::new(transports().1, "bob".into(), Role::Responder))
                    .id(),
            );
        }
        let live: Vec<bool> = ids.iter().map(|id| sessions.by_id(id).is_some()).collect();
        assert_eq!(live, [false, false, true, true, true]);
        sessions.forget_peer("bob");
        assert!(ids.iter().all(|id| sessions.by_id(id).is_none()));
    }

    #[test]
    fn replayed_counters_are_refused_per_session() {
        let s = Session::new(transports().1, "bob".into(), Role::Responder);
        s.check_counter(5).unwrap();
        s.accept_counter(5).unwrap();
        assert!(s.check_counter(5).is_err());
        assert!(s.accept_counter(5).is_err());
        s.accept_counter(4).unwrap();
    }

    #[test]
    fn aad_parts_cannot_be_shifted_between_fields() {
        assert_ne!(envelope_aad(b"s", "ab", "c"), envelope_aad(b"s", "a", "bc"));
        assert_ne!(envelope_aad(b"", "sa", "b"), envelope_aad(b"s", "a", "b"));
    }
}
