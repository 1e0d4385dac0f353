//! Backup of files and folders: a bounded pipeline over both cores.
//!
//! ```text
//! walker (this thread) ──file jobs──▶ readers (read, chunk, hash, dedup, zstd + XChaCha20-Poly1305)
//!        │                                 │ sealed new chunks
//!        └──tree blobs──▶ sealer ─────────┴──▶ packer (upload)
//! ```
//! A reader compresses and seals a new chunk straight from its chunker buffer into one sealed
//! buffer, so a chunk's plaintext is never copied or queued: only sealed bytes wait for the
//! packer. Every channel is bounded, so memory stays flat whatever the size of the input. Files whose
//! size, mtime, ctime and inode match the parent snapshot are not read. Every
//! `checkpoint_interval` the open pack is closed and an index segment is written; completed
//! files are appended to a local resume file (in batches as they finish, synced at each
//! checkpoint), so a killed backup neither re-reads nor re-uploads them next time.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{BufRead, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Component, Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, bounded};

use crate::chunker::{Chunker, GrowGate};
use crate::error::{RepoError, Result};
use crate::format::index::PackRecord;
use crate::format::pack::{BlobType, blob_aad};
use crate::format::snapshot::{Snapshot, Summary};
use crate::format::tree::{Node, NodeKind, Tree};
use crate::id::Id;
use crate::index::{IdSet, Index};
use crate::packer::Packer;
use crate::repository::Repository;

/// What to back up and how.
#[derive(Clone, Debug)]
pub struct BackupOptions {
    /// Source paths (made absolute).
    pub paths: Vec<PathBuf>,
    /// Tags for the snapshot.
    pub tags: Vec<String>,
    /// Host recorded in the snapshot.
    pub host: String,
    /// Glob patterns (matched against absolute paths) to leave out.
    pub excludes: Vec<String>,
    /// Glob patterns a file must match to be included (directories are always walked);
    /// empty includes everything.
    pub includes: Vec<String>,
    /// Explicit parent; `None` picks the newest snapshot of the same host and paths.
    pub parent: Option<Id>,
    /// Re-read every file even when unchanged.
    pub force_reread: bool,
    /// Interval between index checkpoints.
    pub checkpoint_interval: Duration,
    /// Folder for the local resume file (`None` disables resuming).
    pub cache_dir: Option<PathBuf>,
    /// Reader threads (0 = number of cores).
    pub readers: usize,
    /// Threads sealing directory listings (0 = one). File chunks are sealed by the readers.
    pub sealers: usize,
    /// Record the (single) source directory's contents at the root of the snapshot tree instead
    /// of under its absolute path: what a database data directory restore expects.
    pub root_is_source: bool,
    /// Decides entry by entry what to leave out (relative to the source root); see
    /// [`EntryFilter`]. Applied before `excludes` and `includes`.
    pub filter: Option<std::sync::Arc<dyn EntryFilter>>,
    /// Timestamp safety: a parent's file is trusted as unchanged only when its mtime and ctime
    /// are older than the parent snapshot's start minus this window. A file modified just
    /// before or while the parent read it could be modified again within the same timestamp
    /// tick (coarse kernel clocks, one-second file systems) without its size, mtime or ctime
    /// changing, so it is read again. `None`: trust any match (the plain files backup).
    pub safety_window: Option<Duration>,
    /// Entries that disappear between the directory listing and their reading (a dropped table)
    /// are left out silently and counted instead of being reported as unreadable.
    pub vanished_ok: bool,
    /// `source_kind` recorded in the snapshot (`files` by default). Only `files` snapshots
    /// look up their parent automatically; other kinds pass `parent`.
    pub source_kind: String,
    /// Paths recorded in the snapshot instead of the source paths (`None`: the source paths).
    pub recorded_paths: Option<Vec<String>>,
}

/// What to do with one entry of a walk (see [`EntryFilter`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Back it up.
    Keep,
    /// Leave it out.
    Skip,
    /// A directory recorded without its contents (anything else: left out).
    EmptyDir,
    /// A symlink to a directory, recorded and walked as that directory under the link's name
    /// (a PostgreSQL tablespace: `pg_tblspc/<oid>` points at its location). Anything else is
    /// kept as it is; a link whose target cannot be read is reported unreadable.
    FollowDir,
}

/// Leaves entries out of a backup by rule rather than by glob: a PostgreSQL data directory, for
/// one, has folders whose contents are never restored and relation forks that depend on their
/// siblings.
pub trait EntryFilter: Send + Sync + std::fmt::Debug {
    /// Decides for the entry at `rel` (relative to the source root); `siblings` are the names in
    /// its folder, sorted.
    fn decide(&self, rel: &Path, node: &Node, siblings: &[std::ffi::OsString]) -> Decision;
}

/// A small file added at the root of the snapshot after the walk (see [`backup_with`]).
#[derive(Clone, Debug)]
pub struct ExtraFile {
    /// Name in the root folder.
    pub name: String,
    /// Contents.
    pub data: Vec<u8>,
    /// Permission bits.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
}

/// What the walk found, shown to the `finish` step of [`backup_with`] before anything commits.
#[derive(Debug)]
pub struct WalkDone<'a> {
    /// Counters so far.
    pub summary: &'a Summary,
    /// Entries that could not be read.
    pub unreadable: &'a [String],
    /// Entries that disappeared during the walk (with `vanished_ok`).
    pub vanished: u64,
    /// Files read again only because the safety window did not let their parent copy be trusted.
    pub reread_recent: u64,
}

/// What the `finish` step of [`backup_with`] adds to the snapshot.
#[derive(Debug, Default)]
pub struct Finish {
    /// Files added at the root.
    pub extra_files: Vec<ExtraFile>,
    /// The snapshot's `source` metadata.
    pub source: Option<serde_json::Value>,
}

impl Default for BackupOptions {
    fn default() -> Self {
        BackupOptions {
            paths: Vec::new(),
            tags: Vec::new(),
            host: crate::repository::hostname(),
            excludes: Vec::new(),
            includes: Vec::new(),
            parent: None,
            force_reread: false,
            checkpoint_interval: Duration::from_secs(300),
            cache_dir: None,
            readers: 0,
            sealers: 0,
            root_is_source: false,
            filter: None,
            safety_window: None,
            vanished_ok: false,
            source_kind: "files".into(),
            recorded_paths: None,
        }
    }
}

