//! The `chat.v1` wire contract shared by every service and the tests: the code
//! generated from `proto/chat/v1/*.proto`, the encoded descriptor set for server
//! reflection, and the public-key helpers (validation, fingerprint) that
//! Discovery and the peers must agree on.
#![forbid(unsafe_code)]

pub mod conn;
pub mod health;
pub mod keys;
pub mod limits;
pub mod process;
pub mod reflection;
pub mod registration;
pub mod tally;
pub mod validate;

/// Generated code of package `chat.v1`.
pub mod v1 {
    #![allow(missing_docs, clippy::all, clippy::pedantic)]
    tonic::include_proto!("chat.v1");
}

/// The encoded `FileDescriptorSet` of `chat.v1`, for `tonic-reflection`.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/chat_v1_descriptor.bin"));

pub use prost_types::Timestamp;
