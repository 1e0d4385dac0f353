//! `lifeboat.toml`: read as a raw, permissive shape, then validated into what commands use, so
//! every mistake is reported once, with the file and line, before any work starts.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Result;
use lifeboat_repo::backend::{LocationOptions, LockMode, LockRetention, S3Options, parse_rate};
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
    /// `[[checks]]`: kept raw (with spans) for lifeboat-health's validator.
    #[serde(default)]
    checks: lifeboat_health::RawChecks,
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
    object_lock_mode: Option<String>,
    object_lock_retain: Option<String>,
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
    wal_compression: Option<String>,
    wal_min_locations: Option<usize>,
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
    // kind = "postgres"
    url: Option<String>,
    databases: Option<RawDatabases>,
    mode: Option<String>,
    #[serde(default)]
    checks: Vec<String>,
    data_dir: Option<PathBuf>,
    // kind = "postgres", mode = "physical": how
    physical_method: Option<String>,
    // kind = "postgres", mode = "logical": restore tests
    scratch_url: Option<String>,
    // kind = "postgres", mode = "logical": how long to wait for a locked table
    lock_timeout: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawDatabases {
    All(String),
    List(Vec<String>),
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

/// Which databases a PostgreSQL source covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Databases {
    /// Every database of the server (plus roles and globals).
    All,
    /// These databases.
    List(Vec<String>),
}

/// How a PostgreSQL source is backed up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DbMode {
    /// Base backup of the data directory plus continuous WAL archiving (point-in-time restore).
    Physical,
    /// `pg_dump` of each database from one exported snapshot, with table fingerprints.
    Logical,
}

/// How a physical backup reads the cluster (`physical_method`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PhysicalMethod {
    /// `local` when `data_dir` is set and readable by this process, else `basebackup`.
    Auto,
    /// `pg_basebackup` over the replication protocol: works from any host, reads every file.
    Basebackup,
    /// Read `data_dir` between `pg_backup_start` and `pg_backup_stop` (on the database host):
    /// later backups read only the files that changed.
    Local,
}

/// A validated `kind = "postgres"` source.
#[allow(dead_code)] // fields read as the backup modes land
#[derive(Debug, Clone)]
pub struct DbSource {
    /// Name in the config (`[sources.NAME]`).
    pub name: String,
    /// `postgres://` URL; a password in it is never printed (see lifeboat_pg::ConnInfo).
    pub url: String,
    /// Databases covered.
    pub databases: Databases,
    /// Physical or logical.
    pub mode: DbMode,
    /// SQL checks a restore test runs (each must return true).
    pub checks: Vec<String>,
    /// Tags added to its snapshots.
    pub tags: Vec<String>,
    /// The server's data directory on this machine (the local physical method, and `backup
    /// --force`: a forensic copy).
    pub data_dir: Option<PathBuf>,
    /// How physical backups read the cluster.
    pub physical_method: PhysicalMethod,
    /// Server restore tests restore into (temporary databases, dropped afterwards); None: a
    /// throwaway cluster from the local server binaries.
    pub scratch_url: Option<String>,
    /// How long a logical backup waits for a table another session holds locked (an ALTER
    /// TABLE, a `LOCK … ACCESS EXCLUSIVE`) before it fails saying so: without a limit it would
    /// wait silently for as long as the lock is held.
    pub lock_timeout: std::time::Duration,
}

/// `lock_timeout` when the config sets none.
pub const DEFAULT_LOCK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(300);

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
    /// How `wal push` and `wal stream` compress WAL (their `--compression` wins).
    pub wal_compression: Option<lifeboat_pg::wal::WalCompression>,
    /// `wal push`/`wal stream` fail unless each segment is in at least this many locations
    /// (`[repository] wal_min_locations`; default 1: the first reachable one, others caught up).
    pub wal_min_locations: Option<usize>,
    /// File sources by name.
    pub sources: Vec<FileSource>,
    /// PostgreSQL sources by name.
    pub db_sources: Vec<DbSource>,
    /// Retention policy (the plan's default when absent).
    pub retention: RetentionPolicy,
    /// Health checks (`[[checks]]`), validated.
    pub checks: Vec<lifeboat_health::CheckSpec>,
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
            wal_compression: None,
            wal_min_locations: None,
            sources: Vec::new(),
            db_sources: Vec::new(),
            retention: RetentionPolicy::plan_default(),
            checks: Vec::new(),
        }
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].bytes().filter(|b| *b == b'\n').count() + 1
}

