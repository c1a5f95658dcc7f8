//! `Control/SendStream`: many messages over one stream, answered in order.
//! Requests are stamped in the order they arrive and committed in chunks;
//! each chunk is delivered concurrently, by a task of its own.

use std::sync::Arc;

use chat_proto::v1::{SendRequest, SendStreamResponse};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use tonic::Status;

use crate::{
    outbound::{Outbound, Prepared, SendError},
    service::status::refused,
};

/// Sends in flight at once on one `SendStream`: enough for deliveries to
/// batch into large stream frames, few enough to bound the memory held.
pub const SEND_STREAM_WINDOW: usize = 1024;

/// Most requests of a `SendStream` stored in one transaction.
const SEND_STREAM_CHUNK: usize = 256;

/// Stores and delivers one chunk of a `SendStream`; answers in order.
async fn send_chunk(
    outbound: &Outbound,
    chunk: Vec<Result<Prepared, SendError>>,
) -> Vec<SendStreamResponse> {
    let mut answers: Vec<Option<SendStreamResponse>> = Vec::with_capacity(chunk.len());
    let mut ready = Vec::new();
    for prepared in chunk {
        match prepared {
            Ok(p) => {
                answers.push(None);
                ready.push(p);
            }
            Err(e) => answers.push(Some(failed(e))),
        }
    }
    let mut sent = outbound.send_prepared(ready).await.into_iter();
    answers
        .into_iter()
        .map(|a| {
            a.unwrap_or_else(|| match sent.next().expect("one answer per message") {
                Ok(response) => SendStreamResponse {
                    response: Some(response),
                    ..Default::default()
                },
                Err(e) => failed(e),
            })
        })
        .collect()
}

fn failed(e: SendError) -> SendStreamResponse {
    let status = refused("Control/SendStream", e);
    SendStreamResponse {
        response: None,
        code: status.code() as i32,
        error: status.message().to_owned(),
    }
}

/// Requests read from a `SendStream` (None: the client finished).
pub(crate) type Incoming = tokio::sync::mpsc::Receiver<Option<Result<SendRequest, Status>>>;

/// Answers a `SendStream`: requests are taken in chunks (whatever has
/// arrived, up to [`SEND_STREAM_CHUNK`]); each chunk is stamped in request
/// order, stored in one transaction, and delivered concurrently, and the
/// answers go back in request order. A request that could not be read
/// (oversized, malformed) ends the stream, but only after the answers for
/// the requests before it.
pub(crate) async fn answer(
    outbound: Arc<Outbound>,
    mut incoming: Incoming,
    tx: tokio::sync::mpsc::Sender<Result<SendStreamResponse, Status>>,
    shutdown: CancellationToken,
    oversize_hint: String,
) {
    let mut in_flight = futures::stream::FuturesOrdered::new();
    let mut held = 0usize;
    let mut more = true;
    let mut failed: Option<Status> = None;
    loop {
        tokio::select! {
            first = incoming.recv(), if more && held < SEND_STREAM_WINDOW => {
                let chunk = take_chunk(&outbound, first.flatten(), &mut incoming, &mut failed, &oversize_hint);
                more = chunk.more;
                if chunk.prepared.is_empty() {
                    continue;
                }
                held += chunk.prepared.len();
                // Each chunk is a task of its own, so a client that goes
                // away cannot cut deliveries short.
                let outbound = outbound.clone();
                let task = tokio::spawn(async move { send_chunk(&outbound, chunk.prepared).await });
                in_flight.push_back(async move { task.await.unwrap_or_default() });
            }
            // Stopping: answer what is in flight, take no more.
            _ = shutdown.cancelled(), if more => more = false,
            Some(answers) = in_flight.next(), if !in_flight.is_empty() => {
                let answers: Vec<SendStreamResponse> = answers;
                held -= answers.len();
                for answer in answers {
                    if tx.send(Ok(answer)).await.is_err() {
                        return; // the client went away
                    }
                }
            }
            else => break,
        }
    }
    if let Some(status) = failed {
        let _ = tx.send(Err(status)).await;
    }
}

/// One chunk of a `SendStream`, and whether more requests may follow.
struct Chunk {
    prepared: Vec<Result<Prepared, SendError>>,
    more: bool,
}

/// Prepares `first` and whatever else has already arrived, up to a chunk.
/// A request that could not be read sets `failed` and ends the stream.
fn take_chunk(
    outbound: &Outbound,
    first: Option<Result<SendRequest, Status>>,
    incoming: &mut Incoming,
    failed: &mut Option<Status>,
    oversize_hint: &str,
) -> Chunk {
    let mut prepared = Vec::new();
    let mut next = first;
    loop {
        match next {
            Some(Ok(req)) => prepared.push(outbound.prepare(req.text, req.id)),
            Some(Err(status)) => {
                *failed = Some(chat_proto::limits::oversize_status(status, oversize_hint));
                return Chunk {
                    prepared,
                    more: false,
                };
            }
            None => {
                return Chunk {
                    prepared,
                    more: false,
                };
            }
        }
        if prepared.len() >= SEND_STREAM_CHUNK {
            break;
        }
        match incoming.try_recv() {
            Ok(item) => next = item,
            Err(_) => break,
        }
    }
    Chunk {
        prepared,
        more: true,
    }
}
