//! Discovery goes down: running peers keep chatting; a peer (re)starting
//! meanwhile uses its cached member list to reach a live peer, gets its
//! connections and the history it missed; when Discovery returns, every peer
//! registers again by itself.

use chat_proto::v1::{ListRequest, discovery_client::DiscoveryClient};
use chat_tests::{PeerProcess, Process, chat_cli, eventually};

/// A free loopback port (bound, then released for the process to take).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn start_discovery(addr: &str) -> Process {
    Process::spawn("discovery-svc", &["--listen", addr, "--ttl", "3s"], &[]).await
}

#[tokio::test]
async fn peers_ride_out_a_discovery_outage() {
    let addr = format!("127.0.0.1:{}", free_port());
    let url = format!("http://{addr}");
    let discovery = start_discovery(&addr).await;
    let dir = tempfile::tempdir().unwrap();
    let alice = PeerProcess::start("alice", &url, &dir.path().join("alice")).await;
    let bob = PeerProcess::start("bob", &url, &dir.path().join("bob")).await;
    let carol = PeerProcess::start("carol", &url, &dir.path().join("carol")).await;
    for p in [&alice, &bob, &carol] {
        let others: Vec<&str> = ["alice", "bob", "carol"]
            .into_iter()
            .filter(|n| *n != p.name)
            .collect();
        p.wait_connections(&others).await;
    }
    let (ok, out, _) = alice.chat(&["send", "before the outage"]).await;
    assert!(ok && out.matches("delivered").count() == 2, "{out}");

    // Discovery dies.
    let mut discovery = discovery;
    discovery.child.kill().await.unwrap();

    // Running peers keep chatting.
    let (ok, out, _) = alice.chat(&["send", "during the outage"]).await;
    assert!(
        ok && out.matches("delivered").count() == 2,
        "running peers still chat: {out}"
    );

    // Carol restarts while Discovery is down (on a new port).
    let carol_dir = carol.data_dir.clone();
    assert!(carol.process.terminate().await.success());
    let (ok, out, _) = bob.chat(&["send", "while carol is away"]).await;
    assert!(
        ok && out.contains("alice") && out.contains("delivered"),
        "{out}"
    );
    let carol = PeerProcess::start("carol", &url, &carol_dir).await;
    // From its cache and a live peer: the connections and all three messages.
    eventually("carol to catch up without Discovery", || {
        let d = carol_dir.clone();
        async move { chat_cli(&d, &["history"]).await.1.lines().count() == 4 }
    })
    .await;
    let (_, history, _) = carol.chat(&["history"]).await;
    assert!(history.contains("Message while carol is away"), "{history}");
    let (_, connections, _) = carol.chat(&["connections"]).await;
    assert!(
        connections.contains("alice") && connections.contains("bob"),
        "{connections}"
    );

    // The peer carol reached learned her new address from the handshake and
    // can deliver to her without Discovery; everyone's message gets there
    // (directly, or queued until she is reachable).
    let (ok, out, _) = alice.chat(&["send", "welcome back carol"]).await;
    assert!(ok && out.contains("carol"), "{out}");
    eventually("carol to receive alice's message", || {
        let d = carol_dir.clone();
        async move {
            chat_cli(&d, &["history"])
                .await
                .1
                .contains("welcome back carol")
        }
    })
    .await;

    // Discovery returns on the same address: every peer registers again.
    let _discovery = start_discovery(&addr).await;
    let mut client = DiscoveryClient::connect(url.clone()).await.unwrap();
    eventually("all three peers to register again", || {
        let mut c = client.clone();
        async move {
            let members = c
                .list(ListRequest::default())
                .await
                .map(|r| r.into_inner().members)
                .unwrap_or_default();
            members.len() == 3
        }
    })
    .await;
    let members = client
        .list(ListRequest::default())
        .await
        .unwrap()
        .into_inner()
        .members;
    let carol_listed = members.iter().find(|m| m.name == "carol").unwrap();
    assert_eq!(
        carol_listed.address, carol.process.addr,
        "carol registered her new address"
    );
    let (ok, out, _) = bob.chat(&["send", "all back"]).await;
    assert!(ok && out.matches("delivered").count() == 2, "{out}");
}
