//! `restore`.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use anyhow::Result;
use lifeboat_repo::restorer::{self, Overwrite, RestoreOptions, RestoreProgress};

use super::Ctx;
use crate::cli::{OverwriteArg, RestoreArgs};
use crate::exit::{DAMAGED, DISK_FULL, FAILURE, OK, USAGE, fail};
use crate::output::{self, Progress};

pub fn run(ctx: &Ctx, a: &RestoreArgs) -> Result<u8> {
    if a.data_dir.is_some() {
        return super::pg_restore::run(ctx, a);
    }
    if a.to.is_some() || a.clean_before.is_some() {
        return super::pg_logical::restore(ctx, a);
    }
    if a.target.is_none()
        && let Some(src) = ctx.config.db_sources.iter().find(|s| Some(&s.name) == a.items.first())
    {
        return Err(fail(
            USAGE,
            format!(
                "restore {0}: a database restore needs --to postgres://…/DATABASE (logical) or --data-dir DIR (physical; sources.{0} is {1})",
                src.name,
                if src.mode == crate::config::DbMode::Physical {
                    "physical"
                } else {
                    "logical"
                }
            ),
        ));
    }
    let [snapshot] = a.items.as_slice() else {
        return Err(fail(
            USAGE,
            "restore takes one snapshot (SOURCE SNAPSHOT only for a database restore with --to or --data-dir)",
        ));
    };
    let target = a.target.clone().ok_or_else(|| {
        fail(
            USAGE,
            "restore needs --target DIR (or --to URL / --data-dir DIR for a database)",
        )
    })?;
    let repo = ctx.open()?;
    let (id, snap) = repo.find_snapshot(snapshot)?;
    let index = repo.load_index_for_reading()?;
    let opts = RestoreOptions {
        target: target.clone(),
        includes: a.includes.clone(),
        excludes: Vec::new(),
        overwrite: match a.overwrite {
            OverwriteArg::Never => Overwrite::Never,
            OverwriteArg::IfChanged => Overwrite::IfChanged,
            OverwriteArg::Always => Overwrite::Always,
        },
        threads: 0,
    };
    let progress = Arc::new(RestoreProgress::default());
    let p2 = progress.clone();
    let bar = Progress::bytes(ctx.progress(), move || {
        (
            p2.bytes.load(Ordering::Relaxed),
            p2.total_bytes.load(Ordering::Relaxed),
            format!("{} files", p2.files.load(Ordering::Relaxed)),
        )
    });
    let r = restorer::restore(&repo, &index, &snap.tree, &opts, &progress);
    bar.finish();
    let r = r?;
    let verify = if a.verify {
        Some(restorer::verify_restored(
            &repo,
            &index,
            &snap.tree,
            &target,
            &a.includes,
        )?)
    } else {
        None
    };
    let fallbacks = repo.backend().fallbacks();
    let failed = !r.errors.is_empty() || verify.as_ref().is_some_and(|v| !v.mismatches.is_empty());
    if ctx.global.json {
        output::json(
            &serde_json::json!({ "snapshot_id": id, "target": target, "summary": r, "verify": verify, "fallbacks": fallbacks }),
        );
    } else {
        for e in &r.errors {
            eprintln!("lifeboat: error: {e}");
        }
        for w in &r.warnings {
            eprintln!("lifeboat: warning: {w}");
        }
        if !ctx.global.quiet {
            println!("restored snapshot {} to {}", id.short(), target.display());
            println!(
                "  files    {} restored, {} unchanged and skipped, {} failed",
                r.files_restored,
                r.files_skipped,
                r.errors.len()
            );
            println!("  dirs     {}", r.dirs);
            if !fallbacks.is_empty() {
                println!("  fallback {} read(s) served by another location:", fallbacks.len());
                for f in &fallbacks {
                    println!("           {f}");
                }
            }
            println!("  written  {}", output::bytes(r.bytes_written));
            println!(
                "  time     {} ({:.1} MB/s)",
                output::secs(r.duration_secs),
                if r.duration_secs > 0.0 {
                    r.bytes_written as f64 / r.duration_secs / 1e6
                } else {
                    0.0
                }
            );
            if let Some(v) = &verify {
                for m in &v.mismatches {
                    eprintln!("lifeboat: verify: {m}");
                }
                println!(
                    "  verified {} files, {} re-read: {}",
                    v.files,
                    output::bytes(v.bytes),
                    if v.mismatches.is_empty() {
                        "identical to the snapshot".to_string()
                    } else {
                        format!("{} MISMATCHES", v.mismatches.len())
                    }
                );
            }
        }
    }
    if failed {
        eprintln!(
            "lifeboat: restore incomplete: {} file(s) failed",
            r.errors.len() + verify.as_ref().map_or(0, |v| v.mismatches.len())
        );
        return Ok(if r.disk_full {
            DISK_FULL
        } else if r.damaged || verify.is_some_and(|v| !v.mismatches.is_empty()) {
            DAMAGED
        } else {
            FAILURE
        });
    }
    Ok(OK)
}
