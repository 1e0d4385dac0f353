//! Physical restore: the snapshot's files into a data directory, then the recovery settings
//! (`restore_command = 'lifeboat wal fetch %f %p'`, target, `recovery.signal`) so PostgreSQL
//! replays the archived WAL up to the chosen moment and promotes.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use lifeboat_repo::format::snapshot::Snapshot;
use lifeboat_repo::restorer::{self, Overwrite, RestoreOptions, RestoreProgress, RestoreSummary};
use lifeboat_repo::{Id, RepoError, Repository};

use crate::error::{PgError, Result, last_lines};
use crate::physical::SOURCE_KIND;
use crate::tools::{RunAs, Tools};
use crate::wal_names::Lsn;

/// Where recovery stops.
#[derive(Clone, Debug, PartialEq)]
pub enum RecoveryTarget {
    /// Replay everything archived, then promote.
    Latest,
    /// Stop at this time (inclusive), then promote.
    Time(jiff::Timestamp),
    /// Stop at this LSN (inclusive), then promote.
    Lsn(Lsn),
    /// Stop just before this time (`recovery_target_inclusive = off`: a transaction committed
    /// at exactly that moment is left out), then promote. What a clean restore replays to: the
    /// moment before an incident.
    Before(jiff::Timestamp),
    /// Stop as soon as the backup is consistent (`recovery_target = 'immediate'`), then
    /// promote: the database exactly as the backup captured it, which restore tests fingerprint.
    Immediate,
}

/// True for a snapshot that may be restored as a consistent physical backup.
pub fn is_restorable_physical(s: &Snapshot) -> bool {
    s.source_kind == SOURCE_KIND
        && !s
            .source
            .as_ref()
            .and_then(|v| v.get("forensic"))
            .and_then(|f| f.as_bool())
            .unwrap_or(false)
}

/// When the backup became consistent (its `stop_time`; the snapshot time for snapshots
/// without one): recovery to a moment before this is impossible.
pub fn stop_time(s: &Snapshot) -> jiff::Timestamp {
    s.source
        .as_ref()
        .and_then(|v| v.get("stop_time"))
        .and_then(|t| t.as_str())
        .and_then(|t| t.parse().ok())
        .unwrap_or(s.time)
}

/// Picks the snapshot to restore: `reference` (an id prefix) or `latest`; for `latest` with a
/// time target, the newest backup that finished before that time. `source_name` narrows to one
/// configured source. Forensic copies are never picked by `latest`.
pub fn choose_snapshot(
    repo: &Repository,
    source_name: Option<&str>,
    source_url: Option<&str>,
    reference: &str,
    target: &RecoveryTarget,
) -> Result<(Id, Snapshot)> {
    if reference != "latest" {
        let (id, s) = repo.find_snapshot(reference)?;
        if s.source_kind != SOURCE_KIND {
            return Err(PgError::Invalid(format!(
                "snapshot {} is a {} snapshot, not a physical PostgreSQL backup",
                id.short(),
                s.source_kind
            )));
        }
        return Ok((id, s));
    }
    let all = repo.list_snapshots()?;
    let matching: Vec<(Id, Snapshot)> = all
        .into_iter()
        .rev()
        .filter(|(_, s)| {
            is_restorable_physical(s)
                && source_name.is_none_or(|n| {
                    s.source
                        .as_ref()
                        .and_then(|v| v.get("source_name"))
                        .and_then(|v| v.as_str())
                        == Some(n)
                })
                && source_url.is_none_or(|u| crate::conn::same_database(u, &s.paths, &s.host))
        })
        .collect();
    refuse_ambiguous(&matching, source_name)?;
    let mut candidates = matching.into_iter();
    let chosen = match target {
        RecoveryTarget::Time(t) | RecoveryTarget::Before(t) => candidates.find(|(_, s)| stop_time(s) <= *t),
        RecoveryTarget::Lsn(l) => candidates.find(|(_, s)| {
            s.source
                .as_ref()
                .and_then(|v| v.get("stop_lsn"))
                .and_then(|v| v.as_str())
                .and_then(|v| Lsn::parse(v).ok())
                .is_some_and(|stop| stop <= *l)
        }),
        RecoveryTarget::Latest | RecoveryTarget::Immediate => candidates.next(),
    };
    chosen.ok_or_else(|| {
        RepoError::SnapshotNotFound(match (source_name, target) {
            (Some(n), RecoveryTarget::Latest | RecoveryTarget::Immediate) => {
                format!("latest physical backup of {n}")
            }
            (None, RecoveryTarget::Latest | RecoveryTarget::Immediate) => "latest physical backup".into(),
            _ => "physical backup finished before the recovery target".into(),
        })
        .into()
    })
}