/// Live counters a progress display can poll.
#[derive(Debug, Default)]
pub struct BackupProgress {
    /// Files finished (read or skipped).
    pub files: AtomicU64,
    /// Bytes of finished and skipped files.
    pub bytes: AtomicU64,
    /// Expected total bytes (from the parent snapshot), 0 if unknown.
    pub expected_bytes: AtomicU64,
    /// Sealed bytes uploaded.
    pub uploaded: AtomicU64,
    /// Set to stop the backup early (Ctrl-C).
    pub cancel: AtomicBool,
}

/// The outcome of a backup.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BackupResult {
    /// New snapshot id.
    pub snapshot_id: Id,
    /// Its manifest.
    pub snapshot: Snapshot,
    /// Files whose contents came from the resume file of an interrupted backup.
    pub resumed_files: u64,
    /// Index checkpoints written during the run.
    pub checkpoints: u64,
    /// Entries that disappeared during the walk (with `vanished_ok`).
    pub vanished: u64,
    /// Files read again only because of the safety window.
    pub reread_recent: u64,
}

struct WalkOutcome {
    root: Id,
    summary: Summary,
    unreadable: Vec<String>,
    resumed: u64,
    checkpoints: u64,
    vanished: u64,
    reread_recent: u64,
    source: Option<serde_json::Value>,
}

struct FileJob {
    path: PathBuf,
    /// Opened by the walker, which also asked the kernel to start reading it (see `open_ahead`).
    file: File,
    node: Node,
    reply: Sender<FileOutcome>,
}

type FileOutcome = std::result::Result<(Vec<Id>, u64), String>;

struct SealJob {
    blob_type: BlobType,
    id: Id,
    data: Vec<u8>,
}

enum PackMsg {
    Blob {
        blob_type: BlobType,
        id: Id,
        raw_len: u32,
        sealed: Vec<u8>,
    },
    Flush(Sender<Result<Vec<PackRecord>>>),
}

#[derive(serde::Serialize, serde::Deserialize)]
struct ResumeEntry {
    path: String,
    size: u64,
    mtime_ns: i64,
    ctime_ns: i64,
    inode: u64,
    content: Vec<Id>,
}

/// Recycles sealed-blob buffers between the readers and the packer, so a backup does not
/// allocate and free megabytes per chunk (which the system allocator answers with fresh pages and
/// page faults). Buffers above 2 MiB are not kept, bounding what the pool holds.
#[derive(Default)]
struct BufPool {
    bufs: Mutex<Vec<Vec<u8>>>,
}

impl BufPool {
    const KEEP: usize = 4;
    const MAX_CAPACITY: usize = 2 << 20;

    fn take(&self) -> Vec<u8> {
        self.bufs.lock().expect("lock").pop().unwrap_or_default()
    }

    fn give(&self, mut b: Vec<u8>) {
        if b.capacity() > Self::MAX_CAPACITY {
            return;
        }
        b.clear();
        let mut g = self.bufs.lock().expect("lock");
        if g.len() < Self::KEEP {
            g.push(b);
        }
    }
}

/// Bounds the bytes of chunks in flight between the readers and the packer, whatever their size:
/// a run of 8 MiB chunks would otherwise multiply the pipeline's memory by the queue depths. A
/// chunk larger than the budget still passes when nothing else is in flight.
struct ByteBudget {
    in_flight: Mutex<u64>,
    freed: std::sync::Condvar,
    limit: u64,
}

impl ByteBudget {
    fn new(limit: u64) -> Self {
        ByteBudget {
            in_flight: Mutex::new(0),
            freed: std::sync::Condvar::new(),
            limit,
        }
    }

    fn acquire(&self, n: u64, failed: &AtomicBool) {
        let mut g = self.in_flight.lock().expect("lock");
        while *g > 0 && *g + n > self.limit && !failed.load(Ordering::Relaxed) {
            g = self.freed.wait_timeout(g, Duration::from_millis(50)).expect("lock").0;
        }
        *g += n;
    }

    fn release(&self, n: u64) {
        let mut g = self.in_flight.lock().expect("lock");
        *g = g.saturating_sub(n);
        self.freed.notify_all();
    }
}

struct Shared<'a> {
    budget: ByteBudget,
    /// Lets one reader at a time hold a chunker buffer grown for a long chunk.
    grow: std::sync::Arc<GrowGate>,
    pool: BufPool,
    repo: &'a Repository,
    index: &'a Index,
    seen: Mutex<IdSet>,
    pending_files: AtomicU64,
    pending_blobs: AtomicU64,
    failed: AtomicBool,
    first_error: Mutex<Option<RepoError>>,
    progress: &'a BackupProgress,
    blobs_added: AtomicU64,
    raw_added: AtomicU64,
    /// Files read since the last write to the resume file.
    completed: Mutex<Vec<ResumeEntry>>,
    /// Where completed files are recorded (`None`: not recorded).
    resume_path: Option<PathBuf>,
}

impl Shared<'_> {
    fn fail(&self, e: RepoError) {
        let mut g = self.first_error.lock().expect("lock");
        if g.is_none() {
            *g = Some(e);
        }
        self.failed.store(true, Ordering::SeqCst);
    }

    /// Claims a blob for storing: false when it is already stored or being stored.
    fn claim(&self, id: &Id) -> bool {
        !self.index.contains(id) && self.seen.lock().expect("lock").insert(*id)
    }
}

fn mtime_ns(m: &std::fs::Metadata) -> i64 {
    m.mtime().saturating_mul(1_000_000_000).saturating_add(m.mtime_nsec())
}

fn ctime_ns(m: &std::fs::Metadata) -> i64 {
    m.ctime().saturating_mul(1_000_000_000).saturating_add(m.ctime_nsec())
}

/// Builds a node (without content or subtree) from `lstat` metadata.
pub fn node_from_metadata(name: &std::ffi::OsStr, m: &std::fs::Metadata) -> Node {
    let ft = m.file_type();
    let kind = if ft.is_dir() {
        NodeKind::Dir
    } else if ft.is_file() {
        NodeKind::File
    } else if ft.is_symlink() {
        NodeKind::Symlink
    } else if ft.is_fifo() {
        NodeKind::Fifo
    } else if ft.is_socket() {
        NodeKind::Socket
    } else if ft.is_char_device() {
        NodeKind::Chardev
    } else {
        NodeKind::Blockdev
    };
    let mut n = Node {
        kind: Some(kind),
        mode: m.mode(),
        uid: m.uid(),
        gid: m.gid(),
        size: if kind == NodeKind::File { m.size() } else { 0 },
        mtime_ns: mtime_ns(m),
        ctime_ns: ctime_ns(m),
        inode: m.ino(),
        dev: m.dev(),
        nlink: m.nlink(),
        rdev: matches!(kind, NodeKind::Chardev | NodeKind::Blockdev).then(|| m.rdev()),
        ..Default::default()
    };
    n.set_name(name);
    n
}

