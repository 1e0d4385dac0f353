//! Writing to several locations at once: every write goes to the primary location and, in the
//! same call, to each *active* mirror, so a small, latency-bound writer (PostgreSQL's
//! archive_command storing one WAL segment) leaves every location complete without a listing
//! or a read-back.
//!
//! - The primary decides: reads, listings and heads go to it alone, and its write's result is
//!   the call's result. A put-if-absent ([`PutMode::Create`], a named manifest: the commit
//!   point) goes to the mirrors only after the primary accepted it; other writes (packs, index
//!   segments, named by their hash or a random id) go everywhere in parallel.
//! - A mirror write that fails takes that mirror out for the rest of the round: it receives
//!   nothing more, so it never holds a commit point whose data or index did not arrive. A
//!   mirror that already has a name (`AlreadyExists`) counts as written once the comparer (see
//!   [`Tee::set_comparer`]) finds its object the same as ours; a different one takes that
//!   mirror out with the conflict as the reason, and nothing is overwritten.
//! - The keys written to the primary are recorded, so a caller can journal what a failed mirror
//!   missed and copy exactly that later ([`crate::mirror`]).

use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use super::{Backend, BackendError, BackendErrorKind, ObjectInfo, PutMode, Upload};

struct Member {
    backend: Arc<dyn Backend>,
    active: AtomicBool,
    error: Mutex<Option<String>>,
}

/// Compares the object a mirror already holds under a name with ours: `Some(false)` when
/// different, `None` when it cannot tell (accepted).
pub type Comparer = Arc<dyn Fn(&str, &[u8], &[u8]) -> Option<bool> + Send + Sync>;

struct Inner {
    primary: Arc<dyn Backend>,
    mirrors: Vec<Member>,
    written: Mutex<Vec<String>>,
    /// Keys under this prefix are compared with [`Comparer`]; the others count as written.
    comparer: Mutex<Option<(String, Comparer)>>,
}

impl Inner {
    fn fail(&self, i: usize, e: &BackendError) {
        self.fail_with(i, e.to_string());
    }

    fn fail_with(&self, i: usize, why: String) {
        let m = &self.mirrors[i];
        if m.active.swap(false, Ordering::SeqCst) {
            *m.error.lock().unwrap_or_else(|e| e.into_inner()) = Some(why);
        }
    }

    /// Mirror `i` already holds `key`: the same as `ours`, or out of the round.
    fn compare(&self, i: usize, key: &str, ours: &[u8]) {
        let Some((prefix, cmp)) = self.comparer.lock().unwrap_or_else(|e| e.into_inner()).clone() else {
            return;
        };
        if !key.starts_with(&prefix) {
            return;
        }
        match self.mirrors[i].backend.get(key) {
            Ok(theirs) if cmp(key, ours, &theirs) == Some(false) => self.fail_with(
                i,
                format!(
                    "{key}: already holds a different object under this name (a conflict; nothing was overwritten)"
                ),
            ),
            Ok(_) => {}
            Err(e) => self.fail(i, &e),
        }
    }

    fn active(&self) -> Vec<usize> {
        (0..self.mirrors.len())
            .filter(|i| self.mirrors[*i].active.load(Ordering::SeqCst))
            .collect()
    }

    fn record(&self, key: &str) {
        self.written
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(key.to_string());
    }

    fn put_mirrors(&self, key: &str, data: &[u8], mode: PutMode) {
        let active = self.active();
        std::thread::scope(|s| {
            for i in active {
                s.spawn(move || match self.mirrors[i].backend.put(key, data.to_vec(), mode) {
                    Ok(()) => {}
                    Err(e) if e.kind == BackendErrorKind::AlreadyExists => self.compare(i, key, data),
                    Err(e) => self.fail(i, &e),
                });
            }
        });
    }
}

/// The outcome of one round of writes (see [`Tee::take_round`]).
#[derive(Debug, Default, Clone)]
pub struct TeeRound {
    /// Keys written to the primary, in order.
    pub written: Vec<String>,
    /// Per mirror: `None` when it was active and every write reached it, else why not.
    pub mirrors: Vec<Option<String>>,
}

