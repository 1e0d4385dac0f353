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
/// A location's credentials may not delete (append-only): prune and forget need the
/// maintenance credential.
pub const APPEND_ONLY: u8 = 12;
/// Interrupted (Ctrl-C).
pub const INTERRUPTED: u8 = 130;

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
    12   append-only location: prune/forget need the maintenance credential
    130  interrupted";

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
        RepoError::Backend(b)
            if b.op == "delete" && b.kind == lifeboat_repo::backend::BackendErrorKind::PermissionDenied =>
        {
            APPEND_ONLY
        }
        RepoError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => SOURCE_MISSING,
        RepoError::Io { .. } | RepoError::Backend(_) => FAILURE,
    }
}

/// Finds the exit code for any error chain.
pub fn code_for_any(e: &anyhow::Error) -> u8 {
    for c in e.chain() {
        if let Some(x) = c.downcast_ref::<Exit>() {
            return x.code;
        }
        if let Some(r) = c.downcast_ref::<RepoError>() {
            return code_for(r);
        }
    }
    FAILURE
}
