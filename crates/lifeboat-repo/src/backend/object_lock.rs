//! S3 Object Lock requests that object_store does not offer: `PutObjectRetention`,
//! `GetObjectRetention`, `GetObjectLockConfiguration` and `GetBucketVersioning`.
//!
//! They are plain signed S3 calls. The signer is object_store's own public SigV4 implementation
//! ([`AwsAuthorizer`], which signs every header of the request, so the `x-amz-*` and
//! `Content-MD5` headers these calls need are covered) and the credentials are the very
//! provider the location's store resolved (environment, profile, web identity, instance
//! metadata…). No second signing crate, no second credential chain.
//!
//! Why per-object retention at all: a bucket's default retention is one number of days picked by
//! hand; lifeboat knows the retention policy and can lock every object exactly as long as a kept
//! snapshot may need it, and extend the lock of old packs that newer snapshots still use.

use std::time::Duration;

use base64::Engine;
use md5::{Digest, Md5};
use object_store::aws::{AwsAuthorizer, AwsCredentialProvider};
use object_store::client::{HttpClient, HttpConnector, HttpRequest, HttpRequestBody, ReqwestConnector};

use super::{BackendError, BackendErrorKind};

/// Object Lock retention mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum LockMode {
    /// Users with `s3:BypassGovernanceRetention` may still shorten or remove the lock.
    Governance,
    /// Nobody, not even the account root, can shorten it or delete the version before it ends.
    Compliance,
}

impl LockMode {
    /// The name S3 uses.
    pub fn as_str(self) -> &'static str {
        match self {
            LockMode::Governance => "GOVERNANCE",
            LockMode::Compliance => "COMPLIANCE",
        }
    }

    fn parse(s: &str) -> Option<LockMode> {
        match s.trim() {
            "GOVERNANCE" => Some(LockMode::Governance),
            "COMPLIANCE" => Some(LockMode::Compliance),
            _ => None,
        }
    }
}

/// The lock of one object version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retention {
    /// Its mode.
    pub mode: LockMode,
    /// Until when it is locked.
    pub until: jiff::Timestamp,
}

/// A bucket's Object Lock configuration, as `GetObjectLockConfiguration` reports it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct BucketLock {
    /// Object Lock is enabled (it can only be enabled, never turned off).
    pub enabled: bool,
    /// The default retention applied to every new object version, if any.
    pub default_mode: Option<LockMode>,
    /// Its length in days (years are converted at 365 days).
    pub default_days: Option<u64>,
}

impl BucketLock {
    /// `enabled, GOVERNANCE default 32 d`, `enabled, no default retention` or `not enabled`.
    pub fn describe(&self) -> String {
        if !self.enabled {
            return "not enabled".into();
        }
        match (self.default_mode, self.default_days) {
            (Some(m), Some(d)) => format!("enabled, {} default {d} d", m.as_str()),
            _ => "enabled, no default retention".into(),
        }
    }
}

/// Signed Object Lock calls against one bucket (and the location's prefix inside it).
#[derive(Debug)]
pub struct ObjectLockClient {
    /// Built on first use: most commands never make an Object Lock call.
    http: std::sync::OnceLock<Result<HttpClient, String>>,
    options: object_store::ClientOptions,
    credentials: AwsCredentialProvider,
    region: String,
    /// `https://host[/bucket]`, without a trailing slash: the bucket's base URL.
    bucket_url: String,
    /// The location's prefix inside the bucket (`lifeboat/`), or empty.
    prefix: String,
    location: String,
}

/// Where a bucket is addressed: what [`ObjectLockClient::new`] needs besides credentials.
pub(crate) struct BucketAddress<'a> {
    pub bucket: &'a str,
    pub prefix: &'a str,
    pub region: &'a str,
    pub endpoint: Option<&'a str>,
    pub path_style: bool,
    pub allow_http: bool,
}

impl ObjectLockClient {
    pub(crate) fn new(
        addr: &BucketAddress<'_>,
        credentials: AwsCredentialProvider,
        location: String,
    ) -> Result<Self, BackendError> {
        let options = object_store::ClientOptions::new()
            .with_allow_http(addr.allow_http)
            .with_connect_timeout(Duration::from_secs(5))
            .with_timeout(Duration::from_secs(60));
        let bucket_url = match (addr.endpoint, addr.path_style) {
            (Some(e), true) => format!("{}/{}", e.trim_end_matches('/'), addr.bucket),
            // Like object_store: a virtual-hosted custom endpoint already names the bucket.
            (Some(e), false) => e.trim_end_matches('/').to_string(),
            (None, true) => format!("https://s3.{}.amazonaws.com/{}", addr.region, addr.bucket),
            (None, false) => format!("https://{}.s3.{}.amazonaws.com", addr.bucket, addr.region),
        };
        let prefix = addr.prefix.trim_matches('/');
        Ok(ObjectLockClient {
            http: std::sync::OnceLock::new(),
            options,
            credentials,
            region: addr.region.to_string(),
            bucket_url,
            prefix: if prefix.is_empty() {
                String::new()
            } else {
                format!("{prefix}/")
            },
            location,
        })
    }

