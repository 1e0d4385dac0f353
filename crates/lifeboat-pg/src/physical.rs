//! Physical backups: `pg_basebackup` writes a tar of the data directory to its standard output;
//! each tar entry goes straight into the repository through the engine's snapshot writer. No
//! temporary copy on disk, bounded memory, and relation files that did not change since the last
//! backup deduplicate chunk by chunk.
//!
//! The backup is taken with `-X none`: its WAL comes from continuous archiving (`lifeboat wal
//! push`), so the server must archive. `pg_basebackup` then waits until the last segment the
//! backup needs is archived before it finishes, and only then is the snapshot committed: a
//! committed physical snapshot is restorable from the repository alone.

use std::io::Read;
use std::process::Stdio;

use lifeboat_repo::Repository;
use lifeboat_repo::snapshot_writer::{EntryMeta, SnapshotWriter, WriteResult, WriterOptions};

use crate::client::Client;
use crate::conn::ConnInfo;
use crate::error::{PgError, Result, classify_client_error};
use crate::tools::Tools;
use crate::wal_names::{Lsn, Segment};

/// `source_kind` of physical snapshots.
pub const SOURCE_KIND: &str = "postgres-physical";

/// Options of a physical backup.
#[derive(Clone, Debug)]
pub struct PhysicalOptions {
    /// Name of the source in the config (recorded, used to find its snapshots).
    pub source_name: String,
    /// Tags.
    pub tags: Vec<String>,
    /// Host recorded (default: this machine's).
    pub host: Option<String>,
    /// How long to wait for the server to archive the backup's WAL before giving up
    /// (it waits forever otherwise when archiving fails).
    pub archive_wait: std::time::Duration,
}

impl Default for PhysicalOptions {
    fn default() -> Self {
        PhysicalOptions {
            source_name: String::new(),
            tags: Vec::new(),
            host: None,
            archive_wait: std::time::Duration::from_secs(300),
        }
    }
}

/// What the server told us before the backup.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ServerInfo {
    /// `pg_control_system().system_identifier`.
    pub system_identifier: String,
    /// `server_version_num`, e.g. 150010.
    pub server_version_num: u32,
    /// WAL segment size in bytes.
    pub wal_segment_size: u64,
    /// `wal_level`.
    pub wal_level: String,
    /// `archive_mode`.
    pub archive_mode: String,
    /// `archive_command`.
    pub archive_command: String,
    /// `pg_is_in_recovery()`: a standby, whose backup's WAL is archived by the primary, when
    /// its segment is full or `archive_timeout` passed.
    pub in_recovery: bool,
}

/// Reads the settings a physical backup depends on and refuses a server that cannot give a
/// restorable backup ([`PgError::NotConfigured`], with the fix in the message).
pub fn check_server(client: &Client) -> Result<ServerInfo> {
    let rows = client.query(
        "SELECT current_setting('wal_level'), current_setting('archive_mode'), current_setting('archive_command'), \
         current_setting('server_version_num'), (SELECT setting FROM pg_settings WHERE name = 'wal_segment_size'), \
         (SELECT system_identifier::text FROM pg_control_system()), \
         (SELECT rolreplication OR rolsuper FROM pg_roles WHERE rolname = current_user), pg_is_in_recovery()",
    )?;
    let r = rows
        .into_iter()
        .next()
        .ok_or_else(|| PgError::Invalid("server returned no settings".into()))?;
    let get = |i: usize| r.get(i).cloned().flatten().unwrap_or_default();
    let info = ServerInfo {
        wal_level: get(0),
        archive_mode: get(1),
        archive_command: get(2),
        server_version_num: get(3).parse().unwrap_or(0),
        wal_segment_size: get(4).parse().unwrap_or(16 << 20),
        system_identifier: get(5),
        in_recovery: get(7) == "t",
    };
    let target = client.conn().url().to_string();
    let not_configured = |message: String| PgError::NotConfigured {
        target: target.clone(),
        message,
    };
    if info.wal_level == "minimal" {
        return Err(not_configured(
            "wal_level is minimal: set wal_level = replica (or logical) and restart".into(),
        ));
    }
    if info.archive_mode == "off" {
        return Err(not_configured(
            "archive_mode is off: a physical backup is restorable only with its WAL; set archive_mode = on and archive_command = 'lifeboat wal push %p' and restart".into(),
        ));
    }
    if info.archive_command.trim().is_empty() || info.archive_command == "(disabled)" {
        return Err(not_configured(
            "archive_command is empty: set archive_command = 'lifeboat wal push %p'".into(),
        ));
    }
    if get(6) != "t" {
        return Err(not_configured(
            "the backup role lacks the REPLICATION attribute: ALTER ROLE … REPLICATION".into(),
        ));
    }
    Ok(info)
}

