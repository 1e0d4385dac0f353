//! Small writes mirrored to every location as they happen, with a local journal of what a
//! location missed.
//!
//! `backup` writes to one location and replicates afterwards (a listing of every folder: fine
//! once per backup). A continuous writer that stores one small stream a few times a minute (WAL
//! archiving) cannot afford a listing per call, yet must not leave the other locations hours
//! behind. [`Mirrors`] writes each round through a [`Tee`] to the primary and every mirror at
//! once, then:
//!
//! - a mirror that failed (or was skipped) gets the round's keys appended to its **lag record**,
//!   a small JSON file in a local folder (`<dir>/<location>.json`: since when, last error,
//!   failures, next attempt, keys);
//! - the next round first **catches up** every location whose next attempt is due, copying
//!   exactly the journalled keys ([`crate::replicate::copy_keys`]: packs, then index segments,
//!   then commit points, each verified), and takes it back into the tee when that worked;
//! - attempts back off (30 s, doubling, at most 10 min) so a dead location costs its timeout
//!   once in a while, not on every call; `force` ignores the back-off;
//! - a journal over [`MAX_KEYS`] keys is replaced by a full-copy flag (the catch-up is then a
//!   [`crate::replicate::replicate`] of the location).
//!
//! The journal is local state of the writer's host: a location is complete for the caller when
//! it has no record. Object Lock needs nothing here: each location's backend locks what is
//! written to it, however it gets there. Nothing in this module knows what the streams are.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::backend::{Backend, FallbackReader, Tee};
use crate::error::{RepoError, Result};
use crate::repository::Repository;

/// Keys kept per lag record before it turns into "copy everything" (a long outage).
pub const MAX_KEYS: usize = 100_000;

/// First back-off after a failure; doubled per failure up to [`MAX_BACKOFF`].
pub const FIRST_BACKOFF: Duration = Duration::from_secs(30);

/// Longest wait between two attempts to catch a location up.
pub const MAX_BACKOFF: Duration = Duration::from_secs(600);

/// What one location missed, kept until it is caught up.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct LagRecord {
    /// Location name.
    pub location: String,
    /// First write it missed.
    pub since: jiff::Timestamp,
    /// Why the last attempt failed.
    pub last_error: String,
    /// Failed attempts in a row.
    pub failures: u32,
    /// No attempt before this (unless forced).
    pub next_try: jiff::Timestamp,
    /// Too many keys to list: the catch-up copies everything the location lacks.
    #[serde(default)]
    pub full: bool,
    /// Objects to copy, in the order written.
    #[serde(default)]
    pub keys: Vec<String>,
}

fn backoff(failures: u32) -> Duration {
    let f = failures.clamp(1, 16) - 1;
    FIRST_BACKOFF.saturating_mul(1 << f).min(MAX_BACKOFF)
}

fn later(t: jiff::Timestamp, d: Duration) -> jiff::Timestamp {
    t.checked_add(jiff::SignedDuration::try_from(d).unwrap_or(jiff::SignedDuration::MAX))
        .unwrap_or(jiff::Timestamp::MAX)
}

/// The lag records of one writer, one file per location, changed under an exclusive `flock`.
#[derive(Clone, Debug)]
pub struct Journal {
    dir: PathBuf,
}

fn file_stem(location: &str) -> String {
    let clean: String = location
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    // Distinct names that clean up alike stay distinct.
    let h = blake3::hash(location.as_bytes()).to_hex();
    format!("{}-{}", clean.chars().take(40).collect::<String>(), &h[..8])
}

impl Journal {
    /// The journal in `dir` (created on first write).
    pub fn new(dir: impl Into<PathBuf>) -> Journal {
        Journal { dir: dir.into() }
    }

