//! `forget`, `prune`, `repair`.

use anyhow::Result;
use lifeboat_repo::maintenance::{self, PruneOptions};
use lifeboat_repo::retention::{KeepDuration, RetentionPolicy};

use super::{Ctx, parse_duration};
use crate::cli::{ForgetArgs, KeepArgs, PruneArgs, RepairCommand};
use crate::exit::{OK, USAGE, fail};
use crate::output;

fn span(s: &Option<String>) -> Result<Option<KeepDuration>> {
    s.as_ref()
        .map(|v| v.parse::<KeepDuration>().map_err(|e| fail(USAGE, e.to_string())))
        .transpose()
}

fn policy(k: &KeepArgs) -> Result<RetentionPolicy> {
    Ok(RetentionPolicy {
        keep_last: k.keep_last,
        keep_hourly: k.keep_hourly,
        keep_daily: k.keep_daily,
        keep_weekly: k.keep_weekly,
        keep_monthly: k.keep_monthly,
        keep_yearly: k.keep_yearly,
        keep_within: span(&k.keep_within)?,
        keep_within_hourly: span(&k.keep_within_hourly)?,
        keep_within_daily: span(&k.keep_within_daily)?,
        keep_within_weekly: span(&k.keep_within_weekly)?,
        keep_within_monthly: span(&k.keep_within_monthly)?,
        keep_within_yearly: span(&k.keep_within_yearly)?,
        keep_tags: k.keep_tags.clone(),
    })
}

pub fn forget(ctx: &Ctx, a: &ForgetArgs) -> Result<u8> {
    let mut p = policy(&a.keep)?;
    if p == RetentionPolicy::default() {
        p = ctx.config.retention.clone();
    }
    let repo = ctx.open()?;
    let groups = maintenance::forget(&repo, &p, a.dry_run)?;
    // WAL no kept physical backup can use goes with the backups (lifeboat_pg::wal_retention).
    let removed: std::collections::HashSet<&str> = groups
        .iter()
        .flat_map(|g| g.decisions.iter().filter(|d| !d.keep).map(|d| d.id.as_str()))
        .collect();
    let kept: Vec<_> = repo
        .list_snapshots()?
        .into_iter()
        .filter(|(id, _)| !removed.contains(id.to_hex().as_str()))
        .collect();
    let wal = lifeboat_pg::wal_retention::apply(&repo, &kept, a.dry_run)?;
    let mut prune_report = None;
    if a.prune && !a.dry_run {
        let opts = PruneOptions {
            grace: grace(&a.grace, a.unsafe_short_grace)?,
            ..Default::default()
        };
        prune_report = Some(maintenance::prune(&repo, &opts)?);
    }
    if ctx.global.json {
        output::json(
            &serde_json::json!({ "policy": p, "dry_run": a.dry_run, "groups": groups, "wal": wal, "prune": prune_report }),
        );
        return Ok(OK);
    }
    if ctx.global.quiet {
        return Ok(OK);
    }
    for g in &groups {
        println!("host {} paths {}", g.host, g.paths.join(" "));
        let rows: Vec<Vec<String>> = g
            .decisions
            .iter()
            .map(|d| {
                vec![
                    d.id[..8].to_string(),
                    if d.keep { "keep" } else { "remove" }.to_string(),
                    d.reasons.join(", "),
                ]
            })
            .collect();
        output::table(&["ID", "Action", "Reasons"], &rows);
        let removed = g.decisions.iter().filter(|d| !d.keep).count();
        println!(
            "{} kept, {} {}\n",
            g.decisions.len() - removed,
            removed,
            if a.dry_run {
                "would be removed (dry run)"
            } else {
                "removed"
            }
        );
    }
    for w in &wal {
        println!(
            "WAL {}: {} segment(s) older than the oldest kept backup (from {}) {}, {} kept",
            w.namespace,
            w.deleted.len(),
            w.keep_from,
            if a.dry_run { "would be removed" } else { "removed" },
            w.kept
        );
    }
    if let Some(r) = prune_report {
        print_prune(&r);
    }
    Ok(OK)
}

/// Parses `--grace`, refusing less than an hour unless explicitly allowed: a short grace period
/// lets prune delete packs a running backup is about to reference.
fn grace(s: &str, allow_short: bool) -> Result<std::time::Duration> {
    let g = parse_duration(s)?;
    if g < std::time::Duration::from_secs(3600) && !allow_short {
        return Err(fail(
            USAGE,
            format!("--grace {s} is under 1h: add --unsafe-short-grace if no backup can be running"),
        ));
    }
    Ok(g)
}

fn print_prune(r: &maintenance::PruneReport) {
    println!(
        "prune{}: {} pack(s) marked ({}), {} repacked, {} deleted ({} freed), {} restored, {} waiting for the grace period; {} unindexed pack(s) deleted, {} too young",
        if r.dry_run { " (dry run)" } else { "" },
        r.packs_marked,
        output::bytes(r.bytes_marked),
        r.packs_repacked,
        r.packs_deleted,
        output::bytes(r.bytes_freed),
        r.packs_restored,
        r.packs_waiting,
        r.garbage_deleted,
        r.garbage_waiting
    );
}

pub fn prune(ctx: &Ctx, a: &PruneArgs) -> Result<u8> {
    if !(0.0..=1.0).contains(&a.repack_threshold) {
        return Err(fail(USAGE, "--repack-threshold must be between 0 and 1"));
    }
    let opts = PruneOptions {
        grace: grace(&a.grace, a.unsafe_short_grace)?,
        repack_threshold: a.repack_threshold,
        dry_run: a.dry_run,
        ..Default::default()
    };
    let repo = ctx.open()?;
    let r = maintenance::prune(&repo, &opts)?;
    if ctx.global.json {
        output::json(&r);
    } else if !ctx.global.quiet {
        print_prune(&r);
    }
    Ok(OK)
}

pub fn repair(ctx: &Ctx, r: RepairCommand) -> Result<u8> {
    let repo = ctx.open()?;
    match r {
        RepairCommand::Index { force } => {
            let rep = maintenance::repair_index(&repo, force)?;
            if ctx.global.json {
                output::json(&rep);
            } else {
                for u in &rep.unreadable {
                    eprintln!("lifeboat: warning: pack left out: {u}");
                }
                if !ctx.global.quiet {
                    println!(
                        "rebuilt the index from {} pack(s), {} blob(s); replaced {} segment(s)",
                        rep.packs, rep.blobs, rep.segments_replaced
                    );
                }
            }
        }
    }
    Ok(OK)
}
