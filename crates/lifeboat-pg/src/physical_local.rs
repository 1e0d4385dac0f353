//! Physical backups read straight from the data directory, for lifeboat running on the database
//! host (as the server's OS user or root): `pg_backup_start` on an ordinary session, the data
//! directory walked by the repository engine's file archiver, `pg_backup_stop`, and the
//! `backup_label` it returns stored at the root. The snapshot has exactly the layout of a
//! `pg_basebackup` tar restore, so restore and restore tests treat both methods alike.
//!
//! What this buys over `pg_basebackup`: a second backup reads only the files whose size, mtime,
//! ctime or inode changed since the previous backup of this method (pgBackRest's incremental
//! backup, against any earlier backup rather than a chain), and both cores read, hash and
//! compress instead of one server process sending a tar.
//!
//! Why copying files that change while they are read is correct (the same argument as for
//! `pg_basebackup`): `pg_backup_start` forces a checkpoint and turns on full-page writes; every
//! page written after the checkpoint is in WAL, starting with a full image of the page. Recovery
//! replays WAL from that checkpoint to the backup's stop point (`backup_label`), overwriting
//! whatever torn or stale version of a page the copy caught, and files created, extended,
//! truncated or dropped meanwhile are recreated, extended, truncated or removed by replay.
//!
//! `global/pg_control` is read in name order like any file (without a lock, as PostgreSQL 15's
//! own base backup reads it): on a primary, recovery takes its starting point from
//! `backup_label`, not from pg_control. `pg_basebackup` sends it last because that matters for a
//! backup from a standby (its minRecoveryPoint ends the backup); standbys are refused here.
//!
//! Why reusing the previous copy of an unchanged file is correct: the copy is reused only if the
//! file's size, mtime, ctime and inode are those the previous backup saw AND its mtime and ctime
//! are older than that backup's start minus a safety window (see
//! `lifeboat_repo::archiver::BackupOptions::safety_window`). The kernel sets ctime to the
//! current time on every write, so a file written after the previous backup started has a newer
//! ctime than any it had before that start minus the clock's granularity; the window (see
//! [`safety_window`]: larger than the file system's timestamp granularity plus a clock tick)
//! makes "written after" always visible. A reused copy therefore equals the file's content before the previous
//! backup started, which is its content now: no WAL replay is needed for it.

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout};
use std::sync::Arc;
use std::time::Duration;

use lifeboat_repo::archiver::{
    self, BackupOptions, BackupProgress, BackupResult, Decision, EntryFilter, ExtraFile, Finish, WalkDone,
};
use lifeboat_repo::format::tree::{Node, NodeKind};
use lifeboat_repo::{Id, Repository};

use crate::client::Client;
use crate::conn::ConnInfo;
use crate::error::{PgError, Result, classify_client_error};
use crate::physical::{PhysicalOptions, SOURCE_KIND, check_server, parse_label, source_metadata};
use crate::tablespaces::Tablespace;
use crate::tools::Tools;
use crate::wal_names::{Lsn, Segment};

/// `method` recorded in the snapshot's source metadata for this kind of backup.
pub const METHOD: &str = "local";

/// Parent copies touched within this long before the parent backup started are read again
/// (timestamp safety; see the module documentation): more than one second, the coarsest
/// timestamps of the file systems PostgreSQL runs on (ext4 with 128-byte inodes, NFS).
pub const SAFETY_WINDOW: Duration = Duration::from_secs(2);

/// The window on a local file system that keeps sub-second timestamps: its ctime comes from the
/// kernel's coarse clock, at most one tick (10 ms at HZ=100, the slowest Linux tick) behind the
/// clock the backup's start is read from; 100 ms is ten ticks. The backup waits this long after
/// `pg_backup_start` before it notes its start, so the files that checkpoint flushed are older
/// than the window and the next backup skips them if they do not change again.
pub const FINE_SAFETY_WINDOW: Duration = Duration::from_millis(100);

/// The timestamp safety window for the data directory: [`FINE_SAFETY_WINDOW`] on ext4, XFS,
/// Btrfs, ZFS, F2FS or tmpfs when its files show sub-second timestamps, else [`SAFETY_WINDOW`]
/// (network file systems: their timestamps come from another machine's clock).
pub fn safety_window(data_dir: &Path) -> Duration {
    let global: Vec<PathBuf> = entries(&data_dir.join("global")).into_iter().take(48).collect();
    window_for(data_dir, &global)
}

