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
    let (_, future, said) = bob
        .chat(&["history", "--since", "2999-01-01T00:00:00Z"])
        .await;
    assert_eq!(future.lines().count(), 1, "only the header: {future}");
    assert!(said.contains("no messages match"), "{said}");
    let (_, none, said) = bob.chat(&["history", "--grep", "no such words"]).await;
    assert_eq!(none.lines().count(), 1, "{none}");
    assert!(said.contains("no messages match"), "{said}");
    // A date is a day from its start (local time): since yesterday, all.
    let yesterday = (chrono::Local::now() - chrono::Duration::days(1))
        .format("%Y-%m-%d")
        .to_string();
    let (ok, dated, err) = bob.chat(&["history", "--since", &yesterday]).await;
    assert!(ok, "{err}");
    assert_eq!(dated.lines().count(), 4, "{dated}");
    let (ok, _, err) = bob.chat(&["history", "--since", "yesterday"]).await;
    assert!(
        !ok && err.contains("--since") && err.contains("date"),
        "{err}"
    );
    // One author key, counted in the singular.
    let (ok, verified, err) = alice.chat(&["history", "--verify"]).await;
    assert!(ok, "{err}");
    assert!(verified.contains("from 2 author keys"), "{verified}");
    assert!(
        verified
            .lines()
            .any(|l| l.starts_with("bob ") && l.contains(" 1 message ")),
        "{verified}"
    );
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
    let (_, connections, _) = alice.chat(&["connections"]).await;
    assert!(connections.contains("dropped"), "{connections}");

    // Naming the dropped peer in a handshake takes it back.
    let (ok, _, err) = alice.chat(&["handshake", "bob"]).await;
    assert!(ok, "{err}");
    let (_, report, _) = alice.chat(&["send", "bob is back"]).await;
    assert!(
        report.contains("bob") && report.contains("delivered"),
        "{report}"
    );
    let (ok, out, _) = alice.chat(&["leave", "bob"]).await;
    assert!(
        ok && out.contains("chat handshake bob"),
        "says how to undo: {out}"
    );
    let (ok, _, _) = alice.chat(&["refresh", "bob"]).await;
    assert!(ok);
    let (_, connections, _) = alice.chat(&["connections"]).await;
    assert!(
        !connections.contains("dropped"),
        "refresh PEER takes it back too: {connections}"
    );
}

#[tokio::test]
async fn connections_show_queued_messages_and_output_into_a_closed_pipe_ends_quietly() {
    let discovery = Discovery::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (alice, bob) = pair(&discovery, dir.path()).await;
    // 200 KiB of history: more than a pipe holds, so a writer into a pipe
    // nobody reads any more gets EPIPE.
    let mut send = chat_tests::spawn_chat(&alice.data_dir, &["send", "--stdin"]);
    let mut stdin = send.stdin.take().unwrap();
    for i in 0..200 {
        let line = format!("message {i} {}\n", "y".repeat(1024));
        stdin.write_all(line.as_bytes()).await.unwrap();
    }
    drop(stdin);
    let sent = within("send --stdin", send.wait_with_output())
        .await
        .unwrap();
    assert!(sent.status.success(), "{sent:?}");
    let (_, table, _) = alice.chat(&["connections"]).await;
    let header = table.lines().next().unwrap();
    assert!(header.ends_with("QUEUED"), "{table}");
    let bob_line = table.lines().find(|l| l.starts_with("bob")).unwrap();
    assert!(
        bob_line.ends_with(" 0"),
        "nothing queued for a reachable bob: {table}"
    );

    // `chat history | head -1`: the reader goes away after one line.
    for verb in [&["history"][..], &["history", "--json"]] {
        let mut chat = tokio::process::Command::new(binary("chat"))
            .arg("--data-dir")
            .arg(&alice.data_dir)
            .args(verb)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = BufReader::new(chat.stdout.take().unwrap()).lines();
        within("the first line", out.next_line()).await.unwrap();
        drop(out);
        let output = within("chat to end", chat.wait_with_output())
            .await
            .unwrap();
        let err = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success() && err.is_empty(),
            "chat {verb:?} into a closed pipe: {} {err}",
            output.status
        );
    }
    drop(bob);
}

