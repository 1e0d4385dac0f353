//! On-disk formats, one module per kind of object (see docs/format.md). Each module encodes and
//! decodes bytes only; none performs I/O, which keeps them fuzzable.

pub mod index;
pub mod pack;
pub mod sealed;
pub mod snapshot;
pub mod tree;

/// Reads little-endian integers from a byte slice without panicking on short input.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }
    pub(crate) fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let s = self.buf.get(self.pos..end)?;
        self.pos = end;
        Some(s)
    }
    pub(crate) fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|s| s[0])
    }
    pub(crate) fn u32(&mut self) -> Option<u32> {
        self.take(4).map(|s| u32::from_le_bytes(s.try_into().expect("4 bytes")))
    }
    pub(crate) fn u64(&mut self) -> Option<u64> {
        self.take(8).map(|s| u64::from_le_bytes(s.try_into().expect("8 bytes")))
    }
    pub(crate) fn id(&mut self) -> Option<crate::Id> {
        self.take(32).map(|s| crate::Id(s.try_into().expect("32 bytes")))
    }
    pub(crate) fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }
}
