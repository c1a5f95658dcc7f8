//! Discovery throughput and watch latency, on the in-memory store and on
//! etcd (two replicas sharing one etcd), in the same run: the [2/8] stage.

use std::{path::Path, sync::Arc, time::Duration};

use anyhow::Context;
use chat_noise::StaticKeypair;
use chat_proto::v1::{
    InfoRequest, InfoResponse, LeaveRequest, RegisterRequest, WatchRequest,
    discovery_client::DiscoveryClient,
};
use tokio::{process::Command, time::Instant};
use tonic::transport::Channel;

use crate::{
    load::{Run, drive},
    procs::{Proc, sibling},
    progress,
    report::{p50_p99, row},
};

/// What one store measured.
pub struct StoreRun {
    /// Register+Leave pairs per second from 50 clients.
    pub pairs: Run,
    /// Register → the Joined event at a watcher on the same replica.
    pub watch_same: Run,
    /// Register on one replica → Joined at a watcher on another (etcd only).
    pub watch_other: Option<Run>,
}

/// Discovery's answer to `Info`: what registration proofs are made to.
async fn info(client: &mut DiscoveryClient<Channel>) -> anyhow::Result<InfoResponse> {
    Ok(client.info(InfoRequest {}).await?.into_inner())
}

/// A proven registration of `key` as `name` (the proof is made per call,
/// as a peer does: its cost is part of what is measured).
fn proven(key: &StaticKeypair, info: &InfoResponse, name: &str) -> RegisterRequest {
    chat_proto::registration::request(key, info, name, "127.0.0.1:9").expect("a proof")
}

/// Register+Leave pairs from 50 clients against `url` for `secs`.
pub async fn pairs(url: &str, secs: f64) -> anyhow::Result<Run> {
    let clients: Vec<DiscoveryClient<Channel>> =
        futures::future::try_join_all((0..50).map(|_| DiscoveryClient::connect(url.to_owned())))
            .await?;
    let info = Arc::new(info(&mut clients[0].clone()).await?);
    // One key per client: proofs of one key must arrive in order.
    let keys: Arc<Vec<StaticKeypair>> =
        Arc::new((0..50).map(|_| StaticKeypair::generate()).collect());
    let clients = Arc::new(clients);
    Ok(drive(50, secs, move |i| {
        let mut c = clients[(i / 1_000_000) % 50].clone();
        let request = proven(&keys[(i / 1_000_000) % 50], &info, &format!("b{i}"));
        async move {
            let Ok(r) = c.register(request).await else {
                return false;
            };
            let r = r.into_inner();
            c.leave(LeaveRequest {
                lease_id: r.lease_id,
                lease_token: r.lease_token,
            })
            .await
            .is_ok()
        }
    })
    .await)
}

/// `n` registrations through `register_url`, one at a time, each timed
/// until a watcher on `watch_url` sees it join.
pub async fn watch_latency(register_url: &str, watch_url: &str, n: usize) -> anyhow::Result<Run> {
    let mut registrar = DiscoveryClient::connect(register_url.to_owned()).await?;
    let mut watcher = DiscoveryClient::connect(watch_url.to_owned()).await?;
    let mut stream = watcher.watch(WatchRequest::default()).await?.into_inner();
    let key = StaticKeypair::generate();
    let info = info(&mut registrar).await?;
    let start = Instant::now();
    let mut latencies = Vec::with_capacity(n);
    for i in 0..n {
        let name = format!("w{i}");
        let t0 = Instant::now();
        let r = registrar
            .register(proven(&key, &info, &name))
            .await?
            .into_inner();
        loop {
            let event = tokio::time::timeout(Duration::from_secs(10), stream.message())
                .await
                .context("watch event timeout")??
                .context("watch ended")?;
            if !event.initial && event.member.is_some_and(|m| m.name == name) {
                break;
            }
        }
        latencies.push(t0.elapsed());
        registrar
            .leave(LeaveRequest {
                lease_id: r.lease_id,
                lease_token: r.lease_token,
            })
            .await?;
    }
    Ok(Run {
        ops: n,
        elapsed: start.elapsed(),
        latencies,
    })
}

/// Both measures on a discovery-svc with the in-memory store.
pub async fn on_memory(secs: f64) -> anyhow::Result<StoreRun> {
    let lone = Proc::spawn(&sibling("discovery-svc")?, &["--listen", "127.0.0.1:0"]).await?;
    let url = format!("http://{}", lone.addr);
    let pairs = pairs(&url, secs).await?;
    let watch_same = watch_latency(&url, &url, 300).await?;
    Ok(StoreRun {
        pairs,
        watch_same,
        watch_other: None,
    })
}

