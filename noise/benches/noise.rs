//! Micro-benchmarks of the hot pieces: a whole IK handshake (both roles,
//! and its latency path when the work that can be done ahead was),
//! seal+open of a 1 KiB envelope, and the replay window.

use chat_noise::{
    Initiator, ReplayWindow, Responder, ResponderPrecomputed, StaticDh, StaticKeypair,
};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;

const PROLOGUE: &[u8] = b"bench";

fn handshake(c: &mut Criterion) {
    let alice = StaticKeypair::generate();
    let bob = StaticKeypair::generate();
    c.bench_function("ik_handshake_both_roles", |b| {
        b.iter(|| {
            let (m1, waiting) = Initiator::new(&alice, bob.public_key(), PROLOGUE)
                .write_message(b"alice")
                .unwrap();
            let pending = Responder::read_message(&bob, PROLOGUE, &m1).unwrap();
            let (m2, _) = pending.write_message(b"bob").unwrap();
            black_box(waiting.read_message(&m2).unwrap());
        })
    });
    // What remains on the latency path when the work that can be done
    // ahead was done (outside the timed part): four X25519 operations.
    let alice_ss = StaticDh::new(&alice, bob.public_key()).unwrap();
    let bob_ss = std::sync::Arc::new(StaticDh::new(&bob, alice.public_key()).unwrap());
    c.bench_function("ik_handshake_latency_path_with_work_ahead", |b| {
        b.iter_batched(
            || {
                (
                    Initiator::with_static(&alice, &alice_ss, PROLOGUE),
                    ResponderPrecomputed::new(&bob, alice.public_key()).unwrap(),
                )
            },
            |(initiator, ahead)| {
                let (m1, waiting) = initiator.write_message(b"alice").unwrap();
                let pending = Responder::read_message_with_static(&bob, PROLOGUE, &m1, |_| {
                    Some(bob_ss.clone())
                })
                .unwrap();
                let (m2, _) = pending
                    .write_message_precomputed(b"bob", Some(ahead))
                    .unwrap();
                black_box(waiting.read_message(&m2).unwrap());
            },
            criterion::BatchSize::SmallInput,
        )
    });
}

fn seal_open(c: &mut Criterion) {
    let alice = StaticKeypair::generate();
    let bob = StaticKeypair::generate();
    let (m1, waiting) = Initiator::new(&alice, bob.public_key(), PROLOGUE)
        .write_message(b"")
        .unwrap();
    let (m2, responder) = Responder::read_message(&bob, PROLOGUE, &m1)
        .unwrap()
        .write_message(b"")
        .unwrap();
    let (_, initiator) = waiting.read_message(&m2).unwrap();
    let plaintext = vec![7u8; 1024];
    let mut group = c.benchmark_group("transport");
    group.throughput(Throughput::Bytes(1024));
    let mut counter = 0u64;
    group.bench_function("seal_open_1k", |b| {
        b.iter(|| {
            counter += 1;
            let sealed = initiator.seal(counter, b"aad", &plaintext).unwrap();
            black_box(responder.open(counter, b"aad", &sealed).unwrap());
        })
    });
    group.finish();
}

fn replay(c: &mut Criterion) {
    c.bench_function("replay_window_in_order", |b| {
        let mut w = ReplayWindow::new();
        let mut n = 0u64;
        b.iter(|| {
            n += 1;
            w.accept(black_box(n)).unwrap();
        })
    });
}

criterion_group!(benches, handshake, seal_open, replay);
criterion_main!(benches);
