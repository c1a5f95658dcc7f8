//! The [`Store`] calls on etcd: registration as a lease plus one
//! compare-and-swap transaction on the name, keepalive and leave on the
//! lease, lists read from etcd, subscriptions from the follower's mirror.

use std::time::Duration;

use chat_proto::keys::PUBLIC_KEY_LEN;
use chrono::Utc;
use etcd_client::{Compare, CompareOp, PutOptions, Txn, TxnOp};
use prost::Message;
use tokio::sync::broadcast;

use super::mirror::Mirror;
use super::record::Record;
use super::{EtcdStore, unavailable};
use crate::registry::{
    Event, Grant, MemberInfo, RegistryError, check_registration, hash_token, new_lease_token,
};
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
        record: &[u8],
    ) -> Result<i64, RegistryError> {
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
                None => (
                    Compare::create_revision(member_key.as_str(), CompareOp::Equal, 0),
                    None,
                ),
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

#[tonic::async_trait]
impl Store for EtcdStore {
    async fn register(
        &self,
        name: &str,
        address: &str,
        public_key: &[u8],
        proof_stamp: u64,
    ) -> Result<(Grant, Vec<MemberInfo>), RegistryError> {
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
        }
        .encode_to_vec();
        let revision = match self
            .claim(name, &public_key, proof_stamp, lease, &record)
            .await
        {
            Ok(revision) => revision,
            Err(e) => {
                self.revoke(lease).await;
                return Err(e);
            }
        };
        let members = self.list().await?;
        self.follower.caught_up(revision).await;
        let grant = Grant {
            lease_id: format!("{lease:016x}"),
            lease_token,
            ttl: Duration::from_secs(ttl_seconds as u64),
        };
        Ok((grant, members))
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

    async fn list(&self) -> Result<Vec<MemberInfo>, RegistryError> {
        Ok(Mirror::load(&self.client, &self.members_prefix())
            .await
            .map_err(unavailable)?
            .sorted())
    }

    async fn subscribe(&self) -> (Vec<MemberInfo>, broadcast::Receiver<Event>) {
        // Catch up with everything written through any replica so far.
        self.follower.subscribe().await
    }
}
