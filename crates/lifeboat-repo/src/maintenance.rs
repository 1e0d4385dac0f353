//! Forget, prune and index repair.
//!
//! Prune is safe against backups running at the same time without any lock on them: it never
//! deletes a pack the moment it looks unused. It *marks* it (a `marks/` object holding the pack's
//! index entries) and drops it from the index; a later prune, once the grace period has passed,
//! deletes it only if no snapshot then present needs a blob that lives nowhere else, and otherwise
//! puts it back. Packs nobody indexed (an interrupted or still-running backup) are deleted only
//! once older than the grace period. Prunes exclude each other with a lease object.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::backend::{BackendErrorKind, PutMode};
use crate::error::{RepoError, Result};
use crate::format::index::PackRecord;
use crate::format::pack::{TRAILER_LEN, decode_header, decode_trailer};
use crate::format::sealed::{self, Kind};
use crate::format::tree::NodeKind;
use crate::id::Id;
use crate::index::{IdSet, Index};
use crate::packer::Packer;
use crate::repository::{Marks, Repository, pack_key};
use crate::retention::{self, Candidate, Decision, RetentionPolicy};

type SnapshotEntry = (Id, crate::format::snapshot::Snapshot);

/// Snapshots forgotten or kept for one group (host, source kind and paths).
#[derive(Debug, Clone, serde::Serialize)]
pub struct ForgetGroup {
    /// Host of the group.
    pub host: String,
    /// `source_kind` of the group: a logical and a physical backup of the same database share
    /// host and paths (the URL), yet neither may count towards the other's retention.
    pub kind: String,
    /// Paths of the group.
    pub paths: Vec<String>,
    /// One decision per snapshot, newest first.
    pub decisions: Vec<Decision>,
}

/// Applies a retention policy per (host, source kind, paths) group; deletes the manifests of snapshots not
/// kept unless `dry_run`. Refuses an empty policy (it would mean "forget everything").
pub fn forget(repo: &Repository, policy: &RetentionPolicy, dry_run: bool) -> Result<Vec<ForgetGroup>> {
    if policy.is_empty() {
        return Err(RepoError::Invalid(
            "refusing to forget with an empty retention policy (give at least one --keep-* option)".into(),
        ));
    }
    if !dry_run && repo.backend().is_append_only() {
        return Err(RepoError::AppendOnly {
            location: repo.backend().location().into(),
            what: "forget".into(),
        });
    }
    let snaps = repo.list_snapshots()?;
    let mut groups: BTreeMap<(String, String, Vec<String>), Vec<SnapshotEntry>> = BTreeMap::new();
    for (id, s) in snaps {
        groups
            .entry((s.host.clone(), s.source_kind.clone(), s.paths.clone()))
            .or_default()
            .push((id, s));
    }
    let now = jiff::Timestamp::now();
    let tz = jiff::tz::TimeZone::system();
    let mut out = Vec::new();
    for ((host, kind, paths), members) in groups {
        let ids: Vec<String> = members.iter().map(|(id, _)| id.to_hex()).collect();
        let cands: Vec<Candidate<'_>> = members
            .iter()
            .zip(&ids)
            .map(|((_, s), id)| Candidate {
                id,
                time: s.time,
                tags: &s.tags,
            })
            .collect();
        let decisions = retention::apply(policy, &cands, now, &tz);
        if !dry_run {
            for d in decisions.iter().filter(|d| !d.keep) {
                if let Some(id) = Id::from_hex(&d.id) {
                    repo.delete_snapshot(&id)?;
                    crate::attestation::delete_for(repo, &id)?;
                }
            }
        }
        out.push(ForgetGroup {
            host,
            kind,
            paths,
            decisions,
        });
    }
    Ok(out)
}

