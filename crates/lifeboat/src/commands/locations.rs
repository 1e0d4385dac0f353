//! `locations`, `replicate`, `repair --location`, and the replication that follows backup,
//! init, forget and prune when the repository lives in several locations.

use std::sync::Arc;

use anyhow::Result;
use lifeboat_repo::Repository;
use lifeboat_repo::backend::{Backend, FallbackReader};
use lifeboat_repo::locations::{self, ReplicationStatus};
use lifeboat_repo::object_lock::{self, ExtendReport};
use lifeboat_repo::replicate::{self, Existing, ReplicateOptions, ReplicateProgress, ReplicateReport};

use super::{Ctx, Loc};
use crate::cli::{LocationsArgs, RepairLocationArgs, ReplicateArgs};
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

/// The lock extension of one location (see [`lifeboat_repo::object_lock`]).
#[derive(serde::Serialize)]
pub struct LockExtension {
    /// Location name.
    pub location: String,
    /// What was done, when the location could be reached.
    pub report: Option<ExtendReport>,
    /// Why not.
    pub error: Option<String>,
}

impl LockExtension {
    fn ok(&self) -> bool {
        self.error.is_none() && self.report.as_ref().is_some_and(|r| r.errors.is_empty())
    }
}

/// Raises the Object Lock of what kept snapshots still need, on every location that sets
/// per-object locks. Cheap when nothing is due: one LIST per folder and one small GET.
pub fn extend_locks(repo: &Repository, locs: &[Loc]) -> Vec<LockExtension> {
    let now = jiff::Timestamp::now();
    locs.iter()
        .filter_map(|l| {
            let b = l.backend.as_ref().ok()?;
            if !object_lock::locks_objects(b.as_ref()) {
                return None;
            }
            let (report, error) = match object_lock::extend_locks(&repo.at(b.clone()), now) {
                Ok(r) => (Some(r), None),
                Err(e) => (None, Some(e.to_string())),
            };
            Some(LockExtension {
                location: l.name().to_string(),
                report,
                error,
            })
        })
        .collect()
}

/// Prints warnings (and, unless quiet, one line per location) for lock extensions.
pub fn print_lock_extensions(ctx: &Ctx, exts: &[LockExtension]) {
    for x in exts {
        if let Some(e) = &x.error {
            eprintln!("lifeboat: warning: location {}: locks not extended: {e}", x.location);
        }
        if let Some(r) = &x.report {
            for e in &r.errors {
                eprintln!("lifeboat: warning: location {}: lock not extended: {e}", x.location);
            }
            if !ctx.global.quiet && !ctx.global.json {
                println!(
                    "object lock on {}: {} object(s), {} asked, {} extended{}",
                    x.location,
                    r.objects,
                    r.queried,
                    r.extended,
                    r.earliest_until
                        .map(|t| format!(", earliest lock ends {}", t.strftime("%Y-%m-%d %H:%M")))
                        .unwrap_or_default()
                );
            }
        }
    }
}

/// `lifeboat locations --extend-locks`.
fn extend_command(ctx: &Ctx) -> Result<u8> {
    let locs = ctx.open_locations()?;
    if !locs
        .iter()
        .any(|l| l.backend.as_ref().is_ok_and(|b| object_lock::locks_objects(b.as_ref())))
    {
        return Err(fail(
            USAGE,
            "no location sets per-object locks (object_lock = true on an s3:// location, object_lock_mode not \"bucket-default\")",
        ));
    }
    let repo = ctx.open()?;
    let exts = extend_locks(&repo, &locs);
    if ctx.global.json {
        output::json(&exts);
    } else {
        print_lock_extensions(ctx, &exts);
    }
    Ok(if exts.iter().all(LockExtension::ok) {
        OK
    } else {
        FAILURE
    })
}

