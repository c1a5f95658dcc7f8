//! Handshake work done ahead of time, off the latency path.
//!
//! Of the ten X25519 operations in an IK handshake, six do not depend on the
//! other side's next message: the initiator's `e, es, s, ss` (an
//! [`Initiator`] runs them when it is made) and the responder's `ss`, `e` and
//! `se` for a known initiator. `ss` is computed once per peer and kept (a
//! [`StaticDh`], as WireGuard keeps its static-static DH). After a handshake
//! with a peer, this peer prepares the next one in the same role on one
//! background thread, so the rekey two minutes later (or a reconnect) only
//! waits for the four operations that need the other side's fresh ephemeral
//! key. The results are exactly those of doing the work in the spec's order.
//!
//! Each prepared ephemeral key is consumed by one handshake. A prepared
//! answer is taken only once its initiator is accepted (authenticated, known,
//! not a replay), so forged or replayed first messages use up nothing and
//! start no work. Everything is kept at most [`KEEP_FOR`] after it was last
//! useful: an ephemeral private key waiting in memory is worth no more to
//! someone who can read this process's memory than the static key beside it,
//! but it should not wait long. Values are found by the other side's static
//! public key, so a value made for a key that has since changed is never
//! used; it just expires.
//!
//! What remains visible from outside: a first message that claims a peer
//! whose `ss` is kept fails one X25519 operation sooner than one claiming a
//! stranger, which tells whoever can time it that this peer talked to that
//! one lately (as watching the traffic would).

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::Duration,
};

use chat_noise::{Initiator, PUBLIC_KEY_LEN, ResponderPrecomputed, StaticDh, StaticKeypair};
use tokio::time::Instant;
use tracing::debug;

/// Prepared work older than this is dropped unused, and `ss` of a peer not
/// handshaken with for this long is forgotten (rekeys come every two
/// minutes while a peer is talked to).
pub const KEEP_FOR: Duration = Duration::from_secs(300);

/// At most this many peers' prepared work per kind.
pub const MAX_PREPARED: usize = 256;

/// A static public key: which peer a prepared value is for.
type Key = [u8; PUBLIC_KEY_LEN];

/// Locks `m`; a panic elsewhere while it was held leaves nothing half-done
/// here (every critical section is a map update), so the data is used.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Values of one kind, by the other side's static key.
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
        let (at, work) = lock(&self.slots).remove(key)?;
        (at.elapsed() < KEEP_FOR).then_some(work)
    }

    /// Stores `work` for `key` (replacing an older one), unless the shelf is
    /// full of other keys.
    fn put(&self, key: Key, work: T) {
        let mut slots = lock(&self.slots);
        slots.retain(|_, (at, _)| at.elapsed() < KEEP_FOR);
        if slots.len() < MAX_PREPARED || slots.contains_key(&key) {
            slots.insert(key, (Instant::now(), work));
        }
    }

    /// How many values wait.
    fn len(&self) -> usize {
        lock(&self.slots).len()
    }
}

impl<T: Clone> Shelf<T> {
    /// A copy of the value for `key`, if it is fresh; it stays, and counts
    /// as fresh from now.
    fn get(&self, key: &Key) -> Option<T> {
        let mut slots = lock(&self.slots);
        let (at, value) = slots.get_mut(key)?;
        if at.elapsed() >= KEEP_FOR {
            slots.remove(key);
            return None;
        }
        *at = Instant::now();
        Some(value.clone())
    }
}

/// Which kind of work to prepare for a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Job {
    /// An initiation toward this responder.
    Initiate(Key),
    /// An answer to this initiator.
    Respond(Key),
}

/// Prepared handshake work of this peer, and the queue of work to prepare.
#[derive(Debug)]
pub struct HandshakeAhead {
    keypair: Arc<StaticKeypair>,
    prologue: &'static [u8],
    initiations: Shelf<Initiator>,
    responses: Shelf<ResponderPrecomputed>,
    /// `DH(s, rs)` per peer key.
    statics: Shelf<Arc<StaticDh>>,
    /// Work asked for and not done yet; whether a worker is running.
    queue: Mutex<(HashSet<Job>, bool)>,
}

