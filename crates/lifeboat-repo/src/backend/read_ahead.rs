//! Block reads for remote stores. Restore and check read one blob at a time, and a blob is a
//! few KiB to a few MiB; against S3 that is one request per blob, and requests, not bytes, are
//! what is slow (measured on moto: a 60 MB restore took 20 s, 11× restic). This wrapper turns a
//! small ranged read into a read of the aligned block around it and keeps the last few blocks
//! per thread, so the following blobs of the same pack come from memory. Pack data is immutable,
//! so a cached block can never be stale.

use std::cell::RefCell;
use std::collections::HashMap;
use std::ops::Range;
use std::sync::{Arc, Mutex};

use super::{Backend, BackendError, BackendErrorKind, ObjectInfo, PutMode, Upload};

/// Block size: a quarter of the default pack, a few dozen typical blobs.
const BLOCK: u64 = 4 << 20;
/// Blocks kept per thread (restore runs two threads per core).
const KEEP: usize = 2;

type Block = (String, String, u64, Arc<Vec<u8>>);

thread_local! {
    static BLOCKS: RefCell<Vec<Block>> = const { RefCell::new(Vec::new()) };
}

/// A backend whose small ranged reads of packs are served from per-thread blocks.
pub struct ReadAhead {
    inner: Arc<dyn Backend>,
    sizes: Mutex<HashMap<String, u64>>,
}

impl ReadAhead {
    /// Wraps a remote backend.
    pub fn new(inner: Arc<dyn Backend>) -> Self {
        ReadAhead {
            inner,
            sizes: Mutex::default(),
        }
    }

    fn size(&self, key: &str) -> Result<u64, BackendError> {
        if let Some(s) = self.sizes.lock().unwrap_or_else(|e| e.into_inner()).get(key) {
            return Ok(*s);
        }
        let s = self.inner.head(key)?.ok_or_else(|| {
            BackendError::new(
                self.inner.location(),
                "get",
                key,
                BackendErrorKind::NotFound,
                "not found".into(),
            )
        })?;
        self.sizes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key.to_string(), s);
        Ok(s)
    }

    /// Serves `range` from the block holding it, or `None` when it should go straight through.
    fn read_via_block(&self, key: &str, range: &Range<u64>, buf: &mut Vec<u8>) -> Result<bool, BackendError> {
        if !key.starts_with("data/") || range.end <= range.start || range.end - range.start > BLOCK / 4 {
            return Ok(false);
        }
        let start = range.start / BLOCK * BLOCK;
        if range.end > start + BLOCK {
            return Ok(false); // straddles two blocks: rare, read directly
        }
        let loc = self.inner.location();
        let hit = BLOCKS.with(|b| {
            b.borrow()
                .iter()
                .find(|(l, k, s, _)| l == loc && k == key && *s == start)
                .map(|(_, _, _, d)| d.clone())
        });
        let data = match hit {
            Some(d) => d,
            None => {
                let size = self.size(key)?;
                if range.end > size {
                    return Ok(false); // let the store report the short read
                }
                let d = Arc::new(self.inner.get_range(key, start..(start + BLOCK).min(size))?);
                BLOCKS.with(|b| {
                    let mut b = b.borrow_mut();
                    if b.len() >= KEEP {
                        b.remove(0);
                    }
                    b.push((loc.to_string(), key.to_string(), start, d.clone()));
                });
                d
            }
        };
        let (a, z) = ((range.start - start) as usize, (range.end - start) as usize);
        if z > data.len() {
            return Ok(false); // past the end of the object: let the store report it
        }
        buf.clear();
        buf.extend_from_slice(&data[a..z]);
        Ok(true)
    }
}

impl Backend for ReadAhead {
    fn location(&self) -> &str {
        self.inner.location()
    }
    fn get(&self, key: &str) -> Result<Vec<u8>, BackendError> {
        self.inner.get(key)
    }
    fn get_range(&self, key: &str, range: Range<u64>) -> Result<Vec<u8>, BackendError> {
        let mut buf = Vec::new();
        if self.read_via_block(key, &range, &mut buf)? {
            return Ok(buf);
        }
        self.inner.get_range(key, range)
    }
    fn get_range_into(&self, key: &str, range: Range<u64>, buf: &mut Vec<u8>) -> Result<(), BackendError> {
        if self.read_via_block(key, &range, buf)? {
            return Ok(());
        }
        self.inner.get_range_into(key, range, buf)
    }
    fn put(&self, key: &str, data: Vec<u8>, mode: PutMode) -> Result<(), BackendError> {
        self.inner.put(key, data, mode)
    }
    fn upload(&self, key: &str) -> Result<Box<dyn Upload>, BackendError> {
        self.inner.upload(key)
    }
    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, BackendError> {
        self.inner.list(prefix)
    }
    fn head(&self, key: &str) -> Result<Option<u64>, BackendError> {
        self.inner.head(key)
    }
    fn delete(&self, key: &str) -> Result<(), BackendError> {
        // A pack being deleted or replaced (repair) must not be served from a stale block.
        self.sizes.lock().unwrap_or_else(|e| e.into_inner()).remove(key);
        BLOCKS.with(|b| b.borrow_mut().retain(|(_, k, _, _)| k != key));
        self.inner.delete(key)
    }
    fn is_append_only(&self) -> bool {
        self.inner.is_append_only()
    }
    fn object_lock(&self) -> Option<Arc<super::ObjectLockClient>> {
        self.inner.object_lock()
    }
    fn lock_retention(&self) -> Option<super::LockRetention> {
        self.inner.lock_retention()
    }
}

#[cfg(test)]
mod tests {
    use super::super::ObjectStoreBackend;
    use super::*;

    #[test]
    fn small_reads_come_from_blocks_and_match_the_object() {
        let inner: Arc<dyn Backend> = Arc::new(ObjectStoreBackend::memory());
        let data: Vec<u8> = (0..(9u32 << 20)).map(|i| (i % 251) as u8).collect();
        inner.put("data/ab/pack", data.clone(), PutMode::Create).unwrap();
        let r = ReadAhead::new(inner);
        let mut buf = Vec::new();
        for range in [
            0..10u64,
            100..5000,
            (4 << 20) - 3..(4 << 20) + 3,
            (9 << 20) - 7..9 << 20,
        ] {
            r.get_range_into("data/ab/pack", range.clone(), &mut buf).unwrap();
            assert_eq!(buf, data[range.start as usize..range.end as usize]);
        }
        assert!(r.get_range("data/ab/pack", (9 << 20) - 2..(9 << 20) + 5).is_err());
    }
}
