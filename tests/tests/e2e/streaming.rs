//! The streaming path end to end: `chat send --stdin` feeds
//! `Control/SendStream`, the sender batches deliveries over
//! `Peer/DeliverStream`, and a receiver killed with `kill -9` in the middle
//! still ends with every message exactly once, in the order it was written,
//! with nothing left in the sender's outbox.

use chat_proto::v1::{ConnectionsRequest, HistoryRequest};
use chat_tests::{Discovery, PeerProcess, eventually, full_history, within};
use tokio::io::AsyncWriteExt;

const N: usize = 3000;

fn line(i: usize) -> String {
    format!("bulk {i:05}")
}

/// True once `text` is in the history behind `data_dir`.
async fn has(data_dir: &std::path::Path, text: &str) -> bool {
    let Ok(mut c) = peer_svc::control_client::connect(data_dir).await else {
        return false;
    };
    c.history(HistoryRequest {
        grep: text.into(),
        limit: 1,
        ..Default::default()
    })
    .await
    .is_ok_and(|r| !r.into_inner().messages.is_empty())
}

#[tokio::test]
async fn bulk_sends_stream_in_order_and_arrive_once_across_a_receiver_crash() {
    let discovery = Discovery::start().await;
    let dir = tempfile::tempdir().unwrap();
    let alice = PeerProcess::start("alice", &discovery.url(), &dir.path().join("alice")).await;
    let bob = PeerProcess::start("bob", &discovery.url(), &dir.path().join("bob")).await;
    alice.wait_connections(&["bob"]).await;
    bob.wait_connections(&["alice"]).await;

    let mut chat = chat_tests::spawn_chat(&alice.data_dir, &["send", "--stdin"]);
    let mut stdin = chat.stdin.take().unwrap();
    for i in 0..N / 2 {
        stdin
            .write_all(format!("{}\n", line(i)).as_bytes())
            .await
            .unwrap();
    }
    stdin.flush().await.unwrap();

    // bob dies (kill -9) while the stream is carrying the first half.
    let bob_dir = bob.data_dir.clone();
    let quarter = line(N / 4);
    eventually("a quarter of the messages at bob", || {
        has(&bob_dir, &quarter)
    })
    .await;
    let mut bob = bob;
    bob.process.child.kill().await.unwrap();

    // The second half is written while bob is down; then bob comes back.
    for i in N / 2..N {
        stdin
            .write_all(format!("{}\n", line(i)).as_bytes())
            .await
            .unwrap();
    }
    drop(stdin);
    let bob = PeerProcess::start("bob", &discovery.url(), &bob_dir).await;

    let out = within("chat send --stdin", chat.wait_with_output())
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!("sent {N} of {N} messages")),
        "{stdout}"
    );

    // Everything reaches bob exactly once, in the order it was written, and
    // alice's outbox for bob is empty again.
    let expected: Vec<String> = (0..N).map(line).collect();
    let mut bob_control = bob.control().await;
    eventually("every message at bob", || {
        let mut c = bob_control.clone();
        async move { full_history(&mut c).await.len() >= N }
    })
    .await;
    let at_bob: Vec<String> = full_history(&mut bob_control)
        .await
        .into_iter()
        .map(|m| m.text)
        .collect();
    assert_eq!(at_bob, expected, "once each, in order");
    let at_alice: Vec<String> = full_history(&mut alice.control().await)
        .await
        .into_iter()
        .map(|m| m.text)
        .collect();
    assert_eq!(at_alice, expected);
    let alice_control = alice.control().await;
    eventually("alice's outbox for bob drained", || {
        let mut c = alice_control.clone();
        async move {
            c.connections(ConnectionsRequest::default())
                .await
                .is_ok_and(|r| r.into_inner().connections.iter().all(|c| c.queued == 0))
        }
    })
    .await;
}

#[tokio::test]
async fn the_largest_message_streams_and_the_limit_is_checked_at_start() {
    let discovery = Discovery::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = |name: &str, limit: usize| {
        let mut c = peer_svc::Config::new(name, &discovery.url(), dir.path().join(name));
        c.max_message_bytes = limit;
        c
    };
    // Over what one Noise transport message carries: refused at start.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let too_big = config("big", peer_svc::MAX_MESSAGE_BYTES_LIMIT + 1);
    let refused = peer_svc::start(listener, too_big, Default::default()).await;
    let Err(why) = refused else {
        panic!("a limit over one Noise transport message must be refused at start")
    };
    let why = why.to_string();
    assert!(why.contains("--max-message-bytes"), "{why}");

    let limit = peer_svc::MAX_MESSAGE_BYTES_LIMIT;
    let alice = chat_tests::InProcessPeer::start_with(config("alice", limit)).await;
    let bob = chat_tests::InProcessPeer::start_with(config("bob", limit)).await;
    alice.wait_connections(&["bob"]).await;
    // The largest text one Noise transport message carries, between two small ones.
    let big = "b".repeat(limit);
    let sends = ["small before", big.as_str(), "small after"].map(|text| {
        let node = alice.node.clone();
        let text = text.to_owned();
        tokio::spawn(async move { node.send(text, String::new()).await })
    });
    for send in sends {
        let report = within("a send", send).await.unwrap().unwrap();
        assert_eq!(report.deliveries.len(), 1);
        assert_eq!(report.deliveries[0].status, 1, "{report:?}");
    }
    assert_eq!(bob.node.store.len(), 3);
}
