//! Issue 17, item 1: every message is signed by its author, numbered and
//! linked in the author's feed, and history relayed by another peer is
//! verified. A relay whose database was tampered with (forged, altered,
//! re-attributed and dropped messages of a third party, written straight
//! into its SQLite file) cannot make a newcomer believe any of it: the
//! forgeries are refused with a warning naming the relay, and the dropped
//! and refused messages show as gaps in `chat history --verify`. And a
//! member that lost its data dir, removed and admitted again under a new
//! key, gets the messages it signed with the old one back from the others.

use std::path::Path;

use chat_proto::v1::AuthoredMessage;
use chat_tests::{Discovery, PeerProcess, eventually, full_history, wait_for_message};
use ed25519_dalek::Signer;
use prost::Message;

async fn send(peer: &PeerProcess, text: &str) {
    let (ok, _, err) = peer.chat(&["send", text]).await;
    assert!(ok, "{err}");
}

/// Stops a peer the way its owner does (`chat stop`: it leaves Discovery
/// and exits).
async fn leave(mut peer: PeerProcess) {
    let (ok, _, err) = peer.chat(&["stop"]).await;
    assert!(ok, "{err}");
    chat_tests::within("the peer to exit", peer.process.child.wait())
        .await
        .unwrap();
}

/// (authored, signature, author_key) of the stored message `id`.
fn stored(db: &rusqlite::Connection, id: &str) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    db.query_row(
        "SELECT authored, signature, author_key FROM messages WHERE id = ?1",
        [id],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )
    .unwrap()
}

fn insert(db: &rusqlite::Connection, authored: &[u8], signature: &[u8]) {
    let m = AuthoredMessage::decode(authored).unwrap();
    db.execute(
        "INSERT INTO messages (id, hlc, sender, sender_fingerprint, sent_at_ms, text,
                               authored, signature, seq, author_key)
         VALUES (?1, ?2, ?3, ?4, 0, ?5, ?6, ?7, ?8, ?9)",
        rusqlite::params![
            m.id,
            m.hlc as i64,
            m.sender,
            m.sender_fingerprint,
            m.text,
            authored,
            signature,
            m.seq as i64,
            m.author_key
        ],
    )
    .unwrap();
}

/// What a relay with write access to its own database does to carol's
/// messages: alters c2 (keeping carol's signature), drops c4, appends a
/// message under carol's key with a signature that is not hers, and one
/// signed by the relay's own identity key in carol's name.
fn tamper(data_dir: &Path) {
    let db = rusqlite::Connection::open(data_dir.join("history.db")).unwrap();
    let (authored, _, _) = stored(&db, "c2");
    let mut altered = AuthoredMessage::decode(authored.as_slice()).unwrap();
    altered.text = "c2 ALTERED by the relay".into();
    db.execute(
        "UPDATE messages SET authored = ?1, text = ?2 WHERE id = 'c2'",
        rusqlite::params![altered.encode_to_vec(), altered.text],
    )
    .unwrap();
    assert_eq!(
        db.execute("DELETE FROM messages WHERE id = 'c4'", [])
            .unwrap(),
        1
    );
    let (authored, signature, _) = stored(&db, "c5");
    let mut forged = AuthoredMessage::decode(authored.as_slice()).unwrap();
    forged.id = "forged-1".into();
    forged.seq = 6;
    forged.prev = peer_svc::authorship::hash(&authored).to_vec();
    forged.text = "FORGED under carol's key".into();
    insert(&db, &forged.encode_to_vec(), &signature);
    // Signed for real, by the relay's own identity key, in carol's name.
    let hex = std::fs::read_to_string(data_dir.join("identity.ed25519.key")).unwrap();
    let mut secret = [0u8; 32];
    hex::decode_to_slice(hex.trim(), &mut secret).unwrap();
    let relay = ed25519_dalek::SigningKey::from_bytes(&secret);
    forged.id = "forged-2".into();
    forged.seq = 1;
    forged.prev = Vec::new();
    forged.author_key = relay.verifying_key().to_bytes().to_vec();
    forged.text = "RE-ATTRIBUTED to carol by the relay".into();
    let bytes = forged.encode_to_vec();
    let signature = relay.sign(&peer_svc::authorship::signed_bytes(&bytes));
    insert(&db, &bytes, &signature.to_bytes());
}