    /// Its folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, location: &str) -> PathBuf {
        self.dir.join(format!("{}.json", file_stem(location)))
    }

    fn locked<T>(&self, f: impl FnOnce() -> Result<T>) -> Result<T> {
        std::fs::create_dir_all(&self.dir).map_err(|e| RepoError::io(&self.dir, e))?;
        let p = self.dir.join(".lock");
        let lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&p)
            .map_err(|e| RepoError::io(&p, e))?;
        lock.lock().map_err(|e| RepoError::io(&p, e))?;
        let r = f();
        let _ = lock.unlock();
        r
    }

    /// The record of `location`, if it lags.
    pub fn read(&self, location: &str) -> Option<LagRecord> {
        let text = std::fs::read(self.path(location)).ok()?;
        serde_json::from_slice(&text).ok()
    }

    /// Every record, by location name.
    pub fn all(&self) -> Vec<LagRecord> {
        let mut v: Vec<LagRecord> = std::fs::read_dir(&self.dir)
            .map(|rd| {
                rd.flatten()
                    .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
                    .filter_map(|e| serde_json::from_slice(&std::fs::read(e.path()).ok()?).ok())
                    .collect()
            })
            .unwrap_or_default();
        v.sort_by(|a: &LagRecord, b| a.location.cmp(&b.location));
        v
    }

    /// How many locations lag (one directory read: cheap enough for every call).
    pub fn lagging(&self) -> usize {
        std::fs::read_dir(&self.dir)
            .map(|rd| {
                rd.flatten()
                    .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
                    .count()
            })
            .unwrap_or(0)
    }

    fn write(&self, r: &LagRecord) -> Result<()> {
        let p = self.path(&r.location);
        let tmp = p.with_extension("json.tmp");
        let body = serde_json::to_vec(r).expect("record serializes");
        (|| {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&body)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &p)
        })()
        .map_err(|e| RepoError::io(&p, e))
    }

    /// Adds `keys` to `location`'s record (creating it). `failed`: the location was tried in this
    /// round and failed with this error (counts as a failure and moves the next attempt).
    pub fn append(&self, location: &str, keys: &[String], failed: Option<&str>, now: jiff::Timestamp) -> Result<()> {
        self.locked(|| {
            let mut r = self.read(location).unwrap_or_else(|| LagRecord {
                location: location.into(),
                since: now,
                last_error: String::new(),
                failures: 0,
                next_try: now,
                full: false,
                keys: Vec::new(),
            });
            if let Some(e) = failed {
                r.failures += 1;
                r.last_error = e.into();
                r.next_try = later(now, backoff(r.failures));
            }
            if !r.full {
                r.keys.extend(keys.iter().cloned());
                if r.keys.len() > MAX_KEYS {
                    r.full = true;
                    r.keys.clear();
                }
            }
            self.write(&r)
        })
    }

    /// Records a failed catch-up attempt.
    pub fn failed(&self, location: &str, error: &str, now: jiff::Timestamp) -> Result<()> {
        self.append(location, &[], Some(error), now)
    }

    /// Removes what a catch-up copied (`keys`, or everything when `full` was done); the record
    /// goes when nothing is left. Keys appended meanwhile by another writer stay.
    pub fn caught_up(&self, location: &str, keys: &[String], full: bool) -> Result<()> {
        self.locked(|| {
            let Some(mut r) = self.read(location) else {
                return Ok(());
            };
            if full {
                r.full = false;
            }
            let done: std::collections::HashSet<&String> = keys.iter().collect();
            r.keys.retain(|k| !done.contains(k));
            if r.keys.is_empty() && !r.full {
                let p = self.path(location);
                std::fs::remove_file(&p).or_else(|e| match e.kind() {
                    std::io::ErrorKind::NotFound => Ok(()),
                    _ => Err(RepoError::io(&p, e)),
                })
            } else {
                r.failures = 0;
                self.write(&r)
            }
        })
    }
}

/// One location of a [`Mirrors`] set.
pub struct Target {
    /// Its name (config name or URL).
    pub name: String,
    /// The backend, or why it could not be opened.
    pub backend: std::result::Result<Arc<dyn Backend>, String>,
}

/// What a round did at one location.
#[derive(Clone, Debug, serde::Serialize)]
pub struct LocationOutcome {
    /// Location name.
    pub name: String,
    /// The location that decided (where the writes went first).
    pub primary: bool,
    /// Every write of the round reached it.
    pub written: bool,
    /// It holds everything written so far (no lag record left).
    pub complete: bool,
    /// Why a write or catch-up failed or was skipped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Objects copied to it by this round's catch-up.
    #[serde(skip_serializing_if = "is_zero")]
    pub caught_up: usize,
    /// When it started to lag, while it does.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lagging_since: Option<jiff::Timestamp>,
    /// Objects it still misses (journalled).
    #[serde(skip_serializing_if = "is_zero")]
    pub pending: usize,
    /// It was tried in this round (not left out while its back-off runs).
    #[serde(skip)]
    pub tried: bool,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl LocationOutcome {
    /// This location failed in the round itself (not merely still waiting for its retry).
    pub fn failed_now(&self) -> bool {
        self.tried && !self.complete && self.error.is_some()
    }
}

/// The outcome of a round.
#[derive(Clone, Debug, Default, serde::Serialize)]
#[serde(transparent)]
pub struct Round {
    /// Per location, in configured order.
    pub locations: Vec<LocationOutcome>,
}

impl Round {
    /// Locations that hold everything written so far.
    pub fn complete(&self) -> usize {
        self.locations.iter().filter(|l| l.complete).count()
    }

