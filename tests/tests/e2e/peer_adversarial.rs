//! Hostile input to a real peer's `chat.v1.Peer` port: tampered, replayed,
//! forged, truncated, oversized and random. Each gets the right status,
//! nothing is stored or shown, and the peer keeps serving.

use chat_noise::{Initiator, StaticKeypair};
use chat_proto::v1::{
    DeliverBatch, DeliverRequest, Envelope, HandshakePayload, PeerHistoryRequest,
    peer_client::PeerClient,
};
use chat_tests::{Discovery, InProcessPeer};
use peer_svc::{envelope::aad as envelope_aad, handshaker::PROLOGUE};
use prost::Message;
use rand::RngExt;
use tonic::{Code, transport::Channel};

/// A party that registers with Discovery under its own key and speaks the
/// peer protocol by hand.
struct Mallory {
    name: String,
    /// Signs Mallory's messages with the identity its credential admits.
    author: peer_svc::authorship::Author,
    keypair: StaticKeypair,
    channel: Channel,
    client: PeerClient<Channel>,
}

/// Sends a first handshake message that must be refused; returns the status.
async fn refused_handshake(
    client: &mut PeerClient<Channel>,
    target: &InProcessPeer,
    message: Vec<u8>,
) -> tonic::Status {
    client
        .handshake(chat_tests::handshake_request(
            &target.node.public_key(),
            message,
        ))
        .await
        .expect_err("the handshake must be refused")
}

/// Handshake timestamps that only increase, as a real initiator's do.
fn next_stamp() -> u64 {
    static LAST: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    LAST.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
}

/// An established session from Mallory's side.
struct Handshaken {
    session_id: Vec<u8>,
    transport: chat_noise::Transport,
}

impl Mallory {
    async fn join(discovery: &Discovery, name: &str, target: &InProcessPeer) -> Self {
        let keypair = StaticKeypair::generate();
        let mut client = discovery.client().await;
        let request = chat_tests::proven(&mut client, &keypair, name, "127.0.0.1:9").await;
        client.register(request).await.unwrap();
        let channel = Channel::from_shared(format!("http://{}", target.address))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let client = PeerClient::new(channel.clone());
        Self {
            name: name.into(),
            author: chat_tests::test_author(name),
            keypair,
            channel,
            client,
        }
    }

    fn initiation(
        &self,
        target: &InProcessPeer,
        claimed_name: &str,
    ) -> (Vec<u8>, chat_noise::InitiatorWaiting) {
        let payload = HandshakePayload {
            name: claimed_name.into(),
            address: "127.0.0.1:9".into(),
            timestamp_micros: next_stamp(),
            credential: chat_tests::credential(&self.name, &self.keypair),
            ..Default::default()
        };
        Initiator::new(&self.keypair, target.node.public_key(), PROLOGUE)
            .write_message(&payload.encode_to_vec())
            .unwrap()
    }

    async fn handshake(&mut self, target: &InProcessPeer) -> Handshaken {
        let (message, waiting) = self.initiation(target, &self.name.clone());
        let response = self
            .client
            .handshake(chat_tests::handshake_request(
                &target.node.public_key(),
                message,
            ))
            .await
            .unwrap()
            .into_inner();
        let (_, transport) = waiting.read_message(&response.message).unwrap();
        Handshaken {
            session_id: transport.session_id().to_vec(),
            transport,
        }
    }

    fn envelope(&self, s: &Handshaken, counter: u64, id: &str, text: &str) -> Envelope {
        let plaintext = chat_tests::sealed_message(&self.author, id, text, 1);
        let aad = envelope_aad(&s.session_id);
        Envelope {
            session_id: s.session_id.clone(),
            counter,
            ciphertext: s.transport.seal(counter, &aad, &plaintext).unwrap(),
        }
    }

    async fn deliver(
        &mut self,
        envelope: Envelope,
    ) -> Result<chat_proto::v1::DeliverResponse, tonic::Status> {
        self.client
            .deliver(DeliverRequest {
                envelope: Some(envelope),
            })
            .await
            .map(|r| r.into_inner())
    }
}

