//! Secrets never reach the logs: a whole scenario — handshakes, messages,
//! a newcomer's history sync, Control calls — at `RUST_LOG=trace`, then
//! every log is searched for the message texts and the key material.

use base64::Engine;
use chat_tests::{PeerProcess, Process, chat_cli, eventually};

#[tokio::test]
async fn a_trace_level_scenario_logs_no_message_text_and_no_key() {
    let dir = tempfile::tempdir().unwrap();
    let trace = [("RUST_LOG", "trace")];
    let discovery_log = dir.path().join("discovery.log");
    let discovery = Process::spawn_logged(
        "discovery-svc",
        &["--listen", "127.0.0.1:0"],
        &trace,
        Some(&discovery_log),
    )
    .await;
    let url = format!("http://{}", discovery.addr);
    let mut logs = vec![discovery_log];
    let mut peers = Vec::new();
    for name in ["alice", "bob"] {
        let log = dir.path().join(format!("{name}.log"));
        peers.push(
            PeerProcess::start_logged(name, &url, &dir.path().join(name), &trace, Some(&log)).await,
        );
        logs.push(log);
    }
    peers[0].wait_connections(&["bob"]).await;
    let secrets = [
        format!("the launch code is {}", rand::random::<u64>()),
        format!("meet me at {}", rand::random::<u64>()),
    ];
    let (ok, _, _) = peers[0].chat(&["send", &secrets[0]]).await;
    assert!(ok);
    let (ok, _, _) = peers[1].chat(&["send", &secrets[1]]).await;
    assert!(ok);
    let (ok, _, _) = peers[0].chat(&["handshake", "bob"]).await;
    assert!(ok);
    // A newcomer pulls both messages through history sync.
    let carol_log = dir.path().join("carol.log");
    let carol = PeerProcess::start_logged(
        "carol",
        &url,
        &dir.path().join("carol"),
        &trace,
        Some(&carol_log),
    )
    .await;
    logs.push(carol_log);
    eventually("carol to sync", || {
        let d = carol.data_dir.clone();
        async move { chat_cli(&d, &["history"]).await.1.lines().count() == 3 }
    })
    .await;
    peers.push(carol);

    let mut forbidden: Vec<(String, Vec<u8>)> = Vec::new();
    for s in &secrets {
        forbidden.push((format!("message text {s:?}"), s.as_bytes().to_vec()));
    }
    for p in &peers {
        let hex = std::fs::read_to_string(p.data_dir.join("identity.key")).unwrap();
        let hex = hex.trim().to_owned();
        let raw = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect::<Vec<u8>>();
        let b64 = base64::engine::general_purpose::STANDARD.encode(&raw);
        forbidden.push((format!("{}'s secret key (hex)", p.name), hex.into_bytes()));
        forbidden.push((
            format!("{}'s secret key (base64)", p.name),
            b64.into_bytes(),
        ));
        forbidden.push((format!("{}'s secret key (raw)", p.name), raw));
    }
    let mut total = 0;
    for log in &logs {
        let bytes = std::fs::read(log).unwrap();
        total += bytes.len();
        for (what, needle) in &forbidden {
            assert!(
                !chat_tests::contains(&bytes, needle),
                "{what} appears in {}",
                log.display()
            );
        }
    }
    assert!(
        total > 10_000,
        "trace logging was on ({total} bytes of logs)"
    );
}
