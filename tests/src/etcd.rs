//! A real etcd server for the tests of the etcd registry store: one per test
//! process, started on first use on free loopback ports with a fresh data
//! dir, and stopped (data dir removed) when the test process exits. Set
//! `CHAT_TEST_ETCD_ENDPOINTS` to use a running etcd instead.

use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    sync::OnceLock,
    time::{Duration, Instant},
};

use discovery_svc::config::StoreConfig;

/// How long a fresh etcd gets to become healthy.
const ETCD_START_PATIENCE: Duration = Duration::from_secs(30);

/// The client URL of the test etcd, starting it on first use.
pub fn etcd_endpoint() -> String {
    static ENDPOINT: OnceLock<String> = OnceLock::new();
    ENDPOINT
        .get_or_init(|| match std::env::var("CHAT_TEST_ETCD_ENDPOINTS") {
            Ok(url) if !url.is_empty() => url,
            _ => start_etcd(),
        })
        .clone()
}

/// A registry in the test etcd under a prefix of its own, so tests sharing
/// the server never see each other's members.
pub fn etcd_store() -> StoreConfig {
    etcd_store_at(&unique_prefix())
}

/// A registry in the test etcd under `prefix` (replicas of one service share it).
pub fn etcd_store_at(prefix: &str) -> StoreConfig {
    StoreConfig::Etcd {
        endpoints: vec![etcd_endpoint()],
        prefix: prefix.to_owned(),
    }
}

/// A key prefix no other test uses.
pub fn unique_prefix() -> String {
    format!("/p2p-chat-test/{:016x}/", rand::random::<u64>())
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

fn start_etcd() -> String {
    let etcd = which("etcd").unwrap_or_else(|| {
        panic!(
            "etcd is not installed: `make test` installs it (Debian package etcd-server), \
             or set CHAT_TEST_ETCD_ENDPOINTS to a running etcd"
        )
    });
    // tmpfs when there is one: etcd fsyncs every write, which tests don't need.
    let base = ["/dev/shm", "/tmp"]
        .into_iter()
        .find(|d| std::path::Path::new(d).is_dir())
        .expect("a temp dir");
    let data_dir = tempfile::Builder::new()
        .prefix("p2p-chat-etcd-")
        .tempdir_in(base)
        .expect("etcd data dir")
        .keep();
    let (client, peer) = (free_port(), free_port());
    let log = data_dir.with_extension("log");
    // A watchdog shell owns etcd: when this test process exits (however it
    // exits), it stops etcd and removes the data dir.
    let script = r#"
        "$ETCD" --name test --data-dir "$DIR/data" \
          --listen-client-urls "http://127.0.0.1:$CLIENT" --advertise-client-urls "http://127.0.0.1:$CLIENT" \
          --listen-peer-urls "http://127.0.0.1:$PEER" --initial-advertise-peer-urls "http://127.0.0.1:$PEER" \
          --initial-cluster "test=http://127.0.0.1:$PEER" >"$LOG" 2>&1 &
        etcd=$!
        while kill -0 "$OWNER" 2>/dev/null && kill -0 "$etcd" 2>/dev/null; do sleep 0.5; done
        kill "$etcd" 2>/dev/null; wait "$etcd"; rm -rf "$DIR" "$LOG"
    "#;
    // Never waited for: the watchdog outlives this process on purpose.
    #[allow(clippy::zombie_processes)]
    std::process::Command::new("sh")
        .args(["-c", script])
        .env("ETCD", etcd)
        .env("DIR", &data_dir)
        .env("LOG", &log)
        .env("CLIENT", client.to_string())
        .env("PEER", peer.to_string())
        .env("OWNER", std::process::id().to_string())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start etcd");
    let deadline = Instant::now() + ETCD_START_PATIENCE;
    while !healthy(client) {
        assert!(
            Instant::now() < deadline,
            "etcd did not become healthy on 127.0.0.1:{client} within {ETCD_START_PATIENCE:?}; log: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    format!("http://127.0.0.1:{client}")
}

/// etcd's `/health` answers `"health":"true"` once it has a leader.
fn healthy(port: u16) -> bool {
    let Ok(mut conn) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = conn.set_read_timeout(Some(Duration::from_secs(1)));
    if conn
        .write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut body = String::new();
    let _ = conn.read_to_string(&mut body);
    body.contains(r#""health":"true""#)
}

fn which(program: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}
