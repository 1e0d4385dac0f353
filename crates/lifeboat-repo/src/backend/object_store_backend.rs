//! [`Backend`] on the `object_store` crate: the local filesystem (fsync'd, staged, renamed) and an
//! in-memory store for tests, and S3 or any S3-compatible store (multipart uploads for packs,
//! retries with exponential backoff and jitter from object_store's retry layer).

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use futures_util::TryStreamExt;
use object_store::path::Path as OsPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};

use super::location::{S3Options, read_profile};
use super::{Backend, BackendError, BackendErrorKind, ObjectInfo, PutMode, Upload};

thread_local! {
    /// The pack file this thread read last (see `get_range_into`).
    static OPEN_PACK: std::cell::RefCell<Option<(PathBuf, std::fs::File)>> = const { std::cell::RefCell::new(None) };
}

pub(crate) fn runtime() -> &'static tokio::runtime::Runtime {
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
    /// Upload packs with one PUT instead of a multipart upload (buffered in memory, at most one
    /// pack per upload in flight): Object Lock buckets, where a single PUT carries `Content-MD5`
    /// for the whole object and gets the bucket's default retention on every store.
    single_put: bool,
    /// S3 only: signed Object Lock calls on the bucket.
    lock: Option<Arc<super::ObjectLockClient>>,
    /// Lock every immutable object after writing it (see [`super::LockRetention`]).
    retain: Option<super::LockRetention>,
    /// Local folder owned by another user while we run as root: the (uid, gid) every object
    /// and folder we create is handed to (see [`LocalOwner`]).
    owner: Option<LocalOwner>,
}

/// Run as root (a cron job, an admin's shell) against a repository folder that belongs to
/// another user (typically `postgres`, whose `archive_command` writes into it), lifeboat would
/// leave root-owned folders (`data/94/`) and objects behind, and the owner's next write into
/// them would fail with "Permission denied": archiving would stop. So, as root, everything
/// created under such a folder is given to the folder's owner, as if that user had written it.
#[derive(Clone, Copy, Debug)]
struct LocalOwner {
    uid: u32,
    gid: u32,
}

impl LocalOwner {
    /// The owner to adopt for `root`: only when running as root and `root` is not root's.
    fn of(root: &Path) -> Option<LocalOwner> {
        use std::os::unix::fs::MetadataExt;
        if !rustix::process::geteuid().is_root() {
            return None;
        }
        let m = std::fs::metadata(root).ok()?;
        (m.uid() != 0).then_some(LocalOwner {
            uid: m.uid(),
            gid: m.gid(),
        })
    }

    /// Gives `root/key` and the folders between it and `root` to the owner. Best effort: a
    /// failure leaves the object readable as before and shows up as the owner's write error.
    ///
    /// The folder belongs to someone else, who may swap any part of it for a symlink at any
    /// moment: the path is walked one component at a time from the root, each opened with
    /// `O_PATH | O_NOFOLLOW` relative to the one before, and ownership is changed through those
    /// descriptors. A symlink or anything but a folder on the way, or a final object that is not
    /// a regular file with one link, ends the walk: nothing outside the repository is ever
    /// handed over, and only what root created changes hands.
    fn adopt(&self, root: &Path, key: &str) {
        use rustix::fs::{AtFlags, CWD, FileType, Gid, Mode, OFlags, Uid, chownat, fstat, openat};
        let path_flags = OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let Ok(mut dir) = openat(CWD, root, path_flags | OFlags::DIRECTORY, Mode::empty()) else {
            return;
        };
        let parts: Vec<&str> = key.split('/').filter(|p| !p.is_empty()).collect();
        let (uid, gid) = (Uid::from_raw(self.uid), Gid::from_raw(self.gid));
        for (i, part) in parts.iter().enumerate() {
            if *part == "." || *part == ".." {
                return;
            }
            let last = i + 1 == parts.len();
            let flags = if last {
                path_flags
            } else {
                path_flags | OFlags::DIRECTORY
            };
            let Ok(fd) = openat(&dir, *part, flags, Mode::empty()) else {
                return;
            };
            let Ok(st) = fstat(&fd) else { return };
            let want = if last {
                FileType::RegularFile
            } else {
                FileType::Directory
            };
            // A hard link to a file elsewhere (slipped in after the publishing rename) has a
            // second name; the object just written has one.
            if FileType::from_raw_mode(st.st_mode) != want || (last && st.st_nlink != 1) {
                return;
            }
            // Only what root made: anything else already has an owner of its own.
            if st.st_uid == 0 {
                let _ = chownat(&fd, "", Some(uid), Some(gid), AtFlags::EMPTY_PATH);
            }
            dir = fd;
        }
    }
}

