//! One established Noise session with a peer: its transport keys, its
//! anti-replay window, and when it is time to rekey or to refuse it. The
//! sessions of each peer are kept in its record (`peers`).

use std::{sync::Mutex, time::Duration};

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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A real handshake's transport pair: (initiator's, responder's).
    pub(crate) fn transports() -> (Transport, Transport) {
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

    #[test]
    fn replayed_counters_are_refused_per_session() {
        let s = Session::new(transports().1, "bob".into(), Role::Responder);
        s.check_counter(5).unwrap();
        s.accept_counter(5).unwrap();
        assert!(s.check_counter(5).is_err());
        assert!(s.accept_counter(5).is_err());
        s.accept_counter(4).unwrap();
    }
}
