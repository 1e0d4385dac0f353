//! Library-level: the restorer refuses hand-crafted hostile trees before writing anything, so no
//! caller of the engine can be tricked into writing outside its target.

mod support {
    pub mod craft;
}

use std::path::Path;

use lifeboat_repo::crypto::KdfParams;
use lifeboat_repo::format::pack::BlobType;
use lifeboat_repo::format::tree::Node;
use lifeboat_repo::restorer::{self, Overwrite, RestoreOptions, RestoreProgress};
use lifeboat_repo::{Id, InitOptions, RepoError, Repository, backend};
use support::craft::{Crafter, dir, file, symlink, with_raw_name};

/// Turns an ordinary node into a hostile one.
type Rename = Box<dyn Fn(Node) -> Node>;

fn repo(at: &Path) -> Repository {
    Repository::init(
        backend::create(at.to_str().unwrap()).unwrap(),
        b"pw",
        &InitOptions {
            kdf: KdfParams::TESTING,
            ..Default::default()
        },
    )
    .unwrap()
}

fn restore(repo: &Repository, snap: &Id, target: &Path) -> Result<restorer::RestoreSummary, RepoError> {
    let (_, s) = repo.find_snapshot(&snap.to_hex()).unwrap();
    let index = repo.load_index_for_reading().unwrap();
    restorer::restore(
        repo,
        &index,
        &s.tree,
        &RestoreOptions {
            target: target.to_path_buf(),
            includes: Vec::new(),
            excludes: Vec::new(),
            overwrite: Overwrite::Always,
            threads: 0,
        },
        &RestoreProgress::default(),
    )
}

fn files_under(p: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![p.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let m = std::fs::symlink_metadata(e.path()).unwrap();
            if m.is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.path());
            }
        }
    }
    out.sort();
    out
}

#[test]
fn hostile_names_are_refused_before_anything_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = repo(&tmp.path().join("repo"));
    let outside = tmp.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    let escape = format!("../../../..{}/escaped", outside.display());
    let cases: Vec<(&str, Rename)> = vec![
        (
            "..",
            Box::new(|mut n: Node| {
                n.name = "..".into();
                n
            }),
        ),
        (
            "a/../../x",
            Box::new(|mut n: Node| {
                n.name = "a/../../x".into();
                n
            }),
        ),
        (
            "escape",
            Box::new(move |mut n: Node| {
                n.name = escape.clone();
                n
            }),
        ),
        ("raw ..", Box::new(|n: Node| with_raw_name(n, "fine", b".."))),
    ];
    for (what, rename) in cases {
        let mut c = Crafter::new(&repo);
        let data = c.blob(BlobType::Data, b"pwned");
        let sub = c.tree(vec![rename(file("x", vec![data], 5))]);
        let root = c.tree(vec![dir("inner", sub)]);
        let snap = c.commit(root);
        let target = tmp.path().join("target");
        let r = restore(&repo, &snap, &target);
        assert!(r.is_err(), "{what}: hostile tree restored: {r:?}");
        assert!(files_under(&outside).is_empty(), "{what}: wrote outside");
        assert!(files_under(&target).is_empty(), "{what}: wrote files before refusing");
        let _ = std::fs::remove_dir_all(&target);
    }
}

#[test]
fn symlink_and_directory_of_the_same_name_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = repo(&tmp.path().join("repo"));
    let outside = tmp.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    let mut c = Crafter::new(&repo);
    let data = c.blob(BlobType::Data, b"pwned");
    let sub = c.tree(vec![file("pwned", vec![data], 5)]);
    let root = c.tree(vec![symlink("a", outside.to_str().unwrap()), dir("a", sub)]);
    let snap = c.commit(root);
    let target = tmp.path().join("target");
    let r = restore(&repo, &snap, &target);
    assert!(r.is_err(), "duplicate names restored: {r:?}");
    assert!(files_under(&outside).is_empty(), "wrote through the symlink");
}

/// Sanity check of the crafting helper: a well-formed crafted tree does restore.
#[test]
fn a_well_formed_crafted_tree_restores() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = repo(&tmp.path().join("repo"));
    let mut c = Crafter::new(&repo);
    let data = c.blob(BlobType::Data, b"hello");
    let sub = c.tree(vec![file("f", vec![data], 5)]);
    // Canonical order: "b" < "inner".
    let root = c.tree(vec![symlink("b", "inner/f"), dir("inner", sub)]);
    let snap = c.commit(root);
    let target = tmp.path().join("target");
    let s = restore(&repo, &snap, &target).unwrap();
    assert!(s.errors.is_empty(), "{:?}", s.errors);
    assert_eq!(std::fs::read(target.join("inner/f")).unwrap(), b"hello");
    assert_eq!(std::fs::read_link(target.join("b")).unwrap(), Path::new("inner/f"));
}