/// `latest` must not pick whichever cluster backed up last: a repository shared by several
/// servers (or two hosts whose sources share a name) would restore another server's data.
/// Refused when the candidates come from more than one cluster (by PostgreSQL's system
/// identifier, which a URL such as `localhost` cannot tell apart) on more than one host; one
/// host's cluster initialised anew (pg_upgrade, initdb) is still one server, its newest backup
/// the one wanted.
fn refuse_ambiguous(candidates: &[(Id, Snapshot)], source_name: Option<&str>) -> Result<()> {
    let mut clusters: Vec<(String, String)> = Vec::new();
    for (_, s) in candidates {
        let sysid = s
            .source
            .as_ref()
            .and_then(|v| v.get("system_identifier"))
            .and_then(|v| v.as_str())
            .unwrap_or("?")
            .to_string();
        if !clusters.iter().any(|(id, _)| *id == sysid) {
            clusters.push((sysid, format!("{} on host {}", s.paths.join(" "), s.host)));
        }
    }
    let mut hosts: Vec<&str> = candidates.iter().map(|(_, s)| s.host.as_str()).collect();
    hosts.sort();
    hosts.dedup();
    if clusters.len() < 2 || hosts.len() < 2 {
        return Ok(());
    }
    let list: Vec<String> = clusters
        .iter()
        .map(|(id, from)| format!("system {id}, {from}"))
        .collect();
    Err(PgError::Invalid(format!(
        "{} physical backups come from {} clusters ({}): name the source configured for one of them (restore SOURCE --data-dir …) or give a snapshot id",
        source_name.map_or_else(|| "the repository's".to_string(), |n| format!("{n:?}'s")),
        clusters.len(),
        list.join("; ")
    )))
}

/// Why a server stopped during recovery: the last FATAL or PANIC line of this start (after the
/// log's last "starting PostgreSQL"), which the shutdown lines following it push out of the
/// log's last few lines, and those last lines.
fn why_stopped(log: &Path) -> (String, String) {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let this_start = text.rfind("starting PostgreSQL").map_or(text.as_str(), |i| &text[i..]);
    // Clients turned away while the server starts or stops log FATAL too: not the cause.
    let client_noise = [
        "the database system is starting up",
        "the database system is shutting down",
        "the database system is not yet accepting connections",
        "the database system is in recovery mode",
    ];
    let lines: Vec<&str> = this_start
        .lines()
        .filter(|l| !client_noise.iter().any(|n| l.contains(n)))
        .collect();
    let fatal = lines
        .iter()
        .rev()
        .find(|l| l.contains("PANIC:"))
        .or_else(|| lines.iter().rev().find(|l| l.contains("FATAL:")))
        .map(|l| l.trim().to_string())
        .unwrap_or_default();
    (fatal, last_lines(&text))
}

/// How to restore.
#[derive(Clone, Debug)]
pub struct PhysicalRestoreOptions {
    /// The data directory to create.
    pub data_dir: PathBuf,
    /// Move an existing non-empty data directory aside (never deleted) instead of refusing.
    pub force_overwrite: bool,
    /// Recovery target.
    pub target: RecoveryTarget,
    /// The `restore_command` to write (see [`restore_command`]).
    pub restore_command: String,
    /// Owner of the restored files (the server's OS user when running as root).
    pub run_as: Option<RunAs>,
    /// Write `archive_mode = off` (test copies must not archive into the real archive).
    pub no_archive: bool,
    /// More `name = value` lines for postgresql.auto.conf (restore tests: their own pg_hba.conf,
    /// no SSL), written after the recovery settings so they win.
    pub extra_settings: Vec<String>,
    /// New folders for tablespaces, by name or oid (`--tablespace-map NAME=DIR`); the others
    /// go back to their original locations (see [`crate::tablespaces`]).
    pub tablespace_map: Vec<(String, PathBuf)>,
}

