//! `repository::Marks::decode` on hostile JSON (with a hex-encoded index body inside).
//! An accepted marks object must survive encode → decode unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lifeboat_repo::repository::Marks;

fuzz_target!(|data: &[u8]| {
    let Ok(m) = Marks::decode(data, "fuzz") else {
        return;
    };
    let again = Marks::decode(&m.encode(), "fuzz").expect("re-decode of accepted marks failed");
    assert_eq!(again.time, m.time);
    assert_eq!(again.packs, m.packs);
});
