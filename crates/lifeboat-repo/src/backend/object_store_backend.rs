//! [`Backend`] on the `object_store` crate: the local filesystem (fsync'd, staged, renamed) and an
//! in-memory store for tests. S3 will plug in here too.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use futures_util::TryStreamExt;
use object_store::path::Path as OsPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};

use super::{Backend, BackendError, BackendErrorKind, ObjectInfo, PutMode, Upload};

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("lifeboat-io")
            .enable_all()
            .build()
            .expect("cannot start the I/O runtime")
    })
}

/// A backend on any `object_store` implementation.
#[derive(Debug, Clone)]
pub struct ObjectStoreBackend {
    store: Arc<dyn ObjectStore>,
    location: String,
    /// Bytes per upload part: small for local disks (memory), larger for remote stores (requests).
    part_size: usize,
    /// Parts uploading at once per pack.
    parts_in_flight: usize,
    /// For a local folder: its path, so ranged reads can be positioned reads on the file itself
    /// (no hop through the async runtime per blob). Writes always go through object_store.
    local_root: Option<PathBuf>,
}

impl ObjectStoreBackend {
    /// A local folder; created only when `create` (for `init`), so a mistyped path is reported,
    /// not silently made. Every write is fsync'd and published by rename, so a crash never leaves
    /// a partial object under its final name.
    pub fn local(root: &Path, create: bool) -> Result<Self, BackendError> {
        let location = root.display().to_string();
        if create {
            std::fs::create_dir_all(root).map_err(|e| {
                BackendError::new(&location, "create", "", BackendErrorKind::Other, e.to_string()).with_io(Some(e))
            })?;
        } else if !root.is_dir() {
            return Err(BackendError::new(
                &location,
                "open",
                "",
                BackendErrorKind::NotFound,
                "no such folder".into(),
            ));
        }
        let store = object_store::local::LocalFileSystem::new_with_prefix(root)
            .map_err(|e| convert(&location, "open", "", e))?
            .with_fsync(true);
        Ok(ObjectStoreBackend {
            store: Arc::new(store),
            location,
            part_size: 1 << 20,
            parts_in_flight: 1,
            local_root: Some(root.canonicalize().unwrap_or_else(|_| root.to_path_buf())),
        })
    }

    /// An in-memory store (tests, fuzzing).
    pub fn memory() -> Self {
        ObjectStoreBackend {
            store: Arc::new(object_store::memory::InMemory::new()),
            location: "memory:".into(),
            part_size: 1 << 20,
            parts_in_flight: 1,
            local_root: None,
        }
    }
}

fn find_io(e: &(dyn std::error::Error + 'static)) -> Option<std::io::Error> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cur {
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            return Some(std::io::Error::new(io.kind(), io.to_string()));
        }
        cur = c.source();
    }
    None
}

fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}

fn convert(location: &str, op: &'static str, key: &str, e: object_store::Error) -> BackendError {
    let kind = match &e {
        object_store::Error::NotFound { .. } => BackendErrorKind::NotFound,
        object_store::Error::AlreadyExists { .. } => BackendErrorKind::AlreadyExists,
        _ => BackendErrorKind::Other,
    };
    let message = match kind {
        BackendErrorKind::NotFound => "not found".to_string(),
        BackendErrorKind::AlreadyExists => "already exists".to_string(),
        BackendErrorKind::Other => chain(&e),
    };
    BackendError::new(location, op, key, kind, message).with_io(find_io(&e))
}

impl Backend for ObjectStoreBackend {
    fn location(&self) -> &str {
        &self.location
    }

    fn get(&self, key: &str) -> Result<Vec<u8>, BackendError> {
        let p = OsPath::from(key);
        runtime()
            .block_on(async {
                let r = self.store.get(&p).await?;
                r.bytes().await
            })
            .map(|b| b.to_vec())
            .map_err(|e| convert(&self.location, "get", key, e))
    }

    fn get_range(&self, key: &str, range: Range<u64>) -> Result<Vec<u8>, BackendError> {
        let p = OsPath::from(key);
        let want = range.end - range.start;
        let b = runtime()
            .block_on(self.store.get_range(&p, range))
            .map_err(|e| convert(&self.location, "get", key, e))?;
        if b.len() as u64 != want {
            return Err(BackendError::new(
                &self.location,
                "get",
                key,
                BackendErrorKind::Other,
                format!("short read: {} of {want} bytes", b.len()),
            ));
        }
        Ok(b.to_vec())
    }

