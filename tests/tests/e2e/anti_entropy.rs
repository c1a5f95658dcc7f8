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
