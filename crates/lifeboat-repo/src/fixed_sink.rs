//! A parallel blob store for streams cut at fixed offsets (WAL segments).
//!
//! ```text
//! caller (read into owned chunks, or slices of shared bytes) ──▶ workers (keyed hash, dedup, zstd, AEAD; one per core) ──▶ two packer threads (upload)
//! ```
//! [`crate::blob_sink`] chunks and hashes on the caller's thread because content-defined cut
//! points are sequential by nature. A stream cut every `chunk_size` bytes needs no such pass, so
//! here the caller only reads (straight into the buffer each chunk travels in, no copy) and every
//! CPU-heavy step runs on the workers: a batch of WAL segments uses both cores from the first
//! byte. A caller that already holds the bytes (a memory-mapped segment, see
//! [`SharedBytes`]) hands out slices of them instead, so not even the read's copy is paid.
//!
//! Since the workers hash, ids become known only there; they are collected by slot number and
//! handed out by [`FixedSink::finish`]. Channels are bounded, so memory stays at a few chunks
//! per worker whatever the size of the input. Nothing is indexed here: the caller writes the
//! index segment and then its commit objects.

use std::io::Read;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender, bounded, unbounded};

use crate::crypto::Codec;
use crate::error::{RepoError, Result};
use crate::format::index::PackRecord;
use crate::format::pack::{BlobType, blob_aad};
use crate::id::Id;
use crate::index::{IdSet, Index};
use crate::named::read_full;
use crate::packer::Packer;
use crate::repository::Repository;

/// Packer threads (see [`FixedSink::packers`]).
const PACKERS: usize = 2;

/// Immutable bytes shared with the workers, which hash and seal slices of them in place. A WAL
/// segment mapped into memory is the case this exists for: on a small machine, copying 16 MiB
/// out of the page cache costs as much CPU as hashing it.
pub type SharedBytes = Arc<dyn AsRef<[u8]> + Send + Sync>;

/// The bytes of one chunk: read into a pooled buffer, or a slice of shared bytes.
enum ChunkData {
    Owned(Vec<u8>),
    Shared(SharedBytes, Range<usize>),
}

impl ChunkData {
    fn bytes(&self) -> &[u8] {
        match self {
            ChunkData::Owned(v) => v,
            ChunkData::Shared(b, r) => &(**b).as_ref()[r.clone()],
        }
    }

    /// Gives an owned buffer back to its pool; shared bytes are only released.
    fn recycle(self, pool: &Pool) {
        if let ChunkData::Owned(v) = self {
            pool.give(v);
        }
    }
}

/// One chunk on its way to a worker.
struct Job {
    slot: usize,
    data: ChunkData,
    /// False: only hash (the stream is compared with one already stored).
    store: bool,
}

struct PackJob {
    id: Id,
    raw_len: u32,
    sealed: Vec<u8>,
}

/// Buffers travel back to where they are filled, so a batch of segments allocates a few chunks'
/// worth of memory once instead of fresh (page-faulting, zeroed) pages for every chunk. The
/// pools are process-wide and outlive a sink: the background WAL pusher starts a sink per
/// commit, and each would otherwise fault in its buffers again. At most [`POOL_MAX`] buffers
/// are kept per pool; more are freed.
#[derive(Clone)]
struct Pool {
    tx: Sender<Vec<u8>>,
    rx: Receiver<Vec<u8>>,
}

/// Buffers kept per pool: about what two sinks have in flight on two cores.
const POOL_MAX: usize = 16;

impl Pool {
    fn new() -> Pool {
        let (tx, rx) = bounded(POOL_MAX);
        Pool { tx, rx }
    }

    /// The pool of chunk buffers and the pool of sealed-blob buffers.
    fn shared() -> (Pool, Pool) {
        static POOLS: std::sync::OnceLock<(Pool, Pool)> = std::sync::OnceLock::new();
        POOLS.get_or_init(|| (Pool::new(), Pool::new())).clone()
    }

    fn take(&self) -> Vec<u8> {
        self.rx.try_recv().unwrap_or_default()
    }

    fn give(&self, v: Vec<u8>) {
        let _ = self.tx.try_send(v); // full: dropped
    }
}

struct Shared {
    failed: AtomicBool,
    first_error: Mutex<Option<RepoError>>,
    /// Blobs stored before this sink started.
    index: Index,
    /// Blobs queued by this sink (a zero-filled tail repeats one chunk many times).
    seen: Mutex<IdSet>,
    uploaded: AtomicU64,
    /// Id of a whole chunk of zeros (computed once): segments switched early by
    /// `archive_timeout` are mostly zeros, and spotting zeros is far cheaper than hashing them.
    zero_id: std::sync::OnceLock<Id>,
}

