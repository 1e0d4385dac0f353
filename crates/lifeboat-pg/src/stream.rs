//! `wal stream`: WAL received over a replication slot (by `pg_receivewal`, into a local spool)
//! and stored in the repository within seconds, for an RPO of seconds instead of
//! `archive_timeout`.
//!
//! - Completed segments are stored in the WAL namespace exactly like `wal push` stores them
//!   (put-if-absent, so streaming and archive_command can both run: the second one to store a
//!   segment finds it already there), then removed from the spool and marked for push's fast path.
//! - The segment being written (`.partial`) is stored every `interval` when it changed, as
//!   `<segment>.partial-<seq>` in the namespace `walpartial-<system id>`; older partials of the
//!   same segment are deleted once a newer one is stored, and all of them once the segment is
//!   complete. `wal fetch` serves the newest partial when a segment itself is missing, so a restore
//!   after losing the server replays up to the last upload.
//! - Uploads of a growing partial deduplicate against the previous ones (the unchanged prefix is
//!   not stored again); that memory is dropped each time a segment completes.
//!
//! The replication slot makes the server keep WAL the stream has not received: if the stream
//! stays down, the server's disk fills (watch `pg_replication_slots`; drop the slot to give up).

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use lifeboat_repo::Repository;
use lifeboat_repo::index::Index;
use lifeboat_repo::named::{self, NamedWriter, PutStatus};

use crate::client::Client;
use crate::conn::ConnInfo;
use crate::error::{PgError, Result, classify_client_error};
use crate::physical::wal_namespace;
use crate::tools::Tools;
use crate::wal_names::{Segment, is_history};

/// Namespace of a cluster's partial segments.
pub fn partial_namespace(system_identifier: &str) -> String {
    format!("walpartial-{system_identifier}")
}

/// How to stream.
#[derive(Clone, Debug)]
pub struct StreamOptions {
    /// Replication slot (created if missing).
    pub slot: String,
    /// How often the spool is swept into the repository.
    pub interval: Duration,
    /// Stop after this long (None: until stopped).
    pub duration: Option<Duration>,
    /// Local folder pg_receivewal writes into.
    pub spool: PathBuf,
    /// How stored WAL is compressed (`auto`: LZ4 when a sweep finds a backlog of complete
    /// segments; partial uploads then too).
    pub compression: crate::wal::WalCompression,
}

/// What a stream session did.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct StreamReport {
    /// System identifier of the server.
    pub system_identifier: String,
    /// Completed segments stored.
    pub segments: usize,
    /// Partial-segment uploads.
    pub partial_uploads: usize,
    /// WAL bytes stored (segments and partials).
    pub bytes: u64,
}

/// Called around every sweep, so the caller can mirror what a sweep writes to other locations
/// (the command line's multi-location WAL; see `lifeboat_repo::mirror`).
pub trait SweepHook {
    /// Before a sweep.
    fn before(&mut self) {}
    /// After a sweep, whether it worked or not; `false` ends the stream (the caller says why).
    fn after(&mut self) -> bool {
        true
    }
}

/// No hook: one location.
pub struct NoHook;

impl SweepHook for NoHook {}

struct Streamer<'a> {
    repo: &'a Repository,
    ns: String,
    pns: String,
    dir: PathBuf,
    dedup: Index,
    uploaded: HashMap<String, SystemTime>,
    report: StreamReport,
    markers: crate::wal::Spool,
    compression: crate::wal::WalCompression,
}

