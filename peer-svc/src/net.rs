//! Connections to other peers: one lazily connecting HTTP/2 channel per
//! peer address, shared by every call to it (handshakes, deliveries,
//! history pulls), so each peer costs one TCP connection.

use std::{collections::HashMap, sync::Mutex};

use tonic::transport::Channel;

use crate::config::CONNECT_TIMEOUT;

/// A peer address that is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad peer address {address}: {reason}")]
pub struct BadAddress {
    /// The address.
    pub address: String,
    /// What is wrong with it.
    pub reason: String,
}

/// The channels of this peer, by peer address.
#[derive(Debug, Default)]
pub struct Channels {
    by_address: Mutex<HashMap<String, Channel>>,
}

impl Channels {
    /// No connections yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The channel to `address`, made (not yet connected) on first use.
    pub fn get(&self, address: &str) -> Result<Channel, BadAddress> {
        let mut channels = self.by_address.lock().expect("channels lock");
        if let Some(channel) = channels.get(address) {
            return Ok(channel.clone());
        }
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
            .map_err(|e| BadAddress {
                address: address.to_owned(),
                reason: e.to_string(),
            })?
            .connect_timeout(CONNECT_TIMEOUT)
            // Nagle plus delayed ACKs would hold small requests ~40 ms.
            .tcp_nodelay(true)
            .connect_lazy();
        channels.insert(address.to_owned(), channel.clone());
        Ok(channel)
    }
}
