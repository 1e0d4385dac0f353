//! Test servers and helpers: a small HTTP/1.1 server with misbehaving endpoints, TLS servers
//! with generated certificates, a throwaway PostgreSQL cluster.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

pub use crate::pg::{PG_PASSWORD, Pg};
use std::sync::Arc;
use std::time::Duration;

use lifeboat_health::{CheckResult, CheckSpec, Context, RawChecks, Report, RunOptions};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Parses `[[checks]]` TOML (panics on a config error: tests of errors call `parse_checks`).
pub fn checks(text: &str) -> Vec<CheckSpec> {
    try_checks(text).unwrap_or_else(|e| panic!("config error: {e}"))
}

pub fn try_checks(text: &str) -> Result<Vec<CheckSpec>, lifeboat_health::ConfigError> {
    #[derive(serde::Deserialize)]
    struct Doc {
        #[serde(default)]
        checks: RawChecks,
    }
    let d: Doc = toml::from_str(text).expect("valid TOML");
    lifeboat_health::parse_checks(&d.checks)
}

/// Runs checks with a 30 s global timeout and no repository.
pub fn run(text: &str) -> Report {
    run_with(text, Duration::from_secs(30), Context::default())
}

pub fn run_with(text: &str, global: Duration, ctx: Context) -> Report {
    lifeboat_health::run_blocking(&checks(text), &RunOptions { timeout: global }, &ctx).expect("runtime")
}

pub fn result<'a>(r: &'a Report, name: &str) -> &'a CheckResult {
    r.checks
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no result {name} in {r:#?}"))
}

/// Runs `f` on a thread of its own with a current-thread runtime, for servers that must outlive
/// the checks' runtime. Returns the port it listens on.
fn spawn_server<F, Fut>(f: F) -> u16
where
    F: FnOnce(TcpListener) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(l.local_addr().unwrap().port()).unwrap();
            f(l).await;
        });
    });
    rx.recv().unwrap()
}

/// A port nothing listens on (bound, then released).
pub fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

async fn read_head(s: &mut TcpStream) -> Option<String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 || buf.len() > 65536 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Some(String::from_utf8_lossy(&buf).into_owned())
}

