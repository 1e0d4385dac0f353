//! The `[[checks]]` tables of `lifeboat.toml`, validated into [`CheckSpec`]s.
//!
//! The binary owns the file; it hands the raw tables here, with their byte spans, so that every
//! mistake comes back as one [`ConfigError`] naming the check and, through the span, the line.
//! Keys are checked per kind: a `url` on a `disk` check is an error, not silently ignored.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::ops::Range;
use std::path::PathBuf;
use std::time::Duration;

use toml::{Spanned, Value};

use crate::level::Level;
use crate::units::{parse_duration, parse_ratio};

/// One raw `[[checks]]` table, keys and values with their spans in the config text.
pub type RawCheck = Spanned<BTreeMap<Spanned<String>, Spanned<Value>>>;
/// The whole `[[checks]]` array.
pub type RawChecks = Vec<RawCheck>;

/// A mistake in the checks configuration: what is wrong, and where (`span` is a byte range of
/// the config text, for the caller to turn into a line number).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct ConfigError {
    /// Byte range in the config text, when known.
    pub span: Option<Range<usize>>,
    /// One line: which check, which key, what is wrong.
    pub message: String,
}

/// Default timeout of one check when the config gives none.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// The plan's response-time degradation limit (> 5 s is urgent).
pub const PLAN_CRITICAL_LATENCY: Duration = Duration::from_secs(5);
/// The plan's TLS warning window (< 7 days is high).
pub const PLAN_WARN_EXPIRY: Duration = Duration::from_secs(7 * 86400);
/// The plan's recovery point objective (1 hour).
pub const PLAN_RPO: Duration = Duration::from_secs(3600);

/// A validated check.
#[derive(Debug, Clone)]
pub struct CheckSpec {
    /// Unique name.
    pub name: String,
    /// What to probe and how.
    pub probe: Probe,
    /// Time allowed for this check (the global timeout may cut it shorter).
    pub timeout: Duration,
    /// Checks whose failure explains this one's: if one of them is down, this check's own failure
    /// is reported as suppressed and raises no alert (no cascade of alerts from one outage).
    pub depends_on: Vec<String>,
    /// Level of each failure class (the plan's defaults, overridden by `levels = {…}`).
    pub levels: BTreeMap<&'static str, Level>,
    /// Above this latency the check fails with class `degraded` (high by default).
    pub warn_latency: Option<Duration>,
    /// Above this latency the check fails with class `slow` (urgent by default).
    pub critical_latency: Option<Duration>,
}

impl CheckSpec {
    /// The kind name, as in the config.
    pub fn kind(&self) -> &'static str {
        self.probe.kind()
    }

    /// Level for a failure class of this check.
    pub fn level_of(&self, class: &str) -> Level {
        self.levels.get(class).copied().unwrap_or(Level::Critical)
    }

    /// What the check looks at, safe to print: URLs lose their password and query string.
    pub fn target(&self) -> String {
        match &self.probe {
            Probe::Http(h) => redact_url(&h.url),
            Probe::Tcp { address } => address.clone(),
            Probe::Dns { name, .. } => name.clone(),
            Probe::Postgres(p) => p.display.clone(),
            Probe::Tls(t) => t.address.clone(),
            Probe::Disk { path, .. } => path.display().to_string(),
            Probe::Memory { .. } => "/proc/meminfo".into(),
            Probe::ErrorRate { prometheus, .. } => redact_url(prometheus),
            Probe::CheckFailures { of_check, window, .. } => {
                format!("failures of {of_check} over {}", crate::units::format_duration(*window))
            }
            Probe::Backup { source, .. } => source.clone().unwrap_or_else(|| "any source".into()),
            Probe::WalLocations { .. } => "archived WAL in every location".into(),
            Probe::Command { argv } => argv.first().cloned().unwrap_or_default(),
        }
    }
}

