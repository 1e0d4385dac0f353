//! A streaming blob store shared by the snapshot writer and named manifests.
//!
//! ```text
//! caller (read, chunk, hash, dedup) ──new chunks──▶ sealers (zstd + AEAD, one per core) ──▶ packer thread (upload)
//! ```
//! The caller's thread chunks and hashes (cheap, sequential by nature for a stream such as a tar
//! on a pipe); compression and encryption, the expensive part, run on one sealer per core. Every
//! channel is bounded, so memory stays flat whatever the size of the input. Chunk and sealed
//! buffers go back to small pools once used: a buffer freed and allocated again comes back as
//! fresh pages from the kernel, and on a 755 MB base backup that cost 220 000 page faults and
//! about a second of system time. Nothing is indexed
//! until [`BlobSink::finish`]: a killed process leaves only unindexed packs, which prune removes
//! after its grace period.

use std::io::Read;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender, bounded};

use crate::chunker::Chunker;
use crate::error::{RepoError, Result};
use crate::format::index::PackRecord;
use crate::format::pack::{BlobType, blob_aad};
use crate::id::Id;
use crate::index::{IdSet, Index};
use crate::packer::Packer;
use crate::repository::Repository;

struct SealJob {
    blob_type: BlobType,
    id: Id,
    data: Vec<u8>,
}

struct PackJob {
    blob_type: BlobType,
    id: Id,
    raw_len: u32,
    sealed: Vec<u8>,
}

/// Counters of what a sink stored.
#[derive(Debug, Default)]
pub(crate) struct SinkStats {
    /// Sealed bytes uploaded.
    pub uploaded: AtomicU64,
    /// New blobs stored.
    pub blobs_added: AtomicU64,
    /// Plaintext bytes of new blobs.
    pub raw_added: AtomicU64,
}

struct Shared {
    failed: AtomicBool,
    first_error: Mutex<Option<RepoError>>,
    stats: SinkStats,
}

impl Shared {
    fn fail(&self, e: RepoError) {
        let mut g = self.first_error.lock().expect("lock");
        if g.is_none() {
            *g = Some(e);
        }
        self.failed.store(true, Ordering::SeqCst);
    }
}

/// See the module docs.
pub(crate) struct BlobSink {
    repo: Arc<Repository>,
    /// Blobs already stored before this sink started (dedup); empty when the caller chose not
    /// to load the index (WAL pushes: they almost never share chunks with older data).
    index: Index,
    seen: IdSet,
    chunker: Chunker,
    seal_tx: Option<Sender<SealJob>>,
    /// Chunk buffers the sealers are done with.
    spare_rx: Receiver<Vec<u8>>,
    sealers: Vec<JoinHandle<()>>,
    packer: Option<JoinHandle<Result<Vec<PackRecord>>>>,
    shared: Arc<Shared>,
}

impl BlobSink {
    /// Starts the sealer and packer threads. `index` is what to deduplicate against.
    pub(crate) fn new(repo: Arc<Repository>, index: Index, sealers: usize) -> BlobSink {
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        let n = if sealers == 0 { cores } else { sealers };
        let shared = Arc::new(Shared {
            failed: AtomicBool::new(false),
            first_error: Mutex::new(None),
            stats: SinkStats::default(),
        });
        let (seal_tx, seal_rx) = bounded::<SealJob>(n);
        let (pack_tx, pack_rx) = bounded::<PackJob>(n);
        let pool = (n + 2).min(POOL_MAX);
        let (spare_tx, spare_rx) = bounded::<Vec<u8>>(pool);
        let (spare_sealed_tx, spare_sealed_rx) = bounded::<Vec<u8>>(pool);
        let mut handles = Vec::new();
        for _ in 0..n {
            let (rx, tx, repo, sh) = (seal_rx.clone(), pack_tx.clone(), repo.clone(), shared.clone());
            let pools = (spare_tx.clone(), spare_sealed_rx.clone());
            handles.push(std::thread::spawn(move || sealer(&repo, &sh, rx, tx, pools)));
        }
        drop(pack_tx);
        let (r2, sh2) = (repo.clone(), shared.clone());
        let packer = std::thread::spawn(move || packer(&r2, &sh2, pack_rx, spare_sealed_tx));
        let chunker = Chunker::new(repo.config().chunker, repo.keys().chunker_seed());
        BlobSink {
            repo,
            index,
            seen: IdSet::default(),
            chunker,
            seal_tx: Some(seal_tx),
            spare_rx,
            sealers: handles,
            packer: Some(packer),
            shared,
        }
    }

    /// The repository written to.
    pub(crate) fn repo(&self) -> &Arc<Repository> {
        &self.repo
    }

    /// The index deduplicated against.
    pub(crate) fn index(&self) -> &Index {
        &self.index
    }

    /// What was stored so far.
    pub(crate) fn stats(&self) -> &SinkStats {
        &self.shared.stats
    }

    fn check(&self) -> Result<()> {
        if self.shared.failed.load(Ordering::Relaxed) {
            return Err(self
                .shared
                .first_error
                .lock()
                .expect("lock")
                .take()
                .unwrap_or(RepoError::Interrupted));
        }
        Ok(())
    }

