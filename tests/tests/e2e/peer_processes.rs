//! Real `peer-svc` processes and the real `chat` CLI: the original's
//! scenario, leaving, restarting, and grpcurl against a running peer.

use chat_proto::v1::SendRequest;
use chat_tests::{Discovery, PeerProcess, chat_cli, eventually, full_history, run_grpcurl};

async fn start_peers(
    discovery: &Discovery,
    dir: &std::path::Path,
    names: &[&str],
) -> Vec<PeerProcess> {
    chat_tests::start_network(&discovery.url(), dir, names).await
}

/// Sends `text` through a Control client and checks the first peer got it.
async fn send_delivered(
    control: &mut chat_proto::v1::control_client::ControlClient<tonic::transport::Channel>,
    text: &str,
) {
    let r = control
        .send(SendRequest {
            text: text.into(),
            id: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        r.deliveries[0].status(),
        chat_proto::v1::delivery::Status::Delivered,
        "{r:?}"
    );
}

#[tokio::test]
async fn three_peers_each_message_reaches_the_other_two_and_a_leaver_gets_nothing_more() {
    let discovery = Discovery::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut peers = start_peers(&discovery, dir.path(), &["user1", "user2", "user3"]).await;

    for (i, sender) in ["user1", "user2", "user3"].iter().enumerate() {
        let text = format!("Hello from {sender}");
        let (ok, out, err) = peers[i].chat(&["send", &text]).await;
        assert!(ok, "chat send failed: {err}");
        assert_eq!(out.matches(" delivered").count(), 2, "{out}");
        for (j, receiver) in peers.iter_mut().enumerate() {
            if i != j {
                let line = receiver.next_console_line().await;
                assert!(
                    line.ends_with(&format!("] - From: {sender} Message: {text}")),
                    "{} printed {line:?}",
                    receiver.name
                );
                assert!(
                    line.starts_with('[') && line.as_bytes()[11] == b'|',
                    "{line}"
                );
            }
        }
    }

    // The control socket is the owner's alone.
    for p in &peers {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(p.data_dir.join("control.sock"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{}'s control socket", p.name);
        let mode = std::fs::metadata(p.data_dir.join("identity.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{}'s identity", p.name);
    }

    // Every peer's history holds the three messages, in the original's format,
    // in the same order.
    let mut histories = Vec::new();
    for p in &peers {
        let (ok, out, err) = p.chat(&["history"]).await;
        assert!(ok, "{err}");
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], "The history");
        assert_eq!(lines.len(), 4, "{out}");
        for line in &lines[1..] {
            assert!(
                line.contains("] From user") && line.contains(" Message Hello from user"),
                "{line}"
            );
        }
        histories.push(lines[1..].iter().map(|l| l.to_string()).collect::<Vec<_>>());
    }
    assert!(
        histories.windows(2).all(|w| w[0] == w[1]),
        "same history everywhere: {histories:?}"
    );
    let (ok, json, _) = peers[0].chat(&["history", "--json", "--limit", "2"]).await;
    assert!(ok);
    let rows: Vec<serde_json::Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[1]["sender"], "user3");

    // user3 stops: its daemon deregisters and exits. It stays a member
    // (issue 25): the others list it offline, what they send is kept for
    // it, and it gets that, once, when it is back. (`chat leave` without
    // --yes would leave the network for good: it asks first.)
    let leaver = peers.pop().unwrap();
    let (ok, _, err) = leaver.chat(&["leave"]).await;
    assert!(
        !ok && err.contains("for good") && err.contains("chat stop"),
        "{err}"
    );
    let (ok, out, _) = leaver.chat(&["stop"]).await;
    assert!(ok && out.contains("you stay a member"), "{out}");
    let mut leaver = leaver;
    let status = chat_tests::within("user3 to exit", leaver.process.child.wait())
        .await
        .unwrap();
    assert!(status.success(), "user3 exits cleanly after stop");
    let (ok, _, err) = chat_cli(&leaver.data_dir, &["history"]).await;
    assert!(!ok && err.contains("no peer-svc is running"), "{err}");
    for p in &peers {
        eventually(&format!("{} to list user3 offline", p.name), || async {
            let (_, out, _) = p.chat(&["connections"]).await;
            out.lines()
                .any(|l| l.trim_start().starts_with("user3") && l.contains("offline"))
        })
        .await;
    }
    let (ok, out, _) = peers[0].chat(&["send", "after user3 left"]).await;
    assert!(ok);
    assert!(
        out.lines()
            .any(|l| l.trim_start().starts_with("user3") && l.contains("queued")),
        "user3 is owed it: {out}"
    );
    let user3 = PeerProcess::start("user3", &discovery.url(), &leaver.data_dir).await;
    chat_tests::wait_for_message(&user3.data_dir, "after user3 left").await;
    let (ok, out, _) = user3.chat(&["history"]).await;
    assert!(ok);
    assert_eq!(out.matches("after user3 left").count(), 1, "{out}");
}

#[tokio::test]
async fn a_restarted_peer_keeps_its_fingerprint_and_the_next_message_arrives() {
    let discovery = Discovery::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut peers = start_peers(&discovery, dir.path(), &["alice", "bob"]).await;
    let mut alice = peers[0].control().await;
    send_delivered(&mut alice, "before").await;
    let (_, before, _) = peers[0].chat(&["connections", "--json"]).await;
    let fingerprint_before: serde_json::Value = serde_json::from_str(&before).unwrap();

    // Restart bob with the same data dir: a new process, a new port, no sessions.
    let bob = peers.pop().unwrap();
    assert!(bob.process.terminate().await.success());
    let bob = PeerProcess::start("bob", &discovery.url(), &dir.path().join("bob")).await;
    // (bob left on SIGTERM: alice lists him again once his new lease is seen)
    peers[0].wait_connections(&["bob"]).await;
    let (_, after, _) = peers[0].chat(&["connections", "--json"]).await;
    let fingerprint_after: serde_json::Value = serde_json::from_str(&after).unwrap();
    assert_eq!(
        fingerprint_before[0]["fingerprint"],
        fingerprint_after[0]["fingerprint"]
    );
    eventually("alice to learn bob's new address", || {
        let data_dir = peers[0].data_dir.clone();
        let new_address = bob.process.addr.clone();
        async move {
            let (_, out, _) = chat_cli(&data_dir, &["connections", "--json"]).await;
            serde_json::from_str::<serde_json::Value>(&out)
                .map(|v| v[0]["address"] == new_address.as_str())
                .unwrap_or(false)
        }
    })
    .await;

    // Alice's old session is gone with bob's restart; she re-handshakes without
    // the user noticing.
    send_delivered(&mut alice, "after").await;
    chat_tests::wait_for_message(&bob.data_dir, "after").await;
    let texts: Vec<String> = full_history(&mut bob.control().await)
        .await
        .into_iter()
        .map(|m| m.text)
        .collect();
    assert!(texts.contains(&"after".to_string()));
}

#[tokio::test]
async fn a_message_to_a_restarted_peer_on_the_same_address_rehandshakes_once() {
    // The receiver restarts on the same port before the sender notices: the
    // sender's session is unknown there, it gets UNAUTHENTICATED, handshakes
    // again and retries once.
    let discovery = Discovery::start().await;
    let dir = tempfile::tempdir().unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port().to_string();
    drop(listener);
    let listen = format!("127.0.0.1:{port}");
    let alice = PeerProcess::start("alice", &discovery.url(), &dir.path().join("alice")).await;
    let bob_dir = dir.path().join("bob");
    let bob_dir_s = bob_dir.to_str().unwrap().to_owned();
    let args = [
        "--name",
        "bob",
        "--listen",
        listen.as_str(),
        "--discovery",
        &discovery.url(),
        "--data-dir",
        bob_dir_s.as_str(),
    ];
    let bob = chat_tests::Process::spawn("peer-svc", &args, &[]).await;
    alice.wait_connections(&["bob"]).await;
    let mut control = alice.control().await;
    let send = |text: &str| SendRequest {
        text: text.into(),
        id: String::new(),
    };
    let r = control.send(send("one")).await.unwrap().into_inner();
    assert_eq!(
        r.deliveries[0].status(),
        chat_proto::v1::delivery::Status::Delivered
    );

    let mut bob = bob;
    bob.child.kill().await.unwrap(); // kill -9: bob's sessions die with it
    let _bob = chat_tests::Process::spawn("peer-svc", &args, &[]).await;
    let r = control.send(send("two")).await.unwrap().into_inner();
    assert_eq!(
        r.deliveries[0].status(),
        chat_proto::v1::delivery::Status::Delivered,
        "{r:?}"
    );
    chat_tests::wait_for_message(&bob_dir, "two").await;
}

#[tokio::test]
async fn grpcurl_reaches_the_peer_port_and_the_control_socket() {
    let discovery = Discovery::start().await;
    let dir = tempfile::tempdir().unwrap();
    let peers = start_peers(&discovery, dir.path(), &["gx1", "gx2"]).await;
    let (ok, out, err) = run_grpcurl(&["-plaintext", &peers[0].process.addr, "list"]).await;
    assert!(ok, "{err}");
    assert!(out.lines().any(|l| l == "chat.v1.Peer"), "{out}");
    assert!(
        !out.contains("chat.v1.Control"),
        "Control is only on the socket: {out}"
    );
    let (ok, out, _) = run_grpcurl(&[
        "-plaintext",
        &peers[0].process.addr,
        "describe",
        "chat.v1.Peer",
    ])
    .await;
    assert!(ok && out.contains("rpc Deliver"), "{out}");

    let socket = peers[0].data_dir.join("control.sock");
    let socket = socket.to_str().unwrap();
    let uds = ["-plaintext", "-unix", "-authority", "localhost"];
    fn with<'a>(uds: &[&'a str], socket: &'a str, rest: &[&'a str]) -> Vec<&'a str> {
        uds.iter()
            .copied()
            .chain([socket])
            .chain(rest.iter().copied())
            .collect()
    }
    let (ok, out, err) = run_grpcurl(&with(&uds, socket, &["list"])).await;
    assert!(ok, "{err}");
    assert!(out.lines().any(|l| l == "chat.v1.Control"), "{out}");
    let args: Vec<&str> = uds
        .iter()
        .copied()
        .chain([
            "-d",
            r#"{"text":"hi from grpcurl"}"#,
            socket,
            "chat.v1.Control/Send",
        ])
        .collect();
    let (ok, out, err) = run_grpcurl(&args).await;
    assert!(ok, "{err}");
    let sent: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(sent["deliveries"][0]["peer"], "gx2");
    assert_eq!(sent["deliveries"][0]["status"], "DELIVERED");
    let (ok, out, err) = run_grpcurl(&with(&uds, socket, &["chat.v1.Control/History"])).await;
    assert!(ok, "{err}");
    let history: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(history["messages"][0]["text"], "hi from grpcurl");
    assert_eq!(history["messages"][0]["sender"], "gx1");
    let (ok, out, _) = run_grpcurl(&with(&uds, socket, &["grpc.health.v1.Health/Check"])).await;
    assert!(ok && out.contains("SERVING"), "{out}");
}
