//! Proof of key possession at `Discovery/Register`: the first message of a
//! Noise IK handshake from the registering peer's static key to Discovery's
//! static key, carrying a [`RegistrationProof`] (name, address, timestamp).
//!
//! IK's first message (`-> e, es, s, ss`) encrypts its payload under a key
//! mixed from the static-static DH, so only the holder of the registered
//! private key can write one that Discovery decrypts; Discovery's key makes
//! it useless at any other Discovery; the timestamp (checked against a
//! window and against the last accepted proof for the key, as WireGuard
//! does with its TAI64N stamp) makes an old one useless here. No second
//! message is sent.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chat_noise::{Initiator, NoiseError, Responder, StaticKeypair};
use prost::Message;

use crate::v1::{InfoResponse, RegisterRequest, RegistrationProof};

/// The Noise prologue of a registration proof.
pub const PROLOGUE: &str = "p2p-chat/3 discovery-register Noise_IK_25519_ChaChaPoly_SHA256";

/// How far a proof's timestamp may be from Discovery's clock, either way.
pub const MAX_SKEW: Duration = Duration::from_secs(60);

/// Why a proof was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    /// No proof in the request.
    #[error(
        "registration needs a proof that you hold the key's private key (RegisterRequest.proof; `chat register --print` makes one)"
    )]
    Missing,
    /// Not a Noise IK first message to this Discovery from some key.
    #[error("registration proof does not open with this Discovery's key ({0})")]
    Unreadable(NoiseError),
    /// Made with another key than the one registered.
    #[error("registration proof was made with another key than public_key")]
    WrongKey,
    /// The payload is not a `RegistrationProof`.
    #[error("registration proof payload is not a RegistrationProof")]
    BadPayload,
    /// The payload names another name or address than the request.
    #[error("registration proof is for {field} {proved:?}, not {asked:?}")]
    Mismatch {
        /// Which field differs.
        field: &'static str,
        /// What the proof says.
        proved: String,
        /// What the request says.
        asked: String,
    },
    /// Its timestamp is outside the window around Discovery's clock.
    #[error(
        "registration proof is {skew_secs} s away from Discovery's clock (at most {} s); check the clock and make a new proof",
        MAX_SKEW.as_secs()
    )]
    Stale {
        /// How far off, in seconds.
        skew_secs: u64,
    },
    /// Not newer than the last proof accepted for this key.
    #[error("registration proof is not newer than the last one accepted for this key (a replay?)")]
    Replayed,
}

/// Microseconds since the Unix epoch now.
pub fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// A proof that `keypair`'s holder registers `name` at `address` with the
/// Discovery whose static key is `discovery_key`, made at `timestamp_micros`.
pub fn prove(
    keypair: &StaticKeypair,
    discovery_key: [u8; 32],
    name: &str,
    address: &str,
    timestamp_micros: u64,
) -> Result<Vec<u8>, NoiseError> {
    let payload = RegistrationProof {
        name: name.to_owned(),
        address: address.to_owned(),
        timestamp_micros,
    }
    .encode_to_vec();
    Initiator::new(keypair, discovery_key, PROLOGUE.as_bytes())
        .write_message(&payload)
        .map(|(message, _)| message)
}

/// A `RegisterRequest` for `keypair`'s holder as `name` at `address`, proven
/// now to the Discovery that answered `info`.
pub fn request(
    keypair: &StaticKeypair,
    info: &InfoResponse,
    name: &str,
    address: &str,
) -> Result<RegisterRequest, String> {
    let discovery_key: [u8; 32] = info.public_key.as_slice().try_into().map_err(|_| {
        format!(
            "Discovery's key is {} bytes, not 32: is it a p2p-chat Discovery of this version?",
            info.public_key.len()
        )
    })?;
    let proof = prove(keypair, discovery_key, name, address, now_micros())
        .map_err(|e| format!("cannot make a registration proof: {e}"))?;
    Ok(RegisterRequest {
        name: name.to_owned(),
        address: address.to_owned(),
        public_key: keypair.public_key().to_vec(),
        proof,
    })
}

/// Discovery's check of a proof for registering `public_key` as `name` at
/// `address`, at `now_micros`: returns the proof's timestamp, which the
/// caller must find newer than the last it accepted for the key.
pub fn check(
    discovery: &StaticKeypair,
    proof: &[u8],
    public_key: &[u8],
    name: &str,
    address: &str,
    now_micros: u64,
) -> Result<u64, ProofError> {
    if proof.is_empty() {
        return Err(ProofError::Missing);
    }
    let pending = Responder::read_message(discovery, PROLOGUE.as_bytes(), proof)
        .map_err(ProofError::Unreadable)?;
    if pending.remote_static().as_slice() != public_key {
        return Err(ProofError::WrongKey);
    }
    let proved =
        RegistrationProof::decode(pending.payload()).map_err(|_| ProofError::BadPayload)?;
    for (field, proved, asked) in [
        ("name", &proved.name, name),
        ("address", &proved.address, address),
    ] {
        if proved != asked {
            return Err(ProofError::Mismatch {
                field,
                proved: proved.clone(),
                asked: asked.to_owned(),
            });
        }
    }
    let skew = proved.timestamp_micros.abs_diff(now_micros);
    if skew > MAX_SKEW.as_micros() as u64 {
        return Err(ProofError::Stale {
            skew_secs: skew / 1_000_000,
        });
    }
    Ok(proved.timestamp_micros)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_proof_opens_only_for_its_key_name_address_discovery_and_time() {
        let discovery = StaticKeypair::generate();
        let bob = StaticKeypair::generate();
        let now = now_micros();
        let proof = prove(&bob, discovery.public_key(), "bob", "127.0.0.1:1", now).unwrap();
        let bob_key = bob.public_key();
        assert_eq!(
            check(&discovery, &proof, &bob_key, "bob", "127.0.0.1:1", now),
            Ok(now)
        );
        // Someone else's key: a proof made with mallory's key for bob's key.
        let mallory = StaticKeypair::generate();
        let forged = prove(&mallory, discovery.public_key(), "bob", "127.0.0.1:1", now).unwrap();
        assert_eq!(
            check(&discovery, &forged, &bob_key, "bob", "127.0.0.1:1", now),
            Err(ProofError::WrongKey)
        );
        assert!(matches!(
            check(&discovery, &proof, &bob_key, "eve", "127.0.0.1:1", now),
            Err(ProofError::Mismatch { field: "name", .. })
        ));
        assert!(matches!(
            check(&discovery, &proof, &bob_key, "bob", "127.0.0.1:2", now),
            Err(ProofError::Mismatch {
                field: "address",
                ..
            })
        ));
        // Another Discovery cannot open it.
        let other = StaticKeypair::generate();
        assert!(matches!(
            check(&other, &proof, &bob_key, "bob", "127.0.0.1:1", now),
            Err(ProofError::Unreadable(_))
        ));
        // Two minutes later it is stale; so is one from the future.
        let later = now + 120_000_000;
        assert!(matches!(
            check(&discovery, &proof, &bob_key, "bob", "127.0.0.1:1", later),
            Err(ProofError::Stale { skew_secs: 120 })
        ));
        assert_eq!(
            check(&discovery, &[], &bob_key, "bob", "127.0.0.1:1", now),
            Err(ProofError::Missing)
        );
        let mut tampered = proof.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert!(matches!(
            check(&discovery, &tampered, &bob_key, "bob", "127.0.0.1:1", now),
            Err(ProofError::Unreadable(_))
        ));
    }
}
