//! The lock a background worker of a spool (the WAL pusher, the WAL prefetcher) holds.
//!
//! The call that starts a worker takes an exclusive `flock` on the worker's lock file and hands
//! the open file to the worker as its standard input, so the lock is held from before the worker
//! starts until it exits or dies (the kernel then drops it). Others test it with a shared lock
//! that they release at once.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::Path;

use crate::error::{PgError, Result};

/// Takes the lock at `path` (creating the file and its folder): `Some(file)` to hand to the new
/// worker, `None` when a worker holds it.
pub fn try_take(path: &Path) -> Result<Option<File>> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| PgError::io(dir, e))?;
    }
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|e| PgError::io(path, e))?;
    match f.try_lock() {
        Ok(()) => Ok(Some(f)),
        Err(TryLockError::WouldBlock) => Ok(None),
        Err(TryLockError::Error(e)) => Err(PgError::io(path, e)),
    }
}

/// True while a worker holds the lock at `path` (no file: none ever ran).
pub fn held(path: &Path) -> bool {
    let Ok(f) = File::open(path) else {
        return false;
    };
    matches!(f.try_lock_shared(), Err(TryLockError::WouldBlock))
}
