//! The delivery stream: one long-lived `Peer/DeliverStream` per peer
//! address, opened on first use and closed after a quiet minute.
//!
//! Callers hand a message and the session to seal it under to the address's
//! pipe and wait for its result, exactly as they would wait for a unary
//! `Deliver`. The pipe's task seals messages in the order they arrive, packs
//! whatever is waiting into one batch (so batches grow with the load and a
//! lone message goes out alone, at once), keeps a bounded window of batches
//! in flight, and answers each caller from the batch's ack once the receiver
//! has committed it. Nothing is acknowledged that the receiver has not
//! stored; whatever was in flight when the stream broke is reported failed,
//! and the caller queues it in the outbox, whose redelivery the receiver
//! deduplicates by (sender, id) — so every message is stored exactly once.
//!
//! A peer without `DeliverStream` answers UNIMPLEMENTED; its address is then
//! remembered and unary `Deliver` is used for it.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex},
    time::Duration,
};

use chat_proto::v1::{DeliverBatch, DeliverBatchAck, Envelope, peer_client::PeerClient};
use tokio::{
    sync::{mpsc, oneshot},
    time::Instant,
};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Status, transport::Channel};
use tracing::debug;

use crate::{
    config::DELIVER_TIMEOUT,
    envelope::{Outgoing, seal_outgoing},
    session::Session,
};

/// Most envelopes in one batch.
const MAX_BATCH_ENVELOPES: usize = 512;

/// Most bytes of ciphertext in one batch: well under the receiver's decode
/// limit for a batch ([`MAX_BATCH_BYTES_DECODED`]).
const MAX_BATCH_BYTES: usize = 768 * 1024;

/// The largest DeliverBatch a receiver decodes (one full batch plus framing;
/// a single envelope of the largest message always fits on its own).
pub const MAX_BATCH_BYTES_DECODED: usize = 1024 * 1024;

/// Batches sent and not yet acknowledged, per stream.
const MAX_BATCHES_IN_FLIGHT: usize = 8;

/// Messages waiting for the pipe's task: callers wait beyond that.
const PIPE_QUEUE: usize = 4096;

/// How long a peer that answered UNIMPLEMENTED gets unary Deliver before
/// the stream is tried again (it may have been upgraded meanwhile).
const UNARY_ONLY_FOR: Duration = Duration::from_secs(600);

/// A pipe with nothing to carry for this long closes its stream.
const PIPE_IDLE: Duration = Duration::from_secs(60);

/// One message for a pipe, and where its result goes.
struct Item {
    session: Arc<Session>,
    message: Outgoing,
    done: oneshot::Sender<Result<(), Status>>,
}

/// What this peer keeps per peer address: the pipe carrying to it, or
/// since when it is known not to stream.
#[derive(Debug)]
enum Link {
    /// The pipe's queue (its task runs while the queue is open).
    Pipe(mpsc::Sender<Item>),
    /// The peer answered UNIMPLEMENTED at this time: unary Deliver for it,
    /// for [`UNARY_ONLY_FOR`].
    UnaryOnly(Instant),
}

/// The delivery streams of this peer, by peer address.
#[derive(Debug, Default)]
pub struct Streams {
    links: Mutex<HashMap<String, Link>>,
}

impl std::fmt::Debug for Item {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Item")
            .field("message_id", &self.message.id)
            .finish_non_exhaustive()
    }
}

impl Streams {
    /// False once the peer at `address` turned out not to stream.
    pub fn streams_to(&self, address: &str) -> bool {
        let mut links = self.links.lock().expect("streams lock");
        match links.get(address) {
            Some(Link::UnaryOnly(since)) if since.elapsed() < UNARY_ONLY_FOR => false,
            Some(Link::UnaryOnly(_)) => {
                links.remove(address);
                true
            }
            _ => true,
        }
    }

