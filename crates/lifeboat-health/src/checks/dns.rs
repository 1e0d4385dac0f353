//! `dns`: a name resolves (with the system resolver, as the service's clients do), optionally
//! to the expected addresses.

use std::collections::BTreeSet;
use std::net::IpAddr;

use tokio::time::Instant;

use super::Outcome;

pub(crate) async fn probe(name: &str, expect: &[IpAddr]) -> Outcome {
    let t0 = Instant::now();
    let answers: BTreeSet<IpAddr> = match tokio::net::lookup_host((name, 0)).await {
        Ok(it) => it.map(|a| a.ip()).collect(),
        Err(e) => return Outcome::fail("down", format!("{name} does not resolve: {e}")).with_latency(t0.elapsed()),
    };
    let latency = t0.elapsed();
    let list = answers.iter().map(IpAddr::to_string).collect::<Vec<_>>().join(", ");
    if answers.is_empty() {
        return Outcome::fail("down", format!("{name} resolves to no address")).with_latency(latency);
    }
    let missing: Vec<String> = expect
        .iter()
        .filter(|a| !answers.contains(a))
        .map(IpAddr::to_string)
        .collect();
    if !missing.is_empty() {
        return Outcome::fail(
            "down",
            format!("{name} resolves to {list}, not to {}", missing.join(", ")),
        )
        .with_latency(latency);
    }
    Outcome::ok(format!("{name} resolves to {list}")).with_latency(latency)
}
