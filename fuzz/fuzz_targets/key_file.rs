//! Key files (`keys/<id>`): serde_json into `crypto::KeyFile`, then `unwrap_keys`.
//!
//! Argon2 costs are the key file's own; `unwrap_keys` rejects absurd ones but still accepts
//! e.g. 4 GiB, which would make each execution take seconds. Inputs above 1 MiB / 2 passes are
//! skipped so the fuzzer stays fast (the cost check itself is simple enough to read).
#![no_main]

use libfuzzer_sys::fuzz_target;
use lifeboat_repo::crypto::KeyFile;

fuzz_target!(|data: &[u8]| {
    let Ok(kf) = serde_json::from_slice::<KeyFile>(data) else {
        return;
    };
    if kf.params.m_cost_kib > 1024 || kf.params.t_cost > 2 {
        return;
    }
    let _ = kf.unwrap_keys(b"fuzz passphrase", "fuzz");
});