    /// Delivers `message` sealed under `session` through the pipe to
    /// `address`, returning once the receiver stored it (or refused it).
    /// UNIMPLEMENTED means the peer has no stream: use unary Deliver.
    pub async fn deliver(
        &self,
        address: &str,
        channel: impl FnOnce() -> Result<Channel, Status>,
        session: Arc<Session>,
        message: Outgoing,
    ) -> Result<(), Status> {
        let (done, result) = oneshot::channel();
        let mut item = Item {
            session,
            message,
            done,
        };
        let mut channel = Some(channel);
        // At most twice: a pipe that just closed for idleness is replaced.
        for _ in 0..2 {
            let tx = {
                let mut links = self.links.lock().expect("streams lock");
                match links.get(address) {
                    Some(Link::Pipe(tx)) if !tx.is_closed() => tx.clone(),
                    _ => {
                        let make = channel.take().ok_or_else(|| {
                            Status::unavailable("the delivery stream closed twice")
                        })?;
                        let (tx, rx) = mpsc::channel(PIPE_QUEUE);
                        tokio::spawn(run(make()?, rx));
                        links.insert(address.to_owned(), Link::Pipe(tx.clone()));
                        tx
                    }
                }
            };
            match tx.send(item).await {
                Ok(()) => break,
                Err(mpsc::error::SendError(back)) => item = back,
            }
        }
        let outcome = result
            .await
            .unwrap_or_else(|_| Err(Status::unavailable("the delivery stream closed")));
        if matches!(&outcome, Err(s) if s.code() == Code::Unimplemented) {
            debug!(address, "peer has no DeliverStream; using unary Deliver");
            self.links
                .lock()
                .expect("streams lock")
                .insert(address.to_owned(), Link::UnaryOnly(Instant::now()));
        }
        outcome
    }
}

/// A sent batch: who waits for each of its envelopes.
struct InFlight {
    seq: u64,
    sent_at: Instant,
    waiting: Vec<oneshot::Sender<Result<(), Status>>>,
}

/// The pipe's task: opens a stream when there is something to carry, and
/// carries it until the pipe is idle for [`PIPE_IDLE`].
async fn run(channel: Channel, mut items: mpsc::Receiver<Item>) {
    loop {
        let first = match tokio::time::timeout(PIPE_IDLE, items.recv()).await {
            Ok(Some(item)) => item,
            Ok(None) | Err(_) => return,
        };
        let mut pending = Some(first);
        if let Err(status) = carry(&channel, &mut items, &mut pending).await {
            debug!(error = %status.message(), "delivery stream ended");
            if let Some(item) = pending.take() {
                let _ = item.done.send(Err(status.clone()));
            }
            if status.code() == Code::Unimplemented {
                // Nothing will ever stream here: answer the rest the same way.
                items.close();
                while let Some(item) = items.recv().await {
                    let _ = item.done.send(Err(status.clone()));
                }
                return;
            }
        }
    }
}

/// One stream's life: returns Ok when the pipe went idle, Err when the
/// stream failed (every unacknowledged caller has been told by then).
async fn carry(
    channel: &Channel,
    items: &mut mpsc::Receiver<Item>,
    pending: &mut Option<Item>,
) -> Result<(), Status> {
    let mut in_flight: VecDeque<InFlight> = VecDeque::new();
    // The first batch goes with the call, so the stream opens with work.
    let first = pending.take().expect("a first item");
    let mut batch = Vec::new();
    let (waiting, mut leftover) = pack(first, items, &mut batch);
    let mut seq = 1u64;
    in_flight.push_back(InFlight {
        seq,
        sent_at: Instant::now(),
        waiting,
    });
    let (batches, mut ack_rx, _reader) = match open(
        channel,
        DeliverBatch {
            seq,
            envelopes: batch,
        },
    )
    .await
    {
        Ok(opened) => opened,
        Err(status) => return Err(fail_all(&mut in_flight, status)),
    };
    loop {
        let deadline = in_flight.front().map(|b| b.sent_at + DELIVER_TIMEOUT);
        let room = in_flight.len() < MAX_BATCHES_IN_FLIGHT;
        tokio::select! {
            ack = ack_rx.recv() => {
                let ack = ack.unwrap_or_else(|| Err(Status::unavailable("the delivery stream ended")));
                if let Err(status) = ack.and_then(|ack| answer(&mut in_flight, ack)) {
                    return Err(fail_all(&mut in_flight, status));
                }
            }
            item = next_item(&mut leftover, items), if room => {
                let Some(item) = item else { return Ok(()) };
                let mut batch = Vec::new();
                let (waiting, rest) = pack(item, items, &mut batch);
                leftover = rest;
                seq += 1;
                in_flight.push_back(InFlight { seq, sent_at: Instant::now(), waiting });
                if batches.send(DeliverBatch { seq, envelopes: batch }).await.is_err() {
                    return Err(fail_all(&mut in_flight, Status::unavailable("the delivery stream closed")));
                }
            }
            _ = sleep_until_opt(deadline) => {
                return Err(fail_all(
                    &mut in_flight,
                    Status::deadline_exceeded(format!("no ack within {DELIVER_TIMEOUT:?}")),
                ));
            }
            _ = tokio::time::sleep(PIPE_IDLE), if in_flight.is_empty() && leftover.is_none() => return Ok(()),
        }
    }
}