/// A backend that writes to a primary and mirrors it to other locations (see the module docs).
#[derive(Clone)]
pub struct Tee {
    inner: Arc<Inner>,
}

impl Tee {
    /// Writes go to `primary` and to every mirror (all active at first).
    pub fn new(primary: Arc<dyn Backend>, mirrors: Vec<Arc<dyn Backend>>) -> Tee {
        Tee {
            inner: Arc::new(Inner {
                primary,
                mirrors: mirrors
                    .into_iter()
                    .map(|backend| Member {
                        backend,
                        active: AtomicBool::new(true),
                        error: Mutex::new(None),
                    })
                    .collect(),
                written: Mutex::new(Vec::new()),
                comparer: Mutex::new(None),
            }),
        }
    }

    /// How to compare what a mirror already holds under a name with what we write there (the
    /// repository's manifests are sealed with a random nonce, so equal content never has equal
    /// bytes). Only keys under `prefix` are read back and compared; without a comparer an
    /// existing name counts as written.
    pub fn set_comparer(&self, prefix: &str, c: Comparer) {
        *self.inner.comparer.lock().unwrap_or_else(|e| e.into_inner()) = Some((prefix.to_string(), c));
    }

    /// Includes or leaves out mirror `i` from the next writes; `why` says why it is left out.
    pub fn set_active(&self, i: usize, active: bool, why: Option<String>) {
        let m = &self.inner.mirrors[i];
        m.active.store(active, Ordering::SeqCst);
        *m.error.lock().unwrap_or_else(|e| e.into_inner()) = if active { None } else { why };
    }

    /// What happened since the last call: the keys written and each mirror's state. Mirrors
    /// that failed stay out until [`Tee::set_active`] brings them back.
    pub fn take_round(&self) -> TeeRound {
        let written = std::mem::take(&mut *self.inner.written.lock().unwrap_or_else(|e| e.into_inner()));
        let mirrors = self
            .inner
            .mirrors
            .iter()
            .map(|m| {
                if m.active.load(Ordering::SeqCst) {
                    None
                } else {
                    Some(
                        m.error
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .clone()
                            .unwrap_or_else(|| "not written".into()),
                    )
                }
            })
            .collect();
        TeeRound { written, mirrors }
    }
}

impl Backend for Tee {
    fn location(&self) -> &str {
        self.inner.primary.location()
    }

    fn get(&self, key: &str) -> Result<Vec<u8>, BackendError> {
        self.inner.primary.get(key)
    }

    fn get_range(&self, key: &str, range: Range<u64>) -> Result<Vec<u8>, BackendError> {
        self.inner.primary.get_range(key, range)
    }

    fn get_range_into(&self, key: &str, range: Range<u64>, buf: &mut Vec<u8>) -> Result<(), BackendError> {
        self.inner.primary.get_range_into(key, range, buf)
    }

    fn put(&self, key: &str, data: Vec<u8>, mode: PutMode) -> Result<(), BackendError> {
        let inner = &self.inner;
        if mode == PutMode::Create || inner.active().is_empty() {
            inner.primary.put(key, data.clone(), mode)?;
            inner.record(key);
            inner.put_mirrors(key, &data, mode);
            return Ok(());
        }
        let r = std::thread::scope(|s| {
            let mirrors = s.spawn(|| inner.put_mirrors(key, &data, mode));
            let r = inner.primary.put(key, data.clone(), mode);
            let _ = mirrors.join();
            r
        });
        r?;
        inner.record(key);
        Ok(())
    }

