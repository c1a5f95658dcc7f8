//! Fifty peers on one machine: does one broadcast reach the other 49, and
//! what do all fifty take in memory — the [8/8] stage.

use chat_proto::v1::SendRequest;

use crate::{procs::Net, report::row};

/// What the fifty-peer stage measured.
pub struct FiftyPeers {
    /// Peers a broadcast from the first reached (of 49).
    pub reached: usize,
    /// The RSS of all fifty peers together (MB).
    pub total_rss_mb: f64,
}

/// [8/8]: starts fifty peers, sends `payload` from the first to all, and
/// sums their RSS; prints its rows.
pub async fn stage(payload: &str) -> anyhow::Result<FiftyPeers> {
    let fifty = Net::start(50).await?;
    let mut sender = peer_svc::control_client::connect(&fifty.peers[0].1).await?;
    let report = sender
        .send(SendRequest {
            text: payload.to_owned(),
            id: String::new(),
        })
        .await?
        .into_inner();
    let reached = report.deliveries.iter().filter(|d| d.status == 1).count();
    let peers50_rss: f64 = fifty.peers.iter().map(|(p, _)| p.rss_mb()).sum();
    row(
        "50 peers: broadcast reached (of 49)",
        format!("{reached}"),
        "-".into(),
        "-".into(),
    );
    row(
        "50 peers: total RSS (MB)",
        format!("{peers50_rss:.0}"),
        "-".into(),
        "-".into(),
    );
    drop(fifty);
    Ok(FiftyPeers {
        reached,
        total_rss_mb: peers50_rss,
    })
}