/// Prune settings.
#[derive(Clone, Debug)]
pub struct PruneOptions {
    /// How long a pack stays marked (or unindexed) before it may be deleted.
    pub grace: Duration,
    /// Repack a pack when at least this share of its bytes is unused.
    pub repack_threshold: f64,
    /// Report only.
    pub dry_run: bool,
    /// Lease lifetime.
    pub lease_ttl: Duration,
    /// `None`: the location honours put-if-absent, the lease is taken atomically. `Some(d)`: it
    /// does not (see [`crate::locations::probe_conditional_writes`]); the lease is written, then
    /// re-read after `d` to see whether another prune overwrote it. That only narrows the race,
    /// so callers should also make sure no other prune can run.
    pub lease_settle: Option<Duration>,
}

impl Default for PruneOptions {
    fn default() -> Self {
        PruneOptions {
            grace: Duration::from_secs(24 * 3600),
            repack_threshold: 0.25,
            dry_run: false,
            lease_ttl: Duration::from_secs(6 * 3600),
            lease_settle: None,
        }
    }
}

/// What prune did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct PruneReport {
    /// Snapshots considered.
    pub snapshots: usize,
    /// Packs newly marked for deletion.
    pub packs_marked: usize,
    /// Bytes in newly marked packs.
    pub bytes_marked: u64,
    /// Packs deleted (marked by an earlier prune, grace period over).
    pub packs_deleted: usize,
    /// Bytes freed now.
    pub bytes_freed: u64,
    /// Marked packs put back because a snapshot needs them.
    pub packs_restored: usize,
    /// Partly used packs rewritten.
    pub packs_repacked: usize,
    /// Unindexed packs (from interrupted backups) deleted.
    pub garbage_deleted: usize,
    /// Unindexed packs too young to delete (maybe a running backup).
    pub garbage_waiting: usize,
    /// Packs still waiting for their grace period.
    pub packs_waiting: usize,
    /// Nothing was changed.
    pub dry_run: bool,
    /// Wall time.
    pub duration_secs: f64,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct LeaseBody {
    holder: Id,
    host: String,
    pid: u32,
    acquired: jiff::Timestamp,
    expires: jiff::Timestamp,
}

/// The prune lease; released on drop.
pub struct Lease<'r> {
    repo: &'r Repository,
    holder: Id,
    ttl: Duration,
}

const LEASE: &str = "locks/prune";

