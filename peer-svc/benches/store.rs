//! Micro-benchmarks of the store's hot path: one message per transaction
//! (an idle peer receiving) against 32 per transaction (group commit under
//! load), on a real database file in WAL mode.

use chat_proto::v1::ChatMessage;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use peer_svc::{authorship::Author, store::Store};

/// A signed message with a 1 KiB text, as a peer stores what it receives
/// (the authored bytes and signature beside the fields).
fn message(author: &Author, n: u64) -> ChatMessage {
    author.sign(
        || {
            (
                format!("bench-{n}"),
                (1_700_000_000_000 + n) << 16,
                prost_types::Timestamp {
                    seconds: 1_700_000_000 + n as i64,
                    nanos: 0,
                },
            )
        },
        "x".repeat(1024),
    )
}

fn inserts(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let author = Author::new(
        ed25519_dalek::SigningKey::from_bytes(&[1; 32]),
        vec![2; 32],
        "bench",
        "0000 0000 0000 0000 0000 0000 0000 0000",
        None,
    );
    let mut n = 0u64;
    let mut group = c.benchmark_group("store_insert_1k");
    for batch in [1usize, 32, 256] {
        group.throughput(Throughput::Elements(batch as u64));
        group.bench_with_input(BenchmarkId::from_parameter(batch), &batch, |b, &batch| {
            b.iter(|| {
                let messages: Vec<ChatMessage> = (0..batch)
                    .map(|_| {
                        n += 1;
                        message(&author, n)
                    })
                    .collect();
                store.insert_many(&messages).unwrap();
            })
        });
    }
    group.finish();
}

criterion_group!(benches, inserts);
criterion_main!(benches);
