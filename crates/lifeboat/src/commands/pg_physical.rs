//! `backup` of a PostgreSQL source in physical mode, and restore tests of its snapshots
//! (`verify restore`).

use anyhow::Result;
use lifeboat_pg::physical::{self, PhysicalOptions};
use lifeboat_pg::physical_local::{self, LocalOptions};
use lifeboat_pg::verify::RestoreTestReport;
use lifeboat_pg::verify_physical::{self, ExpectedDatabase, PhysicalTestOptions};
use lifeboat_pg::{ConnInfo, PgError, Tools};
use lifeboat_repo::archiver::BackupProgress;
use lifeboat_repo::format::snapshot::Snapshot;
use lifeboat_repo::{Id, Repository};

use super::{Ctx, select};
use crate::cli::BackupArgs;
use crate::config::{DbSource, PhysicalMethod};
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
    let note = |why: String| {
        if !ctx.global.quiet {
            eprintln!(
                "lifeboat: note: sources.{}: {why}; using pg_basebackup (set physical_method to choose)",
                src.name
            );
        }
    };
    let local_dir = match (src.physical_method, &src.data_dir) {
        (PhysicalMethod::Basebackup, _) | (PhysicalMethod::Auto, None) => None,
        (PhysicalMethod::Local, Some(d)) => Some(d.clone()),
        (PhysicalMethod::Auto, Some(d)) if !physical_local::readable_data_dir(d) => {
            note(format!("data_dir {} is not readable here", d.display()));
            None
        }
        (PhysicalMethod::Auto, Some(d)) => match physical_local::missing_privilege(&tools, &conn)? {
            Some(why) => {
                note(why);
                None
            }
            None => Some(d.clone()),
        },
        (PhysicalMethod::Local, None) => unreachable!("checked when the config is read"),
    };
    let (snapshot_id, snapshot) = match local_dir {
        Some(dir) => {
            let local = LocalOptions {
                data_dir: dir,
                full: a.full,
            };
            let progress = std::sync::Arc::new(BackupProgress::default());
            let bar = super::backup::progress_bar(ctx, &progress);
            let r = physical_local::backup(repo, &tools, &conn, &opts, &local, &progress);
            bar.finish();
            let r = r?;
            (r.result.snapshot_id, r.result.snapshot)
        }
        None => {
            let r = physical::backup(repo, &tools, &conn, &opts)?;
            (r.snapshot_id, r.snapshot)
        }
    };
    let s = &snapshot.summary;
    if !ctx.global.json && !ctx.global.quiet {
        let src_meta = snapshot.source.clone().unwrap_or_default();
        let method = src_meta["method"].as_str().unwrap_or("basebackup");
        println!(
            "snapshot {} saved ({}: physical {} backup of {}, {})",
            snapshot_id.short(),
            src.name,
            src_meta["backup_type"].as_str().unwrap_or("full"),
            conn.url(),
            if method == physical_local::METHOD {
                "read from the data directory"
            } else {
                "pg_basebackup"
            }
        );
        println!(
            "  wal      {} .. {} (timeline {}), archived as {}",
            src_meta["start_lsn"].as_str().unwrap_or("?"),
            src_meta["stop_lsn"].as_str().unwrap_or("?"),
            src_meta["timeline"],
            src_meta["wal_namespace"].as_str().unwrap_or("?")
        );
        if method == physical_local::METHOD {
            println!(
                "  read     {} in {} files; {} unchanged files ({}) taken from snapshot {}",
                output::bytes(s.bytes_read),
                s.files_new + s.files_changed,
                s.files_unchanged,
                output::bytes(s.bytes_total.saturating_sub(s.bytes_read)),
                src_meta["parent"].as_str().map(|p| &p[..p.len().min(8)]).unwrap_or("-")
            );
        } else {
            println!("  read     {} in {} files", output::bytes(s.bytes_read), s.files_new);
        }
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
            "snapshot_id": snapshot_id,
            "time": snapshot.time,
            "summary": snapshot.summary,
            "postgres": snapshot.source,
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

/// The fingerprints of the newest passed restore test of `id` that recorded them, with a
/// description of that test: what a new restore of the same point must equal.
pub(super) fn reference_fingerprints(repo: &Repository, id: &Id) -> Result<Option<(String, Vec<ExpectedDatabase>)>> {
    let mut found = None;
    for (att_id, a) in lifeboat_repo::attestation::list_for(repo, id)? {
        if a.kind != select::RESTORE_TEST || !a.passed {
            continue;
        }
        let Ok(r) = serde_json::from_value::<RestoreTestReport>(a.detail.clone()) else {
            continue;
        };
        if r.databases.is_empty() || r.databases.iter().all(|d| d.fingerprints.is_empty()) {
            continue;
        }
        let dbs = r
            .databases
            .into_iter()
            .map(|d| ExpectedDatabase {
                name: d.name,
                tables: d.fingerprints,
            })
            .collect();
        found = Some((
            format!(
                "restore test of {} (attestation {})",
                a.time.strftime("%Y-%m-%d %H:%M:%S UTC"),
                att_id.short()
            ),
            dbs,
        ));
    }
    Ok(found)
}

/// The user named in a `postgres://user@…` URL.
fn user_of(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let authority = &rest[..rest.find(['/', '?']).unwrap_or(rest.len())];
    let (user, _) = authority.rsplit_once('@')?;
    let user = user.split(':').next().unwrap_or(user);
    (!user.is_empty()).then(|| user.to_string())
}

/// Restore test of a physical snapshot in a throwaway cluster: restore, recover to the
/// backup's end with WAL from this repository, fingerprint every database, run the checks and
/// pg_amcheck (see lifeboat_pg::verify_physical). The passphrase copy restore_command needs and
/// the WAL spool live in the throwaway folder and go with it.
pub(super) fn restore_test(
    ctx: &Ctx,
    repo: &Repository,
    src: &DbSource,
    chosen: &(Id, Snapshot),
) -> Result<RestoreTestReport> {
    let tools = Tools::find()?;
    if src.scratch_url.is_some() {
        eprintln!(
            "lifeboat: note: sources.{}: scratch_url is for logical restore tests; a physical backup is tested in a throwaway cluster",
            src.name
        );
    }
    let url = ConnInfo::parse(&src.url)?;
    let opts = PhysicalTestOptions {
        checks: src.checks.clone(),
        check_database: super::pg_logical::database_of(url.url()).ok(),
        login_role: user_of(url.url()),
        expected: reference_fingerprints(repo, &chosen.0)?,
        ..Default::default()
    };
    let pass = crate::secrets::passphrase(&ctx.sources(), false)?;
    let report = verify_physical::restore_test(repo, &tools, chosen, &opts, |root, run_as| {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let file = root.join("passphrase");
        let spool = root.join("wal-spool");
        std::fs::create_dir(&spool).map_err(|e| PgError::io(&spool, e))?;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&file)
            .map_err(|e| PgError::io(&file, e))?;
        f.write_all(&pass).map_err(|e| PgError::io(&file, e))?;
        if let Some(r) = run_as {
            r.chown(&file)?;
            r.chown(&spool)?;
        }
        super::pg_restore::restore_command_for(ctx, &file, &spool).map_err(|e| PgError::Invalid(crate::one_line(&e)))
    })?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_from_urls() {
        assert_eq!(user_of("postgres://backup@db:5432/app").as_deref(), Some("backup"));
        assert_eq!(user_of("postgres://backup:pw@db/app").as_deref(), Some("backup"));
        assert_eq!(user_of("postgres://db/app?x=a@b"), None);
        assert_eq!(user_of("postgres://db"), None);
    }
}