#[tokio::test]
async fn a_relay_that_forges_alters_or_drops_a_third_partys_messages_is_caught() {
    let discovery = Discovery::start().await;
    let dir = tempfile::tempdir().unwrap();
    let url = discovery.url();
    let bob = PeerProcess::start("bob", &url, &dir.path().join("bob")).await;
    let carol = PeerProcess::start("carol", &url, &dir.path().join("carol")).await;
    bob.wait_connections(&["carol"]).await;
    carol.wait_connections(&["bob"]).await;
    for i in 1..=5 {
        let (ok, _, err) = carol
            .chat(&["send", "--id", &format!("c{i}"), &format!("carol says {i}")])
            .await;
        assert!(ok, "{err}");
    }
    wait_for_message(&bob.data_dir, "carol says 5").await;
    leave(carol).await;
    leave(bob).await;
    tamper(&dir.path().join("bob"));

    // The relay's own check already shows what was done to its store.
    let bob = PeerProcess::start("bob", &url, &dir.path().join("bob")).await;
    let (ok, out, _) = bob.chat(&["history", "--verify"]).await;
    assert!(!ok, "a tampered store must not verify:\n{out}");
    assert!(out.contains("does not verify"), "{out}");
    assert!(out.contains("missing 4"), "{out}");

    // Dave joins and can pull history only from bob.
    let log = dir.path().join("dave.log");
    let dave =
        PeerProcess::start_logged("dave", &url, &dir.path().join("dave"), &[], Some(&log)).await;
    wait_for_message(&dave.data_dir, "carol says 5").await;
    eventually("dave's sync to end", || {
        let log = log.clone();
        async move { std::fs::read_to_string(&log).is_ok_and(|l| l.contains("history synced")) }
    })
    .await;
    let texts: Vec<String> = full_history(&mut dave.control().await)
        .await
        .into_iter()
        .map(|m| m.text)
        .collect();
    assert_eq!(
        texts,
        ["carol says 1", "carol says 3", "carol says 5"],
        "only carol's untouched messages may reach dave"
    );
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(
        logged.contains("history items refused") && logged.contains("from=bob"),
        "{logged}"
    );
    assert!(logged.contains("does not verify"), "{logged}");
    assert!(logged.contains("speaks as bob, not carol"), "{logged}");
    assert!(
        logged.contains("messages are missing after history sync") && logged.contains("2,4"),
        "{logged}"
    );
    let (ok, out, _) = dave.chat(&["history", "--verify"]).await;
    assert!(!ok, "gaps must fail the check:\n{out}");
    let carols = out
        .lines()
        .find(|l| l.starts_with("carol "))
        .unwrap_or_default();
    assert!(
        carols.contains("seq 1-5")
            && carols.contains("3 messages")
            && carols.contains("missing 2,4"),
        "{out}"
    );
}

#[tokio::test]
async fn a_member_that_lost_its_data_dir_recovers_its_own_messages() {
    let discovery = Discovery::start().await;
    let dir = tempfile::tempdir().unwrap();
    let url = discovery.url();
    let bob = PeerProcess::start_with_args(
        "bob",
        &url,
        &dir.path().join("bob"),
        &["--create-network"],
        &[],
        None,
    )
    .await;
    let (ok, token, err) = bob.chat(&["invite", "alice", "--all-history"]).await;
    assert!(ok, "{err}");
    let alice_dir = dir.path().join("alice");
    let alice = PeerProcess::start_logged(
        "alice",
        &url,
        &alice_dir,
        &[("CHAT_JOIN", token.trim())],
        None,
    )
    .await;
    bob.wait_connections(&["alice"]).await;
    alice.wait_connections(&["bob"]).await;
    for text in ["alice 1", "alice 2", "alice 3"] {
        send(&alice, text).await;
    }
    send(&bob, "bob 1").await;
    wait_for_message(&bob.data_dir, "alice 3").await;
    wait_for_message(&alice_dir, "bob 1").await;

    // Alice's disk is lost: her keys and history with it.
    leave(alice).await;
    std::fs::remove_dir_all(&alice_dir).unwrap();
    // Bob (who admitted her) removes the lost identity and invites her anew.
    let (ok, _, err) = bob.chat(&["remove", "alice"]).await;
    assert!(ok, "{err}");
    let (ok, token, err) = bob.chat(&["invite", "alice", "--all-history"]).await;
    assert!(ok, "{err}");
    let log = dir.path().join("alice-again.log");
    let alice = PeerProcess::start_logged(
        "alice",
        &url,
        &alice_dir,
        &[("CHAT_JOIN", token.trim())],
        Some(&log),
    )
    .await;
    // Bob confirms her new key (key pinning), as he would out of band.
    let (ok, _, err) = bob.chat(&["trust", "alice"]).await;
    assert!(ok || err.contains("not changed"), "{err}");
    wait_for_message(&alice_dir, "alice 3").await;
    let history = full_history(&mut alice.control().await).await;
    let texts: Vec<&str> = history.iter().map(|m| m.text.as_str()).collect();
    assert_eq!(texts, ["alice 1", "alice 2", "alice 3", "bob 1"]);
    assert!(history[..3].iter().all(|m| m.sender == "alice"));
    // Her old feed is whole, under her old key; she goes on under her new one.
    send(&alice, "alice is back").await;
    wait_for_message(&bob.data_dir, "alice is back").await;
    let (ok, out, err) = alice.chat(&["history", "--verify"]).await;
    assert!(ok, "{out}{err}");
    let alices: Vec<&str> = out.lines().filter(|l| l.starts_with("alice ")).collect();
    assert_eq!(alices.len(), 2, "{out}");
    assert!(
        alices
            .iter()
            .any(|l| l.contains("seq 1-3") && l.contains("complete")),
        "{out}"
    );
    assert!(
        alices
            .iter()
            .any(|l| l.contains("seq 1-1") && l.contains("complete")),
        "{out}"
    );
}

