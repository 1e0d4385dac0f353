//! `snapshots`, `ls`, `diff`.

use anyhow::Result;
use lifeboat_repo::format::tree::NodeKind;
use lifeboat_repo::walk;

use super::Ctx;
use crate::cli::{DiffArgs, LsArgs, SnapshotsArgs};
use crate::exit::OK;
use crate::output;

pub fn snapshots(ctx: &Ctx, a: &SnapshotsArgs) -> Result<u8> {
    let repo = ctx.open()?;
    let (all, bad) = repo.list_snapshots_checked()?;
    for e in &bad {
        eprintln!("lifeboat: warning: skipped an unreadable snapshot manifest ({e}); run `lifeboat check`");
    }
    let all: Vec<_> = all
        .into_iter()
        .filter(|(_, s)| a.host.as_ref().is_none_or(|h| *h == s.host))
        .filter(|(_, s)| a.tag.as_ref().is_none_or(|t| s.tags.contains(t)))
        .collect();
    let verified = super::select::verifications(&repo)?;
    let before = a.before.as_deref().map(super::select::parse_time).transpose()?;
    let all: Vec<_> = if a.verified || before.is_some() {
        let keep: Vec<_> = if a.verified {
            super::select::clean_candidates(&all, &verified, before)
        } else {
            all.iter().filter(|(_, s)| before.is_none_or(|b| s.time < b)).collect()
        };
        keep.into_iter().cloned().collect()
    } else {
        all
    };
    // The newest restore test of each snapshot: "yes", "FAILED", or nothing.
    let verified_of = |id: &lifeboat_repo::Id| verified.get(id).map(|(_, att)| att.passed);
    if ctx.global.json {
        let v: Vec<_> = all
            .iter()
            .map(|(id, s)| {
                let mut j = serde_json::to_value(s).expect("serializable");
                j["id"] = serde_json::json!(id);
                j["verified"] = serde_json::json!(verified_of(id));
                if let Some((att_id, att)) = verified.get(id) {
                    j["verification"] =
                        serde_json::json!({ "attestation_id": att_id, "time": att.time, "passed": att.passed });
                }
                j
            })
            .collect();
        output::json(&v);
        return Ok(OK);
    }
    let tz = jiff::tz::TimeZone::system();
    let rows: Vec<Vec<String>> = all
        .iter()
        .map(|(id, s)| {
            vec![
                id.short(),
                // With the zone: during an incident these times are compared with other
                // hosts' logs and `--before`/`--clean-before` arguments.
                s.time.to_zoned(tz.clone()).strftime("%Y-%m-%d %H:%M:%S %Z").to_string(),
                s.host.clone(),
                s.tags.join(","),
                output::bytes(s.summary.bytes_total),
                match verified_of(id) {
                    Some(true) => "yes".into(),
                    Some(false) => "FAILED".into(),
                    None => String::new(),
                },
                format!(
                    "{}{}{}",
                    s.paths.join(" "),
                    physical_note(s),
                    if s.unreadable.is_empty() { "" } else { " (partial)" }
                ),
            ]
        })
        .collect();
    output::table(&["ID", "Time", "Host", "Tags", "Size", "Verified", "Paths"], &rows);
    println!("{} snapshot(s)", rows.len());
    Ok(OK)
}

/// " (local incremental: 12 of 1 300 files read)" for a physical PostgreSQL backup made from the
/// data directory, " (basebackup full)" for one made by pg_basebackup; nothing for other kinds.
fn physical_note(s: &lifeboat_repo::format::snapshot::Snapshot) -> String {
    let Some(src) = s.source.as_ref().filter(|_| s.source_kind == "postgres-physical") else {
        return String::new();
    };
    let (Some(method), Some(kind)) = (
        src.get("method").and_then(|v| v.as_str()),
        src.get("backup_type").and_then(|v| v.as_str()),
    ) else {
        return String::new();
    };
    match (
        src.get("files_read").and_then(|v| v.as_u64()),
        src.get("files_skipped").and_then(|v| v.as_u64()),
    ) {
        (Some(read), Some(skipped)) => format!(" ({method} {kind}: {read} of {} files read)", read + skipped),
        _ => format!(" ({method} {kind})"),
    }
}