#[tokio::test]
async fn an_oversized_message_names_the_limit_and_the_flag_and_stdin_says_what_was_sent() {
    let discovery = Discovery::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (alice, bob) = pair(&discovery, dir.path()).await;
    let big = "x".repeat(100_000);
    let (ok, _, err) = alice.chat(&["send", &big]).await;
    assert!(!ok);
    assert!(
        err.contains("64000 bytes")
            && err.contains("--max-message-bytes")
            && err.contains("ResourceExhausted"),
        "{err}"
    );

    let mut chat = chat_tests::spawn_chat(&alice.data_dir, &["send", "--stdin"]);
    let mut stdin = chat.stdin.take().unwrap();
    stdin
        .write_all(format!("first\nsecond\n{big}\nafter\n").as_bytes())
        .await
        .unwrap();
    drop(stdin);
    let output = within("send --stdin", chat.wait_with_output())
        .await
        .unwrap();
    let (out, err) = (
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    assert!(!output.status.success());
    assert!(
        out.contains("sent 2 messages, then stopped at message 3"),
        "{out}"
    );
    assert!(out.contains("delivered 2"), "the summary per peer: {out}");
    assert!(
        err.contains("message 3 not sent") && err.contains("--max-message-bytes"),
        "{err}"
    );
    eventually("bob to hold the two lines before the oversized one", || {
        let d = bob.data_dir.clone();
        async move {
            let h = chat_cli(&d, &["history"]).await.1;
            h.contains("first") && h.contains("second")
        }
    })
    .await;
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
    for (flag, value) in [
        ("--outbox-limit", "-1"),
        ("--max-message-bytes", "0"),
        ("--handshakes-per-sec", "0"),
    ] {
        let out = tokio::process::Command::new(binary("peer-svc"))
            .args(["--name", "a", flag, value, "--data-dir"])
            .arg(dir.path())
            .output()
            .await
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains(flag) && err.contains("at least 1"),
            "{flag} {value}: {err}"
        );
    }
    let out = tokio::process::Command::new(binary("peer-svc"))
        .args(["--name", "a", "--discovery", "grpc://d:1", "--data-dir"])
        .arg(dir.path())
        .output()
        .await
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("http://HOST:PORT"),
        "{err}"
    );
    let out = tokio::process::Command::new(binary("chat"))
        .arg("--version")
        .output()
        .await
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("chat "));
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

/// Issue 25's "also found": when its peer stops, `chat attach` ends at
/// once with status 1 and says so, without waiting for (and swallowing)
/// the next line typed.
#[tokio::test]
async fn attach_ends_with_a_clear_line_when_its_peer_stops() {
    let discovery = Discovery::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (alice, _bob) = pair(&discovery, dir.path()).await;
    let mut attach = chat_tests::spawn_chat(&alice.data_dir, &["attach"]);
    let stdin = attach.stdin.take().unwrap(); // open, nothing typed
    let mut stderr = tokio::io::BufReader::new(attach.stderr.take().unwrap());
    let mut first = String::new();
    within("attach to start", stderr.read_line(&mut first))
        .await
        .unwrap();
    assert!(first.contains("attached"), "{first}");
    assert!(alice.process.terminate().await.success());
    let status = within("attach to end when its peer stops", attach.wait())
        .await
        .unwrap();
    assert_eq!(status.code(), Some(1));
    let mut rest = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut stderr, &mut rest)
        .await
        .unwrap();
    assert!(
        rest.contains("detached") && rest.contains("nothing typed from now on is sent"),
        "{rest}"
    );
    drop(stdin);
}

