//! What message signatures cost (protocol 3): signing once per message
//! sent, verifying once per message received or relayed, alone and in the
//! batches history sync and DeliverStream verify at once; beside them, for
//! scale, the ChaCha20-Poly1305 sealing every message already pays.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ed25519_dalek::SigningKey;
use peer_svc::authorship::{self, Author};

fn author() -> Author {
    Author::new(
        SigningKey::from_bytes(&rand::random::<[u8; 32]>()),
        vec![2; 32],
        "bench",
        "0000 0000 0000 0000 0000 0000 0000 0000",
        None,
    )
}

fn sign(author: &Author, n: u64) -> chat_proto::v1::ChatMessage {
    author.sign(
        || {
            (
                format!("bench-{n}"),
                n << 16,
                prost_types::Timestamp {
                    seconds: n as i64,
                    nanos: 0,
                },
            )
        },
        "x".repeat(1024),
    )
}

fn signatures(c: &mut Criterion) {
    let alice = author();
    let mut n = 0;
    c.bench_function("sign a 1 KiB message", |b| {
        b.iter(|| {
            n += 1;
            black_box(sign(&alice, n))
        })
    });
    let message = sign(&alice, 0);
    c.bench_function("verify one", |b| {
        b.iter(|| authorship::verify(black_box(&message)).unwrap())
    });
    // Messages of several authors, as a history page holds them.
    let authors: Vec<Author> = (0..8).map(|_| author()).collect();
    let mut group = c.benchmark_group("verify a batch");
    for size in [32usize, 500] {
        let batch: Vec<_> = (0..size)
            .map(|i| sign(&authors[i % authors.len()], i as u64))
            .collect();
        group.throughput(Throughput::Elements(size as u64));
        group.bench_with_input(BenchmarkId::from_parameter(size), &batch, |b, batch| {
            b.iter(|| {
                let results = authorship::verify_all(batch);
                assert!(results.iter().all(Result::is_ok));
            })
        });
    }
    group.finish();
    let (alice_end, _) = chat_noise_pair();
    let plaintext = vec![7u8; 1200];
    let mut counter = 0u64;
    c.bench_function("for scale: seal 1.2 KB (ChaCha20-Poly1305)", |b| {
        b.iter(|| {
            counter += 1;
            black_box(alice_end.seal(counter, b"aad", &plaintext).unwrap())
        })
    });
}

/// A pair of Noise transports from a real IK handshake.
fn chat_noise_pair() -> (chat_noise::Transport, chat_noise::Transport) {
    use chat_noise::{Initiator, Responder, StaticKeypair};
    let (a, b) = (StaticKeypair::generate(), StaticKeypair::generate());
    let (m1, waiting) = Initiator::new(&a, b.public_key(), b"bench")
        .write_message(b"")
        .unwrap();
    let (m2, responder) = Responder::read_message(&b, b"bench", &m1)
        .unwrap()
        .write_message(b"")
        .unwrap();
    let (_, initiator) = waiting.read_message(&m2).unwrap();
    (initiator, responder)
}

criterion_group!(benches, signatures);
criterion_main!(benches);
