//! `wal push`, `wal fetch`, `wal check`: PostgreSQL's archive_command and restore_command, and
//! the continuity check. See lifeboat_pg::wal for the batching and marker design.

use std::path::{Path, PathBuf};

use anyhow::Result;
use lifeboat_pg::wal::{self, PushError, PushReport, Spool};
use lifeboat_pg::{physical, wal_ahead, wal_check, wal_prefetch};
use lifeboat_repo::Repository;
use lifeboat_repo::mirror::{Journal, Mirrors, Round, Target};

use super::{Ctx, parse_duration};
use crate::cli::{QueueFull, WalCheckArgs, WalCommand, WalCompressionArg, WalFetchArgs, WalPushArgs, WalStreamArgs};
use crate::exit::{OK, USAGE, WAL_BACKLOG, WAL_CONFLICT, WAL_FETCH_ABORT, WAL_GAP, WAL_LOCATIONS, fail};
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
    let interval = parse_duration(&a.interval)?;
    if interval < lifeboat_pg::stream::MIN_INTERVAL {
        return Err(fail(
            USAGE,
            format!(
                "wal stream: --interval {} is too short (minimum {} ms)",
                a.interval,
                lifeboat_pg::stream::MIN_INTERVAL.as_millis()
            ),
        ));
    }
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
    let min = min_locations(ctx, a.min_locations)?;
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
        interval,
        duration: a.duration.as_deref().map(parse_duration).transpose()?,
        spool: base.join("received"),
        compression: compression(ctx, a.compression),
    };
    // Markers for wal push's fast path live where push looks for them.
    let sysid = lifeboat_pg::Client::connect(&tools, &conn)?
        .query_value("SELECT system_identifier::text FROM pg_control_system()")?
        .unwrap_or_default();
    let markers = spool(ctx, &a.spool, &sysid)?;
    let wal = open_for_wal(ctx, &markers, min)?;
    if !ctx.global.quiet && !ctx.global.json {
        eprintln!(
            "lifeboat: streaming WAL of {} (slot {}) into the repository every {}",
            conn.url(),
            a.slot,
            a.interval
        );
    }
    let stop = crate::signals::stop_on_signals();
    let mut hook = StreamRounds {
        wal: &wal,
        error: None,
        target: conn.url().to_string(),
    };
    let r = lifeboat_pg::stream::stream(&wal.repo, &tools, &conn, &opts, &markers, stop, &mut hook)?;
    if let Some(e) = hook.error {
        return Err(e);
    }
    if ctx.global.json {
        output::json(&r);
    } else if !ctx.global.quiet {
        println!(
            "stored {} segment(s) and {} partial upload(s), {}; {} reconnect(s)",
            r.segments,
            r.partial_uploads,
            output::bytes(r.bytes),
            r.reconnects
        );
    }
    Ok(OK)
}

/// `--compression` (or its environment variable), else the config's, else zstd.
fn compression(ctx: &Ctx, flag: Option<WalCompressionArg>) -> wal::WalCompression {
    match flag {
        Some(WalCompressionArg::Auto) => wal::WalCompression::Auto,
        Some(WalCompressionArg::Zstd) => wal::WalCompression::Zstd,
        Some(WalCompressionArg::Lz4) => wal::WalCompression::Lz4,
        None => ctx.config.wal_compression.unwrap_or_default(),
    }
}

/// The repository opened for WAL writes. One location: as before. Several: at the first
/// reachable one, every other location written in the same calls through a
/// [`lifeboat_repo::backend::Tee`], with a journal of what a location missed in
/// `<spool>/lag/` (see lifeboat_repo::mirror).
struct WalRepo {
    repo: Repository,
    mirrors: Option<Mirrors>,
    min: usize,
}

