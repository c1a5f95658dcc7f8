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
    // Xavier keeps a copy of his data dir from before his removal: a
    // removed member restoring a backup knows nothing of the removal (the
    // data dir that learned it does not start again), so it is the
    // members who must remember and refuse him.
    assert!(xavier.process.terminate().await.success());
    let backup = dir.path().join("xavier-backup");
    copy_dir(&dir.path().join("xavier"), &backup);

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

    // The remover restarts: she still refuses xavier, and her refusal
    // shows him the removal, which he verifies.
    let alice_dir = alice.data_dir.clone();
    assert!(alice.process.terminate().await.success());
    let alice = PeerProcess::start("alice", &url, &alice_dir).await;
    let xavier = start_copy(&backup, &dir.path().join("xavier-1"), &url).await;
    eventually("alice to refuse xavier, showing his removal", || async {
        xavier.chat(&["refresh"]).await;
        let (ok, _, err) = xavier.chat(&["handshake", "alice"]).await;
        !ok && err.contains("alice removed this member")
    })
    .await;
    let (ok, _, err) = xavier.chat(&["send", "still here?"]).await;
    assert!(!ok && err.contains("no longer a member"), "{err}");
    assert!(xavier.process.terminate().await.success());

    // Bob comes back: meeting alice, he learns the removal made while he
    // was away, though seventy newer ones came after it.
    let bob = restart("bob", &url, dir.path()).await;
    let bob_log = dir.path().join("bob.log");
    eventually("bob to learn xavier's removal", || {
        let text = std::fs::read_to_string(&bob_log).unwrap_or_default();
        async move { text.contains("member removed from the network peer=xavier") }
    })
    .await;
    let (ok, report, err) = alice.chat(&["send", "not for xavier"]).await;
    assert!(ok && !report.contains("xavier"), "{report}{err}");
    wait_for_message(&bob.data_dir, "not for xavier").await;

    // And he keeps it across his own restart: with alice away, another
    // copy of xavier meets only bob, who refuses it.
    assert!(alice.process.terminate().await.success());
    let bob_dir = bob.data_dir.clone();
    assert!(bob.process.terminate().await.success());
    let bob = PeerProcess::start("bob", &url, &bob_dir).await;
    let xavier = start_copy(&backup, &dir.path().join("xavier-2"), &url).await;
    eventually("bob to refuse xavier, showing his removal", || async {
        xavier.chat(&["refresh"]).await;
        let (ok, _, err) = xavier.chat(&["handshake", "bob"]).await;
        !ok && err.contains("alice removed this member")
    })
    .await;
    let (_, report, _) = bob.chat(&["send", "still not for xavier"]).await;
    assert!(!report.contains("xavier"), "{report}");
    assert!(
        !texts(&bob.data_dir)
            .await
            .contains(&"still here?".to_owned())
    );
    for copy in [&xavier.data_dir, &backup] {
        let seen = texts_in(copy);
        assert!(
            !seen.iter().any(|t| t.contains("not for xavier")),
            "{seen:?}"
        );
    }
}

/// Copies a stopped peer's data dir (its files, not its control socket).
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

/// Starts xavier from a fresh copy of `backup` in `dir`.
async fn start_copy(backup: &Path, dir: &Path, url: &str) -> PeerProcess {
    copy_dir(backup, dir);
    PeerProcess::start("xavier", url, dir).await
}

/// The texts stored in a data dir whose peer is not running (read from
/// its database file directly).
fn texts_in(data_dir: &Path) -> Vec<String> {
    let db = rusqlite::Connection::open(data_dir.join("history.db")).unwrap();
    let mut statement = db.prepare("SELECT text FROM messages").unwrap();
    statement
        .query_map([], |row| row.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
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

/// The safety number `chat verify` shows for `who` (its first line), once
/// `of` has met it (its admission is known after a handshake).
async fn safety_number(of: &PeerProcess, who: &str) -> String {
    eventually(&format!("{} to have met {who}", of.name), || async {
        of.chat(&["handshake", who]).await.0
    })
    .await;
    let (ok, out, err) = of.chat(&["verify", who]).await;
    assert!(ok, "{err}");
    out.lines()
        .next()
        .and_then(|l| l.split("safety number: ").nth(1))
        .unwrap_or_else(|| panic!("{out}"))
        .trim()
        .to_owned()
}

/// Issue 26, item 15: two identities have claimed one name (carol's old
/// device, admitted by alice, and her new one, invited by bob who never
/// met the old). `chat remove carol` says which identity it removed, by
/// safety number, `--key` picks one (a number not known is refused, naming
/// the ones known), and the other identity, admitted through its own
/// invitation, stays a member.
#[tokio::test]
async fn a_name_two_identities_claimed_is_removed_by_safety_number() {
    let discovery = Discovery::start().await;
    let dir = tempfile::tempdir().unwrap();
    let url = discovery.url();
    let alice = PeerProcess::found("alice", &url, &dir.path().join("alice")).await;
    let old_carol = alice
        .admit("carol", &[], &url, &dir.path().join("carol-old"), &[], None)
        .await;
    alice.wait_connections(&["carol"]).await;
    let old_number = safety_number(&alice, "carol").await;
    assert!(old_carol.process.terminate().await.success());
    // Bob joins while the old carol is away, and invites carol's new device.
    let bob = alice
        .admit("bob", &[], &url, &dir.path().join("bob"), &[], None)
        .await;
    // Bob can invite once alice confirmed his own invitation's use.
    bob.wait_confirmed_by("alice").await;
    let new_carol = bob
        .admit("carol", &[], &url, &dir.path().join("carol-new"), &[], None)
        .await;
    bob.wait_connections(&["alice", "carol"]).await;
    let new_number = safety_number(&bob, "carol").await;
    assert_ne!(old_number, new_number);

    // Alice knows the old identity only: a number she does not know is
    // refused, naming the one she knows.
    let (ok, _, err) = alice.chat(&["remove", "carol", "--key", &new_number]).await;
    assert!(
        !ok && err.contains("no identity of carol with safety number") && err.contains(&old_number),
        "{err}"
    );
    let (ok, out, err) = alice.chat(&["remove", "carol", "--key", &old_number]).await;
    assert!(
        ok && out.contains(&format!("removed carol (safety number {old_number})")),
        "{out}{err}"
    );
    // The new carol came through bob's invitation: she stays a member.
    // Alice trusts her key (the documented step for a member's new key:
    // it must show an admission, and the name's old identity is removed),
    // and delivers to her.
    eventually("alice to trust the new carol's key", || async {
        let (ok, _, _) = alice.chat(&["trust", "carol"]).await;
        ok
    })
    .await;
    eventually("alice to deliver to the new carol", || async {
        new_carol.chat(&["refresh"]).await;
        let (ok, report, _) = alice.chat(&["send", "hello, new carol"]).await;
        ok && chat_tests::delivered_to(&report, "carol")
    })
    .await;
    assert_eq!(safety_number(&alice, "carol").await, new_number);
    wait_for_message(&new_carol.data_dir, "hello, new carol").await;
}
