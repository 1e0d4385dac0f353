//! Snapshots of streams: entries handed in one by one (a tar on a pipe, a dump on stdout) instead
//! of a folder walked on disk.
//!
//! Database backups never exist as files lifeboat could walk: `pg_basebackup` writes a tar to its
//! standard output, `pg_dump` a dump. The writer turns such entries into the same trees, chunks
//! and packs a file backup makes, so `ls`, `restore`, `check`, `forget` and `prune` work on them
//! unchanged, and unchanged content (a relation file that did not change since yesterday)
//! deduplicates against every earlier snapshot. Contents are read once, straight from the
//! stream, with bounded memory: no temporary copy on disk.
//!
//! ```no_run
//! # use lifeboat_repo::{Repository, snapshot_writer::{SnapshotWriter, WriterOptions, EntryMeta}};
//! # fn f(repo: &Repository) -> lifeboat_repo::Result<()> {
//! let mut w = SnapshotWriter::new(repo, WriterOptions::new("postgres-logical", vec!["postgres://db/app".into()]))?;
//! w.add_file("dumps/app.sql", &EntryMeta::file(0o600), &mut std::io::empty())?;
//! let done = w.commit(Some(serde_json::json!({"databases": ["app"]})))?;
//! println!("snapshot {}", done.snapshot_id);
//! # Ok(()) }
//! ```

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use crate::blob_sink::BlobSink;
use crate::error::{RepoError, Result};
use crate::format::pack::BlobType;
use crate::format::snapshot::{Snapshot, Summary};
use crate::format::tree::{Node, NodeKind, Tree};
use crate::id::Id;
use crate::index::Index;
use crate::repository::Repository;

/// What the snapshot is and where it came from.
#[derive(Clone, Debug)]
pub struct WriterOptions {
    /// `source_kind` of the snapshot, e.g. `postgres-physical`, `postgres-logical`.
    pub source_kind: String,
    /// What was backed up, as shown by `snapshots` and used to group retention (e.g. the
    /// database URL without its password, or a data directory). Never put secrets here.
    pub paths: Vec<String>,
    /// Host recorded in the snapshot.
    pub host: String,
    /// Tags.
    pub tags: Vec<String>,
    /// Deduplicate against everything already stored (loads the index; true by default).
    pub dedup: bool,
    /// Sealer threads (0 = one per core).
    pub sealers: usize,
}

impl WriterOptions {
    /// Options with the local host name, no tags and deduplication on.
    pub fn new(source_kind: &str, paths: Vec<String>) -> WriterOptions {
        WriterOptions {
            source_kind: source_kind.into(),
            paths,
            host: crate::repository::hostname(),
            tags: Vec::new(),
            dedup: true,
            sealers: 0,
        }
    }
}

/// Metadata of an entry; what `restore` applies to the written file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntryMeta {
    /// Permission bits (the type bits are set by the writer).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Modification time, ns since the epoch.
    pub mtime_ns: i64,
}

impl EntryMeta {
    /// Owned by the current user, modified now, with permission bits `mode`.
    pub fn file(mode: u32) -> EntryMeta {
        let now = jiff::Timestamp::now();
        EntryMeta {
            mode,
            uid: rustix::process::getuid().as_raw(),
            gid: rustix::process::getgid().as_raw(),
            mtime_ns: i64::try_from(now.as_nanosecond()).unwrap_or(i64::MAX),
        }
    }
}

/// The outcome of [`SnapshotWriter::commit`].
#[derive(Clone, Debug, serde::Serialize)]
pub struct WriteResult {
    /// The new snapshot's id.
    pub snapshot_id: Id,
    /// Its manifest.
    pub snapshot: Snapshot,
}

enum Entry {
    Dir(Dir),
    Leaf(Node),
}

#[derive(Default)]
struct Dir {
    node: Option<Node>,
    children: BTreeMap<OsString, Entry>,
}