/// Namespace of a cluster's WAL in the repository.
pub fn wal_namespace(system_identifier: &str) -> String {
    format!("wal-{system_identifier}")
}

/// Takes a physical backup of the server at `conn` into `repo`.
pub fn backup(repo: &Repository, tools: &Tools, conn: &ConnInfo, opts: &PhysicalOptions) -> Result<WriteResult> {
    let client = Client::connect(tools, conn)?;
    let info = check_server(&client)?;
    // pg_basebackup streams one tablespace to standard output, no more.
    if let Some(t) = crate::tablespaces::list(&client)?.first() {
        return Err(PgError::NotConfigured {
            target: conn.url().into(),
            message: format!(
                "tablespace {} is at {}: the pg_basebackup method cannot stream a tablespace outside the data directory; run lifeboat on the database host with physical_method = \"local\" (or \"auto\") and data_dir, which backs tablespaces up",
                t.name, t.location
            ),
        });
    }
    let mut wo = WriterOptions::new(SOURCE_KIND, vec![conn.url().to_string()]);
    wo.tags = opts.tags.clone();
    if let Some(h) = &opts.host {
        wo.host = h.clone();
    }
    let mut writer = SnapshotWriter::new(repo, wo)?;

    let mut cmd = tools.command("pg_basebackup")?;
    cmd.args(["-D", "-", "-F", "t", "-X", "none", "--checkpoint=fast"])
        .arg(format!("--label=lifeboat {}", opts.source_name));
    conn.apply(&mut cmd);
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| PgError::Spawn {
        tool: "pg_basebackup".into(),
        source: e,
    })?;
    let stderr = child.stderr.take().expect("piped");
    let pid = rustix::process::Pid::from_child(&child);
    let archive_wait = opts.archive_wait;
    let gave_up = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let gave_up2 = gave_up.clone();
    // The server finishes a base backup only once the WAL it needs is archived; if archiving
    // fails (repository unreachable, archive_command broken) it waits forever, warning every
    // minute. Give up after `archive_wait` instead of hanging.
    let err_thread = std::thread::spawn(move || {
        use std::io::BufRead;
        let started = std::time::Instant::now();
        let mut s = String::new();
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if line.contains("still waiting for all required WAL segments to be archived")
                && started.elapsed() >= archive_wait
                && !gave_up2.swap(true, std::sync::atomic::Ordering::SeqCst)
            {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
            }
            s.push_str(&line);
            s.push('\n');
        }
        s
    });
    let mut stdout = child.stdout.take().expect("piped");
    let streamed = stream_tar(&mut writer, &mut stdout);
    if streamed.is_ok() {
        // The tar reader stops at the end-of-archive blocks; pg_basebackup may still write
        // padding after them. Read it, or it dies of SIGPIPE on a finished backup.
        let _ = std::io::copy(&mut stdout, &mut std::io::sink());
    }
    drop(stdout);
    // pg_basebackup's exit status explains a broken stream better than the tar parser does.
    let status = child.wait().map_err(|e| PgError::Spawn {
        tool: "pg_basebackup".into(),
        source: e,
    })?;
    let err_text = err_thread.join().unwrap_or_default();
    if gave_up.load(std::sync::atomic::Ordering::SeqCst) {
        return Err(PgError::NotConfigured {
            target: conn.url().into(),
            message: format!(
                "the backup's WAL was not archived within {} s: archive_command is failing (see pg_stat_archiver.last_failed_wal and the server log); nothing was committed",
                archive_wait.as_secs()
            ),
        });
    }
    if !status.success() {
        return Err(classify_client_error(
            "pg_basebackup",
            conn.url(),
            status.to_string(),
            &err_text,
        ));
    }
    let found = streamed?;
    let label = found
        .backup_label
        .ok_or_else(|| PgError::Invalid("pg_basebackup's output has no backup_label".into()))?;
    let start = parse_label(&label)?;
    let stop = found
        .manifest
        .as_deref()
        .and_then(manifest_end_lsn)
        .unwrap_or(start.lsn);
    let seg = info.wal_segment_size;
    let stop_wal = Segment::of(start.timeline, stop, seg).name(seg);
    // The segment holding the backup's last byte (pg_basebackup waited for its archiving).
    let last = Segment::of(start.timeline, Lsn(stop.0.saturating_sub(1)), seg).name(seg);
    wait_wal_in_repository(repo, &info, &last, conn)?;
    let mut source = source_metadata(&opts.source_name, "basebackup", &info, &start, stop, stop_wal);
    source.insert("backup_type".into(), "full".into());
    let source = serde_json::Value::Object(source);
    Ok(writer.commit(Some(source))?)
}

