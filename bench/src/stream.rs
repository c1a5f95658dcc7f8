//! The streaming path (`Control/SendStream` → `DeliverStream` → stored)
//! next to a plain tonic stream: the [6/8] stage and `--only-stream`.

use std::{path::Path, sync::atomic::Ordering, time::Duration};

use chat_proto::v1::{DeliverBatch, Envelope, SendRequest, peer_client::PeerClient};
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

use crate::{
    Cli, baseline::Baselines, load::Run, procs::Net, progress, progress::DONE, report::row,
};

/// The streaming stage's runs.
pub struct StreamRuns {
    /// Streamed Send to one peer, counted when stored there.
    pub to_one: Run,
    /// The plain tonic stream it is compared with.
    pub plain_to_one: Run,
    /// Streamed Send to five peers, counted when stored at all five.
    pub to_five: Run,
}

/// [6/8]: streamed Send to one peer and to five, each beside plain tonic
/// streams to the baseline servers; prints their rows.
pub async fn stage(cli: &Cli, baselines: &Baselines) -> anyhow::Result<StreamRuns> {
    let (payload, secs) = (cli.text(), cli.seconds);
    let progress = progress::show("stream");
    let net = Net::start(2).await?;
    let streamed = product(&net.peers[0].1, &payload, secs).await?;
    let plain_stream = plain(baselines.clients[0].clone(), cli.payload, secs).await?;
    drop(progress);
    row(
        "streamed Send→stored at 1 peer, msg/s",
        format!("{:.0}", streamed.per_sec()),
        format!("{:.0}", plain_stream.per_sec()),
        format!("{:.2}", streamed.per_sec() / plain_stream.per_sec()),
    );
    drop(net);
    // The same to 5 peers: bulk broadcast. Baseline: five bare streams at
    // once, counted as messages that reached all five.
    let progress = progress::show("stream to 5");
    let net = Net::start(6).await?;
    let streamed5 = product(&net.peers[0].1, &payload, secs).await?;
    let plain5 = futures::future::try_join_all(
        (0..5).map(|k| plain(baselines.clients[k].clone(), cli.payload, secs)),
    )
    .await?;
    let plain5_per_s = plain5.iter().map(Run::per_sec).sum::<f64>() / 5.0;
    drop(progress);
    row(
        "streamed Send→stored at all of 5, msg/s",
        format!("{:.0}", streamed5.per_sec()),
        format!("{plain5_per_s:.0}"),
        format!("{:.2}", streamed5.per_sec() / plain5_per_s),
    );
    drop(net);
    Ok(StreamRuns {
        to_one: streamed,
        plain_to_one: plain_stream,
        to_five: streamed5,
    })
}

/// `--only-stream N`: SendStream to N peers for `--seconds`, nothing else.
pub async fn only(cli: &Cli, fanout: usize) -> anyhow::Result<()> {
    let net = Net::start_for_perf(fanout + 1).await?;
    let run = product(&net.peers[0].1, &cli.text(), cli.seconds).await?;
    println!("stream to {fanout}: {:.0} msg/s", run.per_sec());
    Ok(())
}

/// Messages streamed through `Control/SendStream` of the peer whose data
/// dir is `sender` for `secs`; counts those delivered to every peer.
pub async fn product(sender: &Path, payload: &str, secs: f64) -> anyhow::Result<Run> {
    let mut client = peer_svc::control_client::connect(sender).await?;
    let (tx, rx) = tokio::sync::mpsc::channel(4096);
    let text = payload.to_owned();
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let producer = tokio::spawn(async move {
        while Instant::now() < deadline {
            let request = SendRequest {
                text: text.clone(),
                id: String::new(),
            };
            if tx.send(request).await.is_err() {
                return;
            }
        }
    });
    let start = Instant::now();
    let mut answers = client
        .send_stream(ReceiverStream::new(rx))
        .await?
        .into_inner();
    let mut delivered = 0usize;
    while let Some(answer) = answers.message().await? {
        let ok = answer
            .response
            .is_some_and(|r| r.deliveries.iter().all(|d| d.status == 1));
        if ok {
            delivered += 1;
            DONE.fetch_add(1, Ordering::Relaxed);
        }
    }
    let elapsed = start.elapsed();
    producer.abort();
    Ok(Run {
        ops: delivered,
        elapsed,
        latencies: Vec::new(),
    })
}

/// The same payload on a plain tonic bidirectional stream to a server that
/// acknowledges each batch and does nothing else (batches of 256).
pub async fn plain(client: PeerClient<Channel>, payload: usize, secs: f64) -> anyhow::Result<Run> {
    const BATCH: usize = 256;
    let mut client = client;
    let (tx, rx) = tokio::sync::mpsc::channel::<DeliverBatch>(8);
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let ciphertext = vec![7u8; payload + 16];
    let producer = tokio::spawn(async move {
        let mut seq = 0u64;
        while Instant::now() < deadline {
            seq += 1;
            let envelopes = (0..BATCH)
                .map(|k| Envelope {
                    session_id: vec![1; 16],
                    counter: seq * BATCH as u64 + k as u64,
                    ciphertext: ciphertext.clone(),
                })
                .collect();
            if tx.send(DeliverBatch { seq, envelopes }).await.is_err() {
                return;
            }
        }
    });
    let start = Instant::now();
    let mut acks = client
        .deliver_stream(ReceiverStream::new(rx))
        .await?
        .into_inner();
    let mut acked = 0usize;
    while let Some(ack) = acks.message().await? {
        acked += ack.results.len();
        DONE.fetch_add(ack.results.len(), Ordering::Relaxed);
    }
    let elapsed = start.elapsed();
    producer.abort();
    Ok(Run {
        ops: acked,
        elapsed,
        latencies: Vec::new(),
    })
}
