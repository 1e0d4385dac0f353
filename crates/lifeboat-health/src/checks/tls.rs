//! `tls`: handshake, then the presented chain: the earliest expiry of any certificate (not only
//! the leaf: an expiring intermediate breaks clients just the same), trust and hostname.
//!
//! The handshake accepts any certificate so that an expired or mismatched chain can still be
//! inspected and reported precisely; the standard WebPKI verdict is recorded on the side.

use std::sync::{Arc, Mutex};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::time::Instant;

use super::{Outcome, Shared, chain};
use crate::spec::TlsProbe;
use crate::units::format_duration;

/// Delegates to the WebPKI verifier but remembers its verdict instead of failing the handshake.
#[derive(Debug)]
struct Recording {
    inner: Arc<WebPkiServerVerifier>,
    verdict: Mutex<Option<rustls::Error>>,
}

impl ServerCertVerifier for Recording {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Err(e) = self
            .inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
            && let Ok(mut v) = self.verdict.lock()
        {
            *v = Some(e);
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Accepts any certificate but still checks the handshake signatures: TLS without
/// authentication, what libpq does for `sslmode=prefer` and `require`.
#[derive(Debug)]
pub(crate) struct Unverified(pub(crate) Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn roots(p: &TlsProbe, shared: &Shared) -> Result<RootCertStore, String> {
    root_store(p.ca_file.as_deref(), shared)
}

/// The system's trusted CAs plus those of `ca_file` (PEM).
pub(crate) fn root_store(ca_file: Option<&std::path::Path>, shared: &Shared) -> Result<RootCertStore, String> {
    let mut store = RootCertStore::empty();
    let (_added, _ignored) = store.add_parsable_certificates(shared.system_roots().iter().cloned());
    if let Some(f) = ca_file {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(f)
            .map_err(|e| format!("ca_file {}: {e}", f.display()))?
            .collect::<Result<_, _>>()
            .map_err(|e| format!("ca_file {}: {e}", f.display()))?;
        if certs.is_empty() {
            return Err(format!("ca_file {} holds no certificate", f.display()));
        }
        for c in certs {
            store.add(c).map_err(|e| format!("ca_file {}: {e}", f.display()))?;
        }
    }
    Ok(store)
}

pub(crate) async fn probe(p: &TlsProbe, shared: &Shared) -> Outcome {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let store = match roots(p, shared) {
        Ok(s) => s,
        Err(e) => return Outcome::fail("down", e),
    };
    let inner = match WebPkiServerVerifier::builder_with_provider(Arc::new(store), provider.clone()).build() {
        Ok(v) => v,
        Err(e) => return Outcome::fail("down", format!("no trusted certificates to verify against: {e}")),
    };
    let recording = Arc::new(Recording {
        inner,
        verdict: Mutex::new(None),
    });
    let config = match rustls::ClientConfig::builder_with_provider(provider).with_safe_default_protocol_versions() {
        Ok(b) => b
            .dangerous()
            .with_custom_certificate_verifier(recording.clone())
            .with_no_client_auth(),
        Err(e) => return Outcome::fail("down", format!("TLS setup: {e}")),
    };
    let server_name = match ServerName::try_from(p.server_name.clone()) {
        Ok(n) => n,
        Err(e) => return Outcome::fail("down", format!("server name {:?}: {e}", p.server_name)),
    };
    let t0 = Instant::now();
    let tcp = match tokio::net::TcpStream::connect(&p.address).await {
        Ok(s) => s,
        Err(e) => {
            return Outcome::fail("down", format!("cannot connect to {}: {e}", p.address)).with_latency(t0.elapsed());
        }
    };
    let tls = match tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(server_name, tcp)
        .await
    {
        Ok(s) => s,
        Err(e) => {
            return Outcome::fail(
                "down",
                format!("TLS handshake with {} failed: {}", p.address, chain(&e)),
            )
            .with_latency(t0.elapsed());
        }
    };
    let latency = t0.elapsed();
    let presented: Vec<CertificateDer<'static>> = tls
        .get_ref()
        .1
        .peer_certificates()
        .map(|c| c.iter().map(|c| c.clone().into_owned()).collect())
        .unwrap_or_default();
    drop(tls);
    let verdict = recording.verdict.lock().ok().and_then(|mut v| v.take());
    judge(p, &presented, verdict, jiff::Timestamp::now().as_second()).with_latency(latency)
}

/// One parsed certificate: who, and until when.
struct Cert {
    subject: String,
    not_after: i64,
}

fn parse(der: &CertificateDer<'_>) -> Option<Cert> {
    let (_, c) = x509_parser::parse_x509_certificate(der.as_ref()).ok()?;
    let subject = c
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok().map(|s| format!("CN={s}")))
        .unwrap_or_else(|| c.subject().to_string());
    Some(Cert {
        subject,
        not_after: c.validity().not_after.timestamp(),
    })
}

fn date(t: i64) -> String {
    jiff::Timestamp::from_second(t)
        .map(|t| t.strftime("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_default()
}

/// The verdict on a presented chain at time `now` (Unix seconds).
fn judge(p: &TlsProbe, presented: &[CertificateDer<'_>], verdict: Option<rustls::Error>, now: i64) -> Outcome {
    let certs: Vec<Cert> = presented.iter().filter_map(parse).collect();
    let Some(earliest) = certs.iter().min_by_key(|c| c.not_after) else {
        return Outcome::fail("invalid", "the server presented no readable certificate");
    };
    let which = if certs.len() > 1 {
        format!("{} (earliest of {} in the chain)", earliest.subject, certs.len())
    } else {
        earliest.subject.clone()
    };
    if earliest.not_after <= now {
        let ago = std::time::Duration::from_secs((now - earliest.not_after) as u64);
        return Outcome::fail(
            "expired",
            format!(
                "certificate {which} expired {} ago ({})",
                format_duration(ago),
                date(earliest.not_after)
            ),
        );
    }
    if let Some(e) = verdict {
        return match e {
            rustls::Error::InvalidCertificate(CertificateError::NotValidForName)
            | rustls::Error::InvalidCertificate(CertificateError::NotValidForNameContext { .. }) => Outcome::fail(
                "invalid",
                format!("certificate is not valid for {} (hostname mismatch)", p.server_name),
            ),
            rustls::Error::InvalidCertificate(CertificateError::Expired)
            | rustls::Error::InvalidCertificate(CertificateError::ExpiredContext { .. }) => {
                Outcome::fail("expired", "a certificate in the trust path has expired")
            }
            rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer) => Outcome::fail(
                "invalid",
                "certificate chain is not trusted: unknown issuer (set ca_file for a private CA)",
            ),
            // An issuer with the right name but another key: a different CA of the same name.
            rustls::Error::InvalidCertificate(CertificateError::BadSignature) => Outcome::fail(
                "invalid",
                "certificate chain is not trusted: an issuer's signature does not verify (wrong CA?)",
            ),
            other => Outcome::fail("invalid", format!("certificate rejected: {other}")),
        };
    }
    let left = std::time::Duration::from_secs((earliest.not_after - now) as u64);
    if left < p.warn_expiry {
        return Outcome::fail(
            "expiring",
            format!(
                "certificate {which} expires in {} ({}), within {}",
                format_duration(left),
                date(earliest.not_after),
                format_duration(p.warn_expiry)
            ),
        );
    }
    Outcome::ok(format!(
        "valid for {} more (earliest: {which}, {})",
        format_duration(left),
        date(earliest.not_after)
    ))
}
