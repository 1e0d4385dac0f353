//! Exit codes: part of lifeboat's interface, documented in the README and `lifeboat --help`.
//! Scripts and schedulers branch on them, so they never change meaning.

use lifeboat_repo::RepoError;

/// Success.
pub const OK: u8 = 0;
/// An unexpected failure (storage error, bug).
pub const FAILURE: u8 = 1;
/// Bad command line, malformed config or invalid option.
pub const USAGE: u8 = 2;
/// Backup committed, but some files could not be read (the snapshot is partial).
pub const PARTIAL: u8 = 3;
/// Wrong passphrase (no key file opens), or no passphrase available.
pub const WRONG_PASSPHRASE: u8 = 4;
/// The repository is damaged: check found errors, or restore met damaged data.
pub const DAMAGED: u8 = 5;
/// A source path does not exist or cannot be read at all.
pub const SOURCE_MISSING: u8 = 6;
/// No repository at the location.
pub const NO_REPOSITORY: u8 = 7;
/// Restore refused: target not empty, or it would write outside the target.
pub const RESTORE_REFUSED: u8 = 8;
/// Another prune holds the lease.
pub const LOCKED: u8 = 9;
/// The disk (or quota) is full.
pub const DISK_FULL: u8 = 10;
/// The named snapshot does not exist.
pub const SNAPSHOT_NOT_FOUND: u8 = 11;
/// The database server could not be reached (refused, unknown host, timeout).
pub const DB_UNREACHABLE: u8 = 12;
/// The database server refused the credentials (password, role, database, pg_hba.conf).
pub const DB_AUTH: u8 = 13;
/// The database server is not configured for the operation (wal_level, archive_mode,
/// max_wal_senders, replication privilege).
pub const DB_NOT_CONFIGURED: u8 = 14;
/// A different WAL segment is already stored under this name; nothing was overwritten.
pub const WAL_CONFLICT: u8 = 15;
/// WAL is missing: `wal check` found a gap, or a restore cannot reach its target.
pub const WAL_GAP: u8 = 16;
/// The WAL archive backlog is over its limit (repository unreachable for too long).
pub const WAL_BACKLOG: u8 = 17;
/// A restore test failed (a table fingerprint differs, a check or pg_amcheck failed, or the
/// restore did not complete), or a database restore stopped at an error (rolled back) or finished with
/// fingerprints that differ from the backup's.
pub const RESTORE_TEST_FAILED: u8 = 18;
/// A database restore was refused: the target database exists and is not empty (use
/// --force-overwrite).
pub const DB_TARGET_EXISTS: u8 = 19;
/// `health`: the worst failing check is at level high (act within the working day).
pub const HEALTH_HIGH: u8 = 20;
/// `health`: the worst failing check is at level urgent (act now).
pub const HEALTH_URGENT: u8 = 21;
/// `health`: the worst failing check is at level critical (service down).
pub const HEALTH_CRITICAL: u8 = 22;
/// A location's credentials may not delete (append-only): prune and forget need the
/// maintenance credential.
pub const APPEND_ONLY: u8 = 23;
/// The storage refused the credentials (S3 403/401: unknown access key, wrong secret, or a
/// policy that does not allow the operation).
pub const STORE_AUTH: u8 = 24;
/// `wal push`/`wal stream`: the WAL is stored, but in fewer locations than
/// `wal_min_locations` (PostgreSQL retries; the lagging locations are caught up first).
pub const WAL_LOCATIONS: u8 = 25;
/// Interrupted (Ctrl-C).
pub const INTERRUPTED: u8 = 130;
/// `wal fetch --abort-on-error` failed: above 125, so PostgreSQL stops recovery instead of
/// reading the failure as "not found" (126 and 127 would be logged as shell errors).
pub const WAL_FETCH_ABORT: u8 = 200;

/// The exit code of a health run: 0 when healthy, else by the worst level.
pub fn for_health(worst: Option<lifeboat_health::Level>) -> u8 {
    match worst {
        None => OK,
        Some(lifeboat_health::Level::High) => HEALTH_HIGH,
        Some(lifeboat_health::Level::Urgent) => HEALTH_URGENT,
        Some(lifeboat_health::Level::Critical) => HEALTH_CRITICAL,
    }
}

