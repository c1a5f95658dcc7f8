//! `Noise_IK_25519_ChaChaPoly_SHA256`: the Noise Protocol Framework
//! (specification revision 34) IK handshake, transport keys with explicit
//! counters, and an anti-replay window. Pure protocol logic, no I/O.
//!
//! ```
//! use chat_noise::{Initiator, ReplayWindow, Responder, StaticKeypair};
//!
//! let alice = StaticKeypair::generate();
//! let bob = StaticKeypair::generate();
//! let prologue = b"chat v1";
//!
//! // Alice knows Bob's static key in advance (IK).
//! let (msg1, waiting) = Initiator::new(&alice, bob.public_key(), prologue)
//!     .write_message(b"hello")?;
//! let pending = Responder::read_message(&bob, prologue, &msg1)?;
//! assert_eq!(pending.remote_static(), alice.public_key()); // check a directory here
//! let (msg2, bob_transport) = pending.write_message(b"welcome")?;
//! let (payload, alice_transport) = waiting.read_message(&msg2)?;
//! assert_eq!(payload, b"welcome");
//! assert_eq!(alice_transport.session_id(), bob_transport.session_id());
//!
//! let (counter, sealed) = alice_transport.seal_next(b"header", b"hi Bob")?;
//! let mut window = ReplayWindow::new();
//! window.check(counter)?;
//! let opened = bob_transport.open(counter, b"header", &sealed)?;
//! window.accept(counter)?;
//! assert_eq!(opened, b"hi Bob");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Modules: [`keys`] (X25519 key pairs), `symmetric` (CipherState /
//! SymmetricState, internal), [`handshake`] (IK roles), [`session`]
//! (transport), [`replay`] (anti-replay window), [`error`].
#![forbid(unsafe_code)]
#![deny(missing_docs, missing_debug_implementations)]

pub mod error;
pub mod handshake;
pub mod keys;
pub mod replay;
pub mod session;
mod symmetric;

pub use error::{NoiseError, ReplayError};
pub use handshake::{
    INITIATION_MIN_LEN, Initiator, InitiatorWaiting, MAX_INITIATION_PAYLOAD_LEN,
    MAX_RESPONSE_PAYLOAD_LEN, PROTOCOL_NAME, RESPONSE_MIN_LEN, Responder, ResponderPending,
    ResponderPrecomputed, StaticDh,
};
pub use keys::{PUBLIC_KEY_LEN, SECRET_KEY_LEN, StaticKeypair, validate_public_key};
pub use replay::{REPLAY_WINDOW_SIZE, ReplayWindow};
pub use session::{
    MAX_TRANSPORT_MESSAGE_LEN, MAX_TRANSPORT_PAYLOAD_LEN, SESSION_ID_LEN, SessionId,
    TRANSPORT_MIN_LEN, Transport,
};
pub use symmetric::{MAX_MESSAGE_LEN, TAG_LEN};
