//! Issue 16, connections and file descriptors: a peer started with
//! `ulimit -n 1024` under a flood of 1,100 idle connections (from five
//! loopback addresses, so the per-address cap is not what saves it) keeps
//! its file descriptors within the listener's cap, its owner's Control
//! socket keeps answering, and once the flood is gone it delivers again.

use std::time::Duration;

use chat_tests::{Discovery, PeerProcess, chat_cli, wait_for_message, within};
use tokio::io::AsyncBufReadExt;

/// Open file descriptors of process `pid`.
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[tokio::test]
async fn the_control_socket_answers_during_a_connection_flood_with_ulimit_1024() {
    // This test process holds the 1,100 connections itself.
    chat_proto::process::raise_open_files_limit();
    let discovery = Discovery::start().await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("flooded");
    let command = format!(
        "ulimit -n 1024; exec {} --name flooded --discovery {} --data-dir {}",
        chat_tests::binary("peer-svc").display(),
        discovery.url(),
        data.display()
    );
    let mut child = tokio::process::Command::new("bash")
        .args(["-c", &command])
        .env("CHAT_JOIN", chat_tests::invitation("flooded"))
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let pid = child.id().unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let first = within("the listening line", lines.next_line())
        .await
        .unwrap()
        .unwrap_or_default();
    let addr: std::net::SocketAddr = first
        .rsplit_once(" listening on ")
        .map(|(_, a)| a.trim().parse().unwrap())
        .unwrap_or_else(|| panic!("unexpected first line {first:?}"));
    let alice = PeerProcess::start("alice", &discovery.url(), &dir.path().join("alice")).await;
    alice.wait_connections(&["flooded"]).await;
    let before = open_fds(pid);

    // 1,100 connections that never send a byte, 220 from each of five addresses.
    let mut flood = Vec::new();
    for i in 0..1_100 {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        let source = format!("127.0.0.{}:0", 2 + i % 5);
        socket.bind(source.parse().unwrap()).unwrap();
        if let Ok(stream) = socket.connect(addr).await {
            flood.push(stream);
        }
    }
    let during = open_fds(pid);
    let cap = 1024 / 2;
    assert!(
        during <= before + cap + 8,
        "fds {before} → {during}: the listener holds at most {cap} connections"
    );

    // The owner's Control socket answers, promptly, while the flood holds.
    let asked = std::time::Instant::now();
    let (ok, out, err) = chat_cli(&data, &["history"]).await;
    assert!(ok, "history during the flood: {err}");
    assert!(out.contains("history"), "{out}");
    let (ok, _, err) = chat_cli(&data, &["connections"]).await;
    assert!(ok, "connections during the flood: {err}");
    assert!(
        asked.elapsed() < Duration::from_secs(10),
        "Control took {:?}",
        asked.elapsed()
    );

    // When the flood is gone the public port serves members again.
    drop(flood);
    let (ok, report, err) = alice.chat(&["send", "after the flood"]).await;
    assert!(ok, "{err}");
    assert!(!report.contains("failed"), "{report}");
    wait_for_message(&data, "after the flood").await;
    child.kill().await.unwrap();
}
