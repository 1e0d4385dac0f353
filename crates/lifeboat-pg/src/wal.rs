//! WAL archiving: `archive_command` and `restore_command` support.
//!
//! **Push** (`lifeboat wal push %p`). Each segment is stored as a named stream in the namespace
//! `wal-<system identifier>` (see `lifeboat_repo::named`): put-if-absent, so a repeated push of the
//! same content succeeds and a different segment under the same name is refused, never
//! overwritten. The call returns (and PostgreSQL may recycle the segment) only after the manifest
//! is durably stored.
//!
//! Opening the repository costs an Argon2id key derivation (tens of milliseconds, on purpose), so
//! one process per segment cannot reach 100 segments/s. Like pgBackRest's asynchronous push, a
//! push also stores the other segments already marked `.ready` in `pg_wal/archive_status` (up to
//! a batch limit), in the same packs and index segment, and leaves a local *marker* per stored
//! segment (`<spool>/pushed/<name>`: size, inode, modification and change times). A later call
//! for a marked name whose file has the same stamp returns at once without reading it or opening
//! the repository. The marker is written only after the manifest is stored; a marker that does
//! not match falls back to the full comparison against the repository, so the fast path can
//! never acknowledge a segment that is not stored with that exact content. (Markers of `wal
//! stream` carry a BLAKE3 of the content instead of a stamp.) Security trade-off: none — the
//! fast path holds no key and learns nothing it could not read from pg_wal itself.
//!
//! With `--background`, a backlog goes to one background pusher that the calls wait for
//! ([`crate::wal_ahead`]): the archiver's per-call cost then overlaps with the pusher's.
//!
//! Segments are stored in fixed 1 MiB chunks with a fast zstd level ([`wal_options`]), so the
//! calling thread only reads and every core hashes, compresses and encrypts. With
//! [`WalCompression::Auto`], a backlog (a call that stores [`AUTO_LZ4_SEGMENTS`] or more
//! segments) is compressed with LZ4 instead: its codec runs at about 1.5x zstd's speed for half
//! the ratio, but in the whole pipeline that saved only about 7 % of a segment's CPU, so zstd
//! stays the default.
//!
//! **Fetch** (`lifeboat wal fetch %f %p`) restores one segment; a background prefetcher keeps the
//! next ones of the same timeline in a local spool ([`crate::wal_prefetch`]), so recovery neither
//! waits for the repository at every segment nor pays the key derivation for each.

use std::io::Read;
use std::path::{Path, PathBuf};

use lifeboat_repo::Repository;
use lifeboat_repo::named::{self, ChunkCodec, Chunking, NamedOptions, NamedWriter, PutStatus};

use crate::error::{PgError, Result};
use crate::wal_names::is_history;

/// Reads the system identifier from `global/pg_control` (its first 8 bytes, native order): what
/// names a cluster's WAL namespace, available to `archive_command` without a connection.
pub fn system_identifier(data_dir: &Path) -> Result<String> {
    let p = data_dir.join("global/pg_control");
    let mut f = std::fs::File::open(&p).map_err(|e| PgError::io(&p, e))?;
    let mut b = [0u8; 8];
    f.read_exact(&mut b).map_err(|e| PgError::io(&p, e))?;
    Ok(u64::from_ne_bytes(b).to_string())
}

/// WAL is cut into chunks of this size at fixed offsets. Segments never share shifted data, so
/// content-defined cut points buy nothing and cost a sequential pass; fixed chunks are hashed and
/// sealed on every core at once, a zero-filled tail (a segment switched early) is stored once,
/// and a growing partial segment (`wal stream`) still shares its unchanged prefix.
pub const WAL_CHUNK_SIZE: u32 = 1 << 20;

/// zstd level of WAL (or the repository's level if lower): level 1 compresses pgbench WAL about
/// as well as 2 or 3 (8.5x on busy segments, 35x on bulk loads) and is the fastest positive level.
pub const WAL_COMPRESSION_LEVEL: i32 = 1;

