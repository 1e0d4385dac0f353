//! Backups rooted at their source with a rule filter, files added at the end, and timestamp
//! safety: what a database data directory backup (lifeboat-pg's local physical method) relies on.

use std::ffi::OsString;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use lifeboat_repo::archiver::{
    self, BackupOptions, BackupProgress, Decision, EntryFilter, ExtraFile, Finish, WalkDone,
};
use lifeboat_repo::crypto::KdfParams;
use lifeboat_repo::format::tree::Node;
use lifeboat_repo::restorer::{self, Overwrite, RestoreOptions, RestoreProgress};
use lifeboat_repo::{InitOptions, RepoError, Repository, backend};

fn repo(dir: &Path) -> Repository {
    let store = backend::create(dir.join("repo").to_str().unwrap()).unwrap();
    Repository::init(
        store,
        b"pw",
        &InitOptions {
            kdf: KdfParams::TESTING,
            ..Default::default()
        },
    )
    .unwrap()
}

/// Leaves out `skip*`, keeps `empty` without its contents, follows the links in `links/`.
#[derive(Debug)]
struct Rules;

impl EntryFilter for Rules {
    fn decide(&self, rel: &Path, _node: &Node, siblings: &[OsString]) -> Decision {
        assert!(siblings.windows(2).all(|w| w[0] <= w[1]), "siblings sorted");
        let name = rel.file_name().unwrap().to_string_lossy();
        if name.starts_with("skip") {
            Decision::Skip
        } else if rel == Path::new("empty") {
            Decision::EmptyDir
        } else if rel.parent() == Some(Path::new("links")) {
            Decision::FollowDir
        } else {
            Decision::Keep
        }
    }
}

fn opts(src: &Path, parent: Option<lifeboat_repo::Id>, window: Duration) -> BackupOptions {
    BackupOptions {
        paths: vec![src.to_path_buf()],
        root_is_source: true,
        filter: Some(Arc::new(Rules)),
        safety_window: Some(window),
        vanished_ok: true,
        source_kind: "test-rooted".into(),
        recorded_paths: Some(vec!["test:src".into()]),
        parent,
        ..Default::default()
    }
}

fn label(text: &str) -> impl FnOnce(&WalkDone<'_>) -> Result<Finish, RepoError> + '_ {
    move |done| {
        assert!(done.unreadable.is_empty());
        Ok(Finish {
            extra_files: vec![ExtraFile {
                name: "label".into(),
                data: text.as_bytes().to_vec(),
                mode: 0o600,
                uid: 0,
                gid: 0,
            }],
            source: Some(serde_json::json!({ "text": text })),
        })
    }
}

#[test]
fn rooted_filtered_backup_with_a_label_restores_that_layout() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    std::fs::create_dir_all(src.join("empty/inner")).unwrap();
    std::fs::write(src.join("a"), b"alpha").unwrap();
    std::fs::write(src.join("sub/b"), b"beta").unwrap();
    std::fs::write(src.join("sub/skip-me"), b"x").unwrap();
    std::fs::write(src.join("empty/gone"), b"x").unwrap();
    std::fs::write(src.join("label"), b"a stale label the walk must not keep").unwrap();
    let repo = repo(dir.path());
    let r = archiver::backup_with(
        &repo,
        &opts(&src, None, Duration::from_secs(1)),
        &BackupProgress::default(),
        label("START: 1"),
    )
    .unwrap();
    assert_eq!(r.snapshot.source_kind, "test-rooted");
    assert_eq!(r.snapshot.paths, vec!["test:src".to_string()]);
    assert_eq!(r.snapshot.source.as_ref().unwrap()["text"], "START: 1");

    let target = dir.path().join("target");
    let index = repo.load_index_for_reading().unwrap();
    let ropts = RestoreOptions {
        target: target.clone(),
        includes: Vec::new(),
        excludes: Vec::new(),
        overwrite: Overwrite::Never,
        threads: 0,
    };
    let sum = restorer::restore(&repo, &index, &r.snapshot.tree, &ropts, &RestoreProgress::default()).unwrap();
    assert!(sum.errors.is_empty(), "{:?}", sum.errors);
    assert_eq!(std::fs::read(target.join("a")).unwrap(), b"alpha");
    assert_eq!(std::fs::read(target.join("sub/b")).unwrap(), b"beta");
    assert_eq!(std::fs::read(target.join("label")).unwrap(), b"START: 1");
    assert!(!target.join("sub/skip-me").exists());
    assert!(target.join("empty").is_dir());
    assert_eq!(std::fs::read_dir(target.join("empty")).unwrap().count(), 0);
}

#[test]
fn a_failing_finish_commits_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("a"), b"alpha").unwrap();
    let repo = repo(dir.path());
    let r = archiver::backup_with(
        &repo,
        &opts(&src, None, Duration::from_secs(1)),
        &BackupProgress::default(),
        |_| Err::<Finish, _>(RepoError::Invalid("stop failed".into())),
    );
    assert!(matches!(r, Err(RepoError::Invalid(m)) if m == "stop failed"));
    assert!(repo.list_snapshots().unwrap().is_empty());
}

