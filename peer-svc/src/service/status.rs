//! The one place where the peer's errors become gRPC statuses (DESIGN §6):
//! each layer returns its own error, and its code is decided here. Messages
//! say what to do next and never carry message text or key material.

use tonic::Status;

use crate::{
    admission::AdmissionError, checks::CheckError, credential::CredentialError,
    envelope::EnvelopeError, feed_sync::FeedsError, handshaker::HandshakeError,
    history_sync::ServeError, inbound::InboundError, net::BadAddress, outbound::SendError,
    removal_sync::RemovalsError, store::history::QueryError,
};

/// Refusals decided by the services themselves (a request about a peer
/// this peer does not know, a busy limit, a failed call to another party).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServiceError {
    /// A field is missing, empty or malformed.
    #[error("{0}")]
    InvalidArgument(String),
    /// Over a concurrency limit.
    #[error("{0}")]
    ResourceExhausted(String),
    /// Not allowed (e.g. sending to a peer whose key changed).
    #[error("{0}")]
    PermissionDenied(String),
    /// No such peer.
    #[error("{0}")]
    NotFound(String),
    /// A peer or Discovery could not be reached.
    #[error("{0}")]
    Unavailable(String),
    /// Not possible in this peer's state (e.g. inviting in open mode).
    #[error("{0}")]
    FailedPrecondition(String),
}

impl From<AdmissionError> for ServiceError {
    fn from(e: AdmissionError) -> Self {
        let message = e.to_string();
        match e {
            AdmissionError::Open
            | AdmissionError::AlreadyMember(..)
            | AdmissionError::NoLongerMember(_)
            | AdmissionError::Pending(_)
            | AdmissionError::FounderLeaves => ServiceError::FailedPrecondition(message),
            AdmissionError::Yourself(_) | AdmissionError::LooksLike(..) => {
                ServiceError::InvalidArgument(message)
            }
            AdmissionError::Unknown(_) => ServiceError::NotFound(message),
            AdmissionError::Credential(
                CredentialError::NotAllowed(_) | CredentialError::Founder,
            ) => ServiceError::PermissionDenied(message),
            AdmissionError::Credential(_) => ServiceError::InvalidArgument(message),
            AdmissionError::NotMember { .. }
            | AdmissionError::Removed(..)
            | AdmissionError::UsedBy { .. }
            | AdmissionError::OtherIdentity(_) => ServiceError::PermissionDenied(message),
            AdmissionError::Store(_) => ServiceError::Unavailable(message),
        }
    }
}

impl From<ServiceError> for Status {
    fn from(e: ServiceError) -> Self {
        let message = e.to_string();
        match e {
            ServiceError::InvalidArgument(_) => Status::invalid_argument(message),
            ServiceError::ResourceExhausted(_) => Status::resource_exhausted(message),
            ServiceError::PermissionDenied(_) => Status::permission_denied(message),
            ServiceError::NotFound(_) => Status::not_found(message),
            ServiceError::Unavailable(_) => Status::unavailable(message),
            ServiceError::FailedPrecondition(_) => Status::failed_precondition(message),
        }
    }
}

impl From<EnvelopeError> for Status {
    fn from(e: EnvelopeError) -> Self {
        let message = e.to_string();
        match e {
            EnvelopeError::Missing | EnvelopeError::BadSessionId => {
                Status::invalid_argument(message)
            }
            EnvelopeError::TooLarge { .. } => Status::resource_exhausted(message),
            EnvelopeError::UnknownSession | EnvelopeError::Replayed(_) | EnvelopeError::Decrypt => {
                Status::unauthenticated(message)
            }
            EnvelopeError::Seal(_) => Status::internal(message),
            // Final: the outbox drops it rather than retry forever.
            EnvelopeError::TooLargeToSeal { .. } => Status::out_of_range(message),
        }
    }
}

impl From<CheckError> for Status {
    fn from(e: CheckError) -> Self {
        let message = e.to_string();
        match e {
            CheckError::EmptyText
            | CheckError::BadOwnId
            | CheckError::BadId
            | CheckError::NotAMessage
            | CheckError::BadSigned(_)
            | CheckError::ClockAhead { .. } => Status::invalid_argument(message),
            CheckError::TextTooLong { .. } => Status::resource_exhausted(message),
            CheckError::NotItsOwn => Status::permission_denied(message),
        }
    }
}

/// A rate limit's refusal: "not now", retry once the bucket at `rate` per
/// second has refilled a token (at least 5 ms, at most a second).
fn not_now(message: String, rate: u32) -> Status {
    let after = std::time::Duration::from_millis((1000 / u64::from(rate.max(1))).clamp(5, 1000));
    chat_proto::limits::not_now(message, after)
}