/// Warnings about a location's Object Lock: configured but missing on the bucket, or a bucket
/// default retention shorter than the retention policy needs.
fn lock_warnings(l: &Loc, s: &locations::LocationSummary, needed: Option<std::time::Duration>) -> Vec<String> {
    let mut w = Vec::new();
    let configured = l.opts.s3.object_lock;
    let Some(bucket) = &s.bucket_lock else {
        if configured && let Some(o) = &s.object_lock {
            w.push(format!("cannot verify the bucket's Object Lock: {o}"));
        }
        return w;
    };
    if configured && !bucket.enabled {
        w.push(
            "object_lock = true but the bucket has no Object Lock: nothing protects the objects from deletion".into(),
        );
    }
    if !configured && bucket.enabled {
        w.push("the bucket has Object Lock but object_lock is not set: the bucket refuses lifeboat's writes".into());
    }
    let per_object = l.opts.s3.lock_retention.is_some();
    if configured && bucket.enabled && !per_object {
        let days = bucket.default_days.unwrap_or(0);
        if let Some(n) = needed {
            let need_days = n.as_secs().div_ceil(86_400);
            if days < need_days {
                w.push(format!(
                    "the bucket's default retention ({}) is shorter than the retention policy needs ({need_days} d: longest span + prune grace + 1 d), and object_lock_mode = \"bucket-default\" sets no per-object lock",
                    if days == 0 { "none".to_string() } else { format!("{days} d") }
                ));
            }
        }
    }
    w
}

/// One row of `locations --json`: the summary plus the archived WAL's lag.
#[derive(serde::Serialize)]
struct Row<'a> {
    #[serde(flatten)]
    summary: &'a locations::LocationSummary,
    /// Per cluster (`wal-<system id>`): how far this location's archived WAL is behind the
    /// first reachable location's.
    wal: Vec<locations::NamedLag>,
}

/// How long a location has been missing WAL, for people.
pub fn lag_age(l: &locations::NamedLag) -> String {
    match l.missing_since {
        Some(t) => {
            let age = jiff::Timestamp::now().duration_since(t);
            format!("missing since {} ago", output::secs(age.as_secs_f64().max(0.0)))
        }
        None => "-".into(),
    }
}

/// The archived WAL of every location against the first reachable one (one listing of
/// `named/` each). An unreachable location gets an empty list.
pub fn wal_lag(locs: &[Loc]) -> Vec<Vec<locations::NamedLag>> {
    let listings: Vec<Option<_>> = locs
        .iter()
        .map(|l| {
            l.backend
                .as_ref()
                .ok()
                .and_then(|b| locations::named_listing(b.as_ref()).ok())
        })
        .collect();
    let Some(reference) = listings.iter().flatten().next() else {
        return vec![Vec::new(); locs.len()];
    };
    listings
        .iter()
        .map(|own| match own {
            Some(own) => locations::named_lag(own, reference)
                .into_iter()
                .filter(|l| l.namespace.starts_with("wal-"))
                .collect(),
            None => Vec::new(),
        })
        .collect()
}

/// `lifeboat locations [--json] [--extend-locks]`.
pub fn list(ctx: &Ctx, a: &LocationsArgs) -> Result<u8> {
    if a.extend_locks {
        return extend_command(ctx);
    }
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
    let needed = crate::config::lock_span(&ctx.config.retention);
    let rows: Vec<_> = rows
        .into_iter()
        .zip(&locs)
        .map(|(mut s, l)| {
            s.warnings = lock_warnings(l, &s, needed);
            s
        })
        .collect();
    let wal = wal_lag(&locs);
    if ctx.global.json {
        let out: Vec<Row> = rows
            .iter()
            .zip(wal)
            .map(|(summary, wal)| Row { summary, wal })
            .collect();
        output::json(&out);
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
                match (&s.object_lock, &s.lock_retention) {
                    (Some(b), Some(r)) => format!("{b}; sets {r}"),
                    (Some(b), None) => b.clone(),
                    (None, _) => "-".into(),
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
            "Object Lock",
        ],
        &table,
    );
    let wal_rows: Vec<Vec<String>> = rows
        .iter()
        .zip(&wal)
        .flat_map(|(s, w)| {
            w.iter().map(|l| {
                vec![
                    s.name.clone(),
                    l.namespace.clone(),
                    format!("{}", l.names),
                    l.newest.clone().unwrap_or_else(|| "-".into()),
                    if l.lag_names == 0 {
                        "0".into()
                    } else {
                        format!("{} segment(s), {}", l.lag_names, lag_age(l))
                    },
                ]
            })
        })
        .collect();
    if !wal_rows.is_empty() {
        println!();
        output::table(&["Location", "WAL", "Files", "Newest", "Lag"], &wal_rows);
    }
    for s in &rows {
        if let Some(e) = &s.error {
            eprintln!("lifeboat: location {}: {e}", s.name);
        }
        for w in &s.warnings {
            eprintln!("lifeboat: warning: location {}: {w}", s.name);
        }
    }
    Ok(OK)
}
