//! The [`Store`] calls on etcd: registration as a lease plus one
//! compare-and-swap transaction on the name, keepalive and leave on the
//! lease, lists read from etcd, subscriptions from the follower's mirror.

use std::{sync::Arc, time::Duration};

use chat_proto::keys::PUBLIC_KEY_LEN;
use chrono::Utc;
use etcd_client::{Compare, CompareOp, GetOptions, PutOptions, Txn, TxnOp};
use prost::Message;
use tokio::sync::broadcast;

use super::record::Record;
use super::{EtcdStore, unavailable};
use crate::registry::{
    Event, Grant, MemberInfo, RegistryError, admit, check_registration, hash_token, new_lease_token,
};
use chat_proto::tally::Held;

use crate::store::Store;

/// Attempts at the register transaction when other writers race for the name.
const REGISTER_ATTEMPTS: usize = 8;

impl EtcdStore {
    /// Writes `record` under `name` and under `lease`, in one transaction
    /// that holds only if the name is still absent or still held by the
    /// record just read (same public key: a restarted peer, whose old lease
    /// is revoked). Retries when another writer races for the name; returns
    /// the revision of the write. On error the caller revokes `lease`.
    async fn claim(
        &self,
        name: &str,
        public_key: &[u8; PUBLIC_KEY_LEN],
        proof_stamp: u64,
        lease: i64,
        record: &Record,
        reserved: &mut Option<Held<String>>,
    ) -> Result<i64, RegistryError> {
        let source = record.source.as_str();
        let record = record.encode_to_vec();
        let record = record.as_slice();
        let member_key = self.member_key(name);
        for _ in 0..REGISTER_ATTEMPTS {
            let existing = self.read(&member_key).await?;
            let mut ops = vec![
                TxnOp::put(
                    member_key.as_str(),
                    record,
                    Some(PutOptions::new().with_lease(lease)),
                ),
                TxnOp::put(
                    self.lease_key(lease),
                    record,
                    Some(PutOptions::new().with_lease(lease)),
                ),
            ];
            let (condition, replaced) = match &existing {
                None => {
                    // A new name must fit the caps: the members this
                    // replica's mirror counts, plus the registrations it
                    // has in flight (not in the mirror yet). Replicas
                    // racing each other may still overshoot by their own
                    // registrations in flight.
                    if reserved.is_none() {
                        *reserved = Some(self.reserve(source)?);
                    }
                    (
                        Compare::create_revision(member_key.as_str(), CompareOp::Equal, 0),
                        None,
                    )
                }
                Some((held, kv)) => {
                    if held.public_key != public_key {
                        return Err(RegistryError::NameTaken(name.to_owned()));
                    }
                    if held.proof_stamp >= proof_stamp {
                        return Err(RegistryError::StaleProof);
                    }
                    // The same key again (a restarted peer): replace its lease.
                    ops.push(TxnOp::delete(self.lease_key(kv.lease()), None));
                    (
                        Compare::mod_revision(
                            member_key.as_str(),
                            CompareOp::Equal,
                            kv.mod_revision(),
                        ),
                        Some(kv.lease()),
                    )
                }
            };
            let txn = Txn::new().when([condition]).and_then(ops);
            let response = self
                .client
                .kv_client()
                .txn(txn)
                .await
                .map_err(unavailable)?;
            if response.succeeded() {
                if let Some(old) = replaced.filter(|&old| old != lease) {
                    self.revoke(old).await;
                }
                return Ok(response.header().map_or(0, |h| h.revision()));
            }
            // Someone else wrote the name between our read and our write.
        }
        Err(RegistryError::Unavailable(format!(
            "name {name:?} changed {REGISTER_ATTEMPTS} times while registering"
        )))
    }
}

impl EtcdStore {
    /// A place under the caps for one new member from `source`, counting
    /// the mirror and the registrations in flight; held until the mirror
    /// counts the member.
    fn reserve(&self, source: &str) -> Result<Held<String>, RegistryError> {
        self.inflight
            .take(&source.to_owned(), |pending, pending_here| {
                let (total, from_source) = self.follower.counts(source);
                admit(&self.caps, total + pending, from_source + pending_here)
                    .map_err(RegistryError::Full)
            })
    }
}

