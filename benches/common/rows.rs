//! Realistic `orders` row changes shared by the benchmarks (numeric, timestamptz, jsonb with
//! escapes, text), so that every benchmark measures the same rows.

use std::sync::Arc;

use bytes::Bytes;
use dbmazz::config::TableName;
use dbmazz::pipeline::change::{ColumnSchema, Op, Position, RelId, RowChange, TableSchema};
use dbmazz::postgres::pgoutput::{Tuple, Value};
use dbmazz::value::{Scalar, ValueKind};
use dbmazz::Lsn;

/// A table `public.<name>` keyed by its first column, from (name, type OID, kind) triples.
pub fn table(name: &str, columns: &[(&str, u32, Scalar)]) -> Arc<TableSchema> {
    Arc::new(TableSchema {
        rel_id: RelId(1),
        name: TableName::new("public", name),
        columns: columns
            .iter()
            .map(|&(name, oid, kind)| ColumnSchema {
                name: name.into(),
                type_oid: oid,
                type_modifier: -1,
                kind: ValueKind::Scalar(kind),
            })
            .collect(),
        key: vec![0],
        replica_identity: b'd',
    })
}

/// The `orders` table: a bigint key and six more columns.
pub fn orders() -> Arc<TableSchema> {
    table(
        "orders",
        &[
            ("id", 20, Scalar::Int),
            ("customer_id", 20, Scalar::Int),
            ("status", 25, Scalar::Text),
            ("amount", 1700, Scalar::Numeric),
            ("created_at", 1184, Scalar::Timestamptz),
            ("payload", 3802, Scalar::Json),
            ("note", 25, Scalar::Text),
        ],
    )
}

/// `n` inserts of distinct keys, in LSN order.
pub fn changes(n: usize) -> Vec<RowChange> {
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
