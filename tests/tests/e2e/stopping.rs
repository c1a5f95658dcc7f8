//! Stopping: a SIGTERM'd `peer-svc` always leaves Discovery and exits 0,
//! whatever became of its stdout and stderr; and `make down` (the script
//! behind it) never touches anything but its own pid files.

use std::{
    collections::HashSet,
    path::{Path, PathBuf},
    process::Stdio,
};

use chat_proto::v1::{SendRequest, WatchRequest, membership_event::Kind};
use chat_tests::{Discovery, binary, within};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
    sync::mpsc,
};

/// Peers stopped per round, all up at once (so each has live connections
/// from the others when it is stopped).
const ROUND: usize = 5;
/// Rounds: ROUND × ROUNDS SIGTERMs in all.
const ROUNDS: usize = 4;

/// Starts `peer-svc` with stdout and stderr on pipes; returns it once it
/// printed its listening line. With `close_output`, both pipes' read ends
/// are then closed, so every later write of the peer fails with EPIPE.
async fn start_peer(name: &str, discovery_url: &str, data_dir: &Path, close_output: bool) -> Child {
    let mut child = Command::new(binary("peer-svc"))
        .args(["--name", name, "--listen", "127.0.0.1:0", "--discovery"])
        .arg(discovery_url)
        .arg("--data-dir")
        .arg(data_dir)
        .env("CHAT_JOIN", chat_tests::invitation(name))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn peer-svc");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let first = within("the listening line", stdout.next_line())
        .await
        .expect("read stdout");
    assert!(
        first.is_some_and(|l| l.contains(" listening on ")),
        "{name} did not start"
    );
    let stderr = child.stderr.take().expect("stderr");
    if close_output {
        drop(stdout);
        drop(stderr);
    } else {
        // Keep reading both, as a terminal or a log file would.
        tokio::spawn(async move { while let Ok(Some(_)) = stdout.next_line().await {} });
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(_)) = lines.next_line().await {}
        });
    }
    child
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_sigterm_leaves_discovery_and_exits_0_even_with_stdout_and_stderr_closed() {
    let discovery = Discovery::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut watch = discovery
        .client()
        .await
        .watch(WatchRequest::default())
        .await
        .unwrap()
        .into_inner();
    let (events, mut seen) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok(Some(event)) = watch.message().await {
            let name = event
                .member
                .as_ref()
                .map(|m| m.name.clone())
                .unwrap_or_default();
            if events.send((event.kind(), name)).is_err() {
                return;
            }
        }
    });
    let mut left = HashSet::new();
    let mut stopped = 0;
    for round in 0..ROUNDS {
        let names: Vec<String> = (0..ROUND).map(|i| format!("r{round}p{i}")).collect();
        let mut peers = Vec::new();
        for (i, name) in names.iter().enumerate() {
            let data_dir = dir.path().join(name);
            // Every other peer loses its stdout and stderr.
            peers.push(start_peer(name, &discovery.url(), &data_dir, i % 2 == 1).await);
        }
        let mut joined = HashSet::new();
        within("every peer of the round to join", async {
            while joined.len() < ROUND {
                let (kind, name) = seen.recv().await.expect("watch open");
                if kind == Kind::Joined && names.contains(&name) {
                    joined.insert(name);
                }
            }
        })
        .await;
        // A message makes the peers with closed output write to them.
        let mut control = peer_svc::control_client::connect(&dir.path().join(&names[0]))
            .await
            .expect("control socket");
        control
            .send(SendRequest {
                text: format!("round {round}"),
                id: String::new(),
            })
            .await
            .expect("send");

        for mut peer in peers {
            let pid = peer.id().expect("running").to_string();
            let kill = std::process::Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .expect("kill");
            assert!(kill.success());
            let status = within("peer-svc to exit after SIGTERM", peer.wait())
                .await
                .expect("wait");
            assert!(
                status.success(),
                "peer-svc exited with {status} after SIGTERM"
            );
            stopped += 1;
        }
        within("a LEFT event for every stopped peer of the round", async {
            while !names.iter().all(|n| left.contains(n)) {
                let (kind, name) = seen.recv().await.expect("watch open");
                assert_ne!(kind, Kind::Expired, "{name} expired instead of leaving");
                if kind == Kind::Left {
                    left.insert(name);
                }
            }
        })
        .await;
    }
    assert_eq!((stopped, left.len()), (ROUND * ROUNDS, ROUND * ROUNDS));
    discovery.stop().await;
}

