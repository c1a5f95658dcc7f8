//! Who may join and who may speak for a name, with real processes and the
//! real `chat` CLI: the invitation flow, removal, an outsider, and a name
//! hijacked at Discovery.

use std::path::Path;

use chat_noise::StaticKeypair;
use chat_proto::v1::{LeaveRequest, ListRequest};
use chat_tests::{
    Discovery, PeerProcess, binary, delivered_to, eventually, full_history, wait_for_message,
};
use tonic::Code;

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

/// `chat send TEXT --json`-free: the report lines of `chat send TEXT`.
async fn send(peer: &PeerProcess, text: &str) -> String {
    let (ok, out, err) = peer.chat(&["send", text]).await;
    assert!(ok, "{}: chat send failed: {err}", peer.name);
    out
}

/// True if a `chat send` report says some peer got the message.
fn delivered_to_any(report: &str) -> bool {
    // "  NAME  delivered", or "  NAME  queued: …" and the like.
    report
        .lines()
        .any(|l| l.split_whitespace().nth(1) == Some("delivered"))
}

/// Waits until `log` (a peer's stderr) contains `needle`.
async fn wait_log(log: &Path, needle: &str) {
    eventually(&format!("{needle:?} in {}", log.display()), || {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        async move { text.contains(needle) }
    })
    .await;
}

/// A member invites, a newcomer joins with the token and gets the history
/// its admission allows (all of it, or only from its invitation on), chats;
/// a member removed by whoever admitted it stops receiving, its messages are
/// refused, and re-joining with the same token under a new key is refused.
#[tokio::test]
async fn a_member_invites_a_newcomer_who_chats_until_removed() {
    let discovery = Discovery::start().await;
    let dir = tempfile::tempdir().unwrap();
    let url = discovery.url();
    let alice = PeerProcess::start_with_args(
        "alice",
        &url,
        &dir.path().join("alice"),
        &["--create-network"],
        &[],
        None,
    )
    .await;
    send(&alice, "before bob").await;

    // Alice invites bob with all history.
    let (ok, token, err) = alice.chat(&["invite", "bob", "--all-history"]).await;
    assert!(ok && token.starts_with("p2pchat-invite:"), "{err}");
    assert!(err.contains("pass it privately"), "{err}");
    let bob = PeerProcess::start_logged(
        "bob",
        &url,
        &dir.path().join("bob"),
        &[("CHAT_JOIN", token.trim())],
        None,
    )
    .await;
    alice.wait_connections(&["bob"]).await;
    bob.wait_connections(&["alice"]).await;
    wait_for_message(&bob.data_dir, "before bob").await;
    let report = send(&alice, "before carol").await;
    assert!(
        report.contains("bob") && report.contains("delivered"),
        "{report}"
    );

    // Bob, a member, invites carol: she gets what is said from now on.
    let (ok, token, err) = bob.chat(&["invite", "carol"]).await;
    assert!(ok, "{err}");
    let carol_log = dir.path().join("carol.log");
    let carol = PeerProcess::start_logged(
        "carol",
        &url,
        &dir.path().join("carol"),
        &[("CHAT_JOIN", token.trim()), ("RUST_LOG", "info")],
        Some(&carol_log),
    )
    .await;
    for (peer, others) in [
        (&alice, ["bob", "carol"]),
        (&bob, ["alice", "carol"]),
        (&carol, ["alice", "bob"]),
    ] {
        peer.wait_connections(&others).await;
    }
    wait_log(&carol_log, "history synced").await;
    let report = send(&alice, "hello carol").await;
    assert_eq!(report.matches("delivered").count(), 2, "{report}");
    let report = send(&carol, "carol here").await;
    assert_eq!(report.matches("delivered").count(), 2, "{report}");
    wait_for_message(&alice.data_dir, "carol here").await;
    let seen = texts(&carol.data_dir).await;
    assert!(seen.contains(&"hello carol".to_owned()), "{seen:?}");
    assert!(
        !seen.iter().any(|t| t.starts_with("before")),
        "carol was admitted from her invitation on: {seen:?}"
    );

    // Carol did not admit bob: she cannot remove him.
    let (ok, _, err) = carol.chat(&["remove", "bob"]).await;
    assert!(!ok && err.contains("PermissionDenied"), "{err}");
    assert!(
        err.contains("only the founder or a member who admitted bob"),
        "{err}"
    );

    // Bob admitted carol, so he can remove her; alice hears of it at once.
    let (ok, out, err) = bob.chat(&["remove", "carol"]).await;
    assert!(ok, "{err}");
    assert!(
        out.contains("removed carol") && out.contains("alice"),
        "{out}"
    );
    // A removed member is no contact: not named, nothing queued for her.
    let report = send(&alice, "after carol left").await;
    assert!(!report.contains("carol"), "{report}");
    assert!(
        !report.contains("queued"),
        "nothing is queued for carol: {report}"
    );
    wait_for_message(&bob.data_dir, "after carol left").await;
    let (_, report, _) = carol.chat(&["send", "still here?"]).await;
    assert!(!delivered_to_any(&report), "{report}");
    assert!(
        !texts(&carol.data_dir)
            .await
            .contains(&"after carol left".to_owned())
    );
    for peer in [&alice, &bob] {
        assert!(
            !texts(&peer.data_dir)
                .await
                .contains(&"still here?".to_owned())
        );
    }

    // Her future keys: a new data dir joining with the same token is a
    // member of nothing the others accept.
    let carol_dir = carol.data_dir.clone();
    assert!(carol.process.terminate().await.success());
    std::fs::remove_dir_all(&carol_dir).unwrap();
    let carol = PeerProcess::start_logged(
        "carol",
        &url,
        &carol_dir,
        &[("CHAT_JOIN", token.trim())],
        None,
    )
    .await;
    // Alice will not even trust carol's new key: it shows no admission
    // that is not removed (issue 24, item 3: a key is trusted only once it
    // shows one).
    eventually("alice to list carol's new key", || {
        let alice = &alice;
        async move {
            let (ok, _, err) = alice.chat(&["trust", "carol"]).await;
            !ok && err.contains("did not show an admission") && err.contains("removed")
        }
    })
    .await;
    // Her new key is refused (at alice's pin, before its credential; by
    // bob, for the revoked invitation); a refusal that shows the removal
    // tells her new peer it is no member (issue 26, item 4).
    eventually(
        "carol's new peer to learn the token was revoked",
        || async {
            let (ok, _, err) = carol.chat(&["handshake", "alice"]).await;
            assert!(!ok, "carol's new key was accepted");
            err.contains("bob removed this member")
        },
    )
    .await;
    let report = send(&alice, "not for carol").await;
    assert!(!delivered_to(&report, "carol"), "{report}");
    assert!(
        !texts(&carol_dir)
            .await
            .contains(&"not for carol".to_owned())
    );
}