/// [`safety_window`] of a tablespace's folder, whose files sit two levels down
/// (`PG_15_<catalog>/<database>/`); an empty tablespace gets the coarse window.
fn safety_window_of(dir: &Path) -> Duration {
    let mut files = Vec::new();
    for version in entries(dir) {
        for db in entries(&version) {
            files.extend(entries(&db).into_iter().take(48));
        }
    }
    window_for(dir, &files)
}

fn entries(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .collect()
}

/// The fine window when `dir` is on a local file system with sub-second timestamps (some of a
/// few dozen `files` have a non-zero fraction), else the coarse one.
fn window_for(dir: &Path, files: &[PathBuf]) -> Duration {
    const LOCAL: &[u64] = &[0xEF53, 0x5846_5342, 0x9123_683E, 0x2FC1_2FC1, 0xF2F5_2010, 0x0102_1994];
    let Ok(st) = rustix::fs::statfs(dir) else {
        return SAFETY_WINDOW;
    };
    if !LOCAL.contains(&(st.f_type as u64)) {
        return SAFETY_WINDOW;
    }
    let fine = files.iter().any(|f| {
        std::fs::symlink_metadata(f).is_ok_and(|m| m.is_file() && (m.mtime_nsec() != 0 || m.ctime_nsec() != 0))
    });
    if fine { FINE_SAFETY_WINDOW } else { SAFETY_WINDOW }
}

/// The catalog version in `global/pg_control` (bytes 12..16, after the system identifier and
/// the control file's own version): what names this server's folder in a tablespace
/// (`PG_15_202209061`). `None` when unreadable (the filter then keeps every `PG_<major>_`).
fn catalog_version(data_dir: &Path) -> Option<u32> {
    let mut b = [0u8; 16];
    let mut f = std::fs::File::open(data_dir.join("global/pg_control")).ok()?;
    f.read_exact(&mut b).ok()?;
    Some(u32::from_ne_bytes(b[12..16].try_into().ok()?))
}

/// Options of a local physical backup.
#[derive(Clone, Debug)]
pub struct LocalOptions {
    /// The server's data directory on this machine.
    pub data_dir: PathBuf,
    /// Read every file, whatever the previous backup holds (a full backup).
    pub full: bool,
}

/// The outcome of a local physical backup.
#[derive(Debug)]
pub struct LocalBackup {
    /// The committed snapshot.
    pub result: BackupResult,
    /// The previous backup unchanged files were taken from (None: a full backup).
    pub parent: Option<Id>,
}

/// True when `data_dir` looks like a data directory this process can read (the choice of
/// `physical_method = "auto"`).
pub fn readable_data_dir(data_dir: &Path) -> bool {
    std::fs::File::open(data_dir.join("global/pg_control")).is_ok() && std::fs::read_dir(data_dir.join("base")).is_ok()
}

/// Why the role of `conn` cannot run a local backup (`pg_backup_start`/`pg_backup_stop` need
/// superuser or an explicit grant, unlike `pg_basebackup`, which needs REPLICATION), with the
/// fix; `None` when it can.
pub fn missing_privilege(tools: &Tools, conn: &ConnInfo) -> Result<Option<String>> {
    let client = Client::connect(tools, conn)?;
    let version: u32 = client
        .query_value("SELECT current_setting('server_version_num')")?
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let (start, stop) = if version >= 150000 {
        ("pg_backup_start(text, boolean)", "pg_backup_stop(boolean)")
    } else {
        (
            "pg_start_backup(text, boolean, boolean)",
            "pg_stop_backup(boolean, boolean)",
        )
    };
    let ok = client.query_value(&format!(
        "SELECT has_function_privilege('{start}', 'EXECUTE') AND has_function_privilege('{stop}', 'EXECUTE')"
    ))?;
    Ok((ok.as_deref() != Some("t")).then(|| {
        format!("the backup role may not run {start} and {stop}: GRANT EXECUTE ON FUNCTION {start}, {stop} TO the role")
    }))
}

