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
    /// Times pg_receivewal was started again after losing the connection.
    pub reconnects: usize,
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
    /// pg_receivewal lost the connection (`error`, which retrying can fix); the stream starts it
    /// again after `wait`, unless stopped first.
    fn reconnecting(&mut self, _error: &PgError, _wait: Duration) {}
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

/// Shortest `--interval`: below it a sweep loop would only burn CPU (every sweep lists the
/// spool and the repository's partials).
pub const MIN_INTERVAL: Duration = Duration::from_millis(10);

/// First wait before reconnecting; doubled after each failed attempt up to [`MAX_BACKOFF`], so a
/// server that is down for long is not hammered and a quick restart costs about a second.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// Longest wait between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A pg_receivewal run at least this long counts as a working connection: the next failure
/// waits [`FIRST_BACKOFF`] again.
const HEALTHY_RUN: Duration = Duration::from_secs(10);
/// How long a slot still held at start may take to be released: a stream stopped just before
/// leaves a walsender on the server that ends within moments.
const SLOT_RELEASE_GRACE: Duration = Duration::from_secs(5);
/// How often the loops look at the stop flag, the duration and pg_receivewal.
const POLL: Duration = Duration::from_millis(50);

/// Streams until `stop` is set, `duration` elapses, or pg_receivewal fails for a reason that
/// retrying cannot fix. When the connection is lost (server restart, network), what was received
/// is stored, the hook is told, and pg_receivewal is started again on the same slot after a
/// back-off (1 s doubling to 30 s), so a service keeps its RPO across server restarts.
pub fn stream(
    repo: &Repository,
    tools: &Tools,
    conn: &ConnInfo,
    opts: &StreamOptions,
    markers: &crate::wal::Spool,
    stop: &AtomicBool,
    hook: &mut dyn SweepHook,
) -> Result<StreamReport> {
    if opts.interval < MIN_INTERVAL {
        return Err(PgError::Invalid(format!(
            "wal stream: --interval {:?} is below the minimum of {:?}",
            opts.interval, MIN_INTERVAL
        )));
    }
    let client = Client::connect(tools, conn)?;
    let sysid = check_server(&client, conn)?;
    wait_for_free_slot(&client, conn, &opts.slot)?;
    let mut s = Streamer::new(repo, sysid, opts, markers)?;
    let until = Until {
        stop,
        t0: Instant::now(),
        duration: opts.duration,
    };
    let mut backoff = FIRST_BACKOFF;
    loop {
        let started = Instant::now();
        let reconnect = s.report.reconnects > 0;
        let Some(err) = s.session(tools, conn, opts, &until, hook, reconnect)? else {
            return Ok(s.report);
        };
        if until.reached() {
            return Ok(s.report);
        }
        if !crate::error::is_transient(&err) {
            return Err(err);
        }
        if started.elapsed() >= HEALTHY_RUN {
            backoff = FIRST_BACKOFF;
        }
        hook.reconnecting(&err, backoff);
        if !until.sleep(backoff) {
            return Ok(s.report);
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
        s.report.reconnects += 1;
    }
}

/// When the stream ends: the stop flag (signals) or the duration.
struct Until<'a> {
    stop: &'a AtomicBool,
    t0: Instant,
    duration: Option<Duration>,
}

impl Until<'_> {
    fn reached(&self) -> bool {
        self.stop.load(Ordering::Relaxed) || self.duration.is_some_and(|d| self.t0.elapsed() >= d)
    }

    /// Sleeps `d` unless the end comes first; false when it did.
    fn sleep(&self, d: Duration) -> bool {
        let end = Instant::now() + d;
        loop {
            if self.reached() {
                return false;
            }
            let now = Instant::now();
            if now >= end {
                return true;
            }
            std::thread::sleep((end - now).min(POLL));
        }
    }
}

/// The server's system identifier, after checking it can stream (wal_level, REPLICATION).
fn check_server(client: &Client, conn: &ConnInfo) -> Result<String> {
    let row = client
        .query(
            "SELECT (SELECT system_identifier::text FROM pg_control_system()), current_setting('wal_level'), \
             (SELECT rolreplication OR rolsuper FROM pg_roles WHERE rolname = current_user)",
        )?
        .into_iter()
        .next()
        .unwrap_or_default();
    let get = |i: usize| row.get(i).cloned().flatten().unwrap_or_default();
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
    Ok(get(0))
}