/// The line of the setting a validation message is about. Every such message starts with the
/// setting's dotted path (`sources.db: …`, `repository.wal_compression "gzip" …`,
/// `locations.nas: …`), and a message about one key of a table names it next
/// (`sources.db: lock_timeout "0s" …`): that key's line if it is written in the table, else the
/// line of the deepest part of the path that is. None when nothing of it is in the file (a
/// default), or for a message without a path.
fn line_named_by(text: &str, msg: &str) -> Option<usize> {
    use toml::de::{DeTable, DeValue};
    let head = msg.split([':', ' ']).next()?;
    let mut path: Vec<&str> = head.split('.').filter(|p| !p.is_empty()).collect();
    if let Some(rest) = msg.strip_prefix(head).and_then(|r| r.strip_prefix(": ")) {
        let word = rest.split([' ', ':', ',']).next().unwrap_or("");
        if !word.is_empty() && word.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
            path.push(word);
        }
    }
    let doc = DeTable::parse(text).ok()?;
    let mut table = doc.get_ref();
    let mut found = None;
    for key in path {
        let Some((_, v)) = table.iter().find(|(k, _)| k.get_ref().as_ref() == key) else {
            break;
        };
        found = Some(v.span().start);
        match v.get_ref() {
            DeValue::Table(t) => table = t,
            _ => break,
        }
    }
    found.map(|at| line_of(text, at))
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
    let bad = |msg: String| {
        let at = line_named_by(text, &msg)
            .map(|l| format!(" line {l}"))
            .unwrap_or_default();
        fail(USAGE, format!("config {}{at}: {msg}", path.display()))
    };
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
    let wal_compression = match repo.wal_compression.as_deref() {
        None => None,
        Some(w) => Some(lifeboat_pg::wal::WalCompression::parse(w).ok_or_else(|| {
            bad(format!(
                "repository.wal_compression {w:?} is not one of \"auto\", \"zstd\", \"lz4\""
            ))
        })?),
    };
    let mut sources = Vec::new();
    let mut db_sources = Vec::new();
    for (name, s) in raw.sources {
        match s.kind.as_str() {
            "files" => {
                if s.url.is_some()
                    || s.databases.is_some()
                    || s.mode.is_some()
                    || !s.checks.is_empty()
                    || s.data_dir.is_some()
                    || s.physical_method.is_some()
                    || s.scratch_url.is_some()
                    || s.lock_timeout.is_some()
                {
                    return Err(bad(format!(
                        "sources.{name}: url, databases, mode, checks, data_dir, physical_method, scratch_url and lock_timeout belong to kind = \"postgres\""
                    )));
                }
            }
            "postgres" => {
                db_sources.push(db_source(&name, s).map_err(bad)?);
                continue;
            }
            k => {
                return Err(bad(format!(
                    "sources.{name}: unknown kind {k:?} (expected \"files\" or \"postgres\")"
                )));
            }
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
    let checks = lifeboat_health::parse_checks(&raw.checks).map_err(|e| {
        let at = e
            .span
            .as_ref()
            .map(|s| format!(" line {}", line_of(text, s.start)))
            .unwrap_or_default();
        fail(USAGE, format!("config {}{at}: {}", path.display(), e.message))
    })?;
    for c in &checks {
        if let lifeboat_health::Probe::Backup { source: Some(s), .. } = &c.probe
            && !sources.iter().any(|f| f.name == *s)
            && !db_sources.iter().any(|d| d.name == *s)
        {
            return Err(bad(format!(
                "checks {:?}: source {s:?} is not defined in [sources]",
                c.name
            )));
        }
    }
    let retention = raw.retention.unwrap_or_else(RetentionPolicy::plan_default);
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
            locations.push(location(n, l, &retention).map_err(|m| bad(format!("locations.{n}: {m}")))?);
        }
    }
    if let Some(n) = defined.keys().next() {
        return Err(bad(format!(
            "[locations.{n}] is defined but not listed in repository.locations"
        )));
    }
    if let Some(m) = repo.wal_min_locations {
        let have = locations.len().max(1);
        if m == 0 || m > have {
            return Err(bad(format!(
                "repository.wal_min_locations = {m}, but {have} location(s) are configured (use 1..={have})"
            )));
        }
    }
    Ok(Config {
        location: repo.location,
        locations,
        password_file: repo.password_file,
        password_command: repo.password_command,
        cache_dir: repo.cache_dir,
        compression_level: repo.compression_level,
        pack_size_mib: repo.pack_size_mib,
        wal_compression,
        wal_min_locations: repo.wal_min_locations,
        sources,
        db_sources,
        retention,
        checks,
    })
}

