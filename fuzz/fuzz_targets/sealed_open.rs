//! `format::sealed::open` on hostile bytes.
//!
//! First input byte selects the expected kind (low 3 bits) and the mode (high bit):
//! - raw: the rest is a whole sealed object (magic, version, kind checks, AEAD open);
//! - sealed: the rest is a *plaintext* (`compression u8 | body`) that we seal with the fixed key
//!   first, so the decompression path behind the AEAD is exercised too.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use lifeboat_repo::crypto::Keys;
use lifeboat_repo::format::sealed::{self, Kind};

static KEYS: LazyLock<Keys> = LazyLock::new(|| Keys::from_master(zeroize::Zeroizing::new([7u8; 32])));

const KINDS: [Kind; 6] = [
    Kind::Config,
    Kind::Index,
    Kind::Snapshot,
    Kind::Marks,
    Kind::Lease,
    Kind::Verification,
];

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let kind = KINDS[usize::from(sel & 7) % KINDS.len()];
    if sel & 0x80 == 0 {
        let _ = sealed::open(&KEYS, kind, rest, "fuzz");
    } else {
        let header = [b'L', b'B', b'S', 1, kind as u8];
        let mut obj = header.to_vec();
        KEYS.seal_into(&header, rest, &mut obj);
        let _ = sealed::open(&KEYS, kind, &obj, "fuzz");
        // A real seal() of the same bytes must always open to them again.
        let s = sealed::seal(&KEYS, kind, rest);
        assert_eq!(sealed::open(&KEYS, kind, &s, "fuzz").expect("seal/open round trip"), rest);
    }
});
