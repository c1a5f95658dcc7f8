//! Peers on separate hosts: four Linux network namespaces joined by veth
//! links to a bridge, each with its own address and no shared loopback.
//! Discovery runs on one, a peer on each of the others; they register,
//! handshake, chat and sync history across the links. The test builds the
//! namespaces itself and removes them when it ends; where namespaces cannot
//! be created (no root, no CAP_SYS_ADMIN) it says so and skips.

use std::process::Command;

use chat_tests::{PeerProcess, Process, chat_cli, full_history, grpcurl, wait_for_message};

/// The subnet of the test hosts: host i is 10.99.0.(i+1).
fn host_ip(i: usize) -> String {
    format!("10.99.0.{}", i + 1)
}

/// Network namespaces ("hosts") on one bridge, deleted on drop.
struct Hosts {
    prefix: String,
    namespaces: Vec<String>,
}

impl Hosts {
    /// Builds `n` hosts, or says why it cannot.
    fn build(n: usize) -> Result<Self, String> {
        let pid = std::process::id();
        let mut hosts = Hosts {
            prefix: format!("p2pc{pid}"),
            namespaces: Vec::new(),
        };
        let hub = hosts.add_namespace("hub")?;
        ip(&["-n", &hub, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &hub, "link", "set", "br0", "up"])?;
        for i in 0..n {
            let ns = hosts.add_namespace(&format!("h{i}"))?;
            // veth names are at most 15 bytes and must be unique in the
            // root namespace only while they are created there.
            let (inner, outer) = (format!("v{pid}x{i}a"), format!("v{pid}x{i}b"));
            ip(&[
                "link", "add", &inner, "type", "veth", "peer", "name", &outer,
            ])?;
            ip(&["link", "set", &inner, "netns", &ns])?;
            ip(&["link", "set", &outer, "netns", &hub])?;
            ip(&["-n", &hub, "link", "set", &outer, "master", "br0"])?;
            ip(&["-n", &hub, "link", "set", &outer, "up"])?;
            ip(&["-n", &ns, "link", "set", &inner, "name", "eth0"])?;
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{}/24", host_ip(i)),
                "dev",
                "eth0",
            ])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        }
        Ok(hosts)
    }

    fn add_namespace(&mut self, suffix: &str) -> Result<String, String> {
        let ns = format!("{}{suffix}", self.prefix);
        ip(&["netns", "add", &ns])?;
        self.namespaces.push(ns.clone());
        Ok(ns)
    }

    /// The namespace of host `i`.
    fn ns(&self, i: usize) -> String {
        format!("{}h{i}", self.prefix)
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        // Deleting a namespace deletes the veth ends inside it.
        for ns in self.namespaces.iter().rev() {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run `ip` (iproute2): {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

#[tokio::test]
async fn peers_on_separate_hosts_register_chat_and_sync() {
    let hosts = match Hosts::build(4) {
        Ok(hosts) => hosts,
        Err(reason) => {
            eprintln!(
                "SKIPPED peers_on_separate_hosts_register_chat_and_sync: network namespaces \
                 cannot be created here ({reason}); it needs root or CAP_SYS_ADMIN and iproute2"
            );
            return;
        }
    };
    let discovery_addr = format!("{}:50051", host_ip(0));
    let discovery_url = format!("http://{discovery_addr}");
    let _discovery = Process::spawn_in(
        Some(&hosts.ns(0)),
        "discovery-svc",
        &["--listen", &discovery_addr],
        &[],
        None,
    )
    .await;
    let dir = tempfile::tempdir().unwrap();

    // alice binds her host's address; bob binds every interface and
    // advertises the address the others can reach him at.
    let alice = PeerProcess::start_in(
        &hosts.ns(1),
        "alice",
        &format!("{}:0", host_ip(1)),
        None,
        &discovery_url,
        &dir.path().join("alice"),
    )
    .await;
    let bob_addr = format!("{}:7000", host_ip(2));
    let bob = PeerProcess::start_in(
        &hosts.ns(2),
        "bob",
        "0.0.0.0:7000",
        Some(&bob_addr),
        &discovery_url,
        &dir.path().join("bob"),
    )
    .await;
    alice.wait_connections(&["bob"]).await;
    bob.wait_connections(&["alice"]).await;

    // Discovery, asked from a third host with the real grpcurl, lists both
    // at their own hosts' addresses.
    let out = Command::new("ip")
        .args(["netns", "exec", &hosts.ns(3)])
        .arg(grpcurl())
        .args(["-plaintext", &discovery_addr, "chat.v1.Discovery/List"])
        .output()
        .expect("grpcurl");
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{listed}");
    assert!(listed.contains(&format!("\"{bob_addr}\"")), "{listed}");
    assert!(
        listed.contains(&format!("\"{}:", host_ip(1))),
        "alice registered her own host's address: {listed}"
    );
    assert!(!listed.contains("127.0.0.1"), "{listed}");

    let (ok, out, err) = alice.chat(&["send", "hello across hosts"]).await;
    assert!(ok && out.contains("delivered"), "{out}{err}");
    let (ok, out, err) = bob.chat(&["send", "hello back"]).await;
    assert!(ok && out.contains("delivered"), "{out}{err}");

    // carol, on a fourth host, starts late and pulls what she missed.
    let carol = PeerProcess::start_in(
        &hosts.ns(3),
        "carol",
        &format!("{}:0", host_ip(3)),
        None,
        &discovery_url,
        &dir.path().join("carol"),
    )
    .await;
    carol.wait_connections(&["alice", "bob"]).await;
    wait_for_message(&carol.data_dir, "hello across hosts").await;
    wait_for_message(&carol.data_dir, "hello back").await;
    let (ok, out, err) = chat_cli(&carol.data_dir, &["send", "carol here"]).await;
    assert!(ok && out.matches("delivered").count() == 2, "{out}{err}");
    for p in [&alice, &bob] {
        wait_for_message(&p.data_dir, "carol here").await;
    }

    // One history, in one order, on all three hosts.
    let texts = |h: Vec<chat_proto::v1::ChatMessage>| -> Vec<String> {
        h.into_iter().map(|m| m.text).collect()
    };
    let a = texts(full_history(&mut alice.control().await).await);
    let b = texts(full_history(&mut bob.control().await).await);
    let c = texts(full_history(&mut carol.control().await).await);
    assert_eq!(a, ["hello across hosts", "hello back", "carol here"]);
    assert_eq!(a, b);
    assert_eq!(a, c);
}