/// Streams until `stop` is set, `duration` elapses, or pg_receivewal ends.
pub fn stream(
    repo: &Repository,
    tools: &Tools,
    conn: &ConnInfo,
    opts: &StreamOptions,
    markers: &crate::wal::Spool,
    stop: &AtomicBool,
    hook: &mut dyn SweepHook,
) -> Result<StreamReport> {
    let client = Client::connect(tools, conn)?;
    let row = client
        .query(
            "SELECT (SELECT system_identifier::text FROM pg_control_system()), current_setting('wal_level'), \
             (SELECT rolreplication OR rolsuper FROM pg_roles WHERE rolname = current_user)",
        )?
        .into_iter()
        .next()
        .unwrap_or_default();
    let get = |i: usize| row.get(i).cloned().flatten().unwrap_or_default();
    let sysid = get(0);
    if get(1) == "minimal" {
        return Err(PgError::NotConfigured {
            target: conn.url().into(),
            message: "wal_level is minimal: set wal_level = replica and restart".into(),
        });
    }
    if get(2) != "t" {
        return Err(PgError::NotConfigured {
            target: conn.url().into(),
            message: "the role lacks the REPLICATION attribute: ALTER ROLE … REPLICATION".into(),
        });
    }
    let dir = opts.spool.join(&sysid);
    std::fs::create_dir_all(&dir).map_err(|e| PgError::io(&dir, e))?;

    let mut create = tools.command("pg_receivewal")?;
    create
        .args(["--create-slot", "--if-not-exists", "--slot"])
        .arg(&opts.slot);
    conn.apply(&mut create);
    let out = create.stdin(Stdio::null()).output().map_err(|e| PgError::Spawn {
        tool: "pg_receivewal".into(),
        source: e,
    })?;
    if !out.status.success() {
        return Err(classify_client_error(
            "pg_receivewal --create-slot",
            conn.url(),
            out.status.to_string(),
            &String::from_utf8_lossy(&out.stderr),
        ));
    }
    let mut cmd = tools.command("pg_receivewal")?;
    cmd.arg("-D").arg(&dir).args([
        "--slot",
        &opts.slot,
        "--synchronous",
        "--no-loop",
        "--status-interval=1",
    ]);
    conn.apply(&mut cmd);
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| PgError::Spawn {
            tool: "pg_receivewal".into(),
            source: e,
        })?;
    let mut s = Streamer {
        repo,
        ns: wal_namespace(&sysid),
        pns: partial_namespace(&sysid),
        dir,
        dedup: Index::default(),
        uploaded: HashMap::new(),
        report: StreamReport {
            system_identifier: sysid,
            ..Default::default()
        },
        markers: markers.clone(),
        compression: opts.compression,
    };
    let t0 = Instant::now();
    let r = s.run(&mut child, opts, stop, t0, hook);
    let _ = child.kill();
    let status = child.wait();
    hook.before();
    let final_sweep = s.sweep();
    let go_on = hook.after();
    r?;
    final_sweep?;
    if !go_on {
        return Ok(s.report);
    }
    if let Ok(st) = status
        && !st.success()
        && !stop.load(Ordering::Relaxed)
        && opts.duration.is_none_or(|d| t0.elapsed() < d)
    {
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            use std::io::Read;
            let _ = e.read_to_string(&mut err);
        }
        return Err(classify_client_error("pg_receivewal", conn.url(), st.to_string(), &err));
    }
    Ok(s.report)
}