/// Takes a physical backup of the server at `conn` by reading its data directory.
pub fn backup(
    repo: &Repository,
    tools: &Tools,
    conn: &ConnInfo,
    opts: &PhysicalOptions,
    local: &LocalOptions,
    progress: &BackupProgress,
) -> Result<LocalBackup> {
    let client = Client::connect(tools, conn)?;
    let info = check_server(&client)?;
    if let Some(why) = missing_privilege(tools, conn)? {
        return Err(PgError::NotConfigured {
            target: conn.url().into(),
            message: why,
        });
    }
    let data_dir = check_data_dir(&client, conn, &local.data_dir, &info.system_identifier)?;
    let spaces = tablespaces(&client, &data_dir)?;
    // From a standby, pg_control would have to be copied after every other file (its
    // minRecoveryPoint ends the backup); this method copies in name order, so it backs up
    // primaries only.
    if client.query_value("SELECT pg_is_in_recovery()")?.as_deref() == Some("t") {
        return Err(PgError::NotConfigured {
            target: conn.url().into(),
            message: "the server is a standby: the local physical method backs up a primary; set physical_method = \"basebackup\" for this source".into(),
        });
    }
    let dd_meta = std::fs::metadata(&data_dir).map_err(|e| PgError::io(&data_dir, e))?;
    // The coarsest of the data directory's and every tablespace's file system.
    let window = spaces
        .iter()
        .filter_map(|t| std::fs::canonicalize(data_dir.join("pg_tblspc").join(&t.oid)).ok())
        .map(|p| safety_window_of(&p))
        .fold(safety_window(&data_dir), Duration::max);
    let data_dir_text = data_dir.display().to_string();

    let parent = if local.full {
        None
    } else {
        find_parent(repo, &opts.source_name, &info.system_identifier, &data_dir_text)?
    };

    let session = BackupSession::start(
        tools,
        conn,
        &format!("lifeboat {}", opts.source_name),
        info.server_version_num,
    )?;
    if window == FINE_SAFETY_WINDOW {
        std::thread::sleep(window);
    }
    let bopts = BackupOptions {
        paths: vec![data_dir.clone()],
        tags: opts.tags.clone(),
        host: opts.host.clone().unwrap_or_else(lifeboat_repo::repository::hostname),
        parent,
        force_reread: local.full,
        root_is_source: true,
        filter: Some(Arc::new(DataDirFilter::new(
            info.server_version_num,
            catalog_version(&data_dir),
            spaces.iter().map(|t| t.oid.clone()).collect(),
        ))),
        safety_window: Some(window),
        vanished_ok: true,
        source_kind: SOURCE_KIND.into(),
        recorded_paths: Some(vec![conn.url().to_string()]),
        ..Default::default()
    };
    let mut session = Some(session);
    let seg = info.wal_segment_size;
    let result = archiver::backup_with(repo, &bopts, progress, |done: &WalkDone<'_>| {
        if let Some(first) = done.unreadable.first() {
            // A file left out would make the backup unrestorable; ending the session without
            // pg_backup_stop aborts the backup on the server.
            return Err(PgError::Invalid(format!(
                "{} unreadable entries in the data directory (first: {first}); nothing was committed: run lifeboat as the server's OS user or root, or use physical_method = \"basebackup\"",
                done.unreadable.len()
            )));
        }
        let stop = session.take().expect("finish runs once").stop()?;
        // A tablespace created or dropped meanwhile is not in the list the restore relies on
        // (nor in the server's tablespace_map): commit nothing, the next run sees it.
        if tablespaces(&client, &data_dir)? != spaces {
            return Err(PgError::Invalid(
                "a tablespace was created or dropped during the backup; nothing was committed: run the backup again"
                    .into(),
            ));
        }
        let start = parse_label(&stop.label)?;
        // The last segment the backup needs: the one holding the byte before the stop point.
        let last = Segment::of(start.timeline, Lsn(stop.lsn.0.saturating_sub(1)), seg).name(seg);
        wait_archived(&data_dir, &last, opts.archive_wait, conn)?;
        crate::physical::wait_wal_in_repository(repo, &info, &last, conn)?;
        // Like pg_basebackup's tar, which always carries a tablespace_map (empty without
        // tablespaces): the same files whichever method made the backup.
        let extra = vec![
            ExtraFile {
                name: "backup_label".into(),
                data: stop.label.into_bytes(),
                mode: 0o600,
                uid: dd_meta.uid(),
                gid: dd_meta.gid(),
            },
            ExtraFile {
                name: "tablespace_map".into(),
                data: stop.tablespace_map.into_bytes(),
                mode: 0o600,
                uid: dd_meta.uid(),
                gid: dd_meta.gid(),
            },
        ];
        let s = done.summary;
        let mut source = source_metadata(&opts.source_name, METHOD, &info, &start, stop.lsn, last);
        for (k, v) in [
            (
                "backup_type",
                (if parent.is_some() { "incremental" } else { "full" }).into(),
            ),
            ("parent", serde_json::json!(parent.map(|p| p.to_hex()))),
            ("data_dir", data_dir_text.clone().into()),
            ("files_read", (s.files_new + s.files_changed).into()),
            ("files_skipped", s.files_unchanged.into()),
            ("bytes_read", s.bytes_read.into()),
            ("bytes_skipped", s.bytes_total.saturating_sub(s.bytes_read).into()),
            ("files_reread_recent", done.reread_recent.into()),
            ("safety_window_ms", (window.as_millis() as u64).into()),
            ("files_vanished", done.vanished.into()),
            ("tablespaces", serde_json::json!(spaces)),
        ] {
            source.insert(k.into(), v);
        }
        let source = serde_json::Value::Object(source);
        Ok(Finish {
            extra_files: extra,
            source: Some(source),
        })
    })?;
    Ok(LocalBackup { result, parent })
}