async fn setup(test: &str) -> (Discovery, tempfile::TempDir, InProcessPeer, Mallory) {
    let discovery = Discovery::start().await;
    let dir = tempfile::tempdir().unwrap();
    let target = InProcessPeer::start("target", &discovery.url(), &dir.path().join("target")).await;
    let mallory = Mallory::join(&discovery, &format!("mallory-{test}"), &target).await;
    (discovery, dir, target, mallory)
}

#[tokio::test]
async fn a_tampered_ciphertext_is_unauthenticated_and_not_stored() {
    let (_d, _dir, target, mut mallory) = setup("tamper").await;
    let s = mallory.handshake(&target).await;
    let good = mallory.envelope(&s, 0, "m1", "hello");
    for i in [0, good.ciphertext.len() / 2, good.ciphertext.len() - 1] {
        let mut bad = good.clone();
        bad.ciphertext[i] ^= 0x01;
        let err = mallory.deliver(bad).await.unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
        assert!(
            err.message().contains("decryption failed"),
            "{}",
            err.message()
        );
    }
    // Tampering with the nonce is caught the same way.
    for tamper in [|e: &mut Envelope| e.counter += 1] {
        let mut bad = good.clone();
        tamper(&mut bad);
        assert_eq!(
            mallory.deliver(bad).await.unwrap_err().code(),
            Code::Unauthenticated
        );
    }
    assert!(target.node.store.is_empty(), "nothing stored");
    // The untouched envelope still works: the counter was not burned by failures.
    assert!(!mallory.deliver(good).await.unwrap().duplicate);
    assert_eq!(target.node.store.len(), 1);
}

#[tokio::test]
async fn a_resent_envelope_is_answered_as_stored_and_a_replay_stores_nothing() {
    let (_d, _dir, target, mut mallory) = setup("replay").await;
    let s = mallory.handshake(&target).await;
    let envelope = mallory.envelope(&s, 7, "r1", "once");
    let first = mallory.deliver(envelope.clone()).await.unwrap();
    assert!(!first.duplicate);
    // The same envelope again (its answer was lost, say): answered as
    // stored, and stored once.
    for _ in 0..3 {
        let again = mallory.deliver(envelope.clone()).await.unwrap();
        assert!(again.duplicate, "{again:?}");
    }
    assert_eq!(target.node.store.len(), 1);
    // Tampered on the way, it is no retry: refused.
    let mut tampered = envelope.clone();
    tampered.ciphertext[0] ^= 1;
    let err = mallory.deliver(tampered).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert!(err.message().contains("replayed"), "{}", err.message());
    assert_eq!(target.node.store.len(), 1);
    // A fresh counter with the same message id is accepted but not duplicated.
    let again = mallory
        .deliver(mallory.envelope(&s, 8, "r1", "once"))
        .await
        .unwrap();
    assert!(again.duplicate);
    assert_eq!(target.node.store.len(), 1);
}

#[tokio::test]
async fn an_unknown_session_says_to_handshake_again() {
    let (_d, _dir, target, mut mallory) = setup("unknown").await;
    let s = mallory.handshake(&target).await;
    let mut envelope = mallory.envelope(&s, 0, "u1", "x");
    envelope.session_id = vec![0xAB; 16];
    let err = mallory.deliver(envelope).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert!(
        err.message().contains("handshake again"),
        "{}",
        err.message()
    );
    assert!(target.node.store.is_empty());
}

/// In a network, a name or key Discovery does not list is taken only by a
/// credential for exactly that name and key (issue 24, items 3 and 7: a
/// member Discovery cannot list, its registry full or its name taken, is
/// still a member).
#[tokio::test]
async fn a_name_or_key_discovery_does_not_list_needs_its_own_credential() {
    let (_d, _dir, target, mallory) = setup("unlisted").await;
    // Mallory claims to be "alice", who is not registered, with her own
    // credential: it is not alice's.
    let mut client = mallory.client.clone();
    let (message, _) = mallory.initiation(&target, "alice");
    let err = refused_handshake(&mut client, &target, message).await;
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(
        err.message().contains("alice is not a member"),
        "{}",
        err.message()
    );

    // A key Discovery does not list, showing mallory's credential made for
    // her listed key: the credential does not cover it.
    let impostor = StaticKeypair::generate();
    let hello = |credential: Vec<u8>| {
        HandshakePayload {
            name: mallory.name.clone(),
            address: "127.0.0.1:9".into(),
            timestamp_micros: next_stamp(),
            credential,
            ..Default::default()
        }
        .encode_to_vec()
    };
    let payload = hello(chat_tests::credential(&mallory.name, &mallory.keypair));
    let (message, _) = Initiator::new(&impostor, target.node.public_key(), PROLOGUE)
        .write_message(&payload)
        .unwrap();
    let err = refused_handshake(&mut client, &target, message).await;
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(err.message().contains("not a member"), "{}", err.message());

    // The same key with a credential mallory's identity signed for it (a
    // new device of hers): accepted, though Discovery lists another key.
    let payload = hello(chat_tests::credential(&mallory.name, &impostor));
    let (message, _) = Initiator::new(&impostor, target.node.public_key(), PROLOGUE)
        .write_message(&payload)
        .unwrap();
    client
        .handshake(chat_tests::handshake_request(
            &target.node.public_key(),
            message,
        ))
        .await
        .expect("a member's own credential for this key is accepted");
}