fn read_xattrs(path: &Path, node: &mut Node) {
    if let Ok(names) = xattr::list(path) {
        for name in names {
            if let Ok(Some(v)) = xattr::get(path, &name) {
                node.xattrs.insert(name.to_string_lossy().into_owned(), hex::encode(v));
            }
        }
    }
}

/// Tree of source paths: which components lead to which source roots.
#[derive(Default)]
struct PathTrie {
    children: BTreeMap<std::ffi::OsString, PathTrie>,
    is_source: bool,
}

/// Runs a backup and commits the snapshot.
pub fn backup(repo: &Repository, opts: &BackupOptions, progress: &BackupProgress) -> Result<BackupResult> {
    backup_with(repo, opts, progress, |_| Ok::<_, RepoError>(Finish::default()))
}

/// Runs a backup whose end is decided by the caller: once every file is read (and before the
/// snapshot commits), `finish` sees what the walk found and returns files to add at the root and
/// the snapshot's `source` metadata, or an error that commits nothing. A database backup ends its
/// backup mode there and adds the label the server hands back.
pub fn backup_with<E, F>(
    repo: &Repository,
    opts: &BackupOptions,
    progress: &BackupProgress,
    finish: F,
) -> std::result::Result<BackupResult, E>
where
    E: From<RepoError>,
    F: FnOnce(&WalkDone<'_>) -> std::result::Result<Finish, E>,
{
    let started = Instant::now();
    let time = jiff::Timestamp::now();
    if opts.paths.is_empty() {
        return Err(RepoError::Invalid("nothing to back up: no paths given".into()).into());
    }
    if opts.root_is_source && opts.paths.len() != 1 {
        return Err(RepoError::Invalid("a backup rooted at its source takes exactly one path".into()).into());
    }
    let mut paths = Vec::new();
    for p in &opts.paths {
        let abs = std::path::absolute(p).map_err(|e| RepoError::io(p, e))?;
        let clean: PathBuf = abs.components().filter(|c| !matches!(c, Component::CurDir)).collect();
        if clean.components().any(|c| matches!(c, Component::ParentDir)) {
            return Err(RepoError::Invalid(format!("{}: use a path without `..`", p.display())).into());
        }
        std::fs::symlink_metadata(&clean).map_err(|e| RepoError::io(&clean, e))?;
        paths.push(clean);
    }
    paths.sort();
    paths.dedup();
    let path_strings: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();

    let excludes = crate::glob_set(&opts.excludes, "exclude")?;
    let includes = crate::glob_set(&opts.includes, "include")?;

    let index = repo.load_index()?;
    // Parent: explicit, or the newest snapshot of the same host and paths.
    let snapshots = repo.list_snapshots()?;
    let parent = match opts.parent {
        Some(id) => snapshots.iter().find(|(i, _)| *i == id).cloned(),
        None if opts.source_kind == "files" => snapshots
            .iter()
            .rev()
            .find(|(_, s)| s.host == opts.host && s.paths == path_strings && s.source_kind == "files")
            .cloned(),
        None => None,
    };
    // Timestamp safety (see `BackupOptions::safety_window`): parent files touched after this
    // moment are read again.
    let trust_before_ns = match (&parent, opts.safety_window) {
        (Some((_, p)), Some(w)) => {
            Some(i64::try_from(p.time.as_nanosecond() - w.as_nanos() as i128).unwrap_or(i64::MIN))
        }
        _ => None,
    };
    if let Some((_, p)) = &parent {
        progress.expected_bytes.store(p.summary.bytes_total, Ordering::Relaxed);
    }
    let parent_root = match &parent {
        Some((_, s)) if !opts.force_reread => Some(repo.read_tree(&index, &s.tree)?),
        _ => None,
    };

    // Resume file of an interrupted backup of the same host and paths.
    let resume_path = opts.cache_dir.as_ref().map(|d| {
        let key = Id::hash_of(format!("{}\0{}", opts.host, path_strings.join("\0")).as_bytes());
        d.join(repo.config().id.to_hex())
            .join(format!("resume-{}.jsonl", key.short()))
    });
    let resume = match &resume_path {
        Some(p) => load_resume(p, &index),
        None => HashMap::new(),
    };

    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
    // A reader also compresses and seals, so one per core keeps both busy (a third measured no
    // faster and cost a chunker buffer and a compressor more).
    let readers = if opts.readers == 0 { cores } else { opts.readers };
    let sealers = if opts.sealers == 0 { 1 } else { opts.sealers };

    let shared = Shared {
        // Chunks being sealed or waiting for the packer, counted by their plaintext size (their
        // sealed size is at most that plus a few bytes): enough for every reader to seal an
        // average chunk while the packer writes another.
        budget: ByteBudget::new(BUDGET),
        pool: BufPool::default(),
        grow: std::sync::Arc::default(),
        repo,
        index: &index,
        seen: Mutex::new(IdSet::default()),
        pending_files: AtomicU64::new(0),
        pending_blobs: AtomicU64::new(0),
        failed: AtomicBool::new(false),
        first_error: Mutex::new(None),
        progress,
        blobs_added: AtomicU64::new(0),
        raw_added: AtomicU64::new(0),
        completed: Mutex::new(Vec::new()),
        resume_path: resume_path.clone(),
    };

    let warm_stop = AtomicBool::new(false);
    let (file_tx, file_rx) = bounded::<FileJob>(readers * 4);
    let (seal_tx, seal_rx) = bounded::<SealJob>(sealers);
    let (pack_tx, pack_rx) = bounded::<PackMsg>(readers);

    let outcome = std::thread::scope(|s| -> std::result::Result<WalkOutcome, E> {
        for _ in 0..readers {
            let rx = file_rx.clone();
            let tx = pack_tx.clone();
            let sh = &shared;
            s.spawn(move || reader_worker(sh, rx, tx));
        }
        for _ in 0..sealers {
            let rx = seal_rx.clone();
            let tx = pack_tx.clone();
            let sh = &shared;
            s.spawn(move || sealer_worker(sh, rx, tx));
        }
        let sh = &shared;
        s.spawn(move || packer_worker(sh, pack_rx));
        let warm_stop = &warm_stop;
        let warm_roots = &paths;
        s.spawn(move || warm_up(warm_roots, warm_stop));
        drop(file_rx);
        drop(seal_rx);

        let mut walker = Walker {
            sh: &shared,
            file_tx: Some(file_tx),
            seal_tx: Some(seal_tx),
            pack_tx: pack_tx.clone(),
            excludes: &excludes,
            includes: &includes,
            summary: Summary::default(),
            unreadable: Vec::new(),
            resume: &resume,
            resumed: 0,
            checkpoints: 0,
            last_checkpoint: Instant::now(),
            interval: opts.checkpoint_interval,
            resume_path: resume_path.clone(),
            filter: opts.filter.as_deref(),
            filter_root: paths[0].clone(),
            trust_before_ns,
            vanished_ok: opts.vanished_ok,
            vanished: 0,
            reread_recent: 0,
        };
        if opts.root_is_source {
            // Every file is read once the root listing is complete (each folder collects its
            // files before it returns), so `finish` runs after the last read.
            let tree = walker.dir_tree(&paths[0], parent_root.as_ref());
            warm_stop.store(true, Ordering::Relaxed);
            let mut fin = None;
            let root = match tree {
                Ok(mut tree) => match finish(&walker.walk_done()) {
                    Ok(f) => {
                        let added = walker.add_extra_files(&mut tree, &f.extra_files);
                        fin = Some(f.source);
                        added
                            .and_then(|()| walker.store_tree(&mut tree))
                            .and_then(|id| walker.drain_and_flush().map(|_| id))
                            .map_err(E::from)
                    }
                    Err(e) => Err(e),
                },
                Err(e) => Err(E::from(e)),
            };
            drop(pack_tx);
            return walker.into_outcome(root, fin.flatten());
        }
        let mut trie = PathTrie::default();
        for p in &paths {
            let mut t = &mut trie;
            for c in p.components() {
                if let Component::Normal(n) = c {
                    t = t.children.entry(n.to_os_string()).or_default();
                }
            }
            t.is_source = true;
        }
        let root = walker.virtual_dir(Path::new("/"), &trie, parent_root.as_ref());
        warm_stop.store(true, Ordering::Relaxed);
        let mut fin = None;
        let root = match root {
            Ok(r) => match finish(&walker.walk_done()) {
                Ok(f) if f.extra_files.is_empty() => {
                    fin = Some(f.source);
                    walker.drain_and_flush().map(|_| r).map_err(E::from)
                }
                Ok(_) => Err(E::from(RepoError::Invalid(
                    "extra files need a backup rooted at its source".into(),
                ))),
                Err(e) => Err(e),
            },
            Err(e) => Err(E::from(e)),
        };
        drop(pack_tx);
        walker.into_outcome(root, fin.flatten())
    });
    if let Some(e) = shared.first_error.lock().expect("lock").take() {
        return Err(e.into());
    }
    let WalkOutcome {
        root,
        mut summary,
        unreadable,
        resumed,
        checkpoints,
        vanished,
        reread_recent,
        source,
    } = outcome?;

    summary.bytes_added = progress.uploaded.load(Ordering::Relaxed);
    summary.blobs_added = shared.blobs_added.load(Ordering::Relaxed);
    summary.bytes_added_raw = shared.raw_added.load(Ordering::Relaxed);
    summary.duration_secs = started.elapsed().as_secs_f64();
    summary.errors = unreadable.len() as u64;
    let snapshot = Snapshot {
        version: 1,
        time,
        host: opts.host.clone(),
        user: crate::repository::username(),
        paths: opts.recorded_paths.clone().unwrap_or(path_strings),
        tags: opts.tags.clone(),
        parent: parent.map(|(id, _)| id),
        tree: root,
        source_kind: opts.source_kind.clone(),
        unreadable,
        summary,
        program_version: env!("CARGO_PKG_VERSION").into(),
        source,
    };
    let start: Vec<Id> = index.packs().iter().map(|p| p.id).collect();
    keep_packs(repo, &start)?;
    let snapshot_id = repo.write_snapshot(&snapshot)?;
    if let Some(p) = &resume_path {
        let _ = std::fs::remove_file(p);
    }
    Ok(BackupResult {
        snapshot_id,
        snapshot,
        resumed_files: resumed,
        checkpoints,
        vanished,
        reread_recent,
    })
}

/// Makes sure every pack this backup could have deduplicated against is still in the index
/// before the snapshot commits. A prune that ran meanwhile may have marked some of them (it
/// could not see this snapshot); those are put back in the index, so no later prune deletes
/// them. If one is already gone, the commit is refused rather than leaving a broken snapshot.
pub(crate) fn keep_packs(repo: &Repository, start: &[Id]) -> Result<()> {
    if start.is_empty() {
        return Ok(());
    }
    let now = repo.load_index()?;
    let gone: Vec<Id> = start.iter().copied().filter(|id| !now.has_pack(id)).collect();
    if gone.is_empty() {
        return Ok(());
    }
    let mut back = Vec::new();
    let marks = repo.load_marks()?;
    for id in &gone {
        let rec = marks.iter().flat_map(|(_, m)| m.packs.iter()).find(|p| p.id == *id);
        match rec {
            Some(r) if repo.backend().head(&crate::repository::pack_key(id))?.is_some() => back.push(r.clone()),
            _ => {
                return Err(RepoError::Invalid(format!(
                    "pack {} this backup may reuse was deleted by a prune while it ran (longer than the prune grace period); nothing was committed: run the backup again",
                    id.short()
                )));
            }
        }
    }
    repo.write_index_segment(&back)?;
    Ok(())
}

fn load_resume(path: &Path, index: &Index) -> HashMap<PathBuf, ResumeEntry> {
    let mut out = HashMap::new();
    let Ok(f) = File::open(path) else { return out };
    for line in std::io::BufReader::new(f).lines() {
        let Ok(line) = line else { break };
        // A torn last line (killed mid-write) is simply ignored.
        if let Ok(e) = serde_json::from_str::<ResumeEntry>(&line)
            && e.content.iter().all(|id| index.contains(id))
        {
            out.insert(PathBuf::from(&e.path), e);
        }
    }
    out
}

fn reader_worker(sh: &Shared<'_>, rx: Receiver<FileJob>, tx: Sender<PackMsg>) {
    let mut chunker = Chunker::new(sh.repo.config().chunker, sh.repo.keys().chunker_seed()).with_gate(sh.grow.clone());
    for job in rx {
        let outcome = if sh.failed.load(Ordering::Relaxed) {
            Err("backup aborted".to_string())
        } else {
            read_file(sh, &mut chunker, &job.path, job.file, &tx)
        };
        if let Ok((content, size)) = &outcome {
            sh.progress.files.fetch_add(1, Ordering::Relaxed);
            if let Some(resume_path) = &sh.resume_path {
                let mut done = sh.completed.lock().expect("lock");
                done.push(ResumeEntry {
                    path: job.path.display().to_string(),
                    size: *size,
                    mtime_ns: job.node.mtime_ns,
                    ctime_ns: job.node.ctime_ns,
                    inode: job.node.inode,
                    content: content.clone(),
                });
                if done.len() >= RESUME_BATCH {
                    // Written now (under the lock, so batches never interleave) rather than kept
                    // until the next checkpoint: tens of thousands of small files would otherwise
                    // hold megabytes of records. Not synced here: the checkpoint syncs the file,
                    // and a record whose blobs did not reach the index is ignored on loading.
                    let _ = append_resume(resume_path, &done, false);
                    done.clear();
                }
            }
        }
        let _ = job.reply.send(outcome);
        sh.pending_files.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Opens a file for the readers and asks the kernel to start reading it now (files up to 64 MiB):
/// with a queue of files ahead of the readers, a cold disk serves several at once instead of one
/// after the other.
fn open_ahead(path: &Path, size: u64) -> std::io::Result<File> {
    let f = File::open(path)?;
    if size > 0 && size <= 64 << 20 {
        let _ = rustix::fs::fadvise(&f, 0, std::num::NonZeroU64::new(size), rustix::fs::Advice::WillNeed);
    }
    Ok(f)
}

/// Entries of one folder the walker keeps uncollected (see `Walker::dir`): far more than the
/// readers' queue, so they never wait for the walker.
const FILES_IN_FLIGHT_PER_DIR: usize = 64;

/// Bytes of chunks being sealed or queued for the packer (see `Shared::budget`).
const BUDGET: u64 = 4 << 20;

fn read_file(
    sh: &Shared<'_>,
    chunker: &mut Chunker,
    path: &Path,
    f: impl std::io::Read,
    tx: &Sender<PackMsg>,
) -> FileOutcome {
    let mut content = Vec::new();
    let mut size = 0u64;
    let keys = sh.repo.keys();
    let level = sh.repo.config().compression_level;
    chunker
        .chunk::<_, ChunkError>(f, |chunk| {
            if sh.failed.load(Ordering::Relaxed) {
                return Err(ChunkError::Aborted);
            }
            let len = chunk.len() as u64;
            let id = keys.blob_id(chunk);
            content.push(id);
            size += len;
            sh.progress.bytes.fetch_add(len, Ordering::Relaxed);
            if sh.claim(&id) {
                sh.pending_blobs.fetch_add(1, Ordering::SeqCst);
                sh.budget.acquire(len, &sh.failed);
                let mut sealed = sh.pool.take();
                keys.seal_blob_into(&blob_aad(BlobType::Data, &id), chunk, level, &mut sealed);
                sh.raw_added.fetch_add(len, Ordering::Relaxed);
                tx.send(PackMsg::Blob {
                    blob_type: BlobType::Data,
                    id,
                    raw_len: len as u32,
                    sealed,
                })
                .map_err(|_| ChunkError::Aborted)?;
            }
            Ok(())
        })
        .map_err(|e| match e {
            ChunkError::Io(e) => format!("{}: {e}", path.display()),
            ChunkError::Aborted => "backup aborted".to_string(),
        })?;
    Ok((content, size))
}

enum ChunkError {
    Io(std::io::Error),
    Aborted,
}

impl From<std::io::Error> for ChunkError {
    fn from(e: std::io::Error) -> Self {
        ChunkError::Io(e)
    }
}

fn sealer_worker(sh: &Shared<'_>, rx: Receiver<SealJob>, tx: Sender<PackMsg>) {
    let level = sh.repo.config().compression_level;
    let keys = sh.repo.keys();
    for job in rx {
        let mut sealed = Vec::new();
        keys.seal_blob_into(&blob_aad(job.blob_type, &job.id), &job.data, level, &mut sealed);
        let raw_len = job.data.len() as u32;
        sh.raw_added.fetch_add(u64::from(raw_len), Ordering::Relaxed);
        if tx
            .send(PackMsg::Blob {
                blob_type: job.blob_type,
                id: job.id,
                raw_len,
                sealed,
            })
            .is_err()
        {
            return;
        }
    }
}

/// Writes blobs into packs: directory listings into their own packs, so the next backup's
/// reading of its parent snapshot's trees touches a few small packs, not the whole repository.
fn packer_worker(sh: &Shared<'_>, rx: Receiver<PackMsg>) {
    let mut data = Packer::new(sh.repo);
    let mut trees = Packer::new(sh.repo);
    for msg in rx {
        match msg {
            PackMsg::Blob {
                blob_type,
                id,
                raw_len,
                sealed,
            } => {
                if !sh.failed.load(Ordering::Relaxed) {
                    let packer = if blob_type == BlobType::Tree {
                        &mut trees
                    } else {
                        &mut data
                    };
                    let closed_before = packer.finished_count();
                    let added = packer.add(blob_type, id, raw_len, &sealed);
                    let closed = packer.finished_count() != closed_before;
                    match added.and_then(|()| {
                        if closed {
                            index_finished(sh, &mut data, &mut trees)
                        } else {
                            Ok(())
                        }
                    }) {
                        Ok(()) => {
                            sh.blobs_added.fetch_add(1, Ordering::Relaxed);
                            sh.progress
                                .uploaded
                                .store(data.bytes_written + trees.bytes_written, Ordering::Relaxed);
                        }
                        Err(e) => sh.fail(e),
                    }
                }
                if blob_type == BlobType::Data {
                    sh.pool.give(sealed);
                }
                if blob_type == BlobType::Data {
                    sh.budget.release(u64::from(raw_len));
                }
                sh.pending_blobs.fetch_sub(1, Ordering::SeqCst);
            }
            PackMsg::Flush(reply) => {
                let r = if sh.failed.load(Ordering::Relaxed) {
                    Err(RepoError::Interrupted)
                } else {
                    data.flush().and_then(|mut d| {
                        d.extend(trees.flush()?);
                        Ok(d)
                    })
                };
                sh.progress
                    .uploaded
                    .store(data.bytes_written + trees.bytes_written, Ordering::Relaxed);
                let _ = reply.send(r);
            }
        }
    }
}

/// Blobs in finished packs that make the packer write an index segment on its own, between
/// checkpoints: the records of a long backup would otherwise stay in memory until its end (about
/// 50 bytes per chunk, and as much again to encode them), and that was the memory peak of a
/// backup of many small files. 16 384 blobs are 16 GiB of average chunks, or a few hundred
/// MiB of small files: one index segment per that much data.
const INDEX_EVERY_BLOBS: usize = 16_384;

/// Writes an index segment for the finished packs once they hold [`INDEX_EVERY_BLOBS`] blobs.
fn index_finished(sh: &Shared<'_>, data: &mut Packer<'_>, trees: &mut Packer<'_>) -> Result<()> {
    if data.finished_blobs() + trees.finished_blobs() < INDEX_EVERY_BLOBS {
        return Ok(());
    }
    let mut records = data.take_finished();
    records.extend(trees.take_finished());
    sh.repo.write_index_segment(&records)?;
    Ok(())
}

/// Walks the source trees ahead of the backup with several threads, only to bring directory
/// entries and inodes into the kernel's caches: on a cold cache the walker's own `lstat`s then
/// hit memory instead of waiting on the disk one at a time.
fn warm_up(roots: &[PathBuf], stop: &AtomicBool) {
    let (tx, rx) = crossbeam_channel::unbounded::<PathBuf>();
    let pending = AtomicU64::new(roots.len() as u64);
    for r in roots {
        let _ = tx.send(r.clone());
    }
    std::thread::scope(|s| {
        for _ in 0..8 {
            let (tx, rx, pending) = (tx.clone(), rx.clone(), &pending);
            s.spawn(move || {
                while pending.load(Ordering::SeqCst) > 0 && !stop.load(Ordering::Relaxed) {
                    let Ok(dir) = rx.recv_timeout(Duration::from_millis(20)) else {
                        continue;
                    };
                    if let Ok(rd) = std::fs::read_dir(&dir) {
                        for e in rd.flatten() {
                            if stop.load(Ordering::Relaxed) {
                                break;
                            }
                            if let Ok(m) = e.metadata()
                                && m.is_dir()
                            {
                                pending.fetch_add(1, Ordering::SeqCst);
                                let _ = tx.send(e.path());
                            }
                        }
                    }
                    pending.fetch_sub(1, Ordering::SeqCst);
                }
            });
        }
    });
}

struct Walker<'a, 's> {
    sh: &'a Shared<'s>,
    file_tx: Option<Sender<FileJob>>,
    seal_tx: Option<Sender<SealJob>>,
    pack_tx: Sender<PackMsg>,
    excludes: &'a globset::GlobSet,
    includes: &'a globset::GlobSet,
    summary: Summary,
    unreadable: Vec<String>,
    resume: &'a HashMap<PathBuf, ResumeEntry>,
    resumed: u64,
    checkpoints: u64,
    last_checkpoint: Instant,
    interval: Duration,
    resume_path: Option<PathBuf>,
    filter: Option<&'a dyn EntryFilter>,
    /// The source root `filter` sees paths relative to.
    filter_root: PathBuf,
    /// Parent files with an mtime or ctime at or after this are read again (timestamp safety).
    trust_before_ns: Option<i64>,
    vanished_ok: bool,
    vanished: u64,
    reread_recent: u64,
}

enum Pending {
    Ready(Node),
    /// Left out (unreadable); already recorded.
    Skipped,
    Waiting(Node, PathBuf, Receiver<FileOutcome>),
}

impl Walker<'_, '_> {
    /// What the walk found so far, for the caller's `finish` step.
    fn walk_done(&self) -> WalkDone<'_> {
        WalkDone {
            summary: &self.summary,
            unreadable: &self.unreadable,
            vanished: self.vanished,
            reread_recent: self.reread_recent,
        }
    }

    /// Ends the walk: closes the walker's channels so the workers drain and stop, and hands over
    /// what the walk counted with the root tree (or the walk's error).
    fn into_outcome<E>(
        self,
        root: std::result::Result<Id, E>,
        source: Option<serde_json::Value>,
    ) -> std::result::Result<WalkOutcome, E> {
        let Walker {
            file_tx,
            seal_tx,
            summary,
            unreadable,
            resumed,
            checkpoints,
            vanished,
            reread_recent,
            ..
        } = self;
        drop(file_tx);
        drop(seal_tx);
        Ok(WalkOutcome {
            root: root?,
            summary,
            unreadable,
            resumed,
            checkpoints,
            vanished,
            reread_recent,
            source,
        })
    }

    fn check_abort(&self) -> Result<()> {
        if self.sh.progress.cancel.load(Ordering::Relaxed) {
            self.sh.fail(RepoError::Interrupted);
        }
        if self.sh.failed.load(Ordering::Relaxed) {
            return Err(RepoError::Interrupted);
        }
        Ok(())
    }

    /// Waits for every file and blob in flight, closes the open pack and indexes what was written.
    fn drain_and_flush(&mut self) -> Result<()> {
        while self.sh.pending_files.load(Ordering::SeqCst) > 0 || self.sh.pending_blobs.load(Ordering::SeqCst) > 0 {
            if self.sh.failed.load(Ordering::Relaxed) {
                return Err(RepoError::Interrupted);
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        self.flush_and_index()
    }

    /// Closes the open packs and writes an index segment for every pack finished since the last.
    fn flush_and_index(&mut self) -> Result<()> {
        let (tx, rx) = bounded(1);
        self.pack_tx
            .send(PackMsg::Flush(tx))
            .map_err(|_| RepoError::Interrupted)?;
        let records = rx.recv().map_err(|_| RepoError::Interrupted)??;
        if !records.is_empty() {
            self.sh.repo.write_index_segment(&records)?;
        }
        Ok(())
    }

    /// Every `interval`: closes the open pack, indexes what was written, and records the files
    /// completed so far in the resume file. No barrier: blobs still in flight simply are not in
    /// this checkpoint, and a resume record whose blobs did not reach the index is ignored when
    /// it is loaded (see `load_resume`), so the file is read again.
    fn maybe_checkpoint(&mut self) -> Result<()> {
        if self.last_checkpoint.elapsed() < self.interval {
            return Ok(());
        }
        self.flush_and_index()?;
        self.checkpoints += 1;
        self.last_checkpoint = Instant::now();
        if let Some(p) = &self.resume_path {
            // Best effort: losing the resume file only costs re-reading. Synced even when no
            // record is left: the readers wrote earlier batches without syncing.
            let mut done = self.sh.completed.lock().expect("lock");
            let _ = append_resume(p, &done, true);
            done.clear();
        }
        Ok(())
    }

    fn store_tree(&mut self, tree: &mut Tree) -> Result<Id> {
        tree.sort();
        let data = tree.encode();
        let id = self.sh.repo.keys().blob_id(&data);
        if self.sh.claim(&id) {
            self.sh.pending_blobs.fetch_add(1, Ordering::SeqCst);
            self.seal_tx
                .as_ref()
                .expect("walker active")
                .send(SealJob {
                    blob_type: BlobType::Tree,
                    id,
                    data,
                })
                .map_err(|_| RepoError::Interrupted)?;
        }
        self.summary.dirs += 1;
        Ok(id)
    }

    fn parent_subtree(&self, parent: Option<&Tree>, name: &std::ffi::OsStr) -> Option<Tree> {
        let n = parent?.find(name).filter(|n| n.is_dir())?;
        self.sh.repo.read_tree(self.sh.index, n.subtree.as_ref()?).ok()
    }

    /// A directory on the way to the source paths: only the listed children are included.
    fn virtual_dir(&mut self, path: &Path, trie: &PathTrie, parent: Option<&Tree>) -> Result<Id> {
        let mut tree = Tree::new();
        for (name, child) in &trie.children {
            let p = path.join(name);
            let meta = std::fs::symlink_metadata(&p).map_err(|e| RepoError::io(&p, e))?;
            let mut node = node_from_metadata(name, &meta);
            if child.is_source {
                let pending = self.entry(&p, node, parent)?;
                if let Some(n) = self.collect(pending) {
                    tree.nodes.push(n);
                }
            } else {
                let sub = self.parent_subtree(parent, name);
                node.subtree = Some(self.virtual_dir(&p, child, sub.as_ref())?);
                tree.nodes.push(node);
            }
        }
        self.store_tree(&mut tree)
    }

    /// Waits for a file's result, writing checkpoints meanwhile so a long run of large files
    /// still checkpoints on time.
    fn wait_for(&mut self, rx: &Receiver<FileOutcome>) -> std::result::Result<FileOutcome, ()> {
        loop {
            let left = self.interval.saturating_sub(self.last_checkpoint.elapsed());
            match rx.recv_timeout(left.max(Duration::from_millis(10))) {
                Ok(o) => return Ok(o),
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return Err(()),
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                    if let Err(e) = self.maybe_checkpoint() {
                        self.sh.fail(e);
                        return rx.recv().map_err(|_| ());
                    }
                }
            }
        }
    }

    fn collect(&mut self, p: Pending) -> Option<Node> {
        match p {
            Pending::Ready(n) => Some(n),
            Pending::Skipped => None,
            Pending::Waiting(mut n, path, rx) => match self.wait_for(&rx) {
                Ok(Ok((content, size))) => {
                    n.content = content;
                    n.size = size;
                    Some(n)
                }
                Ok(Err(msg)) => {
                    if !self.sh.failed.load(Ordering::Relaxed) {
                        self.unreadable.push(msg);
                    }
                    None
                }
                Err(_) => {
                    self.unreadable.push(format!("{}: not read", path.display()));
                    None
                }
            },
        }
    }

    /// Handles one entry; files may be handed to the readers and completed later.
    fn entry(&mut self, path: &Path, mut node: Node, parent: Option<&Tree>) -> Result<Pending> {
        self.check_abort()?;
        let name = node.os_name();
        match node.kind {
            Some(NodeKind::Dir) => {
                read_xattrs(path, &mut node);
                let sub = self.parent_subtree(parent, &name);
                node.subtree = Some(self.dir(path, sub.as_ref())?);
                Ok(Pending::Ready(node))
            }
            Some(NodeKind::Symlink) => {
                match std::fs::read_link(path) {
                    Ok(t) => node.set_target(t.as_os_str()),
                    Err(e) => self.unreadable.push(format!("{}: {e}", path.display())),
                }
                Ok(Pending::Ready(node))
            }
            Some(NodeKind::File) => {
                self.summary.bytes_total += node.size;
                let old = parent.and_then(|t| t.find(&name));
                let same = old.filter(|o| {
                    o.is_file()
                        && o.size == node.size
                        && o.mtime_ns == node.mtime_ns
                        && o.ctime_ns == node.ctime_ns
                        && o.inode == node.inode
                        && o.content.iter().all(|id| self.sh.index.contains(id))
                });
                let unchanged = same.filter(|o| self.trust_before_ns.is_none_or(|t| o.mtime_ns < t && o.ctime_ns < t));
                if same.is_some() && unchanged.is_none() {
                    self.reread_recent += 1;
                }
                if let Some(o) = unchanged {
                    node.content = o.content.clone();
                    node.xattrs = o.xattrs.clone();
                    self.summary.files_unchanged += 1;
                    self.sh.progress.files.fetch_add(1, Ordering::Relaxed);
                    self.sh.progress.bytes.fetch_add(node.size, Ordering::Relaxed);
                    return Ok(Pending::Ready(node));
                }
                read_xattrs(path, &mut node);
                if old.is_some() {
                    self.summary.files_changed += 1;
                } else {
                    self.summary.files_new += 1;
                }
                if let Some(r) = self.resume.get(path)
                    && r.size == node.size
                    && r.mtime_ns == node.mtime_ns
                    && r.ctime_ns == node.ctime_ns
                    && r.inode == node.inode
                {
                    node.content = r.content.clone();
                    self.resumed += 1;
                    self.sh.progress.files.fetch_add(1, Ordering::Relaxed);
                    self.sh.progress.bytes.fetch_add(node.size, Ordering::Relaxed);
                    return Ok(Pending::Ready(node));
                }
                self.maybe_checkpoint()?;
                let file = match open_ahead(path, node.size) {
                    Ok(f) => f,
                    Err(e) if self.vanished_ok && e.kind() == std::io::ErrorKind::NotFound => {
                        self.vanished += 1;
                        return Ok(Pending::Skipped);
                    }
                    Err(e) => {
                        self.unreadable.push(format!("{}: {e}", path.display()));
                        return Ok(Pending::Skipped);
                    }
                };
                self.summary.bytes_read += node.size;
                let (tx, rx) = bounded(1);
                self.sh.pending_files.fetch_add(1, Ordering::SeqCst);
                self.file_tx
                    .as_ref()
                    .expect("walker active")
                    .send(FileJob {
                        path: path.to_path_buf(),
                        file,
                        node: node.clone(),
                        reply: tx,
                    })
                    .map_err(|_| RepoError::Interrupted)?;
                Ok(Pending::Waiting(node, path.to_path_buf(), rx))
            }
            _ => Ok(Pending::Ready(node)),
        }
    }

    fn dir(&mut self, path: &Path, parent: Option<&Tree>) -> Result<Id> {
        let mut tree = self.dir_tree(path, parent)?;
        self.store_tree(&mut tree)
    }

    /// Adds small in-memory files to a (root) folder listing, chunked and stored like any file.
    fn add_extra_files(&mut self, tree: &mut Tree, files: &[ExtraFile]) -> Result<()> {
        let mut chunker = Chunker::new(self.sh.repo.config().chunker, self.sh.repo.keys().chunker_seed());
        let now = jiff::Timestamp::now().as_nanosecond() as i64;
        for f in files {
            let name = std::ffi::OsStr::new(&f.name);
            tree.nodes.retain(|n| n.os_name() != name);
            self.sh.pending_files.fetch_add(1, Ordering::SeqCst);
            let outcome = read_file(
                self.sh,
                &mut chunker,
                Path::new(&f.name),
                f.data.as_slice(),
                &self.pack_tx,
            );
            self.sh.pending_files.fetch_sub(1, Ordering::SeqCst);
            let (content, size) = outcome.map_err(RepoError::Invalid)?;
            let mut node = Node {
                kind: Some(NodeKind::File),
                mode: 0o100000 | (f.mode & 0o7777),
                uid: f.uid,
                gid: f.gid,
                size,
                mtime_ns: now,
                ctime_ns: now,
                content,
                ..Default::default()
            };
            node.set_name(name);
            self.summary.files_new += 1;
            self.summary.bytes_total += size;
            self.summary.bytes_read += size;
            tree.nodes.push(node);
        }
        Ok(())
    }

    /// The listing of one folder, its files read and its subfolders stored, itself not stored.
    fn dir_tree(&mut self, path: &Path, parent: Option<&Tree>) -> Result<Tree> {
        let mut entries: Vec<_> = match std::fs::read_dir(path) {
            Ok(rd) => rd.filter_map(|e| e.ok()).collect(),
            Err(e) if self.vanished_ok && e.kind() == std::io::ErrorKind::NotFound => {
                self.vanished += 1;
                Vec::new()
            }
            Err(e) => {
                self.unreadable.push(format!("{}: {e}", path.display()));
                Vec::new()
            }
        };
        entries.sort_by_key(|e| e.file_name());
        let siblings: Vec<std::ffi::OsString> = if self.filter.is_some() {
            entries.iter().map(|e| e.file_name()).collect()
        } else {
            Vec::new()
        };
        let mut tree = Tree::new();
        // Files in flight of this folder, oldest first. Only the newest few wait with their
        // reply channel; older ones are collected as the walk goes on, so a folder of tens of
        // thousands of files (17 635 in /usr/share/man/man1) does not hold a channel per file.
        let mut pending = std::collections::VecDeque::new();
        for e in entries {
            let p = e.path();
            if self.excludes.is_match(&p) {
                continue;
            }
            // Relative to the open directory (`fstatat`): no walk of the whole path per file.
            // Like `symlink_metadata`, it does not follow a symlink.
            let meta = match e.metadata() {
                Ok(m) => m,
                Err(err) if self.vanished_ok && err.kind() == std::io::ErrorKind::NotFound => {
                    self.vanished += 1;
                    continue;
                }
                Err(err) => {
                    self.unreadable.push(format!("{}: {err}", p.display()));
                    continue;
                }
            };
            let mut node = node_from_metadata(&e.file_name(), &meta);
            if let Some(f) = self.filter {
                let rel = p.strip_prefix(&self.filter_root).unwrap_or(&p);
                match f.decide(rel, &node, &siblings) {
                    Decision::Keep => {}
                    Decision::Skip => continue,
                    Decision::EmptyDir if node.is_dir() => {
                        node.subtree = Some(self.store_tree(&mut Tree::new())?);
                        pending.push_back(Pending::Ready(node));
                        continue;
                    }
                    Decision::EmptyDir => continue,
                    Decision::FollowDir if node.kind == Some(NodeKind::Symlink) => match std::fs::metadata(&p) {
                        Ok(m) if m.is_dir() => node = node_from_metadata(&e.file_name(), &m),
                        Ok(_) => {}
                        Err(err) => {
                            self.unreadable
                                .push(format!("{} (a link to a directory): {err}", p.display()));
                            continue;
                        }
                    },
                    Decision::FollowDir => {}
                }
            }
            if !self.includes.is_empty() && !node.is_dir() && !self.includes.is_match(&p) {
                continue;
            }
            pending.push_back(self.entry(&p, node, parent)?);
            if pending.len() > FILES_IN_FLIGHT_PER_DIR
                && let Some(p) = pending.pop_front()
                && let Some(n) = self.collect(p)
            {
                tree.nodes.push(n);
            }
        }
        for p in pending {
            if let Some(n) = self.collect(p) {
                tree.nodes.push(n);
            }
        }
        self.check_abort()?;
        Ok(tree)
    }
}

/// Completed files recorded per write to the resume file.
const RESUME_BATCH: usize = 256;

/// Appends records to the resume file; `sync` makes them durable (at checkpoints).
fn append_resume(path: &Path, entries: &[ResumeEntry], sync: bool) -> std::io::Result<()> {
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d)?;
    }
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
    let mut buf = Vec::new();
    for e in entries {
        serde_json::to_writer(&mut buf, e).map_err(std::io::Error::other)?;
        buf.push(b'\n');
    }
    f.write_all(&buf)?;
    if sync { f.sync_data() } else { Ok(()) }
}
