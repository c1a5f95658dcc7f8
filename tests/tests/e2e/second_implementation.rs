//! Issue 17: a second implementation of the peer protocol (version 3),
//! written from docs/protocol.md, that shares none of the project's Noise code: the
//! handshakes are `snow`'s, the envelopes are sealed and opened with the
//! `chacha20poly1305` crate under the keys `snow` splits, mac1 is computed
//! with `hmac`/`sha2`, and the wire is the generated gRPC stubs. It
//! registers at a real Discovery (with a proof of possession made by
//! `snow`), handshakes with a real `peer-svc` process, delivers to it,
//! serves `chat.v1.Peer` itself and receives from it (the real peer falls
//! back from `DeliverStream` to `Deliver`), checks that tampered,
//! replayed and forged input gets the documented codes, and takes part in
//! feed reconciliation (§9.6): it computes the feed digest from the spec,
//! asks `Peer/Feeds`, and pulls and checks a feed over `Peer/History`.
//!
//! Messages are signed and verified here too, with `ed25519-dalek` over the
//! documented bytes (an encoded `AuthoredMessage`, framed with its context
//! string). Only the admission credential and the identity key it admits
//! come from the test harness, which signs for the test network.

use std::{
    collections::HashMap,
    net::SocketAddr,
    pin::Pin,
    sync::{Arc, Mutex},
};

use chacha20poly1305::{
    ChaCha20Poly1305, Key, KeyInit, Nonce,
    aead::{Aead, Payload},
};
use chat_proto::v1::{
    AuthoredMessage, DeliverBatch, DeliverBatchAck, DeliverRequest, DeliverResponse, Envelope,
    FeedFrontier, FeedsQuery, HandshakePayload, HistoryCursor, InfoRequest, ListRequest,
    PeerFeedsRequest, PeerHandshakeRequest, PeerHandshakeResponse, PeerHistoryRequest,
    PeerHistoryResponse, RegisterRequest, RegistrationProof, SealedMessage,
    discovery_client::DiscoveryClient,
    peer_client::PeerClient,
    peer_server::{Peer, PeerServer},
};
use chat_tests::{Discovery, PeerProcess, wait_for_message, within};
use hmac::Mac;
use prost::Message;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tonic::{Code, Request, Response, Status, Streaming};

/// The protocol names and prologues, as docs/protocol.md gives them.
const NOISE: &str = "Noise_IK_25519_ChaChaPoly_SHA256";
const PEER_PROLOGUE: &[u8] = b"p2p-chat/3 Noise_IK_25519_ChaChaPoly_SHA256";
const MAC1_LABEL: &[u8] = b"p2p-chat/3 mac1";
const MESSAGE_CONTEXT: &[u8] = b"p2p-chat/3 message";

/// What a message signature covers: u32be(len(context)) || context ||
/// u32be(32) || SHA-256(authored).
fn signed(authored: &[u8]) -> Vec<u8> {
    let digest: [u8; 32] = Sha256::digest(authored).into();
    let mut out = Vec::new();
    for part in [MESSAGE_CONTEXT, &digest] {
        out.extend_from_slice(&(part.len() as u32).to_be_bytes());
        out.extend_from_slice(part);
    }
    out
}

/// A message signed by `identity` as `sender`: an encoded SealedMessage.
fn sign(
    identity: &ed25519_dalek::SigningKey,
    sender: &str,
    seq: u64,
    prev: &[u8],
    id: &str,
    text: &str,
) -> (Vec<u8>, Vec<u8>) {
    use ed25519_dalek::Signer;
    let authored = AuthoredMessage {
        network: chat_tests::test_network_key().to_vec(),
        author_key: identity.verifying_key().to_bytes().to_vec(),
        sender: sender.into(),
        sender_fingerprint: String::new(),
        id: id.into(),
        seq,
        prev: prev.to_vec(),
        hlc: (now_micros() / 1000) << 16,
        sent_at: None,
        text: text.into(),
    }
    .encode_to_vec();
    let sealed = SealedMessage {
        signature: identity.sign(&signed(&authored)).to_bytes().to_vec(),
        authored: authored.clone(),
        author_chain: Vec::new(),
    }
    .encode_to_vec();
    (sealed, authored)
}

fn builder() -> snow::Builder<'static> {
    snow::Builder::new(NOISE.parse().expect("snow knows IK"))
}

