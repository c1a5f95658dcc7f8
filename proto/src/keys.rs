//! Static X25519 public keys as they cross the wire: the rules a key must meet
//! before anyone stores or dials it, and its fingerprint (DESIGN §4): the first
//! 16 bytes of SHA-256(key) in hex, grouped by four like a safety number.

use sha2::{Digest, Sha256};

/// Length of an X25519 public key in bytes.
pub const PUBLIC_KEY_LEN: usize = 32;

/// Bytes of SHA-256 kept in a fingerprint: 128 bits, enough that no one can
/// forge a key with a chosen fingerprint, short enough to read aloud.
const FINGERPRINT_BYTES: usize = 16;

/// Why a public key was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyError {
    /// Not exactly 32 bytes.
    Length(usize),
    /// All zero bytes.
    AllZero,
    /// A point of small order: any Diffie-Hellman with it has a known result.
    LowOrder,
}

impl std::fmt::Display for KeyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyError::Length(n) => write!(f, "must be {PUBLIC_KEY_LEN} bytes, got {n}"),
            KeyError::AllZero => f.write_str("must not be all zero"),
            KeyError::LowOrder => f.write_str("is a low-order X25519 point; use a real public key"),
        }
    }
}

impl std::error::Error for KeyError {}

/// Checks that `bytes` is a usable X25519 public key and returns it as an array.
///
/// Low order is detected as RFC 7748 §6.1 suggests: a Diffie-Hellman with a
/// random (clamped, hence multiple-of-8) scalar gives all zeros exactly when
/// the point is in the small subgroup.
pub fn validate_public_key(bytes: &[u8]) -> Result<[u8; PUBLIC_KEY_LEN], KeyError> {
    let key: [u8; PUBLIC_KEY_LEN] = bytes
        .try_into()
        .map_err(|_| KeyError::Length(bytes.len()))?;
    if key == [0u8; PUBLIC_KEY_LEN] {
        return Err(KeyError::AllZero);
    }
    let probe = x25519_dalek::EphemeralSecret::random();
    let shared = probe.diffie_hellman(&x25519_dalek::PublicKey::from(key));
    if !shared.was_contributory() {
        return Err(KeyError::LowOrder);
    }
    Ok(key)
}

/// The fingerprint of a public key: 16 bytes of SHA-256 as 8 groups of 4 hex digits.
pub fn fingerprint(public_key: &[u8]) -> String {
    let digest = Sha256::digest(public_key);
    let mut out = String::with_capacity(FINGERPRINT_BYTES * 2 + FINGERPRINT_BYTES / 2);
    for (i, pair) in digest[..FINGERPRINT_BYTES].chunks(2).enumerate() {
        if i > 0 {
            out.push(' ');
        }
        for b in pair {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0x0f)]));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The small-order points of Curve25519 in their canonical encodings
    /// (from the list libsodium rejects), plus p and p+1, which reduce to 0 and 1.
    const LOW_ORDER: [&str; 7] = [
        "0000000000000000000000000000000000000000000000000000000000000000",
        "0100000000000000000000000000000000000000000000000000000000000000",
        "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
        "5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157",
        "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    ];

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn every_low_order_point_is_refused() {
        for hex in LOW_ORDER {
            let err = validate_public_key(&unhex(hex)).unwrap_err();
            assert!(
                matches!(err, KeyError::AllZero | KeyError::LowOrder),
                "{hex}"
            );
        }
    }

    #[test]
    fn a_real_key_is_accepted() {
        let secret = x25519_dalek::StaticSecret::random();
        let public = x25519_dalek::PublicKey::from(&secret);
        assert_eq!(
            validate_public_key(public.as_bytes()).unwrap(),
            *public.as_bytes()
        );
    }

    #[test]
    fn wrong_lengths_are_refused() {
        assert_eq!(validate_public_key(&[7; 31]), Err(KeyError::Length(31)));
        assert_eq!(validate_public_key(&[7; 33]), Err(KeyError::Length(33)));
        assert_eq!(validate_public_key(&[]), Err(KeyError::Length(0)));
    }

    #[test]
    fn fingerprint_is_grouped_sha256_prefix() {
        // SHA-256 of 32 zero bytes starts 66687aadf862bd776c8fc18b8e9f8e20.
        assert_eq!(
            fingerprint(&[0u8; 32]),
            "6668 7aad f862 bd77 6c8f c18b 8e9f 8e20"
        );
    }
}
