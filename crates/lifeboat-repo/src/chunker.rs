//! Content-defined chunking: FastCDC (v2020, normalization level 1) with a keyed gear table.
//!
//! We drive the slice-based FastCDC over one reusable buffer per worker instead of `StreamCDC`,
//! which would allocate a new buffer per file and a new `Vec` per chunk. Cut decisions depend only
//! on the bytes since the previous cut, so a chunk that reaches the end of the buffer (and may be a
//! forced cut) is carried over and re-cut once more data is read.

use std::io::Read;

use fastcdc::v2020::{FastCDC, Normalization};

/// Chunk size bounds, stored in the repository config so they never change under a repository.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ChunkerParams {
    /// Algorithm name, `fastcdc-v2020`.
    pub algorithm: ChunkerAlgorithm,
    /// Minimum chunk size.
    pub min: u32,
    /// Average chunk size.
    pub avg: u32,
    /// Maximum chunk size.
    pub max: u32,
}

/// Supported chunkers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ChunkerAlgorithm {
    /// fastcdc 5.0.0, v2020 module, normalization level 1, keyed gear table.
    #[serde(rename = "fastcdc-v2020-nc1")]
    FastCdc2020,
}

impl Default for ChunkerParams {
    fn default() -> Self {
        ChunkerParams {
            algorithm: ChunkerAlgorithm::FastCdc2020,
            min: 512 * 1024,
            avg: 1024 * 1024,
            max: 8 * 1024 * 1024,
        }
    }
}

impl ChunkerParams {
    /// Checks the bounds are what fastcdc accepts (even, ordered, within its limits).
    pub fn validate(&self) -> Result<(), String> {
        let (min, avg, max) = (self.min as usize, self.avg as usize, self.max as usize);
        let ok = (fastcdc::v2020::MINIMUM_MIN..=fastcdc::v2020::MINIMUM_MAX).contains(&min)
            && (fastcdc::v2020::AVERAGE_MIN..=fastcdc::v2020::AVERAGE_MAX).contains(&avg)
            && (fastcdc::v2020::MAXIMUM_MIN..=fastcdc::v2020::MAXIMUM_MAX).contains(&max)
            && min < avg
            && avg < max
            && min % 2 == 0
            && avg % 2 == 0
            && max % 2 == 0;
        if ok {
            Ok(())
        } else {
            Err(format!("invalid chunker bounds {min}/{avg}/{max}"))
        }
    }
}

/// A reusable chunker for one worker thread.
pub struct Chunker {
    params: ChunkerParams,
    seed: u64,
    buf: Vec<u8>,
    gate: Option<std::sync::Arc<GrowGate>>,
}

/// Lets one chunker at a time grow its buffer beyond the initial size. Chunks longer than two
/// average chunks are rare, but each needs a buffer of up to the 8 MiB maximum; several workers
/// of one backup meeting large files at the same moment would each hold one, and that moment was
/// the whole backup's memory peak. With the gate the others wait for that one chunk.
#[derive(Debug, Default)]
pub struct GrowGate {
    busy: std::sync::Mutex<bool>,
    freed: std::sync::Condvar,
}

impl GrowGate {
    fn acquire(&self) {
        let mut g = self.busy.lock().unwrap_or_else(|e| e.into_inner());
        while *g {
            g = self.freed.wait(g).unwrap_or_else(|e| e.into_inner());
        }
        *g = true;
    }

    fn release(&self) {
        *self.busy.lock().unwrap_or_else(|e| e.into_inner()) = false;
        self.freed.notify_one();
    }
}

/// Holds the gate while a chunker's buffer is grown; releases it when dropped.
struct GateHold<'g>(Option<&'g GrowGate>);

impl<'g> GateHold<'g> {
    fn take(&mut self, gate: Option<&'g std::sync::Arc<GrowGate>>) {
        if self.0.is_none()
            && let Some(g) = gate
        {
            g.acquire();
            self.0 = Some(g);
        }
    }

    fn release(&mut self) {
        if let Some(g) = self.0.take() {
            g.release();
        }
    }
}

impl Drop for GateHold<'_> {
    fn drop(&mut self) {
        self.release();
    }
}