async fn respond(s: &mut TcpStream, status: u16, body: &str) {
    let msg = format!(
        "HTTP/1.1 {status} X\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = s.write_all(msg.as_bytes()).await;
    let _ = s.shutdown().await;
}

/// Decodes `%XX` and `+` of a query-string value.
fn decode(v: &str) -> String {
    let b = v.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                out.push(u8::from_str_radix(&v[i + 1..i + 3], 16).unwrap_or(b'?'));
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn serve(mut s: TcpStream) {
    let Some(head) = read_head(&mut s).await else { return };
    let target = head.split_whitespace().nth(1).unwrap_or("/").to_string();
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    match path {
        "/ok" => respond(&mut s, 200, "{\"status\":\"ok\"}").await,
        "/fail" => respond(&mut s, 503, "unavailable").await,
        "/wrong-body" => respond(&mut s, 200, "{\"status\":\"degraded\"}").await,
        "/hang" => tokio::time::sleep(Duration::from_secs(3600)).await,
        "/close" => drop(s),
        "/truncated" => {
            let _ = s
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nshort")
                .await;
            drop(s);
        }
        "/token" => {
            let ok = head.lines().any(|l| l.eq_ignore_ascii_case("x-token: t0k"));
            respond(&mut s, if ok { 200 } else { 401 }, "").await
        }
        "/api/v1/query" => {
            // The query text is the answer: a number, "error" or "empty".
            let q = query
                .split('&')
                .find_map(|kv| kv.strip_prefix("query="))
                .map(decode)
                .unwrap_or_default();
            let body = match q.as_str() {
                "error" => r#"{"status":"error","errorType":"bad_data","error":"parse error at char 1"}"#.to_string(),
                "empty" => r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#.to_string(),
                n => format!(
                    r#"{{"status":"success","data":{{"resultType":"vector","result":[{{"metric":{{"job":"api"}},"value":[1700000000,"{n}"]}}]}}}}"#
                ),
            };
            respond(&mut s, if q == "error" { 400 } else { 200 }, &body).await
        }
        p if p.starts_with("/slow/") => {
            let ms: u64 = p[6..].parse().unwrap_or(1000);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            respond(&mut s, 200, "{\"status\":\"ok\"}").await
        }
        _ => respond(&mut s, 404, "not found").await,
    }
}

/// Starts the test HTTP server; returns its port. Endpoints: /ok, /fail (503), /wrong-body,
/// /slow/MS, /hang (never answers), /close (closes without answering), /truncated (body cut
/// short), /token (200 only with `X-Token: t0k`), /api/v1/query (Prometheus: the query is the
/// answer).
pub fn http_server() -> u16 {
    spawn_server(|l| async move {
        loop {
            let Ok((s, _)) = l.accept().await else { continue };
            tokio::spawn(serve(s));
        }
    })
}

/// A test certificate authority.
pub struct Pki {
    pub ca_cert: rcgen::Certificate,
    pub ca_key: rcgen::KeyPair,
}

pub fn days(n: i64) -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc() + time::Duration::days(n)
}

impl Pki {
    pub fn new() -> Pki {
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        p.distinguished_name.push(rcgen::DnType::CommonName, "lifeboat test CA");
        p.not_before = days(-30);
        p.not_after = days(3650);
        p.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
        let key = rcgen::KeyPair::generate().unwrap();
        let ca_cert = p.self_signed(&key).unwrap();
        Pki { ca_cert, ca_key: key }
    }

    /// Writes the CA certificate as PEM into `dir`.
    pub fn ca_file(&self, dir: &Path) -> PathBuf {
        let f = dir.join("ca.pem");
        std::fs::write(&f, self.ca_cert.pem()).unwrap();
        f
    }

    /// A leaf for `names` valid until `not_after`, signed by `issuer` (the CA when None).
    pub fn leaf(
        &self,
        names: &[&str],
        not_after: time::OffsetDateTime,
        issuer: Option<(&rcgen::Certificate, &rcgen::KeyPair)>,
    ) -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
        let mut p = rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        p.distinguished_name.push(rcgen::DnType::CommonName, names[0]);
        p.not_before = days(-20);
        p.not_after = not_after;
        let key = rcgen::KeyPair::generate().unwrap();
        let (ic, ik) = issuer.unwrap_or((&self.ca_cert, &self.ca_key));
        let cert = p.signed_by(&key, ic, ik).unwrap();
        (
            cert.der().clone(),
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
    }

    /// A leaf certificate and key as PEM (for servers that read files).
    pub fn leaf_pem(&self, names: &[&str], not_after: time::OffsetDateTime) -> (String, String) {
        let mut p = rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        p.distinguished_name.push(rcgen::DnType::CommonName, names[0]);
        p.not_before = days(-20);
        p.not_after = not_after;
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, &self.ca_cert, &self.ca_key).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    /// An intermediate CA valid until `not_after`.
    pub fn intermediate(&self, not_after: time::OffsetDateTime) -> (rcgen::Certificate, rcgen::KeyPair) {
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        p.distinguished_name
            .push(rcgen::DnType::CommonName, "lifeboat test intermediate");
        p.not_before = days(-20);
        p.not_after = not_after;
        p.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, &self.ca_cert, &self.ca_key).unwrap();
        (cert, key)
    }
}

/// A TLS server presenting `chain`; answers every handshake, then closes. Returns its port.
pub fn tls_server(chain: Vec<CertificateDer<'static>>, key: PrivateKeyDer<'static>) -> u16 {
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    spawn_server(move |l| async move {
        loop {
            let Ok((s, _)) = l.accept().await else { continue };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(mut tls) = acceptor.accept(s).await {
                    let _ = tls.write_all(b"hello").await;
                    let _ = tls.shutdown().await;
                }
            });
        }
    })
}

/// An HTTPS server presenting `chain` that answers every request with `{"status":"ok"}`.
pub fn https_server(chain: Vec<CertificateDer<'static>>, key: PrivateKeyDer<'static>) -> u16 {
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    spawn_server(move |l| async move {
        loop {
            let Ok((s, _)) = l.accept().await else { continue };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(s).await else { return };
                let mut buf = [0u8; 4096];
                let mut head = Vec::new();
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let body = "{\"status\":\"ok\"}";
                let msg = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = tls.write_all(msg.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    })
}
