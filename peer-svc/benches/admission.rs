//! What admission and proof of possession cost: a registration proof made
//! (the peer) and checked (Discovery), and a credential verified in a
//! handshake the first time it is seen (a rekey with the same credential
//! hits the cache and costs none of this). Beside them, for scale, the
//! X25519 operation a handshake makes four of.

use chat_noise::StaticKeypair;
use criterion::{Criterion, criterion_group, criterion_main};
use ed25519_dalek::SigningKey;
use peer_svc::credential;
use std::hint::black_box;

fn key() -> SigningKey {
    SigningKey::from_bytes(&rand::random::<[u8; 32]>())
}

fn benches(c: &mut Criterion) {
    let discovery = StaticKeypair::generate();
    let peer = StaticKeypair::generate();
    let now = chat_proto::registration::now_micros();
    c.bench_function("register proof: make (peer)", |b| {
        b.iter(|| {
            chat_proto::registration::prove(
                &peer,
                discovery.public_key(),
                "user1",
                "127.0.0.1:50061",
                black_box(now),
            )
            .unwrap()
        })
    });
    let proof = chat_proto::registration::prove(
        &peer,
        discovery.public_key(),
        "user1",
        "127.0.0.1:50061",
        now,
    )
    .unwrap();
    c.bench_function("register proof: check (Discovery)", |b| {
        b.iter(|| {
            chat_proto::registration::check(
                &discovery,
                black_box(&proof),
                &peer.public_key(),
                "user1",
                "127.0.0.1:50061",
                now,
            )
            .unwrap()
        })
    });

    // A member admitted by the founder (chain of 2), and one a link further.
    let (founder, bob, carol) = (key(), key(), key());
    let static_key = peer.public_key();
    let f = credential::found(&founder, "user1", &static_key, 1);
    let network = credential::network_of(&f).unwrap();
    let b2 = credential::join(
        &credential::invite(&founder, &f, "user2", 2, 0).unwrap(),
        &bob,
        "user2",
        &static_key,
    )
    .unwrap();
    let c3 = credential::join(
        &credential::invite(&bob, &b2, "user3", 3, 0).unwrap(),
        &carol,
        "user3",
        &static_key,
    )
    .unwrap();
    c.bench_function("credential: verify, chain of 2", |b| {
        b.iter(|| {
            credential::verify_credential(&network, black_box(&b2), "user2", &static_key).unwrap()
        })
    });
    c.bench_function("credential: verify, chain of 3", |b| {
        b.iter(|| {
            credential::verify_credential(&network, black_box(&c3), "user3", &static_key).unwrap()
        })
    });
    let other = StaticKeypair::generate().public_key();
    c.bench_function("x25519: one DH (a handshake makes 4)", |b| {
        b.iter(|| chat_noise::StaticDh::new(&peer, black_box(other)).unwrap())
    });
}

criterion_group!(admission, benches);
criterion_main!(admission);
