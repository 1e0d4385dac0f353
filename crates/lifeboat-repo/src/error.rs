//! Errors of the repository engine.
//!
//! Policy: every error says *what* failed and *where* (object name, file path or location), so
//! the binary can print it as one line. Variants are grouped by what a caller can do about them:
//! the CLI maps each group to a documented exit code (see the CLI's `exit` module). Nothing in
//! this crate panics on input read from disk, the network or the user.

use std::path::PathBuf;

use crate::backend::BackendError;

/// Result alias used across the engine.
pub type Result<T, E = RepoError> = std::result::Result<T, E>;

/// Everything that can go wrong in the repository engine.
#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    /// There is no repository at the location (no `config` object).
    #[error("no lifeboat repository at {location} (run `lifeboat init` first)")]
    NotFound {
        /// Where we looked.
        location: String,
    },
    /// `init` found an existing repository.
    #[error("a repository already exists at {location}")]
    AlreadyExists {
        /// Where it is.
        location: String,
    },
    /// No key file could be opened with the passphrase.
    #[error("wrong passphrase: none of the {keys} key file(s) in {location} opens with it")]
    WrongPassphrase {
        /// Repository location.
        location: String,
        /// How many key files were tried.
        keys: usize,
    },
    /// An object failed authentication, decoding or its hash check.
    #[error("damaged object {name}: {reason}")]
    Damaged {
        /// Object name (or pack and blob).
        name: String,
        /// What was wrong.
        reason: String,
    },
    /// The object was written by a newer lifeboat.
    #[error("{name} has format version {found}, this lifeboat reads version {supported}")]
    UnsupportedVersion {
        /// Object name.
        name: String,
        /// Version found.
        found: u32,
        /// Version supported.
        supported: u32,
    },
    /// The storage backend failed.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// A local file operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The local path involved.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A snapshot reference did not resolve.
    #[error("snapshot {0} not found")]
    SnapshotNotFound(String),
    /// A snapshot prefix matched several snapshots.
    #[error("snapshot prefix {0} is ambiguous")]
    AmbiguousSnapshot(String),
    /// Another prune holds the lease.
    #[error("another prune holds the lease (holder {holder} on {host}, expires {expires})")]
    LeaseHeld {
        /// Lease holder id.
        holder: String,
        /// Host it ran on (informational only).
        host: String,
        /// Expiry time.
        expires: String,
    },
    /// A tree holds an entry name that could escape a restore target (crafted or corrupt).
    #[error("unsafe entry name {entry:?} in {tree}: refusing to use it")]
    UnsafeName {
        /// Tree that holds it.
        tree: String,
        /// The name, lossily printed.
        entry: String,
    },
    /// A restore would write outside its target or over existing data.
    #[error("restore refused: {0}")]
    RestoreRefused(String),
    /// The caller asked for something invalid.
    #[error("{0}")]
    Invalid(String),
    /// A blob the snapshot needs is not in the index.
    #[error("blob {id} is missing from the repository (needed by {needed_by})")]
    MissingBlob {
        /// Blob id (hex).
        id: String,
        /// Path or tree that needs it.
        needed_by: String,
    },
    /// A delete was needed at a location whose credentials may not delete.
    #[error(
        "{location} is append-only: {what} needs delete permission; run it with the maintenance credential (see docs/s3.md)"
    )]
    AppendOnly {
        /// The location.
        location: String,
        /// What was refused (prune, forget…).
        what: String,
    },
    /// The operation was interrupted.
    #[error("interrupted")]
    Interrupted,
}

impl RepoError {
    /// Shorthand for a local I/O error at a path.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        RepoError::Io {
            path: path.into(),
            source,
        }
    }

    /// Shorthand for a damaged-object error.
    pub fn damaged(name: impl Into<String>, reason: impl Into<String>) -> Self {
        RepoError::Damaged {
            name: name.into(),
            reason: reason.into(),
        }
    }

    /// True when the error is the disk (or quota) being full, so callers can say so plainly.
    pub fn is_storage_full(&self) -> bool {
        let io = match self {
            RepoError::Io { source, .. } => Some(source),
            RepoError::Backend(b) => b.io_error(),
            _ => None,
        };
        io.is_some_and(|e| {
            matches!(
                e.kind(),
                std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
            ) || e.raw_os_error() == Some(28)
        }) || matches!(self, RepoError::Backend(b) if b.message().contains("No space left"))
    }
}
