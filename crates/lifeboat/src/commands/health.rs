//! `health` (run the configured checks; exit code by the worst alert level) and
//! `config validate`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;
use lifeboat_health::{
    CheckSpec, Context, NewestSnapshot, Report, RunOptions, SnapshotAges, Status, WalCopies, WalCopy,
};
use lifeboat_repo::Repository;
use lifeboat_repo::backend::LocationOptions;
use lifeboat_repo::locations as repo_locations;

use super::{Ctx, open_repository, parse_duration};
use crate::cli::HealthArgs;
use crate::exit::{self, FAILURE, OK, USAGE, fail};
use crate::output;
use crate::secrets::PassphraseSources;

/// `lifeboat config validate`: loading the config (done before any command runs) already
/// validated every key, source and check; this reports what was found.
pub fn validate(ctx: &Ctx) -> Result<u8> {
    let Some(path) = &ctx.global.config else {
        return Err(fail(
            USAGE,
            "no config file given: use --config FILE or LIFEBOAT_CONFIG",
        ));
    };
    let c = &ctx.config;
    if ctx.global.json {
        let checks: Vec<_> = c
            .checks
            .iter()
            .map(|s| {
                serde_json::json!({
                    "name": s.name, "kind": s.kind(), "target": s.target(),
                    "depends_on": s.depends_on, "timeout_ms": s.timeout.as_millis() as u64,
                })
            })
            .collect();
        output::json(&serde_json::json!({
            "valid": true,
            "config": path,
            "repository": c.location.is_some(),
            "sources": c.sources.iter().map(|s| &s.name).collect::<Vec<_>>(),
            "db_sources": c.db_sources.iter().map(|s| serde_json::json!({
                "name": s.name,
                "url": lifeboat_pg::ConnInfo::parse(&s.url).map(|u| u.url().to_string()).ok(),
                "mode": db_mode(s),
            })).collect::<Vec<_>>(),
            "checks": checks,
        }));
        return Ok(OK);
    }
    println!(
        "config {}: valid ({} files source(s), {} database source(s), {} check(s))",
        path.display(),
        c.sources.len(),
        c.db_sources.len(),
        c.checks.len()
    );
    for s in &c.db_sources {
        let url = lifeboat_pg::ConnInfo::parse(&s.url).map_or_else(|_| "?".into(), |u| u.url().to_string());
        println!("  source {:<19} {:<10} {url}", s.name, db_mode(s));
    }
    for s in &c.checks {
        let deps = if s.depends_on.is_empty() {
            String::new()
        } else {
            format!(" (depends on {})", s.depends_on.join(", "))
        };
        println!("  check {:<20} {:<10} {}{deps}", s.name, s.kind(), s.target());
    }
    Ok(OK)
}

fn db_mode(s: &crate::config::DbSource) -> &'static str {
    match s.mode {
        crate::config::DbMode::Physical => "physical",
        crate::config::DbMode::Logical => "logical",
    }
}

/// Snapshot times for `backup` checks, from the repository opened once per run (read-only:
/// listing snapshots writes nothing).
struct RepoSnapshots {
    location: String,
    passphrase: PassphraseSources,
    /// Source name → its paths, as a snapshot records them (sorted, deduplicated). Database
    /// sources have no paths: their snapshots carry the source name instead.
    sources: Vec<(String, Vec<String>)>,
    /// Database sources: their snapshots are those `latest` would restore (see
    /// select::belongs_to), so another host's backups under the same name, or a safety
    /// backup, never keep a failing source's freshness check green.
    db_sources: Vec<crate::config::DbSource>,
    repo: Mutex<Option<Repository>>,
}

impl SnapshotAges for RepoSnapshots {
    fn newest(&self, source: Option<&str>) -> Result<Option<NewestSnapshot>, String> {
        let mut guard = self.repo.lock().map_err(|_| "repository lock poisoned".to_string())?;
        if guard.is_none() {
            // Never prompt here: checks run unattended and concurrently.
            if std::env::var_os("LIFEBOAT_PASSWORD").is_none()
                && self.passphrase.file.is_none()
                && self.passphrase.command.is_none()
            {
                return Err("no passphrase to open the repository: set LIFEBOAT_PASSWORD, LIFEBOAT_PASSWORD_FILE or LIFEBOAT_PASSWORD_COMMAND".into());
            }
            let repo = open_repository(&self.location, &self.passphrase).map_err(|e| crate::one_line(&e))?;
            *guard = Some(repo);
        }
        let repo = guard.as_ref().expect("opened above");
        let (snapshots, _unreadable) = repo.list_snapshots_checked().map_err(|e| e.to_string())?;
        let want = match source {
            None => None,
            Some(name) => Some(
                self.sources
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, p)| p.clone())
                    .ok_or_else(|| format!("source {name:?} is not defined in the config"))?,
            ),
        };
        let db = source.and_then(|n| self.db_sources.iter().find(|d| d.name == n));
        let is_of = |s: &lifeboat_repo::format::snapshot::Snapshot| match (source, &want) {
            (Some(_), Some(paths)) if paths.is_empty() => {
                db.is_some_and(|d| super::select::belongs_to(s, d) && super::select::automatic(s))
            }
            (_, Some(paths)) => s.source_kind == "files" && s.paths == *paths,
            _ => true,
        };
        Ok(snapshots
            .iter()
            .filter(|(_, s)| is_of(s))
            .max_by_key(|(_, s)| s.time)
            .map(|(_, s)| NewestSnapshot {
                time: s.time,
                unreadable: s.unreadable.len(),
            }))
    }
}

