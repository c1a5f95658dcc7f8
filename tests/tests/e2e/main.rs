//! End-to-end tests, in one binary so `cargo test` links and starts once.

mod admission;
mod anti_entropy;
mod backpressure;
mod churn;
mod cli;
mod confidentiality;
mod conn_flood;
mod convergence;
mod discovery;
mod discovery_full;
mod discovery_grpcurl;
mod discovery_outage;
mod discovery_scale;
mod faults;
mod feed_gaps;
mod ghosts;
mod history;
mod hosts;
mod idle;
mod key_pinning;
mod lookalikes;
mod peer_adversarial;
mod peer_processes;
mod private_and_replay;
mod readme;
mod removals;
mod removed_member;
#[cfg(feature = "etcd")]
mod replicas;
mod second_implementation;
mod secrets;
mod signed_history;
mod squatting;
mod stopping;
mod streaming;
