//! `make flood`: the attacks of issue 16, each for a few seconds, against a
//! real network on loopback (Discovery and three peers; p0 is the target,
//! p1 the member who sends and handshakes during each attack). Per attack:
//! the attacker's rate, the target's RSS and open file descriptors before,
//! during and after, the CPU it spent during the attack, what became of a
//! member's send made during the attack, and that member's handshake
//! latency. At the end every message sent during the attacks is looked for
//! at its recipients: "messages lost". The member-side attacks of issue 24
//! follow: a thousand outsider names while a member sends (p1 the victim),
//! and a member removing invitations nobody used as fast as it can (p0, who
//! takes them in by reconciliation, the victim; its history.db size is
//! printed before and after).
//!
//! Bounded: every attack stops after `--seconds` (default 5) and every
//! connection is to 127.0.0.1.

use std::{
    net::SocketAddr,
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context;
use chat_noise::StaticKeypair;
use chat_proto::v1::{
    HandshakeRequest, HistoryRequest, InfoRequest, InfoResponse, InviteRequest, LeaveRequest,
    PeerHandshakeRequest, SendRequest, WatchRequest, delivery::Status as DeliveryStatus,
    discovery_client::DiscoveryClient, peer_client::PeerClient,
};
use tokio::io::AsyncWriteExt;

use crate::procs::{Net, Proc};

/// What one attack does, for `secs`; returns (attempts, refused).
type AttackFn<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = (u64, u64)> + Send + 'a>>;

/// Resident memory (MB) and open file descriptors of a process.
fn sample(p: &Proc) -> (f64, usize) {
    (p.rss_mb(), p.fds())
}

/// Runs every attack in turn and prints the table.
pub async fn run(secs: f64) -> anyhow::Result<()> {
    chat_proto::process::raise_open_files_limit();
    let net = Net::start(3).await?;
    let (target, target_dir) = (&net.peers[0].0, net.peers[0].1.clone());
    let member_dir = net.peers[1].1.clone();
    let discovery_url = format!("http://{}", net.discovery.addr);
    let target_addr: SocketAddr = target.addr.parse()?;
    let discovery_addr: SocketAddr = net.discovery.addr.parse()?;
    let target_key = target_key(&discovery_url).await?;
    let network = network_key(&target_dir).await?;

    println!(
        "{:<34} {:>10} {:>9} {:>16} {:>16} {:>7} {:>22} {:>10}",
        "attack (target)",
        "rate/s",
        "refused",
        "RSS MB b/d/a",
        "fds b/d/a",
        "CPU s",
        "member's send",
        "hs ms"
    );
    let mut sent = Vec::new();
    let attacks: Vec<(&str, bool)> = vec![
        ("handshake junk, no mac1 (p0)", false),
        ("handshake, right mac1 (p0)", false),
        ("3,000 idle connections (p0)", false),
        ("3,000 HTTP/2 prefaces (Discovery)", true),
        ("mass registration (Discovery)", true),
        ("watch slots (Discovery)", true),
        ("health watches (Discovery)", true),
        ("1,000 outsider names, sends (p1)", false),
        ("removal flood by a member (p0)", false),
    ];
    let db_before = db_mb(&target_dir);
    for (i, (name, on_discovery)) in attacks.into_iter().enumerate() {
        let victim = match i {
            _ if on_discovery => &net.discovery,
            7 => &net.peers[1].0,
            _ => target,
        };
        let before = sample(victim);
        let cpu_before = victim.cpu_seconds();
        let attack: AttackFn = match i {
            0 => Box::pin(handshakes(target_addr, target_key, None, secs)),
            1 => Box::pin(handshakes(
                target_addr,
                target_key,
                Some(network.clone()),
                secs,
            )),
            2 => Box::pin(connections(target_addr, 3_000, false, secs)),
            3 => Box::pin(connections(discovery_addr, 3_000, true, secs)),
            4 => Box::pin(registrations(discovery_url.clone(), secs)),
            5 => Box::pin(watches(discovery_url.clone(), secs)),
            6 => Box::pin(health_watches(discovery_url.clone(), secs)),
            7 => Box::pin(outsider_names(
                discovery_url.clone(),
                member_dir.clone(),
                secs,
            )),
            _ => Box::pin(removals(member_dir.clone(), secs)),
        };
        let attack = tokio::spawn(unbounded(attack));
        // Let it ramp up, then act as a member and sample.
        tokio::time::sleep(Duration::from_secs_f64((secs / 3.0).min(1.5))).await;
        let text = format!("during attack {i}: {name}");
        let (report, handshake_ms) = member_acts(&member_dir, &text).await;
        sent.push(text);
        let during = sample(victim);
        let (attempts, refused) = attack.await?;
        let cpu = victim.cpu_seconds() - cpu_before;
        // After: give the service a moment to close what the attack left.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let after = sample(victim);
        println!(
            "{:<34} {:>10.0} {:>9} {:>16} {:>16} {:>7.2} {:>22} {:>10}",
            name,
            attempts as f64 / secs,
            refused,
            format!("{:.0}/{:.0}/{:.0}", before.0, during.0, after.0),
            format!("{}/{}/{}", before.1, during.1, after.1),
            cpu,
            report,
            handshake_ms.map_or("failed".into(), |ms| format!("{ms:.1}")),
        );
    }
    println!(
        "p0's history.db: {db_before:.1} MB before the attacks, {:.1} MB after (removals kept per branch: {})",
        db_mb(&target_dir),
        peer_svc::removals::MAX_REMOVALS_PER_BRANCH
    );

    // Every message sent during an attack reaches p0 and p2 in the end.
    let mut lost = 0;
    for dir in [&target_dir, &net.peers[2].1] {
        for text in &sent {
            if !eventually_has(dir, text, Duration::from_secs(60)).await? {
                eprintln!("missing at {}: {text}", dir.display());
                lost += 1;
            }
        }
    }
    println!("messages sent during the attacks: {}", sent.len() * 2);
    println!("messages lost: {lost}");
    if lost > 0 {
        anyhow::bail!("{lost} messages lost");
    }
    Ok(())
}

/// The size of a peer's history.db with its WAL, in MB.
fn db_mb(dir: &Path) -> f64 {
    ["history.db", "history.db-wal"]
        .iter()
        .filter_map(|f| std::fs::metadata(dir.join(f)).ok())
        .map(|m| m.len() as f64 / 1e6)
        .sum()
}

/// 1,000 names registered by an outsider (from 127.0.0.9, with keys of its
/// own, at an address where nothing listens) and held while the member in
/// `member_dir` sends a message every 100 ms: members send to and queue for
/// admitted members only, so each costs the sender at most one failed
/// attempt per 30 s. Returns (registrations, refused).
async fn outsider_names(url: String, member_dir: std::path::PathBuf, secs: f64) -> (u64, u64) {
    let Some((mut client, info)) = outsider(url).await else {
        return (0, 0);
    };
    let (mut attempts, mut refused, mut leases) = (0u64, 0u64, Vec::new());
    for i in 0..1_000 {
        match register_outsider(&mut client, &info, &format!("outsider-{i}")).await {
            Some(lease) => leases.push(lease),
            None => refused += 1,
        }
        attempts += 1;
    }
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    if let Ok(mut control) = peer_svc::control_client::connect(&member_dir).await {
        let mut n = 0;
        while Instant::now() < deadline {
            let _ = control
                .send(SendRequest {
                    text: format!("while outsiders are listed {n}"),
                    id: String::new(),
                })
                .await;
            n += 1;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    leave_all(&mut client, leases).await;
    (attempts, refused)
}

/// The member in `member_dir` invites names and removes them at once, as
/// fast as it can: every member takes the removals in (by handshake and
/// reconciliation), each branch of the network keeping at most
/// `MAX_REMOVALS_PER_BRANCH`. Returns (removals, refused).
async fn removals(member_dir: std::path::PathBuf, secs: f64) -> (u64, u64) {
    let Ok(mut control) = peer_svc::control_client::connect(&member_dir).await else {
        return (0, 0);
    };
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let (mut attempts, mut refused) = (0u64, 0u64);
    while Instant::now() < deadline {
        let name = format!("unused{attempts}");
        let invited = control
            .invite(InviteRequest {
                name: name.clone(),
                all_history: false,
                ..Default::default()
            })
            .await;
        let removed = match invited {
            Ok(_) => control
                .remove(chat_proto::v1::RemoveRequest {
                    name,
                    ..Default::default()
                })
                .await
                .is_ok(),
            Err(_) => false,
        };
        attempts += 1;
        refused += u64::from(!removed);
    }
    // p0 hears of them at its next handshake with p1.
    let _ = control
        .handshake(HandshakeRequest { peer: "p0".into() })
        .await;
    (attempts, refused)
}

/// Runs the boxed attack (a named future type for `tokio::spawn`).
async fn unbounded(attack: AttackFn<'static>) -> (u64, u64) {
    attack.await
}

/// p0's static key, as Discovery lists it.
async fn target_key(discovery_url: &str) -> anyhow::Result<[u8; 32]> {
    let mut client = DiscoveryClient::connect(discovery_url.to_owned()).await?;
    let members = client
        .list(chat_proto::v1::ListRequest::default())
        .await?
        .into_inner()
        .members;
    let p0 = members
        .iter()
        .find(|m| m.name == "p0")
        .context("p0 listed")?;
    Ok(p0.public_key.as_slice().try_into()?)
}

/// The network key, from an invitation p0 hands out: what an insider with
/// an invitation knows.
async fn network_key(founder_dir: &Path) -> anyhow::Result<Vec<u8>> {
    let mut control = peer_svc::control_client::connect(founder_dir).await?;
    let token = control
        .invite(InviteRequest {
            name: "flooder".into(),
            all_history: false,
            ..Default::default()
        })
        .await?
        .into_inner()
        .token;
    let invitation = peer_svc::credential::decode_token(&token)?;
    Ok(invitation.admission.context("an admission")?.network)
}

/// The member's send during the attack (how it went to p0 and p2) and its
/// handshake latency with p0.
async fn member_acts(member_dir: &Path, text: &str) -> (String, Option<f64>) {
    let Ok(mut control) = peer_svc::control_client::connect(member_dir).await else {
        return ("control down".into(), None);
    };
    let t0 = Instant::now();
    let handshake = control
        .handshake(HandshakeRequest { peer: "p0".into() })
        .await;
    let handshake_ms = handshake.ok().map(|_| t0.elapsed().as_secs_f64() * 1000.0);
    let report = match control
        .send(SendRequest {
            text: text.to_owned(),
            id: String::new(),
        })
        .await
    {
        Ok(r) => {
            let r = r.into_inner();
            let of = |peer: &str| {
                r.deliveries
                    .iter()
                    .find(|d| d.peer == peer)
                    .map_or("-", |d| match d.status() {
                        DeliveryStatus::Delivered => "delivered",
                        DeliveryStatus::Queued => "queued",
                        DeliveryStatus::Refused => "refused",
                        _ => "failed",
                    })
            };
            format!("p0 {} p2 {}", of("p0"), of("p2"))
        }
        Err(s) => format!("send failed: {:?}", s.code()),
    };
    (report, handshake_ms)
}

/// Whether `text` is in the history of the peer in `dir` within `wait`.
async fn eventually_has(dir: &Path, text: &str, wait: Duration) -> anyhow::Result<bool> {
    let mut control = peer_svc::control_client::connect(dir).await?;
    let deadline = Instant::now() + wait;
    loop {
        let page = control
            .history(HistoryRequest {
                limit: 100,
                ..Default::default()
            })
            .await?
            .into_inner();
        if page.messages.iter().any(|m| m.text == text) {
            return Ok(true);
        }
        if Instant::now() > deadline {
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// First handshake messages of 200 junk bytes from 32 tasks: with no mac1
/// (anyone), or with a right one (an insider knowing `network`).
async fn handshakes(
    target: SocketAddr,
    key: [u8; 32],
    network: Option<Vec<u8>>,
    secs: f64,
) -> (u64, u64) {
    let Ok(client) = PeerClient::connect(format!("http://{target}")).await else {
        return (0, 0);
    };
    let (attempts, refused) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let tasks: Vec<_> = (0..32)
        .map(|t| {
            let (mut client, network) = (client.clone(), network.clone());
            let (attempts, refused) = (attempts.clone(), refused.clone());
            tokio::spawn(async move {
                let mut i = 0u32;
                while Instant::now() < deadline {
                    let message: Vec<u8> = (0..200u32)
                        .map(|k| (k.wrapping_mul(31) ^ i ^ t) as u8)
                        .collect();
                    let mac1 = match &network {
                        Some(n) => {
                            let mac_key = peer_svc::handshake_mac::key(n, &key);
                            peer_svc::handshake_mac::mac1(&mac_key, &message).to_vec()
                        }
                        None => vec![0; 16],
                    };
                    if client
                        .handshake(PeerHandshakeRequest { message, mac1 })
                        .await
                        .is_err()
                    {
                        refused.fetch_add(1, Ordering::Relaxed);
                    }
                    attempts.fetch_add(1, Ordering::Relaxed);
                    i += 1;
                }
            })
        })
        .collect();
    futures::future::join_all(tasks).await;
    (
        attempts.load(Ordering::Relaxed),
        refused.load(Ordering::Relaxed),
    )
}

/// `n` connections held open for `secs`, silent or sending only the
/// HTTP/2 preface; "refused" counts those the server closed at once.
async fn connections(target: SocketAddr, n: usize, preface: bool, secs: f64) -> (u64, u64) {
    let start = Instant::now();
    let mut held = Vec::new();
    let mut attempts = 0;
    for i in 0..n {
        attempts += 1;
        // Spread over loopback addresses, past the per-address cap.
        let socket = match tokio::net::TcpSocket::new_v4() {
            Ok(s) => s,
            Err(_) => break,
        };
        let source: SocketAddr = format!("127.0.0.{}:0", 2 + i % 8)
            .parse()
            .expect("an address");
        if socket.bind(source).is_err() {
            continue;
        }
        if let Ok(mut stream) = socket.connect(target).await {
            if preface {
                let _ = stream.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await;
            }
            held.push(stream);
        }
    }
    let left = Duration::from_secs_f64(secs).saturating_sub(start.elapsed());
    tokio::time::sleep(left).await;
    // Closed by the server: a read sees EOF or a reset at once.
    let mut closed = 0;
    for stream in &held {
        let mut buf = [0u8; 64];
        match stream.try_read(&mut buf) {
            Ok(0) => closed += 1,
            Err(e) if e.kind() != std::io::ErrorKind::WouldBlock => closed += 1,
            _ => {}
        }
    }
    (attempts, closed)
}

/// A Discovery client from 127.0.0.9 (another host, as Discovery's caps
/// count it) and Discovery's info for registration proofs.
async fn outsider(
    url: String,
) -> Option<(DiscoveryClient<tonic::transport::Channel>, InfoResponse)> {
    let channel = tonic::transport::Endpoint::from_shared(url)
        .ok()?
        .local_address(Some("127.0.0.9".parse().expect("an address")))
        .connect()
        .await
        .ok()?;
    let mut client = DiscoveryClient::new(channel);
    let info = client.info(InfoRequest {}).await.ok()?.into_inner();
    Some((client, info))
}

/// Registers `name` with a key of its own at an address where nothing
/// listens; its lease, or None if refused.
async fn register_outsider(
    client: &mut DiscoveryClient<tonic::transport::Channel>,
    info: &InfoResponse,
    name: &str,
) -> Option<(String, String)> {
    let request =
        chat_proto::registration::request(&StaticKeypair::generate(), info, name, "127.0.0.1:9")
            .expect("a proof");
    let r = client.register(request).await.ok()?.into_inner();
    Some((r.lease_id, r.lease_token))
}

/// Leaves every lease in `leases`.
async fn leave_all(
    client: &mut DiscoveryClient<tonic::transport::Channel>,
    leases: Vec<(String, String)>,
) {
    for (lease_id, lease_token) in leases {
        let _ = client
            .leave(LeaveRequest {
                lease_id,
                lease_token,
            })
            .await;
    }
}

/// Registrations of fresh names and keys from 16 clients (from another
/// loopback address, as another host would), each proven; "refused" counts
/// the cap's refusals. Every lease is left at the end.
async fn registrations(url: String, secs: f64) -> (u64, u64) {
    let Some((client, info)) = outsider(url).await else {
        return (0, 0);
    };
    let info = Arc::new(info);
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let tasks: Vec<_> = (0..16)
        .map(|t| {
            let (mut client, info) = (client.clone(), info.clone());
            tokio::spawn(async move {
                let (mut attempts, mut refused, mut leases) = (0u64, 0u64, Vec::new());
                while Instant::now() < deadline {
                    let name = format!("ghost-{t}-{attempts}");
                    match register_outsider(&mut client, &info, &name).await {
                        Some(lease) => leases.push(lease),
                        None => refused += 1,
                    }
                    attempts += 1;
                }
                leave_all(&mut client, leases).await;
                (attempts, refused)
            })
        })
        .collect();
    let mut totals = (0, 0);
    for t in futures::future::join_all(tasks).await {
        let (a, r) = t.unwrap_or_default();
        totals = (totals.0 + a, totals.1 + r);
    }
    totals
}

/// Anonymous Watch streams opened and held over 8 connections (under each
/// connection's stream cap), then, once the slots are full, dropped and
/// re-opened at once, as fast as the server answers.
async fn watches(url: String, secs: f64) -> (u64, u64) {
    const CONNECTIONS: usize = 8;
    const PER_CONNECTION: usize = 200;
    let mut clients = Vec::new();
    for _ in 0..CONNECTIONS {
        match DiscoveryClient::connect(url.clone()).await {
            Ok(c) => clients.push(c),
            Err(_) => return (0, 0),
        }
    }
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let (mut attempts, mut refused) = (0, 0);
    let mut held: Vec<std::collections::VecDeque<_>> =
        (0..CONNECTIONS).map(|_| Default::default()).collect();
    let mut i = 0;
    while Instant::now() < deadline {
        let c = i % CONNECTIONS;
        i += 1;
        if held[c].len() >= PER_CONNECTION {
            held[c].pop_front();
        }
        attempts += 1;
        match clients[c].watch(WatchRequest::default()).await {
            Ok(stream) => held[c].push_back(stream.into_inner()),
            Err(_) => refused += 1,
        }
    }
    (attempts, refused)
}

/// `grpc.health.v1.Health/Watch` streams opened and held.
async fn health_watches(url: String, secs: f64) -> (u64, u64) {
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let Ok(channel) = tonic::transport::Endpoint::from_shared(url) else {
        return (0, 0);
    };
    let Ok(channel) = channel.connect().await else {
        return (0, 0);
    };
    let mut health = HealthClient::new(channel);
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let (mut attempts, mut refused, mut held) = (0, 0, Vec::new());
    while Instant::now() < deadline && attempts < 5_000 {
        attempts += 1;
        match health.watch(HealthCheckRequest::default()).await {
            Ok(stream) => held.push(stream),
            Err(_) => refused += 1,
        }
    }
    let left = deadline.saturating_duration_since(Instant::now());
    tokio::time::sleep(left).await;
    drop(held);
    (attempts, refused)
}
