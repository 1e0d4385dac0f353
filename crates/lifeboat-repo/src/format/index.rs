//! Index segments: which blobs live in which pack, at which offset (binary, sealed, kind 2).

use super::Reader;
use super::pack::{ENTRY_LEN, PackEntry, decode_entry, encode_entry};
use crate::error::{RepoError, Result};
use crate::id::Id;

/// One pack as an index segment describes it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PackRecord {
    /// Pack name.
    pub id: Id,
    /// Pack size in bytes.
    pub size: u64,
    /// BLAKE3 of the whole pack file, so copies can be verified without the key.
    pub hash: Id,
    /// Its blobs.
    #[serde(skip)]
    pub entries: Vec<PackEntry>,
}

/// Encodes a segment body (before sealing).
pub fn encode(packs: &[PackRecord]) -> Vec<u8> {
    let n: usize = packs.iter().map(|p| 76 + p.entries.len() * ENTRY_LEN).sum();
    let mut out = Vec::with_capacity(5 + n);
    out.push(1);
    out.extend_from_slice(&(packs.len() as u32).to_le_bytes());
    for p in packs {
        out.extend_from_slice(&p.id.0);
        out.extend_from_slice(&p.size.to_le_bytes());
        out.extend_from_slice(&p.hash.0);
        out.extend_from_slice(&(p.entries.len() as u32).to_le_bytes());
        for e in &p.entries {
            encode_entry(e, &mut out);
        }
    }
    out
}

/// Decodes a segment body; refuses trailing bytes and impossible counts.
pub fn decode(body: &[u8], name: &str) -> Result<Vec<PackRecord>> {
    let bad = || RepoError::damaged(name, "malformed index segment");
    let mut r = Reader::new(body);
    if r.u8().ok_or_else(bad)? != 1 {
        return Err(RepoError::damaged(name, "unknown index segment version"));
    }
    let count = r.u32().ok_or_else(bad)? as usize;
    if count > r.remaining() / 76 {
        return Err(bad());
    }
    let mut packs = Vec::with_capacity(count);
    for _ in 0..count {
        let id = r.id().ok_or_else(bad)?;
        let size = r.u64().ok_or_else(bad)?;
        let hash = r.id().ok_or_else(bad)?;
        let n = r.u32().ok_or_else(bad)? as usize;
        if n > r.remaining() / ENTRY_LEN {
            return Err(bad());
        }
        let mut entries = Vec::with_capacity(n);
        for _ in 0..n {
            entries.push(decode_entry(&mut r).ok_or_else(bad)?);
        }
        packs.push(PackRecord {
            id,
            size,
            hash,
            entries,
        });
    }
    if r.remaining() != 0 {
        return Err(bad());
    }
    Ok(packs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::pack::BlobType;

    #[test]
    fn round_trip() {
        let p = PackRecord {
            id: Id::random(),
            size: 1234,
            hash: Id::random(),
            entries: vec![PackEntry {
                blob_type: BlobType::Tree,
                id: Id::random(),
                offset: 3,
                length: 50,
                raw_len: 9,
            }],
        };
        let b = encode(std::slice::from_ref(&p));
        assert_eq!(decode(&b, "i").unwrap(), vec![p]);
        assert!(decode(&b[..b.len() - 1], "i").is_err());
        let mut extra = b.clone();
        extra.push(0);
        assert!(decode(&extra, "i").is_err());
    }
}
