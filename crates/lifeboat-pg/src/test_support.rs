//! Fixtures shared by the unit tests of the WAL modules.

use std::path::Path;

use lifeboat_repo::crypto::KdfParams;
use lifeboat_repo::{InitOptions, Repository};

/// A fresh in-memory repository with cheap key derivation.
pub fn repo() -> Repository {
    let store = lifeboat_repo::backend::open("memory:").unwrap();
    let opts = InitOptions {
        kdf: KdfParams::TESTING,
        ..Default::default()
    };
    Repository::init(store, b"pw", &opts).unwrap()
}

/// A 16 MiB WAL segment: `data` bytes of a pattern that depends on `seed`, then zeros (as a
/// segment switched before it was full).
pub fn segment(seed: u8, data: usize) -> Vec<u8> {
    let mut v: Vec<u8> = (0..data)
        .map(|i: usize| (i.wrapping_mul(131) >> 3) as u8 ^ seed)
        .collect();
    v.resize(16 << 20, 0);
    v
}

/// Writes a segment into `wal` and marks it `.ready`, as PostgreSQL's archiver would find it.
pub fn ready(wal: &Path, name: &str, data: &[u8]) {
    std::fs::write(wal.join(name), data).unwrap();
    std::fs::write(wal.join("archive_status").join(format!("{name}.ready")), b"").unwrap();
}