/// What the restore did.
#[derive(Clone, Debug, serde::Serialize)]
pub struct PhysicalRestoreReport {
    /// Snapshot restored.
    pub snapshot_id: String,
    /// Data directory.
    pub data_dir: PathBuf,
    /// Where a previous data directory was moved (with --force-overwrite).
    pub moved_aside: Option<PathBuf>,
    /// The file restore.
    pub files: RestoreSummary,
    /// The recovery settings written.
    pub recovery_settings: Vec<String>,
    /// Where each tablespace was restored.
    pub tablespaces: Vec<RestoredTablespace>,
}

/// One tablespace of a restore.
#[derive(Clone, Debug, serde::Serialize)]
pub struct RestoredTablespace {
    /// Its name.
    pub name: String,
    /// Its oid.
    pub oid: String,
    /// Where it was when the backup was taken.
    pub original_location: String,
    /// Where it is now.
    pub location: PathBuf,
    /// Where a folder that stood there was moved (with --force-overwrite).
    pub moved_aside: Option<PathBuf>,
}

/// PostgreSQL's own notation of a time, in UTC (it refuses RFC 3339's `T` and `Z` in
/// recovery_target_time).
fn pg_time(t: &jiff::Timestamp) -> String {
    t.strftime("%Y-%m-%d %H:%M:%S%.6f+00").to_string()
}

/// Quotes a value for postgresql.conf.
pub fn conf_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Builds `restore_command`: the lifeboat executable with its repository and passphrase *file*
/// (never the passphrase) in the command's environment. Refuses paths that would need shell
/// quoting beyond double quotes.
pub fn restore_command(exe: &Path, env: &[(&str, &Path)], extra_args: &[String]) -> Result<String> {
    let safe = |p: &str| !p.chars().any(|c| matches!(c, '"' | '$' | '`' | '\\' | '\n' | '\''));
    let mut parts = Vec::new();
    for (k, v) in env {
        let v = v.display().to_string();
        if !safe(&v) {
            return Err(PgError::Invalid(format!(
                "{v}: path contains a quote, $, ` or backslash; choose another path for restore_command"
            )));
        }
        parts.push(format!("{k}=\"{v}\""));
    }
    let exe = exe.display().to_string();
    if !safe(&exe) {
        return Err(PgError::Invalid(format!(
            "{exe}: unusual characters in the lifeboat path"
        )));
    }
    parts.push(format!("\"{exe}\""));
    parts.push("wal fetch".into());
    parts.extend(extra_args.iter().cloned());
    parts.push("%f %p".into());
    Ok(parts.join(" "))
}