/// Issue 24, item 4c: a relay serving a flood of items that do not verify
/// (here two thousand copies of carol's last message, altered, under her
/// signature) costs a newcomer a bounded amount: it keeps what verified
/// before the flood and stops asking that relay after 64 refusals, naming
/// it, instead of checking every item it is sent.
#[tokio::test]
async fn a_relay_flooding_items_that_do_not_verify_is_dropped_after_a_few() {
    const FLOOD: usize = 2_000;
    let discovery = Discovery::start().await;
    let dir = tempfile::tempdir().unwrap();
    let url = discovery.url();
    let bob = PeerProcess::start("bob", &url, &dir.path().join("bob")).await;
    let carol = PeerProcess::start("carol", &url, &dir.path().join("carol")).await;
    bob.wait_connections(&["carol"]).await;
    for i in 1..=3 {
        send(&carol, &format!("carol says {i}")).await;
    }
    wait_for_message(&bob.data_dir, "carol says 3").await;
    leave(carol).await;
    leave(bob).await;
    {
        let db = rusqlite::Connection::open(dir.path().join("bob/history.db")).unwrap();
        let id: String = db
            .query_row(
                "SELECT id FROM messages WHERE text = 'carol says 3'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        let (authored, signature, _) = stored(&db, &id);
        let last = AuthoredMessage::decode(authored.as_slice()).unwrap();
        db.execute_batch("BEGIN").unwrap();
        for i in 0..FLOOD {
            let mut forged = last.clone();
            forged.id = format!("flood-{i}");
            forged.hlc = last.hlc + 1 + i as u64;
            forged.text = format!("flood {i}");
            insert(&db, &forged.encode_to_vec(), &signature);
        }
        db.execute_batch("COMMIT").unwrap();
    }
    let bob = PeerProcess::start("bob", &url, &dir.path().join("bob")).await;

    let log = dir.path().join("dave.log");
    let dave =
        PeerProcess::start_logged("dave", &url, &dir.path().join("dave"), &[], Some(&log)).await;
    wait_for_message(&dave.data_dir, "carol says 3").await;
    eventually("dave to stop asking bob", || {
        let log = log.clone();
        async move { std::fs::read_to_string(&log).is_ok_and(|l| l.contains("stopped asking it")) }
    })
    .await;
    let logged = std::fs::read_to_string(&log).unwrap();
    let line = logged
        .lines()
        .find(|l| l.contains("history pull ended") && l.contains("from=bob"))
        .unwrap_or_else(|| panic!("{logged}"));
    let refused: usize = line
        .split("refused=")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{line}"));
    assert!(
        refused < FLOOD / 2,
        "dave checked {refused} of {FLOOD} bad items: {line}"
    );
    let texts: Vec<String> = full_history(&mut dave.control().await)
        .await
        .into_iter()
        .map(|m| m.text)
        .collect();
    assert_eq!(texts, ["carol says 1", "carol says 2", "carol says 3"]);
    drop(bob);
}