/// An open delivery stream: where batches go, where acks come back, and
/// the task reading them (aborted when dropped).
type Opened = (
    mpsc::Sender<DeliverBatch>,
    mpsc::Receiver<Result<DeliverBatchAck, Status>>,
    AbortOnDrop,
);

/// Opens a `DeliverStream` carrying `first`.
async fn open(channel: &Channel, first: DeliverBatch) -> Result<Opened, Status> {
    let (batches, outgoing) = mpsc::channel::<DeliverBatch>(MAX_BATCHES_IN_FLIGHT);
    // No encode limit of our own: a batch stays under MAX_BATCH_BYTES unless
    // it is a single envelope of a large message, which the receiver's limit
    // (its message limit plus overhead) then decides on.
    let mut client =
        PeerClient::new(channel.clone()).max_decoding_message_size(MAX_BATCH_BYTES_DECODED);
    let _ = batches.try_send(first);
    let call = tokio::time::timeout(
        DELIVER_TIMEOUT,
        client.deliver_stream(ReceiverStream::new(outgoing)),
    )
    .await;
    let mut acks = match call {
        Ok(Ok(response)) => response.into_inner(),
        Ok(Err(status)) => return Err(status),
        Err(_) => {
            return Err(Status::deadline_exceeded(
                "the delivery stream did not open in time",
            ));
        }
    };
    // Acks are read by a task of their own, so the caller's loop only ever
    // waits on cancel-safe channel receives.
    let (ack_tx, ack_rx) = mpsc::channel::<Result<DeliverBatchAck, Status>>(8);
    let reader = tokio::spawn(async move {
        loop {
            let next = match acks.message().await {
                Ok(Some(ack)) => Ok(ack),
                Ok(None) => Err(Status::unavailable("the peer closed the delivery stream")),
                Err(status) => Err(status),
            };
            let end = next.is_err();
            if ack_tx.send(next).await.is_err() || end {
                return;
            }
        }
    });
    Ok((batches, ack_rx, AbortOnDrop(reader)))
}

/// Answers the callers of the oldest batch in flight from its ack.
fn answer(in_flight: &mut VecDeque<InFlight>, ack: DeliverBatchAck) -> Result<(), Status> {
    let Some(front) = in_flight.pop_front() else {
        return Err(Status::internal("an ack for no batch"));
    };
    if front.seq != ack.seq || front.waiting.len() != ack.results.len() {
        in_flight.push_front(front);
        return Err(Status::internal("acks out of order"));
    }
    for (waiter, result) in front.waiting.into_iter().zip(ack.results) {
        let outcome = if result.code == 0 {
            Ok(())
        } else if result.retry_after_ms > 0 {
            Err(chat_proto::limits::not_now(
                result.error,
                std::time::Duration::from_millis(u64::from(result.retry_after_ms)),
            ))
        } else {
            Err(Status::new(Code::from_i32(result.code), result.error))
        };
        let _ = waiter.send(outcome);
    }
    Ok(())
}

