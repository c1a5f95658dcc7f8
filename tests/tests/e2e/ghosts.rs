//! Issue 16's mass registration: members that registered once and expired
//! do not stay in every peer's contacts, member cache and sends.

use std::time::Duration;

use chat_noise::StaticKeypair;
use chat_tests::{Discovery, PeerProcess, eventually};

#[tokio::test]
async fn expired_registrations_are_forgotten_after_the_grace_period() {
    let discovery = Discovery::start_with(discovery_svc::Config {
        ttl: Duration::from_secs(1),
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

    // 100 registrations with keys of their own, never renewed.
    let mut client = discovery.client().await;
    for i in 0..100 {
        let key = StaticKeypair::generate();
        let request =
            chat_tests::proven(&mut client, &key, &format!("ghost{i}"), "127.0.0.1:9").await;
        client.register(request).await.unwrap();
    }
    eventually("alice to list the ghosts", || {
        let alice = &alice;
        async move {
            let (_, out, _) = alice.chat(&["connections"]).await;
            out.contains("ghost99")
        }
    })
    .await;
    let (_, report, _) = alice.chat(&["send", "while they haunt"]).await;
    assert!(
        report.contains("ghost"),
        "ghosts get queued copies: {report}"
    );

    // They expire (1 s), and after the grace period (2 s) alice forgets
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