    fn get_range_into(&self, key: &str, range: Range<u64>, buf: &mut Vec<u8>) -> Result<(), BackendError> {
        let Some(root) = &self.local_root else {
            let data = self.get_range(key, range)?;
            buf.clear();
            buf.extend_from_slice(&data);
            return Ok(());
        };
        use std::os::unix::fs::FileExt;
        let err = |e: std::io::Error| {
            let kind = if e.kind() == std::io::ErrorKind::NotFound {
                BackendErrorKind::NotFound
            } else {
                BackendErrorKind::Other
            };
            let msg = if e.kind() == std::io::ErrorKind::UnexpectedEof {
                "short read (object truncated)".to_string()
            } else {
                e.to_string()
            };
            BackendError::new(&self.location, "get", key, kind, msg).with_io(Some(e))
        };
        let len = usize::try_from(range.end.saturating_sub(range.start))
            .map_err(|_| err(std::io::Error::other("range too large")))?;
        let f = std::fs::File::open(root.join(key)).map_err(err)?;
        buf.clear();
        buf.resize(len, 0);
        f.read_exact_at(buf, range.start).map_err(err)
    }

    fn put(&self, key: &str, data: Vec<u8>, mode: PutMode) -> Result<(), BackendError> {
        let p = OsPath::from(key);
        let mode = match mode {
            PutMode::Overwrite => object_store::PutMode::Overwrite,
            PutMode::Create => object_store::PutMode::Create,
        };
        runtime()
            .block_on(self.store.put_opts(&p, PutPayload::from(data), mode.into()))
            .map(|_| ())
            .map_err(|e| convert(&self.location, "put", key, e))
    }

    fn upload(&self, key: &str) -> Result<Box<dyn Upload>, BackendError> {
        let p = OsPath::from(key);
        let up = runtime()
            .block_on(self.store.put_multipart(&p))
            .map_err(|e| convert(&self.location, "upload", key, e))?;
        Ok(Box::new(StreamUpload {
            inner: Some(WriteMultipart::new_with_chunk_size(up, self.part_size)),
            location: self.location.clone(),
            key: key.to_string(),
            max_parts_in_flight: self.parts_in_flight,
        }))
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, BackendError> {
        let p = OsPath::from(prefix.trim_end_matches('/'));
        runtime()
            .block_on(async {
                self.store
                    .list(Some(&p))
                    .map_ok(|m| ObjectInfo {
                        key: m.location.to_string(),
                        size: m.size,
                        modified: m.last_modified.timestamp(),
                    })
                    .try_collect::<Vec<_>>()
                    .await
            })
            .map_err(|e| convert(&self.location, "list", prefix, e))
    }

    fn head(&self, key: &str) -> Result<Option<u64>, BackendError> {
        let p = OsPath::from(key);
        match runtime().block_on(self.store.head(&p)) {
            Ok(m) => Ok(Some(m.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(convert(&self.location, "head", key, e)),
        }
    }

    fn delete(&self, key: &str) -> Result<(), BackendError> {
        let p = OsPath::from(key);
        match runtime().block_on(self.store.delete(&p)) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(convert(&self.location, "delete", key, e)),
        }
    }
}

struct StreamUpload {
    inner: Option<WriteMultipart>,
    max_parts_in_flight: usize,
    location: String,
    key: String,
}

impl Upload for StreamUpload {
    fn write(&mut self, data: &[u8]) -> Result<(), BackendError> {
        let w = self.inner.as_mut().expect("upload used after finish");
        let _guard = runtime().enter();
        // Bound the bytes in flight so a slow store applies back-pressure.
        runtime()
            .block_on(w.wait_for_capacity(self.max_parts_in_flight))
            .map_err(|e| convert(&self.location, "upload", &self.key, e))?;
        w.write(data);
        Ok(())
    }

    fn finish(mut self: Box<Self>) -> Result<(), BackendError> {
        let w = self.inner.take().expect("upload finished twice");
        let _guard = runtime().enter();
        runtime()
            .block_on(w.finish())
            .map(|_| ())
            .map_err(|e| convert(&self.location, "upload", &self.key, e))
    }

    fn abort(mut self: Box<Self>) {
        if let Some(w) = self.inner.take() {
            let _guard = runtime().enter();
            let _ = runtime().block_on(w.abort());
        }
    }
}

impl Drop for StreamUpload {
    fn drop(&mut self) {
        if let Some(w) = self.inner.take() {
            let _guard = runtime().enter();
            let _ = runtime().block_on(w.abort());
        }
    }
}
