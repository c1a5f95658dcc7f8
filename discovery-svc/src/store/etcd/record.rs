//! The member record as stored in etcd (protobuf, so replicas of different
//! versions can read each other's records), and what a replica reads from it.

use chat_proto::keys::{self, PUBLIC_KEY_LEN};
use chrono::{DateTime, Utc};
use prost::Message;
use subtle::ConstantTimeEq;

use crate::registry::{MemberInfo, hash_token};

/// A member as stored in etcd, under both `members/NAME` and `leases/ID`.
#[derive(Clone, PartialEq, Message)]
pub(super) struct Record {
    #[prost(string, tag = "1")]
    pub(super) name: String,
    #[prost(string, tag = "2")]
    pub(super) address: String,
    #[prost(bytes = "vec", tag = "3")]
    pub(super) public_key: Vec<u8>,
    /// When the lease began, Unix milliseconds.
    #[prost(int64, tag = "4")]
    pub(super) joined_at_ms: i64,
    /// SHA-256 of the lease token.
    #[prost(bytes = "vec", tag = "5")]
    pub(super) token_hash: Vec<u8>,
    /// The TTL etcd granted, in seconds.
    #[prost(int64, tag = "6")]
    pub(super) ttl_seconds: i64,
    /// Set by `Leave` just before the lease is revoked.
    #[prost(bool, tag = "7")]
    pub(super) leaving: bool,
    /// The timestamp of the registration proof (microseconds): a
    /// registration of the same key with an older proof is a replay, on any
    /// replica.
    #[prost(uint64, tag = "8")]
    pub(super) proof_stamp: u64,
    /// The IP address the registration came from, for the per-source cap.
    #[prost(string, tag = "9")]
    pub(super) source: String,
}

impl Record {
    /// The member this record describes; `None` if its key is malformed.
    pub(super) fn info(&self) -> Option<MemberInfo> {
        let public_key: [u8; PUBLIC_KEY_LEN] = self.public_key.as_slice().try_into().ok()?;
        Some(MemberInfo {
            name: self.name.clone(),
            address: self.address.clone(),
            public_key,
            fingerprint: keys::fingerprint(&public_key),
            joined_at: DateTime::<Utc>::from_timestamp_millis(self.joined_at_ms)
                .unwrap_or_default(),
        })
    }

    /// Whether `token` is the lease's, compared in constant time.
    pub(super) fn token_matches(&self, token: &str) -> bool {
        self.token_hash.len() == 32 && bool::from(self.token_hash.ct_eq(&hash_token(token)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_check_tokens() {
        let record = Record {
            name: "alice".into(),
            address: "10.0.0.2:7000".into(),
            public_key: vec![7; 32],
            joined_at_ms: 1_700_000_000_123,
            token_hash: hash_token("secret").to_vec(),
            ttl_seconds: 10,
            leaving: false,
            proof_stamp: 1_700_000_000_123_456,
            source: "10.0.0.9".into(),
        };
        let decoded = Record::decode(record.encode_to_vec().as_slice()).unwrap();
        assert_eq!(decoded, record);
        assert!(decoded.token_matches("secret"));
        assert!(!decoded.token_matches("secreT"));
        let info = decoded.info().unwrap();
        assert_eq!(info.joined_at.timestamp_millis(), 1_700_000_000_123);
        let short = Record {
            public_key: vec![7; 31],
            ..record
        };
        assert!(short.info().is_none());
    }
}
