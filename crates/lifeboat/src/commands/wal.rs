//! `wal push`, `wal fetch`, `wal check`: PostgreSQL's archive_command and restore_command, and
//! the continuity check. See lifeboat_pg::wal for the batching and marker design.

use std::path::{Path, PathBuf};

use anyhow::Result;
use lifeboat_pg::wal::{self, PushError, PushReport, Spool};
use lifeboat_pg::{physical, wal_ahead, wal_check};

use super::{Ctx, parse_duration};
use crate::cli::{QueueFull, WalCheckArgs, WalCommand, WalCompressionArg, WalFetchArgs, WalPushArgs, WalStreamArgs};
use crate::exit::{OK, USAGE, WAL_BACKLOG, WAL_CONFLICT, WAL_GAP, fail};
use crate::output;

pub fn run(ctx: &Ctx, c: WalCommand) -> Result<u8> {
    match c {
        WalCommand::Push(a) => push(ctx, &a),
        WalCommand::Fetch(a) => fetch(ctx, &a),
        WalCommand::Check(a) => check(ctx, &a),
        WalCommand::Stream(a) => stream(ctx, &a),
    }
}

fn stream(ctx: &Ctx, a: &WalStreamArgs) -> Result<u8> {
    let srcs = &ctx.config.db_sources;
    let src = match &a.source {
        Some(n) => srcs.iter().find(|s| s.name == *n).ok_or_else(|| {
            fail(
                USAGE,
                format!("no [sources.{n}] with kind = \"postgres\" in the config"),
            )
        })?,
        None => match srcs.as_slice() {
            [one] => one,
            [] => {
                return Err(fail(
                    USAGE,
                    "wal stream needs a kind = \"postgres\" source in the config (--config)",
                ));
            }
            _ => return Err(fail(USAGE, "several postgres sources: name the one to stream")),
        },
    };
    let conn = lifeboat_pg::ConnInfo::parse(&src.url)?;
    let tools = lifeboat_pg::Tools::find()?;
    let repo = ctx.open()?;
    let base = match &a.spool {
        Some(s) => s.clone(),
        None => {
            let cache = ctx
                .cache_dir()
                .ok_or_else(|| fail(USAGE, "no folder for the WAL spool: set --spool or LIFEBOAT_CACHE_DIR"))?;
            let key = blake3::hash(ctx.location_key()?.as_bytes()).to_hex();
            cache.join("wal").join(format!("{}-stream", &key[..16]))
        }
    };
    let opts = lifeboat_pg::stream::StreamOptions {
        slot: a.slot.clone(),
        interval: parse_duration(&a.interval)?,
        duration: a.duration.as_deref().map(parse_duration).transpose()?,
        spool: base.join("received"),
        compression: compression(ctx, a.compression),
    };
    // Markers for wal push's fast path live where push looks for them.
    let sysid = lifeboat_pg::Client::connect(&tools, &conn)?
        .query_value("SELECT system_identifier::text FROM pg_control_system()")?
        .unwrap_or_default();
    let markers = spool(ctx, &a.spool, &sysid)?;
    if !ctx.global.quiet && !ctx.global.json {
        eprintln!(
            "lifeboat: streaming WAL of {} (slot {}) into the repository every {}",
            conn.url(),
            a.slot,
            a.interval
        );
    }
    let stop = std::sync::atomic::AtomicBool::new(false);
    let r = lifeboat_pg::stream::stream(&repo, &tools, &conn, &opts, &markers, &stop)?;
    if ctx.global.json {
        output::json(&r);
    } else if !ctx.global.quiet {
        println!(
            "stored {} segment(s) and {} partial upload(s), {}",
            r.segments,
            r.partial_uploads,
            output::bytes(r.bytes)
        );
    }
    Ok(OK)
}

/// `--compression` (or its environment variable), else the config's, else auto.
fn compression(ctx: &Ctx, flag: Option<WalCompressionArg>) -> wal::WalCompression {
    match flag {
        Some(WalCompressionArg::Auto) => wal::WalCompression::Auto,
        Some(WalCompressionArg::Zstd) => wal::WalCompression::Zstd,
        Some(WalCompressionArg::Lz4) => wal::WalCompression::Lz4,
        None => ctx.config.wal_compression.unwrap_or_default(),
    }
}

fn data_dir(given: &Option<PathBuf>) -> Result<PathBuf> {
    match given {
        Some(d) => Ok(d.clone()),
        None => std::env::current_dir().map_err(|e| fail(USAGE, format!("current directory: {e}"))),
    }
}

/// The spool of this (repository, cluster) pair: given, or under the cache folder.
fn spool(ctx: &Ctx, given: &Option<PathBuf>, system_id: &str) -> Result<Spool> {
    if let Some(s) = given {
        return Ok(Spool::new(s.join(system_id)));
    }
    let cache = ctx.cache_dir().ok_or_else(|| {
        fail(
            USAGE,
            "no folder for the WAL spool: set --spool / LIFEBOAT_WAL_SPOOL, LIFEBOAT_CACHE_DIR or HOME",
        )
    })?;
    let key = blake3::hash(ctx.location_key()?.as_bytes()).to_hex();
    Ok(Spool::new(
        cache.join("wal").join(format!("{}-{system_id}", &key[..16])),
    ))
}

