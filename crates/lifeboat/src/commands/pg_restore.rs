//! `restore SOURCE [SNAPSHOT] --data-dir DIR`: physical restore of a PostgreSQL cluster, with
//! recovery settings for point-in-time recovery and, with --start, recovery itself.
//!
//! restore_command needs the repository passphrase. It never goes into postgresql.auto.conf:
//! the command names a passphrase *file* (--restore-password-file, or a 0600 copy owned by the
//! server's OS user next to the data directory). That user can then open the repository; for a
//! restore on a shared machine, use a dedicated key (`key add`) and remove it afterwards.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use anyhow::Result;
use lifeboat_pg::restore::{self, PhysicalRestoreOptions, RecoveryTarget};
use lifeboat_pg::wal_names::Lsn;
use lifeboat_pg::{RunAs, Tools};
use lifeboat_repo::restorer::RestoreProgress;

use super::{Ctx, parse_duration};
use crate::cli::RestoreArgs;
use crate::exit::{OK, USAGE, fail};
use crate::output::{self, Progress};

fn target(a: &RestoreArgs) -> Result<RecoveryTarget> {
    if let Some(t) = &a.clean_before {
        if a.target_time.is_some() || a.target_lsn.is_some() || a.target_immediate {
            return Err(fail(
                USAGE,
                "--clean-before sets the recovery target itself (just before TIME): leave out --target-time, --target-lsn and --target-immediate",
            ));
        }
        let ts = super::select::parse_time(t)
            .map_err(|e| fail(USAGE, format!("--clean-before: {}", crate::one_line(&e))))?;
        return Ok(RecoveryTarget::Before(ts));
    }
    if let Some(t) = &a.target_time {
        let ts =
            super::select::parse_time(t).map_err(|e| fail(USAGE, format!("--target-time: {}", crate::one_line(&e))))?;
        return Ok(RecoveryTarget::Time(ts));
    }
    if let Some(l) = &a.target_lsn {
        return Ok(RecoveryTarget::Lsn(Lsn::parse(l)?));
    }
    if a.target_immediate {
        return Ok(RecoveryTarget::Immediate);
    }
    Ok(RecoveryTarget::Latest)
}

/// The passphrase file restore_command reads (see the module docs), and whether lifeboat
/// writes it ([`write_password_file`], only once the restore was not refused).
fn restore_password_file(a: &RestoreArgs, data_dir: &Path) -> Result<(PathBuf, bool)> {
    if let Some(f) = &a.restore_password_file {
        return Ok((std::path::absolute(f)?, false));
    }
    let name = data_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "data".into());
    let file = data_dir
        .parent()
        .unwrap_or(Path::new("/"))
        .join(format!(".lifeboat-{name}.passphrase"));
    Ok((file, true))
}

/// Writes a 0600 copy of the repository passphrase for the server's OS user.
pub(super) fn write_password_file(ctx: &Ctx, file: &Path, run_as: Option<RunAs>) -> Result<()> {
    let pass = crate::secrets::passphrase(&ctx.sources(), false)?;
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let _ = std::fs::remove_file(file);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(file)
            .map_err(|e| fail(USAGE, format!("{}: {e}", file.display())))?;
        f.write_all(&pass)?;
        f.sync_all()?;
    }
    if let Some(r) = run_as {
        r.chown(file)?;
    }
    Ok(())
}

/// The restore_command of a server restoring from this repository: this executable, the
/// repository named fully (the server runs it with its own environment: one location by its URL
/// or absolute path, several through the config file), the passphrase *file* and a WAL spool.
pub(super) fn restore_command_for(ctx: &Ctx, pass_file: &Path, spool: &Path) -> Result<String> {
    let locations = ctx.locations()?;
    let repo_env = match locations.as_slice() {
        [one] if one.url.contains("://") => ("LIFEBOAT_REPO", PathBuf::from(&one.url)),
        [one] => ("LIFEBOAT_REPO", std::path::absolute(&one.url)?),
        _ => {
            let config = ctx.global.config.as_ref().ok_or_else(|| {
                fail(
                    USAGE,
                    "several locations: a physical restore needs the config file (--config)",
                )
            })?;
            ("LIFEBOAT_CONFIG", std::path::absolute(config)?)
        }
    };
    let exe = std::env::current_exe()?;
    Ok(restore::restore_command(
        &exe,
        &[
            (repo_env.0, repo_env.1.as_path()),
            ("LIFEBOAT_PASSWORD_FILE", pass_file),
            ("LIFEBOAT_WAL_SPOOL", spool),
        ],
        &["--quiet".to_string(), "--abort-on-error".to_string()],
    )?)
}