fn now_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

/// mac1 = HMAC-SHA-256(SHA-256(label || len(network) || network || responder), message)[..16].
fn mac1(network: &[u8], responder: &[u8], message: &[u8]) -> Vec<u8> {
    let mut key = Sha256::new();
    key.update(MAC1_LABEL);
    key.update([network.len() as u8]);
    key.update(network);
    key.update(responder);
    let key: [u8; 32] = key.finalize().into();
    let mut mac = <hmac::Hmac<Sha256> as KeyInit>::new_from_slice(&key).unwrap();
    mac.update(message);
    mac.finalize().into_bytes()[..16].to_vec()
}

/// The AAD of an envelope: the 4-byte big-endian length of the session id, then it.
fn aad(session_id: &[u8]) -> Vec<u8> {
    let mut aad = (session_id.len() as u32).to_be_bytes().to_vec();
    aad.extend_from_slice(session_id);
    aad
}

/// Noise's ChaChaPoly nonce: 4 zero bytes, then the counter little-endian.
fn nonce(counter: u64) -> Nonce {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&counter.to_le_bytes());
    Nonce::from(n)
}

/// One direction of a session: its key and the session id.
#[derive(Clone)]
struct Direction {
    session_id: Vec<u8>,
    key: [u8; 32],
}

impl Direction {
    fn cipher(&self) -> ChaCha20Poly1305 {
        ChaCha20Poly1305::new(&Key::from(self.key))
    }

    fn seal(&self, counter: u64, plaintext: &[u8]) -> Envelope {
        let ciphertext = self
            .cipher()
            .encrypt(
                &nonce(counter),
                Payload {
                    msg: plaintext,
                    aad: &aad(&self.session_id),
                },
            )
            .unwrap();
        Envelope {
            session_id: self.session_id.clone(),
            counter,
            ciphertext,
        }
    }

    fn open(&self, envelope: &Envelope) -> Option<Vec<u8>> {
        self.cipher()
            .decrypt(
                &nonce(envelope.counter),
                Payload {
                    msg: &envelope.ciphertext,
                    aad: &aad(&envelope.session_id),
                },
            )
            .ok()
    }
}

/// Session id and the two directions' keys from a finished `snow`
/// handshake: the first 16 bytes of the handshake hash; the initiator
/// sends with the first split key.
fn split(mut state: snow::HandshakeState, initiator: bool) -> (Direction, Direction) {
    let session_id = state.get_handshake_hash()[..16].to_vec();
    let (k1, k2) = state.dangerously_get_raw_split();
    let (send, recv) = if initiator { (k1, k2) } else { (k2, k1) };
    (
        Direction {
            session_id: session_id.clone(),
            key: send,
        },
        Direction {
            session_id,
            key: recv,
        },
    )
}

/// The second implementation's own `chat.v1.Peer` service: answers
/// handshakes as the IK responder and takes unary deliveries.
struct SnowPeer {
    name: String,
    address: String,
    private: Vec<u8>,
    public: Vec<u8>,
    network: Vec<u8>,
    credential: Vec<u8>,
    /// Receiving directions by session id.
    sessions: Mutex<HashMap<Vec<u8>, Direction>>,
    received: mpsc::UnboundedSender<(AuthoredMessage, Vec<u8>)>,
}