/// What a check probes.
#[derive(Debug, Clone)]
pub enum Probe {
    /// An HTTP(S) request.
    Http(HttpProbe),
    /// A TCP connection.
    Tcp {
        /// `host:port`.
        address: String,
    },
    /// A name resolution.
    Dns {
        /// Host name to resolve.
        name: String,
        /// If not empty, every one of these addresses must be among the answers.
        expect: Vec<IpAddr>,
    },
    /// A PostgreSQL connection and query.
    Postgres(PostgresProbe),
    /// A TLS handshake and the certificate chain.
    Tls(TlsProbe),
    /// Free space of a filesystem.
    Disk {
        /// Any path on the filesystem.
        path: PathBuf,
        /// Fails below this free share.
        min_free: f64,
    },
    /// Used share of memory (`MemAvailable` of /proc/meminfo).
    Memory {
        /// Fails above this used share.
        max_used: f64,
    },
    /// An error ratio from a Prometheus instant query.
    ErrorRate {
        /// Base URL of the Prometheus server.
        prometheus: reqwest::Url,
        /// PromQL that yields a ratio 0..1 (the largest sample counts).
        query: String,
        /// Fails above this ratio.
        max_rate: f64,
    },
    /// The share of failed runs of another check within a window: meaningful with `--watch`,
    /// which keeps the history (a single run sees one sample: the other check's current result).
    CheckFailures {
        /// The check whose failures are counted.
        of_check: String,
        /// How far back runs count.
        window: Duration,
        /// Fails above this ratio.
        max_rate: f64,
    },
    /// Age of the newest snapshot.
    Backup {
        /// Source name in the config (`[sources.NAME]`); none: any snapshot.
        source: Option<String>,
        /// Fails when the newest snapshot is older.
        rpo: Duration,
    },
    /// Archived WAL in every storage location: how long a location has been missing segments
    /// the first reachable location holds.
    WalLocations {
        /// Fails (class `lagging`, high) when a location misses WAL for longer, or is unreachable.
        warn_lag: Duration,
        /// Fails (class `lag_critical`, critical) when a location misses WAL for longer.
        max_lag: Duration,
    },
    /// A program's exit status.
    Command {
        /// Program and arguments (a string in the config runs through `/bin/sh -c`).
        argv: Vec<String>,
    },
}

impl Probe {
    /// The kind name, as in the config.
    pub fn kind(&self) -> &'static str {
        match self {
            Probe::Http(_) => "http",
            Probe::Tcp { .. } => "tcp",
            Probe::Dns { .. } => "dns",
            Probe::Postgres(_) => "postgres",
            Probe::Tls(_) => "tls",
            Probe::Disk { .. } => "disk",
            Probe::Memory { .. } => "memory",
            Probe::ErrorRate { .. } | Probe::CheckFailures { .. } => "error_rate",
            Probe::Backup { .. } => "backup",
            Probe::WalLocations { .. } => "wal_locations",
            Probe::Command { .. } => "command",
        }
    }
}

/// An HTTP check.
#[derive(Debug, Clone)]
pub struct HttpProbe {
    /// Full URL.
    pub url: reqwest::Url,
    /// Method (GET by default).
    pub method: reqwest::Method,
    /// Extra request headers.
    pub headers: Vec<(String, String)>,
    /// Accepted status codes; empty: any 2xx.
    pub expect_status: Vec<u16>,
    /// The body must contain this text.
    pub body_contains: Option<String>,
    /// Verify the server certificate (on by default).
    pub tls_verify: bool,
    /// Extra trusted CA certificates (PEM), besides the system's: for a private CA.
    pub ca_file: Option<PathBuf>,
}

/// A PostgreSQL check.
#[derive(Debug, Clone)]
pub struct PostgresProbe {
    /// Connection settings (password from the URL, PGPASSWORD or the pgpass file).
    pub config: tokio_postgres::Config,
    /// The URL without its password, for output.
    pub display: String,
    /// Query to run (`SELECT 1` by default).
    pub query: String,
    /// Fail (class `archiver`) when WAL archiving's last attempt failed.
    pub check_archiver: bool,
    /// Fail (class `replication_lag`) when a replica lags more than this.
    pub max_replication_lag: Option<Duration>,
    /// Verify the server certificate (chain and host name) against the system's CAs and this
    /// file; without it TLS is used unverified when the server offers it (`sslmode=prefer`,
    /// `require`), as libpq does.
    pub ca_file: Option<PathBuf>,
}

/// A TLS check.
#[derive(Debug, Clone)]
pub struct TlsProbe {
    /// `host:port`.
    pub address: String,
    /// Name the certificate must be valid for (the host of `address` by default).
    pub server_name: String,
    /// Fail (class `expiring`, high) when any certificate of the chain expires sooner.
    pub warn_expiry: Duration,
    /// Extra trusted CA certificates (PEM), besides the system's.
    pub ca_file: Option<PathBuf>,
}

