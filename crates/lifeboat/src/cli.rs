//! The command line: every flag, with help text that reads like a manual.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

const ABOUT: &str = "lifeboat — disaster recovery you can prove.

Encrypted, deduplicated, compressed backups of files, folders and PostgreSQL databases into a
repository on a local disk,
S3 or any S3-compatible store, or several of them at once (replicated, each verified on its own),
with restore, verification and retention built in.";

const AFTER: &str = "\
REPOSITORY AND PASSPHRASE
    The repository is given by --repo, LIFEBOAT_REPO, or `location` in the config file.
    The passphrase comes from LIFEBOAT_PASSWORD, --password-file / LIFEBOAT_PASSWORD_FILE,
    LIFEBOAT_PASSWORD_COMMAND (its standard output), the config file, or a prompt on a terminal.
    It is never accepted as a command-line argument.

CONFIG FILE
    --config / LIFEBOAT_CONFIG names a lifeboat.toml that may set the repository, the sources
    (paths with include/exclude globs and tags) and the retention policy; `lifeboat backup` with
    no arguments then backs up every source. See examples/lifeboat.toml.

HEALTH CHECKS
    `[[checks]]` tables in the config define what `lifeboat health` probes (http, tcp, dns,
    postgres, tls, disk, memory, error_rate, backup, command). Every failure has one of the
    plan's alert levels: critical (service down, database unavailable, certificate expired),
    urgent (error rate > 10 %, response > 5 s, disk free < 5 %, memory used > 95 %) or high
    (certificate expiring within 7 days, backup older than the RPO); each is overridable per
    check. The exit code tells the worst level (20 high, 21 urgent, 22 critical).
    `lifeboat config validate` checks the whole file without running anything.

LOCATIONS
    A location is a folder, file:///folder or s3://bucket/prefix (credentials, region and
    endpoint from AWS_* variables, the shared AWS files, or [locations.NAME] in the config).
    With `[repository] locations = [\"primary\", \"secondary\", \"nas\"]` one repository lives in
    all of them: backup writes to the first reachable one and replicates to the others; reads
    fall back object by object; `locations`, `replicate`, `check --location` and
    `repair --location` work on them. See docs/s3.md.

";

/// Top-level command line.
#[derive(Debug, Parser)]
#[command(name = "lifeboat", version, about = ABOUT, after_help = format!("{AFTER}{}", crate::exit::TABLE), max_term_width = 100)]
pub struct Cli {
    /// Global options.
    #[command(flatten)]
    pub global: Global,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command accepts.
#[derive(Debug, Args)]
#[command(next_help_heading = "Global options")]
pub struct Global {
    /// Repository location: a folder or file:///path.
    #[arg(
        short = 'r',
        long = "repo",
        env = "LIFEBOAT_REPO",
        global = true,
        value_name = "LOCATION"
    )]
    pub repo: Option<String>,
    /// Read the passphrase from this file (first line).
    #[arg(long, env = "LIFEBOAT_PASSWORD_FILE", global = true, value_name = "FILE")]
    pub password_file: Option<PathBuf>,
    /// Config file (lifeboat.toml).
    #[arg(short = 'c', long, env = "LIFEBOAT_CONFIG", global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Print machine-readable JSON on standard output instead of text (a failure prints
    /// {"error": {"message", "exit_code"}}).
    #[arg(long, global = true)]
    pub json: bool,
    /// Print only errors; no progress bars.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Local cache folder (backup keeps the resume state of interrupted runs there).
    #[arg(long, env = "LIFEBOAT_CACHE_DIR", global = true, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Use no local cache (an interrupted backup then re-reads its files).
    #[arg(long, global = true)]
    pub no_cache: bool,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a new repository (asks for, or reads, the passphrase).
    Init(InitArgs),
    /// Back up files and folders (or the sources named in the config).
    Backup(BackupArgs),
    /// List snapshots.
    Snapshots(SnapshotsArgs),
    /// List the files in a snapshot.
    Ls(LsArgs),
    /// Show what changed between two snapshots (+ added, - removed, M modified, T type, U metadata).
    Diff(DiffArgs),
    /// Restore a snapshot into a folder (--target), a database (--to URL) or a data directory
    /// (--data-dir, point in time with --target-time).
    Restore(RestoreArgs),
    /// Verify the repository: structure always, pack data with --read-data.
    Check(CheckArgs),
    /// Remove snapshots according to a retention policy (the plan's by default).
    Forget(ForgetArgs),
    /// Delete data no snapshot needs (two-phase: mark now, delete after the grace period).
    Prune(PruneArgs),
    /// Manage the passphrases (key files) that open the repository.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Rebuild repository metadata (`repair index`), or heal one location from another
    /// (`repair --location NAME [--from OTHER]`).
    Repair(RepairArgs),
    /// Copy to other locations whatever they lack (verified, resumable).
    Replicate(ReplicateArgs),
    /// Show every location: reachability, newest snapshot, lag, size, last replication and check,
    /// and for S3 the bucket's Object Lock and versioning (with a warning when they fall short).
    /// `--extend-locks` raises the Object Lock of objects kept snapshots still need.
    Locations(LocationsArgs),
    /// Run the configured health checks; the exit code tells the worst alert level.
    Health(HealthArgs),
    /// Work with the config file.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// PostgreSQL WAL archiving: archive_command, restore_command, continuity check.
    #[command(subcommand)]
    Wal(WalCommand),
    /// Prove backups: `verify restore SOURCE [SNAPSHOT]` restores into a throwaway server,
    /// compares every table fingerprint and runs the checks (physical: and pg_amcheck).
    #[command(subcommand)]
    Verify(VerifyCommand),
}