type Acks = Pin<Box<dyn futures::Stream<Item = Result<DeliverBatchAck, Status>> + Send>>;
type Items = Pin<Box<dyn futures::Stream<Item = Result<PeerHistoryResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Peer for SnowPeer {
    async fn handshake(
        &self,
        request: Request<PeerHandshakeRequest>,
    ) -> Result<Response<PeerHandshakeResponse>, Status> {
        let request = request.into_inner();
        if request.mac1 != mac1(&self.network, &self.public, &request.message) {
            return Err(Status::permission_denied("mac1"));
        }
        let mut state = builder()
            .local_private_key(&self.private)
            .unwrap()
            .prologue(PEER_PROLOGUE)
            .unwrap()
            .build_responder()
            .unwrap();
        let mut payload = vec![0u8; 65_535];
        let n = state
            .read_message(&request.message, &mut payload)
            .map_err(|e| Status::unauthenticated(e.to_string()))?;
        HandshakePayload::decode(&payload[..n]).map_err(|_| Status::invalid_argument("payload"))?;
        let answer = HandshakePayload {
            name: self.name.clone(),
            address: self.address.clone(),
            credential: self.credential.clone(),
            ..Default::default()
        }
        .encode_to_vec();
        let mut message = vec![0u8; 65_535];
        let n = state.write_message(&answer, &mut message).unwrap();
        message.truncate(n);
        let (_send, recv) = split(state, false);
        self.sessions
            .lock()
            .unwrap()
            .insert(recv.session_id.clone(), recv);
        Ok(Response::new(PeerHandshakeResponse { message }))
    }

    async fn deliver(
        &self,
        request: Request<DeliverRequest>,
    ) -> Result<Response<DeliverResponse>, Status> {
        let envelope = request
            .into_inner()
            .envelope
            .ok_or_else(|| Status::invalid_argument("no envelope"))?;
        let direction = self
            .sessions
            .lock()
            .unwrap()
            .get(&envelope.session_id)
            .cloned()
            .ok_or_else(|| Status::unauthenticated("unknown session; handshake again"))?;
        let plaintext = direction
            .open(&envelope)
            .ok_or_else(|| Status::unauthenticated("decryption failed"))?;
        let sealed = SealedMessage::decode(plaintext.as_slice())
            .map_err(|_| Status::invalid_argument("not a SealedMessage"))?;
        let message = AuthoredMessage::decode(sealed.authored.as_slice())
            .map_err(|_| Status::invalid_argument("not an AuthoredMessage"))?;
        // The author's signature over the exact bytes received.
        let key: [u8; 32] = message
            .author_key
            .as_slice()
            .try_into()
            .map_err(|_| Status::invalid_argument("author_key is not 32 bytes"))?;
        let signature = ed25519_dalek::Signature::from_slice(&sealed.signature)
            .map_err(|_| Status::invalid_argument("signature is not 64 bytes"))?;
        ed25519_dalek::VerifyingKey::from_bytes(&key)
            .and_then(|k| k.verify_strict(&signed(&sealed.authored), &signature))
            .map_err(|_| Status::permission_denied("signature does not verify"))?;
        let _ = self.received.send((message, sealed.authored));
        Ok(Response::new(DeliverResponse { duplicate: false }))
    }

    type DeliverStreamStream = Acks;

    async fn deliver_stream(
        &self,
        _: Request<Streaming<DeliverBatch>>,
    ) -> Result<Response<Acks>, Status> {
        // Not implemented here: the documented fallback is unary Deliver.
        Err(Status::unimplemented("DeliverStream"))
    }

    type HistoryStream = Items;

    async fn history(&self, _: Request<PeerHistoryRequest>) -> Result<Response<Items>, Status> {
        Err(Status::unimplemented("History"))
    }

    async fn removals(
        &self,
        _: Request<chat_proto::v1::PeerRemovalsRequest>,
    ) -> Result<Response<chat_proto::v1::PeerRemovalsResponse>, Status> {
        // It sends no removals digest, so no member asks it.
        Err(Status::unimplemented("Removals"))
    }

    async fn feeds(
        &self,
        _: Request<chat_proto::v1::PeerFeedsRequest>,
    ) -> Result<Response<chat_proto::v1::PeerFeedsResponse>, Status> {
        // It sends no feeds digest; a member that asks anyway (when it comes
        // back) gets UNIMPLEMENTED and pulls nothing from it.
        Err(Status::unimplemented("Feeds"))
    }
}