/// Objects rewritten or removed in place, never locked: the prune lease and probes (`locks/`)
/// and the location's own status records (`status/`).
fn is_mutable(key: &str) -> bool {
    key.starts_with("locks/") || key.starts_with("status/")
}

impl ObjectStoreBackend {
    fn adopt(&self, key: &str) {
        if let (Some(owner), Some(root)) = (&self.owner, &self.local_root) {
            owner.adopt(root, key);
        }
    }

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
            single_put: false,
            lock: None,
            retain: None,
            owner: LocalOwner::of(root),
        })
    }

    /// An S3 bucket (`bucket/prefix`, the part after `s3://`). Settings not given in `o` come
    /// from the `AWS_*` environment variables, then the shared AWS config files. Nothing is
    /// contacted here: the first request tells whether the location is reachable.
    pub fn s3(bucket_and_prefix: &str, location: String, o: &S3Options) -> Result<Self, BackendError> {
        use object_store::ClientConfigKey;
        use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
        let bad = |m: String| BackendError::new(&location, "open", "", BackendErrorKind::Other, m);
        let (bucket, prefix) = bucket_and_prefix.split_once('/').unwrap_or((bucket_and_prefix, ""));
        if bucket.is_empty() {
            return Err(bad("no bucket in the URL (expected s3://bucket/prefix)".into()));
        }
        let mut b = AmazonS3Builder::from_env().with_bucket_name(bucket);
        let env_has_keys = std::env::var_os("AWS_ACCESS_KEY_ID").is_some();
        let profile_name = o
            .profile
            .clone()
            .or_else(|| std::env::var("AWS_PROFILE").ok())
            .unwrap_or_else(|| "default".into());
        let prof = read_profile(&profile_name);
        if !env_has_keys || o.profile.is_some() {
            if let (Some(k), Some(s)) = (&prof.access_key_id, &prof.secret_access_key) {
                b = b.with_access_key_id(k).with_secret_access_key(s);
                if let Some(t) = &prof.session_token {
                    b = b.with_token(t);
                }
            } else if o.profile.is_some() {
                return Err(bad(format!(
                    "profile {profile_name:?} has no aws_access_key_id/aws_secret_access_key in the shared credentials file"
                )));
            }
        }
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let region = o
            .region
            .clone()
            .or_else(|| env("AWS_REGION"))
            .or_else(|| env("AWS_DEFAULT_REGION"))
            .or(prof.region)
            .unwrap_or_else(|| "us-east-1".into());
        b = b.with_region(&region);
        let endpoint = o
            .endpoint
            .clone()
            .or_else(|| env("AWS_ENDPOINT_URL"))
            .or_else(|| env("AWS_ENDPOINT"))
            .or(prof.endpoint_url);
        if let Some(e) = &endpoint {
            b = b.with_endpoint(e.trim_end_matches('/'));
            let http = o.allow_http.unwrap_or(e.starts_with("http://"));
            b = b.with_allow_http(http);
        } else if let Some(h) = o.allow_http {
            b = b.with_allow_http(h);
        }
        // Virtual-hosted requests need DNS for bucket.endpoint: default to path-style with a
        // custom endpoint (S3-compatible stores on an address), virtual-hosted on AWS itself.
        let path_style = o.path_style.unwrap_or(endpoint.is_some());
        b = b.with_virtual_hosted_style_request(!path_style);
        if o.object_lock {
            b = b.with_http_connector(super::content_md5::ContentMd5Connector);
        }
        if let Some(k) = &o.sse_kms_key_id {
            b = b.with_sse_kms_encryption(k);
        }
        let retry = object_store::RetryConfig {
            backoff: object_store::BackoffConfig {
                init_backoff: std::time::Duration::from_millis(200),
                max_backoff: std::time::Duration::from_secs(10),
                base: 2.0,
            },
            max_retries: o.max_retries.unwrap_or(6),
            retry_timeout: o.retry_timeout.unwrap_or(std::time::Duration::from_secs(60)),
        };
        b = b
            .with_retry(retry)
            .with_config(AmazonS3ConfigKey::Client(ClientConfigKey::ConnectTimeout), "5s")
            .with_config(AmazonS3ConfigKey::Client(ClientConfigKey::Timeout), "120s");
        let s3 = b.build().map_err(|e| bad(chain(&e)))?;
        let lock = super::object_lock::ObjectLockClient::new(
            &super::object_lock::BucketAddress {
                bucket,
                prefix,
                region: &region,
                endpoint: endpoint.as_deref().map(|e| e.trim_end_matches('/')),
                path_style,
                allow_http: o
                    .allow_http
                    .unwrap_or(endpoint.as_deref().is_some_and(|e| e.starts_with("http://"))),
            },
            s3.credentials().clone(),
            location.clone(),
        )?;
        let store: Arc<dyn ObjectStore> = if prefix.trim_matches('/').is_empty() {
            Arc::new(s3)
        } else {
            Arc::new(object_store::prefix::PrefixStore::new(
                s3,
                OsPath::from(prefix.trim_matches('/')),
            ))
        };
        Ok(ObjectStoreBackend {
            store,
            location,
            // S3 parts must be at least 5 MiB (except the last); 8 MiB keeps a 16 MiB pack at two
            // parts and two requests in flight.
            part_size: 8 << 20,
            parts_in_flight: 2,
            local_root: None,
            single_put: o.object_lock,
            lock: Some(Arc::new(lock)),
            retain: if o.object_lock { o.lock_retention } else { None },
            owner: None,
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
            single_put: false,
            lock: None,
            retain: None,
            owner: None,
        }
    }

    /// After a write: locks the object for the configured span, if this location locks objects.
    fn lock_after_write(&self, key: &str) -> Result<(), BackendError> {
        let (Some(lock), Some(r)) = (&self.lock, self.retain) else {
            return Ok(());
        };
        if is_mutable(key) {
            return Ok(());
        }
        let span = jiff::SignedDuration::try_from(r.span).unwrap_or(jiff::SignedDuration::MAX);
        let until = jiff::Timestamp::now().checked_add(span).unwrap_or(jiff::Timestamp::MAX);
        lock.put_retention(key, r.mode, until)
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

/// `access denied: 403 Forbidden SignatureDoesNotMatch`: the status and, when the response had a
/// body (HEAD responses have none), the S3 error code, without the long cause chain.
fn denied_message(text: &str) -> String {
    let status = ["401 Unauthorized", "403 Forbidden"]
        .into_iter()
        .find(|s| text.contains(s))
        .unwrap_or("403 Forbidden");
    let code = text
        .split_once("<Code>")
        .and_then(|(_, r)| r.split_once("</Code>"))
        .map(|(c, _)| format!(" {}", c.trim()))
        .unwrap_or_default();
    format!(
        "{}{status}{code} (check the access key, the secret and what they may do)",
        super::ACCESS_DENIED
    )
}

fn convert(location: &str, op: &'static str, key: &str, e: object_store::Error) -> BackendError {
    let kind = match &e {
        object_store::Error::NotFound { .. } => BackendErrorKind::NotFound,
        object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. } => {
            BackendErrorKind::AlreadyExists
        }
        object_store::Error::PermissionDenied { .. } | object_store::Error::Unauthenticated { .. } => {
            BackendErrorKind::PermissionDenied
        }
        // Some requests (listing) report a refusal as a generic error carrying the status.
        _ if {
            let t = chain(&e);
            t.contains("403 Forbidden") || t.contains("401 Unauthorized")
        } =>
        {
            BackendErrorKind::PermissionDenied
        }
        _ => BackendErrorKind::Other,
    };
    let message = match kind {
        // A write that finds nothing: on S3 the bucket itself is missing.
        BackendErrorKind::NotFound if matches!(op, "put" | "upload") => {
            "not found (does the bucket exist?)".to_string()
        }
        BackendErrorKind::NotFound => "not found".to_string(),
        BackendErrorKind::AlreadyExists => "already exists".to_string(),
        BackendErrorKind::PermissionDenied => denied_message(&chain(&e)),
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
        let path = root.join(key);
        // The last pack this thread read stays open: restore and check read a pack's blobs one
        // after the other, and one open file per pack (instead of one per blob) saves an open
        // and a close per blob and lets the kernel see the sequential reads and read ahead.
        // Packs are immutable, so an open file can never show stale bytes.
        buf.clear();
        buf.resize(len, 0);
        OPEN_PACK.with(|c| {
            let mut c = c.borrow_mut();
            if c.as_ref().is_none_or(|(p, _)| *p != path) {
                *c = None; // closes the previous pack first
                *c = Some((path.clone(), std::fs::File::open(&path).map_err(err)?));
            }
            let (_, f) = c.as_ref().expect("opened above");
            f.read_exact_at(buf, range.start).map_err(err)
        })
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
            .map_err(|e| convert(&self.location, "put", key, e))?;
        self.adopt(key);
        self.lock_after_write(key)
    }

    fn upload(&self, key: &str) -> Result<Box<dyn Upload>, BackendError> {
        if self.single_put {
            return Ok(Box::new(BufferedUpload {
                backend: self.clone(),
                key: key.to_string(),
                data: Vec::new(),
            }));
        }
        let p = OsPath::from(key);
        let up = runtime()
            .block_on(self.store.put_multipart(&p))
            .map_err(|e| convert(&self.location, "upload", key, e))?;
        Ok(Box::new(StreamUpload {
            inner: Some(WriteMultipart::new_with_chunk_size(up, self.part_size)),
            part_size: self.part_size,
            location: self.location.clone(),
            key: key.to_string(),
            max_parts_in_flight: self.parts_in_flight,
            adopt: self.owner.zip(self.local_root.clone()),
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
            Err(e @ object_store::Error::PermissionDenied { .. }) => {
                // A refused HEAD has no body, so no S3 error code: ask once more with a GET,
                // whose refusal says why (InvalidAccessKeyId, SignatureDoesNotMatch, AccessDenied).
                let first = convert(&self.location, "head", key, e);
                match runtime().block_on(self.store.get_range(&p, 0..1)) {
                    Err(g @ object_store::Error::PermissionDenied { .. }) => {
                        let why = convert(&self.location, "head", key, g);
                        Err(
                            if why.message().contains(" (check") && why.message() != first.message() {
                                why
                            } else {
                                first
                            },
                        )
                    }
                    _ => Err(first),
                }
            }
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

    fn object_lock(&self) -> Option<Arc<super::ObjectLockClient>> {
        self.lock.clone()
    }

    fn lock_retention(&self) -> Option<super::LockRetention> {
        self.retain
    }
}

/// An upload published with one PUT on finish (see `single_put`).
struct BufferedUpload {
    backend: ObjectStoreBackend,
    key: String,
    data: Vec<u8>,
}

impl Upload for BufferedUpload {
    fn write(&mut self, data: &[u8]) -> Result<(), BackendError> {
        self.data.extend_from_slice(data);
        Ok(())
    }

    fn finish(self: Box<Self>) -> Result<(), BackendError> {
        let BufferedUpload { backend, key, data } = *self;
        backend.put(&key, data, PutMode::Overwrite)
    }

    fn abort(self: Box<Self>) {}
}

struct StreamUpload {
    inner: Option<WriteMultipart>,
    part_size: usize,
    max_parts_in_flight: usize,
    location: String,
    key: String,
    /// See [`LocalOwner`]: applied once the object is published.
    adopt: Option<(LocalOwner, PathBuf)>,
}

impl Upload for StreamUpload {
    fn write(&mut self, data: &[u8]) -> Result<(), BackendError> {
        let w = self.inner.as_mut().expect("upload used after finish");
        let _guard = runtime().enter();
        // Bound the parts in flight so a slow store applies back-pressure. One part at a time:
        // a write of a whole 8 MiB blob would otherwise start all its parts at once, each a copy
        // on its own I/O thread.
        for piece in data.chunks(self.part_size.max(1)) {
            runtime()
                .block_on(w.wait_for_capacity(self.max_parts_in_flight))
                .map_err(|e| convert(&self.location, "upload", &self.key, e))?;
            w.write(piece);
        }
        Ok(())
    }

    fn finish(mut self: Box<Self>) -> Result<(), BackendError> {
        let w = self.inner.take().expect("upload finished twice");
        let _guard = runtime().enter();
        runtime()
            .block_on(w.finish())
            .map(|_| ())
            .map_err(|e| convert(&self.location, "upload", &self.key, e))?;
        if let Some((owner, root)) = &self.adopt {
            owner.adopt(root, &self.key);
        }
        Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    /// As root, into a folder owned by another user: every object and folder written belongs
    /// to that user (whose archive_command writes there next), through both ways of writing.
    #[test]
    fn as_root_objects_belong_to_the_folders_owner() {
        if !rustix::process::geteuid().is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let (uid, gid) = (65534, 65534);
        std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).unwrap();
        let b = ObjectStoreBackend::local(dir.path(), false).unwrap();
        b.put("snapshots/one", b"x".to_vec(), PutMode::Create).unwrap();
        let mut up = b.upload("data/94/pack").unwrap();
        up.write(b"pack bytes").unwrap();
        up.finish().unwrap();
        for p in ["snapshots", "snapshots/one", "data", "data/94", "data/94/pack"] {
            let m = std::fs::metadata(dir.path().join(p)).unwrap();
            assert_eq!((m.uid(), m.gid()), (uid, gid), "{p}");
        }
        // A folder swapped for a symlink to somewhere else: nothing there changes hands.
        let outside = tempfile::tempdir().unwrap();
        std::fs::create_dir(outside.path().join("95")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("95"), dir.path().join("data/95")).unwrap();
        b.put("data/95/pack", b"x".to_vec(), PutMode::Create).unwrap();
        for p in ["95", "95/pack"] {
            assert_eq!(std::fs::metadata(outside.path().join(p)).unwrap().uid(), 0, "{p}");
        }
        // A root-owned folder stays root's.
        let own = tempfile::tempdir().unwrap();
        let b = ObjectStoreBackend::local(own.path(), false).unwrap();
        b.put("data/aa/x", b"x".to_vec(), PutMode::Create).unwrap();
        assert_eq!(std::fs::metadata(own.path().join("data/aa/x")).unwrap().uid(), 0);
    }
}
