//! Storage behind one small, synchronous trait.
//!
//! The engine only ever needs whole-object puts (optionally put-if-absent), streamed uploads of
//! packs, ranged reads, listing of a prefix and deletes. That is exactly what every object store
//! offers, so the format never relies on rename or append, and a local folder, S3 or an in-memory
//! store for tests all sit behind [`Backend`]. Implementations live in submodules; wrappers add
//! per-location behaviour without the engine knowing: [`RateLimited`] (bandwidth and request
//! rate), [`AppendOnly`] (no deletes), [`FallbackReader`] (reads from several locations) and
//! [`Tee`] (writes to several locations at once).

mod append_only;
mod content_md5;
mod fallback;
mod location;
mod object_lock;
mod object_store_backend;
mod rate_limit;
mod read_ahead;
mod tee;

use std::ops::Range;
use std::sync::Arc;

pub use append_only::AppendOnly;
pub use fallback::FallbackReader;
pub(crate) use fallback::hash_named as fallback_hash_named;
pub use location::{LocationOptions, LockRetention, S3Options, open_location, parse_rate};
pub use object_lock::{BucketLock, LockMode, ObjectLockClient, Retention};
pub use object_store_backend::ObjectStoreBackend;
pub use rate_limit::RateLimited;
pub use read_ahead::ReadAhead;
pub use tee::{Tee, TeeRound};

/// How the message of a request the store refused (403/401) begins, so callers that only kept
/// the text can still tell refused credentials from other failures.
pub const ACCESS_DENIED: &str = "access denied: ";

/// What kind of failure a backend reported; callers branch on this, people read the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendErrorKind {
    /// The object does not exist.
    NotFound,
    /// A put-if-absent found an object already there.
    AlreadyExists,
    /// The credentials may not do this (an append-only location refusing a delete, or a 403).
    PermissionDenied,
    /// Anything else (I/O, network, permission).
    Other,
}

/// A storage failure, naming the location, the operation and the object.
#[derive(Debug, thiserror::Error)]
#[error("{location}: {op}{}: {message}", object_part(.key))]
pub struct BackendError {
    /// Location description (URL or path).
    pub location: String,
    /// Operation (get, put, list, delete…).
    pub op: &'static str,
    /// Object name.
    pub key: String,
    /// Classification.
    pub kind: BackendErrorKind,
    /// Human-readable cause chain.
    message: String,
    /// Underlying OS error, when there was one.
    io: Option<std::io::Error>,
}

/// ` key` for a message, nothing for an operation on the location itself (`create`, `open`).
fn object_part(key: &str) -> String {
    if key.is_empty() {
        String::new()
    } else {
        format!(" {key}")
    }
}

impl BackendError {
    /// Builds an error; `message` should already contain the cause chain.
    pub fn new(location: &str, op: &'static str, key: &str, kind: BackendErrorKind, message: String) -> Self {
        BackendError {
            location: location.into(),
            op,
            key: key.into(),
            kind,
            message,
            io: None,
        }
    }

    /// Attaches the OS error so callers can recognise a full disk.
    pub fn with_io(mut self, io: Option<std::io::Error>) -> Self {
        self.io = io;
        self
    }

    /// The OS error, if the failure was local I/O.
    pub fn io_error(&self) -> Option<&std::io::Error> {
        self.io.as_ref()
    }

    /// The cause text.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// True when the object was missing.
    pub fn is_not_found(&self) -> bool {
        self.kind == BackendErrorKind::NotFound
    }
}

/// How a put treats an existing object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutMode {
    /// Replace atomically.
    Overwrite,
    /// Fail with [`BackendErrorKind::AlreadyExists`] if present (leases, idempotent writes).
    Create,
}

/// One listed object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Full object name, relative to the repository root.
    pub key: String,
    /// Size in bytes.
    pub size: u64,
    /// Last modification, seconds since the epoch (age checks before deleting garbage).
    pub modified: i64,
}

