//! Size limits, and requests that do not decode, answered with the status
//! gRPC specifies for them.
//!
//! tonic refuses a message over `max_decoding_message_size` with OUT_OF_RANGE;
//! the gRPC spec (and DESIGN §6) says RESOURCE_EXHAUSTED. It answers a body
//! that is not the request's protobuf with INTERNAL, as if the server had
//! failed; it is the caller's bad input, INVALID_ARGUMENT. Servers map their
//! responses through [`oversize_is_resource_exhausted`] so clients see the
//! right codes, with tonic's message, which names the limit or the decode
//! error.

use tonic::codegen::http::{HeaderValue, Response};

/// Concurrent HTTP/2 streams (calls) per connection on every server: far
/// above what one honest client pipelines, low enough that one connection
/// cannot hold unbounded work in flight.
pub const MAX_CONCURRENT_STREAMS: u32 = 256;

/// Largest response any server encodes: a history page is capped at 2 MiB
/// of text, so 4 MiB (gRPC's usual decode limit on the other side) holds it
/// with room to spare, and nothing larger ever leaves a server.
pub const MAX_RESPONSE_BYTES: usize = 4 * 1024 * 1024;

/// Largest `grpc.health.v1` request a server decodes (a service name).
pub const MAX_HEALTH_REQUEST_BYTES: usize = 1024;

/// Metadata key on a refusal that means "not now": the server is over a
/// rate or capacity limit and the same request may succeed after this many
/// milliseconds. A RESOURCE_EXHAUSTED without it is a size limit: the same
/// request will never succeed.
pub const RETRY_AFTER_MS: &str = "retry-after-ms";

/// A RESOURCE_EXHAUSTED that means "not now, retry after `after`".
pub fn not_now(message: impl Into<String>, after: std::time::Duration) -> tonic::Status {
    let mut status = tonic::Status::resource_exhausted(message);
    status.metadata_mut().insert(
        RETRY_AFTER_MS,
        tonic::metadata::MetadataValue::from(after.as_millis().min(u128::from(u32::MAX)) as u32),
    );
    status
}

/// The wait a "not now" refusal asks for, if `status` is one.
pub fn retry_after(status: &tonic::Status) -> Option<std::time::Duration> {
    status
        .metadata()
        .get(RETRY_AFTER_MS)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .map(std::time::Duration::from_millis)
}

/// What tonic writes (percent-encoded in `grpc-message`) when a message is too large.
const TOO_LARGE: &str = "message%20length%20too%20large";

/// What tonic writes (percent-encoded) when a request body does not decode.
const UNDECODABLE: &str = "failed%20to%20decode%20Protobuf%20message";

/// Rewrites tonic's OUT_OF_RANGE for an oversized message to
/// RESOURCE_EXHAUSTED, and its INTERNAL for an undecodable request to
/// INVALID_ARGUMENT.
pub fn oversize_is_resource_exhausted<B>(response: Response<B>) -> Response<B> {
    rewrite_oversize(response, None)
}

/// Like [`oversize_is_resource_exhausted`], and appends `hint` (what the
/// limit is for and which flag sets it) to tonic's message, which names
/// only the byte counts.
pub fn oversize_with_hint<B>(
    hint: impl Into<std::sync::Arc<str>>,
) -> impl Fn(Response<B>) -> Response<B> + Clone {
    let hint: std::sync::Arc<str> = hint.into();
    move |response| rewrite_oversize(response, Some(&hint))
}

/// A status for a request that could not be decoded because it was too
/// large, as [`oversize_with_hint`] writes it; for statuses a stream
/// carries in its trailers, which a response layer does not see.
pub fn oversize_status(status: tonic::Status, hint: &str) -> tonic::Status {
    if status.code() == tonic::Code::OutOfRange && status.message().contains("length too large") {
        tonic::Status::resource_exhausted(format!("{}; {hint}", status.message()))
    } else if status.code() == tonic::Code::Internal
        && status
            .message()
            .contains("failed to decode Protobuf message")
    {
        tonic::Status::invalid_argument(status.message())
    } else {
        status
    }
}

fn rewrite_oversize<B>(mut response: Response<B>, hint: Option<&str>) -> Response<B> {
    let headers = response.headers_mut();
    let undecodable = headers
        .get("grpc-status")
        .is_some_and(|s| s == HeaderValue::from(tonic::Code::Internal as i32))
        && headers
            .get("grpc-message")
            .and_then(|m| m.to_str().ok())
            .is_some_and(|m| m.contains(UNDECODABLE));
    if undecodable {
        headers.insert(
            "grpc-status",
            HeaderValue::from(tonic::Code::InvalidArgument as i32),
        );
        return response;
    }
    let out_of_range = headers
        .get("grpc-status")
        .is_some_and(|s| s == HeaderValue::from(tonic::Code::OutOfRange as i32));
    let message = headers
        .get("grpc-message")
        .and_then(|m| m.to_str().ok())
        .filter(|m| m.contains(TOO_LARGE))
        .map(str::to_owned);
    let (true, Some(message)) = (out_of_range, message) else {
        return response;
    };
    headers.insert(
        "grpc-status",
        HeaderValue::from(tonic::Code::ResourceExhausted as i32),
    );
    if let Some(hint) = hint {
        // grpc-message is percent-encoded (gRPC over HTTP/2: every byte
        // outside printable ASCII, and '%' itself).
        let mut text = message;
        for b in format!("; {hint}").bytes() {
            if (0x20..=0x7e).contains(&b) && b != b'%' {
                text.push(char::from(b));
            } else {
                text.push_str(&format!("%{b:02X}"));
            }
        }
        if let Ok(value) = HeaderValue::from_str(&text) {
            headers.insert("grpc-message", value);
        }
    }
    response
}
