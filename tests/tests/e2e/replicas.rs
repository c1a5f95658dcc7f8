//! Several `discovery-svc` replicas on one real etcd behave as one service:
//! a member registered through one is listed, watched, renewed and ended
//! through another; killing a replica loses no member, watchers on the other
//! see every event once, and peers fail over without anyone noticing.

use std::{collections::HashMap, sync::Arc, time::Duration};

use chat_proto::v1::{
    KeepAliveRequest, LeaveRequest, ListRequest, MembershipEvent, WatchRequest,
    discovery_client::DiscoveryClient, membership_event::Kind,
};
use chat_tests::{
    Discovery, PeerProcess, Process,
    etcd::{etcd_endpoint, etcd_store_at, unique_prefix},
    eventually, register, within,
};
use tokio::sync::Mutex;
use tonic::{Code, Streaming};

/// Reads the next event as (kind, name, initial).
async fn next(stream: &mut Streaming<MembershipEvent>) -> (Kind, String, bool) {
    let event = within("a membership event", stream.message())
        .await
        .expect("watch stream status")
        .expect("watch stream ended");
    let initial = event.initial;
    (event.kind(), event.member.expect("member").name, initial)
}

async fn names(client: &mut DiscoveryClient<tonic::transport::Channel>) -> Vec<String> {
    let mut names: Vec<String> = client
        .list(ListRequest::default())
        .await
        .expect("list")
        .into_inner()
        .members
        .into_iter()
        .map(|m| m.name)
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn two_replicas_share_one_view() {
    let prefix = unique_prefix();
    let config = || discovery_svc::Config {
        ttl: Duration::from_secs(2),
        store: etcd_store_at(&prefix),
        ..Default::default()
    };
    let a = Discovery::start_with(config()).await;
    let b = Discovery::start_with(config()).await;
    let mut on_a = a.client().await;
    let mut on_b = b.client().await;
    let mut watch_a = on_a
        .watch(WatchRequest::default())
        .await
        .unwrap()
        .into_inner();
    let mut watch_b = on_b
        .watch(WatchRequest::default())
        .await
        .unwrap()
        .into_inner();

    // Registered through A: listed through B, and in a new watch's snapshot there.
    let alice = register(&mut on_a, "alice").await;
    assert_eq!(names(&mut on_b).await, ["alice"]);
    let mut late_b = on_b
        .watch(WatchRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        next(&mut late_b).await,
        (Kind::Joined, "alice".into(), true)
    );

    // The name is held across replicas, atomically.
    let other = chat_noise::StaticKeypair::generate();
    let request = chat_tests::proven(&mut on_b, &other, "alice", "127.0.0.1:40001").await;
    let taken = on_b.register(request).await.unwrap_err();
    assert_eq!(taken.code(), Code::AlreadyExists, "{taken:?}");

    // A's lease is renewed and ended through B, and only with its token.
    let wrong = on_b
        .keep_alive(KeepAliveRequest {
            lease_id: alice.lease_id.clone(),
            lease_token: "not the token".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(wrong.code(), Code::PermissionDenied);
    on_b.keep_alive(KeepAliveRequest {
        lease_id: alice.lease_id.clone(),
        lease_token: alice.lease_token.clone(),
    })
    .await
    .expect("keepalive through the other replica");
    on_b.leave(LeaveRequest {
        lease_id: alice.lease_id,
        lease_token: alice.lease_token,
    })
    .await
    .expect("leave through the other replica");

    // bob joins through B and is never renewed: etcd expires him.
    register(&mut on_b, "bob").await;

    let expected = [
        (Kind::Joined, "alice".to_owned(), false),
        (Kind::Left, "alice".to_owned(), false),
        (Kind::Joined, "bob".to_owned(), false),
        (Kind::Expired, "bob".to_owned(), false),
    ];
    for watch in [&mut watch_a, &mut watch_b] {
        for want in &expected {
            assert_eq!(&next(watch).await, want);
        }
    }
    // Each event once: nothing more arrives on either replica.
    for watch in [&mut watch_a, &mut watch_b] {
        let extra = tokio::time::timeout(Duration::from_millis(500), watch.message()).await;
        assert!(extra.is_err(), "an event came twice: {extra:?}");
    }
    assert!(names(&mut on_a).await.is_empty());
    a.stop().await;
    b.stop().await;
}

async fn start_replica(prefix: &str) -> Process {
    let endpoint = etcd_endpoint();
    Process::spawn(
        "discovery-svc",
        &[
            "--listen",
            "127.0.0.1:0",
            "--ttl",
            "3s",
            "--store",
            "etcd",
            "--etcd-endpoints",
            &endpoint,
            "--etcd-prefix",
            prefix,
        ],
        &[],
    )
    .await
}

#[tokio::test]
async fn killing_a_replica_loses_nothing_and_peers_fail_over() {
    let prefix = unique_prefix();
    let a = start_replica(&prefix).await;
    let b = start_replica(&prefix).await;
    let (url_a, url_b) = (format!("http://{}", a.addr), format!("http://{}", b.addr));
    let both = format!("{url_a},{url_b}");

    // Everything B's watchers see, from before the first peer starts.
    let mut on_b = DiscoveryClient::connect(url_b.clone()).await.unwrap();
    let mut watch = on_b
        .watch(WatchRequest::default())
        .await
        .unwrap()
        .into_inner();
    let seen: Arc<Mutex<Vec<(Kind, String)>>> = Arc::default();
    let recorder = {
        let seen = seen.clone();
        tokio::spawn(async move {
            while let Ok(Some(event)) = watch.message().await {
                let kind = event.kind();
                seen.lock().await.push((kind, event.member.unwrap().name));
            }
        })
    };

    // Peers list A first, so A holds their leases until it dies.
    let dir = tempfile::tempdir().unwrap();
    let mut peers = Vec::new();
    for name in ["alice", "bob", "carol"] {
        peers.push(PeerProcess::start(name, &both, &dir.path().join(name)).await);
    }
    for p in &peers {
        let others: Vec<&str> = ["alice", "bob", "carol"]
            .into_iter()
            .filter(|n| *n != p.name)
            .collect();
        p.wait_connections(&others).await;
    }
    let (ok, out, _) = peers[0].chat(&["send", "before the replica dies"]).await;
    assert!(ok && out.matches("delivered").count() == 2, "{out}");

    let mut a = a;
    a.child.kill().await.unwrap();

    // Longer than two TTLs: every lease stays alive through B.
    let until = tokio::time::Instant::now() + Duration::from_secs(7);
    while tokio::time::Instant::now() < until {
        assert_eq!(names(&mut on_b).await, ["alice", "bob", "carol"]);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let (ok, out, _) = peers[1].chat(&["send", "after the replica died"]).await;
    assert!(ok && out.matches("delivered").count() == 2, "{out}");

    // A newcomer lists the dead replica first and still gets in.
    let dave = PeerProcess::start("dave", &both, &dir.path().join("dave")).await;
    dave.wait_connections(&["alice", "bob", "carol"]).await;
    for p in &peers {
        let others: Vec<&str> = ["alice", "bob", "carol", "dave"]
            .into_iter()
            .filter(|n| *n != p.name)
            .collect();
        p.wait_connections(&others).await;
    }
    let (ok, out, _) = dave.chat(&["send", "hello from dave"]).await;
    assert!(ok && out.matches("delivered").count() == 3, "{out}");

    // dave leaves for good; B's watcher saw every change exactly once.
    let (ok, _, err) = dave.chat(&["stop"]).await;
    assert!(ok, "{err}");
    eventually("dave's LEFT on replica B", || {
        let seen = seen.clone();
        async move { seen.lock().await.contains(&(Kind::Left, "dave".into())) }
    })
    .await;
    let seen = seen.lock().await.clone();
    let mut counts: HashMap<(Kind, String), usize> = HashMap::new();
    for event in &seen {
        *counts.entry(event.clone()).or_default() += 1;
    }
    for name in ["alice", "bob", "carol", "dave"] {
        assert_eq!(
            counts.get(&(Kind::Joined, name.into())),
            Some(&1),
            "{name} joined once: {seen:?}"
        );
    }
    assert_eq!(counts.get(&(Kind::Left, "dave".into())), Some(&1));
    assert_eq!(seen.len(), 5, "no expiry, nothing twice: {seen:?}");
    recorder.abort();
}

/// A TCP relay whose connections can be cut (and new ones refused) and
/// then let through again: a replica's link to etcd going down and back.
struct Cuttable {
    addr: std::net::SocketAddr,
    cut: Arc<std::sync::atomic::AtomicBool>,
    links: Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Cuttable {
    async fn start(target: std::net::SocketAddr) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cut = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let links: Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>> = Arc::default();
        let task = {
            let (cut, links) = (cut.clone(), links.clone());
            tokio::spawn(async move {
                while let Ok((mut client, _)) = listener.accept().await {
                    if cut.load(std::sync::atomic::Ordering::SeqCst) {
                        continue; // Dropped: closed at once.
                    }
                    let link = tokio::spawn(async move {
                        if let Ok(mut server) = tokio::net::TcpStream::connect(target).await {
                            let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                        }
                    });
                    links.lock().unwrap().push(link.abort_handle());
                }
            })
        };
        Self {
            addr,
            cut,
            links,
            task,
        }
    }

    /// Closes every connection and refuses new ones.
    fn cut(&self) {
        self.cut.store(true, std::sync::atomic::Ordering::SeqCst);
        for link in self.links.lock().unwrap().drain(..) {
            link.abort();
        }
    }

    /// Lets connections through again.
    fn restore(&self) {
        self.cut.store(false, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for Cuttable {
    fn drop(&mut self) {
        self.task.abort();
        self.cut();
    }
}

/// Reads events from `stream` until `n` have arrived.
async fn take(stream: &mut Streaming<MembershipEvent>, n: usize) -> Vec<(Kind, String)> {
    let mut got = Vec::new();
    while got.len() < n {
        let (kind, name, _) = next(stream).await;
        got.push((kind, name));
    }
    got
}

#[tokio::test]
async fn a_replica_cut_off_from_etcd_resumes_its_watch_and_relists_after_compaction() {
    let prefix = unique_prefix();
    let endpoint = etcd_endpoint();
    let target: std::net::SocketAddr = endpoint.trim_start_matches("http://").parse().unwrap();
    let link = Cuttable::start(target).await;
    let config = |endpoint: String| discovery_svc::Config {
        ttl: Duration::from_secs(600),
        store: discovery_svc::config::StoreConfig::Etcd {
            endpoints: vec![endpoint],
            prefix: prefix.clone(),
        },
        ..Default::default()
    };
    let a = Discovery::start_with(config(format!("http://{}", link.addr))).await;
    let b = Discovery::start_with(config(endpoint.clone())).await;
    let mut on_b = b.client().await;
    let mut watch_a = a
        .client()
        .await
        .watch(WatchRequest::default())
        .await
        .unwrap()
        .into_inner();
    let alice = register(&mut on_b, "alice").await;
    assert_eq!(
        take(&mut watch_a, 1).await,
        [(Kind::Joined, "alice".into())]
    );

    // Cut off, A misses changes made through B; back, it resumes from the
    // next revision and reports each of them once, in order.
    link.cut();
    let bob = register(&mut on_b, "bob").await;
    on_b.leave(LeaveRequest {
        lease_id: alice.lease_id,
        lease_token: alice.lease_token,
    })
    .await
    .unwrap();
    link.restore();
    assert_eq!(
        take(&mut watch_a, 2).await,
        [(Kind::Joined, "bob".into()), (Kind::Left, "alice".into())]
    );

    // Cut off again, and etcd compacts away the revisions A would resume
    // from: A lists again and reports the difference.
    link.cut();
    register(&mut on_b, "carol").await;
    on_b.leave(LeaveRequest {
        lease_id: bob.lease_id,
        lease_token: bob.lease_token,
    })
    .await
    .unwrap();
    let mut etcd = etcd_client::Client::connect([endpoint.as_str()], None)
        .await
        .unwrap();
    let now = etcd
        .get("/", None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    etcd.compact(now, None).await.unwrap();
    link.restore();
    // bob's leave is seen as an expiry: after a compaction, why he went is lost.
    assert_eq!(
        take(&mut watch_a, 2).await,
        [
            (Kind::Expired, "bob".into()),
            (Kind::Joined, "carol".into())
        ]
    );
    let extra = tokio::time::timeout(Duration::from_millis(500), watch_a.message()).await;
    assert!(extra.is_err(), "an event came twice: {extra:?}");
    let mut on_a = a.client().await;
    assert_eq!(names(&mut on_a).await, ["carol"]);
    a.stop().await;
    b.stop().await;
}

/// A registration proof captured from one replica and sent to another
/// (which shares Discovery's key, as `--key-file` makes replicas do, and
/// never saw the proof) cannot replace the live lease: the etcd record
/// keeps the proof's time, and an older one is a replay.
#[tokio::test]
async fn a_proof_replayed_at_another_replica_cannot_take_the_lease() {
    let prefix = unique_prefix();
    let key = chat_noise::StaticKeypair::generate();
    let config = || discovery_svc::Config {
        ttl: Duration::from_secs(5),
        store: etcd_store_at(&prefix),
        key: key.clone(),
        ..Default::default()
    };
    let a = Discovery::start_with(config()).await;
    let b = Discovery::start_with(config()).await;
    let mut on_a = a.client().await;
    let mut on_b = b.client().await;
    let alice = chat_noise::StaticKeypair::generate();
    let captured = chat_tests::proven(&mut on_a, &alice, "alice", "127.0.0.1:40001").await;
    let lease = on_a.register(captured.clone()).await.unwrap().into_inner();

    let err = on_b.register(captured).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(
        err.message()
            .contains("older than the key's live registration"),
        "{err:?}"
    );
    // The holder's lease still stands.
    on_a.keep_alive(chat_proto::v1::KeepAliveRequest {
        lease_id: lease.lease_id,
        lease_token: lease.lease_token,
    })
    .await
    .expect("the holder's lease was not replaced");
    // The holder itself, with a new proof, registers through B.
    let fresh = chat_tests::proven(&mut on_b, &alice, "alice", "127.0.0.1:40002").await;
    on_b.register(fresh).await.unwrap();
}
