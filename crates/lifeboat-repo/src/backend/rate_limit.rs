//! Per-location bandwidth and request-rate limits, so a backup to a remote bucket does not
//! saturate a shared uplink or trip the provider's request throttling.

use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{Backend, BackendError, ObjectInfo, PutMode, Upload};

/// A token bucket that may go into debt: a request larger than the burst is let through and
/// the following ones wait until the debt is paid, so the long-run rate is exact without ever
/// splitting a request.
#[derive(Debug)]
pub(crate) struct TokenBucket {
    rate: f64,
    burst: f64,
    state: Mutex<(f64, Instant)>,
}

impl TokenBucket {
    /// `rate` units per second, bursts of up to one second's worth.
    pub(crate) fn new(rate: f64) -> Self {
        TokenBucket {
            rate,
            burst: rate.max(1.0),
            state: Mutex::new((rate.max(1.0), Instant::now())),
        }
    }

    /// Takes `n` units, sleeping as long as the bucket is in debt.
    pub(crate) fn take(&self, n: f64) {
        let wait = {
            let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            let refill = now.duration_since(s.1).as_secs_f64() * self.rate;
            s.0 = (s.0 + refill).min(self.burst) - n;
            s.1 = now;
            if s.0 < 0.0 { -s.0 / self.rate } else { 0.0 }
        };
        if wait > 0.0 {
            std::thread::sleep(Duration::from_secs_f64(wait));
        }
    }
}

/// A backend behind upload-bandwidth and request-rate limits.
pub struct RateLimited {
    inner: Arc<dyn Backend>,
    bytes: Option<Arc<TokenBucket>>,
    requests: Option<Arc<TokenBucket>>,
}

impl RateLimited {
    /// Limits `inner` to `upload_bytes_per_sec` of uploaded data and `requests_per_sec`
    /// requests (either may be absent).
    pub fn new(inner: Arc<dyn Backend>, upload_bytes_per_sec: Option<u64>, requests_per_sec: Option<f64>) -> Self {
        RateLimited {
            inner,
            bytes: upload_bytes_per_sec.map(|r| Arc::new(TokenBucket::new(r as f64))),
            requests: requests_per_sec.map(|r| Arc::new(TokenBucket::new(r))),
        }
    }

    fn request(&self) {
        if let Some(r) = &self.requests {
            r.take(1.0);
        }
    }

    fn upload_bytes(&self, n: usize) {
        if let Some(b) = &self.bytes {
            b.take(n as f64);
        }
    }
}

impl Backend for RateLimited {
    fn location(&self) -> &str {
        self.inner.location()
    }
    fn get(&self, key: &str) -> Result<Vec<u8>, BackendError> {
        self.request();
        self.inner.get(key)
    }
    fn get_range(&self, key: &str, range: Range<u64>) -> Result<Vec<u8>, BackendError> {
        self.request();
        self.inner.get_range(key, range)
    }
    fn get_range_into(&self, key: &str, range: Range<u64>, buf: &mut Vec<u8>) -> Result<(), BackendError> {
        self.request();
        self.inner.get_range_into(key, range, buf)
    }
    fn put(&self, key: &str, data: Vec<u8>, mode: PutMode) -> Result<(), BackendError> {
        self.request();
        self.upload_bytes(data.len());
        self.inner.put(key, data, mode)
    }
    fn upload(&self, key: &str) -> Result<Box<dyn Upload>, BackendError> {
        self.request();
        Ok(Box::new(LimitedUpload {
            inner: self.inner.upload(key)?,
            bytes: self.bytes.clone(),
        }))
    }
    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, BackendError> {
        self.request();
        self.inner.list(prefix)
    }
    fn head(&self, key: &str) -> Result<Option<u64>, BackendError> {
        self.request();
        self.inner.head(key)
    }
    fn delete(&self, key: &str) -> Result<(), BackendError> {
        self.request();
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

struct LimitedUpload {
    inner: Box<dyn Upload>,
    bytes: Option<Arc<TokenBucket>>,
}

impl Upload for LimitedUpload {
    fn write(&mut self, data: &[u8]) -> Result<(), BackendError> {
        if let Some(b) = &self.bytes {
            b.take(data.len() as f64);
        }
        self.inner.write(data)
    }
    fn finish(self: Box<Self>) -> Result<(), BackendError> {
        self.inner.finish()
    }
    fn abort(self: Box<Self>) {
        self.inner.abort()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_enforces_the_rate() {
        // 100 units/s, burst 100: the first 100 pass at once, the next two wait ~1 s each.
        let b = TokenBucket::new(100.0);
        let t = Instant::now();
        for _ in 0..3 {
            b.take(100.0);
        }
        let e = t.elapsed().as_secs_f64();
        assert!((1.8..3.0).contains(&e), "took {e} s");
    }

    #[test]
    fn limited_backend_still_works() {
        let inner: Arc<dyn Backend> = Arc::new(super::super::ObjectStoreBackend::memory());
        let b = RateLimited::new(inner, Some(1 << 20), Some(1000.0));
        b.put("a", vec![1, 2, 3], PutMode::Create).unwrap();
        assert_eq!(b.get("a").unwrap(), vec![1, 2, 3]);
        let mut u = b.upload("p").unwrap();
        u.write(&[7; 100]).unwrap();
        u.finish().unwrap();
        assert_eq!(b.head("p").unwrap(), Some(100));
    }
}