/// The table printed by `lifeboat --help` and the README.
pub const TABLE: &str = "\
EXIT CODES
    0    success
    1    unexpected failure (storage error, bug)
    2    usage error: bad option, malformed config
    3    partial backup: snapshot saved, some files unreadable
    4    wrong passphrase, or no passphrase given
    5    repository damaged (check found errors; restore met damaged data)
    6    source path missing or unreadable
    7    no repository at the location
    8    restore refused: target not empty, or unsafe path
    9    another prune holds the lease
    10   disk full
    11   snapshot not found
    12   database server unreachable
    13   database authentication failed
    14   database server not configured for this (wal_level, archive_mode, replication)
    15   WAL segment conflict: a different segment is stored under this name (nothing overwritten)
    16   WAL missing: wal check found a gap, or a restore cannot reach its target
    17   WAL archive backlog over its limit (repository unreachable too long)
    18   restore test failed (fingerprint differs, check or pg_amcheck failed, restore failed), or a database
         restore stopped at an error (rolled back) or left differing fingerprints
    19   database restore refused: the target database exists and is not empty
    20   health: worst failing check is high (e.g. certificate expiring within 7 days)
    21   health: worst failing check is urgent (e.g. response over 5 s, disk under 5 % free)
    22   health: worst failing check is critical (service down, certificate expired)
    23   append-only location: prune/forget need the maintenance credential
    24   storage refused the credentials (S3 403: InvalidAccessKeyId, SignatureDoesNotMatch,
         AccessDenied)
    25   WAL stored in fewer locations than wal_min_locations (PostgreSQL retries; the missing
         locations are caught up first)
    130  interrupted
    200  wal fetch --abort-on-error: the segment could not be fetched (not \"not in the
         repository\": the repository or the disk failed); PostgreSQL stops recovery";

/// A failure that already knows its exit code and one-line message.
#[derive(Debug)]
pub struct Exit {
    /// Exit code.
    pub code: u8,
    /// One-line message.
    pub message: String,
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Exit {}

/// Builds an [`Exit`] error.
pub fn fail(code: u8, message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Exit {
        code,
        message: message.into(),
    })
}

/// Maps an engine error to its exit code.
pub fn code_for(e: &RepoError) -> u8 {
    if e.is_storage_full() {
        return DISK_FULL;
    }
    match e {
        RepoError::NotFound { .. } => NO_REPOSITORY,
        RepoError::AlreadyExists { .. } | RepoError::Invalid(_) => USAGE,
        RepoError::WrongPassphrase { .. } => WRONG_PASSPHRASE,
        RepoError::Damaged { .. } | RepoError::MissingBlob { .. } | RepoError::UnsupportedVersion { .. } => DAMAGED,
        RepoError::SnapshotNotFound(_) | RepoError::AmbiguousSnapshot(_) => SNAPSHOT_NOT_FOUND,
        RepoError::LeaseHeld { .. } => LOCKED,
        RepoError::RestoreRefused(_) | RepoError::UnsafeName { .. } => RESTORE_REFUSED,
        RepoError::Interrupted => INTERRUPTED,
        RepoError::AppendOnly { .. } => APPEND_ONLY,
        RepoError::Backend(b) if b.kind == lifeboat_repo::backend::BackendErrorKind::PermissionDenied => {
            // A refused delete with otherwise valid credentials is the append-only case; a
            // bad key or secret is refused whatever the operation.
            let bad_key = [
                "InvalidAccessKeyId",
                "SignatureDoesNotMatch",
                "InvalidToken",
                "ExpiredToken",
            ]
            .iter()
            .any(|c| b.message().contains(c));
            if b.op == "delete" && !bad_key {
                APPEND_ONLY
            } else {
                STORE_AUTH
            }
        }
        RepoError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => SOURCE_MISSING,
        RepoError::Io { .. } | RepoError::Backend(_) => FAILURE,
    }
}

/// Maps a PostgreSQL-layer error to its exit code.
pub fn code_for_pg(e: &lifeboat_pg::PgError) -> u8 {
    use lifeboat_pg::{ConnectFailure, PgError};
    if e.is_storage_full() {
        return DISK_FULL;
    }
    match e {
        PgError::Connect {
            kind: ConnectFailure::Unreachable,
            ..
        } => DB_UNREACHABLE,
        PgError::Connect {
            kind: ConnectFailure::Authentication,
            ..
        } => DB_AUTH,
        PgError::NotConfigured { .. } => DB_NOT_CONFIGURED,
        PgError::WalMissing(_) => WAL_GAP,
        PgError::WalConflict(_) => WAL_CONFLICT,
        PgError::Invalid(_) | PgError::ToolNotFound { .. } => USAGE,
        PgError::Repo(r) => code_for(r),
        _ => FAILURE,
    }
}

/// Finds the exit code for any error chain.
pub fn code_for_any(e: &anyhow::Error) -> u8 {
    for c in e.chain() {
        if let Some(x) = c.downcast_ref::<Exit>() {
            return x.code;
        }
        if let Some(p) = c.downcast_ref::<lifeboat_pg::PgError>() {
            return code_for_pg(p);
        }
        if let Some(r) = c.downcast_ref::<RepoError>() {
            return code_for(r);
        }
    }
    FAILURE
}
