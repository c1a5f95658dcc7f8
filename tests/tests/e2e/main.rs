//! End-to-end tests, in one binary so `cargo test` links and starts once.

mod discovery;
mod discovery_grpcurl;
