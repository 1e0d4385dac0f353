//! Pack files: sealed blobs followed by a sealed header that lists them, its length and `"LBP1"`.

use super::Reader;
use crate::crypto::{Keys, SEAL_OVERHEAD};
use crate::error::{RepoError, Result};
use crate::id::Id;

/// Trailer magic; also the pack format version.
pub const PACK_MAGIC: &[u8; 4] = b"LBP1";
/// Bytes after the sealed header: its length (u32) and the magic.
pub const TRAILER_LEN: usize = 8;
/// Encoded size of one header entry.
pub const ENTRY_LEN: usize = 1 + 32 + 4 + 4 + 4;

/// Whether a blob holds file content or a directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[repr(u8)]
pub enum BlobType {
    /// File content (a chunk).
    Data = 0,
    /// A serialized directory.
    Tree = 1,
}

impl BlobType {
    /// Decodes the stored byte.
    pub fn from_u8(b: u8) -> Option<BlobType> {
        match b {
            0 => Some(BlobType::Data),
            1 => Some(BlobType::Tree),
            _ => None,
        }
    }
}

/// Where one blob sits in its pack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PackEntry {
    /// Data or tree.
    pub blob_type: BlobType,
    /// Keyed hash of the plaintext.
    pub id: Id,
    /// Offset from the start of the pack.
    pub offset: u32,
    /// Sealed length.
    pub length: u32,
    /// Plaintext length (before compression).
    pub raw_len: u32,
}

/// Associated data that binds a sealed blob to its type and id.
pub fn blob_aad(t: BlobType, id: &Id) -> [u8; 33] {
    let mut a = [0u8; 33];
    a[0] = t as u8;
    a[1..].copy_from_slice(&id.0);
    a
}

pub(crate) fn encode_entry(e: &PackEntry, out: &mut Vec<u8>) {
    out.push(e.blob_type as u8);
    out.extend_from_slice(&e.id.0);
    out.extend_from_slice(&e.offset.to_le_bytes());
    out.extend_from_slice(&e.length.to_le_bytes());
    out.extend_from_slice(&e.raw_len.to_le_bytes());
}

pub(crate) fn decode_entry(r: &mut Reader<'_>) -> Option<PackEntry> {
    Some(PackEntry {
        blob_type: BlobType::from_u8(r.u8()?)?,
        id: r.id()?,
        offset: r.u32()?,
        length: r.u32()?,
        raw_len: r.u32()?,
    })
}

fn header_aad(pack: &Id) -> [u8; 36] {
    let mut a = [0u8; 36];
    a[..4].copy_from_slice(PACK_MAGIC);
    a[4..].copy_from_slice(&pack.0);
    a
}

/// Encodes and seals the header plus trailer that end a pack.
pub fn encode_header(keys: &Keys, pack: &Id, entries: &[PackEntry]) -> Vec<u8> {
    let mut plain = Vec::with_capacity(5 + entries.len() * ENTRY_LEN);
    plain.push(1);
    plain.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    for e in entries {
        encode_entry(e, &mut plain);
    }
    let mut out = Vec::with_capacity(plain.len() + SEAL_OVERHEAD + TRAILER_LEN);
    keys.seal_into(&header_aad(pack), &plain, &mut out);
    let len = out.len() as u32;
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(PACK_MAGIC);
    out
}

/// Reads the header length from a pack's last 8 bytes.
pub fn decode_trailer(trailer: &[u8], name: &str) -> Result<u32> {
    if trailer.len() != TRAILER_LEN || &trailer[4..] != PACK_MAGIC {
        return Err(RepoError::damaged(
            name,
            "pack trailer missing (truncated or not a pack)",
        ));
    }
    Ok(u32::from_le_bytes(trailer[..4].try_into().expect("4 bytes")))
}

/// Decrypts and parses a pack header; checks every entry lies inside the pack's blob area.
pub fn decode_header(keys: &Keys, pack: &Id, sealed: &[u8], pack_size: u64, name: &str) -> Result<Vec<PackEntry>> {
    let plain = keys.open(&header_aad(pack), sealed, name)?;
    let mut r = Reader::new(&plain);
    let bad = || RepoError::damaged(name, "malformed pack header");
    if r.u8().ok_or_else(bad)? != 1 {
        return Err(RepoError::damaged(name, "unknown pack header version"));
    }
    let count = r.u32().ok_or_else(bad)? as usize;
    if count.checked_mul(ENTRY_LEN) != Some(r.remaining()) {
        return Err(bad());
    }
    let blob_area = pack_size.saturating_sub(sealed.len() as u64 + TRAILER_LEN as u64);
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let e = decode_entry(&mut r).ok_or_else(bad)?;
        if u64::from(e.offset) + u64::from(e.length) > blob_area || (e.length as usize) < SEAL_OVERHEAD + 1 {
            return Err(RepoError::damaged(name, "pack header lists a blob outside the pack"));
        }
        out.push(e);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip() {
        let k = Keys::generate();
        let p = Id::random();
        let e = PackEntry {
            blob_type: BlobType::Data,
            id: Id::random(),
            offset: 0,
            length: 100,
            raw_len: 80,
        };
        let h = encode_header(&k, &p, &[e]);
        let n = decode_trailer(&h[h.len() - 8..], "p").unwrap() as usize;
        let sealed = &h[h.len() - 8 - n..h.len() - 8];
        let size = 100 + h.len() as u64;
        assert_eq!(decode_header(&k, &p, sealed, size, "p").unwrap(), vec![e]);
        assert!(decode_header(&k, &Id::random(), sealed, size, "p").is_err());
        assert!(decode_header(&k, &p, sealed, 50, "p").is_err());
    }
}
