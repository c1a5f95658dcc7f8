//! `mac1` on a handshake's first message, after WireGuard's (§5.4.4 of its
//! paper): a MAC over the whole Noise message, keyed by the network and the
//! responder's static public key. Checking it costs one HMAC, no
//! Diffie-Hellman, so a flood of junk is refused for free and never draws on
//! the per-address handshake budget that members' handshakes need.
//!
//! WireGuard keys mac1 with the responder's public key alone, which
//! Discovery publishes here; adding the network key (the founder's Ed25519
//! public key, which only members and invitees learn) means that only
//! holders of an invitation can produce a mac1 at all. In open mode the
//! network part is empty: mac1 then stops only blind junk.
//!
//! ```text
//! key  = SHA-256("p2p-chat/3 mac1" || len(network) as one byte || network || responder_static)
//! mac1 = first 16 bytes of HMAC-SHA-256(key, noise_message)
//! ```

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Bytes of a mac1.
pub const MAC_LEN: usize = 16;

/// Domain separation for the mac1 key.
const LABEL: &[u8] = b"p2p-chat/3 mac1";

/// The mac1 key for handshakes to `responder` in `network` (empty when open).
pub fn key(network: &[u8], responder: &[u8; 32]) -> [u8; 32] {
    let mut hash = Sha256::new();
    hash.update(LABEL);
    hash.update([u8::try_from(network.len()).unwrap_or(u8::MAX)]);
    hash.update(network);
    hash.update(responder);
    hash.finalize().into()
}

/// The mac1 of `message` under `key`.
pub fn mac1(key: &[u8; 32], message: &[u8]) -> [u8; MAC_LEN] {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes any key");
    mac.update(message);
    let tag = mac.finalize().into_bytes();
    let mut out = [0; MAC_LEN];
    out.copy_from_slice(&tag[..MAC_LEN]);
    out
}

/// Whether `mac` is `message`'s mac1 under `key` (compared in constant time).
pub fn verify(key: &[u8; 32], message: &[u8], mac: &[u8]) -> bool {
    mac.len() == MAC_LEN && bool::from(mac1(key, message).ct_eq(mac))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mac_holds_only_for_its_network_responder_and_message() {
        let (network, responder) = ([7u8; 32], [9u8; 32]);
        let k = key(&network, &responder);
        let m = mac1(&k, b"message");
        assert!(verify(&k, b"message", &m));
        assert!(!verify(&k, b"messagE", &m));
        assert!(!verify(&key(&[8; 32], &responder), b"message", &m));
        assert!(!verify(&key(&network, &[1; 32]), b"message", &m));
        assert!(!verify(&key(&[], &responder), b"message", &m));
        assert!(!verify(&k, b"message", &m[..15]));
        assert!(!verify(&k, b"message", &[]));
    }

    /// A known answer, computed independently with Python's hashlib/hmac:
    /// key = sha256(b"p2p-chat/3 mac1" + b"\x20" + bytes([7])*32 + bytes([9])*32),
    /// hmac.new(key, b"message", "sha256").hexdigest()[:32].
    #[test]
    fn known_answer() {
        let k = key(&[7; 32], &[9; 32]);
        assert_eq!(hex::encode(mac1(&k, b"message")), KNOWN);
    }

    const KNOWN: &str = "6134106494b5de4aae70e01ea2d82177";
}