impl Shared {
    fn fail(&self, e: RepoError) {
        let mut g = self.first_error.lock().unwrap_or_else(|p| p.into_inner());
        if g.is_none() {
            *g = Some(e);
        }
        self.failed.store(true, Ordering::SeqCst);
    }
}

/// The chunks of one stream: a range of slots, resolved to ids by [`FixedSink::finish`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct Slots {
    start: usize,
    count: usize,
}

/// See the module docs.
pub(crate) struct FixedSink {
    repo: Arc<Repository>,
    chunk_size: usize,
    tx: Option<Sender<Job>>,
    ids_rx: Receiver<(usize, Id)>,
    workers: Vec<JoinHandle<()>>,
    /// Two packers: while one syncs a finished pack, the other takes sealed chunks, so the
    /// workers never wait for the disk.
    packers: Vec<JoinHandle<Result<Vec<PackRecord>>>>,
    shared: Arc<Shared>,
    next_slot: usize,
    chunks: Pool,
}

impl FixedSink {
    /// Starts one worker per core and the packer. `index`: blobs already stored (not stored
    /// again); `codec`: how new chunks are compressed.
    pub(crate) fn new(repo: Arc<Repository>, index: Index, chunk_size: usize, codec: Codec) -> FixedSink {
        let n = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        let chunk_size = chunk_size.max(1);
        let shared = Arc::new(Shared {
            failed: AtomicBool::new(false),
            first_error: Mutex::new(None),
            index,
            seen: Mutex::new(IdSet::default()),
            uploaded: AtomicU64::new(0),
            zero_id: std::sync::OnceLock::new(),
        });
        let (tx, rx) = bounded::<Job>(n * 2);
        let (pack_tx, pack_rx) = bounded::<PackJob>(n * 2);
        let (ids_tx, ids_rx) = unbounded::<(usize, Id)>();
        let (chunks, sealed) = Pool::shared();
        let workers = (0..n)
            .map(|_| {
                let (rx, pack_tx, ids_tx) = (rx.clone(), pack_tx.clone(), ids_tx.clone());
                let (repo, sh) = (repo.clone(), shared.clone());
                let pools = (chunks.clone(), sealed.clone());
                std::thread::spawn(move || worker(&repo, &sh, (codec, chunk_size), rx, pack_tx, ids_tx, pools))
            })
            .collect();
        drop(pack_tx);
        let packers = (0..PACKERS)
            .map(|_| {
                let (r2, sh2, rx2, pool) = (repo.clone(), shared.clone(), pack_rx.clone(), sealed.clone());
                std::thread::spawn(move || packer(&r2, &sh2, rx2, pool))
            })
            .collect();
        FixedSink {
            repo,
            chunk_size,
            tx: Some(tx),
            ids_rx,
            workers,
            packers,
            shared,
            next_slot: 0,
            chunks,
        }
    }

    /// The repository written to.
    pub(crate) fn repo(&self) -> &Arc<Repository> {
        &self.repo
    }

    /// Sealed bytes uploaded so far.
    pub(crate) fn uploaded(&self) -> u64 {
        self.shared.uploaded.load(Ordering::Relaxed)
    }

    fn check(&self) -> Result<()> {
        if self.shared.failed.load(Ordering::Relaxed) {
            let e = self.shared.first_error.lock().unwrap_or_else(|p| p.into_inner()).take();
            return Err(e.unwrap_or(RepoError::Interrupted));
        }
        Ok(())
    }

    /// Reads `reader` to its end in chunks of `chunk_size` bytes (the last one shorter) and hands
    /// them to the workers; `store = false` only hashes them. Returns the stream's slots and
    /// length; the ids come from [`FixedSink::finish`].
    pub(crate) fn store_stream(&mut self, reader: &mut dyn Read, store: bool) -> Result<(Slots, u64)> {
        self.check()?;
        let start = self.next_slot;
        let mut size = 0u64;
        loop {
            let mut data = self.chunks.take();
            data.resize(self.chunk_size, 0);
            let n = read_full(reader, &mut data).map_err(|e| RepoError::io("<input stream>", e))?;
            if n == 0 {
                self.chunks.give(data);
                break;
            }
            data.truncate(n);
            size += n as u64;
            let slot = self.next_slot;
            self.next_slot += 1;
            self.send(slot, ChunkData::Owned(data), store)?;
            if n < self.chunk_size {
                break;
            }
        }
        Ok((
            Slots {
                start,
                count: self.next_slot - start,
            },
            size,
        ))
    }