/// How many locations must hold each segment: the flag, else the config, else 1.
fn min_locations(ctx: &Ctx, given: Option<usize>) -> Result<usize> {
    let have = ctx.locations()?.len();
    let m = given.or(ctx.config.wal_min_locations).unwrap_or(1);
    if m == 0 || m > have {
        return Err(fail(
            USAGE,
            format!(
                "--min-locations / wal_min_locations = {m}, but {have} location(s) are configured (use 1..={have})"
            ),
        ));
    }
    Ok(m)
}

/// The lag journal of a spool.
fn journal(spool: &Spool) -> Journal {
    Journal::new(spool.dir().join("lag"))
}

/// A mirror is only ever caught up later, so it gets short retries: a dead location costs a few
/// seconds once per back-off period, not the full `retry_timeout` on every call.
fn mirror_options(o: &lifeboat_repo::backend::LocationOptions) -> lifeboat_repo::backend::LocationOptions {
    let mut o = o.clone();
    o.s3.max_retries = Some(o.s3.max_retries.unwrap_or(2).min(2));
    o.s3.retry_timeout = Some(
        o.s3.retry_timeout
            .unwrap_or(std::time::Duration::from_secs(10))
            .min(std::time::Duration::from_secs(10)),
    );
    o
}

fn open_for_wal(ctx: &Ctx, spool: &Spool, min: usize) -> Result<WalRepo> {
    if ctx.locations()?.len() < 2 {
        return Ok(WalRepo {
            repo: ctx.open()?,
            mirrors: None,
            min,
        });
    }
    let (repo, locs, primary) = ctx.open_primary()?;
    let targets = locs
        .iter()
        .enumerate()
        .map(|(i, l)| Target {
            name: l.name().to_string(),
            backend: if i == primary {
                l.backend.clone()
            } else {
                lifeboat_repo::backend::open_location(&mirror_options(&l.opts), false).map_err(|e| e.to_string())
            },
        })
        .collect();
    let mirrors = Mirrors::new(targets, primary, journal(spool))?;
    mirrors.compare_manifests_with(&repo);
    Ok(WalRepo {
        repo: repo.at(mirrors.backend()),
        mirrors: Some(mirrors),
        min,
    })
}

impl WalRepo {
    /// Catches up lagging locations that are due (all of them when the caller needs more
    /// than one location: a strict setup retries at every call).
    fn begin(&self) {
        if let Some(m) = &self.mirrors {
            m.begin(&self.repo, self.min > 1);
        }
    }

    /// Journals what each location missed, warns about it, and fails (exit 25) when fewer than
    /// `min` locations hold everything. `what` names the WAL in messages; `chatty`: also warn
    /// about a location still waiting for its next attempt (not only about new failures).
    fn end(&self, what: &str, chatty: bool) -> (Option<Round>, Result<()>) {
        let Some(m) = &self.mirrors else { return (None, Ok(())) };
        let round = m.end();
        let r = judge(what, &round, self.min, chatty);
        (Some(round), r)
    }
}

/// Warns about lagging locations and applies `min` to a round.
fn judge(what: &str, round: &Round, min: usize, chatty: bool) -> Result<()> {
    let complete = round.complete();
    let lagging: Vec<String> = round
        .lagging()
        .map(|l| format!("{}: {}", l.name, l.error.as_deref().unwrap_or("lagging")))
        .collect();
    if complete < min {
        return Err(fail(
            WAL_LOCATIONS,
            format!(
                "{what} is stored in {complete} of {} locations, fewer than wal_min_locations = {min} ({}); PostgreSQL retries and the next call catches the location up first",
                round.locations.len(),
                lagging.join("; ")
            ),
        ));
    }
    for l in round.lagging() {
        // A failure in this call is always worth a line in the server log; a location still
        // waiting for its next attempt only when not --quiet.
        if l.failed_now() || chatty {
            eprintln!(
                "lifeboat: warning: location {} lags: {}; {what} is in {complete} of {} locations, the next calls catch it up{}",
                l.name,
                l.error.as_deref().unwrap_or("not written"),
                round.locations.len(),
                match l.pending {
                    0 => String::new(),
                    usize::MAX => " (full copy needed)".into(),
                    n => format!(" ({n} object(s) journalled)"),
                }
            );
        }
    }
    Ok(())
}

