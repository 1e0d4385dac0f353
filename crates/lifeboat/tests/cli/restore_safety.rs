//! Restore never writes outside its target: not for hostile snapshots (crafted with the library:
//! `..`, names with `/`, raw-byte names, a symlink shadowing a directory) and not through
//! symlinks already in the target.

#[path = "../../../lifeboat-repo/tests/support/craft.rs"]
mod craft;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use lifeboat_repo::format::pack::BlobType;
use lifeboat_repo::format::tree::Node;
use lifeboat_repo::{Id, Repository, backend};

use crate::common::{Env, PASSWORD, all_files, restored, snapshot_of};
use craft::{Crafter, dir, file, symlink, with_raw_name};

fn open(e: &Env) -> Repository {
    Repository::open(backend::open(e.repo.to_str().unwrap()).unwrap(), PASSWORD.as_bytes()).unwrap()
}

/// Everything in the test dir outside the target, repository and cache.
fn outside_state(e: &Env, target: &Path) -> Vec<PathBuf> {
    all_files(e.dir.path())
        .into_iter()
        .map(|(p, _)| p)
        .filter(|p| !p.starts_with(target) && !p.starts_with(&e.repo) && !p.starts_with(&e.cache))
        .collect()
}

/// Restores `snapshot` and asserts it is refused with nothing written outside the target.
fn assert_refused(e: &Env, snapshot: &Id, outside: &Path, what: &str) {
    let target = e.path("target");
    let before = outside_state(e, &target);
    let outside_before = snapshot_of(outside);
    let r = e.run(&[
        OsStr::new("restore"),
        OsStr::new(&snapshot.to_hex()),
        OsStr::new("-t"),
        target.as_os_str(),
    ]);
    assert!(
        r.code == 8 || r.code == 5,
        "{what}: restore must be refused (exit 8, or 5 for a damaged tree):\n{r}"
    );
    assert!(
        r.stderr.contains("unsafe") || r.stderr.contains("refused") || r.stderr.contains("duplicated"),
        "{what}: the message must say why:\n{r}"
    );
    assert_eq!(
        outside_state(e, &target),
        before,
        "{what}: restore wrote outside its target"
    );
    assert_eq!(
        snapshot_of(outside),
        outside_before,
        "{what}: restore wrote into the outside folder"
    );
    assert!(!Path::new("/tmp/lifeboat-escaped").exists(), "{what}: escaped to /tmp");
    // Anything it did write inside the target is a directory, never a file.
    if target.exists() {
        let written = all_files(&target);
        assert!(
            written.is_empty(),
            "{what}: restore of a refused snapshot wrote {written:?}"
        );
    }
    let _ = std::fs::remove_dir_all(&target);
}

/// Turns an ordinary node into a hostile one.
type Rename = Box<dyn Fn(Node) -> Node>;

fn hostile_names(outside: &Path) -> Vec<(&'static str, Rename)> {
    let escape = format!("../../../../../../../..{}/escaped", outside.display());
    let escape2 = escape.clone();
    vec![
        (
            "dot-dot",
            Box::new(|mut n: Node| {
                n.name = "..".into();
                n
            }),
        ),
        (
            "dot",
            Box::new(|mut n: Node| {
                n.name = ".".into();
                n
            }),
        ),
        (
            "empty",
            Box::new(|mut n: Node| {
                n.name = String::new();
                n
            }),
        ),
        (
            "slash-escape",
            Box::new(move |mut n: Node| {
                n.name = escape.clone();
                n
            }),
        ),
        (
            "a/../../x",
            Box::new(|mut n: Node| {
                n.name = "a/../../lifeboat-escaped".into();
                n
            }),
        ),
        (
            "absolute",
            Box::new(|mut n: Node| {
                n.name = "/tmp/lifeboat-escaped".into();
                n
            }),
        ),
        (
            "nul",
            Box::new(|mut n: Node| {
                n.name = "a\0b".into();
                n
            }),
        ),
        ("raw-dot-dot", Box::new(|n: Node| with_raw_name(n, "harmless", b".."))),
        (
            "raw-slash",
            Box::new(move |n: Node| with_raw_name(n, "harmless", escape2.as_bytes())),
        ),
    ]
}

