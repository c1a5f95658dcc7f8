//! Noise `CipherState` and `SymmetricState` (spec §5.1, §5.2) instantiated
//! with ChaChaPoly (§12.3) and SHA-256 (§12.5), plus the §4.3 `HKDF`.
//!
//! Keys and the chaining key live in [`Zeroizing`] buffers; `Debug` output
//! never shows them.

use core::fmt;

use chacha20poly1305::aead::{Aead, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, KeyInit, Nonce};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::error::NoiseError;
use crate::keys::HexBytes;

/// Noise `HASHLEN` for SHA-256 (spec §4.2): 32 bytes.
pub(crate) const HASH_LEN: usize = 32;

/// Cipher key length for ChaChaPoly (spec §4.2: "32 bytes").
pub(crate) const KEY_LEN: usize = 32;

/// Length of the Poly1305 authentication tag appended to every ciphertext
/// (spec §4.2: "ciphertext that is the same size as the plaintext plus 16
/// bytes for authentication data").
pub const TAG_LEN: usize = 16;

/// ChaCha20-Poly1305 (RFC 7539) nonce length in bytes.
const NONCE_LEN: usize = 12;

/// Offset of the little-endian 64-bit counter inside the 96-bit nonce: the
/// nonce is "32 bits of zeros followed by little-endian encoding of n"
/// (spec §12.3).
const NONCE_COUNTER_OFFSET: usize = 4;

/// The reserved nonce value 2^64-1 (spec §5.1): "n ... MUST NOT be used"
/// for encryption; reaching it signals an error.
pub(crate) const RESERVED_NONCE: u64 = u64::MAX;

/// Largest Noise message (spec §3): "Noise messages must be less than or
/// equal to 65535 bytes in length".
pub const MAX_MESSAGE_LEN: usize = 65_535;

/// HKDF counter byte for the first output (spec §4.3).
const HKDF_OUTPUT1_BYTE: u8 = 0x01;

/// HKDF counter byte for the second output (spec §4.3).
const HKDF_OUTPUT2_BYTE: u8 = 0x02;

/// HMAC-SHA256, the `HMAC-HASH` of spec §4.3.
type HmacSha256 = Hmac<Sha256>;

/// Builds the ChaChaPoly nonce for counter `n` (spec §12.3): 32 bits of
/// zeros followed by the little-endian encoding of `n`.
fn nonce_for(n: u64) -> Nonce {
    let mut nonce = [0u8; NONCE_LEN];
    nonce[NONCE_COUNTER_OFFSET..].copy_from_slice(&n.to_le_bytes());
    Nonce::from(nonce)
}

/// A ChaChaPoly cipher keyed with `k`, ready for `ENCRYPT`/`DECRYPT`.
///
/// The key copy inside the cipher object is zeroized on drop (the
/// `chacha20poly1305/zeroize` feature).
pub(crate) struct CipherKey {
    /// The keyed AEAD.
    aead: ChaCha20Poly1305,
}

impl CipherKey {
    /// Keys the AEAD with `k`.
    fn new(k: &[u8; KEY_LEN]) -> Self {
        Self {
            aead: ChaCha20Poly1305::new(Key::cast_from_core(k)),
        }
    }

    /// `ENCRYPT(k, n, ad, plaintext)` (spec §4.2, §12.3): AEAD_CHACHA20_POLY1305
    /// with the nonce built from `n`. Output is `plaintext.len() + TAG_LEN` bytes.
    ///
    /// Callers ensure `n != RESERVED_NONCE`.
    /// Refuses outputs longer than `max_len` ([`MAX_MESSAGE_LEN`] for Noise
    /// messages; the transport passes its own, larger, framing limit).
    pub(crate) fn encrypt(
        &self,
        n: u64,
        ad: &[u8],
        plaintext: &[u8],
        max_len: usize,
    ) -> Result<Vec<u8>, NoiseError> {
        let actual = plaintext.len().saturating_add(TAG_LEN);
        if actual > max_len {
            return Err(NoiseError::MessageTooLarge {
                actual,
                maximum: max_len,
            });
        }
        self.aead
            .encrypt(
                &nonce_for(n),
                Payload {
                    msg: plaintext,
                    aad: ad,
                },
            )
            // Unreachable: the AEAD only fails for inputs of ~2^38 bytes,
            // far above the limits checked above.
            .map_err(|_| NoiseError::MessageTooLarge {
                actual,
                maximum: max_len,
            })
    }

