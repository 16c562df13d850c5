//! Batcher throughput: row changes pushed through the reader's [`Feeder`] (byte budget and
//! bounded channel), batched by the flush policy and handed to a sink that acknowledges at once.
//! This is the pipeline's fixed cost per change, without decoding or encoding. Two shapes: OLTP
//! (4 changes and a commit per transaction) and one big transaction.

#[path = "common/rows.rs"]
mod rows;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use dbmazz::config::{FlushPolicy, SinkCircuitPolicy, DEFAULT_FLUSH_MAX_BYTES};
use dbmazz::metrics::Metrics;
use dbmazz::pipeline::batcher::{channel, Batcher};
use dbmazz::pipeline::change::Event;
use dbmazz::pipeline::circuit::Circuit;
use dbmazz::pipeline::sink::{Sink, SinkError};
use dbmazz::Lsn;
use tokio::sync::watch;

/// Acknowledges every batch at once, counting the changes it saw.
struct CountingSink(Arc<AtomicU64>);

impl Sink for CountingSink {
    fn snapshot_encoders(&self) -> Arc<dyn dbmazz::pipeline::sink::SnapshotEncoders> {
        Arc::new(dbmazz::ndjson::NdjsonSnapshotEncoders)
    }

    async fn write_batch(&mut self, events: &[Event]) -> Result<(), SinkError> {
        let rows = events.iter().filter(|e| matches!(e, Event::Row(_))).count();
        self.0.fetch_add(rows as u64, Ordering::Relaxed);
        Ok(())
    }
}

/// `rows` changes in transactions of `per_txn` changes, each followed by its commit.
fn events(rows: usize, per_txn: usize) -> Vec<Event> {
    let mut out = Vec::with_capacity(rows + rows / per_txn + 1);
    for (i, row) in rows::changes(rows).into_iter().enumerate() {
        let lsn = row.pos.lsn.0;
        out.push(Event::Row(row));
        if (i + 1) % per_txn == 0 || i + 1 == rows {
            out.push(Event::Commit {
                commit_lsn: Lsn(lsn + 1),
                end_lsn: Lsn(lsn + 2),
                commit_time: 0,
            });
        }
    }
    out
}

/// Feeds `events` through a fresh channel and batcher with the default flush policy; returns
/// once the last commit is durable.
async fn run(events: Vec<Event>) -> u64 {
    let policy = FlushPolicy {
        max_events: 1500,
        max_bytes: DEFAULT_FLUSH_MAX_BYTES,
        interval: Duration::from_millis(100),
    };
    let (_policy_tx, policy_rx) = watch::channel(policy);
    let circuit = Arc::new(Circuit::default());
    let (feeder, rx) = channel(&policy, circuit.clone());
    let (durable_tx, mut durable_rx) = watch::channel(Lsn(0));
    let seen = Arc::new(AtomicU64::new(0));
    let batcher = Batcher::new(
        CountingSink(seen.clone()),
        policy_rx,
        rx,
        durable_tx,
        Arc::new(Metrics::default()),
        SinkCircuitPolicy {
            failures: 5,
            probe: Duration::from_secs(10),
        },
        circuit,
    );
    let task = tokio::spawn(batcher.run());
    for e in events {
        feeder.send(e).await.expect("batcher alive");
    }
    drop(feeder);
    task.await.expect("batcher task").expect("sink never fails");
    assert!(durable_rx.borrow_and_update().0 > 0);
    seen.load(Ordering::Relaxed)
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    const ROWS: usize = 100_000;
    let mut g = c.benchmark_group("batcher");
    g.throughput(Throughput::Elements(ROWS as u64));
    g.sample_size(20);
    for (name, per_txn) in [("oltp_4_per_txn", 4), ("one_big_txn", ROWS)] {
        g.bench_function(name, |b| {
            b.iter_batched(
                || events(ROWS, per_txn),
                |ev| {
                    let seen = rt.block_on(run(ev));
                    assert_eq!(seen, ROWS as u64);
                },
                BatchSize::LargeInput,
            )
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
