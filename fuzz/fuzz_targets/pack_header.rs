//! `format::pack::decode_trailer` and `decode_header` on hostile bytes and sizes.
//!
//! Input: `mode u8 | pack_size u64 | pack id [32] | rest`.
//! - mode 0: `rest` is the sealed header as read from storage (AEAD must reject it);
//! - mode 1: `rest` is a header *plaintext*, sealed with the fixed key and the right AAD, so the
//!   header parser behind the AEAD (version, count, entry bounds against `pack_size`) is fuzzed;
//! - mode 2: `rest` is a whole pack file: read the trailer, slice the header the way
//!   `maintenance::read_pack_record` does, decode it with `pack_size = rest.len()`.
//!
//! `decode_trailer` is always also run on the first 8 bytes and on the whole input.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use lifeboat_repo::Id;
use lifeboat_repo::crypto::{Keys, SEAL_OVERHEAD};
use lifeboat_repo::format::pack::{PACK_MAGIC, TRAILER_LEN, decode_header, decode_trailer};

static KEYS: LazyLock<Keys> = LazyLock::new(|| Keys::from_master(zeroize::Zeroizing::new([7u8; 32])));

fuzz_target!(|data: &[u8]| {
    let _ = decode_trailer(data, "fuzz");
    let _ = decode_trailer(&data[..data.len().min(TRAILER_LEN)], "fuzz");
    if data.len() < 1 + 8 + 32 {
        return;
    }
    let mode = data[0] % 3;
    let pack_size = u64::from_le_bytes(data[1..9].try_into().unwrap());
    let pack = Id(data[9..41].try_into().unwrap());
    let rest = &data[41..];
    match mode {
        0 => {
            let _ = decode_header(&KEYS, &pack, rest, pack_size, "fuzz");
        }
        1 => {
            let mut aad = [0u8; 36];
            aad[..4].copy_from_slice(PACK_MAGIC);
            aad[4..].copy_from_slice(&pack.0);
            let mut sealed = Vec::new();
            KEYS.seal_into(&aad, rest, &mut sealed);
            if let Ok(entries) = decode_header(&KEYS, &pack, &sealed, pack_size, "fuzz") {
                // Whatever decode_header accepts must lie inside the blob area.
                let area = pack_size.saturating_sub((sealed.len() + TRAILER_LEN) as u64);
                for e in &entries {
                    assert!(u64::from(e.offset) + u64::from(e.length) <= area);
                    assert!(e.length as usize > SEAL_OVERHEAD);
                }
            }
        }
        _ => {
            let size = rest.len() as u64;
            if size < TRAILER_LEN as u64 {
                return;
            }
            let Ok(hlen) = decode_trailer(&rest[rest.len() - TRAILER_LEN..], "fuzz") else {
                return;
            };
            let hlen = u64::from(hlen);
            if hlen + TRAILER_LEN as u64 > size {
                return;
            }
            let start = (size - TRAILER_LEN as u64 - hlen) as usize;
            let header = &rest[start..rest.len() - TRAILER_LEN];
            let _ = decode_header(&KEYS, &pack, header, size, "fuzz");
        }
    }
});
