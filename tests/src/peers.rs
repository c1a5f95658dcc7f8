//! Peers for tests: real `peer-svc` processes driven through the real `chat`
//! CLI and the Control socket, or peers started in this process when a test
//! needs to reach inside (e.g. to count what was stored).

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use chat_proto::v1::{
    ChatMessage, ConnectionsRequest, HistoryRequest, control_client::ControlClient,
};
use peer_svc::Handle;
use tokio::{net::TcpListener, process::Command};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use crate::{PATIENCE, Process, binary, within};

/// How often readiness checks poll (connection lists, histories).
const POLL: Duration = Duration::from_millis(20);

/// Polls `check` until it returns true, failing after [`PATIENCE`].
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    within(what, async {
        while !check().await {
            tokio::time::sleep(POLL).await;
        }
    })
    .await
}

/// Names of the peers a Control client lists.
async fn connection_names(client: &mut ControlClient<Channel>, all: bool) -> Vec<String> {
    let request = ConnectionsRequest {
        all,
        ..Default::default()
    };
    match client.connections(request).await {
        Ok(r) => r
            .into_inner()
            .connections
            .into_iter()
            .map(|c| c.name)
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// True if a `chat send` report says `peer` got the message (its line
/// reads "NAME delivered").
pub fn delivered_to(report: &str, peer: &str) -> bool {
    report.lines().any(|l| {
        let mut words = l.split_whitespace();
        words.next() == Some(peer) && words.next() == Some("delivered")
    })
}

/// Every message in a Control client's history, following cursors.
pub async fn full_history(client: &mut ControlClient<Channel>) -> Vec<ChatMessage> {
    let mut all = Vec::new();
    let mut request = HistoryRequest::default();
    loop {
        let page = client
            .history(request.clone())
            .await
            .expect("history")
            .into_inner();
        all.extend(page.messages);
        if page.next_cursor.is_empty() {
            return all;
        }
        request.cursor = page.next_cursor;
    }
}

/// A real `peer-svc` process.
pub struct PeerProcess {
    /// Its name.
    pub name: String,
    /// Its data dir.
    pub data_dir: PathBuf,
    /// The process, with its stdout (the live console).
    pub process: Process,
}

impl PeerProcess {
    /// Starts `peer-svc --name NAME --listen 127.0.0.1:0 --discovery URL --data-dir DIR`.
    pub async fn start(name: &str, discovery_url: &str, data_dir: &Path) -> Self {
        Self::start_logged(name, discovery_url, data_dir, &[], None).await
    }

    /// Starts a peer inside the network namespace `netns`, listening on
    /// `listen` and, if given, advertising `advertise` to the others.
    pub async fn start_in(
        netns: &str,
        name: &str,
        listen: &str,
        advertise: Option<&str>,
        discovery_url: &str,
        data_dir: &Path,
    ) -> Self {
        let dir = data_dir.to_str().expect("utf-8 path");
        let mut args = vec![
            "--name",
            name,
            "--listen",
            listen,
            "--discovery",
            discovery_url,
            "--data-dir",
            dir,
        ];
        if let Some(advertise) = advertise {
            args.extend(["--advertise", advertise]);
        }
        let process = Process::spawn_in(Some(netns), "peer-svc", &args, &[], None).await;
        Self {
            name: name.to_owned(),
            data_dir: data_dir.to_owned(),
            process,
        }
    }

    /// Like [`PeerProcess::start`] with extra environment and the logs in `log`.
    pub async fn start_logged(
        name: &str,
        discovery_url: &str,
        data_dir: &Path,
        env: &[(&str, &str)],
        log: Option<&Path>,
    ) -> Self {
        Self::start_with_args(name, discovery_url, data_dir, &[], env, log).await
    }

    /// Like [`PeerProcess::start_logged`] with more arguments (e.g.
    /// `--create-network`, `--open`).
    pub async fn start_with_args(
        name: &str,
        discovery_url: &str,
        data_dir: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
        log: Option<&Path>,
    ) -> Self {
        let dir = data_dir.to_str().expect("utf-8 path");
        let mut args = vec![
            "--name",
            name,
            "--listen",
            "127.0.0.1:0",
            "--discovery",
            discovery_url,
            "--data-dir",
            dir,
        ];
        args.extend_from_slice(extra);
        let process = Process::spawn_logged("peer-svc", &args, env, log).await;
        Self {
            name: name.to_owned(),
            data_dir: data_dir.to_owned(),
            process,
        }
    }

    /// Starts `name` founding a network of its own (`--create-network`).
    pub async fn found(name: &str, discovery_url: &str, data_dir: &Path) -> Self {
        Self::start_with_args(
            name,
            discovery_url,
            data_dir,
            &["--create-network"],
            &[],
            None,
        )
        .await
    }

    /// Invites `name` here (`chat invite NAME` with `invite_args`) and
    /// starts it in `data_dir` with the token in `CHAT_JOIN`, `env` and its
    /// log in `log`: a member this peer admitted.
    pub async fn admit(
        &self,
        name: &str,
        invite_args: &[&str],
        discovery_url: &str,
        data_dir: &Path,
        env: &[(&str, &str)],
        log: Option<&Path>,
    ) -> Self {
        let mut args = vec!["invite", name];
        args.extend_from_slice(invite_args);
        let (ok, token, err) = self.chat(&args).await;
        assert!(ok, "{}: chat invite {name}: {err}", self.name);
        let mut env = env.to_vec();
        env.push(("CHAT_JOIN", token.trim()));
        Self::start_logged(name, discovery_url, data_dir, &env, log).await
    }

    /// Waits until this newcomer is a member: `inviter` confirmed the use
    /// of its token in their first handshake, which is when it lists
    /// `inviter` among its members. (Before, it can neither invite nor
    /// send.)
    pub async fn wait_confirmed_by(&self, inviter: &str) {
        let client = self.control().await;
        eventually(
            &format!("{} to be confirmed by {inviter}", self.name),
            || {
                let mut client = client.clone();
                async move {
                    connection_names(&mut client, false)
                        .await
                        .iter()
                        .any(|n| n == inviter)
                }
            },
        )
        .await;
    }

    /// A Control client over the peer's Unix socket.
    pub async fn control(&self) -> ControlClient<Channel> {
        peer_svc::control_client::connect(&self.data_dir)
            .await
            .expect("control socket")
    }

    /// Runs the real `chat` CLI against this peer; returns (success, stdout, stderr).
    pub async fn chat(&self, args: &[&str]) -> (bool, String, String) {
        chat_cli(&self.data_dir, args).await
    }

    /// Waits until this peer lists exactly `names` as its connections
    /// (the members it knows).
    pub async fn wait_connections(&self, names: &[&str]) {
        self.wait_listed(names, false).await;
    }

    /// Waits until this peer lists exactly `names`; with `all`, names
    /// that are not members too (`chat connections --all`).
    pub async fn wait_listed(&self, names: &[&str], all: bool) {
        let client = self.control().await;
        let mut want: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        want.sort();
        eventually(&format!("{} to list {names:?}", self.name), || {
            let mut client = client.clone();
            let want = want.clone();
            async move {
                let mut got = connection_names(&mut client, all).await;
                got.sort();
                got == want
            }
        })
        .await;
    }

    /// Reads the next line the peer printed on its console (stdout).
    pub async fn next_console_line(&mut self) -> String {
        within(
            &format!("{}'s console", self.name),
            self.process.stdout.next_line(),
        )
        .await
        .expect("read stdout")
        .unwrap_or_else(|| panic!("{} closed stdout", self.name))
    }
}

/// Starts one `peer-svc` per name (data under `dir/NAME`) and waits until
/// each lists all the others.
pub async fn start_network(discovery_url: &str, dir: &Path, names: &[&str]) -> Vec<PeerProcess> {
    let mut peers = Vec::new();
    for name in names {
        peers.push(PeerProcess::start(name, discovery_url, &dir.join(name)).await);
    }
    for p in &peers {
        let others: Vec<&str> = names.iter().copied().filter(|n| *n != p.name).collect();
        p.wait_connections(&others).await;
    }
    peers
}

/// Waits until the peer with `data_dir` has a message with `text` in its
/// history (however it arrived: delivered, synced or from the outbox).
pub async fn wait_for_message(data_dir: &Path, text: &str) {
    eventually(
        &format!("{text:?} in {}'s history", data_dir.display()),
        || async move {
            match peer_svc::control_client::connect(data_dir).await {
                Ok(mut c) => full_history(&mut c).await.iter().any(|m| m.text == text),
                Err(_) => false,
            }
        },
    )
    .await;
}

/// Starts `chat --data-dir DIR ARGS...` with stdin, stdout and stderr piped,
/// for verbs that read input or stream output (killed when dropped).
pub fn spawn_chat(data_dir: &Path, args: &[&str]) -> tokio::process::Child {
    Command::new(binary("chat"))
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn chat")
}

/// Runs `chat --data-dir DIR ARGS...`; returns (success, stdout, stderr).
pub async fn chat_cli(data_dir: &Path, args: &[&str]) -> (bool, String, String) {
    let out = within(
        "chat",
        Command::new(binary("chat"))
            .arg("--data-dir")
            .arg(data_dir)
            .args(args)
            .stdin(Stdio::null())
            .output(),
    )
    .await
    .expect("run chat");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A peer running inside the test process.
pub struct InProcessPeer {
    /// The node, to inspect its state.
    pub node: Handle,
    /// Where other peers dial it (its listener, or the advertised address).
    pub address: String,
    /// Its data dir.
    pub data_dir: PathBuf,
    shutdown: CancellationToken,
    running: Option<peer_svc::Running>,
}

impl InProcessPeer {
    /// Starts a peer named `name` with data under `data_dir`.
    pub async fn start(name: &str, discovery_url: &str, data_dir: &Path) -> Self {
        Self::start_with(peer_svc::Config::new(name, discovery_url, data_dir)).await
    }

    /// Starts a peer with `config` on a free loopback port.
    pub async fn start_with(config: peer_svc::Config) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        Self::start_on(listener, config).await
    }

    /// Starts a peer with `config` on `listener`.
    pub async fn start_on(listener: TcpListener, mut config: peer_svc::Config) -> Self {
        // A member of the test network unless the test chose otherwise.
        if config.admission == peer_svc::config::Joining::Member {
            config.admission = peer_svc::config::Joining::Join(crate::invitation(&config.name));
        }
        let data_dir = config.data_dir.clone();
        let shutdown = CancellationToken::new();
        let running = peer_svc::start(listener, config, shutdown.clone())
            .await
            .expect("peer starts");
        Self {
            node: running.node.clone(),
            address: running.address.clone(),
            data_dir,
            shutdown,
            running: Some(running),
        }
    }

    /// A Control client over the peer's Unix socket.
    pub async fn control(&self) -> ControlClient<Channel> {
        peer_svc::control_client::connect(&self.data_dir)
            .await
            .expect("control socket")
    }

    /// Waits until this peer knows `names`.
    pub async fn wait_connections(&self, names: &[&str]) {
        let node = self.node.clone();
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        eventually("in-process peer connections", || {
            let ok = names.iter().all(|n| node.directory.get(n).is_some());
            async move { ok }
        })
        .await;
    }

    /// Stops the peer gracefully and waits for it.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(running) = self.running.take() {
            tokio::time::timeout(PATIENCE, running.wait())
                .await
                .expect("peer stops within patience");
        }
    }
}

impl Drop for InProcessPeer {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}