#[test]
fn files_touched_within_the_safety_window_are_read_again() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("old"), vec![1u8; 100_000]).unwrap();
    let window = Duration::from_millis(700);
    std::thread::sleep(window + Duration::from_millis(300));
    // Written just before the first backup: within the window of its start.
    std::fs::write(src.join("recent"), vec![2u8; 100_000]).unwrap();
    let repo = repo(dir.path());
    let progress = BackupProgress::default();
    let first = archiver::backup_with(&repo, &opts(&src, None, window), &progress, label("1")).unwrap();
    assert_eq!(first.snapshot.summary.files_new, 3);

    // Nothing changed since, but `recent` could have changed within its timestamp tick after
    // it was read: it is read again; `old` is not.
    let second = archiver::backup_with(
        &repo,
        &opts(&src, Some(first.snapshot_id), window),
        &progress,
        label("2"),
    )
    .unwrap();
    let s = &second.snapshot.summary;
    assert_eq!(second.reread_recent, 1, "{s:?}");
    assert_eq!(s.files_unchanged, 1, "{s:?}");
    assert_eq!(s.bytes_read, 100_000 + 1, "{s:?}");

    // Once a backup starts past the window, the copy it makes is trusted by the next one.
    std::thread::sleep(window + Duration::from_millis(100));
    let third = archiver::backup_with(
        &repo,
        &opts(&src, Some(second.snapshot_id), window),
        &progress,
        label("3"),
    )
    .unwrap();
    assert_eq!(
        third.reread_recent, 1,
        "the second backup still started within the window"
    );
    let fourth = archiver::backup_with(
        &repo,
        &opts(&src, Some(third.snapshot_id), window),
        &progress,
        label("4"),
    )
    .unwrap();
    assert_eq!(
        fourth.snapshot.summary.files_unchanged, 2,
        "{:?}",
        fourth.snapshot.summary
    );
    assert_eq!(fourth.reread_recent, 0);
    assert_eq!(fourth.snapshot.summary.bytes_read, 1, "only the label");
}

/// A followed link is stored as the directory it points at (its files skipped by the next
/// backup when unchanged), and a restore can leave that subtree out and put it elsewhere.
#[test]
fn followed_links_are_stored_as_directories_and_restored_anywhere() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let outside = dir.path().join("outside");
    std::fs::create_dir_all(src.join("links")).unwrap();
    std::fs::create_dir_all(outside.join("deep/skip-dir")).unwrap();
    std::fs::write(outside.join("deep/f"), b"far away").unwrap();
    std::fs::write(src.join("a"), b"alpha").unwrap();
    std::os::unix::fs::symlink(&outside, src.join("links/1")).unwrap();
    std::os::unix::fs::symlink(src.join("a"), src.join("links/2")).unwrap();
    std::os::unix::fs::symlink(dir.path().join("nowhere"), src.join("links/3")).unwrap();
    let repo = repo(dir.path());
    let r = archiver::backup_with(
        &repo,
        &opts(&src, None, Duration::from_millis(1)),
        &BackupProgress::default(),
        |done: &WalkDone<'_>| {
            assert_eq!(done.unreadable.len(), 1, "{:?}", done.unreadable);
            assert!(done.unreadable[0].contains("links/3"), "{:?}", done.unreadable);
            Ok::<_, RepoError>(Finish::default())
        },
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(20));
    let again = archiver::backup_with(
        &repo,
        &opts(&src, Some(r.snapshot_id), Duration::from_millis(1)),
        &BackupProgress::default(),
        |_: &WalkDone<'_>| Ok::<_, RepoError>(Finish::default()),
    )
    .unwrap();
    assert_eq!(
        again.snapshot.summary.files_unchanged, 2,
        "{:?}",
        again.snapshot.summary
    );

    let index = repo.load_index_for_reading().unwrap();
    let ropts = |target: &Path, excludes: Vec<String>| RestoreOptions {
        target: target.to_path_buf(),
        includes: Vec::new(),
        excludes,
        overwrite: Overwrite::Never,
        threads: 0,
    };
    let main = dir.path().join("main");
    let sum = restorer::restore(
        &repo,
        &index,
        &again.snapshot.tree,
        &ropts(&main, vec!["/links/1".into()]),
        &RestoreProgress::default(),
    )
    .unwrap();
    assert!(sum.errors.is_empty(), "{:?}", sum.errors);
    assert!(main.join("links").is_dir());
    assert!(!main.join("links/1").exists(), "excluded");
    assert!(
        std::fs::symlink_metadata(main.join("links/2"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    // The followed directory's own tree, restored somewhere else.
    let root = repo.read_tree(&index, &again.snapshot.tree).unwrap();
    let links = repo
        .read_tree(&index, root.find("links".as_ref()).unwrap().subtree.as_ref().unwrap())
        .unwrap();
    let one = links.find("1".as_ref()).unwrap();
    assert!(one.is_dir());
    let elsewhere = dir.path().join("elsewhere");
    let sum = restorer::restore(
        &repo,
        &index,
        one.subtree.as_ref().unwrap(),
        &ropts(&elsewhere, Vec::new()),
        &RestoreProgress::default(),
    )
    .unwrap();
    assert!(sum.errors.is_empty(), "{:?}", sum.errors);
    assert_eq!(std::fs::read(elsewhere.join("deep/f")).unwrap(), b"far away");
    assert!(
        !elsewhere.join("deep/skip-dir").exists(),
        "the filter applies below a followed link"
    );
}
