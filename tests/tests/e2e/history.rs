//! Durable history: one order on every peer, nothing lost across `kill -9`,
//! sync for newcomers and returning peers, and the outbox.

use std::collections::HashSet;

use chat_proto::v1::{ChatMessage, LeaveRequest, SendRequest, delivery::Status};
use chat_tests::{
    Discovery, InProcessPeer, PeerProcess, chat_cli, eventually, full_history, within,
};
use futures::StreamExt;

fn send(text: impl Into<String>) -> SendRequest {
    SendRequest {
        text: text.into(),
        id: String::new(),
    }
}

fn ids(history: &[ChatMessage]) -> Vec<String> {
    history.iter().map(|m| m.id.clone()).collect()
}

#[tokio::test]
async fn three_peers_sending_concurrently_end_with_identical_histories() {
    const EACH: usize = 100;
    let discovery = Discovery::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut peers = Vec::new();
    for name in ["p1", "p2", "p3"] {
        peers.push(InProcessPeer::start(name, &discovery.url(), &dir.path().join(name)).await);
    }
    peers[0].wait_connections(&["p2", "p3"]).await;
    peers[1].wait_connections(&["p1", "p3"]).await;
    peers[2].wait_connections(&["p1", "p2"]).await;

    let mut senders = Vec::new();
    for (i, p) in peers.iter().enumerate() {
        let control = p.control().await;
        senders.push(tokio::spawn(async move {
            futures::stream::iter(0..EACH)
                .map(|n| {
                    let mut c = control.clone();
                    async move {
                        c.send(send(format!("p{} says {n}", i + 1)))
                            .await
                            .unwrap()
                            .into_inner()
                    }
                })
                .buffer_unordered(8)
                .collect::<Vec<_>>()
                .await
        }));
    }
    for s in senders {
        for report in within("sending", s).await.unwrap() {
            assert!(
                report
                    .deliveries
                    .iter()
                    .all(|d| d.status() == Status::Delivered),
                "{report:?}"
            );
        }
    }
    for p in &peers {
        let node = p.node.clone();
        eventually("every peer to hold all messages", || {
            let n = node.store.len();
            async move { n == 3 * EACH }
        })
        .await;
    }
    let mut histories = Vec::new();
    for p in &peers {
        histories.push(ids(&full_history(&mut p.control().await).await));
    }
    assert_eq!(histories[0].len(), 3 * EACH);
    assert_eq!(
        histories[0].iter().collect::<HashSet<_>>().len(),
        3 * EACH,
        "no duplicates"
    );
    assert_eq!(histories[0], histories[1], "p1 and p2 show the same order");
    assert_eq!(histories[0], histories[2], "p1 and p3 show the same order");
}

#[tokio::test]
async fn a_killed_recipient_gets_all_fifty_exactly_once_when_it_returns() {
    let discovery = Discovery::start().await;
    let dir = tempfile::tempdir().unwrap();
    let alice = PeerProcess::start("alice", &discovery.url(), &dir.path().join("alice")).await;
    let bob = PeerProcess::start("bob", &discovery.url(), &dir.path().join("bob")).await;
    alice.wait_connections(&["bob"]).await;
    let mut control = alice.control().await;
    control.send(send("before the crash")).await.unwrap();

    let bob_dir = bob.data_dir.clone();
    let mut bob_process = bob.process;
    bob_process.child.kill().await.unwrap(); // kill -9
    for i in 0..50 {
        let report = control
            .send(send(format!("while bob is down {i}")))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(report.deliveries[0].status(), Status::Queued, "{report:?}");
        assert!(report.deliveries[0].error.contains("queued"), "{report:?}");
    }
    let (_, connections, _) = alice.chat(&["connections", "--json"]).await;
    let listed: serde_json::Value = serde_json::from_str(&connections).unwrap();
    assert_eq!(listed[0]["queued"], 50, "{connections}");

    let bob = PeerProcess::start("bob", &discovery.url(), &bob_dir).await;
    let mut bob_control = bob.control().await;
    eventually("bob to have all 51 messages", || {
        let mut c = bob_control.clone();
        async move { full_history(&mut c).await.len() == 51 }
    })
    .await;
    eventually("alice's outbox to drain", || {
        let d = alice.data_dir.clone();
        async move {
            chat_cli(&d, &["connections", "--json"])
                .await
                .1
                .contains("\"queued\":0")
        }
    })
    .await;
    let bob_history = full_history(&mut bob_control).await;
    let alice_history = full_history(&mut control).await;
    assert_eq!(
        ids(&bob_history),
        ids(&alice_history),
        "bob's history equals alice's"
    );
    assert_eq!(
        bob_history
            .iter()
            .map(|m| &m.id)
            .collect::<HashSet<_>>()
            .len(),
        51,
        "exactly once"
    );
}

