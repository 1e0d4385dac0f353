//! `format::snapshot::Snapshot::decode` on hostile JSON. An accepted snapshot must be accepted
//! again after encode, with the same content.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lifeboat_repo::format::snapshot::Snapshot;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = Snapshot::decode(data, "fuzz") else {
        return;
    };
    let mut again = Snapshot::decode(&s.encode(), "fuzz").expect("re-decode of an accepted snapshot failed");
    // serde_json's default float parser is not exactly round-trip (may be 1 ulp off).
    let (a, b) = (again.summary.duration_secs, s.summary.duration_secs);
    assert!(a == b || (a - b).abs() <= b.abs() * 1e-15, "{a} vs {b}");
    again.summary.duration_secs = s.summary.duration_secs;
    assert_eq!(again, s);
});