#[tokio::test]
async fn truncated_and_garbled_handshakes_are_refused_with_the_right_code() {
    let (_d, _dir, target, mallory) = setup("trunc").await;
    let mut client = mallory.client.clone();
    let (message, _) = mallory.initiation(&target, &mallory.name);
    for len in [0, 1, 31, 32, 95] {
        let err = refused_handshake(&mut client, &target, message[..len].to_vec()).await;
        assert_eq!(err.code(), Code::InvalidArgument, "len {len}: {err:?}");
        assert!(err.message().contains("truncated"), "{}", err.message());
    }
    let mut flipped = message.clone();
    flipped[40] ^= 0x80;
    let err = refused_handshake(&mut client, &target, flipped).await;
    assert_eq!(err.code(), Code::Unauthenticated);
    // A handshake under another prologue (another protocol version) fails too.
    let payload = HandshakePayload {
        name: mallory.name.clone(),
        address: String::new(),
        timestamp_micros: next_stamp(),
        ..Default::default()
    }
    .encode_to_vec();
    let (message, _) = Initiator::new(&mallory.keypair, target.node.public_key(), b"p2p-chat/0")
        .write_message(&payload)
        .unwrap();
    let err = refused_handshake(&mut client, &target, message).await;
    assert_eq!(err.code(), Code::Unauthenticated);
}

#[tokio::test]
async fn random_bytes_in_every_field_of_every_peer_rpc_change_nothing() {
    let (_d, _dir, target, mut mallory) = setup("fuzz").await;
    let s = mallory.handshake(&target).await;
    let mut rng = rand::rng();
    let mut bytes = |max: usize| -> Vec<u8> {
        let n = rng.random_range(0..=max);
        (0..n).map(|_| rng.random()).collect()
    };
    for round in 0..200 {
        let random_envelope = Envelope {
            session_id: if round % 3 == 0 {
                s.session_id.clone()
            } else {
                bytes(20)
            },
            counter: u64::from_le_bytes(bytes(8).try_into().unwrap_or([0xff; 8])),
            ciphertext: bytes(300),
        };
        let err = mallory.deliver(random_envelope.clone()).await.unwrap_err();
        assert!(
            matches!(err.code(), Code::Unauthenticated | Code::InvalidArgument),
            "Deliver round {round}: {err:?}"
        );
        let err = refused_handshake(&mut mallory.client, &target, bytes(200)).await;
        assert!(
            matches!(err.code(), Code::Unauthenticated | Code::InvalidArgument),
            "Handshake round {round}: {err:?}"
        );
        let err = mallory
            .client
            .history(PeerHistoryRequest {
                envelope: Some(random_envelope),
            })
            .await
            .unwrap_err();
        assert!(
            matches!(err.code(), Code::Unauthenticated | Code::InvalidArgument),
            "History round {round}: {err:?}"
        );
    }
    // Envelopes that are missing entirely.
    let err = mallory
        .client
        .deliver(DeliverRequest { envelope: None })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    // Raw garbage as the protobuf body itself.
    let mut raw = tonic::client::Grpc::new(mallory.channel.clone());
    raw.ready().await.unwrap();
    let err = raw
        .unary::<_, chat_proto::v1::DeliverResponse, _>(
            tonic::Request::new(RawBytes(vec![0xff; 64])),
            "/chat.v1.Peer/Deliver".parse().unwrap(),
            RawCodec,
        )
        .await
        .unwrap_err();
    // The caller's bad input, not a server failure.
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("decode"), "{err:?}");

    assert!(target.node.store.is_empty(), "nothing stored");
    // Still serving: a proper message goes through.
    let ok = mallory
        .deliver(mallory.envelope(&s, 1_000, "fine", "still here"))
        .await
        .unwrap();
    assert!(!ok.duplicate);
    assert!(
        target
            .node
            .store
            .get(&mallory.name, "fine")
            .unwrap()
            .is_some()
    );
}

