//! Removed means removed (issue 24, findings 1 and 2), with real processes
//! and the real `chat` CLI: a removal is kept across restarts of the
//! remover and of the others, whatever number of removals come after it,
//! and reaches a member that was stopped while it was made, by
//! reconciling removal sets when they meet again.

use std::path::Path;

use chat_tests::{Discovery, PeerProcess, eventually, full_history, wait_for_message};

/// More removals than a handshake ever carried (64) or carries now (8).
const LATER_REMOVALS: usize = 70;

/// The texts in the history of the peer with `data_dir`.
async fn texts(data_dir: &Path) -> Vec<String> {
    let mut client = peer_svc::control_client::connect(data_dir)
        .await
        .expect("control socket");
    full_history(&mut client)
        .await
        .into_iter()
        .map(|m| m.text)
        .collect()
}

/// Starts the member `name` again in `dir` (its data dir holds its
/// membership), logging at info.
async fn restart(name: &str, url: &str, dir: &Path) -> PeerProcess {
    let log = dir.join(format!("{name}.log"));
    PeerProcess::start_logged(
        name,
        url,
        &dir.join(name),
        &[("RUST_LOG", "info")],
        Some(&log),
    )
    .await
}

/// `who` cannot handshake with `with`: one of them knows the other was removed.
async fn refused(who: &PeerProcess, with: &str) {
    let (ok, _, err) = who.chat(&["handshake", with]).await;
    assert!(
        !ok && err.contains("removed from this network"),
        "{}→{with}: {err}",
        who.name
    );
}

/// `peer` eventually refuses xavier when it starts a handshake with him.
async fn eventually_refuses_xavier(peer: &PeerProcess) {
    eventually(
        &format!("{} to know xavier was removed", peer.name),
        || async move {
            let (ok, _, err) = peer.chat(&["handshake", "xavier"]).await;
            !ok && err.contains("removed from this network")
        },
    )
    .await;
}

#[tokio::test]
async fn a_removal_outlives_restarts_and_newer_removals_and_reaches_who_was_away() {
    let discovery = Discovery::start().await;
    let dir = tempfile::tempdir().unwrap();
    let url = discovery.url();
    let alice = PeerProcess::found("alice", &url, &dir.path().join("alice")).await;
    let mut joined = Vec::new();
    for name in ["bob", "xavier"] {
        let log = dir.path().join(format!("{name}.log"));
        let member = alice
            .admit(
                name,
                &["--all-history"],
                &url,
                &dir.path().join(name),
                &[("RUST_LOG", "info")],
                Some(&log),
            )
            .await;
        joined.push(member);
    }
    let xavier = joined.pop().unwrap();
    let bob = joined.pop().unwrap();
    alice.wait_connections(&["bob", "xavier"]).await;
    bob.wait_connections(&["alice", "xavier"]).await;
    // Bob and xavier have talked: each knows the other's admission.
    let (ok, report, err) = xavier.chat(&["send", "hello from xavier"]).await;
    assert!(
        ok && report.matches("delivered").count() == 2,
        "{report}{err}"
    );
    wait_for_message(&bob.data_dir, "hello from xavier").await;

    // Bob is away while alice removes xavier, and then many invitations
    // nobody used (any member may do that with its own).
    assert!(bob.process.terminate().await.success());
    let (ok, out, err) = alice.chat(&["remove", "xavier"]).await;
    assert!(ok && out.contains("removed xavier"), "{out}{err}");
    for i in 0..LATER_REMOVALS {
        let name = format!("unused{i}");
        let (ok, _, err) = alice.chat(&["invite", &name]).await;
        assert!(ok, "{err}");
        let (ok, _, err) = alice.chat(&["remove", &name]).await;
        assert!(ok, "{err}");
    }

    // The remover restarts: xavier stays removed, from both sides.
    let alice_dir = alice.data_dir.clone();
    assert!(alice.process.terminate().await.success());
    let alice = PeerProcess::start("alice", &url, &alice_dir).await;
    eventually("xavier to list alice's new address", || async {
        xavier.chat(&["refresh"]).await;
        let (ok, _, err) = xavier.chat(&["handshake", "alice"]).await;
        !ok && err.contains("removed from this network")
    })
    .await;
    refused(&alice, "xavier").await;

    // Bob comes back: meeting alice, he learns the removal made while he
    // was away, though seventy newer ones came after it.
    let bob = restart("bob", &url, dir.path()).await;
    eventually_refuses_xavier(&bob).await;
    refused(&xavier, "bob").await;
    let (_, report, _) = xavier.chat(&["send", "still here?"]).await;
    assert!(
        !report
            .lines()
            .any(|l| l.split_whitespace().nth(1) == Some("delivered")),
        "{report}"
    );
    let (ok, report, err) = alice.chat(&["send", "not for xavier"]).await;
    assert!(ok, "{err}");
    let xavier_line = report
        .lines()
        .find(|l| l.contains("xavier"))
        .unwrap_or_default();
    assert!(
        xavier_line.is_empty() || xavier_line.contains("removed from the network"),
        "{report}"
    );

    // And bob keeps it across his own restart.
    let bob_dir = bob.data_dir.clone();
    assert!(bob.process.terminate().await.success());
    let bob = PeerProcess::start("bob", &url, &bob_dir).await;
    refused(&bob, "xavier").await;
    refused(&xavier, "bob").await;
    wait_for_message(&bob.data_dir, "not for xavier").await;
    for peer in [&alice.data_dir, &bob.data_dir] {
        assert!(!texts(peer).await.contains(&"still here?".to_owned()));
    }
    assert!(
        !texts(&xavier.data_dir)
            .await
            .contains(&"not for xavier".to_owned())
    );
}