/// Builds one snapshot from entries handed in by the caller. See the module docs.
pub struct SnapshotWriter {
    sink: BlobSink,
    opts: WriterOptions,
    root: Dir,
    time: jiff::Timestamp,
    started: Instant,
    summary: Summary,
}

impl SnapshotWriter {
    /// Starts a snapshot: loads the index (for deduplication) and starts the sealer threads.
    pub fn new(repo: &Repository, opts: WriterOptions) -> Result<SnapshotWriter> {
        let index = if opts.dedup {
            repo.load_index()?
        } else {
            Index::default()
        };
        Ok(SnapshotWriter {
            sink: BlobSink::new(Arc::new(repo.clone()), index, opts.sealers),
            opts,
            root: Dir::default(),
            time: jiff::Timestamp::now(),
            started: Instant::now(),
            summary: Summary::default(),
        })
    }

    /// Sealed bytes uploaded so far (for progress displays).
    pub fn uploaded(&self) -> u64 {
        self.sink.stats().uploaded.load(Ordering::Relaxed)
    }

    /// Adds a regular file whose content is everything `content` yields until its end. Missing
    /// parent directories are created (mode 0700, owner of `meta`). Returns the bytes read.
    pub fn add_file(&mut self, path: &str, meta: &EntryMeta, content: &mut dyn Read) -> Result<u64> {
        let (parent, name) = self.parent_of(path, meta)?;
        if parent.children.contains_key(&name) {
            return Err(RepoError::Invalid(format!("snapshot entry {path} added twice")));
        }
        let (ids, size) = self.sink.store_stream(content, true).map_err(|e| match e {
            RepoError::Io { source, .. } => RepoError::io(path, source),
            e => e,
        })?;
        let mut node = node_with(&name, NodeKind::File, 0o100000, meta);
        node.size = size;
        node.content = ids;
        let (parent, _) = self.parent_of(path, meta)?;
        parent.children.insert(name, Entry::Leaf(node));
        self.summary.files_new += 1;
        self.summary.bytes_total += size;
        self.summary.bytes_read += size;
        Ok(size)
    }

    /// Adds (or sets the metadata of) a directory.
    pub fn add_dir(&mut self, path: &str, meta: &EntryMeta) -> Result<()> {
        let (parent, name) = self.parent_of(path, meta)?;
        let node = node_with(&name, NodeKind::Dir, 0o040000, meta);
        match parent.children.entry(name) {
            std::collections::btree_map::Entry::Occupied(mut o) => match o.get_mut() {
                Entry::Dir(d) => d.node = Some(node),
                Entry::Leaf(_) => return Err(RepoError::Invalid(format!("snapshot entry {path} added twice"))),
            },
            std::collections::btree_map::Entry::Vacant(v) => {
                v.insert(Entry::Dir(Dir {
                    node: Some(node),
                    children: BTreeMap::new(),
                }));
            }
        }
        Ok(())
    }

    /// Adds a symbolic link.
    pub fn add_symlink(&mut self, path: &str, target: &Path, meta: &EntryMeta) -> Result<()> {
        let (parent, name) = self.parent_of(path, meta)?;
        if parent.children.contains_key(&name) {
            return Err(RepoError::Invalid(format!("snapshot entry {path} added twice")));
        }
        let mut node = node_with(&name, NodeKind::Symlink, 0o120000, meta);
        node.set_target(target.as_os_str());
        parent.children.insert(name, Entry::Leaf(node));
        Ok(())
    }