/// Restores a physical snapshot into a data directory and writes the recovery settings.
pub fn restore(
    repo: &Repository,
    snapshot: &(Id, Snapshot),
    opts: &PhysicalRestoreOptions,
    progress: &RestoreProgress,
) -> Result<PhysicalRestoreReport> {
    let dir = &opts.data_dir;
    let spaces = crate::tablespaces::plan(
        &crate::tablespaces::of_snapshot(&snapshot.1),
        &opts.tablespace_map,
        &std::path::absolute(dir).map_err(|e| PgError::io(dir, e))?,
    )?;
    let index = repo.load_index_for_reading()?;
    // Every refusal before anything moves.
    let replacing = std::fs::read_dir(dir).is_ok_and(|mut rd| rd.next().is_some());
    if replacing && !opts.force_overwrite {
        return Err(RepoError::RestoreRefused(format!(
            "data directory {} is not empty (use --force-overwrite to move it aside and restore)",
            dir.display()
        ))
        .into());
    }
    if replacing && dir.join("postmaster.pid").exists() {
        return Err(RepoError::RestoreRefused(format!(
            "{} has a postmaster.pid: stop the server first",
            dir.display()
        ))
        .into());
    }
    // A tablespace folder may hold other things (lost+found, another major version's folder):
    // what must not be there is the folder the backup restores (`PG_15_<catalog>`). One that is
    // there is, on the same host, most likely the live tablespace: it is moved aside only with
    // --force-overwrite and only when the (stopped) data directory being replaced links to it.
    let mut trees = Vec::new();
    let mut in_the_way: Vec<(usize, PathBuf)> = Vec::new();
    for (i, (t, to)) in spaces.iter().enumerate() {
        let tree = tablespace_tree(repo, &index, &snapshot.1.tree, &t.oid)?;
        let names: Vec<std::ffi::OsString> = repo
            .read_tree(&index, &tree)?
            .nodes
            .iter()
            .map(|n| n.os_name())
            .collect();
        for name in &names {
            let p = to.join(name);
            if crate::tablespaces::is_free(&p)? {
                continue;
            }
            if !opts.force_overwrite {
                return Err(RepoError::RestoreRefused(format!(
                    "tablespace {} would be restored into {}, which already holds {} (the live tablespace?): give it another folder with --tablespace-map {}=DIR",
                    t.name,
                    to.display(),
                    p.display(),
                    t.name
                ))
                .into());
            }
            let link = dir.join("pg_tblspc").join(&t.oid);
            let ours = replacing
                && std::fs::canonicalize(&link).ok().is_some()
                && std::fs::canonicalize(&link).ok() == std::fs::canonicalize(to).ok();
            if !ours {
                return Err(RepoError::RestoreRefused(format!(
                    "tablespace {}: {} already exists and the data directory being replaced does not link to it, so nothing shows that no server uses it: move it away yourself once you are sure, or give the tablespace another folder with --tablespace-map {}=DIR",
                    t.name,
                    p.display(),
                    t.name
                ))
                .into());
            }
            in_the_way.push((i, p));
        }
        trees.push((tree, names));
    }
    let stamp = jiff::Timestamp::now().strftime("%Y%m%dT%H%M%SZ").to_string();
    // What was moved so far, named in any later error: nothing is deleted, but the user must
    // know where it went.
    let mut moved: Vec<(PathBuf, PathBuf)> = Vec::new();
    let said = |moved: &[(PathBuf, PathBuf)], e: PgError| -> PgError {
        if moved.is_empty() {
            return e;
        }
        let list: Vec<String> = moved
            .iter()
            .map(|(a, b)| format!("{} -> {}", a.display(), b.display()))
            .collect();
        PgError::Invalid(format!("{e} (already moved aside: {})", list.join(", ")))
    };
    let mut restored_spaces: Vec<RestoredTablespace> = spaces
        .iter()
        .map(|(t, to)| RestoredTablespace {
            name: t.name.clone(),
            oid: t.oid.clone(),
            original_location: t.location.clone(),
            location: to.clone(),
            moved_aside: None,
        })
        .collect();
    for (i, p) in &in_the_way {
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        // A sibling that PostgreSQL ignores (it is not named PG_<major>_…), on the same file
        // system (a tablespace folder is often a mount point, which cannot be renamed).
        let aside = p.with_file_name(format!("lifeboat-old-{stamp}-{name}"));
        std::fs::rename(p, &aside).map_err(|e| said(&moved, PgError::io(p, e)))?;
        restored_spaces[*i].moved_aside = Some(aside.clone());
        moved.push((p.clone(), aside));
    }
    let mut moved_aside = None;
    if replacing {
        let aside = PathBuf::from(format!("{}.lifeboat-old-{stamp}", dir.display()));
        std::fs::rename(dir, &aside).map_err(|e| said(&moved, PgError::io(dir, e)))?;
        moved.push((dir.clone(), aside.clone()));
        moved_aside = Some(aside);
    }
    let result = (|| -> Result<RestoreSummary> {
        std::fs::create_dir_all(dir).map_err(|e| PgError::io(dir, e))?;
        set_mode(dir, 0o700)?;
        let mut excludes: Vec<String> = spaces.iter().map(|(t, _)| t.snapshot_path()).collect();
        if !spaces.is_empty() {
            // The server's map names the original locations: never left in place, even by a
            // restore that fails half way (a start with backup_label would link them).
            excludes.push("/tablespace_map".into());
        }
        let ropts = RestoreOptions {
            target: dir.clone(),
            includes: Vec::new(),
            excludes,
            overwrite: Overwrite::Never,
            threads: 0,
        };
        let mut files = restorer::restore(repo, &index, &snapshot.1.tree, &ropts, progress)?;
        check_files(dir, &files)?;
        if !spaces.is_empty() {
            // PostgreSQL links pg_tblspc/<oid> to these folders when recovery starts.
            write_synced(
                &dir.join("tablespace_map"),
                crate::tablespaces::map_file(&spaces).as_bytes(),
            )?;
        }
        for ((_, to), (tree, names)) in spaces.iter().zip(&trees) {
            let existed = to.exists();
            let o = RestoreOptions {
                target: to.clone(),
                excludes: Vec::new(),
                overwrite: Overwrite::IfChanged,
                ..ropts.clone()
            };
            let f = restorer::restore(repo, &index, tree, &o, progress)?;
            check_files(to, &f)?;
            if !existed {
                set_mode(to, 0o700)?;
            }
            files.files_restored += f.files_restored;
            files.dirs += f.dirs;
            files.special += f.special;
            files.bytes_written += f.bytes_written;
            files.warnings.extend(f.warnings);
            sync_filesystem(to)?;
            if let Some(r) = opts.run_as {
                // What was restored, and the folder if this restore made it; never what else
                // the folder holds (lost+found of a mount point, another version's folder).
                for name in names {
                    r.chown_tree(&to.join(name))?;
                }
                if !existed {
                    r.chown(to)?;
                }
            }
        }
        Ok(files)
    })();
    let files = result.map_err(|e| said(&moved, e))?;
    for sub in ["pg_wal", "pg_wal/archive_status"] {
        let p = dir.join(sub);
        std::fs::create_dir_all(&p).map_err(|e| PgError::io(&p, e))?;
    }
    sync_filesystem(dir)?;
    let mut settings = vec![
        format!("restore_command = {}", conf_quote(&opts.restore_command)),
        "recovery_target_timeline = 'latest'".to_string(),
    ];
    if opts.no_archive {
        settings.push("archive_mode = 'off'".into());
    }
    match &opts.target {
        RecoveryTarget::Latest => {}
        RecoveryTarget::Time(t) => {
            settings.push(format!("recovery_target_time = {}", conf_quote(&pg_time(t))));
            settings.push("recovery_target_action = 'promote'".into());
        }
        RecoveryTarget::Lsn(l) => {
            settings.push(format!("recovery_target_lsn = {}", conf_quote(&l.to_string())));
            settings.push("recovery_target_action = 'promote'".into());
        }
        RecoveryTarget::Before(t) => {
            settings.push(format!("recovery_target_time = {}", conf_quote(&pg_time(t))));
            settings.push("recovery_target_inclusive = 'off'".into());
            settings.push("recovery_target_action = 'promote'".into());
        }
        RecoveryTarget::Immediate => {
            settings.push("recovery_target = 'immediate'".into());
            settings.push("recovery_target_action = 'promote'".into());
        }
    }
    settings.extend(opts.extra_settings.iter().cloned());
    let auto = dir.join("postgresql.auto.conf");
    let mut text = std::fs::read_to_string(&auto).unwrap_or_default();
    text.push_str(&format!(
        "\n# Added by lifeboat restore of snapshot {} at {}\n",
        snapshot.0.short(),
        jiff::Timestamp::now()
    ));
    for s in &settings {
        text.push_str(s);
        text.push('\n');
    }
    write_synced(&auto, text.as_bytes())?;
    write_synced(&dir.join("recovery.signal"), b"")?;
    if let Some(r) = opts.run_as {
        r.chown_tree(dir)?;
    }
    Ok(PhysicalRestoreReport {
        snapshot_id: snapshot.0.to_hex(),
        data_dir: dir.clone(),
        moved_aside,
        files,
        recovery_settings: settings,
        tablespaces: restored_spaces,
    })
}

