//! The handshake measurement — `chat handshake` end to end beside the two
//! plain hops it is made of — in the [7/8] stage and `--only-handshake`.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use chat_proto::v1::{
    ConnectionsRequest, HandshakeRequest, PeerHandshakeRequest, peer_client::PeerClient,
};
use tonic::transport::Channel;

use crate::{
    baseline::Baselines,
    load::Run,
    procs::Net,
    report::{p50_p99, row},
};

/// The handshake measurement: `chat handshake`, and the two plain hops it
/// is made of.
pub struct Handshakes {
    /// `Control/Handshake` p1 from p0: Unix socket, then Peer/Handshake.
    pub chat: Run,
    /// Plain unary RTTs of the same size to a baseline server over TCP.
    pub tcp: Run,
    /// `Control/Connections` to p0 over its Unix socket: one Control call.
    pub control: Run,
}

/// `chat handshake` p1 from p0, back to back, beside as many plain unary
/// RTTs of the same size to a baseline server and as many cheap Control
/// calls over the Unix socket. (Back to back on purpose:
/// with pauses between calls this VM's idle cores halt, and waking them
/// costs more than a whole handshake: a paced plain RTT is 0.55 ms against
/// 0.15 ms back to back.)
async fn measure(data_dir: &Path, mut b: PeerClient<Channel>) -> anyhow::Result<Handshakes> {
    let mut control = peer_svc::control_client::connect(data_dir).await?;
    // Within the default 200 handshakes/s per address (burst 400).
    let rounds: usize = std::env::var("CHAT_BENCH_HANDSHAKES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let mut runs = Vec::new();
    for kind in 0..3 {
        let mut latencies = Vec::new();
        for _ in 0..rounds {
            let t0 = Instant::now();
            match kind {
                0 => {
                    control
                        .handshake(HandshakeRequest { peer: "p1".into() })
                        .await?;
                }
                1 => {
                    b.handshake(PeerHandshakeRequest {
                        message: vec![0; 96],
                        mac1: vec![0; 16],
                    })
                    .await?;
                }
                _ => {
                    control.connections(ConnectionsRequest::default()).await?;
                }
            }
            latencies.push(t0.elapsed());
        }
        runs.push(Run {
            ops: latencies.len(),
            elapsed: Duration::ZERO,
            latencies,
        });
    }
    let mut runs = runs.into_iter();
    let mut next = || runs.next().expect("three runs");
    Ok(Handshakes {
        chat: next(),
        tcp: next(),
        control: next(),
    })
}

/// [7/8]: the handshake measurement from the first peer of `net` (a
/// network of two) against the first baseline server; prints its rows.
pub async fn stage(net: &Net, baselines: &Baselines) -> anyhow::Result<Handshakes> {
    let hs = measure(&net.peers[0].1, baselines.clients[0].clone()).await?;
    let (handshake, rtt) = (&hs.chat, &hs.tcp);
    row(
        "handshake end to end p50 ms (chat handshake)",
        format!("{:.3}", handshake.pct(0.5)),
        format!("{:.3}", rtt.pct(0.5)),
        format!("{:.2}", handshake.pct(0.5) / rtt.pct(0.5)),
    );
    row(
        "  of which a Control call over the socket, p50",
        format!("{:.3}", hs.control.pct(0.5)),
        "-".into(),
        "-".into(),
    );
    Ok(hs)
}

/// `--only-handshake`: the handshake measurement alone, on two peers and
/// one baseline server.
pub async fn only() -> anyhow::Result<()> {
    let net = Net::start(2).await?;
    let baseline = Baselines::start(1).await?;
    let h = measure(&net.peers[0].1, baseline.clients[0].clone()).await?;
    println!(
        "handshake p50/p99 ms {} (plain unary over TCP {}, one Control call over the Unix socket {})",
        p50_p99(&h.chat),
        p50_p99(&h.tcp),
        p50_p99(&h.control),
    );
    Ok(())
}