/// Waits (up to [`SLOT_RELEASE_GRACE`]) until no one streams from `slot`, else fails naming the
/// holder: two receivers cannot share a slot, and a client we did not start is not ours to end.
fn wait_for_free_slot(client: &Client, conn: &ConnInfo, slot: &str) -> Result<()> {
    let sql = format!(
        "SELECT active_pid FROM pg_replication_slots WHERE slot_name = {} AND active",
        crate::logical::quote_literal(slot)
    );
    let t0 = Instant::now();
    loop {
        let Some(pid) = client.query_value(&sql)?.filter(|p| !p.is_empty()) else {
            return Ok(());
        };
        if t0.elapsed() >= SLOT_RELEASE_GRACE {
            return Err(PgError::SlotInUse {
                target: conn.url().into(),
                slot: slot.into(),
                holder: slot_holder(client, conn, slot, &pid),
            });
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Who holds a slot: the server's view (application, walsender PID, client address) and the
/// PIDs of pg_receivewal processes on this machine that stream from this slot of this server.
fn slot_holder(client: &Client, conn: &ConnInfo, slot: &str, walsender: &str) -> String {
    let sql = format!(
        "SELECT application_name, coalesce(host(client_addr), 'a local socket') FROM pg_stat_replication WHERE pid = {}",
        crate::logical::quote_literal(walsender)
    );
    let row = client
        .query(&sql)
        .ok()
        .and_then(|r| r.into_iter().next())
        .unwrap_or_default();
    let get = |i: usize| row.get(i).cloned().flatten().unwrap_or_default();
    let app = match get(0) {
        a if a.is_empty() => "a client".to_string(),
        a => a,
    };
    let mut holder = format!("{app} (server PID {walsender}");
    if !get(1).is_empty() {
        holder.push_str(&format!(", from {}", get(1)));
    }
    holder.push(')');
    let local = local_receivers(slot, conn.url());
    if !local.is_empty() {
        let pids: Vec<String> = local.iter().map(u32::to_string).collect();
        holder.push_str(&format!(
            "; pg_receivewal PID {} on this machine uses it",
            pids.join(", ")
        ));
    }
    holder
}

/// PIDs of the pg_receivewal processes on this machine started on `slot` of the server at `url`
/// (as lifeboat starts them: `--slot <slot>`, `--dbname=<url>`).
fn local_receivers(slot: &str, url: &str) -> Vec<u32> {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut pids: Vec<u32> = procs
        .flatten()
        .filter_map(|e| {
            let pid = e.file_name().to_str()?.parse::<u32>().ok()?;
            let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
            let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
            let is_receiver = args.first()?.ends_with(b"pg_receivewal");
            let has = |flag: &str, value: &str| {
                let joined = format!("{flag}={value}");
                args.windows(2)
                    .any(|w| w[0] == flag.as_bytes() && w[1] == value.as_bytes())
                    || args.contains(&joined.as_bytes())
            };
            (is_receiver && has("--slot", slot) && has("--dbname", url)).then_some(pid)
        })
        .collect();
    pids.sort_unstable();
    pids
}

/// Creates the slot unless it exists (again at every reconnection: a slot dropped meanwhile is
/// recreated instead of failing the stream).
/// Before streaming again after a lost connection: the slot must still exist (dropped, it is
/// the operator giving up on the stream, or a server restored without it; created anew it would
/// start at the current position and leave a silent gap), and no other client may have taken
/// it meanwhile.
fn slot_still_ours(tools: &Tools, conn: &ConnInfo, slot: &str) -> Result<()> {
    let client = Client::connect(tools, conn)?;
    let exists = client.query_value(&format!(
        "SELECT count(*) FROM pg_replication_slots WHERE slot_name = {}",
        crate::logical::quote_literal(slot)
    ))?;
    if exists.as_deref() != Some("1") {
        return Err(PgError::NotConfigured {
            target: conn.url().into(),
            message: format!(
                "replication slot {slot:?} was dropped while the stream was disconnected: WAL written meanwhile may be lost to it; start `lifeboat wal stream` again to create it anew, then take a base backup"
            ),
        });
    }
    wait_for_free_slot(&client, conn, slot)
}

fn create_slot(tools: &Tools, conn: &ConnInfo, slot: &str) -> Result<()> {
    let mut create = tools.command("pg_receivewal")?;
    create.args(["--create-slot", "--if-not-exists", "--slot"]).arg(slot);
    conn.apply(&mut create);
    let out = create.stdin(Stdio::null()).output().map_err(|e| PgError::Spawn {
        tool: "pg_receivewal".into(),
        source: e,
    })?;
    if out.status.success() {
        return Ok(());
    }
    Err(classify_client_error(
        "pg_receivewal --create-slot",
        conn.url(),
        out.status.to_string(),
        &String::from_utf8_lossy(&out.stderr),
    ))
}

/// Starts pg_receivewal into `dir`. It gets SIGINT when the thread that started it ends (also
/// when lifeboat is killed with SIGKILL), so it never outlives the stream and keeps the slot.
fn spawn_receiver(tools: &Tools, conn: &ConnInfo, dir: &std::path::Path, slot: &str) -> Result<Child> {
    let mut cmd = tools.command("pg_receivewal")?;
    cmd.arg("-D")
        .arg(dir)
        .args(["--slot", slot, "--synchronous", "--no-loop", "--status-interval=1"]);
    conn.apply(&mut cmd);
    die_with_parent(&mut cmd);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| PgError::Spawn {
            tool: "pg_receivewal".into(),
            source: e,
        })
}

/// How long pg_receivewal gets to end after SIGINT before it is killed.
const RECEIVER_STOP_GRACE: Duration = Duration::from_secs(5);

/// Stops pg_receivewal and returns its exit status. SIGINT first, which every version handles
/// by finishing its current write: killed while it zero-fills a new segment, it leaves a
/// `.partial` of the wrong size that the next pg_receivewal refuses to start on. SIGKILL only
/// if it does not end within [`RECEIVER_STOP_GRACE`].
fn stop_receiver(child: &mut Child) -> std::io::Result<std::process::ExitStatus> {
    if let Ok(Some(st)) = child.try_wait() {
        return Ok(st);
    }
    interrupt(child);
    let t0 = Instant::now();
    while t0.elapsed() < RECEIVER_STOP_GRACE {
        if let Some(st) = child.try_wait()? {
            return Ok(st);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    child.wait()
}

/// Sends SIGINT to a child that has not been waited for.
#[cfg(unix)]
#[allow(unsafe_code)]
fn interrupt(child: &Child) {
    let Ok(pid) = libc::pid_t::try_from(child.id()) else {
        return;
    };
    // SAFETY: kill has no memory effects; the child is not reaped yet (try_wait saw it
    // running and nothing else waits for it), so the PID is still its own.
    unsafe {
        libc::kill(pid, libc::SIGINT);
    }
}

#[cfg(not(unix))]
fn interrupt(_child: &Child) {}

/// Asks the kernel to send the child SIGINT (see [`stop_receiver`] for why not SIGTERM) when
/// the spawning thread ends (Linux).
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn die_with_parent(cmd: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs in the forked child before exec and only makes two
    // async-signal-safe system calls (prctl, getppid); it allocates nothing.
    unsafe {
        let parent = libc::getpid();
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGINT) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may have died between fork and prctl: then no signal would come.
            if libc::getppid() != parent {
                return Err(std::io::Error::other("lifeboat ended while starting pg_receivewal"));
            }
            Ok(())
        });
    }
}

#[cfg(not(target_os = "linux"))]
fn die_with_parent(_cmd: &mut std::process::Command) {}

impl<'a> Streamer<'a> {
    /// A streamer for the server `sysid`, its spool folder created.
    fn new(repo: &'a Repository, sysid: String, opts: &StreamOptions, markers: &crate::wal::Spool) -> Result<Self> {
        let dir = opts.spool.join(&sysid);
        std::fs::create_dir_all(&dir).map_err(|e| PgError::io(&dir, e))?;
        Ok(Streamer {
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
        })
    }

    /// One pg_receivewal run: create the slot, stream and sweep until the end or until
    /// pg_receivewal ends, then stop it and store what it received. Returns pg_receivewal's
    /// failure, classified, when it ended by itself (None: the stream is over).
    fn session(
        &mut self,
        tools: &Tools,
        conn: &ConnInfo,
        opts: &StreamOptions,
        until: &Until,
        hook: &mut dyn SweepHook,
        reconnect: bool,
    ) -> Result<Option<PgError>> {
        let prepared = if reconnect {
            slot_still_ours(tools, conn, &opts.slot)
        } else {
            create_slot(tools, conn, &opts.slot)
        };
        if let Err(e) = prepared {
            return if crate::error::is_transient(&e) {
                Ok(Some(e))
            } else {
                Err(e)
            };
        }
        let mut child = spawn_receiver(tools, conn, &self.dir, &opts.slot)?;
        let r = self.run(&mut child, opts, until, hook);
        let status = stop_receiver(&mut child);
        hook.before();
        let final_sweep = self.sweep();
        let go_on = hook.after();
        let ended_by_itself = r?;
        final_sweep?;
        if !go_on || !ended_by_itself || until.reached() {
            return Ok(None);
        }
        match status {
            Ok(st) if !st.success() => {
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    use std::io::Read;
                    let _ = e.read_to_string(&mut err);
                }
                Ok(Some(classify_client_error(
                    "pg_receivewal",
                    conn.url(),
                    st.to_string(),
                    &err,
                )))
            }
            _ => Ok(None),
        }
    }

    /// Sweeps every `interval` until the end, a hook says stop, or pg_receivewal ends; true in
    /// the last case. The end is checked before every sweep, so a sweep slower than the interval
    /// does not outlast `--duration`.
    fn run(
        &mut self,
        child: &mut Child,
        opts: &StreamOptions,
        until: &Until,
        hook: &mut dyn SweepHook,
    ) -> Result<bool> {
        loop {
            let next = Instant::now() + opts.interval;
            loop {
                if until.reached() {
                    return Ok(false);
                }
                if let Ok(Some(_)) = child.try_wait() {
                    return Ok(true); // ended (connection lost): the caller reads its status
                }
                let now = Instant::now();
                if now >= next {
                    break;
                }
                std::thread::sleep((next - now).min(POLL));
            }
            hook.before();
            let swept = self.sweep();
            let go_on = hook.after();
            swept?;
            if !go_on {
                return Ok(false);
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
