//! `chat-bench`: drives the real product path — `Control/Send` over the Unix
//! socket → seal → `Peer/Deliver` → open → store — across real `peer-svc`
//! processes, and a plain tonic unary baseline (a `Peer` server that does
//! nothing, in its own process) with the same payload and concurrency in the
//! same run. Prints a table, then one machine-readable `bench:` line.
#![forbid(unsafe_code)]

mod discovery;
mod stream;

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use chat_proto::v1::{
    ConnectionsRequest, DeliverBatch, DeliverBatchAck, DeliverRequest, DeliverResponse,
    DeliverResult, Envelope, HandshakeRequest, PeerHandshakeRequest, PeerHandshakeResponse,
    PeerHistoryRequest, PeerHistoryResponse, SendRequest,
    peer_client::PeerClient,
    peer_server::{Peer, PeerServer},
};
use clap::Parser;
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
};
use tonic::transport::Channel;

/// The offered load of the steady-rate latency measure (messages/s).
const STEADY_RATE: u32 = 1000;

/// Seconds at the steady rate before the measured ones.
const STEADY_WARM_UP: f64 = 1.0;

/// Options.
#[derive(Debug, Parser)]
#[command(about = "p2p-chat load generator and benchmark")]
struct Cli {
    /// Seconds per throughput measurement.
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Calls in flight at once.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Payload bytes per message.
    #[arg(long, default_value_t = 1024)]
    payload: usize,
    /// Instead of the benchmark: stream messages from one peer to two others
    /// for this many seconds and sample every peer's RSS (memory under
    /// sustained load).
    #[arg(long)]
    soak: Option<u64>,
    /// Instead of the benchmark: only unary Send to N peers for --seconds
    /// (for profiling one stage with perf).
    #[arg(long)]
    only_send: Option<usize>,
    /// Instead of the benchmark: only the handshake measurement.
    #[arg(long)]
    only_handshake: bool,
    /// Instead of the benchmark: only SendStream to N peers for --seconds
    /// (for profiling one stage with perf).
    #[arg(long)]
    only_stream: Option<usize>,
    /// Instead of the benchmark: only Send to N peers at the steady offered
    /// rate (1,000 msg/s) for --seconds, and its latency percentiles.
    #[arg(long)]
    only_steady: Option<usize>,
    /// Internal: run the baseline server and print its address.
    #[arg(long, hide = true)]
    baseline_server: bool,
}

/// A `Peer` server that accepts everything and does no work: plain tonic.
#[derive(Debug, Default)]
struct NullPeer;

type HistoryStream = std::pin::Pin<
    Box<dyn futures::Stream<Item = Result<PeerHistoryResponse, tonic::Status>> + Send>,
>;

#[tonic::async_trait]
impl Peer for NullPeer {
    async fn handshake(
        &self,
        r: tonic::Request<PeerHandshakeRequest>,
    ) -> Result<tonic::Response<PeerHandshakeResponse>, tonic::Status> {
        Ok(tonic::Response::new(PeerHandshakeResponse {
            message: r.into_inner().message,
        }))
    }
    async fn deliver(
        &self,
        r: tonic::Request<DeliverRequest>,
    ) -> Result<tonic::Response<DeliverResponse>, tonic::Status> {
        let id = r
            .into_inner()
            .envelope
            .map(|e| e.message_id)
            .unwrap_or_default();
        Ok(tonic::Response::new(DeliverResponse {
            message_id: id,
            duplicate: false,
        }))
    }
    type DeliverStreamStream = std::pin::Pin<
        Box<dyn futures::Stream<Item = Result<DeliverBatchAck, tonic::Status>> + Send>,
    >;
    /// Acknowledges each batch at once: a plain tonic bidirectional stream.
    async fn deliver_stream(
        &self,
        r: tonic::Request<tonic::Streaming<DeliverBatch>>,
    ) -> Result<tonic::Response<Self::DeliverStreamStream>, tonic::Status> {
        let acks = futures::StreamExt::map(r.into_inner(), |batch| {
            batch.map(|b| DeliverBatchAck {
                seq: b.seq,
                results: b
                    .envelopes
                    .into_iter()
                    .map(|e| DeliverResult {
                        message_id: e.message_id,
                        ..Default::default()
                    })
                    .collect(),
            })
        });
        Ok(tonic::Response::new(Box::pin(acks)))
    }
    type HistoryStream = HistoryStream;
    async fn history(
        &self,
        _: tonic::Request<PeerHistoryRequest>,
    ) -> Result<tonic::Response<HistoryStream>, tonic::Status> {
        Err(tonic::Status::unimplemented("baseline"))
    }
}

