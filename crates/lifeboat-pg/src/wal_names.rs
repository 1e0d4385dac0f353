//! WAL file names and LSNs: pure arithmetic, shared by backup, push, fetch, check and retention.

use crate::error::{PgError, Result};

/// A log sequence number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Lsn(pub u64);

impl Lsn {
    /// Parses `X/Y` (hex).
    pub fn parse(s: &str) -> Result<Lsn> {
        let (hi, lo) = s
            .trim()
            .split_once('/')
            .ok_or_else(|| PgError::Invalid(format!("invalid LSN {s:?} (expected like 0/16B3748)")))?;
        let hi = u64::from_str_radix(hi, 16).map_err(|_| PgError::Invalid(format!("invalid LSN {s:?}")))?;
        let lo = u64::from_str_radix(lo, 16).map_err(|_| PgError::Invalid(format!("invalid LSN {s:?}")))?;
        if hi > u64::from(u32::MAX) || lo > u64::from(u32::MAX) {
            return Err(PgError::Invalid(format!("invalid LSN {s:?}")));
        }
        Ok(Lsn((hi << 32) | lo))
    }
}

impl std::fmt::Display for Lsn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xffff_ffff)
    }
}

/// A WAL segment: timeline and segment number (for a given segment size).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Segment {
    /// Timeline id.
    pub timeline: u32,
    /// Segment number (LSN / segment size).
    pub number: u64,
}

/// Segments per "xlogid" for a segment size.
fn per_id(seg_size: u64) -> u64 {
    0x1_0000_0000 / seg_size
}

impl Segment {
    /// The segment holding `lsn`.
    pub fn of(timeline: u32, lsn: Lsn, seg_size: u64) -> Segment {
        Segment {
            timeline,
            number: lsn.0 / seg_size,
        }
    }

    /// Parses a 24-hex-digit segment file name.
    pub fn parse(name: &str, seg_size: u64) -> Option<Segment> {
        if name.len() != 24 || !name.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_lowercase()) {
            return None;
        }
        let tli = u32::from_str_radix(&name[..8], 16).ok()?;
        let hi = u64::from_str_radix(&name[8..16], 16).ok()?;
        let lo = u64::from_str_radix(&name[16..], 16).ok()?;
        if lo >= per_id(seg_size) {
            return None;
        }
        Some(Segment {
            timeline: tli,
            number: hi * per_id(seg_size) + lo,
        })
    }

    /// The file name.
    pub fn name(&self, seg_size: u64) -> String {
        let p = per_id(seg_size);
        format!("{:08X}{:08X}{:08X}", self.timeline, self.number / p, self.number % p)
    }

    /// The next segment on the same timeline.
    pub fn next(&self) -> Segment {
        Segment {
            timeline: self.timeline,
            number: self.number + 1,
        }
    }

    /// First LSN of the segment.
    pub fn start_lsn(&self, seg_size: u64) -> Lsn {
        Lsn(self.number * seg_size)
    }
}

/// True for a timeline history file name (`00000002.history`).
pub fn is_history(name: &str) -> bool {
    name.len() == 16 && name.ends_with(".history") && name[..8].bytes().all(|b| b.is_ascii_hexdigit())
}

/// Timeline of a history file name.
pub fn history_timeline(name: &str) -> Option<u32> {
    is_history(name).then(|| u32::from_str_radix(&name[..8], 16).ok())?
}

/// Parses a timeline history file: `(timeline, switch point)` per line, oldest first. The
/// switch point is where the child timeline branched off `timeline`.
pub fn parse_history(text: &str) -> Vec<(u32, Lsn)> {
    text.lines()
        .filter_map(|l| {
            let l = l.trim();
            if l.is_empty() || l.starts_with('#') {
                return None;
            }
            let mut f = l.split_whitespace();
            let tli = f.next()?.parse().ok()?;
            let lsn = Lsn::parse(f.next()?).ok()?;
            Some((tli, lsn))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    const SEG: u64 = 16 << 20;

    #[test]
    fn names_round_trip() {
        let lsn = Lsn::parse("1/A2000028").unwrap();
        assert_eq!(lsn.to_string(), "1/A2000028");
        let s = Segment::of(1, lsn, SEG);
        assert_eq!(s.name(SEG), "0000000100000001000000A2");
        assert_eq!(Segment::parse("0000000100000001000000A2", SEG), Some(s));
        assert_eq!(
            Segment::parse("0000000100000000000000FF", SEG)
                .unwrap()
                .next()
                .name(SEG),
            "000000010000000100000000"
        );
        assert!(Segment::parse("000000010000000100000100", SEG).is_none());
        assert!(Segment::parse("00000001.history", SEG).is_none());
        assert_eq!(history_timeline("00000002.history"), Some(2));
        assert_eq!(
            parse_history("1\t0/3000000\tbefore 2026-11-26\n\n"),
            vec![(1, Lsn::parse("0/3000000").unwrap())]
        );
    }
}