    /// Locks `key` (relative to the repository) in `mode` until `until`. Extending is always
    /// allowed; shortening a lock is refused by S3 (COMPLIANCE) or needs a bypass permission
    /// (GOVERNANCE) that lifeboat never asks for.
    pub fn put_retention(&self, key: &str, mode: LockMode, until: jiff::Timestamp) -> Result<(), BackendError> {
        let body = format!(
            "<Retention xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Mode>{}</Mode><RetainUntilDate>{}</RetainUntilDate></Retention>",
            mode.as_str(),
            until
                .round(jiff::Unit::Second)
                .unwrap_or(until)
                .strftime("%Y-%m-%dT%H:%M:%SZ")
        );
        self.call(
            "put-retention",
            key,
            http::Method::PUT,
            &self.object_url(key, "retention"),
            body.into_bytes(),
        )
        .map(|_| ())
    }

    /// The lock of `key`'s current version, or `None` when it has none. Read from the object's
    /// HEAD (`x-amz-object-lock-mode` and `-retain-until-date`, sent to callers allowed
    /// `s3:GetObjectRetention`), which every store with Object Lock answers.
    pub fn get_retention(&self, key: &str) -> Result<Option<Retention>, BackendError> {
        let url = format!("{}/{}", self.bucket_url, encode_path(&format!("{}{key}", self.prefix)));
        let (headers, _) = self.call("get-retention", key, http::Method::HEAD, &url, Vec::new())?;
        let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
        Ok(h("x-amz-object-lock-mode")
            .and_then(|m| LockMode::parse(&m.to_ascii_uppercase()))
            .zip(h("x-amz-object-lock-retain-until-date").and_then(|t| t.parse::<jiff::Timestamp>().ok()))
            .map(|(mode, until)| Retention { mode, until }))
    }

    /// The bucket's Object Lock configuration.
    pub fn bucket_lock(&self) -> Result<BucketLock, BackendError> {
        let url = format!("{}/?object-lock", self.bucket_url);
        match self.call("get-object-lock-configuration", "", http::Method::GET, &url, Vec::new()) {
            Ok((_, body)) => Ok(parse_bucket_lock(&body)),
            // No configuration, or a store that does not implement Object Lock at all.
            Err(e)
                if (e.kind == BackendErrorKind::NotFound
                    && e.message().contains("ObjectLockConfigurationNotFound"))
                    || e.message().starts_with("501") =>
            {
                Ok(BucketLock {
                    enabled: false,
                    default_mode: None,
                    default_days: None,
                })
            }
            Err(e) => Err(e),
        }
    }

    /// The bucket's versioning state: `Enabled`, `Suspended` or `never enabled`.
    pub fn versioning(&self) -> Result<String, BackendError> {
        let url = format!("{}/?versioning", self.bucket_url);
        let (_, body) = self.call("get-bucket-versioning", "", http::Method::GET, &url, Vec::new())?;
        Ok(tag(&body, "Status").unwrap_or("never enabled").to_string())
    }

    fn object_url(&self, key: &str, sub: &str) -> String {
        format!(
            "{}/{}?{sub}",
            self.bucket_url,
            encode_path(&format!("{}{key}", self.prefix))
        )
    }

