//! The printed results: the table's header and rows, and the one
//! machine-readable `bench:` line made from every stage's numbers.

use std::time::Duration;

use crate::{
    discovery::Stores, handshake::Handshakes, junk::JunkFlood, load::Run, memory::Idle,
    peers_at_scale::FiftyPeers, reconcile::Reconciliation, send::SendRuns, stream::StreamRuns,
};

/// Prints the table's column titles.
pub fn header() {
    println!(
        "{:<44} {:>16} {:>16} {:>8}",
        "measure", "p2p-chat", "plain tonic", "ratio"
    );
}

/// Prints one table row: the measure, p2p-chat's value, the plain tonic
/// baseline's and their ratio.
pub fn row(name: &str, value: String, baseline: String, ratio: String) {
    println!("{name:<44} {value:>16} {baseline:>16} {ratio:>8}");
}

/// "p50/p99" of a run's latencies, in ms.
pub fn p50_p99(run: &Run) -> String {
    format!("{:.2}/{:.2}", run.pct(0.5), run.pct(0.99))
}

/// Every stage's results, for the `bench:` line.
pub struct Summary {
    /// [1/8] idle memory.
    pub idle: Idle,
    /// [2/8] discovery on the memory store and on etcd.
    pub discovery: Stores,
    /// [4/8] unary Send to one peer.
    pub send_to_one: SendRuns,
    /// [5/8] unary Send to five peers.
    pub send_to_five: SendRuns,
    /// [5/8] p99 ms to the last of five at the steady offered rate.
    pub steady_p99_ms: f64,
    /// [6/8] streamed Send to one and to five peers.
    pub stream: StreamRuns,
    /// [7/8] the junk flood.
    pub junk: JunkFlood,
    /// [7/8] the handshake measurement.
    pub handshakes: Handshakes,
    /// [7/8] one seal plus one open.
    pub seal_open: Duration,
    /// [8/9] fifty peers on one machine.
    pub fifty: FiftyPeers,
    /// [9/9] feed reconciliation between two peers holding 100k messages.
    pub reconcile: Reconciliation,
}

impl Summary {
    /// Prints the one machine-readable `bench:` line.
    pub fn print_bench_line(&self) {
        let (one, five, stream) = (&self.send_to_one, &self.send_to_five, &self.stream);
        let (memory, etcd) = (&self.discovery.memory, &self.discovery.etcd);
        println!(
            "bench: deliver_ratio={:.2} stream_msgs_per_s={:.0} broadcast5_per_s={:.0} p99_last_of_5_ms={:.2} handshake_p50_ms={:.3} peer_idle_rss_mb={:.1} discovery_idle_rss_mb={:.1} peers50_rss_mb={:.0} broadcast5_unary_per_s={:.0} broadcast5_stream_per_s={:.0} send1_per_s={:.0} p99_last_of_5_under_load_ms={:.2} stream_ratio={:.3} seal_open_1k_us={:.2} discovery_pairs_per_s={:.0} etcd_pairs_per_s={:.0} watch_p50_ms={:.2} etcd_watch_p50_ms={:.2} etcd_watch_other_p50_ms={:.2} junk_refused={} junk_peak_rss_mb={:.1} peers50_reached={} reconcile10_bytes={} reconcile10_exchange_bytes={} reconcile10_ms={:.0} reconcile0_bytes={} reconcile0_exchange_bytes={} feed_heads_100k_start_ms={:.1} feed_heads_after_add_ms={:.3} idle_100k_core_pct={:.2}",
            one.product.per_sec() / one.baseline.per_sec(),
            stream.to_one.per_sec(),
            five.product.per_sec().max(stream.to_five.per_sec()),
            self.steady_p99_ms,
            self.handshakes.chat.pct(0.5),
            self.idle.peer_mb,
            self.idle.discovery_mb,
            self.fifty.total_rss_mb,
            five.product.per_sec(),
            stream.to_five.per_sec(),
            one.product.per_sec(),
            five.product.pct(0.99),
            stream.to_one.per_sec() / stream.plain_to_one.per_sec(),
            self.seal_open.as_secs_f64() * 1e6,
            memory.pairs.per_sec(),
            etcd.as_ref().map_or(f64::NAN, |e| e.pairs.per_sec()),
            memory.watch_same.pct(0.5),
            etcd.as_ref().map_or(f64::NAN, |e| e.watch_same.pct(0.5)),
            etcd.as_ref()
                .and_then(|e| e.watch_other.as_ref())
                .map_or(f64::NAN, |r| r.pct(0.5)),
            self.junk.run.ops,
            self.junk.peak_rss_mb,
            self.fifty.reached,
            self.reconcile.ten_bytes,
            self.reconcile.ten_exchange,
            self.reconcile.ten_ms,
            self.reconcile.none_bytes,
            self.reconcile.none_exchange,
            self.reconcile.heads_start_ms,
            self.reconcile.heads_ms,
            self.reconcile.idle_core * 100.0,
        );
    }
}
