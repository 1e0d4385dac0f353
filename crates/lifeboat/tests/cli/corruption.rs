//! Damaged repository files: check finds and names the damage and what it affects; restore
//! still delivers everything undamaged and never writes wrong bytes under a final name.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use crate::common::{Env, all_files, flip_byte, objects, packs, random_bytes, restored, write_random};

/// Two snapshots of one folder whose files live in different packs: `a.bin` (2 MB) goes into the
/// first backup's pack; `b.bin` (3.5 MB) only into the second backup's pack, the largest one.
struct Fixture {
    e: Env,
    src: PathBuf,
    first: String,
    second: String,
}

fn fixture() -> Fixture {
    let e = Env::with_repo(&["--pack-size-mib", "4"]);
    let src = e.path("src");
    write_random(&src.join("a.bin"), 2_000_000, 1);
    let first = e.backup(&[&src])["snapshot_id"].as_str().unwrap().to_string();
    write_random(&src.join("b.bin"), 3_500_000, 2);
    let second = e.backup(&[&src])["snapshot_id"].as_str().unwrap().to_string();
    Fixture { e, src, first, second }
}

fn pack_name(p: &Path) -> String {
    p.file_name().unwrap().to_string_lossy().into_owned()
}

fn restore_args<'a>(snapshot: &'a str, target: &'a Path, include: &'a str) -> Vec<&'a OsStr> {
    vec![
        OsStr::new("restore"),
        OsStr::new(snapshot),
        OsStr::new("-t"),
        target.as_os_str(),
        OsStr::new("--include"),
        OsStr::new(include),
    ]
}

#[test]
fn flipped_byte_in_a_pack_is_found_named_and_contained() {
    let Fixture { e, src, first, second } = fixture();
    // Directory listings go to small packs of their own; the data packs are the big ones.
    let all: Vec<_> = packs(&e.repo).into_iter().filter(|(_, size)| *size > 100_000).collect();
    assert_eq!(all.len(), 2, "expected one data pack per backup: {all:?}");
    let (victim, size) = all[0].clone();
    flip_byte(&victim, size / 2);

    // Structure-only check does not read pack data; it may pass, but must not crash.
    let r = e.run(&["check"]);
    assert!(r.code == 0 || r.code == 5, "{r}");

    let r = e.run(&["check", "--read-data"]);
    r.expect_code(5);
    let out = format!("{}{}", r.stdout, r.stderr);
    assert!(
        out.contains(&pack_name(&victim)),
        "check must name the damaged pack:\n{r}"
    );
    assert!(
        out.contains(&second[..8]),
        "check must name the affected snapshot:\n{r}"
    );
    assert!(!out.contains(&first[..8]), "the first snapshot is not affected:\n{r}");
    assert!(
        !out.contains(&src.join("a.bin").display().to_string()),
        "a.bin is not affected:\n{r}"
    );
    // (That it names b.bin itself is asserted by `check_names_the_damaged_file_not_the_root`.)
    // The JSON report says the same.
    let j = e.run(&["--json", "check", "--read-data"]).expect_code(5).json();
    assert!(j["damaged_packs"].to_string().contains(&pack_name(&victim)));
    assert_eq!(j["affected"].as_array().unwrap().len(), 1);

    // A file outside the damaged pack restores from the damaged snapshot.
    let t1 = e.path("t1");
    e.run(&restore_args(&second, &t1, "**/a.bin")).ok();
    assert_eq!(
        std::fs::read(restored(&t1, &src).join("a.bin")).unwrap(),
        random_bytes(2_000_000, 1)
    );
    // The damaged file fails loudly and is not left under its final name.
    let t2 = e.path("t2");
    let r = e.run(&restore_args(&second, &t2, "**/b.bin"));
    r.expect_code(5);
    assert!(r.stderr.contains("b.bin"), "{r}");
    let b_out = restored(&t2, &src).join("b.bin");
    assert!(!b_out.exists(), "a damaged file was written under its final name");
    let left = all_files(&t2);
    assert!(left.is_empty(), "restore of a damaged file left {left:?}");
    // A whole restore delivers everything else and fails on the damaged file only.
    let t3 = e.path("t3");
    let r = e.run(&[
        OsStr::new("restore"),
        OsStr::new(&second),
        OsStr::new("-t"),
        t3.as_os_str(),
    ]);
    r.expect_code(5);
    assert!(restored(&t3, &src).join("a.bin").exists(), "{r}");
    assert!(!restored(&t3, &src).join("b.bin").exists(), "{r}");
    // The older snapshot is whole.
    let t4 = e.path("t4");
    e.restore(&first, &t4);
}

