//! `locations`, `replicate`, `repair --location`, and the replication that follows backup,
//! init, forget and prune when the repository lives in several locations.

use std::sync::Arc;

use anyhow::Result;
use lifeboat_repo::Repository;
use lifeboat_repo::backend::{Backend, FallbackReader};
use lifeboat_repo::locations::{self, ReplicationStatus};
use lifeboat_repo::replicate::{self, Existing, ReplicateOptions, ReplicateProgress, ReplicateReport};

use super::{Ctx, Loc};
use crate::cli::{RepairLocationArgs, ReplicateArgs};
use crate::exit::{DAMAGED, FAILURE, OK, USAGE, fail};
use crate::output;

/// The outcome of copying into one location.
#[derive(serde::Serialize)]
pub struct Replication {
    /// Destination name.
    pub location: String,
    /// What was copied, when the location could be reached.
    pub report: Option<ReplicateReport>,
    /// Why not, or what failed.
    pub error: Option<String>,
}

impl Replication {
    fn ok(&self) -> bool {
        self.error.is_none() && self.report.as_ref().is_some_and(|r| r.ok())
    }
}

/// A source that reads from every reachable location: replication copies the union, so a
/// backup that went to a secondary while the primary was down reaches the primary too.
pub fn union_source(locs: &[Loc]) -> Arc<dyn Backend> {
    let members: Vec<Arc<dyn Backend>> = locs.iter().filter_map(|l| l.backend.clone().ok()).collect();
    if members.len() == 1 {
        return members.into_iter().next().expect("one");
    }
    Arc::new(FallbackReader::new(members))
}

/// Copies into each of `dests` what it lacks, recording the result in the location's own
/// status; an unreachable location is reported, not an error.
pub fn replicate_into(
    repo: &Repository,
    src: &Arc<dyn Backend>,
    dests: &[&Loc],
    existing: Existing,
) -> Vec<Replication> {
    let opts = ReplicateOptions {
        existing,
        ..Default::default()
    };
    let mut out = Vec::new();
    for d in dests {
        let mut r = Replication {
            location: d.name().to_string(),
            report: None,
            error: None,
        };
        let b = match &d.backend {
            Ok(b) => b.clone(),
            Err(e) => {
                r.error = Some(e.clone());
                out.push(r);
                continue;
            }
        };
        if let Err(e) = b.list("keys/") {
            r.error = Some(format!("unreachable: {e}"));
            out.push(r);
            continue;
        }
        match replicate::replicate(repo, src, &b, &opts, &ReplicateProgress::default()) {
            Ok(rep) => {
                let st = ReplicationStatus {
                    time: jiff::Timestamp::now(),
                    from: src.location().to_string(),
                    copied: rep.copied + rep.replaced,
                    bytes: rep.bytes,
                    errors: rep.errors.len(),
                };
                if let Err(e) = locations::update_status(&repo.at(b), |s| s.last_replication = Some(st)) {
                    r.error = Some(format!("copied, but the status record could not be written: {e}"));
                }
                r.report = Some(rep);
            }
            Err(e) => r.error = Some(e.to_string()),
        }
        out.push(r);
    }
    out
}

/// After a write to location `primary`: copies to every other location. Failures are warnings:
/// the data is safe in the primary and the next run catches up.
pub fn after_write(ctx: &Ctx, repo: &Repository, locs: &[Loc], primary: usize) -> Vec<Replication> {
    if locs.len() < 2 {
        return Vec::new();
    }
    let src = repo.backend().clone();
    let dests: Vec<&Loc> = locs
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != primary)
        .map(|(_, l)| l)
        .collect();
    let reps = replicate_into(repo, &src, &dests, Existing::TrustSize);
    if !ctx.global.json {
        print_replications(ctx, &reps);
    }
    reps
}

fn print_replications(ctx: &Ctx, reps: &[Replication]) {
    for r in reps {
        if let Some(e) = &r.error {
            eprintln!(
                "lifeboat: warning: location {} not replicated: {e} (the next backup or `lifeboat replicate` catches up)",
                r.location
            );
        }
        if let Some(rep) = &r.report {
            for e in &rep.errors {
                eprintln!("lifeboat: warning: location {}: {e}", r.location);
            }
            if !ctx.global.quiet {
                println!(
                    "replicated to {}: {} object(s) copied ({}), {} replaced, {} already there, {} deleted{}",
                    r.location,
                    rep.copied,
                    output::bytes(rep.bytes),
                    rep.replaced,
                    rep.present,
                    rep.deleted,
                    if rep.ok() { "" } else { ", WITH ERRORS" }
                );
            }
        }
    }
}