#[tokio::test]
async fn a_second_implementation_on_snow_registers_handshakes_delivers_and_receives() {
    let discovery = Discovery::start().await;
    let dir = tempfile::tempdir().unwrap();
    let bob = PeerProcess::start("bob", &discovery.url(), &dir.path().join("bob")).await;

    // Its own keys, and its own Peer server.
    let keys = builder().generate_keypair().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let public: [u8; 32] = keys.public.as_slice().try_into().unwrap();
    let (received, mut inbox) = mpsc::unbounded_channel();
    let me = Arc::new(SnowPeer {
        name: "snowy".into(),
        address: addr.to_string(),
        private: keys.private.clone(),
        public: keys.public.clone(),
        network: chat_tests::test_network_key().to_vec(),
        credential: chat_tests::credential_for_key("snowy", &public),
        sessions: Mutex::default(),
        received,
    });
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(PeerServer::from_arc(me.clone()))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );

    // Register, with the proof: IK message 1 from our key to Discovery's.
    let mut disco = DiscoveryClient::connect(discovery.url()).await.unwrap();
    let info = disco.info(InfoRequest {}).await.unwrap().into_inner();
    let proof_payload = RegistrationProof {
        name: me.name.clone(),
        address: me.address.clone(),
        timestamp_micros: now_micros(),
    }
    .encode_to_vec();
    let mut state = builder()
        .local_private_key(&keys.private)
        .unwrap()
        .remote_public_key(&info.public_key)
        .unwrap()
        .prologue(info.proof_prologue.as_bytes())
        .unwrap()
        .build_initiator()
        .unwrap();
    let mut proof = vec![0u8; 65_535];
    let n = state.write_message(&proof_payload, &mut proof).unwrap();
    proof.truncate(n);
    disco
        .register(RegisterRequest {
            name: me.name.clone(),
            address: me.address.clone(),
            public_key: keys.public.clone(),
            proof,
        })
        .await
        .expect("registered with a snow-made proof");

    // Handshake with bob, whose key Discovery lists.
    let members = disco
        .list(ListRequest::default())
        .await
        .unwrap()
        .into_inner()
        .members;
    let bob_key = members
        .iter()
        .find(|m| m.name == "bob")
        .expect("bob listed")
        .public_key
        .clone();
    let mut peer = PeerClient::connect(format!("http://{}", bob.process.addr))
        .await
        .unwrap();
    let mut initiator = builder()
        .local_private_key(&keys.private)
        .unwrap()
        .remote_public_key(&bob_key)
        .unwrap()
        .prologue(PEER_PROLOGUE)
        .unwrap()
        .build_initiator()
        .unwrap();
    let hello = HandshakePayload {
        name: me.name.clone(),
        address: me.address.clone(),
        timestamp_micros: now_micros(),
        credential: me.credential.clone(),
        ..Default::default()
    }
    .encode_to_vec();
    let mut message = vec![0u8; 65_535];
    let n = initiator.write_message(&hello, &mut message).unwrap();
    message.truncate(n);
    // Without the right mac1: refused before any Diffie-Hellman.
    let err = peer
        .handshake(PeerHandshakeRequest {
            message: message.clone(),
            mac1: vec![0; 16],
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    let answer = peer
        .handshake(PeerHandshakeRequest {
            mac1: mac1(me.network.as_slice(), &bob_key, &message),
            message,
        })
        .await
        .expect("bob answers the snow handshake")
        .into_inner();
    let mut payload = vec![0u8; 65_535];
    let n = initiator
        .read_message(&answer.message, &mut payload)
        .expect("bob's answer reads");
    let bobs = HandshakePayload::decode(&payload[..n]).unwrap();
    assert_eq!(bobs.name, "bob");
    let (send, recv) = split(initiator, true);

    // Deliver to bob.
    let text = "hello from a second implementation";
    let identity = chat_tests::test_identity("snowy");
    let (sealed, first_authored) = sign(&identity, &me.name, 1, &[], "snow-1", text);
    let envelope = send.seal(0, &sealed);
    let first = peer
        .deliver(DeliverRequest {
            envelope: Some(envelope.clone()),
        })
        .await
        .expect("bob takes the envelope")
        .into_inner();
    assert!(!first.duplicate);
    wait_for_message(&bob.data_dir, text).await;
    // The same envelope again (a lost answer): stored, once.
    let again = peer
        .deliver(DeliverRequest {
            envelope: Some(envelope.clone()),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(again.duplicate);
    // Tampered: unauthenticated. Under another session: handshake again.
    let mut tampered = send.seal(1, &sealed);
    tampered.ciphertext[5] ^= 1;
    let err = peer
        .deliver(DeliverRequest {
            envelope: Some(tampered),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    let mut elsewhere = send.seal(2, &sealed);
    elsewhere.session_id = vec![9; 16];
    let err = peer
        .deliver(DeliverRequest {
            envelope: Some(elsewhere),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    // Signed by a key the credential does not admit: refused for good
    // (INVALID_ARGUMENT: the message itself).
    let stranger = ed25519_dalek::SigningKey::from_bytes(&[5; 32]);
    let (unadmitted, _) = sign(&stranger, &me.name, 1, &[], "snow-x", "not my key");
    let err = peer
        .deliver(DeliverRequest {
            envelope: Some(send.seal(4, &unadmitted)),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    // The next message of our feed, signed and linked: stored.
    let prev: [u8; 32] = Sha256::digest(&first_authored).into();
    let (good, second_authored) = sign(&identity, &me.name, 2, &prev, "snow-y", "second");
    peer.deliver(DeliverRequest {
        envelope: Some(send.seal(5, &good)),
    })
    .await
    .expect("a signed, linked second message is taken");
    wait_for_message(&bob.data_dir, "second").await;
    let (ok, out, _) = bob.chat(&["history", "--verify"]).await;
    assert!(ok, "{out}");
    // Bytes changed after signing, on our own session: the session vouches
    // for us, so bob stores what we sent (direct delivery verifies a key's
    // first signature only, docs/protocol.md §7.4), but the signature does
    // not hold, so his check of the history says so, and no relay could
    // pass it on to anyone.
    let prev: [u8; 32] = Sha256::digest(&second_authored).into();
    let (third, _) = sign(&identity, &me.name, 3, &prev, "snow-z", "as signed");
    let mut altered = SealedMessage::decode(third.as_slice()).unwrap();
    let mut body = AuthoredMessage::decode(altered.authored.as_slice()).unwrap();
    body.text = "ALTERED after signing".into();
    altered.authored = body.encode_to_vec();
    peer.deliver(DeliverRequest {
        envelope: Some(send.seal(6, &altered.encode_to_vec())),
    })
    .await
    .expect("taken on the session's word");
    wait_for_message(&bob.data_dir, "ALTERED after signing").await;
    let (ok, out, _) = bob.chat(&["history", "--verify"]).await;
    assert!(!ok, "{out}");
    assert!(
        out.contains("snowy's message snow-z (seq 3) does not verify"),
        "{out}"
    );
    // Forged: a message in someone else's name, on our own session.
    let (forged, _) = sign(&identity, "bob", 3, &prev, "snow-2", "not mine");
    let err = peer
        .deliver(DeliverRequest {
            envelope: Some(send.seal(3, &forged)),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    // Its counter is spent and nothing was stored: sent again, a replay.
    let err = peer
        .deliver(DeliverRequest {
            envelope: Some(send.seal(3, &forged)),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");

    // Receive from bob: it handshakes with us (snow answers) and, finding
    // no DeliverStream here, delivers with unary Deliver.
    bob.wait_connections(&["snowy"]).await;
    let (ok, report, err) = bob.chat(&["send", "hello snowy"]).await;
    assert!(ok, "{err}");
    let line = report.lines().find(|l| l.contains("snowy")).unwrap_or("");
    assert_eq!(
        line.split_whitespace().nth(1),
        Some("delivered"),
        "{report}"
    );
    let (got, got_authored) = within("bob's message at the second implementation", async {
        loop {
            let (m, authored) = inbox.recv().await.expect("inbox open");
            if m.text == "hello snowy" {
                return (m, authored);
            }
        }
    })
    .await;
    assert_eq!(got.sender, "bob");

    // Feed reconciliation (docs/protocol.md §9.6), asked by this
    // implementation. Its own heads, as bob holds them: its feed 1-3 (the
    // third as altered) and bob's feed up to "hello snowy".
    let third_authored = altered.authored.clone();
    let mut heads = [
        (
            identity.verifying_key().to_bytes().to_vec(),
            3u64,
            3u64,
            third_authored,
        ),
        (got.author_key.clone(), got.seq, got.seq, got_authored),
    ];
    heads.sort();
    let digest = |heads: &[&(Vec<u8>, u64, u64, Vec<u8>)]| -> Vec<u8> {
        let mut h = Sha256::new();
        for (key, seq, contiguous, authored) in heads {
            h.update((key.len() as u32).to_be_bytes());
            h.update(key);
            h.update(seq.to_be_bytes());
            h.update(contiguous.to_be_bytes());
            h.update(Sha256::digest(authored));
        }
        h.finalize().to_vec()
    };
    let all: Vec<_> = heads.iter().collect();
    // Bucket i: the heads whose author key's first byte has i as its high
    // four bits.
    let buckets: Vec<Vec<u8>> = (0..16u8)
        .map(|i| {
            let inside: Vec<_> = heads.iter().filter(|h| h.0[0] >> 4 == i).collect();
            digest(&inside)
        })
        .collect();
    let mut counter = 7;
    let mut ask = async |digest: Vec<u8>, buckets: Vec<Vec<u8>>| {
        let query = FeedsQuery { digest, buckets }.encode_to_vec();
        counter += 1;
        let answer = peer
            .feeds(PeerFeedsRequest {
                envelope: Some(send.seal(counter, &query)),
            })
            .await
            .expect("bob answers Peer/Feeds")
            .into_inner();
        let plaintext = recv
            .open(&answer.envelope.expect("sealed"))
            .expect("sealed to us");
        FeedFrontier::decode(plaintext.as_slice()).expect("a frontier")
    };
    // The same digest, computed here from the spec: "same", nothing more.
    let frontier = ask(digest(&all), Vec::new()).await;
    assert!(frontier.same, "{frontier:?}");
    // With bucket digests that differ only in bob's bucket: only the heads
    // of that bucket come back.
    let bobs_bucket = usize::from(got.author_key[0] >> 4);
    let mut stale = buckets.clone();
    stale[bobs_bucket] = digest(&[]);
    let frontier = ask(digest(&[]), stale).await;
    assert!(!frontier.same);
    assert!(
        !frontier.heads.is_empty()
            && frontier
                .heads
                .iter()
                .all(|h| usize::from(h.author_key[0] >> 4) == bobs_bucket),
        "{frontier:?}"
    );
    // Lacking bob's feed: his heads come back, and his head is the one we
    // hold.
    let frontier = ask(digest(&[]), Vec::new()).await;
    assert!(!frontier.same);
    let bobs_head = frontier
        .heads
        .iter()
        .find(|h| h.author_key == got.author_key)
        .expect("bob's head");
    assert_eq!(bobs_head.seq, got.seq);
    // Bob's feed above `after_seq`, as this implementation pulls it: each
    // item opened with our receiving key.
    let mut pull = async |after_seq: u64, author_known: bool| -> Vec<SealedMessage> {
        let cursor = HistoryCursor {
            author_key: got.author_key.clone(),
            after_seq,
            author_known,
            ..Default::default()
        }
        .encode_to_vec();
        counter += 1;
        let mut items = peer
            .history(PeerHistoryRequest {
                envelope: Some(send.seal(counter, &cursor)),
            })
            .await
            .expect("bob serves his feed")
            .into_inner();
        let mut pulled = Vec::new();
        while let Some(item) = items.message().await.expect("an item") {
            let plaintext = recv.open(&item.envelope.expect("sealed")).expect("ours");
            pulled.push(SealedMessage::decode(plaintext.as_slice()).expect("a SealedMessage"));
        }
        pulled
    };
    // From the start, as an asker holding none of it: his admission chain
    // first, then every message by seq, each verifying under his key and
    // linked to the one before it.
    let pulled = pull(0, false).await;
    assert!(
        pulled
            .first()
            .is_some_and(|i| i.authored.is_empty() && !i.author_chain.is_empty()),
        "the chain comes first"
    );
    let bob_key =
        ed25519_dalek::VerifyingKey::from_bytes(got.author_key.as_slice().try_into().unwrap())
            .unwrap();
    let mut prev = Vec::new();
    for (n, item) in pulled[1..].iter().enumerate() {
        let message = AuthoredMessage::decode(item.authored.as_slice()).unwrap();
        assert_eq!(message.seq, n as u64 + 1);
        assert_eq!(
            message.prev, prev,
            "seq {} links to the one before",
            message.seq
        );
        let signature = ed25519_dalek::Signature::from_slice(&item.signature).unwrap();
        bob_key
            .verify_strict(&signed(&item.authored), &signature)
            .expect("bob's signature");
        prev = Sha256::digest(&item.authored).to_vec();
    }
    let last = AuthoredMessage::decode(pulled.last().unwrap().authored.as_slice()).unwrap();
    assert_eq!((last.seq, last.text.as_str()), (got.seq, "hello snowy"));
    assert_eq!(prev, bobs_head.hash, "the feed ends at the head bob named");
    // Nothing above his head: nothing comes (not the head again).
    assert!(
        pull(got.seq, true).await.is_empty(),
        "nothing above the head"
    );
    // Holding bob's chain already: it is not sent again.
    let first = pull(0, true).await.remove(0);
    assert!(first.author_chain.is_empty() && !first.authored.is_empty());
}
