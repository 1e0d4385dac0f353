//! Round trip of index segment bodies: arbitrary `PackRecord`s → `encode` → `decode` must give
//! them back; any strict prefix, and the body with a byte appended, must be refused.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use lifeboat_repo::Id;
use lifeboat_repo::format::index::{self, PackRecord};
use lifeboat_repo::format::pack::{BlobType, PackEntry};

#[derive(Arbitrary, Debug)]
struct ArbEntry {
    tree: bool,
    id: [u8; 32],
    offset: u32,
    length: u32,
    raw_len: u32,
}

#[derive(Arbitrary, Debug)]
struct ArbPack {
    id: [u8; 32],
    size: u64,
    hash: [u8; 32],
    entries: Vec<ArbEntry>,
}

#[derive(Arbitrary, Debug)]
struct Input {
    packs: Vec<ArbPack>,
    cut: usize,
}

fuzz_target!(|input: Input| {
    let packs: Vec<PackRecord> = input
        .packs
        .into_iter()
        .map(|p| PackRecord {
            id: Id(p.id),
            size: p.size,
            hash: Id(p.hash),
            entries: p
                .entries
                .into_iter()
                .map(|e| PackEntry {
                    blob_type: if e.tree { BlobType::Tree } else { BlobType::Data },
                    id: Id(e.id),
                    offset: e.offset,
                    length: e.length,
                    raw_len: e.raw_len,
                })
                .collect(),
        })
        .collect();
    let body = index::encode(&packs);
    let back = index::decode(&body, "fuzz").expect("decode of encode failed");
    assert_eq!(back, packs);
    let cut = input.cut % body.len();
    assert!(index::decode(&body[..cut], "fuzz").is_err(), "prefix of {cut} bytes accepted");
    let mut longer = body;
    longer.push(0);
    assert!(index::decode(&longer, "fuzz").is_err(), "trailing byte accepted");
});
