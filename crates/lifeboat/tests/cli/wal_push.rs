//! `wal push --background` driven the way PostgreSQL's archiver drives it (one call per segment,
//! in name order, `.ready` renamed to `.done` after each success) with a backlog: the pusher
//! stores ahead, every call returns only once its own segment is proven stored, and a conflict
//! is still reported by the call for that segment (exit 15) with nothing overwritten.

use std::path::{Path, PathBuf};

use crate::common::*;

const SYSID: u64 = 7_100_000_000_000_000_042;

/// A data folder with `global/pg_control` (the system identifier) and `pg_wal/archive_status`.
fn data_dir(env: &Env, name: &str) -> PathBuf {
    let d = env.path(name);
    std::fs::create_dir_all(d.join("global")).unwrap();
    std::fs::create_dir_all(d.join("pg_wal/archive_status")).unwrap();
    std::fs::write(d.join("global/pg_control"), SYSID.to_ne_bytes()).unwrap();
    d
}

fn segment(data: &Path, name: &str, content: &[u8]) {
    std::fs::write(data.join("pg_wal").join(name), content).unwrap();
    std::fs::write(data.join(format!("pg_wal/archive_status/{name}.ready")), b"").unwrap();
}

fn push(env: &Env, data: &Path, name: &str, extra: &[&str]) -> Run {
    let seg = format!("pg_wal/{name}");
    let mut args = vec!["--json", "wal", "push", &seg, "--data-dir", data.to_str().unwrap()];
    args.extend_from_slice(extra);
    env.run(&args)
}

#[test]
fn a_backlog_is_pushed_ahead_and_each_call_waits_for_its_segment() {
    let env = Env::with_repo(&[]);
    let names: Vec<String> = (1..=7).map(|i| format!("0000000100000000000000{i:02X}")).collect();
    // Segment 5 of another cluster with the same identifier is already stored under that name.
    let other = data_dir(&env, "other");
    segment(&other, &names[4], &random_bytes(3 << 20, 99));
    // (Another host: its own cache, so no marker of it here.)
    let seg = format!("pg_wal/{}", names[4]);
    let other_cache = env.path("other-cache");
    env.run_env(
        &["wal", "push", &seg, "--data-dir", other.to_str().unwrap()],
        &[("LIFEBOAT_CACHE_DIR", other_cache.as_os_str())],
    )
    .ok();

    let data = data_dir(&env, "data");
    let contents: Vec<Vec<u8>> = (0..names.len())
        .map(|i| random_bytes((2 << 20) + i * 4096, i as u64))
        .collect();
    for (n, c) in names.iter().zip(&contents) {
        segment(&data, n, c);
    }
    // Answered by a marker the pusher wrote (waiting for it, or finding it already there).
    let mut by_marker = 0;
    for (i, n) in names.iter().enumerate() {
        let r = push(&env, &data, n, &["--background"]);
        if i == 4 {
            r.expect_code(15).one_line_error(&["different content"]);
            continue; // PostgreSQL would retry it forever; the test moves on
        }
        r.ok();
        let j = r.json();
        assert_eq!(j["name"], n.as_str());
        if i == 0 {
            assert_eq!(j["background"], true, "the first call starts the pusher: {j}");
        }
        if j["fast_path"] == true {
            by_marker += 1;
        }
        std::fs::rename(
            data.join(format!("pg_wal/archive_status/{n}.ready")),
            data.join(format!("pg_wal/archive_status/{n}.done")),
        )
        .unwrap();
    }
    assert_eq!(by_marker, 6, "every acknowledged call was answered by a marker");
    let spool = std::fs::read_dir(env.cache.join("wal"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().ends_with(&SYSID.to_string()))
        .expect("spool");
    let log = std::fs::read_to_string(spool.join("pusher.log")).unwrap();
    assert!(
        log.contains("refused (different content stored): 000000010000000000000005"),
        "{log}"
    );

    // Every acknowledged segment comes back byte for byte; the refused one is the other's.
    for (i, n) in names.iter().enumerate() {
        let out = data.join("pg_wal/RESTORED");
        env.run(&[
            "wal",
            "fetch",
            n,
            "pg_wal/RESTORED",
            "--data-dir",
            data.to_str().unwrap(),
        ])
        .ok();
        let back = std::fs::read(&out).unwrap();
        if i == 4 {
            assert_eq!(back, random_bytes(3 << 20, 99));
        } else {
            assert!(back == contents[i], "segment {n} differs");
        }
        std::fs::remove_file(&out).unwrap();
    }
}

#[test]
fn without_background_or_a_backlog_no_pusher_starts() {
    let env = Env::with_repo(&[]);
    let data = data_dir(&env, "data");
    let a = "000000010000000000000001";
    let b = "000000010000000000000002";
    let c = "000000010000000000000003";
    // One ready segment: nothing to push ahead.
    segment(&data, a, &random_bytes(1 << 20, 1));
    let r = push(&env, &data, a, &["--background"]);
    r.ok();
    assert_eq!(r.json()["background"], false);
    // A backlog without --background: stored as one batch by the call itself.
    segment(&data, b, &random_bytes(1 << 20, 2));
    segment(&data, c, &random_bytes(1 << 20, 3));
    let r = push(&env, &data, b, &[]);
    r.ok();
    let j = r.json();
    assert_eq!(j["background"], false);
    assert_eq!(j["stored"].as_array().map(Vec::len), Some(2), "{j}");
    let spool_has_log = std::fs::read_dir(env.cache.join("wal"))
        .unwrap()
        .flatten()
        .any(|e| e.path().join("pusher.log").exists());
    assert!(!spool_has_log);
}
