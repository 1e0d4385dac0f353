//! `lifeboat.toml`: read as a raw, permissive shape, then validated into what commands use, so
//! every mistake is reported once, with the file and line, before any work starts.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Result;
use lifeboat_repo::backend::{LocationOptions, S3Options, parse_rate};
use lifeboat_repo::retention::RetentionPolicy;
use serde::Deserialize;

use crate::exit::{USAGE, fail};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    repository: Option<RawRepository>,
    #[serde(default)]
    sources: BTreeMap<String, RawSource>,
    retention: Option<RetentionPolicy>,
    #[serde(default)]
    locations: BTreeMap<String, RawLocation>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLocation {
    url: String,
    region: Option<String>,
    endpoint: Option<String>,
    path_style: Option<bool>,
    allow_http: Option<bool>,
    profile: Option<String>,
    sse_kms_key_id: Option<String>,
    upload_limit: Option<String>,
    requests_per_second: Option<f64>,
    #[serde(default)]
    append_only: bool,
    max_retries: Option<usize>,
    retry_timeout: Option<String>,
    #[serde(default)]
    object_lock: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRepository {
    location: Option<String>,
    locations: Option<Vec<String>>,
    password_file: Option<PathBuf>,
    password_command: Option<String>,
    cache_dir: Option<PathBuf>,
    compression_level: Option<i32>,
    pack_size_mib: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSource {
    #[serde(default = "files_kind")]
    kind: String,
    #[serde(default)]
    paths: Vec<String>,
    #[serde(default)]
    include: Vec<String>,
    #[serde(default)]
    exclude: Vec<String>,
    #[serde(default)]
    tags: Vec<String>,
}

fn files_kind() -> String {
    "files".into()
}

/// A validated file source.
#[derive(Debug, Clone)]
pub struct FileSource {
    /// Name in the config (`[sources.NAME]`).
    pub name: String,
    /// Absolute paths.
    pub paths: Vec<PathBuf>,
    /// Include globs.
    pub include: Vec<String>,
    /// Exclude globs.
    pub exclude: Vec<String>,
    /// Tags added to its snapshots.
    pub tags: Vec<String>,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Repository location (the single-location form).
    pub location: Option<String>,
    /// Named locations in order of preference (`[repository] locations` with a
    /// `[locations.NAME]` table each); empty in the single-location form.
    pub locations: Vec<LocationOptions>,
    /// Passphrase file.
    pub password_file: Option<PathBuf>,
    /// Passphrase command.
    pub password_command: Option<String>,
    /// Local cache folder.
    pub cache_dir: Option<PathBuf>,
    /// zstd level for `init`.
    pub compression_level: Option<i32>,
    /// Pack size for `init`.
    pub pack_size_mib: Option<u64>,
    /// File sources by name.
    pub sources: Vec<FileSource>,
    /// Retention policy (the plan's default when absent).
    pub retention: RetentionPolicy,
}

impl Default for Config {
    /// No config file: no repository, no sources, the plan's retention policy.
    fn default() -> Self {
        Config {
            location: None,
            locations: Vec::new(),
            password_file: None,
            password_command: None,
            cache_dir: None,
            compression_level: None,
            pack_size_mib: None,
            sources: Vec::new(),
            retention: RetentionPolicy::plan_default(),
        }
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].bytes().filter(|b| *b == b'\n').count() + 1
}

/// Loads and validates a config file.
pub fn load(path: &Path) -> Result<Config> {
    let text = std::fs::read_to_string(path).map_err(|e| fail(USAGE, format!("config {}: {e}", path.display())))?;
    parse(&text, path)
}

/// Parses and validates config text (`path` is used in messages).
pub fn parse(text: &str, path: &Path) -> Result<Config> {
    let raw: RawConfig = toml::from_str(text).map_err(|e| {
        let at = e
            .span()
            .map(|s| format!(" line {}", line_of(text, s.start)))
            .unwrap_or_default();
        fail(
            USAGE,
            format!(
                "config {}{at}: {}",
                path.display(),
                e.message().trim().replace('\n', " ")
            ),
        )
    })?;
    let bad = |msg: String| fail(USAGE, format!("config {}: {msg}", path.display()));
    let repo = raw.repository.unwrap_or_default();
    if let Some(l) = repo.compression_level
        && !(-7..=22).contains(&l)
    {
        return Err(bad(format!("repository.compression_level {l} is outside -7..=22")));
    }
    if let Some(p) = repo.pack_size_mib
        && !(4..=128).contains(&p)
    {
        return Err(bad(format!("repository.pack_size_mib {p} is outside 4..=128")));
    }
    let mut sources = Vec::new();
    for (name, s) in raw.sources {
        match s.kind.as_str() {
            "files" => {}
            "postgres" => {
                return Err(bad(format!(
                    "sources.{name}: kind \"postgres\" is not supported by this version yet"
                )));
            }
            k => return Err(bad(format!("sources.{name}: unknown kind {k:?} (expected \"files\")"))),
        }
        if s.paths.is_empty() {
            return Err(bad(format!("sources.{name}: no paths")));
        }
        let mut paths = Vec::new();
        for p in &s.paths {
            let pb = PathBuf::from(p);
            if !pb.is_absolute() {
                return Err(bad(format!("sources.{name}: path {p:?} is not absolute")));
            }
            paths.push(pb);
        }
        for g in s.include.iter().chain(&s.exclude) {
            globset::Glob::new(g).map_err(|e| bad(format!("sources.{name}: bad pattern {g:?}: {e}")))?;
        }
        sources.push(FileSource {
            name,
            paths,
            include: s.include,
            exclude: s.exclude,
            tags: s.tags,
        });
    }
    let mut locations = Vec::new();
    let mut defined = raw.locations;
    if let Some(names) = &repo.locations {
        if repo.location.is_some() {
            return Err(bad("repository: give either `location` or `locations`, not both".into()));
        }
        if names.is_empty() {
            return Err(bad("repository.locations is empty".into()));
        }
        for n in names {
            if locations.iter().any(|l: &LocationOptions| &l.name == n) {
                return Err(bad(format!("repository.locations names {n:?} twice")));
            }
            let Some(l) = defined.remove(n) else {
                return Err(bad(format!(
                    "repository.locations names {n:?} but there is no [locations.{n}] table"
                )));
            };
            locations.push(location(n, l).map_err(|m| bad(format!("locations.{n}: {m}")))?);
        }
    }
    if let Some(n) = defined.keys().next() {
        return Err(bad(format!(
            "[locations.{n}] is defined but not listed in repository.locations"
        )));
    }
    Ok(Config {
        location: repo.location,
        locations,
        password_file: repo.password_file,
        password_command: repo.password_command,
        cache_dir: repo.cache_dir,
        compression_level: repo.compression_level,
        pack_size_mib: repo.pack_size_mib,
        sources,
        retention: raw.retention.unwrap_or_else(RetentionPolicy::plan_default),
    })
}

fn location(name: &str, l: RawLocation) -> std::result::Result<LocationOptions, String> {
    let url = l.url.trim().to_string();
    if url.is_empty() {
        return Err("url is empty".into());
    }
    if url.contains("://") && !(url.starts_with("s3://") || url.starts_with("file://")) {
        return Err(format!(
            "url {url:?}: use s3://bucket/prefix, file:///folder or a folder"
        ));
    }
    if !url.contains("://") && !Path::new(&url).is_absolute() {
        return Err(format!("url {url:?} is not an absolute folder"));
    }
    if let Some(r) = l.requests_per_second
        && !(r > 0.0 && r.is_finite())
    {
        return Err(format!("requests_per_second {r} must be positive"));
    }
    let retry_timeout = l
        .retry_timeout
        .as_deref()
        .map(|t| {
            t.parse::<jiff::SignedDuration>()
                .ok()
                .filter(|d| !d.is_negative())
                .map(|d| d.unsigned_abs())
                .ok_or_else(|| format!("retry_timeout {t:?} is not a duration (e.g. 60s, 2m)"))
        })
        .transpose()?;
    Ok(LocationOptions {
        name: name.into(),
        url,
        s3: S3Options {
            region: l.region,
            endpoint: l.endpoint,
            path_style: l.path_style,
            allow_http: l.allow_http,
            profile: l.profile,
            sse_kms_key_id: l.sse_kms_key_id,
            max_retries: l.max_retries,
            retry_timeout,
            object_lock: l.object_lock,
        },
        upload_limit: l.upload_limit.as_deref().map(parse_rate).transpose()?,
        requests_per_second: l.requests_per_second,
        append_only: l.append_only,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_example_parses() {
        let c = parse(include_str!("../../../examples/lifeboat.toml"), Path::new("x.toml")).unwrap();
        assert!(!c.sources.is_empty());
        assert!(!c.retention.is_empty());
    }

    #[test]
    fn errors_name_file_and_line() {
        let e = parse("[repository]\nlocaton = \"x\"\n", Path::new("x.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("x.toml line 2"), "{e}");
        assert!(!e.contains('\n'));
        let e = parse("[sources.a]\npaths = [\"rel\"]\n", Path::new("x.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("not absolute"), "{e}");
        let e = parse("[sources.a]\nkind = \"ftp\"\npaths = [\"/a\"]\n", Path::new("x.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown kind"), "{e}");
    }

    #[test]
    fn locations_parse_in_order() {
        let t = "[repository]\nlocations = [\"b\", \"a\"]\n[locations.a]\nurl = \"/mnt/nas\"\nappend_only = true\n[locations.b]\nurl = \"s3://bkt/pre\"\nregion = \"us-west-2\"\nupload_limit = \"50MiB/s\"\nrequests_per_second = 100\nretry_timeout = \"30s\"\n";
        let c = parse(t, Path::new("x.toml")).unwrap();
        let names: Vec<&str> = c.locations.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names, ["b", "a"]);
        assert_eq!(c.locations[0].upload_limit, Some(50 << 20));
        assert_eq!(c.locations[0].s3.region.as_deref(), Some("us-west-2"));
        assert!(c.locations[1].append_only);
    }

    #[test]
    fn location_mistakes_are_reported() {
        for (t, needle) in [
            ("[repository]\nlocations = [\"a\"]\n", "no [locations.a] table"),
            (
                "[repository]\nlocations = [\"a\"]\n[locations.a]\nurl = \"ftp://x\"\n",
                "s3://bucket",
            ),
            ("[locations.a]\nurl = \"/x\"\n", "not listed"),
            (
                "[repository]\nlocations = [\"a\"]\n[locations.a]\nurl = \"/x\"\nupload_limit = \"fast\"\n",
                "invalid rate",
            ),
            (
                "[repository]\nlocation = \"/r\"\nlocations = [\"a\"]\n[locations.a]\nurl = \"/x\"\n",
                "not both",
            ),
        ] {
            let e = parse(t, Path::new("x.toml")).unwrap_err().to_string();
            assert!(e.contains(needle), "{t}: {e}");
        }
    }

    #[test]
    fn default_retention_is_the_plan() {
        let c = parse("", Path::new("x.toml")).unwrap();
        assert_eq!(c.retention, RetentionPolicy::plan_default());
    }
}
