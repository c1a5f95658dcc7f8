//! The processes under test: one child process that reports its address
//! and memory, and a network of a discovery-svc and connected peer-svcs.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use chat_proto::v1::{ConnectionsRequest, InviteRequest};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
};

/// A child process that is killed when dropped.
pub struct Proc {
    child: Child,
    /// The address from its "… listening on ADDR" first line.
    pub addr: String,
}

impl Proc {
    /// Starts `bin` with `args` and waits for its "listening on" line. Its
    /// logs are dropped, or shown at the level `CHAT_BENCH_LOGS` names.
    pub async fn spawn(bin: &Path, args: &[&str]) -> anyhow::Result<Self> {
        let shown = std::env::var("CHAT_BENCH_LOGS").ok();
        let stderr = if shown.is_some() {
            Stdio::inherit()
        } else {
            Stdio::null()
        };
        Self::spawn_with(bin, args, stderr, shown.as_deref().unwrap_or("warn")).await
    }

    /// Like [`Proc::spawn`], its logs at `level` appended to `log`.
    pub async fn spawn_logged(
        bin: &Path,
        args: &[&str],
        log: &Path,
        level: &str,
    ) -> anyhow::Result<Self> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)?;
        Self::spawn_with(bin, args, Stdio::from(file), level).await
    }

    async fn spawn_with(
        bin: &Path,
        args: &[&str],
        stderr: Stdio,
        level: &str,
    ) -> anyhow::Result<Self> {
        let mut child = Command::new(bin)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .env("RUST_LOG", level)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("spawn {}", bin.display()))?;
        let mut lines = BufReader::new(child.stdout.take().context("stdout")?).lines();
        let first = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
            .await
            .context("start timeout")??
            .context("exited early")?;
        let addr = first
            .rsplit_once(" listening on ")
            .context("no listening line")?
            .1
            .to_owned();
        // Keep draining stdout (the console) so the peer never blocks on it.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Self { child, addr })
    }

    /// Resident memory now.
    pub fn rss_mb(&self) -> f64 {
        self.status_mb("VmRSS:")
    }

    /// Open file descriptors now.
    pub fn fds(&self) -> usize {
        let pid = self.child.id().unwrap_or(0);
        std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
    }

    /// CPU seconds used so far: the sum over its threads of the first field
    /// of /proc/PID/task/TID/schedstat (nanoseconds on a CPU).
    pub fn cpu_seconds(&self) -> f64 {
        let pid = self.child.id().unwrap_or(0);
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            return f64::NAN;
        };
        let nanos: u64 = tasks
            .flatten()
            .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
            .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
            .sum();
        nanos as f64 / 1e9
    }

    /// Peak resident memory so far.
    pub fn peak_rss_mb(&self) -> f64 {
        self.status_mb("VmHWM:")
    }

    fn status_mb(&self, field: &str) -> f64 {
        let pid = self.child.id().unwrap_or(0);
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|s| {
                s.lines().find(|l| l.starts_with(field)).and_then(|l| {
                    l.split_whitespace()
                        .nth(1)
                        .and_then(|kb| kb.parse::<f64>().ok())
                })
            })
            .map(|kb| kb / 1024.0)
            .unwrap_or(f64::NAN)
    }
}

/// The path of the binary `name` next to this one.
pub fn sibling(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let path = exe.parent().context("exe dir")?.join(name);
    if !path.exists() {
        bail!(
            "{} missing: build with `cargo build --release --workspace --bins`",
            path.display()
        );
    }
    Ok(path)
}

/// A network: discovery plus `n` peers, all connected.
pub struct Net {
    _dir: tempfile::TempDir,
    /// The discovery-svc.
    pub discovery: Proc,
    /// Each peer-svc with its data dir (where its Control socket is).
    pub peers: Vec<(Proc, PathBuf)>,
}

impl Net {
    /// Starts `n` peers and prints their pids, for `perf record -p`.
    pub async fn start_for_perf(n: usize) -> anyhow::Result<Self> {
        let net = Self::start(n).await?;
        let pids: Vec<String> = net
            .peers
            .iter()
            .map(|(p, _)| p.child.id().unwrap_or(0).to_string())
            .collect();
        eprintln!("peer pids (sender first): {}", pids.join(" "));
        Ok(net)
    }

    /// Starts a discovery-svc and `n` peers, and waits until every peer is
    /// connected to all the others.
    pub async fn start(n: usize) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let discovery =
            Proc::spawn(&sibling("discovery-svc")?, &["--listen", "127.0.0.1:0"]).await?;
        let url = format!("http://{}", discovery.addr);
        let mut peers: Vec<(Proc, PathBuf)> = Vec::new();
        for i in 0..n {
            let name = format!("p{i}");
            let data = dir.path().join(&name);
            // p0 founds the network and invites every other peer, as
            // `make up` does.
            let joining = match peers.first() {
                None => vec!["--create-network".to_owned()],
                Some((_, founder)) => {
                    let mut c = peer_svc::control_client::connect(founder).await?;
                    let token = c
                        .invite(InviteRequest {
                            name: name.clone(),
                            all_history: true,
                            ..Default::default()
                        })
                        .await?
                        .into_inner()
                        .token;
                    vec!["--join".to_owned(), token]
                }
            };
            let mut args = vec![
                "--name",
                &name,
                "--discovery",
                &url,
                "--data-dir",
                data.to_str().unwrap(),
            ];
            args.extend(joining.iter().map(String::as_str));
            let p = Proc::spawn(&sibling("peer-svc")?, &args).await?;
            peers.push((p, data));
        }
        for (_, data) in &peers {
            let mut c = peer_svc::control_client::connect(data).await?;
            let deadline = Instant::now() + Duration::from_secs(20);
            while c
                .connections(ConnectionsRequest::default())
                .await?
                .into_inner()
                .connections
                .len()
                < n - 1
            {
                if Instant::now() > deadline {
                    bail!("peers did not connect");
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        Ok(Self {
            _dir: dir,
            discovery,
            peers,
        })
    }
}