/// Seals `first` and whatever else is already waiting (up to the batch
/// limits) into `batch`; returns the callers to answer, in batch order, and
/// the item that did not fit, which starts the next batch.
fn pack(
    first: Item,
    items: &mut mpsc::Receiver<Item>,
    batch: &mut Vec<Envelope>,
) -> (Vec<oneshot::Sender<Result<(), Status>>>, Option<Item>) {
    let mut waiting = Vec::new();
    let mut bytes = 0usize;
    let mut next = Some(first);
    while let Some(item) = next.take() {
        if item.done.is_closed() {
            // Its caller gave up (and queued it): don't send it twice now.
            next = items.try_recv().ok();
            continue;
        }
        // Counted as encoded; the first envelope always goes, however large.
        let size = item.message.plaintext.len() + item.message.id.len() + 128;
        if !batch.is_empty() && bytes + size > MAX_BATCH_BYTES {
            // Full: this one waits for the next batch. The channel has no
            // way to put it back, so it starts the next batch itself.
            return (waiting, Some(item));
        }
        match seal_outgoing(&item.session, &item.message) {
            Ok(envelope) => {
                bytes += size;
                batch.push(envelope);
                waiting.push(item.done);
            }
            Err(e) => {
                let _ = item.done.send(Err(e.into()));
            }
        }
        if batch.len() < MAX_BATCH_ENVELOPES {
            next = items.try_recv().ok();
        }
    }
    (waiting, None)
}

/// The item left over from the last batch, or the next one to arrive.
async fn next_item(leftover: &mut Option<Item>, items: &mut mpsc::Receiver<Item>) -> Option<Item> {
    match leftover.take() {
        Some(item) => Some(item),
        None => items.recv().await,
    }
}

