//! Reading one repository from several locations: every read goes to the best location that is
//! up and falls back, object by object, to the next when a location is down, lacks the object or
//! returns bytes that fail their hash. Each fallback is recorded for the command's summary.
//!
//! Objects named by their own hash (`keys/`, `index/`, `snapshots/`, `marks/`, `deletions/`)
//! are verified here; pack data is verified by the repository (blob authentication), which asks
//! [`Backend::alternates`] for other copies when a blob fails.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use super::{Backend, BackendError, BackendErrorKind, ObjectInfo, PutMode, Upload};
use crate::id::Id;

/// A backend over several locations holding the same repository, best first.
pub struct FallbackReader {
    members: Vec<Arc<dyn Backend>>,
    down: Vec<AtomicBool>,
    notes: Mutex<Vec<String>>,
    location: String,
}

/// True for object names whose last component is the BLAKE3 hash of their bytes.
pub(crate) fn hash_named(key: &str) -> Option<Id> {
    let (folder, name) = key.rsplit_once('/')?;
    if matches!(folder, "keys" | "index" | "snapshots" | "marks" | "deletions") {
        Id::from_hex(name)
    } else {
        None
    }
}

impl FallbackReader {
    /// Reads from `members` in order (at least one).
    pub fn new(members: Vec<Arc<dyn Backend>>) -> Self {
        assert!(!members.is_empty(), "a fallback reader needs a location");
        let location = members.iter().map(|m| m.location()).collect::<Vec<_>>().join(", ");
        FallbackReader {
            down: members.iter().map(|_| AtomicBool::new(false)).collect(),
            members,
            notes: Mutex::new(Vec::new()),
            location,
        }
    }

    fn up(&self) -> impl Iterator<Item = (usize, &Arc<dyn Backend>)> {
        self.members
            .iter()
            .enumerate()
            .filter(|(i, _)| !self.down[*i].load(Ordering::Relaxed))
    }

    /// A failure other than "not found" takes the location out for the rest of the run (the
    /// store's own retries already happened), so a dead location costs its timeout once.
    fn failed(&self, i: usize, e: &BackendError) {
        if e.kind == BackendErrorKind::Other && !self.down[i].swap(true, Ordering::Relaxed) {
            self.note(format!(
                "{} is unavailable ({e}); reading from the other locations",
                self.members[i].location()
            ));
        }
    }

    fn note(&self, m: String) {
        let mut n = self.notes.lock().unwrap_or_else(|e| e.into_inner());
        if !n.contains(&m) {
            n.push(m);
        }
    }

    /// Runs `f` on each location that is up until one succeeds.
    fn read<T>(&self, key: &str, f: impl Fn(&dyn Backend) -> Result<T, BackendError>) -> Result<T, BackendError> {
        let mut first_err: Option<BackendError> = None;
        let mut tried = 0;
        for (i, m) in self.up() {
            tried += 1;
            match f(m.as_ref()) {
                Ok(v) => {
                    if tried > 1 {
                        self.note(format!("{key}: read from {}", m.location()));
                    }
                    return Ok(v);
                }
                Err(e) => {
                    if e.is_not_found() && e.message() == "not found" && self.members.len() > 1 {
                        self.note(format!("{key}: missing in {}", m.location()));
                    }
                    self.failed(i, &e);
                    first_err.get_or_insert(e);
                }
            }
        }
        Err(first_err.unwrap_or_else(|| self.all_down("read", key)))
    }

    fn all_down(&self, op: &'static str, key: &str) -> BackendError {
        BackendError::new(
            &self.location,
            op,
            key,
            BackendErrorKind::Other,
            "no location is reachable".into(),
        )
    }

    fn first_up(&self, op: &'static str, key: &str) -> Result<&Arc<dyn Backend>, BackendError> {
        self.up().next().map(|(_, m)| m).ok_or_else(|| self.all_down(op, key))
    }
}

impl Backend for FallbackReader {
    fn location(&self) -> &str {
        &self.location
    }

