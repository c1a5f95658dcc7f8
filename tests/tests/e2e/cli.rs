//! The `chat` CLI verbs a person uses, against real peers.

use chat_tests::{Discovery, PeerProcess, binary, chat_cli, eventually, within};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

async fn pair(discovery: &Discovery, dir: &std::path::Path) -> (PeerProcess, PeerProcess) {
    let mut peers = chat_tests::start_network(&discovery.url(), dir, &["alice", "bob"]).await;
    let bob = peers.pop().unwrap();
    (peers.pop().unwrap(), bob)
}

#[tokio::test]
async fn send_with_an_id_is_idempotent_and_history_filters_work() {
    let discovery = Discovery::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (alice, bob) = pair(&discovery, dir.path()).await;
    for _ in 0..2 {
        let (ok, out, err) = alice
            .chat(&["send", "only once", "--id", "client-42"])
            .await;
        assert!(ok, "{err}");
        assert!(out.starts_with("sent client-42"), "{out}");
    }
    let (ok, _, _) = alice.chat(&["send", "lunch at noon?"]).await;
    assert!(ok);
    let (ok, _, _) = bob.chat(&["send", "yes, lunch"]).await;
    assert!(ok);
    eventually("bob to hold alice's two messages and his own", || {
        let d = bob.data_dir.clone();
        async move { chat_cli(&d, &["history"]).await.1.lines().count() == 4 }
    })
    .await;
    let (_, all, _) = bob.chat(&["history"]).await;
    assert_eq!(
        all.matches("only once").count(),
        1,
        "a retried send is not duplicated: {all}"
    );

    let (_, from_alice, _) = bob.chat(&["history", "--from", "alice"]).await;
    assert_eq!(from_alice.lines().count(), 3, "{from_alice}");
    let (_, lunch, _) = bob.chat(&["history", "--grep", "lunch"]).await;
    assert_eq!(lunch.lines().count(), 3, "{lunch}");
    let (_, recent, _) = bob.chat(&["history", "--since", "1h"]).await;
    assert_eq!(recent.lines().count(), 4);
    let (_, future, _) = bob
        .chat(&["history", "--since", "2999-01-01T00:00:00Z"])
        .await;
    assert_eq!(future.lines().count(), 1, "only the header: {future}");
    let (ok, _, err) = bob.chat(&["history", "--since", "yesterday"]).await;
    assert!(!ok && err.contains("--since"), "{err}");
}

#[tokio::test]
async fn handshake_refresh_and_dropping_a_peer() {
    let discovery = Discovery::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (alice, bob) = pair(&discovery, dir.path()).await;
    let (ok, out, err) = alice.chat(&["handshake", "bob"]).await;
    assert!(ok, "{err}");
    assert!(out.starts_with("handshake with bob done in"), "{out}");
    let (_, connections, _) = alice.chat(&["connections"]).await;
    let bob_line = connections.lines().find(|l| l.starts_with("bob")).unwrap();
    assert!(bob_line.contains("established"), "{connections}");
    let fingerprint = out
        .lines()
        .nth(1)
        .unwrap()
        .rsplit(": ")
        .next()
        .unwrap()
        .to_owned();
    assert!(
        bob_line.contains(&fingerprint),
        "{bob_line} vs {fingerprint}"
    );
    let (ok, _, err) = alice.chat(&["handshake", "nobody"]).await;
    assert!(!ok && err.contains("no peer named"), "{err}");

    let (ok, out, _) = alice.chat(&["refresh", "bob"]).await;
    assert!(ok && out.contains("connections: bob"), "{out}");

    let (ok, out, _) = alice.chat(&["leave", "bob"]).await;
    assert!(ok && out.contains("dropped bob"), "{out}");
    let (_, report, _) = alice.chat(&["send", "bob should not get this"]).await;
    assert!(!report.contains("bob"), "{report}");
    let (_, bobs, _) = bob.chat(&["history"]).await;
    assert!(!bobs.contains("should not get this"), "{bobs}");
}

#[tokio::test]
async fn attach_prints_incoming_lines_and_sends_typed_ones() {
    let discovery = Discovery::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (alice, mut bob) = pair(&discovery, dir.path()).await;
    let mut attach = chat_tests::spawn_chat(&alice.data_dir, &["attach"]);
    let mut stdin = attach.stdin.take().unwrap();
    let mut out = BufReader::new(attach.stdout.take().unwrap()).lines();
    let mut err = BufReader::new(attach.stderr.take().unwrap()).lines();
    let banner = within("attach banner", err.next_line())
        .await
        .unwrap()
        .unwrap();
    assert!(banner.starts_with("attached"), "{banner}");

    stdin.write_all(b"typed in the console\n").await.unwrap();
    let line = bob.next_console_line().await;
    assert!(
        line.ends_with("- From: alice Message: typed in the console"),
        "{line}"
    );

    let (ok, _, _) = bob.chat(&["send", "hello console"]).await;
    assert!(ok);
    let line = within("attach output", out.next_line())
        .await
        .unwrap()
        .unwrap();
    assert!(
        line.ends_with("- From: bob Message: hello console"),
        "{line}"
    );

    drop(stdin); // Ctrl-D detaches
    let status = within("attach to exit", attach.wait()).await.unwrap();
    assert!(status.success());
}

#[tokio::test]
async fn a_bad_flag_or_missing_daemon_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, _, err) = chat_cli(dir.path(), &["send", "x"]).await;
    assert!(!ok);
    assert!(
        err.contains("no peer-svc is running") && err.contains("peer-svc --name"),
        "{err}"
    );
    let out = tokio::process::Command::new(binary("peer-svc"))
        .args(["--name", "has space", "--data-dir"])
        .arg(dir.path())
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--name must be printable"));
    let out = tokio::process::Command::new(binary("discovery-svc"))
        .args(["--ttl", "10h"])
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("unknown unit"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
