//! X25519 key pairs and the Noise `DH()` function (spec §4.1, §12.1).
//!
//! [`StaticKeypair`] holds a long-term identity key. The same type is used
//! internally for ephemeral keys, because the test vectors need ephemeral
//! keys built from fixed bytes. Private keys are wiped from memory on drop
//! (x25519-dalek zeroizes `StaticSecret` and `SharedSecret`) and never appear
//! in `Debug` output.

use core::fmt;

use x25519_dalek::{PublicKey, SharedSecret, StaticSecret};
use zeroize::{Zeroize, Zeroizing};

use crate::error::NoiseError;

/// Length in bytes of an X25519 public key (Noise `DHLEN` for 25519, spec §12.1).
pub const PUBLIC_KEY_LEN: usize = 32;

/// Length in bytes of an X25519 private key (a 32-byte scalar, clamped on use
/// as RFC 7748 §5 prescribes).
pub const SECRET_KEY_LEN: usize = 32;

/// Scalar used by [`validate_public_key`] to detect low-order points.
///
/// Any value works: X25519 clamps it to `8·m` with `2^251 <= m < 2^252`, so
/// it kills exactly the points whose order divides the cofactor 8. The prime
/// factors of the curve and twist orders (about 2^252 and 2^253) are larger
/// than `m`, so no other point is mapped to zero.
const LOW_ORDER_PROBE_SCALAR: [u8; SECRET_KEY_LEN] = [1; SECRET_KEY_LEN];

/// The all-zero X25519 output: the encoding of the point at infinity, which is
/// what a DH with a low-order public key produces (RFC 7748 §6.1).
const ALL_ZERO_DH_OUTPUT: [u8; PUBLIC_KEY_LEN] = [0; PUBLIC_KEY_LEN];

/// An X25519 key pair: a long-term identity (static) key.
///
/// The private key is zeroized on drop and redacted from `Debug`.
#[derive(Clone)]
pub struct StaticKeypair {
    /// Private scalar (zeroized on drop by x25519-dalek).
    secret: StaticSecret,
    /// Public key, `secret · basepoint`.
    public: PublicKey,
}

impl StaticKeypair {
    /// Generates a fresh key pair from the operating system's CSPRNG
    /// (Noise `GENERATE_KEYPAIR()`, spec §4.1).
    ///
    /// # Panics
    ///
    /// Panics only if the operating system's random number generator fails,
    /// in which case no key can safely be made.
    #[must_use]
    pub fn generate() -> Self {
        Self::from_secret(StaticSecret::random())
    }

    /// Rebuilds a key pair from its 32-byte private key (as saved by
    /// [`StaticKeypair::secret_bytes`]). Any 32 bytes are a valid private key.
    #[must_use]
    pub fn from_secret_bytes(mut secret: [u8; SECRET_KEY_LEN]) -> Self {
        let keypair = Self::from_secret(StaticSecret::from(secret));
        secret.zeroize();
        keypair
    }

    /// Returns a copy of the private key, for saving to the identity file.
    /// The copy is zeroized when the returned value is dropped.
    #[must_use]
    pub fn secret_bytes(&self) -> Zeroizing<[u8; SECRET_KEY_LEN]> {
        Zeroizing::new(self.secret.to_bytes())
    }

    /// Returns the public key.
    #[must_use]
    pub fn public_key(&self) -> [u8; PUBLIC_KEY_LEN] {
        self.public.to_bytes()
    }

    /// Builds the pair from an x25519-dalek secret.
    fn from_secret(secret: StaticSecret) -> Self {
        let public = PublicKey::from(&secret);
        Self { secret, public }
    }

    /// Noise `DH(key_pair, public_key)` (spec §12.1): "Executes the
    /// Curve25519 DH function (aka "X25519" in RFC 7748). Invalid public key
    /// values will produce an output of all zeros. Alternatively,
    /// implementations are allowed to detect inputs that produce an all-zeros
    /// output and signal an error instead."
    ///
    /// This implementation takes the alternative and signals
    /// [`NoiseError::LowOrderDh`] (a project requirement; the spec allows but
    /// discourages the check, which never affects honest peers).
    pub(crate) fn dh(
        &self,
        remote_public: &[u8; PUBLIC_KEY_LEN],
    ) -> Result<SharedSecret, NoiseError> {
        let shared = self.secret.diffie_hellman(&PublicKey::from(*remote_public));
        // RFC 7748 §6.1: both parties "MAY check, without leaking extra
        // information about the value of K, whether K is the all-zero value
        // and abort if so" (x25519-dalek compares in constant time).
        if shared.was_contributory() {
            Ok(shared)
        } else {
            Err(NoiseError::LowOrderDh)
        }
    }
}

impl fmt::Debug for StaticKeypair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StaticKeypair")
            .field("public", &HexBytes(self.public.as_bytes()))
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// Checks that `bytes` is a usable X25519 public key: exactly
/// [`PUBLIC_KEY_LEN`] bytes and not a low-order point (one whose DH output
/// would be all zeros with every private key, RFC 7748 §6.1).
///
/// Useful for keys that arrive as untrusted byte strings (directory entries,
/// wire formats) before handing them to [`crate::Initiator::new`].
///
/// # Errors
///
/// [`NoiseError::InvalidPublicKey`] if the length is wrong or the point has
/// low order.
pub fn validate_public_key(bytes: &[u8]) -> Result<[u8; PUBLIC_KEY_LEN], NoiseError> {
    let key: [u8; PUBLIC_KEY_LEN] = bytes.try_into().map_err(|_| NoiseError::InvalidPublicKey)?;
    if x25519_dalek::x25519(LOW_ORDER_PROBE_SCALAR, key) == ALL_ZERO_DH_OUTPUT {
        return Err(NoiseError::InvalidPublicKey);
    }
    Ok(key)
}

