//! What the engine knows about each location of a repository kept in several places: its own
//! status record, whether it honours conditional writes, and how far it lags behind another.
//!
//! **Where the status lives.** Each location keeps its own record, `status/location` (sealed,
//! the only object besides the prune lease that is rewritten in place). It travels with the
//! data it describes, needs no local state (any host with the passphrase sees the same
//! history), and is never replicated, since it is about that copy alone.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::backend::{Backend, BackendErrorKind, PutMode};
use crate::error::{RepoError, Result};
use crate::format::sealed::{self, Kind};
use crate::id::Id;
use crate::repository::Repository;

const STATUS: &str = "status/location";

/// Whether a location's put-if-absent is real.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ConditionalWrites {
    /// A second create of the same key fails: the prune lease is exclusive.
    Atomic,
    /// The store overwrites silently (Garage 2.x): the lease falls back to write, wait, re-read.
    Ignored,
}

/// The last replication into a location.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct ReplicationStatus {
    /// When it finished.
    pub time: jiff::Timestamp,
    /// Source location.
    pub from: String,
    /// Objects copied.
    pub copied: usize,
    /// Bytes copied.
    pub bytes: u64,
    /// Failures.
    pub errors: usize,
}

/// The last check of a location.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct CheckStatus {
    /// When it finished.
    pub time: jiff::Timestamp,
    /// Errors found.
    pub errors: usize,
    /// Whether pack data was read.
    pub read_data: bool,
}

/// A location's own status record.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct LocationStatus {
    /// Last replication into it.
    pub last_replication: Option<ReplicationStatus>,
    /// Last `check --location`.
    pub last_check: Option<CheckStatus>,
    /// Result of the last conditional-write probe.
    pub conditional_writes: Option<ConditionalWrites>,
}

/// Reads a location's status (empty when it has none yet).
pub fn read_status(repo: &Repository) -> Result<LocationStatus> {
    match repo.backend().get(STATUS) {
        Ok(raw) => {
            let body = sealed::open(repo.keys(), Kind::LocationStatus, &raw, STATUS)?;
            serde_json::from_slice(&body).map_err(|e| RepoError::damaged(STATUS, e.to_string()))
        }
        Err(e) if e.is_not_found() => Ok(LocationStatus::default()),
        Err(e) => Err(e.into()),
    }
}

/// Updates a location's status record.
pub fn update_status(repo: &Repository, f: impl FnOnce(&mut LocationStatus)) -> Result<()> {
    let mut s = read_status(repo).unwrap_or_default();
    f(&mut s);
    let body = serde_json::to_vec(&s).expect("status serializes");
    repo.backend().put(
        STATUS,
        sealed::seal(repo.keys(), Kind::LocationStatus, &body),
        PutMode::Overwrite,
    )?;
    Ok(())
}

/// Finds out whether `b` honours put-if-absent: creates a scratch key twice and expects the
/// second create to fail. Garage, for one, silently overwrites.
///
/// The probe also deletes its scratch key, so credentials that may not delete (append-only,
/// whether or not the config says so) are found here, before prune takes its lease or changes
/// anything: [`RepoError::AppendOnly`]. A probe key left behind by such a refusal is removed by
/// the next probe that may delete.
pub fn probe_conditional_writes(b: &dyn Backend) -> Result<ConditionalWrites> {
    let key = format!("locks/probe-{}", Id::random());
    b.put(&key, b"probe 1".to_vec(), PutMode::Create)?;
    let second = b.put(&key, b"probe 2".to_vec(), PutMode::Create);
    match b.delete(&key) {
        Err(e) if e.kind == BackendErrorKind::PermissionDenied => {
            return Err(RepoError::AppendOnly {
                location: b.location().into(),
                what: format!("prune (the store refused to delete {key})"),
            });
        }
        Err(e) => return Err(e.into()),
        Ok(()) => {
            for o in b.list("locks/")? {
                if o.key.starts_with("locks/probe-") {
                    b.delete(&o.key)?;
                }
            }
        }
    }
    match second {
        Err(e) if e.kind == BackendErrorKind::AlreadyExists => Ok(ConditionalWrites::Atomic),
        Ok(()) => Ok(ConditionalWrites::Ignored),
        Err(e) => Err(e.into()),
    }
}

/// The newest snapshot of a location.
#[derive(Clone, Debug, serde::Serialize)]
pub struct NewestSnapshot {
    /// Snapshot id.
    pub id: String,
    /// Its time.
    pub time: jiff::Timestamp,
}