/// Failure classes of each kind and the plan's level for each.
pub fn default_levels(kind: &str) -> &'static [(&'static str, Level)] {
    use Level::*;
    match kind {
        "http" | "tcp" | "dns" => &[("down", Critical), ("slow", Urgent), ("degraded", High)],
        "postgres" => &[
            ("down", Critical),
            ("slow", Urgent),
            ("degraded", High),
            ("archiver", High),
            ("replication_lag", High),
        ],
        "tls" => &[
            ("down", Critical),
            ("expired", Critical),
            ("invalid", Critical),
            ("expiring", High),
        ],
        "disk" => &[("down", Urgent), ("low_space", Urgent)],
        "memory" => &[("down", Urgent), ("high_usage", Urgent)],
        "error_rate" => &[("down", High), ("errors", Urgent)],
        "backup" => &[("down", High), ("stale", High), ("failed", High)],
        "wal_locations" => &[("down", High), ("lagging", High), ("lag_critical", Critical)],
        "command" => &[("down", Critical)],
        _ => &[],
    }
}

const KINDS: &str = "http, tcp, dns, postgres, tls, disk, memory, error_rate, backup, wal_locations, command";
const COMMON_KEYS: &[&str] = &["name", "kind", "timeout", "depends_on", "levels"];
const LATENCY_KEYS: &[&str] = &["warn_latency", "critical_latency"];

fn kind_keys(kind: &str) -> &'static [&'static str] {
    match kind {
        "http" => &[
            "url",
            "method",
            "headers",
            "expect_status",
            "body_contains",
            "tls_verify",
        ],
        "tcp" => &["address"],
        "dns" => &["name_to_resolve", "expect"],
        "postgres" => &["url", "query", "check_archiver", "max_replication_lag", "ca_file"],
        "tls" => &["address", "server_name", "warn_expiry", "ca_file"],
        "disk" => &["path", "min_free"],
        "memory" => &["max_used"],
        "error_rate" => &["prometheus", "query", "max_rate", "of_check", "window"],
        "backup" => &["source", "rpo"],
        "wal_locations" => &["warn_lag", "max_lag"],
        "command" => &["command"],
        _ => &[],
    }
}

fn has_latency(kind: &str) -> bool {
    matches!(kind, "http" | "tcp" | "dns" | "postgres")
}

/// Reads one table, key by key, so leftovers can be reported as unknown.
struct Fields<'a> {
    label: String,
    span: Range<usize>,
    map: BTreeMap<&'a str, &'a Spanned<Value>>,
}

impl<'a> Fields<'a> {
    fn err(&self, span: Option<Range<usize>>, msg: impl std::fmt::Display) -> ConfigError {
        ConfigError {
            span: span.or_else(|| Some(self.span.clone())),
            message: format!("{}: {msg}", self.label),
        }
    }

