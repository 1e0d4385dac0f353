//! One module per check kind; each turns a probe into an [`Outcome`]. Timeouts, latency limits
//! and levels are applied by the runner, so a probe only says what it saw.

mod backup;
mod command;
mod disk;
mod dns;
mod error_rate;
mod http;
mod memory;
mod postgres;
mod tcp;
mod tls;
mod wal_locations;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use crate::runner::Context;
use crate::spec::{CheckSpec, Probe};

/// What a probe saw.
#[derive(Debug, Clone)]
pub(crate) struct Outcome {
    /// Failure class (`down`, `expiring`, …); `None` when healthy.
    pub failure: Option<&'static str>,
    /// One line for people.
    pub detail: String,
    /// Measured latency, where the kind has one.
    pub latency: Option<Duration>,
}

impl Outcome {
    pub(crate) fn ok(detail: impl Into<String>) -> Outcome {
        Outcome {
            failure: None,
            detail: detail.into(),
            latency: None,
        }
    }

    pub(crate) fn fail(class: &'static str, detail: impl Into<String>) -> Outcome {
        Outcome {
            failure: Some(class),
            detail: one_line(&detail.into()),
            latency: None,
        }
    }

    pub(crate) fn with_latency(mut self, l: Duration) -> Outcome {
        self.latency = Some(l);
        self
    }
}

/// What distinguishes HTTP clients: certificate verification on/off, and an extra CA file.
type ClientKey = (bool, Option<PathBuf>);

/// State shared by the checks of one run: HTTP clients (connection pools, loaded CA roots) and
/// the system's trusted certificates, built once instead of once per check.
pub(crate) struct Shared {
    /// One client per (verify, extra CA file).
    http: Mutex<HashMap<ClientKey, Result<reqwest::Client, String>>>,
    roots: OnceLock<Arc<Vec<rustls::pki_types::CertificateDer<'static>>>>,
}

impl Shared {
    pub(crate) fn new() -> Shared {
        Shared {
            http: Mutex::new(HashMap::new()),
            roots: OnceLock::new(),
        }
    }

    /// The HTTP client (one per verification mode and CA file, built on first use).
    pub(crate) fn http(&self, verify: bool, ca_file: Option<&Path>) -> Result<reqwest::Client, String> {
        let key = (verify, ca_file.map(Path::to_path_buf));
        let mut clients = self.http.lock().map_err(|_| "HTTP client cache poisoned".to_string())?;
        clients
            .entry(key)
            .or_insert_with(|| build_http(verify, ca_file))
            .clone()
    }

    /// The system's trusted root certificates (empty when none can be loaded).
    pub(crate) fn system_roots(&self) -> Arc<Vec<rustls::pki_types::CertificateDer<'static>>> {
        self.roots
            .get_or_init(|| Arc::new(rustls_native_certs::load_native_certs().certs))
            .clone()
    }
}

fn build_http(verify: bool, ca_file: Option<&Path>) -> Result<reqwest::Client, String> {
    let mut b = reqwest::Client::builder()
        .use_rustls_tls()
        .danger_accept_invalid_certs(!verify)
        // Probe the service itself: a proxy from the environment would measure the proxy.
        .no_proxy()
        .user_agent(concat!("lifeboat-health/", env!("CARGO_PKG_VERSION")));
    if let Some(f) = ca_file {
        let pem = std::fs::read(f).map_err(|e| format!("ca_file {}: {e}", f.display()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| format!("ca_file {}: {e}", f.display()))?;
        if certs.is_empty() {
            return Err(format!("ca_file {} holds no certificate", f.display()));
        }
        for c in certs {
            b = b.add_root_certificate(c);
        }
    }
    b.build()
        .map_err(|e| format!("cannot build the HTTP client: {}", chain(&e)))
}

/// Runs the probe of one check (without its timeout or latency limits).
pub(crate) async fn probe(spec: &CheckSpec, shared: &Shared, ctx: &Context) -> Outcome {
    match &spec.probe {
        Probe::Http(p) => http::probe(p, shared).await,
        Probe::Tcp { address } => tcp::probe(address).await,
        Probe::Dns { name, expect } => dns::probe(name, expect).await,
        Probe::Postgres(p) => postgres::probe(p, shared).await,
        Probe::Tls(p) => tls::probe(p, shared).await,
        Probe::Disk { path, min_free } => disk::probe(path, *min_free).await,
        Probe::Memory { max_used } => memory::probe(*max_used).await,
        Probe::ErrorRate {
            prometheus,
            query,
            max_rate,
        } => error_rate::probe(prometheus, query, *max_rate, shared).await,
        // Derived from the other checks' results: the runner evaluates it after them.
        Probe::CheckFailures { .. } => Outcome::ok("evaluated after the other checks"),
        Probe::Backup { source, rpo } => backup::probe(source.as_deref(), *rpo, ctx).await,
        Probe::WalLocations { warn_lag, max_lag } => wal_locations::probe(*warn_lag, *max_lag, ctx).await,
        Probe::Command { argv } => command::probe(argv).await,
    }
}

/// An error and its causes on one line, each cause once.
pub(crate) fn chain(e: &(dyn std::error::Error + 'static)) -> String {
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
    one_line(&s)
}

fn one_line(s: &str) -> String {
    let mut t: String = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if t.chars().count() > 300 {
        t = t.chars().take(297).collect::<String>() + "...";
    }
    t
}

/// Formats bytes with binary units.
pub(crate) fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// Formats a share as a percentage.
pub(crate) fn pct(r: f64) -> String {
    format!("{:.1}%", r * 100.0)
}
