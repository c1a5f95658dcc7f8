//! Feed reconciliation's cost (issue 25, item 6): two real peers holding
//! 100,000 signed messages by 50 authors meet, once with 10 differences
//! (one lacks the newest message of 10 authors) and once with none. Every
//! byte between them passes a counting TCP relay in front of each (both
//! advertise their relay), so the bytes are all their traffic: handshakes,
//! the digest, `Peer/Feeds`, the pulls, and the start-up history pull
//! (whose window is arranged to hold one message both already have); the
//! feed exchanges' own sealed bytes come from the peers' logs (each logs an
//! exchange with its bytes at debug).
//! Then the idle CPU of a peer holding them.

use std::{
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use chat_proto::v1::{ChatMessage, Credential};
use ed25519_dalek::SigningKey;
use peer_svc::{authorship::Author, credential, store::Store};
use prost::Message;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

use crate::procs::{Proc, sibling};

const AUTHORS: usize = 50;
const PER_AUTHOR: usize = 2_000;
const DIFFERENCES: usize = 10;
/// The text of every message: 100 bytes, the seed's size.
const TEXT_LEN: usize = 100;

/// What the stage measured.
#[derive(Debug, Clone, Copy)]
pub struct Reconciliation {
    /// Bytes between the peers, the sealed bytes of their feed exchanges
    /// alone, and ms until the one that lacked 10 held them.
    pub ten_bytes: u64,
    pub ten_exchange: u64,
    pub ten_ms: f64,
    /// Bytes between the peers when nothing differs (from the start of one
    /// until both sides compared), and those of the feed exchanges alone.
    pub none_bytes: u64,
    pub none_exchange: u64,
    /// A peer holding them, idle for 10 s: share of one core.
    pub idle_core: f64,
    /// The feed heads (the digest a handshake carries) of 100k messages,
    /// in-process: read at start, ms; and again after a message was added, ms.
    pub heads_start_ms: f64,
    pub heads_ms: f64,
}

/// A TCP relay to `target` (set once known) that counts every byte.
struct Relay {
    addr: String,
    target: Arc<std::sync::Mutex<Option<String>>>,
    bytes: Arc<AtomicU64>,
}

impl Relay {
    async fn start() -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?.to_string();
        let target: Arc<std::sync::Mutex<Option<String>>> = Arc::default();
        let bytes: Arc<AtomicU64> = Arc::default();
        let (t, b) = (target.clone(), bytes.clone());
        tokio::spawn(async move {
            loop {
                let inbound = match listener.accept().await {
                    Ok((inbound, _)) => inbound,
                    Err(e) => {
                        eprintln!("relay: accept failed: {e}");
                        continue;
                    }
                };
                let Some(to) = t.lock().unwrap().clone() else {
                    continue;
                };
                let b = b.clone();
                tokio::spawn(async move {
                    if let Ok(outbound) = TcpStream::connect(&to).await {
                        let (ri, wi) = inbound.into_split();
                        let (ro, wo) = outbound.into_split();
                        tokio::join!(pump(ri, wo, b.clone()), pump(ro, wi, b));
                    }
                });
            }
        });
        Ok(Self {
            addr,
            target,
            bytes,
        })
    }

    fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }
}

/// Copies `from` to `to`, counting.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    bytes: Arc<AtomicU64>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    while let Ok(n) = from.read(&mut buf).await {
        if n == 0 || to.write_all(&buf[..n]).await.is_err() {
            break;
        }
        bytes.fetch_add(n as u64, Ordering::Relaxed);
    }
    let _ = to.shutdown().await;
}

/// The network's founder, and an invitation token for `name` from it.
struct Founder {
    key: SigningKey,
    credential: Credential,
}

impl Founder {
    fn new() -> Self {
        let key = SigningKey::from_bytes(&rand::random());
        let credential = credential::found(&key, "founder", &rand::random(), now_ms());
        Self { key, credential }
    }

    fn invitation(&self, name: &str) -> anyhow::Result<chat_proto::v1::Invitation> {
        Ok(credential::invite(
            &self.key,
            &self.credential,
            name,
            now_ms(),
            0,
        )?)
    }

    fn token(&self, name: &str) -> anyhow::Result<String> {
        Ok(credential::encode_token(&self.invitation(name)?))
    }

    /// An author admitted as `name`, with its encoded chain.
    fn author(&self, name: &str) -> anyhow::Result<(Author, Vec<u8>)> {
        let identity = SigningKey::from_bytes(&rand::random());
        let joined = credential::join(&self.invitation(name)?, &identity, name, &rand::random())?;
        let chain = Credential {
            chain: joined.chain,
            static_key_signature: Vec::new(),
        }
        .encode_to_vec();
        let network = self.key.verifying_key().to_bytes().to_vec();
        Ok((Author::new(identity, network, name, "", None), chain))
    }
}

fn now_ms() -> u64 {
    peer_svc::checks::now_ms()
}