    fn take(&mut self, key: &str) -> Option<&'a Spanned<Value>> {
        self.map.remove(key)
    }

    fn string(&mut self, key: &str) -> Result<Option<(String, Range<usize>)>, ConfigError> {
        match self.take(key) {
            None => Ok(None),
            Some(v) => match v.get_ref() {
                Value::String(s) => Ok(Some((s.clone(), v.span()))),
                other => Err(self.err(
                    Some(v.span()),
                    format!("{key} must be a string, not {}", other.type_str()),
                )),
            },
        }
    }

    fn required(&mut self, key: &str) -> Result<(String, Range<usize>), ConfigError> {
        self.string(key)?
            .ok_or_else(|| self.err(None, format!("missing required key {key:?}")))
    }

    fn boolean(&mut self, key: &str) -> Result<Option<bool>, ConfigError> {
        match self.take(key) {
            None => Ok(None),
            Some(v) => v
                .get_ref()
                .as_bool()
                .map(Some)
                .ok_or_else(|| self.err(Some(v.span()), format!("{key} must be true or false"))),
        }
    }

    fn duration(&mut self, key: &str) -> Result<Option<Duration>, ConfigError> {
        match self.string(key)? {
            None => Ok(None),
            Some((s, span)) => parse_duration(&s)
                .map(Some)
                .map_err(|e| self.err(Some(span), format!("{key}: {e}"))),
        }
    }

    fn ratio(&mut self, key: &str) -> Result<Option<f64>, ConfigError> {
        match self.take(key) {
            None => Ok(None),
            Some(v) => {
                let parsed = match v.get_ref() {
                    Value::String(s) => parse_ratio(s),
                    Value::Float(f) => parse_ratio(&f.to_string()),
                    Value::Integer(i) => parse_ratio(&i.to_string()),
                    other => Err(format!("must be a share like \"5%\", not {}", other.type_str())),
                };
                parsed
                    .map(Some)
                    .map_err(|e| self.err(Some(v.span()), format!("{key}: {e}")))
            }
        }
    }

    fn strings(&mut self, key: &str) -> Result<Vec<(String, Range<usize>)>, ConfigError> {
        let Some(v) = self.take(key) else { return Ok(Vec::new()) };
        let Value::Array(items) = v.get_ref() else {
            return Err(self.err(Some(v.span()), format!("{key} must be a list of strings")));
        };
        items
            .iter()
            .map(|i| match i {
                Value::String(s) => Ok((s.clone(), v.span())),
                _ => Err(self.err(Some(v.span()), format!("{key} must be a list of strings"))),
            })
            .collect()
    }

    fn finish(self, kind: &str) -> Result<(), ConfigError> {
        if let Some((k, v)) = self.map.iter().next() {
            let mut allowed: Vec<&str> = COMMON_KEYS.to_vec();
            allowed.extend(kind_keys(kind));
            if has_latency(kind) {
                allowed.extend(LATENCY_KEYS);
            }
            return Err(self.err(
                Some(v.span()),
                format!(
                    "unknown key {k:?} for kind {kind:?} (expected one of: {})",
                    allowed.join(", ")
                ),
            ));
        }
        Ok(())
    }
}

/// Validates the `[[checks]]` array: every key, value, name and dependency. Returns the first
/// mistake (a config is fixed one error at a time, each pointing at its line).
pub fn parse_checks(raw: &RawChecks) -> Result<Vec<CheckSpec>, ConfigError> {
    let mut specs = Vec::with_capacity(raw.len());
    let mut spans = BTreeMap::new();
    for (i, table) in raw.iter().enumerate() {
        let spec = parse_one(i, table)?;
        if let Some(first) = spans.insert(spec.name.clone(), table.span()) {
            return Err(ConfigError {
                span: Some(table.span()),
                message: format!(
                    "checks[{i}]: duplicate check name {:?} (also used by the check at byte {})",
                    spec.name, first.start
                ),
            });
        }
        specs.push(spec);
    }
    for (i, s) in specs.iter().enumerate() {
        for d in &s.depends_on {
            if *d == s.name {
                return Err(ConfigError {
                    span: spans.get(&s.name).cloned(),
                    message: format!("checks[{i}] {:?}: depends on itself", s.name),
                });
            }
            if !spans.contains_key(d) {
                return Err(ConfigError {
                    span: spans.get(&s.name).cloned(),
                    message: format!("checks[{i}] {:?}: depends_on names unknown check {d:?}", s.name),
                });
            }
        }
    }
    for (i, s) in specs.iter().enumerate() {
        if let Probe::CheckFailures { of_check, .. } = &s.probe
            && !spans.contains_key(of_check)
        {
            return Err(ConfigError {
                span: spans.get(&s.name).cloned(),
                message: format!("checks[{i}] {:?}: of_check names unknown check {of_check:?}", s.name),
            });
        }
    }
    if let Some(cycle) = find_cycle(&specs) {
        return Err(ConfigError {
            span: spans.get(&cycle[0]).cloned(),
            message: format!("checks: dependency cycle {}", cycle.join(" -> ")),
        });
    }
    Ok(specs)
}

