//! `wal check`: is the archived WAL continuous from each kept base backup to the newest segment,
//! following timeline switches through the archived history files?

use std::collections::{BTreeMap, BTreeSet};

use lifeboat_repo::Repository;
use lifeboat_repo::named;

use crate::error::Result;
use crate::physical::SOURCE_KIND;
use crate::wal_names::{Lsn, Segment, history_timeline, parse_history};

/// The verdict for one base backup.
#[derive(Clone, Debug, serde::Serialize)]
pub struct BackupChain {
    /// Snapshot id.
    pub snapshot_id: String,
    /// First segment it needs.
    pub start_wal: String,
    /// Last segment needed for consistency.
    pub stop_wal: String,
    /// Newest segment reachable without a gap.
    pub reachable_until: Option<String>,
    /// Missing segments (first ones only, at most 20).
    pub missing: Vec<String>,
    /// True when the backup can be restored to a consistent state.
    pub consistent: bool,
}

/// The verdict for one cluster (WAL namespace).
#[derive(Clone, Debug, serde::Serialize)]
pub struct NamespaceReport {
    /// Namespace (`wal-<system id>`).
    pub namespace: String,
    /// Segments stored.
    pub segments: usize,
    /// Newest timeline seen.
    pub newest_timeline: u32,
    /// Newest segment on the newest timeline.
    pub newest: Option<String>,
    /// Per kept base backup.
    pub backups: Vec<BackupChain>,
    /// Gaps anywhere between the oldest backup's start and the newest segment.
    pub gaps: Vec<String>,
}

impl NamespaceReport {
    /// True when every backup is consistent and no gap exists.
    pub fn ok(&self) -> bool {
        self.gaps.is_empty() && self.backups.iter().all(|b| b.consistent && b.missing.is_empty())
    }
}

