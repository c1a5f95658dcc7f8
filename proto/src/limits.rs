//! Size limits answered with the status gRPC specifies for them.
//!
//! tonic refuses a message over `max_decoding_message_size` with OUT_OF_RANGE;
//! the gRPC spec (and DESIGN §6) says RESOURCE_EXHAUSTED. Servers map their
//! responses through [`oversize_is_resource_exhausted`] so clients see the
//! right code, with tonic's message, which names the limit.

use tonic::codegen::http::{HeaderValue, Response};

/// Concurrent HTTP/2 streams (calls) per connection on every server: far
/// above what one honest client pipelines, low enough that one connection
/// cannot hold unbounded work in flight.
pub const MAX_CONCURRENT_STREAMS: u32 = 256;

/// Largest response any server encodes: a history page is capped at 2 MiB
/// of text, so 4 MiB (gRPC's usual decode limit on the other side) holds it
/// with room to spare, and nothing larger ever leaves a server.
pub const MAX_RESPONSE_BYTES: usize = 4 * 1024 * 1024;

/// What tonic writes (percent-encoded in `grpc-message`) when a message is too large.
const TOO_LARGE: &str = "message%20length%20too%20large";

/// Rewrites tonic's OUT_OF_RANGE for an oversized message to RESOURCE_EXHAUSTED.
pub fn oversize_is_resource_exhausted<B>(mut response: Response<B>) -> Response<B> {
    let headers = response.headers_mut();
    let out_of_range = headers
        .get("grpc-status")
        .is_some_and(|s| s == HeaderValue::from(tonic::Code::OutOfRange as i32));
    let too_large = headers
        .get("grpc-message")
        .and_then(|m| m.to_str().ok())
        .is_some_and(|m| m.contains(TOO_LARGE));
    if out_of_range && too_large {
        headers.insert(
            "grpc-status",
            HeaderValue::from(tonic::Code::ResourceExhausted as i32),
        );
    }
    response
}