/// A call (or a commit of the background pusher, or a sweep of `wal stream`) storing at least
/// this many segments means WAL is produced faster than it is compressed: `auto` then uses LZ4.
/// 8 segments are 128 MiB waiting (several seconds of WAL on a busy server). A batch holds what
/// arrived while the previous one was stored, so while zstd keeps up with the server batches
/// stay at a few segments; they grow past 8 only when WAL comes in nearly as fast as it is
/// stored, or after an outage of the repository.
pub const AUTO_LZ4_SEGMENTS: usize = 8;

/// How WAL is compressed (`wal push --compression`, `repository.wal_compression`). Readers need
/// no setting: each stored chunk says how it was compressed, so a repository may hold both.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WalCompression {
    /// zstd level 1 while the archiver keeps up, LZ4 for a backlog ([`AUTO_LZ4_SEGMENTS`]).
    Auto,
    /// Always zstd (level 1, or the repository's level if lower): the smaller archive. The
    /// default, because LZ4's saving (about 7 % of a segment's CPU) did not show in segments/s
    /// beyond the noise, while it stores about 1.8 times the bytes.
    #[default]
    Zstd,
    /// Always LZ4: the least CPU per segment, about twice the archive size of zstd.
    Lz4,
}

impl WalCompression {
    /// The codec for a batch of `segments` segments.
    pub fn codec_for(self, segments: usize) -> ChunkCodec {
        match self {
            WalCompression::Zstd => ChunkCodec::Zstd,
            WalCompression::Lz4 => ChunkCodec::Lz4,
            WalCompression::Auto if segments >= AUTO_LZ4_SEGMENTS => ChunkCodec::Lz4,
            WalCompression::Auto => ChunkCodec::Zstd,
        }
    }

    /// Parses `auto`, `zstd` or `lz4`.
    pub fn parse(s: &str) -> Option<WalCompression> {
        match s {
            "auto" => Some(WalCompression::Auto),
            "zstd" => Some(WalCompression::Zstd),
            "lz4" => Some(WalCompression::Lz4),
            _ => None,
        }
    }
}

/// How WAL segments and partial uploads are stored, new chunks compressed with `codec`.
pub fn wal_options(repo: &Repository, codec: ChunkCodec) -> NamedOptions {
    NamedOptions {
        chunking: Chunking::Fixed(WAL_CHUNK_SIZE),
        compression_level: Some(repo.config().compression_level.min(WAL_COMPRESSION_LEVEL)),
        codec,
    }
}

/// What a push did.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct PushReport {
    /// The segment asked for.
    pub name: String,
    /// Newly stored segments (the one asked for and ready ones batched with it).
    pub stored: Vec<String>,
    /// Segments that were already stored with the same content.
    pub already_stored: Vec<String>,
    /// True when the asked segment was confirmed by its local marker (repository not opened).
    pub fast_path: bool,
    /// True when the marker was written by the background pusher this call waited for
    /// ([`crate::wal_ahead`]).
    pub background: bool,
    /// Bytes of WAL handled.
    pub bytes: u64,
    /// How the newly stored segments were compressed (`zstd` or `lz4`); absent when nothing
    /// was stored by this call.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub codec: Option<ChunkCodec>,
}

/// A segment under the same name with different content is stored; nothing was overwritten.
#[derive(Debug, thiserror::Error)]
#[error(
    "WAL segment {name} is already in the repository with different content; nothing was overwritten (two clusters archiving into one namespace, or a damaged segment)"
)]
pub struct Conflict {
    /// Segment name.
    pub name: String,
}

/// Local spool of a (repository, cluster) pair: push markers and fetch prefetches.
#[derive(Clone, Debug)]
pub struct Spool {
    dir: PathBuf,
}

