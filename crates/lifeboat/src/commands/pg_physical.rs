//! `backup` of a PostgreSQL source in physical mode.

use anyhow::Result;
use lifeboat_pg::physical::{self, PhysicalOptions};
use lifeboat_pg::{ConnInfo, Tools};
use lifeboat_repo::Repository;

use super::Ctx;
use crate::cli::BackupArgs;
use crate::config::DbSource;
use crate::exit::{OK, PARTIAL, USAGE, fail};
use crate::output;

/// Backs up `src` (physical); returns the exit code and the JSON result.
pub fn backup(ctx: &Ctx, repo: &Repository, src: &DbSource, a: &BackupArgs) -> Result<(u8, serde_json::Value)> {
    let conn = ConnInfo::parse(&src.url)?;
    let tools = Tools::find()?;
    let mut tags = src.tags.clone();
    tags.extend(a.tags.iter().cloned());
    let opts = PhysicalOptions {
        source_name: src.name.clone(),
        tags,
        host: a.host.clone(),
        ..Default::default()
    };
    if a.force {
        return forensic(ctx, repo, src, &opts);
    }
    let r = physical::backup(repo, &tools, &conn, &opts)?;
    let s = &r.snapshot.summary;
    if !ctx.global.json && !ctx.global.quiet {
        let src_meta = r.snapshot.source.clone().unwrap_or_default();
        println!(
            "snapshot {} saved ({}: physical backup of {})",
            r.snapshot_id.short(),
            src.name,
            conn.url()
        );
        println!(
            "  wal      {} .. {} (timeline {}), archived as {}",
            src_meta["start_lsn"].as_str().unwrap_or("?"),
            src_meta["stop_lsn"].as_str().unwrap_or("?"),
            src_meta["timeline"],
            src_meta["wal_namespace"].as_str().unwrap_or("?")
        );
        println!("  read     {} in {} files", output::bytes(s.bytes_read), s.files_new);
        println!(
            "  added    {} to the repository ({} before compression and encryption)",
            output::bytes(s.bytes_added),
            output::bytes(s.bytes_added_raw)
        );
        println!("  time     {}", output::secs(s.duration_secs));
    }
    Ok((
        OK,
        serde_json::json!({
            "source": src.name,
            "mode": "physical",
            "snapshot_id": r.snapshot_id,
            "time": r.snapshot.time,
            "summary": r.snapshot.summary,
            "postgres": r.snapshot.source,
        }),
    ))
}

/// `backup db --force`: a forensic file copy of the data directory (see
/// lifeboat_pg::physical::forensic_copy).
fn forensic(ctx: &Ctx, repo: &Repository, src: &DbSource, opts: &PhysicalOptions) -> Result<(u8, serde_json::Value)> {
    let dir = src.data_dir.as_ref().ok_or_else(|| {
        fail(
            USAGE,
            format!(
                "sources.{}: backup --force copies the data directory as it is: set data_dir in the config",
                src.name
            ),
        )
    })?;
    let c = physical::forensic_copy(repo, dir, opts)?;
    for u in &c.unreadable {
        eprintln!("lifeboat: warning: unreadable, not in the forensic copy: {u}");
    }
    if !ctx.global.json && !ctx.global.quiet {
        println!(
            "snapshot {} saved ({}: FORENSIC copy of {}, no consistency guarantee; never picked by `latest`)",
            c.result.snapshot_id.short(),
            src.name,
            dir.display()
        );
        println!(
            "  read     {} in {} files, {} unreadable",
            output::bytes(c.result.snapshot.summary.bytes_read),
            c.result.snapshot.summary.files_new,
            c.unreadable.len()
        );
    }
    let code = if c.unreadable.is_empty() { OK } else { PARTIAL };
    Ok((
        code,
        serde_json::json!({
            "source": src.name,
            "mode": "physical",
            "forensic": true,
            "snapshot_id": c.result.snapshot_id,
            "time": c.result.snapshot.time,
            "summary": c.result.snapshot.summary,
            "postgres": c.result.snapshot.source,
        }),
    ))
}