/// How long a backup waits, once the server reports its WAL archived, for that WAL to appear
/// in this repository (`wal stream` stores a completed segment within its interval).
pub const WAL_IN_REPOSITORY_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// The server archived the backup's last segment, but with whatever `archive_command` it has:
/// a backup is restorable from this repository only if that WAL is *here*. A server archiving
/// into another repository (or with `cp`), with no `wal stream` into this one, would otherwise
/// leave a snapshot that no restore can make consistent, found out only at the next restore
/// test. Refused (exit 14) before the commit: nothing is committed.
///
/// Not checked for a standby: its backup's last segment reaches the archive only once the
/// primary archives it (a full segment, `archive_timeout`), which may be minutes away; the
/// restore test proves those backups.
pub(crate) fn wait_wal_in_repository(repo: &Repository, info: &ServerInfo, name: &str, conn: &ConnInfo) -> Result<()> {
    if info.in_recovery {
        return Ok(());
    }
    let ns = wal_namespace(&info.system_identifier);
    let started = std::time::Instant::now();
    loop {
        // A failed read (a storage hiccup) is asked again, within the same wait.
        let found = lifeboat_repo::named::read_manifest(repo, &ns, name);
        if matches!(found, Ok(Some(_))) {
            return Ok(());
        }
        if started.elapsed() >= WAL_IN_REPOSITORY_WAIT {
            found?;
            return Err(PgError::NotConfigured {
                target: conn.url().into(),
                message: format!(
                    "the server archived the backup's WAL ({name}) but not into this repository ({}; nothing under {ns} after {} s): point archive_command at it (lifeboat wal push %p with this repository) or run `lifeboat wal stream` into it; nothing was committed",
                    repo.backend().location(),
                    WAL_IN_REPOSITORY_WAIT.as_secs()
                ),
            });
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// The source metadata every (non-forensic) physical snapshot carries, whichever method made
/// it: restore, restore tests, `wal check` and retention read these keys. `stop_wal` is the
/// last segment the backup needs, which each method determines its own way.
pub(crate) fn source_metadata(
    source_name: &str,
    method: &str,
    info: &ServerInfo,
    start: &LabelInfo,
    stop: Lsn,
    stop_wal: String,
) -> serde_json::Map<String, serde_json::Value> {
    let seg = info.wal_segment_size;
    let serde_json::Value::Object(m) = serde_json::json!({
        "source_name": source_name,
        "method": method,
        "system_identifier": info.system_identifier,
        "server_version_num": info.server_version_num,
        "wal_segment_size": seg,
        "wal_namespace": wal_namespace(&info.system_identifier),
        "timeline": start.timeline,
        "start_lsn": start.lsn.to_string(),
        "stop_lsn": stop.to_string(),
        "start_wal": Segment::of(start.timeline, start.lsn, seg).name(seg),
        "stop_wal": stop_wal,
        "start_time": start.time,
        "stop_time": jiff::Timestamp::now(),
        "forensic": false,
    }) else {
        unreachable!("a JSON object literal")
    };
    m
}

/// The outcome of a forensic copy.
#[derive(Clone, Debug)]
pub struct ForensicCopy {
    /// The snapshot.
    pub result: WriteResult,
    /// Files that could not be read (left out), with the reason.
    pub unreadable: Vec<String>,
}

/// Copies a (possibly damaged, possibly running) data directory file by file, without any
/// consistency guarantee, as a snapshot labelled `forensic`: what `backup db --force` takes when
/// a proper backup is impossible. Unreadable files are left out and listed. Such a snapshot is
/// never chosen by `latest` or a recovery target; it can be restored by its id.
pub fn forensic_copy(repo: &Repository, data_dir: &std::path::Path, opts: &PhysicalOptions) -> Result<ForensicCopy> {
    use std::os::unix::fs::MetadataExt;
    if !data_dir.join("PG_VERSION").exists() {
        return Err(PgError::Invalid(format!(
            "{}: not a PostgreSQL data directory (no PG_VERSION)",
            data_dir.display()
        )));
    }
    let mut wo = WriterOptions::new(SOURCE_KIND, vec![format!("forensic:{}", data_dir.display())]);
    wo.tags = opts.tags.clone();
    wo.tags.push("forensic".into());
    if let Some(h) = &opts.host {
        wo.host = h.clone();
    }
    let mut writer = SnapshotWriter::new(repo, wo)?;
    let mut unreadable = Vec::new();
    let mut stack = vec![(data_dir.to_path_buf(), String::new())];
    while let Some((dir, rel)) = stack.pop() {
        let mut entries: Vec<_> = match std::fs::read_dir(&dir) {
            Ok(rd) => rd.filter_map(|e| e.ok()).collect(),
            Err(e) => {
                unreadable.push(format!("{}: {e}", dir.display()));
                continue;
            }
        };
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let name = e.file_name().to_string_lossy().into_owned();
            let path = e.path();
            let inner = if rel.is_empty() {
                name.clone()
            } else {
                format!("{rel}/{name}")
            };
            let Ok(m) = std::fs::symlink_metadata(&path) else {
                unreadable.push(format!("{}: vanished", path.display()));
                continue;
            };
            let meta = EntryMeta {
                mode: m.mode(),
                uid: m.uid(),
                gid: m.gid(),
                mtime_ns: m.mtime().saturating_mul(1_000_000_000).saturating_add(m.mtime_nsec()),
            };
            if m.is_dir() {
                writer.add_dir(&inner, &meta)?;
                stack.push((path, inner));
            } else if m.is_symlink() {
                if let Ok(t) = std::fs::read_link(&path) {
                    writer.add_symlink(&inner, &t, &meta)?;
                }
            } else if m.is_file() {
                let mut f = match std::fs::File::open(&path) {
                    Ok(f) => f,
                    Err(err) => {
                        unreadable.push(format!("{}: {err}", path.display()));
                        continue;
                    }
                };
                match writer.add_file(&inner, &meta, &mut f) {
                    Ok(_) => {}
                    Err(lifeboat_repo::RepoError::Io { source, .. }) => {
                        unreadable.push(format!("{}: {source}", path.display()));
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        }
    }
    let sysid = crate::wal::system_identifier(data_dir).ok();
    let source = serde_json::json!({
        "source_name": opts.source_name,
        "forensic": true,
        "data_dir": data_dir.display().to_string(),
        "system_identifier": sysid,
        "wal_namespace": sysid.as_deref().map(wal_namespace),
        "unreadable": unreadable,
    });
    Ok(ForensicCopy {
        result: writer.commit(Some(source))?,
        unreadable,
    })
}

struct Streamed {
    backup_label: Option<String>,
    manifest: Option<String>,
}

/// Small files lifeboat also reads for itself (kept in memory, then stored like any entry).
const KEEP_IN_MEMORY: &[&str] = &["backup_label", "backup_manifest"];

fn stream_tar(writer: &mut SnapshotWriter, input: impl Read) -> Result<Streamed> {
    let mut ar = tar::Archive::new(input);
    let mut out = Streamed {
        backup_label: None,
        manifest: None,
    };
    let bad = |e: std::io::Error| PgError::Invalid(format!("reading pg_basebackup's tar stream: {e}"));
    for entry in ar.entries().map_err(bad)? {
        let mut entry = entry.map_err(bad)?;
        let path = entry.path().map_err(bad)?.to_string_lossy().into_owned();
        let path = path.trim_start_matches("./").trim_end_matches('/').to_string();
        if path.is_empty() || path == "." {
            continue;
        }
        let h = entry.header();
        let meta = EntryMeta {
            mode: h.mode().unwrap_or(0o600),
            uid: h.uid().unwrap_or(0) as u32,
            gid: h.gid().unwrap_or(0) as u32,
            mtime_ns: (h.mtime().unwrap_or(0) as i64).saturating_mul(1_000_000_000),
        };
        let kind = h.entry_type();
        if kind.is_dir() {
            writer.add_dir(&path, &meta)?;
        } else if kind.is_symlink() {
            let target = entry
                .link_name()
                .map_err(bad)?
                .ok_or_else(|| PgError::Invalid(format!("symlink {path} without target")))?
                .into_owned();
            writer.add_symlink(&path, &target, &meta)?;
        } else if kind.is_file() {
            if KEEP_IN_MEMORY.contains(&path.as_str()) {
                let mut buf = Vec::new();
                entry.read_to_end(&mut buf).map_err(bad)?;
                writer.add_file(&path, &meta, &mut buf.as_slice())?;
                let text = String::from_utf8_lossy(&buf).into_owned();
                if path == "backup_label" {
                    out.backup_label = Some(text);
                } else {
                    out.manifest = Some(text);
                }
            } else {
                writer.add_file(&path, &meta, &mut entry).map_err(|e| match e {
                    lifeboat_repo::RepoError::Io { source, .. } => bad(source),
                    e => e.into(),
                })?;
            }
        } else {
            return Err(PgError::Invalid(format!(
                "unexpected entry type {kind:?} for {path} in pg_basebackup's output"
            )));
        }
    }
    Ok(out)
}

/// What backup_label says.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelInfo {
    /// START WAL LOCATION.
    pub lsn: Lsn,
    /// START TIMELINE.
    pub timeline: u32,
    /// START TIME, as written.
    pub time: String,
}

/// Parses a backup_label file.
pub fn parse_label(text: &str) -> Result<LabelInfo> {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_string()))
            .ok_or_else(|| PgError::Invalid(format!("backup_label has no {name}")))
    };
    let loc = field("START WAL LOCATION:")?;
    let lsn = Lsn::parse(loc.split_whitespace().next().unwrap_or(""))?;
    let timeline = field("START TIMELINE:")?
        .parse()
        .map_err(|_| PgError::Invalid("backup_label: bad START TIMELINE".into()))?;
    Ok(LabelInfo {
        lsn,
        timeline,
        time: field("START TIME:").unwrap_or_default(),
    })
}

/// The end of the WAL range a backup needs, from its backup_manifest.
fn manifest_end_lsn(text: &str) -> Option<Lsn> {
    let v: serde_json::Value = serde_json::from_str(text).ok()?;
    v.get("WAL-Ranges")?
        .as_array()?
        .iter()
        .filter_map(|r| Lsn::parse(r.get("End-LSN")?.as_str()?).ok())
        .max()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_and_manifest() {
        let l = parse_label(
            "START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\nCHECKPOINT LOCATION: 0/2000060\nSTART TIME: 2026-11-26 06:39:13 UTC\nSTART TIMELINE: 1\n",
        )
        .unwrap();
        assert_eq!(l.lsn, Lsn::parse("0/2000028").unwrap());
        assert_eq!(l.timeline, 1);
        let m = r#"{"PostgreSQL-Backup-Manifest-Version": 1, "WAL-Ranges": [{ "Timeline": 1, "Start-LSN": "0/2000028", "End-LSN": "0/2000100" }]}"#;
        assert_eq!(manifest_end_lsn(m), Some(Lsn::parse("0/2000100").unwrap()));
    }
}
