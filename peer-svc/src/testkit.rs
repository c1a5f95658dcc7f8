#![cfg(test)]
//! Parts of a peer made in the test process, without servers: for unit
//! tests of the handshaker, delivery and the outbox worker.

use std::sync::Arc;

use chat_noise::StaticKeypair;
use tokio_util::sync::CancellationToken;

use crate::{
    config::{CONNECT_TIMEOUT, Config},
    delivery::Delivery,
    directory::Directory,
    discovery_client::Discovery,
    handshaker::Handshaker,
    membership::Membership,
    net::Channels,
    peers::Peers,
    store::Store,
};

/// Where nothing listens: connections are refused at once.
pub(crate) const NOBODY: &str = "127.0.0.1:1";

/// One peer's parts, as the composition root makes them.
pub(crate) struct Kit {
    pub(crate) keypair: StaticKeypair,
    pub(crate) directory: Arc<Directory>,
    pub(crate) peers: Arc<Peers>,
    pub(crate) store: Arc<Store>,
    pub(crate) handshaker: Arc<Handshaker>,
    pub(crate) delivery: Arc<Delivery>,
    _dir: tempfile::TempDir,
}

impl Kit {
    /// The parts of a peer named `name`, with `config` tuned by `tune`.
    pub(crate) fn new(name: &str, tune: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = Config::new(name, &format!("http://{NOBODY}"), dir.path());
        tune(&mut config);
        let keypair = Arc::new(StaticKeypair::generate());
        let directory = Arc::new(Directory::open(name, dir.path()).expect("directory"));
        let peers = Arc::new(Peers::new());
        let store = Arc::new(Store::open_in_memory().expect("store"));
        let channels = Arc::new(Channels::new());
        let discovery = Discovery::new(&config.discovery, CONNECT_TIMEOUT).expect("discovery");
        let membership = Arc::new(Membership::new(
            name,
            NOBODY,
            keypair.clone(),
            discovery,
            directory.clone(),
            CancellationToken::new(),
        ));
        let handshaker = Arc::new(Handshaker::new(
            &config,
            NOBODY,
            keypair.clone(),
            directory.clone(),
            peers.clone(),
            store.clone(),
            channels.clone(),
            membership,
            Arc::new(crate::admission::Admission::open(store.clone())),
        ));
        let delivery = Arc::new(Delivery::new(
            crate::store::outbox::OutboxLimits {
                per_peer: config.outbox_limit,
                total: config.outbox_total_limit,
            },
            directory.clone(),
            peers.clone(),
            store.clone(),
            handshaker.clone(),
            channels,
        ));
        Self {
            keypair: StaticKeypair::from_secret_bytes(*keypair.secret_bytes()),
            directory,
            peers,
            store,
            handshaker,
            delivery,
            _dir: dir,
        }
    }
}
