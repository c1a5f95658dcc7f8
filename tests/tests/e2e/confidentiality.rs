//! What an eavesdropper sees: every byte between two peers, and between the
//! peers and Discovery, goes through recording relays; the message text is
//! in none of them, and the traffic between the peers shows neither the
//! sender's name nor the message's id (issue 17: private envelopes).

use chat_proto::v1::{SendRequest, delivery::Status};
use chat_tests::{Discovery, InProcessPeer, Relay, contains, eventually};
use tokio::net::TcpListener;

#[tokio::test]
async fn no_plaintext_on_the_wire_and_discovery_never_sees_message_text() {
    let discovery = Discovery::start().await;
    let to_discovery = Relay::start(discovery.addr).await;
    let discovery_url = format!("http://{}", to_discovery.addr);
    let dir = tempfile::tempdir().unwrap();

    let bob_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let to_bob = Relay::start(bob_listener.local_addr().unwrap()).await;
    let mut bob_config = peer_svc::Config::new("bob", &discovery_url, dir.path().join("bob"));
    bob_config.advertise = Some(to_bob.addr.to_string());
    let bob = InProcessPeer::start_on(bob_listener, bob_config).await;
    let alice = InProcessPeer::start("alice", &discovery_url, &dir.path().join("alice")).await;
    alice.wait_connections(&["bob"]).await;

    let secret = format!("attack at dawn {}", rand::random::<u64>());
    let id = format!("an-id-to-look-for-{}", rand::random::<u64>());
    let report = alice
        .control()
        .await
        .send(SendRequest {
            text: secret.clone(),
            id: id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        report.deliveries[0].status(),
        Status::Delivered,
        "{report:?}"
    );
    eventually("bob to store the message", || {
        let stored = bob.node.store.len() == 1;
        async move { stored }
    })
    .await;

    let wire = to_bob.captured();
    assert!(
        wire.len() > secret.len(),
        "the relay carried the traffic ({} bytes)",
        wire.len()
    );
    // The envelope carries only the session id, the counter and the
    // ciphertext: neither who sent it nor under which id.
    assert!(!contains(&wire, b"alice"), "the sender's name on the wire");
    assert!(
        !contains(&wire, id.as_bytes()),
        "the message id on the wire"
    );
    assert!(
        !contains(&wire, secret.as_bytes()),
        "plaintext on the wire to bob"
    );
    assert!(
        !contains(&wire, b"attack at dawn"),
        "part of the plaintext on the wire"
    );
    let to_discovery_bytes = to_discovery.captured();
    assert!(!to_discovery_bytes.is_empty());
    assert!(
        !contains(&to_discovery_bytes, secret.as_bytes()),
        "Discovery saw the text"
    );
    // The names inside the handshake payload are encrypted too (IK encrypts
    // message 1's payload).
    drop(alice);
    drop(bob);
}
