//! Faults with real processes: everyone sending at the same instant (the
//! original deadlocked), and a recipient killed in the middle of a broadcast.

use std::sync::Arc;

use chat_proto::v1::{SendRequest, delivery::Status};
use chat_tests::{Discovery, PeerProcess, eventually, full_history};
use tokio::sync::Barrier;

async fn network(discovery: &Discovery, dir: &std::path::Path, names: &[&str]) -> Vec<PeerProcess> {
    chat_tests::start_network(&discovery.url(), dir, names).await
}

/// `rounds` rounds in which every peer sends at the same instant.
async fn simultaneous_rounds(names: &[&str], rounds: usize) {
    let discovery = Discovery::start().await;
    let dir = tempfile::tempdir().unwrap();
    let peers = network(&discovery, dir.path(), names).await;
    let barrier = Arc::new(Barrier::new(peers.len()));
    let mut tasks = Vec::new();
    for p in &peers {
        let (mut control, barrier, name) = (p.control().await, barrier.clone(), p.name.clone());
        let others = names.len() - 1;
        tasks.push(tokio::spawn(async move {
            for round in 0..rounds {
                barrier.wait().await;
                let r = control
                    .send(SendRequest {
                        text: format!("{name} round {round}"),
                        id: String::new(),
                    })
                    .await
                    .unwrap()
                    .into_inner();
                assert_eq!(r.deliveries.len(), others);
                assert!(
                    r.deliveries.iter().all(|d| d.status() == Status::Delivered),
                    "{r:?}"
                );
            }
        }));
    }
    for t in tasks {
        chat_tests::within("all rounds (a deadlock would hang here)", t)
            .await
            .unwrap();
    }
    let expected = names.len() * rounds;
    let mut first: Option<Vec<String>> = None;
    for p in &peers {
        let mut control = p.control().await;
        eventually("every message everywhere", || {
            let mut c = control.clone();
            async move { full_history(&mut c).await.len() == expected }
        })
        .await;
        let ids: Vec<String> = full_history(&mut control)
            .await
            .into_iter()
            .map(|m| m.id)
            .collect();
        let unique: std::collections::HashSet<&String> = ids.iter().collect();
        assert_eq!(
            unique.len(),
            expected,
            "each message exactly once at {}",
            p.name
        );
        match &first {
            None => first = Some(ids),
            Some(f) => assert_eq!(f, &ids, "same order at {}", p.name),
        }
    }
}

#[tokio::test]
async fn two_peers_sending_at_the_same_instant_for_100_rounds() {
    simultaneous_rounds(&["a1", "a2"], 100).await;
}

#[tokio::test]
async fn five_peers_sending_at_the_same_instant_for_100_rounds() {
    simultaneous_rounds(&["b1", "b2", "b3", "b4", "b5"], 100).await;
}

#[tokio::test]
async fn a_recipient_killed_mid_broadcast_gets_everything_when_it_returns() {
    let discovery = Discovery::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut peers = network(&discovery, dir.path(), &["alice", "bob", "carol", "dave"]).await;
    let carol = peers.remove(2);
    let mut control = peers[0].control().await;

    let mut sent = Vec::new();
    let mut carol_process = Some(carol.process);
    let mut missed_by_carol = 0;
    for i in 0..60 {
        if i == 20 {
            carol_process.take().unwrap().child.kill().await.unwrap();
        }
        let r = control
            .send(SendRequest {
                text: format!("broadcast {i}"),
                id: String::new(),
            })
            .await
            .unwrap()
            .into_inner();
        for d in &r.deliveries {
            match d.peer.as_str() {
                "carol" if i >= 20 => {
                    assert_eq!(
                        d.status(),
                        Status::Queued,
                        "the report names who did not get it: {r:?}"
                    );
                    missed_by_carol += 1;
                }
                _ => assert_eq!(d.status(), Status::Delivered, "{r:?}"),
            }
        }
        sent.push(r.id);
    }
    assert_eq!(missed_by_carol, 40);
    for p in &peers {
        let mut c = p.control().await;
        let ids: Vec<String> = full_history(&mut c)
            .await
            .into_iter()
            .map(|m| m.id)
            .collect();
        assert_eq!(ids, sent, "{} got every broadcast, in order", p.name);
    }
    let carol = PeerProcess::start("carol", &discovery.url(), &carol.data_dir).await;
    let mut c = carol.control().await;
    eventually("carol to get all 60", || {
        let mut c = c.clone();
        async move { full_history(&mut c).await.len() == 60 }
    })
    .await;
    let ids: Vec<String> = full_history(&mut c)
        .await
        .into_iter()
        .map(|m| m.id)
        .collect();
    assert_eq!(
        ids, sent,
        "carol has every broadcast exactly once, in order"
    );
    eventually("alice's outbox for carol to drain", || {
        let alice_dir = peers[0].data_dir.clone();
        async move {
            let (_, out, _) = chat_tests::chat_cli(&alice_dir, &["connections", "--json"]).await;
            let list: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
            list.as_array()
                .and_then(|a| a.iter().find(|c| c["name"] == "carol"))
                .is_some_and(|c| c["queued"] == 0)
        }
    })
    .await;
}
