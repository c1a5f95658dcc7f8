//! The one place where registry errors become gRPC statuses (DESIGN §6).

use tonic::Status;

use crate::registry::RegistryError;

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
            RegistryError::WrongToken => Status::permission_denied(msg),
            RegistryError::Unavailable(_) => Status::unavailable(msg),
        }
    }
}