    /// Locations that lag, with why.
    pub fn lagging(&self) -> impl Iterator<Item = &LocationOutcome> {
        self.locations.iter().filter(|l| !l.complete)
    }
}

#[derive(Default)]
struct RoundState {
    /// Per location: left out of this round by the back-off (not a new failure).
    skipped: Vec<bool>,
    errors: Vec<Option<String>>,
    caught_up: Vec<usize>,
}

/// A primary and its mirrors, with their journal (see the module documentation).
pub struct Mirrors {
    names: Vec<String>,
    backends: Vec<Option<Arc<dyn Backend>>>,
    open_errors: Vec<Option<String>>,
    primary: usize,
    tee: Tee,
    /// Location index → index among the tee's mirrors.
    tee_index: Vec<Option<usize>>,
    journal: Journal,
    state: Mutex<RoundState>,
}

impl Mirrors {
    /// `targets` in configured order; `primary` is the one written first (reachable, holds the
    /// repository); `journal` keeps the lag records.
    pub fn new(targets: Vec<Target>, primary: usize, journal: Journal) -> Result<Mirrors> {
        let mut names = Vec::new();
        let mut backends = Vec::new();
        let mut open_errors = Vec::new();
        for t in targets {
            names.push(t.name);
            match t.backend {
                Ok(b) => {
                    backends.push(Some(b));
                    open_errors.push(None);
                }
                Err(e) => {
                    backends.push(None);
                    open_errors.push(Some(e));
                }
            }
        }
        let Some(Some(p)) = backends.get(primary).cloned() else {
            return Err(RepoError::Invalid("the primary location cannot be opened".into()));
        };
        let mut tee_index = Vec::new();
        let mut members = Vec::new();
        for (i, b) in backends.iter().enumerate() {
            match b {
                Some(b) if i != primary => {
                    tee_index.push(Some(members.len()));
                    members.push(b.clone());
                }
                _ => tee_index.push(None),
            }
        }
        Ok(Mirrors {
            names,
            backends,
            open_errors,
            primary,
            tee: Tee::new(p, members),
            tee_index,
            journal,
            state: Mutex::new(RoundState::default()),
        })
    }

    /// Compares a manifest a mirror already holds with ours by content (see
    /// [`crate::named::same_sealed_manifest`]): a mirror holding a different stream under the
    /// same name lags with that conflict as its reason instead of counting as written.
    pub fn compare_manifests_with(&self, repo: &Repository) {
        let keys = repo.keys().clone();
        self.tee.set_comparer(
            "named/",
            Arc::new(move |key, ours, theirs| crate::named::same_sealed_manifest(&keys, key, ours, theirs)),
        );
    }

    /// The backend to write through (reads go to the primary).
    pub fn backend(&self) -> Arc<dyn Backend> {
        Arc::new(self.tee.clone())
    }

    /// The journal.
    pub fn journal(&self) -> &Journal {
        &self.journal
    }

    /// Name of the primary.
    pub fn primary_name(&self) -> &str {
        &self.names[self.primary]
    }

    /// Every location's name, in configured order.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// The others, as one reader with fallback, for copying into `dst`.
    fn source_for(&self, dst: usize) -> Option<Arc<dyn Backend>> {
        let members: Vec<Arc<dyn Backend>> = self
            .backends
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != dst)
            .filter_map(|(_, b)| b.clone())
            .collect();
        match members.len() {
            0 => None,
            1 => members.into_iter().next(),
            _ => Some(Arc::new(FallbackReader::new(members))),
        }
    }

