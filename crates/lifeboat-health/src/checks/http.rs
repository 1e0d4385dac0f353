//! `http`: one request; status, body text and latency.

use tokio::time::Instant;

use super::{Outcome, Shared, chain};
use crate::spec::HttpProbe;

/// The body is read up to this size: enough for any health endpoint, bounded for any other.
const BODY_LIMIT: usize = 1 << 20;

pub(crate) async fn probe(p: &HttpProbe, shared: &Shared) -> Outcome {
    let client = match shared.http(p.tls_verify, p.ca_file.as_deref()) {
        Ok(c) => c,
        Err(e) => return Outcome::fail("down", e),
    };
    let t0 = Instant::now();
    let mut req = client.request(p.method.clone(), p.url.clone());
    for (k, v) in &p.headers {
        req = req.header(k, v);
    }
    let mut resp = match req.send().await {
        Ok(r) => r,
        // without_url: the URL may carry a token in its query string.
        Err(e) => {
            return Outcome::fail("down", format!("request failed: {}", chain(&e.without_url())))
                .with_latency(t0.elapsed());
        }
    };
    let status = resp.status();
    let mut body = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(c)) => {
                let room = BODY_LIMIT.saturating_sub(body.len());
                body.extend_from_slice(&c[..c.len().min(room)]);
                if body.len() >= BODY_LIMIT {
                    break;
                }
            }
            Ok(None) => break,
            Err(e) => {
                return Outcome::fail(
                    "down",
                    format!(
                        "status {}, then the body failed: {}",
                        status.as_u16(),
                        chain(&e.without_url())
                    ),
                )
                .with_latency(t0.elapsed());
            }
        }
    }
    let latency = t0.elapsed();
    let expected = if p.expect_status.is_empty() {
        status.is_success()
    } else {
        p.expect_status.contains(&status.as_u16())
    };
    if !expected {
        let want = if p.expect_status.is_empty() {
            "2xx".to_string()
        } else {
            p.expect_status
                .iter()
                .map(u16::to_string)
                .collect::<Vec<_>>()
                .join(" or ")
        };
        return Outcome::fail("down", format!("status {} (expected {want})", status.as_u16())).with_latency(latency);
    }
    if let Some(needle) = &p.body_contains
        && !String::from_utf8_lossy(&body).contains(needle.as_str())
    {
        return Outcome::fail(
            "down",
            format!("status {}, but the body does not contain {needle:?}", status.as_u16()),
        )
        .with_latency(latency);
    }
    Outcome::ok(format!("status {}", status.as_u16())).with_latency(latency)
}