/// One line of `lifeboat locations`.
#[derive(Clone, Debug, serde::Serialize)]
pub struct LocationSummary {
    /// Config name.
    pub name: String,
    /// URL or path.
    pub url: String,
    /// Whether it answered.
    pub reachable: bool,
    /// Why not, when it did not.
    pub error: Option<String>,
    /// Whether deletes are refused here.
    pub append_only: bool,
    /// Snapshots stored.
    pub snapshots: usize,
    /// The newest.
    pub newest_snapshot: Option<NewestSnapshot>,
    /// Snapshots the reference location has and this one lacks.
    pub lag_snapshots: usize,
    /// Bytes of objects the reference location has and this one lacks.
    pub lag_bytes: u64,
    /// Objects stored (packs, index, snapshots, keys, marks, deletion records).
    pub objects: usize,
    /// Their total size.
    pub bytes: u64,
    /// The location's own status record.
    pub status: LocationStatus,
    /// S3: the bucket's Object Lock as read now, e.g. `enabled, GOVERNANCE default 32 d` or
    /// `not enabled` (or why it could not be read); `None` for folders.
    pub object_lock: Option<String>,
    /// S3: the bucket's versioning (`Enabled`, `Suspended`, `never enabled`).
    pub versioning: Option<String>,
    /// The lock lifeboat sets on every object it writes here, e.g. `GOVERNANCE 32 d`; `None`
    /// when it relies on the bucket's default retention.
    pub lock_retention: Option<String>,
    /// The bucket's Object Lock configuration, when it could be read.
    #[serde(skip)]
    pub bucket_lock: Option<crate::backend::BucketLock>,
    /// Problems worth acting on (filled in by the caller, which knows the configuration).
    pub warnings: Vec<String>,
}

/// The objects of a location (name → size), for lag computations.
pub type Listing = BTreeMap<String, u64>;

/// Lists every replicated object of a location.
pub fn listing(b: &dyn Backend) -> Result<Listing> {
    let mut out = Listing::new();
    for f in ["keys/", "deletions/", "data/", "index/", "marks/", "snapshots/"] {
        out.extend(b.list(f)?.into_iter().map(|o| (o.key, o.size)));
    }
    Ok(out)
}

/// How far one namespace of named streams (a cluster's archived WAL) at a location is behind the
/// reference location (the first reachable one).
#[derive(Clone, Debug, serde::Serialize)]
pub struct NamedLag {
    /// Namespace.
    pub namespace: String,
    /// Names stored here.
    pub names: usize,
    /// The newest (greatest) name here, if any.
    pub newest: Option<String>,
    /// The newest name at the reference.
    pub reference_newest: Option<String>,
    /// Names the reference has and this location lacks.
    pub lag_names: usize,
    /// Since when this location misses names: the storage time of the oldest name it lacks.
    pub missing_since: Option<jiff::Timestamp>,
}

/// Lists `named/` once and groups it: name → storage time (seconds), per namespace.
pub fn named_listing(b: &dyn Backend) -> Result<BTreeMap<String, BTreeMap<String, i64>>> {
    let mut out: BTreeMap<String, BTreeMap<String, i64>> = BTreeMap::new();
    for o in b.list("named/")? {
        if let Some((ns, name)) = o.key.strip_prefix("named/").and_then(|k| k.split_once('/')) {
            out.entry(ns.to_string())
                .or_default()
                .insert(name.to_string(), o.modified);
        }
    }
    Ok(out)
}

/// The lag of every namespace the reference has (or this location has), from two
/// [`named_listing`]s.
pub fn named_lag(
    own: &BTreeMap<String, BTreeMap<String, i64>>,
    reference: &BTreeMap<String, BTreeMap<String, i64>>,
) -> Vec<NamedLag> {
    let empty = BTreeMap::new();
    let mut namespaces: Vec<&String> = own.keys().chain(reference.keys()).collect();
    namespaces.sort();
    namespaces.dedup();
    namespaces
        .into_iter()
        .map(|ns| {
            let mine = own.get(ns).unwrap_or(&empty);
            let theirs = reference.get(ns).unwrap_or(&empty);
            let missing: Vec<i64> = theirs
                .iter()
                .filter(|(n, _)| !mine.contains_key(*n))
                .map(|(_, t)| *t)
                .collect();
            NamedLag {
                namespace: ns.clone(),
                names: mine.len(),
                newest: mine.keys().next_back().cloned(),
                reference_newest: theirs.keys().next_back().cloned(),
                lag_names: missing.len(),
                missing_since: missing.iter().min().and_then(|t| jiff::Timestamp::from_second(*t).ok()),
            }
        })
        .collect()
}

