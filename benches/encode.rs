//! StarRocks encoder throughput: realistic `orders` rows collapsed per key and written as a
//! Stream Load JSON body (rows/s and MB of body per second).

#[path = "common/rows.rs"]
mod rows;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use dbmazz::starrocks::encode::Segment;
use rows::{changes, orders};

fn bench(c: &mut Criterion) {
    let rows = changes(10_000);
    let mut body = Vec::new();
    let mut seg = Segment::new(orders());
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
            let mut seg = Segment::new(orders());
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

criterion_group!(benches, bench);
criterion_main!(benches);
