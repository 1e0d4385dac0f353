//! `crypto::decompress_framed` on hostile framed plaintexts (`marker u8 | bytes`), both with a
//! known expected length (blobs: `Some(raw_len)`, bounded here to 1 MiB) and without (`None`,
//! sealed files). Also: `compress_framed` output must decompress back to the input.
//!
//! Input: `mode u8 | expected_len u32 | framed...`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lifeboat_repo::crypto::{compress_framed, decompress_framed};

fuzz_target!(|data: &[u8]| {
    if data.len() < 5 {
        return;
    }
    let mode = data[0];
    let expected = u32::from_le_bytes(data[1..5].try_into().unwrap()) as usize % (1 << 20);
    let framed = &data[5..];
    match mode % 3 {
        0 => {
            if let Ok(out) = decompress_framed(framed, Some(expected), "fuzz")
                && framed.first() == Some(&1)
            {
                assert_eq!(out.len(), expected, "zstd output length not checked");
            }
        }
        1 => {
            let _ = decompress_framed(framed, None, "fuzz");
        }
        _ => {
            let level = i32::from(mode >> 4) - 3; // -3..=12
            let mut out = Vec::new();
            compress_framed(framed, level, &mut out);
            let back = decompress_framed(&out, Some(framed.len()), "fuzz").expect("round trip");
            assert_eq!(back, framed);
        }
    }
});