impl Spool {
    /// A spool folder (created on first write).
    pub fn new(dir: impl Into<PathBuf>) -> Spool {
        Spool { dir: dir.into() }
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub(crate) fn marker(&self, name: &str) -> PathBuf {
        self.dir.join("pushed").join(name)
    }

    /// Reads a marker: `size hash [inode mtime_ns ctime_ns]` (hash `-`: not computed).
    fn read_marker(&self, name: &str) -> Option<(u64, String, Option<FileStamp>)> {
        let text = std::fs::read_to_string(self.marker(name)).ok()?;
        let f: Vec<&str> = text.split_whitespace().collect();
        let size = f.first()?.parse().ok()?;
        let hash = f.get(1)?.to_string();
        let stamp = match f.get(2..5) {
            Some([i, m, c]) => Some(FileStamp {
                inode: i.parse().ok()?,
                mtime_ns: m.parse().ok()?,
                ctime_ns: c.parse().ok()?,
            }),
            _ => None,
        };
        Some((size, hash, stamp))
    }

    /// Records that `name` is stored with this size and hash (and, for a file in pg_wal, its
    /// inode and times, so the next call can skip re-reading an unchanged file). A push marks
    /// with its stamp only (`hash` None: hashing every segment again would cost a full pass);
    /// a segment whose stamp changed is then compared with the repository instead.
    pub(crate) fn mark(&self, name: &str, size: u64, hash: Option<&blake3::Hash>, stamp: Option<FileStamp>) {
        // Best effort: a missing marker only costs a slower next call.
        let dir = self.dir.join("pushed");
        let _ = std::fs::create_dir_all(&dir);
        let tmp = dir.join(format!(".{name}.tmp"));
        let hash = hash.map_or_else(|| "-".to_string(), |h| h.to_hex().to_string());
        let mut line = format!("{size} {hash}");
        if let Some(st) = stamp {
            line.push_str(&format!(" {} {} {}", st.inode, st.mtime_ns, st.ctime_ns));
        }
        line.push('\n');
        if std::fs::write(&tmp, line).is_ok() {
            let _ = std::fs::rename(&tmp, self.marker(name));
        }
    }

    /// Removes push markers of segments older than `keep_from` (they are never asked again).
    pub fn trim_markers(&self, keep_from: &str) {
        if let Ok(rd) = std::fs::read_dir(self.dir.join("pushed")) {
            for e in rd.flatten() {
                let n = e.file_name().to_string_lossy().into_owned();
                if n.len() == 24 && n.as_str() < keep_from {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
    }
}

fn hash_file(path: &Path) -> Result<(u64, blake3::Hash)> {
    let mut f = std::fs::File::open(path).map_err(|e| PgError::io(path, e))?;
    let mut h = blake3::Hasher::new();
    let n = std::io::copy(&mut f, &mut h).map_err(|e| PgError::io(path, e))?;
    Ok((n, h.finalize()))
}

/// Identity of a file's content as the file system sees it: the inode with its modification and
/// status-change times. Any write changes the ctime (which no user can set), so an equal stamp
/// means the content was not touched since the stamp was taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileStamp {
    inode: u64,
    mtime_ns: i128,
    ctime_ns: i128,
}

impl FileStamp {
    pub(crate) fn of(m: &std::fs::Metadata) -> FileStamp {
        use std::os::unix::fs::MetadataExt;
        FileStamp {
            inode: m.ino(),
            mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
            ctime_ns: i128::from(m.ctime()) * 1_000_000_000 + i128::from(m.ctime_nsec()),
        }
    }
}

/// The fast path: `Some(report)` when a marker proves the segment at `path` is stored: same
/// size, inode and times as when it was stored (no read at all), or else the same BLAKE3 hash
/// (when the marker has one: markers of `wal stream`).
pub fn push_fast_path(spool: &Spool, path: &Path) -> Result<Option<PushReport>> {
    let name = file_name(path)?;
    let Some((msize, mhash, mstamp)) = spool.read_marker(&name) else {
        return Ok(None);
    };
    let meta = std::fs::metadata(path).map_err(|e| PgError::io(path, e))?;
    let unchanged = meta.len() == msize && mstamp == Some(FileStamp::of(&meta));
    let same = unchanged || {
        if mhash == "-" {
            return Ok(None);
        }
        let (size, hash) = hash_file(path)?;
        size == msize && hash.to_hex().as_str() == mhash
    };
    let size = msize;
    Ok(same.then(|| PushReport {
        name: name.clone(),
        already_stored: vec![name],
        fast_path: true,
        bytes: size,
        ..Default::default()
    }))
}

fn file_name(path: &Path) -> Result<String> {
    path.file_name()
        .and_then(|n| n.to_str())
        .map(str::to_string)
        .ok_or_else(|| PgError::Invalid(format!("{}: not a WAL file path", path.display())))
}

/// Counts `.ready` files in the `archive_status` folder next to `path` (the archive backlog).
pub fn backlog(path: &Path) -> usize {
    let status = path.parent().unwrap_or(Path::new(".")).join("archive_status");
    std::fs::read_dir(status)
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.file_name().to_string_lossy().ends_with(".ready"))
                .count()
        })
        .unwrap_or(0)
}