    /// Finds (creating as needed) the directory that holds `path`; returns it and the last name.
    fn parent_of(&mut self, path: &str, meta: &EntryMeta) -> Result<(&mut Dir, OsString)> {
        let mut names = Vec::new();
        for c in Path::new(path).components() {
            match c {
                Component::Normal(n) => names.push(n.to_os_string()),
                Component::RootDir | Component::CurDir => {}
                Component::ParentDir | Component::Prefix(_) => {
                    return Err(RepoError::Invalid(format!(
                        "snapshot entry {path:?}: `..` is not allowed"
                    )));
                }
            }
        }
        let Some(last) = names.pop() else {
            return Err(RepoError::Invalid(format!("snapshot entry {path:?} has no name")));
        };
        if last.as_bytes().contains(&0) {
            return Err(RepoError::Invalid(format!("snapshot entry {path:?} contains NUL")));
        }
        let mut d = &mut self.root;
        for n in names {
            let e = d.children.entry(n.clone()).or_insert_with(|| {
                let implied = EntryMeta { mode: 0o700, ..*meta };
                Entry::Dir(Dir {
                    node: Some(node_with(&n, NodeKind::Dir, 0o040000, &implied)),
                    children: BTreeMap::new(),
                })
            });
            d = match e {
                Entry::Dir(d) => d,
                Entry::Leaf(_) => {
                    return Err(RepoError::Invalid(format!(
                        "snapshot entry {path}: {} is not a directory",
                        n.to_string_lossy()
                    )));
                }
            };
        }
        Ok((d, last))
    }

    /// Writes the trees, waits for every upload, writes the index segment, then the snapshot
    /// manifest: the only commit point. `source` is source-specific metadata stored in the
    /// manifest (LSNs, versions, fingerprints…).
    pub fn commit(mut self, source: Option<serde_json::Value>) -> Result<WriteResult> {
        let root = std::mem::take(&mut self.root);
        let tree = self.store_dir(root)?;
        let SnapshotWriter {
            sink,
            opts,
            time,
            started,
            mut summary,
            ..
        } = self;
        let repo = sink.repo().clone();
        let start_index: Vec<Id> = sink.index().packs().iter().map(|p| p.id).collect();
        let blobs_added = sink.stats().blobs_added.load(Ordering::Relaxed);
        let raw_added = sink.stats().raw_added.load(Ordering::Relaxed);
        let records = sink.finish()?;
        let uploaded: u64 = records.iter().map(|r| r.size).sum();
        if !records.is_empty() {
            repo.write_index_segment(&records)?;
        }
        crate::archiver::keep_packs(&repo, &start_index)?;
        summary.bytes_added = uploaded;
        summary.blobs_added = blobs_added;
        summary.bytes_added_raw = raw_added;
        summary.duration_secs = started.elapsed().as_secs_f64();
        let snapshot = Snapshot {
            version: 1,
            time,
            host: opts.host,
            user: crate::repository::username(),
            paths: opts.paths,
            tags: opts.tags,
            parent: None,
            tree,
            source_kind: opts.source_kind,
            unreadable: Vec::new(),
            summary,
            program_version: env!("CARGO_PKG_VERSION").into(),
            source,
        };
        let snapshot_id = repo.write_snapshot(&snapshot)?;
        Ok(WriteResult { snapshot_id, snapshot })
    }

    fn store_dir(&mut self, dir: Dir) -> Result<Id> {
        let mut tree = Tree::new();
        for (_, e) in dir.children {
            match e {
                Entry::Leaf(n) => tree.nodes.push(n),
                Entry::Dir(d) => {
                    let mut node = d.node.clone().expect("directories always carry a node");
                    node.subtree = Some(self.store_dir(d)?);
                    tree.nodes.push(node);
                }
            }
        }
        tree.sort();
        self.summary.dirs += 1;
        self.sink.store_blob(BlobType::Tree, tree.encode())
    }
}

