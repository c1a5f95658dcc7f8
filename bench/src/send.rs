//! Unary `Control/Send` → delivered to every peer, beside the plain tonic
//! fan-out of Deliver calls: the [4/8] and [5/8] stages and `--only-send`.

use chat_proto::v1::{SendRequest, control_client::ControlClient};
use tonic::transport::Channel;

use crate::{
    Cli,
    baseline::Baselines,
    load::{Run, drive},
    memory,
    procs::Net,
    progress,
    report::row,
    steady,
};

/// A Send stage: the product path and its baseline, both closed loop.
pub struct SendRuns {
    /// `Control/Send` until delivered to every peer.
    pub product: Run,
    /// The plain tonic fan-out of the same size.
    pub baseline: Run,
}

/// One `Control/Send`; true when every peer got it.
pub async fn send_to_all(mut client: ControlClient<Channel>, text: String) -> bool {
    client
        .send(SendRequest {
            text,
            id: String::new(),
        })
        .await
        .map(|r| r.into_inner().deliveries.iter().all(|d| d.status == 1))
        .unwrap_or(false)
}

/// [4/8]: Send to one peer beside its baseline; prints its rows.
pub async fn to_one(cli: &Cli, baselines: &Baselines) -> anyhow::Result<SendRuns> {
    let progress = progress::show("Send to 1");
    let net = Net::start(2).await?;
    let runs = measure(cli, baselines, &net, 1).await?;
    drop(net);
    drop(progress);
    Ok(runs)
}

/// [5/8]: Send to five peers beside its baseline, then the peers' memory
/// and the steady-rate stage on the same peers; prints their rows.
/// Returns the Send runs and the steady stage's p99 (ms).
pub async fn to_five(cli: &Cli, baselines: &Baselines) -> anyhow::Result<(SendRuns, f64)> {
    let progress = progress::show("Send to 5");
    let net = Net::start(6).await?;
    let runs = measure(cli, baselines, &net, 5).await?;
    memory::mean_rss_after_load(&net);
    drop(progress);
    let steady_p99 = steady::stage(cli, baselines, &net).await?;
    Ok((runs, steady_p99))
}

/// Send from the first peer of `net` to the `fanout` others, then the
/// baseline of the same fan-out; prints the throughput and latency rows.
async fn measure(
    cli: &Cli,
    baselines: &Baselines,
    net: &Net,
    fanout: usize,
) -> anyhow::Result<SendRuns> {
    let conc = cli.concurrency;
    let sender = peer_svc::control_client::connect(&net.peers[0].1).await?;
    let text = cli.text();
    let product = drive(conc, cli.seconds, move |_| {
        send_to_all(sender.clone(), text.clone())
    })
    .await;
    let base = baselines.unary_fanout(cli, fanout).await;
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
    Ok(SendRuns {
        product,
        baseline: base,
    })
}

/// `--only-send N`: unary Send to N peers for `--seconds`, nothing else.
pub async fn only(cli: &Cli, fanout: usize) -> anyhow::Result<()> {
    let net = Net::start_for_perf(fanout + 1).await?;
    let sender = peer_svc::control_client::connect(&net.peers[0].1).await?;
    let payload = cli.text();
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
    Ok(())
}
