//! `disk`: free share of the filesystem holding a path (space available to unprivileged users,
//! as applications see it).

use std::path::Path;

use super::{Outcome, bytes, pct};

pub(crate) async fn probe(path: &Path, min_free: f64) -> Outcome {
    let p = path.to_path_buf();
    // statvfs may hang on a dead network mount: off the async threads, so the timeout holds.
    let st = match tokio::task::spawn_blocking(move || rustix::fs::statvfs(&p)).await {
        Ok(Ok(st)) => st,
        Ok(Err(e)) => return Outcome::fail("down", format!("cannot stat {}: {e}", path.display())),
        Err(e) => return Outcome::fail("down", format!("cannot stat {}: {e}", path.display())),
    };
    let total = st.f_blocks.saturating_mul(st.f_frsize);
    let avail = st.f_bavail.saturating_mul(st.f_frsize);
    if total == 0 {
        return Outcome::fail("down", format!("{} reports a size of 0", path.display()));
    }
    let free = avail as f64 / total as f64;
    let what = format!("{} free ({} of {})", pct(free), bytes(avail), bytes(total));
    if free < min_free {
        return Outcome::fail("low_space", format!("{what}, below {}", pct(min_free)));
    }
    Outcome::ok(what)
}