/// A child process that is killed when dropped.
struct Proc {
    child: Child,
    addr: String,
}

impl Proc {
    async fn spawn(bin: &Path, args: &[&str]) -> anyhow::Result<Self> {
        let mut child = Command::new(bin)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .env("RUST_LOG", "warn")
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("spawn {}", bin.display()))?;
        let mut lines = BufReader::new(child.stdout.take().context("stdout")?).lines();
        let first = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
            .await
            .context("start timeout")??
            .context("exited early")?;
        let addr = first
            .rsplit_once(" listening on ")
            .context("no listening line")?
            .1
            .to_owned();
        // Keep draining stdout (the console) so the peer never blocks on it.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Self { child, addr })
    }

    fn rss_mb(&self) -> f64 {
        self.status_mb("VmRSS:")
    }

    /// Peak resident memory so far.
    fn peak_rss_mb(&self) -> f64 {
        self.status_mb("VmHWM:")
    }

    fn status_mb(&self, field: &str) -> f64 {
        let pid = self.child.id().unwrap_or(0);
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|s| {
                s.lines().find(|l| l.starts_with(field)).and_then(|l| {
                    l.split_whitespace()
                        .nth(1)
                        .and_then(|kb| kb.parse::<f64>().ok())
                })
            })
            .map(|kb| kb / 1024.0)
            .unwrap_or(f64::NAN)
    }
}

fn sibling(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let path = exe.parent().context("exe dir")?.join(name);
    if !path.exists() {
        bail!(
            "{} missing: build with `cargo build --release --workspace --bins`",
            path.display()
        );
    }
    Ok(path)
}

