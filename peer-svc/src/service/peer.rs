//! `chat.v1.Peer`, served on the peer's public address to other peers.

use std::{pin::Pin, sync::Arc};

use chat_proto::v1::{
    DeliverBatch, DeliverBatchAck, DeliverRequest, DeliverResponse, DeliverResult,
    PeerFeedsRequest, PeerFeedsResponse, PeerHandshakeRequest, PeerHandshakeResponse,
    PeerHistoryRequest, PeerHistoryResponse, PeerRemovalsRequest, PeerRemovalsResponse,
    peer_server::Peer,
};
use futures::{Stream, StreamExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

use crate::{
    feed_sync::FeedSync,
    handshaker::Handshaker,
    history_sync::HistorySync,
    inbound::Inbound,
    removal_sync::RemovalSync,
    service::status::{ServiceError, refused},
};

/// History items in flight per `Peer/History` stream.
const HISTORY_STREAM_QUEUE: usize = 64;

/// History pulls served at once: each reads and encrypts a whole history,
/// so a few suffice for newcomers and bound what requests can make us do.
pub const MAX_HISTORY_STREAMS: usize = 8;

/// The Peer service: the parts other peers reach.
#[derive(Debug, Clone)]
pub struct PeerService {
    handshaker: Arc<Handshaker>,
    inbound: Arc<Inbound>,
    history: Arc<HistorySync>,
    removals: Arc<RemovalSync>,
    feeds: Arc<FeedSync>,
    history_streams: Arc<tokio::sync::Semaphore>,
    shutdown: CancellationToken,
}

impl PeerService {
    /// Serves handshakes, deliveries, history pulls, removal pages and
    /// feed frontiers.
    pub fn new(
        handshaker: Arc<Handshaker>,
        inbound: Arc<Inbound>,
        (history, removals, feeds): (Arc<HistorySync>, Arc<RemovalSync>, Arc<FeedSync>),
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            handshaker,
            inbound,
            history,
            removals,
            feeds,
            history_streams: Arc::new(tokio::sync::Semaphore::new(MAX_HISTORY_STREAMS)),
            shutdown,
        }
    }
}

type HistoryStream = Pin<Box<dyn Stream<Item = Result<PeerHistoryResponse, Status>> + Send>>;
type DeliverAckStream = Pin<Box<dyn Stream<Item = Result<DeliverBatchAck, Status>> + Send>>;

/// Acks queued per `Peer/DeliverStream` before the receiver stops reading.
const DELIVER_STREAM_ACKS: usize = 16;

/// How long a `DeliverStream` may take to bring its first batch.
pub const FIRST_BATCH_TIMEOUT: std::time::Duration = chat_proto::conn::FIRST_BYTES_TIMEOUT;

/// How long a `DeliverStream` may go without a batch before it is closed
/// (longer than a sender keeps a quiet stream open).
pub const STREAM_IDLE_TIMEOUT: std::time::Duration = chat_proto::conn::IDLE_TIMEOUT;

/// Most envelopes a streamed batch may carry.
pub const MAX_STREAM_BATCH_ENVELOPES: usize = 1024;

/// One envelope's line in a batch ack.
fn batch_result(outcome: Result<bool, crate::inbound::InboundError>) -> DeliverResult {
    match outcome {
        Ok(new) => DeliverResult {
            duplicate: !new,
            ..Default::default()
        },
        Err(e) => {
            let status = refused("Peer/DeliverStream", e);
            DeliverResult {
                code: status.code() as i32,
                error: status.message().to_owned(),
                duplicate: false,
                retry_after_ms: chat_proto::limits::retry_after(&status)
                    .map_or(0, |d| d.as_millis() as u32),
            }
        }
    }
}

#[tonic::async_trait]
impl Peer for PeerService {
    async fn handshake(
        &self,
        request: Request<PeerHandshakeRequest>,
    ) -> Result<Response<PeerHandshakeResponse>, Status> {
        // Budgeted per source as the connection caps count it (an IPv6
        // host's /64).
        let remote = request
            .remote_addr()
            .map(|a| chat_proto::conn::source_of(a.ip()));
        let request = request.into_inner();
        let message = self
            .handshaker
            .accept(&request.message, &request.mac1, remote)
            .await
            .map_err(|e| refused("Peer/Handshake", e))?;
        Ok(Response::new(PeerHandshakeResponse { message }))
    }

    async fn deliver(
        &self,
        request: Request<DeliverRequest>,
    ) -> Result<Response<DeliverResponse>, Status> {
        let envelope = request.into_inner().envelope;
        let new = self
            .inbound
            .accept(envelope)
            .await
            .map_err(|e| refused("Peer/Deliver", e))?;
        Ok(Response::new(DeliverResponse { duplicate: !new }))
    }

