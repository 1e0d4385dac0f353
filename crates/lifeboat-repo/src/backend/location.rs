//! One named storage location: where it is (a folder, `file://` URL or `s3://bucket/prefix`), how
//! to reach it (region, endpoint, credentials) and its limits (bandwidth, request rate,
//! append-only). [`open_location`] turns it into a stack of backends.

use std::sync::Arc;
use std::time::Duration;

use super::object_lock::LockMode;
use super::{AppendOnly, Backend, BackendError, BackendErrorKind, ObjectStoreBackend, RateLimited, ReadAhead};

/// S3 connection settings. Anything left `None` comes from the usual `AWS_*` environment
/// variables, then from the shared AWS config files (`AWS_PROFILE`, `~/.aws/credentials`,
/// `~/.aws/config`).
#[derive(Clone, Debug, Default)]
pub struct S3Options {
    /// Region (`us-east-1` when nothing says otherwise).
    pub region: Option<String>,
    /// Custom endpoint for S3-compatible stores, e.g. `http://127.0.0.1:9000`.
    pub endpoint: Option<String>,
    /// Path-style requests (`endpoint/bucket/key`) instead of virtual-hosted
    /// (`bucket.endpoint/key`). Default: path-style with a custom endpoint, virtual-hosted on AWS.
    pub path_style: Option<bool>,
    /// Allow plain HTTP (default: only when the endpoint is `http://`).
    pub allow_http: Option<bool>,
    /// Profile in the shared AWS files (default `AWS_PROFILE`, then `default`).
    pub profile: Option<String>,
    /// Server-side encryption with this KMS key (sends the SSE-KMS headers on every write).
    pub sse_kms_key_id: Option<String>,
    /// Retries per request after timeouts, 5xx and SlowDown (default 6).
    pub max_retries: Option<usize>,
    /// Give up retrying one request after this long (default 60 s).
    pub retry_timeout: Option<Duration>,
    /// The bucket has Object Lock: send `Content-MD5` on writes, which such a bucket requires,
    /// and upload packs with one PUT.
    pub object_lock: bool,
    /// Lock every immutable object lifeboat writes with this retention (a signed
    /// `PutObjectRetention` after the write). `None`: rely on the bucket's default retention.
    pub lock_retention: Option<LockRetention>,
}

/// How long and how hard lifeboat locks each object it writes (see docs/s3.md, "Object Lock").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LockRetention {
    /// GOVERNANCE or COMPLIANCE.
    pub mode: LockMode,
    /// Retain-until = write time + this span (the longest span the retention policy keeps, plus
    /// the prune grace period, plus a day of margin).
    pub span: Duration,
}

/// A location as configured.
#[derive(Clone, Debug, Default)]
pub struct LocationOptions {
    /// Name in the config (`[locations.NAME]`); empty for a location given as a bare URL.
    pub name: String,
    /// A folder, `file:///folder`, `s3://bucket/prefix` or `memory:`.
    pub url: String,
    /// S3 settings (ignored for folders).
    pub s3: S3Options,
    /// Upload bandwidth limit in bytes per second.
    pub upload_limit: Option<u64>,
    /// Request rate limit.
    pub requests_per_second: Option<f64>,
    /// Refuse every delete (the credentials of this host are not allowed to delete).
    pub append_only: bool,
}

impl LocationOptions {
    /// A location given only by its URL or path.
    pub fn new(url: &str) -> Self {
        LocationOptions {
            url: url.into(),
            ..Default::default()
        }
    }

    /// How the location is named in messages: `NAME (URL)` or just the URL.
    pub fn display(&self) -> String {
        if self.name.is_empty() {
            self.url.clone()
        } else {
            format!("{} ({})", self.name, self.url)
        }
    }
}

/// Parses a rate such as `50MiB/s`, `10MB/s`, `800KiB/s` or a plain number of bytes per second.
pub fn parse_rate(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let t = t.strip_suffix("/s").unwrap_or(t).trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("invalid rate {s:?} (examples: 50MiB/s, 800KiB/s, 10MB/s)"))?;
    let mult: f64 = match unit.trim() {
        "" | "B" => 1.0,
        "K" | "KB" | "k" | "kB" => 1e3,
        "KiB" => 1024.0,
        "M" | "MB" => 1e6,
        "MiB" => 1024.0 * 1024.0,
        "G" | "GB" => 1e9,
        "GiB" => 1024.0 * 1024.0 * 1024.0,
        _ => return Err(format!("invalid rate {s:?}: unknown unit {unit:?}")),
    };
    let v = n * mult;
    if !(v >= 1.0 && v.is_finite()) {
        return Err(format!("invalid rate {s:?}: must be at least 1 byte per second"));
    }
    Ok(v as u64)
}

