//! `check`: is every snapshot restorable? Structure always; data when asked (all or a subset).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crate::error::Result;
use crate::format::index::PackRecord;
use crate::format::pack::{TRAILER_LEN, decode_header, decode_trailer};
use crate::format::tree::NodeKind;
use crate::id::Id;
use crate::index::{IdSet, Index};
use crate::repository::{Repository, pack_key};

/// How much pack data to read.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ReadData {
    /// Structure only: index, snapshots, trees, pack presence and sizes.
    None,
    /// Every pack.
    All,
    /// A random fraction of packs (0.0–1.0).
    Fraction(f64),
    /// Part `n` of `t` (1-based), chosen by pack id, so `1/7`…`7/7` over a week cover everything.
    Part(u32, u32),
}

/// Live counters for progress display.
#[derive(Debug, Default)]
pub struct CheckProgress {
    /// Packs read.
    pub packs_done: AtomicUsize,
    /// Packs to read.
    pub packs_total: AtomicUsize,
    /// Bytes read.
    pub bytes: AtomicU64,
    /// Total bytes to read.
    pub total_bytes: AtomicU64,
}

/// Files and trees hurt by damaged or missing data, per snapshot.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Affected {
    /// Snapshot id.
    pub snapshot: String,
    /// Its time.
    pub time: String,
    /// Affected paths (at most 100 listed).
    pub paths: Vec<String>,
    /// Number of affected paths.
    pub count: usize,
}

/// What `check` found.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct CheckReport {
    /// Snapshots checked.
    pub snapshots: usize,
    /// Index segments read.
    pub index_segments: usize,
    /// Packs in the index.
    pub packs: usize,
    /// Blobs in the index.
    pub blobs: usize,
    /// Packs whose data was read.
    pub packs_read: usize,
    /// Bytes read.
    pub bytes_read: u64,
    /// Problems that make some data unrestorable.
    pub errors: Vec<String>,
    /// Things worth knowing that lose nothing (garbage from interrupted backups…).
    pub warnings: Vec<String>,
    /// Packs found damaged or missing.
    pub damaged_packs: Vec<String>,
    /// What the damage affects.
    pub affected: Vec<Affected>,
    /// Wall time.
    pub duration_secs: f64,
}

impl CheckReport {
    /// True when no error was found.
    pub fn ok(&self) -> bool {
        self.errors.is_empty()
    }
}

