//! Fuzzes the pgoutput decoder: any payload, read inside or outside a stream block, must give
//! a message or a typed error, never a panic (design invariant 6).
//!
//! Run with `cargo +nightly fuzz run pgoutput` from the repository root; the fixtures in
//! `tests/fixtures/pgoutput` make a good seed corpus once converted from hex.

#![no_main]

use bytes::Bytes;
use dbmazz::postgres::pgoutput::decode;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let frame = Bytes::copy_from_slice(data);
    let _ = decode(&frame, false);
    let _ = decode(&frame, true);
});