#[tonic::async_trait]
impl Store for EtcdStore {
    async fn register(
        &self,
        name: &str,
        address: &str,
        public_key: &[u8],
        proof_stamp: u64,
        source: &str,
    ) -> Result<Grant, RegistryError> {
        let public_key = check_registration(name, address, public_key)?;
        let granted = self
            .client
            .lease_client()
            .grant(self.ttl.as_secs().max(1) as i64, None)
            .await
            .map_err(unavailable)?;
        let lease = granted.id();
        let ttl_seconds = granted.ttl().max(1);
        let lease_token = new_lease_token();
        let record = Record {
            name: name.to_owned(),
            address: address.to_owned(),
            public_key: public_key.to_vec(),
            joined_at_ms: Utc::now().timestamp_millis(),
            token_hash: hash_token(&lease_token).to_vec(),
            ttl_seconds,
            leaving: false,
            proof_stamp,
            source: source.to_owned(),
        };
        // Held until the mirror has the new member (or the wait gave up).
        let mut reserved = None;
        let revision = match self
            .claim(
                name,
                &public_key,
                proof_stamp,
                lease,
                &record,
                &mut reserved,
            )
            .await
        {
            Ok(revision) => revision,
            Err(e) => {
                self.revoke(lease).await;
                return Err(e);
            }
        };
        self.follower.caught_up(revision).await;
        drop(reserved);
        Ok(Grant {
            lease_id: format!("{lease:016x}"),
            lease_token,
            ttl: Duration::from_secs(ttl_seconds as u64),
        })
    }

    async fn keep_alive(&self, lease_id: &str, token: &str) -> Result<Duration, RegistryError> {
        let (lease, record) = self.authorize(lease_id, token).await?;
        match self.client.lease_client().keep_alive(lease).await {
            Ok(_) => Ok(Duration::from_secs(record.ttl_seconds.max(1) as u64)),
            // etcd-client reports a lease that is gone as a keepalive error.
            Err(etcd_client::Error::LeaseKeepAliveError(_)) => Err(RegistryError::UnknownLease),
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn leave(&self, lease_id: &str, token: &str) -> Result<(), RegistryError> {
        let (lease, mut record) = self.authorize(lease_id, token).await?;
        let member_key = self.member_key(&record.name);
        // Mark the record as leaving, if it is still this lease's, so the
        // watch reports LEFT rather than EXPIRED when the key goes.
        record.leaving = true;
        let txn = Txn::new()
            .when([Compare::lease(member_key.as_str(), CompareOp::Equal, lease)])
            .and_then([TxnOp::put(
                member_key.as_str(),
                record.encode_to_vec(),
                Some(PutOptions::new().with_lease(lease)),
            )]);
        let marked = self
            .client
            .kv_client()
            .txn(txn)
            .await
            .map_err(unavailable)?
            .succeeded();
        let revoked = self
            .client
            .lease_client()
            .revoke(lease)
            .await
            .map_err(unavailable)?;
        if marked {
            // Only then does the revoke delete a member key to wait for.
            self.follower
                .caught_up(revoked.header().map_or(0, |h| h.revision()))
                .await;
        }
        Ok(())
    }

    async fn holder(&self, lease_id: &str, token: &str) -> Result<MemberInfo, RegistryError> {
        let (_, record) = self.authorize(lease_id, token).await?;
        record.info().ok_or(RegistryError::UnknownLease)
    }

    async fn page(
        &self,
        after: &str,
        limit: usize,
    ) -> Result<(Vec<MemberInfo>, Option<String>), RegistryError> {
        // One range read from etcd (linearizable), in key order, which is
        // name order: from just after `after` to the end of the prefix.
        let prefix = self.members_prefix();
        let start = if after.is_empty() {
            prefix.clone().into_bytes()
        } else {
            let mut key = self.member_key(after).into_bytes();
            key.push(0);
            key
        };
        let mut end = prefix.into_bytes();
        if let Some(last) = end.last_mut() {
            *last += 1; // '/' + 1: the first key past the prefix.
        }
        let limit_i64 = i64::try_from(limit).unwrap_or(i64::MAX);
        let response = self
            .client
            .kv_client()
            .get(
                start,
                Some(GetOptions::new().with_range(end).with_limit(limit_i64)),
            )
            .await
            .map_err(unavailable)?;
        let members = response
            .kvs()
            .iter()
            .filter_map(|kv| Record::decode(kv.value()).ok()?.info())
            .collect();
        // Continue after the last key read, even if its record did not
        // decode (so a page of bad records does not end the listing).
        let prefix = self.members_prefix();
        let next = response
            .kvs()
            .last()
            .filter(|_| response.more())
            .and_then(|kv| kv.key().strip_prefix(prefix.as_bytes()))
            .map(|name| String::from_utf8_lossy(name).into_owned());
        Ok((members, next))
    }

    async fn subscribe(&self) -> (Arc<[MemberInfo]>, broadcast::Receiver<Event>) {
        // Catch up with everything written through any replica so far.
        self.follower.subscribe().await
    }
}
