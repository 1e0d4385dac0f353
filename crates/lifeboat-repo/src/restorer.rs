//! Restore of a snapshot into a target folder.
//!
//! Safety rules: nothing is written outside the target (tree names are validated on read and every
//! directory we enter is checked not to be a symlink); a file appears under its final name only
//! once all its bytes are written and verified (temp file + rename); a blob that fails its check
//! makes that file fail loudly and never yields wrong bytes.

use std::collections::HashMap;
use std::fs::{File, FileTimes, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use crossbeam_channel::bounded;

use crate::error::{RepoError, Result};
use crate::format::tree::{Node, NodeKind, Tree};
use crate::id::Id;
use crate::index::Index;
use crate::repository::Repository;

/// How to treat files that already exist in the target.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Overwrite {
    /// Refuse to restore into a non-empty target.
    Never,
    /// Replace a file only when its size or mtime differs.
    IfChanged,
    /// Replace every file.
    Always,
}

/// What to restore and where.
#[derive(Clone, Debug)]
pub struct RestoreOptions {
    /// Target folder; the snapshot's absolute paths are recreated under it.
    pub target: PathBuf,
    /// Glob patterns on snapshot paths (e.g. `/etc/myapp/**`); empty restores everything.
    pub includes: Vec<String>,
    /// Glob patterns on snapshot paths left out with everything below them (a database restore
    /// places tablespaces, which sit inside the data directory's tree, somewhere else).
    pub excludes: Vec<String>,
    /// Existing-file policy.
    pub overwrite: Overwrite,
    /// Parallel file writers (0 = cores + 1: decrypting and decompressing keep the cores busy,
    /// and the one extra writer covers the waits for the disk; a fourth measured no faster on
    /// two cores and cost its blob buffers).
    pub threads: usize,
}

/// Live counters for progress display.
#[derive(Debug, Default)]
pub struct RestoreProgress {
    /// Files done.
    pub files: AtomicU64,
    /// Bytes written.
    pub bytes: AtomicU64,
    /// Total bytes to restore, growing as the restore plans its files (restores that share a
    /// progress add up).
    pub total_bytes: AtomicU64,
}

/// The outcome of a restore.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RestoreSummary {
    /// Files written.
    pub files_restored: u64,
    /// Files left alone because they were unchanged (`if-changed`).
    pub files_skipped: u64,
    /// Directories created or updated.
    pub dirs: u64,
    /// Symlinks and other special entries.
    pub special: u64,
    /// Bytes written.
    pub bytes_written: u64,
    /// Files that failed, with the reason. Non-empty means the restore is incomplete.
    pub errors: Vec<String>,
    /// Entries that cannot be recreated here (sockets, fifos, devices without privilege).
    pub warnings: Vec<String>,
    /// True when a file failed because the target's disk (or quota) is full.
    pub disk_full: bool,
    /// True when a file failed because repository data was damaged or missing.
    pub damaged: bool,
    /// Wall time.
    pub duration_secs: f64,
}

thread_local! {
    /// Each restore thread's blob buffers, reused for every blob it reads.
    static SCRATCH: std::cell::RefCell<crate::repository::BlobScratch> = std::cell::RefCell::default();
}

struct FileTask {
    dest: PathBuf,
    node: Node,
}

