//! `backup`: age of the newest snapshot against the RPO, from the [`SnapshotAges`] the binary
//! supplies.

use std::time::Duration;

use super::Outcome;
use crate::runner::Context;
use crate::units::format_duration;

pub(crate) async fn probe(source: Option<&str>, rpo: Duration, ctx: &Context) -> Outcome {
    let Some(ages) = ctx.snapshots.clone() else {
        return Outcome::fail(
            "down",
            "no repository configured (--repo, LIFEBOAT_REPO or [repository] location)",
        );
    };
    let src = source.map(str::to_string);
    // Opening a repository derives a key (deliberately slow) and reads files: not on async threads.
    let newest = match tokio::task::spawn_blocking(move || ages.newest(src.as_deref())).await {
        Ok(r) => r,
        Err(e) => Err(format!("snapshot lookup crashed: {e}")),
    };
    let what = source.map_or("any source".to_string(), |s| format!("source {s:?}"));
    match newest {
        Err(e) => Outcome::fail("down", e),
        Ok(None) => Outcome::fail("stale", format!("no snapshot of {what} yet")),
        Ok(Some(n)) if n.unreadable > 0 => Outcome::fail(
            "failed",
            format!(
                "newest snapshot of {what} ({}) is partial: {} file(s) could not be read",
                n.time.strftime("%Y-%m-%d %H:%M UTC"),
                n.unreadable
            ),
        ),
        Ok(Some(n)) => {
            let t = n.time;
            let age = jiff::Timestamp::now().duration_since(t);
            let age = if age.is_negative() {
                Duration::ZERO
            } else {
                age.unsigned_abs()
            };
            let when = t.strftime("%Y-%m-%d %H:%M UTC");
            if age > rpo {
                Outcome::fail(
                    "stale",
                    format!(
                        "newest snapshot of {what} is {} old ({when}), older than the RPO of {}",
                        format_duration(age),
                        format_duration(rpo)
                    ),
                )
            } else {
                Outcome::ok(format!(
                    "newest snapshot of {what} is {} old ({when})",
                    format_duration(age)
                ))
            }
        }
    }
}
