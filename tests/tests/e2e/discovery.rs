//! Discovery against a real server on an ephemeral port, through a tonic
//! client: one suite, run on each registry store (`memory::*` always,
//! `etcd::*` against a real etcd when the `etcd` feature is on).

use std::{collections::HashMap, time::Duration};

use chat_noise::StaticKeypair;
use chat_proto::v1::{
    KeepAliveRequest, LeaveRequest, ListRequest, MembershipEvent, RegisterRequest, WatchRequest,
    membership_event::Kind,
};
use chat_tests::{Discovery, TestStore, proven, random_public_key, register, within};
use futures::StreamExt;
use tonic::{Code, Streaming};

/// Reads the next event, failing the test if the stream ends or errs.
async fn next(stream: &mut Streaming<MembershipEvent>) -> (Kind, String) {
    let event = within("a membership event", stream.message())
        .await
        .expect("watch stream status")
        .expect("watch stream ended");
    (event.kind(), event.member.expect("member").name)
}

async fn watch_sees_join_leave_and_expiry_in_order(store: TestStore) {
    let discovery = Discovery::start_with(discovery_svc::Config {
        ttl: Duration::from_secs(1),
        ..store.discovery_config()
    })
    .await;
    let mut client = discovery.client().await;
    let early = register(&mut client, "early").await;

    let mut watch = client
        .watch(WatchRequest::default())
        .await
        .unwrap()
        .into_inner();
    let first = within("snapshot", watch.message()).await.unwrap().unwrap();
    assert_eq!(first.kind(), Kind::Joined);
    assert_eq!(first.member.unwrap().name, "early");
    assert!(
        first.initial,
        "members present at Watch come first, marked initial"
    );

    client
        .leave(LeaveRequest {
            lease_id: early.lease_id,
            lease_token: early.lease_token,
        })
        .await
        .unwrap();
    let alice = register(&mut client, "alice").await;
    let _bob = register(&mut client, "bob").await;
    client
        .leave(LeaveRequest {
            lease_id: alice.lease_id,
            lease_token: alice.lease_token,
        })
        .await
        .unwrap();

    // bob is never renewed: after the TTL it expires, and is the only one left to.
    assert_eq!(next(&mut watch).await, (Kind::Left, "early".into()));
    assert_eq!(next(&mut watch).await, (Kind::Joined, "alice".into()));
    assert_eq!(next(&mut watch).await, (Kind::Joined, "bob".into()));
    assert_eq!(next(&mut watch).await, (Kind::Left, "alice".into()));
    assert_eq!(next(&mut watch).await, (Kind::Expired, "bob".into()));
    assert!(
        client
            .list(ListRequest::default())
            .await
            .unwrap()
            .into_inner()
            .members
            .is_empty()
    );

    let err = client
        .keep_alive(KeepAliveRequest {
            lease_id: "0123456789abcdef".into(),
            lease_token: "x".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    discovery.stop().await;
}

async fn a_live_name_with_another_key_is_already_taken(store: TestStore) {
    let discovery = Discovery::start_with(store.discovery_config()).await;
    let mut client = discovery.client().await;
    let key = StaticKeypair::generate();
    let req = proven(&mut client, &key, "alice", "127.0.0.1:1").await;
    let first = client.register(req).await.unwrap().into_inner();

    let other = StaticKeypair::generate();
    let req = proven(&mut client, &other, "alice", "127.0.0.1:2").await;
    let err = client.register(req).await.unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);
    assert!(err.message().contains("alice"), "{}", err.message());

    // The same key again is a restarted peer: it replaces the lease.
    let req = proven(&mut client, &key, "alice", "127.0.0.1:3").await;
    let second = client.register(req).await.unwrap().into_inner();
    assert_ne!(first.lease_id, second.lease_id);
    let members = client
        .list(ListRequest::default())
        .await
        .unwrap()
        .into_inner()
        .members;
    assert_eq!(members.len(), 1);
    assert_eq!(members[0].address, "127.0.0.1:3");
    let stale = client
        .keep_alive(KeepAliveRequest {
            lease_id: first.lease_id,
            lease_token: first.lease_token,
        })
        .await
        .unwrap_err();
    assert_eq!(stale.code(), Code::NotFound, "the replaced lease is gone");
}

async fn only_the_lease_holder_can_renew_or_leave(store: TestStore) {
    let discovery = Discovery::start_with(store.discovery_config()).await;
    let mut client = discovery.client().await;
    let alice = register(&mut client, "alice").await;
    let mallory = register(&mut client, "mallory").await;

    for token in [mallory.lease_token.clone(), "guess".into()] {
        let err = client
            .leave(LeaveRequest {
                lease_id: alice.lease_id.clone(),
                lease_token: token.clone(),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied);
        let err = client
            .keep_alive(KeepAliveRequest {
                lease_id: alice.lease_id.clone(),
                lease_token: token,
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied);
    }
    let names: Vec<String> = client
        .list(ListRequest::default())
        .await
        .unwrap()
        .into_inner()
        .members
        .into_iter()
        .map(|m| m.name)
        .collect();
    assert_eq!(names, ["alice", "mallory"]);

    let err = client
        .leave(LeaveRequest {
            lease_id: "no-such-lease".into(),
            lease_token: alice.lease_token.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
}

async fn each_malformed_registration_is_invalid_argument_naming_the_rule(store: TestStore) {
    let discovery = Discovery::start_with(store.discovery_config()).await;
    let mut client = discovery.client().await;
    let good_key = random_public_key();
    let mut low_order = vec![0u8; 32];
    low_order[0] = 1; // u = 1, a point of order 4
    let long_name = "n".repeat(65);
    let cases: Vec<(&str, &str, Vec<u8>, &str)> = vec![
        (
            "",
            "127.0.0.1:1",
            good_key.clone(),
            "name must not be empty",
        ),
        (
            &long_name,
            "127.0.0.1:1",
            good_key.clone(),
            "name must be at most 64",
        ),
        (
            "bad name",
            "127.0.0.1:1",
            good_key.clone(),
            "name must be printable",
        ),
        (
            "bell\u{7}",
            "127.0.0.1:1",
            good_key.clone(),
            "name must be printable",
        ),
        (
            "a",
            "127.0.0.1",
            good_key.clone(),
            "address must be host:port",
        ),
        (
            "a",
            "127.0.0.1:0",
            good_key.clone(),
            "address must end in a port",
        ),
        (
            "a",
            "127.0.0.1:99999",
            good_key.clone(),
            "address must end in a port",
        ),
        (
            "a",
            "not a host:80",
            good_key.clone(),
            "address must be host:port",
        ),
        (
            "a",
            "127.0.0.1:1",
            vec![9; 31],
            "public_key must be 32 bytes, got 31",
        ),
        (
            "a",
            "127.0.0.1:1",
            vec![],
            "public_key must be 32 bytes, got 0",
        ),
        (
            "a",
            "127.0.0.1:1",
            vec![0; 32],
            "public_key must not be all zero",
        ),
        ("a", "127.0.0.1:1", low_order, "public_key is a low-order"),
    ];
    for (name, address, key, expected) in cases {
        let err = client
            .register(RegisterRequest {
                name: name.into(),
                address: address.into(),
                public_key: key,
                proof: Vec::new(),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{name:?} {address:?}");
        assert!(
            err.message().starts_with(expected),
            "{name:?} {address:?}: {:?} should start with {expected:?}",
            err.message()
        );
    }
    for (id, token, field) in [("", "t", "lease_id"), ("id", "", "lease_token")] {
        let err = client
            .keep_alive(KeepAliveRequest {
                lease_id: id.into(),
                lease_token: token.into(),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        assert!(err.message().contains(field));
    }
    // An oversized request is refused before it is decoded.
    let err = client
        .register(RegisterRequest {
            name: "a".into(),
            address: "127.0.0.1:1".into(),
            public_key: vec![1; 1 << 20],
            proof: Vec::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
    // Nothing was registered, and the server still serves.
    assert!(
        client
            .list(ListRequest::default())
            .await
            .unwrap()
            .into_inner()
            .members
            .is_empty()
    );
    register(&mut client, "still-serving").await;
}

async fn a_stalled_or_gone_watcher_does_not_disturb_the_others(store: TestStore) {
    // A small lag limit, so the stall shows after a few thousand events.
    const LAG_LIMIT: usize = 256;
    let discovery = Discovery::start_with(discovery_svc::Config {
        watch_lag_limit: LAG_LIMIT,
        ..store.discovery_config()
    })
    .await;
    let mut client = discovery.client().await;
    // Each watcher gets its own connection, as separate peers would. The
    // stalled one has a small HTTP/2 stream window, so its stall reaches the
    // server after 64 KiB rather than the default 2 MiB of client buffering
    // (the connection window stays large: h2 budgets buffered small frames
    // at half of it).
    let slow_channel = tonic::transport::Endpoint::from_shared(discovery.url())
        .unwrap()
        .initial_stream_window_size(64 * 1024)
        .initial_connection_window_size(1024 * 1024)
        .connect()
        .await
        .unwrap();
    let mut stalled = chat_proto::v1::discovery_client::DiscoveryClient::new(slow_channel)
        .watch(WatchRequest::default())
        .await
        .unwrap()
        .into_inner();
    let gone = discovery
        .client()
        .await
        .watch(WatchRequest::default())
        .await
        .unwrap()
        .into_inner();
    let mut live = discovery
        .client()
        .await
        .watch(WatchRequest::default())
        .await
        .unwrap()
        .into_inner();
    drop(gone);

    // Enough churn to overflow the stalled watcher's backlog many times over.
    // Enough events to fill what HTTP/2 buffers (~64 KiB at the client, up
    // to ~400 KiB at the server, ~120 bytes an event) and the lag limit.
    let rounds = 2_500;
    let key = StaticKeypair::generate();
    let info = client
        .info(chat_proto::v1::InfoRequest {})
        .await
        .unwrap()
        .into_inner();
    let churn = async {
        for i in 0..rounds {
            let name = format!("m{}", i % 8);
            let req = chat_proto::registration::request(&key, &info, &name, "127.0.0.1:1").unwrap();
            let r = client.register(req).await.unwrap().into_inner();
            client
                .leave(LeaveRequest {
                    lease_id: r.lease_id,
                    lease_token: r.lease_token,
                })
                .await
                .unwrap();
        }
    };
    let read_live = async {
        let mut seen = 0;
        while seen < 2 * rounds {
            let event = live
                .message()
                .await
                .expect("live watcher ok")
                .expect("open");
            let expected = if seen % 2 == 0 {
                Kind::Joined
            } else {
                Kind::Left
            };
            assert_eq!(event.kind(), expected);
            seen += 1;
        }
        seen
    };
    // 5,000 store writes (on etcd, ~30 s on this VM alone, longer while
    // the other tests run): a hang guard longer than the usual patience.
    let ((), seen) = tokio::time::timeout(
        Duration::from_secs(180),
        futures::future::join(churn, read_live),
    )
    .await
    .expect("churn and the live watcher within 180 s");
    assert_eq!(seen, 2 * rounds);

    // The stalled watcher, reading at last, is told to watch again.
    let status = within("the stalled watcher's end", async {
        loop {
            match stalled.message().await {
                Ok(Some(_)) => continue,
                Ok(None) => panic!("stalled watcher ended without a status"),
                Err(status) => break status,
            }
        }
    })
    .await;
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains("call Watch again"),
        "{}",
        status.message()
    );
    discovery.stop().await;
}

async fn thousand_joins_and_leaves_from_fifty_clients_reach_every_watcher_once(store: TestStore) {
    const CLIENTS: usize = 50;
    const PER_CLIENT: usize = 20;
    // Leases that outlive the test however loaded the machine is: only
    // JOINED and LEFT are expected here, never EXPIRED. The member caps are
    // not what this tests: room to spare (a burst of registrations on etcd
    // counts some twice for a moment, erring toward refusing).
    let discovery = Discovery::start_with(discovery_svc::Config {
        ttl: Duration::from_secs(600),
        caps: discovery_svc::config::Caps {
            members: 10 * CLIENTS * PER_CLIENT,
            per_source: 10 * CLIENTS * PER_CLIENT,
        },
        ..store.discovery_config()
    })
    .await;
    let mut watchers = Vec::new();
    for _ in 0..3 {
        let mut w = discovery
            .client()
            .await
            .watch(WatchRequest::default())
            .await
            .unwrap()
            .into_inner();
        watchers.push(tokio::spawn(async move {
            let mut counts: HashMap<(String, i32), u32> = HashMap::new();
            while counts.values().sum::<u32>() < (2 * CLIENTS * PER_CLIENT) as u32 {
                let e = w.message().await.expect("watch ok").expect("watch open");
                let name = e.member.as_ref().expect("member").name.clone();
                *counts.entry((name, e.kind)).or_default() += 1;
            }
            counts
        }));
    }

    let registered = futures::stream::iter(0..CLIENTS)
        .map(|c| {
            let url = discovery.url();
            async move {
                let mut client = chat_proto::v1::discovery_client::DiscoveryClient::connect(url)
                    .await
                    .unwrap();
                let mut leases = Vec::new();
                for i in 0..PER_CLIENT {
                    leases.push(register(&mut client, &format!("c{c}-{i}")).await);
                }
                (client, leases)
            }
        })
        .buffer_unordered(CLIENTS)
        .collect::<Vec<_>>();
    let registered = within("1,000 registrations", registered).await;
    let mut lister = discovery.client().await;
    let members = lister
        .list(ListRequest::default())
        .await
        .unwrap()
        .into_inner()
        .members;
    assert_eq!(members.len(), CLIENTS * PER_CLIENT);

    let leaves = futures::stream::iter(registered)
        .map(|(mut client, leases)| async move {
            for lease in leases {
                client
                    .leave(LeaveRequest {
                        lease_id: lease.lease_id,
                        lease_token: lease.lease_token,
                    })
                    .await
                    .unwrap();
            }
        })
        .buffer_unordered(CLIENTS)
        .collect::<Vec<_>>();
    within("1,000 leaves", leaves).await;
    assert!(
        lister
            .list(ListRequest::default())
            .await
            .unwrap()
            .into_inner()
            .members
            .is_empty()
    );

    for watcher in watchers {
        let counts = within("every event at a watcher", watcher).await.unwrap();
        assert_eq!(
            counts.len(),
            2 * CLIENTS * PER_CLIENT,
            "one JOINED and one LEFT per member"
        );
        assert!(counts.values().all(|&n| n == 1), "each event exactly once");
        assert!(
            counts
                .keys()
                .all(|(_, k)| *k == Kind::Joined as i32 || *k == Kind::Left as i32)
        );
    }
}

async fn watchers_past_the_limit_are_refused_until_one_leaves(store: TestStore) {
    let discovery = Discovery::start_with(discovery_svc::Config {
        max_watchers: 2,
        ..store.discovery_config()
    })
    .await;
    let mut client = discovery.client().await;
    let first = client
        .watch(WatchRequest::default())
        .await
        .unwrap()
        .into_inner();
    let _second = client
        .watch(WatchRequest::default())
        .await
        .unwrap()
        .into_inner();
    let err = client.watch(WatchRequest::default()).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert!(err.message().contains("limit 2"), "{}", err.message());
    drop(first);
    eventually_watch(&mut client).await;
}

/// Watch succeeds again once a slot is free (the server notices the
/// dropped stream asynchronously).
async fn eventually_watch(
    client: &mut chat_proto::v1::discovery_client::DiscoveryClient<tonic::transport::Channel>,
) {
    within("a watcher slot to free up", async {
        loop {
            match client.watch(WatchRequest::default()).await {
                Ok(_) => return,
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    })
    .await;
}

async fn one_connection_gets_at_most_the_stream_cap_in_flight(store: TestStore) {
    let cap = chat_proto::limits::MAX_CONCURRENT_STREAMS as usize;
    let discovery = Discovery::start_with(store.discovery_config()).await;
    let mut client = discovery.client().await;
    let mut open = Vec::new();
    within("the cap's worth of streams to open", async {
        for _ in 0..cap {
            open.push(
                client
                    .watch(WatchRequest::default())
                    .await
                    .unwrap()
                    .into_inner(),
            );
        }
    })
    .await;
    // One more call on the same connection waits for a free stream… (the
    // pause gives a wrongly admitted call time to complete; it is not a
    // readiness wait)
    let mut extra = client.clone();
    let waiting =
        tokio::spawn(async move { extra.watch(WatchRequest::default()).await.map(|_| ()) });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !waiting.is_finished(),
        "the call past the cap must wait, not run"
    );
    // …and runs as soon as one closes; other connections are not affected.
    register(&mut discovery.client().await, "other-connection").await;
    drop(open.pop());
    within("the waiting call once a stream is free", waiting)
        .await
        .unwrap()
        .unwrap();
}

/// Issue 15's hijack: registering someone else's key (copied from `List`)
/// without its private key is PERMISSION_DENIED, as is a captured proof
/// sent again, one made for another name or address, or one made to
/// another Discovery; none of them changes the member list.
async fn only_the_holder_of_a_key_can_register_it(store: TestStore) {
    let discovery = Discovery::start_with(store.discovery_config()).await;
    let mut client = discovery.client().await;
    let bob = StaticKeypair::generate();
    let captured = proven(&mut client, &bob, "bob", "127.0.0.1:1").await;
    client.register(captured.clone()).await.unwrap();
    let listed = || async {
        let mut client = discovery.client().await;
        client
            .list(ListRequest::default())
            .await
            .unwrap()
            .into_inner()
            .members
    };
    let before = listed().await;

    let mallory = StaticKeypair::generate();
    // Bob's key with a proof made by mallory's key.
    let mut hijack = proven(&mut client, &mallory, "bob", "127.0.0.1:9").await;
    hijack.public_key = bob.public_key().to_vec();
    // Bob's captured proof, sent again or bent to another address.
    let mut moved = captured.clone();
    moved.address = "127.0.0.1:9".into();
    // No proof at all (a client of the old protocol, or grpcurl by hand).
    let mut bare = captured.clone();
    bare.proof.clear();
    // A proof bob made for another Discovery.
    let elsewhere = Discovery::start().await;
    let foreign = proven(&mut elsewhere.client().await, &bob, "bob", "127.0.0.1:1").await;
    elsewhere.stop().await;
    for (what, request, expected) in [
        ("someone else's key", hijack, "made with another key"),
        ("a replayed proof", captured, "not newer than the last one"),
        ("another address", moved, "is for address"),
        ("no proof", bare, "needs a proof"),
        ("another Discovery", foreign, "does not open"),
    ] {
        let err = client.register(request).await.unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied, "{what}: {err:?}");
        assert!(
            err.message().contains(expected),
            "{what}: {}",
            err.message()
        );
    }
    assert_eq!(listed().await, before, "nothing changed");
    // Bob himself, with a fresh proof, still can.
    let again = proven(&mut client, &bob, "bob", "127.0.0.1:2").await;
    client.register(again).await.unwrap();
    discovery.stop().await;
}

chat_tests::on_every_store!(
    watch_sees_join_leave_and_expiry_in_order,
    only_the_holder_of_a_key_can_register_it,
    a_live_name_with_another_key_is_already_taken,
    only_the_lease_holder_can_renew_or_leave,
    each_malformed_registration_is_invalid_argument_naming_the_rule,
    a_stalled_or_gone_watcher_does_not_disturb_the_others,
    thousand_joins_and_leaves_from_fifty_clients_reach_every_watcher_once,
    watchers_past_the_limit_are_refused_until_one_leaves,
    one_connection_gets_at_most_the_stream_cap_in_flight,
);
