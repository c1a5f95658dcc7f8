//! The two ways a stage loads the system — closed loop from a fixed number
//! of tasks, and open loop at a fixed rate — and the `Run` both measure.

use std::{
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant},
};

use crate::progress::DONE;

/// Latency samples and a count over a wall-clock window.
#[derive(Debug)]
pub struct Run {
    /// Operations that succeeded.
    pub ops: usize,
    /// The wall-clock window they ran in.
    pub elapsed: Duration,
    /// One latency per successful operation (empty when not timed).
    pub latencies: Vec<Duration>,
}

impl Run {
    /// Successful operations per second of the window.
    pub fn per_sec(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64()
    }

    /// The `p` quantile (0..=1) of the latencies, in ms.
    pub fn pct(&self, p: f64) -> f64 {
        let mut l = self.latencies.clone();
        l.sort();
        if l.is_empty() {
            return f64::NAN;
        }
        l[((l.len() - 1) as f64 * p) as usize].as_secs_f64() * 1000.0
    }
}

/// Runs `op` from `concurrency` tasks for `seconds`.
pub async fn drive<F, Fut>(concurrency: usize, seconds: f64, op: F) -> Run
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
                        DONE.fetch_add(1, Ordering::Relaxed);
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
    let start = tokio::time::Instant::now();
    let mut calls = Vec::with_capacity(total);
    for i in 0..total {
        tick.tick().await;
        let call = op(i);
        calls.push(tokio::spawn(async move {
            let t0 = tokio::time::Instant::now();
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
