//! Copying a repository between locations.
//!
//! Every object but the per-location `status/` record and the prune lease is immutable and named
//! either by its own hash (keys, index segments, snapshots, marks, deletion records) or, for
//! packs, by a random id whose hash the index records. So a copy is verified on arrival without
//! trusting either side, an object already present is skipped (copies are resumable), and the
//! destination never sees a snapshot before the packs and index segments it needs: snapshots go
//! last, and not at all if anything before them failed. Named manifests (archived WAL segments,
//! `named/`) are commit points like snapshots: they follow the index, are held back the same way,
//! and are written put-if-absent, so a location that already holds a name keeps its own stream.
//!
//! Deletions made by prune and forget travel as `deletions/` records: an object named in one is
//! never copied back, and is removed from a destination that still has it, except a pack that
//! the repository's index (live or marked) still references, which is never deleted anywhere.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::backend::{Backend, BackendError, PutMode};
use crate::error::{RepoError, Result};
use crate::format::sealed::Kind;
use crate::id::Id;
use crate::index::IdMap;
use crate::repository::Repository;

/// Folders copied, in the order that keeps the destination consistent at every moment.
const FOLDERS: [&str; 7] = [
    "keys/",
    "deletions/",
    "data/",
    "index/",
    "marks/",
    "named/",
    "snapshots/",
];

/// Folders whose objects are commit points: never copied when an object they may need failed.
fn is_commit_folder(folder: &str) -> bool {
    matches!(folder, "named/" | "snapshots/")
}

/// How a copy treats objects the destination already has.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Existing {
    /// Trust an object of the right size (fast, resumable replication).
    #[default]
    TrustSize,
    /// Read and verify every existing object; replace the damaged ones (repair).
    Verify,
}

/// Replication settings.
#[derive(Clone, Debug)]
pub struct ReplicateOptions {
    /// What to do with objects already at the destination.
    pub existing: Existing,
    /// Objects copied at once.
    pub concurrency: usize,
    /// Apply deletion records at the destination.
    pub apply_deletions: bool,
}

impl Default for ReplicateOptions {
    fn default() -> Self {
        ReplicateOptions {
            existing: Existing::TrustSize,
            concurrency: 4,
            apply_deletions: true,
        }
    }
}

/// Live counters for a progress display.
#[derive(Debug, Default)]
pub struct ReplicateProgress {
    /// Objects copied so far.
    pub objects: AtomicUsize,
    /// Bytes copied so far.
    pub bytes: AtomicU64,
}

/// What a copy did.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct ReplicateReport {
    /// Source location.
    pub from: String,
    /// Destination location.
    pub to: String,
    /// Objects copied.
    pub copied: usize,
    /// Bytes copied.
    pub bytes: u64,
    /// Objects already present (and, when verifying, intact).
    pub present: usize,
    /// Objects present but damaged or of the wrong size, replaced by a verified copy.
    pub replaced: usize,
    /// Objects removed at the destination because a deletion record names them.
    pub deleted: usize,
    /// Packs no index references (an interrupted backup's leftovers): not copied.
    pub unindexed_skipped: usize,
    /// Failures, one line each; snapshots are not copied when this is non-empty.
    pub errors: Vec<String>,
    /// Wall time.
    pub duration_secs: f64,
}

impl ReplicateReport {
    /// True when the destination now holds everything the source had.
    pub fn ok(&self) -> bool {
        self.errors.is_empty()
    }
}

/// Reads every deletion record at a location; the union of the keys they name.
pub fn load_deletions(repo: &Repository) -> Result<BTreeSet<String>> {
    let mut out = BTreeSet::new();
    for o in repo.backend().list("deletions/")? {
        let body = repo.read_sealed(&o.key, Kind::Deletions)?;
        let keys: Vec<String> = serde_json::from_slice(&body)
            .map_err(|e| RepoError::damaged(&o.key, format!("malformed deletion record: {e}")))?;
        out.extend(keys);
    }
    Ok(out)
}

