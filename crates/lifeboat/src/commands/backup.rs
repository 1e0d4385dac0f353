//! `backup`.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use anyhow::Result;
use lifeboat_repo::archiver::{self, BackupOptions, BackupProgress, BackupResult};
use lifeboat_repo::{Id, RepoError};

use super::{Ctx, parse_duration};
use crate::cli::BackupArgs;
use crate::config::DbSource;
use crate::exit::{OK, PARTIAL, SOURCE_MISSING, USAGE, fail};
use crate::output::{self, Progress};

/// One snapshot to make.
struct Job {
    label: String,
    paths: Vec<PathBuf>,
    includes: Vec<String>,
    excludes: Vec<String>,
    tags: Vec<String>,
}

impl Job {
    fn from_source(s: &crate::config::FileSource) -> Job {
        Job {
            label: s.name.clone(),
            paths: s.paths.clone(),
            includes: s.include.clone(),
            excludes: s.exclude.clone(),
            tags: s.tags.clone(),
        }
    }
}

/// The database sources named on the command line (or all of them when none is named).
fn db_jobs<'c>(ctx: &'c Ctx, a: &BackupArgs) -> Vec<&'c DbSource> {
    if a.paths.is_empty() {
        return ctx.config.db_sources.iter().collect();
    }
    ctx.config
        .db_sources
        .iter()
        .filter(|s| a.paths.contains(&s.name))
        .collect()
}

fn jobs(ctx: &Ctx, a: &BackupArgs) -> Result<Vec<Job>> {
    let mut jobs = Vec::new();
    let mut loose = Vec::new();
    if a.paths.is_empty() {
        if ctx.config.sources.is_empty() && ctx.config.db_sources.is_empty() {
            return Err(fail(
                USAGE,
                "nothing to back up: give paths, or name sources in the config (--config)",
            ));
        }
        jobs.extend(ctx.config.sources.iter().map(Job::from_source));
    }
    for p in &a.paths {
        if ctx.config.db_sources.iter().any(|s| s.name == *p) {
            continue;
        }
        if let Some(s) = ctx.config.sources.iter().find(|s| s.name == *p) {
            jobs.push(Job::from_source(s));
        } else {
            loose.push(PathBuf::from(p));
        }
    }
    if !loose.is_empty() {
        jobs.push(Job {
            label: "paths".into(),
            paths: loose,
            includes: Vec::new(),
            excludes: Vec::new(),
            tags: Vec::new(),
        });
    }
    for j in &mut jobs {
        j.tags.extend(a.tags.iter().cloned());
        j.includes.extend(a.includes.iter().cloned());
        j.excludes.extend(a.excludes.iter().cloned());
        for p in &j.paths {
            if let Err(e) = std::fs::symlink_metadata(p) {
                return Err(fail(SOURCE_MISSING, format!("source {}: {e}", p.display())));
            }
        }
    }
    Ok(jobs)
}

/// Thread counts for tuning (`LIFEBOAT_READERS`, `LIFEBOAT_SEALERS`); 0 means one per core.
/// The progress bar of a walk by the file archiver (a files backup, or a physical database
/// backup read from its data directory): bytes read against the parent's total.
pub(super) fn progress_bar(ctx: &Ctx, progress: &Arc<BackupProgress>) -> Progress {
    let p = progress.clone();
    Progress::bytes(ctx.progress(), move || {
        (
            p.bytes.load(Ordering::Relaxed),
            p.expected_bytes.load(Ordering::Relaxed),
            format!(
                "{} files, {} stored",
                p.files.load(Ordering::Relaxed),
                output::bytes(p.uploaded.load(Ordering::Relaxed))
            ),
        )
    })
}

fn env_count(name: &str) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(0)
}

