//! Pushing ahead: a background pusher for a backlog of ready WAL segments.
//!
//! PostgreSQL's archiver runs `archive_command` once per segment and waits for it, so a backlog
//! (a bulk load, a burst of writes, an archive that was down) is worked off one process at a
//! time: each call pays the process start, and the calls themselves use one core. Like
//! pgBackRest's asynchronous archive-push, when `lifeboat wal push --background` finds at least
//! two segments marked `.ready` that are not stored yet, it starts one *pusher* in the
//! background and waits for its own segment's marker. The pusher stores every ready segment in name order, a few per
//! commit (packs, index segment, manifests; then the markers), until none is left, and exits.
//! Meanwhile the archiver's calls are answered by the markers as soon as their segment is
//! committed, so the calls' own cost overlaps with the pusher's hashing, compression and
//! encryption on every core.
//!
//! Guarantees are those of the synchronous push, because a waiting call returns success only
//! through the marker check ([`crate::wal::push_fast_path`]), and markers are written only after
//! the segment's manifest is durably stored, with the file's inode and times when it was read.
//! Whenever the pusher cannot prove a segment (it refused it as a conflict, it failed, or it
//! exited without reaching it) the waiting call stores that segment itself, synchronously, and
//! reports exactly what a synchronous push reports (a conflict: exit 15; the queue limit).
//!
//! One pusher at a time per spool: the starting call takes an exclusive `flock` on
//! `<spool>/pusher.lock` and hands that open file to the pusher as its standard input, so the
//! lock is held from before the pusher starts until it exits (or dies: the kernel drops the
//! lock). Waiting calls test it with a shared lock that they release at once.

use std::collections::HashSet;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use lifeboat_repo::Repository;
use lifeboat_repo::named::{PutOutcome, PutStatus};

use crate::error::{PgError, Result};
#[cfg(test)]
use crate::wal::store_and_mark;
use crate::wal::{Batch, PushReport, Spool, WalCompression, push_fast_path, ready_segments};

/// Segments in the pusher's first commit: small, so the call that started it returns soon.
pub const FIRST_COMMIT: usize = 2;

/// Segments per later commit (at most `--batch`): big enough to keep both cores busy between
/// commits, small enough that the archiver's calls are answered while the pusher works.
pub const COMMIT: usize = 8;

/// After a pusher failed, calls store their segment themselves for this long instead of
/// starting a new pusher that would fail the same way (an unreachable repository).
pub const FAILURE_BACKOFF: Duration = Duration::from_secs(60);

impl Spool {
    fn lock_path(&self) -> PathBuf {
        self.dir().join("pusher.lock")
    }

    fn refused(&self, name: &str) -> PathBuf {
        self.dir().join("refused").join(name)
    }

    /// Where the pusher's messages go (PostgreSQL's log only sees the waiting calls).
    pub fn pusher_log(&self) -> PathBuf {
        self.dir().join("pusher.log")
    }

    /// Written by a failed pusher (time and error); see [`FAILURE_BACKOFF`].
    pub fn pusher_error(&self) -> PathBuf {
        self.dir().join("pusher.error")
    }
}

/// Takes the pusher lock if no pusher holds it: `Some(file)` to hand to the new pusher.
pub fn try_lock_pusher(spool: &Spool) -> Result<Option<File>> {
    crate::worker_lock::try_take(&spool.lock_path())
}

/// True while a pusher holds the lock.
pub fn pusher_running(spool: &Spool) -> bool {
    crate::worker_lock::held(&spool.lock_path())
}

/// True when a pusher failed less than [`FAILURE_BACKOFF`] ago.
pub fn recently_failed(spool: &Spool) -> bool {
    std::fs::metadata(spool.pusher_error())
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|age| age < FAILURE_BACKOFF)
}

/// Ready segments in `wal_dir` (name order) that have no push marker yet.
pub fn unmarked_ready(wal_dir: &Path, spool: &Spool) -> Vec<String> {
    ready_segments(wal_dir, "", usize::MAX)
        .into_iter()
        .filter(|n| !spool.marker(n).exists())
        .collect()
}

/// True when `path` is marked `.ready` in its folder's `archive_status` (a pusher reaches it).
pub fn is_ready(path: &Path) -> bool {
    match (path.parent(), path.file_name()) {
        (Some(dir), Some(name)) => {
            let mut n = name.to_os_string();
            n.push(".ready");
            dir.join("archive_status").join(n).exists()
        }
        _ => false,
    }
}