/// The messages in time order, their authors, and the authors' chains as
/// the store keeps them (key, name, encoded chain).
type History = (
    Vec<ChatMessage>,
    Vec<Author>,
    Vec<(Vec<u8>, String, Vec<u8>)>,
);

/// 50 authors' feeds of 2,000 messages each, one a second, ending an hour
/// ago, the newest (the last author's) ten minutes after all the others:
/// the start-up pull's window (5 minutes before the newest held) holds it
/// alone. Returns the messages in time order and the authors' chains.
fn history(founder: &Founder) -> anyhow::Result<History> {
    let authors: Vec<(Author, Vec<u8>)> = (0..AUTHORS)
        .map(|i| founder.author(&format!("a{i}")))
        .collect::<anyhow::Result<_>>()?;
    let total = AUTHORS * PER_AUTHOR;
    let start = now_ms() - 3_600_000 - 600_000 - total as u64 * 1_000;
    let text = "x".repeat(TEXT_LEN);
    let mut messages = Vec::with_capacity(total);
    for n in 0..total {
        let (author, _) = &authors[n % AUTHORS];
        let mut ms = start + n as u64 * 1_000;
        if n == total - 1 {
            ms += 600_000;
        }
        let id = format!("bench-{n}");
        messages.push(author.sign(
            || (id, ms << 16, peer_svc::authorship::timestamp(ms)),
            text.clone(),
        ));
    }
    let chains = authors
        .iter()
        .enumerate()
        .map(|(i, (a, chain))| (a.key().to_vec(), format!("a{i}"), chain.clone()))
        .collect();
    let authors = authors.into_iter().map(|(a, _)| a).collect();
    Ok((messages, authors, chains))
}

/// A data dir holding `messages` and the authors' chains.
fn fill(
    dir: &Path,
    messages: &[ChatMessage],
    chains: &[(Vec<u8>, String, Vec<u8>)],
) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let store = Store::open(dir)?;
    for (key, name, chain) in chains {
        store.save_author(key, name, chain)?;
    }
    for chunk in messages.chunks(5_000) {
        store.insert_many(chunk)?;
    }
    Ok(())
}