    /// Stores one blob unless it is already stored; returns its id.
    pub(crate) fn store_blob(&mut self, blob_type: BlobType, data: Vec<u8>) -> Result<Id> {
        self.check()?;
        let id = self.repo.keys().blob_id(&data);
        if !self.index.contains(&id) && self.seen.insert(id) {
            let tx = self.seal_tx.as_ref().expect("sink open");
            if tx.send(SealJob { blob_type, id, data }).is_err() {
                self.check()?;
                return Err(RepoError::Interrupted);
            }
        }
        Ok(id)
    }

    /// Reads `reader` to its end, chunking it and storing new chunks; returns the chunk ids and
    /// the byte count. `store = false` only hashes (to compare with something already stored).
    pub(crate) fn store_stream(&mut self, reader: &mut dyn Read, store: bool) -> Result<(Vec<Id>, u64)> {
        self.check()?;
        let mut ids = Vec::new();
        let mut size = 0u64;
        let mut chunker = std::mem::replace(&mut self.chunker, Chunker::new(self.repo.config().chunker, 0));
        let r = chunker.chunk::<_, StreamError>(reader, |chunk| {
            size += chunk.len() as u64;
            if store {
                let mut data = self.spare_rx.try_recv().unwrap_or_default();
                data.clear();
                data.extend_from_slice(chunk);
                ids.push(self.store_blob(BlobType::Data, data).map_err(StreamError::Repo)?);
            } else {
                ids.push(self.repo.keys().blob_id(chunk));
            }
            Ok(())
        });
        self.chunker = chunker;
        match r {
            Ok(()) => Ok((ids, size)),
            Err(StreamError::Repo(e)) => Err(e),
            Err(StreamError::Io(e)) => Err(RepoError::io("<input stream>", e)),
        }
    }

    /// Waits for every blob to be uploaded, closes the packs and returns their records (not yet
    /// indexed: the caller writes the index segment, then its commit object).
    pub(crate) fn finish(mut self) -> Result<Vec<PackRecord>> {
        self.seal_tx = None;
        for h in self.sealers.drain(..) {
            let _ = h.join();
        }
        let records = match self.packer.take().expect("packer running").join() {
            Ok(r) => r,
            Err(_) => Err(RepoError::Invalid("packer thread panicked".into())),
        };
        self.check()?;
        records
    }
}

impl Drop for BlobSink {
    fn drop(&mut self) {
        // Abandoned (error or no commit): stop the workers; the packer aborts its open pack.
        self.shared.failed.store(true, Ordering::SeqCst);
        self.seal_tx = None;
        for h in self.sealers.drain(..) {
            let _ = h.join();
        }
        if let Some(p) = self.packer.take() {
            let _ = p.join();
        }
    }
}

enum StreamError {
    Io(std::io::Error),
    Repo(RepoError),
}

impl From<std::io::Error> for StreamError {
    fn from(e: std::io::Error) -> Self {
        StreamError::Io(e)
    }
}

/// Buffers kept in each pool at most (each up to the largest chunk, 8 MiB).
const POOL_MAX: usize = 8;

fn sealer(
    repo: &Repository,
    sh: &Shared,
    rx: Receiver<SealJob>,
    tx: Sender<PackJob>,
    (spare_tx, spare_sealed_rx): (Sender<Vec<u8>>, Receiver<Vec<u8>>),
) {
    let level = repo.config().compression_level;
    for job in rx {
        if sh.failed.load(Ordering::Relaxed) {
            continue; // drain so the sender never blocks
        }
        let mut sealed = spare_sealed_rx.try_recv().unwrap_or_default();
        sealed.clear();
        sealed.reserve(job.data.len() / 2 + 64);
        repo.keys()
            .seal_blob_into(&blob_aad(job.blob_type, &job.id), &job.data, level, &mut sealed);
        let raw_len = job.data.len() as u32;
        // Full pool: the buffer is freed.
        let _ = spare_tx.try_send(job.data);
        sh.stats.raw_added.fetch_add(u64::from(raw_len), Ordering::Relaxed);
        if tx
            .send(PackJob {
                blob_type: job.blob_type,
                id: job.id,
                raw_len,
                sealed,
            })
            .is_err()
        {
            return;
        }
    }
}

/// Data and tree blobs go to separate packs (as in the archiver), so reading trees later touches
/// a few small packs only.
fn packer(repo: &Repository, sh: &Shared, rx: Receiver<PackJob>, spare: Sender<Vec<u8>>) -> Result<Vec<PackRecord>> {
    let mut data = Packer::new(repo);
    let mut trees = Packer::new(repo);
    for job in rx {
        if sh.failed.load(Ordering::Relaxed) {
            continue;
        }
        let p = if job.blob_type == BlobType::Tree {
            &mut trees
        } else {
            &mut data
        };
        match p.add(job.blob_type, job.id, job.raw_len, &job.sealed) {
            Ok(()) => {
                sh.stats.blobs_added.fetch_add(1, Ordering::Relaxed);
                sh.stats
                    .uploaded
                    .store(data.bytes_written + trees.bytes_written, Ordering::Relaxed);
            }
            Err(e) => sh.fail(e),
        }
        let _ = spare.try_send(job.sealed);
    }
    if sh.failed.load(Ordering::Relaxed) {
        return Err(RepoError::Interrupted);
    }
    let mut out = data.flush()?;
    out.extend(trees.flush()?);
    sh.stats
        .uploaded
        .store(data.bytes_written + trees.bytes_written, Ordering::Relaxed);
    Ok(out)
}