    /// As [`FixedSink::store_stream`], for bytes already in memory: the workers read slices of
    /// `bytes` (cut at the same offsets, so the ids are the same as for a stream).
    pub(crate) fn store_shared(&mut self, bytes: SharedBytes, store: bool) -> Result<(Slots, u64)> {
        self.check()?;
        let start = self.next_slot;
        let len = (*bytes).as_ref().len();
        for from in (0..len).step_by(self.chunk_size) {
            let slot = self.next_slot;
            self.next_slot += 1;
            let range = from..len.min(from + self.chunk_size);
            self.send(slot, ChunkData::Shared(bytes.clone(), range), store)?;
        }
        Ok((
            Slots {
                start,
                count: self.next_slot - start,
            },
            len as u64,
        ))
    }

    fn send(&self, slot: usize, data: ChunkData, store: bool) -> Result<()> {
        let tx = self.tx.as_ref().expect("sink open");
        if tx.send(Job { slot, data, store }).is_err() {
            self.check()?;
            return Err(RepoError::Interrupted);
        }
        self.check()
    }

    /// Waits for every chunk to be hashed and uploaded, closes the packs, and returns the packs
    /// (not yet indexed) and a resolver from slots to ids.
    pub(crate) fn finish(mut self) -> Result<(Vec<PackRecord>, SlotIds)> {
        self.tx = None;
        for h in self.workers.drain(..) {
            let _ = h.join();
        }
        let mut records = Vec::new();
        let mut first_err = None;
        for h in self.packers.drain(..) {
            match h.join() {
                Ok(Ok(r)) => records.extend(r),
                Ok(Err(e)) => first_err = first_err.or(Some(e)),
                Err(_) => first_err = first_err.or(Some(RepoError::Invalid("packer thread panicked".into()))),
            }
        }
        self.check()?;
        if let Some(e) = first_err {
            return Err(e);
        }
        let mut ids = vec![None; self.next_slot];
        for (slot, id) in self.ids_rx.try_iter() {
            ids[slot] = Some(id);
        }
        let ids = ids
            .into_iter()
            .collect::<Option<Vec<Id>>>()
            .ok_or(RepoError::Interrupted)?;
        Ok((records, SlotIds(ids)))
    }
}

/// Ids of every slot of a finished [`FixedSink`].
pub(crate) struct SlotIds(Vec<Id>);

impl SlotIds {
    /// The ids of one stream, in order.
    pub(crate) fn get(&self, s: Slots) -> Vec<Id> {
        self.0[s.start..s.start + s.count].to_vec()
    }
}

impl Drop for FixedSink {
    fn drop(&mut self) {
        // Abandoned (error or no commit): stop the threads; the packer aborts its open pack.
        if !self.packers.is_empty() {
            self.shared.failed.store(true, Ordering::SeqCst);
        }
        self.tx = None;
        for h in self.workers.drain(..) {
            let _ = h.join();
        }
        for p in self.packers.drain(..) {
            let _ = p.join();
        }
    }
}

/// True when every byte is zero; stops at the first 4 KiB block that is not (WAL pages start
/// with a non-zero header, so a data chunk costs one block). The fold has no early exit inside
/// a block, so it compiles to wide vector ORs.
fn is_zero(b: &[u8]) -> bool {
    b.chunks(4096).all(|c| c.iter().fold(0u8, |a, &x| a | x) == 0)
}

fn worker(
    repo: &Repository,
    sh: &Shared,
    (codec, chunk_size): (Codec, usize),
    rx: Receiver<Job>,
    tx: Sender<PackJob>,
    ids: Sender<(usize, Id)>,
    (chunks, sealed_pool): (Pool, Pool),
) {
    for job in rx {
        if sh.failed.load(Ordering::Relaxed) {
            continue; // drain so the sender never blocks
        }
        let data = job.data.bytes();
        let id = if data.len() == chunk_size && is_zero(data) {
            // From zeros of its own, not from `data`: shared bytes could change between the
            // check and the hash, and one wrong zero id would spoil every zero chunk.
            *sh.zero_id.get_or_init(|| repo.keys().blob_id(&vec![0u8; chunk_size]))
        } else {
            repo.keys().blob_id(data)
        };
        let _ = ids.send((job.slot, id));
        let new = job.store && !sh.index.contains(&id) && sh.seen.lock().unwrap_or_else(|p| p.into_inner()).insert(id);
        if !new {
            job.data.recycle(&chunks);
            continue;
        }
        let mut sealed = sealed_pool.take();
        repo.keys()
            .seal_blob_with(&blob_aad(BlobType::Data, &id), data, codec, &mut sealed);
        let raw_len = data.len() as u32;
        job.data.recycle(&chunks);
        if tx.send(PackJob { id, raw_len, sealed }).is_err() {
            return;
        }
    }
}

