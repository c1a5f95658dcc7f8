//! The README's shell blocks, run as a new user would paste them after
//! `make up`: the same scripts start discovery and three peers (on free
//! ports, from the binaries `make test` built), then every ```sh block of
//! README.md runs in order with `bash -euo pipefail`, so the README cannot
//! drift from what works. A block preceded by a `<!-- not run by
//! tests/tests/e2e/readme.rs: WHY -->` line is skipped.

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Command, Output},
};

use chat_tests::binary;

/// The marker that exempts the next block (with a reason after it).
const SKIP_MARKER: &str = "<!-- not run by tests/tests/e2e/readme.rs:";
/// Longest any one block may run before the test fails.
const BLOCK_TIMEOUT_S: &str = "60";

/// The project root.
fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .unwrap()
}

/// The ```sh blocks of `markdown` that are not exempted, with the line each starts on.
fn shell_blocks(markdown: &str) -> Vec<(usize, String)> {
    let mut blocks = Vec::new();
    let mut current: Option<(usize, String)> = None;
    let mut skip_next = false;
    for (i, line) in markdown.lines().enumerate() {
        if let Some((_, body)) = current.as_mut() {
            if line.trim_start().starts_with("```") {
                let block = current.take().expect("inside a block");
                if !std::mem::take(&mut skip_next) {
                    blocks.push(block);
                }
            } else {
                body.push_str(line);
                body.push('\n');
            }
        } else if line.trim() == "```sh" {
            current = Some((i + 1, String::new()));
        } else if line.starts_with(SKIP_MARKER) {
            skip_next = true;
        }
    }
    blocks
}

/// A free loopback port p such that p+1..=p+count are free too (the peers'
/// ports, as `make up` numbers them).
fn free_port_run(count: u16) -> u16 {
    for _ in 0..100 {
        let base = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if base > 65535 - count - 1 {
            continue;
        }
        let free = (1..=count).all(|i| TcpListener::bind(("127.0.0.1", base + i)).is_ok());
        if free {
            return base;
        }
    }
    panic!("no run of {count} free loopback ports");
}

fn text(out: &Output) -> String {
    format!(
        "--- stdout\n{}--- stderr\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Stops what the test started, whatever happened: `make down`'s script,
/// then anything still running with the scratch folder in its command line
/// (the README's own peer if a block failed before `chat stop`).
struct Teardown<'a> {
    scratch: &'a Path,
    env: Vec<(&'static str, String)>,
}

impl Drop for Teardown<'_> {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(root().join("scripts/down.sh"))
            .envs(self.env.iter().map(|(k, v)| (*k, v)))
            .output();
        let _ = Command::new("pkill")
            .args(["-KILL", "-f"])
            .arg(self.scratch)
            .status();
    }
}

/// `path` grants nothing to the group or others.
fn assert_private(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).unwrap().permissions().mode();
    assert_eq!(mode & 0o077, 0, "{} is mode {mode:o}", path.display());
}

#[test]
fn the_readme_blocks_run_as_written_against_a_make_up_network() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let blocks = shell_blocks(&readme);
    assert!(
        blocks.len() >= 4,
        "expected the README's runnable blocks, found {}",
        blocks.len()
    );

    let scratch = tempfile::tempdir().unwrap();
    let home = scratch.path().join("home");
    std::fs::create_dir(&home).unwrap();
    let bin_dir = binary("peer-svc").parent().unwrap().to_owned();
    binary("chat");
    binary("discovery-svc");
    let discovery_port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let peer_base = free_port_run(3);
    let discovery = format!("127.0.0.1:{discovery_port}");
    let run_dir = scratch.path().join(".run");
    let env = vec![
        ("BIN_DIR", bin_dir.display().to_string()),
        ("RUN_DIR", run_dir.display().to_string()),
        ("DISCOVERY_ADDR", discovery.clone()),
        ("PEER_BASE_PORT", peer_base.to_string()),
    ];
    let _teardown = Teardown {
        scratch: scratch.path(),
        env: env.clone(),
    };

    // `make up`, as its script, with the test's binaries and ports.
    let up = Command::new("bash")
        .arg(root().join("scripts/up.sh"))
        .envs(env.iter().map(|(k, v)| (*k, v)))
        .env_remove("USER_PATH")
        .output()
        .expect("run up.sh");
    assert!(up.status.success(), "make up failed:\n{}", text(&up));
    // Consoles hold received messages: no other local user may read them.
    for path in [
        run_dir.clone(),
        run_dir.join("user1.out"),
        run_dir.join("user2.log"),
    ] {
        assert_private(&path);
    }
    let printed = String::from_utf8_lossy(&up.stdout);
    assert!(
        printed.contains(&format!("export PATH=\"{}", bin_dir.display())),
        "make up prints the PATH line:\n{printed}"
    );

    // The README names make up's fixed ports and release binaries; here they
    // are the test's. Blocks run where `make up` keeps `.run/`.
    let substitute = |block: &str| {
        let mut block = block.replace("$PWD/target/release", &bin_dir.display().to_string());
        block = block.replace("127.0.0.1:50051", &discovery);
        for i in 1..=3u16 {
            block = block.replace(
                &format!("127.0.0.1:{}", 50060 + i),
                &format!("127.0.0.1:{}", peer_base + i),
            );
        }
        block
    };
    // Blocks share a shell's state as a user's terminal would (PATH, S=...):
    // each runs in a fresh bash that first sources what the ones before exported.
    let mut prelude = String::new();
    for (line, block) in &blocks {
        let script = format!("{prelude}\n{}", substitute(block));
        let out = Command::new("timeout")
            .args([BLOCK_TIMEOUT_S, "bash", "-euo", "pipefail", "-c", &script])
            .current_dir(scratch.path())
            .env("HOME", &home)
            .env_remove("CHAT_DATA_DIR")
            .output()
            .expect("run bash");
        assert!(
            out.status.success(),
            "README.md block at line {line} failed ({}):\n{}\n{}",
            out.status,
            substitute(block),
            text(&out)
        );
        for export in block.lines().filter(|l| l.starts_with("export ")) {
            prelude.push_str(&substitute(export));
            prelude.push('\n');
        }
    }

    // What the blocks did is visible: user2 got user1's message, and the
    // README's own peer left (its `chat stop`) and is no longer listed.
    let history = Command::new(bin_dir.join("chat"))
        .arg("--data-dir")
        .arg(run_dir.join("user2"))
        .args(["history", "--json"])
        .output()
        .unwrap();
    let history = String::from_utf8_lossy(&history.stdout);
    assert!(
        history.contains("Hello user2") && history.contains("hi from grpcurl"),
        "{history}"
    );

    assert_private(&home.join(".p2p-chat/alice.console"));

    let down = Command::new("bash")
        .arg(root().join("scripts/down.sh"))
        .envs(env.iter().map(|(k, v)| (*k, v)))
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&down.stdout);
    assert!(down.status.success(), "make down failed:\n{}", text(&down));
    for name in ["user1", "user2", "user3", "discovery"] {
        assert!(said.contains(&format!("{name}: stopped")), "{said}");
    }
}