/// Checks the repository.
pub fn check(repo: &Repository, read: ReadData, progress: &CheckProgress) -> Result<CheckReport> {
    let started = std::time::Instant::now();
    let mut rep = CheckReport::default();
    let backend = repo.backend();

    // 1. Index segments, each on its own so one bad segment doesn't hide the rest.
    let mut index = Index::default();
    for o in backend.list("index/")? {
        match repo.read_index_segment(&o.key) {
            Ok(packs) => {
                for p in &packs {
                    index.add_pack(p);
                }
                rep.index_segments += 1;
            }
            Err(e) => rep.errors.push(format!("index segment {}: {e}", o.key)),
        }
    }
    let live_packs: IdSet = index.packs().iter().map(|p| p.id).collect();
    match repo.load_marks() {
        Ok(marks) => {
            for (_, m) in marks {
                for p in &m.packs {
                    index.add_pack(p);
                }
            }
        }
        Err(e) => rep.errors.push(format!("marks: {e}")),
    }
    rep.packs = index.packs().len();
    rep.blobs = index.len();

    // 2. Packs present with the right size.
    let mut stored: HashMap<Id, u64> = HashMap::new();
    for o in backend.list("data/")? {
        if let Some(id) = o.key.rsplit('/').next().and_then(Id::from_hex) {
            stored.insert(id, o.size);
        }
    }
    let mut damaged: IdSet = IdSet::default();
    let mut gone_marked = 0usize;
    for p in index.packs() {
        match stored.get(&p.id) {
            // A marked pack already deleted (a prune stopped between deleting it and its mark):
            // nothing lost unless a snapshot needs it, which step 3 reports as a missing blob.
            None if !live_packs.contains(&p.id) => {
                gone_marked += 1;
                damaged.insert(p.id);
            }
            None => {
                rep.errors.push(format!("pack {} is missing", pack_key(&p.id)));
                damaged.insert(p.id);
            }
            Some(&s) if s != p.size => {
                rep.errors.push(format!(
                    "pack {} has {s} bytes, the index says {} (truncated or modified)",
                    pack_key(&p.id),
                    p.size
                ));
                damaged.insert(p.id);
            }
            _ => {}
        }
    }
    if gone_marked > 0 {
        rep.warnings.push(format!(
            "{gone_marked} pack(s) marked for deletion are already deleted; the next prune tidies the marks"
        ));
    }
    let unindexed = stored.keys().filter(|id| !index.has_pack(id)).count();
    if unindexed > 0 {
        rep.warnings.push(format!(
            "{unindexed} pack(s) are not in the index (left by interrupted or running backups); prune removes them once older than its grace period"
        ));
    }
    let marked = index.packs().iter().filter(|p| !live_packs.contains(&p.id)).count();
    if marked > 0 {
        rep.warnings
            .push(format!("{marked} pack(s) are marked for deletion by a previous prune"));
    }

    // 3. Snapshots and trees: every referenced blob must be indexed.
    let snapshots = match repo.list_snapshots_checked() {
        Ok((s, bad)) => {
            for e in bad {
                rep.errors.push(format!("snapshot manifest: {e}"));
            }
            s
        }
        Err(e) => {
            rep.errors.push(format!("snapshots: {e}"));
            Vec::new()
        }
    };
    rep.snapshots = snapshots.len();
    let mut seen_trees = IdSet::default();
    for (sid, s) in &snapshots {
        let mut stack = vec![(s.tree, "/".to_string())];
        while let Some((tid, at)) = stack.pop() {
            if !seen_trees.insert(tid) {
                continue;
            }
            let tree = match repo.read_tree(&index, &tid) {
                Ok(t) => t,
                Err(e) => {
                    rep.errors.push(format!("snapshot {} directory {at}: {e}", sid.short()));
                    continue;
                }
            };
            for n in &tree.nodes {
                let p = Path::new(&at).join(n.os_name()).display().to_string();
                match n.kind {
                    Some(NodeKind::Dir) => match n.subtree {
                        Some(st) => stack.push((st, p)),
                        None => rep
                            .errors
                            .push(format!("snapshot {} directory {p} has no tree", sid.short())),
                    },
                    Some(NodeKind::File) => {
                        let sum: u64 = n
                            .content
                            .iter()
                            .filter_map(|b| index.get(b))
                            .map(|l| u64::from(l.raw_len))
                            .sum();
                        if n.content.iter().all(|b| index.contains(b)) && sum != n.size {
                            rep.errors.push(format!(
                                "snapshot {} file {p}: its chunks add up to {sum} bytes, the snapshot says {}",
                                sid.short(),
                                n.size
                            ));
                        }
                        for b in &n.content {
                            let present = index
                                .get(b)
                                .is_some_and(|l| stored.contains_key(&index.pack(l.pack).id));
                            if !present {
                                rep.errors.push(format!(
                                    "snapshot {} file {p}: blob {} is missing",
                                    sid.short(),
                                    b.short()
                                ));
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
    }

    // 3b. Named manifests (WAL segments…): every blob indexed, lengths adding up.
    match crate::named::all_manifests(repo) {
        Ok((named, bad)) => {
            for e in bad {
                rep.errors.push(format!("named manifest: {e}"));
            }
            for m in &named {
                let what = crate::named::named_key(&m.namespace, &m.name);
                let missing = m.content.iter().filter(|b| {
                    !index
                        .get(b)
                        .is_some_and(|l| stored.contains_key(&index.pack(l.pack).id))
                });
                if let Some(b) = missing.into_iter().next() {
                    rep.errors.push(format!("{what}: blob {} is missing", b.short()));
                    continue;
                }
                let sum: u64 = m
                    .content
                    .iter()
                    .filter_map(|b| index.get(b))
                    .map(|l| u64::from(l.raw_len))
                    .sum();
                if sum != m.size {
                    rep.errors.push(format!(
                        "{what}: its chunks add up to {sum} bytes, the manifest says {}",
                        m.size
                    ));
                }
            }
        }
        Err(e) => rep.errors.push(format!("named manifests: {e}")),
    }

    // 4. Data.
    let mut chosen: Vec<PackRecord> = index
        .pack_records()
        .into_iter()
        .filter(|p| !damaged.contains(&p.id))
        .filter(|p| match read {
            ReadData::None => false,
            ReadData::All | ReadData::Fraction(_) => true,
            ReadData::Part(n, t) => {
                let v = u32::from_le_bytes(p.id.0[..4].try_into().expect("4 bytes"));
                v % t == n - 1
            }
        })
        .collect();
    if let ReadData::Fraction(f) = read {
        // Exactly ceil(f × packs) packs, chosen at random: a small repository still gets read.
        let want = ((chosen.len() as f64) * f).ceil() as usize;
        let mut keyed: Vec<(u64, PackRecord)> = chosen
            .into_iter()
            .map(|p| {
                let mut b = [0u8; 8];
                crate::crypto::fill_random(&mut b);
                (u64::from_le_bytes(b), p)
            })
            .collect();
        keyed.sort_by_key(|(k, _)| *k);
        chosen = keyed.into_iter().take(want).map(|(_, p)| p).collect();
    }
    chosen.sort_by_key(|p| p.id);
    progress.packs_total.store(chosen.len(), Ordering::Relaxed);
    progress
        .total_bytes
        .store(chosen.iter().map(|p| p.size).sum(), Ordering::Relaxed);
    let bad_blobs = Mutex::new(IdSet::default());
    let errors = Mutex::new(Vec::<(Id, String)>::new());
    let next = AtomicUsize::new(0);
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(p) = chosen.get(i) else { break };
                    if let Err((msg, blobs)) = verify_pack(repo, p, progress) {
                        errors.lock().expect("lock").push((p.id, msg));
                        bad_blobs.lock().expect("lock").extend(blobs);
                    }
                    progress.packs_done.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
    });
    rep.packs_read = chosen.len();
    rep.bytes_read = progress.bytes.load(Ordering::Relaxed);
    let mut errors = errors.into_inner().expect("lock");
    errors.sort();
    let mut bad_blobs = bad_blobs.into_inner().expect("lock");
    // Packs missing or truncated: every blob in them is lost. Packs that were read: only the
    // blobs that failed their own check are.
    for (id, loc) in index.iter() {
        if damaged.contains(&index.pack(loc.pack).id) && live_packs.contains(&index.pack(loc.pack).id) {
            bad_blobs.insert(*id);
        }
    }
    for (id, msg) in errors {
        rep.errors.push(msg);
        damaged.insert(id);
    }
    damaged.retain(|id| live_packs.contains(id) || stored.contains_key(id));
    rep.damaged_packs = damaged.iter().map(pack_key).collect();
    rep.damaged_packs.sort();
    if !bad_blobs.is_empty() {
        rep.affected = affected(repo, &index, &snapshots, &bad_blobs);
    }
    rep.duration_secs = started.elapsed().as_secs_f64();
    Ok(rep)
}

/// Reads a pack range by range, verifying every blob and the whole-pack hash.
/// On failure returns the message and the blobs that failed.
/// Reads a pack in large pieces, checks its hash and opens every blob where it lies.
fn verify_pack(
    repo: &Repository,
    p: &PackRecord,
    progress: &CheckProgress,
) -> std::result::Result<(), (String, Vec<Id>)> {
    let key = pack_key(&p.id);
    let backend = repo.backend();
    let mut hasher = blake3::Hasher::new();
    let mut buf = Vec::new();
    let mut plain = Vec::new();
    let mut bad = Vec::new();
    let mut first_err: Option<String> = None;
    let mut pos = 0u64;
    let mut i = 0;
    let entries = &p.entries;
    while i < entries.len() {
        // Group consecutive blobs into reads of about 4 MiB.
        let start = u64::from(entries[i].offset);
        let mut j = i;
        let mut end = start;
        while j < entries.len() && (j == i || end - start < 4 << 20) && u64::from(entries[j].offset) == end {
            end += u64::from(entries[j].length);
            j += 1;
        }
        if start < pos {
            return Err((
                format!("damaged object {key}: the index lists overlapping blobs"),
                entries.iter().map(|e| e.id).collect(),
            ));
        }
        if start != pos {
            // A gap the index doesn't describe: hash it too so the pack hash still checks.
            match backend.get_range(&key, pos..start) {
                Ok(b) => hasher.update(&b),
                Err(e) => return Err((format!("pack {key}: {e}"), entries.iter().map(|e| e.id).collect())),
            };
        }
        if let Err(e) = backend.get_range_into(&key, start..end, &mut buf) {
            return Err((format!("pack {key}: {e}"), entries.iter().map(|e| e.id).collect()));
        }
        hasher.update(&buf);
        progress.bytes.fetch_add(buf.len() as u64, Ordering::Relaxed);
        for e in &entries[i..j] {
            // Opened where it lies in the read (the pack hash above already covers these bytes).
            let off = (u64::from(e.offset) - start) as usize;
            let sealed = &mut buf[off..off + e.length as usize];
            if let Err(err) = repo.open_blob_slice(&key, &e.id, e.blob_type, e.raw_len, sealed, &mut plain) {
                bad.push(e.id);
                first_err.get_or_insert_with(|| err.to_string());
            }
            if plain.capacity() > 2 << 20 {
                plain = Vec::new();
            }
        }
        if buf.capacity() > 4 << 20 {
            buf = Vec::new();
        }
        pos = end;
        i = j;
    }
    // The tail: header and trailer.
    if pos < p.size {
        match backend.get_range(&key, pos..p.size) {
            Ok(tail) => {
                hasher.update(&tail);
                let ok = tail.len() >= TRAILER_LEN
                    && decode_trailer(&tail[tail.len() - TRAILER_LEN..], &key)
                        .ok()
                        .filter(|&n| n as usize + TRAILER_LEN <= tail.len())
                        .and_then(|n| {
                            let h = &tail[tail.len() - TRAILER_LEN - n as usize..tail.len() - TRAILER_LEN];
                            decode_header(repo.keys(), &p.id, h, p.size, &key).ok()
                        })
                        .is_some_and(|h| h.len() >= entries.len());
                if !ok {
                    first_err.get_or_insert_with(|| format!("damaged object {key}: pack header unreadable"));
                }
            }
            Err(e) => {
                first_err.get_or_insert_with(|| format!("pack {key}: {e}"));
            }
        }
    }
    if Id(*hasher.finalize().as_bytes()) != p.hash && first_err.is_none() {
        first_err = Some(format!("damaged object {key}: pack hash does not match the index"));
    }
    match first_err {
        None => Ok(()),
        Some(m) => Err((
            if bad.is_empty() {
                m
            } else {
                format!("{m} ({} damaged blob(s))", bad.len())
            },
            bad,
        )),
    }
}

fn affected(
    repo: &Repository,
    index: &Index,
    snapshots: &[(Id, crate::format::snapshot::Snapshot)],
    bad: &IdSet,
) -> Vec<Affected> {
    fn go(
        repo: &Repository,
        index: &Index,
        tree: &Id,
        at: &Path,
        bad: &IdSet,
        paths: &mut Vec<String>,
        count: &mut usize,
    ) {
        let Ok(t) = repo.read_tree(index, tree) else { return };
        for n in &t.nodes {
            let p = at.join(n.os_name());
            let bad_subtree = n.subtree.is_some_and(|t| bad.contains(&t));
            if n.content.iter().any(|b| bad.contains(b)) || bad_subtree {
                *count += 1;
                if paths.len() < 100 {
                    paths.push(p.display().to_string() + if bad_subtree { "/ (directory listing)" } else { "" });
                }
            }
            if let (Some(st), false) = (n.subtree, bad_subtree) {
                go(repo, index, &st, &p, bad, paths, count);
            }
        }
    }
    let mut out = Vec::new();
    for (sid, s) in snapshots {
        let mut paths = Vec::new();
        let mut count = 0usize;
        if bad.contains(&s.tree) {
            count += 1;
            paths.push("/ (root directory listing)".to_string());
        } else {
            go(repo, index, &s.tree, Path::new("/"), bad, &mut paths, &mut count);
        }
        if count > 0 {
            out.push(Affected {
                snapshot: sid.to_hex(),
                time: s.time.to_string(),
                paths,
                count,
            });
        }
    }
    out
}