/// A dependency cycle as a path of names that starts and ends at the same check.
fn find_cycle(specs: &[CheckSpec]) -> Option<Vec<String>> {
    let deps: BTreeMap<&str, &[String]> = specs
        .iter()
        .map(|s| (s.name.as_str(), s.depends_on.as_slice()))
        .collect();
    // 0 = unvisited, 1 = on the current path, 2 = done.
    let mut state: BTreeMap<&str, u8> = BTreeMap::new();
    fn visit<'a>(
        n: &'a str,
        deps: &BTreeMap<&'a str, &'a [String]>,
        state: &mut BTreeMap<&'a str, u8>,
        path: &mut Vec<&'a str>,
    ) -> Option<Vec<String>> {
        match state.get(n) {
            Some(2) => return None,
            Some(1) => {
                let start = path.iter().position(|p| *p == n).unwrap_or(0);
                let mut c: Vec<String> = path[start..].iter().map(|s| s.to_string()).collect();
                c.push(n.to_string());
                return Some(c);
            }
            _ => {}
        }
        state.insert(n, 1);
        path.push(n);
        for d in deps.get(n).copied().unwrap_or(&[]) {
            if let Some(c) = visit(d, deps, state, path) {
                return Some(c);
            }
        }
        path.pop();
        state.insert(n, 2);
        None
    }
    for s in specs {
        let mut path = Vec::new();
        if let Some(c) = visit(&s.name, &deps, &mut state, &mut path) {
            return Some(c);
        }
    }
    None
}

fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 64
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn parse_one(i: usize, table: &RawCheck) -> Result<CheckSpec, ConfigError> {
    let mut f = Fields {
        label: format!("checks[{i}]"),
        span: table.span(),
        map: table.get_ref().iter().map(|(k, v)| (k.get_ref().as_str(), v)).collect(),
    };
    let (name, name_span) = f.required("name")?;
    if !valid_name(&name) {
        return Err(f.err(
            Some(name_span),
            format!("check name {name:?} must be 1-64 letters, digits, '-', '_' or '.'"),
        ));
    }
    f.label = format!("checks[{i}] {name:?}");
    let (kind, kind_span) = f.required("kind")?;
    if default_levels(&kind).is_empty() {
        return Err(f.err(
            Some(kind_span),
            format!("unknown kind {kind:?} (expected one of: {KINDS})"),
        ));
    }
    let timeout = f.duration("timeout")?.unwrap_or(DEFAULT_TIMEOUT);
    if timeout.is_zero() {
        return Err(f.err(None, "timeout must be more than 0s"));
    }
    let depends_on: Vec<String> = f.strings("depends_on")?.into_iter().map(|(s, _)| s).collect();
    let mut levels: BTreeMap<&'static str, Level> = default_levels(&kind).iter().copied().collect();
    if let Some(v) = f.take("levels") {
        let Value::Table(t) = v.get_ref() else {
            return Err(f.err(Some(v.span()), "levels must be a table like { down = \"urgent\" }"));
        };
        for (class, lv) in t {
            let Some((known, _)) = default_levels(&kind).iter().find(|(c, _)| c == class) else {
                let classes: Vec<&str> = default_levels(&kind).iter().map(|(c, _)| *c).collect();
                return Err(f.err(
                    Some(v.span()),
                    format!(
                        "levels: unknown failure class {class:?} for kind {kind:?} (expected one of: {})",
                        classes.join(", ")
                    ),
                ));
            };
            let level = lv.as_str().and_then(Level::parse).ok_or_else(|| {
                f.err(
                    Some(v.span()),
                    format!("levels.{class}: expected \"critical\", \"urgent\" or \"high\""),
                )
            })?;
            levels.insert(known, level);
        }
    }
    let (warn_latency, critical_latency) = if has_latency(&kind) {
        let w = f.duration("warn_latency")?;
        let c = f.duration("critical_latency")?.or(Some(PLAN_CRITICAL_LATENCY));
        (w, c)
    } else {
        (None, None)
    };
    let probe = match kind.as_str() {
        "http" => Probe::Http(http(&mut f)?),
        "tcp" => {
            let (address, span) = f.required("address")?;
            check_address(&address).map_err(|e| f.err(Some(span), format!("address: {e}")))?;
            Probe::Tcp { address }
        }
        "dns" => {
            let (n, span) = f.required("name_to_resolve")?;
            if n.is_empty() || n.contains(char::is_whitespace) {
                return Err(f.err(Some(span), format!("name_to_resolve {n:?} is not a host name")));
            }
            let mut expect = Vec::new();
            for (a, span) in f.strings("expect")? {
                expect.push(
                    a.parse::<IpAddr>()
                        .map_err(|_| f.err(Some(span), format!("expect: {a:?} is not an IP address")))?,
                );
            }
            Probe::Dns { name: n, expect }
        }
        "postgres" => Probe::Postgres(postgres(&mut f)?),
        "tls" => {
            let (address, span) = f.required("address")?;
            let host = check_address(&address).map_err(|e| f.err(Some(span), format!("address: {e}")))?;
            let server_name = f.string("server_name")?.map(|s| s.0).unwrap_or(host);
            Probe::Tls(TlsProbe {
                address,
                server_name,
                warn_expiry: f.duration("warn_expiry")?.unwrap_or(PLAN_WARN_EXPIRY),
                ca_file: f.string("ca_file")?.map(|s| PathBuf::from(s.0)),
            })
        }
        "disk" => {
            let (p, span) = f.required("path")?;
            let path = PathBuf::from(&p);
            if !path.is_absolute() {
                return Err(f.err(Some(span), format!("path {p:?} is not absolute")));
            }
            Probe::Disk {
                path,
                min_free: f.ratio("min_free")?.unwrap_or(0.05),
            }
        }
        "memory" => Probe::Memory {
            max_used: f.ratio("max_used")?.unwrap_or(0.95),
        },
        "error_rate" if f.map.contains_key("of_check") => {
            let (of_check, span) = f.required("of_check")?;
            if let Some(v) = f.map.get("prometheus").or_else(|| f.map.get("query")) {
                return Err(f.err(
                    Some(v.span()),
                    "of_check and prometheus/query are two different sources: give one",
                ));
            }
            if of_check == name {
                return Err(f.err(Some(span), "of_check names the check itself"));
            }
            let window = f.duration("window")?.unwrap_or(Duration::from_secs(300));
            Probe::CheckFailures {
                of_check,
                window,
                max_rate: f.ratio("max_rate")?.unwrap_or(0.10),
            }
        }
        "error_rate" => {
            let (u, span) = f.required("prometheus")?;
            let prometheus = parse_http_url(&u).map_err(|e| f.err(Some(span), format!("prometheus: {e}")))?;
            let (query, _) = f.required("query")?;
            Probe::ErrorRate {
                prometheus,
                query,
                max_rate: f.ratio("max_rate")?.unwrap_or(0.10),
            }
        }
        "backup" => Probe::Backup {
            source: f.string("source")?.map(|s| s.0),
            rpo: f.duration("rpo")?.unwrap_or(PLAN_RPO),
        },
        "wal_locations" => {
            let max_lag = f.duration("max_lag")?.unwrap_or(PLAN_RPO);
            let warn_lag = f.duration("warn_lag")?.unwrap_or(max_lag / 4);
            if warn_lag > max_lag {
                return Err(f.err(None, "warn_lag is longer than max_lag"));
            }
            Probe::WalLocations { warn_lag, max_lag }
        }
        "command" => {
            let v = f
                .take("command")
                .ok_or_else(|| f.err(None, "missing required key \"command\""))?;
            let argv = match v.get_ref() {
                Value::String(s) if !s.trim().is_empty() => vec!["/bin/sh".into(), "-c".into(), s.clone()],
                Value::Array(a) if !a.is_empty() && a.iter().all(|x| x.is_str()) => {
                    a.iter().filter_map(|x| x.as_str().map(str::to_string)).collect()
                }
                _ => {
                    return Err(f.err(
                        Some(v.span()),
                        "command must be a shell string or a non-empty list [program, args…]",
                    ));
                }
            };
            Probe::Command { argv }
        }
        _ => unreachable!("kinds were checked above"),
    };
    f.finish(&kind)?;
    Ok(CheckSpec {
        name,
        probe,
        timeout,
        depends_on,
        levels,
        warn_latency,
        critical_latency,
    })
}

fn parse_http_url(u: &str) -> Result<reqwest::Url, String> {
    let url = reqwest::Url::parse(u).map_err(|e| format!("malformed URL {:?}: {e}", redact_str(u)))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("URL {:?} must start with http:// or https://", redact_str(u)));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("URL {:?} has no host", redact_str(u)));
    }
    Ok(url)
}

