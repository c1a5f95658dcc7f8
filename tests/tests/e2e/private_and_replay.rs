//! Two attacks from outside a peer's data dir, against real processes: a
//! captured first handshake message replayed after the peer restarted, and
//! a data dir that someone created open to other users.

use std::os::unix::fs::PermissionsExt;

use chat_noise::{Initiator, StaticKeypair};
use chat_proto::v1::{HandshakePayload, LeaveRequest, peer_client::PeerClient};
use chat_tests::{Discovery, PeerProcess, binary, eventually};
use peer_svc::handshaker::PROLOGUE;
use prost::Message;
use tonic::Code;

/// Alice's first handshake message to the key `to`, claiming `address`.
fn initiation(alice: &StaticKeypair, to: [u8; 32], address: &str) -> Vec<u8> {
    let payload = HandshakePayload {
        name: "alice".into(),
        address: address.into(),
        timestamp_micros: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_micros() as u64,
        credential: chat_tests::credential("alice", alice),
        ..Default::default()
    };
    Initiator::new(alice, to, PROLOGUE)
        .write_message(&payload.encode_to_vec())
        .unwrap()
        .0
}

/// Registers alice's key at `address`; returns (lease id, token).
async fn register_alice(
    discovery: &Discovery,
    alice: &StaticKeypair,
    address: &str,
) -> (String, String) {
    let mut client = discovery.client().await;
    let request = chat_tests::proven(&mut client, alice, "alice", address).await;
    let r = client.register(request).await.unwrap().into_inner();
    (r.lease_id, r.lease_token)
}

/// Where `peer` lists alice, from `chat connections --json`.
async fn alice_address(peer: &PeerProcess) -> String {
    let (_, out, _) = peer.chat(&["connections", "--json"]).await;
    let list: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
    list.as_array()
        .into_iter()
        .flatten()
        .find(|c| c["name"] == "alice")
        .map(|c| c["address"].as_str().unwrap_or_default().to_owned())
        .unwrap_or_default()
}

#[tokio::test]
async fn a_captured_initiation_replayed_after_a_restart_is_refused_and_moves_nothing() {
    let discovery = Discovery::start().await;
    let dir = tempfile::tempdir().unwrap();
    let bob_dir = dir.path().join("bob");
    let bob = PeerProcess::start("bob", &discovery.url(), &bob_dir).await;
    let alice = StaticKeypair::generate();
    let (lease_id, lease_token) = register_alice(&discovery, &alice, "127.0.0.1:9").await;
    // Listed, not yet met: no contact until her handshake shows an admission.
    bob.wait_listed(&["alice"], true).await;
    let bob_key = discovery.listed_key("bob").await;

    // Alice handshakes with bob; an attacker on the wire keeps a copy.
    let captured = initiation(&alice, bob_key, "127.0.0.1:9");
    let mut client = PeerClient::connect(format!("http://{}", bob.process.addr))
        .await
        .unwrap();
    client
        .handshake(chat_tests::handshake_request(&bob_key, captured.clone()))
        .await
        .expect("alice's own handshake is answered");

    // Alice moves: she leaves and registers at her new address.
    discovery
        .client()
        .await
        .leave(LeaveRequest {
            lease_id,
            lease_token,
        })
        .await
        .unwrap();
    register_alice(&discovery, &alice, "127.0.0.1:10").await;

    // Bob restarts; the attacker replays the captured message to him.
    let status = bob.process.terminate().await;
    assert!(status.success());
    let bob = PeerProcess::start("bob", &discovery.url(), &bob_dir).await;
    bob.wait_connections(&["alice"]).await;
    eventually("bob to list alice at her new address", || {
        let bob = &bob;
        async move { alice_address(bob).await == "127.0.0.1:10" }
    })
    .await;
    let mut client = PeerClient::connect(format!("http://{}", bob.process.addr))
        .await
        .unwrap();
    let err = client
        .handshake(chat_tests::handshake_request(&bob_key, captured))
        .await
        .expect_err("a replayed initiation must be refused after a restart too");
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    assert!(err.message().contains("not newer"), "{}", err.message());
    assert_eq!(
        alice_address(&bob).await,
        "127.0.0.1:10",
        "the old payload's address must not replace the new one"
    );
}

#[tokio::test]
async fn a_data_dir_made_open_by_hand_is_made_private_and_other_users_are_refused() {
    let discovery = Discovery::start().await;
    let dir = tempfile::tempdir().unwrap();
    // The other user must reach the data dir's parent and run `chat`, from
    // wherever this checkout is (a 0700 temp dir, say): both live in a
    // folder open to everyone.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let chat = dir.path().join("chat");
    std::fs::copy(binary("chat"), &chat).unwrap();
    // Made by hand, readable by everyone, with a file already in it.
    let data = dir.path().join("carol");
    std::fs::create_dir(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(data.join("known_peers"), "").unwrap();
    std::fs::set_permissions(
        data.join("known_peers"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();

    let carol = PeerProcess::start("carol", &discovery.url(), &data).await;
    let (ok, _, err) = carol.chat(&["send", "private words"]).await;
    assert!(ok, "{err}");
    // The member cache is written within a second of a change.
    eventually("the member cache to be written", || {
        let exists = data.join("peers").exists();
        async move { exists }
    })
    .await;

    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&data), 0o700, "the data dir is made private");
    let mut files = Vec::new();
    for entry in std::fs::read_dir(&data).unwrap() {
        let path = entry.unwrap().path();
        files.push(path.file_name().unwrap().to_string_lossy().into_owned());
        assert_eq!(
            mode(&path) & 0o077,
            0,
            "{} is {:o}",
            path.display(),
            mode(&path)
        );
    }
    for expected in [
        "identity.key",
        "known_peers",
        "peers",
        "history.db",
        "control.sock",
    ] {
        assert!(
            files.iter().any(|f| f == expected),
            "{expected} missing from {files:?}"
        );
    }

    // Another local user cannot drive carol's peer, and is told why.
    let other = tokio::process::Command::new("runuser")
        .args(["-u", "nobody", "--"])
        .arg(&chat)
        .arg("--data-dir")
        .arg(&data)
        .arg("history")
        .output()
        .await
        .expect("runuser (util-linux) runs chat as another user");
    let err = String::from_utf8_lossy(&other.stderr);
    assert!(!other.status.success());
    assert!(
        err.contains("chat: permission denied") && err.contains("only its owner may drive it"),
        "{err}"
    );
}
