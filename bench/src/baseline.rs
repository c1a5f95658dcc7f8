//! The plain tonic baseline: a `Peer` server that accepts everything and
//! does no work, run in processes of its own, and the unary fan-out of
//! Deliver calls that a Send is compared with.

use std::sync::Arc;

use chat_proto::v1::{
    DeliverBatch, DeliverBatchAck, DeliverRequest, DeliverResponse, DeliverResult, Envelope,
    PeerHandshakeRequest, PeerHandshakeResponse, PeerHistoryRequest, PeerHistoryResponse,
    peer_client::PeerClient,
    peer_server::{Peer, PeerServer},
};
use tonic::transport::Channel;

use crate::{
    Cli,
    load::{Run, drive},
    procs::Proc,
};

/// A `Peer` server that accepts everything and does no work: plain tonic.
#[derive(Debug, Default)]
struct NullPeer;

type HistoryStream = std::pin::Pin<
    Box<dyn futures::Stream<Item = Result<PeerHistoryResponse, tonic::Status>> + Send>,
>;

#[tonic::async_trait]
impl Peer for NullPeer {
    async fn handshake(
        &self,
        r: tonic::Request<PeerHandshakeRequest>,
    ) -> Result<tonic::Response<PeerHandshakeResponse>, tonic::Status> {
        Ok(tonic::Response::new(PeerHandshakeResponse {
            message: r.into_inner().message,
        }))
    }
    async fn deliver(
        &self,
        r: tonic::Request<DeliverRequest>,
    ) -> Result<tonic::Response<DeliverResponse>, tonic::Status> {
        let _ = r.into_inner().envelope;
        Ok(tonic::Response::new(DeliverResponse { duplicate: false }))
    }
    type DeliverStreamStream = std::pin::Pin<
        Box<dyn futures::Stream<Item = Result<DeliverBatchAck, tonic::Status>> + Send>,
    >;
    /// Acknowledges each batch at once: a plain tonic bidirectional stream.
    async fn deliver_stream(
        &self,
        r: tonic::Request<tonic::Streaming<DeliverBatch>>,
    ) -> Result<tonic::Response<Self::DeliverStreamStream>, tonic::Status> {
        let acks = futures::StreamExt::map(r.into_inner(), |batch| {
            batch.map(|b| DeliverBatchAck {
                seq: b.seq,
                results: b
                    .envelopes
                    .into_iter()
                    .map(|_| DeliverResult::default())
                    .collect(),
            })
        });
        Ok(tonic::Response::new(Box::pin(acks)))
    }
    type HistoryStream = HistoryStream;
    async fn history(
        &self,
        _: tonic::Request<PeerHistoryRequest>,
    ) -> Result<tonic::Response<HistoryStream>, tonic::Status> {
        Err(tonic::Status::unimplemented("baseline"))
    }
    async fn removals(
        &self,
        _: tonic::Request<chat_proto::v1::PeerRemovalsRequest>,
    ) -> Result<tonic::Response<chat_proto::v1::PeerRemovalsResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("baseline"))
    }
    async fn feeds(
        &self,
        _: tonic::Request<chat_proto::v1::PeerFeedsRequest>,
    ) -> Result<tonic::Response<chat_proto::v1::PeerFeedsResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("baseline"))
    }
}

/// `--baseline-server`: serves a `NullPeer` on a free loopback port and
/// prints its address.
pub async fn serve() -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!("baseline listening on {}", listener.local_addr()?);
    tonic::transport::Server::builder()
        .add_service(PeerServer::new(NullPeer))
        .serve_with_incoming(
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
        )
        .await?;
    Ok(())
}

/// Baseline servers, each in a process of its own, and a client to each.
pub struct Baselines {
    _servers: Vec<Proc>,
    /// One client per server, in the order they started.
    pub clients: Arc<Vec<PeerClient<Channel>>>,
}

impl Baselines {
    /// Starts `n` baseline servers (this binary with `--baseline-server`),
    /// one after the other, then connects to all of them.
    pub async fn start(n: usize) -> anyhow::Result<Self> {
        let me = std::env::current_exe()?;
        let mut servers = Vec::new();
        for _ in 0..n {
            servers.push(Proc::spawn(&me, &["--baseline-server"]).await?);
        }
        let clients: Vec<PeerClient<Channel>> = futures::future::try_join_all(
            servers
                .iter()
                .map(|b| PeerClient::connect(format!("http://{}", b.addr))),
        )
        .await?;
        Ok(Self {
            _servers: servers,
            clients: Arc::new(clients),
        })
    }

    /// The baseline of a Send to `fanout` peers, from `--concurrency` tasks
    /// for `--seconds`.
    pub async fn unary_fanout(&self, cli: &Cli, fanout: usize) -> Run {
        let clients = self.clients.clone();
        let ciphertext = vec![7u8; cli.payload + 16];
        drive(cli.concurrency, cli.seconds, move |i| {
            fanout_once(clients.clone(), ciphertext.clone(), fanout, i)
        })
        .await
    }
}

/// The baseline of one Send to `fanout` peers: one plain unary Deliver to
/// each of the first `fanout` baseline servers, all at once.
pub async fn fanout_once(
    clients: Arc<Vec<PeerClient<Channel>>>,
    ciphertext: Vec<u8>,
    fanout: usize,
    i: usize,
) -> bool {
    let calls = (0..fanout).map(|k| {
        let mut c = clients[k].clone();
        let envelope = Envelope {
            session_id: vec![1; 16],
            counter: i as u64,
            ciphertext: ciphertext.clone(),
        };
        async move {
            c.deliver(DeliverRequest {
                envelope: Some(envelope),
            })
            .await
        }
    });
    futures::future::join_all(calls)
        .await
        .iter()
        .all(|r| r.is_ok())
}
