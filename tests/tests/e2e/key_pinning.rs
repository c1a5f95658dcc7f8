//! Trust on first use: a peer whose key changes after the first handshake is
//! refused — in `chat send`'s report and in `chat connections` — until the
//! user runs `chat trust`.

use chat_tests::{Discovery, PeerProcess, chat_cli, eventually};

#[tokio::test]
async fn a_changed_key_is_refused_until_trusted() {
    let discovery = Discovery::start().await;
    let dir = tempfile::tempdir().unwrap();
    let alice = PeerProcess::start("alice", &discovery.url(), &dir.path().join("alice")).await;
    let bob = PeerProcess::start("bob", &discovery.url(), &dir.path().join("bob")).await;
    alice.wait_connections(&["bob"]).await;
    let (ok, out, _) = alice.chat(&["send", "first contact"]).await;
    assert!(
        ok && out.contains("bob") && out.contains("delivered"),
        "{out}"
    );

    // Bob gets a new identity (a new device, or an impostor): same name, new key.
    let bob_dir = bob.data_dir.clone();
    assert!(bob.process.terminate().await.success());
    std::fs::remove_file(bob_dir.join("identity.key")).unwrap();
    let bob = PeerProcess::start("bob", &discovery.url(), &bob_dir).await;
    eventually("alice to flag bob's new key", || {
        let d = alice.data_dir.clone();
        async move {
            chat_cli(&d, &["connections"])
                .await
                .1
                .contains("KEY CHANGED")
        }
    })
    .await;
    let (_, connections, _) = alice.chat(&["connections"]).await;
    assert!(
        connections.contains("WARNING: bob's key changed"),
        "{connections}"
    );

    let (ok, out, _) = alice.chat(&["send", "are you bob?"]).await;
    assert!(ok);
    assert!(
        out.contains("refused") && out.contains("chat trust bob"),
        "{out}"
    );
    let (ok, out, _) = alice.chat(&["handshake", "bob"]).await;
    assert!(!ok, "no handshake with an untrusted key: {out}");

    let (ok, out, err) = alice.chat(&["trust", "bob"]).await;
    assert!(ok, "{err}");
    assert!(out.contains("trusted bob"), "{out}");
    let (ok, out, _) = alice.chat(&["send", "welcome back"]).await;
    assert!(ok && out.contains("delivered"), "{out}");
    // (Bob's history, not his console: the message may reach him by his
    // start-up history sync before the direct delivery, which is then a
    // duplicate and not printed again.)
    chat_tests::wait_for_message(&bob.data_dir, "welcome back").await;
    let (_, bobs, _) = bob.chat(&["history"]).await;
    assert!(
        !bobs.contains("are you bob?"),
        "the refused message never reached the new key: {bobs}"
    );
    // The pin survives alice's restart.
    let known = std::fs::read_to_string(alice.data_dir.join("known_peers")).unwrap();
    assert_eq!(known.lines().count(), 1, "{known}");
}