fn db_source(name: &str, s: RawSource) -> std::result::Result<DbSource, String> {
    if !s.paths.is_empty() || !s.include.is_empty() || !s.exclude.is_empty() {
        return Err(format!(
            "sources.{name}: paths, include and exclude belong to kind = \"files\""
        ));
    }
    let url = s
        .url
        .ok_or_else(|| format!("sources.{name}: kind = \"postgres\" needs url = \"postgres://…\""))?;
    // Validates the URL shape now, so a typo is reported before any work starts.
    lifeboat_pg::ConnInfo::parse(&url).map_err(|e| format!("sources.{name}: {e}"))?;
    let mode = match s.mode.as_deref() {
        Some("physical") => DbMode::Physical,
        Some("logical") | None => DbMode::Logical,
        Some(m) => {
            return Err(format!(
                "sources.{name}: mode {m:?} (expected \"physical\" or \"logical\")"
            ));
        }
    };
    let physical_method = match s.physical_method.as_deref() {
        None | Some("auto") => PhysicalMethod::Auto,
        Some("basebackup") => PhysicalMethod::Basebackup,
        Some("local") => PhysicalMethod::Local,
        Some(m) => {
            return Err(format!(
                "sources.{name}: physical_method {m:?} (expected \"auto\", \"basebackup\" or \"local\")"
            ));
        }
    };
    if physical_method == PhysicalMethod::Local && s.data_dir.is_none() {
        return Err(format!(
            "sources.{name}: physical_method = \"local\" reads the server's data directory: set data_dir"
        ));
    }
    let databases = match s.databases {
        None => Databases::All,
        Some(RawDatabases::All(a)) if a == "all" => Databases::All,
        Some(RawDatabases::All(a)) => {
            return Err(format!(
                "sources.{name}: databases = {a:?} (expected \"all\" or a list of names)"
            ));
        }
        Some(RawDatabases::List(l)) if l.is_empty() => {
            return Err(format!("sources.{name}: databases is an empty list"));
        }
        Some(RawDatabases::List(l)) => Databases::List(l),
    };
    let lock_timeout = match s.lock_timeout.as_deref() {
        None => DEFAULT_LOCK_TIMEOUT,
        Some(t) => t
            .parse::<jiff::SignedDuration>()
            .ok()
            .filter(|d| !d.is_negative())
            .map(|d| d.unsigned_abs())
            .filter(|d| (std::time::Duration::from_secs(1)..=std::time::Duration::from_secs(86_400)).contains(d))
            .ok_or_else(|| {
                format!("sources.{name}: lock_timeout {t:?} is not a duration from 1s to 24h (e.g. 5m, 30s)")
            })?,
    };
    Ok(DbSource {
        lock_timeout,
        name: name.into(),
        url,
        databases,
        mode,
        checks: s.checks,
        tags: s.tags,
        data_dir: s.data_dir,
        physical_method,
        scratch_url: match s.scratch_url {
            Some(u) => {
                lifeboat_pg::ConnInfo::parse(&u).map_err(|e| format!("sources.{name}: scratch_url: {e}"))?;
                Some(u)
            }
            None => None,
        },
    })
}

/// Prune's default grace period, part of the Object Lock span.
const DEFAULT_GRACE: std::time::Duration = std::time::Duration::from_secs(24 * 3600);
/// Margin added to the Object Lock span (clock skew, a prune that runs late).
const LOCK_MARGIN: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// The Object Lock settings of a location: `None` when it relies on the bucket's default
/// retention (or has no Object Lock). Span = the retention policy's longest time span (or
/// `object_lock_retain`) + the default prune grace (24 h) + a day of margin.
/// What the retention policy needs an object locked for: its longest time span + the default
/// prune grace (24 h) + a day of margin; `None` when no rule has a time bound.
pub fn lock_span(policy: &RetentionPolicy) -> Option<std::time::Duration> {
    policy.longest_time_span().map(|s| s + DEFAULT_GRACE + LOCK_MARGIN)
}