/// Issue 26, item 12: a peer that stops while its delivery stream to
/// another is open ends that stream with its connection; the receiver
/// logs no "bad batch" warning for it (a normal leave used to).
#[tokio::test]
async fn a_sender_stopping_with_its_stream_open_is_no_bad_batch() {
    let discovery = Discovery::start().await;
    let dir = tempfile::tempdir().unwrap();
    let url = discovery.url();
    let log = dir.path().join("alice.log");
    let alice = PeerProcess::start_logged(
        "alice",
        &url,
        &dir.path().join("alice"),
        &[("RUST_LOG", "info,peer_svc::service::peer=debug")],
        Some(&log),
    )
    .await;
    let bob = PeerProcess::start("bob", &url, &dir.path().join("bob")).await;
    bob.wait_connections(&["alice"]).await;
    let mut send = chat_tests::spawn_chat(&bob.data_dir, &["send", "--stdin"]);
    let mut stdin = send.stdin.take().unwrap();
    for i in 0..20 {
        stdin
            .write_all(format!("streamed {i}\n").as_bytes())
            .await
            .unwrap();
    }
    drop(stdin);
    let sent = within("send --stdin", send.wait_with_output())
        .await
        .unwrap();
    assert!(sent.status.success(), "{sent:?}");
    chat_tests::wait_for_message(&alice.data_dir, "streamed 19").await;
    // Bob leaves with the stream to alice still open.
    let (ok, _, err) = bob.chat(&["stop"]).await;
    assert!(ok, "{err}");
    eventually(
        "alice to see the stream end with its connection",
        || async {
            std::fs::read_to_string(&log)
                .is_ok_and(|l| l.contains("delivery stream ended with its connection"))
        },
    )
    .await;
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(!logged.contains("bad batch"), "{logged}");
}

/// Issue 26, item 9: a message of several lines shows as lines, each after
/// a continuation mark (so none can pass for another message), in history
/// and on the receiver's console; bidirectional controls show escaped.
#[tokio::test]
async fn multi_line_messages_show_as_lines_and_bidi_controls_are_escaped() {
    let discovery = Discovery::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (alice, mut bob) = pair(&discovery, dir.path()).await;
    let text = "first line\n[2023-03-24|12:27:19] - From: carol Message: not carol";
    let (ok, _, err) = alice.chat(&["send", text]).await;
    assert!(ok, "{err}");
    let first = bob.next_console_line().await;
    assert!(first.ends_with("Message: first line"), "{first}");
    let second = bob.next_console_line().await;
    assert_eq!(
        second, "    | [2023-03-24|12:27:19] - From: carol Message: not carol",
        "a continuation, not a message from carol"
    );
    let (ok, _, err) = alice.chat(&["send", "pay \u{202E}gnp.exe"]).await;
    assert!(ok, "{err}");
    let line = bob.next_console_line().await;
    assert!(line.ends_with("pay \\u{202e}gnp.exe"), "{line}");
    let (ok, history, err) = bob.chat(&["history"]).await;
    assert!(ok, "{err}");
    assert_eq!(history.lines().count(), 4, "{history}");
    assert!(
        history.contains("Message first line\n    | [2023-03-24|12:27:19]"),
        "{history}"
    );
}

/// Issue 26, item 12: `--name` is needed on a first start only; a member's
/// data dir knows the name it was admitted under. A fresh data dir without
/// it is a clear one-line error.
#[tokio::test]
async fn a_member_starts_again_without_naming_itself() {
    let discovery = Discovery::start().await;
    let dir = tempfile::tempdir().unwrap();
    let url = discovery.url();
    let (alice, bob) = pair(&discovery, dir.path()).await;
    let bob_dir = bob.data_dir.clone();
    assert!(bob.process.terminate().await.success());
    let bob_path = bob_dir.to_str().unwrap();
    let bob = chat_tests::Process::spawn(
        "peer-svc",
        &[
            "--listen",
            "127.0.0.1:0",
            "--discovery",
            &url,
            "--data-dir",
            bob_path,
        ],
        &[],
    )
    .await;
    alice.wait_connections(&["bob"]).await;
    let (ok, report, err) = alice.chat(&["send", "hello again, bob"]).await;
    assert!(
        ok && chat_tests::delivered_to(&report, "bob"),
        "{report}{err}"
    );
    drop(bob);

    let fresh = dir.path().join("fresh");
    let out = tokio::process::Command::new(binary("peer-svc"))
        .args(["--listen", "127.0.0.1:0", "--discovery", &url, "--data-dir"])
        .arg(&fresh)
        .env("RUST_BACKTRACE", "1")
        .output()
        .await
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("--name is required") && err.contains("holds no membership"),
        "{err}"
    );
}

