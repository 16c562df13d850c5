//! StarRocks encoder throughput: realistic `orders` rows collapsed per key and written as a
//! Stream Load JSON body (rows/s and MB of body per second).

use std::sync::Arc;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use dbmazz::config::TableName;
use dbmazz::pipeline::change::{ColumnSchema, Op, Position, RowChange, TableSchema};
use dbmazz::postgres::pgoutput::{Tuple, Value};
use dbmazz::starrocks::encode::Segment;
use dbmazz::value::{Scalar, ValueKind};
use dbmazz::Lsn;

fn orders() -> Arc<TableSchema> {
    let col = |name: &str, oid: u32, kind| ColumnSchema {
        name: name.into(),
        type_oid: oid,
        type_modifier: -1,
        kind: ValueKind::Scalar(kind),
    };
    Arc::new(TableSchema {
        rel_id: 1,
        name: TableName::new("public", "orders"),
        columns: vec![
            col("id", 20, Scalar::Int),
            col("customer_id", 20, Scalar::Int),
            col("status", 25, Scalar::Text),
            col("amount", 1700, Scalar::Numeric),
            col("created_at", 1184, Scalar::Timestamptz),
            col("payload", 3802, Scalar::Json),
            col("note", 25, Scalar::Text),
        ],
        key: vec![0],
        replica_identity: b'd',
    })
}

fn changes(n: usize) -> Vec<RowChange> {
    let table = orders();
    let text = |s: String| Value::Text(Bytes::from(s));
    (0..n)
        .map(|i| RowChange {
            op: Op::Insert,
            table: table.clone(),
            pos: Position {
                lsn: Lsn(i as u64 * 200),
                commit_lsn: Lsn(i as u64 * 200 + 100),
                xid: 1,
                commit_time: 0,
            },
            row: Tuple {
                values: vec![
                    text(i.to_string()),
                    text((i % 997).to_string()),
                    text("paid".into()),
                    text(format!("{}.{:02}", i % 10_000, i % 100)),
                    text("2026-11-22 14:00:00.123456+00".into()),
                    text(format!(r#"{{"sku": "sku-{i}", "qty": {}, "tags": ["a", "b"], "note": "customer \"vip\""}}"#, i % 7)),
                    text("left at the front door, ring twice".into()),
                ],
            },
            key_only: false,
            old: None,
        })
        .collect()
}

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