impl From<HandshakeError> for Status {
    fn from(e: HandshakeError) -> Self {
        let message = e.to_string();
        match e {
            HandshakeError::RateLimited { rate } | HandshakeError::KeyRateLimited { rate } => {
                not_now(message, rate)
            }
            HandshakeError::Truncated { .. }
            | HandshakeError::Malformed(_)
            | HandshakeError::BadPayload
            | HandshakeError::StampAhead => Status::invalid_argument(message),
            HandshakeError::Failed(_) | HandshakeError::Replayed | HandshakeError::Answer(_) => {
                Status::unauthenticated(message)
            }
            // A wrong mac1 is junk, or a party outside this network: either
            // way not someone to deliver to.
            // A removed member is shown the removal itself: it can verify
            // it and stop, where a bare word from anyone at the address is
            // nothing to act on.
            HandshakeError::NotMember(AdmissionError::Removed(_, removal))
                if !removal.is_empty() =>
            {
                let mut status = Status::permission_denied(message);
                status.metadata_mut().insert_bin(
                    crate::handshaker::REMOVAL_METADATA,
                    tonic::metadata::MetadataValue::from_bytes(&removal),
                );
                status
            }
            HandshakeError::NotMember(AdmissionError::Store(_)) => Status::internal(message),
            HandshakeError::Refused(_) | HandshakeError::NotMember(_) | HandshakeError::BadMac => {
                Status::permission_denied(message)
            }
            HandshakeError::Store(_) => Status::internal(message),
        }
    }
}

impl From<InboundError> for Status {
    fn from(e: InboundError) -> Self {
        match e {
            InboundError::Envelope(e) => e.into(),
            InboundError::Check(e) => e.into(),
            // The message itself is refused, for good: resending the same
            // signed bytes can never succeed.
            InboundError::Signature(_) | InboundError::Author(_) => {
                Status::invalid_argument(e.to_string())
            }
            InboundError::RateLimited { rate } => not_now(e.to_string(), rate),
            InboundError::Store(_) => Status::internal(e.to_string()),
        }
    }
}

impl From<SendError> for Status {
    fn from(e: SendError) -> Self {
        match e {
            SendError::Check(e) => e.into(),
            SendError::Store(m) => Status::internal(m),
            SendError::NotMember(_) | SendError::Pending(_) => {
                Status::failed_precondition(e.to_string())
            }
        }
    }
}

impl From<QueryError> for Status {
    fn from(e: QueryError) -> Self {
        match e {
            QueryError::BadCursor => Status::invalid_argument(e.to_string()),
            QueryError::Store(_) => Status::internal(e.to_string()),
        }
    }
}

impl From<ServeError> for Status {
    fn from(e: ServeError) -> Self {
        match e {
            ServeError::Envelope(e) => e.into(),
            ServeError::NotShared(_) => Status::permission_denied(e.to_string()),
            ServeError::NotACursor => Status::invalid_argument(e.to_string()),
            ServeError::Query(e) => e.into(),
        }
    }
}

impl From<RemovalsError> for Status {
    fn from(e: RemovalsError) -> Self {
        match e {
            RemovalsError::Envelope(e) => e.into(),
            RemovalsError::NotAQuery | RemovalsError::BadKey => {
                Status::invalid_argument(e.to_string())
            }
        }
    }
}

impl From<FeedsError> for Status {
    fn from(e: FeedsError) -> Self {
        match e {
            FeedsError::Envelope(e) => e.into(),
            FeedsError::NotAQuery => Status::invalid_argument(e.to_string()),
            FeedsError::Store(_) => Status::internal(e.to_string()),
        }
    }
}

impl From<BadAddress> for Status {
    fn from(e: BadAddress) -> Self {
        Status::invalid_argument(e.to_string())
    }
}

/// Logs a refused request with its code and reason (no payloads), and
/// returns the status to answer with.
pub fn refused(rpc: &'static str, err: impl Into<Status>) -> Status {
    let status = err.into();
    if let Some(suppressed) = log_budget(rpc, status.code()) {
        tracing::warn!(rpc, code = ?status.code(), reason = status.message(), suppressed, "request refused");
    }
    status
}

/// Refusal lines logged per second for one RPC and code: a flood of junk is
/// logged, without flooding the log.
const REFUSALS_LOGGED_PER_SEC: u32 = 20;

/// Whether a refusal of `rpc` with `code` may be logged now; if so, how
/// many like it were not logged since the last that was.
fn log_budget(rpc: &'static str, code: tonic::Code) -> Option<u64> {
    use std::{
        collections::HashMap,
        sync::{LazyLock, Mutex},
        time::{Duration, Instant},
    };
    type Window = (Instant, u32, u64);
    static WINDOWS: LazyLock<Mutex<HashMap<(&'static str, tonic::Code), Window>>> =
        LazyLock::new(Mutex::default);
    let now = Instant::now();
    let mut windows = WINDOWS.lock().unwrap_or_else(|e| e.into_inner());
    let (start, logged, suppressed) = windows.entry((rpc, code)).or_insert((now, 0, 0));
    if now.duration_since(*start) >= Duration::from_secs(1) {
        (*start, *logged) = (now, 0);
    }
    if *logged < REFUSALS_LOGGED_PER_SEC {
        *logged += 1;
        Some(std::mem::take(suppressed))
    } else {
        *suppressed += 1;
        None
    }
}
