//! `forget` end to end: the plan's default policy, dry runs, and forget + prune.

use crate::common::*;

#[test]
fn forget_without_flags_uses_the_plans_policy() {
    let e = Env::with_repo(&[]);
    let src = e.path("src");
    write_random(&src.join("a.bin"), 1000, 1);
    for _ in 0..3 {
        e.backup(&[&src]);
    }
    let r = e.run(&["--json", "forget", "--dry-run"]);
    r.ok();
    let j = r.json();
    assert_eq!(j["policy"]["keep_within_hourly"], "7d");
    assert_eq!(j["policy"]["keep_within_daily"], "30d");
    let decisions = j["groups"][0]["decisions"].as_array().unwrap();
    assert_eq!(decisions.len(), 3);
    // All three fall in the same hour: the newest is kept (hourly), the middle one would go,
    // the oldest is kept because the window rule still has room (restic's semantics).
    assert!(decisions[0]["keep"].as_bool().unwrap());
    assert!(!decisions[1]["keep"].as_bool().unwrap());
    assert_eq!(e.snapshot_ids().len(), 3, "a dry run removed something");
}

#[test]
fn forget_and_prune_free_space_and_keep_what_is_kept() {
    let e = Env::with_repo(&[]);
    let src = e.path("src");
    write_random(&src.join("old.bin"), 3 << 20, 2);
    e.backup(&[&src]);
    std::fs::remove_file(src.join("old.bin")).unwrap();
    write_random(&src.join("new.bin"), 1 << 20, 3);
    e.backup(&[&src]);
    let r = e.run(&[
        "--json",
        "forget",
        "--keep-last",
        "1",
        "--prune",
        "--grace",
        "0s",
        "--unsafe-short-grace",
    ]);
    r.ok();
    let j = r.json();
    assert!(j["prune"]["packs_marked"].as_u64().unwrap() >= 1, "{j}");
    // A second prune after the (zero) grace period deletes the marked packs.
    let r = e.run(&["--json", "prune", "--grace", "0s", "--unsafe-short-grace"]);
    r.ok();
    assert!(r.json()["packs_deleted"].as_u64().unwrap() >= 1);
    e.check_read_data_ok();
    let target = e.path("restore");
    e.restore("latest", &target);
    assert_same_tree(&src, &restored(&target, &src));
}

#[test]
fn prune_refuses_a_short_grace_period_unless_told() {
    let e = Env::with_repo(&[]);
    e.run(&["prune", "--grace", "10m"])
        .expect_code(2)
        .one_line_error(&["--grace", "--unsafe-short-grace"]);
    e.run(&["prune", "--grace", "10m", "--unsafe-short-grace"]).ok();
}

#[test]
fn prune_refuses_to_run_when_a_snapshot_manifest_is_unreadable() {
    let e = Env::with_repo(&[]);
    let src = e.path("src");
    write_random(&src.join("a.bin"), 100_000, 4);
    e.backup(&[&src]);
    let manifest = objects(&e.repo, "snapshots").pop().unwrap();
    flip_byte(&manifest, 40);
    let packs_before = packs(&e.repo);
    e.run(&["prune", "--grace", "0s", "--unsafe-short-grace"])
        .expect_code(2)
        .one_line_error(&["prune refused", "manifest"]);
    e.run(&["prune", "--grace", "0s", "--unsafe-short-grace"])
        .expect_code(2);
    assert_eq!(
        packs(&e.repo),
        packs_before,
        "prune deleted data of an unreadable snapshot"
    );
}

#[test]
fn repair_index_keeps_the_old_index_when_a_pack_is_unreadable() {
    let e = Env::with_repo(&[]);
    let src = e.path("src");
    write_random(&src.join("a.bin"), 200_000, 5);
    e.backup(&[&src]);
    let (victim, size) = packs(&e.repo)[0].clone();
    let f = std::fs::OpenOptions::new().write(true).open(&victim).unwrap();
    f.set_len(size - 4).unwrap();
    let index_before = objects(&e.repo, "index");
    e.run(&["repair", "index"])
        .expect_code(2)
        .one_line_error(&["could not be read", "--force"]);
    assert_eq!(objects(&e.repo, "index"), index_before);
    e.run(&["repair", "index", "--force"]).ok();
}
