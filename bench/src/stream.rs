//! The streaming path next to a plain tonic stream, an open-loop load at a
//! fixed rate, and the progress line shown while a stage runs.

use std::{
    io::IsTerminal,
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use chat_proto::v1::{DeliverBatch, Envelope, SendRequest, peer_client::PeerClient};
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

use crate::Run;

/// Operations finished in the running stage, for the progress line.
pub static DONE: AtomicUsize = AtomicUsize::new(0);

/// Shows `stage`, seconds elapsed and operations done on stderr, updated in
/// place while the returned guard lives (only on a terminal; logs get the
/// step lines alone).
pub fn progress(stage: &str) -> Progress {
    DONE.store(0, Ordering::Relaxed);
    let running = Arc::new(AtomicBool::new(true));
    if std::io::stderr().is_terminal() {
        let (running, stage) = (running.clone(), stage.to_owned());
        tokio::spawn(async move {
            let start = Instant::now();
            while running.load(Ordering::Relaxed) {
                eprint!(
                    "\r      {stage}: {:>5.1} s, {:>9} done ",
                    start.elapsed().as_secs_f64(),
                    DONE.load(Ordering::Relaxed)
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            eprint!("\r{:80}\r", "");
        });
    }
    Progress(running)
}

/// Stops the progress line when dropped.
pub struct Progress(Arc<AtomicBool>);

impl Drop for Progress {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Relaxed);
    }
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
                    sender: "bench".into(),
                    message_id: format!("m{seq}-{k}"),
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

/// Starts `op` `rate` times a second for `secs` (open loop: a slow answer
/// does not slow the offered load) and records each latency.
pub async fn fixed_rate<F, Fut>(rate: u32, secs: f64, op: F) -> Run
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = bool> + Send + 'static,
{
    let mut tick = tokio::time::interval(Duration::from_secs(1) / rate);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let total = (f64::from(rate) * secs) as usize;
    let start = Instant::now();
    let mut calls = Vec::with_capacity(total);
    for i in 0..total {
        tick.tick().await;
        let call = op(i);
        calls.push(tokio::spawn(async move {
            let t0 = Instant::now();
            let ok = call.await;
            DONE.fetch_add(1, Ordering::Relaxed);
            ok.then(|| t0.elapsed())
        }));
    }
    let mut latencies = Vec::with_capacity(total);
    for call in calls {
        if let Ok(Some(l)) = call.await {
            latencies.push(l);
        }
    }
    Run {
        ops: latencies.len(),
        elapsed: start.elapsed(),
        latencies,
    }
}
