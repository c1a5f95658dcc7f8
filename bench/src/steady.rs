//! Latency at a steady offered load of 1,000 msg/s, open loop: part of the
//! [5/8] stage, and `--only-steady`.

use crate::{
    Cli,
    baseline::{Baselines, fanout_once},
    load::{Run, fixed_rate},
    procs::Net,
    progress,
    report::row,
    send::send_to_all,
};

/// The offered load of the steady-rate latency measure (messages/s).
pub const STEADY_RATE: u32 = 1000;

/// Seconds at the steady rate before the measured ones.
const STEADY_WARM_UP: f64 = 1.0;

/// `op` at the steady offered rate for `secs`, after a second at that rate
/// that is not counted: the stage before may have left work behind (WAL
/// checkpoints, the kernel's writeback), and sessions and streams to open.
async fn steady<F, Fut>(secs: f64, op: F) -> Run
where
    F: Fn(usize) -> Fut + Clone,
    Fut: std::future::Future<Output = bool> + Send + 'static,
{
    fixed_rate(STEADY_RATE, STEADY_WARM_UP, op.clone()).await;
    fixed_rate(STEADY_RATE, secs, op).await
}

/// p50 and p99 of Send from the first peer of `net` to the five others at
/// the steady rate, against the same for the plain fan-out; prints the row
/// and returns the product's p99 (ms).
pub async fn stage(cli: &Cli, baselines: &Baselines, net: &Net) -> anyhow::Result<f64> {
    // p99 at a steady offered load, open loop, against the same.
    let progress = progress::show("1000 msg/s to 5");
    let secs = cli.seconds;
    let sender = peer_svc::control_client::connect(&net.peers[0].1).await?;
    let text = cli.text();
    let steady_run = steady(secs, move |_| send_to_all(sender.clone(), text.clone())).await;
    let clients = baselines.clients.clone();
    let ciphertext = vec![7u8; cli.payload + 16];
    let steady_base = steady(secs, move |i| {
        fanout_once(clients.clone(), ciphertext.clone(), 5, i)
    });
    let steady_base = steady_base.await;
    drop(progress);
    row(
        &format!("  at {STEADY_RATE} msg/s offered: p50 / p99 ms"),
        format!("{:.2} / {:.2}", steady_run.pct(0.5), steady_run.pct(0.99)),
        format!("{:.2} / {:.2}", steady_base.pct(0.5), steady_base.pct(0.99)),
        "-".into(),
    );
    Ok(steady_run.pct(0.99))
}

/// `--only-steady N`: Send to N peers at the steady rate for `--seconds`,
/// and its latency percentiles.
pub async fn only(cli: &Cli, fanout: usize) -> anyhow::Result<()> {
    let net = Net::start_for_perf(fanout + 1).await?;
    let sender = peer_svc::control_client::connect(&net.peers[0].1).await?;
    let payload = cli.text();
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
    Ok(())
}
