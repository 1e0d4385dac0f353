//! Property: any small tree (nested directories, empty and multi-chunk files, symlinks, names with
//! spaces and non-UTF-8 bytes) restores byte-identical, with its modes and modification times.

use std::ffi::{OsStr, OsString};
use std::fs::{File, FileTimes};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use lifeboat_repo::archiver::{self, BackupOptions, BackupProgress};
use lifeboat_repo::crypto::KdfParams;
use lifeboat_repo::restorer::{self, Overwrite, RestoreOptions, RestoreProgress};
use lifeboat_repo::{InitOptions, Repository, backend};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Entry {
    File {
        size: usize,
        seed: u64,
        mode: u32,
        mtime: i64,
    },
    Symlink {
        target: Vec<u8>,
    },
    Dir {
        mode: u32,
        mtime: i64,
        children: Vec<(Vec<u8>, Entry)>,
    },
}

fn name() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => "[a-zA-Z0-9 ._-]{1,12}".prop_map(|s| s.into_bytes()),
        1 => prop::collection::vec(1u8..=255, 1..10),
    ]
    .prop_filter("valid name", |b| {
        b.as_slice() != b"." && b.as_slice() != b".." && !b.contains(&b'/') && !b.contains(&0)
    })
}

fn mtime() -> impl Strategy<Value = i64> {
    (1_000_000_000i64..2_000_000_000, 0i64..1_000_000_000).prop_map(|(s, ns)| s * 1_000_000_000 + ns)
}

fn file() -> impl Strategy<Value = Entry> {
    let size = prop_oneof![
        2 => Just(0usize),
        4 => 1usize..5_000,
        3 => 5_000usize..300_000,
        1 => 1_000_000usize..3_000_000,
    ];
    let mode = prop::sample::select(vec![0o644u32, 0o600, 0o755, 0o400, 0o640, 0o4755]);
    (size, any::<u64>(), mode, mtime()).prop_map(|(size, seed, mode, mtime)| Entry::File {
        size,
        seed,
        mode,
        mtime,
    })
}

fn symlink() -> impl Strategy<Value = Entry> {
    prop_oneof![
        "[a-z./ ]{1,30}".prop_map(|s| s.into_bytes()),
        prop::collection::vec(1u8..=255, 1..20),
    ]
    .prop_map(|target| Entry::Symlink { target })
}

fn entry() -> impl Strategy<Value = Entry> {
    let leaf = prop_oneof![4 => file(), 1 => symlink()];
    leaf.prop_recursive(3, 24, 6, |inner| {
        let mode = prop::sample::select(vec![0o755u32, 0o700, 0o750, 0o1777]);
        (mode, mtime(), prop::collection::vec((name(), inner), 0..6)).prop_map(|(mode, mtime, children)| Entry::Dir {
            mode,
            mtime,
            children,
        })
    })
}

fn root() -> impl Strategy<Value = Entry> {
    (mtime(), prop::collection::vec((name(), entry()), 0..8)).prop_map(|(mtime, children)| Entry::Dir {
        mode: 0o755,
        mtime,
        children,
    })
}

fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    // Make some of it compressible so both stored forms are exercised.
    if seed.is_multiple_of(3) {
        for (i, b) in out.iter_mut().enumerate() {
            if i % 4096 < 2048 {
                *b = b'z';
            }
        }
    }
    out
}

fn set_mtime(p: &Path, ns: i64) {
    let t = SystemTime::UNIX_EPOCH + Duration::from_nanos(ns as u64);
    File::open(p)
        .unwrap()
        .set_times(FileTimes::new().set_modified(t))
        .unwrap();
}

/// Creates the tree; directory times are set after their contents.
fn materialize(p: &Path, e: &Entry) {
    match e {
        Entry::File {
            size,
            seed,
            mode,
            mtime,
        } => {
            std::fs::write(p, random_bytes(*size, *seed)).unwrap();
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(*mode)).unwrap();
            set_mtime(p, *mtime);
        }
        Entry::Symlink { target } => {
            std::os::unix::fs::symlink(OsStr::from_bytes(target), p).unwrap();
        }
        Entry::Dir { mode, mtime, children } => {
            std::fs::create_dir(p).unwrap();
            let mut seen = std::collections::HashSet::new();
            for (n, c) in children {
                if seen.insert(n.clone()) {
                    materialize(&p.join(OsStr::from_bytes(n)), c);
                }
            }
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(*mode)).unwrap();
            set_mtime(p, *mtime);
        }
    }
}

/// Compares two trees: names, kinds, bytes, link targets, permission bits, mtimes (not of links).
fn compare(a: &Path, b: &Path) -> Result<(), String> {
    let ma = std::fs::symlink_metadata(a).map_err(|e| format!("{}: {e}", a.display()))?;
    let mb = std::fs::symlink_metadata(b).map_err(|e| format!("{}: missing after restore: {e}", b.display()))?;
    let what = b.display();
    if ma.file_type() != mb.file_type() {
        return Err(format!("{what}: kind differs"));
    }
    if ma.file_type().is_symlink() {
        if std::fs::read_link(a).unwrap() != std::fs::read_link(b).unwrap() {
            return Err(format!("{what}: link target differs"));
        }
        return Ok(());
    }
    if ma.mode() & 0o7777 != mb.mode() & 0o7777 {
        return Err(format!(
            "{what}: mode {:o} != {:o}",
            mb.mode() & 0o7777,
            ma.mode() & 0o7777
        ));
    }
    let t = |m: &std::fs::Metadata| m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128;
    if t(&ma) != t(&mb) {
        return Err(format!("{what}: mtime {} != {}", t(&mb), t(&ma)));
    }
    if ma.is_dir() {
        let names = |p: &Path| {
            let mut v: Vec<OsString> = std::fs::read_dir(p).unwrap().map(|e| e.unwrap().file_name()).collect();
            v.sort();
            v
        };
        let (na, nb) = (names(a), names(b));
        if na != nb {
            return Err(format!("{what}: entries {nb:?} != {na:?}"));
        }
        for n in na {
            compare(&a.join(&n), &b.join(&n))?;
        }
    } else if std::fs::read(a).unwrap() != std::fs::read(b).unwrap() {
        return Err(format!("{what}: content differs"));
    }
    Ok(())
}