/// Messages the peer with `dir` holds.
fn held(dir: &Path) -> anyhow::Result<usize> {
    let db = rusqlite::Connection::open_with_flags(
        dir.join("history.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )?;
    Ok(db.query_row("SELECT count(*) FROM messages", [], |r| r.get::<_, i64>(0))? as usize)
}

async fn start_peer(
    name: &str,
    dir: &Path,
    discovery: &str,
    relay: &Relay,
    token: &str,
) -> anyhow::Result<Proc> {
    // The listening line names the advertised address (the relay): the
    // peer listens on a port chosen here, which the relay forwards to.
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let listen = format!("127.0.0.1:{port}");
    let args = [
        "--name",
        name,
        "--listen",
        &listen,
        "--advertise",
        &relay.addr,
        "--discovery",
        discovery,
        "--data-dir",
        dir.to_str().context("utf-8 dir")?,
        "--join",
        token,
    ];
    let log = dir.with_extension("log");
    let peer = Proc::spawn_logged(&sibling("peer-svc")?, &args, &log, EXCHANGE_LOGS).await?;
    *relay.target.lock().unwrap() = Some(listen);
    Ok(peer)
}

/// The log level that shows every feed exchange with its bytes.
const EXCHANGE_LOGS: &str = "warn,peer_svc::feed_sync=debug";

/// The sealed bytes of the feed exchanges the peer with data dir `dir`
/// logged after byte `from` of its log, and the log's length now.
fn exchange_bytes(dir: &Path, from: usize) -> anyhow::Result<(u64, usize)> {
    let log = std::fs::read_to_string(dir.with_extension("log"))?;
    let bytes = log
        .get(from..)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("feeds reconciled") || l.contains("feeds compared"))
        .filter_map(|l| {
            l.split(" bytes=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum();
    Ok((bytes, log.len()))
}

/// Waits until `dir` holds `want` messages; the time it took from `since`.
async fn until_held(dir: &Path, want: usize, since: Instant) -> anyhow::Result<f64> {
    loop {
        if held(dir)? >= want {
            return Ok(since.elapsed().as_secs_f64() * 1e3);
        }
        if since.elapsed() > Duration::from_secs(60) {
            bail!("{} held {} of {want} after 60 s", dir.display(), held(dir)?);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The stage.
pub async fn stage() -> anyhow::Result<Reconciliation> {
    let dir = tempfile::tempdir()?;
    let founder = Founder::new();
    let signing = Instant::now();
    let (messages, authors, chains) = history(&founder)?;
    let total = messages.len();
    // p1 lacks the newest message of authors a0 to a9 (message n is
    // author n % 50's; the very newest, a49's, is not one of them).
    let lacks: Vec<usize> = (0..DIFFERENCES).map(|i| total - AUTHORS + i).collect();
    let p1_messages: Vec<ChatMessage> = messages
        .iter()
        .enumerate()
        .filter(|(n, _)| !lacks.contains(n))
        .map(|(_, m)| m.clone())
        .collect();
    let (p0_dir, p1_dir) = (dir.path().join("p0"), dir.path().join("p1"));
    fill(&p0_dir, &messages, &chains)?;
    fill(&p1_dir, &p1_messages, &chains)?;
    eprintln!(
        "      {total} messages by {AUTHORS} authors signed and stored twice in {:.1} s",
        signing.elapsed().as_secs_f64()
    );

    // The feed heads' cost, in-process on a copy of p0's store: read once
    // at start, then kept from what the store adds.
    let copy = dir.path().join("copy");
    std::fs::create_dir_all(&copy)?;
    std::fs::copy(p0_dir.join("history.db"), copy.join("history.db"))?;
    let store = Arc::new(Store::open(&copy)?);
    let feeds = peer_svc::feeds::Feeds::new(store.clone());
    let t = Instant::now();
    feeds.heads()?;
    let heads_start_ms = t.elapsed().as_secs_f64() * 1e3;
    let mut heads_ms = f64::MAX;
    for n in 0..5u64 {
        let ms = now_ms() - 3_600_000 + n;
        let next = authors[n as usize].sign(
            || {
                (
                    format!("extra-{n}"),
                    ms << 16,
                    peer_svc::authorship::timestamp(ms),
                )
            },
            "x".repeat(TEXT_LEN),
        );
        store.insert(&next)?;
        let t = Instant::now();
        feeds.heads()?;
        heads_ms = heads_ms.min(t.elapsed().as_secs_f64() * 1e3);
    }
    drop((feeds, store));

    let discovery = Proc::spawn(&sibling("discovery-svc")?, &["--listen", "127.0.0.1:0"]).await?;
    let url = format!("http://{}", discovery.addr);
    let (r0, r1) = (Relay::start().await?, Relay::start().await?);
    let (t0, t1) = (founder.token("p0")?, founder.token("p1")?);
    let p0 = start_peer("p0", &p0_dir, &url, &r0, &t0).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = r0.bytes() + r1.bytes();
    let (_, p0_log) = exchange_bytes(&p0_dir, 0)?;
    let started = Instant::now();
    let p1 = start_peer("p1", &p1_dir, &url, &r1, &t1).await?;
    let ten_ms = until_held(&p1_dir, total, started).await?;
    // Both sides' exchanges end within moments of the last message.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let ten_bytes = r0.bytes() + r1.bytes() - before;
    let (p0_part, p0_log) = exchange_bytes(&p0_dir, p0_log)?;
    let (p1_part, p1_log) = exchange_bytes(&p1_dir, 0)?;
    let ten_exchange = p0_part + p1_part;

    // Nothing differs: p1 starts again.
    drop(p1);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = r0.bytes() + r1.bytes();
    let p1 = start_peer("p1", &p1_dir, &url, &r1, &t1).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let none_bytes = r0.bytes() + r1.bytes() - before;
    let (p0_part, _) = exchange_bytes(&p0_dir, p0_log)?;
    let (p1_part, _) = exchange_bytes(&p1_dir, p1_log)?;
    let none_exchange = p0_part + p1_part;
    if held(&p1_dir)? != total {
        bail!("p1 holds {} after meeting again", held(&p1_dir)?);
    }

    // A peer holding them, at rest.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let cpu = p0.cpu_seconds();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let idle_core = (p0.cpu_seconds() - cpu) / 10.0;
    drop(p1);
    drop(p0);
    Ok(Reconciliation {
        ten_bytes,
        ten_exchange,
        none_exchange,
        ten_ms,
        none_bytes,
        idle_core,
        heads_start_ms,
        heads_ms,
    })
}

/// The stage's rows of the table.
pub fn print(r: &Reconciliation) {
    use crate::report::row;
    let none = String::from("-");
    row(
        "reconcile 100k msgs/50 authors, 10 missing: bytes",
        r.ten_bytes.to_string(),
        none.clone(),
        none.clone(),
    );
    row(
        "  … of which feed exchanges (sealed bytes)",
        r.ten_exchange.to_string(),
        none.clone(),
        none.clone(),
    );
    row(
        "  … ms from start to all 10 held",
        format!("{:.0}", r.ten_ms),
        none.clone(),
        none.clone(),
    );
    row(
        "reconcile, nothing differs: bytes",
        r.none_bytes.to_string(),
        none.clone(),
        none.clone(),
    );
    row(
        "  … of which feed exchanges (sealed bytes)",
        r.none_exchange.to_string(),
        none.clone(),
        none.clone(),
    );
    row(
        "feed heads of 100k msgs, read at start: ms",
        format!("{:.1}", r.heads_start_ms),
        none.clone(),
        none.clone(),
    );
    row(
        "  … kept after a message is added: ms",
        format!("{:.3}", r.heads_ms),
        none.clone(),
        none.clone(),
    );
    row(
        "idle peer holding 100k msgs: % of a core",
        format!("{:.2}", r.idle_core * 100.0),
        none.clone(),
        none,
    );
}
