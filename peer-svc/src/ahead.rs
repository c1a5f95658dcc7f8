//! Handshake work done ahead of time, off the latency path.
//!
//! Of the ten X25519 operations in an IK handshake, six do not depend on the
//! other side's next message: the initiator's `e, es, s, ss` (an
//! [`Initiator`] runs them when it is made) and the responder's `ss`, `e` and
//! `se` for a known initiator (a [`ResponderPrecomputed`]). After a handshake
//! with a peer, this peer prepares the next one in the same role on one
//! background thread, so the rekey two minutes later (or a reconnect) only
//! waits for the four operations that need a fresh ephemeral key from the
//! other side. The static-static DH (`ss`) is computed once per peer and
//! reused, as WireGuard does, so preparing costs two operations, not three.
//! The results are exactly those of doing the work in the spec's order.
//!
//! Each prepared value is consumed by one handshake, so no ephemeral key is
//! used twice. It is kept at most [`KEEP_FOR`]: an ephemeral private key
//! waiting in memory is worth no more to someone who can read this
//! process's memory than the static key next to it, but it should not wait
//! long. Values are found by the other side's static public key, so a value
//! made for a key that has since changed is never used; it just expires.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::Duration,
};

use chat_noise::{Initiator, PUBLIC_KEY_LEN, ResponderPrecomputed, StaticDh, StaticKeypair};
use tokio::time::Instant;
use tracing::debug;

/// Prepared work older than this is dropped unused (rekeys come every two
/// minutes while a peer is talked to).
pub const KEEP_FOR: Duration = Duration::from_secs(300);

/// At most this many peers' prepared work per role.
pub const MAX_PREPARED: usize = 256;

/// A static public key: which peer a prepared value is for.
type Key = [u8; PUBLIC_KEY_LEN];

/// Prepared values of one kind, by the other side's static key.
#[derive(Debug)]
struct Shelf<T> {
    slots: Mutex<HashMap<Key, (Instant, T)>>,
}

impl<T> Default for Shelf<T> {
    fn default() -> Self {
        Self {
            slots: Mutex::new(HashMap::new()),
        }
    }
}

impl<T> Shelf<T> {
    /// Removes and returns the value for `key`, if it is fresh.
    fn take(&self, key: &Key) -> Option<T> {
        let mut slots = self.slots.lock().expect("shelf lock");
        let (made, work) = slots.remove(key)?;
        (made.elapsed() < KEEP_FOR).then_some(work)
    }

    /// Stores `work` for `key` (replacing an older one), unless the shelf is
    /// full of other keys.
    fn put(&self, key: Key, work: T) {
        let mut slots = self.slots.lock().expect("shelf lock");
        slots.retain(|_, (made, _)| made.elapsed() < KEEP_FOR);
        if slots.len() < MAX_PREPARED || slots.contains_key(&key) {
            slots.insert(key, (Instant::now(), work));
        }
    }

    /// How many values wait.
    fn len(&self) -> usize {
        self.slots.lock().expect("shelf lock").len()
    }
}

/// Which kind of work to prepare for a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Job {
    /// An initiation toward this responder.
    Initiate(Key),
    /// A response to this initiator.
    Respond(Key),
}

/// Prepared handshake work of this peer, and the queue of work to prepare.
#[derive(Debug)]
pub struct HandshakeAhead {
    keypair: Arc<StaticKeypair>,
    prologue: &'static [u8],
    initiations: Shelf<Initiator>,
    responses: Shelf<ResponderPrecomputed>,
    /// `DH(s, rs)` per peer key (at most [`MAX_PREPARED`]).
    statics: Mutex<HashMap<Key, Arc<StaticDh>>>,
    /// Work asked for and not done yet; whether a worker is running.
    queue: Mutex<(HashSet<Job>, bool)>,
}

impl HandshakeAhead {
    /// Nothing prepared yet, for identity `keypair` and `prologue`.
    pub fn new(keypair: Arc<StaticKeypair>, prologue: &'static [u8]) -> Arc<Self> {
        Arc::new(Self {
            keypair,
            prologue,
            initiations: Shelf::default(),
            responses: Shelf::default(),
            statics: Mutex::new(HashMap::new()),
            queue: Mutex::new((HashSet::new(), false)),
        })
    }

    /// An initiation toward `responder`: the prepared one if there is one,
    /// else one made now (with the known `ss` if there is one).
    pub fn initiation(&self, responder: Key) -> Initiator {
        if let Some(ready) = self
            .initiations
            .take(&responder)
            .filter(|i| i.remote_static() == responder)
        {
            return ready;
        }
        match self.known_static_dh(&responder) {
            Some(statics) => Initiator::with_static(&self.keypair, &statics, self.prologue),
            None => Initiator::new(&self.keypair, responder, self.prologue),
        }
    }

    /// The prepared response to `initiator`, or one made now from the known
    /// `ss`, if either is there (for
    /// [`chat_noise::Responder::read_message_precomputed`]).
    pub fn response(&self, initiator: &Key) -> Option<ResponderPrecomputed> {
        self.responses.take(initiator).or_else(|| {
            let statics = self.known_static_dh(initiator)?;
            ResponderPrecomputed::with_static(&self.keypair, &statics).ok()
        })
    }

    /// `DH(s, key)` if it was computed already.
    fn known_static_dh(&self, key: &Key) -> Option<Arc<StaticDh>> {
        self.statics.lock().expect("statics lock").get(key).cloned()
    }

    /// Prepares the next initiation toward `responder` in the background.
    pub fn prepare_initiation(self: &Arc<Self>, responder: Key) {
        self.ask(Job::Initiate(responder));
    }

    /// Prepares the next response to `initiator` in the background.
    pub fn prepare_response(self: &Arc<Self>, initiator: Key) {
        self.ask(Job::Respond(initiator));
    }