/// Stores the segment at `path` (and up to `batch - 1` other ready segments) in `namespace`,
/// compressed as `compression` says for that many segments. Fails with [`PushError::Conflict`]
/// when the name already holds different content (nothing is overwritten) and with
/// [`PushError::Other`] on any other failure.
pub fn push(
    repo: &Repository,
    namespace: &str,
    spool: &Spool,
    path: &Path,
    batch: usize,
    compression: WalCompression,
) -> Result<PushReport, PushError> {
    let name = file_name(path)?;
    let mut names = vec![(name.clone(), path.to_path_buf())];
    if let Some(dir) = path.parent() {
        for extra in ready_segments(dir, &name, batch.saturating_sub(1)) {
            if !spool.marker(&extra).exists() {
                names.push((extra.clone(), dir.join(&extra)));
            }
        }
    }
    let codec = compression.codec_for(names.len());
    let outcomes = store_and_mark(repo, namespace, spool, &names, true, codec)?;
    let mut rep = PushReport {
        name: name.clone(),
        ..Default::default()
    };
    for o in outcomes {
        match o.status {
            PutStatus::Stored | PutStatus::AlreadyStored => {
                rep.bytes += o.size;
                if o.status == PutStatus::Stored {
                    rep.stored.push(o.name);
                } else {
                    rep.already_stored.push(o.name);
                }
            }
            PutStatus::Conflict if o.name == name => return Err(PushError::Conflict(Conflict { name })),
            PutStatus::Conflict => {} // reported when PostgreSQL asks for that one
        }
    }
    if !rep.stored.is_empty() {
        rep.codec = Some(codec);
    }
    // PostgreSQL archives in name order: markers of older names are never asked for again.
    if name.len() == 24 {
        spool.trim_markers(&name);
    }
    Ok(rep)
}

/// Stores the files `names` (name, path) with one set of packs and one index segment, then
/// marks each one stored (or found already stored) with the stamp it had when it was opened:
/// packs, index and manifest are durable before any marker exists. A file that cannot be
/// opened fails the call when it is the first one and `first_required`, else it is skipped (a
/// batched segment may have been archived and recycled meanwhile). New chunks use `codec`.
pub(crate) fn store_and_mark(
    repo: &Repository,
    namespace: &str,
    spool: &Spool,
    names: &[(String, PathBuf)],
    first_required: bool,
    codec: ChunkCodec,
) -> Result<Vec<named::PutOutcome>> {
    Batch::read(repo, namespace, names, first_required, codec)?.commit(spool)
}

/// Segments read and handed to the workers, not yet committed: [`Batch::commit`] may run on
/// another thread while the next batch is read (the background pusher overlaps a commit's
/// syncs with the next batch's hashing and compression).
pub(crate) struct Batch {
    writer: NamedWriter,
    stamps: Vec<(String, FileStamp)>,
}

impl Batch {
    /// Reads every file of `names` into a new writer (see [`store_and_mark`]).
    pub(crate) fn read(
        repo: &Repository,
        namespace: &str,
        names: &[(String, PathBuf)],
        first_required: bool,
        codec: ChunkCodec,
    ) -> Result<Batch> {
        let mut writer = NamedWriter::with_options(repo, Default::default(), wal_options(repo, codec));
        let mut stamps = Vec::new();
        for (i, (n, p)) in names.iter().enumerate() {
            let (f, stamp, len) = match std::fs::File::open(p).and_then(|f| {
                let m = f.metadata()?;
                Ok((f, FileStamp::of(&m), m.len()))
            }) {
                Ok(x) => x,
                Err(e) if i == 0 && first_required => return Err(PgError::io(p, e)),
                Err(_) => continue,
            };
            let meta = serde_json::json!({"kind": if is_history(n) { "history" } else { "wal" }});
            match crate::wal_map::map(p, &f, len) {
                Some((bytes, unchanged)) => writer.add_shared(namespace, n, bytes, Some(meta), unchanged)?,
                // Read in whole chunks straight into the buffers the workers hash and seal (no
                // BufReader: it would only add a copy).
                None => writer.add(namespace, n, &mut &f, Some(meta))?,
            }
            stamps.push((n.clone(), stamp));
        }
        Ok(Batch { writer, stamps })
    }

