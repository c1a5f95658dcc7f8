//! Issue 24, item 7: Discovery's caps, filled by an outsider, do not lock a
//! new member out. Its registration is "not now": it runs unlisted, learns
//! who is online, and the members take it by its credential, so it sends
//! and receives from the start; once there is room, it registers.

use chat_noise::StaticKeypair;
use chat_proto::v1::LeaveRequest;
use chat_tests::{Discovery, PeerProcess, delivered_to, eventually, wait_for_message};

#[tokio::test]
async fn a_full_registry_does_not_keep_a_new_member_out() {
    let discovery = Discovery::start_with(discovery_svc::Config {
        caps: discovery_svc::config::Caps {
            members: 3,
            per_source: 3,
        },
        ..Default::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let url = discovery.url();
    let alice = PeerProcess::found("alice", &url, &dir.path().join("alice")).await;
    let bob = alice
        .admit("bob", &[], &url, &dir.path().join("bob"), &[], None)
        .await;
    alice.wait_connections(&["bob"]).await;
    // An outsider takes the last place.
    let mut client = discovery.client().await;
    let outsider = StaticKeypair::generate();
    let request = chat_tests::proven(&mut client, &outsider, "filler", "127.0.0.1:9").await;
    let lease = client.register(request).await.unwrap().into_inner();

    let log = dir.path().join("carol.log");
    let carol = alice
        .admit(
            "carol",
            &[],
            &url,
            &dir.path().join("carol"),
            &[("RUST_LOG", "info")],
            Some(&log),
        )
        .await;
    let said = std::fs::read_to_string(&log).unwrap();
    assert!(said.contains("running unlisted"), "{said}");
    carol.wait_confirmed_by("alice").await;
    eventually("alice to take carol by her credential", || async {
        let (_, report, _) = alice.chat(&["send", "welcome carol"]).await;
        delivered_to(&report, "carol")
    })
    .await;
    wait_for_message(&carol.data_dir, "welcome carol").await;
    let (_, report, _) = carol.chat(&["send", "carol, unlisted"]).await;
    assert!(
        delivered_to(&report, "alice") && delivered_to(&report, "bob"),
        "{report}"
    );
    wait_for_message(&bob.data_dir, "carol, unlisted").await;

    // Room again: carol registers.
    client
        .leave(LeaveRequest {
            lease_id: lease.lease_id,
            lease_token: lease.lease_token,
        })
        .await
        .unwrap();
    eventually("carol to register", || async {
        let listed = discovery
            .client()
            .await
            .list(chat_proto::v1::ListRequest::default())
            .await
            .unwrap()
            .into_inner()
            .members;
        listed.iter().any(|m| m.name == "carol")
    })
    .await;
}