impl<'r> Lease<'r> {
    /// Takes the lease, or fails with [`RepoError::LeaseHeld`]. An expired lease is taken over.
    pub fn acquire(repo: &'r Repository, ttl: Duration) -> Result<Lease<'r>> {
        Self::acquire_with(repo, ttl, None)
    }

    fn current(repo: &Repository) -> Result<Option<LeaseBody>> {
        match repo.backend().get(LEASE) {
            Ok(raw) => {
                let body = sealed::open(repo.keys(), Kind::Lease, &raw, LEASE)?;
                Ok(Some(
                    serde_json::from_slice(&body).map_err(|e| RepoError::damaged(LEASE, e.to_string()))?,
                ))
            }
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Takes the lease; with `settle`, on a store without put-if-absent (see
    /// [`PruneOptions::lease_settle`]).
    pub fn acquire_with(repo: &'r Repository, ttl: Duration, settle: Option<Duration>) -> Result<Lease<'r>> {
        if repo.backend().is_append_only() {
            return Err(RepoError::AppendOnly {
                location: repo.backend().location().into(),
                what: "prune".into(),
            });
        }
        let lease = Lease {
            repo,
            holder: Id::random(),
            ttl,
        };
        if let Some(settle) = settle {
            let held = |cur: LeaseBody| RepoError::LeaseHeld {
                holder: cur.holder.short(),
                host: cur.host,
                expires: cur.expires.to_string(),
            };
            if let Some(cur) = Self::current(repo)?
                && cur.expires > jiff::Timestamp::now()
            {
                return Err(held(cur));
            }
            repo.backend().put(LEASE, lease.body(), PutMode::Overwrite)?;
            std::thread::sleep(settle);
            return match Self::current(repo)? {
                Some(cur) if cur.holder == lease.holder => Ok(lease),
                Some(cur) => {
                    drop(lease);
                    Err(held(cur))
                }
                None => Err(RepoError::Invalid(
                    "the prune lease vanished while it settled (another prune?)".into(),
                )),
            };
        }
        for _ in 0..2 {
            match repo.backend().put(LEASE, lease.body(), PutMode::Create) {
                Ok(()) => return Ok(lease),
                Err(e) if e.kind == BackendErrorKind::AlreadyExists => {
                    let raw = repo.backend().get(LEASE)?;
                    let body = sealed::open(repo.keys(), Kind::Lease, &raw, LEASE)?;
                    let cur: LeaseBody =
                        serde_json::from_slice(&body).map_err(|e| RepoError::damaged(LEASE, e.to_string()))?;
                    if cur.expires > jiff::Timestamp::now() {
                        return Err(RepoError::LeaseHeld {
                            holder: cur.holder.short(),
                            host: cur.host,
                            expires: cur.expires.to_string(),
                        });
                    }
                    // Expired: remove it and race for it once more.
                    repo.backend().delete(LEASE)?;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(RepoError::Invalid(
            "could not take the prune lease (another prune raced for it)".into(),
        ))
    }

    fn body(&self) -> Vec<u8> {
        let now = jiff::Timestamp::now();
        let b = LeaseBody {
            holder: self.holder,
            host: crate::repository::hostname(),
            pid: std::process::id(),
            acquired: now,
            expires: now + jiff::SignedDuration::try_from(self.ttl).unwrap_or(jiff::SignedDuration::from_hours(6)),
        };
        sealed::seal(
            self.repo.keys(),
            Kind::Lease,
            &serde_json::to_vec(&b).expect("lease serializes"),
        )
    }

    fn still_ours(&self) -> bool {
        self.repo
            .backend()
            .get(LEASE)
            .ok()
            .and_then(|raw| sealed::open(self.repo.keys(), Kind::Lease, &raw, LEASE).ok())
            .and_then(|b| serde_json::from_slice::<LeaseBody>(&b).ok())
            .is_some_and(|b| b.holder == self.holder)
    }

    /// Extends the lease; fails if another prune took it over meanwhile.
    pub fn renew(&self) -> Result<()> {
        if !self.still_ours() {
            return Err(RepoError::Invalid(
                "the prune lease was lost to another prune; stopping".into(),
            ));
        }
        Ok(self.repo.backend().put(LEASE, self.body(), PutMode::Overwrite)?)
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if self.still_ours() {
            let _ = self.repo.backend().delete(LEASE);
        }
    }
}

/// Every blob some snapshot or named manifest needs.
fn used_blobs(repo: &Repository, index: &Index) -> Result<(IdSet, usize)> {
    let (snaps, unreadable) = repo.list_snapshots_checked()?;
    if let Some(e) = unreadable.into_iter().next() {
        // A manifest we cannot read (damaged, or written by a newer lifeboat) still protects its
        // data: never prune on an incomplete picture.
        return Err(RepoError::Invalid(format!(
            "prune refused: a snapshot manifest cannot be read ({e}); run `lifeboat check`"
        )));
    }
    let (named, bad_named) = crate::named::all_manifests(repo)?;
    if let Some(e) = bad_named.into_iter().next() {
        return Err(RepoError::Invalid(format!(
            "prune refused: a named manifest cannot be read ({e}); run `lifeboat check`"
        )));
    }
    let mut used = IdSet::default();
    for m in named {
        used.extend(m.content);
    }
    for (_, s) in &snaps {
        let mut stack = vec![s.tree];
        while let Some(t) = stack.pop() {
            if !used.insert(t) {
                continue;
            }
            let tree = repo.read_tree(index, &t)?;
            for n in tree.nodes {
                match n.kind {
                    Some(NodeKind::Dir) => stack.extend(n.subtree),
                    Some(NodeKind::File) => used.extend(n.content),
                    _ => {}
                }
            }
        }
    }
    Ok((used, snaps.len()))
}

/// Removes unused data in two phases (see the module docs).
pub fn prune(repo: &Repository, opts: &PruneOptions) -> Result<PruneReport> {
    let started = std::time::Instant::now();
    let _lease = if opts.dry_run {
        None
    } else {
        Some(Lease::acquire_with(repo, opts.lease_ttl, opts.lease_settle)?)
    };
    let mut rep = PruneReport {
        dry_run: opts.dry_run,
        ..Default::default()
    };
    let now = jiff::Timestamp::now();
    let grace = jiff::SignedDuration::try_from(opts.grace).unwrap_or(jiff::SignedDuration::from_hours(24));

    let live = repo.load_index()?;
    let marks = repo.load_marks()?;
    // Reading view: live packs plus marked ones, so trees in marked packs can still be walked.
    let mut view = Index::default();
    for p in live.pack_records() {
        view.add_pack(&p);
    }
    for (_, m) in &marks {
        for p in &m.packs {
            view.add_pack(p);
        }
    }
    let (used, nsnaps) = used_blobs(repo, &view)?;
    rep.snapshots = nsnaps;
    if !opts.dry_run {
        // Every manifest was readable (used_blobs refuses otherwise), so this set is complete.
        let existing = repo.list_snapshots()?.into_iter().map(|(id, _)| id).collect();
        crate::attestation::delete_orphans(repo, &existing)?;
    }

    // Phase 2: marks from earlier prunes.
    let mut restored: Vec<PackRecord> = Vec::new();
    let mut to_delete: Vec<(Id, u64)> = Vec::new();
    let mut marks_done: Vec<String> = Vec::new();
    // A pack can sit in several marks (a prune stopped halfway, then re-marked it): its clock
    // starts at its newest mark.
    let mut newest_mark: crate::index::IdMap<jiff::Timestamp> = Default::default();
    for (_, m) in &marks {
        for p in &m.packs {
            let t = newest_mark.entry(p.id).or_insert(m.time);
            *t = (*t).max(m.time);
        }
    }
    let mut deleting = IdSet::default();
    for (key, m) in &marks {
        let mut all_settled = true;
        for p in &m.packs {
            let expired = now.duration_since(newest_mark[&p.id]) >= grace;
            if live.has_pack(&p.id) {
                continue; // a crash left it in the index too; the index wins
            }
            let needed = p.entries.iter().any(|e| used.contains(&e.id) && !live.contains(&e.id));
            if needed {
                restored.push(p.clone());
                rep.packs_restored += 1;
            } else if expired {
                if deleting.insert(p.id) {
                    to_delete.push((p.id, p.size));
                }
            } else {
                all_settled = false;
                rep.packs_waiting += 1;
            }
        }
        if all_settled {
            marks_done.push(key.clone());
        }
    }

    // Phase 1: classify live packs.
    let records = live.pack_records();
    let mut keep: Vec<PackRecord> = Vec::new();
    let mut mark: Vec<PackRecord> = Vec::new();
    let mut repack: Vec<PackRecord> = Vec::new();
    for p in records {
        let used_bytes: u64 = p
            .entries
            .iter()
            .filter(|e| used.contains(&e.id))
            .map(|e| u64::from(e.length))
            .sum();
        let total: u64 = p.entries.iter().map(|e| u64::from(e.length)).sum();
        if used_bytes == 0 {
            rep.bytes_marked += p.size;
            mark.push(p);
        } else if total > 0 && (total - used_bytes) as f64 / total as f64 >= opts.repack_threshold {
            repack.push(p);
        } else {
            keep.push(p);
        }
    }
    rep.packs_marked = mark.len();
    rep.packs_repacked = repack.len();

    // Unindexed packs: garbage of interrupted backups, or packs of a backup still running.
    let mut known: IdSet = live.packs().iter().map(|p| p.id).collect();
    for (_, m) in &marks {
        known.extend(m.packs.iter().map(|p| p.id));
    }
    let mut garbage = Vec::new();
    for o in repo.backend().list("data/")? {
        let Some(id) = o.key.rsplit('/').next().and_then(Id::from_hex) else {
            continue;
        };
        if known.contains(&id) {
            continue;
        }
        if now.as_second() - o.modified >= grace.as_secs() {
            garbage.push(o.key.clone());
        } else {
            rep.garbage_waiting += 1;
        }
    }
    rep.garbage_deleted = garbage.len();

    if opts.dry_run {
        rep.packs_deleted = to_delete.len();
        rep.bytes_freed = to_delete.iter().map(|(_, s)| s).sum();
        rep.duration_secs = started.elapsed().as_secs_f64();
        return Ok(rep);
    }

    // Repack: copy the used blobs (verified) into new packs; the old packs get marked.
    let mut packer = Packer::new(repo);
    let mut copied = IdSet::default();
    for p in &repack {
        for e in &p.entries {
            if !used.contains(&e.id) || !copied.insert(e.id) {
                continue;
            }
            let loc = crate::index::Location {
                pack: 0,
                blob_type: e.blob_type,
                offset: e.offset,
                length: e.length,
                raw_len: e.raw_len,
            };
            let sealed_bytes = repo.read_sealed_blob(&p.id, &loc)?;
            repo.open_blob(&pack_key(&p.id), &e.id, e.blob_type, e.raw_len, &sealed_bytes)?;
            packer.add(e.blob_type, e.id, e.raw_len, &sealed_bytes)?;
        }
    }
    let new_packs = packer.flush()?;
    drop(packer);
    mark.extend(repack);
    if let Some(l) = &_lease {
        l.renew()?;
    }

    // Commit order: marks first (so nothing is ever unaccounted for), then the new index, then
    // removal of the segments it replaces, then deletions whose grace period is over.
    if !mark.is_empty() {
        let m = Marks {
            // The grace period starts when the marks exist, not when this prune started.
            time: jiff::Timestamp::now(),
            packs: mark.clone(),
        };
        repo.write_sealed("marks", Kind::Marks, &m.encode())?;
    }
    let changed = !mark.is_empty() || !restored.is_empty() || !new_packs.is_empty() || live.segments.len() > 16;
    if changed {
        let mut all: Vec<PackRecord> = keep;
        all.extend(restored);
        all.extend(new_packs);
        let mut written = Vec::new();
        for chunk in all.chunks(4096) {
            written.push(format!("index/{}", repo.write_index_segment(chunk)?));
        }
        // A rewritten segment identical to an old one has the same name: keep it.
        for s in &live.segments {
            if !written.contains(s) {
                repo.backend().delete(s)?;
            }
        }
    }
    for (id, size) in &to_delete {
        repo.backend().delete(&pack_key(id))?;
        rep.packs_deleted += 1;
        rep.bytes_freed += size;
    }
    for key in &marks_done {
        repo.backend().delete(key)?;
    }
    for key in &garbage {
        repo.backend().delete(key)?;
    }
    rep.duration_secs = started.elapsed().as_secs_f64();
    Ok(rep)
}

/// What `repair index` did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RepairReport {
    /// Packs read.
    pub packs: usize,
    /// Blobs indexed.
    pub blobs: usize,
    /// Packs whose header could not be read (left out, listed here).
    pub unreadable: Vec<String>,
    /// Old segments replaced.
    pub segments_replaced: usize,
}

/// Rebuilds the index from the packs' own headers, then replaces the old segments. Holds the
/// prune lease (a prune must not delete packs this puts back). If any pack cannot be read, the
/// old segments are kept (a pack left out of the index would later be deleted as garbage) unless
/// `force` is set.
pub fn repair_index(repo: &Repository, force: bool) -> Result<RepairReport> {
    let _lease = Lease::acquire(repo, PruneOptions::default().lease_ttl)?;
    let mut rep = RepairReport::default();
    let old: Vec<String> = repo.backend().list("index/")?.into_iter().map(|o| o.key).collect();
    let mut records = Vec::new();
    for o in repo.backend().list("data/")? {
        let Some(id) = o.key.rsplit('/').next().and_then(Id::from_hex) else {
            continue;
        };
        match read_pack_record(repo, &id, o.size) {
            Ok(r) => {
                rep.blobs += r.entries.len();
                records.push(r);
            }
            Err(e) => rep.unreadable.push(format!("{}: {e}", o.key)),
        }
        rep.packs += 1;
    }
    if !rep.unreadable.is_empty() && !force {
        return Err(RepoError::Invalid(format!(
            "repair index: {} pack(s) could not be read (first: {}); the old index was kept. Fix or remove them, or use --force to index without them",
            rep.unreadable.len(),
            rep.unreadable[0]
        )));
    }
    let mut written = Vec::new();
    for chunk in records.chunks(4096) {
        written.push(format!("index/{}", repo.write_index_segment(chunk)?));
    }
    for s in old {
        // A rewritten segment identical to an old one has the same name: keep it.
        if !written.contains(&s) {
            repo.backend().delete(&s)?;
            rep.segments_replaced += 1;
        }
    }
    Ok(rep)
}

/// Reads a pack's header and hashes the whole pack, streaming.
pub fn read_pack_record(repo: &Repository, id: &Id, size: u64) -> Result<PackRecord> {
    let key = pack_key(id);
    if size < TRAILER_LEN as u64 {
        return Err(RepoError::damaged(&key, "too short to be a pack"));
    }
    let b = repo.backend();
    let trailer = b.get_range(&key, size - TRAILER_LEN as u64..size)?;
    let hlen = u64::from(decode_trailer(&trailer, &key)?);
    if hlen + TRAILER_LEN as u64 > size {
        return Err(RepoError::damaged(&key, "pack header length exceeds the pack"));
    }
    let start = size - TRAILER_LEN as u64 - hlen;
    let header = b.get_range(&key, start..size - TRAILER_LEN as u64)?;
    let entries = decode_header(repo.keys(), id, &header, size, &key)?;
    let mut hasher = blake3::Hasher::new();
    let mut pos = 0;
    while pos < size {
        let end = (pos + (8 << 20)).min(size);
        hasher.update(&b.get_range(&key, pos..end)?);
        pos = end;
    }
    Ok(PackRecord {
        id: *id,
        size,
        hash: Id(*hasher.finalize().as_bytes()),
        entries,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::snapshot::{Snapshot, Summary};

    fn snapshot(kind: &str, minutes_ago: i64) -> Snapshot {
        Snapshot {
            version: 1,
            time: jiff::Timestamp::now() - jiff::SignedDuration::from_mins(minutes_ago),
            host: "db1".into(),
            user: "postgres".into(),
            paths: vec!["postgres://backup@db1/app".into()],
            tags: Vec::new(),
            parent: None,
            tree: Id::from_hex(&"00".repeat(32)).unwrap(),
            source_kind: kind.into(),
            unreadable: Vec::new(),
            summary: Summary::default(),
            program_version: "test".into(),
            source: None,
        }
    }

    /// A logical and a physical backup of one database share host and paths (its URL): each
    /// kind keeps its own newest snapshots, the newer logical ones never push out the physical.
    #[test]
    fn kinds_of_one_source_are_kept_apart() {
        let repo = crate::snapshot_writer::tests::test_repo();
        let physical = repo.write_snapshot(&snapshot("postgres-physical", 60)).unwrap();
        for m in [3, 2, 1] {
            repo.write_snapshot(&snapshot("postgres-logical", m)).unwrap();
        }
        let policy = RetentionPolicy {
            keep_last: Some(1),
            ..Default::default()
        };
        let groups = forget(&repo, &policy, false).unwrap();
        assert_eq!(groups.len(), 2, "{groups:?}");
        let left: Vec<Id> = repo.list_snapshots().unwrap().into_iter().map(|(id, _)| id).collect();
        assert_eq!(left.len(), 2);
        assert!(left.contains(&physical));
        let g = groups.iter().find(|g| g.kind == "postgres-physical").unwrap();
        assert!(g.decisions.iter().all(|d| d.keep));
    }
}