    /// `DECRYPT(k, n, ad, ciphertext)` (spec §4.2, §12.3). Fails with
    /// [`NoiseError::Decrypt`] if authentication fails.
    /// Refuses inputs longer than `max_len`, as [`CipherKey::encrypt`].
    pub(crate) fn decrypt(
        &self,
        n: u64,
        ad: &[u8],
        ciphertext: &[u8],
        max_len: usize,
    ) -> Result<Vec<u8>, NoiseError> {
        if ciphertext.len() < TAG_LEN {
            return Err(NoiseError::Truncated {
                actual: ciphertext.len(),
                minimum: TAG_LEN,
            });
        }
        if ciphertext.len() > max_len {
            return Err(NoiseError::MessageTooLarge {
                actual: ciphertext.len(),
                maximum: max_len,
            });
        }
        self.aead
            .decrypt(
                &nonce_for(n),
                Payload {
                    msg: ciphertext,
                    aad: ad,
                },
            )
            .map_err(|_| NoiseError::Decrypt)
    }
}

impl fmt::Debug for CipherKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CipherKey(<redacted>)")
    }
}

/// Noise `CipherState` (spec §5.1): an optional key `k` and a nonce `n`.
pub(crate) struct CipherState {
    /// `k`: `None` is the spec's "empty" key.
    k: Option<CipherKey>,
    /// `n`: the next nonce to use.
    n: u64,
}

impl CipherState {
    /// `InitializeKey(empty)`.
    fn empty() -> Self {
        Self { k: None, n: 0 }
    }

    /// `InitializeKey(key)`: "Sets k = key. Sets n = 0."
    fn initialize_key(&mut self, key: &[u8; KEY_LEN]) {
        self.k = Some(CipherKey::new(key));
        self.n = 0;
    }

    /// `EncryptWithAd(ad, plaintext)`: "If k is non-empty returns
    /// ENCRYPT(k, n++, ad, plaintext). Otherwise returns plaintext."
    fn encrypt_with_ad(&mut self, ad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, NoiseError> {
        let Some(k) = &self.k else {
            return Ok(plaintext.to_vec());
        };
        // "If incrementing n results in 2^64-1, then any further
        // EncryptWithAd() or DecryptWithAd() calls will signal an error."
        if self.n == RESERVED_NONCE {
            return Err(NoiseError::NonceExhausted);
        }
        let ciphertext = k.encrypt(self.n, ad, plaintext, MAX_MESSAGE_LEN)?;
        self.n += 1;
        Ok(ciphertext)
    }

    /// `DecryptWithAd(ad, ciphertext)`: "If k is non-empty returns
    /// DECRYPT(k, n++, ad, ciphertext). Otherwise returns ciphertext. If an
    /// authentication failure occurs in DECRYPT() then n is not incremented
    /// and an error is signaled to the caller."
    fn decrypt_with_ad(&mut self, ad: &[u8], ciphertext: &[u8]) -> Result<Vec<u8>, NoiseError> {
        let Some(k) = &self.k else {
            return Ok(ciphertext.to_vec());
        };
        if self.n == RESERVED_NONCE {
            return Err(NoiseError::NonceExhausted);
        }
        let plaintext = k.decrypt(self.n, ad, ciphertext, MAX_MESSAGE_LEN)?;
        self.n += 1;
        Ok(plaintext)
    }

    /// Whether `k` is non-empty (`HasKey()`).
    fn has_key(&self) -> bool {
        self.k.is_some()
    }
}

impl fmt::Debug for CipherState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CipherState")
            .field(
                "k",
                &if self.has_key() {
                    "<redacted>"
                } else {
                    "<empty>"
                },
            )
            .field("n", &self.n)
            .finish()
    }
}

/// `HKDF(chaining_key, input_key_material, 2)` of spec §4.3 with
/// `HMAC-SHA256`. Equivalent to RFC 5869 with `salt = chaining_key` and
/// empty `info`.
fn hkdf2(
    chaining_key: &[u8; HASH_LEN],
    input_key_material: &[u8],
) -> (Zeroizing<[u8; HASH_LEN]>, Zeroizing<[u8; HASH_LEN]>) {
    // "Sets temp_key = HMAC-HASH(chaining_key, input_key_material)."
    let temp_key = hmac_sha256(chaining_key, &[input_key_material]);
    // "Sets output1 = HMAC-HASH(temp_key, byte(0x01))."
    let output1 = hmac_sha256(&temp_key, &[&[HKDF_OUTPUT1_BYTE]]);
    // "Sets output2 = HMAC-HASH(temp_key, output1 || byte(0x02))."
    let output2 = hmac_sha256(&temp_key, &[output1.as_slice(), &[HKDF_OUTPUT2_BYTE]]);
    // "If num_outputs == 2 then returns the pair (output1, output2)."
    (output1, output2)
}