/// Writes a deletion record naming `keys` (nothing when empty).
pub fn record_deletions(repo: &Repository, keys: &[String]) -> Result<()> {
    if keys.is_empty() {
        return Ok(());
    }
    repo.write_sealed(
        "deletions",
        Kind::Deletions,
        &serde_json::to_vec(keys).expect("keys serialize"),
    )?;
    Ok(())
}

/// Every object name in the folders replication copies (for computing what an operation
/// deleted).
pub fn object_names(b: &dyn Backend) -> Result<BTreeSet<String>> {
    let mut out = BTreeSet::new();
    for f in FOLDERS {
        out.extend(b.list(f)?.into_iter().map(|o| o.key));
    }
    Ok(out)
}

struct Job {
    key: String,
    size: u64,
    /// Present at the destination (verify it, replace if bad).
    present: bool,
}

/// Copies to `dst` whatever `src` holds and `dst` lacks. `repo` gives the keys and the index
/// (pack hashes); it may be open on `src` or on all locations.
pub fn replicate(
    repo: &Repository,
    src: &Arc<dyn Backend>,
    dst: &Arc<dyn Backend>,
    opts: &ReplicateOptions,
    progress: &ReplicateProgress,
) -> Result<ReplicateReport> {
    let started = std::time::Instant::now();
    let mut rep = ReplicateReport {
        from: src.location().into(),
        to: dst.location().into(),
        ..Default::default()
    };
    let src_repo = repo.at(src.clone());
    let dst_repo = repo.at(dst.clone());
    // Pack hashes from the index (live and marked) at the source and, when it has one, at the
    // destination: a source that lost its index can still heal a destination that kept its own.
    // Index entries are authenticated, so either side's record is trustworthy.
    let mut packs: IdMap<(u64, Id)> = IdMap::default();
    if let Ok(idx) = dst_repo.load_index_for_reading() {
        for p in idx.pack_records() {
            packs.insert(p.id, (p.size, p.hash));
        }
    }
    for p in src_repo.load_index_for_reading()?.pack_records() {
        packs.insert(p.id, (p.size, p.hash));
    }
    let mut deleted = load_deletions(&src_repo)?;
    deleted.extend(load_deletions(&dst_repo)?);

    // The config first: without it the destination is not a repository.
    let cfg = src.get("config")?;
    match dst.get("config") {
        Ok(d) if d == cfg => rep.present += 1,
        Ok(_) => {
            dst.put("config", cfg, PutMode::Overwrite)?;
            rep.replaced += 1;
        }
        Err(e) if e.is_not_found() => {
            dst.put("config", cfg, PutMode::Create)?;
            rep.copied += 1;
        }
        Err(e) => return Err(e.into()),
    }

    for folder in FOLDERS {
        if is_commit_folder(folder) && !rep.errors.is_empty() {
            rep.errors.push(
                "snapshots and named manifests (WAL) not copied because objects they may need failed to copy".into(),
            );
            break;
        }
        let there: BTreeMap<String, u64> = dst.list(folder)?.into_iter().map(|o| (o.key, o.size)).collect();
        let mut jobs = Vec::new();
        for o in src.list(folder)? {
            if deleted.contains(&o.key) {
                continue;
            }
            if folder == "data/" {
                match pack_id(&o.key).and_then(|id| packs.get(&id)) {
                    Some(_) => {}
                    None => {
                        rep.unindexed_skipped += 1;
                        continue;
                    }
                }
            }
            let present = there.get(&o.key).copied();
            match (present, opts.existing) {
                (Some(s), Existing::TrustSize) if s == o.size => rep.present += 1,
                (p, _) => jobs.push(Job {
                    key: o.key,
                    size: o.size,
                    present: p.is_some(),
                }),
            }
        }
        run_jobs(jobs, opts.concurrency, |job| {
            copy_one(
                repo.keys(),
                src.as_ref(),
                dst.as_ref(),
                &job,
                &packs,
                opts.existing,
                progress,
            )
        })
        .into_iter()
        .for_each(|r| rep.count(r));
        // Deletion records arrived: objects they name must not linger at the destination.
        if folder == "deletions/" {
            deleted.extend(load_deletions(&dst_repo)?);
        }
    }

    if opts.apply_deletions && !dst.is_append_only() {
        // Metadata first (index segments, marks, snapshots), then packs: a pack is deleted only
        // if no index segment or mark left at either side references it any more.
        for key in deleted.iter().filter(|k| pack_id(k).is_none()) {
            if dst.head(key)?.is_some() {
                dst.delete(key)?;
                rep.deleted += 1;
            }
        }
        let mut referenced: crate::index::IdSet = src_repo
            .load_index_for_reading()?
            .pack_records()
            .iter()
            .map(|p| p.id)
            .collect();
        referenced.extend(dst_repo.load_index_for_reading()?.pack_records().iter().map(|p| p.id));
        for key in &deleted {
            let Some(id) = pack_id(key) else { continue };
            if referenced.contains(&id) {
                continue; // still referenced by an index: never deleted anywhere
            }
            if dst.head(key)?.is_some() {
                dst.delete(key)?;
                rep.deleted += 1;
            }
        }
    }
    rep.duration_secs = started.elapsed().as_secs_f64();
    Ok(rep)
}