/// Marks the worker stopped however `work` ends (a panic included), so a
/// later request starts a new one.
struct WorkerGuard<'a>(&'a HandshakeAhead);

impl Drop for WorkerGuard<'_> {
    fn drop(&mut self) {
        lock(&self.0.queue).1 = false;
    }
}

impl HandshakeAhead {
    /// Nothing prepared yet, for identity `keypair` and `prologue`.
    pub fn new(keypair: Arc<StaticKeypair>, prologue: &'static [u8]) -> Arc<Self> {
        Arc::new(Self {
            keypair,
            prologue,
            initiations: Shelf::default(),
            responses: Shelf::default(),
            statics: Shelf::default(),
            queue: Mutex::new((HashSet::new(), false)),
        })
    }

    /// An initiation toward `responder`: the prepared one if there is one,
    /// else one made now (with the kept `ss` if there is one).
    pub fn initiation(&self, responder: Key) -> Initiator {
        if let Some(ready) = self.initiations.take(&responder) {
            return ready;
        }
        match self.known_static(&responder) {
            Some(ss) => Initiator::with_static(&self.keypair, &ss, self.prologue),
            None => Initiator::new(&self.keypair, responder, self.prologue),
        }
    }

    /// The kept `ss` with `peer`, if any (for
    /// [`chat_noise::Responder::read_message_with_static`]).
    pub fn known_static(&self, peer: &Key) -> Option<Arc<StaticDh>> {
        self.statics.get(peer)
    }

    /// The prepared answer to `initiator`, if there is one (for
    /// [`chat_noise::ResponderPending::write_message_precomputed`]). Take it
    /// only once the initiator is accepted.
    pub fn response(&self, initiator: &Key) -> Option<ResponderPrecomputed> {
        self.responses.take(initiator)
    }

    /// Prepares the next initiation toward `responder` in the background.
    pub fn prepare_initiation(self: &Arc<Self>, responder: Key) {
        self.ask(Job::Initiate(responder));
    }

    /// Prepares the next answer to `initiator` in the background.
    pub fn prepare_response(self: &Arc<Self>, initiator: Key) {
        self.ask(Job::Respond(initiator));
    }

    /// Prepared values waiting: (initiations, responses).
    pub fn prepared(&self) -> (usize, usize) {
        (self.initiations.len(), self.responses.len())
    }