/// Issue 15's second attack: a peer with a fresh data dir and no invitation
/// (open mode, or a network of its own) reaches every port and learns no
/// message and no history; without any choice a peer does not start.
#[tokio::test]
async fn an_outsider_gets_no_message_and_no_history() {
    let discovery = Discovery::start().await;
    let dir = tempfile::tempdir().unwrap();
    let url = discovery.url();
    let alice = PeerProcess::start("alice", &url, &dir.path().join("alice")).await;
    let bob = PeerProcess::start("bob", &url, &dir.path().join("bob")).await;
    alice.wait_connections(&["bob"]).await;
    send(&alice, "secret before eve").await;

    let eve =
        PeerProcess::start_with_args("eve", &url, &dir.path().join("eve"), &["--open"], &[], None)
            .await;
    let mallory = PeerProcess::start_with_args(
        "mallory",
        &url,
        &dir.path().join("mallory"),
        &["--create-network"],
        &[],
        None,
    )
    .await;
    // Discovery lists them; to alice they are no contacts (issue 26, item
    // 6): only `--all` shows them, and a send does not name them.
    eventually("alice to list eve and mallory as not members", || async {
        let (_, out, _) = alice.chat(&["connections", "--all", "--json"]).await;
        let list: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap_or_default();
        ["eve", "mallory"].iter().all(|name| {
            list.iter()
                .any(|c| c["name"] == *name && c["session"] == "NOT A MEMBER")
        })
    })
    .await;
    alice.wait_connections(&["bob"]).await;
    let report = send(&alice, "secret after eve").await;
    assert!(
        !report.contains("eve") && !report.contains("mallory"),
        "{report}"
    );
    wait_for_message(&bob.data_dir, "secret after eve").await;

    // They knock themselves: refused, and told why.
    let (ok, _, err) = eve.chat(&["handshake", "alice"]).await;
    assert!(!ok && err.contains("not a member of this network"), "{err}");
    let (ok, _, err) = mallory.chat(&["handshake", "bob"]).await;
    assert!(!ok && err.contains("another network"), "{err}");
    for outsider in [&eve, &mallory] {
        let seen = texts(&outsider.data_dir).await;
        assert!(
            !seen.iter().any(|t| t.starts_with("secret")),
            "{}: {seen:?}",
            outsider.name
        );
        let (_, report, _) = outsider.chat(&["send", "let me in"]).await;
        assert!(!delivered_to_any(&report), "{report}");
    }
    for member in [&alice, &bob] {
        assert!(
            !texts(&member.data_dir)
                .await
                .contains(&"let me in".to_owned())
        );
    }

    // A peer told nothing about joining does not start, and says how to.
    let out = tokio::process::Command::new(binary("peer-svc"))
        .args(["--name", "nobody", "--discovery", &url, "--data-dir"])
        .arg(dir.path().join("nobody"))
        .output()
        .await
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("not a member of any network") && err.contains("--join TOKEN"),
        "{err}"
    );
}