#[tokio::test]
async fn a_peer_killed_mid_stream_reopens_cleanly_with_every_acknowledged_message() {
    let discovery = Discovery::start().await;
    let dir = tempfile::tempdir().unwrap();
    let alice = PeerProcess::start("alice", &discovery.url(), &dir.path().join("alice")).await;
    let bob = PeerProcess::start("bob", &discovery.url(), &dir.path().join("bob")).await;
    alice.wait_connections(&["bob"]).await;
    let control = alice.control().await;

    // Four streams of sends; bob is killed while they run.
    let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let stop = tokio_util::sync::CancellationToken::new();
    let mut streams = Vec::new();
    for s in 0..4 {
        let (mut c, acked, stop) = (control.clone(), acked.clone(), stop.clone());
        streams.push(tokio::spawn(async move {
            let mut n = 0;
            while !stop.is_cancelled() {
                let r = c
                    .send(send(format!("stream {s} message {n}")))
                    .await
                    .unwrap()
                    .into_inner();
                if r.deliveries[0].status() == Status::Delivered {
                    acked.lock().unwrap().push(r.id);
                }
                n += 1;
            }
        }));
    }
    eventually("some messages to be acknowledged", || {
        let n = acked.lock().unwrap().len();
        async move { n >= 200 }
    })
    .await;
    let bob_dir = bob.data_dir.clone();
    let mut bob_process = bob.process;
    bob_process.child.kill().await.unwrap();
    stop.cancel();
    for s in streams {
        s.await.unwrap();
    }
    // Alice goes away too, so nothing can refill bob's store: what bob has
    // after the restart is what it had made durable before acknowledging.
    assert!(alice.process.terminate().await.success());

    let bob = PeerProcess::start("bob", &discovery.url(), &bob_dir).await;
    let stored: HashSet<String> = ids(&full_history(&mut bob.control().await).await)
        .into_iter()
        .collect();
    let acked = acked.lock().unwrap().clone();
    let missing: Vec<&String> = acked.iter().filter(|id| !stored.contains(*id)).collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged messages missing: {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
}

#[tokio::test]
async fn a_newcomer_gets_all_ten_thousand_messages_of_history() {
    const N: u64 = 10_000;
    let discovery = Discovery::start().await;
    let dir = tempfile::tempdir().unwrap();
    // History alice holds from two members long gone, signed by them, and
    // the admission chains that let her introduce them to a newcomer.
    let alice_dir = dir.path().join("alice");
    std::fs::create_dir_all(&alice_dir).unwrap();
    std::fs::set_permissions(
        &alice_dir,
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    {
        let store = peer_svc::store::Store::open(&alice_dir).unwrap();
        let gone = [
            chat_tests::test_author("someone-gone"),
            chat_tests::test_author("another-gone"),
        ];
        let history: Vec<ChatMessage> = (0..N)
            .map(|i| {
                chat_tests::signed_message(
                    &gone[(i % 3 == 0) as usize],
                    &format!("old-{i}"),
                    &format!("message number {i}"),
                    (1_700_000_000_000 + i) << 16,
                )
            })
            .collect();
        assert_eq!(store.insert_many(&history).unwrap(), N as usize);
        for name in ["someone-gone", "another-gone"] {
            let key = chat_tests::test_identity(name).verifying_key().to_bytes();
            store
                .save_author(&key, name, &chat_tests::admission_chain(name))
                .unwrap();
        }
    }
    let alice = InProcessPeer::start("alice", &discovery.url(), &alice_dir).await;

    let carol = InProcessPeer::start("carol", &discovery.url(), &dir.path().join("carol")).await;
    let node = carol.node.clone();
    eventually("carol to pull 10,000 messages", || {
        let n = node.store.len();
        async move { n == N as usize }
    })
    .await;
    let carols = full_history(&mut carol.control().await).await;
    assert_eq!(
        ids(&carols),
        ids(&full_history(&mut alice.control().await).await)
    );
}

#[tokio::test]
async fn the_original_scenario_user3_joins_late_and_sees_all_four_in_order() {
    let discovery = Discovery::start().await;
    let dir = tempfile::tempdir().unwrap();
    let user1 = PeerProcess::start("user1", &discovery.url(), &dir.path().join("user1")).await;
    let user2 = PeerProcess::start("user2", &discovery.url(), &dir.path().join("user2")).await;
    user1.wait_connections(&["user2"]).await;
    user2.wait_connections(&["user1"]).await;
    for (who, text) in [
        (&user1, "Hello user2"),
        (&user2, "Hello user1"),
        (&user1, "Hello user22"),
        (&user2, "Hello user11"),
    ] {
        let (ok, _, err) = who.chat(&["send", text]).await;
        assert!(ok, "{err}");
    }
    let user3 = PeerProcess::start("user3", &discovery.url(), &dir.path().join("user3")).await;
    eventually("user3 to sync four messages", || {
        let d = user3.data_dir.clone();
        async move { chat_cli(&d, &["history"]).await.1.lines().count() == 5 }
    })
    .await;
    let (_, on_user3, _) = user3.chat(&["history"]).await;
    let (_, on_user1, _) = user1.chat(&["history"]).await;
    assert_eq!(on_user3, on_user1, "same history, same order");
    let texts: Vec<&str> = on_user3
        .lines()
        .skip(1)
        .map(|l| l.rsplit(" Message ").next().unwrap())
        .collect();
    assert_eq!(
        texts,
        ["Hello user2", "Hello user1", "Hello user22", "Hello user11"]
    );
}

#[tokio::test]
async fn the_outbox_is_bounded_reported_and_kept_when_discovery_says_the_peer_left() {
    let discovery = Discovery::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = peer_svc::Config::new("alice", &discovery.url(), dir.path().join("alice"));
    config.outbox_limit = 3;
    let alice = InProcessPeer::start_with(config).await;
    // A member that registered and then went silent: nothing listens at its address.
    let ghost_key = chat_noise::StaticKeypair::generate();
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut client = discovery.client().await;
    let request = chat_tests::proven(&mut client, &ghost_key, "ghost", &dead.to_string()).await;
    let lease = client.register(request).await.unwrap().into_inner();
    alice.wait_connections(&["ghost"]).await;
    // It showed alice its admission once, so it is a member she queues for.
    chat_tests::introduce(
        "ghost",
        &ghost_key,
        &dead.to_string(),
        &alice.address,
        &alice.node.public_key(),
    )
    .await;
    let mut control = alice.control().await;
    let mut reports = Vec::new();
    for i in 0..5 {
        reports.push(
            control
                .send(send(format!("to the ghost {i}")))
                .await
                .unwrap()
                .into_inner(),
        );
    }
    assert!(
        reports
            .iter()
            .all(|r| r.deliveries[0].status() == Status::Queued)
    );
    assert!(!reports[2].deliveries[0].error.contains("dropped"));
    assert!(
        reports[3].deliveries[0]
            .error
            .contains("dropped the 1 oldest"),
        "{:?}",
        reports[3]
    );
    assert_eq!(alice.node.store.pending_count("ghost").unwrap(), 3);
    let kept: Vec<String> = alice
        .node
        .store
        .pending("ghost", 10)
        .unwrap()
        .into_iter()
        .map(|m| m.text)
        .collect();
    assert_eq!(
        kept,
        ["to the ghost 2", "to the ghost 3", "to the ghost 4"],
        "the newest are kept"
    );

    discovery
        .client()
        .await
        .leave(LeaveRequest {
            lease_id: lease.lease_id,
            lease_token: lease.lease_token,
        })
        .await
        .unwrap();
    // Discovery's word that it left is not the ghost's (Discovery can say
    // it of anyone): the queue stays, and the contact with it.
    let node = alice.node.clone();
    eventually("alice to see the ghost offline", || {
        let offline = node.directory.get("ghost").is_some_and(|c| !c.online);
        async move { offline }
    })
    .await;
    assert_eq!(alice.node.store.pending_count("ghost").unwrap(), 3);
}

#[tokio::test]
async fn a_peer_that_does_not_share_history_refuses_to_serve_it() {
    let discovery = Discovery::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = peer_svc::Config::new("private", &discovery.url(), dir.path().join("private"));
    config.share_history = false;
    let private = InProcessPeer::start_with(config).await;
    private
        .control()
        .await
        .send(send("only for those present"))
        .await
        .unwrap();
    let carol = InProcessPeer::start("carol", &discovery.url(), &dir.path().join("carol")).await;
    carol.wait_connections(&["private"]).await;
    let contact = carol.node.directory.get("private").unwrap();
    let err = carol.node.pull_history_from(&contact).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
    assert!(
        err.message().contains("does not share history"),
        "{}",
        err.message()
    );
    assert!(carol.node.store.is_empty());
}