/// An etcd server on free loopback ports with its data in `dir`, on disk:
/// etcd syncs every write, as it would in production.
pub struct Etcd {
    _child: tokio::process::Child,
    /// Its client URL.
    pub url: String,
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl Etcd {
    /// Starts etcd and waits until it accepts connections.
    pub async fn start(dir: &Path) -> anyhow::Result<Self> {
        let (client, peer) = (free_port()?, free_port()?);
        let url = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let child = Command::new("etcd")
            .args(["--name", "bench", "--data-dir"])
            .arg(dir.join("etcd"))
            .args([
                "--listen-client-urls",
                &url,
                "--advertise-client-urls",
                &url,
            ])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("bench={peer_url}")])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("start etcd (Debian package etcd-server; `make test-tools` installs it)")?;
        let etcd = Self { _child: child, url };
        let deadline = Instant::now() + Duration::from_secs(30);
        // Ready once a discovery-svc can open the store.
        while tokio::net::TcpStream::connect(("127.0.0.1", client))
            .await
            .is_err()
        {
            anyhow::ensure!(Instant::now() < deadline, "etcd did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(etcd)
    }
}

/// Both measures on two replicas over one etcd: throughput through one of
/// them, watch latency on the same replica and across replicas.
pub async fn on_etcd(secs: f64, dir: &Path) -> anyhow::Result<StoreRun> {
    let etcd = Etcd::start(dir).await?;
    let args = |prefix: &'static str| {
        vec![
            "--listen".to_owned(),
            "127.0.0.1:0".to_owned(),
            "--store".to_owned(),
            "etcd".to_owned(),
            "--etcd-endpoints".to_owned(),
            etcd.url.clone(),
            "--etcd-prefix".to_owned(),
            prefix.to_owned(),
        ]
    };
    let spawn = |prefix: &'static str| {
        let args = args(prefix);
        async move {
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            // etcd may still be electing itself leader: retry briefly.
            let mut last = None;
            for _ in 0..50 {
                match Proc::spawn(&sibling("discovery-svc")?, &refs).await {
                    Ok(p) => return Ok(p),
                    Err(e) => last = Some(e),
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(last.expect("tried"))
        }
    };
    let a = spawn("/bench/").await?;
    let b = spawn("/bench/").await?;
    let (url_a, url_b) = (format!("http://{}", a.addr), format!("http://{}", b.addr));
    let pairs = pairs(&url_a, secs).await?;
    let watch_same = watch_latency(&url_a, &url_a, 300).await?;
    let watch_other = watch_latency(&url_a, &url_b, 300).await?;
    drop((a, b, etcd));
    Ok(StoreRun {
        pairs,
        watch_same,
        watch_other: Some(watch_other),
    })
}

/// The discovery stage's measures on each store.
pub struct Stores {
    /// On a discovery-svc with the in-memory store.
    pub memory: StoreRun,
    /// On two replicas over one etcd; `None` when etcd could not run.
    pub etcd: Option<StoreRun>,
    /// etcd's data dir, removed at the end of the whole run.
    _etcd_dir: tempfile::TempDir,
}

/// [2/8]: Register+Leave throughput and watch latency on discoveries of
/// their own with no peers watching (the service alone), on the memory
/// store and on etcd; prints their rows.
pub async fn stage(secs: f64) -> anyhow::Result<Stores> {
    let progress = progress::show("discovery");
    let memory = on_memory(secs).await?;
    let etcd_dir = tempfile::tempdir()?;
    let etcd = match on_etcd(secs, etcd_dir.path()).await {
        Ok(run) => Some(run),
        Err(e) => {
            eprintln!("      etcd store not measured: {e:#}");
            None
        }
    };
    drop(progress);
    print_rows(&memory, etcd.as_ref());
    Ok(Stores {
        memory,
        etcd,
        _etcd_dir: etcd_dir,
    })
}

/// The stage's rows: the memory store, then etcd against it.
fn print_rows(memory: &StoreRun, etcd: Option<&StoreRun>) {
    let pairs = &memory.pairs;
    row(
        "discovery Register+Leave pairs/s, memory",
        format!("{:.0}", pairs.per_sec()),
        "-".into(),
        "-".into(),
    );
    row(
        "watch event latency p50/p99 ms, memory",
        p50_p99(&memory.watch_same),
        "-".into(),
        "-".into(),
    );
    if let Some(etcd) = etcd {
        row(
            "  same on etcd (vs memory), pairs/s",
            format!("{:.0}", etcd.pairs.per_sec()),
            format!("{:.0}", pairs.per_sec()),
            format!("{:.2}", etcd.pairs.per_sec() / pairs.per_sec()),
        );
        row(
            "  etcd watch p50/p99 ms, same replica",
            p50_p99(&etcd.watch_same),
            p50_p99(&memory.watch_same),
            format!(
                "{:.1}",
                etcd.watch_same.pct(0.5) / memory.watch_same.pct(0.5)
            ),
        );
        if let Some(other) = &etcd.watch_other {
            row(
                "  etcd watch p50/p99 ms, other replica",
                p50_p99(other),
                p50_p99(&memory.watch_same),
                format!("{:.1}", other.pct(0.5) / memory.watch_same.pct(0.5)),
            );
        }
    }
}