/// Fails a restore whose files did not all arrive (a full disk named as such).
fn check_files(dir: &Path, files: &RestoreSummary) -> Result<()> {
    if files.disk_full {
        return Err(PgError::io(
            dir,
            std::io::Error::new(
                std::io::ErrorKind::StorageFull,
                format!(
                    "disk full while restoring ({})",
                    files.errors.first().cloned().unwrap_or_default()
                ),
            ),
        ));
    }
    if let Some(first) = files.errors.first() {
        return Err(PgError::Invalid(format!(
            "restore incomplete: {} file(s) failed, first: {first}",
            files.errors.len()
        )));
    }
    Ok(())
}

/// The tree of tablespace `oid` in a snapshot (`pg_tblspc/<oid>`).
fn tablespace_tree(repo: &Repository, index: &lifeboat_repo::index::Index, root: &Id, oid: &str) -> Result<Id> {
    let mut id = *root;
    for name in ["pg_tblspc", oid] {
        let tree = repo.read_tree(index, &id)?;
        id = tree
            .find(std::ffi::OsStr::new(name))
            .and_then(|n| n.subtree)
            .ok_or_else(|| PgError::Invalid(format!("the backup has no folder pg_tblspc/{oid} for its tablespace")))?;
    }
    Ok(id)
}

