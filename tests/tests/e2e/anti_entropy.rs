//! Issue 25's first scenario, with real processes and `chat`: user2 and
//! user3 stop (SIGTERM, as `make down` does), user1 sends two messages and
//! stops, user2 and user3 start, then user1 starts again. Feed
//! reconciliation (docs/protocol.md §9.6) brings both messages to every
//! peer within 30 s of the last start, stored once each.

use std::{path::Path, time::Duration};

use chat_tests::{Discovery, PeerProcess, full_history};

/// How many copies of `text` the peer with `data_dir` holds.
async fn copies(data_dir: &Path, text: &str) -> usize {
    let Ok(mut client) = peer_svc::control_client::connect(data_dir).await else {
        return 0;
    };
    full_history(&mut client)
        .await
        .iter()
        .filter(|m| m.text == text)
        .count()
}

#[tokio::test]
async fn messages_sent_while_the_others_were_stopped_reach_them_whatever_the_order() {
    let discovery = Discovery::start().await;
    let dir = tempfile::tempdir().unwrap();
    let url = discovery.url();
    let start = |name: &'static str| {
        let url = url.clone();
        let data_dir = dir.path().join(name);
        async move { PeerProcess::start(name, &url, &data_dir).await }
    };
    let user1 = start("user1").await;
    let user2 = start("user2").await;
    let user3 = start("user3").await;
    for (peer, others) in [
        (&user1, ["user2", "user3"]),
        (&user2, ["user1", "user3"]),
        (&user3, ["user1", "user2"]),
    ] {
        peer.wait_connections(&others).await;
    }
    let (ok, _, err) = user1.chat(&["send", "hello all"]).await;
    assert!(ok, "{err}");

    assert!(user2.process.terminate().await.success());
    assert!(user3.process.terminate().await.success());
    let texts = ["while you were away 1", "while you were away 2"];
    for text in texts {
        let (ok, report, err) = user1.chat(&["send", text]).await;
        assert!(ok, "{err}");
        // A member is a member while it is offline: the report names both,
        // as owed the message, not "no other peers are connected".
        for away in ["user2", "user3"] {
            assert!(
                report.lines().any(|l| {
                    let l = l.trim_start();
                    l.starts_with(away) && l.contains("queued")
                }),
                "{report}"
            );
        }
    }
    assert!(user1.process.terminate().await.success());
    let user2 = start("user2").await;
    let user3 = start("user3").await;
    let user1 = start("user1").await;

    let everyone = [&user1, &user2, &user3];
    let all_there = async {
        loop {
            let mut missing = Vec::new();
            for peer in everyone {
                for text in texts {
                    if copies(&peer.data_dir, text).await != 1 {
                        missing.push(format!("{}: {text}", peer.name));
                    }
                }
            }
            if missing.is_empty() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(30), all_there)
        .await
        .expect("every peer holds both messages, once, within 30 s of the last start");
    for peer in everyone {
        let (ok, out, _) = peer.chat(&["history", "--verify"]).await;
        assert!(ok, "{}: {out}", peer.name);
    }
}

/// A member admitted to history from its admission on holds no older
/// message of any feed. Comparing feeds with members that hold all of them
/// must not bring back, at every comparison, everything since its
/// admission: it pulls after what it holds, and gets nothing it has.
#[tokio::test]
async fn a_member_with_history_from_its_admission_pulls_nothing_it_holds() {
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
    alice.wait_connections(&["bob"]).await;
    for text in ["alice before carol 1", "alice before carol 2"] {
        let (ok, _, err) = alice.chat(&["send", text]).await;
        assert!(ok, "{err}");
    }
    let (ok, _, err) = bob.chat(&["send", "bob before carol"]).await;
    assert!(ok, "{err}");
    let carol_dir = dir.path().join("carol");
    let carol = alice.admit("carol", &[], &url, &carol_dir, &[], None).await;
    carol.wait_connections(&["alice", "bob"]).await;
    for (peer, text) in [(&alice, "alice after carol"), (&bob, "bob after carol")] {
        let (ok, _, err) = peer.chat(&["send", text]).await;
        assert!(ok, "{err}");
        chat_tests::wait_for_message(&carol_dir, text).await;
    }

    // Carol starts again: her feeds differ from theirs (they hold what
    // came before her), so she compares with both.
    assert!(carol.process.terminate().await.success());
    let log = dir.path().join("carol-again.log");
    let carol = PeerProcess::start_logged(
        "carol",
        &url,
        &carol_dir,
        &[("RUST_LOG", "info,peer_svc::feed_sync=debug")],
        Some(&log),
    )
    .await;
    let exchanges = |with: &str| {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .filter(|l| {
                (l.contains("feeds compared") || l.contains("feeds reconciled"))
                    && (l.contains(&format!("with={with}")) || l.contains(&format!("from={with}")))
            })
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    chat_tests::eventually("carol to compare feeds with alice and bob", || async {
        !exchanges("alice").is_empty() && !exchanges("bob").is_empty()
    })
    .await;
    for line in exchanges("alice").into_iter().chain(exchanges("bob")) {
        assert!(line.contains(" items=0 "), "{line}");
    }
    let texts: Vec<String> = full_history(&mut carol.control().await)
        .await
        .into_iter()
        .map(|m| m.text)
        .collect();
    assert_eq!(texts, ["alice after carol", "bob after carol"]);
}
