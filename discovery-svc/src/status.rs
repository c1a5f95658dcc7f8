//! The one place where domain errors become gRPC statuses (DESIGN §6):
//! registry and store refusals, and watcher limits. No other module builds
//! a [`Status`].

use tonic::Status;
use tracing::warn;

use chat_proto::registration::ProofError;

use crate::registry::RegistryError;
use crate::watchers::WatchError;

/// How long a caller refused for a full cap is asked to wait.
const RETRY_AFTER: std::time::Duration = std::time::Duration::from_secs(5);

/// The status a refused `rpc` answers with, logged once here.
pub fn refused(rpc: &'static str, err: impl Into<Status>) -> Status {
    let status = err.into();
    warn!(rpc, code = ?status.code(), reason = status.message(), "request refused");
    status
}

impl From<RegistryError> for Status {
    fn from(err: RegistryError) -> Self {
        let msg = err.to_string();
        match err {
            RegistryError::InvalidName(_)
            | RegistryError::InvalidAddress(_)
            | RegistryError::InvalidPublicKey(_)
            | RegistryError::MissingField(_) => Status::invalid_argument(msg),
            RegistryError::NameTaken(_) => Status::already_exists(msg),
            RegistryError::UnknownLease => Status::not_found(msg),
            RegistryError::WrongToken | RegistryError::StaleProof => Status::permission_denied(msg),
            RegistryError::Unavailable(_) => Status::unavailable(msg),
            // "Not now": room comes back as leases end.
            RegistryError::Full(_) => chat_proto::limits::not_now(msg, RETRY_AFTER),
        }
    }
}

/// A registration proof that did not hold: the caller did not show it
/// holds the key (or showed it too late, or twice).
pub fn unproven(err: ProofError) -> Status {
    Status::permission_denied(err.to_string())
}

/// A List page token that no List handed out.
pub fn bad_page_token() -> Status {
    Status::invalid_argument(
        "page_token must be empty or the next_page_token of a List answer (a member name)",
    )
}

impl From<WatchError> for Status {
    fn from(err: WatchError) -> Self {
        let msg = err.to_string();
        match err {
            // "Not now": slots come back as watchers leave.
            WatchError::TooMany { .. } | WatchError::TooManyFromSource { .. } => {
                chat_proto::limits::not_now(msg, RETRY_AFTER)
            }
            WatchError::FellBehind { .. } => Status::resource_exhausted(msg),
        }
    }
}

#[cfg(test)]
mod tests {
    use tonic::Code;

    use super::*;

    #[test]
    fn watch_errors_are_resource_exhausted_with_their_messages() {
        let too_many = Status::from(WatchError::TooMany { limit: 3 });
        assert_eq!(too_many.code(), Code::ResourceExhausted);
        assert_eq!(
            too_many.message(),
            "too many watchers (limit 3); try again later"
        );
        let behind = Status::from(WatchError::FellBehind { missed: 7 });
        assert_eq!(behind.code(), Code::ResourceExhausted);
        assert_eq!(
            behind.message(),
            "watch fell 7 events behind; call Watch again"
        );
    }

    #[test]
    fn registry_errors_keep_their_codes() {
        let cases = [
            (
                RegistryError::InvalidName("is empty"),
                Code::InvalidArgument,
            ),
            (
                RegistryError::MissingField("lease_id"),
                Code::InvalidArgument,
            ),
            (
                RegistryError::NameTaken("alice".into()),
                Code::AlreadyExists,
            ),
            (RegistryError::UnknownLease, Code::NotFound),
            (RegistryError::WrongToken, Code::PermissionDenied),
            (
                RegistryError::Unavailable("etcd: down".into()),
                Code::Unavailable,
            ),
        ];
        for (err, code) in cases {
            let msg = err.to_string();
            let status = Status::from(err);
            assert_eq!((status.code(), status.message()), (code, msg.as_str()));
        }
    }
}