    /// Starts a round: catches up every lagging location whose attempt is due (all of them
    /// when `force`), then lets into the tee the mirrors that are up to date.
    pub fn begin(&self, repo: &Repository, force: bool) {
        let now = jiff::Timestamp::now();
        let n = self.names.len();
        let mut st = RoundState {
            skipped: vec![false; n],
            errors: vec![None; n],
            caught_up: vec![0; n],
        };
        for i in 0..n {
            let name = &self.names[i];
            let Some(b) = &self.backends[i] else {
                st.errors[i] = self.open_errors[i].clone();
                continue;
            };
            let ok = match self.journal.read(name) {
                None => true,
                Some(r) if !force && r.next_try > now => {
                    st.skipped[i] = true;
                    st.errors[i] = Some(format!(
                        "lagging since {}, next catch-up at {} (last error: {})",
                        r.since.strftime("%Y-%m-%d %H:%M:%SZ"),
                        r.next_try.strftime("%H:%M:%SZ"),
                        r.last_error
                    ));
                    false
                }
                Some(r) => match self.catch_up(repo, i, b, &r) {
                    Ok(copied) => {
                        st.caught_up[i] = copied;
                        true
                    }
                    Err(e) => {
                        let _ = self.journal.failed(name, &e, now);
                        st.errors[i] = Some(e);
                        false
                    }
                },
            };
            if let Some(m) = self.tee_index[i] {
                self.tee.set_active(m, ok, st.errors[i].clone());
            }
        }
        *self.state.lock().unwrap_or_else(|e| e.into_inner()) = st;
    }

    fn catch_up(
        &self,
        repo: &Repository,
        i: usize,
        dst: &Arc<dyn Backend>,
        r: &LagRecord,
    ) -> std::result::Result<usize, String> {
        let src = self.source_for(i).ok_or("no other location to copy from")?;
        dst.list("keys/").map_err(|e| format!("unreachable: {e}"))?;
        let rep = if r.full {
            crate::replicate::replicate(
                repo,
                &src,
                dst,
                &crate::replicate::ReplicateOptions::default(),
                &Default::default(),
            )
            .map_err(|e| e.to_string())?
        } else {
            crate::replicate::copy_keys(repo, &src, dst, &r.keys)
        };
        if let Some(e) = rep.errors.first() {
            return Err(format!("catch-up failed: {e}"));
        }
        self.journal
            .caught_up(&self.names[i], &r.keys, r.full)
            .map_err(|e| e.to_string())?;
        Ok(rep.copied + rep.replaced)
    }

