//! Decoder throughput on payloads captured from a real PostgreSQL 15.
//!
//! `peers_bulk`, `peers_oltp` and `peers_mixed` are the three workloads of the end-to-end
//! benchmark (`benches/e2e.sh`: one big insert transaction, pgbench TPC-B, and the TOAST mix),
//! scaled down. `bulk_orders` is a wider realistic table (numeric, timestamptz, jsonb, text)
//! with inserts, updates and deletes. The other fixtures mix every message kind, streaming and
//! two-phase commit. Each benchmark decodes every frame of a fixture once per iteration and
//! reports bytes per second and messages per second.

use std::hint::black_box;
use std::path::PathBuf;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use dbmazz::postgres::pgoutput::decode;

/// One fixture's payloads with the `in_stream` flag each must be decoded with.
struct Fixture {
    name: &'static str,
    frames: Vec<(Bytes, bool)>,
}

impl Fixture {
    fn load(name: &'static str) -> Fixture {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/pgoutput")
            .join(format!("{name}.hex"));
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        let mut in_stream = false;
        let frames = text
            .lines()
            .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
            .map(|line| {
                let frame = Bytes::from(unhex(line.trim()));
                let flag = in_stream;
                match frame.first() {
                    Some(b'S') => in_stream = true,
                    Some(b'E') => in_stream = false,
                    _ => {}
                }
                (frame, flag)
            })
            .collect();
        Fixture { name, frames }
    }

    fn bytes(&self) -> u64 {
        self.frames.iter().map(|(f, _)| f.len() as u64).sum()
    }

    fn messages(&self) -> u64 {
        self.frames.len() as u64
    }

    /// Decodes every frame; the count of values keeps the work from being optimised away.
    fn decode_all(&self) -> usize {
        let mut seen = 0;
        for (frame, in_stream) in &self.frames {
            let msg = decode(black_box(frame), *in_stream).expect("fixture frames decode");
            seen += usize::from(msg.tag());
            black_box(msg);
        }
        seen
    }
}

fn unhex(line: &str) -> Vec<u8> {
    line.as_bytes()
        .chunks(2)
        .map(|pair| {
            let pair = std::str::from_utf8(pair).expect("hex is ASCII");
            u8::from_str_radix(pair, 16).expect("hex digit")
        })
        .collect()
}

fn bench_fixtures(c: &mut Criterion) {
    let fixtures: Vec<Fixture> = [
        "peers_bulk",
        "peers_oltp",
        "peers_mixed",
        "bulk_orders",
        "v1_basic",
        "v2_stream",
        "v3_twophase",
    ]
    .into_iter()
    .map(Fixture::load)
    .collect();

    let mut bytes = c.benchmark_group("decode_bytes");
    for fixture in &fixtures {
        bytes.throughput(Throughput::Bytes(fixture.bytes()));
        bytes.bench_function(fixture.name, |b| b.iter(|| fixture.decode_all()));
    }
    bytes.finish();

    let mut messages = c.benchmark_group("decode_messages");
    for fixture in &fixtures {
        messages.throughput(Throughput::Elements(fixture.messages()));
        messages.bench_function(fixture.name, |b| b.iter(|| fixture.decode_all()));
    }
    messages.finish();
}

criterion_group!(benches, bench_fixtures);
criterion_main!(benches);