fn resolve(dir: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() { p.to_path_buf() } else { dir.join(p) }
}

/// Set in the environment of the background pusher that `wal push` starts (internal).
const PUSHER_ENV: &str = "LIFEBOAT_WAL_PUSHER";

/// How long a call waits for the background pusher before storing its segment itself.
const PUSHER_WAIT: std::time::Duration = std::time::Duration::from_secs(600);

fn push(ctx: &Ctx, a: &WalPushArgs) -> Result<u8> {
    let dir = data_dir(&a.data_dir)?;
    let path = resolve(&dir, &a.path);
    let sysid = wal::system_identifier(&dir)?;
    let ns = physical::wal_namespace(&sysid);
    let spool = spool(ctx, &a.spool, &sysid)?;
    // The pusher then answers for its own segment like any synchronous call, so a
    // LIFEBOAT_WAL_PUSHER set by mistake in archive_command's environment cannot acknowledge a
    // segment that is not stored.
    let is_pusher = std::env::var_os(PUSHER_ENV).is_some();
    if is_pusher {
        let _ = run_pusher(ctx, a, &path, &ns, &spool);
    }
    let report = match wal::push_fast_path(&spool, &path)? {
        Some(r) => Ok(r),
        None => match if is_pusher { None } else { via_pusher(a, &path, &spool)? } {
            Some(r) => Ok(r),
            None => match ctx.open() {
                Ok(repo) => wal::push(
                    &repo,
                    &ns,
                    &spool,
                    &path,
                    a.batch.max(1),
                    compression(ctx, a.compression),
                )
                .map_err(|e| match e {
                    PushError::Conflict(c) => fail(WAL_CONFLICT, c.to_string()),
                    PushError::Other(e) => e.into(),
                }),
                Err(e) => Err(e),
            },
        },
    };
    let report = match report {
        Ok(r) => r,
        Err(e) if crate::exit::code_for_any(&e) == WAL_CONFLICT => return Err(e),
        Err(e) => {
            let backlog = wal::backlog(&path);
            if backlog <= a.queue_max {
                return Err(e);
            }
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let why = crate::one_line(&e);
            match a.on_queue_full {
                QueueFull::Fail => {
                    return Err(fail(
                        WAL_BACKLOG,
                        format!(
                            "CRITICAL: cannot archive {name} ({why}); {backlog} segments wait in pg_wal, over the limit of {}: PostgreSQL keeps them and retries, its disk fills until the repository is back",
                            a.queue_max
                        ),
                    ));
                }
                QueueFull::Drop => {
                    let d = spool.dir().join("dropped");
                    let _ = std::fs::create_dir_all(&d);
                    let _ = std::fs::write(d.join(&name), format!("{}\n{why}\n", jiff::Timestamp::now()));
                    eprintln!(
                        "lifeboat: CRITICAL: dropped WAL segment {name} without archiving it ({why}); backlog {backlog} > {}: point-in-time recovery across it is lost until the next base backup",
                        a.queue_max
                    );
                    return Ok(OK);
                }
            }
        }
    };
    if ctx.global.json {
        output::json(&report);
    } else if !ctx.global.quiet && !report.fast_path && report.stored.len() > 1 {
        eprintln!(
            "lifeboat: archived {} ({} more ready segment(s) in the same batch, {}, {})",
            report.name,
            report.stored.len() - 1,
            output::bytes(report.bytes),
            match report.codec {
                Some(lifeboat_repo::named::ChunkCodec::Lz4) => "lz4",
                _ => "zstd",
            }
        );
    }
    Ok(OK)
}

/// Answers the call through the background pusher when there is a backlog (see
/// lifeboat_pg::wal_ahead): starts one if none runs, then waits for this segment's marker.
/// `None`: store the segment in this process (no `--background`, no backlog, `--batch 1`, the
/// pusher failed recently, refused this segment or ended without it).
fn via_pusher(a: &WalPushArgs, path: &Path, spool: &Spool) -> Result<Option<PushReport>> {
    if !a.background || a.batch < 2 || !wal_ahead::is_ready(path) {
        return Ok(None);
    }
    if !wal_ahead::pusher_running(spool) {
        let wal_dir = path.parent().unwrap_or(Path::new("."));
        if wal_ahead::recently_failed(spool) || wal_ahead::unmarked_ready(wal_dir, spool).len() < 2 {
            return Ok(None);
        }
        if let Err(e) = start_pusher(spool) {
            // Not fatal: this call stores its segment itself.
            eprintln!("lifeboat: cannot start the background WAL pusher ({e}); archiving in this process");
            return Ok(None);
        }
    }
    Ok(wal_ahead::wait_for_marker(spool, path, PUSHER_WAIT)?)
}

