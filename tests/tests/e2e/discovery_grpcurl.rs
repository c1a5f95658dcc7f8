//! The real `discovery-svc` binary driven by the real `grpcurl`, with the
//! commands the README shows.

use base64::Engine;
use chat_tests::{Process, random_public_key, run_grpcurl};

/// Runs `grpcurl -plaintext FLAGS... ADDR REST...` and returns stdout, failing on error.
async fn ok(addr: &str, flags: &[&str], rest: &[&str]) -> String {
    let mut all = vec!["-plaintext"];
    all.extend_from_slice(flags);
    all.push(addr);
    all.extend_from_slice(rest);
    let (success, out, err) = run_grpcurl(&all).await;
    assert!(success, "grpcurl {all:?} failed: {err}");
    out
}

/// Sends `body` to `Register` with grpcurl, which must fail; returns its stderr.
async fn refused_register(addr: &str, body: &str) -> String {
    let (success, _, err) =
        run_grpcurl(&["-plaintext", "-d", body, addr, "chat.v1.Discovery/Register"]).await;
    assert!(!success, "Register of {body} succeeded");
    err
}

#[tokio::test]
async fn readme_grpcurl_commands_work_against_the_real_binary() {
    let process = Process::spawn("discovery-svc", &["--listen", "127.0.0.1:0"], &[]).await;
    let addr = process.addr.clone();

    let listed = ok(&addr, &[], &["list"]).await;
    for service in ["chat.v1.Discovery", "grpc.health.v1.Health"] {
        assert!(
            listed.lines().any(|l| l == service),
            "{service} missing from {listed}"
        );
    }
    assert!(
        !listed.contains("chat.v1.Control"),
        "discovery does not serve Control"
    );

    let described = ok(&addr, &[], &["describe", "chat.v1.Discovery"]).await;
    for rpc in ["Register", "KeepAlive", "List", "Leave", "Watch"] {
        assert!(described.contains(&format!("rpc {rpc} (")), "{rpc} missing");
    }

    // Without a proof of possession (someone else's key, copied): refused.
    let stolen = base64::engine::general_purpose::STANDARD.encode(random_public_key());
    let body = format!(r#"{{"name":"alice","address":"127.0.0.1:50061","public_key":"{stolen}"}}"#);
    let err = refused_register(&addr, &body).await;
    assert!(
        err.contains("PermissionDenied") && err.contains("needs a proof"),
        "{err}"
    );

    // `chat register --print` makes the request, with its proof, for a key
    // in a data dir.
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("alice");
    let print = tokio::process::Command::new(chat_tests::binary("chat"))
        .args([
            "--data-dir",
            data_dir.to_str().unwrap(),
            "register",
            "--print",
        ])
        .args([
            "--name",
            "alice",
            "--address",
            "127.0.0.1:50061",
            "--discovery",
            &addr,
        ])
        .output()
        .await
        .unwrap();
    assert!(
        print.status.success(),
        "{}",
        String::from_utf8_lossy(&print.stderr)
    );
    let body = String::from_utf8(print.stdout).unwrap();
    let request: serde_json::Value = serde_json::from_str(&body).unwrap();
    let key = request["public_key"].as_str().unwrap().to_owned();
    let registered = ok(&addr, &["-d", &body], &["chat.v1.Discovery/Register"]).await;
    // The same request again is a replay.
    let err = refused_register(&addr, &body).await;
    assert!(
        err.contains("PermissionDenied") && err.contains("replay"),
        "{err}"
    );
    let json: serde_json::Value = serde_json::from_str(&registered).unwrap();
    let lease_id = json["leaseId"].as_str().unwrap().to_owned();
    let token = json["leaseToken"].as_str().unwrap().to_owned();
    assert_eq!(json["ttlSeconds"], 10);

    let listed = ok(&addr, &[], &["chat.v1.Discovery/List"]).await;
    let json: serde_json::Value = serde_json::from_str(&listed).unwrap();
    assert_eq!(json["members"][0]["name"], "alice");
    assert_eq!(json["members"][0]["publicKey"], key.as_str());

    let lease = format!(r#"{{"lease_id":"{lease_id}","lease_token":"{token}"}}"#);
    let renewed = ok(&addr, &["-d", &lease], &["chat.v1.Discovery/KeepAlive"]).await;
    assert!(renewed.contains("\"ttlSeconds\": 10"), "{renewed}");
    ok(&addr, &["-d", &lease], &["chat.v1.Discovery/Leave"]).await;
    let listed = ok(&addr, &[], &["chat.v1.Discovery/List"]).await;
    let json: serde_json::Value = serde_json::from_str(&listed).unwrap();
    assert!(json.get("members").is_none(), "nobody left: {listed}");

    // A second Leave: the lease is gone, and grpcurl shows NOT_FOUND.
    let (success, _, err) =
        run_grpcurl(&["-plaintext", "-d", &lease, &addr, "chat.v1.Discovery/Leave"]).await;
    assert!(!success);
    assert!(err.contains("NotFound"), "{err}");

    let health = ok(&addr, &[], &["grpc.health.v1.Health/Check"]).await;
    assert!(health.contains("SERVING"), "{health}");

    assert!(process.terminate().await.success(), "clean exit on SIGTERM");
}