/// Archived WAL per location for `wal_locations` checks: one listing of `named/` per location
/// (no passphrase: object names are enough), compared with the first reachable location.
struct LocationsWal {
    locations: Vec<LocationOptions>,
}

impl WalCopies for LocationsWal {
    fn copies(&self) -> Result<Vec<WalCopy>, String> {
        let listings: Vec<(String, std::result::Result<_, String>)> = self
            .locations
            .iter()
            .map(|o| {
                let name = if o.name.is_empty() {
                    o.url.clone()
                } else {
                    o.name.clone()
                };
                let l = lifeboat_repo::backend::open_location(o, false)
                    .map_err(|e| e.to_string())
                    .and_then(|b| repo_locations::named_listing(b.as_ref()).map_err(|e| e.to_string()));
                (name, l)
            })
            .collect();
        let Some(reference) = listings.iter().find_map(|(_, l)| l.as_ref().ok()) else {
            let why: Vec<String> = listings
                .iter()
                .filter_map(|(n, l)| l.as_ref().err().map(|e| format!("{n}: {e}")))
                .collect();
            return Err(format!("no location can be listed: {}", why.join("; ")));
        };
        Ok(listings
            .iter()
            .map(|(name, l)| match l {
                Err(e) => WalCopy {
                    location: name.clone(),
                    reachable: Err(e.clone()),
                    missing: 0,
                    missing_since: None,
                    newest: None,
                },
                Ok(own) => {
                    let lag: Vec<_> = repo_locations::named_lag(own, reference)
                        .into_iter()
                        .filter(|l| l.namespace.starts_with("wal-"))
                        .collect();
                    WalCopy {
                        location: name.clone(),
                        reachable: Ok(()),
                        missing: lag.iter().map(|l| l.lag_names).sum(),
                        missing_since: lag.iter().filter_map(|l| l.missing_since).min(),
                        newest: lag.iter().filter_map(|l| l.newest.clone()).max(),
                    }
                }
            })
            .collect())
    }
}

fn checks_to_run(ctx: &Ctx, a: &HealthArgs) -> Result<Vec<CheckSpec>> {
    let all = &ctx.config.checks;
    if all.is_empty() {
        return Err(fail(
            USAGE,
            "no checks configured: add [[checks]] tables to the config file (--config; see examples/lifeboat.toml)",
        ));
    }
    for n in &a.only {
        if !all.iter().any(|c| c.name == *n) {
            let names: Vec<&str> = all.iter().map(|c| c.name.as_str()).collect();
            return Err(fail(
                USAGE,
                format!("--only: no check named {n:?} (configured: {})", names.join(", ")),
            ));
        }
    }
    Ok(all
        .iter()
        .filter(|c| a.only.is_empty() || a.only.contains(&c.name))
        .cloned()
        .collect())
}

fn context(ctx: &Ctx, checks: &[CheckSpec]) -> Context {
    let wants_repo = checks.iter().any(|c| c.kind() == "backup");
    let location = ctx.global.repo.clone().or_else(|| ctx.config.location.clone());
    let snapshots = match (wants_repo, location) {
        (true, Some(location)) => {
            let sources = ctx
                .config
                .sources
                .iter()
                .map(|s| {
                    let mut p: Vec<String> = s.paths.iter().map(|p| p.display().to_string()).collect();
                    p.sort();
                    p.dedup();
                    (s.name.clone(), p)
                })
                .chain(ctx.config.db_sources.iter().map(|d| (d.name.clone(), Vec::new())))
                .collect();
            Some(Arc::new(RepoSnapshots {
                location,
                passphrase: ctx.sources(),
                sources,
                db_sources: ctx.config.db_sources.clone(),
                repo: Mutex::new(None),
            }) as Arc<dyn SnapshotAges>)
        }
        _ => None,
    };
    let wal_copies = match (checks.iter().any(|c| c.kind() == "wal_locations"), ctx.locations()) {
        (true, Ok(locations)) => Some(Arc::new(LocationsWal { locations }) as Arc<dyn WalCopies>),
        _ => None,
    };
    // One history for the whole command: --watch runs share it (error_rate over a check's failures).
    Context {
        snapshots,
        wal_copies,
        history: Some(Arc::new(lifeboat_health::History::new())),
    }
}