pub fn run(ctx: &Ctx, a: &BackupArgs) -> Result<u8> {
    let jobs = jobs(ctx, a)?;
    let db_jobs = db_jobs(ctx, a);
    let interval = parse_duration(&a.checkpoint_interval)?;
    let (repo, locs, primary) = ctx.open_primary()?;
    let parent = match &a.parent {
        Some(p) => Some(repo.find_snapshot(p)?.0),
        None => None,
    };
    let mut results = Vec::new();
    let mut code = OK;
    for j in jobs {
        let opts = BackupOptions {
            paths: j.paths,
            tags: j.tags,
            host: a.host.clone().unwrap_or_else(lifeboat_repo::repository::hostname),
            excludes: j.excludes,
            includes: j.includes,
            parent,
            force_reread: a.force || a.full,
            checkpoint_interval: interval,
            cache_dir: ctx.cache_dir(),
            readers: env_count("LIFEBOAT_READERS"),
            sealers: env_count("LIFEBOAT_SEALERS"),
            ..Default::default()
        };
        let progress = Arc::new(BackupProgress::default());
        let bar = progress_bar(ctx, &progress);
        let r = archiver::backup(&repo, &opts, &progress);
        bar.finish();
        let r = r.map_err(|e| match e {
            RepoError::Io { path, source } if source.kind() == std::io::ErrorKind::NotFound => {
                fail(SOURCE_MISSING, format!("source {}: {source}", path.display()))
            }
            e => e.into(),
        })?;
        if !r.snapshot.unreadable.is_empty() {
            code = PARTIAL;
            for u in &r.snapshot.unreadable {
                eprintln!("lifeboat: warning: unreadable, not in snapshot: {u}");
            }
        }
        if !ctx.global.json && !ctx.global.quiet {
            print_summary(&j.label, &r);
        }
        results.push(r);
    }
    let mut db_results = Vec::new();
    for s in db_jobs {
        let (c, v) = super::db::backup(ctx, &repo, s, a)?;
        code = code.max(c);
        db_results.push(v);
    }
    // The snapshots are committed at the primary; now the other locations (failures are
    // warnings: the next backup or `lifeboat replicate` catches up).
    let replication = if a.no_replicate {
        Vec::new()
    } else {
        super::locations::after_write(ctx, &repo, &locs, primary)
    };
    if ctx.global.json {
        let mut v: Vec<_> = results.iter().map(json_result).collect();
        v.extend(db_results);
        if locs.len() > 1 {
            let r = serde_json::to_value(&replication)?;
            for x in &mut v {
                x["location"] = serde_json::Value::String(locs[primary].name().to_string());
                x["replication"] = r.clone();
            }
        }
        output::json(&if v.len() == 1 {
            v.into_iter().next().expect("one")
        } else {
            serde_json::Value::Array(v)
        });
    }
    Ok(code)
}

fn json_result(r: &BackupResult) -> serde_json::Value {
    serde_json::json!({
        "snapshot_id": r.snapshot_id,
        "time": r.snapshot.time,
        "host": r.snapshot.host,
        "paths": r.snapshot.paths,
        "tags": r.snapshot.tags,
        "parent": r.snapshot.parent,
        "summary": r.snapshot.summary,
        "unreadable": r.snapshot.unreadable,
        "resumed_files": r.resumed_files,
        "checkpoints": r.checkpoints,
    })
}

fn print_summary(label: &str, r: &BackupResult) {
    let s = &r.snapshot.summary;
    let short = |id: &Id| id.short();
    let rate = if s.duration_secs > 0.0 {
        s.bytes_read as f64 / s.duration_secs / 1e6
    } else {
        0.0
    };
    println!(
        "snapshot {} saved ({label}: {})",
        short(&r.snapshot_id),
        r.snapshot.paths.join(", ")
    );
    println!(
        "  files    {} new, {} changed, {} unchanged{}{}",
        s.files_new,
        s.files_changed,
        s.files_unchanged,
        if s.errors > 0 {
            format!(", {} unreadable", s.errors)
        } else {
            String::new()
        },
        if r.resumed_files > 0 {
            format!(" ({} resumed from an interrupted backup)", r.resumed_files)
        } else {
            String::new()
        }
    );
    println!("  dirs     {}", s.dirs);
    println!(
        "  read     {} of {} total",
        output::bytes(s.bytes_read),
        output::bytes(s.bytes_total)
    );
    println!(
        "  added    {} to the repository ({} before compression and encryption)",
        output::bytes(s.bytes_added),
        output::bytes(s.bytes_added_raw)
    );
    if s.bytes_read >= 1 << 20 {
        println!("  time     {} ({rate:.1} MB/s read)", output::secs(s.duration_secs));
    } else {
        println!("  time     {}", output::secs(s.duration_secs));
    }
}
