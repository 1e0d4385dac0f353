//! `wal check`: is the archived WAL continuous from each kept base backup to the newest segment,
//! following timeline switches through the archived history files?

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

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
    /// Every gap (for the confirming second listing; `gaps` shows the first 100).
    #[serde(skip)]
    all_gaps: BTreeSet<String>,
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
///
/// A push stores a batch of segments and writes their manifests in parallel, so a listing taken
/// while the archiver works can show a segment before the one it follows. A gap found in the
/// first listing is therefore confirmed by a second one `settle` later: a segment counts as
/// missing only when the first listing already missed it (by name, so per timeline) and neither
/// listing holds it. Anything the first listing could not expect yet may still be in flight; the
/// next check judges it. `Duration::ZERO` reports the first listing as it is.
pub fn check(repo: &Repository, only: Option<&str>, settle: Duration) -> Result<Vec<NamespaceReport>> {
    if settle.is_zero() {
        check_with(repo, only, None::<fn()>)
    } else {
        check_with(repo, only, Some(|| std::thread::sleep(settle)))
    }
}

/// [`check`], running `between` (if any) between a first listing with gaps and the second.
fn check_with(repo: &Repository, only: Option<&str>, between: Option<impl FnOnce()>) -> Result<Vec<NamespaceReport>> {
    let snaps = repo.list_snapshots()?;
    // Namespaces holding WAL, and those physical backups need: a backup whose WAL never
    // reached this repository has no namespace at all, and is the worst gap of all.
    let mut spaces: BTreeSet<String> = named::namespaces(repo)?.into_iter().collect();
    spaces.extend(
        snaps
            .iter()
            .filter(|(_, s)| s.source_kind == SOURCE_KIND)
            .filter_map(|(_, s)| s.source.as_ref()?.get("wal_namespace")?.as_str().map(str::to_string)),
    );
    let mut listed = Vec::new();
    for ns in spaces {
        if !ns.starts_with("wal-") || only.is_some_and(|o| o != ns) {
            continue;
        }
        let names: BTreeSet<String> = named::list(repo, &ns)?.into_iter().collect();
        let report = evaluate(repo, &snaps, &ns, &names, None)?;
        listed.push((names, report));
    }
    let Some(between) = between.filter(|_| listed.iter().any(|(_, r)| !r.ok())) else {
        return Ok(listed.into_iter().map(|(_, r)| r).collect());
    };
    between();
    let mut out = Vec::new();
    for (mut names, first) in listed {
        if first.ok() {
            out.push(first);
            continue;
        }
        names.extend(named::list(repo, &first.namespace)?);
        out.push(evaluate(repo, &snaps, &first.namespace, &names, Some(&first.all_gaps))?);
    }
    Ok(out)
}

/// The report for one namespace holding `names`. With `confirmed`, only the segments in it can
/// count as missing (the gaps of an earlier listing); any other absent one counts as in flight.
fn evaluate(
    repo: &Repository,
    snaps: &[(lifeboat_repo::Id, lifeboat_repo::format::snapshot::Snapshot)],
    ns: &str,
    names: &BTreeSet<String>,
    confirmed: Option<&BTreeSet<String>>,
) -> Result<NamespaceReport> {
    let backups: Vec<_> = snaps
        .iter()
        .filter(|(_, s)| {
            s.source_kind == SOURCE_KIND
                && s.source
                    .as_ref()
                    .and_then(|v| v.get("wal_namespace"))
                    .and_then(|v| v.as_str())
                    == Some(ns)
        })
        .collect();
    let seg_size = backups
        .iter()
        .find_map(|(_, s)| s.source.as_ref()?.get("wal_segment_size")?.as_u64())
        .unwrap_or(16 << 20);
    let mut by_tli: BTreeMap<u32, BTreeSet<u64>> = BTreeMap::new();
    let mut histories: BTreeMap<u32, Vec<(u32, Lsn)>> = BTreeMap::new();
    let mut index = None;
    for n in names {
        if let Some(s) = Segment::parse(n, seg_size) {
            by_tli.entry(s.timeline).or_default().insert(s.number);
        } else if let Some(t) = history_timeline(n)
            && let Some(m) = named::read_manifest(repo, ns, n)?
        {
            let index = match &mut index {
                Some(i) => i,
                None => index.insert(repo.load_index_for_reading()?),
            };
            let mut buf = Vec::new();
            named::read_to(repo, index, &m, &mut buf)?;
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
        namespace: ns.to_string(),
        segments: names.len(),
        newest_timeline: newest_tli,
        newest: newest.map(|s| s.name(seg_size)),
        all_gaps: BTreeSet::new(),
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
                        .any(|t| has(Segment { timeline: t, number: n })))
                || confirmed.is_some_and(|c| !c.contains(&seg.name(seg_size)));
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
    report.gaps = gaps.iter().take(100).cloned().collect();
    report.all_gaps = gaps;
    Ok(report)
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
        let rep = check(&r, None, Duration::ZERO).unwrap();
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
        let rep = check(&r, None, Duration::ZERO).unwrap();
        assert!(rep[0].ok(), "{:?}", rep[0]);
        assert_eq!(rep[0].newest.as_deref(), Some("000000020000000000000005"));

        // The backup's own WAL missing: not restorable.
        let r = repo();
        backup(&r, "000000010000000000000002", "000000010000000000000003");
        seg(&r, "000000010000000000000002");
        seg(&r, "000000010000000000000004");
        let rep = check(&r, None, Duration::ZERO).unwrap();
        assert!(!rep[0].backups[0].consistent);
    }

    #[test]
    fn a_gap_counts_only_when_the_second_listing_confirms_it() {
        let r = repo();
        backup(&r, "000000010000000000000002", "000000010000000000000003");
        for n in [2, 3, 5, 7] {
            seg(&r, &format!("0000000100000000000000{n:02X}"));
        }
        // Between the listings 4 arrives (it was in flight), 9 arrives before 8 (both newer
        // than the first listing's newest, so 8 is not judged yet); 6 stays missing.
        let rep = check_with(
            &r,
            None,
            Some(|| {
                seg(&r, "000000010000000000000004");
                seg(&r, "000000010000000000000009");
            }),
        )
        .unwrap();
        assert_eq!(rep[0].gaps, vec!["000000010000000000000006"]);
        assert_eq!(rep[0].backups[0].missing, vec!["000000010000000000000006"]);
        assert_eq!(
            rep[0].backups[0].reachable_until.as_deref(),
            Some("000000010000000000000005")
        );
        assert_eq!(rep[0].newest.as_deref(), Some("000000010000000000000009"));

        // 8 arrives between the listings: ok. A complete first listing needs no second one.
        seg(&r, "000000010000000000000006");
        let rep = check_with(&r, None, Some(|| seg(&r, "000000010000000000000008"))).unwrap();
        assert!(rep[0].ok(), "8 arrived between the listings: {:?}", rep[0]);
        let rep = check_with(&r, None, Some(|| panic!("a complete listing needs no second look"))).unwrap();
        assert!(rep[0].ok());
    }
}
