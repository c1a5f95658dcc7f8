//! Micro-benchmarks of the store's hot path: one message per transaction
//! (an idle peer receiving) against 32 per transaction (group commit under
//! load), on a real database file in WAL mode.

use chat_proto::v1::ChatMessage;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use peer_svc::store::Store;

fn message(n: u64) -> ChatMessage {
    ChatMessage {
        id: format!("bench-{n}"),
        sender: "bench".into(),
        sender_fingerprint: "0000 0000 0000 0000 0000 0000 0000 0000".into(),
        sent_at: Some(prost_types::Timestamp {
            seconds: 1_700_000_000 + n as i64,
            nanos: 0,
        }),
        text: "x".repeat(1024),
        hlc: (1_700_000_000_000 + n) << 16,
    }
}

fn inserts(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let mut n = 0u64;
    let mut group = c.benchmark_group("store_insert_1k");
    for batch in [1usize, 32, 256] {
        group.throughput(Throughput::Elements(batch as u64));
        group.bench_with_input(BenchmarkId::from_parameter(batch), &batch, |b, &batch| {
            b.iter(|| {
                let messages: Vec<ChatMessage> = (0..batch)
                    .map(|_| {
                        n += 1;
                        message(n)
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
