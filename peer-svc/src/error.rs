//! Errors of the peer, and the one place where they become gRPC statuses
//! (DESIGN §6). Messages say what to do next and never carry message text
//! or key material.

use tonic::Status;

/// Why a request to this peer was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeerError {
    /// A field is missing, empty or malformed.
    #[error("{0}")]
    InvalidArgument(String),
    /// Over a size or rate limit.
    #[error("{0}")]
    ResourceExhausted(String),
    /// Bad handshake, unknown or expired session, failed decryption, replay.
    #[error("{0}")]
    Unauthenticated(String),
    /// The key is not the one Discovery lists or was pinned.
    #[error("{0}")]
    PermissionDenied(String),
    /// No such peer.
    #[error("{0}")]
    NotFound(String),
    /// A peer or Discovery could not be reached.
    #[error("{0}")]
    Unavailable(String),
    /// This peer failed (e.g. its store); nothing was acknowledged.
    #[error("{0}")]
    Internal(String),
}

impl From<PeerError> for Status {
    fn from(err: PeerError) -> Self {
        match err {
            PeerError::InvalidArgument(m) => Status::invalid_argument(m),
            PeerError::ResourceExhausted(m) => Status::resource_exhausted(m),
            PeerError::Unauthenticated(m) => Status::unauthenticated(m),
            PeerError::PermissionDenied(m) => Status::permission_denied(m),
            PeerError::NotFound(m) => Status::not_found(m),
            PeerError::Unavailable(m) => Status::unavailable(m),
            PeerError::Internal(m) => Status::internal(m),
        }
    }
}

/// Logs a refused request with its code and reason (no payloads), and passes it on.
pub fn refused(rpc: &'static str, err: PeerError) -> Status {
    let status = Status::from(err);
    tracing::warn!(rpc, code = ?status.code(), reason = status.message(), "request refused");
    status
}