/// Copies the objects `keys` from `src` to `dst` (what one write left a location without, see
/// [`crate::mirror`]), in the order that keeps `dst` consistent: packs, then index segments, then
/// the rest (named manifests, snapshots) only if nothing before failed. Packs are verified
/// against the index segments among `keys` (or, failing that, `repo`'s index at `src`); a key
/// the source no longer has (deleted since, e.g. a superseded partial upload) is skipped and
/// counted in `present`. Objects `dst` already has at the right size are not copied again.
pub fn copy_keys(
    repo: &Repository,
    src: &Arc<dyn Backend>,
    dst: &Arc<dyn Backend>,
    keys: &[String],
) -> ReplicateReport {
    let started = std::time::Instant::now();
    let mut rep = ReplicateReport {
        from: src.location().into(),
        to: dst.location().into(),
        ..Default::default()
    };
    let progress = ReplicateProgress::default();
    let src_repo = repo.at(src.clone());
    let mut packs: IdMap<(u64, Id)> = IdMap::default();
    let mut need_full_index = false;
    for k in keys.iter().filter(|k| k.starts_with("index/")) {
        match src_repo.read_index_segment(k) {
            Ok(recs) => recs.iter().for_each(|p| {
                packs.insert(p.id, (p.size, p.hash));
            }),
            Err(_) => need_full_index = true,
        }
    }
    let unknown_pack = keys
        .iter()
        .filter_map(|k| pack_id(k))
        .any(|id| !packs.contains_key(&id));
    if (need_full_index || unknown_pack)
        && let Ok(idx) = src_repo.load_index_for_reading()
    {
        for p in idx.pack_records() {
            packs.insert(p.id, (p.size, p.hash));
        }
    }
    let mut groups: Vec<Vec<&String>> = vec![Vec::new(); 3];
    for k in keys {
        let g = if k.starts_with("data/") {
            0
        } else if k.starts_with("index/") {
            1
        } else {
            2
        };
        if !groups[g].contains(&k) {
            groups[g].push(k);
        }
    }
    for (g, group) in groups.into_iter().enumerate() {
        if g == 2 && !rep.errors.is_empty() {
            rep.errors
                .push("named manifests and snapshots not copied because objects they may need failed to copy".into());
            break;
        }
        let mut jobs = Vec::new();
        for key in group {
            let size = match src.head(key) {
                Ok(Some(s)) => s,
                Ok(None) => {
                    rep.present += 1; // gone at the source since: nothing to copy
                    continue;
                }
                Err(e) => {
                    rep.errors.push(e.to_string());
                    continue;
                }
            };
            if g == 0 && !packs.contains_key(&pack_id(key).unwrap_or(Id([0; 32]))) {
                rep.unindexed_skipped += 1;
                continue;
            }
            match dst.head(key) {
                // A name already there is compared, not trusted by its size: the same segment
                // name with other content is a conflict to report (two manifests of one
                // segment size are the same size whatever they say).
                Ok(Some(s)) if s == size && !key.starts_with("named/") => rep.present += 1,
                Ok(p) => jobs.push(Job {
                    key: key.clone(),
                    size,
                    present: p.is_some(),
                }),
                Err(e) => rep.errors.push(e.to_string()),
            }
        }
        run_jobs(jobs, 4, |job| {
            copy_one(
                repo.keys(),
                src.as_ref(),
                dst.as_ref(),
                &job,
                &packs,
                Existing::TrustSize,
                &progress,
            )
        })
        .into_iter()
        .for_each(|r| rep.count(r));
    }
    rep.duration_secs = started.elapsed().as_secs_f64();
    rep
}

