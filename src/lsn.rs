//! PostgreSQL log sequence numbers.
//!
//! Every position dbmazz reasons about (commit LSNs, checkpoints, the `flush` value confirmed to
//! PostgreSQL) is an [`Lsn`]. A newtype keeps them from being mixed up with row counts or byte
//! sizes, and gives one place for the `X/Y` text form that PostgreSQL and operators use.

use std::fmt;
use std::str::FromStr;

/// Microseconds from 1970-01-01 to 2000-01-01, PostgreSQL's epoch for timestamps on the wire.
pub const PG_EPOCH_OFFSET_MICROS: i64 = 946_684_800_000_000;

/// A position in the PostgreSQL write-ahead log.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Lsn(pub u64);

impl Lsn {
    /// The invalid / "start from the slot's position" LSN, `0/0`.
    pub const ZERO: Lsn = Lsn(0);

    /// The raw 64-bit value.
    pub fn as_u64(self) -> u64 {
        self.0
    }

    /// Appends the `X/Y` text form, as [`fmt::Display`] prints it, without going through the
    /// formatting machinery: the NDJSON sink writes two LSNs per row.
    pub fn write_text(self, out: &mut Vec<u8>) {
        write_hex(out, self.0 >> 32);
        out.push(b'/');
        write_hex(out, self.0 & 0xFFFF_FFFF);
    }
}

/// Upper-case hexadecimal without leading zeros (`0` for zero), like `{:X}`.
fn write_hex(out: &mut Vec<u8>, v: u64) {
    const DIGITS: &[u8; 16] = b"0123456789ABCDEF";
    let nibbles = (64 - v.leading_zeros()).div_ceil(4).max(1);
    for i in (0..nibbles).rev() {
        out.push(DIGITS[((v >> (i * 4)) & 0xF) as usize]);
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

/// The text is not of the `X/Y` form PostgreSQL prints.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid LSN {0:?}: expected the X/Y hexadecimal form, e.g. 0/16B3748")]
pub struct ParseLsnError(pub String);

impl FromStr for Lsn {
    type Err = ParseLsnError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseLsnError(s.to_owned());
        let (hi, lo) = s.split_once('/').ok_or_else(err)?;
        if hi.is_empty() || lo.is_empty() || hi.len() > 8 || lo.len() > 8 {
            return Err(err());
        }
        let hi = u32::from_str_radix(hi, 16).map_err(|_| err())?;
        let lo = u32::from_str_radix(lo, 16).map_err(|_| err())?;
        Ok(Lsn((u64::from(hi) << 32) | u64::from(lo)))
    }
}

impl From<u64> for Lsn {
    fn from(v: u64) -> Self {
        Lsn(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_like_postgres() {
        assert_eq!(Lsn(0x16B3748).to_string(), "0/16B3748");
        assert_eq!(Lsn((0x1Au64 << 32) | 0xFF).to_string(), "1A/FF");
    }

    #[test]
    fn write_text_matches_display() {
        for v in [
            0u64,
            1,
            0xF,
            0x10,
            0x16B3748,
            1 << 32,
            (0x1Au64 << 32) | 0xFF,
            0xFFFF_FFFF,
            u64::MAX,
            0xDEAD_BEEF_0000_0001,
        ] {
            let mut out = b"x".to_vec();
            Lsn(v).write_text(&mut out);
            assert_eq!(out, format!("x{}", Lsn(v)).into_bytes(), "{v:#x}");
        }
    }

    #[test]
    fn parses_what_it_prints() {
        for v in [0u64, 1, 0x16B3748, u64::MAX, 0xDEAD_BEEF_0000_0001] {
            assert_eq!(Lsn(v).to_string().parse::<Lsn>().unwrap(), Lsn(v));
        }
    }

    #[test]
    fn rejects_malformed_text() {
        for bad in ["", "0", "/1", "1/", "g/1", "1/2/3", "123456789/0"] {
            assert!(bad.parse::<Lsn>().is_err(), "{bad:?} should not parse");
        }
    }
}
