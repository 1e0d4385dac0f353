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
    /// Existing-file policy.
    pub overwrite: Overwrite,
    /// Parallel file writers (0 = 2 × cores).
    pub threads: usize,
}

/// Live counters for progress display.
#[derive(Debug, Default)]
pub struct RestoreProgress {
    /// Files done.
    pub files: AtomicU64,
    /// Bytes written.
    pub bytes: AtomicU64,
    /// Total bytes to restore (set once known).
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
            .unwrap_or(cores * 2),
        n => n,
    };
    let (tx, rx) = bounded::<FileTask>(threads * 2);
    let summary = Mutex::new(RestoreSummary::default());
    let mut dirs: Vec<(PathBuf, Node)> = Vec::new();
    let mut special: Vec<(PathBuf, Node)> = Vec::new();
    let mut hardlinks: Vec<(PathBuf, PathBuf)> = Vec::new();
    let mut walked = Ok(());
    let failed = Mutex::new(std::collections::HashSet::new());
    std::thread::scope(|s| {
        for _ in 0..threads {
            let rx = rx.clone();
            let summary = &summary;
            let failed = &failed;
            s.spawn(move || {
                for t in rx {
                    let r = restore_file(repo, index, &t, opts.overwrite, progress);
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
            pending: Vec::new(),
            created: 0,
            dirs: &mut dirs,
            special: &mut special,
            links: HashMap::new(),
            hardlinks: &mut hardlinks,
            progress,
            total: 0,
        };
        walked = walker.walk(root, Path::new("/"), &opts.target, &includes);
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
    tx: crossbeam_channel::Sender<FileTask>,
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
    total: u64,
}

impl PlanWalker<'_> {
    fn walk(&mut self, tree_id: &Id, snap_path: &Path, dest: &Path, includes: &globset::GlobSet) -> Result<()> {
        let tree: Tree = self.repo.read_tree(self.index, tree_id)?;
        for n in tree.nodes {
            let name = n.os_name();
            let sp = snap_path.join(&name);
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
                    self.total += n.size;
                    self.progress.total_bytes.store(self.total, Ordering::Relaxed);
                    if n.nlink > 1 {
                        let key = (n.dev, n.inode);
                        if let Some(first) = self.links.get(&key) {
                            self.hardlinks.push((first.clone(), dp));
                            continue;
                        }
                        self.links.insert(key, dp.clone());
                    }
                    if self.tx.send(FileTask { dest: dp, node: n }).is_err() {
                        return Err(RepoError::Invalid("restore writers stopped".into()));
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

    /// Creates the directories on the current path that do not exist yet.
    fn create_pending(&mut self) -> Result<()> {
        while self.created < self.pending.len() {
            let (dest, node) = &self.pending[self.created];
            make_dir(self.target, dest)?;
            self.dirs.push((dest.clone(), node.clone()));
            self.created += 1;
        }
        Ok(())
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

fn temp_path(dest: &Path) -> PathBuf {
    let mut name = dest.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".lifeboat-tmp-{}", Id::random().short()));
    dest.with_file_name(name)
}

fn restore_file(
    repo: &Repository,
    index: &Index,
    t: &FileTask,
    ow: Overwrite,
    progress: &RestoreProgress,
) -> Result<Option<u64>> {
    if ow == Overwrite::IfChanged && unchanged(&t.dest, &t.node) {
        progress.bytes.fetch_add(t.node.size, Ordering::Relaxed);
        return Ok(None);
    }
    if ow == Overwrite::Never && std::fs::symlink_metadata(&t.dest).is_ok() {
        return Err(RepoError::RestoreRefused("exists".into()));
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
            }
            Ok(())
        })();
        scratch.trim(2 << 20);
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
        Ok(n) => {
            std::fs::rename(&tmp, &t.dest).map_err(|e| RepoError::io(&t.dest, e))?;
            Ok(Some(n))
        }
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