    fn get(&self, key: &str) -> Result<Vec<u8>, BackendError> {
        let want = hash_named(key);
        self.read(key, |m| {
            let data = m.get(key)?;
            if let Some(id) = want
                && Id::hash_of(&data) != id
            {
                self.note(format!("{key}: damaged in {} (hash mismatch)", m.location()));
                return Err(BackendError::new(
                    m.location(),
                    "get",
                    key,
                    BackendErrorKind::NotFound,
                    "content does not match its name".into(),
                ));
            }
            Ok(data)
        })
    }

    fn get_range(&self, key: &str, range: Range<u64>) -> Result<Vec<u8>, BackendError> {
        self.read(key, |m| m.get_range(key, range.clone()))
    }

    fn get_range_into(&self, key: &str, range: Range<u64>, buf: &mut Vec<u8>) -> Result<(), BackendError> {
        let buf = std::cell::RefCell::new(buf);
        self.read(key, |m| m.get_range_into(key, range.clone(), &mut buf.borrow_mut()))
    }

    fn put(&self, key: &str, data: Vec<u8>, mode: PutMode) -> Result<(), BackendError> {
        self.first_up("put", key)?.put(key, data, mode)
    }

    fn upload(&self, key: &str) -> Result<Box<dyn Upload>, BackendError> {
        self.first_up("upload", key)?.upload(key)
    }

    /// The union of every reachable location's listing, so an object present in only one of
    /// them (a backup that ran while another was down) is still seen.
    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, BackendError> {
        let mut all: BTreeMap<String, ObjectInfo> = BTreeMap::new();
        let mut any = false;
        let mut first_err = None;
        for (i, m) in self.up() {
            match m.list(prefix) {
                Ok(v) => {
                    any = true;
                    for o in v {
                        all.entry(o.key.clone()).or_insert(o);
                    }
                }
                Err(e) => {
                    self.failed(i, &e);
                    first_err.get_or_insert(e);
                }
            }
        }
        if !any {
            return Err(first_err.unwrap_or_else(|| self.all_down("list", prefix)));
        }
        Ok(all.into_values().collect())
    }

    fn head(&self, key: &str) -> Result<Option<u64>, BackendError> {
        let mut first_err = None;
        for (i, m) in self.up() {
            match m.head(key) {
                Ok(Some(s)) => return Ok(Some(s)),
                Ok(None) => {}
                Err(e) => {
                    self.failed(i, &e);
                    first_err.get_or_insert(e);
                }
            }
        }
        match first_err {
            Some(e) if self.up().next().is_none() => Err(e),
            _ => Ok(None),
        }
    }

    fn delete(&self, key: &str) -> Result<(), BackendError> {
        self.first_up("delete", key)?.delete(key)
    }

    fn is_append_only(&self) -> bool {
        self.members.iter().any(|m| m.is_append_only())
    }

    fn alternates(&self) -> Vec<Arc<dyn Backend>> {
        self.up().skip(1).map(|(_, m)| m.clone()).collect()
    }

    fn note_fallback(&self, message: String) {
        self.note(message);
    }

    fn fallbacks(&self) -> Vec<String> {
        self.notes.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

#[cfg(test)]
mod tests {
    use super::super::ObjectStoreBackend;
    use super::*;

    #[test]
    fn falls_back_on_missing_and_damaged_objects() {
        let a: Arc<dyn Backend> = Arc::new(ObjectStoreBackend::memory());
        let b: Arc<dyn Backend> = Arc::new(ObjectStoreBackend::memory());
        let body = b"snapshot bytes".to_vec();
        let key = format!("snapshots/{}", Id::hash_of(&body));
        b.put(&key, body.clone(), PutMode::Create).unwrap();
        a.put(&key, b"tampered".to_vec(), PutMode::Create).unwrap();
        b.put("data/only-in-b", vec![1, 2, 3], PutMode::Create).unwrap();
        let f = FallbackReader::new(vec![a, b]);
        assert_eq!(f.get(&key).unwrap(), body);
        assert_eq!(f.get_range("data/only-in-b", 1..3).unwrap(), vec![2, 3]);
        assert_eq!(f.list("data/").unwrap().len(), 1);
        let notes = f.fallbacks().join("\n");
        assert!(notes.contains("damaged in memory:"), "{notes}");
        assert!(notes.contains("missing in memory:"), "{notes}");
        assert!(f.get("data/nowhere").unwrap_err().is_not_found());
    }
}