fn once(checks: &[CheckSpec], opts: &RunOptions, hctx: &Context) -> Result<Report> {
    lifeboat_health::run_blocking(checks, opts, hctx)
        .map_err(|e| fail(FAILURE, format!("cannot start the check runtime: {e}")))
}

fn latency(ms: Option<f64>) -> String {
    match ms {
        None => "-".into(),
        Some(ms) if ms < 1000.0 => format!("{ms:.0}ms"),
        Some(ms) => output::secs(ms / 1000.0),
    }
}

fn status_word(s: Status) -> &'static str {
    match s {
        Status::Ok => "ok",
        Status::Fail => "FAIL",
        Status::Suppressed => "suppressed",
    }
}

fn print_table(r: &Report) {
    let rows: Vec<Vec<String>> = r
        .checks
        .iter()
        .map(|c| {
            vec![
                c.name.clone(),
                status_word(c.status).into(),
                c.level.map_or("-".into(), |l| l.to_string()),
                latency(c.latency_ms),
                c.detail.clone(),
            ]
        })
        .collect();
    output::table(&["Check", "Status", "Level", "Latency", "Detail"], &rows);
    println!("{}", r.verdict);
}

/// Writes the metrics next to `path` under a temporary name, syncs, then renames: the textfile
/// collector never reads half a file.
fn write_textfile(path: &std::path::Path, r: &Report) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(r.to_prometheus().as_bytes())?;
    tmp.as_file().sync_all()?;
    let f = tmp.persist(path).map_err(|e| e.error)?;
    // Readable by the exporter, like any metrics file.
    use std::os::unix::fs::PermissionsExt;
    f.set_permissions(std::fs::Permissions::from_mode(0o644))?;
    Ok(())
}

/// `lifeboat health`.
pub fn run(ctx: &Ctx, a: &HealthArgs) -> Result<u8> {
    let checks = checks_to_run(ctx, a)?;
    let timeout = parse_duration(&a.timeout)?;
    if timeout.is_zero() {
        return Err(fail(USAGE, "--timeout must be more than 0s"));
    }
    let opts = RunOptions { timeout };
    let hctx = context(ctx, &checks);
    let Some(every) = &a.watch else {
        let r = once(&checks, &opts, &hctx)?;
        if ctx.global.json {
            output::json(&r);
        } else {
            print_table(&r);
        }
        if let Some(t) = &a.textfile {
            write_textfile(t, &r).map_err(|e| fail(FAILURE, format!("--textfile {}: {e}", t.display())))?;
        }
        return Ok(exit::for_health(r.worst_level));
    };
    let every = parse_duration(every)?;
    if every < Duration::from_millis(100) {
        return Err(fail(USAGE, "--watch interval must be at least 100ms"));
    }
    watch(ctx, a, &checks, &opts, &hctx, every)
}

/// Repeats forever (until Ctrl-C), printing only what changed.
fn watch(
    ctx: &Ctx,
    a: &HealthArgs,
    checks: &[CheckSpec],
    opts: &RunOptions,
    hctx: &Context,
    every: Duration,
) -> Result<u8> {
    let mut prev: Option<Report> = None;
    loop {
        let started = std::time::Instant::now();
        let r = once(checks, opts, hctx)?;
        let changes = lifeboat_health::changes(prev.as_ref(), &r);
        if ctx.global.json {
            if !changes.is_empty() {
                let line = serde_json::json!({
                    "schema_version": lifeboat_health::SCHEMA_VERSION,
                    "time": r.started_at,
                    "status": r.status,
                    "worst_level": r.worst_level,
                    "verdict": r.verdict,
                    "changes": changes,
                });
                crate::output::json_line(&line);
            }
        } else if prev.is_none() {
            print_table(&r);
        } else if !changes.is_empty() {
            let when = r.started_at.strftime("%Y-%m-%dT%H:%M:%SZ");
            for c in &changes {
                let from = match (c.from_status, c.from_level) {
                    (None, _) => "new".to_string(),
                    (Some(s), None) => s.as_str().to_string(),
                    (Some(s), Some(l)) => format!("{} ({l})", s.as_str()),
                };
                let to = match c.now.level {
                    None => c.now.status.as_str().to_string(),
                    Some(l) => format!("{} ({l})", c.now.status.as_str()),
                };
                println!("{when}  {}: {from} -> {to}: {}", c.name, c.now.detail);
            }
            println!("{when}  {}", r.verdict);
        }
        if let Some(t) = &a.textfile
            && let Err(e) = write_textfile(t, &r)
        {
            // Keep watching: the next run may write it; say so every time it fails.
            eprintln!("lifeboat: warning: --textfile {}: {e}", t.display());
        }
        prev = Some(r);
        std::thread::sleep(every.saturating_sub(started.elapsed()));
    }
}