/// What a pusher did.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct AheadReport {
    /// Segments stored (or found already stored) and marked.
    pub marked: usize,
    /// Segments refused as conflicts (the waiting call reports them).
    pub refused: Vec<String>,
    /// Commits (index segments) written.
    pub commits: usize,
    /// Bytes of WAL read.
    pub bytes: u64,
}

/// The pusher: stores every unmarked ready segment of `wal_dir`, [`FIRST_COMMIT`] then
/// `commit` per commit, until none is left. Each segment is tried once per run; one refused as
/// a conflict is left for its waiting call to report. Any other failure ends the run. A
/// commit's syncs run on their own thread while the next batch is read and compressed.
pub fn push_ahead(
    repo: &Repository,
    namespace: &str,
    spool: &Spool,
    wal_dir: &Path,
    commit: usize,
    compression: WalCompression,
) -> Result<AheadReport> {
    let mut rep = AheadReport::default();
    let mut tried: HashSet<String> = HashSet::new();
    std::thread::scope(|sc| {
        let mut in_flight: Option<std::thread::ScopedJoinHandle<'_, Result<Vec<PutOutcome>>>> = None;
        loop {
            let per = if tried.is_empty() { FIRST_COMMIT } else { commit }.max(1);
            let waiting: Vec<String> = unmarked_ready(wal_dir, spool)
                .into_iter()
                .filter(|n| !tried.contains(n))
                .collect();
            // The whole backlog decides the codec, not the (small) commit.
            let codec = compression.codec_for(waiting.len());
            let names: Vec<(String, PathBuf)> = waiting
                .into_iter()
                .take(per)
                .map(|n| {
                    let p = wal_dir.join(&n);
                    (n, p)
                })
                .collect();
            if names.is_empty() {
                match in_flight.take() {
                    // Ready segments may have come meanwhile: look again after the commit.
                    Some(h) => {
                        tally(&mut rep, spool, join(h)?);
                        continue;
                    }
                    None => break,
                }
            }
            tried.extend(names.iter().map(|(n, _)| n.clone()));
            let batch = Batch::read(repo, namespace, &names, false, codec)?;
            if let Some(h) = in_flight.take() {
                tally(&mut rep, spool, join(h)?);
            }
            in_flight = Some(sc.spawn(move || {
                let outcomes = batch.commit(spool)?;
                // A file that could not be read is not the pusher's to report: its call
                // stores it itself instead of waiting for the pusher to end.
                for (n, _) in &names {
                    if !outcomes.iter().any(|o| o.name == *n) {
                        note_refused(spool, n);
                    }
                }
                Ok(outcomes)
            }));
        }
        Ok::<(), PgError>(())
    })?;
    // Markers and notes older than every segment still waiting are never asked again.
    if let Some(oldest) = ready_segments(wal_dir, "", 1).first() {
        spool.trim_markers(oldest);
        trim_refused(spool, oldest);
    }
    Ok(rep)
}

/// Tells the waiting call for `name` to store its segment itself (`<spool>/refused/<name>`).
fn note_refused(spool: &Spool, name: &str) {
    let p = spool.refused(name);
    if let Some(d) = p.parent() {
        let _ = std::fs::create_dir_all(d);
    }
    let _ = std::fs::write(&p, b"");
}

fn join(h: std::thread::ScopedJoinHandle<'_, Result<Vec<PutOutcome>>>) -> Result<Vec<PutOutcome>> {
    h.join()
        .unwrap_or_else(|_| Err(PgError::Invalid("WAL commit thread panicked".into())))
}

fn tally(rep: &mut AheadReport, spool: &Spool, outcomes: Vec<PutOutcome>) {
    for o in outcomes {
        match o.status {
            PutStatus::Stored | PutStatus::AlreadyStored => {
                rep.marked += 1;
                rep.bytes += o.size;
            }
            PutStatus::Conflict => {
                note_refused(spool, &o.name);
                rep.refused.push(o.name);
            }
        }
    }
    rep.commits += 1;
}