/// Summarizes one location; `reference` is the listing of the location lag is measured
/// against (the primary). An unreachable location is reported, not an error.
pub fn summarize(
    repo: &Repository,
    name: &str,
    url: &str,
    backend: &Arc<dyn Backend>,
    own: std::result::Result<&Listing, String>,
    reference: Option<&Listing>,
) -> LocationSummary {
    let mut s = LocationSummary {
        name: name.into(),
        url: url.into(),
        reachable: false,
        error: None,
        append_only: backend.is_append_only(),
        snapshots: 0,
        newest_snapshot: None,
        lag_snapshots: 0,
        lag_bytes: 0,
        objects: 0,
        bytes: 0,
        status: LocationStatus::default(),
        object_lock: None,
        versioning: None,
        lock_retention: backend
            .lock_retention()
            .map(|r| format!("{} {} d", r.mode.as_str(), r.span.as_secs().div_ceil(86_400))),
        bucket_lock: None,
        warnings: Vec::new(),
    };
    let own = match own {
        Ok(l) => l,
        Err(e) => {
            s.error = Some(e);
            return s;
        }
    };
    s.reachable = true;
    if let Some(c) = backend.object_lock() {
        match c.bucket_lock() {
            Ok(b) => {
                s.object_lock = Some(b.describe());
                s.bucket_lock = Some(b);
            }
            Err(e) => s.object_lock = Some(format!("unknown ({})", e.message())),
        }
        s.versioning = Some(c.versioning().unwrap_or_else(|e| format!("unknown ({})", e.message())));
    }
    s.objects = own.len();
    s.bytes = own.values().sum();
    let here = repo.at(backend.clone());
    let snaps: BTreeSet<&String> = own.keys().filter(|k| k.starts_with("snapshots/")).collect();
    s.snapshots = snaps.len();
    if let Ok(list) = here.list_snapshots()
        && let Some((id, snap)) = list.last()
    {
        s.newest_snapshot = Some(NewestSnapshot {
            id: id.to_hex(),
            time: snap.time,
        });
    }
    if let Some(r) = reference {
        for (k, size) in r {
            if !own.contains_key(k) {
                s.lag_bytes += size;
                if k.starts_with("snapshots/") {
                    s.lag_snapshots += 1;
                }
            }
        }
    }
    match read_status(&here) {
        Ok(st) => s.status = st,
        Err(e) => s.error = Some(format!("status record: {e}")),
    }
    s
}

#[cfg(test)]
mod tests {
    use std::ops::Range;

    use super::*;
    use crate::backend::{BackendError, ObjectInfo, ObjectStoreBackend, Upload};
    use crate::maintenance::Lease;
    use crate::{InitOptions, crypto::KdfParams};

    /// Behaves like Garage 2.x: put-if-absent silently overwrites.
    struct IgnoresCreate(ObjectStoreBackend);

    impl Backend for IgnoresCreate {
        fn location(&self) -> &str {
            "garage-like"
        }
        fn get(&self, key: &str) -> std::result::Result<Vec<u8>, BackendError> {
            self.0.get(key)
        }
        fn get_range(&self, key: &str, r: Range<u64>) -> std::result::Result<Vec<u8>, BackendError> {
            self.0.get_range(key, r)
        }
        fn put(&self, key: &str, data: Vec<u8>, _mode: PutMode) -> std::result::Result<(), BackendError> {
            self.0.put(key, data, PutMode::Overwrite)
        }
        fn upload(&self, key: &str) -> std::result::Result<Box<dyn Upload>, BackendError> {
            self.0.upload(key)
        }
        fn list(&self, prefix: &str) -> std::result::Result<Vec<ObjectInfo>, BackendError> {
            self.0.list(prefix)
        }
        fn head(&self, key: &str) -> std::result::Result<Option<u64>, BackendError> {
            self.0.head(key)
        }
        fn delete(&self, key: &str) -> std::result::Result<(), BackendError> {
            self.0.delete(key)
        }
    }

    #[test]
    fn probe_tells_real_from_ignored_conditional_writes() {
        let real = ObjectStoreBackend::memory();
        assert_eq!(probe_conditional_writes(&real).unwrap(), ConditionalWrites::Atomic);
        let fake = IgnoresCreate(ObjectStoreBackend::memory());
        assert_eq!(probe_conditional_writes(&fake).unwrap(), ConditionalWrites::Ignored);
        assert!(fake.list("locks/").unwrap().is_empty(), "the probe cleans up");
    }

    #[test]
    fn settle_mode_lease_still_excludes_a_second_prune() {
        let b: Arc<dyn Backend> = Arc::new(IgnoresCreate(ObjectStoreBackend::memory()));
        let opts = InitOptions {
            kdf: KdfParams::TESTING,
            ..Default::default()
        };
        let repo = Repository::init(b, b"pw", &opts).unwrap();
        let ttl = std::time::Duration::from_secs(60);
        let settle = Some(std::time::Duration::from_millis(10));
        let first = Lease::acquire_with(&repo, ttl, settle).unwrap();
        assert!(matches!(
            Lease::acquire_with(&repo, ttl, settle),
            Err(RepoError::LeaseHeld { .. })
        ));
        drop(first);
        Lease::acquire_with(&repo, ttl, settle).unwrap();
    }

    #[test]
    fn status_round_trips_in_the_location() {
        let b: Arc<dyn Backend> = Arc::new(ObjectStoreBackend::memory());
        let opts = InitOptions {
            kdf: KdfParams::TESTING,
            ..Default::default()
        };
        let repo = Repository::init(b, b"pw", &opts).unwrap();
        assert!(read_status(&repo).unwrap().last_check.is_none());
        update_status(&repo, |s| s.conditional_writes = Some(ConditionalWrites::Atomic)).unwrap();
        update_status(&repo, |s| {
            s.last_check = Some(CheckStatus {
                time: jiff::Timestamp::now(),
                errors: 0,
                read_data: true,
            })
        })
        .unwrap();
        let s = read_status(&repo).unwrap();
        assert_eq!(s.conditional_writes, Some(ConditionalWrites::Atomic));
        assert!(s.last_check.unwrap().read_data);
    }
}