/// `HMAC-HASH(key, data)` (RFC 2104) over the concatenation of `data`.
fn hmac_sha256(key: &[u8; HASH_LEN], data: &[&[u8]]) -> Zeroizing<[u8; HASH_LEN]> {
    let mut mac = <HmacSha256 as hmac::KeyInit>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
    for part in data {
        mac.update(part);
    }
    let mut out = Zeroizing::new([0u8; HASH_LEN]);
    out.copy_from_slice(&mac.finalize().into_bytes());
    out
}

/// Noise `SymmetricState` (spec §5.2): the `CipherState`, the chaining key
/// `ck` and the handshake hash `h`.
pub(crate) struct SymmetricState {
    /// The embedded `CipherState`.
    cipher: CipherState,
    /// `ck`: chaining key (secret).
    ck: Zeroizing<[u8; HASH_LEN]>,
    /// `h`: handshake hash (public transcript digest, not secret).
    h: [u8; HASH_LEN],
}

impl SymmetricState {
    /// `InitializeSymmetric(protocol_name)`.
    pub(crate) fn initialize(protocol_name: &[u8]) -> Self {
        let mut h = [0u8; HASH_LEN];
        if protocol_name.len() <= HASH_LEN {
            // "If protocol_name is less than or equal to HASHLEN bytes in
            // length, sets h equal to protocol_name with zero bytes appended
            // to make HASHLEN bytes."
            h[..protocol_name.len()].copy_from_slice(protocol_name);
        } else {
            // "Otherwise sets h = HASH(protocol_name)."
            h.copy_from_slice(&Sha256::digest(protocol_name));
        }
        Self {
            // "Calls InitializeKey(empty)."
            cipher: CipherState::empty(),
            // "Sets ck = h."
            ck: Zeroizing::new(h),
            h,
        }
    }

    /// `MixKey(input_key_material)`.
    pub(crate) fn mix_key(&mut self, input_key_material: &[u8]) {
        // "Sets ck, temp_k = HKDF(ck, input_key_material, 2)."
        let (ck, temp_k) = hkdf2(&self.ck, input_key_material);
        self.ck = ck;
        // "If HASHLEN is 64, then truncates temp_k to 32 bytes." (HASHLEN is
        // 32 here, so temp_k is used whole.)
        // "Calls InitializeKey(temp_k)."
        self.cipher.initialize_key(&temp_k);
    }

    /// `MixHash(data)`: "Sets h = HASH(h || data)."
    pub(crate) fn mix_hash(&mut self, data: &[u8]) {
        let mut hasher = Sha256::new();
        hasher.update(self.h);
        hasher.update(data);
        self.h.copy_from_slice(&hasher.finalize());
    }

    /// `EncryptAndHash(plaintext)`: "Sets ciphertext = EncryptWithAd(h,
    /// plaintext), calls MixHash(ciphertext), and returns ciphertext. Note
    /// that if k is empty, the EncryptWithAd() call will set ciphertext equal
    /// to plaintext."
    pub(crate) fn encrypt_and_hash(&mut self, plaintext: &[u8]) -> Result<Vec<u8>, NoiseError> {
        let ciphertext = self.cipher.encrypt_with_ad(&self.h, plaintext)?;
        self.mix_hash(&ciphertext);
        Ok(ciphertext)
    }

    /// `DecryptAndHash(ciphertext)`: "Sets plaintext = DecryptWithAd(h,
    /// ciphertext), calls MixHash(ciphertext), and returns plaintext. Note
    /// that if k is empty, the DecryptWithAd() call will set plaintext equal
    /// to ciphertext."
    pub(crate) fn decrypt_and_hash(&mut self, ciphertext: &[u8]) -> Result<Vec<u8>, NoiseError> {
        let plaintext = self.cipher.decrypt_with_ad(&self.h, ciphertext)?;
        self.mix_hash(ciphertext);
        Ok(plaintext)
    }