    /// One signed request, retried up to three times on network errors and 5xx; returns the
    /// response body of a 2xx, else an error naming the operation and the S3 status and code.
    fn call(
        &self,
        op: &'static str,
        key: &str,
        method: http::Method,
        url: &str,
        body: Vec<u8>,
    ) -> Result<(http::HeaderMap, String), BackendError> {
        let err = |kind, m: String| BackendError::new(&self.location, op, key, kind, m);
        let http = self
            .http
            .get_or_init(|| {
                ReqwestConnector::default()
                    .connect(&self.options)
                    .map_err(|e| e.to_string())
            })
            .as_ref()
            .map_err(|e| err(BackendErrorKind::Other, e.clone()))?;
        let mut last = String::new();
        for attempt in 0..4u32 {
            if attempt > 0 {
                std::thread::sleep(Duration::from_millis(200 << attempt));
            }
            let mut req: HttpRequest = http::Request::builder()
                .method(method.clone())
                .uri(url)
                .body(HttpRequestBody::from(body.clone()))
                .map_err(|e| err(BackendErrorKind::Other, format!("bad request URL {url}: {e}")))?;
            if !body.is_empty() {
                let md5 = base64::engine::general_purpose::STANDARD.encode(Md5::digest(&body));
                req.headers_mut().insert(
                    "content-md5",
                    http::HeaderValue::from_str(&md5).expect("base64 is a valid header"),
                );
                req.headers_mut()
                    .insert("content-type", http::HeaderValue::from_static("application/xml"));
            }
            let result = super::object_store_backend::runtime().block_on(async {
                let cred = self.credentials.get_credential().await.map_err(|e| e.to_string())?;
                AwsAuthorizer::new(&cred, "s3", &self.region)
                    .try_authorize(&mut req, None)
                    .map_err(|e| e.to_string())?;
                let resp = http.execute(req).await.map_err(|e| e.to_string())?;
                let status = resp.status();
                let headers = resp.headers().clone();
                let text = resp.into_body().bytes().await.map_err(|e| e.to_string())?;
                Ok::<_, String>((status, headers, String::from_utf8_lossy(&text).into_owned()))
            });
            match result {
                Ok((status, headers, text)) if status.is_success() => return Ok((headers, text)),
                Ok((status, _, text)) => {
                    let code = tag(&text, "Code").unwrap_or("");
                    let mut msg = format!("{} {code}", status.as_u16()).trim_end().to_string();
                    if status.as_u16() == 501 {
                        msg.push_str(" (this store has no S3 Object Lock: remove object_lock from the location)");
                    }
                    let kind = match status.as_u16() {
                        401 | 403 => BackendErrorKind::PermissionDenied,
                        404 => BackendErrorKind::NotFound,
                        _ => BackendErrorKind::Other,
                    };
                    // 501 NotImplemented (a store without Object Lock) is an answer, not a fault.
                    if matches!(status.as_u16(), 500 | 502 | 503 | 504) || code == "SlowDown" {
                        last = msg;
                        continue;
                    }
                    return Err(err(kind, msg));
                }
                Err(e) => last = e,
            }
        }
        Err(err(BackendErrorKind::Other, format!("{last} (after 3 retries)")))
    }
}

/// Percent-encodes a key for the URL path (everything but unreserved characters and `/`),
/// the form SigV4 canonicalizes for S3.
fn encode_path(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The text of the first `<name>…</name>` element (responses here are tiny and flat).
fn tag<'a>(xml: &'a str, name: &str) -> Option<&'a str> {
    let open = format!("<{name}>");
    let start = xml.find(&open)? + open.len();
    let end = xml[start..].find(&format!("</{name}>"))? + start;
    Some(xml[start..end].trim())
}

fn parse_bucket_lock(xml: &str) -> BucketLock {
    let days = tag(xml, "Days")
        .and_then(|d| d.parse::<u64>().ok())
        .or_else(|| tag(xml, "Years").and_then(|y| y.parse::<u64>().ok()).map(|y| y * 365));
    BucketLock {
        enabled: tag(xml, "ObjectLockEnabled") == Some("Enabled"),
        default_mode: tag(xml, "Mode").and_then(LockMode::parse),
        default_days: days,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_parse() {
        let b = parse_bucket_lock(
            "<ObjectLockConfiguration><ObjectLockEnabled>Enabled</ObjectLockEnabled><Rule><DefaultRetention><Mode>GOVERNANCE</Mode><Days>32</Days></DefaultRetention></Rule></ObjectLockConfiguration>",
        );
        assert_eq!(b.describe(), "enabled, GOVERNANCE default 32 d");
        let y = parse_bucket_lock(
            "<ObjectLockConfiguration><ObjectLockEnabled>Enabled</ObjectLockEnabled><Rule><DefaultRetention><Mode>COMPLIANCE</Mode><Years>1</Years></DefaultRetention></Rule></ObjectLockConfiguration>",
        );
        assert_eq!(y.default_days, Some(365));
        let none = parse_bucket_lock(
            "<ObjectLockConfiguration><ObjectLockEnabled>Enabled</ObjectLockEnabled></ObjectLockConfiguration>",
        );
        assert_eq!(none.describe(), "enabled, no default retention");
    }

    #[test]
    fn keys_are_encoded_for_the_path() {
        assert_eq!(encode_path("lifeboat/data/ab/x y+z"), "lifeboat/data/ab/x%20y%2Bz");
    }
}
