//! Keeping Object Lock retention ahead of what kept snapshots need.
//!
//! Every immutable object is locked when written until `write time + span`, where the span is
//! the longest time the retention policy keeps a snapshot plus the prune grace period plus a day
//! of margin ([`crate::backend::LockRetention`]). That is enough for a snapshot manifest, but
//! not for a pack: a pack written on day 1 is still used by the snapshot of day 30 if its data
//! did not change, and that snapshot is kept until day 30 + span. So [`extend_locks`] raises
//! the lock of objects that kept snapshots may still need:
//!
//! - a snapshot manifest is needed until `its time + span`;
//! - every other object still present (packs, index segments, keys, config, marks) is needed
//!   until `newest snapshot time + span`: it may be used by the newest snapshot. That is
//!   conservative (a pack only old snapshots use is locked longer than strictly needed, until
//!   prune deletes it) and needs no walk of the snapshot trees.
//!
//! An object short of its need by more than a day (the tolerance: objects are locked when
//! written, a little before their snapshot's time) is extended to `need + headroom` (7 days), so each live object
//! costs one `PutObjectRetention` a week at most, not one per run. What was set is remembered in
//! the location's own `status/locks` record (sealed, never replicated), so a run asks S3 about an
//! object's lock (`GetObjectRetention`) only once; later runs cost one LIST and one small GET.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use crate::backend::{Backend, LockMode, PutMode};
use crate::error::{RepoError, Result};
use crate::format::sealed::{self, Kind};
use crate::repository::Repository;

const RECORD: &str = "status/locks";

/// How far beyond its need an object's lock is extended, so extensions are weekly, not daily.
pub const HEADROOM: Duration = Duration::from_secs(7 * 24 * 3600);

/// A lock this close to its need counts as enough: objects are locked when written, a little
/// before their snapshot's time, and the span already includes a day of margin for this.
pub const TOLERANCE: Duration = Duration::from_secs(24 * 3600);

/// What lifeboat has set (or found) on each object: retain-until, seconds since the epoch.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct LockRecord {
    until: BTreeMap<String, i64>,
}

/// The outcome of one [`extend_locks`] run on one location.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct ExtendReport {
    /// Objects considered (everything but `locks/` and `status/`).
    pub objects: usize,
    /// Objects whose lock was asked from S3 (not yet in the record).
    pub queried: usize,
    /// Objects whose lock was raised.
    pub extended: usize,
    /// The earliest retain-until over all objects after the run (RFC 3339), if any.
    pub earliest_until: Option<jiff::Timestamp>,
    /// Failures (object and cause); the run goes on past them.
    pub errors: Vec<String>,
}

fn read_record(repo: &Repository) -> LockRecord {
    let Ok(raw) = repo.backend().get(RECORD) else {
        return LockRecord::default();
    };
    sealed::open(repo.keys(), Kind::LocationStatus, &raw, RECORD)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

fn add(t: jiff::Timestamp, d: Duration) -> jiff::Timestamp {
    let d = jiff::SignedDuration::try_from(d).unwrap_or(jiff::SignedDuration::MAX);
    t.checked_add(d).unwrap_or(jiff::Timestamp::MAX)
}

/// Raises the Object Lock of every object of `repo`'s location that kept snapshots may still
/// need and whose lock ends too early (see the module documentation). `repo` must be opened at
/// the location (see [`Repository::at`]); the location must lock objects
/// ([`Backend::lock_retention`]), else [`RepoError::Invalid`]. Idempotent: a second run right
/// after the first changes nothing.
pub fn extend_locks(repo: &Repository, now: jiff::Timestamp) -> Result<ExtendReport> {
    let b = repo.backend();
    let (Some(client), Some(retention)) = (b.object_lock(), b.lock_retention()) else {
        return Err(RepoError::Invalid(format!(
            "{}: this location does not lock objects (object_lock = true and a lock mode on an S3 location)",
            b.location()
        )));
    };
    let mut keys: Vec<String> = vec!["config".into()];
    for prefix in ["keys/", "data/", "index/", "snapshots/", "marks/", "deletions/"] {
        keys.extend(b.list(prefix)?.into_iter().map(|o| o.key));
    }
    let snapshots = repo.list_snapshots()?;
    let newest = snapshots.iter().map(|(_, s)| s.time).max().unwrap_or(now);
    let snap_time: BTreeMap<String, jiff::Timestamp> = snapshots
        .iter()
        .map(|(id, s)| (format!("snapshots/{}", id.to_hex()), s.time))
        .collect();
    let record = read_record(repo);
    let mut report = ExtendReport {
        objects: keys.len(),
        ..Default::default()
    };
    // Work out each object's need; only objects needed in the future are looked at.
    let work: Vec<(String, jiff::Timestamp, Option<i64>)> = keys
        .iter()
        .map(|k| {
            let base = snap_time.get(k).copied().unwrap_or(newest);
            (k.clone(), add(base, retention.span), record.until.get(k).copied())
        })
        .collect();
    let results = Mutex::new(Vec::<(String, Option<i64>, bool, bool, Option<String>)>::new());
    let next = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..8.min(work.len().max(1)) {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some((key, need, known)) = work.get(i) else { break };
                    let mut queried = false;
                    let mut mode = retention.mode;
                    let current = match known {
                        Some(t) => Ok(*t),
                        None => {
                            queried = true;
                            client.get_retention(key).map(|r| match r {
                                Some(r) => {
                                    if r.mode == LockMode::Compliance {
                                        mode = LockMode::Compliance;
                                    }
                                    r.until.as_second()
                                }
                                None => 0,
                            })
                        }
                    };
                    let out = match current {
                        Err(e) => (key.clone(), None, queried, false, Some(e.to_string())),
                        Ok(cur) if cur >= need.as_second() - TOLERANCE.as_secs() as i64 || *need <= now => {
                            (key.clone(), Some(cur), queried, false, None)
                        }
                        Ok(_) => {
                            let until = add(*need, HEADROOM);
                            match client.put_retention(key, mode, until) {
                                Ok(()) => (key.clone(), Some(until.as_second()), queried, true, None),
                                Err(e) => (key.clone(), None, queried, false, Some(e.to_string())),
                            }
                        }
                    };
                    results.lock().unwrap_or_else(|e| e.into_inner()).push(out);
                }
            });
        }
    });
    let mut new_record = LockRecord::default();
    for (key, until, queried, extended, err) in results.into_inner().unwrap_or_else(|e| e.into_inner()) {
        report.queried += usize::from(queried);
        report.extended += usize::from(extended);
        if let Some(e) = err {
            report.errors.push(e);
        }
        if let Some(u) = until {
            // A missing config is listed above without checking; skip what S3 says is absent.
            new_record.until.insert(key, u);
        }
    }
    report.errors.sort();
    report.earliest_until = new_record
        .until
        .values()
        .min()
        .and_then(|s| jiff::Timestamp::from_second(*s).ok());
    let body = serde_json::to_vec(&new_record).expect("record serializes");
    b.put(
        RECORD,
        sealed::seal(repo.keys(), Kind::LocationStatus, &body),
        PutMode::Overwrite,
    )?;
    Ok(report)
}

/// Whether a backend is an S3 location that sets per-object retention.
pub fn locks_objects(b: &dyn Backend) -> bool {
    b.object_lock().is_some() && b.lock_retention().is_some()
}