/// `locations`.
#[derive(Debug, Args)]
pub struct LocationsArgs {
    /// Instead of the table: on every S3 location that locks objects (object_lock = true),
    /// raise the Object Lock retain-until of objects kept snapshots still need and whose lock
    /// ends too early (snapshot manifests: snapshot time + lock span; everything else: newest
    /// snapshot time + lock span; raised to that + 7 days). prune and forget --prune do this too.
    /// Idempotent and cheap: what was set is recorded in the location, so only objects short of
    /// their date cost a request.
    #[arg(long)]
    pub extend_locks: bool,
}

/// `replicate`.
#[derive(Debug, Args)]
pub struct ReplicateArgs {
    /// Only copy into this location (default: every location).
    #[arg(long, value_name = "NAME")]
    pub to: Option<String>,
    /// Only copy from this location (default: the union of all reachable locations).
    #[arg(long, value_name = "NAME")]
    pub from: Option<String>,
}

/// `repair`.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct RepairArgs {
    /// What to rebuild.
    #[command(subcommand)]
    pub command: Option<RepairCommand>,
    /// Verify every object in this location and replace missing or damaged ones.
    #[arg(long, value_name = "NAME")]
    pub location: Option<String>,
    /// Copy from this location (default: any other location that has a good copy).
    #[arg(long, value_name = "OTHER", requires = "location")]
    pub from: Option<String>,
}

/// `repair --location`.
#[derive(Debug)]
pub struct RepairLocationArgs {
    /// Location to heal.
    pub location: String,
    /// Location to copy from.
    pub from: Option<String>,
}

/// `verify …`.
#[derive(Debug, Subcommand)]
pub enum VerifyCommand {
    /// Restore test of a PostgreSQL source's snapshot (default: its latest), recorded in the
    /// repository (shown by `snapshots` as verified). Logical: restore into a throwaway cluster
    /// (or the source's `scratch_url`), compare every table's fingerprint with the one stored at
    /// backup time, run the source's `checks`. Physical: restore into a throwaway cluster (always:
    /// a data directory cannot be restored into a running server, so `scratch_url` is ignored),
    /// recover with WAL from the repository to the backup's end, fingerprint every table (kept in
    /// the record; later tests must match), run the `checks` and `pg_amcheck`. Exit 18 when
    /// anything differs or fails.
    Restore(VerifyRestoreArgs),
}

