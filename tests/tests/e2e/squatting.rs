//! Issue 24, item 3: an outsider who takes a member's name at Discovery
//! while the member is away cannot keep it out. The member's peer starts
//! anyway (unlisted, retrying), reaches the members who know its pinned
//! key and is reached by them; they keep its proven key whatever Discovery
//! lists, and never trust the squatter's key, which shows no admission.

use chat_noise::StaticKeypair;
use chat_proto::v1::LeaveRequest;
use chat_tests::{Discovery, PeerProcess, delivered_to, eventually, wait_for_message};

#[tokio::test]
async fn a_name_taken_at_discovery_does_not_lock_a_member_out() {
    let discovery = Discovery::start().await;
    let dir = tempfile::tempdir().unwrap();
    let url = discovery.url();
    let alice = PeerProcess::found("alice", &url, &dir.path().join("alice")).await;
    let bob_dir = dir.path().join("bob");
    let bob = alice.admit("bob", &[], &url, &bob_dir, &[], None).await;
    alice.wait_connections(&["bob"]).await;
    let (_, report, _) = alice.chat(&["send", "hello bob"]).await;
    assert!(delivered_to(&report, "bob"), "{report}");

    // Bob stops; at once an outsider registers "bob" with its own key.
    assert!(bob.process.terminate().await.success());
    let mut client = discovery.client().await;
    let squatter = StaticKeypair::generate();
    let request = chat_tests::proven(&mut client, &squatter, "bob", "127.0.0.1:9").await;
    let lease = client.register(request).await.unwrap().into_inner();
    eventually("alice to see the squatter's key", || async {
        alice.chat(&["connections"]).await.1.contains("KEY CHANGED")
    })
    .await;
    // The squatter's key shows no admission: alice does not trust it.
    let (ok, _, err) = alice.chat(&["trust", "bob"]).await;
    assert!(!ok && err.contains("did not show an admission"), "{err}");

    // Bob starts again: the name is taken, and he runs all the same.
    let log = dir.path().join("bob-again.log");
    let mut bob =
        PeerProcess::start_logged("bob", &url, &bob_dir, &[("RUST_LOG", "info")], Some(&log)).await;
    let said = std::fs::read_to_string(&log).unwrap();
    assert!(said.contains("running unlisted"), "{said}");
    eventually("alice to reach bob under his pinned key", || async {
        let (_, out, _) = alice.chat(&["connections"]).await;
        out.contains("Discovery lists another key for bob") && !out.contains("KEY CHANGED")
    })
    .await;
    let (_, report, _) = alice.chat(&["send", "while the name is taken"]).await;
    assert!(delivered_to(&report, "bob"), "{report}");
    wait_for_message(&bob.data_dir, "while the name is taken").await;
    let (_, report, _) = bob.chat(&["send", "bob here, unlisted"]).await;
    assert!(delivered_to(&report, "alice"), "{report}");
    wait_for_message(&alice.data_dir, "bob here, unlisted").await;

    // The squatter leaves and takes the name again: alice keeps bob's key.
    client
        .leave(LeaveRequest {
            lease_id: lease.lease_id,
            lease_token: lease.lease_token,
        })
        .await
        .unwrap();
    let request = chat_tests::proven(&mut client, &squatter, "bob", "127.0.0.1:9").await;
    if let Ok(lease) = client.register(request).await {
        // (Bob may have registered first: then the name is his again.)
        let lease = lease.into_inner();
        let (_, report, _) = alice.chat(&["send", "squatted twice"]).await;
        assert!(delivered_to(&report, "bob"), "{report}");
        client
            .leave(LeaveRequest {
                lease_id: lease.lease_id,
                lease_token: lease.lease_token,
            })
            .await
            .unwrap();
    }
    // Once the name is free, bob holds it again at Discovery.
    eventually("bob to register again", || async {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("the name is free at Discovery again")
    })
    .await;
    assert!(
        bob.process.child.try_wait().unwrap().is_none(),
        "bob's peer kept running"
    );
    let (_, report, _) = alice.chat(&["send", "name back"]).await;
    assert!(delivered_to(&report, "bob"), "{report}");
}