#[test]
fn skip_markers_and_block_boundaries_are_read_as_meant() {
    let md = "intro\n```sh\necho one\n```\n<!-- not run by tests/tests/e2e/readme.rs: why -->\n```sh\nexit 1\n```\n```text\nnot shell\n```\n```sh\necho two\necho three\n```\n";
    let blocks = shell_blocks(md);
    let bodies: Vec<&str> = blocks.iter().map(|(_, b)| b.as_str()).collect();
    assert_eq!(bodies, ["echo one\n", "echo two\necho three\n"]);
    assert_eq!(blocks[0].0, 2);
}

/// Issue 26, item 11: `make up` where another process holds a port it
/// needs says so, naming the port and what to do, instead of taking that
/// process's health answers for its own.
#[test]
fn make_up_with_a_port_in_use_names_the_port() {
    let scratch = tempfile::tempdir().unwrap();
    let bin_dir = binary("peer-svc").parent().unwrap().to_owned();
    binary("chat");
    binary("discovery-svc");
    let run_dir = scratch.path().join(".run");
    let peer_base = free_port_run(3);
    let up = |discovery: &str| {
        let env = vec![
            ("BIN_DIR", bin_dir.display().to_string()),
            ("RUN_DIR", run_dir.display().to_string()),
            ("DISCOVERY_ADDR", discovery.to_owned()),
            ("PEER_BASE_PORT", peer_base.to_string()),
        ];
        let out = Command::new("bash")
            .arg(root().join("scripts/up.sh"))
            .envs(env.iter().map(|(k, v)| (*k, v)))
            .output()
            .expect("run up.sh");
        (out, env)
    };

    // Something else listens on Discovery's port.
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let discovery = taken.local_addr().unwrap().to_string();
    let (out, env) = up(&discovery);
    let _teardown = Teardown {
        scratch: scratch.path(),
        env,
    };
    assert!(!out.status.success(), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("cannot start discovery: {discovery} is in use")),
        "{}",
        text(&out)
    );
    assert!(err.contains("DISCOVERY_ADDR"), "{err}");
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("discovery  "),
        "{}",
        text(&out)
    );
    drop(taken);

    // Discovery's port is free now; user2's is held.
    let user2 = format!("127.0.0.1:{}", peer_base + 2);
    let taken = TcpListener::bind(&user2).unwrap();
    let (out, _) = up(&discovery);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains(&format!("cannot start user2: {user2} is in use")),
        "{}",
        text(&out)
    );
    drop(taken);
}

/// GitHub's anchor for a heading: lower case, punctuation but `-` and `_`
/// dropped, spaces as `-`.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// Issue 26, item 13: the README's contents link to headings that exist
/// and list every section, and its Layout names every document in docs/.
#[test]
fn the_contents_name_every_section_and_the_layout_every_document() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let sections: Vec<String> = readme
        .lines()
        .filter_map(|l| l.strip_prefix("## "))
        .filter(|h| *h != "Contents")
        .map(anchor)
        .collect();
    let contents = readme
        .split("## Contents")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .expect("a Contents section");
    let linked: Vec<String> = contents
        .split("](#")
        .skip(1)
        .map(|l| l.split(')').next().unwrap().to_owned())
        .collect();
    assert_eq!(
        linked, sections,
        "the contents list every section, in order"
    );
    // Every in-page link, in the contents or elsewhere, finds its heading.
    let headings: Vec<String> = readme
        .lines()
        .filter(|l| l.starts_with('#'))
        .filter_map(|l| l.trim_start_matches('#').strip_prefix(' '))
        .map(anchor)
        .collect();
    for link in readme.split("](#").skip(1) {
        let target = link.split(')').next().unwrap();
        assert!(
            headings.iter().any(|h| h == target),
            "no heading for #{target}"
        );
    }
    let layout = readme.split("## Layout").nth(1).expect("a Layout section");
    for entry in std::fs::read_dir(root().join("docs")).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        assert!(layout.contains(&name), "Layout does not name docs/{name}");
    }
}