/// `verify restore`.
#[derive(Debug, Args)]
pub struct VerifyRestoreArgs {
    /// Name of a `kind = "postgres"` source in the config.
    pub source: String,
    /// Snapshot id (or unique prefix) or `latest` (the source's newest non-forensic snapshot).
    #[arg(default_value = "latest")]
    pub snapshot: String,
}

/// `wal …`.
#[derive(Debug, Subcommand)]
pub enum WalCommand {
    /// Store a WAL segment (archive_command = 'lifeboat wal push %p'). Idempotent; a different
    /// segment under a stored name is refused (exit 15). Also stores other segments already
    /// marked ready, so later calls return at once (with --background: hands them to one
    /// background pusher and waits for its own). Exit 0 only once the segment is durably in the
    /// repository. With several locations it is written to every reachable one in the same call;
    /// a location that fails is journalled and caught up by later calls (exit 25 instead when
    /// fewer than --min-locations hold it).
    Push(WalPushArgs),
    /// Restore a WAL segment (restore_command = 'lifeboat wal fetch %f %p'), prefetching the next
    /// ones into a local spool.
    Fetch(WalFetchArgs),
    /// Check that WAL is continuous from every physical backup to the newest segment (exit 16 on
    /// a gap).
    Check(WalCheckArgs),
    /// Receive WAL over a replication slot and store it within seconds (RPO of seconds); runs
    /// until stopped.
    Stream(WalStreamArgs),
}

/// `wal stream`.
#[derive(Debug, Args)]
pub struct WalStreamArgs {
    /// The `kind = "postgres"` source in the config (default: the only one).
    pub source: Option<String>,
    /// Replication slot to use (created if missing; it makes the server keep WAL not yet received).
    #[arg(long, default_value = "lifeboat", value_name = "NAME")]
    pub slot: String,
    /// How often received WAL is stored (the RPO is about this plus the upload time).
    #[arg(long, default_value = "1s", value_name = "DURATION")]
    pub interval: String,
    /// Stop after this long (default: run until stopped).
    #[arg(long, value_name = "DURATION")]
    pub duration: Option<String>,
    /// Local folder for received WAL and push markers (default: under the cache folder).
    #[arg(long, env = "LIFEBOAT_WAL_SPOOL", value_name = "DIR")]
    pub spool: Option<PathBuf>,
    /// With several locations: stop (exit 25) when a sweep's WAL is in fewer than N of them
    /// (default: `wal_min_locations` in the config, else 1).
    #[arg(long, env = "LIFEBOAT_WAL_MIN_LOCATIONS", value_name = "N")]
    pub min_locations: Option<usize>,
    /// How WAL is compressed (default: repository.wal_compression in the config, else zstd).
    #[arg(long, env = "LIFEBOAT_WAL_COMPRESSION", value_enum, value_name = "CODEC")]
    pub compression: Option<WalCompressionArg>,
}

/// How `wal push` and `wal stream` compress WAL. Restores read every kind.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum WalCompressionArg {
    /// zstd level 1 while the archiver keeps up; LZ4 for a backlog (a call or sweep storing 8 or
    /// more segments), so bursts keep up and calm periods keep the better ratio.
    Auto,
    /// Always zstd level 1 (the default): about 12x smaller than the WAL on pgbench, the most CPU.
    Zstd,
    /// Always LZ4: about 1.5x zstd's speed, about half its ratio.
    Lz4,
}

/// What `wal push` does when it cannot store a segment and the backlog is over its limit.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum QueueFull {
    /// Keep failing (exit 17): PostgreSQL keeps the WAL and retries; its disk may fill up.
    Fail,
    /// Report success and drop the segment: the database's disk is protected, point-in-time
    /// recovery across the dropped segment is lost until the next base backup (`wal check`
    /// reports the gap).
    Drop,
}