fn packer(repo: &Repository, sh: &Shared, rx: Receiver<PackJob>, sealed_pool: Pool) -> Result<Vec<PackRecord>> {
    let mut p = Packer::new(repo);
    for job in rx {
        if sh.failed.load(Ordering::Relaxed) {
            continue;
        }
        let before = p.bytes_written;
        match p.add(BlobType::Data, job.id, job.raw_len, &job.sealed) {
            Ok(()) => {
                sh.uploaded.fetch_add(p.bytes_written - before, Ordering::Relaxed);
            }
            Err(e) => sh.fail(e),
        }
        sealed_pool.give(job.sealed);
    }
    if sh.failed.load(Ordering::Relaxed) {
        return Err(RepoError::Interrupted);
    }
    let before = p.bytes_written;
    let out = p.flush()?;
    sh.uploaded.fetch_add(p.bytes_written - before, Ordering::Relaxed);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::InitOptions;
    use crate::crypto::KdfParams;

    fn repo() -> Arc<Repository> {
        let store = crate::backend::open("memory:").unwrap();
        let opts = InitOptions {
            kdf: KdfParams::TESTING,
            ..Default::default()
        };
        Arc::new(Repository::init(store, b"pw", &opts).unwrap())
    }

    #[test]
    fn chunks_at_fixed_offsets_dedups_repeats_and_keeps_order() {
        let r = repo();
        let mut data: Vec<u8> = (0..(3 << 20) + 5).map(|i| (i * 7 % 253) as u8).collect();
        data.extend(vec![0u8; 4 << 20]);
        let mut sink = FixedSink::new(r.clone(), Index::default(), 1 << 20, Codec::Zstd(1));
        let (a, size) = sink.store_stream(&mut data.as_slice(), true).unwrap();
        let (b, _) = sink.store_stream(&mut &data[..10], false).unwrap();
        let (e, esize) = sink.store_stream(&mut &b""[..], true).unwrap();
        let (records, ids) = sink.finish().unwrap();
        assert_eq!(size, data.len() as u64);
        assert_eq!(esize, 0);
        assert!(ids.get(e).is_empty());
        let got = ids.get(a);
        let want: Vec<Id> = data.chunks(1 << 20).map(|c| r.keys().blob_id(c)).collect();
        assert_eq!(got, want);
        assert_eq!(ids.get(b), vec![r.keys().blob_id(&data[..10])]);
        // 3 distinct data chunks, the 1 MiB straddling chunk, and one zero chunk (stored once).
        let blobs: usize = records.iter().map(|p| p.entries.len()).sum();
        let distinct: IdSet = want.iter().copied().collect();
        assert_eq!(blobs, distinct.len());
    }

    #[test]
    fn shared_bytes_are_cut_like_a_stream() {
        let r = repo();
        let mut data: Vec<u8> = (0..(2 << 20) + 77).map(|i| (i * 13 % 251) as u8).collect();
        data.extend(vec![0u8; 2 << 20]);
        let mut sink = FixedSink::new(r.clone(), Index::default(), 1 << 20, Codec::Lz4);
        let (a, size) = sink.store_stream(&mut data.as_slice(), true).unwrap();
        let (b, bsize) = sink.store_shared(Arc::new(data.clone()), true).unwrap();
        let (e, esize) = sink.store_shared(Arc::new(Vec::new()), true).unwrap();
        let (records, ids) = sink.finish().unwrap();
        assert_eq!((size, bsize, esize), (data.len() as u64, data.len() as u64, 0));
        assert_eq!(ids.get(a), ids.get(b));
        assert!(ids.get(e).is_empty());
        // Nothing stored twice: the shared copy only repeats the stream's chunks.
        let blobs: usize = records.iter().map(|p| p.entries.len()).sum();
        assert_eq!(blobs, ids.get(a).iter().collect::<std::collections::HashSet<_>>().len());
    }

    #[test]
    fn zero_detection() {
        assert!(is_zero(&[0u8; 10000]));
        let mut v = vec![0u8; 10000];
        v[9999] = 1;
        assert!(!is_zero(&v));
        assert!(is_zero(&[]));
    }

    #[test]
    fn a_reader_error_fails_the_stream() {
        struct Broken;
        impl Read for Broken {
            fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
                Err(std::io::Error::other("disk on fire"))
            }
        }
        let mut sink = FixedSink::new(repo(), Index::default(), 1 << 20, Codec::Zstd(1));
        assert!(matches!(
            sink.store_stream(&mut Broken, true),
            Err(RepoError::Io { .. })
        ));
    }
}