/// Issue 25: a member whose device was lost is removed and invited again,
/// the documented way (`chat remove`, `chat invite`, join with the new
/// token, `chat trust`). The new identity receives like any member, from
/// the remover and from a member that did not remove it, before and after
/// either restarts, and what was said while it was away reaches it.
#[tokio::test]
async fn a_member_removed_and_invited_again_receives_from_everyone() {
    let discovery = Discovery::start().await;
    let dir = tempfile::tempdir().unwrap();
    let url = discovery.url();
    let alice = PeerProcess::found("alice", &url, &dir.path().join("alice")).await;
    let bob = alice
        .admit(
            "bob",
            &["--all-history"],
            &url,
            &dir.path().join("bob"),
            &[],
            None,
        )
        .await;
    let carol_dir = dir.path().join("carol");
    let carol = alice
        .admit("carol", &["--all-history"], &url, &carol_dir, &[], None)
        .await;
    for peer in [&alice, &bob, &carol] {
        let others: Vec<&str> = ["alice", "bob", "carol"]
            .into_iter()
            .filter(|n| *n != peer.name)
            .collect();
        peer.wait_connections(&others).await;
    }
    let (ok, report, err) = bob.chat(&["send", "before the loss"]).await;
    assert!(
        ok && report.matches("delivered").count() == 2,
        "{report}{err}"
    );

    // Carol's device is lost; alice removes that identity and invites her anew.
    assert!(carol.process.terminate().await.success());
    std::fs::remove_dir_all(&carol_dir).unwrap();
    let (ok, out, err) = alice.chat(&["remove", "carol"]).await;
    assert!(ok && out.contains("removed carol"), "{out}{err}");
    let (ok, _, err) = bob.chat(&["send", "while carol was away"]).await;
    assert!(ok, "{err}");
    let carol = alice
        .admit("carol", &["--all-history"], &url, &carol_dir, &[], None)
        .await;
    // Bob, who did not remove her, is told what to do about her new key,
    // not that she was removed (the removal was of her old key).
    let (ok, report, err) = bob.chat(&["send", "who is this?"]).await;
    assert!(ok, "{err}");
    let line = report
        .lines()
        .find(|l| l.trim_start().starts_with("carol "))
        .unwrap_or_default();
    assert!(
        line.contains("key changed") && line.contains("chat trust carol"),
        "{report}"
    );
    for peer in [&alice, &bob] {
        eventually(
            &format!("{} to trust carol's new key", peer.name),
            || async {
                let (ok, _, err) = peer.chat(&["trust", "carol"]).await;
                ok || err.contains("not changed")
            },
        )
        .await;
    }
    wait_for_message(&carol_dir, "while carol was away").await;

    // Both the remover and the other member deliver to her.
    for (peer, text) in [
        (&alice, "welcome back from alice"),
        (&bob, "welcome back from bob"),
    ] {
        let (ok, report, err) = peer.chat(&["send", text]).await;
        assert!(ok, "{err}");
        assert!(
            chat_tests::delivered_to(&report, "carol"),
            "{}: {report}",
            peer.name
        );
        wait_for_message(&carol_dir, text).await;
    }

    // The same after the remover restarts and after she restarts.
    let alice_dir = alice.data_dir.clone();
    assert!(alice.process.terminate().await.success());
    let alice = PeerProcess::start("alice", &url, &alice_dir).await;
    alice.wait_connections(&["bob", "carol"]).await;
    let (ok, report, err) = alice.chat(&["send", "after alice restarted"]).await;
    assert!(
        ok && chat_tests::delivered_to(&report, "carol"),
        "{report}{err}"
    );
    assert!(carol.process.terminate().await.success());
    let carol = PeerProcess::start("carol", &url, &carol_dir).await;
    carol.wait_connections(&["alice", "bob"]).await;
    for peer in [&alice, &bob] {
        let text = format!("after carol restarted, from {}", peer.name);
        let (ok, report, err) = peer.chat(&["send", &text]).await;
        assert!(
            ok && chat_tests::delivered_to(&report, "carol"),
            "{report}{err}"
        );
        wait_for_message(&carol_dir, &text).await;
    }
    let all = texts(&carol_dir).await;
    for text in [
        "before the loss",
        "while carol was away",
        "after alice restarted",
    ] {
        assert!(all.contains(&text.to_owned()), "{all:?}");
    }
}