/// `wal push`.
#[derive(Debug, Args)]
pub struct WalPushArgs {
    /// The segment path as PostgreSQL passes it (%p, relative to the data directory).
    pub path: PathBuf,
    /// The data directory (default: the current directory, as archive_command runs there).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Local spool for push markers (default: <cache dir>/wal/<repository>-<system id>).
    #[arg(long, env = "LIFEBOAT_WAL_SPOOL", value_name = "DIR")]
    pub spool: Option<PathBuf>,
    /// Store at most this many ready segments per call (and per commit of the background
    /// pusher, at most 8). 1: only the segment asked for, no background pusher.
    #[arg(long, default_value_t = 64, value_name = "N")]
    pub batch: usize,
    /// With a backlog of ready segments, hand it to one background pusher and wait for this
    /// segment's marker (like pgBackRest's asynchronous archive-push) instead of storing a batch
    /// in this process. Environment: LIFEBOAT_WAL_PUSH_BACKGROUND=1.
    #[arg(long, env = "LIFEBOAT_WAL_PUSH_BACKGROUND", value_parser = clap::builder::BoolishValueParser::new())]
    pub background: bool,
    /// Archive backlog (segments waiting in pg_wal) above which a failure is critical.
    #[arg(long, env = "LIFEBOAT_WAL_QUEUE_MAX", default_value_t = 256, value_name = "SEGMENTS")]
    pub queue_max: usize,
    /// What to do when storing fails and the backlog is over --queue-max.
    #[arg(long, env = "LIFEBOAT_WAL_ON_QUEUE_FULL", value_enum, default_value = "fail")]
    pub on_queue_full: QueueFull,
    /// How WAL is compressed (default: repository.wal_compression in the config, else zstd).
    #[arg(long, env = "LIFEBOAT_WAL_COMPRESSION", value_enum, value_name = "CODEC")]
    pub compression: Option<WalCompressionArg>,
    /// With several locations: fail (exit 25, PostgreSQL retries) unless the segment is in at
    /// least N of them (default: `wal_min_locations` in the config, else 1: the first reachable
    /// location, the others written in the same call or caught up by later calls).
    #[arg(long, env = "LIFEBOAT_WAL_MIN_LOCATIONS", value_name = "N")]
    pub min_locations: Option<usize>,
}

/// `wal fetch`.
#[derive(Debug, Args)]
pub struct WalFetchArgs {
    /// The file PostgreSQL asks for (%f).
    pub name: String,
    /// Where to write it (%p, relative to the data directory).
    pub dest: PathBuf,
    /// The data directory (default: the current directory, as restore_command runs there).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Local spool for prefetched segments (default: <cache dir>/wal/<repository>-<system id>).
    #[arg(long, env = "LIFEBOAT_WAL_SPOOL", value_name = "DIR")]
    pub spool: Option<PathBuf>,
    /// Segments kept ready after the one asked for: a background prefetcher fetches them into
    /// the spool on every core while recovery replays (0: fetch each segment when asked).
    #[arg(long, default_value_t = 16, value_name = "N")]
    pub prefetch: usize,
    /// On a real failure (repository unreachable or damaged, wrong passphrase, disk full), exit
    /// 200 instead of 1. PostgreSQL reads any status up to 125 as "not found", which ends a
    /// recovery early and promotes the server at whatever point it reached; above 125 it stops
    /// recovery with FATAL, and `pg_ctl start` resumes it once the cause is fixed. `restore db`
    /// writes it into the restore_command it sets up; leave it off for a standby, which should
    /// keep retrying through an outage.
    #[arg(long)]
    pub abort_on_error: bool,
}

/// `wal check`.
#[derive(Debug, Args)]
pub struct WalCheckArgs {
    /// Check only this cluster's WAL (its system identifier).
    #[arg(long, value_name = "ID")]
    pub system_id: Option<String>,
    /// A gap is reported only when a second listing this much later still misses it: a push
    /// writes a batch's segments in parallel, so a check during archiving can see a segment
    /// before the one it follows. 0 reports the first listing as it is.
    #[arg(long, value_name = "DURATION", default_value = "2s")]
    pub settle: String,
}

