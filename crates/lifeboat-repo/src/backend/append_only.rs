//! Append-only locations: the credentials this host holds may add objects but not delete them,
//! so a breached host cannot destroy its own backups. Deletion belongs to a separate
//! maintenance credential (see docs/s3.md). The wrapper refuses deletes itself, so the refusal
//! is the same clear error whether or not the store would also have refused.

use std::ops::Range;
use std::sync::Arc;

use super::{Backend, BackendError, BackendErrorKind, ObjectInfo, PutMode, Upload};

/// A backend whose deletes are refused.
pub struct AppendOnly {
    inner: Arc<dyn Backend>,
}

impl AppendOnly {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn Backend>) -> Self {
        AppendOnly { inner }
    }
}

impl Backend for AppendOnly {
    fn location(&self) -> &str {
        self.inner.location()
    }
    fn get(&self, key: &str) -> Result<Vec<u8>, BackendError> {
        self.inner.get(key)
    }
    fn get_range(&self, key: &str, range: Range<u64>) -> Result<Vec<u8>, BackendError> {
        self.inner.get_range(key, range)
    }
    fn get_range_into(&self, key: &str, range: Range<u64>, buf: &mut Vec<u8>) -> Result<(), BackendError> {
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
        Err(BackendError::new(
            self.inner.location(),
            "delete",
            key,
            BackendErrorKind::PermissionDenied,
            "refused: the location is append-only (deletes need the maintenance credential)".into(),
        ))
    }
    fn is_append_only(&self) -> bool {
        true
    }
    fn object_lock(&self) -> Option<Arc<super::ObjectLockClient>> {
        self.inner.object_lock()
    }
    fn lock_retention(&self) -> Option<super::LockRetention> {
        self.inner.lock_retention()
    }
}