fn pack_id(key: &str) -> Option<Id> {
    key.strip_prefix("data/")?.rsplit('/').next().and_then(Id::from_hex)
}

enum Outcome {
    Copied(u64),
    Replaced(u64),
    Intact,
}

impl ReplicateReport {
    /// Adds one copy job's outcome to the totals.
    fn count(&mut self, r: std::result::Result<Outcome, String>) {
        match r {
            Ok(Outcome::Copied(n)) => {
                self.copied += 1;
                self.bytes += n;
            }
            Ok(Outcome::Replaced(n)) => {
                self.replaced += 1;
                self.bytes += n;
            }
            Ok(Outcome::Intact) => self.present += 1,
            Err(e) => self.errors.push(e),
        }
    }
}

/// Runs `f` over `jobs` on `n` threads; results in no particular order.
fn run_jobs<J: Send, R: Send>(jobs: Vec<J>, n: usize, f: impl Fn(J) -> R + Sync) -> Vec<R> {
    let queue = Mutex::new(jobs.into_iter());
    let out = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..n.max(1) {
            s.spawn(|| {
                loop {
                    let next = queue.lock().unwrap_or_else(|e| e.into_inner()).next();
                    let Some(j) = next else { break };
                    let r = f(j);
                    out.lock().unwrap_or_else(|e| e.into_inner()).push(r);
                }
            });
        }
    });
    out.into_inner().unwrap_or_else(|e| e.into_inner())
}

const PART: u64 = 8 << 20;

/// Hashes an object by streaming it in parts.
fn hash_object(b: &dyn Backend, key: &str, size: u64) -> std::result::Result<Id, BackendError> {
    let mut h = blake3::Hasher::new();
    let mut pos = 0;
    while pos < size {
        let end = (pos + PART).min(size);
        h.update(&b.get_range(key, pos..end)?);
        pos = end;
    }
    Ok(Id(*h.finalize().as_bytes()))
}

