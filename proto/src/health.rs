//! `grpc.health.v1.Health` with its limits: a request is a service name
//! (1 KiB is plenty), and `Watch` streams are capped, since each holds a
//! subscription for as long as the client keeps it open.

use std::{pin::Pin, sync::Arc};

use futures::{Stream, StreamExt};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};
use tonic_health::{
    pb::{
        HealthCheckRequest, HealthCheckResponse,
        health_server::{Health, HealthServer},
    },
    server::{HealthReporter, HealthService},
};

/// Default most concurrent health `Watch` streams per server.
pub const MAX_HEALTH_WATCHES: usize = 64;

/// How long a refused health watcher is asked to wait.
const RETRY_AFTER: std::time::Duration = std::time::Duration::from_secs(5);

/// The health service of `reporter`, with at most `max_watches` concurrent
/// `Watch` streams, which end at `shutdown` (so that a graceful shutdown
/// does not wait for watchers), and requests of at most
/// [`MAX_HEALTH_REQUEST_BYTES`](crate::limits::MAX_HEALTH_REQUEST_BYTES).
pub fn service(
    reporter: HealthReporter,
    max_watches: usize,
    shutdown: CancellationToken,
) -> HealthServer<CappedHealth> {
    HealthServer::new(CappedHealth {
        inner: HealthService::from_health_reporter(reporter),
        watches: Arc::new(Semaphore::new(max_watches)),
        max_watches,
        shutdown,
    })
    .max_decoding_message_size(crate::limits::MAX_HEALTH_REQUEST_BYTES)
}

/// tonic-health's service with a cap on `Watch` streams.
#[derive(Debug)]
pub struct CappedHealth {
    inner: HealthService,
    watches: Arc<Semaphore>,
    max_watches: usize,
    shutdown: CancellationToken,
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<HealthCheckResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Health for CappedHealth {
    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        self.inner.check(request).await
    }

    type WatchStream = WatchStream;

    async fn watch(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let Ok(permit) = self.watches.clone().try_acquire_owned() else {
            let status = crate::limits::not_now(
                format!(
                    "too many health watches (limit {}); use Check, or try again later",
                    self.max_watches
                ),
                RETRY_AFTER,
            );
            tracing::warn!(reason = status.message(), "health watch refused");
            return Err(status);
        };
        let inner = self.inner.watch(request).await?.into_inner();
        // The permit lives as long as the stream.
        let stream = inner
            .map(move |item| {
                let _held = &permit;
                item
            })
            .take_until(self.shutdown.clone().cancelled_owned());
        Ok(Response::new(Box::pin(stream)))
    }
}