/// Latency samples and a count over a wall-clock window.
#[derive(Debug)]
struct Run {
    ops: usize,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

impl Run {
    fn per_sec(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64()
    }
    fn pct(&self, p: f64) -> f64 {
        let mut l = self.latencies.clone();
        l.sort();
        if l.is_empty() {
            return f64::NAN;
        }
        l[((l.len() - 1) as f64 * p) as usize].as_secs_f64() * 1000.0
    }
}

/// Runs `op` from `concurrency` tasks for `seconds`.
async fn drive<F, Fut>(concurrency: usize, seconds: f64, op: F) -> Run
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let op = Arc::new(op);
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let start = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|t| {
            let op = op.clone();
            tokio::spawn(async move {
                let mut lat = Vec::new();
                let mut i = 0;
                while Instant::now() < deadline {
                    let t0 = Instant::now();
                    if op(t * 1_000_000 + i).await {
                        lat.push(t0.elapsed());
                        stream::DONE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    i += 1;
                }
                lat
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await.unwrap_or_default());
    }
    Run {
        ops: latencies.len(),
        elapsed: start.elapsed(),
        latencies,
    }
}

/// A network: discovery plus `n` peers, all connected.
struct Net {
    _dir: tempfile::TempDir,
    discovery: Proc,
    peers: Vec<(Proc, PathBuf)>,
}

impl Net {
    /// Starts `n` peers and prints their pids, for `perf record -p`.
    async fn start_for_perf(n: usize) -> anyhow::Result<Self> {
        let net = Self::start(n).await?;
        let pids: Vec<String> = net
            .peers
            .iter()
            .map(|(p, _)| p.child.id().unwrap_or(0).to_string())
            .collect();
        eprintln!("peer pids (sender first): {}", pids.join(" "));
        Ok(net)
    }

    async fn start(n: usize) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let discovery =
            Proc::spawn(&sibling("discovery-svc")?, &["--listen", "127.0.0.1:0"]).await?;
        let url = format!("http://{}", discovery.addr);
        let mut peers = Vec::new();
        for i in 0..n {
            let data = dir.path().join(format!("p{i}"));
            let p = Proc::spawn(
                &sibling("peer-svc")?,
                &[
                    "--name",
                    &format!("p{i}"),
                    "--discovery",
                    &url,
                    "--data-dir",
                    data.to_str().unwrap(),
                ],
            )
            .await?;
            peers.push((p, data));
        }
        for (_, data) in &peers {
            let mut c = peer_svc::control_client::connect(data).await?;
            let deadline = Instant::now() + Duration::from_secs(20);
            while c
                .connections(ConnectionsRequest {})
                .await?
                .into_inner()
                .connections
                .len()
                < n - 1
            {
                if Instant::now() > deadline {
                    bail!("peers did not connect");
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        Ok(Self {
            _dir: dir,
            discovery,
            peers,
        })
    }
}

fn row(name: &str, value: String, baseline: String, ratio: String) {
    println!("{name:<44} {value:>16} {baseline:>16} {ratio:>8}");
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if cli.baseline_server {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        println!("baseline listening on {}", listener.local_addr()?);
        tonic::transport::Server::builder()
            .add_service(PeerServer::new(NullPeer))
            .serve_with_incoming(
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
            )
            .await?;
        return Ok(());
    }
    let payload = "x".repeat(cli.payload);
    if cli.only_handshake {
        let net = Net::start(2).await?;
        let baseline = Proc::spawn(&std::env::current_exe()?, &["--baseline-server"]).await?;
        let b = PeerClient::connect(format!("http://{}", baseline.addr)).await?;
        let h = measure_handshakes(&net.peers[0].1, b).await?;
        println!(
            "handshake p50/p99 ms {} (plain unary over TCP {}, one Control call over the Unix socket {})",
            p50_p99(&h.chat),
            p50_p99(&h.tcp),
            p50_p99(&h.control),
        );
        return Ok(());
    }
    if let Some(seconds) = cli.soak {
        return soak(seconds, &payload).await;
    }
    if let Some(fanout) = cli.only_stream {
        let net = Net::start_for_perf(fanout + 1).await?;
        let run = stream::product(&net.peers[0].1, &payload, cli.seconds).await?;
        println!("stream to {fanout}: {:.0} msg/s", run.per_sec());
        return Ok(());
    }
    if let Some(fanout) = cli.only_steady {
        let net = Net::start_for_perf(fanout + 1).await?;
        let sender = peer_svc::control_client::connect(&net.peers[0].1).await?;
        let run = steady(cli.seconds, move |_| {
            send_to_all(sender.clone(), payload.clone())
        })
        .await;
        println!(
            "at {STEADY_RATE} msg/s to {fanout}: p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms",
            run.pct(0.5),
            run.pct(0.9),
            run.pct(0.99)
        );
        return Ok(());
    }
    if let Some(fanout) = cli.only_send {
        let net = Net::start_for_perf(fanout + 1).await?;
        let sender = peer_svc::control_client::connect(&net.peers[0].1).await?;
        let run = drive(cli.concurrency, cli.seconds, move |_| {
            send_to_all(sender.clone(), payload.clone())
        })
        .await;
        println!(
            "send to {fanout}: {:.0} msg/s, p50 {:.2} ms, p99 {:.2} ms",
            run.per_sec(),
            run.pct(0.5),
            run.pct(0.99)
        );
        return Ok(());
    }
    let secs = cli.seconds;
    let conc = cli.concurrency;
    eprintln!("[1/8] idle memory…");
    println!(
        "{:<44} {:>16} {:>16} {:>8}",
        "measure", "p2p-chat", "plain tonic", "ratio"
    );

    // Idle RSS: a fresh discovery and a fresh peer, after they settle.
    let idle = Net::start(1).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let discovery_rss = idle.discovery.rss_mb();
    let peer_rss = idle.peers[0].0.rss_mb();
    row(
        "idle RSS discovery-svc (MB)",
        format!("{discovery_rss:.1}"),
        "-".into(),
        "-".into(),
    );
    row(
        "idle RSS peer-svc (MB)",
        format!("{peer_rss:.1}"),
        "-".into(),
        "-".into(),
    );

    eprintln!("[2/8] discovery: Register+Leave and watch latency, memory store vs etcd…");
    let progress = stream::progress("discovery");
    // Discoveries of their own with no peers watching: the service alone.
    let memory = discovery::on_memory(secs).await?;
    let etcd_dir = tempfile::tempdir()?;
    let etcd = match discovery::on_etcd(secs, etcd_dir.path()).await {
        Ok(run) => Some(run),
        Err(e) => {
            eprintln!("      etcd store not measured: {e:#}");
            None
        }
    };
    drop(progress);
    let pairs = &memory.pairs;
    row(
        "discovery Register+Leave pairs/s, memory",
        format!("{:.0}", pairs.per_sec()),
        "-".into(),
        "-".into(),
    );
    row(
        "watch event latency p50/p99 ms, memory",
        p50_p99(&memory.watch_same),
        "-".into(),
        "-".into(),
    );
    if let Some(etcd) = &etcd {
        row(
            "  same on etcd (vs memory), pairs/s",
            format!("{:.0}", etcd.pairs.per_sec()),
            format!("{:.0}", pairs.per_sec()),
            format!("{:.2}", etcd.pairs.per_sec() / pairs.per_sec()),
        );
        row(
            "  etcd watch p50/p99 ms, same replica",
            p50_p99(&etcd.watch_same),
            p50_p99(&memory.watch_same),
            format!(
                "{:.1}",
                etcd.watch_same.pct(0.5) / memory.watch_same.pct(0.5)
            ),
        );
        if let Some(other) = &etcd.watch_other {
            row(
                "  etcd watch p50/p99 ms, other replica",
                p50_p99(other),
                p50_p99(&memory.watch_same),
                format!("{:.1}", other.pct(0.5) / memory.watch_same.pct(0.5)),
            );
        }
    }
    drop(idle);

    eprintln!("[3/8] baseline servers…");
    let me = std::env::current_exe()?;
    let mut baselines = Vec::new();
    for _ in 0..5 {
        baselines.push(Proc::spawn(&me, &["--baseline-server"]).await?);
    }
    let baseline_clients: Vec<PeerClient<Channel>> = futures::future::try_join_all(
        baselines
            .iter()
            .map(|b| PeerClient::connect(format!("http://{}", b.addr))),
    )
    .await?;
    let baseline_clients = Arc::new(baseline_clients);
    let plain = |fanout: usize| {
        let clients = baseline_clients.clone();
        let ciphertext = vec![7u8; cli.payload + 16];
        drive(conc, secs, move |i| {
            plain_fanout(clients.clone(), ciphertext.clone(), fanout, i)
        })
    };

    let mut results = Vec::new();
    let mut steady_p99 = f64::NAN;
    for (step, fanout) in [(4, 1usize), (5, 5usize)] {
        eprintln!("[{step}/8] Send → delivered to {fanout} peer(s)…");
        let progress = stream::progress(&format!("Send to {fanout}"));
        let net = Net::start(fanout + 1).await?;
        let sender = peer_svc::control_client::connect(&net.peers[0].1).await?;
        let text = payload.clone();
        let product = drive(conc, secs, move |_| {
            send_to_all(sender.clone(), text.clone())
        })
        .await;
        let base = plain(fanout).await;
        let ratio = product.per_sec() / base.per_sec();
        row(
            &format!("Send→delivered to {fanout}, msg/s ({conc} in flight)"),
            format!("{:.0}", product.per_sec()),
            format!("{:.0}", base.per_sec()),
            format!("{ratio:.2}"),
        );
        row(
            &format!("  p50 / p99 ms to the last of {fanout}"),
            format!("{:.2} / {:.2}", product.pct(0.5), product.pct(0.99)),
            format!("{:.2} / {:.2}", base.pct(0.5), base.pct(0.99)),
            "-".into(),
        );
        if fanout == 5 {
            let rss: f64 =
                net.peers.iter().map(|(p, _)| p.rss_mb()).sum::<f64>() / net.peers.len() as f64;
            row(
                "peer RSS after load (MB, mean of 6)",
                format!("{rss:.1}"),
                "-".into(),
                "-".into(),
            );
        }
        if fanout == 5 {
            // p99 at a steady offered load, open loop, against the same.
            drop(progress);
            let progress = stream::progress("1000 msg/s to 5");
            let sender = peer_svc::control_client::connect(&net.peers[0].1).await?;
            let text = payload.clone();
            let steady_run = steady(secs, move |_| send_to_all(sender.clone(), text.clone())).await;
            let clients = baseline_clients.clone();
            let ciphertext = vec![7u8; cli.payload + 16];
            let steady_base = steady(secs, move |i| {
                plain_fanout(clients.clone(), ciphertext.clone(), 5, i)
            });
            let steady_base = steady_base.await;
            drop(progress);
            row(
                &format!("  at {STEADY_RATE} msg/s offered: p50 / p99 ms"),
                format!("{:.2} / {:.2}", steady_run.pct(0.5), steady_run.pct(0.99)),
                format!("{:.2} / {:.2}", steady_base.pct(0.5), steady_base.pct(0.99)),
                "-".into(),
            );
            steady_p99 = steady_run.pct(0.99);
        }
        results.push((fanout, product, base));
    }

    eprintln!("[6/8] streaming: Control/SendStream → DeliverStream → stored, to 1 and to 5 peers…");
    let progress = stream::progress("stream");
    let net = Net::start(2).await?;
    let streamed = stream::product(&net.peers[0].1, &payload, secs).await?;
    let plain_stream = stream::plain(baseline_clients[0].clone(), cli.payload, secs).await?;
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
    let progress = stream::progress("stream to 5");
    let net = Net::start(6).await?;
    let streamed5 = stream::product(&net.peers[0].1, &payload, secs).await?;
    let plain5 = futures::future::try_join_all(
        (0..5).map(|k| stream::plain(baseline_clients[k].clone(), cli.payload, secs)),
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

    eprintln!("[7/8] handshakes, seal/open, junk flood…");
    let net = Net::start(2).await?;
    // Junk flood: random bytes in every field of Deliver and Handshake from
    // 32 tasks; every call must be refused, and the peer must stay small.
    // (p0 is flooded; the handshake measurement below has p1 answer, whose
    // per-address handshake allowance the flood must not have spent.)
    let target = format!("http://{}", net.peers[0].0.addr);
    let junk_client = PeerClient::connect(target).await?;
    let junk = drive(conc, secs, move |i| {
        let mut c = junk_client.clone();
        async move {
            let noise: Vec<u8> = (0..(i % 700)).map(|k| (k * 31 + i) as u8).collect();
            let refused_deliver = c
                .deliver(DeliverRequest {
                    envelope: Some(Envelope {
                        session_id: noise.iter().take(16).copied().collect(),
                        counter: i as u64,
                        sender: "p0".into(),
                        message_id: format!("junk{i}"),
                        ciphertext: noise.clone(),
                    }),
                })
                .await
                .is_err();
            let refused_handshake = c
                .handshake(PeerHandshakeRequest { message: noise })
                .await
                .is_err();
            refused_deliver && refused_handshake
        }
    })
    .await;
    let flood_peak = net.peers[0].0.peak_rss_mb();
    let still_serving = peer_svc::control_client::connect(&net.peers[0].1)
        .await?
        .connections(ConnectionsRequest {})
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
    let hs = measure_handshakes(&net.peers[0].1, baseline_clients[0].clone()).await?;
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

    let a = chat_noise::StaticKeypair::generate();
    let bkp = chat_noise::StaticKeypair::generate();
    let (m1, w) = chat_noise::Initiator::new(&a, bkp.public_key(), b"bench").write_message(b"")?;
    let pending = chat_noise::Responder::read_message(&bkp, b"bench", &m1)?;
    let (m2, tr) = pending.write_message(b"")?;
    let (_, ti) = w.read_message(&m2)?;
    let plaintext = vec![9u8; cli.payload];
    let n = 200_000;
    let t0 = Instant::now();
    for i in 0..n {
        let c = ti.seal(i, b"aad", &plaintext)?;
        tr.open(i, b"aad", &c)?;
    }
    let per = t0.elapsed() / n as u32;
    row(
        &format!("seal+open {} B, µs (one core)", cli.payload),
        format!("{:.2}", per.as_secs_f64() * 1e6),
        "-".into(),
        "-".into(),
    );

    eprintln!("[8/8] 50 peers on one machine…");
    drop(net);
    let fifty = Net::start(50).await?;
    let mut sender = peer_svc::control_client::connect(&fifty.peers[0].1).await?;
    let report = sender
        .send(SendRequest {
            text: payload.clone(),
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

    let (one, five) = (&results[0], &results[1]);
    println!(
        "bench: deliver_ratio={:.2} stream_msgs_per_s={:.0} broadcast5_per_s={:.0} p99_last_of_5_ms={:.2} handshake_p50_ms={:.3} peer_idle_rss_mb={:.1} discovery_idle_rss_mb={:.1} peers50_rss_mb={:.0} broadcast5_unary_per_s={:.0} broadcast5_stream_per_s={:.0} send1_per_s={:.0} p99_last_of_5_under_load_ms={:.2} stream_ratio={:.3} seal_open_1k_us={:.2} discovery_pairs_per_s={:.0} etcd_pairs_per_s={:.0} watch_p50_ms={:.2} etcd_watch_p50_ms={:.2} etcd_watch_other_p50_ms={:.2} junk_refused={} junk_peak_rss_mb={:.1} peers50_reached={}",
        one.1.per_sec() / one.2.per_sec(),
        streamed.per_sec(),
        five.1.per_sec().max(streamed5.per_sec()),
        steady_p99,
        handshake.pct(0.5),
        peer_rss,
        discovery_rss,
        peers50_rss,
        five.1.per_sec(),
        streamed5.per_sec(),
        one.1.per_sec(),
        five.1.pct(0.99),
        streamed.per_sec() / plain_stream.per_sec(),
        per.as_secs_f64() * 1e6,
        pairs.per_sec(),
        etcd.as_ref().map_or(f64::NAN, |e| e.pairs.per_sec()),
        memory.watch_same.pct(0.5),
        etcd.as_ref().map_or(f64::NAN, |e| e.watch_same.pct(0.5)),
        etcd.as_ref()
            .and_then(|e| e.watch_other.as_ref())
            .map_or(f64::NAN, |r| r.pct(0.5)),
        junk.ops,
        flood_peak,
        reached,
    );
    drop(baselines);
    Ok(())
}

/// The handshake measurement: `chat handshake`, and the two plain hops it
/// is made of.
struct Handshakes {
    /// `Control/Handshake` p1 from p0: Unix socket, then Peer/Handshake.
    chat: Run,
    /// Plain unary RTTs of the same size to a baseline server over TCP.
    tcp: Run,
    /// `Control/Connections` to p0 over its Unix socket: one Control call.
    control: Run,
}

/// `chat handshake` p1 from p0, back to back, beside as many plain unary
/// RTTs of the same size to a baseline server and as many cheap Control
/// calls over the Unix socket. (Back to back on purpose:
/// with pauses between calls this VM's idle cores halt, and waking them
/// costs more than a whole handshake: a paced plain RTT is 0.55 ms against
/// 0.15 ms back to back.)
async fn measure_handshakes(
    data_dir: &Path,
    mut b: PeerClient<Channel>,
) -> anyhow::Result<Handshakes> {
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
                    })
                    .await?;
                }
                _ => {
                    control.connections(ConnectionsRequest {}).await?;
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

/// `--soak SECONDS`: three peers, one streaming 1 KiB messages to the other
/// two the whole time; every peer's RSS sampled every 10 s.
async fn soak(seconds: u64, payload: &str) -> anyhow::Result<()> {
    const SAMPLE: Duration = Duration::from_secs(10);
    eprintln!("soak: 3 peers, p0 streams to p1 and p2 for {seconds} s");
    let net = Net::start(3).await?;
    let sender = net.peers[0].1.clone();
    let text = payload.to_owned();
    let load = tokio::spawn(async move {
        let mut sent = 0usize;
        let deadline = Instant::now() + Duration::from_secs(seconds);
        while Instant::now() < deadline {
            let left = deadline.saturating_duration_since(Instant::now());
            let run = stream::product(&sender, &text, left.as_secs_f64().min(10.0)).await?;
            sent += run.ops;
        }
        anyhow::Ok(sent)
    });
    println!("{:>6} {:>10} {:>10} {:>10}", "s", "p0 MB", "p1 MB", "p2 MB");
    let start = Instant::now();
    let mut samples = Vec::new();
    while !load.is_finished() {
        tokio::time::sleep(SAMPLE).await;
        let rss: Vec<f64> = net.peers.iter().map(|(p, _)| p.rss_mb()).collect();
        println!(
            "{:>6.0} {:>10.1} {:>10.1} {:>10.1}",
            start.elapsed().as_secs_f64(),
            rss[0],
            rss[1],
            rss[2]
        );
        samples.push(rss);
    }
    let sent = load.await??;
    // Growth after the first minute (warm-up: caches, SQLite's page cache).
    let warm = samples.get(5).cloned().unwrap_or_default();
    let last = samples.last().cloned().unwrap_or_default();
    let peak: Vec<f64> = (0..3)
        .map(|i| samples.iter().map(|s| s[i]).fold(0.0, f64::max))
        .collect();
    println!(
        "soak: sent={sent} msgs_per_s={:.0} rss_at_60s_mb={:?} rss_end_mb={:?} rss_peak_mb={:?}",
        sent as f64 / start.elapsed().as_secs_f64(),
        warm.iter()
            .map(|m| (m * 10.0).round() / 10.0)
            .collect::<Vec<_>>(),
        last.iter()
            .map(|m| (m * 10.0).round() / 10.0)
            .collect::<Vec<_>>(),
        peak.iter()
            .map(|m| (m * 10.0).round() / 10.0)
            .collect::<Vec<_>>(),
    );
    Ok(())
}

/// One `Control/Send`; true when every peer got it.
async fn send_to_all(
    mut client: chat_proto::v1::control_client::ControlClient<Channel>,
    text: String,
) -> bool {
    client
        .send(SendRequest {
            text,
            id: String::new(),
        })
        .await
        .map(|r| r.into_inner().deliveries.iter().all(|d| d.status == 1))
        .unwrap_or(false)
}

/// The baseline of a Send to `fanout` peers: one plain unary Deliver to
/// each of the first `fanout` baseline servers, all at once.
async fn plain_fanout(
    clients: Arc<Vec<PeerClient<Channel>>>,
    ciphertext: Vec<u8>,
    fanout: usize,
    i: usize,
) -> bool {
    let calls = (0..fanout).map(|k| {
        let mut c = clients[k].clone();
        let envelope = Envelope {
            session_id: vec![1; 16],
            counter: i as u64,
            sender: "bench".into(),
            message_id: format!("m{i}"),
            ciphertext: ciphertext.clone(),
        };
        async move {
            c.deliver(DeliverRequest {
                envelope: Some(envelope),
            })
            .await
        }
    });
    futures::future::join_all(calls)
        .await
        .iter()
        .all(|r| r.is_ok())
}

/// `op` at the steady offered rate for `secs`, after a second at that rate
/// that is not counted: the stage before may have left work behind (WAL
/// checkpoints, the kernel's writeback), and sessions and streams to open.
async fn steady<F, Fut>(secs: f64, op: F) -> Run
where
    F: Fn(usize) -> Fut + Clone,
    Fut: std::future::Future<Output = bool> + Send + 'static,
{
    stream::fixed_rate(STEADY_RATE, STEADY_WARM_UP, op.clone()).await;
    stream::fixed_rate(STEADY_RATE, secs, op).await
}

/// "p50/p99" of a run's latencies, in ms.
fn p50_p99(run: &Run) -> String {
    format!("{:.2}/{:.2}", run.pct(0.5), run.pct(0.99))
}