/// Without a round of its own (answered by a marker): whether enough locations are complete
/// according to the journal.
fn judge_journal(ctx: &Ctx, what: &str, spool: &Spool, min: usize) -> Result<()> {
    if min < 2 {
        return Ok(());
    }
    let names: Vec<String> = ctx.open_locations()?.iter().map(|l| l.name().to_string()).collect();
    let total = names.len();
    let lagging: Vec<_> = journal(spool)
        .all()
        .into_iter()
        .filter(|r| names.contains(&r.location))
        .collect();
    let complete = total.saturating_sub(lagging.len());
    if complete < min {
        let names: Vec<String> = lagging
            .iter()
            .map(|r| format!("{}: {}", r.location, r.last_error))
            .collect();
        return Err(fail(
            WAL_LOCATIONS,
            format!(
                "{what} is stored in {complete} of {total} locations, fewer than wal_min_locations = {min} ({}); PostgreSQL retries and the next call catches the location up first",
                names.join("; ")
            ),
        ));
    }
    Ok(())
}

/// A push's JSON: the report, plus every location's state with several.
#[derive(serde::Serialize)]
struct PushOut<'a> {
    #[serde(flatten)]
    report: &'a PushReport,
    #[serde(skip_serializing_if = "Option::is_none")]
    locations: Option<&'a Round>,
}

/// `wal stream`'s hook: every sweep is a mirror round.
struct StreamRounds<'a> {
    wal: &'a WalRepo,
    error: Option<anyhow::Error>,
    /// The server (URL without password), for the reconnect line.
    target: String,
}

impl lifeboat_pg::stream::SweepHook for StreamRounds<'_> {
    fn before(&mut self) {
        self.wal.begin();
    }

    fn after(&mut self) -> bool {
        // A sweep a second: only new failures are worth a line.
        let (_, r) = self.wal.end("streamed WAL", false);
        match r {
            Ok(()) => true,
            Err(e) => {
                self.error = Some(e);
                false
            }
        }
    }

    /// One line per lost connection, also with --quiet: a service's log should show each gap.
    fn reconnecting(&mut self, error: &lifeboat_pg::PgError, wait: std::time::Duration) {
        eprintln!(
            "lifeboat: wal stream lost the connection to {} ({}); retrying in {} s",
            self.target,
            reason(error),
            wait.as_secs()
        );
    }
}

