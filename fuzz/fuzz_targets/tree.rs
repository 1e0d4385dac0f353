//! `format::tree::Tree::decode` on hostile JSON. An accepted tree must survive
//! encode → decode unchanged, and none of its names may be unsafe to restore.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lifeboat_repo::format::tree::Tree;
use std::os::unix::ffi::OsStrExt;

fuzz_target!(|data: &[u8]| {
    let Ok(t) = Tree::decode(data, "fuzz") else {
        return;
    };
    for n in &t.nodes {
        let name = n.os_name();
        let b = name.as_bytes();
        assert!(!b.is_empty() && b != b"." && b != b".." && !b.contains(&b'/') && !b.contains(&0));
        let _ = n.os_target();
    }
    let again = Tree::decode(&t.encode(), "fuzz").expect("re-decode of an accepted tree failed");
    assert_eq!(again, t);
});
