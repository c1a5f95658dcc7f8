//! Churn: 20 real peers, 15 of which join and leave at random for a bounded
//! time while the 5 that stay keep sending. Every message sent among the
//! peers that stayed arrives exactly once, in the same order everywhere.

use std::{collections::HashSet, time::Duration};

use chat_proto::v1::SendRequest;
use chat_tests::{Discovery, PeerProcess, eventually, full_history};
use rand::RngExt;

const STAYING: usize = 5;
const CHURNING: usize = 15;
/// How long the churn lasts at least, and how many joins and leaves it
/// makes at least (on a loaded machine, the count takes longer).
const CHURN_FOR: Duration = Duration::from_secs(6);
const MIN_FLIPS: usize = 21;

#[tokio::test]
async fn twenty_peers_churning_lose_nothing_among_those_that_stay() {
    let discovery = Discovery::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut staying = Vec::new();
    for i in 0..STAYING {
        let name = format!("stay{i}");
        staying.push(PeerProcess::start(&name, &discovery.url(), &dir.path().join(&name)).await);
    }
    let names: Vec<String> = staying.iter().map(|p| p.name.clone()).collect();
    for p in &staying {
        let others: Vec<&str> = names
            .iter()
            .filter(|n| **n != p.name)
            .map(String::as_str)
            .collect();
        p.wait_connections(&others).await;
    }

    // The churners: each repeatedly starts (on a fresh port), lives a
    // little, and leaves (SIGTERM, or kill -9 for some).
    let churn_dir = dir.path().to_owned();
    let url = discovery.url();
    let churning = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let churn_flag = churning.clone();
    let churn = tokio::spawn(async move {
        let deadline = tokio::time::Instant::now() + CHURN_FOR;
        let mut live: Vec<Option<PeerProcess>> = (0..CHURNING).map(|_| None).collect();
        let mut flips = 0;
        while tokio::time::Instant::now() < deadline || flips < MIN_FLIPS {
            // (ThreadRng is not Send: draw everything before awaiting.)
            let (i, hard_kill, pause_ms) = {
                let mut rng = rand::rng();
                (
                    rng.random_range(0..CHURNING),
                    rng.random_bool(0.3),
                    rng.random_range(10..80),
                )
            };
            match live[i].take() {
                Some(p) => {
                    if hard_kill {
                        let mut process = p.process;
                        let _ = process.child.kill().await;
                    } else {
                        p.process.terminate().await;
                    }
                }
                None => {
                    let name = format!("churn{i}");
                    live[i] = Some(PeerProcess::start(&name, &url, &churn_dir.join(&name)).await);
                }
            }
            flips += 1;
            tokio::time::sleep(Duration::from_millis(pause_ms)).await;
        }
        churn_flag.store(false, std::sync::atomic::Ordering::SeqCst);
        for p in live.into_iter().flatten() {
            p.process.terminate().await;
        }
    });

    // Meanwhile the staying peers send.
    let mut senders = Vec::new();
    for p in &staying {
        let mut control = p.control().await;
        let name = p.name.clone();
        let churning = churning.clone();
        senders.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            let mut n = 0;
            // Until the churn is over (and at least one message each).
            while n == 0 || churning.load(std::sync::atomic::Ordering::SeqCst) {
                let r = control
                    .send(SendRequest {
                        text: format!("{name} says {n}"),
                        id: String::new(),
                    })
                    .await
                    .unwrap()
                    .into_inner();
                ids.push(r.id);
                n += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            ids
        }));
    }
    let mut sent: Vec<String> = Vec::new();
    for s in senders {
        sent.extend(chat_tests::within("senders", s).await.unwrap());
    }
    // The churn ends only after MIN_FLIPS joins and leaves.
    chat_tests::within("churn", churn).await.unwrap();

    let expected: HashSet<&String> = sent.iter().collect();
    let mut order: Option<Vec<String>> = None;
    for p in &staying {
        let mut c = p.control().await;
        eventually(&format!("{} to hold every message", p.name), || {
            let mut c = c.clone();
            let expected = expected.clone();
            async move {
                let have: HashSet<String> = full_history(&mut c)
                    .await
                    .into_iter()
                    .filter(|m| m.sender.starts_with("stay"))
                    .map(|m| m.id)
                    .collect();
                expected.iter().all(|id| have.contains(*id))
            }
        })
        .await;
        let ids: Vec<String> = full_history(&mut c)
            .await
            .into_iter()
            .filter(|m| m.sender.starts_with("stay"))
            .map(|m| m.id)
            .collect();
        assert_eq!(ids.len(), sent.len(), "exactly once at {}", p.name);
        match &order {
            None => order = Some(ids),
            Some(o) => assert_eq!(o, &ids, "same order at {}", p.name),
        }
    }
}