#[tokio::test]
async fn an_oversized_envelope_is_resource_exhausted() {
    let (_d, _dir, target, mut mallory) = setup("big").await;
    let s = mallory.handshake(&target).await;
    let text = "x".repeat(peer_svc::config::DEFAULT_MAX_MESSAGE_BYTES + 1);
    let err = mallory
        .deliver(mallory.envelope(&s, 0, "big", &text))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    let huge = Envelope {
        ciphertext: vec![0; 4 << 20],
        ..mallory.envelope(&s, 1, "huge", "x")
    };
    let err = mallory.deliver(huge).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(err.message().contains("limit"), "{}", err.message());
    assert!(target.node.store.is_empty());
}

/// Bytes sent as they are, to put non-protobuf on the wire.
struct RawBytes(Vec<u8>);

#[derive(Clone, Default)]
struct RawCodec;

impl tonic::codec::Codec for RawCodec {
    type Encode = RawBytes;
    type Decode = chat_proto::v1::DeliverResponse;
    type Encoder = RawEncoder;
    type Decoder = tonic_prost::ProstDecoder<chat_proto::v1::DeliverResponse>;
    fn encoder(&mut self) -> Self::Encoder {
        RawEncoder
    }
    fn decoder(&mut self) -> Self::Decoder {
        tonic_prost::ProstDecoder::default()
    }
}

struct RawEncoder;

impl tonic::codec::Encoder for RawEncoder {
    type Item = RawBytes;
    type Error = tonic::Status;
    fn encode(
        &mut self,
        item: RawBytes,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        use bytes::BufMut;
        dst.put_slice(&item.0);
        Ok(())
    }
}

