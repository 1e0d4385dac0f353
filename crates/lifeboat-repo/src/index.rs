//! The in-memory index: blob id → pack location, about 60 bytes per blob.
//!
//! Ids are uniformly random (keyed hashes), so the hash map uses the id's first 8 bytes directly
//! instead of SipHash. Pack ids are stored once and referenced by number.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use crate::format::index::PackRecord;
use crate::format::pack::{BlobType, PackEntry};
use crate::id::Id;

/// Hasher for [`Id`] keys: the id is already a cryptographic hash.
#[derive(Default)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // `Id` hashes as a `[u8; 32]`: a length prefix then the bytes; keep the first 8 bytes.
        if bytes.len() >= 8 {
            self.0 = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"));
        }
    }
    fn write_usize(&mut self, _: usize) {}
}

/// Map keyed by [`Id`].
pub type IdMap<V> = HashMap<Id, V, BuildHasherDefault<IdHasher>>;
/// Set of [`Id`]s.
pub type IdSet = std::collections::HashSet<Id, BuildHasherDefault<IdHasher>>;

/// Where a blob is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Location {
    /// Number of the pack in [`Index::packs`].
    pub pack: u32,
    /// Data or tree.
    pub blob_type: BlobType,
    /// Offset in the pack.
    pub offset: u32,
    /// Sealed length.
    pub length: u32,
    /// Plaintext length.
    pub raw_len: u32,
}

/// A pack known to the index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PackInfo {
    /// Pack name.
    pub id: Id,
    /// Size in bytes.
    pub size: u64,
    /// BLAKE3 of the whole pack.
    pub hash: Id,
    /// Blobs in it.
    pub blobs: u32,
}

/// The union of all index segments.
#[derive(Default, Debug, Clone)]
pub struct Index {
    blobs: IdMap<Location>,
    packs: Vec<PackInfo>,
    pack_numbers: IdMap<u32>,
    /// Segment names this index was loaded from.
    pub segments: Vec<String>,
}

impl Index {
    /// Adds every blob of a pack record. A blob already known keeps its first location.
    pub fn add_pack(&mut self, p: &PackRecord) {
        if self.pack_numbers.contains_key(&p.id) {
            return;
        }
        let n = self.packs.len() as u32;
        self.packs.push(PackInfo {
            id: p.id,
            size: p.size,
            hash: p.hash,
            blobs: p.entries.len() as u32,
        });
        self.pack_numbers.insert(p.id, n);
        self.blobs.reserve(p.entries.len());
        for e in &p.entries {
            self.blobs.entry(e.id).or_insert(Location {
                pack: n,
                blob_type: e.blob_type,
                offset: e.offset,
                length: e.length,
                raw_len: e.raw_len,
            });
        }
    }

    /// Looks a blob up.
    pub fn get(&self, id: &Id) -> Option<Location> {
        self.blobs.get(id).copied()
    }

    /// True if the blob is stored.
    pub fn contains(&self, id: &Id) -> bool {
        self.blobs.contains_key(id)
    }

    /// The pack a location points into.
    pub fn pack(&self, n: u32) -> &PackInfo {
        &self.packs[n as usize]
    }

    /// All known packs.
    pub fn packs(&self) -> &[PackInfo] {
        &self.packs
    }

    /// True if the pack is listed.
    pub fn has_pack(&self, id: &Id) -> bool {
        self.pack_numbers.contains_key(id)
    }

    /// Number of blobs.
    pub fn len(&self) -> usize {
        self.blobs.len()
    }

    /// True when no blob is known.
    pub fn is_empty(&self) -> bool {
        self.blobs.is_empty()
    }

    /// Every blob with its location.
    pub fn iter(&self) -> impl Iterator<Item = (&Id, &Location)> {
        self.blobs.iter()
    }

    /// Rebuilds full pack records (for prune and repair), grouping blobs by pack.
    pub fn pack_records(&self) -> Vec<PackRecord> {
        let mut recs: Vec<PackRecord> = self
            .packs
            .iter()
            .map(|p| PackRecord {
                id: p.id,
                size: p.size,
                hash: p.hash,
                entries: Vec::new(),
            })
            .collect();
        for (id, l) in &self.blobs {
            recs[l.pack as usize].entries.push(PackEntry {
                blob_type: l.blob_type,
                id: *id,
                offset: l.offset,
                length: l.length,
                raw_len: l.raw_len,
            });
        }
        for r in &mut recs {
            r.entries.sort_by_key(|e| e.offset);
        }
        recs
    }
}
