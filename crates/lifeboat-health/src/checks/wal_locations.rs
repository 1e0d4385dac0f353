//! `wal_locations`: archived WAL in every storage location. A location that misses segments the
//! first reachable location holds loses the RPO if the first one is lost: warn after
//! `warn_lag`, critical after `max_lag` (default the plan's RPO).

use std::time::Duration;

use super::Outcome;
use crate::runner::{Context, WalCopy};
use crate::units::format_duration;

pub(crate) async fn probe(warn_lag: Duration, max_lag: Duration, ctx: &Context) -> Outcome {
    let Some(copies) = ctx.wal_copies.clone() else {
        return Outcome::fail(
            "down",
            "no repository configured (--repo, LIFEBOAT_REPO or [repository] location/locations)",
        );
    };
    let listed = match tokio::task::spawn_blocking(move || copies.copies()).await {
        Ok(r) => r,
        Err(e) => Err(format!("WAL listing crashed: {e}")),
    };
    match listed {
        Err(e) => Outcome::fail("down", e),
        Ok(v) => judge(&v, warn_lag, max_lag, jiff::Timestamp::now()),
    }
}

fn judge(v: &[WalCopy], warn_lag: Duration, max_lag: Duration, now: jiff::Timestamp) -> Outcome {
    let mut critical = Vec::new();
    let mut warn = Vec::new();
    for c in v {
        if let Err(e) = &c.reachable {
            warn.push(format!("{} unreachable ({e})", c.location));
            continue;
        }
        let Some(since) = c.missing_since else { continue };
        let age = now.duration_since(since);
        let age = if age.is_negative() {
            Duration::ZERO
        } else {
            age.unsigned_abs()
        };
        let line = format!(
            "{} misses {} WAL file(s), the oldest for {}",
            c.location,
            c.missing,
            format_duration(age)
        );
        if age > max_lag {
            critical.push(line);
        } else if age > warn_lag {
            warn.push(line);
        }
    }
    if !critical.is_empty() {
        critical.extend(warn);
        return Outcome::fail(
            "lag_critical",
            format!("{} (limit {})", critical.join("; "), format_duration(max_lag)),
        );
    }
    if !warn.is_empty() {
        return Outcome::fail(
            "lagging",
            format!("{} (warning after {})", warn.join("; "), format_duration(warn_lag)),
        );
    }
    let newest = v.iter().filter_map(|c| c.newest.as_deref()).max().unwrap_or("none yet");
    Outcome::ok(format!(
        "archived WAL complete in {} location(s), newest {newest}",
        v.len()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn copy(name: &str, missing_for: Option<u64>) -> WalCopy {
        let now = jiff::Timestamp::from_second(1_000_000).unwrap();
        WalCopy {
            location: name.into(),
            reachable: Ok(()),
            missing: usize::from(missing_for.is_some()) * 3,
            missing_since: missing_for.map(|s| now - jiff::SignedDuration::from_secs(s as i64)),
            newest: Some("000000010000000000000003".into()),
        }
    }

    #[test]
    fn levels_by_age() {
        let now = jiff::Timestamp::from_second(1_000_000).unwrap();
        let (w, m) = (Duration::from_secs(900), Duration::from_secs(3600));
        assert!(
            judge(&[copy("a", None), copy("b", Some(60))], w, m, now)
                .failure
                .is_none()
        );
        assert_eq!(judge(&[copy("b", Some(1000))], w, m, now).failure, Some("lagging"));
        let o = judge(&[copy("b", Some(4000))], w, m, now);
        assert_eq!(o.failure, Some("lag_critical"));
        assert!(o.detail.contains("b misses 3 WAL file(s)"), "{}", o.detail);
        let mut down = copy("c", None);
        down.reachable = Err("connection refused".into());
        assert_eq!(judge(&[down], w, m, now).failure, Some("lagging"));
    }
}
