//! Proof of key possession at `Register` (see `chat_proto::registration`):
//! Discovery's static key, the check of each proof, and the last proof
//! timestamp accepted per key, so a captured proof is refused the second
//! time. Checked before the store is asked, so the memory and the etcd
//! store refuse alike.

use std::{collections::HashMap, sync::Mutex};

use chat_noise::StaticKeypair;
use chat_proto::{
    registration::{self, MAX_SKEW, ProofError},
    v1::{InfoResponse, RegisterRequest},
};

/// Keys remembered before old entries are pruned.
const PRUNE_ABOVE: usize = 4096;

/// Discovery's key and the replay state of registration proofs.
#[derive(Debug)]
pub struct Proofs {
    key: StaticKeypair,
    /// The timestamp of the last proof accepted per public key. An entry
    /// older than twice the skew window can go: such a proof is stale anyway.
    last: Mutex<HashMap<[u8; 32], u64>>,
}

impl Proofs {
    /// Proofs made to `key`.
    pub fn new(key: StaticKeypair) -> Self {
        Self {
            key,
            last: Mutex::new(HashMap::new()),
        }
    }

    /// What a registering peer needs.
    pub fn info(&self) -> InfoResponse {
        InfoResponse {
            public_key: self.key.public_key().to_vec(),
            proof_prologue: registration::PROLOGUE.to_owned(),
            max_skew_seconds: MAX_SKEW.as_secs() as u32,
            now_micros: registration::now_micros(),
        }
    }

    /// Accepts `req`'s proof once: valid for its key, name and address,
    /// fresh, and newer than the last accepted for the key. Returns its
    /// timestamp, which the store compares with the key's live registration
    /// (a replica that never saw a proof still refuses an older one).
    pub fn accept(&self, req: &RegisterRequest) -> Result<u64, ProofError> {
        let now = registration::now_micros();
        let stamp = registration::check(
            &self.key,
            &req.proof,
            &req.public_key,
            &req.name,
            &req.address,
            now,
        )?;
        let key: [u8; 32] = req
            .public_key
            .as_slice()
            .try_into()
            .map_err(|_| ProofError::WrongKey)?;
        let mut last = self.last.lock().expect("proofs lock");
        if last.get(&key).is_some_and(|&seen| stamp <= seen) {
            return Err(ProofError::Replayed);
        }
        if last.len() >= PRUNE_ABOVE {
            let horizon = now.saturating_sub(2 * MAX_SKEW.as_micros() as u64);
            last.retain(|_, seen| *seen > horizon);
        }
        last.insert(key, stamp);
        Ok(stamp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(peer: &StaticKeypair, discovery: &Proofs, stamp: u64) -> RegisterRequest {
        let key: [u8; 32] = discovery.info().public_key.try_into().unwrap();
        RegisterRequest {
            name: "bob".into(),
            address: "127.0.0.1:1".into(),
            public_key: peer.public_key().to_vec(),
            proof: registration::prove(peer, key, "bob", "127.0.0.1:1", stamp).unwrap(),
        }
    }

    #[test]
    fn a_proof_is_accepted_once_and_an_older_one_never() {
        let discovery = Proofs::new(StaticKeypair::generate());
        let bob = StaticKeypair::generate();
        let now = registration::now_micros();
        let first = request(&bob, &discovery, now);
        assert_eq!(discovery.accept(&first), Ok(now));
        assert_eq!(discovery.accept(&first), Err(ProofError::Replayed));
        assert_eq!(
            discovery.accept(&request(&bob, &discovery, now - 1)),
            Err(ProofError::Replayed)
        );
        assert_eq!(
            discovery.accept(&request(&bob, &discovery, now + 1)),
            Ok(now + 1)
        );
        // Another key has its own history.
        let carol = StaticKeypair::generate();
        assert_eq!(discovery.accept(&request(&carol, &discovery, now)), Ok(now));
    }
}
