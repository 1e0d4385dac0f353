//! Named manifests: streams stored under a stable name outside any snapshot.
//!
//! Continuous archiving produces thousands of small, individually named streams (PostgreSQL WAL
//! segments such as `000000010000000000000003`) that must be found by name, pushed exactly once,
//! and kept or deleted on their own schedule. A snapshot per segment would drown `snapshots` and
//! retention; instead each stream is stored as chunks in packs, like file contents, plus a small
//! sealed manifest at `named/<namespace>/<name>`.
//!
//! Rules (see docs/format.md, "Named manifests"):
//! - The manifest is written put-if-absent after its packs and index segment: it is the commit
//!   point of that stream, so a name that lists is always fully readable.
//! - A second push under the same name with the same content succeeds without writing anything
//!   (the archiver may retry after a crash); with different content it is refused and the stored
//!   stream is left untouched.
//! - Prune treats every named manifest as a root.
//!
//! The engine knows nothing of WAL: namespaces and names are opaque strings.

use std::io::{Read, Write};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::backend::{BackendErrorKind, PutMode};
use crate::blob_sink::BlobSink;
use crate::error::{RepoError, Result};
use crate::format::index::PackRecord;
use crate::format::sealed::{self, Kind};
use crate::id::Id;
use crate::index::Index;
use crate::repository::{BlobScratch, Repository};

/// The stored manifest of one named stream.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct NamedManifest {
    /// Format version, 1.
    pub version: u32,
    /// Namespace (e.g. `wal-<system id>`).
    pub namespace: String,
    /// Name inside the namespace.
    pub name: String,
    /// Length of the stream in bytes.
    pub size: u64,
    /// Data blob ids, in order.
    pub content: Vec<Id>,
    /// When it was stored.
    pub time: jiff::Timestamp,
    /// Free-form metadata of the caller (timeline, source host…).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meta: Option<serde_json::Value>,
}

impl NamedManifest {
    /// Parses a stored body.
    pub fn decode(body: &[u8], key: &str) -> Result<NamedManifest> {
        let m: NamedManifest =
            serde_json::from_slice(body).map_err(|e| RepoError::damaged(key, format!("malformed manifest: {e}")))?;
        if m.version != 1 {
            return Err(RepoError::UnsupportedVersion {
                name: key.into(),
                found: m.version,
                supported: 1,
            });
        }
        Ok(m)
    }
}

/// What happened to one stream handed to a [`NamedWriter`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PutStatus {
    /// Newly stored.
    Stored,
    /// Already stored with the same content; nothing written.
    AlreadyStored,
    /// A different stream is stored under this name; nothing written, the stored one untouched.
    Conflict,
}

/// The outcome for one name.
#[derive(Clone, Debug, serde::Serialize)]
pub struct PutOutcome {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Bytes in the stream.
    pub size: u64,
    /// What happened.
    pub status: PutStatus,
}

/// Object key of a named manifest.
pub fn named_key(namespace: &str, name: &str) -> String {
    format!("named/{namespace}/{name}")
}

/// Checks a namespace or name: 1–200 characters of `A-Z a-z 0-9 . _ -`, not starting with a dot.
pub fn validate_name(what: &str, s: &str) -> Result<()> {
    let ok = !s.is_empty()
        && s.len() <= 200
        && !s.starts_with('.')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(RepoError::Invalid(format!(
            "invalid {what} {s:?}: use letters, digits, '.', '_' and '-' (not starting with '.')"
        )))
    }
}

struct Pending {
    manifest: NamedManifest,
    /// Some(existing) when the name was already stored before this writer started.
    existing: Option<NamedManifest>,
}

/// Stores several named streams with one set of packs and one index segment (a WAL push that
/// finds a backlog of ready segments stores them all in one go).
pub struct NamedWriter {
    sink: BlobSink,
    pending: Vec<Pending>,
}

impl NamedWriter {
    /// A writer that deduplicates only within itself (no index load: WAL rarely shares chunks
    /// with older data, and loading the index would cost every push).
    pub fn new(repo: &Repository) -> NamedWriter {
        NamedWriter::with_index(repo, Index::default())
    }

    /// A writer that also deduplicates against `index`.
    pub fn with_index(repo: &Repository, index: Index) -> NamedWriter {
        NamedWriter {
            sink: BlobSink::new(Arc::new(repo.clone()), index, 0),
            pending: Vec::new(),
        }
    }