fn lock_retention(l: &RawLocation, policy: &RetentionPolicy) -> std::result::Result<Option<LockRetention>, String> {
    let mode = match l.object_lock_mode.as_deref() {
        None | Some("governance") => LockMode::Governance,
        Some("compliance") => LockMode::Compliance,
        Some("bucket-default") => return Ok(None),
        Some(m) => {
            return Err(format!(
                "object_lock_mode {m:?} (expected \"governance\", \"compliance\" or \"bucket-default\")"
            ));
        }
    };
    if !l.object_lock {
        if l.object_lock_mode.is_some() || l.object_lock_retain.is_some() {
            return Err("object_lock_mode and object_lock_retain need object_lock = true".into());
        }
        return Ok(None);
    }
    if !l.url.trim().starts_with("s3://") {
        return Err("object_lock = true needs an s3:// location".into());
    }
    let base = match l.object_lock_retain.as_deref() {
        Some(t) => t
            .parse::<lifeboat_repo::retention::KeepDuration>()
            .ok()
            .and_then(|k| {
                RetentionPolicy {
                    keep_within: Some(k),
                    ..RetentionPolicy::default()
                }
                .longest_time_span()
            })
            .ok_or_else(|| format!("object_lock_retain {t:?} is not a span (e.g. 90d, 6m, 1y)"))?,
        None => policy.longest_time_span().ok_or(
            "the retention policy has no time-based rule (only keep_last/keep_tags): set object_lock_retain = \"90d\" (how long to lock each object)",
        )?,
    };
    Ok(Some(LockRetention {
        mode,
        span: base + DEFAULT_GRACE + LOCK_MARGIN,
    }))
}