/// The data directory, canonical, after checking it is the one of the server we are connected
/// to: the server's own `data_directory` when the role may read it, and always the system
/// identifier in `global/pg_control` (a copy or a standby elsewhere on this host would differ).
fn check_data_dir(client: &Client, conn: &ConnInfo, data_dir: &Path, sysid: &str) -> Result<PathBuf> {
    let canonical = std::fs::canonicalize(data_dir).map_err(|e| PgError::io(data_dir, e))?;
    let ours = crate::wal::system_identifier(&canonical).map_err(|e| {
        PgError::Invalid(format!(
            "data_dir {}: cannot read global/pg_control ({e}); the local physical method runs on the database host as the server's OS user or root",
            data_dir.display()
        ))
    })?;
    if ours != sysid {
        return Err(PgError::Invalid(format!(
            "data_dir {} belongs to the cluster with system identifier {ours}, but {} is {sysid}: set data_dir to that server's data directory",
            data_dir.display(),
            conn.url()
        )));
    }
    let reported = client.query_value(
        "SELECT CASE WHEN pg_has_role('pg_read_all_settings', 'MEMBER') THEN current_setting('data_directory') END",
    )?;
    if let Some(r) = reported
        && let Ok(theirs) = std::fs::canonicalize(&r)
        && theirs != canonical
    {
        return Err(PgError::Invalid(format!(
            "data_dir {} is not the data directory of {} (it reports {r}): a standby or a copy of the same cluster?",
            data_dir.display(),
            conn.url()
        )));
    }
    Ok(canonical)
}

/// The tablespaces outside the data directory (an in-place tablespace is an ordinary folder in
/// `pg_tblspc` and needs nothing). Their files are walked through the `pg_tblspc/<oid>` links
/// (see [`DataDirFilter`]); one located inside the data directory would be copied twice, so it
/// is refused.
fn tablespaces(client: &Client, data_dir: &Path) -> Result<Vec<Tablespace>> {
    let spaces = crate::tablespaces::list(client)?;
    for t in &spaces {
        let link = data_dir.join("pg_tblspc").join(&t.oid);
        let real = std::fs::canonicalize(&link).map_err(|e| {
            PgError::Invalid(format!(
                "tablespace {} (oid {}, at {}): cannot follow {}: {e}; run lifeboat as the server's OS user or root",
                t.name,
                t.oid,
                t.location,
                link.display()
            ))
        })?;
        if real.starts_with(data_dir) {
            return Err(PgError::Invalid(format!(
                "tablespace {} is at {}, inside the data directory: its files would be copied twice; move it out (ALTER TABLE … SET TABLESPACE) or use physical_method = \"basebackup\"",
                t.name, t.location
            )));
        }
    }
    Ok(spaces)
}