    /// Reads `content` to its end and queues it under `namespace/name`. If the name is already
    /// stored, the content is only hashed and compared (nothing is uploaded).
    pub fn add(
        &mut self,
        namespace: &str,
        name: &str,
        content: &mut dyn Read,
        meta: Option<serde_json::Value>,
    ) -> Result<()> {
        validate_name("namespace", namespace)?;
        validate_name("name", name)?;
        if self
            .pending
            .iter()
            .any(|p| p.manifest.namespace == namespace && p.manifest.name == name)
        {
            return Err(RepoError::Invalid(format!("{namespace}/{name} added twice")));
        }
        let existing = read_manifest(self.sink.repo(), namespace, name)?;
        let (content, size) = self.sink.store_stream(content, existing.is_none())?;
        self.pending.push(Pending {
            manifest: NamedManifest {
                version: 1,
                namespace: namespace.into(),
                name: name.into(),
                size,
                content,
                time: jiff::Timestamp::now(),
                meta,
            },
            existing,
        });
        Ok(())
    }

    /// Sealed bytes uploaded so far.
    pub fn uploaded(&self) -> u64 {
        self.sink.stats().uploaded.load(Ordering::Relaxed)
    }

    /// Uploads everything, writes the index segment, then each manifest (put-if-absent). Returns
    /// only once every `Stored` manifest is durably stored. A storage error fails the whole call;
    /// conflicts are reported per name.
    pub fn finish(self) -> Result<Vec<PutOutcome>> {
        Ok(self.finish_with_records()?.0)
    }