/// Restores a snapshot tree.
pub fn restore(
    repo: &Repository,
    index: &Index,
    root: &Id,
    opts: &RestoreOptions,
    progress: &RestoreProgress,
) -> Result<RestoreSummary> {
    let started = std::time::Instant::now();
    let includes = crate::glob_set(&opts.includes, "include")?;
    let excludes = crate::glob_set(&opts.excludes, "exclude")?;

    match std::fs::symlink_metadata(&opts.target) {
        Ok(m) if !m.is_dir() => {
            return Err(RepoError::RestoreRefused(format!(
                "target {} exists and is not a directory",
                opts.target.display()
            )));
        }
        Ok(_) => {
            let non_empty = std::fs::read_dir(&opts.target)
                .map_err(|e| RepoError::io(&opts.target, e))?
                .next()
                .is_some();
            if non_empty && opts.overwrite == Overwrite::Never {
                return Err(RepoError::RestoreRefused(format!(
                    "target {} is not empty (use --overwrite if-changed or --overwrite always)",
                    opts.target.display()
                )));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(&opts.target).map_err(|e| RepoError::io(&opts.target, e))?;
        }
        Err(e) => return Err(RepoError::io(&opts.target, e)),
    }

    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
    let threads = match opts.threads {
        0 => std::env::var("LIFEBOAT_RESTORE_THREADS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(cores + 1),
        n => n,
    };
    let (tx, rx) = bounded::<Vec<FileTask>>(threads * 2);
    let summary = Mutex::new(RestoreSummary::default());
    let mut dirs: Vec<(PathBuf, Node)> = Vec::new();
    let mut special: Vec<(PathBuf, Node)> = Vec::new();
    let mut hardlinks: Vec<(PathBuf, PathBuf)> = Vec::new();
    let mut walked = Ok(());
    let failed = Mutex::new(std::collections::HashSet::new());
    let big = Mutex::new(());
    let keep = scratch_keep(threads);
    std::thread::scope(|s| {
        for _ in 0..threads {
            let rx = rx.clone();
            let summary = &summary;
            let failed = &failed;
            let big = &big;
            s.spawn(move || {
                for t in rx.iter().flatten() {
                    let r = restore_file(repo, index, &t, opts.overwrite, progress, big, keep);
                    let mut g = summary.lock().expect("lock");
                    match r {
                        Ok(Some(n)) => {
                            g.files_restored += 1;
                            g.bytes_written += n;
                        }
                        Ok(None) => g.files_skipped += 1,
                        Err(e) => {
                            failed.lock().expect("lock").insert(t.dest.clone());
                            g.disk_full |= e.is_storage_full();
                            g.damaged |= matches!(
                                e,
                                RepoError::Damaged { .. } | RepoError::MissingBlob { .. } | RepoError::Backend(_)
                            );
                            g.errors.push(format!("{}: {e}", t.dest.display()));
                        }
                    }
                    progress.files.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        drop(rx);
        // The tree is walked while the writers run: only the directories and the few
        // special entries are remembered, never the whole file list.
        let mut walker = PlanWalker {
            repo,
            index,
            target: &opts.target,
            tx,
            batch: Vec::new(),
            batch_bytes: 0,
            pending: Vec::new(),
            created: 0,
            dirs: &mut dirs,
            special: &mut special,
            links: HashMap::new(),
            hardlinks: &mut hardlinks,
            progress,
            excludes: &excludes,
        };
        walked = walker
            .walk(root, Path::new("/"), &opts.target, &includes)
            .and_then(|()| walker.send_batch());
    });
    walked?;
    let mut summary = summary.into_inner().expect("lock");
    let failed = failed.into_inner().expect("lock");
    for (first, dest) in hardlinks {
        if failed.contains(&first) {
            // Never link to whatever stands at a path whose own restore failed.
            summary
                .errors
                .push(format!("{}: not linked: {} failed", dest.display(), first.display()));
            continue;
        }
        let _ = std::fs::remove_file(&dest);
        match std::fs::hard_link(&first, &dest) {
            Ok(()) => summary.files_restored += 1,
            Err(e) => summary
                .errors
                .push(format!("{}: hard link to {}: {e}", dest.display(), first.display())),
        }
    }
    for (dest, node) in &special {
        match restore_special(dest, node, opts.overwrite) {
            Ok(true) => summary.special += 1,
            Ok(false) => summary.warnings.push(format!(
                "{}: {:?} not restored",
                dest.display(),
                node.kind.expect("kind")
            )),
            Err(e) => summary.errors.push(format!("{}: {e}", dest.display())),
        }
    }
    for (dest, node) in dirs.iter().rev() {
        apply_metadata(dest, node, false, None);
        summary.dirs += 1;
    }
    summary.duration_secs = started.elapsed().as_secs_f64();
    Ok(summary)
}

/// Walks the snapshot tree depth first and feeds file writes to the writer threads as it goes.
///
/// A directory is created only once something inside it is selected (or it is selected itself),
/// so `--include` never leaves empty folders behind; parents are always created before children.
struct PlanWalker<'a> {
    repo: &'a Repository,
    index: &'a Index,
    target: &'a Path,
    tx: crossbeam_channel::Sender<Vec<FileTask>>,
    /// Files not handed to a writer yet: they go out in small batches, so neighbours in a folder
    /// are usually created by one thread (fewer waits on the folder's lock in the kernel) and the
    /// channel is not a point of contention for tens of thousands of small files.
    batch: Vec<FileTask>,
    batch_bytes: u64,
    /// Directories on the current path from the root, with their nodes.
    pending: Vec<(PathBuf, Node)>,
    /// How many of `pending` (from the start) already exist on disk.
    created: usize,
    dirs: &'a mut Vec<(PathBuf, Node)>,
    special: &'a mut Vec<(PathBuf, Node)>,
    /// First path restored for each multiply-linked inode.
    links: HashMap<(u64, u64), PathBuf>,
    hardlinks: &'a mut Vec<(PathBuf, PathBuf)>,
    progress: &'a RestoreProgress,
    /// Snapshot paths left out with their contents.
    excludes: &'a globset::GlobSet,
}

impl PlanWalker<'_> {
    fn walk(&mut self, tree_id: &Id, snap_path: &Path, dest: &Path, includes: &globset::GlobSet) -> Result<()> {
        let tree: Tree = self.repo.read_tree(self.index, tree_id)?;
        for n in tree.nodes {
            let name = n.os_name();
            let sp = snap_path.join(&name);
            if !self.excludes.is_empty() && self.excludes.is_match(&sp) {
                continue;
            }
            let dp = dest.join(&name);
            let selected = includes.is_empty() || includes.is_match(&sp);
            match n.kind {
                Some(NodeKind::Dir) => {
                    let subtree = n.subtree;
                    self.pending.push((dp.clone(), n));
                    if selected {
                        self.create_pending()?;
                    }
                    let sub_includes = if selected { &globset::GlobSet::empty() } else { includes };
                    let r = match &subtree {
                        Some(st) => self.walk(st, &sp, &dp, sub_includes),
                        None => Ok(()),
                    };
                    self.pending.pop();
                    self.created = self.created.min(self.pending.len());
                    r?;
                }
                Some(NodeKind::File) if selected => {
                    self.create_pending()?;
                    // Added, not stored: several restores may share one progress (a database
                    // restore puts tablespaces elsewhere with restores of their own).
                    self.progress.total_bytes.fetch_add(n.size, Ordering::Relaxed);
                    if n.nlink > 1 {
                        let key = (n.dev, n.inode);
                        if let Some(first) = self.links.get(&key) {
                            self.hardlinks.push((first.clone(), dp));
                            continue;
                        }
                        self.links.insert(key, dp.clone());
                    }
                    self.batch_bytes += n.size;
                    self.batch.push(FileTask { dest: dp, node: n });
                    if self.batch.len() >= BATCH_FILES || self.batch_bytes >= BATCH_BYTES {
                        self.send_batch()?;
                    }
                }
                Some(_) if selected => {
                    self.create_pending()?;
                    self.special.push((dp, n));
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Hands the batched files to the writers.
    fn send_batch(&mut self) -> Result<()> {
        if self.batch.is_empty() {
            return Ok(());
        }
        self.batch_bytes = 0;
        if self.tx.send(std::mem::take(&mut self.batch)).is_err() {
            return Err(RepoError::Invalid("restore writers stopped".into()));
        }
        Ok(())
    }

    /// Creates the directories on the current path that do not exist yet. Each one's parent is
    /// the target or the previous entry of `pending`, already created or checked here, so only
    /// the new folder itself needs checking.
    fn create_pending(&mut self) -> Result<()> {
        while self.created < self.pending.len() {
            let (dest, node) = &self.pending[self.created];
            if self.created == 0 {
                make_dir(self.target, dest)?;
            } else {
                make_one_dir(dest)?;
            }
            self.dirs.push((dest.clone(), node.clone()));
            self.created += 1;
        }
        Ok(())
    }
}

/// Files per batch handed to a restore writer.
const BATCH_FILES: usize = 16;
/// Bytes per batch: large files go out alone or nearly so, keeping the writers evenly busy.
const BATCH_BYTES: u64 = 1 << 20;

/// Creates one folder whose parent is known to be a real folder inside the target; an existing
/// entry must be a folder, never a symlink.
fn make_one_dir(dest: &Path) -> Result<()> {
    match std::fs::create_dir(dest) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => match std::fs::symlink_metadata(dest) {
            Ok(m) if m.is_dir() => Ok(()),
            Ok(m) if m.file_type().is_symlink() => Err(RepoError::RestoreRefused(format!(
                "{} is a symlink; refusing to restore through it",
                dest.display()
            ))),
            Ok(_) => Err(RepoError::RestoreRefused(format!(
                "{} exists and is not a directory",
                dest.display()
            ))),
            Err(e) => Err(RepoError::io(dest, e)),
        },
        Err(e) => Err(RepoError::io(dest, e)),
    }
}

/// Creates `dest` (inside `target`) and refuses to go through a symlink.
fn make_dir(target: &Path, dest: &Path) -> Result<()> {
    let rel = dest
        .strip_prefix(target)
        .map_err(|_| RepoError::RestoreRefused(format!("{} is outside the target", dest.display())))?;
    let mut cur = target.to_path_buf();
    for c in rel.components() {
        cur.push(c);
        match std::fs::symlink_metadata(&cur) {
            Ok(m) if m.is_dir() => {}
            Ok(m) if m.file_type().is_symlink() => {
                return Err(RepoError::RestoreRefused(format!(
                    "{} is a symlink; refusing to restore through it",
                    cur.display()
                )));
            }
            Ok(_) => {
                return Err(RepoError::RestoreRefused(format!(
                    "{} exists and is not a directory",
                    cur.display()
                )));
            }
            Err(_) => std::fs::create_dir(&cur).map_err(|e| RepoError::io(&cur, e))?,
        }
    }
    Ok(())
}

fn unchanged(dest: &Path, node: &Node) -> bool {
    match std::fs::symlink_metadata(dest) {
        Ok(m) => m.is_file() && m.size() == node.size && m.mtime() * 1_000_000_000 + m.mtime_nsec() == node.mtime_ns,
        Err(_) => false,
    }
}

/// A temporary name next to `dest`: a random tag drawn once per process and a counter, so names
/// never repeat within a restore and never collide with another process's (the file is still
/// created with `create_new`, so a clash fails instead of reusing a file).
fn temp_path(dest: &Path) -> PathBuf {
    static TAG: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let tag = TAG.get_or_init(|| Id::random().short());
    let mut name = dest.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".lifeboat-tmp-{tag}-{}", NEXT.fetch_add(1, Ordering::Relaxed)));
    dest.with_file_name(name)
}

/// Puts a finished temporary file under its final name. With `never`, the final name must not
/// exist: the kernel checks that atomically (`RENAME_NOREPLACE`), so there is no separate look
/// before and nothing can appear in between; a filesystem without that flag gets the look.
fn place(tmp: &Path, dest: &Path, ow: Overwrite) -> Result<()> {
    if ow == Overwrite::Never {
        use rustix::fs::{CWD, RenameFlags, renameat_with};
        match renameat_with(CWD, tmp, CWD, dest, RenameFlags::NOREPLACE) {
            Ok(()) => return Ok(()),
            Err(rustix::io::Errno::EXIST) => return Err(RepoError::RestoreRefused("exists".into())),
            Err(rustix::io::Errno::INVAL | rustix::io::Errno::NOSYS | rustix::io::Errno::NOTSUP) => {
                if std::fs::symlink_metadata(dest).is_ok() {
                    return Err(RepoError::RestoreRefused("exists".into()));
                }
            }
            Err(e) => return Err(RepoError::io(dest, e.into())),
        }
    }
    std::fs::rename(tmp, dest).map_err(|e| RepoError::io(dest, e))
}

/// Blobs above this plaintext size are restored by one writer at a time: they are rare, but each
/// needs up to 8 MiB sealed and as much again decompressed, and several writers meeting large
/// files at once made the memory peak of a restore.
const BIG_BLOB: u32 = 2 << 20;
/// Blob buffers a writer keeps between blobs and files: room for the largest chunk (8 MiB) and
/// its seal. A buffer freed and allocated again comes back as fresh pages from the kernel, and
/// the page faults of filling them cost more than the copy: trimming to 1 MiB after every large
/// blob and file, a PostgreSQL data directory of 800 MB (many chunks at the 8 MiB maximum)
/// took 155 000 faults and 0.4 to 1.0 s of system time; keeping them, 12 000 and 0.35 s, and
/// the peak RSS stayed at 27-32 MiB with 3 writers. At most 18 MiB per writer, so with many
/// writers (a big host, or LIFEBOAT_RESTORE_THREADS raised for S3) the writers share
/// [`SCRATCH_BUDGET`] instead.
const SCRATCH_KEEP: usize = 9 << 20;
/// What all writers together keep at most (two buffers each).
const SCRATCH_BUDGET: usize = 96 << 20;

/// The buffer size each of `threads` writers keeps.
fn scratch_keep(threads: usize) -> usize {
    (SCRATCH_BUDGET / (2 * threads.max(1))).clamp(1 << 20, SCRATCH_KEEP)
}

fn restore_file(
    repo: &Repository,
    index: &Index,
    t: &FileTask,
    ow: Overwrite,
    progress: &RestoreProgress,
    big: &Mutex<()>,
    keep: usize,
) -> Result<Option<u64>> {
    if ow == Overwrite::IfChanged && unchanged(&t.dest, &t.node) {
        progress.bytes.fetch_add(t.node.size, Ordering::Relaxed);
        return Ok(None);
    }
    let tmp = temp_path(&t.dest);
    let result = (|| -> Result<u64> {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| RepoError::io(&tmp, e))?;
        let mut written = 0u64;
        let mut scratch = SCRATCH.with(|s| std::mem::take(&mut *s.borrow_mut()));
        let r = (|| -> Result<()> {
            for id in &t.node.content {
                let big_guard = index
                    .get(id)
                    .filter(|l| l.raw_len > BIG_BLOB || l.length > BIG_BLOB)
                    .map(|_| big.lock().unwrap_or_else(|e| e.into_inner()));
                let data = repo.read_blob_into(index, id, &mut scratch).map_err(|e| match e {
                    RepoError::MissingBlob { id, .. } => RepoError::MissingBlob {
                        id,
                        needed_by: t.dest.display().to_string(),
                    },
                    e => e,
                })?;
                f.write_all(data).map_err(|e| RepoError::io(&tmp, e))?;
                written += data.len() as u64;
                progress.bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
                if big_guard.is_some() {
                    scratch.trim(keep);
                }
            }
            Ok(())
        })();
        scratch.trim(keep);
        SCRATCH.with(|s| *s.borrow_mut() = scratch);
        r?;
        if written != t.node.size {
            return Err(RepoError::damaged(
                t.dest.display().to_string(),
                format!("restored {written} bytes, snapshot says {}", t.node.size),
            ));
        }
        apply_metadata(&tmp, &t.node, false, Some(&f));
        drop(f);
        Ok(written)
    })();
    match result {
        Ok(n) => match place(&tmp, &t.dest, ow) {
            Ok(()) => Ok(Some(n)),
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                Err(e)
            }
        },
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}

fn restore_special(dest: &Path, node: &Node, ow: Overwrite) -> Result<bool> {
    match node.kind {
        Some(NodeKind::Symlink) => {
            let target = node.os_target().unwrap_or_default();
            if std::fs::symlink_metadata(dest).is_ok() {
                if ow == Overwrite::Never {
                    return Err(RepoError::RestoreRefused("exists".into()));
                }
                if std::fs::read_link(dest).ok().as_deref() == Some(Path::new(&target)) {
                    return Ok(true);
                }
                std::fs::remove_file(dest).map_err(|e| RepoError::io(dest, e))?;
            }
            std::os::unix::fs::symlink(&target, dest).map_err(|e| RepoError::io(dest, e))?;
            apply_metadata(dest, node, true, None);
            Ok(true)
        }
        _ => Ok(false),
    }
}

fn am_root() -> bool {
    static ROOT: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ROOT.get_or_init(|| std::fs::metadata("/proc/self").map(|m| m.uid() == 0).unwrap_or(false))
}

/// Restores owner (when root), extended attributes, mtime and mode, in that order (chown clears
/// set-id bits, so the mode comes last). Uses the open file when there is one: no second open.
fn apply_metadata(path: &Path, node: &Node, is_link: bool, file: Option<&File>) {
    if am_root() {
        let _ = match file {
            Some(f) => std::os::unix::fs::fchown(f, Some(node.uid), Some(node.gid)),
            None => std::os::unix::fs::lchown(path, Some(node.uid), Some(node.gid)),
        };
    }
    if is_link {
        return;
    }
    for (k, v) in &node.xattrs {
        if let Ok(val) = hex::decode(v) {
            let _ = xattr::set(path, k, &val);
        }
    }
    let t = if node.mtime_ns >= 0 {
        SystemTime::UNIX_EPOCH + Duration::from_nanos(node.mtime_ns as u64)
    } else {
        SystemTime::UNIX_EPOCH
    };
    let perms = std::fs::Permissions::from_mode(node.mode & 0o7777);
    match file {
        Some(f) => {
            let _ = f.set_times(FileTimes::new().set_modified(t));
            let _ = f.set_permissions(perms);
        }
        None => {
            if let Ok(f) = File::open(path) {
                let _ = f.set_times(FileTimes::new().set_modified(t));
            }
            let _ = std::fs::set_permissions(path, perms);
        }
    }
}

/// What `verify` found after a restore.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct VerifySummary {
    /// Files compared.
    pub files: u64,
    /// Bytes re-read.
    pub bytes: u64,
    /// Files that differ or are missing.
    pub mismatches: Vec<String>,
}

/// Re-reads every restored file under `target` and checks it against the snapshot, chunk by chunk
/// (each chunk's keyed hash must equal the stored id), so the files on disk are proven identical.
pub fn verify_restored(
    repo: &Repository,
    index: &Index,
    root: &Id,
    target: &Path,
    includes: &[String],
) -> Result<VerifySummary> {
    use std::io::Read;
    let inc = crate::glob_set(includes, "include")?;
    let mut out = VerifySummary::default();
    let mut buf = Vec::new();
    crate::walk::walk(repo, index, root, &mut |p, n| {
        if !n.is_file() || !(inc.is_empty() || inc.is_match(p)) {
            return Ok(());
        }
        let dest = target.join(p.strip_prefix("/").unwrap_or(p));
        out.files += 1;
        let mut f = match File::open(&dest) {
            Ok(f) => f,
            Err(e) => {
                out.mismatches.push(format!("{}: {e}", dest.display()));
                return Ok(());
            }
        };
        for id in &n.content {
            let Some(loc) = index.get(id) else {
                out.mismatches
                    .push(format!("{}: blob {} not in the index", dest.display(), id.short()));
                return Ok(());
            };
            buf.resize(loc.raw_len as usize, 0);
            if f.read_exact(&mut buf).is_err() || repo.keys().blob_id(&buf) != *id {
                out.mismatches
                    .push(format!("{}: content differs from the snapshot", dest.display()));
                return Ok(());
            }
            out.bytes += buf.len() as u64;
        }
        if f.read(&mut [0u8; 1]).map(|n| n > 0).unwrap_or(true) {
            out.mismatches
                .push(format!("{}: longer than in the snapshot", dest.display()));
        }
        Ok(())
    })?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writers_share_a_bounded_budget() {
        assert_eq!(scratch_keep(3), SCRATCH_KEEP);
        assert_eq!(scratch_keep(33), SCRATCH_BUDGET / 66);
        assert_eq!(scratch_keep(1000), 1 << 20);
        assert!(scratch_keep(33) * 2 * 33 <= SCRATCH_BUDGET);
    }
}
