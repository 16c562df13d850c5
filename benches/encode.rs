//! StarRocks encoder throughput: realistic `orders` rows collapsed per key and written as a
//! Stream Load JSON body (rows/s and MB of body per second), and snapshot COPY lines encoded into
//! CSV and into JSON bodies (MB of COPY text per second), side by side.

#[path = "common/rows.rs"]
mod rows;

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use dbmazz::pipeline::change::TableSchema;
use dbmazz::starrocks::encode::{BodyPool, Segment, SnapshotBody};
use dbmazz::starrocks::target::ColumnTargets;
use dbmazz::value::Scalar;
use dbmazz::Lsn;
use rows::{changes, orders};

/// The table of `benches/snapshot.sh`, and COPY text lines shaped like its rows.
fn snapshot_table_and_lines(n: u64) -> (Arc<TableSchema>, Vec<Vec<u8>>) {
    let table = rows::table(
        "snap",
        &[
            ("id", 20, Scalar::Int),
            ("customer_id", 20, Scalar::Int),
            ("status", 25, Scalar::Text),
            ("amount", 1700, Scalar::Numeric),
            ("created_at", 1184, Scalar::Timestamptz),
            ("note", 25, Scalar::Text),
        ],
    );
    let lines = (1..=n)
        .map(|g| {
            format!(
                "{g}\t{}\t{}\t{}.{:02}\t2026-01-{:02} {:02}:{:02}:{:02}+00\tnote {:032x}",
                g % 100_000,
                ["new", "paid", "shipped"][(g % 3) as usize],
                g % 100_000 / 100,
                g % 100,
                1 + g / 86_400 % 28,
                g / 3600 % 24,
                g / 60 % 60,
                g % 60,
                g.wrapping_mul(0x9E37_79B9_7F4A_7C15)
            )
            .into_bytes()
        })
        .collect();
    (table, lines)
}

fn snapshot_bodies(c: &mut Criterion) {
    let (table, lines) = snapshot_table_and_lines(20_000);
    let text: u64 = lines.iter().map(|l| l.len() as u64 + 1).sum();
    let pool = BodyPool::default();
    let mut g = c.benchmark_group("snapshot_body");
    g.throughput(Throughput::Bytes(text));
    for (name, csv) in [("csv", true), ("json", false)] {
        g.bench_function(name, |b| {
            b.iter(|| {
                let mut enc = SnapshotBody::new(
                    table.clone(),
                    &ColumnTargets::default(),
                    Lsn(1),
                    "2026-11-22 23:00:00",
                    8 << 20,
                    pool.clone(),
                    csv,
                );
                for l in &lines {
                    enc.push_line(l).unwrap();
                }
                let mut bytes = 0;
                while let Some(e) = enc.take() {
                    bytes += e.body.len();
                }
                bytes
            })
        });
    }
    g.finish();
}

fn bench(c: &mut Criterion) {
    let rows = changes(10_000);
    let mut body = Vec::new();
    let mut seg = Segment::new(orders(), &ColumnTargets::default());
    for r in &rows {
        seg.add(r);
    }
    let all: Vec<usize> = (0..seg.len()).collect();
    seg.encode(&all, "2026-11-22 14:00:00", &mut body).unwrap();
    let body_len = body.len() as u64;

    let mut g = c.benchmark_group("starrocks_encode");
    g.throughput(Throughput::Elements(rows.len() as u64));
    g.bench_function("collapse_and_encode_rows", |b| {
        b.iter(|| {
            let mut seg = Segment::new(orders(), &ColumnTargets::default());
            for r in &rows {
                seg.add(r);
            }
            for (_, idx) in seg.groups() {
                seg.encode(&idx, "2026-11-22 14:00:00", &mut body).unwrap();
            }
            body.len()
        })
    });
    g.throughput(Throughput::Bytes(body_len));
    g.bench_function("encode_body_bytes", |b| {
        b.iter(|| {
            seg.encode(&all, "2026-11-22 14:00:00", &mut body).unwrap();
            body.len()
        })
    });
    g.finish();
}

criterion_group!(benches, bench, snapshot_bodies);
criterion_main!(benches);
