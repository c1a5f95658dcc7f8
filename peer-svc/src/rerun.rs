//! One background job per peer at a time, at most one start per interval,
//! and a request made while it runs (or just ran) not lost but served by
//! one more run after it: what removal and feed reconciliation need when
//! handshakes and events ask for them in bursts.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

/// The job of one peer.
#[derive(Debug)]
struct Job {
    /// When it started (or will).
    started: Instant,
    /// It runs, or waits to.
    running: bool,
    /// It was asked for again meanwhile: once more when it ends.
    again: bool,
}

/// Per-peer jobs, started at most once per `interval`.
#[derive(Debug)]
pub struct Rerun {
    interval: Duration,
    jobs: Mutex<HashMap<String, Job>>,
}

impl Rerun {
    /// Jobs started at most once per `interval` per peer.
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            jobs: Mutex::default(),
        }
    }

    /// The least time between two runs for one peer.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// A run for `peer` is asked for: Some(delay) if the caller should
    /// start one after `delay`; None if one runs or waits already (it will
    /// run once more).
    pub fn ask(&self, peer: &str) -> Option<Duration> {
        let mut jobs = self.jobs.lock().expect("jobs lock");
        let now = Instant::now();
        match jobs.get_mut(peer) {
            Some(job) if job.running => {
                job.again = true;
                None
            }
            Some(job) => {
                let delay = self
                    .interval
                    .saturating_sub(now.duration_since(job.started));
                *job = Job {
                    started: now + delay,
                    running: true,
                    again: false,
                };
                Some(delay)
            }
            None => {
                jobs.insert(
                    peer.to_owned(),
                    Job {
                        started: now,
                        running: true,
                        again: false,
                    },
                );
                Some(Duration::ZERO)
            }
        }
    }

    /// A run for `peer` ended: true if it must run once more (after
    /// [`Rerun::interval`]), false if it is done.
    pub fn ended(&self, peer: &str) -> bool {
        let mut jobs = self.jobs.lock().expect("jobs lock");
        let Some(job) = jobs.get_mut(peer) else {
            return false;
        };
        if !job.again {
            job.running = false;
            return false;
        }
        job.again = false;
        job.started = Instant::now() + self.interval;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_while_running_is_one_more_run_and_runs_are_spaced() {
        let rerun = Rerun::new(Duration::from_secs(2));
        assert_eq!(rerun.ask("bob"), Some(Duration::ZERO));
        assert_eq!(rerun.ask("bob"), None, "runs: asked again");
        assert_eq!(rerun.ask("bob"), None);
        assert!(rerun.ended("bob"), "once more");
        assert!(!rerun.ended("bob"), "then done");
        let delay = rerun.ask("bob").expect("a run");
        assert!(
            delay >= Duration::from_millis(1900),
            "spaced after the last start: {delay:?}"
        );
        assert_eq!(rerun.ask("carol"), Some(Duration::ZERO), "per peer");
    }
}
