//! Sealed files: `"LBS" 0x01 | kind | nonce | ciphertext | tag`, plaintext `compression | body`.

use crate::crypto::{Keys, compress_framed, decompress_framed};
use crate::error::{RepoError, Result};

const MAGIC: &[u8; 4] = b"LBS\x01";

/// What a sealed file holds; part of the authenticated header so one kind can't pass as another.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// The repository config.
    Config = 1,
    /// An index segment.
    Index = 2,
    /// A snapshot manifest.
    Snapshot = 3,
    /// Packs marked for deletion.
    Marks = 4,
    /// The prune lease.
    Lease = 5,
    /// A verification record (check or restore test results).
    Verification = 6,
    /// A named manifest (a stream stored by name outside snapshots, e.g. a WAL segment).
    Named = 7,
    /// A location's own status record (`status/location`: last replication, last check).
    LocationStatus = 10,
    /// A deletion record (`deletions/<id>`): objects a prune or forget removed, replayed on
    /// locations that were unreachable at the time.
    Deletions = 11,
}

/// Compresses (zstd level 3) and encrypts `body` as a sealed file of `kind`.
pub fn seal(keys: &Keys, kind: Kind, body: &[u8]) -> Vec<u8> {
    let mut header = [0u8; 5];
    header[..4].copy_from_slice(MAGIC);
    header[4] = kind as u8;
    let mut plain = Vec::with_capacity(body.len() / 2 + 16);
    compress_framed(body, 3, &mut plain);
    let mut out = Vec::with_capacity(plain.len() + 64);
    out.extend_from_slice(&header);
    keys.seal_into(&header, &plain, &mut out);
    out
}

/// Checks, decrypts and decompresses a sealed file; `name` is used in errors.
pub fn open(keys: &Keys, kind: Kind, data: &[u8], name: &str) -> Result<Vec<u8>> {
    if data.len() < 5 || &data[..3] != b"LBS" {
        return Err(RepoError::damaged(name, "not a lifeboat sealed file (bad magic)"));
    }
    if data[3] != 1 {
        return Err(RepoError::UnsupportedVersion {
            name: name.into(),
            found: u32::from(data[3]),
            supported: 1,
        });
    }
    if data[4] != kind as u8 {
        return Err(RepoError::damaged(
            name,
            format!("holds object kind {} where kind {} was expected", data[4], kind as u8),
        ));
    }
    let plain = keys.open(&data[..5], &data[5..], name)?;
    decompress_framed(&plain, None, name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_kind_check() {
        let k = Keys::generate();
        let s = seal(&k, Kind::Snapshot, b"{\"a\":1}");
        assert_eq!(open(&k, Kind::Snapshot, &s, "x").unwrap(), b"{\"a\":1}");
        assert!(open(&k, Kind::Index, &s, "x").is_err());
        assert!(open(&k, Kind::Snapshot, &s[..10], "x").is_err());
    }
}