    /// Ends a round: journals what each mirror missed and reports every location.
    pub fn end(&self) -> Round {
        let now = jiff::Timestamp::now();
        let round = self.tee.take_round();
        let mut st = std::mem::take(&mut *self.state.lock().unwrap_or_else(|e| e.into_inner()));
        let n = self.names.len();
        st.skipped.resize(n, false);
        st.errors.resize(n, None);
        st.caught_up.resize(n, 0);
        let mut out = Round::default();
        for i in 0..n {
            let name = &self.names[i];
            let written = if i == self.primary {
                true
            } else {
                let missed = match self.tee_index[i] {
                    Some(m) => round.mirrors[m].clone(),
                    None => st.errors[i].clone().or_else(|| Some("cannot be opened".into())),
                };
                match missed {
                    None => true,
                    Some(e) => {
                        if st.errors[i].is_none() || !st.skipped[i] {
                            st.errors[i] = Some(e.clone());
                        }
                        if !round.written.is_empty() {
                            let fresh = (!st.skipped[i]).then_some(e.as_str());
                            if let Err(je) = self.journal.append(name, &round.written, fresh, now) {
                                st.errors[i] = Some(format!("{e}; its lag could not be journalled: {je}"));
                            }
                        }
                        false
                    }
                }
            };
            let rec = self.journal.read(name);
            out.locations.push(LocationOutcome {
                name: name.clone(),
                primary: i == self.primary,
                written,
                complete: rec.is_none() && written,
                error: if written && rec.is_none() {
                    None
                } else {
                    st.errors[i].clone()
                },
                caught_up: st.caught_up[i],
                lagging_since: rec.as_ref().map(|r| r.since),
                pending: rec
                    .as_ref()
                    .map_or(0, |r| if r.full { usize::MAX } else { r.keys.len() }),
                tried: !st.skipped[i],
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::InitOptions;
    use crate::backend::ObjectStoreBackend;
    use crate::crypto::KdfParams;
    use crate::named;

    fn data(n: usize, seed: u8) -> Vec<u8> {
        (0..n).map(|i| ((i * 31 + seed as usize) % 251) as u8 ^ seed).collect()
    }

    /// A folder location that can be made unwritable (the "down" case without root).
    fn folder(dir: &Path, name: &str) -> Arc<dyn Backend> {
        let p = dir.join(name);
        std::fs::create_dir_all(&p).unwrap();
        Arc::new(ObjectStoreBackend::local(&p, false).unwrap())
    }

    #[test]
    fn a_down_mirror_is_journalled_then_caught_up_with_exactly_what_it_missed() {
        let tmp = tempfile::tempdir().unwrap();
        let a = folder(tmp.path(), "a");
        let b = folder(tmp.path(), "b");
        let opts = InitOptions {
            kdf: KdfParams::TESTING,
            ..Default::default()
        };
        let repo = Repository::init(a.clone(), b"pw", &opts).unwrap();
        crate::replicate::replicate(&repo, &a, &b, &Default::default(), &Default::default()).unwrap();
        let journal = Journal::new(tmp.path().join("lag"));
        let targets = |b_ok: bool| {
            vec![
                Target {
                    name: "a".into(),
                    backend: Ok(a.clone()),
                },
                Target {
                    name: "b".into(),
                    backend: if b_ok { Ok(b.clone()) } else { Err("down".into()) },
                },
            ]
        };
        // Round 1: both up.
        let m = Mirrors::new(targets(true), 0, journal.clone()).unwrap();
        let r1 = repo.at(m.backend());
        m.begin(&r1, false);
        named::put(&r1, "ns", "1", &mut data(200_000, 1).as_slice(), None).unwrap();
        let round = m.end();
        assert_eq!(round.complete(), 2, "{round:?}");
        assert!(named::read_manifest(&repo.at(b.clone()), "ns", "1").unwrap().is_some());
        // Round 2: b cannot be opened: journalled.
        let m = Mirrors::new(targets(false), 0, journal.clone()).unwrap();
        let r2 = repo.at(m.backend());
        m.begin(&r2, false);
        named::put(&r2, "ns", "2", &mut data(200_000, 2).as_slice(), None).unwrap();
        let round = m.end();
        assert_eq!(round.complete(), 1);
        let rec = journal.read("b").unwrap();
        assert_eq!(rec.keys.len(), 3, "pack, index, manifest: {:?}", rec.keys);
        assert_eq!(journal.lagging(), 1);
        // Round 3: b back; the back-off is still running, so only a forced round catches up.
        let m = Mirrors::new(targets(true), 0, journal.clone()).unwrap();
        let r3 = repo.at(m.backend());
        m.begin(&r3, false);
        assert_eq!(m.end().complete(), 1, "skipped while backing off");
        m.begin(&r3, true);
        named::put(&r3, "ns", "3", &mut data(200_000, 3).as_slice(), None).unwrap();
        let round = m.end();
        assert_eq!(round.complete(), 2, "{round:?}");
        assert_eq!(round.locations[1].caught_up, 3);
        assert_eq!(journal.lagging(), 0);
        let rb = repo.at(b.clone());
        for n in ["1", "2", "3"] {
            let man = named::read_manifest(&rb, "ns", n).unwrap().unwrap();
            let idx = rb.load_index_for_reading().unwrap();
            let mut out = Vec::new();
            named::read_to(&rb, &idx, &man, &mut out).unwrap();
            assert_eq!(out, data(200_000, n.parse().unwrap()));
        }
        let lag = crate::locations::named_lag(
            &crate::locations::named_listing(b.as_ref()).unwrap(),
            &crate::locations::named_listing(a.as_ref()).unwrap(),
        );
        assert_eq!(lag[0].newest.as_deref(), Some("3"));
        assert_eq!(lag[0].lag_names, 0);
    }

    #[test]
    fn backoff_doubles_to_its_cap() {
        assert_eq!(backoff(1), Duration::from_secs(30));
        assert_eq!(backoff(2), Duration::from_secs(60));
        assert_eq!(backoff(9), MAX_BACKOFF);
        assert_eq!(backoff(100), MAX_BACKOFF);
    }
}