/// `lifeboat replicate [--to NAME] [--from NAME]`.
pub fn replicate(ctx: &Ctx, a: &ReplicateArgs) -> Result<u8> {
    let locs = ctx.open_locations()?;
    if locs.len() < 2 {
        return Err(fail(
            USAGE,
            "replicate needs several locations ([repository] locations = [...] in the config)",
        ));
    }
    for n in a.to.iter().chain(&a.from) {
        ctx.named_location(n)?;
    }
    let repo = ctx.open()?;
    let src = match &a.from {
        Some(n) => locs
            .iter()
            .find(|l| l.name() == n)
            .and_then(|l| l.backend.clone().ok())
            .ok_or_else(|| fail(FAILURE, format!("location {n} cannot be opened")))?,
        None => union_source(&locs),
    };
    let dests: Vec<&Loc> = locs
        .iter()
        .filter(|l| a.to.as_ref().is_none_or(|t| l.name() == t))
        .filter(|l| a.from.as_ref().is_none_or(|f| l.name() != f))
        .collect();
    let reps = replicate_into(&repo, &src, &dests, Existing::TrustSize);
    if ctx.global.json {
        output::json(&reps);
    } else {
        print_replications(ctx, &reps);
    }
    Ok(if reps.iter().all(Replication::ok) { OK } else { FAILURE })
}

/// `lifeboat repair --location NAME [--from OTHER]`: verifies every object at NAME and
/// replaces what is missing or damaged with a verified copy from OTHER (default: any other).
pub fn repair(ctx: &Ctx, a: &RepairLocationArgs) -> Result<u8> {
    let (repo, target) = ctx.open_named(&a.location)?;
    let locs = ctx.open_locations()?;
    let src: Arc<dyn Backend> = match &a.from {
        Some(f) if f == &a.location => return Err(fail(USAGE, "--from must name another location")),
        Some(f) => ctx
            .named_location(f)?
            .backend
            .map_err(|e| fail(FAILURE, format!("location {f}: {e}")))?,
        None => {
            let others: Vec<Loc> = locs.into_iter().filter(|l| l.name() != a.location).collect();
            if others.is_empty() {
                return Err(fail(USAGE, "repair --location needs another location to copy from"));
            }
            union_source(&others)
        }
    };
    let reps = replicate_into(&repo, &src, &[&target], Existing::Verify);
    let r = reps.into_iter().next().expect("one");
    if ctx.global.json {
        output::json(&r);
    } else {
        if let Some(e) = &r.error {
            eprintln!("lifeboat: error: location {}: {e}", r.location);
        }
        if let Some(rep) = &r.report {
            for e in &rep.errors {
                eprintln!("lifeboat: error: {e}");
            }
            if !ctx.global.quiet {
                println!(
                    "repaired {} from {}: {} missing object(s) copied, {} damaged replaced ({}), {} verified intact",
                    r.location,
                    rep.from,
                    rep.copied,
                    rep.replaced,
                    output::bytes(rep.bytes),
                    rep.present
                );
            }
        }
    }
    if r.ok() {
        Ok(OK)
    } else if r.report.is_some() {
        Ok(DAMAGED)
    } else {
        Ok(FAILURE)
    }
}

/// `lifeboat locations [--json]`.
pub fn list(ctx: &Ctx) -> Result<u8> {
    let locs = ctx.open_locations()?;
    let repo = ctx.open()?;
    let listings: Vec<std::result::Result<locations::Listing, String>> = locs
        .iter()
        .map(|l| match &l.backend {
            Ok(b) => locations::listing(b.as_ref()).map_err(|e| e.to_string()),
            Err(e) => Err(e.clone()),
        })
        .collect();
    let reference = listings.iter().find_map(|l| l.as_ref().ok());
    let rows: Vec<_> = locs
        .iter()
        .zip(&listings)
        .map(|(l, own)| {
            let b = l.backend.clone().unwrap_or_else(|_| repo.backend().clone());
            locations::summarize(
                &repo,
                l.name(),
                &l.opts.url,
                &b,
                own.as_ref().map_err(|e| e.clone()),
                reference,
            )
        })
        .collect();
    if ctx.global.json {
        output::json(&rows);
        return Ok(OK);
    }
    let when = |t: Option<jiff::Timestamp>| t.map_or("never".to_string(), |t| t.strftime("%Y-%m-%d %H:%M").to_string());
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|s| {
            vec![
                s.name.clone(),
                if s.reachable { "up".into() } else { "UNREACHABLE".into() },
                s.newest_snapshot.as_ref().map_or("-".into(), |n| {
                    format!("{} {}", &n.id[..8], n.time.strftime("%Y-%m-%d %H:%M"))
                }),
                format!("{}", s.snapshots),
                if s.reachable {
                    format!("{} / {}", s.lag_snapshots, output::bytes(s.lag_bytes))
                } else {
                    "?".into()
                },
                format!("{} / {}", s.objects, output::bytes(s.bytes)),
                when(s.status.last_replication.as_ref().map(|r| r.time)),
                when(s.status.last_check.as_ref().map(|c| c.time)),
                match (s.append_only, s.status.conditional_writes) {
                    (true, _) => "append-only".into(),
                    (false, Some(c)) => format!("{c:?}").to_lowercase(),
                    (false, None) => "not probed".into(),
                },
            ]
        })
        .collect();
    output::table(
        &[
            "Location",
            "State",
            "Newest snapshot",
            "Snapshots",
            "Lag (snaps/bytes)",
            "Objects",
            "Last replication",
            "Last check",
            "Writes",
        ],
        &table,
    );
    for s in &rows {
        if let Some(e) = &s.error {
            eprintln!("lifeboat: location {}: {e}", s.name);
        }
    }
    Ok(OK)
}
