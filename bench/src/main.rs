//! `chat-bench`: drives the real product path — `Control/Send` over the Unix
//! socket → seal → `Peer/Deliver` → open → store — across real `peer-svc`
//! processes, and a plain tonic unary baseline (a `Peer` server that does
//! nothing, in its own process) with the same payload and concurrency in the
//! same run. Prints a table, then one machine-readable `bench:` line.
#![forbid(unsafe_code)]

mod baseline;
mod discovery;
mod flood;
mod handshake;
mod junk;
mod load;
mod memory;
mod peers_at_scale;
mod procs;
mod progress;
mod reconcile;
mod report;
mod seal;
mod send;
mod soak;
mod steady;
mod stream;

use clap::Parser;

use crate::{baseline::Baselines, procs::Net, report::Summary};

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
    /// Instead of the benchmark: only the reconciliation measurement (two
    /// peers holding 100k messages by 50 authors, 10 differences and none).
    #[arg(long)]
    only_reconcile: bool,
    /// Instead of the benchmark: each attack of `make flood` for --seconds
    /// (default 3; `make flood` uses 5), with a member sending during each.
    #[arg(long)]
    flood: bool,
    /// Internal: run the baseline server and print its address.
    #[arg(long, hide = true)]
    baseline_server: bool,
}

impl Cli {
    /// The text of every message: `--payload` bytes.
    fn text(&self) -> String {
        "x".repeat(self.payload)
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if cli.baseline_server {
        return baseline::serve().await;
    }
    if cli.flood {
        return flood::run(cli.seconds).await;
    }
    if cli.only_reconcile {
        reconcile::print(&reconcile::stage().await?);
        return Ok(());
    }
    if cli.only_handshake {
        return handshake::only().await;
    }
    if let Some(seconds) = cli.soak {
        return soak::run(seconds, &cli.text()).await;
    }
    if let Some(fanout) = cli.only_stream {
        return stream::only(&cli, fanout).await;
    }
    if let Some(fanout) = cli.only_steady {
        return steady::only(&cli, fanout).await;
    }
    if let Some(fanout) = cli.only_send {
        return send::only(&cli, fanout).await;
    }
    benchmark(&cli).await
}

/// The whole benchmark: every stage in order, each printing its rows of
/// the table, then the `bench:` line.
async fn benchmark(cli: &Cli) -> anyhow::Result<()> {
    eprintln!("[1/9] idle memory…");
    report::header();
    let idle_net = Net::start(1).await?;
    let idle = memory::idle(&idle_net).await;

    eprintln!("[2/9] discovery: Register+Leave and watch latency, memory store vs etcd…");
    let discovery = discovery::stage(cli.seconds).await?;
    drop(idle_net);

    eprintln!("[3/9] baseline servers…");
    let baselines = Baselines::start(5).await?;

    eprintln!("[4/9] Send → delivered to 1 peer(s)…");
    let send_to_one = send::to_one(cli, &baselines).await?;
    eprintln!("[5/9] Send → delivered to 5 peer(s)…");
    let (send_to_five, steady_p99_ms) = send::to_five(cli, &baselines).await?;

    eprintln!("[6/9] streaming: Control/SendStream → DeliverStream → stored, to 1 and to 5 peers…");
    let stream = stream::stage(cli, &baselines).await?;

    eprintln!("[7/9] handshakes, seal/open, junk flood…");
    let net = Net::start(2).await?;
    let junk = junk::flood(cli, &net).await?;
    let handshakes = handshake::stage(&net, &baselines).await?;
    let seal_open = seal::seal_open(cli.payload)?;

    eprintln!("[8/9] 50 peers on one machine…");
    drop(net);
    let fifty = peers_at_scale::stage(&cli.text()).await?;

    eprintln!("[9/9] feed reconciliation: two peers holding 100k messages by 50 authors…");
    let reconcile = reconcile::stage().await?;
    reconcile::print(&reconcile);

    Summary {
        idle,
        discovery,
        send_to_one,
        send_to_five,
        steady_p99_ms,
        stream,
        junk,
        handshakes,
        seal_open,
        fifty,
        reconcile,
    }
    .print_bench_line();
    drop(baselines);
    Ok(())
}
