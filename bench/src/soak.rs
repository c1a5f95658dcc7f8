//! `--soak SECONDS`: memory under sustained load — one peer streams to two
//! others the whole time while every peer's RSS is sampled.

use std::time::{Duration, Instant};

use crate::{procs::Net, stream};

/// `--soak SECONDS`: three peers, one streaming 1 KiB messages to the other
/// two the whole time; every peer's RSS sampled every 10 s.
pub async fn run(seconds: u64, payload: &str) -> anyhow::Result<()> {
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
    print_summary(sent, start, &samples);
    Ok(())
}

/// Prints the `soak:` line: messages sent, and each peer's RSS after the
/// first minute, at the end and at its peak.
fn print_summary(sent: usize, start: Instant, samples: &[Vec<f64>]) {
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
}