/// `health`.
#[derive(Debug, Args)]
#[command(after_help = "\
EXAMPLES
    lifeboat -c /etc/lifeboat.toml health                 # table and verdict; exit 0/20/21/22
    lifeboat -c /etc/lifeboat.toml health --only api db   # just these checks
    lifeboat -c /etc/lifeboat.toml --json health | jq .status
    lifeboat -c /etc/lifeboat.toml health --watch 30s     # repeat; print only what changes

A failing check whose dependency (depends_on) is failing too is shown as `suppressed` and does not
count towards the exit code: one database outage gives one alert, not ten.")]
pub struct HealthArgs {
    /// Run only these checks (repeatable, or several names after one --only).
    #[arg(long, value_name = "NAME", num_args = 1..)]
    pub only: Vec<String>,
    /// Bound on the whole run; each check also has its own `timeout` (default 10s).
    #[arg(long, default_value = "120s", value_name = "DURATION")]
    pub timeout: String,
    /// Repeat every DURATION (e.g. 30s) and print only the checks whose status or level changed
    /// (with --json: one JSON line per run with changes). Stop with Ctrl-C.
    #[arg(long, value_name = "DURATION")]
    pub watch: Option<String>,
    /// After each run, also write the result as Prometheus metrics to FILE (atomically), for
    /// node_exporter's textfile collector: lifeboat_check_up, lifeboat_check_alert_level,
    /// lifeboat_check_suppressed, lifeboat_check_latency_seconds, lifeboat_health_alert_level,
    /// lifeboat_health_last_run_timestamp_seconds, lifeboat_health_duration_seconds.
    #[arg(long, value_name = "FILE")]
    pub textfile: Option<std::path::PathBuf>,
}

/// `config …`.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Check the config file (--config) completely, checks included, without running anything.
    /// Exit 0 when valid; 2 with the file, line and problem when not.
    Validate,
}

/// `init`.
#[derive(Debug, Args)]
pub struct InitArgs {
    /// zstd compression level for data (-7 fastest … 22 smallest).
    #[arg(long, value_name = "LEVEL", allow_hyphen_values = true)]
    pub compression_level: Option<i32>,
    /// Target pack size in MiB (4–128).
    #[arg(long, value_name = "MIB")]
    pub pack_size_mib: Option<u64>,
}

/// `backup`.
#[derive(Debug, Args)]
pub struct BackupArgs {
    /// Paths to back up, or names of sources in the config. None: every configured source.
    pub paths: Vec<String>,
    /// Tag the snapshot (repeatable).
    #[arg(long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,
    /// Leave out paths matching this glob (repeatable), e.g. '**/*.tmp'.
    #[arg(long = "exclude", value_name = "GLOB")]
    pub excludes: Vec<String>,
    /// Back up only files matching this glob (repeatable); directories are always walked.
    #[arg(long = "include", value_name = "GLOB")]
    pub includes: Vec<String>,
    /// Host name to record (default: this machine's).
    #[arg(long)]
    pub host: Option<String>,
    /// Snapshot to compare against for unchanged files (default: the newest of the same host and paths).
    #[arg(long, value_name = "SNAPSHOT")]
    pub parent: Option<String>,
    /// Read every file, even those unchanged since the parent snapshot. For a physical
    /// PostgreSQL source: a FORENSIC copy of its data_dir as it is (damaged or running), without
    /// consistency guarantees, never picked by `latest`.
    #[arg(long)]
    pub force: bool,
    /// Physical PostgreSQL source with the local method: read every file of the data directory
    /// (a full backup) instead of only those changed since its previous local backup.
    #[arg(long)]
    pub full: bool,
    /// Write an index checkpoint this often, so an interrupted backup resumes (e.g. 5m, 30s).
    #[arg(long, default_value = "5m", value_name = "DURATION")]
    pub checkpoint_interval: String,
    /// With several locations: don't replicate afterwards (run `lifeboat replicate` later).
    #[arg(long)]
    pub no_replicate: bool,
}