/// Waits until the segment at `path` is proven stored by its marker (`Some`), or the pusher
/// cannot prove it (`None`: refused, the pusher is gone, or `limit` passed): then the caller
/// stores it itself.
pub fn wait_for_marker(spool: &Spool, path: &Path, limit: Duration) -> Result<Option<PushReport>> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let start = Instant::now();
    let mut pause = Duration::from_micros(500);
    loop {
        if let Some(r) = push_fast_path(spool, path)? {
            return Ok(Some(PushReport { background: true, ..r }));
        }
        if spool.refused(&name).exists() {
            let _ = std::fs::remove_file(spool.refused(&name));
            return Ok(None);
        }
        if !pusher_running(spool) {
            // It may have marked the segment just before exiting.
            return Ok(push_fast_path(spool, path)?.map(|r| PushReport { background: true, ..r }));
        }
        if start.elapsed() > limit {
            return Ok(None);
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(4));
    }
}

/// Removes refusal notes of segments older than `keep_from`.
pub fn trim_refused(spool: &Spool, keep_from: &str) {
    if let Ok(rd) = std::fs::read_dir(spool.dir().join("refused")) {
        for e in rd.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if n.as_str() < keep_from {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{ready, repo};

    fn segment(seed: u8) -> Vec<u8> {
        crate::test_support::segment(seed, 1 << 20)
    }

    /// The pusher marks every ready segment (small first commit, then bigger ones), refuses a
    /// conflicting one without marking it, and a waiting call is answered by the marker or
    /// told to store its segment itself.
    #[test]
    fn pushes_ahead_marks_and_refuses() {
        let tmp = tempfile::tempdir().unwrap();
        let wal = tmp.path().join("pg_wal");
        std::fs::create_dir_all(wal.join("archive_status")).unwrap();
        let names: Vec<String> = (1..=5).map(|i| format!("0000000100000000000000{i:02X}")).collect();
        for (i, n) in names.iter().enumerate() {
            ready(&wal, n, &segment(i as u8));
        }
        let r = repo();
        let spool = Spool::new(tmp.path().join("spool"));
        let ns = "wal-9";
        // Another cluster's segment 4 is already stored under that name.
        let other = tmp.path().join("other");
        std::fs::write(&other, segment(77)).unwrap();
        store_and_mark(
            &r,
            ns,
            &Spool::new(tmp.path().join("spool2")),
            &[(names[3].clone(), other)],
            true,
            lifeboat_repo::named::ChunkCodec::Zstd,
        )
        .unwrap();

        // Segment 6 is marked ready but cannot be read.
        let gone = "000000010000000000000006";
        std::fs::write(wal.join("archive_status").join(format!("{gone}.ready")), b"").unwrap();

        assert_eq!(unmarked_ready(&wal, &spool).len(), 6);
        let rep = push_ahead(&r, ns, &spool, &wal, 2, WalCompression::Auto).unwrap();
        assert_eq!(rep.marked, 4);
        assert_eq!(rep.refused, [names[3].clone()]);
        assert_eq!(rep.commits, 3, "2 + 2 + 2 segments");
        assert_eq!(unmarked_ready(&wal, &spool), [names[3].clone(), gone.to_string()]);
        // Both are left to their calls, which do not wait for the pusher to end.
        assert!(spool.refused(&names[3]).exists() && spool.refused(gone).exists());
        // No pusher runs: a waiting call gets its marker, or None for the refused one.
        let limit = Duration::from_secs(5);
        assert!(wait_for_marker(&spool, &wal.join(&names[0]), limit).unwrap().is_some());
        assert!(wait_for_marker(&spool, &wal.join(&names[3]), limit).unwrap().is_none());
        assert!(is_ready(&wal.join(&names[0])));
        assert!(!is_ready(&wal.join("000000010000000000000099")));
    }

    /// The lock is exclusive while held and seen as running; dropping it frees it.
    #[test]
    fn one_pusher_at_a_time() {
        let tmp = tempfile::tempdir().unwrap();
        let spool = Spool::new(tmp.path().join("spool"));
        assert!(!pusher_running(&spool));
        let held = try_lock_pusher(&spool).unwrap().expect("free");
        assert!(pusher_running(&spool));
        assert!(try_lock_pusher(&spool).unwrap().is_none());
        drop(held);
        assert!(!pusher_running(&spool));
        assert!(!recently_failed(&spool));
        std::fs::write(spool.pusher_error(), b"x").unwrap();
        assert!(recently_failed(&spool));
    }
}