/// Issue 15's first attack: with bob offline and messages queued for him,
/// someone registers bob's key (refused: no proof), then the free name
/// with a key of its own, then leaves with that lease. Nothing queued for
/// bob is lost: he gets it, once, when he is back.
#[tokio::test]
async fn a_hijacked_name_that_leaves_loses_no_queued_message() {
    let discovery = Discovery::start_with(discovery_svc::Config {
        ttl: std::time::Duration::from_secs(1),
        ..Default::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let url = discovery.url();
    // Alice serves no history: what bob gets, he gets from her outbox.
    let alice = PeerProcess::start_with_args(
        "alice",
        &url,
        &dir.path().join("alice"),
        &["--share-history", "false"],
        &[],
        None,
    )
    .await;
    let bob_dir = dir.path().join("bob");
    let bob = PeerProcess::start("bob", &url, &bob_dir).await;
    alice.wait_connections(&["bob"]).await;
    // They have talked: alice pinned bob's key and knows his admission.
    let report = send(&alice, "hi bob").await;
    assert!(report.contains("delivered"), "{report}");
    let mut client = discovery.client().await;
    let bob_key = client
        .list(ListRequest::default())
        .await
        .unwrap()
        .into_inner()
        .members
        .into_iter()
        .find(|m| m.name == "bob")
        .unwrap()
        .public_key;
    // Bob's machine dies (no Leave): his lease runs out.
    let mut bob = bob;
    bob.process.child.kill().await.unwrap();
    eventually("alice to see bob offline", || {
        let alice = &alice;
        async move {
            let (_, out, _) = alice.chat(&["connections"]).await;
            out.lines()
                .any(|l| l.starts_with("bob") && l.contains("offline"))
        }
    })
    .await;
    let report = send(&alice, "kept for bob").await;
    assert!(report.contains("queued"), "{report}");

    // Bob's key, copied from List, with the attacker's proof: refused.
    let mallory = StaticKeypair::generate();
    let mut hijack = chat_tests::proven(&mut client, &mallory, "bob", "127.0.0.1:9").await;
    hijack.public_key = bob_key;
    let err = client.register(hijack).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    // The free name with the attacker's own key: Discovery lists it, alice
    // flags a changed key and sends nothing to it; then the attacker leaves.
    let squat = chat_tests::proven(&mut client, &mallory, "bob", "127.0.0.1:9").await;
    let lease = client.register(squat).await.unwrap().into_inner();
    eventually("alice to flag bob's key", || {
        let alice = &alice;
        async move {
            let (_, out, _) = alice.chat(&["connections"]).await;
            out.contains("KEY CHANGED")
        }
    })
    .await;
    client
        .leave(LeaveRequest {
            lease_id: lease.lease_id,
            lease_token: lease.lease_token,
        })
        .await
        .unwrap();

    // Bob is back with his own key: the queued message arrives, once.
    let bob = PeerProcess::start("bob", &url, &bob_dir).await;
    wait_for_message(&bob.data_dir, "kept for bob").await;
    let copies = texts(&bob.data_dir)
        .await
        .into_iter()
        .filter(|t| t == "kept for bob")
        .count();
    assert_eq!(copies, 1);
}

/// Issue 26, item 2: an invitation for yourself, or for a member that has
/// shown its admission, is refused with what to do instead (a second token
/// for a member's name would let whoever holds it join as a second
/// identity); an invitation not used yet may be made again, and a member
/// removed (a lost device) may be invited again.
#[tokio::test]
async fn inviting_yourself_or_a_current_member_is_refused_with_what_to_do() {
    let discovery = Discovery::start().await;
    let dir = tempfile::tempdir().unwrap();
    let url = discovery.url();
    let alice = PeerProcess::found("alice", &url, &dir.path().join("alice")).await;
    let bob = alice
        .admit("bob", &[], &url, &dir.path().join("bob"), &[], None)
        .await;
    alice.wait_connections(&["bob"]).await;
    eventually("bob to have shown alice his admission", || async {
        let (ok, _, err) = alice.chat(&["invite", "bob"]).await;
        !ok && err.contains("bob is a member already") && err.contains("chat remove bob")
    })
    .await;
    for (peer, name) in [(&alice, "alice"), (&bob, "bob")] {
        let (ok, _, err) = peer.chat(&["invite", name]).await;
        assert!(!ok && err.contains("own name"), "{err}");
    }
    // A member may not invite another member either.
    let (ok, _, err) = bob.chat(&["invite", "alice"]).await;
    assert!(!ok && err.contains("alice is a member already"), "{err}");
    // Not used yet: made again.
    for _ in 0..2 {
        let (ok, token, err) = alice.chat(&["invite", "carol"]).await;
        assert!(ok && !token.trim().is_empty(), "{err}");
    }
    // Removed: invited again.
    let (ok, _, err) = alice.chat(&["remove", "bob"]).await;
    assert!(ok, "{err}");
    let (ok, _, err) = alice.chat(&["invite", "bob"]).await;
    assert!(ok, "{err}");
}

/// Issue 26, items 3 and 10: a data dir that is a member of one network,
/// started with a token for another, is refused with both networks named
/// and what to do, in one clean line even with RUST_BACKTRACE=1 (it used
/// to run on as a member of the old network, the token ignored).
#[tokio::test]
async fn a_token_for_another_network_is_refused_naming_both() {
    let discovery = Discovery::start().await;
    let dir = tempfile::tempdir().unwrap();
    let url = discovery.url();
    let alice = PeerProcess::found("alice", &url, &dir.path().join("alice")).await;
    let bob_dir = dir.path().join("bob");
    let bob = alice.admit("bob", &[], &url, &bob_dir, &[], None).await;
    assert!(bob.process.terminate().await.success());
    let carol = PeerProcess::found("carol", &url, &dir.path().join("carol")).await;
    let (ok, token, err) = carol.chat(&["invite", "bob"]).await;
    assert!(ok, "{err}");
    let out = tokio::process::Command::new(binary("peer-svc"))
        .args([
            "--name",
            "bob",
            "--listen",
            "127.0.0.1:0",
            "--discovery",
            &url,
        ])
        .arg("--data-dir")
        .arg(&bob_dir)
        .env("CHAT_JOIN", token.trim())
        .env("RUST_BACKTRACE", "1")
        .output()
        .await
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    let line = err
        .lines()
        .find(|l| l.contains("the invitation is for network"))
        .unwrap_or_else(|| panic!("{err}"));
    assert!(
        line.contains("is a member of network") && line.contains("--data-dir"),
        "{line}"
    );
    assert!(
        !err.contains("stack backtrace") && !err.contains("   0: "),
        "{err}"
    );
}

/// Issue 26, item 1 (the form with no bearer secret): the newcomer prints
/// its identity key (`chat key`), the inviter binds the invitation to it
/// (`chat invite NAME --key KEY`). The newcomer joins and chats; a second
/// data dir with the same token cannot start, and says why, naming both
/// safety numbers; the members never hear of it.
#[tokio::test]
async fn an_invitation_bound_to_a_key_admits_that_identity_only() {
    let discovery = Discovery::start().await;
    let dir = tempfile::tempdir().unwrap();
    let url = discovery.url();
    let alice = PeerProcess::found("alice", &url, &dir.path().join("alice")).await;
    let bob = alice
        .admit("bob", &[], &url, &dir.path().join("bob"), &[], None)
        .await;
    let erin_dir = dir.path().join("erin");
    let (ok, key, err) = chat_tests::chat_cli(&erin_dir, &["key"]).await;
    assert!(ok && err.contains("safety number"), "{err}");
    let key = key.trim().to_owned();
    assert_eq!(key.len(), 64, "{key}");
    let (ok, token, err) = alice.chat(&["invite", "erin", "--key", &key]).await;
    assert!(ok && err.contains("bound to the identity key"), "{err}");
    let token = token.trim().to_owned();

    // A copy of the token is worth nothing to another data dir.
    let thief_dir = dir.path().join("thief");
    let out = tokio::process::Command::new(binary("peer-svc"))
        .args([
            "--name",
            "erin",
            "--listen",
            "127.0.0.1:0",
            "--discovery",
            &url,
        ])
        .arg("--data-dir")
        .arg(&thief_dir)
        .env("CHAT_JOIN", &token)
        .output()
        .await
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("bound to another identity") && err.contains("chat key"),
        "{err}"
    );

    // The identity it was made for joins, and chats both ways.
    let erin =
        PeerProcess::start_logged("erin", &url, &erin_dir, &[("CHAT_JOIN", &token)], None).await;
    for (peer, others) in [(&alice, ["bob", "erin"]), (&bob, ["alice", "erin"])] {
        peer.wait_connections(&others).await;
    }
    let (ok, report, err) = erin.chat(&["send", "bound and here"]).await;
    assert!(
        ok && report.matches("delivered").count() == 2,
        "{report}{err}"
    );
    let (ok, report, err) = bob.chat(&["send", "welcome, erin"]).await;
    assert!(ok && delivered_to(&report, "erin"), "{report}{err}");
    wait_for_message(&erin_dir, "welcome, erin").await;
    // A malformed key is refused with what to give instead.
    let (ok, _, err) = alice.chat(&["invite", "frank", "--key", "abcd"]).await;
    assert!(!ok && err.contains("64 hex digits"), "{err}");
}

/// Issue 26, items 1 and 14: a bearer token is used once, whatever the
/// order. The inviter confirms the first identity that uses it (in their
/// first handshake) and refuses any other, naming the first; the other
/// members never take an unconfirmed newcomer, so no second identity gets
/// in anywhere and no relay holds its messages. First order: the real
/// erin joins, then a copy of her token is tried. Second order (a stolen
/// token): the thief joins while the inviter is away and is confirmed when
/// she is back; the real frank is refused and told why; the inviter
/// removes the thief's identity and invites frank again, bound to his key,
/// and his data dir joins with that.
#[tokio::test]
async fn a_bearer_token_is_used_once_whatever_the_order() {
    let discovery = Discovery::start().await;
    let dir = tempfile::tempdir().unwrap();
    let url = discovery.url();
    let alice_log = dir.path().join("alice.log");
    let alice_dir = dir.path().join("alice");
    let alice = PeerProcess::start_with_args(
        "alice",
        &url,
        &alice_dir,
        &["--create-network"],
        &[("RUST_LOG", "info")],
        Some(&alice_log),
    )
    .await;
    let bob = alice
        .admit("bob", &[], &url, &dir.path().join("bob"), &[], None)
        .await;
    bob.wait_confirmed_by("alice").await;

    // First order: erin, then a copy of her token.
    let (ok, token, err) = alice.chat(&["invite", "erin"]).await;
    assert!(ok, "{err}");
    let token = token.trim().to_owned();
    let erin_dir = dir.path().join("erin");
    let erin =
        PeerProcess::start_logged("erin", &url, &erin_dir, &[("CHAT_JOIN", &token)], None).await;
    erin.wait_confirmed_by("alice").await;
    let erin_number = chat_tests::chat_cli(&erin_dir, &["key"]).await.2;
    let copy = PeerProcess::start_logged(
        "erin",
        &url,
        &dir.path().join("erin-copy"),
        &[("CHAT_JOIN", &token)],
        None,
    )
    .await;
    eventually("the copy to be told the token was used", || async {
        let (ok, _, err) = copy.chat(&["send", "I am erin too"]).await;
        !ok && err.contains("another identity") && err.contains("used first")
    })
    .await;
    let (_, _, err) = copy.chat(&["send", "I am erin too"]).await;
    let first = erin_number
        .split("safety number ")
        .nth(1)
        .unwrap()
        .split(')')
        .next()
        .unwrap();
    assert!(
        err.contains(first),
        "names the first identity ({first}): {err}"
    );
    for peer in [&alice, &bob] {
        peer.wait_connections(&if peer.name == "alice" {
            ["bob", "erin"]
        } else {
            ["alice", "erin"]
        })
        .await;
    }
    let (ok, report, err) = erin.chat(&["send", "the real erin"]).await;
    assert!(
        ok && report.matches("delivered").count() == 2,
        "{report}{err}"
    );
    let said = std::fs::read_to_string(&alice_log).unwrap();
    assert!(
        said.contains("a second identity tried to use an invitation"),
        "{said}"
    );
    drop(copy);

    // Second order: frank's token is stolen and used while alice is away.
    let (ok, token, err) = alice.chat(&["invite", "frank"]).await;
    assert!(ok, "{err}");
    let token = token.trim().to_owned();
    assert!(alice.process.terminate().await.success());
    let thief = PeerProcess::start_logged(
        "frank",
        &url,
        &dir.path().join("thief"),
        &[("CHAT_JOIN", &token)],
        None,
    )
    .await;
    // Unconfirmed, the thief is no member to bob: he sends it nothing.
    let (ok, report, err) = bob.chat(&["send", "while alice is away"]).await;
    assert!(ok && !report.contains("frank"), "{report}{err}");
    let (ok, _, err) = thief.chat(&["send", "let me in"]).await;
    assert!(!ok && err.contains("not a member yet"), "{err}");
    // Alice is back: the thief used the token first, and is confirmed.
    let alice = PeerProcess::start("alice", &url, &alice_dir).await;
    thief.wait_confirmed_by("alice").await;
    let frank_dir = dir.path().join("frank");
    let frank =
        PeerProcess::start_logged("frank", &url, &frank_dir, &[("CHAT_JOIN", &token)], None).await;
    eventually("the real frank to be told", || async {
        let (ok, _, err) = frank.chat(&["send", "hi, it's frank"]).await;
        !ok && err.contains("used first") && err.contains("chat key")
    })
    .await;
    // Frank tells alice out of band; she removes the identity that used
    // his token and invites him again, bound to his key.
    let (_, thief_number, _) = alice.chat(&["verify", "frank"]).await;
    let thief_number = thief_number
        .lines()
        .next()
        .and_then(|l| l.split("safety number: ").nth(1))
        .unwrap()
        .trim()
        .to_owned();
    let (ok, out, err) = alice
        .chat(&["remove", "frank", "--key", &thief_number])
        .await;
    assert!(ok && out.contains(&thief_number), "{out}{err}");
    drop(thief);
    let (ok, key, err) = chat_tests::chat_cli(&frank_dir, &["key"]).await;
    assert!(ok, "{err}");
    let (ok, bound, err) = alice.chat(&["invite", "frank", "--key", key.trim()]).await;
    assert!(ok, "{err}");
    assert!(frank.process.terminate().await.success());
    let frank = PeerProcess::start_logged(
        "frank",
        &url,
        &frank_dir,
        &[("CHAT_JOIN", bound.trim())],
        None,
    )
    .await;
    eventually("alice to trust frank's new key", || async {
        alice.chat(&["trust", "frank"]).await.0
    })
    .await;
    eventually("frank to reach alice and bob", || async {
        let (ok, report, _) = frank.chat(&["send", "frank, for real"]).await;
        ok && delivered_to(&report, "alice")
    })
    .await;
    wait_for_message(&alice.data_dir, "frank, for real").await;
    drop(bob);
}