/// Starts the background pusher: this program again with the same arguments and
/// `LIFEBOAT_WAL_PUSHER=1`, its standard input the locked `pusher.lock` (so the lock lives as
/// long as the pusher), its output appended to `<spool>/pusher.log`, in its own process group
/// (a signal to the archiver's group does not stop it halfway; it stops between commits only
/// by dying, which leaves the repository consistent).
fn start_pusher(spool: &Spool) -> Result<()> {
    use std::os::unix::process::CommandExt;
    let Some(lock) = wal_ahead::try_lock_pusher(spool)? else {
        return Ok(()); // another call just started one
    };
    let log_path = spool.pusher_log();
    if std::fs::metadata(&log_path).is_ok_and(|m| m.len() > 1 << 20) {
        let _ = std::fs::remove_file(&log_path);
    }
    let log = std::fs::OpenOptions::new().create(true).append(true).open(&log_path)?;
    std::process::Command::new(std::env::current_exe()?)
        .args(std::env::args_os().skip(1))
        .env(PUSHER_ENV, "1")
        .stdin(std::process::Stdio::from(lock))
        .stdout(std::process::Stdio::from(log.try_clone()?))
        .stderr(std::process::Stdio::from(log))
        .process_group(0)
        .spawn()?;
    Ok(())
}

/// The background pusher's body: stores every unmarked ready segment. A failure is written to
/// `<spool>/pusher.error` (calls then archive in their own process for a while).
fn run_pusher(ctx: &Ctx, a: &WalPushArgs, path: &Path, ns: &str, spool: &Spool) -> Result<()> {
    let wal_dir = path.parent().unwrap_or(Path::new("."));
    let commit = a.batch.clamp(1, wal_ahead::COMMIT);
    let r = ctx.open().and_then(|repo| {
        Ok(wal_ahead::push_ahead(
            &repo,
            ns,
            spool,
            wal_dir,
            commit,
            compression(ctx, a.compression),
        )?)
    });
    let now = jiff::Timestamp::now();
    match r {
        Ok(rep) => {
            let _ = std::fs::remove_file(spool.pusher_error());
            eprintln!(
                "{now} lifeboat wal pusher: {} segment(s) in {} commit(s), {}{}",
                rep.marked,
                rep.commits,
                output::bytes(rep.bytes),
                if rep.refused.is_empty() {
                    String::new()
                } else {
                    format!("; refused (different content stored): {}", rep.refused.join(", "))
                }
            );
            Ok(())
        }
        Err(e) => {
            let why = crate::one_line(&e);
            let _ = std::fs::write(spool.pusher_error(), format!("{now} {why}\n"));
            eprintln!("{now} lifeboat wal pusher: failed: {why}");
            Err(e)
        }
    }
}

fn fetch(ctx: &Ctx, a: &WalFetchArgs) -> Result<u8> {
    let dir = data_dir(&a.data_dir)?;
    let dest = resolve(&dir, &a.dest);
    let sysid = wal::system_identifier(&dir)?;
    let ns = physical::wal_namespace(&sysid);
    let spool = spool(ctx, &a.spool, &sysid)?;
    let report = match wal::fetch_from_spool(&spool, &a.name, &dest)? {
        Some(r) => Some(r),
        None => {
            let repo = ctx.open()?;
            wal::fetch(&repo, &ns, &spool, &a.name, &dest, a.prefetch)?
        }
    };
    match report {
        Some(r) => {
            if ctx.global.json {
                output::json(&r);
            }
            Ok(OK)
        }
        None => {
            // PostgreSQL asks for files that may not exist (the next timeline's history, the
            // segment after the last one): "not found" is a normal answer, said quietly.
            if !ctx.global.quiet {
                eprintln!("lifeboat: {} is not in the repository ({ns})", a.name);
            }
            Ok(WAL_GAP)
        }
    }
}

fn check(ctx: &Ctx, a: &WalCheckArgs) -> Result<u8> {
    let repo = ctx.open()?;
    let only = a.system_id.as_ref().map(|s| physical::wal_namespace(s));
    let reports = wal_check::check(&repo, only.as_deref())?;
    let ok = reports.iter().all(|r| r.ok());
    if ctx.global.json {
        output::json(&serde_json::json!({"ok": ok, "clusters": reports}));
    } else {
        if reports.is_empty() {
            println!("no archived WAL in the repository");
        }
        for r in &reports {
            println!(
                "{}: {} files, newest {} (timeline {})",
                r.namespace,
                r.segments,
                r.newest.as_deref().unwrap_or("-"),
                r.newest_timeline
            );
            let rows: Vec<Vec<String>> = r
                .backups
                .iter()
                .map(|b| {
                    vec![
                        b.snapshot_id[..8].to_string(),
                        b.start_wal.clone(),
                        b.reachable_until.clone().unwrap_or_else(|| "-".into()),
                        if !b.consistent {
                            "NOT RESTORABLE: WAL of the backup itself missing".into()
                        } else if b.missing.is_empty() {
                            "ok".into()
                        } else {
                            format!("gap at {}", b.missing[0])
                        },
                    ]
                })
                .collect();
            output::table(&["Backup", "From", "Continuous until", "Status"], &rows);
            if !r.gaps.is_empty() {
                println!("missing: {}", r.gaps.join(", "));
            }
        }
    }
    Ok(if ok { OK } else { WAL_GAP })
}
