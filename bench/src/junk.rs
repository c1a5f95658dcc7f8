//! The junk flood of the [7/8] stage: random bytes in every field of
//! Deliver and Handshake; every call must be refused, and the peer must
//! stay small and keep serving.

use chat_proto::v1::{
    ConnectionsRequest, DeliverRequest, Envelope, PeerHandshakeRequest, peer_client::PeerClient,
};

use crate::{
    Cli,
    load::{Run, drive},
    procs::Net,
    report::row,
};

/// What the junk flood measured.
pub struct JunkFlood {
    /// Deliver+Handshake pairs that were both refused.
    pub run: Run,
    /// The flooded peer's peak RSS (MB).
    pub peak_rss_mb: f64,
}

/// Floods the first peer of `net` from `--concurrency` tasks for
/// `--seconds`; prints its rows.
pub async fn flood(cli: &Cli, net: &Net) -> anyhow::Result<JunkFlood> {
    // Junk flood: random bytes in every field of Deliver and Handshake from
    // 32 tasks; every call must be refused, and the peer must stay small.
    // (p0 is flooded; the handshake measurement below has p1 answer, whose
    // per-address handshake allowance the flood must not have spent.)
    let target = format!("http://{}", net.peers[0].0.addr);
    let junk_client = PeerClient::connect(target).await?;
    let junk = drive(cli.concurrency, cli.seconds, move |i| {
        let mut c = junk_client.clone();
        async move {
            let noise: Vec<u8> = (0..(i % 700)).map(|k| (k * 31 + i) as u8).collect();
            let refused_deliver = c
                .deliver(DeliverRequest {
                    envelope: Some(Envelope {
                        session_id: noise.iter().take(16).copied().collect(),
                        counter: i as u64,
                        ciphertext: noise.clone(),
                    }),
                })
                .await
                .is_err();
            let refused_handshake = c
                .handshake(PeerHandshakeRequest {
                    message: noise,
                    mac1: Vec::new(),
                })
                .await
                .is_err();
            refused_deliver && refused_handshake
        }
    })
    .await;
    let flood_peak = net.peers[0].0.peak_rss_mb();
    let still_serving = peer_svc::control_client::connect(&net.peers[0].1)
        .await?
        .connections(ConnectionsRequest::default())
        .await
        .is_ok();
    row(
        "junk RPC pairs refused/s (Deliver+Handshake)",
        format!("{:.0}", junk.per_sec()),
        "-".into(),
        "-".into(),
    );
    row(
        "peer peak RSS under the junk flood (MB)",
        format!("{flood_peak:.1}"),
        "-".into(),
        if still_serving {
            "serving".into()
        } else {
            "DOWN".into()
        },
    );
    Ok(JunkFlood {
        run: junk,
        peak_rss_mb: flood_peak,
    })
}