/// `snapshots`.
#[derive(Debug, Args)]
pub struct SnapshotsArgs {
    /// Only snapshots of this host.
    #[arg(long)]
    pub host: Option<String>,
    /// Only snapshots with this tag.
    #[arg(long)]
    pub tag: Option<String>,
    /// Only snapshots whose latest restore test passed (never forensic ones): the candidates
    /// of `restore SOURCE --clean-before`.
    #[arg(long)]
    pub verified: bool,
    /// Only snapshots taken before this time, e.g. '2026-11-20 14:00+00'.
    #[arg(long, value_name = "TIME")]
    pub before: Option<String>,
}

/// `ls`.
#[derive(Debug, Args)]
pub struct LsArgs {
    /// Snapshot id (or unique prefix) or `latest`.
    pub snapshot: String,
    /// Directory inside the snapshot to list (default: everything).
    pub path: Option<PathBuf>,
    /// Show mode, size and modification time.
    #[arg(short, long)]
    pub long: bool,
}

/// `diff`.
#[derive(Debug, Args)]
pub struct DiffArgs {
    /// First snapshot.
    pub a: String,
    /// Second snapshot.
    pub b: String,
}

/// Existing-file policy for restore.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum OverwriteArg {
    /// Refuse a non-empty target.
    Never,
    /// Replace only files whose size or mtime differ.
    IfChanged,
    /// Replace every file.
    Always,
}