#[allow(clippy::too_many_arguments)]
fn copy_one(
    keys: &crate::crypto::Keys,
    src: &dyn Backend,
    dst: &dyn Backend,
    job: &Job,
    packs: &IdMap<(u64, Id)>,
    existing: Existing,
    progress: &ReplicateProgress,
) -> std::result::Result<Outcome, String> {
    let key = job.key.as_str();
    let fail = |what: &str| format!("{key}: {what}");
    // The hash the object must have, wherever it is read.
    let expected: Option<(u64, Id)> = match pack_id(key) {
        Some(id) => packs.get(&id).copied(),
        None => crate::backend::fallback_hash_named(key).map(|id| (job.size, id)),
    };
    if job.present && existing == Existing::Verify {
        let intact = match expected {
            Some((size, h)) => {
                dst.head(key).ok().flatten() == Some(size) && hash_object(dst, key, size).ok() == Some(h)
            }
            None => dst.get(key).ok() == src.get(key).ok(),
        };
        if intact {
            return Ok(Outcome::Intact);
        }
    }
    let n = if key.starts_with("data/") {
        let (size, hash) = expected.ok_or_else(|| fail("not in the index"))?;
        if job.size != size {
            return Err(fail(&format!(
                "damaged at {}: {} bytes where the index says {size}",
                src.location(),
                job.size
            )));
        }
        let mut up = dst.upload(key).map_err(|e| e.to_string())?;
        let mut h = blake3::Hasher::new();
        let mut pos = 0;
        while pos < size {
            let end = (pos + PART).min(size);
            let part = match src.get_range(key, pos..end) {
                Ok(p) => p,
                Err(e) => {
                    up.abort();
                    return Err(e.to_string());
                }
            };
            h.update(&part);
            if let Err(e) = up.write(&part) {
                up.abort();
                return Err(e.to_string());
            }
            pos = end;
        }
        if Id(*h.finalize().as_bytes()) != hash {
            up.abort();
            return Err(fail(&format!(
                "damaged at {}: content does not match the index (not copied; repair the source from another location)",
                src.location()
            )));
        }
        up.finish().map_err(|e| e.to_string())?;
        size
    } else {
        let data = src.get(key).map_err(|e| e.to_string())?;
        if let Some((_, h)) = expected
            && Id::hash_of(&data) != h
        {
            return Err(fail(&format!(
                "damaged at {}: content does not match its name",
                src.location()
            )));
        }
        let n = data.len() as u64;
        if key.starts_with("named/") {
            // A name is stored once: never replace what a location already holds under it.
            match dst.put(key, data.clone(), PutMode::Create) {
                Ok(()) => {}
                Err(e) if e.kind == crate::backend::BackendErrorKind::AlreadyExists => {
                    let theirs = dst.get(key).map_err(|e| e.to_string())?;
                    if crate::named::same_sealed_manifest(keys, key, &data, &theirs) == Some(false) {
                        return Err(fail(&format!(
                            "{} already holds a different stream under this name (a conflict; nothing was overwritten)",
                            dst.location()
                        )));
                    }
                    return Ok(Outcome::Intact);
                }
                Err(e) => return Err(e.to_string()),
            }
        } else {
            dst.put(key, data, PutMode::Overwrite).map_err(|e| e.to_string())?;
        }
        n
    };
    progress.objects.fetch_add(1, Ordering::Relaxed);
    progress.bytes.fetch_add(n, Ordering::Relaxed);
    Ok(if job.present {
        Outcome::Replaced(n)
    } else {
        Outcome::Copied(n)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::ObjectStoreBackend;
    use crate::crypto::KdfParams;
    use crate::{InitOptions, archiver};

    fn repo_with_a_backup() -> (Repository, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::create_dir(&src).unwrap();
        let mut x: u64 = 7;
        let data: Vec<u8> = (0..300_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        std::fs::write(src.join("a.bin"), &data).unwrap();
        std::fs::write(src.join("b.txt"), b"hello").unwrap();
        let b: Arc<dyn Backend> = Arc::new(ObjectStoreBackend::memory());
        let opts = InitOptions {
            kdf: KdfParams::TESTING,
            ..Default::default()
        };
        let repo = Repository::init(b, b"pw", &opts).unwrap();
        let bo = archiver::BackupOptions {
            paths: vec![src],
            ..Default::default()
        };
        archiver::backup(&repo, &bo, &Default::default()).unwrap();
        (repo, dir)
    }

    #[test]
    fn copies_everything_once_and_resumes() {
        let (repo, _d) = repo_with_a_backup();
        let src = repo.backend().clone();
        let dst: Arc<dyn Backend> = Arc::new(ObjectStoreBackend::memory());
        let p = ReplicateProgress::default();
        let r = replicate(&repo, &src, &dst, &ReplicateOptions::default(), &p).unwrap();
        assert!(r.ok(), "{:?}", r.errors);
        assert!(r.copied >= 5, "{r:?}");
        assert_eq!(object_names(dst.as_ref()).unwrap(), object_names(src.as_ref()).unwrap());
        let again = replicate(&repo, &src, &dst, &ReplicateOptions::default(), &p).unwrap();
        assert_eq!(again.copied, 0);
        // The copy opens and lists the same snapshot.
        assert_eq!(repo.at(dst).list_snapshots().unwrap().len(), 1);
    }

    /// Archived WAL (named manifests) travels with replication, after its data, and a name a
    /// location already holds is never replaced.
    #[test]
    fn named_manifests_are_replicated_and_never_replaced() {
        let (repo, _d) = repo_with_a_backup();
        crate::named::put(&repo, "wal-1", "a", &mut vec![7u8; 100_000].as_slice(), None).unwrap();
        let src = repo.backend().clone();
        let dst: Arc<dyn Backend> = Arc::new(ObjectStoreBackend::memory());
        let r = replicate(&repo, &src, &dst, &ReplicateOptions::default(), &Default::default()).unwrap();
        assert!(r.ok(), "{:?}", r.errors);
        let at_dst = repo.at(dst.clone());
        let m = crate::named::read_manifest(&at_dst, "wal-1", "a").unwrap().unwrap();
        let mut out = Vec::new();
        crate::named::read_to(&at_dst, &at_dst.load_index_for_reading().unwrap(), &m, &mut out).unwrap();
        assert_eq!(out, vec![7u8; 100_000]);
        // A different manifest under the name at the destination stays.
        dst.put("named/wal-1/a", b"theirs".to_vec(), PutMode::Overwrite)
            .unwrap();
        let opts = ReplicateOptions {
            existing: Existing::Verify,
            ..Default::default()
        };
        replicate(&repo, &src, &dst, &opts, &Default::default()).unwrap();
        assert_eq!(dst.get("named/wal-1/a").unwrap(), b"theirs");
    }

    #[test]
    fn a_damaged_source_pack_is_not_copied_and_holds_back_the_snapshots() {
        let (repo, _d) = repo_with_a_backup();
        let src = repo.backend().clone();
        let pack = src.list("data/").unwrap().remove(0);
        src.put(&pack.key, vec![0u8; pack.size as usize], PutMode::Overwrite)
            .unwrap();
        let dst: Arc<dyn Backend> = Arc::new(ObjectStoreBackend::memory());
        let r = replicate(&repo, &src, &dst, &ReplicateOptions::default(), &Default::default()).unwrap();
        assert!(!r.ok());
        assert!(
            r.errors.iter().any(|e| e.contains(&pack.key) && e.contains("damaged")),
            "{:?}",
            r.errors
        );
        assert!(
            dst.list("snapshots/").unwrap().is_empty(),
            "no snapshot without its data"
        );
        assert_eq!(dst.head(&pack.key).unwrap(), None);
    }

    #[test]
    fn deletion_records_are_replayed_and_never_undone() {
        let (repo, _d) = repo_with_a_backup();
        let src = repo.backend().clone();
        let dst: Arc<dyn Backend> = Arc::new(ObjectStoreBackend::memory());
        replicate(&repo, &src, &dst, &ReplicateOptions::default(), &Default::default()).unwrap();
        let snap = src.list("snapshots/").unwrap().remove(0).key;
        src.delete(&snap).unwrap();
        record_deletions(&repo, std::slice::from_ref(&snap)).unwrap();
        // Copying back from the lagging copy does not resurrect the snapshot…
        let back = replicate(
            &repo.at(dst.clone()),
            &dst,
            &src,
            &ReplicateOptions::default(),
            &Default::default(),
        )
        .unwrap();
        assert!(back.ok());
        assert_eq!(src.head(&snap).unwrap(), None);
        // …and replicating forward removes it from the lagging copy.
        let fwd = replicate(&repo, &src, &dst, &ReplicateOptions::default(), &Default::default()).unwrap();
        assert_eq!(fwd.deleted, 1);
        assert_eq!(dst.head(&snap).unwrap(), None);
    }
}