#[test]
fn hostile_entry_names_are_refused_at_any_depth() {
    let e = Env::with_repo(&[]);
    let outside = e.path("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("victim"), b"original").unwrap();
    let repo = open(&e);
    for (what, rename) in hostile_names(&outside) {
        for depth in [0, 2] {
            for as_dir in [false, true] {
                let mut c = Crafter::new(&repo);
                let payload = format!("pwned by {what}").into_bytes();
                let data = c.blob(BlobType::Data, &payload);
                // The hostile name on a file or on a directory holding a file, placed at the root
                // or inside ordinary directories.
                let hostile = if as_dir {
                    let sub = c.tree(vec![file("victim", vec![data], payload.len() as u64)]);
                    rename(dir("x", sub))
                } else {
                    rename(file("x", vec![data], payload.len() as u64))
                };
                let mut root = c.tree(vec![hostile]);
                for d in 0..depth {
                    root = c.tree(vec![dir(&format!("level{d}"), root)]);
                }
                let snap = c.commit(root);
                let kind = if as_dir { "directory" } else { "file" };
                assert_refused(&e, &snap, &outside, &format!("{what} {kind} at depth {depth}"));
            }
        }
    }
    assert_eq!(std::fs::read(outside.join("victim")).unwrap(), b"original");
}

#[test]
fn symlink_shadowing_a_directory_is_refused() {
    let e = Env::with_repo(&[]);
    let outside = e.path("outside");
    std::fs::create_dir_all(&outside).unwrap();
    let repo = open(&e);
    for (what, link_first) in [("symlink before dir", true), ("dir before symlink", false)] {
        let mut c = Crafter::new(&repo);
        let payload = b"written through a symlink".to_vec();
        let data = c.blob(BlobType::Data, &payload);
        let sub = c.tree(vec![file("pwned", vec![data], payload.len() as u64)]);
        let link = symlink("a", outside.to_str().unwrap());
        let d = dir("a", sub);
        let nodes = if link_first { vec![link, d] } else { vec![d, link] };
        let root = c.tree(nodes);
        let snap = c.commit(root);
        assert_refused(&e, &snap, &outside, what);
        assert!(!outside.join("pwned").exists(), "{what}: wrote through the symlink");
    }
}

#[test]
fn symlink_then_file_of_same_name_is_refused() {
    let e = Env::with_repo(&[]);
    let outside = e.path("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("victim"), b"original").unwrap();
    let repo = open(&e);
    let mut c = Crafter::new(&repo);
    let payload = b"overwritten".to_vec();
    let data = c.blob(BlobType::Data, &payload);
    let root = c.tree(vec![
        symlink("a", outside.join("victim").to_str().unwrap()),
        file("a", vec![data], payload.len() as u64),
    ]);
    let snap = c.commit(root);
    assert_refused(&e, &snap, &outside, "symlink then file");
    assert_eq!(std::fs::read(outside.join("victim")).unwrap(), b"original");
}

/// An ordinary snapshot restored with --overwrite always into a target where an attacker planted
/// symlinks: directories are never entered through a symlink, and files replace the symlink
/// instead of writing through it.
#[test]
fn planted_symlinks_in_the_target_are_not_followed() {
    let e = Env::with_repo(&[]);
    let src = e.path("src");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    std::fs::write(src.join("file"), b"snapshot file").unwrap();
    std::fs::write(src.join("sub/inner"), b"snapshot inner").unwrap();
    e.backup(&[&src]);
    let outside = e.path("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("victim"), b"original").unwrap();

    // 1. A directory on the way is a symlink to the outside.
    let target = e.path("target1");
    let out = restored(&target, &src);
    std::fs::create_dir_all(&out).unwrap();
    std::os::unix::fs::symlink(&outside, out.join("sub")).unwrap();
    let r = e.run(&[
        OsStr::new("restore"),
        OsStr::new("latest"),
        OsStr::new("-t"),
        target.as_os_str(),
        OsStr::new("--overwrite"),
        OsStr::new("always"),
    ]);
    r.expect_code(8).one_line_error(&["symlink"]);
    assert!(
        !outside.join("inner").exists(),
        "restore wrote through a planted directory symlink"
    );

    // 2. The file itself is a symlink to an outside file.
    let target = e.path("target2");
    let out = restored(&target, &src);
    std::fs::create_dir_all(&out).unwrap();
    std::os::unix::fs::symlink(outside.join("victim"), out.join("file")).unwrap();
    for mode in ["always", "if-changed"] {
        e.run(&[
            OsStr::new("restore"),
            OsStr::new("latest"),
            OsStr::new("-t"),
            target.as_os_str(),
            OsStr::new("--overwrite"),
            OsStr::new(mode),
        ])
        .ok();
        assert_eq!(std::fs::read(outside.join("victim")).unwrap(), b"original", "{mode}");
        assert!(
            !std::fs::symlink_metadata(out.join("file"))
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(std::fs::read(out.join("file")).unwrap(), b"snapshot file");
    }

    // 3. The target itself is a symlink.
    let target = e.path("target3");
    std::os::unix::fs::symlink(&outside, &target).unwrap();
    e.run(&[
        OsStr::new("restore"),
        OsStr::new("latest"),
        OsStr::new("-t"),
        target.as_os_str(),
        OsStr::new("--overwrite"),
        OsStr::new("always"),
    ])
    .expect_code(8);
    assert_eq!(all_files(&outside).len(), 1, "restore wrote through a symlinked target");
}

/// exit.rs documents exit 8 as "restore refused: target not empty, or unsafe path"; a snapshot
/// whose tree holds `..` is exactly an unsafe path, but it is reported as damage (exit 5).
#[test]

fn unsafe_path_in_snapshot_exits_8() {
    let e = Env::with_repo(&[]);
    let repo = open(&e);
    let mut c = Crafter::new(&repo);
    let data = c.blob(BlobType::Data, b"pwned");
    let mut n = file("x", vec![data], 5);
    n.name = "..".into();
    let root = c.tree(vec![n]);
    let snap = c.commit(root);
    let target = e.path("target");
    e.run(&[
        OsStr::new("restore"),
        OsStr::new(&snap.to_hex()),
        OsStr::new("-t"),
        target.as_os_str(),
    ])
    .expect_code(8);
}

/// `--include` restores exactly what it selects: the ancestors of a selected file, a selected
/// empty folder, and nothing else (no empty folders left behind by unselected branches).
#[test]
fn include_creates_only_what_it_selects() {
    let e = Env::with_repo(&[]);
    let src = e.path("src");
    for d in ["a/b/c", "a/other/deep", "empty", "x/y"] {
        std::fs::create_dir_all(src.join(d)).unwrap();
    }
    std::fs::write(src.join("a/b/c/keep.txt"), b"keep").unwrap();
    std::fs::write(src.join("a/b/skip.txt"), b"skip").unwrap();
    std::fs::write(src.join("a/other/deep/skip.txt"), b"skip").unwrap();
    std::fs::write(src.join("x/y/skip.txt"), b"skip").unwrap();
    e.backup(&[&src]);
    let target = e.path("target");
    let pattern = format!("{}/{{a/b/c/keep.txt,empty}}", src.display());
    e.run(&[
        OsStr::new("restore"),
        OsStr::new("latest"),
        OsStr::new("-t"),
        target.as_os_str(),
        OsStr::new("--include"),
        OsStr::new(&pattern),
    ])
    .ok();
    let root = restored(&target, &src);
    let mut got: Vec<String> = walk_all(&root);
    got.sort();
    assert_eq!(
        got,
        ["a", "a/b", "a/b/c", "a/b/c/keep.txt", "empty"],
        "restored entries"
    );
    assert_eq!(std::fs::read(root.join("a/b/c/keep.txt")).unwrap(), b"keep");
}

fn walk_all(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let p = entry.unwrap().path();
            out.push(p.strip_prefix(root).unwrap().display().to_string());
            if p.is_dir() {
                stack.push(p);
            }
        }
    }
    out
}