pub fn run(ctx: &Ctx, a: &RestoreArgs) -> Result<u8> {
    let data_dir = std::path::absolute(a.data_dir.as_ref().expect("checked by caller"))?;
    if a.to.is_some() {
        return Err(fail(
            USAGE,
            "restore: --to (logical) and --data-dir (physical) exclude each other",
        ));
    }
    let (source, reference) = match a.items.as_slice() {
        [s, r] => (Some(s.as_str()), r.as_str()),
        [one] if ctx.config.db_sources.iter().any(|s| s.name == *one) => (Some(one.as_str()), "latest"),
        [one] if one == "latest" || (one.len() >= 4 && one.bytes().all(|b| b.is_ascii_hexdigit())) => {
            (None, one.as_str())
        }
        [one] => (Some(one.as_str()), "latest"),
        _ => return Err(fail(USAGE, "restore --data-dir takes SOURCE [SNAPSHOT]")),
    };
    let target = target(a)?;
    let timeout = parse_duration(&a.start_timeout)?;
    let tools = if a.start { Some(Tools::find()?) } else { None };
    let repo = ctx.open()?;
    let chosen = match (&a.clean_before, source) {
        // The newest verified backup consistent before the incident (the same rule as for
        // logical snapshots), then WAL replayed to just before it.
        (Some(t), Some(name)) => {
            let src = ctx.config.db_sources.iter().find(|s| s.name == name).ok_or_else(|| {
                fail(
                    USAGE,
                    format!(
                        "restore --clean-before: no kind = \"postgres\" source named {name:?} in the config (--config)"
                    ),
                )
            })?;
            super::select::choose(&repo, src, reference, Some(t))?
        }
        (Some(_), None) => {
            return Err(fail(
                USAGE,
                "restore --clean-before needs the source: restore SOURCE --clean-before TIME --data-dir DIR",
            ));
        }
        (None, _) => {
            // A configured source is matched by its URL too (see select::belongs_to); without
            // one, several clusters' backups in the repository make `latest` ambiguous.
            let url = source
                .and_then(|n| ctx.config.db_sources.iter().find(|s| s.name == n))
                .map(|s| lifeboat_pg::ConnInfo::parse(&s.url).map(|c| c.url().to_string()))
                .transpose()?;
            restore::choose_snapshot(&repo, source, url.as_deref(), reference, &target)?
        }
    };
    let run_as = RunAs::for_server()?;
    let spool = {
        let name = data_dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "data".into());
        data_dir
            .parent()
            .unwrap_or(Path::new("/"))
            .join(format!(".lifeboat-{name}.spool"))
    };
    let (pass_file, write_pass_file) = restore_password_file(a, &data_dir)?;
    let restore_command = restore_command_for(ctx, &pass_file, &spool)?;
    let opts = PhysicalRestoreOptions {
        data_dir: data_dir.clone(),
        force_overwrite: a.force_overwrite,
        target: target.clone(),
        restore_command,
        run_as,
        no_archive: a.no_archive,
        extra_settings: Vec::new(),
        tablespace_map: a.tablespace_map.clone(),
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
    let started = std::time::Instant::now();
    let r = restore::restore(&repo, &chosen, &opts, &progress);
    bar.finish();
    let r = r?;
    // Only now: a refused restore (a non-empty data directory) leaves neither the spool nor,
    // above all, a passphrase file behind.
    std::fs::create_dir_all(&spool)?;
    if let Some(r) = run_as {
        r.chown(&spool)?;
    }
    if write_pass_file {
        write_password_file(ctx, &pass_file, run_as)?;
    }
    let files_secs = started.elapsed().as_secs_f64();
    let mut start_report = None;
    if let Some(tools) = &tools {
        let mut o = Vec::new();
        if let Some(p) = a.port {
            o.push(format!("-p {p}"));
        }
        if let Some(d) = &a.socket_dir {
            o.push(format!("-k {}", d.display()));
        }
        let log = spool.join("recovery.log");
        let started = restore::start_and_wait(tools, &data_dir, &log, &o.join(" "), run_as, timeout);
        // Recovery is over (or failed): segments prefetched past its end are never asked for.
        if let Ok(rd) = std::fs::read_dir(&spool) {
            for e in rd.flatten().filter(|e| e.path().join("fetched").is_dir()) {
                lifeboat_pg::wal_prefetch::discard(
                    &lifeboat_pg::wal::Spool::new(e.path()),
                    std::time::Duration::from_secs(10),
                );
            }
        }
        start_report = Some(started?);
    }
    if ctx.global.json {
        output::json(&serde_json::json!({
            "snapshot_id": r.snapshot_id,
            "data_dir": r.data_dir,
            "moved_aside": r.moved_aside,
            "files": r.files,
            "files_secs": files_secs,
            "recovery_settings": r.recovery_settings,
            "tablespaces": r.tablespaces,
            "started": start_report,
            "total_secs": started.elapsed().as_secs_f64(),
        }));
    } else if !ctx.global.quiet {
        println!(
            "restored physical backup {} into {} ({} in {} files, {})",
            &r.snapshot_id[..8],
            data_dir.display(),
            output::bytes(r.files.bytes_written),
            r.files.files_restored,
            output::secs(files_secs)
        );
        if let Some(m) = &r.moved_aside {
            println!("  the previous data directory was moved to {}", m.display());
        }
        for t in &r.tablespaces {
            println!(
                "  tablespace {} (oid {}) restored into {}",
                t.name,
                t.oid,
                t.location.display()
            );
            if let Some(m) = &t.moved_aside {
                println!("    what stood there was moved to {}", m.display());
            }
        }
        println!("  recovery: {}", r.recovery_settings[1..].join(", "));
        match &start_report {
            Some(s) => println!(
                "  server started; recovery finished and promoted after {} (log {})",
                output::secs(s.recovery_secs),
                s.log.display()
            ),
            None => println!("  start the server to replay WAL (recovery.signal is in place), or rerun with --start"),
        }
    }
    Ok(OK)
}