/// The newest committed local physical backup of the same source, cluster and data directory:
/// the one whose unchanged files this backup reuses.
fn find_parent(repo: &Repository, source_name: &str, sysid: &str, data_dir: &str) -> Result<Option<Id>> {
    let all = repo.list_snapshots()?;
    let hit = all.iter().rev().find(|(_, s)| {
        let Some(src) = s.source.as_ref() else { return false };
        let str_of = |k: &str| src.get(k).and_then(|v| v.as_str());
        s.source_kind == SOURCE_KIND
            && str_of("method") == Some(METHOD)
            && str_of("source_name") == Some(source_name)
            && str_of("system_identifier") == Some(sysid)
            && str_of("data_dir") == Some(data_dir)
            && src.get("forensic").and_then(|f| f.as_bool()) == Some(false)
    });
    Ok(hit.map(|(id, _)| *id))
}

/// A non-exclusive backup held open by a `psql` session: the server ends (aborts) the backup
/// when the session ends, so a failed or killed lifeboat never leaves the server in backup mode.
struct BackupSession {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    stderr: Option<std::thread::JoinHandle<String>>,
    target: String,
    version: u32,
}

/// What `pg_backup_stop` returned.
struct StopInfo {
    lsn: Lsn,
    label: String,
    tablespace_map: String,
}

fn sql_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

impl BackupSession {
    fn start(tools: &Tools, conn: &ConnInfo, label: &str, version: u32) -> Result<Self> {
        let mut child = crate::psql::spawn_reading_stdin(tools, conn, true)?;
        let mut stdin = child.stdin.take().expect("piped");
        let stdout = BufReader::new(child.stdout.take().expect("piped"));
        let stderr = child.stderr.take().expect("piped");
        let err_thread = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = BufReader::new(stderr).read_to_string(&mut s);
            s
        });
        let start_sql = if version >= 150000 {
            format!("SELECT pg_backup_start({}, true);\n", sql_literal(label))
        } else {
            format!("SELECT pg_start_backup({}, true, false);\n", sql_literal(label))
        };
        // The session idles while the files are read: no server-side timeout may end it (that
        // would abort the backup).
        let timeouts = if version >= 140000 {
            "SET statement_timeout = 0;\nSET idle_session_timeout = 0;\n"
        } else {
            "SET statement_timeout = 0;\n"
        };
        let sent = stdin
            .write_all(format!("{timeouts}{start_sql}").as_bytes())
            .and_then(|()| stdin.flush());
        let mut session = BackupSession {
            child,
            stdin: Some(stdin),
            stdout,
            stderr: Some(err_thread),
            target: conn.url().to_string(),
            version,
        };
        let mut line = String::new();
        let read = session.stdout.read_line(&mut line);
        if sent.is_err() || read.is_err() || line.trim().is_empty() {
            return Err(session.failure("pg_backup_start"));
        }
        Ok(session)
    }

    /// Ends the session after an error and explains it from psql's output.
    fn failure(&mut self, what: &str) -> PgError {
        drop(self.stdin.take());
        let status = self.child.wait().map(|s| s.to_string()).unwrap_or_default();
        let err = self.stderr.take().and_then(|t| t.join().ok()).unwrap_or_default();
        match classify_client_error("psql", &self.target, status, &err) {
            PgError::ToolFailed { status, message, .. } => PgError::ToolFailed {
                tool: format!("psql ({what})"),
                status,
                message,
            },
            e => e,
        }
    }

    /// `pg_backup_stop` (which switches to a new WAL segment) without its wait for archiving:
    /// the server checks the archive once a second, [`wait_archived`] every 20 ms.
    fn stop(mut self) -> Result<StopInfo> {
        let sql = if self.version >= 150000 {
            "SELECT lsn, labelfile, spcmapfile FROM pg_backup_stop(false);\n"
        } else {
            "SELECT lsn, labelfile, spcmapfile FROM pg_stop_backup(false, false);\n"
        };
        let mut stdin = self.stdin.take().expect("open until stop");
        let sent = stdin.write_all(sql.as_bytes()).and_then(|()| stdin.flush());
        // End of input: psql exits once the statement finished (the server's backup is over).
        drop(stdin);
        let mut out = String::new();
        let read = self.stdout.read_to_string(&mut out);
        let status = self.child.wait();
        let ok = sent.is_ok() && read.is_ok() && status.as_ref().is_ok_and(|s| s.success());
        if !ok {
            return Err(self.failure("pg_backup_stop"));
        }
        let _ = self.stderr.take().map(|t| t.join());
        parse_stop(&out)
    }
}

