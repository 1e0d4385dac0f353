//! `tcp`: a connection opens.

use tokio::time::Instant;

use super::Outcome;

pub(crate) async fn probe(address: &str) -> Outcome {
    let t0 = Instant::now();
    match tokio::net::TcpStream::connect(address).await {
        Ok(s) => {
            let peer = s
                .peer_addr()
                .map(|a| a.to_string())
                .unwrap_or_else(|_| address.to_string());
            Outcome::ok(format!("connected to {peer}")).with_latency(t0.elapsed())
        }
        Err(e) => Outcome::fail("down", format!("cannot connect to {address}: {e}")).with_latency(t0.elapsed()),
    }
}