    /// Prepared values waiting: (initiations, responses).
    pub fn prepared(&self) -> (usize, usize) {
        (self.initiations.len(), self.responses.len())
    }

    /// Queues `job`; starts the one worker on the blocking pool if it is
    /// not running.
    fn ask(self: &Arc<Self>, job: Job) {
        let mut queue = self.queue.lock().expect("queue lock");
        if queue.0.len() >= 2 * MAX_PREPARED {
            return;
        }
        queue.0.insert(job);
        if !queue.1 {
            queue.1 = true;
            let me = self.clone();
            // Outside a runtime (unit tests of other parts) nothing is
            // prepared: handshakes then do all their work inline.
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                handle.spawn_blocking(move || me.work());
            } else {
                queue.1 = false;
            }
        }
    }

    /// `DH(s, key)`, computed once (kept for up to [`MAX_PREPARED`] keys).
    fn static_dh(&self, key: Key) -> Result<Arc<StaticDh>, chat_noise::NoiseError> {
        if let Some(statics) = self.statics.lock().expect("statics lock").get(&key) {
            return Ok(statics.clone());
        }
        let statics = Arc::new(StaticDh::new(&self.keypair, key)?);
        let mut all = self.statics.lock().expect("statics lock");
        if all.len() >= MAX_PREPARED {
            all.clear();
        }
        all.insert(key, statics.clone());
        Ok(statics)
    }

    /// The worker: prepares until the queue is empty.
    fn work(&self) {
        loop {
            let job = {
                let mut queue = self.queue.lock().expect("queue lock");
                let next = queue.0.iter().next().copied();
                match next {
                    Some(job) => {
                        queue.0.remove(&job);
                        job
                    }
                    None => {
                        queue.1 = false;
                        return;
                    }
                }
            };
            let (Job::Initiate(key) | Job::Respond(key)) = job;
            let statics = match self.static_dh(key) {
                Ok(statics) => statics,
                Err(e) => {
                    debug!(error = %e, "cannot prepare a handshake with this key");
                    continue;
                }
            };
            match job {
                Job::Initiate(_) => self.initiations.put(
                    key,
                    Initiator::with_static(&self.keypair, &statics, self.prologue),
                ),
                Job::Respond(_) => match ResponderPrecomputed::with_static(&self.keypair, &statics)
                {
                    Ok(work) => self.responses.put(key, work),
                    Err(e) => debug!(error = %e, "cannot prepare a handshake response"),
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use chat_noise::Responder;

    use super::*;

    /// Waits until the worker has prepared `want` (initiations, responses).
    async fn until_prepared(ahead: &HandshakeAhead, want: (usize, usize)) {
        for _ in 0..500 {
            if ahead.prepared() == want {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("prepared {:?}, want {want:?}", ahead.prepared());
    }

    #[tokio::test]
    async fn prepared_work_completes_handshakes_and_is_used_once() {
        let alice = HandshakeAhead::new(Arc::new(StaticKeypair::generate()), b"p");
        let bob = HandshakeAhead::new(Arc::new(StaticKeypair::generate()), b"p");
        let (a_key, b_key) = (alice.keypair.public_key(), bob.keypair.public_key());
        alice.prepare_initiation(b_key);
        bob.prepare_response(a_key);
        until_prepared(&alice, (1, 0)).await;
        until_prepared(&bob, (0, 1)).await;

        let mut hashes = Vec::new();
        for _ in 0..2 {
            // First with the prepared work, then with none left.
            let (m1, waiting) = alice.initiation(b_key).write_message(b"hi").unwrap();
            let pending =
                Responder::read_message_precomputed(&bob.keypair, b"p", &m1, |rs| bob.response(rs))
                    .unwrap();
            assert_eq!(alice.prepared(), (0, 0));
            assert_eq!(bob.prepared(), (0, 0));
            let (m2, b) = pending.write_message(b"ok").unwrap();
            let (_, a) = waiting.read_message(&m2).unwrap();
            assert_eq!(a.handshake_hash(), b.handshake_hash());
            hashes.push(a.handshake_hash());
        }
        assert_ne!(hashes[0], hashes[1], "fresh ephemeral keys each time");
    }

    #[tokio::test]
    async fn work_is_only_used_for_its_own_key_and_low_order_keys_are_not_prepared() {
        let alice = HandshakeAhead::new(Arc::new(StaticKeypair::generate()), b"p");
        let carol = StaticKeypair::generate().public_key();
        alice.prepare_initiation(carol);
        alice.prepare_response([0; PUBLIC_KEY_LEN]);
        until_prepared(&alice, (1, 0)).await;
        let other = StaticKeypair::generate().public_key();
        assert_eq!(alice.initiation(other).remote_static(), other);
        assert!(alice.response(&other).is_none(), "nothing known of it");
        // Carol's ss is known: a response is made on the spot, for carol.
        let made = alice.response(&carol).expect("from the known ss");
        assert_eq!(made.initiator_static(), carol);
        assert_eq!(alice.prepared(), (1, 0), "carol's initiation still waits");
    }

    #[tokio::test(start_paused = true)]
    async fn stale_work_is_dropped() {
        let shelf = Shelf::default();
        shelf.put([1; PUBLIC_KEY_LEN], 7u8);
        tokio::time::advance(KEEP_FOR).await;
        assert_eq!(shelf.take(&[1; PUBLIC_KEY_LEN]), None);
        for k in 0..=MAX_PREPARED as u64 {
            let mut key = [0; PUBLIC_KEY_LEN];
            key[..8].copy_from_slice(&k.to_be_bytes());
            shelf.put(key, 1);
        }
        assert_eq!(shelf.len(), MAX_PREPARED, "bounded");
    }
}
