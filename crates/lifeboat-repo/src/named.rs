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
use crate::chunker::Chunker;
use crate::crypto::Codec;
use crate::error::{RepoError, Result};
pub use crate::fixed_sink::SharedBytes;

/// Asked after the workers are done with shared bytes and before anything is indexed: false
/// when the bytes may have changed while they were hashed and sealed (the file behind a memory
/// map was written to). A chunk sealed from bytes that changed after they were hashed would be
/// stored under an id that does not match it, so the whole commit is refused instead.
pub type Unchanged = Box<dyn Fn() -> bool + Send + Sync>;
use crate::fixed_sink::{FixedSink, Slots};
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
    /// Set when the stream was cut every that many bytes instead of at content-defined points;
    /// needed only to compare another stream with this one (readers just follow `content`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fixed_chunk_size: Option<u32>,
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
        if m.fixed_chunk_size == Some(0) {
            return Err(RepoError::damaged(key, "fixed chunk size 0"));
        }
        Ok(m)
    }

    /// How this stream was cut.
    pub fn chunking(&self) -> Chunking {
        self.fixed_chunk_size.map_or(Chunking::ContentDefined, Chunking::Fixed)
    }
}

/// How a named stream is cut into chunks. Equal streams cut the same way have equal id lists,
/// which is how a repeated push is told from a different one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Chunking {
    /// At content-defined cut points (the repository's chunker): deduplicates shifted data.
    #[default]
    ContentDefined,
    /// Every that many bytes (not 0). For streams that never share shifted data with others,
    /// such as WAL segments: no cut-point pass, and every chunk can be hashed and sealed in
    /// parallel. An append-only stream (a growing partial segment) still deduplicates its prefix.
    Fixed(u32),
}

/// Choices of a [`NamedWriter`].
#[derive(Clone, Copy, Debug, Default)]
pub struct NamedOptions {
    /// How new streams are cut (a stream compared with a stored one is cut like the stored one).
    pub chunking: Chunking,
    /// zstd level of new chunks; `None`: the repository's level.
    pub compression_level: Option<i32>,
    /// Codec of new chunks of fixed-chunked streams (content-defined ones always use zstd).
    pub codec: ChunkCodec,
}

/// How new chunks of a fixed-chunked stream are compressed. Readers need no setting: each blob
/// says how it was compressed (docs/format.md, "Blobs").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ChunkCodec {
    /// zstd at [`NamedOptions::compression_level`]: the better ratio.
    #[default]
    Zstd,
    /// LZ4: about 1.5x the speed of zstd level 1 for about half its ratio on WAL; for keeping
    /// up with a backlog.
    Lz4,
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

/// Where a queued stream's chunk ids are: known, or still in the parallel sink's workers.
enum Content {
    Ids(Vec<Id>),
    Slots(Slots),
}

/// What [`NamedWriter`] reads a stream from.
enum Input<'a> {
    Reader(&'a mut dyn Read),
    Shared(SharedBytes),
}

impl Input<'_> {
    fn reader(&mut self) -> Box<dyn Read + '_> {
        match self {
            Input::Reader(r) => Box::new(&mut **r),
            Input::Shared(b) => Box::new((**b).as_ref()),
        }
    }
}

struct Pending {
    manifest: NamedManifest,
    content: Content,
    /// Some(existing) when the name was already stored before this writer started.
    existing: Option<NamedManifest>,
    /// For shared bytes: whether they stayed unchanged (see [`Unchanged`]).
    unchanged: Option<Unchanged>,
}

enum Sink {
    ContentDefined(BlobSink),
    Fixed(FixedSink),
}