fn http(f: &mut Fields<'_>) -> Result<HttpProbe, ConfigError> {
    let (u, span) = f.required("url")?;
    let url = parse_http_url(&u).map_err(|e| f.err(Some(span), format!("url: {e}")))?;
    let method = match f.string("method")? {
        None => reqwest::Method::GET,
        Some((m, span)) => {
            let up = m.to_ascii_uppercase();
            match up.as_str() {
                "GET" | "HEAD" | "POST" | "PUT" | "DELETE" | "OPTIONS" | "PATCH" => up
                    .parse()
                    .map_err(|_| f.err(Some(span.clone()), format!("method {m:?}")))?,
                _ => return Err(f.err(Some(span), format!("method {m:?} is not an HTTP method"))),
            }
        }
    };
    let mut headers = Vec::new();
    if let Some(v) = f.take("headers") {
        let Value::Table(t) = v.get_ref() else {
            return Err(f.err(Some(v.span()), "headers must be a table of strings"));
        };
        for (k, val) in t {
            let Some(val) = val.as_str() else {
                return Err(f.err(Some(v.span()), format!("headers.{k} must be a string")));
            };
            if reqwest::header::HeaderName::from_bytes(k.as_bytes()).is_err()
                || reqwest::header::HeaderValue::from_str(val).is_err()
            {
                return Err(f.err(Some(v.span()), format!("headers.{k}: not a valid HTTP header")));
            }
            headers.push((k.clone(), val.to_string()));
        }
    }
    let mut expect_status = Vec::new();
    if let Some(v) = f.take("expect_status") {
        let items = match v.get_ref() {
            Value::Array(a) => a.clone(),
            one @ Value::Integer(_) => vec![one.clone()],
            _ => return Err(f.err(Some(v.span()), "expect_status must be a list of status codes")),
        };
        for it in items {
            match it.as_integer() {
                Some(c) if (100..=599).contains(&c) => expect_status.push(c as u16),
                _ => {
                    return Err(f.err(
                        Some(v.span()),
                        format!("expect_status: {it} is not a status code (100-599)"),
                    ));
                }
            }
        }
    }
    Ok(HttpProbe {
        url,
        method,
        headers,
        expect_status,
        body_contains: f.string("body_contains")?.map(|s| s.0),
        tls_verify: f.boolean("tls_verify")?.unwrap_or(true),
        ca_file: f.string("ca_file")?.map(|s| PathBuf::from(s.0)),
    })
}

fn postgres(f: &mut Fields<'_>) -> Result<PostgresProbe, ConfigError> {
    let (u, span) = f.required("url")?;
    let config: tokio_postgres::Config = u.parse().map_err(|e| {
        f.err(
            Some(span.clone()),
            format!("url: malformed connection string {:?}: {e}", redact_str(&u)),
        )
    })?;
    if config.get_hosts().is_empty() {
        return Err(f.err(Some(span), format!("url {:?} names no host", redact_str(&u))));
    }
    let display = postgres_display(&config);
    Ok(PostgresProbe {
        config,
        display,
        query: f.string("query")?.map(|s| s.0).unwrap_or_else(|| "SELECT 1".into()),
        check_archiver: f.boolean("check_archiver")?.unwrap_or(true),
        max_replication_lag: f.duration("max_replication_lag")?,
        ca_file: f.string("ca_file")?.map(|s| PathBuf::from(s.0)),
    })
}

/// `postgres://user@host:port/db`, never with the password.
fn postgres_display(c: &tokio_postgres::Config) -> String {
    let host = match c.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
        None => String::new(),
    };
    let port = c.get_ports().first().copied().unwrap_or(5432);
    let user = c.get_user().map(|u| format!("{u}@")).unwrap_or_default();
    let db = c.get_dbname().map(|d| format!("/{d}")).unwrap_or_default();
    format!("postgres://{user}{host}:{port}{db}")
}