fn mode_string(kind: Option<NodeKind>, mode: u32) -> String {
    let t = match kind {
        Some(NodeKind::Dir) => 'd',
        Some(NodeKind::Symlink) => 'l',
        Some(NodeKind::Fifo) => 'p',
        Some(NodeKind::Socket) => 's',
        Some(NodeKind::Chardev) => 'c',
        Some(NodeKind::Blockdev) => 'b',
        _ => '-',
    };
    let mut s = String::from(t);
    let special = [(0o4000, 's', 'S'), (0o2000, 's', 'S'), (0o1000, 't', 'T')];
    for (i, shift) in [6, 3, 0].into_iter().enumerate() {
        let b = (mode >> shift) & 7;
        s.push(if b & 4 != 0 { 'r' } else { '-' });
        s.push(if b & 2 != 0 { 'w' } else { '-' });
        let (bit, with_x, without_x) = special[i];
        s.push(match (mode & bit != 0, b & 1 != 0) {
            (true, true) => with_x,
            (true, false) => without_x,
            (false, true) => 'x',
            (false, false) => '-',
        });
    }
    s
}

pub fn ls(ctx: &Ctx, a: &LsArgs) -> Result<u8> {
    let repo = ctx.open()?;
    let (_, snap) = repo.find_snapshot(&a.snapshot)?;
    let index = repo.load_index_for_reading()?;
    let (root, prefix) = match &a.path {
        Some(p) => (walk::find_dir(&repo, &index, &snap.tree, p)?, p.clone()),
        None => (snap.tree, std::path::PathBuf::from("/")),
    };
    let mut entries = Vec::new();
    let tz = jiff::tz::TimeZone::system();
    walk::walk(&repo, &index, &root, &mut |p, n| {
        let full = prefix.join(p.strip_prefix("/").unwrap_or(p));
        if ctx.global.json {
            entries.push(serde_json::json!({
                "path": full, "type": n.kind, "mode": n.mode, "size": n.size, "mtime_ns": n.mtime_ns,
                "uid": n.uid, "gid": n.gid, "target": n.target,
            }));
        } else if a.long {
            let t = jiff::Timestamp::from_nanosecond(i128::from(n.mtime_ns)).unwrap_or_default();
            println!(
                "{} {:>6} {:>6} {:>12} {} {}{}",
                mode_string(n.kind, n.mode),
                n.uid,
                n.gid,
                n.size,
                t.to_zoned(tz.clone()).strftime("%Y-%m-%d %H:%M:%S"),
                full.display(),
                n.target.as_ref().map(|t| format!(" -> {t}")).unwrap_or_default()
            );
        } else {
            println!("{}", full.display());
        }
        Ok(())
    })?;
    if ctx.global.json {
        output::json(&entries);
    }
    Ok(OK)
}

pub fn diff(ctx: &Ctx, a: &DiffArgs) -> Result<u8> {
    let repo = ctx.open()?;
    let (ida, sa) = repo.find_snapshot(&a.a)?;
    let (idb, sb) = repo.find_snapshot(&a.b)?;
    let index = repo.load_index_for_reading()?;
    let d = walk::diff(&repo, &index, &sa.tree, &sb.tree)?;
    if ctx.global.json {
        output::json(&serde_json::json!({ "from": ida, "to": idb, "changes": d }));
    } else {
        for e in &d {
            println!(
                "{}  {}{}",
                e.change.code(),
                e.path.display(),
                if e.dir { "/" } else { "" }
            );
        }
        let count = |c: walk::Change| d.iter().filter(|e| e.change == c).count();
        println!(
            "{} added, {} removed, {} modified, {} type changed, {} metadata only",
            count(walk::Change::Added),
            count(walk::Change::Removed),
            count(walk::Change::Modified),
            count(walk::Change::TypeChanged),
            count(walk::Change::MetadataChanged)
        );
    }
    Ok(OK)
}