/// Opens a location with its wrappers: the store itself, then the rate limits, then the
/// append-only guard. `create` makes a missing local folder (for `init`).
pub fn open_location(opts: &LocationOptions, create: bool) -> Result<Arc<dyn Backend>, BackendError> {
    let display = opts.display();
    let url = opts.url.as_str();
    let mut b: Arc<dyn Backend> = if url == "memory:" {
        Arc::new(ObjectStoreBackend::memory())
    } else if let Some(rest) = url.strip_prefix("s3://") {
        Arc::new(ReadAhead::new(Arc::new(ObjectStoreBackend::s3(
            rest,
            display.clone(),
            &opts.s3,
        )?)))
    } else if url.contains("://") && !url.starts_with("file://") {
        return Err(BackendError::new(
            &display,
            "open",
            "",
            BackendErrorKind::Other,
            "unsupported location scheme (use a folder, file:///folder or s3://bucket/prefix)".into(),
        ));
    } else {
        let path = url.strip_prefix("file://").unwrap_or(url);
        Arc::new(ObjectStoreBackend::local(std::path::Path::new(path), create)?)
    };
    if opts.upload_limit.is_some() || opts.requests_per_second.is_some() {
        b = Arc::new(RateLimited::new(b, opts.upload_limit, opts.requests_per_second));
    }
    if opts.append_only {
        b = Arc::new(AppendOnly::new(b));
    }
    Ok(b)
}

/// Credentials and settings read from the shared AWS files for one profile.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct ProfileSettings {
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    pub session_token: Option<String>,
    pub region: Option<String>,
    pub endpoint_url: Option<String>,
}

/// Reads `[profile]` from the credentials file and `[profile NAME]` (or `[default]`) from the
/// config file. Missing files are simply empty: the environment may provide everything.
pub(crate) fn read_profile(profile: &str) -> ProfileSettings {
    let home = std::env::var_os("HOME").map(std::path::PathBuf::from);
    let creds = std::env::var_os("AWS_SHARED_CREDENTIALS_FILE")
        .map(std::path::PathBuf::from)
        .or_else(|| home.as_ref().map(|h| h.join(".aws/credentials")));
    let config = std::env::var_os("AWS_CONFIG_FILE")
        .map(std::path::PathBuf::from)
        .or_else(|| home.as_ref().map(|h| h.join(".aws/config")));
    let read = |p: Option<std::path::PathBuf>| p.and_then(|p| std::fs::read_to_string(p).ok()).unwrap_or_default();
    let mut s = ProfileSettings::default();
    let config_section = if profile == "default" {
        "default".to_string()
    } else {
        format!("profile {profile}")
    };
    for (file, section) in [(read(config), config_section), (read(creds), profile.to_string())] {
        for (k, v) in ini_section(&file, &section) {
            let slot = match k.as_str() {
                "aws_access_key_id" => &mut s.access_key_id,
                "aws_secret_access_key" => &mut s.secret_access_key,
                "aws_session_token" => &mut s.session_token,
                "region" => &mut s.region,
                "endpoint_url" => &mut s.endpoint_url,
                _ => continue,
            };
            *slot = Some(v);
        }
    }
    s
}

fn ini_section(text: &str, section: &str) -> Vec<(String, String)> {
    let mut inside = false;
    let mut out = Vec::new();
    for line in text.lines() {
        let l = line.trim();
        if l.is_empty() || l.starts_with('#') || l.starts_with(';') {
            continue;
        }
        if let Some(name) = l.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
            inside = name.trim() == section;
            continue;
        }
        if inside && let Some((k, v)) = l.split_once('=') {
            out.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse() {
        assert_eq!(parse_rate("50MiB/s").unwrap(), 50 << 20);
        assert_eq!(parse_rate("10MB/s").unwrap(), 10_000_000);
        assert_eq!(parse_rate("800 KiB/s").unwrap(), 800 * 1024);
        assert_eq!(parse_rate("1234").unwrap(), 1234);
        assert!(parse_rate("fast").is_err());
        assert!(parse_rate("5 parsecs/s").is_err());
        assert!(parse_rate("0").is_err());
    }

    #[test]
    fn ini_sections_are_separate() {
        let t = "[default]\naws_access_key_id = A\n[prod]\naws_access_key_id=B\n# c\nregion = eu-west-1\n";
        assert_eq!(
            ini_section(t, "prod"),
            vec![
                ("aws_access_key_id".to_string(), "B".to_string()),
                ("region".to_string(), "eu-west-1".to_string())
            ]
        );
        assert_eq!(ini_section(t, "default").len(), 1);
    }

    #[test]
    fn unknown_scheme_is_refused() {
        let e = match open_location(&LocationOptions::new("ftp://x/y"), false) {
            Err(e) => e,
            Ok(_) => panic!("ftp accepted"),
        };
        assert!(e.to_string().contains("unsupported location scheme"), "{e}");
    }
}