/// Formats public (non-secret) bytes as lowercase hex in `Debug` output.
pub(crate) struct HexBytes<'a>(pub(crate) &'a [u8]);

impl fmt::Debug for HexBytes<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in self.0 {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The low-order points of Curve25519 (and non-canonical encodings of
    /// them), as listed by libsodium / the X25519 literature.
    const LOW_ORDER_POINTS: [[u8; 32]; 7] = [
        // 0 (order 4)
        [0; 32],
        // 1 (order 1)
        {
            let mut p = [0u8; 32];
            p[0] = 1;
            p
        },
        // order 8
        [
            0xe0, 0xeb, 0x7a, 0x7c, 0x3b, 0x41, 0xb8, 0xae, 0x16, 0x56, 0xe3, 0xfa, 0xf1, 0x9f,
            0xc4, 0x6a, 0xda, 0x09, 0x8d, 0xeb, 0x9c, 0x32, 0xb1, 0xfd, 0x86, 0x62, 0x05, 0x16,
            0x5f, 0x49, 0xb8, 0x00,
        ],
        // order 8
        [
            0x5f, 0x9c, 0x95, 0xbc, 0xa3, 0x50, 0x8c, 0x24, 0xb1, 0xd0, 0xb1, 0x55, 0x9c, 0x83,
            0xef, 0x5b, 0x04, 0x44, 0x5c, 0xc4, 0x58, 0x1c, 0x8e, 0x86, 0xd8, 0x22, 0x4e, 0xdd,
            0xd0, 0x9f, 0x11, 0x57,
        ],
        // p - 1 (order 2)
        [
            0xec, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            0xff, 0xff, 0xff, 0x7f,
        ],
        // p (non-canonical 0)
        [
            0xed, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            0xff, 0xff, 0xff, 0x7f,
        ],
        // p + 1 (non-canonical 1)
        [
            0xee, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            0xff, 0xff, 0xff, 0x7f,
        ],
    ];

    #[test]
    fn secret_round_trips_and_public_matches() {
        let a = StaticKeypair::generate();
        let b = StaticKeypair::from_secret_bytes(*a.secret_bytes());
        assert_eq!(a.public_key(), b.public_key());
        assert_eq!(*a.secret_bytes(), *b.secret_bytes());
    }

    #[test]
    fn rfc7748_section_6_1_vector() {
        // RFC 7748 §6.1 Alice/Bob X25519 example.
        let alice_secret =
            hex_array("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a");
        let alice_public =
            hex_array("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a");
        let bob_secret =
            hex_array("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb");
        let bob_public =
            hex_array("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f");
        let shared = hex_array("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742");
        let alice = StaticKeypair::from_secret_bytes(alice_secret);
        let bob = StaticKeypair::from_secret_bytes(bob_secret);
        assert_eq!(alice.public_key(), alice_public);
        assert_eq!(bob.public_key(), bob_public);
        assert_eq!(alice.dh(&bob_public).unwrap().to_bytes(), shared);
        assert_eq!(bob.dh(&alice_public).unwrap().to_bytes(), shared);
    }

    #[test]
    fn dh_with_every_low_order_point_is_rejected() {
        let local = StaticKeypair::generate();
        for point in LOW_ORDER_POINTS {
            assert_eq!(local.dh(&point).err(), Some(NoiseError::LowOrderDh));
            // The high bit is ignored by X25519 (RFC 7748 §5), so the same
            // points with bit 255 set are low order too.
            let mut high = point;
            high[31] |= 0x80;
            assert_eq!(local.dh(&high).err(), Some(NoiseError::LowOrderDh));
            assert_eq!(
                validate_public_key(&point),
                Err(NoiseError::InvalidPublicKey)
            );
            assert_eq!(
                validate_public_key(&high),
                Err(NoiseError::InvalidPublicKey)
            );
        }
    }

    #[test]
    fn validate_public_key_accepts_real_keys_and_checks_length() {
        for _ in 0..64 {
            let public = StaticKeypair::generate().public_key();
            assert_eq!(validate_public_key(&public), Ok(public));
            assert_eq!(
                validate_public_key(&public[..PUBLIC_KEY_LEN - 1]),
                Err(NoiseError::InvalidPublicKey)
            );
            let mut long = public.to_vec();
            long.push(0);
            assert_eq!(
                validate_public_key(&long),
                Err(NoiseError::InvalidPublicKey)
            );
        }
        assert_eq!(validate_public_key(&[]), Err(NoiseError::InvalidPublicKey));
    }

    #[test]
    fn debug_redacts_secret() {
        let secret = [0x42; SECRET_KEY_LEN];
        let keypair = StaticKeypair::from_secret_bytes(secret);
        let debug = format!("{keypair:?}");
        assert!(debug.contains("<redacted>"));
        assert!(!debug.contains("4242"));
        let public_hex: String = keypair
            .public_key()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert!(debug.contains(&public_hex));
    }

    fn hex_array(s: &str) -> [u8; 32] {
        hex::decode(s).unwrap().try_into().unwrap()
    }
}