fn node_with(name: &std::ffi::OsStr, kind: NodeKind, type_bits: u32, meta: &EntryMeta) -> Node {
    let mut n = Node {
        kind: Some(kind),
        mode: type_bits | (meta.mode & 0o7777),
        uid: meta.uid,
        gid: meta.gid,
        mtime_ns: meta.mtime_ns,
        nlink: 1,
        ..Default::default()
    };
    n.set_name(name);
    n
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::InitOptions;
    use crate::crypto::KdfParams;

    pub(crate) fn test_repo() -> Repository {
        let store = crate::backend::open("memory:").unwrap();
        let opts = InitOptions {
            kdf: KdfParams::TESTING,
            ..Default::default()
        };
        Repository::init(store, b"pw", &opts).unwrap()
    }

    fn pseudo_random(n: usize, mut x: u64) -> Vec<u8> {
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    }

    #[test]
    fn streamed_entries_restore_and_dedup() {
        let repo = test_repo();
        let big = pseudo_random(5 << 20, 3);
        let meta = EntryMeta::file(0o600);
        let mut w = SnapshotWriter::new(&repo, WriterOptions::new("postgres-physical", vec!["db".into()])).unwrap();
        w.add_dir("base", &EntryMeta::file(0o700)).unwrap();
        w.add_file("base/1/1234", &meta, &mut big.as_slice()).unwrap();
        w.add_file("PG_VERSION", &meta, &mut &b"15\n"[..]).unwrap();
        w.add_symlink("pg_wal_link", Path::new("/elsewhere"), &meta).unwrap();
        assert!(w.add_file("PG_VERSION", &meta, &mut &b"x"[..]).is_err());
        assert!(w.add_file("../escape", &meta, &mut &b"x"[..]).is_err());
        let first = w.commit(Some(serde_json::json!({"start_lsn": "0/2000028"}))).unwrap();
        assert_eq!(first.snapshot.source_kind, "postgres-physical");
        assert!(first.snapshot.summary.bytes_added > 0);

        // Listed and readable like any snapshot.
        let (id, s) = repo.find_snapshot("latest").unwrap();
        assert_eq!(id, first.snapshot_id);
        assert_eq!(s.source.as_ref().unwrap()["start_lsn"], "0/2000028");
        let index = repo.load_index().unwrap();
        let root = repo.read_tree(&index, &s.tree).unwrap();
        let base = root.find(std::ffi::OsStr::new("base")).unwrap();
        let base_tree = repo.read_tree(&index, base.subtree.as_ref().unwrap()).unwrap();
        let one = base_tree.find(std::ffi::OsStr::new("1")).unwrap();
        let one_tree = repo.read_tree(&index, one.subtree.as_ref().unwrap()).unwrap();
        let f = one_tree.find(std::ffi::OsStr::new("1234")).unwrap();
        let mut back = Vec::new();
        for c in &f.content {
            back.extend(repo.read_blob(&index, c).unwrap());
        }
        assert_eq!(back, big);

        // The same content again adds no data blobs (only the changed file's chunks + trees).
        let mut w = SnapshotWriter::new(&repo, WriterOptions::new("postgres-physical", vec!["db".into()])).unwrap();
        w.add_file("base/1/1234", &meta, &mut big.as_slice()).unwrap();
        let second = w.commit(None).unwrap();
        assert!(
            second.snapshot.summary.bytes_added_raw < 64 << 10,
            "{:?}",
            second.snapshot.summary
        );

        // Restore writes the files out.
        let dir = tempfile::tempdir().unwrap();
        let opts = crate::restorer::RestoreOptions {
            target: dir.path().to_path_buf(),
            includes: Vec::new(),
            excludes: Vec::new(),
            overwrite: crate::restorer::Overwrite::Never,
            threads: 0,
        };
        let sum = crate::restorer::restore(&repo, &index, &s.tree, &opts, &Default::default()).unwrap();
        assert!(sum.errors.is_empty(), "{:?}", sum.errors);
        assert_eq!(std::fs::read(dir.path().join("base/1/1234")).unwrap(), big);
        assert_eq!(std::fs::read(dir.path().join("PG_VERSION")).unwrap(), b"15\n");
    }

    #[test]
    fn abandoned_writer_commits_nothing() {
        let repo = test_repo();
        let mut w = SnapshotWriter::new(&repo, WriterOptions::new("x", vec![])).unwrap();
        w.add_file("a", &EntryMeta::file(0o600), &mut &b"abc"[..]).unwrap();
        drop(w);
        assert!(repo.list_snapshots().unwrap().is_empty());
    }
}