    /// Stores packs, index segment and manifests, then writes the markers.
    pub(crate) fn commit(self, spool: &Spool) -> Result<Vec<named::PutOutcome>> {
        let outcomes = self.writer.finish()?;
        for o in &outcomes {
            if matches!(o.status, PutStatus::Stored | PutStatus::AlreadyStored)
                && let Some((_, st)) = self.stamps.iter().find(|(n, _)| *n == o.name)
            {
                spool.mark(&o.name, o.size, None, Some(*st));
            }
        }
        Ok(outcomes)
    }
}

/// Error of [`push`]: a conflict is distinct from every other failure (its own exit code).
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    /// Different content under the same name.
    #[error(transparent)]
    Conflict(#[from] Conflict),
    /// Anything else.
    #[error(transparent)]
    Other(#[from] PgError),
}

/// Names of other segments marked ready in `pg_wal/archive_status`, oldest first.
pub(crate) fn ready_segments(wal_dir: &Path, except: &str, max: usize) -> Vec<String> {
    if max == 0 {
        return Vec::new();
    }
    let mut v: Vec<String> = std::fs::read_dir(wal_dir.join("archive_status"))
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.file_name().to_str()?.strip_suffix(".ready").map(str::to_string))
                .filter(|n| n != except && named::validate_name("name", n).is_ok())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v.truncate(max);
    v
}

/// What a fetch did.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct FetchReport {
    /// The file asked for.
    pub name: String,
    /// True when served from the prefetch spool (repository not opened).
    pub from_spool: bool,
    /// Segments this call handed to a background prefetcher (see [`crate::wal_prefetch`]).
    pub prefetch_started: usize,
    /// Bytes written to the destination.
    pub bytes: u64,
}

/// Restores `name` to `dest` (written to a temporary name, then renamed; not synced:
/// PostgreSQL syncs a restored segment before it keeps it). `Ok(None)`: the repository does not
/// have `name` (what `restore_command` reports as "not found"). Prefetching the next segments is
/// [`crate::wal_prefetch`]'s job.
pub fn fetch(
    repo: &Repository,
    namespace: &str,
    spool: &Spool,
    name: &str,
    dest: &Path,
) -> Result<Option<FetchReport>> {
    let m = match named::read_manifest(repo, namespace, name)? {
        Some(m) => m,
        // Not archived (yet): the newest partial upload of `wal stream`, if any, holds what was
        // received before the server was lost.
        None => match namespace
            .strip_prefix("wal-")
            .map(|sysid| crate::stream::newest_partial(repo, sysid, name))
            .transpose()?
            .flatten()
        {
            Some(m) => m,
            None => return Ok(None),
        },
    };
    let index = repo.load_index_for_reading()?;
    let bytes = write_stream(repo, &index, &m, dest, false)?;
    // Recovery asked for this one: what it passed (or left on another timeline) goes.
    crate::wal_prefetch::drop_older(spool, name);
    Ok(Some(FetchReport {
        name: name.into(),
        from_spool: false,
        prefetch_started: 0,
        bytes,
    }))
}

/// Writes the stream of `m` to `dest` through a temporary file and a rename, so nothing
/// half-written is ever found under the name; `sync` first syncs the file.
pub(crate) fn write_stream(
    repo: &Repository,
    index: &lifeboat_repo::index::Index,
    m: &named::NamedManifest,
    dest: &Path,
    sync: bool,
) -> Result<u64> {
    let tmp = tmp_name(dest);
    let r = (|| {
        let f = std::fs::File::create(&tmp).map_err(|e| PgError::io(&tmp, e))?;
        let mut w = std::io::BufWriter::with_capacity(1 << 20, f);
        let n = named::read_to(repo, index, m, &mut w).map_err(|e| match e {
            lifeboat_repo::RepoError::Io { source, .. } => PgError::io(&tmp, source),
            e => e.into(),
        })?;
        let f = w.into_inner().map_err(|e| PgError::io(&tmp, e.into_error()))?;
        if sync {
            f.sync_all().map_err(|e| PgError::io(&tmp, e))?;
        }
        std::fs::rename(&tmp, dest).map_err(|e| PgError::io(dest, e))?;
        Ok(n)
    })();
    if r.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    r
}