#[tokio::test]
async fn handshake_and_delivery_floods_hit_rate_limits_that_name_themselves() {
    let discovery = Discovery::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = peer_svc::Config::new("target", &discovery.url(), dir.path().join("target"));
    config.handshakes_per_sec = 5;
    config.deliveries_per_sec = 5;
    let target = InProcessPeer::start_with(config).await;
    let mut mallory = Mallory::join(&discovery, "mallory-flood", &target).await;

    // A burst of twice the rate passes, then the bucket is empty.
    let mut sessions = Vec::new();
    for _ in 0..10 {
        sessions.push(mallory.handshake(&target).await);
    }
    let (message, _) = mallory.initiation(&target, "mallory-flood");
    let err = refused_handshake(&mut mallory.client, &target, message).await;
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(
        err.message().contains("--handshakes-per-sec"),
        "{}",
        err.message()
    );

    let s = sessions.pop().unwrap();
    for counter in 0..10 {
        mallory
            .deliver(mallory.envelope(&s, counter, &format!("f{counter}"), "x"))
            .await
            .unwrap();
    }
    let err = mallory
        .deliver(mallory.envelope(&s, 10, "f10", "x"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(
        err.message().contains("--deliveries-per-sec"),
        "{}",
        err.message()
    );
    assert_eq!(
        target.node.store.len(),
        10,
        "nothing past the limit was stored"
    );
    // Another session has its own allowance.
    let other = sessions.pop().unwrap();
    mallory
        .deliver(mallory.envelope(&other, 0, "g0", "x"))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_replayed_first_handshake_message_is_refused() {
    let (_d, _dir, target, mallory) = setup("replay-hs").await;
    let mut client = mallory.client.clone();
    let (message, _) = mallory.initiation(&target, &mallory.name);
    client
        .handshake(chat_tests::handshake_request(
            &target.node.public_key(),
            message.clone(),
        ))
        .await
        .unwrap();
    // The target prepares its next answer to mallory in the background.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while target.node.prepared_handshakes().1 != 1 {
        assert!(std::time::Instant::now() < deadline, "no answer prepared");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    // An eavesdropper replays the captured message 1.
    let err = refused_handshake(&mut client, &target, message).await;
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    assert!(err.message().contains("not newer"), "{}", err.message());
    assert_eq!(
        target.node.prepared_handshakes().1,
        1,
        "a refused message 1 uses up no prepared answer"
    );
}

#[tokio::test]
async fn a_message_from_the_future_or_under_a_shadowed_id_changes_nothing() {
    let (discovery, _dir, target, mut mallory) = setup("future").await;
    let s = mallory.handshake(&target).await;
    let mut envelope = mallory.envelope(&s, 0, "t1", "from the future");
    // Re-seal with a clock an hour ahead.
    let future_ms = (chrono_now_ms() + 3_600_000) << 16;
    let plaintext = chat_tests::sealed_message(&mallory.author, "t1", "from the future", future_ms);
    let aad = envelope_aad(&s.session_id);
    envelope.ciphertext = s.transport.seal(0, &aad, &plaintext).unwrap();
    let err = mallory.deliver(envelope.clone()).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("ahead"), "{}", err.message());
    assert!(target.node.store.is_empty());
    // Sent again, its counter is spent and nothing of it was stored: a replay.
    let err = mallory.deliver(envelope).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    assert!(err.message().contains("replayed"), "{}", err.message());
    assert!(target.node.store.is_empty());

    // Two senders using the same message id are two messages: nobody can
    // shadow another sender's message by taking its id first.
    mallory
        .deliver(mallory.envelope(&s, 1, "shared-id", "mallory's"))
        .await
        .unwrap();
    let mut eve = Mallory::join(&discovery, "eve-future", &target).await;
    let es = eve.handshake(&target).await;
    let r = eve
        .deliver(eve.envelope(&es, 0, "shared-id", "eve's"))
        .await
        .unwrap();
    assert!(!r.duplicate);
    assert_eq!(target.node.store.len(), 2);
    // The stored fingerprint is the authenticated one, not what was claimed.
    let stored = target
        .node
        .store
        .get(&eve.name, "shared-id")
        .unwrap()
        .unwrap();
    assert_eq!(
        stored.sender_fingerprint,
        chat_proto::keys::fingerprint(&eve.keypair.public_key())
    );
}

fn chrono_now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[tokio::test]
async fn a_delivery_stream_answers_each_envelope_and_outlives_bad_ones() {
    let (_d, _dir, target, mut mallory) = setup("stream").await;
    let s = mallory.handshake(&target).await;
    let good = mallory.envelope(&s, 0, "s1", "first");
    let mut tampered = mallory.envelope(&s, 1, "s2", "tampered");
    tampered.ciphertext[3] ^= 0x40;
    let mut unknown_session = mallory.envelope(&s, 2, "s3", "lost");
    unknown_session.session_id = vec![0x55; chat_noise::SESSION_ID_LEN];
    let batches = vec![
        DeliverBatch {
            seq: 1,
            envelopes: vec![
                good.clone(),
                tampered,
                good.clone(), // replayed
                mallory.envelope(&s, 3, "s4", "fourth"),
                unknown_session,
                mallory.envelope(&s, 4, "s1", "first"), // a retry: same id, new counter
            ],
        },
        DeliverBatch {
            seq: 2,
            envelopes: vec![mallory.envelope(&s, 5, "s5", "fifth")],
        },
    ];
    let mut acks = mallory
        .client
        .deliver_stream(tokio_stream::iter(batches))
        .await
        .unwrap()
        .into_inner();
    let first = acks.message().await.unwrap().expect("first ack");
    assert_eq!(first.seq, 1);
    let codes: Vec<(Code, bool)> = first
        .results
        .iter()
        .map(|r| (Code::from_i32(r.code), r.duplicate))
        .collect();
    assert_eq!(
        codes,
        [
            (Code::Ok, false),
            (Code::Unauthenticated, false),
            (Code::Unauthenticated, false),
            (Code::Ok, false),
            (Code::Unauthenticated, false),
            (Code::Ok, true),
        ],
        "{first:?}"
    );
    assert!(first.results[1].error.contains("decryption failed"));
    assert!(first.results[2].error.contains("replayed"));
    assert!(first.results[4].error.contains("handshake again"));
    let second = acks.message().await.unwrap().expect("second ack");
    assert_eq!((second.seq, second.results[0].code), (2, 0));
    assert!(acks.message().await.unwrap().is_none(), "the stream ends");
    assert_eq!(target.node.store.len(), 3, "s1, s4 and s5, once each");

    // A batch past the envelope cap ends that stream with RESOURCE_EXHAUSTED;
    // the peer goes on serving.
    let huge = DeliverBatch {
        seq: 1,
        envelopes: (0..1025)
            .map(|i| mallory.envelope(&s, 100 + i, &format!("h{i}"), "x"))
            .collect(),
    };
    let mut acks = mallory
        .client
        .deliver_stream(tokio_stream::iter(vec![huge]))
        .await
        .unwrap()
        .into_inner();
    let err = acks.message().await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(err.message().contains("1024"), "{}", err.message());
    assert_eq!(target.node.store.len(), 3);
    let after = mallory
        .deliver(mallory.envelope(&s, 2000, "s6", "still here"))
        .await
        .unwrap();
    assert!(!after.duplicate);
    assert_eq!(target.node.store.len(), 4);
}

/// Issue 24, item 9: a member's message dated 2001 (or after its own
/// clock) is refused for good and stored nowhere; one without `sent_at`
/// shows the clock's time, not 1970.
#[tokio::test]
async fn a_message_with_a_false_date_is_refused_and_a_missing_one_shows_its_clock() {
    let (_discovery, _dir, target, mut mallory) = setup("dated").await;
    let s = mallory.handshake(&target).await;
    let now = chrono_now_ms();
    let hlc = now << 16;
    let aad = envelope_aad(&s.session_id);
    for (counter, (id, sent_ms)) in [("from-2001", 978_307_200_000u64), ("ahead", now + 120_000)]
        .into_iter()
        .enumerate()
    {
        let message = mallory.author.sign(
            || (id.to_owned(), hlc, peer_svc::authorship::timestamp(sent_ms)),
            "meeting moved".to_owned(),
        );
        let plaintext = peer_svc::authorship::sealed(&message);
        let envelope = Envelope {
            session_id: s.session_id.clone(),
            counter: counter as u64,
            ciphertext: s.transport.seal(counter as u64, &aad, &plaintext).unwrap(),
        };
        let err = mallory.deliver(envelope).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{id}: {err:?}");
        assert!(err.message().contains("sent_at"), "{}", err.message());
    }
    assert!(target.node.store.is_empty());

    // No sent_at at all: accepted, and dated by its clock.
    let authored = chat_proto::v1::AuthoredMessage {
        network: chat_tests::test_network_key().to_vec(),
        author_key: chat_tests::test_identity(&mallory.name)
            .verifying_key()
            .to_bytes()
            .to_vec(),
        sender: mallory.name.clone(),
        id: "undated".into(),
        seq: 1,
        hlc,
        text: "no date".into(),
        ..Default::default()
    }
    .encode_to_vec();
    use ed25519_dalek::Signer;
    let signature = chat_tests::test_identity(&mallory.name)
        .sign(&peer_svc::authorship::signed_bytes(&authored))
        .to_bytes()
        .to_vec();
    let plaintext = chat_proto::v1::SealedMessage {
        authored,
        signature,
        author_chain: Vec::new(),
    }
    .encode_to_vec();
    let envelope = Envelope {
        session_id: s.session_id.clone(),
        counter: 2,
        ciphertext: s.transport.seal(2, &aad, &plaintext).unwrap(),
    };
    mallory.deliver(envelope).await.unwrap();
    let stored = target
        .node
        .store
        .get(&mallory.name, "undated")
        .unwrap()
        .unwrap();
    let shown = peer_svc::authorship::sent_at_millis(stored.sent_at.as_ref()).unwrap();
    assert_eq!(shown, now, "dated by its clock");
}

/// Issue 24, item 6 (half-open streams): `DeliverStream`s opened and left
/// without a batch are closed by the peer after its first-batch deadline
/// (10 s), so they cannot pile up its tasks and memory.
#[tokio::test]
async fn delivery_streams_that_bring_nothing_are_closed() {
    let (_d, _dir, target, mallory) = setup("halfopen").await;
    let mut held = Vec::new();
    let mut streams = Vec::new();
    for _ in 0..64 {
        let (tx, rx) = tokio::sync::mpsc::channel::<DeliverBatch>(1);
        held.push(tx); // never sends, never closes
        let mut client = mallory.client.clone();
        let response = client
            .deliver_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .expect("the stream opens");
        streams.push(response.into_inner());
    }
    let started = std::time::Instant::now();
    for mut stream in streams {
        let end = chat_tests::within("a silent stream to be closed", stream.message()).await;
        assert!(matches!(end, Ok(None)), "{end:?}");
    }
    let took = started.elapsed();
    assert!(
        took >= peer_svc::service::peer::FIRST_BATCH_TIMEOUT / 2,
        "closed after the deadline, not at once: {took:?}"
    );
    drop(held);
    // It still serves.
    assert!(target.node.store.is_empty());
}

/// Issue 24 item 8 / issue 25 item 4: a member that says two different
/// things under one number (seq 1 "meeting at 10" to target, "meeting at
/// 14" to other) is caught as soon as the two compare feeds: each pulls
/// the other's version, keeps it as evidence, and `--verify` names the fork.
#[tokio::test]
async fn a_fork_surfaces_when_two_members_compare_feeds() {
    use chat_proto::v1::{HandshakeRequest, VerifyHistoryRequest};
    let (discovery, dir, target, mut mallory) = setup("forker").await;
    let other = InProcessPeer::start("other", &discovery.url(), &dir.path().join("other")).await;
    target.wait_connections(&["other"]).await;
    // Other's start-up history pull (from target, still empty) is over.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let s = mallory.handshake(&target).await;
    mallory
        .deliver(mallory.envelope(&s, 0, "fork-a", "meeting at 10"))
        .await
        .unwrap();
    // The same key, numbering from 1 again, to the other member.
    mallory.author = chat_tests::test_author(&mallory.name);
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", other.address))
        .unwrap()
        .connect()
        .await
        .unwrap();
    mallory.client = PeerClient::new(channel);
    let s = mallory.handshake(&other).await;
    mallory
        .deliver(mallory.envelope(&s, 0, "fork-b", "meeting at 14"))
        .await
        .unwrap();
    assert_eq!((target.node.store.len(), other.node.store.len()), (1, 1));

    // Target and other meet again: their feed digests differ, they compare.
    target
        .control()
        .await
        .handshake(HandshakeRequest {
            peer: "other".into(),
        })
        .await
        .unwrap();
    for peer in [&target, &other] {
        let node = peer.node.clone();
        chat_tests::eventually("both versions to be held", || {
            let both = node.store.len() == 2;
            async move { both }
        })
        .await;
        let report = peer
            .control()
            .await
            .verify_history(VerifyHistoryRequest {})
            .await
            .unwrap()
            .into_inner();
        let forker = report
            .authors
            .iter()
            .find(|a| a.name == mallory.name)
            .expect("the forker's feed");
        assert!(
            forker.problems.iter().any(|p| p.starts_with("fork")),
            "{forker:?}"
        );
    }

    // The forker goes on from one branch, to target only. Target holds the
    // fork, so it serves that feed up to the fork and no further: asked
    // from the start, both versions come; asked above the fork, nothing.
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", target.address))
        .unwrap()
        .connect()
        .await
        .unwrap();
    mallory.client = PeerClient::new(channel);
    let s = mallory.handshake(&target).await;
    mallory
        .deliver(mallory.envelope(&s, 0, "fork-c", "so, at 14"))
        .await
        .unwrap();
    assert_eq!(target.node.store.len(), 3);
    let contact = other.node.directory.get("target").expect("target known");
    let key = mallory.author.key();
    let from_start = other.node.pull_feed_from(&contact, &key, 0).await.unwrap();
    // (Other holds the forker's chain: it is not sent.)
    assert_eq!(
        (from_start.added, from_start.items),
        (0, 2),
        "both versions: {from_start:?}"
    );
    let above = other.node.pull_feed_from(&contact, &key, 1).await.unwrap();
    assert_eq!(
        (above.added, above.items),
        (0, 0),
        "nothing past the fork: {above:?}"
    );
    assert_eq!(other.node.store.len(), 2);
}
