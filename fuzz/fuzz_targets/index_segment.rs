//! `format::index::decode` on a hostile (already decrypted and decompressed) segment body.
//! Whatever it accepts must re-encode to exactly the same bytes (the format is canonical).
#![no_main]

use libfuzzer_sys::fuzz_target;
use lifeboat_repo::format::index;

fuzz_target!(|data: &[u8]| {
    if let Ok(packs) = index::decode(data, "fuzz") {
        assert_eq!(index::encode(&packs), data, "accepted segment does not re-encode identically");
    }
});