/// Checks every WAL namespace (or one).
pub fn check(repo: &Repository, only: Option<&str>) -> Result<Vec<NamespaceReport>> {
    let snaps = repo.list_snapshots()?;
    let mut out = Vec::new();
    for ns in named::namespaces(repo)? {
        if !ns.starts_with("wal-") || only.is_some_and(|o| o != ns) {
            continue;
        }
        let names = named::list(repo, &ns)?;
        let backups: Vec<_> = snaps
            .iter()
            .filter(|(_, s)| {
                s.source_kind == SOURCE_KIND
                    && s.source
                        .as_ref()
                        .and_then(|v| v.get("wal_namespace"))
                        .and_then(|v| v.as_str())
                        == Some(&ns)
            })
            .collect();
        let seg_size = backups
            .iter()
            .find_map(|(_, s)| s.source.as_ref()?.get("wal_segment_size")?.as_u64())
            .unwrap_or(16 << 20);
        let mut by_tli: BTreeMap<u32, BTreeSet<u64>> = BTreeMap::new();
        let mut histories: BTreeMap<u32, Vec<(u32, Lsn)>> = BTreeMap::new();
        for n in &names {
            if let Some(s) = Segment::parse(n, seg_size) {
                by_tli.entry(s.timeline).or_default().insert(s.number);
            } else if let Some(t) = history_timeline(n)
                && let Some(m) = named::read_manifest(repo, &ns, n)?
            {
                let index = repo.load_index_for_reading()?;
                let mut buf = Vec::new();
                named::read_to(repo, &index, &m, &mut buf)?;
                histories.insert(t, parse_history(&String::from_utf8_lossy(&buf)));
            }
        }
        let newest_tli = by_tli.keys().chain(histories.keys()).copied().max().unwrap_or(1);
        let newest = by_tli
            .get(&newest_tli)
            .and_then(|s| s.last().copied())
            .map(|n| Segment {
                timeline: newest_tli,
                number: n,
            });
        // Which timeline holds segment `n` on the way to the newest timeline.
        let ancestry = histories.get(&newest_tli).cloned().unwrap_or_default();
        let tli_for = |n: u64| -> u32 {
            for (tli, switch) in &ancestry {
                if n < switch.0 / seg_size {
                    return *tli;
                }
            }
            newest_tli
        };
        let has = |s: Segment| by_tli.get(&s.timeline).is_some_and(|set| set.contains(&s.number));
        let mut report = NamespaceReport {
            namespace: ns.clone(),
            segments: names.len(),
            newest_timeline: newest_tli,
            newest: newest.map(|s| s.name(seg_size)),
            backups: Vec::new(),
            gaps: Vec::new(),
        };
        let mut gaps = BTreeSet::new();
        for (id, s) in backups {
            let src = s.source.as_ref();
            let get = |k: &str| {
                src.and_then(|v| v.get(k))
                    .and_then(|v| v.as_str())
                    .unwrap_or("")
                    .to_string()
            };
            let (Some(start), Some(stop)) = (
                Segment::parse(&get("start_wal"), seg_size),
                Segment::parse(&get("stop_wal"), seg_size),
            ) else {
                continue;
            };
            let on_path = start.timeline == tli_for(start.number) || start.timeline == newest_tli;
            let end = match (on_path, newest) {
                (true, Some(n)) => n.number.max(stop.number),
                _ => by_tli
                    .get(&start.timeline)
                    .and_then(|s| s.last().copied())
                    .unwrap_or(stop.number)
                    .max(stop.number),
            };
            let mut missing = Vec::new();
            let mut reachable = None;
            let mut consistent = true;
            for n in start.number..=end {
                let seg = Segment {
                    timeline: if on_path {
                        tli_for(n).max(start.timeline)
                    } else {
                        start.timeline
                    },
                    number: n,
                };
                // Like PostgreSQL's recovery, accept the segment from an older timeline of the
                // same ancestry when the expected timeline has none (it reads the newest it finds).
                let present = has(seg)
                    || (on_path
                        && ancestry
                            .iter()
                            .map(|(t, _)| *t)
                            .filter(|t| *t < seg.timeline && *t >= start.timeline)
                            .any(|t| has(Segment { timeline: t, number: n })));
                if present {
                    if missing.is_empty() {
                        reachable = Some(seg.name(seg_size));
                    }
                } else {
                    if n <= stop.number {
                        consistent = false;
                    }
                    gaps.insert(seg.name(seg_size));
                    if missing.len() < 20 {
                        missing.push(seg.name(seg_size));
                    }
                }
            }
            report.backups.push(BackupChain {
                snapshot_id: id.to_hex(),
                start_wal: start.name(seg_size),
                stop_wal: stop.name(seg_size),
                reachable_until: reachable,
                missing,
                consistent,
            });
        }
        report.gaps = gaps.into_iter().take(100).collect();
        out.push(report);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::repo;
    use lifeboat_repo::snapshot_writer::{EntryMeta, SnapshotWriter, WriterOptions};

    fn backup(r: &Repository, start: &str, stop: &str) {
        let mut w = SnapshotWriter::new(r, WriterOptions::new(SOURCE_KIND, vec!["db".into()])).unwrap();
        w.add_file("PG_VERSION", &EntryMeta::file(0o600), &mut &b"15\n"[..])
            .unwrap();
        w.commit(Some(serde_json::json!({
            "wal_namespace": "wal-42", "wal_segment_size": 16u64 << 20,
            "start_wal": start, "stop_wal": stop,
        })))
        .unwrap();
    }

    fn seg(r: &Repository, name: &str) {
        named::put(r, "wal-42", name, &mut &b"x"[..], None).unwrap();
    }

    #[test]
    fn gaps_and_timelines() {
        let r = repo();
        backup(&r, "000000010000000000000002", "000000010000000000000003");
        for n in [
            "000000010000000000000002",
            "000000010000000000000003",
            "000000010000000000000005",
        ] {
            seg(&r, n);
        }
        let rep = check(&r, None).unwrap();
        assert!(!rep[0].ok());
        assert!(rep[0].backups[0].consistent, "its own range is complete");
        assert_eq!(rep[0].backups[0].missing, vec!["000000010000000000000004"]);

        // Timeline 2 branched at segment 4: 1/2, 1/3, then 2/4, 2/5 complete the chain.
        seg(&r, "000000020000000000000004");
        seg(&r, "000000020000000000000005");
        named::put(
            &r,
            "wal-42",
            "00000002.history",
            &mut &b"1\t0/4000000\tno recovery target\n"[..],
            None,
        )
        .unwrap();
        let rep = check(&r, None).unwrap();
        assert!(rep[0].ok(), "{:?}", rep[0]);
        assert_eq!(rep[0].newest.as_deref(), Some("000000020000000000000005"));

        // The backup's own WAL missing: not restorable.
        let r = repo();
        backup(&r, "000000010000000000000002", "000000010000000000000003");
        seg(&r, "000000010000000000000002");
        seg(&r, "000000010000000000000004");
        let rep = check(&r, None).unwrap();
        assert!(!rep[0].backups[0].consistent);
    }
}
