//! Mapping a WAL segment into memory for `wal push`, instead of reading it.
//!
//! A push is CPU-bound on a small machine, and reading a 16 MiB segment copies it out of the
//! page cache: on the 2-core benchmark VM that copy was a fifth of the CPU of storing a segment,
//! as much as hashing it. Mapped, the workers hash and compress the page cache's own pages.
//!
//! The price is that the workers read the file itself, several times (zero check, hash, seal),
//! so a write to it in between would store a chunk under an id that does not match it. Hence:
//! - Only a segment PostgreSQL has marked ready for archiving (`archive_status/<name>.ready`)
//!   is mapped. PostgreSQL does not write to such a segment; it may recycle (rename, later
//!   overwrite) it only after `archive_command` reported it stored. Anything else (a segment
//!   pushed by hand, a history file) is read into buffers of lifeboat's own.
//! - Before the batch is committed, the file's inode, size, mtime and ctime are compared with
//!   those seen when it was mapped (a write changes mtime, a rename ctime). Should another
//!   process have reported the segment and PostgreSQL recycled it meanwhile, the batch fails
//!   and nothing is indexed; PostgreSQL runs the command again.
//!
//! Also a price: a read error of the disk (EIO) under a mapped page, or a file shrunk by someone
//! else, raises SIGBUS instead of a failed read. Each map is registered with
//! [`crate::map_fault`], which (once the program asked for it) turns that into a one-line error
//! naming the segment and an exit code. Either way nothing unstored is acknowledged, because
//! markers and the archiver's answer come only after the commit; PostgreSQL retries.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use lifeboat_repo::named::{SharedBytes, Unchanged};

use crate::wal::FileStamp;

/// Files smaller than this are read (history files, a few hundred bytes): mapping costs a
/// system call and page-table work that only pays off on large files.
const MIN_MAPPED: u64 = 1 << 20;

/// `f` (opened from `path`, `len` bytes) mapped read-only with its pages populated up front,
/// and the check that it stayed unchanged; `None` when it is small, not marked ready, or cannot
/// be mapped (the caller then reads it).
pub(crate) fn map(path: &Path, f: &File, len: u64) -> Option<(SharedBytes, Unchanged)> {
    if len < MIN_MAPPED || !crate::wal_ahead::is_ready(path) {
        return None;
    }
    let before = f.metadata().ok()?;
    // SAFETY: the mapping is read-only, and the file is a segment PostgreSQL does not modify
    // while it waits to be archived; should that not hold, the stamp check below refuses the
    // commit (see the module docs). The map is dropped once its chunks are hashed and sealed.
    #[allow(unsafe_code)]
    let m = unsafe { memmap2::MmapOptions::new().populate().map(f) }.ok()?;
    // A file that changed size between the caller's stat and the map is read instead.
    if m.len() as u64 != len || before.len() != len {
        return None;
    }
    let name = path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default();
    let mapped = Mapped {
        _watch: crate::map_fault::register(&m, &name),
        map: m,
    };
    let (path, stamp) = (path.to_path_buf(), FileStamp::of(&before));
    let unchanged: Unchanged =
        Box::new(move || std::fs::metadata(&path).is_ok_and(|m| m.len() == len && FileStamp::of(&m) == stamp));
    Some((Arc::new(mapped) as SharedBytes, unchanged))
}

/// A map watched by [`crate::map_fault`] for as long as it lives (the watch is dropped first).
struct Mapped {
    _watch: crate::map_fault::Registration,
    map: memmap2::Mmap,
}

impl AsRef<[u8]> for Mapped {
    fn as_ref(&self) -> &[u8] {
        &self.map
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn only_large_ready_segments_are_mapped_and_a_change_is_seen() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("archive_status")).unwrap();
        let p = dir.path().join("000000010000000000000001");
        let data: Vec<u8> = (0..(1 << 20) + 3).map(|i| (i % 241) as u8).collect();
        File::create(&p).unwrap().write_all(&data).unwrap();
        let f = File::open(&p).unwrap();
        let len = data.len() as u64;
        assert!(map(&p, &f, len).is_none(), "not marked ready: read instead");
        std::fs::write(dir.path().join("archive_status/000000010000000000000001.ready"), "").unwrap();
        let (m, unchanged) = map(&p, &f, len).expect("mapped");
        assert_eq!((*m).as_ref(), &data[..]);
        assert!(unchanged());
        assert!(map(&p, &f, len + 1).is_none(), "size changed: read instead");
        // Written to (here: appended; the mtime and size change): no longer unchanged.
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::OpenOptions::new()
            .append(true)
            .open(&p)
            .unwrap()
            .write_all(b"x")
            .unwrap();
        assert!(!unchanged());
        // Renamed away (PostgreSQL recycling it): gone from its path.
        let (_, unchanged) = map(&p, &File::open(&p).unwrap(), len + 1).expect("mapped");
        std::fs::rename(&p, dir.path().join("000000010000000000000009")).unwrap();
        assert!(!unchanged());
        let small = dir.path().join("00000002.history");
        std::fs::write(&small, b"history").unwrap();
        std::fs::write(dir.path().join("archive_status/00000002.history.ready"), "").unwrap();
        assert!(map(&small, &File::open(&small).unwrap(), 7).is_none());
    }
}