/// Flushes the restored files with one `syncfs` of the data directory's file system. A restore
/// is then durable when it reports success, and PostgreSQL's start-up pass, which fsyncs every
/// file of a data directory that was not shut down cleanly, finds nothing left to write: in
/// bench/pg_scale.sh (scale 5) that pass took 1.5 s of a 3.5 s restore to a queryable database
/// while the restore's writeback was still running, one file at a time.
fn sync_filesystem(dir: &Path) -> Result<()> {
    let f = std::fs::File::open(dir).map_err(|e| PgError::io(dir, e))?;
    rustix::fs::syncfs(&f).map_err(|e| PgError::io(dir, e.into()))
}

fn set_mode(p: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).map_err(|e| PgError::io(p, e))
}

fn write_synced(p: &Path, data: &[u8]) -> Result<()> {
    use std::io::Write;
    let mut f = std::fs::File::create(p).map_err(|e| PgError::io(p, e))?;
    f.write_all(data).map_err(|e| PgError::io(p, e))?;
    f.sync_all().map_err(|e| PgError::io(p, e))?;
    set_mode(p, 0o600)
}

/// What starting the restored server measured.
#[derive(Clone, Debug, serde::Serialize)]
pub struct StartReport {
    /// Seconds from start until recovery finished and the server was promoted.
    pub recovery_secs: f64,
    /// The server log file.
    pub log: PathBuf,
}

