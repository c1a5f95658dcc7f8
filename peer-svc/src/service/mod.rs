//! The gRPC services of a peer: thin glue between protobuf and [`crate::node::Node`].

pub mod control;
pub mod peer;