    /// `Split()`: returns `(c1, c2)` keys and the final handshake hash `h`.
    /// The initiator encrypts with `c1` and the responder with `c2`
    /// (spec §5.2 "Split()").
    pub(crate) fn split(self) -> (CipherKey, CipherKey, [u8; HASH_LEN]) {
        // "Sets temp_k1, temp_k2 = HKDF(ck, zerolen, 2)."
        let (temp_k1, temp_k2) = hkdf2(&self.ck, &[]);
        // "If HASHLEN is 64, then truncates temp_k1 and temp_k2 to 32 bytes."
        // (HASHLEN is 32 here.)
        // "Creates two new CipherState objects c1 and c2. Calls
        // c1.InitializeKey(temp_k1) and c2.InitializeKey(temp_k2)."
        // (Transport tracks nonces itself, so only the keys are returned.)
        (CipherKey::new(&temp_k1), CipherKey::new(&temp_k2), self.h)
    }

    /// The current handshake hash `h`.
    #[cfg(test)]
    pub(crate) fn handshake_hash(&self) -> [u8; HASH_LEN] {
        self.h
    }
}

impl fmt::Debug for SymmetricState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SymmetricState")
            .field("cipher", &self.cipher)
            .field("ck", &"<redacted>")
            .field("h", &HexBytes(&self.h))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hkdf_matches_rfc5869_with_salt_ck_and_empty_info() {
        for ikm_len in [0usize, 1, 32, 64, 100] {
            let ck = [0x5a; HASH_LEN];
            let ikm: Vec<u8> = (0..ikm_len).map(|i| i as u8).collect();
            let (o1, o2) = hkdf2(&ck, &ikm);
            let mut okm = [0u8; 2 * HASH_LEN];
            hkdf::Hkdf::<Sha256>::new(Some(&ck), &ikm)
                .expand(&[], &mut okm)
                .unwrap();
            assert_eq!(&okm[..HASH_LEN], o1.as_slice());
            assert_eq!(&okm[HASH_LEN..], o2.as_slice());
        }
    }

    #[test]
    fn nonce_encoding_is_four_zero_bytes_then_le_counter() {
        let n = nonce_for(0x0102_0304_0506_0708);
        assert_eq!(
            n.as_slice(),
            &[0, 0, 0, 0, 0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01]
        );
    }

    #[test]
    fn initialize_pads_short_names_and_hashes_long_ones() {
        let short = SymmetricState::initialize(b"Noise_IK_25519_ChaChaPoly_SHA256");
        assert_eq!(&short.handshake_hash(), b"Noise_IK_25519_ChaChaPoly_SHA256");
        let tiny = SymmetricState::initialize(b"abc");
        let mut expected = [0u8; HASH_LEN];
        expected[..3].copy_from_slice(b"abc");
        assert_eq!(tiny.handshake_hash(), expected);
        let long_name = b"Noise_IKpsk2_25519_ChaChaPoly_SHA256";
        let long = SymmetricState::initialize(long_name);
        assert_eq!(
            long.handshake_hash().as_slice(),
            Sha256::digest(long_name).as_slice()
        );
    }

    #[test]
    fn encrypt_without_key_is_identity_and_still_hashes() {
        let mut a = SymmetricState::initialize(b"x");
        let before = a.handshake_hash();
        assert_eq!(a.encrypt_and_hash(b"hello").unwrap(), b"hello");
        assert_ne!(a.handshake_hash(), before);
    }

    #[test]
    fn cipher_state_nonce_exhaustion_and_no_increment_on_failure() {
        let mut c = CipherState::empty();
        c.initialize_key(&[7; KEY_LEN]);
        let ct = c.encrypt_with_ad(b"ad", b"msg").unwrap();
        let mut d = CipherState::empty();
        d.initialize_key(&[7; KEY_LEN]);
        // Failed authentication leaves n unchanged, so a retry succeeds.
        assert_eq!(d.decrypt_with_ad(b"other", &ct), Err(NoiseError::Decrypt));
        assert_eq!(d.n, 0);
        assert_eq!(d.decrypt_with_ad(b"ad", &ct).unwrap(), b"msg");
        c.n = RESERVED_NONCE;
        assert_eq!(c.encrypt_with_ad(b"", b""), Err(NoiseError::NonceExhausted));
        d.n = RESERVED_NONCE;
        assert_eq!(d.decrypt_with_ad(b"", &ct), Err(NoiseError::NonceExhausted));
    }

    #[test]
    fn debug_output_redacts_keys() {
        let mut s = SymmetricState::initialize(b"Noise_IK_25519_ChaChaPoly_SHA256");
        s.mix_key(&[0x99; 32]);
        let debug = format!("{s:?}");
        assert!(debug.contains("<redacted>"));
        let ck_hex: String = s.ck.iter().map(|b| format!("{b:02x}")).collect();
        assert!(!debug.contains(&ck_hex));
    }
}
