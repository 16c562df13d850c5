//! Random identifiers: generated labels (UUIDs, as the BE makes them) and error-log names.
//!
//! Why no `rand`: these need to be unique, not unpredictable; std's randomly keyed hasher
//! mixed with a counter and the clock is enough.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A random 64-bit value.
pub fn random_u64() -> u64 {
    let mut h = RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_i64(crate::clock::now_ms());
    h.finish()
}

/// A random UUID-shaped string, like the label the BE generates when none is given.
pub fn uuid() -> String {
    let a = random_u64();
    let b = random_u64();
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xffff,
        b >> 48,
        b & 0xffff_ffff_ffff
    )
}

/// An error-log file name, `error_log_<hex>_<hex>` like the BE's.
pub fn error_log_name() -> String {
    format!("error_log_{:016x}_{:016x}", random_u64(), random_u64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_are_distinct_and_valid_labels() {
        let a = uuid();
        let b = uuid();
        assert_ne!(a, b);
        assert_eq!(a.len(), 36);
        assert!(crate::load::label_is_valid(&a));
    }
}