fn location(name: &str, l: RawLocation, policy: &RetentionPolicy) -> std::result::Result<LocationOptions, String> {
    let lock_retention = lock_retention(&l, policy)?;
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
            lock_retention,
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
    fn wal_compression_is_checked() {
        use lifeboat_pg::wal::WalCompression;
        let c = parse("[repository]\nwal_compression = \"lz4\"\n", Path::new("x.toml")).unwrap();
        assert_eq!(c.wal_compression, Some(WalCompression::Lz4));
        assert_eq!(parse("", Path::new("x.toml")).unwrap().wal_compression, None);
        let e = parse("[repository]\nwal_compression = \"lzma\"\n", Path::new("x.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("wal_compression \"lzma\" is not one of"), "{e}");
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

    /// Values that parse but make no sense are reported at their line too.
    #[test]
    fn validation_errors_name_the_line() {
        let line = |t: &str| parse(t, Path::new("x.toml")).unwrap_err().to_string();
        let e = line("[repository]\ncompression_level = 3\n\nwal_compression = \"gzip\"\n");
        assert!(
            e.starts_with("config x.toml line 4: repository.wal_compression \"gzip\""),
            "{e}"
        );
        let e = line("[sources.db]\nkind = \"postgres\"\nurl = \"postgres://db/app\"\n\nlock_timeout = \"0s\"\n");
        assert!(e.starts_with("config x.toml line 5: sources.db: lock_timeout"), "{e}");
        // A key that is missing: the line of its table.
        let e = line("[repository]\n\n[sources.web]\nkind = \"files\"\n");
        assert!(e.contains("x.toml line 3") || e.contains("x.toml line 4"), "{e}");
        assert!(e.contains("sources.web: no paths"), "{e}");
        // Nothing of the path in the file: no line, still one message.
        assert_eq!(line_named_by("", "repository.locations is empty"), None);
        assert_eq!(line_named_by("a = 1\n", "no path here"), None);
    }

    #[test]
    fn check_errors_name_file_and_line() {
        let e = parse(
            "[[checks]]\nname = \"a\"\nkind = \"memory\"\n\n[[checks]]\nname = \"b\"\nkind = \"http\"\nurl = \"nope\"\n",
            Path::new("x.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("config x.toml line 8: checks[1] \"b\": url: malformed URL"),
            "{e}"
        );
        let e = parse(
            "[[checks]]\nname = \"b\"\nkind = \"backup\"\nsource = \"nope\"\n",
            Path::new("x.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("source \"nope\" is not defined"), "{e}");
    }

    #[test]
    fn postgres_sources() {
        let c = parse(
            "[sources.db]\nkind = \"postgres\"\nurl = \"postgres://backup:pw@db:5432/app\"\ndatabases = [\"app\"]\nmode = \"physical\"\nchecks = [\"SELECT true\"]\n[sources.all]\nkind = \"postgres\"\nurl = \"postgres://db/x\"\ndatabases = \"all\"\n",
            Path::new("x.toml"),
        )
        .unwrap();
        let all = &c.db_sources[0];
        assert_eq!(
            (all.name.as_str(), &all.databases, all.mode),
            ("all", &Databases::All, DbMode::Logical)
        );
        let db = &c.db_sources[1];
        assert_eq!(db.mode, DbMode::Physical);
        assert_eq!(db.databases, Databases::List(vec!["app".into()]));
        for bad in [
            "[sources.db]\nkind = \"postgres\"\n",
            "[sources.db]\nkind = \"postgres\"\nurl = \"mysql://x\"\n",
            "[sources.db]\nkind = \"postgres\"\nurl = \"postgres://x\"\nmode = \"both\"\n",
            "[sources.db]\nkind = \"postgres\"\nurl = \"postgres://x\"\npaths = [\"/a\"]\n",
            "[sources.f]\npaths = [\"/a\"]\nurl = \"postgres://x\"\n",
        ] {
            let e = parse(bad, Path::new("x.toml")).unwrap_err().to_string();
            assert!(e.contains("sources."), "{bad}: {e}");
        }
    }

    #[test]
    fn object_lock_span_follows_the_policy() {
        let loc = "[repository]\nlocations = [\"a\"]\n[locations.a]\nurl = \"s3://bkt/pre\"\nobject_lock = true\n";
        let c = parse(loc, Path::new("x.toml")).unwrap();
        let r = c.locations[0].s3.lock_retention.unwrap();
        assert_eq!(r.mode, LockMode::Governance);
        assert_eq!(r.span.as_secs(), 32 * 86_400, "30 d policy + 24 h grace + 1 d margin");
        let t = format!("{loc}object_lock_mode = \"compliance\"\n[retention]\nkeep_monthly = 3\n");
        let r = parse(&t, Path::new("x.toml")).unwrap().locations[0]
            .s3
            .lock_retention
            .unwrap();
        assert_eq!((r.mode, r.span.as_secs()), (LockMode::Compliance, (93 + 2) * 86_400));
        let t = format!("{loc}object_lock_mode = \"bucket-default\"\n");
        assert!(
            parse(&t, Path::new("x.toml")).unwrap().locations[0]
                .s3
                .lock_retention
                .is_none()
        );
        for (bad, needle) in [
            (format!("{loc}object_lock_mode = \"strict\"\n"), "object_lock_mode"),
            (format!("{loc}[retention]\nkeep_last = 3\n"), "object_lock_retain"),
            (
                "[repository]\nlocations = [\"a\"]\n[locations.a]\nurl = \"/x\"\nobject_lock = true\n".into(),
                "s3://",
            ),
        ] {
            let e = parse(&bad, Path::new("x.toml")).unwrap_err().to_string();
            assert!(e.contains(needle), "{e}");
        }
        let t = format!("{loc}object_lock_retain = \"90d\"\n[retention]\nkeep_last = 3\n");
        let r = parse(&t, Path::new("x.toml")).unwrap().locations[0]
            .s3
            .lock_retention
            .unwrap();
        assert_eq!(r.span.as_secs(), 92 * 86_400);
    }

    #[test]
    fn wal_min_locations_must_fit_the_locations() {
        let two = "[locations.a]\nurl = \"/a\"\n[locations.b]\nurl = \"/b\"\n";
        let t = format!("[repository]\nlocations = [\"a\", \"b\"]\nwal_min_locations = 2\n{two}");
        assert_eq!(parse(&t, Path::new("x.toml")).unwrap().wal_min_locations, Some(2));
        for bad in ["0", "3"] {
            let t = format!("[repository]\nlocations = [\"a\", \"b\"]\nwal_min_locations = {bad}\n{two}");
            let e = parse(&t, Path::new("x.toml")).unwrap_err().to_string();
            assert!(e.contains("wal_min_locations") && e.contains("1..=2"), "{e}");
        }
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