fn round_trip(tree: &Entry) -> Result<(), String> {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    materialize(&src, tree);
    let store = backend::create(dir.path().join("repo").to_str().unwrap()).unwrap();
    let repo = Repository::init(
        store,
        b"pw",
        &InitOptions {
            kdf: KdfParams::TESTING,
            ..Default::default()
        },
    )
    .unwrap();
    let done = archiver::backup(
        &repo,
        &BackupOptions {
            paths: vec![src.clone()],
            host: "proptest".into(),
            ..Default::default()
        },
        &BackupProgress::default(),
    )
    .map_err(|e| format!("backup: {e}"))?;
    if !done.snapshot.unreadable.is_empty() {
        return Err(format!("unreadable: {:?}", done.snapshot.unreadable));
    }
    // Reopen, as a restore on another machine would.
    let repo = Repository::open(backend::open(dir.path().join("repo").to_str().unwrap()).unwrap(), b"pw").unwrap();
    let (_, snap) = repo.find_snapshot("latest").unwrap();
    let index = repo.load_index_for_reading().unwrap();
    let target = dir.path().join("target");
    let sum = restorer::restore(
        &repo,
        &index,
        &snap.tree,
        &RestoreOptions {
            target: target.clone(),
            includes: Vec::new(),
            excludes: Vec::new(),
            overwrite: Overwrite::Never,
            threads: 0,
        },
        &RestoreProgress::default(),
    )
    .map_err(|e| format!("restore: {e}"))?;
    if !sum.errors.is_empty() {
        return Err(format!("restore errors: {:?}", sum.errors));
    }
    let v = restorer::verify_restored(&repo, &index, &snap.tree, &target, &[]).map_err(|e| e.to_string())?;
    if !v.mismatches.is_empty() {
        return Err(format!("verify: {:?}", v.mismatches));
    }
    let out: PathBuf = target.join(src.strip_prefix("/").unwrap());
    compare(&src, &out)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, max_shrink_iters: 50, ..ProptestConfig::default() })]

    #[test]
    fn any_tree_restores_identically(tree in root()) {
        if let Err(e) = round_trip(&tree) {
            prop_assert!(false, "{}", e);
        }
    }
}

/// The non-UTF-8 and awkward names case, always exercised (not left to chance).
#[test]
fn awkward_names_restore_identically() {
    let f = |size, seed| Entry::File {
        size,
        seed,
        mode: 0o644,
        mtime: 1_600_000_000_123_456_789,
    };
    let tree = Entry::Dir {
        mode: 0o755,
        mtime: 1_500_000_000_000_000_001,
        children: vec![
            (b"caf\xe9 latin-1".to_vec(), f(10, 1)),
            (b" leading and trailing spaces ".to_vec(), f(0, 2)),
            (b"\xff\xfe\x01\x7f".to_vec(), f(1_500_000, 3)),
            (
                b"-dash".to_vec(),
                Entry::Symlink {
                    target: b"../\xffdangling target".to_vec(),
                },
            ),
            (
                "日本語".as_bytes().to_vec(),
                Entry::Dir {
                    mode: 0o700,
                    mtime: 1_000_000_000_000_000_000,
                    children: vec![(b"x".to_vec(), f(4096, 5))],
                },
            ),
            (
                b"empty dir".to_vec(),
                Entry::Dir {
                    mode: 0o750,
                    mtime: 1_100_000_000_000_000_000,
                    children: vec![],
                },
            ),
        ],
    };
    round_trip(&tree).unwrap();
}

/// A folder with far more files than the backup walker keeps in flight per folder and than a
/// restore batch holds, with a few large files among them (chunks the readers grow for).
#[test]
fn a_folder_of_many_files_restores_identically() {
    let mut children: Vec<(Vec<u8>, Entry)> = (0..700u64)
        .map(|i| {
            (
                format!("f{i:04}").into_bytes(),
                Entry::File {
                    size: ((i * 37) % 5000) as usize,
                    seed: i,
                    mode: 0o640,
                    mtime: 1_600_000_000_000_000_000 + i as i64,
                },
            )
        })
        .collect();
    for (i, size) in [(1u64, 3usize << 20), (2, 9 << 20)] {
        children.push((
            format!("big{i}").into_bytes(),
            Entry::File {
                size,
                seed: 100 + i,
                mode: 0o600,
                mtime: 1_600_000_000_000_000_000,
            },
        ));
    }
    let tree = Entry::Dir {
        mode: 0o755,
        mtime: 1_500_000_000_000_000_000,
        children,
    };
    round_trip(&tree).unwrap();
}