/// Checks `host:port` (IPv6 in brackets); returns the host.
fn check_address(a: &str) -> Result<String, String> {
    let (host, port) = a.rsplit_once(':').ok_or_else(|| format!("{a:?} must be host:port"))?;
    port.parse::<u16>()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| format!("{a:?}: port {port:?} is not 1-65535"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || host.contains(char::is_whitespace) {
        return Err(format!("{a:?} has no host"));
    }
    Ok(host.to_string())
}

/// A URL safe to print: no user password, no query string (tokens live there).
pub(crate) fn redact_url(u: &reqwest::Url) -> String {
    let mut u = u.clone();
    if u.password().is_some() {
        let _ = u.set_password(Some("***"));
    }
    if u.query().is_some() {
        u.set_query(Some("***"));
    }
    u.to_string()
}

/// Best-effort redaction of a string that failed to parse as a URL.
pub(crate) fn redact_str(s: &str) -> String {
    match (s.find("://"), s.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &s[scheme_end + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &s[..scheme_end + 3], &s[at..]),
                None => s.to_string(),
            }
        }
        _ => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Vec<CheckSpec>, ConfigError> {
        #[derive(serde::Deserialize)]
        struct Doc {
            #[serde(default)]
            checks: RawChecks,
        }
        let d: Doc = toml::from_str(text).unwrap();
        parse_checks(&d.checks)
    }

    #[test]
    fn issue_example_parses_with_plan_levels() {
        let c = parse(
            r#"
[[checks]]
name = "api"
kind = "http"
url = "https://api.example.com/health"
expect_status = [200]
body_contains = "\"ok\""
warn_latency = "2s"
critical_latency = "5s"
depends_on = ["db"]

[[checks]]
name = "db"
kind = "postgres"
url = "postgres://monitor:s3cret@db.internal/app"
query = "SELECT 1"

[[checks]]
name = "tls"
kind = "tls"
address = "api.example.com:443"
warn_expiry = "7d"
levels = { expiring = "urgent" }
"#,
        )
        .unwrap();
        assert_eq!(c.len(), 3);
        assert_eq!(c[0].level_of("down"), Level::Critical);
        assert_eq!(c[0].level_of("slow"), Level::Urgent);
        assert_eq!(c[0].warn_latency, Some(Duration::from_secs(2)));
        assert_eq!(c[1].target(), "postgres://monitor@db.internal:5432/app");
        assert_eq!(c[2].level_of("expiring"), Level::Urgent);
        assert_eq!(c[2].level_of("expired"), Level::Critical);
    }

    fn err(text: &str) -> String {
        let e = parse(text).unwrap_err();
        assert!(e.span.is_some());
        assert!(!e.message.contains('\n'));
        e.message
    }

    #[test]
    fn bad_input_is_named() {
        let e = err("[[checks]]\nname = \"a\"\nkind = \"smtp\"\n");
        assert!(e.contains("unknown kind \"smtp\""), "{e}");
        let e = err("[[checks]]\nname = \"a\"\nkind = \"http\"\nurl = \"http//nope\"\n");
        assert!(e.contains("malformed URL"), "{e}");
        let e = err("[[checks]]\nname = \"a\"\nkind = \"disk\"\npath = \"/\"\nurl = \"http://x\"\n");
        assert!(e.contains("unknown key \"url\" for kind \"disk\""), "{e}");
        let e = err("[[checks]]\nname = \"a\"\nkind = \"memory\"\n[[checks]]\nname = \"a\"\nkind = \"memory\"\n");
        assert!(e.contains("duplicate check name \"a\""), "{e}");
        let e = err(
            "[[checks]]\nname = \"a\"\nkind = \"memory\"\ndepends_on = [\"b\"]\n[[checks]]\nname = \"b\"\nkind = \"memory\"\ndepends_on = [\"c\"]\n[[checks]]\nname = \"c\"\nkind = \"memory\"\ndepends_on = [\"a\"]\n",
        );
        assert!(e.contains("dependency cycle a -> b -> c -> a"), "{e}");
        let e = err("[[checks]]\nname = \"a\"\nkind = \"memory\"\ndepends_on = [\"zz\"]\n");
        assert!(e.contains("unknown check \"zz\""), "{e}");
        let e = err("[[checks]]\nname = \"a\"\nkind = \"memory\"\nlevels = { down = \"panic\" }\n");
        assert!(e.contains("levels.down"), "{e}");
        let e = err("[[checks]]\nname = \"a\"\nkind = \"tcp\"\naddress = \"localhost\"\n");
        assert!(e.contains("host:port"), "{e}");
        let e = err("[[checks]]\nname = \"a\"\nkind = \"postgres\"\nurl = \"postgres://u:pw@h:notaport/db\"\n");
        assert!(e.contains("malformed connection string") && !e.contains("pw"), "{e}");
    }

    #[test]
    fn urls_are_redacted() {
        let u = reqwest::Url::parse("https://user:pw@h.example/x?token=abc").unwrap();
        assert_eq!(redact_url(&u), "https://user:***@h.example/x?***");
        assert_eq!(redact_str("postgres://u:pw@h/db"), "postgres://u:***@h/db");
    }
}