    /// Queues `job` and starts the one worker on the blocking pool if it is
    /// not running. Outside a runtime nothing is prepared: handshakes then
    /// do all their work inline.
    fn ask(self: &Arc<Self>, job: Job) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let mut queue = lock(&self.queue);
        if queue.0.len() >= 2 * MAX_PREPARED {
            return;
        }
        queue.0.insert(job);
        if !queue.1 {
            queue.1 = true;
            let me = self.clone();
            runtime.spawn_blocking(move || me.work());
        }
    }

    /// The worker: prepares until the queue is empty.
    fn work(&self) {
        let _running = WorkerGuard(self);
        loop {
            let job = {
                let mut queue = lock(&self.queue);
                let Some(job) = queue.0.iter().next().copied() else {
                    return;
                };
                queue.0.remove(&job);
                job
            };
            if let Err(e) = self.prepare(job) {
                debug!(error = %e, "cannot prepare a handshake with this key");
            }
        }
    }

    /// Does one job: `ss` with the peer (kept), then the initiation or the
    /// answer.
    fn prepare(&self, job: Job) -> Result<(), chat_noise::NoiseError> {
        let (Job::Initiate(key) | Job::Respond(key)) = job;
        let ss = match self.known_static(&key) {
            Some(ss) => ss,
            None => {
                let ss = Arc::new(StaticDh::new(&self.keypair, key)?);
                self.statics.put(key, ss.clone());
                ss
            }
        };
        match job {
            Job::Initiate(_) => self.initiations.put(
                key,
                Initiator::with_static(&self.keypair, &ss, self.prologue),
            ),
            Job::Respond(_) => self
                .responses
                .put(key, ResponderPrecomputed::new(&self.keypair, key)?),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use chat_noise::Responder;

    use super::*;

    /// Waits until the worker has prepared `want` (initiations, responses).
    async fn until_prepared(ahead: &HandshakeAhead, want: (usize, usize)) {
        for _ in 0..500 {
            if ahead.prepared() == want && !lock(&ahead.queue).1 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("prepared {:?}, want {want:?}", ahead.prepared());
    }

    /// One handshake from `alice` to `bob`, each using what it has
    /// prepared. Returns (message 1, message 2, handshake hash).
    fn handshake(alice: &HandshakeAhead, bob: &HandshakeAhead) -> (Vec<u8>, Vec<u8>, [u8; 32]) {
        let b_key = bob.keypair.public_key();
        let (m1, waiting) = alice.initiation(b_key).write_message(b"hi").unwrap();
        let pending =
            Responder::read_message_with_static(&bob.keypair, b"p", &m1, |rs| bob.known_static(rs))
                .unwrap();
        // Accepted: now the prepared answer may be taken.
        let answer = bob.response(&pending.remote_static());
        let (m2, b) = pending.write_message_precomputed(b"ok", answer).unwrap();
        let (_, a) = waiting.read_message(&m2).unwrap();
        assert_eq!(a.handshake_hash(), b.handshake_hash());
        (m1, m2, a.handshake_hash())
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
        let e_answer = lock(&bob.responses.slots)[&a_key].1.ephemeral_public();
        assert!(alice.known_static(&b_key).is_some() && bob.known_static(&a_key).is_some());

        let (_, m2, first) = handshake(&alice, &bob);
        assert_eq!(m2[..PUBLIC_KEY_LEN], e_answer, "the prepared e answered");
        assert_eq!(alice.prepared(), (0, 0));
        assert_eq!(bob.prepared(), (0, 0));
        // With nothing prepared left: fresh ephemeral keys, same peers.
        let (_, m2_again, second) = handshake(&alice, &bob);
        assert_ne!(m2_again[..PUBLIC_KEY_LEN], e_answer);
        assert_ne!(first, second);
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
        assert!(alice.response(&other).is_none());
        assert!(alice.known_static(&[0; PUBLIC_KEY_LEN]).is_none());
        assert_eq!(alice.prepared(), (1, 0), "carol's initiation still waits");
        assert_eq!(alice.initiation(carol).remote_static(), carol);
        assert_eq!(alice.prepared(), (0, 0));
    }

    #[tokio::test]
    async fn the_worker_starts_again_after_it_stopped() {
        let alice = HandshakeAhead::new(Arc::new(StaticKeypair::generate()), b"p");
        let (bob, carol) = (
            StaticKeypair::generate().public_key(),
            StaticKeypair::generate().public_key(),
        );
        alice.prepare_initiation(bob);
        until_prepared(&alice, (1, 0)).await;
        alice.prepare_initiation(carol);
        until_prepared(&alice, (2, 0)).await;
    }

    #[test]
    fn outside_a_runtime_nothing_is_queued() {
        let alice = HandshakeAhead::new(Arc::new(StaticKeypair::generate()), b"p");
        alice.prepare_response(StaticKeypair::generate().public_key());
        assert!(lock(&alice.queue).0.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn stale_work_is_dropped_and_kept_values_stay_fresh_while_used() {
        let shelf = Shelf::default();
        shelf.put([1; PUBLIC_KEY_LEN], 7u8);
        shelf.put([2; PUBLIC_KEY_LEN], 8u8);
        tokio::time::advance(KEEP_FOR / 2).await;
        assert_eq!(shelf.get(&[2; PUBLIC_KEY_LEN]), Some(8));
        tokio::time::advance(KEEP_FOR / 2).await;
        assert_eq!(shelf.take(&[1; PUBLIC_KEY_LEN]), None);
        assert_eq!(shelf.get(&[2; PUBLIC_KEY_LEN]), Some(8), "used since");
        for k in 0..=MAX_PREPARED as u64 {
            let mut key = [0; PUBLIC_KEY_LEN];
            key[..8].copy_from_slice(&k.to_be_bytes());
            shelf.put(key, 1);
        }
        assert_eq!(shelf.len(), MAX_PREPARED, "bounded");
    }
}
