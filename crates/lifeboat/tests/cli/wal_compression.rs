//! WAL compression (`wal push --compression`, `repository.wal_compression`): a backlog batch is
//! stored with LZ4 under `auto`, a call that keeps up with zstd, and `wal fetch` and
//! `check --read-data` read both back.

use std::path::{Path, PathBuf};

use crate::common::*;

const SYSID: u64 = 7_100_000_000_000_000_077;

fn data_dir(env: &Env, name: &str) -> PathBuf {
    let d = env.path(name);
    std::fs::create_dir_all(d.join("global")).unwrap();
    std::fs::create_dir_all(d.join("pg_wal/archive_status")).unwrap();
    std::fs::write(d.join("global/pg_control"), SYSID.to_ne_bytes()).unwrap();
    d
}

/// Compressible like WAL: records with a counter and some random bytes, then a zero tail.
fn wal_like(seed: u64) -> Vec<u8> {
    let noise = random_bytes(64 << 10, seed);
    let mut v = Vec::with_capacity(2 << 20);
    let mut i = 0u64;
    while v.len() < (3 << 20) / 2 {
        v.extend_from_slice(b"INSERT INTO pgbench_history VALUES ");
        v.extend_from_slice(&(i * 7 + seed).to_le_bytes());
        let at = (i as usize * 13) % (noise.len() - 16);
        v.extend_from_slice(&noise[at..at + 16]);
        i += 1;
    }
    v.resize(2 << 20, 0);
    v
}

fn ready(data: &Path, name: &str, content: &[u8]) {
    std::fs::write(data.join("pg_wal").join(name), content).unwrap();
    std::fs::write(data.join(format!("pg_wal/archive_status/{name}.ready")), b"").unwrap();
}

fn done(data: &Path, name: &str) {
    std::fs::rename(
        data.join(format!("pg_wal/archive_status/{name}.ready")),
        data.join(format!("pg_wal/archive_status/{name}.done")),
    )
    .unwrap();
}

fn push(env: &Env, data: &Path, name: &str, extra: &[&str]) -> serde_json::Value {
    let seg = format!("pg_wal/{name}");
    let mut args = vec!["--json", "wal", "push", &seg, "--data-dir", data.to_str().unwrap()];
    args.extend_from_slice(extra);
    env.run(&args).ok().json()
}

fn fetch(env: &Env, data: &Path, name: &str) -> Vec<u8> {
    env.run(&[
        "wal",
        "fetch",
        name,
        "pg_wal/RESTORED",
        "--data-dir",
        data.to_str().unwrap(),
        "--prefetch",
        "0",
    ])
    .ok();
    let out = data.join("pg_wal/RESTORED");
    let back = std::fs::read(&out).unwrap();
    std::fs::remove_file(&out).unwrap();
    back
}

fn name(i: usize) -> String {
    format!("0000000100000000000000{i:02X}")
}

#[test]
fn auto_stores_a_backlog_with_lz4_and_a_calm_push_with_zstd() {
    let env = Env::with_repo(&[]);
    let data = data_dir(&env, "data");
    // A backlog of 9 ready segments (auto's threshold is 8): one call stores them all with LZ4.
    let contents: Vec<Vec<u8>> = (1..=10).map(|i| wal_like(i as u64)).collect();
    for i in 1..=9 {
        ready(&data, &name(i), &contents[i - 1]);
    }
    let j = push(&env, &data, &name(1), &["--compression", "auto"]);
    assert_eq!(j["stored"].as_array().unwrap().len(), 9, "{j}");
    assert_eq!(j["codec"], "lz4", "{j}");
    for i in 1..=9 {
        let j = push(&env, &data, &name(i), &[]);
        assert_eq!(j["fast_path"], true, "answered by the batch's marker: {j}");
        done(&data, &name(i));
    }
    let lz4_size: u64 = packs(&env.repo).iter().map(|(_, n)| n).sum();
    // The archiver keeps up: one segment per call, zstd (the better ratio).
    ready(&data, &name(10), &contents[9]);
    let j = push(&env, &data, &name(10), &["--compression", "auto"]);
    assert_eq!(j["codec"], "zstd", "{j}");
    done(&data, &name(10));
    let all: u64 = packs(&env.repo).iter().map(|(_, n)| n).sum();
    let zstd_one = all - lz4_size;
    assert!(
        zstd_one * 9 < lz4_size,
        "zstd stores a segment in less than LZ4's share: {zstd_one} x 9 vs {lz4_size}"
    );

    for (i, c) in contents.iter().enumerate() {
        assert!(fetch(&env, &data, &name(i + 1)) == *c, "segment {} differs", i + 1);
    }
    env.check_read_data_ok();
}

#[test]
fn the_flag_and_the_config_choose_the_codec() {
    let env = Env::with_repo(&[]);
    let data = data_dir(&env, "data");
    for i in 1..=9 {
        ready(&data, &name(i), &wal_like(i as u64));
    }
    // A backlog, but zstd forced by the environment (as archive_command would set it).
    let seg = format!("pg_wal/{}", name(1));
    let r = env.run_env(
        &["--json", "wal", "push", &seg, "--data-dir", data.to_str().unwrap()],
        &[("LIFEBOAT_WAL_COMPRESSION", "zstd".as_ref())],
    );
    assert_eq!(r.ok().json()["codec"], "zstd");
    // One segment, LZ4 from the config.
    let config = env.path("lifeboat.toml");
    std::fs::write(&config, "[repository]\nwal_compression = \"lz4\"\n").unwrap();
    ready(&data, &name(10), &wal_like(10));
    let j = push(
        &env,
        &data,
        &name(10),
        &["--batch", "1", "--config", config.to_str().unwrap()],
    );
    assert_eq!(j["codec"], "lz4", "{j}");
    assert!(fetch(&env, &data, &name(10)) == wal_like(10));
    // The flag wins over the config.
    ready(&data, &name(11), &wal_like(11));
    let j = push(
        &env,
        &data,
        &name(11),
        &["--config", config.to_str().unwrap(), "--compression", "zstd"],
    );
    assert_eq!(j["codec"], "zstd", "{j}");
    // A bad value: usage error.
    env.run(&["wal", "push", &seg, "--compression", "lzma"]).expect_code(2);
    let bad = env.path("bad.toml");
    std::fs::write(&bad, "[repository]\nwal_compression = \"fast\"\n").unwrap();
    env.run(&["--config", bad.to_str().unwrap(), "wal", "check"])
        .expect_code(2)
        .one_line_error(&["wal_compression \"fast\""]);
    env.check_read_data_ok();
}