pub(crate) fn tmp_name(dest: &Path) -> PathBuf {
    let mut n = dest.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    n.push(".lifeboat-tmp");
    dest.with_file_name(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{ready, repo};

    fn segment(seed: u8) -> Vec<u8> {
        crate::test_support::segment(seed, 3 << 20)
    }

    #[test]
    fn auto_switches_to_lz4_for_a_backlog_only() {
        use WalCompression::*;
        assert_eq!(Auto.codec_for(1), ChunkCodec::Zstd);
        assert_eq!(Auto.codec_for(AUTO_LZ4_SEGMENTS - 1), ChunkCodec::Zstd);
        assert_eq!(Auto.codec_for(AUTO_LZ4_SEGMENTS), ChunkCodec::Lz4);
        assert_eq!(Auto.codec_for(64), ChunkCodec::Lz4);
        assert_eq!(Zstd.codec_for(64), ChunkCodec::Zstd);
        assert_eq!(Lz4.codec_for(1), ChunkCodec::Lz4);
        assert_eq!(WalCompression::default(), Zstd);
        for (s, w) in [("auto", Auto), ("zstd", Zstd), ("lz4", Lz4)] {
            assert_eq!(WalCompression::parse(s), Some(w));
        }
        assert_eq!(WalCompression::parse("LZ4"), None);
    }

    /// A backlog batch under `auto` is stored with LZ4 and reads back identical.
    #[test]
    fn a_backlog_batch_is_stored_with_lz4_and_reads_back() {
        let tmp = tempfile::tempdir().unwrap();
        let wal = tmp.path().join("pg_wal");
        std::fs::create_dir_all(wal.join("archive_status")).unwrap();
        let names: Vec<String> = (1..=AUTO_LZ4_SEGMENTS)
            .map(|i| format!("0000000100000000000000{i:02X}"))
            .collect();
        for (i, n) in names.iter().enumerate() {
            ready(&wal, n, &segment(i as u8));
        }
        let r = repo();
        let spool = Spool::new(tmp.path().join("spool"));
        let rep = push(&r, "wal-7", &spool, &wal.join(&names[0]), 64, WalCompression::Auto).unwrap();
        assert_eq!(rep.stored.len(), AUTO_LZ4_SEGMENTS);
        assert_eq!(rep.codec, Some(ChunkCodec::Lz4));
        let idx = r.load_index_for_reading().unwrap();
        for (i, n) in names.iter().enumerate() {
            let m = named::read_manifest(&r, "wal-7", n).unwrap().unwrap();
            let mut back = Vec::new();
            named::read_to(&r, &idx, &m, &mut back).unwrap();
            assert!(back == segment(i as u8), "{n} differs");
        }
        // Nothing new to store: no codec reported.
        let again = push(&r, "wal-7", &spool, &wal.join(&names[1]), 1, WalCompression::Auto).unwrap();
        assert_eq!(again.codec, None);
    }

    /// A batch stores the ready backlog with fixed chunks; later calls are answered by markers
    /// without the repository; a rewritten file (new stamp) is compared with the repository:
    /// equal is fine, different is a conflict and the stored segment is untouched.
    /// A segment whose blobs the prefetcher's index does not know (a segment archived after it
    /// loaded its index; here: its index segment removed) stops prefetching and leaves nothing
    /// to serve; the fetch of that segment itself is an error, not "not found".
    #[test]
    fn a_prefetch_that_fails_leaves_nothing_to_serve() {
        let tmp = tempfile::tempdir().unwrap();
        let wal = tmp.path().join("pg_wal");
        std::fs::create_dir_all(wal.join("archive_status")).unwrap();
        let r = repo();
        let spool = Spool::new(tmp.path().join("spool"));
        let names = ["000000010000000000000001", "000000010000000000000002"];
        ready(&wal, names[0], &segment(1));
        push(&r, "wal-7", &spool, &wal.join(names[0]), 1, WalCompression::Zstd).unwrap();
        let index_keys = |r: &Repository| -> Vec<String> {
            r.backend().list("index/").unwrap().into_iter().map(|o| o.key).collect()
        };
        let first = index_keys(&r);
        ready(&wal, names[1], &segment(2));
        push(&r, "wal-7", &spool, &wal.join(names[1]), 1, WalCompression::Zstd).unwrap();
        for k in index_keys(&r).into_iter().filter(|k| !first.contains(k)) {
            r.backend().delete(&k).unwrap();
        }
        let fetch_spool = Spool::new(tmp.path().join("fetch-spool"));
        let dest = tmp.path().join("RECOVERYXLOG");
        let rep = fetch(&r, "wal-7", &fetch_spool, names[0], &dest).unwrap().unwrap();
        assert!(!rep.from_spool);
        assert!(std::fs::read(&dest).unwrap() == segment(1));
        let want = crate::wal_prefetch::wanted(&fetch_spool, names[0], 16 << 20, 1);
        assert_eq!(want, vec![names[1].to_string()]);
        let lock = crate::wal_prefetch::claim(&fetch_spool, "x", &want).unwrap().unwrap();
        let p = crate::wal_prefetch::prefetch(&r, "wal-7", &fetch_spool, &want, 2).unwrap();
        drop(lock);
        assert_eq!(p.fetched, 0);
        assert!(crate::wal_prefetch::take(&fetch_spool, names[1], &dest).is_none());
        assert!(fetch(&r, "wal-7", &fetch_spool, names[1], &dest).is_err());
    }

    #[test]
    fn batch_markers_and_conflicts() {
        let tmp = tempfile::tempdir().unwrap();
        let wal = tmp.path().join("pg_wal");
        std::fs::create_dir_all(wal.join("archive_status")).unwrap();
        let names = [
            "000000010000000000000001",
            "000000010000000000000002",
            "000000010000000000000003",
        ];
        for (i, n) in names.iter().enumerate() {
            ready(&wal, n, &segment(i as u8));
        }
        let r = repo();
        let spool = Spool::new(tmp.path().join("spool"));
        let ns = "wal-7";
        let rep = push(&r, ns, &spool, &wal.join(names[0]), 64, WalCompression::Auto).unwrap();
        assert_eq!(rep.stored, names);
        let m = named::read_manifest(&r, ns, names[1]).unwrap().unwrap();
        assert_eq!(m.fixed_chunk_size, Some(WAL_CHUNK_SIZE));
        let fast = push_fast_path(&spool, &wal.join(names[1])).unwrap().unwrap();
        assert!(fast.fast_path);
        // Same content, new inode: the marker cannot prove it, the repository does.
        std::fs::remove_file(wal.join(names[2])).unwrap();
        std::fs::write(wal.join(names[2]), segment(2)).unwrap();
        assert!(push_fast_path(&spool, &wal.join(names[2])).unwrap().is_none());
        let rep = push(&r, ns, &spool, &wal.join(names[2]), 1, WalCompression::Auto).unwrap();
        assert_eq!(rep.already_stored, [names[2]]);
        assert!(push_fast_path(&spool, &wal.join(names[2])).unwrap().is_some());
        // Different content under a stored name.
        std::fs::remove_file(wal.join(names[1])).unwrap();
        std::fs::write(wal.join(names[1]), segment(9)).unwrap();
        assert!(push_fast_path(&spool, &wal.join(names[1])).unwrap().is_none());
        assert!(matches!(
            push(&r, ns, &spool, &wal.join(names[1]), 1, WalCompression::Auto),
            Err(PushError::Conflict(_))
        ));
        let idx = r.load_index_for_reading().unwrap();
        let mut back = Vec::new();
        named::read_to(&r, &idx, &m, &mut back).unwrap();
        assert!(back == segment(1), "stored segment untouched");
    }
}
