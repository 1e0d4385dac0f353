//! The CPU floor of storing WAL on this machine: what the per-chunk work of `wal push` costs on
//! one core with nothing else around it (no process start, no files, no packs, no fsync).
//!
//! ```sh
//! cargo run --release -p lifeboat-repo --example segment_floor -- pg_wal/0000000100000000000000*
//! ```
//!
//! Each file is read 1 MiB at a time (as `wal push` cuts WAL); every chunk is hashed with the
//! repository's keyed BLAKE3 (its id), then sealed as a blob (compression and
//! XChaCha20-Poly1305) with zstd level 1 and, separately, with LZ4. Prints the milliseconds of
//! one core per 16 MiB segment for each step and the ceiling in segments/s that follows when
//! every core does nothing else: no archiver can push faster on this machine with these steps.
//! `bench/wal_budget.sh` prints it next to its measurements.

use std::io::Read;
use std::time::{Duration, Instant};

use lifeboat_repo::crypto::{Codec, Keys};
use lifeboat_repo::format::pack::{BlobType, blob_aad};

const CHUNK: usize = 1 << 20;
const SEGMENT: f64 = 16.0 * 1024.0 * 1024.0;

fn main() {
    let files: Vec<String> = std::env::args().skip(1).collect();
    if files.is_empty() {
        eprintln!("usage: segment_floor FILE... (WAL segments, in the page cache)");
        std::process::exit(2);
    }
    let keys = Keys::generate();
    let (mut hash, mut zstd, mut lz4) = (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    let (mut bytes, mut zstd_out, mut lz4_out) = (0u64, 0u64, 0u64);
    let mut chunk = vec![0u8; CHUNK];
    let mut sealed = Vec::new();
    for f in &files {
        let mut file = std::fs::File::open(f).unwrap_or_else(|e| {
            eprintln!("segment_floor: cannot open {f}: {e}");
            std::process::exit(1)
        });
        loop {
            let mut n = 0;
            while n < CHUNK {
                match file.read(&mut chunk[n..]) {
                    Ok(0) => break,
                    Ok(k) => n += k,
                    Err(e) => {
                        eprintln!("segment_floor: cannot read {f}: {e}");
                        std::process::exit(1)
                    }
                }
            }
            if n == 0 {
                break;
            }
            let data = &chunk[..n];
            bytes += n as u64;
            let t = Instant::now();
            let id = std::hint::black_box(keys.blob_id(data));
            hash += t.elapsed();
            let t = Instant::now();
            keys.seal_blob_with(&blob_aad(BlobType::Data, &id), data, Codec::Zstd(1), &mut sealed);
            zstd += t.elapsed();
            zstd_out += sealed.len() as u64;
            let t = Instant::now();
            keys.seal_blob_with(&blob_aad(BlobType::Data, &id), data, Codec::Lz4, &mut sealed);
            lz4 += t.elapsed();
            lz4_out += sealed.len() as u64;
            if n < CHUNK {
                break;
            }
        }
    }
    let per_segment = |d: Duration| d.as_secs_f64() * 1000.0 * SEGMENT / bytes.max(1) as f64;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let (h, z, l) = (per_segment(hash), per_segment(zstd), per_segment(lz4));
    println!(
        "{} MB in {} file(s), ms of one core per 16 MiB segment: BLAKE3 id {h:.1}, seal zstd-1 {z:.1} (ratio {:.1}), seal LZ4 {l:.1} (ratio {:.1})",
        bytes / 1_000_000,
        files.len(),
        bytes as f64 / zstd_out.max(1) as f64,
        bytes as f64 / lz4_out.max(1) as f64,
    );
    println!(
        "floor: zstd {:.1} ms = {:.0} segments/s on {cores} cores, LZ4 {:.1} ms = {:.0} segments/s",
        h + z,
        cores * 1000.0 / (h + z),
        h + l,
        cores * 1000.0 / (h + l),
    );
}
