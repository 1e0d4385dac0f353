//! Retention of archived WAL: after `forget` has decided which snapshots stay, WAL that no kept
//! physical backup can use is deleted (its chunks are freed by the next prune).
//!
//! Rule, per cluster (WAL namespace): find the oldest kept physical backup; every segment whose
//! number is below that backup's first segment, on any timeline, is of no use to any restore
//! (point-in-time recovery starts from a base backup), so it goes. History files are tiny and
//! always kept; partial uploads of `wal stream` follow the same rule. A namespace with no kept physical backup is left alone: its WAL may belong to a
//! cluster whose first backup is still to come, and deleting it is never urgent.

use lifeboat_repo::format::snapshot::Snapshot;
use lifeboat_repo::named;
use lifeboat_repo::{Id, Repository};

use crate::error::Result;
use crate::restore::is_restorable_physical;
use crate::wal_names::Segment;

/// What retention deletes (or would delete) in one namespace.
#[derive(Clone, Debug, serde::Serialize)]
pub struct WalRetention {
    /// Namespace.
    pub namespace: String,
    /// First segment kept (the oldest kept backup's start).
    pub keep_from: String,
    /// Names deleted.
    pub deleted: Vec<String>,
    /// Names kept.
    pub kept: usize,
}

/// Plans (and unless `dry_run`, applies) WAL retention given the snapshots still kept.
pub fn apply(repo: &Repository, kept: &[(Id, Snapshot)], dry_run: bool) -> Result<Vec<WalRetention>> {
    let mut out = Vec::new();
    for ns in named::namespaces(repo)? {
        // Partial uploads of `wal stream` follow their cluster's WAL.
        let wal_ns = match ns.strip_prefix("walpartial-") {
            Some(sysid) => format!("wal-{sysid}"),
            None if ns.starts_with("wal-") => ns.clone(),
            None => continue,
        };
        let oldest = kept
            .iter()
            .filter(|(_, s)| {
                is_restorable_physical(s)
                    && s.source
                        .as_ref()
                        .and_then(|v| v.get("wal_namespace"))
                        .and_then(|v| v.as_str())
                        == Some(&wal_ns)
            })
            .filter_map(|(_, s)| {
                let src = s.source.as_ref()?;
                let seg_size = src.get("wal_segment_size")?.as_u64()?;
                let start = Segment::parse(src.get("start_wal")?.as_str()?, seg_size)?;
                Some((start, seg_size))
            })
            .min_by_key(|(s, _)| s.number);
        let Some((start, seg_size)) = oldest else { continue };
        let mut rep = WalRetention {
            namespace: ns.clone(),
            keep_from: start.name(seg_size),
            deleted: Vec::new(),
            kept: 0,
        };
        for name in named::list(repo, &ns)? {
            let seg = name.get(..24).and_then(|p| Segment::parse(p, seg_size));
            match seg {
                Some(s) if s.number < start.number => rep.deleted.push(name),
                _ => rep.kept += 1,
            }
        }
        if !dry_run {
            for n in &rep.deleted {
                named::delete(repo, &ns, n)?;
            }
        }
        out.push(rep);
    }
    Ok(out)
}