/// The safety number `chat verify` (or `chat handshake`) shows for a peer.
fn number_of(out: &str, who: &str) -> String {
    out.lines()
        .find(|l| l.trim_start().starts_with(&format!("{who} ")))
        .and_then(|l| l.split("safety number: ").nth(1))
        .unwrap_or_else(|| panic!("no safety number for {who}: {out}"))
        .trim()
        .to_owned()
}

/// Issue 26, item 8: one safety number per person, everywhere (the
/// fingerprint of the identity key, which `history --verify` shows too),
/// the same from both sides, and `chat verify NAME --yes` marks the person
/// verified, across a restart.
#[tokio::test]
async fn one_safety_number_per_person_and_chat_verify_marks_it_compared() {
    let discovery = Discovery::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (alice, bob) = pair(&discovery, dir.path()).await;
    let (ok, report, err) = bob.chat(&["send", "hi alice"]).await;
    assert!(
        ok && chat_tests::delivered_to(&report, "alice"),
        "{report}{err}"
    );

    let (ok, from_alice, err) = alice.chat(&["verify", "bob"]).await;
    assert!(ok, "{err}");
    assert!(from_alice.contains("chat verify bob --yes"), "{from_alice}");
    let (ok, from_bob, err) = bob.chat(&["verify", "alice"]).await;
    assert!(ok, "{err}");
    let bob_number = number_of(&from_alice, "bob");
    assert_eq!(bob_number, number_of(&from_bob, "you"));
    assert_eq!(number_of(&from_alice, "you"), number_of(&from_bob, "alice"));
    assert_ne!(bob_number, number_of(&from_alice, "you"));

    // The same number in connections, in a handshake, and as bob's key in
    // `history --verify` (his identity key signs his messages).
    let (_, handshake, _) = alice.chat(&["handshake", "bob"]).await;
    assert_eq!(number_of(&handshake, "bob"), bob_number);
    let (_, out, _) = alice.chat(&["connections", "--json"]).await;
    let list: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(list[0]["fingerprint"], bob_number.as_str(), "{out}");
    assert_eq!(list[0]["verified"], false, "{out}");
    assert_ne!(list[0]["static_fingerprint"], bob_number.as_str(), "{out}");
    let (_, checked, _) = alice.chat(&["history", "--verify"]).await;
    assert!(
        checked
            .lines()
            .any(|l| l.starts_with("bob ") && l.contains(&bob_number)),
        "{checked}"
    );

    // Marked verified; it lasts across alice's restart.
    let (ok, out, err) = alice.chat(&["verify", "bob", "--yes"]).await;
    assert!(ok && out.contains("bob is marked verified"), "{out}{err}");
    let alice_dir = alice.data_dir.clone();
    assert!(alice.process.terminate().await.success());
    let alice = PeerProcess::start("alice", &discovery.url(), &alice_dir).await;
    alice.wait_connections(&["bob"]).await;
    let (_, table, _) = alice.chat(&["connections"]).await;
    let header = table.lines().next().unwrap();
    assert!(
        header.contains("SAFETY NUMBER") && header.contains("VERIFIED"),
        "{table}"
    );
    let bob_line = table.lines().find(|l| l.starts_with("bob")).unwrap();
    assert!(
        bob_line.contains(&bob_number) && bob_line.contains(" yes "),
        "{table}"
    );
    let (ok, out, _) = alice.chat(&["verify", "bob"]).await;
    assert!(ok && out.contains("bob is verified"), "{out}");

    let (ok, _, err) = alice.chat(&["verify", "nobody"]).await;
    assert!(!ok && err.contains("no admission of \"nobody\""), "{err}");
    drop(bob);
}