    type DeliverStreamStream = DeliverAckStream;

    async fn deliver_stream(
        &self,
        request: Request<Streaming<DeliverBatch>>,
    ) -> Result<Response<Self::DeliverStreamStream>, Status> {
        let mut batches = request.into_inner();
        let (tx, rx) = mpsc::channel(DELIVER_STREAM_ACKS);
        let inbound = self.inbound.clone();
        let shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            // One batch at a time, in order: acks go back in batch order.
            // On shutdown the stream ends, so it does not hold the server's
            // graceful stop open; the sender opens a new one elsewhere.
            let mut first = true;
            loop {
                // A stream that brings nothing (opened and left half-open)
                // holds a task and its buffers: it must bring its first
                // batch soon and then not fall silent for long. An honest
                // sender closes its own stream after a quiet minute.
                let wait = if first {
                    FIRST_BATCH_TIMEOUT
                } else {
                    STREAM_IDLE_TIMEOUT
                };
                first = false;
                let next = tokio::select! {
                    next = tokio::time::timeout(wait, batches.message()) => match next {
                        Ok(next) => next,
                        Err(_) => {
                            tracing::debug!(?wait, "delivery stream silent; closed");
                            return;
                        }
                    },
                    _ = shutdown.cancelled() => return,
                };
                let batch = match next {
                    Ok(Some(batch)) => batch,
                    Ok(None) => return,
                    // The sender went away: nothing to refuse.
                    Err(status) if status.code() == tonic::Code::Cancelled => return,
                    // Its connection broke or closed mid-stream (a peer
                    // stopping): no batch to refuse, and nothing to warn of.
                    // Only a batch that does not decode is a bad batch.
                    Err(status) if !status.message().starts_with("failed to decode") => {
                        tracing::debug!(error = %status.message(), "delivery stream ended with its connection");
                        return;
                    }
                    Err(status) => {
                        let status = refused(
                            "Peer/DeliverStream",
                            ServiceError::InvalidArgument(format!(
                                "bad batch: {}",
                                status.message()
                            )),
                        );
                        let _ = tx.send(Err(status)).await;
                        return;
                    }
                };
                if batch.envelopes.len() > MAX_STREAM_BATCH_ENVELOPES {
                    let status = refused(
                        "Peer/DeliverStream",
                        ServiceError::ResourceExhausted(format!(
                            "a batch holds at most {MAX_STREAM_BATCH_ENVELOPES} envelopes"
                        )),
                    );
                    let _ = tx.send(Err(status)).await;
                    return;
                }
                let outcomes = inbound.accept_batch(&batch.envelopes).await;
                let results = outcomes.into_iter().map(batch_result).collect();
                let ack = DeliverBatchAck {
                    seq: batch.seq,
                    results,
                };
                if tx.send(Ok(ack)).await.is_err() {
                    return; // the sender went away
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    type HistoryStream = HistoryStream;

    async fn history(
        &self,
        request: Request<PeerHistoryRequest>,
    ) -> Result<Response<Self::HistoryStream>, Status> {
        let (session, cursor) = self
            .history
            .open_request(request.into_inner().envelope)
            .map_err(|e| refused("Peer/History", e))?;
        let permit = self.history_streams.clone().try_acquire_owned().map_err(|_| {
            refused(
                "Peer/History",
                chat_proto::limits::not_now(
                    format!(
                        "{MAX_HISTORY_STREAMS} history pulls are already being served; retry shortly"
                    ),
                    std::time::Duration::from_secs(1),
                ),
            )
        })?;
        let (items, rx) = mpsc::channel(HISTORY_STREAM_QUEUE);
        let history = self.history.clone();
        tokio::spawn(async move {
            let _permit = permit;
            history.serve(session, cursor, items).await;
        });
        let stream = ReceiverStream::new(rx).map(|item| item.map_err(Status::from));
        Ok(Response::new(Box::pin(stream)))
    }

    async fn removals(
        &self,
        request: Request<PeerRemovalsRequest>,
    ) -> Result<Response<PeerRemovalsResponse>, Status> {
        let page = self
            .removals
            .serve(request.into_inner().envelope)
            .map_err(|e| refused("Peer/Removals", e))?;
        Ok(Response::new(page))
    }

    async fn feeds(
        &self,
        request: Request<PeerFeedsRequest>,
    ) -> Result<Response<PeerFeedsResponse>, Status> {
        let frontier = self
            .feeds
            .serve(request.into_inner().envelope)
            .map_err(|e| refused("Peer/Feeds", e))?;
        Ok(Response::new(frontier))
    }
}
