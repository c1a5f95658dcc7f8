//! Memory of the processes under test: the idle RSS of a fresh discovery-svc
//! and peer-svc, and the peers' mean RSS after load.

use std::time::Duration;

use crate::{procs::Net, report::row};

/// The idle RSS of a fresh discovery-svc and a fresh peer-svc.
pub struct Idle {
    /// The discovery-svc's RSS (MB).
    pub discovery_mb: f64,
    /// The peer-svc's RSS (MB).
    pub peer_mb: f64,
}

/// [1/8]: the RSS of `net` (a discovery and one peer, just started) after
/// they settle for a second; prints its rows.
pub async fn idle(net: &Net) -> Idle {
    tokio::time::sleep(Duration::from_secs(1)).await;
    let discovery_mb = net.discovery.rss_mb();
    let peer_mb = net.peers[0].0.rss_mb();
    row(
        "idle RSS discovery-svc (MB)",
        format!("{discovery_mb:.1}"),
        "-".into(),
        "-".into(),
    );
    row(
        "idle RSS peer-svc (MB)",
        format!("{peer_mb:.1}"),
        "-".into(),
        "-".into(),
    );
    Idle {
        discovery_mb,
        peer_mb,
    }
}

/// Prints the mean RSS of the peers of `net`, just after a load.
pub fn mean_rss_after_load(net: &Net) {
    let rss: f64 = net.peers.iter().map(|(p, _)| p.rss_mb()).sum::<f64>() / net.peers.len() as f64;
    row(
        "peer RSS after load (MB, mean of 6)",
        format!("{rss:.1}"),
        "-".into(),
        "-".into(),
    );
}
