//! `memory`: used share of memory, counting what the kernel can reclaim as free
//! (`1 - MemAvailable / MemTotal`).

use super::{Outcome, bytes, pct};

/// Parses `MemTotal` and `MemAvailable` (kB) from /proc/meminfo text.
fn parse(text: &str) -> Option<(u64, u64)> {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|r| r.trim_start_matches(':').split_whitespace().next())
            .and_then(|n| n.parse::<u64>().ok())
            .map(|kb| kb * 1024)
    };
    Some((field("MemTotal")?, field("MemAvailable")?))
}

pub(crate) async fn probe(max_used: f64) -> Outcome {
    let text = match tokio::task::spawn_blocking(|| std::fs::read_to_string("/proc/meminfo")).await {
        Ok(Ok(t)) => t,
        Ok(Err(e)) => return Outcome::fail("down", format!("cannot read /proc/meminfo: {e}")),
        Err(e) => return Outcome::fail("down", format!("cannot read /proc/meminfo: {e}")),
    };
    let Some((total, avail)) = parse(&text).filter(|(t, _)| *t > 0) else {
        return Outcome::fail("down", "/proc/meminfo has no MemTotal/MemAvailable");
    };
    let used = 1.0 - avail.min(total) as f64 / total as f64;
    let what = format!("{} used ({} available of {})", pct(used), bytes(avail), bytes(total));
    if used > max_used {
        return Outcome::fail("high_usage", format!("{what}, above {}", pct(max_used)));
    }
    Outcome::ok(what)
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_meminfo() {
        let t = "MemTotal:       16000000 kB\nMemFree:  100 kB\nMemAvailable:    4000000 kB\n";
        assert_eq!(super::parse(t), Some((16_000_000 * 1024, 4_000_000 * 1024)));
        assert_eq!(super::parse("MemTotal: 5 kB\n"), None);
    }
}