impl Streamer<'_> {
    fn run(
        &mut self,
        child: &mut Child,
        opts: &StreamOptions,
        stop: &AtomicBool,
        t0: Instant,
        hook: &mut dyn SweepHook,
    ) -> Result<()> {
        loop {
            let mut waited = Duration::ZERO;
            while waited < opts.interval {
                if stop.load(Ordering::Relaxed) || opts.duration.is_some_and(|d| t0.elapsed() >= d) {
                    return Ok(());
                }
                std::thread::sleep(Duration::from_millis(50));
                waited += Duration::from_millis(50);
            }
            hook.before();
            let swept = self.sweep();
            let go_on = hook.after();
            swept?;
            if !go_on {
                return Ok(());
            }
            if let Ok(Some(_)) = child.try_wait() {
                return Ok(()); // ended (connection lost): the caller reports its status
            }
        }
    }

    /// Stores completed segments, then the current partial if it changed.
    fn sweep(&mut self) -> Result<()> {
        let mut complete = Vec::new();
        let mut partials = Vec::new();
        for e in std::fs::read_dir(&self.dir)
            .map_err(|e| PgError::io(&self.dir, e))?
            .flatten()
        {
            let n = e.file_name().to_string_lossy().into_owned();
            if let Some(base) = n.strip_suffix(".partial") {
                partials.push((base.to_string(), e.path()));
            } else if n.len() == 24 || is_history(&n) {
                complete.push((n, e.path()));
            }
        }
        complete.sort();
        let codec = self.compression.codec_for(complete.len());
        if !complete.is_empty() {
            let mut w =
                NamedWriter::with_options(self.repo, self.dedup.clone(), crate::wal::wal_options(self.repo, codec));
            let mut hashes = Vec::new();
            for (n, p) in &complete {
                let data = std::fs::read(p).map_err(|e| PgError::io(p, e))?;
                hashes.push((n.clone(), blake3::hash(&data)));
                w.add(
                    &self.ns,
                    n,
                    &mut data.as_slice(),
                    Some(serde_json::json!({"kind": "wal", "via": "stream"})),
                )?;
            }
            let (outcomes, _) = w.finish_with_records()?;
            for o in outcomes {
                let p = self.dir.join(&o.name);
                match o.status {
                    PutStatus::Stored | PutStatus::AlreadyStored => {
                        if let Some((_, h)) = hashes.iter().find(|(n, _)| *n == o.name) {
                            self.markers.mark(&o.name, o.size, Some(h), None);
                        }
                        self.report.segments += 1;
                        self.report.bytes += o.size;
                        let _ = std::fs::remove_file(&p);
                        self.drop_partials(&o.name, None)?;
                        self.uploaded.remove(&o.name);
                    }
                    PutStatus::Conflict => return Err(PgError::WalConflict(o.name)),
                }
            }
            self.dedup = Index::default();
        }
        for (base, p) in partials {
            let Ok(meta) = std::fs::metadata(&p) else { continue };
            let mtime = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
            if self.uploaded.get(&base) == Some(&mtime) {
                continue;
            }
            let seq = self.next_seq(&base)?;
            let name = format!("{base}.partial-{seq:06}");
            let data = std::fs::read(&p).map_err(|e| PgError::io(&p, e))?;
            let mut w =
                NamedWriter::with_options(self.repo, self.dedup.clone(), crate::wal::wal_options(self.repo, codec));
            w.add(
                &self.pns,
                &name,
                &mut data.as_slice(),
                Some(serde_json::json!({"kind": "partial"})),
            )?;
            let (_, records) = w.finish_with_records()?;
            for r in &records {
                self.dedup.add_pack(r);
            }
            self.report.partial_uploads += 1;
            self.report.bytes += data.len() as u64;
            self.uploaded.insert(base.clone(), mtime);
            self.drop_partials(&base, Some(&name))?;
        }
        Ok(())
    }

    fn partials_of(&self, base: &str) -> Result<Vec<String>> {
        let prefix = format!("{base}.partial-");
        Ok(named::list(self.repo, &self.pns)?
            .into_iter()
            .filter(|n| n.starts_with(&prefix))
            .collect())
    }

    fn next_seq(&self, base: &str) -> Result<u64> {
        Ok(self
            .partials_of(base)?
            .iter()
            .filter_map(|n| n.rsplit('-').next()?.parse::<u64>().ok())
            .max()
            .map_or(0, |m| m + 1))
    }

    /// Deletes the stored partials of a segment, except `keep`.
    fn drop_partials(&self, base: &str, keep: Option<&str>) -> Result<()> {
        for n in self.partials_of(base)? {
            if Some(n.as_str()) != keep {
                named::delete(self.repo, &self.pns, &n)?;
            }
        }
        Ok(())
    }
}

/// The newest stored partial of `segment`, if any (for `wal fetch` when the segment is missing).
pub fn newest_partial(
    repo: &Repository,
    system_identifier: &str,
    segment: &str,
) -> Result<Option<named::NamedManifest>> {
    if Segment::parse(segment, 16 << 20).is_none() && segment.len() != 24 {
        return Ok(None);
    }
    let pns = partial_namespace(system_identifier);
    let prefix = format!("{segment}.partial-");
    let newest = named::list(repo, &pns)?
        .into_iter()
        .filter(|n| n.starts_with(&prefix))
        .max();
    match newest {
        Some(n) => Ok(named::read_manifest(repo, &pns, &n)?),
        None => Ok(None),
    }
}
