//! Token buckets that bound how fast a remote party can make this peer
//! work: handshakes per remote address (each costs four Diffie-Hellmans
//! before anything is authenticated) and deliveries per session.

use std::{collections::HashMap, hash::Hash, sync::Mutex, time::Duration};

use tokio::time::Instant;

/// Most buckets kept: beyond it, the idle ones are forgotten (a forgotten
/// bucket is a full one, so this only ever errs toward allowing).
const MAX_BUCKETS: usize = 4096;

/// A token bucket: `rate` tokens a second, holding at most `burst`.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

/// Buckets by key (an address, a session), all with the same rate.
#[derive(Debug)]
pub struct Limiter<K> {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<K, Bucket>>,
}

impl<K: Eq + Hash + Clone> Limiter<K> {
    /// `per_sec` a second per key, bursts of twice that.
    pub fn per_second(per_sec: u32) -> Self {
        let rate = f64::from(per_sec.max(1));
        Self {
            rate,
            burst: rate * 2.0,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// The configured rate.
    pub fn rate(&self) -> u32 {
        self.rate as u32
    }

    /// Takes one token for `key`; false when its bucket is empty.
    pub fn allow(&self, key: &K) -> bool {
        let now = Instant::now();
        let mut buckets = self.buckets.lock().expect("limiter lock");
        if buckets.len() >= MAX_BUCKETS && !buckets.contains_key(key) {
            let full_after = Duration::from_secs_f64(self.burst / self.rate);
            buckets.retain(|_, b| now.duration_since(b.last) < full_after);
        }
        let bucket = buckets.entry(key.clone()).or_insert(Bucket {
            tokens: self.burst,
            last: now,
        });
        let refill = now.duration_since(bucket.last).as_secs_f64() * self.rate;
        bucket.tokens = (bucket.tokens + refill).min(self.burst);
        bucket.last = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_burst_then_the_steady_rate_per_key() {
        let limiter = Limiter::per_second(10);
        let allowed = (0..100).filter(|_| limiter.allow(&"a")).count();
        assert_eq!(allowed, 20, "a burst of twice the rate");
        assert!(limiter.allow(&"b"), "other keys are not affected");
        tokio::time::advance(Duration::from_millis(500)).await;
        let allowed = (0..100).filter(|_| limiter.allow(&"a")).count();
        assert_eq!(allowed, 5, "half a second refills half the rate");
        tokio::time::advance(Duration::from_secs(60)).await;
        let allowed = (0..100).filter(|_| limiter.allow(&"a")).count();
        assert_eq!(allowed, 20, "never more than the burst");
    }

    #[tokio::test(start_paused = true)]
    async fn idle_buckets_are_forgotten_when_there_are_too_many() {
        let limiter = Limiter::per_second(1);
        for k in 0..MAX_BUCKETS {
            limiter.allow(&k);
        }
        tokio::time::advance(Duration::from_secs(3)).await;
        assert!(limiter.allow(&usize::MAX));
        assert!(limiter.buckets.lock().unwrap().len() < 10);
    }
}