/// `restore`.
#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// Snapshot id (or unique prefix) or `latest`. For a database: `SOURCE [SNAPSHOT]`, e.g.
    /// `restore db latest --to postgres://…/app_restored` (logical) or
    /// `restore db latest --data-dir /var/lib/postgresql/15/main` (physical).
    #[arg(required = true, num_args = 1..=2, value_name = "SNAPSHOT")]
    pub items: Vec<String>,
    /// Folder to restore into; the snapshot's absolute paths are recreated under it.
    #[arg(short, long, value_name = "DIR")]
    pub target: Option<PathBuf>,
    /// Physical database restore: the data directory to create (refused if not empty).
    #[arg(long, value_name = "DIR", help_heading = "Database restore")]
    pub data_dir: Option<PathBuf>,
    /// Logical database restore: the database to restore into, as a URL
    /// (postgres://user@host:port/dbname; password via PGPASSWORD or .pgpass). Created if
    /// absent; an existing non-empty database is refused (exit 19) without --force-overwrite.
    #[arg(long, value_name = "URL", help_heading = "Database restore")]
    pub to: Option<String>,
    /// Replace what is there. Logical: an existing database, after a safety backup of it (tagged
    /// `safety`). Physical: a non-empty data directory is moved aside (to
    /// DIR.lifeboat-old-TIME, never deleted), and so is a non-empty tablespace folder.
    #[arg(long, help_heading = "Database restore")]
    pub force_overwrite: bool,
    /// Physical: restore a tablespace into DIR instead of its original location, by name or
    /// oid (repeatable), e.g. `--tablespace-map fast=/mnt/ssd2/fast`. A tablespace's folder must
    /// be empty or absent (on the same host its original location is usually the live one);
    /// with --force-overwrite a non-empty one is moved aside like the data directory.
    #[arg(
        long,
        value_name = "NAME=DIR",
        requires = "data_dir",
        value_parser = lifeboat_pg::tablespaces::parse_mapping,
        help_heading = "Database restore"
    )]
    pub tablespace_map: Vec<(String, PathBuf)>,
    /// With --force-overwrite: skip the safety backup of the database being replaced.
    #[arg(long, requires = "force_overwrite", help_heading = "Database restore")]
    pub no_safety_backup: bool,
    /// Restore the newest snapshot taken before this time whose restore test passed (never a
    /// forensic one), e.g. '2026-11-20 14:00+00'. Physical (with --data-dir): the newest
    /// verified backup that was consistent before TIME, then WAL replayed to just before TIME
    /// (a transaction committed at TIME or later is left out). See `snapshots --verified --before`.
    #[arg(long, value_name = "TIME", help_heading = "Database restore")]
    pub clean_before: Option<String>,
    /// Which database of the snapshot to restore (default: the only one, or the one named like
    /// the target).
    #[arg(long, value_name = "NAME", help_heading = "Database restore")]
    pub from_database: Option<String>,
    /// Do not restore ownership and privileges (for a server without the original roles).
    #[arg(long, help_heading = "Database restore")]
    pub no_owner: bool,
    /// Replay WAL up to this time (inclusive), e.g. '2026-11-20 14:03:00+00'. Default: latest.
    #[arg(
        long,
        value_name = "TIME",
        conflicts_with = "target_lsn",
        help_heading = "Database restore"
    )]
    pub target_time: Option<String>,
    /// Replay WAL up to this LSN (inclusive), e.g. 0/3000060.
    #[arg(
        long,
        value_name = "LSN",
        conflicts_with = "target_immediate",
        help_heading = "Database restore"
    )]
    pub target_lsn: Option<String>,
    /// Replay WAL only until the backup is consistent, then promote: the database exactly as
    /// the backup captured it (what `verify restore` fingerprints).
    #[arg(long, conflicts_with = "target_time", help_heading = "Database restore")]
    pub target_immediate: bool,
    /// Start the server after restoring and wait until recovery finished and it was promoted.
    #[arg(long, help_heading = "Database restore")]
    pub start: bool,
    /// Port for the started server (default: the restored configuration's).
    #[arg(long, value_name = "PORT", help_heading = "Database restore")]
    pub port: Option<u16>,
    /// Unix socket folder for the started server (default: the restored configuration's).
    #[arg(long, value_name = "DIR", help_heading = "Database restore")]
    pub socket_dir: Option<PathBuf>,
    /// Turn WAL archiving off in the restored copy (test and verification restores: a copy must
    /// not archive its own timeline next to the real server's). Without it the restored server
    /// keeps the original archive_command, as a replacement primary should.
    #[arg(long, help_heading = "Database restore")]
    pub no_archive: bool,
    /// How long --start waits for recovery.
    #[arg(
        long,
        default_value = "1h",
        value_name = "DURATION",
        help_heading = "Database restore"
    )]
    pub start_timeout: String,
    /// Passphrase file restore_command uses (default: a copy of the passphrase in a 0600 file
    /// owned by the server's user, next to the data directory).
    #[arg(long, value_name = "FILE", help_heading = "Database restore")]
    pub restore_password_file: Option<PathBuf>,
    /// Restore only paths matching this glob (repeatable), e.g. '/etc/myapp/**'.
    #[arg(long = "include", value_name = "GLOB")]
    pub includes: Vec<String>,
    /// What to do with files already in the target.
    #[arg(long, value_enum, default_value = "never")]
    pub overwrite: OverwriteArg,
    /// After restoring, re-read every restored file and compare it with the snapshot.
    #[arg(long)]
    pub verify: bool,
}

/// `check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Read and verify all pack data.
    #[arg(long, conflicts_with = "read_data_subset")]
    pub read_data: bool,
    /// Read a subset: a percentage ("10%") or a part ("2/7", day 2 of a weekly cycle).
    #[arg(long, value_name = "SUBSET")]
    pub read_data_subset: Option<String>,
    /// Check this location on its own (default: the first reachable location).
    #[arg(long, value_name = "NAME")]
    pub location: Option<String>,
}