impl Drop for BackupSession {
    fn drop(&mut self) {
        // Ending the session without pg_backup_stop aborts the backup on the server.
        drop(self.stdin.take());
        if self.stderr.is_some() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Waits until the server archived WAL segment `name` (as `pg_backup_stop(true)` would, with
/// its rules of `XLogArchiveIsBusy`: a `.done` status file, or neither `.ready` nor the segment
/// left in pg_wal), so a committed snapshot is restorable from the repository alone. Gives up
/// after `limit` ([`PgError::NotConfigured`]: archiving is failing; nothing is committed).
fn wait_archived(data_dir: &Path, name: &str, limit: Duration, conn: &ConnInfo) -> Result<()> {
    let wal = data_dir.join("pg_wal");
    let status = wal.join("archive_status");
    let started = std::time::Instant::now();
    loop {
        let done = status.join(format!("{name}.done")).exists();
        let ready = status.join(format!("{name}.ready")).exists();
        if done || (!ready && (status.join(format!("{name}.done")).exists() || !wal.join(name).exists())) {
            return Ok(());
        }
        if started.elapsed() >= limit {
            return Err(PgError::NotConfigured {
                target: conn.url().into(),
                message: format!(
                    "the backup's WAL ({name}) was not archived within {} s: archive_command is failing (see pg_stat_archiver.last_failed_wal and the server log); nothing was committed",
                    limit.as_secs()
                ),
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn parse_stop(out: &str) -> Result<StopInfo> {
    let text = out.strip_suffix('\n').unwrap_or(out);
    let mut f = text.split(crate::psql::FIELD);
    let (Some(lsn), Some(label), Some(map)) = (f.next(), f.next(), f.next()) else {
        return Err(PgError::Invalid(format!(
            "unexpected output of pg_backup_stop: {:?}",
            crate::error::last_lines(out)
        )));
    };
    Ok(StopInfo {
        lsn: Lsn::parse(lsn.trim())?,
        label: label.to_string(),
        tablespace_map: map.to_string(),
    })
}

/// What `pg_basebackup` leaves out of a data directory (PostgreSQL 15's `basebackup.c`, and
/// the documentation of the backup protocol), so a restore of either method has the same files.
/// Tablespace links in `pg_tblspc` are followed, and of a tablespace's folder only this
/// server's `PG_<major>_<catalog>` folder is kept (another major version's, left by
/// `pg_upgrade`, belongs to another cluster), as `pg_basebackup` sends it.
#[derive(Debug)]
pub struct DataDirFilter {
    /// This server's folder in a tablespace (`PG_15_202209061`), or its prefix (`PG_15_`)
    /// when the catalog version is unknown.
    version_dir: String,
    exact: bool,
    /// The tablespaces the backup recorded: only their links are followed (another link in
    /// `pg_tblspc` is kept as a link, as `pg_basebackup` keeps it).
    oids: Vec<String>,
}

impl DataDirFilter {
    /// The filter for a server of `server_version_num` (150004 for 15.4) and `catalog_version`,
    /// following the links of the tablespaces `oids`.
    pub fn new(server_version_num: u32, catalog_version: Option<u32>, oids: Vec<String>) -> DataDirFilter {
        let major = server_version_num / 10000;
        DataDirFilter {
            version_dir: match catalog_version {
                Some(c) => format!("PG_{major}_{c}"),
                None => format!("PG_{major}_"),
            },
            exact: catalog_version.is_some(),
            oids,
        }
    }

    fn is_version_dir(&self, name: &str) -> bool {
        if self.exact {
            name == self.version_dir
        } else {
            name.starts_with(&self.version_dir)
        }
    }
}

/// Folders recorded empty: the server recreates or resets their contents at startup.
const EMPTY_DIRS: &[&str] = &[
    "pg_stat_tmp",
    "pg_replslot",
    "pg_dynshmem",
    "pg_notify",
    "pg_serial",
    "pg_snapshots",
    "pg_subtrans",
];

/// Files left out wherever they are.
const SKIP_FILES: &[&str] = &[
    "postgresql.auto.conf.tmp",
    "current_logfiles.tmp",
    // The backup's own label and map are added from pg_backup_stop; a stale one would mislead
    // recovery.
    "backup_label",
    "tablespace_map",
    "backup_manifest",
    "postmaster.pid",
    "postmaster.opts",
];

impl EntryFilter for DataDirFilter {
    fn decide(&self, rel: &Path, node: &Node, siblings: &[OsString]) -> Decision {
        let parts: Vec<&str> = rel
            .components()
            .filter_map(|c| match c {
                Component::Normal(n) => n.to_str(),
                _ => Some("\u{0}"),
            })
            .collect();
        let Some(name) = parts.last().copied() else {
            return Decision::Keep;
        };
        // Sockets, pipes and devices have nothing to restore.
        if !matches!(node.kind, Some(NodeKind::Dir | NodeKind::File | NodeKind::Symlink)) {
            return Decision::Skip;
        }
        if name.starts_with("pgsql_tmp") || name.starts_with("pg_internal.init") || SKIP_FILES.contains(&name) {
            return Decision::Skip;
        }
        match parts.as_slice() {
            // WAL comes from the archive; the folder is kept (a symlinked pg_wal is left out
            // and recreated by the restore), with an empty archive_status.
            ["pg_wal"] if !node.is_dir() => Decision::Skip,
            ["pg_wal", "archive_status"] => Decision::EmptyDir,
            ["pg_wal", _] => Decision::Skip,
            [dir] if EMPTY_DIRS.contains(dir) => Decision::EmptyDir,
            ["pg_tblspc", oid] if node.kind == Some(NodeKind::Symlink) && self.oids.iter().any(|o| o == oid) => {
                Decision::FollowDir
            }
            ["pg_tblspc", _, v] if !self.is_version_dir(v) => Decision::Skip,
            ["base", _, _] | ["pg_tblspc", _, _, _, _] if node.is_file() => relation_decision(name, siblings),
            _ => Decision::Keep,
        }
    }
}

/// In a database folder: temporary relations are left out, and so are the forks of unlogged
/// relations other than their init fork (recovery resets them from it).
fn relation_decision(name: &str, siblings: &[OsString]) -> Decision {
    if let Some(rest) = name.strip_prefix('t')
        && let Some((backend, rel)) = rest.split_once('_')
        && !backend.is_empty()
        && backend.bytes().all(|b| b.is_ascii_digit())
        && rel.bytes().next().is_some_and(|b| b.is_ascii_digit())
    {
        return Decision::Skip;
    }
    let digits = name.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return Decision::Keep;
    }
    let (relfilenode, rest) = name.split_at(digits);
    let fork = rest.strip_prefix('_').map(|f| f.split('.').next().unwrap_or(f));
    if fork == Some("init") {
        return Decision::Keep;
    }
    let init = OsString::from(format!("{relfilenode}_init"));
    if siblings.binary_search(&init).is_ok() {
        Decision::Skip
    } else {
        Decision::Keep
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(kind: NodeKind) -> Node {
        Node {
            kind: Some(kind),
            ..Default::default()
        }
    }

    fn decide(rel: &str, kind: NodeKind, siblings: &[&str]) -> Decision {
        let mut s: Vec<OsString> = siblings.iter().map(OsString::from).collect();
        s.sort();
        DataDirFilter::new(150004, Some(202209061), vec!["16400".into()]).decide(Path::new(rel), &node(kind), &s)
    }

    #[test]
    fn leaves_out_what_pg_basebackup_leaves_out() {
        use Decision::*;
        use NodeKind::{Dir, File, Socket, Symlink};
        assert_eq!(decide("PG_VERSION", File, &[]), Keep);
        assert_eq!(decide("postmaster.pid", File, &[]), Skip);
        assert_eq!(decide("postmaster.opts", File, &[]), Skip);
        assert_eq!(decide("backup_label", File, &[]), Skip);
        assert_eq!(decide("pg_wal", Dir, &[]), Keep);
        assert_eq!(decide("pg_wal", Symlink, &[]), Skip);
        assert_eq!(decide("pg_wal/000000010000000000000001", File, &[]), Skip);
        assert_eq!(decide("pg_wal/archive_status", Dir, &[]), EmptyDir);
        for d in EMPTY_DIRS {
            assert_eq!(decide(d, Dir, &[]), EmptyDir, "{d}");
        }
        assert_eq!(decide("base/5/pgsql_tmp", Dir, &[]), Skip);
        assert_eq!(decide("base/pgsql_tmp/pgsql_tmp123.0", File, &[]), Skip);
        assert_eq!(decide("global/pg_internal.init", File, &[]), Skip);
        assert_eq!(decide("base/5/pg_internal.init.123", File, &[]), Skip);
        assert_eq!(decide("base/5/t3_16384", File, &[]), Skip);
        assert_eq!(decide("base/5/t3_16384_fsm", File, &[]), Skip);
        assert_eq!(decide(".s.PGSQL.5432", Socket, &[]), Skip);
        assert_eq!(decide("global/pg_control", File, &[]), Keep);
        assert_eq!(decide("pg_xact/0000", File, &[]), Keep);
        assert_eq!(decide("pg_tblspc/16400", Symlink, &[]), FollowDir);
        assert_eq!(
            decide("pg_tblspc/16500", Symlink, &[]),
            Keep,
            "not a recorded tablespace"
        );
        assert_eq!(
            decide("pg_tblspc/16400/PG_15_202209060", Dir, &[]),
            Skip,
            "another catalog"
        );
        assert_eq!(decide("pg_tblspc/16400", Dir, &[]), Keep);
        assert_eq!(decide("pg_tblspc/16400/PG_15_202209061", Dir, &[]), Keep);
        assert_eq!(decide("pg_tblspc/16400/PG_14_202107181", Dir, &[]), Skip);
        assert_eq!(decide("pg_tblspc/16400/lost+found", Dir, &[]), Skip);
    }

    #[test]
    fn unlogged_relations_keep_only_their_init_fork() {
        use Decision::*;
        use NodeKind::File;
        let sib = [
            "16384",
            "16384.1",
            "16384_fsm",
            "16384_init",
            "16390",
            "16390_vm",
            "PG_VERSION",
        ];
        assert_eq!(decide("base/5/16384", File, &sib), Skip);
        assert_eq!(decide("base/5/16384.1", File, &sib), Skip);
        assert_eq!(decide("base/5/16384_fsm", File, &sib), Skip);
        assert_eq!(decide("base/5/16384_init", File, &sib), Keep);
        assert_eq!(decide("base/5/16390", File, &sib), Keep);
        assert_eq!(decide("base/5/16390_vm", File, &sib), Keep);
        assert_eq!(decide("base/5/PG_VERSION", File, &sib), Keep);
        assert_eq!(decide("pg_tblspc/16400/PG_15_202209061/5/16384", File, &sib), Skip);
        // Outside database folders the rule does not apply.
        assert_eq!(decide("global/16384", File, &sib), Keep);
    }

    #[test]
    fn safety_window_of_a_local_file_system() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("global")).unwrap();
        for i in 0..8 {
            std::fs::write(dir.path().join(format!("global/{i}")), b"x").unwrap();
            std::thread::sleep(Duration::from_millis(3));
        }
        let w = safety_window(dir.path());
        assert!(w == FINE_SAFETY_WINDOW || w == SAFETY_WINDOW);
        assert!(w >= Duration::from_millis(100));
        assert_eq!(safety_window(Path::new("/nonexistent/lifeboat")), SAFETY_WINDOW);
    }

    #[test]
    fn stop_output() {
        let out =
            "0/3000100\u{1f}START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\nSTART TIMELINE: 1\n\u{1f}\n";
        let s = parse_stop(out).unwrap();
        assert_eq!(s.lsn, Lsn::parse("0/3000100").unwrap());
        assert!(s.label.starts_with("START WAL LOCATION"));
        assert!(s.tablespace_map.is_empty());
        assert!(parse_stop("garbage").is_err());
        assert_eq!(sql_literal("it's"), "'it''s'");
    }
}