    fn upload(&self, key: &str) -> Result<Box<dyn Upload>, BackendError> {
        let primary = self.inner.primary.upload(key)?;
        let mut mirrors = Vec::new();
        for i in self.inner.active() {
            match self.inner.mirrors[i].backend.upload(key) {
                Ok(u) => mirrors.push((i, u)),
                Err(e) => self.inner.fail(i, &e),
            }
        }
        Ok(Box::new(TeeUpload {
            inner: self.inner.clone(),
            key: key.to_string(),
            primary,
            mirrors,
        }))
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, BackendError> {
        self.inner.primary.list(prefix)
    }

    fn head(&self, key: &str) -> Result<Option<u64>, BackendError> {
        self.inner.primary.head(key)
    }

    /// Deletes at the primary, then (best effort) at the active mirrors that may delete; a
    /// mirror that keeps the object is caught up by the deletion records of forget and prune.
    fn delete(&self, key: &str) -> Result<(), BackendError> {
        self.inner.primary.delete(key)?;
        for i in self.inner.active() {
            let m = &self.inner.mirrors[i].backend;
            if !m.is_append_only() {
                let _ = m.delete(key);
            }
        }
        Ok(())
    }

    fn is_append_only(&self) -> bool {
        self.inner.primary.is_append_only()
    }

    fn object_lock(&self) -> Option<Arc<super::ObjectLockClient>> {
        self.inner.primary.object_lock()
    }

    fn lock_retention(&self) -> Option<super::LockRetention> {
        self.inner.primary.lock_retention()
    }
}

struct TeeUpload {
    inner: Arc<Inner>,
    key: String,
    primary: Box<dyn Upload>,
    mirrors: Vec<(usize, Box<dyn Upload>)>,
}

impl Upload for TeeUpload {
    /// Writes to every location at once: a store that waits for its previous part (a local
    /// folder keeps one part in flight) must not hold the others up.
    fn write(&mut self, data: &[u8]) -> Result<(), BackendError> {
        if self.mirrors.is_empty() {
            return self.primary.write(data);
        }
        let mirrors = std::mem::take(&mut self.mirrors);
        let inner = &self.inner;
        let (r, kept) = std::thread::scope(|s| {
            let handles: Vec<_> = mirrors
                .into_iter()
                .map(|(i, mut u)| {
                    let h = s.spawn(move || match u.write(data) {
                        Ok(()) => Some((i, u)),
                        Err(e) => {
                            u.abort();
                            inner.fail(i, &e);
                            None
                        }
                    });
                    (i, h)
                })
                .collect();
            let r = self.primary.write(data);
            let kept: Vec<_> = handles
                .into_iter()
                .filter_map(|(i, h)| match h.join() {
                    Ok(k) => k,
                    Err(_) => {
                        inner.fail_with(i, "upload thread panicked".into());
                        None
                    }
                })
                .collect();
            (r, kept)
        });
        self.mirrors = kept;
        r
    }

    fn finish(self: Box<Self>) -> Result<(), BackendError> {
        let TeeUpload {
            inner,
            key,
            primary,
            mirrors,
        } = *self;
        let r = std::thread::scope(|s| {
            for (i, u) in mirrors {
                let inner = &inner;
                s.spawn(move || {
                    if let Err(e) = u.finish() {
                        inner.fail(i, &e);
                    }
                });
            }
            primary.finish()
        });
        r?;
        inner.record(&key);
        Ok(())
    }

