//! The gRPC services of a peer: thin glue that translates between protobuf
//! and the parts each one uses, and the one mapping of errors to statuses.

pub mod control;
pub mod peer;
mod send_stream;
pub mod status;
