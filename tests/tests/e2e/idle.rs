//! A peer at rest spends no CPU, whatever it was left with (issue 25's
//! "also found"): after `chat leave PEER` with messages queued for that
//! peer (the outbox worker once kept a wait for it that was past due for
//! ever, and spun at 60–75% of a core), after `chat remove`, while a peer
//! never answers, and with a full outbox. Each is measured as the peer's
//! own CPU time (utime + stime from /proc) over a quiet window.

use std::time::Duration;

use chat_tests::{Discovery, PeerProcess};

/// How long each quiet window lasts.
const WINDOW: Duration = Duration::from_secs(5);

/// Most CPU a peer may spend in a window: 10% of a core (a spinning
/// outbox worker spends 60–75%; a resting peer about nothing).
const MAX_BUSY: f64 = 0.10;

/// CPU seconds `pid` has used so far: the sum over its threads of the
/// first field of /proc/PID/task/TID/schedstat (nanoseconds on a CPU). A
/// thread that ended is not counted, which only errs toward idle for
/// threads that came and went within the window.
fn cpu_seconds(pid: u32) -> f64 {
    let mut nanos: u64 = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).expect("proc tasks") {
        let path = task.unwrap().path().join("schedstat");
        if let Ok(stat) = std::fs::read_to_string(path) {
            nanos += stat
                .split_whitespace()
                .next()
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    nanos as f64 / 1e9
}

/// Fails if `peer` uses more than [`MAX_BUSY`] of a core over a window
/// after `what`.
async fn stays_idle(peer: &PeerProcess, what: &str) {
    let pid = peer.process.child.id().expect("running");
    // Let what was just started settle (a send's own work, a handshake).
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = cpu_seconds(pid);
    tokio::time::sleep(WINDOW).await;
    let busy = (cpu_seconds(pid) - before) / WINDOW.as_secs_f64();
    assert!(
        busy <= MAX_BUSY,
        "{} used {:.0}% of a core over {WINDOW:?} of rest after {what}",
        peer.name,
        busy * 100.0
    );
}

/// Sends `signal` (e.g. "STOP", "CONT") to `peer`.
fn signal(peer: &PeerProcess, signal: &str) {
    let pid = peer.process.child.id().expect("running");
    let ok = std::process::Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
}

#[tokio::test]
async fn a_peer_at_rest_spends_no_cpu_whatever_is_queued_or_dropped() {
    let discovery = Discovery::start().await;
    let dir = tempfile::tempdir().unwrap();
    let url = discovery.url();
    // A small outbox, so a full one is quick to make.
    let alice = PeerProcess::start_with_args(
        "alice",
        &url,
        &dir.path().join("alice"),
        &[
            "--create-network",
            "--outbox-limit",
            "3",
            "--outbox-total-limit",
            "5",
        ],
        &[],
        None,
    )
    .await;
    let mut others = Vec::new();
    for name in ["bob", "carol", "dave"] {
        others.push(
            alice
                .admit(name, &[], &url, &dir.path().join(name), &[], None)
                .await,
        );
    }
    alice.wait_connections(&["bob", "carol", "dave"]).await;
    let (ok, report, err) = alice.chat(&["send", "hello all"]).await;
    assert!(
        ok && report.matches("delivered").count() == 3,
        "{report}{err}"
    );
    let [bob, carol, dave] = <[PeerProcess; 3]>::try_from(others).ok().unwrap();
    stays_idle(&alice, "a message delivered to everyone").await;

    // A peer that never answers: bob is frozen with a message queued.
    signal(&bob, "STOP");
    let (ok, _, err) = alice.chat(&["send", "for a frozen bob"]).await;
    assert!(ok, "{err}");
    stays_idle(&alice, "a message queued for a peer that never answers").await;

    // `chat leave bob` discards what was queued for him.
    let (ok, _, err) = alice.chat(&["leave", "bob"]).await;
    assert!(ok, "{err}");
    stays_idle(&alice, "chat leave of a peer with messages queued").await;
    signal(&bob, "CONT");

    // Carol's machine dies with a message queued for her; alice removes her.
    let mut carol = carol;
    carol.process.child.kill().await.unwrap();
    let (ok, _, err) = alice.chat(&["send", "for a dead carol"]).await;
    assert!(ok, "{err}");
    let (ok, _, err) = alice.chat(&["remove", "carol"]).await;
    assert!(ok, "{err}");
    stays_idle(&alice, "chat remove of a peer with messages queued").await;

    // Dave is gone and alice's outbox for him overflows.
    let mut dave = dave;
    dave.process.child.kill().await.unwrap();
    for i in 0..8 {
        let (ok, _, err) = alice.chat(&["send", &format!("for dave {i}")]).await;
        assert!(ok, "{err}");
    }
    let (_, out, _) = alice.chat(&["connections"]).await;
    assert!(out.contains("dave"), "{out}");
    stays_idle(&alice, "an outbox full for a dead peer").await;
    drop(bob);
}