/// Retention flags shared by `forget`.
#[derive(Debug, Args, Default)]
pub struct KeepArgs {
    /// Keep the N newest snapshots.
    #[arg(long, value_name = "N")]
    pub keep_last: Option<u32>,
    /// Keep the newest snapshot of each of the last N hours.
    #[arg(long, value_name = "N")]
    pub keep_hourly: Option<u32>,
    /// Keep the newest snapshot of each of the last N days.
    #[arg(long, value_name = "N")]
    pub keep_daily: Option<u32>,
    /// Keep the newest snapshot of each of the last N weeks.
    #[arg(long, value_name = "N")]
    pub keep_weekly: Option<u32>,
    /// Keep the newest snapshot of each of the last N months.
    #[arg(long, value_name = "N")]
    pub keep_monthly: Option<u32>,
    /// Keep the newest snapshot of each of the last N years.
    #[arg(long, value_name = "N")]
    pub keep_yearly: Option<u32>,
    /// Keep every snapshot within this span of the newest (e.g. 7d, 1y6m).
    #[arg(long, value_name = "SPAN")]
    pub keep_within: Option<String>,
    /// Within this span, keep the newest snapshot of each hour.
    #[arg(long, value_name = "SPAN")]
    pub keep_within_hourly: Option<String>,
    /// Within this span, keep the newest snapshot of each day.
    #[arg(long, value_name = "SPAN")]
    pub keep_within_daily: Option<String>,
    /// Within this span, keep the newest snapshot of each week.
    #[arg(long, value_name = "SPAN")]
    pub keep_within_weekly: Option<String>,
    /// Within this span, keep the newest snapshot of each month.
    #[arg(long, value_name = "SPAN")]
    pub keep_within_monthly: Option<String>,
    /// Within this span, keep the newest snapshot of each year.
    #[arg(long, value_name = "SPAN")]
    pub keep_within_yearly: Option<String>,
    /// Keep every snapshot with this tag (repeatable).
    #[arg(long = "keep-tag", value_name = "TAG")]
    pub keep_tags: Vec<String>,
}

/// `forget`.
#[derive(Debug, Args)]
pub struct ForgetArgs {
    /// Retention rules; none given means the config's policy, or the plan's default
    /// (--keep-within-hourly 7d --keep-within-daily 30d).
    #[command(flatten)]
    pub keep: KeepArgs,
    /// Show what would be removed; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Run prune afterwards.
    #[arg(long)]
    pub prune: bool,
    /// Prune grace period (with --prune).
    #[arg(long, default_value = "24h", value_name = "DURATION")]
    pub grace: String,
    /// Allow a grace period under 1h (with --prune): only when no backup can be running.
    #[arg(long)]
    pub unsafe_short_grace: bool,
    /// With --prune on a location that ignores conditional writes: see `prune --help`.
    #[arg(long)]
    pub assume_no_other_prune: bool,
}

/// `prune`.
#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Show what would be done; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// How long marked or unindexed packs wait before deletion. Must exceed your longest backup.
    /// At least 1h unless --unsafe-short-grace.
    #[arg(long, default_value = "24h", value_name = "DURATION")]
    pub grace: String,
    /// Allow a grace period under 1h (down to 0s): only when no backup can be running.
    #[arg(long)]
    pub unsafe_short_grace: bool,
    /// Repack packs with at least this share of unused bytes (0.0–1.0).
    #[arg(long, default_value_t = 0.25, value_name = "RATIO")]
    pub repack_threshold: f64,
    /// Run on a location that ignores conditional writes (Garage): you guarantee no other prune
    /// runs at the same time (the lease is then only written, re-read and compared).
    #[arg(long)]
    pub assume_no_other_prune: bool,
}

/// `key …`.
#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// List key files.
    List,
    /// Add a passphrase (from LIFEBOAT_NEW_PASSWORD, --new-password-file, or a prompt).
    Add(NewKeyArgs),
    /// Remove a key file by id (prefix); never the one in use.
    Remove {
        /// Key id or unique prefix.
        id: String,
    },
    /// Change the passphrase of the key in use (writes a new key file; data is not rewritten).
    Passwd(NewKeyArgs),
}

/// New passphrase source.
#[derive(Debug, Args)]
pub struct NewKeyArgs {
    /// Read the new passphrase from this file.
    #[arg(long, value_name = "FILE")]
    pub new_password_file: Option<PathBuf>,
}

/// `repair …`.
#[derive(Debug, Subcommand)]
pub enum RepairCommand {
    /// Rebuild the index from the packs' own headers.
    Index {
        /// Replace the index even if some packs cannot be read (they are left out).
        #[arg(long)]
        force: bool,
    },
}
