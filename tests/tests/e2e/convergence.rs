//! Convergence under churn (issue 25, item 5), with real processes: five
//! members start and stop in a seeded random order for a minute while all
//! of them send; then all run together, and within 30 s every member holds
//! exactly the same set of messages, compared as (author key, seq, signed
//! bytes), each stored once and shown at most once, and `chat history
//! --verify` is complete everywhere.
//!
//! The order is drawn from a seed, printed at the start (`churn seed N`);
//! `CHURN_SEED=N` replays that order (process timing still varies). Always
//! included: a sender that stops before anyone else returns (it alone
//! holds its messages while the others are back), a member killed with
//! SIGKILL and kept down longer than the lease TTL, a member frozen with
//! SIGSTOP and resumed, and a Discovery (a real process) killed and started
//! again in the middle.

use std::{
    collections::{BTreeSet, HashMap},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use chat_proto::v1::SendRequest;
use chat_tests::{PeerProcess, Process};
use rand::{RngExt, SeedableRng, rngs::StdRng};
use tokio::{process::Child, task::JoinHandle};

const MEMBERS: usize = 5;
/// How long the members come and go.
const CHURN_FOR: Duration = Duration::from_secs(60);
/// Discovery's lease time-to-live here (short, so "longer than the TTL" is
/// a few seconds).
const TTL: Duration = Duration::from_secs(3);
/// From the last start to every member holding the same messages.
const CONVERGE_WITHIN: Duration = Duration::from_secs(30);

/// One member: its process while it runs, and every console line any of
/// its processes printed.
struct Member {
    name: String,
    data_dir: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    frozen: bool,
    console: Arc<Mutex<Vec<String>>>,
    drains: Vec<JoinHandle<()>>,
}

impl Member {
    fn new(i: usize, dir: &Path) -> Self {
        let name = format!("m{i}");
        Self {
            data_dir: dir.join(&name),
            log: dir.join(format!("{name}.log")),
            name,
            child: None,
            frozen: false,
            console: Arc::default(),
            drains: Vec::new(),
        }
    }

    fn running(&self) -> bool {
        self.child.is_some()
    }

    /// Starts a process for this member, logging at info to its log file
    /// (appended to across restarts), its console drained into `console`.
    async fn start(&mut self, url: &str) {
        assert!(self.child.is_none(), "{} already runs", self.name);
        let log = self.data_dir.with_extension("start.log");
        let peer = PeerProcess::start_logged(
            &self.name,
            url,
            &self.data_dir,
            &[("RUST_LOG", "info")],
            Some(&log),
        )
        .await;
        let chat_tests::Process {
            child, mut stdout, ..
        } = peer.process;
        let console = self.console.clone();
        self.drains.push(tokio::spawn(async move {
            while let Ok(Some(line)) = stdout.next_line().await {
                console.lock().unwrap().push(line);
            }
        }));
        self.child = Some(child);
        self.frozen = false;
        // Keep every incarnation's log in one file.
        let _ = self.keep_log(&log);
    }

    fn keep_log(&self, start_log: &Path) -> std::io::Result<()> {
        use std::io::Write;
        let mut all = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        writeln!(all, "--- started ---")?;
        all.write_all(&std::fs::read(start_log)?)
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().and_then(Child::id).expect("running");
        let status = std::process::Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .expect("kill");
        assert!(status.success(), "kill {signal} {}", self.name);
    }

    /// Stops it: SIGTERM (it leaves Discovery cleanly) or SIGKILL.
    async fn stop(&mut self, hard: bool) {
        if self.frozen {
            self.signal("-CONT");
            self.frozen = false;
        }
        self.signal(if hard { "-KILL" } else { "-TERM" });
        let mut child = self.child.take().expect("running");
        chat_tests::within(&format!("{} to exit", self.name), child.wait())
            .await
            .expect("wait");
    }

    fn freeze(&mut self) {
        self.signal("-STOP");
        self.frozen = true;
    }

    fn thaw(&mut self) {
        self.signal("-CONT");
        self.frozen = false;
    }
}

/// Sends `text` from the member with `data_dir` in the background; the
/// handle answers whether the peer stored it (then it must reach everyone).
fn send(data_dir: &Path, text: String) -> JoinHandle<Option<String>> {
    let data_dir = data_dir.to_owned();
    tokio::spawn(async move {
        let mut client = peer_svc::control_client::connect(&data_dir).await.ok()?;
        let request = SendRequest {
            text: text.clone(),
            ..Default::default()
        };
        tokio::time::timeout(Duration::from_secs(30), client.send(request))
            .await
            .ok()?
            .ok()
            .map(|_| text)
    })
}

/// Messages as compared: (author key, seq, signed bytes).
type Held = BTreeSet<(Vec<u8>, i64, Vec<u8>)>;

/// (author key, seq, signed bytes) of every message the member holds, and
/// how many rows it has (a row twice would show as more rows than the set).
fn held(data_dir: &Path) -> Option<(Held, usize)> {
    let db = rusqlite::Connection::open_with_flags(
        data_dir.join("history.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .ok()?;
    let mut statement = db
        .prepare("SELECT author_key, seq, authored FROM messages")
        .ok()?;
    let rows: Vec<(Vec<u8>, i64, Vec<u8>)> = statement
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .ok()?
        .collect::<Result<_, _>>()
        .ok()?;
    let count = rows.len();
    Some((rows.into_iter().collect(), count))
}

/// The texts of the messages the member holds.
fn texts(data_dir: &Path) -> Vec<String> {
    let db = rusqlite::Connection::open(data_dir.join("history.db")).unwrap();
    let mut statement = db.prepare("SELECT text FROM messages").unwrap();
    statement
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

#[tokio::test]
async fn five_members_coming_and_going_in_a_seeded_order_converge_to_one_history() {
    let seed: u64 = std::env::var("CHURN_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    println!("churn seed {seed} (CHURN_SEED={seed} replays this order)");
    let mut rng = StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    // A real discovery-svc on a fixed port, its key in a file: a restart is
    // a kill and a start, as an operator's would be.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let key_file = dir.path().join("discovery.key");
    let ttl = format!("{}s", TTL.as_secs());
    let discovery_args = [
        "--listen",
        listen.as_str(),
        "--ttl",
        ttl.as_str(),
        "--key-file",
        key_file.to_str().unwrap(),
    ];
    let mut discovery = Process::spawn("discovery-svc", &discovery_args, &[]).await;
    let url = format!("http://{listen}");
    let mut members: Vec<Member> = (0..MEMBERS).map(|i| Member::new(i, dir.path())).collect();
    let mut sends: Vec<JoinHandle<Option<String>>> = Vec::new();
    let mut said = 0usize;
    let mut say = |member: &Member, sends: &mut Vec<_>| {
        said += 1;
        sends.push(send(
            &member.data_dir,
            format!("{} says {said}", member.name),
        ));
    };

    for m in &mut members {
        m.start(&url).await;
    }
    for m in &members {
        say(m, &mut sends);
    }

    // A sender that stops before anyone else returns: everyone else stops,
    // it sends, it stops, and the others come back without it.
    let lone = rng.random_range(0..MEMBERS);
    println!("the lone sender is m{lone}");
    for (i, m) in members.iter_mut().enumerate() {
        if i != lone {
            m.stop(rng.random_bool(0.5)).await;
        }
    }
    for _ in 0..3 {
        say(&members[lone], &mut sends);
    }
    // Its messages are stored before it stops (the sends return then).
    for handle in std::mem::take(&mut sends) {
        if let Some(text) = handle.await.unwrap() {
            sends.push(tokio::spawn(async move { Some(text) }));
        }
    }
    members[lone].stop(false).await;
    for (i, m) in members.iter_mut().enumerate() {
        if i != lone {
            m.start(&url).await;
        }
    }

    // The churn: every step, each running member that is not frozen may
    // send, and one member is started, stopped (SIGTERM or SIGKILL),
    // frozen or thawed. At fixed points: a SIGKILL kept down past the TTL,
    // a Discovery restart, a freeze of a few seconds.
    let begun = tokio::time::Instant::now();
    let (mut killed_long, mut restarted, mut froze) = (None::<usize>, false, false);
    while begun.elapsed() < CHURN_FOR {
        let at = begun.elapsed();
        for m in members.iter().filter(|m| m.running() && !m.frozen) {
            if rng.random_bool(0.5) {
                say(m, &mut sends);
            }
        }
        if killed_long.is_none() && at >= Duration::from_secs(15) {
            let i = (lone + 1 + rng.random_range(0..MEMBERS - 1)) % MEMBERS;
            let m = &mut members[i];
            if !m.running() {
                m.start(&url).await;
            }
            println!("{at:?}: SIGKILL m{i}, down past the lease TTL");
            m.stop(true).await;
            killed_long = Some(i);
        }
        if !restarted && at >= Duration::from_secs(30) {
            println!("{at:?}: Discovery killed and started again");
            discovery.child.kill().await.unwrap();
            discovery = Process::spawn("discovery-svc", &discovery_args, &[]).await;
            restarted = true;
        }
        if !froze && at >= Duration::from_secs(40) {
            let i = rng.random_range(0..MEMBERS);
            let m = &mut members[i];
            if m.frozen {
                m.thaw();
            } else if !m.running() {
                m.start(&url).await;
            }
            println!("{at:?}: SIGSTOP m{i} for 5 s");
            m.freeze();
            tokio::time::sleep(Duration::from_secs(5)).await;
            m.thaw();
            froze = true;
        }
        let i = rng.random_range(0..MEMBERS);
        let held_down = killed_long == Some(i) && at < Duration::from_secs(15) + 3 * TTL;
        let at = begun.elapsed();
        let m = &mut members[i];
        if m.frozen {
            println!("{at:?}: SIGCONT m{i}");
            m.thaw();
        } else if m.running() {
            match rng.random_range(0..4) {
                0 => {
                    println!("{at:?}: SIGSTOP m{i}");
                    m.freeze();
                }
                1 => {
                    println!("{at:?}: SIGKILL m{i}");
                    m.stop(true).await;
                }
                _ => {
                    println!("{at:?}: SIGTERM m{i}");
                    m.stop(false).await;
                }
            }
        } else if !held_down {
            println!("{at:?}: start m{i}");
            m.start(&url).await;
        }
        let pause = rng.random_range(300..1_500);
        tokio::time::sleep(Duration::from_millis(pause)).await;
    }
    assert!(killed_long.is_some() && restarted && froze);

    // Everyone runs together.
    for m in &mut members {
        if m.frozen {
            m.thaw();
        } else if !m.running() {
            m.start(&url).await;
        }
    }
    let last_start = tokio::time::Instant::now();
    let mut stored = Vec::new();
    for handle in sends {
        if let Some(text) = handle.await.unwrap() {
            stored.push(text);
        }
    }
    println!("{} messages stored by their senders", stored.len());

    let mut last = Vec::new();
    let converged = loop {
        let sets: Vec<_> = members.iter().map(|m| held(&m.data_dir)).collect();
        let same = sets.iter().all(|s| {
            s.as_ref().is_some_and(|(set, rows)| {
                *rows == set.len() && Some(set) == sets[0].as_ref().map(|x| &x.0)
            })
        });
        if same {
            break true;
        }
        last = sets
            .iter()
            .zip(&members)
            .map(|(s, m)| {
                format!(
                    "{}: {:?}",
                    m.name,
                    s.as_ref().map(|(set, rows)| (set.len(), *rows))
                )
            })
            .collect();
        if last_start.elapsed() > CONVERGE_WITHIN {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let took = last_start.elapsed();
    assert!(
        converged,
        "seed {seed}: not one history within {CONVERGE_WITHIN:?} of the last start (messages, rows): {last:?}; logs in {}",
        dir.keep().display()
    );
    println!("one history everywhere {took:?} after the last start");

    // Every message a sender stored is everywhere; none twice.
    for m in &members {
        let held = texts(&m.data_dir);
        let mut counts: HashMap<&str, usize> = HashMap::new();
        for text in &held {
            *counts.entry(text.as_str()).or_default() += 1;
        }
        for text in &stored {
            assert_eq!(
                counts.get(text.as_str()),
                Some(&1),
                "seed {seed}: {} and {text:?}",
                m.name
            );
        }
        let (ok, out, err) = chat_tests::chat_cli(&m.data_dir, &["history", "--verify"]).await;
        assert!(
            ok && out.contains("complete") && !out.contains("missing"),
            "seed {seed}: {}: {out}{err}",
            m.name
        );
    }
    // Shown at most once: no console line for a message twice, across all
    // of a member's processes.
    for m in &mut members {
        m.stop(false).await;
        for drain in m.drains.drain(..) {
            let _ = drain.await;
        }
        let console = m.console.lock().unwrap();
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for line in console.iter().filter(|l| l.contains(" Message: ")) {
            *seen
                .entry(line.split(" Message: ").nth(1).unwrap())
                .or_default() += 1;
        }
        let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
        assert!(
            twice.is_empty(),
            "seed {seed}: {} showed {twice:?} more than once",
            m.name
        );
    }
    let _ = discovery.child.kill().await;
}