/// Starts the restored server (as `run_as`), then waits until recovery has finished and the
/// server runs as a primary (recovery.signal removed, "in production" in its control file). The server keeps running.
/// If it stops during recovery (e.g. WAL missing before the target), the log's last lines are
/// returned in the error.
pub fn start_and_wait(
    tools: &Tools,
    data_dir: &Path,
    log: &Path,
    server_options: &str,
    run_as: Option<RunAs>,
    timeout: Duration,
) -> Result<StartReport> {
    let t0 = Instant::now();
    let mut cmd = tools.command("pg_ctl")?;
    cmd.arg("start").arg("-D").arg(data_dir).arg("-l").arg(log).arg("-W");
    if !server_options.is_empty() {
        cmd.arg("-o").arg(server_options);
    }
    if let Some(parent) = data_dir.parent() {
        cmd.current_dir(parent);
    }
    if let Some(r) = run_as {
        r.apply(&mut cmd);
    }
    crate::cluster::run(cmd, "pg_ctl start")?;
    loop {
        std::thread::sleep(Duration::from_millis(100));
        let mut c = tools.command("pg_controldata")?;
        c.arg(data_dir).stdout(Stdio::piped()).stderr(Stdio::null());
        let state = c
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        let in_production = state
            .lines()
            .any(|l| l.starts_with("Database cluster state:") && l.contains("in production"));
        let pid_file = data_dir.join("postmaster.pid");
        // The restored control file says "in production" already (it was copied from a running
        // primary); the server removes recovery.signal only when it leaves archive recovery.
        let recovering = data_dir.join("recovery.signal").exists();
        if in_production && !recovering && pid_file.exists() {
            return Ok(StartReport {
                recovery_secs: t0.elapsed().as_secs_f64(),
                log: log.to_path_buf(),
            });
        }
        if !pid_file.exists() && t0.elapsed() > Duration::from_secs(2) {
            let (fatal, tail) = why_stopped(log);
            let gap = [
                "recovery ended before configured recovery target",
                "requested timeline",
                "could not locate required checkpoint",
                "WAL ends before end of online backup",
            ]
            .iter()
            .any(|m| fatal.contains(m) || tail.contains(m));
            let tail = if fatal.is_empty() || tail.contains(&fatal) {
                tail
            } else {
                format!("{fatal} / … / {tail}")
            };
            return Err(if gap {
                PgError::WalMissing(format!("recovery stopped: {tail}"))
            } else {
                PgError::ToolFailed {
                    tool: "postgres (recovery)".into(),
                    status: "server stopped".into(),
                    message: tail,
                }
            });
        }
        if t0.elapsed() > timeout {
            return Err(PgError::Timeout {
                what: format!("recovery of {} (server log {})", data_dir.display(), log.display()),
                secs: timeout.as_secs(),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backup_of(sysid: &str, url: &str, host: &str) -> (Id, Snapshot) {
        let s = Snapshot {
            version: 1,
            time: jiff::Timestamp::now(),
            host: host.into(),
            user: "postgres".into(),
            paths: vec![url.into()],
            tags: Vec::new(),
            parent: None,
            tree: Id::from_hex(&"00".repeat(32)).unwrap(),
            source_kind: SOURCE_KIND.into(),
            unreadable: Vec::new(),
            summary: Default::default(),
            program_version: "test".into(),
            source: Some(serde_json::json!({ "system_identifier": sysid })),
        };
        (Id::from_hex(&"11".repeat(32)).unwrap(), s)
    }

    /// The FATAL line that explains a stop, although shutdown lines follow it.
    #[test]
    fn why_stopped_finds_the_fatal_line_of_this_start() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("recovery.log");
        std::fs::write(
            &log,
            "LOG:  starting PostgreSQL 15\nFATAL:  an older start's failure\nLOG:  starting PostgreSQL 15\n\
             LOG:  redo done\nFATAL:  recovery ended before configured recovery target was reached\n\
             LOG:  startup process (PID 1) exited with exit code 1\nLOG:  aborting startup due to startup process failure\n\
             LOG:  database system is shut down\n",
        )
        .unwrap();
        let (fatal, tail) = why_stopped(&log);
        assert_eq!(
            fatal,
            "FATAL:  recovery ended before configured recovery target was reached"
        );
        assert!(tail.ends_with("database system is shut down"), "{tail}");
    }

    /// `localhost` on two hosts is two clusters: told apart by system identifier, not URL.
    #[test]
    fn latest_without_a_source_is_refused_across_clusters() {
        let one = backup_of("7001", "postgres://backup@localhost/app", "db1");
        let same = backup_of("7001", "postgres://backup@db1.internal/app", "backup-host");
        assert!(refuse_ambiguous(&[one.clone(), same], None).is_ok());
        let upgraded = backup_of("7003", "postgres://backup@localhost/app", "db1");
        assert!(refuse_ambiguous(&[one.clone(), upgraded], None).is_ok(), "one host");
        let other = backup_of("7002", "postgres://backup@localhost/app", "db2");
        let e = refuse_ambiguous(&[one, other], Some("db")).unwrap_err().to_string();
        assert!(
            e.contains("2 clusters") && e.contains("system 7002") && e.contains("host db2") && e.contains("\"db\""),
            "{e}"
        );
    }
}