    /// [`NamedWriter::finish`], also returning the packs written, so a long-running writer (WAL
    /// streaming) can deduplicate its next streams against them without reloading the index.
    pub fn finish_with_records(self) -> Result<(Vec<PutOutcome>, Vec<PackRecord>)> {
        let NamedWriter { sink, pending } = self;
        let repo = sink.repo().clone();
        let records = sink.finish()?;
        if !records.is_empty() {
            repo.write_index_segment(&records)?;
        }
        // Manifests are independent small objects, each synced on its own: several at once,
        // so a batch of segments costs a few sync round trips instead of one per segment.
        let threads = pending.len().clamp(1, 8);
        let per = pending.len().div_ceil(threads).max(1);
        let results: Vec<Result<PutOutcome>> = std::thread::scope(|sc| {
            let handles: Vec<_> = pending
                .chunks(per)
                .map(|part| {
                    let repo = &repo;
                    sc.spawn(move || part.iter().map(|p| put_manifest(repo, p)).collect::<Vec<_>>())
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().unwrap_or_else(|_| vec![Err(RepoError::Interrupted)]))
                .collect()
        });
        let out = results.into_iter().collect::<Result<Vec<_>>>()?;
        Ok((out, records))
    }
}

/// Writes one manifest put-if-absent (or compares with the one already there).
fn put_manifest(repo: &Repository, p: &Pending) -> Result<PutOutcome> {
    let m = &p.manifest;
    let status = match &p.existing {
        Some(old) => same_or_conflict(old, m),
        None => {
            let key = named_key(&m.namespace, &m.name);
            let body = serde_json::to_vec(m).expect("manifest serializes");
            match repo
                .backend()
                .put(&key, sealed::seal(repo.keys(), Kind::Named, &body), PutMode::Create)
            {
                Ok(()) => PutStatus::Stored,
                // Raced with another pusher of the same name: compare with theirs.
                Err(e) if e.kind == BackendErrorKind::AlreadyExists => {
                    match read_manifest(repo, &m.namespace, &m.name)? {
                        Some(old) => same_or_conflict(&old, m),
                        None => return Err(e.into()),
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
    };
    Ok(PutOutcome {
        namespace: m.namespace.clone(),
        name: m.name.clone(),
        size: m.size,
        status,
    })
}

fn same_or_conflict(old: &NamedManifest, new: &NamedManifest) -> PutStatus {
    // Blob ids are keyed hashes of the chunks and chunking is deterministic, so equal streams
    // have equal id lists.
    if old.size == new.size && old.content == new.content {
        PutStatus::AlreadyStored
    } else {
        PutStatus::Conflict
    }
}

/// Stores one stream (see [`NamedWriter`]).
pub fn put(
    repo: &Repository,
    namespace: &str,
    name: &str,
    content: &mut dyn Read,
    meta: Option<serde_json::Value>,
) -> Result<PutOutcome> {
    let mut w = NamedWriter::new(repo);
    w.add(namespace, name, content, meta)?;
    Ok(w.finish()?.pop().expect("one outcome"))
}

/// Reads a manifest, `None` if the name is not stored.
pub fn read_manifest(repo: &Repository, namespace: &str, name: &str) -> Result<Option<NamedManifest>> {
    validate_name("namespace", namespace)?;
    validate_name("name", name)?;
    let key = named_key(namespace, name);
    let data = match repo.backend().get(&key) {
        Ok(d) => d,
        Err(e) if e.is_not_found() => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let body = sealed::open(repo.keys(), Kind::Named, &data, &key)?;
    let m = NamedManifest::decode(&body, &key)?;
    if m.namespace != namespace || m.name != name {
        // A manifest copied or renamed under another name must not pass as that name.
        return Err(RepoError::damaged(&key, "manifest names another stream"));
    }
    Ok(Some(m))
}

/// Writes the stream of a manifest to `out`, verifying every chunk and the total length.
/// `index` must come from [`Repository::load_index_for_reading`] (or cover the manifest's packs).
pub fn read_to(repo: &Repository, index: &Index, m: &NamedManifest, out: &mut dyn Write) -> Result<u64> {
    let mut scratch = BlobScratch::default();
    let mut n = 0u64;
    let key = named_key(&m.namespace, &m.name);
    for id in &m.content {
        let data = repo.read_blob_into(index, id, &mut scratch).map_err(|e| match e {
            RepoError::MissingBlob { id, .. } => RepoError::MissingBlob {
                id,
                needed_by: key.clone(),
            },
            e => e,
        })?;
        out.write_all(data)
            .map_err(|e| RepoError::io(format!("<output of {key}>"), e))?;
        n += data.len() as u64;
    }
    if n != m.size {
        return Err(RepoError::damaged(
            &key,
            format!("stream is {n} bytes, manifest says {}", m.size),
        ));
    }
    Ok(n)
}

/// Names stored in a namespace, sorted.
pub fn list(repo: &Repository, namespace: &str) -> Result<Vec<String>> {
    validate_name("namespace", namespace)?;
    let prefix = format!("named/{namespace}/");
    let mut names: Vec<String> = repo
        .backend()
        .list(&prefix)?
        .into_iter()
        .filter_map(|o| o.key.strip_prefix(&prefix).map(str::to_string))
        .filter(|n| !n.contains('/'))
        .collect();
    names.sort();
    Ok(names)
}

/// Namespaces that hold at least one name, sorted.
pub fn namespaces(repo: &Repository) -> Result<Vec<String>> {
    let mut out: Vec<String> = repo
        .backend()
        .list("named/")?
        .into_iter()
        .filter_map(|o| o.key.strip_prefix("named/")?.split('/').next().map(str::to_string))
        .collect();
    out.sort();
    out.dedup();
    Ok(out)
}

/// Deletes a name (retention). Its chunks are freed by a later prune.
pub fn delete(repo: &Repository, namespace: &str, name: &str) -> Result<()> {
    validate_name("namespace", namespace)?;
    validate_name("name", name)?;
    Ok(repo.backend().delete(&named_key(namespace, name))?)
}

/// Every manifest in the repository, and the keys of those that could not be read (prune
/// refuses to run on an incomplete picture).
pub fn all_manifests(repo: &Repository) -> Result<(Vec<NamedManifest>, Vec<RepoError>)> {
    let mut ok = Vec::new();
    let mut bad = Vec::new();
    for o in repo.backend().list("named/")? {
        let r = repo
            .backend()
            .get(&o.key)
            .map_err(RepoError::from)
            .and_then(|d| sealed::open(repo.keys(), Kind::Named, &d, &o.key))
            .and_then(|b| NamedManifest::decode(&b, &o.key));
        match r {
            Ok(m) => ok.push(m),
            Err(RepoError::Backend(e)) if e.is_not_found() => {} // deleted meanwhile
            Err(RepoError::Backend(e)) => return Err(e.into()),
            Err(e) => bad.push(e),
        }
    }
    Ok((ok, bad))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::InitOptions;
    use crate::crypto::KdfParams;

    fn repo() -> Repository {
        let store = crate::backend::open("memory:").unwrap();
        let opts = InitOptions {
            kdf: KdfParams::TESTING,
            ..Default::default()
        };
        Repository::init(store, b"pw", &opts).unwrap()
    }

    fn data(n: usize, seed: u8) -> Vec<u8> {
        (0..n).map(|i| ((i * 31 + seed as usize) % 251) as u8 ^ seed).collect()
    }

    fn read_back(r: &Repository, ns: &str, name: &str) -> Vec<u8> {
        let m = read_manifest(r, ns, name).unwrap().unwrap();
        let idx = r.load_index_for_reading().unwrap();
        let mut out = Vec::new();
        read_to(r, &idx, &m, &mut out).unwrap();
        out
    }

    #[test]
    fn put_is_idempotent_and_refuses_different_content() {
        let r = repo();
        let a = data(3 << 20, 1);
        let b = data(3 << 20, 2);
        assert_eq!(
            put(&r, "wal-1", "000000010000000000000001", &mut a.as_slice(), None)
                .unwrap()
                .status,
            PutStatus::Stored
        );
        let packs = r.backend().list("data/").unwrap().len();
        assert_eq!(
            put(&r, "wal-1", "000000010000000000000001", &mut a.as_slice(), None)
                .unwrap()
                .status,
            PutStatus::AlreadyStored
        );
        assert_eq!(
            r.backend().list("data/").unwrap().len(),
            packs,
            "nothing uploaded for a repeat"
        );
        assert_eq!(
            put(&r, "wal-1", "000000010000000000000001", &mut b.as_slice(), None)
                .unwrap()
                .status,
            PutStatus::Conflict
        );
        assert_eq!(
            read_back(&r, "wal-1", "000000010000000000000001"),
            a,
            "stored stream untouched"
        );
    }

    #[test]
    fn batch_list_delete() {
        let r = repo();
        let mut w = NamedWriter::new(&r);
        for i in 0..3u8 {
            w.add(
                "ns",
                &format!("n{i}"),
                &mut data(100_000, i).as_slice(),
                Some(serde_json::json!({"i": i})),
            )
            .unwrap();
        }
        assert!(w.add("ns", "n0", &mut &b""[..], None).is_err());
        assert!(w.add("ns", "../x", &mut &b""[..], None).is_err());
        let out = w.finish().unwrap();
        assert!(out.iter().all(|o| o.status == PutStatus::Stored));
        assert_eq!(
            r.backend().list("index/").unwrap().len(),
            1,
            "one index segment per batch"
        );
        assert_eq!(list(&r, "ns").unwrap(), vec!["n0", "n1", "n2"]);
        assert_eq!(namespaces(&r).unwrap(), vec!["ns"]);
        assert_eq!(read_back(&r, "ns", "n2"), data(100_000, 2));
        let m = read_manifest(&r, "ns", "n1").unwrap().unwrap();
        assert_eq!(m.meta.unwrap()["i"], 1);
        delete(&r, "ns", "n1").unwrap();
        assert_eq!(list(&r, "ns").unwrap(), vec!["n0", "n2"]);
        assert!(read_manifest(&r, "ns", "n1").unwrap().is_none());
        // Empty streams are fine.
        put(&r, "ns", "empty", &mut &b""[..], None).unwrap();
        assert!(read_back(&r, "ns", "empty").is_empty());
    }

    #[test]
    fn prune_keeps_named_and_frees_deleted() {
        let r = repo();
        put(&r, "ns", "keep", &mut data(2 << 20, 5).as_slice(), None).unwrap();
        put(&r, "ns", "drop", &mut data(2 << 20, 6).as_slice(), None).unwrap();
        delete(&r, "ns", "drop").unwrap();
        let opts = crate::maintenance::PruneOptions {
            grace: std::time::Duration::ZERO,
            ..Default::default()
        };
        crate::maintenance::prune(&r, &opts).unwrap();
        crate::maintenance::prune(&r, &opts).unwrap();
        assert_eq!(read_back(&r, "ns", "keep"), data(2 << 20, 5));
        assert_eq!(
            r.backend().list("data/").unwrap().len(),
            1,
            "the deleted stream's pack is gone"
        );
    }

    #[test]
    fn manifest_under_another_name_is_refused() {
        let r = repo();
        put(&r, "ns", "a", &mut &b"x"[..], None).unwrap();
        let raw = r.backend().get("named/ns/a").unwrap();
        r.backend().put("named/ns/b", raw, PutMode::Create).unwrap();
        assert!(matches!(read_manifest(&r, "ns", "b"), Err(RepoError::Damaged { .. })));
    }

    #[test]
    fn check_sees_named_manifests() {
        let r = repo();
        put(&r, "ns", "a", &mut data(1 << 20, 9).as_slice(), None).unwrap();
        let rep = crate::check::check(&r, crate::check::ReadData::None, &Default::default()).unwrap();
        assert!(rep.ok(), "{:?}", rep.errors);
        for o in r.backend().list("data/").unwrap() {
            r.backend().delete(&o.key).unwrap();
        }
        let rep = crate::check::check(&r, crate::check::ReadData::None, &Default::default()).unwrap();
        assert!(rep.errors.iter().any(|e| e.contains("named/ns/a")), "{:?}", rep.errors);
    }
}