/// A streamed upload: bytes go out as they come, the object appears under its name only when
/// [`Upload::finish`] succeeds.
pub trait Upload: Send {
    /// Appends bytes.
    fn write(&mut self, data: &[u8]) -> Result<(), BackendError>;
    /// Publishes the object atomically.
    fn finish(self: Box<Self>) -> Result<(), BackendError>;
    /// Gives up; nothing becomes visible.
    fn abort(self: Box<Self>);
}

/// The storage a repository lives in.
pub trait Backend: Send + Sync {
    /// Human-readable location (for messages).
    fn location(&self) -> &str;
    /// Reads a whole (small) object.
    fn get(&self, key: &str) -> Result<Vec<u8>, BackendError>;
    /// Reads a byte range of an object.
    fn get_range(&self, key: &str, range: Range<u64>) -> Result<Vec<u8>, BackendError>;
    /// Reads a byte range into a caller's buffer (replacing its contents), so hot loops such as
    /// restore and check reuse one buffer per thread instead of allocating per blob.
    fn get_range_into(&self, key: &str, range: Range<u64>, buf: &mut Vec<u8>) -> Result<(), BackendError> {
        let data = self.get_range(key, range)?;
        buf.clear();
        buf.extend_from_slice(&data);
        Ok(())
    }
    /// Writes a whole object atomically.
    fn put(&self, key: &str, data: Vec<u8>, mode: PutMode) -> Result<(), BackendError>;
    /// Starts a streamed upload (packs).
    fn upload(&self, key: &str) -> Result<Box<dyn Upload>, BackendError>;
    /// Lists objects whose names start with `prefix` (a folder such as `snapshots/`).
    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, BackendError>;
    /// Size of an object, or `None` if it does not exist.
    fn head(&self, key: &str) -> Result<Option<u64>, BackendError>;
    /// Deletes an object; deleting a missing object is not an error.
    fn delete(&self, key: &str) -> Result<(), BackendError>;

    /// True when this location refuses deletes by design (append-only credentials), so
    /// maintenance can refuse up front instead of failing halfway.
    fn is_append_only(&self) -> bool {
        false
    }
    /// Other locations holding the same repository, best first: the repository re-reads an
    /// object from them when this one returns damaged data. Empty for a single location.
    fn alternates(&self) -> Vec<Arc<dyn Backend>> {
        Vec::new()
    }
    /// Records that a read had to fall back (shown in the command's summary).
    fn note_fallback(&self, _message: String) {}
    /// The fallbacks recorded so far.
    fn fallbacks(&self) -> Vec<String> {
        Vec::new()
    }
    /// For an S3 location: signed Object Lock calls on its bucket (retention of objects, the
    /// bucket's lock configuration). `None` for other stores.
    fn object_lock(&self) -> Option<Arc<ObjectLockClient>> {
        None
    }
    /// The retention this location sets on every object it writes, if any.
    fn lock_retention(&self) -> Option<LockRetention> {
        None
    }
}

/// Opens the backend named by a location string: a path, `file:///path`, `s3://bucket/prefix`
/// (settings from the usual `AWS_*` variables) or `memory:`. A local folder must exist (see
/// [`create`]).
pub fn open(location: &str) -> Result<Arc<dyn Backend>, BackendError> {
    open_location(&LocationOptions::new(location), false)
}

/// Like [`open`], but creates a missing local folder (for `init`).
pub fn create(location: &str) -> Result<Arc<dyn Backend>, BackendError> {
    open_location(&LocationOptions::new(location), true)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An operation on the location itself names no object (no "create : …").
    #[test]
    fn messages_name_the_object_only_when_there_is_one() {
        let e = BackendError::new(
            "/srv/repo",
            "create",
            "",
            BackendErrorKind::Other,
            "Permission denied".into(),
        );
        assert_eq!(e.to_string(), "/srv/repo: create: Permission denied");
        let e = BackendError::new(
            "/srv/repo",
            "put",
            "keys/x",
            BackendErrorKind::Other,
            "disk full".into(),
        );
        assert_eq!(e.to_string(), "/srv/repo: put keys/x: disk full");
    }
}
