//! Server reflection for every server of the project, in both protocol
//! versions: v1 for current clients and v1alpha for grpcurl 1.8, which
//! speaks nothing else.

use tonic_reflection::server::{
    Builder, Error,
    v1::{ServerReflection, ServerReflectionServer},
    v1alpha::{
        ServerReflection as ServerReflectionV1Alpha,
        ServerReflectionServer as ServerReflectionServerV1Alpha,
    },
};

/// The name grpcurl lists for the health service.
pub const HEALTH_SERVICE: &str = "grpc.health.v1.Health";

/// Reflection services (v1, v1alpha) that describe all of `chat.v1` and
/// health, and advertise only `services` (plus health and reflection itself),
/// so `grpcurl list` shows what this server really serves.
#[allow(clippy::type_complexity)]
pub fn services(
    services: &[&str],
) -> Result<
    (
        ServerReflectionServer<impl ServerReflection>,
        ServerReflectionServerV1Alpha<impl ServerReflectionV1Alpha>,
    ),
    Error,
> {
    let builder = || {
        let mut b = Builder::configure()
            .register_encoded_file_descriptor_set(crate::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .with_service_name(HEALTH_SERVICE);
        for name in services {
            b = b.with_service_name(*name);
        }
        b
    };
    Ok((builder().build_v1()?, builder().build_v1alpha()?))
}
