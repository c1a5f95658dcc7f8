//! Issue 26, item 7: look-alike names. `usеr1` (a Cyrillic е) cannot be
//! told from `user1` on screen, so a member refuses to invite a name that
//! looks like a member's, and wherever a name that looks like another is
//! shown (the live console, `chat history`, `chat attach`, `chat
//! connections`), the other name and the sender's safety number go with it.

use chat_tests::{Discovery, wait_for_message};

/// `user1` with a Cyrillic е (U+0435).
const LOOKALIKE: &str = "us\u{0435}r1";

#[tokio::test]
async fn a_look_alike_name_is_refused_at_invitation_and_marked_wherever_shown() {
    let discovery = Discovery::start().await;
    let dir = tempfile::tempdir().unwrap();
    let url = discovery.url();
    let names = ["user1", "alice", LOOKALIKE];
    // All three hold admissions to the test network; the look-alike's was
    // made where nobody knew user1's name.
    let mut peers = chat_tests::start_network(&url, dir.path(), &names).await;
    let impostor = peers.pop().unwrap();
    let mut alice = peers.pop().unwrap();
    let user1 = peers.pop().unwrap();

    let text = "hi, it's user1 - please send me the wifi password";
    let (ok, report, err) = impostor.chat(&["send", text]).await;
    assert!(
        ok && report.matches("delivered").count() == 2,
        "{report}{err}"
    );
    wait_for_message(&alice.data_dir, text).await;
    let marked = format!("{LOOKALIKE} (looks like user1; safety number ");

    // Alice's live console.
    let line = loop {
        let line = alice.next_console_line().await;
        if line.contains(text) {
            break line;
        }
    };
    assert!(line.contains(&format!("From: {marked}")), "{line}");
    // Her history, and user1's: the impostor's line is marked, with the
    // safety number `chat verify` shows for it.
    let (_, verify, _) = alice.chat(&["verify", LOOKALIKE]).await;
    let number = verify
        .lines()
        .find_map(|l| l.trim_start().strip_prefix(LOOKALIKE))
        .and_then(|l| l.split("safety number: ").nth(1))
        .unwrap_or_else(|| panic!("{verify}"))
        .trim()
        .to_owned();
    let short: Vec<&str> = number.split(' ').take(2).collect();
    for peer in [&alice, &user1] {
        let (_, history, _) = peer.chat(&["history"]).await;
        let line = history.lines().find(|l| l.contains(text)).unwrap();
        assert!(
            line.contains(&format!("From {marked}{}…)", short.join(" "))),
            "{}: {line}",
            peer.name
        );
    }
    // Connections name the two as look-alikes.
    let (_, table, _) = alice.chat(&["connections"]).await;
    assert!(
        table.contains(&format!("NOTE: {LOOKALIKE} looks like user1")),
        "{table}"
    );

    // Inviting another look-alike (Cyrillic ѕ), or one of a member, or of
    // oneself, is refused with the name it looks like.
    for (who, name, like) in [
        (&alice, "u\u{0455}er1", "user1"),
        (&alice, "userl", "user1"),
        (&user1, "\u{0430}lice", "alice"),
    ] {
        let (ok, _, err) = who.chat(&["invite", name]).await;
        assert!(
            !ok && err.contains("looks like") && err.contains(&format!("{like:?}")),
            "{name}: {err}"
        );
    }
    let (ok, _, err) = alice.chat(&["invite", "bob"]).await;
    assert!(ok, "a name like nobody's is fine: {err}");
    drop(impostor);
}