/// A scratch git repository holding the project's scripts and a few files
/// like the real root's, committed: what `make down` might destroy.
fn scratch_checkout() -> tempfile::TempDir {
    let repo = tempfile::tempdir().unwrap();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    std::fs::create_dir(repo.path().join("scripts")).unwrap();
    for script in ["down.sh", "lib.sh"] {
        std::fs::copy(
            root.join("scripts").join(script),
            repo.path().join("scripts").join(script),
        )
        .unwrap();
    }
    for file in ["Makefile", "README.md", "Cargo.toml", "Cargo.lock"] {
        std::fs::copy(root.join(file), repo.path().join(file)).unwrap();
    }
    let git = |args: &[&str]| {
        let out = std::process::Command::new("git")
            .args(["-c", "user.name=t", "-c", "user.email=t@t"])
            .args(args)
            .current_dir(repo.path())
            .output()
            .expect("run git");
        assert!(out.status.success(), "git {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    git(&["init", "-q"]);
    git(&["add", "-A"]);
    git(&["commit", "-qm", "scratch"]);
    repo
}

/// Runs `scripts/down.sh` in `repo` with RUN_DIR=`run_dir`; returns its output.
fn down(repo: &Path, run_dir: &str) -> String {
    let out = std::process::Command::new("bash")
        .arg("scripts/down.sh")
        .env("RUN_DIR", run_dir)
        .current_dir(repo)
        .output()
        .expect("run down.sh");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "down.sh failed: {text}");
    text
}

fn git_status(repo: &Path) -> String {
    let out = std::process::Command::new("git")
        .args(["status", "--porcelain", "--untracked-files=no"])
        .current_dir(repo)
        .output()
        .expect("git status");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn make_down_with_nothing_running_twice_or_with_stale_pids_leaves_every_file_in_place() {
    let repo = scratch_checkout();
    let repo = repo.path();

    // Before any `make up`: no run dir at all, then an empty one; twice each.
    for _ in 0..2 {
        let said = down(repo, ".run");
        assert!(said.contains("nothing to stop"), "{said}");
    }
    std::fs::create_dir(repo.join(".run")).unwrap();
    for _ in 0..2 {
        let said = down(repo, ".run");
        assert!(said.contains("nothing to stop"), "{said}");
    }
    assert_eq!(git_status(repo), "", "make down changed the checkout");

    // Stale pid files: a pid nobody has, garbage, and the pid of a live
    // process that is not ours (a pid reused by something else).
    let mut bystander = std::process::Command::new("sleep")
        .arg("60")
        .spawn()
        .expect("spawn sleep");
    let run = repo.join(".run");
    std::fs::write(run.join("user1.pid"), "999999999\n").unwrap();
    std::fs::write(run.join("user2.pid"), "Makefile README.md\n").unwrap();
    std::fs::write(run.join("user3.pid"), format!("{}\n", bystander.id())).unwrap();
    std::fs::write(run.join("discovery.pid"), format!("{}\n", bystander.id())).unwrap();
    let said = down(repo, ".run");
    assert!(said.contains("user1: not running"), "{said}");
    assert!(
        said.contains("user2: ") && said.contains("holds no pid"),
        "{said}"
    );
    assert!(
        said.contains("user3: pid") && said.contains("left it alone"),
        "{said}"
    );
    assert!(
        said.contains("discovery: pid") && said.contains("left it alone"),
        "{said}"
    );
    assert!(
        bystander.try_wait().unwrap().is_none(),
        "make down signalled a process it did not start"
    );
    assert_eq!(
        std::fs::read_dir(&run).unwrap().count(),
        0,
        "the stale pid files are removed"
    );
    // And once more, now that they are gone.
    assert!(down(repo, ".run").contains("nothing to stop"));
    assert_eq!(git_status(repo), "", "make down changed the checkout");
    bystander.kill().unwrap();
    let _ = bystander.wait();
}