/// What pg_receivewal said, without the target (the reconnect line names it already) and
/// without its "pg_receivewal: error: " prefixes.
fn reason(error: &lifeboat_pg::PgError) -> String {
    let said = match error {
        lifeboat_pg::PgError::Connect { message, .. } | lifeboat_pg::PgError::ToolFailed { message, .. } => {
            message.clone()
        }
        e => e.to_string(),
    };
    said.replace("pg_receivewal: ", "").replace("error: ", "")
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
    // A segment that cannot be read under its memory map: exit 6 with one line (and, in the
    // pusher, a pusher.error that starts the back-off), not a bare SIGBUS.
    lifeboat_pg::map_fault::report_faults(
        crate::exit::SOURCE_MISSING,
        is_pusher.then(|| spool.pusher_error()).as_deref(),
    );
    if is_pusher {
        let _ = run_pusher(ctx, a, &path, &ns, &spool);
    }
    let min = min_locations(ctx, a.min_locations)?;
    let what = format!(
        "WAL segment {}",
        path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default()
    );
    // The fast path holds while enough locations are complete (always with the default of 1).
    let fast = match wal::push_fast_path(&spool, &path)? {
        Some(r) if judge_journal(ctx, &what, &spool, min).is_ok() => Some(r),
        _ => None,
    };
    let mut round = None;
    let report = match fast {
        Some(r) => Ok(r),
        None => match if is_pusher { None } else { via_pusher(a, &path, &spool)? } {
            Some(r) => judge_journal(ctx, &what, &spool, min).map(|()| r),
            None => match open_for_wal(ctx, &spool, min) {
                Ok(w) => {
                    w.begin();
                    let r = wal::push(
                        &w.repo,
                        &ns,
                        &spool,
                        &path,
                        a.batch.max(1),
                        compression(ctx, a.compression),
                    )
                    .map_err(|e| match e {
                        PushError::Conflict(c) => fail(WAL_CONFLICT, c.to_string()),
                        PushError::Other(e) => e.into(),
                    });
                    let (rd, judged) = w.end(&what, !ctx.global.quiet);
                    round = rd;
                    r.and_then(|r| judged.map(|()| r))
                }
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
                QueueFull::Drop if crate::exit::code_for_any(&e) == WAL_LOCATIONS => {
                    // Stored, only not in enough locations: acknowledged, never dropped.
                    eprintln!(
                        "lifeboat: CRITICAL: acknowledged {what} below wal_min_locations because {backlog} segments wait (> {}): {why}",
                        a.queue_max
                    );
                    return Ok(OK);
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
        output::json(&PushOut {
            report: &report,
            locations: round.as_ref(),
        });
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
    let Some(lock) = wal_ahead::try_lock_pusher(spool)? else {
        return Ok(()); // another call just started one
    };
    spawn_worker(lock, &spool.pusher_log(), (PUSHER_ENV, "1"))
}

/// Starts this program again with the same arguments and `env` set, as a background worker of
/// the spool: its standard input the worker lock (held as long as it lives, see
/// lifeboat_pg::worker_lock), its output appended to `log` (started afresh past 1 MiB), in its
/// own process group (a signal to PostgreSQL's processes does not stop it halfway).
fn spawn_worker(lock: std::fs::File, log: &Path, env: (&str, &str)) -> Result<()> {
    use std::os::unix::process::CommandExt;
    if std::fs::metadata(log).is_ok_and(|m| m.len() > 1 << 20) {
        let _ = std::fs::remove_file(log);
    }
    let log = std::fs::OpenOptions::new().create(true).append(true).open(log)?;
    std::process::Command::new(std::env::current_exe()?)
        .args(std::env::args_os().skip(1))
        .env(env.0, env.1)
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
    let min = min_locations(ctx, a.min_locations)?;
    let r = open_for_wal(ctx, spool, min).and_then(|w| {
        w.begin();
        let r = wal_ahead::push_ahead(&w.repo, ns, spool, wal_dir, commit, compression(ctx, a.compression));
        // A lagging location is journalled here; each waiting call applies the minimum itself.
        let _ = w.end("WAL pushed ahead", false);
        Ok(r?)
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
    fetch_or_fail(ctx, a).map_err(|e| {
        if a.abort_on_error {
            fail(
                WAL_FETCH_ABORT,
                format!(
                    "{}; exiting {WAL_FETCH_ABORT} so that PostgreSQL stops recovery (--abort-on-error) instead of ending it here",
                    crate::one_line(&e)
                ),
            )
        } else {
            e
        }
    })
}

fn fetch_or_fail(ctx: &Ctx, a: &WalFetchArgs) -> Result<u8> {
    let dir = data_dir(&a.data_dir)?;
    let sysid = wal::system_identifier(&dir)?;
    let ns = physical::wal_namespace(&sysid);
    let spool = spool(ctx, &a.spool, &sysid)?;
    // A prefetcher started by a call below: only with the nonce of the plan that call wrote
    // (see lifeboat_pg::wal_prefetch); it never writes the file PostgreSQL asked for.
    // Its standard input is the lock it was handed; a process with the variable but not the
    // lock (set by mistake in restore_command's environment) is an ordinary call.
    if let Ok(nonce) = std::env::var(PREFETCHER_ENV)
        && wal_prefetch::holds_lock(&spool)
    {
        if let Some(names) = wal_prefetch::plan_for(&spool, &nonce) {
            run_prefetcher(ctx, &ns, &spool, &names);
        }
        return Ok(OK);
    }
    let dest = resolve(&dir, &a.dest);
    let report = match wal_prefetch::take(&spool, &a.name, &dest) {
        Some(r) => Some(r),
        None => match wal_prefetch::wait_for(&spool, &a.name, &dest, PREFETCHER_WAIT) {
            Some(r) => Some(r),
            None => {
                let repo = ctx.open()?;
                wal::fetch(&repo, &ns, &spool, &a.name, &dest)?
            }
        },
    };
    match report {
        Some(mut r) => {
            if a.prefetch > 0 {
                r.prefetch_started = start_prefetcher(&spool, &r, a.prefetch);
            }
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

/// Set (to the plan's nonce) in the environment of the background prefetcher (internal).
const PREFETCHER_ENV: &str = "LIFEBOAT_WAL_PREFETCHER";

/// How long a call waits for the running prefetcher to spool its segment before fetching it
/// itself.
const PREFETCHER_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// After answering `done`, starts a background prefetcher for the window of `window` segments
/// after it when none runs and (for an answer from the spool) at least half of the window is
/// missing: refills come in batches, so the process start and repository opening are paid once
/// per batch. Returns how many segments it was given. Best effort: recovery goes on without.
fn start_prefetcher(spool: &Spool, done: &wal::FetchReport, window: usize) -> usize {
    if wal_prefetch::running(spool) {
        return 0;
    }
    let want = wal_prefetch::wanted(spool, &done.name, done.bytes, window);
    if want.is_empty() || (done.from_spool && want.len() * 2 < window) || wal_prefetch::recently_ended(spool, &want) {
        return 0;
    }
    let nonce = format!(
        "{:x}-{:x}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default()
    );
    let started = (|| -> Result<bool> {
        let Some(lock) = wal_prefetch::claim(spool, &nonce, &want)? else {
            return Ok(false);
        };
        spawn_worker(lock, &wal_prefetch::log_path(spool), (PREFETCHER_ENV, &nonce))?;
        Ok(true)
    })();
    match started {
        Ok(true) => want.len(),
        Ok(false) => 0,
        Err(e) => {
            eprintln!(
                "lifeboat: cannot start the WAL prefetcher ({}); fetching on demand",
                crate::one_line(&e)
            );
            0
        }
    }
}

/// The background prefetcher's body: spools the names of its plan, on both cores. Its messages
/// go to `<spool>/fetched/prefetcher.log`.
fn run_prefetcher(ctx: &Ctx, ns: &str, spool: &Spool, names: &[String]) {
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get()).min(4);
    let started = std::time::Instant::now();
    let r = ctx
        .open()
        .and_then(|repo| Ok(wal_prefetch::prefetch(&repo, ns, spool, names, threads)?));
    if let Ok(Some(end)) = r.as_ref().map(|rep| rep.missing.as_deref()) {
        wal_prefetch::note_end(spool, end);
    }
    let now = jiff::Timestamp::now();
    match r {
        Ok(rep) => eprintln!(
            "{now} lifeboat wal prefetcher: {} of {} segment(s), {} in {:.2}s{}",
            rep.fetched,
            names.len(),
            output::bytes(rep.bytes),
            started.elapsed().as_secs_f64(),
            rep.missing
                .map(|m| format!("; {m} is not archived (yet)"))
                .unwrap_or_default()
        ),
        Err(e) => eprintln!("{now} lifeboat wal prefetcher: failed: {}", crate::one_line(&e)),
    }
}

fn check(ctx: &Ctx, a: &WalCheckArgs) -> Result<u8> {
    let repo = ctx.open()?;
    let only = a.system_id.as_ref().map(|s| physical::wal_namespace(s));
    let settle = parse_duration(&a.settle)?;
    let reports = wal_check::check(&repo, only.as_deref(), settle)?;
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