/// Tells everyone still waiting that their batch failed with `status`.
fn fail_all(in_flight: &mut VecDeque<InFlight>, status: Status) -> Status {
    for batch in in_flight.drain(..) {
        for waiter in batch.waiting {
            let _ = waiter.send(Err(status.clone()));
        }
    }
    status
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use chat_proto::v1::{
        DeliverRequest, DeliverResponse, DeliverResult, PeerHandshakeRequest,
        PeerHandshakeResponse, PeerHistoryRequest, PeerHistoryResponse,
        peer_server::{Peer, PeerServer},
    };
    use futures::StreamExt;
    use tonic::{Request, Response, Streaming};

    use chat_proto::v1::ChatMessage;

    use super::*;
    use crate::session::Role;

    /// A Peer server that counts what it is given; with `stream` false it
    /// has no DeliverStream (like a peer built before it existed).
    #[derive(Clone)]
    struct Counting {
        stream: bool,
        streamed: Arc<AtomicUsize>,
    }

    type Boxed<T> = std::pin::Pin<Box<dyn futures::Stream<Item = Result<T, Status>> + Send>>;

    #[tonic::async_trait]
    impl Peer for Counting {
        async fn handshake(
            &self,
            _: Request<PeerHandshakeRequest>,
        ) -> Result<Response<PeerHandshakeResponse>, Status> {
            Err(Status::unimplemented("test"))
        }
        async fn deliver(
            &self,
            _: Request<DeliverRequest>,
        ) -> Result<Response<DeliverResponse>, Status> {
            Err(Status::unimplemented("test"))
        }
        type DeliverStreamStream = Boxed<DeliverBatchAck>;
        async fn deliver_stream(
            &self,
            request: Request<Streaming<DeliverBatch>>,
        ) -> Result<Response<Self::DeliverStreamStream>, Status> {
            if !self.stream {
                return Err(Status::unimplemented("chat.v1.Peer/DeliverStream"));
            }
            let streamed = self.streamed.clone();
            let acks = request.into_inner().map(move |batch| {
                let batch = batch?;
                streamed.fetch_add(batch.envelopes.len(), Ordering::SeqCst);
                Ok(DeliverBatchAck {
                    seq: batch.seq,
                    results: batch
                        .envelopes
                        .into_iter()
                        .map(|_| DeliverResult::default())
                        .collect(),
                })
            });
            Ok(Response::new(Box::pin(acks)))
        }
        type HistoryStream = Boxed<PeerHistoryResponse>;
        async fn history(
            &self,
            _: Request<PeerHistoryRequest>,
        ) -> Result<Response<Self::HistoryStream>, Status> {
            Err(Status::unimplemented("test"))
        }
        async fn removals(
            &self,
            _: Request<chat_proto::v1::PeerRemovalsRequest>,
        ) -> Result<Response<chat_proto::v1::PeerRemovalsResponse>, Status> {
            Err(Status::unimplemented("test"))
        }
        async fn feeds(
            &self,
            _: Request<chat_proto::v1::PeerFeedsRequest>,
        ) -> Result<Response<chat_proto::v1::PeerFeedsResponse>, Status> {
            Err(Status::unimplemented("test"))
        }
    }

    async fn serve(peer: Counting) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(PeerServer::new(peer))
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
        );
        addr
    }

    fn session() -> Arc<Session> {
        use chat_noise::{Initiator, Responder, StaticKeypair};
        let (a, b) = (StaticKeypair::generate(), StaticKeypair::generate());
        let (m1, waiting) = Initiator::new(&a, b.public_key(), b"t")
            .write_message(b"")
            .unwrap();
        let (m2, _) = Responder::read_message(&b, b"t", &m1)
            .unwrap()
            .write_message(b"")
            .unwrap();
        let (_, transport) = waiting.read_message(&m2).unwrap();
        Arc::new(Session::new(transport, "bob".into(), Role::Initiator))
    }

    fn message(i: usize) -> ChatMessage {
        ChatMessage {
            id: format!("m{i}"),
            sender: "alice".into(),
            text: "hello".into(),
            ..Default::default()
        }
    }

    fn channel(addr: &str) -> Result<Channel, Status> {
        Ok(
            tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
                .unwrap()
                .connect_lazy(),
        )
    }

    #[tokio::test]
    async fn concurrent_deliveries_share_the_stream_and_each_hears_its_ack() {
        let streamed = Arc::new(AtomicUsize::new(0));
        let addr = serve(Counting {
            stream: true,
            streamed: streamed.clone(),
        })
        .await;
        let pipes = Arc::new(Streams::default());
        let session = session();
        let calls = (0..300).map(|i| {
            let (pipes, session, addr) = (pipes.clone(), session.clone(), addr.clone());
            async move {
                pipes
                    .deliver(&addr, || channel(&addr), session, Outgoing::of(&message(i)))
                    .await
            }
        });
        for outcome in futures::future::join_all(calls).await {
            outcome.unwrap();
        }
        assert_eq!(streamed.load(Ordering::SeqCst), 300);
        assert!(pipes.streams_to(&addr));
    }

    #[tokio::test]
    async fn a_peer_without_the_stream_is_remembered_for_unary_delivery() {
        let streamed = Arc::new(AtomicUsize::new(0));
        let addr = serve(Counting {
            stream: false,
            streamed: streamed.clone(),
        })
        .await;
        let pipes = Streams::default();
        assert!(pipes.streams_to(&addr));
        let err = pipes
            .deliver(
                &addr,
                || channel(&addr),
                session(),
                Outgoing::of(&message(1)),
            )
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Unimplemented);
        assert!(!pipes.streams_to(&addr), "unary Deliver from now on");
        assert_eq!(streamed.load(Ordering::SeqCst), 0);
        // After a while the stream is tried again (the peer may be upgraded).
        let long_ago = Instant::now().checked_sub(UNARY_ONLY_FOR).unwrap();
        pipes
            .links
            .lock()
            .unwrap()
            .insert(addr.clone(), Link::UnaryOnly(long_ago));
        assert!(pipes.streams_to(&addr));
    }
}