    fn abort(self: Box<Self>) {
        self.primary.abort();
        for (_, u) in self.mirrors {
            u.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::ObjectStoreBackend;
    use super::*;

    /// A store whose writes fail after `ok` of them.
    struct Flaky {
        inner: ObjectStoreBackend,
        ok: std::sync::atomic::AtomicUsize,
    }

    impl Flaky {
        fn check(&self, key: &str) -> Result<(), BackendError> {
            if self
                .ok
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_err()
            {
                return Err(BackendError::new(
                    "flaky",
                    "put",
                    key,
                    BackendErrorKind::Other,
                    "down".into(),
                ));
            }
            Ok(())
        }
    }

    impl Backend for Flaky {
        fn location(&self) -> &str {
            "flaky"
        }
        fn get(&self, key: &str) -> Result<Vec<u8>, BackendError> {
            self.inner.get(key)
        }
        fn get_range(&self, key: &str, range: Range<u64>) -> Result<Vec<u8>, BackendError> {
            self.inner.get_range(key, range)
        }
        fn put(&self, key: &str, data: Vec<u8>, mode: PutMode) -> Result<(), BackendError> {
            self.check(key)?;
            self.inner.put(key, data, mode)
        }
        fn upload(&self, key: &str) -> Result<Box<dyn Upload>, BackendError> {
            self.check(key)?;
            self.inner.upload(key)
        }
        fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, BackendError> {
            self.inner.list(prefix)
        }
        fn head(&self, key: &str) -> Result<Option<u64>, BackendError> {
            self.inner.head(key)
        }
        fn delete(&self, key: &str) -> Result<(), BackendError> {
            self.inner.delete(key)
        }
    }

    #[test]
    fn writes_reach_every_mirror_and_a_failed_one_gets_nothing_after() {
        let p: Arc<dyn Backend> = Arc::new(ObjectStoreBackend::memory());
        let good: Arc<dyn Backend> = Arc::new(ObjectStoreBackend::memory());
        let flaky: Arc<dyn Backend> = Arc::new(Flaky {
            inner: ObjectStoreBackend::memory(),
            ok: 1.into(),
        });
        let t = Tee::new(p.clone(), vec![good.clone(), flaky.clone()]);
        let mut u = t.upload("data/00/pack").unwrap();
        u.write(b"pack bytes").unwrap();
        u.finish().unwrap();
        t.put("index/abc", b"index".to_vec(), PutMode::Overwrite).unwrap();
        t.put("named/ns/a", b"manifest".to_vec(), PutMode::Create).unwrap();
        // The primary decides a put-if-absent; the mirrors follow it.
        let e = t.put("named/ns/a", b"other".to_vec(), PutMode::Create).unwrap_err();
        assert_eq!(e.kind, BackendErrorKind::AlreadyExists);
        for k in ["data/00/pack", "index/abc", "named/ns/a"] {
            assert!(p.head(k).unwrap().is_some());
            assert!(good.head(k).unwrap().is_some(), "{k} mirrored");
        }
        assert_eq!(good.get("named/ns/a").unwrap(), b"manifest");
        assert!(flaky.head("data/00/pack").unwrap().is_some());
        assert!(flaky.head("index/abc").unwrap().is_none());
        assert!(
            flaky.head("named/ns/a").unwrap().is_none(),
            "no commit point without its index"
        );
        let r = t.take_round();
        assert_eq!(r.written, ["data/00/pack", "index/abc", "named/ns/a"]);
        assert!(r.mirrors[0].is_none());
        assert!(r.mirrors[1].as_deref().unwrap().contains("down"));
    }

    #[test]
    fn a_mirror_holding_a_different_object_under_the_name_is_taken_out() {
        let p: Arc<dyn Backend> = Arc::new(ObjectStoreBackend::memory());
        let same: Arc<dyn Backend> = Arc::new(ObjectStoreBackend::memory());
        let other: Arc<dyn Backend> = Arc::new(ObjectStoreBackend::memory());
        same.put("named/ns/a", b"MANIFEST".to_vec(), PutMode::Create).unwrap();
        other.put("named/ns/a", b"forked".to_vec(), PutMode::Create).unwrap();
        let t = Tee::new(p.clone(), vec![same.clone(), other.clone()]);
        // Case-blind equality stands for "the same stream sealed with another nonce".
        t.set_comparer(
            "named/",
            Arc::new(|_, ours, theirs| Some(ours.eq_ignore_ascii_case(theirs))),
        );
        t.put("named/ns/a", b"manifest".to_vec(), PutMode::Create).unwrap();
        let round = t.take_round();
        assert_eq!(round.mirrors[0], None, "the same content counts as written");
        let why = round.mirrors[1].as_deref().unwrap();
        assert!(why.contains("different object under this name"), "{why}");
        assert_eq!(other.get("named/ns/a").unwrap(), b"forked", "nothing overwritten");
        t.put("named/ns/b", b"next".to_vec(), PutMode::Create).unwrap();
        assert!(
            other.head("named/ns/b").unwrap().is_none(),
            "out for the rest of the round"
        );
    }
}