/// Stores several named streams with one set of packs and one index segment (a WAL push that
/// finds a backlog of ready segments stores them all in one go).
pub struct NamedWriter {
    sink: Sink,
    opts: NamedOptions,
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
        NamedWriter::with_options(repo, index, NamedOptions::default())
    }

    /// A writer with explicit chunking and compression (WAL: fixed chunks, a fast level).
    pub fn with_options(repo: &Repository, index: Index, opts: NamedOptions) -> NamedWriter {
        let repo = Arc::new(repo.clone());
        let level = opts.compression_level.unwrap_or(repo.config().compression_level);
        let sink = match opts.chunking {
            Chunking::ContentDefined => Sink::ContentDefined(BlobSink::new(repo, index, 0)),
            Chunking::Fixed(n) => {
                let codec = match opts.codec {
                    ChunkCodec::Zstd => Codec::Zstd(level),
                    ChunkCodec::Lz4 => Codec::Lz4,
                };
                Sink::Fixed(FixedSink::new(repo, index, n.max(1) as usize, codec))
            }
        };
        NamedWriter {
            sink,
            opts,
            pending: Vec::new(),
        }
    }

    fn repo(&self) -> &Arc<Repository> {
        match &self.sink {
            Sink::ContentDefined(s) => s.repo(),
            Sink::Fixed(s) => s.repo(),
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
        self.add_input(namespace, name, Input::Reader(content), meta)
    }

    /// As [`NamedWriter::add`], for content already in memory (a memory-mapped file): with fixed
    /// chunking the workers hash and seal slices of it without copying it first. `unchanged` is
    /// asked before the commit (see [`Unchanged`]); false fails [`NamedWriter::finish`].
    pub fn add_shared(
        &mut self,
        namespace: &str,
        name: &str,
        content: SharedBytes,
        meta: Option<serde_json::Value>,
        unchanged: Unchanged,
    ) -> Result<()> {
        self.add_input(namespace, name, Input::Shared(content), meta)?;
        if let Some(p) = self.pending.last_mut() {
            p.unchanged = Some(unchanged);
        }
        Ok(())
    }

    fn add_input(
        &mut self,
        namespace: &str,
        name: &str,
        mut content: Input<'_>,
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
        let existing = read_manifest(self.repo(), namespace, name)?;
        let mut chunking = self.opts.chunking;
        let (content, size) = match &existing {
            // Stored with another chunking (an older version, or another writer): cut this
            // stream the same way to compare; nothing is uploaded.
            Some(old) if old.chunking() != chunking => {
                chunking = old.chunking();
                let (ids, size) = stream_ids(self.repo(), &mut content.reader(), chunking)?;
                (Content::Ids(ids), size)
            }
            _ => match (&mut self.sink, content) {
                (Sink::Fixed(s), Input::Shared(bytes)) => {
                    let (slots, size) = s.store_shared(bytes, existing.is_none())?;
                    (Content::Slots(slots), size)
                }
                (Sink::Fixed(s), mut content) => {
                    let (slots, size) = s.store_stream(&mut content.reader(), existing.is_none())?;
                    (Content::Slots(slots), size)
                }
                (Sink::ContentDefined(s), mut content) => {
                    let (ids, size) = s.store_stream(&mut content.reader(), existing.is_none())?;
                    (Content::Ids(ids), size)
                }
            },
        };
        self.pending.push(Pending {
            manifest: NamedManifest {
                version: 1,
                namespace: namespace.into(),
                name: name.into(),
                size,
                content: Vec::new(),
                time: jiff::Timestamp::now(),
                meta,
                fixed_chunk_size: match chunking {
                    Chunking::ContentDefined => None,
                    Chunking::Fixed(n) => Some(n),
                },
            },
            content,
            existing,
            unchanged: None,
        });
        Ok(())
    }

    /// Sealed bytes uploaded so far.
    pub fn uploaded(&self) -> u64 {
        match &self.sink {
            Sink::ContentDefined(s) => s.stats().uploaded.load(Ordering::Relaxed),
            Sink::Fixed(s) => s.uploaded(),
        }
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
        let NamedWriter { sink, pending, .. } = self;
        let (repo, records, slot_ids) = match sink {
            Sink::ContentDefined(s) => {
                let repo = s.repo().clone();
                (repo, s.finish()?, None)
            }
            Sink::Fixed(s) => {
                let repo = s.repo().clone();
                let (records, ids) = s.finish()?;
                (repo, records, Some(ids))
            }
        };
        let pending: Vec<Pending> = pending
            .into_iter()
            .map(|mut p| {
                p.manifest.content = match std::mem::replace(&mut p.content, Content::Ids(Vec::new())) {
                    Content::Ids(ids) => ids,
                    Content::Slots(s) => slot_ids.as_ref().expect("fixed sink").get(s),
                };
                p
            })
            .collect();
        if let Some(p) = pending.iter().find(|p| p.unchanged.as_ref().is_some_and(|f| !f())) {
            // The packs written stay unindexed: garbage for prune, never read.
            return Err(RepoError::Invalid(format!(
                "{}/{} changed while it was being stored; nothing was committed",
                p.manifest.namespace, p.manifest.name
            )));
        }
        if !records.is_empty() {
            repo.write_index_segment(&records)?;
        }
        // Manifests are independent small objects, each synced on its own: several at once,
        // so a batch of segments costs a few sync round trips instead of one per segment.
        let threads = pending.len().clamp(1, 16);
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

/// The ids of a stream cut as `chunking` says, storing nothing.
fn stream_ids(repo: &Repository, reader: &mut dyn Read, chunking: Chunking) -> Result<(Vec<Id>, u64)> {
    let mut ids = Vec::new();
    let mut size = 0u64;
    match chunking {
        Chunking::ContentDefined => {
            let mut c = Chunker::new(repo.config().chunker, repo.keys().chunker_seed());
            c.chunk::<_, std::io::Error>(reader, |chunk| {
                size += chunk.len() as u64;
                ids.push(repo.keys().blob_id(chunk));
                Ok(())
            })
            .map_err(|e| RepoError::io("<input stream>", e))?;
        }
        Chunking::Fixed(n) => {
            let mut buf = vec![0u8; n.max(1) as usize];
            loop {
                let k = read_full(reader, &mut buf).map_err(|e| RepoError::io("<input stream>", e))?;
                if k == 0 {
                    break;
                }
                size += k as u64;
                ids.push(repo.keys().blob_id(&buf[..k]));
                if k < buf.len() {
                    break;
                }
            }
        }
    }
    Ok((ids, size))
}

/// Fills `buf` unless the reader ends first; returns the bytes read.
pub(crate) fn read_full(r: &mut dyn Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
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
                        Some(old) if old.chunking() == m.chunking() => same_or_conflict(&old, m),
                        // Cut differently: read theirs back and cut it like ours.
                        Some(old) => {
                            let index = repo.load_index_for_reading()?;
                            let mut r = StreamReader::new(repo, &index, &old);
                            let (ids, size) = stream_ids(repo, &mut r, m.chunking())?;
                            if size == m.size && ids == m.content {
                                PutStatus::AlreadyStored
                            } else {
                                PutStatus::Conflict
                            }
                        }
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

/// Whether `theirs`, found under `key` where `ours` was to be stored (a mirror or a replica that
/// already has the name), is the same stream: `Some(false)` when it differs or does not open
/// (damaged, or another repository's), `None` when that cannot be told without reading both
/// streams (cut differently), `Some(true)` when equal. Both are sealed manifests.
pub fn same_sealed_manifest(keys: &crate::crypto::Keys, key: &str, ours: &[u8], theirs: &[u8]) -> Option<bool> {
    let open = |d: &[u8]| {
        sealed::open(keys, Kind::Named, d, key)
            .ok()
            .and_then(|body| NamedManifest::decode(&body, key).ok())
    };
    let ours = open(ours)?;
    let Some(theirs) = open(theirs) else {
        return Some(false);
    };
    if ours.namespace != theirs.namespace || ours.name != theirs.name {
        return Some(false);
    }
    if ours.chunking() != theirs.chunking() {
        return None;
    }
    Some(same_or_conflict(&theirs, &ours) == PutStatus::AlreadyStored)
}

fn same_or_conflict(old: &NamedManifest, new: &NamedManifest) -> PutStatus {
    // Blob ids are keyed hashes of the chunks and chunking is deterministic, so equal streams
    // cut the same way (the caller made sure) have equal id lists.
    if old.size == new.size && old.content == new.content {
        PutStatus::AlreadyStored
    } else {
        PutStatus::Conflict
    }
}

/// Reads a stored stream chunk by chunk (each verified), for comparing it with another.
struct StreamReader<'a> {
    repo: &'a Repository,
    index: &'a Index,
    m: &'a NamedManifest,
    next: usize,
    buf: Vec<u8>,
    pos: usize,
    scratch: BlobScratch,
}

impl<'a> StreamReader<'a> {
    fn new(repo: &'a Repository, index: &'a Index, m: &'a NamedManifest) -> Self {
        StreamReader {
            repo,
            index,
            m,
            next: 0,
            buf: Vec::new(),
            pos: 0,
            scratch: BlobScratch::default(),
        }
    }
}

impl Read for StreamReader<'_> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.pos == self.buf.len() {
            let Some(id) = self.m.content.get(self.next) else {
                return Ok(0);
            };
            self.next += 1;
            let data = self
                .repo
                .read_blob_into(self.index, id, &mut self.scratch)
                .map_err(std::io::Error::other)?;
            self.buf.clear();
            self.buf.extend_from_slice(data);
            self.pos = 0;
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
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

    fn fixed() -> NamedOptions {
        NamedOptions {
            chunking: Chunking::Fixed(1 << 20),
            compression_level: Some(1),
            codec: ChunkCodec::Zstd,
        }
    }

    /// Shared bytes read back like a stream; shared bytes that changed before the commit fail
    /// it with nothing indexed or named.
    #[test]
    fn shared_bytes_are_stored_unless_they_changed() {
        let r = repo();
        let d = data((2 << 20) + 9, 3);
        let mut w = NamedWriter::with_options(&r, Index::default(), fixed());
        w.add_shared("wal-1", "a", Arc::new(d.clone()), None, Box::new(|| true))
            .unwrap();
        assert_eq!(w.finish().unwrap()[0].status, PutStatus::Stored);
        assert_eq!(read_back(&r, "wal-1", "a"), d);
        let packs = r.backend().list("index/").unwrap().len();
        let mut w = NamedWriter::with_options(&r, Index::default(), fixed());
        w.add_shared("wal-1", "b", Arc::new(data(3 << 20, 4)), None, Box::new(|| false))
            .unwrap();
        let e = w.finish().unwrap_err().to_string();
        assert!(e.contains("wal-1/b changed while it was being stored"), "{e}");
        assert!(read_manifest(&r, "wal-1", "b").unwrap().is_none());
        assert_eq!(r.backend().list("index/").unwrap().len(), packs, "nothing indexed");
    }

    /// The compression marker of every stored blob of `name` (what the sealed plaintext starts with).
    fn markers(r: &Repository, name: &str) -> Vec<u8> {
        let m = read_manifest(r, "wal-1", name).unwrap().unwrap();
        let idx = r.load_index_for_reading().unwrap();
        m.content
            .iter()
            .map(|id| {
                let loc = idx.get(id).unwrap();
                let pack = r
                    .backend()
                    .get(&crate::repository::pack_key(&idx.pack(loc.pack).id))
                    .unwrap();
                let sealed = &pack[loc.offset as usize..(loc.offset + loc.length) as usize];
                let aad = crate::format::pack::blob_aad(loc.blob_type, id);
                r.keys().open(&aad, sealed, "blob").unwrap()[0]
            })
            .collect()
    }

    /// LZ4-coded chunks read back like zstd ones, deduplicate against them (ids are of the
    /// plaintext), and a repeat push under either codec is recognised.
    #[test]
    fn lz4_chunks_round_trip_and_compare_with_zstd_ones() {
        let r = repo();
        let lz4 = NamedOptions {
            codec: ChunkCodec::Lz4,
            ..fixed()
        };
        let mut a = data(3 << 20, 8);
        a.extend(vec![0u8; 1 << 20]);
        a.extend(vec![7u8; 100]); // a short last chunk
        assert_eq!(put_with(&r, lz4, "a", &a), PutStatus::Stored);
        assert_eq!(markers(&r, "a"), [2, 2, 2, 2, 2]);
        assert_eq!(read_back(&r, "wal-1", "a"), a);
        assert_eq!(put_with(&r, fixed(), "a", &a), PutStatus::AlreadyStored);
        let mut b = a.clone();
        b[0] ^= 1;
        assert_eq!(put_with(&r, lz4, "a", &b), PutStatus::Conflict);
        assert_eq!(put_with(&r, fixed(), "b", &b), PutStatus::Stored);
        assert_eq!(markers(&r, "b")[0], 1, "the changed chunk is new: zstd");
        assert_eq!(read_back(&r, "wal-1", "b"), b);
        let rep = crate::check::check(&r, crate::check::ReadData::All, &Default::default()).unwrap();
        assert!(rep.ok(), "check --read-data: {:?}", rep.errors);
    }

    fn put_with(r: &Repository, opts: NamedOptions, name: &str, content: &[u8]) -> PutStatus {
        let mut w = NamedWriter::with_options(r, Index::default(), opts);
        w.add("wal-1", name, &mut &content[..], None).unwrap();
        w.finish().unwrap().pop().unwrap().status
    }

    #[test]
    fn fixed_chunks_round_trip_are_idempotent_and_refuse_different_content() {
        let r = repo();
        let mut a = data(3 << 20, 3);
        a.extend(vec![0u8; 13 << 20]); // a segment switched early: zero-filled tail
        let name = "000000010000000000000007";
        assert_eq!(put_with(&r, fixed(), name, &a), PutStatus::Stored);
        let m = read_manifest(&r, "wal-1", name).unwrap().unwrap();
        assert_eq!(m.fixed_chunk_size, Some(1 << 20));
        assert_eq!(m.content.len(), 16);
        let idx = r.load_index_for_reading().unwrap();
        assert_eq!(idx.len(), 4, "three data chunks and one zero chunk, stored once");
        assert_eq!(read_back(&r, "wal-1", name), a);
        let packs = r.backend().list("data/").unwrap().len();
        assert_eq!(put_with(&r, fixed(), name, &a), PutStatus::AlreadyStored);
        assert_eq!(
            r.backend().list("data/").unwrap().len(),
            packs,
            "nothing uploaded for a repeat"
        );
        let mut b = a.clone();
        b[5 << 20] = 1;
        assert_eq!(put_with(&r, fixed(), name, &b), PutStatus::Conflict);
        assert_eq!(put_with(&r, NamedOptions::default(), name, &b), PutStatus::Conflict);
        assert_eq!(
            put_with(&r, NamedOptions::default(), name, &a),
            PutStatus::AlreadyStored
        );
        assert_eq!(read_back(&r, "wal-1", name), a, "stored stream untouched");
    }

    /// Segments stored before fixed chunks existed (content-defined, no `fixed_chunk_size`) are
    /// recognised by a fixed-chunk writer, and refused when different.
    #[test]
    fn fixed_writer_compares_with_content_defined_manifests() {
        let r = repo();
        let a = data(5 << 20, 4);
        assert_eq!(put_with(&r, NamedOptions::default(), "old", &a), PutStatus::Stored);
        let m = read_manifest(&r, "wal-1", "old").unwrap().unwrap();
        assert_eq!(m.fixed_chunk_size, None);
        assert!(
            !String::from_utf8(serde_json::to_vec(&m).unwrap())
                .unwrap()
                .contains("fixed_chunk_size")
        );
        assert_eq!(put_with(&r, fixed(), "old", &a), PutStatus::AlreadyStored);
        assert_eq!(put_with(&r, fixed(), "old", &data(5 << 20, 5)), PutStatus::Conflict);
    }

    /// Two writers race for one name with different chunkings: the loser reads the winner's
    /// stream back to compare.
    #[test]
    fn race_between_chunkings_compares_content() {
        for (same, want) in [(true, PutStatus::AlreadyStored), (false, PutStatus::Conflict)] {
            let r = repo();
            let a = data(3 << 20, 6);
            let theirs = if same { a.clone() } else { data(3 << 20, 7) };
            let mut w = NamedWriter::with_options(&r, Index::default(), fixed());
            w.add("wal-1", "n", &mut a.as_slice(), None).unwrap();
            assert_eq!(put_with(&r, NamedOptions::default(), "n", &theirs), PutStatus::Stored);
            assert_eq!(w.finish().unwrap()[0].status, want);
            assert_eq!(read_back(&r, "wal-1", "n"), theirs);
        }
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
