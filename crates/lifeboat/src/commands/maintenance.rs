//! `forget`, `prune`, `repair`.

use anyhow::Result;
use lifeboat_repo::locations::{self as locs, ConditionalWrites};
use lifeboat_repo::maintenance::{self, PruneOptions};
use lifeboat_repo::replicate::{self, Existing};
use lifeboat_repo::retention::{KeepDuration, RetentionPolicy};
use lifeboat_repo::{RepoError, Repository};

use super::locations::{Replication, after_write, extend_locks, print_lock_extensions, replicate_into, union_source};
use super::{Ctx, Loc, parse_duration};
use crate::cli::{ForgetArgs, KeepArgs, PruneArgs, RepairArgs, RepairCommand, RepairLocationArgs};
use crate::exit::{OK, USAGE, fail};
use crate::output;

/// A repository open for deletion at its first reachable location.
pub(super) struct Maint {
    pub(super) repo: Repository,
    locs: Vec<Loc>,
    primary: usize,
    before: std::collections::BTreeSet<String>,
}

/// Opens for forget/prune: refuses an append-only location before anything else, pulls what
/// other locations have into the primary (so deletions are decided on the full picture), and
/// remembers the object names so the deletions can be recorded and replayed elsewhere.
pub(super) fn open_for_deletion(ctx: &Ctx, what: &str, dry_run: bool) -> Result<Maint> {
    let (repo, locs, primary) = ctx.open_primary()?;
    if !dry_run {
        if let Some(l) = locs
            .iter()
            .find(|l| l.backend.as_ref().is_ok_and(|b| b.is_append_only()))
        {
            return Err(RepoError::AppendOnly {
                location: l.opts.display(),
                what: what.into(),
            }
            .into());
        }
        if locs.len() > 1 {
            let reps = replicate_into(&repo, &union_source(&locs), &[&locs[primary]], Existing::TrustSize);
            if let Some(e) = reps.iter().find_map(|r| r.error.clone()) {
                return Err(fail(
                    1,
                    format!("{what} refused: could not gather the other locations' objects first: {e}"),
                ));
            }
        }
    }
    let before = if locs.len() > 1 {
        replicate::object_names(repo.backend().as_ref())?
    } else {
        Default::default()
    };
    Ok(Maint {
        repo,
        locs,
        primary,
        before,
    })
}

/// Records what was deleted at the primary and replays it on the other locations.
pub(super) fn finish_deletion(ctx: &Ctx, m: &Maint) -> Result<Vec<Replication>> {
    if m.locs.len() < 2 {
        return Ok(Vec::new());
    }
    let after = replicate::object_names(m.repo.backend().as_ref())?;
    let gone: Vec<String> = m.before.difference(&after).cloned().collect();
    replicate::record_deletions(&m.repo, &gone)?;
    Ok(after_write(ctx, &m.repo, &m.locs, m.primary))
}

/// How to take the prune lease at this location: probes put-if-absent once and records the
/// answer in the location's status.
fn lease_settle(ctx: &Ctx, m: &Maint, assume_alone: bool) -> Result<Option<std::time::Duration>> {
    let mode = locs::probe_conditional_writes(m.repo.backend().as_ref())?;
    if m.locs.len() > 1 {
        let _ = locs::update_status(&m.repo, |s| s.conditional_writes = Some(mode));
    }
    match mode {
        ConditionalWrites::Atomic => Ok(None),
        ConditionalWrites::Ignored if assume_alone => {
            if !ctx.global.quiet {
                eprintln!(
                    "lifeboat: warning: {} ignores conditional writes; relying on --assume-no-other-prune",
                    m.repo.backend().location()
                );
            }
            let secs = std::env::var("LIFEBOAT_LEASE_SETTLE_SECS")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(5);
            Ok(Some(std::time::Duration::from_secs(secs)))
        }
        ConditionalWrites::Ignored => Err(fail(
            USAGE,
            format!(
                "{} ignores conditional writes (put-if-absent), so the prune lease cannot exclude another prune; run prune from one host only and add --assume-no-other-prune",
                m.repo.backend().location()
            ),
        )),
    }
}

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
    let g = if a.prune && !a.dry_run {
        Some(grace(&a.grace, a.unsafe_short_grace)?)
    } else {
        None
    };
    let m = open_for_deletion(ctx, "forget", a.dry_run)?;
    let repo = &m.repo;
    let groups = maintenance::forget(repo, &p, a.dry_run)?;
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
    let wal = lifeboat_pg::wal_retention::apply(repo, &kept, a.dry_run)?;
    let mut prune_report = None;
    if let Some(grace) = g {
        let opts = PruneOptions {
            grace,
            lease_settle: lease_settle(ctx, &m, a.assume_no_other_prune)?,
            ..Default::default()
        };
        prune_report = Some(maintenance::prune(repo, &opts)?);
    }
    let replication = if a.dry_run {
        Vec::new()
    } else {
        finish_deletion(ctx, &m)?
    };
    let locks = if prune_report.is_some() {
        extend_locks(repo, &m.locs)
    } else {
        Vec::new()
    };
    print_lock_extensions(ctx, &locks);
    if ctx.global.json {
        output::json(&serde_json::json!({
            "policy": p, "dry_run": a.dry_run, "groups": groups, "wal": wal, "prune": prune_report, "replication": replication,
            "object_lock": locks
        }));
        return Ok(OK);
    }
    if ctx.global.quiet {
        return Ok(OK);
    }
    for g in &groups {
        println!("host {} {} paths {}", g.host, g.kind, g.paths.join(" "));
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
    let mut opts = PruneOptions {
        grace: grace(&a.grace, a.unsafe_short_grace)?,
        repack_threshold: a.repack_threshold,
        dry_run: a.dry_run,
        ..Default::default()
    };
    let m = open_for_deletion(ctx, "prune", a.dry_run)?;
    if !a.dry_run {
        opts.lease_settle = lease_settle(ctx, &m, a.assume_no_other_prune)?;
    }
    let r = maintenance::prune(&m.repo, &opts)?;
    if !ctx.global.json && !ctx.global.quiet {
        print_prune(&r);
    }
    let replication = if a.dry_run {
        Vec::new()
    } else {
        finish_deletion(ctx, &m)?
    };
    let locks = if a.dry_run {
        Vec::new()
    } else {
        extend_locks(&m.repo, &m.locs)
    };
    print_lock_extensions(ctx, &locks);
    if ctx.global.json {
        if replication.is_empty() && locks.is_empty() {
            output::json(&r);
        } else {
            let mut v = serde_json::to_value(&r)?;
            if !replication.is_empty() {
                v["replication"] = serde_json::to_value(&replication)?;
            }
            if !locks.is_empty() {
                v["object_lock"] = serde_json::to_value(&locks)?;
            }
            output::json(&v);
        }
    }
    Ok(OK)
}

pub fn repair(ctx: &Ctx, args: RepairArgs) -> Result<u8> {
    let r = match (args.command, args.location) {
        (Some(c), None) => c,
        (None, Some(location)) => {
            return super::locations::repair(
                ctx,
                &RepairLocationArgs {
                    location,
                    from: args.from,
                },
            );
        }
        _ => {
            return Err(fail(
                USAGE,
                "repair: give a subcommand (`repair index`) or --location NAME",
            ));
        }
    };
    let repo = ctx.open_primary()?.0;
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
