//! Issue 16's mass registration: members that registered once and expired
//! do not stay in every peer's contacts, member cache and sends; while they
//! are listed, they get nothing (they never showed an admission).

use std::time::Duration;

use chat_noise::StaticKeypair;
use chat_tests::{Discovery, PeerProcess, eventually};

/// How many ghosts register: past one Connections page (1000).
const GHOSTS: usize = 1_100;

#[tokio::test]
async fn expired_registrations_are_forgotten_after_the_grace_period() {
    let discovery = Discovery::start_with(discovery_svc::Config {
        ttl: Duration::from_secs(10),
        caps: discovery_svc::config::Caps {
            members: 2 * GHOSTS,
            per_source: 2 * GHOSTS,
        },
        ..Default::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let url = discovery.url();
    let alice = PeerProcess::start_with_args(
        "alice",
        &url,
        &dir.path().join("alice"),
        &["--forget-offline-after", "2s"],
        &[],
        None,
    )
    .await;
    let bob = PeerProcess::start("bob", &url, &dir.path().join("bob")).await;
    alice.wait_connections(&["bob"]).await;

    // 1,100 registrations with keys of their own, never renewed.
    let mut client = discovery.client().await;
    let info = client
        .info(chat_proto::v1::InfoRequest {})
        .await
        .unwrap()
        .into_inner();
    for i in 0..GHOSTS {
        let request = chat_proto::registration::request(
            &StaticKeypair::generate(),
            &info,
            &format!("ghost{i:04}"),
            "127.0.0.1:9",
        )
        .unwrap();
        client.register(request).await.unwrap();
    }
    // The CLI pages: every ghost is listed, past one answer's 1000.
    eventually("alice to list the ghosts", || {
        let alice = &alice;
        async move {
            let (_, out, _) = alice.chat(&["connections", "--all", "--json"]).await;
            let list: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap_or_default();
            list.len() == GHOSTS + 1
                && list
                    .iter()
                    .filter(|c| c["session"] == "NOT A MEMBER")
                    .count()
                    == GHOSTS
        }
    })
    .await;
    // They showed no admission: they are no contacts (issue 26, item 6),
    // get no copy, queued or not (issue 24, item 5), and no send names them.
    alice.wait_connections(&["bob"]).await;
    for text in ["while they haunt", "still haunted"] {
        let (ok, report, err) = alice.chat(&["send", text]).await;
        assert!(ok, "{err}");
        assert!(!report.contains("ghost"), "{report}");
        assert!(
            report.contains("bob") && report.contains("delivered"),
            "{report}"
        );
    }
    let (_, out, _) = alice.chat(&["connections", "--all", "--json"]).await;
    let list: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    let queued: u64 = list.iter().map(|c| c["queued"].as_u64().unwrap()).sum();
    assert_eq!(
        queued, 0,
        "nothing is queued for names only Discovery lists"
    );

    // They expire (10 s), and after the grace period (2 s) alice forgets
    // them: her list, her member cache and her sends hold only bob again.
    alice.wait_connections(&["bob"]).await;
    let cache = alice.data_dir.join("peers");
    eventually("the member cache to drop the ghosts", || {
        let text = std::fs::read_to_string(&cache).unwrap_or_default();
        async move { !text.contains("ghost") && text.contains("bob") }
    })
    .await;
    let (ok, report, err) = alice.chat(&["send", "only bob now"]).await;
    assert!(ok, "{err}");
    assert!(!report.contains("ghost"), "{report}");
    assert!(
        report.contains("bob") && report.contains("delivered"),
        "{report}"
    );
    drop(bob);
}
