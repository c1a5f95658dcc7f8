//! `chat.v1.Peer`, served on the peer's public address to other peers.

use std::{pin::Pin, sync::Arc};

use chat_proto::v1::{
    DeliverBatch, DeliverBatchAck, DeliverRequest, DeliverResponse, Envelope, HistoryCursor,
    PeerHandshakeRequest, PeerHandshakeResponse, PeerHistoryRequest, PeerHistoryResponse,
    SealedMessage, peer_server::Peer,
};
use futures::Stream;
use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::{
    error::{PeerError, refused},
    history::Query,
    node::Node,
    session::envelope_aad,
};

/// History items in flight per `Peer/History` stream.
const HISTORY_STREAM_QUEUE: usize = 64;

/// History pulls served at once: each reads and encrypts a whole history,
/// so a few suffice for newcomers and bound what requests can make us do.
pub const MAX_HISTORY_STREAMS: usize = 8;

/// The Peer service of one node.
#[derive(Debug, Clone)]
pub struct PeerService {
    node: Arc<Node>,
    history_streams: Arc<tokio::sync::Semaphore>,
}

impl PeerService {
    /// Serves `node` to other peers.
    pub fn new(node: Arc<Node>) -> Self {
        Self {
            node,
            history_streams: Arc::new(tokio::sync::Semaphore::new(MAX_HISTORY_STREAMS)),
        }
    }
}

type HistoryStream = Pin<Box<dyn Stream<Item = Result<PeerHistoryResponse, Status>> + Send>>;
type DeliverAckStream = Pin<Box<dyn Stream<Item = Result<DeliverBatchAck, Status>> + Send>>;

/// Acks queued per `Peer/DeliverStream` before the receiver stops reading.
const DELIVER_STREAM_ACKS: usize = 16;

/// Most envelopes a streamed batch may carry.
pub const MAX_STREAM_BATCH_ENVELOPES: usize = 1024;

#[tonic::async_trait]
impl Peer for PeerService {
    async fn handshake(
        &self,
        request: Request<PeerHandshakeRequest>,
    ) -> Result<Response<PeerHandshakeResponse>, Status> {
        let remote = request.remote_addr().map(|a| a.ip());
        let message = self
            .node
            .accept_handshake(&request.into_inner().message, remote)
            .await
            .map_err(|e| refused("Peer/Handshake", e))?;
        Ok(Response::new(PeerHandshakeResponse { message }))
    }

    async fn deliver(
        &self,
        request: Request<DeliverRequest>,
    ) -> Result<Response<DeliverResponse>, Status> {
        self.node
            .accept_envelope(request.into_inner().envelope)
            .await
            .map(Response::new)
            .map_err(|e| refused("Peer/Deliver", e))
    }

    type DeliverStreamStream = DeliverAckStream;

    async fn deliver_stream(
        &self,
        request: Request<Streaming<DeliverBatch>>,
    ) -> Result<Response<Self::DeliverStreamStream>, Status> {
        let mut batches = request.into_inner();
        let (tx, rx) = mpsc::channel(DELIVER_STREAM_ACKS);
        let node = self.node.clone();
        tokio::spawn(async move {
            // One batch at a time, in order: acks go back in batch order.
            // On shutdown the stream ends, so it does not hold the server's
            // graceful stop open; the sender opens a new one elsewhere.
            let shutdown = node.shutdown.clone();
            loop {
                let next = tokio::select! {
                    next = batches.message() => next,
                    _ = shutdown.cancelled() => return,
                };
                let batch = match next {
                    Ok(Some(batch)) => batch,
                    Ok(None) => return,
                    // The sender went away: nothing to refuse.
                    Err(status) if status.code() == tonic::Code::Cancelled => return,
                    Err(status) => {
                        let status = refused(
                            "Peer/DeliverStream",
                            PeerError::InvalidArgument(format!("bad batch: {}", status.message())),
                        );
                        let _ = tx.send(Err(status)).await;
                        return;
                    }
                };
                if batch.envelopes.len() > MAX_STREAM_BATCH_ENVELOPES {
                    let status = refused(
                        "Peer/DeliverStream",
                        PeerError::ResourceExhausted(format!(
                            "a batch holds at most {MAX_STREAM_BATCH_ENVELOPES} envelopes"
                        )),
                    );
                    let _ = tx.send(Err(status)).await;
                    return;
                }
                let results = node.accept_batch(batch.envelopes).await;
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
        let envelope = request.into_inner().envelope.ok_or_else(|| {
            refused(
                "Peer/History",
                PeerError::InvalidArgument("envelope is required".into()),
            )
        })?;
        let (session, plaintext) = self
            .node
            .open_envelope(&envelope)
            .map_err(|e| refused("Peer/History", e))?;
        if !self.node.config.share_history {
            return Err(refused(
                "Peer/History",
                PeerError::PermissionDenied(format!(
                    "{} does not share history (--share-history=false); ask another peer",
                    self.node.name()
                )),
            ));
        }
        let cursor = HistoryCursor::decode(plaintext.as_slice()).map_err(|_| {
            refused(
                "Peer/History",
                PeerError::InvalidArgument("sealed content is not a HistoryCursor".into()),
            )
        })?;
        let permit = self.history_streams.clone().try_acquire_owned().map_err(|_| {
            refused(
                "Peer/History",
                PeerError::ResourceExhausted(format!(
                    "{MAX_HISTORY_STREAMS} history pulls are already being served; retry shortly"
                )),
            )
        })?;
        let (tx, rx) = mpsc::channel(HISTORY_STREAM_QUEUE);
        let node = self.node.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let mut query = Query {
                cursor: (!cursor.after.is_empty()).then_some(cursor.after),
                since_hlc: (cursor.since_hlc > 0).then_some(cursor.since_hlc),
                ..Default::default()
            };
            let mut remaining = if cursor.limit == 0 {
                usize::MAX
            } else {
                cursor.limit as usize
            };
            loop {
                let page = match node.store.query(&query) {
                    Ok(page) => page,
                    Err(e) => {
                        let _ = tx.send(Err(Status::invalid_argument(e.to_string()))).await;
                        return;
                    }
                };
                for message in page.messages {
                    if remaining == 0 {
                        return;
                    }
                    remaining -= 1;
                    let session_id = session.id();
                    let id = message.id.clone();
                    let cursor = crate::history::cursor_of(&message);
                    let aad = envelope_aad(&session_id, node.name(), &id);
                    let plaintext = SealedMessage {
                        message: Some(message),
                    }
                    .encode_to_vec();
                    let item = session.transport.seal_next(&aad, &plaintext).map(
                        |(counter, ciphertext)| PeerHistoryResponse {
                            envelope: Some(Envelope {
                                session_id: session_id.to_vec(),
                                counter,
                                sender: node.name().to_owned(),
                                message_id: id,
                                ciphertext,
                            }),
                            cursor,
                        },
                    );
                    let item = item.map_err(|e| Status::internal(format!("cannot seal: {e}")));
                    if tx.send(item).await.is_err() {
                        return; // the requester went away
                    }
                }
                match page.next_cursor {
                    Some(next) => query.cursor = Some(next),
                    None => return,
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