#[test]
fn truncated_pack_fails_structure_check() {
    let Fixture { e, .. } = fixture();
    let (victim, size) = packs(&e.repo)[0].clone();
    let f = std::fs::OpenOptions::new().write(true).open(&victim).unwrap();
    f.set_len(size / 2).unwrap();
    drop(f);
    let r = e.run(&["check"]);
    r.expect_code(5);
    let out = format!("{}{}", r.stdout, r.stderr);
    assert!(
        out.contains(&pack_name(&victim)),
        "check must name the truncated pack:\n{r}"
    );
    assert!(out.contains("truncated"), "{r}");
}

#[test]
fn deleted_pack_fails_structure_check() {
    let Fixture { e, .. } = fixture();
    let (victim, _) = packs(&e.repo)[1].clone();
    std::fs::remove_file(&victim).unwrap();
    let r = e.run(&["check"]);
    r.expect_code(5);
    assert!(
        r.stderr.contains(&pack_name(&victim)) && r.stderr.contains("missing"),
        "{r}"
    );
}

#[test]
fn deleted_index_segment_is_rebuilt_by_repair_index() {
    let Fixture { e, src, .. } = fixture();
    let segs = objects(&e.repo, "index");
    assert!(!segs.is_empty());
    std::fs::remove_file(&segs[0]).unwrap();
    // Something is now unreachable.
    e.run(&["check"]).expect_code(5);
    e.run(&["repair", "index"]).ok();
    e.check_read_data_ok();
    let t = e.path("t");
    e.restore("latest", &t);
    crate::common::assert_same_tree(&src, &restored(&t, &src));
}

#[test]
fn flipped_byte_in_a_snapshot_fails_check() {
    let Fixture { e, first, .. } = fixture();
    let snap = e.repo.join("snapshots").join(&first);
    let len = std::fs::metadata(&snap).unwrap().len();
    flip_byte(&snap, len / 2);
    let r = e.run(&["check"]);
    r.expect_code(5);
    assert!(
        format!("{}{}", r.stdout, r.stderr).contains(&first),
        "check must name the snapshot:\n{r}"
    );
}

#[test]
fn flipped_byte_in_an_index_segment_fails_check() {
    let Fixture { e, .. } = fixture();
    let seg = objects(&e.repo, "index")[0].clone();
    flip_byte(&seg, 10);
    let r = e.run(&["check"]);
    r.expect_code(5);
    assert!(r.stderr.contains(&pack_name(&seg)), "{r}");
}

/// One damaged snapshot manifest must not make the other snapshots unrestorable.
#[test]

fn damaged_snapshot_does_not_block_restoring_another() {
    let Fixture { e, src, first, second } = fixture();
    let snap = e.repo.join("snapshots").join(&first);
    let len = std::fs::metadata(&snap).unwrap().len();
    flip_byte(&snap, len / 2);
    let t = e.path("t");
    e.restore(&second, &t);
    crate::common::assert_same_tree(&src, &restored(&t, &src));
}

/// A single flipped byte damages one data blob of b.bin; the trees in the same pack are intact
/// (restore reads them fine), so check must report b.bin, not "the root directory listing".
#[test]

fn check_names_the_damaged_file_not_the_root() {
    let Fixture { e, src, .. } = fixture();
    let (victim, size) = packs(&e.repo)[0].clone();
    flip_byte(&victim, size / 2);
    let r = e.run(&["check", "--read-data"]);
    r.expect_code(5);
    let b_path = src.join("b.bin").display().to_string();
    assert!(r.stderr.contains(&b_path), "check must name the affected file:\n{r}");
    assert!(
        !r.stderr.contains("root directory listing"),
        "the root listing is intact:\n{r}"
    );
}