impl Chunker {
    /// Creates a chunker; its buffer (two average chunks plus 256 KiB, grown up to the maximum
    /// chunk size only while a chunk needs it) is allocated on first use.
    pub fn new(params: ChunkerParams, seed: u64) -> Chunker {
        Chunker {
            params,
            seed,
            buf: Vec::new(),
            gate: None,
        }
    }

    /// Shares `gate` with the other chunkers of a pipeline: only one of them at a time holds a
    /// buffer grown beyond the initial size (see [`GrowGate`]).
    pub fn with_gate(mut self, gate: std::sync::Arc<GrowGate>) -> Chunker {
        self.gate = Some(gate);
        self
    }

    /// Splits everything `reader` yields into chunks, calling `on_chunk` with each in order.
    /// Holds at most one buffer of data in memory, whatever the size of the input.
    pub fn chunk<R: Read, E: From<std::io::Error>>(
        &mut self,
        reader: R,
        mut on_chunk: impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        self.run(reader, false, |c| on_chunk(c.as_slice()))
    }

    /// Like [`Chunker::chunk`], but a chunk longer than the initial buffer (one the buffer had to
    /// grow for, up to the 8 MiB maximum) is handed over as the buffer itself instead of being
    /// copied: a caller that keeps chunks (to compress them on another thread) then never holds
    /// a large chunk twice, and the reader drops back to its small buffer at once.
    pub fn chunk_owned<R: Read, E: From<std::io::Error>>(
        &mut self,
        reader: R,
        on_chunk: impl FnMut(ChunkData<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        self.run(reader, true, on_chunk)
    }

    fn run<R: Read, E: From<std::io::Error>>(
        &mut self,
        reader: R,
        hand_over: bool,
        on_chunk: impl FnMut(ChunkData<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        let gate = self.gate.clone();
        let mut hold = GateHold(None);
        let r = self.run_with(reader, hand_over, gate.as_ref(), &mut hold, on_chunk);
        if hold.0.is_some() {
            // Give the grown buffer back before letting another chunker grow.
            self.buf = Vec::new();
        }
        r
    }

    fn run_with<'g, R: Read, E: From<std::io::Error>>(
        &mut self,
        mut reader: R,
        hand_over: bool,
        gate: Option<&'g std::sync::Arc<GrowGate>>,
        hold: &mut GateHold<'g>,
        mut on_chunk: impl FnMut(ChunkData<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        // Start with room for a couple of average chunks and grow only while one chunk does not
        // fit, so the usual ~1 MiB chunks never pin a max-size buffer per worker.
        let slack = 256 << 10;
        let full = self.params.max as usize + slack;
        let initial = (2 * self.params.avg as usize).min(self.params.max as usize) + slack;
        if self.buf.len() != initial {
            self.buf = vec![0u8; initial];
        }
        let mut cap = initial;
        let mut filled = 0usize;
        let mut eof = false;
        let mut cuts: Vec<usize> = Vec::new();
        loop {
            // Fill the buffer.
            while !eof && filled < cap {
                match reader.read(&mut self.buf[filled..]) {
                    Ok(0) => eof = true,
                    Ok(n) => filled += n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e.into()),
                }
            }
            if filled == 0 {
                return Ok(());
            }
            if eof && filled <= self.params.min as usize {
                return on_chunk(ChunkData::Borrowed(&self.buf[..filled]));
            }
            // Cut points first (a handful per buffer), so a chunk can be handed over below
            // without holding a borrow of the buffer.
            cuts.clear();
            let cdc = FastCDC::with_level_and_seed(
                &self.buf[..filled],
                self.params.min as usize,
                self.params.avg as usize,
                self.params.max as usize,
                Normalization::Level1,
                self.seed,
            );
            for c in cdc {
                let end = c.offset + c.length;
                if !eof && end == filled {
                    break; // may be a forced cut at the buffer's end: re-cut with more data
                }
                cuts.push(end);
            }
            let mut consumed = 0usize;
            // Bytes handed over with a chunk: the remaining cut offsets count from there.
            let mut shift = 0usize;
            for &cut in &cuts {
                let end = cut - shift;
                if hand_over && consumed == 0 && end > initial {
                    // The buffer grew for this chunk: hand it over and continue with a small one
                    // holding what follows the chunk.
                    let rest = filled - end;
                    let mut next = vec![0u8; initial.max(rest)];
                    next[..rest].copy_from_slice(&self.buf[end..filled]);
                    let mut chunk = std::mem::replace(&mut self.buf, next);
                    chunk.truncate(end);
                    // Give back the grown buffer's pages beyond the chunk.
                    chunk.shrink_to_fit();
                    cap = self.buf.len();
                    if cap <= initial {
                        hold.release();
                    }
                    filled = rest;
                    shift += end;
                    on_chunk(ChunkData::Owned(chunk))?;
                    continue;
                }
                on_chunk(ChunkData::Borrowed(&self.buf[consumed..end]))?;
                consumed = end;
            }
            if eof {
                return Ok(());
            }
            if consumed == 0 && filled == cap {
                // One chunk is longer than the buffer: grow (never beyond max + slack, where a
                // cut is certain).
                hold.take(gate);
                cap = (cap * 2).min(full);
                self.buf.resize(cap, 0);
                continue;
            }
            self.buf.copy_within(consumed..filled, 0);
            filled -= consumed;
            if self.buf.len() > initial && filled <= initial && gate.is_some() {
                // The long chunk is done: back to the initial size, and let another grow.
                self.buf.truncate(initial);
                self.buf.shrink_to_fit();
                cap = initial;
                hold.release();
            }
        }
    }
}

/// One chunk from [`Chunker::chunk_owned`]: a view into the chunker's buffer, or (for a chunk
/// the buffer had to grow for) the buffer itself, truncated to the chunk.
pub enum ChunkData<'a> {
    /// Valid until the callback returns.
    Borrowed(&'a [u8]),
    /// Handed over; the chunker continues with a fresh buffer.
    Owned(Vec<u8>),
}

impl ChunkData<'_> {
    /// The chunk's bytes.
    pub fn as_slice(&self) -> &[u8] {
        match self {
            ChunkData::Borrowed(b) => b,
            ChunkData::Owned(v) => v,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pseudo_random(n: usize, mut x: u64) -> Vec<u8> {
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    }

    /// A reader that returns at most `.1` bytes per call.
    struct Trickle<'a>(&'a [u8], usize);
    impl Read for Trickle<'_> {
        fn read(&mut self, b: &mut [u8]) -> std::io::Result<usize> {
            let n = self.0.len().min(b.len()).min(self.1);
            b[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    fn lengths(data: &[u8], seed: u64, read_size: usize) -> Vec<usize> {
        let mut c = Chunker::new(ChunkerParams::default(), seed);
        let mut out = Vec::new();
        c.chunk::<_, std::io::Error>(Trickle(data, read_size), |ch| {
            out.push(ch.len());
            Ok(())
        })
        .unwrap();
        out
    }

    /// Golden cut points: if these change, existing repositories stop deduplicating against new
    /// backups. Never update them without a new chunker algorithm name.
    #[test]
    fn golden_cut_points() {
        let data = pseudo_random(24 << 20, 0x1234_5678_9abc_def0);
        let got = lengths(&data, 42, usize::MAX);
        assert_eq!(got.iter().sum::<usize>(), data.len());
        assert_eq!(
            got, GOLDEN,
            "chunk boundaries changed: the chunker is part of the repository format"
        );
    }

    const GOLDEN: &[usize] = &[
        2361605, 1157921, 1401204, 1545449, 919483, 1165913, 1826486, 1178499, 1427869, 2494291, 727289, 812653,
        1203278, 1166753, 1393453, 1667960, 1056946, 1228955, 429817,
    ];

    #[test]
    fn boundaries_do_not_depend_on_read_sizes() {
        let data = pseudo_random(20 << 20, 7);
        let a = lengths(&data, 1, usize::MAX);
        let b = lengths(&data, 1, 4097);
        assert_eq!(a, b);
        assert!(a.iter().all(|&l| l <= 8 << 20));
    }

    /// Chunks longer than the initial buffer (here: uniform data with no cut point, so every
    /// chunk is forced at the maximum) grow the buffer instead of being cut early.
    #[test]
    fn chunks_longer_than_the_initial_buffer() {
        let data = vec![0u8; 20 << 20];
        for read_size in [usize::MAX, 65536] {
            let got = lengths(&data, 3, read_size);
            assert_eq!(got.iter().sum::<usize>(), data.len());
            assert!(got.iter().all(|&l| l <= 8 << 20), "{got:?}");
            assert!(got.iter().any(|&l| l > 4 << 20), "{got:?}");
        }
    }

    /// Handing over grown buffers changes neither the boundaries nor the bytes.
    #[test]
    fn owned_chunks_match_borrowed_ones() {
        let mut data = pseudo_random(6 << 20, 11);
        data.extend(vec![0u8; 19 << 20]); // forced 8 MiB cuts: buffers grow and are handed over
        data.extend(pseudo_random(5 << 20, 12));
        data.extend(vec![7u8; 3 << 20]);
        for read_size in [usize::MAX, 65536, 4097] {
            let mut borrowed = Vec::new();
            let mut c = Chunker::new(ChunkerParams::default(), 5);
            c.chunk::<_, std::io::Error>(Trickle(&data, read_size), |ch| {
                borrowed.push(ch.to_vec());
                Ok(())
            })
            .unwrap();
            let mut owned = Vec::new();
            let mut handed = 0;
            c.chunk_owned::<_, std::io::Error>(Trickle(&data, read_size), |ch| {
                if let ChunkData::Owned(_) = ch {
                    handed += 1;
                }
                owned.push(ch.as_slice().to_vec());
                Ok(())
            })
            .unwrap();
            assert!(handed >= 2, "{handed}");
            assert_eq!(owned, borrowed);
            assert_eq!(owned.concat(), data);
        }
    }

    /// The gate that lets one chunker at a time grow changes neither the boundaries nor the
    /// bytes (the grown buffer shrinks back once the long chunk is cut).
    #[test]
    fn gated_chunks_match_ungated_ones() {
        let mut data = pseudo_random(6 << 20, 11);
        data.extend(vec![0u8; 19 << 20]);
        data.extend(pseudo_random(5 << 20, 12));
        data.extend(vec![7u8; 3 << 20]);
        let gate = std::sync::Arc::new(GrowGate::default());
        for read_size in [usize::MAX, 65536, 4097] {
            let mut plain = Vec::new();
            Chunker::new(ChunkerParams::default(), 5)
                .chunk::<_, std::io::Error>(Trickle(&data, read_size), |ch| {
                    plain.push(ch.to_vec());
                    Ok(())
                })
                .unwrap();
            let mut gated = Vec::new();
            let mut c = Chunker::new(ChunkerParams::default(), 5).with_gate(gate.clone());
            c.chunk::<_, std::io::Error>(Trickle(&data, read_size), |ch| {
                gated.push(ch.to_vec());
                Ok(())
            })
            .unwrap();
            assert_eq!(gated, plain);
            assert!(!*gate.busy.lock().unwrap(), "gate left held");
        }
    }

    /// Two chunkers sharing a gate on long chunks: both finish (no deadlock), with the same
    /// chunks as alone, and never both hold a grown buffer.
    #[test]
    fn gate_serializes_growth_between_threads() {
        let data = vec![0u8; 24 << 20];
        let gate = std::sync::Arc::new(GrowGate::default());
        let expected = lengths(&data, 9, 65536);
        let growing = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..2 {
                let gate = gate.clone();
                let (data, expected, growing) = (&data, &expected, &growing);
                s.spawn(move || {
                    let mut c = Chunker::new(ChunkerParams::default(), 9).with_gate(gate);
                    let mut got = Vec::new();
                    c.chunk::<_, std::io::Error>(Trickle(data, 65536), |ch| {
                        if ch.len() > 4 << 20 {
                            // Only the gate holder can produce a chunk this long.
                            assert_eq!(growing.fetch_add(1, std::sync::atomic::Ordering::SeqCst), 0);
                            std::thread::sleep(std::time::Duration::from_millis(2));
                            growing.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                        }
                        got.push(ch.len());
                        Ok(())
                    })
                    .unwrap();
                    assert_eq!(&got, expected);
                });
            }
        });
    }

    #[test]
    fn seed_changes_boundaries() {
        let data = pseudo_random(20 << 20, 9);
        assert_ne!(lengths(&data, 1, usize::MAX), lengths(&data, 2, usize::MAX));
    }

    #[test]
    fn small_and_empty_inputs() {
        assert!(lengths(&[], 1, 10).is_empty());
        assert_eq!(lengths(&[1, 2, 3], 1, 10), vec![3]);
    }
}
